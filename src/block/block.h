/*
 * The block graph: nodes, the children that link them, permissions, the
 * request path and drained sections.
 *
 *   user (export, job)          BlockChild "root", klass = the user's class
 *        |
 *   [raw node]  --file-->  [file node]            BlockChild "file"
 *   [qcow2 node] --file--> [file], --backing--> [qcow2 node] ...
 *
 * A BlockChild is one edge: the parent (a node, or an external user such as
 * an NBD export or a job) holds it, the child node is `node`.  Every edge
 * carries the permissions the parent takes on the child and what it lets
 * others do (shared).  An attach or change that conflicts with another
 * parent is refused with a message naming both.
 *
 * Threads: a node and all its children belong to one AioContext.  Requests
 * run in coroutines in that context.  in_flight and quiesce_counter are
 * atomics so that the main loop can drain a node that lives in an iothread.
 */
#ifndef BJ_BLOCK_BLOCK_H
#define BJ_BLOCK_BLOCK_H

#include <jansson.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "util/argspec.h"
#include "util/error.h"
#include "util/iov.h"
#include "util/list.h"

/*
 * The largest length a node may have: INT64_MAX rounded down to 1 GiB, as
 * in qemu (BDRV_MAX_LENGTH), so that offset + length of any request fits an
 * int64_t.  A node opened larger is refused ("Could not refresh total
 * sector count: File too large").
 */
#define BDRV_MAX_LENGTH (INT64_MAX - ((INT64_C(1) << 30) - 1))

typedef struct BlockDriver BlockDriver;
typedef struct BlockNode BlockNode;
typedef struct BlockChild BlockChild;
typedef struct BlockChildClass BlockChildClass;

/* ---- permissions ---- */
enum {
    BLK_PERM_CONSISTENT_READ = 1 << 0,
    BLK_PERM_WRITE           = 1 << 1,
    BLK_PERM_WRITE_UNCHANGED = 1 << 2,
    BLK_PERM_RESIZE          = 1 << 3,
    BLK_PERM_ALL             = (1 << 4) - 1,
};

/* ---- child roles (what the child is to its parent) ---- */
enum {
    BLK_ROLE_DATA     = 1 << 0,  /* guest data lives there */
    BLK_ROLE_METADATA = 1 << 1,  /* format metadata lives there */
    BLK_ROLE_FILTERED = 1 << 2,  /* parent passes requests through */
    BLK_ROLE_COW      = 1 << 3,  /* backing: read-only source of COW data */
    BLK_ROLE_PRIMARY  = 1 << 4,  /* the parent's main child */
};

/* ---- request flags ---- */
enum {
    BLK_REQ_FUA             = 1 << 0, /* write: durable on completion */
    BLK_REQ_MAY_UNMAP       = 1 << 1, /* write-zeroes: may deallocate */
    BLK_REQ_NO_FALLBACK     = 1 << 2, /* write-zeroes: fail (-ENOTSUP)
                                         rather than write zero buffers */
    BLK_REQ_WRITE_UNCHANGED = 1 << 3, /* write does not change contents */
    BLK_REQ_METADATA        = 1 << 4, /* read/write: a format driver's own
                                         metadata, not guest data (blkdebug
                                         fires no read_aio/write_aio for it,
                                         as qemu's formats fire none) */
    BLK_REQ_WRITE_COMPRESSED = 1 << 5, /* write: store compressed where the
                                          format can (qcow2; backup's
                                          compress); cluster aligned */
};

/* ---- block status ---- */
enum {
    BLK_STATUS_DATA         = 1 << 0, /* reads come from a data area */
    BLK_STATUS_ZERO         = 1 << 1, /* reads return zeroes */
    BLK_STATUS_OFFSET_VALID = 1 << 2, /* *map is valid in *file */
    BLK_STATUS_ALLOCATED    = 1 << 3, /* this layer decides the content */
    BLK_STATUS_EOF          = 1 << 4, /* range reaches end of the node */
};

/*
 * What the parent of a BlockChild is.  Nodes use the block layer's own class;
 * external users (exports, jobs) supply theirs.  Drain callbacks let a user
 * stop sending requests (and say when it has stopped: drained_poll returns
 * true while it is still busy).
 */
struct BlockChildClass {
    bool parent_is_node;
    /* "node 'x'", "export 'e'", "block job 'j'": for permission messages. */
    char *(*get_parent_desc)(BlockChild *c);
    void (*drained_begin)(BlockChild *c);
    bool (*drained_poll)(BlockChild *c);
    void (*drained_end)(BlockChild *c);
    /* External users whose requests must wait (not fail) while the node is
     * drained set this: see bdrv_co_wait_unquiesced. */
    bool postpone_requests_when_drained;
    /* The user's requests are a guest's (exports): the request path counts
     * them in BlockNode.guest, which jobs watch to yield to the guest
     * (job/job-yield.c). */
    bool guest_io;
    /* x-debug-query-block-graph: the user a non-node parent edge belongs
     * to (edges with the same owner are one vertex), its type and name.
     * Unset: the edge's opaque, "block-backend" and "" (qemu's anonymous
     * BlockBackend: an export, block_resize). */
    void (*graph_parent)(BlockChild *c, const void **owner,
                         const char **type, const char **name);
    /* A user that may follow its node into another context (an NBD export
     * without fixed-iothread) sets change_ctx; the others are refused
     * with qsd's "Cannot change iothread of active block backend".
     * can_change_ctx (optional) may still refuse.  change_ctx runs in the
     * main loop, the nodes drained and already in ctx; it moves what the
     * user runs there (connections, their coroutines, fd watches). */
    bool (*can_change_ctx)(BlockChild *c, AioContext *ctx);
    void (*change_ctx)(BlockChild *c, AioContext *old, AioContext *ctx);
    /* Optional: before the move drains anything, and once it is over and
     * undrained (once per edge each). */
    void (*change_ctx_begin)(BlockChild *c);
    void (*change_ctx_end)(BlockChild *c);
    /* A user holding several nodes (a block job) names the others: they
     * move with this one (fn is called for each). */
    void (*for_each_sibling)(BlockChild *c,
                             void (*fn)(BlockNode *bs, void *opaque),
                             void *opaque);
    /* Whether the edge is what qemu calls a BlockBackend (an export, a
     * job's main node and I/O edges), for x-blockdev-set-iothread's force
     * check.  Unset: true for every non-node parent. */
    bool (*is_backend)(BlockChild *c);
};

struct BlockChild {
    BlockNode *node;               /* the child node (holds a reference) */
    char *name;                    /* "file", "backing", "root", ... */
    unsigned role;                 /* BLK_ROLE_* */
    const BlockChildClass *klass;
    void *opaque;                  /* BlockNode * when klass->parent_is_node */
    uint64_t perm;                 /* what the parent does */
    uint64_t shared;               /* what the parent lets others do */
    bool quiesced_parent;          /* drained_begin delivered to parent */
    ListHead parent_link;          /* in node->parents */
    ListHead child_link;           /* in parent node->children */
};

typedef struct BlockLimits {
    uint32_t request_alignment;    /* bytes; requests are aligned to this */
    uint32_t max_transfer;         /* 0 = no limit */
    uint32_t opt_transfer;
    uint32_t min_mem_alignment;    /* buffer alignment (O_DIRECT) */
    uint32_t pwrite_zeroes_alignment;
    uint32_t pdiscard_alignment;
} BlockLimits;

/* Counted per node by the request path (io.c), for query-blockstats. */
enum { BLOCK_ACCT_READ, BLOCK_ACCT_WRITE, BLOCK_ACCT_FLUSH, BLOCK_ACCT_UNMAP,
       BLOCK_ACCT__MAX };
typedef struct BlockNodeStats {
    _Atomic uint64_t bytes[BLOCK_ACCT__MAX];
    _Atomic uint64_t ops[BLOCK_ACCT__MAX];
    _Atomic uint64_t failed_ops[BLOCK_ACCT__MAX];
    _Atomic uint64_t total_time_ns[BLOCK_ACCT__MAX];
    _Atomic uint64_t wr_highest_offset;
} BlockNodeStats;

/* Guests' requests (from users whose class sets guest_io) entering at a
 * node: completed count, their total latency and how many are in flight.
 * One writer (the node's thread); jobs read them from the main loop. */
typedef struct BlockGuestIo {
    _Atomic uint64_t ops;
    _Atomic uint64_t total_ns;
    _Atomic uint32_t in_flight;
} BlockGuestIo;

struct BlockNode {
    char node_name[32];
    bool implicit_name;            /* "#blockNNN", generated */
    const BlockDriver *drv;
    void *opaque;                  /* driver state, drv->state_size bytes */
    AioContext *ctx;
    int refcnt;

    bool read_only;
    bool cache_direct;
    bool cache_no_flush;
    bool force_share;
    bool discard_unmap;            /* discard=unmap */
    int detect_zeroes;             /* 0 off, 1 on, 2 unmap */
    char filename[PATH_MAX];       /* for query output */
    char backing_file[PATH_MAX];   /* backing file name from the image */
    char backing_format[32];
    json_t *options;               /* options it was opened with */

    BlockChild *file;              /* shortcut to the primary data child */
    BlockChild *backing;           /* shortcut to the backing child */
    ListHead children;             /* BlockChild.child_link */
    ListHead parents;              /* BlockChild.parent_link */
    ListHead link;                 /* in the global node list */

    int64_t total_bytes;           /* cached length */
    BlockLimits bl;

    atomic_uint in_flight;
    atomic_int quiesce_counter;
    CoQueue postponed;             /* external requests waiting for undrain */
    atomic_int n_postponed;        /* waiting or about to wait there */

    /* Job op blockers: reason set while a job uses the node, NULL if none
     * ("block device is in use by block job: mirror"). */
    char *op_blocker;

    /* Dirty bitmaps marked by writes through the node (dirty-bitmap.h);
     * a singly linked list, NULL when none. */
    struct BdrvDirtyBitmap *dirty_bitmaps;

    /* query-blockstats: what the request path counted at this node.
     * Written only from the node's context (a plain load and store), read
     * from the main loop. */
    BlockNodeStats stats;
    BlockGuestIo guest;
    /* block-set-write-threshold: 0 when unset; a write or discard ending
     * past it emits BLOCK_WRITE_THRESHOLD once and clears it. */
    _Atomic uint64_t write_threshold;

    bool monitor_owned;            /* added by blockdev-add (not inline) */
    bool auto_read_only;
    /* Only while the node is being opened: the option path of the node
     * ("file." for an inline child) and whether strings are coerced. */
    char *open_path;
    bool open_coerce;
    /* Only while the node is being opened: children that live in another
     * thread's context, drained (and referenced) until the open ends, so
     * that the open's own I/O on them from the main loop meets nobody
     * else's (bdrv_attach_child). */
    BlockNode **open_drained;
    size_t n_open_drained;
};

/* What bdrv_get_info reports of a node's format. */
typedef struct BlockDriverInfo {
    int64_t cluster_size;          /* 0: the format has no clusters */
} BlockDriverInfo;

/* One internal snapshot (qemu's SnapshotInfo; qcow2's snapshot table
 * entry).  Strings cut to the sizes qemu keeps. */
typedef struct BdrvSnapshotInfo {
    char id[128];
    char name[256];
    uint64_t vm_state_size;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    int64_t icount;                /* -1: none recorded */
} BdrvSnapshotInfo;

/* The types of entries a driver may define apart from its table (so it
 * declares them by type, not by repeating the signature). */
typedef int coroutine_fn BlockDriverRwFn(BlockNode *bs, int64_t offset,
                                         int64_t bytes, IOVector *qiov,
                                         unsigned flags);
typedef bool BlockDriverCanStoreBitmapFn(BlockNode *bs, const char *name,
                                         uint32_t granularity, Error **errp);

/*
 * The driver table.  Every coroutine_fn runs in bs->ctx.  Unset entries fall
 * back as the request path documents (a filter passes through to its file
 * child; no co_block_status = everything DATA|ALLOCATED).
 */
/*
 * Job filters (block/job-filter.h) call these around clients' write-like
 * requests.  Before: in the client's request coroutine, before the request
 * goes down; a negative errno fails the request.  After: once the request
 * succeeded below, before the client hears back.
 */
typedef int coroutine_fn BdrvBeforeWriteHook(void *opaque, int64_t offset,
                                             int64_t bytes);
typedef enum BdrvWriteKind {
    BDRV_WRITE,             /* qiov holds the data */
    BDRV_WRITE_ZEROES,      /* flags: BLK_REQ_MAY_UNMAP may be set */
    BDRV_DISCARD,
} BdrvWriteKind;
typedef void coroutine_fn BdrvAfterWriteHook(void *opaque, BdrvWriteKind kind,
                                             int64_t offset, int64_t bytes,
                                             IOVector *qiov, unsigned flags);

struct BlockDriver {
    const char *name;
    size_t state_size;
    /* Driver-specific blockdev-add members (the common ones — driver,
     * node-name, read-only, cache, discard, ... — are checked by the layer). */
    const ArgSpec *options;
    /* Options that change what the node shows (raw: offset, size): when one
     * is set, query output names the node by a "json:{...}" filename. */
    const char *const *strong_options;
    bool is_filter;
    /* The format can have a backing image (blockdev-snapshot's overlay). */
    bool supports_backing;
    /* How sure the driver is that an image starting with buf (len bytes
     * of it, maybe fewer than the image) is in its format: 0 not, 100
     * certain.  Unset: never guessed (raw is what remains). */
    int (*probe)(const uint8_t *buf, size_t len);

    /* Opens bs from already-checked options; children via bdrv_open_child. */
    int coroutine_fn (*co_open)(BlockNode *bs, json_t *opts, Error **errp);
    /* Main loop, node drained; children are detached by the layer after. */
    void (*close)(BlockNode *bs);

    BlockDriverRwFn *co_preadv;
    BlockDriverRwFn *co_pwritev;
    int coroutine_fn (*co_pwrite_zeroes)(BlockNode *bs, int64_t offset,
                                         int64_t bytes, unsigned flags);
    int coroutine_fn (*co_pdiscard)(BlockNode *bs, int64_t offset,
                                    int64_t bytes);
    int coroutine_fn (*co_flush)(BlockNode *bs);
    /* Optional hint: start writing back what this node's own storage
     * holds dirty in a cache (the page cache) and return without waiting
     * for it to be durable.  Copy jobs give it as they go, so that the
     * flush they end with (mirror's before READY) finds little left. */
    void coroutine_fn (*co_start_writeback)(BlockNode *bs);
    /* Status of [offset, offset+bytes): returns BLK_STATUS_* and sets *pnum
     * (> 0, <= bytes) to how many bytes share it; *map and *file when
     * OFFSET_VALID.  Negative errno on failure. */
    int coroutine_fn (*co_block_status)(BlockNode *bs, int64_t offset,
                                        int64_t bytes, int64_t *pnum,
                                        int64_t *map, BlockNode **file);
    int coroutine_fn (*co_truncate)(BlockNode *bs, int64_t size,
                                    Error **errp);
    /* Current length in bytes or -errno (a node's length may change). */
    int64_t coroutine_fn (*co_getlength)(BlockNode *bs);

    /* Permissions this node needs on child c (role given) given what its
     * own parents need in total; default: pass through for filtered/data
     * children, consistent-read only for COW children. */
    void (*child_perm)(BlockNode *bs, BlockChild *c, unsigned role,
                       uint64_t parent_perm, uint64_t parent_shared,
                       uint64_t *perm, uint64_t *shared);
    /* Told the cumulative permissions its parents now hold (the file driver
     * takes and releases its byte-range locks here).  check may refuse. */
    bool (*check_perm)(BlockNode *bs, uint64_t perm, uint64_t shared,
                       Error **errp);
    void (*set_perm)(BlockNode *bs, uint64_t perm, uint64_t shared);

    void (*refresh_limits)(BlockNode *bs);

    /* The node's first drained section begins / its last one ends (main
     * loop; the node may live in an iothread).  A driver that holds
     * requests back (throttle) lets them through from begin on, so the
     * section does not wait for it. */
    void (*drained_begin)(BlockNode *bs);
    void (*drained_end)(BlockNode *bs);

    /*
     * The node moves to another AioContext (bdrv_set_aio_context; main
     * loop, node drained): detach is called while bs->ctx is still the old
     * context, attach once it is the new one.  A driver with fd handlers or
     * timers of its own in the context (nbd) moves them here, running in
     * each context's thread (aio_co_run_wait).  Unset: nothing to move.
     */
    void (*detach_aio_context)(BlockNode *bs);
    void (*attach_aio_context)(BlockNode *bs);

    /*
     * Reopen with another read-only state (block/reopen.h), node drained,
     * bs->read_only still the old value.  prepare readies the change and
     * may refuse (leaving nothing changed); then exactly one of commit or
     * abort, which cannot fail.  After a reopen read-write took effect,
     * co_reopen_activate does the first writes a writer owes the image
     * (qcow2: bitmaps in use); its failure reverts the reopen.  Unset: the
     * node has nothing of its own to change (filters, raw).
     */
    int coroutine_fn (*co_reopen_prepare)(BlockNode *bs, bool read_only,
                                          Error **errp);
    void (*reopen_commit)(BlockNode *bs);
    void (*reopen_abort)(BlockNode *bs);
    int coroutine_fn (*co_reopen_activate)(BlockNode *bs, Error **errp);

    /* Adds driver-specific members to the "image" object of
     * query-named-block-nodes. */
    void (*query_image)(BlockNode *bs, json_t *image);
    /* Fills what the format knows of its layout (bdrv_get_info); bdi
     * comes zeroed.  Unset: the node has nothing to say (-ENOTSUP). */
    int (*get_info)(BlockNode *bs, BlockDriverInfo *bdi);

    /*
     * Internal snapshots (block/snapshot.h).  Unset: the format has none.
     * Node drained.  create takes one named name (the caller checked it is
     * new and not empty) and describes it in *out (if non-NULL); delete
     * removes the one with id and/or name (NULL: any) and describes it;
     * both fail with qsd's words.  snapshot_list: a malloc'd copy of the
     * table in *list, its length or -errno.
     */
    int coroutine_fn (*co_snapshot_create)(BlockNode *bs, const char *name,
                                           BdrvSnapshotInfo *out,
                                           Error **errp);
    int coroutine_fn (*co_snapshot_delete)(BlockNode *bs, const char *id,
                                           const char *name,
                                           BdrvSnapshotInfo *out,
                                           Error **errp);
    int (*snapshot_list)(BlockNode *bs, BdrvSnapshotInfo **list);

    /* Rewrites the backing file name and format stored in the image (NULL
     * file: none); block/backing.h.  Unset: nothing is stored (no-op). */
    int coroutine_fn (*co_change_backing_file)(BlockNode *bs,
                                               const char *file,
                                               const char *fmt);

    /*
     * Persistent dirty bitmaps (block/dirty-bitmap-named.h).  Unset: the
     * format stores none (a new one is refused, the rest are no-ops).
     * can_store_new_dirty_bitmap refuses with qsd's message; store_sync
     * makes the image follow the persistent bitmaps in memory now (main
     * loop, waits; or a coroutine not holding the node's locks), 0 or
     * -errno; resync_later asks for bits that left a bitmap to leave its
     * stored copy too, soon (main loop).
     */
    BlockDriverCanStoreBitmapFn *can_store_new_dirty_bitmap;
    int (*dirty_bitmaps_store_sync)(BlockNode *bs);
    void (*dirty_bitmaps_resync_later)(BlockNode *bs);

    /*
     * blockdev-create (block/create.h).  create_check checks the member
     * types of BlockdevCreateOptions at the monitor, with qsd's messages;
     * co_create is the create job's one step (main loop): it checks the
     * values, as qemu does in its job, and makes the image.  Unset: "Driver
     * does not support blockdev-create".
     */
    bool (*create_check)(json_t *opts, Error **errp);
    int coroutine_fn (*co_create)(json_t *opts, const char *job_id,
                                  Error **errp);

    /*
     * x-blockdev-amend (job/amend.h).  amend_check checks the member types
     * of the driver's BlockdevAmendOptions branch (opts with "driver"), at
     * the monitor, with qsd's "options." messages (unset: no members but
     * "driver").  co_amend is the amend job's step, in bs's context: it
     * checks the values, as qemu does in its job, and changes the image.
     * Unset: "Driver does not support x-blockdev-amend".
     */
    bool (*amend_check)(json_t *opts, Error **errp);
    int coroutine_fn (*co_amend)(BlockNode *bs, json_t *opts, bool force,
                                 Error **errp);

    /*
     * Job filters only (block/job-filter.h): set the hook the filter calls
     * around clients' writes (NULL: writes pass through), main loop; and
     * the child a job's own copies go to, if the filter has one.
     */
    void (*set_before_write_hook)(BlockNode *bs, BdrvBeforeWriteHook *hook,
                                  void *opaque);
    void (*set_after_write_hook)(BlockNode *bs, BdrvAfterWriteHook *hook,
                                 void *opaque);
    BlockChild *(*filter_target)(BlockNode *bs);
};

/* ---- drivers ---- */
/* A driver users may name (blockdev-add, blockdev-create), or NULL; the
 * list lives with the drivers (registry.c). */
const BlockDriver *bdrv_find_driver(const char *name);
/* The blockdev-add members every driver has (driver, node-name, cache,
 * ...), NULL-terminated; a driver's own are its `options`.  For the
 * introspection schema. */
const ArgSpec *bdrv_common_options(void);

/* ---- nodes ---- */

/*
 * blockdev-add: checks the common members and the driver's, opens the node
 * (and inline children) in the main context, and returns it with one
 * reference owned by the monitor.  Call from the main loop, not a coroutine.
 * With coerce_strings, values may be strings (command-line dotted keys).
 */
BlockNode *bdrv_open_blockdev(json_t *options, bool coerce_strings,
                              Error **errp);
/*
 * A node the daemon opens itself (a job's filter, drive-mirror's target):
 * drv, when set, need not be in the driver list (users cannot blockdev-add
 * it; NULL: options' "driver"), node-name may be absent (an implicit
 * "#blockNNN"), and the monitor does not own it: the caller holds the one
 * reference.  Main loop, not a coroutine.
 */
BlockNode *bdrv_open_internal(const BlockDriver *drv, json_t *options,
                              Error **errp);
/* The same, the node created in ctx (a job's filter above a node in an
 * iothread; NULL: the main context). */
BlockNode *bdrv_open_internal_in(const BlockDriver *drv, json_t *options,
                                 AioContext *ctx, Error **errp);
/*
 * Checks opts (one node's options) against the common blockdev members plus
 * drv's own, with `prefix` naming where they sit ("file", or "" at the top)
 * in messages.  Inline children are not descended into.
 */
bool bdrv_check_options(const BlockDriver *drv, json_t *opts,
                        const char *prefix, bool coerce, Error **errp);
/* blockdev-del: refused while the node has parents or a job uses it. */
bool bdrv_del_blockdev(const char *node_name, Error **errp);
/* The monitor gives up a node it opened, whatever holds it: what still
 * references it keeps it (blockdev-snapshot-sync's overlay belongs to the
 * parents it took over, as in qemu), else it is closed now. */
void bdrv_disown(BlockNode *bs);

/*
 * In a driver's co_open: opens or references the child named `member` of
 * opts (a node-name string or an inline options object) and attaches it to
 * bs.  Returns NULL with no error if the member is absent and allow_none.
 */
BlockChild *coroutine_fn bdrv_open_child(BlockNode *bs, json_t *opts,
                                         const char *member, unsigned role,
                                         bool allow_none, Error **errp);

BlockNode *bdrv_find_node(const char *node_name);
/*
 * The node named node_name, or NULL with qemu's "Cannot find device='D'
 * nor node-name='N'" (D is device; NULL: empty, for a command or a
 * reference that takes only a node name).
 */
BlockNode *bdrv_lookup_node(const char *device, const char *node_name,
                            Error **errp);
/* True when no node has bs as a child (exports and jobs may still use it). */
bool bdrv_is_root_node(BlockNode *bs);
/*
 * Whether a node could be created under `name` now: well formed, short
 * enough, not taken.  Jobs check a filter-node-name they do not (yet) turn
 * into a node with it, so that they refuse what a node would refuse.
 */
bool bdrv_check_new_node_name(const char *name, Error **errp);
/* Iterates all nodes (named and implicit) in creation order. */
BlockNode *bdrv_next_node(BlockNode *prev);
/* Only the nodes the monitor owns (added by blockdev-add, not inline). */
bool bdrv_is_monitor_owned(BlockNode *bs);

void bdrv_ref(BlockNode *bs);
/* Dropping the last reference closes the node (drained, main loop). */
void bdrv_unref(BlockNode *bs);

/* Closes every monitor-owned node (shutdown): flushes, then closes. */
void bdrv_close_all(void);

/* The format's layout as its driver reports it (zeroed first); -ENOTSUP
 * when the driver has no get_info. */
int bdrv_get_info(BlockNode *bs, BlockDriverInfo *bdi);

/* query-named-block-nodes entry (BlockDeviceInfo). */
json_t *bdrv_query_node_info(BlockNode *bs);
/* The whole query-named-block-nodes reply: every node, newest first; with
 * flat, images do not nest their backing images. */
json_t *bdrv_query_named_block_nodes(bool flat);
/* query-blockstats: with query_nodes, every node the monitor added (oldest
 * first), each with its counters and its file's as "parent"; else []. */
json_t *bdrv_query_blockstats(bool query_nodes);
/* x-debug-query-block-graph (XDbgBlockGraph): every node and every user of
 * one (exports, jobs) as vertices, every edge with its permissions. */
json_t *bdrv_query_block_graph(void);

/* ---- graph ---- */

/* Attaches child under parent with permissions from parent's child_perm. */
BlockChild *bdrv_attach_child(BlockNode *parent, BlockNode *child,
                              const char *name, unsigned role, Error **errp);
/* Attaches an external user (export, job) with explicit permissions. */
BlockChild *bdrv_root_attach_child(BlockNode *node, const char *name,
                                   const BlockChildClass *klass,
                                   void *opaque, uint64_t perm,
                                   uint64_t shared, Error **errp);
/* Detaches and drops the reference the edge held. */
void bdrv_detach_child(BlockChild *c);
bool bdrv_child_set_perm(BlockChild *c, uint64_t perm, uint64_t shared,
                         Error **errp);
/* Moves every parent edge of from (except those held by `except`'s node)
 * onto to, as one permission-checked step.  Main loop, inside a drain. */
bool bdrv_replace_node(BlockNode *from, BlockNode *to, Error **errp);
/* Re-derives and checks the permissions below bs after something they
 * depend on changed (bs->read_only): all of it, or nothing on refusal. */
bool bdrv_refresh_perms(BlockNode *bs, Error **errp);

/* Moves bs and its subtree to ctx (drained).  Refused if a parent or child
 * outside the subtree lives elsewhere and cannot follow. */
bool bdrv_set_aio_context(BlockNode *bs, AioContext *ctx, Error **errp);
/* Moves bs and every node connected to it (children and node parents) to
 * ctx, drained, with the users that may follow (change_ctx: NBD exports
 * without fixed-iothread, their live connections included): refused with
 * qsd's "Cannot change iothread of active block backend" when one of them
 * has a user that cannot (a fixed export, FUSE, a job), changing nothing.
 * Main loop; from a coroutine there it runs in a bottom half meanwhile.
 * A job's target joining its source's context, x-blockdev-set-iothread,
 * and a new node's child in another context (bdrv_attach_child). */
bool coroutine_mixed_fn bdrv_move_to_context(BlockNode *bs, AioContext *ctx,
                                             Error **errp);
/* A parent of bs is a BlockBackend in qemu's sense (is_backend):
 * x-blockdev-set-iothread wants force then. */
bool bdrv_has_backend(BlockNode *bs);

/* ---- requests: coroutine_fn, in c->node->ctx ---- */
int coroutine_fn bdrv_co_preadv(BlockChild *c, int64_t offset, int64_t bytes,
                                IOVector *qiov, unsigned flags);
int coroutine_fn bdrv_co_pwritev(BlockChild *c, int64_t offset,
                                 int64_t bytes, IOVector *qiov,
                                 unsigned flags);
int coroutine_fn bdrv_co_pwrite_zeroes(BlockChild *c, int64_t offset,
                                       int64_t bytes, unsigned flags);
int coroutine_fn bdrv_co_pdiscard(BlockChild *c, int64_t offset,
                                  int64_t bytes);
int coroutine_fn bdrv_co_flush(BlockNode *bs);
/* co_start_writeback of bs and of every node below it that is written
 * (not read-only, not cache.no-flush); a hint, nothing fails. */
void coroutine_fn bdrv_co_start_writeback(BlockNode *bs);
int coroutine_fn bdrv_co_block_status(BlockNode *bs, int64_t offset,
                                      int64_t bytes, int64_t *pnum,
                                      int64_t *map, BlockNode **file);
int coroutine_fn bdrv_co_truncate(BlockChild *c, int64_t size, Error **errp);
int64_t bdrv_getlength(BlockNode *bs);
/* block_resize: takes the resize permission as a user of its own (refused
 * while an export or a job keeps the size), drains bs and truncates it.
 * Main loop, not a coroutine. */
bool bdrv_resize(BlockNode *bs, int64_t size, Error **errp);
/* block-set-write-threshold: 0 clears it (any thread). */
void bdrv_set_write_threshold(BlockNode *bs, uint64_t threshold);

/* Synchronous wrappers for the main loop (outside coroutines): run the
 * request in a coroutine in the node's context and wait. */
int bdrv_pread(BlockChild *c, int64_t offset, int64_t bytes, void *buf,
               unsigned flags);
int bdrv_pwrite(BlockChild *c, int64_t offset, int64_t bytes,
                const void *buf, unsigned flags);
int bdrv_flush(BlockNode *bs);

/* ---- drained sections ---- */

/*
 * Stops new requests from external users reaching bs and its parents and
 * waits until in-flight requests on them reach zero.  Nested sections count.
 * Requests from users with postpone_requests_when_drained wait in arrival
 * order and run once the last section ends.  Main loop only.
 */
void bdrv_drained_begin(BlockNode *bs);
void bdrv_drained_end(BlockNode *bs);
bool bdrv_is_quiesced(BlockNode *bs);
/*
 * For a coroutine, which must not poll inside itself: starts
 * bdrv_drained_begin (begin) or bdrv_drained_end of bs from a bottom half
 * of the main loop, which then sets d->done and wakes the coroutine.  The
 * caller yields until d->done (others may enter it earlier).
 */
typedef struct BdrvCoDrain {
    BlockNode *bs;
    Coroutine *co;
    bool begin;
    bool done;
} BdrvCoDrain;
void coroutine_fn bdrv_co_drain_start(BdrvCoDrain *d, BlockNode *bs,
                                      bool begin);
void bdrv_drain_all_begin(void);
void bdrv_drain_all_end(void);

/*
 * A drained section over a set of nodes taken at its begin, with a
 * reference each, so that the end matches the begin even when the graph
 * changes meanwhile (a backup inserting its filter).  iothread_only: only
 * the nodes that live in an iothread (what a main-loop command must stop
 * before it touches state their thread changes).  Main loop only.
 */
typedef struct BdrvDrainedSet {
    BlockNode **nodes;
    size_t n;
} BdrvDrainedSet;
void bdrv_drained_set_begin(BdrvDrainedSet *set, bool iothread_only);
void bdrv_drained_set_end(BdrvDrainedSet *set);

/*
 * In-flight accounting for users that run work on a node outside the request
 * functions (jobs, exports).  dec kicks a drain waiting in the main loop.
 */
void bdrv_inc_in_flight(BlockNode *bs);
void bdrv_dec_in_flight(BlockNode *bs);
/*
 * Entry of a request from c's parent: counts it in c->node's in_flight.  If
 * c's class postpones requests while drained and the node is quiesced, the
 * coroutine waits (FIFO, on node->postponed) until the last drained section
 * ends.  Every call is paired with bdrv_dec_in_flight(c->node) — c->node as
 * it is after the call returns: a graph change may move c while it waits.
 */
void coroutine_fn bdrv_co_wait_unquiesced(BlockChild *c);

/* ---- layer-internal (src/block sources only) ---- */
extern const BlockChildClass bdrv_child_class_node;
/* A new edge under a quiesced node quiesces its parent as often as the node
 * is; a detaching edge gives that back. */
void bdrv_drain_child_attached(BlockChild *c);
void bdrv_drain_child_detaching(BlockChild *c);
/* c was moved from `from` to c->node: its parent's quiesce state follows. */
void bdrv_drain_child_moved(BlockChild *c, BlockNode *from);
/* After edges left bs: postponed requests of those edges retry on their
 * new node (the others wait on, in order). */
void bdrv_drain_wake_moved(BlockNode *bs);

#endif
