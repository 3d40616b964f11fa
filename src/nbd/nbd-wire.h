/*
 * Encoding and decoding of NBD transmission-phase messages: the request
 * header, simple replies and structured reply chunks.  Pure functions over
 * byte buffers, so they are unit-tested and fuzzed without sockets.
 */
#ifndef BJ_NBD_NBD_WIRE_H
#define BJ_NBD_NBD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "nbd/nbd-proto.h"

static inline void nbd_put16(uint8_t *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = v;
}

static inline void nbd_put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static inline void nbd_put64(uint8_t *p, uint64_t v)
{
    nbd_put32(p, v >> 32);
    nbd_put32(p + 4, (uint32_t)v);
}

static inline uint16_t nbd_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t nbd_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t nbd_get64(const uint8_t *p)
{
    return (uint64_t)nbd_get32(p) << 32 | nbd_get32(p + 4);
}

typedef struct NbdRequest {
    uint16_t flags;     /* NBD_CMD_FLAG_* */
    uint16_t type;      /* NBD_CMD_* */
    uint64_t handle;
    uint64_t offset;
    uint32_t length;
} NbdRequest;

/* Decodes a request header; false if the magic is wrong. */
bool nbd_decode_request(const uint8_t buf[NBD_REQUEST_SIZE], NbdRequest *req);
/* The inverse, for tests and fuzzers. */
void nbd_encode_request(uint8_t buf[NBD_REQUEST_SIZE], const NbdRequest *req);

/* Each encoder writes exactly the bytes it returns. */
size_t nbd_encode_simple_reply(uint8_t buf[NBD_SIMPLE_REPLY_SIZE],
                               uint32_t nbd_error, uint64_t handle);
/* NONE chunk (always DONE). */
size_t nbd_encode_none_chunk(uint8_t buf[NBD_CHUNK_HEADER_SIZE],
                             uint64_t handle);
/* OFFSET_DATA header and offset (28 bytes); datalen bytes follow. */
#define NBD_OFFSET_DATA_HEADER_SIZE (NBD_CHUNK_HEADER_SIZE + 8)
size_t nbd_encode_offset_data(uint8_t buf[NBD_OFFSET_DATA_HEADER_SIZE],
                              uint16_t flags, uint64_t handle,
                              uint64_t offset, uint32_t datalen);
#define NBD_OFFSET_HOLE_SIZE (NBD_CHUNK_HEADER_SIZE + 12)
size_t nbd_encode_offset_hole(uint8_t buf[NBD_OFFSET_HOLE_SIZE],
                              uint16_t flags, uint64_t handle,
                              uint64_t offset, uint32_t hole_size);
/* BLOCK_STATUS header and context id (24 bytes); nextents descriptors of
 * NBD_EXTENT_SIZE bytes follow. */
#define NBD_BLOCK_STATUS_HEADER_SIZE (NBD_CHUNK_HEADER_SIZE + 4)
#define NBD_EXTENT_SIZE 8
size_t nbd_encode_block_status(uint8_t buf[NBD_BLOCK_STATUS_HEADER_SIZE],
                               uint16_t flags, uint64_t handle,
                               uint32_t context_id, uint32_t nextents);
size_t nbd_encode_extent(uint8_t buf[NBD_EXTENT_SIZE], uint32_t length,
                         uint32_t status);
/* ERROR chunk: error, message length and message (cut to
 * NBD_MAX_STRING_SIZE).  buf holds NBD_ERROR_CHUNK_MAX bytes. */
#define NBD_ERROR_CHUNK_MAX (NBD_CHUNK_HEADER_SIZE + 6 + NBD_MAX_STRING_SIZE)
size_t nbd_encode_error_chunk(uint8_t *buf, uint16_t flags, uint64_t handle,
                              uint32_t nbd_error, const char *msg);

/* Maps an errno (either sign) to the protocol's error numbers. */
uint32_t nbd_errno_to_wire(int err);
const char *nbd_cmd_name(uint16_t type);

#endif
