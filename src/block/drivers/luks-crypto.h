/*
 * LUKS1, as the on-disk format specification describes it: the partition
 * header (phdr) and its eight key slots, the anti-forensic splitter, the
 * master key digest, and per-sector encryption of the payload.  Pure
 * format code on buffers, no I/O: the luks driver (and, later, qcow2's
 * encrypt.format=luks) read the header area and hand it over.  Ciphers,
 * hashes and PBKDF2 are GnuTLS's.
 */
#ifndef BJ_BLOCK_DRIVERS_LUKS_CRYPTO_H
#define BJ_BLOCK_DRIVERS_LUKS_CRYPTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "aio/coroutine.h"
#include "util/argspec.h"
#include "util/error.h"

#define LUKS_SECTOR_SIZE 512
#define LUKS_PHDR_SIZE 592          /* the phdr with its 8 key slots */
#define LUKS_MAX_AREA (64u << 20)   /* refused above: not a sane header */

typedef struct LuksCipher LuksCipher;

/* The payload offset in bytes of the header at buf (len >= LUKS_PHDR_SIZE),
 * or -1 with qemu's words ("Volume is not in LUKS format", ...). */
int64_t luks_payload_offset(const uint8_t *buf, size_t len, Error **errp);

/*
 * Unlocks the header area area[0, len) (len >= the payload offset) with
 * the passphrase: each active key slot's key derived by PBKDF2, its
 * material decrypted and merged, the result checked against the master key
 * digest.  The payload cipher, or NULL with "Invalid password, cannot
 * unlock any keyslot" (or an unsupported cipher's words).
 */
LuksCipher *luks_unlock(const uint8_t *area, size_t len, const uint8_t *pass,
                        size_t passlen, Error **errp);

/* luks_unlock in the thread pool (PBKDF2 takes as long as the image's
 * iter-time asks: seconds), the coroutine waiting; pass is copied first,
 * so its owner may let go of it meanwhile. */
LuksCipher *coroutine_fn luks_co_unlock(const uint8_t *area, size_t len,
                                        const uint8_t *pass, size_t passlen,
                                        Error **errp);

/* QCryptoBlockCreateOptionsLUKS's enums (qemu 7.2), and its members as
 * ArgSpec entries (util/argspec.h) for a create spec. */
extern const char *const luks_cipher_alg_names[];
extern const char *const luks_cipher_mode_names[];
extern const char *const luks_ivgen_names[];
extern const char *const luks_hash_names[];
#define LUKS_CREATE_MEMBERS \
    { .name = "key-secret", .type = ARG_STR, .optional = true }, \
    { .name = "cipher-alg", .type = ARG_ENUM, .optional = true, \
      .enum_values = luks_cipher_alg_names }, \
    { .name = "cipher-mode", .type = ARG_ENUM, .optional = true, \
      .enum_values = luks_cipher_mode_names }, \
    { .name = "ivgen-alg", .type = ARG_ENUM, .optional = true, \
      .enum_values = luks_ivgen_names }, \
    { .name = "ivgen-hash-alg", .type = ARG_ENUM, .optional = true, \
      .enum_values = luks_hash_names }, \
    { .name = "hash-alg", .type = ARG_ENUM, .optional = true, \
      .enum_values = luks_hash_names }, \
    { .name = "iter-time", .type = ARG_INT, .optional = true }

typedef struct LuksCreateOpts {
    const char *cipher_alg;     /* aes-128, aes-192, aes-256 */
    const char *cipher_mode;    /* xts, cbc */
    const char *ivgen_alg;      /* plain, plain64, essiv */
    const char *ivgen_hash_alg; /* essiv's hash (default: hash_alg) */
    const char *hash_alg;       /* sha1, sha224, sha256, sha384, sha512 */
    uint64_t iter_time_ms;      /* PBKDF2 time per key slot */
} LuksCreateOpts;

/*
 * A new header area (random master key and salts, key slot 0 holding the
 * master key under the passphrase, the other slots inactive), laid out as
 * qemu-img lays it out: returns the area (bj_malloc'd; *len bytes, the
 * payload offset) and its payload cipher in *cipher, or NULL with errp.
 */
uint8_t *luks_build(const LuksCreateOpts *o, const uint8_t *pass,
                    size_t passlen, size_t *len, LuksCipher **cipher,
                    Error **errp);

/* luks_build in the thread pool, as luks_co_unlock. */
uint8_t *coroutine_fn luks_co_build(const LuksCreateOpts *o,
                                    const uint8_t *pass, size_t passlen,
                                    size_t *len, LuksCipher **cipher,
                                    Error **errp);

/* Encrypt or decrypt buf in place: len bytes (a multiple of the sector
 * size) starting at payload sector `sector`.  0 or -EIO. */
int luks_encrypt(LuksCipher *c, uint64_t sector, uint8_t *buf, size_t len);
int luks_decrypt(LuksCipher *c, uint64_t sector, uint8_t *buf, size_t len);

/* "aes-256", "xts", "plain64", "sha256" as query output names them. */
void luks_cipher_names(const LuksCipher *c, const char **alg,
                       const char **mode, const char **ivgen,
                       const char **hash);

/* QCryptoBlockInfoLUKS of the header c was unlocked from (or built):
 * cipher-alg, cipher-mode, ivgen-alg, hash-alg, payload-offset,
 * master-key-iters, uuid, slots; the query output of a luks node and of
 * an encrypted qcow2's "encrypt" (which adds "format"). */
json_t *luks_cipher_query(const LuksCipher *c);

void luks_cipher_free(LuksCipher *c);

#endif
