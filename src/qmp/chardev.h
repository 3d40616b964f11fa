/*
 * Character devices, private to the monitor: only listening UNIX sockets.
 * chardev.c owns the socket and its path; monitor.c accepts on it.
 */
#ifndef BJ_QMP_CHARDEV_H
#define BJ_QMP_CHARDEV_H

#include <stdbool.h>

typedef struct Chardev Chardev;

Chardev *chardev_find(const char *id);
/* The listening fd (non-blocking, close-on-exec). */
int chardev_listen_fd(const Chardev *chr);
/* Marks chr as used by a frontend; false if it already is. */
bool chardev_claim(Chardev *chr);
/* Closes every listening socket and unlinks its path. */
void chardev_cleanup_all(void);

#endif
