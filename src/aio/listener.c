/*
 * Listening sockets with accept back-off (see listener.h).
 *
 * States: watching (delay_ns == 0), or paused with the timer armed.  A
 * failure while watching starts an episode (one log line); a failure right
 * after a pause doubles the delay; a successful accept, or finding the
 * queue empty, ends the episode.
 */
#include "aio/listener.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/alloc.h"
#include "util/log.h"

struct AioListener {
    AioContext *ctx;
    int fd;
    const char *what;
    AioListenerFn *on_ready;
    void *opaque;
    AioTimer *timer;
    int64_t delay_ns;          /* current back-off; 0 outside an episode */
    unsigned long refused;     /* failed accepts in this episode */
};

static void readable(void *opaque)
{
    AioListener *l = opaque;

    l->on_ready(l, l->opaque);
}

static bool watch(AioListener *l, bool on)
{
    Error *err = NULL;

    if (!aio_set_fd_handler(l->ctx, l->fd, on ? readable : NULL, NULL,
                            on ? l : NULL, &err)) {
        error_report_err(err, l->what);
        return false;
    }
    return true;
}

static void resume_cb(void *opaque)
{
    AioListener *l = opaque;

    watch(l, true);
}

AioListener *aio_listener_new(AioContext *ctx, int fd, const char *what,
                              AioListenerFn *on_ready, void *opaque,
                              Error **errp)
{
    AioListener *l = bj_calloc(1, sizeof(*l));

    l->ctx = ctx;
    l->fd = fd;
    l->what = what;
    l->on_ready = on_ready;
    l->opaque = opaque;
    if (!aio_set_fd_handler(ctx, fd, readable, NULL, l, errp)) {
        free(l);
        return NULL;
    }
    l->timer = aio_timer_new(ctx, resume_cb, l);
    return l;
}

int aio_listener_fd(const AioListener *l)
{
    return l->fd;
}

static void end_episode(AioListener *l)
{
    if (l->delay_ns) {
        log_info("%s: accepting clients again (%lu accept calls failed "
                 "meanwhile)", l->what, l->refused);
        l->delay_ns = 0;
        l->refused = 0;
    }
}

bool aio_listener_accept_failed(AioListener *l, int err)
{
    if (err == EAGAIN || err == EWOULDBLOCK) {
        end_episode(l);
        return true;
    }
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
        /* ECONNABORTED, EINTR, EPROTO...: that client only. */
        if (err != EINTR && err != ECONNABORTED) {
            log_debug("%s: accept failed: %s", l->what, strerror(err));
        }
        return false;
    }
    l->refused++;
    if (l->delay_ns == 0) {
        l->delay_ns = ACCEPT_BACKOFF_MIN_NS;
        log_warn("%s: accept failed: %s; new clients wait in the backlog, "
                 "retrying every %lld ms up to %lld ms until it succeeds",
                 l->what, strerror(err),
                 (long long)(ACCEPT_BACKOFF_MIN_NS / 1000000),
                 (long long)(ACCEPT_BACKOFF_MAX_NS / 1000000));
    } else if (l->delay_ns < ACCEPT_BACKOFF_MAX_NS) {
        l->delay_ns *= 2;
        if (l->delay_ns > ACCEPT_BACKOFF_MAX_NS) {
            l->delay_ns = ACCEPT_BACKOFF_MAX_NS;
        }
    }
    if (watch(l, false)) {
        aio_timer_mod(l->timer, clock_ns() + l->delay_ns);
    }
    return true;
}

void aio_listener_accepted(AioListener *l)
{
    end_episode(l);
}

int aio_listener_accept(AioListener *l)
{
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            aio_listener_accepted(l);
            return fd;
        }
        if (aio_listener_accept_failed(l, errno)) {
            return -1;
        }
    }
}

void aio_listener_free(AioListener *l)
{
    if (!l) {
        return;
    }
    aio_timer_free(l->timer);
    watch(l, false);
    free(l);
}

/*
 * Whether a process accepts connections on the socket file at sa.  The
 * probe is non-blocking: a listener whose backlog is full answers EAGAIN,
 * which still means somebody is there.  Anything but ECONNREFUSED (nobody
 * bound: the file is stale) counts as alive, so we never remove a socket we
 * could not prove dead (EACCES, for one).
 */
static bool socket_file_alive(const struct sockaddr_un *sa, int *err)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        *err = errno;
        return true;
    }
    int ret = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
    *err = ret < 0 ? errno : 0;
    close(fd);
    return ret == 0 || *err != ECONNREFUSED;
}

int unix_socket_bind(const char *path, Error **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat st;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    /* lstat: a symlink to a socket is someone else's, never removed. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        int err;

        if (socket_file_alive(&sa, &err)) {
            if (err == 0 || err == EAGAIN) {
                error_setg(errp, "UNIX socket %s is in use: another process "
                           "accepts connections on it", path);
            } else {
                error_setg_errno(errp, err, "UNIX socket %s exists and "
                                 "cannot be checked for a live listener",
                                 path);
            }
            return -1;
        }
        if (unlink(path) < 0 && errno != ENOENT) {
            log_warn("cannot remove stale socket %s: %s", path,
                     strerror(errno));
        }
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        error_setg_errno(errp, errno, "Failed to bind socket to %s", path);
        close(fd);
        return -1;
    }
    return fd;
}

int inet_socket_bind(const char *host, const char *port, int *fds, int max,
                     Error **errp)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE,
    };
    struct addrinfo *res = NULL, *ai;
    int ret, n = 0, saved_errno = 0;

    ret = getaddrinfo(host && host[0] ? host : NULL, port, &hints, &res);
    if (ret != 0) {
        error_setg(errp, "address resolution failed for %s:%s: %s",
                   host ? host : "", port, gai_strerror(ret));
        return -1;
    }
    for (ai = res; ai && n < max; ai = ai->ai_next) {
        int fd = socket(ai->ai_family,
                        ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        int one = 1;

        if (fd < 0) {
            saved_errno = errno;
            continue;
        }
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            (ai->ai_family == AF_INET6 &&
             setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
                        sizeof(one)) < 0) ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            saved_errno = errno;
            close(fd);
            continue;
        }
        fds[n++] = fd;
    }
    freeaddrinfo(res);
    if (n == 0) {
        error_setg_errno(errp, saved_errno ? saved_errno : EADDRNOTAVAIL,
                         "Failed to bind socket");
        return -1;
    }
    return n;
}
