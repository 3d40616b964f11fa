/*
 * The "create" job: blockdev-create for the file and qcow2 drivers.
 *
 * qemu-storage-daemon runs image creation as a job so that the monitor
 * stays responsive; its body is one step (progress 0/1, then 1/1 whether
 * it worked or not) and the job waits concluded for job-dismiss.  Option
 * values are checked here, in the job, because that is where qemu checks
 * them: a bad cluster size makes the job fail (error in query-jobs), not
 * the command.
 *
 *   file:  open(O_CREAT) in the thread pool, take qemu's image locks for
 *          write+resize (refusing a file another user holds), truncate to
 *          0, nocow / extent size hint (best effort), then size it with the
 *          preallocation asked for.
 *   qcow2: the image is written by the qcow2 driver's creation routine
 *          through a "root" edge on the `file` node (a node-name, or an
 *          inline definition opened for the job and closed after it;
 *          write+resize, shares everything, like qemu's BlockBackend);
 *          then the magic is read back so a target that forgets writes
 *          (null-co) fails as in qemu.
 *
 * The file step opens the image itself rather than through a node, so it
 * uses the file driver's lock helpers directly (as qemu's file driver
 * does in its own create function).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "aio/io.h"
#include "block/block.h"
#include "block/drivers/file-lock.h"
#include "block/drivers/qcow2/qcow2.h"
#include "job/create.h"
#include "util/alloc.h"
#include "util/argspec.h"
#include "util/cleanup.h"

typedef struct CreateJob {
    Job job;
    json_t *opts;            /* BlockdevCreateOptions */
} CreateJob;

static const char *const prealloc_names[] = {
    "off", "metadata", "falloc", "full", NULL,
};
enum { PREALLOC_OFF, PREALLOC_METADATA, PREALLOC_FALLOC, PREALLOC_FULL };

/* qemu's largest node (BDRV_MAX_LENGTH): INT64_MAX rounded down to 1 GiB */
#define MAX_NODE_LENGTH (INT64_MAX - INT64_MAX % (1ll << 30))

/* Sizes are uint64 in the schema: a negative JSON integer wraps. */
static uint64_t opt_u64(json_t *opts, const char *name, uint64_t def)
{
    json_t *v = json_object_get(opts, name);

    return v ? (uint64_t)json_integer_value(v) : def;
}

/* ---- file ---- */

typedef struct FileCreate {
    const char *filename;
    uint64_t size;
    int prealloc;
    bool nocow;
    uint64_t extent_hint;
    Error *err;
} FileCreate;

/* Sizes the (empty) file to fc->size as the preallocation mode says. */
static int file_resize(int fd, FileCreate *fc)
{
    off_t size = (off_t)fc->size;

    /* A uint64 size past INT64_MAX is "smaller" than the empty file. */
    if (fc->prealloc != PREALLOC_OFF && size < 0) {
        error_setg(&fc->err, "Cannot use preallocation for shrinking files");
        return -ENOTSUP;
    }
    switch (fc->prealloc) {
    case PREALLOC_OFF:
        if (ftruncate(fd, size) < 0) {
            int e = errno;
            error_setg_errno(&fc->err, e, "Could not resize file");
            return -e;
        }
        return 0;
    case PREALLOC_FALLOC: {
        int r = size ? posix_fallocate(fd, 0, size) : 0;
        if (r) {
            error_setg_errno(&fc->err, r, "Could not preallocate new data");
            return -r;
        }
        return 0;
    }
    case PREALLOC_FULL: {
        static const char zeros[65536];
        if (ftruncate(fd, size) < 0) {
            int e = errno;
            error_setg_errno(&fc->err, e, "Could not resize file");
            return -e;
        }
        for (off_t off = 0; off < size;) {
            size_t n = size - off < (off_t)sizeof(zeros)
                       ? (size_t)(size - off) : sizeof(zeros);
            ssize_t w = pwrite(fd, zeros, n, off);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                int e = w < 0 ? errno : EIO;
                error_setg_errno(&fc->err, e, "Could not write zeros for "
                                 "preallocation");
                return -e;
            }
            off += w;
        }
        if (fsync(fd) < 0) {
            int e = errno;
            error_setg_errno(&fc->err, e, "Could not flush file to disk");
            return -e;
        }
        return 0;
    }
    default:
        error_setg(&fc->err, "Unsupported preallocation mode: %s",
                   prealloc_names[fc->prealloc]);
        return -ENOTSUP;
    }
}

/* Thread pool: everything here may block. */
static int file_create_worker(void *opaque)
{
    FileCreate *fc = opaque;
    /* What creating needs: write, and a size nobody changes under us. */
    const uint64_t perm = BLK_PERM_WRITE | BLK_PERM_RESIZE;
    const uint64_t shared = BLK_PERM_ALL & ~BLK_PERM_RESIZE;
    FileLockState locks = { 0 };
    CLEANUP_CLOSE int fd = -1;
    int ret;

    fd = open(fc->filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        error_setg_errno(&fc->err, e, "Could not create '%s'",
                         fc->filename);
        return -e;
    }
    if (file_lock_supported(fd) &&
        (!file_lock_apply(fd, &locks, perm, shared, &fc->err) ||
         !file_lock_check(fd, perm, shared, fc->filename, &fc->err))) {
        return -EAGAIN;
    }
    if (ftruncate(fd, 0) < 0) {
        int e = errno;
        error_setg_errno(&fc->err, e, "Could not resize file");
        return -e;
    }
    if (fc->nocow) {
        /* Only btrfs knows the flag; elsewhere it is ignored, as in qemu. */
        int attr;
        if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
            attr |= FS_NOCOW_FL;
            (void)ioctl(fd, FS_IOC_SETFLAGS, &attr);
        }
    }
    if (fc->extent_hint) {
        /* A hint (XFS); failing to set it is not an error. */
        struct fsxattr attr;
        if (ioctl(fd, FS_IOC_FSGETXATTR, &attr) == 0) {
            attr.fsx_xflags |= FS_XFLAG_EXTSIZE;
            attr.fsx_extsize = (uint32_t)fc->extent_hint;
            (void)ioctl(fd, FS_IOC_FSSETXATTR, &attr);
        }
    }
    ret = file_resize(fd, fc);
    /* Closing the descriptor drops its locks. */
    return ret;
}

static int coroutine_fn create_file(json_t *o, Error **errp)
{
    FileCreate fc = {
        .filename = arg_str(o, "filename", ""),
        .size = opt_u64(o, "size", 0),
        .prealloc = arg_enum(o, "preallocation", prealloc_names,
                             PREALLOC_OFF),
        .nocow = arg_bool(o, "nocow", false),
        .extent_hint = opt_u64(o, "extent-size-hint", 1 << 20),
    };
    int ret;

    if (fc.extent_hint > UINT32_MAX) {
        error_setg(errp, "Extent size hint is too large");
        return -EINVAL;
    }
    ret = thread_pool_co_run(file_create_worker, &fc);
    if (ret < 0) {
        error_propagate(errp, fc.err);
        return ret;
    }
    error_free(fc.err);
    return 0;
}

/* ---- qcow2 ---- */

static const char *const version_names[] = { "v2", "v3", NULL };
static const char *const compression_names[] = { "zlib", "zstd", NULL };

/* The value checks qemu makes before touching the image, in its order. */
static bool qcow2_check_opts(json_t *o, Qcow2CreateOpts *c, Error **errp)
{
    uint64_t cs = opt_u64(o, "cluster-size", 65536);
    int64_t rbits = arg_int(o, "refcount-bits", 16);
    int prealloc = arg_enum(o, "preallocation", prealloc_names, 0);
    bool extl2 = arg_bool(o, "extended-l2", false);
    bool has_backing = json_object_get(o, "backing-file") != NULL;

    c->size = opt_u64(o, "size", 0);
    c->version = arg_enum(o, "version", version_names, 1) + 2;
    c->lazy_refcounts = arg_bool(o, "lazy-refcounts", false);
    c->backing_file = arg_str(o, "backing-file", NULL);
    c->backing_format = arg_str(o, "backing-fmt", NULL);

    if (c->size % 512) {
        error_setg(errp, "Image size must be a multiple of 512 bytes");
        return false;
    }
    if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) {
        error_setg(errp, "Cluster size must be a power of two between 512 "
                   "and 2048k");
        return false;
    }
    c->cluster_size = (uint32_t)cs;
    if (c->lazy_refcounts && c->version < 3) {
        error_setg(errp, "Lazy refcounts only supported with compatibility "
                   "level 1.1 and above (use version=v3 or greater)");
        return false;
    }
    if (rbits <= 0 || rbits > 64 || (rbits & (rbits - 1))) {
        error_setg(errp, "Refcount width must be a power of two and may not "
                   "exceed 64 bits");
        return false;
    }
    if (c->version < 3 && rbits != 16) {
        error_setg(errp, "Different refcount widths than 16 bits require "
                   "compatibility level 1.1 or above (use version=v3 or "
                   "greater)");
        return false;
    }
    c->refcount_bits = (uint32_t)rbits;
    if (arg_bool(o, "data-file-raw", false) &&
        !json_object_get(o, "data-file")) {
        error_setg(errp, "data-file-raw requires data-file");
        return false;
    }
    if (arg_enum(o, "compression-type", compression_names, 0) != 0 &&
        c->version < 3) {
        error_setg(errp, "Non-zlib compression type is only supported with "
                   "compatibility level 1.1 and above (use version=v3 or "
                   "greater)");
        return false;
    }
    if (extl2 && cs < 16384) {
        error_setg(errp, "Extended L2 entries are only supported with "
                   "cluster sizes of at least 16384 bytes");
        return false;
    }
    if (has_backing && prealloc != PREALLOC_OFF && !extl2) {
        error_setg(errp, "Backing file and preallocation can only be used "
                   "at the same time if extended_l2 is on");
        return false;
    }
    if (c->backing_format && !has_backing) {
        error_setg(errp, "Backing format cannot be used without backing "
                   "file");
        return false;
    }

    /* What qemu accepts but our qcow2 creation does not write (yet). */
    if (prealloc != PREALLOC_OFF) {
        error_setg(errp, "qcow2 creation does not support preallocation "
                   "mode '%s'", prealloc_names[prealloc]);
        return false;
    }
    if (extl2) {
        error_setg(errp, "qcow2 creation does not support extended L2 "
                   "entries");
        return false;
    }
    if (json_object_get(o, "data-file")) {
        error_setg(errp, "qcow2 creation does not support external data "
                   "files");
        return false;
    }
    if (json_object_get(o, "encrypt")) {
        error_setg(errp, "qcow2 creation does not support encryption");
        return false;
    }
    if (arg_enum(o, "compression-type", compression_names, 0) != 0) {
        error_setg(errp, "qcow2 creation does not support compression type "
                   "'zstd'");
        return false;
    }

    /* qemu creates a small image, then grows it: these are its words. */
    if (c->size > INT64_MAX) {
        error_setg(errp, "Could not resize image: Image size cannot be "
                   "negative");
        return false;
    }
    if (c->size > (uint64_t)MAX_NODE_LENGTH) {
        error_setg(errp, "Could not resize image: offset(%" PRIu64 ") "
                   "exceeds maximum(%" PRId64 ")", c->size,
                   (int64_t)MAX_NODE_LENGTH);
        return false;
    }
    /* One L1 entry maps an L2 table: cs / 8 clusters. */
    uint64_t per_l1 = cs * (cs / 8);
    uint64_t l1_entries = c->size / per_l1 + (c->size % per_l1 != 0);
    if (l1_entries * 8 > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "Could not resize image: Failed to grow the L1 "
                   "table: File too large");
        return false;
    }
    return true;
}

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

/* An inline `file` definition: qemu opens it for the creation only. */
typedef struct InlineNode {
    json_t *opts;
    char name[32];
    BlockNode *bs;
    Error *err;
} InlineNode;

static void inline_open(void *opaque)
{
    InlineNode *n = opaque;

    n->bs = bdrv_open_blockdev(n->opts, false, &n->err);
}

static void inline_close(void *opaque)
{
    InlineNode *n = opaque;
    Error *err = NULL;

    if (!bdrv_del_blockdev(n->name, &err)) {
        error_report_err(err, "blockdev-create: closing the inline file");
    }
}

/*
 * The node to write the image to.  An inline definition is opened as a
 * node of its own (named as given, or after the job, since the layer opens
 * only named nodes at the top) that *inl says to close afterwards.
 */
static BlockNode *coroutine_fn qcow2_target(CreateJob *s, json_t *file,
                                            InlineNode *inl, Error **errp)
{
    BlockNode *bs;

    if (json_is_string(file)) {
        bs = bdrv_find_node(json_string_value(file));
        if (!bs) {
            error_setg(errp, "Cannot find device='%s' nor node-name='%s'",
                       json_string_value(file), json_string_value(file));
        }
        return bs;
    }
    inl->opts = json_deep_copy(file);
    if (!json_object_get(inl->opts, "node-name")) {
        snprintf(inl->name, sizeof(inl->name), "bj-create-%.20s",
                 s->job.id);
        json_object_set_new(inl->opts, "node-name", json_string(inl->name));
    } else {
        snprintf(inl->name, sizeof(inl->name), "%s",
                 arg_str(inl->opts, "node-name", ""));
    }
    co_run_in_main_loop(inline_open, inl);
    json_decref(inl->opts);
    inl->opts = NULL;
    if (!inl->bs) {
        error_propagate(errp, inl->err);
        inl->err = NULL;
    }
    return inl->bs;
}

static int coroutine_fn create_qcow2(CreateJob *s, json_t *o, Error **errp)
{
    Qcow2CreateOpts c = { 0 };
    InlineNode inl = { 0 };
    BlockNode *bs;
    BlockChild *child;
    uint8_t magic[4];
    IOVector v;
    int ret;

    bs = qcow2_target(s, json_object_get(o, "file"), &inl, errp);
    if (!bs) {
        return -ENOENT;
    }
    if (!qcow2_check_opts(o, &c, errp)) {
        ret = -EINVAL;
        goto out;
    }
    if (bs->ctx != aio_main_context()) {
        /* The job runs in the main loop and would race the iothread. */
        error_setg(errp, "Node '%s' is in an iothread: cannot create an "
                   "image on it", bs->node_name);
        ret = -ENOTSUP;
        goto out;
    }
    child = bdrv_root_attach_child(bs, "root", &create_child_class, s,
                                   BLK_PERM_WRITE | BLK_PERM_RESIZE,
                                   BLK_PERM_ALL, errp);
    if (!child) {
        ret = -EPERM;
        goto out;
    }
    ret = qcow2_co_create(child, &c, errp);
    if (ret >= 0) {
        iov_vec_init_buf(&v, magic, sizeof(magic));
        ret = bdrv_co_preadv(child, 0, sizeof(magic), &v, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not read the new image");
        } else if (memcmp(magic, "QFI\xfb", 4) != 0) {
            /* The node dropped what we wrote (null-co): qemu finds out the
             * same way, by opening the result. */
            error_setg(errp, "Image is not in qcow2 format");
            ret = -EINVAL;
        }
    }
    bdrv_detach_child(child);
out:
    if (inl.bs) {
        co_run_in_main_loop(inline_close, &inl);
    }
    return ret < 0 ? ret : 0;
}

/* ---- the job ---- */

static int coroutine_fn create_run(Job *job, Error **errp)
{
    CreateJob *s = (CreateJob *)job;
    const char *driver = arg_str(s->opts, "driver", "");
    int ret;

    job_progress_set_remaining(job, 1);
    if (strcmp(driver, "file") == 0) {
        ret = create_file(s->opts, errp);
    } else {
        ret = create_qcow2(s, s->opts, errp);
    }
    job_progress_update(job, 1);
    return ret;
}

static void create_free(Job *job)
{
    CreateJob *s = (CreateJob *)job;

    json_decref(s->opts);
}

static const JobDriver create_driver = {
    .type = "create",
    .instance_size = sizeof(CreateJob),
    .block_job_events = false,
    .run = create_run,
    .free = create_free,
};

Job *create_job_start(const char *job_id, json_t *options, Error **errp)
{
    CreateJob *s;

    assert(!strcmp(arg_str(options, "driver", ""), "file") ||
           !strcmp(arg_str(options, "driver", ""), "qcow2"));
    s = job_create(job_id, &create_driver, NULL, aio_main_context(),
                   JOB_MANUAL_DISMISS, errp);
    if (!s) {
        return NULL;
    }
    s->opts = json_incref(options);
    job_start(&s->job);
    return &s->job;
}
