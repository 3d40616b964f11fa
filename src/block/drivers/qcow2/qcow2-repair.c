/*
 * Refcount repair for images with the dirty bit (lazy refcounts: the
 * writer postponed refcount updates and did not close cleanly).
 *
 * Every reference in the image is counted in memory (header, L1, L2
 * tables, data and compressed clusters, the refcount structures), then each
 * refcount that differs is rewritten, and the dirty bit cleared once the
 * new refcounts are on disk.  Images with internal snapshots or bitmaps
 * (more references to follow) are refused rather than repaired partly.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"
#include "util/alloc.h"
#include "util/log.h"

/* Above this many clusters the count array is refused (1 GiB of memory). */
#define REPAIR_MAX_CLUSTERS (1ull << 28)

typedef struct Counts {
    uint32_t *c;
    uint64_t n;
    bool bad;            /* a reference points past the end of the file */
} Counts;

static void count_range(Counts *k, const Qcow2Geom *g, uint64_t off,
                        uint64_t bytes)
{
    if (!bytes) {
        return;
    }
    uint64_t first = off >> g->cluster_bits;
    uint64_t last = (off + bytes - 1) >> g->cluster_bits;
    for (uint64_t i = first; i <= last; i++) {
        if (i >= k->n) {
            k->bad = true;
            return;
        }
        if (k->c[i] != UINT32_MAX) {
            k->c[i]++;
        }
    }
}

static int coroutine_fn count_l2(BDRVQcow2State *s, Counts *k,
                                 uint64_t l2off, uint8_t *table)
{
    int ret = qcow2_read_meta(s, l2off, table, s->g.cluster_size);
    if (ret < 0) {
        return ret;
    }
    unsigned es = s->g.extended ? 2 : 1;
    for (uint32_t i = 0; i < s->g.l2_size; i++) {
        Qcow2L2Info info;
        uint64_t e = be64_get(table + (size_t)i * 8 * es);
        if (es == 2 && !(e & QCOW2_OFLAG_COMPRESSED)) {
            /* the host cluster is held whatever the subcluster bits say */
            count_range(k, &s->g, e & QCOW2_L2E_OFFSET_MASK,
                        (e & QCOW2_L2E_OFFSET_MASK) ? s->g.cluster_size : 0);
            continue;
        }
        if (!qcow2_l2_decode(&s->g, (int)s->hdr.version, e, &info, NULL)) {
            return -EIO;
        }
        switch (info.type) {
        case QCOW2_CLUSTER_NORMAL:
        case QCOW2_CLUSTER_ZERO_ALLOC:
            count_range(k, &s->g, info.host_offset, s->g.cluster_size);
            break;
        case QCOW2_CLUSTER_COMPRESSED:
            count_range(k, &s->g, info.host_offset & ~511ull,
                        info.compressed_bytes + (info.host_offset & 511));
            break;
        default:
            break;
        }
    }
    return 0;
}

static int coroutine_fn count_all(BDRVQcow2State *s, Counts *k)
{
    const Qcow2Geom *g = &s->g;
    uint8_t *table = blk_aligned_alloc(4096, g->cluster_size);
    int ret = 0;

    count_range(k, g, 0, g->cluster_size);
    count_range(k, g, s->hdr.l1_table_offset, (uint64_t)s->l1_size * 8);
    count_range(k, g, s->hdr.refcount_table_offset,
                (uint64_t)s->hdr.refcount_table_clusters * g->cluster_size);
    for (uint64_t i = 0; i < s->reftable_entries; i++) {
        count_range(k, g, s->reftable[i] & QCOW2_REFT_OFFSET_MASK,
                    s->reftable[i] ? g->cluster_size : 0);
    }
    for (uint32_t i = 0; i < s->l1_size && ret >= 0; i++) {
        uint64_t l2off = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (!l2off) {
            continue;
        }
        count_range(k, g, l2off, g->cluster_size);
        ret = count_l2(s, k, l2off, table);
    }
    free(table);
    return ret;
}

static int coroutine_fn set_refcount(BDRVQcow2State *s, uint64_t cluster,
                                     uint64_t want)
{
    uint64_t have;
    int ret = qcow2_get_refcount(s, cluster, &have);
    if (ret < 0 || have == want) {
        return ret;
    }
    return qcow2_set_refcount(s, cluster, want);
}

int coroutine_fn qcow2_repair_refcounts(BDRVQcow2State *s, Error **errp)
{
    const Qcow2Geom *g = &s->g;
    Counts k = { .n = (s->file_size + g->cluster_size - 1) >> g->cluster_bits };
    int ret;

    if (s->hdr.nb_snapshots) {
        error_setg(errp, "qcow2: cannot repair the refcounts of an image "
                   "with internal snapshots; use 'qemu-img check -r all'");
        return -ENOTSUP;
    }
    for (unsigned i = 0; i < s->hdr.nb_raw_exts; i++) {
        if (s->hdr.raw_exts[i].type == QCOW2_EXT_BITMAPS) {
            error_setg(errp, "qcow2: cannot repair the refcounts of an image "
                       "with bitmaps; use 'qemu-img check -r all'");
            return -ENOTSUP;
        }
    }
    if (k.n > REPAIR_MAX_CLUSTERS) {
        error_setg(errp, "qcow2: image too large to repair its refcounts");
        return -EFBIG;
    }
    k.c = bj_try_calloc(k.n, sizeof(*k.c));
    if (!k.c) {
        error_setg(errp, "qcow2: not enough memory to repair refcounts");
        return -ENOMEM;
    }
    ret = count_all(s, &k);
    if (ret < 0 || k.bad) {
        error_setg(errp, "qcow2: image is dirty and its metadata is "
                   "inconsistent; repair it with 'qemu-img check -r all'");
        free(k.c);
        return ret < 0 ? ret : -EIO;
    }

    /* Structures the repair itself allocates (new refcount blocks) are
     * counted as they appear: s->repair_counts. */
    s->repair_counts = k.c;
    s->repair_n = k.n;
    uint64_t covered = s->reftable_entries << g->rb_bits;
    uint64_t end = k.n > covered ? k.n : covered;
    for (uint64_t c = 0; c < end && ret >= 0; c++) {
        uint64_t want = c < k.n ? k.c[c] : 0;
        ret = set_refcount(s, c, want);
    }
    s->repair_counts = NULL;
    s->repair_n = 0;
    free(k.c);
    if (ret >= 0) {
        ret = qcow2_cache_flush(s, s->rb_cache);
    }
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    if (ret >= 0) {
        s->hdr.incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
        ret = qcow2_write_header(s);
    }
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not repair refcounts");
        return ret;
    }
    s->free_hint = 0;
    log_info("qcow2: node '%s': refcounts repaired (image was dirty)",
             s->bs->node_name);
    return 0;
}
