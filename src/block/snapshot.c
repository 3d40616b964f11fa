/*
 * Internal snapshots through the driver table (see snapshot.h).
 */
#include "block/snapshot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "aio/coroutine.h"

bool bdrv_snapshot_supported(BlockNode *bs)
{
    return bs->drv->co_snapshot_create && bs->drv->snapshot_list;
}

int bdrv_snapshot_list(BlockNode *bs, BdrvSnapshotInfo **list)
{
    *list = NULL;
    if (!bs->drv->snapshot_list) {
        return -ENOTSUP;
    }
    return bs->drv->snapshot_list(bs, list);
}

bool bdrv_snapshot_find(BlockNode *bs, const char *id, const char *name,
                        BdrvSnapshotInfo *out)
{
    BdrvSnapshotInfo *list;
    int n = bdrv_snapshot_list(bs, &list);
    bool found = false;

    for (int i = 0; i < n && (id || name); i++) {
        if ((!id || !strcmp(list[i].id, id)) &&
            (!name || !strcmp(list[i].name, name))) {
            if (out) {
                *out = list[i];
            }
            found = true;
            break;
        }
    }
    free(list);
    return found;
}

typedef struct SnapshotCo {
    BlockNode *bs;
    const char *id, *name;
    BdrvSnapshotInfo *out;
    Error **errp;
    bool create;
    int ret;
} SnapshotCo;

static void coroutine_fn snapshot_co(void *opaque)
{
    SnapshotCo *c = opaque;

    if (c->create) {
        c->ret = c->bs->drv->co_snapshot_create(c->bs, c->name, c->out,
                                                c->errp);
    } else {
        c->ret = c->bs->drv->co_snapshot_delete(c->bs, c->id, c->name,
                                                c->out, c->errp);
    }
}

int bdrv_snapshot_create(BlockNode *bs, const char *name,
                         BdrvSnapshotInfo *out, Error **errp)
{
    SnapshotCo c = { .bs = bs, .name = name, .out = out, .errp = errp,
                     .create = true };

    if (!bs->drv->co_snapshot_create) {
        error_setg(errp, "Operation not supported");
        return -ENOTSUP;
    }
    aio_co_run_wait(bs->ctx, snapshot_co, &c);
    return c.ret;
}

int bdrv_snapshot_delete(BlockNode *bs, const char *id, const char *name,
                         BdrvSnapshotInfo *out, Error **errp)
{
    SnapshotCo c = { .bs = bs, .id = id, .name = name, .out = out,
                     .errp = errp };

    if (!bs->drv->co_snapshot_delete) {
        error_setg(errp, "Operation not supported");
        return -ENOTSUP;
    }
    aio_co_run_wait(bs->ctx, snapshot_co, &c);
    return c.ret;
}
