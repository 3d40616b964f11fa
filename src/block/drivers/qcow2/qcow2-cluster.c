/*
 * Guest-to-host mapping through L1/L2, metadata I/O on the file child, and
 * the crash-safe metadata flush.  All of it runs under s->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"
#include "util/log.h"

int coroutine_fn qcow2_read_meta(BDRVQcow2State *s, uint64_t offset,
                                 void *buf, uint64_t bytes)
{
    IOVector v;

    if (offset > s->file_size || bytes > s->file_size - offset) {
        log_error("qcow2: node '%s': metadata at 0x%" PRIx64 " lies past "
                  "the end of the image file", s->bs->node_name, offset);
        return -EIO;
    }
    iov_vec_init_buf(&v, buf, bytes);
    return bdrv_co_preadv(s->bs->file, (int64_t)offset, (int64_t)bytes, &v,
                          0);
}

int coroutine_fn qcow2_write_meta(BDRVQcow2State *s, uint64_t offset,
                                  const void *buf, uint64_t bytes)
{
    IOVector v;
    int ret;

    if (offset < s->g.cluster_size && offset != 0) {
        /* Nothing but the header lives in cluster 0. */
        log_error("qcow2: node '%s': refusing a metadata write into the "
                  "header cluster", s->bs->node_name);
        return -EIO;
    }
    ret = qcow2_grow_file(s, offset + bytes);
    if (ret < 0) {
        return ret;
    }
    iov_vec_init_buf(&v, (void *)buf, bytes);
    ret = bdrv_co_pwritev(s->bs->file, (int64_t)offset, (int64_t)bytes, &v,
                          0);
    if (ret < 0) {
        s->broken = true;
    }
    return ret;
}

int coroutine_fn qcow2_flush_file(BDRVQcow2State *s)
{
    int ret = bdrv_co_flush(s->bs->file->node);
    if (ret >= 0) {
        s->data_unflushed = false;
    }
    return ret;
}

int coroutine_fn qcow2_write_header(BDRVQcow2State *s)
{
    Error *err = NULL;
    uint8_t *buf = blk_aligned_alloc(4096, s->g.cluster_size);
    IOVector v;
    int ret;

    if (!qcow2_header_serialize(&s->hdr, buf, s->g.cluster_size, &err)) {
        log_error("qcow2: node '%s': %s", s->bs->node_name,
                  error_get_pretty(err));
        error_free(err);
        free(buf);
        return -ENOSPC;
    }
    iov_vec_init_buf(&v, buf, s->g.cluster_size);
    ret = bdrv_co_pwritev(s->bs->file, 0, s->g.cluster_size, &v, 0);
    free(buf);
    return ret;
}

/* The L2 table offset for l1 index i, 0 if none, or -errno. */
static int64_t coroutine_fn l2_offset(BDRVQcow2State *s, uint64_t l1i)
{
    uint64_t e, off;

    if (l1i >= s->l1_size) {
        return 0;
    }
    e = s->l1[l1i];
    off = e & QCOW2_L1E_OFFSET_MASK;
    if (off & (s->g.cluster_size - 1)) {
        /* A table in the middle of a cluster can only be damage (and
         * one inside the header cluster would be written over it; an
         * aligned one there has offset 0, "no table"). */
        qcow2_signal_corruption(s, true, -1, -1, "L2 table offset %#" PRIx64
                                " unaligned (L1 index: %#" PRIx64 ")", off,
                                l1i);
        return -EIO;
    }
    if (e & QCOW2_L1E_RESERVED) {
        log_error("qcow2: node '%s': L1 entry %" PRIu64 " is invalid "
                  "(0x%016" PRIx64 ")", s->bs->node_name, l1i, e);
        return -EIO;
    }
    return (int64_t)off;
}

/*
 * Extended L2 entries: a 64-bit cluster descriptor and a 64-bit bitmap,
 * bit n = subcluster n allocated in the host cluster, bit 32+n = subcluster
 * n reads as zeroes, neither = unallocated (backing).  Runs are made of
 * subclusters of one kind (host-contiguous for allocated ones).
 */
static int coroutine_fn get_mapping_ext(BDRVQcow2State *s, uint64_t offset,
                                        uint64_t max, uint32_t l2i,
                                        Qcow2CacheEntry *e, Qcow2Mapping *m)
{
    const Qcow2Geom *g = &s->g;
    uint32_t sc_bits = g->cluster_bits - 5;
    uint64_t in_cl = qcow2_offset_in_cluster(g, offset);
    uint64_t sc = in_cl >> sc_bits;
    uint64_t run = 0;           /* bytes from the start of the first sc */
    uint64_t want = (in_cl & ((1u << sc_bits) - 1)) + max;
    bool first = true;

    for (uint32_t i = l2i; i < g->l2_size && run < want; i++, sc = 0) {
        uint64_t desc = be64_get(e->table + (size_t)i * 16);
        uint64_t bmp = be64_get(e->table + (size_t)i * 16 + 8);
        uint64_t host = desc & QCOW2_L2E_OFFSET_MASK;

        if (desc & QCOW2_OFLAG_COMPRESSED) {
            if (!first) {
                break;
            }
            Error *err = NULL;
            if (!qcow2_l2_decode(g, 3, desc, &m->info, &err)) {
                log_error("qcow2: node '%s': %s", s->bs->node_name,
                          error_get_pretty(err));
                error_free(err);
                return -EIO;
            }
            m->bytes = g->cluster_size - in_cl;
            m->bytes = m->bytes < max ? m->bytes : max;
            return 0;
        }
        if ((desc & (QCOW2_L2E_STD_RESERVED | QCOW2_OFLAG_ZERO)) ||
            (host & (g->cluster_size - 1)) ||
            (bmp & (bmp >> 32) & 0xffffffffull) ||
            (!host && (bmp & 0xffffffffull))) {
            log_error("qcow2: node '%s': extended L2 entry %u is invalid "
                      "(0x%016" PRIx64 " 0x%016" PRIx64 ")",
                      s->bs->node_name, i, desc, bmp);
            return -EIO;
        }
        for (; sc < QCOW2_EXTL2_SUBCLUSTERS && run < want; sc++) {
            Qcow2ClusterType t = (bmp >> sc) & 1 ? QCOW2_CLUSTER_NORMAL
                               : (bmp >> (32 + sc)) & 1 ? QCOW2_CLUSTER_ZERO_PLAIN
                               : QCOW2_CLUSTER_UNALLOCATED;
            if (first) {
                memset(&m->info, 0, sizeof(m->info));
                m->info.type = t;
                m->info.host_offset = host;
                m->info.copied = desc & QCOW2_OFLAG_COPIED;
                first = false;
            } else if (t != m->info.type ||
                       (t == QCOW2_CLUSTER_NORMAL &&
                        host + (sc << sc_bits) !=
                        m->info.host_offset + in_cl -
                        (in_cl & ((1u << sc_bits) - 1)) + run)) {
                goto done;
            }
            run += 1u << sc_bits;
        }
    }
done:
    m->bytes = run - (in_cl & ((1u << sc_bits) - 1));
    m->bytes = m->bytes < max ? m->bytes : max;
    if (m->info.type == QCOW2_CLUSTER_NORMAL &&
        m->info.host_offset + in_cl + m->bytes > s->file_size) {
        log_error("qcow2: node '%s': data at 0x%" PRIx64 " lies past the "
                  "end of the image file", s->bs->node_name,
                  m->info.host_offset);
        return -EIO;
    }
    return 0;
}

/*
 * A standard L2 entry whose cluster offset is not cluster-aligned: the
 * table is damaged.  Reported as qemu reports it, differently for a write
 * (which would put data there) and a read.
 */
static bool coroutine_fn unaligned_entry(BDRVQcow2State *s, uint64_t ent,
                                         uint64_t offset, uint64_t l2off,
                                         uint32_t l2i, bool write)
{
    uint64_t host = ent & QCOW2_L2E_OFFSET_MASK;

    if ((ent & QCOW2_OFLAG_COMPRESSED) || (ent & QCOW2_L2E_STD_RESERVED) ||
        !(host & (s->g.cluster_size - 1))) {
        return false;
    }
    if (write) {
        qcow2_signal_corruption(s, true, -1, -1, "Data cluster offset %#"
                                PRIx64 " unaligned (guest offset: %#" PRIx64
                                ")", host, offset);
    } else {
        qcow2_signal_corruption(s, true, -1, -1, "Cluster allocation offset "
                                "%#" PRIx64 " unaligned (L2 offset: %#" PRIx64
                                ", L2 index: %#" PRIx32 ")", host, l2off, l2i);
    }
    return true;
}

int coroutine_fn qcow2_get_mapping(BDRVQcow2State *s, uint64_t offset,
                                   uint64_t bytes, bool write,
                                   Qcow2Mapping *m)
{
    const Qcow2Geom *g = &s->g;
    uint64_t l1i = qcow2_l1_index(g, offset);
    uint32_t l2i = qcow2_l2_index(g, offset);
    uint64_t in_cl = qcow2_offset_in_cluster(g, offset);
    uint64_t max = (uint64_t)(g->l2_size - l2i) * g->cluster_size - in_cl;
    Qcow2CacheEntry *e;
    int64_t l2off;
    int ret;

    if (max > bytes) {
        max = bytes;
    }
    l2off = l2_offset(s, l1i);
    if (l2off < 0) {
        return (int)l2off;
    }
    if (l2off == 0) {
        memset(&m->info, 0, sizeof(m->info));
        m->info.type = QCOW2_CLUSTER_UNALLOCATED;
        m->bytes = max;
        return 0;
    }
    ret = qcow2_cache_get(s, s->l2_cache, (uint64_t)l2off, false, &e);
    if (ret < 0) {
        return ret;
    }
    if (g->extended) {
        ret = get_mapping_ext(s, offset, max, l2i, e, m);
        qcow2_cache_put(e);
        return ret;
    }
    Error *err = NULL;
    uint64_t ent = be64_get(e->table + (size_t)l2i * 8);
    if (!g->extended &&
        unaligned_entry(s, ent, offset, (uint64_t)l2off, l2i, write)) {
        qcow2_cache_put(e);
        return -EIO;
    }
    if (!qcow2_l2_decode(g, (int)s->hdr.version, ent, &m->info, &err)) {
        goto bad;
    }
    uint64_t clusters = (in_cl + max + g->cluster_size - 1) >> g->cluster_bits;
    uint64_t n = 1;
    if (m->info.type != QCOW2_CLUSTER_COMPRESSED) {
        for (; n < clusters; n++) {
            Qcow2L2Info next;
            ent = be64_get(e->table + (size_t)(l2i + n) * 8);
            if (!qcow2_l2_decode(g, (int)s->hdr.version, ent, &next, NULL)) {
                /* The run ends here; the entry is judged (and reported)
                 * when a request starts at it. */
                break;
            }
            if (next.type != m->info.type || next.copied != m->info.copied) {
                break;
            }
            if (next.type == QCOW2_CLUSTER_NORMAL &&
                next.host_offset != m->info.host_offset + n * g->cluster_size) {
                break;
            }
        }
    }
    qcow2_cache_put(e);
    m->bytes = (n << g->cluster_bits) - in_cl;
    if (m->bytes > max) {
        m->bytes = max;
    }
    if (m->info.type == QCOW2_CLUSTER_NORMAL &&
        m->info.host_offset + (n << g->cluster_bits) > s->file_size) {
        log_error("qcow2: node '%s': data cluster at 0x%" PRIx64 " lies past "
                  "the end of the image file", s->bs->node_name,
                  m->info.host_offset);
        return -EIO;
    }
    return 0;

bad:
    qcow2_cache_put(e);
    log_error("qcow2: node '%s': %s", s->bs->node_name,
              error_get_pretty(err));
    error_free(err);
    return -EIO;
}

/*
 * A new L2 table (e, pinned, dirty) gets its space in the image file at
 * once, before the data it will reference, as qemu's allocation does: a
 * cluster of zeroes is written where it will live.  Left to the cache's
 * write-back, on a full filesystem the table could not be written at
 * close, after the data clusters it was to reference had been counted:
 * leaked (a backup that failed on ENOSPC left hundreds).  The table itself
 * stays in the cache and is written back in the usual crash-safe order;
 * this write only reserves space, so it goes around qcow2_write_meta (a
 * failure here is undone, not a reason to stop trusting the image, and no
 * refcount block has to be written before it).  On failure e is released.
 */
static int coroutine_fn reserve_l2_table(BDRVQcow2State *s,
                                         Qcow2CacheEntry *e)
{
    uint64_t off = e->offset, cs = s->g.cluster_size;
    void *zero = blk_aligned_alloc(4096, cs);
    IOVector v;
    int ret;

    memset(zero, 0, cs);
    iov_vec_init_buf(&v, zero, cs);
    ret = bdrv_co_pwritev(s->bs->file, (int64_t)off, (int64_t)cs, &v,
                          BLK_REQ_METADATA);
    free(zero);
    if (ret < 0) {
        qcow2_cache_put(e);
        qcow2_cache_discard(s->l2_cache, off);
        qcow2_update_refcount(s, off, cs, -1);
    }
    return ret;
}

/*
 * The new L2 table at off (just allocated) gets its cache slot, zeroed,
 * pinned and reserved; the caller names it in the L1 table before it next
 * yields.  Getting the slot may write the metadata back to make room:
 * until then the table is in flight like a data allocation, left out of
 * the refcounts that reach the disk (else a kill right after leaks it).
 * On failure the cluster is given back.
 */
static int coroutine_fn get_new_l2(BDRVQcow2State *s, uint64_t off,
                                   Qcow2CacheEntry **out)
{
    int ret;

    s->alloc_cluster = off >> s->g.cluster_bits;
    s->alloc_clusters = 1;
    ret = qcow2_cache_get(s, s->l2_cache, off, true, out);
    if (ret >= 0) {
        ret = reserve_l2_table(s, *out);
    } else {
        s->alloc_clusters = 0;
        qcow2_update_refcount(s, off, s->g.cluster_size, -1);
    }
    s->alloc_clusters = 0;
    qcow2_cache_inflight_done(s->rb_cache);
    return ret;
}

/*
 * The L2 table at old is shared with an internal snapshot (its L1 entry
 * lacks COPIED): give the active L1 its own copy.  Data clusters already
 * count one reference per L1 tree (snapshot creation added it), so only the
 * old table loses our reference, once the new L1 entry is on disk.  The
 * copied entries keep their flags (shared ones lack COPIED, and a write
 * copies those clusters in turn).  Returns the new table pinned.
 */
static int coroutine_fn cow_l2_table(BDRVQcow2State *s, uint64_t l1i,
                                     uint64_t old, Qcow2CacheEntry **out)
{
    Qcow2CacheEntry *oe, *ne;
    int64_t off;
    int ret;

    off = qcow2_alloc_clusters(s, 1);
    if (off < 0) {
        return (int)off;
    }
    ret = qcow2_cache_get(s, s->l2_cache, old, false, &oe);
    if (ret < 0) {
        return ret;
    }
    ret = get_new_l2(s, (uint64_t)off, &ne);
    if (ret < 0) {
        qcow2_cache_put(oe);
        return ret;
    }
    memcpy(ne->table, oe->table, s->g.cluster_size);
    qcow2_cache_put(oe);
    qcow2_cache_mark_dirty(s->l2_cache, ne);
    qcow2_ol_note_l2(s, old, (uint64_t)off);
    s->l1[l1i] = (uint64_t)off | QCOW2_OFLAG_COPIED;
    s->l1_dirty = true;
    qcow2_defer_free(s, old, s->g.cluster_size);
    *out = ne;
    return 0;
}

/* The writable L2 table of l1i, allocated (and reserved) or unshared
 * first if need be; returned pinned. */
static int coroutine_fn get_l2_for_write(BDRVQcow2State *s, uint64_t l1i,
                                         Qcow2CacheEntry **out)
{
    int64_t l2off = l2_offset(s, l1i);
    int ret;

    if (l2off < 0) {
        return (int)l2off;
    }
    if (l2off == 0) {
        int64_t off = qcow2_alloc_clusters(s, 1);
        if (off < 0) {
            return (int)off;
        }
        ret = get_new_l2(s, (uint64_t)off, out);
        if (ret < 0) {
            return ret;
        }
        qcow2_ol_note_l2(s, 0, (uint64_t)off);
        s->l1[l1i] = (uint64_t)off | QCOW2_OFLAG_COPIED;
        s->l1_dirty = true;
        return 0;
    }
    if (!(s->l1[l1i] & QCOW2_OFLAG_COPIED)) {
        return cow_l2_table(s, l1i, (uint64_t)l2off, out);
    }
    return qcow2_cache_get(s, s->l2_cache, (uint64_t)l2off, false, out);
}

int coroutine_fn qcow2_prepare_l2_table(BDRVQcow2State *s, uint64_t first)
{
    uint64_t l1i = first >> s->g.l2_bits;
    Qcow2CacheEntry *e;
    int ret;

    if (l1i >= s->l1_size) {
        return -EINVAL;
    }
    ret = get_l2_for_write(s, l1i, &e);
    if (ret < 0) {
        return ret;
    }
    qcow2_cache_put(e);
    return 0;
}

int coroutine_fn qcow2_set_l2_entries(BDRVQcow2State *s, uint64_t first,
                                      uint64_t n, const uint64_t *entries,
                                      uint64_t *old_entries)
{
    const Qcow2Geom *g = &s->g;
    uint64_t l1i = first >> g->l2_bits;
    uint64_t l2i = first & (g->l2_size - 1);
    Qcow2CacheEntry *e;
    int ret;

    if (l1i >= s->l1_size || l2i + n > g->l2_size) {
        return -EINVAL;
    }
    ret = get_l2_for_write(s, l1i, &e);
    if (ret < 0) {
        return ret;
    }
    unsigned es = g->extended ? 2 : 1;
    for (uint64_t i = 0; i < n; i++) {
        for (unsigned w = 0; w < es; w++) {
            uint8_t *p = e->table + ((l2i + i) * es + w) * 8;
            if (old_entries) {
                old_entries[i * es + w] = be64_get(p);
            }
            be64_put(p, entries[i * es + w]);
        }
    }
    qcow2_cache_mark_dirty(s->l2_cache, e);
    qcow2_cache_put(e);
    return 0;
}

int coroutine_fn qcow2_read_l2_entries(BDRVQcow2State *s, uint64_t first,
                                       uint64_t n, uint64_t *out)
{
    const Qcow2Geom *g = &s->g;
    uint64_t l1i = first >> g->l2_bits;
    uint64_t l2i = first & (g->l2_size - 1);
    Qcow2CacheEntry *e;
    int64_t l2off;
    int ret;

    if (l1i >= s->l1_size || l2i + n > g->l2_size) {
        return -EINVAL;
    }
    l2off = l2_offset(s, l1i);
    unsigned es = g->extended ? 2 : 1;
    if (l2off <= 0) {
        memset(out, 0, n * es * sizeof(*out));
        return (int)l2off;
    }
    ret = qcow2_cache_get(s, s->l2_cache, (uint64_t)l2off, false, &e);
    if (ret < 0) {
        return ret;
    }
    for (uint64_t i = 0; i < n * es; i++) {
        out[i] = be64_get(e->table + (l2i * es + i) * 8);
    }
    qcow2_cache_put(e);
    return 0;
}

static int coroutine_fn write_l1(BDRVQcow2State *s)
{
    uint64_t bytes = (uint64_t)s->l1_size * 8;
    uint8_t *buf = blk_aligned_alloc(4096, bytes ? bytes : 8);
    int ret;

    for (uint32_t i = 0; i < s->l1_size; i++) {
        be64_put(buf + (size_t)i * 8, s->l1[i]);
    }
    ret = qcow2_ol_pre_write(s, QCOW2_OL_ACTIVE_L1, s->hdr.l1_table_offset,
                             bytes);
    if (ret >= 0 && bytes) {
        ret = qcow2_write_meta(s, s->hdr.l1_table_offset, buf, bytes);
    }
    free(buf);
    if (ret >= 0) {
        s->l1_dirty = false;
    }
    return ret;
}

int coroutine_fn qcow2_write_back(BDRVQcow2State *s)
{
    bool l2_dirty = qcow2_cache_has_dirty(s->l2_cache);
    int ret;

    /* 1. refcount increases (and data) before anything references them */
    ret = qcow2_cache_flush(s, s->rb_cache);
    if (ret < 0) {
        return ret;
    }
    if ((l2_dirty || s->l1_dirty) && s->data_unflushed) {
        ret = qcow2_flush_file(s);
        if (ret < 0) {
            return ret;
        }
    }
    /* 2. L2 tables, then the L1 table that points at new ones */
    ret = qcow2_cache_flush(s, s->l2_cache);
    if (ret < 0) {
        return ret;
    }
    if (s->l1_dirty) {
        if (l2_dirty) {
            ret = qcow2_flush_file(s);
            if (ret < 0) {
                return ret;
            }
        }
        ret = write_l1(s);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

int coroutine_fn qcow2_flush_metadata(BDRVQcow2State *s)
{
    int ret = qcow2_write_back(s);

    if (ret < 0) {
        return ret;
    }
    /* 3. only once no table references them may clusters lose a ref */
    if (s->nb_pending) {
        ret = qcow2_flush_file(s);
        if (ret < 0) {
            return ret;
        }
        ret = qcow2_apply_pending_frees(s);
        if (ret < 0) {
            return ret;
        }
        ret = qcow2_cache_flush(s, s->rb_cache);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}
