/* Fixture for scripts/check-coroutine-fn.py: every marked line below is a
 * violation the check must find (the meson test expects it to fail). */
#define coroutine_fn
#define coroutine_mixed_fn

typedef struct Coroutine Coroutine;
typedef void coroutine_fn CoroutineEntry(void *opaque);

Coroutine *coroutine_create(CoroutineEntry *entry, void *opaque);
void coroutine_fn coroutine_yield(void);
void coroutine_fn co_sleep_ns(long ns);

typedef struct Driver {
    int coroutine_fn (*co_read)(void *opaque);
    void (*plain)(void *opaque);
} Driver;

int coroutine_fn planted_co_read(void *opaque);
