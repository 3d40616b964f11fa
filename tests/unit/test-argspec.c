/*
 * argspec: every message, word for word as qemu-storage-daemon 7.2 sends
 * them (observed by driving it over QMP and its command line), the order in
 * which problems are found, coercion of command-line strings, getters and
 * id_wellformed.
 */
#include <stdint.h>
#include <string.h>

#include "testutil.h"

#include "util/argspec.h"

static const char *const sync_modes[] = { "top", "full", "none", NULL };

static const ArgSpec cache_spec[] = {
    { .name = "direct", .type = ARG_BOOL, .optional = true },
    { .name = "no-flush", .type = ARG_BOOL, .optional = true },
    { .name = NULL }
};

static const ArgSpec elem_str[] = { { .name = "e", .type = ARG_STR }, { .name = NULL } };
static const ArgSpec elem_enum[] = {
    { .name = "e", .type = ARG_ENUM, .enum_values = sync_modes }, { .name = NULL }
};
static const ArgSpec data_spec[] = {
    { .name = "node", .type = ARG_STR },
    { .name = "name", .type = ARG_STR },
    { .name = "granularity", .type = ARG_UINT, .optional = true },
    { .name = NULL }
};
static const ArgSpec action_spec[] = {
    { .name = "type", .type = ARG_ENUM, .enum_values = sync_modes },
    { .name = "data", .type = ARG_OBJECT, .members = data_spec },
    { .name = NULL }
};
static const ArgSpec elem_action[] = {
    { .name = "a", .type = ARG_OBJECT, .members = action_spec }, { .name = NULL }
};
static const ArgSpec file_spec[] = {
    { .name = "driver", .type = ARG_STR },
    { .name = "size", .type = ARG_SIZE, .optional = true },
    { .name = NULL }
};

static const ArgSpec spec[] = {
    { .name = "device", .type = ARG_STR },
    { .name = "speed", .type = ARG_INT, .optional = true },
    { .name = "count", .type = ARG_UINT, .optional = true },
    { .name = "size", .type = ARG_SIZE, .optional = true },
    { .name = "flag", .type = ARG_BOOL, .optional = true },
    { .name = "sync", .type = ARG_ENUM, .optional = true,
      .enum_values = sync_modes },
    { .name = "cache", .type = ARG_OBJECT, .optional = true,
      .members = cache_spec },
    { .name = "opts", .type = ARG_OBJECT, .optional = true },
    { .name = "names", .type = ARG_ARRAY, .optional = true,
      .members = elem_str },
    { .name = "modes", .type = ARG_ARRAY, .optional = true,
      .members = elem_enum },
    { .name = "actions", .type = ARG_ARRAY, .optional = true,
      .members = elem_action },
    { .name = "any", .type = ARG_ANY, .optional = true },
    { .name = "file", .type = ARG_REF, .optional = true,
      .members = file_spec, .open = true },
    { .name = "backing", .type = ARG_REF_OR_NULL, .optional = true },
    { .name = NULL }
};

/* Checks the JSON text against spec and returns the error text or NULL. */
static char *check(const char *text, bool coerce)
{
    static char msg[512];
    json_error_t jerr;
    json_t *obj = json_loads(text, 0, &jerr);
    assert_non_null(obj);
    Error *err = NULL;
    bool ok = argspec_check(obj, spec, NULL, coerce, &err);
    json_decref(obj);
    if (ok) {
        assert_null(err);
        return NULL;
    }
    assert_non_null(err);
    assert_int_equal(err->cls, ERROR_CLASS_GENERIC_ERROR);
    snprintf(msg, sizeof(msg), "%s", error_get_pretty(err));
    error_free(err);
    return msg;
}

#define ERR(json, expected) assert_string_equal(check(json, false), expected)
#define OK(json) assert_null(check(json, false))

static void test_accepts(void **state)
{
    OK("{\"device\":\"x\"}");
    OK("{\"device\":\"x\",\"speed\":-1,\"count\":0,\"size\":4096,"
       "\"flag\":true,\"sync\":\"full\",\"cache\":{\"direct\":false},"
       "\"opts\":{\"anything\":[1]},\"names\":[\"a\",\"b\"],"
       "\"modes\":[\"top\"],\"any\":null,\"file\":\"node0\","
       "\"backing\":null}");
    OK("{\"device\":\"x\",\"file\":{\"driver\":\"raw\",\"extra\":1}}");
    OK("{\"device\":\"x\",\"backing\":{}}");
    OK("{\"device\":\"x\",\"names\":[]}");
}

static void test_missing_unexpected(void **state)
{
    ERR("{}", "Parameter 'device' is missing");
    ERR("{\"device\":\"x\",\"foo\":2}", "Parameter 'foo' is unexpected");
    ERR("{\"device\":\"x\",\"cache\":{\"bogus\":\"x\"}}",
        "Parameter 'cache.bogus' is unexpected");
    ERR("{\"device\":\"x\",\"file\":{\"size\":1}}",
        "Parameter 'file.driver' is missing");
    ERR("{\"device\":\"x\",\"actions\":[{\"type\":\"top\","
        "\"data\":{\"node\":\"n\"}}]}",
        "Parameter 'actions[0].data.name' is missing");
    ERR("{\"device\":\"x\",\"actions\":[{\"type\":\"top\","
        "\"data\":{\"node\":\"n\",\"name\":\"b\",\"bogus\":1}}]}",
        "Parameter 'actions[0].data.bogus' is unexpected");
}

static void test_types(void **state)
{
    ERR("{\"device\":1}",
        "Invalid parameter type for 'device', expected: string");
    ERR("{\"device\":null}",
        "Invalid parameter type for 'device', expected: string");
    const char *bad_ints[] = { "\"x\"", "1.5", "1.0", "true", "{}", "[]",
                               "null" };
    for (size_t i = 0; i < sizeof(bad_ints) / sizeof(bad_ints[0]); i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "{\"device\":\"x\",\"speed\":%s}",
                 bad_ints[i]);
        ERR(buf, "Invalid parameter type for 'speed', expected: integer");
        snprintf(buf, sizeof(buf), "{\"device\":\"x\",\"count\":%s}",
                 bad_ints[i]);
        ERR(buf, "Invalid parameter type for 'count', expected: integer");
    }
    ERR("{\"device\":\"x\",\"count\":-1}",
        "Parameter 'count' expects a non-negative value");
    ERR("{\"device\":\"x\",\"size\":-5}",
        "Parameter 'size' expects a non-negative value");
    ERR("{\"device\":\"x\",\"flag\":1}",
        "Invalid parameter type for 'flag', expected: boolean");
    ERR("{\"device\":\"x\",\"flag\":\"on\"}",
        "Invalid parameter type for 'flag', expected: boolean");
    ERR("{\"device\":\"x\",\"cache\":1}",
        "Invalid parameter type for 'cache', expected: object");
    ERR("{\"device\":\"x\",\"cache\":{\"direct\":\"x\"}}",
        "Invalid parameter type for 'cache.direct', expected: boolean");
    ERR("{\"device\":\"x\",\"names\":\"a\"}",
        "Invalid parameter type for 'names', expected: array");
    ERR("{\"device\":\"x\",\"names\":[\"a\",1]}",
        "Invalid parameter type for 'names[1]', expected: string");
    ERR("{\"device\":\"x\",\"actions\":[1]}",
        "Invalid parameter type for 'actions[0]', expected: object");
    ERR("{\"device\":\"x\",\"file\":1}",
        "Invalid parameter type for 'file', expected: BlockdevRef");
    ERR("{\"device\":\"x\",\"file\":null}",
        "Invalid parameter type for 'file', expected: BlockdevRef");
    ERR("{\"device\":\"x\",\"backing\":[]}",
        "Invalid parameter type for 'backing', expected: BlockdevRefOrNull");
    ERR("{\"device\":\"x\",\"file\":{\"driver\":\"f\",\"size\":\"x\"}}",
        "Invalid parameter type for 'file.size', expected: integer");
}

static void test_enums(void **state)
{
    ERR("{\"device\":\"x\",\"sync\":\"bogus\"}",
        "Parameter 'sync' does not accept value 'bogus'");
    ERR("{\"device\":\"x\",\"sync\":1}",
        "Invalid parameter type for 'sync', expected: string");
    /* QEMU names an enum by its bare member name, "null" in an array. */
    ERR("{\"device\":\"x\",\"modes\":[\"top\",\"foo\"]}",
        "Parameter 'null' does not accept value 'foo'");
    ERR("{\"device\":\"x\",\"actions\":[{\"type\":\"bogus\"}]}",
        "Parameter 'type' does not accept value 'bogus'");
}

static void test_order(void **state)
{
    /* Declared members first (in spec order), unexpected ones last. */
    ERR("{\"zzz\":1,\"speed\":\"x\"}", "Parameter 'device' is missing");
    ERR("{\"zzz\":1,\"device\":\"x\",\"speed\":\"x\"}",
        "Invalid parameter type for 'speed', expected: integer");
    /* A nested object is finished (unexpected included) when reached. */
    ERR("{\"device\":\"x\",\"cache\":{\"q\":1},\"sync\":\"bad\","
        "\"zzz\":1}", "Parameter 'sync' does not accept value 'bad'");
    ERR("{\"device\":\"x\",\"cache\":{\"q\":1},\"zzz\":1}",
        "Parameter 'cache.q' is unexpected");
}

static void test_path_prefix(void **state)
{
    json_t *obj = json_pack("{s:s, s:s}", "driver", "raw", "bogus", "1");
    Error *err = NULL;
    assert_false(argspec_check(obj, file_spec, "options.file", false, &err));
    assert_string_equal(error_get_pretty(err),
                        "Parameter 'options.file.bogus' is unexpected");
    error_free(err);
    json_decref(obj);
}

#define CERR(json, expected) assert_string_equal(check(json, true), expected)

static void test_coerce(void **state)
{
    json_t *obj = json_loads(
        "{\"device\":\"d\",\"speed\":\"-12\",\"count\":\"0x10\","
        "\"size\":\"2M\",\"flag\":\"on\",\"cache\":{\"direct\":\"yes\","
        "\"no-flush\":\"false\"},\"sync\":\"top\",\"names\":[\"7\"],"
        "\"file\":{\"driver\":\"raw\",\"size\":\"1k\"}}", 0, NULL);
    assert_non_null(obj);
    Error *err = NULL;
    assert_true(argspec_check(obj, spec, NULL, true, &err));
    assert_null(err);
    assert_int_equal(arg_int(obj, "speed", 0), -12);
    assert_int_equal(arg_int(obj, "count", 0), 16);
    assert_int_equal(arg_int(obj, "size", 0), 2 << 20);
    assert_true(arg_bool(obj, "flag", false));
    json_t *cache = json_object_get(obj, "cache");
    assert_true(arg_bool(cache, "direct", false));
    assert_false(arg_bool(cache, "no-flush", true));
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(obj, "names"), 0)),
        "7");
    assert_int_equal(arg_int(json_object_get(obj, "file"), "size", 0), 1024);
    json_decref(obj);

    const char *sizes[][2] = { { "512", "512" }, { "1k", "1024" },
                               { "1K", "1024" }, { "3G", "3221225472" },
                               { "1T", "1099511627776" }, { "7b", "7" } };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "{\"device\":\"x\",\"size\":\"%s\"}",
                 sizes[i][0]);
        obj = json_loads(buf, 0, NULL);
        assert_true(argspec_check(obj, spec, NULL, true, NULL));
        char num[32];
        snprintf(num, sizeof(num), "%lld",
                 (long long)arg_int(obj, "size", -1));
        assert_string_equal(num, sizes[i][1]);
        json_decref(obj);
    }

    CERR("{\"device\":\"x\",\"speed\":\"x\"}",
         "Parameter 'speed' expects integer");
    CERR("{\"device\":\"x\",\"speed\":\"1k\"}",
         "Parameter 'speed' expects integer");
    CERR("{\"device\":\"x\",\"speed\":\"\"}",
         "Parameter 'speed' expects integer");
    CERR("{\"device\":\"x\",\"count\":\"-1\"}",
         "Parameter 'count' expects a non-negative value");
    CERR("{\"device\":\"x\",\"size\":\"1x\"}",
         "Parameter 'size' expects size");
    CERR("{\"device\":\"x\",\"size\":\"1.5\"}",
         "Parameter 'size' expects size");
    CERR("{\"device\":\"x\",\"size\":\"-1\"}",
         "Parameter 'size' expects a non-negative value");
    CERR("{\"device\":\"x\",\"size\":\"100000E\"}",
         "Parameter 'size' expects a non-negative value");
    CERR("{\"device\":\"x\",\"flag\":\"1\"}",
         "Parameter 'flag' expects 'on' or 'off'");
    CERR("{\"device\":\"x\",\"flag\":\"ON\"}",
         "Parameter 'flag' expects 'on' or 'off'");
    CERR("{\"device\":\"x\",\"cache\":{\"direct\":\"x\"}}",
         "Parameter 'cache.direct' expects 'on' or 'off'");
    CERR("{\"device\":\"x\",\"sync\":\"x\"}",
         "Parameter 'sync' does not accept value 'x'");
    CERR("{\"device\":\"x\",\"cache\":\"1\"}",
         "Invalid parameter type for 'cache', expected: object");
    CERR("{\"device\":\"x\",\"file\":{\"driver\":\"raw\",\"size\":\"q\"}}",
         "Parameter 'file.size' expects size");
}

static void test_getters(void **state)
{
    static const char *const vals[] = { "a", "b", "c", NULL };
    json_t *o = json_pack("{s:s, s:I, s:b, s:s}", "s", "str", "i",
                          (json_int_t)-7, "b", 1, "e", "c");
    assert_string_equal(arg_str(o, "s", NULL), "str");
    assert_string_equal(arg_str(o, "nope", "def"), "def");
    assert_int_equal(arg_int(o, "i", 0), -7);
    assert_int_equal(arg_int(o, "nope", 42), 42);
    assert_true(arg_bool(o, "b", false));
    assert_false(arg_bool(o, "nope", false));
    assert_int_equal(arg_enum(o, "e", vals, -1), 2);
    assert_int_equal(arg_enum(o, "nope", vals, -1), -1);
    json_decref(o);
}

static void test_id_wellformed(void **state)
{
    assert_true(id_wellformed("a"));
    assert_true(id_wellformed("node-1.x_y"));
    assert_true(id_wellformed("Z9"));
    assert_false(id_wellformed(""));
    assert_false(id_wellformed(NULL));
    assert_false(id_wellformed("1a"));
    assert_false(id_wellformed("-a"));
    assert_false(id_wellformed("_a"));
    assert_false(id_wellformed("a,b"));
    assert_false(id_wellformed("a b"));
    assert_false(id_wellformed("a\xc3\xa9"));
    assert_false(id_wellformed("a/b"));
}

/* qemu's uint64: any integer (negative wraps), its own type message. */
static void test_u64(void **state)
{
    static const ArgSpec u64_spec[] = {
        { .name = "t", .type = ARG_U64 },
        { .name = NULL },
    };
    const char *ok[] = { "{\"t\":0}", "{\"t\":-1}",
                         "{\"t\":9223372036854775807}" };
    const char *bad[] = { "{\"t\":\"1\"}", "{\"t\":1.5}",
                          "{\"t\":true}", "{\"t\":null}" };
    for (size_t i = 0; i < 3; i++) {
        json_t *o = json_loads(ok[i], 0, NULL);
        Error *err = NULL;
        assert_true(argspec_check(o, u64_spec, NULL, false, &err));
        json_decref(o);
    }
    for (size_t i = 0; i < 4; i++) {
        json_t *o = json_loads(bad[i], 0, NULL);
        Error *err = NULL;
        assert_false(argspec_check(o, u64_spec, NULL, false, &err));
        assert_string_equal(error_get_pretty(err),
                            "Parameter 't' expects uint64");
        error_free(err);
        json_decref(o);
    }
    json_t *o = json_loads("{\"t\":-1}", 0, NULL);
    assert_true(arg_u64(o, "t", 5) == UINT64_MAX);
    assert_true(arg_u64(o, "u", 5) == 5);
    json_decref(o);
    /* from the command line */
    o = json_loads("{\"t\":\"0x10\"}", 0, NULL);
    Error *err = NULL;
    assert_true(argspec_check(o, u64_spec, NULL, true, &err));
    assert_true(arg_u64(o, "t", 0) == 16);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_missing_unexpected),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_enums),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_path_prefix),
        cmocka_unit_test(test_coerce),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_id_wellformed),
        cmocka_unit_test(test_u64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
