/*
 * Pieces of the metadata-overlap protection that know nothing of an open
 * image: the `overlap-check` option, the kind names, the cluster map and
 * the sorted ranges (see qcow2-overlap.h).  The driver glue is in
 * qcow2-overlap-check.c.
 */
#include "block/drivers/qcow2/qcow2-overlap.h"

#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"
#include "util/argspec.h"
#include "util/cleanup.h"

/* ---- names and the option ---- */

/* Index = bit number; the option members and the message names. */
static const char *const ol_members[QCOW2_OL_KINDS] = {
    "main-header", "active-l1", "active-l2", "refcount-table",
    "refcount-block", "snapshot-table", "inactive-l1", "inactive-l2",
    "bitmap-directory",
};
static const char *const ol_names[QCOW2_OL_KINDS] = {
    "qcow2_header", "active L1 table", "active L2 table", "refcount table",
    "refcount block", "snapshot table", "inactive L1 table",
    "inactive L2 table", "bitmap directory",
};

const char *qcow2_ol_name(unsigned kind)
{
    for (unsigned i = 0; i < QCOW2_OL_KINDS; i++) {
        if (kind & (1u << i)) {
            return ol_names[i];
        }
    }
    return "unknown metadata";
}

static const char *const ol_templates[] = {
    "none", "constant", "cached", "all", NULL,
};
static const unsigned ol_template_sets[] = {
    0, QCOW2_OL_CONSTANT, QCOW2_OL_CACHED, QCOW2_OL_ALL,
};

/* The object form, in qemu's member order (the first bad member is the
 * one reported). */
static const ArgSpec ol_object_spec[] = {
    { .name = "template", .type = ARG_ENUM, .optional = true,
      .enum_values = ol_templates },
    { .name = "main-header", .type = ARG_BOOL, .optional = true },
    { .name = "active-l1", .type = ARG_BOOL, .optional = true },
    { .name = "active-l2", .type = ARG_BOOL, .optional = true },
    { .name = "refcount-table", .type = ARG_BOOL, .optional = true },
    { .name = "refcount-block", .type = ARG_BOOL, .optional = true },
    { .name = "snapshot-table", .type = ARG_BOOL, .optional = true },
    { .name = "inactive-l1", .type = ARG_BOOL, .optional = true },
    { .name = "inactive-l2", .type = ARG_BOOL, .optional = true },
    { .name = "bitmap-directory", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

static int template_index(const char *s)
{
    for (int i = 0; ol_templates[i]; i++) {
        if (!strcmp(ol_templates[i], s)) {
            return i;
        }
    }
    return -1;
}

bool qcow2_ol_parse_option(json_t *opts, const char *path, bool coerce,
                           unsigned *checks, Error **errp)
{
    json_t *v = json_object_get(opts, "overlap-check");
    CLEANUP_FREE char *full = NULL;

    *checks = QCOW2_OL_DEFAULT;
    if (!v) {
        return true;
    }
    if (json_is_string(v)) {
        /* An alternate's enum branch: named by its bare member name. */
        int t = template_index(json_string_value(v));
        if (t < 0) {
            error_setg(errp, "Parameter 'overlap-check' does not accept "
                       "value '%s'", json_string_value(v));
            return false;
        }
        *checks = ol_template_sets[t];
        return true;
    }
    full = bj_asprintf("%soverlap-check", path ? path : "");
    if (!json_is_object(v)) {
        error_setg(errp, "Invalid parameter type for '%s', expected: "
                   "Qcow2OverlapChecks", full);
        return false;
    }
    if (!argspec_check(v, ol_object_spec, full, coerce, errp)) {
        return false;
    }
    const char *tmpl = arg_str(v, "template", NULL);
    if (tmpl) {
        *checks = ol_template_sets[template_index(tmpl)];
    }
    for (unsigned i = 0; i < QCOW2_OL_KINDS; i++) {
        json_t *b = json_object_get(v, ol_members[i]);
        if (b) {
            *checks = json_is_true(b) ? *checks | (1u << i)
                                      : *checks & ~(1u << i);
        }
    }
    return true;
}

/* ---- the cluster map ---- */

static size_t slot_of(const Qcow2OlMap *m, uint64_t key)
{
    /* Fibonacci hashing: host clusters of tables are often consecutive. */
    return (size_t)((key * 0x9e3779b97f4a7c15ull) >>
                    (64 - __builtin_ctzll(m->cap)));
}

static void map_grow(Qcow2OlMap *m)
{
    Qcow2OlMap n = { .cap = m->cap ? m->cap * 2 : 64 };

    n.keys = bj_calloc(n.cap, sizeof(*n.keys));
    n.kinds = bj_calloc(n.cap, sizeof(*n.kinds));
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i]) {
            size_t j = slot_of(&n, m->keys[i]);
            while (n.keys[j]) {
                j = (j + 1) & (n.cap - 1);
            }
            n.keys[j] = m->keys[i];
            n.kinds[j] = m->kinds[i];
            n.used++;
        }
    }
    free(m->keys);
    free(m->kinds);
    *m = n;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t map_find(const Qcow2OlMap *m, uint64_t key)
{
    size_t j = slot_of(m, key);

    while (m->keys[j] && m->keys[j] != key) {
        j = (j + 1) & (m->cap - 1);
    }
    return j;
}

void qcow2_ol_map_add(Qcow2OlMap *m, uint64_t cluster, unsigned kind)
{
    uint64_t key = cluster + 1;

    /* At most half full, so probe runs stay short. */
    if ((m->used + 1) * 2 > m->cap) {
        map_grow(m);
    }
    size_t j = map_find(m, key);
    if (!m->keys[j]) {
        m->keys[j] = key;
        m->kinds[j] = 0;
        m->used++;
    }
    m->kinds[j] |= (uint16_t)kind;
}

void qcow2_ol_map_del(Qcow2OlMap *m, uint64_t cluster, unsigned kind)
{
    if (!m->cap) {
        return;
    }
    size_t j = map_find(m, cluster + 1);
    if (!m->keys[j]) {
        return;
    }
    m->kinds[j] &= (uint16_t)~kind;
    if (m->kinds[j]) {
        return;
    }
    /* Backward-shift deletion: move later members of the probe run into
     * the hole when their home slot does not lie between hole and them. */
    m->keys[j] = 0;
    m->used--;
    for (size_t k = (j + 1) & (m->cap - 1); m->keys[k];
         k = (k + 1) & (m->cap - 1)) {
        size_t home = slot_of(m, m->keys[k]);
        bool stays = j <= k ? (j < home && home <= k)
                            : (j < home || home <= k);
        if (!stays) {
            m->keys[j] = m->keys[k];
            m->kinds[j] = m->kinds[k];
            m->keys[k] = 0;
            j = k;
        }
    }
}

unsigned qcow2_ol_map_get(const Qcow2OlMap *m, uint64_t cluster)
{
    if (!m->used) {
        return 0;
    }
    size_t j = map_find(m, cluster + 1);
    return m->keys[j] ? m->kinds[j] : 0;
}

void qcow2_ol_map_free(Qcow2OlMap *m)
{
    free(m->keys);
    free(m->kinds);
    memset(m, 0, sizeof(*m));
}

/* ---- sorted ranges ---- */

typedef struct Span {
    uint64_t start, end;
} Span;

static int span_cmp(const void *a, const void *b)
{
    const Span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

void qcow2_ol_ranges_init(Qcow2OlRanges *r, uint64_t *start, uint64_t *end,
                          size_t n)
{
    Span *sp = bj_calloc(n ? n : 1, sizeof(*sp));
    for (size_t i = 0; i < n; i++) {
        sp[i].start = start[i];
        sp[i].end = end[i];
    }
    qsort(sp, n, sizeof(*sp), span_cmp);
    r->start = start;
    r->end = end;
    r->max_end = bj_calloc(n ? n : 1, sizeof(*r->max_end));
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        start[i] = sp[i].start;
        end[i] = sp[i].end;
        r->max_end[i] = i && r->max_end[i - 1] > end[i] ? r->max_end[i - 1]
                                                        : end[i];
    }
    free(sp);
}

bool qcow2_ol_ranges_hit(const Qcow2OlRanges *r, uint64_t off, uint64_t len)
{
    size_t lo = 0, hi = r->n;
    uint64_t end = off + len;

    if (!len || !r->n) {
        return false;
    }
    /* lo = how many ranges start before end; one of those overlaps iff
     * the furthest end among them lies past off. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->start[mid] < end) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo && r->max_end[lo - 1] > off;
}

void qcow2_ol_ranges_free(Qcow2OlRanges *r)
{
    free(r->start);
    free(r->end);
    free(r->max_end);
    memset(r, 0, sizeof(*r));
}
