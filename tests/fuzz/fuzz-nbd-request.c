/*
 * Fuzz target for the NBD transmission request parser and validator, and
 * the reply encoders driven by what it accepts.
 *
 * Input: 16 bytes of negotiated parameters (export size, transmission
 * flags, structured/meta, minimum block size), then a stream of requests as
 * a client would send them; write payloads are skipped as the server would.
 * With libFuzzer (-DBJ_LIBFUZZER) that is all; without it, the replay runs a
 * deterministic corpus of valid and edge-case requests, mutated with a
 * fixed seed.
 *
 * Properties checked: an accepted request is inside the export, aligned,
 * within the maximum block size, uses only flags the command allows and
 * that were advertised, and never writes to a read-only export; only writes
 * carry payload; refused requests carry a protocol error number.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "nbd/nbd-proto.h"
#include "nbd/nbd-request.h"
#include "nbd/nbd-wire.h"
#include "tests/common/xorshift.h"


static void check_accepted(const NbdTransmitParams *p, const NbdRequest *r)
{
    bool ranged = r->type != NBD_CMD_FLUSH;

    if (ranged && (r->offset > p->size || r->length > p->size - r->offset)) {
        abort();
    }
    if (ranged && p->min_block > 1 &&
        (r->offset % p->min_block || r->length % p->min_block)) {
        abort();
    }
    if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) &&
        r->length > p->max_block) {
        abort();
    }
    if ((p->tflags & NBD_FLAG_READ_ONLY) &&
        (r->type == NBD_CMD_WRITE || r->type == NBD_CMD_TRIM ||
         r->type == NBD_CMD_WRITE_ZEROES)) {
        abort();
    }
    if ((r->flags & NBD_CMD_FLAG_DF) &&
        (r->type != NBD_CMD_READ || !(p->tflags & NBD_FLAG_SEND_DF))) {
        abort();
    }
    if ((r->flags & NBD_CMD_FLAG_FAST_ZERO) &&
        !(p->tflags & NBD_FLAG_SEND_FAST_ZERO)) {
        abort();
    }
    if (r->type == NBD_CMD_BLOCK_STATUS && !p->meta_base_allocation &&
        !p->meta_other) {
        abort();
    }
    if (r->type > NBD_CMD_BLOCK_STATUS || r->type == NBD_CMD_DISC) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t out[NBD_ERROR_CHUNK_MAX];
    size_t pos = 16;

    if (size < 16) {
        return 0;
    }
    bool structured = data[11] & 1;
    /* Every member is set here: a member left out reads as zero, never as
     * whatever the stack held (that made the replay abort at random). */
    NbdTransmitParams p = {
        .size = nbd_get64(data) >> (data[8] % 64),
        .tflags = nbd_get16(data + 9) | NBD_FLAG_HAS_FLAGS,
        .structured = structured,
        .meta_base_allocation = structured && (data[11] & 2),
        .meta_other = structured && (data[11] & 4) ? 1 : 0,
        .min_block = 1u << (data[12] % 17),
        .max_block = NBD_MAX_PAYLOAD,
    };
    if (!p.structured) {
        p.tflags &= ~NBD_FLAG_SEND_DF;
    }

    while (size - pos >= NBD_REQUEST_SIZE) {
        NbdRequest r;
        if (!nbd_decode_request(data + pos, &r)) {
            break;      /* the server hangs up on a bad magic */
        }
        pos += NBD_REQUEST_SIZE;
        NbdRequestCheck c = nbd_request_check(&p, &r);
        switch (c.verdict) {
        case NBD_REQ_OK:
            check_accepted(&p, &r);
            if (r.type == NBD_CMD_READ && p.structured && r.length) {
                nbd_encode_offset_data(out, NBD_REPLY_FLAG_DONE, r.handle,
                                       r.offset, r.length);
            }
            break;
        case NBD_REQ_ERROR:
            if (c.nbd_error == 0 || !c.why) {
                abort();
            }
            if (p.structured) {
                nbd_encode_error_chunk(out, NBD_REPLY_FLAG_DONE, r.handle,
                                       c.nbd_error, c.why);
            } else {
                nbd_encode_simple_reply(out, c.nbd_error, r.handle);
            }
            break;
        case NBD_REQ_DISC:
            if (r.type != NBD_CMD_DISC) {
                abort();
            }
            return 0;
        case NBD_REQ_HARD_CLOSE:
            if (r.type != NBD_CMD_WRITE || r.length <= NBD_MAX_PAYLOAD) {
                abort();
            }
            return 0;
        }
        if (c.payload && r.type != NBD_CMD_WRITE) {
            abort();
        }
        if (c.payload > size - pos) {
            break;      /* the client hung up mid-payload */
        }
        pos += c.payload;
    }
    return 0;
}

#ifndef BJ_LIBFUZZER

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint64_t rnd(void)
{
    return xorshift64(&rng_state);
}

static const uint64_t interesting[] = {
    0, 1, 511, 512, 513, 4096, 65536, 1 << 20, (1 << 20) - 1, NBD_MAX_PAYLOAD,
    NBD_MAX_PAYLOAD + 1, 0x7fffffff, 0xffffffff, 1ull << 40, INT64_MAX,
    UINT64_MAX, UINT64_MAX - 511,
};
#define N_INTERESTING (sizeof(interesting) / sizeof(interesting[0]))

static size_t put_req(uint8_t *b, uint16_t type, uint16_t flags,
                      uint64_t off, uint32_t len)
{
    NbdRequest r = { .type = type, .flags = flags, .handle = rnd(),
                     .offset = off, .length = len };
    nbd_encode_request(b, &r);
    return NBD_REQUEST_SIZE;
}

static size_t make_input(uint8_t *b, size_t cap)
{
    size_t n = 0;

    /* parameters: 1 MiB export, everything advertised */
    nbd_put64(b, 1 << 20);
    b[8] = 0;
    nbd_put16(b + 9, NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                     NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                     NBD_FLAG_SEND_DF | NBD_FLAG_SEND_FAST_ZERO |
                     (rnd() % 2 ? NBD_FLAG_READ_ONLY : 0));
    b[11] = rnd() % 8;
    b[12] = rnd() % 3 ? 0 : 9;
    memset(b + 13, 0, 3);
    n = 16;

    unsigned nreq = 1 + rnd() % 8;
    for (unsigned i = 0; i < nreq && n + NBD_REQUEST_SIZE + 64 <= cap; i++) {
        uint16_t type = rnd() % 10;
        uint16_t flags = rnd() % 3 ? 0 : (uint16_t)(1u << rnd() % 6);
        uint64_t off = rnd() % 2 ? (rnd() % 2048) * 512
                                 : interesting[rnd() % N_INTERESTING];
        uint32_t len = rnd() % 2 ? (uint32_t)(rnd() % 64)
                                 : (uint32_t)interesting[rnd() % N_INTERESTING];
        n += put_req(b + n, type, flags, off, len);
        if (type == NBD_CMD_WRITE && len <= 64) {
            memset(b + n, 0xab, len);     /* the payload */
            n += len;
        }
    }
    return n;
}

int fuzz_generated_replay(void)
{
    unsigned iters = 20000;
    uint8_t work[1024];

    for (unsigned i = 0; i < iters; i++) {
        size_t len = make_input(work, sizeof(work));
        if (i % 2) {        /* and a few raw byte mutations on top */
            unsigned m = 1 + rnd() % 3;
            for (unsigned k = 0; k < m; k++) {
                work[rnd() % len] ^= (uint8_t)(1u << rnd() % 8);
            }
            if (rnd() % 4 == 0) {
                len = 16 + rnd() % (len - 15);
            }
        }
        uint8_t *in = malloc(len);   /* exact size: ASan sees over-reads */
        assert(in);
        memcpy(in, work, len);
        LLVMFuzzerTestOneInput(in, len);
        free(in);
    }
    printf("nbd request fuzz: %u inputs, no crash\n", iters);
    return 0;
}

#endif
