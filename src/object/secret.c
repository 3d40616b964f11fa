/*
 * secret objects (see secret.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "object/object-int.h"
#include "object/secret.h"
#include "util/alloc.h"

typedef struct Secret {
    Object base;
    uint8_t *data;
    size_t len;
    /* As given, for qom-get ("" when absent, as qsd shows them). */
    char *data_prop, *file, *keyid, *iv;
    bool base64;
} Secret;

static const char *const secret_formats[] = { "raw", "base64", NULL };

static const ArgSpec secret_props[] = {
    { .name = "data", .type = ARG_STR, .optional = true },
    { .name = "file", .type = ARG_STR, .optional = true },
    { .name = "format", .type = ARG_ENUM, .optional = true,
      .enum_values = secret_formats },
    { .name = "keyid", .type = ARG_STR, .optional = true },
    { .name = "iv", .type = ARG_STR, .optional = true },
    { .name = NULL },
};

/* Files larger than this are not secrets (a key, a password). */
#define SECRET_MAX_FILE (64 * 1024)

static int b64_value(int ch)
{
    if (ch >= 'A' && ch <= 'Z') {
        return ch - 'A';
    }
    if (ch >= 'a' && ch <= 'z') {
        return ch - 'a' + 26;
    }
    if (ch >= '0' && ch <= '9') {
        return ch - '0' + 52;
    }
    if (ch == '+') {
        return 62;
    }
    if (ch == '/') {
        return 63;
    }
    return -1;
}

/* Standard base64; the padding may be left out.  out has room for
 * len * 3 / 4 + 3 bytes. */
static bool b64_decode(const uint8_t *in, size_t len, uint8_t *out,
                       size_t *outlen, Error **errp)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0, i = 0;

    while (len > 0 && in[len - 1] == '=' && i < 2) {
        len--;
        i++;
    }
    for (i = 0; i < len; i++) {
        int v = b64_value(in[i]);
        if (v < 0) {
            error_setg(errp, "Base64 data contains invalid characters");
            return false;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    *outlen = n;
    return true;
}

static uint8_t *read_secret_file(const char *path, size_t *len, Error **errp)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    size_t n;

    if (!f) {
        error_setg(errp, "Unable to read %s: Failed to open file \xe2\x80\x9c"
                   "%s\xe2\x80\x9d: %s", path, path, strerror(errno));
        return NULL;
    }
    buf = bj_malloc(SECRET_MAX_FILE + 1);
    n = fread(buf, 1, SECRET_MAX_FILE + 1, f);
    if (ferror(f) || n > SECRET_MAX_FILE) {
        error_setg(errp, "Unable to read %s: %s", path,
                   ferror(f) ? "read error" : "file too large");
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

/*
 * keyid: the bytes (base64-decoded first when format=base64) are AES-256-CBC
 * ciphertext under the 32-byte secret keyid with the base64 16-byte iv,
 * PKCS#7-padded, as libvirt passes secrets to qemu.  Replaces *data.
 */
static bool secret_decrypt(const char *keyid, const char *iv_b64,
                           uint8_t **data, size_t *len, Error **errp)
{
    gnutls_cipher_hd_t h;
    gnutls_datum_t key, iv;
    const uint8_t *k;
    uint8_t *ivbuf, *pt;
    size_t klen, ivlen;
    unsigned pad;
    int ret;

    k = secret_lookup(keyid, &klen, errp);
    if (!k) {
        return false;
    }
    if (klen != 32) {
        error_setg(errp, "Key should be 32 bytes in length");
        return false;
    }
    if (!iv_b64) {
        error_setg(errp, "IV is required to decrypt secret");
        return false;
    }
    ivbuf = bj_malloc(strlen(iv_b64) * 3 / 4 + 3);
    if (!b64_decode((const uint8_t *)iv_b64, strlen(iv_b64), ivbuf, &ivlen,
                    errp)) {
        free(ivbuf);
        return false;
    }
    if (ivlen != 16) {
        free(ivbuf);
        error_setg(errp, "IV should be 16 bytes in length not %zu", ivlen);
        return false;
    }
    if (*len % 16) {
        error_setg(errp, "Length %zu must be a multiple of block size 16",
                   *len);
        free(ivbuf);
        return false;
    }
    key.data = (unsigned char *)k;
    key.size = 32;
    iv.data = ivbuf;
    iv.size = 16;
    ret = gnutls_cipher_init(&h, GNUTLS_CIPHER_AES_256_CBC, &key, &iv);
    free(ivbuf);
    if (ret < 0) {
        error_setg(errp, "Cannot initialize cipher: %s",
                   gnutls_strerror(ret));
        return false;
    }
    pt = bj_malloc(*len + 1);
    ret = gnutls_cipher_decrypt2(h, *data, *len, pt, *len);
    gnutls_cipher_deinit(h);
    if (ret < 0) {
        error_setg(errp, "Cannot decrypt secret: %s", gnutls_strerror(ret));
        free(pt);
        return false;
    }
    pad = *len ? pt[*len - 1] : 0;
    if (pad > *len) {
        error_setg(errp, "Incorrect number of padding bytes (%u) found on "
                   "decrypted data", pad);
        memset(pt, 0, *len);
        free(pt);
        return false;
    }
    memset(*data, 0, *len);
    free(*data);
    *data = pt;
    *len -= pad;
    return true;
}

static Object *secret_create(const char *id, json_t *props, Error **errp)
{
    const char *data = arg_str(props, "data", NULL);
    const char *file = arg_str(props, "file", NULL);
    bool b64 = arg_enum(props, "format", secret_formats, 0) == 1;
    uint8_t *raw;
    size_t len;
    Secret *s;

    if (data && file) {
        error_setg(errp, "'file' and 'data' are mutually exclusive");
        return NULL;
    }
    if (!data && !file) {
        error_setg(errp, "Either 'file' or 'data' must be provided");
        return NULL;
    }
    if (data) {
        len = strlen(data);
        raw = (uint8_t *)bj_strndup(data, len);
    } else {
        raw = read_secret_file(file, &len, errp);
        if (!raw) {
            return NULL;
        }
    }
    s = bj_calloc(1, sizeof(*s));
    if (arg_str(props, "keyid", NULL)) {
        /* The ciphertext, base64-decoded if so told; the plaintext is
         * taken as it is. */
        if (b64) {
            uint8_t *ct = bj_malloc(len * 3 / 4 + 3);
            size_t ctlen;
            if (!b64_decode(raw, len, ct, &ctlen, errp)) {
                free(ct);
                goto fail;
            }
            free(raw);
            raw = ct;
            len = ctlen;
        }
        if (!secret_decrypt(arg_str(props, "keyid", NULL),
                            arg_str(props, "iv", NULL), &raw, &len, errp)) {
            goto fail;
        }
        s->data = raw;
        s->len = len;
    } else if (b64) {
        s->data = bj_malloc(len * 3 / 4 + 3);
        if (!b64_decode(raw, len, s->data, &s->len, errp)) {
            free(raw);
            free(s->data);
            free(s);
            return NULL;
        }
        memset(raw, 0, len);
        free(raw);
    } else {
        s->data = raw;
        s->len = len;
    }
    s->data_prop = bj_strdup(data ? data : "");
    s->file = bj_strdup(file ? file : "");
    s->keyid = bj_strdup(arg_str(props, "keyid", ""));
    s->iv = bj_strdup(arg_str(props, "iv", ""));
    s->base64 = b64;
    return &s->base;
fail:
    memset(raw, 0, len);
    free(raw);
    free(s);
    return NULL;
}

static void secret_destroy(Object *obj)
{
    Secret *s = container_of(obj, Secret, base);

    memset(s->data, 0, s->len);
    free(s->data);
    memset(s->data_prop, 0, strlen(s->data_prop));
    free(s->data_prop);
    free(s->file);
    free(s->keyid);
    free(s->iv);
    free(s);
}

static json_t *secret_prop_get(Object *obj, const char *name)
{
    Secret *s = container_of(obj, Secret, base);

    if (!strcmp(name, "data")) {
        return json_string(s->data_prop);
    } else if (!strcmp(name, "file")) {
        return json_string(s->file);
    } else if (!strcmp(name, "keyid")) {
        return json_string(s->keyid);
    } else if (!strcmp(name, "iv")) {
        return json_string(s->iv);
    } else if (!strcmp(name, "format")) {
        return json_string(s->base64 ? "base64" : "raw");
    } else if (!strcmp(name, "loaded")) {
        return json_true();
    }
    return NULL;
}

static const QomProp secret_qom[] = {
    { "file", "string" }, { "data", "string" }, { NULL, NULL },
};

const ObjectType secret_type = {
    .name = "secret",
    .prop_get = secret_prop_get,
    .qom_parent = "secret_common",
    .qom_props = secret_qom,
    .props = secret_props,
    .create = secret_create,
    .destroy = secret_destroy,
};

const uint8_t *secret_lookup(const char *id, size_t *len, Error **errp)
{
    Object *o = object_find_type(id, &secret_type);
    Secret *s;

    if (!o) {
        error_setg(errp, "No secret with id '%s'", id);
        return NULL;
    }
    s = container_of(o, Secret, base);
    *len = s->len;
    return s->data;
}
