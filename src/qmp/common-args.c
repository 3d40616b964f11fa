/*
 * Job options and bitmap lists for QMP handlers (see common-args.h).
 */
#include "qmp/common-args.h"

#include <string.h>

void qmp_job_options(json_t *args, BlockJobOptions *o)
{
    o->job_id = arg_str(args, "job-id", NULL);
    o->speed = arg_int(args, "speed", 0);
    o->flags = (arg_bool(args, "auto-finalize", true) ? 0
                : JOB_MANUAL_FINALIZE) |
               (arg_bool(args, "auto-dismiss", true) ? 0
                : JOB_MANUAL_DISMISS);
    o->on_error = arg_enum(args, "on-error", job_on_error_names,
                           JOB_ON_ERROR_REPORT);
    o->on_source_error = arg_enum(args, "on-source-error",
                                  job_on_error_names, JOB_ON_ERROR_REPORT);
    o->on_target_error = arg_enum(args, "on-target-error",
                                  job_on_error_names, JOB_ON_ERROR_REPORT);
    o->filter_node_name = arg_str(args, "filter-node-name", NULL);
    json_t *y = json_object_get(args, "x-yield");
    o->yield.disabled = !arg_bool(y, "enabled", true);
    o->yield.latency_pct = arg_int(y, "latency-pct", 0);
    o->yield.min_speed = arg_int(y, "min-speed", 0);
    /* Given as 0: refused as out of range, not taken as the default. */
    if (y && json_object_get(y, "latency-pct") && !o->yield.latency_pct) {
        o->yield.latency_pct = -1;
    }
    if (y && json_object_get(y, "min-speed") && !o->yield.min_speed) {
        o->yield.min_speed = -1;
    }
}

const ArgSpec qmp_job_x_yield_members[] = {
    { .name = "enabled", .type = ARG_BOOL, .optional = true },
    { .name = "latency-pct", .type = ARG_INT, .optional = true },
    { .name = "min-speed", .type = ARG_INT, .optional = true },
    { .name = NULL },
};

/* One element of a "bitmaps" list (the i-th). */
static bool check_bitmap_or_str(json_t *el, size_t i, const char *path,
                                Error **errp)
{
    static const char *const members[] = { "node", "name" };
    const char *sep = path && *path ? "." : "";
    const char *key;
    json_t *v;

    if (json_is_string(el)) {
        return true;
    }
    if (!json_is_object(el)) {
        error_setg(errp, "Invalid parameter type for 'null', expected: "
                   "BlockDirtyBitmapOrStr");
        return false;
    }
    path = path ? path : "";
    for (int k = 0; k < 2; k++) {
        v = json_object_get(el, members[k]);
        if (!v) {
            error_setg(errp, "Parameter '%s%sbitmaps[%zu].%s' is missing",
                       path, sep, i, members[k]);
            return false;
        }
        if (!json_is_string(v)) {
            error_setg(errp, "Invalid parameter type for "
                       "'%s%sbitmaps[%zu].%s', expected: string",
                       path, sep, i, members[k]);
            return false;
        }
    }
    json_object_foreach(el, key, v) {
        if (strcmp(key, "node") && strcmp(key, "name")) {
            error_setg(errp, "Parameter '%s%sbitmaps[%zu].%s' is unexpected",
                       path, sep, i, key);
            return false;
        }
    }
    return true;
}

bool qmp_check_bitmap_list(json_t *list, const char *path, Error **errp)
{
    for (size_t i = 0; i < json_array_size(list); i++) {
        if (!check_bitmap_or_str(json_array_get(list, i), i, path, errp)) {
            return false;
        }
    }
    return true;
}

const char *const qmp_copy_mode_names[] = {
    "background", "write-blocking", "auto", NULL,   /* MirrorCopyMode */
};
