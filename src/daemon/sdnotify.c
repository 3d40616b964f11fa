/*
 * systemd's readiness protocol (sd_notify(3)), without libsystemd: when
 * $NOTIFY_SOCKET names a datagram socket (a path, or "@name" for the
 * abstract namespace), one datagram "READY=1\nMAINPID=<pid>" says start-up
 * is complete, "STOPPING=1" that shutdown began (only after READY=1).  Without $NOTIFY_SOCKET
 * nothing is sent.  A failure to send is logged once and never fatal: the
 * daemon works the same without a service manager.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "util/log.h"

static void notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t len;
    socklen_t salen;
    int fd;

    if (!path || !*path) {
        return;
    }
    len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path)) {
        log_warn("sd_notify: NOTIFY_SOCKET '%s' is not a socket path", path);
        return;
    }
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@') {
        sa.sun_path[0] = '\0';       /* abstract: no terminating NUL */
    }
    salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                        (path[0] == '@' ? 0 : 1));
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || sendto(fd, msg, strlen(msg), MSG_NOSIGNAL,
                         (struct sockaddr *)&sa, salen) < 0) {
        log_warn("sd_notify: cannot send to %s: %s", path, strerror(errno));
    }
    if (fd >= 0) {
        close(fd);
    }
}

/* STOPPING=1 only follows a READY=1 (a failed start-up sends nothing). */
static bool ready_sent;

void sd_notify_ready(void)
{
    char msg[64];

    ready_sent = true;
    snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%ld", (long)getpid());
    notify(msg);
}

void sd_notify_stopping(void)
{
    if (ready_sent) {
        notify("STOPPING=1");
    }
}
