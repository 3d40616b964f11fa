/*
 * The monitor's serialiser writes exactly what jansson's
 * json_dumps(v, JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER) writes: nested
 * objects and arrays, empty ones, keys in insertion order, escapes (quote,
 * backslash, control characters, non-ASCII, a NUL inside a string), reals,
 * integers at both ends of their range; and it refuses what jansson does.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "qmp/json-out.h"

static void same_as_jansson(json_t *v)
{
    size_t len = 0;
    char *want = json_dumps(v, JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    char *got = json_out_dumps(v, &len);

    assert_non_null(want);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    free(want);
    free(got);
    json_decref(v);
}

static void test_shapes(void **state)
{
    (void)state;
    same_as_jansson(json_object());
    same_as_jansson(json_array());
    same_as_jansson(json_pack("{s:{}, s:[], s:[{}, []]}", "a", "b", "c"));
    same_as_jansson(json_pack("{s:i, s:I, s:I, s:b, s:b, s:n, s:f, s:f}",
                              "z", 0, "max", (json_int_t)INT64_MAX,
                              "min", (json_int_t)INT64_MIN, "t", 1, "f", 0,
                              "n", "r", 0.1, "big", 1e300));
    /* Insertion order, not key order; a replaced value keeps its place. */
    json_t *o = json_object();
    json_object_set_new(o, "zz", json_integer(1));
    json_object_set_new(o, "aa", json_integer(2));
    json_object_set_new(o, "mm", json_integer(3));
    json_object_set_new(o, "zz", json_string("again"));
    same_as_jansson(o);
    same_as_jansson(json_pack("{s:[i, s, {s:[[[]]]}]}", "deep", 1, "x",
                              "y"));
}

static void test_strings(void **state)
{
    (void)state;
    static const char *const s[] = {
        "", "plain", "a \"quoted\" \\ back\\slash", "tab\there\nnl\r\b\f",
        "\x01\x1f\x7f", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
        "json:{\"driver\": \"raw\", \"file\": {\"filename\": \"/a/b\"}}",
        "slash / stays",
    };
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
        same_as_jansson(json_pack("{s:s}", "k", s[i]));
        same_as_jansson(json_pack("{s:s}", s[i], "v"));
        same_as_jansson(json_pack("[s]", s[i]));
    }
    same_as_jansson(json_pack("{s:s#}", "nul", "a\0b", (int)3));
}

static void test_refuses(void **state)
{
    size_t len;
    (void)state;
    json_t *s = json_string("scalar");
    assert_null(json_out_dumps(s, &len));
    json_decref(s);
    /* Deeper than jansson dumps: NULL, so the caller's fallback decides. */
    json_t *top = json_array(), *a = top;
    for (int i = 0; i < 3000; i++) {
        json_t *n = json_array();
        json_array_append_new(a, n);
        a = n;
    }
    assert_null(json_out_dumps(top, &len));
    json_decref(top);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
