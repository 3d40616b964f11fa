/*
 * What the driver does when it finds the image's metadata inconsistent in
 * a way that writing on would make worse (a table pointing a write at
 * metadata, an unaligned table or cluster offset): as qemu does, it says
 * so once on stderr and in a BLOCK_IMAGE_CORRUPTED event and, when the
 * node may write, marks the image corrupt (incompatible bit 1, so that
 * nothing opens it read-write until `qemu-img check -r` repaired it) and
 * refuses every further write of this session.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "block/drivers/qcow2/qcow2.h"
#include "util/alloc.h"
#include "util/event.h"
#include "util/log.h"

/* The event leaves from the main loop (events are main-loop only; the
 * node may live in an iothread). */
static void emit_bh(void *opaque)
{
    event_emit("BLOCK_IMAGE_CORRUPTED", opaque);
}

/* Sets the corrupt bit on disk: only the 8-byte field (the first after
 * the version 2 header), not a rewrite of the whole header of an image
 * known to be damaged. */
static int coroutine_fn write_corrupt_bit(BDRVQcow2State *s)
{
    uint8_t field[8];
    IOVector v;
    int ret;

    s->hdr.incompatible_features |= QCOW2_INCOMPAT_CORRUPT;
    if (s->hdr.version < 3) {
        return 0;   /* version 2 has no feature bits: nothing to set */
    }
    be64_put(field, s->hdr.incompatible_features);
    iov_vec_init_buf(&v, field, sizeof(field));
    ret = bdrv_co_pwritev(s->bs->file, QCOW2_V2_HEADER_LEN,
                          sizeof(field), &v, 0);
    if (ret >= 0) {
        ret = bdrv_co_flush(s->bs->file->node);
    }
    return ret;
}

void coroutine_fn qcow2_signal_corruption(BDRVQcow2State *s, bool fatal,
                                          int64_t offset, int64_t size,
                                          const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;

    /* A node that cannot write cannot make things worse: say so, but
     * leave the image alone. */
    fatal = fatal && !s->bs->read_only;
    if (s->corruption_signaled &&
        (!fatal || (s->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT))) {
        return;
    }
    va_start(ap, fmt);
    msg = bj_vasprintf(fmt, ap);
    va_end(ap);

    /* qemu's words on stderr, whatever the log level. */
    if (fatal) {
        fprintf(stderr, "qcow2: Marking image as corrupt: %s; further "
                "corruption events will be suppressed\n", msg);
    } else {
        fprintf(stderr, "qcow2: Image is corrupt: %s; further non-fatal "
                "corruption events will be suppressed\n", msg);
    }
    json_t *data = json_pack("{s:s, s:s, s:s}", "device", "",
                             "node-name", s->bs->node_name, "msg", msg);
    if (!data) {
        abort();
    }
    if (offset >= 0) {
        json_object_set_new(data, "offset", json_integer(offset));
    }
    if (size >= 0) {
        json_object_set_new(data, "size", json_integer(size));
    }
    json_object_set_new(data, "fatal", json_boolean(fatal));
    /* Ownership of data moves to the bottom half. */
    aio_bh_schedule_oneshot(aio_main_context(), emit_bh, data);
    free(msg);

    s->corruption_signaled = true;
    if (fatal) {
        /* Refuse writes first: the bit's own write may yield. */
        s->broken = true;
        int ret = write_corrupt_bit(s);
        if (ret < 0) {
            log_error("qcow2: node '%s': could not mark the image corrupt: "
                      "%s", s->bs->node_name, strerror(-ret));
        }
    }
}
