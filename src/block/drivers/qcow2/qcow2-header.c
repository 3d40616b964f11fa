/*
 * qcow2 header: parse + validate (the trust boundary for a hostile image)
 * and serialize (preserving what we do not interpret).
 *
 * Every number read from the file is checked here before anything else
 * uses it: the driver may then size allocations and compute offsets from
 * the header without re-checking.  Messages follow qemu's where qemu has
 * one, so blockdev-add failures read the same.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2-format.h"
#include "util/alloc.h"

/* The table qemu-img writes into v3 images; also our fallback names. */
static const struct {
    uint8_t type, bit;
    const char *name;
} std_features[] = {
    { 0, 0, "dirty bit" },
    { 0, 1, "corrupt bit" },
    { 0, 2, "external data file" },
    { 0, 3, "compression type" },
    { 0, 4, "extended L2 entries" },
    { 1, 0, "lazy refcounts" },
    { 2, 0, "bitmaps" },
    { 2, 1, "raw external data" },
};

#define QCOW2_KNOWN_INCOMPAT (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | \
                              QCOW2_INCOMPAT_DATA_FILE |                     \
                              QCOW2_INCOMPAT_COMPRESSION |                   \
                              QCOW2_INCOMPAT_EXTL2)
/* Incompatible features we know but do not implement (yet). */
#define QCOW2_UNSUPPORTED_INCOMPAT QCOW2_INCOMPAT_DATA_FILE

void qcow2_header_free(Qcow2Header *h)
{
    free(h->tail);
    free(h->backing_file);
    free(h->backing_format);
    free(h->data_file);
    free(h->features);
    for (unsigned i = 0; i < h->nb_raw_exts; i++) {
        free(h->raw_exts[i].data);
    }
    free(h->raw_exts);
    memset(h, 0, sizeof(*h));
}

const char *qcow2_feature_name(const Qcow2Header *h, unsigned type,
                               unsigned bit)
{
    for (unsigned i = 0; h && i < h->nb_features; i++) {
        if (h->features[i].type == type && h->features[i].bit == bit &&
            h->features[i].name[0]) {
            return h->features[i].name;
        }
    }
    for (size_t i = 0; i < sizeof(std_features) / sizeof(std_features[0]);
         i++) {
        if (std_features[i].type == type && std_features[i].bit == bit) {
            return std_features[i].name;
        }
    }
    return NULL;
}

static char *strndup_checked(const uint8_t *p, size_t n)
{
    char *s = bj_malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Byte i of the image, zero past what the caller read (a short file reads
 * as zeros, as it does through the block layer). */
static uint8_t byte_at(const uint8_t *buf, size_t len, uint64_t i)
{
    return i < len ? buf[i] : 0;
}

static void copy_out(const uint8_t *buf, size_t len, uint64_t off,
                     uint8_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = byte_at(buf, len, off + i);
    }
}

uint32_t qcow2_probe_cluster_size(const uint8_t *buf, size_t len,
                                  Error **errp)
{
    uint8_t hdr[QCOW2_V2_HEADER_LEN];

    if (len < QCOW2_V2_HEADER_LEN) {
        error_setg(errp, "qcow2 header too short");
        return 0;
    }
    copy_out(buf, len, 0, hdr, sizeof(hdr));
    if (be32_get(hdr) != QCOW2_MAGIC) {
        error_setg(errp, "Image is not in qcow2 format");
        return 0;
    }
    uint32_t version = be32_get(hdr + 4);
    if (version < 2 || version > 3) {
        error_setg(errp, "Unsupported qcow2 version %" PRIu32, version);
        return 0;
    }
    uint32_t cb = be32_get(hdr + 20);
    if (cb < QCOW2_MIN_CLUSTER_BITS || cb > QCOW2_MAX_CLUSTER_BITS) {
        error_setg(errp, "Unsupported cluster size: 2^%" PRIu32, cb);
        return 0;
    }
    return 1u << cb;
}

/* A table at off of bytes length must be cluster aligned, past the header
 * cluster and inside the file. */
static bool table_ok(uint64_t off, uint64_t bytes, uint32_t cs,
                     uint64_t file_size)
{
    if (off & (cs - 1)) {
        return false;
    }
    if (bytes == 0) {
        return true;
    }
    if (off < cs || off > file_size || bytes > file_size - off) {
        return false;
    }
    return true;
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b,
                           uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

static bool parse_feature_table(Qcow2Header *h, const uint8_t *d,
                                uint32_t n, Error **errp)
{
    if (n % 48) {
        error_setg(errp, "Feature name table has invalid length %" PRIu32,
                   n);
        return false;
    }
    h->nb_features = n / 48;
    h->features = bj_calloc(h->nb_features ? h->nb_features : 1,
                            sizeof(*h->features));
    for (unsigned i = 0; i < h->nb_features; i++) {
        const uint8_t *e = d + i * 48;
        h->features[i].type = e[0];
        h->features[i].bit = e[1];
        memcpy(h->features[i].name, e + 2, 46);
        h->features[i].name[46] = '\0';
    }
    return true;
}

static void add_raw_ext(Qcow2Header *h, uint32_t type, const uint8_t *d,
                        uint32_t n)
{
    Qcow2RawExt *r = bj_realloc(h->raw_exts,
                                (h->nb_raw_exts + 1) * sizeof(*r));
    h->raw_exts = r;
    r[h->nb_raw_exts].type = type;
    r[h->nb_raw_exts].len = n;
    r[h->nb_raw_exts].data = bj_malloc(n ? n : 1);
    memcpy(r[h->nb_raw_exts].data, d, n);
    h->nb_raw_exts++;
}

/* Extensions live in [start, end) of cluster 0. */
static bool parse_extensions(Qcow2Header *h, const uint8_t *buf, size_t len,
                             uint64_t start, uint64_t end, Error **errp)
{
    uint64_t off = start;

    while (off + 8 <= end) {
        uint8_t eh[8];
        copy_out(buf, len, off, eh, 8);
        uint32_t type = be32_get(eh), n = be32_get(eh + 4);
        off += 8;
        if (type == QCOW2_EXT_END) {
            return true;
        }
        if (n > end - off) {
            error_setg(errp, "Header extension 0x%08" PRIx32
                       " is too large", type);
            return false;
        }
        uint8_t *d = bj_malloc(n ? n : 1);
        copy_out(buf, len, off, d, n);
        bool ok = true;
        switch (type) {
        case QCOW2_EXT_BACKING_FORMAT:
            if (n > 31) {
                error_setg(errp, "Backing format name too long");
                ok = false;
            } else if (!h->backing_format) {
                h->backing_format = strndup_checked(d, n);
            }
            break;
        case QCOW2_EXT_DATA_FILE:
            if (!h->data_file) {
                h->data_file = strndup_checked(d, n);
            }
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            if (!h->features) {
                ok = parse_feature_table(h, d, n, errp);
            }
            break;
        case QCOW2_EXT_BITMAPS:
            if (n < 24) {
                error_setg(errp, "Bitmaps extension is too short");
                ok = false;
                break;
            }
            /* We do not load bitmaps yet: keep the extension verbatim. */
            add_raw_ext(h, type, d, n);
            break;
        default:
            add_raw_ext(h, type, d, n);
            break;
        }
        free(d);
        if (!ok) {
            return false;
        }
        off += (n + 7ull) & ~7ull;
    }
    return true;
}

static bool check_features(Qcow2Header *h, Error **errp)
{
    uint64_t bad = h->incompatible_features &
                   (~QCOW2_KNOWN_INCOMPAT | QCOW2_UNSUPPORTED_INCOMPAT);
    if (bad) {
        /* Name what we can from the image's own table; the rest as a
         * mask, the way qemu reports it. */
        char msg[512] = "";
        size_t used = 0;
        uint64_t unnamed = 0;
        for (unsigned bit = 0; bit < 64; bit++) {
            if (!(bad & (1ull << bit))) {
                continue;
            }
            const char *name = qcow2_feature_name(h, 0, bit);
            if (!name) {
                unnamed |= 1ull << bit;
                continue;
            }
            used += (size_t)snprintf(msg + used, sizeof(msg) - used, "%s%s",
                                     used ? ", " : "", name);
            if (used >= sizeof(msg)) {
                used = sizeof(msg) - 1;
            }
        }
        if (unnamed) {
            snprintf(msg + used, sizeof(msg) - used,
                     "%sUnknown incompatible feature: %" PRIx64,
                     used ? ", " : "", unnamed);
        }
        error_setg(errp, "Unsupported qcow2 feature(s): %s", msg);
        return false;
    }
    if (h->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
        if (h->compression_type == 0) {
            error_setg(errp, "qcow2: Compression type incompatible feature "
                       "bit must not be set");
            return false;
        }
        if (h->compression_type == 1) {
            error_setg(errp, "qcow2: zstd compression is not supported");
        } else {
            error_setg(errp, "qcow2: Unknown compression type %u",
                       h->compression_type);
        }
        return false;
    }
    if (h->compression_type != 0) {
        error_setg(errp, "qcow2: Compression type incompatible feature bit "
                   "must be set");
        return false;
    }
    return true;
}

static bool check_tables(Qcow2Header *h, uint64_t file_size, Error **errp)
{
    uint32_t cs = 1u << h->cluster_bits;
    Qcow2Geom g;

    qcow2_geom_init(&g, h->cluster_bits, h->refcount_order);
    if (h->incompatible_features & QCOW2_INCOMPAT_EXTL2) {
        if (h->cluster_bits < QCOW2_EXTL2_MIN_CLUSTER_BITS) {
            error_setg(errp, "Extended L2 entries are only supported with "
                       "cluster sizes of at least 16384 bytes");
            return false;
        }
        qcow2_geom_set_extended(&g);
    }

    if (h->crypt_method == 1) {
        error_setg(errp, "Encrypted qcow2 images are not supported");
        return false;
    }
    if (h->crypt_method > 2) {
        error_setg(errp, "Unsupported encryption method %" PRIu32,
                   h->crypt_method);
        return false;
    }

    /* L1: bounded size, big enough for the virtual size, inside the file.
     * The checks and words come in the reference's order; a size past
     * INT64_MAX is what its generic length check then refuses (the node
     * layer refuses a size past BDRV_MAX_LENGTH the same way). */
    if ((uint64_t)h->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "Active L1 table too large");
        return false;
    }
    if (h->size > INT64_MAX) {
        error_setg_errno(errp, EFBIG, "Could not refresh total sector count");
        return false;
    }
    uint64_t need = qcow2_l1_entries_for(&g, h->size);
    if (need > INT_MAX) {
        error_setg(errp, "Image is too big");
        return false;
    }
    if (h->l1_size < need) {
        error_setg(errp, "L1 table is too small");
        return false;
    }
    uint64_t l1_bytes = (uint64_t)h->l1_size * 8;
    if (!table_ok(h->l1_table_offset, l1_bytes, cs, file_size)) {
        error_setg(errp, "Active L1 table offset invalid");
        return false;
    }

    /* Refcount table */
    if (h->refcount_table_clusters == 0) {
        error_setg(errp, "Image does not contain a reference count table");
        return false;
    }
    uint64_t rt_bytes = (uint64_t)h->refcount_table_clusters << h->cluster_bits;
    if (rt_bytes > QCOW2_MAX_REFTABLE_BYTES) {
        error_setg(errp, "Reference count table too large");
        return false;
    }
    if (!table_ok(h->refcount_table_offset, rt_bytes, cs, file_size)) {
        error_setg(errp, "Reference count table offset invalid");
        return false;
    }
    if (ranges_overlap(h->l1_table_offset, l1_bytes,
                       h->refcount_table_offset, rt_bytes)) {
        error_setg(errp, "Active L1 table overlaps the reference count "
                   "table");
        return false;
    }

    /* Snapshots: we do not read the table, but its bounds must be sane */
    if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        error_setg(errp, "Snapshot table too large");
        return false;
    }
    if (h->nb_snapshots &&
        !table_ok(h->snapshots_offset, 1, cs, file_size)) {
        error_setg(errp, "Snapshot table offset invalid");
        return false;
    }
    return true;
}

/* The fixed header fields: byte offset, width (the member's: 4 or 8) and
 * member; one table for parsing and writing them. */
typedef struct HeaderField {
    uint8_t off, width;
    size_t member;
} HeaderField;
#define HF(off, m) { (off), sizeof(((Qcow2Header *)0)->m), \
                     offsetof(Qcow2Header, m) }
static const HeaderField v2_fields[] = {
    HF(4, version), HF(8, backing_file_offset), HF(16, backing_file_size),
    HF(20, cluster_bits), HF(24, size), HF(32, crypt_method),
    HF(36, l1_size), HF(40, l1_table_offset), HF(48, refcount_table_offset),
    HF(56, refcount_table_clusters), HF(60, nb_snapshots),
    HF(64, snapshots_offset),
};
static const HeaderField v3_fields[] = {
    HF(72, incompatible_features), HF(80, compatible_features),
    HF(88, autoclear_features), HF(96, refcount_order),
    HF(100, header_length),
};
#undef HF
#define N_FIELDS(t) (sizeof(t) / sizeof((t)[0]))

static void get_fields(Qcow2Header *h, const uint8_t *hdr,
                       const HeaderField *f, size_t n)
{
    for (; n--; f++) {
        void *m = (char *)h + f->member;
        if (f->width == 4) {
            *(uint32_t *)m = be32_get(hdr + f->off);
        } else {
            *(uint64_t *)m = be64_get(hdr + f->off);
        }
    }
}

static void put_fields(const Qcow2Header *h, uint8_t *buf,
                       const HeaderField *f, size_t n)
{
    for (; n--; f++) {
        const void *m = (const char *)h + f->member;
        if (f->width == 4) {
            be32_put(buf + f->off, *(const uint32_t *)m);
        } else {
            be64_put(buf + f->off, *(const uint64_t *)m);
        }
    }
}

bool qcow2_header_parse(const uint8_t *buf, size_t len, uint64_t file_size,
                        Qcow2Header *h, Error **errp)
{
    uint8_t hdr[QCOW2_V3_HEADER_LEN + 1];

    memset(h, 0, sizeof(*h));
    uint32_t cs = qcow2_probe_cluster_size(buf, len, errp);
    if (!cs) {
        return false;
    }
    copy_out(buf, len, 0, hdr, sizeof(hdr));
    get_fields(h, hdr, v2_fields, N_FIELDS(v2_fields));

    if (h->version == 2) {
        h->refcount_order = 4;
        h->header_length = QCOW2_V2_HEADER_LEN;
    } else {
        get_fields(h, hdr, v3_fields, N_FIELDS(v3_fields));
        if (h->header_length < QCOW2_V3_HEADER_LEN) {
            error_setg(errp, "qcow2 header too short");
            goto fail;
        }
        if (h->header_length > cs) {
            error_setg(errp, "qcow2 header exceeds cluster size");
            goto fail;
        }
        if (h->header_length > QCOW2_V3_HEADER_LEN) {
            h->compression_type = hdr[QCOW2_V3_HEADER_LEN];
            h->tail_len = h->header_length - QCOW2_V3_HEADER_LEN - 1;
            if (h->tail_len) {
                h->tail = bj_malloc(h->tail_len);
                copy_out(buf, len, QCOW2_V3_HEADER_LEN + 1, h->tail,
                         h->tail_len);
            }
        }
    }
    if (h->refcount_order > QCOW2_MAX_REFCOUNT_ORDER) {
        error_setg(errp, "Reference count entry width too large; may not "
                   "exceed 64 bits");
        goto fail;
    }

    /* Backing file name: inside cluster 0, after the extensions */
    uint64_t ext_end = cs;
    if (h->backing_file_offset) {
        if (h->backing_file_size > QCOW2_MAX_BACKING_NAME ||
            h->backing_file_offset > cs ||
            h->backing_file_size > cs - h->backing_file_offset ||
            h->backing_file_offset < h->header_length) {
            error_setg(errp, "Invalid backing file offset");
            goto fail;
        }
        ext_end = h->backing_file_offset;
    }
    if (!parse_extensions(h, buf, len, h->header_length, ext_end, errp)) {
        goto fail;
    }
    if (h->backing_file_offset && h->backing_file_size) {
        h->backing_file = bj_malloc(h->backing_file_size + 1);
        copy_out(buf, len, h->backing_file_offset,
                 (uint8_t *)h->backing_file, h->backing_file_size);
        h->backing_file[h->backing_file_size] = '\0';
        if (strlen(h->backing_file) != h->backing_file_size) {
            error_setg(errp, "Backing file name contains a NUL byte");
            goto fail;
        }
    }

    if (!check_features(h, errp) || !check_tables(h, file_size, errp)) {
        goto fail;
    }
    return true;

fail:
    qcow2_header_free(h);
    return false;
}

void qcow2_header_set_backing(Qcow2Header *h, const char *file,
                              const char *fmt)
{
    free(h->backing_file);
    free(h->backing_format);
    h->backing_file = file && *file ? bj_strdup(file) : NULL;
    h->backing_format = fmt && *fmt ? bj_strdup(fmt) : NULL;
}

/* Appends one extension at *pos; false if it does not fit. */
static bool put_ext(uint8_t *buf, size_t len, size_t *pos, uint32_t type,
                    const void *data, uint32_t n)
{
    size_t padded = (n + 7u) & ~7u;
    if (*pos + 8 + padded > len) {
        return false;
    }
    be32_put(buf + *pos, type);
    be32_put(buf + *pos + 4, n);
    if (n) {
        memcpy(buf + *pos + 8, data, n);
    }
    *pos += 8 + padded;
    return true;
}

static bool put_feature_table(const Qcow2Header *h, uint8_t *buf, size_t len,
                              size_t *pos)
{
    size_t n = h->nb_features ? h->nb_features
               : sizeof(std_features) / sizeof(std_features[0]);
    uint8_t *t = bj_calloc(n, 48);
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = t + i * 48;
        const char *name;
        if (h->nb_features) {
            e[0] = h->features[i].type;
            e[1] = h->features[i].bit;
            name = h->features[i].name;
        } else {
            e[0] = std_features[i].type;
            e[1] = std_features[i].bit;
            name = std_features[i].name;
        }
        memcpy(e + 2, name, strnlen(name, 46));
    }
    bool ok = put_ext(buf, len, pos, QCOW2_EXT_FEATURE_TABLE, t,
                      (uint32_t)(n * 48));
    free(t);
    return ok;
}

static bool serialize(Qcow2Header *h, uint8_t *buf, size_t len,
                      bool feature_table, Error **errp)
{
    size_t pos;

    memset(buf, 0, len);
    if (len < 112) {
        error_setg(errp, "Header does not fit in the first cluster");
        return false;
    }
    be32_put(buf, QCOW2_MAGIC);
    if (h->version >= 3) {
        size_t hl = (QCOW2_V3_HEADER_LEN + 1 + h->tail_len + 7u) & ~7u;
        if (hl > len) {
            error_setg(errp, "Header does not fit in the first cluster");
            return false;
        }
        h->header_length = (uint32_t)hl;
        put_fields(h, buf, v3_fields, N_FIELDS(v3_fields));
        buf[QCOW2_V3_HEADER_LEN] = h->compression_type;
        if (h->tail_len) {
            memcpy(buf + QCOW2_V3_HEADER_LEN + 1, h->tail, h->tail_len);
        }
    } else {
        h->header_length = QCOW2_V2_HEADER_LEN;
    }
    pos = h->header_length;

    bool ok = true;
    if (h->backing_format) {
        ok = put_ext(buf, len, &pos, QCOW2_EXT_BACKING_FORMAT,
                     h->backing_format, (uint32_t)strlen(h->backing_format));
    }
    if (ok && h->data_file) {
        ok = put_ext(buf, len, &pos, QCOW2_EXT_DATA_FILE, h->data_file,
                     (uint32_t)strlen(h->data_file));
    }
    if (ok && h->version >= 3 && feature_table) {
        ok = put_feature_table(h, buf, len, &pos);
    }
    for (unsigned i = 0; ok && i < h->nb_raw_exts; i++) {
        ok = put_ext(buf, len, &pos, h->raw_exts[i].type,
                     h->raw_exts[i].data, h->raw_exts[i].len);
    }
    if (ok) {
        ok = put_ext(buf, len, &pos, QCOW2_EXT_END, NULL, 0);
    }
    if (ok && h->backing_file) {
        size_t n = strlen(h->backing_file);
        if (n > QCOW2_MAX_BACKING_NAME || pos + n > len) {
            ok = false;
        } else {
            memcpy(buf + pos, h->backing_file, n);
            h->backing_file_offset = pos;
            h->backing_file_size = (uint32_t)n;
        }
    } else {
        h->backing_file_offset = 0;
        h->backing_file_size = 0;
    }
    if (!ok) {
        error_setg(errp, "Header extensions and backing file name do not "
                   "fit in the first cluster");
        return false;
    }
    /* Last: the backing name's place is known only now. */
    put_fields(h, buf, v2_fields, N_FIELDS(v2_fields));
    return true;
}

bool qcow2_header_serialize(Qcow2Header *h, uint8_t *buf, size_t len,
                            Error **errp)
{
    /* The feature name table only helps error messages: when it leaves no
     * room (512-byte clusters with a bitmaps extension), leave it out, as
     * qemu does, rather than fail to write the header. */
    if (h->version >= 3 && serialize(h, buf, len, true, NULL)) {
        return true;
    }
    return serialize(h, buf, len, false, errp);
}
