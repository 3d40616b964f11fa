/*
 * Socket I/O for NBD connection coroutines.  The socket is non-blocking; a
 * coroutine that would block registers interest with the connection's
 * AioContext and yields until the fd handler wakes it.  One coroutine reads
 * (the receive loop) and at most one writes (the holder of send_lock), so
 * one waiter slot each is enough.
 *
 * The watch is left in place after a wake-up while it is still wanted, and
 * dropped only when the handler fires with nobody waiting: under load that
 * saves an epoll_ctl pair per message.
 */
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "nbd/nbd-int.h"
#include "util/log.h"

static void on_readable(void *opaque);
static void on_writable(void *opaque);

static void update_watch(NbdConn *c, bool rd, bool wr)
{
    Error *err = NULL;

    if (rd == c->watch_rd && wr == c->watch_wr) {
        return;
    }
    if (!aio_set_fd_handler(c->ctx, c->fd, rd ? on_readable : NULL,
                            wr ? on_writable : NULL, c, &err)) {
        /* Cannot wait on the fd: make every further call fail. */
        error_report_err(err, "nbd");
        shutdown(c->fd, SHUT_RDWR);
        rd = wr = false;
    }
    c->watch_rd = rd;
    c->watch_wr = wr;
}

static void on_readable(void *opaque)
{
    NbdConn *c = opaque;
    Coroutine *co = c->rd_co;

    if (!co) {
        update_watch(c, false, c->watch_wr);
        return;
    }
    c->rd_co = NULL;
    aio_co_wake(co);
}

static void on_writable(void *opaque)
{
    NbdConn *c = opaque;
    Coroutine *co = c->wr_co;

    if (!co) {
        update_watch(c, c->watch_rd, false);
        return;
    }
    c->wr_co = NULL;
    aio_co_wake(co);
}

void nbd_conn_unwatch(NbdConn *c)
{
    update_watch(c, false, false);
}

int coroutine_fn nbd_conn_read(NbdConn *c, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = recv(c->fd, p, len, 0);
        if (n > 0) {
            p += n;
            len -= n;
            continue;
        }
        if (n == 0) {
            return -EPIPE;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return -errno;
        }
        if (atomic_load(&c->closing)) {
            return -ESHUTDOWN;
        }
        c->rd_co = coroutine_self();
        update_watch(c, true, c->watch_wr);
        coroutine_yield();
    }
    return 0;
}

int coroutine_fn nbd_conn_writev(NbdConn *c, struct iovec *iov, int niov)
{
    while (niov > 0) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = niov };
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                return -errno;
            }
            c->wr_co = coroutine_self();
            update_watch(c, c->watch_rd, true);
            coroutine_yield();
            continue;
        }
        /* skip what was sent */
        while (niov > 0 && (size_t)n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            niov--;
        }
        if (niov > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= n;
        }
    }
    return 0;
}
