/*
 * qcow2 on-disk format: the header and its extensions, the L1/L2 mapping,
 * cluster descriptors and refcount entries (docs/interop/qcow2.txt).
 *
 * Everything here is pure: it works on buffers and numbers and does no I/O,
 * so it can be unit-tested and fuzzed without the block layer.  The driver
 * (qcow2.c and friends) does the reading and writing.
 *
 *   cluster 0:  header | extensions ... | end (type 0) | backing file name
 *   L1 table (contiguous)  --> L2 tables (one cluster each) --> data clusters
 *   refcount table (contiguous) --> refcount blocks (one cluster each)
 */
#ifndef BJ_BLOCK_QCOW2_FORMAT_H
#define BJ_BLOCK_QCOW2_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

#define QCOW2_MAGIC                 0x514649fbu   /* "QFI\xfb" */
#define QCOW2_V2_HEADER_LEN         72
#define QCOW2_V3_HEADER_LEN         104           /* through header_length */
#define QCOW2_MIN_CLUSTER_BITS      9
#define QCOW2_MAX_CLUSTER_BITS      21            /* 2 MiB, as qemu */
#define QCOW2_MAX_REFCOUNT_ORDER    6
#define QCOW2_MAX_BACKING_NAME      1023
/* Implementation limits (as qemu): bigger tables are refused at open so a
 * hostile header can never make us allocate gigabytes. */
#define QCOW2_MAX_L1_BYTES          (32u * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES    (8u * 1024 * 1024)
#define QCOW2_MAX_SNAPSHOTS         65536

/* incompatible_features */
#define QCOW2_INCOMPAT_DIRTY        (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT      (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE    (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION  (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2        (1ull << 4)
/* compatible_features */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
/* autoclear_features */
#define QCOW2_AUTOCLEAR_BITMAPS     (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_RAW    (1ull << 1)

/* Header extension types */
#define QCOW2_EXT_END               0x00000000u
#define QCOW2_EXT_BACKING_FORMAT    0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE     0x6803f857u
#define QCOW2_EXT_BITMAPS           0x23852875u
#define QCOW2_EXT_CRYPTO            0x0537be77u
#define QCOW2_EXT_DATA_FILE         0x44415441u

/* L1 / L2 entries */
#define QCOW2_OFLAG_COPIED          (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED      (1ull << 62)
#define QCOW2_OFLAG_ZERO            (1ull << 0)
#define QCOW2_L1E_OFFSET_MASK       0x00fffffffffffe00ull
#define QCOW2_L2E_OFFSET_MASK       0x00fffffffffffe00ull
#define QCOW2_REFT_OFFSET_MASK      0xfffffffffffffe00ull
/* Bits an L1 entry must have clear (reserved: 1-8, 56-62). */
#define QCOW2_L1E_RESERVED          0x7f000000000001ffull
/* Reserved bits of a standard L2 entry (1-8, 56-61). */
#define QCOW2_L2E_STD_RESERVED      0x3f000000000001feull

static inline uint16_t be16_get(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t be32_get(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t be64_get(const uint8_t *p)
{
    return ((uint64_t)be32_get(p) << 32) | be32_get(p + 4);
}

static inline void be16_put(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void be64_put(uint8_t *p, uint64_t v)
{
    be32_put(p, (uint32_t)(v >> 32));
    be32_put(p + 4, (uint32_t)v);
}

/* ---- header ---- */

typedef struct Qcow2FeatureName {
    uint8_t type;            /* 0 incompatible, 1 compatible, 2 autoclear */
    uint8_t bit;
    char name[47];           /* NUL-terminated copy of the 46-byte field */
} Qcow2FeatureName;

/* An extension we keep verbatim so that rewriting the header preserves it
 * (bitmaps, crypto, and any type we do not know). */
typedef struct Qcow2RawExt {
    uint32_t type;
    uint32_t len;
    uint8_t *data;
} Qcow2RawExt;

typedef struct Qcow2Header {
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    /* v3 (v2: zero, refcount_order 4, header_length 72) */
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
    /* Header bytes past the fields we know (104 or 105 .. header_length),
     * preserved on rewrite. */
    uint8_t *tail;
    uint32_t tail_len;

    char *backing_file;      /* NULL if none */
    char *backing_format;    /* NULL if no extension */
    char *data_file;         /* NULL if no extension */
    Qcow2FeatureName *features;
    unsigned nb_features;
    Qcow2RawExt *raw_exts;   /* kept verbatim, in file order */
    unsigned nb_raw_exts;
} Qcow2Header;

void qcow2_header_free(Qcow2Header *h);

/*
 * Cluster size from the first bytes of an image, so the caller knows how
 * much of cluster 0 to read before qcow2_header_parse.  Checks magic,
 * version and cluster_bits.  Returns the cluster size or 0 with errp set.
 */
uint32_t qcow2_probe_cluster_size(const uint8_t *buf, size_t len,
                                  Error **errp);

/*
 * Parses and validates a header.  buf holds the start of the image: at
 * least min(cluster size, file_size) bytes.  Every offset is checked
 * against file_size.  On failure h is left freed/zeroed and errp names the
 * problem.
 */
bool qcow2_header_parse(const uint8_t *buf, size_t len, uint64_t file_size,
                        Qcow2Header *h, Error **errp);

/*
 * Serializes h (fields, extensions, backing name) into buf of cluster-size
 * bytes (zero-filled past the data).  Fails if it does not fit.  Sets
 * h->header_length / backing_file_offset / backing_file_size to what was
 * written.
 */
bool qcow2_header_serialize(Qcow2Header *h, uint8_t *buf, size_t len,
                            Error **errp);

/* "dirty bit", "corrupt bit", ... or from the image's feature table, else
 * NULL. */
const char *qcow2_feature_name(const Qcow2Header *h, unsigned type,
                               unsigned bit);

/* Sets the backing name and format (either may be NULL to remove). */
void qcow2_header_set_backing(Qcow2Header *h, const char *file,
                              const char *fmt);

/* ---- geometry ---- */

typedef struct Qcow2Geom {
    uint32_t cluster_bits;
    uint32_t cluster_size;
    bool extended;             /* extended L2: 16-byte entries with a
                                  subcluster bitmap */
    uint32_t l2_bits;          /* log2(entries per L2 table) */
    uint32_t l2_size;          /* entries per L2 table */
    uint32_t refcount_order;
    uint32_t refcount_bits;
    uint32_t rb_bits;          /* log2(entries per refcount block) */
    uint32_t csize_shift;      /* compressed descriptor: x */
    uint64_t csize_mask;       /* additional-sectors field mask */
    uint64_t coffset_mask;     /* host offset field mask */
} Qcow2Geom;

void qcow2_geom_init(Qcow2Geom *g, uint32_t cluster_bits,
                     uint32_t refcount_order);
/* Switches to extended L2 entries (incompatible bit 4): 32 subclusters. */
void qcow2_geom_set_extended(Qcow2Geom *g);

#define QCOW2_EXTL2_SUBCLUSTERS 32
#define QCOW2_EXTL2_MIN_CLUSTER_BITS 14

static inline uint64_t qcow2_l1_index(const Qcow2Geom *g, uint64_t off)
{
    return off >> (g->cluster_bits + g->l2_bits);
}

static inline uint32_t qcow2_l2_index(const Qcow2Geom *g, uint64_t off)
{
    return (uint32_t)((off >> g->cluster_bits) & (g->l2_size - 1));
}

static inline uint64_t qcow2_offset_in_cluster(const Qcow2Geom *g,
                                               uint64_t off)
{
    return off & (g->cluster_size - 1);
}

/* L1 entries needed to map `size` guest bytes. */
uint64_t qcow2_l1_entries_for(const Qcow2Geom *g, uint64_t size);

/* ---- cluster descriptors ---- */

typedef enum Qcow2ClusterType {
    QCOW2_CLUSTER_UNALLOCATED,   /* backing or zeros */
    QCOW2_CLUSTER_ZERO_PLAIN,    /* reads zeros, no host cluster */
    QCOW2_CLUSTER_ZERO_ALLOC,    /* reads zeros, host cluster reserved */
    QCOW2_CLUSTER_NORMAL,
    QCOW2_CLUSTER_COMPRESSED,
} Qcow2ClusterType;

typedef struct Qcow2L2Info {
    Qcow2ClusterType type;
    uint64_t host_offset;      /* normal/zero-alloc: cluster; compressed:
                                  byte offset */
    uint64_t compressed_bytes; /* compressed: bytes to read (upper bound) */
    bool copied;               /* refcount is exactly 1 */
} Qcow2L2Info;

/*
 * Decodes an L2 entry.  Returns false (and errp) for entries that are
 * invalid: reserved bits set, unaligned offset, zero flag on a v2 image.
 */
bool qcow2_l2_decode(const Qcow2Geom *g, int version, uint64_t entry,
                     Qcow2L2Info *out, Error **errp);

/* Builds a compressed descriptor (host byte offset, compressed length). */
uint64_t qcow2_l2_make_compressed(const Qcow2Geom *g, uint64_t host_off,
                                  uint64_t len);

/* ---- refcounts ---- */

/* Refcount block entry `index` in a block of g->refcount_bits wide
 * entries. */
uint64_t qcow2_refcount_get(const Qcow2Geom *g, const uint8_t *block,
                            uint64_t index);
/* Stores value; returns false if it does not fit in the width. */
bool qcow2_refcount_set(const Qcow2Geom *g, uint8_t *block, uint64_t index,
                        uint64_t value);

static inline uint64_t qcow2_refcount_max(const Qcow2Geom *g)
{
    return g->refcount_bits == 64 ? UINT64_MAX
                                  : (1ull << g->refcount_bits) - 1;
}

/* Host cluster index -> (reftable index, entry in block). */
static inline uint64_t qcow2_reftable_index(const Qcow2Geom *g,
                                            uint64_t host_off)
{
    return host_off >> (g->cluster_bits + g->rb_bits);
}

static inline uint64_t qcow2_refblock_index(const Qcow2Geom *g,
                                            uint64_t host_off)
{
    return (host_off >> g->cluster_bits) & ((1ull << g->rb_bits) - 1);
}

/* ---- image creation ---- */

typedef struct Qcow2CreateOpts {
    uint64_t size;
    uint32_t cluster_size;     /* 0 = 64 KiB */
    int version;               /* 0 = 3 */
    uint32_t refcount_bits;    /* 0 = 16 */
    bool lazy_refcounts;
    const char *backing_file;
    const char *backing_format;
    /* encrypt.format=luks: the LUKS header area (crypt_len bytes, made by
     * the caller) stored in clusters after the L1 table and named by the
     * crypto header extension; NULL: not encrypted. */
    const uint8_t *crypt_header;
    size_t crypt_len;
} Qcow2CreateOpts;

/*
 * Writes go through this callback so creation runs over a plain fd (unit
 * tests, tools) or over a block child (blockdev-create).  Returns 0 or
 * -errno.  The target is assumed empty (all zeros) beyond what is written.
 */
typedef int Qcow2WriteFn(void *opaque, uint64_t offset, const void *buf,
                         size_t len);

bool qcow2_create_image(const Qcow2CreateOpts *opts, Qcow2WriteFn *write,
                        void *opaque, Error **errp);

#endif
