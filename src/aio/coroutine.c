/*
 * Coroutines on ucontext + sigsetjmp/siglongjmp.
 *
 * A coroutine object owns its stack for life and is pooled whole: the first
 * switch onto a fresh stack goes through makecontext/setcontext into
 * co_trampoline, which saves a jump buffer and hops straight back; from then
 * on every switch (enter, yield, terminate) is sigsetjmp + siglongjmp with
 * no signal mask save, i.e. no system call.  The trampoline loops forever
 * (run entry, switch out as terminated), so a pooled coroutine is reused
 * without another makecontext.
 *
 *   thread stack (leader) --enter--> co A --enter--> co B
 *                         <--yield--      <--yield--
 *
 * Each coroutine records its caller while running; yield and termination
 * switch back to it.  A non-NULL caller therefore means "running", which is
 * how entering a running coroutine is caught.
 *
 * Stacks are mmap'd with a PROT_NONE guard page below them (stacks grow
 * down), and a thread keeps up to CO_POOL_MAX finished coroutines; the rest
 * are unmapped at once and the pool is unmapped when the thread exits.
 */
#include "config.h"

#include "aio/coroutine.h"
#include "aio/aio-internal.h"
#include "util/alloc.h"
#include "util/log.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define CO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CO_ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define CO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CO_TSAN 1
#endif
#endif

#ifdef CO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef CO_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#ifdef HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

/* Finished coroutines a thread keeps for reuse (each holds a 1 MiB stack
 * of address space, only its touched pages in memory). */
#define CO_POOL_MAX 128

enum {
    CO_ACTION_ENTER = 1,        /* values delivered by siglongjmp: never 0 */
    CO_ACTION_YIELD,
    CO_ACTION_TERMINATE,
};

struct Coroutine {
    CoroutineEntry *entry;
    void *opaque;
    sigjmp_buf env;             /* where this coroutine resumes */
    Coroutine *caller;          /* who entered it; non-NULL while running */
    AioContext *ctx;            /* home context (atomic accesses) */
    _Atomic bool scheduled;     /* queued in a context's schedule list */
    AioContext *resched_ctx;    /* scheduled itself: queue after it yields */
    ListHead link;              /* in the pool or a schedule list */

    void *map;                  /* mmap base: guard page, then stack */
    size_t map_size;
    void *stack;                /* lowest usable byte */
    size_t stack_size;
#ifdef HAVE_VALGRIND_H
    unsigned valgrind_id;
#endif
#ifdef CO_ASAN
    void *asan_fake_stack;
#endif
#ifdef CO_TSAN
    void *tsan_fiber;
#endif
};

typedef struct CoThread {
    bool initialised;
    Coroutine leader;           /* the thread's own stack */
    Coroutine *current;         /* &leader outside coroutines */
    Coroutine *switch_from;     /* who made the latest switch (ASan) */
    ListHead pool;
    unsigned pool_size;
} CoThread;

static __thread CoThread co_thread;
static pthread_key_t pool_key;
static pthread_once_t pool_key_once = PTHREAD_ONCE_INIT;

static void coroutine_free(Coroutine *co);
static void co_sched_publish(AioContext *ctx, Coroutine *co);

static void pool_thread_exit(void *opaque)
{
    CoThread *t = opaque;
    Coroutine *co, *tmp;
    list_for_each_entry_safe(co, tmp, &t->pool, link) {
        list_del(&co->link);
        coroutine_free(co);
    }
    t->pool_size = 0;
}

static void pool_key_create(void)
{
    if (pthread_key_create(&pool_key, pool_thread_exit) != 0) {
        log_error("cannot create the coroutine pool key");
        abort();
    }
}

/*
 * noinline and the empty asm: the address of a thread-local must be looked
 * up again after every switch, because a coroutine can yield in one thread
 * and be resumed in another (aio_co_schedule to another context).  Without
 * them the compiler may compute &co_thread once per function.
 */
static __attribute__((noinline)) CoThread *co_tls(void)
{
    CoThread *t = &co_thread;
    __asm__ volatile("" : "+r"(t) : : "memory");
    if (!t->initialised) {
        t->current = &t->leader;
#ifdef CO_TSAN
        t->leader.tsan_fiber = __tsan_get_current_fiber();
#endif
        list_init(&t->pool);
        int ret = pthread_once(&pool_key_once, pool_key_create);
        if (ret == 0) {
            ret = pthread_setspecific(pool_key, t);
        }
        if (ret != 0) {
            log_error("cannot set up the coroutine pool: %s", strerror(ret));
            abort();
        }
        t->initialised = true;
    }
    return t;
}

/* ---- sanitizer annotations ---- */

/* Called just before jumping from `from` to `to` (after saving from's
 * jump buffer). */
static void switch_begin(CoThread *t, Coroutine *from, Coroutine *to,
                         int action)
{
    t->switch_from = from;
#ifdef CO_TSAN
    /* Switches are synchronous hand-offs: let them order memory. */
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
#ifdef CO_ASAN
    /* A terminating coroutine's frames are gone: let ASan drop its fake
     * stack instead of saving it. */
    void **save = &from->asan_fake_stack;
    if (action == CO_ACTION_TERMINATE) {
        from->asan_fake_stack = NULL;
        save = NULL;
    }
    __sanitizer_start_switch_fiber(save, to->stack, to->stack_size);
#else
    (void)to;
    (void)action;
#endif
}

/* Called first thing after `self` was switched to. */
static void switch_end(Coroutine *self, bool first)
{
#ifdef CO_ASAN
    const void *bottom = NULL;
    size_t size = 0;
    __sanitizer_finish_switch_fiber(first ? NULL : self->asan_fake_stack,
                                    &bottom, &size);
    /* The thread's own stack bounds are only known from the first switch
     * away from it. */
    CoThread *t = co_tls();
    if (t->switch_from == &t->leader && !t->leader.stack) {
        t->leader.stack = (void *)bottom;
        t->leader.stack_size = size;
    }
#else
    (void)self;
    (void)first;
#endif
}

/*
 * Saves the running state in from->env and resumes `to`.  Returns, in
 * `from`, the action of whoever switched back to it.
 */
static int co_switch(Coroutine *from, Coroutine *to, int action)
{
    int ret = sigsetjmp(from->env, 0);
    if (ret == 0) {
        switch_begin(co_tls(), from, to, action);
        siglongjmp(to->env, action);
    }
    switch_end(from, false);
    return ret;
}

/* ---- creation, stacks and the pool ---- */

static void co_trampoline(int lo, int hi)
{
    uintptr_t p = ((uintptr_t)(unsigned)hi << 32) | (uintptr_t)(unsigned)lo;
    Coroutine *co = (Coroutine *)p;
    CoThread *t = co_tls();
    Coroutine *creator = t->switch_from;

    switch_end(co, true);
    /* Save a resume point here and go straight back to coroutine_create:
     * later entries jump in with siglongjmp. */
    if (!sigsetjmp(co->env, 0)) {
        switch_begin(t, co, creator, CO_ACTION_YIELD);
        siglongjmp(creator->env, 1);
    }
    switch_end(co, false);

    for (;;) {
        co->entry(co->opaque);
        /* Terminate: back to the caller, which recycles this coroutine.
         * When it is reused, the switch returns here and runs entry anew. */
        CoThread *tt = co_tls();
        Coroutine *caller = co->caller;
        co->caller = NULL;
        tt->current = caller;
        co_switch(co, caller, CO_ACTION_TERMINATE);
    }
}

static Coroutine *coroutine_alloc(CoThread *t)
{
    Coroutine *co = bj_calloc(1, sizeof(*co));
    list_init(&co->link);
    long page = sysconf(_SC_PAGESIZE);
    size_t guard = page > 0 ? (size_t)page : 4096;
    co->stack_size = COROUTINE_STACK_SIZE;
    co->map_size = guard + co->stack_size;
    /* NORESERVE: thousands of mostly untouched 1 MiB stacks must not count
     * against the commit limit. */
    co->map = mmap(NULL, co->map_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                   -1, 0);
    if (co->map == MAP_FAILED) {
        log_error("cannot allocate a coroutine stack: %s", strerror(errno));
        abort();
    }
    if (mprotect(co->map, guard, PROT_NONE) < 0) {
        log_error("cannot protect a coroutine guard page: %s",
                  strerror(errno));
        abort();
    }
    co->stack = (char *)co->map + guard;
#ifdef CO_TSAN
    co->tsan_fiber = __tsan_create_fiber(0);
#endif
#ifdef HAVE_VALGRIND_H
    co->valgrind_id = VALGRIND_STACK_REGISTER(co->stack,
                                              (char *)co->stack +
                                              co->stack_size);
#endif

    ucontext_t uc;
    if (getcontext(&uc) < 0) {
        log_error("getcontext failed: %s", strerror(errno));
        abort();
    }
    uc.uc_link = NULL;
    uc.uc_stack.ss_sp = co->stack;
    uc.uc_stack.ss_size = co->stack_size;
    uc.uc_stack.ss_flags = 0;
    uintptr_t p = (uintptr_t)co;
    makecontext(&uc, (void (*)(void))co_trampoline, 2,
                (int)(unsigned)(p & 0xffffffffu), (int)(unsigned)(p >> 32));

    /* One round trip onto the new stack; co_trampoline jumps back here. */
    Coroutine *self = t->current;
    if (!sigsetjmp(self->env, 0)) {
        switch_begin(t, self, co, CO_ACTION_ENTER);
        setcontext(&uc);
        log_error("setcontext failed: %s", strerror(errno));
        abort();
    }
    switch_end(co_tls()->current, false);
    return co;
}

static void coroutine_free(Coroutine *co)
{
#ifdef CO_TSAN
    __tsan_destroy_fiber(co->tsan_fiber);
#endif
#ifdef HAVE_VALGRIND_H
    VALGRIND_STACK_DEREGISTER(co->valgrind_id);
#endif
#ifdef CO_ASAN
    /* Frames left on the pooled stack keep their redzones poisoned; clear
     * them, or a later mapping at this address would trip over them. */
    ASAN_UNPOISON_MEMORY_REGION(co->stack, co->stack_size);
#endif
    if (munmap(co->map, co->map_size) < 0) {
        log_error("cannot unmap a coroutine stack: %s", strerror(errno));
        abort();
    }
    free(co);
}

static void coroutine_release(CoThread *t, Coroutine *co)
{
    if (t->pool_size < CO_POOL_MAX) {
        list_add_head(&t->pool, &co->link);
        t->pool_size++;
    } else {
        coroutine_free(co);
    }
}

Coroutine *coroutine_create(CoroutineEntry *entry, void *opaque)
{
    CoThread *t = co_tls();
    Coroutine *co;
    if (!list_empty(&t->pool)) {
        co = list_first_entry(&t->pool, Coroutine, link);
        list_del(&co->link);
        t->pool_size--;
    } else {
        co = coroutine_alloc(t);
    }
    co->entry = entry;
    co->opaque = opaque;
    co->caller = NULL;
    co->resched_ctx = NULL;
    __atomic_store_n(&co->ctx, NULL, __ATOMIC_RELAXED);
    atomic_store(&co->scheduled, false);
    return co;
}

unsigned coroutine_pool_size(void)
{
    return co_tls()->pool_size;
}

/* ---- enter, yield ---- */

void coroutine_enter(Coroutine *co)
{
    CoThread *t = co_tls();
    Coroutine *self = t->current;

    if (co->caller || co == self) {
        log_error("coroutine_enter: coroutine %p is already running; "
                  "entering it again would corrupt its stack", (void *)co);
        abort();
    }
    if (atomic_load(&co->scheduled)) {
        AioContext *ctx = __atomic_load_n(&co->ctx, __ATOMIC_ACQUIRE);
        log_error("coroutine_enter: coroutine %p is already scheduled to run "
                  "in context '%s'; entering it as well would corrupt its "
                  "stack", (void *)co, ctx ? aio_context_name(ctx) : "?");
        abort();
    }
    if (!__atomic_load_n(&co->ctx, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&co->ctx, aio_current_context(), __ATOMIC_RELEASE);
    }
    co->caller = self;
    t->current = co;
    int action = co_switch(self, co, CO_ACTION_ENTER);
    /* co yielded or ended; either way we run again in this same thread,
     * and co's stack is no longer in use. */
    if (co->resched_ctx) {
        if (action == CO_ACTION_TERMINATE) {
            log_error("coroutine %p ended while scheduled to run again in "
                      "context '%s'", (void *)co,
                      aio_context_name(co->resched_ctx));
            abort();
        }
        AioContext *ctx = co->resched_ctx;
        co->resched_ctx = NULL;
        co_sched_publish(ctx, co);
    } else if (action == CO_ACTION_TERMINATE) {
        coroutine_release(co_tls(), co);
    }
}

void coroutine_fn coroutine_yield(void)
{
    CoThread *t = co_tls();
    Coroutine *self = t->current;
    Coroutine *to = self->caller;
    if (!to) {
        log_error("coroutine_yield called outside a coroutine");
        abort();
    }
    self->caller = NULL;
    t->current = to;
    co_switch(self, to, CO_ACTION_YIELD);
}

Coroutine *coroutine_self(void)
{
    CoThread *t = co_tls();
    return t->current == &t->leader ? NULL : t->current;
}

bool coroutine_in_coroutine(void)
{
    return coroutine_self() != NULL;
}

AioContext *coroutine_context(Coroutine *co)
{
    return __atomic_load_n(&co->ctx, __ATOMIC_ACQUIRE);
}

bool coroutine_is_scheduled(Coroutine *co)
{
    return atomic_load(&co->scheduled) || co->resched_ctx;
}

void coroutine_set_context(Coroutine *co, AioContext *ctx)
{
    assert(co != coroutine_self() && !co->caller);
    assert(!coroutine_is_scheduled(co));
    __atomic_store_n(&co->ctx, ctx, __ATOMIC_RELEASE);
}

/* ---- waking across threads ---- */

struct CoSchedState {
    AioContext *ctx;
    pthread_mutex_t lock;       /* protects list */
    ListHead list;              /* coroutines to enter, FIFO */
    AioBH *bh;                  /* drains list in ctx's thread */
};

/* Moves all of src to the tail of dst. */
static void list_splice_tail(ListHead *dst, ListHead *src)
{
    if (list_empty(src)) {
        return;
    }
    ListHead *first = src->next, *last = src->prev;
    first->prev = dst->prev;
    dst->prev->next = first;
    last->next = dst;
    dst->prev = last;
    list_init(src);
}

static void co_sched_bh(void *opaque)
{
    CoSchedState *s = opaque;
    ListHead batch;
    list_init(&batch);
    pthread_mutex_lock(&s->lock);
    list_splice_tail(&batch, &s->list);
    pthread_mutex_unlock(&s->lock);

    /* Coroutines scheduled while these run (one moving itself back here)
     * land in s->list and wait for the next run of the BH. */
    while (!list_empty(&batch)) {
        Coroutine *co = list_first_entry(&batch, Coroutine, link);
        list_del(&co->link);
        atomic_store(&co->scheduled, false);
        coroutine_enter(co);
    }
}

CoSchedState *coroutine_sched_state_new(AioContext *ctx)
{
    CoSchedState *s = bj_calloc(1, sizeof(*s));
    s->ctx = ctx;
    int ret = pthread_mutex_init(&s->lock, NULL);
    if (ret) {
        log_error("cannot create a mutex: %s", strerror(ret));
        abort();
    }
    list_init(&s->list);
    s->bh = aio_bh_new(ctx, co_sched_bh, s);
    return s;
}

void coroutine_sched_state_free(CoSchedState *s)
{
    if (!s) {
        return;
    }
    pthread_mutex_lock(&s->lock);
    unsigned n = 0;
    Coroutine *co;
    list_for_each_entry(co, &s->list, link) {
        n++;
    }
    pthread_mutex_unlock(&s->lock);
    if (n) {
        log_error("context '%s' freed with %u coroutine(s) still scheduled",
                  aio_context_name(s->ctx), n);
        abort();
    }
    aio_bh_delete(s->bh);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void aio_co_schedule(AioContext *ctx, Coroutine *co)
{
    if (atomic_exchange(&co->scheduled, true)) {
        AioContext *old = __atomic_load_n(&co->ctx, __ATOMIC_ACQUIRE);
        log_error("aio_co_schedule: coroutine %p is already scheduled to run "
                  "in context '%s'", (void *)co,
                  old ? aio_context_name(old) : "?");
        abort();
    }
    /* From now on co belongs to ctx: later wakes go there. */
    __atomic_store_n(&co->ctx, ctx, __ATOMIC_RELEASE);
    if (co == coroutine_self()) {
        /*
         * A coroutine scheduling itself (moving to another context) is
         * still running on its stack: published now, another thread could
         * enter it before it has yielded.  coroutine_enter publishes it
         * once it has switched away.
         */
        co->resched_ctx = ctx;
        return;
    }
    co_sched_publish(ctx, co);
}

static void co_sched_publish(AioContext *ctx, Coroutine *co)
{
    CoSchedState *s = aio_context_co_sched(ctx);
    pthread_mutex_lock(&s->lock);
    list_add_tail(&s->list, &co->link);
    pthread_mutex_unlock(&s->lock);
    aio_bh_schedule(s->bh);
}

void aio_co_enter(AioContext *ctx, Coroutine *co)
{
    if (aio_current_context() == ctx && !coroutine_in_coroutine()) {
        __atomic_store_n(&co->ctx, ctx, __ATOMIC_RELEASE);
        coroutine_enter(co);
    } else {
        aio_co_schedule(ctx, co);
    }
}

void aio_co_wake(Coroutine *co)
{
    AioContext *ctx = __atomic_load_n(&co->ctx, __ATOMIC_ACQUIRE);
    if (!ctx) {
        ctx = aio_current_context();
    }
    if (!ctx) {
        log_error("aio_co_wake: coroutine %p has no home context",
                  (void *)co);
        abort();
    }
    aio_co_enter(ctx, co);
}
