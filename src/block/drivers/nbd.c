/*
 * nbd: a node whose data lives in a remote NBD export (qemu-storage-daemon
 * 7.2's driver=nbd, BlockdevOptionsNbd).
 *
 * Built on libnbd's asynchronous API, driven by the node's own AioContext:
 * the handle's socket (nbd_aio_get_fd) is watched for what libnbd wants next
 * (nbd_aio_get_direction, re-read after every libnbd call), and the fd
 * handlers feed it nbd_aio_notify_read / nbd_aio_notify_write.  No thread
 * per connection.  Every request is a coroutine that issues one libnbd
 * command and yields; the command's completion callback (run from inside
 * a notify call) wakes it.
 *
 * Connection rules (docs/remote.md):
 *  - open: one attempt (open-timeout=0), or attempts until open-timeout
 *    seconds passed;
 *  - reconnect-delay=0: a connection that dies fails its requests and every
 *    later one with EIO at once;
 *  - reconnect-delay=N: requests wait up to N seconds while the driver
 *    reconnects, then resume (or fail with EIO);
 *  - a request that has had no answer for NBD_STALL_SECONDS while the node
 *    is being drained or closed (force-cancel, quit, blockdev-del) shuts
 *    the connection: the outstanding requests fail with EIO, so that a
 *    frozen server never hangs the daemon.
 *
 * TLS: with tls-creds (a tls-creds-x509 or tls-creds-psk object of
 * endpoint=client), every connection requires TLS (LIBNBD_TLS_REQUIRE:
 * never a plaintext fallback); libnbd loads the certificates or the PSK
 * file from the object's directory itself.  The node holds a use of the
 * object, so object-del is refused while it is open.
 */
#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "block/drivers/drivers.h"
#include "object/tls-creds.h"
#include "util/alloc.h"
#include "util/cleanup.h"
#include "util/log.h"

/* Largest payload (read or write) per command when the server gives no
 * maximum: the protocol's recommended 32 MiB. */
#define NBD_DEFAULT_MAX_PAYLOAD (32u << 20)
/* Largest length of a payload-free command (zero, trim, block status). */
#define NBD_MAX_NOPAYLOAD (1u << 30)
/* How long a request may go unanswered while its node is drained. */
#define NBD_STALL_SECONDS 5
#define NS_PER_S INT64_C(1000000000)
/* open-timeout=0 makes one attempt; a server that accepts the connection
 * but never finishes the handshake fails it after this long. */
#define NBD_HANDSHAKE_SECONDS 10
/* x-connections: how many connections at most when the server advertises
 * multi-conn (our extension; qemu 7.2 opens one). */
#define NBD_DEFAULT_CONNS 4
#define NBD_MAX_CONNS 16

typedef struct NbdState NbdState;

/* One connection to the server: a libnbd handle and its watched socket. */
typedef struct NbdConn {
    NbdState *s;
    struct nbd_handle *h;
    int fd;                        /* watched fd, -1 if none */
} NbdConn;

typedef struct NbdReq {
    NbdState *s;
    Coroutine *co;                 /* waiting for completion, or NULL */
    bool done;
    int err;                       /* errno from libnbd, 0 on success */
    unsigned gen;                  /* connection it was issued on */
    int64_t started_ns;
    ListHead link;                 /* in s->reqs while outstanding */
    /* block status */
    bool got_extent;
    uint64_t ext_len;
    uint32_t ext_flags;
} NbdReq;

struct NbdState {
    BlockNode *bs;
    AioContext *ctx;
    /* Connected: nconns > 0.  Requests go round-robin over them; losing
     * one drops them all (and reconnects them all when allowed). */
    NbdConn conns[NBD_MAX_CONNS];
    int nconns;
    unsigned next;
    unsigned gen;                  /* bumped on every new connection */
    bool closing;

    /* options */
    json_t *server;                /* flat SocketAddress */
    char *export;
    TlsCreds *tls;                 /* tls-creds (we hold a use), or NULL */
    char *tls_hostname;            /* tls-hostname, or NULL */
    char *bitmap;                  /* x-dirty-bitmap: a context name */
    char *meta;                    /* the metadata context block status uses */
    int64_t reconnect_delay;       /* seconds */
    int64_t open_timeout;          /* seconds */
    int64_t want_conns;            /* x-connections */

    /* what the server said */
    int64_t size;
    bool can_fua, can_zero, can_fast_zero, can_trim, can_flush, can_meta;
    bool read_only;
    uint32_t min_block, pref_block, max_payload;

    ListHead reqs;                 /* outstanding NbdReq */
    AioTimer *watchdog;

    /* reconnection */
    bool reconnecting;
    int64_t reconnect_deadline;    /* clock_ns, while reconnecting */
    CoQueue reconnect_waiters;
    AioTimer *reconnect_timer;
    struct NbdAttemptTimer *attempt;   /* the reconnection's attempt */
    int64_t quiesced_since;        /* clock_ns when a drain began, or 0 */
};

static const char *const addr_types[] = { "inet", "unix", "vsock", "fd",
                                          NULL };
static const ArgSpec addr_head[] = {
    { .name = "type", .type = ARG_ENUM, .enum_values = addr_types },
    { .name = NULL },
};
static const ArgSpec addr_inet[] = {
    { .name = "type", .type = ARG_ENUM, .enum_values = addr_types },
    { .name = "host", .type = ARG_STR },
    { .name = "port", .type = ARG_STR },
    { .name = "numeric", .type = ARG_BOOL, .optional = true },
    { .name = "to", .type = ARG_UINT, .optional = true },
    { .name = "ipv4", .type = ARG_BOOL, .optional = true },
    { .name = "ipv6", .type = ARG_BOOL, .optional = true },
    { .name = "keep-alive", .type = ARG_BOOL, .optional = true },
    { .name = "mptcp", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};
static const ArgSpec addr_unix[] = {
    { .name = "type", .type = ARG_ENUM, .enum_values = addr_types },
    { .name = "path", .type = ARG_STR },
    { .name = "abstract", .type = ARG_BOOL, .optional = true },
    { .name = "tight", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

static const ArgSpec nbd_options[] = {
    { .name = "server", .type = ARG_OBJECT, .members = addr_head,
      .open = true },
    { .name = "export", .type = ARG_STR, .optional = true },
    { .name = "tls-creds", .type = ARG_STR, .optional = true },
    { .name = "tls-hostname", .type = ARG_STR, .optional = true },
    { .name = "x-dirty-bitmap", .type = ARG_STR, .optional = true },
    { .name = "reconnect-delay", .type = ARG_INT, .optional = true },
    { .name = "open-timeout", .type = ARG_INT, .optional = true },
    /* Our extension: connections when the server allows multi-conn. */
    { .name = "x-connections", .type = ARG_INT, .optional = true },
    { .name = NULL },
};


/* ---- the socket in the event loop ---- */

static void nbd_fd_read(void *opaque);
static void nbd_fd_write(void *opaque);
static void nbd_conn_lost(NbdState *s);

static void nbd_unwatch(NbdConn *c)
{
    if (c->fd >= 0) {
        /* The fd may already be closed by libnbd (dead handle): epoll then
         * forgot it itself, and the error does not matter. */
        aio_set_fd_handler(c->s->ctx, c->fd, NULL, NULL, NULL, NULL);
        c->fd = -1;
    }
}

/* Watches what libnbd wants next; call after every libnbd call. */
static void nbd_rewatch(NbdConn *c)
{
    if (!c->h || nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h)) {
        nbd_unwatch(c);
        return;
    }
    int fd = nbd_aio_get_fd(c->h);
    unsigned dir = nbd_aio_get_direction(c->h);

    if (fd != c->fd) {
        nbd_unwatch(c);
    }
    if (fd < 0) {
        return;
    }
    c->fd = fd;
    if (!aio_set_fd_handler(c->s->ctx, fd,
                            (dir & LIBNBD_AIO_DIRECTION_READ) ?
                            nbd_fd_read : NULL,
                            (dir & LIBNBD_AIO_DIRECTION_WRITE) ?
                            nbd_fd_write : NULL, c, NULL)) {
        c->fd = -1;
    }
}

/* After a notify or a command: dead handle -> requests fail or wait for a
 * reconnection; else watch again. */
static void nbd_after_call(NbdConn *c)
{
    if (c->h && (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h))) {
        nbd_conn_lost(c->s);
        return;
    }
    nbd_rewatch(c);
}

static void nbd_fd_read(void *opaque)
{
    NbdConn *c = opaque;

    if (c->h) {
        nbd_aio_notify_read(c->h);
    }
    nbd_after_call(c);
}

static void nbd_fd_write(void *opaque)
{
    NbdConn *c = opaque;

    if (c->h) {
        nbd_aio_notify_write(c->h);
    }
    nbd_after_call(c);
}

/* The stall watchdog ticks only while there is something to watch:
 * outstanding requests or a reconnection. */
static void nbd_watchdog_arm(NbdState *s)
{
    if (s->watchdog && !aio_timer_pending(s->watchdog)) {
        aio_timer_mod(s->watchdog, clock_ns() + NS_PER_S / 4);
    }
}

/* ---- requests ---- */

static void nbd_req_finish(NbdReq *r, int err)
{
    if (r->done) {
        return;
    }
    r->done = true;
    r->err = err;
    list_del(&r->link);
    if (r->co) {
        Coroutine *co = r->co;
        r->co = NULL;
        /* Never entered from here: this runs inside libnbd (its handle
         * lock held), and the coroutine would call into libnbd again. */
        aio_co_schedule(r->s->ctx, co);
    }
}

static int nbd_req_complete_cb(void *user_data, int *error)
{
    NbdReq *r = user_data;

    nbd_req_finish(r, *error);
    return 1;                      /* retire the command */
}

static int nbd_req_extent_cb(void *user_data, const char *metacontext,
                             uint64_t offset, uint32_t *entries,
                             size_t nr_entries, int *error)
{
    NbdReq *r = user_data;

    if (!r->got_extent && strcmp(metacontext, r->s->meta) == 0 &&
        nr_entries >= 2) {
        r->got_extent = true;
        r->ext_len = entries[0];
        r->ext_flags = entries[1];
    }
    return 0;
}

/* The connection the request went out on is gone: every outstanding request
 * fails (they are retried when reconnect-delay allows). */
static void nbd_fail_all(NbdState *s, int err)
{
    while (!list_empty(&s->reqs)) {
        NbdReq *r = list_first_entry(&s->reqs, NbdReq, link);
        nbd_req_finish(r, err);
    }
}

static void nbd_drop_handle(NbdState *s)
{
    int n = s->nconns;

    s->nconns = 0;
    for (int i = 0; i < n; i++) {
        nbd_unwatch(&s->conns[i]);
    }
    nbd_fail_all(s, ENOTCONN);
    for (int i = 0; i < n; i++) {
        struct nbd_handle *h = s->conns[i].h;
        s->conns[i].h = NULL;
        /* Completion callbacks of commands still in libnbd run from
         * nbd_close; our requests were finished already. */
        if (h) {
            nbd_close(h);
        }
    }
    nbd_fail_all(s, ENOTCONN);
}

static bool nbd_connected(NbdState *s)
{
    return s->nconns > 0;
}

typedef enum NbdCmd { CMD_READ, CMD_WRITE, CMD_ZERO, CMD_TRIM, CMD_FLUSH,
                      CMD_STATUS } NbdCmd;

/* Issues one command on the current connection and waits for it.  Returns
 * 0, -errno from the server, or -ENOTCONN when the connection died. */
static int coroutine_fn nbd_issue(NbdState *s, NbdReq *r, NbdCmd cmd,
                                  void *buf, uint64_t count, uint64_t offset,
                                  uint32_t flags)
{
    nbd_completion_callback cb = { .callback = nbd_req_complete_cb,
                                   .user_data = r };
    int64_t cookie = -1;
    NbdConn *c = &s->conns[s->next++ % (unsigned)s->nconns];

    r->s = s;
    r->co = NULL;
    r->done = false;
    r->err = 0;
    r->got_extent = false;
    r->gen = s->gen;
    r->started_ns = clock_ns();
    list_add_tail(&s->reqs, &r->link);
    nbd_watchdog_arm(s);

    switch (cmd) {
    case CMD_READ:
        cookie = nbd_aio_pread(c->h, buf, count, offset, cb, flags);
        break;
    case CMD_WRITE:
        cookie = nbd_aio_pwrite(c->h, buf, count, offset, cb, flags);
        break;
    case CMD_ZERO:
        cookie = nbd_aio_zero(c->h, count, offset, cb, flags);
        break;
    case CMD_TRIM:
        cookie = nbd_aio_trim(c->h, count, offset, cb, flags);
        break;
    case CMD_FLUSH:
        cookie = nbd_aio_flush(c->h, cb, flags);
        break;
    case CMD_STATUS: {
        nbd_extent_callback ecb = { .callback = nbd_req_extent_cb,
                                    .user_data = r };
        cookie = nbd_aio_block_status(c->h, count, offset, ecb, cb, flags);
        break;
    }
    }
    if (cookie < 0) {
        int err = nbd_get_errno();
        bool dead = nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h);

        if (!r->done) {
            list_del(&r->link);
            r->done = true;
        }
        log_debug("nbd: %s: command refused: %s", s->bs->node_name,
                  nbd_get_error());
        nbd_after_call(c);
        return dead ? -ENOTCONN : -(err ? err : EIO);
    }
    nbd_after_call(c);
    while (!r->done) {
        r->co = coroutine_self();
        coroutine_yield();
    }
    /* Failed because the connection died (libnbd fails the commands of a
     * dead handle with an errno of its choice): the caller may retry. */
    if (r->err && (r->gen != s->gen || !nbd_connected(s))) {
        return -ENOTCONN;
    }
    if (r->err == ENOTCONN || r->err == ESHUTDOWN) {
        return -ENOTCONN;
    }
    return -r->err;
}

static void coroutine_fn nbd_reconnect_wait(NbdState *s);

/*
 * Runs a command, waiting for (and retrying after) a reconnection as
 * reconnect-delay allows.  Errors from a dead connection become -EIO.
 */
static int coroutine_fn nbd_co_cmd(NbdState *s, NbdCmd cmd, void *buf,
                                   uint64_t count, uint64_t offset,
                                   uint32_t flags, NbdReq *r)
{
    if (s->bs->ctx != s->ctx) {
        /* Cannot happen while the layer calls detach/attach_aio_context;
         * refuse rather than drive libnbd from two threads. */
        log_warn("nbd: %s: node moved to another AioContext: not supported",
                 s->bs->node_name);
        return -EIO;
    }
    for (;;) {
        if (!nbd_connected(s)) {
            nbd_reconnect_wait(s);
            if (!nbd_connected(s)) {
                return -EIO;
            }
        }
        int ret = nbd_issue(s, r, cmd, buf, count, offset, flags);
        if (ret != -ENOTCONN) {
            return ret;
        }
        if (s->reconnect_delay == 0 || s->closing) {
            return -EIO;
        }
    }
}

/* ---- connecting ---- */

static bool nbd_addr_is_unix(NbdState *s)
{
    return strcmp(arg_str(s->server, "type", ""), "unix") == 0;
}

static char *nbd_addr_desc(NbdState *s)
{
    if (nbd_addr_is_unix(s)) {
        return bj_strdup(arg_str(s->server, "path", ""));
    }
    return bj_asprintf("%s:%s", arg_str(s->server, "host", ""),
                       arg_str(s->server, "port", ""));
}

/*
 * tls-hostname: the name the server's certificate must carry.  A libnbd
 * without nbd_set_tls_hostname (Debian 12's 1.14) checks the certificate
 * against the host it connects to, and over a UNIX socket checks only the
 * chain: a name that differs from a TCP host is refused rather than
 * ignored, and over a UNIX socket the name goes unchecked (logged).
 */
static bool nbd_take_tls_hostname(NbdState *s, json_t *server,
                                  const char *name, Error **errp)
{
#ifdef LIBNBD_HAVE_NBD_SET_TLS_HOSTNAME
    s->tls_hostname = bj_strdup(name);
    return true;
#else
    if (strcmp(arg_str(server, "type", ""), "unix") == 0) {
        log_warn("nbd: tls-hostname '%s' is not checked over a UNIX socket "
                 "by this libnbd (the certificate chain is)", name);
        return true;
    }
    if (strcmp(arg_str(server, "host", ""), name) != 0) {
        error_setg(errp, "tls-hostname '%s' differs from the host '%s': "
                   "this libnbd checks the server's certificate against "
                   "the host it connects to only", name,
                   arg_str(server, "host", ""));
        return false;
    }
    return true;
#endif
}

/* TLS required on h, with the credentials of s->tls. */
static bool nbd_conn_set_tls(NbdState *s, struct nbd_handle *h)
{
    const char *dir = tls_creds_dir(s->tls);

    if (nbd_set_tls(h, LIBNBD_TLS_REQUIRE) < 0) {
        return false;
    }
#ifdef LIBNBD_HAVE_NBD_SET_TLS_HOSTNAME
    if (s->tls_hostname && nbd_set_tls_hostname(h, s->tls_hostname) < 0) {
        return false;
    }
#endif
    if (tls_creds_kind(s->tls) == TLS_CREDS_PSK) {
        CLEANUP_FREE char *keys = bj_asprintf("%s/keys.psk", dir);

        return nbd_set_tls_psk_file(h, keys) == 0 &&
               nbd_set_tls_username(h, tls_creds_username(s->tls)) == 0;
    }
    return nbd_set_tls_certificates(h, dir) == 0 &&
           nbd_set_tls_verify_peer(h, tls_creds_verify_peer(s->tls)) == 0;
}

/*
 * A new handle set up for this node and its connection started (the whole
 * setup lives here, so that TLS can be added in one place).  NULL with
 * errp set when it could not even start.
 */
static struct nbd_handle *nbd_conn_new(NbdState *s, Error **errp)
{
    struct nbd_handle *h = nbd_create();
    int rc;

    if (!h) {
        error_setg(errp, "Could not create NBD handle: %s", nbd_get_error());
        return NULL;
    }
    if (nbd_set_export_name(h, s->export ? s->export : "") < 0 ||
        nbd_set_request_structured_replies(h, true) < 0 ||
        nbd_add_meta_context(h, s->meta) < 0 ||
        nbd_set_handshake_flags(h, LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE |
                                LIBNBD_HANDSHAKE_FLAG_NO_ZEROES) < 0) {
        error_setg(errp, "Could not set up NBD handle: %s", nbd_get_error());
        nbd_close(h);
        return NULL;
    }
    if (s->tls && !nbd_conn_set_tls(s, h)) {
        error_setg(errp, "Could not set up TLS: %s", nbd_get_error());
        nbd_close(h);
        return NULL;
    }
    if (nbd_addr_is_unix(s)) {
        rc = nbd_aio_connect_unix(h, arg_str(s->server, "path", ""));
    } else {
        rc = nbd_aio_connect_tcp(h, arg_str(s->server, "host", ""),
                                 arg_str(s->server, "port", ""));
    }
    if (rc < 0) {
        int err = nbd_get_errno();
        CLEANUP_FREE char *desc = nbd_addr_desc(s);

        const char *msg = nbd_get_error();

        if (msg && strstr(msg, "getaddrinfo")) {
            /* libnbd's "...: getaddrinfo: HOST:PORT: WHY": qemu's words */
            const char *why = strrchr(msg, ':');
            error_setg(errp, "address resolution failed for %s: %s", desc,
                       why ? why + 2 : msg);
        } else {
            error_setg(errp, "Failed to connect to '%s': %s", desc,
                       strerror(err ? err : EIO));
        }
        nbd_close(h);
        return NULL;
    }
    return h;
}

/* Takes what the server told in the handshake; false if the export cannot
 * be this node (read-only export of a writable node, a changed size). */
static bool nbd_take_info(NbdState *s, struct nbd_handle *h, bool first,
                          Error **errp)
{
    int64_t size = nbd_get_size(h);
    int64_t v;

    if (size < 0) {
        error_setg(errp, "Could not open image: Invalid argument");
        return false;
    }
    if (!first && size != s->size) {
        error_setg(errp, "Export size changed");
        return false;
    }
    s->read_only = nbd_is_read_only(h) == 1;
    if (s->read_only && !s->bs->read_only) {
        error_setg(errp, "Could not open image: Permission denied");
        return false;
    }
    s->can_meta = nbd_can_meta_context(h, s->meta) == 1;
    if (s->bitmap && !s->can_meta) {
        error_setg(errp, "Could not open image: Invalid argument");
        return false;
    }
    s->size = size;
    s->can_fua = nbd_can_fua(h) == 1;
    s->can_zero = nbd_can_zero(h) == 1;
    s->can_fast_zero = nbd_can_fast_zero(h) == 1;
    s->can_trim = nbd_can_trim(h) == 1;
    s->can_flush = nbd_can_flush(h) == 1;
    v = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    s->min_block = v > 0 ? (uint32_t)v : 1;
    v = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
    s->pref_block = v > 0 ? (uint32_t)v : 0;
    v = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    s->max_payload = v > 0 && v < NBD_DEFAULT_MAX_PAYLOAD ?
                     (uint32_t)v : NBD_DEFAULT_MAX_PAYLOAD;
    if (s->max_payload < s->min_block) {
        s->max_payload = s->min_block;
    }
    return true;
}

/* The error of a handshake that failed after the socket connected. */
static void nbd_handshake_error(NbdState *s, struct nbd_handle *h, int err,
                                const char *msg, Error **errp)
{
    CLEANUP_FREE char *desc = nbd_addr_desc(s);

    if (err == ECONNREFUSED || err == ENOENT || err == ETIMEDOUT ||
        err == EHOSTUNREACH || err == ENETUNREACH) {
        if (msg && strstr(msg, "export")) {
            error_setg(errp, "Requested export not available");
        } else {
            error_setg(errp, "Failed to connect to '%s': %s", desc,
                       strerror(err));
        }
        return;
    }
    if (msg && (strstr(msg, "export") || strstr(msg, "NBD_REP_ERR"))) {
        error_setg(errp, "Requested export not available");
        return;
    }
    error_setg(errp, "Failed to connect to '%s': %s", desc,
               msg ? msg : strerror(err ? err : EIO));
}

/*
 * One connection attempt, driven by the loop until the handshake ended or
 * deadline_ns (0: none) passed.  Returns the ready handle (not installed)
 * or NULL with errp set.
 */
typedef struct NbdAttempt {
    NbdState *s;
    struct nbd_handle *h;
    Coroutine *co;
    int fd;
    /* libnbd's thread-local error, taken when the handshake failed (later
     * libnbd calls for other nodes would overwrite it). */
    int err;
    char *msg;
} NbdAttempt;

static void nbd_attempt_watch(NbdAttempt *a);

static void nbd_attempt_io(NbdAttempt *a, bool write)
{
    int rc = write ? nbd_aio_notify_write(a->h) : nbd_aio_notify_read(a->h);

    if (rc < 0 && !a->msg) {
        a->err = nbd_get_errno();
        a->msg = bj_strdup(nbd_get_error() ?: "");
    }
    if (!nbd_aio_is_connecting(a->h) && !nbd_aio_is_created(a->h)) {
        if (a->co) {
            Coroutine *co = a->co;
            a->co = NULL;
            aio_co_schedule(a->s->ctx, co);
        }
        return;
    }
    nbd_attempt_watch(a);
}

static void nbd_attempt_read(void *opaque)
{
    nbd_attempt_io(opaque, false);
}

static void nbd_attempt_write(void *opaque)
{
    nbd_attempt_io(opaque, true);
}

static void nbd_attempt_unwatch(NbdAttempt *a)
{
    if (a->fd >= 0) {
        aio_set_fd_handler(a->s->ctx, a->fd, NULL, NULL, NULL, NULL);
        a->fd = -1;
    }
}

static void nbd_attempt_watch(NbdAttempt *a)
{
    if (nbd_aio_is_dead(a->h) || nbd_aio_is_closed(a->h)) {
        nbd_attempt_unwatch(a);
        return;
    }
    int fd = nbd_aio_get_fd(a->h);
    unsigned dir = nbd_aio_get_direction(a->h);

    if (fd != a->fd) {
        nbd_attempt_unwatch(a);
    }
    if (fd < 0) {
        return;
    }
    a->fd = fd;
    if (!aio_set_fd_handler(a->s->ctx, fd,
                            (dir & LIBNBD_AIO_DIRECTION_READ) ?
                            nbd_attempt_read : NULL,
                            (dir & LIBNBD_AIO_DIRECTION_WRITE) ?
                            nbd_attempt_write : NULL, a, NULL)) {
        a->fd = -1;
    }
}

typedef struct NbdAttemptTimer {
    NbdAttempt *a;
    bool fired;
} NbdAttemptTimer;

static void nbd_attempt_timeout(void *opaque)
{
    NbdAttemptTimer *t = opaque;

    t->fired = true;
    if (t->a->co) {
        Coroutine *co = t->a->co;
        t->a->co = NULL;
        aio_co_wake(co);
    }
}

static struct nbd_handle *coroutine_fn nbd_co_attempt(NbdState *s,
                                                      int64_t deadline_ns,
                                                      bool first,
                                                      Error **errp)
{
    NbdAttempt a = { .s = s, .fd = -1 };
    NbdAttemptTimer t = { .a = &a };
    AioTimer *timer = NULL;

    a.h = nbd_conn_new(s, errp);
    if (!a.h) {
        return NULL;
    }
    if (!first) {
        s->attempt = &t;
    }
    if (deadline_ns) {
        timer = aio_timer_new(s->ctx, nbd_attempt_timeout, &t);
        aio_timer_mod(timer, deadline_ns);
    }
    while (nbd_aio_is_connecting(a.h) && !t.fired) {
        nbd_attempt_watch(&a);
        if (a.fd < 0) {
            break;
        }
        a.co = coroutine_self();
        coroutine_yield();
        a.co = NULL;
    }
    nbd_attempt_unwatch(&a);
    if (s->attempt == &t) {
        s->attempt = NULL;
    }
    if (timer) {
        aio_timer_free(timer);
    }
    if (nbd_aio_is_ready(a.h)) {
        free(a.msg);
        if (!nbd_take_info(s, a.h, first, errp)) {
            nbd_close(a.h);
            return NULL;
        }
        return a.h;
    }
    if (t.fired && nbd_aio_is_connecting(a.h)) {
        CLEANUP_FREE char *desc = nbd_addr_desc(s);
        error_setg(errp, "Failed to connect to '%s': %s", desc,
                   strerror(ETIMEDOUT));
    } else {
        nbd_handshake_error(s, a.h, a.msg ? a.err : nbd_get_errno(),
                            a.msg ? a.msg : nbd_get_error(), errp);
    }
    free(a.msg);
    nbd_close(a.h);
    return NULL;
}

/*
 * Connects: the first connection (bounded by deadline_ns, 0: none), then,
 * when the server allows multi-conn, up to want_conns - 1 more (each
 * bounded by NBD_STALL_SECONDS; one that fails leaves fewer).  Installs
 * them and returns true, or false with errp set.
 */
static bool coroutine_fn nbd_co_connect_all(NbdState *s, int64_t deadline_ns,
                                            bool first, Error **errp)
{
    struct nbd_handle *hs[NBD_MAX_CONNS];
    int n = 0;

    hs[n] = nbd_co_attempt(s, deadline_ns, first, errp);
    if (!hs[n]) {
        return false;
    }
    n++;
    if (nbd_can_multi_conn(hs[0]) == 1) {
        while (n < s->want_conns && !s->closing) {
            Error *err = NULL;
            hs[n] = nbd_co_attempt(s, clock_ns() + NBD_STALL_SECONDS *
                                   NS_PER_S, false, &err);
            if (!hs[n]) {
                log_warn("nbd: %s: extra connection: %s",
                         s->bs->node_name, error_get_pretty(err));
                error_free(err);
                break;
            }
            n++;
        }
    }
    if (s->closing) {
        for (int i = 0; i < n; i++) {
            nbd_close(hs[i]);
        }
        error_setg(errp, "closing");
        return false;
    }
    s->gen++;
    for (int i = 0; i < n; i++) {
        s->conns[i] = (NbdConn){ .s = s, .h = hs[i], .fd = -1 };
    }
    s->nconns = n;
    for (int i = 0; i < n; i++) {
        nbd_rewatch(&s->conns[i]);
    }
    return true;
}

/* ---- reconnection (reconnect-delay > 0) ---- */

static void nbd_reconnect_expired(void *opaque)
{
    NbdState *s = opaque;

    co_queue_restart_all(&s->reconnect_waiters);
}

static void coroutine_fn nbd_reconnect_co(void *opaque)
{
    NbdState *s = opaque;

    while (!s->closing && !nbd_connected(s) &&
           clock_ns() < s->reconnect_deadline) {
        Error *err = NULL;

        if (nbd_co_connect_all(s, s->reconnect_deadline, false, &err)) {
            log_info("nbd: %s: reconnected", s->bs->node_name);
            break;
        }
        error_free(err);
        if (!s->closing && clock_ns() < s->reconnect_deadline) {
            co_sleep_ns(NS_PER_S / 10);
        }
    }
    s->reconnecting = false;
    aio_timer_del(s->reconnect_timer);
    co_queue_restart_all(&s->reconnect_waiters);
    bdrv_dec_in_flight(s->bs);
}

static void nbd_conn_lost(NbdState *s)
{
    log_info("nbd: %s: connection to the server lost", s->bs->node_name);
    nbd_drop_handle(s);
    if (s->reconnect_delay > 0 && !s->closing && !s->reconnecting) {
        s->reconnecting = true;
        s->reconnect_deadline = clock_ns() + s->reconnect_delay * NS_PER_S;
        aio_timer_mod(s->reconnect_timer, s->reconnect_deadline);
        nbd_watchdog_arm(s);
        bdrv_inc_in_flight(s->bs);
        aio_co_enter(s->ctx, coroutine_create(nbd_reconnect_co, s));
    }
}

/* A request that found no connection: waits while a reconnection runs. */
static void coroutine_fn nbd_reconnect_wait(NbdState *s)
{
    while (s->reconnecting && !nbd_connected(s) && !s->closing &&
           clock_ns() < s->reconnect_deadline) {
        co_queue_wait(&s->reconnect_waiters, NULL);
    }
}

/* ---- the stall watchdog ---- */


static void nbd_watchdog(void *opaque)
{
    NbdState *s = opaque;
    int64_t now = clock_ns();
    bool draining = atomic_load(&s->bs->quiesce_counter) > 0 || s->closing;

    if (!draining) {
        s->quiesced_since = 0;
    } else if (!s->quiesced_since) {
        s->quiesced_since = now;
    }
    if (draining && !list_empty(&s->reqs)) {
        NbdReq *oldest = list_first_entry(&s->reqs, NbdReq, link);
        if (now - oldest->started_ns >= NBD_STALL_SECONDS * NS_PER_S) {
            log_warn("nbd: %s: no answer from the server for %d s while "
                     "draining: shutting the connection",
                     s->bs->node_name, NBD_STALL_SECONDS);
            s->reconnect_delay = 0;
            nbd_drop_handle(s);
        }
    }
    /* A drain does not wait out a long reconnect-delay either. */
    if (draining && s->reconnecting &&
        now - s->quiesced_since >= NBD_STALL_SECONDS * NS_PER_S) {
        log_warn("nbd: %s: drained while reconnecting: giving up",
                 s->bs->node_name);
        s->reconnect_deadline = now;
        co_queue_restart_all(&s->reconnect_waiters);
        if (s->attempt && !s->attempt->fired) {
            nbd_attempt_timeout(s->attempt);
        }
    }
    if (!list_empty(&s->reqs) || s->reconnecting) {
        aio_timer_mod(s->watchdog, now + NS_PER_S / 4);
    }
}

/* ---- open and close ---- */

static void nbd_free_state(NbdState *s);

static int coroutine_fn nbd_do_open(BlockNode *bs, json_t *opts,
                                    Error **errp)
{
    NbdState *s = bs->opaque;
    json_t *server = json_object_get(opts, "server");
    const char *type = arg_str(server, "type", "");
    CLEANUP_FREE char *path = bj_asprintf("%sserver", bs->open_path ?: "");
    int64_t deadline = 0;
    bool ok = false;

    s->bs = bs;
    s->ctx = bs->ctx;
    list_init(&s->reqs);
    co_queue_init(&s->reconnect_waiters);

    if (!strcmp(type, "inet")) {
        if (!argspec_check(server, addr_inet, path, bs->open_coerce, errp)) {
            return -EINVAL;
        }
    } else if (!strcmp(type, "unix")) {
        if (!argspec_check(server, addr_unix, path, bs->open_coerce, errp)) {
            return -EINVAL;
        }
    } else {
        error_setg(errp, "Socket address type '%s' is not supported", type);
        return -EINVAL;
    }
    s->reconnect_delay = arg_int(opts, "reconnect-delay", 0);
    if (s->reconnect_delay < 0 || s->reconnect_delay > UINT32_MAX) {
        error_setg(errp, "Parameter 'reconnect-delay' expects uint32_t");
        return -EINVAL;
    }
    s->open_timeout = arg_int(opts, "open-timeout", 0);
    if (s->open_timeout < 0 || s->open_timeout > UINT32_MAX) {
        error_setg(errp, "Parameter 'open-timeout' expects uint32_t");
        return -EINVAL;
    }
    s->want_conns = arg_int(opts, "x-connections", NBD_DEFAULT_CONNS);
    if (s->want_conns < 1 || s->want_conns > NBD_MAX_CONNS) {
        error_setg(errp, "Parameter 'x-connections' expects a value from 1 "
                   "to %d", NBD_MAX_CONNS);
        return -EINVAL;
    }
    if (arg_str(opts, "tls-creds", NULL)) {
        s->tls = tls_creds_lookup(arg_str(opts, "tls-creds", NULL),
                                  TLS_ENDPOINT_CLIENT, errp);
        if (!s->tls) {
            return -EINVAL;
        }
        tls_creds_ref(s->tls);
        if (arg_str(opts, "tls-hostname", NULL) &&
            !nbd_take_tls_hostname(s, server,
                                   arg_str(opts, "tls-hostname", NULL),
                                   errp)) {
            tls_creds_unref(s->tls);
            s->tls = NULL;
            return -ENOTSUP;
        }
    }
    s->server = json_deep_copy(server);
    if (arg_str(opts, "export", NULL)) {
        s->export = bj_strdup(arg_str(opts, "export", NULL));
    }
    if (arg_str(opts, "x-dirty-bitmap", NULL)) {
        /* As in qemu: the whole context name ("qemu:dirty-bitmap:NAME"). */
        s->bitmap = bj_strdup(arg_str(opts, "x-dirty-bitmap", NULL));
        s->meta = bj_strdup(s->bitmap);
    } else {
        s->meta = bj_strdup(LIBNBD_CONTEXT_BASE_ALLOCATION);
    }

    if (s->open_timeout > 0) {
        deadline = clock_ns() + s->open_timeout * NS_PER_S;
    }
    for (;;) {
        Error *err = NULL;

        ok = nbd_co_connect_all(s, deadline ? deadline : clock_ns() +
                                NBD_HANDSHAKE_SECONDS * NS_PER_S, true, &err);
        if (ok || !deadline || clock_ns() >= deadline) {
            if (!ok) {
                error_propagate(errp, err);
            } else {
                error_free(err);
            }
            break;
        }
        error_free(err);
        co_sleep_ns(NS_PER_S / 10);
    }
    if (!ok) {
        return -EIO;
    }
    s->reconnect_timer = aio_timer_new(s->ctx, nbd_reconnect_expired, s);
    s->watchdog = aio_timer_new(s->ctx, nbd_watchdog, s);
    bs->total_bytes = s->size;

    const char *exp = s->export ? s->export : "";
    if (nbd_addr_is_unix(s)) {
        snprintf(bs->filename, sizeof(bs->filename), "nbd+unix:///%s?socket=%s",
                 exp, arg_str(s->server, "path", ""));
    } else {
        snprintf(bs->filename, sizeof(bs->filename), "nbd://%s:%s/%s",
                 arg_str(s->server, "host", ""),
                 arg_str(s->server, "port", ""), exp);
    }
    return 0;
}

static int coroutine_fn nbd_co_open(BlockNode *bs, json_t *opts, Error **errp)
{
    int ret = nbd_do_open(bs, opts, errp);

    if (ret < 0) {
        nbd_free_state(bs->opaque);
    }
    return ret;
}

static void nbd_free_state(NbdState *s)
{
    json_decref(s->server);
    s->server = NULL;
    free(s->export);
    free(s->bitmap);
    free(s->meta);
    s->export = s->bitmap = s->meta = NULL;
    if (s->tls) {
        tls_creds_unref(s->tls);
        s->tls = NULL;
    }
    bj_free_clear(&s->tls_hostname);
}

/* In the node's context's thread (an iothread's, when an export moved it
 * there): what is registered there goes with the connections. */
static void coroutine_fn nbd_close_co(void *opaque)
{
    NbdState *s = opaque;

    s->closing = true;
    for (int i = 0; i < s->nconns; i++) {
        /* A polite NBD_CMD_DISC, as far as the socket takes it now. */
        nbd_aio_disconnect(s->conns[i].h, 0);
    }
    nbd_drop_handle(s);
    if (s->watchdog) {
        aio_timer_free(s->watchdog);
        s->watchdog = NULL;
    }
    if (s->reconnect_timer) {
        aio_timer_free(s->reconnect_timer);
        s->reconnect_timer = NULL;
    }
}

static void nbd_close_node(BlockNode *bs)
{
    NbdState *s = bs->opaque;

    aio_co_run_wait(s->ctx, nbd_close_co, s);
    nbd_free_state(s);
}

/* ---- moving to another AioContext (node drained) ---- */

/* In the old context's thread: its fd handlers and timers go. */
static void coroutine_fn nbd_detach_co(void *opaque)
{
    NbdState *s = opaque;

    for (int i = 0; i < s->nconns; i++) {
        nbd_unwatch(&s->conns[i]);
    }
    aio_timer_free(s->watchdog);
    aio_timer_free(s->reconnect_timer);
    s->watchdog = NULL;
    s->reconnect_timer = NULL;
}

/* In the new context's thread: they come back there. */
static void coroutine_fn nbd_attach_co(void *opaque)
{
    NbdState *s = opaque;

    s->reconnect_timer = aio_timer_new(s->ctx, nbd_reconnect_expired, s);
    s->watchdog = aio_timer_new(s->ctx, nbd_watchdog, s);
    for (int i = 0; i < s->nconns; i++) {
        nbd_rewatch(&s->conns[i]);
    }
    if (!list_empty(&s->reqs) || s->reconnecting) {
        nbd_watchdog_arm(s);
    }
}

static void nbd_detach_aio_context(BlockNode *bs)
{
    NbdState *s = bs->opaque;

    aio_co_run_wait(s->ctx, nbd_detach_co, s);
}

static void nbd_attach_aio_context(BlockNode *bs)
{
    NbdState *s = bs->opaque;

    s->ctx = bs->ctx;
    aio_co_run_wait(s->ctx, nbd_attach_co, s);
}

/* ---- the request path ---- */

static void nbd_refresh_limits(BlockNode *bs)
{
    NbdState *s = bs->opaque;

    bs->bl.request_alignment = s->min_block;
    bs->bl.max_transfer = s->max_payload;
    bs->bl.opt_transfer = s->pref_block;
}

static int coroutine_fn nbd_co_rw(BlockNode *bs, bool write, int64_t offset,
                                  int64_t bytes, IOVector *qiov,
                                  unsigned flags)
{
    NbdState *s = bs->opaque;
    NbdReq r;
    void *buf;
    void *bounce = NULL;
    uint32_t nflags = 0;
    int ret;

    if (qiov->niov == 1 && qiov->iov[0].iov_len >= (size_t)bytes) {
        buf = qiov->iov[0].iov_base;
    } else {
        bounce = bj_try_malloc(bytes);
        if (!bounce) {
            return -ENOMEM;
        }
        buf = bounce;
        if (write) {
            iov_vec_to_buf(qiov, 0, buf, bytes);
        }
    }
    if (write && (flags & BLK_REQ_FUA) && s->can_fua) {
        nflags |= LIBNBD_CMD_FLAG_FUA;
    }
    ret = nbd_co_cmd(s, write ? CMD_WRITE : CMD_READ, buf, bytes, offset,
                     nflags, &r);
    if (write && ret == 0 && (flags & BLK_REQ_FUA) && !s->can_fua &&
        s->can_flush) {
        ret = nbd_co_cmd(s, CMD_FLUSH, NULL, 0, 0, 0, &r);
    }
    if (bounce) {
        if (!write && ret == 0) {
            iov_vec_from_buf(qiov, 0, buf, bytes);
        }
        free(bounce);
    }
    return ret;
}

static int coroutine_fn nbd_co_preadv(BlockNode *bs, int64_t offset,
                                      int64_t bytes, IOVector *qiov,
                                      unsigned flags)
{
    return nbd_co_rw(bs, false, offset, bytes, qiov, flags);
}

static int coroutine_fn nbd_co_pwritev(BlockNode *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       unsigned flags)
{
    return nbd_co_rw(bs, true, offset, bytes, qiov, flags);
}

/* The largest payload-free command length, a multiple of the minimum. */
static uint64_t nbd_nopayload_max(NbdState *s)
{
    return NBD_MAX_NOPAYLOAD - NBD_MAX_NOPAYLOAD % s->min_block;
}

static int coroutine_fn nbd_co_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                             int64_t bytes, unsigned flags)
{
    NbdState *s = bs->opaque;
    uint32_t nflags = 0;
    NbdReq r;

    if (!s->can_zero) {
        return -ENOTSUP;
    }
    if (flags & BLK_REQ_NO_FALLBACK) {
        if (!s->can_fast_zero) {
            return -ENOTSUP;
        }
        nflags |= LIBNBD_CMD_FLAG_FAST_ZERO;
    }
    if (!(flags & BLK_REQ_MAY_UNMAP)) {
        nflags |= LIBNBD_CMD_FLAG_NO_HOLE;
    }
    if ((flags & BLK_REQ_FUA) && s->can_fua) {
        nflags |= LIBNBD_CMD_FLAG_FUA;
    }
    while (bytes > 0) {
        uint64_t n = (uint64_t)bytes < nbd_nopayload_max(s) ?
                     (uint64_t)bytes : nbd_nopayload_max(s);
        int ret = nbd_co_cmd(s, CMD_ZERO, NULL, n, offset, nflags, &r);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    if ((flags & BLK_REQ_FUA) && !s->can_fua && s->can_flush) {
        return nbd_co_cmd(s, CMD_FLUSH, NULL, 0, 0, 0, &r);
    }
    return 0;
}

static int coroutine_fn nbd_co_pdiscard(BlockNode *bs, int64_t offset,
                                        int64_t bytes)
{
    NbdState *s = bs->opaque;
    NbdReq r;

    if (!s->can_trim) {
        return 0;                  /* discard is advisory */
    }
    while (bytes > 0) {
        uint64_t n = (uint64_t)bytes < nbd_nopayload_max(s) ?
                     (uint64_t)bytes : nbd_nopayload_max(s);
        int ret = nbd_co_cmd(s, CMD_TRIM, NULL, n, offset, 0, &r);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int coroutine_fn nbd_co_flush(BlockNode *bs)
{
    NbdState *s = bs->opaque;
    NbdReq r;

    if (!s->can_flush) {
        return 0;
    }
    return nbd_co_cmd(s, CMD_FLUSH, NULL, 0, 0, 0, &r);
}

static int coroutine_fn nbd_co_block_status(BlockNode *bs, int64_t offset,
                                            int64_t bytes, int64_t *pnum,
                                            int64_t *map, BlockNode **file)
{
    NbdState *s = bs->opaque;
    uint64_t n = (uint64_t)bytes < nbd_nopayload_max(s) ?
                 (uint64_t)bytes : nbd_nopayload_max(s);
    NbdReq r;
    int ret;

    *map = offset;
    *file = bs;
    if (!s->can_meta) {
        *pnum = bytes;
        return BLK_STATUS_DATA | BLK_STATUS_ALLOCATED |
               BLK_STATUS_OFFSET_VALID;
    }
    ret = nbd_co_cmd(s, CMD_STATUS, NULL, n, offset, LIBNBD_CMD_FLAG_REQ_ONE,
                     &r);
    if (ret < 0) {
        return ret;
    }
    if (!r.got_extent || r.ext_len == 0) {
        return -EIO;
    }
    *pnum = r.ext_len < (uint64_t)bytes ? (int64_t)r.ext_len : bytes;
    /* Both contexts read as base:allocation does (qemu's meaning of
     * x-dirty-bitmap: a dirty block shows as a hole). */
    ret = BLK_STATUS_OFFSET_VALID;
    if (!(r.ext_flags & LIBNBD_STATE_HOLE)) {
        ret |= BLK_STATUS_DATA | BLK_STATUS_ALLOCATED;
    }
    if (!s->bitmap && (r.ext_flags & LIBNBD_STATE_ZERO)) {
        ret |= BLK_STATUS_ZERO | BLK_STATUS_ALLOCATED;
    }
    return ret;
}

static int64_t coroutine_fn nbd_co_getlength(BlockNode *bs)
{
    NbdState *s = bs->opaque;

    return s->size;
}

const BlockDriver bdrv_nbd = {
    .name = "nbd",
    .state_size = sizeof(NbdState),
    .options = nbd_options,
    .co_open = nbd_co_open,
    .close = nbd_close_node,
    .co_preadv = nbd_co_preadv,
    .co_pwritev = nbd_co_pwritev,
    .co_pwrite_zeroes = nbd_co_pwrite_zeroes,
    .co_pdiscard = nbd_co_pdiscard,
    .co_flush = nbd_co_flush,
    .co_block_status = nbd_co_block_status,
    .co_getlength = nbd_co_getlength,
    .refresh_limits = nbd_refresh_limits,
    .detach_aio_context = nbd_detach_aio_context,
    .attach_aio_context = nbd_attach_aio_context,
};
