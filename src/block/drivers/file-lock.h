/*
 * Image locking compatible with QEMU's, so that qemu-img, qemu-io, QEMU and
 * blockjobd see each other's use of an image.
 *
 * The layout (observed against qemu-io / qemu-img / qemu-storage-daemon 7.2):
 * open-file-description locks (F_OFD_SETLK), always shared (F_RDLCK), on
 * single bytes of the image file:
 *
 *   byte 100 + i   held while the opener HOLDS permission bit i
 *   byte 200 + i   held while the opener does NOT SHARE permission bit i
 *
 * with bit 0 consistent-read, 1 write, 2 write-unchanged, 3 resize (the same
 * bits as BLK_PERM_*).  Because every lock is a read lock, taking one never
 * fails; conflicts are found by asking (F_OFD_GETLK with F_WRLCK) whether
 * another open file description holds the opposite byte:
 *
 *   holding i     requires that nobody else holds 200 + i
 *   not sharing i requires that nobody else holds 100 + i
 *
 * OFD locks belong to the open file description, so two nodes on the same
 * file in one process conflict exactly like two processes do.
 */
#ifndef BJ_BLOCK_DRIVERS_FILE_LOCK_H
#define BJ_BLOCK_DRIVERS_FILE_LOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "util/error.h"

#define FILE_LOCK_PERM_BASE   100
#define FILE_LOCK_SHARED_BASE 200

/* What an fd currently has locked: perm bits (bytes 100+i) and unshared
 * bits (bytes 200+i). */
typedef struct FileLockState {
    uint64_t locked_perm;
    uint64_t locked_unshared;
} FileLockState;

/* True if the filesystem under fd supports OFD locks (probes F_OFD_GETLK). */
bool file_lock_supported(int fd);

/*
 * Makes the locks held on fd exactly (perm, ~shared), changing only the
 * bytes that differ from *st.  On failure some bytes may have changed and
 * *st says which are held now.
 */
bool file_lock_apply(int fd, FileLockState *st, uint64_t perm,
                     uint64_t shared, Error **errp);

/*
 * Checks that no other open file description conflicts with holding perm
 * while sharing only shared.  Message as QEMU's: "Failed to get \"write\"
 * lock" or "Failed to get shared \"write\" lock".
 */
bool file_lock_check(int fd, uint64_t perm, uint64_t shared,
                     const char *filename, Error **errp);

#endif
