/*
 * luks-crypto: headers luks_build makes unlock with their passphrase (and
 * not with another), for each cipher/IV/hash combination qemu-img can
 * make; the payload ciphers of both ends agree; damaged headers are
 * refused in qemu's words.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "block/drivers/luks-crypto.h"

static const char pass[] = "correct horse";

typedef struct Variant {
    LuksCreateOpts o;
    const char *names[4];
} Variant;

static const Variant variants[] = {
    { { "aes-256", "xts", "plain64", NULL, "sha256", 1 },
      { "aes-256", "xts", "plain64", "sha256" } },
    { { "aes-128", "xts", "plain", NULL, "sha1", 1 },
      { "aes-128", "xts", "plain", "sha1" } },
    { { "aes-256", "cbc", "essiv", "sha256", "sha512", 1 },
      { "aes-256", "cbc", "essiv", "sha512" } },
    { { "aes-128", "cbc", "plain64", NULL, "sha224", 1 },
      { "aes-128", "cbc", "plain64", "sha224" } },
};

static void test_build_unlock(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
        const Variant *v = &variants[i];
        LuksCipher *made = NULL, *opened;
        Error *err = NULL;
        size_t len = 0;
        uint8_t *area = luks_build(&v->o, (const uint8_t *)pass,
                                   strlen(pass), &len, &made, &err);
        const char *n[4];
        uint8_t plain[4096], buf[4096];

        assert_null(err);
        assert_non_null(area);
        assert_int_equal(luks_payload_offset(area, len, NULL), (int64_t)len);
        assert_int_equal(len % 4096, 0);

        opened = luks_unlock(area, len, (const uint8_t *)pass, strlen(pass),
                             &err);
        assert_null(err);
        assert_non_null(opened);
        luks_cipher_names(opened, &n[0], &n[1], &n[2], &n[3]);
        for (int k = 0; k < 4; k++) {
            assert_string_equal(n[k], v->names[k]);
        }

        /* What one end encrypts, the other decrypts; sectors differ. */
        for (size_t j = 0; j < sizeof(plain); j++) {
            plain[j] = (uint8_t)(j * 7 + i);
        }
        memcpy(buf, plain, sizeof(buf));
        assert_int_equal(luks_encrypt(made, 1000, buf, sizeof(buf)), 0);
        assert_memory_not_equal(buf, plain, 512);
        assert_int_equal(luks_decrypt(opened, 1000, buf, sizeof(buf)), 0);
        assert_memory_equal(buf, plain, sizeof(buf));
        assert_int_equal(luks_encrypt(made, 1000, buf, 512), 0);
        assert_int_equal(luks_decrypt(opened, 1001, buf, 512), 0);
        assert_memory_not_equal(buf, plain, 512);

        /* Another passphrase unlocks nothing. */
        assert_null(luks_unlock(area, len, (const uint8_t *)"wrong", 5,
                                &err));
        assert_non_null(err);
        assert_string_equal(error_get_pretty(err),
                            "Invalid password, cannot unlock any keyslot");
        error_free(err);
        err = NULL;

        /* A damaged stripe of slot 0 loses the key. */
        area[4096 + 100] ^= 1;
        assert_null(luks_unlock(area, len, (const uint8_t *)pass,
                                strlen(pass), &err));
        assert_non_null(err);
        error_free(err);

        luks_cipher_free(made);
        luks_cipher_free(opened);
        free(area);
    }
}

static void expect_refused(uint8_t *area, size_t len, const char *msg)
{
    Error *err = NULL;

    assert_null(luks_unlock(area, len, (const uint8_t *)pass, strlen(pass),
                            &err));
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err), msg);
    error_free(err);
}

/* A NUL-terminated string into a header field. */
static void put_str(uint8_t *m, size_t off, const char *str)
{
    for (size_t i = 0; i <= strlen(str); i++) {
        m[off + i] = (uint8_t)str[i];
    }
}

static void test_damaged_header(void **state)
{
    LuksCreateOpts o = { "aes-256", "xts", "plain64", NULL, "sha256", 1 };
    LuksCipher *c = NULL;
    size_t len = 0;
    uint8_t *area = luks_build(&o, (const uint8_t *)pass, strlen(pass),
                               &len, &c, NULL);
    uint8_t *m = malloc(len);

    (void)state;
    assert_non_null(area);
    memcpy(m, area, len);
    m[0] = 'X';
    expect_refused(m, len, "Volume is not in LUKS format");
    expect_refused(area, 100, "Volume is not in LUKS format");
    memcpy(m, area, len);
    m[7] = 2;
    expect_refused(m, len, "Unsupported LUKS version 2");
    memcpy(m, area, len);
    put_str(m, 72, "md4");
    expect_refused(m, len, "Unsupported hash algorithm 'md4'");
    memcpy(m, area, len);
    put_str(m, 8, "twofish");
    expect_refused(m, len, "Unsupported cipher algorithm 'twofish'");
    /* Key material past the end of what was read: no slot to try. */
    expect_refused(area, 8192, "Invalid password, cannot unlock any keyslot");
    free(m);
    free(area);
    luks_cipher_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_unlock),
        cmocka_unit_test(test_damaged_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
