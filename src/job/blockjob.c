/*
 * Block jobs as users of the graph: one external edge per node a job uses,
 * whose class turns drained sections into internal job pauses, plus an op
 * blocker on the node naming the job type.
 */
#include "job/blockjob.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"

typedef struct BlockJobNode {
    ListHead link;           /* in job->block_users */
    Job *job;
    BlockChild *child;
    BlockNode *node;         /* referenced while listed */
    bool owns_blocker;       /* we set node->op_blocker */
    bool io;                 /* block_job_add_io_node */
    bool moving;             /* counted in job->ctx_moving */
    const char *name;        /* the edge's, static */
} BlockJobNode;

static char *child_job_get_parent_desc(BlockChild *c)
{
    BlockJobNode *u = c->opaque;

    return bj_asprintf("%s job '%s'", u->job->driver->type, u->job->id);
}

static void child_job_graph_parent(BlockChild *c, const void **owner,
                                   const char **type, const char **name)
{
    BlockJobNode *u = c->opaque;

    *owner = u->job;
    *type = "block-job";
    *name = u->job->id;
}

static void child_job_drained_begin(BlockChild *c)
{
    BlockJobNode *u = c->opaque;
    job_pause(u->job);
}

/* Still busy until the body stopped at a pause point (or finished): no job
 * code runs on the node between then and drained_end. */
static bool child_job_drained_poll(BlockChild *c)
{
    BlockJobNode *u = c->opaque;
    Job *job = u->job;
    if (job_is_completed(job) || job->deferred_to_main_loop) {
        return false;
    }
    if (job->ctx_moving) {
        /* A move needs the body parked in the main loop, not merely done
         * with its I/O (it may be on its way back into the context the
         * move is leaving), and none of its helpers (mirror's ops,
         * backup's workers) left in that context, even between two of
         * their requests. */
        return job->busy ||
               (job->driver->drained_poll && job->driver->drained_poll(job));
    }
    if (!job->busy) {
        return false;
    }
    return job->driver->drained_poll ? job->driver->drained_poll(job) : true;
}

static void child_job_drained_end(BlockChild *c)
{
    BlockJobNode *u = c->opaque;
    job_resume(u->job);
}

/* A job's nodes live in one context: moving one moves them all
 * (x-blockdev-set-iothread), as qemu's job edges do. */
static void child_job_for_each_sibling(BlockChild *c,
                                       void (*fn)(BlockNode *bs, void *),
                                       void *opaque)
{
    BlockJobNode *u = c->opaque, *v;

    list_for_each_entry(v, &u->job->block_users, link) {
        if (v->child) {
            fn(v->node, opaque);
        }
    }
}

/* Job types whose body may run in an iothread follow their nodes.  The
 * move happens drained: the body is parked at a pause point in the main
 * loop (or done), and job_co_back takes it to the new job->ctx. */
static bool child_job_can_change_ctx(BlockChild *c, AioContext *ctx)
{
    BlockJobNode *u = c->opaque;

    return u->job->driver->iothread;
}

static void child_job_change_ctx_begin(BlockChild *c)
{
    BlockJobNode *u = c->opaque;

    if (!u->moving) {
        u->moving = true;
        u->job->ctx_moving++;
    }
}

static void moving_done(BlockJobNode *u)
{
    Job *job = u->job;

    if (u->moving) {
        u->moving = false;
        if (--job->ctx_moving == 0 && job->in_co_drain) {
            job_enter(job);
        }
    }
}

static void child_job_change_ctx(BlockChild *c, AioContext *old,
                                 AioContext *ctx)
{
    BlockJobNode *u = c->opaque;

    /* The body reads it in job_co_back, in the main loop. */
    u->job->ctx = ctx;
}

static void child_job_change_ctx_end(BlockChild *c)
{
    moving_done(c->opaque);
}

/* What qemu 7.2 holds through a BlockBackend: the job's main node and the
 * nodes it does I/O on (mirror's target, commit's base and top); the
 * other nodes a job holds move without force (qsd: a backup's source and
 * target, a mirror's source). */
static bool child_job_is_backend(BlockChild *c)
{
    BlockJobNode *u = c->opaque;

    if (u->io) {
        return true;
    }
    if (strcmp(u->name, "main node") == 0) {
        /* qemu's stream job sits on its copy-on-read filter, above. */
        return strcmp(u->job->driver->type, "stream") != 0;
    }
    return strcmp(u->name, "target") == 0 &&
           strcmp(u->job->driver->type, "mirror") == 0;
}

static const BlockChildClass child_job_class = {
    .parent_is_node = false,
    .get_parent_desc = child_job_get_parent_desc,
    .graph_parent = child_job_graph_parent,
    .drained_begin = child_job_drained_begin,
    .drained_poll = child_job_drained_poll,
    .drained_end = child_job_drained_end,
    /* The job's own requests must finish inside a drained section. */
    .postpone_requests_when_drained = false,
    .for_each_sibling = child_job_for_each_sibling,
    .can_change_ctx = child_job_can_change_ctx,
    .change_ctx_begin = child_job_change_ctx_begin,
    .change_ctx = child_job_change_ctx,
    .change_ctx_end = child_job_change_ctx_end,
    .is_backend = child_job_is_backend,
};

void block_job_foreach_node(Job *job, void (*fn)(BlockNode *bs, void *opaque),
                            void *opaque)
{
    BlockJobNode *u;

    list_for_each_entry(u, &job->block_users, link) {
        fn(u->node, opaque);
    }
}

Job *block_job_user_of(BlockNode *bs)
{
    BlockChild *c;
    list_for_each_entry(c, &bs->parents, parent_link) {
        if (c->klass == &child_job_class) {
            return ((BlockJobNode *)c->opaque)->job;
        }
    }
    return NULL;
}

bool block_job_check_node_free(BlockNode *bs, Error **errp)
{
    Job *job;
    if (bs->op_blocker) {
        error_setg(errp, "Node '%s' is busy: %s", bs->node_name,
                   bs->op_blocker);
        return false;
    }
    if ((job = block_job_user_of(bs))) {
        error_setg(errp, "Node '%s' is busy: block device is in use by block "
                   "job: %s", bs->node_name, job->driver->type);
        return false;
    }
    return true;
}

static BlockChild *add_node(Job *job, const char *name, BlockNode *bs,
                            uint64_t perm, uint64_t shared, bool blocker,
                            bool io, Error **errp)
{
    if (bs->ctx != job->ctx) {
        if (job->ctx == aio_main_context()) {
            error_setg(errp, "Node '%s' is in an iothread: block jobs there "
                       "are not supported", bs->node_name);
        } else {
            /* The job type moves what it may into its context first. */
            error_setg(errp, "Node '%s' is in a different iothread than the "
                       "job's nodes", bs->node_name);
        }
        return NULL;
    }
    BlockJobNode *u = bj_calloc(1, sizeof(*u));
    u->job = job;
    u->io = io;
    u->name = name;
    /* The permissions below bs change: in an iothread, clients' requests
     * check them there, so they wait meanwhile. */
    bool drain = bs->ctx != aio_main_context();
    if (drain) {
        bdrv_drained_begin(bs);
    }
    u->child = bdrv_root_attach_child(bs, name, &child_job_class, u, perm,
                                      shared, errp);
    if (drain) {
        bdrv_drained_end(bs);
    }
    if (!u->child) {
        free(u);
        return NULL;
    }
    u->node = bs;
    bdrv_ref(bs);
    if (blocker && !bs->op_blocker) {
        bs->op_blocker = bj_asprintf("block device is in use by block job: "
                                     "%s", job->driver->type);
        u->owns_blocker = true;
    }
    /* An edge attached inside a drained section is quiesced already: the
     * layer then called drained_begin, which paused the job. */
    list_add_tail(&job->block_users, &u->link);
    return u->child;
}

BlockChild *block_job_add_node(Job *job, const char *name, BlockNode *bs,
                               uint64_t perm, uint64_t shared, Error **errp)
{
    return add_node(job, name, bs, perm, shared, true, false, errp);
}

BlockChild *block_job_add_io_node(Job *job, const char *name, BlockNode *bs,
                                  uint64_t perm, uint64_t shared,
                                  Error **errp)
{
    return add_node(job, name, bs, perm, shared, false, true, errp);
}

void block_job_remove_all_nodes(Job *job)
{
    BlockJobNode *u, *next;

    list_for_each_entry_safe(u, next, &job->block_users, link) {
        list_del(&u->link);
        moving_done(u);
        if (u->owns_blocker) {
            free(u->node->op_blocker);
            u->node->op_blocker = NULL;
        }
        if (u->child) {
            /* As in add_node: the permissions change under clients. */
            bool drain = u->node->ctx != aio_main_context();
            if (drain) {
                bdrv_drained_begin(u->node);
            }
            bdrv_detach_child(u->child);
            if (drain) {
                bdrv_drained_end(u->node);
            }
        }
        bdrv_unref(u->node);
        free(u);
    }
}

/* ---- drained sections from the body ---- */

static void coroutine_fn co_drain(Job *job, BlockNode *bs, bool begin)
{
    BdrvCoDrain d;

    assert(coroutine_self() == job->co);
    /* busy is the main loop's (job.h, Threads): wait there. */
    bool moved = job_co_to_main(job);
    bdrv_co_drain_start(&d, bs, begin);
    /* The drain pauses and resumes the job through its edge, which enters
     * the body early (job_enter): keep waiting, and stay "not busy" so the
     * drain's poll sees the job stopped. */
    while (!d.done || job->ctx_moving) {
        job->busy = false;
        job->in_co_drain = true;
        coroutine_yield();
    }
    job->in_co_drain = false;
    job->busy = true;
    job_co_back(job, moved);
}

void coroutine_fn block_job_co_drained_begin(Job *job, BlockNode *bs)
{
    co_drain(job, bs, true);
}

void coroutine_fn block_job_co_drained_end(Job *job, BlockNode *bs)
{
    co_drain(job, bs, false);
}
