/*
 * The job engine with an internal test job type: every verb in every state
 * (accepted or the exact error), the event sequences of the reference for
 * completion (auto and manual), pause/resume, cancel in each state, error
 * policies, transactions, and the synchronous helpers.
 *
 * Timing: jobs sleep 1 ms between steps; nothing asserts durations.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "job/job-internal.h"
#include "util/event.h"
#include "test-wait.h"

/* ---- recording events ---- */

static json_t *events;          /* ["JOB_STATUS_CHANGE:running", ...] */
static json_t *event_data;      /* the data objects */

static void sink(const char *name, json_t *data, void *opaque)
{
    char buf[128];
    const char *status = json_string_value(json_object_get(data, "status"));
    const char *action = json_string_value(json_object_get(data, "action"));
    if (status) {
        snprintf(buf, sizeof(buf), "%s:%s:%s", name,
                 json_string_value(json_object_get(data, "id")), status);
    } else if (action) {
        snprintf(buf, sizeof(buf), "%s:%s", name, action);
    } else {
        snprintf(buf, sizeof(buf), "%s:%s", name,
                 json_string_value(json_object_get(data, "device")) ?:
                 json_string_value(json_object_get(data, "id")));
    }
    json_array_append_new(events, json_string(buf));
    json_array_append(event_data, data);   /* event_emit keeps its ref */
}

#define assert_events(expected)                                     \
    do {                                                            \
        char *got_ = json_strings_join(events);                     \
        assert_string_equal(got_, expected);                        \
        free(got_);                                                 \
        json_array_clear(events);                                   \
        json_array_clear(event_data);                               \
    } while (0)

/* ---- the test job ---- */

typedef struct TestJob {
    Job job;
    int steps;               /* iterations to run */
    int done;
    int fail_at;             /* step returning -EIO (report), -1 none */
    JobOnError on_error;
    bool error_once;
    bool wait_complete;      /* reach ready, then wait for complete */
    bool completed_by_user;
    int prepare_ret;
    int n_prepare, n_commit, n_abort, n_clean, n_free;
} TestJob;

static int coroutine_fn test_run(Job *job, Error **errp)
{
    TestJob *t = (TestJob *)job;
    job_progress_set_remaining(job, (uint64_t)t->steps * 4096);
    while (t->done < t->steps) {
        if (job_is_cancelled(job)) {
            return 0;
        }
        job_ratelimit_sleep(job, 4096);
        if (job_is_cancelled(job)) {
            return 0;
        }
        if (t->done == t->fail_at) {
            if (t->error_once) {
                t->fail_at = -1;
            }
            JobErrorAction a = job_error_action(job, t->on_error, true, EIO);
            if (a == JOB_ERROR_ACTION_REPORT) {
                return -EIO;
            }
            continue;        /* stop or ignore: retry the step */
        }
        t->done++;
        job_progress_update(job, 4096);
        job_sleep_ns(job, 1000000);
    }
    if (t->wait_complete) {
        job_transition_to_ready(job);
        while (!t->completed_by_user && !job_is_cancelled(job)) {
            job_sleep_ns(job, 1000000);
        }
    }
    return 0;
}

static void test_complete(Job *job, Error **errp)
{
    ((TestJob *)job)->completed_by_user = true;
}

static bool test_cancel(Job *job, bool force)
{
    /* Like mirror: soft cancel only in ready. */
    return force || !job_is_ready(job);
}

static int test_prepare(Job *job, Error **errp)
{
    TestJob *t = (TestJob *)job;
    t->n_prepare++;
    if (t->prepare_ret) {
        error_setg(errp, "prepare failed on purpose");
    }
    return t->prepare_ret;
}

static int freed, commits, aborts;

static void test_commit(Job *job) { ((TestJob *)job)->n_commit++; commits++; }
static void test_abort(Job *job) { ((TestJob *)job)->n_abort++; aborts++; }
static void test_clean(Job *job) { ((TestJob *)job)->n_clean++; }
static void tjob_free(Job *job) { freed++; }

static const JobDriver test_driver = {
    .type = "stream",
    .instance_size = sizeof(TestJob),
    .block_job_events = true,
    .run = test_run,
    .complete = test_complete,
    .cancel = test_cancel,
    .prepare = test_prepare,
    .commit = test_commit,
    .abort = test_abort,
    .clean = test_clean,
    .free = tjob_free,
};

static TestJob *new_job(const char *id, JobTxn *txn, int flags, int steps)
{
    Error *err = NULL;
    TestJob *t = job_create(id, &test_driver, txn, NULL, flags, &err);
    assert_null(err);
    assert_non_null(t);
    t->steps = steps;
    t->fail_at = -1;
    return t;
}

static void run_until_status(Job *job, JobStatus s)
{
    TEST_WAIT_WHILE(aio_main_context(), job->status != s);
}

static void run_until_gone(const char *id)
{
    TEST_WAIT_WHILE(aio_main_context(), job_get(id) != NULL);
}

static int setup(void **state)
{
    events = json_array();
    event_data = json_array();
    event_set_sink(sink, NULL);
    freed = commits = aborts = 0;
    return 0;
}

static int teardown(void **state)
{
    assert_null(job_next(NULL));
    json_decref(events);
    json_decref(event_data);
    return 0;
}

/* ---- tables ---- */

/* The reference's tables, written out independently of job.c. */
static const char *const states = "UCRPYSWDXEN";
static const char *const accepts[JOB_VERB__MAX] = {
    [JOB_VERB_CANCEL] = "CRPYSWD",
    [JOB_VERB_PAUSE] = "CRPYS",
    [JOB_VERB_RESUME] = "CRPYS",
    [JOB_VERB_SET_SPEED] = "CRPYS",
    [JOB_VERB_COMPLETE] = "YS",
    [JOB_VERB_FINALIZE] = "D",
    [JOB_VERB_DISMISS] = "E",
};

static void test_verb_table(void **state)
{
    TestJob *t = new_job("j", NULL, 0, 1);
    Job *job = &t->job;
    JobStatus saved = job->status;

    for (int s = 0; s < JOB_STATUS__MAX; s++) {
        for (int v = 0; v < JOB_VERB__MAX; v++) {
            Error *err = NULL;
            job->status = s;
            bool ok = job_apply_verb(job, v, &err);
            bool want = strchr(accepts[v], states[s]) != NULL;
            assert_int_equal(ok, want);
            if (!want) {
                char msg[128];
                snprintf(msg, sizeof(msg), "Job 'j' in state '%s' cannot "
                         "accept command verb '%s'", job_status_name(s),
                         job_verb_name(v));
                assert_string_equal(error_get_pretty(err), msg);
                error_free(err);
            } else {
                assert_null(err);
            }
        }
    }
    job->status = saved;
    job_early_fail(job);
    assert_events("JOB_STATUS_CHANGE:j:created JOB_STATUS_CHANGE:j:null");
    assert_int_equal(freed, 1);
}

static void test_bad_ids(void **state)
{
    Error *err = NULL;
    assert_null(job_create("1x", &test_driver, NULL, NULL, 0, &err));
    assert_string_equal(error_get_pretty(err), "Invalid job ID '1x'");
    error_free_or_abort_clear(&err);
    assert_null(job_create(NULL, &test_driver, NULL, NULL, 0, &err));
    assert_string_equal(error_get_pretty(err), "Invalid job ID ''");
    error_free_or_abort_clear(&err);
    TestJob *t = new_job("dup", NULL, 0, 1);
    assert_null(job_create("dup", &test_driver, NULL, NULL, 0, &err));
    assert_string_equal(error_get_pretty(err), "Job ID 'dup' already in use");
    error_free_or_abort_clear(&err);
    job_early_fail(&t->job);
    json_array_clear(events);
}

/* ---- lifecycles ---- */

static void test_auto_completes(void **state)
{
    TestJob *t = new_job("s0", NULL, 0, 3);
    job_start(&t->job);
    run_until_gone("s0");
    assert_events("JOB_STATUS_CHANGE:s0:created JOB_STATUS_CHANGE:s0:running "
                  "JOB_STATUS_CHANGE:s0:waiting JOB_STATUS_CHANGE:s0:pending "
                  "BLOCK_JOB_COMPLETED:s0 JOB_STATUS_CHANGE:s0:concluded "
                  "JOB_STATUS_CHANGE:s0:null");
    assert_int_equal(freed, 1);
}

static void test_manual_finalize_dismiss(void **state)
{
    Error *err = NULL;
    TestJob *t = new_job("m", NULL, JOB_MANUAL_FINALIZE | JOB_MANUAL_DISMISS,
                         2);
    Job *job = &t->job;
    job_start(job);
    run_until_status(job, JOB_STATUS_PENDING);
    assert_int_equal(t->n_prepare, 0);
    assert_false(job_dismiss(&job, &err));
    assert_string_equal(error_get_pretty(err), "Job 'm' in state 'pending' "
                        "cannot accept command verb 'dismiss'");
    error_free_or_abort_clear(&err);
    assert_true(job_finalize(job, &err));
    assert_int_equal(job->status, JOB_STATUS_CONCLUDED);
    assert_int_equal(t->n_prepare + t->n_commit + t->n_clean, 3);
    json_t *pending = json_array_get(event_data, 4);
    assert_string_equal(json_string_value(json_object_get(pending, "id")), "m");
    assert_null(json_object_get(pending, "device"));
    json_t *q = job_query_block_jobs();
    assert_int_equal(json_array_size(q), 1);
    json_decref(q);
    assert_true(job_dismiss(&job, &err));
    assert_null(job);
    assert_events("JOB_STATUS_CHANGE:m:created JOB_STATUS_CHANGE:m:running "
                  "JOB_STATUS_CHANGE:m:waiting JOB_STATUS_CHANGE:m:pending "
                  "BLOCK_JOB_PENDING:m BLOCK_JOB_COMPLETED:m "
                  "JOB_STATUS_CHANGE:m:concluded JOB_STATUS_CHANGE:m:null");
}

static void test_pause_resume(void **state)
{
    Error *err = NULL;
    TestJob *t = new_job("p", NULL, 0, 1000);
    Job *job = &t->job;
    assert_false(job_user_resume(job, &err));
    assert_string_equal(error_get_pretty(err),
                        "Can't resume a job that was not paused");
    error_free_or_abort_clear(&err);
    job_start(job);
    assert_true(job_user_pause(job, &err));
    assert_false(job_user_pause(job, &err));
    assert_string_equal(error_get_pretty(err), "Job is already paused");
    error_free_or_abort_clear(&err);
    run_until_status(job, JOB_STATUS_PAUSED);
    int done = t->done;
    for (int i = 0; i < 20; i++) {
        aio_poll(aio_main_context(), false);
    }
    assert_int_equal(t->done, done);
    /* Internal pauses are counted apart from the user's. */
    job_pause(job);
    assert_true(job_user_resume(job, &err));
    assert_int_equal(job->status, JOB_STATUS_PAUSED);
    job_resume(job);
    run_until_status(job, JOB_STATUS_RUNNING);
    assert_int_equal(job_cancel_sync(job, true, &err), -ECANCELED);
    assert_null(err);
    assert_events("JOB_STATUS_CHANGE:p:created JOB_STATUS_CHANGE:p:running "
                  "JOB_STATUS_CHANGE:p:paused JOB_STATUS_CHANGE:p:running "
                  "JOB_STATUS_CHANGE:p:aborting BLOCK_JOB_CANCELLED:p "
                  "JOB_STATUS_CHANGE:p:concluded JOB_STATUS_CHANGE:p:null");
}

static void test_cancel_created(void **state)
{
    Error *err = NULL;
    TestJob *t = new_job("c", NULL, 0, 1);
    assert_true(job_user_cancel(&t->job, false, &err));
    assert_events("JOB_STATUS_CHANGE:c:created JOB_STATUS_CHANGE:c:aborting "
                  "JOB_STATUS_CHANGE:c:concluded JOB_STATUS_CHANGE:c:null");
    assert_int_equal(freed, 1);
}

static void test_cancel_paused(void **state)
{
    Error *err = NULL;
    TestJob *t = new_job("cp", NULL, 0, 1000);
    job_start(&t->job);
    job_user_pause(&t->job, &err);
    run_until_status(&t->job, JOB_STATUS_PAUSED);
    assert_true(job_user_cancel(&t->job, false, &err));
    run_until_gone("cp");
    assert_events("JOB_STATUS_CHANGE:cp:created JOB_STATUS_CHANGE:cp:running "
                  "JOB_STATUS_CHANGE:cp:paused JOB_STATUS_CHANGE:cp:running "
                  "JOB_STATUS_CHANGE:cp:aborting BLOCK_JOB_CANCELLED:cp "
                  "JOB_STATUS_CHANGE:cp:concluded JOB_STATUS_CHANGE:cp:null");
}

static void test_cancel_pending(void **state)
{
    Error *err = NULL;
    TestJob *t = new_job("cd", NULL, JOB_MANUAL_FINALIZE | JOB_MANUAL_DISMISS,
                         1);
    Job *job = &t->job;
    job_start(job);
    run_until_status(job, JOB_STATUS_PENDING);
    assert_true(job_user_cancel(job, true, &err));
    assert_int_equal(job->status, JOB_STATUS_CONCLUDED);
    assert_int_equal(t->n_prepare, 0);
    assert_int_equal(t->n_abort, 1);
    json_t *q = job_query_jobs();
    assert_string_equal(json_string_value(json_object_get(
        json_array_get(q, 0), "error")), "Operation canceled");
    json_decref(q);
    assert_true(job_dismiss(&job, &err));
    assert_events("JOB_STATUS_CHANGE:cd:created JOB_STATUS_CHANGE:cd:running "
                  "JOB_STATUS_CHANGE:cd:waiting JOB_STATUS_CHANGE:cd:pending "
                  "BLOCK_JOB_PENDING:cd JOB_STATUS_CHANGE:cd:aborting "
                  "BLOCK_JOB_CANCELLED:cd JOB_STATUS_CHANGE:cd:concluded "
                  "JOB_STATUS_CHANGE:cd:null");
}

static void test_ready_complete_and_soft_cancel(void **state)
{
    Error *err = NULL;
    TestJob *t = new_job("r", NULL, 0, 2);
    t->wait_complete = true;
    job_start(&t->job);
    run_until_status(&t->job, JOB_STATUS_READY);
    assert_int_equal(job_complete_sync(&t->job, &err), 0);
    run_until_gone("r");
    assert_events("JOB_STATUS_CHANGE:r:created JOB_STATUS_CHANGE:r:running "
                  "JOB_STATUS_CHANGE:r:ready BLOCK_JOB_READY:r "
                  "JOB_STATUS_CHANGE:r:waiting JOB_STATUS_CHANGE:r:pending "
                  "BLOCK_JOB_COMPLETED:r JOB_STATUS_CHANGE:r:concluded "
                  "JOB_STATUS_CHANGE:r:null");

    /* A soft cancel in ready completes without error, like mirror's. */
    t = new_job("r2", NULL, 0, 2);
    t->wait_complete = true;
    job_start(&t->job);
    run_until_status(&t->job, JOB_STATUS_READY);
    job_user_pause(&t->job, &err);
    run_until_status(&t->job, JOB_STATUS_STANDBY);
    assert_true(job_user_resume(&t->job, &err));
    run_until_status(&t->job, JOB_STATUS_READY);
    t->completed_by_user = true;   /* the soft cancel path of mirror */
    assert_true(job_user_cancel(&t->job, false, &err));
    assert_false(job_complete(&t->job, &err));
    assert_string_equal(error_get_pretty(err),
                        "The active block job 'r2' cannot be completed");
    error_free_or_abort_clear(&err);
    run_until_gone("r2");
    assert_events("JOB_STATUS_CHANGE:r2:created JOB_STATUS_CHANGE:r2:running "
                  "JOB_STATUS_CHANGE:r2:ready BLOCK_JOB_READY:r2 "
                  "JOB_STATUS_CHANGE:r2:standby JOB_STATUS_CHANGE:r2:ready "
                  "JOB_STATUS_CHANGE:r2:waiting JOB_STATUS_CHANGE:r2:pending "
                  "BLOCK_JOB_COMPLETED:r2 JOB_STATUS_CHANGE:r2:concluded "
                  "JOB_STATUS_CHANGE:r2:null");
}

/* ---- errors ---- */

static void test_error_report(void **state)
{
    TestJob *t = new_job("e", NULL, 0, 5);
    t->fail_at = 2;
    t->on_error = JOB_ON_ERROR_REPORT;
    job_start(&t->job);
    run_until_gone("e");
    json_t *completed = json_array_get(event_data, 4);
    assert_string_equal(json_string_value(json_object_get(completed, "error")),
                        "Input/output error");
    assert_events("JOB_STATUS_CHANGE:e:created JOB_STATUS_CHANGE:e:running "
                  "BLOCK_JOB_ERROR:report JOB_STATUS_CHANGE:e:aborting "
                  "BLOCK_JOB_COMPLETED:e JOB_STATUS_CHANGE:e:concluded "
                  "JOB_STATUS_CHANGE:e:null");
}

static void test_error_stop_and_ignore(void **state)
{
    Error *err = NULL;
    TestJob *t = new_job("st", NULL, 0, 5);
    t->fail_at = 2;
    t->error_once = true;
    t->on_error = JOB_ON_ERROR_STOP;
    job_start(&t->job);
    run_until_status(&t->job, JOB_STATUS_PAUSED);
    assert_int_equal(t->job.iostatus, JOB_IO_STATUS_FAILED);
    assert_true(t->job.user_paused);
    assert_true(job_user_resume(&t->job, &err));
    assert_int_equal(t->job.iostatus, JOB_IO_STATUS_OK);
    run_until_gone("st");
    assert_events("JOB_STATUS_CHANGE:st:created JOB_STATUS_CHANGE:st:running "
                  "BLOCK_JOB_ERROR:stop JOB_STATUS_CHANGE:st:paused "
                  "JOB_STATUS_CHANGE:st:running "
                  "JOB_STATUS_CHANGE:st:waiting JOB_STATUS_CHANGE:st:pending "
                  "BLOCK_JOB_COMPLETED:st JOB_STATUS_CHANGE:st:concluded "
                  "JOB_STATUS_CHANGE:st:null");

    t = new_job("ig", NULL, 0, 3);
    t->fail_at = 1;
    t->error_once = true;
    t->on_error = JOB_ON_ERROR_IGNORE;
    job_start(&t->job);
    run_until_gone("ig");
    assert_events("JOB_STATUS_CHANGE:ig:created JOB_STATUS_CHANGE:ig:running "
                  "BLOCK_JOB_ERROR:ignore "
                  "JOB_STATUS_CHANGE:ig:waiting JOB_STATUS_CHANGE:ig:pending "
                  "BLOCK_JOB_COMPLETED:ig JOB_STATUS_CHANGE:ig:concluded "
                  "JOB_STATUS_CHANGE:ig:null");

    /* enospc/auto: stop only on ENOSPC */
    t = new_job("en", NULL, 0, 1);
    assert_int_equal(job_error_action(&t->job, JOB_ON_ERROR_ENOSPC, false,
                                      -EIO), JOB_ERROR_ACTION_REPORT);
    assert_int_equal(job_error_action(&t->job, JOB_ON_ERROR_AUTO, false,
                                      -ENOSPC), JOB_ERROR_ACTION_STOP);
    assert_int_equal(t->job.iostatus, JOB_IO_STATUS_NOSPACE);
    job_cancel(&t->job, true);
    assert_events("JOB_STATUS_CHANGE:en:created BLOCK_JOB_ERROR:report "
                  "BLOCK_JOB_ERROR:stop JOB_STATUS_CHANGE:en:aborting "
                  "JOB_STATUS_CHANGE:en:concluded JOB_STATUS_CHANGE:en:null");
}

static void test_prepare_fails(void **state)
{
    TestJob *t = new_job("pf", NULL, 0, 1);
    t->prepare_ret = -EINVAL;
    job_start(&t->job);
    run_until_gone("pf");
    json_t *completed = json_array_get(event_data, 5);
    assert_string_equal(json_string_value(json_object_get(completed, "error")),
                        "prepare failed on purpose");
    assert_events("JOB_STATUS_CHANGE:pf:created JOB_STATUS_CHANGE:pf:running "
                  "JOB_STATUS_CHANGE:pf:waiting JOB_STATUS_CHANGE:pf:pending "
                  "JOB_STATUS_CHANGE:pf:aborting BLOCK_JOB_COMPLETED:pf "
                  "JOB_STATUS_CHANGE:pf:concluded JOB_STATUS_CHANGE:pf:null");
}

/* ---- transactions ---- */

static void test_txn_success_together(void **state)
{
    JobTxn *txn = job_txn_new();
    TestJob *a = new_job("a", txn, 0, 2);
    TestJob *b = new_job("b", txn, 0, 20);
    job_txn_unref(txn);
    job_start(&a->job);
    job_start(&b->job);
    run_until_status(&a->job, JOB_STATUS_WAITING);
    assert_int_equal(a->n_prepare, 0);     /* waits for b */
    run_until_gone("a");
    run_until_gone("b");
    assert_int_equal(commits, 2);
    assert_events("JOB_STATUS_CHANGE:a:created JOB_STATUS_CHANGE:b:created "
                  "JOB_STATUS_CHANGE:a:running JOB_STATUS_CHANGE:b:running "
                  "JOB_STATUS_CHANGE:a:waiting JOB_STATUS_CHANGE:b:waiting "
                  "JOB_STATUS_CHANGE:b:pending JOB_STATUS_CHANGE:a:pending "
                  "BLOCK_JOB_COMPLETED:b JOB_STATUS_CHANGE:b:concluded "
                  "JOB_STATUS_CHANGE:b:null "
                  "BLOCK_JOB_COMPLETED:a JOB_STATUS_CHANGE:a:concluded "
                  "JOB_STATUS_CHANGE:a:null");
}

/* The reference's sequence 6: j1 slow, j2 fails. */
static void test_txn_failure_aborts_others(void **state)
{
    JobTxn *txn = job_txn_new();
    TestJob *j1 = new_job("j1", txn, 0, 100000);
    TestJob *j2 = new_job("j2", txn, 0, 5);
    job_txn_unref(txn);
    j2->fail_at = 2;
    job_start(&j1->job);
    job_start(&j2->job);
    run_until_gone("j1");
    run_until_gone("j2");
    assert_int_equal(aborts, 2);
    assert_events("JOB_STATUS_CHANGE:j1:created JOB_STATUS_CHANGE:j2:created "
                  "JOB_STATUS_CHANGE:j1:running JOB_STATUS_CHANGE:j2:running "
                  "BLOCK_JOB_ERROR:report JOB_STATUS_CHANGE:j2:aborting "
                  "JOB_STATUS_CHANGE:j1:aborting BLOCK_JOB_COMPLETED:j2 "
                  "JOB_STATUS_CHANGE:j2:concluded JOB_STATUS_CHANGE:j2:null "
                  "BLOCK_JOB_CANCELLED:j1 JOB_STATUS_CHANGE:j1:concluded "
                  "JOB_STATUS_CHANGE:j1:null");
}

static void test_cancel_all_and_speed(void **state)
{
    Error *err = NULL;
    TestJob *a = new_job("x1", NULL, JOB_MANUAL_DISMISS, 100000);
    TestJob *b = new_job("x2", NULL, 0, 100000);
    job_start(&a->job);
    job_start(&b->job);
    assert_false(job_set_speed(&a->job, -1, &err));
    assert_string_equal(error_get_pretty(err),
                        "Parameter 'speed' expects a non-negative value");
    error_free_or_abort_clear(&err);
    /* 4 KiB steps at 4 KiB/s: about one step a second. */
    assert_true(job_set_speed(&a->job, 4096, &err));
    for (int i = 0; i < 50; i++) {
        aio_poll(aio_main_context(), false);
    }
    assert_true(a->done <= 2);
    json_t *q = job_query_block_jobs();
    assert_int_equal(json_array_size(q), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(q, 0),
                        "device")), "x2");   /* newest first */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(q, 1),
                     "speed")), 4096);
    json_decref(q);
    job_cancel_sync_all();
    assert_null(job_next(NULL));
    json_array_clear(events);
    json_array_clear(event_data);
}

int main(void)
{
    if (!aio_main_init(NULL)) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_verb_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auto_completes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manual_finalize_dismiss, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_created, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_paused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ready_complete_and_soft_cancel,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_report, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_stop_and_ignore, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_prepare_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_success_together, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_txn_failure_aborts_others, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancel_all_and_speed, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
