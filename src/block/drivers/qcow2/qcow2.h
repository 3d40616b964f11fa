/*
 * qcow2 driver internals shared by the files of this folder.
 *
 * Locking: one CoMutex (s->lock) around every metadata access (L1, L2 and
 * refcount caches, the reftable, allocation).  Guest data I/O runs outside
 * it, so independent requests proceed in parallel; a write that allocates
 * registers its guest clusters as in flight so that a second writer of the
 * same clusters waits instead of allocating twice.
 *
 * Crash ordering (what is on disk after a crash is always consistent, at
 * worst with leaked clusters):
 *   data + refcount increases  -> flush -> L2 tables -> flush -> L1
 *   reference removals (L2)    -> flush -> refcount decreases
 * The caches are write-back; qcow2_flush_metadata applies that order, and
 * a cache that must evict a dirty table applies the first half of it to
 * everything (qcow2_write_back), so that a kill leaves no cluster counted
 * and unreferenced outside a write-back.  Refcount blocks reach the disk
 * without the counts of allocations in flight (Qcow2InflightAlloc).
 */
#ifndef BJ_BLOCK_QCOW2_H
#define BJ_BLOCK_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "aio/coroutine.h"
#include "block/block.h"
#include "block/drivers/luks-crypto.h"
#include "block/drivers/qcow2/qcow2-format.h"
#include "block/drivers/qcow2/qcow2-overlap.h"
#include "util/list.h"

typedef struct BDRVQcow2State BDRVQcow2State;
typedef struct Qcow2Bitmaps Qcow2Bitmaps;   /* qcow2-bitmap.c */

/* ---- table cache (qcow2-cache.c) ---- */

typedef struct Qcow2CacheEntry {
    uint64_t offset;         /* host offset of the table; 0 = empty slot */
    uint8_t *table;          /* cluster_size bytes, on-disk byte order */
    bool dirty;
    /* Refcount block only: the copy on disk is this table less the counts
     * of allocations then in flight, and neither has changed since; it
     * stays dirty, and only a forced write (eviction) writes it whole. */
    bool partial;
    int ref;                 /* pinned while > 0 */
    uint64_t lru;
} Qcow2CacheEntry;

typedef struct Qcow2Cache {
    Qcow2CacheEntry *entries;
    unsigned size;           /* slots in use */
    unsigned capacity;       /* slots allocated: size plus spares */
    unsigned last;           /* the slot found last */
    size_t align;
    uint64_t lru_clock;
    bool is_l2;              /* writing back an L2 table has dependencies */
} Qcow2Cache;

Qcow2Cache *qcow2_cache_new(unsigned entries, uint32_t cluster_size,
                            bool is_l2, size_t align);
void qcow2_cache_free(Qcow2Cache *c);
/* Returns the pinned table at offset, reading it unless `fresh` (then it
 * is zero-filled and dirty).  Release with qcow2_cache_put. */
int coroutine_fn qcow2_cache_get(BDRVQcow2State *s, Qcow2Cache *c,
                                 uint64_t offset, bool fresh,
                                 Qcow2CacheEntry **out);
void qcow2_cache_put(Qcow2CacheEntry *e);
void qcow2_cache_mark_dirty(Qcow2Cache *c, Qcow2CacheEntry *e);
/* Writes back every dirty table (L2: after the refcounts, see above). */
int coroutine_fn qcow2_cache_flush(BDRVQcow2State *s, Qcow2Cache *c);
int coroutine_fn qcow2_cache_write_entry(BDRVQcow2State *s, Qcow2Cache *c,
                                         Qcow2CacheEntry *e);
/* An allocation in flight got its references (or gave its clusters
 * back): refcount blocks written without its counts must be written
 * again before the L2 tables. */
void qcow2_cache_inflight_done(Qcow2Cache *c);
/* Forgets a table (its cluster is being freed). */
void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset);
bool qcow2_cache_has_dirty(const Qcow2Cache *c);

/* ---- driver state ---- */

typedef struct Qcow2InflightAlloc {
    uint64_t first_cluster;  /* guest cluster index */
    uint64_t nb_clusters;
    /* The host clusters allocated for it, counted in the refcount cache
     * but not referenced yet (0 clusters: none, or referenced now).
     * Refcount blocks reach the disk without their counts: a kill while
     * the data is copied must not leave them counted and unreferenced. */
    uint64_t host_cluster;
    uint64_t host_clusters;
    CoQueue waiters;
    ListHead link;
} Qcow2InflightAlloc;

/* One entry of the snapshot table (qcow2-snapshot.c). */
typedef struct Qcow2Snapshot {
    uint64_t l1_offset;
    uint32_t l1_size;
    BdrvSnapshotInfo info;
    uint8_t *raw;            /* the entry as stored, without its padding */
    uint32_t raw_len;
} Qcow2Snapshot;

typedef struct Qcow2PendingFree {
    uint64_t offset;         /* host byte range whose clusters lose a ref */
    uint64_t bytes;
} Qcow2PendingFree;

struct BDRVQcow2State {
    BlockNode *bs;
    Qcow2Header hdr;
    Qcow2Geom g;
    /* encrypt.format=luks: the payload cipher (data clusters are
     * encrypted per 512-byte sector, IV = host offset / 512); NULL for
     * a plain image. */
    LuksCipher *crypto;
    uint8_t *cluster0;       /* header cluster as read (for rewrite) */

    uint64_t *l1;            /* host byte order */
    uint32_t l1_size;
    bool l1_dirty;

    uint64_t *reftable;      /* host byte order */
    uint64_t reftable_entries;

    Qcow2Cache *l2_cache;
    Qcow2Cache *rb_cache;

    CoMutex lock;
    uint64_t free_hint;      /* first host cluster that may be free */
    uint64_t file_size;      /* current size of the file child */
    uint64_t grown_from;     /* its size before we first grew it (or 0) */
    ListHead inflight;       /* Qcow2InflightAlloc */
    Qcow2PendingFree *pending;
    size_t nb_pending, pending_alloc;
    bool data_unflushed;     /* data written since the last file flush */
    bool broken;             /* metadata I/O failed: refuse further writes */
    /* Only during qcow2_repair_refcounts: the expected counts, which
     * structures allocated meanwhile add to. */
    uint32_t *repair_counts;
    uint64_t repair_n;
    /* Only inside qcow2_alloc_clusters: the clusters it is counting, in
     * flight as an Qcow2InflightAlloc's until the caller takes them. */
    uint64_t alloc_cluster, alloc_clusters;
    /* Compressed writes: the host byte where the next compressed cluster
     * may be packed, inside a host cluster that compressed clusters
     * already share (0: none; start a new host cluster).  Reset when
     * that cluster's refcount drops to 0 (qcow2-refcount.c). */
    uint64_t comp_cursor;
    /* Persistent bitmaps: the directory found at open (qcow2-bitmap.c). */
    Qcow2Bitmaps *bitmaps;
    /* Metadata-overlap protection (qcow2-overlap-check.c). */
    Qcow2Overlap ol;
    /* A corruption was reported (qcow2-corrupt.c): later ones are not,
     * unless a non-fatal report is followed by a fatal one. */
    bool corruption_signaled;
    /* The snapshot table as read at open and rewritten since
     * (qcow2-snapshot.c); snaps_bad: it could not be read, and is not
     * changed. */
    Qcow2Snapshot *snaps;
    uint32_t nb_snaps;
    bool snaps_bad;
};

/* ---- refcounts and allocation (qcow2-refcount.c) ---- */

int coroutine_fn qcow2_get_refcount(BDRVQcow2State *s, uint64_t cluster,
                                    uint64_t *refcount);
/* Adds delta to the refcount of every cluster touching [offset,
 * offset+bytes).  Refblocks must exist for decrements. */
int coroutine_fn qcow2_update_refcount(BDRVQcow2State *s, uint64_t offset,
                                       uint64_t bytes, int delta);
/* Sets one cluster's refcount (creating its block if needed). */
int coroutine_fn qcow2_set_refcount(BDRVQcow2State *s, uint64_t cluster,
                                    uint64_t value);
/* Recounts every reference and fixes the refcounts, then clears the dirty
 * bit (for images left dirty by lazy refcounts). */
int coroutine_fn qcow2_repair_refcounts(BDRVQcow2State *s, Error **errp);
/* Runs fn(s) holding s->lock in a coroutine in the node's context and
 * returns its result: from the main loop (waiting there), or directly from
 * a coroutine that does not hold the lock. */
int qcow2_run_locked(BDRVQcow2State *s,
                     int coroutine_fn (*locked_fn)(BDRVQcow2State *s));

/* ---- persistent bitmaps (qcow2-bitmap.c) ---- */

/* Open: turns the bitmaps extension into the node's named bitmaps
 * (in_use ones inconsistent).  Caller holds s->lock. */
int coroutine_fn qcow2_load_bitmaps(BDRVQcow2State *s, Error **errp);
/* Read-write open (or reopen), after loading: arms the crash-consistent
 * mode (qcow2-bitmap-cc.c): every persistent bitmap rewritten in_use and
 * fully allocated, our autoclear bit and extension set, all durable; and
 * arms the store at close.  Caller holds s->lock. */
int coroutine_fn qcow2_mark_bitmaps_in_use(BDRVQcow2State *s, Error **errp);
/* Mark-before-write: called by the write, write-zeroes and discard entry
 * points before they change anything.  Returns once every granule of
 * [offset, offset+bytes) of every recording persistent bitmap is set in
 * the stored copy (at once when it already is), or -errno.  Caller does
 * not hold s->lock. */
int coroutine_fn qcow2_bitmaps_before_write(BDRVQcow2State *s, int64_t offset,
                                            int64_t bytes);

/* After a resize: the armed bitmaps get tables for the new size.  Caller
 * holds s->lock. */
int coroutine_fn qcow2_bitmaps_resized(BDRVQcow2State *s);

/* blockjobd's autoclear bit: the bitmaps left in_use by our
 * crash-consistent mode may be trusted (any other writer clears it). */
#define QCOW2_AUTOCLEAR_BJ_CC       (1ull << 63)
/* Its header extension ("BJCC"): generation and armed directory. */
#define QCOW2_EXT_BJ_CC             0x424a4343u
/* Close of a read-write node (and reopen read-only): writes the
 * persistent bitmaps as qemu does, clears in_use and our mode, frees the
 * old clusters.  Caller holds s->lock. */
int coroutine_fn qcow2_store_bitmaps(BDRVQcow2State *s);
void qcow2_free_bitmaps(BDRVQcow2State *s);
/* The driver's persistent-bitmap entries (BlockDriver; qcow2-bitmap.c,
 * qcow2-bitmap-cc.c, qcow2-bitmap-resync.c). */
BlockDriverCanStoreBitmapFn qcow2_can_store_new_dirty_bitmap;
int qcow2_dirty_bitmaps_store_sync(BlockNode *bs);
void qcow2_dirty_bitmaps_resync_later(BlockNode *bs);
/* Open: how many leading directory entries our mode vouches for (0 when
 * the autoclear bit or a matching extension is missing). */
uint32_t qcow2_bm_cc_trusted(BDRVQcow2State *s);
/* One batch or directory rewrite at a time (see Qcow2Bitmaps). */
void coroutine_fn qcow2_bm_cc_acquire(Qcow2Bitmaps *b);
void qcow2_bm_cc_release(Qcow2Bitmaps *b);
/* The most clusters one allocation may ask for: what 56-bit host
 * offsets can address. */
static inline uint64_t qcow2_max_alloc_clusters(const Qcow2Geom *g)
{
    return 1ull << (56 - g->cluster_bits);
}
/* Allocates n contiguous clusters (refcount 1), n at most
 * qcow2_max_alloc_clusters; returns host offset or -errno (-EFBIG when
 * no such run fits).  Grows the file as needed. */
int64_t coroutine_fn qcow2_alloc_clusters(BDRVQcow2State *s, uint64_t n);
/* Queues a reference drop to apply once the references are durable. */
void qcow2_defer_free(BDRVQcow2State *s, uint64_t offset, uint64_t bytes);
/* Applies the queued drops (the caller has made the L2 changes durable). */
int coroutine_fn qcow2_apply_pending_frees(BDRVQcow2State *s);
/* Makes sure the file is at least end bytes long. */
int coroutine_fn qcow2_grow_file(BDRVQcow2State *s, uint64_t end);
/* At close: gives back what qcow2_grow_file added past the last cluster
 * in use (it grows in steps), so the file ends where the image does. */
int coroutine_fn qcow2_trim_file(BDRVQcow2State *s);

/* ---- mapping and metadata writes (qcow2-cluster.c) ---- */

typedef struct Qcow2Mapping {
    Qcow2L2Info info;
    uint64_t bytes;          /* run length from the guest offset */
} Qcow2Mapping;

/* Describes guest [offset, offset+bytes): the first cluster's type and
 * how many bytes from offset share it (contiguous on the host for normal
 * clusters; within one L2 table).  `write`: the caller means to write
 * there (it words a corruption report).  Caller holds s->lock. */
int coroutine_fn qcow2_get_mapping(BDRVQcow2State *s, uint64_t offset,
                                   uint64_t bytes, bool write,
                                   Qcow2Mapping *m);
/* Makes sure guest cluster first has a writable L2 table on disk (new
 * ones are written at once), before an allocating write puts data in
 * clusters it will reference: as qemu, the table takes its space in the
 * image file first.  Caller holds s->lock. */
int coroutine_fn qcow2_prepare_l2_table(BDRVQcow2State *s, uint64_t first);
/* Sets the L2 entries of guest clusters [first, first+n) to entries[i];
 * allocates the L2 table if needed.  Caller holds s->lock.  With extended
 * L2 entries each entry is two words (descriptor, subcluster bitmap). */
int coroutine_fn qcow2_set_l2_entries(BDRVQcow2State *s, uint64_t first,
                                      uint64_t n, const uint64_t *entries,
                                      uint64_t *old_entries);
/* Reads n L2 entries from guest cluster first (zeros if no table); two
 * words each with extended L2 entries. */
int coroutine_fn qcow2_read_l2_entries(BDRVQcow2State *s, uint64_t first,
                                       uint64_t n, uint64_t *out);
/*
 * Writes every dirty refcount block and L2 table and the L1 table, in the
 * crash-safe order, with the flushes that order needs (no final one).
 * Run whenever a cache must write back a dirty table: see
 * qcow2-cache.c.
 */
int coroutine_fn qcow2_write_back(BDRVQcow2State *s);
/* qcow2_write_back, then the queued reference drops. */
int coroutine_fn qcow2_flush_metadata(BDRVQcow2State *s);
/* Reads bytes of metadata from the file child (checked against its end). */
int coroutine_fn qcow2_read_meta(BDRVQcow2State *s, uint64_t offset,
                                 void *buf, uint64_t bytes);
int coroutine_fn qcow2_write_meta(BDRVQcow2State *s, uint64_t offset,
                                  const void *buf, uint64_t bytes);
int coroutine_fn qcow2_flush_file(BDRVQcow2State *s);
/* Rewrites cluster 0 from s->hdr. */
int coroutine_fn qcow2_write_header(BDRVQcow2State *s);

/* The host byte range an L2 entry holds a reference on (*bytes 0: none;
 * compressed clusters: every host cluster their sectors touch). */
void qcow2_entry_ref(BDRVQcow2State *s, uint64_t entry, uint64_t *off,
                     uint64_t *bytes);

/* ---- internal snapshots (qcow2-snapshot.c) ---- */

/* Open: reads the snapshot table (a table that cannot be read is logged
 * and left alone: snaps_bad). */
void coroutine_fn qcow2_snapshots_load(BDRVQcow2State *s);
void qcow2_snapshots_free(BDRVQcow2State *s);
/* query-named-block-nodes: image.snapshots, when there are any. */
void qcow2_snapshots_query(BDRVQcow2State *s, json_t *image);
int coroutine_fn qcow2_co_snapshot_create(BlockNode *bs, const char *name,
                                          BdrvSnapshotInfo *out,
                                          Error **errp);
int coroutine_fn qcow2_co_snapshot_delete(BlockNode *bs, const char *id,
                                          const char *name,
                                          BdrvSnapshotInfo *out,
                                          Error **errp);
int qcow2_snapshot_list(BlockNode *bs, BdrvSnapshotInfo **list);

/* ---- metadata-overlap protection (qcow2-overlap-check.c) ---- */

/* Open, after the L1 and refcount tables are loaded: the L2 tables,
 * refcount blocks and snapshot tables the checks look at. */
void coroutine_fn qcow2_ol_load(BDRVQcow2State *s);
void qcow2_ol_free(BDRVQcow2State *s);
/* Forgets and loads again what the checks know (after the snapshot table
 * changed).  Caller holds s->lock. */
void coroutine_fn qcow2_ol_reload(BDRVQcow2State *s);
/* An L1 entry now points at new_off instead of old_off (0: none). */
void qcow2_ol_note_l2(BDRVQcow2State *s, uint64_t old_off, uint64_t new_off);
void qcow2_ol_note_refblock(BDRVQcow2State *s, uint64_t off);
/* The first checked metadata kind (except those in ign) that host bytes
 * [off, off+len) overlap, or 0. */
unsigned qcow2_ol_find(BDRVQcow2State *s, unsigned ign, uint64_t off,
                       uint64_t len);
/* Before a write into the image file: 0, or -EIO after marking the image
 * corrupt because the range overlaps metadata.  Caller holds s->lock. */
int coroutine_fn qcow2_ol_pre_write(BDRVQcow2State *s, unsigned ign,
                                    uint64_t off, uint64_t len);

/* ---- corruption (qcow2-corrupt.c) ---- */

/*
 * Reports inconsistent metadata: stderr and BLOCK_IMAGE_CORRUPTED (offset
 * and size omitted when negative).  fatal (downgraded on a read-only
 * node): the image is marked corrupt and writes are refused from now on.
 * Caller holds s->lock.
 */
void coroutine_fn qcow2_signal_corruption(BDRVQcow2State *s, bool fatal,
                                          int64_t offset, int64_t size,
                                          const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ---- data (qcow2-data.c) ---- */

BlockDriverRwFn qcow2_co_preadv, qcow2_co_pwritev;
int coroutine_fn qcow2_co_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                        int64_t bytes, unsigned flags);
int coroutine_fn qcow2_co_pdiscard(BlockNode *bs, int64_t offset,
                                   int64_t bytes);
int coroutine_fn qcow2_co_block_status(BlockNode *bs, int64_t offset,
                                       int64_t bytes, int64_t *pnum,
                                       int64_t *map, BlockNode **file);

/* ---- API for jobs (stream, commit) ---- */

extern const BlockDriver bdrv_qcow2;

/*
 * Rewrites the backing file name and format stored in the image header
 * (NULL file: no backing file).  bs must be a writable qcow2 node.
 */
int coroutine_fn qcow2_co_change_backing_file(BlockNode *bs,
                                              const char *file,
                                              const char *fmt);

/*
 * Creates an image on c (the new file's node, writable and resizable; it
 * is truncated first) — the blockdev-create job's qcow2 step.
 */
int coroutine_fn qcow2_co_create(BlockChild *c, const Qcow2CreateOpts *opts,
                                 Error **errp);
/* The driver's blockdev-create entries (qcow2-blockdev-create.c). */
bool qcow2_create_check(json_t *opts, Error **errp);
int coroutine_fn qcow2_co_blockdev_create(json_t *opts, const char *job_id,
                                          Error **errp);

/*
 * qcow2-backing.c: whether the file at path, which the header of image
 * names as its backing file, may be opened, and with which format (*fmt:
 * the header's, or NULL to probe; set on success).  Coroutine, main loop.
 */
bool coroutine_fn qcow2_check_header_backing(const char *image,
                                             const char *path,
                                             const char **fmt, Error **errp);

#endif
