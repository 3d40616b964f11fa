/*
 * Backup jobs: a point-in-time copy of a node that clients keep writing.
 * Arguments were checked at the QMP boundary (cmd-backup.c).  Created in
 * two steps so that the transaction command can prepare several and start
 * them all at its commit (or cancel them at its abort).  Main loop.
 */
#ifndef BJ_JOB_BACKUP_H
#define BJ_JOB_BACKUP_H

#include "block/block.h"
#include "block/dirty-bitmap.h"
#include "job/jobs.h"

typedef enum BackupSyncMode {
    BACKUP_SYNC_FULL = 0,
    BACKUP_SYNC_TOP,
    BACKUP_SYNC_NONE,
    BACKUP_SYNC_BITMAP,      /* only what the sync bitmap has dirty */
} BackupSyncMode;

/* What becomes of the sync bitmap at the end (qemu's bitmap-mode). */
typedef enum BackupBitmapMode {
    BACKUP_BITMAP_ON_SUCCESS = 0, /* success: cleared but for the writes
                                   * made during the job; else as before
                                   * plus those writes */
    BACKUP_BITMAP_NEVER,          /* always as before plus those writes */
    BACKUP_BITMAP_ALWAYS,         /* the writes during the job, plus on
                                   * failure what was not copied */
} BackupBitmapMode;

typedef struct BackupParams {
    BlockJobOptions job;          /* on_error is unused */
    BackupSyncMode sync;
    int64_t max_workers;          /* x-perf; 0: 64 */
    int64_t max_chunk;            /* x-perf; 0: no limit */
    bool compress;                /* qcow2 target: compressed clusters */
    /* A bitmap of the source (checked usable), or NULL.  Frozen with a
     * successor for the job's life: busy, and the writes made meanwhile go
     * to the successor; sync=bitmap needs one. */
    BdrvDirtyBitmap *sync_bitmap;
    BackupBitmapMode bitmap_mode;
} BackupParams;

/*
 * Inserts the copy-before-write filter above source and creates the job
 * (state "created", not started) in txn (NULL: its own).  From here on
 * every client write keeps the old data for the target.  Call with source
 * drained, so that the instant of the copy is well defined.
 */
Job *backup_job_create(const BackupParams *p, BlockNode *source,
                       BlockNode *target, JobTxn *txn, Error **errp);

/* The cluster size a backup to target copies with: the target's cluster
 * size, at least 64 KiB. */
int64_t backup_cluster_size(BlockNode *target);

#endif
