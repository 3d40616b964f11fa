/*
 * The process-wide thread pool: work that may block (syscalls on files
 * without io_uring, open, locks, ...) runs here so that no context thread
 * ever blocks.
 *
 *   coroutine (home ctx)            worker thread
 *   --------------------            -------------
 *   job on its own stack
 *   queue job, signal   ---------->  take job, run fn(opaque)
 *   coroutine_yield()                job->ret = ...
 *          <-------------------------aio_co_wake(job->co)
 *   resumes in its home ctx,
 *   returns job->ret
 *
 * Workers are created on demand (never more than POOL_MAX_THREADS) and exit
 * after POOL_IDLE_NS without work.  A worker that exits puts itself on the
 * dead list; whoever next takes the lock to spawn or shut down joins it, so
 * every thread is joined and none is detached.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aio/io.h"
#include "util/alloc.h"
#include "util/list.h"
#include "util/log.h"

#define POOL_MAX_THREADS 16
#define POOL_IDLE_NS (10 * 1000000000LL)

typedef struct ThreadPoolJob {
    ListHead link;
    ThreadPoolFn *fn;
    void *opaque;
    Coroutine *co;
    int ret;
} ThreadPoolJob;

typedef struct PoolWorker {
    ListHead link;
    pthread_t tid;
} PoolWorker;

/*
 * The one pool of the process (thread_pool_shutdown in io.h has no
 * argument, so the pool is a singleton by contract).  Everything below is
 * protected by lock.
 */
static struct {
    pthread_once_t once;
    pthread_mutex_t lock;
    pthread_cond_t work_cond;   /* workers wait here for jobs */
    pthread_cond_t gone_cond;   /* shutdown waits here for n_threads == 0 */
    ListHead jobs;              /* queued, not yet taken */
    ListHead live;              /* PoolWorker of running threads */
    ListHead dead;              /* PoolWorker of exited, unjoined threads */
    unsigned n_threads;
    unsigned n_idle;            /* workers waiting on work_cond */
    unsigned n_queued;
    bool stopping;
} pool = {
    .once = PTHREAD_ONCE_INIT,
    .lock = PTHREAD_MUTEX_INITIALIZER,
};

static void pool_init(void)
{
    pthread_condattr_t attr;
    int ret;

    list_init(&pool.jobs);
    list_init(&pool.live);
    list_init(&pool.dead);

    /* The idle timeout is measured on the monotonic clock so that a wall
     * clock jump neither kills all workers nor keeps them forever. */
    ret = pthread_condattr_init(&attr);
    if (ret == 0) {
        ret = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    }
    if (ret == 0) {
        ret = pthread_cond_init(&pool.work_cond, &attr);
    }
    if (ret == 0) {
        ret = pthread_cond_init(&pool.gone_cond, NULL);
    }
    if (ret != 0) {
        log_error("thread pool: cannot initialise condition variables: %s",
                  strerror(ret));
        abort();
    }
    pthread_condattr_destroy(&attr);
}

static void pool_lock(void)
{
    int ret = pthread_mutex_lock(&pool.lock);
    assert(ret == 0);
    (void)ret;
}

static void pool_unlock(void)
{
    int ret = pthread_mutex_unlock(&pool.lock);
    assert(ret == 0);
    (void)ret;
}

/* Takes the dead list out under the lock; join it with reap_dead() after
 * unlocking (joining a thread that is just returning is brief, but there is
 * no reason to hold the lock meanwhile). */
static void take_dead(ListHead *out)
{
    list_init(out);
    if (!list_empty(&pool.dead)) {
        out->next = pool.dead.next;
        out->prev = pool.dead.prev;
        out->next->prev = out;
        out->prev->next = out;
        list_init(&pool.dead);
    }
}

static void reap_dead(ListHead *dead)
{
    PoolWorker *w, *tmp;

    list_for_each_entry_safe(w, tmp, dead, link) {
        int ret = pthread_join(w->tid, NULL);
        if (ret != 0) {
            log_error("thread pool: cannot join worker: %s", strerror(ret));
        }
        list_del(&w->link);
        free(w);
    }
}

static void deadline_after(struct timespec *ts, int64_t ns)
{
    int ret = clock_gettime(CLOCK_MONOTONIC, ts);
    assert(ret == 0);
    (void)ret;
    ns += ts->tv_nsec;
    ts->tv_sec += ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

static void *worker_main(void *arg)
{
    PoolWorker *self = arg;

    pool_lock();
    for (;;) {
        ThreadPoolJob *job;

        if (list_empty(&pool.jobs)) {
            struct timespec deadline;
            int ret = 0;

            if (pool.stopping) {
                break;
            }
            deadline_after(&deadline, POOL_IDLE_NS);
            pool.n_idle++;
            while (list_empty(&pool.jobs) && !pool.stopping &&
                   ret != ETIMEDOUT) {
                ret = pthread_cond_timedwait(&pool.work_cond, &pool.lock,
                                             &deadline);
                assert(ret == 0 || ret == ETIMEDOUT);
            }
            pool.n_idle--;
            if (list_empty(&pool.jobs)) {
                /* Idle for too long, or stopping with nothing left. */
                break;
            }
        }

        job = list_first_entry(&pool.jobs, ThreadPoolJob, link);
        list_del(&job->link);
        pool.n_queued--;
        pool_unlock();

        /* After aio_co_wake the job (on the coroutine's stack) may be gone
         * at any moment: read what we need first, touch nothing after. */
        Coroutine *co = job->co;
        job->ret = job->fn(job->opaque);
        aio_co_wake(co);

        pool_lock();
    }

    list_del(&self->link);
    list_add_tail(&pool.dead, &self->link);
    pool.n_threads--;
    if (pool.n_threads == 0) {
        pthread_cond_broadcast(&pool.gone_cond);
    }
    pool_unlock();
    return NULL;
}

/* Called with the lock held.  Returns 0 or a positive errno. */
static int spawn_worker(void)
{
    PoolWorker *w = bj_calloc(1, sizeof(*w));
    sigset_t all, old;
    int ret;

    /* Workers must never take the daemon's signals (SIGINT/SIGTERM are
     * handled by the main loop): they inherit a fully blocked mask. */
    sigfillset(&all);
    ret = pthread_sigmask(SIG_SETMASK, &all, &old);
    assert(ret == 0);
    ret = pthread_create(&w->tid, NULL, worker_main, w);
    int ret2 = pthread_sigmask(SIG_SETMASK, &old, NULL);
    assert(ret2 == 0);
    (void)ret2;
    if (ret != 0) {
        free(w);
        return ret;
    }
    pthread_setname_np(w->tid, "bj-worker");
    list_add_tail(&pool.live, &w->link);
    pool.n_threads++;
    return 0;
}

int coroutine_fn thread_pool_co_run(ThreadPoolFn *fn, void *opaque)
{
    ThreadPoolJob job = {
        .fn = fn,
        .opaque = opaque,
        .co = coroutine_self(),
    };
    ListHead dead;
    bool taken_back = false;
    int err = 0;

    assert(job.co);
    pthread_once(&pool.once, pool_init);

    pool_lock();
    list_add_tail(&pool.jobs, &job.link);
    pool.n_queued++;
    /* Spawn when the idle workers cannot absorb the queue: a signalled idle
     * worker counts as idle until it wakes, so compare with everything
     * queued rather than with this one job. */
    if (pool.n_queued > pool.n_idle && pool.n_threads < POOL_MAX_THREADS) {
        err = spawn_worker();
        if (err && pool.n_threads == 0) {
            /* Nobody will ever take the job: take it back. */
            list_del(&job.link);
            pool.n_queued--;
            taken_back = true;
        }
    }
    if (pool.n_idle > 0) {
        pthread_cond_signal(&pool.work_cond);
    }
    take_dead(&dead);
    pool_unlock();
    reap_dead(&dead);

    if (err) {
        log_warn("thread pool: cannot start a worker: %s", strerror(err));
        if (taken_back) {
            return -err;
        }
    }

    /* The worker wakes us through aio_co_wake, which brings us back to our
     * home context (it cannot run us before we have yielded: we are the
     * coroutine running in that context's thread right now). */
    coroutine_yield();
    return job.ret;
}

void thread_pool_shutdown(void)
{
    ListHead dead;

    pthread_once(&pool.once, pool_init);

    pool_lock();
    pool.stopping = true;
    pthread_cond_broadcast(&pool.work_cond);
    while (pool.n_threads > 0) {
        int ret = pthread_cond_wait(&pool.gone_cond, &pool.lock);
        assert(ret == 0);
        (void)ret;
    }
    /* Workers drain the queue before they go, so nothing is left behind. */
    assert(list_empty(&pool.jobs));
    take_dead(&dead);
    /* The pool may be used again afterwards (it restarts lazily). */
    pool.stopping = false;
    pool_unlock();
    reap_dead(&dead);
}
