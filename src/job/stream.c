/*
 * block-stream: pull the data of the backing chain above base up into the
 * top image, then cut the chain so that top backs onto base.
 *
 *   before:  top -> mid1 -> mid2 -> base        after:  top -> base
 *
 * Copying goes by block status in chunks of up to 512 KiB: ranges that top
 * already holds are skipped, ranges allocated in some intermediate layer
 * are read through top (so they come from that layer) and written into
 * top, zero ranges are written as zeroes, and ranges nobody above base
 * holds are left alone.  Writes are "unchanged" writes: the data top shows
 * does not change, which is why clients may keep writing to top.
 *
 * A client write racing with a chunk copy: after reading a chunk the job
 * enters a short drained section of top (clients' requests wait, none is
 * in flight), re-checks top's allocation and writes only the parts top
 * still does not hold.  So a copy never overwrites a client's write; the
 * price is one short drain per copied chunk.
 *
 * With filter-node-name, a copy-on-read filter of that name sits above top
 * while the job runs (top's parents move to it), so that reads of top's
 * users populate top as well, as in qemu; it goes at the end (prepare, or
 * clean when the job failed or was cancelled).  The job's own copies go
 * to top directly.
 */
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

#define STREAM_CHUNK (4 * 1024 * 1024)
#define STREAM_ALIGN 65536

typedef struct StreamJob {
    Job job;
    BlockNode *top;
    BlockChild *target;       /* the job's edge on top: reads and writes */
    bool top_read_only;       /* reopened read-write for the job */
    BlockNode *base;          /* NULL: stream the whole chain */
    char *backing_file;
    JobOnError on_error;
    BlockNode *cor;           /* the copy-on-read filter (our reference) */
} StreamJob;

/* Writes the parts of [off, off+n) that top still does not hold: from buf,
 * or zeroes when buf is NULL.  Runs inside a drained section of top, so no
 * client write can land between the check and the write. */
static int coroutine_fn stream_write_unallocated(StreamJob *s, int64_t off,
                                                 int64_t n, uint8_t *buf)
{
    int64_t done = 0;
    while (done < n) {
        int64_t pnum = 0;
        int ret = bdrv_co_block_status(s->top, off + done, n - done, &pnum,
                                       NULL, NULL);
        if (ret < 0) {
            return ret;
        }
        if (!(ret & BLK_STATUS_ALLOCATED)) {
            if (buf) {
                IOVector qiov;
                iov_vec_init_buf(&qiov, buf + done, (size_t)pnum);
                ret = bdrv_co_pwritev(s->target, off + done, pnum, &qiov,
                                      BLK_REQ_WRITE_UNCHANGED);
            } else {
                ret = bdrv_co_pwrite_zeroes(s->target, off + done, pnum,
                                            BLK_REQ_WRITE_UNCHANGED);
            }
            if (ret < 0) {
                return ret;
            }
        }
        done += pnum;
    }
    return 0;
}

static int coroutine_fn stream_copy(StreamJob *s, int64_t off, int64_t n,
                                    bool zero, uint8_t *buf)
{
    int ret;
    if (!zero) {
        /* Top does not hold the range, so this reads the layers below,
         * which nobody writes meanwhile. */
        IOVector qiov;
        iov_vec_init_buf(&qiov, buf, (size_t)n);
        ret = bdrv_co_preadv(s->target, off, n, &qiov, 0);
        if (ret < 0) {
            return ret;
        }
    }
    /* A client may have written part of the range since the read: check
     * and write with clients held back. */
    block_job_co_drained_begin(&s->job, s->top);
    ret = stream_write_unallocated(s, off, n, zero ? NULL : buf);
    block_job_co_drained_end(&s->job, s->top);
    return ret;
}

static int coroutine_fn stream_run(Job *job, Error **errp)
{
    StreamJob *s = (StreamJob *)job;
    BlockNode *below = block_chain_next(s->top);
    int64_t len = bdrv_getlength(s->top);
    int64_t n;
    int error = 0;

    if (len < 0) {
        return (int)len;
    }
    job_progress_set_remaining(job, (uint64_t)len);
    if (!below || below == s->base) {
        job_progress_update(job, (uint64_t)len);
        return 0;
    }
    uint8_t *buf = blk_aligned_alloc(4096, STREAM_CHUNK);

    for (int64_t off = 0; off < len; off += n) {
        bool copy = false, zero = false;
        int64_t want = (int64_t)job_chunk_size(job, STREAM_CHUNK,
                                               STREAM_ALIGN);
        int ret;

        if (want > len - off) {
            want = len - off;
        }
        /* A pause point at every chunk (the loop also serves the monitor
         * and clients between chunks). */
        job_sleep_ns(job, 0);
        if (job_is_cancelled(job)) {
            break;
        }
        n = 0;
        ret = bdrv_co_block_status(s->top, off, want, &n, NULL, NULL);
        if (ret >= 0 && !(ret & BLK_STATUS_ALLOCATED)) {
            ret = block_co_is_allocated_above(below, s->base, off, n, &n,
                                              &zero);
            copy = ret == 1;
        }
        if (ret >= 0 && copy) {
            job_ratelimit_sleep(job, (uint64_t)n);
            if (job_is_cancelled(job)) {
                break;
            }
            ret = stream_copy(s, off, n, zero, buf);
        }
        if (ret < 0) {
            JobErrorAction action = job_error_action(job, s->on_error, true,
                                                     ret);
            if (action == JOB_ERROR_ACTION_STOP) {
                n = 0;       /* retry this chunk once resumed */
                continue;
            }
            if (!error) {
                error = ret;
            }
            if (action == JOB_ERROR_ACTION_REPORT) {
                break;
            }
            /* ignore: skip this chunk, fail at the end (as qemu does) */
            if (n <= 0) {
                n = want;
            }
        }
        job_progress_update(job, (uint64_t)n);
    }
    free(buf);
    return error;
}

/* Takes the copy-on-read filter out: its parents go back to top. */
static void stream_remove_filter(StreamJob *s)
{
    BlockNode *cor = s->cor;
    Error *err = NULL;

    if (!cor) {
        return;
    }
    s->cor = NULL;
    bdrv_drained_begin(s->top);
    if (!bdrv_replace_node(cor, s->top, &err)) {
        error_report_err(err, "block-stream: removing the filter");
    }
    bdrv_drained_end(s->top);
    bdrv_unref(cor);
}

/* A copy-on-read filter called name above top, copying what the layers
 * above base hold (bottom: the layer right above base). */
static BlockNode *stream_insert_filter(BlockNode *top, BlockNode *base,
                                       const char *name, Error **errp)
{
    BlockNode *bottom = top;
    json_t *opts = json_object();
    BlockNode *cor;
    bool ok;

    for (BlockNode *n = top; n && n != base; n = block_chain_next(n)) {
        bottom = n;
    }
    json_object_set_new(opts, "driver", json_string("copy-on-read"));
    json_object_set_new(opts, "node-name", json_string(name));
    json_object_set_new(opts, "file", json_string(top->node_name));
    json_object_set_new(opts, "bottom", json_string(bottom->node_name));
    cor = bdrv_open_internal(NULL, opts, errp);
    json_decref(opts);
    if (!cor) {
        return NULL;
    }
    bdrv_drained_begin(top);
    ok = bdrv_replace_node(top, cor, errp);
    bdrv_drained_end(top);
    if (!ok) {
        bdrv_unref(cor);
        return NULL;
    }
    return cor;
}

static int stream_prepare(Job *job, Error **errp)
{
    StreamJob *s = (StreamJob *)job;
    const char *file = NULL, *fmt = NULL;

    stream_remove_filter(s);
    if (s->base) {
        file = s->backing_file ? s->backing_file : s->base->filename;
        fmt = s->base->drv->name;
    }
    if (!block_set_backing(s->top, s->base, errp)) {
        return -EPERM;
    }
    int ret = block_change_backing_file(s->top, file, fmt);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not update backing file name "
                         "of '%s'", s->top->node_name);
        return ret;
    }
    return 0;
}

static bool stream_cancel(Job *job, bool force)
{
    return true;   /* stream has no soft cancel */
}

/* A read-only top goes back to read-only once the job's edges (a writer)
 * are gone, whatever the outcome. */
static void stream_restore_top(StreamJob *s)
{
    Error *err = NULL;

    if (!s->top_read_only) {
        return;
    }
    s->top_read_only = false;
    block_job_remove_all_nodes(&s->job);
    s->target = NULL;
    if (!bdrv_reopen_set_read_only(s->top, true, &err)) {
        error_report_err(err, "block-stream: reopening top read-only");
    }
}

static void stream_clean(Job *job)
{
    stream_remove_filter((StreamJob *)job);
    stream_restore_top((StreamJob *)job);
}

static void stream_free(Job *job)
{
    StreamJob *s = (StreamJob *)job;
    stream_remove_filter(s);
    free(s->backing_file);
}

static const JobDriver stream_driver = {
    .type = "stream",
    .iothread = true,
    .instance_size = sizeof(StreamJob),
    .block_job_events = true,
    .yields = true,
    .run = stream_run,
    .cancel = stream_cancel,
    .prepare = stream_prepare,
    .clean = stream_clean,
    .free = stream_free,
};

Job *stream_start(const BlockJobOptions *o, BlockNode *top, BlockNode *base,
                  const char *backing_file, Error **errp)
{
    /* Every node from top down to base must be free of other jobs. */
    if (!block_job_check_chain_free(top, base, errp)) {
        return NULL;
    }
    /* Before the job exists, as the reference does: a refused reopen is
     * the command's error and no job events. */
    bool top_read_only = top->read_only;
    if (top_read_only && !bdrv_reopen_set_read_only(top, false, errp)) {
        return NULL;
    }
    /* Where the reference inserts its copy-on-read filter: before the job
     * exists, and its error carries the insertion's prefix. */
    StreamJob *s = NULL;
    if (o->filter_node_name &&
        !bdrv_check_new_node_name(o->filter_node_name, errp)) {
        error_prepend(errp, "Could not create node");
    } else {
        /* The job runs where the chain lives. */
        s = job_create(o->job_id, &stream_driver, NULL, top->ctx, o->flags,
                       errp);
    }
    if (!s) {
        if (top_read_only) {
            Error *err = NULL;
            if (!bdrv_reopen_set_read_only(top, true, &err)) {
                error_report_err(err, "block-stream: reopening top "
                                 "read-only");
            }
        }
        return NULL;
    }
    Job *job = &s->job;
    s->top = top;
    s->top_read_only = top_read_only;
    s->base = base;
    s->on_error = o->on_error;
    s->backing_file = backing_file ? bj_strdup(backing_file) : NULL;
    if (o->filter_node_name) {
        s->cor = stream_insert_filter(top, base, o->filter_node_name, errp);
        if (!s->cor) {
            error_prepend(errp, "Could not create node");
            goto fail;
        }
    }
    /* Top: read it and write it "unchanged"; others may do anything. */
    s->target = block_job_add_node(job, "main node", top,
                                   BLK_PERM_CONSISTENT_READ |
                                   BLK_PERM_WRITE_UNCHANGED,
                                   BLK_PERM_ALL, errp);
    if (!s->target) {
        goto fail;
    }
    /* The layers that go away: nobody may change them meanwhile. */
    if (!block_job_add_intermediate_nodes(job, top, base,
                                          BLK_PERM_CONSISTENT_READ |
                                          BLK_PERM_WRITE_UNCHANGED, errp)) {
        goto fail;
    }
    if (!block_job_start(job, o, errp)) {
        goto fail;
    }
    return job;

fail:
    stream_remove_filter(s);
    stream_restore_top(s);
    job_early_fail(job);
    return NULL;
}
