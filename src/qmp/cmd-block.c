/*
 * Block graph commands: blockdev-add, blockdev-del, query-named-block-nodes,
 * x-blockdev-set-iothread.  They only translate JSON into calls on block/.
 */
#include "aio/iothread.h"
#include "block/block.h"
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

static const ArgSpec set_iothread_args[] = {
    { .name = "node-name", .type = ARG_STR },
    { .name = "iothread", .type = ARG_ANY },      /* StrOrNull */
    { .name = "force", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

/* Moves a node and everything connected to it into an iothread (a string)
 * or back to the main loop (null), drained. */
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
    /* Protects against accidents, as qemu does: a node with a user that
     * is not a node (an export, a job) moves only with force. */
    if (!arg_bool(args, "force", false) && !bdrv_is_unused_root(bs)) {
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
    return bdrv_move_unused_to_context(bs, ctx, errp);
}

static const ArgSpec no_args[] = { { .name = NULL } };

const QmpCommand qmp_block_commands[] = {
    { .name = "blockdev-add", .fn = qmp_blockdev_add, .args = no_args,
      .args_open = true },
    { .name = "blockdev-del", .fn = qmp_blockdev_del,
      .args = blockdev_del_args },
    { .name = "query-named-block-nodes", .fn = qmp_query_named_block_nodes,
      .args = query_named_block_nodes_args },
    { .name = "x-blockdev-set-iothread", .fn = qmp_x_blockdev_set_iothread,
      .args = set_iothread_args },
    { .name = NULL },
};
