/*
 * One NBD client connection: the handshake in the main loop, then the
 * transmission phase in the export's context.
 *
 * Transmission: a receive coroutine reads requests one after another and
 * starts one coroutine per request, entered at once so that requests reach
 * the block layer in arrival order (which is what keeps them in order when
 * a drained section postpones them).  Requests run concurrently and reply
 * as they complete, out of order; send_lock keeps each reply whole on the
 * socket.  The receive loop stops reading while too many requests or too
 * many buffered bytes are in flight, so a client cannot make us allocate
 * without bound; and while all connections together hold more than
 * MAX_TOTAL_BYTES, a connection reads a new request only once its own are
 * done, so many clients cannot multiply the per-client bound either.
 *
 * End of a connection (client hangs up, NBD_CMD_DISC, protocol violation,
 * block-export-del hard, server stop): the receive loop stops, waits for
 * its requests, drops the fd watch, and hands the connection to the main
 * loop, which closes the fd and drops the export reference.  The fd is
 * closed only there so that nbd_conn_close (shutdown(2) from the main loop)
 * never hits a reused descriptor.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd/nbd-int.h"
#include "nbd/nbd-meta.h"
#include "nbd/nbd-wire.h"
#include "object/authz.h"
#include "util/alloc.h"
#include "util/bufpool.h"
#include "util/log.h"

#define MAX_REQUESTS      128
#define MAX_REQUEST_BYTES (256u * 1024 * 1024)
/* Daemon-wide, all connections and threads (docs/limits.md). */
#define MAX_TOTAL_BYTES   (512u * 1024 * 1024)

/*
 * Request buffers held by every connection.  A connection with nothing in
 * flight may always read one more request, so a well-behaved client makes
 * progress however much the others hold; one waiting for the budget has a
 * request of its own whose end wakes it.  Hence the bound: MAX_TOTAL_BYTES
 * plus one request (32 MiB at most) per connection.
 */
static atomic_size_t total_bytes;
/* Extents per BLOCK_STATUS reply: a bound on work per request. */
#define MAX_EXTENTS       1024
/* Buffer alignment good for O_DIRECT nodes. */
#define BUF_ALIGN         4096

typedef struct NbdReq {
    NbdConn *conn;
    NbdRequest r;
    NbdRequestCheck check;
    void *buf;
    size_t buf_bytes;          /* counted in in_flight_bytes */
    Coroutine *co;
    ListHead link;             /* in conn->reqs (conn->ctx thread) */
} NbdReq;

static void conn_finish_bh(void *opaque);

/* Main loop: a TLS close bottom half is done; a finish it held back runs. */
static void conn_close_done_bh(void *opaque)
{
    NbdConn *c = opaque;

    if (--c->close_refs == 0 && c->finish_pending) {
        conn_finish_bh(c);
    }
}

/* In the connection's thread, where its session is used: close_notify
 * when no reply is half sent (never waiting for the socket), then the
 * same shutdown as plaintext. */
static void conn_tls_close_bh(void *opaque)
{
    NbdConn *c = opaque;

    if (c->ctx != aio_current_context()) {
        /* The connection moved to another thread meanwhile. */
        aio_bh_schedule_oneshot(c->ctx, conn_tls_close_bh, c);
        return;
    }

    if (!c->wr_co && !c->broken) {
        nbd_conn_tls_bye(c);
    }
    shutdown(c->fd, SHUT_RDWR);
    aio_bh_schedule_oneshot(aio_main_context(), conn_close_done_bh, c);
}

void nbd_conn_close(NbdConn *c)
{
    atomic_store(&c->closing, true);
    if (c->tls && c->exp) {
        /* A TLS connection in transmission ends with close_notify, sent
         * from its own thread; the connection is not freed before that
         * ran (close_refs, main loop). */
        c->close_refs++;
        aio_bh_schedule_oneshot(c->ctx, conn_tls_close_bh, c);
        return;
    }
    /* Wakes a reader or writer blocked on the socket, in whatever thread. */
    shutdown(c->fd, SHUT_RDWR);
}

/* ---- replies ---- */

static void conn_broken(NbdConn *c, int ret)
{
    if (!c->broken) {
        log_debug("nbd: connection lost (%d)", ret);
    }
    c->broken = true;
    shutdown(c->fd, SHUT_RDWR);
}

static int coroutine_fn send_iov(NbdConn *c, struct iovec *iov, int niov)
{
    int ret;

    if (c->broken) {
        return -EPIPE;
    }
    ret = nbd_conn_writev(c, iov, niov);
    if (ret < 0) {
        conn_broken(c, ret);
    }
    return ret;
}

/* A reply with no payload: simple, or a structured ERROR / NONE chunk. */
static void coroutine_fn reply_status(NbdReq *q, uint32_t err,
                                      const char *why)
{
    NbdConn *c = q->conn;
    uint8_t hdr[NBD_ERROR_CHUNK_MAX];
    struct iovec iov;

    if (!c->params.structured) {
        iov.iov_len = nbd_encode_simple_reply(hdr, err, q->r.handle);
    } else if (err) {
        iov.iov_len = nbd_encode_error_chunk(hdr, NBD_REPLY_FLAG_DONE,
                                             q->r.handle, err, why);
    } else {
        iov.iov_len = nbd_encode_none_chunk(hdr, q->r.handle);
    }
    iov.iov_base = hdr;
    co_mutex_lock(&c->send_lock);
    send_iov(c, &iov, 1);
    co_mutex_unlock(&c->send_lock);
}

/* ---- requests ---- */

/* The status of what a read returns (the backing chain included) through
 * our edge: waits out drained sections like the other request functions
 * do. */
static int coroutine_fn export_block_status(NbdExport *exp, int64_t offset,
                                            int64_t bytes, int64_t *pnum)
{
    BlockNode *bs;
    int depth, ret;

    bdrv_co_wait_unquiesced(exp->child);
    bs = exp->child->node;
    ret = nbd_meta_status_above(bs, offset, bytes, pnum, &depth);
    bdrv_dec_in_flight(bs);
    return ret;
}

static int coroutine_fn export_flush(NbdExport *exp)
{
    BlockNode *bs;
    int ret;

    bdrv_co_wait_unquiesced(exp->child);
    bs = exp->child->node;  /* a graph change may have moved our edge */
    ret = bdrv_co_flush(bs);
    bdrv_dec_in_flight(bs);
    return ret;
}

static int coroutine_fn read_range(NbdExport *exp, uint64_t off, void *buf,
                                   uint64_t len)
{
    IOVector v;
    iov_vec_init_buf(&v, buf, len);
    return bdrv_co_preadv(exp->child, off, len, &v, 0);
}

/* Simple reply to READ: the data follows the header, or an error alone. */
static void coroutine_fn do_read_simple(NbdReq *q)
{
    NbdConn *c = q->conn;
    uint8_t hdr[NBD_SIMPLE_REPLY_SIZE];
    struct iovec iov[2];
    int ret = 0;

    if (q->r.length) {
        ret = read_range(c->exp, q->r.offset, q->buf, q->r.length);
    }
    iov[0].iov_base = hdr;
    iov[0].iov_len = nbd_encode_simple_reply(hdr, nbd_errno_to_wire(ret),
                                             q->r.handle);
    iov[1].iov_base = q->buf;
    iov[1].iov_len = ret < 0 ? 0 : q->r.length;
    co_mutex_lock(&c->send_lock);
    send_iov(c, iov, ret < 0 ? 1 : 2);
    co_mutex_unlock(&c->send_lock);
}

/*
 * Structured reply to READ: areas that read as zeroes go as OFFSET_HOLE
 * chunks (unless the client asked for one chunk with DF), the rest is read
 * and sent as OFFSET_DATA.  The last chunk carries DONE.
 */
static void coroutine_fn do_read_structured(NbdReq *q)
{
    NbdConn *c = q->conn;
    NbdExport *exp = c->exp;
    uint64_t off = q->r.offset, end = q->r.offset + q->r.length;
    bool sparse = !(q->r.flags & NBD_CMD_FLAG_DF);

    if (q->r.length == 0) {
        reply_status(q, 0, NULL);
        return;
    }
    while (off < end) {
        int64_t pnum = end - off;
        bool hole = false;
        int ret;

        if (sparse) {
            ret = export_block_status(exp, off, end - off, &pnum);
            if (ret < 0) {
                reply_status(q, nbd_errno_to_wire(ret), "block status failed");
                return;
            }
            hole = ret & BLK_STATUS_ZERO;
            if (pnum <= 0 || (uint64_t)pnum > end - off) {
                pnum = end - off;
            }
        }
        uint8_t *data = (uint8_t *)q->buf + (off - q->r.offset);
        if (!hole) {
            ret = read_range(exp, off, data, pnum);
            if (ret < 0) {
                reply_status(q, nbd_errno_to_wire(ret), "read failed");
                return;
            }
        }

        uint16_t flags = off + pnum == end ? NBD_REPLY_FLAG_DONE : 0;
        uint8_t hdr[NBD_OFFSET_HOLE_SIZE > NBD_OFFSET_DATA_HEADER_SIZE
                    ? NBD_OFFSET_HOLE_SIZE : NBD_OFFSET_DATA_HEADER_SIZE];
        struct iovec iov[2] = { { hdr, 0 }, { data, pnum } };
        int niov = 2;
        if (hole) {
            iov[0].iov_len = nbd_encode_offset_hole(hdr, flags, q->r.handle,
                                                    off, pnum);
            niov = 1;
        } else {
            iov[0].iov_len = nbd_encode_offset_data(hdr, flags, q->r.handle,
                                                    off, pnum);
        }
        co_mutex_lock(&c->send_lock);
        ret = send_iov(c, iov, niov);
        co_mutex_unlock(&c->send_lock);
        if (ret < 0) {
            return;
        }
        off += pnum;
    }
}

/* The extents of one context, computed through our edge: waits out
 * drained sections like the other request functions do. */
static int coroutine_fn context_extents(NbdExport *exp, uint32_t id,
                                        uint64_t off, uint64_t len,
                                        NbdExtents *x)
{
    BlockNode *bs;
    int ret = 0;

    bdrv_co_wait_unquiesced(exp->child);
    bs = exp->child->node;
    if (id == NBD_META_ID_BASE_ALLOCATION) {
        ret = nbd_meta_base_allocation(bs, off, len, x);
    } else if (id == NBD_META_ID_ALLOCATION_DEPTH) {
        ret = nbd_meta_allocation_depth(bs, off, len, x);
    } else {
        nbd_meta_dirty_bitmap(exp->bitmaps[id - NBD_META_ID_DIRTY_BITMAP],
                              off, len, x);
    }
    bdrv_dec_in_flight(bs);
    return ret;
}

/*
 * One BLOCK_STATUS chunk per selected context, in the order they were
 * listed at negotiation, the last one carrying DONE.  All are computed
 * before anything is sent, so a failure is answered with an error alone.
 */
static void coroutine_fn do_block_status(NbdReq *q)
{
    NbdConn *c = q->conn;
    NbdExport *exp = c->exp;
    uint64_t off = q->r.offset, len = q->r.length;
    unsigned max = q->r.flags & NBD_CMD_FLAG_REQ_ONE ? 1 : MAX_EXTENTS;
    unsigned nctx = 0, cap = 2 + exp->n_bitmaps;
    struct BsCtx {
        uint32_t id;
        NbdExtents x;
        uint8_t hdr[NBD_BLOCK_STATUS_HEADER_SIZE];
        uint8_t *wire;
    } *ctx = bj_calloc(cap, sizeof(*ctx));
    struct iovec *iov = bj_calloc(2 * cap, sizeof(*iov));
    int ret = 0;

    if (len == 0) {
        /* Nothing to describe; answer for the byte at offset, if any. */
        len = off < c->params.size ? 1 : 0;
    }
    if (c->params.meta_base_allocation) {
        ctx[nctx++].id = NBD_META_ID_BASE_ALLOCATION;
    }
    if (c->meta_allocation_depth) {
        ctx[nctx++].id = NBD_META_ID_ALLOCATION_DEPTH;
    }
    for (unsigned i = 0; c->meta_bitmaps && i < exp->n_bitmaps; i++) {
        if (c->meta_bitmaps[i]) {
            ctx[nctx++].id = NBD_META_ID_DIRTY_BITMAP + i;
        }
    }
    assert(nctx > 0);   /* nbd_request_check refuses a connection without */

    for (unsigned k = 0; k < nctx; k++) {
        nbd_extents_init(&ctx[k].x, max);
    }
    for (unsigned k = 0; k < nctx && ret >= 0; k++) {
        if (len) {
            ret = context_extents(exp, ctx[k].id, off, len, &ctx[k].x);
        }
        if (ret >= 0 && ctx[k].x.count == 0) {
            ret = -EINVAL;  /* past the end: no extent at this offset */
        }
    }
    if (ret < 0) {
        reply_status(q, nbd_errno_to_wire(ret), "block status failed");
        goto out;
    }
    for (unsigned k = 0; k < nctx; k++) {
        NbdExtents *x = &ctx[k].x;
        ctx[k].wire = bj_try_malloc((size_t)x->count * NBD_EXTENT_SIZE);
        if (!ctx[k].wire) {
            reply_status(q, NBD_ENOMEM, "out of memory");
            goto out;
        }
        for (unsigned i = 0; i < x->count; i++) {
            nbd_encode_extent(ctx[k].wire + (size_t)i * NBD_EXTENT_SIZE,
                              x->e[i].length, x->e[i].flags);
        }
        iov[2 * k].iov_base = ctx[k].hdr;
        iov[2 * k].iov_len = nbd_encode_block_status(
            ctx[k].hdr, k + 1 == nctx ? NBD_REPLY_FLAG_DONE : 0, q->r.handle,
            ctx[k].id, x->count);
        iov[2 * k + 1].iov_base = ctx[k].wire;
        iov[2 * k + 1].iov_len = (size_t)x->count * NBD_EXTENT_SIZE;
    }
    co_mutex_lock(&c->send_lock);
    send_iov(c, iov, (int)(2 * nctx));
    co_mutex_unlock(&c->send_lock);
out:
    for (unsigned k = 0; k < nctx; k++) {
        free(ctx[k].wire);
        nbd_extents_destroy(&ctx[k].x);
    }
    free(ctx);
    free(iov);
}

static void coroutine_fn do_request(NbdReq *q)
{
    NbdConn *c = q->conn;
    NbdExport *exp = c->exp;
    bool fua = (q->r.flags & NBD_CMD_FLAG_FUA) || exp->writethrough;
    IOVector v;
    int ret = 0;

    switch (q->r.type) {
    case NBD_CMD_READ:
        if (c->params.structured) {
            do_read_structured(q);
        } else {
            do_read_simple(q);
        }
        return;
    case NBD_CMD_BLOCK_STATUS:
        do_block_status(q);
        return;
    case NBD_CMD_WRITE:
        iov_vec_init_buf(&v, q->buf, q->r.length);
        ret = bdrv_co_pwritev(exp->child, q->r.offset, q->r.length, &v,
                              fua ? BLK_REQ_FUA : 0);
        break;
    case NBD_CMD_WRITE_ZEROES: {
        unsigned flags = fua ? BLK_REQ_FUA : 0;
        if (!(q->r.flags & NBD_CMD_FLAG_NO_HOLE)) {
            flags |= BLK_REQ_MAY_UNMAP;
        }
        if (q->r.flags & NBD_CMD_FLAG_FAST_ZERO) {
            flags |= BLK_REQ_NO_FALLBACK;
        }
        ret = bdrv_co_pwrite_zeroes(exp->child, q->r.offset, q->r.length,
                                    flags);
        break;
    }
    case NBD_CMD_TRIM:
        ret = bdrv_co_pdiscard(exp->child, q->r.offset, q->r.length);
        if (ret == 0 && fua) {
            ret = export_flush(exp);
        }
        break;
    case NBD_CMD_FLUSH:
        ret = export_flush(exp);
        break;
    case NBD_CMD_CACHE:
        /* A hint; the page cache below us does the caching. */
        break;
    default:
        abort();    /* nbd_request_check let nothing else through */
    }
    /* strerror() is not thread-safe; the command name says enough. */
    reply_status(q, nbd_errno_to_wire(ret), nbd_cmd_name(q->r.type));
}

static void coroutine_fn request_co(void *opaque)
{
    NbdReq *q = opaque;
    NbdConn *c = q->conn;

    if (q->check.verdict == NBD_REQ_ERROR) {
        reply_status(q, q->check.nbd_error, q->check.why);
    } else if (!c->broken) {
        do_request(q);
    }
    list_del(&q->link);
    c->in_flight--;
    c->in_flight_bytes -= q->buf_bytes;
    atomic_fetch_sub(&total_bytes, q->buf_bytes);
    bufpool_free(q->buf, q->buf_bytes);
    free(q);
    if (c->recv_waiting) {
        Coroutine *co = c->recv_waiting;
        c->recv_waiting = NULL;
        aio_co_wake(co);
    }
}

/* ---- the receive loop ---- */

static bool coroutine_fn recv_one(NbdConn *c)
{
    uint8_t hdr[NBD_REQUEST_SIZE];
    NbdReq *q;
    int ret;

    while (c->in_flight >= MAX_REQUESTS ||
           c->in_flight_bytes >= MAX_REQUEST_BYTES ||
           (c->in_flight > 0 &&
            atomic_load(&total_bytes) >= MAX_TOTAL_BYTES)) {
        c->recv_waiting = coroutine_self();
        coroutine_yield();
    }
    if (c->broken || atomic_load(&c->closing)) {
        return false;
    }
    ret = nbd_conn_read(c, hdr, sizeof(hdr));
    if (ret < 0) {
        return false;
    }
    q = bj_calloc(1, sizeof(*q));
    q->conn = c;
    if (!nbd_decode_request(hdr, &q->r)) {
        log_warn("nbd: export '%s': bad request magic, disconnecting",
                 c->exp->id);
        free(q);
        return false;
    }
    q->check = nbd_request_check(&c->params, &q->r);
    if (q->check.verdict == NBD_REQ_DISC) {
        free(q);
        return false;
    }
    if (q->check.verdict == NBD_REQ_HARD_CLOSE) {
        log_warn("nbd: export '%s': %s, disconnecting", c->exp->id,
                 q->check.why);
        free(q);
        return false;
    }
    size_t need = q->check.payload;
    if (q->check.verdict == NBD_REQ_OK && q->r.type == NBD_CMD_READ) {
        need = q->r.length;
    }
    if (need) {
        q->buf = bufpool_alloc(need);
        q->buf_bytes = need;
    }
    if (q->check.payload) {
        ret = nbd_conn_read(c, q->buf, q->check.payload);
        if (ret < 0) {
            bufpool_free(q->buf, q->buf_bytes);
            free(q);
            return false;
        }
    }
    c->in_flight++;
    c->in_flight_bytes += q->buf_bytes;
    atomic_fetch_add(&total_bytes, q->buf_bytes);
    /* Entered now, so it reaches the block layer before any later request
     * (ownership of q moves to the coroutine). */
    q->co = coroutine_create(request_co, q);
    list_add_tail(&c->reqs, &q->link);
    coroutine_enter(q->co);
    return true;
}

static void coroutine_fn transmission_co(void *opaque)
{
    NbdConn *c = opaque;

    while (recv_one(c)) {
        /* next request */
    }
    /* Requests still running finish and reply (if the socket allows). */
    while (c->in_flight > 0) {
        c->recv_waiting = coroutine_self();
        coroutine_yield();
    }
    if (!c->broken) {
        nbd_conn_tls_bye(c);
    }
    nbd_conn_unwatch(c);
    /* Nothing of ours waits in this thread any more (we end without
     * yielding again): a move finds nothing to re-home. */
    c->recv_co = NULL;
    aio_bh_schedule_oneshot(aio_main_context(), conn_finish_bh, c);
}

/* ---- moving to another context ---- */

typedef struct ConnMove {
    NbdConn *c;
    AioContext *to;
    bool done;
} ConnMove;

/*
 * In the connection's old thread, outside any coroutine, so none of its
 * coroutines runs now.  One that is scheduled here (woken, not yet
 * entered) would still run here: then we try again after it ran.  The
 * others wait on something that moves along (the fd watch, the send
 * lock, the node's postponed queue restarted in the node's new context,
 * the request slots) and are re-homed: their next wake enters them in
 * the new thread.  The TLS session is plain memory used by whichever
 * thread runs the connection.
 */
static void conn_move_bh(void *opaque)
{
    ConnMove *m = opaque;
    NbdConn *c = m->c;
    NbdReq *q;

    if (c->recv_co && coroutine_is_scheduled(c->recv_co)) {
        return;
    }
    list_for_each_entry(q, &c->reqs, link) {
        if (coroutine_is_scheduled(q->co)) {
            return;
        }
    }
    nbd_conn_unwatch(c);
    if (c->recv_co) {
        coroutine_set_context(c->recv_co, m->to);
    }
    list_for_each_entry(q, &c->reqs, link) {
        coroutine_set_context(q->co, m->to);
    }
    c->ctx = m->to;
    m->done = true;
}

static void conn_rewatch_bh(void *opaque)
{
    nbd_conn_rewatch(opaque);
}

/* The waits below run the main loop, where the connection may end
 * meanwhile: it is freed only after them (as for a TLS close). */
static void conn_hold(NbdConn *c)
{
    c->close_refs++;
}

static void conn_release(NbdConn *c)
{
    if (--c->close_refs == 0 && c->finish_pending) {
        conn_finish_bh(c);
    }
}

bool nbd_conn_move(NbdConn *c, AioContext *ctx)
{
    ConnMove m = { .c = c, .to = ctx };

    if (!c->transmitting || c->frozen || c->ctx == ctx) {
        return false;
    }
    conn_hold(c);
    for (;;) {
        aio_bh_run_wait(c->ctx, conn_move_bh, &m);
        if (m.done) {
            break;
        }
        if (c->ctx == aio_main_context()) {
            /* Ran directly: let the scheduled coroutines run first. */
            aio_poll(aio_main_context(), false);
        }
    }
    c->frozen = true;
    conn_release(c);
    return true;
}

bool nbd_conn_move_done(NbdConn *c)
{
    if (c->start_pending) {
        c->start_pending = false;
        c->ctx = c->exp->ctx;
        c->transmitting = true;
        aio_co_schedule(c->ctx, c->recv_co);
        return true;
    }
    if (!c->frozen) {
        return false;
    }
    c->frozen = false;
    conn_hold(c);
    aio_bh_run_wait(c->ctx, conn_rewatch_bh, c);
    conn_release(c);
    return true;
}

/* ---- the handshake (main loop) ---- */

static void conn_finish_bh(void *opaque)
{
    NbdConn *c = opaque;

    if (c->close_refs) {
        /* A TLS close bottom half still uses c: it finishes us. */
        c->finish_pending = true;
        return;
    }
    if (c->exp) {
        list_del(&c->export_link);
        nbd_export_unref(c->exp);
    }
    list_del(&c->server_link);
    if (c->tls) {
        gnutls_deinit(c->tls);
    }
    if (c->tls_creds) {
        tls_creds_unref(c->tls_creds);
    }
    free(c->tls_authz);
    close(c->fd);
    free(c->meta_bitmaps);
    free(c);
}

static bool coroutine_fn flush_handshake(NbdConn *c, NbdHandshake *hs)
{
    while (hs->out_len) {
        struct iovec iov = { hs->out, hs->out_len };
        if (nbd_conn_writev(c, &iov, 1) < 0) {
            return false;
        }
        nbd_handshake_output_consumed(hs, hs->out_len);
    }
    return true;
}

static void start_transmission(NbdConn *c, NbdHandshake *hs)
{
    NbdExport *exp = hs->export.handle;

    nbd_export_ref(exp);
    c->exp = exp;
    list_add_tail(&exp->conns, &c->export_link);
    c->params.size = hs->export.size;
    c->params.tflags = nbd_handshake_tflags(hs);
    c->params.structured = hs->structured;
    c->params.meta_base_allocation = hs->meta_base_allocation;
    c->meta_allocation_depth = hs->meta_allocation_depth;
    /* Ownership of the selection moves to the connection. */
    c->meta_bitmaps = hs->meta_bitmaps;
    hs->meta_bitmaps = NULL;
    c->params.meta_other = c->meta_allocation_depth ? 1 : 0;
    for (unsigned i = 0; c->meta_bitmaps && i < exp->n_bitmaps; i++) {
        c->params.meta_other += c->meta_bitmaps[i];
    }
    c->params.min_block = hs->block_size_agreed ? hs->export.min_block : 1;
    c->params.max_block = hs->export.max_block;
}

/*
 * NBD_OPT_STARTTLS was acknowledged (and the ACK sent): the TLS handshake,
 * then the client's certificate (verify-peer) and identity (tls-authz).
 * False ends the connection.
 */
static bool coroutine_fn start_tls(NbdConn *c, NbdHandshake *hs)
{
    Error *err = NULL;
    char *identity = NULL;
    int ret;

    ret = gnutls_init(&c->tls, GNUTLS_SERVER | GNUTLS_NONBLOCK |
                      GNUTLS_NO_SIGNAL);
    if (ret < 0) {
        c->tls = NULL;
        log_warn("nbd: cannot start a TLS session: %s", gnutls_strerror(ret));
        return false;
    }
    ret = tls_creds_apply(c->tls_creds, c->tls);
    if (ret < 0) {
        log_warn("nbd: cannot set TLS credentials '%s': %s",
                 tls_creds_id(c->tls_creds), gnutls_strerror(ret));
        return false;
    }
    gnutls_transport_set_int(c->tls, c->fd);
    if (nbd_conn_tls_handshake(c) < 0) {
        return false;
    }
    if (!tls_creds_check_peer(c->tls_creds, c->tls, &identity, &err) ||
        (c->tls_authz &&
         !authz_is_allowed(c->tls_authz, identity ? identity : "", &err))) {
        log_info("nbd: TLS client refused: %s", error_get_pretty(err));
        error_free(err);
        free(identity);
        return false;
    }
    free(identity);
    hs->starttls_pending = false;
    hs->tls_active = true;
    return true;
}

static void coroutine_fn handshake_co(void *opaque)
{
    NbdConn *c = opaque;
    NbdHandshake hs;
    uint8_t buf[4096];
    bool ok;

    nbd_handshake_init(&hs, &nbd_export_lookup);
    hs.tls_required = c->tls_creds != NULL;
    ok = flush_handshake(c, &hs);
    while (ok && nbd_handshake_want(&hs) > 0) {
        size_t n = nbd_handshake_want(&hs);
        if (n > sizeof(buf)) {
            n = sizeof(buf);
        }
        if (nbd_conn_read(c, buf, n) < 0) {
            ok = false;
            break;
        }
        nbd_handshake_feed(&hs, buf, n);
        if (hs.state == NBD_HS_DONE) {
            /* Before any yield, while the export surely exists. */
            start_transmission(c, &hs);
        }
        ok = flush_handshake(c, &hs);
        if (ok && hs.starttls_pending) {
            ok = start_tls(c, &hs);
        }
    }
    if (hs.state == NBD_HS_CLOSE && hs.close_reason) {
        log_debug("nbd: handshake ended: %s", hs.close_reason);
    }
    nbd_handshake_cleanup(&hs);
    nbd_conn_unwatch(c);
    /* Done negotiating, one way or the other: the deadline is over. */
    aio_timer_free(c->hs_timer);
    c->hs_timer = NULL;

    if (ok && c->exp && !atomic_load(&c->closing) &&
        !c->exp->shutting_down) {
        co_mutex_init(&c->send_lock);
        c->recv_co = coroutine_create(transmission_co, c);
        if (c->exp->moving) {
            /* Its node is changing context: it starts once that is over
             * (nbd_conn_move_done), with the others. */
            c->start_pending = true;
            return;
        }
        c->ctx = c->exp->ctx;
        c->transmitting = true;
        aio_co_schedule(c->ctx, c->recv_co);
        return;
    }
    aio_bh_schedule_oneshot(aio_main_context(), conn_finish_bh, c);
}

/* A client still negotiating at its deadline is cut off: the handshake
 * coroutine's read or write fails and it ends the connection. */
static void handshake_timeout_cb(void *opaque)
{
    NbdConn *c = opaque;

    log_info("nbd: a client did not finish the handshake in time, "
             "disconnecting it");
    nbd_conn_close(c);
}

NbdConn *nbd_conn_start(int fd, ListHead *server_list,
                        int64_t handshake_max_ns, TlsCreds *tls_creds,
                        const char *tls_authz)
{
    NbdConn *c = bj_calloc(1, sizeof(*c));

    if (tls_creds) {
        tls_creds_ref(tls_creds);
        c->tls_creds = tls_creds;
        c->tls_authz = tls_authz ? bj_strdup(tls_authz) : NULL;
    }

    c->fd = fd;
    c->ctx = aio_main_context();
    list_init(&c->export_link);
    list_init(&c->reqs);
    list_add_tail(server_list, &c->server_link);
    if (handshake_max_ns > 0) {
        c->hs_timer = aio_timer_new(c->ctx, handshake_timeout_cb, c);
        aio_timer_mod(c->hs_timer, clock_ns() + handshake_max_ns);
    }
    aio_co_enter(c->ctx, coroutine_create(handshake_co, c));
    return c;
}
