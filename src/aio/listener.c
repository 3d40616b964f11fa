/*
 * Listening sockets with accept back-off (see listener.h).
 *
 * States: watching (delay_ns == 0), or paused with the timer armed.  A
 * failure while watching starts an episode (one log line); a failure right
 * after a pause doubles the delay; a successful accept, or finding the
 * queue empty, ends the episode.
 */
#include "aio/listener.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "util/alloc.h"
#include "util/log.h"

struct AioListener {
    AioContext *ctx;
    int fd;
    const char *what;
    AioListenerFn *on_ready;
    void *opaque;
    AioTimer *timer;
    int64_t delay_ns;          /* current back-off; 0 outside an episode */
    unsigned long refused;     /* failed accepts in this episode */
};

static void readable(void *opaque)
{
    AioListener *l = opaque;

    l->on_ready(l, l->opaque);
}

static bool watch(AioListener *l, bool on)
{
    Error *err = NULL;

    if (!aio_set_fd_handler(l->ctx, l->fd, on ? readable : NULL, NULL,
                            on ? l : NULL, &err)) {
        error_report_err(err, l->what);
        return false;
    }
    return true;
}

static void resume_cb(void *opaque)
{
    AioListener *l = opaque;

    watch(l, true);
}

AioListener *aio_listener_new(AioContext *ctx, int fd, const char *what,
                              AioListenerFn *on_ready, void *opaque,
                              Error **errp)
{
    AioListener *l = bj_calloc(1, sizeof(*l));

    l->ctx = ctx;
    l->fd = fd;
    l->what = what;
    l->on_ready = on_ready;
    l->opaque = opaque;
    if (!aio_set_fd_handler(ctx, fd, readable, NULL, l, errp)) {
        free(l);
        return NULL;
    }
    l->timer = aio_timer_new(ctx, resume_cb, l);
    return l;
}

int aio_listener_fd(const AioListener *l)
{
    return l->fd;
}

static void end_episode(AioListener *l)
{
    if (l->delay_ns) {
        log_info("%s: accepting clients again (%lu accept calls failed "
                 "meanwhile)", l->what, l->refused);
        l->delay_ns = 0;
        l->refused = 0;
    }
}

bool aio_listener_accept_failed(AioListener *l, int err)
{
    if (err == EAGAIN || err == EWOULDBLOCK) {
        end_episode(l);
        return true;
    }
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
        /* ECONNABORTED, EINTR, EPROTO...: that client only. */
        if (err != EINTR && err != ECONNABORTED) {
            log_debug("%s: accept failed: %s", l->what, strerror(err));
        }
        return false;
    }
    l->refused++;
    if (l->delay_ns == 0) {
        l->delay_ns = ACCEPT_BACKOFF_MIN_NS;
        log_warn("%s: accept failed: %s; new clients wait in the backlog, "
                 "retrying every %lld ms up to %lld ms until it succeeds",
                 l->what, strerror(err),
                 (long long)(ACCEPT_BACKOFF_MIN_NS / 1000000),
                 (long long)(ACCEPT_BACKOFF_MAX_NS / 1000000));
    } else if (l->delay_ns < ACCEPT_BACKOFF_MAX_NS) {
        l->delay_ns *= 2;
        if (l->delay_ns > ACCEPT_BACKOFF_MAX_NS) {
            l->delay_ns = ACCEPT_BACKOFF_MAX_NS;
        }
    }
    if (watch(l, false)) {
        aio_timer_mod(l->timer, clock_ns() + l->delay_ns);
    }
    return true;
}

void aio_listener_accepted(AioListener *l)
{
    end_episode(l);
}

int aio_listener_accept(AioListener *l)
{
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            aio_listener_accepted(l);
            return fd;
        }
        if (aio_listener_accept_failed(l, errno)) {
            return -1;
        }
    }
}

void aio_listener_free(AioListener *l)
{
    if (!l) {
        return;
    }
    aio_timer_free(l->timer);
    watch(l, false);
    free(l);
}
