/*
 * Starting mirror jobs: blockdev-mirror / drive-mirror, and active
 * block-commit (a mirror of type "commit" from the active layer into a
 * base below it).  Arguments were checked at the QMP boundary; these check
 * what needs the graph.  Main loop.
 */
#ifndef BJ_JOB_MIRROR_H
#define BJ_JOB_MIRROR_H

#include "block/block.h"
#include "job/jobs.h"

typedef enum MirrorSyncMode {
    MIRROR_SYNC_FULL = 0,
    MIRROR_SYNC_TOP,
    MIRROR_SYNC_NONE,
} MirrorSyncMode;

/* copy-mode, QAPI's MirrorCopyMode order, then our extension. */
typedef enum MirrorCopyMode {
    MIRROR_COPY_BACKGROUND = 0,
    MIRROR_COPY_WRITE_BLOCKING,
    /* background until the dirty count stops shrinking, then
     * write-blocking (docs/copy-mode-auto.md) */
    MIRROR_COPY_AUTO,
} MirrorCopyMode;

typedef struct MirrorParams {
    BlockJobOptions job;          /* on_error is unused */
    MirrorSyncMode sync;
    MirrorCopyMode copy_mode;
    int64_t granularity;          /* 0: the target's cluster size, 4-64 KiB */
    int64_t buf_size;             /* 0: 16 MiB */
    BlockNode *replaces;          /* NULL: the source */
    /* Count the whole disk in the job's progress, as qemu does when it
     * writes the whole target (zero_target, and a target it cannot zero
     * by unmapping: the command decides).  The holes the target reads as
     * zeroes anyway are not copied here either way; they are counted as
     * done then.  Only for sync full. */
    bool count_whole_disk;
} MirrorParams;

Job *mirror_start(const MirrorParams *p, BlockNode *source, BlockNode *target,
                  Error **errp);

/* Active commit: top is the active layer, base below it (writable). */
Job *commit_active_start(const BlockJobOptions *o, BlockNode *top,
                         BlockNode *base, MirrorCopyMode copy_mode,
                         Error **errp);

/* Whether job is a mirror or an active commit (its copy mode can change). */
bool job_is_mirror(const Job *job);
/*
 * block-job-change of a mirror or an active commit: only to
 * write-blocking, from background or auto (as qemu 8.2 allows).
 */
bool mirror_change_copy_mode(Job *job, MirrorCopyMode mode, Error **errp);

#endif
