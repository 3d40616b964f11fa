/*
 * luks: a LUKS1 image (luks-crypto.h) on its file child.  The header area
 * [0, payload offset) holds the phdr and the key slots; guest sector n is
 * file sector payload/512 + n, encrypted with IV n.  Opening unlocks a key
 * slot with the passphrase of the secret `key-secret`; blockdev-create
 * writes a new header (key slot 0) and sizes the file.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "block/create.h"
#include "block/drivers/drivers.h"
#include "block/drivers/luks-crypto.h"
#include "object/secret.h"
#include "util/alloc.h"
#include "util/argspec.h"
#include "util/bufpool.h"

#define LUKS_MAX_TRANSFER (1u << 20)

typedef struct LuksState {
    LuksCipher *cipher;
    int64_t payload;            /* bytes */
} LuksState;

static const ArgSpec luks_options[] = {
    { .name = "file", .type = ARG_REF },
    { .name = "key-secret", .type = ARG_STR, .optional = true },
    { .name = NULL },
};

/* As in qemu, a luks node is named by a json: filename with its secret. */
static const char *const luks_strong[] = { "key-secret", NULL };

/* The passphrase of the secret `id` (qsd's words when there is none). */
static const uint8_t *luks_passphrase(const char *id, size_t *len,
                                      Error **errp)
{
    if (!id) {
        error_setg(errp, "Parameter 'key-secret' is required for cipher");
        return NULL;
    }
    return secret_lookup(id, len, errp);
}

static int coroutine_fn luks_co_open(BlockNode *bs, json_t *opts,
                                     Error **errp)
{
    LuksState *s = bs->opaque;
    const uint8_t *pass;
    size_t passlen;
    uint8_t hdr[LUKS_PHDR_SIZE];
    uint8_t *area;
    int64_t flen, payload;
    IOVector v;
    int ret;

    if (!bdrv_open_child(bs, opts, "file",
                         BLK_ROLE_DATA | BLK_ROLE_METADATA | BLK_ROLE_PRIMARY,
                         false, errp)) {
        return -EINVAL;
    }
    pass = luks_passphrase(arg_str(opts, "key-secret", NULL), &passlen, errp);
    if (!pass) {
        return -EINVAL;
    }
    flen = bdrv_getlength(bs->file->node);
    if (flen < 0) {
        error_setg_errno(errp, (int)-flen, "Unable to get the file length");
        return (int)flen;
    }
    if (flen < LUKS_PHDR_SIZE) {
        error_setg(errp, "Volume is not in LUKS format");
        return -EINVAL;
    }
    iov_vec_init_buf(&v, hdr, sizeof(hdr));
    ret = bdrv_co_preadv(bs->file, 0, sizeof(hdr), &v, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Unable to read LUKS header");
        return ret;
    }
    payload = luks_payload_offset(hdr, sizeof(hdr), errp);
    if (payload < 0) {
        return -EINVAL;
    }
    if (payload < LUKS_PHDR_SIZE || payload > LUKS_MAX_AREA) {
        error_setg(errp, "LUKS payload offset %" PRId64 " is invalid",
                   payload);
        return -EINVAL;
    }
    /* A file cut short keeps what it has of the key slots (a slot whose
     * material is missing is not tried); its length fails after, as in
     * qemu. */
    if (payload > flen) {
        payload = flen;
    }
    area = bj_try_malloc((size_t)payload);
    if (!area) {
        error_setg(errp, "Cannot allocate memory for the LUKS header");
        return -ENOMEM;
    }
    iov_vec_init_buf(&v, area, (size_t)payload);
    ret = bdrv_co_preadv(bs->file, 0, payload, &v, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Unable to read LUKS header");
        free(area);
        return ret;
    }
    /* Again: the reads above yielded, and object-del may have run. */
    pass = luks_passphrase(arg_str(opts, "key-secret", NULL), &passlen, errp);
    s->cipher = pass ? luks_co_unlock(area, (size_t)payload, pass, passlen,
                                      errp)
                     : NULL;
    free(area);
    if (!s->cipher) {
        return -EACCES;
    }
    s->payload = luks_payload_offset(hdr, sizeof(hdr), NULL);
    if (s->payload > flen) {
        error_setg(errp, "Could not refresh total sector count: "
                   "Input/output error");
        luks_cipher_free(s->cipher);
        s->cipher = NULL;
        return -EIO;
    }
    bs->total_bytes = flen - s->payload;
    snprintf(bs->filename, sizeof(bs->filename), "%s",
             bs->file->node->filename);
    return 0;
}

static void luks_close(BlockNode *bs)
{
    LuksState *s = bs->opaque;

    luks_cipher_free(s->cipher);
    s->cipher = NULL;
}

static int coroutine_fn luks_co_preadv(BlockNode *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       unsigned flags)
{
    LuksState *s = bs->opaque;
    uint8_t *buf;
    IOVector v;
    int ret;

    (void)flags;
    buf = bufpool_alloc((size_t)bytes);
    iov_vec_init_buf(&v, buf, (size_t)bytes);
    ret = bdrv_co_preadv(bs->file, s->payload + offset, bytes, &v, 0);
    if (ret >= 0) {
        ret = luks_decrypt(s->cipher, (uint64_t)offset / LUKS_SECTOR_SIZE,
                           buf, (size_t)bytes);
    }
    if (ret >= 0) {
        iov_vec_from_buf(qiov, 0, buf, (size_t)bytes);
    }
    bufpool_free(buf, (size_t)bytes);
    return ret < 0 ? ret : 0;
}

static int coroutine_fn luks_co_pwritev(BlockNode *bs, int64_t offset,
                                        int64_t bytes, IOVector *qiov,
                                        unsigned flags)
{
    LuksState *s = bs->opaque;
    uint8_t *buf;
    IOVector v;
    int ret;

    /* The caller's buffer stays as it is: encrypt a copy. */
    buf = bufpool_alloc((size_t)bytes);
    iov_vec_to_buf(qiov, 0, buf, (size_t)bytes);
    ret = luks_encrypt(s->cipher, (uint64_t)offset / LUKS_SECTOR_SIZE, buf,
                       (size_t)bytes);
    if (ret >= 0) {
        iov_vec_init_buf(&v, buf, (size_t)bytes);
        ret = bdrv_co_pwritev(bs->file, s->payload + offset, bytes, &v,
                              flags & BLK_REQ_FUA);
    }
    bufpool_free(buf, (size_t)bytes);
    return ret < 0 ? ret : 0;
}

static int coroutine_fn luks_co_pdiscard(BlockNode *bs, int64_t offset,
                                         int64_t bytes)
{
    LuksState *s = bs->opaque;

    return bdrv_co_pdiscard(bs->file, s->payload + offset, bytes);
}

static int coroutine_fn luks_co_truncate(BlockNode *bs, int64_t size,
                                         Error **errp)
{
    LuksState *s = bs->opaque;

    if (size % LUKS_SECTOR_SIZE) {
        error_setg(errp, "The new size must be a multiple of %d",
                   LUKS_SECTOR_SIZE);
        return -EINVAL;
    }
    return bdrv_co_truncate(bs->file, size + s->payload, errp);
}

static int64_t coroutine_fn luks_co_getlength(BlockNode *bs)
{
    LuksState *s = bs->opaque;
    int64_t len = bdrv_getlength(bs->file->node);

    if (len < 0) {
        return len;
    }
    len -= s->payload;
    return len < 0 ? 0 : len;
}

static void luks_refresh_limits(BlockNode *bs)
{
    BlockLimits *fl = &bs->file->node->bl;

    bs->bl = *fl;
    if (bs->bl.request_alignment < LUKS_SECTOR_SIZE) {
        bs->bl.request_alignment = LUKS_SECTOR_SIZE;
    }
    if (!bs->bl.max_transfer || bs->bl.max_transfer > LUKS_MAX_TRANSFER) {
        bs->bl.max_transfer = LUKS_MAX_TRANSFER;
    }
    bs->bl.pwrite_zeroes_alignment = 0;
}

static void luks_query_image(BlockNode *bs, json_t *image)
{
    LuksState *s = bs->opaque;

    json_object_set_new(image, "encrypted", json_true());
    json_object_set_new(image, "format-specific",
                        json_pack("{s:s, s:o}", "type", "luks", "data",
                                  luks_cipher_query(s->cipher)));
}

/* ---- blockdev-create ---- */

static const ArgSpec create_members[] = {
    { .name = "driver", .type = ARG_STR },
    { .name = "file", .type = ARG_ANY },
    { .name = "size", .type = ARG_ANY },
    { .name = "preallocation", .type = ARG_ENUM, .optional = true,
      .enum_values = bdrv_prealloc_names },
    LUKS_CREATE_MEMBERS,
    { .name = NULL },
};

static bool luks_create_check(json_t *o, Error **errp)
{
    return bdrv_create_check_ref(o, "file", errp) &&
           argspec_check(o, create_members, "options", false, errp) &&
           bdrv_create_check_u64(o, "size", errp) &&
           bdrv_create_check_inline_ref(o, "file", errp);
}

static int coroutine_fn luks_co_create(json_t *o, const char *job_id,
                                       Error **errp)
{
    LuksCreateOpts lo = {
        .cipher_alg = arg_str(o, "cipher-alg", "aes-256"),
        .cipher_mode = arg_str(o, "cipher-mode", "xts"),
        .ivgen_alg = arg_str(o, "ivgen-alg", "plain64"),
        .ivgen_hash_alg = arg_str(o, "ivgen-hash-alg", "sha256"),
        .hash_alg = arg_str(o, "hash-alg", "sha256"),
    };
    int64_t iter_time = arg_int(o, "iter-time", 2000);
    uint64_t size = bdrv_create_opt_u64(o, "size", 0);
    int prealloc = arg_enum(o, "preallocation", bdrv_prealloc_names, 0);
    BlockCreateTarget t;
    BlockChild *child;
    LuksCipher *cipher = NULL;
    const uint8_t *pass;
    uint8_t *area = NULL;
    size_t passlen, len = 0;
    IOVector v;
    int ret;

    if (!bdrv_co_create_target_open(&t, json_object_get(o, "file"), job_id,
                                    errp)) {
        return -ENOENT;
    }
    pass = luks_passphrase(arg_str(o, "key-secret", NULL), &passlen, errp);
    if (!pass) {
        ret = -EINVAL;
        goto out;
    }
    if (prealloc != PREALLOC_OFF) {
        error_setg(errp, "luks creation does not support preallocation "
                   "mode '%s'", bdrv_prealloc_names[prealloc]);
        ret = -ENOTSUP;
        goto out;
    }
    if (size > (uint64_t)BDRV_MAX_LENGTH) {
        error_setg(errp, "The image size must be at most %" PRId64,
                   (int64_t)BDRV_MAX_LENGTH);
        ret = -EINVAL;
        goto out;
    }
    /* As qemu, an iter-time of 0 (or less) gets the fewest iterations. */
    lo.iter_time_ms = iter_time > 0 ? (uint64_t)iter_time : 0;
    area = luks_co_build(&lo, pass, passlen, &len, &cipher, errp);
    if (!area) {
        ret = -EINVAL;
        goto out;
    }
    child = bdrv_create_target_attach(&t, errp);
    if (!child) {
        ret = -EPERM;
        goto out;
    }
    ret = bdrv_co_truncate(child, (int64_t)(len + size), errp);
    if (ret < 0) {
        goto out;
    }
    iov_vec_init_buf(&v, area, len);
    ret = bdrv_co_pwritev(child, 0, (int64_t)len, &v, 0);
    if (ret >= 0) {
        ret = bdrv_co_flush(child->node);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not write the LUKS header");
    }
out:
    luks_cipher_free(cipher);
    free(area);
    bdrv_co_create_target_close(&t);
    return ret < 0 ? ret : 0;
}

static int luks_probe(const uint8_t *buf, size_t len)
{
    return len >= 6 && memcmp(buf, "LUKS\xba\xbe", 6) == 0 ? 100 : 0;
}

const BlockDriver bdrv_luks = {
    .name = "luks",
    .state_size = sizeof(LuksState),
    .options = luks_options,
    .strong_options = luks_strong,
    .probe = luks_probe,
    .co_open = luks_co_open,
    .close = luks_close,
    .co_preadv = luks_co_preadv,
    .co_pwritev = luks_co_pwritev,
    .co_pdiscard = luks_co_pdiscard,
    .co_truncate = luks_co_truncate,
    .co_getlength = luks_co_getlength,
    .refresh_limits = luks_refresh_limits,
    .query_image = luks_query_image,
    .create_check = luks_create_check,
    .co_create = luks_co_create,
};
