/*
 * iothread objects: --object iothread and object-add qom-type=iothread
 * start a thread through aio/iothread.c.  An iothread is kept in use for
 * good: nodes, exports and jobs may run in its context and nothing here
 * can tell when they have left, so object-del refuses it (the thread ends
 * at shutdown).  The polling tunables are accepted and have no effect (we
 * do not busy-poll).
 */
#include "aio/iothread.h"
#include "object/object-int.h"
#include "util/alloc.h"

#include <inttypes.h>
#include <stdint.h>
#include <string.h>

typedef struct IOThreadObject {
    Object base;
    /* The tunables as given (qom-get shows them; nothing else reads them). */
    int64_t poll_max_ns, poll_grow, poll_shrink, aio_max_batch;
    int64_t thread_pool_min, thread_pool_max;
} IOThreadObject;

static const ArgSpec iothread_props[] = {
    { .name = "poll-max-ns", .type = ARG_INT, .optional = true },
    { .name = "poll-grow", .type = ARG_INT, .optional = true },
    { .name = "poll-shrink", .type = ARG_INT, .optional = true },
    { .name = "aio-max-batch", .type = ARG_INT, .optional = true },
    { .name = NULL },
};

static Object *iothread_obj_create(const char *id, json_t *props,
                                   Error **errp)
{
    IOThreadObject *t;

    if (!iothread_create(id, errp)) {
        return NULL;
    }
    t = bj_calloc(1, sizeof(*t));
    /* qemu's defaults */
    t->poll_max_ns = arg_int(props, "poll-max-ns", 32768);
    t->poll_grow = arg_int(props, "poll-grow", 0);
    t->poll_shrink = arg_int(props, "poll-shrink", 0);
    t->aio_max_batch = arg_int(props, "aio-max-batch", 0);
    t->thread_pool_min = 0;
    t->thread_pool_max = 64;
    return &t->base;
}

static void iothread_obj_destroy(Object *obj)
{
    /* The thread itself ends in iothread_destroy_all (shutdown). */
    free(container_of(obj, IOThreadObject, base));
}

static json_t *iothread_obj_prop_get(Object *obj, const char *name)
{
    IOThreadObject *t = container_of(obj, IOThreadObject, base);

    if (!strcmp(name, "poll-max-ns")) {
        return json_integer(t->poll_max_ns);
    } else if (!strcmp(name, "poll-grow")) {
        return json_integer(t->poll_grow);
    } else if (!strcmp(name, "poll-shrink")) {
        return json_integer(t->poll_shrink);
    } else if (!strcmp(name, "aio-max-batch")) {
        return json_integer(t->aio_max_batch);
    } else if (!strcmp(name, "thread-pool-min")) {
        return json_integer(t->thread_pool_min);
    } else if (!strcmp(name, "thread-pool-max")) {
        return json_integer(t->thread_pool_max);
    }
    return NULL;
}

/* qom-set: stored and shown, with qsd's checks; nothing reads them. */
static int iothread_obj_prop_set(Object *obj, const char *name,
                                 json_t *value, Error **errp)
{
    IOThreadObject *t = container_of(obj, IOThreadObject, base);
    int64_t *field = !strcmp(name, "poll-max-ns") ? &t->poll_max_ns
                   : !strcmp(name, "poll-grow") ? &t->poll_grow
                   : !strcmp(name, "poll-shrink") ? &t->poll_shrink
                   : !strcmp(name, "aio-max-batch") ? &t->aio_max_batch
                   : !strcmp(name, "thread-pool-min") ? &t->thread_pool_min
                   : !strcmp(name, "thread-pool-max") ? &t->thread_pool_max
                   : NULL;

    if (!field) {
        return 0;
    }
    if (!json_is_integer(value)) {
        error_setg(errp, "Invalid parameter type for '%s', expected: integer",
                   name);
        return -1;
    }
    if (json_integer_value(value) < 0) {
        error_setg(errp, "%s value must be in range [0, %" PRId64 "]", name,
                   INT64_MAX);
        return -1;
    }
    *field = json_integer_value(value);
    return 1;
}

static const QomProp iothread_qom[] = {
    { "poll-max-ns", "int" }, { "poll-grow", "int" },
    { "poll-shrink", "int" }, { NULL, NULL },
};

const ObjectType iothread_object_type = {
    .name = "iothread",
    .prop_get = iothread_obj_prop_get,
    .prop_set = iothread_obj_prop_set,
    .qom_parent = "event-loop-base",
    .qom_props = iothread_qom,
    .props = iothread_props,
    .create = iothread_obj_create,
    .destroy = iothread_obj_destroy,
    .in_use_for_good = true,
};
