/*
 * The copy engine (see block-copy.h for the picture and the invariant).
 */
#include "job/block-copy.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "block/chain.h"
#include "job/blockjob.h"
#include "util/alloc.h"
#include "util/bufpool.h"
#include "util/iov.h"
#include "util/list.h"

/* A client write copies at most this much per read/write pair. */
#define CLIENT_PIECE (4LL << 20)

struct BlockCopyTask {
    BlockCopyState *s;
    int64_t offset, bytes;
    int64_t mem;             /* budget held (background tasks) */
    CoQueue waiters;         /* client writes waiting for this range */
    ListHead link;
};

struct BlockCopyState {
    BlockChild *source, *target;
    int64_t len, cluster_size;
    HBitmap *bitmap;         /* 1 = still needs a copy */
    ListHead tasks;
    int n_tasks;
    int64_t in_flight_bytes;
    CoQueue task_done;

    BlockCopyProgressFn *progress;
    void *progress_opaque;

    int64_t buf_limit, mem_in_use;
    CoQueue mem_waiters;

    int clients_in_flight;
    int64_t client_end_ns;   /* clock_ns() when the last one ended */

    BlockNode *skip_top, *skip_base;
    bool skip_unallocated;
    bool compress;
    bool disabled;
};

/*
 * The daemon-wide budget, shared by jobs in every thread (backups of disks
 * in different iothreads): a mutex guards it, and a waiter is a coroutine
 * of any context, woken with aio_co_wake (which brings it back home).  A
 * waiter queues itself under the lock and only then yields; a release in
 * another thread that wakes it meanwhile is run by its home loop after the
 * yield.
 */
typedef struct GlobalMemWaiter {
    ListHead link;
    Coroutine *co;
} GlobalMemWaiter;

static struct {
    pthread_mutex_t lock;
    int64_t limit, in_use;
    ListHead waiters;
} global_mem = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .limit = BLOCK_COPY_GLOBAL_MEM_DEFAULT,
    .waiters = LIST_HEAD_INIT(global_mem.waiters),
};

/* With the lock held: every waiter looks again. */
static void global_mem_wake_all_locked(void)
{
    while (!list_empty(&global_mem.waiters)) {
        GlobalMemWaiter *w = list_entry(global_mem.waiters.next,
                                        GlobalMemWaiter, link);
        list_del(&w->link);
        aio_co_wake(w->co);
    }
}

void block_copy_set_global_mem_limit(int64_t bytes)
{
    pthread_mutex_lock(&global_mem.lock);
    global_mem.limit = bytes;
    global_mem_wake_all_locked();
    pthread_mutex_unlock(&global_mem.lock);
}

int64_t block_copy_global_mem_in_use(void)
{
    pthread_mutex_lock(&global_mem.lock);
    int64_t n = global_mem.in_use;
    pthread_mutex_unlock(&global_mem.lock);
    return n;
}

static void coroutine_fn global_mem_acquire(int64_t bytes)
{
    GlobalMemWaiter w = { .co = coroutine_self() };

    pthread_mutex_lock(&global_mem.lock);
    while (global_mem.in_use > 0 &&
           global_mem.in_use + bytes > global_mem.limit) {
        list_add_tail(&global_mem.waiters, &w.link);
        pthread_mutex_unlock(&global_mem.lock);
        coroutine_yield();
        pthread_mutex_lock(&global_mem.lock);
    }
    global_mem.in_use += bytes;
    pthread_mutex_unlock(&global_mem.lock);
}

static void global_mem_release(int64_t bytes)
{
    pthread_mutex_lock(&global_mem.lock);
    global_mem.in_use -= bytes;
    global_mem_wake_all_locked();
    pthread_mutex_unlock(&global_mem.lock);
}

static int cluster_shift(int64_t cluster_size)
{
    int shift = 0;
    while ((1LL << shift) < cluster_size) {
        shift++;
    }
    return shift;
}

BlockCopyState *block_copy_state_new(BlockChild *source, BlockChild *target,
                                     int64_t len, int64_t cluster_size,
                                     Error **errp)
{
    BlockCopyState *s;

    if (cluster_size <= 0 || (cluster_size & (cluster_size - 1))) {
        error_setg(errp, "Invalid copy cluster size %lld",
                   (long long)cluster_size);
        return NULL;
    }
    s = bj_calloc(1, sizeof(*s));
    s->source = source;
    s->target = target;
    s->len = len;
    s->cluster_size = cluster_size;
    /* One bit per cluster of the disk: refused, not aborted on, when the
     * disk is too large for it (hbitmap.h). */
    s->bitmap = hbitmap_new_checked((uint64_t)len,
                                    cluster_shift(cluster_size), errp);
    if (!s->bitmap) {
        free(s);
        error_prepend(errp, "Cannot create the copy bitmap of node '%s'",
                      source->node->node_name);
        return NULL;
    }
    if (len > 0) {
        hbitmap_set(s->bitmap, 0, (uint64_t)len);
    }
    list_init(&s->tasks);
    co_queue_init(&s->task_done);
    co_queue_init(&s->mem_waiters);
    s->buf_limit = 16LL << 20;
    return s;
}

void block_copy_state_free(BlockCopyState *s)
{
    if (!s) {
        return;
    }
    assert(s->n_tasks == 0);
    hbitmap_free(s->bitmap);
    free(s);
}

void block_copy_set_progress(BlockCopyState *s, BlockCopyProgressFn *fn,
                             void *opaque)
{
    s->progress = fn;
    s->progress_opaque = opaque;
}

void block_copy_set_buf_limit(BlockCopyState *s, int64_t bytes)
{
    s->buf_limit = bytes;
    co_queue_restart_all(&s->mem_waiters);
}

void block_copy_set_skip_unallocated(BlockCopyState *s, BlockNode *source,
                                     BlockNode *base)
{
    s->skip_unallocated = source != NULL;
    s->skip_top = source;
    s->skip_base = base;
}

void block_copy_set_compress(BlockCopyState *s, bool compress)
{
    s->compress = compress;
}

void block_copy_set_disabled(BlockCopyState *s, bool disabled)
{
    s->disabled = disabled;
}

void block_copy_set_needs_copy(BlockCopyState *s, const HBitmap *src)
{
    uint64_t at = 0, n = 0, size = hbitmap_size(src);

    assert(s->n_tasks == 0);
    hbitmap_reset_all(s->bitmap);
    if (size > (uint64_t)s->len) {
        size = (uint64_t)s->len;
    }
    /* hbitmap_set marks every cluster the run touches. */
    while (at < size && hbitmap_next_dirty_area(src, &at, size, UINT64_MAX,
                                                &n)) {
        hbitmap_set(s->bitmap, at, n);
        at += n;
    }
}

int coroutine_fn block_copy_reset_unallocated(BlockCopyState *s,
                                              int64_t offset,
                                              int64_t *count)
{
    int64_t cs = s->cluster_size, total = 0;

    assert(offset % cs == 0 && offset < s->len && s->skip_unallocated);
    for (;;) {
        int64_t at = offset + total, pnum = 0;
        bool zero = false;
        int ret = block_co_is_allocated_above(s->skip_top, s->skip_base, at,
                                              s->len - at, &pnum, &zero);
        if (ret < 0) {
            return ret;
        }
        if (pnum <= 0) {
            pnum = s->len - at;    /* no answer: treat the rest as one */
        }
        total += pnum;
        if (ret || offset + total >= s->len) {
            /* Allocated: keep every cluster the run touches.  Or the
             * disk ends unallocated: drop the rest. */
            int64_t end = offset + (total + cs - 1) / cs * cs;
            *count = (end > s->len ? s->len : end) - offset;
            if (!ret) {
                hbitmap_reset(s->bitmap, (uint64_t)offset,
                              (uint64_t)*count);
            }
            return ret;
        }
        if (total >= cs) {
            /* Whole unallocated clusters, the rest looked at again. */
            *count = total / cs * cs;
            hbitmap_reset(s->bitmap, (uint64_t)offset, (uint64_t)*count);
            return 0;
        }
        /* Less than a cluster unallocated: its tail decides. */
    }
}

void block_copy_merge_uncopied(BlockCopyState *s, BdrvDirtyBitmap *bm)
{
    BlockCopyTask *t;

    bdrv_dirty_bitmap_merge_hbitmap(bm, s->bitmap);
    /* A task still in flight may yet fail: count it as not copied. */
    list_for_each_entry(t, &s->tasks, link) {
        bdrv_set_dirty_bitmap(bm, t->offset, t->bytes);
    }
}

HBitmap *block_copy_bitmap(BlockCopyState *s)
{
    return s->bitmap;
}

int64_t block_copy_cluster_size(BlockCopyState *s)
{
    return s->cluster_size;
}

/* Bytes of [offset, offset+bytes) counted in whole clusters: a disk whose
 * size is not a multiple of the cluster size still counts its last cluster
 * whole in progress, as qemu does. */
static int64_t cluster_bytes(BlockCopyState *s, int64_t offset, int64_t bytes)
{
    int64_t cs = s->cluster_size;
    return (offset + bytes + cs - 1) / cs * cs - offset;
}

int64_t block_copy_remaining(BlockCopyState *s)
{
    int64_t n = (int64_t)hbitmap_count(s->bitmap) + s->in_flight_bytes;
    int64_t tail = cluster_bytes(s, 0, s->len) - s->len;

    /* hbitmap_count clips the last cluster to the disk's end. */
    if (tail && hbitmap_get(s->bitmap, (uint64_t)(s->len - 1))) {
        n += tail;
    }
    return n;
}

int block_copy_tasks_in_flight(BlockCopyState *s)
{
    return s->n_tasks;
}

bool block_copy_clients_active(BlockCopyState *s, int64_t window_ns)
{
    return s->clients_in_flight > 0 ||
           (s->client_end_ns && clock_ns() - s->client_end_ns < window_ns);
}

/* ---- tasks ---- */

static bool ranges_overlap(int64_t a, int64_t an, int64_t b, int64_t bn)
{
    return a < b + bn && b < a + an;
}

/* Takes [offset, offset+bytes) out of the bitmap into a new task.  The
 * caller found it dirty: with the invariant, no task overlaps it. */
static BlockCopyTask *task_create(BlockCopyState *s, int64_t offset,
                                  int64_t bytes, int64_t mem)
{
    BlockCopyTask *t = bj_calloc(1, sizeof(*t));
    t->s = s;
    t->offset = offset;
    t->bytes = bytes;
    t->mem = mem;
    co_queue_init(&t->waiters);
    hbitmap_reset(s->bitmap, (uint64_t)offset, (uint64_t)bytes);
    list_add_tail(&s->tasks, &t->link);
    s->n_tasks++;
    s->in_flight_bytes += cluster_bytes(s, offset, bytes);
    return t;
}

static void mem_release(BlockCopyState *s, int64_t mem)
{
    if (mem) {
        s->mem_in_use -= mem;
        global_mem_release(mem);
        co_queue_restart_all(&s->mem_waiters);
    }
}

/* Ends t: failed clusters need a copy again, waiters look again.  No yield
 * between leaving the list and setting the bits keeps the invariant. */
static void task_end(BlockCopyTask *t, bool failed)
{
    BlockCopyState *s = t->s;

    list_del(&t->link);
    s->n_tasks--;
    s->in_flight_bytes -= cluster_bytes(s, t->offset, t->bytes);
    if (failed) {
        hbitmap_set(s->bitmap, (uint64_t)t->offset, (uint64_t)t->bytes);
    }
    mem_release(s, t->mem);
    co_queue_restart_all(&t->waiters);
    co_queue_restart_all(&s->task_done);
    free(t);
}

static void progress(BlockCopyState *s, int64_t bytes)
{
    if (s->progress && bytes > 0) {
        s->progress(s->progress_opaque, bytes);
    }
}

/* ---- copying ---- */

/* Whether the target already reads [offset, offset+*pnum) as zeroes. */
static bool coroutine_fn target_reads_zero(BlockCopyState *s, int64_t offset,
                                           int64_t bytes, int64_t *pnum)
{
    BlockNode *t = s->target->node;
    int ret = bdrv_co_block_status(t, offset, bytes, pnum, NULL, NULL);
    if (ret < 0) {
        *pnum = bytes;
        return false;
    }
    if (ret & BLK_STATUS_ZERO) {
        return true;
    }
    return !(ret & BLK_STATUS_ALLOCATED) && !t->backing;
}

static int coroutine_fn copy_data(BlockCopyState *s, int64_t offset,
                                  int64_t bytes, bool *error_is_read)
{
    void *buf = bufpool_try_alloc((size_t)bytes);
    IOVector qiov;
    int ret;

    if (!buf) {
        *error_is_read = true;
        return -ENOMEM;
    }
    iov_vec_init_buf(&qiov, buf, (size_t)bytes);
    *error_is_read = true;
    ret = bdrv_co_preadv(s->source, offset, bytes, &qiov, 0);
    if (ret >= 0) {
        *error_is_read = false;
        ret = bdrv_co_pwritev(s->target, offset, bytes, &qiov,
                              s->compress ? BLK_REQ_WRITE_COMPRESSED : 0);
    }
    iov_vec_destroy(&qiov);
    bufpool_free(buf, (size_t)bytes);
    return ret < 0 ? ret : 0;
}

/* Copies one piece at the start of [offset, offset+bytes) by block status;
 * *pnum gets its length. */
static int coroutine_fn copy_piece(BlockCopyState *s, int64_t offset,
                                   int64_t bytes, int64_t *pnum,
                                   bool *error_is_read)
{
    BlockNode *src = s->source->node;
    bool zero = false;
    int ret;

    *error_is_read = true;
    if (s->skip_unallocated) {
        ret = block_co_is_allocated_above(s->skip_top, s->skip_base, offset,
                                          bytes, pnum, &zero);
        if (ret < 0) {
            *pnum = bytes;
            return ret;
        }
        if (ret == 0) {
            return 0;        /* the target's backing supplies it */
        }
    } else {
        ret = block_co_is_allocated_above(src, NULL, offset, bytes, pnum,
                                          &zero);
        if (ret < 0) {
            /* No status: copy the bytes as they read. */
            *pnum = bytes;
            ret = 1;
            zero = false;
        } else if (ret == 0) {
            zero = true;     /* a hole of the whole chain */
        }
    }
    if (!zero) {
        return copy_data(s, offset, *pnum, error_is_read);
    }
    *error_is_read = false;
    int64_t done = 0;
    while (done < *pnum) {
        int64_t n = 0;
        if (target_reads_zero(s, offset + done, *pnum - done, &n)) {
            done += n;
            continue;
        }
        ret = bdrv_co_pwrite_zeroes(s->target, offset + done, n,
                                    BLK_REQ_MAY_UNMAP);
        if (ret < 0) {
            return ret;
        }
        done += n;
    }
    return 0;
}

/* Copies [offset, offset+bytes) (the caller's task) in pieces of at most
 * max_piece bytes, reporting progress per piece. */
static int coroutine_fn copy_range(BlockCopyState *s, int64_t offset,
                                   int64_t bytes, int64_t max_piece,
                                   bool *error_is_read)
{
    int64_t done = 0;

    while (done < bytes) {
        int64_t n = bytes - done, pnum = 0;
        if (n > max_piece) {
            n = max_piece;
        }
        int ret = copy_piece(s, offset + done, n, &pnum, error_is_read);
        if (ret < 0) {
            return ret;
        }
        done += pnum;
    }
    return 0;
}

int coroutine_fn block_copy_task_run(BlockCopyTask *t, bool *error_is_read)
{
    BlockCopyState *s = t->s;
    int ret = copy_range(s, t->offset, t->bytes, t->bytes, error_is_read);
    int64_t bytes = cluster_bytes(s, t->offset, t->bytes);

    task_end(t, ret < 0);
    if (ret >= 0) {
        progress(s, bytes);
    }
    return ret;
}

/* ---- the client path ---- */

static BlockCopyTask *find_overlapping(BlockCopyState *s, int64_t offset,
                                       int64_t bytes)
{
    BlockCopyTask *t;
    list_for_each_entry(t, &s->tasks, link) {
        if (ranges_overlap(t->offset, t->bytes, offset, bytes)) {
            return t;
        }
    }
    return NULL;
}

int coroutine_fn block_copy(BlockCopyState *s, int64_t offset, int64_t bytes,
                            bool *error_is_read)
{
    int64_t cs = s->cluster_size;
    int64_t start = offset / cs * cs;
    int64_t end = offset + bytes;

    *error_is_read = false;
    end = (end + cs - 1) / cs * cs;
    if (end > s->len) {
        end = s->len;
    }
    while (!s->disabled && start < end) {
        uint64_t at = (uint64_t)start, n = 0;

        /* Claim and copy what nobody copies yet, one dirty run at a time
         * (a run is claimed whole before the first yield). */
        if (hbitmap_next_dirty_area(s->bitmap, &at, (uint64_t)end,
                                    UINT64_MAX, &n)) {
            uint64_t run_end = at + n;
            run_end = (run_end + (uint64_t)cs - 1) / (uint64_t)cs *
                      (uint64_t)cs;
            if (run_end > (uint64_t)s->len) {
                run_end = (uint64_t)s->len;
            }
            BlockCopyTask *t = task_create(s, (int64_t)at,
                                           (int64_t)(run_end - at), 0);
            s->clients_in_flight++;
            int ret = copy_range(s, t->offset, t->bytes, CLIENT_PIECE,
                                 error_is_read);
            int64_t done = cluster_bytes(s, t->offset, t->bytes);
            s->clients_in_flight--;
            s->client_end_ns = clock_ns();
            task_end(t, ret < 0);
            if (ret < 0) {
                return ret;
            }
            progress(s, done);
            continue;
        }
        /* Nothing dirty left: wait for tasks still copying our clusters
         * (one that fails makes them dirty again: look again after). */
        BlockCopyTask *t = find_overlapping(s, start, end - start);
        if (!t) {
            break;
        }
        co_queue_wait(&t->waiters, NULL);
    }
    return 0;
}

/* ---- the background path ---- */

BlockCopyTask *coroutine_fn block_copy_claim(BlockCopyState *s,
                                             int64_t *offset,
                                             int64_t max_bytes)
{
    uint64_t at, n = 0;
    int64_t cs = s->cluster_size;

    max_bytes = max_bytes / cs * cs;
    if (max_bytes < cs) {
        max_bytes = cs;
    }
    /* Budget first: a job's own, then the daemon's.  The limits are at
     * least one chunk, so a lone task always fits. */
    while (s->mem_in_use > 0 && s->mem_in_use + max_bytes > s->buf_limit) {
        co_queue_wait(&s->mem_waiters, NULL);
    }
    /* The daemon's budget is taken for a whole chunk before the area is
     * chosen (the wait may yield), and what the task does not need is
     * given back at once. */
    global_mem_acquire(max_bytes);
    at = (uint64_t)*offset;
    if (!hbitmap_next_dirty_area(s->bitmap, &at, (uint64_t)s->len,
                                 (uint64_t)max_bytes, &n)) {
        at = 0;
        if (!hbitmap_next_dirty_area(s->bitmap, &at, (uint64_t)s->len,
                                     (uint64_t)max_bytes, &n)) {
            global_mem_release(max_bytes);
            return NULL;
        }
    }
    /* Whole clusters: the bits stand for them. */
    uint64_t end = (at + n + (uint64_t)cs - 1) / (uint64_t)cs * (uint64_t)cs;
    if (end > (uint64_t)s->len) {
        end = (uint64_t)s->len;
    }
    int64_t mem = (int64_t)(end - at);
    s->mem_in_use += mem;
    if (mem < max_bytes) {
        global_mem_release(max_bytes - mem);
    }
    *offset = (int64_t)end >= s->len ? 0 : (int64_t)end;
    return task_create(s, (int64_t)at, mem, mem);
}

void coroutine_fn block_copy_wait_any(BlockCopyState *s)
{
    co_queue_wait(&s->task_done, NULL);
}
