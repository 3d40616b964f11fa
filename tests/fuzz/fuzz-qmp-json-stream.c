/*
 * Fuzz target for the monitor's JSON stream splitter (qmp/json-stream.c)
 * and json_parse_qmp.
 *
 * Input: byte 0 picks the chunk size the rest is fed in (1..64 bytes);
 * byte 1, when not 0, sets small size and depth limits so the
 * "too large" / "too deep" skipping is reached with short inputs; the rest
 * is what a client sends.
 *
 * Properties checked: no crash or over-read; every emit carries exactly
 * one of a value and an error with a message; the same bytes give the same
 * values and errors whether fed in one go or in chunks; every value
 * emitted survives a dump and json_parse_qmp unchanged.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "qmp/json-stream.h"

/* What came out, as text: each value as compact JSON, each error "!desc". */
typedef struct Out {
    char **items;
    size_t n, cap;
} Out;

static void check_reparse(json_t *value, const char *dumped)
{
    Error *err = NULL;
    json_t *back = json_parse_qmp(dumped, strlen(dumped), &err);
    if (!back || !json_equal(back, value)) {
        fprintf(stderr, "value does not survive a round trip: %s (%s)\n",
                dumped, err ? error_get_pretty(err) : "differs");
        abort();
    }
    json_decref(back);
}

static void collect(void *opaque, json_t *value, Error *err)
{
    Out *o = opaque;
    char *s = NULL;

    if ((value == NULL) == (err == NULL)) {
        abort();
    }
    if (value) {
        s = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY |
                       JSON_PRESERVE_ORDER);
        if (!s) {
            abort();
        }
        check_reparse(value, s);
        json_decref(value);
    } else {
        if (!error_get_pretty(err)[0] ||
            asprintf(&s, "!%s", error_get_pretty(err)) < 0) {
            abort();
        }
        error_free(err);
    }
    if (o->n == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 16;
        o->items = realloc(o->items, o->cap * sizeof(o->items[0]));
        if (!o->items) {
            abort();
        }
    }
    o->items[o->n++] = s;
}

static void out_free(Out *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->items[i]);
    }
    free(o->items);
}

/* Feeds data in chunks of `chunk` bytes (0: all at once). */
static void run(const uint8_t *data, size_t size, size_t chunk,
                uint8_t limits, Out *o)
{
    JsonStream *js = json_stream_new(collect, o);

    if (limits) {
        json_stream_set_limits(js, 16 + (size_t)limits * 8, 1 + limits % 32);
    }
    for (size_t pos = 0; pos < size;) {
        size_t n = chunk && size - pos > chunk ? chunk : size - pos;
        json_stream_feed(js, data + pos, n);
        pos += n;
    }
    json_stream_free(js);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Out whole = { .items = NULL, .n = 0, .cap = 0 };
    Out pieces = { .items = NULL, .n = 0, .cap = 0 };

    if (size < 2) {
        return 0;
    }
    run(data + 2, size - 2, 0, data[1], &whole);
    run(data + 2, size - 2, 1 + data[0] % 64, data[1], &pieces);
    if (whole.n != pieces.n) {
        abort();
    }
    for (size_t i = 0; i < whole.n; i++) {
        if (strcmp(whole.items[i], pieces.items[i]) != 0) {
            fprintf(stderr, "item %zu: whole '%s', in chunks '%s'\n", i,
                    whole.items[i], pieces.items[i]);
            abort();
        }
    }
    out_free(&whole);
    out_free(&pieces);

    /* The whole input as one JSON text, as the command line parses it. */
    Error *err = NULL;
    json_t *v = json_parse_qmp((const char *)data + 2, size - 2, &err);
    if (v) {
        json_decref(v);
    } else if (!err || !error_get_pretty(err)[0]) {
        abort();
    }
    error_free(err);
    return 0;
}
