/*
 * Job commands: the block-job-* and job-* verbs, query-block-jobs,
 * query-jobs, block-stream and block-commit.  They translate JSON into
 * calls on job/ and check what the reference checks, in its order and
 * with its messages.
 */
#include <string.h>

#include "block/block.h"
#include "block/chain.h"
#include "job/blockjob.h"
#include "job/job.h"
#include "job/jobs.h"
#include "job/mirror.h"
#include "qmp/commands.h"
#include "qmp/common-args.h"

/* ---- finding jobs ---- */

/* block-job-*: only block jobs, DeviceNotActive when absent. */
static Job *find_block_job(const char *id, Error **errp)
{
    Job *job = job_get(id);
    if (!job || !job->driver->block_job_events) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_ACTIVE,
                  "Block job '%s' not found", id);
        return NULL;
    }
    return job;
}

static Job *find_job(const char *id, Error **errp)
{
    Job *job = job_get(id);
    if (!job) {
        error_setg(errp, "Job not found");
    }
    return job;
}

/* ---- block-job-* ---- */

static const ArgSpec device_args[] = {
    { .name = "device", .type = ARG_STR },
    { .name = NULL },
};

static const ArgSpec id_args[] = {
    { .name = "id", .type = ARG_STR },
    { .name = NULL },
};

static const ArgSpec set_speed_args[] = {
    { .name = "device", .type = ARG_STR },
    { .name = "speed", .type = ARG_INT },
    { .name = NULL },
};

static bool qmp_block_job_set_speed(json_t *args, json_t **ret, Error **errp)
{
    Job *job = find_block_job(arg_str(args, "device", NULL), errp);
    return job && job_set_speed(job, arg_int(args, "speed", 0), errp);
}

static const ArgSpec cancel_args[] = {
    { .name = "device", .type = ARG_STR },
    { .name = "force", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

static bool qmp_block_job_cancel(json_t *args, json_t **ret, Error **errp)
{
    const char *device = arg_str(args, "device", NULL);
    bool force = arg_bool(args, "force", false);
    Job *job = find_block_job(device, errp);
    if (!job) {
        return false;
    }
    if (job->user_paused && !force) {
        error_setg(errp, "The block job for device '%s' is currently paused",
                   device);
        return false;
    }
    return job_user_cancel(job, force, errp);
}

/* ---- the verbs that take nothing but the job ---- */

static bool do_finalize(Job *job, Error **errp)
{
    /* Finalizing may free the job (auto-dismiss): hold it meanwhile. */
    job_ref(job);
    bool ok = job_finalize(job, errp);
    job_unref(job);
    return ok;
}

static bool do_dismiss(Job *job, Error **errp)
{
    return job_dismiss(&job, errp);
}

static bool do_force_cancel(Job *job, Error **errp)
{
    /* job-cancel always forces (a READY mirror does not pivot either). */
    return job_user_cancel(job, true, errp);
}

/* A command that finds the job named by member `key` with `find`
 * (block-job-*: find_block_job; job-*: find_job) and applies `verb`. */
#define JOB_VERB_COMMAND(fn, find, key, verb)                               \
    static bool fn(json_t *args, json_t **ret, Error **errp)                \
    {                                                                       \
        Job *job = find(arg_str(args, key, NULL), errp);                    \
        return job && verb(job, errp);                                      \
    }

JOB_VERB_COMMAND(qmp_block_job_pause, find_block_job, "device",
                 job_user_pause)
JOB_VERB_COMMAND(qmp_block_job_resume, find_block_job, "device",
                 job_user_resume)
JOB_VERB_COMMAND(qmp_block_job_complete, find_block_job, "device",
                 job_complete)
JOB_VERB_COMMAND(qmp_block_job_finalize, find_block_job, "id", do_finalize)
JOB_VERB_COMMAND(qmp_block_job_dismiss, find_block_job, "id", do_dismiss)
JOB_VERB_COMMAND(qmp_job_pause, find_job, "id", job_user_pause)
JOB_VERB_COMMAND(qmp_job_resume, find_job, "id", job_user_resume)
JOB_VERB_COMMAND(qmp_job_cancel, find_job, "id", do_force_cancel)
JOB_VERB_COMMAND(qmp_job_complete, find_job, "id", job_complete)
JOB_VERB_COMMAND(qmp_job_finalize, find_job, "id", do_finalize)
JOB_VERB_COMMAND(qmp_job_dismiss, find_job, "id", do_dismiss)

/* ---- queries ---- */

static bool qmp_query_block_jobs(json_t *args, json_t **ret, Error **errp)
{
    *ret = job_query_block_jobs();
    return true;
}

static bool qmp_query_jobs(json_t *args, json_t **ret, Error **errp)
{
    *ret = job_query_jobs();
    return true;
}

/* ---- starting jobs ---- */

/* A chain member named by file name (the "base"/"top" arguments): the
 * name the image was opened with or the name its overlay's header uses. */
static BlockNode *find_backing_image(BlockNode *top, const char *name)
{
    for (BlockNode *it = top; it; it = block_chain_next(it)) {
        BlockNode *next = block_chain_next(it);
        if (next && (strcmp(next->filename, name) == 0 ||
                     strcmp(it->backing_file, name) == 0)) {
            return next;
        }
    }
    return NULL;
}

/* An optional string member (the chain arguments are all of this kind). */
#define OPT_STR(member) { .name = member, .type = ARG_STR, .optional = true }

static const ArgSpec stream_args[] = {
    QMP_JOB_ARG_ID,
    { .name = "device", .type = ARG_STR },
    OPT_STR("base"), OPT_STR("base-node"), OPT_STR("bottom"),
    OPT_STR("backing-file"),
    QMP_JOB_ARGS_ONE_POLICY_TAIL,
    QMP_JOB_ARG_COPY_MODE,        /* our extension: active commit only */
    QMP_JOB_ARG_X_YIELD,
    { .name = NULL },
};

static bool qmp_block_stream(json_t *args, json_t **ret, Error **errp)
{
    const char *device = arg_str(args, "device", NULL);
    const char *base = arg_str(args, "base", NULL);
    const char *base_node = arg_str(args, "base-node", NULL);
    const char *bottom = arg_str(args, "bottom", NULL);
    const char *backing_file = arg_str(args, "backing-file", NULL);
    BlockNode *bs, *base_bs = NULL;
    BlockJobOptions o;

    if (base && base_node) {
        error_setg(errp, "'base' and 'base-node' cannot be specified at the "
                   "same time");
        return false;
    }
    if (base && bottom) {
        error_setg(errp, "'base' and 'bottom' cannot be specified at the "
                   "same time");
        return false;
    }
    if (bottom && base_node) {
        error_setg(errp, "'bottom' and 'base-node' cannot be specified at "
                   "the same time");
        return false;
    }
    if (!(bs = bdrv_lookup_node(device, device, errp))) {
        return false;
    }
    if (base) {
        base_bs = find_backing_image(bs, base);
        if (!base_bs) {
            error_setg(errp, "Can't find '%s' in the backing chain", base);
            return false;
        }
    }
    if (base_node) {
        if (!(base_bs = bdrv_lookup_node(NULL, base_node, errp))) {
            return false;
        }
        if (bs == base_bs || !block_chain_contains(bs, base_bs)) {
            error_setg(errp, "Node '%s' is not a backing image of '%s'",
                       base_node, device);
            return false;
        }
    }
    if (bottom) {
        BlockNode *bottom_bs = bdrv_lookup_node(NULL, bottom, errp);
        if (!bottom_bs) {
            return false;
        }
        if (bottom_bs->drv->is_filter) {
            error_setg(errp, "Node '%s' is a filter, use a non-filter node "
                       "as 'bottom'", bottom);
            return false;
        }
        if (!block_chain_contains(bs, bottom_bs)) {
            error_setg(errp, "Node '%s' is not in a chain starting from '%s'",
                       bottom, device);
            return false;
        }
        base_bs = block_chain_next(bottom_bs);
    }
    if (!base_bs && backing_file) {
        error_setg(errp, "backing file specified, but streaming the entire "
                   "chain");
        return false;
    }
    qmp_job_options(args, &o);
    return stream_start(&o, bs, base_bs, backing_file, errp) != NULL;
}

static const ArgSpec commit_args[] = {
    QMP_JOB_ARG_ID,
    { .name = "device", .type = ARG_STR },
    OPT_STR("base-node"), OPT_STR("base"), OPT_STR("top-node"), OPT_STR("top"),
    OPT_STR("backing-file"),
    QMP_JOB_ARGS_ONE_POLICY_TAIL,
    QMP_JOB_ARG_COPY_MODE,        /* our extension: active commit only */
    QMP_JOB_ARG_X_YIELD,
    { .name = NULL },
};

static bool qmp_block_commit(json_t *args, json_t **ret, Error **errp)
{
    const char *device = arg_str(args, "device", NULL);
    const char *base = arg_str(args, "base", NULL);
    const char *base_node = arg_str(args, "base-node", NULL);
    const char *top = arg_str(args, "top", NULL);
    const char *top_node = arg_str(args, "top-node", NULL);
    const char *backing_file = arg_str(args, "backing-file", NULL);
    BlockNode *bs = bdrv_find_node(device), *top_bs, *base_bs;
    BlockJobOptions o;

    if (!bs) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "Device '%s' not found",
                  device);
        return false;
    }
    /* A job's filter would sit above a node in use by a job in the
     * reference, so such a node is not a root there either. */
    if (!bdrv_is_root_node(bs) || block_job_user_of(bs)) {
        error_setg(errp, "Need a root block node");
        return false;
    }
    if (!block_job_check_node_free(bs, errp)) {
        return false;
    }
    top_bs = bs;
    if (top_node && top) {
        error_setg(errp, "'top-node' and 'top' are mutually exclusive");
        return false;
    } else if (top_node) {
        if (!(top_bs = bdrv_lookup_node(NULL, top_node, errp))) {
            return false;
        }
        if (!block_chain_contains(bs, top_bs)) {
            error_setg(errp, "'%s' is not in this backing file chain",
                       top_node);
            return false;
        }
    } else if (top && strcmp(bs->filename, top) != 0) {
        top_bs = find_backing_image(bs, top);
        if (!top_bs) {
            error_setg(errp, "Top image file %s not found", top);
            return false;
        }
    }
    if (base_node && base) {
        error_setg(errp, "'base-node' and 'base' are mutually exclusive");
        return false;
    } else if (base_node) {
        if (!(base_bs = bdrv_lookup_node(NULL, base_node, errp))) {
            return false;
        }
        if (!block_chain_contains(top_bs, base_bs)) {
            error_setg(errp, "'%s' is not in this backing file chain",
                       base_node);
            return false;
        }
    } else if (base) {
        base_bs = find_backing_image(top_bs, base);
        if (!base_bs) {
            error_setg(errp, "Can't find '%s' in the backing chain", base);
            return false;
        }
    } else {
        base_bs = block_chain_base(top_bs);
    }
    if (!block_job_check_chain_free(top_bs, base_bs, errp)) {
        return false;
    }
    if (top_bs == base_bs) {
        error_setg(errp, "cannot commit an image into itself");
        return false;
    }
    if (top_bs == bs) {
        if (backing_file) {
            error_setg(errp, "'backing-file' specified, but 'top' is the "
                       "active layer");
            return false;
        }
        /* Active commit runs as a mirror of type "commit" (mirror.c). */
        qmp_job_options(args, &o);
        return commit_active_start(&o, bs, base_bs, (MirrorCopyMode)arg_enum(
                                       args, "copy-mode", qmp_copy_mode_names,
                                       MIRROR_COPY_BACKGROUND),
                                   errp) != NULL;
    }
    if (json_object_get(args, "copy-mode")) {
        error_setg(errp, "'copy-mode' applies to an active commit only "
                   "('top' is not the active layer)");
        return false;
    }
    qmp_job_options(args, &o);
    return commit_start(&o, bs, top_bs, base_bs, backing_file, errp) != NULL;
}

/* ---- block-job-change (qemu 8.2): a mirror's copy mode ---- */

static const char *const job_type_names[] = {
    "commit", "stream", "mirror", "backup", "create", "amend",
    "snapshot-load", "snapshot-save", "snapshot-delete", NULL,
};

static const ArgSpec change_args[] = {
    { .name = "id", .type = ARG_STR },
    { .name = "type", .type = ARG_ENUM, .enum_values = job_type_names },
    QMP_JOB_ARG_COPY_MODE,
    { .name = NULL },
};

static bool qmp_block_job_change(json_t *args, json_t **ret, Error **errp)
{
    const char *type = arg_str(args, "type", NULL);
    Job *job = find_block_job(arg_str(args, "id", NULL), errp);

    if (!job) {
        return false;
    }
    if (strcmp(job->driver->type, type) != 0) {
        error_setg(errp, "Job '%s' is a %s job, not %s", job->id,
                   job->driver->type, type);
        return false;
    }
    if (!json_object_get(args, "copy-mode")) {
        return true;                /* nothing to change */
    }
    if (!job_is_mirror(job)) {
        error_setg(errp, "'copy-mode' applies to a mirror or an active "
                   "commit only");
        return false;
    }
    return mirror_change_copy_mode(job, (MirrorCopyMode)arg_enum(
                                       args, "copy-mode", qmp_copy_mode_names,
                                       MIRROR_COPY_BACKGROUND), errp);
}

static const ArgSpec no_args[] = { { .name = NULL } };

const QmpCommand qmp_job_commands[] = {
    { .name = "block-job-set-speed", .fn = qmp_block_job_set_speed,
      .args = set_speed_args },
    { .name = "block-job-cancel", .fn = qmp_block_job_cancel,
      .args = cancel_args },
    { .name = "block-job-pause", .fn = qmp_block_job_pause,
      .args = device_args },
    { .name = "block-job-resume", .fn = qmp_block_job_resume,
      .args = device_args },
    { .name = "block-job-complete", .fn = qmp_block_job_complete,
      .args = device_args },
    { .name = "block-job-finalize", .fn = qmp_block_job_finalize,
      .args = id_args },
    { .name = "block-job-dismiss", .fn = qmp_block_job_dismiss,
      .args = id_args },
    { .name = "block-job-change", .fn = qmp_block_job_change,
      .args = change_args },
    { .name = "job-pause", .fn = qmp_job_pause, .args = id_args },
    { .name = "job-resume", .fn = qmp_job_resume, .args = id_args },
    { .name = "job-cancel", .fn = qmp_job_cancel, .args = id_args },
    { .name = "job-complete", .fn = qmp_job_complete, .args = id_args },
    { .name = "job-finalize", .fn = qmp_job_finalize, .args = id_args },
    { .name = "job-dismiss", .fn = qmp_job_dismiss, .args = id_args },
    { .name = "query-block-jobs", .fn = qmp_query_block_jobs,
      .args = no_args, .ret = qmp_ret_array },
    { .name = "query-jobs", .fn = qmp_query_jobs, .args = no_args,
      .ret = qmp_ret_array },
    { .name = "block-stream", .fn = qmp_block_stream, .args = stream_args },
    { .name = "block-commit", .fn = qmp_block_commit, .args = commit_args },
    { .name = NULL },
};
