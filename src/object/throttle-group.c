/*
 * throttle-group objects and their shared budget (see throttle-group.h).
 * The validation follows qsd 7.2's messages word for word (recorded by
 * running qemu-storage-daemon), the bucket semantics the QAPI description
 * of ThrottleLimits.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "aio/aio.h"
#include "object/object-int.h"
#include "object/throttle-group.h"
#include "util/alloc.h"

#define THROTTLE_VALUE_MAX 1000000000000000LL
#define BURST_LENGTH_MAX 4294967295LL

enum { B_BPS_TOTAL, B_BPS_READ, B_BPS_WRITE,
       B_IOPS_TOTAL, B_IOPS_READ, B_IOPS_WRITE, B__MAX };

static const char *const bucket_names[B__MAX] = {
    "bps-total", "bps-read", "bps-write",
    "iops-total", "iops-read", "iops-write",
};

typedef struct Bucket {
    int64_t avg, max;
    uint64_t burst_length;
    double level, burst_level;     /* filled by what passed, in units */
} Bucket;

typedef struct ThrottleConfig {
    Bucket b[B__MAX];
    uint64_t iops_size;
} ThrottleConfig;

typedef struct Waiter {
    Coroutine *co;
    ThrottleMember *m;
    AioTimer *timer;               /* the head's, in co's context */
    ThrottleGroup *g;
    bool woken;
    ListHead link;
} Waiter;

struct ThrottleGroup {
    Object base;
    pthread_mutex_t lock;
    ThrottleConfig cfg;
    int64_t last_leak_ns;
    ListHead queue[2];             /* Waiter: reads, writes */
};

/* ---- properties ---- */

/* x-bps-total, x-bps-total-max, x-bps-total-max-length, ... x-iops-size */
#define XPROP(n) { .name = "x-" n, .type = ARG_INT, .optional = true }
#define LPROP(n) { .name = n, .type = ARG_INT, .optional = true }
#define BUCKET_PROPS(P, b) P(b), P(b "-max"), P(b "-max-length")

static const ArgSpec limits_members[] = {
    BUCKET_PROPS(LPROP, "bps-total"), BUCKET_PROPS(LPROP, "bps-read"),
    BUCKET_PROPS(LPROP, "bps-write"), BUCKET_PROPS(LPROP, "iops-total"),
    BUCKET_PROPS(LPROP, "iops-read"), BUCKET_PROPS(LPROP, "iops-write"),
    LPROP("iops-size"),
    { .name = NULL },
};

static const ArgSpec throttle_group_props[] = {
    BUCKET_PROPS(XPROP, "bps-total"), BUCKET_PROPS(XPROP, "bps-read"),
    BUCKET_PROPS(XPROP, "bps-write"), BUCKET_PROPS(XPROP, "iops-total"),
    BUCKET_PROPS(XPROP, "iops-read"), BUCKET_PROPS(XPROP, "iops-write"),
    XPROP("iops-size"),
    { .name = "limits", .type = ARG_OBJECT, .optional = true,
      .members = limits_members },
    { .name = NULL },
};

/* A qom-set value, checked as the "limits" property (qsd's messages). */
static bool check_limits(json_t *value, Error **errp)
{
    static const ArgSpec spec[] = {
        { .name = "limits", .type = ARG_OBJECT, .members = limits_members },
        { .name = NULL },
    };
    json_t *wrap = json_pack("{sO}", "limits", value);
    bool ok = argspec_check(wrap, spec, NULL, false, errp);

    json_decref(wrap);
    return ok;
}

static void config_default(ThrottleConfig *c)
{
    memset(c, 0, sizeof(*c));
    for (int i = 0; i < B__MAX; i++) {
        c->b[i].burst_length = 1;
    }
}

/* The x-NAME properties of props (already typed) into c. */
static bool apply_x_props(ThrottleConfig *c, json_t *props, Error **errp)
{
    char name[64];

    for (int i = 0; i < B__MAX; i++) {
        static const char *const sfx[] = { "", "-max", "-max-length" };
        for (int k = 0; k < 3; k++) {
            json_t *v;
            int64_t n;

            snprintf(name, sizeof(name), "x-%s%s", bucket_names[i], sfx[k]);
            v = json_object_get(props, name);
            if (!v) {
                continue;
            }
            n = json_integer_value(v);
            if (n < 0) {
                error_setg(errp, "Property values cannot be negative");
                return false;
            }
            if (k == 2 && n > BURST_LENGTH_MAX) {
                /* sic: qsd's text has no space in "therange" */
                error_setg(errp, "%s value must be in therange [0, %lld]",
                           name, BURST_LENGTH_MAX);
                return false;
            }
            if (k == 0) {
                c->b[i].avg = n;
            } else if (k == 1) {
                c->b[i].max = n;
            } else {
                c->b[i].burst_length = (uint64_t)n;
            }
        }
    }
    if (json_object_get(props, "x-iops-size")) {
        int64_t n = json_integer_value(json_object_get(props, "x-iops-size"));
        if (n < 0) {
            error_setg(errp, "Property values cannot be negative");
            return false;
        }
        c->iops_size = (uint64_t)n;
    }
    return true;
}

/* The members a ThrottleLimits object sets, over c (others stay). */
static bool apply_limits(ThrottleConfig *c, json_t *lim, Error **errp)
{
    char name[64];

    for (int i = 0; i < B__MAX; i++) {
        json_t *v;

        v = json_object_get(lim, bucket_names[i]);
        if (v) {
            c->b[i].avg = json_integer_value(v);
        }
        snprintf(name, sizeof(name), "%s-max", bucket_names[i]);
        v = json_object_get(lim, name);
        if (v) {
            c->b[i].max = json_integer_value(v);
        }
        snprintf(name, sizeof(name), "%s-max-length", bucket_names[i]);
        v = json_object_get(lim, name);
        if (v) {
            if (json_integer_value(v) > BURST_LENGTH_MAX) {
                error_setg(errp, "%s value must be in the range [0, %lld]",
                           name, BURST_LENGTH_MAX);
                return false;
            }
            c->b[i].burst_length = (uint64_t)json_integer_value(v);
        }
    }
    if (json_object_get(lim, "iops-size")) {
        c->iops_size =
            (uint64_t)json_integer_value(json_object_get(lim, "iops-size"));
    }
    return true;
}

/* qsd's checks of a whole configuration, in its order. */
static bool config_valid(const ThrottleConfig *c, Error **errp)
{
    const Bucket *b = c->b;

    if ((b[B_BPS_TOTAL].avg && (b[B_BPS_READ].avg || b[B_BPS_WRITE].avg)) ||
        (b[B_IOPS_TOTAL].avg && (b[B_IOPS_READ].avg || b[B_IOPS_WRITE].avg)) ||
        (b[B_BPS_TOTAL].max && (b[B_BPS_READ].max || b[B_BPS_WRITE].max)) ||
        (b[B_IOPS_TOTAL].max &&
         (b[B_IOPS_READ].max || b[B_IOPS_WRITE].max))) {
        error_setg(errp, "bps/iops/max total values and read/write values "
                   "cannot be used at the same time");
        return false;
    }
    for (int i = 0; i < B__MAX; i++) {
        const Bucket *k = &b[i];

        if (k->avg < 0 || k->max < 0 || k->avg > THROTTLE_VALUE_MAX ||
            k->max > THROTTLE_VALUE_MAX) {
            error_setg(errp, "bps/iops/max values must be within [0, %lld]",
                       THROTTLE_VALUE_MAX);
            return false;
        }
        if (k->burst_length == 0) {
            error_setg(errp, "the burst length cannot be 0");
            return false;
        }
        if (k->burst_length > 1 && !k->max) {
            error_setg(errp, "burst length set without burst rate");
            return false;
        }
        if (k->max && !k->avg) {
            error_setg(errp, "bps_max/iops_max require corresponding "
                       "bps/iops values");
            return false;
        }
        if (k->max && k->max < k->avg) {
            error_setg(errp, "bps_max/iops_max cannot be lower than bps/iops");
            return false;
        }
        if (k->max && k->burst_length > (uint64_t)(THROTTLE_VALUE_MAX /
                                                   k->max)) {
            error_setg(errp, "burst length too high for this burst rate");
            return false;
        }
    }
    if (c->iops_size && !b[B_IOPS_TOTAL].avg && !b[B_IOPS_READ].avg &&
        !b[B_IOPS_WRITE].avg) {
        error_setg(errp, "iops size requires an iops value to be set");
        return false;
    }
    return true;
}

static Object *throttle_group_create(const char *id, json_t *props,
                                     Error **errp)
{
    ThrottleConfig c;
    json_t *lim = json_object_get(props, "limits");
    ThrottleGroup *g;

    (void)id;
    config_default(&c);
    if (!apply_x_props(&c, props, errp) ||
        (lim && !apply_limits(&c, lim, errp)) || !config_valid(&c, errp)) {
        return NULL;
    }
    g = bj_calloc(1, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    g->cfg = c;
    g->last_leak_ns = clock_ns();
    list_init(&g->queue[0]);
    list_init(&g->queue[1]);
    return &g->base;
}

static void throttle_group_destroy(Object *obj)
{
    ThrottleGroup *g = container_of(obj, ThrottleGroup, base);

    pthread_mutex_destroy(&g->lock);
    free(g);
}

static json_t *limits_json(const ThrottleConfig *c)
{
    json_t *o = json_object();
    char name[64];

    for (int i = 0; i < B__MAX; i++) {
        json_object_set_new(o, bucket_names[i],
                            json_integer(c->b[i].avg));
        snprintf(name, sizeof(name), "%s-max", bucket_names[i]);
        json_object_set_new(o, name, json_integer(c->b[i].max));
        snprintf(name, sizeof(name), "%s-max-length", bucket_names[i]);
        json_object_set_new(o, name,
                            json_integer((json_int_t)c->b[i].burst_length));
    }
    json_object_set_new(o, "iops-size", json_integer((json_int_t)
                                                     c->iops_size));
    return o;
}

static bool is_x_prop(const char *name)
{
    for (unsigned i = 0; throttle_group_props[i].name; i++) {
        if (!strncmp(name, "x-", 2) &&
            !strcmp(throttle_group_props[i].name, name)) {
            return true;
        }
    }
    return false;
}

static json_t *throttle_group_prop_get(Object *obj, const char *name)
{
    ThrottleGroup *g = container_of(obj, ThrottleGroup, base);
    json_t *lim, *v;

    if (strcmp(name, "limits") && !is_x_prop(name)) {
        return NULL;
    }
    pthread_mutex_lock(&g->lock);
    lim = limits_json(&g->cfg);
    pthread_mutex_unlock(&g->lock);
    if (!strcmp(name, "limits")) {
        return lim;
    }
    v = json_incref(json_object_get(lim, name + 2));
    json_decref(lim);
    return v;
}

static void wake_heads_locked(ThrottleGroup *g, Coroutine **wake, int *n);
static void wake_all(Coroutine **wake, int n);

/* qom-set: "limits" changes live (waiting requests are re-timed at once);
 * the x- properties only at creation, as in qsd. */
static int throttle_group_prop_set(Object *obj, const char *name,
                                   json_t *value, Error **errp)
{
    ThrottleGroup *g = container_of(obj, ThrottleGroup, base);
    Coroutine *wake[2];
    ThrottleConfig c;
    int n = 0;

    if (is_x_prop(name)) {
        error_setg(errp, "Property cannot be set after initialization");
        return -1;
    }
    if (strcmp(name, "limits")) {
        return 0;
    }
    if (!check_limits(value, errp)) {
        return -1;
    }
    pthread_mutex_lock(&g->lock);
    c = g->cfg;
    pthread_mutex_unlock(&g->lock);
    if (!apply_limits(&c, value, errp) || !config_valid(&c, errp)) {
        return -1;
    }
    pthread_mutex_lock(&g->lock);
    for (int i = 0; i < B__MAX; i++) {
        c.b[i].level = g->cfg.b[i].level;
        c.b[i].burst_level = g->cfg.b[i].burst_level;
    }
    g->cfg = c;
    wake_heads_locked(g, wake, &n);
    pthread_mutex_unlock(&g->lock);
    wake_all(wake, n);
    return 1;
}

/* qsd 7.2's order (its hash table's). */
static const QomProp throttle_group_qom[] = {
    { "x-bps-write-max-length", "int" }, { "x-iops-total-max-length", "int" },
    { "x-iops-size", "int" }, { "limits", "ThrottleLimits" },
    { "x-bps-total", "int" }, { "x-iops-read-max-length", "int" },
    { "x-bps-write", "int" }, { "x-iops-write-max-length", "int" },
    { "x-bps-read-max", "int" }, { "x-iops-read-max", "int" },
    { "x-bps-total-max", "int" }, { "x-bps-read-max-length", "int" },
    { "x-iops-read", "int" }, { "x-bps-read", "int" },
    { "x-bps-write-max", "int" }, { "x-iops-total-max", "int" },
    { "x-iops-total", "int" }, { "x-iops-write", "int" },
    { "x-bps-total-max-length", "int" }, { "x-iops-write-max", "int" },
    { NULL, NULL },
};

const ObjectType throttle_group_type = {
    .name = "throttle-group",
    .qom_props = throttle_group_qom,
    .props = throttle_group_props,
    .create = throttle_group_create,
    .destroy = throttle_group_destroy,
    .prop_get = throttle_group_prop_get,
    .prop_set = throttle_group_prop_set,
};

/* ---- users ---- */

ThrottleGroup *throttle_group_get(const char *id, Error **errp)
{
    Object *o = object_find_type(id, &throttle_group_type);

    if (!o) {
        error_setg(errp, "Throttle group '%s' does not exist", id);
        return NULL;
    }
    object_use(o);
    return container_of(o, ThrottleGroup, base);
}

void throttle_group_put(ThrottleGroup *g)
{
    object_unuse(&g->base);
}

const char *throttle_group_name(ThrottleGroup *g)
{
    return g->base.id;
}

/* ---- the budget ---- */

static double dmax(double a, double b)
{
    return a > b ? a : b;
}

/* Drains every bucket by the time since the last call (lock held). */
static void leak_locked(ThrottleGroup *g, int64_t now)
{
    double dt = (double)(now - g->last_leak_ns) / 1e9;

    if (dt <= 0) {
        return;
    }
    g->last_leak_ns = now;
    for (int i = 0; i < B__MAX; i++) {
        Bucket *b = &g->cfg.b[i];
        if (!b->avg) {
            b->level = b->burst_level = 0;
            continue;
        }
        b->level = dmax(0, b->level - (double)b->avg * dt);
        b->burst_level = b->max ?
            dmax(0, b->burst_level - (double)b->max * dt) : 0;
    }
}

static bool bucket_applies(int i, bool write)
{
    return i == B_BPS_TOTAL || i == B_IOPS_TOTAL ||
           i == (write ? B_BPS_WRITE : B_BPS_READ) ||
           i == (write ? B_IOPS_WRITE : B_IOPS_READ);
}

/* How long (ns) until a request in direction write may pass; 0: now. */
static int64_t wait_ns_locked(ThrottleGroup *g, bool write)
{
    double wait = 0;
    bool blocked = false;

    for (int i = 0; i < B__MAX; i++) {
        const Bucket *b = &g->cfg.b[i];
        double cap, w;

        if (!b->avg || !bucket_applies(i, write)) {
            continue;
        }
        cap = b->max ? (double)b->max * (double)b->burst_length
                     : (double)b->avg / 10;
        if (b->level >= cap) {
            w = (b->level - cap) / (double)b->avg;
            wait = dmax(wait, w);
            blocked = true;
        }
        if (b->max && b->burst_level >= (double)b->max / 10) {
            w = (b->burst_level - (double)b->max / 10) / (double)b->max;
            wait = dmax(wait, w);
            blocked = true;
        }
    }
    /* A little past the moment the level is below the capacity. */
    return blocked ? (int64_t)(wait * 1e9) + 1000 : 0;
}

static void account_locked(ThrottleGroup *g, bool write, int64_t bytes)
{
    for (int i = 0; i < B__MAX; i++) {
        Bucket *b = &g->cfg.b[i];
        double units;

        if (!b->avg || !bucket_applies(i, write)) {
            continue;
        }
        if (i >= B_IOPS_TOTAL) {
            units = 1;
            if (g->cfg.iops_size && (uint64_t)bytes > g->cfg.iops_size) {
                units = (double)bytes / (double)g->cfg.iops_size;
            }
        } else {
            units = (double)bytes;
        }
        b->level += units;
        if (b->max) {
            b->burst_level += units;
        }
    }
}

/* Marks w woken and notes its coroutine for waking after unlock. */
static void note_wake(Waiter *w, Coroutine **wake, int *n)
{
    if (!w->woken) {
        w->woken = true;
        wake[(*n)++] = w->co;
    }
}

static void wake_heads_locked(ThrottleGroup *g, Coroutine **wake, int *n)
{
    for (int d = 0; d < 2; d++) {
        if (!list_empty(&g->queue[d])) {
            note_wake(list_first_entry(&g->queue[d], Waiter, link), wake, n);
        }
    }
}

static void wake_all(Coroutine **wake, int n)
{
    for (int i = 0; i < n; i++) {
        aio_co_wake(wake[i]);
    }
}

static void waiter_timer_cb(void *opaque)
{
    Waiter *w = opaque;
    Coroutine *wake[1];
    int n = 0;

    pthread_mutex_lock(&w->g->lock);
    note_wake(w, wake, &n);
    pthread_mutex_unlock(&w->g->lock);
    wake_all(wake, n);
}

void coroutine_fn throttle_group_co_wait(ThrottleGroup *g, ThrottleMember *m,
                                         bool write, int64_t bytes)
{
    ListHead *q = &g->queue[write];
    Waiter w = { .co = coroutine_self(), .m = m, .g = g };
    bool queued = false;

    pthread_mutex_lock(&g->lock);
    for (;;) {
        bool head = !queued ? list_empty(q)
                            : list_first_entry(q, Waiter, link) == &w;
        int64_t now = clock_ns(), delay = 0;

        if (head || atomic_load(&m->drained)) {
            leak_locked(g, now);
            delay = atomic_load(&m->drained) ? 0 : wait_ns_locked(g, write);
            if (delay == 0) {
                break;
            }
        }
        if (!queued) {
            list_add_tail(q, &w.link);
            queued = true;
        }
        if (head) {
            if (!w.timer) {
                w.timer = aio_timer_new(coroutine_context(w.co),
                                        waiter_timer_cb, &w);
            }
            aio_timer_mod(w.timer, now + delay);
        }
        w.woken = false;
        pthread_mutex_unlock(&g->lock);
        coroutine_yield();
        if (w.timer) {
            aio_timer_del(w.timer);
        }
        pthread_mutex_lock(&g->lock);
    }
    account_locked(g, write, bytes);
    if (queued) {
        Coroutine *wake[1];
        int n = 0;
        bool was_head = list_first_entry(q, Waiter, link) == &w;

        list_del(&w.link);
        if (was_head && !list_empty(q)) {
            note_wake(list_first_entry(q, Waiter, link), wake, &n);
        }
        pthread_mutex_unlock(&g->lock);
        wake_all(wake, n);
    } else {
        pthread_mutex_unlock(&g->lock);
    }
    if (w.timer) {
        aio_timer_free(w.timer);
    }
}

void throttle_group_member_drained(ThrottleGroup *g, ThrottleMember *m,
                                   bool drained)
{
    Coroutine **wake;
    Waiter *w;
    int n = 0, cap = 0;

    atomic_store(&m->drained, drained);
    if (!drained) {
        return;
    }
    pthread_mutex_lock(&g->lock);
    for (int d = 0; d < 2; d++) {
        list_for_each_entry(w, &g->queue[d], link) {
            cap++;
        }
    }
    wake = bj_calloc(cap ? (size_t)cap : 1, sizeof(*wake));
    for (int d = 0; d < 2; d++) {
        list_for_each_entry(w, &g->queue[d], link) {
            if (w->m == m) {
                note_wake(w, wake, &n);
            }
        }
    }
    pthread_mutex_unlock(&g->lock);
    wake_all(wake, n);
    free(wake);
}
