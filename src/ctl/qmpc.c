/*
 * bjctl's QMP client (see qmpc.h).
 *
 * The socket is non-blocking and every read or write goes through poll()
 * with a deadline: a daemon that hangs, or a qemu-storage-daemon monitor
 * that is busy with another client (it accepts the connection but never
 * greets), costs a bounded wait and a clear message, never a hang.
 */
#include "ctl/qmpc.h"
#include "util/alloc.h"
#include "util/cleanup.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int64_t qmpc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining_ms(int64_t deadline)
{
    int64_t left;

    if (deadline < 0) {
        return -1;
    }
    left = deadline - qmpc_now_ms();
    return left < 0 ? 0 : (int)left;
}

static int send_all(Qmpc *q, const char *data, size_t len, char **err)
{
    int64_t deadline = qmpc_now_ms() + q->reply_timeout_ms;

    while (len > 0) {
        ssize_t n = send(q->fd, data, len, MSG_NOSIGNAL);

        if (n >= 0) {
            data += n;
            len -= n;
            continue;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN) {
            struct pollfd pfd = { .fd = q->fd, .events = POLLOUT };
            int r = poll(&pfd, 1, remaining_ms(deadline));

            if (r == 0) {
                *err = bj_asprintf("timed out sending to the daemon");
                return -QMPC_CONN_ERROR;
            }
            if (r < 0 && errno != EINTR) {
                *err = bj_asprintf("poll: %s", strerror(errno));
                return -QMPC_CONN_ERROR;
            }
            continue;
        }
        *err = bj_asprintf("connection to the daemon lost: %s",
                           strerror(errno));
        return -QMPC_CONN_ERROR;
    }
    return 0;
}

/*
 * Reads one message (a JSON object on one line) waiting until deadline
 * (-1: forever).  Returns 1 with *msg, 0 on timeout, -QMPC_CONN_ERROR.
 */
static int read_msg(Qmpc *q, int64_t deadline, json_t **msg, char **err)
{
    for (;;) {
        size_t ws = 0;

        /* QMP ends messages with CRLF, but a pretty-printing monitor
         * spreads one over many lines: parse values, not lines. */
        while (ws < q->len && strchr(" \t\r\n", q->buf[ws])) {
            ws++;
        }
        if (ws) {
            memmove(q->buf, q->buf + ws, q->len - ws);
            q->len -= ws;
        }
        if (q->len) {
            json_error_t jerr;
            json_t *v = json_loadb(q->buf, q->len, JSON_DISABLE_EOF_CHECK,
                                   &jerr);

            if (v) {
                size_t used = jerr.position;

                if (used > q->len) {
                    used = q->len;
                }
                memmove(q->buf, q->buf + used, q->len - used);
                q->len -= used;
                if (!json_is_object(v)) {
                    json_decref(v);
                    *err = bj_asprintf("the daemon sent something that is "
                                       "not a QMP message");
                    return -QMPC_CONN_ERROR;
                }
                *msg = v;
                return 1;
            }
            /* An error before the end is garbage; at the end, a message
             * still on its way. */
            if ((size_t)jerr.position < q->len) {
                *err = bj_asprintf("the daemon sent invalid JSON: %s",
                                   jerr.text);
                return -QMPC_CONN_ERROR;
            }
        }
        if (q->cap - q->len < 4096) {
            size_t ncap = q->cap ? q->cap * 2 : 65536;
            /* Sized by what the daemon sends: an error, not an abort. */
            char *nb = bj_try_reallocarray(q->buf, ncap, 1);

            if (!nb) {
                *err = bj_asprintf("no memory for a message of the daemon");
                return -QMPC_CONN_ERROR;
            }
            q->buf = nb;
            q->cap = ncap;
        }
        ssize_t n = recv(q->fd, q->buf + q->len, q->cap - q->len, 0);
        if (n > 0) {
            q->len += n;
            continue;
        }
        if (n == 0) {
            *err = bj_asprintf("the daemon closed the connection");
            return -QMPC_CONN_ERROR;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN) {
            *err = bj_asprintf("connection to the daemon lost: %s",
                               strerror(errno));
            return -QMPC_CONN_ERROR;
        }
        struct pollfd pfd = { .fd = q->fd, .events = POLLIN };
        int r = poll(&pfd, 1, remaining_ms(deadline));
        if (r == 0) {
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            *err = bj_asprintf("poll: %s", strerror(errno));
            return -QMPC_CONN_ERROR;
        }
    }
}

static void queue_event(Qmpc *q, json_t *msg)
{
    json_array_append_new(q->events, msg);
}

static char last_class[64];

const char *qmpc_error_class(void)
{
    return last_class[0] ? last_class : NULL;
}

static const char *error_desc(json_t *reply)
{
    json_t *e = json_object_get(reply, "error");
    const char *d = json_string_value(json_object_get(e, "desc"));

    return d ? d : "unknown error";
}

int qmpc_exec(Qmpc *q, const char *cmd, json_t *args, json_t **ret,
              char **err)
{
    unsigned id = q->next_id++;

    last_class[0] = '\0';
    json_t *req = json_pack("{s:s, s:i}", "execute", cmd, "id", (int)id);
    char *text;
    int r;

    if (ret) {
        *ret = NULL;
    }
    if (args) {
        json_object_set_new(req, "arguments", args);
    }
    text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!text) {
        *err = bj_asprintf("out of memory");
        return QMPC_CONN_ERROR;
    }
    r = send_all(q, text, strlen(text), err);
    if (r == 0) {
        r = send_all(q, "\n", 1, err);
    }
    free(text);
    if (r < 0) {
        return QMPC_CONN_ERROR;
    }

    int64_t deadline = qmpc_now_ms() + q->reply_timeout_ms;
    for (;;) {
        json_auto_t *msg = NULL;

        r = read_msg(q, deadline, &msg, err);
        if (r == 0) {
            *err = bj_asprintf("no reply from the daemon to %s within %d s",
                               cmd, q->reply_timeout_ms / 1000);
            return QMPC_CONN_ERROR;
        }
        if (r < 0) {
            return QMPC_CONN_ERROR;
        }
        if (json_object_get(msg, "event")) {
            queue_event(q, steal_pointer(&msg));
            continue;
        }
        json_t *jid = json_object_get(msg, "id");
        if (!json_is_integer(jid) || json_integer_value(jid) != id) {
            continue;                /* not ours: a stray reply */
        }
        if (json_object_get(msg, "error")) {
            const char *cls = json_string_value(json_object_get(
                json_object_get(msg, "error"), "class"));

            snprintf(last_class, sizeof(last_class), "%s",
                     cls ? cls : "GenericError");
            *err = bj_asprintf("%s", error_desc(msg));
            return QMPC_DAEMON_ERROR;
        }
        if (ret) {
            *ret = json_incref(json_object_get(msg, "return"));
            if (!*ret) {
                *ret = json_object();
            }
        }
        return QMPC_OK;
    }
}

int qmpc_next_event(Qmpc *q, int timeout_ms, json_t **ev, char **err)
{
    int64_t deadline = timeout_ms < 0 ? -1 : qmpc_now_ms() + timeout_ms;

    for (;;) {
        json_t *msg = NULL;
        int r;

        if (json_array_size(q->events) > 0) {
            *ev = json_incref(json_array_get(q->events, 0));
            json_array_remove(q->events, 0);
            return 1;
        }
        r = read_msg(q, deadline, &msg, err);
        if (r <= 0) {
            return r;
        }
        if (json_object_get(msg, "event")) {
            *ev = msg;
            return 1;
        }
        json_decref(msg);            /* a late reply nobody waits for */
    }
}

static int connect_unix(const char *path, int64_t deadline, char **err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        *err = bj_asprintf("socket path %s is too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = bj_asprintf("socket: %s", strerror(errno));
        return -1;
    }
    for (;;) {
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            return fd;
        }
        if (errno == EINTR) {
            continue;
        }
        /* A full listen backlog: the daemon is there but busy. */
        if (errno == EAGAIN && remaining_ms(deadline) > 0) {
            struct timespec ts = { 0, 20 * 1000 * 1000 };
            nanosleep(&ts, NULL);
            continue;
        }
        *err = bj_asprintf("cannot connect to %s: %s%s", path, strerror(errno),
                           (errno == ENOENT || errno == ECONNREFUSED) ?
                           " (is the daemon running?)" : "");
        close(fd);
        return -1;
    }
}

Qmpc *qmpc_open(const char *path, int timeout_ms, char **err)
{
    int64_t deadline = qmpc_now_ms() + timeout_ms;
    Qmpc *q;
    json_t *msg = NULL;
    int fd, r;

    fd = connect_unix(path, deadline, err);
    if (fd < 0) {
        return NULL;
    }
    q = bj_calloc(1, sizeof(*q));
    q->fd = fd;
    q->path = bj_strdup(path);
    q->events = json_array();
    q->reply_timeout_ms = timeout_ms;

    r = read_msg(q, deadline, &msg, err);
    if (r == 0) {
        *err = bj_asprintf("no QMP greeting on %s within %d s (is another "
                           "client using this monitor?)", path,
                           timeout_ms / 1000);
        goto fail;
    }
    if (r < 0) {
        goto fail;
    }
    if (!json_object_get(msg, "QMP")) {
        json_decref(msg);
        *err = bj_asprintf("%s does not speak QMP", path);
        goto fail;
    }
    json_decref(msg);

    char *e = NULL;
    r = qmpc_exec(q, "qmp_capabilities", NULL, NULL, &e);
    if (r != QMPC_OK) {
        *err = bj_asprintf("QMP negotiation failed on %s: %s", path, e);
        free(e);
        goto fail;
    }
    return q;

fail:
    qmpc_close(q);
    return NULL;
}

void qmpc_close(Qmpc *q)
{
    if (!q) {
        return;
    }
    if (q->fd >= 0) {
        close(q->fd);
    }
    free(q->path);
    free(q->buf);
    json_decref(q->events);
    free(q);
}
