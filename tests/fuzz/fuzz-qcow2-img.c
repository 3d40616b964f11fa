/*
 * The image plumbing of the qcow2 fuzz targets (see fuzz-qcow2-img.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "fuzz-main-loop.h"
#include "fuzz-qcow2-img.h"
#include "util/log.h"

/* Requests larger than this are cut: the virtual size may be anything. */
#define FUZZ_MAX_REQ (64 * 1024)

static void init_once(void)
{
    if (fuzz_main_loop_init_once()) {
        /* Warnings about hostile images are expected by the thousand. */
        log_set_level(LOG_LEVEL_ERROR);
    }
}

void fuzz_img_create(FuzzImg *img, const uint8_t *data, size_t size)
{
    init_once();
    *img = (FuzzImg){ .fd = memfd_create("fuzz-qcow2", MFD_CLOEXEC) };
    if (img->fd < 0 ||
        (size && pwrite(img->fd, data, size, 0) != (ssize_t)size)) {
        perror("memfd");
        abort();
    }
}

static char *get_parent_desc(BlockChild *c)
{
    return strdup("fuzz");
}

static const BlockChildClass fuzz_class = {
    .parent_is_node = false,
    .get_parent_desc = get_parent_desc,
};

bool fuzz_img_open(FuzzImg *img, bool read_only, const char *extra_json)
{
    char *js = NULL;
    Error *err = NULL;

    if (asprintf(&js, "{\"driver\": \"qcow2\", \"node-name\": \"fuzz\", "
                 "\"read-only\": %s, \"backing\": null, "
                 "\"discard\": \"unmap\", \"file\": {\"driver\": \"file\", "
                 "\"locking\": \"off\", \"filename\": \"/proc/self/fd/%d\"}"
                 "%s%s}", read_only ? "true" : "false", img->fd,
                 extra_json ? ", " : "", extra_json ? extra_json : "") < 0) {
        abort();
    }
    json_t *opts = json_loads(js, 0, NULL);
    free(js);
    if (!opts) {
        abort();        /* the harness's own JSON */
    }
    img->bs = bdrv_open_blockdev(opts, false, &err);
    json_decref(opts);
    if (!img->bs) {
        if (!err || !error_get_pretty(err)[0]) {
            abort();    /* a refusal says why */
        }
        error_free(err);
        return false;
    }
    img->root = bdrv_root_attach_child(
        img->bs, "root", &fuzz_class, NULL,
        BLK_PERM_CONSISTENT_READ | (read_only ? 0 : BLK_PERM_WRITE),
        BLK_PERM_ALL, &err);
    if (!img->root) {
        fprintf(stderr, "attach: %s\n", error_get_pretty(err));
        abort();
    }
    img->size = bdrv_getlength(img->bs);
    return true;
}

void fuzz_img_close(FuzzImg *img)
{
    Error *err = NULL;

    if (!img->bs) {
        return;
    }
    bdrv_flush(img->bs);        /* may fail on a broken image: fine */
    bdrv_detach_child(img->root);
    if (!bdrv_del_blockdev("fuzz", &err)) {
        fprintf(stderr, "blockdev-del: %s\n", error_get_pretty(err));
        abort();
    }
    img->bs = NULL;
    img->root = NULL;
}

void fuzz_img_destroy(FuzzImg *img)
{
    fuzz_img_close(img);
    close(img->fd);
    img->fd = -1;
}

/* Clamps [offset, offset+bytes) to the image and to FUZZ_MAX_REQ; false
 * if nothing is left. */
static bool clamp(FuzzImg *img, int64_t *offset, int64_t *bytes)
{
    if (img->size <= 0 || *offset < 0 || *offset >= img->size) {
        return false;
    }
    if (*bytes > img->size - *offset) {
        *bytes = img->size - *offset;
    }
    if (*bytes > FUZZ_MAX_REQ) {
        *bytes = FUZZ_MAX_REQ;
    }
    return *bytes > 0;
}

int fuzz_img_read(FuzzImg *img, int64_t offset, int64_t bytes)
{
    static uint8_t buf[FUZZ_MAX_REQ];

    if (!clamp(img, &offset, &bytes)) {
        return 0;
    }
    return bdrv_pread(img->root, offset, bytes, buf, 0);
}

int fuzz_img_write(FuzzImg *img, int64_t offset, int64_t bytes, uint8_t fill)
{
    static uint8_t buf[FUZZ_MAX_REQ];

    if (!clamp(img, &offset, &bytes)) {
        return 0;
    }
    memset(buf, fill, (size_t)bytes);
    return bdrv_pwrite(img->root, offset, bytes, buf, 0);
}

/* Requests without a synchronous wrapper run in a coroutine while the
 * main loop waits, as the unit tests do. */
typedef struct Req {
    FuzzImg *img;
    enum { REQ_ZEROES, REQ_DISCARD, REQ_STATUS } op;
    int64_t offset, bytes;
    unsigned flags;
    int64_t pnum, map;
    int ret;
    bool done;
} Req;

static void coroutine_fn req_entry(void *opaque)
{
    Req *r = opaque;
    BlockNode *file = NULL;

    switch (r->op) {
    case REQ_ZEROES:
        r->ret = bdrv_co_pwrite_zeroes(r->img->root, r->offset, r->bytes,
                                       r->flags);
        break;
    case REQ_DISCARD:
        r->ret = bdrv_co_pdiscard(r->img->root, r->offset, r->bytes);
        break;
    case REQ_STATUS:
        r->ret = bdrv_co_block_status(r->img->bs, r->offset, r->bytes,
                                      &r->pnum, &r->map, &file);
        break;
    }
    r->done = true;
    aio_wait_kick();
}

static int run_req(Req *r)
{
    AioContext *ctx = aio_main_context();

    aio_co_enter(ctx, coroutine_create(req_entry, r));
    AIO_WAIT_WHILE(ctx, !r->done);
    return r->ret;
}

int fuzz_img_zeroes(FuzzImg *img, int64_t offset, int64_t bytes, bool unmap)
{
    if (!clamp(img, &offset, &bytes)) {
        return 0;
    }
    Req r = { .img = img, .op = REQ_ZEROES, .offset = offset,
              .bytes = bytes, .flags = unmap ? BLK_REQ_MAY_UNMAP : 0,
              .pnum = 0, .map = 0, .ret = 0, .done = false };
    return run_req(&r);
}

int fuzz_img_discard(FuzzImg *img, int64_t offset, int64_t bytes)
{
    if (!clamp(img, &offset, &bytes)) {
        return 0;
    }
    Req r = { .img = img, .op = REQ_DISCARD, .offset = offset,
              .bytes = bytes, .flags = 0, .pnum = 0, .map = 0, .ret = 0,
              .done = false };
    return run_req(&r);
}

void fuzz_img_map(FuzzImg *img, int max_steps)
{
    int64_t offset = 0;

    for (int i = 0; i < max_steps && offset < img->size; i++) {
        Req r = { .img = img, .op = REQ_STATUS, .offset = offset,
                  .bytes = img->size - offset, .flags = 0, .pnum = 0,
                  .map = 0, .ret = 0, .done = false };
        int ret = run_req(&r);
        if (ret < 0) {
            return;
        }
        /* progress and no overrun, whatever the tables say */
        if (r.pnum <= 0 || r.pnum > img->size - offset) {
            fprintf(stderr, "block status at %lld: pnum %lld\n",
                    (long long)offset, (long long)r.pnum);
            abort();
        }
        offset += r.pnum;
    }
}
