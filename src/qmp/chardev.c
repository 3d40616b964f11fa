/*
 * Character devices: what a monitor listens or talks on.
 *
 *   socket, server=on, wait=off: a listening UNIX socket (path=), TCP
 *           socket (host=, port=) or one passed in by the parent (fd=)
 *   stdio:  the daemon's stdin and stdout (one per process, never with
 *           --daemonize)
 *   null:   nothing (a monitor on it has no client)
 *
 * Added by --chardev (QemuOpts' flat keys) or QMP chardev-add (QAPI's
 * ChardevBackend union), removed by chardev-remove while no monitor uses
 * it, listed by query-chardev.  Other backends and shapes are refused by
 * name rather than half-supported.  Messages for mistakes
 * qemu-storage-daemon also rejects are its own words.
 */
#include "qmp/chardev.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "aio/listener.h"
#include "qmp/qmp.h"
#include "util/alloc.h"
#include "util/cleanup.h"
#include "util/log.h"

struct Chardev {
    char *id;
    ChardevKind kind;
    char *path;       /* a UNIX socket we bound: unlinked at cleanup */
    char *filename;   /* query-chardev's, but for "disconnected:" */
    int fd;           /* the listening socket; -1 for stdio and null */
    bool claimed;     /* a monitor uses it */
    unsigned clients; /* connected to it now */
    char *peer;       /* the first connected client's address, or NULL */
    Chardev *next;
};

/* Every chardev of the process, in creation order (main thread only). */
static Chardev *chardevs;

static void chardev_free(Chardev *c);

Chardev *chardev_find(const char *id)
{
    for (Chardev *c = chardevs; c; c = c->next) {
        if (!strcmp(c->id, id)) {
            return c;
        }
    }
    return NULL;
}

ChardevKind chardev_kind(const Chardev *chr)
{
    return chr->kind;
}

int chardev_listen_fd(const Chardev *chr)
{
    return chr->fd;
}

bool chardev_claim(Chardev *chr)
{
    if (chr->claimed) {
        return false;
    }
    chr->claimed = true;
    return true;
}

/* "host:port" of a TCP peer, NULL for anything else. */
static char *tcp_peer(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[NI_MAXHOST], port[NI_MAXSERV];

    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0 ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port,
                    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        return NULL;
    }
    return bj_asprintf("%s:%s", host, port);
}

void chardev_client_connected(Chardev *chr, int fd)
{
    if (chr->clients++ == 0 && fd >= 0) {
        chr->peer = tcp_peer(fd);
    }
}

void chardev_client_gone(Chardev *chr)
{
    if (chr->clients > 0 && --chr->clients == 0) {
        bj_free_clear(&chr->peer);
    }
}

/* ---- creating ---- */

/* Known QEMU char drivers: named ones we refuse, anything else is unknown. */
static const char *const known_backends[] = {
    "null", "socket", "udp", "file", "pipe", "stdio", "serial",
    "parallel", "pty", "ringbuf", "memory", "mux", "msmouse", "wctablet",
    "braille", "testdev", "spicevmc", "spiceport", "vc", "qemu-vdagent",
    "dbus", NULL,
};

/* The backends we implement, as query-chardev-backends lists them. */
static const char *const our_backends[] = { "socket", "stdio", "null", NULL };

/* Members QEMU's socket chardev knows; we use some and refuse the rest. */
static const char *const socket_keys[] = {
    "backend", "type", "id", "path", "server", "wait", "host", "port",
    "to", "ipv4", "ipv6", "nodelay", "delay", "telnet", "tn3270",
    "websocket", "reconnect", "tls-creds", "tls-authz", "abstract", "tight",
    "fd", "logfile", "logappend", "mux", NULL,
};
static const char *const socket_used[] = {
    "backend", "type", "id", "path", "server", "wait", "host", "port", "fd",
    NULL,
};
static const char *const stdio_keys[] = {
    "backend", "type", "id", "signal", "logfile", "logappend", "mux", NULL,
};
static const char *const stdio_used[] = {
    "backend", "type", "id", "signal", NULL,
};
static const char *const null_keys[] = {
    "backend", "type", "id", "logfile", "logappend", "mux", NULL,
};
static const char *const null_used[] = { "backend", "type", "id", NULL };

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++) {
        if (!strcmp(*list, s)) {
            return true;
        }
    }
    return false;
}

/* on/off/yes/no/true/false as a string, or a JSON boolean. */
static bool get_bool(json_t *opts, const char *key, bool def, bool *out,
                     Error **errp)
{
    json_t *v = json_object_get(opts, key);
    if (!v) {
        *out = def;
        return true;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return true;
    }
    const char *s = json_string_value(v);
    if (s && (!strcmp(s, "on") || !strcmp(s, "yes") || !strcmp(s, "true"))) {
        *out = true;
        return true;
    }
    if (s && (!strcmp(s, "off") || !strcmp(s, "no") || !strcmp(s, "false"))) {
        *out = false;
        return true;
    }
    error_setg(errp, "Parameter '%s' expects 'on' or 'off'", key);
    return false;
}

/* Every key of opts is one the backend knows (qsd's error otherwise) and
 * one we implement (ours). */
static bool check_keys(json_t *opts, const char *id, const char *const *known,
                       const char *const *used, Error **errp)
{
    const char *key;
    json_t *v;

    json_object_foreach(opts, key, v) {
        if (!in_list(known, key)) {
            error_setg(errp, "Invalid parameter '%s'", key);
            return false;
        }
    }
    json_object_foreach(opts, key, v) {
        if (!in_list(used, key)) {
            error_setg(errp, "chardev '%s': option '%s' is not supported",
                       id, key);
            return false;
        }
    }
    return true;
}

static bool do_listen(int fd, Error **errp)
{
    /* Room for a burst of clients connecting at once; the monitor closes
     * those over its max-clients itself. */
    if (listen(fd, 128) < 0) {
        error_setg_errno(errp, errno, "Failed to listen on socket");
        return false;
    }
    return true;
}

/* A listening socket handed over by the parent: fd=N. */
static int adopt_fd(const char *str, Error **errp)
{
    char *end;
    long n = strtol(str, &end, 10);
    int accepting = 0;
    socklen_t len = sizeof(accepting);
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    int flags;

    if (!*str || *end || n < 0 || n > INT32_MAX) {
        error_setg(errp, "File descriptor '%s' is not a number", str);
        return -1;
    }
    if (getsockname((int)n, (struct sockaddr *)&ss, &sslen) < 0) {
        error_setg(errp, "File descriptor '%s' is not a socket", str);
        return -1;
    }
    if (getsockopt((int)n, SOL_SOCKET, SO_ACCEPTCONN, &accepting,
                   &len) < 0 || !accepting) {
        error_setg(errp, "File descriptor '%s' is not a listening socket "
                   "(server=on needs one)", str);
        return -1;
    }
    flags = fcntl((int)n, F_GETFL);
    if (flags < 0 || fcntl((int)n, F_SETFL, flags | O_NONBLOCK) < 0 ||
        fcntl((int)n, F_SETFD, FD_CLOEXEC) < 0) {
        error_setg_errno(errp, errno, "File descriptor '%s'", str);
        return -1;
    }
    return (int)n;
}

/* query-chardev's name of a listening socket, from the socket itself. */
static char *socket_filename(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[NI_MAXHOST], port[NI_MAXSERV];

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        return bj_strdup("socket");
    }
    if (ss.ss_family == AF_UNIX) {
        return bj_asprintf("unix:%s,server=on",
                           ((struct sockaddr_un *)&ss)->sun_path);
    }
    if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port,
                    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        return bj_strdup("socket");
    }
    return bj_asprintf("tcp:%s:%s,server=on", host, port);
}

static void chardev_append(Chardev *c)
{
    Chardev **tail = &chardevs;

    while (*tail) {
        tail = &(*tail)->next;
    }
    *tail = c;
}

static bool stdio_taken(void)
{
    for (Chardev *c = chardevs; c; c = c->next) {
        if (c->kind == CHARDEV_STDIO) {
            return true;
        }
    }
    return false;
}

static bool add_socket(json_t *opts, const char *id, Error **errp)
{
    const char *path = json_string_value(json_object_get(opts, "path"));
    const char *host = json_string_value(json_object_get(opts, "host"));
    const char *port = json_string_value(json_object_get(opts, "port"));
    const char *fdstr = json_string_value(json_object_get(opts, "fd"));
    bool server, wait;
    int fd = -1;

    if (!check_keys(opts, id, socket_keys, socket_used, errp) ||
        !get_bool(opts, "server", false, &server, errp) ||
        !get_bool(opts, "wait", true, &wait, errp)) {
        return false;
    }
    if ((path != NULL) + (host != NULL) + (fdstr != NULL) > 1) {
        error_setg(errp, "None or one of 'path', 'fd' or 'host' option "
                   "required.");
        return false;
    }
    if (host && !port) {
        error_setg(errp, "chardev: socket: no port given");
        return false;
    }
    if (!path && !host && !fdstr) {
        error_setg(errp, "chardev '%s': a socket needs path=, host= and "
                   "port=, or fd=", id);
        return false;
    }
    if (path && !*path) {
        error_setg(errp, "chardev '%s': path= is empty", id);
        return false;
    }
    if (!server) {
        error_setg(errp, "chardev '%s': only listening sockets are "
                   "supported: server=on is required", id);
        return false;
    }
    if (wait) {
        error_setg(errp, "chardev '%s': waiting for a client at start-up is "
                   "not supported: wait=off is required", id);
        return false;
    }
    if (chardev_find(id)) {
        /* qemu-storage-daemon's words for a second chardev of that id. */
        error_setg(errp, "duplicate yank instance");
        return false;
    }

    if (path) {
        fd = unix_socket_bind(path, errp);
    } else if (host) {
        /* one address, as qemu binds one */
        if (inet_socket_bind(host, port, &fd, 1, errp) < 0) {
            fd = -1;
        }
    } else {
        fd = adopt_fd(fdstr, errp);
    }
    if (fd < 0) {
        return false;
    }
    if ((path || host) && !do_listen(fd, errp)) {
        close(fd);
        if (path) {
            unlink(path);
        }
        return false;
    }
    Chardev *c = bj_calloc(1, sizeof(*c));
    c->id = bj_strdup(id);
    c->kind = CHARDEV_SOCKET;
    c->path = path ? bj_strdup(path) : NULL;
    c->fd = fd;
    c->filename = socket_filename(fd);
    chardev_append(c);
    return true;
}

static bool add_plain(json_t *opts, const char *id, ChardevKind kind,
                      Error **errp)
{
    bool stdio = kind == CHARDEV_STDIO;

    if (!check_keys(opts, id, stdio ? stdio_keys : null_keys,
                    stdio ? stdio_used : null_used, errp)) {
        return false;
    }
    if (stdio) {
        bool sig;

        /* signal= says whether ^C on a terminal is a signal: it always is
         * (we never put the terminal in raw mode) */
        if (!get_bool(opts, "signal", true, &sig, errp)) {
            return false;
        }
        if (stdio_taken()) {
            error_setg(errp, "cannot use stdio by multiple character "
                       "devices");
            return false;
        }
    }
    if (chardev_find(id)) {
        error_setg(errp, "duplicate yank instance");
        return false;
    }
    Chardev *c = bj_calloc(1, sizeof(*c));
    c->id = bj_strdup(id);
    c->kind = kind;
    c->fd = -1;
    c->filename = bj_strdup(stdio ? "stdio" : "null");
    chardev_append(c);
    return true;
}

bool chardev_add(json_t *opts, bool daemonize, Error **errp)
{
    const char *backend = json_string_value(json_object_get(opts, "backend"));
    if (!backend) {
        backend = json_string_value(json_object_get(opts, "type"));
    }
    const char *id = json_string_value(json_object_get(opts, "id"));
    if (json_object_get(opts, "id") && !id) {
        error_setg(errp, "Parameter 'id' expects an identifier");
        return false;
    }
    if (!id) {
        error_setg(errp, "chardev: no id specified");
        return false;
    }
    if (!backend) {
        error_setg(errp, "chardev: \"%s\" missing backend", id);
        return false;
    }
    if (!in_list(known_backends, backend)) {
        error_setg(errp, "'%s' is not a valid char driver name", backend);
        return false;
    }
    if (!in_list(our_backends, backend)) {
        error_setg(errp, "chardev '%s': char driver '%s' is not supported, "
                   "only 'socket' (server=on, wait=off), 'stdio' and "
                   "'null'", id, backend);
        return false;
    }
    if (!id_wellformed(id)) {
        error_setg(errp, "Parameter 'id' expects an identifier");
        return false;
    }
    if (!strcmp(backend, "socket")) {
        return add_socket(opts, id, errp);
    }
    if (!strcmp(backend, "stdio") && daemonize) {
        error_setg(errp, "cannot use stdio with -daemonize");
        return false;
    }
    return add_plain(opts, id, !strcmp(backend, "stdio") ? CHARDEV_STDIO
                                                        : CHARDEV_NULL,
                     errp);
}

/* ---- QMP: chardev-add, chardev-remove, query-chardev(-backends) ---- */

/*
 * QAPI's ChardevBackend ({"type": T, "data": {...}}; a socket's address a
 * SocketAddressLegacy) turned into the flat keys --chardev takes.  NULL
 * with errp set for what has no flat form here.
 */
static json_t *flatten_backend(const char *id, json_t *backend, Error **errp)
{
    const char *type = json_string_value(json_object_get(backend, "type"));
    json_t *data = json_object_get(backend, "data");
    json_t *flat = json_pack("{s:s, s:s}", "backend", type ? type : "",
                             "id", id);
    json_t *addr, *ad;
    const char *atype;

    if (!type || strcmp(type, "socket") != 0) {
        return flat;       /* stdio, null: their data has nothing we use */
    }
    addr = json_object_get(data, "addr");
    atype = json_string_value(json_object_get(addr, "type"));
    ad = json_object_get(addr, "data");
    if (!atype || !json_is_object(ad)) {
        error_setg(errp, "Parameter 'backend.data.addr' is missing");
        json_decref(flat);
        return NULL;
    }
    if (!strcmp(atype, "unix")) {
        json_object_set(flat, "path", json_object_get(ad, "path"));
    } else if (!strcmp(atype, "inet")) {
        json_object_set(flat, "host", json_object_get(ad, "host"));
        json_object_set(flat, "port", json_object_get(ad, "port"));
    } else if (!strcmp(atype, "fd")) {
        json_object_set(flat, "fd", json_object_get(ad, "str"));
    } else {
        error_setg(errp, "chardev '%s': address type '%s' is not supported",
                   id, atype);
        json_decref(flat);
        return NULL;
    }
    /* QAPI's defaults differ from the command line's: server on, no wait */
    json_object_set_new(flat, "server", json_boolean(!json_is_false(
                            json_object_get(data, "server"))));
    json_object_set_new(flat, "wait", json_boolean(json_is_true(
                            json_object_get(data, "wait"))));
    return flat;
}

static const char *const addr_types[] = {
    "inet", "unix", "vsock", "fd", NULL,
};
static const ArgSpec unix_data[] = {
    { .name = "path", .type = ARG_STR },
    { .name = "abstract", .type = ARG_BOOL, .optional = true },
    { .name = "tight", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};
static const ArgSpec inet_data[] = {
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
static const ArgSpec fd_data[] = {
    { .name = "str", .type = ARG_STR },
    { .name = NULL },
};

bool chardev_add_qmp(json_t *args, Error **errp)
{
    const char *id = arg_str(args, "id", NULL);
    json_t *backend = json_object_get(args, "backend");
    const char *type = json_string_value(json_object_get(backend, "type"));
    json_t *data = json_object_get(backend, "data");
    json_t *addr = json_object_get(data, "addr");
    json_t *flat;
    bool ok;

    if (chardev_find(id)) {
        error_setg(errp, "Chardev with id '%s' already exists", id);
        return false;
    }
    if (!type) {
        error_setg(errp, "Parameter 'backend.type' is missing");
        return false;
    }
    if (data && !json_is_object(data)) {
        error_setg(errp, "Invalid parameter type for 'backend.data', "
                   "expected: object");
        return false;
    }
    /* the socket's address, checked with QAPI's words before we flatten */
    if (!strcmp(type, "socket") && json_is_object(addr)) {
        const char *at = json_string_value(json_object_get(addr, "type"));
        json_t *ad = json_object_get(addr, "data");
        const ArgSpec *spec = !at ? NULL : !strcmp(at, "unix") ? unix_data :
                              !strcmp(at, "inet") ? inet_data :
                              !strcmp(at, "fd") ? fd_data : NULL;

        if (!at || !in_list(addr_types, at)) {
            /* an enum's member by its bare name, as qemu's visitor */
            error_setg(errp, "Parameter 'type' does not accept value '%s'",
                       at ? at : "");
            return false;
        }
        if (spec && (!json_is_object(ad) ||
                     !argspec_check(ad, spec, "backend.data.addr.data", false,
                                    errp))) {
            if (!json_is_object(ad)) {
                error_setg(errp, "Parameter 'backend.data.addr.data' is "
                           "missing");
            }
            return false;
        }
    }
    flat = flatten_backend(id, backend, errp);
    if (!flat) {
        return false;
    }
    /* stdio at run time: the daemon's stdio is whatever it started with */
    ok = chardev_add(flat, false, errp);
    json_decref(flat);
    return ok;
}

bool chardev_remove(const char *id, Error **errp)
{
    Chardev **p = &chardevs, *c;

    while (*p && strcmp((*p)->id, id) != 0) {
        p = &(*p)->next;
    }
    c = *p;
    if (!c) {
        error_setg(errp, "Chardev '%s' not found", id);
        return false;
    }
    if (c->claimed) {
        error_setg(errp, "Chardev '%s' is busy", id);
        return false;
    }
    *p = c->next;
    c->next = NULL;
    chardev_free(c);
    return true;
}

json_t *chardev_query(void)
{
    json_t *list = json_array();

    for (Chardev *c = chardevs; c; c = c->next) {
        char *name;

        if (c->kind != CHARDEV_SOCKET) {
            name = bj_strdup(c->filename);
        } else if (!c->clients) {
            name = bj_asprintf("disconnected:%s", c->filename);
        } else if (c->peer) {
            name = bj_asprintf("%s <-> %s", c->filename, c->peer);
        } else {
            name = bj_strdup(c->filename);
        }
        json_array_append_new(list, json_pack(
            "{s:s, s:s, s:b}", "label", c->id, "filename", name,
            "frontend-open", c->claimed));
        free(name);
    }
    return list;
}

static const char *qom_class(const Chardev *c)
{
    return c->kind == CHARDEV_SOCKET ? "chardev-socket"
           : c->kind == CHARDEV_STDIO ? "chardev-stdio" : "chardev-null";
}

json_t *chardev_qom_list(const char *id)
{
    json_t *list = json_array();
    Chardev *c;

    json_array_append_new(list, json_pack("{s:s, s:s}", "name", "type",
                                          "type", "string"));
    if (!id) {
        for (c = chardevs; c; c = c->next) {
            char *t = bj_asprintf("child<%s>", qom_class(c));
            json_array_append_new(list, json_pack("{s:s, s:s}", "name", c->id,
                                                  "type", t));
            free(t);
        }
        return list;
    }
    c = chardev_find(id);
    if (!c) {
        json_decref(list);
        return NULL;
    }
    if (c->kind == CHARDEV_SOCKET) {
        json_array_append_new(list, json_pack("{s:s, s:s}", "name",
                                              "connected", "type", "bool"));
        json_array_append_new(list, json_pack("{s:s, s:s}", "name", "addr",
                                              "type", "SocketAddress"));
    }
    return list;
}

json_t *chardev_qom_get(const char *id, const char *prop, bool *found)
{
    Chardev *c = chardev_find(id);

    *found = c != NULL;
    if (!c) {
        return NULL;
    }
    if (!strcmp(prop, "type")) {
        return json_string(qom_class(c));
    }
    if (c->kind == CHARDEV_SOCKET && !strcmp(prop, "connected")) {
        return json_boolean(c->clients > 0);
    }
    return NULL;
}

json_t *chardev_query_backends(void)
{
    json_t *list = json_array();

    for (const char *const *b = our_backends; *b; b++) {
        json_array_append_new(list, json_pack("{s:s}", "name", *b));
    }
    return list;
}

/* ---- teardown ---- */

static void chardev_free(Chardev *c)
{
    if (c->fd >= 0 && close(c->fd) < 0) {
        log_warn("closing chardev %s: %s", c->id, strerror(errno));
    }
    if (c->path && unlink(c->path) < 0 && errno != ENOENT) {
        log_warn("cannot remove socket %s: %s", c->path, strerror(errno));
    }
    free(c->id);
    free(c->path);
    free(c->filename);
    free(c->peer);
    free(c);
}

void chardev_cleanup_all(void)
{
    while (chardevs) {
        Chardev *c = chardevs;

        chardevs = c->next;
        chardev_free(c);
    }
}
