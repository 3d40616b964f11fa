/*
 * HBitmap: set/reset/get/count at several granularities, next-dirty,
 * next-clean and dirty areas across word and summary boundaries, merge,
 * serialisation round trips and its qcow2 bit order, all checked against
 * a naive model with random operations.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "util/hbitmap.h"

/* ---- the model: one bool per granule ---- */

typedef struct Model {
    uint64_t size;
    int shift;
    uint64_t nbits;
    bool *bits;
} Model;

static void model_init(Model *m, uint64_t size, int shift)
{
    m->size = size;
    m->shift = shift;
    m->nbits = size ? ((size - 1) >> shift) + 1 : 0;
    m->bits = calloc(m->nbits + 1, 1);
}

static void model_change(Model *m, uint64_t start, uint64_t count, bool v)
{
    if (!count || start >= m->size) {
        return;
    }
    uint64_t end = m->size - start < count ? m->size : start + count;
    for (uint64_t b = start >> m->shift; b <= (end - 1) >> m->shift; b++) {
        m->bits[b] = v;
    }
}

static uint64_t model_count(const Model *m)
{
    uint64_t n = 0;
    for (uint64_t b = 0; b < m->nbits; b++) {
        if (m->bits[b]) {
            uint64_t lo = b << m->shift, hi = (b + 1) << m->shift;
            n += (hi > m->size ? m->size : hi) - lo;
        }
    }
    return n;
}

static int64_t model_next(const Model *m, uint64_t start, uint64_t count,
                          bool want)
{
    uint64_t end = m->size - start < count ? m->size : start + count;
    for (uint64_t i = start; i < end;) {
        uint64_t b = i >> m->shift;
        if (m->bits[b] == want) {
            return (int64_t)i;
        }
        i = (b + 1) << m->shift;
    }
    return -1;
}

static void check_against(HBitmap *hb, const Model *m, unsigned seed)
{
    srand(seed);
    assert_int_equal(hbitmap_count(hb), model_count(m));
    for (int i = 0; i < 200; i++) {
        uint64_t start = (uint64_t)rand() % m->size;
        uint64_t count = (uint64_t)rand() % (m->size / 2 + 1) + 1;
        assert_int_equal(hbitmap_get(hb, start), m->bits[start >> m->shift]);
        assert_int_equal(hbitmap_next_dirty(hb, start, count),
                         model_next(m, start, count, true));
        assert_int_equal(hbitmap_next_clean(hb, start, count),
                         model_next(m, start, count, false));
        uint64_t s = start, c = 0;
        uint64_t end = start + count > m->size ? m->size : start + count;
        bool found = hbitmap_next_dirty_area(hb, &s, end, 1 << 20, &c);
        int64_t d = model_next(m, start, end - start, true);
        assert_int_equal(found, d >= 0);
        if (found) {
            assert_int_equal(s, (uint64_t)d);
            int64_t cl = model_next(m, s, end - s, false);
            uint64_t cend = cl < 0 ? end : (uint64_t)cl;
            if (cend - s > (1 << 20)) {
                cend = s + (1 << 20);
            }
            assert_int_equal(c, cend - s);
        }
    }
}

static void random_ops(uint64_t size, int shift, unsigned seed)
{
    HBitmap *hb = hbitmap_new(size, shift);
    Model m;
    model_init(&m, size, shift);
    srand(seed);
    for (int i = 0; i < 2000; i++) {
        uint64_t start = (uint64_t)rand() % size;
        uint64_t count = (uint64_t)rand() % (size / 8 + 1) + 1;
        if (rand() % 3) {
            hbitmap_set(hb, start, count);
            model_change(&m, start, count, true);
        } else {
            hbitmap_reset(hb, start, count);
            model_change(&m, start, count, false);
        }
        if (i % 250 == 0) {
            check_against(hb, &m, seed + i);
        }
    }
    check_against(hb, &m, seed + 7);
    hbitmap_reset_all(hb);
    assert_int_equal(hbitmap_count(hb), 0);
    assert_int_equal(hbitmap_next_dirty(hb, 0, UINT64_MAX), -1);
    assert_int_equal(hbitmap_next_clean(hb, 0, UINT64_MAX), 0);
    free(m.bits);
    hbitmap_free(hb);
}

static void test_random_small(void **state)
{
    random_ops(1000, 0, 1);           /* bit = item, a partial last word */
    random_ops(4096 * 64 + 17, 3, 2); /* partial last granule */
}

static void test_random_large(void **state)
{
    /* > 64 * 64 granules: the summary level spans several words */
    random_ops((uint64_t)64 * 64 * 5 * 512 + 100, 9, 3);
    random_ops((uint64_t)1 << 30, 16, 4);   /* 1 GiB at 64 KiB */
}

static void test_sparse_search(void **state)
{
    /* 1 TiB at 64 KiB: one dirty granule near the end is found fast */
    uint64_t size = (uint64_t)1 << 40;
    HBitmap *hb = hbitmap_new(size, 16);
    hbitmap_set(hb, size - 100000, 1);
    assert_int_equal(hbitmap_next_dirty(hb, 0, UINT64_MAX),
                     (int64_t)((size - 100000) >> 16 << 16));
    assert_int_equal(hbitmap_count(hb), 65536);
    assert_int_equal(hbitmap_next_dirty(hb, size - 65536 + 1, UINT64_MAX),
                     -1);
    hbitmap_free(hb);
}

static void test_count_edges(void **state)
{
    HBitmap *hb = hbitmap_new(1000, 9);   /* 2 granules, the last short */
    hbitmap_set(hb, 999, 1);
    assert_int_equal(hbitmap_count(hb), 1000 - 512);
    hbitmap_set(hb, 0, 1);
    assert_int_equal(hbitmap_count(hb), 1000);
    hbitmap_reset(hb, 600, 1);           /* clears the whole granule */
    assert_int_equal(hbitmap_count(hb), 512);
    hbitmap_set(hb, 2000, 10);           /* past the end: nothing */
    assert_int_equal(hbitmap_count(hb), 512);
    hbitmap_free(hb);

    hb = hbitmap_new(0, 9);
    assert_int_equal(hbitmap_count(hb), 0);
    assert_int_equal(hbitmap_next_dirty(hb, 0, 1), -1);
    hbitmap_free(hb);
}

static void test_merge(void **state)
{
    HBitmap *a = hbitmap_new(1 << 20, 12), *b = hbitmap_new(1 << 20, 12);
    HBitmap *c = hbitmap_new(1 << 20, 13);
    hbitmap_set(a, 0, 4096);
    hbitmap_set(b, 65536 * 4, 8192);
    assert_true(hbitmap_merge(a, b));
    assert_int_equal(hbitmap_count(a), 3 * 4096);
    assert_int_equal(hbitmap_next_dirty(a, 4096, UINT64_MAX), 65536 * 4);
    assert_false(hbitmap_merge(a, c));
    hbitmap_free(a);
    hbitmap_free(b);
    hbitmap_free(c);
}

static void test_serialize(void **state)
{
    HBitmap *a = hbitmap_new(100 * 512, 9), *b = hbitmap_new(100 * 512, 9);
    uint8_t buf[16];
    hbitmap_set(a, 0, 1);          /* granule 0 */
    hbitmap_set(a, 9 * 512, 1);    /* granule 9 */
    hbitmap_set(a, 99 * 512, 1);   /* granule 99 */
    assert_int_equal(hbitmap_serialized_size(a, 0, UINT64_MAX), 13);
    hbitmap_serialize(a, buf, 0, UINT64_MAX);
    /* qcow2 order: bit 0 of byte 0 is granule 0 */
    assert_int_equal(buf[0], 0x01);
    assert_int_equal(buf[1], 0x02);
    assert_int_equal(buf[12], 0x08);
    hbitmap_deserialize(b, buf, 0, UINT64_MAX);
    assert_int_equal(hbitmap_count(b), 3 * 512);
    assert_true(hbitmap_get(b, 99 * 512));
    /* a part: granules 8..15 */
    hbitmap_serialize(a, buf, 8 * 512, 8 * 512);
    assert_int_equal(buf[0], 0x02);
    hbitmap_free(a);
    hbitmap_free(b);
}

/* Searches stay inside their range: on a full (or empty) 1 TiB bitmap
 * a small query must neither report an item past its end nor walk the
 * whole bitmap (20,000 queries would take seconds if it did). */
static void test_bounded_search(void **state)
{
    const uint64_t tib = 1ULL << 40, g = 65536;
    HBitmap *hb = hbitmap_new(tib, 16);
    uint64_t start, count;

    hbitmap_set(hb, 0, tib);
    for (int i = 0; i < 20000; i++) {
        uint64_t off = (uint64_t)i * 7919 * g % (tib - 4 * g);
        assert_int_equal(hbitmap_next_clean(hb, off, 4 * g), -1);
        start = off;
        assert_true(hbitmap_next_dirty_area(hb, &start, off + 4 * g,
                                            UINT64_MAX, &count));
        assert_int_equal(start, off);
        assert_int_equal(count, 4 * g);
    }
    /* A clean granule just past the range is not reported; one inside
     * is. */
    hbitmap_reset(hb, 10 * g, g);
    assert_int_equal(hbitmap_next_clean(hb, 6 * g, 4 * g), -1);
    assert_int_equal(hbitmap_next_clean(hb, 6 * g, 4 * g + 1), 10 * g);
    hbitmap_reset_all(hb);
    for (int i = 0; i < 20000; i++) {
        uint64_t off = (uint64_t)i * 7919 * g % (tib - 4 * g);
        assert_int_equal(hbitmap_next_dirty(hb, off, 4 * g), -1);
    }
    hbitmap_set(hb, 10 * g, g);
    assert_int_equal(hbitmap_next_dirty(hb, 6 * g, 4 * g), -1);
    assert_int_equal(hbitmap_next_dirty(hb, 6 * g, 4 * g + 1), 10 * g);
    hbitmap_free(hb);
}

/* A bitmap sized by a disk larger than HBITMAP_MAX_GRANULES granules is
 * refused with a reason, never allocated (a 1 EiB disk at 64 KiB would
 * need 2 TiB of bits) nor aborted on. */
static void test_size_bound(void **state)
{
    const uint64_t eib = 1ULL << 60;
    Error *err = NULL;

    assert_int_equal(hbitmap_granules(0, 16), 0);
    assert_int_equal(hbitmap_granules(1, 16), 1);
    assert_int_equal(hbitmap_granules(HBITMAP_MAX_GRANULES << 16, 16),
                     HBITMAP_MAX_GRANULES);
    assert_int_equal(hbitmap_granules((HBITMAP_MAX_GRANULES << 16) + 1, 16),
                     HBITMAP_MAX_GRANULES + 1);
    assert_null(hbitmap_new((HBITMAP_MAX_GRANULES << 16) + 1, 16));
    assert_null(hbitmap_new(eib, 16));
    assert_null(hbitmap_new(UINT64_MAX, 9));
    assert_null(hbitmap_new_checked(eib, 16, &err));
    assert_string_equal(error_get_pretty(err),
                        "a bitmap of 1152921504606846976 bytes at granularity "
                        "65536 would need 17592186044416 bits (at most "
                        "4294967296): use a larger granularity");
    error_free(err);
    err = NULL;
    /* The same disk at a coarse enough granularity is fine. */
    HBitmap *hb = hbitmap_new_checked(eib, 31, &err);
    assert_non_null(hb);
    assert_null(err);
    hbitmap_set(hb, eib - 1, 1);
    assert_int_equal(hbitmap_next_dirty(hb, 0, UINT64_MAX),
                     (int64_t)(eib - (1ULL << 31)));
    hbitmap_free(hb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_small),
        cmocka_unit_test(test_random_large),
        cmocka_unit_test(test_sparse_search),
        cmocka_unit_test(test_count_edges),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_serialize),
        cmocka_unit_test(test_bounded_search),
        cmocka_unit_test(test_size_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
