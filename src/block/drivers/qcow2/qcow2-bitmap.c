/*
 * Persistent dirty bitmaps, as far as we handle them today: we do not
 * track writes into them, so opening an image read-write marks every
 * bitmap `in_use` — exactly what qemu finds after a writer crashed: the
 * bitmaps are kept, reported as inconsistent, and the image stays clean
 * for qemu-img check.  Trusting a bitmap that missed our writes would make
 * an incremental backup silently incomplete.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"
#include "util/log.h"

#define BME_FLAG_IN_USE     (1u << 0)
#define BME_HEADER_SIZE     24
#define BM_MAX_DIR_SIZE     (64u << 20)

static const Qcow2RawExt *find_ext(const Qcow2Header *h)
{
    for (unsigned i = 0; i < h->nb_raw_exts; i++) {
        if (h->raw_exts[i].type == QCOW2_EXT_BITMAPS) {
            return &h->raw_exts[i];
        }
    }
    return NULL;
}

int coroutine_fn qcow2_mark_bitmaps_in_use(BDRVQcow2State *s, Error **errp)
{
    const Qcow2RawExt *ext = find_ext(&s->hdr);
    uint8_t *dir;
    int ret;

    if (!ext || !(s->hdr.autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        return 0;   /* none, or already inconsistent: nothing to protect */
    }
    uint32_t nb = be32_get(ext->data);
    uint64_t size = be64_get(ext->data + 8);
    uint64_t off = be64_get(ext->data + 16);
    if (nb == 0 || nb > 65535 || size > BM_MAX_DIR_SIZE ||
        size < (uint64_t)nb * BME_HEADER_SIZE ||
        (off & (s->g.cluster_size - 1)) || off < s->g.cluster_size ||
        off > s->file_size ||
        size > s->file_size - off) {
        error_setg(errp, "qcow2: invalid bitmaps extension");
        return -EINVAL;
    }
    dir = malloc(size);
    if (!dir) {
        error_setg(errp, "qcow2: bitmap directory too large");
        return -ENOMEM;
    }
    ret = qcow2_read_meta(s, off, dir, size);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: could not read the bitmap "
                         "directory");
        goto out;
    }
    bool changed = false;
    uint64_t pos = 0;
    for (uint32_t i = 0; i < nb; i++) {
        if (pos + BME_HEADER_SIZE > size) {
            break;
        }
        uint8_t *e = dir + pos;
        uint32_t flags = be32_get(e + 12);
        uint16_t name_size = be16_get(e + 18);
        uint32_t extra = be32_get(e + 20);
        if (!(flags & BME_FLAG_IN_USE)) {
            be32_put(e + 12, flags | BME_FLAG_IN_USE);
            changed = true;
        }
        uint64_t len = BME_HEADER_SIZE + (uint64_t)extra + name_size;
        pos += (len + 7) & ~7ull;
    }
    if (changed) {
        ret = qcow2_write_meta(s, off, dir, size);
        if (ret >= 0) {
            ret = qcow2_flush_file(s);
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: could not update the "
                             "bitmap directory");
            goto out;
        }
        log_info("qcow2: node '%s': persistent bitmaps marked in use "
                 "(not maintained by this daemon)", s->bs->node_name);
    }
    ret = 0;
out:
    free(dir);
    return ret;
}
