/*
 * The rate limiter: no initial burst, the limit holds over every window
 * from the first chunk on, no credit saved while idle, speed changes take
 * effect at once.  Pure arithmetic on a simulated clock.
 */
#include <stdint.h>

#include "testutil.h"

#include "util/ratelimit.h"

#define SEC 1000000000LL

/* Sends `chunks` chunks as fast as the limiter allows from t0; records
 * start times. */
static void simulate(RateLimit *rl, uint64_t chunk, int chunks, int64_t t0,
                     int64_t *starts)
{
    int64_t now = t0;
    for (int i = 0; i < chunks; i++) {
        now += ratelimit_delay(rl, chunk, now);
        assert_int_equal(ratelimit_delay(rl, chunk, now), 0);
        ratelimit_account(rl, now);
        starts[i] = now;
        now += 1000;     /* the copy itself takes a microsecond */
    }
}

static void test_unlimited(void **state)
{
    RateLimit rl;
    ratelimit_init(&rl);
    assert_int_equal(ratelimit_delay(&rl, 1 << 30, 5), 0);
    assert_int_equal(ratelimit_chunk(&rl, 512 * 1024, 65536), 512 * 1024);
}

static void test_first_chunk_is_throttled(void **state)
{
    RateLimit rl;
    ratelimit_init(&rl);
    ratelimit_set_speed(&rl, 1024 * 1024, 10 * SEC);
    /* 512 KiB at 1 MiB/s: half a second before the first one starts. */
    assert_int_equal(ratelimit_delay(&rl, 512 * 1024, 10 * SEC), SEC / 2);
}

static void test_every_window(void **state)
{
    const uint64_t speed = 1000000, chunk = 65536;
    int64_t starts[200];
    RateLimit rl;
    ratelimit_init(&rl);
    ratelimit_set_speed(&rl, speed, 0);
    simulate(&rl, chunk, 200, 0, starts);
    /* Any window [a, a + W], W >= 1 s, starting at a chunk start or at
     * the moment the limit was set: bytes started <= speed * W. */
    for (int i = -1; i < 200; i++) {
        int64_t a = i < 0 ? 0 : starts[i] - 1;
        for (int64_t w = SEC; w <= 5 * SEC; w += SEC / 2) {
            uint64_t bytes = 0;
            for (int k = 0; k < 200; k++) {
                if (starts[k] > a && starts[k] <= a + w) {
                    bytes += chunk;
                }
            }
            /* one chunk of slack for a window opening just before a
             * start that was earned before it */
            assert_true(bytes <= speed * (uint64_t)w / SEC +
                        (i < 0 ? 0 : chunk));
        }
    }
    /* ... and the average is the speed (within a chunk). */
    uint64_t total = 199 * chunk;
    double rate = (double)total * SEC / (double)(starts[199] - starts[0]);
    assert_true(rate <= speed * 1.01 && rate >= speed * 0.95);
}

static void test_no_saved_credit(void **state)
{
    RateLimit rl;
    ratelimit_init(&rl);
    ratelimit_set_speed(&rl, 1000, 0);
    ratelimit_account(&rl, 0 + ratelimit_delay(&rl, 100, 0));
    /* Idle for an hour: the next chunk still waits its own share. */
    int64_t later = 3600 * SEC;
    assert_int_equal(ratelimit_delay(&rl, 100, later), 0);
    ratelimit_account(&rl, later);
    assert_int_equal(ratelimit_delay(&rl, 100, later), SEC / 10);
}

static void test_speed_change(void **state)
{
    RateLimit rl;
    ratelimit_init(&rl);
    ratelimit_set_speed(&rl, 1, 0);
    assert_true(ratelimit_delay(&rl, 4096, 0) > 1000 * SEC);
    ratelimit_set_speed(&rl, 4096, 0);
    assert_int_equal(ratelimit_delay(&rl, 4096, 0), SEC);
    ratelimit_set_speed(&rl, 0, 0);
    assert_int_equal(ratelimit_delay(&rl, 4096, 0), 0);
    /* chunk size follows the speed: a tenth of a second, aligned */
    ratelimit_set_speed(&rl, 1024 * 1024, 0);
    assert_int_equal(ratelimit_chunk(&rl, 512 * 1024, 65536), 65536);
    ratelimit_set_speed(&rl, 100, 0);
    assert_int_equal(ratelimit_chunk(&rl, 512 * 1024, 512), 512);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_first_chunk_is_throttled),
        cmocka_unit_test(test_every_window),
        cmocka_unit_test(test_no_saved_credit),
        cmocka_unit_test(test_speed_change),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
