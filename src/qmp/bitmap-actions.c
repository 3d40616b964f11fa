/* Placeholder until the transaction bitmap actions land (issue 7). */
#include "qmp/bitmap-actions.h"

#include <stdlib.h>

const ArgSpec *bitmap_action_args(const char *type)
{
    (void)type;
    return NULL;
}

BitmapAction *bitmap_action_prepare(const char *type, json_t *data,
                                    bool *ok, Error **errp)
{
    (void)data;
    error_setg(errp, "Transaction action '%s' is not supported", type);
    *ok = false;
    return NULL;
}

void bitmap_action_commit(BitmapAction *a)
{
    (void)a;
}

void bitmap_action_abort(BitmapAction *a)
{
    (void)a;
}

void bitmap_action_clean(BitmapAction *a)
{
    (void)a;
}
