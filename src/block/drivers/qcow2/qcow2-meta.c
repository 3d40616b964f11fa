/*
 * qcow2 metadata arithmetic: geometry, L2 descriptors, refcount entries.
 * Pure functions; the driver and the unit tests share them.
 */
#include <inttypes.h>

#include "block/drivers/qcow2/qcow2-format.h"

void qcow2_geom_init(Qcow2Geom *g, uint32_t cluster_bits,
                     uint32_t refcount_order)
{
    g->cluster_bits = cluster_bits;
    g->cluster_size = 1u << cluster_bits;
    g->extended = false;
    g->l2_bits = cluster_bits - 3;             /* 8-byte entries */
    g->l2_size = 1u << g->l2_bits;
    g->refcount_order = refcount_order;
    g->refcount_bits = 1u << refcount_order;
    g->rb_bits = cluster_bits + 3 - refcount_order;
    /* Compressed descriptor: bits 0..x-1 host offset, x..61 additional
     * 512-byte sectors, x = 62 - (cluster_bits - 8). */
    g->csize_shift = 62 - (cluster_bits - 8);
    g->csize_mask = (1ull << (cluster_bits - 8)) - 1;
    g->coffset_mask = (1ull << g->csize_shift) - 1;
}

void qcow2_geom_set_extended(Qcow2Geom *g)
{
    g->extended = true;
    g->l2_bits = g->cluster_bits - 4;          /* 16-byte entries */
    g->l2_size = 1u << g->l2_bits;
}

uint64_t qcow2_l1_entries_for(const Qcow2Geom *g, uint64_t size)
{
    unsigned shift = g->cluster_bits + g->l2_bits;
    return (size >> shift) + ((size & ((1ull << shift) - 1)) != 0);
}

bool qcow2_l2_decode(const Qcow2Geom *g, int version, uint64_t entry,
                     Qcow2L2Info *out, Error **errp)
{
    out->copied = entry & QCOW2_OFLAG_COPIED;
    out->compressed_bytes = 0;

    if (entry & QCOW2_OFLAG_COMPRESSED) {
        uint64_t off = entry & g->coffset_mask;
        uint64_t sectors = ((entry >> g->csize_shift) & g->csize_mask) + 1;
        out->type = QCOW2_CLUSTER_COMPRESSED;
        out->host_offset = off;
        /* The data starts at off and ends in the last counted sector. */
        out->compressed_bytes = sectors * 512 - (off & 511);
        out->copied = false;
        if (off == 0) {
            error_setg(errp, "Compressed cluster descriptor has offset 0");
            return false;
        }
        return true;
    }

    uint64_t off = entry & QCOW2_L2E_OFFSET_MASK;
    if (entry & QCOW2_L2E_STD_RESERVED) {
        error_setg(errp, "L2 entry 0x%016" PRIx64 " has reserved bits set",
                   entry);
        return false;
    }
    if (off & (g->cluster_size - 1)) {
        error_setg(errp, "Cluster allocation offset 0x%" PRIx64
                   " unaligned", off);
        return false;
    }
    if (entry & QCOW2_OFLAG_ZERO) {
        if (version < 3) {
            error_setg(errp, "Zero cluster flag in a version 2 image");
            return false;
        }
        out->type = off ? QCOW2_CLUSTER_ZERO_ALLOC : QCOW2_CLUSTER_ZERO_PLAIN;
    } else {
        out->type = off ? QCOW2_CLUSTER_NORMAL : QCOW2_CLUSTER_UNALLOCATED;
    }
    out->host_offset = off;
    if (!off && out->copied) {
        /* COPIED without a cluster is meaningless; tolerate as qemu-img
         * does on read, the flag is rewritten on the next allocation. */
        out->copied = false;
    }
    return true;
}

uint64_t qcow2_l2_make_compressed(const Qcow2Geom *g, uint64_t host_off,
                                  uint64_t len)
{
    uint64_t extra = ((host_off + len - 1) >> 9) - (host_off >> 9);
    return QCOW2_OFLAG_COMPRESSED | (extra << g->csize_shift) |
           (host_off & g->coffset_mask);
}

/*
 * Widths below 8 pack several entries per byte, lowest bits first; 8 and
 * wider are big-endian words.
 */
uint64_t qcow2_refcount_get(const Qcow2Geom *g, const uint8_t *block,
                            uint64_t index)
{
    unsigned bits = g->refcount_bits;

    switch (bits) {
    case 1: case 2: case 4: {
        unsigned per = 8 / bits;
        unsigned shift = (unsigned)(index % per) * bits;
        return (block[index / per] >> shift) & ((1u << bits) - 1);
    }
    case 8:
        return block[index];
    case 16:
        return be16_get(block + index * 2);
    case 32:
        return be32_get(block + index * 4);
    default:
        return be64_get(block + index * 8);
    }
}

bool qcow2_refcount_set(const Qcow2Geom *g, uint8_t *block, uint64_t index,
                        uint64_t value)
{
    unsigned bits = g->refcount_bits;

    if (value > qcow2_refcount_max(g)) {
        return false;
    }
    switch (bits) {
    case 1: case 2: case 4: {
        unsigned per = 8 / bits;
        unsigned shift = (unsigned)(index % per) * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
        block[index / per] = (uint8_t)((block[index / per] & ~mask) |
                                       (value << shift));
        break;
    }
    case 8:
        block[index] = (uint8_t)value;
        break;
    case 16:
        be16_put(block + index * 2, (uint16_t)value);
        break;
    case 32:
        be32_put(block + index * 4, (uint32_t)value);
        break;
    default:
        be64_put(block + index * 8, value);
        break;
    }
    return true;
}
