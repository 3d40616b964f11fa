/*
 * bench-file: raw throughput of a `file` node through the whole request
 * path (bdrv_co_preadv/pwritev on a root child), for comparison with fio on
 * the same file.  Not a test: bench-file.sh runs it and prints the table.
 *
 *   bench-file FILE {threads|io_uring} {randread|randwrite|read|write}
 *              BLOCKSIZE IODEPTH SECONDS [buffered]
 *
 * IODEPTH coroutines each issue one request at a time until SECONDS have
 * passed: random offsets (aligned to BLOCKSIZE) for rand*, a shared cursor
 * that wraps at the end of the file for read/write (fio's sequential with
 * the same depth).  cache.direct=on unless "buffered".  Prints one line:
 *
 *   backend pattern bs iodepth seconds bytes ios MB/s IOPS
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "aio/io.h"
#include "block/block.h"

typedef struct Bench {
    BlockChild *child;
    bool write;
    bool random;
    int64_t bs;
    int64_t blocks;          /* file size / bs */
    int64_t cursor;          /* next sequential block */
    int64_t deadline_ns;
    uint64_t ios;
    int running;
    int error;
} Bench;

typedef struct Worker {
    Bench *b;
    uint64_t rng;
    void *buf;
} Worker;

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void coroutine_fn worker_entry(void *opaque)
{
    Worker *w = opaque;
    Bench *b = w->b;

    while (!b->error && clock_ns() < b->deadline_ns) {
        int64_t blk;
        IOVector v;
        int ret;

        if (b->random) {
            blk = xorshift(&w->rng) % b->blocks;
        } else {
            blk = b->cursor;
            b->cursor = (b->cursor + 1) % b->blocks;
        }
        iov_vec_init_buf(&v, w->buf, b->bs);
        if (b->write) {
            ret = bdrv_co_pwritev(b->child, blk * b->bs, b->bs, &v, 0);
        } else {
            ret = bdrv_co_preadv(b->child, blk * b->bs, b->bs, &v, 0);
        }
        if (ret < 0) {
            b->error = ret;
            break;
        }
        b->ios++;
    }
    b->running--;
    aio_wait_kick();
}

static char *bench_parent_desc(BlockChild *c)
{
    return strdup("benchmark");
}

static void bench_drain_noop(BlockChild *c)
{
}

static bool bench_drained_poll(BlockChild *c)
{
    return false;
}

static const BlockChildClass bench_class = {
    .parent_is_node = false,
    .get_parent_desc = bench_parent_desc,
    .drained_begin = bench_drain_noop,
    .drained_poll = bench_drained_poll,
    .drained_end = bench_drain_noop,
};

static int usage(void)
{
    fprintf(stderr, "usage: bench-file FILE threads|io_uring "
            "randread|randwrite|read|write BLOCKSIZE IODEPTH SECONDS "
            "[buffered]\n");
    return 2;
}

int main(int argc, char **argv)
{
    Error *err = NULL;
    Bench b = { 0 };
    Worker *workers;
    BlockNode *node;
    json_t *opts;
    const char *pattern;
    int depth;
    double secs, elapsed;
    int64_t t0;
    bool direct = true;

    if (argc < 7 || argc > 8) {
        return usage();
    }
    if (argc == 8) {
        if (strcmp(argv[7], "buffered") != 0) {
            return usage();
        }
        direct = false;
    }
    pattern = argv[3];
    b.write = strstr(pattern, "write") != NULL;
    b.random = strncmp(pattern, "rand", 4) == 0;
    b.bs = strtoll(argv[4], NULL, 0);
    depth = atoi(argv[5]);
    secs = atof(argv[6]);
    if (b.bs <= 0 || depth <= 0 || secs <= 0) {
        return usage();
    }

    if (!aio_main_init(&err)) {
        error_report_err(err, "bench-file");
        return 1;
    }
    opts = json_pack("{s:s, s:s, s:s, s:s, s:{s:b}}",
                     "driver", "file", "node-name", "bench",
                     "filename", argv[1], "aio", argv[2],
                     "cache", "direct", direct);
    node = bdrv_open_blockdev(opts, false, &err);
    json_decref(opts);
    if (!node) {
        error_report_err(err, "bench-file");
        return 1;
    }
    b.child = bdrv_root_attach_child(node, "bench", &bench_class, NULL,
                                     BLK_PERM_CONSISTENT_READ |
                                     BLK_PERM_WRITE,
                                     BLK_PERM_ALL, &err);
    if (!b.child) {
        error_report_err(err, "bench-file");
        return 1;
    }
    b.blocks = bdrv_getlength(node) / b.bs;
    if (b.blocks <= 0) {
        fprintf(stderr, "bench-file: %s is smaller than one block\n",
                argv[1]);
        return 1;
    }

    workers = calloc(depth, sizeof(*workers));
    if (!workers) {
        abort();
    }
    t0 = clock_ns();
    b.deadline_ns = t0 + (int64_t)(secs * 1e9);
    b.running = depth;
    for (int i = 0; i < depth; i++) {
        workers[i].b = &b;
        workers[i].rng = 0x9e3779b97f4a7c15ULL * (i + 1);
        workers[i].buf = blk_aligned_alloc(4096, b.bs);
        memset(workers[i].buf, 0x5a + i, b.bs);
        /* Ownership: workers[i] outlives the coroutine (freed below). */
        coroutine_enter(coroutine_create(worker_entry, &workers[i]));
    }
    AIO_WAIT_WHILE(aio_main_context(), b.running > 0);
    elapsed = (clock_ns() - t0) / 1e9;

    if (b.error) {
        fprintf(stderr, "bench-file: I/O error: %s\n", strerror(-b.error));
    } else {
        double bytes = (double)b.ios * b.bs;

        printf("%s %s %" PRId64 " %d %.2f %.0f %" PRIu64 " %.1f %.0f\n",
               argv[2], pattern, b.bs, depth, elapsed, bytes, b.ios,
               bytes / elapsed / 1e6, b.ios / elapsed);
    }

    for (int i = 0; i < depth; i++) {
        free(workers[i].buf);
    }
    free(workers);
    bdrv_detach_child(b.child);
    if (!bdrv_del_blockdev("bench", &err)) {
        error_report_err(err, "bench-file");
        return 1;
    }
    thread_pool_shutdown();
    return b.error ? 1 : 0;
}
