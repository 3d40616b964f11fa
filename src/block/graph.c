/*
 * The graph: edges (BlockChild), permissions and graph changes.
 *
 * Permissions flow downwards.  A node's parents together hold a cumulative
 * permission (the OR of their perm) and share what all of them share (the
 * AND of their shared).  From that, drv->child_perm says what the node needs
 * on each child, and so on down.  A change is made in two steps: first every
 * edge below the change is updated and checked (conflicts between the
 * parents of each node, read-only nodes, drv->check_perm), keeping the old
 * values; if anything refuses, every edge gets its old value back and
 * nothing else happened.  Only then does drv->set_perm tell the drivers
 * (the file driver takes its locks there).
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "util/alloc.h"
#include "util/cleanup.h"
#include "util/log.h"

static const char *const perm_names[] = {
    "consistent read", "write", "write unchanged", "resize",
};

/* "consistent read, write" — for messages. Caller frees. */
static char *bdrv_perm_names(uint64_t perm)
{
    size_t len = 1;
    char *s;

    for (size_t i = 0; i < 4; i++) {
        len += strlen(perm_names[i]) + 2;
    }
    s = bj_calloc(1, len);
    for (size_t i = 0; i < 4; i++) {
        if (perm & (1u << i)) {
            if (s[0]) {
                strcat(s, ", ");
            }
            strcat(s, perm_names[i]);
        }
    }
    return s;
}

static char *node_parent_desc(BlockChild *c)
{
    BlockNode *parent = c->opaque;
    return bj_asprintf("node '%s'", parent->node_name);
}

const BlockChildClass bdrv_child_class_node = {
    .parent_is_node = true,
    .get_parent_desc = node_parent_desc,
};

static char *parent_desc(BlockChild *c)
{
    if (c->klass->get_parent_desc) {
        return c->klass->get_parent_desc(c);
    }
    return bj_strdup("an unnamed block device");
}

static void bdrv_get_cumulative_perm(BlockNode *bs, uint64_t *perm,
                                     uint64_t *shared)
{
    uint64_t p = 0, s = BLK_PERM_ALL;
    BlockChild *c;

    list_for_each_entry(c, &bs->parents, parent_link) {
        p |= c->perm;
        s &= c->shared;
    }
    *perm = p;
    *shared = s;
}

/* What a node needs on a child when its driver does not say. */
static void default_child_perm(BlockNode *bs, BlockChild *c, unsigned role,
                               uint64_t parent_perm, uint64_t parent_shared,
                               uint64_t *perm, uint64_t *shared)
{
    if (role & BLK_ROLE_COW) {
        /* A backing file is only read; writers of it (commit) are fine as
         * long as our own users would tolerate writes too. */
        *perm = parent_perm & BLK_PERM_CONSISTENT_READ;
        *shared = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED;
        if (parent_shared & BLK_PERM_WRITE) {
            *shared |= BLK_PERM_WRITE | BLK_PERM_RESIZE;
        }
    } else if ((role & BLK_ROLE_METADATA) && !(role & BLK_ROLE_FILTERED)) {
        /* Format metadata must stay consistent under us, and a writable
         * format node may write its metadata at any time. */
        *perm = parent_perm | BLK_PERM_CONSISTENT_READ;
        if (!bs->read_only) {
            *perm |= BLK_PERM_WRITE | BLK_PERM_RESIZE;
        }
        *shared = parent_shared & ~(BLK_PERM_WRITE | BLK_PERM_RESIZE);
    } else {
        *perm = parent_perm;
        *shared = parent_shared;
    }
    if (bs->force_share) {
        *shared = BLK_PERM_ALL;
    }
}

static void child_perm_for(BlockNode *parent, BlockChild *c, uint64_t *perm,
                           uint64_t *shared)
{
    uint64_t pp, ps;

    bdrv_get_cumulative_perm(parent, &pp, &ps);
    if (parent->drv && parent->drv->child_perm) {
        parent->drv->child_perm(parent, c, c->role, pp, ps, perm, shared);
    } else {
        default_child_perm(parent, c, c->role, pp, ps, perm, shared);
    }
}

/* ---- permission transactions ---- */

typedef struct PermUndo {
    BlockChild *c;
    uint64_t perm, shared;
} PermUndo;

typedef struct PermTx {
    PermUndo *undo;
    size_t n_undo, cap_undo;
    BlockNode **nodes;
    size_t n_nodes, cap_nodes;
    /* Edges whose perm changed in this step, for the message's order. */
    BlockChild **changed;
    size_t n_changed, cap_changed;
} PermTx;

#define GROW(arr, n, cap)                                               \
    do {                                                                \
        if ((n) == (cap)) {                                             \
            (cap) = (cap) ? (cap) * 2 : 8;                              \
            (arr) = bj_reallocarray((arr), (cap), sizeof(*(arr)));      \
        }                                                               \
    } while (0)

static void tx_set_edge(PermTx *tx, BlockChild *c, uint64_t perm,
                        uint64_t shared)
{
    GROW(tx->undo, tx->n_undo, tx->cap_undo);
    tx->undo[tx->n_undo++] = (PermUndo){ c, c->perm, c->shared };
    GROW(tx->changed, tx->n_changed, tx->cap_changed);
    tx->changed[tx->n_changed++] = c;
    c->perm = perm;
    c->shared = shared;
}

static void tx_mark_changed(PermTx *tx, BlockChild *c)
{
    GROW(tx->changed, tx->n_changed, tx->cap_changed);
    tx->changed[tx->n_changed++] = c;
}

static bool tx_is_changed(PermTx *tx, BlockChild *c)
{
    for (size_t i = 0; i < tx->n_changed; i++) {
        if (tx->changed[i] == c) {
            return true;
        }
    }
    return false;
}

static void tx_add_node(PermTx *tx, BlockNode *bs)
{
    for (size_t i = 0; i < tx->n_nodes; i++) {
        if (tx->nodes[i] == bs) {
            return;
        }
    }
    GROW(tx->nodes, tx->n_nodes, tx->cap_nodes);
    tx->nodes[tx->n_nodes++] = bs;
}

static void tx_rollback(PermTx *tx)
{
    for (size_t i = tx->n_undo; i-- > 0;) {
        tx->undo[i].c->perm = tx->undo[i].perm;
        tx->undo[i].c->shared = tx->undo[i].shared;
    }
}

static void tx_commit(PermTx *tx)
{
    for (size_t i = 0; i < tx->n_nodes; i++) {
        BlockNode *bs = tx->nodes[i];
        uint64_t perm, shared;

        if (bs->drv && bs->drv->set_perm) {
            bdrv_get_cumulative_perm(bs, &perm, &shared);
            bs->drv->set_perm(bs, perm, shared);
        }
    }
}

static void tx_free(PermTx *tx)
{
    free(tx->undo);
    free(tx->nodes);
    free(tx->changed);
}

/* b needs what a does not share? */
static bool check_pair(BlockNode *bs, BlockChild *a, BlockChild *b,
                       Error **errp)
{
    uint64_t conflict = b->perm & ~a->shared;

    if (!conflict) {
        return true;
    }
    CLEANUP_FREE char *perms = bdrv_perm_names(conflict);
    CLEANUP_FREE char *a_user = parent_desc(a);
    CLEANUP_FREE char *b_user = parent_desc(b);
    error_setg(errp, "Permission conflict on node '%s': permissions '%s' are "
               "both required by %s (uses node '%s' as '%s' child) and "
               "unshared by %s (uses node '%s' as '%s' child).",
               bs->node_name, perms, b_user, bs->node_name, b->name,
               a_user, bs->node_name, a->name);
    return false;
}

static bool check_parents(PermTx *tx, BlockNode *bs, Error **errp)
{
    BlockChild *a, *b;

    /* Changed edges first, so that the message names the newcomer as the
     * one that requires (or unshares). */
    list_for_each_entry(b, &bs->parents, parent_link) {
        if (!tx_is_changed(tx, b)) {
            continue;
        }
        list_for_each_entry(a, &bs->parents, parent_link) {
            if (a != b && (!check_pair(bs, a, b, errp) ||
                           !check_pair(bs, b, a, errp))) {
                return false;
            }
        }
    }
    return true;
}

/* Re-derives everything below bs from its parents' current edges. */
static bool refresh_node(PermTx *tx, BlockNode *bs, Error **errp)
{
    uint64_t perm, shared;
    BlockChild *c;

    bdrv_get_cumulative_perm(bs, &perm, &shared);
    if ((perm & (BLK_PERM_WRITE | BLK_PERM_WRITE_UNCHANGED)) &&
        bs->read_only) {
        error_setg(errp, "Block node is read-only");
        return false;
    }
    if (!check_parents(tx, bs, errp)) {
        return false;
    }
    if (bs->drv && bs->drv->check_perm &&
        !bs->drv->check_perm(bs, perm, shared, errp)) {
        return false;
    }
    tx_add_node(tx, bs);
    list_for_each_entry(c, &bs->children, child_link) {
        uint64_t cp, cs;

        child_perm_for(bs, c, &cp, &cs);
        if (cp == c->perm && cs == c->shared) {
            continue;
        }
        tx_set_edge(tx, c, cp, cs);
        if (!refresh_node(tx, c->node, errp)) {
            return false;
        }
    }
    return true;
}

/* Checks and applies: the change already made to the edges in tx. */
static bool tx_run(PermTx *tx, BlockNode *bs, Error **errp)
{
    if (!refresh_node(tx, bs, errp)) {
        tx_rollback(tx);
        return false;
    }
    tx_commit(tx);
    return true;
}

/* After a loosening change (detach): cannot conflict, so errors are only
 * logged. */
static void refresh_after_loosen(BlockNode *bs)
{
    PermTx tx = { 0 };
    Error *err = NULL;

    if (!tx_run(&tx, bs, &err)) {
        error_report_err(err, "permission update after detach");
    }
    tx_free(&tx);
}

/* ---- edges ---- */

static bool is_ancestor_of(BlockNode *top, BlockNode *bs);

static BlockChild *link_edge(BlockNode *node, const char *name,
                             unsigned role, const BlockChildClass *klass,
                             void *opaque, uint64_t perm, uint64_t shared)
{
    BlockChild *c = bj_calloc(1, sizeof(*c));

    c->name = bj_strdup(name);
    c->node = node;
    c->role = role;
    c->klass = klass;
    c->opaque = opaque;
    c->perm = perm;
    c->shared = shared;
    list_init(&c->child_link);
    list_add_tail(&node->parents, &c->parent_link);
    bdrv_ref(node);
    return c;
}

static void unlink_edge(BlockChild *c)
{
    list_del(&c->parent_link);
    if (!list_unlinked(&c->child_link)) {
        list_del(&c->child_link);
    }
}

static void free_edge(BlockChild *c)
{
    free(c->name);
    free(c);
}

static BlockChild *attach_common(BlockChild *c, BlockNode *parent,
                                 Error **errp)
{
    PermTx tx = { 0 };
    BlockNode *node = c->node;
    bool ok;

    tx_mark_changed(&tx, c);
    ok = tx_run(&tx, node, errp);
    tx_free(&tx);
    if (!ok) {
        unlink_edge(c);
        free_edge(c);
        bdrv_unref(node);
        return NULL;
    }
    if (parent) {
        list_add_tail(&parent->children, &c->child_link);
        if (strcmp(c->name, "file") == 0) {
            parent->file = c;
        } else if (strcmp(c->name, "backing") == 0) {
            parent->backing = c;
        }
    }
    bdrv_drain_child_attached(c);
    return c;
}

/*
 * parent and its new child live in different contexts.  As qsd 7.2: the
 * parent (a node being opened, with what it has attached so far) goes
 * into the child's context; failing that, the child (with everything
 * connected to it) into the parent's; failing both, the first refusal
 * ("Cannot change iothread of active block backend").  A node being
 * opened keeps a child in an iothread drained for the rest of its open:
 * the open runs in the main loop and reads through it.
 */
static bool coroutine_mixed_fn join_contexts(BlockNode *parent,
                                             BlockNode *child, Error **errp)
{
    Error *err = NULL;

    if (!bdrv_move_to_context(parent, child->ctx, &err) &&
        !bdrv_move_to_context(child, parent->ctx, NULL)) {
        error_propagate(errp, err);
        return false;
    }
    error_free(err);
    if (parent->open_path && child->ctx != aio_main_context()) {
        bdrv_ref(child);
        bdrv_drained_begin(child);
        parent->open_drained = bj_realloc(parent->open_drained,
            (parent->n_open_drained + 1) * sizeof(*parent->open_drained));
        parent->open_drained[parent->n_open_drained++] = child;
    }
    return true;
}

BlockChild *bdrv_attach_child(BlockNode *parent, BlockNode *child,
                              const char *name, unsigned role, Error **errp)
{
    uint64_t perm, shared;
    BlockChild *c;

    if (is_ancestor_of(child, parent)) {
        error_setg(errp, "Making '%s' a child of '%s' would create a cycle",
                   child->node_name, parent->node_name);
        return NULL;
    }
    if (child->ctx != parent->ctx && !join_contexts(parent, child, errp)) {
        return NULL;
    }
    c = link_edge(child, name, role, &bdrv_child_class_node, parent, 0,
                  BLK_PERM_ALL);
    /* The edge is in child->parents already but not yet in
     * parent->children: child_perm_for only reads parent's parents. */
    child_perm_for(parent, c, &perm, &shared);
    c->perm = perm;
    c->shared = shared;
    return attach_common(c, parent, errp);
}

BlockChild *bdrv_root_attach_child(BlockNode *node, const char *name,
                                   const BlockChildClass *klass,
                                   void *opaque, uint64_t perm,
                                   uint64_t shared, Error **errp)
{
    BlockChild *c;

    assert(!klass->parent_is_node);
    c = link_edge(node, name, 0, klass, opaque, perm, shared);
    return attach_common(c, NULL, errp);
}

void bdrv_detach_child(BlockChild *c)
{
    BlockNode *node = c->node;

    if (c->klass->parent_is_node) {
        BlockNode *parent = c->opaque;
        if (parent->file == c) {
            parent->file = NULL;
        }
        if (parent->backing == c) {
            parent->backing = NULL;
        }
    }
    bdrv_drain_child_detaching(c);
    unlink_edge(c);
    free_edge(c);
    refresh_after_loosen(node);
    bdrv_unref(node);
}

bool bdrv_child_set_perm(BlockChild *c, uint64_t perm, uint64_t shared,
                         Error **errp)
{
    PermTx tx = { 0 };
    bool ok;

    tx_set_edge(&tx, c, perm, shared);
    ok = tx_run(&tx, c->node, errp);
    tx_free(&tx);
    return ok;
}

static bool is_ancestor_of(BlockNode *top, BlockNode *bs)
{
    BlockChild *c;

    if (top == bs) {
        return true;
    }
    list_for_each_entry(c, &top->children, child_link) {
        if (is_ancestor_of(c->node, bs)) {
            return true;
        }
    }
    return false;
}

static void move_edge(BlockChild *c, BlockNode *to)
{
    list_del(&c->parent_link);
    /* A request in an iothread reads it before it counts itself in
     * (bdrv_co_wait_unquiesced). */
    __atomic_store_n(&c->node, to, __ATOMIC_RELEASE);
    list_add_tail(&to->parents, &c->parent_link);
}

bool bdrv_is_root_node(BlockNode *bs)
{
    BlockChild *c;
    list_for_each_entry(c, &bs->parents, parent_link) {
        if (c->klass->parent_is_node) {
            return false;
        }
    }
    return true;
}

bool bdrv_replace_node(BlockNode *from, BlockNode *to, Error **errp)
{
    BlockChild *c, *tmp;
    BlockChild **moved = NULL;
    size_t n = 0, cap = 0;
    PermTx tx = { 0 };
    bool ok;

    if (from->ctx != to->ctx) {
        error_setg(errp, "Cannot replace node '%s' by '%s' in another "
                   "iothread", from->node_name, to->node_name);
        return false;
    }
    list_for_each_entry_safe(c, tmp, &from->parents, parent_link) {
        /* Edges from `to` or anything below it would make a loop (a filter
         * inserted above `from` keeps `from` as its child). */
        if (c->klass->parent_is_node &&
            is_ancestor_of(to, (BlockNode *)c->opaque)) {
            continue;
        }
        GROW(moved, n, cap);
        moved[n++] = c;
        move_edge(c, to);
        tx_mark_changed(&tx, c);
    }
    ok = tx_run(&tx, to, errp);
    tx_free(&tx);
    if (!ok) {
        for (size_t i = 0; i < n; i++) {
            move_edge(moved[i], from);
        }
        free(moved);
        return false;
    }
    /* Only now that the change stands do the parents learn of it: their
     * quiesce state follows the edge (no flicker on a refused change). */
    for (size_t i = 0; i < n; i++) {
        bdrv_ref(to);
        bdrv_drain_child_moved(moved[i], from);
    }
    refresh_after_loosen(from);
    bdrv_drain_wake_moved(from);
    for (size_t i = 0; i < n; i++) {
        bdrv_unref(from);
    }
    free(moved);
    return true;
}

/* ---- contexts ---- */

static void collect_subtree(BlockNode *bs, BlockNode ***set, size_t *n,
                            size_t *cap)
{
    BlockChild *c;

    for (size_t i = 0; i < *n; i++) {
        if ((*set)[i] == bs) {
            return;
        }
    }
    GROW(*set, *n, *cap);
    (*set)[(*n)++] = bs;
    list_for_each_entry(c, &bs->children, child_link) {
        collect_subtree(c->node, set, n, cap);
    }
}

static bool in_set(BlockNode **set, size_t n, BlockNode *bs)
{
    for (size_t i = 0; i < n; i++) {
        if (set[i] == bs) {
            return true;
        }
    }
    return false;
}

bool bdrv_set_aio_context(BlockNode *bs, AioContext *ctx, Error **errp)
{
    BlockNode **set = NULL;
    size_t n = 0, cap = 0;

    if (bs->ctx == ctx) {
        return true;
    }
    collect_subtree(bs, &set, &n, &cap);
    for (size_t i = 0; i < n; i++) {
        BlockChild *c;
        list_for_each_entry(c, &set[i]->parents, parent_link) {
            BlockNode *p = c->klass->parent_is_node ? c->opaque : NULL;
            if (p && !in_set(set, n, p) && p->ctx != ctx) {
                error_setg(errp, "Cannot change iothread of node '%s': it "
                           "is used by node '%s'", set[i]->node_name,
                           p->node_name);
                free(set);
                return false;
            }
        }
    }
    bdrv_drained_begin(bs);
    for (size_t i = 0; i < n; i++) {
        if (set[i]->drv && set[i]->drv->detach_aio_context) {
            set[i]->drv->detach_aio_context(set[i]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        set[i]->ctx = ctx;
    }
    for (size_t i = 0; i < n; i++) {
        if (set[i]->drv && set[i]->drv->attach_aio_context) {
            set[i]->drv->attach_aio_context(set[i]);
        }
    }
    bdrv_drained_end(bs);
    free(set);
    return true;
}

typedef struct Component {
    BlockNode **set;
    size_t n, cap;
} Component;

static void collect_component_fn(BlockNode *bs, void *opaque);

/* Every node connected to bs through node edges (children and node
 * parents alike) and through users holding several nodes (a job): what
 * has to live in one context together. */
static void collect_component(BlockNode *bs, Component *comp)
{
    BlockChild *c;

    if (in_set(comp->set, comp->n, bs)) {
        return;
    }
    GROW(comp->set, comp->n, comp->cap);
    comp->set[comp->n++] = bs;
    list_for_each_entry(c, &bs->children, child_link) {
        collect_component(c->node, comp);
    }
    list_for_each_entry(c, &bs->parents, parent_link) {
        if (c->klass->parent_is_node) {
            collect_component(c->opaque, comp);
        } else if (c->klass->for_each_sibling) {
            c->klass->for_each_sibling(c, collect_component_fn, comp);
        }
    }
}

static void collect_component_fn(BlockNode *bs, void *opaque)
{
    collect_component(bs, opaque);
}

bool bdrv_has_backend(BlockNode *bs)
{
    BlockChild *c;

    list_for_each_entry(c, &bs->parents, parent_link) {
        if (!c->klass->parent_is_node &&
            (!c->klass->is_backend || c->klass->is_backend(c))) {
            return true;
        }
    }
    return false;
}

static bool move_to_context(BlockNode *bs, AioContext *ctx, Error **errp)
{
    Component comp = { 0 };
    AioContext *old = bs->ctx;

    if (bs->ctx == ctx) {
        return true;
    }
    collect_component(bs, &comp);
    BlockNode **set = comp.set;
    size_t n = comp.n;
    for (size_t i = 0; i < n; i++) {
        BlockChild *c;
        list_for_each_entry(c, &set[i]->parents, parent_link) {
            if (!c->klass->parent_is_node &&
                (!c->klass->change_ctx ||
                 (c->klass->can_change_ctx &&
                  !c->klass->can_change_ctx(c, ctx)))) {
                /* A fixed export, FUSE, a job: it stays where it is. */
                error_setg(errp, "Cannot change iothread of active block "
                           "backend");
                free(set);
                return false;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        BlockChild *c;
        bdrv_ref(set[i]);
        list_for_each_entry(c, &set[i]->parents, parent_link) {
            if (!c->klass->parent_is_node && c->klass->change_ctx_begin) {
                c->klass->change_ctx_begin(c);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        bdrv_drained_begin(set[i]);
    }
    for (size_t i = 0; i < n; i++) {
        if (set[i]->drv && set[i]->drv->detach_aio_context) {
            set[i]->drv->detach_aio_context(set[i]);
        }
    }
    for (size_t i = 0; i < n; i++) {
        set[i]->ctx = ctx;
    }
    for (size_t i = 0; i < n; i++) {
        if (set[i]->drv && set[i]->drv->attach_aio_context) {
            set[i]->drv->attach_aio_context(set[i]);
        }
    }
    /* The users that follow, while nothing of theirs can reach the nodes
     * (their requests wait, postponed, and are woken in ctx at the end). */
    for (size_t i = 0; i < n; i++) {
        BlockChild *c;
        list_for_each_entry(c, &set[i]->parents, parent_link) {
            if (!c->klass->parent_is_node) {
                c->klass->change_ctx(c, old, ctx);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        bdrv_drained_end(set[i]);
    }
    for (size_t i = 0; i < n; i++) {
        BlockChild *c;
        list_for_each_entry(c, &set[i]->parents, parent_link) {
            if (!c->klass->parent_is_node && c->klass->change_ctx_end) {
                c->klass->change_ctx_end(c);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        bdrv_unref(set[i]);
    }
    free(set);
    return true;
}

typedef struct MoveCo {
    BlockNode *bs;
    AioContext *ctx;
    Error *err;
    bool ok;
    bool done;
    Coroutine *co;
} MoveCo;

static void move_bh(void *opaque)
{
    MoveCo *m = opaque;

    m->ok = move_to_context(m->bs, m->ctx, &m->err);
    m->done = true;
    aio_co_wake(m->co);
}

bool coroutine_mixed_fn bdrv_move_to_context(BlockNode *bs, AioContext *ctx,
                                             Error **errp)
{
    MoveCo m = { .bs = bs, .ctx = ctx, .co = coroutine_self() };

    if (!m.co) {
        assert(aio_current_context() == aio_main_context());
        return move_to_context(bs, ctx, errp);
    }
    /* Users' moves wait for other threads (aio_bh_run_wait), which a
     * coroutine cannot do inside itself. */
    aio_bh_schedule_oneshot(aio_main_context(), move_bh, &m);
    while (!m.done) {
        coroutine_yield();
    }
    if (!m.ok) {
        error_propagate(errp, m.err);
    }
    return m.ok;
}

bool bdrv_refresh_perms(BlockNode *bs, Error **errp)
{
    PermTx tx = { 0 };
    bool ok = tx_run(&tx, bs, errp);

    tx_free(&tx);
    return ok;
}
