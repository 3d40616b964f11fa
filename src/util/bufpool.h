/*
 * I/O buffers that are reused: NBD request payloads, copy jobs' chunks.
 *
 * A buffer of 64 KiB or more freed to malloc goes back to the system
 * (glibc maps such blocks on their own), so every request paid for an
 * mmap, a page fault per 4 KiB page to zero-fill it again, and a munmap
 * with its TLB shootdown; with a guest writing that was most of the time
 * a backup took.  Here freed buffers wait on a free list per size class
 * (powers of two, 64 KiB to 32 MiB) and the next request of that class
 * takes one with its pages already in place.  What waits is bounded
 * (BUFPOOL_KEEP_BYTES for the process), so the peak memory of many
 * concurrent jobs stays what their budgets allow plus that much.
 *
 * Page-aligned (O_DIRECT-safe).  Thread-safe (iothreads share it).
 * Smaller sizes come from malloc, which keeps those in its heap anyway.
 */
#ifndef BJ_UTIL_BUFPOOL_H
#define BJ_UTIL_BUFPOOL_H

#include <stdbool.h>
#include <stddef.h>

#define BUFPOOL_KEEP_BYTES (32u << 20)

/* size bytes, page-aligned, or NULL when memory runs out. */
void *bufpool_try_alloc(size_t size);
/* The same, aborting when memory runs out (util/alloc.h's policy). */
void *bufpool_alloc(size_t size);
/* Gives back p, which bufpool_*alloc returned for size (NULL: nothing). */
void bufpool_free(void *p, size_t size);
/* Bytes waiting on the free lists (for tests). */
size_t bufpool_cached_bytes(void);
/* Whether freed buffers are kept (false under AddressSanitizer). */
bool bufpool_pooled(void);
/* Returns every waiting buffer to the system. */
void bufpool_trim(void);

#endif
