/*
 * The qcow2 driver table: open (header, tables, caches, backing chain),
 * close, flush, length, query output, and the backing-name rewrite that
 * stream and commit use.  Requests live in qcow2-data.c.
 *
 * Options (blockdev-add): file, backing (node, inline, or null; absent:
 * the header's backing file, relative to the image's directory),
 * l2-cache-size, refcount-cache-size, cache-size, overlap-check
 * (qcow2-overlap.c); qemu's other qcow2 tuning options are accepted and
 * ignored.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aio/io.h"
#include "block/dirty-bitmap-named.h"
#include "block/drivers/drivers.h"
#include "block/drivers/qcow2/qcow2.h"
#include "object/secret.h"
#include "util/alloc.h"
#include "util/cleanup.h"
#include "util/log.h"

/* Deeper chains (or loops through the header's backing names) are refused
 * rather than recursing without end. */
#define QCOW2_MAX_CHAIN_DEPTH 64
#define QCOW2_DEFAULT_L2_CACHE_MAX (32u << 20)
#define QCOW2_MIN_L2_CACHE_ENTRIES 2
#define QCOW2_MIN_RB_CACHE_ENTRIES 4

static const char *const encrypt_formats[] = { "aes", "luks", NULL };
static const ArgSpec encrypt_members[] = {
    { .name = "format", .type = ARG_ENUM, .enum_values = encrypt_formats },
    { .name = "key-secret", .type = ARG_STR, .optional = true },
    { .name = NULL },
};

static const ArgSpec qcow2_options[] = {
    { .name = "file", .type = ARG_REF },
    { .name = "encrypt", .type = ARG_OBJECT, .optional = true,
      .members = encrypt_members },
    { .name = "backing", .type = ARG_REF_OR_NULL, .optional = true },
    { .name = "l2-cache-size", .type = ARG_SIZE, .optional = true },
    { .name = "l2-cache-entry-size", .type = ARG_SIZE, .optional = true },
    { .name = "refcount-cache-size", .type = ARG_SIZE, .optional = true },
    { .name = "cache-size", .type = ARG_SIZE, .optional = true },
    { .name = "cache-clean-interval", .type = ARG_INT, .optional = true },
    { .name = "lazy-refcounts", .type = ARG_BOOL, .optional = true },
    { .name = "pass-discard-request", .type = ARG_BOOL, .optional = true },
    { .name = "pass-discard-snapshot", .type = ARG_BOOL, .optional = true },
    { .name = "pass-discard-other", .type = ARG_BOOL, .optional = true },
    { .name = "overlap-check", .type = ARG_ANY, .optional = true },
    { .name = NULL },
};

/* Opens nested inside one another (backing from header names) count here;
 * opening runs in the main context only. */
static unsigned chain_depth;

static int coroutine_fn read_file(BlockNode *bs, uint64_t off, void *buf,
                                  uint64_t len);

/*
 * encrypt.format=luks: the LUKS header the crypto header extension points
 * at, unlocked with the passphrase of encrypt.key-secret, in qsd's words.
 */
static bool coroutine_fn open_crypto(BlockNode *bs, BDRVQcow2State *s,
                                     json_t *opts, Error **errp)
{
    json_t *enc = json_object_get(opts, "encrypt");
    const char *fmt = enc ? arg_str(enc, "format", NULL) : NULL;
    const char *id = enc ? arg_str(enc, "key-secret", NULL) : NULL;
    const Qcow2RawExt *ext = NULL;
    const uint8_t *pass;
    uint8_t *area;
    uint64_t off, len;
    size_t passlen;

    if (s->hdr.crypt_method == 0) {
        if (fmt) {
            error_setg(errp, "No encryption in image header, but options "
                       "specified format '%s'", fmt);
            return false;
        }
        return true;
    }
    if (fmt && strcmp(fmt, "luks") != 0) {
        error_setg(errp, "Header reported 'luks' encryption format but "
                   "options specify '%s'", fmt);
        return false;
    }
    if (!id) {
        error_setg(errp, "Parameter 'encrypt.key-secret' is required for "
                   "cipher");
        return false;
    }
    pass = secret_lookup(id, &passlen, errp);
    if (!pass) {
        return false;
    }
    for (unsigned i = 0; i < s->hdr.nb_raw_exts; i++) {
        if (s->hdr.raw_exts[i].type == QCOW2_EXT_CRYPTO) {
            ext = &s->hdr.raw_exts[i];
        }
    }
    if (!ext || ext->len < 16) {
        error_setg(errp, "Could not read encryption header");
        return false;
    }
    off = be64_get(ext->data);
    len = be64_get(ext->data + 8);
    if (len < LUKS_PHDR_SIZE || len > LUKS_MAX_AREA ||
        off > s->file_size || len > s->file_size - off) {
        error_setg(errp, "Invalid encryption header offset or length");
        return false;
    }
    area = bj_try_malloc(len);
    if (!area) {
        error_setg(errp, "Cannot allocate memory for the encryption header");
        return false;
    }
    if (read_file(bs, off, area, len) < 0) {
        error_setg(errp, "Could not read encryption header");
        free(area);
        return false;
    }
    /* Again: the read above yielded, and object-del may have run. */
    pass = secret_lookup(id, &passlen, errp);
    s->crypto = pass ? luks_co_unlock(area, len, pass, passlen, errp) : NULL;
    free(area);
    return s->crypto != NULL;
}

static int coroutine_fn read_file(BlockNode *bs, uint64_t off, void *buf,
                                  uint64_t len)
{
    IOVector v;
    iov_vec_init_buf(&v, buf, len);
    return bdrv_co_preadv(bs->file, (int64_t)off, (int64_t)len, &v, 0);
}

static bool coroutine_fn load_header(BlockNode *bs, BDRVQcow2State *s,
                                     Error **errp)
{
    uint8_t probe[512];
    uint64_t n = s->file_size < sizeof(probe) ? s->file_size : sizeof(probe);
    int ret;

    memset(probe, 0, sizeof(probe));
    ret = n ? read_file(bs, 0, probe, n) : 0;
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read qcow2 header");
        return false;
    }
    uint32_t cs = qcow2_probe_cluster_size(probe, n, errp);
    if (!cs) {
        return false;
    }
    s->cluster0 = blk_aligned_alloc(4096, cs);
    memset(s->cluster0, 0, cs);
    n = s->file_size < cs ? s->file_size : cs;
    ret = read_file(bs, 0, s->cluster0, n);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read qcow2 header");
        return false;
    }
    return qcow2_header_parse(s->cluster0, cs, s->file_size, &s->hdr, errp);
}

static bool coroutine_fn load_tables(BlockNode *bs, BDRVQcow2State *s,
                                     Error **errp)
{
    uint64_t l1_bytes = (uint64_t)s->hdr.l1_size * 8;
    uint64_t rt_bytes = (uint64_t)s->hdr.refcount_table_clusters *
                        s->g.cluster_size;
    uint8_t *buf;
    int ret;

    /* Sizes are bounded by qcow2_header_parse (32 MiB / 8 MiB). */
    s->l1_size = s->hdr.l1_size;
    s->l1 = bj_try_calloc(s->l1_size, sizeof(uint64_t));
    s->reftable_entries = rt_bytes / 8;
    s->reftable = bj_try_calloc(s->reftable_entries, sizeof(uint64_t));
    if (!s->l1 || !s->reftable) {
        error_setg(errp, "Could not allocate memory for the L1 and refcount "
                   "tables");
        return false;
    }
    buf = blk_aligned_alloc(4096, l1_bytes > rt_bytes ? l1_bytes : rt_bytes);
    if (l1_bytes) {
        ret = read_file(bs, s->hdr.l1_table_offset, buf, l1_bytes);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not read L1 table");
            free(buf);
            return false;
        }
        for (uint32_t i = 0; i < s->l1_size; i++) {
            s->l1[i] = be64_get(buf + (size_t)i * 8);
        }
    }
    ret = read_file(bs, s->hdr.refcount_table_offset, buf, rt_bytes);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read refcount table");
        free(buf);
        return false;
    }
    for (uint64_t i = 0; i < s->reftable_entries; i++) {
        s->reftable[i] = be64_get(buf + i * 8);
        if (s->reftable[i] & ~QCOW2_REFT_OFFSET_MASK) {
            error_setg(errp, "Reference count table entry %" PRIu64
                       " is invalid", i);
            free(buf);
            return false;
        }
    }
    free(buf);
    return true;
}

static bool setup_caches(BlockNode *bs, BDRVQcow2State *s, json_t *opts,
                         Error **errp)
{
    json_t *l2o = json_object_get(opts, "l2-cache-size");
    json_t *rbo = json_object_get(opts, "refcount-cache-size");
    json_t *allo = json_object_get(opts, "cache-size");
    uint64_t cs = s->g.cluster_size;
    uint64_t l2, rb;
    /* Enough L2 cache to map the whole image, capped. */
    uint64_t full = qcow2_l1_entries_for(&s->g, s->hdr.size) * cs;

    if (l2o && rbo && allo) {
        error_setg(errp, "cache-size, l2-cache-size and refcount-cache-size "
                   "may not be set at the same time");
        return false;
    }
    l2 = full < QCOW2_DEFAULT_L2_CACHE_MAX ? full : QCOW2_DEFAULT_L2_CACHE_MAX;
    rb = QCOW2_MIN_RB_CACHE_ENTRIES * cs;
    if (allo) {
        uint64_t all = (uint64_t)arg_int(opts, "cache-size", 0);
        if (l2o) {
            l2 = (uint64_t)arg_int(opts, "l2-cache-size", 0);
            rb = all > l2 ? all - l2 : 0;
        } else if (rbo) {
            rb = (uint64_t)arg_int(opts, "refcount-cache-size", 0);
            l2 = all > rb ? all - rb : 0;
        } else {
            rb = all / 4 > rb ? all / 4 : rb;
            l2 = all > rb ? all - rb : 0;
            if (l2 > full) {
                l2 = full;
            }
        }
    } else {
        if (l2o) {
            l2 = (uint64_t)arg_int(opts, "l2-cache-size", 0);
        }
        if (rbo) {
            rb = (uint64_t)arg_int(opts, "refcount-cache-size", 0);
        }
    }
    uint64_t l2n = l2 / cs, rbn = rb / cs;
    l2n = l2n < QCOW2_MIN_L2_CACHE_ENTRIES ? QCOW2_MIN_L2_CACHE_ENTRIES : l2n;
    rbn = rbn < QCOW2_MIN_RB_CACHE_ENTRIES ? QCOW2_MIN_RB_CACHE_ENTRIES : rbn;
    if (l2n > 65536 || rbn > 65536) {
        error_setg(errp, "L2 cache size too big");
        return false;
    }
    size_t align = bs->file->node->bl.min_mem_alignment;
    align = align < 4096 ? 4096 : align;
    s->l2_cache = qcow2_cache_new((unsigned)l2n, (uint32_t)cs, true, align);
    s->rb_cache = qcow2_cache_new((unsigned)rbn, (uint32_t)cs, false, align);
    return true;
}

/* Opens the backing file named in the header, as qemu does: relative
 * names are relative to the directory of this image. */
static bool coroutine_fn open_backing_from_header(BlockNode *bs,
                                                  BDRVQcow2State *s,
                                                  Error **errp)
{
    const char *name = s->hdr.backing_file;
    const char *fmt = s->hdr.backing_format;
    CLEANUP_FREE char *path = NULL;
    CLEANUP_FREE char *dir = bj_strdup(bs->file->node->filename);

    if (name[0] == '/' || strstr(name, "://")) {
        path = bj_strdup(name);
    } else {
        path = bj_asprintf("%s/%s", dirname(dir), name);
    }
    if (chain_depth >= QCOW2_MAX_CHAIN_DEPTH) {
        error_setg(errp, "Backing chain of '%s' is too deep or has a loop "
                   "(more than %d images)", bs->file->node->filename,
                   QCOW2_MAX_CHAIN_DEPTH);
        return false;
    }
    /* The header is not the user: what it may name is restricted
     * (qcow2-backing.c). */
    if (!qcow2_check_header_backing(bs->file->node->filename, path, &fmt,
                                    errp)) {
        return false;
    }
    if (!bdrv_find_driver(fmt)) {
        error_setg(errp, "Could not open backing file: Unknown driver '%s'",
                   fmt);
        return false;
    }
    /* As qemu probes the protocol: a block device is a host_device. */
    struct stat st;
    const char *proto = stat(path, &st) == 0 && S_ISBLK(st.st_mode)
                        ? "host_device" : "file";
    json_t *wrap = json_pack("{s:{s:s, s:{s:s, s:s}}}", "backing",
                             "driver", fmt, "file", "driver", proto,
                             "filename", path);
    if (!wrap) {
        abort();
    }
    chain_depth++;
    BlockChild *c = bdrv_open_child(bs, wrap, "backing", BLK_ROLE_COW, false,
                                    errp);
    chain_depth--;
    json_decref(wrap);
    if (!c) {
        error_prepend(errp, "Could not open backing file");
        return false;
    }
    return true;
}

typedef struct LockedCall {
    BDRVQcow2State *s;
    int coroutine_fn (*locked_fn)(BDRVQcow2State *s);
    int ret;
} LockedCall;

static void coroutine_fn locked_call_entry(void *opaque)
{
    LockedCall *c = opaque;

    co_mutex_lock(&c->s->lock);
    c->ret = c->locked_fn(c->s);
    co_mutex_unlock(&c->s->lock);
}

int qcow2_run_locked(BDRVQcow2State *s,
                     int coroutine_fn (*locked_fn)(BDRVQcow2State *s))
{
    LockedCall c = { .s = s, .locked_fn = locked_fn };

    /* In the node's context; the caller's loop (the main one, also for an
     * iothread node) runs until it is done. */
    aio_co_run_wait(s->bs->ctx, locked_call_entry, &c);
    return c.ret;
}

/*
 * The layer flushes before close unless cache.no-flush is set; the tables
 * must reach the file either way (no-flush only skips the fsync), or the
 * image would lose its latest allocations.
 */
static void write_back_on_close(BlockNode *bs, BDRVQcow2State *s)
{
    int ret;

    if (bs->read_only || !s->l2_cache || s->broken) {
        return;
    }
    if (!qcow2_cache_has_dirty(s->l2_cache) &&
        !qcow2_cache_has_dirty(s->rb_cache) && !s->l1_dirty &&
        !s->nb_pending) {
        return;
    }
    /* The node may live in an iothread: it runs the flush there and we
     * wait in the main loop (closing is a main-loop affair). */
    ret = qcow2_run_locked(s, qcow2_flush_metadata);
    if (ret < 0) {
        log_error("qcow2: node '%s': could not write metadata on close: %s",
                  bs->node_name, strerror(-ret));
    }
}

static void qcow2_close(BlockNode *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (!coroutine_in_coroutine()) {
        if (!bs->read_only && s->l2_cache && !s->broken) {
            /* Persistent bitmaps first: storing them allocates. */
            qcow2_run_locked(s, qcow2_store_bitmaps);
        }
        write_back_on_close(bs, s);
        if (!bs->read_only && s->l2_cache && !s->broken &&
            !qcow2_cache_has_dirty(s->rb_cache)) {
            /* The file grows in steps: it ends where the image does. */
            qcow2_run_locked(s, qcow2_trim_file);
        }
    }
    /* The layer frees the node's bitmaps next: drop their marks first. */
    bdrv_dirty_bitmap_forget_node(bs);
    qcow2_free_bitmaps(s);
    qcow2_snapshots_free(s);
    qcow2_ol_free(s);
    qcow2_cache_free(s->l2_cache);
    qcow2_cache_free(s->rb_cache);
    s->l2_cache = s->rb_cache = NULL;
    free(s->l1);
    free(s->reftable);
    free(s->pending);
    free(s->cluster0);
    s->l1 = s->reftable = NULL;
    s->pending = NULL;
    s->cluster0 = NULL;
    qcow2_header_free(&s->hdr);
    luks_cipher_free(s->crypto);
    s->crypto = NULL;
}

static int coroutine_fn qcow2_co_activate(BlockNode *bs, Error **errp);

static int coroutine_fn qcow2_co_open(BlockNode *bs, json_t *opts,
                                      Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    json_t *backing;
    int64_t len;

    s->bs = bs;
    co_mutex_init(&s->lock);
    list_init(&s->inflight);

    /* Checked before anything is opened, as qemu checks its options. */
    if (!qcow2_ol_parse_option(opts, bs->open_path, bs->open_coerce,
                               &s->ol.checks, errp)) {
        return -EINVAL;
    }

    if (!bdrv_open_child(bs, opts, "file",
                         BLK_ROLE_DATA | BLK_ROLE_METADATA | BLK_ROLE_PRIMARY,
                         false, errp)) {
        return -EINVAL;
    }
    len = bdrv_getlength(bs->file->node);
    if (len < 0) {
        error_setg_errno(errp, (int)-len, "Could not get the size of the "
                         "image file");
        return (int)len;
    }
    s->file_size = (uint64_t)len;
    if (!load_header(bs, s, errp)) {
        goto fail;
    }
    qcow2_geom_init(&s->g, s->hdr.cluster_bits, s->hdr.refcount_order);
    if (s->hdr.incompatible_features & QCOW2_INCOMPAT_EXTL2) {
        /* Writes allocate whole clusters (all subclusters allocated). */
        qcow2_geom_set_extended(&s->g);
    }

    if ((s->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT) &&
        !bs->read_only) {
        error_setg(errp, "qcow2: Image is corrupt; cannot be opened "
                   "read/write");
        goto fail;
    }
    if (!open_crypto(bs, s, opts, errp)) {
        goto fail;
    }
    if (!load_tables(bs, s, errp) || !setup_caches(bs, s, opts, errp)) {
        goto fail;
    }
    qcow2_ol_load(s);
    qcow2_snapshots_load(s);
    /* Persistent bitmaps become the node's named bitmaps (before a
     * read-write open marks them in use). */
    co_mutex_lock(&s->lock);
    int bret = qcow2_load_bitmaps(s, errp);
    co_mutex_unlock(&s->lock);
    if (bret < 0) {
        goto fail;
    }
    if (!bs->read_only && qcow2_co_activate(bs, errp) < 0) {
        goto fail;
    }

    snprintf(bs->filename, sizeof(bs->filename), "%s",
             bs->file->node->filename);
    if (s->hdr.backing_file) {
        snprintf(bs->backing_file, sizeof(bs->backing_file), "%s",
                 s->hdr.backing_file);
    }
    if (s->hdr.backing_format) {
        snprintf(bs->backing_format, sizeof(bs->backing_format), "%s",
                 s->hdr.backing_format);
    }

    backing = json_object_get(opts, "backing");
    if (backing && !json_is_null(backing)) {
        if (!bdrv_open_child(bs, opts, "backing", BLK_ROLE_COW, false,
                             errp)) {
            goto fail;
        }
    } else if (!backing && s->hdr.backing_file) {
        if (!open_backing_from_header(bs, s, errp)) {
            goto fail;
        }
    }

    return 0;

fail:
    qcow2_close(bs);
    return -EINVAL;
}

/*
 * What a writer owes the image before it changes anything, at a read-write
 * open and after a reopen read-write.
 */
static int coroutine_fn qcow2_co_activate(BlockNode *bs, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    co_mutex_lock(&s->lock);
    if (s->hdr.incompatible_features & QCOW2_INCOMPAT_DIRTY) {
        /* Refcounts may be stale (lazy refcounts, not closed cleanly):
         * recount before anything is allocated. */
        ret = qcow2_repair_refcounts(s, errp);
        if (ret < 0) {
            goto out;
        }
    }
    /* Bitmaps: marked in use while we may write (stored and cleared at
     * close).  Other autoclear features we do not maintain are cleared,
     * as a writer must before it changes the image. */
    ret = qcow2_mark_bitmaps_in_use(s, errp);
    if (ret < 0) {
        goto out;
    }
    uint64_t keep = s->hdr.autoclear_features &
                    (QCOW2_AUTOCLEAR_BITMAPS | QCOW2_AUTOCLEAR_BJ_CC);
    if (s->hdr.autoclear_features != keep) {
        s->hdr.autoclear_features = keep;
        ret = qcow2_write_header(s);
        if (ret >= 0) {
            ret = qcow2_flush_file(s);
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not update qcow2 header");
        }
    }
out:
    co_mutex_unlock(&s->lock);
    return ret;
}

/*
 * Going read-only: the persistent bitmaps are stored and the cached
 * tables must reach the file now, while the node may still write (the
 * layer flushes too, but cache.no-flush skips that).  Going read-write: a corrupt image stays read-only, as at open.
 */
static int coroutine_fn qcow2_co_reopen_prepare(BlockNode *bs, bool read_only,
                                                Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (!read_only) {
        if (s->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT) {
            error_setg(errp, "qcow2: Image is corrupt; cannot be opened "
                       "read/write");
            return -EACCES;
        }
        return 0;
    }
    if (s->broken) {
        return 0;
    }
    co_mutex_lock(&s->lock);
    /* Bitmaps stored and in_use cleared, as at close (an aborted reopen
     * arms them again before the next write). */
    ret = qcow2_store_bitmaps(s);
    if (ret >= 0) {
        ret = qcow2_flush_metadata(s);
    }
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not write qcow2 metadata");
    }
    return ret;
}

static int coroutine_fn qcow2_co_flush(BlockNode *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (bs->read_only) {
        return 0;
    }
    if (s->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT) {
        /* Marked corrupt in this session: the cached tables may hold
         * what led there, and stay out of the file. */
        return -EIO;
    }
    co_mutex_lock(&s->lock);
    ret = qcow2_flush_metadata(s);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }
    return qcow2_flush_file(s);
}

/* Grows the image (qcow2 images are not shrunk); the L1 table moves to a
 * bigger place when the new size needs more entries. */
static int coroutine_fn qcow2_co_truncate(BlockNode *bs, int64_t size,
                                          Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->g.cluster_size;
    uint64_t need;
    int ret;

    if (size < 0 || size % 512) {
        error_setg(errp, "The new size must be a multiple of 512");
        return -EINVAL;
    }
    if ((uint64_t)size < s->hdr.size) {
        error_setg(errp, "qcow2 doesn't support shrinking images yet");
        return -ENOTSUP;
    }
    need = qcow2_l1_entries_for(&s->g, (uint64_t)size);
    if (need > QCOW2_MAX_L1_BYTES / 8) {
        error_setg(errp, "The image size is too large for file format "
                   "'qcow2'");
        return -EFBIG;
    }
    co_mutex_lock(&s->lock);
    /* Everything the L1 table points at must be on disk before a copy of
     * it is. */
    ret = qcow2_flush_metadata(s);
    if (ret < 0) {
        goto out;
    }
    uint64_t old_off = s->hdr.l1_table_offset;
    uint64_t old_clusters = ((uint64_t)s->l1_size * 8 + cs - 1) / cs;
    uint64_t *new_l1 = NULL;
    if (need > s->l1_size) {
        uint64_t clusters = (need * 8 + cs - 1) / cs;
        int64_t off = qcow2_alloc_clusters(s, clusters);
        if (off < 0) {
            ret = (int)off;
            goto out;
        }
        uint8_t *buf = blk_aligned_alloc(4096, clusters * cs);
        memset(buf, 0, clusters * cs);
        for (uint32_t i = 0; i < s->l1_size; i++) {
            be64_put(buf + (size_t)i * 8, s->l1[i]);
        }
        ret = qcow2_cache_flush(s, s->rb_cache);
        if (ret >= 0) {
            ret = qcow2_write_meta(s, (uint64_t)off, buf, clusters * cs);
        }
        free(buf);
        if (ret >= 0) {
            ret = qcow2_flush_file(s);
        }
        if (ret < 0) {
            goto out;
        }
        new_l1 = bj_calloc(need, sizeof(*new_l1));
        memcpy(new_l1, s->l1, (size_t)s->l1_size * sizeof(*new_l1));
        s->hdr.l1_table_offset = (uint64_t)off;
        s->hdr.l1_size = (uint32_t)need;
    }
    uint64_t old_size = s->hdr.size;
    s->hdr.size = (uint64_t)size;
    ret = qcow2_write_header(s);
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    if (ret < 0) {
        s->hdr.size = old_size;
        s->hdr.l1_table_offset = old_off;
        s->hdr.l1_size = s->l1_size;
        free(new_l1);
        goto out;
    }
    if (new_l1) {
        free(s->l1);
        s->l1 = new_l1;
        s->l1_size = (uint32_t)need;
        if (old_clusters) {
            ret = qcow2_update_refcount(s, old_off, old_clusters * cs, -1);
        }
    }
    if (ret >= 0) {
        ret = qcow2_bitmaps_resized(s);
    }
out:
    co_mutex_unlock(&s->lock);
    if (ret < 0 && errp && !*errp) {
        error_setg_errno(errp, -ret, "Could not resize the qcow2 image");
    }
    return ret;
}

static int64_t coroutine_fn qcow2_co_getlength(BlockNode *bs)
{
    BDRVQcow2State *s = bs->opaque;
    return (int64_t)s->hdr.size;
}

static void qcow2_refresh_limits(BlockNode *bs)
{
    BDRVQcow2State *s = bs->opaque;

    /* Encrypted data goes in whole sectors. */
    bs->bl.request_alignment = s->crypto ? LUKS_SECTOR_SIZE : 1;
    bs->bl.min_mem_alignment = bs->file->node->bl.min_mem_alignment;
    bs->bl.pwrite_zeroes_alignment = s->g.cluster_size;
    bs->bl.pdiscard_alignment = s->g.cluster_size;
    bs->bl.opt_transfer = s->g.cluster_size;
}

static void qcow2_query_image(BlockNode *bs, json_t *image)
{
    BDRVQcow2State *s = bs->opaque;
    json_t *data = json_object();

    if (s->hdr.version >= 3) {
        json_object_set_new(data, "compat", json_string("1.1"));
        json_object_set_new(data, "compression-type", json_string("zlib"));
        json_object_set_new(data, "lazy-refcounts",
                            json_boolean(s->hdr.compatible_features &
                                         QCOW2_COMPAT_LAZY_REFCOUNTS));
        json_object_set_new(data, "refcount-bits",
                            json_integer(s->g.refcount_bits));
        json_object_set_new(data, "corrupt",
                            json_boolean(s->hdr.incompatible_features &
                                         QCOW2_INCOMPAT_CORRUPT));
        json_object_set_new(data, "extended-l2",
                            json_boolean(s->g.extended));
    } else {
        json_object_set_new(data, "compat", json_string("0.10"));
        json_object_set_new(data, "compression-type", json_string("zlib"));
        json_object_set_new(data, "refcount-bits",
                            json_integer(s->g.refcount_bits));
    }
    if (s->hdr.backing_file) {
        /* As qemu: relative names resolved against the image's directory */
        char *dir = bj_strdup(bs->filename), *full;
        if (s->hdr.backing_file[0] == '/' ||
            strstr(s->hdr.backing_file, "://")) {
            full = bj_strdup(s->hdr.backing_file);
        } else {
            full = bj_asprintf("%s/%s", dirname(dir), s->hdr.backing_file);
        }
        json_object_set_new(image, "full-backing-filename", json_string(full));
        free(full);
        free(dir);
    }
    qcow2_snapshots_query(s, image);
    if (s->crypto) {
        json_t *enc = luks_cipher_query(s->crypto);

        json_object_set_new(enc, "format", json_string("luks"));
        json_object_set_new(data, "encrypt", enc);
        json_object_set_new(image, "encrypted", json_true());
    }
    json_object_set_new(image, "cluster-size",
                        json_integer(s->g.cluster_size));
    json_object_set_new(image, "dirty-flag", json_false());
    json_object_set_new(image, "format-specific",
                        json_pack("{s:s, s:o}", "type", "qcow2", "data",
                                  data));
}

static int qcow2_get_info(BlockNode *bs, BlockDriverInfo *bdi)
{
    BDRVQcow2State *s = bs->opaque;

    bdi->cluster_size = s->g.cluster_size;
    return 0;
}

int coroutine_fn qcow2_co_change_backing_file(BlockNode *bs,
                                              const char *file,
                                              const char *fmt)
{
    BDRVQcow2State *s = bs->opaque;
    char *old_file = NULL, *old_fmt = NULL;
    int ret;

    if (bs->read_only) {
        return -EINVAL;
    }
    co_mutex_lock(&s->lock);
    old_file = s->hdr.backing_file ? bj_strdup(s->hdr.backing_file) : NULL;
    old_fmt = s->hdr.backing_format ? bj_strdup(s->hdr.backing_format) : NULL;
    qcow2_header_set_backing(&s->hdr, file, fmt);
    ret = qcow2_write_header(s);
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    if (ret < 0) {
        qcow2_header_set_backing(&s->hdr, old_file, old_fmt);
    } else {
        snprintf(bs->backing_file, sizeof(bs->backing_file), "%s",
                 file ? file : "");
        snprintf(bs->backing_format, sizeof(bs->backing_format), "%s",
                 fmt ? fmt : "");
    }
    co_mutex_unlock(&s->lock);
    free(old_file);
    free(old_fmt);
    return ret;
}

typedef struct ChildWriter {
    BlockChild *c;
    int64_t len;
} ChildWriter;

/* Runs in the creating coroutine: grows the file as creation writes past
 * its end (the request path refuses writes past the end of a node). */
static int coroutine_fn child_write(void *opaque, uint64_t offset,
                                    const void *buf, size_t len)
{
    ChildWriter *w = opaque;
    IOVector v;
    int ret;

    if ((int64_t)(offset + len) > w->len) {
        ret = bdrv_co_truncate(w->c, (int64_t)(offset + len), NULL);
        if (ret < 0) {
            return ret;
        }
        w->len = (int64_t)(offset + len);
    }
    iov_vec_init_buf(&v, (void *)buf, len);
    return bdrv_co_pwritev(w->c, (int64_t)offset, (int64_t)len, &v, 0);
}

int coroutine_fn qcow2_co_create(BlockChild *c, const Qcow2CreateOpts *opts,
                                 Error **errp)
{
    ChildWriter w = { .c = c };
    int ret;

    /* Start from an empty file: creation assumes zeros past what it
     * writes. */
    ret = bdrv_co_truncate(c, 0, errp);
    if (ret < 0) {
        return ret;
    }
    if (!qcow2_create_image(opts, child_write, &w, errp)) {
        return -EIO;
    }
    ret = bdrv_co_flush(c->node);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not flush the new image");
    }
    return ret;
}

/* The magic and a version this driver reads. */
static int qcow2_probe(const uint8_t *buf, size_t len)
{
    if (len < 8) {
        return 0;
    }
    uint32_t magic = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
                     (uint32_t)buf[2] << 8 | buf[3];
    uint32_t version = (uint32_t)buf[4] << 24 | (uint32_t)buf[5] << 16 |
                       (uint32_t)buf[6] << 8 | buf[7];
    return magic == QCOW2_MAGIC && version >= 2 ? 100 : 0;
}

/*
 * x-blockdev-amend: qemu 7.2's qcow2 branch has only "encrypt" (LUKS
 * keyslot changes, QCryptoBlockAmendOptions).  Encrypted images are not
 * opened here, so an amend with "encrypt" fails in the job as qsd's does
 * on an unencrypted image, and one without it changes nothing.
 */
static const char *const amend_crypt_formats[] = { "qcow", "luks", NULL };
static const char *const amend_luks_states[] = { "active", "inactive", NULL };

static const ArgSpec qcow2_amend_members[] = {
    { .name = "driver", .type = ARG_STR },
    { .name = "encrypt", .type = ARG_OBJECT, .optional = true, .open = true,
      .members = (const ArgSpec[]) {
          { .name = "format", .type = ARG_ENUM,
            .enum_values = amend_crypt_formats },
          { .name = NULL } } },
    { .name = NULL },
};

static const ArgSpec qcow2_amend_luks[] = {
    { .name = "format", .type = ARG_ENUM, .enum_values = amend_crypt_formats },
    { .name = "state", .type = ARG_ENUM, .enum_values = amend_luks_states },
    { .name = "new-secret", .type = ARG_STR, .optional = true },
    { .name = "old-secret", .type = ARG_STR, .optional = true },
    { .name = "keyslot", .type = ARG_INT, .optional = true },
    { .name = "iter-time", .type = ARG_INT, .optional = true },
    { .name = "secret", .type = ARG_STR, .optional = true },
    { .name = NULL },
};

static const ArgSpec qcow2_amend_qcow[] = {
    { .name = "format", .type = ARG_ENUM, .enum_values = amend_crypt_formats },
    { .name = NULL },
};

static bool qcow2_amend_check(json_t *opts, Error **errp)
{
    json_t *enc;

    if (!argspec_check(opts, qcow2_amend_members, "options", false, errp)) {
        return false;
    }
    enc = json_object_get(opts, "encrypt");
    if (!enc) {
        return true;
    }
    return argspec_check(enc, !strcmp(arg_str(enc, "format", ""), "luks")
                              ? qcow2_amend_luks : qcow2_amend_qcow,
                         "options.encrypt", false, errp);
}

static int coroutine_fn qcow2_co_amend(BlockNode *bs, json_t *opts,
                                       bool force, Error **errp)
{
    if (json_object_get(opts, "encrypt")) {
        error_setg(errp, "image is not encrypted, can't amend");
        return -EINVAL;
    }
    return 0;
}

const BlockDriver bdrv_qcow2 = {
    .name = "qcow2",
    .state_size = sizeof(BDRVQcow2State),
    .options = qcow2_options,
    .supports_backing = true,
    .probe = qcow2_probe,
    .co_open = qcow2_co_open,
    .close = qcow2_close,
    .co_preadv = qcow2_co_preadv,
    .co_pwritev = qcow2_co_pwritev,
    .co_pwrite_zeroes = qcow2_co_pwrite_zeroes,
    .co_pdiscard = qcow2_co_pdiscard,
    .co_flush = qcow2_co_flush,
    .co_block_status = qcow2_co_block_status,
    .co_truncate = qcow2_co_truncate,
    .co_getlength = qcow2_co_getlength,
    .refresh_limits = qcow2_refresh_limits,
    .co_reopen_prepare = qcow2_co_reopen_prepare,
    .co_reopen_activate = qcow2_co_activate,
    .query_image = qcow2_query_image,
    .get_info = qcow2_get_info,
    .co_change_backing_file = qcow2_co_change_backing_file,
    .can_store_new_dirty_bitmap = qcow2_can_store_new_dirty_bitmap,
    .dirty_bitmaps_store_sync = qcow2_dirty_bitmaps_store_sync,
    .dirty_bitmaps_resync_later = qcow2_dirty_bitmaps_resync_later,
    .create_check = qcow2_create_check,
    .co_create = qcow2_co_blockdev_create,
    .amend_check = qcow2_amend_check,
    .co_amend = qcow2_co_amend,
    .co_snapshot_create = qcow2_co_snapshot_create,
    .co_snapshot_delete = qcow2_co_snapshot_delete,
    .snapshot_list = qcow2_snapshot_list,
};
