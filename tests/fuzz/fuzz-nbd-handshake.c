/*
 * Fuzz target for the NBD option-haggling state machine.
 *
 * The input is what a client sends after the greeting (client flags, then
 * options); the first byte picks the chunk size the bytes are fed in, so the
 * machine is also exercised on arbitrary fragmentation.  With libFuzzer
 * (clang -fsanitize=fuzzer -DBJ_LIBFUZZER) that is all; without it, the
 * replay also runs a deterministic corpus: well-formed conversations
 * (GO, INFO, LIST, meta contexts, EXPORT_NAME, ABORT) mutated with a
 * fixed seed.
 *
 * Bit 0x80 of the first byte starts a shutting-down server, bit 0x40 one
 * that requires TLS (an acknowledged STARTTLS is taken as a TLS handshake
 * that succeeded).
 *
 * Properties checked: no crash or over-read; the machine never consumes
 * more than it asked for, nor anything after an acknowledged STARTTLS; a
 * TLS server never reaches DONE before TLS is up; every output after the greeting is a sequence of
 * well-formed option replies (or, after EXPORT_NAME, the export
 * information); DONE implies a known export was chosen.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "nbd/nbd-handshake.h"
#include "nbd/nbd-proto.h"
#include "nbd/nbd-wire.h"
#include "tests/common/xorshift.h"


static const NbdExportInfo exports[] = {
    { .name = "disk", .description = "d", .size = 1 << 20,
      .tflags = NBD_FLAG_SEND_FLUSH, .min_block = 512, .pref_block = 4096,
      .max_block = NBD_MAX_PAYLOAD, .handle = (void *)&exports[0] },
    { .name = "", .size = 0, .tflags = NBD_FLAG_READ_ONLY, .min_block = 1,
      .pref_block = 4096, .max_block = NBD_MAX_PAYLOAD,
      .handle = (void *)&exports[1] },
};

static bool find(void *opaque, const char *name, NbdExportInfo *info)
{
    for (size_t i = 0; i < 2; i++) {
        if (strcmp(exports[i].name, name) == 0) {
            *info = exports[i];
            return true;
        }
    }
    return false;
}

static void for_each(void *opaque, NbdExportInfoFn *fn, void *fn_opaque)
{
    for (size_t i = 0; i < 2; i++) {
        fn(&exports[i], fn_opaque);
    }
}

static const NbdExportLookup lookup = { .find = find, .for_each = for_each };

/* Checks and drops the complete option replies at the front of the output. */
static void drain_output(NbdHandshake *hs, uint32_t *last_type)
{
    while (hs->out_len >= NBD_OPT_REPLY_HEADER_SIZE &&
           nbd_get64(hs->out) == NBD_REP_MAGIC) {
        uint32_t len = nbd_get32(hs->out + 16);
        if (hs->out_len < NBD_OPT_REPLY_HEADER_SIZE + (size_t)len) {
            abort();    /* a reply is always queued whole */
        }
        *last_type = nbd_get32(hs->out + 12);
        if (*last_type == NBD_REP_ACK && len != 0) {
            abort();
        }
        nbd_handshake_output_consumed(hs, NBD_OPT_REPLY_HEADER_SIZE + len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    NbdHandshake hs;
    uint32_t last = 0;
    size_t chunk, pos = 1;

    if (size < 1) {
        return 0;
    }
    chunk = 1 + data[0] % 64;
    nbd_handshake_init(&hs, &lookup);
    if (hs.out_len != 18) {
        abort();
    }
    nbd_handshake_output_consumed(&hs, hs.out_len);
    if (data[0] & 0x80) {
        hs.shutting_down = true;
    }
    if (data[0] & 0x40) {
        hs.tls_required = true;
    }

    while (pos < size && nbd_handshake_want(&hs) > 0) {
        size_t n = size - pos < chunk ? size - pos : chunk;
        size_t used = nbd_handshake_feed(&hs, data + pos, n);
        if (used > n || used == 0 ||
            (used < n && nbd_handshake_want(&hs) != 0 &&
             !hs.starttls_pending)) {
            abort();
        }
        if (hs.tls_required && !hs.tls_active && hs.state == NBD_HS_DONE) {
            abort();
        }
        pos += used;
        drain_output(&hs, &last);
        if (hs.starttls_pending) {
            if (!hs.tls_required || hs.tls_active || last != NBD_REP_ACK) {
                abort();
            }
            hs.starttls_pending = false;
            hs.tls_active = true;
        }
    }

    switch (hs.state) {
    case NBD_HS_DONE:
        if (hs.export.handle != &exports[0] &&
            hs.export.handle != &exports[1]) {
            abort();
        }
        /* GO ends with an ACK; EXPORT_NAME with size + flags (+ zeroes) */
        if (hs.out_len != 0 && hs.out_len != 10 && hs.out_len != 134) {
            abort();
        }
        if (hs.out_len == 0 && last != NBD_REP_ACK) {
            abort();
        }
        break;
    case NBD_HS_CLOSE:
        if (!hs.close_reason) {
            abort();
        }
        /* fall through */
    default:
        if (hs.out_len != 0) {
            abort();    /* only whole option replies were queued */
        }
        break;
    }
    nbd_handshake_cleanup(&hs);
    return 0;
}

#ifndef BJ_LIBFUZZER

typedef struct Seed {
    uint8_t b[512];
    size_t n;
} Seed;

static void s16(Seed *s, uint16_t v) { nbd_put16(s->b + s->n, v); s->n += 2; }
static void s32(Seed *s, uint32_t v) { nbd_put32(s->b + s->n, v); s->n += 4; }
static void s64(Seed *s, uint64_t v) { nbd_put64(s->b + s->n, v); s->n += 8; }
static void sstr(Seed *s, const char *str)
{
    memcpy(s->b + s->n, str, strlen(str));
    s->n += strlen(str);
}

static void sopt(Seed *s, uint32_t opt, uint32_t len)
{
    s64(s, NBD_IHAVEOPT);
    s32(s, opt);
    s32(s, len);
}

static void sinfo(Seed *s, uint32_t opt, const char *name)
{
    sopt(s, opt, 4 + strlen(name) + 2 + 6);
    s32(s, strlen(name));
    sstr(s, name);
    s16(s, 3);
    s16(s, NBD_INFO_NAME);
    s16(s, NBD_INFO_DESCRIPTION);
    s16(s, NBD_INFO_BLOCK_SIZE);
}

static void smeta(Seed *s, uint32_t opt, const char *name, const char *q)
{
    sopt(s, opt, 4 + strlen(name) + 4 + 4 + strlen(q));
    s32(s, strlen(name));
    sstr(s, name);
    s32(s, 1);
    s32(s, strlen(q));
    sstr(s, q);
}

static size_t make_seeds(Seed *seeds)
{
    size_t n = 0;
    Seed *s;

    s = &seeds[n++];            /* GO with everything before it */
    s->b[s->n++] = 16;
    s32(s, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    sopt(s, NBD_OPT_STRUCTURED_REPLY, 0);
    smeta(s, NBD_OPT_LIST_META_CONTEXT, "disk", "base:");
    smeta(s, NBD_OPT_SET_META_CONTEXT, "disk", "base:allocation");
    sinfo(s, NBD_OPT_INFO, "disk");
    sopt(s, NBD_OPT_LIST, 0);
    sinfo(s, NBD_OPT_GO, "disk");

    s = &seeds[n++];            /* EXPORT_NAME of the default export */
    s->b[s->n++] = 3;
    s32(s, NBD_FLAG_C_FIXED_NEWSTYLE);
    sopt(s, 12345, 3);
    sstr(s, "abc");
    sopt(s, NBD_OPT_EXPORT_NAME, 0);

    s = &seeds[n++];            /* unknown export, then abort */
    s->b[s->n++] = 64;
    s32(s, NBD_FLAG_C_FIXED_NEWSTYLE);
    sinfo(s, NBD_OPT_GO, "nope");
    sopt(s, NBD_OPT_STARTTLS, 0);
    sopt(s, NBD_OPT_ABORT, 0);

    s = &seeds[n++];            /* TLS server: refused, STARTTLS, GO */
    s->b[s->n++] = 0x40 | 7;
    s32(s, NBD_FLAG_C_FIXED_NEWSTYLE);
    sinfo(s, NBD_OPT_GO, "disk");
    sopt(s, NBD_OPT_STARTTLS, 0);
    sopt(s, NBD_OPT_STRUCTURED_REPLY, 0);
    sinfo(s, NBD_OPT_GO, "disk");

    s = &seeds[n++];            /* old-style newstyle client */
    s->b[s->n++] = 1;
    s32(s, 0);
    sopt(s, NBD_OPT_EXPORT_NAME, 4);
    sstr(s, "disk");
    return n;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void)
{
    return xorshift64(&rng_state);
}

static const uint32_t interesting[] = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 255, 4096, 4097, 65536,
    0x7fffffff, 0x80000000, 0xffffffff,
};

static void mutate(uint8_t *d, size_t *len, size_t cap)
{
    unsigned n = 1 + rnd() % 4;
    for (unsigned i = 0; i < n && *len > 4; i++) {
        switch (rnd() % 5) {
        case 0:
            d[rnd() % *len] ^= (uint8_t)(1u << rnd() % 8);
            break;
        case 1: {
            size_t off = 1 + rnd() % (*len - 4);
            nbd_put32(d + off, interesting[rnd() % 19]);
            break;
        }
        case 2:
            d[rnd() % *len] = (uint8_t)rnd();
            break;
        case 3:
            *len = 1 + rnd() % *len;
            break;
        default: {  /* duplicate a slice at the end */
            size_t from = rnd() % *len, l = rnd() % 64;
            if (from + l > *len) {
                l = *len - from;
            }
            if (*len + l <= cap) {
                memmove(d + *len, d + from, l);
                *len += l;
            }
            break;
        }
        }
    }
}

int fuzz_generated_replay(void)
{
    Seed seeds[8];
    unsigned iters = 20000;
    unsigned runs = 0;
    size_t nseeds;

    memset(seeds, 0, sizeof(seeds));
    nseeds = make_seeds(seeds);
    for (size_t s = 0; s < nseeds; s++) {
        uint8_t *in = malloc(seeds[s].n);
        assert(in);
        memcpy(in, seeds[s].b, seeds[s].n);
        LLVMFuzzerTestOneInput(in, seeds[s].n);
        free(in);
        runs++;
        for (unsigned i = 0; i < iters / nseeds; i++) {
            uint8_t work[1024];
            size_t len = seeds[s].n;
            memcpy(work, seeds[s].b, len);
            mutate(work, &len, sizeof(work));
            in = malloc(len);        /* exact size: ASan sees over-reads */
            assert(in);
            memcpy(in, work, len);
            LLVMFuzzerTestOneInput(in, len);
            free(in);
            runs++;
        }
    }
    printf("nbd handshake fuzz: %u inputs, no crash\n", runs);
    return 0;
}

#endif
