/*
 * Drained sections: waiting for in-flight requests, nesting, parents being
 * quiesced and told once, postponed external requests running in arrival
 * order after the last section ends, and requests from an iothread while
 * the main loop drains.
 *
 * Timing: null-co's latency-ns keeps requests in flight long enough to be
 * seen; no assertion depends on how long anything takes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

#include "aio/iothread.h"
#include "block/block.h"
#include "test-wait.h"

typedef struct User {
    int drained_begin_calls;
    int drained_end_calls;
} User;

static void user_drained_begin(BlockChild *c)
{
    ((User *)c->opaque)->drained_begin_calls++;
}

static void user_drained_end(BlockChild *c)
{
    ((User *)c->opaque)->drained_end_calls++;
}

/* A user that counts drain callbacks; requests are not postponed. */
static const BlockChildClass plain_class = {
    .get_parent_desc = test_user_desc,
    .drained_begin = user_drained_begin,
    .drained_end = user_drained_end,
};

/* An NBD-export-like user: requests wait while the node is drained. */
static const BlockChildClass postpone_class = {
    .get_parent_desc = test_user_desc,
    .drained_begin = user_drained_begin,
    .drained_end = user_drained_end,
    .postpone_requests_when_drained = true,
};

static BlockChild *attach(BlockNode *bs, const BlockChildClass *klass,
                          User *u)
{
    Error *err = NULL;
    BlockChild *c = bdrv_root_attach_child(bs, "root", klass, u,
                                           BLK_PERM_CONSISTENT_READ |
                                           BLK_PERM_WRITE, BLK_PERM_ALL,
                                           &err);
    if (!c) {
        fail_msg("attach: %s", error_get_pretty(err));
    }
    return c;
}

/* One request in a coroutine; appends its id to a shared order log. */
typedef struct Req {
    BlockChild *c;
    int id;
    int *log;
    atomic_int *n_log;
    atomic_bool done;
    int ret;
} Req;

static void coroutine_fn req_entry(void *opaque)
{
    Req *r = opaque;
    char buf[512];
    IOVector v;

    memset(buf, r->id, sizeof(buf));
    iov_vec_init_buf(&v, buf, sizeof(buf));
    r->ret = bdrv_co_pwritev(r->c, (int64_t)r->id * 512, 512, &v, 0);
    if (r->log) {
        r->log[atomic_fetch_add(r->n_log, 1)] = r->id;
    }
    atomic_store(&r->done, true);
    aio_wait_kick();
}

static void start_req(Req *r, BlockChild *c, int id, int *log,
                      atomic_int *n_log)
{
    r->c = c;
    r->id = id;
    r->log = log;
    r->n_log = n_log;
    atomic_init(&r->done, false);
    r->ret = -1;
    aio_co_enter(c->node->ctx, coroutine_create(req_entry, r));
}

/* Runs the main loop for about ms milliseconds. */
static void run_main_for(int ms)
{
    int64_t until = clock_ns() + (int64_t)ms * 1000000;

    while (clock_ns() < until) {
        aio_poll(aio_main_context(), false);
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

static void test_drain_waits_for_in_flight(void **state)
{
    BlockNode *n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"n\", "
                           "\"latency-ns\": 50000000}");
    User u = { 0 };
    BlockChild *c = attach(n, &plain_class, &u);
    Req r[3];

    for (int i = 0; i < 3; i++) {
        start_req(&r[i], c, i, NULL, NULL);
    }
    /* Each is asleep in null-co now. */
    assert_int_equal(atomic_load(&n->in_flight), 3);
    bdrv_drained_begin(n);
    for (int i = 0; i < 3; i++) {
        assert_true(atomic_load(&r[i].done));
        assert_int_equal(r[i].ret, 0);
    }
    assert_int_equal(atomic_load(&n->in_flight), 0);
    assert_int_equal(u.drained_begin_calls, 1);
    bdrv_drained_end(n);
    assert_int_equal(u.drained_end_calls, 1);
    bdrv_detach_child(c);
    del_ok("n");
}

static void test_nested_and_parents(void **state)
{
    BlockNode *n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"n\"}");
    BlockNode *r = open_ok("{\"driver\": \"raw\", \"node-name\": \"r\", "
                           "\"file\": \"n\"}");
    User un = { 0 }, ur = { 0 };
    BlockChild *cn = attach(n, &plain_class, &un);
    BlockChild *cr = attach(r, &plain_class, &ur);

    bdrv_drained_begin(n);
    assert_true(bdrv_is_quiesced(n));
    assert_true(bdrv_is_quiesced(r));   /* parents too */
    bdrv_drained_begin(n);
    bdrv_drained_begin(r);
    /* External parents are told once, however deep the nesting. */
    assert_int_equal(un.drained_begin_calls, 1);
    assert_int_equal(ur.drained_begin_calls, 1);

    bdrv_drained_end(r);
    bdrv_drained_end(n);
    assert_true(bdrv_is_quiesced(n));
    assert_true(bdrv_is_quiesced(r));
    assert_int_equal(un.drained_end_calls, 0);
    bdrv_drained_end(n);
    assert_false(bdrv_is_quiesced(n));
    assert_false(bdrv_is_quiesced(r));
    assert_int_equal(un.drained_end_calls, 1);
    assert_int_equal(ur.drained_end_calls, 1);

    /* Draining the parent does not quiesce the child. */
    bdrv_drained_begin(r);
    assert_false(bdrv_is_quiesced(n));
    assert_int_equal(un.drained_begin_calls, 1);
    bdrv_drained_end(r);

    bdrv_detach_child(cr);
    bdrv_detach_child(cn);
    del_ok("r");
    del_ok("n");
}

/* A job drains from inside its coroutine in the main loop. */
typedef struct CoDrainer {
    BlockNode *bs;
    Req *req;
    bool req_done_at_begin;
    bool finished;
} CoDrainer;

static void coroutine_fn drainer_entry(void *opaque)
{
    CoDrainer *d = opaque;

    bdrv_drained_begin(d->bs);
    d->req_done_at_begin = atomic_load(&d->req->done);
    bdrv_drained_end(d->bs);
    d->finished = true;
}

static void test_drain_from_coroutine(void **state)
{
    BlockNode *n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"n\", "
                           "\"latency-ns\": 30000000}");
    User u = { 0 };
    BlockChild *c = attach(n, &plain_class, &u);
    Req r;
    CoDrainer d = { .bs = n, .req = &r };

    start_req(&r, c, 1, NULL, NULL);
    aio_co_enter(aio_main_context(), coroutine_create(drainer_entry, &d));
    TEST_WAIT_WHILE(aio_main_context(), !d.finished);
    assert_true(d.req_done_at_begin);
    assert_int_equal(u.drained_begin_calls, 1);
    assert_int_equal(u.drained_end_calls, 1);
    assert_false(bdrv_is_quiesced(n));
    bdrv_detach_child(c);
    del_ok("n");
}

#define N_POSTPONED 50

static void test_postponed_in_order(void **state)
{
    BlockNode *n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"n\"}");
    User u = { 0 };
    BlockChild *c = attach(n, &postpone_class, &u);
    Req r[N_POSTPONED + 1];
    int log[N_POSTPONED + 1];
    atomic_int n_log = 0;

    bdrv_drained_begin(n);
    bdrv_drained_begin(n);
    for (int i = 0; i < N_POSTPONED; i++) {
        start_req(&r[i], c, i, log, &n_log);
    }
    run_main_for(20);
    assert_int_equal(atomic_load(&n_log), 0);   /* queued, not refused */
    assert_int_equal(atomic_load(&n->in_flight), 0);
    bdrv_drained_end(n);
    run_main_for(20);
    assert_int_equal(atomic_load(&n_log), 0);   /* still one section */
    bdrv_drained_end(n);
    /* Arrives after the section ended but before the queue was restarted:
     * it must still go after everything that waited. */
    start_req(&r[N_POSTPONED], c, N_POSTPONED, log, &n_log);
    TEST_WAIT_WHILE(aio_main_context(),
                    atomic_load(&n_log) < N_POSTPONED + 1);
    for (int i = 0; i <= N_POSTPONED; i++) {
        assert_int_equal(log[i], i);
        assert_int_equal(r[i].ret, 0);
    }
    assert_int_equal(atomic_load(&n->in_flight), 0);
    bdrv_detach_child(c);
    del_ok("n");
}

/*
 * A pivot inside a drained section: the parents move to the new node, their
 * quiesce state follows, and requests that waited on the old node run on
 * the new one, in order, without waiting for the old node's section to end.
 */
static void test_replace_node_while_drained(void **state)
{
    BlockNode *a = open_ok("{\"driver\": \"null-co\", \"node-name\": \"a\"}");
    BlockNode *b = open_ok("{\"driver\": \"null-co\", \"node-name\": \"b\"}");
    BlockNode *ro = open_ok("{\"driver\": \"null-co\", \"node-name\": \"ro\", "
                            "\"read-only\": true}");
    BlockNode *r = open_ok("{\"driver\": \"raw\", \"node-name\": \"r\", "
                           "\"file\": \"a\"}");
    User u = { 0 };
    BlockChild *c = attach(a, &postpone_class, &u);
    Error *err = NULL;
    Req req[5];
    int log[5];
    atomic_int n_log = 0;

    bdrv_drained_begin(a);
    assert_true(bdrv_is_quiesced(r));
    for (int i = 0; i < 5; i++) {
        start_req(&req[i], c, i, log, &n_log);
    }
    run_main_for(10);
    assert_int_equal(atomic_load(&n_log), 0);

    /* Refused (the user writes; ro is read-only): nothing moves. */
    assert_false(bdrv_replace_node(a, ro, &err));
    assert_string_equal(error_get_pretty(err), "Block node is read-only");
    error_free_or_abort_clear(&err);
    assert_ptr_equal(c->node, a);
    assert_ptr_equal(r->file->node, a);
    assert_true(bdrv_is_quiesced(r));
    assert_int_equal(u.drained_end_calls, 0);
    assert_int_equal(ro->refcnt, 1);

    assert_true(bdrv_replace_node(a, b, &err));
    assert_ptr_equal(c->node, b);
    assert_ptr_equal(r->file->node, b);
    assert_false(bdrv_is_quiesced(r));   /* b is not drained */
    assert_int_equal(u.drained_end_calls, 1);
    TEST_WAIT_WHILE(aio_main_context(), atomic_load(&n_log) < 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(log[i], i);
        assert_int_equal(req[i].ret, 0);
    }
    assert_true(bdrv_is_quiesced(a));
    bdrv_drained_end(a);
    assert_false(bdrv_is_quiesced(r));
    assert_int_equal(u.drained_end_calls, 1);
    assert_true(list_empty(&a->parents));
    TEST_WAIT_WHILE(aio_main_context(), a->refcnt > 1);

    bdrv_detach_child(c);
    del_ok("r");
    del_ok("ro");
    del_ok("b");
    del_ok("a");
}

/* ---- requests from an iothread while the main loop drains ---- */

typedef struct Pump {
    BlockChild *c;
    int count;                 /* requests to send */
    atomic_int completed;
    atomic_int failed;         /* cmocka asserts only in the main thread */
    atomic_bool finished;
} Pump;

static void coroutine_fn pump_entry(void *opaque)
{
    Pump *p = opaque;
    char buf[4096];
    IOVector v;

    memset(buf, 0x5a, sizeof(buf));
    for (int i = 0; i < p->count; i++) {
        iov_vec_init_buf(&v, buf, sizeof(buf));
        int ret = bdrv_co_pwritev(p->c, (int64_t)i * 4096 % (1 << 20), 4096,
                                  &v, 0);
        if (ret < 0) {
            atomic_fetch_add(&p->failed, 1);
        }
        atomic_fetch_add(&p->completed, 1);
    }
    atomic_store(&p->finished, true);
    aio_wait_kick();
}

static void test_iothread_requests(void **state)
{
    Error *err = NULL;
    IOThread *t = iothread_create("io0", &err);
    BlockNode *n;
    User u = { 0 };
    BlockChild *c;
    Pump p[4];

    if (!t) {
        fail_msg("iothread: %s", error_get_pretty(err));
    }
    n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"n\", "
                "\"latency-ns\": 200000}");
    if (!bdrv_set_aio_context(n, iothread_get_context(t), &err)) {
        fail_msg("set context: %s", error_get_pretty(err));
    }
    c = attach(n, &postpone_class, &u);
    for (int i = 0; i < 4; i++) {
        p[i].c = c;
        p[i].count = 300;
        atomic_init(&p[i].completed, 0);
        atomic_init(&p[i].failed, 0);
        atomic_init(&p[i].finished, false);
        aio_co_enter(n->ctx, coroutine_create(pump_entry, &p[i]));
    }
    for (int round = 0; round < 5; round++) {
        int before = -1, after = 0;

        run_main_for(5);
        bdrv_drained_begin(n);
        /* A request whose driver part ended just before the drain still
         * counts itself a moment later: wait until the count settles. */
        while (before != after) {
            before = after;
            run_main_for(5);
            after = 0;
            for (int i = 0; i < 4; i++) {
                after += atomic_load(&p[i].completed);
            }
        }
        run_main_for(20);
        after = 0;
        for (int i = 0; i < 4; i++) {
            after += atomic_load(&p[i].completed);
        }
        /* Nothing gets through a drained node. */
        assert_int_equal(before, after);
        bdrv_drained_end(n);
    }
    for (int i = 0; i < 4; i++) {
        TEST_WAIT_WHILE(aio_main_context(), !atomic_load(&p[i].finished));
        assert_int_equal(atomic_load(&p[i].completed), 300);
        assert_int_equal(atomic_load(&p[i].failed), 0);
    }
    bdrv_detach_child(c);
    if (!bdrv_set_aio_context(n, aio_main_context(), &err)) {
        fail_msg("set context: %s", error_get_pretty(err));
    }
    /* The iothread hands back the reference its restart held. */
    TEST_WAIT_WHILE(aio_main_context(), n->refcnt > 1);
    del_ok("n");
    iothread_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drain_waits_for_in_flight),
        cmocka_unit_test(test_nested_and_parents),
        cmocka_unit_test(test_drain_from_coroutine),
        cmocka_unit_test(test_postponed_in_order),
        cmocka_unit_test(test_replace_node_while_drained),
        cmocka_unit_test(test_iothread_requests),
    };

    return cmocka_run_group_tests(tests, main_loop_setup, NULL);
}
