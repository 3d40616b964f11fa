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
/* Every block job walks chains: its users get the walk from here too. */
#include "block/chain.h"
#include "job/job.h"

/*
 * Attaches job to bs with perm/shared (main loop).  The returned child is
 * the job's request handle on bs; it stays until the job is freed (or
 * block_job_remove_all_nodes).  Refused for a node outside job->ctx: a job
 * type that cannot run in an iothread has the main context, and iothread
 * nodes get "Node 'x' is in an iothread: block jobs there are not
 * supported"; one that can moves its other nodes there first.
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
/* Calls fn on each node job is attached to (main loop). */
void block_job_foreach_node(Job *job, void (*fn)(BlockNode *bs, void *opaque),
                            void *opaque);

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

/* ---- the layers of a chain (main loop) ---- */

/* Refuses, as block_job_check_node_free, the first node from top down to,
 * not including, base (NULL: the bottom) that some job uses. */
bool block_job_check_chain_free(BlockNode *top, BlockNode *base,
                                Error **errp);
/* Attaches job, with no permission of its own and `shared`, to each node
 * strictly between top and base ("intermediate node"). */
bool block_job_add_intermediate_nodes(Job *job, BlockNode *top,
                                      BlockNode *base, uint64_t shared,
                                      Error **errp);
/* What a commit (intermediate or active) shares on the layers it copies:
 * write too, because the block layer lets a backing edge share write on
 * base only when everything above it does (and the job writes base). */
#define BLOCK_JOB_COMMIT_CHAIN_SHARED                                       \
    (BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED | BLK_PERM_WRITE)

#endif
