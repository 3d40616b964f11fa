/*
 * Allocation policy.  Running out of memory for our own bookkeeping (a
 * node, a request, a string, a JSON reply) is not an error we can report:
 * bj_malloc and friends never return NULL, they print "out of memory
 * allocating N bytes" and abort().  Only an allocation whose size a user, a
 * client or an image header chose (a bitmap sized by a node's length, an NBD
 * payload, a metadata table sized by a header) may fail softly: it uses
 * bj_try_*, which returns NULL, and the caller turns that into a clear error.
 */
#ifndef BJ_UTIL_ALLOC_H
#define BJ_UTIL_ALLOC_H

#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

void *bj_malloc(size_t size);
void *bj_calloc(size_t n, size_t size);
void *bj_realloc(void *p, size_t size);
/* realloc to n * size, aborting on overflow as on exhaustion. */
void *bj_reallocarray(void *p, size_t n, size_t size);
char *bj_strdup(const char *s);
char *bj_strndup(const char *s, size_t n);
char *bj_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *bj_vasprintf(const char *fmt, va_list ap)
    __attribute__((format(printf, 1, 0)));

/* Sizes chosen from outside: NULL on failure (size 0 allocates one byte). */
void *bj_try_malloc(size_t size);
void *bj_try_calloc(size_t n, size_t size);
void *bj_try_reallocarray(void *p, size_t n, size_t size);

/* free(*pp) and *pp = NULL: a pointer that owned memory is left owning
 * none (pp is the address of any pointer). */
static inline void bj_free_clear(void *pp)
{
    void **p = (void **)pp;

    free(*p);
    *p = NULL;
}

/* The failure path, for other allocators (aligned I/O buffers). */
__attribute__((noreturn)) void bj_out_of_memory(size_t bytes);

/* Makes jansson allocate with bj_malloc (call once, first thing in main). */
void bj_alloc_init_jansson(void);

#endif
