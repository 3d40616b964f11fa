/*
 * Compact-with-spaces JSON output for the monitor (see json-out.h).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmp/json-out.h"
#include "util/alloc.h"

#define FLAGS (JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER)
/* jansson refuses to dump deeper values; so do we (the caller falls back
 * to json_dumps, which reports the same failure). */
#define MAX_DEPTH 2048

typedef struct Buf {
    char *p;
    size_t len, cap;
} Buf;

static void reserve(Buf *b, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        b->p = bj_realloc(b->p, cap);
        b->cap = cap;
    }
}

static void put(Buf *b, const char *s, size_t n)
{
    reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* A scalar jansson must write (a real, a string with non-ASCII or control
 * characters): its own text for it. */
static bool put_by_jansson(Buf *b, const json_t *v)
{
    char *s = json_dumps(v, FLAGS | JSON_ENCODE_ANY);

    if (!s) {
        return false;
    }
    put(b, s, strlen(s));
    free(s);
    return true;
}

static bool put_string(Buf *b, const char *s, size_t n)
{
    size_t extra = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f) {
            json_t *tmp = json_stringn(s, n);
            bool ok = tmp && put_by_jansson(b, tmp);
            json_decref(tmp);
            return ok;
        }
        extra += c == '"' || c == '\\';
    }
    reserve(b, n + extra + 2);
    char *d = b->p + b->len;
    *d++ = '"';
    if (!extra) {
        memcpy(d, s, n);
        d += n;
    } else {
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '"' || s[i] == '\\') {
                *d++ = '\\';
            }
            *d++ = s[i];
        }
    }
    *d++ = '"';
    b->len = (size_t)(d - b->p);
    return true;
}

static bool put_value(Buf *b, const json_t *v, int depth)
{
    char num[32];
    bool first = true;

    if (depth > MAX_DEPTH) {
        return false;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        put(b, "{", 1);
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it)) {
            if (!first) {
                put(b, ", ", 2);
            }
            first = false;
            if (!put_string(b, json_object_iter_key(it),
                            json_object_iter_key_len(it))) {
                return false;
            }
            put(b, ": ", 2);
            if (!put_value(b, json_object_iter_value(it), depth + 1)) {
                return false;
            }
        }
        put(b, "}", 1);
        return true;
    case JSON_ARRAY:
        put(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) {
                put(b, ", ", 2);
            }
            if (!put_value(b, json_array_get(v, i), depth + 1)) {
                return false;
            }
        }
        put(b, "]", 1);
        return true;
    case JSON_STRING:
        return put_string(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        put(b, num, (size_t)snprintf(num, sizeof(num),
                                     "%" JSON_INTEGER_FORMAT,
                                     json_integer_value(v)));
        return true;
    case JSON_REAL:
        return put_by_jansson(b, v);
    case JSON_TRUE:
        put(b, "true", 4);
        return true;
    case JSON_FALSE:
        put(b, "false", 5);
        return true;
    case JSON_NULL:
        put(b, "null", 4);
        return true;
    }
    return false;
}

char *json_out_dumps(const json_t *v, size_t *len)
{
    Buf b = { 0 };

    if (!json_is_object(v) && !json_is_array(v)) {
        return NULL;
    }
    if (!put_value(&b, v, 0)) {
        free(b.p);
        return NULL;
    }
    reserve(&b, 0);
    b.p[b.len] = '\0';
    *len = b.len;
    return b.p;
}
