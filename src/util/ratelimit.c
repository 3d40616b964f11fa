/*
 * Byte-rate limiter: see ratelimit.h for the guarantee it gives.
 */
#include "util/ratelimit.h"

#include <assert.h>

#define NS_PER_SEC 1000000000LL

void ratelimit_init(RateLimit *rl)
{
    rl->speed = 0;
    rl->last_ns = 0;
}

void ratelimit_set_speed(RateLimit *rl, uint64_t speed, int64_t now_ns)
{
    /* Going from unlimited to limited starts the clock now, so the first
     * chunk waits its own share too. */
    if (rl->speed == 0 || rl->last_ns > now_ns) {
        rl->last_ns = now_ns;
    }
    rl->speed = speed;
}

int64_t ratelimit_delay(const RateLimit *rl, uint64_t bytes, int64_t now_ns)
{
    if (rl->speed == 0 || bytes == 0) {
        return 0;
    }
    /* The chunk's share of time; __int128 keeps bytes * 1e9 exact. */
    unsigned __int128 share = (unsigned __int128)bytes * NS_PER_SEC
                              / rl->speed;
    if (share > INT64_MAX / 2) {
        share = INT64_MAX / 2;
    }
    int64_t start = rl->last_ns + (int64_t)share;
    return start > now_ns ? start - now_ns : 0;
}

void ratelimit_account(RateLimit *rl, int64_t now_ns)
{
    rl->last_ns = now_ns;
}

uint64_t ratelimit_chunk(const RateLimit *rl, uint64_t max_chunk,
                         uint64_t align)
{
    assert(align > 0);
    uint64_t chunk = max_chunk;
    if (rl->speed && rl->speed / 10 < chunk) {
        chunk = rl->speed / 10;
    }
    chunk -= chunk % align;
    return chunk ? chunk : align;
}
