/*
 * blockdev-create as a job (type "create"): makes a new image, then waits
 * concluded for job-dismiss (never auto-dismissed, no BLOCK_JOB_* events),
 * as qemu-storage-daemon 7.2 does:
 *   created, running, waiting, pending, concluded ... job-dismiss -> null
 *   a failure: created, running, aborting, concluded, error in query-jobs
 */
#ifndef BJ_JOB_CREATE_H
#define BJ_JOB_CREATE_H

#include <jansson.h>

#include "job/job.h"

/*
 * Starts the job for BlockdevCreateOptions `options` (a driver with a
 * co_create entry; member types already checked at the QMP boundary by its
 * create_check, values are checked by the job with qemu's messages).
 * Takes its own reference to options.  Main loop.
 */
Job *create_job_start(const char *job_id, json_t *options, Error **errp);

#endif
