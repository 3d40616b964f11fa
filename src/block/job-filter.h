/*
 * Job filters: nodes a job inserts above its source to see the writes of
 * the source's other users (backup: "copy-before-write"; mirror and active
 * commit: "mirror_top").  Users cannot blockdev-add them.  A job opens one
 * by name with bdrv_open_internal(bdrv_find_job_filter(name), ...) and
 * reaches it only through these calls, which go through the driver table.
 */
#ifndef BJ_BLOCK_JOB_FILTER_H
#define BJ_BLOCK_JOB_FILTER_H

#include "block/block.h"

/* The job filter called name, or NULL; the list lives with the drivers
 * (registry.c). */
const BlockDriver *bdrv_find_job_filter(const char *name);

/* Sets or clears (NULL) the filter's hook.  Main loop.  The filter must
 * have such a hook (a job asking for one it lacks is a bug: abort). */
void bdrv_filter_set_before_write_hook(BlockNode *bs,
                                       BdrvBeforeWriteHook *hook,
                                       void *opaque);
void bdrv_filter_set_after_write_hook(BlockNode *bs,
                                      BdrvAfterWriteHook *hook,
                                      void *opaque);

/* The filter's edge to where the job's copies go (copy-before-write's
 * "target"), or NULL when it has none. */
BlockChild *bdrv_filter_target(BlockNode *bs);

#endif
