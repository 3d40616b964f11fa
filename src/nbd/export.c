/*
 * NBD exports: block-export-add/-del/query and the export table the
 * handshake looks names up in.  Main loop only.
 *
 * An export is an external user of its node: it holds a BlockChild whose
 * class postpones requests while the node is drained, taking consistent
 * read (and write when writable) and sharing everything, as
 * qemu-storage-daemon's exports do.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/iothread.h"
#include "block/chain.h"
#include "block/dirty-bitmap-named.h"
#include "nbd/nbd-int.h"
#include "nbd/nbd-meta.h"
#include "nbd/nbd.h"
#include "util/alloc.h"
#include "util/event.h"
#include "util/log.h"

/* The exports that are visible (not being deleted), newest first. */
static ListHead export_list = LIST_HEAD_INIT(export_list);
/* Exports not yet freed, visible or not (for shutdown). */
static unsigned exports_alive;

static char *export_parent_desc(BlockChild *c)
{
    /* What qemu says of the anonymous block backend behind an export
     * (qsd 7.2: "... unshared by an unnamed block device (uses node 'r' as
     * 'root' child)" when block_resize meets an export). */
    return bj_strdup("an unnamed block device");
}

static bool export_drained_poll(BlockChild *c)
{
    /* Our requests are all counted in the node's in_flight. */
    return false;
}

static bool export_can_change_ctx(BlockChild *c, AioContext *ctx)
{
    NbdExport *exp = c->opaque;

    /* As qsd: fixed-iothread pins the export (and so its node). */
    return !exp->fixed_iothread;
}

/* The move runs the main loop, where a deleted export's last connection
 * may end: the export (and its edge, which the move walks) stays until a
 * bottom half after the move. */
static void export_change_ctx_begin(BlockChild *c)
{
    NbdExport *exp = c->opaque;

    exp->moving = true;
    nbd_export_ref(exp);
}

static void export_unref_bh(void *opaque)
{
    nbd_export_unref(opaque);
}

/* The node moved (drained): the export and its live connections follow,
 * frozen until the whole move is over. */
static void export_change_ctx(BlockChild *c, AioContext *old, AioContext *ctx)
{
    NbdExport *exp = c->opaque;
    NbdConn *conn;

    exp->ctx = ctx;
    /* From the head again after each: the main loop ran meanwhile, and
     * connections may have ended. */
restart:
    list_for_each_entry(conn, &exp->conns, export_link) {
        if (nbd_conn_move(conn, ctx)) {
            goto restart;
        }
    }
}

static void export_change_ctx_end(BlockChild *c)
{
    NbdExport *exp = c->opaque;
    NbdConn *conn;

    exp->moving = false;
restart:
    list_for_each_entry(conn, &exp->conns, export_link) {
        if (nbd_conn_move_done(conn)) {
            goto restart;
        }
    }
    aio_bh_schedule_oneshot(aio_main_context(), export_unref_bh, exp);
}

static const BlockChildClass export_child_class = {
    .parent_is_node = false,
    .get_parent_desc = export_parent_desc,
    .drained_poll = export_drained_poll,
    .postpone_requests_when_drained = true,
    .guest_io = true,
    .can_change_ctx = export_can_change_ctx,
    .change_ctx_begin = export_change_ctx_begin,
    .change_ctx = export_change_ctx,
    .change_ctx_end = export_change_ctx_end,
};

static NbdExport *find_by_id(const char *id)
{
    NbdExport *exp;

    list_for_each_entry(exp, &export_list, link) {
        if (strcmp(exp->id, id) == 0) {
            return exp;
        }
    }
    return NULL;
}

static NbdExport *find_by_name(const char *name)
{
    NbdExport *exp;

    list_for_each_entry(exp, &export_list, link) {
        if (strcmp(exp->name, name) == 0) {
            return exp;
        }
    }
    return NULL;
}

/* ---- the table the handshake sees ---- */

static void fill_info(NbdExport *exp, NbdExportInfo *info)
{
    BlockNode *bs = exp->child->node;
    uint32_t align = bs->bl.request_alignment ? bs->bl.request_alignment : 1;
    int64_t len = bdrv_getlength(bs);

    info->name = exp->name;
    info->description = exp->description;
    info->size = len < 0 ? 0 : (uint64_t)len;
    info->tflags = NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                   NBD_FLAG_SEND_CACHE |
                   /* Every connection goes through the same node in this
                    * process, so a flush or FUA on one is visible on all. */
                   NBD_FLAG_CAN_MULTI_CONN;
    if (exp->writable) {
        info->tflags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                        NBD_FLAG_SEND_FAST_ZERO;
    } else {
        info->tflags |= NBD_FLAG_READ_ONLY;
    }
    info->min_block = align;
    info->pref_block = align > 4096 ? align : 4096;
    info->max_block = NBD_MAX_PAYLOAD - NBD_MAX_PAYLOAD % align;
    info->allocation_depth = exp->allocation_depth;
    info->bitmaps = (const char *const *)exp->bitmap_names;
    info->n_bitmaps = exp->n_bitmaps;
    info->handle = exp;
}

static bool lookup_find(void *opaque, const char *name, NbdExportInfo *info)
{
    NbdExport *exp = find_by_name(name);

    if (!exp) {
        return false;
    }
    fill_info(exp, info);
    return true;
}

static void lookup_for_each(void *opaque, NbdExportInfoFn *fn,
                            void *fn_opaque)
{
    NbdExport *exp;

    list_for_each_entry_reverse(exp, &export_list, link) {
        NbdExportInfo info;
        fill_info(exp, &info);
        fn(&info, fn_opaque);
    }
}

const NbdExportLookup nbd_export_lookup = {
    .find = lookup_find,
    .for_each = lookup_for_each,
};

/* ---- lifetime ---- */

/* ---- exported bitmaps ---- */

/* taken: export_take_bitmaps ran (else only export_find_bitmaps did). */
static void export_release_bitmaps(NbdExport *exp, bool taken)
{
    for (unsigned i = 0; i < exp->n_bitmaps; i++) {
        if (taken) {
            /* Before the node goes: its last reference frees the bitmap. */
            bdrv_dirty_bitmap_set_busy(exp->bitmaps[i], false);
            bdrv_unref(exp->bitmap_nodes[i]);
        }
        free(exp->bitmap_names[i]);
    }
    bj_free_clear(&exp->bitmaps);
    bj_free_clear(&exp->bitmap_nodes);
    bj_free_clear(&exp->bitmap_names);
    exp->n_bitmaps = 0;
}

/*
 * Finds the bitmaps of block-export-add's "bitmaps", as
 * qemu-storage-daemon 7.2 does: a name is looked up on the
 * exported node, then down its backing chain (so a fleecing overlay finds
 * the bitmap of the node it reads through); {node, name} anywhere.  Only
 * a name found that way must not be a recording bitmap on a writable node
 * behind a read-only export (the client would see it change).  Nothing is
 * marked busy or referenced yet: export_take_bitmaps does that once the
 * export cannot fail any more.
 */
static bool export_find_bitmaps(NbdExport *exp, BlockNode *bs,
                                const NbdExportBitmap *bitmaps, size_t n,
                                bool writable, Error **errp)
{
    if (n == 0) {
        return true;
    }
    exp->bitmaps = bj_calloc(n, sizeof(*exp->bitmaps));
    exp->bitmap_nodes = bj_calloc(n, sizeof(*exp->bitmap_nodes));
    exp->bitmap_names = bj_calloc(n, sizeof(*exp->bitmap_names));
    exp->n_bitmaps = (unsigned)n;
    for (size_t i = 0; i < n; i++) {
        const NbdExportBitmap *el = &bitmaps[i];
        const char *name = el->name;
        BdrvDirtyBitmap *bm = NULL;
        BlockNode *where = NULL;

        if (!el->node) {
            for (where = bs; where && !bm; ) {
                bm = bdrv_find_dirty_bitmap(where, name);
                if (!bm) {
                    where = block_chain_next(where);
                }
            }
            if (!bm) {
                error_setg(errp, "Bitmap '%s' is not found", name);
                return false;
            }
        } else {
            bm = bdrv_dirty_bitmap_lookup(el->node, name, &where, errp);
            if (!bm) {
                return false;
            }
        }
        if (!bdrv_dirty_bitmap_check_usable(bm, errp)) {
            return false;
        }
        if (!el->node && !writable && !where->read_only &&
            bdrv_dirty_bitmap_enabled(bm)) {
            error_setg(errp, "Enabled bitmap '%s' incompatible with readonly "
                       "export", name);
            return false;
        }
        /* Our connections read the bitmap in the export's thread; writes
         * mark it in its node's. */
        if (where->ctx != bs->ctx) {
            error_setg(errp, "Bitmap '%s' is not in the iothread of node "
                       "'%s'", name, bs->node_name);
            return false;
        }
        exp->bitmaps[i] = bm;
        exp->bitmap_nodes[i] = where;
        exp->bitmap_names[i] = bj_strdup(bdrv_dirty_bitmap_name(bm));
    }
    return true;
}

/* The export exists: its bitmaps become busy, their nodes referenced. */
static void export_take_bitmaps(NbdExport *exp)
{
    for (unsigned i = 0; i < exp->n_bitmaps; i++) {
        bdrv_ref(exp->bitmap_nodes[i]);
        bdrv_dirty_bitmap_set_busy(exp->bitmaps[i], true);
    }
}

void nbd_export_ref(NbdExport *exp)
{
    exp->refcnt++;
}

void nbd_export_unref(NbdExport *exp)
{
    if (--exp->refcnt > 0) {
        return;
    }
    /* Only connections keep a deleted export: none is left. */
    export_release_bitmaps(exp, true);
    bdrv_detach_child(exp->child);
    event_emit("BLOCK_EXPORT_DELETED", json_pack("{s:s}", "id", exp->id));
    free(exp->id);
    free(exp->name);
    free(exp->description);
    free(exp);
    exports_alive--;
    aio_wait_kick();
}

unsigned nbd_export_alive(void)
{
    return exports_alive;
}

/* Takes exp out of the list (it can no longer be found or chosen) and
 * drops the list's reference. */
static void export_delete(NbdExport *exp, bool hard)
{
    NbdConn *c;

    exp->shutting_down = true;
    list_del(&exp->link);
    if (hard) {
        list_for_each_entry(c, &exp->conns, export_link) {
            nbd_conn_close(c);
        }
    }
    nbd_export_unref(exp);
}

void nbd_export_delete_all(void)
{
    while (!list_empty(&export_list)) {
        export_delete(list_first_entry(&export_list, NbdExport, link), true);
    }
}

bool nbd_export_add(const NbdExportOptions *o, Error **errp)
{
    const char *id = o->id;
    const char *node_name = o->node_name;
    const char *name = o->name ? o->name : node_name;
    const char *desc = o->description;
    const char *iothread = o->iothread;
    bool writable = o->writable;
    bool fixed = o->fixed_iothread;
    BlockNode *bs;
    NbdExport *exp;

    if (!id_wellformed(id)) {
        error_setg(errp, "Invalid block export id");
        return false;
    }
    if (find_by_id(id)) {
        error_setg(errp, "Block export id '%s' is already in use", id);
        return false;
    }
    bs = bdrv_lookup_node(NULL, node_name, errp);
    if (!bs) {
        return false;
    }
    if (writable && bs->read_only) {
        error_setg(errp, "Cannot export read-only node as writable");
        return false;
    }
    if (iothread) {
        IOThread *t = iothread_find(iothread);
        Error *local = NULL;
        if (!t) {
            error_setg(errp, "iothread \"%s\" not found", iothread);
            return false;
        }
        /* As qsd: the node moves with everything connected to it, other
         * exports without fixed-iothread (and their clients) included. */
        bdrv_move_to_context(bs, iothread_get_context(t), &local);
        if (local) {
            if (fixed) {
                error_propagate(errp, local);
                return false;
            }
            /* Without fixed-iothread the export stays where the node is. */
            error_free(local);
        }
    }

    if (!nbd_server_running()) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    if (strlen(name) > NBD_MAX_STRING_SIZE) {
        error_setg(errp, "export name '%s' too long", name);
        return false;
    }
    if (desc && strlen(desc) > NBD_MAX_STRING_SIZE) {
        error_setg(errp, "description '%s' too long", desc);
        return false;
    }
    if (find_by_name(name)) {
        error_setg(errp, "NBD server already has export named '%s'", name);
        return false;
    }
    exp = bj_calloc(1, sizeof(*exp));
    if (!export_find_bitmaps(exp, bs, o->bitmaps, o->n_bitmaps, writable,
                             errp)) {
        export_release_bitmaps(exp, false);
        free(exp);
        return false;
    }
    uint64_t perm = BLK_PERM_CONSISTENT_READ |
                    (writable ? BLK_PERM_WRITE : 0);
    /* Clients see a fixed size for the life of the connection, so nobody
     * may resize the node under an export (qemu-storage-daemon's exports
     * refuse to share resize too, which their image locks show). */
    uint64_t shared = BLK_PERM_ALL & ~BLK_PERM_RESIZE;
    exp->child = bdrv_root_attach_child(bs, "root", &export_child_class, exp,
                                        perm, shared, errp);
    if (!exp->child) {
        export_release_bitmaps(exp, false);
        free(exp);
        return false;
    }
    export_take_bitmaps(exp);
    exp->allocation_depth = o->allocation_depth;
    exp->id = bj_strdup(id);
    exp->name = bj_strdup(name);
    exp->description = desc ? bj_strdup(desc) : NULL;
    exp->ctx = bs->ctx;
    exp->writable = writable;
    exp->fixed_iothread = fixed;
    exp->writethrough = o->writethrough;
    exp->refcnt = 1;
    list_init(&exp->conns);
    list_add_head(&export_list, &exp->link);
    exports_alive++;
    return true;
}

bool nbd_export_del(const char *id, bool hard, Error **errp)
{
    NbdExport *exp = find_by_id(id);

    if (!exp) {
        error_setg(errp, "Export '%s' is not found", id);
        return false;
    }
    if (!hard && !list_empty(&exp->conns)) {
        error_setg(errp, "export '%s' still in use", id);
        return false;
    }
    export_delete(exp, hard);
    return true;
}

bool nbd_export_exists(const char *id)
{
    return find_by_id(id) != NULL;
}

json_t *nbd_export_query(void)
{
    json_t *list = json_array();
    NbdExport *exp;

    list_for_each_entry(exp, &export_list, link) {
        json_array_append_new(list, json_pack(
            "{s:s, s:s, s:s, s:b}", "id", exp->id, "type", "nbd",
            "node-name", exp->child->node->node_name,
            "shutting-down", exp->shutting_down));
    }
    return list;
}
