/*
 * blockdev-create on the driver table.  The monitor checks the member types
 * of BlockdevCreateOptions with the driver's create_check; the create job
 * runs its co_create (block.h).  What several drivers' create entries need
 * lives here: qemu's schema words for uint64 and BlockdevRef members, the
 * PreallocMode and BlockdevDriver enums, and the `file` node an image is
 * written to (a node-name, or an inline definition opened for the creation
 * only).
 */
#ifndef BJ_BLOCK_CREATE_H
#define BJ_BLOCK_CREATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"
#include "util/error.h"

/* BlockdevDriver, qemu 7.2 (what 'driver' may name at all). */
extern const char *const bdrv_blockdev_driver_names[];

/* PreallocMode. */
extern const char *const bdrv_prealloc_names[];
enum { PREALLOC_OFF, PREALLOC_METADATA, PREALLOC_FALLOC, PREALLOC_FULL };

/* A uint64 member (default def when absent): a negative JSON integer
 * wraps, as the schema's uint64 does. */
uint64_t bdrv_create_opt_u64(json_t *opts, const char *name, uint64_t def);

/* Boundary checks in qemu's words: "Parameter 'options.NAME' expects
 * uint64"; "Invalid parameter type for 'NAME', expected: BlockdevRef"; an
 * inline BlockdevOptions at NAME checked as blockdev-add checks it (inline
 * children too).  Each passes when the member is absent. */
bool bdrv_create_check_u64(json_t *opts, const char *name, Error **errp);
bool bdrv_create_check_ref(json_t *opts, const char *name, Error **errp);
bool bdrv_create_check_inline_ref(json_t *opts, const char *name,
                                  Error **errp);

/*
 * The node a format's create writes its image to.  Use, from the create
 * job's coroutine in the main loop (attach moves the coroutine to the
 * node's iothread, if it lives in one, and close brings it back):
 *   bs = bdrv_co_create_target_open(&t, ref, job_id, errp);
 *   (check the values)  c = bdrv_create_target_attach(&t, errp);
 *   (write through c)   bdrv_co_create_target_close(&t);   -- always
 */
typedef struct BlockCreateTarget {
    BlockNode *bs;           /* the node, or NULL */
    BlockChild *child;       /* our write+resize edge, once attached */
    bool opened_inline;      /* we opened bs, and close it at the end */
    char name[32];           /* its node-name when opened_inline */
    AioContext *home;        /* attach moved us from there to bs->ctx */
} BlockCreateTarget;

/* ref: a node-name, or an inline definition opened as a node of its own
 * (named as given, or after the job).  NULL with errp set on failure. */
BlockNode *coroutine_fn bdrv_co_create_target_open(BlockCreateTarget *t,
                                                   json_t *ref,
                                                   const char *job_id,
                                                   Error **errp);
/* Takes write+resize on t->bs, sharing everything, as qemu's anonymous
 * BlockBackend; for a node in an iothread the coroutine then runs there
 * until bdrv_co_create_target_close. */
BlockChild *coroutine_fn bdrv_create_target_attach(BlockCreateTarget *t,
                                                   Error **errp);
void coroutine_fn bdrv_co_create_target_close(BlockCreateTarget *t);

/*
 * Creates the image file `filename` of format fmt (raw, or a format with a
 * create step) and the given size, storing backing_file / backing_fmt in it
 * when set, as qemu's bdrv_img_create does for blockdev-snapshot-sync:
 * "Unknown file format 'F'", "Backing file not supported for file format
 * 'F'", or the create step's own error.  Main loop, not in a coroutine.
 */
bool bdrv_img_create(const char *filename, const char *fmt, uint64_t size,
                     const char *backing_file, const char *backing_fmt,
                     Error **errp);

/* The format of the image file `filename` as the drivers' probe entries
 * guess it from its first bytes ("raw" when none claims it), or NULL with
 * errp set when the file cannot be read ("Could not open 'F': ...").
 * drive-backup's mode existing without a format, as qemu probes.  Main
 * loop (one small read). */
const char *bdrv_probe_format(const char *filename, Error **errp);

#endif
