/*
 * Private glue between aio.c and coroutine.c (not for use outside src/aio/).
 *
 * Every AioContext carries the state coroutine.c needs to schedule
 * coroutines into it from any thread (a locked list drained by a BH).  It is
 * created with the context, so that a foreign thread never races to create
 * it, and torn down before the context's leak check.
 */
#ifndef BJ_AIO_AIO_INTERNAL_H
#define BJ_AIO_AIO_INTERNAL_H

#include "aio/aio.h"

typedef struct CoSchedState CoSchedState;

/* Called by aio_context_new / aio_context_free (coroutine.c). */
CoSchedState *coroutine_sched_state_new(AioContext *ctx);
/* Deletes the internal BH; aborts if coroutines are still scheduled. */
void coroutine_sched_state_free(CoSchedState *s);

/* The state created above, for coroutine.c. */
CoSchedState *aio_context_co_sched(AioContext *ctx);

#endif
