/*
 * Block graph commands: blockdev-add, blockdev-del, query-named-block-nodes.
 * They only translate JSON into calls on block/.
 */
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

static const ArgSpec no_args[] = { { .name = NULL } };

const QmpCommand qmp_block_commands[] = {
    { .name = "blockdev-add", .fn = qmp_blockdev_add, .args = no_args,
      .args_open = true, .args_blockdev = true },
    { .name = "blockdev-del", .fn = qmp_blockdev_del,
      .args = blockdev_del_args },
    { .name = "query-named-block-nodes", .fn = qmp_query_named_block_nodes,
      .args = query_named_block_nodes_args, .ret = qmp_ret_array },
    { .name = NULL },
};
