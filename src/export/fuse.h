/*
 * FUSE exports (block-export-add type=fuse, --export type=fuse): a node
 * shows up as a regular file at its mountpoint (itself a regular file),
 * through libfuse3's low-level API on the main loop.  Export ids share
 * one namespace with NBD's (qmp/cmd-nbd.c checks both).  Main loop only.
 */
#ifndef BJ_EXPORT_FUSE_H
#define BJ_EXPORT_FUSE_H

#include <jansson.h>
#include <stdbool.h>

#include "util/error.h"

enum { FUSE_ALLOW_OTHER_OFF, FUSE_ALLOW_OTHER_ON, FUSE_ALLOW_OTHER_AUTO };

typedef struct FuseExportOptions {
    const char *id;
    const char *node_name;
    const char *mountpoint;
    bool writable;
    bool writethrough;
    bool growable;
    int allow_other;          /* FUSE_ALLOW_OTHER_* */
} FuseExportOptions;

/* Mounts the export; qsd's errors. */
bool fuse_export_add(const FuseExportOptions *o, Error **errp);
bool fuse_export_exists(const char *id);
/* Unmounts it (once its requests in flight are answered) and sends
 * BLOCK_EXPORT_DELETED; false with "Export '%s' is not found". */
bool fuse_export_del(const char *id, Error **errp);
/* Appends {id, type, node-name, shutting-down} of each, newest first. */
void fuse_export_query(json_t *list);
/* Quit: every export unmounted, waiting for their requests. */
void fuse_shutdown(void);

#endif
