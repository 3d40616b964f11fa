/*
 * copy-before-write: the filter a backup job inserts above its source.
 *
 *   clients -> [copy-before-write] --file--> source
 *                       |
 *                       +--target--> target (the backup)
 *
 * Reads pass through.  A write, write-zeroes or discard first calls the
 * hook for its range (the job copies the old data of the clusters it
 * touches to the target), and fails with the hook's error if that copy
 * fails (qemu's default on-cbw-error=break-guest-write): the target then
 * never misses the old data of a cluster a client changed.  Only jobs open
 * it (bdrv_open_internal, options "file" and "target" as node names).
 */
#ifndef BJ_BLOCK_DRIVERS_COPY_BEFORE_WRITE_H
#define BJ_BLOCK_DRIVERS_COPY_BEFORE_WRITE_H

#include "block/block.h"

/* Called in the client's request coroutine before the request goes down;
 * returns 0 or -errno. */
typedef int coroutine_fn CbwHook(void *opaque, int64_t offset,
                                 int64_t bytes);

/* Sets the hook (NULL: writes pass through).  Main loop. */
void cbw_set_hook(BlockNode *bs, CbwHook *hook, void *opaque);
/* The filter's edge to the target (requests of the copy go there). */
BlockChild *cbw_target_child(BlockNode *bs);

#endif
