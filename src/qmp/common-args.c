/*
 * Node lookup and job options for QMP handlers (see common-args.h).
 */
#include "qmp/common-args.h"

BlockNode *qmp_find_node(const char *device, const char *node_name,
                         Error **errp)
{
    BlockNode *bs = bdrv_find_node(node_name);

    if (!bs) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'",
                   device ? device : "", node_name);
    }
    return bs;
}

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
}
