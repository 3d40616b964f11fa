/*
 * Character devices, private to the monitor: listening sockets (UNIX, TCP,
 * or a passed fd), stdio and null.  chardev.c owns the socket and its path;
 * monitor.c accepts on it (or, for stdio, talks on stdin/stdout).
 */
#ifndef BJ_QMP_CHARDEV_H
#define BJ_QMP_CHARDEV_H

#include <jansson.h>
#include <stdbool.h>

#include "qmp/qmp.h"
#include "util/error.h"

typedef struct Chardev Chardev;

typedef enum ChardevKind {
    CHARDEV_SOCKET,     /* a listening socket */
    CHARDEV_STDIO,
    CHARDEV_NULL,
} ChardevKind;

/* chardev_add (--chardev) is declared in qmp.h, for the daemon. */
/* QMP chardev-add's checked arguments {id, backend: ChardevBackend}. */
bool chardev_add_qmp(json_t *args, Error **errp);
/* QMP chardev-remove: refused while a monitor uses it. */
bool chardev_remove(const char *id, Error **errp);
/* query-chardev's and query-chardev-backends' return values. */
json_t *chardev_query(void);
json_t *chardev_query_backends(void);

/* qom-list of "/chardevs" (id NULL: the container's children) or of
 * "/chardevs/ID": an ObjectPropertyInfo list as qsd 7.2's, or NULL when
 * there is no such chardev. */
json_t *chardev_qom_list(const char *id);
/* qom-get of "/chardevs/ID": "type" and a socket's "connected"; NULL when
 * there is no such chardev (*found false) or property (*found true). */
json_t *chardev_qom_get(const char *id, const char *prop, bool *found);

Chardev *chardev_find(const char *id);
ChardevKind chardev_kind(const Chardev *chr);
/* The listening fd (non-blocking, close-on-exec); -1 but for sockets. */
int chardev_listen_fd(const Chardev *chr);
/* Marks chr as used by a frontend; false if it already is. */
bool chardev_claim(Chardev *chr);
/* The frontend's clients coming and going (fd: the new client's socket,
 * or -1), for query-chardev's "disconnected:" and peer address. */
void chardev_client_connected(Chardev *chr, int fd);
void chardev_client_gone(Chardev *chr);
/* Closes every listening socket and unlinks its path. */
void chardev_cleanup_all(void);

#endif
