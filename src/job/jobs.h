/*
 * Starting the block job types.  Arguments were checked at the QMP
 * boundary (cmd-job.c); these check what needs the graph (op blockers,
 * permissions) and create, attach and start the job.  Main loop.
 */
#ifndef BJ_JOB_JOBS_H
#define BJ_JOB_JOBS_H

#include "block/block.h"
#include "job/job.h"

/* What every block job type takes; each reads the policies it has. */
typedef struct BlockJobOptions {
    const char *job_id;
    int64_t speed;
    JobOnError on_error;          /* stream, commit */
    JobOnError on_source_error;   /* backup, mirror */
    JobOnError on_target_error;   /* backup, mirror */
    int flags;                /* JOB_MANUAL_FINALIZE / JOB_MANUAL_DISMISS */
    /* Stream and intermediate commit insert no filter node yet, but the
     * name must still be one a node could take (NULL: none given; backup
     * and mirror then pick an implicit name). */
    const char *filter_node_name;
    /* x-yield (our extension): the back-off's tuning, checked when the
     * job is set up (job_yield_params_check). */
    JobYieldParams yield;
} BlockJobOptions;

/* Sets o's speed (if any) and back-off tuning, then starts job; false, not
 * started, when either is refused. */
bool block_job_start(Job *job, const BlockJobOptions *o, Error **errp);

/* block-stream: copies what is allocated between top (exclusive) and base
 * (exclusive; NULL = the whole chain) into top, then makes base top's
 * backing and writes backing_file (default: base's filename) into top's
 * header. */
Job *stream_start(const BlockJobOptions *o, BlockNode *top, BlockNode *base,
                  const char *backing_file, Error **errp);

/* block-commit, intermediate: copies what is allocated in top and below
 * it down to base (exclusive) into base, then the overlay of top (found
 * from active) backs onto base, its header naming backing_file (default:
 * base's filename). */
Job *commit_start(const BlockJobOptions *o, BlockNode *active, BlockNode *top,
                  BlockNode *base, const char *backing_file, Error **errp);

#endif
