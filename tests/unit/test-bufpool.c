/*
 * util/bufpool: buffers are page-aligned and writable over their whole
 * size; a freed buffer of a class is what the next allocation of that
 * class gets back (in a build without AddressSanitizer, which turns the
 * pool off); what waits is bounded; trim empties it; sizes outside the
 * classes work too.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "util/bufpool.h"

#define POOLED bufpool_pooled()

#define KiB 1024u
#define MiB (1024u * 1024u)

static void test_aligned_and_usable(void **state)
{
    static const size_t sizes[] = {
        1, 4 * KiB, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 256 * KiB,
        1 * MiB + 4 * KiB, 32 * MiB, 32 * MiB + 1,
    };

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *p = bufpool_alloc(sizes[i]);

        assert_int_equal((uintptr_t)p % 4096, 0);
        memset(p, 0xa5, sizes[i]);
        assert_int_equal(p[sizes[i] - 1], 0xa5);
        bufpool_free(p, sizes[i]);
    }
    bufpool_trim();
    assert_int_equal(bufpool_cached_bytes(), 0);
}

static void test_reuse_within_a_class(void **state)
{
    void *a = bufpool_alloc(256 * KiB);
    void *b;

    bufpool_free(a, 256 * KiB);
    assert_int_equal(bufpool_cached_bytes(), POOLED ? 256 * KiB : 0);
    /* 200 KiB is the same class (256 KiB): the same buffer comes back */
    b = bufpool_alloc(200 * KiB);
    if (POOLED) {
        assert_ptr_equal(a, b);
    }
    assert_int_equal(bufpool_cached_bytes(), 0);
    bufpool_free(b, 200 * KiB);
    bufpool_trim();
}

static void test_what_waits_is_bounded(void **state)
{
    enum { N = BUFPOOL_KEEP_BYTES / (4 * MiB) + 4 };
    void *p[N];

    for (int i = 0; i < N; i++) {
        p[i] = bufpool_alloc(4 * MiB);
    }
    for (int i = 0; i < N; i++) {
        bufpool_free(p[i], 4 * MiB);
    }
    assert_true(bufpool_cached_bytes() <= BUFPOOL_KEEP_BYTES);
    if (POOLED) {
        assert_int_equal(bufpool_cached_bytes(), BUFPOOL_KEEP_BYTES);
    }
    bufpool_trim();
    assert_int_equal(bufpool_cached_bytes(), 0);
    bufpool_free(NULL, 4 * MiB);           /* nothing */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aligned_and_usable),
        cmocka_unit_test(test_reuse_within_a_class),
        cmocka_unit_test(test_what_waits_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
