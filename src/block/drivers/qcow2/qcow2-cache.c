/*
 * A small write-back cache of cluster-sized metadata tables (L2 tables,
 * refcount blocks), with LRU eviction.  Linear search: the caches hold at
 * most a few thousand entries and a lookup is dwarfed by any I/O.
 *
 * Only used under s->lock; pinning (ref) keeps a table a caller is working
 * on from being evicted while the same caller loads another one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"
#include "util/alloc.h"
#include "util/log.h"

/* Spare refcount slots (take_spare): up to 1 MiB of them, 4 to 64. */
static unsigned rb_spares(uint32_t cluster_size)
{
    unsigned n = (1u << 20) / cluster_size;

    return n < 4 ? 4 : n > 64 ? 64 : n;
}

Qcow2Cache *qcow2_cache_new(unsigned entries, uint32_t cluster_size,
                            bool is_l2, size_t align)
{
    Qcow2Cache *c = bj_calloc(1, sizeof(*c));

    /* Refcount blocks get spare slots, their tables allocated on first
     * use: see take_spare. */
    c->capacity = entries + (is_l2 ? 0 : rb_spares(cluster_size));
    c->entries = bj_calloc(c->capacity, sizeof(*c->entries));
    c->size = entries;
    c->is_l2 = is_l2;
    c->align = align;
    for (unsigned i = 0; i < entries; i++) {
        c->entries[i].table = blk_aligned_alloc(align, cluster_size);
    }
    return c;
}

void qcow2_cache_free(Qcow2Cache *c)
{
    if (!c) {
        return;
    }
    for (unsigned i = 0; i < c->capacity; i++) {
        free(c->entries[i].table);
    }
    free(c->entries);
    free(c);
}

bool qcow2_cache_has_dirty(const Qcow2Cache *c)
{
    for (unsigned i = 0; i < c->size; i++) {
        if (c->entries[i].offset && c->entries[i].dirty) {
            return true;
        }
    }
    return false;
}

/*
 * A dirty L2 table may only reach the disk after the data it points to and
 * the refcounts that account for that data (otherwise a crash leaves a
 * reference to a cluster with refcount 0 or to garbage).
 */
static int coroutine_fn write_deps(BDRVQcow2State *s, Qcow2Cache *c)
{
    int ret;

    if (!c->is_l2) {
        return 0;
    }
    ret = qcow2_cache_flush(s, s->rb_cache);
    if (ret < 0) {
        return ret;
    }
    if (s->data_unflushed) {
        ret = qcow2_flush_file(s);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Takes one count off each cluster of [first, first+n) that e covers,
 * in *copy (made from e at the first such cluster). */
static void uncount(BDRVQcow2State *s, Qcow2CacheEntry *e, uint8_t **copy,
                    uint64_t first, uint64_t n)
{
    const uint64_t mask = (1ull << s->g.rb_bits) - 1;

    for (uint64_t cl = first; cl < first + n; cl++) {
        uint64_t rti = cl >> s->g.rb_bits;
        if (rti >= s->reftable_entries || s->reftable[rti] != e->offset) {
            continue;
        }
        if (!*copy) {
            *copy = blk_aligned_alloc(4096, s->g.cluster_size);
            memcpy(*copy, e->table, s->g.cluster_size);
        }
        /* 0: not counted yet (qcow2_alloc_clusters counting a run) */
        uint64_t v = qcow2_refcount_get(&s->g, *copy, cl & mask);
        if (v) {
            qcow2_refcount_set(&s->g, *copy, cl & mask, v - 1);
        }
    }
}

/*
 * The refcount block e less the counts of allocations in flight (their
 * clusters are not referenced yet), or NULL when none falls in its range.
 * On disk such clusters are then neither counted nor referenced: a kill
 * while their data is copied leaks nothing.  Safe because an L2 table
 * only references them after qcow2_cache_inflight_done.
 */
static uint8_t *rb_without_inflight(BDRVQcow2State *s, Qcow2CacheEntry *e)
{
    uint8_t *copy = NULL;
    Qcow2InflightAlloc *a;

    list_for_each_entry(a, &s->inflight, link) {
        uncount(s, e, &copy, a->host_cluster, a->host_clusters);
    }
    uncount(s, e, &copy, s->alloc_cluster, s->alloc_clusters);
    return copy;
}

static int coroutine_fn write_entry(BDRVQcow2State *s, Qcow2Cache *c,
                                    Qcow2CacheEntry *e, bool whole)
{
    uint8_t *partial = NULL;
    int ret;

    if (!e->dirty) {
        return 0;
    }
    /* Its copy on disk is up to date (and with nothing in flight, the
     * flag cannot be right: written rather than trusted). */
    if (e->partial && !whole &&
        (!list_empty(&s->inflight) || s->alloc_clusters)) {
        return 0;
    }
    ret = write_deps(s, c);
    if (ret < 0) {
        return ret;
    }
    /* write_deps may have yielded: the entry may have been written by
     * someone else meanwhile (never evicted: the caller pinned it or holds
     * the lock throughout). */
    if (!e->dirty) {
        return 0;
    }
    /* A table placed over other metadata (a damaged L1 or refcount
     * table) must not be written there. */
    ret = qcow2_ol_pre_write(s, c->is_l2 ? QCOW2_OL_ACTIVE_L2
                                         : QCOW2_OL_REFCOUNT_BLOCK,
                             e->offset, s->g.cluster_size);
    if (ret < 0) {
        return ret;
    }
    if (!c->is_l2 && !whole) {
        partial = rb_without_inflight(s, e);
    }
    ret = qcow2_write_meta(s, e->offset, partial ? partial : e->table,
                           s->g.cluster_size);
    free(partial);
    if (ret < 0) {
        return ret;
    }
    e->dirty = partial != NULL;
    e->partial = partial != NULL;
    if (!c->is_l2) {
        /* A refcount block that L2 tables will depend on: the next L2
         * write-back must be preceded by a flush. */
        s->data_unflushed = true;
    }
    return 0;
}

int coroutine_fn qcow2_cache_write_entry(BDRVQcow2State *s, Qcow2Cache *c,
                                         Qcow2CacheEntry *e)
{
    return write_entry(s, c, e, false);
}

int coroutine_fn qcow2_cache_flush(BDRVQcow2State *s, Qcow2Cache *c)
{
    for (unsigned i = 0; i < c->size; i++) {
        Qcow2CacheEntry *e = &c->entries[i];
        if (e->offset && e->dirty) {
            e->ref++;
            int ret = qcow2_cache_write_entry(s, c, e);
            e->ref--;
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

/*
 * Making room in a refcount cache full of dirty blocks costs a write-back
 * of all metadata with two flushes (see qcow2_cache_get), where writing
 * one block used to cost a write: with 4 KiB clusters, a block covers
 * 8 MiB and the cache held four, and a 256 MiB copy ran 10 % slower.  So
 * the cache grows by a spare slot first; the write-backs then come every
 * (size + spares) blocks (every 544 MiB allocated, with 4 KiB clusters
 * and 16-bit refcounts).  The spares also keep a block holding counts of
 * allocations in flight (partial, see rb_without_inflight) from being
 * written whole, which would leak those clusters on a kill: a mirror's
 * parallel requests span several blocks.  NULL once they are used up.
 */
static Qcow2CacheEntry *take_spare(BDRVQcow2State *s, Qcow2Cache *c)
{
    Qcow2CacheEntry *e;

    if (c->size == c->capacity) {
        return NULL;
    }
    e = &c->entries[c->size++];
    e->table = blk_aligned_alloc(c->align, s->g.cluster_size);
    return e;
}

static Qcow2CacheEntry *find(Qcow2Cache *c, uint64_t offset)
{
    /* The last table found first: allocation asks for one refcount
     * block per cluster it scans, and the cache may have grown spares. */
    if (c->last < c->size && c->entries[c->last].offset == offset) {
        return &c->entries[c->last];
    }
    for (unsigned i = 0; i < c->size; i++) {
        if (c->entries[i].offset == offset) {
            c->last = i;
            return &c->entries[i];
        }
    }
    return NULL;
}

int coroutine_fn qcow2_cache_get(BDRVQcow2State *s, Qcow2Cache *c,
                                 uint64_t offset, bool fresh,
                                 Qcow2CacheEntry **out)
{
    Qcow2CacheEntry *e;
    int ret;

    for (;;) {
        e = find(c, offset);
        if (e) {
            e->ref++;
            e->lru = ++c->lru_clock;
            if (fresh) {
                memset(e->table, 0, s->g.cluster_size);
                qcow2_cache_mark_dirty(c, e);
            }
            *out = e;
            return 0;
        }
        /* Pick the least recently used unpinned slot, preferring clean. */
        Qcow2CacheEntry *victim = NULL;
        for (unsigned i = 0; i < c->size; i++) {
            Qcow2CacheEntry *x = &c->entries[i];
            if (x->ref) {
                continue;
            }
            if (!x->offset) {
                victim = x;
                break;
            }
            if (!victim || (victim->dirty && !x->dirty) ||
                (victim->partial && x->dirty && !x->partial) ||
                (victim->dirty == x->dirty && victim->partial == x->partial &&
                 x->lru < victim->lru)) {
                victim = x;
            }
        }
        if (victim && victim->offset && victim->dirty) {
            Qcow2CacheEntry *spare = take_spare(s, c);
            victim = spare ? spare : victim;
        }
        if (!victim) {
            log_error("qcow2: metadata cache too small (all entries pinned)");
            return -ENOMEM;
        }
        if (victim->offset && victim->dirty) {
            /* A dirty table must go to make room.  Not alone: a refcount
             * block on disk counts clusters whose L2 entries may still be
             * only in the cache, and a new L2 table on disk is reachable
             * only once the L1 table naming it is written.  A kill would
             * leave all those clusters counted but unreferenced (leaked:
             * thousands with 4 KiB clusters).  So everything dirty is
             * written, in the crash-safe order, refcounts to L1: what a
             * kill can leak is what is in flight during this write-back,
             * and the caches are clean afterwards. */
            victim->ref++;
            /* Partly written (allocations in flight in its range), no
             * clean slot and no spare: only a whole write frees it. */
            ret = victim->partial ? write_entry(s, c, victim, true)
                                  : qcow2_write_back(s);
            victim->ref--;
            if (ret < 0) {
                return ret;
            }
            /* We yielded: look again, someone may have loaded offset. */
            continue;
        }
        victim->offset = offset;
        victim->dirty = false;
        victim->partial = false;
        victim->ref = 1;
        victim->lru = ++c->lru_clock;
        if (fresh) {
            memset(victim->table, 0, s->g.cluster_size);
            victim->dirty = true;
        } else {
            ret = qcow2_read_meta(s, offset, victim->table,
                                  s->g.cluster_size);
            if (ret < 0) {
                victim->offset = 0;
                victim->ref = 0;
                return ret;
            }
        }
        *out = victim;
        return 0;
    }
}

void qcow2_cache_put(Qcow2CacheEntry *e)
{
    e->ref--;
}

void qcow2_cache_mark_dirty(Qcow2Cache *c, Qcow2CacheEntry *e)
{
    e->dirty = true;
    e->partial = false;
}

void qcow2_cache_inflight_done(Qcow2Cache *c)
{
    for (unsigned i = 0; i < c->size; i++) {
        c->entries[i].partial = false;
    }
}

void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset)
{
    Qcow2CacheEntry *e = find(c, offset);
    if (e && !e->ref) {
        e->offset = 0;
        e->dirty = false;
        e->partial = false;
    }
}
