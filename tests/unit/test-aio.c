/*
 * Event loop: fd handlers (including removal during dispatch), bottom
 * halves (from other threads, one-shot, cancel, FIFO), timers (deadline
 * order, mod, del), aio_notify, AIO_WAIT_WHILE, and the leak check of
 * aio_context_free.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#include "aio/aio.h"

#define MS 1000000LL

/* Generous bound for "eventually" on a loaded machine. */
#define DEADLINE_NS (20 * 1000 * MS)

static AioContext *new_ctx(void)
{
    Error *err = NULL;
    AioContext *ctx = aio_context_new("test", &err);
    assert_null(err);
    assert_non_null(ctx);
    aio_context_set_current(ctx);
    return ctx;
}

static void free_ctx(AioContext *ctx)
{
    aio_context_free(ctx);
    aio_context_set_current(NULL);
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * MS };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* Polls until *flag is set, failing the test after DEADLINE_NS. */
static void poll_until(AioContext *ctx, _Atomic int *flag)
{
    int64_t end = clock_ns() + DEADLINE_NS;
    while (!atomic_load(flag)) {
        assert_true(clock_ns() < end);
        aio_poll(ctx, true);
    }
}

/* ---- fd handlers ---- */

typedef struct PipeState {
    AioContext *ctx;
    int fds[2];
    int reads;
    char last;
} PipeState;

static void make_pipe(PipeState *p, AioContext *ctx)
{
    memset(p, 0, sizeof(*p));
    p->ctx = ctx;
    assert_int_equal(pipe2(p->fds, O_NONBLOCK | O_CLOEXEC), 0);
}

static void close_pipe(PipeState *p)
{
    if (p->fds[0] >= 0) {
        close(p->fds[0]);
    }
    if (p->fds[1] >= 0) {
        close(p->fds[1]);
    }
}

static void pipe_put(PipeState *p, char c)
{
    assert_int_equal(write(p->fds[1], &c, 1), 1);
}

static void pipe_read_cb(void *opaque)
{
    PipeState *p = opaque;
    char c;
    if (read(p->fds[0], &c, 1) == 1) {
        p->last = c;
    }
    p->reads++;
}

static void test_fd_read(void **state)
{
    AioContext *ctx = new_ctx();
    PipeState p;
    make_pipe(&p, ctx);

    assert_true(aio_set_fd_handler(ctx, p.fds[0], pipe_read_cb, NULL, &p,
                                   NULL));
    /* Nothing ready: no progress, and it returns at once. */
    assert_false(aio_poll(ctx, false));
    assert_int_equal(p.reads, 0);

    pipe_put(&p, 'x');
    assert_true(aio_poll(ctx, true));
    assert_int_equal(p.reads, 1);
    assert_int_equal(p.last, 'x');
    assert_false(aio_poll(ctx, false));

    assert_true(aio_set_fd_handler(ctx, p.fds[0], NULL, NULL, NULL, NULL));
    pipe_put(&p, 'y');
    assert_false(aio_poll(ctx, false));
    assert_int_equal(p.reads, 1);
    /* Removing an fd that is not there is fine. */
    assert_true(aio_set_fd_handler(ctx, p.fds[0], NULL, NULL, NULL, NULL));

    close_pipe(&p);
    free_ctx(ctx);
}

typedef struct WriteState {
    AioContext *ctx;
    int fd;
    int writes;
} WriteState;

static void pipe_write_cb(void *opaque)
{
    WriteState *w = opaque;
    w->writes++;
    /* Writable once is enough: keep the fd but stop watching writes. */
    assert_true(aio_set_fd_handler(w->ctx, w->fd, pipe_read_cb, NULL, NULL,
                                   NULL));
}

static void test_fd_write_then_read_only(void **state)
{
    AioContext *ctx = new_ctx();
    PipeState p;
    make_pipe(&p, ctx);
    WriteState w = { ctx, p.fds[1], 0 };

    assert_true(aio_set_fd_handler(ctx, p.fds[1], NULL, pipe_write_cb, &w,
                                   NULL));
    assert_true(aio_poll(ctx, true));
    assert_int_equal(w.writes, 1);
    /* Only EPOLLIN is watched now, and nothing reads into a pipe's write
     * end. */
    assert_false(aio_poll(ctx, false));
    assert_int_equal(w.writes, 1);
    assert_true(aio_set_fd_handler(ctx, p.fds[1], NULL, NULL, NULL, NULL));

    close_pipe(&p);
    free_ctx(ctx);
}

static void test_fd_regular_file_refused(void **state)
{
    AioContext *ctx = new_ctx();
    char path[] = "/tmp/test-aio-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    Error *err = NULL;
    /* epoll cannot watch regular files: the error says so, nothing leaks. */
    assert_false(aio_set_fd_handler(ctx, fd, pipe_read_cb, NULL, NULL, &err));
    assert_non_null(err);
    assert_non_null(strstr(error_get_pretty(err), "cannot watch fd"));
    assert_non_null(strstr(error_get_pretty(err), "Operation not permitted"));
    error_free(err);
    close(fd);
    free_ctx(ctx);
}

/* Two readable pipes dispatched in one pass; whichever runs first removes
 * itself and the other, so exactly one callback runs. */
typedef struct Pair {
    AioContext *ctx;
    PipeState p[2];
    int calls;
} Pair;

static Pair *the_pair;

static void remove_both_cb(void *opaque)
{
    Pair *pair = the_pair;
    (void)opaque;
    pair->calls++;
    for (int i = 0; i < 2; i++) {
        assert_true(aio_set_fd_handler(pair->ctx, pair->p[i].fds[0], NULL,
                                       NULL, NULL, NULL));
    }
}

static void test_fd_remove_during_dispatch(void **state)
{
    AioContext *ctx = new_ctx();
    Pair pair = { .ctx = ctx };
    the_pair = &pair;
    for (int i = 0; i < 2; i++) {
        make_pipe(&pair.p[i], ctx);
        assert_true(aio_set_fd_handler(ctx, pair.p[i].fds[0], remove_both_cb,
                                       NULL, &pair.p[i], NULL));
        pipe_put(&pair.p[i], 'a');
    }
    assert_true(aio_poll(ctx, true));
    assert_int_equal(pair.calls, 1);
    /* Both are gone although both stay readable. */
    assert_false(aio_poll(ctx, false));
    assert_int_equal(pair.calls, 1);
    for (int i = 0; i < 2; i++) {
        close_pipe(&pair.p[i]);
    }
    free_ctx(ctx);
}

/* A handler that removes itself, closes its fd, and registers a new pipe
 * that gets the same fd number: the stale event of the old registration
 * must not reach the new handler. */
typedef struct Reuse {
    AioContext *ctx;
    PipeState old, fresh;
    int old_calls, fresh_calls;
} Reuse;

static void reuse_fresh_cb(void *opaque)
{
    Reuse *r = opaque;
    r->fresh_calls++;
    char c;
    assert_int_equal(read(r->fresh.fds[0], &c, 1), 1);
    assert_int_equal(c, 'n');
}

static void reuse_old_cb(void *opaque)
{
    Reuse *r = opaque;
    r->old_calls++;
    int fd = r->old.fds[0];
    assert_true(aio_set_fd_handler(r->ctx, fd, NULL, NULL, NULL, NULL));
    close(fd);
    r->old.fds[0] = -1;
    /* Lowest free fd number: the one just closed. */
    make_pipe(&r->fresh, r->ctx);
    assert_int_equal(r->fresh.fds[0], fd);
    assert_true(aio_set_fd_handler(r->ctx, r->fresh.fds[0], reuse_fresh_cb,
                                   NULL, r, NULL));
}

static void test_fd_remove_self_and_reuse_fd(void **state)
{
    AioContext *ctx = new_ctx();
    Reuse r = { .ctx = ctx };
    make_pipe(&r.old, ctx);
    assert_true(aio_set_fd_handler(ctx, r.old.fds[0], reuse_old_cb, NULL, &r,
                                   NULL));
    pipe_put(&r.old, 'o');
    assert_true(aio_poll(ctx, true));
    assert_int_equal(r.old_calls, 1);
    assert_int_equal(r.fresh_calls, 0);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(r.fresh_calls, 0);

    pipe_put(&r.fresh, 'n');
    assert_true(aio_poll(ctx, true));
    assert_int_equal(r.fresh_calls, 1);
    assert_int_equal(r.old_calls, 1);

    assert_true(aio_set_fd_handler(ctx, r.fresh.fds[0], NULL, NULL, NULL,
                                   NULL));
    close_pipe(&r.old);
    close_pipe(&r.fresh);
    free_ctx(ctx);
}

/* Hangup reaches the read callback, which then sees EOF. */
typedef struct Hup {
    int fd;
    int calls;
    ssize_t last;
} Hup;

static void hup_cb(void *opaque)
{
    Hup *h = opaque;
    char c;
    h->last = read(h->fd, &c, 1);
    h->calls++;
}

static void test_fd_hangup(void **state)
{
    AioContext *ctx = new_ctx();
    int fds[2];
    assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
    Hup h = { fds[0], 0, -2 };
    assert_true(aio_set_fd_handler(ctx, fds[0], hup_cb, NULL, &h, NULL));
    close(fds[1]);
    assert_true(aio_poll(ctx, true));
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.last, 0);
    assert_true(aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL));
    close(fds[0]);
    free_ctx(ctx);
}

/*
 * A handler that runs a nested aio_poll, in which another handler removes
 * both: the outer pass still holds both in its event array, so neither may
 * be freed before the outer pass ends (ASan checks the use after free).
 */
typedef struct NestedFd {
    AioContext *ctx;
    PipeState a, b;
    int a_calls, b_calls;
} NestedFd;

static NestedFd *nested_fd;

static void nested_b_cb(void *opaque)
{
    NestedFd *n = nested_fd;
    n->b_calls++;
    assert_true(aio_set_fd_handler(n->ctx, n->a.fds[0], NULL, NULL, NULL,
                                   NULL));
    assert_true(aio_set_fd_handler(n->ctx, n->b.fds[0], NULL, NULL, NULL,
                                   NULL));
}

static void nested_a_cb(void *opaque)
{
    NestedFd *n = nested_fd;
    char c;
    n->a_calls++;
    assert_int_equal(read(n->a.fds[0], &c, 1), 1);
    aio_poll(n->ctx, false);
}

static void test_fd_remove_in_nested_poll(void **state)
{
    AioContext *ctx = new_ctx();
    NestedFd n = { .ctx = ctx };
    nested_fd = &n;
    make_pipe(&n.a, ctx);
    make_pipe(&n.b, ctx);
    assert_true(aio_set_fd_handler(ctx, n.a.fds[0], nested_a_cb, NULL, NULL,
                                   NULL));
    assert_true(aio_set_fd_handler(ctx, n.b.fds[0], nested_b_cb, NULL, NULL,
                                   NULL));
    pipe_put(&n.a, 'a');
    pipe_put(&n.b, 'b');
    assert_true(aio_poll(ctx, true));
    assert_int_equal(n.b_calls, 1);
    assert_true(n.a_calls <= 1);
    /* Both gone, although b still has a byte to read. */
    assert_false(aio_poll(ctx, false));
    close_pipe(&n.a);
    close_pipe(&n.b);
    free_ctx(ctx);
}

/* ---- bottom halves ---- */

typedef struct Seq {
    char buf[64];
    size_t len;
} Seq;

static void seq_add(Seq *s, char c)
{
    assert_true(s->len + 1 < sizeof(s->buf));
    s->buf[s->len++] = c;
    s->buf[s->len] = '\0';
}

typedef struct Tag {
    Seq *seq;
    char c;
} Tag;

static void tag_cb(void *opaque)
{
    Tag *t = opaque;
    seq_add(t->seq, t->c);
}

static void test_bh_fifo_cancel_delete(void **state)
{
    AioContext *ctx = new_ctx();
    Seq seq = { { 0 }, 0 };
    Tag ta = { &seq, 'a' }, tb = { &seq, 'b' }, tc = { &seq, 'c' };
    AioBH *a = aio_bh_new(ctx, tag_cb, &ta);
    AioBH *b = aio_bh_new(ctx, tag_cb, &tb);
    AioBH *c = aio_bh_new(ctx, tag_cb, &tc);

    aio_bh_schedule(c);
    aio_bh_schedule(a);
    aio_bh_schedule(b);
    aio_bh_schedule(a);             /* already scheduled: no second run */
    assert_true(aio_poll(ctx, true));
    assert_string_equal(seq.buf, "cab");
    assert_false(aio_poll(ctx, false));

    /* Reusable: schedule again; cancel one before it runs. */
    aio_bh_schedule(a);
    aio_bh_schedule(b);
    aio_bh_cancel(a);
    aio_bh_cancel(a);               /* cancelling twice is harmless */
    assert_true(aio_poll(ctx, false));
    assert_string_equal(seq.buf, "cabb");

    /* Delete cancels. */
    aio_bh_schedule(c);
    aio_bh_delete(c);
    assert_false(aio_poll(ctx, false));
    assert_string_equal(seq.buf, "cabb");

    aio_bh_delete(a);
    aio_bh_delete(b);
    free_ctx(ctx);
}

typedef struct Oneshot {
    int runs;
} Oneshot;

static void oneshot_cb(void *opaque)
{
    ((Oneshot *)opaque)->runs++;
}

static void test_bh_oneshot(void **state)
{
    AioContext *ctx = new_ctx();
    Oneshot o = { 0 };
    aio_bh_schedule_oneshot(ctx, oneshot_cb, &o);
    aio_bh_schedule_oneshot(ctx, oneshot_cb, &o);
    assert_true(aio_poll(ctx, true));
    assert_int_equal(o.runs, 2);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(o.runs, 2);
    /* The context is empty again: freeing it must not report a leak. */
    free_ctx(ctx);
}

typedef struct SelfResched {
    AioBH *bh;
    int runs;
} SelfResched;

static void self_resched_cb(void *opaque)
{
    SelfResched *s = opaque;
    s->runs++;
    aio_bh_schedule(s->bh);
}

static void test_bh_reschedule_self(void **state)
{
    AioContext *ctx = new_ctx();
    SelfResched s = { NULL, 0 };
    s.bh = aio_bh_new(ctx, self_resched_cb, &s);
    aio_bh_schedule(s.bh);
    /* One pass runs it once even though it keeps rescheduling itself. */
    assert_true(aio_poll(ctx, false));
    assert_int_equal(s.runs, 1);
    assert_true(aio_poll(ctx, true));
    assert_int_equal(s.runs, 2);
    aio_bh_delete(s.bh);
    assert_false(aio_poll(ctx, false));
    free_ctx(ctx);
}

/* A BH that waits (nested aio_poll) for a BH scheduled after it in the
 * same pass: the nested poll must run it. */
/* BH callbacks deleting themselves, and cancelling or deleting another
 * BH that is due later in the same pass. */
typedef struct BhKill {
    AioBH *self, *victim_cancel, *victim_delete;
    Seq *seq;
} BhKill;

static void bh_kill_cb(void *opaque)
{
    BhKill *k = opaque;
    seq_add(k->seq, 'k');
    aio_bh_cancel(k->victim_cancel);
    aio_bh_delete(k->victim_delete);
    aio_bh_delete(k->self);
}

static void test_bh_delete_during_pass(void **state)
{
    AioContext *ctx = new_ctx();
    Seq seq = { { 0 }, 0 };
    Tag tc = { &seq, 'c' }, td = { &seq, 'd' };
    BhKill k = { NULL, NULL, NULL, &seq };
    k.self = aio_bh_new(ctx, bh_kill_cb, &k);
    k.victim_cancel = aio_bh_new(ctx, tag_cb, &tc);
    k.victim_delete = aio_bh_new(ctx, tag_cb, &td);
    aio_bh_schedule(k.self);
    aio_bh_schedule(k.victim_cancel);
    aio_bh_schedule(k.victim_delete);
    assert_true(aio_poll(ctx, false));
    assert_string_equal(seq.buf, "k");
    assert_false(aio_poll(ctx, false));
    /* The cancelled one is still usable. */
    aio_bh_schedule(k.victim_cancel);
    assert_true(aio_poll(ctx, false));
    assert_string_equal(seq.buf, "kc");
    aio_bh_delete(k.victim_cancel);
    free_ctx(ctx);
}

typedef struct Nested {
    AioContext *ctx;
    _Atomic int later_ran;
    int waiter_done;
} Nested;

static void nested_later_cb(void *opaque)
{
    atomic_store(&((Nested *)opaque)->later_ran, 1);
}

static void nested_waiter_cb(void *opaque)
{
    Nested *n = opaque;
    AIO_WAIT_WHILE(n->ctx, !atomic_load(&n->later_ran));
    n->waiter_done = 1;
}

static void test_bh_nested_wait(void **state)
{
    AioContext *ctx = new_ctx();
    Nested n = { .ctx = ctx };
    aio_bh_schedule_oneshot(ctx, nested_waiter_cb, &n);
    aio_bh_schedule_oneshot(ctx, nested_later_cb, &n);
    assert_true(aio_poll(ctx, true));
    assert_int_equal(n.waiter_done, 1);
    assert_int_equal(atomic_load(&n.later_ran), 1);
    free_ctx(ctx);
}

typedef struct Remote {
    AioContext *ctx;
    AioBH *bh;
    _Atomic int ran;
    int delay_ms;
} Remote;

static void remote_cb(void *opaque)
{
    atomic_store(&((Remote *)opaque)->ran, 1);
}

static void *schedule_thread(void *opaque)
{
    Remote *r = opaque;
    sleep_ms(r->delay_ms);
    if (r->bh) {
        aio_bh_schedule(r->bh);
    } else {
        aio_bh_schedule_oneshot(r->ctx, remote_cb, r);
    }
    return NULL;
}

static void test_bh_from_thread_wakes_poll(void **state)
{
    AioContext *ctx = new_ctx();
    for (int oneshot = 0; oneshot < 2; oneshot++) {
        Remote r = { .ctx = ctx, .delay_ms = 50 };
        r.bh = oneshot ? NULL : aio_bh_new(ctx, remote_cb, &r);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, schedule_thread, &r), 0);
        /* Blocks: no fd, no timer, nothing scheduled yet. */
        poll_until(ctx, &r.ran);
        assert_int_equal(pthread_join(th, NULL), 0);
        aio_bh_delete(r.bh);
    }
    free_ctx(ctx);
}

/* Many threads hammering one BH and one-shots: each one-shot runs exactly
 * once, the reusable BH at least once after the last schedule. */
#define STRESS_THREADS 4
#define STRESS_ITERS 2000

typedef struct Stress {
    AioContext *ctx;
    AioBH *bh;
    _Atomic int oneshots;
    _Atomic int threads_done;
    _Atomic int bh_runs;
} Stress;

static void stress_oneshot_cb(void *opaque)
{
    atomic_fetch_add(&((Stress *)opaque)->oneshots, 1);
}

static void stress_bh_cb(void *opaque)
{
    atomic_fetch_add(&((Stress *)opaque)->bh_runs, 1);
}

static void *stress_thread(void *opaque)
{
    Stress *s = opaque;
    for (int i = 0; i < STRESS_ITERS; i++) {
        aio_bh_schedule_oneshot(s->ctx, stress_oneshot_cb, s);
        aio_bh_schedule(s->bh);
    }
    atomic_fetch_add(&s->threads_done, 1);
    aio_notify(s->ctx);
    return NULL;
}

static void test_bh_stress_threads(void **state)
{
    AioContext *ctx = new_ctx();
    Stress s = { .ctx = ctx };
    s.bh = aio_bh_new(ctx, stress_bh_cb, &s);
    pthread_t th[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, stress_thread, &s), 0);
    }
    int64_t end = clock_ns() + DEADLINE_NS;
    while (atomic_load(&s.threads_done) < STRESS_THREADS ||
           atomic_load(&s.oneshots) < STRESS_THREADS * STRESS_ITERS) {
        assert_true(clock_ns() < end);
        aio_poll(ctx, true);
    }
    for (int i = 0; i < STRESS_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    while (aio_poll(ctx, false)) {
    }
    assert_int_equal(atomic_load(&s.oneshots), STRESS_THREADS * STRESS_ITERS);
    assert_true(atomic_load(&s.bh_runs) >= 1);
    assert_true(atomic_load(&s.bh_runs) <= STRESS_THREADS * STRESS_ITERS);
    aio_bh_delete(s.bh);
    free_ctx(ctx);
}

/* ---- notify ---- */

typedef struct Notifier {
    AioContext *ctx;
    _Atomic int notified;
} Notifier;

static void *notify_thread(void *opaque)
{
    Notifier *n = opaque;
    sleep_ms(50);
    atomic_store(&n->notified, 1);
    aio_notify(n->ctx);
    return NULL;
}

static void test_notify_wakes_blocked_poll(void **state)
{
    AioContext *ctx = new_ctx();
    Notifier n = { ctx, 0 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, notify_thread, &n), 0);
    /* A bare notify is a wakeup, not progress. */
    while (!atomic_load(&n.notified)) {
        assert_false(aio_poll(ctx, true));
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    /* The eventfd was drained: a non-blocking poll finds nothing. */
    aio_poll(ctx, false);
    assert_false(aio_poll(ctx, false));

    /* Several notifies before a poll coalesce into one wakeup. */
    aio_notify(ctx);
    aio_notify(ctx);
    assert_false(aio_poll(ctx, true));
    assert_false(aio_poll(ctx, false));
    free_ctx(ctx);
}

static void *kick_thread(void *opaque)
{
    Notifier *n = opaque;
    sleep_ms(30);
    atomic_store(&n->notified, 1);
    aio_wait_kick();
    return NULL;
}

static void test_wait_while_main_kick(void **state)
{
    Error *err = NULL;
    assert_true(aio_main_init(&err));
    AioContext *ctx = aio_main_context();
    assert_non_null(ctx);
    assert_ptr_equal(aio_current_context(), ctx);
    assert_true(aio_context_in_home_thread(ctx));
    assert_string_equal(aio_context_name(ctx), "main");
    assert_true(aio_main_init(&err));           /* idempotent */
    assert_ptr_equal(aio_main_context(), ctx);

    Notifier n = { ctx, 0 };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, kick_thread, &n), 0);
    AIO_WAIT_WHILE(ctx, !atomic_load(&n.notified));
    assert_int_equal(pthread_join(th, NULL), 0);

    aio_context_free(ctx);
    assert_null(aio_main_context());
    aio_context_set_current(NULL);
}

/* ---- timers ---- */

static void test_timer_order(void **state)
{
    AioContext *ctx = new_ctx();
    Seq seq = { { 0 }, 0 };
    /* Deadlines in ms, by letter; 'f' has the same deadline as 'b' and is
     * armed later, so it fires right after 'b'. */
    static const struct { char c; int ms; } spec[] = {
        { 'c', 30 }, { 'a', 10 }, { 'e', 50 }, { 'b', 20 }, { 'd', 40 },
        { 'f', 20 },
    };
    Tag tags[6];
    AioTimer *t[6];
    int64_t base = clock_ns();
    for (int i = 0; i < 6; i++) {
        tags[i] = (Tag){ &seq, spec[i].c };
        t[i] = aio_timer_new(ctx, tag_cb, &tags[i]);
        assert_false(aio_timer_pending(t[i]));
        aio_timer_mod(t[i], base + spec[i].ms * MS);
        assert_true(aio_timer_pending(t[i]));
    }
    /* Nothing expired yet (unless the machine stalled 10 ms). */
    int64_t end = clock_ns() + DEADLINE_NS;
    while (seq.len < 6) {
        assert_true(clock_ns() < end);
        aio_poll(ctx, true);
    }
    assert_string_equal(seq.buf, "abfcde");
    assert_true(clock_ns() >= base + 50 * MS);
    for (int i = 0; i < 6; i++) {
        assert_false(aio_timer_pending(t[i]));
        aio_timer_free(t[i]);
    }
    free_ctx(ctx);
}

static void test_timer_mod_del(void **state)
{
    AioContext *ctx = new_ctx();
    Seq seq = { { 0 }, 0 };
    Tag tags[8];
    AioTimer *t[8];
    int64_t base = clock_ns();
    for (int i = 0; i < 8; i++) {
        tags[i] = (Tag){ &seq, (char)('a' + i) };
        t[i] = aio_timer_new(ctx, tag_cb, &tags[i]);
        aio_timer_mod(t[i], base + (10 + i * 5) * MS);
    }
    /* Reorder: h first, a last; delete c and e (one inside the heap, one
     * re-armed then deleted); free d while pending. */
    aio_timer_mod(t[7], base + 1 * MS);
    aio_timer_mod(t[0], base + 200 * MS);
    aio_timer_del(t[2]);
    aio_timer_mod(t[4], base + 2 * MS);
    aio_timer_del(t[4]);
    aio_timer_del(t[4]);                        /* idempotent */
    aio_timer_free(t[3]);
    t[3] = NULL;
    assert_false(aio_timer_pending(t[2]));

    int64_t end = clock_ns() + DEADLINE_NS;
    while (seq.len < 5) {
        assert_true(clock_ns() < end);
        aio_poll(ctx, true);
    }
    assert_string_equal(seq.buf, "hbfga");
    assert_false(aio_poll(ctx, false));

    /* A deleted timer can be armed again. */
    aio_timer_mod(t[2], clock_ns());
    assert_true(aio_poll(ctx, true));
    assert_string_equal(seq.buf, "hbfgac");
    for (int i = 0; i < 8; i++) {
        aio_timer_free(t[i]);
    }
    free_ctx(ctx);
}

/* Timer callbacks that free themselves and delete another due timer. */
typedef struct TimerKill {
    AioTimer *self, *victim;
    Seq *seq;
} TimerKill;

static void timer_kill_cb(void *opaque)
{
    TimerKill *k = opaque;
    seq_add(k->seq, 'k');
    aio_timer_free(k->victim);
    aio_timer_free(k->self);
}

static void test_timer_free_in_callback(void **state)
{
    AioContext *ctx = new_ctx();
    Seq seq = { { 0 }, 0 };
    Tag tv = { &seq, 'v' };
    TimerKill k = { NULL, NULL, &seq };
    k.self = aio_timer_new(ctx, timer_kill_cb, &k);
    k.victim = aio_timer_new(ctx, tag_cb, &tv);
    int64_t now = clock_ns();
    /* Both due at the next poll; the killer's deadline is earlier. */
    aio_timer_mod(k.self, now - 2 * MS);
    aio_timer_mod(k.victim, now - 1 * MS);
    assert_true(aio_poll(ctx, false));
    assert_string_equal(seq.buf, "k");
    assert_false(aio_poll(ctx, false));
    free_ctx(ctx);
}

/* Many timers with pseudo-random deadlines, some deleted: the survivors
 * fire in nondecreasing deadline order (checks the heap, not the clock). */
typedef struct HeapTimer {
    AioTimer *t;
    int64_t expire;
    int64_t *last;
    int *fired;
} HeapTimer;

static void heap_cb(void *opaque)
{
    HeapTimer *h = opaque;
    assert_true(h->expire >= *h->last);
    *h->last = h->expire;
    (*h->fired)++;
}

static void test_timer_heap_many(void **state)
{
    AioContext *ctx = new_ctx();
    enum { N = 500 };
    static HeapTimer h[N];
    int64_t last = 0;
    int fired = 0;
    /* Deadlines in the past: all due at the next poll, order is heap
     * order only. */
    int64_t base = clock_ns() - 10 * 1000 * MS;
    unsigned x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        h[i] = (HeapTimer){ NULL, base + (x >> 8) % 100000, &last, &fired };
        h[i].t = aio_timer_new(ctx, heap_cb, &h[i]);
        aio_timer_mod(h[i].t, h[i].expire);
    }
    int deleted = 0;
    for (int i = 0; i < N; i += 7) {
        aio_timer_del(h[i].t);
        deleted++;
    }
    for (int i = 3; i < N; i += 11) {
        x = x * 1103515245u + 12345u;
        h[i].expire = base + (x >> 8) % 100000;
        aio_timer_mod(h[i].t, h[i].expire);
        if (i % 7 == 0) {
            deleted--;                          /* re-armed after del */
        }
    }
    assert_true(aio_poll(ctx, false));
    assert_int_equal(fired, N - deleted);
    for (int i = 0; i < N; i++) {
        aio_timer_free(h[i].t);
    }
    free_ctx(ctx);
}

/*
 * The heap against a model: random arm/re-arm/delete operations, then one
 * poll with every deadline in the past fires exactly the armed timers,
 * ordered by (deadline, last arming).
 */
enum { MODEL_N = 64, MODEL_OPS = 3000, MODEL_ROUNDS = 20 };

typedef struct ModelTimer {
    AioTimer *t;
    bool armed;
    int64_t expire;
    uint64_t order;
    int id;
    int *fired;
    int *nfired;
} ModelTimer;

static void model_cb(void *opaque)
{
    ModelTimer *m = opaque;
    m->fired[(*m->nfired)++] = m->id;
    m->armed = false;
}

static int model_cmp(const void *a, const void *b)
{
    const ModelTimer *x = *(ModelTimer *const *)a;
    const ModelTimer *y = *(ModelTimer *const *)b;
    if (x->expire != y->expire) {
        return x->expire < y->expire ? -1 : 1;
    }
    return x->order < y->order ? -1 : (x->order > y->order);
}

static void test_timer_heap_model(void **state)
{
    AioContext *ctx = new_ctx();
    static ModelTimer m[MODEL_N];
    int fired[MODEL_N], nfired = 0;
    uint64_t order = 0;
    unsigned x = 777;
    int64_t base = clock_ns() - 3600LL * 1000 * MS;
    for (int i = 0; i < MODEL_N; i++) {
        m[i] = (ModelTimer){ .id = i, .fired = fired, .nfired = &nfired };
        m[i].t = aio_timer_new(ctx, model_cb, &m[i]);
    }
    for (int round = 0; round < MODEL_ROUNDS; round++) {
        for (int op = 0; op < MODEL_OPS; op++) {
            x = x * 1103515245u + 12345u;
            ModelTimer *t = &m[(x >> 4) % MODEL_N];
            x = x * 1103515245u + 12345u;
            if ((x >> 8) % 4 == 0) {
                aio_timer_del(t->t);
                t->armed = false;
            } else {
                /* Few distinct deadlines, so ties are common. */
                t->expire = base + (int64_t)((x >> 12) % 32);
                t->order = order++;
                t->armed = true;
                aio_timer_mod(t->t, t->expire);
            }
            assert_int_equal(aio_timer_pending(t->t), t->armed);
        }
        ModelTimer *expect[MODEL_N];
        int n = 0;
        for (int i = 0; i < MODEL_N; i++) {
            if (m[i].armed) {
                expect[n++] = &m[i];
            }
        }
        qsort(expect, (size_t)n, sizeof(expect[0]), model_cmp);
        nfired = 0;
        aio_poll(ctx, false);
        assert_int_equal(nfired, n);
        for (int i = 0; i < n; i++) {
            assert_int_equal(fired[i], expect[i]->id);
        }
    }
    for (int i = 0; i < MODEL_N; i++) {
        aio_timer_free(m[i].t);
    }
    free_ctx(ctx);
}

/* ---- leak check ---- */

static void leak_cb(void *opaque)
{
}

/* aio_context_free must abort (and say what leaked); run it in a child. */
static void expect_abort_on_free(int what)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDERR_FILENO);
        }
        AioContext *ctx = aio_context_new("leaky", NULL);
        aio_context_set_current(ctx);
        int fds[2];
        if (pipe(fds) < 0) {
            _exit(2);
        }
        switch (what) {
        case 0:
            aio_set_fd_handler(ctx, fds[0], leak_cb, NULL, NULL, NULL);
            break;
        case 1:
            aio_bh_new(ctx, leak_cb, NULL);
            break;
        case 2:
            aio_bh_schedule_oneshot(ctx, leak_cb, NULL);
            break;
        case 3:
            aio_timer_new(ctx, leak_cb, NULL);
            break;
        }
        aio_context_free(ctx);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void test_free_aborts_on_leak(void **state)
{
    for (int what = 0; what < 4; what++) {
        expect_abort_on_free(what);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_read),
        cmocka_unit_test(test_fd_write_then_read_only),
        cmocka_unit_test(test_fd_regular_file_refused),
        cmocka_unit_test(test_fd_remove_during_dispatch),
        cmocka_unit_test(test_fd_remove_self_and_reuse_fd),
        cmocka_unit_test(test_fd_hangup),
        cmocka_unit_test(test_fd_remove_in_nested_poll),
        cmocka_unit_test(test_bh_fifo_cancel_delete),
        cmocka_unit_test(test_bh_delete_during_pass),
        cmocka_unit_test(test_bh_oneshot),
        cmocka_unit_test(test_bh_reschedule_self),
        cmocka_unit_test(test_bh_nested_wait),
        cmocka_unit_test(test_bh_from_thread_wakes_poll),
        cmocka_unit_test(test_bh_stress_threads),
        cmocka_unit_test(test_notify_wakes_blocked_poll),
        cmocka_unit_test(test_wait_while_main_kick),
        cmocka_unit_test(test_timer_order),
        cmocka_unit_test(test_timer_mod_del),
        cmocka_unit_test(test_timer_free_in_callback),
        cmocka_unit_test(test_timer_heap_many),
        cmocka_unit_test(test_timer_heap_model),
        cmocka_unit_test(test_free_aborts_on_leak),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
