/*
 * Private to the I/O backends (io.c, io-uring.c): one request described
 * once, executed by either backend.  Not for use outside src/aio/io*.c.
 */
#ifndef BJ_AIO_IO_INTERNAL_H
#define BJ_AIO_IO_INTERNAL_H

#include <sys/types.h>
#include <sys/uio.h>

#include "aio/io.h"

typedef enum IoOp {
    IO_OP_PREADV,
    IO_OP_PWRITEV,
    IO_OP_FDATASYNC,
    IO_OP_FALLOCATE,
} IoOp;

typedef struct IoRequest {
    IoOp op;
    int fd;
    const struct iovec *iov;    /* PREADV, PWRITEV */
    int niov;
    off_t offset;               /* PREADV, PWRITEV, FALLOCATE */
    off_t len;                  /* FALLOCATE */
    int flags;                  /* PWRITEV: RWF_*; FALLOCATE: mode */
} IoRequest;

/*
 * One attempt of req on the calling coroutine's context's ring: bytes or
 * -errno, exactly as the kernel reported it (no retry here).
 */
ssize_t coroutine_fn io_uring_co_run(const IoRequest *req);

#endif
