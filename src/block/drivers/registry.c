/*
 * The driver list: the drivers blockdev-add (and blockdev-create) may name.
 * The only place outside a driver's own files that knows which drivers
 * exist; the block layer reaches them through bdrv_find_driver().
 */
#include <string.h>

#include "block/block.h"
#include "block/drivers/drivers.h"

static const BlockDriver *const block_drivers[] = {
    &bdrv_file,
    &bdrv_raw,
    &bdrv_null_co,
    &bdrv_qcow2,
    &bdrv_blkdebug,
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
