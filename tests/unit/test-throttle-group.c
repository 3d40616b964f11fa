/*
 * The throttle group's queue (object/throttle-group.h): requests over the
 * budget wait in arrival order, a drained member's waiters pass at once,
 * and qom-set of the limits re-times the waiting ones; limits merge and a
 * refused qom-set changes nothing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "object/object.h"
#include "object/throttle-group.h"
#include "test-wait.h"
#include "testutil.h"

typedef struct Req {
    ThrottleGroup *g;
    ThrottleMember *m;
    int idx;
    int *order;
    int *n_done;
} Req;

static void coroutine_fn req_entry(void *opaque)
{
    Req *r = opaque;

    throttle_group_co_wait(r->g, r->m, false, 4096);
    r->order[(*r->n_done)++] = r->idx;
}

static void add_group(const char *json)
{
    json_t *args = json_loads(json, 0, NULL);
    Error *err = NULL;

    assert_non_null(args);
    assert_true(object_add(args, false, &err));
    json_decref(args);
}

/* Starts n requests of member m on group g; returns how many passed at
 * once. */
static int start(Req *reqs, int n, ThrottleGroup *g, ThrottleMember *m,
                 int *order, int *n_done)
{
    for (int i = 0; i < n; i++) {
        reqs[i] = (Req) { .g = g, .m = m, .idx = i, .order = order,
                          .n_done = n_done };
        aio_co_enter(aio_main_context(), coroutine_create(req_entry,
                                                          &reqs[i]));
    }
    return *n_done;
}

static void test_drained_member_passes_in_order(void **state)
{
    ThrottleMember m = { 0 };
    int order[5], n_done = 0;
    Req reqs[5];
    ThrottleGroup *g;

    (void)state;
    /* 1 op/s: the first passes, the rest would wait seconds each. */
    add_group("{\"qom-type\": \"throttle-group\", \"id\": \"g\", "
              "\"x-iops-total\": 1}");
    g = throttle_group_get("g", NULL);
    assert_non_null(g);
    assert_int_equal(start(reqs, 5, g, &m, order, &n_done), 1);
    throttle_group_member_drained(g, &m, true);
    TEST_WAIT_WHILE(aio_main_context(), n_done < 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(order[i], i);
    }
    throttle_group_member_drained(g, &m, false);
    throttle_group_put(g);
    assert_true(object_del("g", NULL));
}

static void test_qom_set_retimes_in_order(void **state)
{
    ThrottleMember m = { 0 };
    int order[4], n_done = 0;
    Req reqs[4];
    ThrottleGroup *g;
    Error *err = NULL;
    json_t *v, *lim;

    (void)state;
    add_group("{\"qom-type\": \"throttle-group\", \"id\": \"g\", "
              "\"limits\": {\"iops-read\": 1, \"bps-read\": 1000000}}");
    g = throttle_group_get("g", NULL);
    assert_int_equal(start(reqs, 4, g, &m, order, &n_done), 1);
    /* Refused: nothing changes, nobody passes. */
    v = json_pack("{si}", "iops-total", 5);
    assert_false(object_qom_set("g", "limits", v, &err));
    assert_string_equal(error_get_pretty(err), "bps/iops/max total values "
                        "and read/write values cannot be used at the same "
                        "time");
    error_free(err);
    err = NULL;
    json_decref(v);
    assert_int_equal(n_done, 1);
    /* Merged: bps-read stays, iops-read goes way up. */
    v = json_pack("{si}", "iops-read", 1000000);
    assert_true(object_qom_set("/objects/g", "limits", v, NULL));
    json_decref(v);
    TEST_WAIT_WHILE(aio_main_context(), n_done < 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(order[i], i);
    }
    lim = object_qom_get("g", "limits", NULL);
    assert_int_equal(json_integer_value(json_object_get(lim, "iops-read")),
                     1000000);
    assert_int_equal(json_integer_value(json_object_get(lim, "bps-read")),
                     1000000);
    json_decref(lim);
    /* In use: not deleted. */
    assert_false(object_del("g", &err));
    assert_string_equal(error_get_pretty(err),
                        "object 'g' is in use, can not be deleted");
    error_free(err);
    throttle_group_put(g);
    assert_true(object_del("g", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drained_member_passes_in_order),
        cmocka_unit_test(test_qom_set_retimes_in_order),
    };
    return cmocka_run_group_tests(tests, main_loop_setup, NULL);
}
