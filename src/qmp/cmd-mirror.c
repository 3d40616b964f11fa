/*
 * blockdev-mirror and drive-mirror: argument checks in the reference's
 * order and words, then mirror_start (job/mirror.c).
 */
#include <string.h>
#include <sys/stat.h>

#include "block/block.h"
#include "block/chain.h"
#include "block/create.h"
#include "job/blockjob.h"
#include "job/mirror.h"
#include "qmp/commands.h"
#include "qmp/common-args.h"

static const char *const sync_names[] = {
    "top", "full", "none", "incremental", "bitmap", NULL,
};
enum { SYNC_TOP, SYNC_FULL, SYNC_NONE, SYNC_INCREMENTAL, SYNC_BITMAP };

static const char *const drive_mode_names[] = {
    "existing", "absolute-paths", NULL,
};

#define COMMON_ARGS                                                         \
    QMP_JOB_ARG_ID,                                                         \
    { .name = "device", .type = ARG_STR },                                 \
    { .name = "replaces", .type = ARG_STR, .optional = true },             \
    { .name = "sync", .type = ARG_ENUM, .enum_values = sync_names },       \
    QMP_JOB_ARG_SPEED,                                                      \
    { .name = "granularity", .type = ARG_UINT, .optional = true },         \
    { .name = "buf-size", .type = ARG_INT, .optional = true },             \
    QMP_JOB_ARGS_SOURCE_TARGET_ERROR,                                       \
    QMP_JOB_ARG_FILTER_NODE_NAME,                                           \
    QMP_JOB_ARG_COPY_MODE,                                                  \
    QMP_JOB_ARGS_AUTO,                                                      \
    QMP_JOB_ARG_X_YIELD

static const ArgSpec blockdev_mirror_args[] = {
    COMMON_ARGS,
    { .name = "target", .type = ARG_STR },
    { .name = NULL },
};

static const ArgSpec drive_mirror_args[] = {
    COMMON_ARGS,
    { .name = "target", .type = ARG_STR },
    { .name = "format", .type = ARG_STR, .optional = true },
    { .name = "node-name", .type = ARG_STR, .optional = true },
    { .name = "mode", .type = ARG_ENUM, .optional = true,
      .enum_values = drive_mode_names },
    { .name = "unmap", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

/* The source of a mirror is looked up as in qemu-storage-daemon 7.2: it
 * must be a root node, and a node in use by a job counts as having that
 * job's filter above it. */
static BlockNode *lookup_root(const char *name, Error **errp)
{
    BlockNode *bs = bdrv_lookup_node(name, name, errp);
    if (bs && (!bdrv_is_root_node(bs) || block_job_user_of(bs))) {
        error_setg(errp, "Need a root block node");
        return NULL;
    }
    return bs;
}

/* The checks after the target is known, then the start. */
/* whole_disk: qemu would write the whole target (zero_target: sync=full
 * as asked, onto a target not known to read zeroes) and cannot do it by
 * unmapping, so its progress counts the whole disk. */
static bool mirror_common(json_t *args, BlockNode *bs, BlockNode *target,
                          bool whole_disk, Error **errp)
{
    int64_t granularity = arg_int(args, "granularity", 0);
    int sync = arg_enum(args, "sync", sync_names, SYNC_FULL);
    const char *replaces = arg_str(args, "replaces", NULL);
    MirrorParams p = { .count_whole_disk = whole_disk && sync == SYNC_FULL };

    if (granularity && (granularity < 512 || granularity > (64 << 20))) {
        error_setg(errp, "Parameter 'granularity' expects a value in range "
                   "[512B, 64MB]");
        return false;
    }
    if (granularity & (granularity - 1)) {
        error_setg(errp, "Parameter 'granularity' expects a power of 2");
        return false;
    }
    if (!block_job_check_node_free(bs, errp) ||
        !block_job_check_node_free(target, errp)) {
        return false;
    }
    if (sync == SYNC_TOP && !block_chain_next(bs)) {
        sync = SYNC_FULL;
    }
    if (replaces) {
        p.replaces = bdrv_find_node(replaces);
        if (!p.replaces) {
            error_setg(errp, "Failed to find node with node-name='%s'",
                       replaces);
            return false;
        }
    }
    if (sync == SYNC_INCREMENTAL || sync == SYNC_BITMAP) {
        error_setg(errp, "Sync mode '%s' not supported", sync_names[sync]);
        return false;
    }
    p.buf_size = arg_int(args, "buf-size", 0);
    if (p.buf_size < 0) {
        error_setg(errp, "Invalid parameter 'buf-size'");
        return false;
    }
    if (bs == target) {
        error_setg(errp, "Can't mirror node into itself");
        return false;
    }
    qmp_job_options(args, &p.job);
    p.sync = sync == SYNC_TOP ? MIRROR_SYNC_TOP
             : sync == SYNC_NONE ? MIRROR_SYNC_NONE : MIRROR_SYNC_FULL;
    p.granularity = granularity;
    p.copy_mode = (MirrorCopyMode)arg_enum(args, "copy-mode",
                                           qmp_copy_mode_names,
                                           MIRROR_COPY_BACKGROUND);
    return mirror_start(&p, bs, target, errp) != NULL;
}

static bool qmp_blockdev_mirror(json_t *args, json_t **ret, Error **errp)
{
    BlockNode *bs = lookup_root(arg_str(args, "device", NULL), errp);
    if (!bs) {
        return false;
    }
    const char *target_name = arg_str(args, "target", NULL);
    BlockNode *target = bdrv_lookup_node(target_name, target_name, errp);
    if (!target) {
        return false;
    }
    /* blockdev-mirror: qemu zeroes the target, by unmapping if the target
     * was opened with discard=unmap. */
    return mirror_common(args, bs, target, !target->discard_unmap, errp);
}

/*
 * drive-mirror: the target is a file name.  With mode absolute-paths
 * (the default) it is created in `format` (the source's by default) at the
 * source's size, for sync top with the source's backing image as its
 * backing file; with mode existing it must exist.  The node is opened like an inline
 * blockdev-add and released when the mirror no longer holds it.
 */
static bool qmp_drive_mirror(json_t *args, json_t **ret, Error **errp)
{
    BlockNode *bs = lookup_root(arg_str(args, "device", NULL), errp);
    const char *file = arg_str(args, "target", NULL);
    const char *fmt = arg_str(args, "format", NULL);
    const char *node_name = arg_str(args, "node-name", NULL);
    int mode = arg_enum(args, "mode", drive_mode_names, 1);
    BlockNode *target;
    json_t *opts, *fopts;
    bool ok;

    if (!bs) {
        return false;
    }
    if (!fmt) {
        fmt = bs->drv->name;
    }
    if (mode == 1) {
        /* sync top: the target's backing is the source's (it copies only
         * what is above), named as the source's image names it */
        BlockNode *backing = arg_enum(args, "sync", sync_names, SYNC_FULL) ==
                             SYNC_TOP ? block_chain_next(bs) : NULL;

        if (!bdrv_img_create(file, fmt, (uint64_t)bdrv_getlength(bs),
                             backing ? backing->filename : NULL,
                             backing ? backing->drv->name : NULL, errp)) {
            return false;
        }
    }
    opts = json_object();
    fopts = json_object();
    /* As qemu probes the protocol: a block device is a host_device. */
    struct stat st;
    bool blk = stat(file, &st) == 0 && S_ISBLK(st.st_mode);
    json_object_set_new(fopts, "driver",
                        json_string(blk ? "host_device" : "file"));
    json_object_set_new(fopts, "filename", json_string(file));
    json_object_set_new(opts, "driver", json_string(fmt));
    json_object_set_new(opts, "file", fopts);
    if (node_name) {
        json_object_set_new(opts, "node-name", json_string(node_name));
    }
    if (arg_bool(args, "unmap", true)) {
        json_object_set_new(opts, "discard", json_string("unmap"));
    }
    target = bdrv_open_internal(NULL, opts, errp);
    json_decref(opts);
    if (!target) {
        return false;
    }
    /* The job holds its own reference; ours goes once it is started (or
     * refused), so the target lives exactly as long as something uses it. */
    /* mode existing: qemu zeroes the target, opened with the source's
     * discard setting (ours follows `unmap`). */
    ok = mirror_common(args, bs, target, mode == 0 && !bs->discard_unmap,
                       errp);
    bdrv_unref(target);
    return ok;
}

const QmpCommand qmp_mirror_commands[] = {
    { .name = "blockdev-mirror", .fn = qmp_blockdev_mirror,
      .args = blockdev_mirror_args },
    { .name = "drive-mirror", .fn = qmp_drive_mirror,
      .args = drive_mirror_args },
    { .name = NULL },
};
