/*
 * Unit parsing and formatting for bjctl (see units.h).
 */
#include "ctl/units.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool units_parse_size(const char *s, int64_t *out)
{
    char *end;
    double v, mult = 1;

    if (!s || !isdigit((unsigned char)*s)) {
        return false;
    }
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s) {
        return false;
    }
    switch (toupper((unsigned char)*end)) {
    case 'K': mult = 1024.0; end++; break;
    case 'M': mult = 1024.0 * 1024; end++; break;
    case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (mult > 1 && (*end == 'i' || *end == 'I')) {
        end++;
        if (toupper((unsigned char)*end) != 'B') {
            return false;
        }
    }
    if (toupper((unsigned char)*end) == 'B') {
        end++;
    }
    if (*end) {
        return false;
    }
    v *= mult;
    /* 2^63 itself does not fit; doubles above it round up to it. */
    if (!(v >= 0) || v >= 9223372036854775808.0) {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

UnitsRate units_parse_rate(const char *s, int64_t *out)
{
    int64_t v;
    size_t len;

    if (!units_parse_size(s, &v)) {
        return UNITS_RATE_INVALID;
    }
    len = strlen(s);
    if (v != 0 && isdigit((unsigned char)s[len - 1])) {
        return UNITS_RATE_NO_UNIT;
    }
    *out = v;
    return UNITS_RATE_OK;
}

void units_format_size(char *buf, size_t size, double bytes)
{
    static const char *const names[] = { "B", "KiB", "MiB", "GiB", "TiB",
                                         "PiB", "EiB" };
    unsigned i = 0;

    while (bytes >= 1024 && i + 1 < sizeof(names) / sizeof(names[0])) {
        bytes /= 1024;
        i++;
    }
    if (i == 0) {
        snprintf(buf, size, "%.0f B", bytes);
    } else {
        snprintf(buf, size, "%.1f %s", bytes, names[i]);
    }
}

void units_format_duration(char *buf, size_t size, double seconds)
{
    long s;

    if (!(seconds >= 0) || seconds > 1e8) {
        snprintf(buf, size, "?");
        return;
    }
    s = (long)(seconds + 0.5);
    if (s < 60) {
        snprintf(buf, size, "%lds", s);
    } else if (s < 3600) {
        snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
    } else {
        snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    }
}

bool units_parse_seconds(const char *s, double *out)
{
    char *end;
    double v;

    if (!s || !*s) {
        return false;
    }
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !(v >= 0) || v > 1e7) {
        return false;
    }
    *out = v;
    return true;
}
