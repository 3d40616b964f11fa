/*
 * blkdebug: a filter that fails requests on demand, for testing error paths
 * (job on-error policies, export error replies).
 *
 *   parent (raw, qcow2, a job, an export)
 *        |
 *   [blkdebug]  rules: inject-error, set-state; a state number (starts at 1)
 *        |  "image"
 *   [file / null-co / ...]
 *
 * The model, as observed on qemu 7.2:
 *  - Rules hang off events.  When an event fires, every inject-error rule of
 *    that event whose state matches (0 = any) becomes *active*, replacing the
 *    previously active set (only if at least one matched: an event with no
 *    matching inject rule leaves the active set alone).  set-state rules of
 *    the event move the state; all rules of one event see the state as it
 *    was before the event.
 *  - Every request checks the active rules in definition order; the first
 *    whose iotype and sector match fails it with -errno.  An active rule
 *    stays active across requests (so a read_aio rule also fails the writes
 *    that follow, unless iotype says otherwise) until another event replaces
 *    the set; a `once` rule is deleted when it fires.
 *  - "none" fires once at open, so its rules are active from the start.
 *
 * Where qemu gets its events: read_aio/write_aio are emitted by the format
 * driver above blkdebug, flush_to_os/flush_to_disk by the flush path,
 * pwritev/pwritev_zero/pwritev_done by the request path of this node.  Our
 * block layer has no event hook, so this driver emits them itself on the
 * requests it receives, in qemu's order: read -> read_aio; write ->
 * write_aio, pwritev, (request), pwritev_done; write-zeroes -> pwritev_zero,
 * (request), pwritev_done; flush -> flush_to_os, flush_to_disk.  For the
 * usual stacks (raw or qcow2 data over blkdebug) that is what qemu does;
 * the difference is that read_aio/write_aio also fire when nothing above
 * blkdebug is a format driver (a job or export using it directly).  A
 * format driver marks its metadata I/O BLK_REQ_METADATA, which fires
 * neither (active rules still apply to it, as in qemu).  The other
 * format-internal events (l2_load, ...) are accepted but never fire.
 *
 * Threads: the rules and state are touched only by requests, which all run
 * in bs->ctx, and by open/close in the main loop while nothing runs.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/io.h"
#include "block/drivers/drivers.h"
#include "util/alloc.h"
#include "util/list.h"

/* BlkdebugEvent, in the QAPI order (names as clients spell them). */
enum {
    EV_READ_AIO = 9,
    EV_WRITE_AIO = 12,
    EV_FLUSH_TO_OS = 33,
    EV_FLUSH_TO_DISK = 34,
    EV_PWRITEV = 39,
    EV_PWRITEV_ZERO = 40,
    EV_PWRITEV_DONE = 41,
    EV_NONE = 47,
    EV__MAX = 48,
};

static const char *const event_names[] = {
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table",
    "l1_grow_activate_table", "l2_load", "l2_update", "l2_update_compressed",
    "l2_alloc_cow_read", "l2_alloc_write", "read_aio", "read_backing_aio",
    "read_compressed", "write_aio", "write_compressed", "vmstate_load",
    "vmstate_save", "cow_read", "cow_write", "reftable_load",
    "reftable_grow", "reftable_update", "refblock_load", "refblock_update",
    "refblock_update_part", "refblock_alloc", "refblock_alloc_hookup",
    "refblock_alloc_write", "refblock_alloc_write_blocks",
    "refblock_alloc_write_table", "refblock_alloc_switch_table",
    "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os",
    "flush_to_disk", "pwritev_rmw_head", "pwritev_rmw_after_head",
    "pwritev_rmw_tail", "pwritev_rmw_after_tail", "pwritev", "pwritev_zero",
    "pwritev_done", "empty_image_prepare", "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
    NULL,
};
_Static_assert(sizeof(event_names) / sizeof(event_names[0]) == EV__MAX + 1,
               "one name per event");

/* BlkdebugIOType */
enum {
    IO_READ, IO_WRITE, IO_WRITE_ZEROES, IO_DISCARD, IO_FLUSH,
    IO_BLOCK_STATUS,
};
static const char *const iotype_names[] = {
    "read", "write", "write-zeroes", "discard", "flush", "block-status", NULL,
};
/* Without iotype, a rule fails every kind of request but block status. */
#define IO_DEFAULT_MASK ((1u << IO_READ) | (1u << IO_WRITE) | \
                         (1u << IO_WRITE_ZEROES) | (1u << IO_DISCARD) | \
                         (1u << IO_FLUSH))

/* BlockPermission, for take-child-perms / unshare-child-perms */
static const char *const perm_names[] = {
    "consistent-read", "write", "write-unchanged", "resize", NULL,
};

typedef struct BlkdebugRule {
    bool set_state;          /* set-state rule, else inject-error */
    int64_t state;           /* state it applies in; 0 = any */
    /* inject-error */
    int error;               /* positive errno; <= 0 injects nothing */
    bool once;
    bool immediately;
    int64_t offset;          /* byte offset a request must cover; -1 any */
    unsigned iotype_mask;
    /* set-state */
    int64_t new_state;

    ListHead link;           /* in s->rules[event], definition order */
    ListHead active_link;    /* in s->active; self-linked when inactive */
} BlkdebugRule;

typedef struct BlkdebugState {
    BlockChild *image;
    int64_t state;
    ListHead rules[EV__MAX];
    ListHead active;         /* active inject rules, first match wins */

    uint64_t align;
    uint64_t max_transfer;
    uint64_t opt_write_zero, max_write_zero;
    uint64_t opt_discard, max_discard;
    uint64_t take_perms, unshare_perms;
} BlkdebugState;

static const ArgSpec inject_error_members[] = {
    { .name = "event", .type = ARG_ENUM, .enum_values = event_names },
    { .name = "state", .type = ARG_INT, .optional = true },
    { .name = "iotype", .type = ARG_ENUM, .optional = true,
      .enum_values = iotype_names },
    { .name = "errno", .type = ARG_INT, .optional = true },
    { .name = "sector", .type = ARG_INT, .optional = true },
    { .name = "once", .type = ARG_BOOL, .optional = true },
    { .name = "immediately", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

static const ArgSpec set_state_members[] = {
    { .name = "event", .type = ARG_ENUM, .enum_values = event_names },
    { .name = "state", .type = ARG_INT, .optional = true },
    { .name = "new_state", .type = ARG_INT },
    { .name = NULL },
};

static const ArgSpec inject_error_elem[] = {
    { .name = "inject-error", .type = ARG_OBJECT,
      .members = inject_error_members },
};
static const ArgSpec set_state_elem[] = {
    { .name = "set-state", .type = ARG_OBJECT, .members = set_state_members },
};
static const ArgSpec perm_elem[] = {
    { .name = "perm", .type = ARG_ENUM, .enum_values = perm_names },
};

/* Sizes are plain integers here: qemu parses them after the schema, with
 * its own messages (see check_size). */
static const ArgSpec blkdebug_options[] = {
    { .name = "image", .type = ARG_REF },
    { .name = "config", .type = ARG_STR, .optional = true },
    { .name = "align", .type = ARG_INT, .optional = true },
    { .name = "max-transfer", .type = ARG_INT, .optional = true },
    { .name = "opt-write-zero", .type = ARG_INT, .optional = true },
    { .name = "max-write-zero", .type = ARG_INT, .optional = true },
    { .name = "opt-discard", .type = ARG_INT, .optional = true },
    { .name = "max-discard", .type = ARG_INT, .optional = true },
    { .name = "inject-error", .type = ARG_ARRAY, .optional = true,
      .members = inject_error_elem },
    { .name = "set-state", .type = ARG_ARRAY, .optional = true,
      .members = set_state_elem },
    { .name = "take-child-perms", .type = ARG_ARRAY, .optional = true,
      .members = perm_elem },
    { .name = "unshare-child-perms", .type = ARG_ARRAY, .optional = true,
      .members = perm_elem },
    { .name = NULL },
};

/* What makes the node something other than "blkdebug::<file>". */
static const char *const blkdebug_strong[] = {
    "config", "align", "max-transfer", "opt-write-zero", "max-write-zero",
    "opt-discard", "max-discard", "inject-error", "set-state", NULL,
};

static int name_index(const char *const *names, const char *s)
{
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], s) == 0) {
            return i;
        }
    }
    return -1;
}

/* ---- rules ---- */

static void add_rule(BlkdebugState *s, int event, BlkdebugRule *r)
{
    list_init(&r->active_link);
    list_add_tail(&s->rules[event], &r->link);
}

static void remove_rule(BlkdebugRule *r)
{
    list_del(&r->link);
    if (!list_unlinked(&r->active_link)) {
        list_del(&r->active_link);
    }
    free(r);
}

static BlkdebugRule *new_rule(void)
{
    BlkdebugRule *r = bj_calloc(1, sizeof(*r));
    return r;
}

static void load_rules(BlkdebugState *s, json_t *opts)
{
    json_t *list, *e;
    size_t i;

    list = json_object_get(opts, "inject-error");
    json_array_foreach(list, i, e) {
        BlkdebugRule *r = new_rule();
        int64_t sector = arg_int(e, "sector", -1);
        const char *iotype = arg_str(e, "iotype", NULL);

        r->state = arg_int(e, "state", 0);
        r->error = (int)arg_int(e, "errno", EIO);
        r->once = arg_bool(e, "once", false);
        r->immediately = arg_bool(e, "immediately", false);
        /* Any negative sector other than -1 names no byte at all. */
        r->offset = sector == -1 ? -1
                    : sector < 0 || sector > INT64_MAX / 512 ? INT64_MIN
                    : sector * 512;
        r->iotype_mask = iotype ? 1u << name_index(iotype_names, iotype)
                                : IO_DEFAULT_MASK;
        add_rule(s, name_index(event_names, arg_str(e, "event", "")), r);
    }
    list = json_object_get(opts, "set-state");
    json_array_foreach(list, i, e) {
        BlkdebugRule *r = new_rule();

        r->set_state = true;
        r->state = arg_int(e, "state", 0);
        r->new_state = arg_int(e, "new_state", 0);
        add_rule(s, name_index(event_names, arg_str(e, "event", "")), r);
    }
}

static void free_rules(BlkdebugState *s)
{
    for (int ev = 0; ev < EV__MAX; ev++) {
        BlkdebugRule *r, *tmp;

        if (!s->rules[ev].next) {
            continue;        /* open failed before the lists existed */
        }
        list_for_each_entry_safe(r, tmp, &s->rules[ev], link) {
            remove_rule(r);
        }
    }
}

static void fire_event(BlkdebugState *s, int event)
{
    BlkdebugRule *r;
    bool replaced = false;
    bool state_set = false;
    int64_t new_state = s->state;

    list_for_each_entry(r, &s->rules[event], link) {
        if (r->state && r->state != s->state) {
            continue;
        }
        if (r->set_state) {
            /* Several matching set-state rules: the first defined wins. */
            if (!state_set) {
                new_state = r->new_state;
                state_set = true;
            }
            continue;
        }
        if (!replaced) {
            while (!list_empty(&s->active)) {
                list_del(s->active.next);
            }
            replaced = true;
        }
        list_add_tail(&s->active, &r->active_link);
    }
    s->state = new_state;
}

/*
 * The error the active rules inject into a request of iotype covering
 * [offset, offset + bytes), or 0.  Unless the rule says `immediately`, the
 * failure is reported from a later turn of the event loop, as an
 * asynchronous I/O error would be.
 */
static int coroutine_fn rule_check(BlockNode *bs, int64_t offset,
                                   int64_t bytes, int iotype)
{
    BlkdebugState *s = bs->opaque;
    BlkdebugRule *r, *hit = NULL;
    bool immediately;
    int error;

    list_for_each_entry(r, &s->active, active_link) {
        if (!(r->iotype_mask & (1u << iotype))) {
            continue;
        }
        if (r->offset == -1 ||
            (bytes > 0 && r->offset >= offset && r->offset - offset < bytes)) {
            hit = r;
            break;
        }
    }
    if (!hit || hit->error <= 0) {
        return 0;
    }
    error = hit->error;
    immediately = hit->immediately;
    if (hit->once) {
        remove_rule(hit);
    }
    if (!immediately) {
        aio_co_schedule(bs->ctx, coroutine_self());
        coroutine_yield();
    }
    return -error;
}

/* ---- the legacy rule file (config) ---- */

/*
 * The INI-like file qemu's blkdebug reads: "[inject-error]" / "[set-state]"
 * groups of  key = "value"  lines, '#' comments.  Each group becomes one
 * more rule object, ahead of the rules given as options; values are typed
 * here, with qemu's words for this path.
 */
typedef struct ConfigRead {
    const char *path;
    char *text;
    int err;
} ConfigRead;

/* Thread pool: reading a file may block. */
static int config_read_worker(void *opaque)
{
    ConfigRead *c = opaque;
    FILE *f = fopen(c->path, "r");
    size_t len = 0, cap = 4096, n;

    if (!f) {
        c->err = errno;
        return -c->err;
    }
    c->text = bj_malloc(cap + 1);
    while ((n = fread(c->text + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            c->text = bj_realloc(c->text, cap + 1);
        }
    }
    c->err = ferror(f) ? EIO : 0;
    fclose(f);
    c->text[len] = '\0';
    return -c->err;
}

static bool config_value(json_t *rule, bool set_state, const char *key,
                         const char *value, Error **errp)
{
    static const char *const numbers[] = {
        "state", "errno", "sector", "new_state", NULL,
    };
    static const char *const inject_keys[] = {
        "event", "state", "iotype", "errno", "sector", "once", "immediately",
        NULL,
    };
    static const char *const set_state_keys[] = {
        "event", "state", "new_state", NULL,
    };
    char *end;

    if (name_index(set_state ? set_state_keys : inject_keys, key) < 0) {
        error_setg(errp, "Invalid parameter '%s'", key);
        return false;
    }
    if (strcmp(key, "event") == 0) {
        if (name_index(event_names, value) < 0) {
            error_setg(errp, "invalid parameter value: %s", value);
            return false;
        }
        json_object_set_new(rule, key, json_string(value));
    } else if (strcmp(key, "iotype") == 0) {
        if (name_index(iotype_names, value) < 0) {
            error_setg(errp, "Parameter 'iotype' does not accept value '%s'",
                       value);
            return false;
        }
        json_object_set_new(rule, key, json_string(value));
    } else if (name_index(numbers, key) >= 0) {
        long long v;
        errno = 0;
        v = strtoll(value, &end, 0);
        if (!value[0] || *end || errno) {
            error_setg(errp, "Parameter '%s' expects a number", key);
            return false;
        }
        json_object_set_new(rule, key, json_integer(v));
    } else {
        bool b;
        if (!strcmp(value, "on") || !strcmp(value, "yes") ||
            !strcmp(value, "true") || !strcmp(value, "y")) {
            b = true;
        } else if (!strcmp(value, "off") || !strcmp(value, "no") ||
                   !strcmp(value, "false") || !strcmp(value, "n")) {
            b = false;
        } else {
            error_setg(errp, "Parameter '%s' expects 'on' or 'off'", key);
            return false;
        }
        json_object_set_new(rule, key, json_boolean(b));
    }
    return true;
}

/* Parses text into rule objects appended to inject / set_state. */
static bool config_parse(char *text, json_t *inject, json_t *set_state,
                         Error **errp)
{
    json_t *rule = NULL;
    bool in_set_state = false;
    char *save = NULL;

    for (char *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char group[64], key[64], value[1024];

        if (line[0] == '#') {
            continue;
        }
        if (sscanf(line, " [%63[^]\" ]", group) == 1 && strchr(line, ']')) {
            if (strcmp(group, "inject-error") &&
                strcmp(group, "set-state")) {
                error_setg(errp, "There is no option group '%s'", group);
                return false;
            }
            in_set_state = strcmp(group, "set-state") == 0;
            rule = json_object();
            json_array_append_new(in_set_state ? set_state : inject, rule);
            continue;
        }
        if (sscanf(line, " %63s = \"%1023[^\"]\"", key, value) == 2) {
            if (!rule) {
                error_setg(errp, "no group defined");
                return false;
            }
            if (!config_value(rule, in_set_state, key, value, errp)) {
                return false;
            }
            continue;
        }
        if (strspn(line, " \t\r") == strlen(line)) {
            continue;
        }
        error_setg(errp, "invalid parameter value: ");
        return false;
    }
    return true;
}

/*
 * opts with the rules of the config file (if any) put ahead of its own:
 * a new reference the caller drops, or NULL with errp set.
 */
static json_t *coroutine_fn with_config_rules(json_t *opts, Error **errp)
{
    ConfigRead c = { .path = arg_str(opts, "config", NULL) };
    json_t *out, *inject, *set_state, *e;
    size_t i;
    bool ok;

    if (!c.path) {
        return json_incref(opts);
    }
    if (thread_pool_co_run(config_read_worker, &c) < 0) {
        free(c.text);
        error_setg_errno(errp, c.err, "Could not read blkdebug config file");
        return NULL;
    }
    inject = json_array();
    set_state = json_array();
    ok = config_parse(c.text, inject, set_state, errp);
    free(c.text);
    json_array_foreach(inject, i, e) {
        if (ok && !json_object_get(e, "event")) {
            error_setg(errp, "Missing event name for rule");
            ok = false;
        }
    }
    json_array_foreach(set_state, i, e) {
        if (ok && !json_object_get(e, "event")) {
            error_setg(errp, "Missing event name for rule");
            ok = false;
        }
    }
    if (!ok) {
        json_decref(inject);
        json_decref(set_state);
        return NULL;
    }
    json_array_extend(inject, json_object_get(opts, "inject-error"));
    json_array_extend(set_state, json_object_get(opts, "set-state"));
    out = json_copy(opts);
    json_object_set_new(out, "inject-error", inject);
    json_object_set_new(out, "set-state", set_state);
    return out;
}

/* ---- open / close ---- */

static bool check_size(json_t *opts, const char *name, uint64_t align,
                       uint64_t *out, Error **errp)
{
    int64_t v = arg_int(opts, name, 0);

    if (v < 0) {
        error_setg(errp, "Parameter '%s' expects a non-negative number "
                   "below 2^64", name);
        return false;
    }
    if (v && (v >= INT_MAX || (align && v % (int64_t)align))) {
        error_setg(errp, "Cannot meet constraints with %s %" PRId64, name, v);
        return false;
    }
    *out = (uint64_t)v;
    return true;
}

static uint64_t perm_mask(json_t *list)
{
    uint64_t mask = 0;
    json_t *e;
    size_t i;

    json_array_foreach(list, i, e) {
        mask |= 1ull << name_index(perm_names, json_string_value(e));
    }
    return mask;
}

static int coroutine_fn blkdebug_co_open(BlockNode *bs, json_t *opts,
                                         Error **errp)
{
    BlkdebugState *s = bs->opaque;
    json_t *rules;
    uint64_t align;
    int64_t a;

    for (int ev = 0; ev < EV__MAX; ev++) {
        list_init(&s->rules[ev]);
    }
    list_init(&s->active);
    rules = with_config_rules(opts, errp);
    if (!rules) {
        return -EINVAL;
    }
    load_rules(s, rules);
    json_decref(rules);
    s->take_perms = perm_mask(json_object_get(opts, "take-child-perms"));
    s->unshare_perms = perm_mask(json_object_get(opts, "unshare-child-perms"));

    s->image = bdrv_open_child(bs, opts, "image",
                               BLK_ROLE_DATA | BLK_ROLE_FILTERED |
                               BLK_ROLE_PRIMARY, false, errp);
    if (!s->image) {
        free_rules(s);
        return -EINVAL;
    }

    a = arg_int(opts, "align", 0);
    if (a < 0) {
        error_setg(errp, "Parameter 'align' expects a non-negative number "
                   "below 2^64");
        goto fail;
    }
    if (a && (a >= INT_MAX || (a & (a - 1)))) {
        error_setg(errp, "Cannot meet constraints with align %" PRId64, a);
        goto fail;
    }
    s->align = (uint64_t)a;
    align = s->align;
    if (align < s->image->node->bl.request_alignment) {
        align = s->image->node->bl.request_alignment;
    }
    if (!check_size(opts, "max-transfer", align, &s->max_transfer, errp) ||
        !check_size(opts, "opt-write-zero", align, &s->opt_write_zero,
                    errp) ||
        !check_size(opts, "max-write-zero",
                    s->opt_write_zero > align ? s->opt_write_zero : align,
                    &s->max_write_zero, errp) ||
        !check_size(opts, "opt-discard", align, &s->opt_discard, errp) ||
        !check_size(opts, "max-discard",
                    s->opt_discard > align ? s->opt_discard : align,
                    &s->max_discard, errp)) {
        goto fail;
    }

    s->state = 1;
    fire_event(s, EV_NONE);
    snprintf(bs->filename, sizeof(bs->filename), "%s",
             s->image->node->filename);
    return 0;

fail:
    free_rules(s);
    /* The layer detaches the image child. */
    return -EINVAL;
}

static void blkdebug_close(BlockNode *bs)
{
    free_rules(bs->opaque);
}

static void blkdebug_refresh_limits(BlockNode *bs)
{
    BlkdebugState *s = bs->opaque;

    bs->bl = s->image->node->bl;
    if (s->align) {
        bs->bl.request_alignment = (uint32_t)s->align;
    }
    if (s->max_transfer) {
        bs->bl.max_transfer = (uint32_t)s->max_transfer;
    }
    if (s->opt_write_zero) {
        bs->bl.pwrite_zeroes_alignment = (uint32_t)s->opt_write_zero;
    }
    if (s->opt_discard) {
        bs->bl.pdiscard_alignment = (uint32_t)s->opt_discard;
    }
}

static void blkdebug_child_perm(BlockNode *bs, BlockChild *c, unsigned role,
                                uint64_t parent_perm, uint64_t parent_shared,
                                uint64_t *perm, uint64_t *shared)
{
    BlkdebugState *s = bs->opaque;

    /* A filter passes its parents' needs through, plus what it is told to
     * take or withhold (to provoke permission conflicts in tests). */
    *perm = (parent_perm | s->take_perms) & BLK_PERM_ALL;
    *shared = bs->force_share ? BLK_PERM_ALL : parent_shared;
    *shared &= ~s->unshare_perms & BLK_PERM_ALL;
}

/* ---- requests ---- */

/* read_aio/write_aio: guest data only (a format's metadata I/O is marked
 * BLK_REQ_METADATA and fires none, as in qemu). */
static void fire_data_event(BlkdebugState *s, unsigned flags, int event)
{
    if (!(flags & BLK_REQ_METADATA)) {
        fire_event(s, event);
    }
}

static int coroutine_fn blkdebug_co_preadv(BlockNode *bs, int64_t offset,
                                           int64_t bytes, IOVector *qiov,
                                           unsigned flags)
{
    BlkdebugState *s = bs->opaque;

    fire_data_event(s, flags, EV_READ_AIO);
    int ret = rule_check(bs, offset, bytes, IO_READ);
    return ret ? ret : bdrv_co_preadv(s->image, offset, bytes, qiov, flags);
}

static int coroutine_fn blkdebug_co_pwritev(BlockNode *bs, int64_t offset,
                                            int64_t bytes, IOVector *qiov,
                                            unsigned flags)
{
    BlkdebugState *s = bs->opaque;
    int ret;

    fire_data_event(s, flags, EV_WRITE_AIO);
    fire_event(s, EV_PWRITEV);
    ret = rule_check(bs, offset, bytes, IO_WRITE);
    if (!ret) {
        ret = bdrv_co_pwritev(s->image, offset, bytes, qiov, flags);
    }
    fire_event(s, EV_PWRITEV_DONE);
    return ret;
}

/* The request alignment, or the operation's preferred one if larger. */
static int64_t op_alignment(BlockNode *bs, uint32_t preferred)
{
    return preferred > bs->bl.request_alignment ? preferred
                                                : bs->bl.request_alignment;
}

static int coroutine_fn blkdebug_co_pwrite_zeroes(BlockNode *bs,
                                                  int64_t offset,
                                                  int64_t bytes,
                                                  unsigned flags)
{
    BlkdebugState *s = bs->opaque;
    int ret;

    /* Like qemu, refuse pieces smaller than the preferred alignment, so the
     * caller's fallback to plain writes gets exercised. */
    if (bytes < op_alignment(bs, bs->bl.pwrite_zeroes_alignment)) {
        return -ENOTSUP;
    }
    fire_event(s, EV_PWRITEV_ZERO);
    ret = rule_check(bs, offset, bytes, IO_WRITE_ZEROES);
    if (!ret) {
        ret = bdrv_co_pwrite_zeroes(s->image, offset, bytes, flags);
    }
    fire_event(s, EV_PWRITEV_DONE);
    return ret;
}

static int coroutine_fn blkdebug_co_pdiscard(BlockNode *bs, int64_t offset,
                                             int64_t bytes)
{
    BlkdebugState *s = bs->opaque;
    int ret;

    /* Discard is advisory: small pieces are silently dropped. */
    if (bytes < op_alignment(bs, bs->bl.pdiscard_alignment)) {
        return 0;
    }
    ret = rule_check(bs, offset, bytes, IO_DISCARD);
    if (ret) {
        return ret;
    }
    return bdrv_co_pdiscard(s->image, offset, bytes);
}

static int coroutine_fn blkdebug_co_flush(BlockNode *bs)
{
    BlkdebugState *s = bs->opaque;

    fire_event(s, EV_FLUSH_TO_OS);
    fire_event(s, EV_FLUSH_TO_DISK);
    /* The request path flushes the image child after us. */
    return rule_check(bs, 0, 0, IO_FLUSH);
}

static int coroutine_fn blkdebug_co_block_status(BlockNode *bs,
                                                 int64_t offset,
                                                 int64_t bytes, int64_t *pnum,
                                                 int64_t *map,
                                                 BlockNode **file)
{
    BlkdebugState *s = bs->opaque;
    int ret;

    ret = rule_check(bs, offset, bytes, IO_BLOCK_STATUS);
    if (ret) {
        return ret;
    }
    return bdrv_co_block_status(s->image->node, offset, bytes, pnum, map,
                                file);
}

static int coroutine_fn blkdebug_co_truncate(BlockNode *bs, int64_t size,
                                             Error **errp)
{
    BlkdebugState *s = bs->opaque;

    return bdrv_co_truncate(s->image, size, errp);
}

static int64_t coroutine_fn blkdebug_co_getlength(BlockNode *bs)
{
    BlkdebugState *s = bs->opaque;

    return bdrv_getlength(s->image->node);
}

const BlockDriver bdrv_blkdebug = {
    .name = "blkdebug",
    .state_size = sizeof(BlkdebugState),
    .options = blkdebug_options,
    .strong_options = blkdebug_strong,
    .is_filter = true,
    .co_open = blkdebug_co_open,
    .close = blkdebug_close,
    .co_preadv = blkdebug_co_preadv,
    .co_pwritev = blkdebug_co_pwritev,
    .co_pwrite_zeroes = blkdebug_co_pwrite_zeroes,
    .co_pdiscard = blkdebug_co_pdiscard,
    .co_flush = blkdebug_co_flush,
    .co_block_status = blkdebug_co_block_status,
    .co_truncate = blkdebug_co_truncate,
    .co_getlength = blkdebug_co_getlength,
    .child_perm = blkdebug_child_perm,
    .refresh_limits = blkdebug_refresh_limits,
};
