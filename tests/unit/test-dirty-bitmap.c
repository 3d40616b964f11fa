/*
 * Dirty bitmaps on nodes: every write, write-zeroes and (passed-down)
 * discard marks the enabled bitmaps of each node it passes, at their own
 * granularity; disabled ones stay; creation errors; named lookup; a node
 * that closes releases its bitmaps (ASan checks the leak); successors (a
 * backup's frozen sync bitmap) and merges across granularities.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "block/block.h"
#include "block/dirty-bitmap.h"
#include "test-wait.h"

typedef struct Node {
    BlockNode *top, *bottom;
    BlockChild *user;
} Node;

/* raw "top" over null-co "bottom" (1 MiB), discard=unmap on both. */
static Node node_open(void)
{
    Error *err = NULL;
    json_t *opts = json_loads("{\"driver\": \"raw\", \"node-name\": \"top\", "
                              "\"discard\": \"unmap\", \"file\": {\"driver\": "
                              "\"null-co\", \"node-name\": \"bottom\", "
                              "\"size\": 1048576, \"read-zeroes\": true}}",
                              0, NULL);
    Node n;
    n.top = bdrv_open_blockdev(opts, false, &err);
    json_decref(opts);
    if (!n.top) {
        fail_msg("open: %s", error_get_pretty(err));
    }
    n.bottom = bdrv_find_node("bottom");
    assert_non_null(n.bottom);
    n.user = bdrv_root_attach_child(n.top, "root", &test_export_class, "t",
                                    BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                                    BLK_PERM_ALL, &err);
    assert_non_null(n.user);
    return n;
}

static void node_close(Node *n)
{
    Error *err = NULL;
    bdrv_detach_child(n->user);
    if (!bdrv_del_blockdev("top", &err)) {
        fail_msg("del: %s", error_get_pretty(err));
    }
    assert_null(bdrv_next_node(NULL));
}

typedef struct Req {
    BlockChild *c;
    int kind;            /* 0 zeroes, 1 discard */
    int64_t off, len;
    int ret;
} Req;

static void coroutine_fn req_entry(void *opaque)
{
    Req *r = opaque;
    r->ret = r->kind == 0 ? bdrv_co_pwrite_zeroes(r->c, r->off, r->len, 0)
                          : bdrv_co_pdiscard(r->c, r->off, r->len);
}

static int run_req(BlockChild *c, int kind, int64_t off, int64_t len)
{
    Req r = { .c = c, .kind = kind, .off = off, .len = len };
    co_run(req_entry, &r);
    return r.ret;
}

static char buf[65536];

static void test_writes_mark(void **state)
{
    Node n = node_open();
    Error *err = NULL;
    BdrvDirtyBitmap *fine = bdrv_create_dirty_bitmap(n.bottom, 512, NULL,
                                                     &err);
    BdrvDirtyBitmap *coarse = bdrv_create_dirty_bitmap(n.bottom, 65536, "c",
                                                       &err);
    BdrvDirtyBitmap *on_top = bdrv_create_dirty_bitmap(n.top, 4096, "t",
                                                       &err);
    assert_non_null(fine);
    assert_non_null(coarse);
    assert_non_null(on_top);
    assert_int_equal(bdrv_dirty_bitmap_size(fine), 1048576);

    assert_int_equal(bdrv_pwrite(n.user, 1000, 100, buf, 0), 0);
    assert_int_equal(bdrv_get_dirty_count(fine), 1024);   /* 2 sectors */
    assert_int_equal(bdrv_get_dirty_count(coarse), 65536);
    assert_int_equal(bdrv_get_dirty_count(on_top), 4096);
    assert_int_equal(bdrv_dirty_bitmap_next_dirty(fine, 0, 1 << 20), 512);

    assert_int_equal(run_req(n.user, 0, 200000, 8192), 0);
    assert_true(bdrv_dirty_bitmap_get(coarse, 196608));
    assert_int_equal(bdrv_get_dirty_count(fine), 1024 + 8704);

    /* discard: whole aligned blocks reach the node and mark */
    assert_int_equal(run_req(n.user, 1, 524288, 65536), 0);
    assert_true(bdrv_dirty_bitmap_get(coarse, 524288));

    int64_t off = 0, len = 0;
    assert_true(bdrv_dirty_bitmap_next_dirty_area(fine, &off, 1 << 20,
                                                  1 << 20, &len));
    assert_int_equal(off, 512);
    assert_int_equal(len, 1024);

    /* disabled: not marked; enabled again: marked */
    bdrv_disable_dirty_bitmap(coarse);
    bdrv_clear_dirty_bitmap(coarse);
    assert_int_equal(bdrv_pwrite(n.user, 0, 512, buf, 0), 0);
    assert_int_equal(bdrv_get_dirty_count(coarse), 0);
    bdrv_enable_dirty_bitmap(coarse);
    assert_int_equal(bdrv_pwrite(n.user, 0, 512, buf, 0), 0);
    assert_int_equal(bdrv_get_dirty_count(coarse), 65536);

    /* reset, merge */
    bdrv_reset_dirty_bitmap(fine, 0, 1 << 20);
    assert_int_equal(bdrv_get_dirty_count(fine), 0);
    BdrvDirtyBitmap *fine2 = bdrv_create_dirty_bitmap(n.bottom, 512, "f2",
                                                      &err);
    bdrv_set_dirty_bitmap(fine2, 4096, 4096);
    assert_true(bdrv_merge_dirty_bitmap(fine, fine2, &err));
    assert_int_equal(bdrv_get_dirty_count(fine), 4096);
    assert_false(bdrv_merge_dirty_bitmap(fine, coarse, &err));
    assert_string_equal(error_get_pretty(err),
                        "Bitmaps are incompatible and can't be merged");
    error_free(err);
    err = NULL;

    /* lookup and order */
    assert_ptr_equal(bdrv_find_dirty_bitmap(n.bottom, "c"), coarse);
    assert_null(bdrv_find_dirty_bitmap(n.bottom, "zz"));
    assert_ptr_equal(bdrv_dirty_bitmap_next(n.bottom, NULL), fine);
    assert_ptr_equal(bdrv_dirty_bitmap_next(n.bottom, fine), coarse);
    bdrv_release_dirty_bitmap(fine);
    assert_ptr_equal(bdrv_dirty_bitmap_next(n.bottom, NULL), coarse);
    /* the others are released when the nodes close */
    node_close(&n);
}

static void test_create_errors(void **state)
{
    Node n = node_open();
    Error *err = NULL;
    static const uint32_t bad[] = { 0, 256, 1000, 513 };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(bdrv_create_dirty_bitmap(n.top, bad[i], NULL, &err));
        assert_string_equal(error_get_pretty(err),
                            "Granularity must be power of 2 and at least "
                            "512");
        error_free(err);
        err = NULL;
    }
    assert_non_null(bdrv_create_dirty_bitmap(n.top, 512, "bm0", &err));
    assert_null(bdrv_create_dirty_bitmap(n.top, 512, "bm0", &err));
    assert_string_equal(error_get_pretty(err), "Bitmap already exists: bm0");
    error_free(err);
    node_close(&n);
}

/* ---- successors (a backup's sync bitmap) ---- */

static void write_zeroes(Node *n, int64_t off, int64_t len)
{
    assert_int_equal(run_req(n->user, 0, off, len), 0);
}

/* Frozen: busy, disabled, bits unchanged, still "recording" through the
 * successor, which gets the writes; a second successor is refused. */
static void test_successor_frozen(void **state)
{
    Node n = node_open();
    Error *err = NULL;
    BdrvDirtyBitmap *bm = bdrv_create_dirty_bitmap(n.top, 65536, "b", &err);

    write_zeroes(&n, 0, 4096);
    BdrvDirtyBitmap *s = bdrv_dirty_bitmap_create_successor(bm, &err);
    assert_non_null(s);
    assert_ptr_equal(bdrv_dirty_bitmap_successor(bm), s);
    assert_null(bdrv_dirty_bitmap_name(s));
    assert_int_equal(bdrv_dirty_bitmap_granularity(s), 65536);
    assert_true(bdrv_dirty_bitmap_busy(bm));
    assert_false(bdrv_dirty_bitmap_enabled(bm));
    assert_true(bdrv_dirty_bitmap_recording(bm));
    assert_null(bdrv_dirty_bitmap_create_successor(bm, &err));
    assert_string_equal(error_get_pretty(err), "Cannot create a successor "
                        "for a bitmap that already has one");
    error_free(err);

    write_zeroes(&n, 65536 * 3, 100);
    assert_int_equal(bdrv_get_dirty_count(bm), 65536);
    assert_true(bdrv_dirty_bitmap_get(bm, 0));
    assert_int_equal(bdrv_get_dirty_count(s), 65536);
    assert_true(bdrv_dirty_bitmap_get(s, 65536 * 3));
    /* released with the node, successor included (ASan checks) */
    node_close(&n);
}

/* abdicate: the successor's bits, and the successor's place in the list
 * (a bitmap added during the job stays newer); recording as before. */
static void test_successor_abdicate(void **state)
{
    Node n = node_open();
    Error *err = NULL;
    BdrvDirtyBitmap *old = bdrv_create_dirty_bitmap(n.top, 4096, "old",
                                                    &err);
    BdrvDirtyBitmap *bm = bdrv_create_dirty_bitmap(n.top, 65536, "b", &err);

    write_zeroes(&n, 0, 65536);
    assert_non_null(bdrv_dirty_bitmap_create_successor(bm, &err));
    BdrvDirtyBitmap *late = bdrv_create_dirty_bitmap(n.top, 65536, "late",
                                                     &err);
    write_zeroes(&n, 65536 * 5, 65536 * 2);
    bdrv_dirty_bitmap_abdicate(bm);
    assert_null(bdrv_dirty_bitmap_successor(bm));
    assert_false(bdrv_dirty_bitmap_busy(bm));
    assert_true(bdrv_dirty_bitmap_enabled(bm));
    assert_int_equal(bdrv_get_dirty_count(bm), 65536 * 2);
    assert_false(bdrv_dirty_bitmap_get(bm, 0));
    assert_true(bdrv_dirty_bitmap_get(bm, 65536 * 6));
    /* creation order: old, b (where its successor was), late */
    assert_ptr_equal(bdrv_dirty_bitmap_next(n.top, NULL), old);
    assert_ptr_equal(bdrv_dirty_bitmap_next(n.top, old), bm);
    assert_ptr_equal(bdrv_dirty_bitmap_next(n.top, bm), late);
    assert_null(bdrv_dirty_bitmap_next(n.top, late));
    /* records again */
    write_zeroes(&n, 65536 * 10, 1);
    assert_int_equal(bdrv_get_dirty_count(bm), 65536 * 3);
    /* abdicate/reclaim without a successor: nothing */
    bdrv_dirty_bitmap_abdicate(bm);
    bdrv_dirty_bitmap_reclaim(bm);
    assert_int_equal(bdrv_get_dirty_count(bm), 65536 * 3);
    node_close(&n);
}

/* reclaim: the bits from before plus the writes during; position kept; a
 * disabled bitmap stays disabled and its successor recorded nothing. */
static void test_successor_reclaim(void **state)
{
    Node n = node_open();
    Error *err = NULL;
    BdrvDirtyBitmap *bm = bdrv_create_dirty_bitmap(n.top, 65536, "b", &err);
    BdrvDirtyBitmap *off = bdrv_create_dirty_bitmap(n.top, 65536, "off",
                                                    &err);

    write_zeroes(&n, 0, 65536);
    bdrv_disable_dirty_bitmap(off);
    assert_non_null(bdrv_dirty_bitmap_create_successor(bm, &err));
    assert_non_null(bdrv_dirty_bitmap_create_successor(off, &err));
    assert_false(bdrv_dirty_bitmap_recording(off));
    write_zeroes(&n, 65536 * 2, 65536);
    bdrv_dirty_bitmap_reclaim(bm);
    bdrv_dirty_bitmap_reclaim(off);
    assert_int_equal(bdrv_get_dirty_count(bm), 65536 * 2);
    assert_true(bdrv_dirty_bitmap_get(bm, 0));
    assert_true(bdrv_dirty_bitmap_get(bm, 65536 * 2));
    assert_true(bdrv_dirty_bitmap_enabled(bm));
    assert_int_equal(bdrv_get_dirty_count(off), 65536);
    assert_false(bdrv_dirty_bitmap_enabled(off));
    assert_false(bdrv_dirty_bitmap_busy(off));
    assert_ptr_equal(bdrv_dirty_bitmap_next(n.top, NULL), bm);
    assert_ptr_equal(bdrv_dirty_bitmap_next(n.top, bm), off);
    assert_null(bdrv_dirty_bitmap_next(n.top, off));
    node_close(&n);
}

/* merge_hbitmap across granularities: every granule a run touches. */
static void test_merge_other_granularity(void **state)
{
    Node n = node_open();
    Error *err = NULL;
    BdrvDirtyBitmap *coarse = bdrv_create_dirty_bitmap(n.top, 65536, "c",
                                                       &err);
    BdrvDirtyBitmap *fine = bdrv_create_dirty_bitmap(n.top, 512, "f", &err);

    bdrv_disable_dirty_bitmap(coarse);
    bdrv_disable_dirty_bitmap(fine);
    bdrv_set_dirty_bitmap(fine, 65536 - 512, 1024);   /* granules 0, 1 */
    bdrv_set_dirty_bitmap(fine, 65536 * 9 + 4096, 512);
    bdrv_dirty_bitmap_merge_hbitmap(coarse, bdrv_dirty_bitmap_hbitmap(fine));
    assert_int_equal(bdrv_get_dirty_count(coarse), 65536 * 3);
    assert_true(bdrv_dirty_bitmap_get(coarse, 0));
    assert_true(bdrv_dirty_bitmap_get(coarse, 65536));
    assert_true(bdrv_dirty_bitmap_get(coarse, 65536 * 9));
    bdrv_clear_dirty_bitmap(fine);
    bdrv_dirty_bitmap_merge_hbitmap(fine, bdrv_dirty_bitmap_hbitmap(coarse));
    assert_int_equal(bdrv_get_dirty_count(fine), 65536 * 3);
    node_close(&n);
}

/* A resize keeps the bits both sizes cover; a grown tail is clean and
 * can be marked, a cut tail is gone; successors follow too. */
static void test_truncate(void **state)
{
    Node n = node_open();
    Error *err = NULL;
    BdrvDirtyBitmap *bm = bdrv_create_dirty_bitmap(n.top, 65536, "b", &err);
    BdrvDirtyBitmap *succ;

    bdrv_disable_dirty_bitmap(bm);
    bdrv_set_dirty_bitmap(bm, 0, 65536);
    bdrv_set_dirty_bitmap(bm, (1 << 20) - 65536, 65536);
    succ = bdrv_dirty_bitmap_create_successor(bm, &err);
    assert_non_null(succ);
    bdrv_dirty_bitmaps_truncate(n.top, 4 << 20);
    assert_int_equal(bdrv_dirty_bitmap_size(bm), 4 << 20);
    assert_int_equal(bdrv_dirty_bitmap_size(succ), 4 << 20);
    assert_int_equal(bdrv_get_dirty_count(bm), 65536 * 2);
    assert_true(bdrv_dirty_bitmap_get(bm, (1 << 20) - 1));
    assert_false(bdrv_dirty_bitmap_get(bm, 1 << 20));
    bdrv_set_dirty_bitmap(succ, 3 << 20, 512);
    assert_true(bdrv_dirty_bitmap_get(succ, 3 << 20));
    bdrv_dirty_bitmap_reclaim(bm);
    assert_int_equal(bdrv_get_dirty_count(bm), 65536 * 3);
    bdrv_dirty_bitmaps_truncate(n.top, 65536 * 2);
    assert_int_equal(bdrv_get_dirty_count(bm), 65536);
    assert_int_equal(bdrv_dirty_bitmap_next_dirty(bm, 65536, 65536), -1);
    node_close(&n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writes_mark),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_successor_frozen),
        cmocka_unit_test(test_successor_abdicate),
        cmocka_unit_test(test_successor_reclaim),
        cmocka_unit_test(test_merge_other_granularity),
        cmocka_unit_test(test_truncate),
    };
    return cmocka_run_group_tests(tests, main_loop_setup, NULL);
}
