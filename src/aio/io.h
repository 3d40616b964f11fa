/*
 * Asynchronous file I/O for coroutines, behind one interface with two
 * backends: io_uring (one ring per AioContext, completions delivered through
 * the loop via the ring's eventfd) and a thread pool (for kernels without
 * io_uring and for calls that may block).
 *
 * Every call here is coroutine_fn: it submits, yields, and is woken in its
 * own context when the result is in.  Results are bytes transferred (reads
 * and writes may be short; the caller loops) or -errno.
 */
#ifndef BJ_AIO_IO_H
#define BJ_AIO_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "aio/aio.h"
#include "aio/coroutine.h"

typedef enum IoBackend {
    IO_BACKEND_THREADS = 0,
    IO_BACKEND_IO_URING,
} IoBackend;

/* True if io_uring can be set up here (probed once). */
bool io_uring_available(void);

ssize_t coroutine_fn io_co_preadv(IoBackend be, int fd,
                                  const struct iovec *iov, int niov,
                                  off_t offset);
/* flags: RWF_DSYNC for FUA writes. */
ssize_t coroutine_fn io_co_pwritev(IoBackend be, int fd,
                                   const struct iovec *iov, int niov,
                                   off_t offset, int rwf_flags);
int coroutine_fn io_co_fdatasync(IoBackend be, int fd);
int coroutine_fn io_co_fallocate(IoBackend be, int fd, int mode,
                                 off_t offset, off_t len);

/*
 * Runs fn(opaque) in the thread pool and yields until it returns; the return
 * value is passed back.  For anything that may block: open, fstat, lseek
 * with SEEK_DATA on slow filesystems, ftruncate, fcntl locks.
 */
typedef int ThreadPoolFn(void *opaque);
int coroutine_fn thread_pool_co_run(ThreadPoolFn *fn, void *opaque);

/* Per-context teardown of the ring (called by aio_context_free). */
void io_uring_context_cleanup(AioContext *ctx);
/* Stops the pool's workers (at exit; idempotent). */
void thread_pool_shutdown(void);

#endif
