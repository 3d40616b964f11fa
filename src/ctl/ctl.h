/*
 * bjctl: the management client.  Shared options, exit statuses and the
 * entry points of each command group.
 */
#ifndef BJ_CTL_CTL_H
#define BJ_CTL_CTL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "ctl/qmpc.h"

/* Exit statuses, documented in `bjctl --help` and bjctl(1). */
enum {
    EXIT_OK = 0,
    EXIT_ERROR = 1,           /* the daemon refused, or the job failed */
    EXIT_USAGE = 2,
    EXIT_CONN = 3,            /* daemon unreachable or connection lost */
    EXIT_COMPLETED_FIRST = 4, /* abort: the job completed before the cancel */
    EXIT_TIMEOUT = 5,         /* abort --timeout: gave up, job left running */
    EXIT_CANCELLED = 6,       /* --wait: the job was cancelled by someone */
    EXIT_INTERRUPTED = 7,     /* --wait: Ctrl-C, the job was aborted */
};

typedef struct Ctl {
    const char *socket;
    int connect_timeout_ms;
    bool json, wait, verbose, async, pivot, poll, all;
    const char *job_id, *to, *sync, *bitmap, *bitmap_mode, *base, *top;
    const char *mode;
    bool has_speed, has_bandwidth;  /* --speed RATE, --bandwidth MiB/s */
    int64_t speed, bw_speed;
    bool has_timeout;
    double timeout;
    long count;               /* events: stop after this many (0: never) */
    bool persistent, disabled, has_granularity; /* bitmap add */
    int64_t granularity;
    const char *driver, *file, *backing; /* node add */
    bool read_only;
    const char *format, *backing_format; /* image create (and --backing) */
    bool has_size, has_cluster_size;
    int64_t size, cluster_size;
    const char *export_name;          /* export add */
    bool writable, allocation_depth;
    const char *next_bitmap;          /* fleece start */
    char **bitmaps;                   /* every --bitmap, in order */
    int nbitmaps;
    char **args;              /* positional arguments after the command */
    int nargs;
} Ctl;

/*
 * Prints "bjctl: MSG" on stderr, and keeps MSG for the --json error
 * object (ctl_print_error_json).
 */
void ctl_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/*
 * A command group's usage error: "bjctl: MSG" (kept for --json), then the
 * group's usage text; returns EXIT_USAGE.
 */
int ctl_usage_error(const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Keeps MSG for the --json error object without printing it; returns it. */
const char *ctl_vnote(const char *fmt, va_list ap)
    __attribute__((format(printf, 1, 0)));
/*
 * --json, exit status rc != 0: prints {"error": {"class": C, "desc": D},
 * "exit": rc} on stdout, D the last message kept, C the daemon's QMP error
 * class when it refused, else one bjctl's exit status names.
 */
void ctl_print_error_json(int rc);
/*
 * Parses a --speed/speed RATE (units.h: units_parse_rate) or prints why
 * not ("bjctl: ..." on stderr) and returns false.
 */
bool ctl_parse_rate(const char *s, int64_t *out);
/* Connects and negotiates or prints the reason and returns NULL. */
Qmpc *ctl_connect(const Ctl *ctl);
/* Prints v as JSON on stdout on one line; an array one element a line. */
void ctl_print_json(json_t *v);
/* Connects, runs cmd with no arguments (NULL: jobs_query's merged job
 * list) and closes: its return value, or NULL with the reason printed and
 * *rc the exit code. */
json_t *ctl_query(const Ctl *ctl, const char *cmd, int *rc);
/* What a listing prints before its table: with --json the rows, one a line,
 * with no rows the line `empty`.  Returns true when that was all. */
bool ctl_print_rows_or_empty(const Ctl *ctl, json_t *rows,
                             const char *empty);
/* path made absolute against bjctl's working directory, for a daemon
 * whose own is elsewhere (caller frees). */
char *ctl_abs_path(const char *path);
/* obj[key] as a string, or dflt when absent or not a string. */
const char *ctl_str_or(json_t *obj, const char *key, const char *dflt);
/* Width of a table column: the longest rows[i][key] string, at least as
 * wide as its header. */
int ctl_column_width(json_t *rows, const char *key, const char *header);

/* jobs.c: query-jobs merged with query-block-jobs, one object per job. */
json_t *jobs_query(Qmpc *q, char **err);
json_t *jobs_find(json_t *jobs, const char *id);

typedef enum JobOutcome {
    OUTCOME_NONE,
    OUTCOME_COMPLETED,
    OUTCOME_CANCELLED,
    OUTCOME_FAILED,
    OUTCOME_READY,
    OUTCOME_UNKNOWN,          /* gone while we could not watch it */
} JobOutcome;

typedef struct JobWait {
    /* set by the caller */
    const char *id;
    bool stop_at_ready;       /* return once the job is READY */
    bool pivot_at_ready;      /* send job-complete at READY, keep waiting */
    bool dismiss;             /* dismiss the job once it concluded */
    bool verbose;             /* progress bar or lines on stderr; with
                                 --json, progress objects on stdout */
    bool poll_only;           /* ignore events, poll query-jobs */
    bool finalize;            /* finalize it if it waits in pending */
    int64_t deadline_ms;      /* qmpc_now_ms() based, -1: none */
    /* results */
    JobOutcome outcome;
    char *error;              /* the job's error, for OUTCOME_FAILED */
    char *last_status;
    /* bookkeeping */
    bool saw_aborting, concluded, gone, ready, pivot_sent, finalize_sent;
    int64_t cur, total;
    int64_t shown_cur, shown_total;  /* the last --json progress object */
    char *shown_status;
} JobWait;

/*
 * Watches job w->id until it is gone (or READY, or pivoted), learning the
 * end from events and polling query-jobs as a check and as the fallback
 * when the connection drops (it reconnects).  Returns EXIT_OK with
 * w->outcome set, EXIT_TIMEOUT at the deadline, EXIT_ERROR when a pivot
 * is refused (message printed), EXIT_CONN when the daemon is unreachable.
 */
int job_wait(const Ctl *ctl, Qmpc **qp, JobWait *w);
/*
 * From here on SIGINT (Ctrl-C) makes job_wait return EXIT_INTERRUPTED;
 * a second one kills bjctl as usual.  ctl_interrupted() tells whether it
 * came, and clears it.
 */
void ctl_catch_sigint(void);
bool ctl_interrupted(void);
void job_wait_cleanup(JobWait *w);

/* cmds.c */
int cmd_list(const Ctl *ctl);
int cmd_info(const Ctl *ctl);
int cmd_nodes(const Ctl *ctl);
int cmd_events(const Ctl *ctl);
int cmd_start(const Ctl *ctl, const char *what);
int cmd_control(const Ctl *ctl, const char *verb);
int cmd_abort(const Ctl *ctl);

/* bitmapcmds.c: bitmap list|add|remove|clear|enable|disable|merge|sha256 */
int cmd_bitmap(const Ctl *ctl);

/* nodecmds.c: node add|remove */
int cmd_node(const Ctl *ctl);

/* imagecmds.c: image create */
int cmd_image(const Ctl *ctl);

typedef struct ImageSpec {
    const char *path;            /* absolute: the daemon opens it */
    const char *format;          /* "qcow2" or "raw" */
    int64_t size;
    const char *backing, *backing_format;   /* qcow2 header, or NULL */
    int64_t cluster_size;        /* qcow2; 0: the default */
} ImageSpec;
/*
 * Creates the image as `image create` does (blockdev-create jobs, each
 * waited for and dismissed; *qp may be replaced by a reconnect).  Returns
 * EXIT_OK or the exit status with the reason printed.
 */
int image_create(const Ctl *ctl, Qmpc **qp, const ImageSpec *spec);

/* exportcmds.c: export add|remove|list */
int cmd_export(const Ctl *ctl);
/* block-export-add's arguments for an NBD export id (also its name) of
 * node, with every --bitmap and --allocation-depth. */
json_t *export_add_args(const Ctl *ctl, const char *node, const char *id);
/* Waits for BLOCK_EXPORT_DELETED of id, at most the connect timeout:
 * true when it came. */
bool export_wait_deleted(const Ctl *ctl, Qmpc *q, const char *id);

/* fleececmds.c: fleece start|stop */
int cmd_fleece(const Ctl *ctl);

#endif
