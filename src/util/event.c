#include "util/event.h"

static EventSinkFn *sink_fn;
static void *sink_opaque;

void event_set_sink(EventSinkFn *fn, void *opaque)
{
    sink_fn = fn;
    sink_opaque = opaque;
}

void event_emit(const char *name, json_t *data)
{
    if (sink_fn) {
        sink_fn(name, data, sink_opaque);
    }
    json_decref(data);
}
