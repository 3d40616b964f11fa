/*
 * What a qcow2 header may name as its backing file.
 *
 * The header is data: whoever wrote the image chose the name.  Opened as
 * qemu does, a header naming /etc/shadow (no format: probed as raw) or
 * /dev/mem exposes that file to every reader of the image, through NBD
 * included, unless the user knew to pass "backing": null.  The rule
 * (docs/hardening.md, "Backing files named by an image header"):
 *
 *   - the file must be a regular file or a block device (after symlinks);
 *     a character device, FIFO or socket is refused;
 *   - with no backing format in the header, the file must be a qcow2
 *     image: probing a file as raw is refused.  qemu-img has required a
 *     backing format (-F) since 6.1; images made with -F raw, and any
 *     backing the user names in "backing", open as before.
 *
 * A file that cannot be opened is left to the file driver, so a missing
 * backing file keeps qemu's message.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aio/io.h"
#include "block/drivers/qcow2/qcow2.h"

typedef struct ProbeJob {
    const char *path;
    mode_t mode;
    int magic_len;
    uint8_t magic[4];
} ProbeJob;

/* Thread pool: open (never blocking on a FIFO), type, first bytes. */
static int probe_fn(void *opaque)
{
    ProbeJob *j = opaque;
    struct stat st;
    int fd = open(j->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    int ret = 0;

    if (fd < 0) {
        return -errno;
    }
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        goto out;
    }
    j->mode = st.st_mode;
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) {
        ssize_t n = pread(fd, j->magic, sizeof(j->magic), 0);
        if (n < 0) {
            ret = -errno;
            goto out;
        }
        j->magic_len = (int)n;
    }
out:
    close(fd);
    return ret;
}

static const char *file_type(mode_t mode)
{
    if (S_ISCHR(mode)) {
        return "a character device";
    }
    if (S_ISFIFO(mode)) {
        return "a FIFO";
    }
    if (S_ISSOCK(mode)) {
        return "a socket";
    }
    return "not a regular file";
}

bool coroutine_fn qcow2_check_header_backing(const char *image,
                                             const char *path,
                                             const char **fmt, Error **errp)
{
    ProbeJob pj = { .path = path };

    if (thread_pool_co_run(probe_fn, &pj) < 0) {
        /* Missing, unreadable: the file driver says why, in qemu's words. */
        if (!*fmt) {
            *fmt = "raw";
        }
        return true;
    }
    if (S_ISDIR(pj.mode)) {
        return true;   /* the file driver refuses it with qemu's message */
    }
    if (!S_ISREG(pj.mode) && !S_ISBLK(pj.mode)) {
        error_setg(errp, "Could not open backing file: '%s', named by the "
                   "header of '%s', is %s: a backing file named by an image "
                   "must be a regular file or a block device (name it in "
                   "\"backing\" to use it anyway)", path, image,
                   file_type(pj.mode));
        return false;
    }
    if (*fmt) {
        return true;
    }
    if (pj.magic_len == 4 && be32_get(pj.magic) == QCOW2_MAGIC) {
        *fmt = "qcow2";
        return true;
    }
    error_setg(errp, "Could not open backing file: '%s', named by the header "
               "of '%s' without a backing format, is not a qcow2 image and "
               "would be probed as raw: refused (name it in \"backing\" with "
               "driver raw, or record its format with qemu-img rebase -u -F "
               "raw)", path, image);
    return false;
}
