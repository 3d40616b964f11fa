/*
 * Named dirty bitmap commands: block-dirty-bitmap-add, -remove, -clear,
 * -enable, -disable, -merge and x-debug-block-dirty-bitmap-sha256, with
 * qemu-storage-daemon 7.2's defaults and messages.
 *
 * Each block-dirty-bitmap-* command is its transaction action
 * (bitmap-actions.c) run alone by the engine (transaction.c): prepare,
 * then commit, then clean.  The checks and the change live there, once.
 */
#include <stdlib.h>

#include "block/block.h"
#include "block/dirty-bitmap-named.h"
#include "qmp/bitmap-actions.h"
#include "qmp/commands.h"
#include "qmp/transaction.h"

/* Each command is its action alone (the iothread nodes drained: see
 * bitmap-actions.c). */
#define BITMAP_COMMAND(fn, type)                                        \
    static bool fn(json_t *args, json_t **ret, Error **errp)            \
    {                                                                   \
        (void)ret;                                                      \
        return transaction_run_alone(&type, args, errp);                \
    }

BITMAP_COMMAND(qmp_bitmap_add, transaction_bitmap_add_action)
BITMAP_COMMAND(qmp_bitmap_remove, transaction_bitmap_remove_action)
BITMAP_COMMAND(qmp_bitmap_clear, transaction_bitmap_clear_action)
BITMAP_COMMAND(qmp_bitmap_enable, transaction_bitmap_enable_action)
BITMAP_COMMAND(qmp_bitmap_disable, transaction_bitmap_disable_action)
BITMAP_COMMAND(qmp_bitmap_merge, transaction_bitmap_merge_action)

/*
 * The bitmaps of a node in an iothread are marked there, by every write;
 * a command changes (or reads) them from the main thread only while such
 * nodes are drained: no request in flight, none starting.
 */
static bool qmp_bitmap_sha256(json_t *args, json_t **ret, Error **errp)
{
    BdrvDrainedSet iothread_nodes;
    BdrvDirtyBitmap *bm;

    bdrv_drained_set_begin(&iothread_nodes, true);
    bm = bdrv_dirty_bitmap_lookup(arg_str(args, "node", NULL),
                                  arg_str(args, "name", NULL), NULL, errp);
    if (bm) {
        char *hex = bdrv_dirty_bitmap_sha256(bm);
        *ret = json_pack("{s:s}", "sha256", hex);
        free(hex);
    }
    bdrv_drained_set_end(&iothread_nodes);
    return bm != NULL;
}

static const ArgSpec sha256_members[] = {
    { .name = "sha256", .type = ARG_STR },
    { .name = NULL },
};
static const ArgSpec sha256_ret[] = {
    { .name = "return", .type = ARG_OBJECT, .members = sha256_members },
    { .name = NULL },
};

const QmpCommand qmp_bitmap_commands[] = {
    { .name = "block-dirty-bitmap-add", .fn = qmp_bitmap_add,
      .args = bitmap_add_args },
    { .name = "block-dirty-bitmap-remove", .fn = qmp_bitmap_remove,
      .args = bitmap_node_name_args },
    { .name = "block-dirty-bitmap-clear", .fn = qmp_bitmap_clear,
      .args = bitmap_node_name_args },
    { .name = "block-dirty-bitmap-enable", .fn = qmp_bitmap_enable,
      .args = bitmap_node_name_args },
    { .name = "block-dirty-bitmap-disable", .fn = qmp_bitmap_disable,
      .args = bitmap_node_name_args },
    { .name = "block-dirty-bitmap-merge", .fn = qmp_bitmap_merge,
      .args = bitmap_merge_args },
    { .name = "x-debug-block-dirty-bitmap-sha256", .fn = qmp_bitmap_sha256,
      .args = bitmap_node_name_args, .ret = sha256_ret,
      .features = qmp_features_unstable },
    { .name = NULL },
};
