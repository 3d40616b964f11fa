/*
 * The generic job: the state machine, the verbs, pause points, speed,
 * progress, error policy, transactions and completion.  A job type supplies
 * a JobDriver (its body as a coroutine plus callbacks); the engine owns
 * everything else.
 *
 *   created --start--> running --pause point--> paused --resume--> running
 *   running --ready--> ready <--> standby
 *   running/ready --run() returned--> waiting --txn done--> pending
 *   pending --finalize (auto or job-finalize)--> concluded --dismiss--> null
 *   any failure / forced cancel --> aborting --> concluded --> null
 *
 * The allowed transitions and the verbs accepted in each state are two
 * tables in job.c, matching qemu-storage-daemon 7.2 (JobSTT, JobVerbTable).
 * Every change of state goes through one function that checks the table and
 * emits JOB_STATUS_CHANGE {id, status}.
 *
 * Threads: jobs are created, controlled, completed and freed in the main
 * loop, and every field of Job is the main loop's: the verbs, drained
 * sections, queries and events all run there.  The body runs as a
 * coroutine in job->ctx, the context of the job's nodes (an iothread's for
 * the job types that allow it, JobDriver.iothread: backup, mirror,
 * commit, stream; "create" keeps the main context and its driver step
 * moves itself to the node it writes, block/create.h).  The rule:
 *
 *  - every engine call the body makes (pause points, sleeps, the rate
 *    limit, the error policy, ready) moves the coroutine to the main loop
 *    for its duration (job_co_to_main / job_co_back), so each state change,
 *    and its JOB_STATUS_CHANGE or BLOCK_JOB_* event, happens in the main
 *    loop in the order the verbs see; the body ends (run() returned) in the
 *    main loop too;
 *  - a body parked at a pause point or asleep is parked in the main loop,
 *    so job_enter (a verb, a drain) wakes it there; busy is written only
 *    there;
 *  - the few fields the body polls between engine calls (cancelled,
 *    force_cancel, pause_count, speed) are written with atomics by the main
 *    loop and read by the body through job_is_cancelled,
 *    job_cancel_requested, job_pause_requested and job_is_throttled;
 *    progress is atomic (the copy engine counts from clients' writes);
 *  - a job type's own state shared between its body (and its filter's
 *    hooks, in the node's context) and its main-loop callbacks (complete,
 *    cancel, drained_poll) is the type's business (atomics, or a drained
 *    section: clean and the graph changes at the end run drained).
 */
#ifndef BJ_JOB_JOB_H
#define BJ_JOB_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "util/error.h"
#include "util/list.h"
#include "util/ratelimit.h"

typedef struct Job Job;
typedef struct JobDriver JobDriver;
typedef struct JobTxn JobTxn;

typedef enum JobStatus {
    JOB_STATUS_UNDEFINED = 0,
    JOB_STATUS_CREATED,
    JOB_STATUS_RUNNING,
    JOB_STATUS_PAUSED,
    JOB_STATUS_READY,
    JOB_STATUS_STANDBY,
    JOB_STATUS_WAITING,
    JOB_STATUS_PENDING,
    JOB_STATUS_ABORTING,
    JOB_STATUS_CONCLUDED,
    JOB_STATUS_NULL,
    JOB_STATUS__MAX,
} JobStatus;

typedef enum JobVerb {
    JOB_VERB_CANCEL = 0,
    JOB_VERB_PAUSE,
    JOB_VERB_RESUME,
    JOB_VERB_SET_SPEED,
    JOB_VERB_COMPLETE,
    JOB_VERB_FINALIZE,
    JOB_VERB_DISMISS,
    JOB_VERB__MAX,
} JobVerb;

/* "created", "running", ... / "cancel", "set-speed", ... as QMP spells them */
const char *job_status_name(JobStatus s);
const char *job_verb_name(JobVerb v);

/* on-error / on-source-error / on-target-error (QAPI BlockdevOnError order) */
typedef enum JobOnError {
    JOB_ON_ERROR_REPORT = 0,
    JOB_ON_ERROR_IGNORE,
    JOB_ON_ERROR_ENOSPC,
    JOB_ON_ERROR_STOP,
    JOB_ON_ERROR_AUTO,
    JOB_ON_ERROR__MAX,
} JobOnError;
/* NULL-terminated, for ArgSpec enums */
extern const char *const job_on_error_names[];

typedef enum JobErrorAction {
    JOB_ERROR_ACTION_REPORT = 0,   /* fail the job */
    JOB_ERROR_ACTION_IGNORE,       /* retry the operation */
    JOB_ERROR_ACTION_STOP,         /* the job paused itself; retry after */
    JOB_ERROR_ACTION__MAX,
} JobErrorAction;

typedef struct JobErrorEvents JobErrorEvents;   /* job-error-events.c */
typedef struct JobYield JobYield;               /* job-yield.c */

/*
 * The back-off's tuning (our extension argument x-yield, see
 * docs/guest-impact.md).  Zero-initialised means the defaults.
 */
typedef struct JobYieldParams {
    bool disabled;           /* x-yield.enabled = false */
    int64_t latency_pct;     /* guest latency allowed, % of its baseline
                                (0: default) */
    int64_t min_speed;       /* bytes/s the job keeps at least (0: default) */
} JobYieldParams;

typedef enum JobIoStatus {
    JOB_IO_STATUS_OK = 0,
    JOB_IO_STATUS_FAILED,
    JOB_IO_STATUS_NOSPACE,
} JobIoStatus;

/* job_create flags */
enum {
    JOB_DEFAULT          = 0,
    JOB_MANUAL_FINALIZE  = 1 << 0,   /* auto-finalize=false */
    JOB_MANUAL_DISMISS   = 1 << 1,   /* auto-dismiss=false */
};

/*
 * What a job type provides.  All callbacks except run are optional and run
 * in the main loop.  Order at the end of a job (per transaction, see
 * job.c): prepare on every member, then commit (success) or abort (failure
 * or cancel), then clean, then the COMPLETED/CANCELLED event.
 */
struct JobDriver {
    const char *type;        /* JobType: "stream", "commit", "create", ... */
    /* The body may run in an iothread (job->ctx is the nodes' context);
     * false: job->ctx is the main context, and block_job_add_node refuses
     * nodes in an iothread. */
    bool iothread;
    size_t instance_size;    /* >= sizeof(Job); Job is the first member */
    /* Emits BLOCK_JOB_* events (every type but "create"). */
    bool block_job_events;
    /* The background copy yields to guests' I/O on the job's nodes
     * (job-yield.c): backup, mirror, stream, commit. */
    bool yields;

    /* The body.  Returns 0 or -errno; may set errp for a precise message
     * (else the job's error is strerror(-ret)).  Must reach a pause point
     * (job_pause_point, job_sleep_ns) at least every 100 ms. */
    int coroutine_fn (*run)(Job *job, Error **errp);

    /* block-job-complete / job-complete, accepted in ready/standby. */
    void (*complete)(Job *job, Error **errp);
    /* Cancel requested; returns whether the cancel must be treated as
     * forced (stream/commit always true; mirror only soft in ready). */
    bool (*cancel)(Job *job, bool force);
    /* Told when the job stops/restarts at a pause point. */
    void (*pause)(Job *job);
    void (*resume)(Job *job);
    /* For drained_poll: true while the job still has requests in flight. */
    bool (*drained_poll)(Job *job);

    /* Graph changes at the end: prepare may fail (-errno, then the whole
     * transaction aborts); commit/abort then clean; free releases what the
     * type allocated (after the job left every list). */
    int (*prepare)(Job *job, Error **errp);
    void (*commit)(Job *job);
    void (*abort)(Job *job);
    void (*clean)(Job *job);
    void (*free)(Job *job);

    /* query-block-jobs: adds the type's own members to info (may be
     * NULL). */
    void (*query)(Job *job, json_t *info);
};

struct Job {
    const JobDriver *driver;
    char *id;
    AioContext *ctx;
    int refcnt;
    JobStatus status;

    Coroutine *co;           /* the body; NULL before start and after exit */
    CoSleep sleep;           /* cut short by set-speed/cancel/resume */
    bool busy;               /* false while yielded/sleeping at a point */
    bool paused;             /* stopped at a pause point right now */
    int pause_count;         /* user + internal pauses; paused while > 0 */
    bool user_paused;        /* one user pause at most (pause verb) */
    bool started;
    bool cancelled;          /* cancel requested */
    bool force_cancel;       /* ... and it is forced (job_is_cancelled) */
    bool deferred_to_main_loop;  /* run() returned, exit is scheduled */
    bool completed;          /* the exit BH ran (job_completed) */
    bool auto_finalize;
    bool auto_dismiss;
    /* Main loop: moves of the job's nodes to another context under way
     * (x-blockdev-set-iothread, one count per edge), and whether the body
     * waits in a drained section of its own (blockjob.c), where it stays
     * until the moves are over: woken meanwhile by its section's end, it
     * would run on in the context the move is leaving. */
    int ctx_moving;
    bool in_co_drain;

    int ret;                 /* run()'s result, then prepare's */
    Error *err;              /* the job's error once it failed */

    uint64_t progress_current;   /* "offset" / current-progress */
    uint64_t progress_total;     /* "len" / total-progress */

    int64_t speed;           /* bytes/s, 0 = unlimited */
    RateLimit limit;         /* at the lower of speed and yield_limit */
    /* The back-off's limit now (bytes/s, 0: not limiting); written by the
     * main loop (job-yield.c), read by the body (job_is_throttled). */
    int64_t yield_limit;
    /* The job type asked the back-off to stand aside for good (a
     * background mirror that would not converge otherwise); atomic. */
    bool yield_aside;
    JobYield *yield;         /* NULL: the type does not yield */
    JobIoStatus iostatus;
    JobErrorEvents *error_events;  /* throttled BLOCK_JOB_ERROR, or NULL */
    int64_t error_last_ns;         /* the last ignored error */
    int64_t error_backoff_ns;      /* job_error_backoff's sleep, 0: none */

    JobTxn *txn;
    ListHead txn_link;       /* in txn->jobs */
    ListHead link;           /* in the global job list (newest first) */
    ListHead block_users;    /* BlockJobNode entries (blockjob.c) */
    AioBH *exit_bh;
};

/*
 * Creates a job in state "created" (JOB_STATUS_CHANGE created).  id must be
 * well formed and unused ("Invalid job ID 'x'", "Job ID 'x' already in
 * use").  txn may be NULL (a transaction of one).  Returns the instance
 * (driver->instance_size bytes, zeroed, Job first) with one reference held
 * by the job list.  Main loop.
 */
void *job_create(const char *id, const JobDriver *drv, JobTxn *txn,
                 AioContext *ctx, int flags, Error **errp);
/* created -> running; enters the body. */
void job_start(Job *job);
/* Setup failed after job_create: created -> null, and the job is freed. */
void job_early_fail(Job *job);

void job_ref(Job *job);
void job_unref(Job *job);

Job *job_get(const char *id);
/* Newest first; NULL starts, NULL ends. */
Job *job_next(Job *prev);

bool job_is_cancelled(Job *job);     /* forced cancel requested */
bool job_cancel_requested(Job *job); /* any cancel requested (any thread) */
bool job_pause_requested(Job *job);  /* pause_count > 0 (any thread) */
/* speed != 0 or the back-off limits the job (any thread) */
bool job_is_throttled(Job *job);
/* waiting, pending, aborting, concluded or null */
bool job_is_completed(Job *job);
bool job_is_ready(Job *job);         /* ready or standby */

/* ---- verbs (main loop; checked against the verb table) ---- */
bool job_apply_verb(Job *job, JobVerb verb, Error **errp);
bool job_user_pause(Job *job, Error **errp);
bool job_user_resume(Job *job, Error **errp);
bool job_user_cancel(Job *job, bool force, Error **errp);
bool job_complete(Job *job, Error **errp);
bool job_finalize(Job *job, Error **errp);
/* Dismisses a concluded job; *jobp is NULL afterwards. */
bool job_dismiss(Job **jobp, Error **errp);
bool job_set_speed(Job *job, int64_t speed, Error **errp);

/* Internal (drain) pauses: counted apart from the user's pause. */
void job_pause(Job *job);
void job_resume(Job *job);
/* Cancel without verb checks (transactions, shutdown). */
void job_cancel(Job *job, bool force);

/* ---- inside the body (coroutine_fn, in job->ctx) ---- */
/* Moves the body to the main loop (returns whether it moved), and back to
 * job->ctx (moved: what job_co_to_main returned).  For engine work: the
 * Threads rule above. */
bool coroutine_fn job_co_to_main(Job *job);
void coroutine_fn job_co_back(Job *job, bool moved);
/* Stops here while paused; returns at once otherwise. */
void coroutine_fn job_pause_point(Job *job);
/* Sleeps ns (or until woken by set-speed/cancel/resume), then pauses if
 * asked to.  Does not sleep when cancelled. */
void coroutine_fn job_sleep_ns(Job *job, int64_t ns);
void job_enter(Job *job);
/* running -> ready (and BLOCK_JOB_READY). */
void coroutine_fn job_transition_to_ready(Job *job);

/* Speed: call before processing a chunk of bytes.  Sleeps as long as the
 * limit requires (woken early by set-speed, which recomputes), and is a
 * pause point even when unlimited.  The first chunk is throttled too.
 * Returns at once when the job is cancelled. */
void coroutine_fn job_ratelimit_sleep(Job *job, uint64_t bytes);
/* The chunk size to use under the current speed (see ratelimit_chunk). */
uint64_t coroutine_fn job_chunk_size(Job *job, uint64_t max_chunk,
                                     uint64_t align);

/* ---- yielding to guests (job-yield.c; main loop) ---- */
/* Checks x-yield's values ("x-yield.latency-pct must be between 101 and
 * 10000", "x-yield.min-speed must be positive"). */
bool job_yield_params_check(const JobYieldParams *p, Error **errp);
/* Before job_start, for a type that yields: p's tuning (checked). */
void job_yield_configure(Job *job, const JobYieldParams *p);
/* The rate the job's limiter applies: the lower of speed and the
 * back-off's limit (0: unlimited). */
int64_t job_effective_speed(Job *job);
/* job.c: the body starts / ended / the job is freed. */
void job_yield_start(Job *job);
void job_yield_stop(Job *job);
void job_yield_free(Job *job);
/* The back-off stops limiting the job for good (any thread; the body of a
 * mirror in background mode that does not converge under it). */
void job_yield_step_aside(Job *job);
/* Adds the x-yield-* members of query-jobs and query-block-jobs. */
void job_yield_query(Job *job, json_t *info);

/* Progress ("offset"/"len" of events, current/total-progress). */
void job_progress_update(Job *job, uint64_t done);
void job_progress_set_remaining(Job *job, uint64_t remaining);
uint64_t job_progress_current(Job *job);
uint64_t job_progress_total(Job *job);

/*
 * The error policy: decides what to do with -errno `error` of a read or a
 * write, emits BLOCK_JOB_ERROR {device, operation, action}, and for stop
 * sets io-status and pauses the job (user pause: resume continues it).
 * Call from the body; after STOP, call job_pause_point before retrying.
 */
JobErrorAction coroutine_fn job_error_action(Job *job, JobOnError policy,
                                             bool is_read, int error);
/* Before retrying after an ignored error: sleeps (as job_sleep_ns) 1 ms
 * doubling to 1 s while ignored errors come less than a second apart, so
 * that a persistent error does not spin a core (job-error-events.c). */
void coroutine_fn job_error_backoff(Job *job);

/* ---- synchronous helpers (main loop, not in a coroutine) ---- */
/* Cancels and runs the loop until the job is gone (or concluded, for a
 * job that is not auto-dismissed: then dismissed).  Returns -ECANCELED, or
 * the job's own result if it completed first; sets errp on failure. */
int job_cancel_sync(Job *job, bool force, Error **errp);
/* Completes (job_complete) and waits likewise. */
int job_complete_sync(Job *job, Error **errp);
/* Force-cancels every job and waits for all (shutdown). */
void job_cancel_sync_all(void);

/* ---- transactions: finalize together, one failure aborts all ---- */
JobTxn *job_txn_new(void);
void job_txn_unref(JobTxn *txn);

/* ---- queries ---- */
json_t *job_query_jobs(void);          /* query-jobs */
json_t *job_query_block_jobs(void);    /* query-block-jobs */

#endif
