/*
 * Backing chains: a node, its backing node (or a filter's file), that
 * node's, and so on down to the bottom.  The walk goes through filters as
 * through backing links.  Main loop, but for the coroutine_fn.
 */
#ifndef BJ_BLOCK_CHAIN_H
#define BJ_BLOCK_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "aio/coroutine.h"
#include "block/block.h"

/* The node below bs in its chain (backing, or file of a filter); NULL at
 * the bottom. */
BlockNode *block_chain_next(BlockNode *bs);
/* Whether `bs` is `top` or below it. */
bool block_chain_contains(BlockNode *top, BlockNode *bs);
/* The node whose backing is bs, searching from top; NULL if none. */
BlockNode *block_chain_overlay(BlockNode *top, BlockNode *bs);
/* The bottom of the chain. */
BlockNode *block_chain_base(BlockNode *top);

/*
 * The status of the content at offset as the chain from `top` down to, not
 * including, `base` (NULL: the whole chain) shows it: the BLK_STATUS_* of
 * the first layer that allocates it (ZERO | ALLOCATED for a layer shorter
 * than offset: it hides what lies below), without EOF, or 0 when no layer
 * does.  *pnum gets how many bytes from offset share the answer, *depth
 * the layer (1 = top, 0 = none).  -errno on failure.  coroutine_fn.
 */
int coroutine_fn block_co_status_above(BlockNode *top, BlockNode *base,
                                       int64_t offset, int64_t bytes,
                                       int64_t *pnum, int *depth);

/*
 * Whether [offset, offset+bytes) is allocated in some node from `top` down
 * to, not including, `base` (NULL: the whole chain).  *pnum gets how many
 * bytes from offset share the answer; *zero whether the first allocated
 * layer reads them as zeroes.  Returns 1, 0 or -errno.  coroutine_fn.
 */
int coroutine_fn block_co_is_allocated_above(BlockNode *top, BlockNode *base,
                                             int64_t offset, int64_t bytes,
                                             int64_t *pnum, bool *zero);

#endif
