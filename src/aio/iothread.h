/*
 * Iothreads (--object iothread,id=NAME): a thread running its own
 * AioContext until stopped.
 */
#ifndef BJ_AIO_IOTHREAD_H
#define BJ_AIO_IOTHREAD_H

#include "aio/aio.h"
#include "util/error.h"

typedef struct IOThread IOThread;

IOThread *iothread_create(const char *id, Error **errp);
/* Stops the loop and joins the thread; its context must be empty. */
void iothread_destroy(IOThread *t);
IOThread *iothread_find(const char *id);
AioContext *iothread_get_context(IOThread *t);
const char *iothread_id(IOThread *t);
/* Stops and destroys every iothread (shutdown). */
void iothread_destroy_all(void);

#endif
