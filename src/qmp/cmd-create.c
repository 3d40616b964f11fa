/*
 * blockdev-create and blockdev-snapshot.
 *
 * blockdev-create checks the BlockdevCreateOptions union here, at the
 * boundary, with the words qemu's schema visitor uses (sizes are uint64:
 * "Parameter 'options.size' expects uint64"; enum values are named by the
 * bare member; a bad BlockdevRef by the bare member too): the union tag
 * here, the driver's members by its create_check (block/create.h); the
 * values themselves are the job's business (job/create.c), as in qemu.
 *
 * blockdev-snapshot puts a fresh overlay (opened with backing: null) on top
 * of a node, live: inside a drained section of the node the overlay gets
 * the node as its backing and takes over every parent of the node (exports
 * and format nodes above it), so new writes land in the overlay.  The image
 * headers are not touched, as in qemu.  Its steps (qmp/snapshot.h) make
 * a transaction action (qmp/transaction.h); the command is that action run
 * alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "block/create.h"
#include "job/blockjob.h"
#include "job/amend.h"
#include "job/create.h"
#include "qmp/commands.h"
#include "qmp/common-args.h"
#include "qmp/snapshot.h"
#include "qmp/transaction.h"
#include "util/alloc.h"
#include "util/log.h"

/* ---- blockdev-create ---- */

/* Drivers that can create images in qemu but that we do not have, and
 * drivers qemu-storage-daemon 7.2 is built without: qemu's answer for a
 * driver it lacks. */
static const char *const absent_drivers[] = {
    "luks", "qcow", "qed", "parallels", "vdi", "vhdx", "vmdk", "vpc",
    "gluster", "nfs", "ssh", "blkreplay", "ftp", "ftps", "http",
    "https", "iscsi", NULL,
};

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++) {
        if (strcmp(*list, s) == 0) {
            return true;
        }
    }
    return false;
}

static bool check_create_options(json_t *o, Error **errp)
{
    json_t *drv = json_object_get(o, "driver");
    const BlockDriver *d;
    const char *name;

    if (!drv) {
        error_setg(errp, "Parameter 'options.driver' is missing");
        return false;
    }
    if (!json_is_string(drv)) {
        error_setg(errp, "Invalid parameter type for 'options.driver', "
                   "expected: string");
        return false;
    }
    name = json_string_value(drv);
    if (!in_list(bdrv_blockdev_driver_names, name)) {
        error_setg(errp, "Parameter 'driver' does not accept value '%s'",
                   name);
        return false;
    }
    d = bdrv_find_driver(name);
    if (!d && in_list(absent_drivers, name)) {
        error_setg(errp, "Block driver '%s' not found or not supported",
                   name);
        return false;
    }
    if (d && d->create_check && d->co_create) {
        return d->create_check(o, errp);
    }
    error_setg(errp, "Driver does not support blockdev-create");
    return false;
}

/* job-id is all of the common job options blockdev-create takes, and it
 * is required here. */
static const ArgSpec blockdev_create_args[] = {
    { .name = "job-id", .type = ARG_STR },
    { .name = "options", .type = ARG_OBJECT, .open = true },
    { .name = NULL },
};

static bool qmp_blockdev_create(json_t *args, json_t **ret, Error **errp)
{
    json_t *opts = json_object_get(args, "options");
    BlockJobOptions o;

    if (!check_create_options(opts, errp)) {
        return false;
    }
    qmp_job_options(args, &o);
    return create_job_start(o.job_id, opts, errp) != NULL;
}

/* ---- x-blockdev-amend ---- */

static const ArgSpec amend_args[] = {
    { .name = "job-id", .type = ARG_STR },
    { .name = "node-name", .type = ARG_STR },
    { .name = "options", .type = ARG_OBJECT, .open = true },
    { .name = "force", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

static const ArgSpec amend_driver_only[] = {
    { .name = "driver", .type = ARG_STR },
    { .name = NULL },
};

/* The BlockdevAmendOptions union's member types (qsd checks them before
 * anything else): "driver", and the driver's branch. */
static const BlockDriver *check_amend_options(json_t *opts, Error **errp)
{
    const BlockDriver *drv;
    json_t *d = json_object_get(opts, "driver");

    if (!d) {
        error_setg(errp, "Parameter 'options.driver' is missing");
        return NULL;
    }
    if (!json_is_string(d)) {
        error_setg(errp, "Invalid parameter type for 'options.driver', "
                   "expected: string");
        return NULL;
    }
    drv = bdrv_find_driver(json_string_value(d));
    if (!drv) {
        error_setg(errp, "Parameter 'options.driver' does not accept "
                   "value '%s'", json_string_value(d));
        return NULL;
    }
    if (drv->amend_check ? !drv->amend_check(opts, errp)
                         : !argspec_check(opts, amend_driver_only, "options",
                                          false, errp)) {
        return NULL;
    }
    return drv;
}

/* Checks in qsd 7.2's order, with its words. */
static bool qmp_x_blockdev_amend(json_t *args, json_t **ret, Error **errp)
{
    json_t *opts = json_object_get(args, "options");
    const BlockDriver *drv = check_amend_options(opts, errp);
    BlockNode *bs;

    if (!drv) {
        return false;
    }
    bs = bdrv_lookup_node(NULL, arg_str(args, "node-name", ""), errp);
    if (!bs) {
        return false;
    }
    if (bs->drv != drv) {
        error_setg(errp, "x-blockdev-amend doesn't support changing the "
                   "block driver");
        return false;
    }
    if (!drv->co_amend) {
        error_setg(errp, "Driver does not support x-blockdev-amend");
        return false;
    }
    return amend_job_start(arg_str(args, "job-id", ""), bs, opts,
                           arg_bool(args, "force", false), errp) != NULL;
}

/* ---- blockdev-snapshot ---- */

/* Is `node` reachable from `top` going down the graph (or top itself)? */
static bool reaches(BlockNode *top, BlockNode *node)
{
    BlockChild *c;

    if (top == node) {
        return true;
    }
    list_for_each_entry(c, &top->children, child_link) {
        if (reaches(c->node, node)) {
            return true;
        }
    }
    return false;
}

/* The checks qemu makes on the node being snapshotted (op blockers; a
 * job's comes before a backing parent's, as qemu lists the newest first). */
static bool check_node_free(BlockNode *bs, Error **errp)
{
    BlockChild *c;

    if (!block_job_check_node_free(bs, errp)) {
        return false;
    }
    list_for_each_entry(c, &bs->parents, parent_link) {
        BlockNode *parent = c->opaque;
        if (c->klass->parent_is_node && parent->backing == c) {
            error_setg(errp, "Node '%s' is busy: node is used as backing hd "
                       "of '%s'", bs->node_name, parent->node_name);
            return false;
        }
    }
    return true;
}

static bool check_overlay(BlockNode *bs, BlockNode *overlay, Error **errp)
{
    BlockChild *c;

    list_for_each_entry(c, &overlay->parents, parent_link) {
        if (!c->klass->parent_is_node) {
            error_setg(errp, "The overlay is already in use");
            return false;
        }
    }
    if (overlay->backing) {
        error_setg(errp, "The overlay already has a backing image");
        return false;
    }
    if (!overlay->drv->supports_backing) {
        error_setg(errp, "The overlay does not support backing images");
        return false;
    }
    if (reaches(bs, overlay)) {
        error_setg(errp, "Making '%s' a backing child of '%s' would create a "
                   "cycle", bs->node_name, overlay->node_name);
        return false;
    }
    return true;
}

/*
 * The node's drained section spans prepare to clean.  Only the node is
 * drained: once the overlay backs onto it, the overlay is one of its
 * parents and so is quiesced by the same section, and ending it releases
 * exactly what beginning it took, wherever the parents have moved.
 */
bool blockdev_snapshot_prepare(BlockdevSnapshot *st, const char *node,
                               const char *overlay_name, Error **errp)
{
    BlockNode *bs, *overlay;
    BlockChild *backing;

    memset(st, 0, sizeof(*st));
    bs = bdrv_lookup_node(node, node, errp);
    if (!bs) {
        return false;
    }
    /* The backing edge and the moved parents hold references; ours keeps
     * bs alive across the section whatever happens to them. */
    bdrv_ref(bs);
    st->bs = bs;
    bdrv_drained_begin(bs);

    if (!check_node_free(bs, errp)) {
        return false;
    }
    if (!bs->read_only && bdrv_flush(bs) < 0) {
        error_setg(errp, "An IO error has occurred");
        return false;
    }
    overlay = bdrv_lookup_node(overlay_name, overlay_name, errp);
    if (!overlay || !check_overlay(bs, overlay, errp)) {
        return false;
    }
    backing = bdrv_attach_child(overlay, bs, "backing", BLK_ROLE_COW, errp);
    if (!backing) {
        return false;
    }
    if (!bdrv_replace_node(bs, overlay, errp)) {
        bdrv_detach_child(backing);
        return false;
    }
    st->overlay = overlay;
    st->backing = backing;
    return true;
}

void blockdev_snapshot_abort(BlockdevSnapshot *st)
{
    CLEANUP_ERROR Error *err = NULL;

    if (!st->backing) {
        return;
    }
    /* Every parent the overlay took goes back; it had none of its own
     * that could object (it was not in use). */
    if (!bdrv_replace_node(st->overlay, st->bs, &err)) {
        log_error("blockdev-snapshot: undoing: %s", error_get_pretty(err));
    }
    bdrv_detach_child(st->backing);
    st->backing = NULL;
    st->overlay = NULL;
}

void blockdev_snapshot_clean(BlockdevSnapshot *st)
{
    if (st->bs) {
        bdrv_drained_end(st->bs);
        bdrv_unref(st->bs);
        st->bs = NULL;
    }
}

static const ArgSpec blockdev_snapshot_args[] = {
    { .name = "node", .type = ARG_STR },
    { .name = "overlay", .type = ARG_STR },
    { .name = NULL },
};

static bool snapshot_prepare(TransactionAction *ta, JobTxn *txn,
                             Error **errp)
{
    BlockdevSnapshot *st = bj_malloc(sizeof(*st));

    ta->state = st;
    return blockdev_snapshot_prepare(st, arg_str(ta->data, "node", ""),
                                     arg_str(ta->data, "overlay", ""), errp);
}

static void snapshot_abort(TransactionAction *ta)
{
    blockdev_snapshot_abort(ta->state);
}

static void snapshot_clean(TransactionAction *ta)
{
    blockdev_snapshot_clean(ta->state);
}

const TransactionActionType transaction_snapshot_action = {
    .name = "blockdev-snapshot",
    .args = blockdev_snapshot_args,
    .prepare = snapshot_prepare,
    .abort = snapshot_abort,
    .clean = snapshot_clean,
    /* Prepare to clean drains the node itself. */
    .alone_drain = TRANSACTION_DRAIN_NONE,
};

static bool qmp_blockdev_snapshot(json_t *args, json_t **ret, Error **errp)
{
    return transaction_run_alone(&transaction_snapshot_action, args, errp);
}

/* ---- blockdev-snapshot-sync ---- */

static const char *const snapshot_mode_names[] = { "existing",
                                                   "absolute-paths", NULL };

static const ArgSpec blockdev_snapshot_sync_args[] = {
    { .name = "device", .type = ARG_STR, .optional = true },
    { .name = "node-name", .type = ARG_STR, .optional = true },
    { .name = "snapshot-file", .type = ARG_STR },
    { .name = "snapshot-node-name", .type = ARG_STR, .optional = true },
    { .name = "format", .type = ARG_STR, .optional = true },
    { .name = "mode", .type = ARG_ENUM, .optional = true,
      .enum_values = snapshot_mode_names },
    { .name = NULL },
};

/* The state of one blockdev-snapshot-sync action. */
typedef struct SnapshotSync {
    BlockdevSnapshot st;
    BlockNode *overlay;      /* opened by prepare (the monitor's until clean) */
} SnapshotSync;

/*
 * blockdev-add of a new overlay image (created first, backing onto the
 * node's file name, unless mode is existing) and blockdev-snapshot onto
 * it, with qsd's checks in its order.  As in qsd the overlay is not the
 * monitor's: the node's parents (an export, a job) move onto it and hold
 * it; a node with none gets an overlay that is closed at once (clean).
 * (qsd has no devices: a device name is never found, so
 * snapshot-node-name is always needed.)
 */
static bool snapshot_sync_prepare(TransactionAction *ta, JobTxn *txn,
                                  Error **errp)
{
    SnapshotSync *ss = bj_calloc(1, sizeof(*ss));
    json_t *d = ta->data;
    const char *node_name = arg_str(d, "node-name", NULL);
    const char *file = arg_str(d, "snapshot-file", "");
    const char *new_name = arg_str(d, "snapshot-node-name", NULL);
    const char *fmt = arg_str(d, "format", "qcow2");
    bool existing = arg_enum(d, "mode", snapshot_mode_names, 1) == 0;
    BlockNode *bs = bdrv_lookup_node(arg_str(d, "device", NULL),
                                     node_name ? node_name : "", errp);

    ta->state = ss;
    if (!bs || !check_node_free(bs, errp)) {
        return false;
    }
    if (!new_name) {
        error_setg(errp, "New overlay node-name missing");
        return false;
    }
    if (bdrv_find_node(new_name)) {
        error_setg(errp, "New overlay node-name already in use");
        return false;
    }
    if (!existing &&
        !bdrv_img_create(file, fmt, (uint64_t)bdrv_getlength(bs),
                         bs->filename, bs->drv->name, errp)) {
        return false;
    }
    const BlockDriver *drv = bdrv_find_driver(fmt);
    if (!drv) {
        error_setg(errp, "Unknown driver '%s'", fmt);
        return false;
    }
    /* Opened without its backing (the node becomes it). */
    json_t *opts = json_pack("{s:s, s:s, s:{s:s, s:s}}", "driver", fmt,
                             "node-name", new_name, "file", "driver", "file",
                             "filename", file);
    if (drv->supports_backing) {
        json_object_set_new(opts, "backing", json_null());
    }
    ss->overlay = bdrv_open_blockdev(opts, false, errp);
    json_decref(opts);
    return ss->overlay &&
           blockdev_snapshot_prepare(&ss->st, bs->node_name, new_name, errp);
}

static void snapshot_sync_abort(TransactionAction *ta)
{
    SnapshotSync *ss = ta->state;

    blockdev_snapshot_abort(&ss->st);
}

static void snapshot_sync_clean(TransactionAction *ta)
{
    SnapshotSync *ss = ta->state;

    blockdev_snapshot_clean(&ss->st);
    if (ss->overlay) {
        /* Held by the parents it took over, or gone. */
        bdrv_disown(ss->overlay);
        ss->overlay = NULL;
    }
}

const TransactionActionType transaction_snapshot_sync_action = {
    .name = "blockdev-snapshot-sync",
    .args = blockdev_snapshot_sync_args,
    .prepare = snapshot_sync_prepare,
    .abort = snapshot_sync_abort,
    .clean = snapshot_sync_clean,
    /* Prepare to clean drains the node itself. */
    .alone_drain = TRANSACTION_DRAIN_NONE,
};

static bool qmp_blockdev_snapshot_sync(json_t *args, json_t **ret,
                                       Error **errp)
{
    return transaction_run_alone(&transaction_snapshot_sync_action, args,
                                 errp);
}

const QmpCommand qmp_create_commands[] = {
    { .name = "blockdev-create", .fn = qmp_blockdev_create,
      .args = blockdev_create_args },
    { .name = "blockdev-snapshot", .fn = qmp_blockdev_snapshot,
      .args = blockdev_snapshot_args },
    { .name = "blockdev-snapshot-sync", .fn = qmp_blockdev_snapshot_sync,
      .args = blockdev_snapshot_sync_args },
    { .name = "x-blockdev-amend", .fn = qmp_x_blockdev_amend,
      .args = amend_args, .features = qmp_features_unstable },
    { .name = NULL },
};
