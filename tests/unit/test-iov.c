/*
 * IOVector: growth and merging, slicing with concat, copies in and out at
 * offsets that straddle elements, memset, zero detection, aligned alloc.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "util/iov.h"

static void test_add_and_merge(void **state)
{
    char buf[64];
    IOVector v;
    iov_vec_init(&v, 0);
    iov_vec_add(&v, buf, 8);
    iov_vec_add(&v, buf + 8, 8);      /* contiguous: merged */
    assert_int_equal(v.niov, 1);
    assert_int_equal(v.size, 16);
    iov_vec_add(&v, buf + 32, 4);     /* gap: new element */
    iov_vec_add(&v, buf, 0);          /* empty: ignored */
    assert_int_equal(v.niov, 2);
    assert_int_equal(v.size, 20);
    for (int i = 0; i < 20; i++) {    /* grows past the initial array */
        iov_vec_add(&v, buf + (i % 2 ? 40 : 50), 1);
    }
    assert_int_equal(v.niov, 22);
    assert_int_equal(v.size, 40);
    iov_vec_reset(&v);
    assert_int_equal(v.niov, 0);
    assert_int_equal(v.size, 0);
    iov_vec_destroy(&v);
}

static void test_init_buf(void **state)
{
    char buf[10] = "abcdefghi";
    IOVector v;
    iov_vec_init_buf(&v, buf, 9);
    assert_int_equal(v.niov, 1);
    assert_int_equal(v.nalloc, -1);
    assert_int_equal(v.size, 9);
    assert_ptr_equal(v.iov[0].iov_base, buf);
    char out[4] = { 0 };
    assert_int_equal(iov_vec_to_buf(&v, 3, out, 3), 3);
    assert_memory_equal(out, "def", 3);
    iov_vec_destroy(&v);              /* nothing to free, must not crash */
}

/* Three pieces of a 30-byte pattern: 0..9 | 10..19 | 20..29. */
static void make3(IOVector *v, char *a, char *b, char *c)
{
    iov_vec_init(v, 1);
    iov_vec_add(v, a, 10);
    iov_vec_add(v, b, 10);
    iov_vec_add(v, c, 10);
}

static void test_copy_straddling(void **state)
{
    char mem[50];
    char *a = mem, *b = mem + 20, *c = mem + 40;
    IOVector v;
    make3(&v, a, b, c);
    char pat[30];
    for (int i = 0; i < 30; i++) {
        pat[i] = (char)('A' + i);
    }
    assert_int_equal(iov_vec_from_buf(&v, 0, pat, 30), 30);
    assert_memory_equal(a, pat, 10);
    assert_memory_equal(c, pat + 20, 10);

    char out[30];
    assert_int_equal(iov_vec_to_buf(&v, 5, out, 20), 20);
    assert_memory_equal(out, pat + 5, 20);
    /* Past the end: short copy. */
    assert_int_equal(iov_vec_to_buf(&v, 25, out, 20), 5);
    assert_memory_equal(out, pat + 25, 5);
    assert_int_equal(iov_vec_to_buf(&v, 30, out, 1), 0);

    assert_int_equal(iov_vec_memset(&v, 8, 0, 14), 14);
    assert_true(iov_is_zero(v.iov, v.niov, 8, 14));
    assert_false(iov_is_zero(v.iov, v.niov, 7, 14));
    assert_false(iov_is_zero(v.iov, v.niov, 8, 15));
    assert_int_equal(a[7], 'H');
    assert_int_equal(c[2], 'W');
    iov_vec_destroy(&v);
}

static void test_concat(void **state)
{
    /* Gaps between the pieces so that adding them cannot merge. */
    char mem[50];
    char *a = mem, *b = mem + 20, *c = mem + 40;
    IOVector src, dst;
    make3(&src, a, b, c);
    iov_vec_init(&dst, 0);
    iov_vec_concat(&dst, &src, 7, 16);  /* a[7..9], b[0..9], c[0..2] */
    assert_int_equal(dst.size, 16);
    assert_int_equal(dst.niov, 3);
    assert_ptr_equal(dst.iov[0].iov_base, a + 7);
    assert_int_equal(dst.iov[0].iov_len, 3);
    assert_ptr_equal(dst.iov[2].iov_base, c);
    assert_int_equal(dst.iov[2].iov_len, 3);
    iov_vec_concat(&dst, &src, 30, 0);  /* empty slice at the end */
    assert_int_equal(dst.size, 16);
    iov_vec_destroy(&dst);
    iov_vec_destroy(&src);
}

static void test_is_zero_large(void **state)
{
    size_t n = 1 << 20;
    char *p = calloc(1, n);
    assert_non_null(p);
    IOVector v;
    iov_vec_init_buf(&v, p, n);
    assert_true(iov_vec_to_buf(&v, 0, p, 0) == 0);
    assert_true(iov_is_zero(v.iov, v.niov, 0, n));
    p[n - 1] = 1;
    assert_false(iov_is_zero(v.iov, v.niov, 0, n));
    assert_true(iov_is_zero(v.iov, v.niov, 0, n - 1));
    p[3] = 1;
    assert_false(iov_is_zero(v.iov, v.niov, 0, 16));
    assert_true(iov_is_zero(v.iov, v.niov, 4, 0));
    free(p);
}

static void test_aligned_alloc(void **state)
{
    void *p = blk_aligned_alloc(4096, 12345);
    assert_int_equal((uintptr_t)p % 4096, 0);
    memset(p, 1, 12345);
    free(p);
    p = blk_aligned_alloc(512, 0);
    assert_non_null(p);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_and_merge),
        cmocka_unit_test(test_init_buf),
        cmocka_unit_test(test_copy_straddling),
        cmocka_unit_test(test_concat),
        cmocka_unit_test(test_is_zero_large),
        cmocka_unit_test(test_aligned_alloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
