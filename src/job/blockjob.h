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
/* The same without the op blocker: a node the job reads or writes through
 * its own edge, which blockdev-del then refuses as "Node x is in use" (as
 * the reference does for a job's BlockBackend). */
BlockChild *block_job_add_io_node(Job *job, const char *name, BlockNode *bs,
                                  uint64_t perm, uint64_t shared,
                                  Error **errp);
void block_job_remove_all_nodes(Job *job);

/* Refuses a node some job already uses: "Node 'x' is busy: ...". */
bool block_job_check_node_free(BlockNode *bs, Error **errp);
/* The job using bs (through any edge), or NULL. */
Job *block_job_user_of(BlockNode *bs);

/*
 * A drained section on bs entered from the job's own body (coroutine_fn):
 * the main loop runs bdrv_drained_begin/end in a bottom half while the body
 * waits, not busy, so the drain does not wait for the body itself.  Inside,
 * clients' requests to bs and above are held back (postponed) and none is in
 * flight, while the job's own requests still go through: the job can check
 * and write a range with no client write racing it.  Keep it short.
 */
void coroutine_fn block_job_co_drained_begin(Job *job, BlockNode *bs);
void coroutine_fn block_job_co_drained_end(Job *job, BlockNode *bs);

/* ---- backing chains (main loop) ---- */

/* The node below bs in its chain (backing, or file of a filter); NULL at
 * the bottom. */
BlockNode *block_chain_next(BlockNode *bs);
/* Whether `bs` is `top` or below it. */
bool block_chain_contains(BlockNode *top, BlockNode *bs);
/* The node whose backing is bs, searching from top; NULL if none. */
BlockNode *block_chain_overlay(BlockNode *top, BlockNode *bs);
/* The bottom of the chain. */
BlockNode *block_chain_base(BlockNode *top);

/*
 * Whether [offset, offset+bytes) is allocated in some node from `top` down
 * to, not including, `base` (NULL: the whole chain).  *pnum gets how many
 * bytes from offset share the answer; *zero whether the first allocated
 * layer reads them as zeroes.  Returns 1, 0 or -errno.  coroutine_fn.
 */
int coroutine_fn block_co_is_allocated_above(BlockNode *top, BlockNode *base,
                                             int64_t offset, int64_t bytes,
                                             int64_t *pnum, bool *zero);

#endif
