/*
 * Extents of the metadata contexts (see nbd-meta.h).
 */
#include <assert.h>
#include <stdlib.h>

#include "block/chain.h"
#include "nbd/nbd-meta.h"
#include "nbd/nbd-proto.h"
#include "util/alloc.h"

void nbd_extents_init(NbdExtents *x, unsigned max)
{
    assert(max >= 1);
    x->e = bj_calloc(max, sizeof(*x->e));
    x->count = 0;
    x->max = max;
    x->total = 0;
    x->full = false;
}

void nbd_extents_destroy(NbdExtents *x)
{
    free(x->e);
    x->e = NULL;
}

bool nbd_extents_add(NbdExtents *x, uint64_t len, uint32_t flags)
{
    while (len > 0) {
        NbdExtent *last = x->count ? &x->e[x->count - 1] : NULL;
        if (last && last->flags == flags && last->length < UINT32_MAX) {
            uint64_t room = UINT32_MAX - last->length;
            uint64_t n = len < room ? len : room;
            last->length += (uint32_t)n;
            x->total += n;
            len -= n;
            continue;
        }
        if (x->count == x->max) {
            x->full = true;
            return false;
        }
        uint64_t n = len < UINT32_MAX ? len : UINT32_MAX;
        x->e[x->count].length = (uint32_t)n;
        x->e[x->count].flags = flags;
        x->count++;
        x->total += n;
        len -= n;
    }
    return true;
}

void nbd_meta_dirty_bitmap(const BdrvDirtyBitmap *bm, uint64_t offset,
                           uint64_t len, NbdExtents *x)
{
    int64_t start = (int64_t)offset, end = (int64_t)(offset + len);
    int64_t at = start, count;

    /* One lookup per dirty area: the hbitmap skips clean words through its
     * summary level, so a small range of a huge disk costs a few words. */
    while (bdrv_dirty_bitmap_next_dirty_area(bm, &at, end, end - at,
                                             &count)) {
        if (!nbd_extents_add(x, (uint64_t)(at - start), 0) ||
            !nbd_extents_add(x, (uint64_t)count, NBD_STATE_DIRTY)) {
            return;
        }
        start = at = at + count;
        if (at >= end) {
            return;
        }
    }
    nbd_extents_add(x, (uint64_t)(end - start), 0);
}

int coroutine_fn nbd_meta_status_above(BlockNode *bs, int64_t offset,
                                       int64_t bytes, int64_t *pnum,
                                       int *depth)
{
    int ret;

    assert(bytes > 0);
    ret = block_co_status_above(bs, NULL, offset, bytes, pnum, depth);
    /* Allocated nowhere in the whole chain: the bottom reads as zeroes. */
    return ret == 0 && *depth == 0 ? BLK_STATUS_ZERO : ret;
}

typedef uint32_t StatusToFlags(int status, int depth);

static uint32_t base_allocation_flags(int status, int depth)
{
    uint32_t f = 0;

    (void)depth;
    if (!(status & BLK_STATUS_DATA)) {
        f |= NBD_STATE_HOLE;
    }
    if (status & BLK_STATUS_ZERO) {
        f |= NBD_STATE_ZERO;
    }
    return f;
}

static uint32_t depth_flags(int status, int depth)
{
    (void)status;
    return (uint32_t)depth;
}

static int coroutine_fn chain_extents(BlockNode *bs, uint64_t offset,
                                      uint64_t len, NbdExtents *x,
                                      StatusToFlags *flags)
{
    uint64_t end = offset + len;

    while (offset < end) {
        int64_t pnum = 0;
        int depth = 0;
        int ret = nbd_meta_status_above(bs, (int64_t)offset,
                                        (int64_t)(end - offset), &pnum,
                                        &depth);
        if (ret < 0) {
            return ret;
        }
        assert(pnum > 0 && (uint64_t)pnum <= end - offset);
        if (!nbd_extents_add(x, (uint64_t)pnum, flags(ret, depth))) {
            break;
        }
        offset += (uint64_t)pnum;
    }
    return 0;
}

int coroutine_fn nbd_meta_base_allocation(BlockNode *bs, uint64_t offset,
                                          uint64_t len, NbdExtents *x)
{
    return chain_extents(bs, offset, len, x, base_allocation_flags);
}

int coroutine_fn nbd_meta_allocation_depth(BlockNode *bs, uint64_t offset,
                                           uint64_t len, NbdExtents *x)
{
    return chain_extents(bs, offset, len, x, depth_flags);
}
