/*
 * NBD wire constants, from the NBD protocol document (doc/proto.md of the
 * NetworkBlockDevice/nbd repository).  Everything on the wire is big-endian.
 *
 * Handshake (fixed newstyle):
 *   S: NBDMAGIC, IHAVEOPT, 16-bit handshake flags
 *   C: 32-bit client flags
 *   C: IHAVEOPT, 32-bit option, 32-bit length, data      (repeated)
 *   S: REPLY_MAGIC, option, reply type, length, data      (one or more)
 * until NBD_OPT_EXPORT_NAME, or NBD_OPT_GO answered with NBD_REP_ACK.
 *
 * Transmission: 28-byte requests (+ payload for WRITE); replies are simple
 * (16 bytes + READ payload) or structured chunks (20-byte header + payload).
 */
#ifndef BJ_NBD_NBD_PROTO_H
#define BJ_NBD_NBD_PROTO_H

#include <stdint.h>

/* ---- magics ---- */
#define NBD_MAGIC                  UINT64_C(0x4e42444d41474943) /* NBDMAGIC */
#define NBD_IHAVEOPT               UINT64_C(0x49484156454F5054) /* IHAVEOPT */
#define NBD_REP_MAGIC              UINT64_C(0x0003e889045565a9)
#define NBD_REQUEST_MAGIC          UINT32_C(0x25609513)
#define NBD_SIMPLE_REPLY_MAGIC     UINT32_C(0x67446698)
#define NBD_STRUCTURED_REPLY_MAGIC UINT32_C(0x668e33ef)

/* ---- handshake flags (server, 16 bits) ---- */
#define NBD_FLAG_FIXED_NEWSTYLE    (1u << 0)
#define NBD_FLAG_NO_ZEROES         (1u << 1)

/* ---- client flags (32 bits) ---- */
#define NBD_FLAG_C_FIXED_NEWSTYLE  (1u << 0)
#define NBD_FLAG_C_NO_ZEROES       (1u << 1)

/* ---- transmission flags (16 bits) ---- */
#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_ROTATIONAL        (1u << 4)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF           (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBD_FLAG_SEND_RESIZE       (1u << 9)
#define NBD_FLAG_SEND_CACHE        (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO    (1u << 11)

/* ---- options ---- */
#define NBD_OPT_EXPORT_NAME        1
#define NBD_OPT_ABORT              2
#define NBD_OPT_LIST               3
#define NBD_OPT_PEEK_EXPORT        4
#define NBD_OPT_STARTTLS           5
#define NBD_OPT_INFO               6
#define NBD_OPT_GO                 7
#define NBD_OPT_STRUCTURED_REPLY   8
#define NBD_OPT_LIST_META_CONTEXT  9
#define NBD_OPT_SET_META_CONTEXT   10

/* ---- option replies ---- */
#define NBD_REP_ACK                1
#define NBD_REP_SERVER             2
#define NBD_REP_INFO               3
#define NBD_REP_META_CONTEXT       4
#define NBD_REP_FLAG_ERROR         (1u << 31)
#define NBD_REP_ERR_UNSUP          (NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY         (NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID        (NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_PLATFORM       (NBD_REP_FLAG_ERROR | 4)
#define NBD_REP_ERR_TLS_REQD       (NBD_REP_FLAG_ERROR | 5)
#define NBD_REP_ERR_UNKNOWN        (NBD_REP_FLAG_ERROR | 6)
#define NBD_REP_ERR_SHUTDOWN       (NBD_REP_FLAG_ERROR | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8)
#define NBD_REP_ERR_TOO_BIG        (NBD_REP_FLAG_ERROR | 9)

/* ---- NBD_REP_INFO types ---- */
#define NBD_INFO_EXPORT            0
#define NBD_INFO_NAME              1
#define NBD_INFO_DESCRIPTION       2
#define NBD_INFO_BLOCK_SIZE        3

/* ---- commands ---- */
#define NBD_CMD_READ               0
#define NBD_CMD_WRITE              1
#define NBD_CMD_DISC               2
#define NBD_CMD_FLUSH              3
#define NBD_CMD_TRIM               4
#define NBD_CMD_CACHE              5
#define NBD_CMD_WRITE_ZEROES       6
#define NBD_CMD_BLOCK_STATUS       7

/* ---- command flags ---- */
#define NBD_CMD_FLAG_FUA           (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE       (1u << 1)
#define NBD_CMD_FLAG_DF            (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE       (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO     (1u << 4)

/* ---- structured replies ---- */
#define NBD_REPLY_FLAG_DONE        (1u << 0)
#define NBD_REPLY_TYPE_NONE        0
#define NBD_REPLY_TYPE_OFFSET_DATA 1
#define NBD_REPLY_TYPE_OFFSET_HOLE 2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR       ((1u << 15) | 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) | 2)

/* ---- base:allocation flags ---- */
#define NBD_STATE_HOLE             (1u << 0)
#define NBD_STATE_ZERO             (1u << 1)

/* ---- error values (the protocol's own numbering) ---- */
#define NBD_EPERM                  1
#define NBD_EIO                    5
#define NBD_ENOMEM                 12
#define NBD_EINVAL                 22
#define NBD_ENOSPC                 28
#define NBD_EOVERFLOW              75
#define NBD_ENOTSUP                95
#define NBD_ESHUTDOWN              108

/* ---- sizes ---- */
#define NBD_REQUEST_SIZE           28
#define NBD_SIMPLE_REPLY_SIZE      16
#define NBD_CHUNK_HEADER_SIZE      20
#define NBD_OPT_HEADER_SIZE        16
#define NBD_OPT_REPLY_HEADER_SIZE  20
/* Strings (export names, descriptions, messages, context names). */
#define NBD_MAX_STRING_SIZE        4096
/*
 * Largest READ/WRITE payload we accept: 2^25 is the largest length the
 * protocol says must not be treated as a denial of service, and it is the
 * maximum block size we advertise.
 */
#define NBD_MAX_PAYLOAD            (32u * 1024 * 1024)

/* Metadata contexts we serve and the ids we give them at
 * NBD_OPT_SET_META_CONTEXT (NBD_OPT_LIST_META_CONTEXT answers id 0). */
#define NBD_META_BASE_ALLOCATION   "base:allocation"
#define NBD_META_ID_BASE_ALLOCATION 1
#define NBD_META_ALLOCATION_DEPTH  "qemu:allocation-depth"
#define NBD_META_ID_ALLOCATION_DEPTH 2
#define NBD_META_DIRTY_BITMAP_PREFIX "qemu:dirty-bitmap:"
#define NBD_META_ID_DIRTY_BITMAP   3   /* + index of the export's bitmap */

/* ---- qemu:dirty-bitmap flags ---- */
#define NBD_STATE_DIRTY            (1u << 0)

#endif
