/*
 * Internal snapshots: the snapshot table (qcow2 specification, "Snapshots")
 * read at open, and snapshots taken and deleted.
 *
 * A snapshot is a copy of the active L1 table whose tree counts one more
 * reference on every L2 table and data cluster it reaches; the active tree
 * then lacks COPIED wherever a refcount is above one, so writes copy.
 *
 * Order on disk (a crash at any point leaves at worst leaked clusters):
 *   create: L1 copy written (new clusters)
 *           -> refcounts + 1, flush, active L2/L1 entries without COPIED
 *           -> new table (new clusters), flush
 *           -> header (nb_snapshots + snapshots_offset in one write), flush
 *           -> old table's clusters freed
 *   delete: new table without the entry, flush, header, flush
 *           -> refcounts - 1 over the snapshot's tree, its L1 and the old
 *              table; COPIED set again on active entries whose count is 1
 * Between the refcount change and the COPIED change of an active entry a
 * kill leaves the two disagreeing (as qemu, whose check reports it as an
 * OFLAG_COPIED error; `qemu-img check -r all` mends it): the window is one
 * metadata write-back, refcount blocks first.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/drivers/qcow2/qcow2.h"
#include "util/alloc.h"
#include "util/log.h"

/* Bytes of an entry before its extra data, id and name. */
#define SN_FIXED 40
/* What qemu writes as extra data: vm_state_size_large, disk_size, icount. */
#define SN_EXTRA 24
/* The most extra data qemu reads in an entry. */
#define SN_MAX_EXTRA 1024

static uint64_t padded(uint32_t len)
{
    return ((uint64_t)len + 7) & ~7ull;
}

static uint64_t table_bytes(const Qcow2Snapshot *sn, uint32_t n)
{
    uint64_t size = 0;

    for (uint32_t i = 0; i < n; i++) {
        size += padded(sn[i].raw_len);
    }
    return size;
}

/* Fills sn's fields from its raw entry (raw_len already checked). */
static void parse_entry(Qcow2Snapshot *sn)
{
    const uint8_t *h = sn->raw;
    uint32_t extra = be32_get(h + 36);
    uint16_t id_len = be16_get(h + 12), name_len = be16_get(h + 14);
    const char *id = (const char *)h + SN_FIXED + extra;

    sn->l1_offset = be64_get(h);
    sn->l1_size = be32_get(h + 8);
    memset(&sn->info, 0, sizeof(sn->info));
    snprintf(sn->info.id, sizeof(sn->info.id), "%.*s", (int)id_len, id);
    snprintf(sn->info.name, sizeof(sn->info.name), "%.*s", (int)name_len,
             id + id_len);
    sn->info.date_sec = be32_get(h + 16);
    sn->info.date_nsec = be32_get(h + 20);
    sn->info.vm_clock_nsec = be64_get(h + 24);
    sn->info.vm_state_size = be32_get(h + 32);
    sn->info.icount = -1;
    if (extra >= 8) {
        sn->info.vm_state_size = be64_get(h + SN_FIXED);
    }
    if (extra >= 24) {
        sn->info.icount = (int64_t)be64_get(h + SN_FIXED + 16);
    }
}

void coroutine_fn qcow2_snapshots_load(BDRVQcow2State *s)
{
    uint32_t n = s->hdr.nb_snapshots;
    uint64_t off = s->hdr.snapshots_offset;
    const char *why = NULL;

    s->snaps = bj_calloc(n ? n : 1, sizeof(*s->snaps));
    s->nb_snaps = 0;
    for (uint32_t i = 0; i < n && !why; i++) {
        uint8_t h[SN_FIXED];
        Qcow2Snapshot *sn = &s->snaps[i];

        if (qcow2_read_meta(s, off, h, sizeof(h)) < 0) {
            why = "cannot be read";
            break;
        }
        uint32_t extra = be32_get(h + 36);
        uint32_t len = SN_FIXED + extra + be16_get(h + 12) + be16_get(h + 14);
        if (extra > SN_MAX_EXTRA) {
            why = "has too much extra data";
            break;
        }
        if ((be64_get(h) & (s->g.cluster_size - 1)) ||
            (uint64_t)be32_get(h + 8) * 8 > QCOW2_MAX_L1_BYTES) {
            why = "has an invalid L1 table";
            break;
        }
        sn->raw = bj_malloc(len);
        sn->raw_len = len;
        if (qcow2_read_meta(s, off, sn->raw, len) < 0) {
            free(sn->raw);
            sn->raw = NULL;
            why = "cannot be read";
            break;
        }
        parse_entry(sn);
        s->nb_snaps++;
        off += padded(len);
    }
    if (why) {
        log_warn("qcow2: node '%s': snapshot table entry %" PRIu32 " %s: "
                 "snapshots cannot be taken or deleted", s->bs->node_name,
                 s->nb_snaps, why);
        s->snaps_bad = true;
    }
}

void qcow2_snapshots_free(BDRVQcow2State *s)
{
    for (uint32_t i = 0; i < s->nb_snaps; i++) {
        free(s->snaps[i].raw);
    }
    free(s->snaps);
    s->snaps = NULL;
    s->nb_snaps = 0;
}

void qcow2_snapshots_query(BDRVQcow2State *s, json_t *image)
{
    json_t *list;

    if (!s->nb_snaps) {
        return;
    }
    list = json_array();
    for (uint32_t i = 0; i < s->nb_snaps; i++) {
        const BdrvSnapshotInfo *in = &s->snaps[i].info;
        json_t *o = json_pack(
            "{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "id", in->id, "name",
            in->name, "vm-state-size", (json_int_t)in->vm_state_size,
            "date-sec", (json_int_t)in->date_sec, "date-nsec",
            (json_int_t)in->date_nsec, "vm-clock-sec",
            (json_int_t)(in->vm_clock_nsec / 1000000000ull), "vm-clock-nsec",
            (json_int_t)(in->vm_clock_nsec % 1000000000ull));
        if (in->icount != -1) {
            json_object_set_new(o, "icount", json_integer(in->icount));
        }
        json_array_append_new(list, o);
    }
    json_object_set_new(image, "snapshots", list);
}

int qcow2_snapshot_list(BlockNode *bs, BdrvSnapshotInfo **list)
{
    BDRVQcow2State *s = bs->opaque;

    *list = bj_calloc(s->nb_snaps ? s->nb_snaps : 1, sizeof(**list));
    for (uint32_t i = 0; i < s->nb_snaps; i++) {
        (*list)[i] = s->snaps[i].info;
    }
    return (int)s->nb_snaps;
}

/*
 * Writes the table sn[0..n) to new clusters, makes it durable with their
 * refcounts, switches the header to it, and frees the old table's
 * clusters (in the refcount cache).  On failure the header is unchanged.
 * Caller holds s->lock.
 */
static int coroutine_fn write_table(BDRVQcow2State *s,
                                    const Qcow2Snapshot *sn, uint32_t n)
{
    const uint64_t cs = s->g.cluster_size;
    uint64_t size = table_bytes(sn, n), clusters = (size + cs - 1) / cs;
    uint64_t old_off = s->hdr.snapshots_offset;
    uint32_t old_n = s->hdr.nb_snapshots;
    uint64_t old_size = table_bytes(s->snaps, s->nb_snaps);
    int64_t off = 0;
    int ret;

    if (n) {
        uint8_t *buf = bj_try_calloc(1, size), *p;
        if (!buf) {
            return -ENOMEM;
        }
        p = buf;
        for (uint32_t i = 0; i < n; i++) {
            memcpy(p, sn[i].raw, sn[i].raw_len);
            p += padded(sn[i].raw_len);
        }
        off = qcow2_alloc_clusters(s, clusters);
        if (off < 0) {
            free(buf);
            return (int)off;
        }
        ret = qcow2_write_meta(s, (uint64_t)off, buf, size);
        free(buf);
        /* Its refcounts reach the disk before the header names it. */
        if (ret >= 0) {
            ret = qcow2_write_back(s);
        }
        if (ret >= 0) {
            ret = qcow2_flush_file(s);
        }
        if (ret < 0) {
            qcow2_update_refcount(s, (uint64_t)off, clusters * cs, -1);
            return ret;
        }
    }
    s->hdr.nb_snapshots = n;
    s->hdr.snapshots_offset = (uint64_t)off;
    ret = qcow2_write_header(s);
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    if (ret < 0) {
        /* Unknown whether the header made it: leak rather than free. */
        s->hdr.nb_snapshots = old_n;
        s->hdr.snapshots_offset = old_off;
        return ret;
    }
    if (old_n && old_size && !s->snaps_bad) {
        ret = qcow2_update_refcount(s, old_off, old_size, -1);
        if (ret < 0) {
            log_warn("qcow2: node '%s': could not free the old snapshot "
                     "table: %s", s->bs->node_name, strerror(-ret));
        }
    }
    return 0;
}

/* Non-compressed L2 entries that hold a host cluster: the ones COPIED is
 * about (word 0 of an extended entry). */
static uint64_t copied_cluster(uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        return 0;
    }
    return entry & QCOW2_L2E_OFFSET_MASK;
}

/*
 * One more reference on every L2 table and data cluster the active L1
 * table reaches, and COPIED cleared on the active entries (all of them
 * are shared now).  Caller holds s->lock.
 */
static int coroutine_fn add_tree_refs(BDRVQcow2State *s)
{
    const uint64_t cs = s->g.cluster_size;
    const unsigned es = s->g.extended ? 2 : 1;
    int ret;

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2off = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
        Qcow2CacheEntry *e;
        if (!l2off) {
            continue;
        }
        ret = qcow2_update_refcount(s, l2off, cs, 1);
        if (ret < 0) {
            return ret;
        }
        ret = qcow2_cache_get(s, s->l2_cache, l2off, false, &e);
        if (ret < 0) {
            return ret;
        }
        bool changed = false;
        for (uint32_t j = 0; j < s->g.l2_size; j++) {
            uint8_t *p = e->table + (uint64_t)j * es * 8;
            uint64_t entry = be64_get(p), off, bytes;
            qcow2_entry_ref(s, entry, &off, &bytes);
            if (bytes) {
                ret = qcow2_update_refcount(s, off, bytes, 1);
                if (ret < 0) {
                    break;
                }
            }
            if (entry & QCOW2_OFLAG_COPIED) {
                be64_put(p, entry & ~QCOW2_OFLAG_COPIED);
                changed = true;
            }
        }
        if (changed) {
            qcow2_cache_mark_dirty(s->l2_cache, e);
        }
        qcow2_cache_put(e);
        if (ret < 0) {
            return ret;
        }
        s->l1[i] &= ~QCOW2_OFLAG_COPIED;
        s->l1_dirty = true;
    }
    return 0;
}

/* One reference less on every L2 table and data cluster of a snapshot's
 * L1 table l1 (host byte order). */
static int coroutine_fn drop_tree_refs(BDRVQcow2State *s, const uint64_t *l1,
                                       uint32_t l1_size)
{
    const uint64_t cs = s->g.cluster_size;
    const unsigned es = s->g.extended ? 2 : 1;
    int ret = 0;

    for (uint32_t i = 0; i < l1_size && ret >= 0; i++) {
        uint64_t l2off = l1[i] & QCOW2_L1E_OFFSET_MASK;
        Qcow2CacheEntry *e;
        if (!l2off) {
            continue;
        }
        ret = qcow2_cache_get(s, s->l2_cache, l2off, false, &e);
        if (ret < 0) {
            break;
        }
        for (uint32_t j = 0; j < s->g.l2_size && ret >= 0; j++) {
            uint64_t entry = be64_get(e->table + (uint64_t)j * es * 8);
            uint64_t off, bytes;
            qcow2_entry_ref(s, entry, &off, &bytes);
            if (bytes && off / cs != l2off / cs) {
                ret = qcow2_update_refcount(s, off, bytes, -1);
            }
        }
        qcow2_cache_put(e);
        if (ret >= 0) {
            ret = qcow2_update_refcount(s, l2off, cs, -1);
        }
    }
    return ret;
}

/* COPIED on every active L1 and L2 entry exactly when its cluster's
 * refcount is 1 (after a snapshot's references went away). */
static int coroutine_fn fix_copied(BDRVQcow2State *s)
{
    const unsigned es = s->g.extended ? 2 : 1;
    uint64_t rc;
    int ret;

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2off = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
        Qcow2CacheEntry *e;
        if (!l2off) {
            continue;
        }
        ret = qcow2_get_refcount(s, l2off >> s->g.cluster_bits, &rc);
        if (ret < 0) {
            return ret;
        }
        uint64_t want = rc == 1 ? QCOW2_OFLAG_COPIED : 0;
        if ((s->l1[i] & QCOW2_OFLAG_COPIED) != want) {
            s->l1[i] = (s->l1[i] & ~QCOW2_OFLAG_COPIED) | want;
            s->l1_dirty = true;
        }
        if (!want) {
            continue;   /* shared table: its entries stay as they are */
        }
        ret = qcow2_cache_get(s, s->l2_cache, l2off, false, &e);
        if (ret < 0) {
            return ret;
        }
        for (uint32_t j = 0; j < s->g.l2_size; j++) {
            uint8_t *p = e->table + (uint64_t)j * es * 8;
            uint64_t entry = be64_get(p), host = copied_cluster(entry);
            if (!host) {
                continue;
            }
            ret = qcow2_get_refcount(s, host >> s->g.cluster_bits, &rc);
            if (ret < 0) {
                break;
            }
            uint64_t w = rc == 1 ? QCOW2_OFLAG_COPIED : 0;
            if ((entry & QCOW2_OFLAG_COPIED) != w) {
                be64_put(p, (entry & ~QCOW2_OFLAG_COPIED) | w);
                qcow2_cache_mark_dirty(s->l2_cache, e);
            }
        }
        qcow2_cache_put(e);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* The next free id: one past the largest numeric one, as qemu. */
static void new_id(BDRVQcow2State *s, char *buf, size_t len)
{
    unsigned long max = 0;

    for (uint32_t i = 0; i < s->nb_snaps; i++) {
        unsigned long v = strtoul(s->snaps[i].info.id, NULL, 10);
        if (v > max) {
            max = v;
        }
    }
    snprintf(buf, len, "%lu", max + 1);
}

static void build_entry(BDRVQcow2State *s, Qcow2Snapshot *sn,
                        uint64_t l1_off, const char *id, const char *name)
{
    struct timespec ts;
    size_t id_len = strlen(id), name_len = strlen(name);
    uint8_t *h;

    clock_gettime(CLOCK_REALTIME, &ts);
    /* qemu's clock has microseconds; its VM clock is the same instant */
    uint32_t nsec = (uint32_t)(ts.tv_nsec / 1000 * 1000);
    uint64_t clock = (uint64_t)ts.tv_sec * 1000000000ull + nsec;

    sn->raw_len = (uint32_t)(SN_FIXED + SN_EXTRA + id_len + name_len);
    sn->raw = h = bj_calloc(1, sn->raw_len);
    be64_put(h, l1_off);
    be32_put(h + 8, s->l1_size);
    be16_put(h + 12, (uint16_t)id_len);
    be16_put(h + 14, (uint16_t)name_len);
    be32_put(h + 16, (uint32_t)ts.tv_sec);
    be32_put(h + 20, nsec);
    be64_put(h + 24, clock);
    be32_put(h + 32, 0);
    be32_put(h + 36, SN_EXTRA);
    be64_put(h + SN_FIXED, 0);                 /* vm_state_size_large */
    be64_put(h + SN_FIXED + 8, s->hdr.size);   /* disk_size */
    be64_put(h + SN_FIXED + 16, UINT64_MAX);   /* icount: none (-1) */
    memcpy(h + SN_FIXED + SN_EXTRA, id, id_len);
    memcpy(h + SN_FIXED + SN_EXTRA + id_len, name, name_len);
    parse_entry(sn);
}

static int coroutine_fn snapshot_create_locked(BDRVQcow2State *s,
                                               const char *name,
                                               BdrvSnapshotInfo *out)
{
    const uint64_t cs = s->g.cluster_size;
    uint64_t l1_bytes = (uint64_t)s->l1_size * 8;
    uint64_t l1_clusters = (l1_bytes + cs - 1) / cs;
    int64_t l1_off = 0;
    uint8_t *copy = NULL;
    char id[32];
    char short_name[256];
    Qcow2Snapshot sn = { 0 };
    int ret;

    ret = qcow2_flush_metadata(s);
    if (ret < 0) {
        return ret;
    }
    /* The copy of the active L1 table, in new clusters. */
    if (l1_clusters) {
        copy = bj_try_malloc(l1_bytes);
        if (!copy) {
            return -ENOMEM;
        }
        for (uint32_t i = 0; i < s->l1_size; i++) {
            be64_put(copy + (uint64_t)i * 8, s->l1[i] & ~QCOW2_OFLAG_COPIED);
        }
        l1_off = qcow2_alloc_clusters(s, l1_clusters);
        if (l1_off < 0) {
            free(copy);
            return (int)l1_off;
        }
        ret = qcow2_write_meta(s, (uint64_t)l1_off, copy, l1_bytes);
        free(copy);
        if (ret < 0) {
            qcow2_update_refcount(s, (uint64_t)l1_off, l1_clusters * cs, -1);
            return ret;
        }
    }
    /* Its references (a failure from here leaks, nothing worse). */
    ret = add_tree_refs(s);
    if (ret >= 0) {
        ret = qcow2_write_back(s);
    }
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    if (ret < 0) {
        return ret;
    }
    /* The table with it, then the header. */
    new_id(s, id, sizeof(id));
    snprintf(short_name, sizeof(short_name), "%s", name);
    build_entry(s, &sn, (uint64_t)l1_off, id, short_name);
    Qcow2Snapshot *snaps = bj_calloc(s->nb_snaps + 1, sizeof(*snaps));
    if (s->nb_snaps) {
        memcpy(snaps, s->snaps, s->nb_snaps * sizeof(*snaps));
    }
    snaps[s->nb_snaps] = sn;
    ret = write_table(s, snaps, s->nb_snaps + 1);
    if (ret < 0) {
        free(sn.raw);
        free(snaps);
        return ret;
    }
    free(s->snaps);
    s->snaps = snaps;
    s->nb_snaps++;
    qcow2_ol_reload(s);
    if (out) {
        *out = sn.info;
    }
    /* The old table's clusters, freed. */
    ret = qcow2_write_back(s);
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    return ret < 0 ? ret : 0;
}

int coroutine_fn qcow2_co_snapshot_create(BlockNode *bs, const char *name,
                                          BdrvSnapshotInfo *out,
                                          Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (bs->read_only) {
        ret = -EACCES;
    } else if (s->broken ||
               (s->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT) ||
               s->snaps_bad) {
        ret = -EIO;
    } else if (s->hdr.data_file) {
        ret = -ENOTSUP;
    } else if (s->nb_snaps >= QCOW2_MAX_SNAPSHOTS) {
        ret = -EFBIG;
    } else {
        co_mutex_lock(&s->lock);
        ret = snapshot_create_locked(s, name, out);
        co_mutex_unlock(&s->lock);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to create snapshot '%s'", name);
    }
    return ret;
}

static int find_snapshot(BDRVQcow2State *s, const char *id, const char *name)
{
    for (uint32_t i = 0; i < s->nb_snaps && (id || name); i++) {
        if ((!id || !strcmp(s->snaps[i].info.id, id)) &&
            (!name || !strcmp(s->snaps[i].info.name, name))) {
            return (int)i;
        }
    }
    return -1;
}

static int coroutine_fn snapshot_delete_locked(BDRVQcow2State *s, int k,
                                               Error **errp)
{
    Qcow2Snapshot sn = s->snaps[k];
    uint64_t l1_bytes = (uint64_t)sn.l1_size * 8;
    uint64_t *l1 = NULL;
    int ret;

    ret = qcow2_flush_metadata(s);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to remove snapshot from "
                         "snapshot list");
        return ret;
    }
    if (l1_bytes) {
        l1 = bj_try_malloc(l1_bytes);
        if (!l1) {
            error_setg_errno(errp, ENOMEM, "Failed to remove snapshot from "
                             "snapshot list");
            return -ENOMEM;
        }
        ret = qcow2_read_meta(s, sn.l1_offset, l1, l1_bytes);
        if (ret < 0) {
            free(l1);
            error_setg_errno(errp, -ret, "Failed to remove snapshot from "
                             "snapshot list");
            return ret;
        }
        for (uint32_t i = 0; i < sn.l1_size; i++) {
            l1[i] = be64_get((uint8_t *)&l1[i]);
        }
    }
    /* The table without it: from now on its tree is only leaked. */
    Qcow2Snapshot *snaps = bj_calloc(s->nb_snaps, sizeof(*snaps));
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->nb_snaps; i++) {
        if ((int)i != k) {
            snaps[n++] = s->snaps[i];
        }
    }
    ret = write_table(s, snaps, n);
    if (ret < 0) {
        free(snaps);
        free(l1);
        error_setg_errno(errp, -ret, "Failed to remove snapshot from "
                         "snapshot list");
        return ret;
    }
    free(s->snaps);
    s->snaps = snaps;
    s->nb_snaps = n;
    ret = drop_tree_refs(s, l1, sn.l1_size);
    free(l1);
    if (ret >= 0 && l1_bytes) {
        ret = qcow2_update_refcount(s, sn.l1_offset, l1_bytes, -1);
    }
    if (ret >= 0) {
        ret = fix_copied(s);
    }
    qcow2_ol_reload(s);
    if (ret >= 0) {
        ret = qcow2_write_back(s);
    }
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    free(sn.raw);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to free the cluster and L1 "
                         "table");
        return ret;
    }
    return 0;
}

int coroutine_fn qcow2_co_snapshot_delete(BlockNode *bs, const char *id,
                                          const char *name,
                                          BdrvSnapshotInfo *out,
                                          Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int k, ret;

    co_mutex_lock(&s->lock);
    k = find_snapshot(s, id, name);
    if (k < 0) {
        error_setg(errp, "Can't find the snapshot");
        ret = -ENOENT;
    } else if (bs->read_only) {
        error_setg(errp, "Failed to remove snapshot from snapshot list: "
                   "Operation not permitted");
        ret = -EPERM;
    } else if (s->broken || s->snaps_bad ||
               (s->hdr.incompatible_features & QCOW2_INCOMPAT_CORRUPT)) {
        error_setg(errp, "Failed to remove snapshot from snapshot list: "
                   "Input/output error");
        ret = -EIO;
    } else {
        if (out) {
            *out = s->snaps[k].info;
        }
        ret = snapshot_delete_locked(s, k, errp);
    }
    co_mutex_unlock(&s->lock);
    return ret;
}
