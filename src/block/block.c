/*
 * Nodes: opening (blockdev-add and inline children), naming, reference
 * counts and closing.
 *
 * Opening is all-or-nothing: a node only enters the global list once its
 * driver opened it; on failure its children are detached (dropping the
 * references they held, which closes implicit children) and the node is
 * freed, so nothing half-opened stays in the graph.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "block/dirty-bitmap.h"
#include "util/alloc.h"
#include "util/cleanup.h"
#include "util/log.h"

/* Every node, in the order it finished opening. */
static ListHead all_nodes = LIST_HEAD_INIT(all_nodes);
/* Implicit node names: "#block" + counter + two digits. */
static unsigned implicit_counter;

BlockNode *bdrv_find_node(const char *node_name)
{
    BlockNode *bs;

    list_for_each_entry(bs, &all_nodes, link) {
        if (strcmp(bs->node_name, node_name) == 0) {
            return bs;
        }
    }
    return NULL;
}

BlockNode *bdrv_lookup_node(const char *device, const char *node_name,
                            Error **errp)
{
    BlockNode *bs = bdrv_find_node(node_name);

    if (!bs) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'",
                   device ? device : "", node_name);
    }
    return bs;
}

BlockNode *bdrv_next_node(BlockNode *prev)
{
    ListHead *next = prev ? prev->link.next : all_nodes.next;

    if (next == &all_nodes) {
        return NULL;
    }
    return list_entry(next, BlockNode, link);
}

bool bdrv_is_monitor_owned(BlockNode *bs)
{
    return bs->monitor_owned;
}

/* Links a fully opened node into the global list (refuses duplicates). */
static bool bdrv_node_list_insert(BlockNode *bs, Error **errp)
{
    if (!bs->node_name[0]) {
        do {
            unsigned n = implicit_counter++;
            snprintf(bs->node_name, sizeof(bs->node_name), "#block%03u%02u",
                     n, (n * 37 + 11) % 100);
        } while (bdrv_find_node(bs->node_name));
        bs->implicit_name = true;
    } else if (bdrv_find_node(bs->node_name)) {
        /* An inline child may have claimed the name while we opened. */
        error_setg(errp, "Duplicate nodes with node-name='%s'", bs->node_name);
        return false;
    }
    list_add_tail(&all_nodes, &bs->link);
    return true;
}

/* ---- option checking ---- */

static const char *const discard_values[] = { "ignore", "unmap", NULL };
static const char *const detect_zeroes_values[] = { "off", "on", "unmap",
                                                    NULL };

static const ArgSpec cache_members[] = {
    { .name = "direct", .type = ARG_BOOL, .optional = true },
    { .name = "no-flush", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

static const ArgSpec common_options[] = {
    { .name = "driver", .type = ARG_STR },
    { .name = "node-name", .type = ARG_STR, .optional = true },
    { .name = "discard", .type = ARG_ENUM, .optional = true,
      .enum_values = discard_values },
    { .name = "cache", .type = ARG_OBJECT, .optional = true,
      .members = cache_members },
    { .name = "read-only", .type = ARG_BOOL, .optional = true },
    { .name = "auto-read-only", .type = ARG_BOOL, .optional = true },
    { .name = "force-share", .type = ARG_BOOL, .optional = true },
    { .name = "detect-zeroes", .type = ARG_ENUM, .optional = true,
      .enum_values = detect_zeroes_values },
    { .name = NULL },
};
/* Without the terminator. */
#define N_COMMON (sizeof(common_options) / sizeof(common_options[0]) - 1)

const ArgSpec *bdrv_common_options(void)
{
    return common_options;
}

/* "file." + "driver" for messages; path is "" at the top. */
static char *member_path(const char *path, const char *member)
{
    return bj_asprintf("%s%s", path, member);
}

static const BlockDriver *check_driver(json_t *opts, const char *path,
                                       Error **errp)
{
    json_t *v = json_object_get(opts, "driver");
    CLEANUP_FREE char *name = member_path(path, "driver");
    const BlockDriver *drv;

    if (!v) {
        error_setg(errp, "Parameter '%s' is missing", name);
        return NULL;
    }
    if (!json_is_string(v)) {
        error_setg(errp, "Invalid parameter type for '%s', expected: string",
                   name);
        return NULL;
    }
    drv = bdrv_find_driver(json_string_value(v));
    if (!drv) {
        error_setg(errp, "Parameter '%s' does not accept value '%s'", name,
                   json_string_value(v));
        return NULL;
    }
    return drv;
}

bool bdrv_check_options(const BlockDriver *drv, json_t *opts,
                        const char *prefix, bool coerce, Error **errp)
{
    size_t n = 0;

    for (const ArgSpec *a = drv->options; a && a->name; a++) {
        n++;
    }
    CLEANUP_FREE ArgSpec *spec = bj_calloc(N_COMMON + n + 1, sizeof(*spec));
    memcpy(spec, common_options, N_COMMON * sizeof(*spec));
    if (n) {
        memcpy(spec + N_COMMON, drv->options, n * sizeof(*spec));
    }
    return argspec_check(opts, spec, prefix, coerce, errp);
}

/* As bdrv_check_options, for a child path given as "file." (or ""). */
static bool check_options(const BlockDriver *drv, json_t *opts,
                          const char *path, bool coerce, Error **errp)
{
    /* argspec wants "file" (no trailing dot) as the prefix. */
    CLEANUP_FREE char *prefix = bj_strdup(path);
    if (prefix[0]) {
        prefix[strlen(prefix) - 1] = '\0';
    }
    return bdrv_check_options(drv, opts, prefix, coerce, errp);
}

bool bdrv_check_new_node_name(const char *name, Error **errp)
{
    if (!id_wellformed(name)) {
        error_setg(errp, "Invalid node-name: '%s'", name);
        return false;
    }
    if (bdrv_find_node(name)) {
        error_setg(errp, "Duplicate nodes with node-name='%s'", name);
        return false;
    }
    if (strlen(name) >= sizeof(((BlockNode *)0)->node_name)) {
        error_setg(errp, "Node name too long");
        return false;
    }
    return true;
}

static void node_free(BlockNode *bs)
{
    assert(list_empty(&bs->children));
    assert(list_empty(&bs->parents));
    if (!list_unlinked(&bs->link)) {
        list_del(&bs->link);
    }
    bdrv_release_all_dirty_bitmaps(bs);
    json_decref(bs->options);
    free(bs->op_blocker);
    free(bs->open_path);
    free(bs->opaque);
    free(bs);
}

static void detach_all_children(BlockNode *bs)
{
    BlockChild *c, *tmp;

    list_for_each_entry_safe(c, tmp, &bs->children, child_link) {
        bdrv_detach_child(c);
    }
}

/* The open is over: the children drained for it (bdrv_attach_child) go
 * back to their users. */
static void end_open_drains(BlockNode *bs)
{
    for (size_t i = 0; i < bs->n_open_drained; i++) {
        bdrv_drained_end(bs->open_drained[i]);
        bdrv_unref(bs->open_drained[i]);
    }
    free(bs->open_drained);
    bs->open_drained = NULL;
    bs->n_open_drained = 0;
}

/*
 * Opens one node from checked-by-nobody-yet options.  Runs in a coroutine
 * in the main context.  Returns the node with one reference (the caller's);
 * on failure nothing of it stays in the graph.
 */
static BlockNode *coroutine_fn co_open_node(json_t *opts, const char *path,
                                            bool coerce, bool is_root,
                                            const BlockDriver *internal,
                                            AioContext *ctx, Error **errp)
{
    const BlockDriver *drv;
    BlockNode *bs;
    const char *name;
    json_t *cache;
    int ret;

    if (!json_is_object(opts)) {
        error_setg(errp, "Invalid parameter type for '%.*s', expected: "
                   "BlockdevRef", path[0] ? (int)strlen(path) - 1 : 0, path);
        return NULL;
    }
    /* Filters the daemon inserts itself are not in the driver list. */
    drv = internal ? internal : check_driver(opts, path, errp);
    if (!drv || !check_options(drv, opts, path, coerce, errp)) {
        return NULL;
    }
    name = arg_str(opts, "node-name", NULL);
    if (!name && is_root) {
        error_setg(errp, "'node-name' must be specified for the root node");
        return NULL;
    }
    if (name && !bdrv_check_new_node_name(name, errp)) {
        return NULL;
    }

    bs = bj_calloc(1, sizeof(*bs));
    if (name) {
        snprintf(bs->node_name, sizeof(bs->node_name), "%s", name);
    }
    bs->drv = drv;
    bs->ctx = ctx ? ctx : aio_main_context();
    bs->refcnt = 1;
    list_init(&bs->children);
    list_init(&bs->parents);
    list_init(&bs->link);
    co_queue_init(&bs->postponed);
    bs->bl.request_alignment = 1;
    bs->options = json_deep_copy(opts);
    bs->read_only = arg_bool(opts, "read-only", false);
    bs->auto_read_only = arg_bool(opts, "auto-read-only", false);
    bs->force_share = arg_bool(opts, "force-share", false);
    bs->discard_unmap = arg_enum(opts, "discard", discard_values, 0) == 1;
    bs->detect_zeroes = arg_enum(opts, "detect-zeroes", detect_zeroes_values,
                                 0);
    cache = json_object_get(opts, "cache");
    if (cache) {
        bs->cache_direct = arg_bool(cache, "direct", false);
        bs->cache_no_flush = arg_bool(cache, "no-flush", false);
    }
    bs->open_path = bj_strdup(path);
    bs->open_coerce = coerce;

    if (bs->force_share && !bs->read_only) {
        error_setg(errp, "force-share=on can only be used with read-only "
                   "images");
        goto fail;
    }
    if (bs->detect_zeroes == 2 && !bs->discard_unmap) {
        error_setg(errp, "setting detect-zeroes to unmap is not allowed "
                   "without setting discard operation to unmap");
        goto fail;
    }
    if (drv->state_size) {
        bs->opaque = bj_calloc(1, drv->state_size);
    }
    if (!drv->co_open) {
        error_setg(errp, "Driver '%s' is not available", drv->name);
        goto fail;
    }
    ret = drv->co_open(bs, opts, errp);
    if (ret < 0) {
        goto fail_close;
    }
    if (drv->refresh_limits) {
        drv->refresh_limits(bs);
    } else if (bs->file) {
        bs->bl = bs->file->node->bl;
    }
    if (bs->bl.request_alignment == 0) {
        bs->bl.request_alignment = 1;
    }
    if (drv->co_getlength) {
        int64_t len = drv->co_getlength(bs);
        if (len < 0) {
            error_setg_errno(errp, (int)-len, "Could not get the size of "
                             "node '%s'", bs->node_name);
            goto fail_opened;
        }
        bs->total_bytes = len;
    } else if (bs->total_bytes == 0 && bs->file) {
        /* A filter that does not say its length has its child's. */
        bs->total_bytes = bs->file->node->total_bytes;
    }
    /* Lengths beyond this overflow offset + bytes (and 512-byte rounding
     * in queries): refused with the reference's words. */
    if (bs->total_bytes > BDRV_MAX_LENGTH) {
        error_setg_errno(errp, EFBIG, "Could not refresh total sector count");
        goto fail_opened;
    }
    if (list_unlinked(&bs->link) && !bdrv_node_list_insert(bs, errp)) {
        goto fail_opened;
    }
    free(bs->open_path);
    bs->open_path = NULL;
    end_open_drains(bs);
    return bs;

fail_opened:
    if (drv->close) {
        drv->close(bs);
    }
fail_close:
    detach_all_children(bs);
    end_open_drains(bs);
fail:
    bs->file = NULL;
    bs->backing = NULL;
    node_free(bs);
    return NULL;
}

typedef struct OpenCo {
    json_t *opts;
    const BlockDriver *internal;
    bool is_internal;      /* bdrv_open_internal: node-name optional */
    bool coerce;
    AioContext *ctx;       /* the new node's; NULL: the main context */
    BlockNode *bs;
    Error *err;
} OpenCo;

static void coroutine_fn open_co_entry(void *opaque)
{
    OpenCo *o = opaque;

    o->bs = co_open_node(o->opts, "", o->coerce, !o->is_internal,
                         o->internal, o->ctx, &o->err);
}

/* Runs the open o describes in a coroutine in the main loop and waits. */
static BlockNode *open_and_wait(OpenCo *o, Error **errp)
{
    assert(!coroutine_in_coroutine());
    aio_co_run_wait(aio_main_context(), open_co_entry, o);
    if (!o->bs) {
        error_propagate(errp, o->err);
    }
    return o->bs;
}

BlockNode *bdrv_open_blockdev(json_t *options, bool coerce_strings,
                              Error **errp)
{
    OpenCo o = { .opts = options, .coerce = coerce_strings };
    BlockNode *bs = open_and_wait(&o, errp);

    if (bs) {
        bs->monitor_owned = true;
    }
    return bs;
}

BlockNode *bdrv_open_internal(const BlockDriver *drv, json_t *options,
                              Error **errp)
{
    return bdrv_open_internal_in(drv, options, NULL, errp);
}

BlockNode *bdrv_open_internal_in(const BlockDriver *drv, json_t *options,
                                 AioContext *ctx, Error **errp)
{
    OpenCo o = { .opts = options, .internal = drv, .is_internal = true,
                 .ctx = ctx };

    return open_and_wait(&o, errp);
}

/* Values an inline child takes from its parent unless it sets them. */
static void inherit_options(BlockNode *parent, json_t *child, unsigned role)
{
    json_t *cache;

    if (!json_object_get(child, "read-only")) {
        json_object_set_new(child, "read-only",
                            json_boolean(parent->read_only ||
                                         (role & BLK_ROLE_COW)));
    }
    if (!json_object_get(child, "auto-read-only") && parent->auto_read_only) {
        json_object_set_new(child, "auto-read-only", json_true());
    }
    if (!json_object_get(child, "discard") && parent->discard_unmap) {
        json_object_set_new(child, "discard", json_string("unmap"));
    }
    cache = json_object_get(child, "cache");
    if (json_is_object(cache) || !cache) {
        json_t *c = cache ? cache : json_object();
        if (!json_object_get(c, "direct") && parent->cache_direct) {
            json_object_set_new(c, "direct", json_true());
        }
        if (!json_object_get(c, "no-flush") && parent->cache_no_flush) {
            json_object_set_new(c, "no-flush", json_true());
        }
        if (!cache) {
            if (json_object_size(c)) {
                json_object_set_new(child, "cache", c);
            } else {
                json_decref(c);
            }
        }
    }
}

BlockChild *coroutine_fn bdrv_open_child(BlockNode *bs, json_t *opts,
                                         const char *member, unsigned role,
                                         bool allow_none, Error **errp)
{
    json_t *v = json_object_get(opts, member);
    BlockNode *child;
    BlockChild *c;

    /* qemu names (and lists) a node once its file is open, before its
     * backing chain: keep the same order in query-named-block-nodes. */
    if ((role & BLK_ROLE_COW) && list_unlinked(&bs->link) &&
        !bdrv_node_list_insert(bs, errp)) {
        return NULL;
    }

    if (!v || (json_is_null(v) && allow_none)) {
        if (allow_none) {
            return NULL;
        }
        CLEANUP_FREE char *name = member_path(bs->open_path ?: "", member);
        error_setg(errp, "Parameter '%s' is missing", name);
        return NULL;
    }
    if (json_is_string(v)) {
        const char *ref = json_string_value(v);
        child = bdrv_lookup_node(ref, ref, errp);
        if (!child) {
            return NULL;
        }
        return bdrv_attach_child(bs, child, member, role, errp);
    }
    if (!json_is_object(v)) {
        CLEANUP_FREE char *name = member_path(bs->open_path ?: "", member);
        error_setg(errp, "Invalid parameter type for '%s', expected: "
                   "BlockdevRef", name);
        return NULL;
    }

    json_t *copy = json_deep_copy(v);
    CLEANUP_FREE char *path = bj_asprintf("%s%s.", bs->open_path ?: "",
                                          member);
    inherit_options(bs, copy, role);
    child = co_open_node(copy, path, bs->open_coerce, false, NULL, bs->ctx,
                         errp);
    json_decref(copy);
    if (!child) {
        return NULL;
    }
    c = bdrv_attach_child(bs, child, member, role, errp);
    /* The edge holds its own reference (or the attach failed): either way
     * ours goes, which closes the implicit node if nothing else holds it. */
    bdrv_unref(child);
    return c;
}

/* ---- references and closing ---- */

void bdrv_ref(BlockNode *bs)
{
    assert(bs->refcnt > 0);
    bs->refcnt++;
}

static void node_close(BlockNode *bs)
{
    assert(list_empty(&bs->parents));
    bdrv_drained_begin(bs);
    if (bs->drv->co_flush && !bs->read_only && !bs->cache_no_flush) {
        int ret = bdrv_flush(bs);
        if (ret < 0) {
            log_warn("node '%s': flush on close failed: %s", bs->node_name,
                     strerror(-ret));
        }
    }
    if (bs->drv->close) {
        bs->drv->close(bs);
    }
    /* Nobody can queue behind a node without parents: ending the section
     * here restarts nothing. */
    bdrv_drained_end(bs);
    bs->file = NULL;
    bs->backing = NULL;
    detach_all_children(bs);
    node_free(bs);
}

void bdrv_unref(BlockNode *bs)
{
    if (!bs) {
        return;
    }
    assert(bs->refcnt > 0);
    if (--bs->refcnt == 0) {
        node_close(bs);
    }
}

bool bdrv_del_blockdev(const char *node_name, Error **errp)
{
    BlockNode *bs = bdrv_find_node(node_name);
    BlockChild *c;

    if (!bs) {
        error_setg(errp, "Failed to find node with node-name='%s'", node_name);
        return false;
    }
    if (bs->op_blocker) {
        error_setg(errp, "Node '%s' is busy: %s", node_name, bs->op_blocker);
        return false;
    }
    list_for_each_entry(c, &bs->parents, parent_link) {
        if (!c->klass->parent_is_node) {
            error_setg(errp, "Node %s is in use", node_name);
            return false;
        }
    }
    list_for_each_entry(c, &bs->parents, parent_link) {
        BlockNode *parent = c->opaque;
        if (parent->backing == c) {
            error_setg(errp, "Node '%s' is busy: node is used as backing hd "
                       "of '%s'", node_name, parent->node_name);
            return false;
        }
    }
    if (!bs->monitor_owned) {
        error_setg(errp, "Node %s is not owned by the monitor", node_name);
        return false;
    }
    if (bs->refcnt > 1) {
        error_setg(errp, "Block device %s is in use", node_name);
        return false;
    }
    bs->monitor_owned = false;
    bdrv_unref(bs);
    return true;
}

void bdrv_disown(BlockNode *bs)
{
    assert(bs->monitor_owned);
    bs->monitor_owned = false;
    bdrv_unref(bs);
}

void bdrv_close_all(void)
{
    BlockNode *bs;
    bool progress = true;

    /* Newest first: a node added later may hold an older one as a child,
     * and dropping the monitor's reference on the parent first lets the
     * child close with it. */
    while (progress) {
        progress = false;
        list_for_each_entry_reverse(bs, &all_nodes, link) {
            if (bs->monitor_owned) {
                bs->monitor_owned = false;
                bdrv_unref(bs);
                progress = true;
                break;
            }
        }
    }
    list_for_each_entry(bs, &all_nodes, link) {
        log_warn("node '%s' still has %d reference(s) at exit",
                 bs->node_name, bs->refcnt);
    }
}
