/*
 * The server side of the NBD fixed newstyle handshake as a state machine
 * over bytes: no sockets, no coroutines, so it is unit-tested and fuzzed
 * alone.  The connection code asks how many bytes the machine wants, reads
 * exactly that many (never more: transmission data may follow the last
 * option at once), feeds them, and sends whatever output was queued.
 *
 *   GREETING queued by init
 *     -> CLIENT_FLAGS (4 bytes)
 *     -> OPT_HEADER (16) -> OPT_DATA (len) or OPT_SKIP (oversized) -> ...
 *     -> DONE (transmission: export chosen) or CLOSE (abort / violation)
 */
#ifndef BJ_NBD_NBD_HANDSHAKE_H
#define BJ_NBD_NBD_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the handshake needs to know about an export. */
typedef struct NbdExportInfo {
    const char *name;
    const char *description;   /* NULL or "" for none */
    uint64_t size;
    /* Transmission flags apart from NBD_FLAG_SEND_DF (added when structured
     * replies were negotiated). */
    uint16_t tflags;
    uint32_t min_block;        /* request alignment, power of two */
    uint32_t pref_block;
    uint32_t max_block;
    /* Metadata contexts beyond base:allocation: qemu:allocation-depth, and
     * qemu:dirty-bitmap:NAME for each of the n_bitmaps names, in order
     * (a name may repeat, as qemu allows). */
    bool allocation_depth;
    const char *const *bitmaps;
    unsigned n_bitmaps;
    void *handle;              /* the export, opaque here */
} NbdExportInfo;

typedef void NbdExportInfoFn(const NbdExportInfo *info, void *opaque);

typedef struct NbdExportLookup {
    /* Fills *info for the export called name; false if there is none. */
    bool (*find)(void *opaque, const char *name, NbdExportInfo *info);
    /* Calls fn for every export (NBD_OPT_LIST). */
    void (*for_each)(void *opaque, NbdExportInfoFn *fn, void *fn_opaque);
    void *opaque;
} NbdExportLookup;

typedef enum NbdHandshakeState {
    NBD_HS_CLIENT_FLAGS,
    NBD_HS_OPT_HEADER,
    NBD_HS_OPT_DATA,
    NBD_HS_OPT_SKIP,
    NBD_HS_DONE,
    NBD_HS_CLOSE,
} NbdHandshakeState;

/* Option data larger than this is skipped and answered NBD_REP_ERR_TOO_BIG:
 * the largest well-formed option (a name and a few queries) is far smaller. */
#define NBD_HS_MAX_OPT_DATA (64 * 1024)

typedef struct NbdHandshake {
    NbdHandshakeState state;
    const NbdExportLookup *lookup;
    bool shutting_down;        /* answer options with ERR_SHUTDOWN */
    /* TLS: while tls_required and not tls_active, every option but
     * STARTTLS and ABORT is refused with ERR_TLS_REQD (EXPORT_NAME closes).
     * STARTTLS is acknowledged and sets starttls_pending: the caller sends
     * the ACK, runs the TLS handshake, then sets tls_active and clears
     * starttls_pending. */
    bool tls_required;
    bool tls_active;
    bool starttls_pending;

    /* negotiated */
    bool fixed;
    bool no_zeroes;
    bool structured;
    bool meta_base_allocation;
    bool meta_allocation_depth;
    /* Bitmap names selected (the part after "qemu:dirty-bitmap:"), mapped
     * onto the chosen export's bitmaps by name at NBD_OPT_GO, so that an
     * export re-created between SET and GO cannot be misread. */
    char **meta_bitmap_names;
    unsigned n_meta_bitmap_names;
    char *meta_export;         /* export the contexts were selected for */

    /* the option being read */
    uint32_t opt;
    uint32_t opt_len;
    uint32_t skip_left;
    uint8_t *in;               /* in_need bytes wanted, in_have read */
    size_t in_need;
    size_t in_have;
    uint8_t hdr[16];           /* small units (flags, option header) */

    /* bytes to send */
    uint8_t *out;
    size_t out_len;
    size_t out_cap;

    /* result, valid in DONE */
    NbdExportInfo export;
    bool block_size_agreed;    /* client asked for NBD_INFO_BLOCK_SIZE in GO */
    /* Which of export.bitmaps were selected (export.n_bitmaps entries, NULL
     * when none is); the caller may take it (and then sets it NULL). */
    bool *meta_bitmaps;
    /* why the machine reached CLOSE (static string) */
    const char *close_reason;
} NbdHandshake;

/* Starts a handshake and queues the server greeting. */
void nbd_handshake_init(NbdHandshake *hs, const NbdExportLookup *lookup);
void nbd_handshake_cleanup(NbdHandshake *hs);

/* Bytes wanted before the machine can move on; 0 in DONE and CLOSE. */
size_t nbd_handshake_want(const NbdHandshake *hs);
/* Consumes up to len bytes, stopping at DONE or CLOSE (what follows
 * belongs to the transmission phase) and after an acknowledged STARTTLS
 * (what follows is TLS); returns how many. */
size_t nbd_handshake_feed(NbdHandshake *hs, const uint8_t *data, size_t len);
/* Drops n bytes from the front of the output (after sending them). */
void nbd_handshake_output_consumed(NbdHandshake *hs, size_t n);

/* The transmission flags the client was told, for the chosen export. */
uint16_t nbd_handshake_tflags(const NbdHandshake *hs);

#endif
