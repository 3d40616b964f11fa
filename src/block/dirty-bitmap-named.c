/*
 * Named-bitmap marks and shared checks (see dirty-bitmap-named.h).
 */
#include "block/dirty-bitmap-named.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"

/*
 * The side table.  A short list: only bitmaps of qcow2 nodes that are
 * persistent or inconsistent have an entry.
 */
typedef struct NamedMark {
    const BdrvDirtyBitmap *bm;
    bool persistent;
    bool inconsistent;
    struct NamedMark *next;
} NamedMark;

static NamedMark *marks;

static NamedMark *find_mark(const BdrvDirtyBitmap *bm)
{
    for (NamedMark *m = marks; m; m = m->next) {
        if (m->bm == bm) {
            return m;
        }
    }
    return NULL;
}

static NamedMark *get_mark(BdrvDirtyBitmap *bm)
{
    NamedMark *m = find_mark(bm);

    if (!m) {
        m = bj_calloc(1, sizeof(*m));
        m->bm = bm;
        m->next = marks;
        marks = m;
    }
    return m;
}

static void drop_mark(const BdrvDirtyBitmap *bm)
{
    for (NamedMark **pp = &marks; *pp; pp = &(*pp)->next) {
        if ((*pp)->bm == bm) {
            NamedMark *m = *pp;
            *pp = m->next;
            free(m);
            return;
        }
    }
}

bool bdrv_dirty_bitmap_persistent(const BdrvDirtyBitmap *bm)
{
    NamedMark *m = find_mark(bm);
    return m && m->persistent;
}

/* The node bm belongs to. */
static BlockNode *bitmap_node(const BdrvDirtyBitmap *bm)
{
    return bdrv_dirty_bitmap_node(bm);
}

void bdrv_dirty_bitmap_set_persistent(BdrvDirtyBitmap *bm, bool persistent)
{
    NamedMark *m = get_mark(bm);
    bool was = m->persistent;

    m->persistent = persistent;
    if (!m->persistent && !m->inconsistent) {
        drop_mark(bm);
    }
    if (persistent && !was) {
        /* In the image (in use) before it records its first write. */
        BlockNode *bs = bitmap_node(bm);
        if (bs) {
            bdrv_dirty_bitmap_store_sync(bs);
        }
    }
}

void bdrv_dirty_bitmap_persist_bits(BdrvDirtyBitmap *bm)
{
    BlockNode *bs;

    if (bdrv_dirty_bitmap_persistent(bm) && (bs = bitmap_node(bm))) {
        bdrv_dirty_bitmap_store_sync(bs);
    }
}

void bdrv_dirty_bitmap_bits_removed(BdrvDirtyBitmap *bm)
{
    BlockNode *bs;

    if (bdrv_dirty_bitmap_persistent(bm) && (bs = bitmap_node(bm))) {
        bdrv_dirty_bitmap_resync_later(bs);
    }
}

bool bdrv_dirty_bitmap_inconsistent(const BdrvDirtyBitmap *bm)
{
    NamedMark *m = find_mark(bm);
    return m && m->inconsistent;
}

void bdrv_dirty_bitmap_set_inconsistent(BdrvDirtyBitmap *bm)
{
    get_mark(bm)->inconsistent = true;
    bdrv_disable_dirty_bitmap(bm);
}

void bdrv_dirty_bitmap_forget_node(BlockNode *bs)
{
    for (BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_next(bs, NULL); bm;
         bm = bdrv_dirty_bitmap_next(bs, bm)) {
        drop_mark(bm);
    }
}

void bdrv_dirty_bitmap_release_named(BdrvDirtyBitmap *bm)
{
    BlockNode *bs = bdrv_dirty_bitmap_persistent(bm) ? bitmap_node(bm)
                                                     : NULL;

    drop_mark(bm);
    bdrv_release_dirty_bitmap(bm);
    if (bs) {
        /* Removed from the image at once, as qemu does. */
        bdrv_dirty_bitmap_store_sync(bs);
    }
}

bool bdrv_can_store_new_dirty_bitmap(BlockNode *bs, const char *name,
                                     uint32_t granularity, Error **errp)
{
    if (!bs->drv->can_store_new_dirty_bitmap) {
        error_setg(errp, "Can't store persistent bitmaps to %s: Operation "
                   "not supported", bs->node_name);
        return false;
    }
    return bs->drv->can_store_new_dirty_bitmap(bs, name, granularity, errp);
}

int bdrv_dirty_bitmap_store_sync(BlockNode *bs)
{
    if (!bs->drv->dirty_bitmaps_store_sync) {
        return 0;
    }
    return bs->drv->dirty_bitmaps_store_sync(bs);
}

void bdrv_dirty_bitmap_resync_later(BlockNode *bs)
{
    if (bs->drv->dirty_bitmaps_resync_later) {
        bs->drv->dirty_bitmaps_resync_later(bs);
    }
}

uint32_t bdrv_dirty_bitmap_default_granularity(BlockNode *bs)
{
    uint32_t g = 65536;
    BlockDriverInfo bdi;

    /* As qemu: the format's cluster size, when it has one. */
    if (bdrv_get_info(bs, &bdi) == 0 && bdi.cluster_size > 0) {
        g = bdi.cluster_size;
        if (g < 4096) {
            g = 4096;
        } else if (g > 65536) {
            g = 65536;
        }
    }
    return g;
}

bool bdrv_dirty_bitmap_check_usable(const BdrvDirtyBitmap *bm, Error **errp)
{
    const char *name = bdrv_dirty_bitmap_name(bm);

    if (bdrv_dirty_bitmap_busy(bm)) {
        error_setg(errp, "Bitmap '%s' is currently in use by another "
                   "operation and cannot be used", name);
        return false;
    }
    if (bdrv_dirty_bitmap_inconsistent(bm)) {
        error_setg(errp, "Bitmap '%s' is inconsistent and cannot be used",
                   name);
        return false;
    }
    return true;
}

BdrvDirtyBitmap *bdrv_dirty_bitmap_lookup(const char *node, const char *name,
                                          BlockNode **pbs, Error **errp)
{
    BlockNode *bs = bdrv_find_node(node);
    BdrvDirtyBitmap *bm;

    if (!bs) {
        error_setg(errp, "Node '%s' not found", node);
        return NULL;
    }
    bm = bdrv_find_dirty_bitmap(bs, name);
    if (!bm) {
        error_setg(errp, "Dirty bitmap '%s' not found", name);
        return NULL;
    }
    if (pbs) {
        *pbs = bs;
    }
    return bm;
}

char *bdrv_dirty_bitmap_sha256(const BdrvDirtyBitmap *bm)
{
    uint64_t gran = bdrv_dirty_bitmap_granularity(bm);
    uint64_t size = bdrv_dirty_bitmap_size(bm);
    uint64_t nbits = (size + gran - 1) / gran;
    size_t len = (size_t)((nbits + 63) / 64) * 8;
    uint8_t *buf = bj_calloc(1, len ? len : 1);
    uint8_t digest[32];
    char *hex = bj_malloc(65);
    int64_t off = 0, bytes = 0;

    /* Rebuild the level-0 words from the dirty runs: little-endian
     * 64-bit words are the byte stream with bit i at byte i/8, bit i%8. */
    while (bdrv_dirty_bitmap_next_dirty_area(bm, &off, (int64_t)size,
                                             INT64_MAX, &bytes)) {
        uint64_t first = (uint64_t)off / gran;
        uint64_t last = ((uint64_t)off + (uint64_t)bytes - 1) / gran;
        for (uint64_t b = first; b <= last; b++) {
            buf[b / 8] |= (uint8_t)(1u << (b % 8));
        }
        off += bytes;
    }
    bj_sha256(buf, len, digest);
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    }
    free(buf);
    return hex;
}

static json_t *bitmap_info(const BdrvDirtyBitmap *bm)
{
    json_t *o = json_object();

    json_object_set_new(o, "name", json_string(bdrv_dirty_bitmap_name(bm)));
    /* A backup's frozen sync bitmap records through its successor. */
    json_object_set_new(o, "recording",
                        json_boolean(bdrv_dirty_bitmap_recording(bm)));
    json_object_set_new(o, "persistent",
                        json_boolean(bdrv_dirty_bitmap_persistent(bm)));
    json_object_set_new(o, "busy", json_boolean(bdrv_dirty_bitmap_busy(bm)));
    json_object_set_new(o, "granularity",
                        json_integer(bdrv_dirty_bitmap_granularity(bm)));
    json_object_set_new(o, "count",
                        json_integer((json_int_t)bdrv_get_dirty_count(bm)));
    if (bdrv_dirty_bitmap_inconsistent(bm)) {
        json_object_set_new(o, "inconsistent", json_true());
    }
    return o;
}

json_t *bdrv_query_dirty_bitmaps(BlockNode *bs)
{
    json_t *list = NULL;

    /* qemu keeps the newest bitmap first; ours are in creation order. */
    for (BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_next(bs, NULL); bm;
         bm = bdrv_dirty_bitmap_next(bs, bm)) {
        if (!bdrv_dirty_bitmap_name(bm)) {
            continue;     /* a job's own bitmap: qemu lists it, unnamed */
        }
        if (!list) {
            list = json_array();
        }
        json_array_insert_new(list, 0, bitmap_info(bm));
    }
    return list;
}
