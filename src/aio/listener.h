/*
 * A listening socket in an AioContext, with back-off when accept(2) runs
 * out of descriptors or memory.
 *
 * A listening socket with a client waiting stays readable, so a handler
 * whose accept fails with EMFILE/ENFILE would be called again at once,
 * forever: 100 % CPU and a log line per call.  Instead the listener stops
 * watching the fd for a while (100 ms, doubling up to 1 s while the
 * shortage lasts), logs one line when the shortage starts, and resumes
 * watching when the delay is over.  Waiting clients stay in the kernel's
 * listen backlog meanwhile and get in once descriptors are free again.
 */
#ifndef BJ_AIO_LISTENER_H
#define BJ_AIO_LISTENER_H

#include <stdbool.h>

#include "aio/aio.h"

#define ACCEPT_BACKOFF_MIN_NS (100 * 1000 * 1000LL)
#define ACCEPT_BACKOFF_MAX_NS (1000 * 1000 * 1000LL)

typedef struct AioListener AioListener;
typedef void AioListenerFn(AioListener *l, void *opaque);

/*
 * Watches fd (listening, non-blocking; still owned by the caller) in ctx
 * and calls on_ready(l, opaque) when a client may be accepted.  `what` names
 * the server in log lines ("nbd", "monitor").
 */
AioListener *aio_listener_new(AioContext *ctx, int fd, const char *what,
                              AioListenerFn *on_ready, void *opaque,
                              Error **errp);
int aio_listener_fd(const AioListener *l);
/*
 * To be called by on_ready after a failed accept4 with its errno.  Returns
 * true when on_ready should stop accepting now: a resource shortage (the
 * watch is paused) or an empty queue.  Returns false for errors that
 * concern one client only (ECONNABORTED, EINTR...): accept the next one.
 */
bool aio_listener_accept_failed(AioListener *l, int err);
/* To be called by on_ready after a successful accept: ends a shortage. */
void aio_listener_accepted(AioListener *l);
/*
 * The two above around accept4 (non-blocking, close-on-exec), for an
 * on_ready that loops: the next client's fd, or -1 when on_ready should
 * return (no client left, or a shortage paused the watch).
 */
int aio_listener_accept(AioListener *l);
/* Stops watching (the fd stays open); NULL is ignored. */
void aio_listener_free(AioListener *l);

/*
 * A non-blocking, close-on-exec UNIX stream socket bound to path (not
 * listening yet), or -1 with errp set.  A socket file already at path is
 * probed with connect(2) first: one left by a process that died (the
 * connect is refused) is removed and replaced; one where a process still
 * accepts connections is left alone and the bind is refused with an error
 * naming the path, so a second daemon cannot orphan the first one's
 * clients.  A path that is not a socket is never removed (bind fails).
 */
int unix_socket_bind(const char *path, Error **errp);

/*
 * Non-blocking, close-on-exec TCP stream sockets bound (not listening yet)
 * to the addresses host:port resolves to, at most max of them, with
 * SO_REUSEADDR (and IPV6_V6ONLY, so that :: and 0.0.0.0 can both be
 * bound).  Stores them in fds and returns how many (>= 1), or -1 with errp
 * set when none could be bound.  An empty or NULL host is every address.
 */
int inet_socket_bind(const char *host, const char *port, int *fds, int max,
                     Error **errp);

#endif
