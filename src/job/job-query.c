/*
 * BLOCK_JOB_* events and the query-jobs / query-block-jobs replies.  Only
 * job types with block_job_events (all but "create") emit events or appear
 * in query-block-jobs; JOB_STATUS_CHANGE comes from job.c for every job.
 */
#include "job/job-internal.h"

#include <assert.h>

#include "util/event.h"

static const char *const io_status_names[] = {
    [JOB_IO_STATUS_OK] = "ok",
    [JOB_IO_STATUS_FAILED] = "failed",
    [JOB_IO_STATUS_NOSPACE] = "nospace",
};

static const char *const action_names[] = {
    [JOB_ERROR_ACTION_REPORT] = "report",
    [JOB_ERROR_ACTION_IGNORE] = "ignore",
    [JOB_ERROR_ACTION_STOP] = "stop",
};

/* {type, device, len, offset, speed}: COMPLETED, CANCELLED and READY. */
static json_t *job_event_info(Job *job)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:I}",
                     "type", job->driver->type,
                     "device", job->id,
                     "len", (json_int_t)job_progress_total(job),
                     "offset", (json_int_t)job_progress_current(job),
                     "speed", (json_int_t)job->speed);
}

void job_event_completed(Job *job)
{
    if (!job->driver->block_job_events) {
        return;
    }
    job_error_events_flush(job);
    json_t *data = job_event_info(job);
    if (job->ret) {
        json_object_set_new(data, "error",
                            json_string(error_get_pretty(job->err)));
    }
    event_emit("BLOCK_JOB_COMPLETED", data);
}

void job_event_cancelled(Job *job)
{
    if (job->driver->block_job_events) {
        job_error_events_flush(job);
        event_emit("BLOCK_JOB_CANCELLED", job_event_info(job));
    }
}

void job_event_ready(Job *job)
{
    if (job->driver->block_job_events) {
        event_emit("BLOCK_JOB_READY", job_event_info(job));
    }
}

void job_event_pending(Job *job)
{
    if (job->driver->block_job_events) {
        event_emit("BLOCK_JOB_PENDING",
                   json_pack("{s:s, s:s}", "type", job->driver->type,
                             "id", job->id));
    }
}

const char *job_error_action_name(JobErrorAction action)
{
    return action_names[action];
}

void job_event_error(Job *job, bool is_read, JobErrorAction action)
{
    if (job->driver->block_job_events) {
        job_error_event(job, is_read, action);
    }
}

json_t *job_query_jobs(void)
{
    json_t *list = json_array();
    for (Job *job = job_next(NULL); job; job = job_next(job)) {
        json_t *info = json_pack("{s:s, s:s, s:s, s:I, s:I}",
                                 "id", job->id,
                                 "type", job->driver->type,
                                 "status", job_status_name(job->status),
                                 "current-progress",
                                 (json_int_t)job_progress_current(job),
                                 "total-progress",
                                 (json_int_t)job_progress_total(job));
        if (job->err) {
            json_object_set_new(info, "error",
                                json_string(error_get_pretty(job->err)));
        }
        job_yield_query(job, info);
        json_array_append_new(list, info);
    }
    return list;
}

json_t *job_query_block_jobs(void)
{
    json_t *list = json_array();
    for (Job *job = job_next(NULL); job; job = job_next(job)) {
        if (!job->driver->block_job_events) {
            continue;
        }
        json_t *info = json_pack(
            "{s:s, s:s, s:I, s:I, s:b, s:b, s:I, s:s, s:b, s:s, s:b, s:b}",
            "type", job->driver->type,
            "device", job->id,
            "len", (json_int_t)job_progress_total(job),
            "offset", (json_int_t)job_progress_current(job),
            "busy", job->busy,
            "paused", job->pause_count > 0,
            "speed", (json_int_t)job->speed,
            "io-status", io_status_names[job->iostatus],
            "ready", job_is_ready(job),
            "status", job_status_name(job->status),
            "auto-finalize", job->auto_finalize,
            "auto-dismiss", job->auto_dismiss);
        if (job->ret && job->err) {
            json_object_set_new(info, "error",
                                json_string(error_get_pretty(job->err)));
        }
        if (job->driver->query) {
            job->driver->query(job, info);
        }
        job_yield_query(job, info);
        json_array_append_new(list, info);
    }
    return list;
}
