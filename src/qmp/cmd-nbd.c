/*
 * NBD server and export commands: nbd-server-start/-stop,
 * block-export-add/-del, query-block-exports; and the debug pair
 * x-debug-drain-begin/-end that holds a node in a drained section so tests
 * can watch NBD requests being postponed and then completed in order.
 * They only translate JSON into calls on nbd/ and block/.
 */
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "nbd/nbd.h"
#include "qmp/commands.h"
#include "qmp/common-args.h"
#include "util/list.h"

static bool qmp_nbd_server_start(json_t *args, json_t **ret, Error **errp)
{
    return nbd_server_start_legacy(args, errp);
}

static bool qmp_nbd_server_stop(json_t *args, json_t **ret, Error **errp)
{
    return nbd_server_stop(errp);
}

static bool qmp_block_export_add(json_t *args, json_t **ret, Error **errp)
{
    return nbd_export_add(args, errp);
}

static const char *const del_modes[] = { "safe", "hard", NULL };

static const ArgSpec block_export_del_args[] = {
    { .name = "id", .type = ARG_STR },
    { .name = "mode", .type = ARG_ENUM, .optional = true, .enum_values = del_modes },
    { .name = NULL },
};

static bool qmp_block_export_del(json_t *args, json_t **ret, Error **errp)
{
    return nbd_export_del(arg_str(args, "id", NULL),
                          arg_enum(args, "mode", del_modes, 0) == 1, errp);
}

static bool qmp_query_block_exports(json_t *args, json_t **ret,
                                    Error **errp)
{
    *ret = nbd_export_query();
    return true;
}

/* ---- x-debug-drain-begin/-end ---- */

/* Drained sections opened by x-debug-drain-begin, each holding a node
 * reference, so that -end can only close what -begin opened. */
typedef struct DebugDrain {
    BlockNode *bs;
    ListHead link;
} DebugDrain;

static ListHead debug_drains = LIST_HEAD_INIT(debug_drains);

static const ArgSpec drain_args[] = {
    { .name = "node-name", .type = ARG_STR },
    { .name = NULL },
};

static BlockNode *drain_node(json_t *args, Error **errp)
{
    return qmp_find_node(NULL, arg_str(args, "node-name", NULL), errp);
}

static bool qmp_x_debug_drain_begin(json_t *args, json_t **ret, Error **errp)
{
    BlockNode *bs = drain_node(args, errp);
    DebugDrain *d;

    if (!bs) {
        return false;
    }
    d = calloc(1, sizeof(*d));
    if (!d) {
        error_setg(errp, "Out of memory");
        return false;
    }
    bdrv_ref(bs);
    d->bs = bs;
    list_add_tail(&debug_drains, &d->link);
    bdrv_drained_begin(bs);
    return true;
}

static bool qmp_x_debug_drain_end(json_t *args, json_t **ret, Error **errp)
{
    BlockNode *bs = drain_node(args, errp);
    DebugDrain *d;

    if (!bs) {
        return false;
    }
    list_for_each_entry(d, &debug_drains, link) {
        if (d->bs == bs) {
            list_del(&d->link);
            free(d);
            bdrv_drained_end(bs);
            bdrv_unref(bs);
            return true;
        }
    }
    error_setg(errp, "Node '%s' is not drained by x-debug-drain-begin",
               bs->node_name);
    return false;
}

void qmp_debug_drains_end_all(void)
{
    DebugDrain *d, *tmp;

    list_for_each_entry_safe(d, tmp, &debug_drains, link) {
        BlockNode *bs = d->bs;

        list_del(&d->link);
        free(d);
        bdrv_drained_end(bs);
        bdrv_unref(bs);
    }
}

static const ArgSpec no_args[] = { { .name = NULL } };

const QmpCommand qmp_nbd_commands[] = {
    { .name = "nbd-server-start", .fn = qmp_nbd_server_start,
      .args = nbd_server_start_args },
    { .name = "nbd-server-stop", .fn = qmp_nbd_server_stop, .args = no_args },
    { .name = "block-export-add", .fn = qmp_block_export_add,
      .args = nbd_export_add_args },
    { .name = "block-export-del", .fn = qmp_block_export_del,
      .args = block_export_del_args },
    { .name = "query-block-exports", .fn = qmp_query_block_exports,
      .args = no_args },
    { .name = "x-debug-drain-begin", .fn = qmp_x_debug_drain_begin,
      .args = drain_args },
    { .name = "x-debug-drain-end", .fn = qmp_x_debug_drain_end,
      .args = drain_args },
    { .name = NULL },
};
