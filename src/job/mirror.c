/*
 * Mirror: copy a node that clients keep writing to onto a target, then
 * (on complete) put the target in its place.  Active block-commit is the
 * same job with type "commit", the base as target and the chain above it
 * as source.
 *
 *   clients -> [mirror_top] -> source        job: source --copy--> target
 *                  |  write-blocking: client writes also go to the target
 *                  v
 *          dirty bitmap on source (marked by the request path)
 *
 * The body clears a dirty area's bits, then copies it in an op coroutine by
 * block status: data is read and written, zero ranges are written as
 * zeroes (unmapping), ranges the target's backing supplies are discarded.
 * Up to 16 ops and buf-size bytes are in flight; an op covers up to
 * max(buf-size / 16, 1 MiB) contiguous dirty bytes.  A client write that
 * lands during an op dirties its range again once it is done (io.c marks
 * after completion), so the range is copied again; two ops never overlap,
 * so an older copy cannot land after a newer one.
 *
 * copy-mode auto (our extension) starts in background mode and samples the
 * dirty count once a second; when over AUTO_WINDOW samples it fell by less
 * than a quarter of what the job copied (clients dirty again most of what
 * it copies: it would converge slowly or never), the job turns
 * write-blocking for good: from then on every client write also reaches
 * the target before it is acknowledged, and the dirty count only falls.
 * block-job-change can do the same by hand.
 *
 * READY: nothing dirty, nothing in flight, target flushed.  Complete (or a
 * soft cancel in READY): the body enters a drained section of mirror_top
 * (clients wait), checks it is still converged and exits holding it; the
 * exit moves mirror_top's parents back to the source and, on complete,
 * the source's parents onto the target (bdrv_replace_node, with source and
 * target drained, so postponed client requests retry on the target).
 */
#include "job/mirror.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/chain.h"
#include "block/dirty-bitmap-named.h"
#include "block/dirty-bitmap.h"
#include "block/job-filter.h"
#include "block/reopen.h"
#include "job/blockjob.h"
#include "util/alloc.h"
#include "util/bufpool.h"
#include "util/iov.h"
#include "util/list.h"
#include "util/log.h"

#define MAX_IN_FLIGHT     16
#define DEFAULT_BUF_SIZE  (16 * 1024 * 1024)
#define MIN_OP_SIZE       (1024 * 1024)
#define READY_SLEEP_NS    100000000LL
#define INIT_CHUNK        (1LL << 30)
/* Copied bytes between two writeback hints to the target (see
 * bdrv_co_start_writeback): the page cache starts writing the copy back
 * while the job goes on, instead of all of it in the flush before READY. */
#define WRITEBACK_STEP    (32 * 1024 * 1024)
#define SAMPLE_NS         1000000000LL  /* the dirty count's sampling period */
#define AUTO_WINDOW       3             /* samples without shrinking: switch */

typedef struct MirrorJob MirrorJob;

typedef struct MirrorOp {
    MirrorJob *s;
    int64_t offset, bytes;
    bool active;             /* a client's write-blocking copy */
    /* Another op overlapped this one while both were in flight: an active
     * op then must not clear the bitmap (the other may land later). */
    bool conflict;
    ListHead link;
} MirrorOp;

struct MirrorJob {
    Job job;
    /* Active commit reopened a read-only base read-write for the job. */
    bool base_read_only;
    BlockNode *source;       /* referenced */
    BlockNode *target;       /* referenced */
    BlockNode *mirror_top;   /* the filter; our reference */
    BlockNode *replaces;     /* the node the pivot replaces (referenced) */
    BlockNode *base;         /* copy what is allocated above it (NULL: all) */
    BlockChild *src_c, *tgt_c;
    BdrvDirtyBitmap *dbm;
    MirrorSyncMode sync;
    bool is_commit;
    bool write_blocking;     /* the mode now: clients' writes copied too */
    bool auto_mode;          /* copy-mode auto: may turn write-blocking */

    /* Sampling, for auto and the query: dirty counts a second apart.
     * The body (in the nodes' context) writes write_blocking,
     * dirty_bytes, dirty_rate and eta_s; the query reads them from the
     * main loop, so they are accessed atomically. */
    int64_t sample_ns;       /* when the newest sample was taken (0: none) */
    uint64_t samples[AUTO_WINDOW + 1];   /* newest first */
    uint64_t copied[AUTO_WINDOW + 1];    /* progress_current at each */
    unsigned nsamples;
    uint64_t dirty_bytes;    /* the newest count, for the query */
    int64_t dirty_rate;      /* bytes/s clients dirtied, last period */
    int64_t eta_s;           /* to convergence at the last period's pace;
                                -1: not converging */
    bool count_whole_disk;     /* skipped holes count as progress */
    JobOnError on_source_error, on_target_error;
    int64_t len, granularity, buf_size, max_op;
    bool target_has_backing;

    ListHead ops;
    int in_flight;           /* background ops */
    int active_in_flight;    /* write-blocking ops */
    int64_t bytes_in_flight;
    int64_t since_writeback;  /* bytes copied since the last hint */
    bool writeback_busy;      /* an op is giving the hint */
    CoQueue op_done;
    int64_t cursor;
    unsigned issued;
    int64_t converge_at;     /* dirty bytes the final drained copy takes */
    unsigned errors;         /* failed requests so far */

    int ret;                 /* first error the policy reported */
    bool synced;
    bool should_complete;
    bool in_drain;           /* the body exited holding mirror_top drained */
    bool exited;             /* graph restored */
    bool late_copy;          /* body done: writes go to both sides */
    int late_error;          /* such a write failed on the target */
};

static bool ranges_overlap(int64_t a, int64_t an, int64_t b, int64_t bn)
{
    return a < b + bn && b < a + an;
}

static MirrorOp *op_begin(MirrorJob *s, int64_t offset, int64_t bytes,
                          bool active)
{
    MirrorOp *op = bj_calloc(1, sizeof(*op));
    MirrorOp *o;

    op->s = s;
    op->offset = offset;
    op->bytes = bytes;
    op->active = active;
    list_for_each_entry(o, &s->ops, link) {
        if (ranges_overlap(o->offset, o->bytes, offset, bytes)) {
            o->conflict = op->conflict = true;
        }
    }
    list_add_tail(&s->ops, &op->link);
    if (active) {
        s->active_in_flight++;
    } else {
        __atomic_add_fetch(&s->in_flight, 1, __ATOMIC_RELEASE);
        s->bytes_in_flight += bytes;
    }
    return op;
}

static void op_end(MirrorOp *op)
{
    MirrorJob *s = op->s;

    bool active = op->active;

    list_del(&op->link);
    if (active) {
        s->active_in_flight--;
    } else {
        s->bytes_in_flight -= op->bytes;
    }
    free(op);
    /* The waiters run after us (woken from a coroutine, they are
     * scheduled).  The count drops last: a drained section that sees it
     * at 0 (mirror_drained_poll, a move of the job's nodes to another
     * context) sees everything the op did. */
    co_queue_restart_all(&s->op_done);
    if (!active) {
        __atomic_sub_fetch(&s->in_flight, 1, __ATOMIC_RELEASE);
        /* A drain in the main loop may be waiting for it. */
        aio_wait_kick();
    }
}

static bool overlaps_in_flight(MirrorJob *s, int64_t offset, int64_t bytes)
{
    MirrorOp *o;
    list_for_each_entry(o, &s->ops, link) {
        if (ranges_overlap(o->offset, o->bytes, offset, bytes)) {
            return true;
        }
    }
    return false;
}

/* Applies the error policy to a failed request; the range is dirty again
 * (copied again unless the policy ends the job). */
static void coroutine_fn mirror_error(MirrorJob *s, bool is_read, int ret,
                                      int64_t offset, int64_t bytes)
{
    bdrv_set_dirty_bitmap(s->dbm, offset, bytes);
    s->errors++;
    JobErrorAction a = job_error_action(&s->job, is_read ?
                                        s->on_source_error :
                                        s->on_target_error, is_read, ret);
    if (a == JOB_ERROR_ACTION_REPORT && !s->ret) {
        s->ret = ret;
    }
}

/* Whether [offset, offset+bytes) needs no copy for a target that may
 * already read as zeroes there. */
static bool coroutine_fn target_reads_zero(MirrorJob *s, int64_t offset,
                                           int64_t bytes, int64_t *pnum)
{
    int ret = bdrv_co_block_status(s->target, offset, bytes, pnum, NULL,
                                   NULL);
    if (ret < 0) {
        *pnum = bytes;
        return false;
    }
    if (ret & BLK_STATUS_ZERO) {
        return true;
    }
    return !(ret & BLK_STATUS_ALLOCATED) && !s->target_has_backing;
}

/* ---- copying one range ---- */

static int coroutine_fn copy_data(MirrorJob *s, int64_t offset,
                                  int64_t bytes, bool *is_read)
{
    void *buf = bufpool_alloc((size_t)bytes);
    IOVector qiov;
    int ret;

    iov_vec_init_buf(&qiov, buf, (size_t)bytes);
    *is_read = true;
    ret = bdrv_co_preadv(s->src_c, offset, bytes, &qiov, 0);
    if (ret >= 0) {
        *is_read = false;
        ret = bdrv_co_pwritev(s->tgt_c, offset, bytes, &qiov, 0);
    }
    iov_vec_destroy(&qiov);
    bufpool_free(buf, (size_t)bytes);
    return ret;
}

/* Copies one piece of [offset, offset+bytes): *pnum gets its length. */
static int coroutine_fn copy_piece(MirrorJob *s, int64_t offset,
                                   int64_t bytes, int64_t *pnum,
                                   bool *is_read)
{
    bool zero = false;
    int ret;

    *is_read = true;
    ret = block_co_is_allocated_above(s->source, s->base, offset, bytes,
                                      pnum, &zero);
    if (ret < 0) {
        *pnum = bytes;
        return ret;
    }
    *is_read = false;
    if (ret == 1 && !zero) {
        return copy_data(s, offset, *pnum, is_read);
    }
    if (ret == 1 || !s->base) {
        /* Reads as zeroes on the source. */
        return bdrv_co_pwrite_zeroes(s->tgt_c, offset, *pnum,
                                     BLK_REQ_MAY_UNMAP);
    }
    if (s->is_commit) {
        return 0;            /* the base itself holds it already */
    }
    /* sync=top: the target's backing supplies it, as the source's does. */
    return bdrv_co_pdiscard(s->tgt_c, offset, *pnum);
}

static void coroutine_fn mirror_op_co(void *opaque)
{
    MirrorOp *op = opaque;
    MirrorJob *s = op->s;
    int64_t done = 0;

    while (done < op->bytes) {
        int64_t pnum = 0;
        bool is_read = false;
        int ret = copy_piece(s, op->offset + done, op->bytes - done, &pnum,
                             &is_read);
        if (ret < 0) {
            mirror_error(s, is_read, ret, op->offset, op->bytes);
            break;
        }
        done += pnum;
        job_progress_update(&s->job, (uint64_t)pnum);
        s->since_writeback += pnum;
    }
    if (s->since_writeback >= WRITEBACK_STEP && !s->writeback_busy) {
        s->since_writeback = 0;
        s->writeback_busy = true;
        bdrv_co_start_writeback(s->target);
        s->writeback_busy = false;
    }
    op_end(op);
}

/* Starts an op on the next dirty area and returns its length; 0 when the
 * area overlaps an op in flight (wait for it) or nothing is dirty. */
static int64_t issue_op(MirrorJob *s)
{
    int64_t off = s->cursor, n = 0;

    if (!bdrv_dirty_bitmap_next_dirty_area(s->dbm, &off, s->len, s->max_op,
                                           &n)) {
        off = 0;
        if (!bdrv_dirty_bitmap_next_dirty_area(s->dbm, &off, s->len,
                                               s->max_op, &n)) {
            return 0;
        }
    }
    /* Whole granules: the bits stand for them. */
    int64_t start = off / s->granularity * s->granularity;
    int64_t end = off + n;
    end = (end + s->granularity - 1) / s->granularity * s->granularity;
    if (end > s->len) {
        end = s->len;
    }
    if (overlaps_in_flight(s, start, end - start)) {
        return 0;
    }
    bdrv_reset_dirty_bitmap(s->dbm, start, end - start);
    if (end >= s->len) {
        /* A whole pass and still not converged: clients write faster
         * than we copy; accept a longer final drained copy.  And the
         * back-off must not hold the next pass back: what is dirty now
         * is what clients keep dirtying, which only a faster copy (or
         * write-blocking) catches up with. */
        s->cursor = 0;
        if (bdrv_get_dirty_count(s->dbm) > 0) {
            job_yield_step_aside(&s->job);
        }
        s->converge_at = s->converge_at * 2 > s->buf_size
                         ? s->buf_size : s->converge_at * 2;
    } else {
        s->cursor = end;
    }
    MirrorOp *op = op_begin(s, start, end - start, false);
    aio_co_enter(s->job.ctx, coroutine_create(mirror_op_co, op));
    return end - start;
}

/* ---- write-blocking: clients' writes reach the target before they are
 * acknowledged ---- */

static void coroutine_fn mirror_active_write(void *opaque, BdrvWriteKind kind,
                                             int64_t offset, int64_t bytes,
                                             IOVector *qiov, unsigned flags)
{
    MirrorJob *s = opaque;
    MirrorOp *op;
    int ret;

    if (s->exited || !s->tgt_c) {
        return;
    }
    op = op_begin(s, offset, bytes, true);
    switch (kind) {
    case BDRV_WRITE:
        ret = bdrv_co_pwritev(s->tgt_c, offset, bytes, qiov, 0);
        break;
    case BDRV_WRITE_ZEROES:
        ret = bdrv_co_pwrite_zeroes(s->tgt_c, offset, bytes,
                                    flags & BLK_REQ_MAY_UNMAP);
        break;
    default:
        ret = bdrv_co_pdiscard(s->tgt_c, offset, bytes);
        break;
    }
    if (ret < 0 && s->late_copy) {
        /* The body is gone: nothing retries, the job fails at prepare. */
        if (!s->late_error) {
            s->late_error = ret;
        }
    } else if (ret < 0) {
        mirror_error(s, false, ret, offset, bytes);
    } else if (!op->conflict && kind != BDRV_DISCARD) {
        /* The target has these bytes: clear the granules wholly covered
         * (the request path marked them when the source write ended). */
        int64_t g = s->granularity;
        int64_t start = (offset + g - 1) / g * g;
        int64_t end = offset + bytes == s->len ? s->len
                                               : (offset + bytes) / g * g;
        if (end > start) {
            bdrv_reset_dirty_bitmap(s->dbm, start, end - start);
        }
    }
    op_end(op);
}

/* From here on clients' writes reach the target too (never undone). */
static void mirror_go_write_blocking(MirrorJob *s)
{
    if (__atomic_load_n(&s->write_blocking, __ATOMIC_ACQUIRE)) {
        return;
    }
    __atomic_store_n(&s->write_blocking, true, __ATOMIC_RELEASE);
    bdrv_filter_set_after_write_hook(s->mirror_top, mirror_active_write, s);
    log_info("%s job '%s': clients dirty faster than it copies; "
             "copy-mode now write-blocking", s->job.driver->type, s->job.id);
}

/*
 * Once a period: the dirty count's sample, the clients' dirtying rate and
 * the ETA; copy-mode auto decides over the last AUTO_WINDOW periods.  A
 * gap of two periods (a pause, a long sleep) starts the window again.
 */
static void mirror_sample(MirrorJob *s, uint64_t cnt)
{
    int64_t now = clock_ns();
    int64_t dt = now - s->sample_ns;
    uint64_t done = job_progress_current(&s->job);
    uint64_t copied = done - s->copied[0];

    __atomic_store_n(&s->dirty_bytes, cnt, __ATOMIC_RELAXED);
    if (s->sample_ns && dt < SAMPLE_NS) {
        return;
    }
    if (!s->sample_ns || dt >= 2 * SAMPLE_NS) {
        s->nsamples = 0;
        __atomic_store_n(&s->dirty_rate, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&s->eta_s, -1, __ATOMIC_RELAXED);
    } else {
        /* copied = what it shrank by + what clients dirtied meanwhile */
        int64_t shrink = (int64_t)s->samples[0] - (int64_t)cnt;
        int64_t dirtied = (int64_t)copied - shrink;

        __atomic_store_n(&s->dirty_rate,
                         dirtied > 0 ? dirtied * 1000000000LL / dt : 0,
                         __ATOMIC_RELAXED);
        __atomic_store_n(&s->eta_s, shrink > 0 ?
                         (int64_t)(cnt * (uint64_t)dt / (uint64_t)shrink /
                                   1000000000ULL) : cnt ? -1 : 0,
                         __ATOMIC_RELAXED);
    }
    memmove(&s->samples[1], &s->samples[0],
            AUTO_WINDOW * sizeof(s->samples[0]));
    memmove(&s->copied[1], &s->copied[0], AUTO_WINDOW * sizeof(s->copied[0]));
    s->samples[0] = cnt;
    s->copied[0] = done;
    if (s->nsamples <= AUTO_WINDOW) {
        s->nsamples++;
    }
    s->sample_ns = now;

    /*
     * Over the window the count fell by less than a quarter of what the
     * job copied: clients dirty again most of what it copies, and the
     * copy would take four times as long as it should, or forever.
     */
    if (s->auto_mode && !s->write_blocking &&
        !__atomic_load_n(&s->synced, __ATOMIC_ACQUIRE) && cnt > 0 &&
        s->nsamples > AUTO_WINDOW) {
        int64_t fell = (int64_t)s->samples[AUTO_WINDOW] - (int64_t)cnt;
        uint64_t window_copied = done - s->copied[AUTO_WINDOW];

        if (s->auto_mode && window_copied > 0 &&
            fell < (int64_t)(window_copied / 4)) {
            mirror_go_write_blocking(s);
        }
    }
}

/* ---- the body ---- */

static int coroutine_fn mirror_dirty_init(MirrorJob *s)
{
    int64_t off = 0;
    unsigned n = 0;

    if (s->sync == MIRROR_SYNC_NONE) {
        return 0;
    }
    while (off < s->len) {
        int64_t pnum = 0, bytes = s->len - off;
        bool zero = false;
        int ret;

        if (bytes > INIT_CHUNK) {
            bytes = INIT_CHUNK;
        }
        if (++n % 256 == 0) {
            job_sleep_ns(&s->job, 0);
        }
        if (job_is_cancelled(&s->job)) {
            return 0;
        }
        ret = block_co_is_allocated_above(s->source, s->base, off, bytes,
                                          &pnum, &zero);
        if (ret < 0) {
            return ret;
        }
        if (ret == 1) {
            bdrv_set_dirty_bitmap(s->dbm, off, pnum);
        } else if (!s->base) {
            /* A hole of the whole chain: copy zeroes only where the
             * target would not read zeroes anyway. */
            int64_t t = 0;
            for (int64_t o = off; o < off + pnum; o += t) {
                if (!target_reads_zero(s, o, off + pnum - o, &t)) {
                    bdrv_set_dirty_bitmap(s->dbm, o, t);
                } else if (s->count_whole_disk) {
                    job_progress_update(&s->job, (uint64_t)t);
                }
            }
        }
        off += pnum;
    }
    return 0;
}

static bool converged(MirrorJob *s)
{
    return bdrv_get_dirty_count(s->dbm) == 0 && s->in_flight == 0 &&
           s->active_in_flight == 0;
}

/*
 * Inside the final drained section: clients wait, so what they dirtied
 * while the drain waited for their last requests is all there is; copy it
 * now rather than give up the section (a client that always has a request
 * in flight would otherwise keep the job from ever completing).  False if
 * a copy failed: the caller leaves the section and the policy acts.
 */
static bool coroutine_fn copy_rest_drained(MirrorJob *s)
{
    unsigned errors = s->errors;

    while (!converged(s)) {
        if (s->ret || s->errors != errors) {
            break;
        }
        if (!(s->in_flight < MAX_IN_FLIGHT &&
              s->bytes_in_flight < s->buf_size && issue_op(s) > 0)) {
            co_queue_wait(&s->op_done, NULL);
        }
    }
    while (s->in_flight > 0) {
        co_queue_wait(&s->op_done, NULL);
    }
    return converged(s) && !s->ret && s->errors == errors;
}

/*
 * The first convergence: once little is dirty, clients wait for a moment
 * while the rest is copied and the target flushed.  Without that, a client
 * that writes all the time keeps a few granules dirty at every look and
 * the job never becomes READY.  0, -EAGAIN (a copy failed: the policy
 * acted, try again later) or the flush's -errno.
 */
static int coroutine_fn mirror_converge(MirrorJob *s)
{
    int ret = -EAGAIN;

    while (s->in_flight > 0) {
        co_queue_wait(&s->op_done, NULL);
    }
    block_job_co_drained_begin(&s->job, s->mirror_top);
    if (copy_rest_drained(s)) {
        ret = bdrv_co_flush(s->target);
    }
    block_job_co_drained_end(&s->job, s->mirror_top);
    return ret;
}

static int coroutine_fn mirror_run(Job *job, Error **errp)
{
    MirrorJob *s = (MirrorJob *)job;
    int64_t tlen = bdrv_getlength(s->target);
    int ret;

    s->len = bdrv_getlength(s->source);
    if (s->len < 0) {
        return (int)s->len;
    }
    if (tlen < 0) {
        return (int)tlen;
    }
    if (tlen != s->len) {
        error_setg(errp, "Source and target image have different sizes");
        return -EINVAL;
    }
    ret = mirror_dirty_init(s);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read the source's block "
                         "status");
        return ret;
    }
    for (;;) {
        uint64_t cnt;

        job_error_backoff(job);
        job_pause_point(job);
        if (s->ret || job_is_cancelled(job)) {
            break;
        }
        cnt = bdrv_get_dirty_count(s->dbm);
        job_progress_set_remaining(job, cnt + (uint64_t)s->bytes_in_flight);
        mirror_sample(s, cnt);
        if (!s->synced && cnt <= (uint64_t)s->converge_at) {
            ret = mirror_converge(s);
            if (ret == 0) {
                job_progress_set_remaining(job, 0);
                __atomic_store_n(&s->synced, true, __ATOMIC_RELEASE);
                /* what the query shows at READY is this instant's count */
                __atomic_store_n(&s->dirty_bytes, bdrv_get_dirty_count(s->dbm),
                                 __ATOMIC_RELAXED);
                job_transition_to_ready(job);
            } else if (ret != -EAGAIN &&
                       job_error_action(job, s->on_target_error, false,
                                        ret) == JOB_ERROR_ACTION_REPORT) {
                s->ret = ret;
            }
            continue;
        }
        if (cnt > 0 && s->in_flight < MAX_IN_FLIGHT &&
            s->bytes_in_flight < s->buf_size) {
            int64_t n = issue_op(s);
            if (n > 0) {
                /* Throttled after sending, as the reference: the first
                 * chunk goes at once. */
                if (job_is_throttled(job)) {
                    job_ratelimit_sleep(job, (uint64_t)n);
                } else if (++s->issued % 64 == 0) {
                    job_sleep_ns(job, 0);   /* let the loop serve others */
                }
                continue;
            }
        }
        if (s->in_flight > 0 || s->active_in_flight > 0) {
            co_queue_wait(&s->op_done, NULL);
            continue;
        }
        if (cnt > 0) {
            job_sleep_ns(job, 0);
            continue;
        }
        /* Converged (and synced). */
        if (__atomic_load_n(&s->should_complete, __ATOMIC_ACQUIRE) ||
            job_cancel_requested(job)) {
            /* Clients wait from here; exit only if that left nothing to
             * copy (a write may have landed while the drain waited). */
            block_job_co_drained_begin(job, s->mirror_top);
            if (copy_rest_drained(s)) {
                job_progress_set_remaining(job, 0);
                s->in_drain = true;
                break;
            }
            block_job_co_drained_end(job, s->mirror_top);
            continue;
        }
        job_sleep_ns(job, READY_SLEEP_NS);
    }
    /* Ops still in flight finish before the job exits. */
    while (s->in_flight > 0) {
        co_queue_wait(&s->op_done, NULL);
    }
    if (s->ret) {
        return s->ret;
    }
    if (job_is_cancelled(job)) {
        return -ECANCELED;
    }
    if (s->in_drain) {
        /* Writes the flush must cover landed before the drain. */
        ret = bdrv_co_flush(s->target);
        if (ret < 0) {
            return ret;
        }
        /*
         * Until prepare (which may wait for job-finalize), clients' writes
         * go to both sides before they are acknowledged, instead of
         * waiting in the drained section all that time as qemu's do.
         */
        s->late_copy = true;
        bdrv_filter_set_after_write_hook(s->mirror_top, mirror_active_write,
                                         s);
        s->in_drain = false;
        block_job_co_drained_end(job, s->mirror_top);
    }
    return 0;
}

/* ---- completion and cancel ---- */

static void mirror_complete(Job *job, Error **errp)
{
    MirrorJob *s = (MirrorJob *)job;

    if (!__atomic_load_n(&s->synced, __ATOMIC_ACQUIRE)) {
        error_setg(errp, "The active block job '%s' cannot be completed",
                   job->id);
        return;
    }
    __atomic_store_n(&s->should_complete, true, __ATOMIC_RELEASE);
    /* A paused job (standby) completes once resumed: entering it now
     * would cut its pause short. */
    if (!job->paused) {
        job_enter(job);
    }
}

static bool mirror_cancel(Job *job, bool force)
{
    MirrorJob *s = (MirrorJob *)job;
    /* A soft cancel exists only once READY: stop without pivoting. */
    return force || !__atomic_load_n(&s->synced, __ATOMIC_ACQUIRE);
}

static bool mirror_drained_poll(Job *job)
{
    MirrorJob *s = (MirrorJob *)job;
    return __atomic_load_n(&s->in_flight, __ATOMIC_ACQUIRE) > 0;
}

/* Restores the graph: mirror_top goes, and with pivot the target takes
 * the place of `replaces`.  Source and target are drained meanwhile. */
static bool mirror_exit_common(MirrorJob *s, bool pivot, Error **errp)
{
    BlockNode *mt = s->mirror_top;
    Error *err = NULL;
    bool ok = true;

    if (s->exited) {
        return true;
    }
    s->exited = true;
    /* Drained first: in an iothread, clients' writes (the hook, the dirty
     * bitmap's marking) go on there until the section begins. */
    bdrv_drained_begin(s->source);
    bdrv_drained_begin(s->target);
    bdrv_filter_set_after_write_hook(mt, NULL, NULL);
    bdrv_release_dirty_bitmap(s->dbm);
    s->dbm = NULL;
    s->src_c = s->tgt_c = NULL;
    block_job_remove_all_nodes(&s->job);

    if (!bdrv_replace_node(mt, s->source, &err)) {
        log_error("mirror: could not remove the filter: %s",
                  error_get_pretty(err));
        error_free(err);
        err = NULL;
    }
    if (pivot && !bdrv_replace_node(s->replaces, s->target, errp)) {
        ok = false;
    }
    if (s->in_drain) {
        s->in_drain = false;
        bdrv_drained_end(mt);
    }
    bdrv_drained_end(s->target);
    bdrv_drained_end(s->source);
    s->mirror_top = NULL;
    bdrv_unref(mt);
    /* A base reopened for an active commit stays writable only if it
     * became the active layer; otherwise it is a backing image again. */
    if (s->base_read_only && !(pivot && ok)) {
        if (!bdrv_reopen_set_read_only(s->target, true, &err)) {
            error_report_err(err, "block-commit: reopening base read-only");
            err = NULL;
        }
    }
    s->base_read_only = false;
    return ok;
}

static int mirror_prepare(Job *job, Error **errp)
{
    MirrorJob *s = (MirrorJob *)job;
    bool pivot = s->should_complete && !job->cancelled;
    int ret;

    /* The writes copied since the body's last flush. */
    /* Clients wait from here to the pivot (exit_common ends it). */
    bdrv_drained_begin(s->mirror_top);
    s->in_drain = true;
    ret = s->late_error ? s->late_error : bdrv_flush(s->target);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not copy a write to the target");
        mirror_exit_common(s, false, NULL);
        return ret;
    }
    return mirror_exit_common(s, pivot, errp) ? 0 : -EPERM;
}

static void mirror_abort(Job *job)
{
    MirrorJob *s = (MirrorJob *)job;
    mirror_exit_common(s, false, NULL);
}

static void mirror_free(Job *job)
{
    MirrorJob *s = (MirrorJob *)job;

    if (!s->exited && s->mirror_top) {
        mirror_exit_common(s, false, NULL);
    }
    if (s->replaces) {
        bdrv_unref(s->replaces);
    }
    if (s->source) {
        bdrv_unref(s->source);
    }
    if (s->target) {
        bdrv_unref(s->target);
    }
}

static void mirror_query(Job *job, json_t *info)
{
    MirrorJob *s = (MirrorJob *)job;
    bool wb = __atomic_load_n(&s->write_blocking, __ATOMIC_ACQUIRE);
    bool synced = __atomic_load_n(&s->synced, __ATOMIC_ACQUIRE);
    int64_t eta = __atomic_load_n(&s->eta_s, __ATOMIC_RELAXED);

    /* qemu 8.2's member, then ours (clients ignore what they don't know) */
    json_object_set_new(info, "actively-synced", json_boolean(wb && synced));
    json_object_set_new(info, "x-copy-mode", json_string(
                            wb ? "write-blocking" : "background"));
    json_object_set_new(info, "x-copy-mode-auto", json_boolean(s->auto_mode));
    json_object_set_new(info, "x-dirty-bytes", json_integer((json_int_t)
                            __atomic_load_n(&s->dirty_bytes,
                                            __ATOMIC_RELAXED)));
    json_object_set_new(info, "x-dirty-rate", json_integer((json_int_t)
                            __atomic_load_n(&s->dirty_rate,
                                            __ATOMIC_RELAXED)));
    if (synced || eta >= 0) {
        json_object_set_new(info, "x-eta-seconds",
                            json_integer(synced ? 0 : eta));
    }
}

/* In the nodes' context, where the body and the filter's hook live. */
static void coroutine_fn mirror_change_co(void *opaque)
{
    mirror_go_write_blocking(opaque);
}

bool mirror_change_copy_mode(Job *job, MirrorCopyMode mode, Error **errp)
{
    MirrorJob *s = (MirrorJob *)job;

    if (mode != MIRROR_COPY_WRITE_BLOCKING) {
        error_setg(errp, "Changing copy mode to '%s' is not supported",
                   mode == MIRROR_COPY_BACKGROUND ? "background" : "auto");
        return false;
    }
    if (__atomic_load_n(&s->write_blocking, __ATOMIC_ACQUIRE)) {
        error_setg(errp, "Job '%s' is already in copy mode "
                   "'write-blocking'", job->id);
        return false;
    }
    if (s->exited || !s->mirror_top) {
        error_setg(errp, "Job '%s' has finished copying", job->id);
        return false;
    }
    aio_co_run_wait(s->mirror_top->ctx, mirror_change_co, s);
    return true;
}

/* Mirror and active commit are one job under two type names. */
#define MIRROR_JOB_DRIVER(type_name)                                        \
    {                                                                       \
        .type = type_name,                                                  \
        .iothread = true,                                                   \
        .instance_size = sizeof(MirrorJob),                                 \
        .block_job_events = true,                                           \
        .yields = true,                                                     \
        .run = mirror_run,                                                  \
        .complete = mirror_complete,                                        \
        .cancel = mirror_cancel,                                            \
        .drained_poll = mirror_drained_poll,                                \
        .prepare = mirror_prepare,                                          \
        .abort = mirror_abort,                                              \
        .free = mirror_free,                                                \
        .query = mirror_query,                                              \
    }

static const JobDriver mirror_driver = MIRROR_JOB_DRIVER("mirror");
static const JobDriver commit_active_driver = MIRROR_JOB_DRIVER("commit");

bool job_is_mirror(const Job *job)
{
    return job->driver == &mirror_driver ||
           job->driver == &commit_active_driver;
}

/* ---- start ---- */

/* Puts mirror_top above source: its parents move onto the filter. */
static BlockNode *insert_filter(BlockNode *source, const char *name,
                                Error **errp)
{
    json_t *opts = json_object();
    BlockNode *mt;
    bool ok;

    json_object_set_new(opts, "driver", json_string("mirror_top"));
    if (name) {
        json_object_set_new(opts, "node-name", json_string(name));
    }
    json_object_set_new(opts, "file", json_string(source->node_name));
    if (source->discard_unmap) {
        json_object_set_new(opts, "discard", json_string("unmap"));
    }
    /* In the source's context, where the job runs. */
    mt = bdrv_open_internal_in(bdrv_find_job_filter("mirror_top"), opts,
                               source->ctx, errp);
    json_decref(opts);
    if (!mt) {
        return NULL;
    }
    bdrv_drained_begin(source);
    ok = bdrv_replace_node(source, mt, errp);
    bdrv_drained_end(source);
    if (!ok) {
        bdrv_unref(mt);
        return NULL;
    }
    return mt;
}

static Job *start_common(const JobDriver *drv, const BlockJobOptions *o,
                         BlockNode *source, BlockNode *target,
                         BlockNode *base, const MirrorParams *p,
                         bool is_commit, Error **errp)
{
    MirrorJob *s;
    Job *job;
    /* The reference opens its filter before the job exists: a name no
     * node could take is the command's error, with no job events. */
    if (p->job.filter_node_name &&
        !bdrv_check_new_node_name(p->job.filter_node_name, errp)) {
        return NULL;
    }
    /* The job runs where the source lives; the target follows it there
     * when nothing else holds it (as qemu moves it). */
    if (!bdrv_move_to_context(target, source->ctx, errp)) {
        return NULL;
    }
    s = job_create(o->job_id, drv, NULL, source->ctx, o->flags, errp);
    if (!s) {
        return NULL;
    }
    job = &s->job;
    list_init(&s->ops);
    co_queue_init(&s->op_done);
    s->is_commit = is_commit;
    s->sync = p->sync;
    s->base = base;
    s->write_blocking = p->copy_mode == MIRROR_COPY_WRITE_BLOCKING;
    s->auto_mode = p->copy_mode == MIRROR_COPY_AUTO;
    s->eta_s = -1;
    s->count_whole_disk = p->count_whole_disk &&
                          p->sync == MIRROR_SYNC_FULL;
    s->on_source_error = p->job.on_source_error;
    s->on_target_error = p->job.on_target_error;
    /* Unset: the target's cluster size clamped to 4-64 KiB, as a new
     * bitmap's default. */
    s->granularity = p->granularity
                         ? p->granularity
                         : bdrv_dirty_bitmap_default_granularity(target);
    s->buf_size = p->buf_size ? p->buf_size : DEFAULT_BUF_SIZE;
    if (s->buf_size < s->granularity) {
        s->buf_size = s->granularity;
    }
    s->max_op = s->buf_size / MAX_IN_FLIGHT;
    if (s->max_op < MIN_OP_SIZE) {
        s->max_op = MIN_OP_SIZE;
    }
    if (s->max_op > s->buf_size) {
        s->max_op = s->buf_size;
    }
    if (s->max_op < s->granularity) {
        s->max_op = s->granularity;
    }
    s->converge_at = s->max_op;
    s->target_has_backing = target->backing != NULL;
    bdrv_ref(source);
    s->source = source;
    bdrv_ref(target);
    s->target = target;
    s->replaces = p->replaces ? p->replaces : source;
    bdrv_ref(s->replaces);

    s->mirror_top = insert_filter(source, p->job.filter_node_name, errp);
    if (!s->mirror_top) {
        goto fail;
    }
    /* In an iothread clients write meanwhile: the hook and the bitmap
     * they use appear with the source drained. */
    bdrv_drained_begin(source);
    if (s->write_blocking) {
        bdrv_filter_set_after_write_hook(s->mirror_top, mirror_active_write,
                                         s);
    }
    s->dbm = bdrv_create_dirty_bitmap(source, (uint32_t)s->granularity,
                                      NULL, errp);
    bdrv_drained_end(source);
    if (!s->dbm) {
        goto fail;
    }
    /* The source: read; others may read and write it (clients do), but
     * not resize it under the job (qemu's mirror shares the same). */
    s->src_c = block_job_add_node(job, "source", source,
                                  BLK_PERM_CONSISTENT_READ,
                                  BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE |
                                  BLK_PERM_WRITE_UNCHANGED, errp);
    if (!s->src_c) {
        goto fail;
    }
    if (is_commit) {
        s->tgt_c = block_job_add_io_node(job, "base", target,
                                         BLK_PERM_CONSISTENT_READ |
                                         BLK_PERM_WRITE,
                                         BLK_PERM_CONSISTENT_READ |
                                         BLK_PERM_WRITE_UNCHANGED, errp);
        if (!s->tgt_c ||
            !block_job_add_intermediate_nodes(job, source, target,
                                              BLOCK_JOB_COMMIT_CHAIN_SHARED,
                                              errp)) {
            goto fail;
        }
    } else {
        /* Nobody else may write the target or resize it meanwhile. */
        s->tgt_c = block_job_add_node(job, "target", target,
                                      BLK_PERM_WRITE | BLK_PERM_RESIZE,
                                      BLK_PERM_CONSISTENT_READ |
                                      BLK_PERM_WRITE_UNCHANGED, errp);
        if (!s->tgt_c) {
            goto fail;
        }
    }
    if (!block_job_start(job, o, errp)) {
        goto fail;
    }
    return job;

fail:
    if (s->mirror_top) {
        mirror_exit_common(s, false, NULL);
    }
    s->exited = true;
    job_early_fail(job);
    return NULL;
}

Job *mirror_start(const MirrorParams *p, BlockNode *source, BlockNode *target,
                  Error **errp)
{
    BlockNode *base = NULL;

    if (p->sync == MIRROR_SYNC_TOP) {
        base = block_chain_next(source);
    }
    return start_common(&mirror_driver, &p->job, source, target, base, p,
                        false, errp);
}

Job *commit_active_start(const BlockJobOptions *o, BlockNode *top,
                         BlockNode *base, MirrorCopyMode copy_mode,
                         Error **errp)
{
    MirrorParams p = { .job = *o, .sync = MIRROR_SYNC_TOP,
                       .copy_mode = copy_mode };

    /* Commit has one policy; the mirror under it reads two. */
    p.job.on_source_error = p.job.on_target_error = o->on_error;

    /* base is in top's chain (the caller checked): it and every node
     * above it. */
    if (!block_job_check_chain_free(top, base, errp) ||
        !block_job_check_node_free(base, errp)) {
        return NULL;
    }
    /* Backing images are opened read-only: like qemu-storage-daemon, reopen
     * the base read-write before the job exists (a refusal is the command's
     * error), and read-only again if the job ends without pivoting. */
    bool base_read_only = base->read_only;
    if (base_read_only && !bdrv_reopen_set_read_only(base, false, errp)) {
        return NULL;
    }
    Job *job = start_common(&commit_active_driver, o, top, base, base, &p,
                            true, errp);
    if (!job) {
        if (base_read_only) {
            Error *err = NULL;
            if (!bdrv_reopen_set_read_only(base, true, &err)) {
                error_report_err(err, "block-commit: reopening base "
                                 "read-only");
            }
        }
        return NULL;
    }
    ((MirrorJob *)job)->base_read_only = base_read_only;
    return job;
}
