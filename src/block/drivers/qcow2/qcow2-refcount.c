/*
 * Refcounts and cluster allocation.
 *
 * Invariant: every cluster in use is covered by a refcount block reachable
 * from the reftable.  New refcount blocks are placed at the first cluster
 * of the range they describe (that range is unused, or it would already
 * have a block), so they count themselves; for an allocation longer than
 * a range, right after it instead (blocks_after_run).  When the reftable is full it
 * moves to a fresh area past everything it covers, together with the
 * refcount blocks for that area.
 *
 * All functions run under s->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"
#include "util/alloc.h"
#include "util/log.h"

int coroutine_fn qcow2_grow_file(BDRVQcow2State *s, uint64_t end)
{
    Error *err = NULL;
    uint64_t step = s->g.cluster_size > (1u << 20) ? s->g.cluster_size
                                                    : (1u << 20);
    uint64_t target;
    int ret;

    if (end <= s->file_size) {
        return 0;
    }
    /* Grow in steps (a sixteenth of the file, 1 to 64 MiB) so sequential
     * allocation does not truncate per request; the unused tail has
     * refcount 0 and is handed out next. */
    uint64_t prop = s->file_size / 16;
    prop = prop > (64u << 20) ? (64u << 20) : prop;
    step = prop > step ? (prop + s->g.cluster_size - 1) /
                         s->g.cluster_size * s->g.cluster_size : step;
    target = (end + step - 1) / step * step;
    ret = bdrv_co_truncate(s->bs->file, (int64_t)target, &err);
    if (ret < 0) {
        log_error("qcow2: node '%s': could not grow the image file: %s",
                  s->bs->node_name, err ? error_get_pretty(err) : "");
        error_free(err);
        return ret;
    }
    if (!s->grown_from) {
        s->grown_from = s->file_size;
    }
    s->file_size = target;
    return 0;
}

int coroutine_fn qcow2_trim_file(BDRVQcow2State *s)
{
    const uint64_t cs = s->g.cluster_size;
    uint64_t floor = (s->grown_from + cs - 1) / cs;
    uint64_t end = s->file_size / cs;
    Error *err = NULL;
    int ret;

    if (!s->grown_from || s->file_size <= s->grown_from) {
        return 0;
    }
    /* Only the grown part: what was there before is not ours to cut. */
    while (end > floor) {
        uint64_t rc;
        ret = qcow2_get_refcount(s, end - 1, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc) {
            break;
        }
        end--;
    }
    uint64_t target = end * cs > s->grown_from ? end * cs : s->grown_from;
    if (target >= s->file_size) {
        return 0;
    }
    ret = bdrv_co_truncate(s->bs->file, (int64_t)target, &err);
    if (ret < 0) {
        error_free(err);
        return ret;
    }
    s->file_size = target;
    return 0;
}

static int coroutine_fn get_refblock(BDRVQcow2State *s, uint64_t rti,
                                     Qcow2CacheEntry **e)
{
    uint64_t off = s->reftable[rti];

    if (off & (s->g.cluster_size - 1)) {
        log_error("qcow2: node '%s': refcount block offset 0x%" PRIx64
                  " unaligned", s->bs->node_name, off);
        return -EIO;
    }
    return qcow2_cache_get(s, s->rb_cache, off, false, e);
}

int coroutine_fn qcow2_get_refcount(BDRVQcow2State *s, uint64_t cluster,
                                    uint64_t *refcount)
{
    uint64_t rti = cluster >> s->g.rb_bits;
    Qcow2CacheEntry *e;
    int ret;

    if (rti >= s->reftable_entries || !s->reftable[rti]) {
        *refcount = 0;
        return 0;
    }
    ret = get_refblock(s, rti, &e);
    if (ret < 0) {
        return ret;
    }
    *refcount = qcow2_refcount_get(&s->g, e->table,
                                   cluster & ((1ull << s->g.rb_bits) - 1));
    qcow2_cache_put(e);
    return 0;
}

/* While repairing, structures we allocate count as references. */
static void repair_count(BDRVQcow2State *s, uint64_t cluster, int delta)
{
    if (s->repair_counts && cluster < s->repair_n) {
        s->repair_counts[cluster] += (uint32_t)delta;
    }
}

static int coroutine_fn write_reftable_entry(BDRVQcow2State *s, uint64_t rti)
{
    uint8_t be[8];

    be64_put(be, s->reftable[rti]);
    return qcow2_write_meta(s, s->hdr.refcount_table_offset + rti * 8, be, 8);
}

/* Moves the reftable to a bigger one past everything it covers. */
static int coroutine_fn grow_reftable(BDRVQcow2State *s, uint64_t need_rti)
{
    const uint64_t cs = s->g.cluster_size;
    const uint64_t per_rb = 1ull << s->g.rb_bits;
    uint64_t old_n = s->reftable_entries;
    uint64_t want = need_rti + 1 > old_n * 2 ? need_rti + 1 : old_n * 2;
    uint64_t new_clusters = (want * 8 + cs - 1) / cs;
    uint64_t k;
    int ret;

    /* The new area starts at a refcount-block boundary past both what the
     * table covers and the end of the file: nothing can live there (an
     * image left dirty may have data past its refcount coverage). */
    uint64_t file_cl = (s->file_size + cs - 1) / cs;
    uint64_t base = old_n > (file_cl + per_rb - 1) / per_rb
                    ? old_n : (file_cl + per_rb - 1) / per_rb;
    if (base + 1 > want) {
        want = base + 1;
        new_clusters = (want * 8 + cs - 1) / cs;
    }

    /* k blocks must count themselves and the table, and the table must
     * have room for them */
    for (;;) {
        k = 1;
        while (k * per_rb < k + new_clusters) {
            k++;
        }
        if (new_clusters * cs / 8 >= base + k &&
            new_clusters * cs / 8 > need_rti) {
            break;
        }
        new_clusters++;
    }
    if (new_clusters * cs > QCOW2_MAX_REFTABLE_BYTES) {
        log_error("qcow2: node '%s': reference count table would exceed "
                  "its maximum size", s->bs->node_name);
        return -EFBIG;
    }

    /* Layout: k refcount blocks at clusters S..S+k-1 (block j counts
     * clusters S + j*per_rb ..), then the new table. */
    uint64_t S = base * per_rb;
    uint64_t used = k + new_clusters;
    uint64_t new_n = new_clusters * cs / 8;
    uint64_t table_off = (S + k) * cs;
    uint64_t *table;
    uint8_t *buf;

    ret = qcow2_grow_file(s, (S + used) * cs);
    if (ret < 0) {
        return ret;
    }
    for (uint64_t j = 0; j < k; j++) {
        Qcow2CacheEntry *e;
        ret = qcow2_cache_get(s, s->rb_cache, (S + j) * cs, true, &e);
        if (ret < 0) {
            return ret;
        }
        for (uint64_t x = S + j * per_rb;
             x < S + used && x < S + (j + 1) * per_rb; x++) {
            qcow2_refcount_set(&s->g, e->table, x - S - j * per_rb, 1);
        }
        ret = qcow2_cache_write_entry(s, s->rb_cache, e);
        qcow2_cache_put(e);
        if (ret < 0) {
            return ret;
        }
    }

    for (uint64_t x = S; x < S + used; x++) {
        repair_count(s, x, 1);
    }

    table = bj_calloc(new_n, sizeof(*table));
    buf = blk_aligned_alloc(4096, new_clusters * cs);
    memcpy(table, s->reftable, old_n * sizeof(*table));
    for (uint64_t j = 0; j < k; j++) {
        table[base + j] = (S + j) * cs;
        qcow2_ol_note_refblock(s, (S + j) * cs);
    }
    memset(buf, 0, new_clusters * cs);
    for (uint64_t i = 0; i < new_n; i++) {
        be64_put(buf + i * 8, table[i]);
    }
    ret = qcow2_write_meta(s, table_off, buf, new_clusters * cs);
    free(buf);
    if (ret < 0) {
        free(table);
        return ret;
    }
    ret = qcow2_flush_file(s);
    if (ret < 0) {
        free(table);
        return ret;
    }

    /* Switch the header over; from here the old table is unreferenced. */
    uint64_t old_off = s->hdr.refcount_table_offset;
    uint64_t old_clusters = s->hdr.refcount_table_clusters;
    s->hdr.refcount_table_offset = table_off;
    s->hdr.refcount_table_clusters = (uint32_t)new_clusters;
    ret = qcow2_write_header(s);
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    if (ret < 0) {
        s->hdr.refcount_table_offset = old_off;
        s->hdr.refcount_table_clusters = (uint32_t)old_clusters;
        free(table);
        return ret;
    }
    free(s->reftable);
    s->reftable = table;
    s->reftable_entries = new_n;
    for (uint64_t x = 0; x < old_clusters; x++) {
        repair_count(s, old_off / cs + x, -1);
    }
    return qcow2_update_refcount(s, old_off, old_clusters * cs, -1);
}

/* Makes sure reftable entry rti has a refcount block. */
static int coroutine_fn ensure_refblock(BDRVQcow2State *s, uint64_t rti)
{
    const uint64_t cs = s->g.cluster_size;
    Qcow2CacheEntry *e;
    int ret;

    if (rti >= s->reftable_entries) {
        ret = grow_reftable(s, rti);
        if (ret < 0) {
            return ret;
        }
    }
    if (s->reftable[rti]) {
        return 0;
    }
    /* The block describes clusters [rti*per_rb, ...), none of them in use:
     * it takes the first one and counts itself. */
    uint64_t off = (rti << s->g.rb_bits) * cs;
    if (s->repair_counts && off / cs < s->repair_n &&
        s->repair_counts[off / cs]) {
        /* Only while repairing: the range has no block yet but something
         * references its first cluster. */
        log_error("qcow2: node '%s': no room for a refcount block at 0x%"
                  PRIx64, s->bs->node_name, off);
        return -EIO;
    }
    ret = qcow2_grow_file(s, off + cs);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_cache_get(s, s->rb_cache, off, true, &e);
    if (ret < 0) {
        return ret;
    }
    qcow2_refcount_set(&s->g, e->table, 0, 1);
    ret = qcow2_cache_write_entry(s, s->rb_cache, e);
    qcow2_cache_put(e);
    if (ret < 0) {
        return ret;
    }
    /* The block must be on disk before the table points at it. */
    ret = qcow2_flush_file(s);
    if (ret < 0) {
        return ret;
    }
    repair_count(s, off / cs, 1);
    qcow2_ol_note_refblock(s, off);
    s->reftable[rti] = off;
    ret = write_reftable_entry(s, rti);
    if (ret < 0) {
        s->reftable[rti] = 0;
        return ret;
    }
    s->data_unflushed = true;
    return 0;
}

int coroutine_fn qcow2_update_refcount(BDRVQcow2State *s, uint64_t offset,
                                       uint64_t bytes, int delta)
{
    const uint64_t cs = s->g.cluster_size;
    uint64_t first = offset / cs, last = (offset + bytes - 1) / cs;
    uint64_t mask = (1ull << s->g.rb_bits) - 1;
    Qcow2CacheEntry *e = NULL;
    uint64_t cur_rti = UINT64_MAX;
    int ret = 0;

    if (!bytes) {
        return 0;
    }
    for (uint64_t c = first; c <= last; c++) {
        uint64_t rti = c >> s->g.rb_bits;
        if (rti != cur_rti) {
            if (e) {
                qcow2_cache_put(e);
                e = NULL;
            }
            if (delta > 0) {
                ret = ensure_refblock(s, rti);
                if (ret < 0) {
                    break;
                }
            } else if (rti >= s->reftable_entries || !s->reftable[rti]) {
                log_error("qcow2: node '%s': freeing cluster 0x%" PRIx64
                          " without a refcount block", s->bs->node_name,
                          c * cs);
                ret = -EIO;
                break;
            }
            ret = get_refblock(s, rti, &e);
            if (ret < 0) {
                e = NULL;
                break;
            }
            cur_rti = rti;
        }
        uint64_t old = qcow2_refcount_get(&s->g, e->table, c & mask);
        uint64_t val;
        if (delta < 0 && old < (uint64_t)-delta) {
            log_error("qcow2: node '%s': refcount of cluster 0x%" PRIx64
                      " would drop below zero", s->bs->node_name, c * cs);
            ret = -EIO;
            break;
        }
        val = delta < 0 ? old - (uint64_t)-delta : old + (uint64_t)delta;
        if (!qcow2_refcount_set(&s->g, e->table, c & mask, val)) {
            log_error("qcow2: node '%s': refcount of cluster 0x%" PRIx64
                      " would overflow", s->bs->node_name, c * cs);
            ret = -ERANGE;
            break;
        }
        qcow2_cache_mark_dirty(s->rb_cache, e);
        if (val == 0) {
            if (c < s->free_hint) {
                s->free_hint = c;
            }
            if (s->comp_cursor && s->comp_cursor / cs == c) {
                s->comp_cursor = 0;   /* free: may be reused for anything */
            }
            /* A freed table must not be written back over new data. */
            qcow2_cache_discard(s->l2_cache, c * cs);
        }
    }
    if (e) {
        qcow2_cache_put(e);
    }
    return ret;
}

int coroutine_fn qcow2_set_refcount(BDRVQcow2State *s, uint64_t cluster,
                                    uint64_t value)
{
    uint64_t rti = cluster >> s->g.rb_bits;
    Qcow2CacheEntry *e;
    int ret;

    if (value) {
        ret = ensure_refblock(s, rti);
        if (ret < 0) {
            return ret;
        }
    } else if (rti >= s->reftable_entries || !s->reftable[rti]) {
        return 0;
    }
    ret = get_refblock(s, rti, &e);
    if (ret < 0) {
        return ret;
    }
    if (!qcow2_refcount_set(&s->g, e->table,
                            cluster & ((1ull << s->g.rb_bits) - 1), value)) {
        qcow2_cache_put(e);
        return -ERANGE;
    }
    qcow2_cache_mark_dirty(s->rb_cache, e);
    qcow2_cache_put(e);
    if (!value && cluster < s->free_hint) {
        s->free_hint = cluster;
    }
    if (!value && s->comp_cursor &&
        s->comp_cursor / s->g.cluster_size == cluster) {
        s->comp_cursor = 0;
    }
    return 0;
}

/*
 * Gives the ranges without a refcount block that [cand, cand+n) touches
 * their blocks, placed right after it: k blocks at cand+n .. cand+n+k-1,
 * where k counts the ranges the run and the blocks touch.  Every range
 * without a block is unused, so they are free there, unless the blocks
 * reach into a range that has one: *busy is then set to the first cluster
 * in use found there, and nothing is changed.  -EAGAIN: the reftable had
 * to grow first (which may have used clusters), scan again.
 */
static int coroutine_fn blocks_after_run(BDRVQcow2State *s, uint64_t cand,
                                         uint64_t n, uint64_t *busy)
{
    const uint64_t cs = s->g.cluster_size;
    const uint64_t mask = (1ull << s->g.rb_bits) - 1;
    const uint64_t pos = cand + n;
    uint64_t k = 0, need, *ranges;
    int ret;

    *busy = 0;
    for (;;) {
        need = 0;
        for (uint64_t r = cand >> s->g.rb_bits;
             r <= (pos + k - 1) >> s->g.rb_bits; r++) {
            if (r >= s->reftable_entries) {
                ret = grow_reftable(s, r);
                return ret < 0 ? ret : -EAGAIN;
            }
            need += !s->reftable[r];
        }
        if (need == k) {
            break;
        }
        k = need;
    }
    if (!k) {
        return 0;
    }
    for (uint64_t q = pos; q < pos + k; q++) {
        uint64_t rc;
        ret = qcow2_get_refcount(s, q, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc) {
            *busy = q;
            return 0;
        }
    }
    ranges = bj_calloc(k, sizeof(*ranges));
    need = 0;
    for (uint64_t r = cand >> s->g.rb_bits;
         r <= (pos + k - 1) >> s->g.rb_bits; r++) {
        if (!s->reftable[r]) {
            ranges[need++] = r;
        }
    }
    ret = qcow2_grow_file(s, (pos + k) * cs);
    /* Blocks in ranges that have one are counted there... */
    for (uint64_t q = pos; q < pos + k && ret >= 0; q++) {
        if (s->reftable[q >> s->g.rb_bits]) {
            ret = qcow2_update_refcount(s, q * cs, cs, 1);
        }
    }
    /* ... the others by the new blocks. */
    for (uint64_t j = 0; j < k && ret >= 0; j++) {
        Qcow2CacheEntry *e;
        ret = qcow2_cache_get(s, s->rb_cache, (pos + j) * cs, true, &e);
        if (ret < 0) {
            break;
        }
        for (uint64_t q = pos; q < pos + k; q++) {
            if (q >> s->g.rb_bits == ranges[j]) {
                qcow2_refcount_set(&s->g, e->table, q & mask, 1);
            }
        }
        ret = qcow2_cache_write_entry(s, s->rb_cache, e);
        qcow2_cache_put(e);
    }
    /* All on disk before the reftable points at them. */
    if (ret >= 0) {
        ret = qcow2_cache_flush(s, s->rb_cache);
    }
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    for (uint64_t j = 0; j < k && ret >= 0; j++) {
        qcow2_ol_note_refblock(s, (pos + j) * cs);
        s->reftable[ranges[j]] = (pos + j) * cs;
        ret = write_reftable_entry(s, ranges[j]);
        if (ret < 0) {
            s->reftable[ranges[j]] = 0;
        }
    }
    free(ranges);
    s->data_unflushed = true;
    return ret;
}

int64_t coroutine_fn qcow2_alloc_clusters(BDRVQcow2State *s, uint64_t n)
{
    const uint64_t cs = s->g.cluster_size;
    uint64_t start = s->free_hint ? s->free_hint : 1;  /* never cluster 0 */
    uint64_t cand = start, idx = start, count = 0;
    int ret;

    /*
     * A new refcount block takes the first cluster of the range it covers
     * (ensure_refblock), so past the used part of the file no free run is
     * longer than a block's range less one cluster: a longer run (a
     * 32 KiB write to an image with 512-byte clusters and 64-bit
     * refcounts, whose blocks cover 64 clusters) gets its new blocks
     * after it instead (blocks_after_run), and the scan takes the ranges
     * without a block as free.  The repair, which may find clusters in
     * use there, refuses it.
     */
    bool long_run = n > (1ull << s->g.rb_bits) - 1;
    if (long_run && s->repair_counts) {
        return -EFBIG;
    }
retry:
    while (count < n) {
        uint64_t rti = idx >> s->g.rb_bits;
        uint64_t rc = 0;
        if (long_run && rti < s->reftable_entries && !s->reftable[rti]) {
            /* unused (no block), and given one after the run */
        } else {
            if (rti >= s->reftable_entries || !s->reftable[rti]) {
                ret = ensure_refblock(s, rti);
                if (ret < 0) {
                    return ret;
                }
            }
            ret = qcow2_get_refcount(s, idx, &rc);
            if (ret < 0) {
                return ret;
            }
        }
        if (rc) {
            cand = idx + 1;
            count = 0;
        } else {
            count++;
        }
        idx++;
        if (idx > (1ull << (56 - s->g.cluster_bits))) {
            return -EFBIG;
        }
    }
    if (long_run) {
        uint64_t busy;
        ret = blocks_after_run(s, cand, n, &busy);
        if (ret == -EAGAIN || busy) {
            /* scan on past what is in use (or again: the reftable moved) */
            cand = idx = ret == -EAGAIN ? cand : busy + 1;
            count = 0;
            goto retry;
        }
        if (ret < 0) {
            return ret;
        }
    }
    /* Free by the refcounts yet holding metadata: the refcounts are
     * damaged, and whatever asked for the clusters would write over it. */
    ret = qcow2_ol_pre_write(s, 0, cand * cs, n * cs);
    if (ret < 0) {
        return ret;
    }
    /* Counting them may write refcount blocks back (evictions), and so
     * may growing the file: until the caller has them, they are in
     * flight, left out of what reaches the disk (qcow2-cache.c). */
    s->alloc_cluster = cand;
    s->alloc_clusters = n;
    ret = qcow2_update_refcount(s, cand * cs, n * cs, 1);
    if (ret < 0) {
        s->alloc_clusters = 0;
        return ret;
    }
    /* Everything scanned before cand is in use unless a shorter free run
     * was skipped (only possible for n > 1 when cand moved). */
    if (n == 1 || cand == start) {
        s->free_hint = cand + n;
    }
    ret = qcow2_grow_file(s, (cand + n) * cs);
    s->alloc_clusters = 0;
    qcow2_cache_inflight_done(s->rb_cache);
    if (ret < 0) {
        /* Counted but never handed out: give them back, or they leak. */
        qcow2_update_refcount(s, cand * cs, n * cs, -1);
        return ret;
    }
    return (int64_t)(cand * cs);
}

void qcow2_defer_free(BDRVQcow2State *s, uint64_t offset, uint64_t bytes)
{
    if (s->nb_pending == s->pending_alloc) {
        s->pending_alloc = s->pending_alloc ? s->pending_alloc * 2 : 16;
        s->pending = bj_realloc(s->pending,
                                s->pending_alloc * sizeof(*s->pending));
    }
    s->pending[s->nb_pending].offset = offset;
    s->pending[s->nb_pending].bytes = bytes;
    s->nb_pending++;
}

int coroutine_fn qcow2_apply_pending_frees(BDRVQcow2State *s)
{
    while (s->nb_pending) {
        Qcow2PendingFree f = s->pending[--s->nb_pending];
        int ret = qcow2_update_refcount(s, f.offset, f.bytes, -1);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}
