/*
 * Streaming JSON splitter for the monitor: bytes in, whole top-level values
 * out, each parsed with jansson.
 *
 * It only finds value boundaries (bracket depth, strings, escapes); jansson
 * does the real parsing.  On the way it turns QMP's 'single-quoted' strings
 * into JSON, treats byte 0xFF as a request to reset the parser (QMP spec
 * 2.6), and bounds memory: a value larger than max_size bytes or nested
 * deeper than max_depth is reported once and the rest of it is skipped
 * without being buffered.
 */
#ifndef BJ_QMP_JSON_STREAM_H
#define BJ_QMP_JSON_STREAM_H

#include <jansson.h>
#include <stddef.h>

#include "util/error.h"

#define JSON_STREAM_MAX_SIZE  (64u << 20)
#define JSON_STREAM_MAX_DEPTH 1024

/*
 * Called once per top-level value: value (owned by the callee) or err (owned
 * by the callee; its message is the QMP "desc").  Exactly one is non-NULL.
 */
typedef void JsonStreamEmitFn(void *opaque, json_t *value, Error *err);

typedef struct JsonStream JsonStream;

JsonStream *json_stream_new(JsonStreamEmitFn *emit, void *opaque);
/* Limits for tests; the defaults are the constants above. */
void json_stream_set_limits(JsonStream *js, size_t max_size, int max_depth);
/* Feeds bytes; emits zero or more values.  The callback must not free js. */
void json_stream_feed(JsonStream *js, const void *buf, size_t len);
/* Bytes currently buffered for an incomplete value (tests, accounting). */
size_t json_stream_pending(const JsonStream *js);
void json_stream_free(JsonStream *js);

/* Parses one complete JSON text; errors worded as QEMU's parser words them
 * ("JSON parse error, expecting value"). */
json_t *json_parse_qmp(const char *buf, size_t len, Error **errp);

#endif
