/*
 * Shared between the files of the job engine (job.c: states, verbs, pause
 * points; job-txn.c: completion, transactions, sync helpers; job-query.c:
 * events and queries).  Not for job types.
 */
#ifndef BJ_JOB_JOB_INTERNAL_H
#define BJ_JOB_JOB_INTERNAL_H

#include "job/job.h"

/* The one place a job changes state: checks the table, emits
 * JOB_STATUS_CHANGE when the state actually changes. */
void job_state_transition(Job *job, JobStatus s1);
void job_update_rc(Job *job);
void job_cancel_async(Job *job, bool force);

/* job-txn.c */
void job_txn_add_job(JobTxn *txn, Job *job);
void job_completed(Job *job);
void job_completed_txn_abort(Job *job);
void job_do_dismiss(Job *job);

/* job-query.c: BLOCK_JOB_* events (only for driver->block_job_events) */
void job_event_completed(Job *job);
void job_event_cancelled(Job *job);
void job_event_ready(Job *job);
void job_event_pending(Job *job);
void job_event_error(Job *job, bool is_read, JobErrorAction action);
const char *job_error_action_name(JobErrorAction action);

/* job-error-events.c: BLOCK_JOB_ERROR at most once a second per job,
 * operation and action; flush sends what is held and stops the timers
 * (the job ends). */
void job_error_event(Job *job, bool is_read, JobErrorAction action);
void job_error_events_flush(Job *job);
/* An ignored error happened now: grows or resets the retry backoff. */
void job_error_backoff_update(Job *job);

#endif
