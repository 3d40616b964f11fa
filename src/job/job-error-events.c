/*
 * BLOCK_JOB_ERROR, throttled, and the backoff of a job that keeps retrying.
 *
 * A job with on-error=ignore (or a mirror/commit retrying a dirty range)
 * over a persistent error retries at once, forever: qsd 7.2 then sends
 * thousands of BLOCK_JOB_ERROR a second and burns a core.  As qemu does for
 * its other event floods, an ignore event of one key (job, operation)
 * goes out at once, then at most once per second: repeats within the
 * second are held and the last one is sent when the second ends (or just
 * before the job's last events).  The
 * ignored-error retries of one job back off (1 ms doubling to 1 s) while
 * errors keep coming less than a second apart.  docs/hardening.md,
 * "Job error floods".
 */
#include <stdlib.h>

#include "job/job-internal.h"
#include "util/alloc.h"
#include "util/event.h"

#define PERIOD_NS     1000000000LL
#define BACKOFF_MIN   1000000LL      /* 1 ms */
#define BACKOFF_MAX   PERIOD_NS

/* One key: operation (read, write) x action. */
typedef struct ErrorEventSlot {
    Job *job;
    bool is_read;
    JobErrorAction action;
    bool pending;            /* a repeat waits for the period's end */
    AioTimer *timer;         /* set while a period runs */
} ErrorEventSlot;

struct JobErrorEvents {
    ErrorEventSlot slot[2][JOB_ERROR_ACTION__MAX];
};

static void send(ErrorEventSlot *sl)
{
    event_emit("BLOCK_JOB_ERROR",
               json_pack("{s:s, s:s, s:s}", "device", sl->job->id,
                         "operation", sl->is_read ? "read" : "write",
                         "action", job_error_action_name(sl->action)));
}

/* The period of sl ended: send what it held and start another, or end. */
static void period_end(void *opaque)
{
    ErrorEventSlot *sl = opaque;

    if (sl->pending) {
        sl->pending = false;
        send(sl);
        aio_timer_mod(sl->timer, clock_ns() + PERIOD_NS);
        return;
    }
    aio_timer_free(sl->timer);
    sl->timer = NULL;
}

void job_error_event(Job *job, bool is_read, JobErrorAction action)
{
    /* report ends the job and stop waits for the user: neither repeats on
     * its own, and both go out at once, in qsd's order. */
    if (action != JOB_ERROR_ACTION_IGNORE) {
        ErrorEventSlot one = { .job = job, .is_read = is_read,
                               .action = action };
        send(&one);
        return;
    }
    if (!job->error_events) {
        job->error_events = bj_calloc(1, sizeof(*job->error_events));
    }
    ErrorEventSlot *sl = &job->error_events->slot[is_read][action];
    if (sl->timer) {
        sl->pending = true;
        return;
    }
    sl->job = job;
    sl->is_read = is_read;
    sl->action = action;
    send(sl);
    sl->timer = aio_timer_new(aio_main_context(), period_end, sl);
    aio_timer_mod(sl->timer, clock_ns() + PERIOD_NS);
}

void job_error_events_flush(Job *job)
{
    if (!job->error_events) {
        return;
    }
    for (int r = 0; r < 2; r++) {
        for (int a = 0; a < JOB_ERROR_ACTION__MAX; a++) {
            ErrorEventSlot *sl = &job->error_events->slot[r][a];
            /* Held repeats go out before the job's last events. */
            if (sl->pending) {
                sl->pending = false;
                send(sl);
            }
            if (sl->timer) {
                aio_timer_free(sl->timer);
                sl->timer = NULL;
            }
        }
    }
    free(job->error_events);
    job->error_events = NULL;
}

void job_error_backoff_update(Job *job)
{
    int64_t now = clock_ns();

    if (job->error_last_ns && now - job->error_last_ns < PERIOD_NS) {
        job->error_backoff_ns = job->error_backoff_ns
                                ? job->error_backoff_ns * 2 : BACKOFF_MIN;
        if (job->error_backoff_ns > BACKOFF_MAX) {
            job->error_backoff_ns = BACKOFF_MAX;
        }
    } else {
        job->error_backoff_ns = 0;
    }
    job->error_last_ns = now;
}

void coroutine_fn job_error_backoff(Job *job)
{
    /* Errors stopped coming: full speed again. */
    if (job->error_backoff_ns &&
        clock_ns() - job->error_last_ns >= PERIOD_NS) {
        job->error_backoff_ns = 0;
    }
    if (job->error_backoff_ns) {
        job_sleep_ns(job, job->error_backoff_ns);
    }
}
