/*
 * The NBD server and its exports, as the monitor and the command line see
 * them.  One server per process (as in qemu-storage-daemon: "NBD server
 * already running"); exports are named by a block-export id.
 *
 * Everything here runs in the main loop.  Connections of an export whose
 * node lives in an iothread run there; they report back to the main loop
 * when they end.
 */
#ifndef BJ_NBD_NBD_H
#define BJ_NBD_NBD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/argspec.h"
#include "util/error.h"

/* ---- argument shapes and entry points (nbd-args.c) ---- */

/* QMP nbd-server-start {addr: SocketAddressLegacy, *tls-creds, *tls-authz,
 * *max-connections, *handshake-max-seconds (qemu 9.1)} */
extern const ArgSpec nbd_server_start_args[];
/* nbd-server-start with arguments checked against nbd_server_start_args. */
bool nbd_server_start_legacy(json_t *args, Error **errp);
/* --nbd-server addr.type=unix,addr.path=P[,tls-creds=ID][,tls-authz=ID]
 * [,max-connections=N][,handshake-max-seconds=S]: checks and starts.  coerce: values are
 * strings (dotted keys). */
bool nbd_server_start_cmdline(json_t *opts, bool coerce, Error **errp);

/* A client must finish the handshake (NBD_OPT_GO) this soon after it is
 * accepted or be disconnected, so idle connections cannot hold every
 * max-connections slot (qemu's default since CVE-2024-7409). */
#define NBD_DEFAULT_HANDSHAKE_MAX_SECONDS 10

/*
 * Starts listening.  addr is a flat SocketAddress:
 * {"type": "unix", "path": P} or {"type": "inet", "host": H, "port": "N"}.
 * max_connections 0 means unlimited; handshake_max_seconds 0 means no
 * handshake timeout.  tls_creds (NULL: plaintext) names server-endpoint
 * TLS credentials, which clients must then negotiate before anything else;
 * tls_authz (NULL: any client the credentials accept) names an
 * authorization object checked against the client's identity.
 */
bool nbd_server_start(json_t *addr, int64_t max_connections,
                      int64_t handshake_max_seconds, const char *tls_creds,
                      const char *tls_authz, Error **errp);
/* Stops listening and deletes every NBD export (as hard block-export-del). */
bool nbd_server_stop(Error **errp);
bool nbd_server_running(void);

/* One of an export's bitmaps: a name found on the exported node or down
 * its backing chain (node NULL), or the bitmap `name` of node `node`. */
typedef struct NbdExportBitmap {
    const char *node;
    const char *name;
} NbdExportBitmap;

/* An NBD export's options (block-export-add and --export, parsed by
 * qmp/cmd-nbd.c); the strings are the caller's, read during the call. */
typedef struct NbdExportOptions {
    const char *id;
    const char *node_name;
    const char *name;             /* NULL: node_name */
    const char *description;      /* NULL: none */
    const char *iothread;         /* NULL: where the node is */
    bool writable;
    bool writethrough;
    bool fixed_iothread;
    bool allocation_depth;        /* qemu:allocation-depth context */
    const NbdExportBitmap *bitmaps;
    size_t n_bitmaps;
} NbdExportOptions;

/* block-export-add of type nbd: checks what needs the server, the graph
 * and the other exports, and adds the export. */
bool nbd_export_add(const NbdExportOptions *o, Error **errp);
/* block-export-del: safe refuses while clients are connected; hard
 * disconnects them.  BLOCK_EXPORT_DELETED is sent once the export is gone
 * (before this returns when no client was connected). */
bool nbd_export_del(const char *id, bool hard, Error **errp);
/* Whether an NBD export has that id (FUSE exports share the namespace). */
bool nbd_export_exists(const char *id);
/* query-block-exports: [{id, type, node-name, shutting-down}], newest
 * first. */
json_t *nbd_export_query(void);

/* Shutdown: stop the server, delete every export, wait until all
 * connections are gone. */
void nbd_shutdown(void);

#endif
