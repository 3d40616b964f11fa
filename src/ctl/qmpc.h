/*
 * bjctl's QMP client: one connection on a UNIX socket, every wait bounded.
 *
 * bjctl knows only the QMP wire format (shared/DESIGN.md), so this is all
 * it has to talk to blockjobd or qemu-storage-daemon.  Events that arrive
 * while a command waits for its reply are queued, in order, so a caller
 * that subscribes (connects) before acting never misses one.
 */
#ifndef BJ_CTL_QMPC_H
#define BJ_CTL_QMPC_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

/* What a call returns; the values double as bjctl exit statuses. */
enum {
    QMPC_OK = 0,
    QMPC_DAEMON_ERROR = 1,   /* the daemon answered with an error */
    QMPC_CONN_ERROR = 3,     /* cannot connect, connection lost, timeout */
};

typedef struct Qmpc {
    int fd;
    char *path;
    char *buf;               /* bytes read but not yet parsed */
    size_t len, cap;
    json_t *events;          /* queued events, oldest first */
    int reply_timeout_ms;    /* how long a command may take to answer */
    unsigned next_id;
} Qmpc;

/*
 * The QMP error class ("GenericError", "DeviceNotFound"...) of the last
 * qmpc_exec that the daemon refused; NULL when the last one was not refused.
 */
const char *qmpc_error_class(void);

/* Milliseconds on the monotonic clock. */
int64_t qmpc_now_ms(void);

/*
 * Connects, reads the greeting and negotiates capabilities, all within
 * timeout_ms.  On failure returns NULL and sets *err (caller frees).
 */
Qmpc *qmpc_open(const char *path, int timeout_ms, char **err);
void qmpc_close(Qmpc *q);

/*
 * Runs a command.  args (may be NULL) is stolen.  On QMPC_OK *ret holds the
 * "return" value (new reference, NULL when ret is NULL); on
 * QMPC_DAEMON_ERROR *err is the daemon's message; on QMPC_CONN_ERROR *err
 * says what happened to the connection.
 */
int qmpc_exec(Qmpc *q, const char *cmd, json_t *args, json_t **ret,
              char **err);

/*
 * Next event, oldest queued first, else waits up to timeout_ms (-1:
 * forever).  Returns 1 with *ev (new reference), 0 on timeout,
 * -QMPC_CONN_ERROR with *err when the connection is gone.
 */
int qmpc_next_event(Qmpc *q, int timeout_ms, json_t **ev, char **err);

#endif
