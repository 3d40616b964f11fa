/*
 * Metadata-overlap protection: before the driver writes into the image
 * file, the target range is checked against the metadata structures the
 * `overlap-check` option selects; a hit means a table points a write at
 * metadata, and the image is marked corrupt instead (qcow2-corrupt.c).
 *
 * Cost per check: the fixed structures (header, L1, refcount table,
 * snapshot table, bitmap directory) are a few comparisons; the inactive L1
 * tables a binary search; L2 tables and refcount blocks (one cluster each,
 * created while the image is open) one hash lookup per host cluster the
 * write touches.  Nothing scans a table on the write path.
 */
#ifndef BJ_BLOCK_QCOW2_OVERLAP_H
#define BJ_BLOCK_QCOW2_OVERLAP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

/* The metadata kinds, in the order qemu checks and names them. */
enum {
    QCOW2_OL_MAIN_HEADER      = 1u << 0,
    QCOW2_OL_ACTIVE_L1        = 1u << 1,
    QCOW2_OL_ACTIVE_L2        = 1u << 2,
    QCOW2_OL_REFCOUNT_TABLE   = 1u << 3,
    QCOW2_OL_REFCOUNT_BLOCK   = 1u << 4,
    QCOW2_OL_SNAPSHOT_TABLE   = 1u << 5,
    QCOW2_OL_INACTIVE_L1      = 1u << 6,
    QCOW2_OL_INACTIVE_L2      = 1u << 7,
    QCOW2_OL_BITMAP_DIRECTORY = 1u << 8,
    QCOW2_OL_KINDS            = 9,
};

/* The templates of the option (qemu's sets, observed with qsd 7.2:
 * `constant` needs no lookup at all, `cached` what is held in memory,
 * `all` also the L2 tables of internal snapshots). */
#define QCOW2_OL_CONSTANT (QCOW2_OL_MAIN_HEADER | QCOW2_OL_ACTIVE_L1 | \
                           QCOW2_OL_REFCOUNT_TABLE | \
                           QCOW2_OL_SNAPSHOT_TABLE | \
                           QCOW2_OL_BITMAP_DIRECTORY)
#define QCOW2_OL_CACHED   (QCOW2_OL_CONSTANT | QCOW2_OL_ACTIVE_L2 | \
                           QCOW2_OL_REFCOUNT_BLOCK | QCOW2_OL_INACTIVE_L1)
#define QCOW2_OL_ALL      (QCOW2_OL_CACHED | QCOW2_OL_INACTIVE_L2)
#define QCOW2_OL_DEFAULT  QCOW2_OL_CACHED

/* qemu's name of one kind bit, as the corruption message says it. */
const char *qcow2_ol_name(unsigned kind);

/*
 * The `overlap-check` member of qcow2 open options: a template name or an
 * object {template, main-header, active-l1, ...}.  `path` is the option
 * path prefix of the node ("" or "backing." ...), `coerce` true for
 * command-line strings.  Sets *checks; false with qsd's message on bad
 * input.
 */
bool qcow2_ol_parse_option(json_t *opts, const char *path, bool coerce,
                           unsigned *checks, Error **errp);

/*
 * Host clusters holding one-cluster metadata (L2 tables, refcount
 * blocks) -> kind bits: open addressing, linear probing.
 */
typedef struct Qcow2OlMap {
    uint64_t *keys;          /* cluster index + 1; 0 = empty */
    uint16_t *kinds;
    size_t cap;              /* power of two, or 0 */
    size_t used;
} Qcow2OlMap;

void qcow2_ol_map_add(Qcow2OlMap *m, uint64_t cluster, unsigned kind);
void qcow2_ol_map_del(Qcow2OlMap *m, uint64_t cluster, unsigned kind);
unsigned qcow2_ol_map_get(const Qcow2OlMap *m, uint64_t cluster);
void qcow2_ol_map_free(Qcow2OlMap *m);

/* Byte ranges sorted by start, with the running maximum of their ends, so
 * that "does anything overlap [a, b)" is one binary search. */
typedef struct Qcow2OlRanges {
    uint64_t *start, *end, *max_end;
    size_t n;
} Qcow2OlRanges;

/* Takes ownership of start/end (n entries, any order). */
void qcow2_ol_ranges_init(Qcow2OlRanges *r, uint64_t *start, uint64_t *end,
                          size_t n);
bool qcow2_ol_ranges_hit(const Qcow2OlRanges *r, uint64_t off, uint64_t len);
void qcow2_ol_ranges_free(Qcow2OlRanges *r);

/* Everything the checks look at besides the header fields. */
typedef struct Qcow2Overlap {
    unsigned checks;         /* QCOW2_OL_* kinds checked before writes */
    Qcow2OlMap map;          /* L2 tables, refcount blocks */
    Qcow2OlRanges inactive_l1;
    uint64_t snapshots_size; /* bytes of the snapshot table */
} Qcow2Overlap;

#endif
