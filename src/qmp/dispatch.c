/*
 * Running one command: look it up, check its arguments at the boundary,
 * call the handler.  The monitor and the command line both come through
 * here, so a command behaves the same from either.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "qmp/qmp.h"

static const ArgSpec no_args[] = { { .name = NULL } };

/*
 * A handler that checks its own union members (args_open) still has its
 * declared members checked here; the rest is left to it.  Checking a copy
 * that holds only the declared members gives exactly that.
 */
static bool check_open(json_t *args, const ArgSpec *spec, Error **errp)
{
    json_t *declared = json_object();
    for (const ArgSpec *s = spec; s->name; s++) {
        json_t *v = json_object_get(args, s->name);
        if (v) {
            json_object_set(declared, s->name, v);
        }
    }
    bool ok = argspec_check(declared, spec, NULL, false, errp);
    json_decref(declared);
    return ok;
}

/*
 * The JSON parser keeps U+0000 inside strings, but every consumer below
 * reads strings as C strings and would see "n1\u0000x" as "n1": the wrong
 * node deleted, the wrong export named.  So a string holding a NUL is
 * refused here, once, for every argument at any depth.  (qemu 7.2 keeps
 * the NUL as an encoded character instead; its lookups then fail with their
 * own "not found" errors, and free-form strings are accepted.)  Object keys
 * never hold a NUL: the parser refuses them.
 */
static bool find_nul(json_t *v, const char *path, Error **errp)
{
    char sub[512];

    if (json_is_string(v)) {
        if (memchr(json_string_value(v), '\0', json_string_length(v))) {
            error_setg(errp, "Parameter '%s' must not contain a NUL "
                       "character", path);
            return false;
        }
    } else if (json_is_object(v)) {
        const char *key;
        json_t *m;
        json_object_foreach(v, key, m) {
            snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "",
                     key);
            if (!find_nul(m, sub, errp)) {
                return false;
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m) {
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            if (!find_nul(m, sub, errp)) {
                return false;
            }
        }
    }
    return true;
}

/*
 * The request object's shape (wording of QEMU 7.2); exec-oob is a member
 * only with the 'oob' capability (oob_enabled).  Returns the command name
 * and whether it came as exec-oob, or NULL with errp set.
 */
const char *qmp_check_request(json_t *req, bool oob_enabled, bool *is_oob,
                              Error **errp)
{
    const char *key;
    json_t *v;
    json_object_foreach(req, key, v) {
        if (!strcmp(key, "execute") ||
            (oob_enabled && !strcmp(key, "exec-oob"))) {
            if (!json_is_string(v)) {
                error_setg(errp, "QMP input member '%s' must be a string",
                           key);
                return NULL;
            }
            /* "quit\u0000x" must not run quit (see find_nul). */
            if (strlen(json_string_value(v)) != json_string_length(v)) {
                error_setg(errp, "QMP input member '%s' must not contain a "
                           "NUL character", key);
                return NULL;
            }
        } else if (!strcmp(key, "arguments")) {
            if (!json_is_object(v)) {
                error_setg(errp,
                           "QMP input member 'arguments' must be an object");
                return NULL;
            }
        } else if (strcmp(key, "id") != 0) {
            error_setg(errp, "QMP input member '%s' is unexpected", key);
            return NULL;
        }
    }
    const char *exec = json_string_value(json_object_get(req, "execute"));
    const char *oob = oob_enabled ?
        json_string_value(json_object_get(req, "exec-oob")) : NULL;
    if (!exec && !oob) {
        error_setg(errp, "QMP input lacks member 'execute'");
        return NULL;
    }
    if (exec && oob) {
        error_setg(errp, "QMP input member 'execute' clashes with "
                   "'exec-oob'");
        return NULL;
    }
    *is_oob = oob != NULL;
    return exec ? exec : oob;
}

bool qmp_check_args(const QmpCommand *cmd, json_t *args, Error **errp)
{
    const ArgSpec *spec = cmd->args ? cmd->args : no_args;
    return find_nul(args, "", errp) &&
           (cmd->args_open ? check_open(args, spec, errp)
                           : argspec_check(args, spec, NULL, false, errp));
}

json_t *qmp_dispatch(const char *name, json_t *args, Error **errp)
{
    const QmpCommand *cmd = qmp_find_command(name);
    if (!cmd) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "The command %s has not been found", name);
        return NULL;
    }
    json_auto_t *a = args ? json_incref(args) : json_object();
    if (!json_is_object(a)) {
        error_setg(errp, "QMP input member 'arguments' must be an object");
        return NULL;
    }
    bool ok = qmp_check_args(cmd, a, errp);
    json_t *ret = NULL;
    if (ok) {
        Error *err = NULL;
        ok = cmd->fn(a, &ret, &err);
        /* The contract: false <=> error set.  A handler breaking it is a
         * bug, but the client must still get a reply. */
        if (!ok && !err) {
            error_setg(&err, "Command %s failed", name);
        }
        if (ok && err) {
            error_free(err);
            err = NULL;
        }
        if (!ok) {
            error_propagate(errp, err);
            json_decref(ret);
            ret = NULL;
        } else if (!ret) {
            ret = json_object();
        }
    }
    return ret;
}
