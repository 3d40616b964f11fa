/*
 * Internal snapshots of a node's image (qcow2's snapshot table), through
 * the driver table: list, create, delete.  Main loop; the caller keeps
 * the node drained around create and delete (the QMP commands do).
 */
#ifndef BJ_BLOCK_SNAPSHOT_H
#define BJ_BLOCK_SNAPSHOT_H

#include <stdbool.h>

#include "block/block.h"

/* Whether bs's format has internal snapshots (qsd's bdrv_can_snapshot,
 * less the read-only test). */
bool bdrv_snapshot_supported(BlockNode *bs);
/* The snapshots of bs, in table order (*list malloc'd, free()): their
 * number, or -ENOTSUP when the format has none. */
int bdrv_snapshot_list(BlockNode *bs, BdrvSnapshotInfo **list);
/* The snapshot with id (if non-NULL) and name (if non-NULL); both NULL
 * finds nothing.  Returns whether found (*out filled if out). */
bool bdrv_snapshot_find(BlockNode *bs, const char *id, const char *name,
                        BdrvSnapshotInfo *out);
/* Takes a snapshot named name of the image as it is now; *out (if
 * non-NULL) describes it.  Returns 0 or -errno with errp set. */
int bdrv_snapshot_create(BlockNode *bs, const char *name,
                         BdrvSnapshotInfo *out, Error **errp);
/* Deletes the snapshot found as bdrv_snapshot_find does; *out (if
 * non-NULL) describes what was deleted. */
int bdrv_snapshot_delete(BlockNode *bs, const char *id, const char *name,
                         BdrvSnapshotInfo *out, Error **errp);

#endif
