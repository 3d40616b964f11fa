/*
 * Declarative argument checking (see argspec.h for the messages).
 *
 * The order of checks follows QEMU's input visitor, because the first error
 * is the one reported and clients compare it word for word: declared members
 * are visited in spec order (a nested object is checked completely,
 * including its unexpected members, when it is reached), and unexpected
 * members of an object are reported only after all declared ones passed.
 */
#include "util/argspec.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"
#include "util/cleanup.h"

/* Where a value lives, so that coercion can replace it in place. */
typedef struct Slot {
    json_t *parent;      /* object or array */
    const char *key;     /* object member name, or NULL for arrays */
    size_t index;
} Slot;

static void slot_replace(const Slot *slot, json_t *val)
{
    if (slot->key) {
        json_object_set_new(slot->parent, slot->key, val);
    } else {
        json_array_set_new(slot->parent, slot->index, val);
    }
}

static char *join_path(const char *path, const char *name)
{
    return (path && *path) ? bj_asprintf("%s.%s", path, name)
                           : bj_strdup(name);
}

static char *index_path(const char *path, size_t i)
{
    return bj_asprintf("%s[%zu]", path ? path : "", i);
}

static void type_error(const char *path, const char *expected, Error **errp)
{
    error_setg(errp, "Invalid parameter type for '%s', expected: %s", path,
               expected);
}

/* Command-line integers: decimal, 0x hex or 0 octal, the whole string. */
static bool parse_int64(const char *s, int64_t *out)
{
    if (!*s || isspace((unsigned char)*s)) {
        return false;
    }
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 0);
    if (errno || *end) {
        return false;
    }
    *out = v;
    return true;
}

/*
 * Sizes: an integer with an optional binary suffix (B, k, M, G, T, P, E;
 * either case).  Returns 0, -EINVAL for garbage, -ERANGE for negative or too
 * large.
 */
static int parse_size(const char *s, int64_t *out)
{
    if (!*s || isspace((unsigned char)*s)) {
        return -EINVAL;
    }
    if (*s == '-') {
        char *end = NULL;
        (void)strtoll(s, &end, 10);
        return end != s + 1 ? -ERANGE : -EINVAL;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno) {
        return errno == ERANGE ? -ERANGE : -EINVAL;
    }
    unsigned shift = 0;
    if (*end) {
        switch (*end) {
        case 'b': case 'B': shift = 0; break;
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        case 't': case 'T': shift = 40; break;
        case 'p': case 'P': shift = 50; break;
        case 'e': case 'E': shift = 60; break;
        default: return -EINVAL;
        }
        if (end[1]) {
            return -EINVAL;
        }
    }
    if (v > ((unsigned long long)INT64_MAX >> shift)) {
        return -ERANGE;
    }
    *out = (int64_t)(v << shift);
    return 0;
}

static bool parse_bool_str(const char *s, bool *out)
{
    if (!strcmp(s, "on") || !strcmp(s, "yes") || !strcmp(s, "true")) {
        *out = true;
        return true;
    }
    if (!strcmp(s, "off") || !strcmp(s, "no") || !strcmp(s, "false")) {
        *out = false;
        return true;
    }
    return false;
}

static bool check_members(json_t *obj, const ArgSpec *spec, bool open,
                          const char *path, bool coerce, Error **errp);

/*
 * Checks one present value.  `path` is the full dotted path, `bare` the
 * member's own name ("null" for array elements): QEMU names enum values by
 * the bare name only, and clients see exactly that.
 */
static bool check_value(const Slot *slot, json_t *val, const ArgSpec *s,
                        const char *path, const char *bare, bool coerce,
                        Error **errp)
{
    const char *str = json_is_string(val) ? json_string_value(val) : NULL;

    switch (s->type) {
    case ARG_STR:
        if (!str) {
            type_error(path, "string", errp);
            return false;
        }
        return true;

    case ARG_INT:
    case ARG_UINT:
    case ARG_SIZE: {
        int64_t v;
        if (str && coerce) {
            if (s->type == ARG_SIZE) {
                int r = parse_size(str, &v);
                if (r == -ERANGE) {
                    error_setg(errp,
                               "Parameter '%s' expects a non-negative value",
                               path);
                    return false;
                }
                if (r < 0) {
                    error_setg(errp, "Parameter '%s' expects size", path);
                    return false;
                }
            } else if (!parse_int64(str, &v)) {
                error_setg(errp, "Parameter '%s' expects integer", path);
                return false;
            }
            slot_replace(slot, json_integer(v));
        } else if (json_is_integer(val)) {
            v = json_integer_value(val);
        } else {
            type_error(path, "integer", errp);
            return false;
        }
        if (s->type != ARG_INT && v < 0) {
            error_setg(errp, "Parameter '%s' expects a non-negative value",
                       path);
            return false;
        }
        return true;
    }

    case ARG_BOOL:
        if (str && coerce) {
            bool b;
            if (!parse_bool_str(str, &b)) {
                error_setg(errp, "Parameter '%s' expects 'on' or 'off'", path);
                return false;
            }
            slot_replace(slot, json_boolean(b));
            return true;
        }
        if (!json_is_boolean(val)) {
            type_error(path, "boolean", errp);
            return false;
        }
        return true;

    case ARG_ENUM:
        if (!str) {
            type_error(path, "string", errp);
            return false;
        }
        for (const char *const *e = s->enum_values; e && *e; e++) {
            if (!strcmp(*e, str)) {
                return true;
            }
        }
        error_setg(errp, "Parameter '%s' does not accept value '%s'", bare,
                   str);
        return false;

    case ARG_OBJECT:
        if (!json_is_object(val)) {
            type_error(path, "object", errp);
            return false;
        }
        return !s->members ||
               check_members(val, s->members, s->open, path, coerce, errp);

    case ARG_ARRAY: {
        if (!json_is_array(val)) {
            type_error(path, "array", errp);
            return false;
        }
        if (!s->members) {
            return true;
        }
        for (size_t i = 0; i < json_array_size(val); i++) {
            CLEANUP_FREE char *ipath = index_path(path, i);
            Slot eslot = { .parent = val, .key = NULL, .index = i };
            if (!check_value(&eslot, json_array_get(val, i), &s->members[0],
                             ipath, "null", coerce, errp)) {
                return false;
            }
        }
        return true;
    }

    case ARG_U64:
        if (str && coerce) {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(str, &end, 0);
            if (!*str || errno || *end) {
                error_setg(errp, "Parameter '%s' expects uint64", path);
                return false;
            }
            slot_replace(slot, json_integer((json_int_t)v));
            return true;
        }
        if (!json_is_integer(val)) {
            error_setg(errp, "Parameter '%s' expects uint64", path);
            return false;
        }
        return true;

    case ARG_ANY:
        return true;

    case ARG_REF:
    case ARG_REF_OR_NULL:
        if (json_is_null(val) && s->type == ARG_REF_OR_NULL) {
            return true;
        }
        if (str) {
            return true;
        }
        if (!json_is_object(val)) {
            type_error(path, s->type == ARG_REF ? "BlockdevRef"
                                                : "BlockdevRefOrNull", errp);
            return false;
        }
        return !s->members ||
               check_members(val, s->members, s->open, path, coerce, errp);
    }
    abort();
}

static bool spec_has(const ArgSpec *spec, const char *name)
{
    for (const ArgSpec *s = spec; s && s->name; s++) {
        if (!strcmp(s->name, name)) {
            return true;
        }
    }
    return false;
}

static bool check_members(json_t *obj, const ArgSpec *spec, bool open,
                          const char *path, bool coerce, Error **errp)
{
    for (const ArgSpec *s = spec; s && s->name; s++) {
        CLEANUP_FREE char *mpath = join_path(path, s->name);
        json_t *val = json_object_get(obj, s->name);
        if (!val) {
            if (!s->optional) {
                error_setg(errp, "Parameter '%s' is missing", mpath);
                return false;
            }
            continue;
        }
        Slot slot = { .parent = obj, .key = s->name, .index = 0 };
        if (!check_value(&slot, val, s, mpath, s->name, coerce, errp)) {
            return false;
        }
    }
    if (open) {
        return true;
    }
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        if (!spec_has(spec, key)) {
            CLEANUP_FREE char *mpath = join_path(path, key);
            error_setg(errp, "Parameter '%s' is unexpected", mpath);
            return false;
        }
    }
    return true;
}

bool argspec_check(json_t *obj, const ArgSpec *spec, const char *path,
                   bool coerce_strings, Error **errp)
{
    if (!json_is_object(obj)) {
        /* The monitor and the command line hand us objects; anything else
         * is a caller passing a member that should have been checked. */
        type_error(path && *path ? path : "arguments", "object", errp);
        return false;
    }
    return check_members(obj, spec, false, path, coerce_strings, errp);
}

const char *arg_str(json_t *obj, const char *name, const char *def)
{
    json_t *v = json_object_get(obj, name);
    return json_is_string(v) ? json_string_value(v) : def;
}

int64_t arg_int(json_t *obj, const char *name, int64_t def)
{
    json_t *v = json_object_get(obj, name);
    return json_is_integer(v) ? json_integer_value(v) : def;
}

bool arg_bool(json_t *obj, const char *name, bool def)
{
    json_t *v = json_object_get(obj, name);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

int arg_enum(json_t *obj, const char *name, const char *const *values,
             int def)
{
    const char *s = arg_str(obj, name, NULL);
    if (!s) {
        return def;
    }
    for (int i = 0; values[i]; i++) {
        if (!strcmp(values[i], s)) {
            return i;
        }
    }
    return def;
}

bool id_wellformed(const char *s)
{
    /* ASCII only, as QEMU's ctype wrappers: a locale must not widen it. */
    if (!s || !((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z'))) {
        return false;
    }
    for (s++; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_')) {
            return false;
        }
    }
    return true;
}

uint64_t arg_u64(json_t *obj, const char *name, uint64_t def)
{
    json_t *v = json_object_get(obj, name);
    return json_is_integer(v) ? (uint64_t)json_integer_value(v) : def;
}
