/*
 * The I/O interface of io.h: describes each call once as an IoRequest and
 * runs it on the chosen backend, io_uring (io-uring.c) or the thread pool
 * (the syscalls below, run by a worker).
 *
 * -EINTR and -EAGAIN are retried here, so callers only ever see final
 * results.  Short transfers are returned as they are: the file driver loops.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "aio/io-internal.h"

typedef struct ThreadsCall {
    const IoRequest *req;
    ssize_t ret;
} ThreadsCall;

/* Runs in a worker thread: the blocking syscall itself. */
static int threads_call_fn(void *opaque)
{
    ThreadsCall *call = opaque;
    const IoRequest *r = call->req;
    ssize_t ret;

    switch (r->op) {
    case IO_OP_PREADV:
        ret = preadv(r->fd, r->iov, r->niov, r->offset);
        break;
    case IO_OP_PWRITEV:
        ret = pwritev2(r->fd, r->iov, r->niov, r->offset, r->flags);
        break;
    case IO_OP_FDATASYNC:
        ret = fdatasync(r->fd);
        break;
    case IO_OP_FALLOCATE:
        ret = fallocate(r->fd, r->flags, r->offset, r->len);
        break;
    default:
        abort();
    }
    call->ret = ret < 0 ? -errno : ret;
    return 0;
}

static ssize_t coroutine_fn io_co_run(IoBackend be, const IoRequest *req)
{
    ssize_t ret;

    assert(req->offset >= 0 && req->len >= 0);
    do {
        if (be == IO_BACKEND_IO_URING) {
            ret = io_uring_co_run(req);
        } else {
            ThreadsCall call = { .req = req };
            int pool_ret;

            assert(be == IO_BACKEND_THREADS);
            pool_ret = thread_pool_co_run(threads_call_fn, &call);
            ret = pool_ret < 0 ? pool_ret : call.ret;
        }
    } while (ret == -EINTR || ret == -EAGAIN);
    return ret;
}

ssize_t coroutine_fn io_co_preadv(IoBackend be, int fd,
                                  const struct iovec *iov, int niov,
                                  off_t offset)
{
    IoRequest req = {
        .op = IO_OP_PREADV, .fd = fd, .iov = iov, .niov = niov,
        .offset = offset,
    };
    return io_co_run(be, &req);
}

ssize_t coroutine_fn io_co_pwritev(IoBackend be, int fd,
                                   const struct iovec *iov, int niov,
                                   off_t offset, int rwf_flags)
{
    IoRequest req = {
        .op = IO_OP_PWRITEV, .fd = fd, .iov = iov, .niov = niov,
        .offset = offset, .flags = rwf_flags,
    };
    return io_co_run(be, &req);
}

int coroutine_fn io_co_fdatasync(IoBackend be, int fd)
{
    IoRequest req = { .op = IO_OP_FDATASYNC, .fd = fd };
    return io_co_run(be, &req);
}

int coroutine_fn io_co_fallocate(IoBackend be, int fd, int mode,
                                 off_t offset, off_t len)
{
    IoRequest req = {
        .op = IO_OP_FALLOCATE, .fd = fd, .flags = mode,
        .offset = offset, .len = len,
    };
    return io_co_run(be, &req);
}
