/*
 * Hierarchical bitmap: a granule bit array plus a summary array with one
 * bit per non-zero granule word, kept in step on every set and reset.
 */
#include "util/hbitmap.h"
#include "util/alloc.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define BITS 64

struct HBitmap {
    uint64_t size;        /* items */
    int shift;            /* items per granule = 1 << shift */
    uint64_t nbits;       /* granules */
    uint64_t nwords;      /* level-0 words */
    uint64_t *l0;
    uint64_t *l1;         /* bit w set <=> l0[w] != 0 */
    uint64_t set_bits;
};

uint64_t hbitmap_granules(uint64_t size, int gran_shift)
{
    return size ? ((size - 1) >> gran_shift) + 1 : 0;
}

HBitmap *hbitmap_new(uint64_t size, int gran_shift)
{
    assert(gran_shift >= 0 && gran_shift < 64);
    uint64_t nbits = hbitmap_granules(size, gran_shift);
    if (nbits > HBITMAP_MAX_GRANULES) {
        return NULL;
    }
    HBitmap *hb = bj_calloc(1, sizeof(*hb));
    hb->size = size;
    hb->shift = gran_shift;
    hb->nbits = nbits;
    hb->nwords = (hb->nbits + BITS - 1) / BITS;
    /* Sized by the disk: up to 512 MiB, so a failure is an error to
     * report, not a reason to abort. */
    hb->l0 = bj_try_calloc(hb->nwords, sizeof(uint64_t));
    hb->l1 = bj_try_calloc((hb->nwords + BITS - 1) / BITS + 1,
                           sizeof(uint64_t));
    if (!hb->l0 || !hb->l1) {
        hbitmap_free(hb);
        return NULL;
    }
    return hb;
}

HBitmap *hbitmap_new_checked(uint64_t size, int gran_shift, Error **errp)
{
    uint64_t n = hbitmap_granules(size, gran_shift);

    if (n > HBITMAP_MAX_GRANULES) {
        error_setg(errp, "a bitmap of %" PRIu64 " bytes at granularity %"
                   PRIu64 " would need %" PRIu64 " bits (at most %" PRIu64
                   "): use a larger granularity", size,
                   UINT64_C(1) << gran_shift, n, HBITMAP_MAX_GRANULES);
        return NULL;
    }
    HBitmap *hb = hbitmap_new(size, gran_shift);
    if (!hb) {
        error_setg_errno(errp, ENOMEM, "a bitmap of %" PRIu64 " bits", n);
    }
    return hb;
}

void hbitmap_free(HBitmap *hb)
{
    if (hb) {
        free(hb->l0);
        free(hb->l1);
        free(hb);
    }
}

uint64_t hbitmap_size(const HBitmap *hb)
{
    return hb->size;
}

int hbitmap_granularity_shift(const HBitmap *hb)
{
    return hb->shift;
}

/* Mask of bits [lo, hi] within one word. */
static uint64_t word_mask(unsigned lo, unsigned hi)
{
    uint64_t m = hi == BITS - 1 ? ~0ULL : (1ULL << (hi + 1)) - 1;
    return m & ~((1ULL << lo) - 1);
}

static void update_summary(HBitmap *hb, uint64_t w)
{
    if (hb->l0[w]) {
        hb->l1[w / BITS] |= 1ULL << (w % BITS);
    } else {
        hb->l1[w / BITS] &= ~(1ULL << (w % BITS));
    }
}

/* Granule range [first, last] touched by items [start, start+count),
 * clipped to the bitmap; false when empty. */
static bool granules(const HBitmap *hb, uint64_t start, uint64_t count,
                     uint64_t *first, uint64_t *last)
{
    if (count == 0 || start >= hb->size) {
        return false;
    }
    uint64_t end = hb->size - start < count ? hb->size : start + count;
    *first = start >> hb->shift;
    *last = (end - 1) >> hb->shift;
    return true;
}

static void change_bits(HBitmap *hb, uint64_t first, uint64_t last, bool set)
{
    for (uint64_t w = first / BITS; w <= last / BITS; w++) {
        unsigned lo = w == first / BITS ? first % BITS : 0;
        unsigned hi = w == last / BITS ? last % BITS : BITS - 1;
        uint64_t m = word_mask(lo, hi);
        uint64_t old = hb->l0[w];
        uint64_t new = set ? old | m : old & ~m;
        hb->set_bits += __builtin_popcountll(new) - __builtin_popcountll(old);
        hb->l0[w] = new;
        if ((old != 0) != (new != 0)) {
            update_summary(hb, w);
        }
    }
}

void hbitmap_set(HBitmap *hb, uint64_t start, uint64_t count)
{
    uint64_t first, last;
    if (granules(hb, start, count, &first, &last)) {
        change_bits(hb, first, last, true);
    }
}

void hbitmap_reset(HBitmap *hb, uint64_t start, uint64_t count)
{
    uint64_t first, last;
    if (granules(hb, start, count, &first, &last)) {
        change_bits(hb, first, last, false);
    }
}

void hbitmap_reset_all(HBitmap *hb)
{
    memset(hb->l0, 0, hb->nwords * sizeof(uint64_t));
    memset(hb->l1, 0, (hb->nwords + BITS - 1) / BITS * sizeof(uint64_t));
    hb->set_bits = 0;
}

bool hbitmap_get(const HBitmap *hb, uint64_t item)
{
    if (item >= hb->size) {
        return false;
    }
    uint64_t bit = item >> hb->shift;
    return (hb->l0[bit / BITS] >> (bit % BITS)) & 1;
}

uint64_t hbitmap_count(const HBitmap *hb)
{
    uint64_t items = hb->set_bits << hb->shift;
    /* The last granule may reach past the end. */
    if (hb->nbits && hbitmap_get(hb, hb->size - 1)) {
        items -= (hb->nbits << hb->shift) - hb->size;
    }
    return items;
}

/* First set granule >= bit, or nbits. */
/* First set granule >= bit, or nbits; the search may stop (nbits) once
 * it is past limit (a granule index), so a small range of a huge bitmap
 * costs a few words. */
static uint64_t find_set(const HBitmap *hb, uint64_t bit, uint64_t limit)
{
    if (bit >= hb->nbits || bit >= limit) {
        return hb->nbits;
    }
    uint64_t w = bit / BITS;
    uint64_t v = hb->l0[w] & ~((1ULL << (bit % BITS)) - 1);
    if (v) {
        return w * BITS + __builtin_ctzll(v);
    }
    /* Skip empty words through the summary. */
    uint64_t sw = (w + 1) / BITS, nsw = (hb->nwords + BITS - 1) / BITS;
    uint64_t last_sw = limit / BITS / BITS + 1;
    unsigned sb = (w + 1) % BITS;
    if (nsw > last_sw) {
        nsw = last_sw;
    }
    for (; sw < nsw; sw++, sb = 0) {
        uint64_t s = hb->l1[sw] & ~((1ULL << sb) - 1);
        if (sb == 0) {
            s = hb->l1[sw];
        }
        if (s) {
            uint64_t ww = sw * BITS + __builtin_ctzll(s);
            return ww * BITS + __builtin_ctzll(hb->l0[ww]);
        }
    }
    return hb->nbits;
}

/* First clear granule >= bit, or nbits; may stop (nbits) past limit. */
static uint64_t find_clear(const HBitmap *hb, uint64_t bit, uint64_t limit)
{
    uint64_t nw = hb->nwords;

    if (limit / BITS + 1 < nw) {
        nw = limit / BITS + 1;
    }
    for (uint64_t w = bit / BITS; w < nw; w++) {
        uint64_t v = ~hb->l0[w];
        if (w == bit / BITS) {
            v &= ~((1ULL << (bit % BITS)) - 1);
        }
        if (v) {
            uint64_t r = w * BITS + __builtin_ctzll(v);
            return r < hb->nbits ? r : hb->nbits;
        }
    }
    return hb->nbits;
}

static uint64_t range_end(const HBitmap *hb, uint64_t start, uint64_t count)
{
    return hb->size - start < count ? hb->size : start + count;
}

/* The first item in [start, start + count) whose granule find() returns
 * (find_set or find_clear), or -1. */
static int64_t next_item(const HBitmap *hb, uint64_t start, uint64_t count,
                         uint64_t (*find)(const HBitmap *, uint64_t,
                                          uint64_t))
{
    if (start >= hb->size || count == 0) {
        return -1;
    }
    uint64_t end = range_end(hb, start, count);
    uint64_t bit = find(hb, start >> hb->shift, ((end - 1) >> hb->shift) + 1);
    if (bit >= hb->nbits) {
        return -1;
    }
    uint64_t item = bit << hb->shift;
    if (item < start) {
        item = start;
    }
    return item < end ? (int64_t)item : -1;
}

int64_t hbitmap_next_dirty(const HBitmap *hb, uint64_t start, uint64_t count)
{
    return next_item(hb, start, count, find_set);
}

int64_t hbitmap_next_clean(const HBitmap *hb, uint64_t start, uint64_t count)
{
    return next_item(hb, start, count, find_clear);
}

bool hbitmap_next_dirty_area(const HBitmap *hb, uint64_t *start,
                             uint64_t end, uint64_t max_count,
                             uint64_t *count)
{
    if (end > hb->size) {
        end = hb->size;
    }
    if (*start >= end || max_count == 0) {
        return false;
    }
    int64_t d = hbitmap_next_dirty(hb, *start, end - *start);
    if (d < 0) {
        return false;
    }
    uint64_t limit = end - (uint64_t)d < max_count ? end : d + max_count;
    int64_t c = hbitmap_next_clean(hb, d, limit - d);
    *start = (uint64_t)d;
    *count = (c < 0 ? limit : (uint64_t)c) - (uint64_t)d;
    return true;
}

bool hbitmap_merge(HBitmap *dst, const HBitmap *src)
{
    if (dst->size != src->size || dst->shift != src->shift) {
        return false;
    }
    for (uint64_t w = 0; w < dst->nwords; w++) {
        uint64_t old = dst->l0[w], new = old | src->l0[w];
        if (new != old) {
            dst->set_bits += __builtin_popcountll(new) -
                             __builtin_popcountll(old);
            dst->l0[w] = new;
            update_summary(dst, w);
        }
    }
    return true;
}

size_t hbitmap_serialized_size(const HBitmap *hb, uint64_t start,
                               uint64_t count)
{
    uint64_t first, last;
    if (!granules(hb, start, count, &first, &last)) {
        return 0;
    }
    return (size_t)((last - first + 1 + 7) / 8);
}

void hbitmap_serialize(const HBitmap *hb, uint8_t *buf, uint64_t start,
                       uint64_t count)
{
    uint64_t first, last;
    if (!granules(hb, start, count, &first, &last)) {
        return;
    }
    assert(first % 8 == 0);
    size_t n = hbitmap_serialized_size(hb, start, count);
    memset(buf, 0, n);
    for (uint64_t b = first; b <= last; b++) {
        if ((hb->l0[b / BITS] >> (b % BITS)) & 1) {
            buf[(b - first) / 8] |= 1u << ((b - first) % 8);
        }
    }
}

void hbitmap_deserialize(HBitmap *hb, const uint8_t *buf, uint64_t start,
                         uint64_t count)
{
    uint64_t first, last;
    if (!granules(hb, start, count, &first, &last)) {
        return;
    }
    assert(first % 8 == 0);
    change_bits(hb, first, last, false);
    for (uint64_t b = first; b <= last; b++) {
        if ((buf[(b - first) / 8] >> ((b - first) % 8)) & 1) {
            change_bits(hb, b, b, true);
        }
    }
}
