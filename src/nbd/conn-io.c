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

void nbd_conn_rewatch(NbdConn *c)
{
    update_watch(c, c->rd_co != NULL, c->wr_co != NULL);
}

static int coroutine_fn tls_read(NbdConn *c, char *p, size_t len);
static int coroutine_fn tls_writev(NbdConn *c, struct iovec *iov, int niov);

int coroutine_fn nbd_conn_read(NbdConn *c, void *buf, size_t len)
{
    char *p = buf;

    if (c->tls) {
        return tls_read(c, p, len);
    }
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
    if (c->tls) {
        return tls_writev(c, iov, niov);
    }
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

/* ---- TLS: the same waits, driven by GnuTLS's "would block" ---- */

/*
 * Waits until the socket is ready in the direction GnuTLS last tried
 * (gnutls_record_get_direction: 0 read, 1 write).  The reader uses the read
 * slot, the writer the write slot; a reader that must write (a TLS 1.3 key
 * update answered inside a receive) waits for writable if the write slot is
 * free, else for readable (it is retried then either way).  A connection
 * that is closing does not wait: the caller fails.
 */
static int coroutine_fn tls_wait(NbdConn *c, bool reader)
{
    bool want_write = gnutls_record_get_direction(c->tls) == 1;

    if (atomic_load(&c->closing)) {
        return -ESHUTDOWN;
    }
    if (want_write && (!reader || !c->wr_co)) {
        c->wr_co = coroutine_self();
        update_watch(c, c->watch_rd, true);
    } else {
        c->rd_co = coroutine_self();
        update_watch(c, true, c->watch_wr);
    }
    coroutine_yield();
    return 0;
}

static int tls_errno(ssize_t ret)
{
    return ret == GNUTLS_E_PREMATURE_TERMINATION ? -EPIPE : -ECONNRESET;
}

static int coroutine_fn tls_read(NbdConn *c, char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = gnutls_record_recv(c->tls, p, len);
        if (n > 0) {
            p += n;
            len -= n;
            continue;
        }
        if (n == 0) {
            return -EPIPE;
        }
        if (n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED) {
            log_debug("nbd: TLS receive failed: %s", gnutls_strerror(n));
            return tls_errno(n);
        }
        if (tls_wait(c, true) < 0) {
            return -ESHUTDOWN;
        }
    }
    return 0;
}

/* GnuTLS encrypts each piece into records (copying it anyway), so the
 * iovec is sent piece by piece; a retry after GNUTLS_E_AGAIN passes the
 * same arguments, as GnuTLS asks. */
static int coroutine_fn tls_writev(NbdConn *c, struct iovec *iov, int niov)
{
    for (int i = 0; i < niov; i++) {
        const char *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;

        while (len > 0) {
            ssize_t n = gnutls_record_send(c->tls, p, len);
            if (n > 0) {
                p += n;
                len -= n;
                continue;
            }
            if (n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED) {
                log_debug("nbd: TLS send failed: %s", gnutls_strerror(n));
                return tls_errno(n);
            }
            if (tls_wait(c, false) < 0) {
                return -ESHUTDOWN;
            }
        }
    }
    return 0;
}

int coroutine_fn nbd_conn_tls_handshake(NbdConn *c)
{
    for (;;) {
        int ret = gnutls_handshake(c->tls);
        if (ret == 0) {
            return 0;
        }
        if (ret != GNUTLS_E_AGAIN && ret != GNUTLS_E_INTERRUPTED &&
            gnutls_error_is_fatal(ret)) {
            log_info("nbd: TLS handshake with a client failed: %s",
                     gnutls_strerror(ret));
            return -EPROTO;
        }
        if (ret == GNUTLS_E_AGAIN && tls_wait(c, true) < 0) {
            return -ESHUTDOWN;
        }
    }
}

void nbd_conn_tls_bye(NbdConn *c)
{
    if (c->tls && !c->tls_bye_done) {
        /* Non-blocking: GNUTLS_E_AGAIN just means the client does not get
         * the alert, which it may not be reading for anyway. */
        c->tls_bye_done = true;
        gnutls_bye(c->tls, GNUTLS_SHUT_WR);
    }
}
