/*
 * Declarative argument checking for JSON objects: QMP command arguments,
 * blockdev-add options, command-line option groups.  Checked once at the
 * boundary; inner layers may then read members without re-validating.
 *
 * Error messages follow QEMU's input visitor word for word, with the full
 * dotted path of the member ("options.size"):
 *   "Parameter 'X' is missing"
 *   "Parameter 'X' is unexpected"
 *   "Invalid parameter type for 'X', expected: integer"
 *   "Parameter 'X' does not accept value 'V'"
 *   "Parameter 'X' expects a non-negative value"      (ARG_UINT / ARG_SIZE)
 * ARG_REF / ARG_REF_OR_NULL of the wrong type: "..., expected: BlockdevRef"
 * (or BlockdevRefOrNull).  An enum's bad value names the member by its bare
 * name, and an array element as 'null', as QEMU does.  Strings coerced for
 * the command line: "Parameter 'X' expects integer" (ARG_INT, ARG_UINT),
 * "... expects size" (ARG_SIZE), "... expects 'on' or 'off'" (ARG_BOOL).
 */
#ifndef BJ_UTIL_ARGSPEC_H
#define BJ_UTIL_ARGSPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

typedef enum ArgType {
    ARG_STR,        /* string */
    ARG_INT,        /* integer (int64) */
    ARG_UINT,       /* integer >= 0 */
    ARG_SIZE,       /* integer >= 0; from strings accepts 1k/2M/3G suffixes */
    ARG_BOOL,       /* boolean; from strings accepts on/off/true/false */
    ARG_ENUM,       /* string, one of enum_values */
    ARG_OBJECT,     /* object; members checked against `members` if set */
    ARG_ARRAY,      /* array; each element checked against members[0] */
    ARG_ANY,        /* anything */
    ARG_REF,        /* node reference: string (node-name) or object */
    ARG_REF_OR_NULL,/* as ARG_REF, or JSON null */
    ARG_U64,        /* qemu's uint64: any integer (a negative one wraps, as
                     * qemu's does); another type "Parameter 'X' expects
                     * uint64"; read with arg_u64() */
} ArgType;

typedef struct ArgSpec {
    const char *name;                 /* NULL terminates a spec list */
    ArgType type;
    bool optional;
    const char *const *enum_values;   /* ARG_ENUM: NULL-terminated */
    const struct ArgSpec *members;    /* ARG_OBJECT members / ARG_ARRAY elem */
    /* ARG_OBJECT/ARG_REF objects: extra members allowed (a union whose
     * branch is checked later, e.g. blockdev-add's driver options). */
    bool open;
} ArgSpec;

/*
 * Checks obj (an object) against the NULL-terminated spec list.
 * `path` prefixes member names in messages ("" or NULL at top level).
 * With coerce_strings, string values are converted in place to the declared
 * scalar type (for dotted-key command-line options).  Returns false and sets
 * errp on the first problem; obj may have been partly coerced then.
 */
bool argspec_check(json_t *obj, const ArgSpec *spec, const char *path,
                   bool coerce_strings, Error **errp);

/* Typed getters for already-checked objects; default when absent. */
const char *arg_str(json_t *obj, const char *name, const char *def);
int64_t arg_int(json_t *obj, const char *name, int64_t def);
uint64_t arg_u64(json_t *obj, const char *name, uint64_t def);
bool arg_bool(json_t *obj, const char *name, bool def);
/* Index of an ARG_ENUM value in values, or def when absent. */
int arg_enum(json_t *obj, const char *name, const char *const *values,
             int def);

/* True if s is a well-formed QMP id / node-name: a letter, then letters,
 * digits, '-', '.', '_'. */
bool id_wellformed(const char *s);

/*
 * Parses qemu-storage-daemon style option strings into a JSON object:
 * "{...}" is parsed as JSON; otherwise dotted keys "a=1,b.c=x,d" with ",,"
 * escaping a comma.  `implied_key`, if set, names the key of a leading
 * value without '=' (e.g. "nbd,id=e" with implied key "type").  Values
 * stay strings; use argspec_check(..., coerce_strings=true) to type them.
 */
json_t *keyval_parse(const char *str, const char *implied_key, Error **errp);

#endif
