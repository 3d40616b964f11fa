/*
 * Jobs that yield to the guest (docs/guest-impact.md).
 *
 * A job whose type sets JobDriver.yields watches the guests' requests
 * (exports' requests: the request path counts them per node in
 * BlockNode.guest) on its nodes and on every node above them, and limits
 * its own copy rate while they suffer:
 *
 *   every SAMPLE_NS (a main-loop timer, while the body runs):
 *     guest idle (no request ended, none in flight) for IDLE_SAMPLES
 *       -> no limit: the job runs at full speed (or its `speed`)
 *     guest busy:
 *       latency = mean latency of the requests that ended in the period
 *                 (latency and IOPS smoothed over about four samples)
 *       base    = lowest (smoothed) latency seen, drifting up 1/256 a
 *                 sample
 *       peak    = highest (smoothed) IOPS seen, decaying 1/256 a sample
 *       congested: latency > base * latency-pct/100,
 *                  or IOPS < peak * 100/latency-pct,
 *                  or requests in flight and none ended
 *       congested   -> limit halves (not below min-speed)
 *       otherwise   -> limit grows by max(limit/8, min-speed), up to four
 *                      times what the job actually copied lately
 *     (the first limit is half of what the job copied lately)
 *   a mirror that ends a whole pass with data dirty again (clients
 *   re-dirty what it copied) makes the back-off stand aside for good
 *   (job_yield_step_aside): a background copy converges only by
 *   outrunning them
 *   a mirror in READY is not held back (it copies only what clients
 *   dirty; holding it back would make its final drained copy longer)
 *
 * The limit is applied by the job's rate limiter, as `speed` is (the lower
 * of both): job_is_throttled, job_ratelimit_sleep and job_chunk_size see
 * it, so every job type that honours `speed` honours the back-off.  The
 * baseline starts as the mean latency of the guests' requests before the
 * job (when there were enough), so a guest that was running solo gives the
 * controller its solo latency at once.
 *
 * Everything here is the main loop's: the counters are atomics written by
 * the nodes' threads, the limit an atomic the body reads.
 */
#include "job/job-internal.h"

#include <stdlib.h>

#include "job/blockjob.h"
#include "util/alloc.h"
#include "util/log.h"

#define SAMPLE_NS           50000000LL
#define IDLE_SAMPLES        3
#define DEFAULT_LATENCY_PCT 120
#define DEFAULT_MIN_SPEED   (16LL << 20)
#define MAX_WATCHED         64
#define PRIOR_MIN_OPS       64

struct JobYield {
    JobYieldParams p;        /* resolved: no zeroes */
    AioTimer *timer;
    bool primed;
    uintptr_t set_sig;       /* which nodes the sums are over */
    uint64_t ops, total_ns, progress;
    int64_t at_ns;
    int idle;
    bool idle_before;        /* the last sample saw no guest */
    double base_lat_ns, peak_iops, job_rate;
    /* the guest's smoothed latency and rate (also for the query) */
    double guest_iops, guest_lat_ns;
    uint64_t backoffs;
};

typedef struct NodeSet {
    BlockNode *n[MAX_WATCHED];
    int count;
} NodeSet;

bool job_yield_params_check(const JobYieldParams *p, Error **errp)
{
    if (p->latency_pct && (p->latency_pct < 101 || p->latency_pct > 10000)) {
        error_setg(errp, "x-yield.latency-pct must be between 101 and 10000");
        return false;
    }
    if (p->min_speed < 0) {
        error_setg(errp, "x-yield.min-speed must be positive");
        return false;
    }
    return true;
}

static JobYield *yield_get(Job *job)
{
    if (!job->yield) {
        job->yield = bj_calloc(1, sizeof(*job->yield));
        job->yield->p.latency_pct = DEFAULT_LATENCY_PCT;
        job->yield->p.min_speed = DEFAULT_MIN_SPEED;
        job->yield->idle_before = true;
    }
    return job->yield;
}

void job_yield_configure(Job *job, const JobYieldParams *p)
{
    JobYield *y;

    if (!job->driver->yields) {
        return;
    }
    y = yield_get(job);
    y->p.disabled = p->disabled;
    if (p->latency_pct) {
        y->p.latency_pct = p->latency_pct;
    }
    if (p->min_speed) {
        y->p.min_speed = p->min_speed;
    }
}

/* bs and every node above it (guests enter at the top). */
static void add_up(BlockNode *bs, void *opaque)
{
    NodeSet *set = opaque;
    BlockChild *c;

    for (int i = 0; i < set->count; i++) {
        if (set->n[i] == bs) {
            return;
        }
    }
    if (set->count == MAX_WATCHED) {
        return;
    }
    set->n[set->count++] = bs;
    list_for_each_entry(c, &bs->parents, parent_link) {
        if (c->klass->parent_is_node) {
            add_up((BlockNode *)c->opaque, set);
        }
    }
}

static void set_limit(Job *job, int64_t limit)
{
    int64_t old = __atomic_load_n(&job->yield_limit, __ATOMIC_ACQUIRE);

    if (old == limit) {
        return;
    }
    __atomic_store_n(&job->yield_limit, limit, __ATOMIC_RELEASE);
    ratelimit_set_speed(&job->limit, (uint64_t)job_effective_speed(job),
                        clock_ns());
    /* Lifted: a body sleeping on the old limit goes on at once. */
    if ((limit == 0 || limit > old) && job->sleep.co) {
        job_enter(job);
    }
}

static void yield_sample(void *opaque)
{
    Job *job = opaque;
    JobYield *y = job->yield;
    int64_t now = clock_ns();
    NodeSet set = { .count = 0 };
    uint64_t ops = 0, total_ns = 0, in_flight = 0;
    uintptr_t sig = 0;

    block_job_foreach_node(job, add_up, &set);
    for (int i = 0; i < set.count; i++) {
        BlockGuestIo *g = &set.n[i]->guest;
        ops += atomic_load_explicit(&g->ops, memory_order_relaxed);
        total_ns += atomic_load_explicit(&g->total_ns, memory_order_relaxed);
        in_flight += atomic_load_explicit(&g->in_flight,
                                          memory_order_relaxed);
        sig = sig * 31 + (uintptr_t)set.n[i];
    }
    uint64_t progress = job_progress_current(job);

    if (!y->primed || sig != y->set_sig || ops < y->ops) {
        /* First look, or the nodes changed: start the sums again.  The
         * guests' mean latency so far is the first baseline. */
        if (!y->primed && ops >= PRIOR_MIN_OPS) {
            y->base_lat_ns = (double)total_ns / (double)ops;
        }
        y->primed = true;
        goto out;
    }

    double dt = (double)(now - y->at_ns) / 1e9;
    uint64_t d_ops = ops - y->ops;
    uint64_t d_ns = total_ns - y->total_ns;
    double rate = dt > 0 ? (double)(progress - y->progress) / dt : 0;
    int64_t min = y->p.min_speed;
    double pct = (double)y->p.latency_pct;

    y->job_rate = y->job_rate * 0.75 + rate * 0.25;
    if (job_is_ready(job) ||
        __atomic_load_n(&job->yield_aside, __ATOMIC_ACQUIRE)) {
        /* A mirror in READY copies only what clients dirty: holding it
         * back would only make its final drained copy longer.  A job
         * that stepped aside must converge. */
        set_limit(job, 0);
        goto out;
    }
    if (d_ops == 0 && in_flight == 0) {
        y->guest_iops = 0;
        y->idle_before = true;
        if (++y->idle >= IDLE_SAMPLES) {
            set_limit(job, 0);
        }
        goto out;
    }
    y->idle = 0;

    bool congested = d_ops == 0;     /* waiting and nothing ends */
    if (d_ops) {
        double lat = (double)d_ns / (double)d_ops;
        double iops = dt > 0 ? (double)d_ops / dt : 0;

        /* Smoothed over about four samples: one slow sample of a noisy
         * guest is no congestion. */
        if (y->idle_before) {
            y->guest_lat_ns = lat;
            y->guest_iops = iops;
        } else {
            y->guest_lat_ns = y->guest_lat_ns * 0.75 + lat * 0.25;
            y->guest_iops = y->guest_iops * 0.75 + iops * 0.25;
        }
        lat = y->guest_lat_ns;
        iops = y->guest_iops;
        double drifted = y->base_lat_ns * (1 + 1.0 / 256);
        double decayed = y->peak_iops * (1 - 1.0 / 256);

        y->base_lat_ns = y->base_lat_ns <= 0 || lat < drifted ? lat
                                                              : drifted;
        y->peak_iops = iops > decayed ? iops : decayed;
        congested = lat * 100 > y->base_lat_ns * pct ||
                    iops * pct < y->peak_iops * 100;
    }
    y->idle_before = false;

    int64_t limit = __atomic_load_n(&job->yield_limit, __ATOMIC_ACQUIRE);
    if (!limit) {
        limit = (int64_t)(y->job_rate / 2);
    }
    if (congested) {
        limit /= 2;
        y->backoffs++;
    } else {
        int64_t cap = (int64_t)(y->job_rate * 4);
        limit += limit / 8 > min ? limit / 8 : min;
        if (limit > cap) {
            limit = cap;
        }
    }
    if (limit < min) {
        limit = min;
    }
    set_limit(job, y->p.disabled ? 0 : limit);

out:
    y->set_sig = sig;
    y->ops = ops;
    y->total_ns = total_ns;
    y->progress = progress;
    y->at_ns = now;
    aio_timer_mod(y->timer, now + SAMPLE_NS);
}

void job_yield_start(Job *job)
{
    JobYield *y;

    if (!job->driver->yields) {
        return;
    }
    y = yield_get(job);
    y->timer = aio_timer_new(aio_main_context(), yield_sample, job);
    yield_sample(job);
}

void job_yield_stop(Job *job)
{
    JobYield *y = job->yield;

    if (!y || !y->timer) {
        return;
    }
    aio_timer_free(y->timer);
    y->timer = NULL;
    __atomic_store_n(&job->yield_limit, 0, __ATOMIC_RELEASE);
    ratelimit_set_speed(&job->limit, (uint64_t)job_effective_speed(job),
                        clock_ns());
}

void job_yield_free(Job *job)
{
    job_yield_stop(job);
    free(job->yield);
    job->yield = NULL;
}

void job_yield_step_aside(Job *job)
{
    if (!__atomic_exchange_n(&job->yield_aside, true, __ATOMIC_ACQ_REL)) {
        log_info("%s job '%s': clients dirty faster than it copies under "
                 "the back-off; the back-off stands aside",
                 job->driver->type, job->id);
    }
}

void job_yield_query(Job *job, json_t *info)
{
    JobYield *y = job->yield;

    if (!y) {
        return;
    }
    json_object_set_new(info, "x-yield", json_boolean(!y->p.disabled));
    json_object_set_new(info, "x-yield-aside",
                        json_boolean(__atomic_load_n(&job->yield_aside,
                                                     __ATOMIC_ACQUIRE)));
    json_object_set_new(info, "x-yield-limit",
                        json_integer(__atomic_load_n(&job->yield_limit,
                                                     __ATOMIC_ACQUIRE)));
    json_object_set_new(info, "x-yield-backoffs",
                        json_integer((json_int_t)y->backoffs));
    json_object_set_new(info, "x-yield-guest-iops",
                        json_integer((json_int_t)y->guest_iops));
    json_object_set_new(info, "x-yield-guest-latency-us",
                        json_integer((json_int_t)(y->guest_lat_ns / 1000)));
    json_object_set_new(info, "x-yield-base-latency-us",
                        json_integer((json_int_t)(y->base_lat_ns / 1000)));
}
