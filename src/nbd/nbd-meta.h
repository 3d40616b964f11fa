/*
 * What each metadata context answers to NBD_CMD_BLOCK_STATUS, as extents:
 *
 *   base:allocation        HOLE/ZERO of the content the client reads, the
 *                          backing chain included (as qemu's server: data
 *                          of a backing file is data here)
 *   qemu:allocation-depth  0 unallocated in the whole chain, 1 allocated in
 *                          the exported node, n in its (n-1)th backing layer
 *   qemu:dirty-bitmap:X    1 where bitmap X is dirty, 0 where clean
 *
 * The dirty-bitmap answer walks the bitmap by dirty areas (the hbitmap's
 * next-dirty / next-clean), so its cost follows the number of extents,
 * never the size of the disk or of the range asked.
 */
#ifndef BJ_NBD_NBD_META_H
#define BJ_NBD_NBD_META_H

#include <stdbool.h>
#include <stdint.h>

#include "aio/coroutine.h"
#include "block/block.h"
#include "block/dirty-bitmap.h"
#include "nbd/nbd-proto.h"

typedef struct NbdExtent {
    uint32_t length;
    uint32_t flags;
} NbdExtent;

/* An answer being built: at most `max` extents, neighbours with the same
 * flags merged. */
typedef struct NbdExtents {
    NbdExtent *e;
    unsigned count;
    unsigned max;
    uint64_t total;            /* bytes covered so far */
    bool full;                 /* an extent did not fit: stop */
} NbdExtents;

/* max >= 1.  Aborts on allocation failure, like the rest of the server's
 * small allocations. */
void nbd_extents_init(NbdExtents *x, unsigned max);
void nbd_extents_destroy(NbdExtents *x);
/*
 * Appends len bytes with flags, merging with the last extent when the
 * flags match (and the sum fits 32 bits).  len 0 is ignored.  False (and
 * x->full) when a new extent was needed and there is no room: the caller
 * stops, and what is there is a valid, shorter answer.
 */
bool nbd_extents_add(NbdExtents *x, uint64_t len, uint32_t flags);

/* qemu:dirty-bitmap over [offset, offset+len): dirty areas as found by the
 * bitmap, clipped to the range; past the bitmap's end reads clean. */
void nbd_meta_dirty_bitmap(const BdrvDirtyBitmap *bm, uint64_t offset,
                           uint64_t len, NbdExtents *x);

/*
 * The status of the content at offset as the chain from bs down shows it:
 * returns the BLK_STATUS_* of the first layer that allocates it (ZERO
 * for a layer shorter than offset, ZERO with no DATA when no layer does),
 * sets *pnum (> 0) and *depth (1 = bs, 0 = no layer).  -errno on failure.
 */
int coroutine_fn nbd_meta_status_above(BlockNode *bs, int64_t offset,
                                       int64_t bytes, int64_t *pnum,
                                       int *depth);

/* base:allocation and qemu:allocation-depth over [offset, offset+len) of
 * bs (the caller has entered the request on the export's edge).  0 or
 * -errno; a full x is not an error. */
int coroutine_fn nbd_meta_base_allocation(BlockNode *bs, uint64_t offset,
                                          uint64_t len, NbdExtents *x);
int coroutine_fn nbd_meta_allocation_depth(BlockNode *bs, uint64_t offset,
                                           uint64_t len, NbdExtents *x);

#endif
