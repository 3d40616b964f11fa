/*
 * blockdev-create for qcow2: the member types checked at the monitor
 * (qcow2_create_check), then, in the create job, the values in the order
 * qemu checks them and the image written by qcow2_co_create through a
 * write+resize edge on the `file` node.  The magic is read back so that a
 * target which forgets writes (null-co) fails as in qemu, which finds out
 * by opening the result.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "block/create.h"
#include "block/drivers/qcow2/qcow2.h"
#include "object/secret.h"
#include "util/alloc.h"
#include "util/argspec.h"

static const char *const version_names[] = { "v2", "v3", NULL };
static const char *const compression_names[] = { "zlib", "zstd", NULL };

/* QCryptoBlockCreateOptions: format, then the luks variant's members
 * (the qcow variant has only key-secret; it is refused in the job). */
static const char *const crypt_formats[] = { "qcow", "luks", NULL };
static const ArgSpec encrypt_members[] = {
    { .name = "format", .type = ARG_ENUM, .enum_values = crypt_formats },
    LUKS_CREATE_MEMBERS,
    { .name = NULL },
};

/* uint64 and BlockdevRef members are ARG_ANY here and checked with
 * qemu's messages. */
static const ArgSpec create_members[] = {
    { .name = "driver", .type = ARG_STR },
    { .name = "file", .type = ARG_ANY },
    { .name = "data-file", .type = ARG_ANY, .optional = true },
    { .name = "data-file-raw", .type = ARG_BOOL, .optional = true },
    { .name = "extended-l2", .type = ARG_BOOL, .optional = true },
    { .name = "size", .type = ARG_ANY },
    { .name = "version", .type = ARG_ENUM, .optional = true,
      .enum_values = version_names },
    { .name = "backing-file", .type = ARG_STR, .optional = true },
    { .name = "backing-fmt", .type = ARG_ENUM, .optional = true,
      .enum_values = bdrv_blockdev_driver_names },
    { .name = "encrypt", .type = ARG_OBJECT, .optional = true,
      .members = encrypt_members },
    { .name = "cluster-size", .type = ARG_ANY, .optional = true },
    { .name = "preallocation", .type = ARG_ENUM, .optional = true,
      .enum_values = bdrv_prealloc_names },
    { .name = "lazy-refcounts", .type = ARG_BOOL, .optional = true },
    { .name = "refcount-bits", .type = ARG_INT, .optional = true },
    { .name = "compression-type", .type = ARG_ENUM, .optional = true,
      .enum_values = compression_names },
    { .name = NULL },
};

bool qcow2_create_check(json_t *o, Error **errp)
{
    return bdrv_create_check_ref(o, "file", errp) &&
           bdrv_create_check_ref(o, "data-file", errp) &&
           argspec_check(o, create_members, "options", false, errp) &&
           bdrv_create_check_u64(o, "size", errp) &&
           bdrv_create_check_u64(o, "cluster-size", errp) &&
           bdrv_create_check_inline_ref(o, "file", errp) &&
           bdrv_create_check_inline_ref(o, "data-file", errp);
}


/* The value checks qemu makes before touching the image, in its order. */
static bool check_values(json_t *o, Qcow2CreateOpts *c, Error **errp)
{
    uint64_t cs = bdrv_create_opt_u64(o, "cluster-size", 65536);
    int64_t rbits = arg_int(o, "refcount-bits", 16);
    int prealloc = arg_enum(o, "preallocation", bdrv_prealloc_names, 0);
    bool extl2 = arg_bool(o, "extended-l2", false);
    bool has_backing = json_object_get(o, "backing-file") != NULL;

    c->size = bdrv_create_opt_u64(o, "size", 0);
    c->version = arg_enum(o, "version", version_names, 1) + 2;
    c->lazy_refcounts = arg_bool(o, "lazy-refcounts", false);
    c->backing_file = arg_str(o, "backing-file", NULL);
    c->backing_format = arg_str(o, "backing-fmt", NULL);

    if (c->size % 512) {
        error_setg(errp, "Image size must be a multiple of 512 bytes");
        return false;
    }
    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) {
        error_setg(errp, "Cluster size must be a power of two between 512 "
                   "and 2048k");
        return false;
    }
    c->cluster_size = (uint32_t)cs;
    if (c->lazy_refcounts && c->version < 3) {
        error_setg(errp, "Lazy refcounts only supported with compatibility "
                   "level 1.1 and above (use version=v3 or greater)");
        return false;
    }
    if (rbits <= 0 || rbits > 64 || (rbits & (rbits - 1))) {
        error_setg(errp, "Refcount width must be a power of two and may not "
                   "exceed 64 bits");
        return false;
    }
    if (c->version < 3 && rbits != 16) {
        error_setg(errp, "Different refcount widths than 16 bits require "
                   "compatibility level 1.1 or above (use version=v3 or "
                   "greater)");
        return false;
    }
    c->refcount_bits = (uint32_t)rbits;
    if (arg_bool(o, "data-file-raw", false) &&
        !json_object_get(o, "data-file")) {
        error_setg(errp, "data-file-raw requires data-file");
        return false;
    }
    if (arg_enum(o, "compression-type", compression_names, 0) != 0 &&
        c->version < 3) {
        error_setg(errp, "Non-zlib compression type is only supported with "
                   "compatibility level 1.1 and above (use version=v3 or "
                   "greater)");
        return false;
    }
    if (extl2 && cs < 16384) {
        error_setg(errp, "Extended L2 entries are only supported with "
                   "cluster sizes of at least 16384 bytes");
        return false;
    }
    if (has_backing && prealloc != PREALLOC_OFF && !extl2) {
        error_setg(errp, "Backing file and preallocation can only be used "
                   "at the same time if extended_l2 is on");
        return false;
    }
    if (c->backing_format && !has_backing) {
        error_setg(errp, "Backing format cannot be used without backing "
                   "file");
        return false;
    }

    /* What qemu accepts but our qcow2 creation does not write (yet). */
    if (prealloc != PREALLOC_OFF) {
        error_setg(errp, "qcow2 creation does not support preallocation "
                   "mode '%s'", bdrv_prealloc_names[prealloc]);
        return false;
    }
    if (extl2) {
        error_setg(errp, "qcow2 creation does not support extended L2 "
                   "entries");
        return false;
    }
    if (json_object_get(o, "data-file")) {
        error_setg(errp, "qcow2 creation does not support external data "
                   "files");
        return false;
    }
    if (arg_enum(o, "compression-type", compression_names, 0) != 0) {
        error_setg(errp, "qcow2 creation does not support compression type "
                   "'zstd'");
        return false;
    }

    /* qemu creates a small image, then grows it: these are its words. */
    if (c->size > INT64_MAX) {
        error_setg(errp, "Could not resize image: Image size cannot be "
                   "negative");
        return false;
    }
    if (c->size > (uint64_t)BDRV_MAX_LENGTH) {
        error_setg(errp, "Could not resize image: offset(%" PRIu64 ") "
                   "exceeds maximum(%" PRId64 ")", c->size,
                   (int64_t)BDRV_MAX_LENGTH);
        return false;
    }
    /* One L1 entry maps an L2 table: cs / 8 clusters. */
    uint64_t per_l1 = cs * (cs / 8);
    uint64_t l1_entries = c->size / per_l1 + (c->size % per_l1 != 0);
    if (l1_entries * 8 > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "Could not resize image: Failed to grow the L1 "
                   "table: File too large");
        return false;
    }
    return true;
}

static const char *enc_str(json_t *enc, const char *name, const char *def)
{
    json_t *v = json_object_get(enc, name);

    return json_is_string(v) ? json_string_value(v) : def;
}

/*
 * encrypt (QCryptoBlockCreateOptions): for format luks, a new LUKS header
 * under the passphrase of encrypt.key-secret, in c->crypt_header (the
 * caller frees it).  True when there is nothing to encrypt.
 */
static bool coroutine_fn build_crypt(json_t *o, Qcow2CreateOpts *c,
                                     Error **errp)
{
    json_t *enc = json_object_get(o, "encrypt");
    json_t *it = enc ? json_object_get(enc, "iter-time") : NULL;
    const char *fmt, *id;
    const uint8_t *pass;
    size_t passlen, len = 0;
    LuksCipher *cipher = NULL;
    LuksCreateOpts lo;
    uint8_t *area;

    if (!enc) {
        return true;
    }
    fmt = enc_str(enc, "format", NULL);
    if (!fmt) {
        error_setg(errp, "Parameter 'encrypt.format' is missing");
        return false;
    }
    if (strcmp(fmt, "luks") != 0) {
        error_setg(errp, "qcow2 creation does not support encryption "
                   "format '%s'", fmt);
        return false;
    }
    id = enc_str(enc, "key-secret", NULL);
    if (!id) {
        error_setg(errp, "Parameter 'encrypt.key-secret' is required for "
                   "cipher");
        return false;
    }
    pass = secret_lookup(id, &passlen, errp);
    if (!pass) {
        return false;
    }
    lo = (LuksCreateOpts){
        .cipher_alg = enc_str(enc, "cipher-alg", "aes-256"),
        .cipher_mode = enc_str(enc, "cipher-mode", "xts"),
        .ivgen_alg = enc_str(enc, "ivgen-alg", "plain64"),
        .ivgen_hash_alg = enc_str(enc, "ivgen-hash-alg", "sha256"),
        .hash_alg = enc_str(enc, "hash-alg", "sha256"),
        .iter_time_ms = !it ? 2000 : json_integer_value(it) > 0
                        ? (uint64_t)json_integer_value(it) : 0,
    };
    area = luks_co_build(&lo, pass, passlen, &len, &cipher, errp);
    if (!area) {
        return false;
    }
    luks_cipher_free(cipher);
    c->crypt_header = area;
    c->crypt_len = len;
    return true;
}

int coroutine_fn qcow2_co_blockdev_create(json_t *o, const char *job_id,
                                          Error **errp)
{
    Qcow2CreateOpts c = { 0 };
    BlockCreateTarget t;
    BlockChild *child;
    uint8_t magic[4];
    IOVector v;
    int ret;

    if (!bdrv_co_create_target_open(&t, json_object_get(o, "file"), job_id,
                                    errp)) {
        return -ENOENT;
    }
    if (!check_values(o, &c, errp) || !build_crypt(o, &c, errp)) {
        ret = -EINVAL;
        goto out;
    }
    child = bdrv_create_target_attach(&t, errp);
    if (!child) {
        ret = -EPERM;
        goto out;
    }
    ret = qcow2_co_create(child, &c, errp);
    if (ret >= 0) {
        iov_vec_init_buf(&v, magic, sizeof(magic));
        ret = bdrv_co_preadv(child, 0, sizeof(magic), &v, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not read the new image");
        } else if (memcmp(magic, "QFI\xfb", 4) != 0) {
            error_setg(errp, "Image is not in qcow2 format");
            ret = -EINVAL;
        }
    }
out:
    free((void *)c.crypt_header);
    bdrv_co_create_target_close(&t);
    return ret < 0 ? ret : 0;
}
