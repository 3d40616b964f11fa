/*
 * Internal snapshots: blockdev-snapshot-internal-sync (a command and a
 * transaction action) and blockdev-snapshot-delete-internal-sync, with
 * qsd 7.2's checks in its order and its words.  The image format does the
 * work through the driver table (block/snapshot.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "block/snapshot.h"
#include "job/blockjob.h"
#include "qmp/commands.h"
#include "qmp/common-args.h"
#include "qmp/transaction.h"
#include "util/alloc.h"
#include "util/log.h"

static const ArgSpec internal_sync_args[] = {
    { .name = "device", .type = ARG_STR },
    { .name = "name", .type = ARG_STR },
    { .name = NULL },
};

static const ArgSpec delete_internal_args[] = {
    { .name = "device", .type = ARG_STR },
    { .name = "id", .type = ARG_STR, .optional = true },
    { .name = "name", .type = ARG_STR, .optional = true },
    { .name = NULL },
};

/* qemu's SnapshotInfo */
static const ArgSpec snapshot_info_members[] = {
    { .name = "id", .type = ARG_STR },
    { .name = "name", .type = ARG_STR },
    { .name = "vm-state-size", .type = ARG_INT },
    { .name = "date-sec", .type = ARG_INT },
    { .name = "date-nsec", .type = ARG_INT },
    { .name = "vm-clock-sec", .type = ARG_INT },
    { .name = "vm-clock-nsec", .type = ARG_INT },
    { .name = "icount", .type = ARG_INT, .optional = true },
    { .name = NULL },
};

static const ArgSpec snapshot_info_ret[] = {
    { .name = "return", .type = ARG_OBJECT, .members = snapshot_info_members },
    { .name = NULL },
};

/* qsd's qmp_get_root_bs */
static BlockNode *root_node(const char *device, Error **errp)
{
    BlockNode *bs = bdrv_lookup_node(device, device, errp);

    if (bs && !bdrv_is_root_node(bs)) {
        error_setg(errp, "Need a root block node");
        return NULL;
    }
    return bs;
}

/* ---- blockdev-snapshot-internal-sync ---- */

typedef struct InternalSnapshot {
    BlockNode *bs;           /* drained from prepare to clean */
    char *device;
    BdrvSnapshotInfo sn;
    bool created;
} InternalSnapshot;

static bool internal_prepare(TransactionAction *ta, JobTxn *txn,
                             Error **errp)
{
    InternalSnapshot *st = bj_calloc(1, sizeof(*st));
    const char *device = arg_str(ta->data, "device", "");
    const char *name = arg_str(ta->data, "name", "");
    BlockNode *bs;
    Error *err = NULL;
    int ret;

    (void)txn;
    ta->state = st;
    bs = root_node(device, errp);
    if (!bs) {
        return false;
    }
    st->bs = bs;
    st->device = bj_strdup(device);
    bdrv_ref(bs);
    bdrv_drained_begin(bs);
    if (!block_job_check_node_free(bs, errp)) {
        return false;
    }
    if (bs->read_only) {
        error_setg(errp, "Device '%s' is read only", device);
        return false;
    }
    if (!bdrv_snapshot_supported(bs)) {
        error_setg(errp, "Block format '%s' used by device '%s' does not "
                   "support internal snapshots", bs->drv->name, device);
        return false;
    }
    if (!name[0]) {
        error_setg(errp, "Name is empty");
        return false;
    }
    if (bdrv_snapshot_find(bs, NULL, name, NULL)) {
        error_setg(errp, "Snapshot with name '%s' already exists on device "
                   "'%s'", name, device);
        return false;
    }
    ret = bdrv_snapshot_create(bs, name, &st->sn, &err);
    error_free(err);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to create snapshot '%s' on "
                         "device '%s'", name, device);
        return false;
    }
    st->created = true;
    return true;
}

static void internal_abort(TransactionAction *ta)
{
    InternalSnapshot *st = ta->state;
    Error *err = NULL;

    if (!st->created) {
        return;
    }
    if (bdrv_snapshot_delete(st->bs, st->sn.id, st->sn.name, NULL,
                             &err) < 0) {
        log_error("Failed to delete snapshot with id '%s' and name '%s' on "
                  "device '%s' in abort: %s", st->sn.id, st->sn.name,
                  st->device, error_get_pretty(err));
        error_free(err);
    }
}

static void internal_clean(TransactionAction *ta)
{
    InternalSnapshot *st = ta->state;

    if (st->bs) {
        bdrv_drained_end(st->bs);
        bdrv_unref(st->bs);
        st->bs = NULL;
    }
    free(st->device);
    st->device = NULL;
}

const TransactionActionType transaction_internal_snapshot_action = {
    .name = "blockdev-snapshot-internal-sync",
    .args = internal_sync_args,
    .prepare = internal_prepare,
    .abort = internal_abort,
    .clean = internal_clean,
    /* Prepare to clean drains the node itself. */
    .alone_drain = TRANSACTION_DRAIN_NONE,
};

static bool qmp_snapshot_internal_sync(json_t *args, json_t **ret,
                                       Error **errp)
{
    (void)ret;
    return transaction_run_alone(&transaction_internal_snapshot_action, args,
                                 errp);
}

/* ---- blockdev-snapshot-delete-internal-sync ---- */

static bool qmp_snapshot_delete_internal_sync(json_t *args, json_t **ret,
                                              Error **errp)
{
    const char *device = arg_str(args, "device", "");
    const char *id = arg_str(args, "id", NULL);
    const char *name = arg_str(args, "name", NULL);
    BdrvSnapshotInfo *list, sn;
    BlockNode *bs = root_node(device, errp);
    bool ok = false;
    int n;

    if (!bs) {
        return false;
    }
    if (!id && !name) {
        error_setg(errp, "Name or id must be provided");
        return false;
    }
    if (!block_job_check_node_free(bs, errp)) {
        return false;
    }
    n = bdrv_snapshot_list(bs, &list);
    free(list);
    if (n < 0) {
        error_setg_errno(errp, -n, "Failed to get a snapshot list");
        return false;
    }
    if (!bdrv_snapshot_find(bs, id, name, &sn)) {
        error_setg(errp, "Snapshot with id '%s' and name '%s' does not exist "
                   "on device '%s'", id ? id : "null", name ? name : "null",
                   device);
        return false;
    }
    bdrv_ref(bs);
    bdrv_drained_begin(bs);
    ok = bdrv_snapshot_delete(bs, id, name, NULL, errp) >= 0;
    bdrv_drained_end(bs);
    bdrv_unref(bs);
    if (!ok) {
        return false;
    }
    *ret = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "id", sn.id,
                     "name", sn.name, "vm-state-size",
                     (json_int_t)sn.vm_state_size, "date-sec",
                     (json_int_t)sn.date_sec, "date-nsec",
                     (json_int_t)sn.date_nsec, "vm-clock-sec",
                     (json_int_t)(sn.vm_clock_nsec / 1000000000ull),
                     "vm-clock-nsec",
                     (json_int_t)(sn.vm_clock_nsec % 1000000000ull));
    if (sn.icount != -1) {
        json_object_set_new(*ret, "icount", json_integer(sn.icount));
    }
    return true;
}

const QmpCommand qmp_snapshot_internal_commands[] = {
    { .name = "blockdev-snapshot-internal-sync",
      .fn = qmp_snapshot_internal_sync, .args = internal_sync_args },
    { .name = "blockdev-snapshot-delete-internal-sync",
      .fn = qmp_snapshot_delete_internal_sync, .args = delete_internal_args,
      .ret = snapshot_info_ret },
    { .name = NULL },
};
