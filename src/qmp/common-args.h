/*
 * What QMP command handlers share: looking a node up by the name a command
 * was given, the check of a list of bitmaps, and the options every
 * job-starting command takes (their argument specs, in the order qemu's
 * schema lists them, and one parser into BlockJobOptions).  Main loop.
 */
#ifndef BJ_QMP_COMMON_ARGS_H
#define BJ_QMP_COMMON_ARGS_H

#include <jansson.h>

#include "block/block.h"
#include "job/jobs.h"
#include "util/argspec.h"

/*
 * Each element of a "bitmaps" list (BlockDirtyBitmapOrStr: a name, or
 * {node, name}), with the messages of qemu's visitor for the alternate;
 * path ("" or "actions[0].data") prefixes the member in them.
 */
bool qmp_check_bitmap_list(json_t *list, const char *path, Error **errp);

/* Fills o from a job-starting command's checked arguments: job-id, speed,
 * auto-finalize, auto-dismiss, on-error, on-source-error,
 * on-target-error, filter-node-name (defaults for those it lacks). */
void qmp_job_options(json_t *args, BlockJobOptions *o);

/* The ArgSpec entries of those options, to place in a command's table. */
#define QMP_JOB_ARG_ID { .name = "job-id", .type = ARG_STR, .optional = true }
#define QMP_JOB_ARG_SPEED                                                   \
    { .name = "speed", .type = ARG_INT, .optional = true }
#define QMP_JOB_ARG_FILTER_NODE_NAME                                        \
    { .name = "filter-node-name", .type = ARG_STR, .optional = true }
#define QMP_JOB_ARGS_SOURCE_TARGET_ERROR                                    \
    { .name = "on-source-error", .type = ARG_ENUM, .optional = true,        \
      .enum_values = job_on_error_names },                                  \
    { .name = "on-target-error", .type = ARG_ENUM, .optional = true,        \
      .enum_values = job_on_error_names }
#define QMP_JOB_ARGS_AUTO                                                   \
    { .name = "auto-finalize", .type = ARG_BOOL, .optional = true },        \
    { .name = "auto-dismiss", .type = ARG_BOOL, .optional = true }
/* x-yield (our extension, every job type that copies): {enabled,
 * latency-pct, min-speed}, the back-off's tuning (docs/guest-impact.md). */
extern const ArgSpec qmp_job_x_yield_members[];
#define QMP_JOB_ARG_X_YIELD                                                 \
    { .name = "x-yield", .type = ARG_OBJECT, .optional = true,              \
      .members = qmp_job_x_yield_members }
/* copy-mode of blockdev-mirror, drive-mirror and (our extension) an
 * active block-commit: MirrorCopyMode's names, "auto" ours. */
extern const char *const qmp_copy_mode_names[];
#define QMP_JOB_ARG_COPY_MODE                                               \
    { .name = "copy-mode", .type = ARG_ENUM, .optional = true,              \
      .enum_values = qmp_copy_mode_names }
/* block-stream's and block-commit's last members. */
#define QMP_JOB_ARGS_ONE_POLICY_TAIL                                        \
    QMP_JOB_ARG_SPEED,                                                      \
    { .name = "on-error", .type = ARG_ENUM, .optional = true,               \
      .enum_values = job_on_error_names },                                  \
    QMP_JOB_ARG_FILTER_NODE_NAME,                                           \
    QMP_JOB_ARGS_AUTO

#endif
