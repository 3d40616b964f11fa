/*
 * blockdev-create and blockdev-snapshot.
 *
 * blockdev-create checks the BlockdevCreateOptions union here, at the
 * boundary, with the words qemu's schema visitor uses (sizes are uint64:
 * "Parameter 'options.size' expects uint64"; enum values are named by the
 * bare member; a bad BlockdevRef by the bare member too); the values
 * themselves are the job's business (job/create.c), as in qemu.
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
#include "job/blockjob.h"
#include "job/create.h"
#include "qmp/commands.h"
#include "qmp/common-args.h"
#include "qmp/snapshot.h"
#include "qmp/transaction.h"
#include "util/log.h"

/* ---- blockdev-create ---- */

/* BlockdevDriver, qemu 7.2 (what 'driver' may name at all). */
static const char *const blockdev_drivers[] = {
    "blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs", "cloop",
    "compress", "copy-before-write", "copy-on-read", "dmg", "file",
    "snapshot-access", "ftp", "ftps", "gluster", "host_cdrom", "host_device",
    "http", "https", "iscsi", "luks", "nbd", "nfs", "null-aio", "null-co",
    "nvme", "parallels", "preallocate", "qcow", "qcow2", "qed", "quorum",
    "raw", "rbd", "replication", "ssh", "throttle", "vdi", "vhdx", "vmdk",
    "vpc", "vvfat", NULL,
};

/* Drivers that can create images in qemu but that we do not have, and
 * drivers qemu-storage-daemon 7.2 is built without: qemu's answer for a
 * driver it lacks. */
static const char *const absent_drivers[] = {
    "luks", "qcow", "qed", "parallels", "vdi", "vhdx", "vmdk", "vpc",
    "gluster", "nfs", "rbd", "ssh", "blkreplay", "ftp", "ftps", "http",
    "https", "iscsi", NULL,
};

static const char *const prealloc_values[] = {
    "off", "metadata", "falloc", "full", NULL,
};
static const char *const version_values[] = { "v2", "v3", NULL };
static const char *const compression_values[] = { "zlib", "zstd", NULL };

/* uint64 and BlockdevRef members are ARG_ANY here and checked below with
 * qemu's messages. */
static const ArgSpec create_file_members[] = {
    { .name = "driver", .type = ARG_STR },
    { .name = "filename", .type = ARG_STR },
    { .name = "size", .type = ARG_ANY },
    { .name = "preallocation", .type = ARG_ENUM, .optional = true,
      .enum_values = prealloc_values },
    { .name = "nocow", .type = ARG_BOOL, .optional = true },
    { .name = "extent-size-hint", .type = ARG_ANY, .optional = true },
    { .name = NULL },
};

static const ArgSpec create_qcow2_members[] = {
    { .name = "driver", .type = ARG_STR },
    { .name = "file", .type = ARG_ANY },
    { .name = "data-file", .type = ARG_ANY, .optional = true },
    { .name = "data-file-raw", .type = ARG_BOOL, .optional = true },
    { .name = "extended-l2", .type = ARG_BOOL, .optional = true },
    { .name = "size", .type = ARG_ANY },
    { .name = "version", .type = ARG_ENUM, .optional = true,
      .enum_values = version_values },
    { .name = "backing-file", .type = ARG_STR, .optional = true },
    { .name = "backing-fmt", .type = ARG_ENUM, .optional = true,
      .enum_values = blockdev_drivers },
    { .name = "encrypt", .type = ARG_OBJECT, .optional = true, .open = true },
    { .name = "cluster-size", .type = ARG_ANY, .optional = true },
    { .name = "preallocation", .type = ARG_ENUM, .optional = true,
      .enum_values = prealloc_values },
    { .name = "lazy-refcounts", .type = ARG_BOOL, .optional = true },
    { .name = "refcount-bits", .type = ARG_INT, .optional = true },
    { .name = "compression-type", .type = ARG_ENUM, .optional = true,
      .enum_values = compression_values },
    { .name = NULL },
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

static bool check_u64(json_t *o, const char *name, Error **errp)
{
    json_t *v = json_object_get(o, name);

    if (v && !json_is_integer(v)) {
        error_setg(errp, "Parameter 'options.%s' expects uint64", name);
        return false;
    }
    return true;
}

static bool check_ref(json_t *o, const char *name, Error **errp)
{
    json_t *v = json_object_get(o, name);

    if (v && !json_is_string(v) && !json_is_object(v)) {
        error_setg(errp, "Invalid parameter type for '%s', expected: "
                   "BlockdevRef", name);
        return false;
    }
    return true;
}

/*
 * An inline BlockdevOptions (qcow2's `file`), checked against the schema
 * at the boundary as qemu does; opening it is the job's part.  The members
 * are checked as blockdev-add checks them (bdrv_check_options), and inline
 * children the same way, recursively.
 */
static bool check_inline_node(json_t *opts, const char *path, Error **errp)
{
    json_t *drv = json_object_get(opts, "driver");
    const BlockDriver *d;
    bool ok;

    if (!drv) {
        error_setg(errp, "Parameter '%s.driver' is missing", path);
        return false;
    }
    if (!json_is_string(drv)) {
        error_setg(errp, "Invalid parameter type for '%s.driver', expected: "
                   "string", path);
        return false;
    }
    d = bdrv_find_driver(json_string_value(drv));
    if (!d) {
        if (!in_list(blockdev_drivers, json_string_value(drv))) {
            error_setg(errp, "Parameter 'driver' does not accept value '%s'",
                       json_string_value(drv));
            return false;
        }
        return true;     /* a driver we lack: opening it will say so */
    }
    ok = bdrv_check_options(d, opts, path, false, errp);
    for (const ArgSpec *a = d->options; ok && a && a->name; a++) {
        json_t *child = json_object_get(opts, a->name);
        if ((a->type == ARG_REF || a->type == ARG_REF_OR_NULL) &&
            json_is_object(child)) {
            char *cpath = NULL;
            if (asprintf(&cpath, "%s.%s", path, a->name) < 0) {
                abort();
            }
            ok = check_inline_node(child, cpath, errp);
            free(cpath);
        }
    }
    return ok;
}

static bool check_inline_ref(json_t *o, const char *name, Error **errp)
{
    json_t *v = json_object_get(o, name);
    char *path = NULL;
    bool ok;

    if (!json_is_object(v)) {
        return true;
    }
    if (asprintf(&path, "options.%s", name) < 0) {
        abort();
    }
    ok = check_inline_node(v, path, errp);
    free(path);
    return ok;
}

static bool check_create_options(json_t *o, Error **errp)
{
    json_t *drv = json_object_get(o, "driver");
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
    if (!in_list(blockdev_drivers, name)) {
        error_setg(errp, "Parameter 'driver' does not accept value '%s'",
                   name);
        return false;
    }
    if (in_list(absent_drivers, name)) {
        error_setg(errp, "Block driver '%s' not found or not supported",
                   name);
        return false;
    }
    if (strcmp(name, "file") == 0) {
        return argspec_check(o, create_file_members, "options", false,
                             errp) &&
               check_u64(o, "size", errp) &&
               check_u64(o, "extent-size-hint", errp);
    }
    if (strcmp(name, "qcow2") == 0) {
        return check_ref(o, "file", errp) &&
               check_ref(o, "data-file", errp) &&
               argspec_check(o, create_qcow2_members, "options", false,
                             errp) &&
               check_u64(o, "size", errp) &&
               check_u64(o, "cluster-size", errp) &&
               check_inline_ref(o, "file", errp) &&
               check_inline_ref(o, "data-file", errp);
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
    if (strcmp(overlay->drv->name, "qcow2") != 0) {
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
    bs = qmp_find_node(node, node, errp);
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
    overlay = qmp_find_node(overlay_name, overlay_name, errp);
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
    BlockdevSnapshot *st = malloc(sizeof(*st));

    if (!st) {
        abort();
    }
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

const QmpCommand qmp_create_commands[] = {
    { .name = "blockdev-create", .fn = qmp_blockdev_create,
      .args = blockdev_create_args },
    { .name = "blockdev-snapshot", .fn = qmp_blockdev_snapshot,
      .args = blockdev_snapshot_args },
    { .name = NULL },
};
