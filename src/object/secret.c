/*
 * secret objects (see secret.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "object/object-int.h"
#include "object/secret.h"
#include "util/alloc.h"

typedef struct Secret {
    Object base;
    uint8_t *data;
    size_t len;
} Secret;

static const char *const secret_formats[] = { "raw", "base64", NULL };

static const ArgSpec secret_props[] = {
    { .name = "data", .type = ARG_STR, .optional = true },
    { .name = "file", .type = ARG_STR, .optional = true },
    { .name = "format", .type = ARG_ENUM, .optional = true,
      .enum_values = secret_formats },
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
    if (b64) {
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
    return &s->base;
}

static void secret_destroy(Object *obj)
{
    Secret *s = container_of(obj, Secret, base);

    memset(s->data, 0, s->len);
    free(s->data);
    free(s);
}

const ObjectType secret_type = {
    .name = "secret",
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
