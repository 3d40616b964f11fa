/*
 * LUKS1 (the on-disk format specification, version 1.2.3): phdr parsing
 * and building, key slot unlock (PBKDF2, AF-merge, master key digest) and
 * sector encryption with plain, plain64 and ESSIV initial vectors.  See
 * luks-crypto.h.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "aio/io.h"
#include "block/drivers/luks-crypto.h"
#include "util/alloc.h"

#define KEY_ACTIVE      0x00AC71F3u
#define KEY_DISABLED    0x0000DEADu
#define DIGEST_SIZE     20
#define SALT_SIZE       32
#define STRIPES         4000
#define N_SLOTS         8
#define ALIGN_SECTORS   8   /* key material and payload: 4 KiB aligned */

/* phdr offsets */
#define O_VERSION       6
#define O_CIPHER_NAME   8
#define O_CIPHER_MODE   40
#define O_HASH_SPEC     72
#define O_PAYLOAD       104
#define O_KEY_BYTES     108
#define O_MK_DIGEST     112
#define O_MK_SALT       132
#define O_MK_ITER       164
#define O_UUID          168
#define O_SLOTS         208
#define SLOT_SIZE       48

const char *const luks_cipher_alg_names[] = {
    "aes-128", "aes-192", "aes-256", "des", "3des", "cast5-128",
    "serpent-128", "serpent-192", "serpent-256", "twofish-128",
    "twofish-192", "twofish-256", NULL
};
const char *const luks_cipher_mode_names[] = {
    "ecb", "cbc", "xts", "ctr", NULL
};
const char *const luks_ivgen_names[] = { "plain", "plain64", "essiv", NULL };
const char *const luks_hash_names[] = {
    "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160",
    NULL
};

static const uint8_t luks_magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };

enum { IV_PLAIN, IV_PLAIN64, IV_ESSIV };

struct LuksCipher {
    gnutls_cipher_hd_t h;
    gnutls_cipher_hd_t essiv;    /* ESSIV: the salt cipher (CBC, one block) */
    int ivgen;
    char alg[40];                /* aes-256 */
    char mode[40];               /* xts */
    char ivgen_name[40];         /* plain64, essiv */
    char ivgen_spec[40];         /* plain64, essiv:sha256 */
    char hash[40];               /* the header's hash spec */
    /* For query output: what the header says. */
    char uuid[41];
    uint32_t mk_iters;
    uint64_t payload;
    struct {
        bool active;
        uint32_t iters, stripes;
        uint64_t key_offset;
    } slots[8];
};

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static const struct {
    const char *name;
    gnutls_digest_algorithm_t dig;
    gnutls_mac_algorithm_t mac;
} hashes[] = {
    { "sha1", GNUTLS_DIG_SHA1, GNUTLS_MAC_SHA1 },
    { "sha224", GNUTLS_DIG_SHA224, GNUTLS_MAC_SHA224 },
    { "sha256", GNUTLS_DIG_SHA256, GNUTLS_MAC_SHA256 },
    { "sha384", GNUTLS_DIG_SHA384, GNUTLS_MAC_SHA384 },
    { "sha512", GNUTLS_DIG_SHA512, GNUTLS_MAC_SHA512 },
    { "ripemd160", GNUTLS_DIG_RMD160, GNUTLS_MAC_RMD160 },
};

static int find_hash(const char *name)
{
    for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++) {
        if (strcmp(hashes[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* The header's fixed-size string at p (NUL-terminated within n bytes). */
static void hdr_str(char *dst, const uint8_t *p, size_t n)
{
    memcpy(dst, p, n);
    dst[n] = '\0';
}

static int pbkdf2(int hash, const uint8_t *pass, size_t passlen,
                  const uint8_t *salt, size_t saltlen, unsigned iter,
                  uint8_t *out, size_t outlen)
{
    /* GnuTLS refuses an empty key; a one-byte buffer of length 0 works. */
    uint8_t empty = 0;
    gnutls_datum_t key = { (unsigned char *)(passlen ? pass : &empty),
                           (unsigned)passlen };
    gnutls_datum_t s = { (unsigned char *)salt, (unsigned)saltlen };

    return gnutls_pbkdf2(hashes[hash].mac, &key, &s, iter, out, outlen) < 0
           ? -EIO : 0;
}

/* ---- ciphers ---- */

static gnutls_cipher_algorithm_t aes_alg(const char *mode, size_t keylen)
{
    if (strcmp(mode, "xts") == 0) {
        return keylen == 32 ? GNUTLS_CIPHER_AES_128_XTS :
               keylen == 64 ? GNUTLS_CIPHER_AES_256_XTS :
               GNUTLS_CIPHER_UNKNOWN;
    }
    if (strcmp(mode, "cbc") == 0) {
        return keylen == 16 ? GNUTLS_CIPHER_AES_128_CBC :
               keylen == 24 ? GNUTLS_CIPHER_AES_192_CBC :
               keylen == 32 ? GNUTLS_CIPHER_AES_256_CBC :
               GNUTLS_CIPHER_UNKNOWN;
    }
    return GNUTLS_CIPHER_UNKNOWN;
}

void luks_cipher_free(LuksCipher *c)
{
    if (!c) {
        return;
    }
    if (c->h) {
        gnutls_cipher_deinit(c->h);
    }
    if (c->essiv) {
        gnutls_cipher_deinit(c->essiv);
    }
    free(c);
}

/*
 * A cipher for `name` ("aes") and `mode` ("xts-plain64",
 * "cbc-essiv:sha256") under key.  NULL with errp when unsupported.
 */
static LuksCipher *cipher_new(const char *name, const char *mode,
                              const uint8_t *key, size_t keylen,
                              const char *hash, Error **errp)
{
    char chain[32];
    const char *iv;
    gnutls_cipher_algorithm_t alg;
    LuksCipher *c;
    gnutls_datum_t k;

    iv = strchr(mode, '-');
    if (!iv || (size_t)(iv - mode) >= sizeof(chain)) {
        error_setg(errp, "Unsupported cipher mode '%s'", mode);
        return NULL;
    }
    memcpy(chain, mode, iv - mode);
    chain[iv - mode] = '\0';
    iv++;
    if (strcmp(name, "aes") != 0) {
        error_setg(errp, "Unsupported cipher algorithm '%s'", name);
        return NULL;
    }
    alg = aes_alg(chain, keylen);
    if (alg == GNUTLS_CIPHER_UNKNOWN) {
        error_setg(errp, "Unsupported cipher '%s-%s' with a %zu-byte key",
                   name, chain, keylen);
        return NULL;
    }
    c = bj_calloc(1, sizeof(*c));
    snprintf(c->alg, sizeof(c->alg), "aes-%zu",
             (strcmp(chain, "xts") == 0 ? keylen / 2 : keylen) * 8);
    snprintf(c->mode, sizeof(c->mode), "%s", chain);
    snprintf(c->hash, sizeof(c->hash), "%s", hash);
    if (strcmp(iv, "plain64") == 0) {
        c->ivgen = IV_PLAIN64;
    } else if (strcmp(iv, "plain") == 0) {
        c->ivgen = IV_PLAIN;
    } else if (strncmp(iv, "essiv:", 6) == 0) {
        int hi = find_hash(iv + 6);
        uint8_t salt[64];
        unsigned slen;
        gnutls_cipher_algorithm_t ealg;

        c->ivgen = IV_ESSIV;
        slen = hi < 0 ? 0 : gnutls_hash_get_len(hashes[hi].dig);
        ealg = aes_alg("cbc", slen);
        if (hi < 0 || ealg == GNUTLS_CIPHER_UNKNOWN ||
            gnutls_hash_fast(hashes[hi].dig, key, keylen, salt) < 0) {
            error_setg(errp, "Unsupported IV generator '%s'", iv);
            luks_cipher_free(c);
            return NULL;
        }
        k = (gnutls_datum_t){ salt, slen };
        if (gnutls_cipher_init(&c->essiv, ealg, &k, NULL) < 0) {
            c->essiv = NULL;
            error_setg(errp, "Cannot initialize the ESSIV cipher");
            luks_cipher_free(c);
            return NULL;
        }
    } else {
        error_setg(errp, "Unsupported IV generator '%s'", iv);
        luks_cipher_free(c);
        return NULL;
    }
    snprintf(c->ivgen_name, sizeof(c->ivgen_name), "%s",
             c->ivgen == IV_ESSIV ? "essiv" : iv);
    snprintf(c->ivgen_spec, sizeof(c->ivgen_spec), "%s", iv);
    k = (gnutls_datum_t){ (unsigned char *)key, (unsigned)keylen };
    if (gnutls_cipher_init(&c->h, alg, &k, NULL) < 0) {
        c->h = NULL;
        error_setg(errp, "Cannot initialize cipher '%s-%s'", name, mode);
        luks_cipher_free(c);
        return NULL;
    }
    return c;
}

static int set_iv(LuksCipher *c, uint64_t sector)
{
    uint8_t iv[16] = { 0 };
    uint8_t zero[16] = { 0 };

    if (c->ivgen == IV_PLAIN) {
        sector &= 0xffffffffu;
    }
    for (int i = 0; i < 8; i++) {
        iv[i] = sector >> (8 * i);
    }
    if (c->ivgen == IV_ESSIV) {
        /* One CBC block under a zero IV is ECB. */
        gnutls_cipher_set_iv(c->essiv, zero, sizeof(zero));
        if (gnutls_cipher_encrypt(c->essiv, iv, sizeof(iv)) < 0) {
            return -EIO;
        }
    }
    gnutls_cipher_set_iv(c->h, iv, sizeof(iv));
    return 0;
}

static int crypt_sectors(LuksCipher *c, uint64_t sector, uint8_t *buf,
                         size_t len, bool enc)
{
    while (len) {
        size_t n = len < LUKS_SECTOR_SIZE ? len : LUKS_SECTOR_SIZE;
        int r;

        if (set_iv(c, sector) < 0) {
            return -EIO;
        }
        r = enc ? gnutls_cipher_encrypt2(c->h, buf, n, buf, n)
                : gnutls_cipher_decrypt2(c->h, buf, n, buf, n);
        if (r < 0) {
            return -EIO;
        }
        buf += n;
        len -= n;
        sector++;
    }
    return 0;
}

int luks_encrypt(LuksCipher *c, uint64_t sector, uint8_t *buf, size_t len)
{
    return crypt_sectors(c, sector, buf, len, true);
}

int luks_decrypt(LuksCipher *c, uint64_t sector, uint8_t *buf, size_t len)
{
    return crypt_sectors(c, sector, buf, len, false);
}

void luks_cipher_names(const LuksCipher *c, const char **alg,
                       const char **mode, const char **ivgen,
                       const char **hash)
{
    *alg = c->alg;
    *mode = c->mode;
    *ivgen = c->ivgen_name;
    *hash = c->hash;
}

/* Keeps what query output shows of the header at area. */
static void keep_info(LuksCipher *c, const uint8_t *area)
{
    hdr_str(c->uuid, area + O_UUID, 40);
    c->mk_iters = rd32(area + O_MK_ITER);
    c->payload = (uint64_t)rd32(area + O_PAYLOAD) * LUKS_SECTOR_SIZE;
    for (int s = 0; s < N_SLOTS; s++) {
        const uint8_t *sl = area + O_SLOTS + s * SLOT_SIZE;

        c->slots[s].active = rd32(sl) == KEY_ACTIVE;
        c->slots[s].iters = rd32(sl + 4);
        c->slots[s].key_offset = (uint64_t)rd32(sl + 40) * LUKS_SECTOR_SIZE;
        c->slots[s].stripes = rd32(sl + 44);
    }
}

json_t *luks_cipher_query(const LuksCipher *c)
{
    json_t *o = json_object();
    json_t *slots = json_array();

    json_object_set_new(o, "cipher-alg", json_string(c->alg));
    json_object_set_new(o, "cipher-mode", json_string(c->mode));
    json_object_set_new(o, "ivgen-alg", json_string(c->ivgen_name));
    if (c->ivgen == IV_ESSIV) {
        const char *h = strchr(c->ivgen_spec, ':');
        json_object_set_new(o, "ivgen-hash-alg", json_string(h ? h + 1
                                                             : ""));
    }
    json_object_set_new(o, "hash-alg", json_string(c->hash));
    json_object_set_new(o, "payload-offset", json_integer((json_int_t)
                                                          c->payload));
    json_object_set_new(o, "master-key-iters", json_integer(c->mk_iters));
    json_object_set_new(o, "uuid", json_string(c->uuid));
    for (int s = 0; s < N_SLOTS; s++) {
        json_t *e = json_object();

        json_object_set_new(e, "active", json_boolean(c->slots[s].active));
        if (c->slots[s].active) {
            json_object_set_new(e, "iters", json_integer(c->slots[s].iters));
            json_object_set_new(e, "stripes",
                                json_integer(c->slots[s].stripes));
        }
        json_object_set_new(e, "key-offset", json_integer((json_int_t)
                                                          c->slots[s].key_offset));
        json_array_append_new(slots, e);
    }
    json_object_set_new(o, "slots", slots);
    return o;
}

/* ---- the anti-forensic splitter ---- */

/* H(be32(i) || block i) over each digest-sized block of buf, in place. */
static int diffuse(int hash, uint8_t *buf, size_t len)
{
    size_t ds = gnutls_hash_get_len(hashes[hash].dig);
    uint8_t in[4 + 64], out[64];

    for (size_t i = 0, off = 0; off < len; i++, off += ds) {
        size_t n = len - off < ds ? len - off : ds;

        wr32(in, (uint32_t)i);
        memcpy(in + 4, buf + off, n);
        if (gnutls_hash_fast(hashes[hash].dig, in, 4 + n, out) < 0) {
            return -EIO;
        }
        memcpy(buf + off, out, n);
    }
    return 0;
}

/* d after stripes-1 rounds of d = diffuse(d ^ stripe[i]). */
static int af_fold(int hash, const uint8_t *mat, size_t kb, unsigned stripes,
                   uint8_t *d)
{
    memset(d, 0, kb);
    for (unsigned i = 0; i + 1 < stripes; i++) {
        for (size_t j = 0; j < kb; j++) {
            d[j] ^= mat[i * kb + j];
        }
        if (diffuse(hash, d, kb) < 0) {
            return -EIO;
        }
    }
    return 0;
}

/* ---- the header ---- */

int64_t luks_payload_offset(const uint8_t *buf, size_t len, Error **errp)
{
    uint16_t version;

    if (len < LUKS_PHDR_SIZE || memcmp(buf, luks_magic, 6) != 0) {
        error_setg(errp, "Volume is not in LUKS format");
        return -1;
    }
    version = (uint16_t)(buf[O_VERSION] << 8 | buf[O_VERSION + 1]);
    if (version != 1) {
        error_setg(errp, "Unsupported LUKS version %u", version);
        return -1;
    }
    return (int64_t)rd32(buf + O_PAYLOAD) * LUKS_SECTOR_SIZE;
}

LuksCipher *luks_unlock(const uint8_t *area, size_t len, const uint8_t *pass,
                        size_t passlen, Error **errp)
{
    char name[33], mode[33], hash[33];
    uint32_t kb, mk_iter;
    int hi;
    uint8_t *mat = NULL, *mk = NULL, *slotkey = NULL;
    uint8_t digest[DIGEST_SIZE];
    LuksCipher *ret = NULL;

    if (luks_payload_offset(area, len, errp) < 0) {
        return NULL;
    }
    hdr_str(name, area + O_CIPHER_NAME, 32);
    hdr_str(mode, area + O_CIPHER_MODE, 32);
    hdr_str(hash, area + O_HASH_SPEC, 32);
    kb = rd32(area + O_KEY_BYTES);
    mk_iter = rd32(area + O_MK_ITER);
    hi = find_hash(hash);
    if (hi < 0) {
        error_setg(errp, "Unsupported hash algorithm '%s'", hash);
        return NULL;
    }
    if (kb == 0 || kb > 64) {
        error_setg(errp, "Unsupported key length %u", kb);
        return NULL;
    }
    /* The cipher spec is checked once, before any slot's work. */
    {
        uint8_t probe[64] = { 1 };
        LuksCipher *t = cipher_new(name, mode, probe, kb, hash, errp);

        if (!t) {
            return NULL;
        }
        luks_cipher_free(t);
    }
    mk = bj_malloc(kb);
    slotkey = bj_malloc(kb);
    for (int s = 0; s < N_SLOTS && !ret; s++) {
        const uint8_t *sl = area + O_SLOTS + s * SLOT_SIZE;
        uint32_t iters = rd32(sl + 4);
        uint64_t off = (uint64_t)rd32(sl + 40) * LUKS_SECTOR_SIZE;
        uint32_t stripes = rd32(sl + 44);
        size_t matlen;
        LuksCipher *sc;

        if (rd32(sl) != KEY_ACTIVE || stripes == 0 || iters == 0 ||
            stripes > (1u << 20)) {
            continue;
        }
        matlen = (size_t)kb * stripes;
        if (off > len || matlen > len - off) {
            continue;
        }
        if (pbkdf2(hi, pass, passlen, sl + 8, SALT_SIZE, iters, slotkey,
                   kb) < 0) {
            continue;
        }
        sc = cipher_new(name, mode, slotkey, kb, hash, NULL);
        if (!sc) {
            continue;
        }
        mat = bj_try_malloc(matlen);
        if (!mat) {
            luks_cipher_free(sc);
            continue;
        }
        memcpy(mat, area + off, matlen);
        if (luks_decrypt(sc, 0, mat, matlen) == 0 &&
            af_fold(hi, mat, kb, stripes, mk) == 0) {
            for (size_t j = 0; j < kb; j++) {
                mk[j] ^= mat[(size_t)(stripes - 1) * kb + j];
            }
            if (pbkdf2(hi, mk, kb, area + O_MK_SALT, SALT_SIZE, mk_iter,
                       digest, DIGEST_SIZE) == 0 &&
                memcmp(digest, area + O_MK_DIGEST, DIGEST_SIZE) == 0) {
                ret = cipher_new(name, mode, mk, kb, hash, errp);
                if (!ret) {
                    goto out;
                }
                keep_info(ret, area);
            }
        }
        luks_cipher_free(sc);
        free(mat);
        mat = NULL;
    }
    if (!ret) {
        error_setg(errp, "Invalid password, cannot unlock any keyslot");
    }
out:
    free(mat);
    if (mk) {
        gnutls_memset(mk, 0, kb);
    }
    gnutls_memset(slotkey, 0, kb);
    free(mk);
    free(slotkey);
    return ret;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* PBKDF2 iterations that take about ms milliseconds here (>= 1000). */
static uint32_t bench_iters(int hi, size_t kb, uint64_t ms)
{
    uint8_t salt[SALT_SIZE] = { 0 }, out[64];
    uint32_t n = 1000;
    uint64_t t;
    double per_ms, want;

    for (;;) {
        uint64_t t0 = now_ns();

        pbkdf2(hi, (const uint8_t *)"benchmark", 9, salt, sizeof(salt), n,
               out, kb);
        t = now_ns() - t0;
        if (t >= 20000000u || n >= (1u << 24)) {
            break;
        }
        n *= 4;
    }
    per_ms = (double)n * 1e6 / (double)(t ? t : 1);
    want = per_ms * (double)ms;
    if (want < 1000) {
        want = 1000;
    }
    if (want > (double)UINT32_MAX) {
        want = (double)UINT32_MAX;
    }
    return (uint32_t)want;
}

uint8_t *luks_build(const LuksCreateOpts *o, const uint8_t *pass,
                    size_t passlen, size_t *len, LuksCipher **cipher,
                    Error **errp)
{
    unsigned bits;
    size_t kb;
    char mode[40];
    int hi;
    uint32_t iters, mk_iters, mat_sectors, payload;
    uint8_t *area = NULL, *mk = NULL, *slotkey = NULL, *mat = NULL;
    uint8_t uuid[16];
    LuksCipher *pc = NULL, *sc = NULL;
    size_t matlen;

    if (sscanf(o->cipher_alg, "aes-%u", &bits) != 1 ||
        (bits != 128 && bits != 192 && bits != 256)) {
        error_setg(errp, "Unsupported cipher algorithm '%s'", o->cipher_alg);
        return NULL;
    }
    kb = bits / 8 * (strcmp(o->cipher_mode, "xts") == 0 ? 2 : 1);
    hi = find_hash(o->hash_alg);
    if (hi < 0) {
        error_setg(errp, "Unsupported hash algorithm '%s'", o->hash_alg);
        return NULL;
    }
    if (strcmp(o->ivgen_alg, "essiv") == 0) {
        snprintf(mode, sizeof(mode), "%s-essiv:%s", o->cipher_mode,
                 o->ivgen_hash_alg ? o->ivgen_hash_alg : "sha256");
    } else {
        snprintf(mode, sizeof(mode), "%s-%s", o->cipher_mode, o->ivgen_alg);
    }

    mk = bj_malloc(kb);
    slotkey = bj_malloc(kb);
    if (gnutls_rnd(GNUTLS_RND_KEY, mk, kb) < 0) {
        error_setg(errp, "Cannot generate a master key");
        goto fail;
    }
    pc = cipher_new("aes", mode, mk, kb, o->hash_alg, errp);
    if (!pc) {
        goto fail;
    }

    matlen = kb * STRIPES;
    mat_sectors = (uint32_t)((matlen + LUKS_SECTOR_SIZE - 1) /
                             LUKS_SECTOR_SIZE);
    mat_sectors = (mat_sectors + ALIGN_SECTORS - 1) / ALIGN_SECTORS *
                  ALIGN_SECTORS;
    payload = ALIGN_SECTORS + N_SLOTS * mat_sectors;
    *len = (size_t)payload * LUKS_SECTOR_SIZE;
    area = bj_calloc(1, *len);

    iters = bench_iters(hi, kb, o->iter_time_ms);
    mk_iters = iters / 8 < 1000 ? 1000 : iters / 8;

    memcpy(area, luks_magic, 6);
    area[O_VERSION + 1] = 1;
    memcpy(area + O_CIPHER_NAME, "aes", 3);
    memcpy(area + O_CIPHER_MODE, mode, strlen(mode));
    memcpy(area + O_HASH_SPEC, o->hash_alg, strlen(o->hash_alg));
    wr32(area + O_PAYLOAD, payload);
    wr32(area + O_KEY_BYTES, (uint32_t)kb);
    wr32(area + O_MK_ITER, mk_iters);
    if (gnutls_rnd(GNUTLS_RND_NONCE, area + O_MK_SALT, SALT_SIZE) < 0 ||
        gnutls_rnd(GNUTLS_RND_NONCE, uuid, sizeof(uuid)) < 0 ||
        gnutls_rnd(GNUTLS_RND_NONCE, area + O_SLOTS + 8, SALT_SIZE) < 0) {
        error_setg(errp, "Cannot generate random salts");
        goto fail;
    }
    if (pbkdf2(hi, mk, kb, area + O_MK_SALT, SALT_SIZE, mk_iters,
               area + O_MK_DIGEST, DIGEST_SIZE) < 0) {
        error_setg(errp, "Cannot compute the master key digest");
        goto fail;
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    snprintf((char *)area + O_UUID, 40,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             uuid[0], uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6],
             uuid[7], uuid[8], uuid[9], uuid[10], uuid[11], uuid[12],
             uuid[13], uuid[14], uuid[15]);
    for (int s = 0; s < N_SLOTS; s++) {
        uint8_t *sl = area + O_SLOTS + s * SLOT_SIZE;

        wr32(sl, s == 0 ? KEY_ACTIVE : KEY_DISABLED);
        wr32(sl + 4, s == 0 ? iters : 0);
        wr32(sl + 40, ALIGN_SECTORS + s * mat_sectors);
        wr32(sl + 44, STRIPES);
    }

    /* Slot 0: the master key split over STRIPES stripes, encrypted under
     * the passphrase's key. */
    if (pbkdf2(hi, pass, passlen, area + O_SLOTS + 8, SALT_SIZE, iters,
               slotkey, kb) < 0) {
        error_setg(errp, "Cannot derive the key slot key");
        goto fail;
    }
    sc = cipher_new("aes", mode, slotkey, kb, o->hash_alg, errp);
    if (!sc) {
        goto fail;
    }
    mat = area + (size_t)ALIGN_SECTORS * LUKS_SECTOR_SIZE;
    if (gnutls_rnd(GNUTLS_RND_NONCE, mat, matlen - kb) < 0 ||
        af_fold(hi, mat, kb, STRIPES, mat + matlen - kb) < 0) {
        error_setg(errp, "Cannot split the master key");
        goto fail;
    }
    for (size_t j = 0; j < kb; j++) {
        mat[matlen - kb + j] ^= mk[j];
    }
    if (luks_encrypt(sc, 0, mat, matlen) < 0) {
        error_setg(errp, "Cannot encrypt the key material");
        goto fail;
    }
    luks_cipher_free(sc);
    gnutls_memset(mk, 0, kb);
    gnutls_memset(slotkey, 0, kb);
    free(mk);
    free(slotkey);
    keep_info(pc, area);
    *cipher = pc;
    return area;

fail:
    luks_cipher_free(sc);
    luks_cipher_free(pc);
    free(area);
    if (mk) {
        gnutls_memset(mk, 0, kb);
    }
    free(mk);
    free(slotkey);
    return NULL;
}

/* ---- in the thread pool ---- */

typedef struct LuksJob {
    const LuksCreateOpts *o;     /* build; NULL: unlock */
    const uint8_t *area;
    size_t len;
    uint8_t *pass;               /* our copy */
    size_t passlen;
    LuksCipher *cipher;
    uint8_t *built;
    Error *err;
} LuksJob;

static int luks_job_run(void *opaque)
{
    LuksJob *j = opaque;

    if (j->o) {
        j->built = luks_build(j->o, j->pass, j->passlen, &j->len,
                              &j->cipher, &j->err);
    } else {
        j->cipher = luks_unlock(j->area, j->len, j->pass, j->passlen,
                                &j->err);
    }
    return 0;
}

static void coroutine_fn luks_job_do(LuksJob *j, const uint8_t *pass,
                                     size_t passlen, Error **errp)
{
    j->pass = bj_malloc(passlen ? passlen : 1);
    memcpy(j->pass, pass, passlen);
    j->passlen = passlen;
    thread_pool_co_run(luks_job_run, j);
    gnutls_memset(j->pass, 0, passlen);
    free(j->pass);
    if (j->err) {
        error_propagate(errp, j->err);
    }
}

LuksCipher *coroutine_fn luks_co_unlock(const uint8_t *area, size_t len,
                                        const uint8_t *pass, size_t passlen,
                                        Error **errp)
{
    LuksJob j = { .area = area, .len = len };

    luks_job_do(&j, pass, passlen, errp);
    return j.cipher;
}

uint8_t *coroutine_fn luks_co_build(const LuksCreateOpts *o,
                                    const uint8_t *pass, size_t passlen,
                                    size_t *len, LuksCipher **cipher,
                                    Error **errp)
{
    LuksJob j = { .o = o };

    luks_job_do(&j, pass, passlen, errp);
    *len = j.len;
    *cipher = j.cipher;
    return j.built;
}
