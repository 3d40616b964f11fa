/*
 * Reused I/O buffers (see bufpool.h).  Each class holds a singly linked
 * list threaded through the free buffers themselves.
 */
#include "util/bufpool.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "util/alloc.h"

#define MIN_SHIFT 16                    /* 64 KiB */
#define MAX_SHIFT 25                    /* 32 MiB */
#define NCLASSES  (MAX_SHIFT - MIN_SHIFT + 1)
#define SMALL_ALIGN 4096

/*
 * Under AddressSanitizer every buffer comes from malloc and goes back at
 * once, so that an overflow or a use after free is still caught.
 */
#if defined(__SANITIZE_ADDRESS__)
#define POOLED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOLED 0
#endif
#endif
#ifndef POOLED
#define POOLED 1
#endif

typedef struct FreeBuf {
    struct FreeBuf *next;
} FreeBuf;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FreeBuf *free_lists[NCLASSES];
static size_t cached;                   /* bytes on the free lists */

/* The class of size (its index), or -1 when it is too small or large. */
static int class_of(size_t size)
{
    int shift = MIN_SHIFT;

    if (size < ((size_t)1 << MIN_SHIFT) || size > ((size_t)1 << MAX_SHIFT)) {
        return -1;
    }
    while (((size_t)1 << shift) < size) {
        shift++;
    }
    return shift - MIN_SHIFT;
}

static size_t class_bytes(int c)
{
    return (size_t)1 << (c + MIN_SHIFT);
}

static void *map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    return p == MAP_FAILED ? NULL : p;
}

static void unmap(void *p, size_t size)
{
    if (munmap(p, size) < 0) {
        abort();                /* only an invalid mapping fails */
    }
}

void *bufpool_try_alloc(size_t size)
{
    int c = class_of(size);
    void *p = NULL;

    if (!POOLED || (c < 0 && size < ((size_t)1 << MIN_SHIFT))) {
        return posix_memalign(&p, SMALL_ALIGN, size ? size : 1) == 0 ? p
                                                                     : NULL;
    }
    if (c < 0) {
        return map(size);       /* beyond the classes: not kept either */
    }
    pthread_mutex_lock(&lock);
    if (free_lists[c]) {
        p = free_lists[c];
        free_lists[c] = free_lists[c]->next;
        cached -= class_bytes(c);
    }
    pthread_mutex_unlock(&lock);
    return p ? p : map(class_bytes(c));
}

void *bufpool_alloc(size_t size)
{
    void *p = bufpool_try_alloc(size);

    if (!p) {
        bj_out_of_memory(size);
    }
    return p;
}

void bufpool_free(void *p, size_t size)
{
    int c = class_of(size);

    if (!p) {
        return;
    }
    if (!POOLED || (c < 0 && size < ((size_t)1 << MIN_SHIFT))) {
        free(p);
        return;
    }
    if (c < 0) {
        unmap(p, size);
        return;
    }
    pthread_mutex_lock(&lock);
    if (cached + class_bytes(c) <= BUFPOOL_KEEP_BYTES) {
        FreeBuf *f = p;

        f->next = free_lists[c];
        free_lists[c] = f;
        cached += class_bytes(c);
        p = NULL;
    }
    pthread_mutex_unlock(&lock);
    if (p) {
        unmap(p, class_bytes(c));
    }
}

bool bufpool_pooled(void)
{
    return POOLED;
}

size_t bufpool_cached_bytes(void)
{
    size_t n;

    pthread_mutex_lock(&lock);
    n = cached;
    pthread_mutex_unlock(&lock);
    return n;
}

void bufpool_trim(void)
{
    pthread_mutex_lock(&lock);
    for (int c = 0; c < NCLASSES; c++) {
        while (free_lists[c]) {
            FreeBuf *f = free_lists[c];

            free_lists[c] = f->next;
            unmap(f, class_bytes(c));
        }
    }
    cached = 0;
    pthread_mutex_unlock(&lock);
}
