/*
 * Block graph commands: blockdev-add, blockdev-del, query-named-block-nodes,
 * block_resize, query-blockstats, block-set-write-threshold, query-block,
 * x-debug-query-block-graph, change-backing-file, x-blockdev-set-iothread.
 * They only translate JSON into calls on block/.
 */
#include <string.h>

#include "aio/iothread.h"
#include "block/backing.h"
#include "block/block.h"
#include "block/chain.h"
#include "block/reopen.h"
#include "job/blockjob.h"
#include "qmp/commands.h"

static bool qmp_blockdev_add(json_t *args, json_t **ret, Error **errp)
{
    /* BlockdevOptions is a union on "driver": the block layer checks the
     * members of the branch it opens. */
    return bdrv_open_blockdev(args, false, errp) != NULL;
}

static const ArgSpec blockdev_del_args[] = {
    { .name = "node-name", .type = ARG_STR },
    { .name = NULL },
};

static bool qmp_blockdev_del(json_t *args, json_t **ret, Error **errp)
{
    return bdrv_del_blockdev(arg_str(args, "node-name", NULL), errp);
}

static const ArgSpec query_named_block_nodes_args[] = {
    { .name = "flat", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

static bool qmp_query_named_block_nodes(json_t *args, json_t **ret,
                                        Error **errp)
{
    *ret = bdrv_query_named_block_nodes(arg_bool(args, "flat", false));
    return true;
}

/* ---- block_resize ---- */

static const ArgSpec block_resize_args[] = {
    { .name = "device", .type = ARG_STR, .optional = true },
    { .name = "node-name", .type = ARG_STR, .optional = true },
    { .name = "size", .type = ARG_INT },
    { .name = NULL },
};

static bool qmp_block_resize(json_t *args, json_t **ret, Error **errp)
{
    /* qsd has no devices: a device name never matches, the node name is
     * looked up ("" when absent). */
    BlockNode *bs = bdrv_lookup_node(arg_str(args, "device", NULL),
                                     arg_str(args, "node-name", ""), errp);
    int64_t size = arg_int(args, "size", 0);

    if (!bs) {
        return false;
    }
    if (size < 0) {
        error_setg(errp, "Parameter 'size' expects a >0 size");
        return false;
    }
    if (!block_job_check_node_free(bs, NULL)) {
        /* qemu names the device argument here, "(null)" when absent. */
        const char *device = arg_str(args, "device", NULL);
        error_setg(errp, "Device '%s' is in use", device ? device : "(null)");
        return false;
    }
    return bdrv_resize(bs, size, errp);
}

/* ---- query-blockstats, block-set-write-threshold ---- */

static const ArgSpec query_blockstats_args[] = {
    { .name = "query-nodes", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

static bool qmp_query_blockstats(json_t *args, json_t **ret, Error **errp)
{
    *ret = bdrv_query_blockstats(arg_bool(args, "query-nodes", false));
    return true;
}

static const ArgSpec write_threshold_args[] = {
    { .name = "node-name", .type = ARG_STR },
    { .name = "write-threshold", .type = ARG_U64 },
    { .name = NULL },
};

static bool qmp_block_set_write_threshold(json_t *args, json_t **ret,
                                          Error **errp)
{
    const char *name = arg_str(args, "node-name", "");
    BlockNode *bs = bdrv_find_node(name);

    if (!bs) {
        error_setg(errp, "Device '%s' not found", name);
        return false;
    }
    bdrv_set_write_threshold(bs, arg_u64(args, "write-threshold", 0));
    return true;
}

/* ---- query-block, x-debug-query-block-graph ---- */

static bool qmp_query_block(json_t *args, json_t **ret, Error **errp)
{
    /* BlockInfo describes devices (BlockBackends with a name or a guest
     * device); the storage daemon has none, so qsd answers []. */
    *ret = json_array();
    return true;
}

static bool qmp_x_debug_query_block_graph(json_t *args, json_t **ret,
                                          Error **errp)
{
    *ret = bdrv_query_block_graph();
    return true;
}

/* ---- blockdev-reopen ---- */

/* Each element is BlockdevOptions, checked by the block layer (a union on
 * "driver", as blockdev-add's). */
static const ArgSpec blockdev_reopen_args[] = {
    { .name = "options", .type = ARG_ARRAY, .members = (const ArgSpec[]) {
        { .name = "", .type = ARG_OBJECT, .open = true,
          .members = qmp_blockdev_options_members },
        { .name = NULL } } },
    { .name = NULL },
};

/* qemu freezes the backing links a stream or commit job works across: a
 * link both of whose ends such a job uses. */
static bool backing_not_frozen(BlockNode *bs, Error **errp)
{
    Job *job = block_job_user_of(bs);

    if (job && (!strcmp(job->driver->type, "stream") ||
                !strcmp(job->driver->type, "commit")) &&
        block_job_user_of(bs->backing->node) == job) {
        error_setg(errp, "Cannot change frozen 'backing' link from '%s' to "
                   "'%s'", bs->node_name, bs->backing->node->node_name);
        return false;
    }
    return true;
}

static bool qmp_blockdev_reopen(json_t *args, json_t **ret, Error **errp)
{
    return bdrv_reopen_blockdev(json_object_get(args, "options"),
                                backing_not_frozen, errp);
}

/* ---- change-backing-file ---- */

static const ArgSpec change_backing_file_args[] = {
    { .name = "device", .type = ARG_STR },
    { .name = "image-node-name", .type = ARG_STR },
    { .name = "backing-file", .type = ARG_STR },
    { .name = NULL },
};

/* Rewrites the backing file name stored in image-node-name's image (a node
 * in the chain of the root node `device`); the graph is unchanged.  Checks
 * in qsd's order, with its words. */
static bool qmp_change_backing_file(json_t *args, json_t **ret, Error **errp)
{
    const char *device = arg_str(args, "device", "");
    const char *file = arg_str(args, "backing-file", "");
    BlockNode *bs = bdrv_lookup_node(device, device, errp);
    BlockNode *image;
    Error *err = NULL;

    if (!bs) {
        return false;
    }
    if (!bdrv_is_root_node(bs)) {
        error_setg(errp, "Need a root block node");
        return false;
    }
    image = bdrv_lookup_node(NULL, arg_str(args, "image-node-name", ""),
                             errp);
    if (!image) {
        return false;
    }
    if (!block_chain_next(image)) {
        error_setg(errp, "not allowing backing file change on an image "
                   "without a backing file");
        return false;
    }
    if (!block_job_check_node_free(bs, errp)) {
        return false;
    }
    if (!block_chain_contains(bs, image)) {
        error_setg(errp, "'%s' and image file are not in the same chain",
                   device);
        return false;
    }
    bool ro = image->read_only;
    if (ro && !bdrv_reopen_set_read_only(image, false, errp)) {
        return false;
    }
    /* An empty name stores none (and no format). */
    int r = block_change_backing_file(image, *file ? file : NULL,
                                      *file ? image->drv->name : NULL);
    if (r < 0) {
        error_setg_errno(&err, -r, "Could not change backing file to '%s'",
                         file);
    }
    if (ro) {
        /* Back as it was; a failure here is reported if nothing else is. */
        bdrv_reopen_set_read_only(image, true, err ? NULL : &err);
    }
    if (err) {
        error_propagate(errp, err);
        return false;
    }
    return true;
}

static const ArgSpec set_iothread_args[] = {
    { .name = "node-name", .type = ARG_STR },
    { .name = "iothread", .type = ARG_ANY },      /* StrOrNull */
    { .name = "force", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

/* Moves a node and everything connected to it into an iothread (a string)
 * or back to the main loop (null), drained: the exports and jobs on them
 * follow, NBD clients stay connected (bdrv_move_to_context). */
static bool qmp_x_blockdev_set_iothread(json_t *args, json_t **ret,
                                        Error **errp)
{
    const char *name = arg_str(args, "node-name", NULL);
    json_t *iothread = json_object_get(args, "iothread");
    AioContext *ctx = aio_main_context();
    BlockNode *bs;

    if (!json_is_string(iothread) && !json_is_null(iothread)) {
        error_setg(errp, "Invalid parameter type for 'iothread', expected: "
                   "StrOrNull");
        return false;
    }
    bs = bdrv_find_node(name);
    if (!bs) {
        error_setg(errp, "Failed to find node with node-name='%s'", name);
        return false;
    }
    /* Protects against accidents, as qemu does: a node with a user qemu
     * calls a BlockBackend (an export, a job's main node or I/O edge)
     * moves only with force. */
    if (!arg_bool(args, "force", false) && bdrv_has_backend(bs)) {
        error_setg(errp, "Node %s is associated with a BlockBackend and could "
                   "be in use (use force=true to override this check)", name);
        return false;
    }
    if (json_is_string(iothread)) {
        IOThread *t = iothread_find(json_string_value(iothread));
        if (!t) {
            error_setg(errp, "Cannot find iothread %s",
                       json_string_value(iothread));
            return false;
        }
        ctx = iothread_get_context(t);
    }
    return bdrv_move_to_context(bs, ctx, errp);
}

static const ArgSpec no_args[] = { { .name = NULL } };

const QmpCommand qmp_block_commands[] = {
    { .name = "blockdev-add", .fn = qmp_blockdev_add, .args = no_args,
      .args_open = true, .args_blockdev = true },
    { .name = "blockdev-del", .fn = qmp_blockdev_del,
      .args = blockdev_del_args },
    { .name = "query-named-block-nodes", .fn = qmp_query_named_block_nodes,
      .args = query_named_block_nodes_args, .ret = qmp_ret_array },
    { .name = "block_resize", .fn = qmp_block_resize,
      .args = block_resize_args },
    { .name = "query-blockstats", .fn = qmp_query_blockstats,
      .args = query_blockstats_args, .ret = qmp_ret_array },
    { .name = "blockdev-reopen", .fn = qmp_blockdev_reopen,
      .args = blockdev_reopen_args },
    { .name = "change-backing-file", .fn = qmp_change_backing_file,
      .args = change_backing_file_args },
    { .name = "query-block", .fn = qmp_query_block, .args = no_args,
      .ret = qmp_ret_array },
    { .name = "x-debug-query-block-graph",
      .fn = qmp_x_debug_query_block_graph, .args = no_args,
      .ret = qmp_ret_any, .features = qmp_features_unstable },
    { .name = "block-set-write-threshold",
      .fn = qmp_block_set_write_threshold, .args = write_threshold_args },
    { .name = "x-blockdev-set-iothread", .fn = qmp_x_blockdev_set_iothread,
      .args = set_iothread_args, .features = qmp_features_unstable },
    { .name = NULL },
};
