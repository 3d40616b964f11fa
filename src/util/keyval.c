/*
 * qemu-storage-daemon style option strings -> JSON objects.
 *
 *   "{...}"                     parsed as one JSON object
 *   "a=1,b.c=x,,y,d.0=p,d.1=q"  {"a":"1","b":{"c":"x,y"},"d":["p","q"]}
 *
 * Keys are '.'-separated fragments of [A-Za-z0-9_-]; a value runs to the
 * next single ',' (",," stands for a literal comma).  As in QEMU, a key given
 * twice keeps the last value, a key used both as a value and as an object
 * ("a=1,a.b=2") is refused, and an object whose keys are all decimal numbers
 * becomes an array, which must then be dense from 0.
 */
#include "util/argspec.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"
#include "util/cleanup.h"

static bool key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* A key is one or more non-empty fragments separated by single dots. */
static bool key_valid(const char *key, size_t len)
{
    size_t frag = 0;
    for (size_t i = 0; i < len; i++) {
        if (key[i] == '.') {
            if (frag == 0) {
                return false;
            }
            frag = 0;
        } else if (key_char(key[i])) {
            frag++;
        } else {
            return false;
        }
    }
    return frag > 0;
}

/* Reads a value starting at *p up to an unescaped ',' or the end. */
static char *read_value(const char **p)
{
    const char *s = *p;
    size_t n = 0;
    char *out = bj_malloc(strlen(s) + 1);
    while (*s) {
        if (*s == ',') {
            if (s[1] != ',') {
                break;
            }
            s++;   /* ",," is a literal comma */
        }
        out[n++] = *s++;
    }
    out[n] = '\0';
    *p = s;
    return out;
}

/*
 * The JSON string for the value of key, or NULL with errp set.  JSON
 * strings are UTF-8: jansson refuses anything else, and its refusal must
 * not go unnoticed (a value that was not UTF-8 used to vanish with its key,
 * "file.driver=fi\xa8e" giving "file": {}).
 */
static json_t *value_string(const char *key, size_t len, const char *value,
                            Error **errp)
{
    json_t *v = json_string(value);
    if (!v) {
        error_setg(errp, "Parameter '%.*s' is not valid UTF-8", (int)len,
                   key);
    }
    return v;
}

/* Stores value at the dotted key inside root. */
static bool put_key(json_t *root, const char *key, size_t len,
                    const char *value, Error **errp)
{
    json_t *cur = root;
    size_t start = 0;
    for (;;) {
        size_t end = start;
        while (end < len && key[end] != '.') {
            end++;
        }
        CLEANUP_FREE char *frag = bj_strndup(key + start, end - start);
        json_t *existing = json_object_get(cur, frag);
        if (end == len) {
            if (json_is_object(existing)) {
                error_setg(errp, "Parameters '%.*s.*' used inconsistently",
                           (int)len, key);
                return false;
            }
            json_t *v = value_string(key, len, value, errp);
            if (!v) {
                return false;
            }
            /* Same key again: the last value wins, as in QEMU. */
            json_object_set_new(cur, frag, v);
            return true;
        }
        if (!existing) {
            existing = json_object();
            json_object_set_new(cur, frag, existing);
        } else if (!json_is_object(existing)) {
            error_setg(errp, "Parameters '%.*s.*' used inconsistently",
                       (int)end, key);
            return false;
        }
        cur = existing;
        start = end + 1;
    }
}

static bool is_index(const char *s, unsigned long *idx)
{
    if (!*s || (s[0] == '0' && s[1])) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p)) {
            return false;
        }
    }
    char *end = NULL;
    *idx = strtoul(s, &end, 10);
    return *idx < (1ul << 20);   /* no absurd pre-allocations */
}

/*
 * Turns objects whose keys are all indexes into arrays, depth first.
 * Returns the replacement for obj (a new reference) or NULL on error.
 */
static json_t *listify(json_t *obj, const char *path, Error **errp)
{
    if (!json_is_object(obj)) {
        return json_incref(obj);
    }
    size_t nidx = 0, n = json_object_size(obj);
    const char *key;
    json_t *val;
    unsigned long idx = 0;
    json_object_foreach(obj, key, val) {
        /* The top level is always an object: its "0" is just a name. */
        if (path && is_index(key, &idx)) {
            nidx++;
        }
    }
    if (nidx && nidx != n) {
        error_setg(errp, "Parameters '%s%s*' used inconsistently",
                   path ? path : "", path ? "." : "");
        return NULL;
    }
    json_auto_t *out = nidx ? json_array() : json_object();
    for (size_t i = 0; nidx && i < n; i++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%zu", i);
        if (!json_object_get(obj, buf)) {
            error_setg(errp, "Parameter '%s%s%s' missing", path ? path : "",
                       path ? "." : "", buf);
            return NULL;
        }
    }
    json_object_foreach(obj, key, val) {
        CLEANUP_FREE char *sub = bj_asprintf("%s%s%s", path ? path : "",
                                             path ? "." : "", key);
        json_t *nv = listify(val, sub, errp);
        if (!nv) {
            return NULL;
        }
        if (nidx) {
            /* nidx == n: every key was checked to be an index above. */
            bool index_key = is_index(key, &idx);
            assert(index_key);
            (void)index_key;
            /* Grow to idx, filling with nulls replaced below. */
            while (json_array_size(out) <= idx) {
                json_array_append_new(out, json_null());
            }
            json_array_set_new(out, idx, nv);
        } else {
            json_object_set_new(out, key, nv);
        }
    }
    return steal_pointer(&out);
}

static json_t *parse_json(const char *str, Error **errp)
{
    json_error_t jerr;
    /* No JSON_ALLOW_NUL: a string with U+0000 would be cut short at the
     * NUL by every C consumer, so it is refused here. */
    json_auto_t *v = json_loads(str, JSON_DISABLE_EOF_CHECK |
                                JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
                                &jerr);
    if (!v) {
        /* An option cut short is the common mistake; say it in QEMU's
         * words, and a repeated key too.  Other faults keep jansson's
         * description. */
        bool eoi = strstr(jerr.text, "end of file") ||
                   strstr(jerr.text, "premature end of input");
        bool dup = strstr(jerr.text, "duplicate object key");
        bool nul = strstr(jerr.text, "\\u0000 is not allowed");
        error_setg(errp, "JSON parse error, %s",
                   eoi ? "premature EOI" : dup ? "duplicate key" :
                   nul ? "string contains a NUL character" : jerr.text);
        return NULL;
    }
    for (const char *p = str + jerr.position; *p; p++) {
        if (!isspace((unsigned char)*p)) {
            error_setg(errp, "Expecting at most one JSON value");
            return NULL;
        }
    }
    if (!json_is_object(v)) {
        error_setg(errp, "JSON value must be an object");
        return NULL;
    }
    return steal_pointer(&v);
}

json_t *keyval_parse(const char *str, const char *implied_key, Error **errp)
{
    if (str[0] == '{') {
        return parse_json(str, errp);
    }

    json_auto_t *root = json_object();
    const char *p = str;
    bool first = true;
    while (*p) {
        size_t len = strcspn(p, "=,");
        if (first && implied_key && len > 0 && p[len] != '=') {
            CLEANUP_FREE char *value = read_value(&p);
            json_t *v = value_string(implied_key, strlen(implied_key), value,
                                     errp);
            if (!v) {
                return NULL;
            }
            json_object_set_new(root, implied_key, v);
        } else {
            if (!key_valid(p, len)) {
                error_setg(errp, "Invalid parameter '%.*s'", (int)len, p);
                return NULL;
            }
            if (p[len] != '=') {
                error_setg(errp, "Expected '=' after parameter '%.*s'",
                           (int)len, p);
                return NULL;
            }
            const char *key = p;
            p += len + 1;
            CLEANUP_FREE char *value = read_value(&p);
            if (!put_key(root, key, len, value, errp)) {
                return NULL;
            }
        }
        first = false;
        if (*p == ',') {
            p++;   /* a trailing ',' ends the string quietly */
        }
    }

    return listify(root, NULL, errp);
}
