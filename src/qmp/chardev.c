/*
 * --chardev socket,id=ID,path=P,server=on,wait=off
 *
 * The only character device blockjobd needs is a listening UNIX socket for
 * the monitor.  Other backends and shapes are refused by name rather than
 * half-supported.  Messages for mistakes qemu-storage-daemon also rejects
 * are its own words.
 */
#include "qmp/chardev.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "qmp/qmp.h"
#include "util/alloc.h"
#include "util/cleanup.h"
#include "util/log.h"

struct Chardev {
    char *id;
    char *path;       /* unlinked at cleanup */
    int fd;
    bool claimed;
    Chardev *next;
};

/* Every chardev of the process, in creation order (main thread only). */
static Chardev *chardevs;

Chardev *chardev_find(const char *id)
{
    for (Chardev *c = chardevs; c; c = c->next) {
        if (!strcmp(c->id, id)) {
            return c;
        }
    }
    return NULL;
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

/* Known QEMU char drivers: named ones we refuse, anything else is unknown. */
static const char *const known_backends[] = {
    "null", "socket", "udp", "file", "pipe", "stdio", "serial",
    "parallel", "pty", "ringbuf", "memory", "mux", "msmouse", "wctablet",
    "braille", "testdev", "spicevmc", "spiceport", "vc", "qemu-vdagent",
    "dbus", NULL,
};

/* Members QEMU's socket chardev knows; we use four and refuse the rest. */
static const char *const socket_keys[] = {
    "backend", "type", "id", "path", "server", "wait", "host", "port",
    "to", "ipv4", "ipv6", "nodelay", "delay", "telnet", "tn3270",
    "websocket", "reconnect", "tls-creds", "tls-authz", "abstract", "tight",
    "fd", "logfile", "logappend", "mux", NULL,
};

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

static int listen_unix(const char *path, Error **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sun.sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", path);
        return -1;
    }
    strcpy(sun.sun_path, path);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
        return -1;
    }
    /* A socket file left by a daemon that died would make bind fail; a
     * path that is not a socket is someone's file: leave it alone. */
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && unlink(path) < 0) {
        log_warn("cannot remove stale socket %s: %s", path, strerror(errno));
    }
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        error_setg_errno(errp, errno, "Failed to bind socket to %s", path);
        close(fd);
        return -1;
    }
    /* Room for a burst of clients connecting at once; the monitor closes
     * those over its max-clients itself. */
    if (listen(fd, 128) < 0) {
        error_setg_errno(errp, errno, "Failed to listen on socket");
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

bool chardev_add(json_t *opts, Error **errp)
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
    if (strcmp(backend, "socket") != 0) {
        error_setg(errp, "chardev '%s': char driver '%s' is not supported, "
                   "only 'socket' with path=, server=on, wait=off", id,
                   backend);
        return false;
    }
    const char *key;
    json_t *v;
    json_object_foreach(opts, key, v) {
        if (!in_list(socket_keys, key)) {
            error_setg(errp, "Invalid parameter '%s'", key);
            return false;
        }
    }
    if (!id_wellformed(id)) {
        error_setg(errp, "Parameter 'id' expects an identifier");
        return false;
    }
    bool server, wait;
    if (!get_bool(opts, "server", false, &server, errp) ||
        !get_bool(opts, "wait", true, &wait, errp)) {
        return false;
    }
    json_object_foreach(opts, key, v) {
        if (strcmp(key, "backend") && strcmp(key, "type") &&
            strcmp(key, "id") && strcmp(key, "path") &&
            strcmp(key, "server") && strcmp(key, "wait")) {
            error_setg(errp, "chardev '%s': option '%s' is not supported",
                       id, key);
            return false;
        }
    }
    const char *path = json_string_value(json_object_get(opts, "path"));
    if (!path || !*path) {
        error_setg(errp, "chardev '%s': only UNIX sockets are supported: "
                   "path= is required", id);
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

    int fd = listen_unix(path, errp);
    if (fd < 0) {
        return false;
    }
    Chardev *c = bj_calloc(1, sizeof(*c));
    c->id = bj_strdup(id);
    c->path = bj_strdup(path);
    c->fd = fd;
    Chardev **tail = &chardevs;
    while (*tail) {
        tail = &(*tail)->next;
    }
    *tail = c;
    return true;
}

void chardev_cleanup_all(void)
{
    while (chardevs) {
        Chardev *c = chardevs;
        chardevs = c->next;
        if (close(c->fd) < 0) {
            log_warn("closing chardev %s: %s", c->id, strerror(errno));
        }
        if (unlink(c->path) < 0 && errno != ENOENT) {
            log_warn("cannot remove socket %s: %s", c->path, strerror(errno));
        }
        free(c->id);
        free(c->path);
        free(c);
    }
}
