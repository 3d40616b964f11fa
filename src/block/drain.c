/*
 * Drained sections and postponed requests.
 *
 * bdrv_drained_begin(bs) raises quiesce_counter on bs and, recursively, on
 * every node above it; the first raise of a node tells its external parents
 * (exports, jobs) to stop sending.  Then the main loop runs until no request
 * is in flight on bs or above it and no external parent says it is busy.
 *
 * Requests from users whose class postpones them (NBD exports) may arrive in
 * another thread at any time.  They count themselves in in_flight FIRST and
 * only then look at quiesce_counter; the drain raises quiesce_counter first
 * and only then looks at in_flight.  Both with sequentially consistent
 * atomics, so at least one side sees the other: either the drain sees the
 * request (and waits for it), or the request sees the drain (and steps back
 * into node->postponed, kicking the drain awake as it leaves).
 *
 * node->postponed is a FIFO wait queue touched only in the node's context.
 * When the last section ends, a bottom half in that context wakes the
 * waiters in arrival order; a request arriving while waiters are still
 * queued lines up behind them, so order is kept across the hand-over.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "block/block.h"
#include "util/alloc.h"

/* ---- in-flight accounting ---- */

void bdrv_inc_in_flight(BlockNode *bs)
{
    atomic_fetch_add(&bs->in_flight, 1);
}

void bdrv_dec_in_flight(BlockNode *bs)
{
    unsigned old = atomic_fetch_sub(&bs->in_flight, 1);

    assert(old > 0);
    /* Pairs with the drain raising quiesce_counter before it reads
     * in_flight: if it read our old count, we see its counter here. */
    if (old == 1 && atomic_load(&bs->quiesce_counter) > 0) {
        aio_wait_kick();
    }
}

void coroutine_fn bdrv_co_wait_unquiesced(BlockChild *c)
{
    bool woken = false;

    if (!c->klass->postpone_requests_when_drained) {
        bdrv_inc_in_flight(c->node);
        return;
    }
    for (;;) {
        /* Re-read on every round: a graph change (a pivot) may have moved
         * the edge to another node while we waited.  Atomic: the main loop
         * moves the edge (inside a drained section of the old node) while
         * a request in the node's thread may be reading it here. */
        BlockNode *bs = __atomic_load_n(&c->node, __ATOMIC_ACQUIRE);

        /* Announce ourselves as a possible waiter before looking at the
         * counter: drained_end lowers the counter before it reads
         * n_postponed, so it either sees us (and restarts the queue) or we
         * see it at 0. */
        atomic_fetch_add(&bs->n_postponed, 1);
        bdrv_inc_in_flight(bs);
        /* Newcomers line up behind requests still waiting from the last
         * section; those, once woken, only need the node to be open. */
        if (atomic_load(&bs->quiesce_counter) == 0 &&
            (woken || co_queue_empty(&bs->postponed))) {
            atomic_fetch_sub(&bs->n_postponed, 1);
            return;
        }
        bdrv_dec_in_flight(bs);
        co_queue_wait(&bs->postponed, NULL);
        atomic_fetch_sub(&bs->n_postponed, 1);
        woken = true;
    }
}

/* ---- restarting postponed requests ---- */

static void unref_bh(void *opaque)
{
    bdrv_unref(opaque);
}

/*
 * In bs->ctx: wakes every waiter, oldest first; each looks at the counter
 * itself.  Not one by one while the counter stays 0: in an iothread a new
 * section may begin (in the main loop) after we looked and before the
 * woken request did, and that request, queueing again at the tail, would
 * overtake the ones still queued.  Woken all in order, those that must
 * wait again queue again in the same order (nothing else runs in this
 * thread meanwhile), and the section's end schedules this again.
 */
static void restart_postponed_bh(void *opaque)
{
    BlockNode *bs = opaque;

    if (atomic_load(&bs->quiesce_counter) == 0) {
        co_queue_restart_all(&bs->postponed);
    }
    if (aio_current_context() == aio_main_context()) {
        bdrv_unref(bs);
    } else {
        /* References are dropped in the main loop only. */
        aio_bh_schedule_oneshot(aio_main_context(), unref_bh, bs);
    }
}

static void restart_all_now(void *opaque)
{
    BlockNode *bs = opaque;

    co_queue_restart_all(&bs->postponed);
}

static void restart_all_bh(void *opaque)
{
    BlockNode *bs = opaque;

    co_queue_restart_all(&bs->postponed);
    if (aio_current_context() == aio_main_context()) {
        bdrv_unref(bs);
    } else {
        aio_bh_schedule_oneshot(aio_main_context(), unref_bh, bs);
    }
}

void bdrv_drain_wake_moved(BlockNode *bs)
{
    if (atomic_load(&bs->n_postponed) == 0) {
        return;
    }
    /* Wake every waiter once: those whose edge moved retry on the new
     * node, the others queue again in the same order.  In the node's own
     * thread this happens now, before any newcomer can overtake them.
     * From the main loop for a node in an iothread, it happens there and
     * the main loop waits until every waiter is queued again: the next
     * graph change (a pivot moves an edge twice) must not find half of
     * them on one node and half on another, in the wrong order. */
    if (aio_current_context() == bs->ctx && !coroutine_in_coroutine()) {
        co_queue_restart_all(&bs->postponed);
    } else if (aio_current_context() == aio_main_context() &&
               !coroutine_in_coroutine()) {
        aio_bh_run_wait(bs->ctx, restart_all_now, bs);
    } else {
        bdrv_ref(bs);
        aio_bh_schedule_oneshot(bs->ctx, restart_all_bh, bs);
    }
}

/* ---- quiescing ---- */

static void quiesce_begin(BlockNode *bs)
{
    BlockChild *c;

    if (atomic_fetch_add(&bs->quiesce_counter, 1) == 0) {
        if (bs->drv && bs->drv->drained_begin) {
            bs->drv->drained_begin(bs);
        }
        list_for_each_entry(c, &bs->parents, parent_link) {
            if (!c->klass->parent_is_node && !c->quiesced_parent) {
                c->quiesced_parent = true;
                if (c->klass->drained_begin) {
                    c->klass->drained_begin(c);
                }
            }
        }
    }
    list_for_each_entry(c, &bs->parents, parent_link) {
        if (c->klass->parent_is_node) {
            quiesce_begin(c->opaque);
        }
    }
}

static void quiesce_end(BlockNode *bs)
{
    BlockChild *c;
    int old = atomic_fetch_sub(&bs->quiesce_counter, 1);

    assert(old > 0);
    if (old == 1) {
        if (bs->drv && bs->drv->drained_end) {
            bs->drv->drained_end(bs);
        }
        list_for_each_entry(c, &bs->parents, parent_link) {
            if (!c->klass->parent_is_node && c->quiesced_parent) {
                c->quiesced_parent = false;
                if (c->klass->drained_end) {
                    c->klass->drained_end(c);
                }
            }
        }
        /* The reference keeps bs alive until the bottom half ran (a user
         * may detach meanwhile).  No waiters, no bottom half: a node being
         * closed (refcnt 0) has no parents, so it has none. */
        if (atomic_load(&bs->n_postponed) > 0) {
            assert(bs->refcnt > 0);
            bdrv_ref(bs);
            aio_bh_schedule_oneshot(bs->ctx, restart_postponed_bh, bs);
        }
    }
    list_for_each_entry(c, &bs->parents, parent_link) {
        if (c->klass->parent_is_node) {
            quiesce_end(c->opaque);
        }
    }
}

/* Requests in flight on bs or above, or an external parent still busy. */
static bool drain_busy(BlockNode *bs)
{
    BlockChild *c;

    if (atomic_load(&bs->in_flight) > 0) {
        return true;
    }
    list_for_each_entry(c, &bs->parents, parent_link) {
        if (c->klass->parent_is_node) {
            if (drain_busy(c->opaque)) {
                return true;
            }
        } else if (c->klass->drained_poll && c->klass->drained_poll(c)) {
            return true;
        }
    }
    return false;
}

static void co_drain_bh(void *opaque)
{
    BdrvCoDrain *d = opaque;

    if (d->begin) {
        bdrv_drained_begin(d->bs);
    } else {
        bdrv_drained_end(d->bs);
    }
    d->done = true;
    aio_co_wake(d->co);
}

void coroutine_fn bdrv_co_drain_start(BdrvCoDrain *d, BlockNode *bs,
                                      bool begin)
{
    *d = (BdrvCoDrain) { .bs = bs, .co = coroutine_self(), .begin = begin };
    assert(d->co);
    aio_bh_schedule_oneshot(aio_main_context(), co_drain_bh, d);
}

/* A coroutine in the main loop (a job) must not poll inside itself: the
 * section is entered from a bottom half while it waits. */
static bool coroutine_mixed_fn co_drain(BlockNode *bs, bool begin)
{
    BdrvCoDrain d;

    if (!coroutine_in_coroutine()) {
        return false;
    }
    bdrv_co_drain_start(&d, bs, begin);
    while (!d.done) {
        coroutine_yield();
    }
    return true;
}

void bdrv_drained_begin(BlockNode *bs)
{
    if (co_drain(bs, true)) {
        return;
    }
    assert(aio_current_context() == aio_main_context());
    quiesce_begin(bs);
    AIO_WAIT_WHILE(aio_main_context(), drain_busy(bs));
}

void bdrv_drained_end(BlockNode *bs)
{
    if (co_drain(bs, false)) {
        return;
    }
    quiesce_end(bs);
}

bool bdrv_is_quiesced(BlockNode *bs)
{
    return atomic_load(&bs->quiesce_counter) > 0;
}

void bdrv_drain_all_begin(void)
{
    for (BlockNode *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        quiesce_begin(bs);
    }
    for (BlockNode *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        AIO_WAIT_WHILE(aio_main_context(), drain_busy(bs));
    }
}

void bdrv_drain_all_end(void)
{
    for (BlockNode *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        quiesce_end(bs);
    }
}

/* ---- edges appearing under / leaving a quiesced node ---- */

void bdrv_drain_child_attached(BlockChild *c)
{
    int k = atomic_load(&c->node->quiesce_counter);

    if (c->klass->parent_is_node) {
        for (int i = 0; i < k; i++) {
            quiesce_begin(c->opaque);
        }
    } else if (k > 0 && !c->quiesced_parent) {
        c->quiesced_parent = true;
        if (c->klass->drained_begin) {
            c->klass->drained_begin(c);
        }
    }
}

void bdrv_drain_child_moved(BlockChild *c, BlockNode *from)
{
    int k_old = atomic_load(&from->quiesce_counter);
    int k_new = atomic_load(&c->node->quiesce_counter);

    if (c->klass->parent_is_node) {
        for (int i = k_old; i < k_new; i++) {
            quiesce_begin(c->opaque);
        }
        for (int i = k_new; i < k_old; i++) {
            quiesce_end(c->opaque);
        }
    } else if (k_new > 0 && !c->quiesced_parent) {
        c->quiesced_parent = true;
        if (c->klass->drained_begin) {
            c->klass->drained_begin(c);
        }
    } else if (k_new == 0 && c->quiesced_parent) {
        c->quiesced_parent = false;
        if (c->klass->drained_end) {
            c->klass->drained_end(c);
        }
    }
}

void bdrv_drain_child_detaching(BlockChild *c)
{
    int k = atomic_load(&c->node->quiesce_counter);

    if (c->klass->parent_is_node) {
        for (int i = 0; i < k; i++) {
            quiesce_end(c->opaque);
        }
    } else if (c->quiesced_parent) {
        c->quiesced_parent = false;
        if (c->klass->drained_end) {
            c->klass->drained_end(c);
        }
    }
}

void bdrv_drained_set_begin(BdrvDrainedSet *set, bool iothread_only)
{
    size_t cap = 0;

    set->n = 0;
    for (BlockNode *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        cap++;
    }
    set->nodes = bj_calloc(cap ? cap : 1, sizeof(*set->nodes));
    for (BlockNode *bs = bdrv_next_node(NULL); bs && set->n < cap;
         bs = bdrv_next_node(bs)) {
        if (iothread_only && bs->ctx == aio_main_context()) {
            continue;
        }
        bdrv_ref(bs);
        set->nodes[set->n++] = bs;
    }
    /* References first: a drain may run callbacks that drop nodes. */
    for (size_t i = 0; i < set->n; i++) {
        bdrv_drained_begin(set->nodes[i]);
    }
}

void bdrv_drained_set_end(BdrvDrainedSet *set)
{
    for (size_t i = 0; i < set->n; i++) {
        bdrv_drained_end(set->nodes[i]);
    }
    for (size_t i = 0; i < set->n; i++) {
        bdrv_unref(set->nodes[i]);
    }
    free(set->nodes);
    set->nodes = NULL;
    set->n = 0;
}
