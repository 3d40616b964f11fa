/*
 * The driver tables.  bdrv_find_driver() (registry.c) searches the ones
 * users may name; a new driver adds its table here and to block_drivers[]
 * in registry.c.  Only src/block/drivers/ includes this.
 */
#ifndef BJ_BLOCK_DRIVERS_H
#define BJ_BLOCK_DRIVERS_H

#include "block/block.h"

extern const BlockDriver bdrv_file;     /* drivers/file.c */
extern const BlockDriver bdrv_host_device; /* drivers/file.c */
extern const BlockDriver bdrv_raw;      /* drivers/raw.c */
extern const BlockDriver bdrv_null_co;  /* drivers/null.c */
extern const BlockDriver bdrv_qcow2;    /* drivers/qcow2/qcow2.c */
extern const BlockDriver bdrv_blkdebug; /* drivers/blkdebug.c */
extern const BlockDriver bdrv_copy_on_read; /* drivers/copy-on-read.c */
extern const BlockDriver bdrv_nbd;      /* drivers/nbd.c: remote exports */
extern const BlockDriver bdrv_rbd;      /* drivers/rbd.c (librbd) */
extern const BlockDriver bdrv_throttle; /* drivers/throttle.c */
extern const BlockDriver bdrv_luks;     /* drivers/luks.c */
/* Inserted by backup jobs only (bdrv_open_internal). */
extern const BlockDriver bdrv_copy_before_write; /* drivers/copy-before-write.c */
/* Inserted by jobs only (bdrv_open_internal), not in block_drivers[]. */
extern const BlockDriver bdrv_mirror_top; /* drivers/mirror-top.c */

#endif
