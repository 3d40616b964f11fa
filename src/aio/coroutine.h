/*
 * Coroutines: ucontext for the first entry, then sigsetjmp/siglongjmp (no
 * signal mask save) for every switch.  Stacks come from a per-thread pool and
 * have a PROT_NONE guard page below them.  Stack switches are annotated for
 * AddressSanitizer (__sanitizer_{start,finish}_switch_fiber) and registered
 * with valgrind (VALGRIND_STACK_REGISTER) when those are present.
 *
 * A function that may yield is marked coroutine_fn (or named co_*) and is
 * only called from a coroutine.  A coroutine belongs to the context it was
 * first entered in; aio_co_wake brings it back there from any thread.
 */
#ifndef BJ_AIO_COROUTINE_H
#define BJ_AIO_COROUTINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "aio/aio.h"
#include "util/list.h"

/*
 * Markers, checked by scripts/check-coroutine-fn.py (meson test
 * 'coroutine-fn'): a coroutine_fn may yield and is called only from
 * coroutine_fn code or through an entry bridge (a CoroutineEntry
 * parameter: coroutine_create, aio_co_run_wait).  A coroutine_mixed_fn
 * runs in its caller's context and yields only when that is a coroutine
 * (it tests coroutine_self(), or a callback it was given yields): anyone
 * may call it.
 */
#define coroutine_fn
#define coroutine_mixed_fn

typedef struct Coroutine Coroutine;
typedef void coroutine_fn CoroutineEntry(void *opaque);

/* Default usable stack size (guard page not included). */
#define COROUTINE_STACK_SIZE (1 << 20)

Coroutine *coroutine_create(CoroutineEntry *entry, void *opaque);
/* Switches into co now, in the calling thread, until it yields or ends; a
 * coroutine that returns is freed (its stack goes back to the pool).  Entering
 * a coroutine that is already running or entered is a bug and aborts. */
void coroutine_enter(Coroutine *co);
void coroutine_fn coroutine_yield(void);
Coroutine *coroutine_self(void);      /* NULL outside coroutines */
bool coroutine_in_coroutine(void);
AioContext *coroutine_context(Coroutine *co);
/* Whether co is scheduled to run (aio_co_schedule, or woken from another
 * coroutine) and has not been entered yet.  Thread-safe. */
bool coroutine_is_scheduled(Coroutine *co);
/* Gives a suspended coroutine a new home context: later wakes enter it
 * there.  Only from the thread of its old home, outside it, while it is
 * not scheduled (what it waits on moves along: an object changing
 * context, x-blockdev-set-iothread). */
void coroutine_set_context(Coroutine *co, AioContext *ctx);

/*
 * Makes co runnable again in its home context: entered directly when called
 * from that context's thread outside a coroutine; otherwise scheduled there
 * (after the current coroutine yields).  Thread-safe.
 */
void aio_co_wake(Coroutine *co);
/* Enters co in ctx: directly if ctx is the current thread's context and we
 * are not in a coroutine, else scheduled.  Thread-safe. */
void aio_co_enter(AioContext *ctx, Coroutine *co);
/* Always schedules co to run from ctx's loop.  Thread-safe. */
void aio_co_schedule(AioContext *ctx, Coroutine *co);

/*
 * Runs fn(opaque) in a new coroutine entered in ctx and runs the calling
 * thread's loop until fn returned: the bridge from non-coroutine code (the
 * monitor, close, timers) into coroutine_fn code.  Called from a coroutine
 * that already runs in ctx, fn just runs there.
 */
void aio_co_run_wait(AioContext *ctx, CoroutineEntry *fn, void *opaque);

/*
 * The same for a plain function: fn(opaque) runs in a bottom half of ctx,
 * outside any coroutine (so the coroutines it wakes there are entered at
 * once and run until they yield, in order), and the calling thread's loop
 * runs until it returned.  Not from a coroutine; from ctx's own thread fn
 * just runs.
 */
void aio_bh_run_wait(AioContext *ctx, void (*fn)(void *opaque),
                     void *opaque);

/* The same in two halves, for a caller that waits its own way (a test with
 * a deadline): start, then run the loop until aio_co_run_done. */
typedef struct CoRunWait {
    CoroutineEntry *entry;
    void *opaque;
    AioContext *waiter;
    atomic_bool done;
} CoRunWait;
void aio_co_run_start(CoRunWait *w, AioContext *ctx, CoroutineEntry *fn,
                      void *opaque);
bool aio_co_run_done(CoRunWait *w);

/* Statistics, for tests: stacks currently pooled in this thread. */
unsigned coroutine_pool_size(void);

/* ---- synchronisation (all same-context) ---- */

/* FIFO wait queue. */
typedef struct CoQueue {
    ListHead waiters;
} CoQueue;

typedef struct CoMutex CoMutex;

void co_queue_init(CoQueue *q);
/* Waits until woken.  With mutex, unlocks it while waiting and relocks. */
void coroutine_fn co_queue_wait(CoQueue *q, CoMutex *mutex);
/* Wakes the first waiter; returns whether there was one. */
bool co_queue_next(CoQueue *q);
void co_queue_restart_all(CoQueue *q);
bool co_queue_empty(const CoQueue *q);

struct CoMutex {
    bool locked;
    Coroutine *holder;
    CoQueue waiters;
};

void co_mutex_init(CoMutex *m);
void coroutine_fn co_mutex_lock(CoMutex *m);
void coroutine_fn co_mutex_unlock(CoMutex *m);

/*
 * Sleep on the current context's timers.  A CoSleep lets someone else cut the
 * sleep short (set-speed waking a throttled job).
 */
typedef struct CoSleep {
    Coroutine *co;
} CoSleep;

void coroutine_fn co_sleep_ns(int64_t ns);
void coroutine_fn co_sleep_ns_wakeable(CoSleep *w, int64_t ns);
/* Wakes the coroutine sleeping on w now, if any. Same context only. */
void co_sleep_wake(CoSleep *w);

#endif
