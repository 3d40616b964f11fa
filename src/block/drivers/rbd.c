/*
 * rbd: an image in a Ceph cluster, through librbd (Debian's librbd-dev).
 *
 * Requests are asynchronous: each one is an rbd_aio_* call with a
 * completion, and the coroutine that made it yields.  librbd signals
 * finished completions on an eventfd (rbd_set_image_notification) that
 * the node's loop watches; its handler collects them with
 * rbd_poll_io_events and wakes each waiting coroutine.  No thread per
 * request, no callback into our state from librbd's threads.
 *
 * The eventfd is watched by the node's own context: when the node moves to
 * another (an iothread), the watch moves with it (detach/attach, node
 * drained), so completions are collected in the thread whose coroutines
 * wait for them and nothing crosses threads.
 *
 * What may block — connecting (rados_connect waits for the monitors),
 * opening the image, resizing it, walking its allocation with
 * rbd_diff_iterate2, creating one — runs in the thread pool.  Connecting
 * is bounded: client_mount_timeout and rados_mon_op_timeout are capped at
 * RBD_CONNECT_TIMEOUT_S unless the configuration asks for less, so an
 * unreachable monitor fails blockdev-add with "error connecting:
 * Connection timed out" rather than holding it for librados's five
 * minutes.
 *
 * Block status walks the image's allocation (rbd_diff_iterate2, whole
 * objects) once per window of objects and keeps the data extents found
 * (RbdStatusCache): the many small questions a copy asks (a mirror per op,
 * a backup per hole it may skip on its target) are then answered in the
 * node's loop without a trip through the thread pool each.  The cache only
 * ever errs towards "data": our own writes add their objects to it as
 * they are submitted (and to a walk in progress, through the write log),
 * a discard or unmapping write-zeroes drops it, and it is walked again
 * after RBD_STATUS_TTL_NS so writers outside this node show up too.
 *
 * Options and messages are qemu-storage-daemon 7.2's BlockdevOptionsRbd.
 * key-secret names a secret object whose bytes are the cephx key, handed to
 * librados base64-encoded as its "key".  Not supported: encrypt (refused).  Persistent dirty bitmaps cannot be
 * stored in an RBD image: the table leaves can_store_new_dirty_bitmap
 * unset, so the block layer refuses them with qsd's message.
 */
#include <errno.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "aio/io.h"
#include "block/create.h"
#include "block/drivers/drivers.h"
#include "object/secret.h"
#include "util/alloc.h"
#include "util/log.h"

#define RBD_CONNECT_TIMEOUT_S 30
/* Completions collected per rbd_poll_io_events call. */
#define RBD_POLL_BATCH 32
/* Objects one block-status walk covers: with the fast-diff feature the
 * walk reads only the in-memory object map, without it every object is a
 * request to its OSD. */
#define RBD_STATUS_OBJS_FAST 4096
#define RBD_STATUS_OBJS_SLOW 32
/* How long a walk's answer is trusted (writers elsewhere). */
#define RBD_STATUS_TTL_NS 1000000000LL
/* Writes remembered while a walk runs; more and its answer is not kept. */
#define RBD_STATUS_WLOG 256

typedef struct RbdExtent {
    uint64_t start, end;
} RbdExtent;

/* The data extents of [start, end) (object aligned, sorted, disjoint and
 * not touching), as of walked_ns plus our writes since. */
typedef struct RbdStatusCache {
    bool valid;
    uint64_t start, end;
    int64_t walked_ns;
    RbdExtent *ext;
    size_t n, cap;
} RbdStatusCache;

typedef struct RbdState {
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t image;
    int efd;
    AioContext *efd_ctx;           /* the context watching efd */
    uint64_t obj_size;
    uint64_t status_objs;          /* objects per block-status walk */

    RbdStatusCache cache;
    bool walking;                  /* a walk is in the thread pool */
    CoQueue walk_done;             /* block status waiting for it */
    uint64_t drop_gen;             /* discards and unmaps seen */
    RbdExtent wlog[RBD_STATUS_WLOG];  /* writes since the walk began */
    size_t wlog_n;
    bool wlog_overflow;
    ListHead writes;               /* writes in flight (RbdReq.link) */
} RbdState;

/* One request in flight: its coroutine waits until done. */
typedef struct RbdReq {
    Coroutine *co;
    ssize_t ret;
    bool done;
    uint64_t start, end;           /* writes: the objects they touch */
    ListHead link;                 /* writes: in RbdState.writes */
} RbdReq;

static const char *const auth_values[] = { "cephx", "none", NULL };

static const ArgSpec auth_mode[] = {
    { .name = "", .type = ARG_ENUM, .enum_values = auth_values },
    { .name = NULL },
};

/* The members of BlockdevOptionsRbd (blockdev-add, and blockdev-create's
 * "location"). */
#define RBD_LOCATION_MEMBERS                                               \
    { .name = "pool", .type = ARG_STR },                                   \
    { .name = "namespace", .type = ARG_STR, .optional = true },            \
    { .name = "image", .type = ARG_STR },                                  \
    { .name = "conf", .type = ARG_STR, .optional = true },                 \
    { .name = "snapshot", .type = ARG_STR, .optional = true },             \
    { .name = "encrypt", .type = ARG_ANY, .optional = true },              \
    { .name = "user", .type = ARG_STR, .optional = true },                 \
    { .name = "auth-client-required", .type = ARG_ARRAY, .optional = true, \
      .members = auth_mode },                                              \
    { .name = "key-secret", .type = ARG_STR, .optional = true }

static const ArgSpec rbd_options[] = {
    RBD_LOCATION_MEMBERS,
    { .name = NULL },
};

static const char *const rbd_strong[] = {
    "pool", "namespace", "image", "conf", "snapshot", "user", NULL,
};

/* What connecting needs, filled from the options; err set by the worker. */
typedef struct RbdConnect {
    const char *pool;
    const char *ns;
    const char *image;             /* NULL: connect only (create) */
    const char *conf;
    const char *snap;
    const char *user;
    char *key;                     /* key-secret, base64; wiped after use */
    char auth[32];                 /* "cephx;none", "" when not given */
    bool read_only;
    /* create (instead of opening the image) */
    bool create;
    uint64_t size;
    int order;
    /* results */
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t rbd;
    Error *err;
} RbdConnect;

/* Refuses what this build cannot do and fills rc from opts. */
static bool rbd_parse_location(json_t *opts, RbdConnect *rc, Error **errp)
{
    json_t *auth = json_object_get(opts, "auth-client-required");

    if (json_object_get(opts, "encrypt")) {
        error_setg(errp, "rbd encryption is not supported by this build");
        return false;
    }
    if (arg_str(opts, "key-secret", NULL)) {
        size_t len;
        const uint8_t *key = secret_lookup(arg_str(opts, "key-secret", NULL),
                                           &len, errp);
        gnutls_datum_t raw = { .data = (unsigned char *)key,
                               .size = (unsigned)len };
        gnutls_datum_t b64 = { 0 };

        if (!key) {
            return false;
        }
        if (gnutls_base64_encode2(&raw, &b64) < 0) {
            error_setg(errp, "Could not encode the secret's key");
            return false;
        }
        rc->key = bj_strndup((const char *)b64.data, b64.size);
        gnutls_memset(b64.data, 0, b64.size);
        gnutls_free(b64.data);
    }
    rc->pool = arg_str(opts, "pool", "");
    rc->ns = arg_str(opts, "namespace", "");
    rc->image = arg_str(opts, "image", "");
    rc->conf = arg_str(opts, "conf", NULL);
    rc->snap = arg_str(opts, "snapshot", NULL);
    rc->user = arg_str(opts, "user", NULL);
    if (auth) {
        size_t i;
        json_t *v;
        json_array_foreach(auth, i, v) {
            size_t len = strlen(rc->auth);
            snprintf(rc->auth + len, sizeof(rc->auth) - len, "%s%s",
                     len ? ";" : "", json_string_value(v));
        }
    }
    return true;
}

/* The key's copy goes once librados has it (or connecting failed). */
static void rbd_forget_key(RbdConnect *rc)
{
    if (rc->key) {
        explicit_bzero(rc->key, strlen(rc->key));
        bj_free_clear(&rc->key);
    }
}

/* Caps a librados timeout (seconds; 0 = none) at RBD_CONNECT_TIMEOUT_S. */
static void rbd_cap_timeout(rados_t cluster, const char *name)
{
    char buf[32];
    double v;

    if (rados_conf_get(cluster, name, buf, sizeof(buf)) < 0) {
        return;
    }
    v = strtod(buf, NULL);
    if (v <= 0 || v > RBD_CONNECT_TIMEOUT_S) {
        snprintf(buf, sizeof(buf), "%d", RBD_CONNECT_TIMEOUT_S);
        rados_conf_set(cluster, name, buf);
    }
}

static void rbd_disconnect(RbdConnect *rc)
{
    if (rc->rbd) {
        rbd_close(rc->rbd);
        rc->rbd = NULL;
    }
    if (rc->io) {
        rados_ioctx_destroy(rc->io);
        rc->io = NULL;
    }
    if (rc->cluster) {
        rados_shutdown(rc->cluster);
        rc->cluster = NULL;
    }
}

/* Thread pool: connects, opens the pool (and image, or creates it). */
static int rbd_connect_worker(void *opaque)
{
    RbdConnect *rc = opaque;
    int r;

    r = rados_create(&rc->cluster, rc->user);
    if (r < 0) {
        rc->cluster = NULL;
        error_setg_errno(&rc->err, -r, "error initializing");
        return r;
    }
    if (rc->conf) {
        r = rados_conf_read_file(rc->cluster, rc->conf);
        if (r < 0) {
            error_setg_errno(&rc->err, -r, "error reading conf file %s",
                             rc->conf);
            goto fail;
        }
    } else {
        /* The default places (/etc/ceph/ceph.conf, ...): none is fine. */
        (void)rados_conf_read_file(rc->cluster, NULL);
    }
    if (rc->key) {
        r = rados_conf_set(rc->cluster, "key", rc->key);
        if (r < 0) {
            error_setg_errno(&rc->err, -r, "Could not set 'key'");
            goto fail;
        }
    }
    rbd_cap_timeout(rc->cluster, "client_mount_timeout");
    rbd_cap_timeout(rc->cluster, "rados_mon_op_timeout");
    if (rc->auth[0]) {
        r = rados_conf_set(rc->cluster, "auth_client_required", rc->auth);
        if (r < 0) {
            error_setg_errno(&rc->err, -r, "Could not set "
                             "'auth_client_required'");
            goto fail;
        }
    }
    r = rados_connect(rc->cluster);
    if (r < 0) {
        error_setg_errno(&rc->err, -r, "error connecting");
        goto fail;
    }
    r = rados_ioctx_create(rc->cluster, rc->pool, &rc->io);
    if (r < 0) {
        rc->io = NULL;
        error_setg_errno(&rc->err, -r, "error opening pool %s", rc->pool);
        goto fail;
    }
    rados_ioctx_set_namespace(rc->io, rc->ns);
    if (rc->create) {
        int order = rc->order;
        r = rbd_create(rc->io, rc->image, rc->size, &order);
        if (r < 0) {
            error_setg_errno(&rc->err, -r, "error rbd create");
            goto fail;
        }
        return 0;
    }
    r = rc->read_only
        ? rbd_open_read_only(rc->io, rc->image, &rc->rbd, rc->snap)
        : rbd_open(rc->io, rc->image, &rc->rbd, rc->snap);
    if (r < 0) {
        rc->rbd = NULL;
        error_setg_errno(&rc->err, -r, "error reading header from %s",
                         rc->image);
        goto fail;
    }
    return 0;

fail:
    rbd_disconnect(rc);
    return r;
}

/* Collects finished completions and wakes their coroutines. */
static void rbd_efd_read(void *opaque)
{
    RbdState *s = opaque;
    rbd_completion_t comps[RBD_POLL_BATCH];
    uint64_t val;
    int n;

    if (read(s->efd, &val, sizeof(val)) < 0) {
        /* EAGAIN: nothing signalled since the last read; poll anyway. */
    }
    do {
        n = rbd_poll_io_events(s->image, comps, RBD_POLL_BATCH);
        for (int i = 0; i < n; i++) {
            RbdReq *req = rbd_aio_get_arg(comps[i]);
            req->ret = rbd_aio_get_return_value(comps[i]);
            rbd_aio_release(comps[i]);
            req->done = true;
            aio_co_wake(req->co);
        }
    } while (n == RBD_POLL_BATCH);
}

/* ---- the block-status cache (the node's context only) ---- */

/* Merges data [a, b) into the sorted extent list (room for one more). */
static void ext_insert(RbdExtent *ext, size_t *n, uint64_t a, uint64_t b)
{
    size_t i = 0, j;

    while (i < *n && ext[i].end < a) {
        i++;
    }
    j = i;
    while (j < *n && ext[j].start <= b) {
        j++;
    }
    if (i == j) {
        memmove(&ext[i + 1], &ext[i], (*n - i) * sizeof(*ext));
        ext[i] = (RbdExtent) { a, b };
        (*n)++;
        return;
    }
    if (ext[i].start < a) {
        a = ext[i].start;
    }
    if (ext[j - 1].end > b) {
        b = ext[j - 1].end;
    }
    ext[i] = (RbdExtent) { a, b };
    memmove(&ext[i + 1], &ext[j], (*n - j) * sizeof(*ext));
    *n -= j - i - 1;
}

/* The objects [offset, offset+bytes) touches. */
static RbdExtent obj_range(RbdState *s, uint64_t offset, uint64_t bytes)
{
    uint64_t end = offset + (bytes ? bytes : 1);

    return (RbdExtent) {
        offset / s->obj_size * s->obj_size,
        (end + s->obj_size - 1) / s->obj_size * s->obj_size,
    };
}

/* A write is about to go out: the cache (and a walk running now) must
 * count its objects as data. */
static void status_note_write(RbdState *s, RbdReq *req, uint64_t offset,
                              uint64_t bytes)
{
    RbdExtent r = obj_range(s, offset, bytes);
    RbdStatusCache *c = &s->cache;

    req->start = r.start;
    req->end = r.end;
    list_add_tail(&s->writes, &req->link);
    if (s->walking) {
        if (s->wlog_n < RBD_STATUS_WLOG) {
            s->wlog[s->wlog_n++] = r;
        } else {
            s->wlog_overflow = true;
        }
    }
    if (c->valid && r.start < c->end && r.end > c->start) {
        if (c->n + 1 >= c->cap) {
            c->valid = false;    /* cannot happen: object-aligned extents */
            return;
        }
        ext_insert(c->ext, &c->n, r.start < c->start ? c->start : r.start,
                   r.end > c->end ? c->end : r.end);
    }
}

/* A discard or an unmapping write-zeroes: data may become holes. */
static void status_note_drop(RbdState *s)
{
    s->cache.valid = false;
    s->drop_gen++;
}

typedef struct RbdWalk {
    rbd_image_t image;
    uint64_t start, end;
    RbdExtent *ext;
    size_t n, cap;
} RbdWalk;

static int rbd_walk_cb(uint64_t ofs, size_t len, int exists, void *opaque)
{
    RbdWalk *w = opaque;

    if (!exists || !len) {
        return 0;            /* a discarded extent reads as zeroes */
    }
    if (w->n && w->ext[w->n - 1].end >= ofs) {
        if (ofs + len > w->ext[w->n - 1].end) {
            w->ext[w->n - 1].end = ofs + len;
        }
        return 0;
    }
    if (w->n == w->cap) {
        return -ENOSPC;      /* cannot happen: cap is the object count */
    }
    w->ext[w->n++] = (RbdExtent) { ofs, ofs + len };
    return 0;
}

static int rbd_walk_worker(void *opaque)
{
    RbdWalk *w = opaque;

    return rbd_diff_iterate2(w->image, NULL, w->start, w->end - w->start, 1,
                             1, rbd_walk_cb, w);
}

/* Walks the window around offset in the thread pool and installs it as the
 * cache, adding the writes made meanwhile.  Returns < 0 when the walk
 * failed; 0 also when its answer could not be kept (a discard meanwhile):
 * the caller looks again. */
static int coroutine_fn status_walk(BlockNode *bs, uint64_t offset)
{
    RbdState *s = bs->opaque;
    RbdStatusCache *c = &s->cache;
    uint64_t size = 0;
    uint64_t win = s->status_objs * s->obj_size;
    RbdWalk w = { .image = s->image };
    uint64_t gen = s->drop_gen;
    RbdReq *req;
    int r;

    r = rbd_get_size(s->image, &size);
    if (r < 0) {
        return r;
    }
    w.start = offset / win * win;
    if (w.start >= size) {
        return -EINVAL;
    }
    w.end = w.start + win > size ? size : w.start + win;
    /* One extent per object at most, plus the writes logged. */
    w.cap = (size_t)((w.end - w.start + s->obj_size - 1) / s->obj_size) + 2;
    w.ext = bj_malloc((w.cap + RBD_STATUS_WLOG + 1) * sizeof(*w.ext));

    s->walking = true;
    s->wlog_n = 0;
    s->wlog_overflow = false;
    list_for_each_entry(req, &s->writes, link) {
        if (s->wlog_n < RBD_STATUS_WLOG) {
            s->wlog[s->wlog_n++] = (RbdExtent) { req->start, req->end };
        } else {
            s->wlog_overflow = true;
        }
    }
    r = thread_pool_co_run(rbd_walk_worker, &w);
    s->walking = false;
    co_queue_restart_all(&s->walk_done);
    if (r < 0) {
        free(w.ext);
        return r;
    }
    if (gen != s->drop_gen || s->wlog_overflow) {
        free(w.ext);
        return 0;
    }
    /* Writes submitted since the walk began may not be in its answer. */
    for (size_t i = 0; i < s->wlog_n; i++) {
        RbdExtent e = s->wlog[i];
        if (e.start < w.end && e.end > w.start) {
            ext_insert(w.ext, &w.n, e.start < w.start ? w.start : e.start,
                       e.end > w.end ? w.end : e.end);
        }
    }
    free(c->ext);
    *c = (RbdStatusCache) {
        .valid = true, .start = w.start, .end = w.end,
        .walked_ns = clock_ns(), .ext = w.ext, .n = w.n,
        .cap = w.cap + RBD_STATUS_WLOG + 1,
    };
    return 0;
}

/* Answers from the cache: false when it does not cover offset. */
static bool status_lookup(RbdState *s, uint64_t offset, uint64_t bytes,
                          bool *data, uint64_t *pnum)
{
    RbdStatusCache *c = &s->cache;
    uint64_t end = offset + bytes;
    size_t lo = 0, hi;

    if (!c->valid || offset < c->start || offset >= c->end ||
        clock_ns() - c->walked_ns > RBD_STATUS_TTL_NS) {
        return false;
    }
    if (end > c->end) {
        end = c->end;
    }
    /* The first extent ending after offset. */
    hi = c->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->ext[mid].end <= offset) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo == c->n || c->ext[lo].start >= end) {
        *data = false;
        *pnum = end - offset;
    } else if (c->ext[lo].start > offset) {
        *data = false;
        *pnum = c->ext[lo].start - offset;
    } else {
        *data = true;
        *pnum = (c->ext[lo].end < end ? c->ext[lo].end : end) - offset;
    }
    return true;
}

typedef enum RbdOp {
    RBD_OP_READ,
    RBD_OP_WRITE,
    RBD_OP_FLUSH,
    RBD_OP_DISCARD,
    RBD_OP_ZEROES,
} RbdOp;

/* Submits one request and yields until its completion came in. */
static int coroutine_fn rbd_co_rw(BlockNode *bs, RbdOp op, int64_t offset,
                                  int64_t bytes, IOVector *qiov,
                                  int zero_flags)
{
    RbdState *s = bs->opaque;
    RbdReq req = { .co = coroutine_self() };
    rbd_completion_t c;
    int r;

    r = rbd_aio_create_completion(&req, NULL, &c);
    if (r < 0) {
        return r;
    }
    bool is_write = op == RBD_OP_WRITE ||
                    (op == RBD_OP_ZEROES &&
                     (zero_flags & RBD_WRITE_ZEROES_FLAG_THICK_PROVISION));
    if (is_write) {
        status_note_write(s, &req, (uint64_t)offset, (uint64_t)bytes);
    } else if (op == RBD_OP_DISCARD || op == RBD_OP_ZEROES) {
        status_note_drop(s);
    }
    switch (op) {
    case RBD_OP_READ:
        r = rbd_aio_readv(s->image, qiov->iov, qiov->niov, offset, c);
        break;
    case RBD_OP_WRITE:
        r = rbd_aio_writev(s->image, qiov->iov, qiov->niov, offset, c);
        break;
    case RBD_OP_FLUSH:
        r = rbd_aio_flush(s->image, c);
        break;
    case RBD_OP_DISCARD:
        r = rbd_aio_discard(s->image, offset, bytes, c);
        break;
    case RBD_OP_ZEROES:
        r = rbd_aio_write_zeroes(s->image, offset, bytes, c, zero_flags, 0);
        break;
    }
    if (r < 0) {
        rbd_aio_release(c);
        if (is_write) {
            list_del(&req.link);
        }
        return r;
    }
    while (!req.done) {
        coroutine_yield();
    }
    if (is_write) {
        list_del(&req.link);
    }
    if (req.ret < 0) {
        return (int)req.ret;
    }
    if (op == RBD_OP_READ && req.ret < bytes) {
        /* Past the end of the image: zeroes, as qemu's driver reads. */
        iov_vec_memset(qiov, req.ret, 0, bytes - req.ret);
    }
    return 0;
}

static int coroutine_fn rbd_co_preadv(BlockNode *bs, int64_t offset,
                                      int64_t bytes, IOVector *qiov,
                                      unsigned flags)
{
    return rbd_co_rw(bs, RBD_OP_READ, offset, bytes, qiov, 0);
}

static int coroutine_fn rbd_co_flush(BlockNode *bs)
{
    return rbd_co_rw(bs, RBD_OP_FLUSH, 0, 0, NULL, 0);
}

static int coroutine_fn rbd_co_pwritev(BlockNode *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       unsigned flags)
{
    int r = rbd_co_rw(bs, RBD_OP_WRITE, offset, bytes, qiov, 0);

    if (r == 0 && (flags & BLK_REQ_FUA)) {
        r = rbd_co_flush(bs);
    }
    return r;
}

static int coroutine_fn rbd_co_pdiscard(BlockNode *bs, int64_t offset,
                                        int64_t bytes)
{
    return rbd_co_rw(bs, RBD_OP_DISCARD, offset, bytes, NULL, 0);
}

static int coroutine_fn rbd_co_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                             int64_t bytes, unsigned flags)
{
    /* Without may-unmap the range must stay allocated. */
    int zf = (flags & BLK_REQ_MAY_UNMAP) ? 0
             : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;

    return rbd_co_rw(bs, RBD_OP_ZEROES, offset, bytes, NULL, zf);
}

/* ---- block status: from the cache, walked in the thread pool ---- */

static int coroutine_fn rbd_co_block_status(BlockNode *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum,
                                            int64_t *map, BlockNode **file)
{
    RbdState *s = bs->opaque;
    uint64_t n = 0;
    bool data = true;

    /* A walk may not be kept (a discard came meanwhile): a few looks. */
    for (int tries = 0; tries < 4; tries++) {
        if (status_lookup(s, (uint64_t)offset, (uint64_t)bytes, &data, &n)) {
            break;
        }
        if (s->walking) {
            co_queue_wait(&s->walk_done, NULL);   /* another's walk */
            continue;
        }
        if (status_walk(bs, (uint64_t)offset) < 0) {
            break;
        }
    }
    if (!n) {
        /* Cannot tell: data, as for a driver without block status. */
        *pnum = bytes;
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED;
    }
    *pnum = (int64_t)n;
    if (!data) {
        return BLK_STATUS_ZERO;
    }
    *map = offset;
    *file = bs;
    return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED | BLK_STATUS_OFFSET_VALID;
}

/* ---- length, truncate ---- */

static int64_t coroutine_fn rbd_co_getlength(BlockNode *bs)
{
    RbdState *s = bs->opaque;
    uint64_t size;
    int r = rbd_get_size(s->image, &size);

    return r < 0 ? r : (int64_t)size;
}

typedef struct RbdResize {
    rbd_image_t image;
    uint64_t size;
} RbdResize;

static int rbd_resize_worker(void *opaque)
{
    RbdResize *rs = opaque;

    return rbd_resize(rs->image, rs->size);
}

static int coroutine_fn rbd_co_truncate(BlockNode *bs, int64_t size,
                                        Error **errp)
{
    RbdState *s = bs->opaque;
    RbdResize rs = { .image = s->image, .size = (uint64_t)size };
    int r;

    status_note_drop(s);
    r = thread_pool_co_run(rbd_resize_worker, &rs);

    if (r < 0) {
        error_setg_errno(errp, -r, "Failed to resize file");
        return r;
    }
    return 0;
}

/* ---- open, close ---- */

static int coroutine_fn rbd_co_open(BlockNode *bs, json_t *opts,
                                    Error **errp)
{
    RbdState *s = bs->opaque;
    RbdConnect rc = { 0 };
    rbd_image_info_t info;
    int r;

    if (!rbd_parse_location(opts, &rc, errp)) {
        return -EINVAL;
    }
    if (rc.snap && !bs->read_only) {
        if (!bs->auto_read_only) {
            error_setg(errp, "rbd snapshots are read-only");
            rbd_forget_key(&rc);
            return -EINVAL;
        }
        bs->read_only = true;
    }
    rc.read_only = bs->read_only;
    r = thread_pool_co_run(rbd_connect_worker, &rc);
    rbd_forget_key(&rc);
    if (r < 0) {
        error_propagate(errp, rc.err);
        return r;
    }
    s->cluster = rc.cluster;
    s->io = rc.io;
    s->image = rc.rbd;
    s->efd = -1;

    r = rbd_stat(s->image, &info, sizeof(info));
    if (r < 0) {
        error_setg_errno(errp, -r, "error getting image info from %s",
                         rc.image);
        goto fail;
    }
    s->obj_size = info.obj_size;
    bs->total_bytes = (int64_t)info.size;
    {
        uint64_t features = 0;
        s->status_objs = rbd_get_features(s->image, &features) == 0 &&
                         (features & RBD_FEATURE_FAST_DIFF)
                         ? RBD_STATUS_OBJS_FAST : RBD_STATUS_OBJS_SLOW;
    }
    co_queue_init(&s->walk_done);
    list_init(&s->writes);

    s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->efd < 0) {
        r = -errno;
        error_setg_errno(errp, -r, "Could not create eventfd");
        goto fail;
    }
    r = rbd_set_image_notification(s->image, s->efd, EVENT_TYPE_EVENTFD);
    if (r < 0) {
        error_setg_errno(errp, -r, "Could not set up rbd notification");
        goto fail;
    }
    s->efd_ctx = bs->ctx;
    if (!aio_set_fd_handler(s->efd_ctx, s->efd, rbd_efd_read, NULL, s,
                            errp)) {
        r = -EIO;
        goto fail;
    }
    snprintf(bs->filename, sizeof(bs->filename), "rbd:%s/%s%s%s%s%s",
             rc.pool, rc.ns[0] ? rc.ns : "", rc.ns[0] ? "/" : "", rc.image,
             rc.snap ? "@" : "", rc.snap ? rc.snap : "");
    return 0;

fail:
    if (s->efd >= 0) {
        close(s->efd);
        s->efd = -1;
    }
    rc.cluster = s->cluster;
    rc.io = s->io;
    rc.rbd = s->image;
    rbd_disconnect(&rc);
    s->cluster = NULL;
    s->io = NULL;
    s->image = NULL;
    return r;
}

/* How long closing may hold the loop before it is left to finish alone. */
#define RBD_CLOSE_WAIT_S 5

enum { RBD_CLOSING, RBD_CLOSE_DETACHED, RBD_CLOSE_DONE };

typedef struct RbdCloser {
    RbdConnect rc;
    int efd;
    atomic_int state;              /* RBD_CLOSING, then DETACHED or DONE */
    char node_name[32];
} RbdCloser;

static void *rbd_close_thread(void *opaque)
{
    RbdCloser *cl = opaque;

    rbd_disconnect(&cl->rc);
    if (cl->efd >= 0) {
        close(cl->efd);
    }
    if (atomic_exchange(&cl->state, RBD_CLOSE_DONE) == RBD_CLOSE_DETACHED) {
        /* Nobody waits any more: say so, and clean up alone. */
        log_warn("rbd: node '%s' closed", cl->node_name);
        free(cl);
    }
    return NULL;
}

/*
 * Closing flushes librbd's cache and releases the image's lock and watch:
 * requests to the OSDs, each of which may wait out rados_osd_op_timeout
 * when the cluster went away.  A thread of its own does it; close waits
 * for it at most RBD_CLOSE_WAIT_S and then leaves it to finish (or to die
 * with the process), so a dead cluster never freezes the daemon.
 */
static void coroutine_fn rbd_unwatch_co(void *opaque);

static void rbd_close_node(BlockNode *bs)
{
    RbdState *s = bs->opaque;
    RbdCloser *cl = bj_malloc(sizeof(*cl));
    struct timespec deadline;
    pthread_t th;

    if (s->efd >= 0) {
        /* in the thread that watches it (an iothread's, maybe) */
        aio_co_run_wait(s->efd_ctx, rbd_unwatch_co, s);
    }
    *cl = (RbdCloser) {
        .rc = { .cluster = s->cluster, .io = s->io, .rbd = s->image },
        .efd = s->efd,
    };
    atomic_init(&cl->state, RBD_CLOSING);
    snprintf(cl->node_name, sizeof(cl->node_name), "%s", bs->node_name);
    s->efd = -1;
    s->cluster = NULL;
    s->io = NULL;
    s->image = NULL;
    bj_free_clear(&s->cache.ext);
    s->cache.valid = false;
    if (pthread_create(&th, NULL, rbd_close_thread, cl) != 0) {
        rbd_close_thread(cl);
        free(cl);
        return;
    }
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += RBD_CLOSE_WAIT_S;
    if (pthread_timedjoin_np(th, NULL, &deadline) == 0) {
        free(cl);
        return;
    }
    if (atomic_exchange(&cl->state, RBD_CLOSE_DETACHED) == RBD_CLOSE_DONE) {
        /* It finished just now. */
        pthread_join(th, NULL);
        free(cl);
        return;
    }
    log_warn("rbd: closing node '%s' is still waiting for the cluster "
             "after %d s; it goes on in the background", bs->node_name,
             RBD_CLOSE_WAIT_S);
    pthread_detach(th);
}

static void rbd_refresh_limits(BlockNode *bs)
{
    RbdState *s = bs->opaque;

    /* One object per request at most keeps librbd's splits cheap. */
    bs->bl.opt_transfer = (uint32_t)s->obj_size;
    bs->bl.pdiscard_alignment = (uint32_t)s->obj_size;
}

static int rbd_get_info(BlockNode *bs, BlockDriverInfo *bdi)
{
    RbdState *s = bs->opaque;

    bdi->cluster_size = (int64_t)s->obj_size;
    return 0;
}

static void rbd_query_image(BlockNode *bs, json_t *image)
{
    RbdState *s = bs->opaque;

    json_object_set_new(image, "cluster-size", json_integer(s->obj_size));
}

/* ---- blockdev-create ---- */

static const ArgSpec rbd_location[] = {
    RBD_LOCATION_MEMBERS,
    { .name = NULL },
};

static const ArgSpec rbd_create_members[] = {
    { .name = "driver", .type = ARG_STR },
    { .name = "location", .type = ARG_OBJECT, .members = rbd_location },
    { .name = "size", .type = ARG_ANY },
    { .name = "cluster-size", .type = ARG_ANY, .optional = true },
    { .name = "encrypt", .type = ARG_ANY, .optional = true },
    { .name = NULL },
};

static bool rbd_create_check(json_t *o, Error **errp)
{
    return argspec_check(o, rbd_create_members, "options", false, errp) &&
           bdrv_create_check_u64(o, "size", errp) &&
           bdrv_create_check_u64(o, "cluster-size", errp);
}

static int coroutine_fn rbd_co_create(json_t *o, const char *job_id,
                                      Error **errp)
{
    RbdConnect rc = { 0 };
    uint64_t cluster_size = bdrv_create_opt_u64(o, "cluster-size", 0);
    int r;

    if (json_object_get(o, "encrypt")) {
        error_setg(errp, "rbd encryption is not supported by this build");
        return -ENOTSUP;
    }
    if (!rbd_parse_location(json_object_get(o, "location"), &rc, errp)) {
        return -EINVAL;
    }
    if (rc.snap) {
        error_setg(errp, "Can't use snapshot name for image creation");
        rbd_forget_key(&rc);
        return -EINVAL;
    }
    if (cluster_size) {
        if (cluster_size & (cluster_size - 1)) {
            error_setg(errp, "obj size needs to be power of 2");
            rbd_forget_key(&rc);
            return -EINVAL;
        }
        if (cluster_size < 4096) {
            error_setg(errp, "obj size too small");
            rbd_forget_key(&rc);
            return -EINVAL;
        }
        rc.order = __builtin_ctzll(cluster_size);
    }
    rc.size = bdrv_create_opt_u64(o, "size", 0);
    rc.create = true;
    r = thread_pool_co_run(rbd_connect_worker, &rc);
    rbd_forget_key(&rc);
    if (r < 0) {
        error_propagate(errp, rc.err);
        return r;
    }
    rbd_disconnect(&rc);
    return 0;
}

/* ---- moving to another AioContext (node drained: nothing in flight) ---- */

static void coroutine_fn rbd_unwatch_co(void *opaque)
{
    RbdState *s = opaque;

    aio_set_fd_handler(s->efd_ctx, s->efd, NULL, NULL, NULL, NULL);
}

static void coroutine_fn rbd_watch_co(void *opaque)
{
    RbdState *s = opaque;
    Error *err = NULL;

    if (!aio_set_fd_handler(s->efd_ctx, s->efd, rbd_efd_read, NULL, s,
                            &err)) {
        error_report_err(err, "rbd");
    }
}

static void rbd_detach_aio_context(BlockNode *bs)
{
    RbdState *s = bs->opaque;

    if (s->efd >= 0) {
        aio_co_run_wait(s->efd_ctx, rbd_unwatch_co, s);
    }
}

static void rbd_attach_aio_context(BlockNode *bs)
{
    RbdState *s = bs->opaque;

    s->efd_ctx = bs->ctx;
    if (s->efd >= 0) {
        aio_co_run_wait(s->efd_ctx, rbd_watch_co, s);
        /* a completion signalled while no one watched is not lost: the
         * eventfd stays readable until read */
    }
}

const BlockDriver bdrv_rbd = {
    .name = "rbd",
    .state_size = sizeof(RbdState),
    .options = rbd_options,
    .strong_options = rbd_strong,
    .co_open = rbd_co_open,
    .close = rbd_close_node,
    .co_preadv = rbd_co_preadv,
    .co_pwritev = rbd_co_pwritev,
    .co_pwrite_zeroes = rbd_co_pwrite_zeroes,
    .co_pdiscard = rbd_co_pdiscard,
    .co_flush = rbd_co_flush,
    .co_block_status = rbd_co_block_status,
    .co_truncate = rbd_co_truncate,
    .co_getlength = rbd_co_getlength,
    .refresh_limits = rbd_refresh_limits,
    .detach_aio_context = rbd_detach_aio_context,
    .attach_aio_context = rbd_attach_aio_context,
    .get_info = rbd_get_info,
    .query_image = rbd_query_image,
    .create_check = rbd_create_check,
    .co_create = rbd_co_create,
};
