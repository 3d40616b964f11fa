/*
 * NBD transmission-phase encoders and decoders (see nbd-wire.h).
 */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "nbd/nbd-wire.h"

bool nbd_decode_request(const uint8_t buf[NBD_REQUEST_SIZE], NbdRequest *req)
{
    if (nbd_get32(buf) != NBD_REQUEST_MAGIC) {
        return false;
    }
    req->flags = nbd_get16(buf + 4);
    req->type = nbd_get16(buf + 6);
    req->handle = nbd_get64(buf + 8);
    req->offset = nbd_get64(buf + 16);
    req->length = nbd_get32(buf + 24);
    return true;
}

void nbd_encode_request(uint8_t buf[NBD_REQUEST_SIZE], const NbdRequest *req)
{
    /* The request as it is on the wire: big-endian, no padding. */
    struct __attribute__((packed)) {
        uint32_t magic;
        uint16_t flags, type;
        uint64_t handle, offset;
        uint32_t length;
    } wire = {
        htobe32(NBD_REQUEST_MAGIC), htobe16(req->flags), htobe16(req->type),
        htobe64(req->handle), htobe64(req->offset), htobe32(req->length),
    };

    _Static_assert(sizeof(wire) == NBD_REQUEST_SIZE, "NBD request layout");
    memcpy(buf, &wire, sizeof(wire));
}

size_t nbd_encode_simple_reply(uint8_t buf[NBD_SIMPLE_REPLY_SIZE],
                               uint32_t nbd_error, uint64_t handle)
{
    nbd_put32(buf, NBD_SIMPLE_REPLY_MAGIC);
    nbd_put32(buf + 4, nbd_error);
    nbd_put64(buf + 8, handle);
    return NBD_SIMPLE_REPLY_SIZE;
}

static size_t nbd_encode_chunk_header(uint8_t buf[NBD_CHUNK_HEADER_SIZE],
                                      uint16_t flags, uint16_t type,
                                      uint64_t handle, uint32_t payload_len)
{
    nbd_put32(buf, NBD_STRUCTURED_REPLY_MAGIC);
    nbd_put16(buf + 4, flags);
    nbd_put16(buf + 6, type);
    nbd_put64(buf + 8, handle);
    nbd_put32(buf + 16, payload_len);
    return NBD_CHUNK_HEADER_SIZE;
}

size_t nbd_encode_none_chunk(uint8_t buf[NBD_CHUNK_HEADER_SIZE],
                             uint64_t handle)
{
    return nbd_encode_chunk_header(buf, NBD_REPLY_FLAG_DONE,
                                   NBD_REPLY_TYPE_NONE, handle, 0);
}

size_t nbd_encode_offset_data(uint8_t buf[NBD_OFFSET_DATA_HEADER_SIZE],
                              uint16_t flags, uint64_t handle,
                              uint64_t offset, uint32_t datalen)
{
    nbd_encode_chunk_header(buf, flags, NBD_REPLY_TYPE_OFFSET_DATA, handle,
                            8 + datalen);
    nbd_put64(buf + NBD_CHUNK_HEADER_SIZE, offset);
    return NBD_OFFSET_DATA_HEADER_SIZE;
}

size_t nbd_encode_offset_hole(uint8_t buf[NBD_OFFSET_HOLE_SIZE],
                              uint16_t flags, uint64_t handle,
                              uint64_t offset, uint32_t hole_size)
{
    nbd_encode_chunk_header(buf, flags, NBD_REPLY_TYPE_OFFSET_HOLE, handle,
                            12);
    nbd_put64(buf + NBD_CHUNK_HEADER_SIZE, offset);
    nbd_put32(buf + NBD_CHUNK_HEADER_SIZE + 8, hole_size);
    return NBD_OFFSET_HOLE_SIZE;
}

size_t nbd_encode_block_status(uint8_t buf[NBD_BLOCK_STATUS_HEADER_SIZE],
                               uint16_t flags, uint64_t handle,
                               uint32_t context_id, uint32_t nextents)
{
    nbd_encode_chunk_header(buf, flags, NBD_REPLY_TYPE_BLOCK_STATUS, handle,
                            4 + nextents * NBD_EXTENT_SIZE);
    nbd_put32(buf + NBD_CHUNK_HEADER_SIZE, context_id);
    return NBD_BLOCK_STATUS_HEADER_SIZE;
}

size_t nbd_encode_extent(uint8_t buf[NBD_EXTENT_SIZE], uint32_t length,
                         uint32_t status)
{
    nbd_put32(buf, length);
    nbd_put32(buf + 4, status);
    return NBD_EXTENT_SIZE;
}

size_t nbd_encode_error_chunk(uint8_t *buf, uint16_t flags, uint64_t handle,
                              uint32_t nbd_error, const char *msg)
{
    size_t len = msg ? strnlen(msg, NBD_MAX_STRING_SIZE) : 0;

    nbd_encode_chunk_header(buf, flags, NBD_REPLY_TYPE_ERROR, handle,
                            6 + len);
    nbd_put32(buf + NBD_CHUNK_HEADER_SIZE, nbd_error);
    nbd_put16(buf + NBD_CHUNK_HEADER_SIZE + 4, len);
    if (len) {
        memcpy(buf + NBD_CHUNK_HEADER_SIZE + 6, msg, len);
    }
    return NBD_CHUNK_HEADER_SIZE + 6 + len;
}

uint32_t nbd_errno_to_wire(int err)
{
    if (err < 0) {
        err = -err;
    }
    switch (err) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
    case EACCES:
        return NBD_EPERM;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        /* Anything else the block layer reports is an I/O failure as far
         * as the client can tell. */
        return NBD_EIO;
    }
}

const char *nbd_cmd_name(uint16_t type)
{
    static const char *const names[] = {
        [NBD_CMD_READ] = "read",
        [NBD_CMD_WRITE] = "write",
        [NBD_CMD_DISC] = "disconnect",
        [NBD_CMD_FLUSH] = "flush",
        [NBD_CMD_TRIM] = "trim",
        [NBD_CMD_CACHE] = "cache",
        [NBD_CMD_WRITE_ZEROES] = "write zeroes",
        [NBD_CMD_BLOCK_STATUS] = "block status",
    };

    if (type < sizeof(names) / sizeof(names[0]) && names[type]) {
        return names[type];
    }
    return "unknown";
}
