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

#endif
