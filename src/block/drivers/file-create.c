/*
 * blockdev-create for the `file` driver: open(O_CREAT) in the thread pool,
 * take qemu's image locks for write+resize (refusing a file another user
 * holds), truncate to 0, nocow / extent size hint (best effort), then size
 * it with the preallocation asked for.  The image is opened here rather
 * than through a node, as qemu's file driver does in its own create.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "aio/io.h"
#include "block/create.h"
#include "block/drivers/file-create.h"
#include "block/drivers/file-lock.h"
#include "util/argspec.h"
#include "util/cleanup.h"

/* uint64 members are ARG_ANY here and checked with qemu's messages. */
static const ArgSpec file_create_members[] = {
    { .name = "driver", .type = ARG_STR },
    { .name = "filename", .type = ARG_STR },
    { .name = "size", .type = ARG_ANY },
    { .name = "preallocation", .type = ARG_ENUM, .optional = true,
      .enum_values = bdrv_prealloc_names },
    { .name = "nocow", .type = ARG_BOOL, .optional = true },
    { .name = "extent-size-hint", .type = ARG_ANY, .optional = true },
    { .name = NULL },
};

bool file_create_check(json_t *o, Error **errp)
{
    return argspec_check(o, file_create_members, "options", false, errp) &&
           bdrv_create_check_u64(o, "size", errp) &&
           bdrv_create_check_u64(o, "extent-size-hint", errp);
}

typedef struct FileCreate {
    const char *filename;
    uint64_t size;
    int prealloc;
    bool nocow;
    uint64_t extent_hint;
    Error *err;
} FileCreate;

/* Sizes the (empty) file to fc->size as the preallocation mode says. */
static int file_resize(int fd, FileCreate *fc)
{
    off_t size = (off_t)fc->size;

    /* A uint64 size past INT64_MAX is "smaller" than the empty file. */
    if (fc->prealloc != PREALLOC_OFF && size < 0) {
        error_setg(&fc->err, "Cannot use preallocation for shrinking files");
        return -ENOTSUP;
    }
    switch (fc->prealloc) {
    case PREALLOC_OFF:
        if (ftruncate(fd, size) < 0) {
            int e = errno;
            error_setg_errno(&fc->err, e, "Could not resize file");
            return -e;
        }
        return 0;
    case PREALLOC_FALLOC: {
        int r = size ? posix_fallocate(fd, 0, size) : 0;
        if (r) {
            error_setg_errno(&fc->err, r, "Could not preallocate new data");
            return -r;
        }
        return 0;
    }
    case PREALLOC_FULL: {
        static const char zeros[65536];
        if (ftruncate(fd, size) < 0) {
            int e = errno;
            error_setg_errno(&fc->err, e, "Could not resize file");
            return -e;
        }
        for (off_t off = 0; off < size;) {
            size_t n = size - off < (off_t)sizeof(zeros)
                       ? (size_t)(size - off) : sizeof(zeros);
            ssize_t w = pwrite(fd, zeros, n, off);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                int e = w < 0 ? errno : EIO;
                error_setg_errno(&fc->err, e, "Could not write zeros for "
                                 "preallocation");
                return -e;
            }
            off += w;
        }
        if (fsync(fd) < 0) {
            int e = errno;
            error_setg_errno(&fc->err, e, "Could not flush file to disk");
            return -e;
        }
        return 0;
    }
    default:
        error_setg(&fc->err, "Unsupported preallocation mode: %s",
                   bdrv_prealloc_names[fc->prealloc]);
        return -ENOTSUP;
    }
}

/* Thread pool: everything here may block. */
static int file_create_worker(void *opaque)
{
    FileCreate *fc = opaque;
    /* What creating needs: write, and a size nobody changes under us. */
    const uint64_t perm = BLK_PERM_WRITE | BLK_PERM_RESIZE;
    const uint64_t shared = BLK_PERM_ALL & ~BLK_PERM_RESIZE;
    FileLockState locks = { 0 };
    CLEANUP_CLOSE int fd = -1;
    int ret;

    fd = open(fc->filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        error_setg_errno(&fc->err, e, "Could not create '%s'",
                         fc->filename);
        return -e;
    }
    if (file_lock_supported(fd) &&
        (!file_lock_apply(fd, &locks, perm, shared, &fc->err) ||
         !file_lock_check(fd, perm, shared, fc->filename, &fc->err))) {
        return -EAGAIN;
    }
    if (ftruncate(fd, 0) < 0) {
        int e = errno;
        error_setg_errno(&fc->err, e, "Could not resize file");
        return -e;
    }
    if (fc->nocow) {
        /* Only btrfs knows the flag; elsewhere it is ignored, as in qemu. */
        int attr;
        if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
            attr |= FS_NOCOW_FL;
            (void)ioctl(fd, FS_IOC_SETFLAGS, &attr);
        }
    }
    if (fc->extent_hint) {
        /* A hint (XFS); failing to set it is not an error. */
        struct fsxattr attr;
        if (ioctl(fd, FS_IOC_FSGETXATTR, &attr) == 0) {
            attr.fsx_xflags |= FS_XFLAG_EXTSIZE;
            attr.fsx_extsize = (uint32_t)fc->extent_hint;
            (void)ioctl(fd, FS_IOC_FSSETXATTR, &attr);
        }
    }
    ret = file_resize(fd, fc);
    /* Closing the descriptor drops its locks. */
    return ret;
}

int coroutine_fn file_co_create(json_t *o, const char *job_id,
                                Error **errp)
{
    FileCreate fc = {
        .filename = arg_str(o, "filename", ""),
        .size = bdrv_create_opt_u64(o, "size", 0),
        .prealloc = arg_enum(o, "preallocation", bdrv_prealloc_names,
                             PREALLOC_OFF),
        .nocow = arg_bool(o, "nocow", false),
        .extent_hint = bdrv_create_opt_u64(o, "extent-size-hint", 1 << 20),
    };
    int ret;

    if (fc.extent_hint > UINT32_MAX) {
        error_setg(errp, "Extent size hint is too large");
        return -EINVAL;
    }
    ret = thread_pool_co_run(file_create_worker, &fc);
    if (ret < 0) {
        error_propagate(errp, fc.err);
        return ret;
    }
    error_free(fc.err);
    return 0;
}
