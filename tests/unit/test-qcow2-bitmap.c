/*
 * The qcow2 bitmaps extension through the driver: bitmaps qemu-img made
 * and qemu-io filled load with the right bits; what we store at close is
 * clean for qemu-img check, not in use for qemu-img info, loads again with
 * the same bits, and qemu-img bitmap --merge reads it.  Plus the SHA-256
 * used by x-debug-block-dirty-bitmap-sha256, on the FIPS vectors.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "aio/aio.h"
#include "block/block.h"
#include "block/dirty-bitmap-named.h"

static char test_dir[] = "/var/tmp/bj-test-qcow2-bitmap.XXXXXX";
static bool have_qemu;

static BlockNode *open_img(const char *path)
{
    return open_ok("{\"driver\": \"qcow2\", \"node-name\": \"q\", "
                   "\"file\": {\"driver\": \"file\", \"filename\": "
                   "\"%s\"}}", path);
}

static void hex(const uint8_t d[32], char out[65])
{
    for (int i = 0; i < 32; i++) {
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    }
}

static void test_sha256_vectors(void **state)
{
    uint8_t d[32];
    char h[65];
    bj_sha256((const uint8_t *)"abc", 3, d);
    hex(d, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223"
                           "b00361a396177a9cb410ff61f20015ad");
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    bj_sha256((const uint8_t *)m, strlen(m), d);
    hex(d, h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039"
                           "a33ce45964ff2167f6ecedd419db06c1");
    bj_sha256((const uint8_t *)"", 0, d);
    hex(d, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb924"
                           "27ae41e4649b934ca495991b7852b855");
}

/* Bits qemu wrote, across a bitmap whose table spans several data
 * clusters (512 B granularity, 4 KiB clusters: 16 MiB per data cluster),
 * survive our load, our store and our second load. */
static void test_round_trip(void **state)
{
    if (!have_qemu) {
        skip();
    }
    char *p = NULL;
    assert_true(asprintf(&p, "%s/rt.qcow2", test_dir) > 0);
    assert_int_equal(sh("qemu-img create -q -f qcow2 -o cluster_size=4096 "
                        "'%s' 64M && qemu-img bitmap --add -g 512 '%s' fine && "
                        "qemu-img bitmap --add '%s' coarse && "
                        "qemu-io -f qcow2 -c 'write 0 512' -c 'write 20M 4k' "
                        "-c 'write 63M 1M' '%s' >/dev/null", p, p, p, p), 0);
    for (int round = 0; round < 2; round++) {
        BlockNode *bs = open_img(p);
        BdrvDirtyBitmap *fine = bdrv_find_dirty_bitmap(bs, "fine");
        BdrvDirtyBitmap *coarse = bdrv_find_dirty_bitmap(bs, "coarse");
        assert_non_null(fine);
        assert_non_null(coarse);
        assert_true(bdrv_dirty_bitmap_persistent(fine));
        assert_false(bdrv_dirty_bitmap_inconsistent(fine));
        assert_int_equal(bdrv_dirty_bitmap_granularity(fine), 512);
        assert_int_equal(bdrv_get_dirty_count(fine), 512 + 4096 + (1 << 20));
        assert_true(bdrv_dirty_bitmap_get(fine, 20 << 20));
        assert_false(bdrv_dirty_bitmap_get(fine, 512));
        assert_int_equal(bdrv_get_dirty_count(coarse),
                         4096 + 4096 + (1 << 20));   /* 4 KiB default */
        del_ok("q");
        /* Stored clean: in_use cleared, no leaks. */
        assert_int_equal(sh("qemu-img check '%s' >/dev/null && ! qemu-img info '%s' "
                            "| grep -q in-use", p, p), 0);
    }
    /* qemu reads our bits: merging ours into a fresh bitmap of its own,
     * then opening again, gives the same count. */
    assert_int_equal(sh("qemu-img bitmap --add -g 512 '%s' copy && "
                        "qemu-img bitmap --merge fine '%s' copy", p, p), 0);
    BlockNode *bs = open_img(p);
    BdrvDirtyBitmap *copy = bdrv_find_dirty_bitmap(bs, "copy");
    assert_non_null(copy);
    assert_int_equal(bdrv_get_dirty_count(copy), 512 + 4096 + (1 << 20));
    del_ok("q");
    free(p);
}

SCRATCH_GROUP_FIXTURES(test_dir)

int main(void)
{
    have_qemu = qemu_tools_installed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
