/*
 * blockjobd: start-up, the main loop, and the clean shutdown.
 *
 *   pre-pass over argv (-h, -V, syntax)   nothing created yet
 *   --daemonize: fork                      before any thread or ring exists
 *   block stop signals, main loop, QMP     threads created later inherit
 *   apply options in order                 the signal mask
 *   pidfile, tell the parent we are up
 *   run until `quit` or a signal
 *   shutdown (also after a failed start-up)
 */
#include <stdio.h>

#include <jansson.h>

#include "aio/aio.h"
#include "aio/io.h"
#include "aio/iothread.h"
#include "block/block.h"
#include "daemon/daemon.h"
#include "job/job.h"
#include "export/fuse.h"
#include "nbd/nbd.h"
#include "object/object.h"
#include "qmp/qmp.h"
#include "util/alloc.h"
#include "util/error.h"

static void quit_cb(void *opaque)
{
    Daemon *d = opaque;

    d->quit_requested = true;
    shutdown_watchdog_arm(d);
}

static void report(const char *prefix, Error *err)
{
    fprintf(stderr, DAEMON_NAME ": %s%s\n", prefix, error_get_pretty(err));
    error_free(err);
}

/*
 * Order matters: jobs and exports go while the monitors can still report
 * their events; then the monitors close, so that no command can add work
 * while we wind down; in-flight I/O completes (drain) before nodes are
 * flushed and closed; iothreads stop after that because closing a node
 * bound to one runs requests there; the thread pool goes last.  The same
 * path runs after a failed start-up, so a half-started daemon removes its
 * sockets too.
 */
static void daemon_shutdown(Daemon *d)
{
    shutdown_watchdog_arm(d);
    sd_notify_stopping();
    /* No new command starts while we wind down (the waits below run the
     * loop); replies and events still go out. */
    monitor_hold_commands(true);
    /* Jobs first, while the monitors can still carry BLOCK_JOB_CANCELLED;
     * each cancelled job leaves its images consistent. */
    job_cancel_sync_all();
    /* Requests held back by a debug drain must run before exports close. */
    qmp_debug_drains_end_all();
    /* Exports go while the monitors can still carry BLOCK_EXPORT_DELETED. */
    nbd_shutdown();
    fuse_shutdown();
    monitor_cleanup_all();
    bdrv_drain_all_begin();
    bdrv_drain_all_end();
    bdrv_close_all();
    signals_unwatch(d);
    iothread_destroy_all();
    /* Nothing uses an object any more. */
    object_del_all();
    /* Last user of the pool gone: join every worker, including those that
     * already exited idle and wait on the dead list for a join that only
     * a later spawn would have done (ThreadSanitizer: "thread leak"). */
    thread_pool_shutdown();
    pidfile_remove(d->pidfile);
    d->pidfile = NULL;
}

int main(int argc, char **argv)
{
    Daemon d = { .signal_fd = -1, .daemon_status_fd = -1,
                 .shutdown_max_seconds = SHUTDOWN_MAX_SECONDS_DEFAULT };
    Error *err = NULL;
    int ret = 1;

    bj_alloc_init_jansson();
    switch (options_prepass(&d, argc, argv)) {
    case OPTIONS_EXIT_OK:
        return 0;
    case OPTIONS_EXIT_FAIL:
        return 1;
    case OPTIONS_CONTINUE:
        break;
    }

    if (d.daemonize && !daemonize_start(&d.daemon_status_fd, &err)) {
        report("", err);
        return 1;
    }
    if (!signals_block(&err) || !aio_main_init(&err)) {
        report("", err);
        return 1;
    }
    if (!signals_watch(&d, &err)) {
        report("", err);
        return 1;
    }
    qmp_register_all_commands();
    qmp_set_quit_handler(quit_cb, &d);

    /* Clients may connect as soon as a --monitor is applied, but as in
     * qemu-storage-daemon their commands wait until start-up is done. */
    monitor_hold_commands(true);
    if (!options_apply(&d, argc, argv)) {
        goto out;
    }
    if (d.pidfile_path) {
        d.pidfile = pidfile_write(d.pidfile_path, &err);
        if (!d.pidfile) {
            report("cannot create PID file: ", err);
            goto out;
        }
    }
    if (d.daemonize) {
        daemonize_done(d.daemon_status_fd);
        d.daemon_status_fd = -1;
    }
    sd_notify_ready();

    monitor_hold_commands(false);
    while (!d.quit_requested) {
        aio_poll(aio_main_context(), true);
    }
    ret = 0;

out:
    daemon_shutdown(&d);
    qmp_set_quit_handler(NULL, NULL);
    return ret;
}
