/*
 * qcow2 image creation over a write callback.
 *
 * Layout (as qemu-img lays it out, so images look familiar):
 *   cluster 0            header, extensions, backing name
 *   clusters 1..         refcount table
 *   then                 refcount blocks covering all of the above
 *   then                 the L1 table (all zero: nothing allocated)
 *   then                 the LUKS header of an encrypted image
 * The header goes last, so an interrupted creation never leaves a file that
 * opens as a qcow2 image.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "aio/coroutine.h"
#include "block/drivers/qcow2/qcow2-format.h"
#include "util/alloc.h"

static bool check_opts(const Qcow2CreateOpts *o, int version, uint32_t cs,
                       uint32_t rbits, Error **errp)
{
    if (cs < 512 || cs > (1u << QCOW2_MAX_CLUSTER_BITS) || (cs & (cs - 1))) {
        error_setg(errp, "Cluster size must be a power of two between 512 "
                   "and 2048k");
        return false;
    }
    if (version != 2 && version != 3) {
        error_setg(errp, "Invalid compatibility level: %d", version);
        return false;
    }
    if (rbits == 0 || rbits > 64 || (rbits & (rbits - 1))) {
        error_setg(errp, "Refcount width must be a power of two and may not "
                   "exceed 64 bits");
        return false;
    }
    if (version < 3 && rbits != 16) {
        error_setg(errp, "Different refcount widths than 16 bits require "
                   "compatibility level 1.1 or above (use version=v3 or "
                   "greater)");
        return false;
    }
    if (version < 3 && o->lazy_refcounts) {
        error_setg(errp, "Lazy refcounts only supported with compatibility "
                   "level 1.1 and above (use version=v3 or greater)");
        return false;
    }
    if (o->size % 512) {
        error_setg(errp, "Image size must be a multiple of 512 bytes");
        return false;
    }
    if (o->backing_format && !o->backing_file) {
        error_setg(errp, "Backing format cannot be used without backing "
                   "file");
        return false;
    }
    if (o->backing_file && strlen(o->backing_file) > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "Backing file name too long");
        return false;
    }
    return true;
}

static uint64_t div_round_up(uint64_t a, uint64_t b)
{
    return a / b + (a % b != 0);
}

/* Writes len bytes of zeros at off, a cluster-sized buffer at a time. */
static int write_zeros(Qcow2WriteFn *write, void *opaque, uint64_t off,
                       uint64_t len, const uint8_t *zero, uint32_t cs)
{
    while (len) {
        size_t n = len < cs ? (size_t)len : cs;
        int ret = write(opaque, off, zero, n);
        if (ret < 0) {
            return ret;
        }
        off += n;
        len -= n;
    }
    return 0;
}

/* Mixed: write may yield (a block child from blockdev-create's
 * coroutine) or not (a plain fd). */
bool coroutine_mixed_fn qcow2_create_image(const Qcow2CreateOpts *o,
                                           Qcow2WriteFn *write, void *opaque,
                                           Error **errp)
{
    int version = o->version ? o->version : 3;
    uint32_t cs = o->cluster_size ? o->cluster_size : 65536;
    uint32_t rbits = o->refcount_bits ? o->refcount_bits : 16;
    Qcow2Header h;
    Qcow2Geom g;
    uint8_t *buf = NULL, *zero = NULL;
    bool ok = false;
    int ret;

    if (!check_opts(o, version, cs, rbits, errp)) {
        return false;
    }
    uint32_t cb = (uint32_t)__builtin_ctz(cs);
    uint32_t order = (uint32_t)__builtin_ctz(rbits);
    qcow2_geom_init(&g, cb, order);

    uint64_t l1_entries = qcow2_l1_entries_for(&g, o->size);
    if (l1_entries * 8 > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "The image size is too large for file format "
                   "'qcow2' (try using a larger cluster size)");
        return false;
    }
    uint64_t l1_clusters = div_round_up(l1_entries * 8, cs);
    uint64_t crypt_clusters = div_round_up(o->crypt_len, cs);
    uint64_t per_rb = 1ull << g.rb_bits;

    /* Find reftable/refblock counts that cover themselves. */
    uint64_t rt = 1, rb = 1;
    for (;;) {
        uint64_t total = 1 + rt + rb + l1_clusters + crypt_clusters;
        uint64_t need_rb = div_round_up(total, per_rb);
        uint64_t need_rt = div_round_up(need_rb * 8, cs);
        if (need_rb <= rb && need_rt <= rt) {
            break;
        }
        rb = need_rb > rb ? need_rb : rb;
        rt = need_rt > rt ? need_rt : rt;
    }
    uint64_t rt_off = cs;
    uint64_t rb_off = rt_off + rt * cs;
    uint64_t l1_off = rb_off + rb * cs;
    uint64_t crypt_off = l1_off + l1_clusters * cs;
    uint64_t total = 1 + rt + rb + l1_clusters + crypt_clusters;

    buf = bj_calloc(1, cs);
    zero = bj_calloc(1, cs);

    if (o->crypt_header) {
        ret = write(opaque, crypt_off, o->crypt_header, o->crypt_len);
        if (ret >= 0 && crypt_clusters * cs > o->crypt_len) {
            ret = write_zeros(write, opaque, crypt_off + o->crypt_len,
                              crypt_clusters * cs - o->crypt_len, zero, cs);
        }
        if (ret < 0) {
            goto io_fail;
        }
    }

    /* L1 (explicitly zeroed: the target may hold old data) */
    ret = write_zeros(write, opaque, l1_off, l1_clusters * cs, zero, cs);
    if (ret < 0) {
        goto io_fail;
    }
    /* Refcount blocks: 1 for every cluster in use */
    for (uint64_t i = 0; i < rb; i++) {
        memset(buf, 0, cs);
        for (uint64_t j = 0; j < per_rb; j++) {
            uint64_t cl = i * per_rb + j;
            if (cl >= total) {
                break;
            }
            qcow2_refcount_set(&g, buf, j, 1);
        }
        ret = write(opaque, rb_off + i * cs, buf, cs);
        if (ret < 0) {
            goto io_fail;
        }
    }
    /* Refcount table */
    for (uint64_t i = 0; i < rt; i++) {
        memset(buf, 0, cs);
        for (uint64_t j = 0; j < cs / 8; j++) {
            uint64_t idx = i * (cs / 8) + j;
            if (idx >= rb) {
                break;
            }
            be64_put(buf + j * 8, rb_off + idx * cs);
        }
        ret = write(opaque, rt_off + i * cs, buf, cs);
        if (ret < 0) {
            goto io_fail;
        }
    }

    memset(&h, 0, sizeof(h));
    h.version = (uint32_t)version;
    h.cluster_bits = cb;
    h.size = o->size;
    h.l1_size = (uint32_t)l1_entries;
    h.l1_table_offset = l1_off;
    h.refcount_table_offset = rt_off;
    h.refcount_table_clusters = (uint32_t)rt;
    h.refcount_order = order;
    if (o->lazy_refcounts) {
        h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    }
    qcow2_header_set_backing(&h, o->backing_file, o->backing_format);
    if (o->crypt_header) {
        h.crypt_method = 2;   /* LUKS */
        h.raw_exts = bj_calloc(1, sizeof(*h.raw_exts));
        h.raw_exts[0].type = QCOW2_EXT_CRYPTO;
        h.raw_exts[0].len = 16;
        h.raw_exts[0].data = bj_malloc(16);
        be64_put(h.raw_exts[0].data, crypt_off);
        be64_put(h.raw_exts[0].data + 8, o->crypt_len);
        h.nb_raw_exts = 1;
    }
    ok = qcow2_header_serialize(&h, buf, cs, errp);
    qcow2_header_free(&h);
    if (!ok) {
        goto out;
    }
    ret = write(opaque, 0, buf, cs);
    if (ret < 0) {
        ok = false;
        goto io_fail;
    }
    ok = true;
    goto out;

io_fail:
    error_setg_errno(errp, -ret, "Could not write qcow2 image");
out:
    free(buf);
    free(zero);
    return ok;
}
