/*
 * The file driver (block/drivers/file.c) against real files, once per I/O
 * backend: reads and writes in patterns, O_DIRECT with unaligned buffers
 * and offsets (bounced), end-of-file reads, write-zeroes and discard (holes
 * seen with SEEK_HOLE), block status, FUA, flush, truncate, open errors.
 *
 * The driver table is driven directly, on a BlockNode built here, so that
 * what is tested is the driver and not the request path above it (which
 * pads and clamps requests).  Each driver call runs in a fresh coroutine and
 * the main loop spins until it is done; assertions stay on the main stack.
 *
 * Files live in a mkdtemp directory under /var/tmp (a real disk, where
 * O_DIRECT works), removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "aio/io.h"
#include "aio/iothread.h"
#include "block/block.h"
#include "block/drivers/drivers.h"
#include "test-wait.h"

static char test_dir[] = "/var/tmp/bj-test-file.XXXXXX";
static unsigned file_counter;

static const IoBackend be_threads = IO_BACKEND_THREADS;
static const IoBackend be_uring = IO_BACKEND_IO_URING;

/* ---- calling the driver in a coroutine ---- */

typedef enum DrvOp {
    D_OPEN, D_READ, D_WRITE, D_ZEROES, D_DISCARD, D_FLUSH, D_STATUS,
    D_TRUNCATE, D_LENGTH, D_WRITEBACK,
} DrvOp;

typedef struct DrvCall {
    DrvOp op;
    BlockNode *bs;
    json_t *opts;
    int64_t offset;
    int64_t bytes;
    IOVector *qiov;
    unsigned flags;
    int64_t pnum;
    int64_t map;
    BlockNode *file;
    Error *err;
    int64_t ret;
    bool done;
} DrvCall;

static void coroutine_fn drv_call_entry(void *opaque)
{
    DrvCall *c = opaque;
    const BlockDriver *drv = &bdrv_file;

    switch (c->op) {
    case D_OPEN:
        c->ret = drv->co_open(c->bs, c->opts, &c->err);
        break;
    case D_READ:
        c->ret = drv->co_preadv(c->bs, c->offset, c->bytes, c->qiov,
                                c->flags);
        break;
    case D_WRITE:
        c->ret = drv->co_pwritev(c->bs, c->offset, c->bytes, c->qiov,
                                 c->flags);
        break;
    case D_ZEROES:
        c->ret = drv->co_pwrite_zeroes(c->bs, c->offset, c->bytes, c->flags);
        break;
    case D_DISCARD:
        c->ret = drv->co_pdiscard(c->bs, c->offset, c->bytes);
        break;
    case D_FLUSH:
        c->ret = drv->co_flush(c->bs);
        break;
    case D_STATUS:
        c->ret = drv->co_block_status(c->bs, c->offset, c->bytes, &c->pnum,
                                      &c->map, &c->file);
        break;
    case D_TRUNCATE:
        c->ret = drv->co_truncate(c->bs, c->offset, &c->err);
        break;
    case D_LENGTH:
        c->ret = drv->co_getlength(c->bs);
        break;
    case D_WRITEBACK:
        drv->co_start_writeback(c->bs);
        c->ret = 0;
        break;
    }
    /* May run in an iothread: publish, then wake the main loop. */
    __atomic_store_n(&c->done, true, __ATOMIC_RELEASE);
    aio_wait_kick();
}

static bool call_done(DrvCall *c)
{
    return __atomic_load_n(&c->done, __ATOMIC_ACQUIRE);
}

static int64_t run_call(DrvCall *c)
{
    Coroutine *co = coroutine_create(drv_call_entry, c);

    coroutine_enter(co);
    TEST_WAIT_WHILE(aio_main_context(), !call_done(c));
    return c->ret;
}

static const char *be_name(IoBackend be)
{
    return be == IO_BACKEND_THREADS ? "threads" : "io_uring";
}

/* Opens a file node on path; NULL and *errmsg (caller frees) on failure. */
static BlockNode *node_open(const char *path, IoBackend be, bool direct,
                            bool read_only, const char *extra_key,
                            const char *extra_val, char **errmsg)
{
    BlockNode *bs = file_node_new(read_only);
    DrvCall c = { .op = D_OPEN, .bs = bs };

    bs->cache_direct = direct;
    c.opts = json_pack("{s:s, s:s}", "filename", path, "aio", be_name(be));
    assert_non_null(c.opts);
    if (extra_key) {
        json_object_set_new(c.opts, extra_key, json_string(extra_val));
    }
    assert_true(argspec_check(c.opts, bdrv_file.options, "", false, NULL));
    run_call(&c);
    json_decref(c.opts);
    if (c.ret < 0) {
        assert_non_null(c.err);
        if (errmsg) {
            *errmsg = strdup(error_get_pretty(c.err));
        }
        error_free(c.err);
        free(bs->opaque);
        free(bs);
        return NULL;
    }
    assert_null(c.err);
    bdrv_file.refresh_limits(bs);
    return bs;
}

static void node_close(BlockNode *bs)
{
    bdrv_file.close(bs);
    free(bs->opaque);
    free(bs);
}

static int drv_rw(BlockNode *bs, DrvOp op, int64_t offset, void *buf,
                  size_t len, unsigned flags)
{
    IOVector v;
    DrvCall c = { .op = op, .bs = bs, .offset = offset, .bytes = len,
                  .qiov = &v, .flags = flags };

    iov_vec_init_buf(&v, buf, len);
    return (int)run_call(&c);
}

static int drv_op(BlockNode *bs, DrvOp op, int64_t offset, int64_t bytes,
                  unsigned flags)
{
    DrvCall c = { .op = op, .bs = bs, .offset = offset, .bytes = bytes,
                  .flags = flags };

    return (int)run_call(&c);
}

static int drv_status(BlockNode *bs, int64_t offset, int64_t bytes,
                      int64_t *pnum)
{
    DrvCall c = { .op = D_STATUS, .bs = bs, .offset = offset,
                  .bytes = bytes };
    int ret = (int)run_call(&c);

    if (ret >= 0) {
        assert_true(c.pnum > 0 && c.pnum <= bytes);
        assert_int_equal(c.map, offset);
        assert_ptr_equal(c.file, bs);
    }
    *pnum = c.pnum;
    return ret;
}

/* ---- files ---- */

static char *new_file(size_t size)
{
    char *path;
    int fd;

    assert_true(asprintf(&path, "%s/f%u.img", test_dir, file_counter++) > 0);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, size), 0);
    close(fd);
    return path;
}

static uint8_t pattern_byte(uint64_t off, unsigned seed)
{
    return (uint8_t)((off * 7 + (off >> 9) + seed) & 0xff);
}

static void fill_pattern(uint8_t *buf, uint64_t off, size_t len,
                         unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = pattern_byte(off + i, seed);
    }
}

/* Reads the file behind the driver's back (buffered, own fd). */
static void read_back(const char *path, uint64_t off, void *buf, size_t len)
{
    int fd = open(path, O_RDONLY);
    ssize_t n;

    assert_true(fd >= 0);
    n = pread(fd, buf, len, off);
    assert_int_equal(n, (ssize_t)len);
    close(fd);
}

static off_t seek(const char *path, off_t off, int whence)
{
    int fd = open(path, O_RDONLY);
    off_t r;

    assert_true(fd >= 0);
    r = lseek(fd, off, whence);
    close(fd);
    return r;
}

static bool all_zero(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i]) {
            return false;
        }
    }
    return true;
}

static IoBackend state_be(void **state)
{
    IoBackend be = *(const IoBackend *)*state;

    if (be == IO_BACKEND_IO_URING && !io_uring_available()) {
        skip();
    }
    return be;
}

/* ---- tests ---- */

/* Writes of several shapes (one buffer, many small segments, FUA) land
 * where they should and read back through the driver and behind it. */
static void test_rw_patterns(void **state)
{
    IoBackend be = state_be(state);
    const size_t size = 1 << 20;
    char *path = new_file(size);
    BlockNode *bs = node_open(path, be, false, false, NULL, NULL, NULL);
    uint8_t *buf = malloc(size), *chk = malloc(size);
    IOVector v;

    assert_non_null(bs);
    assert_int_equal(bs->total_bytes, size);

    /* One big write, read back whole. */
    fill_pattern(buf, 0, size, 1);
    assert_int_equal(drv_rw(bs, D_WRITE, 0, buf, size, 0), 0);
    memset(chk, 0xaa, size);
    assert_int_equal(drv_rw(bs, D_READ, 0, chk, size, 0), 0);
    assert_memory_equal(buf, chk, size);

    /* 64 segments of odd sizes at an odd offset. */
    {
        size_t off = 12345, total = 0;
        DrvCall c = { .op = D_WRITE, .bs = bs, .offset = off, .qiov = &v };

        fill_pattern(buf, off, 64 * 100, 2);
        iov_vec_init(&v, 64);
        for (int i = 0; i < 64; i++) {
            iov_vec_add(&v, buf + total, 37 + i);
            total += 37 + i;
        }
        c.bytes = total;
        assert_int_equal(run_call(&c), 0);
        iov_vec_destroy(&v);
        read_back(path, off, chk, total);
        assert_memory_equal(buf, chk, total);
    }

    /* More segments than one syscall takes (IOV_MAX): the remainder goes
     * round the short-transfer loop. */
    {
        const int nseg = 1500;
        DrvCall c = { .op = D_WRITE, .bs = bs, .offset = 0, .qiov = &v,
                      .bytes = nseg * 512 };

        fill_pattern(buf, 0, nseg * 512, 12);
        iov_vec_init(&v, nseg);
        for (int i = 0; i < nseg; i++) {
            iov_vec_add(&v, buf + i * 512, 512);
        }
        assert_int_equal(run_call(&c), 0);
        read_back(path, 0, chk, nseg * 512);
        assert_memory_equal(buf, chk, nseg * 512);
        memset(chk, 0, nseg * 512);
        iov_vec_reset(&v);
        for (int i = 0; i < nseg; i++) {
            iov_vec_add(&v, chk + i * 512, 512);
        }
        c = (DrvCall){ .op = D_READ, .bs = bs, .offset = 0, .qiov = &v,
                       .bytes = nseg * 512 };
        assert_int_equal(run_call(&c), 0);
        assert_memory_equal(buf, chk, nseg * 512);
        iov_vec_destroy(&v);
    }

    /* FUA write. */
    fill_pattern(buf, 65536, 4096, 3);
    assert_int_equal(drv_rw(bs, D_WRITE, 65536, buf, 4096, BLK_REQ_FUA), 0);
    read_back(path, 65536, chk, 4096);
    assert_memory_equal(buf, chk, 4096);

    assert_int_equal(drv_op(bs, D_FLUSH, 0, 0, 0), 0);

    node_close(bs);
    free(buf);
    free(chk);
    unlink(path);
    free(path);
}

/* cache.direct=on: alignment is detected, unaligned buffers and offsets
 * are bounced, and the bytes land exactly where asked. */
static void test_direct_unaligned(void **state)
{
    IoBackend be = state_be(state);
    const size_t size = 256 * 1024;
    char *path = new_file(size);
    BlockNode *bs = node_open(path, be, true, false, NULL, NULL, NULL);
    uint8_t *raw = malloc(size + 1), *chk = malloc(size + 1);
    uint8_t *abuf = blk_aligned_alloc(4096, 65536);
    uint8_t *ubuf = raw + 1;   /* misaligned on purpose */

    assert_non_null(bs);
    assert_true(bs->bl.request_alignment >= 1);
    assert_true(bs->bl.request_alignment <= 4096);
    assert_true(bs->bl.min_mem_alignment >= 1);

    /* Aligned buffer, aligned offset: straight through. */
    fill_pattern(abuf, 0, 65536, 4);
    assert_int_equal(drv_rw(bs, D_WRITE, 0, abuf, 65536, 0), 0);
    read_back(path, 0, chk, 65536);
    assert_memory_equal(abuf, chk, 65536);

    /* Misaligned buffer, aligned offset: bounced. */
    fill_pattern(ubuf, 65536, 65536, 5);
    assert_int_equal(drv_rw(bs, D_WRITE, 65536, ubuf, 65536, 0), 0);
    read_back(path, 65536, chk, 65536);
    assert_memory_equal(ubuf, chk, 65536);
    memset(ubuf, 0, 65536);
    assert_int_equal(drv_rw(bs, D_READ, 65536, ubuf, 65536, 0), 0);
    assert_memory_equal(ubuf, chk, 65536);

    /* Misaligned offset and length: read-modify-write; neighbours keep
     * their bytes. */
    fill_pattern(ubuf, 1000, 3000, 6);
    assert_int_equal(drv_rw(bs, D_WRITE, 1000, ubuf, 3000, 0), 0);
    read_back(path, 0, chk, 8192);
    assert_memory_equal(chk, abuf, 1000);
    assert_memory_equal(chk + 1000, ubuf, 3000);
    assert_memory_equal(chk + 4000, abuf + 4000, 8192 - 4000);
    memset(raw, 0, 3001);
    assert_int_equal(drv_rw(bs, D_READ, 1000, ubuf, 3000, 0), 0);
    assert_memory_equal(chk + 1000, ubuf, 3000);

    /* FUA through the bounce. */
    fill_pattern(ubuf, 131072, 4096, 7);
    assert_int_equal(drv_rw(bs, D_WRITE, 131072, ubuf, 4096, BLK_REQ_FUA),
                     0);
    read_back(path, 131072, chk, 4096);
    assert_memory_equal(ubuf, chk, 4096);

    /* The file did not grow. */
    assert_int_equal(drv_op(bs, D_LENGTH, 0, 0, 0), size);

    node_close(bs);
    free(abuf);
    free(raw);
    free(chk);
    unlink(path);
    free(path);
}

/* A read that runs past the end of a short (and unaligned) file returns
 * its bytes followed by zeroes, buffered and direct. */
static void test_eof_zero_fill(void **state)
{
    IoBackend be = state_be(state);
    const size_t flen = 5000;
    char *path = new_file(0);
    uint8_t *data = malloc(flen);
    uint8_t *buf = blk_aligned_alloc(4096, 8192);
    int fd;

    fill_pattern(data, 0, flen, 8);
    fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, flen, 0), (ssize_t)flen);
    close(fd);

    for (int direct = 0; direct <= 1; direct++) {
        BlockNode *bs = node_open(path, be, direct, true, NULL, NULL, NULL);

        assert_non_null(bs);
        assert_int_equal(bs->total_bytes, flen);
        memset(buf, 0xff, 8192);
        assert_int_equal(drv_rw(bs, D_READ, 0, buf, 8192, 0), 0);
        assert_memory_equal(buf, data, flen);
        assert_true(all_zero(buf + flen, 8192 - flen));

        /* Entirely past the end. */
        memset(buf, 0xff, 8192);
        assert_int_equal(drv_rw(bs, D_READ, 8192, buf, 4096, 0), 0);
        assert_true(all_zero(buf, 4096));

        /* Read-only node: writes are refused by the kernel. */
        assert_true(drv_rw(bs, D_WRITE, 0, buf, 4096, 0) < 0);
        node_close(bs);
    }

    free(data);
    free(buf);
    unlink(path);
    free(path);
}

/* write-zeroes (with and without may-unmap) and discard read back as
 * zeroes; the unmapping ones leave holes SEEK_HOLE can see. */
static void test_zeroes_discard(void **state)
{
    IoBackend be = state_be(state);
    const size_t size = 1 << 20;
    const size_t k64 = 65536;
    char *path = new_file(0);
    uint8_t *buf = blk_aligned_alloc(4096, size);

    for (int direct = 0; direct <= 1; direct++) {
        BlockNode *bs = node_open(path, be, direct, false, NULL, NULL, NULL);

        assert_non_null(bs);
        fill_pattern(buf, 0, size, 9);
        assert_int_equal(drv_rw(bs, D_WRITE, 0, buf, size, 0), 0);
        assert_int_equal(drv_op(bs, D_FLUSH, 0, 0, 0), 0);

        /* Unmapping write-zeroes: a hole. */
        assert_int_equal(drv_op(bs, D_ZEROES, k64, k64,
                                BLK_REQ_MAY_UNMAP | BLK_REQ_NO_FALLBACK), 0);
        /* Plain write-zeroes: zeroes, allocation unspecified. */
        assert_int_equal(drv_op(bs, D_ZEROES, 3 * k64, k64, 0), 0);
        /* Discard: a hole. */
        assert_int_equal(drv_op(bs, D_DISCARD, 5 * k64, k64, 0), 0);
        /* Unaligned plain write-zeroes (falls back inside the driver). */
        assert_int_equal(drv_op(bs, D_ZEROES, 7 * k64 + 100, 1000, 0), 0);

        memset(buf, 0xff, size);
        assert_int_equal(drv_rw(bs, D_READ, 0, buf, size, 0), 0);
        for (size_t off = 0; off < size; off += k64) {
            uint8_t exp[65536];

            fill_pattern(exp, off, k64, 9);
            if (off == k64 || off == 3 * k64 || off == 5 * k64) {
                assert_true(all_zero(buf + off, k64));
            } else if (off == 7 * k64) {
                assert_memory_equal(buf + off, exp, 100);
                assert_true(all_zero(buf + off + 100, 1000));
                assert_memory_equal(buf + off + 1100, exp + 1100,
                                    k64 - 1100);
            } else {
                assert_memory_equal(buf + off, exp, k64);
            }
        }
        /* Holes where data was unmapped. */
        assert_int_equal(seek(path, 0, SEEK_HOLE), k64);
        assert_int_equal(seek(path, k64, SEEK_DATA), 2 * k64);
        assert_int_equal(seek(path, 4 * k64, SEEK_HOLE), 5 * k64);
        assert_int_equal(seek(path, 5 * k64, SEEK_DATA), 6 * k64);

        /* Write-zeroes past the end grows the file with zeroes. */
        assert_int_equal(drv_op(bs, D_ZEROES, size, k64,
                                BLK_REQ_MAY_UNMAP), 0);
        assert_int_equal(drv_op(bs, D_LENGTH, 0, 0, 0), size + k64);
        assert_int_equal(drv_op(bs, D_TRUNCATE, 0, 0, 0), 0);
        node_close(bs);
    }

    free(buf);
    unlink(path);
    free(path);
}

/* SEEK_DATA/SEEK_HOLE turned into data/zero extents. */
static void test_block_status(void **state)
{
    IoBackend be = state_be(state);
    const int64_t size = 1 << 20;
    const int64_t mid = 512 * 1024;
    char *path = new_file(size);
    BlockNode *bs = node_open(path, be, false, false, NULL, NULL, NULL);
    uint8_t buf[8192];
    int64_t pnum;
    int ret;

    assert_non_null(bs);
    fill_pattern(buf, mid, sizeof(buf), 10);
    assert_int_equal(drv_rw(bs, D_WRITE, mid, buf, sizeof(buf), 0), 0);

    ret = drv_status(bs, 0, size, &pnum);
    assert_true(ret >= 0);
    assert_true(ret & BLK_STATUS_ZERO);
    assert_false(ret & BLK_STATUS_DATA);
    assert_true(ret & BLK_STATUS_OFFSET_VALID);
    assert_int_equal(pnum, mid);

    ret = drv_status(bs, mid, size - mid, &pnum);
    assert_true(ret & BLK_STATUS_DATA);
    assert_false(ret & BLK_STATUS_ZERO);
    assert_int_equal(pnum, sizeof(buf));

    /* A query that stops inside the data extent. */
    ret = drv_status(bs, mid + 4096, 100, &pnum);
    assert_true(ret & BLK_STATUS_DATA);
    assert_int_equal(pnum, 100);

    /* The tail hole up to end of file. */
    ret = drv_status(bs, mid + sizeof(buf), size - mid - sizeof(buf), &pnum);
    assert_true(ret & BLK_STATUS_ZERO);
    assert_int_equal(pnum, size - mid - (int64_t)sizeof(buf));

    node_close(bs);
    unlink(path);
    free(path);
}

/* truncate grows and shrinks the file; getlength follows. */
static void test_truncate(void **state)
{
    IoBackend be = state_be(state);
    char *path = new_file(4096);
    BlockNode *bs = node_open(path, be, false, false, NULL, NULL, NULL);
    uint8_t buf[4096];
    struct stat st;

    assert_non_null(bs);
    assert_int_equal(drv_op(bs, D_LENGTH, 0, 0, 0), 4096);
    assert_int_equal(drv_op(bs, D_TRUNCATE, 3 << 20, 0, 0), 0);
    assert_int_equal(drv_op(bs, D_LENGTH, 0, 0, 0), 3 << 20);
    assert_int_equal(bs->total_bytes, 3 << 20);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 3 << 20);

    memset(buf, 0xff, sizeof(buf));
    assert_int_equal(drv_rw(bs, D_READ, 2 << 20, buf, sizeof(buf), 0), 0);
    assert_true(all_zero(buf, sizeof(buf)));

    assert_int_equal(drv_op(bs, D_TRUNCATE, 1000, 0, 0), 0);
    assert_int_equal(drv_op(bs, D_LENGTH, 0, 0, 0), 1000);

    node_close(bs);
    unlink(path);
    free(path);
}

/* cache.no-flush makes flush a no-op that succeeds; plain flush works. */
static void test_flush(void **state)
{
    IoBackend be = state_be(state);
    char *path = new_file(65536);
    BlockNode *bs;
    uint8_t buf[4096];

    for (int no_flush = 0; no_flush <= 1; no_flush++) {
        bs = node_open(path, be, false, false, NULL, NULL, NULL);
        assert_non_null(bs);
        bs->cache_no_flush = no_flush;
        fill_pattern(buf, 0, sizeof(buf), 11 + no_flush);
        assert_int_equal(drv_rw(bs, D_WRITE, 0, buf, sizeof(buf),
                                BLK_REQ_FUA), 0);
        assert_int_equal(drv_op(bs, D_FLUSH, 0, 0, 0), 0);
        node_close(bs);
    }
    unlink(path);
    free(path);
}

/* The writeback hint (buffered and cache.direct) returns and leaves the
 * data as written. */
static void test_start_writeback(void **state)
{
    IoBackend be = state_be(state);
    char *path = new_file(1 << 20);
    BlockNode *bs;
    static uint8_t buf[1 << 20], back[1 << 20];

    for (int direct = 0; direct <= 1; direct++) {
        bs = node_open(path, be, direct, false, NULL, NULL, NULL);
        assert_non_null(bs);
        fill_pattern(buf, 0, sizeof(buf), 21 + direct);
        assert_int_equal(drv_rw(bs, D_WRITE, 0, buf, sizeof(buf), 0), 0);
        assert_int_equal(drv_op(bs, D_WRITEBACK, 0, 0, 0), 0);
        assert_int_equal(drv_rw(bs, D_READ, 0, back, sizeof(back), 0), 0);
        assert_memory_equal(buf, back, sizeof(buf));
        node_close(bs);
    }
    unlink(path);
    free(path);
}

/* Open errors carry QEMU's wording. */
static void test_open_errors(void **state)
{
    IoBackend be = state_be(state);
    char *msg = NULL;
    char *path, *exp;

    assert_true(asprintf(&path, "%s/missing.img", test_dir) > 0);
    assert_null(node_open(path, be, false, false, NULL, NULL, &msg));
    assert_true(asprintf(&exp, "Could not open '%s': No such file or "
                         "directory", path) > 0);
    assert_string_equal(msg, exp);
    free(msg);
    free(exp);
    free(path);

    assert_null(node_open(test_dir, be, false, true, NULL, NULL, &msg));
    assert_true(asprintf(&exp, "Could not open '%s': Is a directory",
                         test_dir) > 0);
    assert_string_equal(msg, exp);
    free(msg);
    free(exp);

    /* aio=native follows QEMU's rule: only with cache.direct=on. */
    path = new_file(4096);
    assert_null(node_open(path, be, false, false, "aio", "native", &msg));
    assert_string_equal(msg, "aio=native was specified, but it requires "
                        "cache.direct=on, which was not specified.");
    free(msg);
    {
        BlockNode *bs = node_open(path, be, true, false, "aio", "native",
                                  NULL);

        assert_non_null(bs);
        node_close(bs);
    }
    unlink(path);
    free(path);
}

/* A node that lives in an iothread: many requests at once from coroutines
 * in that thread, each backend using that context's ring or the pool. */
static void test_iothread(void **state)
{
    IoBackend be = state_be(state);
    enum { N = 32, BS = 65536 };
    char *path = new_file(N * BS);
    BlockNode *bs = node_open(path, be, true, false, NULL, NULL, NULL);
    IOThread *t = iothread_create("file-io0", NULL);
    AioContext *ctx;
    uint8_t *bufs[N];
    IOVector vs[N];
    DrvCall calls[N];
    uint8_t *chk = malloc(BS);

    assert_non_null(bs);
    assert_non_null(t);
    ctx = iothread_get_context(t);
    bs->ctx = ctx;

    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N; i++) {
            if (pass == 0) {
                bufs[i] = blk_aligned_alloc(4096, BS);
                fill_pattern(bufs[i], (uint64_t)i * BS, BS, 13);
            } else {
                memset(bufs[i], 0, BS);
            }
            iov_vec_init_buf(&vs[i], bufs[i], BS);
            calls[i] = (DrvCall){ .op = pass == 0 ? D_WRITE : D_READ,
                                  .bs = bs, .offset = (int64_t)i * BS,
                                  .bytes = BS, .qiov = &vs[i] };
            aio_co_enter(ctx, coroutine_create(drv_call_entry, &calls[i]));
        }
        for (int i = 0; i < N; i++) {
            TEST_WAIT_WHILE(aio_main_context(), !call_done(&calls[i]));
            assert_int_equal(calls[i].ret, 0);
        }
    }
    for (int i = 0; i < N; i++) {
        fill_pattern(chk, (uint64_t)i * BS, BS, 13);
        assert_memory_equal(bufs[i], chk, BS);
        free(bufs[i]);
    }

    iothread_destroy(t);
    bs->ctx = aio_main_context();
    node_close(bs);
    free(chk);
    unlink(path);
    free(path);
}

/* ---- setup ---- */

SCRATCH_GROUP_FIXTURES(test_dir)

#define BOTH(fn) \
    cmocka_unit_test_prestate(fn, (void *)&be_threads), \
    cmocka_unit_test_prestate(fn, (void *)&be_uring)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_rw_patterns),
        BOTH(test_direct_unaligned),
        BOTH(test_eof_zero_fill),
        BOTH(test_zeroes_discard),
        BOTH(test_block_status),
        BOTH(test_truncate),
        BOTH(test_flush),
        BOTH(test_start_writeback),
        BOTH(test_open_errors),
        BOTH(test_iothread),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
