/*
 * Metadata-overlap protection for an open image: what the checks know
 * (built at open, kept up to date as L2 tables and refcount blocks are
 * created) and the check itself, run before every write into the image
 * file.  See qcow2-overlap.h for the cost of a check.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2-bitmap-int.h"
#include "util/alloc.h"
#include "util/log.h"

/* Bytes of one snapshot table entry before its variable parts. */
#define SN_FIXED 40

static void note_cluster(BDRVQcow2State *s, uint64_t off, unsigned kind)
{
    /* Entries that are not cluster-aligned are refused where they are
     * used; only real tables go in the map. */
    if (off && !(off & (s->g.cluster_size - 1))) {
        qcow2_ol_map_add(&s->ol.map, off >> s->g.cluster_bits, kind);
    }
}

/*
 * Walks the snapshot table: its size, each snapshot's L1 table, and with
 * inactive-l2 checks the L2 tables those point at.  A table that cannot be
 * read is reported and protected as far as it could be read: it is not
 * ours to refuse an image over (nothing else in the driver reads it).
 */
static void coroutine_fn load_snapshots(BDRVQcow2State *s)
{
    uint32_t n = s->hdr.nb_snapshots;
    uint64_t off = s->hdr.snapshots_offset;
    uint64_t *start = bj_calloc(n ? n : 1, sizeof(*start));
    uint64_t *end = bj_calloc(n ? n : 1, sizeof(*end));
    size_t got = 0;
    uint8_t h[SN_FIXED];

    for (uint32_t i = 0; i < n; i++) {
        if (qcow2_read_meta(s, off, h, sizeof(h)) < 0) {
            log_warn("qcow2: node '%s': snapshot table entry %" PRIu32
                     " cannot be read", s->bs->node_name, i);
            break;
        }
        uint64_t l1_off = be64_get(h) & ~511ull;
        uint64_t l1_bytes = (uint64_t)be32_get(h + 8) * 8;
        uint64_t len = SN_FIXED + be32_get(h + 36) +
                       (uint64_t)be16_get(h + 12) + be16_get(h + 14);
        if (l1_bytes) {
            start[got] = l1_off;
            end[got] = l1_off > UINT64_MAX - l1_bytes ? UINT64_MAX
                                                      : l1_off + l1_bytes;
            got++;
        }
        /* (Its padding may be missing at the end of the file.) */
        if (len > s->file_size - off) {
            log_warn("qcow2: node '%s': snapshot table entry %" PRIu32
                     " ends past the end of the image file",
                     s->bs->node_name, i);
            off = s->file_size;
            break;
        }
        off += (len + 7) & ~7ull;
        if ((s->ol.checks & QCOW2_OL_INACTIVE_L2) && l1_bytes &&
            l1_bytes <= QCOW2_MAX_L1_BYTES) {
            uint64_t *l1 = bj_try_malloc(l1_bytes);
            if (!l1) {
                log_warn("qcow2: node '%s': no memory to read the L1 table "
                         "of snapshot %" PRIu32, s->bs->node_name, i);
            } else if (qcow2_read_meta(s, l1_off, l1, l1_bytes) >= 0) {
                for (uint64_t k = 0; k < l1_bytes / 8; k++) {
                    note_cluster(s, be64_get((uint8_t *)&l1[k]) &
                                    QCOW2_L1E_OFFSET_MASK,
                                 QCOW2_OL_INACTIVE_L2);
                }
            }
            free(l1);
        }
    }
    s->ol.snapshots_size = off - s->hdr.snapshots_offset;
    qcow2_ol_ranges_init(&s->ol.inactive_l1, start, end, got);
}

void coroutine_fn qcow2_ol_load(BDRVQcow2State *s)
{
    for (uint32_t i = 0; i < s->l1_size; i++) {
        note_cluster(s, s->l1[i] & QCOW2_L1E_OFFSET_MASK, QCOW2_OL_ACTIVE_L2);
    }
    for (uint64_t i = 0; i < s->reftable_entries; i++) {
        note_cluster(s, s->reftable[i], QCOW2_OL_REFCOUNT_BLOCK);
    }
    load_snapshots(s);
}

void qcow2_ol_free(BDRVQcow2State *s)
{
    qcow2_ol_map_free(&s->ol.map);
    qcow2_ol_ranges_free(&s->ol.inactive_l1);
}

void coroutine_fn qcow2_ol_reload(BDRVQcow2State *s)
{
    qcow2_ol_free(s);
    qcow2_ol_load(s);
}

void qcow2_ol_note_l2(BDRVQcow2State *s, uint64_t old_off, uint64_t new_off)
{
    if (old_off) {
        qcow2_ol_map_del(&s->ol.map, old_off >> s->g.cluster_bits,
                         QCOW2_OL_ACTIVE_L2);
    }
    note_cluster(s, new_off, QCOW2_OL_ACTIVE_L2);
}

void qcow2_ol_note_refblock(BDRVQcow2State *s, uint64_t off)
{
    note_cluster(s, off, QCOW2_OL_REFCOUNT_BLOCK);
}

static bool hit(uint64_t off, uint64_t len, uint64_t moff, uint64_t mlen)
{
    return mlen && off < moff + mlen && moff < off + len;
}

unsigned qcow2_ol_find(BDRVQcow2State *s, unsigned ign, uint64_t off,
                       uint64_t len)
{
    const unsigned chk = s->ol.checks & ~ign;
    const uint64_t cs = s->g.cluster_size;
    const unsigned per_cluster = QCOW2_OL_ACTIVE_L2 | QCOW2_OL_REFCOUNT_BLOCK |
                                 QCOW2_OL_INACTIVE_L2;
    unsigned found = 0;

    if (!chk || !len) {
        return 0;
    }
    if (len > UINT64_MAX - off) {
        len = UINT64_MAX - off;
    }
    if ((chk & QCOW2_OL_MAIN_HEADER) && off < cs) {
        found |= QCOW2_OL_MAIN_HEADER;
    }
    if ((chk & QCOW2_OL_ACTIVE_L1) &&
        hit(off, len, s->hdr.l1_table_offset, (uint64_t)s->l1_size * 8)) {
        found |= QCOW2_OL_ACTIVE_L1;
    }
    if ((chk & QCOW2_OL_REFCOUNT_TABLE) &&
        hit(off, len, s->hdr.refcount_table_offset,
            (uint64_t)s->hdr.refcount_table_clusters * cs)) {
        found |= QCOW2_OL_REFCOUNT_TABLE;
    }
    if ((chk & QCOW2_OL_SNAPSHOT_TABLE) && s->hdr.nb_snapshots &&
        hit(off, len, s->hdr.snapshots_offset, s->ol.snapshots_size)) {
        found |= QCOW2_OL_SNAPSHOT_TABLE;
    }
    if ((chk & QCOW2_OL_INACTIVE_L1) &&
        qcow2_ol_ranges_hit(&s->ol.inactive_l1, off, len)) {
        found |= QCOW2_OL_INACTIVE_L1;
    }
    if ((chk & QCOW2_OL_BITMAP_DIRECTORY) && s->bitmaps &&
        hit(off, len, s->bitmaps->dir_offset, s->bitmaps->dir_size)) {
        found |= QCOW2_OL_BITMAP_DIRECTORY;
    }
    if ((chk & per_cluster) && s->ol.map.used) {
        uint64_t last = (off + len - 1) >> s->g.cluster_bits;
        for (uint64_t c = off >> s->g.cluster_bits; c <= last; c++) {
            found |= qcow2_ol_map_get(&s->ol.map, c) & chk;
        }
    }
    /* The lowest kind is the one named, as qemu names them. */
    return found & -found;
}

int coroutine_fn qcow2_ol_pre_write(BDRVQcow2State *s, unsigned ign,
                                    uint64_t off, uint64_t len)
{
    unsigned kind = qcow2_ol_find(s, ign, off, len);

    if (!kind) {
        return 0;
    }
    qcow2_signal_corruption(s, true, (int64_t)off, (int64_t)len,
                            "Preventing invalid write on metadata "
                            "(overlaps with %s)", qcow2_ol_name(kind));
    return -EIO;
}
