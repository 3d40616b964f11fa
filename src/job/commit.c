/*
 * block-commit, intermediate: push the data of top (and of the layers
 * between top and base) down into base, then drop those layers from the
 * chain by making top's overlay back onto base.
 *
 *   before:  active -> ... -> overlay -> top -> mid -> base
 *   after:   active -> ... -> overlay -> base          (top, mid detached)
 *
 * Copying goes by block status in chunks of up to 4 MiB, up to four copies
 * in flight: what is allocated from top down to (not including) base is
 * read through top and written into base; zero ranges are written as
 * zeroes.  A failed copy is handled by the error policy once the others
 * finished: report ends the job, stop and ignore retry the chunk (stop
 * after the user resumes).  Nobody writes to
 * top or the intermediate layers meanwhile (the permissions forbid it), so
 * the copy needs no protection against clients: they write to the active
 * layer above, and what they read does not change, because every layer
 * that base now carries data for is still in the chain above it.
 *
 * Committing the active layer is a mirror (the next issue); cmd-job.c
 * refuses it.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/backing.h"
#include "block/chain.h"
#include "block/reopen.h"
#include "job/blockjob.h"
#include "job/jobs.h"
#include "util/alloc.h"
#include "util/iov.h"
#include "util/log.h"

#define COMMIT_CHUNK (4 * 1024 * 1024)
#define COMMIT_ALIGN 65536
/* Copies in flight: reads of one chunk overlap the writes of another. */
#define COMMIT_WORKERS 4

typedef struct CommitChunk {
    int64_t off, n;
    bool zero;
    int ret;                  /* -errno when the copy failed */
    bool in_source;           /* ... while reading */
} CommitChunk;

typedef struct CommitJob {
    Job job;
    BlockNode *top;
    BlockChild *top_child;    /* reads (through top) */
    BlockNode *base;
    BlockChild *base_child;   /* writes */
    bool base_read_only;      /* reopened read-write for the job */
    BlockNode *active;
    char *backing_file;
    JobOnError on_error;

    /* Parallel copies (body and workers run in the job's context). */
    int in_flight;
    bool main_waiting;        /* the body waits for a worker to finish */
    uint8_t *bufs[COMMIT_WORKERS];
    bool buf_busy[COMMIT_WORKERS];
    CommitChunk failed[COMMIT_WORKERS + 1];
    int n_failed;
    CommitChunk retry[COMMIT_WORKERS + 1];
    int n_retry;
} CommitJob;

static int coroutine_fn commit_copy(CommitJob *s, int64_t off, int64_t n,
                                    bool zero, uint8_t *buf, bool *in_source)
{
    int ret;
    *in_source = false;
    if (zero) {
        /* No unmap: base may have a backing file of its own. */
        return bdrv_co_pwrite_zeroes(s->base_child, off, n, 0);
    }
    IOVector qiov;
    iov_vec_init_buf(&qiov, buf, (size_t)n);
    ret = bdrv_co_preadv(s->top_child, off, n, &qiov, 0);
    if (ret < 0) {
        *in_source = true;
        return ret;
    }
    return bdrv_co_pwritev(s->base_child, off, n, &qiov, 0);
}

typedef struct CommitWorker {
    CommitJob *s;
    CommitChunk c;
    int slot;                 /* index of its buffer */
} CommitWorker;

static void coroutine_fn commit_worker(void *opaque)
{
    CommitWorker *w = opaque;       /* ownership moved to this coroutine */
    CommitJob *s = w->s;
    int ret = commit_copy(s, w->c.off, w->c.n, w->c.zero, s->bufs[w->slot],
                          &w->c.in_source);
    if (ret < 0) {
        w->c.ret = ret;
        s->failed[s->n_failed++] = w->c;
    } else {
        job_progress_update(&s->job, (uint64_t)w->c.n);
    }
    s->buf_busy[w->slot] = false;
    s->in_flight--;
    if (s->main_waiting) {
        s->main_waiting = false;
        aio_co_wake(s->job.co);
    }
    free(w);
}

/* Waits (in the body, still busy) until at most max copies are in flight. */
static void coroutine_fn commit_wait(CommitJob *s, int max)
{
    while (s->in_flight > max) {
        s->main_waiting = true;
        coroutine_yield();
    }
}

static void coroutine_fn commit_spawn(CommitJob *s, CommitChunk c)
{
    CommitWorker *w = bj_calloc(1, sizeof(*w));
    commit_wait(s, COMMIT_WORKERS - 1);
    w->s = s;
    w->c = c;
    for (w->slot = 0; s->buf_busy[w->slot]; w->slot++) {
        assert(w->slot < COMMIT_WORKERS - 1);
    }
    s->buf_busy[w->slot] = true;
    s->in_flight++;
    aio_co_enter(s->job.ctx, coroutine_create(commit_worker, w));
}

/*
 * Applies the error policy to the copies that failed (all workers idle).
 * Returns the error to end the job with, or 0 with the failed chunks queued
 * for another try (stop: after the user resumes; ignore: at once).
 */
static int coroutine_fn commit_handle_failures(CommitJob *s)
{
    int ret = 0;
    for (int i = 0; i < s->n_failed; i++) {
        CommitChunk *c = &s->failed[i];
        JobErrorAction action = job_error_action(&s->job, s->on_error,
                                                 c->in_source, c->ret);
        if (action == JOB_ERROR_ACTION_REPORT) {
            if (!ret) {
                ret = c->ret;
            }
        } else {
            s->retry[s->n_retry++] = *c;
        }
    }
    s->n_failed = 0;
    return ret;
}

static int coroutine_fn commit_run(Job *job, Error **errp)
{
    CommitJob *s = (CommitJob *)job;
    int64_t len = bdrv_getlength(s->top);
    int64_t base_len = bdrv_getlength(s->base);
    int64_t off = 0;
    int ret = 0;

    if (len < 0 || base_len < 0) {
        return len < 0 ? (int)len : (int)base_len;
    }
    job_progress_set_remaining(job, (uint64_t)len);
    if (base_len < len) {
        /* Base must show all of top once top is gone. */
        ret = bdrv_co_truncate(s->base_child, len, errp);
        if (ret < 0) {
            return ret;
        }
    }
    for (int i = 0; i < COMMIT_WORKERS; i++) {
        s->bufs[i] = blk_aligned_alloc(4096, COMMIT_CHUNK);
    }

    for (;;) {
        CommitChunk c = { 0 };
        bool zero = false;
        int64_t n;

        if (s->n_failed) {
            commit_wait(s, 0);
            if ((ret = commit_handle_failures(s)) < 0) {
                break;
            }
            job_error_backoff(job);
        }
        /* Pauses and cancels wait for the copies in flight, so a paused
         * or drained job has no request on its nodes. */
        if (job_pause_requested(job) || job_is_cancelled(job)) {
            commit_wait(s, 0);
        }
        job_sleep_ns(job, 0);
        if (job_is_cancelled(job)) {
            break;
        }
        if (s->n_retry) {
            c = s->retry[0];
            memmove(&s->retry[0], &s->retry[1],
                    (size_t)--s->n_retry * sizeof(s->retry[0]));
        } else if (off < len) {
            int64_t want = (int64_t)job_chunk_size(job, COMMIT_CHUNK,
                                                   COMMIT_ALIGN);
            if (want > len - off) {
                want = len - off;
            }
            n = want;
            ret = block_co_is_allocated_above(s->top, s->base, off, want,
                                              &n, &zero);
            int ret_alloc = ret;
            if (ret < 0) {
                CommitChunk f = { .off = off, .n = want, .ret = ret,
                                  .in_source = true };
                commit_wait(s, 0);
                s->failed[s->n_failed++] = f;
                if ((ret = commit_handle_failures(s)) < 0) {
                    break;
                }
                s->n_retry--;    /* re-checked from the cursor instead */
                job_error_backoff(job);
                continue;
            }
            ret = 0;
            if (n <= 0) {
                n = want;
            }
            off += n;
            if (!ret_alloc) {
                job_progress_update(job, (uint64_t)n);
                continue;
            }
            c = (CommitChunk){ .off = off - n, .n = n, .zero = zero };
        } else {
            /* Nothing left to start: the end, unless a copy fails. */
            commit_wait(s, 0);
            if (!s->n_failed) {
                break;
            }
            continue;
        }
        job_ratelimit_sleep(job, (uint64_t)c.n);
        if (job_is_cancelled(job)) {
            break;
        }
        commit_spawn(s, c);
    }
    commit_wait(s, 0);
    for (int i = 0; i < COMMIT_WORKERS; i++) {
        free(s->bufs[i]);
        s->bufs[i] = NULL;
    }
    return ret < 0 ? ret : 0;
}

static int commit_prepare(Job *job, Error **errp)
{
    CommitJob *s = (CommitJob *)job;
    BlockNode *overlay = block_chain_overlay(s->active, s->top);

    if (!overlay) {
        error_setg(errp, "Top node '%s' is no longer in the chain",
                   s->top->node_name);
        return -ENOENT;
    }
    const char *file = s->backing_file ? s->backing_file : s->base->filename;
    /* An overlay opened read-only (a backing image itself) is writable
     * just for its header, as the reference does: it stays read-only
     * while the job copies. */
    bool overlay_read_only = overlay->read_only;
    if (overlay_read_only &&
        !bdrv_reopen_set_read_only(overlay, false, errp)) {
        return -EPERM;
    }
    /* The header first: if it cannot be written, the chain is unchanged
     * and the overlay still reads correctly through top. */
    int ret = block_change_backing_file(overlay, file, s->base->drv->name);
    if (overlay_read_only) {
        Error *err = NULL;
        if (!bdrv_reopen_set_read_only(overlay, true, &err)) {
            error_report_err(err, "block-commit: reopening the overlay "
                             "read-only");
        }
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not update backing file name "
                         "of '%s'", overlay->node_name);
        return ret;
    }
    if (!block_set_backing(overlay, s->base, errp)) {
        return -EPERM;
    }
    return 0;
}

static bool commit_cancel(Job *job, bool force)
{
    return true;
}

/*
 * A base opened read-only (as backing images are) goes back to read-only
 * once the job no longer writes it, whatever the outcome: the job's edges
 * go first, since a read-only node cannot keep a writer.
 */
static void commit_restore_base(CommitJob *s)
{
    Error *err = NULL;

    if (!s->base_read_only) {
        return;
    }
    s->base_read_only = false;
    block_job_remove_all_nodes(&s->job);
    s->base_child = s->top_child = NULL;
    if (!bdrv_reopen_set_read_only(s->base, true, &err)) {
        error_report_err(err, "block-commit: reopening base read-only");
    }
}

static void commit_clean(Job *job)
{
    commit_restore_base((CommitJob *)job);
}

static void commit_free(Job *job)
{
    free(((CommitJob *)job)->backing_file);
}

static const JobDriver commit_driver = {
    .type = "commit",
    .iothread = true,
    .instance_size = sizeof(CommitJob),
    .block_job_events = true,
    .yields = true,
    .run = commit_run,
    .cancel = commit_cancel,
    .prepare = commit_prepare,
    .clean = commit_clean,
    .free = commit_free,
};

Job *commit_start(const BlockJobOptions *o, BlockNode *active, BlockNode *top,
                  BlockNode *base, const char *backing_file, Error **errp)
{
    BlockNode *overlay = block_chain_overlay(active, top);

    if (!overlay) {
        error_setg(errp, "Top node '%s' has no overlay in the chain of '%s'",
                   top->node_name, active->node_name);
        return NULL;
    }
    if (!block_job_check_chain_free(top, base, errp) ||
        !block_job_check_node_free(base, errp) ||
        !block_job_check_node_free(overlay, errp)) {
        return NULL;
    }
    /* The job runs where the chain lives. */
    CommitJob *s = job_create(o->job_id, &commit_driver, NULL, top->ctx,
                              o->flags, errp);
    if (!s) {
        return NULL;
    }
    Job *job = &s->job;
    s->top = top;
    s->base = base;
    /* After the job exists, as the reference does: a refused reopen shows
     * as the job's created/null events and the command's error. */
    if (base->read_only) {
        if (!bdrv_reopen_set_read_only(base, false, errp)) {
            goto fail;
        }
        s->base_read_only = true;
    }
    /* Where the reference opens its commit_top filter: after the job and
     * the reopen of base, so a refused name also shows created/null. */
    if (o->filter_node_name &&
        !bdrv_check_new_node_name(o->filter_node_name, errp)) {
        goto fail;
    }
    s->active = active;
    s->on_error = o->on_error;
    s->backing_file = backing_file ? bj_strdup(backing_file) : NULL;
    /* Base takes the data; others may still read it (and it may grow). */
    s->base_child = block_job_add_io_node(job, "base", base,
                                          BLK_PERM_CONSISTENT_READ |
                                          BLK_PERM_WRITE | BLK_PERM_RESIZE,
                                          BLK_PERM_CONSISTENT_READ |
                                          BLK_PERM_WRITE_UNCHANGED, errp);
    if (!s->base_child) {
        goto fail;
    }
    /* Top and the layers down to base: read, sharing write (they are
     * read-only backing images in practice). */
    s->top_child = block_job_add_io_node(job, "top", top,
                                         BLK_PERM_CONSISTENT_READ,
                                         BLOCK_JOB_COMMIT_CHAIN_SHARED, errp);
    if (!s->top_child ||
        !block_job_add_intermediate_nodes(job, top, base,
                                          BLOCK_JOB_COMMIT_CHAIN_SHARED,
                                          errp)) {
        goto fail;
    }
    /* The overlay's backing link is what prepare changes. */
    if (!block_job_add_node(job, "overlay of top", overlay, 0, BLK_PERM_ALL,
                            errp)) {
        goto fail;
    }
    if (!block_job_start(job, o, errp)) {
        goto fail;
    }
    return job;

fail:
    commit_restore_base(s);
    job_early_fail(job);
    return NULL;
}
