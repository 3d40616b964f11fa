/*
 * Named dirty bitmap commands: block-dirty-bitmap-add, -remove, -clear,
 * -enable, -disable, -merge and x-debug-block-dirty-bitmap-sha256, with
 * qemu-storage-daemon 7.2's defaults and messages.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "block/dirty-bitmap-named.h"
#include "qmp/commands.h"

static const ArgSpec add_args[] = {
    { .name = "node", .type = ARG_STR },
    { .name = "name", .type = ARG_STR },
    { .name = "granularity", .type = ARG_INT, .optional = true },
    { .name = "persistent", .type = ARG_BOOL, .optional = true },
    { .name = "disabled", .type = ARG_BOOL, .optional = true },
    { NULL },
};

static bool qmp_bitmap_add(json_t *args, json_t **ret, Error **errp)
{
    const char *node = arg_str(args, "node", NULL);
    const char *name = arg_str(args, "name", NULL);
    bool persistent = arg_bool(args, "persistent", false);
    BlockNode *bs = bdrv_find_node(node);
    uint32_t gran = 0;

    if (json_object_get(args, "granularity")) {
        int64_t g = arg_int(args, "granularity", 0);
        if (g < 0 || g > UINT32_MAX) {
            error_setg(errp, "Parameter 'granularity' expects uint32_t");
            return false;
        }
        gran = (uint32_t)g;
    }
    if (!bs) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'", node,
                   node);
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
    if (json_object_get(args, "granularity")) {
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
    BdrvDirtyBitmap *bm = bdrv_create_dirty_bitmap(bs, gran, name, errp);
    if (!bm) {
        return false;
    }
    if (arg_bool(args, "disabled", false)) {
        bdrv_disable_dirty_bitmap(bm);
    }
    if (persistent) {
        bdrv_dirty_bitmap_set_persistent(bm, true);
    }
    return true;
}

static const ArgSpec node_name_args[] = {
    { .name = "node", .type = ARG_STR },
    { .name = "name", .type = ARG_STR },
    { NULL },
};

static BdrvDirtyBitmap *lookup(json_t *args, Error **errp)
{
    return bdrv_dirty_bitmap_lookup(arg_str(args, "node", NULL),
                                    arg_str(args, "name", NULL), NULL, errp);
}

static bool qmp_bitmap_remove(json_t *args, json_t **ret, Error **errp)
{
    BdrvDirtyBitmap *bm = lookup(args, errp);

    if (!bm) {
        return false;
    }
    /* An inconsistent bitmap may be removed: that is how users drop it. */
    if (bdrv_dirty_bitmap_busy(bm)) {
        error_setg(errp, "Bitmap '%s' is currently in use by another "
                   "operation and cannot be used",
                   bdrv_dirty_bitmap_name(bm));
        return false;
    }
    /* A persistent one leaves the image when the node closes: the store
     * writes only the bitmaps still there. */
    bdrv_dirty_bitmap_release_named(bm);
    return true;
}

static bool qmp_bitmap_clear(json_t *args, json_t **ret, Error **errp)
{
    BdrvDirtyBitmap *bm = lookup(args, errp);

    if (!bm || !bdrv_dirty_bitmap_check_usable(bm, errp)) {
        return false;
    }
    bdrv_clear_dirty_bitmap(bm);
    return true;
}

static bool qmp_bitmap_enable(json_t *args, json_t **ret, Error **errp)
{
    BdrvDirtyBitmap *bm = lookup(args, errp);

    if (!bm || !bdrv_dirty_bitmap_check_usable(bm, errp)) {
        return false;
    }
    bdrv_enable_dirty_bitmap(bm);
    return true;
}

static bool qmp_bitmap_disable(json_t *args, json_t **ret, Error **errp)
{
    BdrvDirtyBitmap *bm = lookup(args, errp);

    if (!bm || !bdrv_dirty_bitmap_check_usable(bm, errp)) {
        return false;
    }
    bdrv_disable_dirty_bitmap(bm);
    return true;
}

static const ArgSpec merge_args[] = {
    { .name = "node", .type = ARG_STR },
    { .name = "target", .type = ARG_STR },
    { .name = "bitmaps", .type = ARG_ARRAY,
      .members = (const ArgSpec[]) { { .name = "bitmaps", .type = ARG_ANY },
                                     { NULL } } },
    { NULL },
};

/* One element of "bitmaps": a name on the target's node, or
 * {node, name} anywhere. */
static BdrvDirtyBitmap *merge_source(json_t *el, size_t i, const char *node,
                                     Error **errp)
{
    if (json_is_string(el)) {
        return bdrv_dirty_bitmap_lookup(node, json_string_value(el), NULL,
                                        errp);
    }
    if (!json_is_object(el)) {
        error_setg(errp, "Invalid parameter type for 'null', expected: "
                   "BlockDirtyBitmapOrStr");
        return NULL;
    }
    static const char *const members[] = { "node", "name" };
    const char *val[2];
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(el, members[k]);
        if (!v) {
            error_setg(errp, "Parameter 'bitmaps[%zu].%s' is missing", i,
                       members[k]);
            return NULL;
        }
        if (!json_is_string(v)) {
            error_setg(errp, "Invalid parameter type for 'bitmaps[%zu].%s', "
                       "expected: string", i, members[k]);
            return NULL;
        }
        val[k] = json_string_value(v);
    }
    const char *key;
    json_t *v;
    json_object_foreach(el, key, v) {
        if (strcmp(key, "node") && strcmp(key, "name")) {
            error_setg(errp, "Parameter 'bitmaps[%zu].%s' is unexpected", i,
                       key);
            return NULL;
        }
    }
    return bdrv_dirty_bitmap_lookup(val[0], val[1], NULL, errp);
}

static bool qmp_bitmap_merge(json_t *args, json_t **ret, Error **errp)
{
    const char *node = arg_str(args, "node", NULL);
    json_t *list = json_object_get(args, "bitmaps");
    BdrvDirtyBitmap *dst;
    size_t n = json_array_size(list);
    BdrvDirtyBitmap **src;

    dst = bdrv_dirty_bitmap_lookup(node, arg_str(args, "target", NULL), NULL,
                                   errp);
    if (!dst || !bdrv_dirty_bitmap_check_usable(dst, errp)) {
        return false;
    }
    src = calloc(n ? n : 1, sizeof(*src));
    if (!src) {
        abort();
    }
    /* Check every source first: a refused merge changes nothing. */
    for (size_t i = 0; i < n; i++) {
        src[i] = merge_source(json_array_get(list, i), i, node, errp);
        if (!src[i]) {
            goto fail;
        }
        if (bdrv_dirty_bitmap_inconsistent(src[i])) {
            error_setg(errp, "Bitmap '%s' is inconsistent and cannot be used",
                       bdrv_dirty_bitmap_name(src[i]));
            goto fail;
        }
        if (bdrv_dirty_bitmap_size(src[i]) != bdrv_dirty_bitmap_size(dst)) {
            error_setg(errp, "Bitmaps are of different sizes (destination "
                       "size is %" PRIu64 ", source size is %" PRIu64 ") "
                       "and can't be merged", bdrv_dirty_bitmap_size(dst),
                       bdrv_dirty_bitmap_size(src[i]));
            goto fail;
        }
    }
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
    free(src);
    return true;

fail:
    free(src);
    return false;
}

static bool qmp_bitmap_sha256(json_t *args, json_t **ret, Error **errp)
{
    BdrvDirtyBitmap *bm = lookup(args, errp);

    if (!bm) {
        return false;
    }
    char *hex = bdrv_dirty_bitmap_sha256(bm);
    *ret = json_pack("{s:s}", "sha256", hex);
    free(hex);
    return true;
}

const QmpCommand qmp_bitmap_commands[] = {
    { .name = "block-dirty-bitmap-add", .fn = qmp_bitmap_add,
      .args = add_args },
    { .name = "block-dirty-bitmap-remove", .fn = qmp_bitmap_remove,
      .args = node_name_args },
    { .name = "block-dirty-bitmap-clear", .fn = qmp_bitmap_clear,
      .args = node_name_args },
    { .name = "block-dirty-bitmap-enable", .fn = qmp_bitmap_enable,
      .args = node_name_args },
    { .name = "block-dirty-bitmap-disable", .fn = qmp_bitmap_disable,
      .args = node_name_args },
    { .name = "block-dirty-bitmap-merge", .fn = qmp_bitmap_merge,
      .args = merge_args },
    { .name = "x-debug-block-dirty-bitmap-sha256", .fn = qmp_bitmap_sha256,
      .args = node_name_args },
    { NULL },
};
