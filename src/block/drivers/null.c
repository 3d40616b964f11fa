/*
 * null-co: a node of a given size that reads as zeroes and forgets writes,
 * optionally after a delay (latency-ns).  For tests and benchmarks.
 *
 * Without read-zeroes, qemu leaves the read buffer untouched (whatever the
 * caller had in it).  We zero it anyway: an export must never send a client
 * the previous contents of our own memory, and sanitizers stay quiet.  Only
 * block status tells the difference (ZERO with read-zeroes, DATA without).
 */
#include <errno.h>

#include "block/drivers/drivers.h"

typedef struct NullState {
    int64_t length;
    int64_t latency_ns;
    bool read_zeroes;
    /* A write, write-zeroes or discard came since the last flush.  A flush
     * with nothing to flush returns at once, as in qemu (whose block layer
     * skips such flushes): closing a node nobody wrote to must not wait
     * out a latency it never used. */
    bool unflushed;
} NullState;

static const ArgSpec null_options[] = {
    { .name = "size", .type = ARG_INT, .optional = true },
    { .name = "latency-ns", .type = ARG_INT, .optional = true },
    { .name = "read-zeroes", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

/* Options that make the node other than plain "null-co://". */
static const char *const null_strong[] = { "size", "read-zeroes", NULL };

static int coroutine_fn null_co_open(BlockNode *bs, json_t *opts,
                                     Error **errp)
{
    NullState *s = bs->opaque;

    s->length = arg_int(opts, "size", 1LL << 30);
    s->latency_ns = arg_int(opts, "latency-ns", 0);
    s->read_zeroes = arg_bool(opts, "read-zeroes", false);
    if (s->length < 0) {
        /* qemu 7.2 aborts here; its option parser's words. */
        error_setg(errp, "Parameter 'size' expects a non-negative number "
                   "below 2^64");
        return -EINVAL;
    }
    if (s->latency_ns < 0) {
        error_setg(errp, "latency-ns is invalid");
        return -EINVAL;
    }
    bs->total_bytes = s->length;
    return 0;
}

static void coroutine_fn null_delay(BlockNode *bs)
{
    NullState *s = bs->opaque;

    if (s->latency_ns) {
        co_sleep_ns(s->latency_ns);
    }
}

static int coroutine_fn null_co_preadv(BlockNode *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       unsigned flags)
{
    iov_vec_memset(qiov, 0, 0, bytes);
    null_delay(bs);
    return 0;
}

/* Marked before the delay: a flush that starts meanwhile must wait too. */
static void coroutine_fn null_write_delay(BlockNode *bs)
{
    NullState *s = bs->opaque;

    s->unflushed = true;
    null_delay(bs);
}

static int coroutine_fn null_co_pwritev(BlockNode *bs, int64_t offset,
                                        int64_t bytes, IOVector *qiov,
                                        unsigned flags)
{
    null_write_delay(bs);
    return 0;
}

static int coroutine_fn null_co_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                              int64_t bytes, unsigned flags)
{
    null_write_delay(bs);
    return 0;
}

static int coroutine_fn null_co_pdiscard(BlockNode *bs, int64_t offset,
                                         int64_t bytes)
{
    null_write_delay(bs);
    return 0;
}

static int coroutine_fn null_co_flush(BlockNode *bs)
{
    NullState *s = bs->opaque;

    if (!s->unflushed) {
        return 0;
    }
    s->unflushed = false;
    null_delay(bs);
    return 0;
}

static int coroutine_fn null_co_block_status(BlockNode *bs, int64_t offset,
                                             int64_t bytes, int64_t *pnum,
                                             int64_t *map, BlockNode **file)
{
    NullState *s = bs->opaque;

    *pnum = bytes;
    *map = offset;
    *file = bs;
    return BLK_STATUS_OFFSET_VALID | BLK_STATUS_ALLOCATED |
           (s->read_zeroes ? BLK_STATUS_ZERO : BLK_STATUS_DATA);
}

static int coroutine_fn null_co_truncate(BlockNode *bs, int64_t size,
                                         Error **errp)
{
    NullState *s = bs->opaque;

    s->length = size;
    return 0;
}

static int64_t coroutine_fn null_co_getlength(BlockNode *bs)
{
    NullState *s = bs->opaque;

    return s->length;
}

static void null_query_image(BlockNode *bs, json_t *image)
{
    json_object_set_new(image, "actual-size", json_integer(0));
}

const BlockDriver bdrv_null_co = {
    .name = "null-co",
    .state_size = sizeof(NullState),
    .options = null_options,
    .strong_options = null_strong,
    .co_open = null_co_open,
    .co_preadv = null_co_preadv,
    .co_pwritev = null_co_pwritev,
    .co_pwrite_zeroes = null_co_pwrite_zeroes,
    .co_pdiscard = null_co_pdiscard,
    .co_flush = null_co_flush,
    .co_block_status = null_co_block_status,
    .co_truncate = null_co_truncate,
    .co_getlength = null_co_getlength,
    .query_image = null_query_image,
};
