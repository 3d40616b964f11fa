/*
 * The monitor's JSON splitter: value boundaries however the bytes arrive,
 * strings and escapes that hide brackets, 'single quotes', 0xFF and control
 * character recovery, the size and depth limits (and that the rest of an
 * oversized value is skipped, not buffered), and QEMU's error wording.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "qmp/json-stream.h"

/* What came out: each value as compact JSON, each error as "!desc". */
typedef struct Out {
    char *items[64];
    int n;
} Out;

static void collect(void *opaque, json_t *value, Error *err)
{
    Out *o = opaque;
    assert_true((value == NULL) != (err == NULL));
    assert_true(o->n < 64);
    char *s;
    if (value) {
        s = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY |
                       JSON_PRESERVE_ORDER);
        json_decref(value);
    } else {
        if (asprintf(&s, "!%s", error_get_pretty(err)) < 0) {
            abort();
        }
        error_free(err);
    }
    o->items[o->n++] = s;
}

static void out_free(Out *o)
{
    for (int i = 0; i < o->n; i++) {
        free(o->items[i]);
    }
    o->n = 0;
}

/* Feeds text in one go and also byte by byte; both must give `want`. */
static void check(const char *text, size_t len, const char *const *want,
                  int nwant)
{
    for (int mode = 0; mode < 2; mode++) {
        Out o = { .n = 0 };
        JsonStream *js = json_stream_new(collect, &o);
        if (mode == 0) {
            json_stream_feed(js, text, len);
        } else {
            for (size_t i = 0; i < len; i++) {
                json_stream_feed(js, text + i, 1);
            }
        }
        if (o.n != nwant) {
            for (int i = 0; i < o.n; i++) {
                print_error("got[%d] %s\n", i, o.items[i]);
            }
            fail_msg("'%s': %d items, want %d", text, o.n, nwant);
        }
        for (int i = 0; i < nwant; i++) {
            assert_string_equal(o.items[i], want[i]);
        }
        out_free(&o);
        json_stream_free(js);
    }
}

#define CHECK(text, ...) do {                                           \
        const char *const w_[] = { __VA_ARGS__ };                       \
        check(text, strlen(text), w_, sizeof(w_) / sizeof(w_[0]));      \
    } while (0)
#define CHECK_NONE(text) check(text, strlen(text), NULL, 0)

static void test_boundaries(void **state)
{
    CHECK("{\"a\":1}", "{\"a\":1}");
    CHECK("{\"a\":1}{\"b\":2}\n[3] 4 \"s\" true null ",
          "{\"a\":1}", "{\"b\":2}", "[3]", "4", "\"s\"", "true", "null");
    CHECK(" \r\n\t{\"a\":[1,{\"b\":[]}]}\r\n", "{\"a\":[1,{\"b\":[]}]}");
    /* Brackets and quotes inside strings do not count. */
    CHECK("{\"a\":\"}]{[\"}", "{\"a\":\"}]{[\"}");
    CHECK("{\"a\":\"\\\"}\"}", "{\"a\":\"\\\"}\"}");
    CHECK("{\"a\":\"\\\\\"}", "{\"a\":\"\\\\\"}");
    /* Incomplete input waits for more. */
    CHECK_NONE("{\"execute\":");
    CHECK_NONE("  12");
}

static void test_quotes(void **state)
{
    CHECK("{'execute':'query-version'}", "{\"execute\":\"query-version\"}");
    CHECK("{'a':'x\"y'}", "{\"a\":\"x\\\"y\"}");
    CHECK("{'a':'it\\'s'}", "{\"a\":\"it's\"}");
    CHECK("{\"a\":\"it\\'s\"}", "{\"a\":\"it's\"}");
    CHECK("{'a':'}'}", "{\"a\":\"}\"}");
    CHECK("'top'", "\"top\"");
    CHECK("{\"a\":\"\\u00e9\\n\"}", "{\"a\":\"\xc3\xa9\\n\"}");
}

static void test_errors(void **state)
{
    CHECK("}", "!JSON parse error, expecting value");
    CHECK("]{\"a\":1}", "!JSON parse error, expecting value", "{\"a\":1}");
    CHECK("{\"a\":1,}", "!JSON parse error, expecting value");
    CHECK("abc ", "!JSON parse error, invalid keyword 'abc'");
    CHECK("{\"a\" 1}", "!JSON parse error, missing : in object pair");
    CHECK("{\"a\":1 \"b\":2}", "!JSON parse error, expected separator in dict");
    CHECK("[1 2]", "!JSON parse error, expected separator in list");
    CHECK("{1:2}", "!JSON parse error, key is not a string in object");
    CHECK("[\"\\q\"]", "!JSON parse error, invalid escape sequence in string");
    CHECK("[\"\x80\"]", "!JSON parse error, invalid UTF-8 sequence in string");
    /* One bad value does not disturb the next. */
    CHECK("{\"a\":1]{\"b\":2}",
          "!JSON parse error, expected separator in dict", "{\"b\":2}");
}

static void test_reset(void **state)
{
    /* 0xFF in the middle of a value: an error, then a clean start. */
    CHECK("{\"execute\":\"x\xff{\"a\":1}",
          "!JSON parse error, stray '\xef\xbf\xbd'", "{\"a\":1}");
    CHECK("\xff\n{\"a\":1}", "!JSON parse error, stray '\xef\xbf\xbd'",
          "{\"a\":1}");
    /* The rest of a broken line is skipped up to a structural character. */
    CHECK("{\"a\":\"q\xffrest\"}\n{\"b\":2}",
          "!JSON parse error, stray '\xef\xbf\xbd'",
          "!JSON parse error, expecting value", "{\"b\":2}");
    /* A raw newline ends a runaway string. */
    CHECK("{\"a\":\"abc\n{\"b\":2}", "!JSON parse error, stray '\n'",
          "{\"b\":2}");
    CHECK("{\"a\":\"x\x01\"}\n[1]", "!JSON parse error, stray '\x01'",
          "!JSON parse error, expecting value", "[1]");
}

static void test_depth_limit(void **state)
{
    Out o = { .n = 0 };
    JsonStream *js = json_stream_new(collect, &o);
    char buf[4096];
    /* 1024 levels are fine. */
    memset(buf, '[', 1024);
    memset(buf + 1024, ']', 1024);
    json_stream_feed(js, buf, 2048);
    assert_int_equal(o.n, 1);
    assert_true(o.items[0][0] == '[');
    out_free(&o);
    /* 1025 give one error, and the rest of that value is skipped. */
    memset(buf, '[', 1025);
    memset(buf + 1025, ']', 1025);
    json_stream_feed(js, buf, 2050);
    json_stream_feed(js, "{\"ok\":1}", 8);
    assert_int_equal(o.n, 2);
    assert_string_equal(o.items[0], "!JSON nesting depth limit exceeded");
    assert_string_equal(o.items[1], "{\"ok\":1}");
    out_free(&o);
    json_stream_free(js);
}

static void test_size_limit(void **state)
{
    Out o = { .n = 0 };
    JsonStream *js = json_stream_new(collect, &o);
    json_stream_set_limits(js, 1000, 8);
    json_stream_feed(js, "{\"id\":\"", 7);
    char chunk[500];
    memset(chunk, 'a', sizeof(chunk));
    for (int i = 0; i < 100; i++) {    /* 50 KB: 50 times the limit */
        json_stream_feed(js, chunk, sizeof(chunk));
        assert_true(json_stream_pending(js) <= 1000);
    }
    assert_int_equal(o.n, 1);
    assert_string_equal(o.items[0], "!JSON token size limit exceeded");
    json_stream_feed(js, "\"}{\"next\":true}", 15);
    assert_int_equal(o.n, 2);
    assert_string_equal(o.items[1], "{\"next\":true}");
    out_free(&o);

    /* A bare token over the limit, then a good value. */
    for (int i = 0; i < 10; i++) {
        json_stream_feed(js, chunk, sizeof(chunk));
    }
    json_stream_feed(js, " [2]", 4);
    assert_int_equal(o.n, 2);
    assert_string_equal(o.items[0], "!JSON token size limit exceeded");
    assert_string_equal(o.items[1], "[2]");
    out_free(&o);

    /* Depth limit from set_limits. */
    json_stream_feed(js, "[[[[[[[[[1]]]]]]]]][[1]]", 24);
    assert_int_equal(o.n, 2);
    assert_string_equal(o.items[0], "!JSON nesting depth limit exceeded");
    assert_string_equal(o.items[1], "[[1]]");
    out_free(&o);
    json_stream_free(js);
}

static void test_parse_qmp(void **state)
{
    Error *err = NULL;
    json_t *v = json_parse_qmp("{\"a\":\"\\u0000\"}", 14, &err);
    assert_non_null(v);
    assert_int_equal(json_string_length(json_object_get(v, "a")), 1);
    json_decref(v);
    /* Integers beyond int64 become reals, as in QEMU; strings untouched. */
    const char *big = "{\"a\":18446744073709551616,\"b\":-9223372036854775809,"
                      "\"c\":9223372036854775807,\"d\":\"99999999999999999999\","
                      "\"e\":1}";
    v = json_parse_qmp(big, strlen(big), &err);
    assert_non_null(v);
    assert_true(json_is_real(json_object_get(v, "a")));
    assert_true(json_real_value(json_object_get(v, "a")) > 1.8e19);
    assert_true(json_is_real(json_object_get(v, "b")));
    assert_true(json_is_integer(json_object_get(v, "c")));
    assert_string_equal(json_string_value(json_object_get(v, "d")),
                        "99999999999999999999");
    assert_true(json_is_integer(json_object_get(v, "e")));
    json_decref(v);
    /* A repeated key is refused in QEMU's words, at any depth. */
    assert_null(json_parse_qmp("{\"a\":{\"b\":1,\"b\":2}}", 21, &err));
    assert_string_equal(error_get_pretty(err),
                        "JSON parse error, duplicate key");
    error_free(err);
    err = NULL;
    assert_null(json_parse_qmp("tru", 3, &err));
    assert_string_equal(error_get_pretty(err),
                        "JSON parse error, invalid keyword 'tru'");
    error_free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundaries),
        cmocka_unit_test(test_quotes),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_parse_qmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
