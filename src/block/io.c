/*
 * The request path: range and permission checks, alignment (read-modify-
 * write for unaligned writes), splitting by max_transfer, in-flight
 * accounting on every node a request passes, and the fallbacks for drivers
 * that leave a callback unset.
 *
 *   bdrv_co_pwritev(c)            checks, counts in c->node->in_flight
 *     -> align (RMW)              bounce buffer when unaligned
 *       -> split by max_transfer
 *         -> drv->co_pwritev      (a filter without it: its file child)
 *
 * Concurrent unaligned writes to the same block are not serialised against
 * each other (RMW of one may undo the other's bytes in that block); users
 * that need that (guests do, NBD clients rarely) send aligned requests.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/block.h"
#include "block/dirty-bitmap.h"
#include "util/alloc.h"
#include "util/cleanup.h"
#include "util/event.h"

#define ZERO_CHUNK (1 << 20)

static int check_range(BlockNode *bs, int64_t offset, int64_t bytes)
{
    if (offset < 0 || bytes < 0 || offset > INT64_MAX - bytes) {
        return -EIO;
    }
    if (offset + bytes > bs->total_bytes) {
        return -EIO;
    }
    return 0;
}

/* The node an edge points to, read where a request starts: the main loop
 * may move the edge meanwhile (a pivot, a job filter going away), with an
 * atomic store (graph.c, move_edge). */
static inline BlockNode *child_node(BlockChild *c)
{
    return __atomic_load_n(&c->node, __ATOMIC_ACQUIRE);
}

/*
 * Counts the request in and returns the node it goes to.  A postponed
 * request may come back on another node (a pivot moved its edge while it
 * waited): then the checks made on the old node are made again.
 */
static BlockNode *coroutine_fn request_begin(BlockChild *c, BlockNode *bs,
                                             int64_t offset, int64_t bytes,
                                             bool write, int *ret)
{
    BlockNode *now;

    bdrv_co_wait_unquiesced(c);
    now = child_node(c);
    *ret = 0;
    if (now != bs) {
        *ret = check_range(now, offset, bytes);
        if (*ret == 0 && write && now->read_only) {
            *ret = -EPERM;
        }
        if (*ret < 0) {
            bdrv_dec_in_flight(now);
        }
    }
    return now;
}

static size_t mem_align(BlockNode *bs)
{
    size_t a = bs->bl.min_mem_alignment;

    return a < 64 ? 64 : a;
}

static int64_t align_down(int64_t x, int64_t a)
{
    return x - x % a;
}

static int64_t align_up(int64_t x, int64_t a)
{
    return align_down(x + a - 1, a);
}

/* ---- accounting (query-blockstats) and the write threshold ---- */

/* A node's counters have one writer, its context's thread: a relaxed load
 * and store (no locked instruction) keeps readers in the main loop safe. */
static void stat_add(_Atomic uint64_t *p, uint64_t v)
{
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) +
                          v, memory_order_relaxed);
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void acct_done(BlockNode *bs, int type, int64_t offset, int64_t bytes,
                      int64_t start_ns, int ret)
{
    BlockNodeStats *st = &bs->stats;

    if (ret < 0) {
        stat_add(&st->failed_ops[type], 1);
        return;
    }
    stat_add(&st->bytes[type], (uint64_t)bytes);
    stat_add(&st->ops[type], 1);
    stat_add(&st->total_time_ns[type], (uint64_t)(now_ns() - start_ns));
    if (type == BLOCK_ACCT_WRITE &&
        (uint64_t)(offset + bytes) >
        atomic_load_explicit(&st->wr_highest_offset, memory_order_relaxed)) {
        atomic_store_explicit(&st->wr_highest_offset,
                              (uint64_t)(offset + bytes),
                              memory_order_relaxed);
    }
}

/* ---- guests' requests (BlockNode.guest, for jobs that yield) ---- */

/* Counts a guest's request in at bs, the node it entered once
 * request_begin let it through (NULL: not a guest's).  Its latency counts
 * from t0, taken before request_begin, so a wait in a drained section
 * counts; the node is held by the request's in-flight count until
 * guest_end, which comes before bdrv_dec_in_flight. */
static bool is_guest(BlockChild *c)
{
    return c->klass && c->klass->guest_io;
}

static int64_t guest_t0(BlockChild *c)
{
    return is_guest(c) ? now_ns() : 0;
}

static BlockNode *guest_begin(BlockChild *c, BlockNode *bs)
{
    if (!is_guest(c)) {
        return NULL;
    }
    atomic_store_explicit(&bs->guest.in_flight,
                          atomic_load_explicit(&bs->guest.in_flight,
                                               memory_order_relaxed) + 1,
                          memory_order_relaxed);
    return bs;
}

static void guest_end(BlockNode *bs, int64_t t0)
{
    if (!bs) {
        return;
    }
    stat_add(&bs->guest.ops, 1);
    stat_add(&bs->guest.total_ns, (uint64_t)(now_ns() - t0));
    atomic_store_explicit(&bs->guest.in_flight,
                          atomic_load_explicit(&bs->guest.in_flight,
                                               memory_order_relaxed) - 1,
                          memory_order_relaxed);
}

typedef struct ThresholdEvent {
    char node_name[sizeof(((BlockNode *)0)->node_name)];
    uint64_t exceeded, threshold;
} ThresholdEvent;

static void threshold_event(void *opaque)
{
    ThresholdEvent *t = opaque;

    event_emit("BLOCK_WRITE_THRESHOLD",
               json_pack("{s:s, s:I, s:I}", "node-name", t->node_name,
                         "amount-exceeded", (json_int_t)t->exceeded,
                         "write-threshold", (json_int_t)t->threshold));
    free(t);
}

/* A write or discard ending past the threshold: the event, once (the
 * threshold is cleared, as qemu does).  Events leave from the main loop. */
static void check_write_threshold(BlockNode *bs, int64_t offset,
                                  int64_t bytes)
{
    uint64_t t = atomic_load(&bs->write_threshold);
    uint64_t end = (uint64_t)(offset + bytes);

    if (!t || end <= t ||
        !atomic_compare_exchange_strong(&bs->write_threshold, &t, 0)) {
        return;
    }
    ThresholdEvent *e = bj_malloc(sizeof(*e));
    snprintf(e->node_name, sizeof(e->node_name), "%s", bs->node_name);
    e->exceeded = end - t;
    e->threshold = t;
    if (bs->ctx == aio_main_context()) {
        threshold_event(e);
    } else {
        aio_bh_schedule_oneshot(aio_main_context(), threshold_event, e);
    }
}

void bdrv_set_write_threshold(BlockNode *bs, uint64_t threshold)
{
    atomic_store(&bs->write_threshold, threshold);
}

/* ---- driver calls, split by max_transfer ---- */

typedef int coroutine_fn RwFn(BlockNode *bs, int64_t offset, int64_t bytes,
                              IOVector *qiov, unsigned flags);

static int coroutine_fn split_rw(BlockNode *bs, RwFn *fn, int64_t offset,
                                 int64_t bytes, IOVector *qiov, size_t qoff,
                                 unsigned flags)
{
    int64_t max = bs->bl.max_transfer;

    if (max > 0) {
        max = align_down(max, bs->bl.request_alignment);
    }
    if (max <= 0) {
        max = INT64_MAX;
    }
    if (qoff == 0 && (size_t)bytes == qiov->size && bytes <= max) {
        return fn(bs, offset, bytes, qiov, flags);
    }
    while (bytes > 0) {
        int64_t n = bytes < max ? bytes : max;
        IOVector sub;
        int ret;

        iov_vec_init(&sub, qiov->niov);
        iov_vec_concat(&sub, qiov, qoff, n);
        ret = fn(bs, offset, n, &sub, flags);
        iov_vec_destroy(&sub);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        qoff += n;
        bytes -= n;
    }
    return 0;
}

/* The driver's own read or write, else its file's (a driver without one
 * passes the request down unchanged). */
static int coroutine_fn drv_rw(BlockNode *bs, bool write, int64_t offset,
                               int64_t bytes, IOVector *qiov, unsigned flags)
{
    RwFn *own = write ? bs->drv->co_pwritev : bs->drv->co_preadv;

    if (own) {
        return own(bs, offset, bytes, qiov, flags);
    }
    if (!bs->file) {
        return -ENOTSUP;
    }
    return write ? bdrv_co_pwritev(bs->file, offset, bytes, qiov, flags)
                 : bdrv_co_preadv(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn drv_preadv(BlockNode *bs, int64_t offset,
                                   int64_t bytes, IOVector *qiov,
                                   unsigned flags)
{
    return drv_rw(bs, false, offset, bytes, qiov, flags);
}

static int coroutine_fn drv_pwritev(BlockNode *bs, int64_t offset,
                                    int64_t bytes, IOVector *qiov,
                                    unsigned flags)
{
    return drv_rw(bs, true, offset, bytes, qiov, flags);
}

/* ---- reads ---- */

static int coroutine_fn aligned_preadv(BlockNode *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       unsigned flags)
{
    int64_t align = bs->bl.request_alignment;
    int64_t start = align_down(offset, align);
    int64_t end = align_up(offset + bytes, align);
    IOVector bounce;
    void *buf;
    int ret;

    if (start == offset && end == offset + bytes) {
        return split_rw(bs, drv_preadv, offset, bytes, qiov, 0, flags);
    }
    buf = blk_aligned_alloc(mem_align(bs), end - start);
    iov_vec_init_buf(&bounce, buf, end - start);
    ret = split_rw(bs, drv_preadv, start, end - start, &bounce, 0, flags);
    if (ret >= 0) {
        iov_vec_from_buf(qiov, 0, (char *)buf + (offset - start), bytes);
    }
    free(buf);
    return ret;
}

int coroutine_fn bdrv_co_preadv(BlockChild *c, int64_t offset, int64_t bytes,
                                IOVector *qiov, unsigned flags)
{
    BlockNode *bs = child_node(c);
    int ret = check_range(bs, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    assert(qiov->size >= (size_t)bytes);
    if (bytes == 0) {
        return 0;
    }
    int64_t tg = guest_t0(c);
    bs = request_begin(c, bs, offset, bytes, false, &ret);
    if (ret < 0) {
        return ret;
    }
    BlockNode *g = guest_begin(c, bs);
    int64_t t0 = now_ns();
    ret = aligned_preadv(bs, offset, bytes, qiov, flags);
    acct_done(bs, BLOCK_ACCT_READ, offset, bytes, t0, ret);
    guest_end(g, tg);
    bdrv_dec_in_flight(bs);
    return ret;
}

/* ---- writes ---- */

static int coroutine_fn aligned_pwritev(BlockNode *bs, int64_t offset,
                                        int64_t bytes, IOVector *qiov,
                                        size_t qoff, unsigned flags)
{
    int64_t align = bs->bl.request_alignment;
    int64_t start = align_down(offset, align);
    int64_t end = align_up(offset + bytes, align);
    IOVector bounce;
    void *buf;
    int ret = 0;

    if (start == offset && end == offset + bytes) {
        return split_rw(bs, drv_pwritev, offset, bytes, qiov, qoff, flags);
    }
    /* Read the partial head and tail blocks, patch, write back whole. */
    buf = blk_aligned_alloc(mem_align(bs), end - start);
    if (start != offset) {
        iov_vec_init_buf(&bounce, buf, align);
        ret = split_rw(bs, drv_preadv, start, align, &bounce, 0, 0);
    }
    if (ret >= 0 && end != offset + bytes &&
        (end - align > start || start == offset)) {
        iov_vec_init_buf(&bounce, (char *)buf + (end - align - start), align);
        ret = split_rw(bs, drv_preadv, end - align, align, &bounce, 0, 0);
    }
    if (ret >= 0) {
        iov_vec_to_buf(qiov, qoff, (char *)buf + (offset - start), bytes);
        iov_vec_init_buf(&bounce, buf, end - start);
        ret = split_rw(bs, drv_pwritev, start, end - start, &bounce, 0,
                       flags);
    }
    free(buf);
    return ret;
}

static int coroutine_fn do_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                         int64_t bytes, unsigned flags);

static bool write_allowed(BlockChild *c, unsigned flags)
{
    if (c->perm & BLK_PERM_WRITE) {
        return true;
    }
    return (flags & BLK_REQ_WRITE_UNCHANGED) &&
           (c->perm & BLK_PERM_WRITE_UNCHANGED);
}

/* What every write-like request checks first: 0 or -errno. */
static int check_write(BlockChild *c, int64_t offset, int64_t bytes,
                       unsigned flags)
{
    BlockNode *bs = child_node(c);
    int ret = check_range(bs, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    if (bs->read_only) {
        return -EPERM;
    }
    assert(write_allowed(c, flags));
    return 0;
}

int coroutine_fn bdrv_co_pwritev(BlockChild *c, int64_t offset,
                                 int64_t bytes, IOVector *qiov,
                                 unsigned flags)
{
    BlockNode *bs = child_node(c);
    int ret = check_write(c, offset, bytes, flags);

    if (ret < 0) {
        return ret;
    }
    assert(qiov->size >= (size_t)bytes);
    if (bytes == 0) {
        return 0;
    }
    int64_t tg = guest_t0(c);
    bs = request_begin(c, bs, offset, bytes, true, &ret);
    if (ret < 0) {
        return ret;
    }
    BlockNode *g = guest_begin(c, bs);
    check_write_threshold(bs, offset, bytes);
    int64_t t0 = now_ns();
    if (bs->detect_zeroes && !(flags & BLK_REQ_WRITE_UNCHANGED) &&
        iov_is_zero(qiov->iov, qiov->niov, 0, bytes)) {
        unsigned zflags = flags & BLK_REQ_FUA;
        if (bs->detect_zeroes == 2) {
            zflags |= BLK_REQ_MAY_UNMAP;
        }
        ret = do_pwrite_zeroes(bs, offset, bytes, zflags);
    } else {
        ret = aligned_pwritev(bs, offset, bytes, qiov, 0, flags);
    }
    acct_done(bs, BLOCK_ACCT_WRITE, offset, bytes, t0, ret);
    bdrv_dirty_bitmaps_mark(bs, offset, bytes);
    guest_end(g, tg);
    bdrv_dec_in_flight(bs);
    return ret;
}

/* ---- write zeroes ---- */

static int coroutine_fn write_zero_buffers(BlockNode *bs, int64_t offset,
                                           int64_t bytes, unsigned flags)
{
    int64_t chunk = ZERO_CHUNK;
    void *buf;
    int ret = 0;

    if (bytes <= 0) {
        return 0;
    }
    if (bytes < chunk) {
        chunk = bytes;
    }
    buf = blk_aligned_alloc(mem_align(bs), chunk);
    memset(buf, 0, chunk);
    while (bytes > 0 && ret >= 0) {
        int64_t n = bytes < chunk ? bytes : chunk;
        IOVector v;

        iov_vec_init_buf(&v, buf, n);
        ret = aligned_pwritev(bs, offset, n, &v, 0, flags & BLK_REQ_FUA);
        offset += n;
        bytes -= n;
    }
    free(buf);
    return ret;
}

static int coroutine_fn do_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                         int64_t bytes, unsigned flags)
{
    int64_t align = bs->bl.request_alignment;
    int64_t head_end, tail_start;
    int ret;

    if (!bs->drv->co_pwrite_zeroes && bs->drv->is_filter && bs->file) {
        return bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
    }
    if (bs->bl.pwrite_zeroes_alignment > align) {
        align = bs->bl.pwrite_zeroes_alignment;
    }
    head_end = align_up(offset, align);
    tail_start = align_down(offset + bytes, align);
    if (head_end >= tail_start) {
        /* Nothing aligned in the middle: the driver may still manage. */
        head_end = tail_start = offset;
    }
    if (head_end > offset) {
        if (flags & BLK_REQ_NO_FALLBACK) {
            return -ENOTSUP;
        }
        ret = write_zero_buffers(bs, offset, head_end - offset, flags);
        if (ret < 0) {
            return ret;
        }
    }
    if (tail_start == offset && head_end == offset) {
        tail_start = offset + bytes;
    }
    ret = -ENOTSUP;
    if (bs->drv->co_pwrite_zeroes) {
        ret = bs->drv->co_pwrite_zeroes(bs, head_end, tail_start - head_end,
                                        flags);
    }
    if (ret == -ENOTSUP && !(flags & BLK_REQ_NO_FALLBACK)) {
        ret = write_zero_buffers(bs, head_end, tail_start - head_end, flags);
    }
    if (ret < 0) {
        return ret;
    }
    if (tail_start < offset + bytes) {
        if (flags & BLK_REQ_NO_FALLBACK) {
            return -ENOTSUP;
        }
        ret = write_zero_buffers(bs, tail_start, offset + bytes - tail_start,
                                 flags);
    }
    return ret;
}

int coroutine_fn bdrv_co_pwrite_zeroes(BlockChild *c, int64_t offset,
                                       int64_t bytes, unsigned flags)
{
    BlockNode *bs = child_node(c);
    int ret = check_write(c, offset, bytes, flags);

    if (ret < 0) {
        return ret;
    }
    if (bytes == 0) {
        return 0;
    }
    if (!bs->discard_unmap) {
        flags &= ~BLK_REQ_MAY_UNMAP;
    }
    int64_t tg = guest_t0(c);
    bs = request_begin(c, bs, offset, bytes, true, &ret);
    if (ret < 0) {
        return ret;
    }
    BlockNode *g = guest_begin(c, bs);
    check_write_threshold(bs, offset, bytes);
    int64_t t0 = now_ns();
    ret = do_pwrite_zeroes(bs, offset, bytes, flags);
    acct_done(bs, BLOCK_ACCT_WRITE, offset, bytes, t0, ret);
    bdrv_dirty_bitmaps_mark(bs, offset, bytes);
    guest_end(g, tg);
    bdrv_dec_in_flight(bs);
    return ret;
}

/* ---- discard ---- */

int coroutine_fn bdrv_co_pdiscard(BlockChild *c, int64_t offset,
                                  int64_t bytes)
{
    BlockNode *bs = child_node(c);
    int64_t align = bs->bl.pdiscard_alignment;
    int64_t start, end;
    /* Flags 0: a discard needs the full write permission. */
    int ret = check_write(c, offset, bytes, 0);

    if (ret < 0) {
        return ret;
    }
    /* discard=ignore (the default) drops discards here, as qemu does. */
    if (bytes == 0 || !bs->discard_unmap) {
        return 0;
    }
    if (align < bs->bl.request_alignment) {
        align = bs->bl.request_alignment;
    }
    /* Discard is advisory: only whole aligned blocks go down. */
    start = align_up(offset, align);
    end = align_down(offset + bytes, align);
    if (start >= end) {
        return 0;
    }
    int64_t tg = guest_t0(c);
    bs = request_begin(c, bs, start, end - start, true, &ret);
    if (ret < 0) {
        return ret;
    }
    BlockNode *g = guest_begin(c, bs);
    check_write_threshold(bs, start, end - start);
    int64_t t0 = now_ns();
    if (bs->drv->co_pdiscard) {
        ret = bs->drv->co_pdiscard(bs, start, end - start);
    } else if (bs->drv->is_filter && bs->file) {
        ret = bdrv_co_pdiscard(bs->file, start, end - start);
    } else {
        ret = 0;
    }
    if (ret == -ENOTSUP) {
        ret = 0;
    }
    acct_done(bs, BLOCK_ACCT_UNMAP, start, end - start, t0, ret);
    bdrv_dirty_bitmaps_mark(bs, start, end - start);
    guest_end(g, tg);
    bdrv_dec_in_flight(bs);
    return ret;
}

/* ---- flush ---- */

int coroutine_fn bdrv_co_flush(BlockNode *bs)
{
    BlockChild *c;
    int ret = 0;

    bdrv_inc_in_flight(bs);
    int64_t t0 = now_ns();
    if (bs->drv->co_flush && !bs->cache_no_flush && !bs->read_only) {
        ret = bs->drv->co_flush(bs);
    }
    list_for_each_entry(c, &bs->children, child_link) {
        int r = bdrv_co_flush(child_node(c));
        if (ret >= 0 && r < 0) {
            ret = r;
        }
    }
    acct_done(bs, BLOCK_ACCT_FLUSH, 0, 0, t0, ret);
    bdrv_dec_in_flight(bs);
    return ret;
}

void coroutine_fn bdrv_co_start_writeback(BlockNode *bs)
{
    BlockChild *c;

    if (bs->read_only || bs->cache_no_flush) {
        return;
    }
    bdrv_inc_in_flight(bs);
    if (bs->drv->co_start_writeback) {
        bs->drv->co_start_writeback(bs);
    }
    list_for_each_entry(c, &bs->children, child_link) {
        bdrv_co_start_writeback(c->node);
    }
    bdrv_dec_in_flight(bs);
}

/* ---- block status ---- */

int coroutine_fn bdrv_co_block_status(BlockNode *bs, int64_t offset,
                                      int64_t bytes, int64_t *pnum,
                                      int64_t *map, BlockNode **file)
{
    int64_t len = bs->total_bytes;
    int64_t local_map = 0;
    BlockNode *local_file = NULL;
    int ret;

    if (offset < 0 || bytes < 0) {
        return -EIO;
    }
    if (offset >= len || bytes == 0) {
        *pnum = 0;
        return offset >= len ? BLK_STATUS_EOF : 0;
    }
    if (bytes > len - offset) {
        bytes = len - offset;
    }
    map = map ? map : &local_map;
    file = file ? file : &local_file;
    bdrv_inc_in_flight(bs);
    if (bs->drv->co_block_status) {
        ret = bs->drv->co_block_status(bs, offset, bytes, pnum, map, file);
    } else if (bs->drv->is_filter && bs->file) {
        ret = bdrv_co_block_status(bs->file->node, offset, bytes, pnum, map,
                                   file);
    } else {
        *pnum = bytes;
        *map = offset;
        *file = bs;
        ret = BLK_STATUS_DATA | BLK_STATUS_ALLOCATED |
              BLK_STATUS_OFFSET_VALID;
    }
    bdrv_dec_in_flight(bs);
    if (ret < 0) {
        return ret;
    }
    assert(*pnum > 0 && *pnum <= bytes);
    if (offset + *pnum >= len) {
        ret |= BLK_STATUS_EOF;
    }
    return ret;
}

/* ---- size ---- */

int coroutine_fn bdrv_co_truncate(BlockChild *c, int64_t size, Error **errp)
{
    BlockNode *bs = child_node(c);
    int ret;

    if (size < 0) {
        error_setg(errp, "Image size cannot be negative");
        return -EINVAL;
    }
    if (size > BDRV_MAX_LENGTH) {
        error_setg(errp, "offset(%" PRId64 ") exceeds maximum(%" PRId64
                   ")", size, (int64_t)BDRV_MAX_LENGTH);
        return -EINVAL;
    }
    if (bs->read_only) {
        error_setg(errp, "Image is read-only");
        return -EACCES;
    }
    assert(c->perm & BLK_PERM_RESIZE);
    if (!bdrv_dirty_bitmaps_check_resize(bs, size, errp)) {
        return -EFBIG;
    }
    bdrv_inc_in_flight(bs);
    if (bs->drv->co_truncate) {
        ret = bs->drv->co_truncate(bs, size, errp);
    } else if (bs->drv->is_filter && bs->file) {
        ret = bdrv_co_truncate(bs->file, size, errp);
    } else {
        error_setg(errp, "Image format driver does not support resize");
        ret = -ENOTSUP;
    }
    if (ret >= 0) {
        int64_t len = bs->drv->co_getlength ? bs->drv->co_getlength(bs)
                                            : size;
        bs->total_bytes = len >= 0 ? len : size;
        /* Writes to a grown tail must reach the bitmaps. */
        bdrv_dirty_bitmaps_truncate(bs, bs->total_bytes);
    }
    bdrv_dec_in_flight(bs);
    return ret;
}

int64_t bdrv_getlength(BlockNode *bs)
{
    return bs->total_bytes;
}

/* ---- synchronous wrappers ---- */

enum { SYNC_READ, SYNC_WRITE, SYNC_FLUSH };

typedef struct SyncReq {
    int kind;
    BlockChild *c;
    BlockNode *bs;
    int64_t offset, bytes;
    void *buf;
    unsigned flags;
    int ret;
} SyncReq;

static void coroutine_fn sync_entry(void *opaque)
{
    SyncReq *r = opaque;
    IOVector v;

    switch (r->kind) {
    case SYNC_READ:
        iov_vec_init_buf(&v, r->buf, r->bytes);
        r->ret = bdrv_co_preadv(r->c, r->offset, r->bytes, &v, r->flags);
        break;
    case SYNC_WRITE:
        iov_vec_init_buf(&v, r->buf, r->bytes);
        r->ret = bdrv_co_pwritev(r->c, r->offset, r->bytes, &v, r->flags);
        break;
    default:
        r->ret = bdrv_co_flush(r->bs);
        break;
    }
}

static int run_sync(SyncReq *r, AioContext *ctx)
{
    aio_co_run_wait(ctx, sync_entry, r);
    return r->ret;
}

int bdrv_pread(BlockChild *c, int64_t offset, int64_t bytes, void *buf,
               unsigned flags)
{
    SyncReq r = { .kind = SYNC_READ, .c = c, .offset = offset,
                  .bytes = bytes, .buf = buf, .flags = flags };

    return run_sync(&r, c->node->ctx);
}

int bdrv_pwrite(BlockChild *c, int64_t offset, int64_t bytes,
                const void *buf, unsigned flags)
{
    SyncReq r = { .kind = SYNC_WRITE, .c = c, .offset = offset,
                  .bytes = bytes, .buf = (void *)buf, .flags = flags };

    return run_sync(&r, c->node->ctx);
}

int bdrv_flush(BlockNode *bs)
{
    SyncReq r = { .kind = SYNC_FLUSH, .bs = bs };

    return run_sync(&r, bs->ctx);
}

/* ---- block_resize ---- */

/* The resizing user is "an unnamed block device" in permission errors, as
 * qemu's temporary BlockBackend is. */
static const BlockChildClass resize_child_class = { 0 };

typedef struct ResizeCo {
    BlockChild *c;
    int64_t size;
    Error *err;
    int ret;
} ResizeCo;

static void coroutine_fn resize_co(void *opaque)
{
    ResizeCo *r = opaque;
    r->ret = bdrv_co_truncate(r->c, r->size, &r->err);
}

bool bdrv_resize(BlockNode *bs, int64_t size, Error **errp)
{
    BlockChild *c = bdrv_root_attach_child(bs, "root", &resize_child_class,
                                           NULL, BLK_PERM_RESIZE,
                                           BLK_PERM_ALL, errp);
    if (!c) {
        return false;
    }
    ResizeCo r = { .c = c, .size = size };
    bdrv_drained_begin(bs);
    aio_co_run_wait(bs->ctx, resize_co, &r);
    bdrv_drained_end(bs);
    bdrv_detach_child(c);
    if (r.ret < 0) {
        if (!r.err) {
            error_setg_errno(&r.err, -r.ret, "Could not resize image");
        }
        error_propagate(errp, r.err);
        return false;
    }
    return true;
}
