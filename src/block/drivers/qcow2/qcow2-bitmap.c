/*
 * Persistent dirty bitmaps in the qcow2 bitmaps extension
 * (docs/interop/qcow2.txt, "Bitmaps extension").
 *
 * Life of a bitmap here:
 *   open      every directory entry becomes a named in-memory bitmap; one
 *             found `in_use` was left by a writer that did not close the
 *             image: it is loaded empty and marked inconsistent (refused
 *             for use until removed) -- unless our crash-consistent mode
 *             vouches for it (qcow2-bitmap-cc.c), then it is loaded.
 *             Read-write: qcow2-bitmap-cc.c arms the bitmaps before any
 *             guest write.
 *   close     the consistent persistent bitmaps are written to new
 *             clusters with a new directory, exactly as qemu writes them;
 *             the header is switched to it (in_use clear, our extension
 *             and autoclear bit gone); only then are the old clusters
 *             freed, so a crash at any point leaves a valid image (at
 *             worst leaks).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/dirty-bitmap-named.h"
#include "block/drivers/qcow2/qcow2-bitmap-int.h"
#include "util/alloc.h"
#include "util/log.h"

Qcow2RawExt *qcow2_bm_find_ext(Qcow2Header *h, uint32_t type)
{
    for (unsigned i = 0; i < h->nb_raw_exts; i++) {
        if (h->raw_exts[i].type == type) {
            return &h->raw_exts[i];
        }
    }
    return NULL;
}

static Qcow2RawExt *find_ext(Qcow2Header *h)
{
    return qcow2_bm_find_ext(h, QCOW2_EXT_BITMAPS);
}

void qcow2_bm_set_raw_ext(Qcow2Header *h, uint32_t type, const uint8_t *data,
                          uint32_t len)
{
    Qcow2RawExt *ext = qcow2_bm_find_ext(h, type);

    if (!data) {
        if (ext) {
            unsigned i = (unsigned)(ext - h->raw_exts);
            free(ext->data);
            memmove(ext, ext + 1, (h->nb_raw_exts - i - 1) * sizeof(*ext));
            h->nb_raw_exts--;
        }
        return;
    }
    if (!ext) {
        Qcow2RawExt *r = bj_realloc(h->raw_exts,
                                    (h->nb_raw_exts + 1) * sizeof(*r));
        h->raw_exts = r;
        ext = &r[h->nb_raw_exts++];
        ext->type = type;
        ext->data = NULL;
    }
    free(ext->data);
    ext->data = bj_malloc(len ? len : 1);
    memcpy(ext->data, data, len);
    ext->len = len;
}

static void free_entries(Qcow2BitmapEntry *e, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(e[i].name);
        free(e[i].extra);
    }
    free(e);
}

void qcow2_bm_set_directory(Qcow2Bitmaps *b, const Qcow2BitmapEntry *ne,
                            uint32_t n, uint64_t dir_off, uint64_t dir_size)
{
    Qcow2BitmapEntry *e = bj_calloc(n ? n : 1, sizeof(*e));
    for (uint32_t i = 0; i < n; i++) {
        e[i] = ne[i];
        e[i].name = bj_strdup(ne[i].name);
        e[i].extra = NULL;
        if (ne[i].extra_size) {
            e[i].extra = bj_malloc(ne[i].extra_size);
            memcpy(e[i].extra, ne[i].extra, ne[i].extra_size);
        }
    }
    free_entries(b->e, b->nb);
    b->e = e;
    b->nb = n;
    b->dir_offset = n ? dir_off : 0;
    b->dir_size = n ? dir_size : 0;
}

void qcow2_free_bitmaps(BDRVQcow2State *s)
{
    Qcow2Bitmaps *b = s->bitmaps;

    if (!b) {
        return;
    }
    qcow2_bm_cc_free_resync(b);
    free_entries(b->e, b->nb);
    qcow2_bm_free_shadows(b);
    free(b);
    s->bitmaps = NULL;
}

/* Table entries needed for a bitmap of gran_bits over the image. */
uint64_t qcow2_bm_table_entries(BDRVQcow2State *s, unsigned gran_bits)
{
    uint64_t bits = (s->hdr.size + (1ull << gran_bits) - 1) >> gran_bits;
    uint64_t per_cluster = (uint64_t)s->g.cluster_size * 8;
    return (bits + per_cluster - 1) / per_cluster;
}

static bool parse_directory(BDRVQcow2State *s, const uint8_t *dir,
                            uint64_t size, uint32_t nb, Error **errp)
{
    Qcow2Bitmaps *b = s->bitmaps;
    uint64_t pos = 0;

    b->e = bj_calloc(nb, sizeof(*b->e));
    for (uint32_t i = 0; i < nb; i++) {
        Qcow2BitmapEntry *e = &b->e[b->nb];
        if (pos + BME_HEADER_SIZE > size) {
            goto bad;
        }
        const uint8_t *p = dir + pos;
        uint8_t type = p[16];
        uint16_t name_size = be16_get(p + 18);
        e->table_offset = be64_get(p);
        e->table_size = be32_get(p + 8);
        e->flags = be32_get(p + 12);
        e->granularity_bits = p[17];
        e->extra_size = be32_get(p + 20);
        uint64_t len = BME_HEADER_SIZE + (uint64_t)e->extra_size + name_size;
        if (pos + len > size || name_size == 0 ||
            name_size > BDRV_BITMAP_MAX_NAME_SIZE || type != BME_TYPE_DIRTY ||
            e->granularity_bits < 9 || e->granularity_bits > 31 ||
            (e->table_offset & ~BME_TABLE_OFFSET_MASK) ||
            e->table_offset < s->g.cluster_size ||
            e->table_size != qcow2_bm_table_entries(s, e->granularity_bits) ||
            e->table_size > BM_MAX_TABLE_SIZE ||
            (e->extra_size && !(e->flags & BME_FLAG_EXTRA_COMPAT))) {
            goto bad;
        }
        e->name = bj_strndup((const char *)p + BME_HEADER_SIZE + e->extra_size,
                             name_size);
        b->nb++;
        if (e->extra_size) {
            e->extra = bj_malloc(e->extra_size);
            memcpy(e->extra, p + BME_HEADER_SIZE, e->extra_size);
        }
        pos += (len + 7) & ~7ull;
    }
    return true;

bad:
    error_setg(errp, "qcow2: invalid bitmap directory entry %u", b->nb);
    return false;
}

/* Fills bm from its bitmap table. */
static int coroutine_fn load_data(BDRVQcow2State *s,
                                  const Qcow2BitmapEntry *e,
                                  BdrvDirtyBitmap *bm)
{
    const uint64_t cs = s->g.cluster_size;
    const uint64_t gran = 1ull << e->granularity_bits;
    const uint64_t span = cs * 8 * gran;     /* guest bytes per cluster */
    uint64_t tbytes = (uint64_t)e->table_size * 8;
    uint8_t *table = bj_malloc(tbytes ? tbytes : 1);
    uint8_t *data = bj_malloc(cs);
    int ret = 0;

    ret = qcow2_read_meta(s, e->table_offset, table, tbytes);
    for (uint32_t i = 0; ret >= 0 && i < e->table_size; i++) {
        uint64_t ent = be64_get(table + 8 * i);
        uint64_t off = ent & BME_TABLE_OFFSET_MASK;
        uint64_t base = i * span;
        if (!off) {
            if (ent & 1) {
                bdrv_set_dirty_bitmap(bm, (int64_t)base, (int64_t)span);
            }
            continue;
        }
        ret = qcow2_read_meta(s, off, data, cs);
        if (ret < 0) {
            break;
        }
        for (uint64_t bit = 0; bit < cs * 8; bit++) {
            if (data[bit / 8] & (1u << (bit % 8))) {
                uint64_t start = base + bit * gran;
                if (start >= s->hdr.size) {
                    break;
                }
                bdrv_set_dirty_bitmap(bm, (int64_t)start, (int64_t)gran);
            }
        }
    }
    free(table);
    free(data);
    return ret < 0 ? ret : 0;
}

int coroutine_fn qcow2_load_bitmaps(BDRVQcow2State *s, Error **errp)
{
    Qcow2RawExt *ext = find_ext(&s->hdr);
    BlockNode *bs = s->bs;
    uint8_t *dir = NULL;
    int ret;

    s->bitmaps = bj_calloc(1, sizeof(*s->bitmaps));
    if (!ext) {
        return 0;
    }
    if (!(s->hdr.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        s->bitmaps->foreign = true;
        return 0;
    }
    if (ext->len < 24) {
        error_setg(errp, "qcow2: invalid bitmaps extension");
        return -EINVAL;
    }
    uint32_t nb = be32_get(ext->data);
    uint64_t size = be64_get(ext->data + 8);
    uint64_t off = be64_get(ext->data + 16);
    if (nb == 0 || nb > BM_MAX_NB || size > BM_MAX_DIR_SIZE ||
        size < (uint64_t)nb * BME_HEADER_SIZE ||
        (off & (s->g.cluster_size - 1)) || off < s->g.cluster_size ||
        off > s->file_size || size > s->file_size - off) {
        error_setg(errp, "qcow2: invalid bitmaps extension");
        return -EINVAL;
    }
    dir = bj_try_malloc(size);
    if (!dir) {
        error_setg(errp, "qcow2: not enough memory for a bitmap directory of "
                   "%" PRIu64 " bytes", size);
        return -ENOMEM;
    }
    ret = qcow2_read_meta(s, off, dir, size);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the bitmap "
                         "directory");
        goto out;
    }
    s->bitmaps->dir_offset = off;
    s->bitmaps->dir_size = size;
    if (!parse_directory(s, dir, size, nb, errp)) {
        ret = -EINVAL;
        goto out;
    }

    /* Entries left in_use by our crash-consistent mode are trusted
     * (docs/bitmaps.md, "After a crash"). */
    uint32_t trusted = qcow2_bm_cc_trusted(s);

    /* The layer sets the node's length after open; bitmaps need it now. */
    bs->total_bytes = (int64_t)s->hdr.size;
    for (uint32_t i = 0; i < s->bitmaps->nb; i++) {
        Qcow2BitmapEntry *e = &s->bitmaps->e[i];
        BdrvDirtyBitmap *bm = bdrv_create_dirty_bitmap(
            bs, 1u << e->granularity_bits, e->name, errp);
        if (!bm) {
            ret = -EINVAL;
            goto out;
        }
        bdrv_dirty_bitmap_set_persistent(bm, true);
        if ((e->flags & BME_FLAG_IN_USE) && i >= trusted) {
            bdrv_dirty_bitmap_set_inconsistent(bm);
            continue;
        }
        ret = load_data(s, e, bm);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not read bitmap '%s'",
                             e->name);
            goto out;
        }
        /* An auto bitmap records on a read-only node too (qsd 7.2 says
         * recording: true): nothing writes there until a reopen. */
        if (!(e->flags & BME_FLAG_AUTO)) {
            bdrv_disable_dirty_bitmap(bm);
        }
    }
    ret = 0;
out:
    free(dir);
    return ret;
}

bool qcow2_can_store_new_dirty_bitmap(BlockNode *bs, const char *name,
                                      uint32_t granularity, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    if (bs->read_only) {
        error_setg(errp, "Can't store persistent bitmaps to %s: Read-only "
                   "file system", bs->node_name);
        return false;
    }
    if (s->hdr.version < 3 || !s->bitmaps || s->bitmaps->foreign) {
        error_setg(errp, "Can't store persistent bitmaps to %s: Operation "
                   "not supported", bs->node_name);
        return false;
    }
    unsigned n = 0;
    for (BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_next(bs, NULL); bm;
         bm = bdrv_dirty_bitmap_next(bs, bm)) {
        n += bdrv_dirty_bitmap_persistent(bm);
    }
    if (n >= BM_MAX_NB) {
        error_setg(errp, "Can't make bitmap '%s' persistent in '%s': Maximum "
                   "number of persistent bitmaps is already reached", name,
                   bs->node_name);
        return false;
    }
    (void)granularity;
    return true;
}

/* ---- store at close ---- */

static const Qcow2BitmapEntry *old_entry(const Qcow2Bitmaps *b,
                                         const char *name)
{
    for (uint32_t i = 0; i < b->nb; i++) {
        if (!strcmp(b->e[i].name, name)) {
            return &b->e[i];
        }
    }
    return NULL;
}

/* Writes bm's data clusters and table; fills e (owned strings borrowed). */
static int coroutine_fn write_bitmap(BDRVQcow2State *s, BdrvDirtyBitmap *bm,
                                     Qcow2BitmapEntry *e)
{
    const uint64_t cs = s->g.cluster_size;
    const uint64_t gran = bdrv_dirty_bitmap_granularity(bm);
    const uint64_t span = cs * 8 * gran;
    uint8_t *table, *data;
    uint64_t tbytes;
    int ret = 0;

    e->granularity_bits = (uint8_t)__builtin_ctzll(gran);
    e->table_size = (uint32_t)qcow2_bm_table_entries(s, e->granularity_bits);
    e->flags = bdrv_dirty_bitmap_enabled(bm) ? BME_FLAG_AUTO : 0;
    tbytes = (uint64_t)e->table_size * 8;
    table = bj_calloc(1, tbytes ? tbytes : 1);
    data = blk_aligned_alloc(4096, cs);
    for (uint32_t i = 0; i < e->table_size; i++) {
        int64_t off = (int64_t)(i * span), bytes = 0;
        int64_t end = (int64_t)((i + 1) * span);
        bool any = false;
        if (end > (int64_t)s->hdr.size) {
            end = (int64_t)s->hdr.size;
        }
        memset(data, 0, cs);
        while (bdrv_dirty_bitmap_next_dirty_area(bm, &off, end, INT64_MAX,
                                                 &bytes)) {
            uint64_t first = ((uint64_t)off - i * span) / gran;
            uint64_t last = ((uint64_t)(off + bytes) - 1 - i * span) / gran;
            for (uint64_t bit = first; bit <= last; bit++) {
                data[bit / 8] |= (uint8_t)(1u << (bit % 8));
            }
            any = true;
            off += bytes;
        }
        if (!any) {
            continue;           /* entry 0: all zeros */
        }
        int64_t host = qcow2_alloc_clusters(s, 1);
        if (host < 0) {
            ret = (int)host;
            goto out;
        }
        ret = qcow2_write_meta(s, (uint64_t)host, data, cs);
        if (ret < 0) {
            goto out;
        }
        be64_put(table + 8 * i, (uint64_t)host);
    }
    uint64_t tclusters = (tbytes + cs - 1) / cs;
    int64_t toff = qcow2_alloc_clusters(s, tclusters ? tclusters : 1);
    if (toff < 0) {
        ret = (int)toff;
        goto out;
    }
    e->table_offset = (uint64_t)toff;
    ret = qcow2_write_meta(s, e->table_offset, table, tbytes);
out:
    free(table);
    free(data);
    return ret;
}

/*
 * A bitmap table or data cluster that lies on other metadata (a damaged
 * table): freeing it would hand that metadata to the next allocation,
 * which writes over it.  The image is marked corrupt instead.
 */
static int coroutine_fn refuse_metadata(BDRVQcow2State *s, uint64_t off,
                                        uint64_t len)
{
    unsigned kind = qcow2_ol_find(s, 0, off, len);

    if (!kind) {
        return 0;
    }
    qcow2_signal_corruption(s, true, (int64_t)off, (int64_t)len,
                            "Bitmap cluster to be freed overlaps with %s",
                            qcow2_ol_name(kind));
    return -EIO;
}

int coroutine_fn qcow2_bm_switch(BDRVQcow2State *s, const Qcow2Bitmaps *b,
                                 const bool *carried, bool *switched)
{
    int ret = qcow2_flush_file(s);

    if (ret < 0) {
        return ret;
    }
    *switched = true;
    for (uint32_t i = 0; ret >= 0 && i < b->nb; i++) {
        if (!carried[i]) {
            ret = qcow2_bm_free_clusters(s, &b->e[i]);
        }
    }
    if (ret >= 0 && b->nb) {
        ret = qcow2_update_refcount(s, b->dir_offset, b->dir_size, -1);
    }
    if (ret >= 0) {
        ret = qcow2_flush_metadata(s);
    }
    return ret;
}

/* Drops the references of a stored bitmap's table and data clusters. */
int coroutine_fn qcow2_bm_free_clusters(BDRVQcow2State *s,
                                        const Qcow2BitmapEntry *e)
{
    const uint64_t cs = s->g.cluster_size;
    uint64_t tbytes = (uint64_t)e->table_size * 8;
    uint8_t *table = bj_malloc(tbytes ? tbytes : 1);
    int ret;

    ret = qcow2_read_meta(s, e->table_offset, table, tbytes);
    if (ret >= 0) {
        ret = refuse_metadata(s, e->table_offset, tbytes ? tbytes : 1);
    }
    for (uint32_t i = 0; ret >= 0 && i < e->table_size; i++) {
        uint64_t off = be64_get(table + 8 * i) & BME_TABLE_OFFSET_MASK;
        if (off) {
            ret = refuse_metadata(s, off, cs);
        }
        if (off && ret >= 0) {
            ret = qcow2_update_refcount(s, off, cs, -1);
        }
    }
    if (ret >= 0) {
        ret = qcow2_update_refcount(s, e->table_offset,
                                    tbytes ? tbytes : 1, -1);
    }
    free(table);
    return ret;
}

uint64_t qcow2_bm_entry_len(const Qcow2BitmapEntry *e)
{
    uint64_t len = BME_HEADER_SIZE + (uint64_t)e->extra_size +
                   strlen(e->name);
    return (len + 7) & ~7ull;
}

void qcow2_bm_serialize_entry(uint8_t *p, const Qcow2BitmapEntry *e)
{
    size_t name_size = strlen(e->name);

    be64_put(p, e->table_offset);
    be32_put(p + 8, e->table_size);
    be32_put(p + 12, e->flags);
    p[16] = BME_TYPE_DIRTY;
    p[17] = e->granularity_bits;
    p[18] = (uint8_t)(name_size >> 8);
    p[19] = (uint8_t)name_size;
    be32_put(p + 20, e->extra_size);
    if (e->extra_size) {
        memcpy(p + BME_HEADER_SIZE, e->extra, e->extra_size);
    }
    memcpy(p + BME_HEADER_SIZE + e->extra_size, e->name, name_size);
}

int coroutine_fn qcow2_bm_write_directory(BDRVQcow2State *s,
                                          const Qcow2BitmapEntry *e,
                                          uint32_t n, bool newest_first,
                                          int64_t *off, uint64_t *size)
{
    uint64_t cs = s->g.cluster_size, len = 0, pos = 0;
    int ret;

    *off = 0;
    *size = 0;
    for (uint32_t i = 0; i < n; i++) {
        len += qcow2_bm_entry_len(&e[i]);
    }
    if (n) {
        uint8_t *dir = bj_calloc(1, len);
        for (uint32_t k = 0; k < n; k++) {
            const Qcow2BitmapEntry *x = &e[newest_first ? n - 1 - k : k];
            qcow2_bm_serialize_entry(dir + pos, x);
            pos += qcow2_bm_entry_len(x);
        }
        int64_t o = qcow2_alloc_clusters(s, (len + cs - 1) / cs);
        ret = o < 0 ? (int)o : qcow2_write_meta(s, (uint64_t)o, dir, len);
        free(dir);
        if (ret < 0) {
            return ret;
        }
        *off = o;
        *size = len;
    }
    ret = qcow2_flush_metadata(s);
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    return ret;
}

void qcow2_bm_set_extension(BDRVQcow2State *s, uint32_t nb, uint64_t dir_size,
                            uint64_t dir_off)
{
    Qcow2Header *h = &s->hdr;
    uint8_t d[24];

    if (!nb) {
        qcow2_bm_set_raw_ext(h, QCOW2_EXT_BITMAPS, NULL, 0);
        h->autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
        return;
    }
    be32_put(d, nb);
    be32_put(d + 4, 0);
    be64_put(d + 8, dir_size);
    be64_put(d + 16, dir_off);
    qcow2_bm_set_raw_ext(h, QCOW2_EXT_BITMAPS, d, sizeof(d));
    h->autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
}

int coroutine_fn qcow2_store_bitmaps(BDRVQcow2State *s)
{
    Qcow2Bitmaps *b = s->bitmaps;
    BlockNode *bs = s->bs;
    Qcow2BitmapEntry *ne = NULL;
    bool *carried = NULL;   /* old entry i kept as it is */
    uint32_t nn = 0, cap = 0;
    uint64_t dir_size = 0;
    int64_t dir_off = 0;
    bool switched = false;
    int ret = 0;

    if (!b || b->foreign || !b->store_on_close || bs->read_only ||
        s->broken) {
        return 0;
    }
    for (BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_next(bs, NULL); bm;
         bm = bdrv_dirty_bitmap_next(bs, bm)) {
        cap += bdrv_dirty_bitmap_persistent(bm);
    }
    if (!cap && !b->nb) {
        return 0;
    }
    qcow2_bm_cc_acquire(b);
    ne = bj_calloc(cap ? cap : 1, sizeof(*ne));
    carried = bj_calloc(b->nb ? b->nb : 1, sizeof(*carried));
    /* 1. New clusters for every consistent bitmap; an inconsistent one
     * keeps its entry (in_use) and clusters until it is removed. */
    for (BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_next(bs, NULL); bm;
         bm = bdrv_dirty_bitmap_next(bs, bm)) {
        if (!bdrv_dirty_bitmap_persistent(bm)) {
            continue;
        }
        const Qcow2BitmapEntry *old = old_entry(b, bdrv_dirty_bitmap_name(bm));
        Qcow2BitmapEntry *e = &ne[nn++];
        e->name = (char *)bdrv_dirty_bitmap_name(bm);
        if (old) {
            carried[old - b->e] = bdrv_dirty_bitmap_inconsistent(bm);
        }
        if (old && bdrv_dirty_bitmap_inconsistent(bm)) {
            *e = *old;
            e->flags |= BME_FLAG_IN_USE;
            continue;
        }
        ret = write_bitmap(s, bm, e);
        if (ret < 0) {
            goto out;
        }
    }
    /* 2. The directory, newest bitmap first as qemu lists them; 3. new
     * clusters and their refcounts durable, then the header. */
    ret = qcow2_bm_write_directory(s, ne, nn, true, &dir_off, &dir_size);
    if (ret < 0) {
        goto out;
    }
    qcow2_bm_set_extension(s, nn, dir_size, (uint64_t)dir_off);
    /* A clean image: nothing left for the crash-consistent mode. */
    qcow2_bm_set_raw_ext(&s->hdr, QCOW2_EXT_BJ_CC, NULL, 0);
    s->hdr.autoclear_features &= ~QCOW2_AUTOCLEAR_BJ_CC;
    ret = qcow2_write_header(s);
    /* 4. Nothing points at the old directory or at the old clusters of
     * rewritten and removed bitmaps any more: free them. */
    if (ret >= 0) {
        ret = qcow2_bm_switch(s, b, carried, &switched);
    }
out:
    if (switched) {
        /* The image is clean now (at worst with leaks): a node that stays
         * writable (an aborted reopen read-only) arms again before its
         * next write. */
        qcow2_bm_set_directory(b, ne, nn, (uint64_t)dir_off, dir_size);
        qcow2_bm_free_shadows(b);
        b->armed = false;
    }
    qcow2_bm_cc_release(b);
    if (ret < 0) {
        log_error("qcow2: node '%s': could not store persistent bitmaps: %s",
                  bs->node_name, strerror(-ret));
    }
    free(ne);
    free(carried);
    return ret;
}
