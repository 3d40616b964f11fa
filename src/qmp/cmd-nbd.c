/*
 * NBD server and export commands: nbd-server-start/-stop,
 * block-export-add/-del, query-block-exports (NBD and FUSE exports, one
 * namespace of ids), the deprecated nbd-server-add/-remove; and the debug
 * pair
 * x-debug-drain-begin/-end that holds a node in a drained section so tests
 * can watch NBD requests being postponed and then completed in order.
 * They only translate JSON into calls on nbd/ and block/.
 */
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "export/fuse.h"
#include "nbd/nbd.h"
#include "qmp/commands.h"
#include "qmp/common-args.h"
#include "util/alloc.h"
#include "util/list.h"

static bool qmp_nbd_server_start(json_t *args, json_t **ret, Error **errp)
{
    return nbd_server_start_legacy(args, errp);
}

static bool qmp_nbd_server_stop(json_t *args, json_t **ret, Error **errp)
{
    return nbd_server_stop(errp);
}

/* ---- block-export-add (and --export) ---- */

static const char *const export_types[] = { "nbd", "vhost-user-blk", "fuse",
                                            "vduse-blk", NULL };
/* FUSE_ALLOW_OTHER_* order */
static const char *const allow_other_values[] = { "off", "on", "auto",
                                                  NULL };

/* Each element is checked by qmp_check_bitmap_list, with qemu's words. */
static const ArgSpec bitmap_elem[] = {
    { .name = "", .type = ARG_ANY },
    { .name = NULL },
};

static const ArgSpec block_export_add_args[] = {
    { .name = "type", .type = ARG_ENUM, .enum_values = export_types },
    { .name = "id", .type = ARG_STR },
    { .name = "node-name", .type = ARG_STR },
    { .name = "writable", .type = ARG_BOOL, .optional = true },
    { .name = "writethrough", .type = ARG_BOOL, .optional = true },
    { .name = "iothread", .type = ARG_STR, .optional = true },
    { .name = "fixed-iothread", .type = ARG_BOOL, .optional = true },
    { .name = "name", .type = ARG_STR, .optional = true },
    { .name = "description", .type = ARG_STR, .optional = true },
    { .name = "bitmaps", .type = ARG_ARRAY, .optional = true,
      .members = bitmap_elem },
    { .name = "allocation-depth", .type = ARG_BOOL, .optional = true },
    /* type fuse */
    { .name = "mountpoint", .type = ARG_STR, .optional = true },
    { .name = "growable", .type = ARG_BOOL, .optional = true },
    { .name = "allow-other", .type = ARG_ENUM, .optional = true,
      .enum_values = allow_other_values },
    { .name = NULL },
};

/* Members only one type has: the other refuses them as qsd's union does. */
static const char *const nbd_only[] = { "name", "description", "bitmaps",
                                        "allocation-depth", NULL };
static const char *const fuse_only[] = { "mountpoint", "growable",
                                         "allow-other", NULL };

static bool no_members(json_t *args, const char *const *names, Error **errp)
{
    for (; *names; names++) {
        if (json_object_get(args, *names)) {
            error_setg(errp, "Parameter '%s' is unexpected", *names);
            return false;
        }
    }
    return true;
}

static bool fuse_export_options(json_t *args, Error **errp)
{
    FuseExportOptions o = {
        .id = arg_str(args, "id", NULL),
        .node_name = arg_str(args, "node-name", NULL),
        .mountpoint = arg_str(args, "mountpoint", NULL),
        .writable = arg_bool(args, "writable", false),
        .writethrough = arg_bool(args, "writethrough", false),
        .growable = arg_bool(args, "growable", false),
        .allow_other = arg_enum(args, "allow-other", allow_other_values,
                                FUSE_ALLOW_OTHER_AUTO),
    };

    if (!no_members(args, nbd_only, errp)) {
        return false;
    }
    if (!o.mountpoint) {
        error_setg(errp, "Parameter 'mountpoint' is missing");
        return false;
    }
    if (!id_wellformed(o.id)) {
        error_setg(errp, "Invalid block export id");
        return false;
    }
    if (fuse_export_exists(o.id) || nbd_export_exists(o.id)) {
        error_setg(errp, "Block export id '%s' is already in use", o.id);
        return false;
    }
    if (json_object_get(args, "iothread")) {
        error_setg(errp, "FUSE exports of nodes in an iothread are not "
                   "supported");
        return false;
    }
    return fuse_export_add(&o, errp);
}

/* Checked arguments into o; o->bitmaps is allocated (the caller frees
 * it), the strings stay args'. */
static bool export_options(json_t *args, NbdExportOptions *o, Error **errp)
{
    json_t *bitmaps = json_object_get(args, "bitmaps");
    const char *type = arg_str(args, "type", "nbd");
    const char *node_name = arg_str(args, "node-name", NULL);
    NbdExportBitmap *bm;
    size_t i;
    json_t *el;

    if (bitmaps && !qmp_check_bitmap_list(bitmaps, "", errp)) {
        return false;
    }
    if (strcmp(type, "nbd") != 0) {
        error_setg(errp, "Export type '%s' is not supported", type);
        return false;
    }
    if (!no_members(args, fuse_only, errp)) {
        return false;
    }
    if (fuse_export_exists(arg_str(args, "id", ""))) {
        error_setg(errp, "Block export id '%s' is already in use",
                   arg_str(args, "id", ""));
        return false;
    }
    *o = (NbdExportOptions) {
        .id = arg_str(args, "id", NULL),
        .node_name = node_name,
        .name = arg_str(args, "name", node_name),
        .description = arg_str(args, "description", NULL),
        .iothread = arg_str(args, "iothread", NULL),
        .writable = arg_bool(args, "writable", false),
        .writethrough = arg_bool(args, "writethrough", false),
        .fixed_iothread = arg_bool(args, "fixed-iothread", false),
        .allocation_depth = arg_bool(args, "allocation-depth", false),
        .n_bitmaps = json_array_size(bitmaps),
    };
    bm = bj_try_calloc(o->n_bitmaps ? o->n_bitmaps : 1, sizeof(*bm));
    if (!bm) {
        error_setg(errp, "Out of memory");
        return false;
    }
    json_array_foreach(bitmaps, i, el) {
        if (json_is_string(el)) {
            bm[i].name = json_string_value(el);
        } else {
            bm[i].node = arg_str(el, "node", NULL);
            bm[i].name = arg_str(el, "name", NULL);
        }
    }
    o->bitmaps = bm;
    return true;
}

static bool qmp_block_export_add(json_t *args, json_t **ret, Error **errp)
{
    NbdExportOptions o;
    bool ok;

    if (strcmp(arg_str(args, "type", "nbd"), "fuse") == 0) {
        return fuse_export_options(args, errp);
    }
    if (!export_options(args, &o, errp)) {
        return false;
    }
    ok = nbd_export_add(&o, errp);
    free((NbdExportBitmap *)o.bitmaps);
    return ok;
}

/* ---- nbd-server-add, nbd-server-remove (deprecated in qemu 7.2) ---- */

static const ArgSpec nbd_server_add_args[] = {
    { .name = "name", .type = ARG_STR, .optional = true },
    { .name = "description", .type = ARG_STR, .optional = true },
    { .name = "device", .type = ARG_STR },
    { .name = "writable", .type = ARG_BOOL, .optional = true },
    { .name = "bitmap", .type = ARG_STR, .optional = true },
    { .name = NULL },
};

/* block-export-add with qsd's defaults for the old command: the export's id
 * and NBD name are `name`, else the device; a read-only node is exported
 * read-only even when asked writable (not an error, as it is for
 * block-export-add); one local bitmap. */
static bool qmp_nbd_server_add(json_t *args, json_t **ret, Error **errp)
{
    const char *device = arg_str(args, "device", "");
    const char *bitmap = arg_str(args, "bitmap", NULL);
    BlockNode *bs = bdrv_lookup_node(device, device, errp);

    if (!bs) {
        return false;
    }
    const char *name = arg_str(args, "name", device);
    NbdExportBitmap bm = { .name = bitmap };
    NbdExportOptions o = {
        .id = name,
        .node_name = bs->node_name,
        .name = name,
        .description = arg_str(args, "description", NULL),
        .writable = arg_bool(args, "writable", false) && !bs->read_only,
        .n_bitmaps = bitmap ? 1 : 0,
        .bitmaps = &bm,
    };
    return nbd_export_add(&o, errp);
}

static const char *const del_modes[] = { "safe", "hard", NULL };

static const ArgSpec nbd_server_remove_args[] = {
    { .name = "name", .type = ARG_STR },
    { .name = "mode", .type = ARG_ENUM, .optional = true,
      .enum_values = del_modes },
    { .name = NULL },
};

/* block-export-del of the export named so (every export here is NBD). */
static bool qmp_nbd_server_remove(json_t *args, json_t **ret, Error **errp)
{
    return nbd_export_del(arg_str(args, "name", NULL),
                          arg_enum(args, "mode", del_modes, 0) == 1, errp);
}

static const char *const deprecated[] = { "deprecated", NULL };

/* ---- block-export-del, query-block-exports ---- */

static const ArgSpec block_export_del_args[] = {
    { .name = "id", .type = ARG_STR },
    { .name = "mode", .type = ARG_ENUM, .optional = true, .enum_values = del_modes },
    { .name = NULL },
};

static bool qmp_block_export_del(json_t *args, json_t **ret, Error **errp)
{
    if (fuse_export_exists(arg_str(args, "id", ""))) {
        return fuse_export_del(arg_str(args, "id", NULL), errp);
    }
    return nbd_export_del(arg_str(args, "id", NULL),
                          arg_enum(args, "mode", del_modes, 0) == 1, errp);
}

static bool qmp_query_block_exports(json_t *args, json_t **ret,
                                    Error **errp)
{
    *ret = nbd_export_query();
    fuse_export_query(*ret);
    return true;
}

/* ---- x-debug-drain-begin/-end ---- */

/* Drained sections opened by x-debug-drain-begin, each holding a node
 * reference, so that -end can only close what -begin opened. */
typedef struct DebugDrain {
    BlockNode *bs;
    ListHead link;
} DebugDrain;

static ListHead debug_drains = LIST_HEAD_INIT(debug_drains);

static const ArgSpec drain_args[] = {
    { .name = "node-name", .type = ARG_STR },
    { .name = NULL },
};

static BlockNode *drain_node(json_t *args, Error **errp)
{
    return bdrv_lookup_node(NULL, arg_str(args, "node-name", NULL), errp);
}

static bool qmp_x_debug_drain_begin(json_t *args, json_t **ret, Error **errp)
{
    BlockNode *bs = drain_node(args, errp);
    DebugDrain *d;

    if (!bs) {
        return false;
    }
    d = bj_calloc(1, sizeof(*d));
    bdrv_ref(bs);
    d->bs = bs;
    list_add_tail(&debug_drains, &d->link);
    bdrv_drained_begin(bs);
    return true;
}

static bool qmp_x_debug_drain_end(json_t *args, json_t **ret, Error **errp)
{
    BlockNode *bs = drain_node(args, errp);
    DebugDrain *d;

    if (!bs) {
        return false;
    }
    list_for_each_entry(d, &debug_drains, link) {
        if (d->bs == bs) {
            list_del(&d->link);
            free(d);
            bdrv_drained_end(bs);
            bdrv_unref(bs);
            return true;
        }
    }
    error_setg(errp, "Node '%s' is not drained by x-debug-drain-begin",
               bs->node_name);
    return false;
}

void qmp_debug_drains_end_all(void)
{
    DebugDrain *d, *tmp;

    list_for_each_entry_safe(d, tmp, &debug_drains, link) {
        BlockNode *bs = d->bs;

        list_del(&d->link);
        free(d);
        bdrv_drained_end(bs);
        bdrv_unref(bs);
    }
}

static const ArgSpec no_args[] = { { .name = NULL } };

const QmpCommand qmp_nbd_commands[] = {
    { .name = "nbd-server-start", .fn = qmp_nbd_server_start,
      .args = nbd_server_start_args },
    { .name = "nbd-server-stop", .fn = qmp_nbd_server_stop, .args = no_args },
    { .name = "nbd-server-add", .fn = qmp_nbd_server_add,
      .args = nbd_server_add_args, .features = deprecated },
    { .name = "nbd-server-remove", .fn = qmp_nbd_server_remove,
      .args = nbd_server_remove_args, .features = deprecated },
    { .name = "block-export-add", .fn = qmp_block_export_add,
      .args = block_export_add_args },
    { .name = "block-export-del", .fn = qmp_block_export_del,
      .args = block_export_del_args },
    { .name = "query-block-exports", .fn = qmp_query_block_exports,
      .args = no_args, .ret = qmp_ret_array },
    { .name = "x-debug-drain-begin", .fn = qmp_x_debug_drain_begin,
      .args = drain_args, .features = qmp_features_unstable },
    { .name = "x-debug-drain-end", .fn = qmp_x_debug_drain_end,
      .args = drain_args, .features = qmp_features_unstable },
    { .name = NULL },
};
