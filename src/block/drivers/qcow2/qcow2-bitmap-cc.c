/*
 * Crash-consistent persistent bitmaps (docs/bitmaps.md, "After a crash").
 *
 * Invariant, while a node is open read-write and armed: the stored copy
 * of every persistent bitmap is a superset of its in-memory bits plus the
 * granules of every write, write-zeroes and discard that has started to
 * change the image.  So a bitmap found in_use after a crash still names
 * every granule that may differ since it was last exact.
 *
 * How:
 *   arm       (read-write open, reopen read-write, add/remove of a
 *             persistent bitmap, a command adding bits) every consistent
 *             persistent bitmap is written to new clusters, every table
 *             entry allocated, flags in_use; the directory gets our
 *             extension (generation, directory offset and size, how many
 *             leading entries are armed) and our autoclear bit; all of it
 *             is durable before the header points at it, and the header
 *             before the old clusters are freed.
 *   write     before a request changes anything, the granules it touches
 *             are set in each recording bitmap's shadow (the stored
 *             copy); the data clusters that changed are written in place
 *             with FUA, once for every writer waiting then.  Granules
 *             already set cost nothing.
 *   resync    about a second after bits left a bitmap in memory (clear,
 *             the end of a backup), the node is drained and the clusters
 *             whose stored bits differ from the exact ones are rewritten
 *             in place: the stored copy shrinks back
 *             (qcow2-bitmap-resync.c).
 *   close     qcow2-bitmap.c stores the exact bits as qemu does and drops
 *             our extension and bit.
 *
 * Trust at open: an in_use entry is loaded as consistent only if our
 * autoclear bit is set (any other program that opens the image read-write
 * clears autoclear bits it does not know) and our extension describes
 * this very directory, the entry being among the armed ones.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "block/dirty-bitmap-named.h"
#include "block/drivers/qcow2/qcow2-bitmap-int.h"
#include "util/alloc.h"
#include "util/iov.h"
#include "util/log.h"

void qcow2_bm_free_shadows(Qcow2Bitmaps *b)
{
    for (uint32_t i = 0; i < b->nsh; i++) {
        free(b->sh[i].name);
        free(b->sh[i].bits);
        free(b->sh[i].data_off);
        free(b->sh[i].dirty);
    }
    free(b->sh);
    b->sh = NULL;
    b->nsh = 0;
}

static uint64_t nb_granules(BDRVQcow2State *s, unsigned gb)
{
    return (s->hdr.size + (1ull << gb) - 1) >> gb;
}

/*
 * Sets bits [first, last] (LSB first in each byte, as on disk); marks the
 * clusters (per_cluster bits each) whose bytes changed in dirty, if given.
 * Whole bytes at a time: a large write-zeroes may span millions of
 * granules.  Returns whether any bit was clear.
 */
static bool set_bit_range(uint8_t *bits, uint64_t first, uint64_t last,
                          bool *dirty, uint64_t per_cluster)
{
    bool changed = false;

    while (first <= last) {
        uint64_t byte = first / 8;
        uint8_t m;
        uint64_t next;
        if (first % 8 == 0 && last - first >= 7) {
            uint64_t nbytes = (last - first + 1) / 8;
            for (uint64_t i = 0; i < nbytes; i++) {
                if (bits[byte + i] != 0xff) {
                    bits[byte + i] = 0xff;
                    changed = true;
                    if (dirty) {
                        dirty[(byte + i) * 8 / per_cluster] = true;
                    }
                }
            }
            next = first + nbytes * 8;
        } else {
            uint64_t hi = first | 7;
            if (hi > last) {
                hi = last;
            }
            m = (uint8_t)(((2u << (hi % 8)) - 1) & ~((1u << (first % 8)) - 1));
            if ((bits[byte] & m) != m) {
                bits[byte] |= m;
                changed = true;
                if (dirty) {
                    dirty[byte * 8 / per_cluster] = true;
                }
            }
            next = hi + 1;
        }
        first = next;
    }
    return changed;
}

/* ORs bm's granules into bits; marks the changed clusters in dirty. */
static void or_into(BDRVQcow2State *s, uint8_t *bits, unsigned gb,
                    const BdrvDirtyBitmap *bm, bool *dirty)
{
    int64_t end = (int64_t)s->hdr.size, off = 0, bytes = 0;

    if ((int64_t)bdrv_dirty_bitmap_size(bm) < end) {
        end = (int64_t)bdrv_dirty_bitmap_size(bm);
    }
    while (bdrv_dirty_bitmap_next_dirty_area(bm, &off, end, INT64_MAX,
                                             &bytes)) {
        set_bit_range(bits, (uint64_t)off >> gb,
                      (uint64_t)(off + bytes - 1) >> gb, dirty,
                      (uint64_t)s->g.cluster_size * 8);
        off += bytes;
    }
}

void qcow2_bm_or_bits(BDRVQcow2State *s, uint8_t *bits, unsigned gb,
                      const BdrvDirtyBitmap *bm)
{
    or_into(s, bits, gb, bm, NULL);
}

static void cc_init(Qcow2Bitmaps *b)
{
    if (!b->waiters_init) {
        co_queue_init(&b->waiters);
        b->waiters_init = true;
    }
}

void coroutine_fn qcow2_bm_cc_acquire(Qcow2Bitmaps *b)
{
    cc_init(b);
    while (b->busy) {
        co_queue_wait(&b->waiters, NULL);
    }
    b->busy = true;
    b->seq_started++;
}

void qcow2_bm_cc_release(Qcow2Bitmaps *b)
{
    b->seq_done = b->seq_started;
    b->busy = false;
    co_queue_restart_all(&b->waiters);
}

uint32_t qcow2_bm_cc_trusted(BDRVQcow2State *s)
{
    Qcow2RawExt *ext = qcow2_bm_find_ext(&s->hdr, QCOW2_EXT_BJ_CC);
    Qcow2Bitmaps *b = s->bitmaps;

    if (!ext || ext->len < BJCC_EXT_LEN ||
        be32_get(ext->data) != BJCC_VERSION) {
        return 0;
    }
    b->generation = be64_get(ext->data + 8);
    if (!(s->hdr.autoclear_features & QCOW2_AUTOCLEAR_BJ_CC) ||
        be64_get(ext->data + 16) != b->dir_offset ||
        be64_get(ext->data + 24) != b->dir_size ||
        be32_get(ext->data + 32) != b->nb ||
        be32_get(ext->data + 4) > b->nb) {
        return 0;
    }
    return be32_get(ext->data + 4);
}

static const Qcow2BitmapShadow *find_shadow(const Qcow2Bitmaps *b,
                                            const char *name)
{
    for (uint32_t i = 0; i < b->nsh; i++) {
        if (!strcmp(b->sh[i].name, name)) {
            return &b->sh[i];
        }
    }
    return NULL;
}

/* Writes one armed bitmap: its shadow (old shadow | in-memory bits, and
 * the successor's while frozen) to fully allocated new clusters. */
/* The entry of the directory on disk named name, or -1. */
static int old_index(const Qcow2Bitmaps *b, const char *name)
{
    for (uint32_t i = 0; i < b->nb; i++) {
        if (!strcmp(b->e[i].name, name)) {
            return (int)i;
        }
    }
    return -1;
}

/*
 * A bitmap armed already keeps its clusters (an add or remove of another
 * bitmap costs nothing for it): its shadow is copied, the in-memory bits
 * are ORed in and the clusters that changed written in place -- growing
 * the stored copy is safe at any time.  Returns the old entry's index.
 */
static int coroutine_fn reuse_armed(BDRVQcow2State *s, BdrvDirtyBitmap *bm,
                                    Qcow2BitmapShadow *sh,
                                    Qcow2BitmapEntry *e, int *ret)
{
    Qcow2Bitmaps *b = s->bitmaps;
    const uint64_t cs = s->g.cluster_size;
    unsigned gb = (unsigned)__builtin_ctzll(bdrv_dirty_bitmap_granularity(bm));
    uint64_t ts = qcow2_bm_table_entries(s, gb);
    const Qcow2BitmapShadow *old = find_shadow(b, bdrv_dirty_bitmap_name(bm));
    int i = old_index(b, bdrv_dirty_bitmap_name(bm));

    *ret = 0;
    if (!b->armed || !old || i < 0 || old->gran_bits != gb ||
        old->table_size != ts || old->nbits != nb_granules(s, gb) ||
        b->e[i].table_size != ts || (b->e[i].flags & BME_FLAG_EXTRA_COMPAT)) {
        return -1;
    }
    sh->name = bj_strdup(old->name);
    sh->gran_bits = old->gran_bits;
    sh->table_size = old->table_size;
    sh->nbits = old->nbits;
    sh->bits = blk_aligned_alloc(4096, ts * cs);
    sh->data_off = bj_calloc(ts, sizeof(*sh->data_off));
    sh->dirty = bj_calloc(ts, sizeof(*sh->dirty));
    memcpy(sh->bits, old->bits, ts * cs);
    memcpy(sh->data_off, old->data_off, ts * sizeof(*sh->data_off));
    memcpy(sh->dirty, old->dirty, ts * sizeof(*sh->dirty));
    or_into(s, sh->bits, gb, bm, sh->dirty);
    if (bdrv_dirty_bitmap_successor(bm)) {
        or_into(s, sh->bits, gb, bdrv_dirty_bitmap_successor(bm), sh->dirty);
    }
    uint8_t *buf = blk_aligned_alloc(4096, cs);
    for (uint64_t c = 0; *ret >= 0 && c < ts; c++) {
        if (sh->dirty[c]) {
            sh->dirty[c] = false;
            memcpy(buf, sh->bits + c * cs, cs);
            *ret = qcow2_write_meta(s, sh->data_off[c], buf, cs);
        }
    }
    free(buf);
    *e = b->e[i];
    e->name = sh->name;
    e->flags = BME_FLAG_IN_USE |
               (bdrv_dirty_bitmap_recording(bm) ? BME_FLAG_AUTO : 0);
    return i;
}

static int coroutine_fn write_armed(BDRVQcow2State *s, BdrvDirtyBitmap *bm,
                                    Qcow2BitmapShadow *sh,
                                    Qcow2BitmapEntry *e)
{
    const uint64_t cs = s->g.cluster_size;
    const Qcow2BitmapShadow *old;
    unsigned gb = (unsigned)__builtin_ctzll(bdrv_dirty_bitmap_granularity(bm));
    uint64_t ts = qcow2_bm_table_entries(s, gb);
    uint64_t tbytes = ts * 8, tclusters = (tbytes + cs - 1) / cs;
    uint8_t *table;
    int64_t data, toff;
    int ret;

    sh->name = bj_strdup(bdrv_dirty_bitmap_name(bm));
    sh->gran_bits = (uint8_t)gb;
    sh->table_size = (uint32_t)ts;
    sh->nbits = nb_granules(s, gb);
    sh->bits = blk_aligned_alloc(4096, ts * cs);
    sh->data_off = bj_calloc(ts, sizeof(*sh->data_off));
    sh->dirty = bj_calloc(ts, sizeof(*sh->dirty));
    table = blk_aligned_alloc(4096, tclusters * cs);
    memset(sh->bits, 0, ts * cs);
    memset(table, 0, tclusters * cs);
    old = find_shadow(s->bitmaps, sh->name);
    if (old && old->gran_bits == gb && old->table_size == ts) {
        memcpy(sh->bits, old->bits, ts * cs);
    }
    qcow2_bm_or_bits(s, sh->bits, gb, bm);
    if (bdrv_dirty_bitmap_successor(bm)) {
        qcow2_bm_or_bits(s, sh->bits, gb, bdrv_dirty_bitmap_successor(bm));
    }

    data = qcow2_alloc_clusters(s, ts);
    if (data < 0) {
        ret = (int)data;
        goto out;
    }
    for (uint64_t i = 0; i < ts; i++) {
        sh->data_off[i] = (uint64_t)data + i * cs;
        be64_put(table + 8 * i, sh->data_off[i]);
    }
    ret = qcow2_write_meta(s, (uint64_t)data, sh->bits, ts * cs);
    if (ret < 0) {
        goto out;
    }
    toff = qcow2_alloc_clusters(s, tclusters);
    if (toff < 0) {
        ret = (int)toff;
        goto out;
    }
    ret = qcow2_write_meta(s, (uint64_t)toff, table, tclusters * cs);
    e->name = sh->name;
    e->table_offset = (uint64_t)toff;
    e->table_size = (uint32_t)ts;
    e->granularity_bits = (uint8_t)gb;
    e->flags = BME_FLAG_IN_USE |
               (bdrv_dirty_bitmap_recording(bm) ? BME_FLAG_AUTO : 0);
out:
    free(table);
    return ret;
}

/* Frees what a failed rewrite built (the clusters leak, harmlessly). */
static void drop_shadows(Qcow2BitmapShadow *sh, uint32_t n)
{
    Qcow2Bitmaps tmp = { .sh = sh, .nsh = n };
    qcow2_bm_free_shadows(&tmp);
}

/* A header extension as it was, to put back. */
typedef struct SavedExt {
    uint8_t *data;             /* NULL: absent */
    uint32_t len;
} SavedExt;

static void save_ext(Qcow2Header *h, uint32_t type, SavedExt *x)
{
    Qcow2RawExt *e = qcow2_bm_find_ext(h, type);

    x->data = NULL;
    x->len = 0;
    if (e) {
        x->data = bj_malloc(e->len ? e->len : 1);
        memcpy(x->data, e->data, e->len);
        x->len = e->len;
    }
}

static void restore_ext(Qcow2Header *h, uint32_t type, SavedExt *x)
{
    qcow2_bm_set_raw_ext(h, type, x->data, x->len);
    free(x->data);
    x->data = NULL;
}

/*
 * The header cannot take the new directory (cluster 0 is full: 512-byte
 * clusters, a long backing file name): qemu's protocol instead, the
 * entries of the directory we have marked in_use in place, no shadow (a
 * crash leaves them inconsistent).  Drops what the rewrite allocated.
 */
static int coroutine_fn fallback_in_place(BDRVQcow2State *s,
                                          const Qcow2BitmapEntry *ne,
                                          uint32_t nn, uint32_t ntot,
                                          uint64_t dir_off, uint64_t dir_size)
{
    Qcow2Bitmaps *b = s->bitmaps;
    int ret = 0;

    log_warn("qcow2: node '%s': no room in the header cluster for "
             "crash-consistent bitmaps; they will read as inconsistent "
             "after a crash", s->bs->node_name);
    for (uint32_t i = 0; ret >= 0 && i < nn; i++) {
        bool live = false;     /* reused: still the old entry's clusters */
        for (uint32_t j = 0; j < b->nb; j++) {
            live |= b->e[j].table_offset == ne[i].table_offset;
        }
        if (!live) {
            ret = qcow2_bm_free_clusters(s, &ne[i]);
        }
    }
    if (ret >= 0 && ntot) {
        ret = qcow2_update_refcount(s, dir_off, dir_size, -1);
    }
    if (ret >= 0 && (s->hdr.autoclear_features & QCOW2_AUTOCLEAR_BJ_CC)) {
        /* Never vouch for what we write without a shadow. */
        qcow2_bm_set_raw_ext(&s->hdr, QCOW2_EXT_BJ_CC, NULL, 0);
        s->hdr.autoclear_features &= ~QCOW2_AUTOCLEAR_BJ_CC;
        ret = qcow2_write_header(s);
        if (ret >= 0) {
            ret = qcow2_flush_file(s);
        }
    }
    if (ret >= 0 && b->nb) {
        uint8_t *dir = bj_calloc(1, b->dir_size);
        uint64_t pos = 0;
        for (uint32_t i = 0; i < b->nb; i++) {
            b->e[i].flags |= BME_FLAG_IN_USE;
            qcow2_bm_serialize_entry(dir + pos, &b->e[i]);
            pos += qcow2_bm_entry_len(&b->e[i]);
        }
        ret = qcow2_write_meta(s, b->dir_offset, dir, b->dir_size);
        if (ret >= 0) {
            ret = qcow2_flush_file(s);
        }
        free(dir);
    }
    if (ret >= 0) {
        ret = qcow2_flush_metadata(s);
    }
    return ret;
}

/*
 * Rewrites the directory armed (see the top of the file).  Caller holds
 * s->lock.  Entries of inconsistent bitmaps are carried unchanged after
 * the armed ones; bitmaps no longer in memory are dropped from the image.
 */
static int coroutine_fn cc_rewrite(BDRVQcow2State *s)
{
    Qcow2Bitmaps *b = s->bitmaps;
    BlockNode *bs = s->bs;
    Qcow2BitmapEntry *ne;
    Qcow2BitmapShadow *nsh;
    bool *carried;
    uint32_t cap = 0, nn = 0, ntot = 0;
    uint64_t dir_size = 0;
    int64_t dir_off = 0;
    bool switched = false;
    int ret = 0;

    qcow2_bm_cc_acquire(b);
    for (BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_next(bs, NULL); bm;
         bm = bdrv_dirty_bitmap_next(bs, bm)) {
        cap += bdrv_dirty_bitmap_persistent(bm);
    }
    if (!cap && !b->nb && !(s->hdr.autoclear_features & QCOW2_AUTOCLEAR_BJ_CC)
        && !qcow2_bm_find_ext(&s->hdr, QCOW2_EXT_BJ_CC)) {
        /* Nothing stored, nothing to arm: the header stays untouched. */
        b->armed = true;
        qcow2_bm_cc_release(b);
        return 0;
    }
    ne = bj_calloc(cap + b->nb + 1, sizeof(*ne));
    nsh = bj_calloc(cap + 1, sizeof(*nsh));
    carried = bj_calloc(b->nb + 1, sizeof(*carried));
    /* 1. Armed bitmaps, newest first in the directory (as at close). */
    for (BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_next(bs, NULL); bm;
         bm = bdrv_dirty_bitmap_next(bs, bm)) {
        if (!bdrv_dirty_bitmap_persistent(bm) ||
            bdrv_dirty_bitmap_inconsistent(bm)) {
            continue;
        }
        int r = reuse_armed(s, bm, &nsh[nn], &ne[nn], &ret);
        if (r >= 0) {
            carried[r] = true;      /* its clusters stay */
        } else {
            ret = write_armed(s, bm, &nsh[nn], &ne[nn]);
        }
        nn++;
        if (ret < 0) {
            goto out;
        }
    }
    for (uint32_t i = 0; i < nn / 2; i++) {
        Qcow2BitmapEntry t = ne[i];
        ne[i] = ne[nn - 1 - i];
        ne[nn - 1 - i] = t;
    }
    ntot = nn;
    for (uint32_t i = 0; i < b->nb; i++) {
        BdrvDirtyBitmap *bm = bdrv_find_dirty_bitmap(bs, b->e[i].name);
        if (bm && bdrv_dirty_bitmap_persistent(bm) &&
            bdrv_dirty_bitmap_inconsistent(bm)) {
            ne[ntot] = b->e[i];
            ne[ntot++].flags |= BME_FLAG_IN_USE;
            carried[i] = true;
        }
    }
    /* 2. The directory, then everything durable before the header. */
    ret = qcow2_bm_write_directory(s, ne, ntot, false, &dir_off, &dir_size);
    if (ret < 0) {
        goto out;
    }
    /* 3. The header switch: from here on the new directory is the one. */
    uint64_t old_autoclear = s->hdr.autoclear_features;
    SavedExt sv_bm, sv_cc;
    save_ext(&s->hdr, QCOW2_EXT_BITMAPS, &sv_bm);
    save_ext(&s->hdr, QCOW2_EXT_BJ_CC, &sv_cc);
    qcow2_bm_set_extension(s, ntot, dir_size, (uint64_t)dir_off);
    if (nn) {
        uint8_t x[BJCC_EXT_LEN] = { 0 };
        be32_put(x, BJCC_VERSION);
        be32_put(x + 4, nn);
        be64_put(x + 8, b->generation + 1);
        be64_put(x + 16, (uint64_t)dir_off);
        be64_put(x + 24, dir_size);
        be32_put(x + 32, ntot);
        qcow2_bm_set_raw_ext(&s->hdr, QCOW2_EXT_BJ_CC, x, sizeof(x));
        s->hdr.autoclear_features |= QCOW2_AUTOCLEAR_BJ_CC;
    } else {
        qcow2_bm_set_raw_ext(&s->hdr, QCOW2_EXT_BJ_CC, NULL, 0);
        s->hdr.autoclear_features &= ~QCOW2_AUTOCLEAR_BJ_CC;
    }
    ret = qcow2_write_header(s);
    if (ret == -ENOSPC && nn) {
        /* No room for our extension in cluster 0 (small clusters, a long
         * backing file name): in_use only, qemu's rule after a crash. */
        qcow2_bm_set_raw_ext(&s->hdr, QCOW2_EXT_BJ_CC, NULL, 0);
        s->hdr.autoclear_features &= ~QCOW2_AUTOCLEAR_BJ_CC;
        ret = qcow2_write_header(s);
    }
    if (ret == -ENOSPC) {
        restore_ext(&s->hdr, QCOW2_EXT_BITMAPS, &sv_bm);
        restore_ext(&s->hdr, QCOW2_EXT_BJ_CC, &sv_cc);
        s->hdr.autoclear_features = old_autoclear;
        ret = fallback_in_place(s, ne, nn, ntot, (uint64_t)dir_off,
                                dir_size);
        if (ret >= 0) {
            qcow2_bm_free_shadows(b);
            b->armed = true;
        }
        goto out;
    }
    free(sv_bm.data);
    free(sv_cc.data);
    /* 4. The old directory and the clusters of bitmaps not carried. */
    if (ret >= 0) {
        ret = qcow2_bm_switch(s, b, carried, &switched);
    }
out:
    if (switched) {
        qcow2_bm_set_directory(b, ne, ntot, (uint64_t)dir_off, dir_size);
        qcow2_bm_free_shadows(b);
        b->sh = nsh;
        b->nsh = nn;
        b->armed = true;
        b->generation++;
    } else {
        drop_shadows(nsh, nn);
    }
    if (ret < 0) {
        log_error("qcow2: node '%s': could not store persistent bitmaps "
                  "in use: %s", bs->node_name, strerror(-ret));
    }
    free(ne);
    free(carried);
    qcow2_bm_cc_release(b);
    return ret;
}

int coroutine_fn qcow2_mark_bitmaps_in_use(BDRVQcow2State *s, Error **errp)
{
    Qcow2Bitmaps *b = s->bitmaps;
    int ret = 0;

    if (!b) {
        return 0;
    }
    if (b->foreign) {
        /* A writer that does not know bitmaps had the image: whatever it
         * left, our bit must not vouch for it. */
        if (s->hdr.autoclear_features & QCOW2_AUTOCLEAR_BJ_CC) {
            s->hdr.autoclear_features &= ~QCOW2_AUTOCLEAR_BJ_CC;
            ret = qcow2_write_header(s);
            if (ret >= 0) {
                ret = qcow2_flush_file(s);
            }
        }
        goto out;
    }
    /* A node reopened read-write records into its auto bitmaps from now
     * on (a read-only open loaded them disabled). */
    for (uint32_t i = 0; i < b->nb; i++) {
        BdrvDirtyBitmap *bm = bdrv_find_dirty_bitmap(s->bs, b->e[i].name);
        if (bm && (b->e[i].flags & BME_FLAG_AUTO) &&
            !bdrv_dirty_bitmap_inconsistent(bm) &&
            !bdrv_dirty_bitmap_successor(bm)) {
            bdrv_enable_dirty_bitmap(bm);
        }
    }
    b->cc_err = 0;
    ret = cc_rewrite(s);
    if (ret >= 0) {
        b->store_on_close = true;
    }
out:
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not update the bitmap "
                         "directory");
    }
    return ret < 0 ? ret : 0;
}

/* Sets the granules of [offset, offset+bytes) in the shadows of the
 * recording bitmaps; returns whether any was not set yet. */
static bool set_granules(BDRVQcow2State *s, uint64_t offset, uint64_t bytes)
{
    Qcow2Bitmaps *b = s->bitmaps;
    const uint64_t per_cluster = (uint64_t)s->g.cluster_size * 8;
    bool need = false;

    for (uint32_t i = 0; i < b->nsh; i++) {
        Qcow2BitmapShadow *sh = &b->sh[i];
        BdrvDirtyBitmap *bm = bdrv_find_dirty_bitmap(s->bs, sh->name);
        if (!bm || !bdrv_dirty_bitmap_persistent(bm) ||
            !bdrv_dirty_bitmap_recording(bm)) {
            continue;
        }
        uint64_t n = sh->nbits;
        uint64_t first = offset >> sh->gran_bits;
        uint64_t last = (offset + bytes - 1) >> sh->gran_bits;
        if (last >= n) {
            last = n - 1;
        }
        if (first < n &&
            set_bit_range(sh->bits, first, last, sh->dirty, per_cluster)) {
            need = true;
        }
    }
    return need;
}

/* Writes the changed data clusters in place, durably. */
static int coroutine_fn run_batch(BDRVQcow2State *s)
{
    Qcow2Bitmaps *b = s->bitmaps;
    const uint64_t cs = s->g.cluster_size;
    uint8_t *buf = blk_aligned_alloc(4096, cs);
    int ret = 0;

    qcow2_bm_cc_acquire(b);
    for (uint32_t i = 0; ret >= 0 && i < b->nsh; i++) {
        Qcow2BitmapShadow *sh = &b->sh[i];
        for (uint32_t c = 0; ret >= 0 && c < sh->table_size; c++) {
            if (!sh->dirty[c]) {
                continue;
            }
            sh->dirty[c] = false;
            /* A copy: writers may set more bits while this one is out;
             * they wait for the next batch. */
            memcpy(buf, sh->bits + (uint64_t)c * cs, cs);
            /* FUA (RWF_DSYNC for a file): durable on completion without
             * a flush of the whole file, whose dirty guest data may be
             * large (cache=writeback). */
            IOVector v;
            iov_vec_init_buf(&v, buf, cs);
            ret = bdrv_co_pwritev(s->bs->file, (int64_t)sh->data_off[c],
                                  (int64_t)cs, &v, BLK_REQ_FUA);
        }
    }
    if (ret < 0) {
        /* The stored copy may now lag: refuse writes from here on (the
         * metadata write failure has marked the image broken too). */
        b->cc_err = ret;
        log_error("qcow2: node '%s': could not update persistent bitmaps: "
                  "%s", s->bs->node_name, strerror(-ret));
    }
    free(buf);
    qcow2_bm_cc_release(b);
    return ret;
}

int coroutine_fn qcow2_bitmaps_before_write(BDRVQcow2State *s, int64_t offset,
                                            int64_t bytes)
{
    Qcow2Bitmaps *b = s->bitmaps;

    if (!b || b->foreign || !b->store_on_close || bytes <= 0 ||
        s->bs->read_only) {
        return 0;
    }
    for (;;) {
        if (b->cc_err) {
            return b->cc_err;
        }
        if (!b->armed) {
            /* Stored clean (an aborted reopen read-only): arm again. */
            int ret;
            co_mutex_lock(&s->lock);
            ret = b->armed ? 0 : cc_rewrite(s);
            co_mutex_unlock(&s->lock);
            if (ret < 0) {
                return ret;
            }
            continue;
        }
        if (!set_granules(s, (uint64_t)offset, (uint64_t)bytes)) {
            return 0;
        }
        /* Covered by the first batch that starts from now on. */
        uint64_t mine = b->seq_started + 1;
        while (b->seq_done < mine && b->armed && !b->cc_err) {
            if (b->busy) {
                co_queue_wait(&b->waiters, NULL);
            } else {
                run_batch(s);
            }
        }
        /* A rewrite meanwhile may have replaced the shadows: check the
         * bits again (set ones cost nothing). */
    }
}

int coroutine_fn qcow2_bitmaps_resized(BDRVQcow2State *s)
{
    Qcow2Bitmaps *b = s->bitmaps;

    int ret;

    if (!b || b->foreign || !b->store_on_close || !b->armed) {
        return 0;
    }
    ret = cc_rewrite(s);
    if (ret >= 0) {
        /* A shrink drops bits from the in-memory bitmaps after this (the
         * layer truncates them next): exact again a little later. */
        qcow2_dirty_bitmaps_resync_later(s->bs);
    }
    return ret;
}

/* ---- changes made by commands (main loop) ---- */

int qcow2_dirty_bitmaps_store_sync(BlockNode *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (bs->read_only || !s->bitmaps || s->bitmaps->foreign ||
        !s->bitmaps->store_on_close || s->broken) {
        return 0;
    }
    return qcow2_run_locked(s, cc_rewrite);
}
