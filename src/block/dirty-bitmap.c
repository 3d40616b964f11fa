/*
 * Per-node dirty bitmaps on top of HBitmap: creation and release, the
 * enabled/busy state, and the hook the request path calls after every
 * write-like request on a node.
 */
#include "block/dirty-bitmap.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"
#include "util/hbitmap.h"

struct BdrvDirtyBitmap {
    BlockNode *bs;
    HBitmap *hb;
    uint32_t granularity;
    char *name;              /* NULL: anonymous */
    bool disabled;
    bool busy;
    bool was_enabled;                  /* before a successor froze it */
    struct BdrvDirtyBitmap *successor; /* anonymous, on the same node */
    struct BdrvDirtyBitmap *next;
};

BdrvDirtyBitmap *bdrv_create_dirty_bitmap(BlockNode *bs, uint32_t granularity,
                                          const char *name, Error **errp)
{
    if (granularity < 512 || (granularity & (granularity - 1))) {
        error_setg(errp, "Granularity must be power of 2 and at least 512");
        return NULL;
    }
    if (name && bdrv_find_dirty_bitmap(bs, name)) {
        error_setg(errp, "Bitmap already exists: %s", name);
        return NULL;
    }
    int64_t len = bdrv_getlength(bs);
    if (len < 0) {
        error_setg_errno(errp, (int)-len, "Could not get the size of node "
                         "'%s'", bs->node_name);
        return NULL;
    }
    /* Sized by the disk, which may be far larger than memory: refused
     * above a bound (hbitmap.h) instead of aborting the daemon. */
    HBitmap *hb = hbitmap_new_checked((uint64_t)len,
                                      __builtin_ctz(granularity), errp);
    if (!hb) {
        error_prepend(errp, "Cannot create a dirty bitmap on node '%s'",
                      bs->node_name);
        return NULL;
    }
    BdrvDirtyBitmap *bm = bj_calloc(1, sizeof(*bm));
    bm->name = name ? bj_strdup(name) : NULL;
    bm->bs = bs;
    bm->granularity = granularity;
    bm->hb = hb;
    /* Append: creation order for queries. */
    BdrvDirtyBitmap **pp = &bs->dirty_bitmaps;
    while (*pp) {
        pp = &(*pp)->next;
    }
    *pp = bm;
    return bm;
}

void bdrv_release_dirty_bitmap(BdrvDirtyBitmap *bm)
{
    if (!bm) {
        return;
    }
    if (bm->successor) {
        bdrv_release_dirty_bitmap(bm->successor);
        bm->successor = NULL;
    }
    for (BdrvDirtyBitmap **pp = &bm->bs->dirty_bitmaps; *pp;
         pp = &(*pp)->next) {
        if (*pp == bm) {
            *pp = bm->next;
            break;
        }
    }
    hbitmap_free(bm->hb);
    free(bm->name);
    free(bm);
}

void bdrv_release_all_dirty_bitmaps(BlockNode *bs)
{
    while (bs->dirty_bitmaps) {
        bdrv_release_dirty_bitmap(bs->dirty_bitmaps);
    }
}

BdrvDirtyBitmap *bdrv_find_dirty_bitmap(BlockNode *bs, const char *name)
{
    for (BdrvDirtyBitmap *bm = bs->dirty_bitmaps; bm; bm = bm->next) {
        if (bm->name && !strcmp(bm->name, name)) {
            return bm;
        }
    }
    return NULL;
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_next(BlockNode *bs, BdrvDirtyBitmap *prev)
{
    return prev ? prev->next : bs->dirty_bitmaps;
}

BlockNode *bdrv_dirty_bitmap_node(const BdrvDirtyBitmap *bm)
{
    return bm->bs;
}

const char *bdrv_dirty_bitmap_name(const BdrvDirtyBitmap *bm)
{
    return bm->name;
}

uint32_t bdrv_dirty_bitmap_granularity(const BdrvDirtyBitmap *bm)
{
    return bm->granularity;
}

uint64_t bdrv_dirty_bitmap_size(const BdrvDirtyBitmap *bm)
{
    return hbitmap_size(bm->hb);
}

bool bdrv_dirty_bitmap_enabled(const BdrvDirtyBitmap *bm)
{
    return !bm->disabled;
}

void bdrv_enable_dirty_bitmap(BdrvDirtyBitmap *bm)
{
    bm->disabled = false;
}

void bdrv_disable_dirty_bitmap(BdrvDirtyBitmap *bm)
{
    bm->disabled = true;
}

bool bdrv_dirty_bitmap_busy(const BdrvDirtyBitmap *bm)
{
    return bm->busy;
}

void bdrv_dirty_bitmap_set_busy(BdrvDirtyBitmap *bm, bool busy)
{
    bm->busy = busy;
}

void bdrv_set_dirty_bitmap(BdrvDirtyBitmap *bm, int64_t offset, int64_t bytes)
{
    if (offset >= 0 && bytes > 0) {
        hbitmap_set(bm->hb, (uint64_t)offset, (uint64_t)bytes);
    }
}

void bdrv_reset_dirty_bitmap(BdrvDirtyBitmap *bm, int64_t offset,
                             int64_t bytes)
{
    if (offset >= 0 && bytes > 0) {
        hbitmap_reset(bm->hb, (uint64_t)offset, (uint64_t)bytes);
    }
}

void bdrv_clear_dirty_bitmap(BdrvDirtyBitmap *bm)
{
    hbitmap_reset_all(bm->hb);
}

bool bdrv_dirty_bitmap_get(const BdrvDirtyBitmap *bm, int64_t offset)
{
    return offset >= 0 && hbitmap_get(bm->hb, (uint64_t)offset);
}

uint64_t bdrv_get_dirty_count(const BdrvDirtyBitmap *bm)
{
    return hbitmap_count(bm->hb);
}

int64_t bdrv_dirty_bitmap_next_dirty(const BdrvDirtyBitmap *bm,
                                     int64_t offset, int64_t bytes)
{
    if (offset < 0 || bytes <= 0) {
        return -1;
    }
    return hbitmap_next_dirty(bm->hb, (uint64_t)offset, (uint64_t)bytes);
}

bool bdrv_dirty_bitmap_next_dirty_area(const BdrvDirtyBitmap *bm,
                                       int64_t *offset, int64_t end,
                                       int64_t max_bytes, int64_t *bytes)
{
    uint64_t start = (uint64_t)*offset, count = 0;

    if (*offset < 0 || end <= *offset || max_bytes <= 0) {
        return false;
    }
    if (!hbitmap_next_dirty_area(bm->hb, &start, (uint64_t)end,
                                 (uint64_t)max_bytes, &count)) {
        return false;
    }
    *offset = (int64_t)start;
    *bytes = (int64_t)count;
    return true;
}

bool bdrv_merge_dirty_bitmap(BdrvDirtyBitmap *dst, const BdrvDirtyBitmap *src,
                             Error **errp)
{
    if (!hbitmap_merge(dst->hb, src->hb)) {
        error_setg(errp, "Bitmaps are incompatible and can't be merged");
        return false;
    }
    return true;
}

void bdrv_dirty_bitmaps_mark(BlockNode *bs, int64_t offset, int64_t bytes)
{
    for (BdrvDirtyBitmap *bm = bs->dirty_bitmaps; bm; bm = bm->next) {
        if (!bm->disabled) {
            bdrv_set_dirty_bitmap(bm, offset, bytes);
        }
    }
}

/* ---- successors ---- */

BdrvDirtyBitmap *bdrv_dirty_bitmap_create_successor(BdrvDirtyBitmap *bm,
                                                    Error **errp)
{
    if (bm->successor) {
        error_setg(errp, "Cannot create a successor for a bitmap that "
                   "already has one");
        return NULL;
    }
    BdrvDirtyBitmap *s = bdrv_create_dirty_bitmap(bm->bs, bm->granularity,
                                                  NULL, errp);
    if (!s) {
        return NULL;
    }
    s->disabled = bm->disabled;
    bm->was_enabled = !bm->disabled;
    bm->disabled = true;
    bm->busy = true;
    bm->successor = s;
    return s;
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_successor(const BdrvDirtyBitmap *bm)
{
    return bm->successor;
}

/* Ends the frozen state: the successor is gone, bm records as before. */
static void successor_release(BdrvDirtyBitmap *bm)
{
    bdrv_release_dirty_bitmap(bm->successor);
    bm->successor = NULL;
    bm->disabled = !bm->was_enabled;
    bm->busy = false;
}

/* Takes bm out of its node's list. */
static void list_unlink(BdrvDirtyBitmap *bm)
{
    for (BdrvDirtyBitmap **pp = &bm->bs->dirty_bitmaps; *pp;
         pp = &(*pp)->next) {
        if (*pp == bm) {
            *pp = bm->next;
            bm->next = NULL;
            return;
        }
    }
}

void bdrv_dirty_bitmap_abdicate(BdrvDirtyBitmap *bm)
{
    BdrvDirtyBitmap *s = bm->successor;

    if (!s) {
        return;
    }
    HBitmap *tmp = bm->hb;
    bm->hb = s->hb;
    s->hb = tmp;
    /* In qemu the successor takes the name and the parent goes, so the
     * named bitmap now sits where the successor was created (queries list
     * bitmaps by age): bm moves to the successor's place. */
    list_unlink(bm);
    for (BdrvDirtyBitmap **pp = &bm->bs->dirty_bitmaps; *pp;
         pp = &(*pp)->next) {
        if (*pp == s) {
            bm->next = s;
            *pp = bm;
            break;
        }
    }
    successor_release(bm);
}

void bdrv_dirty_bitmap_reclaim(BdrvDirtyBitmap *bm)
{
    if (!bm->successor) {
        return;
    }
    /* Same node, same granularity: cannot fail. */
    hbitmap_merge(bm->hb, bm->successor->hb);
    successor_release(bm);
}

void bdrv_dirty_bitmap_merge_hbitmap(BdrvDirtyBitmap *dst, const HBitmap *src)
{
    uint64_t at = 0, n = 0, size = hbitmap_size(src);

    while (at < size && hbitmap_next_dirty_area(src, &at, size, UINT64_MAX,
                                                &n)) {
        hbitmap_set(dst->hb, at, n);
        at += n;
    }
}

bool bdrv_dirty_bitmap_recording(const BdrvDirtyBitmap *bm)
{
    return !bm->disabled || (bm->successor && !bm->successor->disabled);
}

HBitmap *bdrv_dirty_bitmap_hbitmap(BdrvDirtyBitmap *bm)
{
    return bm->hb;
}

/* ---- size changes ---- */

/* bm covers len bytes from now on: bits inside both sizes stay, a grown
 * tail is clean (nothing was written there yet), a cut tail is gone. */
static void bitmap_truncate(BdrvDirtyBitmap *bm, int64_t len)
{
    HBitmap *old = bm->hb;
    uint64_t end = hbitmap_size(old), start = 0, count = 0;

    if (end == (uint64_t)len) {
        return;
    }
    bm->hb = hbitmap_new((uint64_t)len, __builtin_ctz(bm->granularity));
    /* bdrv_dirty_bitmaps_check_resize let the size in: only memory can
     * be missing here, after the disk has changed size. */
    if (!bm->hb) {
        abort();
    }
    if (end > (uint64_t)len) {
        end = (uint64_t)len;
    }
    while (start < end &&
           hbitmap_next_dirty_area(old, &start, end, UINT64_MAX, &count)) {
        hbitmap_set(bm->hb, start, count);
        start += count;
    }
    hbitmap_free(old);
}

bool bdrv_dirty_bitmaps_check_resize(BlockNode *bs, int64_t len,
                                     Error **errp)
{
    for (BdrvDirtyBitmap *bm = bs->dirty_bitmaps; bm; bm = bm->next) {
        int shift = __builtin_ctz(bm->granularity);
        if (hbitmap_granules((uint64_t)len, shift) > HBITMAP_MAX_GRANULES) {
            error_setg(errp, "Cannot resize node '%s' to %" PRId64 " bytes: "
                       "its dirty bitmap at granularity %" PRIu32 " would "
                       "need more than %" PRIu64 " bits", bs->node_name, len,
                       bm->granularity, HBITMAP_MAX_GRANULES);
            return false;
        }
    }
    return true;
}

void bdrv_dirty_bitmaps_truncate(BlockNode *bs, int64_t len)
{
    if (len < 0) {
        return;
    }
    /* Successors are on the node's list too. */
    for (BdrvDirtyBitmap *bm = bs->dirty_bitmaps; bm; bm = bm->next) {
        bitmap_truncate(bm, len);
    }
}
