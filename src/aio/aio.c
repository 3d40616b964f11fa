/*
 * The event loop (AioContext) on epoll: fd handlers, bottom halves, timers,
 * and the eventfd behind aio_notify.
 *
 * One aio_poll pass:
 *
 *   epoll_wait (timeout: 0 if a BH is pending, else the earliest timer,
 *               else forever when blocking)
 *     -> fd handlers          (removal during this step only marks)
 *     -> reap removed handlers (when no dispatch pass is active any more)
 *     -> expired timers       (heap order: deadline, then arming order)
 *     -> BHs scheduled before this pass (FIFO)
 *
 * Costs: fd handler lookup is a list walk (few fds per context); timers are
 * a binary heap whose entries know their index, so arming, deleting and
 * firing are O(log n); BH scheduling is O(1) under a mutex.
 */
#include "config.h"

#include "aio/aio.h"
#include "aio/aio-internal.h"
#include "aio/coroutine.h"
#include "aio/io.h"
#include "util/alloc.h"
#include "util/list.h"
#include "util/log.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#define AIO_MAX_EVENTS 64
#define TIMER_IDLE SIZE_MAX

typedef struct FdHandler {
    ListHead link;              /* in ctx->handlers */
    int fd;
    AioHandler *io_read;
    AioHandler *io_write;
    void *opaque;
    uint32_t events;            /* what epoll watches for this fd */
    bool deleted;               /* removed during dispatch, awaiting reap */
} FdHandler;

struct AioBH {
    ListHead link;              /* in ctx->bh_pending while scheduled */
    AioContext *ctx;
    AioHandler *cb;
    void *opaque;
    uint64_t gen;               /* ctx->bh_gen when scheduled */
    bool oneshot;
    /* Changed only under ctx->bh_lock. */
    _Atomic bool scheduled;
};

struct AioTimer {
    AioContext *ctx;
    AioHandler *cb;
    void *opaque;
    int64_t expire_ns;
    uint64_t seq;               /* arming order: equal deadlines fire FIFO */
    size_t index;               /* slot in ctx->heap, TIMER_IDLE if not armed */
};

struct AioContext {
    char *name;
    int epfd;
    int notify_fd;
    /* True from an aio_notify until the loop has drained the eventfd: later
     * notifiers need not write again. */
    _Atomic bool notified;

    ListHead handlers;
    unsigned dispatching;       /* depth of nested fd dispatch passes */
    unsigned poll_depth;        /* aio_poll calls on this thread's stack */
    bool have_deleted;          /* some handler is marked deleted */

    pthread_mutex_t bh_lock;    /* protects bh_pending, bh_gen, BH links */
    ListHead bh_pending;        /* FIFO of scheduled BHs */
    uint64_t bh_gen;            /* bumped at the start of every BH pass */
    _Atomic unsigned nbh;       /* live BHs (oneshot ones included) */

    AioTimer **heap;
    size_t heap_len, heap_cap;
    uint64_t timer_seq;
    _Atomic unsigned ntimers;   /* allocated timers */

    CoSchedState *co_sched;
    void *slots[AIO_SLOT_MAX];
};

/* The context the calling thread runs, and the main loop's. */
static __thread AioContext *current_ctx;
static AioContext *main_ctx;

int64_t clock_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0) {
        abort();                /* cannot fail with a valid clock id */
    }
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * noinline and the empty asm: a coroutine may be moved to another thread
 * between two calls, so neither the address of this thread-local nor the
 * result may be reused by a caller (even one inlined across units by LTO).
 */
__attribute__((noinline)) AioContext *aio_current_context(void)
{
    __asm__ volatile("" : : : "memory");
    return current_ctx;
}

__attribute__((noinline)) void aio_context_set_current(AioContext *ctx)
{
    current_ctx = ctx;
}

bool aio_context_in_home_thread(AioContext *ctx)
{
    return aio_current_context() == ctx;
}

/* Context state is single-threaded: catch the cross-thread caller early. */
static void assert_home(AioContext *ctx, const char *what)
{
    if (aio_current_context() != ctx) {
        AioContext *cur = aio_current_context();
        log_error("%s: context '%s' used from a thread running %s%s%s", what,
                  ctx->name, cur ? "'" : "no context", cur ? cur->name : "",
                  cur ? "'" : "");
        abort();
    }
}

/* ---- contexts ---- */

AioContext *aio_context_new(const char *name, Error **errp)
{
    AioContext *ctx = bj_calloc(1, sizeof(*ctx));
    ctx->name = bj_strdup(name ? name : "");
    ctx->notify_fd = -1;
    list_init(&ctx->handlers);
    list_init(&ctx->bh_pending);
    int ret = pthread_mutex_init(&ctx->bh_lock, NULL);
    if (ret) {
        error_setg_errno(errp, ret, "cannot create the mutex of context '%s'",
                         ctx->name);
        free(ctx->name);
        free(ctx);
        return NULL;
    }

    ctx->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (ctx->epfd < 0) {
        error_setg_errno(errp, errno, "cannot create epoll for context '%s'",
                         ctx->name);
        goto fail;
    }
    ctx->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ctx->notify_fd < 0) {
        error_setg_errno(errp, errno, "cannot create eventfd for context '%s'",
                         ctx->name);
        goto fail;
    }
    /* data.ptr == NULL marks the internal notifier among the events. */
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, ctx->notify_fd, &ev) < 0) {
        error_setg_errno(errp, errno,
                         "cannot watch the eventfd of context '%s'",
                         ctx->name);
        goto fail;
    }
    ctx->co_sched = coroutine_sched_state_new(ctx);
    return ctx;

fail:
    if (ctx->notify_fd >= 0) {
        close(ctx->notify_fd);
    }
    if (ctx->epfd >= 0) {
        close(ctx->epfd);
    }
    pthread_mutex_destroy(&ctx->bh_lock);
    free(ctx->name);
    free(ctx);
    return NULL;
}

/*
 * The io_uring backend lives in io-uring.c.  A program that never pulls
 * that object in (a unit test of the loop) never created a ring either, so
 * this no-op default is then the right teardown; the real definition
 * overrides it whenever it is linked.
 */
__attribute__((weak)) void io_uring_context_cleanup(AioContext *ctx)
{
    (void)ctx;
}

static unsigned count_live_handlers(AioContext *ctx)
{
    unsigned n = 0;
    FdHandler *h;
    list_for_each_entry(h, &ctx->handlers, link) {
        if (!h->deleted) {
            n++;
        }
    }
    return n;
}

static void report_leaks(AioContext *ctx)
{
    unsigned nfd = count_live_handlers(ctx);
    unsigned nbh = atomic_load(&ctx->nbh);
    unsigned nt = atomic_load(&ctx->ntimers);
    if (!nfd && !nbh && !nt) {
        return;
    }
    log_error("context '%s' freed with %u fd handler(s), %u bottom half(s) "
              "and %u timer(s) still registered", ctx->name, nfd, nbh, nt);
    FdHandler *h;
    list_for_each_entry(h, &ctx->handlers, link) {
        if (!h->deleted) {
            log_error("  leaked fd handler: fd %d (read %p, write %p)", h->fd,
                      (void *)h->io_read, (void *)h->io_write);
        }
    }
    AioBH *bh;
    list_for_each_entry(bh, &ctx->bh_pending, link) {
        log_error("  leaked scheduled %sbottom half: callback %p",
                  bh->oneshot ? "one-shot " : "", (void *)bh->cb);
    }
    for (size_t i = 0; i < ctx->heap_len; i++) {
        log_error("  leaked armed timer: callback %p",
                  (void *)ctx->heap[i]->cb);
    }
    abort();
}

void aio_context_free(AioContext *ctx)
{
    if (!ctx) {
        return;
    }
    /* A thread that scheduled a BH here notifies under the lock
     * (aio_bh_schedule): wait until the last one let go of ctx. */
    pthread_mutex_lock(&ctx->bh_lock);
    pthread_mutex_unlock(&ctx->bh_lock);
    /*
     * Teardown hooks of other modules may unregister their fds and BHs; let
     * them pass the home-thread checks even when the owning thread has
     * already exited (an iothread joined by the main thread).
     */
    AioContext *saved = aio_current_context();
    aio_context_set_current(ctx);
    io_uring_context_cleanup(ctx);
    coroutine_sched_state_free(ctx->co_sched);
    ctx->co_sched = NULL;
    aio_context_set_current(saved == ctx ? NULL : saved);

    assert(ctx->dispatching == 0);
    report_leaks(ctx);

    FdHandler *h, *tmp;
    list_for_each_entry_safe(h, tmp, &ctx->handlers, link) {
        list_del(&h->link);
        free(h);
    }
    if (main_ctx == ctx) {
        main_ctx = NULL;
    }
    close(ctx->notify_fd);
    close(ctx->epfd);
    pthread_mutex_destroy(&ctx->bh_lock);
    free(ctx->heap);
    free(ctx->name);
    free(ctx);
}

const char *aio_context_name(AioContext *ctx)
{
    return ctx->name;
}

bool aio_main_init(Error **errp)
{
    if (main_ctx) {
        return true;
    }
    AioContext *ctx = aio_context_new("main", errp);
    if (!ctx) {
        return false;
    }
    main_ctx = ctx;
    aio_context_set_current(ctx);
    return true;
}

AioContext *aio_main_context(void)
{
    return main_ctx;
}

void *aio_context_slot(AioContext *ctx, AioSlot slot)
{
    assert(slot < AIO_SLOT_MAX);
    return ctx->slots[slot];
}

void aio_context_set_slot(AioContext *ctx, AioSlot slot, void *value)
{
    assert(slot < AIO_SLOT_MAX);
    ctx->slots[slot] = value;
}

CoSchedState *aio_context_co_sched(AioContext *ctx)
{
    return ctx->co_sched;
}

/* ---- fd handlers ---- */

static FdHandler *find_handler(AioContext *ctx, int fd)
{
    FdHandler *h;
    list_for_each_entry(h, &ctx->handlers, link) {
        if (h->fd == fd && !h->deleted) {
            return h;
        }
    }
    return NULL;
}

/* Frees handlers marked deleted; only when no dispatch pass may still hold
 * a pointer to them in its epoll event array. */
static void reap_handlers(AioContext *ctx)
{
    assert(ctx->dispatching == 0);
    FdHandler *h, *tmp;
    list_for_each_entry_safe(h, tmp, &ctx->handlers, link) {
        if (h->deleted) {
            list_del(&h->link);
            free(h);
        }
    }
    ctx->have_deleted = false;
}

bool aio_set_fd_handler(AioContext *ctx, int fd, AioHandler *io_read,
                        AioHandler *io_write, void *opaque, Error **errp)
{
    assert_home(ctx, "aio_set_fd_handler");
    FdHandler *h = find_handler(ctx, fd);

    if (!io_read && !io_write) {
        if (!h) {
            return true;
        }
        bool ok = true;
        if (epoll_ctl(ctx->epfd, EPOLL_CTL_DEL, fd, NULL) < 0) {
            error_setg_errno(errp, errno,
                             "cannot remove fd %d from context '%s'", fd,
                             ctx->name);
            ok = false;
        }
        /* Forget the handler either way: the caller is done with it. */
        h->io_read = NULL;
        h->io_write = NULL;
        h->deleted = true;
        ctx->have_deleted = true;
        if (ctx->dispatching == 0) {
            reap_handlers(ctx);
        }
        return ok;
    }

    uint32_t events = (io_read ? EPOLLIN : 0) | (io_write ? EPOLLOUT : 0);
    if (!h) {
        h = bj_calloc(1, sizeof(*h));
        h->fd = fd;
        struct epoll_event ev = { .events = events, .data.ptr = h };
        if (epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            error_setg_errno(errp, errno, "cannot watch fd %d in context '%s'",
                             fd, ctx->name);
            free(h);
            return false;
        }
        h->events = events;
        list_add_tail(&ctx->handlers, &h->link);
    } else if (h->events != events) {
        struct epoll_event ev = { .events = events, .data.ptr = h };
        if (epoll_ctl(ctx->epfd, EPOLL_CTL_MOD, fd, &ev) < 0) {
            error_setg_errno(errp, errno,
                             "cannot change the events of fd %d in context "
                             "'%s'", fd, ctx->name);
            return false;
        }
        h->events = events;
    }
    h->io_read = io_read;
    h->io_write = io_write;
    h->opaque = opaque;
    return true;
}

/* ---- notify ---- */

void aio_notify(AioContext *ctx)
{
    /*
     * Only the first notifier after a drain writes.  The exchange is
     * seq_cst and pairs with the store in drain_notifier: a notifier that
     * finds the flag set is ordered before that store, so whatever it did
     * before notifying is visible to the loop after the drain.
     */
    if (atomic_exchange(&ctx->notified, true)) {
        return;
    }
    uint64_t one = 1;
    ssize_t r;
    do {
        r = write(ctx->notify_fd, &one, sizeof(one));
    } while (r < 0 && errno == EINTR);
    if (r != sizeof(one)) {
        /* A lost wakeup would hang the loop: better die loudly. */
        log_error("cannot notify context '%s': %s", ctx->name,
                  r < 0 ? strerror(errno) : "short write");
        abort();
    }
}

static void drain_notifier(AioContext *ctx)
{
    uint64_t v;
    ssize_t r;
    do {
        r = read(ctx->notify_fd, &v, sizeof(v));
    } while (r < 0 && errno == EINTR);
    if (r < 0 && errno != EAGAIN) {
        log_error("cannot read the eventfd of context '%s': %s", ctx->name,
                  strerror(errno));
        abort();
    }
    /* Read first, then clear: a write after this store is never skipped,
     * so the next epoll_wait sees it. */
    atomic_store(&ctx->notified, false);
}

void aio_wait_kick(void)
{
    AioContext *ctx = main_ctx;
    if (ctx) {
        aio_notify(ctx);
    }
}

/* ---- bottom halves ---- */

static AioBH *bh_alloc(AioContext *ctx, AioHandler *cb, void *opaque,
                       bool oneshot)
{
    AioBH *bh = bj_malloc(sizeof(*bh));

    *bh = (AioBH) { .ctx = ctx, .cb = cb, .opaque = opaque,
                    .oneshot = oneshot };
    list_init(&bh->link);
    atomic_fetch_add(&ctx->nbh, 1);
    return bh;
}

static void bh_free(AioBH *bh)
{
    atomic_fetch_sub(&bh->ctx->nbh, 1);
    free(bh);
}

AioBH *aio_bh_new(AioContext *ctx, AioHandler *cb, void *opaque)
{
    return bh_alloc(ctx, cb, opaque, false);
}

void aio_bh_schedule(AioBH *bh)
{
    AioContext *ctx = bh->ctx;
    /*
     * Always under the lock, even when already scheduled: the loop clears
     * the flag under it before running the callback, so a scheduler that
     * finds the flag set is ordered before the run it relies on.
     */
    pthread_mutex_lock(&ctx->bh_lock);
    bool queued = !atomic_load(&bh->scheduled);
    if (queued) {
        atomic_store(&bh->scheduled, true);
        bh->gen = ctx->bh_gen;
        list_add_tail(&ctx->bh_pending, &bh->link);
    }
    /*
     * The home thread is not blocked in epoll_wait (it is running this), and
     * its next aio_poll sees the pending BH and does not block: only other
     * threads need to wake it.  Still under the lock: once it is released
     * the loop may run the BH, finish and have its context freed (an
     * iothread stopping), so nothing of ctx may be touched after that.
     * aio_context_free takes the lock once to wait for such a notifier.
     */
    if (queued && aio_current_context() != ctx) {
        aio_notify(ctx);
    }
    pthread_mutex_unlock(&ctx->bh_lock);
}

void aio_bh_cancel(AioBH *bh)
{
    AioContext *ctx = bh->ctx;
    assert_home(ctx, "aio_bh_cancel");
    pthread_mutex_lock(&ctx->bh_lock);
    if (atomic_load(&bh->scheduled)) {
        list_del(&bh->link);
        atomic_store(&bh->scheduled, false);
    }
    pthread_mutex_unlock(&ctx->bh_lock);
}

void aio_bh_delete(AioBH *bh)
{
    if (!bh) {
        return;
    }
    aio_bh_cancel(bh);
    bh_free(bh);
}

void aio_bh_schedule_oneshot(AioContext *ctx, AioHandler *cb, void *opaque)
{
    aio_bh_schedule(bh_alloc(ctx, cb, opaque, true));
}

static bool bh_pending(AioContext *ctx)
{
    pthread_mutex_lock(&ctx->bh_lock);
    bool pending = !list_empty(&ctx->bh_pending);
    pthread_mutex_unlock(&ctx->bh_lock);
    return pending;
}

/*
 * Runs the BHs scheduled before this pass started, in FIFO order.  BHs
 * scheduled while it runs (a BH rescheduling itself) wait for the next
 * pass, so a pass always ends.  A nested aio_poll inside a BH runs the rest
 * of the outer pass's BHs, so waiting there on a later BH cannot hang.
 */
static bool run_bhs(AioContext *ctx)
{
    bool progress = false;
    pthread_mutex_lock(&ctx->bh_lock);
    uint64_t gen = ++ctx->bh_gen;
    while (!list_empty(&ctx->bh_pending)) {
        AioBH *bh = list_first_entry(&ctx->bh_pending, AioBH, link);
        if (bh->gen >= gen) {
            break;
        }
        list_del(&bh->link);
        atomic_store(&bh->scheduled, false);
        pthread_mutex_unlock(&ctx->bh_lock);

        /* The callback may delete a reusable bh: read oneshot first. */
        bool oneshot = bh->oneshot;
        bh->cb(bh->opaque);
        progress = true;
        if (oneshot) {
            bh_free(bh);
        }
        pthread_mutex_lock(&ctx->bh_lock);
    }
    pthread_mutex_unlock(&ctx->bh_lock);
    return progress;
}

/* ---- timers ---- */

static bool timer_before(const AioTimer *a, const AioTimer *b)
{
    return a->expire_ns < b->expire_ns ||
           (a->expire_ns == b->expire_ns && a->seq < b->seq);
}

static void heap_place(AioContext *ctx, size_t i, AioTimer *t)
{
    ctx->heap[i] = t;
    t->index = i;
}

static void heap_sift_up(AioContext *ctx, size_t i)
{
    AioTimer *t = ctx->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(t, ctx->heap[parent])) {
            break;
        }
        heap_place(ctx, i, ctx->heap[parent]);
        i = parent;
    }
    heap_place(ctx, i, t);
}

static void heap_sift_down(AioContext *ctx, size_t i)
{
    AioTimer *t = ctx->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= ctx->heap_len) {
            break;
        }
        if (child + 1 < ctx->heap_len &&
            timer_before(ctx->heap[child + 1], ctx->heap[child])) {
            child++;
        }
        if (!timer_before(ctx->heap[child], t)) {
            break;
        }
        heap_place(ctx, i, ctx->heap[child]);
        i = child;
    }
    heap_place(ctx, i, t);
}

/* Restores the heap order around slot i after its key changed. */
static void heap_fix(AioContext *ctx, size_t i)
{
    if (i > 0 && timer_before(ctx->heap[i], ctx->heap[(i - 1) / 2])) {
        heap_sift_up(ctx, i);
    } else {
        heap_sift_down(ctx, i);
    }
}

static void heap_remove(AioContext *ctx, AioTimer *t)
{
    size_t i = t->index;
    assert(i < ctx->heap_len && ctx->heap[i] == t);
    AioTimer *last = ctx->heap[--ctx->heap_len];
    t->index = TIMER_IDLE;
    if (last != t) {
        heap_place(ctx, i, last);
        heap_fix(ctx, i);
    }
}

AioTimer *aio_timer_new(AioContext *ctx, AioHandler *cb, void *opaque)
{
    AioTimer *t = bj_malloc(sizeof(*t));

    *t = (AioTimer) { .ctx = ctx, .cb = cb, .opaque = opaque,
                      .index = TIMER_IDLE };
    atomic_fetch_add(&ctx->ntimers, 1);
    return t;
}

void aio_timer_mod(AioTimer *t, int64_t expire_ns)
{
    AioContext *ctx = t->ctx;
    assert_home(ctx, "aio_timer_mod");
    t->expire_ns = expire_ns;
    t->seq = ctx->timer_seq++;
    if (t->index != TIMER_IDLE) {
        heap_fix(ctx, t->index);
        return;
    }
    if (ctx->heap_len == ctx->heap_cap) {
        size_t cap = ctx->heap_cap ? ctx->heap_cap * 2 : 16;
        ctx->heap = bj_reallocarray(ctx->heap, cap, sizeof(*ctx->heap));
        ctx->heap_cap = cap;
    }
    heap_place(ctx, ctx->heap_len++, t);
    heap_sift_up(ctx, t->index);
}

void aio_timer_del(AioTimer *t)
{
    if (t->index != TIMER_IDLE) {
        assert_home(t->ctx, "aio_timer_del");
        heap_remove(t->ctx, t);
    }
}

bool aio_timer_pending(const AioTimer *t)
{
    return t->index != TIMER_IDLE;
}

void aio_timer_free(AioTimer *t)
{
    if (!t) {
        return;
    }
    aio_timer_del(t);
    atomic_fetch_sub(&t->ctx->ntimers, 1);
    free(t);
}

/* Fires every timer due by now; one that re-arms itself for "now" or
 * earlier fires again only once the clock has moved past this pass. */
static bool run_timers(AioContext *ctx)
{
    if (ctx->heap_len == 0) {
        return false;
    }
    bool progress = false;
    int64_t now = clock_ns();
    while (ctx->heap_len > 0 && ctx->heap[0]->expire_ns <= now) {
        AioTimer *t = ctx->heap[0];
        heap_remove(ctx, t);
        t->cb(t->opaque);
        progress = true;
    }
    return progress;
}

/* ---- polling ---- */

/*
 * epoll_pwait2 gives nanosecond timeouts (a null-co latency of a few
 * microseconds must not become a millisecond); kernels or sandboxes
 * without it get epoll_wait, rounded up so a timer is never polled early.
 * So does valgrind (3.19 does not know epoll_pwait2 and warns about it).
 */
static int wait_events(AioContext *ctx, struct epoll_event *events,
                       int64_t timeout_ns)
{
    static atomic_bool no_pwait2;
    bool try_pwait2 = !atomic_load_explicit(&no_pwait2, memory_order_relaxed);
#ifdef HAVE_VALGRIND_H
    try_pwait2 = try_pwait2 && !RUNNING_ON_VALGRIND;
#endif

    if (try_pwait2) {
        struct timespec ts, *tsp = NULL;
        if (timeout_ns >= 0) {
            ts.tv_sec = timeout_ns / 1000000000LL;
            ts.tv_nsec = timeout_ns % 1000000000LL;
            tsp = &ts;
        }
        int n = epoll_pwait2(ctx->epfd, events, AIO_MAX_EVENTS, tsp, NULL);
        if (n >= 0 || errno != ENOSYS) {
            return n;
        }
        atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
    }
    int ms = -1;
    if (timeout_ns >= 0) {
        int64_t m = (timeout_ns + 999999) / 1000000;
        ms = m > INT_MAX ? INT_MAX : (int)m;
    }
    return epoll_wait(ctx->epfd, events, AIO_MAX_EVENTS, ms);
}

static int64_t poll_timeout(AioContext *ctx, bool blocking)
{
    if (!blocking || bh_pending(ctx)) {
        return 0;
    }
    if (ctx->heap_len > 0) {
        int64_t delta = ctx->heap[0]->expire_ns - clock_ns();
        return delta > 0 ? delta : 0;
    }
    return -1;
}

static bool dispatch_handlers(AioContext *ctx, struct epoll_event *events,
                              int n)
{
    bool progress = false;
    for (int i = 0; i < n; i++) {
        FdHandler *h = events[i].data.ptr;
        uint32_t ev = events[i].events;
        if (!h) {
            drain_notifier(ctx);        /* a wakeup, not progress */
            continue;
        }
        /* Errors and hangups go to whichever callbacks are set, so their
         * read or write sees the failure. */
        if (!h->deleted && h->io_read &&
            (ev & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
            h->io_read(h->opaque);
            progress = true;
        }
        if (!h->deleted && h->io_write &&
            (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))) {
            h->io_write(h->opaque);
            progress = true;
        }
    }
    return progress;
}

unsigned aio_poll_depth(AioContext *ctx)
{
    assert_home(ctx, "aio_poll_depth");
    return ctx->poll_depth;
}

bool aio_poll(AioContext *ctx, bool blocking)
{
    assert_home(ctx, "aio_poll");
    if (coroutine_in_coroutine()) {
        /* A BH could then enter a coroutine that is on this very stack. */
        log_error("aio_poll called inside a coroutine (yield instead)");
        abort();
    }
    struct epoll_event events[AIO_MAX_EVENTS];
    bool progress = false;

    ctx->poll_depth++;
    int n = wait_events(ctx, events, poll_timeout(ctx, blocking));
    if (n < 0) {
        if (errno != EINTR) {
            log_error("epoll_wait failed in context '%s': %s", ctx->name,
                      strerror(errno));
            abort();
        }
        n = 0;
    }

    ctx->dispatching++;
    progress |= dispatch_handlers(ctx, events, n);
    ctx->dispatching--;
    if (ctx->dispatching == 0 && ctx->have_deleted) {
        reap_handlers(ctx);
    }

    progress |= run_timers(ctx);
    progress |= run_bhs(ctx);
    ctx->poll_depth--;
    return progress;
}
