/*
 * Metadata contexts of the NBD server: the extent array (merging, limits),
 * qemu:dirty-bitmap extents from a real bitmap of a 1 TiB node (clipping,
 * dirty areas, a full array, worst-case bitmaps queried many times), and
 * the handshake's context negotiation (qemu's query rules, ids, the
 * selection bound to the export by bitmap name at NBD_OPT_GO).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "nbd-bytes.h"

#include "aio/aio.h"
#include "block/block.h"
#include "block/dirty-bitmap.h"
#include "nbd/nbd-handshake.h"
#include "nbd/nbd-meta.h"
#include "nbd/nbd-proto.h"
#include "nbd/nbd-request.h"
#include "nbd/nbd-wire.h"

#define KiB 1024ULL
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)
#define TiB (1024 * GiB)
#define GRAN (64 * KiB)

/* ---- the extent array ---- */

static void expect(const NbdExtents *x, unsigned n, const uint32_t *lf)
{
    assert_int_equal(x->count, n);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(x->e[i].length, lf[2 * i]);
        assert_int_equal(x->e[i].flags, lf[2 * i + 1]);
    }
}

static void test_extents_merge_and_limit(void **state)
{
    NbdExtents x;

    nbd_extents_init(&x, 3);
    assert_true(nbd_extents_add(&x, 0, 1));        /* ignored */
    assert_true(nbd_extents_add(&x, 10, 0));
    assert_true(nbd_extents_add(&x, 5, 0));        /* merged */
    assert_true(nbd_extents_add(&x, 7, 1));
    assert_true(nbd_extents_add(&x, 1, 2));
    assert_true(nbd_extents_add(&x, 1, 2));
    expect(&x, 3, (const uint32_t[]){ 15, 0, 7, 1, 2, 2 });
    assert_false(x.full);
    assert_false(nbd_extents_add(&x, 4, 0));       /* no room */
    assert_true(x.full);
    assert_int_equal(x.total, 24);
    nbd_extents_destroy(&x);

    /* a run longer than 32 bits spills into a second extent */
    nbd_extents_init(&x, 4);
    assert_true(nbd_extents_add(&x, UINT32_MAX - 10, 1));
    assert_true(nbd_extents_add(&x, 20, 1));
    expect(&x, 2, (const uint32_t[]){ UINT32_MAX, 1, 10, 1 });
    assert_false(nbd_extents_add(&x, 5ULL << 32, 0));
    assert_int_equal(x.count, 4);
    assert_true(x.full);                           /* 5 * 2^32 needs 6 */
    nbd_extents_destroy(&x);
}

/* ---- qemu:dirty-bitmap ---- */

typedef struct Fixture {
    BlockNode *bs;
    BdrvDirtyBitmap *bm;
} Fixture;

static int fixture_setup(void **state)
{
    Error *err = NULL;
    json_t *opts = json_pack("{s:s, s:s, s:I}", "driver", "null-co",
                             "node-name", "n", "size", (json_int_t)TiB);
    Fixture *f = calloc(1, sizeof(*f));

    f->bs = bdrv_open_blockdev(opts, false, &err);
    json_decref(opts);
    if (!f->bs) {
        fail_msg("open: %s", error_get_pretty(err));
    }
    f->bm = bdrv_create_dirty_bitmap(f->bs, GRAN, "bm", &err);
    assert_non_null(f->bm);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    Fixture *f = *state;
    Error *err = NULL;

    if (!bdrv_del_blockdev("n", &err)) {
        fail_msg("del: %s", error_get_pretty(err));
    }
    free(f);
    return 0;
}

static void map(Fixture *f, uint64_t off, uint64_t len, unsigned max,
                NbdExtents *x)
{
    nbd_extents_init(x, max);
    nbd_meta_dirty_bitmap(f->bm, off, len, x);
}

static void test_bitmap_extents(void **state)
{
    Fixture *f = *state;
    NbdExtents x;

    /* clean: one extent, the whole request */
    map(f, 12345, 4 * GiB - 1, 16, &x);
    expect(&x, 1, (const uint32_t[]){ 4 * GiB - 1, 0 });
    nbd_extents_destroy(&x);

    bdrv_set_dirty_bitmap(f->bm, 3 * GRAN + 10, 100);       /* granule 3 */
    bdrv_set_dirty_bitmap(f->bm, 5 * GRAN + 4096, 2 * GRAN); /* 5..7 */
    bdrv_set_dirty_bitmap(f->bm, TiB - 1, 1);                /* the last */

    map(f, 0, 4 * MiB, 16, &x);
    expect(&x, 5, (const uint32_t[]){ 3 * GRAN, 0, GRAN, NBD_STATE_DIRTY,
                                      GRAN, 0, 3 * GRAN, NBD_STATE_DIRTY,
                                      4 * MiB - 8 * GRAN, 0 });
    assert_int_equal(x.total, 4 * MiB);
    nbd_extents_destroy(&x);

    /* clipped to the request at both ends, inside a dirty area */
    map(f, 3 * GRAN + 20, 4096, 16, &x);
    expect(&x, 1, (const uint32_t[]){ 4096, NBD_STATE_DIRTY });
    nbd_extents_destroy(&x);
    map(f, 4 * GRAN - 1, 2, 16, &x);
    expect(&x, 2, (const uint32_t[]){ 1, NBD_STATE_DIRTY, 1, 0 });
    nbd_extents_destroy(&x);
    map(f, 6 * GRAN + 7, 3 * GRAN, 16, &x);
    expect(&x, 2, (const uint32_t[]){ 2 * GRAN - 7, NBD_STATE_DIRTY,
                                      GRAN + 7, 0 });
    nbd_extents_destroy(&x);

    /* a full array stops early with a valid prefix */
    map(f, 0, 4 * MiB, 2, &x);
    expect(&x, 2, (const uint32_t[]){ 3 * GRAN, 0, GRAN, NBD_STATE_DIRTY });
    assert_true(x.full);
    nbd_extents_destroy(&x);
    map(f, 3 * GRAN, 4 * MiB, 1, &x);
    expect(&x, 1, (const uint32_t[]){ GRAN, NBD_STATE_DIRTY });
    nbd_extents_destroy(&x);

    /* the end of the disk, and a request past the bitmap reads clean */
    map(f, TiB - 2 * GRAN, 2 * GRAN, 16, &x);
    expect(&x, 2, (const uint32_t[]){ GRAN, 0, GRAN, NBD_STATE_DIRTY });
    nbd_extents_destroy(&x);
    map(f, TiB, 4096, 16, &x);
    expect(&x, 1, (const uint32_t[]){ 4096, 0 });
    nbd_extents_destroy(&x);

    bdrv_clear_dirty_bitmap(f->bm);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * The cost follows the extents, not the disk: 20000 small queries of a
 * 1 TiB bitmap (16 Mi granules) that is clean, then dirty everywhere but
 * its last granule.  A per-granule walk would take minutes here; the
 * bound is a hundred times what the walk by dirty areas needs on a
 * loaded machine, so it only catches that kind of mistake.
 */
static void test_bitmap_extents_huge_disk_is_fast(void **state)
{
    Fixture *f = *state;
    double t0 = now();
    NbdExtents x;

    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            bdrv_set_dirty_bitmap(f->bm, 0, TiB - GRAN);
        }
        for (uint64_t i = 0; i < 10000; i++) {
            uint64_t off = (i * 104729 * GRAN + 777) % (TiB - 8 * MiB);
            map(f, off, 4 * MiB, 1024, &x);
            assert_int_equal(x.count, 1);
            assert_int_equal(x.e[0].length, 4 * MiB);
            assert_int_equal(x.e[0].flags, pass ? NBD_STATE_DIRTY : 0);
            nbd_extents_destroy(&x);
        }
    }
    /* and a whole-request answer over the entire dirty run */
    map(f, 0, UINT32_MAX, 1024, &x);
    expect(&x, 1, (const uint32_t[]){ UINT32_MAX, NBD_STATE_DIRTY });
    nbd_extents_destroy(&x);
    map(f, TiB - 4 * GiB, 4 * GiB - 1, 1024, &x);
    expect(&x, 2, (const uint32_t[]){ 4 * GiB - GRAN, NBD_STATE_DIRTY,
                                      GRAN - 1, 0 });
    nbd_extents_destroy(&x);
    assert_true(now() - t0 < 60.0);
    bdrv_clear_dirty_bitmap(f->bm);
}

/* ---- negotiation ---- */

static const char *const bm_names[] = { "b1", "m0", "b1" };
static const char *const bm_other[] = { "m0", "b1" };

static const NbdExportInfo exports[] = {
    { .name = "n3", .size = 1 << 20, .tflags = NBD_FLAG_READ_ONLY,
      .min_block = 1, .pref_block = 4096, .max_block = NBD_MAX_PAYLOAD,
      .allocation_depth = true, .bitmaps = bm_names, .n_bitmaps = 3,
      .handle = (void *)&exports[0] },
    { .name = "plain", .size = 1 << 20, .tflags = NBD_FLAG_READ_ONLY,
      .min_block = 1, .pref_block = 4096, .max_block = NBD_MAX_PAYLOAD,
      .handle = (void *)&exports[1] },
};

/* Which exports[] entry answers to "n3" (the test swaps it to mimic an
 * export re-created between SET and GO). */
static NbdExportInfo current_n3;

static bool fake_find(void *opaque, const char *name, NbdExportInfo *info)
{
    if (strcmp(name, "n3") == 0) {
        *info = current_n3;
        return true;
    }
    if (strcmp(name, "plain") == 0) {
        *info = exports[1];
        return true;
    }
    return false;
}

static void fake_for_each(void *opaque, NbdExportInfoFn *fn, void *fn_opaque)
{
    fn(&current_n3, fn_opaque);
    fn(&exports[1], fn_opaque);
}

static const NbdExportLookup lookup = {
    .find = fake_find, .for_each = fake_for_each,
};

static void send_opt(NbdHandshake *hs, uint32_t option, const Buf *data)
{
    uint8_t h[16];

    nbd_put64(h, NBD_IHAVEOPT);
    nbd_put32(h + 8, option);
    nbd_put32(h + 12, data ? data->n : 0);
    assert_int_equal(nbd_handshake_feed(hs, h, 16), 16);
    if (data && data->n) {
        assert_int_equal(nbd_handshake_feed(hs, data->b, data->n), data->n);
    }
}

static void meta(NbdHandshake *hs, uint32_t option, const char *name, int n,
                 const char *const *q)
{
    Buf d = { .n = 0 };

    b32(&d, strlen(name));
    bstr(&d, name);
    b32(&d, n);
    for (int i = 0; i < n; i++) {
        b32(&d, strlen(q[i]));
        bstr(&d, q[i]);
    }
    send_opt(hs, option, &d);
}

/* Pops the replies to one option: the contexts ("id:name" joined by
 * spaces) until the final ACK or error, which it returns. */
static uint32_t replies(NbdHandshake *hs, char *out, size_t outsz)
{
    out[0] = 0;
    for (;;) {
        assert_true(hs->out_len >= NBD_OPT_REPLY_HEADER_SIZE);
        uint32_t type = nbd_get32(hs->out + 12);
        uint32_t len = nbd_get32(hs->out + 16);
        const uint8_t *p = hs->out + NBD_OPT_REPLY_HEADER_SIZE;
        if (type == NBD_REP_META_CONTEXT) {
            size_t at = strlen(out);
            snprintf(out + at, outsz - at, "%s%u:%.*s", at ? " " : "",
                     nbd_get32(p), (int)(len - 4), (const char *)p + 4);
        }
        nbd_handshake_output_consumed(hs, NBD_OPT_REPLY_HEADER_SIZE + len);
        if (type != NBD_REP_META_CONTEXT && type != NBD_REP_INFO) {
            return type;
        }
    }
}

static void start(NbdHandshake *hs)
{
    uint8_t f[4];

    nbd_handshake_init(hs, &lookup);
    nbd_handshake_output_consumed(hs, hs->out_len);
    nbd_put32(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    assert_int_equal(nbd_handshake_feed(hs, f, 4), 4);
    send_opt(hs, NBD_OPT_STRUCTURED_REPLY, NULL);
    char r[64];
    assert_int_equal(replies(hs, r, sizeof(r)), NBD_REP_ACK);
}

static void go(NbdHandshake *hs, const char *name)
{
    Buf d = { .n = 0 };
    char r[64];

    b32(&d, strlen(name));
    bstr(&d, name);
    d.b[d.n++] = 0;
    d.b[d.n++] = 0;
    send_opt(hs, NBD_OPT_GO, &d);
    assert_int_equal(replies(hs, r, sizeof(r)), NBD_REP_ACK);
    assert_int_equal(hs->state, NBD_HS_DONE);
}

#define LIST(hs, exp, want, ...) do {                                      \
        const char *const _q[] = { __VA_ARGS__ };                         \
        char _r[512];                                                      \
        meta((hs), NBD_OPT_LIST_META_CONTEXT, (exp),                       \
             (int)(sizeof(_q) / sizeof(_q[0])) - 1, _q + 1);               \
        assert_int_equal(replies((hs), _r, sizeof(_r)), NBD_REP_ACK);      \
        assert_string_equal(_r, (want));                                   \
    } while (0)

static void test_list_meta_contexts(void **state)
{
    NbdHandshake hs;

    current_n3 = exports[0];
    start(&hs);
    LIST(&hs, "n3", "0:base:allocation 0:qemu:allocation-depth "
         "0:qemu:dirty-bitmap:b1 0:qemu:dirty-bitmap:m0 "
         "0:qemu:dirty-bitmap:b1", "");
    LIST(&hs, "n3", "0:qemu:allocation-depth 0:qemu:dirty-bitmap:b1 "
         "0:qemu:dirty-bitmap:m0 0:qemu:dirty-bitmap:b1", "", "qemu:");
    LIST(&hs, "n3", "0:qemu:dirty-bitmap:b1 0:qemu:dirty-bitmap:m0 "
         "0:qemu:dirty-bitmap:b1", "", "qemu:dirty-bitmap:");
    LIST(&hs, "n3", "0:base:allocation", "", "base:");
    LIST(&hs, "n3", "0:qemu:dirty-bitmap:m0", "", "qemu:dirty-bitmap:m0");
    LIST(&hs, "n3", "0:base:allocation 0:qemu:dirty-bitmap:b1", "",
         "qemu:dirty-bitmap:b1", "base:allocation");
    LIST(&hs, "n3", "", "", "qemu:dirty-bitmap:zz", "qemu:foo", "foo:",
         "qemu:dirty-bitmap", "base:allocationx", "qemu:allocation-dept");
    LIST(&hs, "plain", "0:base:allocation", "");
    LIST(&hs, "plain", "", "", "qemu:", "qemu:allocation-depth");
    nbd_handshake_cleanup(&hs);
}

static void test_set_and_go(void **state)
{
    NbdHandshake hs;
    char r[512];
    const char *const q1[] = { "qemu:dirty-bitmap:b1",
                               "qemu:allocation-depth",
                               "qemu:dirty-bitmap:m0" };
    const char *const q2[] = { "qemu:", "qemu:dirty-bitmap:",
                               "base:" };

    current_n3 = exports[0];
    start(&hs);
    /* set: ids in a fixed order, a repeated name means its first bitmap */
    meta(&hs, NBD_OPT_SET_META_CONTEXT, "n3", 3, q1);
    assert_int_equal(replies(&hs, r, sizeof(r)), NBD_REP_ACK);
    assert_string_equal(r, "2:qemu:allocation-depth 3:qemu:dirty-bitmap:b1 "
                        "4:qemu:dirty-bitmap:m0");
    /* namespaces alone select nothing, and replace the old selection */
    meta(&hs, NBD_OPT_SET_META_CONTEXT, "n3", 3, q2);
    assert_int_equal(replies(&hs, r, sizeof(r)), NBD_REP_ACK);
    assert_string_equal(r, "");
    assert_false(hs.meta_allocation_depth);
    assert_int_equal(hs.n_meta_bitmap_names, 0);

    meta(&hs, NBD_OPT_SET_META_CONTEXT, "n3", 3, q1);
    assert_int_equal(replies(&hs, r, sizeof(r)), NBD_REP_ACK);
    /* The export is re-created between SET and GO with its bitmaps in
     * another order and no allocation depth: the selection follows the
     * names. */
    current_n3.bitmaps = bm_other;
    current_n3.n_bitmaps = 2;
    current_n3.allocation_depth = false;
    go(&hs, "n3");
    assert_false(hs.meta_base_allocation);
    assert_false(hs.meta_allocation_depth);
    assert_non_null(hs.meta_bitmaps);
    assert_true(hs.meta_bitmaps[0]);    /* m0 */
    assert_true(hs.meta_bitmaps[1]);    /* b1 */
    nbd_handshake_cleanup(&hs);

    /* GO to another export drops everything */
    current_n3 = exports[0];
    start(&hs);
    meta(&hs, NBD_OPT_SET_META_CONTEXT, "n3", 3, q1);
    assert_int_equal(replies(&hs, r, sizeof(r)), NBD_REP_ACK);
    go(&hs, "plain");
    assert_false(hs.meta_allocation_depth);
    assert_null(hs.meta_bitmaps);
    nbd_handshake_cleanup(&hs);

    /* GO to the same export keeps it */
    start(&hs);
    meta(&hs, NBD_OPT_SET_META_CONTEXT, "n3", 3, q1);
    assert_int_equal(replies(&hs, r, sizeof(r)), NBD_REP_ACK);
    go(&hs, "n3");
    assert_true(hs.meta_allocation_depth);
    assert_true(hs.meta_bitmaps[0]);
    assert_true(hs.meta_bitmaps[1]);
    assert_false(hs.meta_bitmaps[2]);
    nbd_handshake_cleanup(&hs);
}

static void test_malformed_query_counts(void **state)
{
    NbdHandshake hs;
    Buf d = { .n = 0 };
    char r[64];

    current_n3 = exports[0];
    start(&hs);
    b32(&d, 2);
    bstr(&d, "n3");
    b32(&d, 0x40000000);        /* far more queries than bytes */
    b32(&d, 5);
    bstr(&d, "base:");
    send_opt(&hs, NBD_OPT_LIST_META_CONTEXT, &d);
    assert_int_equal(replies(&hs, r, sizeof(r)), NBD_REP_ERR_INVALID);
    assert_int_equal(hs.state, NBD_HS_OPT_HEADER);
    nbd_handshake_cleanup(&hs);
}

static void test_request_check_other_contexts(void **state)
{
    NbdTransmitParams p = {
        .size = 1 << 20, .tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_DF,
        .structured = true, .min_block = 1, .max_block = NBD_MAX_PAYLOAD,
    };
    NbdRequest r = { .type = NBD_CMD_BLOCK_STATUS, .length = 4096 };

    assert_int_equal(nbd_request_check(&p, &r).verdict, NBD_REQ_ERROR);
    p.meta_other = 1;           /* a bitmap alone is enough */
    assert_int_equal(nbd_request_check(&p, &r).verdict, NBD_REQ_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_extents_merge_and_limit),
        cmocka_unit_test_setup_teardown(test_bitmap_extents, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_bitmap_extents_huge_disk_is_fast,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test(test_list_meta_contexts),
        cmocka_unit_test(test_set_and_go),
        cmocka_unit_test(test_malformed_query_counts),
        cmocka_unit_test(test_request_check_other_contexts),
    };
    return cmocka_run_group_tests(tests, main_loop_setup, NULL);
}
