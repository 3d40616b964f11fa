/*
 * Block jobs: a job that uses nodes attaches to each as an external user.
 * The edge lets drained sections pause the job (drained_begin -> pause,
 * drained_poll -> still busy, drained_end -> resume) and carries the job's
 * permissions; the node also gets an op blocker, so blockdev-del and
 * conflicting jobs are refused with "Node 'x' is busy: block device is in
 * use by block job: stream".
 */
#ifndef BJ_JOB_BLOCKJOB_H
#define BJ_JOB_BLOCKJOB_H

#include "block/block.h"
#include "job/job.h"

/*
 * Attaches job to bs with perm/shared (main loop).  The returned child is
 * the job's request handle on bs; it stays until the job is freed (or
 * block_job_remove_all_nodes).  Refused for nodes outside the main context
 * (iothread jobs are not supported yet).
 */
BlockChild *block_job_add_node(Job *job, const char *name, BlockNode *bs,
                               uint64_t perm, uint64_t shared, Error **errp);
void block_job_remove_all_nodes(Job *job);

/* Refuses a node some job already uses: "Node 'x' is busy: ...". */
bool block_job_check_node_free(BlockNode *bs, Error **errp);

#endif
