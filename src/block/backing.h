/*
 * Backing links of a node: the graph edge and the name the image stores.
 * Jobs that shorten a chain (stream, commit) use both at their end.
 */
#ifndef BJ_BLOCK_BACKING_H
#define BJ_BLOCK_BACKING_H

#include <stdbool.h>

#include "block/block.h"
#include "util/error.h"

/* Rewrites the backing file name (and format) stored in bs's image through
 * its driver's co_change_backing_file; 0 for a driver without one.  Main
 * loop, outside coroutines; -errno on failure. */
int block_change_backing_file(BlockNode *bs, const char *file,
                              const char *fmt);

/* Makes `base` (or nothing) the backing node of bs, drained.  The old
 * backing node must be referenced by the caller (the job). */
bool block_set_backing(BlockNode *bs, BlockNode *base, Error **errp);

#endif
