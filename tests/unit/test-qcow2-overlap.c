/*
 * The pieces of qcow2 metadata-overlap protection that need no image: the
 * cluster map (against a plain array, with deletions that move probe
 * runs), the sorted ranges (against a linear scan) and the
 * `overlap-check` option with qsd 7.2's messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "block/drivers/qcow2/qcow2-overlap.h"
#include "tests/common/xorshift.h"

/* Deterministic pseudo-random numbers (xorshift64). */
static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void)
{
    return xorshift64(&rng_state);
}

static void test_map_matches_array(void **state)
{
    enum { N = 4096 };
    static uint16_t ref[N];
    Qcow2OlMap m = { 0 };

    (void)state;
    memset(ref, 0, sizeof(ref));
    assert_int_equal(qcow2_ol_map_get(&m, 7), 0);
    qcow2_ol_map_del(&m, 7, QCOW2_OL_ACTIVE_L2);   /* empty map: no-op */
    for (int i = 0; i < 200000; i++) {
        /* Clustered keys, as tables are, so probe runs collide. */
        uint64_t c = rnd() % N;
        unsigned kind = 1u << (rnd() % QCOW2_OL_KINDS);
        if (rnd() % 3) {
            qcow2_ol_map_add(&m, c, kind);
            ref[c] |= (uint16_t)kind;
        } else {
            qcow2_ol_map_del(&m, c, kind);
            ref[c] &= (uint16_t)~kind;
        }
        if (i % 997 == 0) {
            size_t used = 0;
            for (uint64_t k = 0; k < N; k++) {
                assert_int_equal(qcow2_ol_map_get(&m, k), ref[k]);
                used += ref[k] != 0;
            }
            assert_int_equal(m.used, used);
        }
    }
    /* Far-apart keys (huge files) hash like near ones. */
    qcow2_ol_map_add(&m, UINT64_MAX - 1, QCOW2_OL_REFCOUNT_BLOCK);
    assert_int_equal(qcow2_ol_map_get(&m, UINT64_MAX - 1),
                     QCOW2_OL_REFCOUNT_BLOCK);
    qcow2_ol_map_free(&m);
    assert_int_equal(qcow2_ol_map_get(&m, 1), 0);
}

static bool scan_hit(const uint64_t *s, const uint64_t *e, size_t n,
                     uint64_t off, uint64_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (len && e[i] > s[i] && off < e[i] && s[i] < off + len) {
            return true;
        }
    }
    return false;
}

static void test_ranges_match_scan(void **state)
{
    enum { N = 300 };
    uint64_t rs[N], re[N];

    (void)state;
    for (int round = 0; round < 20; round++) {
        size_t n = (size_t)(rnd() % N);
        uint64_t *s = calloc(N, sizeof(*s)), *e = calloc(N, sizeof(*e));
        assert_non_null(s);
        assert_non_null(e);
        for (size_t i = 0; i < n; i++) {
            /* Overlapping and nested ranges too: a crafted image's
             * snapshots may share or straddle L1 tables. */
            s[i] = rnd() % 100000;
            e[i] = s[i] + 1 + rnd() % (round % 2 ? 20000 : 300);
            rs[i] = s[i];
            re[i] = e[i];
        }
        Qcow2OlRanges r;
        qcow2_ol_ranges_init(&r, s, e, n);
        for (int q = 0; q < 5000; q++) {
            uint64_t off = rnd() % 130000, len = rnd() % 5000;
            assert_int_equal(qcow2_ol_ranges_hit(&r, off, len),
                             scan_hit(rs, re, n, off, len));
        }
        qcow2_ol_ranges_free(&r);
    }
}

static unsigned parse_ok(const char *json, bool coerce)
{
    json_t *o = json_loads(json, 0, NULL);
    Error *err = NULL;
    unsigned checks = 12345;

    assert_non_null(o);
    assert_true(qcow2_ol_parse_option(o, "", coerce, &checks, &err));
    assert_null(err);
    json_decref(o);
    return checks;
}

static void parse_err(const char *json, const char *path, bool coerce,
                      const char *msg)
{
    json_t *o = json_loads(json, 0, NULL);
    Error *err = NULL;
    unsigned checks;

    assert_non_null(o);
    assert_false(qcow2_ol_parse_option(o, path, coerce, &checks, &err));
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err), msg);
    error_free(err);
    json_decref(o);
}

static void test_option(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("{}", false), QCOW2_OL_CACHED);
    assert_int_equal(parse_ok("{\"overlap-check\": \"none\"}", false), 0);
    assert_int_equal(parse_ok("{\"overlap-check\": \"constant\"}", false),
                     QCOW2_OL_CONSTANT);
    assert_int_equal(parse_ok("{\"overlap-check\": \"all\"}", false),
                     QCOW2_OL_ALL);
    assert_int_equal(parse_ok("{\"overlap-check\": {}}", false),
                     QCOW2_OL_CACHED);
    assert_int_equal(parse_ok("{\"overlap-check\": {\"template\": \"none\", "
                              "\"active-l1\": true}}", false),
                     QCOW2_OL_ACTIVE_L1);
    assert_int_equal(parse_ok("{\"overlap-check\": {\"main-header\": false, "
                              "\"inactive-l2\": true}}", false),
                     (QCOW2_OL_CACHED & ~QCOW2_OL_MAIN_HEADER) |
                     QCOW2_OL_INACTIVE_L2);
    /* dotted keys from the command line: strings */
    assert_int_equal(parse_ok("{\"overlap-check\": {\"template\": \"all\", "
                              "\"active-l2\": \"off\"}}", true),
                     QCOW2_OL_ALL & ~QCOW2_OL_ACTIVE_L2);

    /* qsd 7.2's words */
    parse_err("{\"overlap-check\": \"foo\"}", "", false,
              "Parameter 'overlap-check' does not accept value 'foo'");
    parse_err("{\"overlap-check\": 5}", "", false,
              "Invalid parameter type for 'overlap-check', expected: "
              "Qcow2OverlapChecks");
    parse_err("{\"overlap-check\": null}", "", false,
              "Invalid parameter type for 'overlap-check', expected: "
              "Qcow2OverlapChecks");
    parse_err("{\"overlap-check\": {\"template\": \"x\"}}", "", false,
              "Parameter 'template' does not accept value 'x'");
    parse_err("{\"overlap-check\": {\"template\": 5}}", "", false,
              "Invalid parameter type for 'overlap-check.template', "
              "expected: string");
    parse_err("{\"overlap-check\": {\"main-header\": \"on\"}}", "", false,
              "Invalid parameter type for 'overlap-check.main-header', "
              "expected: boolean");
    parse_err("{\"overlap-check\": {\"main-header\": \"foo\"}}", "", true,
              "Parameter 'overlap-check.main-header' expects 'on' or 'off'");
    parse_err("{\"overlap-check\": {\"bogus\": true}}", "", false,
              "Parameter 'overlap-check.bogus' is unexpected");
    parse_err("{\"overlap-check\": {\"bogus\": true}}", "backing.", false,
              "Parameter 'backing.overlap-check.bogus' is unexpected");
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(qcow2_ol_name(QCOW2_OL_MAIN_HEADER), "qcow2_header");
    assert_string_equal(qcow2_ol_name(QCOW2_OL_ACTIVE_L2), "active L2 table");
    assert_string_equal(qcow2_ol_name(QCOW2_OL_BITMAP_DIRECTORY),
                        "bitmap directory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_matches_array),
        cmocka_unit_test(test_ranges_match_scan),
        cmocka_unit_test(test_option),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
