/*
 * Internal snapshots: the snapshot table (qcow2 specification, "Snapshots")
 * read at open, and snapshots taken and deleted.
 *
 * A snapshot is the active L1 table of its instant: taking one leaves the
 * old L1 table and its L2 tables to the snapshot and gives the active
 * tree copies of the L2 tables without COPIED, every cluster they reach
 * counting one more reference; deleting one drops what it references
 * and gives COPIED back (in new copies of the active L2 tables whose
 * entries change) where a count went back to one.
 *
 * Both are switched in by one header write (see gen_commit): the new
 * active L1 table, L2 tables, snapshot table, refcount blocks and table
 * are written past the clusters in use first.  A crash before the header
 * write leaves the old image, after it the new one; neither leaks (the
 * clusters written before are neither counted nor referenced), and no
 * refcount disagrees with a COPIED flag at any point.  The price: each
 * snapshot taken or deleted rewrites the refcount blocks and the changed
 * L2 tables (their old places are free again for later allocations).
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

/* Non-compressed L2 entries that hold a host cluster: the ones COPIED is
 * about (word 0 of an extended entry). */
static uint64_t copied_cluster(uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        return 0;
    }
    return entry & QCOW2_L2E_OFFSET_MASK;
}

/* ---- switching to a new metadata generation in one header write ---- */

/*
 * Taking or deleting a snapshot changes refcounts and the COPIED flags of
 * active entries together; no order of in-place writes keeps both in
 * step (a kill between them leaves an entry whose COPIED flag disagrees
 * with its refcount: qemu-img check counts that as a corruption).  So the
 * change is built beside the image instead: past the last cluster in use
 * go the new active L1 table, copies of the active L2 tables whose
 * entries change, the new snapshot table, and new refcount blocks and
 * table counting all of it.  One header write then switches the active
 * L1 table, the refcount table and the snapshot table together.  Before
 * it, the image is the old one (the new clusters are neither counted nor
 * referenced); after it, the new one; the old structures are free in the
 * new refcounts.
 */
typedef struct Qcow2Gen {
    uint64_t *cnt;           /* refcount of every cluster, [0, n) */
    uint64_t n;
    uint64_t base;           /* first cluster past the image's used ones */
    uint8_t *used;           /* [0, base): in use before the change */
} Qcow2Gen;

static void gen_free(Qcow2Gen *g)
{
    free(g->cnt);
    free(g->used);
    g->cnt = NULL;
    g->used = NULL;
}

/* The first run of n clusters below base free before the change and
 * after it (they may be written while the old image is live), or base. */
static uint64_t gen_find_hole(const Qcow2Gen *g, uint64_t n)
{
    uint64_t run = 0;

    for (uint64_t c = 1; c < g->base && n; c++) {
        if (g->used[c] || (c < g->n && g->cnt[c])) {
            run = 0;
        } else if (++run == n) {
            return c + 1 - n;
        }
    }
    return g->base;
}

/* Step 1: the current refcounts (from disk: the caches are clean). */
static int coroutine_fn gen_load(BDRVQcow2State *s, Qcow2Gen *g)
{
    const uint64_t cs = s->g.cluster_size;
    const uint64_t epb = 1ull << s->g.rb_bits;
    uint64_t blocks = 0, n;
    uint8_t *block = bj_try_malloc(cs);
    uint64_t last = 0;
    int ret = 0;

    memset(g, 0, sizeof(*g));
    /* Counts for the clusters the existing blocks cover (the table may
     * have room for far more). */
    for (uint64_t rti = 0; rti < s->reftable_entries; rti++) {
        if (s->reftable[rti]) {
            blocks = rti + 1;
        }
    }
    n = blocks * epb;
    if (!block) {
        return -ENOMEM;
    }
    g->cnt = bj_try_calloc(n ? n : 1, sizeof(*g->cnt));
    if (!g->cnt) {
        free(block);
        return -ENOMEM;
    }
    g->n = n;
    for (uint64_t rti = 0; rti < blocks; rti++) {
        if (!s->reftable[rti]) {
            continue;
        }
        ret = qcow2_read_meta(s, s->reftable[rti], block, cs);
        if (ret < 0) {
            break;
        }
        for (uint64_t k = 0; k < epb; k++) {
            uint64_t v = qcow2_refcount_get(&s->g, block, k);
            g->cnt[rti * epb + k] = v;
            if (v) {
                last = rti * epb + k + 1;
            }
        }
    }
    free(block);
    if (ret < 0) {
        free(g->cnt);
        g->cnt = NULL;
        return ret;
    }
    uint64_t file_clusters = (s->file_size + cs - 1) / cs;
    g->base = last > file_clusters ? last : file_clusters;
    g->used = bj_try_calloc(g->base ? g->base : 1, 1);
    if (!g->used) {
        gen_free(g);
        return -ENOMEM;
    }
    for (uint64_t c = 0; c < g->base; c++) {
        g->used[c] = c >= g->n || g->cnt[c] != 0;
    }
    return 0;
}

/* Adds delta to every cluster touching [off, off+bytes); -EIO when a
 * count would go below zero or past the clusters known. */
static int gen_add(BDRVQcow2State *s, Qcow2Gen *g, uint64_t off,
                   uint64_t bytes, int delta)
{
    const uint64_t cs = s->g.cluster_size;

    if (!bytes) {
        return 0;
    }
    for (uint64_t c = off / cs; c <= (off + bytes - 1) / cs; c++) {
        if (c >= g->n || (delta < 0 && g->cnt[c] < (uint64_t)-delta)) {
            log_error("qcow2: node '%s': refcount of cluster 0x%" PRIx64
                      " does not match its references", s->bs->node_name,
                      c * cs);
            return -EIO;
        }
        g->cnt[c] += (uint64_t)(int64_t)delta;
    }
    return 0;
}

static uint64_t gen_count(const Qcow2Gen *g, uint64_t off, uint32_t bits)
{
    uint64_t c = off >> bits;
    return c < g->n ? g->cnt[c] : 0;
}

/*
 * Step 2: writes the new generation and switches to it.  l1: the new
 * active L1 table (s->l1_size entries, host order; entry i of a table in
 * new_l2 is filled in here); new_l2[i]: the contents of a new L2 table
 * for L1 index i (NULL: l1[i] as given); snaps: the new snapshot table.
 * The caller has put every other change in g (the old tables it
 * replaces, what the snapshot references); the old refcount structures,
 * the old snapshot table and what is written here are counted here.
 */
static int coroutine_fn gen_commit(BDRVQcow2State *s, Qcow2Gen *g,
                                   uint64_t *l1, uint8_t **new_l2,
                                   const Qcow2Snapshot *snaps,
                                   uint32_t nb_snaps)
{
    const uint64_t cs = s->g.cluster_size;
    const uint64_t epb = 1ull << s->g.rb_bits;
    uint64_t l1c = ((uint64_t)s->l1_size * 8 + cs - 1) / cs;
    uint64_t st_bytes = table_bytes(snaps, nb_snaps);
    uint64_t stc = (st_bytes + cs - 1) / cs;
    uint64_t nl2 = 0, rbc = 0, rtc = s->hdr.refcount_table_clusters, total;
    uint8_t *buf = NULL;
    uint64_t *reftable = NULL;
    int ret;

    for (uint32_t i = 0; i < s->l1_size; i++) {
        nl2 += new_l2[i] != NULL;
    }
    /* Where everything goes: [L1 | L2 tables | snapshots | blocks | table]
     * in a free run, else past the end. */
    uint64_t start, need;
    for (;;) {
        need = l1c + nl2 + stc + rbc + rtc;
        start = gen_find_hole(g, need);
        total = start + need > g->base ? start + need : g->base;
        uint64_t need_rb = (total + epb - 1) / epb;
        uint64_t need_rt = (need_rb * 8 + cs - 1) / cs;
        if (need_rb <= rbc && need_rt <= rtc) {
            break;
        }
        rbc = need_rb > rbc ? need_rb : rbc;
        rtc = need_rt > rtc ? need_rt : rtc;
    }
    if (rtc * cs > QCOW2_MAX_REFTABLE_BYTES) {
        return -EFBIG;
    }
    if (start < g->base) {
        ret = qcow2_ol_pre_write(s, 0, start * cs, need * cs);
        if (ret < 0) {
            return ret;
        }
    }
    uint64_t l1_off = start * cs, l2_off = l1_off + l1c * cs;
    uint64_t st_off = l2_off + nl2 * cs, rb_off = st_off + stc * cs;
    uint64_t rt_off = rb_off + rbc * cs;

    /* The counts of the new generation, for clusters [0, total). */
    uint64_t *cnt = bj_try_reallocarray(g->cnt, total, sizeof(*cnt));
    if (!cnt) {
        return -ENOMEM;
    }
    if (total > g->n) {
        memset(cnt + g->n, 0, (total - g->n) * sizeof(*cnt));
    }
    g->cnt = cnt;
    g->n = total;
    for (uint64_t c = start; c < start + need; c++) {
        cnt[c] = 1;
    }
    ret = gen_add(s, g, s->hdr.refcount_table_offset,
                  (uint64_t)s->hdr.refcount_table_clusters * cs, -1);
    for (uint64_t rti = 0; rti < s->reftable_entries && ret >= 0; rti++) {
        if (s->reftable[rti]) {
            ret = gen_add(s, g, s->reftable[rti], cs, -1);
        }
    }
    if (ret >= 0 && s->nb_snaps && !s->snaps_bad) {
        ret = gen_add(s, g, s->hdr.snapshots_offset,
                      table_bytes(s->snaps, s->nb_snaps), -1);
    }
    if (ret < 0) {
        return ret;
    }
    for (uint64_t c = 0; c < total; c++) {
        if (cnt[c] > qcow2_refcount_max(&s->g)) {
            return -EINVAL;   /* qemu's errno for a refcount overflow */
        }
    }

    /* Write it all beside the image. */
    uint64_t bytes = (l1c + nl2 + stc + rbc + rtc) * cs;
    buf = bj_try_calloc(1, bytes ? bytes : 1);
    reftable = bj_try_calloc(rtc * cs / 8, sizeof(*reftable));
    if (!buf || !reftable) {
        free(buf);
        free(reftable);
        return -ENOMEM;
    }
    uint64_t k = 0;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        if (new_l2[i]) {
            uint64_t off = l2_off + k * cs;
            memcpy(buf + (off - l1_off), new_l2[i], cs);
            l1[i] = off | QCOW2_OFLAG_COPIED;
            k++;
        }
        be64_put(buf + (uint64_t)i * 8, l1[i]);
    }
    uint8_t *p = buf + (st_off - l1_off);
    for (uint32_t i = 0; i < nb_snaps; i++) {
        memcpy(p, snaps[i].raw, snaps[i].raw_len);
        p += padded(snaps[i].raw_len);
    }
    for (uint64_t b = 0; b < rbc; b++) {
        uint8_t *blk = buf + (rb_off - l1_off) + b * cs;
        for (uint64_t e = 0; e < epb && b * epb + e < total; e++) {
            qcow2_refcount_set(&s->g, blk, e, cnt[b * epb + e]);
        }
        reftable[b] = rb_off + b * cs;
        be64_put(buf + (rt_off - l1_off) + b * 8, reftable[b]);
    }
    ret = qcow2_write_meta(s, l1_off, buf, bytes);
    free(buf);
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    if (ret < 0) {
        free(reftable);
        return ret;
    }

    /* The switch.  Every field it changes is in the header's first
     * sector (a write cut short by a kill still has its first page). */
    Qcow2Header old = s->hdr;
    s->hdr.l1_table_offset = l1_off;
    s->hdr.refcount_table_offset = rt_off;
    s->hdr.refcount_table_clusters = (uint32_t)rtc;
    s->hdr.nb_snapshots = nb_snaps;
    s->hdr.snapshots_offset = nb_snaps ? st_off : 0;
    ret = qcow2_write_header(s);
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    if (ret < 0) {
        /* Which header the file holds is unknown now: no more writes. */
        s->broken = true;
        s->hdr.l1_table_offset = old.l1_table_offset;
        s->hdr.refcount_table_offset = old.refcount_table_offset;
        s->hdr.refcount_table_clusters = old.refcount_table_clusters;
        s->hdr.nb_snapshots = old.nb_snapshots;
        s->hdr.snapshots_offset = old.snapshots_offset;
        free(reftable);
        return ret;
    }

    /* Memory follows: the old refcount blocks leave the cache. */
    for (uint64_t rti = 0; rti < s->reftable_entries; rti++) {
        if (s->reftable[rti]) {
            qcow2_cache_discard(s->rb_cache, s->reftable[rti]);
        }
    }
    free(s->reftable);
    s->reftable = reftable;
    s->reftable_entries = rtc * cs / 8;
    memcpy(s->l1, l1, (size_t)s->l1_size * 8);
    s->l1_dirty = false;
    s->free_hint = 1;
    s->comp_cursor = 0;
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

/* A copy of the L2 table at off (from the cache), or NULL. */
static int coroutine_fn read_table(BDRVQcow2State *s, uint64_t off,
                                   uint8_t **out)
{
    Qcow2CacheEntry *e;
    int ret;

    *out = bj_try_malloc(s->g.cluster_size);
    if (!*out) {
        return -ENOMEM;
    }
    ret = qcow2_cache_get(s, s->l2_cache, off, false, &e);
    if (ret < 0) {
        free(*out);
        *out = NULL;
        return ret;
    }
    memcpy(*out, e->table, s->g.cluster_size);
    qcow2_cache_put(e);
    return 0;
}

static void free_tables(uint8_t **t, uint32_t n)
{
    for (uint32_t i = 0; t && i < n; i++) {
        free(t[i]);
    }
    free(t);
}

/*
 * The old active L1 table and its L2 tables become the snapshot's; the
 * new active tree gets copies of the L2 tables without COPIED, and every
 * cluster they reference one more reference.
 */
static int coroutine_fn snapshot_create_locked(BDRVQcow2State *s,
                                               const char *name,
                                               BdrvSnapshotInfo *out)
{
    const unsigned es = s->g.extended ? 2 : 1;
    uint32_t n = s->l1_size;
    uint64_t *l1 = NULL;
    uint8_t **new_l2 = NULL;
    Qcow2Gen g = { 0 };
    char id[32];
    char short_name[256];
    Qcow2Snapshot sn = { 0 }, *snaps = NULL;
    int ret;

    ret = qcow2_flush_metadata(s);
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    if (ret >= 0) {
        ret = gen_load(s, &g);
    }
    if (ret < 0) {
        return ret;
    }
    l1 = bj_try_calloc(n ? n : 1, sizeof(*l1));
    new_l2 = bj_try_calloc(n ? n : 1, sizeof(*new_l2));
    if (!l1 || !new_l2) {
        ret = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2off = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
        l1[i] = s->l1[i];
        if (!l2off) {
            continue;
        }
        ret = read_table(s, l2off, &new_l2[i]);
        if (ret < 0) {
            goto out;
        }
        for (uint32_t j = 0; j < s->g.l2_size && ret >= 0; j++) {
            uint8_t *p = new_l2[i] + (uint64_t)j * es * 8;
            uint64_t entry = be64_get(p), off, bytes;
            qcow2_entry_ref(s, entry, &off, &bytes);
            ret = gen_add(s, &g, off, bytes, 1);
            be64_put(p, entry & ~QCOW2_OFLAG_COPIED);
        }
        if (ret < 0) {
            goto out;
        }
    }
    new_id(s, id, sizeof(id));
    snprintf(short_name, sizeof(short_name), "%s", name);
    build_entry(s, &sn, s->hdr.l1_table_offset, id, short_name);
    snaps = bj_calloc(s->nb_snaps + 1, sizeof(*snaps));
    if (s->nb_snaps) {
        memcpy(snaps, s->snaps, s->nb_snaps * sizeof(*snaps));
    }
    snaps[s->nb_snaps] = sn;
    ret = gen_commit(s, &g, l1, new_l2, snaps, s->nb_snaps + 1);
    if (ret < 0) {
        free(sn.raw);
        free(snaps);
        goto out;
    }
    free(s->snaps);
    s->snaps = snaps;
    s->nb_snaps++;
    qcow2_ol_reload(s);
    if (out) {
        *out = sn.info;
    }
out:
    free_tables(new_l2, n);
    free(l1);
    gen_free(&g);
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

/*
 * The snapshot's references go; the active L2 tables whose entries must
 * get COPIED back are replaced by copies that have it, and the active L1
 * table by one whose COPIED flags follow the new counts.
 */
static int coroutine_fn snapshot_delete_locked(BDRVQcow2State *s, int k,
                                               Error **errp)
{
    const uint64_t cs = s->g.cluster_size;
    const unsigned es = s->g.extended ? 2 : 1;
    const uint32_t cb = s->g.cluster_bits;
    Qcow2Snapshot sn = s->snaps[k];
    uint64_t l1_bytes = (uint64_t)sn.l1_size * 8;
    uint64_t *snl1 = NULL, *l1 = NULL;
    uint8_t **new_l2 = NULL;
    Qcow2Snapshot *snaps = NULL;
    uint32_t n = s->l1_size, nsn = 0;
    Qcow2Gen g = { 0 };
    int ret;

    ret = qcow2_flush_metadata(s);
    if (ret >= 0) {
        ret = qcow2_flush_file(s);
    }
    if (ret >= 0) {
        ret = gen_load(s, &g);
    }
    if (ret < 0) {
        goto out;
    }
    snl1 = bj_try_malloc(l1_bytes ? l1_bytes : 1);
    l1 = bj_try_calloc(n ? n : 1, sizeof(*l1));
    new_l2 = bj_try_calloc(n ? n : 1, sizeof(*new_l2));
    if (!snl1 || !l1 || !new_l2) {
        ret = -ENOMEM;
        goto out;
    }
    if (l1_bytes) {
        ret = qcow2_read_meta(s, sn.l1_offset, snl1, l1_bytes);
        if (ret < 0) {
            goto out;
        }
    }
    /* What the snapshot references loses a reference. */
    for (uint32_t i = 0; i < sn.l1_size && ret >= 0; i++) {
        uint64_t l2off = be64_get((uint8_t *)&snl1[i]) &
                         QCOW2_L1E_OFFSET_MASK;
        uint8_t *t;
        if (!l2off) {
            continue;
        }
        ret = read_table(s, l2off, &t);
        for (uint32_t j = 0; j < s->g.l2_size && ret >= 0; j++) {
            uint64_t off, bytes;
            qcow2_entry_ref(s, be64_get(t + (uint64_t)j * es * 8), &off,
                            &bytes);
            ret = gen_add(s, &g, off, bytes, -1);
        }
        free(t);
        if (ret >= 0) {
            ret = gen_add(s, &g, l2off, cs, -1);
        }
    }
    if (ret >= 0) {
        ret = gen_add(s, &g, sn.l1_offset, l1_bytes, -1);
    }
    /* The active L1 table is written anew. */
    if (ret >= 0) {
        ret = gen_add(s, &g, s->hdr.l1_table_offset, (uint64_t)n * 8, -1);
    }
    if (ret < 0) {
        goto out;
    }
    /* COPIED as the new counts say. */
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2off = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
        uint8_t *t;
        bool change = false;
        l1[i] = s->l1[i] & ~QCOW2_OFLAG_COPIED;
        if (!l2off || gen_count(&g, l2off, cb) != 1) {
            continue;   /* (a shared table stays as it is) */
        }
        l1[i] |= QCOW2_OFLAG_COPIED;
        ret = read_table(s, l2off, &t);
        if (ret < 0) {
            goto out;
        }
        for (uint32_t j = 0; j < s->g.l2_size; j++) {
            uint8_t *p = t + (uint64_t)j * es * 8;
            uint64_t entry = be64_get(p), host = copied_cluster(entry);
            uint64_t want = host && gen_count(&g, host, cb) == 1 ?
                            QCOW2_OFLAG_COPIED : 0;
            if ((entry & QCOW2_OFLAG_COPIED) != want) {
                be64_put(p, (entry & ~QCOW2_OFLAG_COPIED) | want);
                change = true;
            }
        }
        if (!change) {
            free(t);
            continue;
        }
        new_l2[i] = t;
        ret = gen_add(s, &g, l2off, cs, -1);   /* replaced by its copy */
        if (ret < 0) {
            goto out;
        }
    }
    /* (Clean in the cache: forgetting them costs a read at worst.) */
    for (uint32_t i = 0; i < n; i++) {
        if (new_l2[i]) {
            qcow2_cache_discard(s->l2_cache,
                                s->l1[i] & QCOW2_L1E_OFFSET_MASK);
        }
    }
    snaps = bj_calloc(s->nb_snaps, sizeof(*snaps));
    for (uint32_t i = 0; i < s->nb_snaps; i++) {
        if ((int)i != k) {
            snaps[nsn++] = s->snaps[i];
        }
    }
    ret = gen_commit(s, &g, l1, new_l2, snaps, nsn);
    if (ret < 0) {
        free(snaps);
        goto out;
    }
    free(s->snaps);
    s->snaps = snaps;
    s->nb_snaps = nsn;
    free(sn.raw);
    /* Tables now free leave the cache. */
    for (uint32_t i = 0; i < sn.l1_size; i++) {
        uint64_t l2off = be64_get((uint8_t *)&snl1[i]) &
                         QCOW2_L1E_OFFSET_MASK;
        if (l2off && !gen_count(&g, l2off, cb)) {
            qcow2_cache_discard(s->l2_cache, l2off);
        }
    }
    qcow2_ol_reload(s);
out:
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to remove snapshot from "
                         "snapshot list");
    }
    free_tables(new_l2, n);
    free(l1);
    free(snl1);
    gen_free(&g);
    return ret < 0 ? ret : 0;
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
