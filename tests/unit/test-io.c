/*
 * The async file I/O interface (aio/io.h) against real files, once per
 * backend, and the thread pool on its own.
 *
 * Most tests drive I/O from the main thread through do_*(): each call runs
 * one io_co_* in a fresh coroutine and spins the main loop until it is done,
 * so that cmocka assertions stay on the main stack (never inside a
 * coroutine).  The concurrency and iothread tests run their own coroutines
 * and record what they saw for the main thread to check.
 *
 * Files live in a mkdtemp directory under /var/tmp (a real disk, where
 * O_DIRECT works), removed at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "testutil.h"

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "aio/io.h"
#include "aio/iothread.h"
#include "test-wait.h"

static char test_dir[] = "/var/tmp/bj-test-io.XXXXXX";
static unsigned file_counter;

/* ---- running one operation in a coroutine ---- */

typedef enum TestOp { OP_READ, OP_WRITE, OP_SYNC, OP_FALLOC } TestOp;

typedef struct OpCall {
    TestOp op;
    IoBackend be;
    int fd;
    const struct iovec *iov;
    int niov;
    off_t offset;
    off_t len;
    int flags;
    ssize_t ret;
    bool done;
} OpCall;

static void coroutine_fn op_call_entry(void *opaque)
{
    OpCall *c = opaque;

    switch (c->op) {
    case OP_READ:
        c->ret = io_co_preadv(c->be, c->fd, c->iov, c->niov, c->offset);
        break;
    case OP_WRITE:
        c->ret = io_co_pwritev(c->be, c->fd, c->iov, c->niov, c->offset,
                               c->flags);
        break;
    case OP_SYNC:
        c->ret = io_co_fdatasync(c->be, c->fd);
        break;
    case OP_FALLOC:
        c->ret = io_co_fallocate(c->be, c->fd, c->flags, c->offset, c->len);
        break;
    }
    c->done = true;
}

static ssize_t run_op(OpCall *c)
{
    c->done = false;
    coroutine_enter(coroutine_create(op_call_entry, c));
    TEST_WAIT_WHILE(aio_main_context(), !c->done);
    return c->ret;
}

static ssize_t do_preadv(IoBackend be, int fd, const struct iovec *iov,
                         int niov, off_t offset)
{
    OpCall c = { .op = OP_READ, .be = be, .fd = fd, .iov = iov,
                 .niov = niov, .offset = offset };
    return run_op(&c);
}

static ssize_t do_pread(IoBackend be, int fd, void *buf, size_t len,
                        off_t offset)
{
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    return do_preadv(be, fd, &iov, 1, offset);
}

static ssize_t do_pwritev(IoBackend be, int fd, const struct iovec *iov,
                          int niov, off_t offset, int flags)
{
    OpCall c = { .op = OP_WRITE, .be = be, .fd = fd, .iov = iov,
                 .niov = niov, .offset = offset, .flags = flags };
    return run_op(&c);
}

static ssize_t do_pwrite(IoBackend be, int fd, const void *buf, size_t len,
                         off_t offset, int flags)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return do_pwritev(be, fd, &iov, 1, offset, flags);
}

static ssize_t do_fdatasync(IoBackend be, int fd)
{
    OpCall c = { .op = OP_SYNC, .be = be, .fd = fd };
    return run_op(&c);
}

static ssize_t do_fallocate(IoBackend be, int fd, int mode, off_t offset,
                            off_t len)
{
    OpCall c = { .op = OP_FALLOC, .be = be, .fd = fd, .flags = mode,
                 .offset = offset, .len = len };
    return run_op(&c);
}

/* ---- helpers ---- */

/* A fresh file in the test directory; unlinked at once (the fd keeps it). */
static int open_test_file(int extra_flags)
{
    char path[sizeof(test_dir) + 32];
    int fd;

    snprintf(path, sizeof(path), "%s/f%u", test_dir, file_counter++);
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | extra_flags,
              0600);
    if (fd >= 0) {
        assert_int_equal(unlink(path), 0);
    }
    return fd;
}

static void fill_pattern(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
    }
}

static bool all_bytes(const uint8_t *buf, size_t len, uint8_t v)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != v) {
            return false;
        }
    }
    return true;
}

static void require_backend(IoBackend be)
{
    if (be == IO_BACKEND_IO_URING && !io_uring_available()) {
        print_message("SKIP: io_uring is not available on this kernel\n");
        skip();
    }
}

/* ---- per-backend tests ---- */

static void check_rw_patterns(IoBackend be)
{
    static const off_t offsets[] = { 0, 4096, 65536 + 512, 1048576 - 3,
                                     (off_t)5 << 30 };
    static const size_t lens[] = { 4096, 512, 12345, 70000, 1 };
    int fd = open_test_file(0);

    assert_true(fd >= 0);
    for (size_t i = 0; i < 5; i++) {
        uint8_t *w = malloc(lens[i]), *r = malloc(lens[i]);

        assert_non_null(w);
        assert_non_null(r);
        fill_pattern(w, lens[i], i + 1);
        assert_int_equal(do_pwrite(be, fd, w, lens[i], offsets[i], 0),
                         lens[i]);
        memset(r, 0xee, lens[i]);
        assert_int_equal(do_pread(be, fd, r, lens[i], offsets[i]), lens[i]);
        assert_memory_equal(r, w, lens[i]);
        /* What the kernel holds agrees with what we read. */
        memset(r, 0xee, lens[i]);
        assert_int_equal(pread(fd, r, lens[i], offsets[i]), lens[i]);
        assert_memory_equal(r, w, lens[i]);
        free(w);
        free(r);
    }
    /* Earlier patterns survive later writes elsewhere. */
    {
        uint8_t w[4096], r[4096];

        fill_pattern(w, sizeof(w), 1);
        assert_int_equal(do_pread(be, fd, r, sizeof(r), 0), sizeof(r));
        assert_memory_equal(r, w, sizeof(w));
    }
    close(fd);
}

static void check_vectored(IoBackend be)
{
    uint8_t a[100], b[4000], c[1], d[5000];
    uint8_t flat[sizeof(a) + sizeof(b) + sizeof(c) + sizeof(d)];
    uint8_t back[sizeof(flat)];
    struct iovec wiov[] = {
        { a, sizeof(a) }, { b, sizeof(b) }, { c, sizeof(c) }, { d, sizeof(d) },
    };
    struct iovec riov[3];
    int fd = open_test_file(0);

    assert_true(fd >= 0);
    fill_pattern(flat, sizeof(flat), 42);
    memcpy(a, flat, sizeof(a));
    memcpy(b, flat + 100, sizeof(b));
    memcpy(c, flat + 4100, sizeof(c));
    memcpy(d, flat + 4101, sizeof(d));
    assert_int_equal(do_pwritev(be, fd, wiov, 4, 777, 0), sizeof(flat));

    /* Read back split differently from how it was written. */
    memset(back, 0, sizeof(back));
    riov[0] = (struct iovec){ back, 3 };
    riov[1] = (struct iovec){ back + 3, 8000 };
    riov[2] = (struct iovec){ back + 8003, sizeof(back) - 8003 };
    assert_int_equal(do_preadv(be, fd, riov, 3, 777), sizeof(back));
    assert_memory_equal(back, flat, sizeof(flat));

    memset(back, 0, sizeof(back));
    assert_int_equal(pread(fd, back, sizeof(back), 777), sizeof(back));
    assert_memory_equal(back, flat, sizeof(flat));
    close(fd);
}

static void check_eof(IoBackend be)
{
    uint8_t w[10000], r[8192], r2[2][600];
    struct iovec riov[2] = { { r2[0], 600 }, { r2[1], 600 } };
    int fd = open_test_file(0);

    assert_true(fd >= 0);
    fill_pattern(w, sizeof(w), 7);
    assert_int_equal(do_pwrite(be, fd, w, sizeof(w), 0, 0), sizeof(w));

    /* Crossing EOF: short, with exactly the bytes that exist. */
    memset(r, 0xee, sizeof(r));
    assert_int_equal(do_pread(be, fd, r, sizeof(r), 8192), 10000 - 8192);
    assert_memory_equal(r, w + 8192, 10000 - 8192);
    /* The same through a vector that ends in the middle of its 2nd part. */
    assert_int_equal(do_preadv(be, fd, riov, 2, 9000), 1000);
    assert_memory_equal(r2[0], w + 9000, 600);
    assert_memory_equal(r2[1], w + 9600, 400);
    /* At and past EOF: 0. */
    assert_int_equal(do_pread(be, fd, r, sizeof(r), 10000), 0);
    assert_int_equal(do_pread(be, fd, r, sizeof(r), 1 << 20), 0);
    /* An empty file reads as 0 bytes too. */
    close(fd);
    fd = open_test_file(0);
    assert_true(fd >= 0);
    assert_int_equal(do_pread(be, fd, r, sizeof(r), 0), 0);
    close(fd);
}

static void check_direct(IoBackend be)
{
    const size_t align = 4096, len = 65536;
    uint8_t *w = NULL, *r = NULL;
    struct statfs sfs;
    char path[64];
    int fd = open_test_file(O_DIRECT);
    int pfd;

    if (fd < 0 && errno == EINVAL) {
        print_message("SKIP: the filesystem of %s refuses O_DIRECT\n",
                      test_dir);
        skip();
    }
    assert_true(fd >= 0);
    assert_int_equal(posix_memalign((void **)&w, align, len), 0);
    assert_int_equal(posix_memalign((void **)&r, align, len + align), 0);
    fill_pattern(w, len, 3);

    assert_int_equal(do_pwrite(be, fd, w, len, 0, 0), len);
    assert_int_equal(do_pwrite(be, fd, w, len, 1048576 + align, 0), len);
    memset(r, 0, len);
    assert_int_equal(do_pread(be, fd, r, len, 1048576 + align), len);
    assert_memory_equal(r, w, len);
    memset(r, 0, len);
    assert_int_equal(do_pread(be, fd, r, len, 0), len);
    assert_memory_equal(r, w, len);

    /* Vectored, each element aligned. */
    {
        struct iovec iov[2] = { { r, align }, { r + 2 * align, align } };

        memset(r, 0, len);
        assert_int_equal(do_preadv(be, fd, iov, 2, 0), 2 * align);
        assert_memory_equal(r, w, align);
        assert_memory_equal(r + 2 * align, w + align, align);
    }

    /* Crossing EOF with O_DIRECT is short as well. */
    memset(r, 0, len + align);
    assert_int_equal(do_pread(be, fd, r, len + align, 1048576 + 2 * align),
                     len - align);
    assert_memory_equal(r, w + align, len - align);

    /* The data is in the file, seen through a buffered descriptor. */
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    pfd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(pfd >= 0);
    memset(r, 0, len);
    assert_int_equal(pread(pfd, r, len, 1048576 + align), len);
    assert_memory_equal(r, w, len);
    close(pfd);

    /* On the filesystems we know, a misaligned buffer is refused, on both
     * backends alike. */
    assert_int_equal(fstatfs(fd, &sfs), 0);
    if (sfs.f_type == EXT4_SUPER_MAGIC || sfs.f_type == XFS_SUPER_MAGIC) {
        assert_int_equal(do_pread(be, fd, r + 1, align, 0), -EINVAL);
        assert_int_equal(do_pread(be, fd, r, align, 1), -EINVAL);
    }
    free(w);
    free(r);
    close(fd);
}

static void check_fua(IoBackend be)
{
    uint8_t w[8192], r[8192];
    int fd = open_test_file(0);

    assert_true(fd >= 0);
    fill_pattern(w, sizeof(w), 9);
    assert_int_equal(do_pwrite(be, fd, w, sizeof(w), 4096, RWF_DSYNC),
                     sizeof(w));
    memset(r, 0, sizeof(r));
    assert_int_equal(do_pread(be, fd, r, sizeof(r), 4096), sizeof(r));
    assert_memory_equal(r, w, sizeof(w));
    assert_int_equal(pread(fd, r, sizeof(r), 4096), sizeof(r));
    assert_memory_equal(r, w, sizeof(w));
    close(fd);
}

static void check_fdatasync(IoBackend be)
{
    uint8_t w[4096];
    int fd = open_test_file(0);

    assert_true(fd >= 0);
    assert_int_equal(do_fdatasync(be, fd), 0);
    fill_pattern(w, sizeof(w), 11);
    assert_int_equal(do_pwrite(be, fd, w, sizeof(w), 0, 0), sizeof(w));
    assert_int_equal(do_fdatasync(be, fd), 0);
    close(fd);
}

static void check_fallocate(IoBackend be)
{
    const size_t size = 1 << 20;
    uint8_t *w = malloc(size), *r = malloc(size);
    struct stat st;
    ssize_t ret;
    int fd = open_test_file(0);

    assert_true(fd >= 0);
    assert_non_null(w);
    assert_non_null(r);
    memset(w, 0xaa, size);
    assert_int_equal(do_pwrite(be, fd, w, size, 0, 0), size);

    /* Punch a hole: reads back as zeros, the size stays. */
    ret = do_fallocate(be, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                       65536, 131072);
    if (ret == -EOPNOTSUPP) {
        print_message("SKIP: the filesystem of %s cannot punch holes\n",
                      test_dir);
        free(w);
        free(r);
        close(fd);
        skip();
    }
    assert_int_equal(ret, 0);
    memset(w + 65536, 0, 131072);

    /* Zero a range that is not block aligned. */
    ret = do_fallocate(be, fd, FALLOC_FL_ZERO_RANGE, 524288 + 100, 65536);
    if (ret != -EOPNOTSUPP) {
        assert_int_equal(ret, 0);
        memset(w + 524288 + 100, 0, 65536);
    } else {
        print_message("note: the filesystem of %s has no zero-range\n",
                      test_dir);
    }

    memset(r, 0xee, size);
    assert_int_equal(do_pread(be, fd, r, size, 0), size);
    assert_memory_equal(r, w, size);
    assert_true(all_bytes(r + 65536, 131072, 0));
    assert_int_equal(r[65535], 0xaa);
    assert_int_equal(r[65536 + 131072], 0xaa);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, size);

    /* Mode 0 allocates and extends; the new part reads as zeros. */
    assert_int_equal(do_fallocate(be, fd, 0, size, size), 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 2 * size);
    memset(r, 0xee, size);
    assert_int_equal(do_pread(be, fd, r, size, size), size);
    assert_true(all_bytes(r, size, 0));

    free(w);
    free(r);
    close(fd);
}

/*
 * Many coroutines with I/O in flight at once: more than the io_uring SQ
 * (submission while the queue is full) and more than its CQ (waiting for a
 * slot).  Every coroutine writes its own block, syncs now and then, and reads
 * it back.
 */
#define CONC_N 512
#define CONC_BLOCK 4096

typedef struct ConcState {
    IoBackend be;
    int fd;
    unsigned started;
    unsigned finished;
    unsigned started_at_first_resume;
    bool resumed;
    struct {
        ssize_t wret, rret, sret;
        bool match;
    } res[CONC_N];
} ConcState;

typedef struct ConcArg {
    ConcState *st;
    unsigned idx;
} ConcArg;

static void coroutine_fn conc_entry(void *opaque)
{
    ConcArg *a = opaque;
    ConcState *st = a->st;
    unsigned i = a->idx;
    uint8_t w[CONC_BLOCK], r[CONC_BLOCK];
    struct iovec wiov = { w, sizeof(w) }, riov = { r, sizeof(r) };

    st->started++;
    fill_pattern(w, sizeof(w), i);
    st->res[i].wret = io_co_pwritev(st->be, st->fd, &wiov, 1,
                                    (off_t)i * CONC_BLOCK, 0);
    if (!st->resumed) {
        /* Completions come only through the loop, which the test does not
         * run until every coroutine has been started. */
        st->resumed = true;
        st->started_at_first_resume = st->started;
    }
    st->res[i].sret = i % 64 == 0 ? io_co_fdatasync(st->be, st->fd) : 0;
    memset(r, 0, sizeof(r));
    st->res[i].rret = io_co_preadv(st->be, st->fd, &riov, 1,
                                   (off_t)i * CONC_BLOCK);
    st->res[i].match = memcmp(r, w, sizeof(w)) == 0;
    st->finished++;
}

static void check_concurrent(IoBackend be)
{
    ConcState *st = calloc(1, sizeof(*st));
    ConcArg *args = calloc(CONC_N, sizeof(*args));
    uint8_t w[CONC_BLOCK], r[CONC_BLOCK];

    assert_non_null(st);
    assert_non_null(args);
    st->be = be;
    st->fd = open_test_file(0);
    assert_true(st->fd >= 0);
    for (unsigned i = 0; i < CONC_N; i++) {
        args[i] = (ConcArg){ st, i };
        coroutine_enter(coroutine_create(conc_entry, &args[i]));
    }
    assert_int_equal(st->started, CONC_N);
    TEST_WAIT_WHILE(aio_main_context(), st->finished < CONC_N);

    assert_int_equal(st->started_at_first_resume, CONC_N);
    for (unsigned i = 0; i < CONC_N; i++) {
        assert_int_equal(st->res[i].wret, CONC_BLOCK);
        assert_int_equal(st->res[i].sret, 0);
        assert_int_equal(st->res[i].rret, CONC_BLOCK);
        assert_true(st->res[i].match);
    }
    for (unsigned i = 0; i < CONC_N; i += 97) {
        fill_pattern(w, sizeof(w), i);
        assert_int_equal(pread(st->fd, r, sizeof(r), (off_t)i * CONC_BLOCK),
                         sizeof(r));
        assert_memory_equal(r, w, sizeof(w));
    }
    close(st->fd);
    free(args);
    free(st);
}

static void check_errors(IoBackend be)
{
    uint8_t buf[512];
    int fd = open_test_file(0);
    int rofd, wofd;
    char path[64];

    assert_true(fd >= 0);
    memset(buf, 1, sizeof(buf));
    assert_int_equal(do_pread(be, -1, buf, sizeof(buf), 0), -EBADF);
    assert_int_equal(do_pwrite(be, -1, buf, sizeof(buf), 0, 0), -EBADF);
    assert_int_equal(do_fdatasync(be, -1), -EBADF);
    assert_int_equal(do_fallocate(be, -1, 0, 0, 4096), -EBADF);

    /* Wrong access mode on a valid descriptor. */
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    rofd = open(path, O_RDONLY | O_CLOEXEC);
    wofd = open(path, O_WRONLY | O_CLOEXEC);
    assert_true(rofd >= 0 && wofd >= 0);
    assert_int_equal(do_pwrite(be, rofd, buf, sizeof(buf), 0, 0), -EBADF);
    assert_int_equal(do_pread(be, wofd, buf, sizeof(buf), 0), -EBADF);
    /* A descriptor closed since: EBADF, not a crash. */
    close(rofd);
    assert_int_equal(do_pread(be, rofd, buf, sizeof(buf), 0), -EBADF);
    /* Bad arguments come back as errors too. */
    assert_int_equal(do_fallocate(be, fd, 0, 0, 0), -EINVAL);
    close(wofd);
    close(fd);
}

#define PER_BACKEND(name)                                             \
    static void name##_threads(void **state)                         \
    {                                                                 \
        (void)state;                                                  \
        check_##name(IO_BACKEND_THREADS);                             \
    }                                                                 \
    static void name##_io_uring(void **state)                        \
    {                                                                 \
        (void)state;                                                  \
        require_backend(IO_BACKEND_IO_URING);                         \
        check_##name(IO_BACKEND_IO_URING);                            \
    }

PER_BACKEND(rw_patterns)
PER_BACKEND(vectored)
PER_BACKEND(eof)
PER_BACKEND(direct)
PER_BACKEND(fua)
PER_BACKEND(fdatasync)
PER_BACKEND(fallocate)
PER_BACKEND(concurrent)
PER_BACKEND(errors)

/* ---- the thread pool ---- */

#define POOL_N 64

typedef struct PoolArg {
    int in;
    pthread_t worker;
    pthread_t home;
    int ret;
    bool done;
} PoolArg;

static int pool_fn(void *opaque)
{
    PoolArg *a = opaque;

    a->worker = pthread_self();
    /* Uneven durations so that results come back out of order. */
    usleep((unsigned)((POOL_N - a->in) % 7) * 1000);
    return a->in % 5 == 0 ? -(a->in + 1) : a->in * 7 + 1;
}

static void coroutine_fn pool_entry(void *opaque)
{
    PoolArg *a = opaque;

    a->ret = thread_pool_co_run(pool_fn, a);
    a->home = pthread_self();
    a->done = true;
}

/* Threads of this process, from /proc/self/task. */
static unsigned count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    unsigned n = 0;

    assert_non_null(d);
    while ((de = readdir(d))) {
        n += de->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

static void test_pool_many(void **state)
{
    PoolArg args[POOL_N];
    unsigned baseline;
    bool all_done;

    (void)state;
    thread_pool_shutdown();
    baseline = count_threads();
    memset(args, 0, sizeof(args));
    for (int i = 0; i < POOL_N; i++) {
        args[i].in = i;
        coroutine_enter(coroutine_create(pool_entry, &args[i]));
    }
    do {
        all_done = true;
        for (int i = 0; i < POOL_N; i++) {
            all_done = all_done && args[i].done;
        }
        if (!all_done) {
            aio_poll(aio_main_context(), true);
        }
    } while (!all_done);

    for (int i = 0; i < POOL_N; i++) {
        assert_int_equal(args[i].ret, i % 5 == 0 ? -(i + 1) : i * 7 + 1);
        assert_false(pthread_equal(args[i].worker, pthread_self()));
        assert_true(pthread_equal(args[i].home, pthread_self()));
    }

    /* Workers were started (no more than the pool's limit), shutdown joins
     * them all, may be repeated, and the pool comes back on the next use. */
    assert_true(count_threads() > baseline);
    assert_true(count_threads() <= baseline + 16);
    thread_pool_shutdown();
    assert_int_equal(count_threads(), baseline);
    thread_pool_shutdown();
    memset(&args[0], 0, sizeof(args[0]));
    args[0].in = 3;
    coroutine_enter(coroutine_create(pool_entry, &args[0]));
    TEST_WAIT_WHILE(aio_main_context(), !args[0].done);
    assert_int_equal(args[0].ret, 22);
}

/*
 * A coroutine living in an iothread: the pool's answer and its I/O
 * completions must bring it back to that iothread, not to the main loop.
 */
typedef struct IotState {
    AioContext *ctx;
    int fd;
    pthread_t home;
    PoolArg pool;
    bool pool_same_thread, pool_same_ctx;
    ssize_t wret[2], rret[2];
    bool io_same_thread[2], io_same_ctx[2];
    bool match[2];
    bool uring;
    atomic_bool done;
    atomic_bool cleaned;
} IotState;

static void coroutine_fn iot_entry(void *opaque)
{
    IotState *s = opaque;

    s->home = pthread_self();
    s->pool.in = 6;
    s->pool.ret = thread_pool_co_run(pool_fn, &s->pool);
    s->pool_same_thread = pthread_equal(pthread_self(), s->home);
    s->pool_same_ctx = aio_current_context() == s->ctx;

    for (int b = 0; b < 2; b++) {
        IoBackend be = b ? IO_BACKEND_IO_URING : IO_BACKEND_THREADS;
        uint8_t w[4096], r[4096];
        struct iovec wiov = { w, sizeof(w) }, riov = { r, sizeof(r) };

        if (be == IO_BACKEND_IO_URING && !s->uring) {
            continue;
        }
        fill_pattern(w, sizeof(w), 100 + b);
        s->wret[b] = io_co_pwritev(be, s->fd, &wiov, 1, b * 4096, 0);
        memset(r, 0, sizeof(r));
        s->rret[b] = io_co_preadv(be, s->fd, &riov, 1, b * 4096);
        s->match[b] = memcmp(r, w, sizeof(w)) == 0;
        s->io_same_thread[b] = pthread_equal(pthread_self(), s->home);
        s->io_same_ctx[b] = aio_current_context() == s->ctx;
    }
    atomic_store(&s->done, true);
    aio_wait_kick();
}

static void iot_start(void *opaque)
{
    coroutine_enter(coroutine_create(iot_entry, opaque));
}

/* Tears the iothread's ring down from its own thread, as the owner must. */
static void iot_cleanup(void *opaque)
{
    IotState *s = opaque;

    io_uring_context_cleanup(s->ctx);
    atomic_store(&s->cleaned, true);
    aio_wait_kick();
}

static void test_pool_iothread(void **state)
{
    IotState *s = calloc(1, sizeof(*s));
    Error *err = NULL;
    IOThread *t;

    (void)state;
    assert_non_null(s);
    t = iothread_create("test-io-iot", &err);
    assert_null(err);
    assert_non_null(t);
    s->ctx = iothread_get_context(t);
    s->fd = open_test_file(0);
    assert_true(s->fd >= 0);
    s->uring = io_uring_available();

    aio_bh_schedule_oneshot(s->ctx, iot_start, s);
    TEST_WAIT_WHILE(aio_main_context(), !atomic_load(&s->done));

    assert_false(pthread_equal(s->home, pthread_self()));
    assert_int_equal(s->pool.ret, 6 * 7 + 1);
    assert_false(pthread_equal(s->pool.worker, s->home));
    assert_true(s->pool_same_thread);
    assert_true(s->pool_same_ctx);
    for (int b = 0; b < (s->uring ? 2 : 1); b++) {
        assert_int_equal(s->wret[b], 4096);
        assert_int_equal(s->rret[b], 4096);
        assert_true(s->match[b]);
        assert_true(s->io_same_thread[b]);
        assert_true(s->io_same_ctx[b]);
    }
    if (!s->uring) {
        print_message("note: io_uring part skipped (not available)\n");
    }

    aio_bh_schedule_oneshot(s->ctx, iot_cleanup, s);
    TEST_WAIT_WHILE(aio_main_context(), !atomic_load(&s->cleaned));
    iothread_destroy(t);
    close(s->fd);
    free(s);
}

/* ---- fixture ---- */

static int group_setup(void **state)
{
    Error *err = NULL;

    (void)state;
    if (!aio_main_init(&err)) {
        fprintf(stderr, "aio_main_init: %s\n", error_get_pretty(err));
        error_free(err);
        return -1;
    }
    if (!tmpdir_make(test_dir)) {
        perror("mkdtemp");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    io_uring_context_cleanup(aio_main_context());
    thread_pool_shutdown();
    /* Every file was unlinked right after it was created. */
    if (rmdir(test_dir) < 0) {
        perror("rmdir");
        return -1;
    }
    return 0;
}

#define BOTH(name) cmocka_unit_test(name##_threads), \
                   cmocka_unit_test(name##_io_uring)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(rw_patterns),
        BOTH(vectored),
        BOTH(eof),
        BOTH(direct),
        BOTH(fua),
        BOTH(fdatasync),
        BOTH(fallocate),
        BOTH(concurrent),
        BOTH(errors),
        cmocka_unit_test(test_pool_many),
        cmocka_unit_test(test_pool_iothread),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
