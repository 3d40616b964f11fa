/*
 * The one way for code outside coroutines to run a coroutine to its end:
 * create it, enter it in the context that owns what it touches, and run the
 * caller's own loop until it returned.  The coroutine may finish in another
 * thread (an iothread node's), so "done" is atomic and the waiter's loop is
 * notified after it is set.
 */
#include "aio/coroutine.h"

#include <assert.h>

static void coroutine_fn co_run_entry(void *opaque)
{
    CoRunWait *w = opaque;
    AioContext *waiter = w->waiter;

    w->entry(w->opaque);
    /* w lives on the waiter's stack: nothing touches it after this. */
    atomic_store(&w->done, true);
    aio_notify(waiter);
}

void aio_co_run_start(CoRunWait *w, AioContext *ctx, CoroutineEntry *fn,
                      void *opaque)
{
    assert(!coroutine_in_coroutine());
    w->entry = fn;
    w->opaque = opaque;
    w->waiter = aio_current_context();
    assert(w->waiter);
    atomic_init(&w->done, false);
    aio_co_enter(ctx, coroutine_create(co_run_entry, w));
}

bool aio_co_run_done(CoRunWait *w)
{
    return atomic_load(&w->done);
}

typedef struct BhRunWait {
    void (*fn)(void *opaque);
    void *opaque;
    AioContext *waiter;
    atomic_bool done;
} BhRunWait;

static void bh_run_entry(void *opaque)
{
    BhRunWait *w = opaque;
    AioContext *waiter = w->waiter;

    w->fn(w->opaque);
    /* w lives on the waiter's stack: nothing touches it after this. */
    atomic_store(&w->done, true);
    aio_notify(waiter);
}

void aio_bh_run_wait(AioContext *ctx, void (*fn)(void *opaque),
                     void *opaque)
{
    assert(!coroutine_in_coroutine());
    if (aio_current_context() == ctx) {
        fn(opaque);
        return;
    }
    BhRunWait w = { .fn = fn, .opaque = opaque,
                    .waiter = aio_current_context() };
    assert(w.waiter);
    atomic_init(&w.done, false);
    aio_bh_schedule_oneshot(ctx, bh_run_entry, &w);
    AIO_WAIT_WHILE(w.waiter, !atomic_load(&w.done));
}

void aio_co_run_wait(AioContext *ctx, CoroutineEntry *fn, void *opaque)
{
    CoRunWait w;

    if (coroutine_in_coroutine()) {
        /* Already a coroutine of ctx (a node closed by a failing open):
         * fn simply runs here. */
        assert(coroutine_context(coroutine_self()) == ctx);
        fn(opaque);
        return;
    }
    aio_co_run_start(&w, ctx, fn, opaque);
    AIO_WAIT_WHILE(w.waiter, !aio_co_run_done(&w));
}
