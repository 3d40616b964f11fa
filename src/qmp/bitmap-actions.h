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

/* data was checked against bitmap_action_args(type).  Returns the state
 * (never NULL); *ok says whether prepare succeeded (errp set if not). */
BitmapAction *bitmap_action_prepare(const char *type, json_t *data,
                                    bool *ok, Error **errp);
void bitmap_action_commit(BitmapAction *a);
void bitmap_action_abort(BitmapAction *a);
void bitmap_action_clean(BitmapAction *a);

#endif
