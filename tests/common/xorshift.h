/*
 * xorshift64 (Marsaglia): the deterministic random numbers of the unit
 * tests and fuzz harnesses.  Each file keeps its own state with its own
 * fixed seed, so a run draws the same sequence every time.
 */
#ifndef BJ_TESTS_XORSHIFT_H
#define BJ_TESTS_XORSHIFT_H

#include <stdint.h>

/* Advances *state (which must not be 0) and returns its new value. */
static inline uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

#endif
