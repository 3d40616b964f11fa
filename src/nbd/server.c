/*
 * The NBD server: listening sockets (UNIX or TCP) in the main loop, the
 * max-connections limit, start and stop.
 *
 * A client over the limit is accepted and closed at once, so it sees a
 * closed connection rather than hanging in the listen backlog.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aio/listener.h"
#include "nbd/nbd-int.h"
#include "nbd/nbd.h"
#include "util/alloc.h"
#include "util/log.h"

#define MAX_LISTENERS 8

typedef struct NbdServer {
    bool running;
    int fds[MAX_LISTENERS];
    AioListener *listeners[MAX_LISTENERS];
    int nfds;
    char *unix_path;           /* unlinked at stop */
    int64_t max_connections;   /* 0: unlimited */
    int64_t handshake_max_ns;  /* 0: no handshake timeout */
    TlsCreds *tls_creds;       /* NULL: plaintext; one use held */
    char *tls_authz;           /* authz object id, or NULL */
} NbdServer;

/* One server per process (see nbd.h); connections outlive a stop. */
static NbdServer server;
static ListHead conn_list = LIST_HEAD_INIT(conn_list);

bool nbd_server_running(void)
{
    return server.running;
}

static unsigned conn_count(void)
{
    unsigned n = 0;
    ListHead *l;

    for (l = conn_list.next; l != &conn_list; l = l->next) {
        n++;
    }
    return n;
}

static void on_accept(AioListener *l, void *opaque)
{
    int fd;

    while ((fd = aio_listener_accept(l)) >= 0) {
        if (server.max_connections > 0 &&
            conn_count() >= (uint64_t)server.max_connections) {
            log_info("nbd: connection limit (%lld) reached, refusing a "
                     "client", (long long)server.max_connections);
            close(fd);
            continue;
        }
        int one = 1;
        /* Fails harmlessly on UNIX sockets. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        nbd_conn_start(fd, &conn_list, server.handshake_max_ns,
                       server.tls_creds, server.tls_authz);
    }
}

static bool add_listener(int fd, Error **errp)
{
    if (listen(fd, 128) < 0) {
        error_setg_errno(errp, errno, "Failed to listen on socket");
        close(fd);
        return false;
    }
    AioListener *l = aio_listener_new(aio_main_context(), fd, "nbd",
                                      on_accept, NULL, errp);
    if (!l) {
        close(fd);
        return false;
    }
    server.fds[server.nfds] = fd;
    server.listeners[server.nfds++] = l;
    return true;
}

static bool listen_unix(const char *path, Error **errp)
{
    int fd = unix_socket_bind(path, errp);

    if (fd < 0) {
        return false;
    }
    if (!add_listener(fd, errp)) {
        unlink(path);
        return false;
    }
    server.unix_path = bj_strdup(path);
    return true;
}

static bool listen_inet(const char *host, const char *port, Error **errp)
{
    int fds[MAX_LISTENERS];
    int n = inet_socket_bind(host, port, fds, MAX_LISTENERS - server.nfds,
                             errp);

    for (int i = 0; i < n; i++) {
        if (!add_listener(fds[i], errp)) {
            while (++i < n) {
                close(fds[i]);
            }
            return false;
        }
    }
    return n > 0;
}

static void close_listeners(void)
{
    for (int i = 0; i < server.nfds; i++) {
        aio_listener_free(server.listeners[i]);
        server.listeners[i] = NULL;
        close(server.fds[i]);
    }
    server.nfds = 0;
    if (server.unix_path) {
        unlink(server.unix_path);
        free(server.unix_path);
        server.unix_path = NULL;
    }
}

bool nbd_server_start(json_t *addr, int64_t max_connections,
                      int64_t handshake_max_seconds, const char *tls_creds,
                      const char *tls_authz, Error **errp)
{
    const char *type = arg_str(addr, "type", "");
    TlsCreds *tc = NULL;
    bool ok;

    if (server.running) {
        error_setg(errp, "NBD server already running");
        return false;
    }
    if (tls_creds) {
        tc = tls_creds_lookup(tls_creds, TLS_ENDPOINT_SERVER, errp);
        if (!tc) {
            return false;
        }
    }
    if (strcmp(type, "unix") == 0) {
        ok = listen_unix(arg_str(addr, "path", ""), errp);
    } else if (strcmp(type, "inet") == 0) {
        ok = listen_inet(arg_str(addr, "host", ""),
                         arg_str(addr, "port", "10809"), errp);
    } else {
        error_setg(errp, "Socket address type '%s' is not supported", type);
        ok = false;
    }
    if (!ok) {
        close_listeners();
        return false;
    }
    server.running = true;
    server.max_connections = max_connections;
    server.handshake_max_ns = handshake_max_seconds * 1000000000LL;
    /* As in qemu, tls-authz without tls-creds is accepted and unused. */
    if (tc) {
        tls_creds_ref(tc);
        server.tls_creds = tc;
        server.tls_authz = tls_authz ? bj_strdup(tls_authz) : NULL;
    }
    return true;
}

bool nbd_server_stop(Error **errp)
{
    NbdConn *c;

    if (!server.running) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    nbd_export_delete_all();
    close_listeners();
    /* Clients still negotiating have no export to be closed through. */
    list_for_each_entry(c, &conn_list, server_link) {
        nbd_conn_close(c);
    }
    server.running = false;
    if (server.tls_creds) {
        tls_creds_unref(server.tls_creds);
        server.tls_creds = NULL;
    }
    bj_free_clear(&server.tls_authz);
    return true;
}

void nbd_shutdown(void)
{
    if (server.running) {
        nbd_server_stop(NULL);
    }
    nbd_export_delete_all();
    AIO_WAIT_WHILE(aio_main_context(),
                   nbd_export_alive() > 0 || !list_empty(&conn_list));
}
