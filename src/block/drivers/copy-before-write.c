/*
 * copy-before-write: the filter a backup job inserts above its source.
 *
 *   clients -> [copy-before-write] --file--> source
 *                       |
 *                       +--target--> target (the backup)
 *
 * Reads pass through.  A write, write-zeroes or discard first calls the
 * before-write hook for its range (the job copies the old data of the
 * clusters it touches to the target), and fails with the hook's error if
 * that copy fails (qemu's default on-cbw-error=break-guest-write): the
 * target then never misses the old data of a cluster a client changed.
 * A job filter (block/job-filter.h): only jobs open it, options "file" and
 * "target" as node names.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "block/drivers/drivers.h"

typedef struct CbwState {
    BlockChild *target;
    BdrvBeforeWriteHook *hook;
    void *opaque;
} CbwState;

static const ArgSpec cbw_options[] = {
    { .name = "file", .type = ARG_REF },
    { .name = "target", .type = ARG_REF },
    { .name = NULL },
};

static void cbw_set_hook(BlockNode *bs, BdrvBeforeWriteHook *hook,
                         void *opaque)
{
    CbwState *s = bs->opaque;
    s->hook = hook;
    s->opaque = opaque;
}

static BlockChild *cbw_target_child(BlockNode *bs)
{
    CbwState *s = bs->opaque;
    return s->target;
}

static int coroutine_fn cbw_co_open(BlockNode *bs, json_t *opts,
                                    Error **errp)
{
    CbwState *s = bs->opaque;

    if (!bdrv_open_child(bs, opts, "file",
                         BLK_ROLE_DATA | BLK_ROLE_FILTERED | BLK_ROLE_PRIMARY,
                         false, errp)) {
        return -EINVAL;
    }
    s->target = bdrv_open_child(bs, opts, "target", BLK_ROLE_DATA, false,
                                errp);
    if (!s->target) {
        return -EINVAL;
    }
    snprintf(bs->filename, sizeof(bs->filename), "%s",
             bs->file->node->filename);
    return 0;
}

/*
 * On the source: what our parents need, plus reading (the copy reads old
 * data).  We share everything there: the filter is opened beside the
 * source's writers before it takes their place (bdrv_replace_node), so
 * unsharing write would refuse the very parents it is about to take over.
 * On the target we write, and share everything but resize (its size was
 * checked once, at the start): the fleecing pattern exports a target whose
 * backing node is the source, and that backing edge only lets the guest
 * keep writing the source if the target's parents share write, as
 * qemu-storage-daemon's filter does.
 */
static void cbw_child_perm(BlockNode *bs, BlockChild *c, unsigned role,
                           uint64_t parent_perm, uint64_t parent_shared,
                           uint64_t *perm, uint64_t *shared)
{
    (void)bs;
    (void)c;
    (void)parent_shared;
    if (role & BLK_ROLE_PRIMARY) {
        *perm = parent_perm | BLK_PERM_CONSISTENT_READ;
        *shared = BLK_PERM_ALL;
    } else {
        *perm = BLK_PERM_WRITE;
        *shared = BLK_PERM_ALL & ~BLK_PERM_RESIZE;
    }
}

static int coroutine_fn copy_before(BlockNode *bs, int64_t offset,
                                    int64_t bytes)
{
    CbwState *s = bs->opaque;
    return s->hook ? s->hook(s->opaque, offset, bytes) : 0;
}

static int coroutine_fn cbw_co_pwritev(BlockNode *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       unsigned flags)
{
    int ret = 0;
    if (!(flags & BLK_REQ_WRITE_UNCHANGED)) {
        ret = copy_before(bs, offset, bytes);
    }
    return ret < 0 ? ret : bdrv_co_pwritev(bs->file, offset, bytes, qiov,
                                           flags);
}

static int coroutine_fn cbw_co_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                             int64_t bytes, unsigned flags)
{
    int ret = copy_before(bs, offset, bytes);
    return ret < 0 ? ret : bdrv_co_pwrite_zeroes(bs->file, offset, bytes,
                                                 flags);
}

static int coroutine_fn cbw_co_pdiscard(BlockNode *bs, int64_t offset,
                                        int64_t bytes)
{
    int ret = copy_before(bs, offset, bytes);
    return ret < 0 ? ret : bdrv_co_pdiscard(bs->file, offset, bytes);
}

static int64_t coroutine_fn cbw_co_getlength(BlockNode *bs)
{
    return bdrv_getlength(bs->file->node);
}

const BlockDriver bdrv_copy_before_write = {
    .name = "copy-before-write",
    .state_size = sizeof(CbwState),
    .options = cbw_options,
    .is_filter = true,
    .co_open = cbw_co_open,
    .child_perm = cbw_child_perm,
    .co_pwritev = cbw_co_pwritev,
    .co_pwrite_zeroes = cbw_co_pwrite_zeroes,
    .co_pdiscard = cbw_co_pdiscard,
    .co_getlength = cbw_co_getlength,
    .set_before_write_hook = cbw_set_hook,
    .filter_target = cbw_target_child,
};
