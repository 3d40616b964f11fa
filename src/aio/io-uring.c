/*
 * The io_uring backend: one ring per AioContext, made on first use and kept
 * in the context's AIO_SLOT_IO_URING slot.
 *
 *   coroutine                       loop of the same context
 *   ---------                       ------------------------
 *   take a slot (in_flight < CQ)
 *   fill an SQE, data = &req
 *   schedule submit BH (once) --->  submit BH: io_uring_submit (one syscall
 *   coroutine_yield()                 for everything queued this iteration)
 *                                   ... kernel posts CQEs, rings the eventfd
 *                                   eventfd handler: reap every CQE,
 *          <------------------------  req->res = cqe->res, aio_co_wake(co)
 *   return req.res
 *
 * Invariants:
 * - Everything here runs in the context's own thread, so no locking.
 * - in_flight (requests that hold an SQE or sit in the kernel) never exceeds
 *   the CQ size, so the CQ can never overflow and the kernel never answers
 *   -EBUSY because of us; coroutines beyond that wait FIFO for a slot.
 * - CQEs are reaped only by the eventfd handler, which runs outside any
 *   coroutine: a request's coroutine has always yielded by then.
 */
#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "config.h"

#ifdef HAVE_VALGRIND_H
#include <valgrind/memcheck.h>
#endif

#include "aio/io-internal.h"
#include "util/alloc.h"
#include "util/list.h"
#include "util/log.h"

#define RING_SQ_ENTRIES 128
/* How long to wait before resubmitting when the kernel is short of memory. */
#define RING_RETRY_NS (1000 * 1000)

typedef struct IoUringReq {
    Coroutine *co;
    int res;
    bool done;
} IoUringReq;

typedef struct SlotWaiter {
    ListHead link;
    Coroutine *co;
    bool granted;       /* the waker took the slot on our behalf */
} SlotWaiter;

typedef struct IoUringState {
    AioContext *ctx;
    struct io_uring ring;
    int efd;
    AioBH *submit_bh;
    AioTimer *retry_timer;
    bool submit_scheduled;
    unsigned in_flight;
    unsigned max_in_flight;
    ListHead slot_waiters;   /* SlotWaiter, FIFO */
} IoUringState;

static bool ioq_submit(IoUringState *s);

/* ---- probe ---- */

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool probe_result;

static void probe_io_uring(void)
{
    static const int needed[] = {
        IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC,
        IORING_OP_FALLOCATE,
    };
    struct io_uring ring;
    struct io_uring_probe *probe;
    int ret;

    ret = io_uring_queue_init(2, &ring, 0);
    if (ret < 0) {
        log_info("io_uring is not available: %s", strerror(-ret));
        return;
    }
    probe = io_uring_get_probe_ring(&ring);
    if (probe) {
        probe_result = true;
        for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
            if (!io_uring_opcode_supported(probe, needed[i])) {
                log_info("io_uring lacks opcode %d", needed[i]);
                probe_result = false;
            }
        }
        io_uring_free_probe(probe);
    }
    io_uring_queue_exit(&ring);
}

bool io_uring_available(void)
{
    pthread_once(&probe_once, probe_io_uring);
    return probe_result;
}

/* ---- completions ---- */

/* Hands free slots to waiters, first come first served. */
static void ioq_grant_slots(IoUringState *s)
{
    while (s->in_flight < s->max_in_flight && !list_empty(&s->slot_waiters)) {
        SlotWaiter *w = list_first_entry(&s->slot_waiters, SlotWaiter, link);

        list_del(&w->link);
        w->granted = true;
        s->in_flight++;
        /* w lives on the waiter's stack: not touched after the wake. */
        aio_co_wake(w->co);
    }
}

static void ioq_process_completions(IoUringState *s)
{
    struct io_uring_cqe *cqe;

    /* peek also flushes a (theoretical) CQ overflow list from the kernel. */
    while (io_uring_peek_cqe(&s->ring, &cqe) == 0) {
        IoUringReq *req = io_uring_cqe_get_data(cqe);

        req->res = cqe->res;
        req->done = true;
        io_uring_cqe_seen(&s->ring, cqe);
        s->in_flight--;
        /* Same thread and outside a coroutine: the request's coroutine runs
         * right now; it may queue new SQEs, which is fine here. */
        aio_co_wake(req->co);
    }
    ioq_grant_slots(s);
    /* A submission the kernel refused earlier may go through now. */
    if (io_uring_sq_ready(&s->ring) > 0 && !s->submit_scheduled) {
        ioq_submit(s);
    }
}

static void ioq_eventfd_read(void *opaque)
{
    IoUringState *s = opaque;
    uint64_t count;

    /* Clear the eventfd before reaping: a CQE posted after this read rings
     * it again, so none can be missed. */
    if (read(s->efd, &count, sizeof(count)) < 0 &&
        errno != EAGAIN && errno != EINTR) {
        log_error("io_uring: cannot read eventfd: %s", strerror(errno));
    }
    ioq_process_completions(s);
}

/* ---- submission ---- */

/*
 * Hands every queued SQE to the kernel.  Returns false if the kernel refused
 * for now (out of memory or busy); the retry timer is armed then, and the
 * next completion retries as well.
 */
static bool ioq_submit(IoUringState *s)
{
    while (io_uring_sq_ready(&s->ring) > 0) {
        int ret = io_uring_submit(&s->ring);

        if (ret > 0 || ret == -EINTR) {
            continue;
        }
        if (ret == 0 || ret == -EAGAIN || ret == -EBUSY || ret == -ENOMEM) {
            log_debug("io_uring: submit deferred: %s",
                      ret ? strerror(-ret) : "nothing consumed");
            if (!aio_timer_pending(s->retry_timer)) {
                aio_timer_mod(s->retry_timer, clock_ns() + RING_RETRY_NS);
            }
            return false;
        }
        /* Anything else means our ring or our SQEs are broken, and the
         * requests in it could never complete: fail loudly. */
        log_error("io_uring: submit failed: %s", strerror(-ret));
        abort();
    }
    return true;
}

static void ioq_submit_bh(void *opaque)
{
    IoUringState *s = opaque;

    s->submit_scheduled = false;
    ioq_submit(s);
}

static void ioq_retry_timer(void *opaque)
{
    IoUringState *s = opaque;

    if (!s->submit_scheduled) {
        ioq_submit(s);
    }
}

static void coroutine_fn ioq_acquire_slot(IoUringState *s)
{
    SlotWaiter w;

    if (s->in_flight < s->max_in_flight && list_empty(&s->slot_waiters)) {
        s->in_flight++;
        return;
    }
    w.co = coroutine_self();
    w.granted = false;
    list_add_tail(&s->slot_waiters, &w.link);
    coroutine_yield();
    assert(w.granted);
}

static struct io_uring_sqe *coroutine_fn ioq_get_sqe(IoUringState *s)
{
    struct io_uring_sqe *sqe;

    /* The SQ is smaller than the CQ: when it is full, submit now rather
     * than at the end of the loop iteration. */
    while (!(sqe = io_uring_get_sqe(&s->ring))) {
        if (!ioq_submit(s)) {
            co_sleep_ns(RING_RETRY_NS);
        }
    }
    return sqe;
}

static void ioq_schedule_submit(IoUringState *s)
{
    if (!s->submit_scheduled) {
        s->submit_scheduled = true;
        aio_bh_schedule(s->submit_bh);
    }
}

/* ---- per-context setup and teardown ---- */

static IoUringState *ioq_get(AioContext *ctx, int *err)
{
    IoUringState *s = aio_context_slot(ctx, AIO_SLOT_IO_URING);
    struct io_uring_params params;
    Error *local_err = NULL;
    int ret;

    if (s) {
        return s;
    }
    s = bj_calloc(1, sizeof(*s));
    s->ctx = ctx;
    list_init(&s->slot_waiters);

    memset(&params, 0, sizeof(params));
    ret = io_uring_queue_init_params(RING_SQ_ENTRIES, &s->ring, &params);
    if (ret < 0) {
        log_warn("io_uring: cannot set up a ring for context %s: %s",
                 aio_context_name(ctx), strerror(-ret));
        goto fail_free;
    }
    s->max_in_flight = params.cq_entries;

    s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->efd < 0) {
        ret = -errno;
        log_warn("io_uring: cannot create eventfd: %s", strerror(errno));
        goto fail_ring;
    }
    ret = io_uring_register_eventfd(&s->ring, s->efd);
    if (ret < 0) {
        log_warn("io_uring: cannot register eventfd: %s", strerror(-ret));
        goto fail_efd;
    }
    if (!aio_set_fd_handler(ctx, s->efd, ioq_eventfd_read, NULL, s,
                            &local_err)) {
        error_report_err(local_err, "io_uring");
        ret = -EIO;
        goto fail_efd;
    }
    s->submit_bh = aio_bh_new(ctx, ioq_submit_bh, s);
    s->retry_timer = aio_timer_new(ctx, ioq_retry_timer, s);
    aio_context_set_slot(ctx, AIO_SLOT_IO_URING, s);
    return s;

fail_efd:
    close(s->efd);
fail_ring:
    io_uring_queue_exit(&s->ring);
fail_free:
    free(s);
    *err = ret;
    return NULL;
}

void io_uring_context_cleanup(AioContext *ctx)
{
    IoUringState *s = aio_context_slot(ctx, AIO_SLOT_IO_URING);

    if (!s) {
        return;
    }
    /* Tearing down with requests in flight would leave coroutines waiting
     * forever and the kernel writing into freed buffers. */
    assert(s->in_flight == 0);
    assert(list_empty(&s->slot_waiters));
    assert(io_uring_sq_ready(&s->ring) == 0);

    aio_set_fd_handler(ctx, s->efd, NULL, NULL, NULL, NULL);
    aio_bh_delete(s->submit_bh);
    aio_timer_free(s->retry_timer);
    io_uring_queue_exit(&s->ring);
    close(s->efd);
    aio_context_set_slot(ctx, AIO_SLOT_IO_URING, NULL);
    free(s);
}

/* ---- requests ---- */

/*
 * The kernel fills read buffers from its own context, which valgrind cannot
 * see: without this every byte read through io_uring would look
 * uninitialised to memcheck.  (A no-op outside valgrind.)
 */
static void mark_read_defined(const struct iovec *iov, int niov, size_t len)
{
#ifdef HAVE_VALGRIND_H
    for (int i = 0; i < niov && len > 0; i++) {
        size_t n = iov[i].iov_len < len ? iov[i].iov_len : len;

        VALGRIND_MAKE_MEM_DEFINED(iov[i].iov_base, n);
        len -= n;
    }
#else
    (void)iov;
    (void)niov;
    (void)len;
#endif
}

ssize_t coroutine_fn io_uring_co_run(const IoRequest *r)
{
    AioContext *ctx = aio_current_context();
    IoUringReq req = { .co = coroutine_self() };
    struct io_uring_sqe *sqe;
    IoUringState *s;
    int err = 0;

    assert(req.co && ctx);
    s = ioq_get(ctx, &err);
    if (!s) {
        return err;
    }

    ioq_acquire_slot(s);
    sqe = ioq_get_sqe(s);
    switch (r->op) {
    case IO_OP_PREADV:
        io_uring_prep_readv(sqe, r->fd, r->iov, r->niov, r->offset);
        break;
    case IO_OP_PWRITEV:
        io_uring_prep_writev2(sqe, r->fd, r->iov, r->niov, r->offset,
                              r->flags);
        break;
    case IO_OP_FDATASYNC:
        io_uring_prep_fsync(sqe, r->fd, IORING_FSYNC_DATASYNC);
        break;
    case IO_OP_FALLOCATE:
        io_uring_prep_fallocate(sqe, r->fd, r->flags, r->offset, r->len);
        break;
    default:
        abort();
    }
    io_uring_sqe_set_data(sqe, &req);
    ioq_schedule_submit(s);

    coroutine_yield();
    assert(req.done);
    if (r->op == IO_OP_PREADV && req.res > 0) {
        mark_read_defined(r->iov, r->niov, req.res);
    }
    return req.res;
}
