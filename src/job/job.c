/*
 * The generic job: state machine, verbs, pause points and completion.
 * Transactions and the synchronous helpers live in job-txn.c, events and
 * queries in job-query.c.
 */
#include "job/job-internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "job/blockjob.h"
#include "util/alloc.h"
#include "util/argspec.h"
#include "util/event.h"
#include "util/log.h"

static const char *const status_names[JOB_STATUS__MAX] = {
    [JOB_STATUS_UNDEFINED] = "undefined",
    [JOB_STATUS_CREATED]   = "created",
    [JOB_STATUS_RUNNING]   = "running",
    [JOB_STATUS_PAUSED]    = "paused",
    [JOB_STATUS_READY]     = "ready",
    [JOB_STATUS_STANDBY]   = "standby",
    [JOB_STATUS_WAITING]   = "waiting",
    [JOB_STATUS_PENDING]   = "pending",
    [JOB_STATUS_ABORTING]  = "aborting",
    [JOB_STATUS_CONCLUDED] = "concluded",
    [JOB_STATUS_NULL]      = "null",
};

static const char *const verb_names[JOB_VERB__MAX] = {
    [JOB_VERB_CANCEL]    = "cancel",
    [JOB_VERB_PAUSE]     = "pause",
    [JOB_VERB_RESUME]    = "resume",
    [JOB_VERB_SET_SPEED] = "set-speed",
    [JOB_VERB_COMPLETE]  = "complete",
    [JOB_VERB_FINALIZE]  = "finalize",
    [JOB_VERB_DISMISS]   = "dismiss",
};

const char *const job_on_error_names[] = {
    "report", "ignore", "enospc", "stop", "auto", NULL,
};

/* Allowed transitions, [from][to] (qemu-storage-daemon 7.2's JobSTT). */
static const bool job_stt[JOB_STATUS__MAX][JOB_STATUS__MAX] = {
    /*               U  C  R  P  Y  S  W  D  X  E  N */
    /* U */        { 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
    /* C */        { 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1 },
    /* R */        { 0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0 },
    /* P */        { 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0 },
    /* Y */        { 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0 },
    /* S */        { 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0 },
    /* W */        { 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0 },
    /* D */        { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
    /* X */        { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0 },
    /* E */        { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 },
    /* N */        { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
};

/* Verbs accepted per state (JobVerbTable). */
static const bool job_verb_table[JOB_VERB__MAX][JOB_STATUS__MAX] = {
    /*                      U  C  R  P  Y  S  W  D  X  E  N */
    [JOB_VERB_CANCEL]    = { 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0 },
    [JOB_VERB_PAUSE]     = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
    [JOB_VERB_RESUME]    = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
    [JOB_VERB_SET_SPEED] = { 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 },
    [JOB_VERB_COMPLETE]  = { 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0 },
    [JOB_VERB_FINALIZE]  = { 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0 },
    [JOB_VERB_DISMISS]   = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0 },
};

/* Every job, newest first (query order). */
static ListHead jobs = LIST_HEAD_INIT(jobs);

const char *job_status_name(JobStatus s)
{
    assert(s >= 0 && s < JOB_STATUS__MAX);
    return status_names[s];
}

const char *job_verb_name(JobVerb v)
{
    assert(v >= 0 && v < JOB_VERB__MAX);
    return verb_names[v];
}

void job_state_transition(Job *job, JobStatus s1)
{
    JobStatus s0 = job->status;

    assert(s1 >= 0 && s1 < JOB_STATUS__MAX);
    if (!job_stt[s0][s1]) {
        log_error("job '%s': illegal transition %s -> %s", job->id,
                  status_names[s0], status_names[s1]);
        abort();
    }
    job->status = s1;
    if (s0 != s1) {
        json_t *data = json_pack("{s:s, s:s}", "id", job->id,
                                 "status", status_names[s1]);
        event_emit("JOB_STATUS_CHANGE", data);
    }
}

bool job_apply_verb(Job *job, JobVerb verb, Error **errp)
{
    assert(verb >= 0 && verb < JOB_VERB__MAX);
    if (job_verb_table[verb][job->status]) {
        return true;
    }
    error_setg(errp, "Job '%s' in state '%s' cannot accept command verb '%s'",
               job->id, status_names[job->status], verb_names[verb]);
    return false;
}

Job *job_get(const char *id)
{
    Job *job;
    list_for_each_entry(job, &jobs, link) {
        if (strcmp(job->id, id) == 0) {
            return job;
        }
    }
    return NULL;
}

Job *job_next(Job *prev)
{
    ListHead *next = prev ? prev->link.next : jobs.next;
    return next == &jobs ? NULL : list_entry(next, Job, link);
}

/* Read by the body in job->ctx while the main loop may set them: the
 * fields the main loop writes and the body polls are atomic (see job.h,
 * "Threads"). */
bool job_is_cancelled(Job *job)
{
    return __atomic_load_n(&job->cancelled, __ATOMIC_ACQUIRE) &&
           __atomic_load_n(&job->force_cancel, __ATOMIC_ACQUIRE);
}

bool job_cancel_requested(Job *job)
{
    return __atomic_load_n(&job->cancelled, __ATOMIC_ACQUIRE);
}

bool job_pause_requested(Job *job)
{
    return __atomic_load_n(&job->pause_count, __ATOMIC_ACQUIRE) > 0;
}

bool job_is_throttled(Job *job)
{
    return __atomic_load_n(&job->speed, __ATOMIC_ACQUIRE) != 0 ||
           __atomic_load_n(&job->yield_limit, __ATOMIC_ACQUIRE) != 0;
}

int64_t job_effective_speed(Job *job)
{
    int64_t speed = __atomic_load_n(&job->speed, __ATOMIC_ACQUIRE);
    int64_t y = __atomic_load_n(&job->yield_limit, __ATOMIC_ACQUIRE);

    return !speed ? y : !y ? speed : speed < y ? speed : y;
}

static void job_add_pause_count(Job *job, int delta)
{
    __atomic_add_fetch(&job->pause_count, delta, __ATOMIC_RELEASE);
}

/* ---- the body and the main loop ---- */

bool coroutine_fn job_co_to_main(Job *job)
{
    (void)job;
    if (aio_current_context() == aio_main_context()) {
        return false;
    }
    aio_co_schedule(aio_main_context(), coroutine_self());
    coroutine_yield();
    assert(aio_current_context() == aio_main_context());
    return true;
}

void coroutine_fn job_co_back(Job *job, bool moved)
{
    /* Also when the job's nodes moved while the body was in the main loop
     * (x-blockdev-set-iothread): job->ctx is the main loop's. */
    if (moved || aio_current_context() != job->ctx) {
        aio_co_schedule(job->ctx, coroutine_self());
        coroutine_yield();
        assert(aio_current_context() == job->ctx);
    }
}

bool job_is_completed(Job *job)
{
    switch (job->status) {
    case JOB_STATUS_WAITING:
    case JOB_STATUS_PENDING:
    case JOB_STATUS_ABORTING:
    case JOB_STATUS_CONCLUDED:
    case JOB_STATUS_NULL:
        return true;
    default:
        return false;
    }
}

bool job_is_ready(Job *job)
{
    return job->status == JOB_STATUS_READY ||
           job->status == JOB_STATUS_STANDBY;
}

void *job_create(const char *id, const JobDriver *drv, JobTxn *txn,
                 AioContext *ctx, int flags, Error **errp)
{
    assert(drv->instance_size >= sizeof(Job) && drv->run);
    /* Only a type made for it runs outside the main loop (job.h). */
    assert(!ctx || ctx == aio_main_context() || drv->iothread);
    if (!id || !id_wellformed(id)) {
        error_setg(errp, "Invalid job ID '%s'", id ? id : "");
        return NULL;
    }
    if (job_get(id)) {
        error_setg(errp, "Job ID '%s' already in use", id);
        return NULL;
    }

    Job *job = bj_calloc(1, drv->instance_size);
    job->id = bj_strdup(id);
    job->driver = drv;
    job->ctx = ctx ? ctx : aio_main_context();
    job->refcnt = 1;                 /* the job list's */
    job->status = JOB_STATUS_UNDEFINED;
    /* Not started: counts as paused until job_start. */
    job_add_pause_count(job, 1);
    job->paused = true;
    job->auto_finalize = !(flags & JOB_MANUAL_FINALIZE);
    job->auto_dismiss = !(flags & JOB_MANUAL_DISMISS);
    ratelimit_init(&job->limit);
    list_init(&job->txn_link);
    list_init(&job->block_users);
    list_add_head(&jobs, &job->link);

    job_txn_add_job(txn, job);
    job_state_transition(job, JOB_STATUS_CREATED);
    return job;
}

void job_ref(Job *job)
{
    job->refcnt++;
}

void job_unref(Job *job)
{
    assert(job->refcnt > 0);
    if (--job->refcnt > 0) {
        return;
    }
    /* The last reference goes only after dismiss (or a failed setup). */
    assert(job->status == JOB_STATUS_NULL);
    assert(!job->txn && !job->co);
    block_job_remove_all_nodes(job);
    job_yield_free(job);
    if (job->driver->free) {
        job->driver->free(job);
    }
    if (job->exit_bh) {
        aio_bh_delete(job->exit_bh);
    }
    job_error_events_flush(job);
    error_free(job->err);
    free(job->id);
    free(job);
}

/* ---- entering and yielding ---- */

void job_enter(Job *job)
{
    if (!job->started || job->deferred_to_main_loop || job->busy) {
        return;
    }
    job->busy = true;
    if (job->sleep.co) {
        co_sleep_wake(&job->sleep);
    } else {
        aio_co_wake(job->co);
    }
}

/* ns < 0: until job_enter. */
static void coroutine_fn job_do_yield(Job *job, int64_t ns)
{
    assert(job->busy && coroutine_self() == job->co);
    job->busy = false;
    if (ns >= 0) {
        co_sleep_ns_wakeable(&job->sleep, ns);
    } else {
        coroutine_yield();
    }
    /* Woken by job_enter (busy already set) or by the timer. */
    job->busy = true;
}

static bool job_should_pause(Job *job)
{
    return job_pause_requested(job);
}

static void coroutine_fn job_do_pause_point(Job *job)
{
    assert(coroutine_self() == job->co);
    if (!job_should_pause(job) || job_is_cancelled(job)) {
        return;
    }
    if (job->driver->pause) {
        job->driver->pause(job);
    }
    if (job_should_pause(job) && !job_is_cancelled(job)) {
        JobStatus status = job->status;
        job_state_transition(job, status == JOB_STATUS_READY ?
                             JOB_STATUS_STANDBY : JOB_STATUS_PAUSED);
        job->paused = true;
        job_do_yield(job, -1);
        job->paused = false;
        job_state_transition(job, status);
    }
    if (job->driver->resume) {
        job->driver->resume(job);
    }
}

void coroutine_fn job_pause_point(Job *job)
{
    /* Not asked to pause: no trip to the main loop. */
    if (!job_should_pause(job) || job_is_cancelled(job)) {
        return;
    }
    bool moved = job_co_to_main(job);
    job_do_pause_point(job);
    job_co_back(job, moved);
}

static void coroutine_fn job_do_sleep_ns(Job *job, int64_t ns)
{
    if (job_is_cancelled(job)) {
        return;
    }
    if (!job_should_pause(job)) {
        job_do_yield(job, ns);
    }
    job_do_pause_point(job);
}

void coroutine_fn job_sleep_ns(Job *job, int64_t ns)
{
    bool moved = job_co_to_main(job);
    job_do_sleep_ns(job, ns);
    job_co_back(job, moved);
}

uint64_t coroutine_fn job_chunk_size(Job *job, uint64_t max_chunk,
                                     uint64_t align)
{
    bool moved = job_co_to_main(job);
    uint64_t n = ratelimit_chunk(&job->limit, max_chunk, align);
    job_co_back(job, moved);
    return n;
}

void coroutine_fn job_ratelimit_sleep(Job *job, uint64_t bytes)
{
    /* The limit's state is the main loop's (set-speed changes it). */
    bool moved = job_co_to_main(job);

    /* A zero sleep still yields to the loop, so the monitor and clients
     * are served between chunks even at full speed. */
    job_do_sleep_ns(job, 0);
    for (;;) {
        if (job_is_cancelled(job)) {
            goto out;
        }
        int64_t delay = ratelimit_delay(&job->limit, bytes, clock_ns());
        if (delay == 0) {
            break;
        }
        /* At most 100 ms at a time, so pauses and drains act promptly;
         * set-speed wakes us and the loop recomputes with the new speed. */
        job_do_sleep_ns(job, delay < 100000000 ? delay : 100000000);
    }
    ratelimit_account(&job->limit, clock_ns());
out:
    job_co_back(job, moved);
}

/* ---- progress (any thread: the copy engine counts from client writes in
 * the node's context; the monitor reads in the main loop) ---- */

void job_progress_update(Job *job, uint64_t done)
{
    __atomic_add_fetch(&job->progress_current, done, __ATOMIC_RELAXED);
}

void job_progress_set_remaining(Job *job, uint64_t remaining)
{
    __atomic_store_n(&job->progress_total,
                     __atomic_load_n(&job->progress_current,
                                     __ATOMIC_RELAXED) + remaining,
                     __ATOMIC_RELAXED);
}

uint64_t job_progress_current(Job *job)
{
    return __atomic_load_n(&job->progress_current, __ATOMIC_RELAXED);
}

uint64_t job_progress_total(Job *job)
{
    return __atomic_load_n(&job->progress_total, __ATOMIC_RELAXED);
}

/* ---- the body ---- */

static void job_exit_bh(void *opaque);

static void coroutine_fn job_co_entry(void *opaque)
{
    Job *job = opaque;
    Error *err = NULL;

    assert(job->busy);
    /* Entered in the main loop, as job_start returns: a job started inside
     * a drained section pauses here at once, wherever its nodes live
     * (the same events in the same order); then off to job->ctx. */
    job_pause_point(job);
    job_co_back(job, job->ctx != aio_main_context());
    int ret = job->driver->run(job, &err);
    /* The end is the main loop's: the coroutine finishes there. */
    job_co_to_main(job);
    job->ret = ret;
    if (job->ret < 0 && err) {
        error_free(job->err);
        job->err = err;
    } else {
        error_free(err);
    }
    /* Completion is main-loop work (graph changes, events). */
    job->deferred_to_main_loop = true;
    job->co = NULL;   /* this coroutine ends on return */
    aio_bh_schedule(job->exit_bh);
}

void job_start(Job *job)
{
    assert(!job->started && job->status == JOB_STATUS_CREATED);
    job->exit_bh = aio_bh_new(aio_main_context(), job_exit_bh, job);
    job->co = coroutine_create(job_co_entry, job);
    job_ref(job);            /* the body's; dropped in job_exit_bh */
    job_add_pause_count(job, -1);
    job->busy = true;
    job->paused = false;
    job->started = true;
    job_state_transition(job, JOB_STATUS_RUNNING);
    job_yield_start(job);
    aio_co_enter(aio_main_context(), job->co);
}

static void job_exit_bh(void *opaque)
{
    Job *job = opaque;

    job->busy = false;
    job_yield_stop(job);
    job_completed(job);
    job_unref(job);
    aio_wait_kick();
}

/* Sets ret for a cancelled job and the error text, and moves a failed job
 * to aborting. */
void job_update_rc(Job *job)
{
    if (!job->ret && job_is_cancelled(job)) {
        job->ret = -ECANCELED;
    }
    if (job->ret) {
        if (!job->err) {
            error_setg(&job->err, "%s", strerror(-job->ret));
        }
        job_state_transition(job, JOB_STATUS_ABORTING);
    }
}

/* ---- verbs ---- */

void job_pause(Job *job)
{
    job_add_pause_count(job, 1);
    if (!job->paused) {
        job_enter(job);
    }
}

void job_resume(Job *job)
{
    assert(job->pause_count > 0);
    job_add_pause_count(job, -1);
    if (job->pause_count > 0) {
        return;
    }
    job_enter(job);
}

bool job_user_pause(Job *job, Error **errp)
{
    if (!job_apply_verb(job, JOB_VERB_PAUSE, errp)) {
        return false;
    }
    if (job->user_paused) {
        error_setg(errp, "Job is already paused");
        return false;
    }
    job->user_paused = true;
    job_pause(job);
    return true;
}

static void job_user_resume_reset(Job *job)
{
    /* Resuming after an error stop clears the io-status. */
    job->iostatus = JOB_IO_STATUS_OK;
}

bool job_user_resume(Job *job, Error **errp)
{
    if (!job->user_paused || job->pause_count <= 0) {
        error_setg(errp, "Can't resume a job that was not paused");
        return false;
    }
    if (!job_apply_verb(job, JOB_VERB_RESUME, errp)) {
        return false;
    }
    job_user_resume_reset(job);
    job->user_paused = false;
    job_resume(job);
    return true;
}

/* Records the cancel request; a user pause no longer holds the job. */
void job_cancel_async(Job *job, bool force)
{
    if (job->driver->cancel) {
        force = job->driver->cancel(job, force);
    } else {
        force = true;
    }
    if (job->user_paused) {
        job_user_resume_reset(job);
        job->user_paused = false;
        assert(job->pause_count > 0);
        job_add_pause_count(job, -1);
    }
    /* A soft cancel after the body returned changes nothing any more. */
    if (force || !job->deferred_to_main_loop) {
        __atomic_store_n(&job->force_cancel, job->force_cancel || force,
                         __ATOMIC_RELEASE);
        __atomic_store_n(&job->cancelled, true, __ATOMIC_RELEASE);
    }
}

void job_cancel(Job *job, bool force)
{
    if (job->status == JOB_STATUS_CONCLUDED) {
        job_do_dismiss(job);
        return;
    }
    job_cancel_async(job, force);
    if (!job->started) {
        job_completed(job);
    } else if (job->deferred_to_main_loop) {
        /* Waiting or pending: a forced cancel aborts the transaction now.
         * Before the exit BH ran, that BH sees the request instead. */
        if (job_is_cancelled(job) && job->completed) {
            job_completed_txn_abort(job);
        }
    } else {
        job_enter(job);
    }
}

bool job_user_cancel(Job *job, bool force, Error **errp)
{
    if (!job_apply_verb(job, JOB_VERB_CANCEL, errp)) {
        return false;
    }
    job_cancel(job, force);
    return true;
}

bool job_complete(Job *job, Error **errp)
{
    if (!job_apply_verb(job, JOB_VERB_COMPLETE, errp)) {
        return false;
    }
    if (job->cancelled || !job->driver->complete) {
        error_setg(errp, "The active block job '%s' cannot be completed",
                   job->id);
        return false;
    }
    Error *err = NULL;
    job->driver->complete(job, &err);
    if (err) {
        error_propagate(errp, err);
        return false;
    }
    return true;
}

bool job_set_speed(Job *job, int64_t speed, Error **errp)
{
    if (!job_apply_verb(job, JOB_VERB_SET_SPEED, errp)) {
        return false;
    }
    if (speed < 0) {
        error_setg(errp, "Parameter 'speed' expects a non-negative value");
        return false;
    }
    if (speed == job->speed) {
        return true;
    }
    __atomic_store_n(&job->speed, speed, __ATOMIC_RELEASE);
    ratelimit_set_speed(&job->limit, (uint64_t)job_effective_speed(job),
                        clock_ns());
    /* A job sleeping on the old limit recomputes its delay. */
    if (job->sleep.co) {
        job_enter(job);
    }
    return true;
}

/* ---- the error policy ---- */

static JobErrorAction job_do_error_action(Job *job, JobOnError policy,
                                          bool is_read, int error)
{
    JobErrorAction action;

    if (error < 0) {
        error = -error;
    }
    switch (policy) {
    case JOB_ON_ERROR_ENOSPC:
    case JOB_ON_ERROR_AUTO:
        action = error == ENOSPC ? JOB_ERROR_ACTION_STOP
                                 : JOB_ERROR_ACTION_REPORT;
        break;
    case JOB_ON_ERROR_STOP:
        action = JOB_ERROR_ACTION_STOP;
        break;
    case JOB_ON_ERROR_IGNORE:
        action = JOB_ERROR_ACTION_IGNORE;
        break;
    case JOB_ON_ERROR_REPORT:
    default:
        action = JOB_ERROR_ACTION_REPORT;
        break;
    }
    job_event_error(job, is_read, action);
    if (action == JOB_ERROR_ACTION_IGNORE) {
        job_error_backoff_update(job);
    }
    if (action == JOB_ERROR_ACTION_STOP) {
        /* A user-visible pause: block-job-resume continues the job. */
        if (!job->user_paused) {
            job_pause(job);
            job->user_paused = true;
        }
        if (job->iostatus == JOB_IO_STATUS_OK) {
            job->iostatus = error == ENOSPC ? JOB_IO_STATUS_NOSPACE
                                            : JOB_IO_STATUS_FAILED;
        }
    }
    return action;
}

JobErrorAction coroutine_fn job_error_action(Job *job, JobOnError policy,
                                             bool is_read, int error)
{
    bool moved = job_co_to_main(job);
    JobErrorAction action = job_do_error_action(job, policy, is_read, error);
    job_co_back(job, moved);
    return action;
}

/* ---- ready ---- */

void coroutine_fn job_transition_to_ready(Job *job)
{
    bool moved = job_co_to_main(job);
    job_state_transition(job, JOB_STATUS_READY);
    job_event_ready(job);
    job_co_back(job, moved);
}
