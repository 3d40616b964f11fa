/*
 * The block-dirty-bitmap-{add,remove,clear,enable,disable,merge} actions of
 * the transaction command, in prepare / commit / abort / clean steps (the
 * plain commands in cmd-bitmap.c are the same steps run back to back).
 *
 * prepare does the change (or checks it can be done) so that the actions
 * after it in the same transaction see it; abort undoes it exactly (a
 * cleared bitmap gets its bits back, an added one is released, a merged
 * target its old bits, enable/disable the old state); commit makes it
 * final (remove releases the bitmap only here); clean frees the state and
 * is always called last, after commit or abort, or after a failed
 * prepare.  Messages are qemu-storage-daemon 7.2's.  Main loop.
 *
 * remove's prepare marks the bitmap busy until commit or abort, as qemu
 * does: a later action of the same transaction that names it is refused
 * ("Bitmap 'x' is currently in use by another operation and cannot be
 * used"; add of the same name: "Bitmap already exists: x").
 *
 * The caller refuses completion-mode grouped before calling prepare, in
 * action order, as for blockdev-snapshot: "Action 'block-dirty-bitmap-add'
 * does not support Transaction property completion-mode = grouped".
 * Where qemu 7.2 crashes or changes a bitmap after a failed prepare (an
 * enable refused or not found, under grouped or not), we leave it as it
 * was.
 */
#ifndef BJ_QMP_BITMAP_ACTIONS_H
#define BJ_QMP_BITMAP_ACTIONS_H

#include "util/argspec.h"

/* The action types themselves (transaction_bitmap_*_action) are declared
 * in qmp/transaction.h, beside the others. */

/* Their argument tables, for the plain commands' table (cmd-bitmap.c):
 * add, merge, and {node, name} of the others.  What a table cannot say
 * (add's granularity must be a uint32: "Parameter 'granularity' expects
 * uint32_t", qemu leaves the path out there; each merge source is a
 * string or {node, name}) the action type's check says, with the path. */
extern const ArgSpec bitmap_add_args[];
extern const ArgSpec bitmap_merge_args[];
extern const ArgSpec bitmap_node_name_args[];

#endif
