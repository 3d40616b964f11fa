/*
 * The qcow2 driver through the block layer (bdrv_open_blockdev, a root
 * child, the sync wrappers) against images made by qemu-img/qemu-io, with
 * qemu-img check and compare as the judges:
 *   - images qemu wrote (data, zero clusters, compressed) read back
 *     byte-identical to `qemu-img convert -O raw`
 *   - random writes, write-zeroes and discards over several shapes
 *     (cluster sizes, v2/v3, refcount widths, backing chains with relative
 *     names) leave an image with no errors and no leaks that compares
 *     equal to a raw file given the same operations
 *   - small clusters force new refcount blocks and a reftable move
 *   - hostile images and backing loops are refused with a message
 *
 * Files live under /var/tmp (a real disk), removed at the end.  Skipped
 * (and counted as such) without qemu-img.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "block/block.h"
#include "block/drivers/qcow2/qcow2.h"
#include "block/snapshot.h"
#include "test-wait.h"
#include "tests/common/xorshift.h"

static char test_dir[] = "/var/tmp/bj-test-qcow2.XXXXXX";
static bool have_qemu;

/* ---- helpers ---- */

static char *path_of(const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", test_dir, name) > 0);
    return p;
}

typedef struct Img {
    BlockNode *bs;
    BlockChild *root;
} Img;

static bool img_open(Img *img, const char *name, const char *extra_json,
                     bool read_only, Error **errp)
{
    char *path = path_of(name);
    char *js = NULL;
    assert_true(asprintf(&js, "{\"driver\": \"qcow2\", \"node-name\": \"q\", "
                         "\"read-only\": %s, \"file\": {\"driver\": \"file\", "
                         "\"filename\": \"%s\"}%s%s}",
                         read_only ? "true" : "false", path,
                         extra_json ? ", " : "",
                         extra_json ? extra_json : "") > 0);
    json_error_t jerr;
    json_t *opts = json_loads(js, 0, &jerr);
    assert_non_null(opts);
    free(js);
    free(path);
    img->bs = bdrv_open_blockdev(opts, false, errp);
    json_decref(opts);
    if (!img->bs) {
        return false;
    }
    uint64_t perm = BLK_PERM_CONSISTENT_READ |
                    (read_only ? 0 : BLK_PERM_WRITE);
    img->root = bdrv_root_attach_child(img->bs, "root", &test_user_class, NULL,
                                       perm, BLK_PERM_ALL, errp);
    assert_non_null(img->root);
    return true;
}

static void img_open_ok(Img *img, const char *name, const char *extra)
{
    Error *err = NULL;
    if (!img_open(img, name, extra, false, &err)) {
        fail_msg("open %s: %s", name, error_get_pretty(err));
    }
}

static void img_close(Img *img)
{
    Error *err = NULL;
    assert_int_equal(bdrv_flush(img->bs), 0);
    bdrv_detach_child(img->root);
    if (!bdrv_del_blockdev("q", &err)) {
        fail_msg("blockdev-del: %s", error_get_pretty(err));
    }
}

/* Request in a coroutine (co_run). */
typedef struct Req {
    BlockChild *c;
    int op;        /* 0 zeroes, 1 discard, 2 status */
    int64_t off, bytes, pnum, map;
    unsigned flags;
    int ret;
} Req;

static void coroutine_fn req_entry(void *opaque)
{
    Req *r = opaque;
    BlockNode *file = NULL;
    switch (r->op) {
    case 0:
        r->ret = bdrv_co_pwrite_zeroes(r->c, r->off, r->bytes, r->flags);
        break;
    case 1:
        r->ret = bdrv_co_pdiscard(r->c, r->off, r->bytes);
        break;
    default:
        r->ret = bdrv_co_block_status(r->c->node, r->off, r->bytes, &r->pnum,
                                      &r->map, &file);
        break;
    }
}

static int run_req(Req *r)
{
    co_run(req_entry, r);
    return r->ret;
}

static void check_clean(const char *name)
{
    char *p = path_of(name);
    char *out = sh_out("qemu-img check -f qcow2 '%s' 2>&1", p);
    if (!strstr(out, "No errors were found")) {
        fail_msg("qemu-img check %s:\n%s", name, out);
    }
    free(out);
    free(p);
}

static void check_same(const char *raw, const char *qcow2)
{
    char *a = path_of(raw), *b = path_of(qcow2);
    char *out = sh_out("qemu-img compare -f raw -F qcow2 '%s' '%s' 2>&1", a,
                       b);
    if (!strstr(out, "Images are identical")) {
        fail_msg("qemu-img compare %s %s:\n%s", raw, qcow2, out);
    }
    free(out);
    free(a);
    free(b);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void)
{
    return xorshift64(&rng);
}

/*
 * Random writes / zeroes / discards through the driver on `name`, the same
 * on the raw file `ref` (which starts as the image's current contents).
 */
static const char *random_ops_extra;

static void random_ops(const char *name, const char *ref, uint64_t size,
                       uint32_t cs, int nops, bool zero_ops)
{
    char extra[256];
    Img img;
    char *rp = path_of(ref);
    int rfd = open(rp, O_RDWR);
    assert_true(rfd >= 0);
    /* discard=unmap: otherwise the layer drops discards (as qemu) */
    snprintf(extra, sizeof(extra), "\"discard\": \"unmap\"%s%s",
             random_ops_extra ? ", " : "",
             random_ops_extra ? random_ops_extra : "");
    img_open_ok(&img, name, extra);
    uint8_t *buf = malloc(8 << 20), *rbuf = malloc(8 << 20);

    for (int i = 0; i < nops; i++) {
        uint64_t kind = rnd() % 10;
        uint64_t len = 1 + rnd() % (3 * cs + 1000);
        if (len > 512 * 1024) {
            len = 512 * 1024;
        }
        uint64_t off = rnd() % (size - len);
        if (kind < 7 || !zero_ops) {
            memset(buf, (int)(i + 1), len);
            for (uint64_t k = 0; k < len; k += 97) {
                buf[k] = (uint8_t)rnd();
            }
            assert_int_equal(bdrv_pwrite(img.root, (int64_t)off,
                                         (int64_t)len, buf, 0), 0);
            assert_int_equal(pwrite(rfd, buf, len, (off_t)off), (ssize_t)len);
        } else if (kind < 9) {
            Req r = { .c = img.root, .op = 0, .off = (int64_t)off,
                      .bytes = (int64_t)len,
                      .flags = (kind == 8) ? BLK_REQ_MAY_UNMAP : 0 };
            assert_int_equal(run_req(&r), 0);
            memset(buf, 0, len);
            assert_int_equal(pwrite(rfd, buf, len, (off_t)off), (ssize_t)len);
        } else {
            /* discard whole clusters only: partial ones keep their data */
            off = off / cs * cs;
            len = (len + cs - 1) / cs * cs;
            if (off + len > size) {
                continue;
            }
            Req r = { .c = img.root, .op = 1, .off = (int64_t)off,
                      .bytes = (int64_t)len };
            assert_int_equal(run_req(&r), 0);
            memset(buf, 0, len);
            assert_int_equal(pwrite(rfd, buf, len, (off_t)off), (ssize_t)len);
        }
        if (i % 16 == 0) {
            /* read back a random range against the reference */
            uint64_t roff = rnd() % (size - 65536);
            uint64_t rlen = 1 + rnd() % 65536;
            assert_int_equal(bdrv_pread(img.root, (int64_t)roff,
                                        (int64_t)rlen, buf, 0), 0);
            assert_int_equal(pread(rfd, rbuf, rlen, (off_t)roff),
                             (ssize_t)rlen);
            assert_memory_equal(buf, rbuf, rlen);
        }
        if (i % 50 == 49) {
            assert_int_equal(bdrv_flush(img.bs), 0);
        }
    }
    img_close(&img);
    close(rfd);
    free(buf);
    free(rbuf);
    free(rp);
}

/* ---- tests ---- */

static void test_read_qemu_written(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *q = path_of("qw.qcow2"), *r = path_of("qw.raw");
    char *c = path_of("qc.qcow2"), *cr = path_of("qc.raw");
    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 16M && "
                        "qemu-io -f qcow2 -c 'write -P 0xaa 0 100k' "
                        "-c 'write -P 0x55 1000k 3k' -c 'write -z 2M 128k' "
                        "-c 'write -P 0x11 2M 4k' -c 'write -z 2100k 64k' "
                        "-c 'write -P 0x77 16252k 132k' '%s' >/dev/null && "
                        "qemu-img convert -f qcow2 -O raw '%s' '%s'",
                        q, q, q, r), 0);
    /* compressed: random-ish data, converted with -c */
    assert_int_equal(sh("head -c 4M /dev/urandom | base64 > '%s' && "
                        "truncate -s 8M '%s' && "
                        "qemu-img convert -q -c -f raw -O qcow2 '%s' '%s' && "
                        "qemu-img convert -f qcow2 -O raw '%s' '%s.x'",
                        cr, cr, cr, c, c, cr), 0);

    const char *names[][2] = { { "qw.qcow2", "qw.raw" },
                               { "qc.qcow2", "qc.raw.x" } };
    for (int k = 0; k < 2; k++) {
        Img img;
        Error *err = NULL;
        if (!img_open(&img, names[k][0], NULL, true, &err)) {
            fail_msg("%s", error_get_pretty(err));
        }
        char *rp = path_of(names[k][1]);
        int fd = open(rp, O_RDONLY);
        assert_true(fd >= 0);
        int64_t len = bdrv_getlength(img.bs);
        uint8_t *a = malloc(1 << 20), *b = malloc(1 << 20);
        for (int64_t off = 0; off < len; off += 1 << 20) {
            /* odd-sized chunks cross cluster boundaries */
            int64_t n = (1 << 20) - 333;
            if (off + n > len) {
                n = len - off;
            }
            assert_int_equal(bdrv_pread(img.root, off, n, a, 0), 0);
            assert_int_equal(pread(fd, b, (size_t)n, off), n);
            assert_memory_equal(a, b, (size_t)n);
        }
        free(a);
        free(b);
        close(fd);
        free(rp);
        bdrv_detach_child(img.root);
        assert_true(bdrv_del_blockdev("q", NULL));
    }
    free(q);
    free(r);
    free(c);
    free(cr);
}

typedef struct Shape {
    const char *opts;     /* qemu-img create -o */
    uint64_t size;
    uint32_t cs;
    bool zeroes;
} Shape;

static void test_write_shapes(void **state)
{
    if (!have_qemu) {
        skip();
    }
    static const Shape shapes[] = {
        { "cluster_size=65536", 64 << 20, 65536, true },
        { "cluster_size=4096,refcount_bits=1", 16 << 20, 4096, true },
        { "compat=0.10,cluster_size=65536", 32 << 20, 65536, true },
        { "cluster_size=2M,refcount_bits=64", 64 << 20, 2 << 20, true },
        { "cluster_size=1024,refcount_bits=8", 8 << 20, 1024, true },
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        char name[64], ref[64];
        snprintf(name, sizeof(name), "s%zu.qcow2", i);
        snprintf(ref, sizeof(ref), "s%zu.raw", i);
        char *p = path_of(name), *rp = path_of(ref);
        assert_int_equal(sh("qemu-img create -q -f qcow2 -o %s '%s' %" PRIu64
                            " && truncate -s %" PRIu64 " '%s'",
                            shapes[i].opts, p, shapes[i].size,
                            shapes[i].size, rp), 0);
        random_ops(name, ref, shapes[i].size, shapes[i].cs, 300,
                   shapes[i].zeroes);
        check_clean(name);
        check_same(ref, name);
        /* and again on the now populated image (in-place writes) */
        random_ops(name, ref, shapes[i].size, shapes[i].cs, 150,
                   shapes[i].zeroes);
        check_clean(name);
        check_same(ref, name);
        free(p);
        free(rp);
    }
}

/* 512-byte clusters and 64-bit refcounts: a refcount block covers only 64
 * clusters and takes the first for itself, so a 256 KiB write needs its
 * clusters in several allocations (one used to scan forever; found by
 * fuzz-qcow2-l1l2). */
static void test_large_write_small_refblocks(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("rb64.qcow2"), *rp = path_of("rb64.raw");
    assert_int_equal(sh("qemu-img create -q -f qcow2 -o cluster_size=512,"
                        "refcount_bits=64 '%s' 1M && truncate -s 1M '%s'",
                        p, rp), 0);
    const int64_t off = 1000, len = 256 * 1024;
    uint8_t *buf = malloc(len);
    for (int64_t k = 0; k < len; k++) {
        buf[k] = (uint8_t)(k * 7 + 1);
    }
    Img img;
    img_open_ok(&img, "rb64.qcow2", NULL);
    assert_int_equal(bdrv_pwrite(img.root, off, len, buf, 0), 0);
    img_close(&img);
    int rfd = open(rp, O_RDWR);
    assert_true(rfd >= 0);
    assert_int_equal(pwrite(rfd, buf, len, off), len);
    close(rfd);
    check_clean("rb64.qcow2");
    check_same("rb64.raw", "rb64.qcow2");
    free(buf);
    free(p);
    free(rp);
}

/* 512-byte clusters: a refcount block covers 128 KiB and the first
 * reftable cluster 8 MiB, so 16 MiB of data needs new blocks and a bigger
 * reftable. */
static void test_refcount_growth(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("g.qcow2"), *rp = path_of("g.raw");
    assert_int_equal(sh("qemu-img create -q -f qcow2 -o cluster_size=512 "
                        "'%s' 24M && truncate -s 24M '%s'", p, rp), 0);
    Img img;
    img_open_ok(&img, "g.qcow2", NULL);
    int rfd = open(rp, O_RDWR);
    uint8_t *buf = malloc(1 << 20);
    for (int i = 0; i < 18; i++) {
        memset(buf, 0x40 + i, 1 << 20);
        assert_int_equal(bdrv_pwrite(img.root, (int64_t)i << 20, 1 << 20, buf,
                                     0), 0);
        assert_int_equal(pwrite(rfd, buf, 1 << 20, (off_t)i << 20), 1 << 20);
    }
    img_close(&img);
    close(rfd);
    free(buf);
    check_clean("g.qcow2");
    check_same("g.raw", "g.qcow2");
    char *info = sh_out("qemu-img info --output=json '%s'", p);
    assert_non_null(strstr(info, "\"cluster-size\": 512"));
    free(info);
    free(p);
    free(rp);
}

/* base <- mid <- top, relative names; writes into top COW partial clusters
 * from the chain. */
static void test_backing_chain(void **state)
{
    if (!have_qemu) {
        skip();
    }
    assert_int_equal(sh("cd '%s' && mkdir -p sub && "
                        "qemu-img create -q -f qcow2 sub/base.qcow2 16M && "
                        "qemu-io -f qcow2 -c 'write -P 0x01 0 16M' "
                        "sub/base.qcow2 >/dev/null && "
                        "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "
                        "sub/mid.qcow2 && "
                        "qemu-io -f qcow2 -c 'write -P 0x02 1M 3M' "
                        "-c 'write -z 5M 1M' sub/mid.qcow2 >/dev/null && "
                        "qemu-img create -q -f qcow2 -b sub/mid.qcow2 "
                        "-F qcow2 top.qcow2 && "
                        "qemu-img convert -O raw top.qcow2 top.raw",
                        test_dir), 0);
    /* the backing node is opened from the header name */
    random_ops("top.qcow2", "top.raw", 16 << 20, 65536, 200, true);
    check_clean("top.qcow2");
    check_same("top.raw", "top.qcow2");

    /* block status: unallocated in top over the chain */
    Img img;
    img_open_ok(&img, "top.qcow2", NULL);
    assert_non_null(img.bs->backing);
    assert_string_equal(img.bs->backing_file, "sub/mid.qcow2");
    assert_string_equal(img.bs->backing_format, "qcow2");
    img_close(&img);

    /* backing: null reads zeros where top has nothing */
    img_open_ok(&img, "top.qcow2", "\"backing\": null");
    assert_null(img.bs->backing);
    img_close(&img);
}

static void test_block_status_and_zero(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("bs.qcow2");
    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 4M && qemu-io -f "
                        "qcow2 -c 'write -P 1 0 128k' -c 'write -z 1M 64k' "
                        "'%s' >/dev/null", p, p), 0);
    Img img;
    img_open_ok(&img, "bs.qcow2", NULL);
    Req r = { .c = img.root, .op = 2, .off = 0, .bytes = 4 << 20 };
    int st = run_req(&r);
    assert_true(st & BLK_STATUS_DATA);
    assert_true(st & BLK_STATUS_ALLOCATED);
    assert_int_equal(r.pnum, 128 * 1024);
    r.off = 1 << 20;
    st = run_req(&r);
    assert_true(st & BLK_STATUS_ZERO);
    assert_true(st & BLK_STATUS_ALLOCATED);
    assert_int_equal(r.pnum, 65536);
    r.off = 2 << 20;
    r.bytes = 1 << 20;
    st = run_req(&r);
    assert_false(st & BLK_STATUS_ALLOCATED);
    assert_true(st & BLK_STATUS_ZERO);

    /* write-zeroes over whole clusters makes zero clusters */
    Req z = { .c = img.root, .op = 0, .off = 0, .bytes = 65536,
              .flags = BLK_REQ_MAY_UNMAP };
    assert_int_equal(run_req(&z), 0);
    r.off = 0;
    r.bytes = 65536;
    st = run_req(&r);
    assert_true(st & BLK_STATUS_ZERO);
    img_close(&img);
    check_clean("bs.qcow2");
    char *map = sh_out("qemu-img map --output=json '%s'", p);
    assert_non_null(strstr(map, "\"start\": 0, \"length\": 65536, "
                                "\"depth\": 0, \"present\": true, "
                                "\"zero\": true, \"data\": false"));
    free(map);
    free(p);
}

static void expect_open_error(const char *name, bool ro, const char *want)
{
    Img img;
    Error *err = NULL;
    assert_false(img_open(&img, name, NULL, ro, &err));
    assert_non_null(err);
    bool found = strstr(error_get_pretty(err), want) != NULL;
    if (!found) {
        fprintf(stderr, "open %s: got '%s', want '%s'\n", name,
                error_get_pretty(err), want);
    }
    error_free(err);
    assert_true(found);
}

static void test_hostile_open(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("h.qcow2");
    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 4M && "
                        "printf '\\000\\000\\000\\077' | dd of='%s' bs=1 "
                        "seek=20 conv=notrunc status=none", p, p), 0);
    expect_open_error("h.qcow2", false, "Unsupported cluster size: 2^63");
    /* corrupt bit: refused read-write */
    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 4M && "
                        "printf '\\002' | dd of='%s' bs=1 seek=79 "
                        "conv=notrunc status=none", p, p), 0);
    expect_open_error("h.qcow2", false, "qcow2: Image is corrupt; cannot be "
                      "opened read/write");
    /* a backing loop */
    assert_int_equal(sh("cd '%s' && qemu-img create -q -f qcow2 la.qcow2 4M && "
                        "qemu-img create -q -f qcow2 -u -b la.qcow2 -F qcow2 "
                        "lb.qcow2 4M && qemu-img rebase -q -u -b lb.qcow2 "
                        "-F qcow2 -f qcow2 la.qcow2", test_dir), 0);
    /* read-only: read-write would first trip over the image locks */
    expect_open_error("la.qcow2", true, "too deep or has a loop");
    /* not qcow2 at all */
    assert_int_equal(sh("head -c 1M /dev/zero > '%s'", p), 0);
    expect_open_error("h.qcow2", false, "Image is not in qcow2 format");
    free(p);
}

typedef struct ChangeBacking {
    BlockNode *bs;
    const char *file, *fmt;
    int ret;
} ChangeBacking;

static void coroutine_fn change_backing_entry(void *opaque)
{
    ChangeBacking *cb = opaque;
    cb->ret = qcow2_co_change_backing_file(cb->bs, cb->file, cb->fmt);
}

static void test_change_backing(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("cb.qcow2");
    assert_int_equal(sh("cd '%s' && qemu-img create -q -f raw cbase.raw 4M && "
                        "qemu-img create -q -f qcow2 -b cbase.raw -F raw "
                        "cb.qcow2", test_dir), 0);
    Img img;
    img_open_ok(&img, "cb.qcow2", "\"backing\": null");
    ChangeBacking cb = { .bs = img.bs, .file = "other/name with space.raw",
                         .fmt = "raw" };
    co_run(change_backing_entry, &cb);
    assert_int_equal(cb.ret, 0);
    assert_string_equal(img.bs->backing_file, "other/name with space.raw");
    img_close(&img);
    assert_int_equal(sh("cd '%s' && mkdir -p other && "
                        "truncate -s 4M 'other/name with space.raw'",
                        test_dir), 0);
    char *info = sh_out("qemu-img info -U --output=json '%s'", p);
    assert_non_null(strstr(info, "\"backing-filename\": \"other/name with "
                                 "space.raw\""));
    free(info);
    check_clean("cb.qcow2");

    /* and removing it */
    img_open_ok(&img, "cb.qcow2", "\"backing\": null");
    cb = (ChangeBacking){ .bs = img.bs };
    co_run(change_backing_entry, &cb);
    assert_int_equal(cb.ret, 0);
    img_close(&img);
    info = sh_out("qemu-img info -U --output=json '%s'", p);
    assert_null(strstr(info, "backing-filename"));
    free(info);
    check_clean("cb.qcow2");
    free(p);
}

/* Lazy refcounts + a crash leave the dirty bit and stale refcounts: a
 * read-write open recounts and clears it. */
static void dirty_repair_case(const char *opts, const char *writes)
{
    char *p = path_of("lz.qcow2"), *r = path_of("lz.raw");
    assert_int_equal(sh("qemu-img create -q -f qcow2 -o lazy_refcounts=on,%s "
                        "'%s' 64M && (qemu-io -f qcow2 %s -c 'sigraise 9' "
                        "'%s' >/dev/null 2>&1; true) && qemu-img convert -U "
                        "-O raw '%s' '%s'", opts, p, writes, p, p, r), 0);
    char *out = sh_out("qemu-img check '%s' 2>&1", p);
    assert_non_null(strstr(out, "refcount=0 reference=1"));
    free(out);
    Img img;
    img_open_ok(&img, "lz.qcow2", NULL);
    uint8_t buf[4096];
    memset(buf, 0x55, sizeof(buf));
    assert_int_equal(bdrv_pwrite(img.root, 20 << 20, sizeof(buf), buf, 0), 0);
    img_close(&img);
    int fd = open(r, O_WRONLY);
    assert_int_equal(pwrite(fd, buf, sizeof(buf), 20 << 20), sizeof(buf));
    close(fd);
    check_clean("lz.qcow2");
    check_same("lz.raw", "lz.qcow2");
    char *info = sh_out("qemu-img info --output=json '%s'", p);
    assert_non_null(strstr(info, "\"dirty-flag\": false"));
    free(info);
    free(p);
    free(r);
}

/* Lazy refcounts + a crash leave the dirty bit and stale refcounts: a
 * read-write open recounts and clears it. */
static void test_dirty_repair(void **state)
{
    if (!have_qemu) {
        skip();
    }
    dirty_repair_case("cluster_size=65536", "-c 'write -P 0x33 0 1M' "
                      "-c 'write -P 0x44 10M 300k'");
    /* small clusters: the counted structures span many refcount blocks */
    dirty_repair_case("cluster_size=512", "-c 'write -P 0x33 0 9M' "
                      "-c 'write -P 0x44 30M 300k'");
}

/* Many writers at once into the same unallocated clusters (disjoint
 * bytes), over a backing file: each cluster is allocated once, nobody's
 * bytes are lost to another's copy-on-write. */
typedef struct ConcWriter {
    BlockChild *c;
    int64_t off;
    uint8_t buf[4096];
    int ret;
    int *pending;
} ConcWriter;

static void coroutine_fn conc_entry(void *opaque)
{
    ConcWriter *w = opaque;
    IOVector v;
    iov_vec_init_buf(&v, w->buf, sizeof(w->buf));
    w->ret = bdrv_co_pwritev(w->c, w->off, sizeof(w->buf), &v, 0);
    if (--*w->pending == 0) {
        aio_wait_kick();
    }
}

static void test_concurrent_writes(void **state)
{
    if (!have_qemu) {
        skip();
    }
    assert_int_equal(sh("cd '%s' && qemu-img create -q -f qcow2 cbase.qcow2 "
                        "8M && qemu-io -f qcow2 -c 'write -P 0x99 0 8M' "
                        "cbase.qcow2 >/dev/null && qemu-img create -q -f qcow2 "
                        "-b cbase.qcow2 -F qcow2 conc.qcow2 && "
                        "qemu-img convert -O raw conc.qcow2 conc.raw",
                        test_dir), 0);
    enum { N = 256 };
    static ConcWriter w[N];
    int pending = N;
    Img img;
    img_open_ok(&img, "conc.qcow2", NULL);
    char *rp = path_of("conc.raw");
    int rfd = open(rp, O_RDWR);
    for (int i = 0; i < N; i++) {
        /* 16 writers per cluster, every other 4k slot, two rounds */
        int cl = (i / 8) % 16, slot = (i % 8) * 2 + (i / 128);
        w[i].c = img.root;
        w[i].off = (int64_t)cl * 65536 + slot * 4096;
        w[i].pending = &pending;
        memset(w[i].buf, i + 1, sizeof(w[i].buf));
        assert_int_equal(pwrite(rfd, w[i].buf, 4096, w[i].off), 4096);
    }
    for (int i = 0; i < N; i++) {
        aio_co_enter(aio_main_context(), coroutine_create(conc_entry, &w[i]));
    }
    TEST_WAIT_WHILE(aio_main_context(), pending > 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(w[i].ret, 0);
    }
    img_close(&img);
    close(rfd);
    free(rp);
    check_clean("conc.qcow2");
    check_same("conc.raw", "conc.qcow2");
    /* 16 data clusters + 1 L2 table: nothing allocated twice */
    char *p = path_of("conc.qcow2");
    char *out = sh_out("qemu-img check --output=json '%s'", p);
    assert_non_null(strstr(out, "\"allocated-clusters\": 16"));
    free(out);
    free(p);
}

/* cache.no-flush skips flushes, not the metadata: close writes it. */
static void test_no_flush_close(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("nf.qcow2");
    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 4M", p), 0);
    Img img;
    img_open_ok(&img, "nf.qcow2", "\"cache\": {\"no-flush\": true}");
    uint8_t buf[65536];
    memset(buf, 0x6b, sizeof(buf));
    assert_int_equal(bdrv_pwrite(img.root, 1 << 20, sizeof(buf), buf, 0), 0);
    bdrv_detach_child(img.root);
    assert_true(bdrv_del_blockdev("q", NULL));
    check_clean("nf.qcow2");
    char *out = sh_out("qemu-io -f qcow2 -c 'read -P 0x6b 1M 64k' '%s'", p);
    assert_null(strstr(out, "failed"));
    assert_non_null(strstr(out, "read 65536/65536"));
    free(out);
    free(p);
}

typedef struct CoCall {
    BlockChild *c;
    int64_t size;
    const Qcow2CreateOpts *create;
    Error *err;
    int ret;
} CoCall;

static void coroutine_fn truncate_entry(void *opaque)
{
    CoCall *cc = opaque;
    if (cc->create) {
        cc->ret = qcow2_co_create(cc->c, cc->create, &cc->err);
    } else {
        cc->ret = bdrv_co_truncate(cc->c, cc->size, &cc->err);
    }
}

static int co_call(CoCall *cc)
{
    co_run(truncate_entry, cc);
    return cc->ret;
}

/* Growing moves the L1 table when the new size needs more entries. */
static void test_truncate_grow(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("tr.qcow2");
    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 1M && qemu-io -f "
                        "qcow2 -c 'write -P 0x21 0 64k' '%s' >/dev/null",
                        p, p), 0);
    Img img;
    img_open_ok(&img, "tr.qcow2", NULL);
    bdrv_detach_child(img.root);
    img.root = bdrv_root_attach_child(img.bs, "root", &test_user_class, NULL,
                                      BLK_PERM_CONSISTENT_READ |
                                      BLK_PERM_WRITE | BLK_PERM_RESIZE,
                                      BLK_PERM_ALL, NULL);
    assert_non_null(img.root);
    CoCall cc = { .c = img.root, .size = 1000 };
    assert_true(co_call(&cc) < 0);
    assert_string_equal(error_get_pretty(cc.err),
                        "The new size must be a multiple of 512");
    error_free(cc.err);
    cc = (CoCall){ .c = img.root, .size = 3ll << 30 };
    assert_int_equal(co_call(&cc), 0);
    assert_int_equal(bdrv_getlength(img.bs), 3ll << 30);
    uint8_t buf[4096];
    memset(buf, 0x42, sizeof(buf));
    assert_int_equal(bdrv_pwrite(img.root, (2ll << 30) + 512, sizeof(buf),
                                 buf, 0), 0);
    img_close(&img);
    check_clean("tr.qcow2");
    char *out = sh_out("qemu-io -f qcow2 -c 'read -P 0x21 0 64k' "
                       "-c 'read -P 0x42 2097152.5k 4k' "
                       "-c 'read -P 0 1M 1M' '%s'; qemu-img info '%s'", p, p);
    assert_null(strstr(out, "failed"));
    assert_non_null(strstr(out, "virtual size: 3 GiB"));
    free(out);
    free(p);
}

/* Creation through a block child (what blockdev-create will use). */
static void test_create_on_child(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("new.qcow2");
    assert_int_equal(sh("head -c 300k /dev/urandom > '%s' && truncate -s 5G "
                        "'%s/b.raw'", p, test_dir), 0);
    char *js = NULL;
    assert_true(asprintf(&js, "{\"driver\": \"file\", \"node-name\": "
                         "\"f\", \"filename\": \"%s\"}", p) > 0);
    json_t *opts = json_loads(js, 0, NULL);
    free(js);
    BlockNode *f = bdrv_open_blockdev(opts, false, NULL);
    json_decref(opts);
    assert_non_null(f);
    BlockChild *c = bdrv_root_attach_child(f, "root", &test_user_class, NULL,
                                           BLK_PERM_CONSISTENT_READ |
                                           BLK_PERM_WRITE | BLK_PERM_RESIZE,
                                           BLK_PERM_ALL, NULL);
    assert_non_null(c);
    Qcow2CreateOpts o = { .size = 5ull << 30, .cluster_size = 4096,
                          .refcount_bits = 4, .backing_file = "b.raw",
                          .backing_format = "raw" };
    CoCall cc = { .c = c, .create = &o };
    if (co_call(&cc) < 0) {
        fail_msg("create: %s", error_get_pretty(cc.err));
    }
    bdrv_detach_child(c);
    assert_true(bdrv_del_blockdev("f", NULL));
    char *out = sh_out("qemu-img check -U '%s' 2>&1; qemu-img info -U "
                       "--output=json '%s'", p, p);
    if (!strstr(out, "No errors were found")) {
        fail_msg("%s", out);
    }
    assert_non_null(strstr(out, "\"virtual-size\": 5368709120"));
    assert_non_null(strstr(out, "\"refcount-bits\": 4"));
    assert_non_null(strstr(out, "\"backing-filename\": \"b.raw\""));
    free(out);
    free(p);
}

/* Persistent bitmaps are maintained (qcow2-bitmap.c): a clean close stores
 * them and clears in_use, and the image stays clean. */
static void test_bitmaps_autoclear(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("bm.qcow2");
    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 16M && "
                        "qemu-img bitmap --add '%s' bm0", p, p), 0);
    Img img;
    img_open_ok(&img, "bm.qcow2", NULL);
    uint8_t buf[4096];
    memset(buf, 0x17, sizeof(buf));
    assert_int_equal(bdrv_pwrite(img.root, 0, sizeof(buf), buf, 0), 0);
    img_close(&img);
    char *out = sh_out("qemu-img check '%s' 2>&1; qemu-img info '%s' 2>&1",
                       p, p);
    if (!strstr(out, "No errors were found") || strstr(out, "in-use") ||
        !strstr(out, "name: bm0") || strstr(out, "warning")) {
        fail_msg("%s", out);
    }
    free(out);
    free(p);
}

/* Damaged tables past the header: reads fail with EIO, writes never land
 * on metadata. */
static void test_hostile_tables(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("ht.qcow2");
    uint8_t buf[4096], l1a[512], l1b[512];
    /* default layout: L1 at 0x30000, the first L2 table at 0x40000 */
    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 4M && qemu-io -f "
                        "qcow2 -c 'write -P 1 0 64k' '%s' >/dev/null", p, p),
                     0);
    char *m = sh_out("qemu-img map --output=json '%s'", p);
    assert_non_null(strstr(m, "\"offset\": 327680"));   /* data at 0x50000 */
    free(m);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    /* L2 entry 0 now claims the L1 table's cluster as its data */
    static const uint8_t onto_l1[8] = { 0x80, 0, 0, 0, 0, 0x03, 0, 0 };
    assert_int_equal(pwrite(fd, onto_l1, 8, 0x40000), 8);
    assert_int_equal(pread(fd, l1a, sizeof(l1a), 0x30000), sizeof(l1a));
    close(fd);

    Img img;
    img_open_ok(&img, "ht.qcow2", NULL);
    memset(buf, 0x77, sizeof(buf));
    assert_int_equal(bdrv_pwrite(img.root, 0, sizeof(buf), buf, 0), -EIO);
    /* reading it is harmless */
    assert_int_equal(bdrv_pread(img.root, 0, sizeof(buf), buf, 0), 0);
    bdrv_detach_child(img.root);
    assert_true(bdrv_del_blockdev("q", NULL));
    fd = open(p, O_RDONLY);
    assert_int_equal(pread(fd, l1b, sizeof(l1b), 0x30000), sizeof(l1b));
    close(fd);
    assert_memory_equal(l1a, l1b, sizeof(l1a));

    /* an L1 entry past the end of the file: EIO, not a crash */
    char *p2 = path_of("ht2.qcow2");
    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 1G", p2), 0);
    fd = open(p2, O_RDWR);
    assert_true(fd >= 0);
    static const uint8_t far[8] = { 0x80, 0, 0, 0x10, 0, 0, 0, 0 };
    assert_int_equal(pwrite(fd, far, 8, 0x30008), 8);
    close(fd);
    free(p2);
    img_open_ok(&img, "ht2.qcow2", NULL);
    assert_int_equal(bdrv_pread(img.root, 512 << 20, sizeof(buf), buf, 0),
                     -EIO);
    assert_int_equal(bdrv_pread(img.root, 0, sizeof(buf), buf, 0), 0);
    bdrv_detach_child(img.root);
    assert_true(bdrv_del_blockdev("q", NULL));
    free(p);
}

/* Internal snapshots (qemu-img snapshot -c): writes copy shared L2 tables
 * and clusters; the snapshot keeps its data. */
static void test_internal_snapshot(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("snap.qcow2"), *r = path_of("snap.raw");
    char *sr = path_of("snap0.raw");
    assert_int_equal(sh("qemu-img create -q -f qcow2 '%s' 16M && qemu-io -f "
                        "qcow2 -c 'write -P 0x31 0 4M' -c 'write -c -P 0x32 "
                        "8M 64k' '%s' >/dev/null && qemu-img snapshot -c s0 "
                        "'%s' && qemu-img convert -O raw '%s' '%s' && "
                        "cp '%s' '%s'", p, p, p, p, sr, sr, r), 0);
    random_ops("snap.qcow2", "snap.raw", 16 << 20, 65536, 120, true);
    check_clean("snap.qcow2");
    check_same("snap.raw", "snap.qcow2");
    /* the snapshot still reads as it was */
    char *sp = path_of("snap-s0.raw");
    assert_int_equal(sh("qemu-img convert -l snapshot.name=s0 -O raw '%s' "
                        "'%s' && cmp -s '%s' '%s'", p, sp, sp, sr), 0);
    free(sp);
    free(p);
    free(r);
    free(sr);
}

/* Snapshots taken and deleted by the driver (through block/snapshot.h):
 * random writes, zeroes and discards afterwards copy what is shared,
 * qemu reads each snapshot as it was, and deleting them leaves the image
 * clean. */
static void test_snapshot_create_delete(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("sn.qcow2"), *r = path_of("sn.raw");
    char *ra = path_of("sn-a.raw"), *rs = path_of("sn-s.raw");
    BdrvSnapshotInfo *list, info;
    Error *err = NULL;
    Img img;

    assert_int_equal(sh("qemu-img create -q -f qcow2 -o cluster_size=4096 "
                        "'%s' 16M && qemu-io -f qcow2 -c 'write -P 0x31 0 "
                        "6M' -c 'write -c -P 0x32 8M 256k' '%s' >/dev/null "
                        "&& qemu-img convert -O raw '%s' '%s' && cp '%s' "
                        "'%s'", p, p, p, ra, ra, r), 0);
    img_open_ok(&img, "sn.qcow2", NULL);
    assert_true(bdrv_snapshot_supported(img.bs));
    assert_int_equal(bdrv_snapshot_create(img.bs, "a", &info, &err), 0);
    assert_string_equal(info.id, "1");
    assert_string_equal(info.name, "a");
    assert_int_equal(info.icount, -1);
    img_close(&img);
    random_ops("sn.qcow2", "sn.raw", 16 << 20, 4096, 150, true);
    assert_int_equal(sh("cp '%s' '%s'", r, rs), 0);
    img_open_ok(&img, "sn.qcow2", NULL);
    assert_int_equal(bdrv_snapshot_create(img.bs, "s", NULL, &err), 0);
    assert_int_equal(bdrv_snapshot_list(img.bs, &list), 2);
    assert_string_equal(list[1].id, "2");
    free(list);
    assert_true(bdrv_snapshot_find(img.bs, "2", "s", NULL));
    assert_false(bdrv_snapshot_find(img.bs, "1", "s", NULL));
    img_close(&img);
    random_ops("sn.qcow2", "sn.raw", 16 << 20, 4096, 150, true);
    check_clean("sn.qcow2");
    check_same("sn.raw", "sn.qcow2");
    char *out = path_of("sn-out.raw");
    assert_int_equal(sh("qemu-img convert -l snapshot.name=a -O raw '%s' "
                        "'%s' && cmp -s '%s' '%s' && qemu-img convert -l "
                        "snapshot.name=s -O raw '%s' '%s' && cmp -s '%s' "
                        "'%s'", p, out, out, ra, p, out, out, rs), 0);
    img_open_ok(&img, "sn.qcow2", NULL);
    assert_int_equal(bdrv_snapshot_delete(img.bs, NULL, "a", &info, &err), 0);
    assert_string_equal(info.id, "1");
    assert_int_equal(bdrv_snapshot_delete(img.bs, NULL, "a", NULL, &err),
                     -ENOENT);
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_snapshot_delete(img.bs, "2", NULL, NULL, &err), 0);
    assert_int_equal(bdrv_snapshot_list(img.bs, &list), 0);
    free(list);
    img_close(&img);
    check_clean("sn.qcow2");
    check_same("sn.raw", "sn.qcow2");
    assert_int_equal(sh("test -z \"$(qemu-img snapshot -l '%s')\"", p), 0);
    free(out);
    free(p);
    free(r);
    free(ra);
    free(rs);
}

/* Writes over compressed clusters: copy-on-write from the inflated
 * cluster, and the compressed bytes' host clusters lose a reference each
 * (several compressed clusters share one host cluster). */
static void test_write_over_compressed(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("wc.qcow2"), *r = path_of("wc.raw");
    assert_int_equal(sh("head -c 3M /dev/urandom | base64 -w 100 | head -c "
                        "8M > '%s' && truncate -s 8M '%s' && qemu-img convert "
                        "-q -c -f raw -O qcow2 -o cluster_size=4096 '%s' '%s'",
                        r, r, r, p), 0);
    random_ops("wc.qcow2", "wc.raw", 8 << 20, 4096, 300, true);
    check_clean("wc.qcow2");
    check_same("wc.raw", "wc.qcow2");
    free(p);
    free(r);
}

/* Tiny caches: dirty L2 tables and refcount blocks are evicted (written
 * back with their dependencies) all the time. */
static void test_small_caches(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = path_of("sc.qcow2"), *r = path_of("sc.raw");
    assert_int_equal(sh("qemu-img create -q -f qcow2 -o cluster_size=1024 "
                        "'%s' 32M && truncate -s 32M '%s'", p, r), 0);
    random_ops_extra = "\"l2-cache-size\": 2048, "
                       "\"refcount-cache-size\": 1024";
    random_ops("sc.qcow2", "sc.raw", 32 << 20, 1024, 400, true);
    random_ops_extra = NULL;
    check_clean("sc.qcow2");
    check_same("sc.raw", "sc.qcow2");
    free(p);
    free(r);
}

/* Reads name (read-only) through the driver and compares with raw. */
static void compare_read(const char *name, const char *raw)
{
    Img img;
    Error *err = NULL;
    if (!img_open(&img, name, NULL, true, &err)) {
        fail_msg("%s", error_get_pretty(err));
    }
    char *rp = path_of(raw);
    int fd = open(rp, O_RDONLY);
    assert_true(fd >= 0);
    int64_t len = bdrv_getlength(img.bs);
    uint8_t *a = malloc(1 << 20), *b = malloc(1 << 20);
    for (int64_t off = 0; off < len; off += (1 << 20) - 333) {
        int64_t n = (1 << 20) - 333;
        if (off + n > len) {
            n = len - off;
        }
        assert_int_equal(bdrv_pread(img.root, off, n, a, 0), 0);
        assert_int_equal(pread(fd, b, (size_t)n, off), n);
        if (memcmp(a, b, (size_t)n) != 0) {
            fail_msg("%s differs from %s in [%" PRId64 ", +%" PRId64 ")",
                     name, raw, off, n);
        }
    }
    free(a);
    free(b);
    close(fd);
    free(rp);
    bdrv_detach_child(img.root);
    assert_true(bdrv_del_blockdev("q", NULL));
}

/* Extended L2 entries (subclusters): each subcluster allocated, zero or
 * falling through to the backing file; then random writes over them. */
static void test_extended_l2_read(void **state)
{
    if (!have_qemu) {
        skip();
    }
    assert_int_equal(sh("cd '%s' && qemu-img create -q -f qcow2 xbase.qcow2 "
                        "4M && qemu-io -f qcow2 -c 'write -P 0xb0 0 4M' "
                        "xbase.qcow2 >/dev/null && qemu-img create -q -f "
                        "qcow2 -o extended_l2=on,cluster_size=65536 -b "
                        "xbase.qcow2 -F qcow2 x.qcow2 && qemu-io -f qcow2 "
                        "-c 'write -P 1 0 2k' -c 'write -z 4k 2k' "
                        "-c 'write -P 2 9000 100' -c 'write -P 3 130k 70k' "
                        "-c 'write -z 1M 64k' -c 'write -P 4 2M 1k' "
                        "-c 'write -z -u 3M 128k' x.qcow2 >/dev/null && "
                        "qemu-img convert -O raw x.qcow2 x.raw", test_dir),
                     0);
    compare_read("x.qcow2", "x.raw");
    /* and writes: whole clusters allocated, copy-on-write per subcluster */
    random_ops("x.qcow2", "x.raw", 4 << 20, 65536, 250, true);
    check_clean("x.qcow2");
    check_same("x.raw", "x.qcow2");
    compare_read("x.qcow2", "x.raw");
}

SCRATCH_GROUP_FIXTURES(test_dir)

int main(void)
{
    have_qemu = qemu_tools_installed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_qemu_written),
        cmocka_unit_test(test_write_shapes),
        cmocka_unit_test(test_refcount_growth),
        cmocka_unit_test(test_large_write_small_refblocks),
        cmocka_unit_test(test_backing_chain),
        cmocka_unit_test(test_block_status_and_zero),
        cmocka_unit_test(test_hostile_open),
        cmocka_unit_test(test_change_backing),
        cmocka_unit_test(test_dirty_repair),
        cmocka_unit_test(test_concurrent_writes),
        cmocka_unit_test(test_no_flush_close),
        cmocka_unit_test(test_truncate_grow),
        cmocka_unit_test(test_create_on_child),
        cmocka_unit_test(test_bitmaps_autoclear),
        cmocka_unit_test(test_hostile_tables),
        cmocka_unit_test(test_internal_snapshot),
        cmocka_unit_test(test_snapshot_create_delete),
        cmocka_unit_test(test_write_over_compressed),
        cmocka_unit_test(test_small_caches),
        cmocka_unit_test(test_extended_l2_read),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
