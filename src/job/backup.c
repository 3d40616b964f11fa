/*
 * Backup: the target becomes the source as it was when the job was created.
 *
 *   clients -> [copy-before-write] --file--> source
 *                      |  hook: block_copy(range) before the write
 *                      +--target--> target <-- workers: block_copy_claim /
 *                                                       block_copy_task_run
 *
 * The job is created inside a drained section of the source (the
 * transaction's prepare), so no client write is in flight at the instant
 * the filter starts guarding it: from then on the copy engine copies each
 * cluster once, either ahead of the first client write that touches it or
 * by the background workers, whichever comes first.
 *
 * The body runs up to max-workers workers of at most one chunk each within
 * the job's and the daemon's memory budgets (block-copy.h).  It stops at a
 * pause point only when no worker is in flight, so a drained section never
 * sees job I/O.  The first failure of a worker stops new work; once the
 * others ended, the error policy runs once (one BLOCK_JOB_ERROR, as qemu):
 * report ends the job, ignore and stop retry (the failed clusters are dirty
 * again).  sync=none copies nothing in the background: the filter keeps the
 * old data of what clients change until the job is cancelled.
 *
 * A sync bitmap is frozen at creation, in the same drained section: its
 * bits are the instant's "changed since" set (sync=bitmap seeds the copy
 * state from them, at the copy's cluster size), and a successor records
 * the writes from then on.  commit/abort decide per bitmap-mode whether
 * the bitmap becomes the successor or gets it merged back
 * (backup_end_sync_bitmap).
 */
#include "job/backup.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/chain.h"
#include "block/dirty-bitmap-named.h"
#include "block/job-filter.h"
#include "job/block-copy.h"
#include "job/blockjob.h"
#include "util/alloc.h"
#include "util/log.h"

#define DEFAULT_CHUNK      (4LL << 20)
#define JOB_BUF_LIMIT      (16LL << 20)
#define DEFAULT_WORKERS    64
#define NONE_SLEEP_NS      1000000000LL
/* While clients copy old data (or did within this window), the background
 * keeps one worker: a client's write waits for its own copy, and fewer
 * background requests on the disks make that copy quicker. */
#define CLIENT_WINDOW_NS   20000000LL

typedef struct BackupJob {
    Job job;
    BlockNode *source;       /* referenced */
    BlockNode *target;       /* referenced */
    BlockNode *cbw;          /* the filter; our reference */
    BlockCopyState *bcs;
    BackupSyncMode sync;
    JobOnError on_source_error, on_target_error;
    int64_t len, chunk;
    int max_workers;

    int workers;
    CoQueue worker_done;
    int err;                 /* first failure of a worker, not yet handled */
    bool err_is_read;
    bool removed;            /* filter gone, graph restored */
    BdrvDirtyBitmap *sync_bitmap;  /* frozen until the end; NULL after */
    BackupBitmapMode bitmap_mode;
    bool skip_unallocated;   /* sync=top over a backing chain */
} BackupJob;

typedef struct BackupWorker {
    BackupJob *s;
    BlockCopyTask *task;
} BackupWorker;

static void backup_progress(void *opaque, int64_t bytes)
{
    BackupJob *s = opaque;
    job_progress_update(&s->job, (uint64_t)bytes);
}

static int coroutine_fn backup_cbw_hook(void *opaque, int64_t offset,
                                        int64_t bytes)
{
    BackupJob *s = opaque;
    bool is_read = false;
    return block_copy(s->bcs, offset, bytes, &is_read);
}

static void coroutine_fn backup_worker_co(void *opaque)
{
    BackupWorker *w = opaque;
    BackupJob *s = w->s;
    bool is_read = false;
    int ret = block_copy_task_run(w->task, &is_read);

    if (ret < 0 && !s->err) {
        s->err = ret;
        s->err_is_read = is_read;
    }
    free(w);
    /* The body runs after us (woken from a coroutine, it is scheduled);
     * the count drops last, so a drained section that sees it at 0 (a
     * move of the job's nodes to another context) sees all we did. */
    co_queue_restart_all(&s->worker_done);
    __atomic_sub_fetch(&s->workers, 1, __ATOMIC_RELEASE);
    /* A drain in the main loop may be waiting for it. */
    aio_wait_kick();
}

static void coroutine_fn wait_workers(BackupJob *s, int at_most)
{
    while (s->workers > at_most) {
        co_queue_wait(&s->worker_done, NULL);
    }
}

/* sync=none: nothing to copy in the background; wait for the cancel. */
static int coroutine_fn backup_run_none(BackupJob *s)
{
    while (!job_is_cancelled(&s->job)) {
        job_sleep_ns(&s->job, NONE_SLEEP_NS);
    }
    return -ECANCELED;
}

static int coroutine_fn backup_run(Job *job, Error **errp)
{
    BackupJob *s = (BackupJob *)job;
    int64_t cursor = 0;
    int ret = 0;

    (void)errp;
    if (s->sync == BACKUP_SYNC_NONE) {
        job_progress_set_remaining(job, (uint64_t)s->len);
        return backup_run_none(s);
    }
    if (s->sync == BACKUP_SYNC_TOP && s->skip_unallocated) {
        /* What the target's backing supplies needs no copy: taken out of
         * the copy state first, as qemu does, so that progress counts
         * only what is copied and bitmap-mode=always keeps only what
         * was not copied. */
        for (int64_t off = 0; off < s->len;) {
            int64_t n = 0;
            if (job_is_cancelled(job)) {
                return -ECANCELED;
            }
            ret = block_copy_reset_unallocated(s->bcs, off, &n);
            if (ret < 0) {
                return ret;
            }
            off += n;
        }
        block_copy_set_skip_unallocated(s->bcs, NULL, NULL);
        ret = 0;
    }
    /* What needs a copy: the bitmap's clusters for sync=bitmap, the
     * allocated ones for top, else the whole disk. */
    job_progress_set_remaining(job, (uint64_t)block_copy_remaining(s->bcs));
    for (;;) {
        /* Pause only with nothing in flight. */
        if (job_pause_requested(job)) {
            wait_workers(s, 0);
        }
        job_pause_point(job);
        if (job_is_cancelled(job)) {
            break;
        }
        if (s->err) {
            wait_workers(s, 0);
            int err = s->err;
            bool is_read = s->err_is_read;
            JobErrorAction a = job_error_action(job, is_read ?
                                                s->on_source_error :
                                                s->on_target_error,
                                                is_read, err);
            s->err = 0;
            if (a == JOB_ERROR_ACTION_REPORT) {
                ret = err;
                break;
            }
            job_error_backoff(job);
            continue;        /* stop: paused at the next point; retry */
        }
        int64_t chunk = s->chunk;
        if (job_is_throttled(job)) {
            /* Throttled: one chunk at a time, slept for before it.  The
             * worker just waited for may have failed: its error comes
             * first, before another chunk is copied (after a failure at X,
             * X+1 copied would be missing from an "always" bitmap). */
            wait_workers(s, 0);
            if (s->err) {
                continue;
            }
            chunk = (int64_t)job_chunk_size(job, (uint64_t)s->chunk,
                                            (uint64_t)
                                            block_copy_cluster_size(s->bcs));
            job_ratelimit_sleep(job, (uint64_t)chunk);
            if (job_is_cancelled(job) || job_pause_requested(job)) {
                continue;
            }
        } else if (s->workers >= s->max_workers ||
                   (s->workers >= 1 &&
                    block_copy_clients_active(s->bcs, CLIENT_WINDOW_NS))) {
            co_queue_wait(&s->worker_done, NULL);
            continue;
        }
        BlockCopyTask *t = block_copy_claim(s->bcs, &cursor, chunk);
        if (!t) {
            if (s->workers > 0) {
                co_queue_wait(&s->worker_done, NULL);
                continue;
            }
            if (block_copy_remaining(s->bcs) == 0) {
                break;       /* everything copied */
            }
            /* Clients' copies still in flight (one may fail). */
            block_copy_wait_any(s->bcs);
            continue;
        }
        BackupWorker *w = bj_calloc(1, sizeof(*w));
        w->s = s;
        w->task = t;
        __atomic_add_fetch(&s->workers, 1, __ATOMIC_RELEASE);
        /* Ownership of w moves to the worker. */
        aio_co_enter(job->ctx, coroutine_create(backup_worker_co, w));
    }
    wait_workers(s, 0);
    if (ret < 0) {
        return ret;
    }
    if (job_is_cancelled(job)) {
        return -ECANCELED;
    }
    return 0;
}

/* ---- the end ---- */

/*
 * The sync bitmap's fate (ret: 0 the job succeeded, < 0 it failed or was
 * cancelled).  Synced (on-success after success, always): the bitmap holds
 * the writes made during the job; after a failure, always adds what was
 * not copied.  Otherwise the writes made meanwhile are merged back into the
 * bits the job started from, so nothing is ever lost.
 */
static void backup_end_sync_bitmap(BackupJob *s, int ret)
{
    BdrvDirtyBitmap *bm = s->sync_bitmap;
    bool sync;

    if (!bm) {
        return;
    }
    s->sync_bitmap = NULL;
    sync = (ret == 0 || s->bitmap_mode == BACKUP_BITMAP_ALWAYS) &&
           s->bitmap_mode != BACKUP_BITMAP_NEVER;
    if (!sync) {
        bdrv_dirty_bitmap_reclaim(bm);
        return;
    }
    bdrv_dirty_bitmap_abdicate(bm);
    if (ret < 0) {
        if (s->bcs) {
            block_copy_merge_uncopied(s->bcs, bm);
        } else {
            /* No copy state (never the case after creation): keep all. */
            bdrv_set_dirty_bitmap(bm, 0, s->len);
        }
    }
    /* The copied granules left the bitmap: its stored copy shrinks. */
    bdrv_dirty_bitmap_bits_removed(bm);
}

/* In an iothread, clients' writes mark the bitmaps and run the copy
 * engine there: the main loop settles the bitmap with the source drained. */
static void backup_end(BackupJob *s, int ret)
{
    bool drain = s->source->ctx != aio_main_context();

    if (drain) {
        bdrv_drained_begin(s->source);
    }
    backup_end_sync_bitmap(s, ret);
    if (drain) {
        bdrv_drained_end(s->source);
    }
}

static void backup_commit(Job *job)
{
    backup_end((BackupJob *)job, 0);
}

static void backup_abort(Job *job)
{
    backup_end((BackupJob *)job, -1);
}

/* Takes the filter out (its parents go back to the source), drained. */
static void backup_remove_filter(BackupJob *s)
{
    BlockNode *cbw = s->cbw;
    Error *err = NULL;

    if (s->removed) {
        return;
    }
    s->removed = true;
    if (!cbw) {
        block_job_remove_all_nodes(&s->job);
        return;
    }
    /* Drained first: in an iothread, clients' writes (and the hook they
     * run) go on there until the section begins. */
    bdrv_drained_begin(s->source);
    block_job_remove_all_nodes(&s->job);
    bdrv_filter_set_before_write_hook(cbw, NULL, NULL);
    if (s->bcs) {
        block_copy_set_disabled(s->bcs, true);
    }
    if (!bdrv_replace_node(cbw, s->source, &err)) {
        log_error("backup: could not remove the filter: %s",
                  error_get_pretty(err));
        error_free(err);
    }
    bdrv_drained_end(s->source);
    s->cbw = NULL;
    bdrv_unref(cbw);
    block_copy_state_free(s->bcs);
    s->bcs = NULL;
}

static void backup_clean(Job *job)
{
    backup_remove_filter((BackupJob *)job);
}

static bool backup_drained_poll(Job *job)
{
    BackupJob *s = (BackupJob *)job;
    /* Busy in the body: until it stops at a pause point. */
    return __atomic_load_n(&s->workers, __ATOMIC_ACQUIRE) > 0 || job->busy;
}

static void backup_free(Job *job)
{
    BackupJob *s = (BackupJob *)job;

    /* Set up but never run (a failed creation, an aborted transaction):
     * the bitmap is as it was, plus any write made meanwhile. */
    if (s->sync_bitmap) {
        bdrv_dirty_bitmap_reclaim(s->sync_bitmap);
        s->sync_bitmap = NULL;
    }
    backup_remove_filter(s);
    if (s->source) {
        bdrv_unref(s->source);
    }
    if (s->target) {
        bdrv_unref(s->target);
    }
}

static const JobDriver backup_driver = {
    .type = "backup",
    .iothread = true,
    .instance_size = sizeof(BackupJob),
    .block_job_events = true,
    .yields = true,
    .run = backup_run,
    .drained_poll = backup_drained_poll,
    .commit = backup_commit,
    .abort = backup_abort,
    .clean = backup_clean,
    .free = backup_free,
};

/* ---- creation ---- */

int64_t backup_cluster_size(BlockNode *target)
{
    int64_t cs = 65536;
    BlockDriverInfo bdi;

    if (bdrv_get_info(target, &bdi) == 0 && bdi.cluster_size > cs) {
        cs = bdi.cluster_size;
    }
    return cs;
}

static BlockNode *insert_filter(BlockNode *source, BlockNode *target,
                                const char *name, Error **errp)
{
    json_t *opts = json_object();
    BlockNode *cbw;
    bool ok;

    json_object_set_new(opts, "driver", json_string("copy-before-write"));
    if (name) {
        json_object_set_new(opts, "node-name", json_string(name));
    }
    json_object_set_new(opts, "file", json_string(source->node_name));
    json_object_set_new(opts, "target", json_string(target->node_name));
    if (source->discard_unmap) {
        json_object_set_new(opts, "discard", json_string("unmap"));
    }
    /* In the source's context, where the job runs (the target is there
     * already: backup_job_create). */
    cbw = bdrv_open_internal_in(bdrv_find_job_filter("copy-before-write"),
                                opts, source->ctx, errp);
    json_decref(opts);
    if (!cbw) {
        return NULL;
    }
    bdrv_drained_begin(source);
    ok = bdrv_replace_node(source, cbw, errp);
    bdrv_drained_end(source);
    if (!ok) {
        bdrv_unref(cbw);
        return NULL;
    }
    return cbw;
}

Job *backup_job_create(const BackupParams *p, BlockNode *source,
                       BlockNode *target, JobTxn *txn, Error **errp)
{
    int64_t cs = backup_cluster_size(target);
    BackupJob *s;
    Job *job;

    /* The job runs where the source lives; the target follows it there
     * when nothing else holds it (as qemu moves it). */
    if (!bdrv_move_to_context(target, source->ctx, errp)) {
        return NULL;
    }
    s = job_create(p->job.job_id, &backup_driver, txn, source->ctx,
                   p->job.flags, errp);
    if (!s) {
        return NULL;
    }
    job = &s->job;
    co_queue_init(&s->worker_done);
    s->sync = p->sync;
    s->on_source_error = p->job.on_source_error;
    s->on_target_error = p->job.on_target_error;
    s->max_workers = p->max_workers > 0 && p->max_workers < DEFAULT_WORKERS
                     ? (int)p->max_workers : DEFAULT_WORKERS;
    s->chunk = DEFAULT_CHUNK > cs ? DEFAULT_CHUNK : cs;
    if (p->max_chunk > 0 && p->max_chunk < s->chunk) {
        s->chunk = p->max_chunk / cs * cs;
    }
    bdrv_ref(source);
    s->source = source;
    bdrv_ref(target);
    s->target = target;
    s->len = bdrv_getlength(source);
    if (s->len < 0) {
        error_setg_errno(errp, (int)-s->len, "Could not get the length of "
                         "'%s'", source->node_name);
        goto fail;
    }

    s->cbw = insert_filter(source, target, p->job.filter_node_name, errp);
    if (!s->cbw) {
        goto fail;
    }
    s->bcs = block_copy_state_new(s->cbw->file, bdrv_filter_target(s->cbw),
                                  s->len, cs, errp);
    if (!s->bcs) {
        goto fail;
    }
    if (p->sync_bitmap) {
        /* The instant of the copy (source drained): the bitmap's bits are
         * what to copy, the writes from now on go to its successor. */
        if (!bdrv_dirty_bitmap_create_successor(p->sync_bitmap, errp)) {
            goto fail;
        }
        s->sync_bitmap = p->sync_bitmap;
        s->bitmap_mode = p->bitmap_mode;
        if (s->sync == BACKUP_SYNC_BITMAP) {
            block_copy_set_needs_copy(s->bcs, bdrv_dirty_bitmap_hbitmap(
                                                  p->sync_bitmap));
        }
    }
    block_copy_set_progress(s->bcs, backup_progress, s);
    block_copy_set_compress(s->bcs, p->compress);
    block_copy_set_buf_limit(s->bcs, JOB_BUF_LIMIT > s->chunk ?
                             JOB_BUF_LIMIT : s->chunk);
    if (s->sync == BACKUP_SYNC_TOP) {
        /* Without a backing file too: what the source does not allocate
         * is left to the target (qemu skips it as well). */
        block_copy_set_skip_unallocated(s->bcs, source,
                                        block_chain_next(source));
        s->skip_unallocated = true;
    }
    bdrv_filter_set_before_write_hook(s->cbw, backup_cbw_hook, s);

    /* The job's edges: drained sections of the source reach it through
     * the filter; the op blockers keep other jobs off both. */
    if (!block_job_add_node(job, "main node", s->cbw, 0, BLK_PERM_ALL,
                            errp) ||
        !block_job_add_node(job, "target", target, 0, BLK_PERM_ALL, errp)) {
        goto fail;
    }
    if (!job_yield_params_check(&p->job.yield, errp) ||
        (p->job.speed && !job_set_speed(job, p->job.speed, errp))) {
        goto fail;
    }
    job_yield_configure(job, &p->job.yield);
    return job;

fail:
    if (s->sync_bitmap) {
        bdrv_dirty_bitmap_reclaim(s->sync_bitmap);
        s->sync_bitmap = NULL;
    }
    backup_remove_filter(s);
    job_early_fail(job);
    return NULL;
}
