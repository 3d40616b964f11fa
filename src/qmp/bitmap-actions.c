/*
 * Bitmap actions in prepare / commit / abort / clean steps (see
 * bitmap-actions.h): the transaction_bitmap_*_action types of
 * transaction.h, which the plain block-dirty-bitmap-* commands run alone.
 */
#include "qmp/bitmap-actions.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "block/dirty-bitmap-named.h"
#include "qmp/common-args.h"
#include "qmp/transaction.h"
#include "util/alloc.h"
#include "util/cleanup.h"
#include "util/hbitmap.h"

/* ---- argument tables ---- */

const ArgSpec bitmap_add_args[] = {
    { .name = "node", .type = ARG_STR },
    { .name = "name", .type = ARG_STR },
    /* A uint32 with qemu's two messages: check_extra() below. */
    { .name = "granularity", .type = ARG_ANY, .optional = true },
    { .name = "persistent", .type = ARG_BOOL, .optional = true },
    { .name = "disabled", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

const ArgSpec bitmap_node_name_args[] = {
    { .name = "node", .type = ARG_STR },
    { .name = "name", .type = ARG_STR },
    { .name = NULL },
};

const ArgSpec bitmap_merge_args[] = {
    { .name = "node", .type = ARG_STR },
    { .name = "target", .type = ARG_STR },
    /* Each element a name or {node, name}: check_extra() below. */
    { .name = "bitmaps", .type = ARG_ARRAY,
      .members = (const ArgSpec[]) { { .name = "bitmaps", .type = ARG_ANY },
                                     { .name = NULL } } },
    { .name = NULL },
};

/* ---- the state of one action ---- */

typedef struct BitmapAction BitmapAction;

/* Which change an action makes: the opaque of its transaction type. */
typedef struct BitmapOps {
    bool (*prepare)(BitmapAction *a, Error **errp);
    void (*commit)(BitmapAction *a);
    void (*abort)(BitmapAction *a);
} BitmapOps;

struct BitmapAction {
    const BitmapOps *ops;
    json_t *data;
    /* The bitmap prepare changed; NULL when it failed before changing
     * anything (abort has nothing to undo then). */
    BdrvDirtyBitmap *bm;
    HBitmap *backup;         /* clear, merge: the bits before */
    bool was_enabled;        /* enable, disable */
};

static BdrvDirtyBitmap *lookup(json_t *data, BlockNode **pbs, Error **errp)
{
    return bdrv_dirty_bitmap_lookup(arg_str(data, "node", NULL),
                                    arg_str(data, "name", NULL), pbs, errp);
}

/*
 * Whether bm's bits may change (clear, remove, merge target), in qemu's
 * order: busy, then read-only, then inconsistent.  A persistent bitmap of
 * a read-only node is qemu's "readonly" one: loaded from an image opened
 * read-only (a new persistent bitmap cannot be added there).
 */
static bool check_modifiable(BlockNode *bs, BdrvDirtyBitmap *bm,
                             bool inconsistent_ok, Error **errp)
{
    if (bdrv_dirty_bitmap_busy(bm)) {
        return bdrv_dirty_bitmap_check_usable(bm, errp);
    }
    if (bs->read_only && bdrv_dirty_bitmap_persistent(bm)) {
        error_setg(errp, "Bitmap '%s' is readonly and cannot be modified",
                   bdrv_dirty_bitmap_name(bm));
        return false;
    }
    return inconsistent_ok || bdrv_dirty_bitmap_check_usable(bm, errp);
}

/* A copy of bm's bits, for abort; NULL with an error when memory for a
 * bitmap the size of bm's (up to 512 MiB) is missing. */
static HBitmap *bits_copy(BdrvDirtyBitmap *bm, Error **errp)
{
    HBitmap *hb = bdrv_dirty_bitmap_hbitmap(bm);
    HBitmap *copy = hbitmap_new_checked(hbitmap_size(hb),
                                        hbitmap_granularity_shift(hb), errp);

    if (!copy) {
        error_prepend(errp, "Cannot save the bits of bitmap '%s'",
                      bdrv_dirty_bitmap_name(bm));
        return NULL;
    }
    hbitmap_merge(copy, hb);
    return copy;
}

/* Puts back the bits bits_copy() took (same size and granularity: the
 * bitmap has not been resized in between). */
static void bits_restore(BdrvDirtyBitmap *bm, const HBitmap *copy)
{
    HBitmap *hb = bdrv_dirty_bitmap_hbitmap(bm);

    hbitmap_reset_all(hb);
    hbitmap_merge(hb, copy);
    /* Abort of a merge removes bits; abort of a clear adds back bits a
     * resync since the prepare may have dropped from the image: store
     * them before returning, as merge does. */
    bdrv_dirty_bitmap_bits_removed(bm);
    bdrv_dirty_bitmap_persist_bits(bm);
}

/* ---- add ---- */

/* granularity: "expects uint64" for anything but an integer, then
 * "expects uint32_t" (without the path: qemu's visitor names the bare
 * member there) when out of range. */
static bool check_granularity(json_t *data, const char *path, Error **errp)
{
    json_t *g = json_object_get(data, "granularity");

    if (!g) {
        return true;
    }
    if (!json_is_integer(g)) {
        error_setg(errp, "Parameter '%s%sgranularity' expects uint64",
                   path ? path : "", path && *path ? "." : "");
        return false;
    }
    if (json_integer_value(g) < 0 || json_integer_value(g) > UINT32_MAX) {
        error_setg(errp, "Parameter 'granularity' expects uint32_t");
        return false;
    }
    return true;
}

static bool add_prepare(BitmapAction *a, Error **errp)
{
    json_t *d = a->data;
    const char *node = arg_str(d, "node", NULL);
    const char *name = arg_str(d, "name", NULL);
    bool persistent = arg_bool(d, "persistent", false);
    BlockNode *bs = bdrv_lookup_node(node, node, errp);
    uint32_t gran;

    if (!bs) {
        return false;
    }
    if (!name[0]) {
        error_setg(errp, "Bitmap name cannot be empty");
        return false;
    }
    if (strlen(name) > BDRV_BITMAP_MAX_NAME_SIZE) {
        error_setg(errp, "Bitmap name too long: %s", name);
        return false;
    }
    if (json_object_get(d, "granularity")) {
        gran = (uint32_t)arg_int(d, "granularity", 0);
        if (gran < 512 || (gran & (gran - 1))) {
            error_setg(errp, "Granularity must be power of 2 and at least "
                       "512");
            return false;
        }
    } else {
        gran = bdrv_dirty_bitmap_default_granularity(bs);
    }
    if (bdrv_find_dirty_bitmap(bs, name)) {
        error_setg(errp, "Bitmap already exists: %s", name);
        return false;
    }
    if (persistent && !bdrv_can_store_new_dirty_bitmap(bs, name, gran, errp)) {
        return false;
    }
    a->bm = bdrv_create_dirty_bitmap(bs, gran, name, errp);
    if (!a->bm) {
        return false;
    }
    if (arg_bool(d, "disabled", false)) {
        bdrv_disable_dirty_bitmap(a->bm);
    }
    if (persistent) {
        bdrv_dirty_bitmap_set_persistent(a->bm, true);
    }
    return true;
}

static void add_abort(BitmapAction *a)
{
    /* Never stored: a persistent one leaves no trace in the image. */
    bdrv_dirty_bitmap_release_named(a->bm);
}

/* ---- remove ---- */

static bool remove_prepare(BitmapAction *a, Error **errp)
{
    BlockNode *bs = NULL;
    BdrvDirtyBitmap *bm = lookup(a->data, &bs, errp);

    /* An inconsistent bitmap may be removed: that is how users drop it. */
    if (!bm || !check_modifiable(bs, bm, true, errp)) {
        return false;
    }
    /* Busy until commit or abort: later actions of the transaction must
     * not use (or hand a job) what commit will free. */
    bdrv_dirty_bitmap_set_busy(bm, true);
    a->bm = bm;
    return true;
}

static void remove_commit(BitmapAction *a)
{
    bdrv_dirty_bitmap_set_busy(a->bm, false);
    /* A persistent one leaves the image through the named layer. */
    bdrv_dirty_bitmap_release_named(a->bm);
    a->bm = NULL;
}

static void remove_abort(BitmapAction *a)
{
    bdrv_dirty_bitmap_set_busy(a->bm, false);
}

/* ---- clear ---- */

static bool clear_prepare(BitmapAction *a, Error **errp)
{
    BlockNode *bs = NULL;
    BdrvDirtyBitmap *bm = lookup(a->data, &bs, errp);

    if (!bm || !check_modifiable(bs, bm, false, errp)) {
        return false;
    }
    if (!(a->backup = bits_copy(bm, errp))) {
        return false;
    }
    bdrv_clear_dirty_bitmap(bm);
    bdrv_dirty_bitmap_bits_removed(bm);
    a->bm = bm;
    return true;
}

/* clear and merge: the bits as they were before prepare. */
static void bits_abort(BitmapAction *a)
{
    bits_restore(a->bm, a->backup);
}

/* ---- enable, disable ---- */

static bool enable_disable_prepare(BitmapAction *a, bool enable,
                                   Error **errp)
{
    BdrvDirtyBitmap *bm = lookup(a->data, NULL, errp);

    /* Allowed on a read-only bitmap, as in qemu: no bit changes. */
    if (!bm || !bdrv_dirty_bitmap_check_usable(bm, errp)) {
        return false;
    }
    a->was_enabled = bdrv_dirty_bitmap_enabled(bm);
    if (enable && bdrv_dirty_bitmap_persistent(bm)) {
        /* No write may be in flight across the switch: one that started
         * before it passed qcow2's mark-before-write while the bitmap did
         * not record, and would set an in-memory bit the image lacks. */
        BlockNode *bs = bdrv_dirty_bitmap_node(bm);
        bdrv_drained_begin(bs);
        bdrv_enable_dirty_bitmap(bm);
        bdrv_drained_end(bs);
    } else if (enable) {
        bdrv_enable_dirty_bitmap(bm);
    } else {
        bdrv_disable_dirty_bitmap(bm);
    }
    a->bm = bm;
    return true;
}

static bool enable_prepare(BitmapAction *a, Error **errp)
{
    return enable_disable_prepare(a, true, errp);
}

static bool disable_prepare(BitmapAction *a, Error **errp)
{
    return enable_disable_prepare(a, false, errp);
}

static void enable_disable_abort(BitmapAction *a)
{
    if (a->was_enabled) {
        bdrv_enable_dirty_bitmap(a->bm);
    } else {
        bdrv_disable_dirty_bitmap(a->bm);
    }
}

/* ---- merge ---- */

static BdrvDirtyBitmap *merge_source(json_t *el, const char *node,
                                     Error **errp)
{
    if (json_is_string(el)) {
        return bdrv_dirty_bitmap_lookup(node, json_string_value(el), NULL,
                                        errp);
    }
    return bdrv_dirty_bitmap_lookup(arg_str(el, "node", NULL),
                                    arg_str(el, "name", NULL), NULL, errp);
}

static bool merge_prepare(BitmapAction *a, Error **errp)
{
    const char *node = arg_str(a->data, "node", NULL);
    json_t *list = json_object_get(a->data, "bitmaps");
    size_t n = json_array_size(list);
    CLEANUP_FREE BdrvDirtyBitmap **src = NULL;
    BlockNode *bs = NULL;
    BdrvDirtyBitmap *dst;

    dst = bdrv_dirty_bitmap_lookup(node, arg_str(a->data, "target", NULL),
                                   &bs, errp);
    if (!dst || !check_modifiable(bs, dst, false, errp)) {
        return false;
    }
    src = bj_calloc(n ? n : 1, sizeof(*src));
    /* Check every source first: a refused merge changes nothing.  A busy
     * source is refused too, as qemu does (in a transaction, one that an
     * earlier action removes). */
    for (size_t i = 0; i < n; i++) {
        src[i] = merge_source(json_array_get(list, i), node, errp);
        if (!src[i] || !bdrv_dirty_bitmap_check_usable(src[i], errp)) {
            return false;
        }
        if (bdrv_dirty_bitmap_size(src[i]) != bdrv_dirty_bitmap_size(dst)) {
            error_setg(errp, "Bitmaps are of different sizes (destination "
                       "size is %" PRIu64 ", source size is %" PRIu64 ") "
                       "and can't be merged", bdrv_dirty_bitmap_size(dst),
                       bdrv_dirty_bitmap_size(src[i]));
            return false;
        }
    }
    if (!(a->backup = bits_copy(dst, errp))) {
        return false;
    }
    a->bm = dst;
    /* Granularities may differ: every dirty run of a source dirties the
     * target's granules it touches. */
    for (size_t i = 0; i < n; i++) {
        int64_t end = (int64_t)bdrv_dirty_bitmap_size(src[i]);
        int64_t off = 0, bytes = 0;
        while (bdrv_dirty_bitmap_next_dirty_area(src[i], &off, end,
                                                 INT64_MAX, &bytes)) {
            bdrv_set_dirty_bitmap(dst, off, bytes);
            off += bytes;
        }
    }
    /* In the image before the command returns: a crash must never leave
     * the stored copy without bits the bitmap had in memory. */
    bdrv_dirty_bitmap_persist_bits(dst);
    return true;
}

/* What the merge table cannot say: each element's shape. */
static bool check_merge_sources(json_t *data, const char *path,
                                Error **errp)
{
    return qmp_check_bitmap_list(json_object_get(data, "bitmaps"), path,
                                 errp);
}

/* ---- the steps, as transaction action types ---- */

static bool bitmap_prepare(TransactionAction *ta, JobTxn *txn, Error **errp)
{
    BitmapAction *a = bj_calloc(1, sizeof(*a));
    bool ok;

    a->ops = ta->type->opaque;
    a->data = ta->data;
    ta->state = a;
    /* The type's extra check again, for a plain command whose arguments
     * only met the table: a no-op after the transaction's own check. */
    ok = (!ta->type->check || ta->type->check(a->data, "", errp)) &&
         a->ops->prepare(a, errp);
    if (!ok) {
        /* A failed prepare changed nothing: nothing to abort. */
        a->bm = NULL;
    }
    return ok;
}

static void bitmap_commit(TransactionAction *ta)
{
    BitmapAction *a = ta->state;

    if (a->bm && a->ops->commit) {
        a->ops->commit(a);
    }
}

static void bitmap_abort(TransactionAction *ta)
{
    BitmapAction *a = ta->state;

    if (a->bm && a->ops->abort) {
        a->ops->abort(a);
    }
    a->bm = NULL;
}

static void bitmap_clean(TransactionAction *ta)
{
    BitmapAction *a = ta->state;

    if (a->backup) {
        hbitmap_free(a->backup);
    }
}

/* The bitmaps of a node in an iothread are marked there, by every write:
 * a plain command changes them from the main thread only while such nodes
 * are drained (a transaction drains every node anyway). */
#define BITMAP_ACTION(var, type_name, spec, extra_check, prep, comm, abrt) \
    const TransactionActionType var = {                                   \
        .name = type_name,                                                \
        .args = spec,                                                     \
        .check = extra_check,                                             \
        .prepare = bitmap_prepare,                                        \
        .commit = bitmap_commit,                                          \
        .abort = bitmap_abort,                                            \
        .clean = bitmap_clean,                                            \
        .opaque = &(const BitmapOps) { prep, comm, abrt },                \
        .alone_drain = TRANSACTION_DRAIN_IOTHREADS,                       \
    }

BITMAP_ACTION(transaction_bitmap_add_action, "block-dirty-bitmap-add",
              bitmap_add_args, check_granularity, add_prepare, NULL,
              add_abort);
BITMAP_ACTION(transaction_bitmap_remove_action, "block-dirty-bitmap-remove",
              bitmap_node_name_args, NULL, remove_prepare, remove_commit,
              remove_abort);
BITMAP_ACTION(transaction_bitmap_clear_action, "block-dirty-bitmap-clear",
              bitmap_node_name_args, NULL, clear_prepare, NULL, bits_abort);
BITMAP_ACTION(transaction_bitmap_enable_action, "block-dirty-bitmap-enable",
              bitmap_node_name_args, NULL, enable_prepare, NULL,
              enable_disable_abort);
BITMAP_ACTION(transaction_bitmap_disable_action,
              "block-dirty-bitmap-disable", bitmap_node_name_args, NULL,
              disable_prepare, NULL, enable_disable_abort);
BITMAP_ACTION(transaction_bitmap_merge_action, "block-dirty-bitmap-merge",
              bitmap_merge_args, check_merge_sources, merge_prepare, NULL,
              bits_abort);
