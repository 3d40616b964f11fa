/*
 * Iothreads: one thread per --object iothread, each running its own
 * AioContext until a stop BH tells it to leave the loop.
 *
 * The registry (find by id) is touched by the main thread only; the stop
 * flag by the iothread only (it is set by a BH running in that thread).
 */
#include "aio/iothread.h"
#include "util/alloc.h"
#include "util/list.h"
#include "util/log.h"

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct IOThread {
    ListHead link;              /* in iothreads */
    char *id;
    AioContext *ctx;
    pthread_t thread;
    bool stopping;              /* iothread's own thread only */
};

static ListHead iothreads = LIST_HEAD_INIT(iothreads);

static void *iothread_run(void *opaque)
{
    IOThread *t = opaque;
    aio_context_set_current(t->ctx);
    while (!t->stopping) {
        aio_poll(t->ctx, true);
    }
    /* Finish what was already queued (completions, wakeups) so that the
     * context is found empty when it is freed. */
    while (aio_poll(t->ctx, false)) {
    }
    aio_context_set_current(NULL);
    return NULL;
}

static void iothread_stop_bh(void *opaque)
{
    IOThread *t = opaque;
    t->stopping = true;
}

IOThread *iothread_find(const char *id)
{
    IOThread *t;
    list_for_each_entry(t, &iothreads, link) {
        if (!strcmp(t->id, id)) {
            return t;
        }
    }
    return NULL;
}

IOThread *iothread_create(const char *id, Error **errp)
{
    if (iothread_find(id)) {
        /* What qemu-storage-daemon says for a duplicate object id. */
        error_setg(errp, "attempt to add duplicate property '%s' to object "
                   "(type 'container')", id);
        return NULL;
    }
    IOThread *t = bj_calloc(1, sizeof(*t));
    list_init(&t->link);
    t->id = bj_strdup(id);
    char name[64];
    snprintf(name, sizeof(name), "iothread-%s", id);
    t->ctx = aio_context_new(name, errp);
    if (!t->ctx) {
        free(t->id);
        free(t);
        return NULL;
    }

    /*
     * The thread starts with every signal blocked: SIGINT/SIGTERM and
     * friends belong to the main loop.
     */
    sigset_t all, old;
    sigfillset(&all);
    int ret = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (ret == 0) {
        ret = pthread_create(&t->thread, NULL, iothread_run, t);
        int ret2 = pthread_sigmask(SIG_SETMASK, &old, NULL);
        assert(ret2 == 0);
        (void)ret2;
    }
    if (ret != 0) {
        error_setg_errno(errp, ret, "cannot start iothread '%s'", id);
        aio_context_free(t->ctx);
        free(t->id);
        free(t);
        return NULL;
    }

    /* The kernel keeps 15 characters of a thread name. */
    char tname[16];
    snprintf(tname, sizeof(tname), "iothread-%s", id);
    ret = pthread_setname_np(t->thread, tname);
    if (ret != 0) {
        log_warn("cannot name the thread of iothread '%s': %s", id,
                 strerror(ret));
    }
    list_add_tail(&iothreads, &t->link);
    return t;
}

void iothread_destroy(IOThread *t)
{
    if (!t) {
        return;
    }
    /* Ownership of t stays here: the BH only flips the flag. */
    aio_bh_schedule_oneshot(t->ctx, iothread_stop_bh, t);
    int ret = pthread_join(t->thread, NULL);
    if (ret != 0) {
        log_error("cannot join iothread '%s': %s", t->id, strerror(ret));
        abort();
    }
    list_del(&t->link);
    aio_context_free(t->ctx);
    free(t->id);
    free(t);
}

AioContext *iothread_get_context(IOThread *t)
{
    return t->ctx;
}

const char *iothread_id(IOThread *t)
{
    return t->id;
}

void iothread_destroy_all(void)
{
    while (!list_empty(&iothreads)) {
        iothread_destroy(list_first_entry(&iothreads, IOThread, link));
    }
}
