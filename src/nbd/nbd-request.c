/*
 * Transmission request validation (see nbd-request.h).  The errors follow
 * the protocol document's advice: EINVAL for unknown commands and flags,
 * misaligned or oversized requests and reads beyond the end; ENOSPC for
 * writes beyond the end; EPERM for writes to a read-only export.
 */
#include "nbd/nbd-request.h"

static NbdRequestCheck check_error(NbdRequestCheck c, uint32_t err,
                                   const char *why)
{
    c.verdict = NBD_REQ_ERROR;
    c.nbd_error = err;
    c.why = why;
    return c;
}

NbdRequestCheck nbd_request_check(const NbdTransmitParams *p,
                                  const NbdRequest *req)
{
    NbdRequestCheck c = { .verdict = NBD_REQ_OK };
    uint16_t allowed = 0;
    bool writes = false;

    if (req->type == NBD_CMD_WRITE) {
        /* The payload follows whatever we think of the request; one we
         * refuse to buffer leaves no way to find the next header. */
        if (req->length > NBD_MAX_PAYLOAD) {
            c.verdict = NBD_REQ_HARD_CLOSE;
            c.why = "write payload too large";
            return c;
        }
        c.payload = req->length;
    }

    if (p->tflags & NBD_FLAG_SEND_FUA) {
        allowed |= NBD_CMD_FLAG_FUA;
    }
    switch (req->type) {
    case NBD_CMD_DISC:
        c.verdict = NBD_REQ_DISC;
        return c;
    case NBD_CMD_READ:
        if (p->tflags & NBD_FLAG_SEND_DF) {
            allowed |= NBD_CMD_FLAG_DF;
        }
        break;
    case NBD_CMD_WRITE:
        writes = true;
        break;
    case NBD_CMD_FLUSH:
        if (!(p->tflags & NBD_FLAG_SEND_FLUSH)) {
            return check_error(c, NBD_EINVAL, "flush not supported");
        }
        break;
    case NBD_CMD_TRIM:
        writes = true;
        break;
    case NBD_CMD_CACHE:
        break;
    case NBD_CMD_WRITE_ZEROES:
        writes = true;
        allowed |= NBD_CMD_FLAG_NO_HOLE;
        if (p->tflags & NBD_FLAG_SEND_FAST_ZERO) {
            allowed |= NBD_CMD_FLAG_FAST_ZERO;
        }
        break;
    case NBD_CMD_BLOCK_STATUS:
        allowed |= NBD_CMD_FLAG_REQ_ONE;
        if (!p->structured ||
            (!p->meta_base_allocation && !p->meta_other)) {
            return check_error(c, NBD_EINVAL,
                               "no metadata context was selected");
        }
        if (req->length == 0) {
            /* Nothing to describe; qemu-storage-daemon answers EINVAL. */
            return check_error(c, NBD_EINVAL, "block status of no bytes");
        }
        break;
    default:
        return check_error(c, NBD_EINVAL, "unknown command");
    }

    if (req->flags & ~allowed) {
        return check_error(c, NBD_EINVAL, "unsupported command flags");
    }
    if (writes && (p->tflags & NBD_FLAG_READ_ONLY)) {
        return check_error(c, NBD_EPERM, "export is read-only");
    }
    if (req->type == NBD_CMD_TRIM && !(p->tflags & NBD_FLAG_SEND_TRIM)) {
        return check_error(c, NBD_EINVAL, "trim not supported");
    }
    if (req->type == NBD_CMD_WRITE_ZEROES &&
        !(p->tflags & NBD_FLAG_SEND_WRITE_ZEROES)) {
        return check_error(c, NBD_EINVAL, "write zeroes not supported");
    }
    if (req->type == NBD_CMD_FLUSH) {
        /* offset and length are reserved; nothing else to check */
        return c;
    }

    if (req->offset > p->size || req->length > p->size - req->offset) {
        bool is_write = req->type == NBD_CMD_WRITE ||
                        req->type == NBD_CMD_WRITE_ZEROES;
        return check_error(c, is_write ? NBD_ENOSPC : NBD_EINVAL,
                           "request goes beyond the end of the export");
    }
    if (p->min_block > 1 &&
        (req->offset % p->min_block || req->length % p->min_block)) {
        return check_error(c, NBD_EINVAL,
                           "request is not aligned to the minimum block size");
    }
    if ((req->type == NBD_CMD_READ || req->type == NBD_CMD_WRITE ||
         req->type == NBD_CMD_CACHE) && req->length > p->max_block) {
        return check_error(c, NBD_EINVAL,
                           "request is larger than the maximum block size");
    }
    return c;
}
