/*
 * query-named-block-nodes: BlockDeviceInfo for each node, shaped like
 * qemu-storage-daemon 7.2's (same members, same values for the same graph).
 *
 * Filenames follow qemu's rule: a node has a plain filename when opening
 * that filename would rebuild the same node, that is a protocol node (no
 * children) with none of its driver's strong options set, or a non-filter
 * node over such a protocol node with none of its own strong options set
 * (it takes the child's filename).  Any other node is named by
 * "json:{...}" holding its driver, its strong options and its children's
 * options, recursively.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "block/dirty-bitmap-named.h"
#include "util/alloc.h"

static bool has_strong_options(BlockNode *bs)
{
    const char *const *o = bs->drv->strong_options;

    for (; o && *o; o++) {
        if (json_object_get(bs->options, *o)) {
            return true;
        }
    }
    return false;
}

static char *display_filename(BlockNode *bs);

/* The backing file the image names, made absolute against the image's own
 * directory as qemu does for full-backing-filename. */
static char *full_backing_filename(BlockNode *bs)
{
    const char *slash = strrchr(bs->filename, '/');

    if (bs->backing_file[0] == '/' || !slash ||
        strstr(bs->backing_file, "://") || strstr(bs->filename, "://")) {
        return bj_strdup(bs->backing_file);
    }
    return bj_asprintf("%.*s/%s", (int)(slash - bs->filename), bs->filename,
                       bs->backing_file);
}

/* A backing child the user chose differs from what the image names. */
static bool backing_overridden(BlockNode *bs)
{
    char *named, *actual;
    bool differ;

    if (!bs->backing) {
        return bs->backing_file[0] != '\0';
    }
    if (!bs->backing_file[0]) {
        return true;
    }
    named = full_backing_filename(bs);
    actual = display_filename(bs->backing->node);
    differ = strcmp(named, actual) != 0 && strcmp(bs->backing_file, actual);
    free(named);
    free(actual);
    return differ;
}

/* qemu's exact_filename; NULL when the node needs a json: name. */
static char *exact_filename(BlockNode *bs)
{
    BlockChild *c;

    if (list_empty(&bs->children)) {
        if (has_strong_options(bs)) {
            return NULL;
        }
        if (bs->filename[0]) {
            return bj_strdup(bs->filename);
        }
        return bj_asprintf("%s://", bs->drv->name);
    }
    if (!bs->file || bs->drv->is_filter || has_strong_options(bs) ||
        !list_empty(&bs->file->node->children) || backing_overridden(bs)) {
        return NULL;
    }
    list_for_each_entry(c, &bs->children, child_link) {
        if (c != bs->file && c != bs->backing) {
            return NULL;
        }
    }
    return exact_filename(bs->file->node);
}

/* qemu's full_open_options: driver, strong options, children. */
static json_t *full_options(BlockNode *bs)
{
    json_t *o = json_object();
    const char *const *so = bs->drv->strong_options;
    BlockChild *c;

    json_object_set_new(o, "driver", json_string(bs->drv->name));
    for (; so && *so; so++) {
        json_t *v = json_object_get(bs->options, *so);
        if (v) {
            json_object_set(o, *so, v);
        }
    }
    if (list_empty(&bs->children) && bs->filename[0] &&
        !strstr(bs->filename, "://")) {
        json_object_set_new(o, "filename", json_string(bs->filename));
    }
    list_for_each_entry(c, &bs->children, child_link) {
        if (c == bs->backing && !backing_overridden(bs)) {
            continue;
        }
        json_object_set_new(o, c->name, full_options(c->node));
    }
    if (!bs->backing && bs->backing_file[0]) {
        json_object_set_new(o, "backing", json_null());   /* backing: null */
    }
    return o;
}

static char *display_filename(BlockNode *bs)
{
    char *s = exact_filename(bs);
    json_t *o;
    char *dump;

    if (s) {
        return s;
    }
    o = full_options(bs);
    /* ", " and ": " between members, as qemu prints it. */
    dump = json_dumps(o, JSON_PRESERVE_ORDER);
    json_decref(o);
    assert(dump);     /* jansson allocates with bj_malloc */
    s = bj_asprintf("json:%s", dump);
    free(dump);
    return s;
}

/* The allocated size on disk: from what the driver's query_image said of
 * bs (qi, NULL when it has none), else from the primary child's. */
static json_int_t actual_size(BlockNode *bs, json_t *qi)
{
    if (qi && json_is_integer(json_object_get(qi, "actual-size"))) {
        return json_integer_value(json_object_get(qi, "actual-size"));
    }
    if (bs->file) {
        BlockNode *f = bs->file->node;
        json_auto_t *fqi = NULL;

        if (f->drv->query_image) {
            fqi = json_object();
            f->drv->query_image(f, fqi);
        }
        return actual_size(f, fqi);
    }
    return 0;
}

/* qemu reports dirty-flag when the driver answers get_info: file,
 * host_device and the format drivers do, other protocol drivers do not,
 * and raw asks its file. */
static bool has_info(BlockNode *bs)
{
    if (strcmp(bs->drv->name, "file") == 0 ||
        strcmp(bs->drv->name, "host_device") == 0) {
        return true;
    }
    if (list_empty(&bs->children)) {
        return false;
    }
    if ((strcmp(bs->drv->name, "raw") == 0 || bs->drv->is_filter) &&
        bs->file) {
        return has_info(bs->file->node);
    }
    return true;
}

static int backing_depth(BlockNode *bs)
{
    int n = 0;

    while (bs->backing) {
        n++;
        bs = bs->backing->node;
    }
    return n;
}

/* ImageInfo of bs, whose display name is name.  The driver's query_image
 * runs once (it may stat the file); *encrypted gets what it says. */
static json_t *image_info(BlockNode *bs, const char *name, bool flat,
                          bool *encrypted)
{
    json_t *image = json_object();
    json_auto_t *qi = NULL;
    int64_t vsize = bdrv_getlength(bs);

    if (bs->drv->query_image) {
        qi = json_object();
        bs->drv->query_image(bs, qi);
    }
    *encrypted = qi && json_is_true(json_object_get(qi, "encrypted"));

    /* qemu counts lengths in 512-byte sectors. */
    vsize = (vsize + 511) / 512 * 512;
    json_object_set_new(image, "filename", json_string(name));
    json_object_set_new(image, "format", json_string(bs->drv->name));
    json_object_set_new(image, "virtual-size", json_integer(vsize));
    json_object_set_new(image, "actual-size",
                        json_integer(actual_size(bs, qi)));
    if (has_info(bs)) {
        json_object_set_new(image, "dirty-flag", json_false());
    }
    if (bs->backing_file[0]) {
        json_object_set_new(image, "backing-filename",
                            json_string(bs->backing_file));
        char *full = full_backing_filename(bs);
        json_object_set_new(image, "full-backing-filename",
                            json_string(full));
        free(full);
        if (bs->backing_format[0]) {
            json_object_set_new(image, "backing-filename-format",
                                json_string(bs->backing_format));
        }
    }
    if (qi) {
        /* As if query_image had written into image: its members replace
         * those set above in place, new ones come after them. */
        json_object_update(image, qi);
    }
    if (!flat && bs->backing) {
        BlockNode *b = bs->backing->node;
        char *bname = display_filename(b);
        bool benc;

        json_object_set_new(image, "backing-image",
                            image_info(b, bname, false, &benc));
        free(bname);
    }
    return image;
}

static const char *const detect_zeroes_names[] = { "off", "on", "unmap" };

static json_t *node_info(BlockNode *bs, bool flat)
{
    json_t *info = json_object();
    char *name = display_filename(bs);
    static const char *const zero_members[] = {
        "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr",
    };
    bool encrypted;
    json_t *image = image_info(bs, name, flat, &encrypted);

    json_object_set_new(info, "file", json_string(name));
    json_object_set_new(info, "node-name", json_string(bs->node_name));
    json_object_set_new(info, "ro", json_boolean(bs->read_only));
    json_object_set_new(info, "drv", json_string(bs->drv->name));
    if (bs->backing) {
        char *bname = display_filename(bs->backing->node);
        json_object_set_new(info, "backing_file", json_string(bname));
        free(bname);
    }
    /* qemu counts the depth along the nested backing images, so a flat
     * answer says 0. */
    json_object_set_new(info, "backing_file_depth",
                        json_integer(flat ? 0 : backing_depth(bs)));
    json_object_set_new(info, "encrypted", json_boolean(encrypted));
    json_object_set_new(info, "detect_zeroes",
                        json_string(detect_zeroes_names[bs->detect_zeroes % 3]));
    for (size_t i = 0; i < sizeof(zero_members) / sizeof(zero_members[0]);
         i++) {
        json_object_set_new(info, zero_members[i], json_integer(0));
    }
    json_object_set_new(info, "write_threshold",
                        json_integer((json_int_t)atomic_load(
                            &bs->write_threshold)));
    json_object_set_new(info, "cache",
                        json_pack("{s:b, s:b, s:b}", "writeback", 1,
                                  "direct", bs->cache_direct,
                                  "no-flush", bs->cache_no_flush));
    json_object_set_new(info, "image", image);
    json_t *bitmaps = bdrv_query_dirty_bitmaps(bs);
    if (bitmaps) {
        json_object_set_new(info, "dirty-bitmaps", bitmaps);
    }
    free(name);
    return info;
}

json_t *bdrv_query_node_info(BlockNode *bs)
{
    return node_info(bs, false);
}

json_t *bdrv_query_named_block_nodes(bool flat)
{
    json_t *list = json_array();

    /* qemu lists the newest node first. */
    for (BlockNode *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        json_array_insert_new(list, 0, node_info(bs, flat));
    }
    return list;
}

int bdrv_get_info(BlockNode *bs, BlockDriverInfo *bdi)
{
    *bdi = (BlockDriverInfo){ 0 };
    if (!bs->drv->get_info) {
        return -ENOTSUP;
    }
    return bs->drv->get_info(bs, bdi);
}

/* ---- query-blockstats ---- */

static json_t *stats_of(BlockNode *bs)
{
    const BlockNodeStats *st = &bs->stats;
    static const char *const kind[BLOCK_ACCT__MAX] = {
        [BLOCK_ACCT_READ] = "rd", [BLOCK_ACCT_WRITE] = "wr",
        [BLOCK_ACCT_FLUSH] = "flush", [BLOCK_ACCT_UNMAP] = "unmap",
    };
    json_t *o = json_object();
    char key[64];

    for (int i = 0; i < BLOCK_ACCT__MAX; i++) {
        if (i != BLOCK_ACCT_FLUSH) {
            snprintf(key, sizeof(key), "%s_bytes", kind[i]);
            json_object_set_new(o, key, json_integer(
                (json_int_t)atomic_load(&st->bytes[i])));
            snprintf(key, sizeof(key), "%s_merged", kind[i]);
            json_object_set_new(o, key, json_integer(0));
        }
        snprintf(key, sizeof(key), "%s_operations", kind[i]);
        json_object_set_new(o, key, json_integer(
            (json_int_t)atomic_load(&st->ops[i])));
        snprintf(key, sizeof(key), "%s_total_time_ns", kind[i]);
        json_object_set_new(o, key, json_integer(
            (json_int_t)atomic_load(&st->total_time_ns[i])));
        snprintf(key, sizeof(key), "failed_%s_operations", kind[i]);
        json_object_set_new(o, key, json_integer(
            (json_int_t)atomic_load(&st->failed_ops[i])));
        snprintf(key, sizeof(key), "invalid_%s_operations", kind[i]);
        json_object_set_new(o, key, json_integer(0));
    }
    json_object_set_new(o, "wr_highest_offset", json_integer(
        (json_int_t)atomic_load(&st->wr_highest_offset)));
    /* Requests that fail are counted; requests refused before they start
     * (out of range) are not. */
    json_object_set_new(o, "account_invalid", json_false());
    json_object_set_new(o, "account_failed", json_true());
    json_object_set_new(o, "timed_stats", json_array());
    return o;
}

/* BlockStats of a node: its counters, and its file's as "parent". */
static json_t *node_stats(BlockNode *bs)
{
    json_t *o = json_pack("{s:s, s:o}", "node-name", bs->node_name,
                          "stats", stats_of(bs));
    if (bs->file) {
        json_object_set_new(o, "parent", node_stats(bs->file->node));
    }
    return o;
}

json_t *bdrv_query_blockstats(bool query_nodes)
{
    json_t *list = json_array();

    /* qsd has no devices: without query-nodes there is nothing to list. */
    if (!query_nodes) {
        return list;
    }
    /* The nodes the monitor added, oldest first as qsd lists them (the
     * node list's order). */
    for (BlockNode *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        if (bs->monitor_owned) {
            json_array_append_new(list, node_stats(bs));
        }
    }
    return list;
}

/* ---- x-debug-query-block-graph ---- */

/* Highest bit first, as qemu lists them. */
static json_t *perm_list(uint64_t perm)
{
    static const char *const names[] = {
        "resize", "write-unchanged", "write", "consistent-read",
    };
    static const uint64_t bits[] = {
        BLK_PERM_RESIZE, BLK_PERM_WRITE_UNCHANGED, BLK_PERM_WRITE,
        BLK_PERM_CONSISTENT_READ,
    };
    json_t *l = json_array();

    for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
        if (perm & bits[i]) {
            json_array_append_new(l, json_string(names[i]));
        }
    }
    return l;
}

typedef struct GraphOwner {
    const void *owner;
    int id;
} GraphOwner;

json_t *bdrv_query_block_graph(void)
{
    json_t *nodes = json_array();
    json_t *edges = json_array();
    size_t n = 0, nowners = 0, cap = 0;
    GraphOwner *owners = NULL;

    for (BlockNode *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        n++;
    }
    BlockNode **all = bj_calloc(n ? n : 1, sizeof(*all));
    size_t i = 0;
    for (BlockNode *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        all[i] = bs;
        json_array_append_new(nodes, json_pack("{s:s, s:s, s:I}", "name",
                                               bs->node_name, "type",
                                               "block-driver", "id",
                                               (json_int_t)(i + 1)));
        i++;
    }
    for (i = 0; i < n; i++) {
        BlockChild *c;
        list_for_each_entry(c, &all[i]->parents, parent_link) {
            int parent = 0;
            if (c->klass->parent_is_node) {
                for (size_t j = 0; j < n; j++) {
                    if (all[j] == c->opaque) {
                        parent = (int)j + 1;
                    }
                }
            } else {
                const void *owner = c->opaque;
                const char *type = "block-backend", *name = "";
                if (c->klass->graph_parent) {
                    c->klass->graph_parent(c, &owner, &type, &name);
                }
                for (size_t j = 0; j < nowners; j++) {
                    if (owners[j].owner == owner) {
                        parent = owners[j].id;
                    }
                }
                if (!parent) {
                    if (nowners == cap) {
                        cap = cap ? cap * 2 : 8;
                        owners = bj_realloc(owners, cap * sizeof(*owners));
                    }
                    parent = (int)(n + nowners + 1);
                    owners[nowners++] = (GraphOwner){ owner, parent };
                    json_array_append_new(nodes, json_pack(
                        "{s:s, s:s, s:i}", "name", name, "type", type,
                        "id", parent));
                }
            }
            json_array_append_new(edges, json_pack(
                "{s:i, s:I, s:s, s:o, s:o}", "parent", parent, "child",
                (json_int_t)(i + 1), "name", c->name, "perm",
                perm_list(c->perm), "shared-perm", perm_list(c->shared)));
        }
    }
    free(owners);
    free(all);
    return json_pack("{s:o, s:o}", "nodes", nodes, "edges", edges);
}
