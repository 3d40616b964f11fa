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

typedef struct IOThreadObject {
    Object base;
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
    return &t->base;
}

static void iothread_obj_destroy(Object *obj)
{
    /* The thread itself ends in iothread_destroy_all (shutdown). */
    free(container_of(obj, IOThreadObject, base));
}

const ObjectType iothread_object_type = {
    .name = "iothread",
    .props = iothread_props,
    .create = iothread_obj_create,
    .destroy = iothread_obj_destroy,
    .in_use_for_good = true,
};
