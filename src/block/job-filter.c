/*
 * Job filters through the driver table (see job-filter.h).
 */
#include "block/job-filter.h"

#include <assert.h>

void bdrv_filter_set_before_write_hook(BlockNode *bs,
                                       BdrvBeforeWriteHook *hook,
                                       void *opaque)
{
    assert(bs->drv->set_before_write_hook);
    bs->drv->set_before_write_hook(bs, hook, opaque);
}

void bdrv_filter_set_after_write_hook(BlockNode *bs,
                                      BdrvAfterWriteHook *hook,
                                      void *opaque)
{
    assert(bs->drv->set_after_write_hook);
    bs->drv->set_after_write_hook(bs, hook, opaque);
}

BlockChild *bdrv_filter_target(BlockNode *bs)
{
    return bs->drv->filter_target ? bs->drv->filter_target(bs) : NULL;
}
