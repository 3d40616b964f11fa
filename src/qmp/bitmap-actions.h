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

#include <jansson.h>
#include <stdbool.h>

#include "util/argspec.h"
#include "util/error.h"

typedef struct BitmapAction BitmapAction;

/* The argument table of a bitmap action type ("block-dirty-bitmap-add"
 * ...), NULL when type is not one. */
const ArgSpec *bitmap_action_args(const char *type);

/*
 * The whole argument check of an action's data, with path ("actions[0].data")
 * in the messages as qemu's input visitor puts it: the table above, then
 * what a table cannot say (add's granularity must be a uint32: "Parameter
 * 'granularity' expects uint32_t", qemu leaves the path out there; each
 * merge source is a string or {node, name}).  Prefer it to argspec_check
 * with the bare table: with the table alone those two are still checked,
 * by prepare, without the path and only once the actions before have been
 * prepared.
 */
bool bitmap_action_check(const char *type, json_t *data, const char *path,
                         Error **errp);

/* data was checked against bitmap_action_args(type).  Returns the state
 * (never NULL); *ok says whether prepare succeeded (errp set if not). */
BitmapAction *bitmap_action_prepare(const char *type, json_t *data,
                                    bool *ok, Error **errp);
void bitmap_action_commit(BitmapAction *a);
void bitmap_action_abort(BitmapAction *a);
void bitmap_action_clean(BitmapAction *a);

/* The tables behind bitmap_action_args, for the plain commands' table
 * (cmd-bitmap.c): add, merge, and {node, name} of the others. */
extern const ArgSpec bitmap_add_args[];
extern const ArgSpec bitmap_merge_args[];
extern const ArgSpec bitmap_node_name_args[];

#endif
