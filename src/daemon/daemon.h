/*
 * blockjobd's main program: command-line options, pidfile, daemonizing,
 * signals and the shutdown sequence.  Private to src/daemon/.
 */
#ifndef BJ_DAEMON_DAEMON_H
#define BJ_DAEMON_DAEMON_H

#include <stdbool.h>
#include <sys/types.h>

#include "util/error.h"

#define DAEMON_NAME "blockjobd"

/* Everything main() knows; passed explicitly, never a global. */
typedef struct Daemon {
    /* From the pre-pass over argv. */
    bool daemonize;
    const char *pidfile_path;      /* last --pidfile wins, as in qsd */
    unsigned shutdown_max_seconds; /* 0: shutdown is not bounded */

    /* Run state. */
    bool quit_requested;           /* set by `quit` and by signals */
    int exit_signal;               /* the signal that stopped us, or 0 */
    int signal_fd;                 /* -1 when not set up */
    struct Pidfile *pidfile;       /* NULL until written */
    int daemon_status_fd;          /* --daemonize: pipe to the parent, or -1 */
    bool watchdog_armed;
} Daemon;

/* How long a shutdown may take unless --shutdown-max-seconds says. */
#define SHUTDOWN_MAX_SECONDS_DEFAULT 30

/* ---- options.c ---- */

typedef enum OptionsResult {
    OPTIONS_CONTINUE,              /* go on starting up */
    OPTIONS_EXIT_OK,               /* -h / -V printed; exit 0 */
    OPTIONS_EXIT_FAIL,             /* a message was printed; exit 1 */
} OptionsResult;

/*
 * Pre-pass: checks the syntax of every option (unknown options, missing
 * arguments, stray arguments), handles -h and -V, and records --daemonize
 * and --pidfile.  Creates nothing, so it is safe before fork().
 */
OptionsResult options_prepass(Daemon *d, int argc, char **argv);

/*
 * Applies --blockdev, --chardev, --monitor, --object, ... in command-line
 * order.  On failure prints "blockjobd: --opt ARG: message" and returns
 * false.  Needs the main loop to exist.
 */
bool options_apply(Daemon *d, int argc, char **argv);

/* ---- pidfile.c ---- */

typedef struct Pidfile Pidfile;

/*
 * Creates (or reuses) path, takes a write lock on it, and writes our pid.
 * Refused while another live process holds the lock.
 */
Pidfile *pidfile_write(const char *path, Error **errp);
/* Removes the file if it is still the one we wrote, unlocks and frees. */
void pidfile_remove(Pidfile *pf);

/* ---- daemonize.c ---- */

/*
 * Forks into the background.  The original process waits until the daemon
 * reports the end of start-up and exits with its status: 0 on success, the
 * daemon's exit status (1) if start-up failed.  Returns in the daemon only,
 * with the status pipe's write end in *status_fd.
 */
bool daemonize_start(int *status_fd, Error **errp);
/* In the daemon once start-up succeeded: detaches stdio, chdir /, and lets
 * the parent exit 0. */
void daemonize_done(int status_fd);

/* ---- signals.c ---- */

/*
 * Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (so in every
 * thread created afterwards) and ignores SIGPIPE.  Call first thing, before
 * any thread exists.
 */
bool signals_block(Error **errp);
/* Reads the blocked signals through a signalfd on the main loop; each one
 * asks for a clean shutdown (d->quit_requested). */
bool signals_watch(Daemon *d, Error **errp);
void signals_unwatch(Daemon *d);

/* ---- sdnotify.c ---- */

/* sd_notify(3)'s READY=1 (start-up complete) and STOPPING=1, to
 * $NOTIFY_SOCKET when the service manager set it; nothing otherwise. */
void sd_notify_ready(void);
void sd_notify_stopping(void);

/* ---- watchdog.c ---- */

/* Called when a shutdown is asked for (idempotent): unless it is over in
 * d->shutdown_max_seconds, the process exits with status 1. */
void shutdown_watchdog_arm(Daemon *d);

#endif
