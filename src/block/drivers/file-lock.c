/*
 * QEMU-compatible image locking on open-file-description byte locks.
 * The byte layout and its meaning are described in file-lock.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>

#include "block/block.h"
#include "block/drivers/file-lock.h"

/* Permission bits that have a lock byte: the four BLK_PERM_* bits. */
#define FILE_LOCK_NBITS 4

_Static_assert(BLK_PERM_ALL == (1 << FILE_LOCK_NBITS) - 1,
               "every permission bit needs a lock byte");

/* Names as QEMU prints them in lock errors. */
static const char *const perm_name[FILE_LOCK_NBITS] = {
    "consistent read", "write", "write unchanged", "resize",
};

static int ofd_lock_byte(int fd, int64_t byte, short type)
{
    struct flock fl = {
        .l_type = type,
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
    };

    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        return -errno;
    }
    return 0;
}

/* Returns 1 if another open file description holds a lock on byte, 0 if
 * not, -errno if the question could not be asked. */
static int ofd_byte_taken(int fd, int64_t byte)
{
    struct flock fl = {
        .l_type = F_WRLCK,
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
    };

    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
        return -errno;
    }
    return fl.l_type != F_UNLCK;
}

bool file_lock_supported(int fd)
{
    /* Filesystems without OFD support (and old kernels) refuse the
     * command itself; asking about a byte is harmless. */
    return ofd_byte_taken(fd, FILE_LOCK_PERM_BASE) >= 0;
}

static bool update_byte(int fd, int64_t byte, bool want, bool have,
                        Error **errp)
{
    int ret;

    if (want == have) {
        return true;
    }
    ret = ofd_lock_byte(fd, byte, want ? F_RDLCK : F_UNLCK);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to %s byte %" PRId64,
                         want ? "lock" : "unlock", byte);
        return false;
    }
    return true;
}

bool file_lock_apply(int fd, FileLockState *st, uint64_t perm,
                     uint64_t shared, Error **errp)
{
    uint64_t unshared = ~shared & BLK_PERM_ALL;

    perm &= BLK_PERM_ALL;
    for (int i = 0; i < FILE_LOCK_NBITS; i++) {
        uint64_t bit = 1ULL << i;

        if (!update_byte(fd, FILE_LOCK_PERM_BASE + i, perm & bit,
                         st->locked_perm & bit, errp)) {
            return false;
        }
        st->locked_perm = (st->locked_perm & ~bit) | (perm & bit);

        if (!update_byte(fd, FILE_LOCK_SHARED_BASE + i, unshared & bit,
                         st->locked_unshared & bit, errp)) {
            return false;
        }
        st->locked_unshared = (st->locked_unshared & ~bit) | (unshared & bit);
    }
    return true;
}

bool file_lock_check(int fd, uint64_t perm, uint64_t shared,
                     const char *filename, Error **errp)
{
    /* All held bits first, then all unshared ones: with conflicts of both
     * kinds QEMU names the held permission, and so do we. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < FILE_LOCK_NBITS; i++) {
            uint64_t bit = 1ULL << i;
            bool want = pass == 0 ? (perm & bit) : !(shared & bit);
            /* Holding i collides with someone not sharing it (200+i), and
             * not sharing i with someone holding it (100+i). */
            int64_t byte = pass == 0 ? FILE_LOCK_SHARED_BASE + i
                                     : FILE_LOCK_PERM_BASE + i;
            const char *kind = pass == 0 ? "" : "shared ";
            int ret;

            if (!want) {
                continue;
            }
            ret = ofd_byte_taken(fd, byte);
            if (ret < 0) {
                error_setg_errno(errp, -ret, "Failed to get %s\"%s\" lock",
                                 kind, perm_name[i]);
                return false;
            }
            if (ret) {
                error_setg(errp, "Failed to get %s\"%s\" lock", kind,
                           perm_name[i]);
                goto in_use;
            }
        }
    }
    return true;

in_use:
    /* QEMU's hint, word for word: printed under a command-line error,
     * never part of a QMP reply. */
    error_append_hint(errp, "Is another process using the image [%s]?\n",
                      filename);
    return false;
}
