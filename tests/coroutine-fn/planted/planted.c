#include "planted.h"

int coroutine_fn planted_co_read(void *opaque)
{
    co_sleep_ns(1);
    return 0;
}

static void coroutine_fn entry(void *opaque)
{
    planted_co_read(opaque);          /* fine: coroutine_fn calls it */
}

/* Fine: the mixed helper yields only when it runs in a coroutine. */
static void coroutine_mixed_fn maybe_yield(int in_coroutine)
{
    if (in_coroutine) {
        coroutine_yield();
    }
}

static void schedule_later(void (*cb)(void *), void *opaque);

/* Each of these is a planted violation. */
static void plain_caller(void *opaque)
{
    planted_co_read(opaque);          /* (a) direct call */
}

static void plain_yielder(void)
{
    coroutine_yield();                /* (a) a yield primitive */
}

static int plain_member_call(Driver *d, void *opaque)
{
    return d->co_read(opaque);        /* (a) a coroutine_fn member */
}

static void pointer_leak(void *opaque)
{
    schedule_later(entry, opaque);    /* (b) not an entry bridge */
}

static const Driver bad_table = {
    .plain = entry,                   /* (b) not a coroutine_fn member */
};

/* Fine: the entry bridge and a coroutine_fn member. */
static void start(void *opaque)
{
    coroutine_create(entry, opaque);
    maybe_yield(0);
}

static const Driver good_table = {
    .co_read = planted_co_read,
};
