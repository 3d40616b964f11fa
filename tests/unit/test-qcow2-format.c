/*
 * qcow2 format code without I/O: header parse/validate/serialize, L1/L2
 * arithmetic, L2 descriptors, refcount entries, image creation (checked
 * with qemu-img when it is installed).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "block/drivers/qcow2/qcow2-format.h"
#include "tests/common/memfile.h"

static MemFile make_image(const Qcow2CreateOpts *o)
{
    MemFile m = { NULL, 0 };
    Error *err = NULL;
    bool ok = qcow2_create_image(o, memfile_write, &m, &err);
    if (!ok) {
        fail_msg("create failed: %s", error_get_pretty(err));
    }
    return m;
}

/* Parses m, expecting failure with exactly `msg`. */
static void expect_parse_error(const MemFile *m, const char *msg)
{
    Qcow2Header h;
    Error *err = NULL;
    bool ok = qcow2_header_parse(m->data, m->len, m->len, &h, &err);
    assert_false(ok);
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err), msg);
    error_free(err);
}

/* ---- geometry ---- */

static void test_geometry(void **state)
{
    Qcow2Geom g;

    qcow2_geom_init(&g, 16, 4);
    assert_int_equal(g.cluster_size, 65536);
    assert_int_equal(g.l2_size, 8192);
    assert_int_equal(g.refcount_bits, 16);
    assert_int_equal(g.rb_bits, 15);            /* 32768 entries */
    uint64_t off = 5ull * 8192 * 65536 + 17 * 65536 + 123;
    assert_int_equal(qcow2_l1_index(&g, off), 5);
    assert_int_equal(qcow2_l2_index(&g, off), 17);
    assert_int_equal(qcow2_offset_in_cluster(&g, off), 123);
    assert_int_equal(qcow2_l1_entries_for(&g, 0), 0);
    assert_int_equal(qcow2_l1_entries_for(&g, 1), 1);
    assert_int_equal(qcow2_l1_entries_for(&g, 8192ull * 65536), 1);
    assert_int_equal(qcow2_l1_entries_for(&g, 8192ull * 65536 + 1), 2);

    qcow2_geom_init(&g, 9, 0);
    assert_int_equal(g.l2_size, 64);
    assert_int_equal(g.rb_bits, 12);            /* 4096 1-bit entries */
    qcow2_geom_init(&g, 21, 6);
    assert_int_equal(g.l2_size, 262144);
    assert_int_equal(g.rb_bits, 18);
    assert_int_equal(qcow2_reftable_index(&g, 3ull << 39), 3);
    assert_int_equal(qcow2_refblock_index(&g, (3ull << 39) + (7ull << 21)),
                     7);
}

/* ---- L2 descriptors ---- */

static void test_l2_decode(void **state)
{
    Qcow2Geom g;
    Qcow2L2Info i;
    Error *err = NULL;

    qcow2_geom_init(&g, 16, 4);
    assert_true(qcow2_l2_decode(&g, 3, 0, &i, &err));
    assert_int_equal(i.type, QCOW2_CLUSTER_UNALLOCATED);
    assert_true(qcow2_l2_decode(&g, 3, 1, &i, &err));
    assert_int_equal(i.type, QCOW2_CLUSTER_ZERO_PLAIN);
    assert_true(qcow2_l2_decode(&g, 3, QCOW2_OFLAG_COPIED | 0x50000 | 1, &i,
                                &err));
    assert_int_equal(i.type, QCOW2_CLUSTER_ZERO_ALLOC);
    assert_int_equal(i.host_offset, 0x50000);
    assert_true(qcow2_l2_decode(&g, 3, QCOW2_OFLAG_COPIED | 0x70000, &i,
                                &err));
    assert_int_equal(i.type, QCOW2_CLUSTER_NORMAL);
    assert_true(i.copied);
    assert_int_equal(i.host_offset, 0x70000);

    /* v2 has no zero flag */
    assert_false(qcow2_l2_decode(&g, 2, 1, &i, &err));
    assert_string_equal(error_get_pretty(err),
                        "Zero cluster flag in a version 2 image");
    error_free_or_abort_clear(&err);
    /* unaligned and reserved bits */
    assert_false(qcow2_l2_decode(&g, 3, 0x70200, &i, &err));
    assert_string_equal(error_get_pretty(err),
                        "Cluster allocation offset 0x70200 unaligned");
    error_free_or_abort_clear(&err);
    assert_false(qcow2_l2_decode(&g, 3, 0x70000 | 2, &i, &err));
    error_free_or_abort_clear(&err);
    assert_false(qcow2_l2_decode(&g, 3, 0x70000 | (1ull << 56), &i, &err));
    error_free_or_abort_clear(&err);
}

static void test_l2_compressed(void **state)
{
    static const uint32_t bits[] = { 9, 12, 16, 20, 21 };
    for (size_t k = 0; k < sizeof(bits) / sizeof(bits[0]); k++) {
        Qcow2Geom g;
        Qcow2L2Info i;
        Error *err = NULL;
        qcow2_geom_init(&g, bits[k], 4);
        assert_int_equal(g.csize_shift, 62 - (bits[k] - 8));
        /* a compressed run starting mid-sector and spanning sectors */
        uint64_t host = 0x123456789ull & g.coffset_mask;
        host |= 0x1a3;
        uint64_t len = g.cluster_size - 7;
        uint64_t e = qcow2_l2_make_compressed(&g, host, len);
        assert_true(qcow2_l2_decode(&g, 3, e, &i, &err));
        assert_int_equal(i.type, QCOW2_CLUSTER_COMPRESSED);
        assert_int_equal(i.host_offset, host);
        assert_false(i.copied);
        assert_true(i.compressed_bytes >= len);
        assert_true(i.compressed_bytes < len + 512);
        /* ends exactly at a sector boundary */
        assert_int_equal((i.host_offset + i.compressed_bytes) % 512, 0);
    }
    /* A hand-built 64k descriptor: x = 54, 3 extra sectors, offset 0x10200 */
    Qcow2Geom g;
    Qcow2L2Info i;
    qcow2_geom_init(&g, 16, 4);
    uint64_t e = QCOW2_OFLAG_COMPRESSED | (3ull << 54) | 0x10200;
    assert_true(qcow2_l2_decode(&g, 2, e, &i, NULL));
    assert_int_equal(i.host_offset, 0x10200);
    assert_int_equal(i.compressed_bytes, 4 * 512);
}

/* ---- refcounts ---- */

static void test_refcounts(void **state)
{
    for (uint32_t order = 0; order <= 6; order++) {
        Qcow2Geom g;
        qcow2_geom_init(&g, 9, order);
        uint8_t block[512];
        uint64_t n = 1ull << g.rb_bits;
        uint64_t max = qcow2_refcount_max(&g);
        memset(block, 0, sizeof(block));
        assert_int_equal(n * g.refcount_bits, 4096);
        for (uint64_t i = 0; i < n; i++) {
            assert_true(qcow2_refcount_set(&g, block, i, (i * 7 + 1) & max));
        }
        for (uint64_t i = 0; i < n; i++) {
            assert_int_equal(qcow2_refcount_get(&g, block, i),
                             (i * 7 + 1) & max);
        }
        /* neighbours unchanged when one entry changes */
        assert_true(qcow2_refcount_set(&g, block, 5, max));
        assert_int_equal(qcow2_refcount_get(&g, block, 4), (4 * 7 + 1) & max);
        assert_int_equal(qcow2_refcount_get(&g, block, 5), max);
        assert_int_equal(qcow2_refcount_get(&g, block, 6), (6 * 7 + 1) & max);
        if (order < 6) {
            assert_false(qcow2_refcount_set(&g, block, 5, max + 1));
        }
    }
    /* Layout: 1-bit entries fill bytes from the low bit; 16-bit are BE */
    Qcow2Geom g;
    uint8_t b[8] = { 0 };
    qcow2_geom_init(&g, 9, 0);
    qcow2_refcount_set(&g, b, 0, 1);
    qcow2_refcount_set(&g, b, 9, 1);
    assert_int_equal(b[0], 0x01);
    assert_int_equal(b[1], 0x02);
    qcow2_geom_init(&g, 9, 4);
    memset(b, 0, sizeof(b));
    qcow2_refcount_set(&g, b, 1, 0x1234);
    assert_int_equal(b[2], 0x12);
    assert_int_equal(b[3], 0x34);
}

/* ---- creation + parse round trip ---- */

static void test_create_parse(void **state)
{
    Qcow2CreateOpts o = {
        .size = 1ull << 30,
        .backing_file = "../base image.qcow2",
        .backing_format = "qcow2",
        .lazy_refcounts = true,
        .refcount_bits = 8,
    };
    MemFile m = make_image(&o);
    Qcow2Header h;
    Error *err = NULL;

    assert_true(qcow2_header_parse(m.data, m.len, m.len, &h, &err));
    assert_int_equal(h.version, 3);
    assert_int_equal(h.cluster_bits, 16);
    assert_int_equal(h.size, 1ull << 30);
    assert_int_equal(h.refcount_order, 3);
    assert_int_equal(h.l1_size, 2);
    assert_int_equal(h.compatible_features, QCOW2_COMPAT_LAZY_REFCOUNTS);
    assert_int_equal(h.header_length, 112);
    assert_string_equal(h.backing_file, "../base image.qcow2");
    assert_string_equal(h.backing_format, "qcow2");
    assert_int_equal(h.nb_features, 8);
    assert_string_equal(qcow2_feature_name(&h, 0, 4), "extended L2 entries");
    assert_null(qcow2_feature_name(&h, 0, 9));

    /* refcounts of the metadata clusters are 1, the rest 0 */
    Qcow2Geom g;
    qcow2_geom_init(&g, h.cluster_bits, h.refcount_order);
    uint64_t rb = be64_get(m.data + h.refcount_table_offset);
    assert_int_not_equal(rb, 0);
    uint64_t used = m.len / g.cluster_size;
    for (uint64_t c = 0; c < used + 3; c++) {
        assert_int_equal(qcow2_refcount_get(&g, m.data + rb, c),
                         c < used ? 1 : 0);
    }
    qcow2_header_free(&h);
    free(m.data);
}

static void test_create_v2_small_clusters(void **state)
{
    Qcow2CreateOpts o = { .size = 200ull << 20, .cluster_size = 512,
                          .version = 2 };
    MemFile m = make_image(&o);
    Qcow2Header h;
    assert_true(qcow2_header_parse(m.data, m.len, m.len, &h, NULL));
    assert_int_equal(h.version, 2);
    assert_int_equal(h.cluster_bits, 9);
    assert_int_equal(h.refcount_order, 4);
    assert_int_equal(h.nb_features, 0);
    /* 200 MiB / (512 * 64) = 6400 L1 entries: 100 clusters of L1 */
    assert_int_equal(h.l1_size, 6400);
    qcow2_header_free(&h);
    free(m.data);
}

static void test_create_refused(void **state)
{
    struct {
        Qcow2CreateOpts o;
        const char *msg;
    } cases[] = {
        { { .size = 1 << 20, .cluster_size = 1000 },
          "Cluster size must be a power of two between 512 and 2048k" },
        { { .size = 1 << 20, .cluster_size = 4u << 20 },
          "Cluster size must be a power of two between 512 and 2048k" },
        { { .size = 1 << 20, .refcount_bits = 128 },
          "Refcount width must be a power of two and may not exceed 64 "
          "bits" },
        { { .size = 1 << 20, .version = 2, .refcount_bits = 8 },
          "Different refcount widths than 16 bits require compatibility "
          "level 1.1 or above (use version=v3 or greater)" },
        { { .size = 1 << 20, .version = 2, .lazy_refcounts = true },
          "Lazy refcounts only supported with compatibility level 1.1 and "
          "above (use version=v3 or greater)" },
        { { .size = 1000 }, "Image size must be a multiple of 512 bytes" },
        { { .size = 1 << 20, .backing_format = "raw" },
          "Backing format cannot be used without backing file" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        MemFile m = { NULL, 0 };
        Error *err = NULL;
        assert_false(qcow2_create_image(&cases[i].o, memfile_write, &m, &err));
        assert_string_equal(error_get_pretty(err), cases[i].msg);
        error_free(err);
        assert_null(m.data);
    }
}

/* Unknown extensions and header tail bytes survive a rewrite. */
static void test_serialize_preserves(void **state)
{
    Qcow2CreateOpts o = { .size = 64 << 20 };
    MemFile m = make_image(&o);
    Qcow2Header h;
    uint8_t *cl = calloc(1, 65536);

    /* insert an unknown extension by rewriting with one added */
    assert_true(qcow2_header_parse(m.data, m.len, m.len, &h, NULL));
    h.raw_exts = calloc(1, sizeof(*h.raw_exts));
    h.raw_exts[0].type = 0x12345678;
    h.raw_exts[0].len = 5;
    h.raw_exts[0].data = (uint8_t *)strdup("hello");
    h.nb_raw_exts = 1;
    free(h.tail);
    h.tail_len = 7;
    h.tail = calloc(1, 7);
    h.tail[3] = 0xab;
    qcow2_header_set_backing(&h, "b.raw", "raw");
    assert_true(qcow2_header_serialize(&h, cl, 65536, NULL));
    qcow2_header_free(&h);
    memcpy(m.data, cl, 65536);

    assert_true(qcow2_header_parse(m.data, m.len, m.len, &h, NULL));
    assert_int_equal(h.header_length, 112);
    assert_int_equal(h.tail_len, 7);
    assert_int_equal(h.tail[3], 0xab);
    assert_int_equal(h.nb_raw_exts, 1);
    assert_int_equal(h.raw_exts[0].type, 0x12345678);
    assert_memory_equal(h.raw_exts[0].data, "hello", 5);
    assert_string_equal(h.backing_file, "b.raw");
    assert_string_equal(h.backing_format, "raw");

    /* and removing the backing file */
    qcow2_header_set_backing(&h, NULL, NULL);
    assert_true(qcow2_header_serialize(&h, cl, 65536, NULL));
    assert_int_equal(be64_get(cl + 8), 0);
    qcow2_header_free(&h);
    memcpy(m.data, cl, 65536);
    assert_true(qcow2_header_parse(m.data, m.len, m.len, &h, NULL));
    assert_null(h.backing_file);
    assert_null(h.backing_format);
    assert_int_equal(h.nb_raw_exts, 1);
    qcow2_header_free(&h);
    free(cl);
    free(m.data);
}

/* ---- hostile headers ---- */

typedef struct Mutation {
    unsigned off, width;
    uint64_t val;
    const char *msg;
} Mutation;

static void test_hostile(void **state)
{
    static const Mutation muts[] = {
        { 0, 4, 0x12345678, "Image is not in qcow2 format" },
        { 4, 4, 4, "Unsupported qcow2 version 4" },
        { 4, 4, 1, "Unsupported qcow2 version 1" },
        { 20, 4, 0, "Unsupported cluster size: 2^0" },
        { 20, 4, 63, "Unsupported cluster size: 2^63" },
        { 20, 4, 22, "Unsupported cluster size: 2^22" },
        { 96, 4, 7, "Reference count entry width too large; may not exceed "
          "64 bits" },
        { 100, 4, 100, "qcow2 header too short" },
        { 100, 4, 70000, "qcow2 header exceeds cluster size" },
        { 72, 8, 1ull << 10, "Unsupported qcow2 feature(s): Unknown "
          "incompatible feature: 400" },
        { 72, 8, (1ull << 10) | (1ull << 2) | (1ull << 33),
          "Unsupported qcow2 feature(s): external data file, Unknown "
          "incompatible feature: 200000400" },
        { 72, 8, 1ull << 3, "qcow2: Compression type incompatible feature "
          "bit must not be set" },
        { 36, 4, 0x10000000, "Active L1 table too large" },
        { 36, 4, 0, "L1 table is too small" },
        { 40, 8, 0x30001, "Active L1 table offset invalid" },
        { 40, 8, 1ull << 50, "Active L1 table offset invalid" },
        { 40, 8, 0, "Active L1 table offset invalid" },
        { 40, 8, 0x10000, "Active L1 table overlaps the reference count "
          "table" },
        { 48, 8, 0x10001, "Reference count table offset invalid" },
        { 48, 8, 1ull << 50, "Reference count table offset invalid" },
        { 56, 4, 0x100000, "Reference count table too large" },
        { 56, 4, 0, "Image does not contain a reference count table" },
        { 56, 4, 0xffffffff, "Reference count table too large" },
        { 32, 4, 1, "Encrypted qcow2 images are not supported" },
        { 32, 4, 3, "Unsupported encryption method 3" },
        { 60, 4, 70000, "Snapshot table too large" },
        { 60, 4, 1, "Snapshot table offset invalid" },
        { 8, 8, 1ull << 40, "Invalid backing file offset" },
        { 24, 8, 1ull << 62, "Image is too big" },
        { 24, 8, UINT64_MAX, "Could not refresh total sector count: File "
          "too large" },
    };
    Qcow2CreateOpts o = { .size = 64 << 20 };
    MemFile base = make_image(&o);

    for (size_t i = 0; i < sizeof(muts) / sizeof(muts[0]); i++) {
        MemFile m = { malloc(base.len), base.len };
        memcpy(m.data, base.data, base.len);
        if (muts[i].width == 4) {
            be32_put(m.data + muts[i].off, (uint32_t)muts[i].val);
        } else {
            be64_put(m.data + muts[i].off, muts[i].val);
        }
        expect_parse_error(&m, muts[i].msg);
        free(m.data);
    }

    /* extended L2 needs clusters of 16k and more */
    {
        Qcow2CreateOpts o4 = { .size = 64 << 20, .cluster_size = 4096 };
        MemFile m4 = make_image(&o4);
        be64_put(m4.data + 72, QCOW2_INCOMPAT_EXTL2);
        expect_parse_error(&m4, "Extended L2 entries are only supported with "
                           "cluster sizes of at least 16384 bytes");
        free(m4.data);
        MemFile m64 = { malloc(base.len), base.len };
        memcpy(m64.data, base.data, base.len);
        be64_put(m64.data + 72, QCOW2_INCOMPAT_EXTL2);
        Qcow2Header h;
        assert_true(qcow2_header_parse(m64.data, m64.len, m64.len, &h, NULL));
        qcow2_header_free(&h);
        free(m64.data);
    }

    /* truncated files */
    MemFile t = { base.data, 50 };
    expect_parse_error(&t, "qcow2 header too short");
    /* a short read of cluster 0 past the header is fine (reads as zero),
     * but then the tables lie past the end of a 200 byte file */
    t.len = 200;
    expect_parse_error(&t, "Active L1 table offset invalid");

    /* an extension whose length runs past the cluster */
    MemFile m = { malloc(base.len), base.len };
    memcpy(m.data, base.data, base.len);
    be32_put(m.data + 112 + 4, 0x7fffffff);
    expect_parse_error(&m, "Header extension 0x6803f857 is too large");
    /* feature table named bit: the image's own name is used */
    memcpy(m.data, base.data, base.len);
    /* first feature table entry is incompatible bit 0 "dirty bit": rename
     * it to bit 7 with a custom name */
    unsigned ft = 112;
    while (be32_get(m.data + ft) != QCOW2_EXT_FEATURE_TABLE) {
        ft += 8 + ((be32_get(m.data + ft + 4) + 7) & ~7u);
    }
    m.data[ft + 8 + 1] = 7;
    memset(m.data + ft + 8 + 2, 0, 46);
    memcpy(m.data + ft + 8 + 2, "frobnication", 12);
    be64_put(m.data + 72, 1ull << 7);
    expect_parse_error(&m, "Unsupported qcow2 feature(s): frobnication");
    free(m.data);
    free(base.data);
}

/* ---- qemu-img agrees with what we create ---- */

static int fd_write(void *opaque, uint64_t off, const void *buf, size_t len)
{
    int fd = *(int *)opaque;
    ssize_t n = pwrite(fd, buf, len, (off_t)off);
    if (n < 0) {
        return -errno;
    }
    return n == (ssize_t)len ? 0 : -EIO;
}

static int run_capture(const char *cmd, char *out, size_t outlen)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    return pclose(p);
}

static void test_qemu_img_accepts(void **state)
{
    if (system("qemu-img --version >/dev/null 2>&1") != 0) {
        skip();
    }
    static const Qcow2CreateOpts shapes[] = {
        { .size = 1ull << 30 },
        { .size = 64 << 20, .cluster_size = 512, .version = 2 },
        { .size = 10ull << 30, .cluster_size = 2u << 20, .refcount_bits = 64 },
        { .size = 100ull << 30, .cluster_size = 512, .refcount_bits = 1 },
        { .size = 4 << 20, .cluster_size = 4096, .refcount_bits = 2,
          .lazy_refcounts = true },
        { .size = 4 << 20, .backing_file = "base.raw",
          .backing_format = "raw" },
        { .size = 0 },
    };
    char dir[] = "/tmp/test-qcow2-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], cmd[512], out[8192];
    snprintf(path, sizeof(path), "%s/base.raw", dir);
    int bfd = open(path, O_CREAT | O_WRONLY, 0644);
    assert_true(bfd >= 0);
    assert_int_equal(ftruncate(bfd, 4 << 20), 0);
    close(bfd);

    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        snprintf(path, sizeof(path), "%s/img%zu.qcow2", dir, i);
        int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
        assert_true(fd >= 0);
        Error *err = NULL;
        assert_true(qcow2_create_image(&shapes[i], fd_write, &fd, &err));
        close(fd);

        snprintf(cmd, sizeof(cmd), "qemu-img check -f qcow2 '%s' 2>&1", path);
        int rc = run_capture(cmd, out, sizeof(out));
        if (rc != 0 || !strstr(out, "No errors were found")) {
            fail_msg("shape %zu: qemu-img check: %s", i, out);
        }
        snprintf(cmd, sizeof(cmd),
                 "qemu-img info -U --output=json '%s' 2>&1", path);
        rc = run_capture(cmd, out, sizeof(out));
        assert_int_equal(rc, 0);
        char want[128];
        snprintf(want, sizeof(want), "\"virtual-size\": %" PRIu64,
                 shapes[i].size);
        if (!strstr(out, want)) {
            fail_msg("shape %zu: want %s in %s", i, want, out);
        }
        snprintf(want, sizeof(want), "\"cluster-size\": %u",
                 shapes[i].cluster_size ? shapes[i].cluster_size : 65536);
        assert_non_null(strstr(out, want));
        snprintf(want, sizeof(want), "\"refcount-bits\": %u",
                 shapes[i].refcount_bits ? shapes[i].refcount_bits : 16);
        assert_non_null(strstr(out, want));
        assert_non_null(strstr(out, shapes[i].version == 2
                                    ? "\"compat\": \"0.10\""
                                    : "\"compat\": \"1.1\""));
        if (shapes[i].backing_file) {
            assert_non_null(strstr(out, "\"backing-filename-format\": "
                                        "\"raw\""));
        }
        if (shapes[i].lazy_refcounts) {
            assert_non_null(strstr(out, "\"lazy-refcounts\": true"));
        }
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/base.raw", dir);
    unlink(path);
    rmdir(dir);
}

/* qemu-img's own images parse to the values qemu-img reports. */
static void test_parse_qemu_img_image(void **state)
{
    if (system("qemu-img --version >/dev/null 2>&1") != 0) {
        skip();
    }
    char dir[] = "/tmp/test-qcow2-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[512], path[256], out[64];
    snprintf(path, sizeof(path), "%s/q.qcow2", dir);
    snprintf(cmd, sizeof(cmd),
             "qemu-img create -q -f qcow2 -o cluster_size=4096,"
             "refcount_bits=32,backing_file=base.qcow2,backing_fmt=qcow2,"
             "lazy_refcounts=on -u '%s' 3G", path);
    assert_int_equal(run_capture(cmd, out, sizeof(out)), 0);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    off_t size = lseek(fd, 0, SEEK_END);
    uint8_t *buf = calloc(1, 4096);
    assert_true(pread(fd, buf, 4096, 0) > 0);
    close(fd);
    Qcow2Header h;
    Error *err = NULL;
    if (!qcow2_header_parse(buf, 4096, (uint64_t)size, &h, &err)) {
        fail_msg("%s", error_get_pretty(err));
    }
    assert_int_equal(h.cluster_bits, 12);
    assert_int_equal(h.refcount_order, 5);
    assert_int_equal(h.size, 3ull << 30);
    assert_string_equal(h.backing_file, "base.qcow2");
    assert_string_equal(h.backing_format, "qcow2");
    assert_true(h.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS);
    qcow2_header_free(&h);
    free(buf);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_geometry),
        cmocka_unit_test(test_l2_decode),
        cmocka_unit_test(test_l2_compressed),
        cmocka_unit_test(test_refcounts),
        cmocka_unit_test(test_create_parse),
        cmocka_unit_test(test_create_v2_small_clusters),
        cmocka_unit_test(test_create_refused),
        cmocka_unit_test(test_serialize_preserves),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_qemu_img_accepts),
        cmocka_unit_test(test_parse_qemu_img_image),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
