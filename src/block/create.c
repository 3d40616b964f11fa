/*
 * What the drivers' blockdev-create entries share (see create.h).
 */
#include "block/create.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aio/aio.h"
#include "util/alloc.h"
#include "util/argspec.h"

const char *const bdrv_blockdev_driver_names[] = {
    "blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs", "cloop",
    "compress", "copy-before-write", "copy-on-read", "dmg", "file",
    "snapshot-access", "ftp", "ftps", "gluster", "host_cdrom", "host_device",
    "http", "https", "iscsi", "luks", "nbd", "nfs", "null-aio", "null-co",
    "nvme", "parallels", "preallocate", "qcow", "qcow2", "qed", "quorum",
    "raw", "rbd", "replication", "ssh", "throttle", "vdi", "vhdx", "vmdk",
    "vpc", "vvfat", NULL,
};

const char *const bdrv_prealloc_names[] = {
    "off", "metadata", "falloc", "full", NULL,
};

uint64_t bdrv_create_opt_u64(json_t *opts, const char *name, uint64_t def)
{
    json_t *v = json_object_get(opts, name);

    return v ? (uint64_t)json_integer_value(v) : def;
}

bool bdrv_create_check_u64(json_t *opts, const char *name, Error **errp)
{
    json_t *v = json_object_get(opts, name);

    if (v && !json_is_integer(v)) {
        error_setg(errp, "Parameter 'options.%s' expects uint64", name);
        return false;
    }
    return true;
}

bool bdrv_create_check_ref(json_t *opts, const char *name, Error **errp)
{
    json_t *v = json_object_get(opts, name);

    if (v && !json_is_string(v) && !json_is_object(v)) {
        error_setg(errp, "Invalid parameter type for '%s', expected: "
                   "BlockdevRef", name);
        return false;
    }
    return true;
}

static bool is_blockdev_driver(const char *name)
{
    for (const char *const *d = bdrv_blockdev_driver_names; *d; d++) {
        if (strcmp(*d, name) == 0) {
            return true;
        }
    }
    return false;
}

/* An inline BlockdevOptions, checked against the schema as qemu does at
 * the boundary; opening it is the job's part. */
static bool check_inline_node(json_t *opts, const char *path, Error **errp)
{
    json_t *drv = json_object_get(opts, "driver");
    const BlockDriver *d;
    bool ok;

    if (!drv) {
        error_setg(errp, "Parameter '%s.driver' is missing", path);
        return false;
    }
    if (!json_is_string(drv)) {
        error_setg(errp, "Invalid parameter type for '%s.driver', expected: "
                   "string", path);
        return false;
    }
    d = bdrv_find_driver(json_string_value(drv));
    if (!d) {
        if (!is_blockdev_driver(json_string_value(drv))) {
            error_setg(errp, "Parameter 'driver' does not accept value '%s'",
                       json_string_value(drv));
            return false;
        }
        return true;     /* a driver we lack: opening it will say so */
    }
    ok = bdrv_check_options(d, opts, path, false, errp);
    for (const ArgSpec *a = d->options; ok && a && a->name; a++) {
        json_t *child = json_object_get(opts, a->name);
        if ((a->type == ARG_REF || a->type == ARG_REF_OR_NULL) &&
            json_is_object(child)) {
            char *cpath = bj_asprintf("%s.%s", path, a->name);
            ok = check_inline_node(child, cpath, errp);
            free(cpath);
        }
    }
    return ok;
}

bool bdrv_create_check_inline_ref(json_t *opts, const char *name,
                                  Error **errp)
{
    json_t *v = json_object_get(opts, name);
    char *path;
    bool ok;

    if (!json_is_object(v)) {
        return true;
    }
    path = bj_asprintf("options.%s", name);
    ok = check_inline_node(v, path, errp);
    free(path);
    return ok;
}

/* ---- the target node ---- */

static char *create_child_desc(BlockChild *c)
{
    return bj_strdup("an unnamed block device");
}

/* The creating job's edge on the file node: like qemu's anonymous
 * BlockBackend, it is named in permission messages as such, and its
 * requests wait out a drained section rather than run inside it. */
static const BlockChildClass create_child_class = {
    .get_parent_desc = create_child_desc,
    .postpone_requests_when_drained = true,
};

/*
 * Opening and deleting nodes are main-loop operations that poll; the job
 * body is a coroutine, so they run in a bottom half while it waits.
 */
typedef struct MainCall {
    void (*fn)(void *opaque);
    void *opaque;
    Coroutine *co;
} MainCall;

static void main_call_bh(void *opaque)
{
    MainCall *m = opaque;

    m->fn(m->opaque);
    aio_co_wake(m->co);
}

static void coroutine_fn co_run_in_main_loop(void (*fn)(void *opaque),
                                             void *opaque)
{
    MainCall m = { .fn = fn, .opaque = opaque, .co = coroutine_self() };

    aio_bh_schedule_oneshot(aio_main_context(), main_call_bh, &m);
    coroutine_yield();
}

typedef struct InlineOpen {
    json_t *opts;
    BlockNode *bs;
    Error *err;
} InlineOpen;

static void inline_open(void *opaque)
{
    InlineOpen *o = opaque;

    o->bs = bdrv_open_blockdev(o->opts, false, &o->err);
}

static void inline_close(void *opaque)
{
    BlockCreateTarget *t = opaque;
    Error *err = NULL;

    if (!bdrv_del_blockdev(t->name, &err)) {
        error_report_err(err, "blockdev-create: closing the inline file");
    }
}

BlockNode *coroutine_fn bdrv_co_create_target_open(BlockCreateTarget *t,
                                                   json_t *ref,
                                                   const char *job_id,
                                                   Error **errp)
{
    InlineOpen o = { 0 };

    *t = (BlockCreateTarget){ 0 };
    if (json_is_string(ref)) {
        t->bs = bdrv_lookup_node(json_string_value(ref),
                                 json_string_value(ref), errp);
        return t->bs;
    }
    /* The layer opens only named nodes at the top. */
    o.opts = json_deep_copy(ref);
    if (!json_object_get(o.opts, "node-name")) {
        snprintf(t->name, sizeof(t->name), "bj-create-%.20s", job_id);
        json_object_set_new(o.opts, "node-name", json_string(t->name));
    } else {
        snprintf(t->name, sizeof(t->name), "%s",
                 arg_str(o.opts, "node-name", ""));
    }
    co_run_in_main_loop(inline_open, &o);
    json_decref(o.opts);
    if (!o.bs) {
        error_propagate(errp, o.err);
        return NULL;
    }
    t->bs = o.bs;
    t->opened_inline = true;
    return t->bs;
}

/* Moves the calling coroutine to ctx (no-op when it runs there). */
static void coroutine_fn co_move_to(AioContext *ctx)
{
    if (aio_current_context() != ctx) {
        aio_co_schedule(ctx, coroutine_self());
        coroutine_yield();
    }
}

BlockChild *coroutine_fn bdrv_create_target_attach(BlockCreateTarget *t,
                                                   Error **errp)
{
    BlockNode *bs = t->bs;
    bool iothread = bs->ctx != aio_main_context();

    /* In an iothread, other users' requests check the permissions below
     * bs there: they wait while the edge appears. */
    if (iothread) {
        bdrv_drained_begin(bs);
    }
    t->child = bdrv_root_attach_child(bs, "root", &create_child_class, t,
                                      BLK_PERM_WRITE | BLK_PERM_RESIZE,
                                      BLK_PERM_ALL, errp);
    if (iothread) {
        bdrv_drained_end(bs);
    }
    /* The writes go where the node lives; close comes back.  The edge is
     * not a node's, so nobody moves bs meanwhile (it is an active user). */
    if (t->child && iothread) {
        t->home = aio_current_context();
        co_move_to(bs->ctx);
    }
    return t->child;
}

void coroutine_fn bdrv_co_create_target_close(BlockCreateTarget *t)
{
    if (t->home) {
        co_move_to(t->home);
        t->home = NULL;
    }
    if (t->child) {
        bool iothread = t->bs->ctx != aio_main_context();
        if (iothread) {
            bdrv_drained_begin(t->bs);
        }
        bdrv_detach_child(t->child);
        t->child = NULL;
        if (iothread) {
            bdrv_drained_end(t->bs);
        }
    }
    if (t->opened_inline) {
        co_run_in_main_loop(inline_close, t);
        t->opened_inline = false;
    }
    t->bs = NULL;
}

/* ---- creating an image outside a job (blockdev-snapshot-sync) ---- */

typedef struct ImgCreate {
    const BlockDriver *drv;
    json_t *opts;
    Error *err;
    int ret;
} ImgCreate;

static void coroutine_fn img_create_co(void *opaque)
{
    ImgCreate *c = opaque;

    c->ret = c->drv->co_create(c->opts, "img-create", &c->err);
}

/* One driver's create step on opts (taken), in the main loop. */
static bool run_create(const char *driver, json_t *opts, Error **errp)
{
    ImgCreate c = { .drv = bdrv_find_driver(driver), .opts = opts };
    bool ok;

    assert(c.drv && c.drv->co_create);
    if (c.drv->create_check && !c.drv->create_check(opts, errp)) {
        json_decref(opts);
        return false;
    }
    aio_co_run_wait(aio_main_context(), img_create_co, &c);
    ok = c.ret >= 0;
    if (!ok) {
        if (!c.err) {
            error_setg_errno(&c.err, -c.ret, "Could not create image");
        }
        error_propagate(errp, c.err);
    } else if (c.err) {
        error_free(c.err);
    }
    json_decref(opts);
    return ok;
}

bool bdrv_img_create(const char *filename, const char *fmt, uint64_t size,
                     const char *backing_file, const char *backing_fmt,
                     Error **errp)
{
    const BlockDriver *drv = bdrv_find_driver(fmt);
    bool plain = !strcmp(fmt, "raw") || !strcmp(fmt, "file");

    if (!drv || (!plain && !drv->co_create)) {
        error_setg(errp, "Unknown file format '%s'", fmt);
        return false;
    }
    if (backing_file && !drv->supports_backing) {
        error_setg(errp, "Backing file not supported for file format '%s'",
                   fmt);
        return false;
    }
    /* The file, at the image's size when the format is raw. */
    if (!run_create("file", json_pack("{s:s, s:s, s:I}", "driver", "file",
                                      "filename", filename, "size",
                                      (json_int_t)(plain ? size : 0)),
                    errp)) {
        return false;
    }
    if (plain) {
        return true;
    }
    json_t *opts = json_pack("{s:s, s:{s:s, s:s}, s:I}", "driver", fmt,
                             "file", "driver", "file", "filename", filename,
                             "size", (json_int_t)size);
    if (backing_file) {
        json_object_set_new(opts, "backing-file", json_string(backing_file));
        if (backing_fmt) {
            json_object_set_new(opts, "backing-fmt", json_string(backing_fmt));
        }
    }
    return run_create(fmt, opts, errp);
}

const char *bdrv_probe_format(const char *filename, Error **errp)
{
    uint8_t buf[512];
    const char *best = "raw";
    int best_score = 0;
    int fd = open(filename, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        error_setg_errno(errp, errno, "Could not open '%s'", filename);
        return NULL;
    }
    ssize_t n = pread(fd, buf, sizeof(buf), 0);
    int e = errno;
    close(fd);
    if (n < 0) {
        error_setg_errno(errp, e, "Could not read image for determining "
                         "its format");
        return NULL;
    }
    for (const char *const *d = bdrv_blockdev_driver_names; *d; d++) {
        const BlockDriver *drv = bdrv_find_driver(*d);
        int score = drv && drv->probe ? drv->probe(buf, (size_t)n) : 0;
        if (score > best_score) {
            best_score = score;
            best = drv->name;
        }
    }
    return best;
}
