/*
 * --daemonize, as qemu-storage-daemon does it: the process the user started
 * stays in the foreground until start-up is over, so its exit status says
 * whether the daemon came up, and start-up errors still reach its stderr.
 *
 *   parent ──fork──> child: setsid() ──fork──> daemon (not a session leader,
 *      │                exits at once              so it can never regain a
 *      │                                           controlling terminal)
 *      └── reads one byte from the status pipe: 0 = up → exit 0;
 *          EOF = the daemon failed and exited → exit with its failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/daemon.h"

/* The original process: never returns. */
static void __attribute__((noreturn)) wait_for_daemon(int status_rd)
{
    char status;
    ssize_t n;

    do {
        n = read(status_rd, &status, 1);
    } while (n < 0 && errno == EINTR);
    /* The daemon printed its own error before closing the pipe. */
    _exit(n == 1 && status == 0 ? 0 : 1);
}

bool daemonize_start(int *status_fd, Error **errp)
{
    int fds[2];
    pid_t pid;

    if (pipe2(fds, O_CLOEXEC) < 0) {
        error_setg_errno(errp, errno, "Cannot create pipe");
        return false;
    }
    pid = fork();
    if (pid < 0) {
        error_setg_errno(errp, errno, "Cannot fork");
        close(fds[0]);
        close(fds[1]);
        return false;
    }
    if (pid > 0) {
        int wstatus;

        close(fds[1]);
        /* The intermediate child exits right after its fork: reap it. */
        while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
            _exit(1);
        }
        wait_for_daemon(fds[0]);
    }

    close(fds[0]);
    if (setsid() < 0) {
        fprintf(stderr, DAEMON_NAME ": setsid: %s\n", strerror(errno));
        _exit(1);
    }
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, DAEMON_NAME ": cannot fork: %s\n", strerror(errno));
        _exit(1);
    }
    if (pid > 0) {
        _exit(0);
    }
    *status_fd = fds[1];
    return true;
}

void daemonize_done(int status_fd)
{
    char ok = 0;
    int null_fd;

    if (chdir("/") < 0) {
        /* "/" always exists; go on in the old directory if it does not. */
        fprintf(stderr, DAEMON_NAME ": chdir /: %s\n", strerror(errno));
    }
    null_fd = open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
        fflush(stdout);
        fflush(stderr);
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDOUT_FILENO);
        dup2(null_fd, STDERR_FILENO);
        if (null_fd > STDERR_FILENO) {
            close(null_fd);
        }
    }
    if (write(status_fd, &ok, 1) != 1) {
        /* The parent is gone: nobody is left to tell. */
    }
    close(status_fd);
}
