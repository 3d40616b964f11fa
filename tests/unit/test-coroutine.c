/*
 * Coroutines: interleavings (written out as the expected sequence), nesting,
 * thousands alive at once, the stack pool, the guard page, misuse that must
 * abort, CoQueue/CoMutex/co_sleep, and waking across threads (iothreads).
 */
#include <stdint.h>

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#include "testutil.h"

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "aio/iothread.h"
#include "test-wait.h"

#define MS 1000000LL
#define DEADLINE_NS (30 * 1000 * MS)

static bool under_valgrind(void)
{
#ifdef HAVE_VALGRIND_H
    return RUNNING_ON_VALGRIND;
#else
    return false;
#endif
}

/* The sequence every test writes its steps into. */
static char seq[512];

static void step(const char *s)
{
    assert_true(strlen(seq) + strlen(s) < sizeof(seq));
    strcat(seq, s);
}

static int setup_main(void **state)
{
    Error *err = NULL;
    seq[0] = '\0';
    if (!aio_main_init(&err)) {
        error_report_err(err, NULL);
        return -1;
    }
    return 0;
}

static int teardown_main(void **state)
{
    AioContext *ctx = aio_main_context();
    while (aio_poll(ctx, false)) {
    }
    aio_context_free(ctx);
    aio_context_set_current(NULL);
    return 0;
}

static void poll_while_set(AioContext *ctx, _Atomic int *running)
{
    int64_t end = clock_ns() + DEADLINE_NS;
    while (atomic_load(running)) {
        assert_true(clock_ns() < end);
        aio_poll(ctx, true);
    }
}

/* Schedules the current coroutine in its context and yields: it comes
 * back from the loop, after everything already queued there. */
static void coroutine_fn co_yield_to_loop(void)
{
    Coroutine *self = coroutine_self();
    aio_co_schedule(coroutine_context(self), self);
    coroutine_yield();
}

/* ---- basics ---- */

static void coroutine_fn co_two_steps(void *opaque)
{
    const char *name = opaque;
    char s[8];
    snprintf(s, sizeof(s), "%s1 ", name);
    step(s);
    coroutine_yield();
    snprintf(s, sizeof(s), "%s2 ", name);
    step(s);
}

static void test_interleaving(void **state)
{
    Coroutine *a = coroutine_create(co_two_steps, "a");
    Coroutine *b = coroutine_create(co_two_steps, "b");
    step("m ");
    coroutine_enter(a);
    step("m ");
    coroutine_enter(b);
    step("m ");
    coroutine_enter(b);
    step("m ");
    coroutine_enter(a);
    step("m");
    assert_string_equal(seq, "m a1 m b1 m b2 m a2 m");
}

typedef struct Nest {
    Coroutine *inner;
} Nest;

static void coroutine_fn co_inner(void *opaque)
{
    step("i1 ");
    assert_true(coroutine_in_coroutine());
    coroutine_yield();              /* back to whoever entered it */
    step("i2 ");
    coroutine_yield();
    step("i3 ");
}

static void coroutine_fn co_outer(void *opaque)
{
    Nest *n = opaque;
    step("o1 ");
    coroutine_enter(n->inner);      /* nested: inner's caller is outer */
    step("o2 ");
    coroutine_enter(n->inner);
    step("o3 ");
    coroutine_yield();              /* back to the thread */
    step("o4 ");
}

static void test_nested(void **state)
{
    Nest n = { coroutine_create(co_inner, NULL) };
    Coroutine *outer = coroutine_create(co_outer, &n);
    assert_null(coroutine_self());
    assert_false(coroutine_in_coroutine());
    coroutine_enter(outer);
    step("m ");
    coroutine_enter(n.inner);       /* now entered from the thread */
    step("m ");
    coroutine_enter(outer);
    step("m");
    assert_string_equal(seq, "o1 i1 o2 i2 o3 m i3 m o4 m");
    assert_null(coroutine_self());
}

static void coroutine_fn co_self(void *opaque)
{
    *(Coroutine **)opaque = coroutine_self();
    assert_ptr_equal(coroutine_context(coroutine_self()),
                     aio_main_context());
}

static void test_self_and_context(void **state)
{
    Coroutine *seen = NULL;
    Coroutine *co = coroutine_create(co_self, &seen);
    coroutine_enter(co);
    assert_ptr_equal(seen, co);
}

/* ---- many coroutines, the pool ---- */

#ifdef __SANITIZE_THREAD__
#define MANY 500                /* TSan allocates megabytes per fiber */
#else
#define MANY 10000
#endif

typedef struct Many {
    int started, finished;
} Many;

static void coroutine_fn co_many(void *opaque)
{
    Many *m = opaque;
    m->started++;
    /* Touch some stack so each coroutine uses its own pages. */
    volatile char buf[2048];
    memset((char *)buf, m->started & 0xff, sizeof(buf));
    coroutine_yield();
    assert_int_equal(buf[100], buf[2000]);
    m->finished++;
}

static void test_ten_thousand_alive(void **state)
{
    static Coroutine *cos[MANY];
    Many m = { 0, 0 };
    for (int i = 0; i < MANY; i++) {
        cos[i] = coroutine_create(co_many, &m);
        coroutine_enter(cos[i]);
    }
    assert_int_equal(m.started, MANY);
    assert_int_equal(m.finished, 0);
    for (int i = MANY - 1; i >= 0; i--) {
        coroutine_enter(cos[i]);
    }
    assert_int_equal(m.finished, MANY);
    /* The pool kept a bounded number of stacks and freed the rest. */
    unsigned pooled = coroutine_pool_size();
    assert_true(pooled >= 64);
    assert_true(pooled <= 256);
}

static void coroutine_fn co_nothing(void *opaque)
{
}

static void coroutine_fn co_report_self(void *opaque)
{
    *(Coroutine **)opaque = coroutine_self();
}

static void test_pool_reuse(void **state)
{
    /* Fill the pool, then watch it shrink and grow by one. */
    Coroutine *warm[4];
    for (int i = 0; i < 4; i++) {
        warm[i] = coroutine_create(co_nothing, NULL);
    }
    for (int i = 0; i < 4; i++) {
        coroutine_enter(warm[i]);
    }
    unsigned before = coroutine_pool_size();
    assert_true(before >= 4);

    Coroutine *seen = NULL;
    Coroutine *co = coroutine_create(co_report_self, &seen);
    assert_int_equal(coroutine_pool_size(), before - 1);
    coroutine_enter(co);
    assert_ptr_equal(seen, co);
    assert_int_equal(coroutine_pool_size(), before);

    /* The most recently finished coroutine (and its stack) comes back. */
    Coroutine *again = coroutine_create(co_report_self, &seen);
    assert_ptr_equal(again, co);
    coroutine_enter(again);
    assert_int_equal(coroutine_pool_size(), before);
}

/* ---- misuse must abort, in a child ---- */

typedef void ChildFn(void);

static int run_in_child(ChildFn *fn)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* cmocka catches SIGSEGV and would carry on with the next test in
         * this child: let the signal kill it instead. */
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDERR_FILENO);
        }
        fn();
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void coroutine_fn co_enter_self(void *opaque)
{
    coroutine_enter(coroutine_self());
}

static void child_enter_running(void)
{
    coroutine_enter(coroutine_create(co_enter_self, NULL));
}

static void coroutine_fn co_yield_once(void *opaque)
{
    coroutine_yield();
}

static void child_enter_scheduled(void)
{
    Coroutine *co = coroutine_create(co_yield_once, NULL);
    coroutine_enter(co);
    aio_co_schedule(aio_main_context(), co);
    coroutine_enter(co);            /* scheduled and entered: a bug */
}

static void child_schedule_twice(void)
{
    Coroutine *co = coroutine_create(co_yield_once, NULL);
    coroutine_enter(co);
    aio_co_schedule(aio_main_context(), co);
    aio_co_schedule(aio_main_context(), co);
}

static void child_yield_outside(void)
{
    coroutine_yield();
}

static void coroutine_fn co_poll_inside(void *opaque)
{
    aio_poll(aio_main_context(), false);
}

static void child_poll_in_coroutine(void)
{
    coroutine_enter(coroutine_create(co_poll_inside, NULL));
}

static void coroutine_fn co_end_while_rescheduled(void *opaque)
{
    aio_co_schedule(aio_main_context(), coroutine_self());
}

static void child_end_while_rescheduled(void)
{
    coroutine_enter(coroutine_create(co_end_while_rescheduled, NULL));
}

static void test_misuse_aborts(void **state)
{
    ChildFn *fns[] = { child_enter_running, child_enter_scheduled,
                       child_schedule_twice, child_yield_outside,
                       child_poll_in_coroutine, child_end_while_rescheduled };
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
        int status = run_in_child(fns[i]);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGABRT);
    }
}

/* Bounded only by a limit far beyond the stack size, so the compiler does
 * not see an infinite recursion. */
static volatile int recurse_limit = 1 << 30;

static int recurse(int depth)
{
    volatile char buf[4096];
    buf[0] = (char)depth;
    if (depth >= recurse_limit) {
        return buf[0];
    }
    return recurse(depth + 1) + buf[0];
}

static void coroutine_fn co_overflow(void *opaque)
{
    recurse(0);
}

static void child_overflow(void)
{
    coroutine_enter(coroutine_create(co_overflow, NULL));
}

static void test_guard_page(void **state)
{
    if (under_valgrind()) {
        skip();                     /* valgrind reports the overflow itself */
    }
    int status = run_in_child(child_overflow);
    /* Plain builds die of SIGSEGV on the guard page; under ASan its
     * handler reports the stack overflow and exits non-zero. */
    if (WIFSIGNALED(status)) {
        assert_int_equal(WTERMSIG(status), SIGSEGV);
    } else {
        assert_true(WIFEXITED(status));
        assert_int_not_equal(WEXITSTATUS(status), 0);
    }
}

/* ---- CoQueue ---- */

typedef struct QueueTest {
    CoQueue q;
} QueueTest;

typedef struct Named {
    QueueTest *t;
    char name;
    int waits;
} Named;

static void coroutine_fn co_named_waiter(void *opaque)
{
    Named *n = opaque;
    for (int i = 0; i < n->waits; i++) {
        co_queue_wait(&n->t->q, NULL);
        char s[2] = { n->name, '\0' };
        step(s);
    }
}

static void test_co_queue_fifo(void **state)
{
    QueueTest t;
    co_queue_init(&t.q);
    assert_true(co_queue_empty(&t.q));
    assert_false(co_queue_next(&t.q));

    Named n[5];
    for (int i = 0; i < 5; i++) {
        n[i] = (Named){ &t, (char)('a' + i), 1 };
        coroutine_enter(coroutine_create(co_named_waiter, &n[i]));
    }
    assert_false(co_queue_empty(&t.q));
    /* Woken outside a coroutine, in our context: entered directly. */
    assert_true(co_queue_next(&t.q));
    assert_true(co_queue_next(&t.q));
    step("-");
    co_queue_restart_all(&t.q);
    assert_true(co_queue_empty(&t.q));
    assert_string_equal(seq, "ab-cde");

    /* A waiter that waits again is not woken twice by one restart_all. */
    seq[0] = '\0';
    Named again[2] = { { &t, 'x', 3 }, { &t, 'y', 3 } };
    coroutine_enter(coroutine_create(co_named_waiter, &again[0]));
    coroutine_enter(coroutine_create(co_named_waiter, &again[1]));
    co_queue_restart_all(&t.q);
    step("-");
    co_queue_restart_all(&t.q);
    step("-");
    co_queue_restart_all(&t.q);
    assert_string_equal(seq, "xy-xy-xy");
    assert_true(co_queue_empty(&t.q));
}

/* ---- CoMutex ---- */

typedef struct MutexTest {
    CoMutex m;
    _Atomic int running;
    int inside;
} MutexTest;

typedef struct Locker {
    MutexTest *t;
    char name;
} Locker;

static void coroutine_fn co_locker(void *opaque)
{
    Locker *l = opaque;
    MutexTest *t = l->t;
    for (int round = 0; round < 3; round++) {
        co_mutex_lock(&t->m);
        assert_int_equal(t->inside, 0);
        t->inside = 1;
        char s[2] = { l->name, '\0' };
        step(s);
        /* Yield while holding it: the others queue up behind us. */
        co_yield_to_loop();
        co_yield_to_loop();
        step(s);
        t->inside = 0;
        co_mutex_unlock(&t->m);
        co_yield_to_loop();
    }
    atomic_fetch_sub(&t->running, 1);
}

static void test_co_mutex_contention(void **state)
{
    MutexTest t = { .running = 3 };
    co_mutex_init(&t.m);
    Locker l[3] = { { &t, 'a' }, { &t, 'b' }, { &t, 'c' } };
    for (int i = 0; i < 3; i++) {
        aio_co_enter(aio_main_context(), coroutine_create(co_locker, &l[i]));
    }
    poll_while_set(aio_main_context(), &t.running);
    /* Critical sections never overlap (each letter appears twice in a row)
     * and the mutex goes to waiters in the order they queued. */
    assert_string_equal(seq, "aabbccaabbccaabbcc");
    assert_false(t.m.locked);
    assert_null(t.m.holder);
}

typedef struct CondTest {
    CoMutex m;
    CoQueue q;
    int value;
    _Atomic int running;
} CondTest;

static void coroutine_fn co_cond_waiter(void *opaque)
{
    CondTest *t = opaque;
    co_mutex_lock(&t->m);
    while (t->value == 0) {
        co_queue_wait(&t->q, &t->m);    /* unlocks while waiting */
    }
    assert_ptr_equal(t->m.holder, coroutine_self());
    step("w");
    co_mutex_unlock(&t->m);
    atomic_fetch_sub(&t->running, 1);
}

static void coroutine_fn co_cond_setter(void *opaque)
{
    CondTest *t = opaque;
    co_mutex_lock(&t->m);
    step("s");
    t->value = 1;
    co_queue_restart_all(&t->q);
    co_mutex_unlock(&t->m);
    atomic_fetch_sub(&t->running, 1);
}

static void test_co_queue_with_mutex(void **state)
{
    CondTest t = { .running = 3 };
    co_mutex_init(&t.m);
    co_queue_init(&t.q);
    AioContext *ctx = aio_main_context();
    aio_co_enter(ctx, coroutine_create(co_cond_waiter, &t));
    aio_co_enter(ctx, coroutine_create(co_cond_waiter, &t));
    aio_co_enter(ctx, coroutine_create(co_cond_setter, &t));
    poll_while_set(ctx, &t.running);
    assert_string_equal(seq, "sww");
}

/* ---- sleep ---- */

typedef struct Sleeper {
    int64_t ns;
    char name;
    _Atomic int *running;
} Sleeper;

static void coroutine_fn co_sleeper(void *opaque)
{
    Sleeper *s = opaque;
    int64_t start = clock_ns();
    co_sleep_ns(s->ns);
    assert_true(clock_ns() - start >= s->ns);
    char str[2] = { s->name, '\0' };
    step(str);
    atomic_fetch_sub(s->running, 1);
}

static void test_co_sleep_order(void **state)
{
    _Atomic int running = 4;
    /* 100 ms apart: the order holds unless entering the next sleeper
     * stalls for longer than that. */
    Sleeper s[4] = {
        { 300 * MS, 'd', &running }, { 100 * MS, 'b', &running },
        { 200 * MS, 'c', &running }, { 0, 'a', &running },
    };
    for (int i = 0; i < 4; i++) {
        aio_co_enter(aio_main_context(), coroutine_create(co_sleeper, &s[i]));
    }
    poll_while_set(aio_main_context(), &running);
    assert_string_equal(seq, "abcd");
}

typedef struct WakeableTest {
    CoSleep w;
    _Atomic int running;
    int64_t slept;
} WakeableTest;

static void coroutine_fn co_long_sleeper(void *opaque)
{
    WakeableTest *t = opaque;
    int64_t start = clock_ns();
    co_sleep_ns_wakeable(&t->w, 3600LL * 1000 * MS);   /* an hour */
    t->slept = clock_ns() - start;
    assert_null(t->w.co);
    atomic_store(&t->running, 0);
}

static void coroutine_fn co_waker(void *opaque)
{
    WakeableTest *t = opaque;
    co_sleep_ns(10 * MS);
    co_sleep_wake(&t->w);
    co_sleep_wake(&t->w);                       /* a second wake: no-op */
}

static void test_co_sleep_wakeable(void **state)
{
    AioContext *ctx = aio_main_context();
    /* Woken by another coroutine (scheduled wake) ... */
    WakeableTest t = { .running = 1 };
    aio_co_enter(ctx, coroutine_create(co_long_sleeper, &t));
    assert_non_null(t.w.co);
    aio_co_enter(ctx, coroutine_create(co_waker, &t));
    poll_while_set(ctx, &t.running);
    assert_true(t.slept < DEADLINE_NS);

    /* ... and from outside any coroutine (entered directly). */
    WakeableTest u = { .running = 1 };
    aio_co_enter(ctx, coroutine_create(co_long_sleeper, &u));
    assert_non_null(u.w.co);
    co_sleep_wake(&u.w);
    assert_int_equal(atomic_load(&u.running), 0);
    co_sleep_wake(&u.w);
    /* Its timer was freed with the sleep: nothing left to fire. */
    while (aio_poll(ctx, false)) {
    }
}

/* ---- across threads ---- */

/*
 * glibc declares pthread_self() const, so the compiler may reuse its value
 * across a yield; after a coroutine changed threads that value is stale.
 * Code that may run in a migrating coroutine must look it up opaquely.
 */
static __attribute__((noinline)) pthread_t current_thread(void)
{
    pthread_t t = pthread_self();
    __asm__ volatile("" : : : "memory");
    return t;
}

typedef struct Cross {
    IOThread *io;
    Coroutine *co;
    pthread_t main_thread;
    pthread_t seen_in_iothread;
    _Atomic int running;
    int hops;
} Cross;

static void wake_from_iothread_bh(void *opaque)
{
    Cross *c = opaque;
    c->seen_in_iothread = pthread_self();
    /* We are in the iothread: the wake must be scheduled back home. */
    aio_co_wake(c->co);
}

static void coroutine_fn co_cross_wake(void *opaque)
{
    Cross *c = opaque;
    for (int i = 0; i < 20; i++) {
        aio_bh_schedule_oneshot(iothread_get_context(c->io),
                                wake_from_iothread_bh, c);
        coroutine_yield();
        assert_true(pthread_equal(current_thread(), c->main_thread));
        assert_ptr_equal(aio_current_context(), aio_main_context());
        c->hops++;
    }
    atomic_store(&c->running, 0);
}

static void test_co_wake_from_iothread(void **state)
{
    Error *err = NULL;
    Cross c = { .running = 1, .main_thread = pthread_self() };
    c.io = iothread_create("wake", &err);
    assert_null(err);
    c.co = coroutine_create(co_cross_wake, &c);
    aio_co_enter(aio_main_context(), c.co);
    poll_while_set(aio_main_context(), &c.running);
    assert_int_equal(c.hops, 20);
    assert_false(pthread_equal(c.seen_in_iothread, c.main_thread));
    iothread_destroy(c.io);
}

/* A coroutine that moves itself to an iothread and back, many times:
 * every thread-local lookup after a switch must see the new thread. */
static void coroutine_fn co_migrate(void *opaque)
{
    Cross *c = opaque;
    AioContext *home = aio_main_context();
    AioContext *io = iothread_get_context(c->io);
    for (int i = 0; i < 50; i++) {
        aio_co_schedule(io, coroutine_self());
        coroutine_yield();
        assert_ptr_equal(aio_current_context(), io);
        assert_ptr_equal(coroutine_context(coroutine_self()), io);
        assert_false(pthread_equal(current_thread(), c->main_thread));
        /* Use the iothread's own loop from here: a sleep on its timers. */
        co_sleep_ns(100 * 1000);
        aio_co_schedule(home, coroutine_self());
        coroutine_yield();
        assert_ptr_equal(aio_current_context(), home);
        assert_true(pthread_equal(current_thread(), c->main_thread));
        c->hops++;
    }
    atomic_store(&c->running, 0);
    aio_wait_kick();
}

static void test_co_migrate_between_threads(void **state)
{
    Error *err = NULL;
    Cross c = { .running = 1, .main_thread = pthread_self() };
    c.io = iothread_create("migrate", &err);
    assert_null(err);
    aio_co_enter(aio_main_context(), coroutine_create(co_migrate, &c));
    poll_while_set(aio_main_context(), &c.running);
    assert_int_equal(c.hops, 50);
    iothread_destroy(c.io);
}

typedef struct InThread {
    IOThread *io;
    pthread_t main_thread;
    _Atomic int done;
    bool ran_elsewhere;
    bool ctx_ok;
} InThread;

static void coroutine_fn co_in_iothread(void *opaque)
{
    InThread *t = opaque;
    t->ran_elsewhere = !pthread_equal(current_thread(), t->main_thread);
    t->ctx_ok = aio_current_context() == iothread_get_context(t->io) &&
                coroutine_context(coroutine_self()) ==
                iothread_get_context(t->io);
    co_sleep_ns(1000);          /* on the iothread's timers */
    atomic_store(&t->done, 1);
    aio_wait_kick();
    /* Ends in the iothread: its stack goes to that thread's pool, which
     * is unmapped when the thread exits. */
}

static void test_co_enter_in_iothread(void **state)
{
    Error *err = NULL;
    InThread t = { .main_thread = pthread_self() };
    t.io = iothread_create("enter", &err);
    assert_null(err);
    for (int i = 0; i < 10; i++) {
        atomic_store(&t.done, 0);
        /* Not our context: scheduled there, never entered here. */
        aio_co_enter(iothread_get_context(t.io),
                     coroutine_create(co_in_iothread, &t));
        TEST_WAIT_WHILE(aio_main_context(), !atomic_load(&t.done));
        assert_true(t.ran_elsewhere);
        assert_true(t.ctx_ok);
    }
    iothread_destroy(t.io);
}

/* Many coroutines bouncing wakeups off two iothreads at once: the wake
 * often arrives before the coroutine has even yielded. */
#define BOUNCERS 64
#define BOUNCES 100

typedef struct Bouncer {
    IOThread *io[2];
    Coroutine *co;
    int id;
    int hops;
    _Atomic int *running;
} Bouncer;

static void bounce_bh(void *opaque)
{
    Bouncer *b = opaque;
    aio_co_wake(b->co);
}

static void coroutine_fn co_bouncer(void *opaque)
{
    Bouncer *b = opaque;
    for (int i = 0; i < BOUNCES; i++) {
        aio_bh_schedule_oneshot(iothread_get_context(b->io[(b->id + i) & 1]),
                                bounce_bh, b);
        coroutine_yield();
        assert_ptr_equal(aio_current_context(), aio_main_context());
        b->hops++;
    }
    atomic_fetch_sub(b->running, 1);
}

static void test_co_wake_stress(void **state)
{
    Error *err = NULL;
    IOThread *io[2] = { iothread_create("b0", &err), NULL };
    assert_null(err);
    io[1] = iothread_create("b1", &err);
    assert_null(err);
    _Atomic int running = BOUNCERS;
    static Bouncer b[BOUNCERS];
    for (int i = 0; i < BOUNCERS; i++) {
        b[i] = (Bouncer){ { io[0], io[1] }, NULL, i, 0, &running };
        b[i].co = coroutine_create(co_bouncer, &b[i]);
    }
    for (int i = 0; i < BOUNCERS; i++) {
        aio_co_enter(aio_main_context(), b[i].co);
    }
    poll_while_set(aio_main_context(), &running);
    for (int i = 0; i < BOUNCERS; i++) {
        assert_int_equal(b[i].hops, BOUNCES);
    }
    iothread_destroy(io[0]);
    iothread_destroy(io[1]);
}

/* ---- iothreads ---- */

static void name_bh(void *opaque)
{
    char *buf = opaque;
    if (pthread_getname_np(pthread_self(), buf, 16) != 0) {
        strcpy(buf, "?");
    }
}

static void test_iothread_lifecycle(void **state)
{
    Error *err = NULL;
    IOThread *a = iothread_create("alpha", &err);
    assert_null(err);
    IOThread *b = iothread_create("a-rather-long-iothread-name", &err);
    assert_null(err);
    assert_ptr_equal(iothread_find("alpha"), a);
    assert_ptr_equal(iothread_find("a-rather-long-iothread-name"), b);
    assert_null(iothread_find("gamma"));
    assert_string_equal(iothread_id(a), "alpha");
    assert_non_null(iothread_get_context(a));
    assert_ptr_not_equal(iothread_get_context(a), iothread_get_context(b));
    assert_false(aio_context_in_home_thread(iothread_get_context(a)));

    assert_null(iothread_create("alpha", &err));
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err),
                        "attempt to add duplicate property 'alpha' to "
                        "object (type 'container')");
    error_free(err);
    err = NULL;

    /* The thread is named after its id (truncated to 15 characters). */
    static char name[2][16];
    aio_bh_schedule_oneshot(iothread_get_context(a), name_bh, name[0]);
    aio_bh_schedule_oneshot(iothread_get_context(b), name_bh, name[1]);
    iothread_destroy(a);            /* runs pending BHs before it stops */
    assert_string_equal(name[0], "iothread-alpha");
    assert_null(iothread_find("alpha"));
    iothread_destroy_all();
    assert_string_equal(name[1], "iothread-a-rath");
    assert_null(iothread_find("a-rather-long-iothread-name"));

    /* The id can be used again once destroyed. */
    a = iothread_create("alpha", &err);
    assert_null(err);
    iothread_destroy_all();
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_main, teardown_main)
    const struct CMUnitTest tests[] = {
        T(test_interleaving),
        T(test_nested),
        T(test_self_and_context),
        T(test_ten_thousand_alive),
        T(test_pool_reuse),
        T(test_misuse_aborts),
        T(test_guard_page),
        T(test_co_queue_fifo),
        T(test_co_mutex_contention),
        T(test_co_queue_with_mutex),
        T(test_co_sleep_order),
        T(test_co_sleep_wakeable),
        T(test_co_wake_from_iothread),
        T(test_co_migrate_between_threads),
        T(test_co_enter_in_iothread),
        T(test_co_wake_stress),
        T(test_iothread_lifecycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
