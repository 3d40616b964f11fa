/*
 * Client-side NBD byte builders for the protocol unit tests
 * (test-nbd-proto.c, test-nbd-meta.c): a buffer the bytes a client would
 * send are appended to, big-endian as on the wire.
 */
#ifndef BJ_TESTS_NBD_BYTES_H
#define BJ_TESTS_NBD_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nbd/nbd-wire.h"

typedef struct Buf {
    uint8_t b[8192];
    size_t n;           /* bytes used */
} Buf;

static inline void b16(Buf *b, uint16_t v)
{
    nbd_put16(b->b + b->n, v);
    b->n += 2;
}

static inline void b32(Buf *b, uint32_t v)
{
    nbd_put32(b->b + b->n, v);
    b->n += 4;
}

static inline void b64(Buf *b, uint64_t v)
{
    nbd_put64(b->b + b->n, v);
    b->n += 8;
}

/* The string without its NUL, as NBD sends names. */
static inline void bstr(Buf *b, const char *s)
{
    memcpy(b->b + b->n, s, strlen(s));
    b->n += strlen(s);
}

#endif
