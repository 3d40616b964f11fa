/*
 * mirror_top: the filter a mirror job (and active commit) inserts above its
 * source.  Every request passes through to the source ("file" child); a
 * write-like request that succeeded is then reported to the job through
 * the after-write hook, which in write-blocking mode copies it to the
 * target before the client hears back.  Background-mode jobs leave the
 * hook unset: the source's dirty bitmap (marked by the request path) tells
 * them what to copy.  A job filter (block/job-filter.h): only jobs open it.
 */
#include <errno.h>

#include "block/drivers/drivers.h"

typedef struct MirrorTopState {
    BdrvAfterWriteHook *hook;
    void *opaque;
    /* Clients' write-like requests inside the hook: the job waits for them
     * before it looks at its in-flight state for the last time. */
    int in_hook;
} MirrorTopState;

static const ArgSpec mirror_top_options[] = {
    { .name = "file", .type = ARG_REF },
    { .name = NULL },
};

static void mirror_top_set_hook(BlockNode *bs, BdrvAfterWriteHook *hook,
                                void *opaque)
{
    MirrorTopState *s = bs->opaque;
    s->hook = hook;
    s->opaque = opaque;
}

static int coroutine_fn mirror_top_co_open(BlockNode *bs, json_t *opts,
                                           Error **errp)
{
    if (!bdrv_open_child(bs, opts, "file",
                         BLK_ROLE_DATA | BLK_ROLE_FILTERED | BLK_ROLE_PRIMARY,
                         false, errp)) {
        return -EINVAL;
    }
    snprintf(bs->filename, sizeof(bs->filename), "%s",
             bs->file->node->filename);
    return 0;
}

static void coroutine_fn notify(BlockNode *bs, BdrvWriteKind kind,
                                int64_t offset, int64_t bytes,
                                IOVector *qiov, unsigned flags)
{
    MirrorTopState *s = bs->opaque;
    if (s->hook) {
        s->in_hook++;
        s->hook(s->opaque, kind, offset, bytes, qiov, flags);
        s->in_hook--;
    }
}

static int coroutine_fn mirror_top_co_pwritev(BlockNode *bs, int64_t offset,
                                              int64_t bytes, IOVector *qiov,
                                              unsigned flags)
{
    int ret = bdrv_co_pwritev(bs->file, offset, bytes, qiov, flags);
    if (ret >= 0 && !(flags & BLK_REQ_WRITE_UNCHANGED)) {
        notify(bs, BDRV_WRITE, offset, bytes, qiov, flags);
    }
    return ret;
}

static int coroutine_fn mirror_top_co_pwrite_zeroes(BlockNode *bs,
                                                    int64_t offset,
                                                    int64_t bytes,
                                                    unsigned flags)
{
    int ret = bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
    if (ret >= 0) {
        notify(bs, BDRV_WRITE_ZEROES, offset, bytes, NULL, flags);
    }
    return ret;
}

static int coroutine_fn mirror_top_co_pdiscard(BlockNode *bs, int64_t offset,
                                               int64_t bytes)
{
    int ret = bdrv_co_pdiscard(bs->file, offset, bytes);
    if (ret >= 0) {
        notify(bs, BDRV_DISCARD, offset, bytes, NULL, 0);
    }
    return ret;
}

static int64_t coroutine_fn mirror_top_co_getlength(BlockNode *bs)
{
    return bdrv_getlength(bs->file->node);
}

const BlockDriver bdrv_mirror_top = {
    .name = "mirror_top",
    .state_size = sizeof(MirrorTopState),
    .options = mirror_top_options,
    .is_filter = true,
    .co_open = mirror_top_co_open,
    .co_pwritev = mirror_top_co_pwritev,
    .co_pwrite_zeroes = mirror_top_co_pwrite_zeroes,
    .co_pdiscard = mirror_top_co_pdiscard,
    .co_getlength = mirror_top_co_getlength,
    .set_after_write_hook = mirror_top_set_hook,
};
