/*
 * blockdev-backup, as the transaction action it is in qemu (the command is
 * a transaction of that one action: transaction.c).  Prepare drains the
 * source, inserts the filter and creates the job; commit starts it; clean
 * ends the drained section (the job's start is seen as created, running,
 * paused, running, as qemu-storage-daemon 7.2 shows it).  With
 * completion-mode grouped the backup jobs share one JobTxn: one failing
 * cancels the others.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/backing.h"
#include "block/block.h"
#include "block/chain.h"
#include "block/create.h"
#include "block/dirty-bitmap-named.h"
#include "block/dirty-bitmap.h"
#include "job/backup.h"
#include "job/blockjob.h"
#include "qmp/commands.h"
#include "qmp/common-args.h"
#include "qmp/snapshot.h"
#include "qmp/transaction.h"
#include "util/alloc.h"

static const char *const sync_names[] = {
    "top", "full", "none", "incremental", "bitmap", NULL,
};
enum { SYNC_TOP, SYNC_FULL, SYNC_NONE, SYNC_INCREMENTAL, SYNC_BITMAP };

static const char *const bitmap_mode_names[] = {
    "on-success", "never", "always", NULL,
};
enum { BITMAP_ON_SUCCESS, BITMAP_NEVER, BITMAP_ALWAYS };

static const ArgSpec x_perf_args[] = {
    { .name = "use-copy-range", .type = ARG_BOOL, .optional = true },
    { .name = "max-workers", .type = ARG_INT, .optional = true },
    { .name = "max-chunk", .type = ARG_INT, .optional = true },
    { .name = NULL },
};

static const ArgSpec blockdev_backup_args[] = {
    QMP_JOB_ARG_ID,
    { .name = "device", .type = ARG_STR },
    { .name = "sync", .type = ARG_ENUM, .enum_values = sync_names },
    QMP_JOB_ARG_SPEED,
    { .name = "bitmap", .type = ARG_STR, .optional = true },
    { .name = "bitmap-mode", .type = ARG_ENUM, .optional = true,
      .enum_values = bitmap_mode_names },
    { .name = "compress", .type = ARG_BOOL, .optional = true },
    QMP_JOB_ARGS_SOURCE_TARGET_ERROR,
    QMP_JOB_ARGS_AUTO,
    QMP_JOB_ARG_FILTER_NODE_NAME,
    { .name = "x-perf", .type = ARG_OBJECT, .optional = true,
      .members = x_perf_args },
    { .name = "target", .type = ARG_STR },
    QMP_JOB_ARG_X_YIELD,          /* our extension, last */
    { .name = NULL },
};

/* The state of one blockdev-backup action. */
typedef struct BackupAction {
    BlockNode *bs;           /* drained while set (a reference) */
    Job *job;                /* ours from prepare to commit or abort */
} BackupAction;

/* The checks of qemu's do_backup_common, in its order.  On success *pbm
 * is the sync bitmap (or NULL) and *pmode its mode; *psync becomes
 * SYNC_BITMAP for incremental. */
static bool backup_check_bitmap_args(json_t *d, BlockNode *bs, int *psync,
                                     BdrvDirtyBitmap **pbm,
                                     BlockNode **pbm_node, int *pmode,
                                     Error **errp)
{
    int sync = *psync;
    const char *bitmap = arg_str(d, "bitmap", NULL);
    bool has_mode = json_object_get(d, "bitmap-mode") != NULL;
    int mode = arg_enum(d, "bitmap-mode", bitmap_mode_names,
                        BITMAP_ON_SUCCESS);

    if ((sync == SYNC_BITMAP || sync == SYNC_INCREMENTAL) && !bitmap) {
        error_setg(errp, "must provide a valid bitmap name for '%s' sync "
                   "mode", sync_names[sync]);
        return false;
    }
    if (sync == SYNC_INCREMENTAL) {
        if (has_mode && mode != BITMAP_ON_SUCCESS) {
            error_setg(errp, "Bitmap sync mode must be 'on-success' when "
                       "using sync mode 'incremental'");
            return false;
        }
        has_mode = true;
        sync = SYNC_BITMAP;
        mode = BITMAP_ON_SUCCESS;
    }
    if (bitmap) {
        BdrvDirtyBitmap *bm = NULL;
        for (BlockNode *it = bs; it && !bm; it = block_chain_next(it)) {
            bm = bdrv_find_dirty_bitmap(it, bitmap);
            *pbm_node = it;
            if (!it->drv->is_filter) {
                break;
            }
        }
        if (!bm) {
            error_setg(errp, "Bitmap '%s' could not be found", bitmap);
            return false;
        }
        if (!has_mode) {
            error_setg(errp, "Bitmap sync mode must be given when providing "
                       "a bitmap");
            return false;
        }
        if (!bdrv_dirty_bitmap_check_usable(bm, errp)) {
            return false;
        }
        if (sync == SYNC_NONE) {
            error_setg(errp, "sync mode 'none' does not produce meaningful "
                       "bitmap outputs");
            return false;
        }
        if (mode == BITMAP_NEVER && sync != SYNC_BITMAP) {
            error_setg(errp, "Bitmap sync mode 'never' has no meaningful "
                       "effect when combined with sync mode '%s'",
                       sync_names[sync]);
            return false;
        }
        /* Any granularity will do: the copy marks every cluster a dirty
         * granule touches (qemu accepts 512 B to 2 GiB here too). */
        *pbm = bm;
        *pmode = mode;
        *psync = sync;
        return true;
    }
    if (has_mode) {
        error_setg(errp, "Cannot specify bitmap sync mode without a bitmap");
        return false;
    }
    *pbm = NULL;
    return true;
}

/* What blockdev-backup and drive-backup share once both nodes are known
 * (qemu's do_backup_common); sync as the caller settled it. */
static bool backup_prepare_nodes(TransactionAction *ta, JobTxn *txn,
                                 BlockNode *bs, BlockNode *target, int sync,
                                 Error **errp)
{
    BackupAction *a = bj_calloc(1, sizeof(*a));
    json_t *d = ta->data;
    json_t *perf = json_object_get(d, "x-perf");
    int mode = BITMAP_ON_SUCCESS;
    BackupParams p = { 0 };
    BlockNode *bm_node = NULL;
    int64_t len, tlen;

    ta->state = a;
    /* The instant of the copy: no client request is in flight from here
     * until the job's filter is in place (clean ends it). */
    bdrv_ref(bs);
    a->bs = bs;
    bdrv_drained_begin(bs);

    if (!backup_check_bitmap_args(d, bs, &sync, &p.sync_bitmap, &bm_node,
                                  &mode, errp)) {
        return false;
    }
    if (bs == target) {
        error_setg(errp, "Source and target cannot be the same");
        return false;
    }
    p.compress = arg_bool(d, "compress", false);
    if (p.compress && strcmp(target->drv->name, "qcow2")) {
        /* qemu names the drive here; nodes have no drive name. */
        error_setg(errp, "Compression is not supported for this drive ");
        return false;
    }
    if (!block_job_check_node_free(bs, errp) ||
        !block_job_check_node_free(target, errp)) {
        return false;
    }
    p.max_workers = perf ? arg_int(perf, "max-workers", 64) : 64;
    p.max_chunk = perf ? arg_int(perf, "max-chunk", 0) : 0;
    if (p.max_workers < 1 || p.max_workers > 2147483647) {
        error_setg(errp, "max-workers must be between 1 and 2147483647");
        return false;
    }
    if (p.max_chunk < 0) {
        error_setg(errp, "max-chunk must be zero (which means no limit) or "
                   "positive");
        return false;
    }
    /* A bitmap the job will change (every mode but never) must be
     * writable: a persistent bitmap of a read-only image is not (qemu's
     * backup_job_create checks it here, before the sizes). */
    if (p.sync_bitmap && mode != BITMAP_NEVER && bm_node->read_only &&
        bdrv_dirty_bitmap_persistent(p.sync_bitmap)) {
        error_setg(errp, "Bitmap '%s' is readonly and cannot be modified",
                   bdrv_dirty_bitmap_name(p.sync_bitmap));
        return false;
    }
    len = bdrv_getlength(bs);
    tlen = bdrv_getlength(target);
    if (len < 0 || tlen < 0) {
        error_setg_errno(errp, (int)-(len < 0 ? len : tlen),
                         "Could not get the image length");
        return false;
    }
    if (len != tlen) {
        error_setg(errp, "Source and target image have different sizes");
        return false;
    }
    int64_t cs = backup_cluster_size(target);
    if (p.max_chunk && p.max_chunk < cs) {
        error_setg(errp, "Required max-chunk (%lld) is less than backup "
                   "cluster size (%lld)", (long long)p.max_chunk,
                   (long long)cs);
        return false;
    }
    qmp_job_options(d, &p.job);
    p.sync = sync == SYNC_TOP ? BACKUP_SYNC_TOP
             : sync == SYNC_NONE ? BACKUP_SYNC_NONE
             : sync == SYNC_BITMAP ? BACKUP_SYNC_BITMAP : BACKUP_SYNC_FULL;
    p.bitmap_mode = mode == BITMAP_NEVER ? BACKUP_BITMAP_NEVER
                    : mode == BITMAP_ALWAYS ? BACKUP_BITMAP_ALWAYS
                    : BACKUP_BITMAP_ON_SUCCESS;
    a->job = backup_job_create(&p, bs, target, txn, errp);
    if (!a->job) {
        return false;
    }
    /* Ours until commit or abort: aborting one member of a grouped
     * transaction ends the others too. */
    job_ref(a->job);
    return true;
}

static bool backup_prepare(TransactionAction *ta, JobTxn *txn, Error **errp)
{
    json_t *d = ta->data;
    const char *device = arg_str(d, "device", NULL);
    const char *target_name = arg_str(d, "target", NULL);
    BlockNode *bs, *target;

    bs = bdrv_lookup_node(device, device, errp);
    if (!bs) {
        return false;
    }
    target = bdrv_lookup_node(target_name, target_name, errp);
    if (!target) {
        return false;
    }
    return backup_prepare_nodes(ta, txn, bs, target,
                                arg_enum(d, "sync", sync_names, SYNC_FULL),
                                errp);
}

/* ---- drive-backup (deprecated in qemu 7.2) ---- */

static void backup_commit(TransactionAction *ta);
static void backup_abort(TransactionAction *ta);
static void backup_clean(TransactionAction *ta);

static const char *const drive_mode_names[] = { "existing",
                                                "absolute-paths", NULL };

static const ArgSpec drive_backup_args[] = {
    QMP_JOB_ARG_ID,
    { .name = "device", .type = ARG_STR },
    { .name = "sync", .type = ARG_ENUM, .enum_values = sync_names },
    QMP_JOB_ARG_SPEED,
    { .name = "bitmap", .type = ARG_STR, .optional = true },
    { .name = "bitmap-mode", .type = ARG_ENUM, .optional = true,
      .enum_values = bitmap_mode_names },
    { .name = "compress", .type = ARG_BOOL, .optional = true },
    QMP_JOB_ARGS_SOURCE_TARGET_ERROR,
    QMP_JOB_ARGS_AUTO,
    QMP_JOB_ARG_FILTER_NODE_NAME,
    { .name = "x-perf", .type = ARG_OBJECT, .optional = true,
      .members = x_perf_args },
    { .name = "target", .type = ARG_STR },
    { .name = "format", .type = ARG_STR, .optional = true },
    { .name = "mode", .type = ARG_ENUM, .optional = true,
      .enum_values = drive_mode_names },
    QMP_JOB_ARG_X_YIELD,          /* our extension, last */
    { .name = NULL },
};

/*
 * blockdev-backup to a file: created (unless mode is existing) in the
 * source's format or `format`, at the source's size, storing as backing
 * what sync top and none leave to it (the source's backing, the source);
 * then opened as a node of the job's (the job holds it; it closes when the
 * job ends).  sync none gives the target the source as its backing node,
 * as qemu does.  With mode existing and no format, the image's format is
 * probed, as qemu does.
 */
static bool drive_backup_prepare(TransactionAction *ta, JobTxn *txn,
                                 Error **errp)
{
    json_t *d = ta->data;
    const char *device = arg_str(d, "device", NULL);
    const char *file = arg_str(d, "target", "");
    bool existing = arg_enum(d, "mode", drive_mode_names, 1) == 0;
    int sync = arg_enum(d, "sync", sync_names, SYNC_FULL);
    BlockNode *bs, *source = NULL, *target;
    BlockJobOptions jo;
    const char *fmt;
    bool ok;

    bs = bdrv_lookup_node(device, device, errp);
    if (!bs) {
        return false;
    }
    /* Our extension's values are refused before the image is made. */
    qmp_job_options(d, &jo);
    if (!job_yield_params_check(&jo.yield, errp)) {
        return false;
    }
    fmt = arg_str(d, "format", existing ? NULL : bs->drv->name);
    if (sync == SYNC_TOP) {
        source = block_chain_next(bs);
        if (!source) {
            sync = SYNC_FULL;
        }
    }
    if (sync == SYNC_NONE) {
        source = bs;
    }
    if (!existing &&
        !bdrv_img_create(file, fmt, (uint64_t)bdrv_getlength(bs),
                         source ? source->filename : NULL,
                         source ? source->drv->name : NULL, errp)) {
        return false;
    }
    if (!fmt && !(fmt = bdrv_probe_format(file, errp))) {
        return false;
    }
    const BlockDriver *drv = bdrv_find_driver(fmt);
    if (!drv) {
        error_setg(errp, "Unknown driver '%s'", fmt);
        return false;
    }
    json_t *opts = json_pack("{s:s, s:{s:s, s:s}}", "driver", fmt, "file",
                             "driver", "file", "filename", file);
    if (drv->supports_backing) {
        json_object_set_new(opts, "backing", json_null());
    }
    target = bdrv_open_internal(NULL, opts, errp);
    json_decref(opts);
    if (!target) {
        return false;
    }
    ok = (sync != SYNC_NONE || !drv->supports_backing ||
          block_set_backing(target, bs, errp)) &&
         backup_prepare_nodes(ta, txn, bs, target, sync, errp);
    /* The job holds the target from here, if it was made. */
    bdrv_unref(target);
    return ok;
}

const TransactionActionType transaction_drive_backup_action = {
    .name = "drive-backup",
    .args = drive_backup_args,
    .supports_grouped = true,
    .prepare = drive_backup_prepare,
    .commit = backup_commit,
    .abort = backup_abort,
    .clean = backup_clean,
    .alone_drain = TRANSACTION_DRAIN_ALL,
};

static void backup_commit(TransactionAction *ta)
{
    BackupAction *a = ta->state;

    job_start(a->job);
    job_unref(a->job);
    a->job = NULL;
}

static void backup_abort(TransactionAction *ta)
{
    BackupAction *a = ta->state;

    if (a->job) {
        /* Never started: created -> aborting -> concluded -> null. */
        if (a->job->status == JOB_STATUS_CREATED) {
            job_cancel(a->job, true);
        }
        job_unref(a->job);
        a->job = NULL;
    }
}

static void backup_clean(TransactionAction *ta)
{
    BackupAction *a = ta->state;

    if (a->bs) {
        bdrv_drained_end(a->bs);
        bdrv_unref(a->bs);
    }
}

const TransactionActionType transaction_backup_action = {
    .name = "blockdev-backup",
    .args = blockdev_backup_args,
    .supports_grouped = true,
    .prepare = backup_prepare,
    .commit = backup_commit,
    .abort = backup_abort,
    .clean = backup_clean,
    .alone_drain = TRANSACTION_DRAIN_ALL,
};

static bool qmp_blockdev_backup(json_t *args, json_t **ret, Error **errp)
{
    return transaction_run_alone(&transaction_backup_action, args, errp);
}

static bool qmp_drive_backup(json_t *args, json_t **ret, Error **errp)
{
    return transaction_run_alone(&transaction_drive_backup_action, args,
                                 errp);
}

static const char *const deprecated[] = { "deprecated", NULL };

const QmpCommand qmp_backup_commands[] = {
    { .name = "blockdev-backup", .fn = qmp_blockdev_backup,
      .args = blockdev_backup_args },
    { .name = "drive-backup", .fn = qmp_drive_backup,
      .args = drive_backup_args, .features = deprecated },
    { .name = NULL },
};
