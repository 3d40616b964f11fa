/*
 * The `file` protocol driver: a node backed by a regular file on the aio/
 * backends; and `host_device`, the same code for block (and character)
 * devices: size by BLKGETSIZE64, discard by BLKDISCARD, write-zeroes by
 * BLKZEROOUT, the O_DIRECT alignment from BLKSSZGET (logical block) and
 * BLKPBSZGET (physical block: the discard and write-zeroes granularity),
 * every byte reported as data.  Each refuses the other's kind of file
 * with qsd's words.
 *
 * Options (blockdev-add): filename, locking=on|off|auto [auto],
 * aio=threads|native|io_uring, aio-max-batch (accepted, the ring batches on
 * its own), and the node's cache.direct (O_DIRECT) and cache.no-flush.
 *
 * aio: absent means io_uring when the kernel allows it, else threads.
 * "native" is QEMU's linux-aio; io_uring is our kernel-native path, so
 * native is accepted as io_uring, keeping QEMU's rule (and message) that it
 * needs cache.direct=on so that configurations stay portable both ways.
 *
 * O_DIRECT: the alignment the kernel wants is found at open (statx
 * STATX_DIOALIGN, else trial reads) and published as request_alignment and
 * min_mem_alignment; requests whose buffers are not aligned go through an
 * aligned bounce buffer, and requests whose offsets are not (the layer
 * normally pads them) are read-modify-written here.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aio/io.h"
#include "block/block.h"
#include "block/drivers/drivers.h"
#include "block/drivers/file-create.h"
#include "block/drivers/file-lock.h"
#include "util/alloc.h"
#include "util/cleanup.h"
#include "util/log.h"

/* SEEK_DATA/SEEK_HOLE answers slower than this move to the thread pool;
 * slower than the cap, the node stops asking and reports data. */
#define SEEK_SLOW_NS   (10 * 1000000LL)
#define SEEK_CAP_NS    (1000 * 1000000LL)

/* Zero-buffer fallback for write-zeroes: chunk size. */
#define ZERO_CHUNK     (1 << 20)

enum { LOCKING_ON, LOCKING_OFF, LOCKING_AUTO };
enum { AIO_THREADS, AIO_NATIVE, AIO_IO_URING };

static const char *const locking_values[] = { "on", "off", "auto", NULL };
static const char *const aio_values[] = {
    "threads", "native", "io_uring", NULL
};

static const ArgSpec file_options[] = {
    { .name = "filename", .type = ARG_STR },
    { .name = "locking", .type = ARG_ENUM, .optional = true, .enum_values = locking_values },
    { .name = "aio", .type = ARG_ENUM, .optional = true, .enum_values = aio_values },
    { .name = "aio-max-batch", .type = ARG_INT, .optional = true },
    { .name = NULL },
};

typedef struct FileState {
    bool opened;
    int fd;
    IoBackend aio;
    /*
     * The image locks live on a descriptor of their own, never used for
     * I/O: requests in flight on io_uring hold references to the I/O
     * descriptor's open file description, which the kernel drops some
     * milliseconds after a killed process is reaped.  Locks there would
     * outlive the process and refuse a qemu-img run right after a crash.
     */
    int lock_fd;
    /* A reopen's descriptor with the new access mode, until commit. */
    int reopen_fd;
    bool use_lock;
    FileLockState lock;
    char *filename;

    /* O_DIRECT constraints; 1 when buffered. */
    uint32_t req_align;
    uint32_t buf_align;
    /* Serialises read-modify-write of unaligned O_DIRECT writes. */
    CoMutex rmw_lock;

    /* Learned at run time: the filesystem refused these once. */
    bool no_zero_range;
    bool no_punch_hole;
    bool no_fallocate;
    /* SEEK_DATA is slow here: ask from the pool / give up asking. */
    bool seek_slow;
    bool seek_broken;

    /* host_device: is_blk for a block device (else a character one). */
    bool hdev;
    bool is_blk;
    uint32_t lbs, pbs;       /* its logical and physical block sizes */
    bool no_blkdiscard;
    bool no_blkzeroout;
} FileState;

/* ---- helpers that run in the thread pool ---- */

typedef struct OpenJob {
    const char *filename;
    int flags;
} OpenJob;

static int open_job(void *opaque)
{
    OpenJob *j = opaque;
    int fd = open(j->filename, j->flags);

    return fd < 0 ? -errno : fd;
}

typedef struct AlignJob {
    int fd;
    bool is_blk;
    uint32_t req_align;
    uint32_t buf_align;
} AlignJob;

/* Does an O_DIRECT read of len bytes at buf work?  EINVAL is the kernel's
 * way of saying "misaligned"; another error means the alignment itself was
 * accepted.  A read of nothing proves nothing: at end of file some
 * filesystems return 0 before looking at alignment (an empty file), so the
 * caller falls back to the safe default. */
static bool dio_read_ok(int fd, void *buf, size_t len)
{
    ssize_t ret = pread(fd, buf, len, 0);

    return ret > 0 || (ret < 0 && errno != EINVAL);
}

static int align_job(void *opaque)
{
    static const uint32_t sizes[] = { 1, 512, 1024, 2048, 4096 };
    AlignJob *j = opaque;
    const size_t max = 4096;
    uint8_t *buf;

    j->req_align = 0;
    j->buf_align = 0;

#ifdef STATX_DIOALIGN
    {
        struct statx stx;

        if (statx(j->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
            (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
            j->req_align = stx.stx_dio_offset_align;
            j->buf_align = stx.stx_dio_mem_align;
        }
    }
#endif
    if (!j->req_align && j->is_blk) {
        int sector;

        if (ioctl(j->fd, BLKSSZGET, &sector) == 0 && sector > 0) {
            j->req_align = sector;
        }
    }

    buf = blk_aligned_alloc(max, 2 * max);
    if (!j->req_align) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            if (dio_read_ok(j->fd, buf, sizes[i])) {
                j->req_align = sizes[i];
                break;
            }
        }
    }
    if (!j->buf_align) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            size_t len = j->req_align ? j->req_align : max;

            if (dio_read_ok(j->fd, buf + sizes[i], len)) {
                j->buf_align = sizes[i];
                break;
            }
        }
    }
    free(buf);

    /* Nothing worked (an empty file on a filesystem that checks size
     * first, say): assume the largest usual constraint. */
    if (!j->req_align) {
        j->req_align = max;
    }
    if (!j->buf_align) {
        j->buf_align = max;
    }
    return 0;
}

typedef struct TruncJob {
    int fd;
    off_t size;
} TruncJob;

static int truncate_job(void *opaque)
{
    TruncJob *j = opaque;

    return ftruncate(j->fd, j->size) < 0 ? -errno : 0;
}

typedef struct SeekJob {
    int fd;
    off_t offset;
    int whence;
    off_t result;
} SeekJob;

static int seek_job(void *opaque)
{
    SeekJob *j = opaque;

    j->result = lseek(j->fd, j->offset, j->whence);
    return j->result < 0 ? -errno : 0;
}

/* Starts writeback of the whole file's dirty pages; does not wait for it
 * (SYNC_FILE_RANGE_WRITE only queues the I/O, which may block while the
 * device's queue is full: hence the thread pool). */
static int writeback_job(void *opaque)
{
    FileState *s = opaque;

    return sync_file_range(s->fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0 ? -errno
                                                                     : 0;
}

/* ---- open / close ---- */

static int64_t file_length(int fd)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    if (S_ISBLK(st.st_mode)) {
        uint64_t size;

        return ioctl(fd, BLKGETSIZE64, &size) < 0 ? -errno : (int64_t)size;
    }
    if (S_ISCHR(st.st_mode)) {
        off_t end = lseek(fd, 0, SEEK_END);

        return end < 0 ? -errno : end;
    }
    return st.st_size;
}

/*
 * A second open file description of the same file for the locks: through
 * /proc/self/fd (the very inode, whatever happened to the name since), else
 * by name, checking that it is still the same file.
 */
static int coroutine_fn file_open_lock_fd(FileState *s, const char *filename,
                                          const struct stat *st,
                                          Error **errp)
{
    char proc_path[64];
    OpenJob oj = { .filename = proc_path, .flags = O_RDONLY | O_CLOEXEC };
    struct stat lst;
    int fd;

    snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", s->fd);
    fd = thread_pool_co_run(open_job, &oj);
    if (fd < 0) {
        oj.filename = filename;
        fd = thread_pool_co_run(open_job, &oj);
    }
    if (fd < 0) {
        error_setg_errno(errp, -fd, "Could not open '%s' for locking",
                         filename);
        return fd;
    }
    if (fstat(fd, &lst) < 0 || lst.st_dev != st->st_dev ||
        lst.st_ino != st->st_ino) {
        close(fd);
        error_setg(errp, "Could not open '%s' for locking: the file was "
                   "replaced while opening", filename);
        return -ESTALE;
    }
    s->lock_fd = fd;
    return 0;
}

static int coroutine_fn file_co_open(BlockNode *bs, json_t *opts,
                                     Error **errp)
{
    FileState *s = bs->opaque;
    const char *filename = arg_str(opts, "filename", NULL);
    int locking = arg_enum(opts, "locking", locking_values, LOCKING_AUTO);
    int aio = arg_enum(opts, "aio", aio_values, -1);
    OpenJob oj = { .filename = filename };
    struct stat st;
    int64_t len;
    int fd, ret;

    s->fd = -1;
    s->lock_fd = -1;
    s->reopen_fd = -1;
    co_mutex_init(&s->rmw_lock);

    if (aio == AIO_NATIVE && !bs->cache_direct) {
        error_setg(errp, "aio=native was specified, but it requires "
                   "cache.direct=on, which was not specified.");
        return -EINVAL;
    }
    if (aio == -1) {
        s->aio = io_uring_available() ? IO_BACKEND_IO_URING
                                      : IO_BACKEND_THREADS;
    } else if (aio == AIO_THREADS) {
        s->aio = IO_BACKEND_THREADS;
    } else if (io_uring_available()) {
        s->aio = IO_BACKEND_IO_URING;
    } else {
        error_setg(errp, "Unable to use io_uring: not supported by the "
                   "kernel");
        return -ENOTSUP;
    }

    oj.flags = (bs->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    if (bs->cache_direct) {
        oj.flags |= O_DIRECT;
    }
    /* open() may block (NFS, a device waking up): not on a loop thread. */
    fd = thread_pool_co_run(open_job, &oj);
    if (fd < 0) {
        error_setg_errno(errp, -fd, "Could not open '%s'", filename);
        return fd;
    }
    s->fd = fd;

    if (fstat(fd, &st) < 0) {
        ret = -errno;
        error_setg_errno(errp, -ret, "Could not stat '%s'", filename);
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        ret = -EISDIR;
        error_setg_errno(errp, EISDIR, "Could not open '%s'", filename);
        goto fail;
    }
    s->hdev = bs->drv == &bdrv_host_device;
    s->is_blk = S_ISBLK(st.st_mode);
    if (s->hdev && !S_ISBLK(st.st_mode) && !S_ISCHR(st.st_mode)) {
        ret = -EINVAL;
        error_setg(errp, "'host_device' driver requires '%s' to be either "
                   "a character or block device", filename);
        goto fail;
    }
    if (!s->hdev && !S_ISREG(st.st_mode)) {
        ret = -EINVAL;
        error_setg(errp, "'file' driver requires '%s' to be a regular file",
                   filename);
        goto fail;
    }
    if (s->is_blk) {
        int lbs = 0;
        unsigned int pbs = 0;

        s->lbs = ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs > 0 ? (uint32_t)lbs
                                                             : 512;
        s->pbs = ioctl(fd, BLKPBSZGET, &pbs) == 0 && pbs >= s->lbs
                 ? pbs : s->lbs;
    }

    if (bs->cache_direct && s->is_blk) {
        /* The device says: its logical block, for offsets and buffers. */
        s->req_align = s->lbs;
        s->buf_align = s->lbs;
    } else if (bs->cache_direct) {
        AlignJob aj = { .fd = fd, .is_blk = false };

        thread_pool_co_run(align_job, &aj);
        s->req_align = aj.req_align;
        s->buf_align = aj.buf_align;
    } else {
        s->req_align = 1;
        s->buf_align = 1;
    }

    if (locking != LOCKING_OFF) {
        ret = file_open_lock_fd(s, filename, &st, errp);
        if (ret < 0) {
            goto fail;
        }
        s->use_lock = file_lock_supported(s->lock_fd);
        if (!s->use_lock && locking == LOCKING_ON) {
            ret = -ENOTSUP;
            error_setg(errp, "Failed to lock byte %d: the file system does "
                       "not support OFD locks", FILE_LOCK_PERM_BASE);
            goto fail;
        }
        if (!s->use_lock) {
            log_warn("'%s': the file system does not support OFD locks, "
                     "opening without image locking", filename);
            close(s->lock_fd);
            s->lock_fd = -1;
        }
    }

    len = file_length(fd);
    if (len < 0) {
        ret = (int)len;
        error_setg_errno(errp, -ret, "Could not get the size of '%s'",
                         filename);
        goto fail;
    }
    bs->total_bytes = len;
    s->filename = bj_strdup(filename);
    snprintf(bs->filename, sizeof(bs->filename), "%s", filename);
    s->opened = true;
    return 0;

fail:
    /* close() is only called for nodes that opened. */
    if (s->lock_fd >= 0) {
        close(s->lock_fd);
        s->lock_fd = -1;
    }
    close(s->fd);
    s->fd = -1;
    return ret;
}

static void file_close(BlockNode *bs)
{
    FileState *s = bs->opaque;

    /* Closing the only fd of the lock's open file description drops the
     * locks. */
    if (s->opened) {
        s->opened = false;
        if (s->lock_fd >= 0) {
            close(s->lock_fd);
            s->lock_fd = -1;
        }
        close(s->fd);
        s->fd = -1;
    }
    free(s->filename);
    s->filename = NULL;
}

static void file_refresh_limits(BlockNode *bs)
{
    FileState *s = bs->opaque;

    bs->bl.request_alignment = s->req_align;
    bs->bl.min_mem_alignment = s->buf_align;
    if (s->is_blk) {
        bs->bl.pdiscard_alignment = s->pbs;
        bs->bl.pwrite_zeroes_alignment = s->pbs;
        bs->bl.opt_transfer = s->pbs;
    }
}

/* ---- reads and writes ---- */

static bool is_aligned(uint64_t v, uint32_t align)
{
    return (v & (align - 1)) == 0;
}

static bool qiov_is_aligned(const FileState *s, const IOVector *qiov)
{
    for (int i = 0; i < qiov->niov; i++) {
        if (!is_aligned((uintptr_t)qiov->iov[i].iov_base, s->buf_align) ||
            !is_aligned(qiov->iov[i].iov_len, s->req_align)) {
            return false;
        }
    }
    return true;
}

/*
 * Transfers bytes [0, bytes) of qiov at offset, looping over short
 * transfers.  Reads that meet end of file zero the rest of the buffer: the
 * node's length is the file's, so this only happens at the tail.
 */
static int coroutine_fn file_co_rw(FileState *s, bool is_write,
                                   int64_t offset, size_t bytes,
                                   const IOVector *qiov, int rwf)
{
    IOVector rest;
    size_t done = 0;
    int ret = 0;

    iov_vec_init(&rest, 0);
    while (done < bytes) {
        const struct iovec *iov = qiov->iov;
        int niov = qiov->niov;
        ssize_t n;

        if (done > 0 || bytes < qiov->size) {
            iov_vec_reset(&rest);
            iov_vec_concat(&rest, qiov, done, bytes - done);
            iov = rest.iov;
            niov = rest.niov;
        }
        /* More segments than the kernel takes at once: the remainder is a
         * short transfer and goes round again. */
        if (niov > IOV_MAX) {
            niov = IOV_MAX;
        }
        if (is_write) {
            n = io_co_pwritev(s->aio, s->fd, iov, niov, offset + done, rwf);
        } else {
            n = io_co_preadv(s->aio, s->fd, iov, niov, offset + done);
        }
        if (n == -EINTR || n == -EAGAIN) {
            continue;
        }
        if (n < 0) {
            ret = (int)n;
            break;
        }
        if (n == 0) {
            if (is_write) {
                ret = -ENOSPC;
                break;
            }
            iov_vec_memset(qiov, done, 0, bytes - done);
            done = bytes;
            break;
        }
        done += n;
        /* With O_DIRECT a short read that ends unaligned is the end of an
         * unaligned file: asking again would be refused. */
        if (!is_write && done < bytes &&
            !is_aligned(offset + done, s->req_align)) {
            iov_vec_memset(qiov, done, 0, bytes - done);
            done = bytes;
        }
    }
    iov_vec_destroy(&rest);
    return ret;
}

/* Aligned bounce buffer covering [start, start+len). */
static int coroutine_fn file_co_bounce(FileState *s, bool is_write,
                                       int64_t offset, int64_t bytes,
                                       IOVector *qiov, int rwf)
{
    int64_t start = offset & ~(int64_t)(s->req_align - 1);
    int64_t end = (offset + bytes + s->req_align - 1) &
                  ~(int64_t)(s->req_align - 1);
    size_t len = end - start;
    bool rmw = is_write && (start != offset || end != offset + bytes);
    CLEANUP_FREE uint8_t *buf = blk_aligned_alloc(s->buf_align, len);
    IOVector bv;
    int64_t old_len = 0;
    int ret;

    iov_vec_init_buf(&bv, buf, len);
    if (!is_write) {
        ret = file_co_rw(s, false, start, len, &bv, 0);
        if (ret == 0) {
            iov_from_buf(qiov->iov, qiov->niov, 0, buf + (offset - start),
                         bytes);
        }
        return ret;
    }

    if (!rmw) {
        iov_to_buf(qiov->iov, qiov->niov, 0, buf, bytes);
        return file_co_rw(s, true, offset, bytes, &bv, rwf);
    }

    /* The block layer pads unaligned requests itself; this path is for
     * callers that go around it.  Serialised so that two partial writes to
     * one block do not undo each other. */
    co_mutex_lock(&s->rmw_lock);
    old_len = file_length(s->fd);
    if (old_len < 0) {
        ret = (int)old_len;
        goto out;
    }
    ret = file_co_rw(s, false, start, len, &bv, 0);
    if (ret < 0) {
        goto out;
    }
    iov_to_buf(qiov->iov, qiov->niov, 0, buf + (offset - start), bytes);
    ret = file_co_rw(s, true, start, len, &bv, rwf);
    if (ret < 0) {
        goto out;
    }
    /* The aligned write may have grown the file past what was asked. */
    if (end > old_len && end > offset + bytes) {
        TruncJob tj = { .fd = s->fd,
                        .size = old_len > offset + bytes ? old_len
                                                         : offset + bytes };

        ret = thread_pool_co_run(truncate_job, &tj);
    }
out:
    co_mutex_unlock(&s->rmw_lock);
    return ret;
}

static bool needs_bounce(const FileState *s, int64_t offset, int64_t bytes,
                         const IOVector *qiov)
{
    if (s->req_align <= 1 && s->buf_align <= 1) {
        return false;
    }
    return !is_aligned(offset, s->req_align) ||
           !is_aligned(bytes, s->req_align) || !qiov_is_aligned(s, qiov);
}

static int coroutine_fn file_co_preadv(BlockNode *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       unsigned flags)
{
    FileState *s = bs->opaque;

    if (needs_bounce(s, offset, bytes, qiov)) {
        return file_co_bounce(s, false, offset, bytes, qiov, 0);
    }
    return file_co_rw(s, false, offset, bytes, qiov, 0);
}

static int coroutine_fn file_co_pwritev(BlockNode *bs, int64_t offset,
                                        int64_t bytes, IOVector *qiov,
                                        unsigned flags)
{
    FileState *s = bs->opaque;
    /* cache.no-flush: the user asked us never to make data durable. */
    int rwf = (flags & BLK_REQ_FUA) && !bs->cache_no_flush ? RWF_DSYNC : 0;

    if (needs_bounce(s, offset, bytes, qiov)) {
        return file_co_bounce(s, true, offset, bytes, qiov, rwf);
    }
    return file_co_rw(s, true, offset, bytes, qiov, rwf);
}

/* ---- write-zeroes, discard, flush ---- */

static bool is_unsupported(int ret)
{
    return ret == -ENOTSUP || ret == -EOPNOTSUPP || ret == -ENOSYS;
}

/* Punching a hole never grows the file; zeroes past the end are had by
 * growing it. */
static int coroutine_fn file_co_extend_to(FileState *s, int64_t end)
{
    int64_t len = file_length(s->fd);
    TruncJob tj = { .fd = s->fd, .size = end };

    if (len < 0) {
        return (int)len;
    }
    if (len >= end) {
        return 0;
    }
    return thread_pool_co_run(truncate_job, &tj);
}

static int coroutine_fn file_co_punch(FileState *s, int64_t offset,
                                      int64_t bytes)
{
    int ret;

    if (s->no_punch_hole) {
        return -ENOTSUP;
    }
    ret = io_co_fallocate(s->aio, s->fd,
                          FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          offset, bytes);
    if (is_unsupported(ret)) {
        s->no_punch_hole = true;
        return -ENOTSUP;
    }
    return ret;
}

static int coroutine_fn file_co_write_zero_buffers(FileState *s,
                                                   int64_t offset,
                                                   int64_t bytes)
{
    size_t chunk = bytes < ZERO_CHUNK ? bytes : ZERO_CHUNK;
    uint32_t align = s->buf_align > 4096 ? s->buf_align : 4096;
    CLEANUP_FREE uint8_t *buf = blk_aligned_alloc(align, chunk);
    int ret = 0;

    memset(buf, 0, chunk);
    while (bytes > 0) {
        size_t n = bytes < (int64_t)chunk ? (size_t)bytes : chunk;
        IOVector v;

        iov_vec_init_buf(&v, buf, n);
        if (needs_bounce(s, offset, n, &v)) {
            ret = file_co_bounce(s, true, offset, n, &v, 0);
        } else {
            ret = file_co_rw(s, true, offset, n, &v, 0);
        }
        if (ret < 0) {
            break;
        }
        offset += n;
        bytes -= n;
    }
    return ret;
}

typedef struct BlkRangeJob {
    int fd;
    unsigned long req;       /* BLKDISCARD or BLKZEROOUT */
    uint64_t range[2];       /* offset, length */
} BlkRangeJob;

static int blk_range_job(void *opaque)
{
    BlkRangeJob *j = opaque;

    return ioctl(j->fd, j->req, j->range) < 0 ? -errno : 0;
}

/* BLKDISCARD or BLKZEROOUT on [offset, offset+bytes) of a block device,
 * which must be whole logical blocks (-ENOTSUP otherwise, or when the
 * device has no such operation). */
static int coroutine_fn hdev_co_range(FileState *s, unsigned long req,
                                      int64_t offset, int64_t bytes)
{
    BlkRangeJob j = { .fd = s->fd, .req = req,
                      .range = { (uint64_t)offset, (uint64_t)bytes } };
    int ret;

    if (offset % s->lbs || bytes % s->lbs) {
        return -ENOTSUP;
    }
    ret = thread_pool_co_run(blk_range_job, &j);
    return is_unsupported(ret) || ret == -EINVAL ? -ENOTSUP : ret;
}

static int coroutine_fn hdev_co_pwrite_zeroes(FileState *s, int64_t offset,
                                              int64_t bytes, unsigned flags)
{
    int ret = -ENOTSUP;

    /* fallocate(PUNCH_HOLE) on a block device zeroes and may unmap: the
     * blocks read as zeroes afterwards, which plain discard does not
     * promise. */
    if (s->is_blk && (flags & BLK_REQ_MAY_UNMAP)) {
        ret = file_co_punch(s, offset, bytes);
        if (ret != -ENOTSUP) {
            return ret;
        }
    }
    if (s->is_blk && !s->no_blkzeroout) {
        ret = hdev_co_range(s, BLKZEROOUT, offset, bytes);
        if (ret == -ENOTSUP && offset % s->lbs == 0 && bytes % s->lbs == 0) {
            s->no_blkzeroout = true;
        }
    }
    if (ret != -ENOTSUP || (flags & BLK_REQ_NO_FALLBACK)) {
        return ret;
    }
    return file_co_write_zero_buffers(s, offset, bytes);
}

static int coroutine_fn file_co_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                              int64_t bytes, unsigned flags)
{
    FileState *s = bs->opaque;
    int ret;

    if (s->hdev) {
        return hdev_co_pwrite_zeroes(s, offset, bytes, flags);
    }

    if (flags & BLK_REQ_MAY_UNMAP) {
        ret = file_co_punch(s, offset, bytes);
        if (ret == 0) {
            return file_co_extend_to(s, offset + bytes);
        }
        if (ret != -ENOTSUP) {
            return ret;
        }
    }

    if (!s->no_zero_range) {
        ret = io_co_fallocate(s->aio, s->fd, FALLOC_FL_ZERO_RANGE,
                              offset, bytes);
        if (ret == 0) {
            return 0;
        }
        if (is_unsupported(ret)) {
            s->no_zero_range = true;
        } else if (ret != -EINVAL) {
            return ret;
        }
    }

    /* Without zero-range: a hole then an allocation gives allocated
     * zeroes, which is what a caller that did not allow unmapping wants. */
    if (!(flags & BLK_REQ_MAY_UNMAP) && !s->no_fallocate) {
        ret = file_co_punch(s, offset, bytes);
        if (ret == 0) {
            ret = io_co_fallocate(s->aio, s->fd, 0, offset, bytes);
            if (ret == 0) {
                return 0;
            }
            if (is_unsupported(ret)) {
                s->no_fallocate = true;
            }
            /* The hole reads as zeroes already: only allocation failed. */
            return file_co_extend_to(s, offset + bytes);
        }
        if (ret != -ENOTSUP) {
            return ret;
        }
    }

    if (flags & BLK_REQ_NO_FALLBACK) {
        return -ENOTSUP;
    }
    return file_co_write_zero_buffers(s, offset, bytes);
}

static int coroutine_fn file_co_pdiscard(BlockNode *bs, int64_t offset,
                                         int64_t bytes)
{
    FileState *s = bs->opaque;

    /* Discard is advisory: -ENOTSUP tells the layer nothing happened. */
    if (s->hdev) {
        int ret;

        if (!s->is_blk || s->no_blkdiscard) {
            return -ENOTSUP;
        }
        ret = hdev_co_range(s, BLKDISCARD, offset, bytes);
        if (ret == -ENOTSUP && offset % s->lbs == 0 && bytes % s->lbs == 0) {
            s->no_blkdiscard = true;
        }
        return ret;
    }
    return file_co_punch(s, offset, bytes);
}

static int coroutine_fn file_co_flush(BlockNode *bs)
{
    FileState *s = bs->opaque;

    if (bs->cache_no_flush) {
        return 0;
    }
    return io_co_fdatasync(s->aio, s->fd);
}

/* ---- block status ---- */

/*
 * lseek(SEEK_DATA/SEEK_HOLE) is cheap on most local filesystems but has been
 * seen to take seconds on large fragmented files.  Ask inline first; once an
 * answer is slow, ask from the pool; once one exceeds the cap, stop asking
 * and report data (always correct, only less precise).
 */
static int coroutine_fn file_co_seek(FileState *s, off_t offset, int whence,
                                     off_t *result)
{
    SeekJob j = { .fd = s->fd, .offset = offset, .whence = whence };
    int64_t t0 = clock_ns();
    int64_t dt;
    int ret;

    if (s->seek_slow) {
        ret = thread_pool_co_run(seek_job, &j);
    } else {
        ret = seek_job(&j);
    }
    dt = clock_ns() - t0;
    if (dt > SEEK_SLOW_NS && !s->seek_slow) {
        log_info("'%s': SEEK_DATA took %" PRId64 " ms, asking from the "
                 "thread pool from now on", s->filename, dt / 1000000);
        s->seek_slow = true;
    }
    if (dt > SEEK_CAP_NS) {
        log_warn("'%s': SEEK_DATA took %" PRId64 " ms, reporting all "
                 "data from now on", s->filename, dt / 1000000);
        s->seek_broken = true;
    }
    *result = j.result;
    return ret;
}

static int coroutine_fn file_co_block_status(BlockNode *bs, int64_t offset,
                                             int64_t bytes, int64_t *pnum,
                                             int64_t *map, BlockNode **file)
{
    FileState *s = bs->opaque;
    const int valid = BLK_STATUS_OFFSET_VALID | BLK_STATUS_ALLOCATED;
    off_t data, hole;
    int ret;

    *map = offset;
    *file = bs;
    *pnum = bytes;

    if (s->hdev || s->seek_broken) {
        return BLK_STATUS_DATA | valid;
    }

    ret = file_co_seek(s, offset, SEEK_DATA, &data);
    if (ret == -ENXIO) {
        /* No data at or after offset: a hole up to the end of file. */
        return BLK_STATUS_ZERO | valid;
    }
    if (ret < 0 || data < offset) {
        /* No SEEK_DATA here (EINVAL) or an odd answer: data is safe. */
        return BLK_STATUS_DATA | valid;
    }
    if (data > offset) {
        if (data - offset < bytes) {
            *pnum = data - offset;
        }
        return BLK_STATUS_ZERO | valid;
    }

    ret = file_co_seek(s, offset, SEEK_HOLE, &hole);
    if (ret == 0 && hole > offset && hole - offset < bytes) {
        *pnum = hole - offset;
    }
    return BLK_STATUS_DATA | valid;
}

static void coroutine_fn file_co_start_writeback(BlockNode *bs)
{
    FileState *s = bs->opaque;

    /* cache.direct: nothing is in the page cache. */
    if (!bs->cache_direct) {
        thread_pool_co_run(writeback_job, s);
    }
}

/* ---- size ---- */

static int coroutine_fn file_co_truncate(BlockNode *bs, int64_t size,
                                         Error **errp)
{
    FileState *s = bs->opaque;
    struct stat st;
    TruncJob tj = { .fd = s->fd, .size = size };
    int ret;

    if (fstat(s->fd, &st) < 0) {
        ret = -errno;
        error_setg_errno(errp, -ret, "Failed to fstat() the file");
        return ret;
    }
    if (!S_ISREG(st.st_mode)) {
        int64_t len = file_length(s->fd);

        if (len >= 0 && size > len) {
            error_setg(errp, "Cannot grow device files");
            return -EINVAL;
        }
        return 0;
    }
    ret = thread_pool_co_run(truncate_job, &tj);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to resize file");
        return ret;
    }
    bs->total_bytes = size;
    return 0;
}

static int64_t coroutine_fn file_co_getlength(BlockNode *bs)
{
    FileState *s = bs->opaque;

    return file_length(s->fd);
}

/* ---- reopen: another access mode ---- */

/*
 * A new descriptor on the same open file, by /proc/self/fd so that a file
 * renamed or replaced since the open is not the one we get (the name is
 * the fallback without /proc, checked to be the same file).  The lock
 * descriptor stays: the locks live there and follow the permissions.
 */
static int coroutine_fn file_co_reopen_prepare(BlockNode *bs, bool read_only,
                                               Error **errp)
{
    FileState *s = bs->opaque;
    char proc_path[64];
    OpenJob oj = { .filename = proc_path };
    struct stat st, nst;
    int fd;

    oj.flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    if (bs->cache_direct) {
        oj.flags |= O_DIRECT;
    }
    if (fstat(s->fd, &st) < 0) {
        int err = errno;

        error_setg_errno(errp, err, "Could not stat '%s'", s->filename);
        return -err;
    }
    snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", s->fd);
    fd = thread_pool_co_run(open_job, &oj);
    if (fd == -ENOENT) {
        oj.filename = s->filename;
        fd = thread_pool_co_run(open_job, &oj);
    }
    if (fd < 0) {
        error_setg_errno(errp, -fd, "Could not reopen file");
        return fd;
    }
    if (fstat(fd, &nst) < 0 || nst.st_dev != st.st_dev ||
        nst.st_ino != st.st_ino) {
        close(fd);
        error_setg(errp, "Could not reopen '%s': the file was replaced",
                   s->filename);
        return -ESTALE;
    }
    s->reopen_fd = fd;
    return 0;
}

static void file_reopen_commit(BlockNode *bs)
{
    FileState *s = bs->opaque;

    /* The node is drained: nothing is in flight on the old descriptor. */
    close(s->fd);
    s->fd = s->reopen_fd;
    s->reopen_fd = -1;
}

static void file_reopen_abort(BlockNode *bs)
{
    FileState *s = bs->opaque;

    close(s->reopen_fd);
    s->reopen_fd = -1;
}

/* ---- permissions: the image locks ---- */

/*
 * Only looks: the graph may still roll the change back after this node said
 * yes, and it tells drivers nothing then, so the locks change in set_perm.
 * (QEMU takes the new bytes before looking, which closes the window in
 * which two openers both look before either locks; ours is that window
 * between check and set, a few microseconds on the main loop.)
 */
static bool file_check_perm(BlockNode *bs, uint64_t perm, uint64_t shared,
                            Error **errp)
{
    FileState *s = bs->opaque;

    if (!s->use_lock) {
        return true;
    }
    return file_lock_check(s->lock_fd, perm, shared, s->filename, errp);
}

static void file_set_perm(BlockNode *bs, uint64_t perm, uint64_t shared)
{
    FileState *s = bs->opaque;
    Error *local_err = NULL;

    if (!s->use_lock) {
        return;
    }
    if (!file_lock_apply(s->lock_fd, &s->lock, perm, shared, &local_err)) {
        error_report_err(local_err, "Updating image locks");
    }
}

static void file_query_image(BlockNode *bs, json_t *image)
{
    FileState *s = bs->opaque;
    struct stat st;

    if (fstat(s->fd, &st) == 0) {
        json_object_set_new(image, "actual-size",
                            json_integer((json_int_t)st.st_blocks * 512));
    }
}

const BlockDriver bdrv_file = {
    .name = "file",
    .state_size = sizeof(FileState),
    .options = file_options,

    .co_open = file_co_open,
    .close = file_close,

    .co_preadv = file_co_preadv,
    .co_pwritev = file_co_pwritev,
    .co_pwrite_zeroes = file_co_pwrite_zeroes,
    .co_pdiscard = file_co_pdiscard,
    .co_flush = file_co_flush,
    .co_start_writeback = file_co_start_writeback,
    .co_block_status = file_co_block_status,
    .co_truncate = file_co_truncate,
    .co_getlength = file_co_getlength,

    .check_perm = file_check_perm,
    .set_perm = file_set_perm,

    .co_reopen_prepare = file_co_reopen_prepare,
    .reopen_commit = file_reopen_commit,
    .reopen_abort = file_reopen_abort,

    .refresh_limits = file_refresh_limits,
    .query_image = file_query_image,
    .create_check = file_create_check,
    .co_create = file_co_create,
};

/* The same code for devices; no blockdev-create (qsd's host_device only
 * checks a size there). */
const BlockDriver bdrv_host_device = {
    .name = "host_device",
    .state_size = sizeof(FileState),
    .options = file_options,

    .co_open = file_co_open,
    .close = file_close,

    .co_preadv = file_co_preadv,
    .co_pwritev = file_co_pwritev,
    .co_pwrite_zeroes = file_co_pwrite_zeroes,
    .co_pdiscard = file_co_pdiscard,
    .co_flush = file_co_flush,
    .co_start_writeback = file_co_start_writeback,
    .co_block_status = file_co_block_status,
    .co_truncate = file_co_truncate,
    .co_getlength = file_co_getlength,

    .check_perm = file_check_perm,
    .set_perm = file_set_perm,

    .co_reopen_prepare = file_co_reopen_prepare,
    .reopen_commit = file_reopen_commit,
    .reopen_abort = file_reopen_abort,

    .refresh_limits = file_refresh_limits,
    .query_image = file_query_image,
};
