/*
 * The main AioContext of the fuzz targets that drive the block layer or
 * the QMP commands: made on the first input, kept for the process.
 */
#ifndef BJ_TESTS_FUZZ_MAIN_LOOP_H
#define BJ_TESTS_FUZZ_MAIN_LOOP_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "aio/aio.h"

/* Makes the main AioContext on the first call (aborts when it cannot) and
 * returns true then, so that the target does its own one-time setup;
 * false on every later call. */
static inline bool fuzz_main_loop_init_once(void)
{
    static bool done;
    Error *err = NULL;

    if (done) {
        return false;
    }
    done = true;
    if (!aio_main_init(&err)) {
        fprintf(stderr, "aio_main_init: %s\n", error_get_pretty(err));
        abort();
    }
    return true;
}

#endif
