/*
 * raw: passes requests to its file child, optionally through a window
 * [offset, offset + size) of it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "block/drivers/drivers.h"

typedef struct RawState {
    int64_t offset;
    int64_t size;
    bool has_size;
} RawState;

static const ArgSpec raw_options[] = {
    { .name = "file", .type = ARG_REF },
    /* Integers in the schema; qemu refuses negative ones only when the
     * driver reads them, with its own words (see raw_co_open). */
    { .name = "offset", .type = ARG_INT, .optional = true },
    { .name = "size", .type = ARG_INT, .optional = true },
    { .name = NULL },
};

static const char *const raw_strong[] = { "offset", "size", NULL };

static int coroutine_fn raw_co_open(BlockNode *bs, json_t *opts, Error **errp)
{
    RawState *s = bs->opaque;
    int64_t real_size;

    if (!bdrv_open_child(bs, opts, "file",
                         BLK_ROLE_DATA | BLK_ROLE_FILTERED | BLK_ROLE_PRIMARY,
                         false, errp)) {
        return -EINVAL;
    }
    for (const char *const *o = raw_strong; *o; o++) {
        if (arg_int(opts, *o, 0) < 0) {
            error_setg(errp, "Parameter '%s' expects a non-negative number "
                       "below 2^64", *o);
            return -EINVAL;
        }
    }
    real_size = bdrv_getlength(bs->file->node);
    s->offset = arg_int(opts, "offset", 0);
    s->has_size = json_object_get(opts, "size") != NULL;
    s->size = s->has_size ? arg_int(opts, "size", 0) : real_size - s->offset;
    /* Same checks and words as qemu. */
    if (s->offset > real_size) {
        error_setg(errp, "Offset (%" PRId64 ") cannot be greater than size "
                   "of the containing file (%" PRId64 ")", s->offset,
                   real_size);
        return -EINVAL;
    }
    if (s->has_size && (s->size > real_size - s->offset)) {
        error_setg(errp, "The sum of offset (%" PRId64 ") and size (%" PRId64
                   ") has to be smaller or equal to the  actual size of the "
                   "containing file (%" PRId64 ")", s->offset, s->size,
                   real_size);
        return -EINVAL;
    }
    if (s->has_size && s->size % 512) {
        error_setg(errp, "Specified size is not multiple of 512");
        return -EINVAL;
    }
    bs->total_bytes = s->size;
    snprintf(bs->filename, sizeof(bs->filename), "%s",
             bs->file->node->filename);
    return 0;
}

static int coroutine_fn raw_co_preadv(BlockNode *bs, int64_t offset,
                                      int64_t bytes, IOVector *qiov,
                                      unsigned flags)
{
    RawState *s = bs->opaque;

    return bdrv_co_preadv(bs->file, offset + s->offset, bytes, qiov, flags);
}

static int coroutine_fn raw_co_pwritev(BlockNode *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       unsigned flags)
{
    RawState *s = bs->opaque;

    return bdrv_co_pwritev(bs->file, offset + s->offset, bytes, qiov, flags);
}

static int coroutine_fn raw_co_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                             int64_t bytes, unsigned flags)
{
    RawState *s = bs->opaque;

    return bdrv_co_pwrite_zeroes(bs->file, offset + s->offset, bytes, flags);
}

static int coroutine_fn raw_co_pdiscard(BlockNode *bs, int64_t offset,
                                        int64_t bytes)
{
    RawState *s = bs->opaque;

    return bdrv_co_pdiscard(bs->file, offset + s->offset, bytes);
}

static int coroutine_fn raw_co_block_status(BlockNode *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum,
                                            int64_t *map, BlockNode **file)
{
    RawState *s = bs->opaque;
    int ret;

    ret = bdrv_co_block_status(bs->file->node, offset + s->offset, bytes,
                               pnum, map, file);
    if (ret < 0) {
        return ret;
    }
    if (*pnum == 0) {
        /* The file ended early (it shrank under us): report the rest as
         * zeroes rather than loop. */
        *pnum = bytes;
        return BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
    }
    if (*pnum > bytes) {
        *pnum = bytes;
    }
    return (ret & ~BLK_STATUS_EOF) | BLK_STATUS_ALLOCATED;
}

static int coroutine_fn raw_co_truncate(BlockNode *bs, int64_t size,
                                        Error **errp)
{
    RawState *s = bs->opaque;
    int ret;

    if (s->has_size) {
        error_setg(errp, "Cannot resize fixed-size raw disks");
        return -ENOTSUP;
    }
    ret = bdrv_co_truncate(bs->file, size + s->offset, errp);
    if (ret >= 0) {
        s->size = size;
    }
    return ret;
}

static int64_t coroutine_fn raw_co_getlength(BlockNode *bs)
{
    RawState *s = bs->opaque;

    if (s->has_size) {
        return s->size;
    }
    return bdrv_getlength(bs->file->node) - s->offset;
}

static void raw_refresh_limits(BlockNode *bs)
{
    RawState *s = bs->opaque;

    bs->bl = bs->file->node->bl;
    /* With an offset that breaks the child's alignment, aligning here would
     * not help the child: let it do the read-modify-write once, itself. */
    if (s->offset % bs->bl.request_alignment) {
        bs->bl.request_alignment = 1;
        bs->bl.pwrite_zeroes_alignment = 0;
        bs->bl.pdiscard_alignment = 0;
    }
}

const BlockDriver bdrv_raw = {
    .name = "raw",
    .state_size = sizeof(RawState),
    .options = raw_options,
    .strong_options = raw_strong,
    .co_open = raw_co_open,
    .co_preadv = raw_co_preadv,
    .co_pwritev = raw_co_pwritev,
    .co_pwrite_zeroes = raw_co_pwrite_zeroes,
    .co_pdiscard = raw_co_pdiscard,
    .co_block_status = raw_co_block_status,
    .co_truncate = raw_co_truncate,
    .co_getlength = raw_co_getlength,
    .refresh_limits = raw_refresh_limits,
};
