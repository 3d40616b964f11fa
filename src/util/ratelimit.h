/*
 * A byte-rate limiter for jobs.  Unlike a token bucket it gives no initial
 * burst: a chunk of n bytes may start only n/speed seconds after the
 * previous chunk started (or after the limit was set, for the first one).
 * So the bytes started in any window of W seconds are at most speed * W
 * plus one chunk, from the very first chunk on, and time spent idle or
 * paused is not saved up as credit.  Callers keep chunks small relative to
 * the speed (ratelimit_chunk) to make that one-chunk slack small.
 *
 * Not thread-safe: one limiter belongs to one job.
 */
#ifndef BJ_UTIL_RATELIMIT_H
#define BJ_UTIL_RATELIMIT_H

#include <stdint.h>

typedef struct RateLimit {
    uint64_t speed;      /* bytes per second, 0 = unlimited */
    int64_t last_ns;     /* when the previous chunk started (or set_speed) */
} RateLimit;

/* Unlimited. */
void ratelimit_init(RateLimit *rl);
/* speed 0 = unlimited.  The next chunk is timed from now_ns unless a chunk
 * was started more recently (changing the speed grants no burst). */
void ratelimit_set_speed(RateLimit *rl, uint64_t speed, int64_t now_ns);
/* Nanoseconds to wait before a chunk of bytes may start (0: now). */
int64_t ratelimit_delay(const RateLimit *rl, uint64_t bytes, int64_t now_ns);
/* Records that a chunk starts at now_ns (call when delay returned 0). */
void ratelimit_account(RateLimit *rl, int64_t now_ns);
/* The chunk size to use: max_chunk, reduced to about a tenth of a second's
 * worth at low speeds, rounded down to align (at least align). */
uint64_t ratelimit_chunk(const RateLimit *rl, uint64_t max_chunk,
                         uint64_t align);

#endif
