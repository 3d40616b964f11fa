/*
 * Fuzz target for the command-line option parser (keyval_parse): dotted
 * keys ("driver=qcow2,file.filename=a,,b") and the JSON form ("{...}"),
 * then, for a --blockdev, the string-coercing option check the daemon
 * applies before opening (bdrv_check_options with coerce_strings).
 *
 * Input: byte 0 picks the implied key (none, or that of --blockdev,
 * --export, --chardev, --object); the rest, up to a NUL, is the argument.
 *
 * Properties checked: no crash, leak or over-read; a refusal carries a
 * message; a result is an object; a dotted-key result, written back as
 * dotted keys, parses to the same object.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "fuzz.h"
#include "util/argspec.h"

static const char *const implied_keys[] = {
    NULL, "driver", "type", "chardev", "qom-type",
};
#define N_IMPLIED (sizeof(implied_keys) / sizeof(implied_keys[0]))

typedef struct Text {
    char *s;
    size_t len, cap;
} Text;

static void put(Text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->s = realloc(t->s, t->cap);
        if (!t->s) {
            abort();
        }
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

/* Writes v as dotted keys under prefix; false for what dotted keys cannot
 * say (only strings, objects and arrays come out of them). */
static bool unparse(Text *t, const char *prefix, json_t *v)
{
    if (json_is_string(v)) {
        put(t, prefix, strlen(prefix));
        put(t, "=", 1);
        const char *s = json_string_value(v);
        for (const char *c = s; *c; c++) {
            put(t, c, 1);
            if (*c == ',') {
                put(t, ",", 1);     /* ",," is a literal comma */
            }
        }
        put(t, ",", 1);
        return true;
    }
    if (!json_is_object(v) && !json_is_array(v)) {
        return false;
    }
    bool ok = true;
    const char *key;
    json_t *m;
    size_t i;
    char *sub;
    if (json_is_object(v)) {
        json_object_foreach(v, key, m) {
            if (asprintf(&sub, "%s%s%s", prefix, *prefix ? "." : "",
                         key) < 0) {
                abort();
            }
            ok = ok && unparse(t, sub, m);
            free(sub);
        }
    } else {
        json_array_foreach(v, i, m) {
            if (asprintf(&sub, "%s%s%zu", prefix, *prefix ? "." : "",
                         i) < 0) {
                abort();
            }
            ok = ok && unparse(t, sub, m);
            free(sub);
        }
    }
    return ok;
}

static void check_roundtrip(json_t *opts)
{
    Text t = { .s = NULL, .len = 0, .cap = 0 };
    Error *err = NULL;

    if (!unparse(&t, "", opts) || t.len == 0) {
        free(t.s);
        return;
    }
    t.s[--t.len] = '\0';        /* the last ',' */
    json_t *back = keyval_parse(t.s, NULL, &err);
    if (!back || !json_equal(back, opts)) {
        fprintf(stderr, "'%s' does not parse back: %s\n", t.s,
                err ? error_get_pretty(err) : "differs");
        abort();
    }
    json_decref(back);
    free(t.s);
}

static void check_error(bool ok, Error *err)
{
    if (!ok && (!err || !error_get_pretty(err)[0])) {
        abort();
    }
    error_free(err);
}

static const BlockDriver *driver_of(json_t *opts)
{
    const char *name = json_string_value(json_object_get(opts, "driver"));
    return name ? bdrv_find_driver(name) : NULL;
}

/* --blockdev: its options and inline children's, values coerced. */
static void check_blockdev(json_t *opts)
{
    const BlockDriver *drv = driver_of(opts);
    Error *err = NULL;

    if (!drv) {
        return;
    }
    /* ok first: argument evaluation order is unspecified */
    bool ok = bdrv_check_options(drv, opts, "", true, &err);
    check_error(ok, err);
    const char *key;
    json_t *child;
    json_object_foreach(opts, key, child) {
        const BlockDriver *cd = driver_of(child);
        if (cd) {
            err = NULL;
            ok = bdrv_check_options(cd, child, key, true, &err);
            check_error(ok, err);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Error *err = NULL;

    if (size < 1) {
        return 0;
    }
    const char *implied = implied_keys[data[0] % N_IMPLIED];
    char *arg = strndup((const char *)data + 1, size - 1);
    if (!arg) {
        abort();
    }
    json_t *opts = keyval_parse(arg, implied, &err);
    check_error(opts != NULL, err);
    if (opts) {
        if (!json_is_object(opts)) {
            abort();
        }
        if (arg[0] != '{') {
            check_roundtrip(opts);
        }
        if (implied && !strcmp(implied, "driver")) {
            check_blockdev(opts);
        }
        json_decref(opts);
    }
    free(arg);
    return 0;
}
