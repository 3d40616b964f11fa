/*
 * copy-on-read: a filter whose reads populate the image below it ("file",
 * the top of a backing chain).  A read of a range the top does not hold
 * but some layer down to `bottom` (default: the whole chain) does is
 * served from the chain and the data written into the top ("unchanged"
 * writes: what the top shows does not change), as qemu's copy-on-read
 * filter does.  Writes pass through.  block-stream inserts one above its
 * top when given filter-node-name.
 *
 * A copy and a client's write of the same bytes must not cross (the copy
 * would put old data over the new): each copy and each write registers
 * its range; a copy waits for every overlapping request, a write for
 * overlapping copies.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/chain.h"
#include "block/drivers/drivers.h"
#include "util/alloc.h"
#include "util/iov.h"

typedef struct CorRange {
    int64_t offset, bytes;
    bool copy;
    CoQueue waiters;
    ListHead link;
} CorRange;

typedef struct CorState {
    char *bottom;            /* node name, or NULL: the whole chain */
    ListHead ranges;         /* CorRange in flight */
} CorState;

static const ArgSpec cor_options[] = {
    { .name = "file", .type = ARG_REF },
    { .name = "bottom", .type = ARG_STR, .optional = true },
    { .name = NULL },
};

static int coroutine_fn cor_co_open(BlockNode *bs, json_t *opts,
                                    Error **errp)
{
    CorState *s = bs->opaque;
    const char *bottom = json_string_value(json_object_get(opts, "bottom"));

    list_init(&s->ranges);
    if (!bdrv_open_child(bs, opts, "file",
                         BLK_ROLE_DATA | BLK_ROLE_FILTERED | BLK_ROLE_PRIMARY,
                         false, errp)) {
        return -EINVAL;
    }
    if (bottom) {
        BlockNode *b = bdrv_find_node(bottom);
        if (!b) {
            error_setg(errp, "Bottom node '%s' not found", bottom);
            return -EINVAL;
        }
        /* qsd 7.2 spins forever on such a node (hardening.md). */
        if (!block_chain_contains(bs->file->node, b)) {
            error_setg(errp, "Bottom node '%s' is not in the backing chain "
                       "of '%s'", bottom, bs->file->node->node_name);
            return -EINVAL;
        }
        s->bottom = bj_strdup(bottom);
    }
    snprintf(bs->filename, sizeof(bs->filename), "%s",
             bs->file->node->filename);
    return 0;
}

static void cor_close(BlockNode *bs)
{
    CorState *s = bs->opaque;

    free(s->bottom);
    s->bottom = NULL;
}

/* Readers get "unchanged" writes on the top as well (the copies), unless
 * it is read-only (nothing is copied then). */
static void cor_child_perm(BlockNode *bs, BlockChild *c, unsigned role,
                           uint64_t parent_perm, uint64_t parent_shared,
                           uint64_t *perm, uint64_t *shared)
{
    (void)bs;
    (void)role;
    *perm = parent_perm;
    if ((parent_perm & BLK_PERM_CONSISTENT_READ) && c->node &&
        !c->node->read_only) {
        *perm |= BLK_PERM_WRITE_UNCHANGED;
    }
    *shared = parent_shared | BLK_PERM_WRITE_UNCHANGED;
}

static bool overlaps(const CorRange *r, int64_t offset, int64_t bytes)
{
    return r->offset < offset + bytes && offset < r->offset + r->bytes;
}

/* Waits until no range in flight that overlaps [offset, offset+bytes)
 * (only copies when !copy), then registers this one. */
static void coroutine_fn range_begin(CorState *s, CorRange *me,
                                     int64_t offset, int64_t bytes,
                                     bool copy)
{
    CorRange *r;

again:
    list_for_each_entry(r, &s->ranges, link) {
        if ((copy || r->copy) && overlaps(r, offset, bytes)) {
            co_queue_wait(&r->waiters, NULL);
            goto again;
        }
    }
    me->offset = offset;
    me->bytes = bytes;
    me->copy = copy;
    co_queue_init(&me->waiters);
    list_add_tail(&s->ranges, &me->link);
}

static void range_end(CorRange *me)
{
    list_del(&me->link);
    co_queue_restart_all(&me->waiters);
}

static void slice(IOVector *dst, IOVector *src, size_t off, size_t len)
{
    iov_vec_init(dst, src->niov + 2);
    iov_vec_concat(dst, src, off, len);
}

/* The node below which nothing is copied (NULL: none, the whole chain
 * counts); *none when nothing may be copied at all. */
static BlockNode *copy_base(BlockNode *bs, bool *none)
{
    CorState *s = bs->opaque;
    BlockNode *top = bs->file->node;
    BlockNode *b;

    *none = top->read_only || !block_chain_next(top);
    if (!s->bottom || *none) {
        return NULL;
    }
    b = bdrv_find_node(s->bottom);
    if (!b || b == top || !block_chain_contains(top, b)) {
        *none = true;      /* gone, or the chain changed since the open */
        return NULL;
    }
    return block_chain_next(b);
}

/*
 * Reads [offset, offset+n) (within the request, at qoff of qiov), where
 * the top holds nothing, with the range registered as a copy.  Returns
 * how many bytes it served (> 0) or -errno.
 */
static int64_t coroutine_fn cor_copy(BlockNode *bs, int64_t offset,
                                     int64_t n, IOVector *qiov, size_t qoff)
{
    BlockNode *top = bs->file->node;
    bool none, zero = false;
    BlockNode *base = copy_base(bs, &none);
    int64_t pnum = n;
    IOVector sub;
    int ret = 0;

    if (!none) {
        ret = block_co_is_allocated_above(block_chain_next(top), base,
                                          offset, n, &pnum, &zero);
        if (ret < 0) {
            return ret;
        }
    }
    slice(&sub, qiov, qoff, (size_t)pnum);
    if (ret == 0) {
        /* Nobody down to bottom holds it: read it as any read would. */
        ret = bdrv_co_preadv(bs->file, offset, pnum, &sub, 0);
    } else if (zero) {
        iov_vec_memset(&sub, 0, 0, (size_t)pnum);
        ret = bdrv_co_pwrite_zeroes(bs->file, offset, pnum,
                                    BLK_REQ_WRITE_UNCHANGED);
    } else {
        ret = bdrv_co_preadv(bs->file, offset, pnum, &sub, 0);
        if (ret >= 0) {
            ret = bdrv_co_pwritev(bs->file, offset, pnum, &sub,
                                  BLK_REQ_WRITE_UNCHANGED);
        }
    }
    iov_vec_destroy(&sub);
    return ret < 0 ? ret : pnum;
}

static int coroutine_fn cor_co_preadv(BlockNode *bs, int64_t offset,
                                      int64_t bytes, IOVector *qiov,
                                      unsigned flags)
{
    CorState *s = bs->opaque;
    size_t qoff = 0;

    while (bytes > 0) {
        int64_t pnum = 0, done;
        CorRange me;
        IOVector sub;
        int ret;

        range_begin(s, &me, offset, bytes, true);
        ret = bdrv_co_block_status(bs->file->node, offset, bytes, &pnum,
                                   NULL, NULL);
        if (ret >= 0 && (ret & BLK_STATUS_ALLOCATED)) {
            slice(&sub, qiov, qoff, (size_t)pnum);
            ret = bdrv_co_preadv(bs->file, offset, pnum, &sub, flags);
            iov_vec_destroy(&sub);
            done = pnum;
        } else if (ret >= 0) {
            done = cor_copy(bs, offset, pnum, qiov, qoff);
            ret = done < 0 ? (int)done : 0;
        } else {
            done = 0;
        }
        range_end(&me);
        if (ret < 0) {
            return ret;
        }
        offset += done;
        bytes -= done;
        qoff += (size_t)done;
    }
    return 0;
}

/* Writes wait for the copies of their bytes (and later copies for them). */
#define WITH_WRITE_RANGE(bs, offset, bytes, call)                          \
    do {                                                                   \
        CorRange me_;                                                      \
        range_begin((bs)->opaque, &me_, (offset), (bytes), false);         \
        ret = (call);                                                      \
        range_end(&me_);                                                   \
    } while (0)

static int coroutine_fn cor_co_pwritev(BlockNode *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       unsigned flags)
{
    int ret;
    WITH_WRITE_RANGE(bs, offset, bytes,
                     bdrv_co_pwritev(bs->file, offset, bytes, qiov, flags));
    return ret;
}

static int coroutine_fn cor_co_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                             int64_t bytes, unsigned flags)
{
    int ret;
    WITH_WRITE_RANGE(bs, offset, bytes,
                     bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags));
    return ret;
}

static int coroutine_fn cor_co_pdiscard(BlockNode *bs, int64_t offset,
                                        int64_t bytes)
{
    int ret;
    WITH_WRITE_RANGE(bs, offset, bytes,
                     bdrv_co_pdiscard(bs->file, offset, bytes));
    return ret;
}

static int64_t coroutine_fn cor_co_getlength(BlockNode *bs)
{
    return bdrv_getlength(bs->file->node);
}

const BlockDriver bdrv_copy_on_read = {
    .name = "copy-on-read",
    .state_size = sizeof(CorState),
    .options = cor_options,
    .is_filter = true,
    .co_open = cor_co_open,
    .close = cor_close,
    .child_perm = cor_child_perm,
    .co_preadv = cor_co_preadv,
    .co_pwritev = cor_co_pwritev,
    .co_pwrite_zeroes = cor_co_pwrite_zeroes,
    .co_pdiscard = cor_co_pdiscard,
    .co_getlength = cor_co_getlength,
};
