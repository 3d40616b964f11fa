/*
 * qcow2 guest requests: read, write (with allocation and copy-on-write),
 * write-zeroes, discard, block status.
 *
 * Metadata is looked up and changed under s->lock; guest data moves
 * without it.  A write that needs new clusters:
 *   lock: look up, register the guest clusters in flight, allocate
 *   unlock: read the COW head/tail (backing, zeros, old or compressed
 *           cluster), write head + guest data + tail to the new clusters
 *   lock: point the L2 entries at them, queue the old clusters' refs for
 *         release, wake writers waiting on the same clusters
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "block/drivers/qcow2/qcow2.h"
#include "util/alloc.h"
#include "util/bufpool.h"
#include "util/log.h"

static void slice(IOVector *dst, IOVector *src, size_t off, size_t len)
{
    iov_vec_init(dst, src->niov + 2);
    iov_vec_concat(dst, src, off, len);
}

/* qcow2_get_mapping for a reader, under s->lock. */
static int coroutine_fn read_mapping(BDRVQcow2State *s, int64_t offset,
                                     int64_t bytes, Qcow2Mapping *m)
{
    int ret;

    co_mutex_lock(&s->lock);
    ret = qcow2_get_mapping(s, (uint64_t)offset, (uint64_t)bytes, false, m);
    co_mutex_unlock(&s->lock);
    return ret;
}

/* Reads (or writes) len bytes of qiov from qoff at offset of child c. */
static int coroutine_fn child_rw(BlockChild *c, bool write, int64_t offset,
                                 uint64_t len, IOVector *qiov, size_t qoff)
{
    IOVector sub;
    int ret;

    slice(&sub, qiov, qoff, len);
    ret = write ? bdrv_co_pwritev(c, offset, (int64_t)len, &sub, 0)
                : bdrv_co_preadv(c, offset, (int64_t)len, &sub, 0);
    iov_vec_destroy(&sub);
    return ret;
}

/*
 * An encrypted image's data: len bytes of qiov from qoff to or from host
 * offset `host` of the file.  The IVs count 512-byte sectors from the
 * start of the file (the host offset, as qemu encrypts qcow2's LUKS
 * payload), so a cluster copied elsewhere is decrypted and encrypted
 * again.  Through a bounce buffer: the caller's is never encrypted in
 * place.
 */
static int coroutine_fn crypt_rw(BDRVQcow2State *s, bool write,
                                 uint64_t host, uint64_t len,
                                 IOVector *qiov, size_t qoff)
{
    uint8_t *buf = bufpool_try_alloc(len);
    uint64_t sector = host / LUKS_SECTOR_SIZE;
    IOVector v;
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    iov_vec_init_buf(&v, buf, len);
    if (write) {
        iov_vec_to_buf(qiov, qoff, buf, len);
        ret = luks_encrypt(s->crypto, sector, buf, len);
        if (ret >= 0) {
            ret = bdrv_co_pwritev(s->bs->file, (int64_t)host, (int64_t)len,
                                  &v, 0);
        }
    } else {
        ret = bdrv_co_preadv(s->bs->file, (int64_t)host, (int64_t)len, &v,
                             0);
        if (ret >= 0) {
            ret = luks_decrypt(s->crypto, sector, buf, len);
        }
        if (ret >= 0) {
            iov_vec_from_buf(qiov, qoff, buf, len);
        }
    }
    bufpool_free(buf, len);
    return ret < 0 ? ret : 0;
}

/* Inflates one compressed cluster into out (cluster_size bytes). */
static int coroutine_fn read_compressed(BDRVQcow2State *s,
                                        const Qcow2L2Info *info,
                                        uint8_t *out)
{
    uint64_t len = info->compressed_bytes;
    uint8_t *in;
    z_stream z;
    int ret, zr;

    if (info->host_offset >= s->file_size) {
        log_error("qcow2: node '%s': compressed cluster past the end of the "
                  "image file", s->bs->node_name);
        return -EIO;
    }
    /* The last sector may be cut short by the end of the file. */
    if (len > s->file_size - info->host_offset) {
        len = s->file_size - info->host_offset;
    }
    in = bj_try_malloc(len);
    if (!in) {
        return -ENOMEM;
    }
    IOVector v;
    iov_vec_init_buf(&v, in, len);
    ret = bdrv_co_preadv(s->bs->file, (int64_t)info->host_offset,
                         (int64_t)len, &v, 0);
    if (ret < 0) {
        free(in);
        return ret;
    }
    memset(&z, 0, sizeof(z));
    /* Raw deflate, 4 KiB window: what qcow2 writers produce. */
    if (inflateInit2(&z, -12) != Z_OK) {
        free(in);
        return -ENOMEM;
    }
    z.next_in = in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = s->g.cluster_size;
    zr = inflate(&z, Z_FINISH);
    inflateEnd(&z);
    free(in);
    /* Trailing bytes of the last sector are padding, so the stream may
     * end before the input does; the output must be a whole cluster. */
    if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR) || z.avail_out != 0) {
        log_error("qcow2: node '%s': compressed cluster does not inflate "
                  "to a whole cluster", s->bs->node_name);
        return -EIO;
    }
    return 0;
}

/* Reads guest bytes that this layer leaves to the backing chain. */
static int coroutine_fn read_backing(BDRVQcow2State *s, uint64_t offset,
                                     uint64_t bytes, IOVector *qiov,
                                     size_t qoff)
{
    BlockChild *b = s->bs->backing;
    uint64_t n = 0;

    if (b) {
        int64_t blen = bdrv_getlength(b->node);
        if (blen > 0 && offset < (uint64_t)blen) {
            n = (uint64_t)blen - offset;
            n = n < bytes ? n : bytes;
            int ret = child_rw(b, false, (int64_t)offset, n, qiov, qoff);
            if (ret < 0) {
                return ret;
            }
        }
    }
    if (n < bytes) {
        iov_vec_memset(qiov, qoff + n, 0, bytes - n);
    }
    return 0;
}

int coroutine_fn qcow2_co_preadv(BlockNode *bs, int64_t offset,
                                 int64_t bytes, IOVector *qiov,
                                 unsigned flags)
{
    BDRVQcow2State *s = bs->opaque;
    size_t qoff = 0;
    int ret = 0;

    while (bytes > 0) {
        Qcow2Mapping m;
        ret = read_mapping(s, offset, bytes, &m);
        if (ret < 0) {
            return ret;
        }
        uint64_t n = m.bytes;
        uint64_t in_cl = qcow2_offset_in_cluster(&s->g, (uint64_t)offset);
        switch (m.info.type) {
        case QCOW2_CLUSTER_UNALLOCATED:
            ret = read_backing(s, (uint64_t)offset, n, qiov, qoff);
            break;
        case QCOW2_CLUSTER_ZERO_PLAIN:
        case QCOW2_CLUSTER_ZERO_ALLOC:
            iov_vec_memset(qiov, qoff, 0, n);
            break;
        case QCOW2_CLUSTER_NORMAL:
            if (s->crypto) {
                ret = crypt_rw(s, false, m.info.host_offset + in_cl, n,
                               qiov, qoff);
                break;
            }
            ret = child_rw(bs->file, false,
                           (int64_t)(m.info.host_offset + in_cl), n, qiov,
                           qoff);
            break;
        case QCOW2_CLUSTER_COMPRESSED: {
            uint8_t *buf = bj_try_malloc(s->g.cluster_size);
            if (!buf) {
                return -ENOMEM;
            }
            ret = read_compressed(s, &m.info, buf);
            if (ret >= 0) {
                iov_vec_from_buf(qiov, qoff, buf + in_cl, n);
            }
            free(buf);
            break;
        }
        }
        if (ret < 0) {
            return ret;
        }
        offset += (int64_t)n;
        bytes -= (int64_t)n;
        qoff += n;
    }
    return 0;
}

/* ---- writes ---- */

static Qcow2InflightAlloc *find_inflight(BDRVQcow2State *s, uint64_t first,
                                         uint64_t n)
{
    Qcow2InflightAlloc *a;

    list_for_each_entry(a, &s->inflight, link) {
        if (first < a->first_cluster + a->nb_clusters &&
            a->first_cluster < first + n) {
            return a;
        }
    }
    return NULL;
}

/*
 * Fills buf[0..len) with what guest bytes [goff, goff+len) read as before
 * the write, given the old mapping of their cluster (info, for the
 * cluster_index-th cluster of the run).
 */
static int coroutine_fn cow_read(BDRVQcow2State *s, const Qcow2L2Info *info,
                                 uint64_t cluster_index, uint64_t goff,
                                 uint8_t *buf, uint64_t len)
{
    uint64_t in_cl = qcow2_offset_in_cluster(&s->g, goff);
    IOVector v;
    int ret;

    iov_vec_init_buf(&v, buf, len);
    switch (info->type) {
    case QCOW2_CLUSTER_UNALLOCATED:
        return read_backing(s, goff, len, &v, 0);
    case QCOW2_CLUSTER_ZERO_PLAIN:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        memset(buf, 0, len);
        return 0;
    case QCOW2_CLUSTER_NORMAL:
        if (s->crypto) {
            return crypt_rw(s, false, info->host_offset +
                            cluster_index * s->g.cluster_size + in_cl, len,
                            &v, 0);
        }
        return bdrv_co_preadv(s->bs->file,
                              (int64_t)(info->host_offset +
                                        cluster_index * s->g.cluster_size +
                                        in_cl),
                              (int64_t)len, &v, 0);
    case QCOW2_CLUSTER_COMPRESSED: {
        uint8_t *cl = bj_try_malloc(s->g.cluster_size);
        if (!cl) {
            return -ENOMEM;
        }
        ret = read_compressed(s, info, cl);
        if (ret >= 0) {
            memcpy(buf, cl + in_cl, len);
        }
        free(cl);
        return ret;
    }
    }
    return -EIO;
}

/* Current guest content of [goff, goff+len) (extended L2 copy-on-write,
 * where one cluster mixes subcluster kinds). */
static int coroutine_fn read_guest(BDRVQcow2State *s, uint64_t goff,
                                   uint8_t *buf, uint64_t len)
{
    IOVector v;
    iov_vec_init_buf(&v, buf, len);
    return qcow2_co_preadv(s->bs, (int64_t)goff, (int64_t)len, &v, 0);
}

/* Host byte range an old L2 entry held a reference on (0 bytes: none). */
void qcow2_entry_ref(BDRVQcow2State *s, uint64_t entry, uint64_t *off,
                     uint64_t *bytes)
{
    Qcow2L2Info info;

    *bytes = 0;
    if (s->g.extended && !(entry & QCOW2_OFLAG_COMPRESSED)) {
        /* a host cluster may be held whatever the subcluster bits say */
        if (entry & QCOW2_L2E_OFFSET_MASK) {
            *off = entry & QCOW2_L2E_OFFSET_MASK;
            *bytes = s->g.cluster_size;
        }
        return;
    }
    if (!qcow2_l2_decode(&s->g, (int)s->hdr.version, entry, &info, NULL)) {
        return;   /* invalid: leak rather than free something wrong */
    }
    switch (info.type) {
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        *off = info.host_offset;
        *bytes = s->g.cluster_size;
        break;
    case QCOW2_CLUSTER_COMPRESSED:
        /* counted per host cluster touched by its sectors */
        *off = info.host_offset & ~511ull;
        *bytes = info.compressed_bytes + (info.host_offset & 511);
        break;
    default:
        break;
    }
}

/* The host clusters of a (allocated for it, counted, not referenced)
 * are in flight: refcount blocks are written without their counts. */
static void inflight_host(BDRVQcow2State *s, Qcow2InflightAlloc *a,
                          int64_t host, uint64_t n)
{
    a->host_cluster = (uint64_t)host >> s->g.cluster_bits;
    a->host_clusters = n;
}

/* a's clusters are referenced now, or about to be given back: their
 * counts must reach the disk with the next refcount write.  Before any
 * change to their counts and before the lock is next dropped. */
static void inflight_host_done(BDRVQcow2State *s, Qcow2InflightAlloc *a)
{
    if (a->host_clusters) {
        a->host_clusters = 0;
        qcow2_cache_inflight_done(s->rb_cache);
    }
}

/* Writes [offset, offset+m->bytes) into newly allocated clusters. */
static int coroutine_fn write_allocating(BDRVQcow2State *s, uint64_t offset,
                                         const Qcow2Mapping *m,
                                         IOVector *qiov, size_t qoff)
{
    const uint64_t cs = s->g.cluster_size;
    uint64_t in_cl = qcow2_offset_in_cluster(&s->g, offset);
    uint64_t first = offset >> s->g.cluster_bits;
    uint64_t n = (in_cl + m->bytes + cs - 1) >> s->g.cluster_bits;
    uint64_t tail_start = in_cl + m->bytes;
    uint64_t tail_len = n * cs - tail_start;
    Qcow2InflightAlloc *a;
    uint8_t *head = NULL, *tail = NULL;
    uint64_t *entries = NULL;
    int64_t host;
    int ret;

    /* under s->lock; the L2 table first, so that a full filesystem
     * fails the write before any data cluster is spent on it */
    ret = qcow2_prepare_l2_table(s, first);
    if (ret < 0) {
        return ret;
    }
    a = bj_calloc(1, sizeof(*a));
    a->first_cluster = first;
    a->nb_clusters = n;
    co_queue_init(&a->waiters);
    list_add_tail(&s->inflight, &a->link);
    /* (The allocator refuses clusters that overlap metadata.) */
    host = qcow2_alloc_clusters(s, n);
    if (host >= 0) {
        inflight_host(s, a, host, n);
    }
    co_mutex_unlock(&s->lock);
    if (host < 0) {
        ret = (int)host;
        goto out_locked_relock;
    }

    if (in_cl) {
        head = blk_aligned_alloc(4096, in_cl);
        ret = s->g.extended ? read_guest(s, first * cs, head, in_cl)
                            : cow_read(s, &m->info, 0, first * cs, head,
                                       in_cl);
        if (ret < 0) {
            goto out_free_clusters;
        }
    }
    if (tail_len) {
        tail = blk_aligned_alloc(4096, tail_len);
        ret = s->g.extended
              ? read_guest(s, first * cs + tail_start, tail, tail_len)
              : cow_read(s, &m->info, n - 1, first * cs + tail_start, tail,
                         tail_len);
        if (ret < 0) {
            goto out_free_clusters;
        }
    }
    IOVector v;
    iov_vec_init(&v, qiov->niov + 2);
    if (head) {
        iov_vec_add(&v, head, in_cl);
    }
    iov_vec_concat(&v, qiov, qoff, m->bytes);
    if (tail) {
        iov_vec_add(&v, tail, tail_len);
    }
    if (s->crypto) {
        ret = crypt_rw(s, true, (uint64_t)host, n * cs, &v, 0);
    } else {
        ret = bdrv_co_pwritev(s->bs->file, host, (int64_t)(n * cs), &v, 0);
    }
    iov_vec_destroy(&v);
    if (ret < 0) {
        goto out_free_clusters;
    }

    co_mutex_lock(&s->lock);
    s->data_unflushed = true;
    unsigned es = s->g.extended ? 2 : 1;
    entries = bj_calloc(n * es, 2 * sizeof(*entries));
    for (uint64_t i = 0; i < n; i++) {
        entries[i * es] = ((uint64_t)host + i * cs) | QCOW2_OFLAG_COPIED;
        if (es == 2) {
            entries[i * es + 1] = 0xffffffffull;   /* all allocated */
        }
    }
    ret = qcow2_set_l2_entries(s, first, n, entries, entries + n * es);
    inflight_host_done(s, a);
    if (ret >= 0) {
        for (uint64_t i = 0; i < n; i++) {
            uint64_t off, bytes;
            qcow2_entry_ref(s, entries[(n + i) * es], &off, &bytes);
            if (bytes) {
                qcow2_defer_free(s, off, bytes);
            }
        }
    } else {
        /* never referenced: the new clusters are only leaked if this fails
         * too, which is harmless */
        qcow2_update_refcount(s, (uint64_t)host, n * cs, -1);
    }
    free(entries);
    goto out_locked;

out_free_clusters:
    co_mutex_lock(&s->lock);
    inflight_host_done(s, a);
    qcow2_update_refcount(s, (uint64_t)host, n * cs, -1);
    goto out_locked;
out_locked_relock:
    co_mutex_lock(&s->lock);
out_locked:
    inflight_host_done(s, a);
    list_del(&a->link);
    co_queue_restart_all(&a->waiters);
    free(a);
    free(head);
    free(tail);
    return ret;   /* with s->lock held */
}

static int coroutine_fn write_compressed(BlockNode *bs, int64_t offset,
                                         int64_t bytes, IOVector *qiov,
                                         unsigned flags);

int coroutine_fn qcow2_co_pwritev(BlockNode *bs, int64_t offset,
                                  int64_t bytes, IOVector *qiov,
                                  unsigned flags)
{
    BDRVQcow2State *s = bs->opaque;
    size_t qoff = 0;
    int ret;

    if (s->broken) {
        return -EIO;
    }
    if ((ret = qcow2_bitmaps_before_write(s, offset, bytes)) < 0) {
        return ret;
    }
    if (flags & BLK_REQ_WRITE_COMPRESSED) {
        return write_compressed(bs, offset, bytes, qiov, flags);
    }
    while (bytes > 0) {
        Qcow2Mapping m;
        co_mutex_lock(&s->lock);
        for (;;) {
            ret = qcow2_get_mapping(s, (uint64_t)offset, (uint64_t)bytes,
                                    true, &m);
            if (ret < 0) {
                break;
            }
            if (m.info.type == QCOW2_CLUSTER_NORMAL && m.info.copied &&
                !s->g.extended) {
                break;
            }
            uint64_t in_cl = qcow2_offset_in_cluster(&s->g, (uint64_t)offset);
            uint64_t first = (uint64_t)offset >> s->g.cluster_bits;
            uint64_t n = (in_cl + m.bytes + s->g.cluster_size - 1) >>
                         s->g.cluster_bits;
            Qcow2InflightAlloc *a = find_inflight(s, first, n);
            if (!a) {
                break;
            }
            /* Someone is allocating these clusters: wait, then look
             * again (they will be normal clusters by then). */
            co_queue_wait(&a->waiters, &s->lock);
        }
        if (ret < 0) {
            co_mutex_unlock(&s->lock);
            return ret;
        }
        if (m.info.type == QCOW2_CLUSTER_NORMAL && m.info.copied) {
            uint64_t in_cl = qcow2_offset_in_cluster(&s->g, (uint64_t)offset);
            Qcow2InflightAlloc *a = NULL;
            if (s->g.extended) {
                /* A cluster mixes subcluster kinds: an allocating writer
                 * of another subcluster copies this one, so we hold the
                 * cluster while writing (and waited for others above). */
                a = bj_calloc(1, sizeof(*a));
                a->first_cluster = (uint64_t)offset >> s->g.cluster_bits;
                a->nb_clusters = (in_cl + m.bytes + s->g.cluster_size - 1) >>
                                 s->g.cluster_bits;
                co_queue_init(&a->waiters);
                list_add_tail(&s->inflight, &a->link);
            }
            /* A table may point this cluster at metadata: checked (and
             * the image marked corrupt) before the write, under the lock
             * that keeps the metadata map still. */
            ret = qcow2_ol_pre_write(s, 0, m.info.host_offset + in_cl,
                                     m.bytes);
            co_mutex_unlock(&s->lock);
            if (ret >= 0 && s->crypto) {
                ret = crypt_rw(s, true, m.info.host_offset + in_cl, m.bytes,
                               qiov, qoff);
                s->data_unflushed = true;
            } else if (ret >= 0) {
                ret = child_rw(bs->file, true,
                               (int64_t)(m.info.host_offset + in_cl),
                               m.bytes, qiov, qoff);
                s->data_unflushed = true;
            }
            if (a) {
                co_mutex_lock(&s->lock);
                list_del(&a->link);
                co_queue_restart_all(&a->waiters);
                free(a);
                co_mutex_unlock(&s->lock);
            }
        } else {
            /* A run longer than one allocation may take is written in
             * parts (the loop goes on with the rest). */
            uint64_t in_cl = qcow2_offset_in_cluster(&s->g, (uint64_t)offset);
            uint64_t max = qcow2_max_alloc_clusters(&s->g) * s->g.cluster_size;
            if (in_cl + m.bytes > max) {
                m.bytes = max - in_cl;
            }
            ret = write_allocating(s, (uint64_t)offset, &m, qiov, qoff);
            co_mutex_unlock(&s->lock);
        }
        if (ret < 0) {
            return ret;
        }
        offset += (int64_t)m.bytes;
        bytes -= (int64_t)m.bytes;
        qoff += m.bytes;
    }
    if (flags & BLK_REQ_FUA) {
        return bs->drv->co_flush(bs);
    }
    return 0;
}

/* ---- compressed writes (backup with compress=true) ---- */

/*
 * Room for len bytes of compressed data (a multiple of align, at most a
 * cluster), packed right after the previous compressed cluster as the
 * qcow2 format allows (a compressed cluster may start anywhere and cross
 * into the next host cluster): in the host cluster the cursor is in when
 * it fits, else spilling into a newly allocated cluster when that one
 * follows it, else at the start of a new cluster.  Every host cluster
 * the bytes touch gets one more reference, as the specification counts
 * them (one per compressed cluster touching it).  *cl, *n: those host
 * clusters, in flight for the caller from now on.  Caller holds s->lock.
 */
static int64_t coroutine_fn alloc_compressed(BDRVQcow2State *s,
                                             Qcow2InflightAlloc *a,
                                             uint64_t len, uint64_t align)
{
    const uint64_t cs = s->g.cluster_size;
    uint64_t cur = s->comp_cursor;
    unsigned bits = 1u << s->hdr.refcount_order;
    uint64_t max = bits >= 64 ? UINT64_MAX : (1ull << bits) - 1;
    int64_t nc;
    int ret;

    if (align > cs) {
        cur = 0;   /* sharing a request-aligned block: never */
    }
    if (cur) {
        uint64_t rc;
        ret = qcow2_get_refcount(s, cur / cs, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc == 0 || rc >= max) {
            cur = 0;   /* freed meanwhile, or no more references fit */
        }
    }
    if (cur && cur % cs + len <= cs) {
        ret = qcow2_update_refcount(s, cur, len, 1);
        if (ret < 0) {
            return ret;
        }
        inflight_host(s, a, (int64_t)(cur - cur % cs), 1);
    } else {
        nc = qcow2_alloc_clusters(s, 1);
        if (nc < 0) {
            return nc;
        }
        inflight_host(s, a, nc, 1);
        if (cur && (uint64_t)nc == cur - cur % cs + cs) {
            /* Until the next line the cursor's cluster may reach the disk
             * counted one more than referenced: a leak at worst. */
            ret = qcow2_update_refcount(s, cur, 1, 1);
            if (ret < 0) {
                inflight_host_done(s, a);
                qcow2_update_refcount(s, (uint64_t)nc, cs, -1);
                return ret;
            }
            inflight_host(s, a, (int64_t)(cur - cur % cs), 2);
        } else {
            cur = (uint64_t)nc;
        }
    }
    s->comp_cursor = (cur + len) % cs ? cur + len : 0;
    return (int64_t)cur;
}

/*
 * Deflates one cluster (raw deflate, 4 KiB window, as qemu writes them)
 * and packs it after the previous compressed cluster (alloc_compressed),
 * mapped by a compressed L2 entry.  Returns 1 without writing when the
 * data does not shrink.
 */
static int coroutine_fn write_compressed_cluster(BDRVQcow2State *s,
                                                 uint64_t offset,
                                                 const uint8_t *data)
{
    const uint64_t cs = s->g.cluster_size;
    uint64_t first = offset >> s->g.cluster_bits;
    uint8_t *out = blk_aligned_alloc(4096, cs);
    uint64_t align = 1, clen, wlen, ents[2];
    Qcow2InflightAlloc *a;
    z_stream z;
    int64_t host;
    int ret, zr;

    /* Byte-exact as qemu packs them; unless the file wants aligned
     * requests (O_DIRECT): then whole blocks, which no two compressed
     * clusters share, so no read-modify-write happens below us. */
    if (s->bs->file->node->bl.request_alignment > align) {
        align = s->bs->file->node->bl.request_alignment;
    }
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        free(out);
        return -ENOMEM;
    }
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)cs;
    z.next_out = out;
    z.avail_out = (uInt)cs;
    zr = deflate(&z, Z_FINISH);
    clen = cs - z.avail_out;
    deflateEnd(&z);
    if (zr != Z_STREAM_END || clen >= cs) {
        free(out);
        return 1;
    }
    wlen = (clen + align - 1) / align * align;
    if (wlen > cs) {
        free(out);
        return 1;   /* would not save a cluster once aligned */
    }
    memset(out + clen, 0, wlen - clen);

    co_mutex_lock(&s->lock);
    while ((a = find_inflight(s, first, 1))) {
        co_queue_wait(&a->waiters, &s->lock);
    }
    a = bj_calloc(1, sizeof(*a));
    a->first_cluster = first;
    a->nb_clusters = 1;
    co_queue_init(&a->waiters);
    list_add_tail(&s->inflight, &a->link);
    host = alloc_compressed(s, a, wlen, align);
    co_mutex_unlock(&s->lock);
    if (host < 0) {
        ret = (int)host;
        co_mutex_lock(&s->lock);
        goto out;
    }
    IOVector v;
    iov_vec_init_buf(&v, out, wlen);
    ret = bdrv_co_pwritev(s->bs->file, host, (int64_t)wlen, &v, 0);
    co_mutex_lock(&s->lock);
    if (ret < 0) {
        inflight_host_done(s, a);
        qcow2_update_refcount(s, (uint64_t)host, wlen, -1);
        goto out;
    }
    s->data_unflushed = true;
    ents[0] = qcow2_l2_make_compressed(&s->g, (uint64_t)host, clen);
    ents[1] = 0;
    ret = qcow2_set_l2_entries(s, first, 1, ents, ents + 1);
    inflight_host_done(s, a);
    if (ret >= 0) {
        uint64_t off, bytes;
        qcow2_entry_ref(s, ents[1], &off, &bytes);
        if (bytes) {
            qcow2_defer_free(s, off, bytes);
        }
        ret = 0;
    } else {
        qcow2_update_refcount(s, (uint64_t)host, wlen, -1);
    }
out:
    inflight_host_done(s, a);
    list_del(&a->link);
    co_queue_restart_all(&a->waiters);
    free(a);
    co_mutex_unlock(&s->lock);
    free(out);
    return ret;
}

/* [offset, offset+bytes) cluster by cluster: compressed where it shrinks,
 * an ordinary write otherwise (and for images whose entries cannot say
 * "compressed": extended L2, external data file).  The last cluster of
 * an image whose size is not a multiple of it is padded with zeroes. */
static int coroutine_fn write_compressed(BlockNode *bs, int64_t offset,
                                         int64_t bytes, IOVector *qiov,
                                         unsigned flags)
{
    BDRVQcow2State *s = bs->opaque;
    const uint64_t cs = s->g.cluster_size;
    uint8_t *buf;
    size_t qoff = 0;
    int ret = 0;

    flags &= ~(unsigned)BLK_REQ_WRITE_COMPRESSED;
    if (s->g.extended || s->hdr.data_file || s->crypto ||
        qcow2_offset_in_cluster(&s->g, (uint64_t)offset)) {
        return qcow2_co_pwritev(bs, offset, bytes, qiov, flags);
    }
    buf = blk_aligned_alloc(4096, cs);
    while (bytes > 0 && ret >= 0) {
        uint64_t n = (uint64_t)bytes < cs ? (uint64_t)bytes : cs;
        if (n < cs && (uint64_t)offset + n < s->hdr.size) {
            /* Not a whole cluster and not the image's last one. */
            IOVector sub;
            slice(&sub, qiov, qoff, n);
            ret = qcow2_co_pwritev(bs, offset, (int64_t)n, &sub, flags);
            iov_vec_destroy(&sub);
        } else {
            memset(buf, 0, cs);
            iov_vec_to_buf(qiov, qoff, buf, n);
            ret = write_compressed_cluster(s, (uint64_t)offset, buf);
            if (ret == 1) {
                IOVector sub;
                slice(&sub, qiov, qoff, n);
                ret = qcow2_co_pwritev(bs, offset, (int64_t)n, &sub, flags);
                iov_vec_destroy(&sub);
            }
        }
        offset += (int64_t)n;
        bytes -= (int64_t)n;
        qoff += n;
    }
    free(buf);
    if (ret >= 0 && (flags & BLK_REQ_FUA)) {
        return bs->drv->co_flush(bs);
    }
    return ret < 0 ? ret : 0;
}

/* ---- zeroes and discard: L2 entries only, whole clusters ---- */

typedef enum { OP_ZERO, OP_ZERO_UNMAP, OP_DISCARD } ClusterOp;

static uint64_t new_entry(BDRVQcow2State *s, ClusterOp op, uint64_t old)
{
    Qcow2L2Info info;
    bool ok = qcow2_l2_decode(&s->g, (int)s->hdr.version, old, &info, NULL);

    if (op == OP_DISCARD) {
        /* With a backing file, unallocated would let old backing data show
         * through: discarded clusters read as zeroes (v3) instead. */
        if (s->bs->backing) {
            return s->hdr.version >= 3 ? QCOW2_OFLAG_ZERO : old;
        }
        return 0;
    }
    if (op == OP_ZERO && ok && info.copied &&
        (info.type == QCOW2_CLUSTER_NORMAL ||
         info.type == QCOW2_CLUSTER_ZERO_ALLOC)) {
        /* keep the allocation: a later write reuses it in place */
        return info.host_offset | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO;
    }
    return QCOW2_OFLAG_ZERO;
}

/* Extended L2: whole clusters become all-zero or unallocated subclusters
 * and give up their host cluster. */
static void new_entry_ext(BDRVQcow2State *s, ClusterOp op, uint64_t *ne)
{
    ne[0] = 0;
    ne[1] = (op != OP_DISCARD || s->bs->backing) ? 0xffffffff00000000ull : 0;
}

static int coroutine_fn change_clusters(BDRVQcow2State *s, uint64_t first,
                                        uint64_t n, ClusterOp op)
{
    unsigned es = s->g.extended ? 2 : 1;
    uint64_t *e = bj_try_calloc(2 * s->g.l2_size * es, sizeof(*e));
    int ret = 0;

    if (!e) {
        return -ENOMEM;
    }
    while (n > 0) {
        uint64_t l2i = first & (s->g.l2_size - 1);
        uint64_t k = s->g.l2_size - l2i;
        bool change = false;
        k = k < n ? k : n;

        while (find_inflight(s, first, k)) {
            co_queue_wait(&find_inflight(s, first, k)->waiters, &s->lock);
        }
        ret = qcow2_read_l2_entries(s, first, k, e);
        if (ret < 0) {
            break;
        }
        uint64_t *ne = e + k * es;
        for (uint64_t i = 0; i < k; i++) {
            if (es == 2) {
                new_entry_ext(s, op, ne + i * 2);
                change |= ne[i * 2] != e[i * 2] ||
                          ne[i * 2 + 1] != e[i * 2 + 1];
            } else {
                ne[i] = new_entry(s, op, e[i]);
                change |= ne[i] != e[i];
            }
        }
        if (change) {
            ret = qcow2_set_l2_entries(s, first, k, ne, e);
            if (ret < 0) {
                break;
            }
            for (uint64_t i = 0; i < k; i++) {
                uint64_t off, bytes, noff, nbytes;
                qcow2_entry_ref(s, e[i * es], &off, &bytes);
                qcow2_entry_ref(s, ne[i * es], &noff, &nbytes);
                if (bytes && !(nbytes && noff == off)) {
                    qcow2_defer_free(s, off, bytes);
                }
            }
        }
        first += k;
        n -= k;
    }
    free(e);
    return ret;
}

/* True if guest [offset, offset+bytes) of one cluster already reads as
 * zeroes without looking at data. */
static int coroutine_fn reads_as_zero(BDRVQcow2State *s, uint64_t offset,
                                      uint64_t bytes)
{
    Qcow2Mapping m;
    int ret;

    co_mutex_lock(&s->lock);
    ret = qcow2_get_mapping(s, offset, bytes, true, &m);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }
    if (m.bytes < bytes) {
        return 0;
    }
    if (m.info.type == QCOW2_CLUSTER_ZERO_PLAIN ||
        m.info.type == QCOW2_CLUSTER_ZERO_ALLOC) {
        return 1;
    }
    return m.info.type == QCOW2_CLUSTER_UNALLOCATED && !s->bs->backing;
}

static int coroutine_fn write_zero_bytes(BlockNode *bs, uint64_t offset,
                                         uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = reads_as_zero(s, offset, bytes);
    if (ret != 0) {
        return ret < 0 ? ret : 0;
    }
    void *buf = bj_try_calloc(1, bytes);
    IOVector v;
    if (!buf) {
        return -ENOMEM;
    }
    iov_vec_init_buf(&v, buf, bytes);
    ret = qcow2_co_pwritev(bs, (int64_t)offset, (int64_t)bytes, &v, 0);
    free(buf);
    return ret;
}

int coroutine_fn qcow2_co_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                        int64_t bytes, unsigned flags)
{
    BDRVQcow2State *s = bs->opaque;
    const uint64_t cs = s->g.cluster_size;
    uint64_t start = (uint64_t)offset, end = (uint64_t)(offset + bytes);
    uint64_t a = (start + cs - 1) / cs * cs;
    uint64_t b = end / cs * cs;
    int ret = 0;

    if (s->broken) {
        return -EIO;
    }
    if (s->hdr.version < 3) {
        return -ENOTSUP;   /* no zero flag: the layer writes zero buffers */
    }
    if ((ret = qcow2_bitmaps_before_write(s, offset, bytes)) < 0) {
        return ret;
    }
    /* A partial last cluster at the end of the image counts as whole. */
    if (end == s->hdr.size && end % cs) {
        b = (end + cs - 1) / cs * cs;
    }
    if (a >= b) {
        if (flags & BLK_REQ_NO_FALLBACK) {
            return -ENOTSUP;
        }
        ret = write_zero_bytes(bs, start, end - start);
    } else {
        if ((start < a || b < end) && (flags & BLK_REQ_NO_FALLBACK)) {
            return -ENOTSUP;
        }
        if (start < a) {
            ret = write_zero_bytes(bs, start, a - start);
        }
        if (ret >= 0) {
            co_mutex_lock(&s->lock);
            ret = change_clusters(s, a / cs, (b - a) / cs,
                                  (flags & BLK_REQ_MAY_UNMAP) ? OP_ZERO_UNMAP
                                                              : OP_ZERO);
            co_mutex_unlock(&s->lock);
        }
        if (ret >= 0 && b < end) {
            ret = write_zero_bytes(bs, b, end - b);
        }
    }
    if (ret >= 0 && (flags & BLK_REQ_FUA)) {
        ret = bs->drv->co_flush(bs);
    }
    return ret;
}

int coroutine_fn qcow2_co_pdiscard(BlockNode *bs, int64_t offset,
                                   int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    const uint64_t cs = s->g.cluster_size;
    uint64_t a = ((uint64_t)offset + cs - 1) / cs;
    uint64_t end = (uint64_t)(offset + bytes);
    uint64_t b = end / cs;
    int ret;

    if (s->broken) {
        return -EIO;
    }
    /* The last cluster may be partial at the end of the image. */
    if (end == s->hdr.size && end % cs) {
        b++;
    }
    if ((ret = qcow2_bitmaps_before_write(s, offset, bytes)) < 0) {
        return ret;
    }
    if (a >= b) {
        return 0;   /* discard is a hint: partial clusters stay */
    }
    co_mutex_lock(&s->lock);
    ret = change_clusters(s, a, b - a, OP_DISCARD);
    co_mutex_unlock(&s->lock);
    return ret;
}

int coroutine_fn qcow2_co_block_status(BlockNode *bs, int64_t offset,
                                       int64_t bytes, int64_t *pnum,
                                       int64_t *map, BlockNode **file)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Mapping m;
    int ret;

    ret = read_mapping(s, offset, bytes, &m);
    if (ret < 0) {
        return ret;
    }
    *pnum = (int64_t)m.bytes;
    switch (m.info.type) {
    case QCOW2_CLUSTER_NORMAL:
        if (s->crypto) {
            /* The file holds ciphertext there: no offset to read through. */
            return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED;
        }
        *map = (int64_t)(m.info.host_offset +
                         qcow2_offset_in_cluster(&s->g, (uint64_t)offset));
        *file = bs->file->node;
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED |
               BLK_STATUS_OFFSET_VALID;
    case QCOW2_CLUSTER_COMPRESSED:
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED;
    case QCOW2_CLUSTER_ZERO_PLAIN:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        return BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
    default:
        return bs->backing ? 0 : BLK_STATUS_ZERO;
    }
}
