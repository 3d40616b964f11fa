/*
 * Inside the NBD server: exports (export.c), the listener (server.c) and
 * connections (conn.c, conn-io.c).
 *
 *   listener (main loop) --accept--> NbdConn, handshake coroutine (main loop)
 *        --NBD_OPT_GO--> receive coroutine in the export's context
 *             --one coroutine per request--> bdrv_co_* on export->child
 *        --end--> bottom half in the main loop drops the export reference
 *
 * Ownership: the export list holds one reference to each live export and
 * every connection that chose it holds one more; both are counted in the
 * main loop only.  The last reference detaches the node and raises
 * BLOCK_EXPORT_DELETED.
 */
#ifndef BJ_NBD_NBD_INT_H
#define BJ_NBD_NBD_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <gnutls/gnutls.h>

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "block/block.h"
#include "block/dirty-bitmap.h"
#include "nbd/nbd-handshake.h"
#include "nbd/nbd-request.h"
#include "object/tls-creds.h"
#include "util/list.h"

typedef struct NbdExport {
    char *id;
    char *name;                /* NBD export name */
    char *description;         /* NULL if none */
    BlockChild *child;         /* our edge to the node */
    AioContext *ctx;           /* where the node and our connections run */
    bool writable;
    bool writethrough;
    bool allocation_depth;     /* qemu:allocation-depth offered */
    /* Bitmaps offered as qemu:dirty-bitmap:NAME, marked busy for the life
     * of the export; each node is referenced so a bitmap cannot vanish
     * with a node taken out of the graph under us. */
    unsigned n_bitmaps;
    BdrvDirtyBitmap **bitmaps;
    BlockNode **bitmap_nodes;
    char **bitmap_names;
    bool fixed_iothread;       /* stays in ctx (block-export-add) */
    bool moving;               /* its node changes context (main loop) */
    int refcnt;                /* main loop */
    bool shutting_down;        /* deleted, waiting for its connections */
    ListHead link;             /* in the export list */
    ListHead conns;            /* NbdConn.export_link, main loop */
} NbdExport;

typedef struct NbdConn {
    int fd;
    AioContext *ctx;           /* main loop, then the export's context */
    NbdExport *exp;            /* set at NBD_OPT_GO / EXPORT_NAME */
    ListHead server_link;      /* all connections, main loop */
    ListHead export_link;      /* exp->conns, main loop */
    atomic_bool closing;       /* asked to go away (any thread) */
    AioTimer *hs_timer;        /* handshake deadline (main loop), or NULL */
    /* TLS: the server's credentials (one use held per connection, so a
     * stopped server's clients keep theirs) and authz id, copied at
     * accept; the session once NBD_OPT_STARTTLS began, NULL before and
     * for plaintext servers.  All socket I/O goes through it then. */
    TlsCreds *tls_creds;
    char *tls_authz;
    gnutls_session_t tls;
    bool tls_bye_done;         /* close_notify sent (conn->ctx thread) */
    /* TLS close bottom halves not yet done, and a finish waiting for
     * them (main loop). */
    unsigned close_refs;
    bool finish_pending;

    /* The coroutines that live in conn->ctx once transmission began: the
     * receive loop (set before it is scheduled, cleared as it ends) and
     * one per request (NbdReq.link); nbd_conn_move re-homes them. */
    bool transmitting;         /* main loop */
    bool start_pending;        /* handshake done during a move */
    bool frozen;               /* moved, fd not watched yet */
    Coroutine *recv_co;
    ListHead reqs;

    /* socket waiters (conn->ctx thread) */
    Coroutine *rd_co;
    Coroutine *wr_co;
    bool watch_rd, watch_wr;

    /* transmission (conn->ctx thread) */
    NbdTransmitParams params;
    bool meta_allocation_depth;
    bool *meta_bitmaps;        /* exp->n_bitmaps entries, or NULL */
    CoMutex send_lock;
    unsigned in_flight;        /* request coroutines alive */
    size_t in_flight_bytes;    /* buffers they hold */
    Coroutine *recv_waiting;   /* receive coroutine waiting for a slot */
    bool broken;               /* a send failed: stop everything */
} NbdConn;

/* ---- export.c ---- */
extern const NbdExportLookup nbd_export_lookup;
void nbd_export_ref(NbdExport *exp);
void nbd_export_unref(NbdExport *exp);
/* Hard-deletes every export (server stop, shutdown). */
void nbd_export_delete_all(void);
/* Exports not yet freed (including deleted ones with connections). */
unsigned nbd_export_alive(void);

/* ---- conn.c ---- */
/* Takes ownership of fd (non-blocking, accepted) and starts the handshake
 * in the main loop; a handshake not done within handshake_max_ns (0: no
 * limit) is cut off. */
NbdConn *nbd_conn_start(int fd, ListHead *server_list,
                        int64_t handshake_max_ns, TlsCreds *tls_creds,
                        const char *tls_authz);
/* Asks a connection to stop (thread-safe): in-flight requests finish, then
 * it ends. */
void nbd_conn_close(NbdConn *c);
/* Main loop, the export's node drained and already in ctx: moves the
 * connection into ctx (its receive and request coroutines, wherever they
 * wait: socket, send lock, postponed on the node) and leaves it frozen:
 * no fd watch, so none of them runs before every connection of every
 * export of the node moved (they all queue on the same nodes, from one
 * thread at a time).  A connection still negotiating follows by itself
 * (exp->ctx). */
bool nbd_conn_move(NbdConn *c, AioContext *ctx);
/* Once every user moved: the connection watches its fd again in its new
 * context, or one that finished its handshake meanwhile starts there.
 * Both run the main loop (c may be gone after); they return whether they
 * had something to do, so that the caller scans exp->conns again. */
bool nbd_conn_move_done(NbdConn *c);

/* ---- conn-io.c: socket I/O from the connection's coroutines ---- */
/* 0, -EPIPE on end of stream, or -errno. */
int coroutine_fn nbd_conn_read(NbdConn *c, void *buf, size_t len);
int coroutine_fn nbd_conn_writev(NbdConn *c, struct iovec *iov, int niov);
/* Drops our fd watch (before moving to another context or closing). */
void nbd_conn_unwatch(NbdConn *c);
/* Watches the fd again for whichever of rd_co / wr_co waits (conn->ctx's
 * thread, after a move). */
void nbd_conn_rewatch(NbdConn *c);
/* Runs the server side of the TLS handshake on c->tls (set up by the
 * caller); from then on reads and writes go through it.  0 or -errno. */
int coroutine_fn nbd_conn_tls_handshake(NbdConn *c);
/* Sends TLS close_notify if the socket takes it now (never waits). */
void nbd_conn_tls_bye(NbdConn *c);

#endif
