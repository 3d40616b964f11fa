/*
 * The monitor's serialiser for replies and events: the same text as
 * json_dumps(v, JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER) (separators ", "
 * and ": "), written straight into one growing buffer.  jansson's dumper
 * goes through a callback for every run of characters and escapes strings
 * character by character; on a 150 KiB query-named-block-nodes reply that
 * was 40 % of the command's time.  Strings that need more than \" or \\
 * escaped, and reals, are handed to jansson, so the output never differs.
 */
#ifndef BJ_QMP_JSON_OUT_H
#define BJ_QMP_JSON_OUT_H

#include <jansson.h>
#include <stddef.h>

/* v (an object or an array) as text, NUL-terminated, allocated (free());
 * *len gets its length.  NULL where jansson's json_dumps would fail too
 * (a value too deep, an invalid string). */
char *json_out_dumps(const json_t *v, size_t *len);

#endif
