/*
 * NBD fixed newstyle handshake, server side (see nbd-handshake.h).
 *
 * Every option gets exactly one final reply (ACK or an error), possibly
 * preceded by informational replies, so a well-behaved client never waits.
 * The machine only closes on what the protocol leaves no answer for: bad
 * magic, unknown client flags, NBD_OPT_EXPORT_NAME for a missing export,
 * and options from a client that did not ask for fixed newstyle.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/nbd-handshake.h"
#include "nbd/nbd-proto.h"
#include "nbd/nbd-wire.h"
#include "util/alloc.h"

/* ---- output ---- */

static void out_reserve(NbdHandshake *hs, size_t n)
{
    if (hs->out_len + n <= hs->out_cap) {
        return;
    }
    size_t cap = hs->out_cap ? hs->out_cap : 256;
    while (cap < hs->out_len + n) {
        cap *= 2;
    }
    uint8_t *p = bj_realloc(hs->out, cap);
    hs->out = p;
    hs->out_cap = cap;
}

static void out_bytes(NbdHandshake *hs, const void *data, size_t n)
{
    out_reserve(hs, n);
    if (n) {
        memcpy(hs->out + hs->out_len, data, n);
    }
    hs->out_len += n;
}

static void out_u16(NbdHandshake *hs, uint16_t v)
{
    uint8_t b[2];
    nbd_put16(b, v);
    out_bytes(hs, b, 2);
}

static void out_u32(NbdHandshake *hs, uint32_t v)
{
    uint8_t b[4];
    nbd_put32(b, v);
    out_bytes(hs, b, 4);
}

static void out_u64(NbdHandshake *hs, uint64_t v)
{
    uint8_t b[8];
    nbd_put64(b, v);
    out_bytes(hs, b, 8);
}

static void rep_header(NbdHandshake *hs, uint32_t type, uint32_t len)
{
    out_u64(hs, NBD_REP_MAGIC);
    out_u32(hs, hs->opt);
    out_u32(hs, type);
    out_u32(hs, len);
}

static void rep_ack(NbdHandshake *hs)
{
    rep_header(hs, NBD_REP_ACK, 0);
}

static void rep_error(NbdHandshake *hs, uint32_t type, const char *msg)
{
    size_t len = strnlen(msg, NBD_MAX_STRING_SIZE);
    rep_header(hs, type, len);
    out_bytes(hs, msg, len);
}

/* ---- input ---- */

static void want_bytes(NbdHandshake *hs, NbdHandshakeState state, size_t n)
{
    hs->state = state;
    hs->in_need = n;
    hs->in_have = 0;
    free(hs->in);
    hs->in = NULL;
    if (state == NBD_HS_OPT_DATA && n) {
        hs->in = bj_malloc(n);
    }
}

static void close_with(NbdHandshake *hs, const char *why)
{
    want_bytes(hs, NBD_HS_CLOSE, 0);
    hs->close_reason = why;
}

static void next_option(NbdHandshake *hs)
{
    want_bytes(hs, NBD_HS_OPT_HEADER, NBD_OPT_HEADER_SIZE);
}

void nbd_handshake_init(NbdHandshake *hs, const NbdExportLookup *lookup)
{
    memset(hs, 0, sizeof(*hs));
    hs->lookup = lookup;
    out_u64(hs, NBD_MAGIC);
    out_u64(hs, NBD_IHAVEOPT);
    out_u16(hs, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    want_bytes(hs, NBD_HS_CLIENT_FLAGS, 4);
}

/* Forgets the metadata contexts selected with NBD_OPT_SET_META_CONTEXT. */
static void meta_clear(NbdHandshake *hs)
{
    hs->meta_base_allocation = false;
    hs->meta_allocation_depth = false;
    for (unsigned i = 0; i < hs->n_meta_bitmap_names; i++) {
        free(hs->meta_bitmap_names[i]);
    }
    free(hs->meta_bitmap_names);
    hs->meta_bitmap_names = NULL;
    hs->n_meta_bitmap_names = 0;
    free(hs->meta_export);
    hs->meta_export = NULL;
}

void nbd_handshake_cleanup(NbdHandshake *hs)
{
    free(hs->in);
    free(hs->out);
    meta_clear(hs);
    free(hs->meta_bitmaps);
    hs->in = hs->out = NULL;
    hs->meta_bitmaps = NULL;
}

size_t nbd_handshake_want(const NbdHandshake *hs)
{
    switch (hs->state) {
    case NBD_HS_DONE:
    case NBD_HS_CLOSE:
        return 0;
    case NBD_HS_OPT_SKIP:
        return hs->skip_left;
    default:
        return hs->in_need - hs->in_have;
    }
}

void nbd_handshake_output_consumed(NbdHandshake *hs, size_t n)
{
    assert(n <= hs->out_len);
    memmove(hs->out, hs->out + n, hs->out_len - n);
    hs->out_len -= n;
}

uint16_t nbd_handshake_tflags(const NbdHandshake *hs)
{
    uint16_t f = hs->export.tflags | NBD_FLAG_HAS_FLAGS;
    if (hs->structured) {
        f |= NBD_FLAG_SEND_DF;
    }
    return f;
}

/* ---- a cursor over option data ---- */

typedef struct Cursor {
    const uint8_t *p;
    size_t left;
    bool bad;
} Cursor;

static uint32_t cur_u32(Cursor *c)
{
    if (c->left < 4) {
        c->bad = true;
        return 0;
    }
    uint32_t v = nbd_get32(c->p);
    c->p += 4;
    c->left -= 4;
    return v;
}

static uint16_t cur_u16(Cursor *c)
{
    if (c->left < 2) {
        c->bad = true;
        return 0;
    }
    uint16_t v = nbd_get16(c->p);
    c->p += 2;
    c->left -= 2;
    return v;
}

/* A string of len bytes as a NUL-terminated copy (caller frees); NULL and
 * c->bad if it overruns, is too long, or contains NUL. */
static char *cur_string(Cursor *c, uint32_t len)
{
    if (len > c->left || len > NBD_MAX_STRING_SIZE ||
        (len && memchr(c->p, 0, len))) {
        c->bad = true;
        return NULL;
    }
    char *s = len ? bj_strndup((const char *)c->p, len) : bj_strdup("");
    c->p += len;
    c->left -= len;
    return s;
}

/* ---- options ---- */

static void dispatch_option(NbdHandshake *hs, const uint8_t *data,
                            size_t len);

static void send_export_info(NbdHandshake *hs, const NbdExportInfo *info,
                             bool want_name,
                             bool want_block_size)
{
    uint32_t min = want_block_size || hs->opt == NBD_OPT_INFO
                   ? info->min_block : 1;
    uint32_t pref = info->pref_block > min ? info->pref_block : min;
    uint16_t tflags = info->tflags | NBD_FLAG_HAS_FLAGS;

    if (hs->structured) {
        tflags |= NBD_FLAG_SEND_DF;
    }
    if (pref < 512) {
        pref = 512;
    }

    rep_header(hs, NBD_REP_INFO, 12);
    out_u16(hs, NBD_INFO_EXPORT);
    out_u64(hs, info->size);
    out_u16(hs, tflags);

    if (want_name) {
        size_t len = strlen(info->name);
        rep_header(hs, NBD_REP_INFO, 2 + len);
        out_u16(hs, NBD_INFO_NAME);
        out_bytes(hs, info->name, len);
    }
    /* Sent unasked too, as qemu does: clients ignore what they did not
     * request, and some only show a description they were given. */
    if (info->description && info->description[0]) {
        size_t len = strlen(info->description);
        rep_header(hs, NBD_REP_INFO, 2 + len);
        out_u16(hs, NBD_INFO_DESCRIPTION);
        out_bytes(hs, info->description, len);
    }
    /* Always sent: clients that did not ask may still use it as a hint. */
    rep_header(hs, NBD_REP_INFO, 14);
    out_u16(hs, NBD_INFO_BLOCK_SIZE);
    out_u32(hs, min);
    out_u32(hs, pref);
    out_u32(hs, info->max_block);
}

/*
 * The export is chosen: the selection made for it becomes the result
 * (hs->meta_bitmaps over info's bitmaps); a selection made for another
 * export does not carry over.
 */
static void meta_bind(NbdHandshake *hs, const char *name,
                      const NbdExportInfo *info)
{
    free(hs->meta_bitmaps);
    hs->meta_bitmaps = NULL;
    if (!hs->meta_export || strcmp(hs->meta_export, name) != 0) {
        meta_clear(hs);
        return;
    }
    if (!info->allocation_depth) {
        hs->meta_allocation_depth = false;
    }
    if (hs->n_meta_bitmap_names == 0 || info->n_bitmaps == 0) {
        return;
    }
    hs->meta_bitmaps = bj_calloc(info->n_bitmaps, sizeof(bool));
    for (unsigned k = 0; k < hs->n_meta_bitmap_names; k++) {
        /* A name that repeats means its first bitmap, as at SET time. */
        for (unsigned i = 0; i < info->n_bitmaps; i++) {
            if (strcmp(info->bitmaps[i], hs->meta_bitmap_names[k]) == 0) {
                hs->meta_bitmaps[i] = true;
                break;
            }
        }
    }
}

static void opt_info_go(NbdHandshake *hs, Cursor *c)
{
    uint32_t namelen = cur_u32(c);
    char *name = cur_string(c, namelen);
    uint16_t nreq = cur_u16(c);
    bool want_name = false, want_bs = false;
    NbdExportInfo info;

    if (c->bad || c->left != (size_t)nreq * 2) {
        rep_error(hs, NBD_REP_ERR_INVALID, "malformed export info request");
        goto out;
    }
    for (unsigned i = 0; i < nreq; i++) {
        switch (cur_u16(c)) {
        case NBD_INFO_NAME:
            want_name = true;
            break;
        case NBD_INFO_DESCRIPTION:  /* sent whenever there is one */
            break;
        case NBD_INFO_BLOCK_SIZE:
            want_bs = true;
            break;
        default:
            break;  /* ignored, as the protocol asks */
        }
    }
    if (!hs->lookup->find(hs->lookup->opaque, name, &info)) {
        char msg[NBD_MAX_STRING_SIZE + 64];
        snprintf(msg, sizeof(msg), "export '%s' not present", name);
        rep_error(hs, NBD_REP_ERR_UNKNOWN, msg);
        goto out;
    }
    send_export_info(hs, &info, want_name, want_bs);
    rep_ack(hs);
    if (hs->opt == NBD_OPT_GO) {
        meta_bind(hs, name, &info);
        hs->export = info;
        hs->block_size_agreed = want_bs;
        want_bytes(hs, NBD_HS_DONE, 0);
    }
out:
    free(name);
}

static void opt_export_name(NbdHandshake *hs, Cursor *c)
{
    char *name = cur_string(c, c->left);
    NbdExportInfo info;

    if (!name) {
        close_with(hs, "malformed export name");
        return;
    }
    if (!hs->lookup->find(hs->lookup->opaque, name, &info)) {
        /* No way to report an error to NBD_OPT_EXPORT_NAME. */
        free(name);
        close_with(hs, "export not found");
        return;
    }
    meta_bind(hs, name, &info);
    free(name);
    hs->export = info;
    hs->block_size_agreed = false;
    out_u64(hs, info.size);
    out_u16(hs, nbd_handshake_tflags(hs));
    if (!hs->no_zeroes) {
        static const uint8_t zeroes[124];
        out_bytes(hs, zeroes, sizeof(zeroes));
    }
    want_bytes(hs, NBD_HS_DONE, 0);
}

static void list_one(const NbdExportInfo *info, void *opaque)
{
    NbdHandshake *hs = opaque;
    size_t nlen = strlen(info->name);
    size_t dlen = info->description ? strlen(info->description) : 0;

    rep_header(hs, NBD_REP_SERVER, 4 + nlen + dlen);
    out_u32(hs, nlen);
    out_bytes(hs, info->name, nlen);
    out_bytes(hs, info->description, dlen);
}

static void rep_meta_context(NbdHandshake *hs, uint32_t id, const char *name)
{
    size_t len = strlen(name);
    rep_header(hs, NBD_REP_META_CONTEXT, 4 + len);
    out_u32(hs, id);
    out_bytes(hs, name, len);
}

/* What a list of queries selects on one export. */
typedef struct MetaSel {
    bool base_allocation;
    bool allocation_depth;
    bool *bitmaps;             /* info->n_bitmaps entries */
} MetaSel;

static bool str_shift(const char **s, const char *prefix)
{
    size_t n = strlen(prefix);
    if (strncmp(*s, prefix, n) != 0) {
        return false;
    }
    *s += n;
    return true;
}

/*
 * One query, as qemu's server reads it: "base:allocation",
 * "qemu:allocation-depth" and "qemu:dirty-bitmap:NAME" select; the bare
 * namespaces "base:", "qemu:" and "qemu:dirty-bitmap:" list everything
 * under them but select nothing; anything else matches nothing.
 */
static void meta_query(const char *q, bool list, const NbdExportInfo *info,
                       MetaSel *sel)
{
    if (str_shift(&q, "base:")) {
        if (strcmp(q, "allocation") == 0 || (list && !*q)) {
            sel->base_allocation = true;
        }
        return;
    }
    if (!str_shift(&q, "qemu:")) {
        return;
    }
    if (!*q) {
        if (list) {
            sel->allocation_depth = info->allocation_depth;
            for (unsigned i = 0; i < info->n_bitmaps; i++) {
                sel->bitmaps[i] = true;
            }
        }
    } else if (strcmp(q, "allocation-depth") == 0) {
        sel->allocation_depth = info->allocation_depth;
    } else if (str_shift(&q, "dirty-bitmap:")) {
        for (unsigned i = 0; i < info->n_bitmaps; i++) {
            if (!*q ? list : strcmp(q, info->bitmaps[i]) == 0) {
                sel->bitmaps[i] = true;
                if (*q) {
                    break;      /* the first of a repeated name */
                }
            }
        }
    }
}

static void opt_meta_context(NbdHandshake *hs, Cursor *c)
{
    bool set = hs->opt == NBD_OPT_SET_META_CONTEXT;
    char *name = NULL;
    char **queries = NULL;
    uint32_t nqueries = 0, nread = 0;
    MetaSel sel = { 0 };
    NbdExportInfo info;

    if (set) {
        /* The old selection goes whatever happens to the new one. */
        meta_clear(hs);
    }
    if (!hs->structured) {
        rep_error(hs, NBD_REP_ERR_INVALID,
                  "structured replies were not negotiated");
        return;
    }
    name = cur_string(c, cur_u32(c));
    nqueries = cur_u32(c);
    /* Each query takes at least its 4-byte length: a count larger than
     * the data can hold is malformed, and bounds the allocation. */
    if (c->bad || nqueries > c->left / 4) {
        rep_error(hs, NBD_REP_ERR_INVALID, "malformed metadata context request");
        goto out;
    }
    queries = bj_calloc(nqueries ? nqueries : 1, sizeof(*queries));
    for (; nread < nqueries; nread++) {
        queries[nread] = cur_string(c, cur_u32(c));
        if (c->bad) {
            break;
        }
    }
    if (c->bad || c->left) {
        rep_error(hs, NBD_REP_ERR_INVALID, "malformed metadata context request");
        goto out;
    }
    if (!hs->lookup->find(hs->lookup->opaque, name, &info)) {
        char msg[NBD_MAX_STRING_SIZE + 64];
        snprintf(msg, sizeof(msg), "export '%s' not present", name);
        rep_error(hs, NBD_REP_ERR_UNKNOWN, msg);
        goto out;
    }
    sel.bitmaps = bj_calloc(info.n_bitmaps ? info.n_bitmaps : 1, sizeof(bool));
    if (nqueries == 0 && !set) {
        /* list everything */
        meta_query("base:", true, &info, &sel);
        meta_query("qemu:", true, &info, &sel);
    }
    for (uint32_t i = 0; i < nqueries; i++) {
        meta_query(queries[i], !set, &info, &sel);
    }

    /* Replies in a fixed order: base, depth, then the bitmaps. */
    if (sel.base_allocation) {
        rep_meta_context(hs, set ? NBD_META_ID_BASE_ALLOCATION : 0,
                         NBD_META_BASE_ALLOCATION);
    }
    if (sel.allocation_depth) {
        rep_meta_context(hs, set ? NBD_META_ID_ALLOCATION_DEPTH : 0,
                         NBD_META_ALLOCATION_DEPTH);
    }
    for (unsigned i = 0; i < info.n_bitmaps; i++) {
        if (!sel.bitmaps[i]) {
            continue;
        }
        char ctx[sizeof(NBD_META_DIRTY_BITMAP_PREFIX) + NBD_MAX_STRING_SIZE];
        snprintf(ctx, sizeof(ctx), "%s%s", NBD_META_DIRTY_BITMAP_PREFIX,
                 info.bitmaps[i]);
        rep_meta_context(hs, set ? NBD_META_ID_DIRTY_BITMAP + i : 0, ctx);
    }
    rep_ack(hs);
    if (set) {
        hs->meta_base_allocation = sel.base_allocation;
        hs->meta_allocation_depth = sel.allocation_depth;
        for (unsigned i = 0; i < info.n_bitmaps; i++) {
            if (sel.bitmaps[i]) {
                hs->n_meta_bitmap_names++;
            }
        }
        if (hs->n_meta_bitmap_names) {
            hs->meta_bitmap_names = bj_calloc(hs->n_meta_bitmap_names,
                                              sizeof(char *));
            unsigned k = 0;
            for (unsigned i = 0; i < info.n_bitmaps; i++) {
                if (sel.bitmaps[i]) {
                    hs->meta_bitmap_names[k] = bj_strdup(info.bitmaps[i]);
                    k++;
                }
            }
        }
        hs->meta_export = name;
        name = NULL;
    }
out:
    for (uint32_t i = 0; queries && i < nqueries; i++) {
        free(queries[i]);
    }
    free(queries);
    free(sel.bitmaps);
    free(name);
}

static void handle_option(NbdHandshake *hs)
{
    uint8_t *data = hs->in;     /* ours now: next_option() drops hs->in */

    hs->in = NULL;
    next_option(hs);            /* unless the option says otherwise */
    dispatch_option(hs, data, hs->opt_len);
    free(data);
}

static void dispatch_option(NbdHandshake *hs, const uint8_t *data, size_t len)
{
    /* An option without data has no buffer (data is NULL): the cursor
     * points at an empty one instead, as even adding 0 to NULL is
     * undefined behaviour (an empty NBD_OPT_EXPORT_NAME did that). */
    static const uint8_t no_data[1];
    Cursor c = { .p = data ? data : no_data, .left = len };

    if (!hs->fixed && hs->opt != NBD_OPT_EXPORT_NAME) {
        close_with(hs, "option from a client without fixed newstyle");
        return;
    }
    if (hs->tls_required && !hs->tls_active &&
        hs->opt != NBD_OPT_STARTTLS && hs->opt != NBD_OPT_ABORT) {
        if (hs->opt == NBD_OPT_EXPORT_NAME) {
            close_with(hs, "option before TLS negotiation");
        } else {
            rep_error(hs, NBD_REP_ERR_TLS_REQD,
                      "TLS negotiation required before option");
        }
        return;
    }
    if (hs->shutting_down && hs->opt != NBD_OPT_ABORT) {
        if (hs->opt == NBD_OPT_EXPORT_NAME) {
            close_with(hs, "server is shutting down");
        } else {
            rep_error(hs, NBD_REP_ERR_SHUTDOWN, "server is shutting down");
        }
        return;
    }

    switch (hs->opt) {
    case NBD_OPT_EXPORT_NAME:
        opt_export_name(hs, &c);
        break;
    case NBD_OPT_ABORT:
        /* Extra data is ignored, as the protocol asks. */
        rep_ack(hs);
        close_with(hs, "client aborted the handshake");
        break;
    case NBD_OPT_LIST:
        if (c.left) {
            rep_error(hs, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
            break;
        }
        hs->lookup->for_each(hs->lookup->opaque, list_one, hs);
        rep_ack(hs);
        break;
    case NBD_OPT_STARTTLS:
        if (c.left) {
            rep_error(hs, NBD_REP_ERR_INVALID,
                      "NBD_OPT_STARTTLS takes no data");
            break;
        }
        if (!hs->tls_required) {
            rep_error(hs, NBD_REP_ERR_POLICY, "TLS not configured");
        } else if (hs->tls_active) {
            rep_error(hs, NBD_REP_ERR_INVALID, "TLS already negotiated");
        } else {
            rep_ack(hs);
            hs->starttls_pending = true;
        }
        break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        opt_info_go(hs, &c);
        break;
    case NBD_OPT_STRUCTURED_REPLY:
        if (c.left) {
            rep_error(hs, NBD_REP_ERR_INVALID,
                      "NBD_OPT_STRUCTURED_REPLY takes no data");
        } else if (hs->structured) {
            rep_error(hs, NBD_REP_ERR_INVALID,
                      "structured reply already negotiated");
        } else {
            hs->structured = true;
            rep_ack(hs);
        }
        break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        opt_meta_context(hs, &c);
        break;
    default:
        rep_error(hs, NBD_REP_ERR_UNSUP, "unsupported option");
        break;
    }
}

/* A complete unit has arrived in the current state. */
static void step(NbdHandshake *hs)
{
    switch (hs->state) {
    case NBD_HS_CLIENT_FLAGS: {
        uint32_t flags = nbd_get32(hs->hdr);
        if (flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
            close_with(hs, "unknown client flags");
            return;
        }
        hs->fixed = flags & NBD_FLAG_C_FIXED_NEWSTYLE;
        hs->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
        next_option(hs);
        break;
    }
    case NBD_HS_OPT_HEADER:
        if (nbd_get64(hs->hdr) != NBD_IHAVEOPT) {
            close_with(hs, "bad option magic");
            return;
        }
        hs->opt = nbd_get32(hs->hdr + 8);
        hs->opt_len = nbd_get32(hs->hdr + 12);
        if (hs->opt_len > NBD_HS_MAX_OPT_DATA) {
            if (hs->opt == NBD_OPT_EXPORT_NAME || !hs->fixed) {
                close_with(hs, "option data too large");
                return;
            }
            hs->state = NBD_HS_OPT_SKIP;
            hs->skip_left = hs->opt_len;
            return;
        }
        want_bytes(hs, NBD_HS_OPT_DATA, hs->opt_len);
        if (hs->opt_len == 0) {
            handle_option(hs);
        }
        break;
    case NBD_HS_OPT_DATA:
        handle_option(hs);
        break;
    case NBD_HS_OPT_SKIP:
        next_option(hs);
        rep_error(hs, NBD_REP_ERR_TOO_BIG, "option data too large");
        break;
    default:
        abort();
    }
}

size_t nbd_handshake_feed(NbdHandshake *hs, const uint8_t *data, size_t len)
{
    size_t used = 0;

    /* What follows an acknowledged STARTTLS is TLS: not ours to read. */
    while (used < len && nbd_handshake_want(hs) > 0 &&
           !hs->starttls_pending) {
        size_t n = nbd_handshake_want(hs);
        if (n > len - used) {
            n = len - used;
        }
        switch (hs->state) {
        case NBD_HS_OPT_SKIP:
            hs->skip_left -= n;
            break;
        case NBD_HS_OPT_DATA:
            memcpy(hs->in + hs->in_have, data + used, n);
            hs->in_have += n;
            break;
        default:
            memcpy(hs->hdr + hs->in_have, data + used, n);
            hs->in_have += n;
            break;
        }
        used += n;
        if (nbd_handshake_want(hs) == 0) {
            step(hs);
        }
    }
    return used;
}
