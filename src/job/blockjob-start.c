/*
 * What starting a block job takes, shared by the job types (see
 * blockjob.h): stream, commit and active commit check and claim the
 * layers between two nodes of a chain the same way, and every job that
 * starts at once sets its speed first.
 */
#include "job/blockjob.h"
#include "job/jobs.h"

bool block_job_check_chain_free(BlockNode *top, BlockNode *base,
                                Error **errp)
{
    for (BlockNode *it = top; it && it != base; it = block_chain_next(it)) {
        if (!block_job_check_node_free(it, errp)) {
            return false;
        }
    }
    return true;
}

bool block_job_add_intermediate_nodes(Job *job, BlockNode *top,
                                      BlockNode *base, uint64_t shared,
                                      Error **errp)
{
    for (BlockNode *it = block_chain_next(top); it && it != base;
         it = block_chain_next(it)) {
        if (!block_job_add_node(job, "intermediate node", it, 0, shared,
                                errp)) {
            return false;
        }
    }
    return true;
}

bool block_job_start(Job *job, const BlockJobOptions *o, Error **errp)
{
    if (!job_yield_params_check(&o->yield, errp)) {
        return false;
    }
    if (o->speed && !job_set_speed(job, o->speed, errp)) {
        return false;
    }
    job_yield_configure(job, &o->yield);
    job_start(job);
    return true;
}
