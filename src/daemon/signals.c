/*
 * SIGINT, SIGTERM and SIGHUP stop the daemon cleanly.  They are blocked in
 * every thread and read from a signalfd on the main loop, so the shutdown
 * runs as ordinary main-loop code: no work at all happens in a signal
 * handler.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "aio/aio.h"
#include "daemon/daemon.h"
#include "util/log.h"

static void stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
}

bool signals_block(Error **errp)
{
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    struct sigaction ign = { .sa_handler = SIG_IGN };
    sigset_t set;
    int ret;

    stop_signals(&set);
    /*
     * An ignored signal is discarded even while blocked, so a signalfd would
     * never see it; shells start background jobs with SIGINT ignored.
     */
    if (sigaction(SIGINT, &dfl, NULL) < 0 ||
        sigaction(SIGTERM, &dfl, NULL) < 0 ||
        sigaction(SIGHUP, &dfl, NULL) < 0) {
        error_setg_errno(errp, errno, "Cannot reset signal handlers");
        return false;
    }
    /* A client that goes away must be an EPIPE on its socket, not death. */
    if (sigaction(SIGPIPE, &ign, NULL) < 0) {
        error_setg_errno(errp, errno, "Cannot ignore SIGPIPE");
        return false;
    }
    ret = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (ret != 0) {
        error_setg_errno(errp, ret, "Cannot block signals");
        return false;
    }
    return true;
}

static void signal_read(void *opaque)
{
    Daemon *d = opaque;
    struct signalfd_siginfo si;
    ssize_t n;

    for (;;) {
        n = read(d->signal_fd, &si, sizeof(si));
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                log_error("signalfd read: %s", strerror(errno));
            }
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        if (n != sizeof(si)) {
            return;
        }
        log_info("received signal %d, shutting down", (int)si.ssi_signo);
        if (!d->exit_signal) {
            d->exit_signal = si.ssi_signo;
        }
        d->quit_requested = true;
        /* Armed here, not only when the top-level loop sees the flag: the
         * main thread may be inside a command that never returns. */
        shutdown_watchdog_arm(d);
    }
}

bool signals_watch(Daemon *d, Error **errp)
{
    sigset_t set;

    stop_signals(&set);
    d->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (d->signal_fd < 0) {
        error_setg_errno(errp, errno, "Cannot create signalfd");
        return false;
    }
    if (!aio_set_fd_handler(aio_main_context(), d->signal_fd, signal_read,
                            NULL, d, errp)) {
        close(d->signal_fd);
        d->signal_fd = -1;
        return false;
    }
    return true;
}

void signals_unwatch(Daemon *d)
{
    if (d->signal_fd < 0) {
        return;
    }
    aio_set_fd_handler(aio_main_context(), d->signal_fd, NULL, NULL, NULL,
                       NULL);
    close(d->signal_fd);
    d->signal_fd = -1;
}
