/*
 * throttle-group objects (--object throttle-group,id=,x-iops-total=,...,
 * object-add, qom-set/qom-get of "limits"): a budget of I/O that the
 * throttle filter nodes naming the group share (block/drivers/throttle.c).
 *
 * The limits are qemu's ThrottleLimits: for each of bps and iops, total or
 * read/write, an average rate (per second), an optional burst rate `max`
 * allowed for `max-length` seconds, and iops-size (a request of N times
 * that size counts N operations).  Each limit is a leaky bucket: what
 * passes fills it, it drains at the average rate, and a request waits
 * while the bucket holds more than its capacity (a tenth of a second's
 * worth, or max x max-length with a burst; a burst bucket draining at
 * `max` keeps the burst itself at that rate).  Budget is taken when a
 * request starts, so a bucket overshoots by at most one request.
 *
 * Requests that must wait queue per direction in arrival order, group
 * wide; the head sleeps on a timer in its own AioContext until the budget
 * allows it, then wakes the next.  The group's state is behind a mutex:
 * members may live in different iothreads.  A member being drained lets
 * its queued requests through at once (qemu does the same), so a drained
 * section never waits for the budget.
 */
#ifndef BJ_OBJECT_THROTTLE_GROUP_H
#define BJ_OBJECT_THROTTLE_GROUP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "aio/coroutine.h"
#include "util/error.h"

typedef struct ThrottleGroup ThrottleGroup;

/* One user of a group (a throttle node); zeroed by its owner. */
typedef struct ThrottleMember {
    atomic_bool drained;           /* set: requests pass without budget */
} ThrottleMember;

/* The group called id, with a use taken (main loop); NULL and qsd's
 * "Throttle group 'X' does not exist" if there is none. */
ThrottleGroup *throttle_group_get(const char *id, Error **errp);
/* Gives the use back (main loop). */
void throttle_group_put(ThrottleGroup *g);
const char *throttle_group_name(ThrottleGroup *g);

/* Waits until the group's budget lets a request of `bytes` (a read, or a
 * write when write) through, and takes it. */
void coroutine_fn throttle_group_co_wait(ThrottleGroup *g, ThrottleMember *m,
                                         bool write, int64_t bytes);
/* The member is being drained (true) or no longer (false): with true, its
 * queued requests are woken and pass.  Any thread. */
void throttle_group_member_drained(ThrottleGroup *g, ThrottleMember *m,
                                   bool drained);

#endif
