/*
 * Per-node dirty bitmaps.  Every write, write-zeroes and discard that
 * passes a node (io.c calls bdrv_dirty_bitmaps_mark once the request is
 * done) marks the node's enabled bitmaps, at each bitmap's granularity.
 * Marking after the request ends is what a copier needs: a copier that
 * clears a range and reads it while a write is in flight sees the range
 * dirty again once that write lands.
 *
 * Users: mirror (an anonymous bitmap on the source), named and persistent
 * bitmaps (block-dirty-bitmap-*, qcow2 storage), backup's sync bitmap.  No
 * lock: a node's bitmaps are marked and read in the node's thread (the
 * request path, a job's body there); the main loop creates, releases,
 * merges and settles them with the node drained.
 */
#ifndef BJ_BLOCK_DIRTY_BITMAP_H
#define BJ_BLOCK_DIRTY_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"
#include "util/error.h"

typedef struct BdrvDirtyBitmap BdrvDirtyBitmap;

/* granularity: a power of two >= 512 ("Granularity must be power of 2
 * and at least 512"); name NULL for an anonymous bitmap, else unique on
 * the node ("Bitmap already exists: x").  Covers the node's length. */
BdrvDirtyBitmap *bdrv_create_dirty_bitmap(BlockNode *bs, uint32_t granularity,
                                          const char *name, Error **errp);
void bdrv_release_dirty_bitmap(BdrvDirtyBitmap *bm);
/* Releases every bitmap of bs (the node is closing). */
void bdrv_release_all_dirty_bitmaps(BlockNode *bs);

BdrvDirtyBitmap *bdrv_find_dirty_bitmap(BlockNode *bs, const char *name);
/* The node's bitmaps in creation order; NULL starts and ends. */
BdrvDirtyBitmap *bdrv_dirty_bitmap_next(BlockNode *bs, BdrvDirtyBitmap *prev);

BlockNode *bdrv_dirty_bitmap_node(const BdrvDirtyBitmap *bm);
const char *bdrv_dirty_bitmap_name(const BdrvDirtyBitmap *bm);
uint32_t bdrv_dirty_bitmap_granularity(const BdrvDirtyBitmap *bm);
uint64_t bdrv_dirty_bitmap_size(const BdrvDirtyBitmap *bm);
bool bdrv_dirty_bitmap_enabled(const BdrvDirtyBitmap *bm);
void bdrv_enable_dirty_bitmap(BdrvDirtyBitmap *bm);
void bdrv_disable_dirty_bitmap(BdrvDirtyBitmap *bm);
/* In use by an operation (a job, an export): named-bitmap commands refuse
 * it. */
bool bdrv_dirty_bitmap_busy(const BdrvDirtyBitmap *bm);
void bdrv_dirty_bitmap_set_busy(BdrvDirtyBitmap *bm, bool busy);

/* Explicit changes, whether enabled or not (bytes). */
void bdrv_set_dirty_bitmap(BdrvDirtyBitmap *bm, int64_t offset,
                           int64_t bytes);
void bdrv_reset_dirty_bitmap(BdrvDirtyBitmap *bm, int64_t offset,
                             int64_t bytes);
void bdrv_clear_dirty_bitmap(BdrvDirtyBitmap *bm);
bool bdrv_dirty_bitmap_get(const BdrvDirtyBitmap *bm, int64_t offset);
/* Dirty bytes. */
uint64_t bdrv_get_dirty_count(const BdrvDirtyBitmap *bm);
/* See hbitmap_next_dirty / hbitmap_next_dirty_area (bytes). */
int64_t bdrv_dirty_bitmap_next_dirty(const BdrvDirtyBitmap *bm,
                                     int64_t offset, int64_t bytes);
bool bdrv_dirty_bitmap_next_dirty_area(const BdrvDirtyBitmap *bm,
                                       int64_t *offset, int64_t end,
                                       int64_t max_bytes, int64_t *bytes);
/* dst |= src (same granularity and size). */
bool bdrv_merge_dirty_bitmap(BdrvDirtyBitmap *dst, const BdrvDirtyBitmap *src,
                             Error **errp);

/*
 * Successors (a backup's sync bitmap, as in qemu): while bm is frozen, an
 * anonymous successor on the same node records the writes bm would have
 * recorded; bm itself is disabled and busy, its bits stay as they were.
 * create_successor: "already has one" if frozen.  abdicate: bm takes the
 * successor's bits (bm's own are dropped: the job copied them) and its
 * place among the node's bitmaps, as qemu's successor takes the name.
 * reclaim: bm |= successor (nothing lost, the job failed or mode never).
 * Both end
 * the frozen state: the successor is freed, bm records again if it did
 * before, and is no longer busy.
 */
BdrvDirtyBitmap *bdrv_dirty_bitmap_create_successor(BdrvDirtyBitmap *bm,
                                                    Error **errp);
BdrvDirtyBitmap *bdrv_dirty_bitmap_successor(const BdrvDirtyBitmap *bm);
void bdrv_dirty_bitmap_abdicate(BdrvDirtyBitmap *bm);
void bdrv_dirty_bitmap_reclaim(BdrvDirtyBitmap *bm);
/* Whether writes to the node reach bm's bits, now or through a successor
 * (qemu's "recording"). */
bool bdrv_dirty_bitmap_recording(const BdrvDirtyBitmap *bm);
/* The underlying HBitmap (serialisation, block-copy seeding). */
typedef struct HBitmap HBitmap;
HBitmap *bdrv_dirty_bitmap_hbitmap(BdrvDirtyBitmap *bm);
/* dst |= src where src is any HBitmap over the same bytes, whatever its
 * granularity: every granule of dst that a dirty run of src touches is set
 * (coarser or finer, never less). */
void bdrv_dirty_bitmap_merge_hbitmap(BdrvDirtyBitmap *dst,
                                     const HBitmap *src);

/* Before a resize of bs to len bytes: whether each of its bitmaps can
 * cover len (hbitmap.h's bound); an error names the node and the bound. */
bool bdrv_dirty_bitmaps_check_resize(BlockNode *bs, int64_t len,
                                     Error **errp);
/* The node's length changed (bdrv_co_truncate): every bitmap of bs now
 * covers len bytes; a grown tail starts clean, as in qemu. */
void bdrv_dirty_bitmaps_truncate(BlockNode *bs, int64_t len);

/* The request path's hook: marks [offset, offset+bytes) in every enabled
 * bitmap of bs. */
void bdrv_dirty_bitmaps_mark(BlockNode *bs, int64_t offset, int64_t bytes);

#endif
