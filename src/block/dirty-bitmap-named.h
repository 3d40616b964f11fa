/*
 * What named bitmaps add on top of dirty-bitmap.h: the `persistent` and
 * `inconsistent` marks, the checks the block-dirty-bitmap-* commands share
 * (with qemu-storage-daemon 7.2's messages), the default granularity, the
 * debug hash and the query-named-block-nodes "dirty-bitmaps" member.
 *
 * The marks live in a side table keyed by (node, bitmap) because the
 * bitmap object belongs to dirty-bitmap.c.  Only qcow2 nodes carry
 * entries (persistent bitmaps, and inconsistent ones loaded from an image
 * a writer left open); qcow2's close forgets its node's entries before
 * the layer frees the bitmaps, and block-dirty-bitmap-remove forgets the
 * one it removes.  Main context only, like dirty-bitmap.c.
 */
#ifndef BJ_BLOCK_DIRTY_BITMAP_NAMED_H
#define BJ_BLOCK_DIRTY_BITMAP_NAMED_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/dirty-bitmap.h"

/* qcow2's limit, which qemu applies to every bitmap name. */
#define BDRV_BITMAP_MAX_NAME_SIZE 1023

bool bdrv_dirty_bitmap_persistent(const BdrvDirtyBitmap *bm);
void bdrv_dirty_bitmap_set_persistent(BdrvDirtyBitmap *bm, bool persistent);
bool bdrv_dirty_bitmap_inconsistent(const BdrvDirtyBitmap *bm);
/* Loaded from an image whose writer did not close it: disabled, and
 * refused by every command but remove. */
void bdrv_dirty_bitmap_set_inconsistent(BdrvDirtyBitmap *bm);
/* Drops the marks of every bitmap of bs (they are about to be freed). */
void bdrv_dirty_bitmap_forget_node(BlockNode *bs);
/* Releases bm and forgets its marks. */
void bdrv_dirty_bitmap_release_named(BdrvDirtyBitmap *bm);

/*
 * block-dirty-bitmap-add with persistent: whether the node's format can
 * store a new bitmap (its driver's can_store_new_dirty_bitmap; "Can't
 * store persistent bitmaps to NODE: Operation not supported" for a driver
 * without one).
 */
bool bdrv_can_store_new_dirty_bitmap(BlockNode *bs, const char *name,
                                     uint32_t granularity, Error **errp);

/*
 * The image of a writable node follows a change of its persistent bitmaps
 * at once (its driver's dirty_bitmaps_store_sync; 0 for a driver without
 * one; qcow2 rewrites the directory from the bitmaps in memory, in use and
 * crash-consistent, and flushes).  Used when a bitmap becomes persistent
 * (stored before any write is recorded), when one is released (gone from
 * the image, as qemu does) and by bdrv_dirty_bitmap_persist_bits.  Main
 * loop (waits) or a coroutine not holding the node's locks.  Returns 0 or
 * -errno (logged).
 */
int bdrv_dirty_bitmap_store_sync(BlockNode *bs);
/* A command added bits to bm (merge into it): makes them durable in the
 * image before the command returns, so that a crash never leaves the
 * stored copy of a persistent bitmap without bits it had in memory. */
void bdrv_dirty_bitmap_persist_bits(BdrvDirtyBitmap *bm);

/*
 * Bits left bm other than through a write: block-dirty-bitmap-clear, the
 * end of a backup with a sync bitmap, a transaction abort putting older
 * bits back.  For a persistent bitmap of a writable qcow2 node the stored
 * copy (a superset of the bits) is made exact again about a second later
 * (bdrv_dirty_bitmap_resync_later).  Main loop.
 */
void bdrv_dirty_bitmap_bits_removed(BdrvDirtyBitmap *bm);
/* The driver's dirty_bitmaps_resync_later (nothing without one); qcow2
 * arms a coalesced timer that drains bs and rewrites the changed clusters
 * of its stored bitmaps with the exact bits; see docs/bitmaps.md, "After a
 * crash". */
void bdrv_dirty_bitmap_resync_later(BlockNode *bs);

/* The default for block-dirty-bitmap-add: the node's cluster size
 * clamped to 4 KiB..64 KiB, 64 KiB when the node has none. */
uint32_t bdrv_dirty_bitmap_default_granularity(BlockNode *bs);

/*
 * "Bitmap 'x' is currently in use by another operation and cannot be
 * used" (busy), "Bitmap 'x' is inconsistent and cannot be used".
 */
bool bdrv_dirty_bitmap_check_usable(const BdrvDirtyBitmap *bm, Error **errp);

/* Looks up node and bitmap with the commands' messages ("Node 'x' not
 * found", "Dirty bitmap 'y' not found"); *pbs may be NULL. */
BdrvDirtyBitmap *bdrv_dirty_bitmap_lookup(const char *node, const char *name,
                                          BlockNode **pbs, Error **errp);

/* Lower-case hex SHA-256 of the bitmap's granule words, as qemu hashes
 * them (the bits padded to whole 64-bit words, little-endian); the
 * caller frees it. */
char *bdrv_dirty_bitmap_sha256(const BdrvDirtyBitmap *bm);

/* The "dirty-bitmaps" array of a node's query answer, newest first, or
 * NULL when the node has no named bitmap. */
json_t *bdrv_query_dirty_bitmaps(BlockNode *bs);

/* SHA-256 of len bytes into out[32] (dirty-bitmap-sha256.c). */
void bj_sha256(const uint8_t *data, size_t len, uint8_t out[32]);

#endif
