/*
 * The object registry and the secret object: what secret_lookup returns
 * for each way of giving the bytes (there is no QMP query for it).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "object/object.h"
#include "object/secret.h"
#include "object/tls-creds.h"

static bool add(const char *json, Error **errp)
{
    json_t *args = json_loads(json, 0, NULL);
    bool ok;

    assert_non_null(args);
    ok = object_add(args, false, errp);
    json_decref(args);
    return ok;
}

static void expect_secret(const char *id, const void *bytes, size_t n)
{
    size_t len = 0;
    const uint8_t *p = secret_lookup(id, &len, NULL);

    assert_non_null(p);
    assert_int_equal(len, n);
    assert_memory_equal(p, bytes, n);
}

static void test_secret_forms(void **state)
{
    char path[] = "/tmp/test-object-XXXXXX";
    int fd = mkstemp(path);
    char json[256];
    Error *err = NULL;

    assert_true(fd >= 0);
    assert_int_equal(write(fd, "file\0bytes", 10), 10);
    close(fd);

    assert_true(add("{\"qom-type\":\"secret\",\"id\":\"raw\",\"data\":\"abc\"}",
                    NULL));
    expect_secret("raw", "abc", 3);
    assert_true(add("{\"qom-type\":\"secret\",\"id\":\"b64\","
                    "\"data\":\"aGVsbG8=\",\"format\":\"base64\"}", NULL));
    expect_secret("b64", "hello", 5);
    assert_true(add("{\"qom-type\":\"secret\",\"id\":\"b64np\","
                    "\"data\":\"aGVsbG8\",\"format\":\"base64\"}", NULL));
    expect_secret("b64np", "hello", 5);
    snprintf(json, sizeof(json),
             "{\"qom-type\":\"secret\",\"id\":\"f\",\"file\":\"%s\"}", path);
    assert_true(add(json, NULL));
    expect_secret("f", "file\0bytes", 10);
    unlink(path);

    assert_null(secret_lookup("nosuch", NULL, &err));
    assert_string_equal(error_get_pretty(err), "No secret with id 'nosuch'");
    error_free(err);
    err = NULL;

    /* Not TLS credentials. */
    assert_null(tls_creds_lookup("raw", TLS_ENDPOINT_SERVER, &err));
    assert_string_equal(error_get_pretty(err),
                        "Object with id 'raw' is not TLS credentials");
    error_free(err);

    assert_true(object_del("raw", NULL));
    assert_null(object_find("raw"));
    object_del_all();
    assert_null(object_find("b64"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
