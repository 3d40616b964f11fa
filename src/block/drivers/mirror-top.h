/*
 * mirror_top: the filter a mirror job (and active commit) inserts above its
 * source.  Every request passes through to the source ("file" child); a
 * write-like request that succeeded is then reported to the job, which in
 * write-blocking mode copies it to the target before the client hears back.
 * Background-mode jobs leave the hook unset: the source's dirty bitmap
 * (marked by the request path) tells them what to copy.
 */
#ifndef BJ_BLOCK_DRIVERS_MIRROR_TOP_H
#define BJ_BLOCK_DRIVERS_MIRROR_TOP_H

#include "block/block.h"

typedef enum MirrorTopWrite {
    MIRROR_TOP_WRITE,          /* qiov holds the data */
    MIRROR_TOP_WRITE_ZEROES,   /* flags: BLK_REQ_MAY_UNMAP may be set */
    MIRROR_TOP_DISCARD,
} MirrorTopWrite;

/* Called in the client's request coroutine after the source completed
 * [offset, offset+bytes) successfully; the client waits for it. */
typedef void coroutine_fn MirrorTopHook(void *opaque, MirrorTopWrite kind,
                                        int64_t offset, int64_t bytes,
                                        IOVector *qiov, unsigned flags);

/* Inserts no node: sets the hook of an open mirror_top node (NULL to
 * stop).  Main loop. */
void mirror_top_set_hook(BlockNode *bs, MirrorTopHook *hook, void *opaque);

#endif
