/*
 * The `file` driver's blockdev-create entries (file-create.c; see
 * BlockDriver.create_check and co_create in block/block.h).
 */
#ifndef BJ_BLOCK_DRIVERS_FILE_CREATE_H
#define BJ_BLOCK_DRIVERS_FILE_CREATE_H

#include <jansson.h>
#include <stdbool.h>

#include "aio/coroutine.h"
#include "util/error.h"

bool file_create_check(json_t *opts, Error **errp);
int coroutine_fn file_co_create(json_t *opts, const char *job_id,
                                Error **errp);

#endif
