/*
 * Reopening a node with another read-only state, as jobs need: commit
 * writes into a base that was opened read-only from its overlay's header,
 * stream into a read-only top; both give the node back read-only after.
 */
#ifndef BJ_BLOCK_REOPEN_H
#define BJ_BLOCK_REOPEN_H

#include <stdbool.h>

#include "block/block.h"
#include "util/error.h"

/*
 * Makes bs read-only or read-write, with the children that follow it: the
 * non-backing children it opened itself (implicit names: a qcow2 node's
 * inline or header-opened file), as QEMU's option inheritance does.  A
 * child named by the user keeps its state (and refuses with "Block node is
 * read-only" if it is read-only and bs needs to write it).
 *
 * Inside a drained section on bs: going read-only flushes first (qcow2
 * writes its metadata out), then every driver prepares (the file driver
 * opens a descriptor with the new access mode), then the permissions are
 * checked and the image locks taken or dropped.  A refusal anywhere leaves
 * every node as it was.  Main loop, not in a coroutine.
 */
bool bdrv_reopen_set_read_only(BlockNode *bs, bool read_only, Error **errp);

/*
 * blockdev-reopen: options is the list of BlockdevOptions, one per node to
 * reopen, as qsd 7.2 takes it.  What may change: read-only (absent means
 * read-write, as in qemu) and, for a format with backing, the backing node
 * (a node-name, or null for none; absent while the node has one is
 * refused).  Everything else must restate what the node was opened with:
 * the driver, the file child's node-name, the other options (we refuse
 * "Cannot change the option 'X'" where qemu would reset or swap them).
 * Every element is checked before anything changes; then the changes are
 * made in passes over the list (what a pass refuses may pass once other
 * elements are in: a file node and its format going read-only together)
 * and all undone in reverse if a pass makes no progress, so the list is
 * applied whole or not at all.  Main loop, not in a coroutine.
 */
typedef bool BdrvReopenBackingCheck(BlockNode *bs, Error **errp);
/* check_backing (may be NULL): asked, after the element's own checks,
 * whether bs's backing link may change (the job layer's frozen links). */
bool bdrv_reopen_blockdev(json_t *options,
                          BdrvReopenBackingCheck *check_backing,
                          Error **errp);

#endif
