/*
 * throttle: a filter whose requests take budget from a throttle group
 * (object/throttle-group.h) before they go down to "file".  Several nodes
 * naming one group share its budget.  Reads are throttled as reads;
 * writes, write-zeroes and discards as writes (of their length); flushes
 * and block status pass freely.  A job's own I/O is throttled only when
 * its path goes through the node (a mirror whose source is the filter
 * reads through it), as in qemu.  While the node is drained, waiting
 * requests pass without budget (qemu does the same), so a drained section
 * never waits for the group.
 */
#include <errno.h>
#include <stdio.h>

#include "block/drivers/drivers.h"
#include "object/throttle-group.h"

typedef struct ThrottleState {
    ThrottleGroup *group;          /* a use held while open */
    ThrottleMember member;
} ThrottleState;

static const ArgSpec throttle_options[] = {
    { .name = "throttle-group", .type = ARG_STR },
    { .name = "file", .type = ARG_REF },
    { .name = NULL },
};

static const char *const throttle_strong_options[] = {
    "throttle-group", NULL,
};

static int coroutine_fn throttle_co_open(BlockNode *bs, json_t *opts,
                                         Error **errp)
{
    ThrottleState *s = bs->opaque;
    const char *name = json_string_value(json_object_get(opts,
                                                         "throttle-group"));

    s->group = throttle_group_get(name ? name : "", errp);
    if (!s->group) {
        return -EINVAL;
    }
    if (!bdrv_open_child(bs, opts, "file",
                         BLK_ROLE_DATA | BLK_ROLE_FILTERED | BLK_ROLE_PRIMARY,
                         false, errp)) {
        throttle_group_put(s->group);
        s->group = NULL;
        return -EINVAL;
    }
    snprintf(bs->filename, sizeof(bs->filename), "%s",
             bs->file->node->filename);
    return 0;
}

static void throttle_close(BlockNode *bs)
{
    ThrottleState *s = bs->opaque;

    if (s->group) {
        throttle_group_put(s->group);
        s->group = NULL;
    }
}

static void throttle_drained_begin(BlockNode *bs)
{
    ThrottleState *s = bs->opaque;

    if (s->group) {
        throttle_group_member_drained(s->group, &s->member, true);
    }
}

static void throttle_drained_end(BlockNode *bs)
{
    ThrottleState *s = bs->opaque;

    if (s->group) {
        throttle_group_member_drained(s->group, &s->member, false);
    }
}

static int coroutine_fn throttle_co_preadv(BlockNode *bs, int64_t offset,
                                           int64_t bytes, IOVector *qiov,
                                           unsigned flags)
{
    ThrottleState *s = bs->opaque;

    throttle_group_co_wait(s->group, &s->member, false, bytes);
    return bdrv_co_preadv(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn throttle_co_pwritev(BlockNode *bs, int64_t offset,
                                            int64_t bytes, IOVector *qiov,
                                            unsigned flags)
{
    ThrottleState *s = bs->opaque;

    throttle_group_co_wait(s->group, &s->member, true, bytes);
    return bdrv_co_pwritev(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn throttle_co_pwrite_zeroes(BlockNode *bs,
                                                  int64_t offset,
                                                  int64_t bytes,
                                                  unsigned flags)
{
    ThrottleState *s = bs->opaque;

    throttle_group_co_wait(s->group, &s->member, true, bytes);
    return bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int coroutine_fn throttle_co_pdiscard(BlockNode *bs, int64_t offset,
                                             int64_t bytes)
{
    ThrottleState *s = bs->opaque;

    throttle_group_co_wait(s->group, &s->member, true, bytes);
    return bdrv_co_pdiscard(bs->file, offset, bytes);
}

static int64_t coroutine_fn throttle_co_getlength(BlockNode *bs)
{
    return bdrv_getlength(bs->file->node);
}

const BlockDriver bdrv_throttle = {
    .name = "throttle",
    .state_size = sizeof(ThrottleState),
    .options = throttle_options,
    .strong_options = throttle_strong_options,
    .is_filter = true,
    .co_open = throttle_co_open,
    .close = throttle_close,
    .drained_begin = throttle_drained_begin,
    .drained_end = throttle_drained_end,
    .co_preadv = throttle_co_preadv,
    .co_pwritev = throttle_co_pwritev,
    .co_pwrite_zeroes = throttle_co_pwrite_zeroes,
    .co_pdiscard = throttle_co_pdiscard,
    .co_getlength = throttle_co_getlength,
};
