/*
 * How jobs end: the exit path in the main loop, transactions (members
 * finalize together; one failure aborts them all), finalize and dismiss,
 * and the synchronous helpers used by shutdown and tests.
 *
 * Order, for a transaction whose members all succeeded:
 *   each member: waiting as its body returns; when the last one is waiting,
 *   all -> pending (BLOCK_JOB_PENDING if manual), then unless one needs
 *   job-finalize: prepare on all, then per member commit, clean, COMPLETED,
 *   concluded (-> null if auto-dismiss).
 * On a failure: the failing member -> aborting, every other member is
 * force-cancelled and waited for (-> aborting), then per member (newest
 * first): abort, clean, COMPLETED{error} or CANCELLED, concluded, null.
 */
#include "job/job-internal.h"
#include "util/alloc.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

struct JobTxn {
    ListHead jobs;       /* Job.txn_link, newest first */
    int refcnt;
    bool aborting;
};

JobTxn *job_txn_new(void)
{
    JobTxn *txn = bj_calloc(1, sizeof(*txn));
    list_init(&txn->jobs);
    txn->refcnt = 1;
    return txn;
}

static void job_txn_ref(JobTxn *txn)
{
    txn->refcnt++;
}

void job_txn_unref(JobTxn *txn)
{
    if (txn && --txn->refcnt == 0) {
        assert(list_empty(&txn->jobs));
        free(txn);
    }
}

void job_txn_add_job(JobTxn *txn, Job *job)
{
    assert(!job->txn);
    if (txn) {
        job_txn_ref(txn);
    } else {
        txn = job_txn_new();   /* a transaction of one; the job's ref */
    }
    job->txn = txn;
    list_add_head(&txn->jobs, &job->txn_link);
}

static void job_txn_del_job(Job *job)
{
    if (job->txn) {
        list_del(&job->txn_link);
        job_txn_unref(job->txn);
        job->txn = NULL;
    }
}

/* Calls fn on every member until one returns non-zero (returned). */
static int job_txn_apply(Job *job, int (*fn)(Job *))
{
    JobTxn *txn = job->txn;
    Job *other, *next;
    int rc = 0;

    job_txn_ref(txn);
    list_for_each_entry_safe(other, next, &txn->jobs, txn_link) {
        rc = fn(other);
        if (rc) {
            break;
        }
    }
    job_txn_unref(txn);
    return rc;
}

/* Unlinks job from the global list (dismiss). */
static void job_list_remove(Job *job)
{
    if (!list_unlinked(&job->link)) {
        list_del(&job->link);
    }
}

void job_do_dismiss(Job *job)
{
    job->busy = false;
    job->paused = false;
    job->deferred_to_main_loop = true;
    job_txn_del_job(job);
    job_state_transition(job, JOB_STATUS_NULL);
    job_list_remove(job);
    job_unref(job);          /* the job list's reference */
}

void job_early_fail(Job *job)
{
    assert(job->status == JOB_STATUS_CREATED && !job->started);
    job_do_dismiss(job);
}

bool job_dismiss(Job **jobp, Error **errp)
{
    if (!job_apply_verb(*jobp, JOB_VERB_DISMISS, errp)) {
        return false;
    }
    job_do_dismiss(*jobp);
    *jobp = NULL;
    return true;
}

static void job_conclude(Job *job)
{
    job_state_transition(job, JOB_STATUS_CONCLUDED);
    if (job->auto_dismiss || !job->started) {
        job_do_dismiss(job);
    }
}

static int job_finalize_single(Job *job)
{
    assert(job_is_completed(job));
    /* A member cancelled by the transaction gets -ECANCELED here. */
    job_update_rc(job);
    if (!job->ret) {
        if (job->driver->commit) {
            job->driver->commit(job);
        }
    } else if (job->driver->abort) {
        job->driver->abort(job);
    }
    if (job->driver->clean) {
        job->driver->clean(job);
    }
    if (job->started) {
        if (job_is_cancelled(job)) {
            job_event_cancelled(job);
        } else {
            job_event_completed(job);
        }
    }
    job_txn_del_job(job);
    job_conclude(job);
    return 0;
}

static int job_prepare(Job *job)
{
    if (job->ret == 0 && job->driver->prepare) {
        Error *err = NULL;
        job->ret = job->driver->prepare(job, &err);
        if (job->ret && err) {
            error_free(job->err);
            job->err = err;
        } else {
            error_free(err);
        }
        job_update_rc(job);
    }
    return job->ret;
}

static void job_do_finalize(Job *job)
{
    if (job_txn_apply(job, job_prepare)) {
        job_completed_txn_abort(job);
    } else {
        job_txn_apply(job, job_finalize_single);
    }
}

bool job_finalize(Job *job, Error **errp)
{
    if (!job_apply_verb(job, JOB_VERB_FINALIZE, errp)) {
        return false;
    }
    job_do_finalize(job);
    return true;
}

static int job_transition_to_pending(Job *job)
{
    job_state_transition(job, JOB_STATUS_PENDING);
    if (!job->auto_finalize) {
        job_event_pending(job);
    }
    return 0;
}

static int job_needs_finalize(Job *job)
{
    return !job->auto_finalize;
}

static void job_completed_txn_success(Job *job)
{
    Job *other;

    job_state_transition(job, JOB_STATUS_WAITING);
    list_for_each_entry(other, &job->txn->jobs, txn_link) {
        if (!job_is_completed(other)) {
            return;          /* the last member to finish goes on */
        }
        assert(other->ret == 0);
    }
    job_txn_apply(job, job_transition_to_pending);
    if (job_txn_apply(job, job_needs_finalize) == 0) {
        job_do_finalize(job);
    }
}

/* Runs the loop until job is completed (waiting or later). */
static void job_wait_completed(Job *job)
{
    AIO_WAIT_WHILE(aio_main_context(),
                   (job_enter(job), !job_is_completed(job)));
}

void job_completed_txn_abort(Job *job)
{
    JobTxn *txn = job->txn;
    Job *other;

    if (txn->aborting) {
        return;              /* the member that started the abort finishes */
    }
    txn->aborting = true;
    job_txn_ref(txn);
    job_ref(job);

    /* Once one member failed no result matters: stop the others fast. */
    list_for_each_entry(other, &txn->jobs, txn_link) {
        if (other != job) {
            job_cancel_async(other, true);
        }
    }
    /* Let every member reach aborting before any is finalized, so the
     * statuses come in the reference's order. */
    for (;;) {
        Job *pending = NULL;
        list_for_each_entry(other, &txn->jobs, txn_link) {
            if (!job_is_completed(other)) {
                pending = other;
                break;
            }
        }
        if (!pending) {
            break;
        }
        if (!pending->started) {
            pending->completed = true;
            job_update_rc(pending);
        } else {
            job_ref(pending);
            job_wait_completed(pending);
            job_unref(pending);
        }
    }
    while (!list_empty(&txn->jobs)) {
        job_finalize_single(list_first_entry(&txn->jobs, Job, txn_link));
    }
    job_txn_unref(txn);
    job_unref(job);
}

void job_completed(Job *job)
{
    assert(job->txn && !job_is_completed(job));
    job->completed = true;
    job_update_rc(job);
    if (job->ret) {
        job_completed_txn_abort(job);
    } else {
        job_completed_txn_success(job);
    }
}

/* ---- synchronous helpers ---- */

static int job_finish_sync(Job *job, bool (*finish)(Job *, Error **),
                           Error **errp)
{
    Error *err = NULL;
    int ret;

    job_ref(job);
    if (finish && !finish(job, &err)) {
        error_propagate(errp, err);
        job_unref(job);
        return -EBUSY;
    }
    job_wait_completed(job);
    ret = (job_is_cancelled(job) && job->ret == 0) ? -ECANCELED : job->ret;
    if (ret && ret != -ECANCELED && errp && job->err) {
        error_setg(errp, "%s", error_get_pretty(job->err));
    }
    job_unref(job);
    return ret;
}

static bool job_force_cancel_cb(Job *job, Error **errp)
{
    job_cancel(job, true);
    return true;
}

static bool job_soft_cancel_cb(Job *job, Error **errp)
{
    job_cancel(job, false);
    return true;
}

int job_cancel_sync(Job *job, bool force, Error **errp)
{
    return job_finish_sync(job, force ? job_force_cancel_cb
                                      : job_soft_cancel_cb, errp);
}

int job_complete_sync(Job *job, Error **errp)
{
    return job_finish_sync(job, job_complete, errp);
}

void job_cancel_sync_all(void)
{
    Job *job;

    /* A concluded job waiting for dismiss is dismissed by the cancel; the
     * others leave the list when they reach null. */
    while ((job = job_next(NULL))) {
        job_ref(job);
        job_cancel_sync(job, true, NULL);
        if (job->status == JOB_STATUS_CONCLUDED) {
            job_do_dismiss(job);
        }
        job_unref(job);
    }
}
