/*
 * keyval_parse: dotted keys into nested objects, ",," escapes, the implied
 * key, lists from numeric keys, JSON form, and the messages
 * qemu-storage-daemon 7.2 prints for the same mistakes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "util/argspec.h"

static void expect_json(const char *in, const char *implied,
                        const char *expected)
{
    Error *err = NULL;
    json_t *v = keyval_parse(in, implied, &err);
    if (!v) {
        fail_msg("'%s': %s", in, error_get_pretty(err));
    }
    json_t *want = json_loads(expected, 0, NULL);
    assert_non_null(want);
    if (!json_equal(v, want)) {
        char *got = json_dumps(v, JSON_SORT_KEYS);
        fail_msg("'%s' gave %s, want %s", in, got, expected);
    }
    json_decref(want);
    json_decref(v);
}

static void expect_err(const char *in, const char *implied, const char *msg)
{
    Error *err = NULL;
    json_t *v = keyval_parse(in, implied, &err);
    assert_null(v);
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err), msg);
    error_free(err);
}

static void test_dotted(void **state)
{
    expect_json("", NULL, "{}");
    expect_json("a=1", NULL, "{\"a\":\"1\"}");
    expect_json("driver=file,node-name=f,filename=x.img", NULL,
                "{\"driver\":\"file\",\"node-name\":\"f\","
                "\"filename\":\"x.img\"}");
    expect_json("a.b.c=1,a.b.d=2,a.e=3,f=", NULL,
                "{\"a\":{\"b\":{\"c\":\"1\",\"d\":\"2\"},\"e\":\"3\"},"
                "\"f\":\"\"}");
    expect_json("a=1,", NULL, "{\"a\":\"1\"}");
    expect_json("a_b-C9=x=y", NULL, "{\"a_b-C9\":\"x=y\"}");
    /* Last value wins, as in qemu-storage-daemon. */
    expect_json("a=1,a=2", NULL, "{\"a\":\"2\"}");
    /* Numeric keys below the top make lists. */
    expect_json("a.1=y,a.0=x", NULL, "{\"a\":[\"x\",\"y\"]}");
    expect_json("a.0.k=x,a.1.k=y", NULL,
                "{\"a\":[{\"k\":\"x\"},{\"k\":\"y\"}]}");
}

static void test_escapes(void **state)
{
    expect_json("filename=a,,b", NULL, "{\"filename\":\"a,b\"}");
    expect_json("filename=a,,,,b,c=d", NULL,
                "{\"filename\":\"a,,b\",\"c\":\"d\"}");
    expect_json("x=a,,", NULL, "{\"x\":\"a,\"}");
    expect_json("x=,,,y=1", NULL, "{\"x\":\",\",\"y\":\"1\"}");
}

static void test_implied(void **state)
{
    expect_json("nbd,id=e", "type", "{\"type\":\"nbd\",\"id\":\"e\"}");
    expect_json("null-co,,x,node-name=a", "driver",
                "{\"driver\":\"null-co,x\",\"node-name\":\"a\"}");
    expect_json("[1]", "driver", "{\"driver\":\"[1]\"}");
    /* With a '=' the first item is an ordinary key. */
    expect_json("type=nbd", "type", "{\"type\":\"nbd\"}");
    /* Only the first item may be implied. */
    expect_err("id=e,nbd", "type", "Expected '=' after parameter 'nbd'");
}

static void test_errors(void **state)
{
    expect_err("novalue", NULL, "Expected '=' after parameter 'novalue'");
    expect_err("a=1,novalue", NULL, "Expected '=' after parameter 'novalue'");
    expect_err("=1", NULL, "Invalid parameter ''");
    expect_err("a=1,=1", NULL, "Invalid parameter ''");
    expect_err(",a=1", NULL, "Invalid parameter ''");
    expect_err(",a=1", "driver", "Invalid parameter ''");
    expect_err("x..y=1", NULL, "Invalid parameter 'x..y'");
    expect_err(".x=1", NULL, "Invalid parameter '.x'");
    expect_err("x.=1", NULL, "Invalid parameter 'x.'");
    expect_err("a b=1", NULL, "Invalid parameter 'a b'");
    expect_err("a\xc3\xa9=1", NULL, "Invalid parameter 'a\xc3\xa9'");
    expect_err("cache=1,cache.direct=on", NULL,
               "Parameters 'cache.*' used inconsistently");
    expect_err("cache.direct=on,cache=1", NULL,
               "Parameters 'cache.*' used inconsistently");
    expect_err("a.b.c=1,a.b=2", NULL, "Parameters 'a.b.*' used inconsistently");
    expect_err("a.1=x", NULL, "Parameter 'a.0' missing");
    expect_err("a.0=x,a.2=y", NULL, "Parameter 'a.1' missing");
    expect_err("a.0=x,a.b=y", NULL, "Parameters 'a.*' used inconsistently");
    /* A value that is not UTF-8 cannot be a JSON string: refused, not
     * dropped (found by fuzz-keyval). */
    expect_err("driver=raw,file.driver=fi\xa8" "e", NULL,
               "Parameter 'file.driver' is not valid UTF-8");
    expect_err("a=1,a=\xff", NULL, "Parameter 'a' is not valid UTF-8");
    expect_err("r\xe9,a=1", "driver", "Parameter 'driver' is not valid UTF-8");
    expect_json("a=caf\xc3\xa9", NULL, "{\"a\": \"caf\xc3\xa9\"}");
}

static void test_json(void **state)
{
    expect_json("{\"driver\":\"null-co\",\"size\":1,\"x\":{\"y\":[1]}}",
                "driver",
                "{\"driver\":\"null-co\",\"size\":1,\"x\":{\"y\":[1]}}");
    expect_json("{\"a\":1}  ", NULL, "{\"a\":1}");
    expect_err("{\"a\":1} x", NULL, "Expecting at most one JSON value");
    expect_err("{\"a\":1}{}", NULL, "Expecting at most one JSON value");
    expect_err("{\"driver\":\"null-co\"", NULL,
               "JSON parse error, premature EOI");
    expect_err("{\"driver\":\"nu", NULL, "JSON parse error, premature EOI");
    Error *err = NULL;
    assert_null(keyval_parse("{\"driver\" 1}", NULL, &err));
    assert_non_null(err);
    assert_true(!strncmp(error_get_pretty(err), "JSON parse error, ", 18));
    error_free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dotted),
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_implied),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
