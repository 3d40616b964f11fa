/*
 * Resync: the stored copies of persistent bitmaps shrink back to the
 * in-memory bits (docs/bitmaps.md, "After a crash").
 *
 * Mark-before-write (qcow2-bitmap-cc.c) only ever adds bits to the
 * stored copies, so after a clear or the end of an incremental backup
 * they would keep every granule written since the image was armed until
 * a clean close.  A bit
 * removal (bdrv_dirty_bitmap_bits_removed) asks for a resync: about a
 * second after the last removal, at most once a second, the node is
 * drained and every armed bitmap's changed data clusters are rewritten in
 * place with its exact bits.
 *
 * Why the drain: a write that has passed mark-before-write sets its bits
 * in the in-memory bitmaps only when it completes (io.c marks them before
 * its in-flight count drops).  Computed from memory while such a write is
 * out, the exact bits would lack its granules.  With the node drained,
 * every write that changed the image is in the in-memory bitmaps, and no
 * new one can start until the stored copies are written.
 */
#include <errno.h>
#include <string.h>

#include "aio/aio.h"
#include "block/dirty-bitmap-named.h"
#include "block/drivers/qcow2/qcow2-bitmap-int.h"
#include "util/iov.h"
#include "util/list.h"
#include "util/log.h"

#define RESYNC_DELAY_NS     1000000000ll   /* after the last removal */
#define RESYNC_MAX_WAIT_NS  5000000000ll   /* removals keep coming */
#define RESYNC_JOB_WAIT_NS  30000000000ll  /* a block job uses the node */

static uint64_t nb_granules(BDRVQcow2State *s, unsigned gb)
{
    return (s->hdr.size + (1ull << gb) - 1) >> gb;
}

/* In the node's context (its state may change under a batch there). */
static bool resync_possible(BDRVQcow2State *s)
{
    Qcow2Bitmaps *b = s->bitmaps;

    return b && !b->foreign && b->store_on_close && b->armed &&
           !b->cc_err && !s->broken && !s->bs->read_only && b->nsh;
}

/* Main loop: what only the main loop changes (open, reopen, close). */
static bool resync_may_help(BDRVQcow2State *s)
{
    return s->bitmaps && !s->bitmaps->foreign && !s->bs->read_only &&
           s->bs->refcnt > 0;
}

/* Whether a drain of bs would pause a block job: one is a parent of bs
 * or of a node above it (exports and nodes just wait). */
static bool job_above(BlockNode *bs, int depth)
{
    BlockChild *c;

    if (depth > 64) {
        return true;
    }
    list_for_each_entry(c, &bs->parents, parent_link) {
        if (c->klass->parent_is_node) {
            if (job_above(c->opaque, depth + 1)) {
                return true;
            }
        } else if (c->klass->drained_begin &&
                   !c->klass->postpone_requests_when_drained) {
            return true;
        }
    }
    return false;
}

/*
 * Rewrites, in place and with FUA, the data clusters whose stored bits
 * differ from the exact ones (the in-memory bits, and the successor's
 * while a backup has the bitmap frozen).  Node drained, s->lock held.
 *
 * A crash at any point leaves each cluster old or new, and both are
 * supersets of the in-memory bits: the old one because of the invariant
 * (and bits only left memory since), the new one because it is those
 * bits, and no write can add any while the node is drained.  A command
 * that adds bits meanwhile (merge) stores them through cc_rewrite, which
 * waits for this one.
 */
static int coroutine_fn cc_resync(BDRVQcow2State *s)
{
    Qcow2Bitmaps *b = s->bitmaps;
    const uint64_t cs = s->g.cluster_size;
    int ret = 0;

    qcow2_bm_cc_acquire(b);
    for (uint32_t i = 0; ret >= 0 && i < b->nsh && resync_possible(s); i++) {
        Qcow2BitmapShadow *sh = &b->sh[i];
        BdrvDirtyBitmap *bm = bdrv_find_dirty_bitmap(s->bs, sh->name);
        if (!bm || !bdrv_dirty_bitmap_persistent(bm) ||
            bdrv_dirty_bitmap_inconsistent(bm) ||
            bdrv_dirty_bitmap_granularity(bm) != (1ull << sh->gran_bits) ||
            sh->nbits != nb_granules(s, sh->gran_bits)) {
            continue;          /* the next rewrite deals with it */
        }
        uint64_t len = (uint64_t)sh->table_size * cs;
        uint8_t *exact = blk_aligned_alloc(4096, len ? len : cs);
        memset(exact, 0, len);
        qcow2_bm_or_bits(s, exact, sh->gran_bits, bm);
        if (bdrv_dirty_bitmap_successor(bm)) {
            qcow2_bm_or_bits(s, exact, sh->gran_bits,
                             bdrv_dirty_bitmap_successor(bm));
        }
        for (uint32_t c = 0; ret >= 0 && c < sh->table_size; c++) {
            uint8_t *now = sh->bits + (uint64_t)c * cs;
            if (!sh->dirty[c] && !memcmp(now, exact + (uint64_t)c * cs, cs)) {
                continue;
            }
            IOVector v;
            iov_vec_init_buf(&v, exact + (uint64_t)c * cs, cs);
            ret = bdrv_co_pwritev(s->bs->file, (int64_t)sh->data_off[c],
                                  (int64_t)cs, &v, BLK_REQ_FUA);
            if (ret >= 0) {
                memcpy(now, exact + (uint64_t)c * cs, cs);
                sh->dirty[c] = false;
            }
        }
        free(exact);
    }
    if (ret < 0) {
        /* The cluster on disk may hold fewer bits than the shadow says:
         * refuse writes from here on, as after a failed batch. */
        b->cc_err = ret;
        log_error("qcow2: node '%s': could not update persistent bitmaps: "
                  "%s", s->bs->node_name, strerror(-ret));
    }
    qcow2_bm_cc_release(b);
    return ret;
}

/* In the node's context, holding s->lock. */
static int coroutine_fn resync_locked(BDRVQcow2State *s)
{
    return resync_possible(s) ? cc_resync(s) : 0;
}

/* Main loop.  The node may live in an iothread: its state is read
 * there, by resync_locked, once the node is drained. */
static void resync_timer_cb(void *opaque)
{
    BDRVQcow2State *s = opaque;
    Qcow2Bitmaps *b = s->bitmaps;
    BlockNode *bs = s->bs;
    int64_t now = clock_ns();

    if (!resync_may_help(s)) {
        b->resync_first_ns = 0;
        return;
    }
    /* Fired inside our own drained section (a nested poll), or a block
     * job would be paused by the drain (its status would show it): later,
     * and past RESYNC_JOB_WAIT_NS not later any more. */
    if (b->resync_running ||
        (job_above(bs, 0) &&
         now - b->resync_first_ns < RESYNC_JOB_WAIT_NS)) {
        aio_timer_mod(b->resync_timer, now + RESYNC_DELAY_NS);
        return;
    }
    b->resync_first_ns = 0;
    b->resync_running = true;
    bdrv_ref(bs);
    bdrv_drained_begin(bs);
    qcow2_run_locked(s, resync_locked);
    bdrv_drained_end(bs);
    /* Still ours: the reference kept the node open. */
    b = s->bitmaps;
    if (b) {
        b->resync_running = false;
        b->resync_last_ns = clock_ns();
    }
    bdrv_unref(bs);      /* may close the node, and free this timer */
}

void qcow2_dirty_bitmaps_resync_later(BlockNode *bs)
{
    BDRVQcow2State *s;
    Qcow2Bitmaps *b;
    int64_t now, when;

    /* The timer belongs to the main loop; a shrink of an iothread node
     * (qcow2's resize, in its thread) leaves the bits to the close. */
    if (!aio_context_in_home_thread(aio_main_context())) {
        return;
    }
    s = bs->opaque;
    if (!resync_may_help(s)) {
        return;
    }
    b = s->bitmaps;
    if (!b->resync_timer) {
        b->resync_timer = aio_timer_new(aio_main_context(), resync_timer_cb,
                                        s);
    }
    now = clock_ns();
    if (!b->resync_first_ns) {
        b->resync_first_ns = now;
    }
    /* Coalesced: a second after the last removal, but no later than
     * RESYNC_MAX_WAIT_NS after the first one waiting, and never sooner
     * than a second after the previous resync. */
    when = now + RESYNC_DELAY_NS;
    if (when > b->resync_first_ns + RESYNC_MAX_WAIT_NS) {
        when = b->resync_first_ns + RESYNC_MAX_WAIT_NS;
    }
    if (b->resync_last_ns && when < b->resync_last_ns + RESYNC_DELAY_NS) {
        when = b->resync_last_ns + RESYNC_DELAY_NS;
    }
    aio_timer_mod(b->resync_timer, when);
}

void qcow2_bm_cc_free_resync(Qcow2Bitmaps *b)
{
    if (b->resync_timer) {
        aio_timer_free(b->resync_timer);
        b->resync_timer = NULL;
    }
}
