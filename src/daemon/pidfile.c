/*
 * --pidfile: the file holds our pid and a write lock for as long as we run,
 * so a second daemon given the same path refuses to start instead of
 * overwriting a live daemon's pid.  The lock is a classic POSIX record lock:
 * it belongs to this process and goes away with it, even on a crash.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "util/alloc.h"

struct Pidfile {
    char *path;        /* absolute, so a later chdir("/") does not matter */
    int fd;
    dev_t dev;
    ino_t ino;
};

static char *absolute_path(const char *path)
{
    char *cwd, *abs;

    if (path[0] == '/') {
        return bj_strdup(path);
    }
    cwd = getcwd(NULL, 0);
    if (!cwd) {
        return bj_strdup(path);
    }
    abs = bj_asprintf("%s/%s", cwd, path);
    free(cwd);
    return abs;
}

/* open() failed with err: say so, naming a symlink or special file as
 * the reason rather than ELOOP's or ENXIO's words. */
static void refuse_open(const char *path, int err, Error **errp)
{
    struct stat st;

    if ((err == ELOOP || err == ENXIO) && lstat(path, &st) == 0) {
        if (S_ISLNK(st.st_mode)) {
            error_setg(errp, "Could not create '%s': it is a symbolic link "
                       "(a pid file is not written through one)", path);
            return;
        }
        if (!S_ISREG(st.st_mode)) {
            error_setg(errp, "Could not create '%s': not a regular file",
                       path);
            return;
        }
    }
    error_setg_errno(errp, err, "Could not create '%s'", path);
}

Pidfile *pidfile_write(const char *path, Error **errp)
{
    struct flock lk = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    struct stat st_fd, st_path;
    char buf[32];
    Pidfile *pf;
    int fd, len;

    /*
     * Another process may unlink the file between our open and our lock
     * (a daemon exiting); then we locked an orphan and must start over on
     * the new file.
     */
    for (;;) {
        /* Not through a symlink (its target would be truncated, or a
         * dangling one's created), not into a FIFO (O_NONBLOCK: no hang)
         * or a device: docs/hardening.md, "The pid file". */
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
                  O_NONBLOCK | O_NOCTTY, 0600);
        if (fd < 0) {
            refuse_open(path, errno, errp);
            return NULL;
        }
        if (fstat(fd, &st_fd) < 0) {
            error_setg_errno(errp, errno, "Cannot stat pid file");
            close(fd);
            return NULL;
        }
        if (!S_ISREG(st_fd.st_mode)) {
            error_setg(errp, "Could not create '%s': not a regular file",
                       path);
            close(fd);
            return NULL;
        }
        if (fcntl(fd, F_SETLK, &lk) < 0) {
            error_setg_errno(errp, errno, "Cannot lock pid file");
            close(fd);
            return NULL;
        }
        if (fstat(fd, &st_fd) < 0) {
            error_setg_errno(errp, errno, "Cannot stat pid file");
            close(fd);
            return NULL;
        }
        if (stat(path, &st_path) == 0 && st_path.st_dev == st_fd.st_dev &&
            st_path.st_ino == st_fd.st_ino) {
            break;
        }
        close(fd);
    }

    len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0) {
        error_setg_errno(errp, errno, "Failed to truncate pid file");
        goto fail;
    }
    if (write(fd, buf, len) != len) {
        error_setg_errno(errp, errno ? errno : EIO,
                         "Failed to write pid file");
        goto fail;
    }

    pf = bj_calloc(1, sizeof(*pf));
    pf->path = absolute_path(path);
    pf->fd = fd;
    pf->dev = st_fd.st_dev;
    pf->ino = st_fd.st_ino;
    return pf;

fail:
    unlink(path);
    close(fd);
    return NULL;
}

void pidfile_remove(Pidfile *pf)
{
    struct stat st;

    if (!pf) {
        return;
    }
    /* Only remove what we wrote: someone may have replaced the file. */
    if (stat(pf->path, &st) == 0 && st.st_dev == pf->dev &&
        st.st_ino == pf->ino) {
        if (unlink(pf->path) < 0) {
            fprintf(stderr, DAEMON_NAME ": cannot remove PID file %s: %s\n",
                    pf->path, strerror(errno));
        }
    }
    close(pf->fd);
    free(pf->path);
    free(pf);
}
