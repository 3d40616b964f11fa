/*
 * Walking backing chains (see chain.h).
 */
#include "block/chain.h"

BlockNode *block_chain_next(BlockNode *bs)
{
    if (bs->backing) {
        return bs->backing->node;
    }
    if (bs->drv->is_filter && bs->file) {
        return bs->file->node;
    }
    return NULL;
}

bool block_chain_contains(BlockNode *top, BlockNode *bs)
{
    for (BlockNode *it = top; it; it = block_chain_next(it)) {
        if (it == bs) {
            return true;
        }
    }
    return false;
}

BlockNode *block_chain_overlay(BlockNode *top, BlockNode *bs)
{
    for (BlockNode *it = top; it; it = block_chain_next(it)) {
        if (block_chain_next(it) == bs) {
            return it;
        }
    }
    return NULL;
}

BlockNode *block_chain_base(BlockNode *top)
{
    BlockNode *it = top;
    while (block_chain_next(it)) {
        it = block_chain_next(it);
    }
    return it;
}

int coroutine_fn block_co_status_above(BlockNode *top, BlockNode *base,
                                       int64_t offset, int64_t bytes,
                                       int64_t *pnum, int *depth)
{
    int d = 1;

    for (BlockNode *it = top; it && it != base;
         it = block_chain_next(it), d++) {
        int64_t n = 0;
        int ret = bdrv_co_block_status(it, offset, bytes, &n, NULL, NULL);
        if (ret < 0) {
            return ret;
        }
        if (n == 0) {
            /* A layer shorter than offset: it reads as zeroes there and
             * hides whatever lies below, as if allocated here. */
            *pnum = bytes;
            *depth = d;
            return BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
        }
        if (ret & BLK_STATUS_ALLOCATED) {
            *pnum = n;
            *depth = d;
            return ret & ~BLK_STATUS_EOF;
        }
        /* Only the part unallocated here can be answered below as one. */
        bytes = n;
    }
    *pnum = bytes;
    *depth = 0;
    return 0;
}

int coroutine_fn block_co_is_allocated_above(BlockNode *top, BlockNode *base,
                                             int64_t offset, int64_t bytes,
                                             int64_t *pnum, bool *zero)
{
    int depth = 0;
    int ret = block_co_status_above(top, base, offset, bytes, pnum, &depth);

    *zero = ret > 0 && depth > 0 && (ret & BLK_STATUS_ZERO);
    if (ret < 0) {
        return ret;
    }
    return depth > 0;
}
