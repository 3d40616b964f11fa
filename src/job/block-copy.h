/*
 * The copy engine of backup: copies clusters of a source onto a target
 * once each, whoever asks first.
 *
 *   client write -> [copy-before-write] --file--> source
 *                         |  block_copy(range) first
 *                         +--target--> target
 *   backup body  ---------------- block_copy_claim/task_run (workers)
 *
 * State: a "needs copy" bitmap at cluster granularity (HBitmap) and the
 * list of tasks in flight.  Invariant: a cluster is set in the bitmap, or
 * inside exactly one task in flight, or copied (never both set and in
 * flight), so the background copy and a client write never copy the same
 * cluster twice or race.  A task that fails sets its clusters again.
 *
 * A client write (block_copy) claims the dirty clusters it touches and
 * copies them at once, with its own buffer: it never waits for the
 * background's memory budget or its queue, only for tasks already copying
 * one of its clusters.
 *
 * Memory: background tasks take their buffer from two budgets, the job's
 * (block_copy_state_new's buf_limit) and the daemon-wide one below, so many
 * concurrent backups stay small.  Buffers come from util/bufpool.h and
 * go back at once; the pool keeps a bounded few for the next task, so
 * tasks do not fault in fresh pages every time.
 *
 * A state lives in its nodes' context (the job's, and the filter's hooks
 * run there too), so no locks: it is only touched between yields of
 * coroutines of one thread, and by the main loop only inside a drained
 * section or once the job ended.  The daemon-wide budget alone is shared
 * between threads (a mutex; block-copy.c).
 */
#ifndef BJ_JOB_BLOCK_COPY_H
#define BJ_JOB_BLOCK_COPY_H

#include <stdbool.h>
#include <stdint.h>

#include "aio/coroutine.h"
#include "block/block.h"
#include "block/dirty-bitmap.h"
#include "util/error.h"
#include "util/hbitmap.h"

typedef struct BlockCopyState BlockCopyState;
typedef struct BlockCopyTask BlockCopyTask;

/* Told of every successfully copied (or skipped) range, in whole clusters
 * (a last, partial cluster counts whole, as in qemu): job progress. */
typedef void BlockCopyProgressFn(void *opaque, int64_t bytes);

/* The daemon-wide budget for background copy buffers, shared by every
 * BlockCopyState (bytes; default 64 MiB).  Any thread. */
#define BLOCK_COPY_GLOBAL_MEM_DEFAULT (64LL << 20)
void block_copy_set_global_mem_limit(int64_t bytes);
int64_t block_copy_global_mem_in_use(void);

/*
 * source and target are edges the caller owns (the copy-before-write
 * filter's file and target children); len bytes are copied at
 * cluster_size granularity (a power of two).  All clusters start dirty.
 * skip_unallocated_base: with sync=top, clusters not allocated above that
 * node are skipped when a task reaches them (NULL: copy everything).
 */
BlockCopyState *block_copy_state_new(BlockChild *source, BlockChild *target,
                                     int64_t len, int64_t cluster_size,
                                     Error **errp);
/* No task may be in flight. */
void block_copy_state_free(BlockCopyState *s);

void block_copy_set_progress(BlockCopyState *s, BlockCopyProgressFn *fn,
                             void *opaque);
/* Per-state budget for background tasks (bytes, >= one chunk). */
void block_copy_set_buf_limit(BlockCopyState *s, int64_t bytes);
/* sync=top: skip what is not allocated in source above base (source
 * NULL: stop skipping). */
void block_copy_set_skip_unallocated(BlockCopyState *s, BlockNode *source,
                                     BlockNode *base);
/* Writes data with BLK_REQ_WRITE_COMPRESSED (qcow2 targets). */
void block_copy_set_compress(BlockCopyState *s, bool compress);
/* Stops copying (the job ended): block_copy returns 0 at once. */
void block_copy_set_disabled(BlockCopyState *s, bool disabled);

/*
 * sync=bitmap: only what src (any granularity, over the same bytes) has
 * dirty needs a copy; a dirty run makes every cluster it touches dirty.
 * Before any task exists.
 */
void block_copy_set_needs_copy(BlockCopyState *s, const HBitmap *src);
/*
 * sync=top, before the copy starts: looks at the clusters from offset
 * (cluster aligned) on; a run not allocated above the skip base (a
 * cluster counts as allocated when any byte of it is) no longer needs a
 * copy.  *count gets the bytes looked at.  1 allocated, 0 not, -errno.
 * Once the whole disk was looked at, the copy needs no more checks
 * (block_copy_set_skip_unallocated(s, NULL, NULL) turns them off).
 */
int coroutine_fn block_copy_reset_unallocated(BlockCopyState *s,
                                              int64_t offset,
                                              int64_t *count);
/* bm |= what was not copied yet: the dirty clusters and those in flight
 * (bitmap-mode always after a failure: nothing the job did not copy may be
 * lost). */
void block_copy_merge_uncopied(BlockCopyState *s, BdrvDirtyBitmap *bm);

HBitmap *block_copy_bitmap(BlockCopyState *s);
int64_t block_copy_cluster_size(BlockCopyState *s);
/* Dirty plus in-flight clusters, in bytes: what is left (progress). */
int64_t block_copy_remaining(BlockCopyState *s);
int block_copy_tasks_in_flight(BlockCopyState *s);
/* Whether a client's copy is in flight or ended less than window_ns ago:
 * the background then yields the disk to clients. */
bool block_copy_clients_active(BlockCopyState *s, int64_t window_ns);

/*
 * Before a client write to [offset, offset+bytes): copies every cluster it
 * touches that still needs it, waiting only for tasks copying one of them
 * right now.  0 or -errno (*error_is_read: the read failed).  coroutine_fn.
 */
int coroutine_fn block_copy(BlockCopyState *s, int64_t offset, int64_t bytes,
                            bool *error_is_read);

/*
 * Background: waits for max_bytes of budget (job, then daemon-wide), then
 * claims the first dirty run at or after *offset (wrapping to 0), at most
 * max_bytes long.  NULL (budget given back) when nothing is dirty.
 */
BlockCopyTask *coroutine_fn block_copy_claim(BlockCopyState *s,
                                             int64_t *offset,
                                             int64_t max_bytes);
/* Copies a claimed task and ends it (frees it, gives its budget back).
 * On failure the clusters are dirty again. */
int coroutine_fn block_copy_task_run(BlockCopyTask *t, bool *error_is_read);
/* Waits until some task ends (any caller). */
void coroutine_fn block_copy_wait_any(BlockCopyState *s);

#endif
