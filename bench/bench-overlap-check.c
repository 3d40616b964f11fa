/*
 * bench-overlap-check: the cost of one qcow2 metadata-overlap check
 * (qcow2_ol_find), the part of the write path that bench-overlap.sh cannot
 * separate from the noise of NBD and the disk.  Not a test.
 *
 *   bench-overlap-check [CHECKS]        (default 20000000)
 *
 * The driver state of a fully allocated 1 TiB image with 64 KiB clusters
 * is set up by hand: 2048 L2 tables and 512 refcount blocks in the map,
 * 100 internal snapshots (their L1 tables as ranges, 2048 more L2 tables
 * for `all`), a bitmap directory.  Then CHECKS random 4 KiB writes that hit
 * nothing (the common case, and the most work: every structure is looked
 * at) per template.  Prints ns per check.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/drivers/qcow2/qcow2-bitmap-int.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const uint64_t cs = 65536, clusters = (1ull << 40) / cs;
    const unsigned nsnap = 100;
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 0) : 20000000;
    static BDRVQcow2State s;
    static Qcow2Bitmaps b;
    static const struct { const char *name; unsigned checks; } t[] = {
        { "none", 0 }, { "constant", QCOW2_OL_CONSTANT },
        { "cached", QCOW2_OL_CACHED }, { "all", QCOW2_OL_ALL },
    };

    s.g.cluster_size = (uint32_t)cs;
    s.g.cluster_bits = 16;
    s.hdr.l1_table_offset = 3 * cs;
    s.l1_size = 2048;
    s.hdr.refcount_table_offset = cs;
    s.hdr.refcount_table_clusters = 1;
    s.hdr.nb_snapshots = nsnap;
    s.hdr.snapshots_offset = 4 * cs;
    s.ol.snapshots_size = nsnap * 72;
    b.dir_offset = 5 * cs;
    b.dir_size = 64;
    s.bitmaps = &b;
    /* Tables spread over the file as a long-lived image has them. */
    for (unsigned i = 0; i < 2048; i++) {
        qcow2_ol_map_add(&s.ol.map, rnd() % clusters, QCOW2_OL_ACTIVE_L2);
        qcow2_ol_map_add(&s.ol.map, rnd() % clusters, QCOW2_OL_INACTIVE_L2);
    }
    for (unsigned i = 0; i < 512; i++) {
        qcow2_ol_map_add(&s.ol.map, (uint64_t)i * 32768,
                         QCOW2_OL_REFCOUNT_BLOCK);
    }
    uint64_t *st = calloc(nsnap, sizeof(*st)), *en = calloc(nsnap, sizeof(*en));
    for (unsigned i = 0; i < nsnap; i++) {
        st[i] = (rnd() % clusters) * cs;
        en[i] = st[i] + 2048 * 8;
    }
    qcow2_ol_ranges_init(&s.ol.inactive_l1, st, en, nsnap);

    for (unsigned k = 0; k < sizeof(t) / sizeof(t[0]); k++) {
        s.ol.checks = t[k].checks;
        uint64_t hits = 0;
        double t0 = now();
        for (uint64_t i = 0; i < n; i++) {
            uint64_t off = (rnd() % (clusters * 16)) * 4096;
            hits += qcow2_ol_find(&s, 0, off, 4096) != 0;
        }
        double dt = now() - t0;
        printf("%-9s %6.1f ns/check  (%" PRIu64 " checks, %" PRIu64
               " hits)\n", t[k].name, dt * 1e9 / (double)n, n, hits);
    }
    qcow2_ol_free(&s);
    return 0;
}
