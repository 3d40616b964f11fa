/*
 * x-blockdev-amend as a job (type "amend"), as qemu-storage-daemon 7.2
 * runs it: one step, then the job waits concluded for job-dismiss (never
 * auto-dismissed, no BLOCK_JOB_* events):
 *   created, running, waiting, pending, concluded ... job-dismiss -> null
 *   a failure: created, running, aborting, concluded, error in query-jobs
 */
#ifndef BJ_JOB_AMEND_H
#define BJ_JOB_AMEND_H

#include <jansson.h>
#include <stdbool.h>

#include "block/block.h"
#include "job/job.h"

/*
 * Starts the job that runs bs's driver's co_amend with options (already
 * checked by the driver's amend_check; the driver is bs's).  The job
 * holds a reference to bs and to options until it is freed.  Main loop.
 */
Job *amend_job_start(const char *job_id, BlockNode *bs, json_t *options,
                     bool force, Error **errp);

#endif
