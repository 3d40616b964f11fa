/*
 * The bound on shutdown (docs/limits.md).
 *
 * A clean shutdown waits for what is in flight: jobs cancel, NBD requests
 * finish, nodes flush.  A request stuck below us (a driver that never
 * completes, an unreachable NFS server, a null-co node with an hour of
 * latency-ns) would then hold `quit` and SIGTERM forever, and the main
 * thread may be stuck inside a nested wait of some command that never
 * returns to the top-level loop.  So once a shutdown is asked for, a
 * separate thread counts --shutdown-max-seconds and, if the process is
 * still there, says so and exits with status 1 without closing what is
 * left.  Everything acknowledged to a client (a flush, a FUA write) is on
 * disk already; sockets and the pidfile may stay behind, and the next
 * start replaces both.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "util/log.h"

static void *watchdog_main(void *opaque)
{
    unsigned secs = (unsigned)(uintptr_t)opaque;
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += secs;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
           EINTR) {
        /* until the deadline */
    }
    log_error("shutdown did not finish within %u s (see "
              "--shutdown-max-seconds); exiting without waiting for the "
              "rest", secs);
    _exit(1);
    return NULL;
}

void shutdown_watchdog_arm(Daemon *d)
{
    pthread_attr_t attr;
    pthread_t t;
    int ret;

    if (d->watchdog_armed || d->shutdown_max_seconds == 0) {
        return;
    }
    d->watchdog_armed = true;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    /* Created with the stop signals blocked (they are in every thread),
     * so signals keep going to the signalfd. */
    ret = pthread_create(&t, &attr, watchdog_main,
                         (void *)(uintptr_t)d->shutdown_max_seconds);
    pthread_attr_destroy(&attr);
    if (ret != 0) {
        log_warn("cannot start the shutdown watchdog: %s; shutdown is not "
                 "bounded", strerror(ret));
    }
}
