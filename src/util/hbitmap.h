/*
 * A hierarchical bitmap over a range of items (bytes, usually) at a
 * granularity of 2^gran_shift items per bit.
 *
 *   level 1:  one bit per non-zero word of level 0 (summary)
 *   level 0:  one bit per granule
 *
 * next-dirty and next-clean skip empty (or full) 64-granule words through
 * the summary level, so a sparse bitmap over a large disk is searched in
 * a few word reads.  All offsets and counts are in items; a range sets,
 * resets or tests every granule it touches.  Not thread-safe: the owner
 * serialises access (dirty-bitmap.c).
 *
 * Serialisation writes granule bits little-endian, bit 0 of byte 0 being
 * the first granule: the layout of a qcow2 bitmap's data clusters.
 */
#ifndef BJ_UTIL_HBITMAP_H
#define BJ_UTIL_HBITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

typedef struct HBitmap HBitmap;

/*
 * The most granules one bitmap may have: its bottom level is then 512 MiB,
 * the bound qcow2 puts on a persistent bitmap in memory.  A disk can be
 * far larger (a legal qcow2 holds 2 EiB), so a bitmap sized by a disk is
 * refused with an error above this rather than allocated (or aborted on):
 * docs/hardening.md, "Bitmaps sized by the disk".
 */
#define HBITMAP_MAX_GRANULES (UINT64_C(1) << 32)

/* Granules of a bitmap over size items at 2^gran_shift items each. */
uint64_t hbitmap_granules(uint64_t size, int gran_shift);

/* size in items (> 0 or 0), gran_shift 0..63.  NULL when the bitmap would
 * have more than HBITMAP_MAX_GRANULES granules or memory runs out. */
HBitmap *hbitmap_new(uint64_t size, int gran_shift);
/* hbitmap_new with the reason for a NULL in *errp: "a bitmap of N bytes at
 * granularity G would need B bits (at most M): use a larger granularity"
 * or "Cannot allocate memory".  Callers prefix what the bitmap is for. */
HBitmap *hbitmap_new_checked(uint64_t size, int gran_shift, Error **errp);
void hbitmap_free(HBitmap *hb);

uint64_t hbitmap_size(const HBitmap *hb);
int hbitmap_granularity_shift(const HBitmap *hb);

void hbitmap_set(HBitmap *hb, uint64_t start, uint64_t count);
void hbitmap_reset(HBitmap *hb, uint64_t start, uint64_t count);
void hbitmap_reset_all(HBitmap *hb);
bool hbitmap_get(const HBitmap *hb, uint64_t item);
/* Items covered by set granules (the last granule clipped to size). */
uint64_t hbitmap_count(const HBitmap *hb);

/* The first set (dirty) / clear item at or after start, before start +
 * count (count UINT64_MAX: to the end), at a granule start but never
 * before start; -1 if none. */
int64_t hbitmap_next_dirty(const HBitmap *hb, uint64_t start,
                           uint64_t count);
int64_t hbitmap_next_clean(const HBitmap *hb, uint64_t start,
                           uint64_t count);
/* The first dirty run in [*start, end), at most max_count items long:
 * sets *start and *count, returns false when there is none. */
bool hbitmap_next_dirty_area(const HBitmap *hb, uint64_t *start,
                             uint64_t end, uint64_t max_count,
                             uint64_t *count);

/* dst |= src; both must have the same size and granularity. */
bool hbitmap_merge(HBitmap *dst, const HBitmap *src);

/* Serialisation of the granules covering [start, start+count) where start
 * is a multiple of 8 granules: bytes needed, then store/load. */
size_t hbitmap_serialized_size(const HBitmap *hb, uint64_t start,
                               uint64_t count);
void hbitmap_serialize(const HBitmap *hb, uint8_t *buf, uint64_t start,
                       uint64_t count);
void hbitmap_deserialize(HBitmap *hb, const uint8_t *buf, uint64_t start,
                         uint64_t count);

#endif
