/*
 * Sizes and durations as operators type and read them: 50M, 1G, 512K in,
 * "1.5 GiB", "12.0 MiB/s", "1:05" out.  Binary units, as qemu-img uses.
 */
#ifndef BJ_CTL_UNITS_H
#define BJ_CTL_UNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Parses a byte count: digits with an optional fraction and an optional
 * suffix K, M, G, T (powers of 1024, case-insensitive, an optional "B" or
 * "iB" after it; a lone "B" means bytes).  Returns false when malformed or
 * too large for int64_t.
 */
bool units_parse_size(const char *s, int64_t *out);

typedef enum UnitsRate {
    UNITS_RATE_OK,
    UNITS_RATE_INVALID,       /* not a size units_parse_size accepts */
    UNITS_RATE_NO_UNIT,       /* a bare number other than 0 */
} UnitsRate;

/*
 * Parses a rate in bytes/s as units_parse_size does, but a number without
 * a unit is refused (UNITS_RATE_NO_UNIT): virsh's bandwidth is MiB/s and
 * qemu's speed bytes/s, so a bare "100" means either; "100B" is bytes.
 * 0 needs no unit.
 */
UnitsRate units_parse_rate(const char *s, int64_t *out);

/* "512 B", "1.5 KiB", "12.0 MiB", ... into buf. */
void units_format_size(char *buf, size_t size, double bytes);

/* "5s", "1:05", "2:01:05" into buf; "?" when unknown (negative). */
void units_format_duration(char *buf, size_t size, double seconds);

/* Parses a non-negative number of seconds (fractions allowed). */
bool units_parse_seconds(const char *s, double *out);

#endif
