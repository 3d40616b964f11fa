/*
 * The driver list: the drivers blockdev-add (and blockdev-create) may name.
 * The only place outside a driver's own files that knows which drivers
 * exist; the block layer reaches them through bdrv_find_driver().
 */
#include <string.h>

#include "block/block.h"
#include "block/drivers/drivers.h"
#include "block/job-filter.h"

static const BlockDriver *const block_drivers[] = {
    &bdrv_file,
    &bdrv_raw,
    &bdrv_null_co,
    &bdrv_qcow2,
    &bdrv_blkdebug,
    &bdrv_copy_on_read,
    &bdrv_host_device,
    &bdrv_nbd,
    &bdrv_rbd,
    &bdrv_throttle,
    &bdrv_luks,
};
#define N_DRIVERS (sizeof(block_drivers) / sizeof(block_drivers[0]))

const BlockDriver *bdrv_find_driver(const char *name)
{
    for (size_t i = 0; i < N_DRIVERS; i++) {
        if (block_drivers[i]->name &&
            strcmp(block_drivers[i]->name, name) == 0) {
            return block_drivers[i];
        }
    }
    return NULL;
}

/* Job filters: not in block_drivers[], since users may not name them. */
static const BlockDriver *const job_filters[] = {
    &bdrv_copy_before_write,
    &bdrv_mirror_top,
};
#define N_JOB_FILTERS (sizeof(job_filters) / sizeof(job_filters[0]))

const BlockDriver *bdrv_find_job_filter(const char *name)
{
    for (size_t i = 0; i < N_JOB_FILTERS; i++) {
        if (strcmp(job_filters[i]->name, name) == 0) {
            return job_filters[i];
        }
    }
    return NULL;
}
