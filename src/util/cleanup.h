/*
 * Scope-bound cleanup for locals: the variable must always be initialised
 * (usually to NULL) where it is declared.
 */
#ifndef BJ_UTIL_CLEANUP_H
#define BJ_UTIL_CLEANUP_H

#include <stdlib.h>
#include <unistd.h>

static inline void cleanup_free_ptr(void *p)
{
    free(*(void **)p);
}

static inline void cleanup_close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
    }
}

#define CLEANUP_FREE __attribute__((cleanup(cleanup_free_ptr)))
#define CLEANUP_CLOSE __attribute__((cleanup(cleanup_close_fd)))

/* Hands ownership out of a CLEANUP_ variable: returns it and clears it. */
#define steal_pointer(pp) ({ __typeof__(*(pp)) _v = *(pp); *(pp) = NULL; _v; })

#endif
