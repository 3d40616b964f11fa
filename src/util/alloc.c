/*
 * The aborting allocators of alloc.h.  The failure message goes straight to
 * stderr with a fixed buffer: the logger is not used because nothing on the
 * way out may allocate.  bjctl links this file too.
 */
#include "util/alloc.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void bj_out_of_memory(size_t bytes)
{
    fprintf(stderr, "%s: out of memory allocating %zu bytes\n",
            program_invocation_short_name, bytes);
    abort();
}

static void *check(void *p, size_t bytes)
{
    if (!p) {
        bj_out_of_memory(bytes);
    }
    return p;
}

void *bj_malloc(size_t size)
{
    return check(malloc(size ? size : 1), size);
}

void *bj_calloc(size_t n, size_t size)
{
    return check(calloc(n ? n : 1, size ? size : 1), n * size);
}

void *bj_realloc(void *p, size_t size)
{
    return check(realloc(p, size ? size : 1), size);
}

void *bj_reallocarray(void *p, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) {
        bj_out_of_memory(SIZE_MAX);
    }
    return bj_realloc(p, n * size);
}

char *bj_strdup(const char *s)
{
    return check(strdup(s), strlen(s) + 1);
}

char *bj_strndup(const char *s, size_t n)
{
    return check(strndup(s, n), strnlen(s, n) + 1);
}

char *bj_vasprintf(const char *fmt, va_list ap)
{
    char *s = NULL;
    va_list ap2;

    va_copy(ap2, ap);
    if (vasprintf(&s, fmt, ap) < 0) {
        int len = vsnprintf(NULL, 0, fmt, ap2);
        bj_out_of_memory(len < 0 ? 0 : (size_t)len + 1);
    }
    va_end(ap2);
    return s;
}

char *bj_asprintf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    char *s = bj_vasprintf(fmt, ap);
    va_end(ap);
    return s;
}

void *bj_try_malloc(size_t size)
{
    return malloc(size ? size : 1);
}

void *bj_try_calloc(size_t n, size_t size)
{
    return calloc(n ? n : 1, size ? size : 1);
}

void *bj_try_reallocarray(void *p, size_t n, size_t size)
{
    return reallocarray(p, n ? n : 1, size ? size : 1);
}

void bj_alloc_init_jansson(void)
{
    json_set_alloc_funcs(bj_malloc, free);
}
