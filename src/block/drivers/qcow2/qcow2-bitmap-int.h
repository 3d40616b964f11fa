/*
 * Internals shared by qcow2-bitmap.c (load, clean store) and
 * qcow2-bitmap-cc.c (the crash-consistent mode while open read-write).
 * See docs/bitmaps.md for the protocol.
 */
#ifndef BJ_BLOCK_QCOW2_BITMAP_INT_H
#define BJ_BLOCK_QCOW2_BITMAP_INT_H

#include "block/dirty-bitmap.h"
#include "block/drivers/qcow2/qcow2.h"

#define BME_FLAG_IN_USE     (1u << 0)
#define BME_FLAG_AUTO       (1u << 1)
#define BME_FLAG_EXTRA_COMPAT (1u << 2)
#define BME_TYPE_DIRTY      1
#define BME_HEADER_SIZE     24
#define BM_MAX_DIR_SIZE     (64u << 20)
#define BM_MAX_NB           65535
#define BM_MAX_TABLE_SIZE   (1u << 24)   /* entries; qemu's 64 MiB limit */
#define BME_TABLE_OFFSET_MASK 0x00fffffffffffe00ull

/* Our header extension (QCOW2_EXT_BJ_CC), 40 bytes, big-endian:
 *   0 u32 version (1)     4 u32 nb_armed (the first entries of the
 *   8 u64 generation        directory that are kept crash-consistent)
 *  16 u64 dir_offset     24 u64 dir_size    32 u32 nb_bitmaps  36 u32 0 */
#define BJCC_EXT_LEN        40
#define BJCC_VERSION        1

typedef struct Qcow2BitmapEntry {
    char *name;
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags;
    uint8_t granularity_bits;
    uint8_t *extra;            /* kept for entries we carry unchanged */
    uint32_t extra_size;
} Qcow2BitmapEntry;

/* The stored copy of one armed bitmap, as it is on disk. */
typedef struct Qcow2BitmapShadow {
    char *name;
    uint8_t gran_bits;
    uint32_t table_size;
    uint64_t nbits;            /* granules of the image when armed */
    uint8_t *bits;             /* table_size clusters: the data clusters */
    uint64_t *data_off;        /* host offset of each data cluster */
    bool *dirty;               /* cluster set in memory, not yet written */
} Qcow2BitmapShadow;

struct Qcow2Bitmaps {
    Qcow2BitmapEntry *e;       /* the directory on disk now */
    uint32_t nb;
    uint64_t dir_offset, dir_size;
    /* The extension is there but the autoclear bit is not: a writer that
     * does not know bitmaps changed the image.  We leave it alone and
     * store nothing. */
    bool foreign;
    /* Set once the open succeeded read-write: a failed open stores
     * nothing. */
    bool store_on_close;

    /* ---- crash consistency (qcow2-bitmap-cc.c) ---- */
    /* The directory on disk is the armed one: in_use entries, every
     * table entry allocated, our extension and autoclear bit set. */
    bool armed;
    uint64_t generation;       /* of the armed directory */
    Qcow2BitmapShadow *sh;
    uint32_t nsh;
    /* One batch (in-place write + flush) or rewrite at a time; writers
     * whose bits were set before batch n started wait for seq_done >= n. */
    bool busy;
    uint64_t seq_started, seq_done;
    CoQueue waiters;
    bool waiters_init;
    int cc_err;                /* sticky: a batch failed, writes refused */

    /* ---- resync: the stored copies made exact again after bits left
     * the in-memory bitmaps (qcow2-bitmap-cc.c, main loop only) ---- */
    AioTimer *resync_timer;    /* created at the first request */
    int64_t resync_first_ns;   /* oldest request not served yet (0: none) */
    int64_t resync_last_ns;    /* when the last resync ended */
    bool resync_running;       /* inside the drained section */
};

Qcow2RawExt *qcow2_bm_find_ext(Qcow2Header *h, uint32_t type);
/* Adds or replaces (data NULL: removes) an extension of cluster 0. */
void qcow2_bm_set_raw_ext(Qcow2Header *h, uint32_t type, const uint8_t *data,
                          uint32_t len);
uint64_t qcow2_bm_table_entries(BDRVQcow2State *s, unsigned gran_bits);
uint64_t qcow2_bm_entry_len(const Qcow2BitmapEntry *e);
void qcow2_bm_serialize_entry(uint8_t *p, const Qcow2BitmapEntry *e);
/*
 * Writes n entries as a new directory in fresh clusters (newest_first: in
 * reverse, as qemu lists them) and makes it, with everything allocated
 * before, durable (metadata, then the file), ready for a header switch.
 * *off and *size are 0 when n is 0.  s->lock held.  0 or -errno.
 */
int coroutine_fn qcow2_bm_write_directory(BDRVQcow2State *s,
                                          const Qcow2BitmapEntry *e,
                                          uint32_t n, bool newest_first,
                                          int64_t *off, uint64_t *size);
/* Points the header at the new directory (nb 0: drops the extension). */
void qcow2_bm_set_extension(BDRVQcow2State *s, uint32_t nb, uint64_t dir_size,
                            uint64_t dir_off);
int coroutine_fn qcow2_bm_free_clusters(BDRVQcow2State *s,
                                        const Qcow2BitmapEntry *e);
/* The header written points at a new directory: makes it durable (from
 * then on the image uses it: *switched), then frees the clusters of b's
 * old entries not carried into it (carried[i] false) and the old
 * directory, and flushes the metadata. */
int coroutine_fn qcow2_bm_switch(BDRVQcow2State *s, const Qcow2Bitmaps *b,
                                 const bool *carried, bool *switched);
/* Replaces b->e with a copy of ne[0..n) (names and extra data copied). */
void qcow2_bm_set_directory(Qcow2Bitmaps *b, const Qcow2BitmapEntry *ne,
                            uint32_t n, uint64_t dir_off, uint64_t dir_size);
void qcow2_bm_free_shadows(Qcow2Bitmaps *b);
/* Frees the resync timer (close; main loop). */
void qcow2_bm_cc_free_resync(Qcow2Bitmaps *b);
/* ORs bm's granules into bits (on-disk layout, granularity 1 << gb). */
void qcow2_bm_or_bits(BDRVQcow2State *s, uint8_t *bits, unsigned gb,
                      const BdrvDirtyBitmap *bm);

#endif
