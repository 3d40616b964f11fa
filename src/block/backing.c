/*
 * Backing links: re-pointing the backing edge of a node and rewriting the
 * name its image stores (see backing.h).
 */
#include "block/backing.h"

#include "util/log.h"

typedef struct ChangeBackingCo {
    BlockNode *bs;
    const char *file, *fmt;
    int ret;
} ChangeBackingCo;

static void coroutine_fn change_backing_co(void *opaque)
{
    ChangeBackingCo *c = opaque;
    c->ret = c->bs->drv->co_change_backing_file(c->bs, c->file, c->fmt);
}

int block_change_backing_file(BlockNode *bs, const char *file,
                              const char *fmt)
{
    if (!bs->drv->co_change_backing_file) {
        return 0;
    }
    ChangeBackingCo c = { .bs = bs, .file = file, .fmt = fmt };
    aio_co_run_wait(bs->ctx, change_backing_co, &c);
    return c.ret;
}

bool block_set_backing(BlockNode *bs, BlockNode *base, Error **errp)
{
    BlockNode *old = bs->backing ? bs->backing->node : NULL;
    bool ok = true;

    if (old == base) {
        return true;
    }
    bdrv_drained_begin(bs);
    if (bs->backing) {
        bdrv_detach_child(bs->backing);
    }
    if (base && !bdrv_attach_child(bs, base, "backing", BLK_ROLE_COW, errp)) {
        ok = false;
        /* Put the old chain back: the job still references it. */
        if (old) {
            Error *err2 = NULL;
            if (!bdrv_attach_child(bs, old, "backing", BLK_ROLE_COW, &err2)) {
                error_report_err(err2, "restoring the backing chain");
            }
        }
    }
    bdrv_drained_end(bs);
    return ok;
}
