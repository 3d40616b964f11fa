/*
 * Reopen with another read-only state (reopen.h).
 *
 * The change runs in steps so that a refusal at any of them undoes the
 * earlier ones:
 *   1. (read-only only) flush, while the nodes may still write;
 *   2. drivers prepare, bottom-up (a file node opens its new descriptor);
 *   3. read_only flips on every node and the permissions below bs are
 *      re-derived and checked (image locks are checked here and taken or
 *      dropped only once everything agreed);
 *   4. drivers commit (swap descriptors), or abort if 2 or 3 refused;
 *   5. (read-write only) drivers activate: the first writes a writer owes
 *      the image.  A failure there reopens read-only again.
 * All of it inside a drained section on bs, so no request sees a node
 * half-changed.
 */
#include <stdlib.h>

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "block/block.h"
#include "block/reopen.h"
#include "util/alloc.h"
#include "util/log.h"

typedef enum ReopenStep {
    STEP_FLUSH,
    STEP_PREPARE,
    STEP_ACTIVATE,
} ReopenStep;

typedef struct Reopen {
    BlockNode **nodes;          /* bs first, then what follows it */
    size_t n, cap;
    bool read_only;

    /* The coroutine step. */
    ReopenStep step;
    size_t n_prepared;          /* nodes[n - n_prepared ..] are prepared */
    int ret;
    Error *err;
} Reopen;

static void add_node(Reopen *r, BlockNode *bs)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->nodes[i] == bs) {
            return;
        }
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4;
        r->nodes = bj_realloc(r->nodes, r->cap * sizeof(*r->nodes));
    }
    r->nodes[r->n++] = bs;
}

/* Children that follow their parent: opened by it (implicit name), not its
 * backing file (backing images stay read-only), and not already in the
 * wanted state. */
static void collect(Reopen *r, BlockNode *bs)
{
    BlockChild *c;

    add_node(r, bs);
    list_for_each_entry(c, &bs->children, child_link) {
        if ((c->role & BLK_ROLE_COW) || !c->node->implicit_name ||
            c->node->read_only == r->read_only) {
            continue;
        }
        collect(r, c->node);
    }
}

static int coroutine_fn step_flush(Reopen *r)
{
    int ret = bdrv_co_flush(r->nodes[0]);

    if (ret < 0) {
        error_setg_errno(&r->err, -ret, "Could not flush node '%s'",
                         r->nodes[0]->node_name);
    }
    return ret;
}

static int coroutine_fn step_prepare(Reopen *r)
{
    /* Bottom-up: a format's check may read through a child already
     * prepared, never the other way round. */
    for (size_t i = r->n; i-- > 0;) {
        BlockNode *bs = r->nodes[i];

        if (bs->drv->co_reopen_prepare) {
            int ret = bs->drv->co_reopen_prepare(bs, r->read_only, &r->err);
            if (ret < 0) {
                return ret;
            }
        }
        r->n_prepared++;
    }
    return 0;
}

static int coroutine_fn step_activate(Reopen *r)
{
    for (size_t i = r->n; i-- > 0;) {
        BlockNode *bs = r->nodes[i];

        if (bs->drv->co_reopen_activate) {
            int ret = bs->drv->co_reopen_activate(bs, &r->err);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

static void coroutine_fn step_entry(void *opaque)
{
    Reopen *r = opaque;

    switch (r->step) {
    case STEP_FLUSH:
        r->ret = step_flush(r);
        break;
    case STEP_PREPARE:
        r->ret = step_prepare(r);
        break;
    case STEP_ACTIVATE:
        r->ret = step_activate(r);
        break;
    }
}

/* Runs one step in a coroutine in the nodes' context and waits for it. */
static int run_step(Reopen *r, ReopenStep step)
{
    r->step = step;
    r->ret = 0;
    aio_co_run_wait(r->nodes[0]->ctx, step_entry, r);
    return r->ret;
}

static void abort_prepared(Reopen *r)
{
    for (size_t i = r->n - r->n_prepared; i < r->n; i++) {
        BlockNode *bs = r->nodes[i];

        if (bs->drv->reopen_abort) {
            bs->drv->reopen_abort(bs);
        }
    }
    r->n_prepared = 0;
}

static void set_flags(Reopen *r, bool read_only)
{
    for (size_t i = 0; i < r->n; i++) {
        r->nodes[i]->read_only = read_only;
    }
}

/* Steps 1-4 for r->nodes (bs drained by the caller). */
static bool reopen_nodes(Reopen *r)
{
    if (r->read_only && run_step(r, STEP_FLUSH) < 0) {
        return false;
    }
    if (run_step(r, STEP_PREPARE) < 0) {
        abort_prepared(r);
        return false;
    }
    set_flags(r, r->read_only);
    if (!bdrv_refresh_perms(r->nodes[0], &r->err)) {
        /* The edges went back to their old values, which suited the old
         * flags. */
        set_flags(r, !r->read_only);
        abort_prepared(r);
        return false;
    }
    for (size_t i = r->n; i-- > 0;) {
        BlockNode *bs = r->nodes[i];

        if (bs->drv->reopen_commit) {
            bs->drv->reopen_commit(bs);
        }
    }
    r->n_prepared = 0;
    return true;
}

bool bdrv_reopen_set_read_only(BlockNode *bs, bool read_only, Error **errp)
{
    Reopen r = { .read_only = read_only };
    bool ok;

    if (bs->read_only == read_only) {
        return true;
    }
    collect(&r, bs);
    bdrv_drained_begin(bs);
    ok = reopen_nodes(&r);
    if (ok && !read_only && run_step(&r, STEP_ACTIVATE) < 0) {
        /* Back to read-only: the image is as a reader left it, apart from
         * what activation managed to write (harmless for a reader). */
        Reopen back = { .read_only = true };

        collect(&back, bs);
        if (!reopen_nodes(&back)) {
            error_report_err(back.err, "reopening read-only after a failed "
                             "read-write reopen");
        }
        free(back.nodes);
        ok = false;
    }
    bdrv_drained_end(bs);
    free(r.nodes);
    if (!ok) {
        error_propagate(errp, r.err);
    } else {
        log_debug("node '%s' reopened %s", bs->node_name,
                  read_only ? "read-only" : "read-write");
    }
    return ok;
}
