/*
 * Bounded waits for unit tests.  A wait that never ends (a drain that never
 * finishes, a completion that is lost) must fail its test with the file,
 * line and condition, not hang the binary until meson's 120 s timeout with
 * nothing said.  TEST_WAIT_WHILE is AIO_WAIT_WHILE with a deadline: a
 * timer ticks every 100 ms so a blocking aio_poll wakes to look at the
 * clock even when nothing else happens.  Include after cmocka.h.
 */
#ifndef BJ_TESTS_UNIT_TEST_WAIT_H
#define BJ_TESTS_UNIT_TEST_WAIT_H

#include "aio/aio.h"

#define TEST_WAIT_SECONDS 30
#define TEST_WAIT_TICK_NS (100 * 1000 * 1000LL)

static inline void test_wait_tick(void *opaque)
{
    (void)opaque;   /* only wakes aio_poll */
}

#define TEST_WAIT_WHILE(ctx, cond)                                           \
    do {                                                                     \
        AioContext *tw_ctx_ = (ctx);                                         \
        int64_t tw_deadline_ = clock_ns() + TEST_WAIT_SECONDS * 1000000000LL;\
        AioTimer *tw_tick_ = aio_timer_new(tw_ctx_, test_wait_tick, NULL);   \
        while (cond) {                                                       \
            if (clock_ns() > tw_deadline_) {                                 \
                aio_timer_free(tw_tick_);                                    \
                fail_msg("%s:%d: still waiting after %d s for: !(%s)",       \
                         __FILE__, __LINE__, TEST_WAIT_SECONDS, #cond);      \
            }                                                                \
            aio_timer_mod(tw_tick_, clock_ns() + TEST_WAIT_TICK_NS);         \
            aio_poll(tw_ctx_, true);                                         \
        }                                                                    \
        aio_timer_free(tw_tick_);                                            \
    } while (0)

#endif
