/*
 * FUSE exports: libfuse3's low-level session on the main loop.  The
 * session's /dev/fuse descriptor is non-blocking and watched by the main
 * context; each request that does I/O runs in a coroutine of its own and
 * answers when it is done.  Writes copy their data first (the receive
 * buffer is reused by the next request).
 *
 * The file: mode 0400 (0600 when writable), the daemon's uid and gid,
 * the node's length; chmod/chown change what getattr answers, as in qemu.
 * Writes past the end grow the node when growable, else stop at the end;
 * truncate resizes when growable (shrinking too).  fallocate: mode 0
 * (grow, growable only), PUNCH_HOLE|KEEP_SIZE (zeroes, may unmap),
 * ZERO_RANGE (zeroes).
 *
 * Deletion stops reading requests, waits until the ones in flight are
 * answered (never writing to a descriptor that may be reused), unmounts
 * (lazily, so a file still open elsewhere does not keep it mounted) and
 * sends BLOCK_EXPORT_DELETED.
 */
#define FUSE_USE_VERSION 312

#include "export/fuse.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "block/block.h"
#include "util/alloc.h"
#include "util/event.h"
#include "util/iov.h"
#include "util/list.h"
#include "util/log.h"

/* What one read or write may move (max_read and max_write). */
#define FUSE_MAX_IO (1 << 20)

typedef struct FuseExport {
    char *id;
    char *mountpoint;
    BlockChild *child;
    struct fuse_session *se;
    struct fuse_buf buf;
    bool fd_watched;
    bool writable, writethrough, growable;
    bool shutting_down;
    unsigned in_flight;
    mode_t mode;
    uid_t uid;
    gid_t gid;
    struct timespec start;
    ListHead link;
} FuseExport;

static ListHead fuse_exports = LIST_HEAD_INIT(fuse_exports);
static unsigned fuse_alive;

static char *fuse_parent_desc(BlockChild *c)
{
    return bj_strdup("a block device");
}

static bool fuse_drained_poll(BlockChild *c)
{
    return false;     /* our requests count in the node's in_flight */
}

static const BlockChildClass fuse_child_class = {
    .parent_is_node = false,
    .get_parent_desc = fuse_parent_desc,
    .drained_poll = fuse_drained_poll,
    .postpone_requests_when_drained = true,
    .guest_io = true,
};

static FuseExport *find_export(const char *id)
{
    FuseExport *e;

    list_for_each_entry(e, &fuse_exports, link) {
        if (strcmp(e->id, id) == 0) {
            return e;
        }
    }
    return NULL;
}

bool fuse_export_exists(const char *id)
{
    return find_export(id) != NULL;
}

/* ---- requests ---- */

typedef enum { OP_READ, OP_WRITE, OP_FLUSH, OP_TRUNCATE, OP_FALLOCATE }
    FuseOp;

typedef struct FuseReq {
    FuseExport *exp;
    fuse_req_t req;
    FuseOp op;
    int64_t offset;
    int64_t bytes;
    int mode;                 /* fallocate */
    uint8_t *data;            /* read/write buffer */
    struct stat attr;         /* truncate: what setattr answers */
} FuseReq;

static void fill_stat(FuseExport *exp, struct stat *st)
{
    int64_t len = bdrv_getlength(exp->child->node);

    memset(st, 0, sizeof(*st));
    st->st_ino = FUSE_ROOT_ID;
    st->st_mode = exp->mode;
    st->st_nlink = 1;
    st->st_uid = exp->uid;
    st->st_gid = exp->gid;
    st->st_size = len < 0 ? 0 : len;
    st->st_blksize = 512;
    st->st_blocks = (st->st_size + 511) / 512;
    st->st_atim = st->st_mtim = st->st_ctim = exp->start;
}

static void finish_delete(FuseExport *exp);

static void req_done(FuseExport *exp)
{
    if (--exp->in_flight == 0 && exp->shutting_down) {
        finish_delete(exp);
    }
    aio_wait_kick();
}

/* Grows the node to end if it is shorter (growable exports). */
static int coroutine_fn grow_to(FuseExport *exp, int64_t end)
{
    Error *err = NULL;
    int ret;

    if (end <= bdrv_getlength(exp->child->node)) {
        return 0;
    }
    ret = bdrv_co_truncate(exp->child, end, &err);
    error_free(err);
    return ret;
}

static void coroutine_fn fuse_req_co(void *opaque)
{
    FuseReq *r = opaque;
    FuseExport *exp = r->exp;
    int64_t len = bdrv_getlength(exp->child->node);
    IOVector v;
    int ret = 0;

    switch (r->op) {
    case OP_READ:
        if (len < 0 || r->offset >= len) {
            fuse_reply_buf(r->req, NULL, 0);
            break;
        }
        if (r->bytes > len - r->offset) {
            r->bytes = len - r->offset;
        }
        iov_vec_init_buf(&v, r->data, (size_t)r->bytes);
        ret = bdrv_co_preadv(exp->child, r->offset, r->bytes, &v, 0);
        if (ret < 0) {
            fuse_reply_err(r->req, -ret);
        } else {
            fuse_reply_buf(r->req, (const char *)r->data, (size_t)r->bytes);
        }
        break;
    case OP_WRITE:
        if (exp->growable) {
            ret = grow_to(exp, r->offset + r->bytes);
        } else if (len < 0 || r->offset >= len) {
            ret = r->bytes ? -ENOSPC : 0;
            r->bytes = 0;
        } else if (r->bytes > len - r->offset) {
            r->bytes = len - r->offset;
        }
        if (ret >= 0 && r->bytes) {
            iov_vec_init_buf(&v, r->data, (size_t)r->bytes);
            ret = bdrv_co_pwritev(exp->child, r->offset, r->bytes, &v,
                                  exp->writethrough ? BLK_REQ_FUA : 0);
        }
        if (ret < 0) {
            fuse_reply_err(r->req, -ret);
        } else {
            fuse_reply_write(r->req, (size_t)r->bytes);
        }
        break;
    case OP_FLUSH:
        ret = bdrv_co_flush(exp->child->node);
        fuse_reply_err(r->req, ret < 0 ? -ret : 0);
        break;
    case OP_TRUNCATE: {
        Error *err = NULL;
        ret = bdrv_co_truncate(exp->child, r->offset, &err);
        error_free(err);
        if (ret < 0) {
            fuse_reply_err(r->req, -ret);
        } else {
            fill_stat(exp, &r->attr);
            fuse_reply_attr(r->req, &r->attr, 0);
        }
        break;
    }
    case OP_FALLOCATE:
        if (r->mode == 0) {
            ret = exp->growable ? grow_to(exp, r->offset + r->bytes)
                                : (r->offset + r->bytes > len ? -ENOSPC : 0);
        } else if (r->offset >= len) {
            ret = 0;
        } else {
            int64_t n = r->bytes < len - r->offset ? r->bytes
                                                   : len - r->offset;
            unsigned flags = r->mode & FALLOC_FL_PUNCH_HOLE
                             ? BLK_REQ_MAY_UNMAP : 0;
            ret = bdrv_co_pwrite_zeroes(exp->child, r->offset, n, flags);
        }
        fuse_reply_err(r->req, ret < 0 ? -ret : 0);
        break;
    }
    free(r->data);
    req_done(exp);
    free(r);
}

static void start_req(FuseExport *exp, fuse_req_t req, FuseOp op,
                      int64_t offset, int64_t bytes, uint8_t *data, int mode)
{
    FuseReq *r = bj_calloc(1, sizeof(*r));
    Coroutine *co;

    r->exp = exp;
    r->req = req;
    r->op = op;
    r->offset = offset;
    r->bytes = bytes;
    r->data = data;
    r->mode = mode;
    exp->in_flight++;
    co = coroutine_create(fuse_req_co, r);
    aio_co_enter(exp->child->node->ctx, co);
}

/* ---- the operations ---- */

static void fuse_op_init(void *userdata, struct fuse_conn_info *conn)
{
    conn->max_read = FUSE_MAX_IO;
    conn->max_write = FUSE_MAX_IO;
    conn->max_readahead = FUSE_MAX_IO;
}

static void fuse_op_getattr(fuse_req_t req, fuse_ino_t ino,
                            struct fuse_file_info *fi)
{
    FuseExport *exp = fuse_req_userdata(req);
    struct stat st;

    fill_stat(exp, &st);
    fuse_reply_attr(req, &st, 0);
}

static void fuse_op_setattr(fuse_req_t req, fuse_ino_t ino,
                            struct stat *attr, int to_set,
                            struct fuse_file_info *fi)
{
    FuseExport *exp = fuse_req_userdata(req);
    int supported = FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE |
                    FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID;
    struct stat st;

    if (to_set & ~supported) {
        fuse_reply_err(req, ENOTSUP);
        return;
    }
    if ((to_set & FUSE_SET_ATTR_SIZE) && !exp->writable) {
        fuse_reply_err(req, EACCES);
        return;
    }
    if ((to_set & FUSE_SET_ATTR_MODE) &&
        (attr->st_mode & S_IFMT) != S_IFREG) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        if (attr->st_size == bdrv_getlength(exp->child->node)) {
            to_set &= ~FUSE_SET_ATTR_SIZE;
        } else if (!exp->growable) {
            fuse_reply_err(req, EACCES);
            return;
        }
    }
    if (to_set & FUSE_SET_ATTR_MODE) {
        exp->mode = attr->st_mode;
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        exp->uid = attr->st_uid;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        exp->gid = attr->st_gid;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        start_req(exp, req, OP_TRUNCATE, attr->st_size, 0, NULL, 0);
        return;
    }
    fill_stat(exp, &st);
    fuse_reply_attr(req, &st, 0);
}

static void fuse_op_open(fuse_req_t req, fuse_ino_t ino,
                         struct fuse_file_info *fi)
{
    /* Every read and write reaches us: no page cache between. */
    fi->direct_io = true;
    fi->keep_cache = false;
    fuse_reply_open(req, fi);
}

static void fuse_op_read(fuse_req_t req, fuse_ino_t ino, size_t size,
                         off_t off, struct fuse_file_info *fi)
{
    FuseExport *exp = fuse_req_userdata(req);
    uint8_t *buf;

    if (off < 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (size > FUSE_MAX_IO) {
        size = FUSE_MAX_IO;
    }
    buf = blk_aligned_alloc(4096, size ? size : 1);
    start_req(exp, req, OP_READ, off, (int64_t)size, buf, 0);
}

static void fuse_op_write(fuse_req_t req, fuse_ino_t ino, const char *data,
                          size_t size, off_t off, struct fuse_file_info *fi)
{
    FuseExport *exp = fuse_req_userdata(req);
    uint8_t *buf;

    if (!exp->writable) {
        fuse_reply_err(req, EACCES);
        return;
    }
    if (off < 0 || size > FUSE_MAX_IO) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    /* The receive buffer is the next request's once we return. */
    buf = blk_aligned_alloc(4096, size ? size : 1);
    memcpy(buf, data, size);
    start_req(exp, req, OP_WRITE, off, (int64_t)size, buf, 0);
}

static void fuse_op_flush(fuse_req_t req, fuse_ino_t ino,
                          struct fuse_file_info *fi)
{
    start_req(fuse_req_userdata(req), req, OP_FLUSH, 0, 0, NULL, 0);
}

static void fuse_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
                          struct fuse_file_info *fi)
{
    start_req(fuse_req_userdata(req), req, OP_FLUSH, 0, 0, NULL, 0);
}

static void fuse_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
                              off_t offset, off_t length,
                              struct fuse_file_info *fi)
{
    FuseExport *exp = fuse_req_userdata(req);

    if (!exp->writable) {
        fuse_reply_err(req, EACCES);
        return;
    }
    if (offset < 0 || length <= 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (mode != 0 && mode != (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) &&
        mode != FALLOC_FL_ZERO_RANGE) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
    }
    start_req(exp, req, OP_FALLOCATE, offset, length, NULL, mode);
}

static const struct fuse_lowlevel_ops fuse_ops = {
    .init = fuse_op_init,
    .getattr = fuse_op_getattr,
    .setattr = fuse_op_setattr,
    .open = fuse_op_open,
    .read = fuse_op_read,
    .write = fuse_op_write,
    .flush = fuse_op_flush,
    .fsync = fuse_op_fsync,
    .fallocate = fuse_op_fallocate,
};

/* ---- the session on the main loop ---- */

static void fuse_readable(void *opaque)
{
    FuseExport *exp = opaque;

    for (;;) {
        int ret = fuse_session_receive_buf(exp->se, &exp->buf);

        if (ret == -EAGAIN || ret == -EINTR) {
            return;
        }
        if (ret <= 0) {
            /* Unmounted behind our back (fusermount -u, umount): stop
             * reading; the export stays until block-export-del. */
            aio_set_fd_handler(aio_main_context(), fuse_session_fd(exp->se),
                               NULL, NULL, NULL, NULL);
            exp->fd_watched = false;
            return;
        }
        fuse_session_process_buf(exp->se, &exp->buf);
    }
}

static bool mount_session(FuseExport *exp, bool allow_other, Error **errp)
{
    char opts[128];
    char *argv[] = { (char *)"blockjobd", (char *)"-o", opts, NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);

    snprintf(opts, sizeof(opts), "max_read=%d,default_permissions%s",
             FUSE_MAX_IO, allow_other ? ",allow_other" : "");
    exp->se = fuse_session_new(&args, &fuse_ops, sizeof(fuse_ops), exp);
    fuse_opt_free_args(&args);
    if (!exp->se) {
        error_setg(errp, "Failed to set up FUSE session");
        return false;
    }
    if (fuse_session_mount(exp->se, exp->mountpoint) < 0) {
        fuse_session_destroy(exp->se);
        exp->se = NULL;
        error_setg(errp, "Failed to mount FUSE session to export");
        return false;
    }
    return true;
}

bool fuse_export_add(const FuseExportOptions *o, Error **errp)
{
    FuseExport *exp, *other;
    BlockNode *bs;
    struct stat st;
    int fd;

    bs = bdrv_lookup_node(NULL, o->node_name, errp);
    if (!bs) {
        return false;
    }
    if (o->writable && bs->read_only) {
        error_setg(errp, "Cannot export read-only node as writable");
        return false;
    }
    if (bs->ctx != aio_main_context()) {
        error_setg(errp, "FUSE exports of nodes in an iothread are not "
                   "supported");
        return false;
    }
    list_for_each_entry(other, &fuse_exports, link) {
        if (strcmp(other->mountpoint, o->mountpoint) == 0) {
            error_setg(errp, "There already is a FUSE export on '%s'",
                       o->mountpoint);
            return false;
        }
    }
    if (stat(o->mountpoint, &st) < 0) {
        error_setg_errno(errp, errno, "Failed to stat '%s'", o->mountpoint);
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        error_setg(errp, "'%s' is not a regular file", o->mountpoint);
        return false;
    }

    exp = bj_calloc(1, sizeof(*exp));
    exp->mountpoint = bj_strdup(o->mountpoint);
    uint64_t perm = BLK_PERM_CONSISTENT_READ |
                    (o->writable ? BLK_PERM_WRITE : 0) |
                    (o->growable ? BLK_PERM_RESIZE : 0);
    /* getattr reads the length each time: others may resize, as qsd's
     * FUSE exports let them. */
    uint64_t shared = BLK_PERM_ALL;
    exp->child = bdrv_root_attach_child(bs, "root", &fuse_child_class, exp,
                                        perm, shared, errp);
    if (!exp->child) {
        free(exp->mountpoint);
        free(exp);
        return false;
    }
    if (o->allow_other == FUSE_ALLOW_OTHER_AUTO) {
        Error *local = NULL;
        if (!mount_session(exp, true, &local)) {
            error_free(local);
            mount_session(exp, false, errp);
        }
    } else {
        mount_session(exp, o->allow_other == FUSE_ALLOW_OTHER_ON, errp);
    }
    if (!exp->se) {
        bdrv_detach_child(exp->child);
        free(exp->mountpoint);
        free(exp);
        return false;
    }
    fd = fuse_session_fd(exp->se);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (!aio_set_fd_handler(aio_main_context(), fd, fuse_readable, NULL,
                            exp, errp)) {
        fuse_session_unmount(exp->se);
        fuse_session_destroy(exp->se);
        bdrv_detach_child(exp->child);
        free(exp->mountpoint);
        free(exp);
        return false;
    }
    exp->fd_watched = true;
    exp->id = bj_strdup(o->id);
    exp->writable = o->writable;
    exp->writethrough = o->writethrough;
    exp->growable = o->growable;
    exp->mode = S_IFREG | S_IRUSR | (o->writable ? S_IWUSR : 0);
    exp->uid = getuid();
    exp->gid = getgid();
    clock_gettime(CLOCK_REALTIME, &exp->start);
    list_add_head(&fuse_exports, &exp->link);
    fuse_alive++;
    return true;
}

static void finish_delete(FuseExport *exp)
{
    fuse_session_unmount(exp->se);
    fuse_session_destroy(exp->se);
    free(exp->buf.mem);
    bdrv_detach_child(exp->child);
    event_emit("BLOCK_EXPORT_DELETED", json_pack("{s:s}", "id", exp->id));
    free(exp->id);
    free(exp->mountpoint);
    free(exp);
    fuse_alive--;
    aio_wait_kick();
}

static void delete_export(FuseExport *exp)
{
    exp->shutting_down = true;
    list_del(&exp->link);
    if (exp->fd_watched) {
        aio_set_fd_handler(aio_main_context(), fuse_session_fd(exp->se),
                           NULL, NULL, NULL, NULL);
        exp->fd_watched = false;
    }
    if (exp->in_flight == 0) {
        finish_delete(exp);
    }
}

bool fuse_export_del(const char *id, Error **errp)
{
    FuseExport *exp = find_export(id);

    if (!exp) {
        error_setg(errp, "Export '%s' is not found", id);
        return false;
    }
    delete_export(exp);
    return true;
}

void fuse_export_query(json_t *list)
{
    FuseExport *exp;

    list_for_each_entry(exp, &fuse_exports, link) {
        json_array_append_new(list, json_pack(
            "{s:s, s:s, s:s, s:b}", "id", exp->id, "type", "fuse",
            "node-name", exp->child->node->node_name,
            "shutting-down", exp->shutting_down));
    }
}

void fuse_shutdown(void)
{
    while (!list_empty(&fuse_exports)) {
        delete_export(list_first_entry(&fuse_exports, FuseExport, link));
    }
    AIO_WAIT_WHILE(aio_main_context(), fuse_alive > 0);
}
