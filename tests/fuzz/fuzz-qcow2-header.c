/*
 * Fuzz target for the qcow2 header and metadata parser.
 *
 * With libFuzzer (clang -fsanitize=fuzzer -DBJ_LIBFUZZER) the input is the
 * start of an image.  Without it, the replay runs the same target as a plain
 * test over a deterministic corpus: images of several shapes made by
 * qcow2_create_image, mutated (bit flips, interesting values at header
 * fields, truncation) with a fixed seed, so every run covers the same cases
 * under ASan/UBSan.
 *
 * Properties checked: parsing never crashes or over-reads; a header that
 * parses serializes to one that parses back to the same fields; L2
 * descriptors and refcount entries decode without UB.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "block/drivers/qcow2/qcow2-format.h"
#include "tests/common/memfile.h"
#include "tests/common/xorshift.h"


static void check_roundtrip(const Qcow2Header *h, uint64_t file_size)
{
    size_t cs = (size_t)1 << h->cluster_bits;
    uint8_t *buf = calloc(1, cs);
    Qcow2Header copy = *h, back;

    assert(buf);
    /* serialize rewrites a few fields of its argument: use a shallow copy
     * that shares the allocations of h (not freed here). */
    if (qcow2_header_serialize(&copy, buf, cs, NULL)) {
        if (!qcow2_header_parse(buf, cs, file_size, &back, NULL)) {
            abort();
        }
        if (back.size != h->size || back.l1_size != h->l1_size ||
            back.l1_table_offset != h->l1_table_offset ||
            back.refcount_table_offset != h->refcount_table_offset ||
            back.refcount_order != h->refcount_order ||
            back.incompatible_features != h->incompatible_features ||
            back.nb_raw_exts != h->nb_raw_exts ||
            !back.backing_file != !h->backing_file ||
            (h->backing_file &&
             strcmp(back.backing_file, h->backing_file) != 0)) {
            abort();
        }
        qcow2_header_free(&back);
    }
    free(buf);
}

static void exercise_metadata(const Qcow2Header *h, const uint8_t *data,
                              size_t size)
{
    Qcow2Geom g;
    Qcow2L2Info info;

    qcow2_geom_init(&g, h->cluster_bits, h->refcount_order);
    /* Treat the input as an L2 table and a refcount block. */
    for (size_t i = 0; i + 8 <= size && i < 4096; i += 8) {
        Error *err = NULL;
        if (!qcow2_l2_decode(&g, (int)h->version, be64_get(data + i), &info,
                             &err)) {
            error_free(err);
        } else if (info.type == QCOW2_CLUSTER_COMPRESSED) {
            assert(info.compressed_bytes > 0);
        }
    }
    uint64_t entries = (uint64_t)size * 8 / g.refcount_bits;
    for (uint64_t i = 0; i < entries && i < 4096; i++) {
        uint64_t v = qcow2_refcount_get(&g, data, i);
        assert(v <= qcow2_refcount_max(&g));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Once with the input as the whole file (offsets checked against its
     * end), once as if the file were large (reaches the deeper checks). */
    const uint64_t sizes[2] = { size, 1ull << 40 };

    for (int k = 0; k < 2; k++) {
        Qcow2Header h;
        Error *err = NULL;
        if (!qcow2_header_parse(data, size, sizes[k], &h, &err)) {
            assert(err && error_get_pretty(err)[0]);
            error_free(err);
            continue;
        }
        check_roundtrip(&h, sizes[k]);
        exercise_metadata(&h, data, size);
        qcow2_header_free(&h);
    }
    return 0;
}

#ifndef BJ_LIBFUZZER

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    return xorshift64(&rng_state);
}

static const uint64_t interesting[] = {
    0, 1, 2, 7, 8, 9, 16, 21, 22, 31, 32, 63, 64, 72, 104, 105, 112, 511,
    512, 4096, 65535, 65536, 0x7fffffff, 0x80000000, 0xffffffff,
    0x100000000ull, 1ull << 40, 1ull << 62, INT64_MAX, UINT64_MAX,
};

static void mutate(uint8_t *d, size_t len)
{
    unsigned n = 1 + rnd() % 4;
    for (unsigned i = 0; i < n; i++) {
        switch (rnd() % 4) {
        case 0: /* bit flip anywhere in the first 4 KiB */
            d[rnd() % (len < 4096 ? len : 4096)] ^= (uint8_t)(1u << rnd() % 8);
            break;
        case 1: { /* interesting value at a 4-byte header field */
            size_t off = (rnd() % 26) * 4;
            be32_put(d + off, (uint32_t)interesting[rnd() % 30]);
            break;
        }
        case 2: { /* interesting value at an 8-byte aligned field */
            size_t off = (rnd() % 14) * 8;
            be64_put(d + off, interesting[rnd() % 30]);
            break;
        }
        default: /* extension area garbage */
            d[112 + rnd() % 400] = (uint8_t)rnd();
            break;
        }
    }
}

int fuzz_generated_replay(void)
{
    static const Qcow2CreateOpts shapes[] = {
        { .size = 64 << 20 },
        { .size = 1 << 20, .cluster_size = 512, .version = 2,
          .backing_file = "base.qcow2" },
        { .size = 1 << 30, .cluster_size = 4096, .refcount_bits = 1,
          .backing_file = "../x/base", .backing_format = "raw" },
        { .size = 8 << 20, .cluster_size = 2048, .refcount_bits = 64,
          .lazy_refcounts = true },
    };
    unsigned iters = 5000;
    unsigned ok = 0;

    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        MemFile base = { NULL, 0 };
        if (!qcow2_create_image(&shapes[s], memfile_write, &base, NULL)) {
            fprintf(stderr, "could not create seed image %zu\n", s);
            return 1;
        }
        /* the unmutated seed must parse */
        Qcow2Header h;
        if (!qcow2_header_parse(base.data, base.len, base.len, &h, NULL)) {
            fprintf(stderr, "seed image %zu does not parse\n", s);
            return 1;
        }
        qcow2_header_free(&h);

        uint8_t *work = malloc(base.len);
        assert(work);
        for (unsigned i = 0; i < iters; i++) {
            memcpy(work, base.data, base.len);
            mutate(work, base.len);
            size_t len = base.len;
            if (rnd() % 8 == 0) {
                len = rnd() % (len + 1);       /* truncated image */
            }
            /* an exact-size copy so ASan sees any over-read */
            uint8_t *in = malloc(len ? len : 1);
            assert(in);
            memcpy(in, work, len);
            LLVMFuzzerTestOneInput(in, len);
            free(in);
            ok++;
        }
        free(work);
        free(base.data);
    }
    printf("qcow2 header fuzz: %u inputs, no crash\n", ok);
    return 0;
}

#endif
