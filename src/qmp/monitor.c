/*
 * The QMP monitor: one listening chardev per monitor, any number of clients
 * per monitor, each with its own negotiation state, all in the main
 * AioContext.
 *
 *   socket --read--> JsonStream --value--> handle_request --> qmp_dispatch
 *   socket <-write-- out buffer <---------- reply / event (one line + CRLF)
 *
 * A command handler may run the event loop while it waits (opening an image
 * drains requests, for instance).  So while a client's input is being
 * handled the client is "busy": its read handler is removed, so the nested
 * loop neither re-enters the parser nor frees the client under our feet;
 * anything that would free it only marks it dead, and the outermost handler
 * frees it when it unwinds.
 *
 * Commands run one at a time across all clients, as in QEMU: while one
 * client's input is handled (and its command perhaps waits in a nested
 * loop), other clients that become readable are parked ("deferred") and
 * resumed when it is done, so no command ever starts in the middle of
 * another one (a blockdev-del of a node still being opened, say).
 *
 * Memory is bounded per client: the parser bounds one message (64 MiB), we
 * stop reading a client whose replies pile up (it then blocks on send), and
 * a client that lets more than 64 MiB of output (events) pile up is dropped.
 * And across clients (docs/limits.md): at most max-clients clients per
 * monitor (64 by default; more are accepted and closed at once), and when
 * all clients' queued output together would pass OUT_TOTAL_MAX, or their
 * unfinished input IN_TOTAL_MAX, the client that does not read (or
 * the one sending) is dropped, so N clients cannot cost N times 64 MiB.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "aio/aio.h"
#include "aio/listener.h"
#include "config.h"
#include "qmp/chardev.h"
#include "qmp/json-out.h"
#include "qmp/json-stream.h"
#include "qmp/qmp.h"
#include "util/alloc.h"
#include "util/event.h"
#include "util/log.h"

#define READ_CHUNK        65536
#define READ_BUDGET       (1u << 20)  /* per callback, for fairness */
#define OUT_PAUSE_INPUT   (1u << 20)  /* stop reading above this backlog */
#define OUT_DROP_CLIENT   (64u << 20) /* drop a client above this backlog */
/* Daemon-wide: queued output of all clients, and unfinished input. */
#define OUT_TOTAL_MAX     (128u << 20)
#define IN_TOTAL_MAX      (128u << 20)
#define MAX_CLIENTS_DEFAULT 64

typedef struct Monitor Monitor;

typedef struct MonClient {
    Monitor *mon;           /* NULL once the monitor is gone */
    int rfd, wfd;           /* the socket twice, or stdio's dups */
    bool stdio;             /* read(2)/write(2): not a socket */
    JsonStream *js;
    bool negotiated;
    bool oob;               /* 'oob' capability enabled */
    int busy;               /* > 0 while its input is being handled */
    bool dead;              /* to be freed when no longer busy */
    bool eof;
    bool deferred;          /* readable while another client was handled */
    char *out;              /* bytes [out_off, out_len) wait to be sent */
    size_t out_len, out_off, out_cap;
    struct MonClient *next;
} MonClient;

struct Monitor {
    Chardev *chr;
    int listen_fd;            /* -1: stdio or null, nothing to accept */
    AioListener *listener;    /* backs off on EMFILE/ENFILE */
    bool pretty;
    int64_t max_clients;
    unsigned nclients;
    bool refusing;            /* at max_clients: logged once per episode */
    MonClient *clients;
    Monitor *next;
};

/* Every monitor of the process (main thread only). */
static Monitor *monitors;
/* > 0 while some client's input is being handled (main thread only). */
static int handling_input;
/* Queued output and unfinished input of every client, in bytes (main
 * thread only). */
static size_t out_total, in_total;
/* Set by the daemon while it starts up or shuts down: no command starts. */
static bool commands_held;
/* Re-checks parked clients while a nested wait keeps commands from starting. */
static AioTimer *resume_timer;
#define RESUME_RECHECK_NS (2 * 1000 * 1000)

static void client_read(void *opaque);
static void client_write(void *opaque);

/* ---- output ---- */

static size_t out_pending(const MonClient *c)
{
    return c->out_len - c->out_off;
}

static void client_update_handlers(MonClient *c)
{
    if (c->dead) {
        return;
    }
    AioHandler *rd = (c->busy || c->eof || c->deferred ||
                      out_pending(c) > OUT_PAUSE_INPUT) ? NULL : client_read;
    AioHandler *wr = out_pending(c) ? client_write : NULL;
    Error *err = NULL;
    bool ok;

    if (c->rfd == c->wfd) {
        ok = aio_set_fd_handler(aio_main_context(), c->rfd, rd, wr, c, &err);
    } else {
        ok = aio_set_fd_handler(aio_main_context(), c->rfd, rd, NULL, c,
                                &err) &&
             aio_set_fd_handler(aio_main_context(), c->wfd, NULL, wr, c,
                                &err);
    }
    if (!ok) {
        error_report_err(err, "monitor client");
        c->dead = true;
    }
}

/* Stops watching c's fds. */
static void client_unwatch(MonClient *c)
{
    Error *err = NULL;

    if (!aio_set_fd_handler(aio_main_context(), c->rfd, NULL, NULL, NULL,
                            &err) ||
        (c->wfd != c->rfd &&
         !aio_set_fd_handler(aio_main_context(), c->wfd, NULL, NULL, NULL,
                             &err))) {
        error_report_err(err, "monitor client");
    }
}

static void client_destroy(MonClient *c)
{
    client_unwatch(c);
    if (c->mon) {
        chardev_client_gone(c->mon->chr);
        for (MonClient **p = &c->mon->clients; *p; p = &(*p)->next) {
            if (*p == c) {
                *p = c->next;
                break;
            }
        }
        if (--c->mon->nclients < c->mon->max_clients) {
            c->mon->refusing = false;
        }
    }
    out_total -= out_pending(c);
    in_total -= json_stream_pending(c->js);
    if (close(c->rfd) < 0 || (c->wfd != c->rfd && close(c->wfd) < 0)) {
        log_debug("monitor client close: %s", strerror(errno));
    }
    json_stream_free(c->js);
    free(c->out);
    free(c);
}

/* Marks c for closing; frees it now unless a handler is still using it. */
static void client_kill(MonClient *c)
{
    if (!c->dead) {
        c->dead = true;
        client_unwatch(c);
    }
    if (!c->busy) {
        client_destroy(c);
    }
}

/* Writes what the socket takes now.  Returns false if the peer is gone. */
static bool client_flush(MonClient *c)
{
    while (out_pending(c)) {
        ssize_t n = c->stdio
            ? write(c->wfd, c->out + c->out_off, out_pending(c))
            : send(c->wfd, c->out + c->out_off, out_pending(c),
                   MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            log_debug("monitor client write: %s", strerror(errno));
            return false;
        }
        c->out_off += n;
        out_total -= n;
    }
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
        if (c->out_cap > 65536) {   /* give back a burst's buffer */
            free(c->out);
            c->out = NULL;
            c->out_cap = 0;
        }
    }
    return true;
}

static void client_write(void *opaque)
{
    MonClient *c = opaque;
    if (c->dead) {
        return;
    }
    /* A client that half-closed is done once its replies are out. */
    if (!client_flush(c) || (c->eof && !out_pending(c))) {
        client_kill(c);
        return;
    }
    client_update_handlers(c);
}

static void client_send(MonClient *c, json_t *msg)
{
    if (c->dead) {
        return;
    }
    size_t flags = JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER;
    if (c->mon && c->mon->pretty) {
        flags |= JSON_INDENT(4);
    }
    size_t len;
    char *text = NULL;
    if (!(flags & JSON_MAX_INDENT)) {
        text = json_out_dumps(msg, &len);
    }
    if (!text) {
        text = json_dumps(msg, flags);
        len = text ? strlen(text) : 0;
    }
    if (!text) {
        log_error("monitor: cannot serialise a message");
        return;
    }
    if (flags & JSON_MAX_INDENT) {
        /* Pretty output breaks lines with CRLF as QEMU's does; serialised
         * strings hold no raw newline, so every '\n' is a line break. */
        size_t nl = 0;
        for (const char *p = text; *p; p++) {
            nl += *p == '\n';
        }
        char *crlf = bj_malloc(strlen(text) + nl + 1);
        char *d = crlf;
        for (const char *p = text; *p; p++) {
            if (*p == '\n') {
                *d++ = '\r';
            }
            *d++ = *p;
        }
        *d = '\0';
        free(text);
        text = crlf;
        len = (size_t)(d - crlf);
    }
    if (out_pending(c) + len + 2 > OUT_DROP_CLIENT) {
        log_warn("monitor: dropping a client that does not read its "
                 "replies (%zu bytes pending)", out_pending(c));
        free(text);
        client_kill(c);
        return;
    }
    /* Over the daemon-wide budget, a client that is behind by more than
     * OUT_PAUSE_INPUT is dropped rather than queued for; one that keeps up
     * still gets its message, so the total may pass the budget by at most
     * OUT_PAUSE_INPUT plus one message per client. */
    if (out_total + len + 2 > OUT_TOTAL_MAX &&
        out_pending(c) > OUT_PAUSE_INPUT) {
        log_warn("monitor: dropping a client that does not read its "
                 "replies (%zu bytes pending, %zu for all clients)",
                 out_pending(c), out_total);
        free(text);
        client_kill(c);
        return;
    }
    if (c->out_off && c->out_len + len + 2 > c->out_cap) {
        memmove(c->out, c->out + c->out_off, out_pending(c));
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + len + 2 > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len + 2) {
            cap *= 2;
        }
        char *n = bj_realloc(c->out, cap);
        c->out = n;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, text, len);
    c->out_len += len;
    c->out[c->out_len++] = '\r';
    c->out[c->out_len++] = '\n';
    out_total += len + 2;
    free(text);
    if (!client_flush(c)) {
        client_kill(c);
        return;
    }
    client_update_handlers(c);
}

/* {"error": {"class", "desc"}} with the id (if any) first, as QEMU does. */
static void send_error(MonClient *c, json_t *id, const Error *err)
{
    json_t *msg = json_object();
    if (id) {
        json_object_set(msg, "id", id);
    }
    json_object_set_new(msg, "error",
                        json_pack("{s:s, s:s}", "class",
                                  error_class_name(err->cls), "desc",
                                  error_get_pretty(err)));
    client_send(c, msg);
    json_decref(msg);
}

static void send_return(MonClient *c, json_t *id, json_t *ret)
{
    json_t *msg = json_object();
    json_object_set_new(msg, "return", ret);
    if (id) {
        json_object_set(msg, "id", id);
    }
    client_send(c, msg);
    json_decref(msg);
}

/* ---- requests ---- */

static void handle_request(MonClient *c, json_t *req)
{
    Error *err = NULL;
    json_t *id = json_object_get(req, "id");
    bool is_oob = false;
    const char *name = qmp_check_request(req, c->oob, &is_oob, &err);
    if (!name) {
        send_error(c, id, err);
        error_free(err);
        return;
    }
    json_t *args = json_object_get(req, "arguments");

    if (!c->negotiated && strcmp(name, "qmp_capabilities") != 0) {
        error_set(&err, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "Expecting capabilities negotiation with "
                  "'qmp_capabilities'");
    } else if (c->negotiated && !strcmp(name, "qmp_capabilities")) {
        error_set(&err, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "Capabilities negotiation is already complete, command "
                  "ignored");
    } else if (is_oob) {
        /* No command of qemu-storage-daemon runs out of band. */
        if (qmp_find_command(name)) {
            error_setg(&err, "The command %s does not support OOB", name);
        } else {
            error_set(&err, ERROR_CLASS_COMMAND_NOT_FOUND,
                      "The command %s has not been found", name);
        }
    }
    if (err) {
        send_error(c, id, err);
        error_free(err);
        return;
    }

    json_t *ret = qmp_dispatch(name, args, &err);
    if (!ret) {
        send_error(c, id, err);
        error_free(err);
        return;
    }
    if (!strcmp(name, "qmp_capabilities")) {
        /* Arguments were checked by dispatch: enable is ["oob", ...]. */
        json_t *en = json_object_get(args, "enable");
        c->oob = json_array_size(en) > 0;
        c->negotiated = true;
    }
    send_return(c, id, ret);
}

/* JsonStream callback: one complete top-level value or a parse error. */
static void client_value(void *opaque, json_t *value, Error *err)
{
    MonClient *c = opaque;
    if (c->dead) {
        json_decref(value);
        error_free(err);
        return;
    }
    if (err) {
        send_error(c, NULL, err);
        error_free(err);
        return;
    }
    if (!json_is_object(value)) {
        Error *e = NULL;
        error_setg(&e, "QMP input must be a JSON object");
        send_error(c, NULL, e);
        error_free(e);
    } else {
        handle_request(c, value);
    }
    json_decref(value);
}

/*
 * Whether a command may start now.  Not while another command is being
 * handled, not while the daemon holds commands (start-up, shutdown), and not
 * from inside a nested wait of something else — a job's prepare draining a
 * node, say: a command run there (job-finalize on that very job) would
 * re-enter code in the middle of its work.
 */
static bool may_start_commands(void)
{
    return !handling_input && !commands_held &&
           aio_poll_depth(aio_main_context()) <= 1;
}

static void resume_deferred(void);

static void resume_timer_cb(void *opaque)
{
    if (commands_held) {
        return;                   /* monitor_hold_commands(false) resumes */
    }
    if (aio_poll_depth(aio_main_context()) > 1) {
        aio_timer_mod(resume_timer, clock_ns() + RESUME_RECHECK_NS);
        return;
    }
    resume_deferred();
}

static void arm_resume_timer(void)
{
    if (!resume_timer) {
        resume_timer = aio_timer_new(aio_main_context(), resume_timer_cb,
                                     NULL);
    }
    if (!aio_timer_pending(resume_timer)) {
        aio_timer_mod(resume_timer, clock_ns() + RESUME_RECHECK_NS);
    }
}

void monitor_hold_commands(bool hold)
{
    commands_held = hold;
    if (!hold) {
        resume_deferred();
    }
}

/* The input of clients parked during another client's commands. */
static void resume_deferred(void)
{
    for (Monitor *m = monitors; m; m = m->next) {
        for (MonClient *c = m->clients; c; c = c->next) {
            if (c->deferred) {
                c->deferred = false;
                client_update_handlers(c);
            }
        }
    }
}

static void client_read(void *opaque)
{
    MonClient *c = opaque;
    if (c->dead || c->busy) {
        return;
    }
    if (!may_start_commands()) {
        /* Reached from a nested loop inside another command or operation,
         * or while the daemon holds commands: park until that is over. */
        c->deferred = true;
        client_update_handlers(c);
        if (!handling_input) {
            arm_resume_timer();   /* nobody else will resume us */
        }
        return;
    }
    handling_input++;
    c->busy++;
    client_update_handlers(c);   /* no reads while commands may nest */

    char buf[READ_CHUNK];
    size_t total = 0;
    while (!c->dead && total < READ_BUDGET &&
           out_pending(c) <= OUT_PAUSE_INPUT) {
        ssize_t n = c->stdio ? read(c->rfd, buf, sizeof(buf))
                             : recv(c->rfd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                log_debug("monitor client read: %s", strerror(errno));
                c->eof = true;
            }
            break;
        }
        if (n == 0) {
            c->eof = true;
            break;
        }
        total += n;
        size_t before = json_stream_pending(c->js);
        json_stream_feed(c->js, buf, n);
        in_total += json_stream_pending(c->js);
        in_total -= before;
        /* Many clients each half-way through a 64 MiB value would add
         * up: past the daemon-wide budget, the one sending is dropped. */
        if (in_total > IN_TOTAL_MAX && json_stream_pending(c->js) > 0) {
            log_warn("monitor: dropping a client with %zu bytes of "
                     "unfinished input (%zu for all clients)",
                     json_stream_pending(c->js), in_total);
            client_kill(c);     /* freed below, once no longer busy */
            break;
        }
    }

    c->busy--;
    handling_input--;
    /* After EOF, replies still queued go out before we close (a client
     * may shut down its sending side and wait for them). */
    if (c->dead || (c->eof && !out_pending(c))) {
        client_kill(c);
    } else {
        client_update_handlers(c);
    }
    resume_deferred();
}

/* ---- accepting ---- */

static void send_greeting(MonClient *c)
{
    json_t *msg = json_pack("{s:{s:o, s:[s]}}", "QMP", "version",
                            qmp_version_info(), "capabilities", "oob");
    client_send(c, msg);
    json_decref(msg);
}

static void client_new(Monitor *mon, int rfd, int wfd, bool stdio)
{
    MonClient *c = bj_calloc(1, sizeof(*c));

    c->mon = mon;
    c->rfd = rfd;
    c->wfd = wfd;
    c->stdio = stdio;
    c->js = json_stream_new(client_value, c);
    c->next = mon->clients;
    mon->clients = c;
    mon->nclients++;
    chardev_client_connected(mon->chr, stdio ? -1 : rfd);
    client_update_handlers(c);
    send_greeting(c);
}

/* A duplicate of fd, non-blocking and close-on-exec, or -1. */
static int dup_nonblocking(int fd, Error **errp)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int flags = d < 0 ? -1 : fcntl(d, F_GETFL);

    if (flags < 0 || fcntl(d, F_SETFL, flags | O_NONBLOCK) < 0) {
        error_setg_errno(errp, errno, "stdio monitor: cannot use fd %d", fd);
        if (d >= 0) {
            close(d);
        }
        return -1;
    }
    return d;
}

/*
 * The stdio monitor's one client, on duplicates of stdin and stdout (so
 * closing it never closes fds 0 and 1).  They are made non-blocking, which
 * their other users share: acceptable for a daemon whose stdio is QMP.
 */
static bool monitor_start_stdio(Monitor *mon, Error **errp)
{
    int rfd = dup_nonblocking(STDIN_FILENO, errp);
    int wfd = rfd < 0 ? -1 : dup_nonblocking(STDOUT_FILENO, errp);
    Error *err = NULL;

    if (wfd < 0) {
        if (rfd >= 0) {
            close(rfd);
        }
        return false;
    }
    /* epoll refuses regular files and /dev/null: say so up front */
    if (!aio_set_fd_handler(aio_main_context(), rfd, client_read, NULL, NULL,
                            &err) ||
        !aio_set_fd_handler(aio_main_context(), rfd, NULL, NULL, NULL,
                            &err)) {
        error_setg(errp, "stdio monitor: stdin cannot be watched (%s): use "
                   "a pipe or a terminal", error_get_pretty(err));
        error_free(err);
        close(rfd);
        close(wfd);
        return false;
    }
    client_new(mon, rfd, wfd, true);
    return true;
}

static void monitor_accept(AioListener *l, void *opaque)
{
    Monitor *mon = opaque;
    int fd;

    while ((fd = aio_listener_accept(l)) >= 0) {
        if (mon->nclients >= mon->max_clients) {
            /* Closed at once, so the client sees it rather than hanging in
             * the backlog; logged once until a slot frees up. */
            if (!mon->refusing) {
                log_warn("monitor: %lld clients connected (max-clients), "
                         "refusing new ones", (long long)mon->max_clients);
                mon->refusing = true;
            }
            close(fd);
            continue;
        }
        client_new(mon, fd, fd, false);
    }
}

/* ---- events ---- */

/* An event whose data does not match its row of qmp_events would tell
 * clients something the schema does not: said loudly, sent anyway. */
static void check_event(const char *name, json_t *data)
{
    const QmpEvent *ev = qmp_find_event(name);
    Error *err = NULL;

    if (!ev) {
        log_error("event %s has no row in the event table", name);
        return;
    }
    json_t *d = data ? json_incref(data) : json_object();
    if (!argspec_check(d, ev->data, NULL, false, &err)) {
        log_error("event %s: %s", name, error_get_pretty(err));
        error_free(err);
    }
    json_decref(d);
}

static void monitor_event(const char *name, json_t *data, void *opaque)
{
    struct timespec ts;
    json_t *stamp;

    check_event(name, data);
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0) {
        stamp = json_pack("{s:I, s:I}", "seconds", (json_int_t)ts.tv_sec,
                          "microseconds", (json_int_t)(ts.tv_nsec / 1000));
    } else {
        stamp = json_pack("{s:i, s:i}", "seconds", -1, "microseconds", -1);
    }
    json_t *msg = json_pack("{s:o, s:s}", "timestamp", stamp, "event", name);
    if (data) {
        json_object_set(msg, "data", data);
    }
    for (Monitor *m = monitors; m; m = m->next) {
        MonClient *next;
        for (MonClient *c = m->clients; c; c = next) {
            next = c->next;   /* client_send may free c */
            if (c->negotiated && !c->dead) {
                client_send(c, msg);
            }
        }
    }
    json_decref(msg);
}

/* ---- setup and teardown ---- */

static const char *const monitor_modes[] = { "control", "readline", NULL };

static const ArgSpec monitor_args[] = {
    { .name = "chardev", .type = ARG_STR },
    { .name = "mode", .type = ARG_ENUM, .optional = true,
      .enum_values = monitor_modes },
    { .name = "pretty", .type = ARG_BOOL, .optional = true },
    { .name = "id", .type = ARG_STR, .optional = true },
    /* blockjobd's own: qemu has no bound on QMP clients */
    { .name = "max-clients", .type = ARG_UINT, .optional = true },
    { .name = NULL },
};

bool monitor_add(json_t *opts, Error **errp)
{
    if (!argspec_check(opts, monitor_args, NULL, true, errp)) {
        return false;
    }
    const char *id = arg_str(opts, "chardev", NULL);
    Chardev *chr = chardev_find(id);
    if (!chr) {
        error_setg(errp, "chardev \"%s\" not found", id);
        return false;
    }
    int64_t max_clients = arg_int(opts, "max-clients", MAX_CLIENTS_DEFAULT);
    if (max_clients < 1) {
        error_setg(errp, "Parameter 'max-clients' expects a value of at "
                   "least 1");
        return false;
    }
    if (arg_enum(opts, "mode", monitor_modes, 0) != 0) {
        error_setg(errp, "Only QMP is supported");
        return false;
    }
    if (!chardev_claim(chr)) {
        error_setg(errp, "Device '%s' is in use", id);
        return false;
    }
    Monitor *mon = bj_calloc(1, sizeof(*mon));
    mon->chr = chr;
    mon->listen_fd = chardev_listen_fd(chr);
    mon->pretty = arg_bool(opts, "pretty", false);
    mon->max_clients = max_clients;
    if (mon->listen_fd >= 0) {
        mon->listener = aio_listener_new(aio_main_context(), mon->listen_fd,
                                         "monitor", monitor_accept, mon,
                                         errp);
        if (!mon->listener) {
            free(mon);
            return false;
        }
    }
    mon->next = monitors;
    monitors = mon;
    event_set_sink(monitor_event, NULL);
    if (chardev_kind(chr) == CHARDEV_STDIO && !monitor_start_stdio(mon, errp)) {
        return false;      /* the monitor stays, clientless, until cleanup */
    }
    return true;
}

/* Last chance for queued replies (the one to `quit`) to leave. */
static void flush_before_close(MonClient *c)
{
    for (int tries = 0; tries < 10 && out_pending(c) && !c->dead; tries++) {
        struct pollfd p = { .fd = c->wfd, .events = POLLOUT };
        if (poll(&p, 1, 10) < 0 && errno != EINTR) {
            break;
        }
        if (!client_flush(c)) {
            break;
        }
    }
}

void monitor_cleanup_all(void)
{
    event_set_sink(NULL, NULL);
    if (resume_timer) {
        aio_timer_free(resume_timer);
        resume_timer = NULL;
    }
    while (monitors) {
        Monitor *m = monitors;
        monitors = m->next;
        while (m->clients) {
            MonClient *c = m->clients;
            m->clients = c->next;
            c->mon = NULL;   /* already unlinked */
            flush_before_close(c);
            client_kill(c);  /* a busy client is freed when it unwinds */
        }
        aio_listener_free(m->listener);
        free(m);
    }
    chardev_cleanup_all();
}
