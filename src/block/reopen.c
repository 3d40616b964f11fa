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
#include <string.h>

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "block/backing.h"
#include "block/block.h"
#include "block/reopen.h"
#include "util/alloc.h"
#include "util/cleanup.h"
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

/* ---- blockdev-reopen ---- */

typedef struct ReopenItem {
    BlockNode *bs;
    bool read_only, old_read_only;
    bool explicit_backing;             /* "backing" given */
    BlockNode *backing;                /* what it names (NULL: none) */
    BlockNode *old_backing;            /* for undo; referenced here */
    bool backing_done, ro_done;
} ReopenItem;

/* Whether bs is below (or is) node, through any child. */
static bool reaches(BlockNode *node, BlockNode *bs, int depth)
{
    BlockChild *c;

    if (node == bs) {
        return true;
    }
    if (depth > 64) {
        return true;    /* deeper than any chain we build: refuse */
    }
    list_for_each_entry(c, &node->children, child_link) {
        if (reaches(c->node, bs, depth + 1)) {
            return true;
        }
    }
    return false;
}

static BlockChild *child_named(BlockNode *bs, const char *name)
{
    BlockChild *c;

    list_for_each_entry(c, &bs->children, child_link) {
        if (!strcmp(c->name, name)) {
            return c;
        }
    }
    return NULL;
}

/* Members reopen looks at itself; the rest must stay as they were. */
static bool reopen_member(const char *key)
{
    static const char *const own[] = {
        "driver", "node-name", "read-only", "backing", "file", NULL,
    };

    for (const char *const *k = own; *k; k++) {
        if (!strcmp(*k, key)) {
            return true;
        }
    }
    return false;
}

/* The schema check of element i (qsd's "options[i]." messages). */
static const BlockDriver *check_element(json_t *opts, size_t i, Error **errp)
{
    CLEANUP_FREE char *prefix = bj_asprintf("options[%zu]", i);
    const BlockDriver *drv;
    json_t *v;

    if (!json_is_object(opts)) {
        error_setg(errp, "Invalid parameter type for '%s', expected: object",
                   prefix);
        return NULL;
    }
    v = json_object_get(opts, "driver");
    if (!v) {
        error_setg(errp, "Parameter '%s.driver' is missing", prefix);
        return NULL;
    }
    if (!json_is_string(v)) {
        error_setg(errp, "Invalid parameter type for '%s.driver', "
                   "expected: string", prefix);
        return NULL;
    }
    drv = bdrv_find_driver(json_string_value(v));
    if (!drv) {
        error_setg(errp, "Parameter '%s.driver' does not accept value '%s'",
                   prefix, json_string_value(v));
        return NULL;
    }
    if (!bdrv_check_options(drv, opts, prefix, false, errp)) {
        return NULL;
    }
    return drv;
}

/* The node and the changes element opts asks for, checked, nothing done. */
static bool plan_element(json_t *opts, ReopenItem *it,
                         BdrvReopenBackingCheck *check_backing,
                         Error **errp)
{
    const char *name = json_string_value(json_object_get(opts, "node-name"));
    const char *driver = json_string_value(json_object_get(opts, "driver"));
    json_t *file = json_object_get(opts, "file");
    json_t *backing = json_object_get(opts, "backing");
    const char *key;
    json_t *v;
    BlockNode *bs;

    if (!name) {
        error_setg(errp, "node-name not specified");
        return false;
    }
    bs = bdrv_find_node(name);
    if (!bs) {
        error_setg(errp, "Failed to find node with node-name='%s'", name);
        return false;
    }
    if (!backing && bs->backing) {
        error_setg(errp, "backing is missing for '%s'", name);
        return false;
    }
    if (strcmp(driver, bs->drv->name)) {
        error_setg(errp, "Cannot change the option 'driver'");
        return false;
    }
    if (file) {
        BlockChild *c = child_named(bs, "file");
        if (!c || !json_is_string(file) ||
            strcmp(json_string_value(file), c->node->node_name)) {
            error_setg(errp, "Cannot change the option 'file'");
            return false;
        }
    }
    json_object_foreach(opts, key, v) {
        json_t *was = bs->options ? json_object_get(bs->options, key) : NULL;
        if (!reopen_member(key) && (!was || !json_equal(was, v))) {
            error_setg(errp, "Cannot change the option '%s'", key);
            return false;
        }
    }
    if (bs->options) {
        json_object_foreach(bs->options, key, v) {
            if (!reopen_member(key) && !json_object_get(opts, key)) {
                error_setg(errp, "Cannot change the option '%s'", key);
                return false;
            }
        }
    }
    it->bs = bs;
    it->read_only = arg_bool(opts, "read-only", false);
    if (backing) {
        BlockNode *b = NULL;

        if (!json_is_null(backing)) {
            b = bdrv_lookup_node(NULL, json_string_value(backing), errp);
            if (!b) {
                return false;
            }
            if (reaches(b, bs, 0)) {
                error_setg(errp, "Making '%s' a backing child of '%s' would "
                           "create a cycle", b->node_name, bs->node_name);
                return false;
            }
        }
        if (bs->backing && b != bs->backing->node && check_backing &&
            !check_backing(bs, errp)) {
            return false;
        }
        it->explicit_backing = true;
        it->backing = b;
    }
    return true;
}

/* qsd's refusal of a read-only switch under a writer (an export, a job, a
 * writing parent node). */
static bool check_writers(ReopenItem *it, Error **errp)
{
    BlockChild *c;

    if (!it->read_only || it->old_read_only) {
        return true;
    }
    list_for_each_entry(c, &it->bs->parents, parent_link) {
        if (c->perm & (BLK_PERM_WRITE | BLK_PERM_WRITE_UNCHANGED)) {
            error_setg(errp, "Read-only block node '%s' cannot support "
                       "read-write users", it->bs->node_name);
            return false;
        }
    }
    return true;
}

static void undo_item(ReopenItem *it)
{
    Error *err = NULL;

    if (it->ro_done &&
        !bdrv_reopen_set_read_only(it->bs, it->old_read_only, &err)) {
        error_report_err(err, "blockdev-reopen: restoring read-only state");
        err = NULL;
    }
    if (it->backing_done &&
        !block_set_backing(it->bs, it->old_backing, &err)) {
        error_report_err(err, "blockdev-reopen: restoring the backing node");
    }
    if (it->old_backing) {
        bdrv_unref(it->old_backing);
        it->old_backing = NULL;
    }
    it->ro_done = it->backing_done = false;
}

/* Applies it; a node listed twice sees what the earlier element did. */
static bool apply_item(ReopenItem *it, Error **errp)
{
    BlockNode *cur = it->bs->backing ? it->bs->backing->node : NULL;

    it->old_read_only = it->bs->read_only;
    if (it->explicit_backing && it->backing != cur) {
        /* block_set_backing drops the edge's reference: keep one for an
         * undo until the list is through. */
        it->old_backing = cur;
        if (cur) {
            bdrv_ref(cur);
        }
        if (!block_set_backing(it->bs, it->backing, errp)) {
            return false;
        }
        it->backing_done = true;
    }
    if (!check_writers(it, errp)) {
        return false;
    }
    if (it->read_only != it->bs->read_only) {
        if (!bdrv_reopen_set_read_only(it->bs, it->read_only, errp)) {
            return false;
        }
        it->ro_done = true;
    }
    return true;
}

bool bdrv_reopen_blockdev(json_t *options,
                          BdrvReopenBackingCheck *check_backing,
                          Error **errp)
{
    size_t n = json_array_size(options);
    CLEANUP_FREE ReopenItem *items = bj_calloc(n ? n : 1, sizeof(*items));
    size_t i, applied = 0;
    bool ok = true;

    for (i = 0; i < n; i++) {
        if (!check_element(json_array_get(options, i), i, errp)) {
            return false;
        }
    }
    for (i = 0; i < n; i++) {
        if (!plan_element(json_array_get(options, i), &items[i],
                          check_backing, errp)) {
            return false;
        }
    }
    /*
     * qemu checks the permissions of the whole list at once, so a file node
     * and its format may go read-only together in either order.  Here each
     * element is applied alone: passes over the list apply what can be
     * applied now (a node listed twice in list order), until all are
     * applied or a pass makes no progress; then its first refusal is the
     * answer and everything applied is undone, last first.
     */
    CLEANUP_FREE size_t *order = bj_calloc(n ? n : 1, sizeof(*order));
    CLEANUP_FREE bool *done = bj_calloc(n ? n : 1, sizeof(*done));
    Error *first = NULL;

    while (applied < n) {
        bool progress = false;

        for (i = 0; i < n; i++) {
            Error *err = NULL;
            size_t j;

            if (done[i]) {
                continue;
            }
            for (j = 0; j < i && (done[j] || items[j].bs != items[i].bs); j++) {
            }
            if (j < i) {
                continue;       /* an earlier element for it is pending */
            }
            if (apply_item(&items[i], &err)) {
                done[i] = true;
                order[applied++] = i;
                progress = true;
                continue;
            }
            undo_item(&items[i]);
            if (!first) {
                first = err;
            } else {
                error_free(err);
            }
        }
        if (!progress) {
            break;
        }
        if (applied < n) {
            error_free(first);
            first = NULL;
        }
    }
    ok = applied == n;
    if (!ok) {
        for (i = applied; i-- > 0;) {
            undo_item(&items[order[i]]);
        }
        error_propagate(errp, first);
    } else {
        error_free(first);
    }
    for (i = 0; i < n; i++) {
        if (items[i].old_backing) {
            bdrv_unref(items[i].old_backing);
        }
    }
    return ok;
}
