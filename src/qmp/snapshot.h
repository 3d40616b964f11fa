/*
 * blockdev-snapshot in three steps, the transaction action
 * transaction_snapshot_action (qmp/transaction.h) runs, as qemu does:
 *
 *   prepare  drained section of the node begins; checks; the overlay gets
 *            the node as backing and takes over all of the node's parents
 *   abort    (after a successful prepare) parents go back, backing detached
 *   clean    the drained section ends; always called after prepare
 *
 * The blockdev-snapshot command is prepare + clean.  Main loop.
 */
#ifndef BJ_QMP_SNAPSHOT_H
#define BJ_QMP_SNAPSHOT_H

#include <stdbool.h>

#include "block/block.h"

typedef struct BlockdevSnapshot {
    BlockNode *bs;           /* the node (a reference), NULL if not found */
    BlockNode *overlay;
    BlockChild *backing;     /* overlay -> bs, once in place */
} BlockdevSnapshot;

bool blockdev_snapshot_prepare(BlockdevSnapshot *st, const char *node,
                               const char *overlay, Error **errp);
void blockdev_snapshot_abort(BlockdevSnapshot *st);
void blockdev_snapshot_clean(BlockdevSnapshot *st);

#endif
