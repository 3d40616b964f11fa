/*
 * NBD protocol pieces without sockets: the handshake state machine fed with
 * the bytes a client would send, request validation, reply encoders.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "nbd-bytes.h"

#include "nbd/nbd-handshake.h"
#include "nbd/nbd-proto.h"
#include "nbd/nbd-request.h"
#include "nbd/nbd-wire.h"

/* ---- a fake export table: "disk" (rw, 1 MiB) and "ro" (read-only) ---- */

static const NbdExportInfo exports[] = {
    { .name = "disk", .description = "the disk", .size = 1 << 20,
      .tflags = NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM |
                NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO,
      .min_block = 512, .pref_block = 4096, .max_block = NBD_MAX_PAYLOAD,
      .handle = (void *)&exports[0] },
    { .name = "ro", .description = NULL, .size = 4096,
      .tflags = NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH,
      .min_block = 1, .pref_block = 4096, .max_block = NBD_MAX_PAYLOAD,
      .handle = (void *)&exports[1] },
};

static bool fake_find(void *opaque, const char *name, NbdExportInfo *info)
{
    for (size_t i = 0; i < 2; i++) {
        if (strcmp(exports[i].name, name) == 0) {
            *info = exports[i];
            return true;
        }
    }
    return false;
}

static void fake_for_each(void *opaque, NbdExportInfoFn *fn, void *fn_opaque)
{
    for (size_t i = 0; i < 2; i++) {
        fn(&exports[i], fn_opaque);
    }
}

static const NbdExportLookup lookup = {
    .find = fake_find, .for_each = fake_for_each,
};

/* ---- client-side byte builders ---- */

static void opt(Buf *b, uint32_t option, const Buf *data)
{
    b64(b, NBD_IHAVEOPT);
    b32(b, option);
    b32(b, data ? data->n : 0);
    if (data) {
        memcpy(b->b + b->n, data->b, data->n);
        b->n += data->n;
    }
}

/* Starts a handshake and checks the greeting; feeds the client flags. */
static void start(NbdHandshake *hs, uint32_t cflags)
{
    uint8_t f[4];

    nbd_handshake_init(hs, &lookup);
    assert_int_equal(hs->out_len, 18);
    assert_true(nbd_get64(hs->out) == NBD_MAGIC);
    assert_true(nbd_get64(hs->out + 8) == NBD_IHAVEOPT);
    assert_int_equal(nbd_get16(hs->out + 16),
                     NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    nbd_handshake_output_consumed(hs, hs->out_len);
    assert_int_equal(nbd_handshake_want(hs), 4);
    nbd_put32(f, cflags);
    assert_int_equal(nbd_handshake_feed(hs, f, 4), 4);
}

/* Feeds b one byte at a time (the machine must not care how bytes arrive). */
static size_t feed_slowly(NbdHandshake *hs, const Buf *b)
{
    size_t used = 0;
    for (size_t i = 0; i < b->n; i++) {
        used += nbd_handshake_feed(hs, b->b + i, 1);
    }
    return used;
}

/* Pops one option reply from the output; returns its type. */
static uint32_t pop_reply(NbdHandshake *hs, uint32_t option, uint8_t *data,
                          uint32_t *len)
{
    assert_true(hs->out_len >= NBD_OPT_REPLY_HEADER_SIZE);
    assert_true(nbd_get64(hs->out) == NBD_REP_MAGIC);
    assert_int_equal(nbd_get32(hs->out + 8), option);
    uint32_t type = nbd_get32(hs->out + 12);
    uint32_t l = nbd_get32(hs->out + 16);
    assert_true(hs->out_len >= NBD_OPT_REPLY_HEADER_SIZE + l);
    if (data) {
        memcpy(data, hs->out + NBD_OPT_REPLY_HEADER_SIZE, l);
    }
    if (len) {
        *len = l;
    }
    nbd_handshake_output_consumed(hs, NBD_OPT_REPLY_HEADER_SIZE + l);
    return type;
}

static void info_data(Buf *d, const char *name, int nreq, const uint16_t *req)
{
    d->n = 0;
    b32(d, strlen(name));
    bstr(d, name);
    b16(d, nreq);
    for (int i = 0; i < nreq; i++) {
        b16(d, req[i]);
    }
}

static void test_go_full(void **state)
{
    NbdHandshake hs;
    Buf b = { .n = 0 }, d = { .n = 0 };
    uint8_t r[256];
    uint32_t len;
    const uint16_t req[] = { NBD_INFO_NAME, NBD_INFO_DESCRIPTION,
                             NBD_INFO_BLOCK_SIZE, 77 };
    bool got_export = false, got_name = false, got_desc = false, got_bs = false;

    start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    opt(&b, NBD_OPT_STRUCTURED_REPLY, NULL);
    info_data(&d, "disk", 4, req);
    opt(&b, NBD_OPT_GO, &d);
    /* A request right behind GO must not be swallowed. */
    b32(&b, NBD_REQUEST_MAGIC);
    assert_int_equal(feed_slowly(&hs, &b), b.n - 4);
    assert_int_equal(hs.state, NBD_HS_DONE);
    assert_int_equal(nbd_handshake_want(&hs), 0);

    assert_int_equal(pop_reply(&hs, NBD_OPT_STRUCTURED_REPLY, r, &len),
                     NBD_REP_ACK);
    for (;;) {
        uint32_t t = pop_reply(&hs, NBD_OPT_GO, r, &len);
        if (t == NBD_REP_ACK) {
            break;
        }
        assert_int_equal(t, NBD_REP_INFO);
        switch (nbd_get16(r)) {
        case NBD_INFO_EXPORT:
            assert_int_equal(len, 12);
            assert_true(nbd_get64(r + 2) == 1 << 20);
            assert_int_equal(nbd_get16(r + 10),
                             exports[0].tflags | NBD_FLAG_HAS_FLAGS |
                             NBD_FLAG_SEND_DF);
            got_export = true;
            break;
        case NBD_INFO_NAME:
            assert_int_equal(len, 6);
            assert_memory_equal(r + 2, "disk", 4);
            got_name = true;
            break;
        case NBD_INFO_DESCRIPTION:
            assert_memory_equal(r + 2, "the disk", 8);
            got_desc = true;
            break;
        case NBD_INFO_BLOCK_SIZE:
            assert_int_equal(len, 14);
            assert_int_equal(nbd_get32(r + 2), 512);
            assert_int_equal(nbd_get32(r + 6), 4096);
            assert_int_equal(nbd_get32(r + 10), NBD_MAX_PAYLOAD);
            got_bs = true;
            break;
        default:
            fail();
        }
    }
    assert_true(got_export && got_name && got_desc && got_bs);
    assert_int_equal(hs.out_len, 0);
    assert_ptr_equal(hs.export.handle, &exports[0]);
    assert_true(hs.structured);
    assert_true(hs.block_size_agreed);
    nbd_handshake_cleanup(&hs);
}

static void test_go_without_block_size_advertises_min_one(void **state)
{
    NbdHandshake hs;
    Buf b = { .n = 0 }, d = { .n = 0 };
    uint8_t r[64];
    uint32_t len, t;

    start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE);
    info_data(&d, "disk", 0, NULL);
    opt(&b, NBD_OPT_GO, &d);
    assert_int_equal(nbd_handshake_feed(&hs, b.b, b.n), b.n);
    assert_int_equal(hs.state, NBD_HS_DONE);
    while ((t = pop_reply(&hs, NBD_OPT_GO, r, &len)) == NBD_REP_INFO) {
        if (nbd_get16(r) == NBD_INFO_BLOCK_SIZE) {
            assert_int_equal(nbd_get32(r + 2), 1);
        }
        if (nbd_get16(r) == NBD_INFO_EXPORT) {
            /* no structured replies: no DF */
            assert_false(nbd_get16(r + 10) & NBD_FLAG_SEND_DF);
        }
    }
    assert_int_equal(t, NBD_REP_ACK);
    assert_false(hs.block_size_agreed);
    nbd_handshake_cleanup(&hs);
}

static void test_info_unknown_then_list_then_abort(void **state)
{
    NbdHandshake hs;
    Buf b = { .n = 0 }, d = { .n = 0 };
    uint8_t r[256];
    uint32_t len;

    start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE);
    info_data(&d, "nope", 0, NULL);
    opt(&b, NBD_OPT_INFO, &d);
    opt(&b, NBD_OPT_LIST, NULL);
    opt(&b, 4242, NULL);                   /* unknown option */
    opt(&b, NBD_OPT_STARTTLS, NULL);
    opt(&b, NBD_OPT_ABORT, NULL);
    assert_int_equal(nbd_handshake_feed(&hs, b.b, b.n), b.n);
    assert_int_equal(hs.state, NBD_HS_CLOSE);

    assert_int_equal(pop_reply(&hs, NBD_OPT_INFO, r, &len),
                     NBD_REP_ERR_UNKNOWN);
    r[len] = 0;
    assert_string_equal((char *)r, "export 'nope' not present");
    assert_int_equal(pop_reply(&hs, NBD_OPT_LIST, r, &len), NBD_REP_SERVER);
    assert_int_equal(nbd_get32(r), 4);
    assert_memory_equal(r + 4, "diskthe disk", 12);
    assert_int_equal(pop_reply(&hs, NBD_OPT_LIST, r, &len), NBD_REP_SERVER);
    assert_int_equal(len, 6);
    assert_memory_equal(r + 4, "ro", 2);
    assert_int_equal(pop_reply(&hs, NBD_OPT_LIST, NULL, NULL), NBD_REP_ACK);
    assert_int_equal(pop_reply(&hs, 4242, NULL, NULL), NBD_REP_ERR_UNSUP);
    assert_int_equal(pop_reply(&hs, NBD_OPT_STARTTLS, NULL, NULL),
                     NBD_REP_ERR_POLICY);
    assert_int_equal(pop_reply(&hs, NBD_OPT_ABORT, NULL, NULL), NBD_REP_ACK);
    assert_int_equal(hs.out_len, 0);
    nbd_handshake_cleanup(&hs);
}

/* A TLS server: before STARTTLS every option but ABORT is refused with
 * TLS_REQD; STARTTLS is acknowledged and hands over to the caller; once
 * TLS is up, options work and a second STARTTLS is invalid. */
static void test_tls_required(void **state)
{
    NbdHandshake hs;
    Buf b = { .n = 0 }, d = { .n = 0 };
    uint32_t t;

    start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE);
    hs.tls_required = true;
    info_data(&d, "disk", 0, NULL);
    opt(&b, NBD_OPT_GO, &d);
    opt(&b, NBD_OPT_LIST, NULL);
    opt(&b, NBD_OPT_STRUCTURED_REPLY, NULL);
    opt(&b, NBD_OPT_STARTTLS, NULL);
    assert_int_equal(nbd_handshake_feed(&hs, b.b, b.n), b.n);
    assert_int_equal(pop_reply(&hs, NBD_OPT_GO, NULL, NULL),
                     NBD_REP_ERR_TLS_REQD);
    assert_int_equal(pop_reply(&hs, NBD_OPT_LIST, NULL, NULL),
                     NBD_REP_ERR_TLS_REQD);
    assert_int_equal(pop_reply(&hs, NBD_OPT_STRUCTURED_REPLY, NULL, NULL),
                     NBD_REP_ERR_TLS_REQD);
    assert_false(hs.structured);
    assert_int_equal(pop_reply(&hs, NBD_OPT_STARTTLS, NULL, NULL),
                     NBD_REP_ACK);
    assert_true(hs.starttls_pending);
    assert_int_equal(hs.state, NBD_HS_OPT_HEADER);

    /* the caller ran the TLS handshake */
    hs.starttls_pending = false;
    hs.tls_active = true;
    b.n = 0;
    opt(&b, NBD_OPT_STARTTLS, NULL);
    opt(&b, NBD_OPT_GO, &d);
    assert_int_equal(nbd_handshake_feed(&hs, b.b, b.n), b.n);
    assert_int_equal(pop_reply(&hs, NBD_OPT_STARTTLS, NULL, NULL),
                     NBD_REP_ERR_INVALID);
    while ((t = pop_reply(&hs, NBD_OPT_GO, NULL, NULL)) == NBD_REP_INFO) {
    }
    assert_int_equal(t, NBD_REP_ACK);
    assert_int_equal(hs.state, NBD_HS_DONE);
    nbd_handshake_cleanup(&hs);

    /* NBD_OPT_EXPORT_NAME has no error reply: it closes */
    start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE);
    hs.tls_required = true;
    b.n = 0;
    d.n = 0;
    bstr(&d, "disk");
    opt(&b, NBD_OPT_EXPORT_NAME, &d);
    nbd_handshake_feed(&hs, b.b, b.n);
    assert_int_equal(hs.state, NBD_HS_CLOSE);
    assert_int_equal(hs.out_len, 0);
    nbd_handshake_cleanup(&hs);
}

static void meta_data(Buf *d, const char *name, int n, const char **q)
{
    d->n = 0;
    b32(d, strlen(name));
    bstr(d, name);
    b32(d, n);
    for (int i = 0; i < n; i++) {
        b32(d, strlen(q[i]));
        bstr(d, q[i]);
    }
}

static void test_meta_contexts(void **state)
{
    NbdHandshake hs;
    Buf b = { .n = 0 }, d = { .n = 0 };
    uint8_t r[256];
    uint32_t len;
    const char *q_set[] = { "qemu:dirty-bitmap:x", "base:allocation",
                            "base:" };
    const char *q_list[] = { "base:" };

    start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE);
    /* before structured replies: refused */
    meta_data(&d, "disk", 1, q_set + 1);
    opt(&b, NBD_OPT_SET_META_CONTEXT, &d);
    opt(&b, NBD_OPT_STRUCTURED_REPLY, NULL);
    opt(&b, NBD_OPT_STRUCTURED_REPLY, NULL);    /* twice: invalid */
    meta_data(&d, "disk", 1, q_list);
    opt(&b, NBD_OPT_LIST_META_CONTEXT, &d);
    meta_data(&d, "disk", 0, NULL);
    opt(&b, NBD_OPT_LIST_META_CONTEXT, &d);
    meta_data(&d, "nope", 1, q_set + 1);
    opt(&b, NBD_OPT_SET_META_CONTEXT, &d);
    meta_data(&d, "disk", 3, q_set);
    opt(&b, NBD_OPT_SET_META_CONTEXT, &d);
    assert_int_equal(nbd_handshake_feed(&hs, b.b, b.n), b.n);
    assert_int_equal(hs.state, NBD_HS_OPT_HEADER);

    assert_int_equal(pop_reply(&hs, NBD_OPT_SET_META_CONTEXT, NULL, NULL),
                     NBD_REP_ERR_INVALID);
    assert_int_equal(pop_reply(&hs, NBD_OPT_STRUCTURED_REPLY, NULL, NULL),
                     NBD_REP_ACK);
    assert_int_equal(pop_reply(&hs, NBD_OPT_STRUCTURED_REPLY, NULL, NULL),
                     NBD_REP_ERR_INVALID);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pop_reply(&hs, NBD_OPT_LIST_META_CONTEXT, r, &len),
                         NBD_REP_META_CONTEXT);
        assert_int_equal(nbd_get32(r), 0);
        assert_int_equal(len, 4 + strlen("base:allocation"));
        assert_memory_equal(r + 4, "base:allocation", len - 4);
        assert_int_equal(pop_reply(&hs, NBD_OPT_LIST_META_CONTEXT, NULL,
                                   NULL), NBD_REP_ACK);
    }
    assert_int_equal(pop_reply(&hs, NBD_OPT_SET_META_CONTEXT, NULL, NULL),
                     NBD_REP_ERR_UNKNOWN);
    assert_int_equal(pop_reply(&hs, NBD_OPT_SET_META_CONTEXT, r, &len),
                     NBD_REP_META_CONTEXT);
    assert_int_equal(nbd_get32(r), NBD_META_ID_BASE_ALLOCATION);
    assert_int_equal(pop_reply(&hs, NBD_OPT_SET_META_CONTEXT, NULL, NULL),
                     NBD_REP_ACK);
    assert_true(hs.meta_base_allocation);

    /* GO to another export drops the selection */
    b.n = 0;
    info_data(&d, "ro", 0, NULL);
    opt(&b, NBD_OPT_GO, &d);
    assert_int_equal(nbd_handshake_feed(&hs, b.b, b.n), b.n);
    assert_int_equal(hs.state, NBD_HS_DONE);
    assert_false(hs.meta_base_allocation);
    nbd_handshake_cleanup(&hs);
}

static void test_malformed_options(void **state)
{
    NbdHandshake hs;
    Buf b = { .n = 0 }, d = { .n = 0 };

    start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE);
    /* name length beyond the option data */
    b32(&d, 100);
    bstr(&d, "disk");
    b16(&d, 0);
    opt(&b, NBD_OPT_GO, &d);
    /* info request count disagrees with the data */
    info_data(&d, "disk", 0, NULL);
    b16(&d, 3);
    opt(&b, NBD_OPT_INFO, &d);
    /* NUL inside a name */
    d.n = 0;
    b32(&d, 3);
    d.b[d.n++] = 'a';
    d.b[d.n++] = 0;
    d.b[d.n++] = 'b';
    b16(&d, 0);
    opt(&b, NBD_OPT_GO, &d);
    /* LIST with data */
    d.n = 0;
    b32(&d, 1);
    opt(&b, NBD_OPT_LIST, &d);
    assert_int_equal(nbd_handshake_feed(&hs, b.b, b.n), b.n);
    assert_int_equal(pop_reply(&hs, NBD_OPT_GO, NULL, NULL),
                     NBD_REP_ERR_INVALID);
    assert_int_equal(pop_reply(&hs, NBD_OPT_INFO, NULL, NULL),
                     NBD_REP_ERR_INVALID);
    assert_int_equal(pop_reply(&hs, NBD_OPT_GO, NULL, NULL),
                     NBD_REP_ERR_INVALID);
    assert_int_equal(pop_reply(&hs, NBD_OPT_LIST, NULL, NULL),
                     NBD_REP_ERR_INVALID);
    assert_int_equal(hs.state, NBD_HS_OPT_HEADER);

    /* oversized option data is skipped, not buffered */
    b.n = 0;
    b64(&b, NBD_IHAVEOPT);
    b32(&b, NBD_OPT_INFO);
    b32(&b, 10 * 1024 * 1024);
    assert_int_equal(nbd_handshake_feed(&hs, b.b, b.n), b.n);
    assert_int_equal(hs.state, NBD_HS_OPT_SKIP);
    assert_int_equal(nbd_handshake_want(&hs), 10 * 1024 * 1024);
    static uint8_t junk[1024 * 1024];
    for (int i = 0; i < 10; i++) {
        assert_int_equal(nbd_handshake_feed(&hs, junk, sizeof(junk)),
                         sizeof(junk));
    }
    assert_int_equal(pop_reply(&hs, NBD_OPT_INFO, NULL, NULL),
                     NBD_REP_ERR_TOO_BIG);
    assert_int_equal(hs.state, NBD_HS_OPT_HEADER);

    /* bad magic closes */
    b.n = 0;
    b64(&b, 0x1122334455667788ull);
    b32(&b, NBD_OPT_LIST);
    b32(&b, 0);
    nbd_handshake_feed(&hs, b.b, b.n);
    assert_int_equal(hs.state, NBD_HS_CLOSE);
    assert_int_equal(nbd_handshake_want(&hs), 0);
    nbd_handshake_cleanup(&hs);
}

static void test_export_name(void **state)
{
    NbdHandshake hs;
    Buf b = { .n = 0 }, d = { .n = 0 };

    /* with zeroes */
    start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE);
    bstr(&d, "ro");
    opt(&b, NBD_OPT_EXPORT_NAME, &d);
    assert_int_equal(nbd_handshake_feed(&hs, b.b, b.n), b.n);
    assert_int_equal(hs.state, NBD_HS_DONE);
    assert_int_equal(hs.out_len, 8 + 2 + 124);
    assert_true(nbd_get64(hs.out) == 4096);
    assert_int_equal(nbd_get16(hs.out + 8),
                     NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY |
                     NBD_FLAG_SEND_FLUSH);
    nbd_handshake_cleanup(&hs);

    /* no zeroes; non-fixed client may still use EXPORT_NAME */
    start(&hs, NBD_FLAG_C_NO_ZEROES);
    assert_int_equal(nbd_handshake_feed(&hs, b.b, b.n), b.n);
    assert_int_equal(hs.state, NBD_HS_DONE);
    assert_int_equal(hs.out_len, 10);
    nbd_handshake_cleanup(&hs);

    /* missing export: nothing to answer with, so close */
    start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE);
    b.n = d.n = 0;
    bstr(&d, "nope");
    opt(&b, NBD_OPT_EXPORT_NAME, &d);
    nbd_handshake_feed(&hs, b.b, b.n);
    assert_int_equal(hs.state, NBD_HS_CLOSE);
    assert_int_equal(hs.out_len, 0);
    nbd_handshake_cleanup(&hs);

    /* non-fixed client sending anything else: close */
    start(&hs, 0);
    b.n = 0;
    opt(&b, NBD_OPT_LIST, NULL);
    nbd_handshake_feed(&hs, b.b, b.n);
    assert_int_equal(hs.state, NBD_HS_CLOSE);
    nbd_handshake_cleanup(&hs);

    /* unknown client flags: close */
    start(&hs, 0x80);
    assert_int_equal(hs.state, NBD_HS_CLOSE);
    nbd_handshake_cleanup(&hs);
}

static void test_shutting_down(void **state)
{
    NbdHandshake hs;
    Buf b = { .n = 0 };

    start(&hs, NBD_FLAG_C_FIXED_NEWSTYLE);
    hs.shutting_down = true;
    opt(&b, NBD_OPT_LIST, NULL);
    opt(&b, NBD_OPT_ABORT, NULL);
    nbd_handshake_feed(&hs, b.b, b.n);
    assert_int_equal(pop_reply(&hs, NBD_OPT_LIST, NULL, NULL),
                     NBD_REP_ERR_SHUTDOWN);
    assert_int_equal(pop_reply(&hs, NBD_OPT_ABORT, NULL, NULL), NBD_REP_ACK);
    assert_int_equal(hs.state, NBD_HS_CLOSE);
    nbd_handshake_cleanup(&hs);
}

/* ---- requests ---- */

static const NbdTransmitParams rw_params = {
    .size = 1 << 20,
    .tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
              NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
              NBD_FLAG_SEND_FAST_ZERO | NBD_FLAG_SEND_DF |
              NBD_FLAG_SEND_CACHE,
    .structured = true,
    .meta_base_allocation = true,
    .min_block = 1,
    .max_block = NBD_MAX_PAYLOAD,
};

static NbdRequestCheck chk(const NbdTransmitParams *p, uint16_t type,
                           uint16_t flags, uint64_t off, uint32_t len)
{
    NbdRequest r = { .type = type, .flags = flags, .handle = 7,
                     .offset = off, .length = len };
    uint8_t buf[NBD_REQUEST_SIZE];
    NbdRequest back;

    nbd_encode_request(buf, &r);
    assert_true(nbd_decode_request(buf, &back));
    /* Field by field: the struct's padding is not part of the value. */
    assert_int_equal(back.type, r.type);
    assert_int_equal(back.flags, r.flags);
    assert_true(back.handle == r.handle);
    assert_true(back.offset == r.offset);
    assert_int_equal(back.length, r.length);
    return nbd_request_check(p, &r);
}

#define EXPECT(c, v, e) do {                     \
        NbdRequestCheck _c = (c);                \
        assert_int_equal(_c.verdict, (v));       \
        assert_int_equal(_c.nbd_error, (e));     \
    } while (0)

static void test_request_check(void **state)
{
    NbdTransmitParams ro = rw_params;
    NbdTransmitParams aligned = rw_params;
    NbdTransmitParams simple = rw_params;
    const uint64_t sz = rw_params.size;
    uint8_t buf[NBD_REQUEST_SIZE] = { 0 };
    NbdRequest r;

    ro.tflags = (ro.tflags | NBD_FLAG_READ_ONLY) &
                ~(NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                  NBD_FLAG_SEND_FAST_ZERO);
    aligned.min_block = 512;
    simple.structured = false;
    simple.meta_base_allocation = false;
    simple.tflags &= ~NBD_FLAG_SEND_DF;

    assert_false(nbd_decode_request(buf, &r));

    EXPECT(chk(&rw_params, NBD_CMD_READ, 0, 0, 4096), NBD_REQ_OK, 0);
    EXPECT(chk(&rw_params, NBD_CMD_READ, NBD_CMD_FLAG_DF, sz - 1, 1),
           NBD_REQ_OK, 0);
    EXPECT(chk(&rw_params, NBD_CMD_READ, 0, sz, 0), NBD_REQ_OK, 0);
    EXPECT(chk(&rw_params, NBD_CMD_READ, 0, sz - 1, 2), NBD_REQ_ERROR,
           NBD_EINVAL);
    EXPECT(chk(&rw_params, NBD_CMD_READ, 0, UINT64_MAX, 2), NBD_REQ_ERROR,
           NBD_EINVAL);
    EXPECT(chk(&rw_params, NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE, 0, 1),
           NBD_REQ_ERROR, NBD_EINVAL);
    EXPECT(chk(&simple, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 1),
           NBD_REQ_ERROR, NBD_EINVAL);

    NbdRequestCheck c = chk(&rw_params, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0,
                            512);
    assert_int_equal(c.verdict, NBD_REQ_OK);
    assert_int_equal(c.payload, 512);
    c = chk(&rw_params, NBD_CMD_WRITE, 0, sz, 512);
    assert_int_equal(c.verdict, NBD_REQ_ERROR);
    assert_int_equal(c.nbd_error, NBD_ENOSPC);
    assert_int_equal(c.payload, 512);        /* must still be read */
    c = chk(&ro, NBD_CMD_WRITE, 0, 0, 512);
    assert_int_equal(c.nbd_error, NBD_EPERM);
    assert_int_equal(c.payload, 512);
    EXPECT(chk(&rw_params, NBD_CMD_WRITE, 0, 0, NBD_MAX_PAYLOAD + 1),
           NBD_REQ_HARD_CLOSE, 0);

    EXPECT(chk(&rw_params, NBD_CMD_WRITE_ZEROES,
               NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO, 0, sz),
           NBD_REQ_OK, 0);
    EXPECT(chk(&rw_params, NBD_CMD_WRITE_ZEROES, 0, 1, sz),
           NBD_REQ_ERROR, NBD_ENOSPC);
    EXPECT(chk(&ro, NBD_CMD_WRITE_ZEROES, 0, 0, 1), NBD_REQ_ERROR, NBD_EPERM);
    EXPECT(chk(&ro, NBD_CMD_TRIM, 0, 0, 1), NBD_REQ_ERROR, NBD_EPERM);
    EXPECT(chk(&rw_params, NBD_CMD_TRIM, 0, 0, sz), NBD_REQ_OK, 0);
    EXPECT(chk(&rw_params, NBD_CMD_TRIM, 0, 512, sz), NBD_REQ_ERROR,
           NBD_EINVAL);
    EXPECT(chk(&rw_params, NBD_CMD_TRIM, NBD_CMD_FLAG_NO_HOLE, 0, 1),
           NBD_REQ_ERROR, NBD_EINVAL);

    EXPECT(chk(&rw_params, NBD_CMD_FLUSH, 0, 0, 0), NBD_REQ_OK, 0);
    EXPECT(chk(&rw_params, NBD_CMD_CACHE, 0, 0, sz), NBD_REQ_OK, 0);
    EXPECT(chk(&rw_params, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0,
               sz), NBD_REQ_OK, 0);
    EXPECT(chk(&simple, NBD_CMD_BLOCK_STATUS, 0, 0, 1), NBD_REQ_ERROR,
           NBD_EINVAL);
    EXPECT(chk(&rw_params, NBD_CMD_BLOCK_STATUS, 0, 0, sz + 1),
           NBD_REQ_ERROR, NBD_EINVAL);
    EXPECT(chk(&rw_params, NBD_CMD_BLOCK_STATUS, 0, 0, 0), NBD_REQ_ERROR,
           NBD_EINVAL);
    EXPECT(chk(&rw_params, NBD_CMD_DISC, 0, 0, 0), NBD_REQ_DISC, 0);
    EXPECT(chk(&rw_params, 99, 0, 0, 0), NBD_REQ_ERROR, NBD_EINVAL);
    EXPECT(chk(&rw_params, NBD_CMD_READ, 0x8000, 0, 1), NBD_REQ_ERROR,
           NBD_EINVAL);

    EXPECT(chk(&aligned, NBD_CMD_READ, 0, 512, 1024), NBD_REQ_OK, 0);
    EXPECT(chk(&aligned, NBD_CMD_READ, 0, 1, 512), NBD_REQ_ERROR, NBD_EINVAL);
    EXPECT(chk(&aligned, NBD_CMD_WRITE, 0, 0, 100), NBD_REQ_ERROR,
           NBD_EINVAL);

    NbdTransmitParams big = rw_params;
    big.size = 1ull << 40;
    EXPECT(chk(&big, NBD_CMD_READ, 0, 0, NBD_MAX_PAYLOAD + 1),
           NBD_REQ_ERROR, NBD_EINVAL);
    EXPECT(chk(&big, NBD_CMD_WRITE_ZEROES, 0, 0, UINT32_MAX), NBD_REQ_OK, 0);
}

static void test_reply_encoders(void **state)
{
    uint8_t b[NBD_ERROR_CHUNK_MAX];
    char longmsg[NBD_MAX_STRING_SIZE + 100];

    assert_int_equal(nbd_encode_simple_reply(b, NBD_EIO, 0x0102030405060708),
                     16);
    assert_int_equal(nbd_get32(b), NBD_SIMPLE_REPLY_MAGIC);
    assert_int_equal(nbd_get32(b + 4), NBD_EIO);
    assert_true(nbd_get64(b + 8) == 0x0102030405060708);

    assert_int_equal(nbd_encode_offset_data(b, 0, 9, 4096, 512), 28);
    assert_int_equal(nbd_get32(b), NBD_STRUCTURED_REPLY_MAGIC);
    assert_int_equal(nbd_get16(b + 6), NBD_REPLY_TYPE_OFFSET_DATA);
    assert_int_equal(nbd_get32(b + 16), 520);
    assert_true(nbd_get64(b + 20) == 4096);

    assert_int_equal(nbd_encode_offset_hole(b, NBD_REPLY_FLAG_DONE, 9, 8, 3),
                     32);
    assert_int_equal(nbd_get16(b + 4), NBD_REPLY_FLAG_DONE);
    assert_int_equal(nbd_get32(b + 16), 12);
    assert_int_equal(nbd_get32(b + 28), 3);

    assert_int_equal(nbd_encode_block_status(b, 1, 9, 1, 3), 24);
    assert_int_equal(nbd_get32(b + 16), 28);
    assert_int_equal(nbd_get32(b + 20), 1);
    assert_int_equal(nbd_encode_extent(b, 65536, NBD_STATE_HOLE), 8);
    assert_int_equal(nbd_get32(b + 4), NBD_STATE_HOLE);

    assert_int_equal(nbd_encode_error_chunk(b, 1, 9, NBD_EINVAL, "bad"),
                     20 + 6 + 3);
    assert_int_equal(nbd_get16(b + 6), NBD_REPLY_TYPE_ERROR);
    assert_int_equal(nbd_get32(b + 16), 9);
    assert_int_equal(nbd_get16(b + 24), 3);
    memset(longmsg, 'x', sizeof(longmsg) - 1);
    longmsg[sizeof(longmsg) - 1] = 0;
    assert_int_equal(nbd_encode_error_chunk(b, 1, 9, NBD_EIO, longmsg),
                     NBD_ERROR_CHUNK_MAX);

    assert_int_equal(nbd_encode_none_chunk(b, 5), 20);
    assert_int_equal(nbd_get16(b + 4), NBD_REPLY_FLAG_DONE);

    assert_int_equal(nbd_errno_to_wire(-ENOSPC), NBD_ENOSPC);
    assert_int_equal(nbd_errno_to_wire(EDQUOT), NBD_ENOSPC);
    assert_int_equal(nbd_errno_to_wire(-EROFS), NBD_EPERM);
    assert_int_equal(nbd_errno_to_wire(-ENOTSUP), NBD_ENOTSUP);
    assert_int_equal(nbd_errno_to_wire(-EBADF), NBD_EIO);
    assert_int_equal(nbd_errno_to_wire(0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_go_full),
        cmocka_unit_test(test_go_without_block_size_advertises_min_one),
        cmocka_unit_test(test_info_unknown_then_list_then_abort),
        cmocka_unit_test(test_tls_required),
        cmocka_unit_test(test_meta_contexts),
        cmocka_unit_test(test_malformed_options),
        cmocka_unit_test(test_export_name),
        cmocka_unit_test(test_shutting_down),
        cmocka_unit_test(test_request_check),
        cmocka_unit_test(test_reply_encoders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
