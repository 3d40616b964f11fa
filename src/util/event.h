/*
 * Where asynchronous events go.  Layers below the monitor (jobs, exports)
 * raise events by name with a JSON data object; the monitor registers itself
 * as the sink and adds timestamps and wire format.  Main-loop thread only:
 * code running in an iothread bounces to the main context first.
 */
#ifndef BJ_UTIL_EVENT_H
#define BJ_UTIL_EVENT_H

#include <jansson.h>

typedef void EventSinkFn(const char *name, json_t *data, void *opaque);

void event_set_sink(EventSinkFn *fn, void *opaque);
/* Takes ownership of data (may be NULL: no "data" member is sent). */
void event_emit(const char *name, json_t *data);

#endif
