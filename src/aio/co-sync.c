/*
 * Coroutine synchronisation within one context: FIFO wait queues, a mutex
 * that hands itself to the longest waiter, and sleeps on the context's
 * timers.  No atomics: everything here runs in the context's thread.
 */
#include "aio/coroutine.h"
#include "util/log.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>

/* A waiter lives on the waiting coroutine's stack for as long as it waits;
 * whoever wakes it unlinks it first. */
typedef struct CoWaiter {
    ListHead link;
    Coroutine *co;
} CoWaiter;

static Coroutine *require_coroutine(const char *what)
{
    Coroutine *self = coroutine_self();
    if (!self) {
        log_error("%s called outside a coroutine", what);
        abort();
    }
    return self;
}

void co_queue_init(CoQueue *q)
{
    list_init(&q->waiters);
}

void coroutine_fn co_queue_wait(CoQueue *q, CoMutex *mutex)
{
    CoWaiter w = { .co = require_coroutine("co_queue_wait") };
    list_add_tail(&q->waiters, &w.link);
    if (mutex) {
        co_mutex_unlock(mutex);
    }
    coroutine_yield();
    assert(list_unlinked(&w.link));
    if (mutex) {
        co_mutex_lock(mutex);
    }
}

/* Unlinks the first waiter without waking it. */
static Coroutine *co_queue_pop(CoQueue *q)
{
    if (list_empty(&q->waiters)) {
        return NULL;
    }
    CoWaiter *w = list_first_entry(&q->waiters, CoWaiter, link);
    list_del(&w->link);
    return w->co;
}

bool co_queue_next(CoQueue *q)
{
    Coroutine *co = co_queue_pop(q);
    if (!co) {
        return false;
    }
    aio_co_wake(co);
    return true;
}

void co_queue_restart_all(CoQueue *q)
{
    /*
     * Wake only those waiting now: outside a coroutine aio_co_wake enters
     * directly, and a waiter that waits again on q must not be woken a
     * second time by this same call (that would loop forever).
     */
    ListHead batch = LIST_HEAD_INIT(batch);
    if (!list_empty(&q->waiters)) {
        batch.next = q->waiters.next;
        batch.prev = q->waiters.prev;
        batch.next->prev = &batch;
        batch.prev->next = &batch;
        list_init(&q->waiters);
    }
    while (!list_empty(&batch)) {
        CoWaiter *w = list_first_entry(&batch, CoWaiter, link);
        list_del(&w->link);
        aio_co_wake(w->co);
    }
}

bool co_queue_empty(const CoQueue *q)
{
    return list_empty(&q->waiters);
}

/* ---- mutex ---- */

void co_mutex_init(CoMutex *m)
{
    m->locked = false;
    m->holder = NULL;
    co_queue_init(&m->waiters);
}

void coroutine_fn co_mutex_lock(CoMutex *m)
{
    Coroutine *self = require_coroutine("co_mutex_lock");
    if (!m->locked) {
        m->locked = true;
        m->holder = self;
        return;
    }
    if (m->holder == self) {
        log_error("co_mutex_lock: coroutine %p already holds the mutex",
                  (void *)self);
        abort();
    }
    co_queue_wait(&m->waiters, NULL);
    /* Handed over by co_mutex_unlock: nobody could take it in between. */
    assert(m->locked && m->holder == self);
}

void coroutine_fn co_mutex_unlock(CoMutex *m)
{
    if (!m->locked || m->holder != coroutine_self()) {
        log_error("co_mutex_unlock: mutex not held by the calling coroutine");
        abort();
    }
    Coroutine *next = co_queue_pop(&m->waiters);
    if (next) {
        /* FIFO handoff: the longest waiter owns it before it even runs, so
         * a coroutine that comes later cannot overtake it. */
        m->holder = next;
        aio_co_wake(next);
    } else {
        m->locked = false;
        m->holder = NULL;
    }
}

/* ---- sleep ---- */

/* Both the timer and co_sleep_wake wake through w->co; whichever comes
 * first clears it, so the coroutine is woken exactly once. */
static void co_sleep_timer_cb(void *opaque)
{
    co_sleep_wake(opaque);
}

void co_sleep_wake(CoSleep *w)
{
    Coroutine *co = w->co;
    if (co) {
        w->co = NULL;
        aio_co_wake(co);
    }
}

void coroutine_fn co_sleep_ns_wakeable(CoSleep *w, int64_t ns)
{
    Coroutine *self = require_coroutine("co_sleep_ns");
    AioContext *ctx = coroutine_context(self);
    if (!ctx) {
        log_error("co_sleep_ns: coroutine %p has no context", (void *)self);
        abort();
    }
    AioTimer *t = aio_timer_new(ctx, co_sleep_timer_cb, w);
    int64_t now = clock_ns();
    int64_t expire = ns > INT64_MAX - now ? INT64_MAX : now + ns;
    w->co = self;
    aio_timer_mod(t, expire);
    coroutine_yield();
    assert(w->co == NULL);
    aio_timer_free(t);
}

void coroutine_fn co_sleep_ns(int64_t ns)
{
    CoSleep w = { .co = NULL };
    co_sleep_ns_wakeable(&w, ns);
}
