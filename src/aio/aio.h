/*
 * AioContext: one event loop per thread (the main loop, and one per
 * iothread), on epoll.  Everything that belongs to a context — fd handlers,
 * bottom halves, timers, coroutines, the io_uring ring — is touched only from
 * that context's thread.  The thread-safe entry points are marked below:
 * aio_notify, aio_bh_schedule, aio_bh_schedule_oneshot, aio_co_schedule.
 *
 * Timers live in a binary heap: arming, firing and deleting are O(log n).
 */
#ifndef BJ_AIO_AIO_H
#define BJ_AIO_AIO_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

typedef struct AioContext AioContext;
typedef struct AioBH AioBH;
typedef struct AioTimer AioTimer;
typedef void AioHandler(void *opaque);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t clock_ns(void);

AioContext *aio_context_new(const char *name, Error **errp);
/* Must be called from the owning thread with nothing registered left, or it
 * logs what leaked (fd handlers, BHs, timers) and aborts. */
void aio_context_free(AioContext *ctx);
const char *aio_context_name(AioContext *ctx);

/* The main loop's context (created by aio_main_init, main thread only). */
bool aio_main_init(Error **errp);
AioContext *aio_main_context(void);
/* The context the calling thread runs (NULL in a thread that runs none). */
AioContext *aio_current_context(void);
/* Binds the calling thread to ctx (done by iothreads when they start). */
void aio_context_set_current(AioContext *ctx);
bool aio_context_in_home_thread(AioContext *ctx);

/*
 * fd handlers.  Both callbacks NULL removes the fd.  Safe to call from
 * inside a dispatched handler, including on the fd being dispatched: removal
 * only marks the handler deleted and it is reaped after dispatch.
 */
bool aio_set_fd_handler(AioContext *ctx, int fd, AioHandler *io_read,
                        AioHandler *io_write, void *opaque, Error **errp);

/*
 * Bottom halves: run once from the loop after being scheduled.  A reusable
 * BH may be scheduled again after it ran; scheduling an already scheduled
 * BH does nothing.
 */
AioBH *aio_bh_new(AioContext *ctx, AioHandler *cb, void *opaque);
void aio_bh_schedule(AioBH *bh);               /* thread-safe */
void aio_bh_cancel(AioBH *bh);                 /* owning thread */
void aio_bh_delete(AioBH *bh);                 /* owning thread; cancels */
/* Allocates, schedules, runs once and frees.  Thread-safe. */
void aio_bh_schedule_oneshot(AioContext *ctx, AioHandler *cb, void *opaque);

/* Timers on clock_ns(); expire_ns is absolute. */
AioTimer *aio_timer_new(AioContext *ctx, AioHandler *cb, void *opaque);
void aio_timer_mod(AioTimer *t, int64_t expire_ns);
void aio_timer_del(AioTimer *t);
bool aio_timer_pending(const AioTimer *t);
void aio_timer_free(AioTimer *t);             /* deletes if pending */

/* Wakes a blocking aio_poll of ctx from any thread (eventfd). */
void aio_notify(AioContext *ctx);

/*
 * Runs ready handlers, expired timers and scheduled BHs once.  With blocking,
 * waits until at least one of them is ready.  Returns true if any callback
 * ran (progress).  Must be called from ctx's home thread.
 */
bool aio_poll(AioContext *ctx, bool blocking);

/*
 * How many aio_poll calls of ctx are on the calling (home) thread's stack:
 * 0 outside the loop, 1 in a callback of the top-level loop, more inside a
 * nested wait (AIO_WAIT_WHILE in a callback).  The monitor starts commands
 * only at depth <= 1, so no command runs in the middle of another operation.
 */
unsigned aio_poll_depth(AioContext *ctx);

/*
 * Runs the calling thread's context until cond is false.  Code in another
 * thread that changes what cond reads must then call aio_wait_kick() (or
 * aio_notify on the waiter's context) so the waiter re-evaluates it.
 * Not for use inside a coroutine (yield there instead).
 */
#define AIO_WAIT_WHILE(ctx, cond)                 \
    do {                                          \
        while (cond) {                            \
            aio_poll((ctx), true);                \
        }                                         \
    } while (0)

/* Wakes the main loop so that an AIO_WAIT_WHILE there re-checks. */
void aio_wait_kick(void);

/* Private per-context state of other aio/ modules (the io_uring ring). */
typedef enum AioSlot {
    AIO_SLOT_IO_URING = 0,
    AIO_SLOT_MAX,
} AioSlot;
void *aio_context_slot(AioContext *ctx, AioSlot slot);
void aio_context_set_slot(AioContext *ctx, AioSlot slot, void *value);

#endif
