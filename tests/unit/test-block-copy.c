/*
 * The copy engine of backup (job/block-copy.c) on raw files, no daemon:
 * a client's copy touches only its clusters; background workers and
 * client copies racing over the same clusters copy each exactly once
 * (progress adds up to the length, the target equals the source); a
 * failed task makes its clusters dirty again; the daemon-wide buffer
 * budget makes a second claim wait for the first task.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "job/block-copy.h"
#include "test-wait.h"

#define MiB (1LL << 20)
#define LEN (4 * MiB)
#define CS  65536

static char dir[] = "/var/tmp/test-block-copy-XXXXXX";

typedef struct Fixture {
    BlockNode *src, *tgt;
    BlockChild *sc, *tc;
    BlockCopyState *bcs;
    int64_t progress;
} Fixture;

static void on_progress(void *opaque, int64_t bytes)
{
    Fixture *f = opaque;
    f->progress += bytes;
}

/* src: pattern 0x11 everywhere but a hole at 1M-2M; tgt: zeroes.
 * src_driver "blkdebug" puts a read error (once) at 3M. */
static void fixture_open(Fixture *f, bool blkdebug)
{
    Error *err = NULL;

    memset(f, 0, sizeof(*f));
    assert_int_equal(sh("rm -f %s/src.raw %s/tgt.raw && "
                        "qemu-img create -q -f raw %s/src.raw %lld && "
                        "qemu-img create -q -f raw %s/tgt.raw %lld && "
                        "qemu-io -f raw -c 'write -P 0x11 0 1M' "
                        "-c 'write -P 0x22 2M 2M' %s/src.raw >/dev/null",
                        dir, dir, dir, LEN, dir, LEN, dir), 0);
    if (blkdebug) {
        f->src = open_ok("{\"driver\":\"raw\",\"node-name\":\"src\","
                         "\"file\":{\"driver\":\"blkdebug\","
                         "\"inject-error\":[{\"event\":\"read_aio\","
                         "\"once\":true,\"sector\":%lld}],"
                         "\"image\":{\"driver\":\"file\","
                         "\"filename\":\"%s/src.raw\"}}}",
                         3 * MiB / 512, dir);
    } else {
        f->src = open_ok("{\"driver\":\"raw\",\"node-name\":\"src\","
                         "\"file\":{\"driver\":\"file\","
                         "\"filename\":\"%s/src.raw\"}}", dir);
    }
    f->tgt = open_ok("{\"driver\":\"raw\",\"node-name\":\"tgt\","
                     "\"file\":{\"driver\":\"file\","
                     "\"filename\":\"%s/tgt.raw\"}}", dir);
    f->sc = bdrv_root_attach_child(f->src, "source", &test_user_class, NULL,
                                   BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL,
                                   &err);
    f->tc = bdrv_root_attach_child(f->tgt, "target", &test_user_class, NULL,
                                   BLK_PERM_WRITE, BLK_PERM_ALL, &err);
    assert_non_null(f->sc);
    assert_non_null(f->tc);
    f->bcs = block_copy_state_new(f->sc, f->tc, LEN, CS, &err);
    assert_non_null(f->bcs);
    block_copy_set_progress(f->bcs, on_progress, f);
}

static void fixture_close(Fixture *f)
{
    Error *err = NULL;
    block_copy_state_free(f->bcs);
    bdrv_detach_child(f->sc);
    bdrv_detach_child(f->tc);
    assert_true(bdrv_del_blockdev("src", &err));
    assert_true(bdrv_del_blockdev("tgt", &err));
}

/* Whether the files agree over [off, off+len). */
static bool same(int64_t off, int64_t len)
{
    return sh("cmp -s -i %" PRId64 ":%" PRId64 " -n %" PRId64
              " %s/src.raw %s/tgt.raw", off, off, len, dir, dir) == 0;
}

static bool tgt_zero(int64_t off, int64_t len)
{
    return sh("qemu-io -f raw -c 'read -P 0 %" PRId64 " %" PRId64
              "' %s/tgt.raw | grep -q 'Pattern verification failed'", off,
              len, dir) != 0;
}

/* ---- running coroutines ---- */

typedef struct Co {
    void (*fn)(struct Co *c);
    Fixture *f;
    int64_t offset, bytes;
    int ret;
    bool done;
} Co;

static void coroutine_fn co_entry(void *opaque)
{
    Co *c = opaque;
    c->fn(c);
    c->done = true;
    aio_wait_kick();
}

static void start(Co *c)
{
    aio_co_enter(aio_main_context(), coroutine_create(co_entry, c));
}

static void wait_all(Co *cs, int n)
{
    for (int i = 0; i < n; i++) {
        TEST_WAIT_WHILE(aio_main_context(), !cs[i].done);
    }
}

static void coroutine_fn client_copy(Co *c)
{
    bool is_read;
    c->ret = block_copy(c->f->bcs, c->offset, c->bytes, &is_read);
}

/* Background: claims and runs tasks until nothing is dirty. */
static void coroutine_fn background(Co *c)
{
    int64_t cursor = c->offset;
    BlockCopyTask *t;
    bool is_read;

    while ((t = block_copy_claim(c->f->bcs, &cursor, c->bytes))) {
        int ret = block_copy_task_run(t, &is_read);
        if (ret < 0) {
            c->ret = ret;
            break;           /* as the job does: stop at the first error */
        }
    }
}

/* ---- tests ---- */

static void test_client_copy_touches_only_its_clusters(void **state)
{
    Fixture f;
    Co c = { .fn = client_copy, .f = &f, .offset = 65536 + 100,
             .bytes = 10 };

    (void)state;
    fixture_open(&f, false);
    start(&c);
    wait_all(&c, 1);
    assert_int_equal(c.ret, 0);
    /* One cluster: 64K-128K. */
    assert_int_equal(f.progress, CS);
    assert_int_equal(block_copy_remaining(f.bcs), LEN - CS);
    assert_false(hbitmap_get(block_copy_bitmap(f.bcs), 65536));
    assert_true(hbitmap_get(block_copy_bitmap(f.bcs), 0));
    assert_true(hbitmap_get(block_copy_bitmap(f.bcs), 131072));
    fixture_close(&f);
    assert_true(same(65536, CS));
    assert_true(tgt_zero(0, 65536));
    assert_true(tgt_zero(131072, 65536));
}

static void test_race_copies_each_cluster_once(void **state)
{
    Fixture f;
    Co cs[12];

    (void)state;
    fixture_open(&f, false);
    memset(cs, 0, sizeof(cs));
    /* Four background workers of 256K and eight clients over ranges that
     * overlap them and each other. */
    for (int i = 0; i < 4; i++) {
        cs[i] = (Co){ .fn = background, .f = &f, .offset = i * MiB,
                      .bytes = 256 * 1024 };
    }
    for (int i = 4; i < 12; i++) {
        cs[i] = (Co){ .fn = client_copy, .f = &f,
                      .offset = (i - 4) * 512 * 1024 - 1000,
                      .bytes = 700 * 1024 };
        if (cs[i].offset < 0) {
            cs[i].offset = 0;
        }
    }
    for (int i = 0; i < 12; i++) {
        start(&cs[i]);
    }
    wait_all(cs, 12);
    for (int i = 0; i < 12; i++) {
        assert_int_equal(cs[i].ret, 0);
    }
    assert_int_equal(f.progress, LEN);
    assert_int_equal(block_copy_remaining(f.bcs), 0);
    assert_int_equal(block_copy_tasks_in_flight(f.bcs), 0);
    fixture_close(&f);
    assert_true(same(0, LEN));
}

static void test_failed_task_is_dirty_again(void **state)
{
    Fixture f;
    Co c = { .fn = background, .f = &f, .offset = 3 * MiB,
             .bytes = 1 * MiB };

    (void)state;
    fixture_open(&f, true);
    start(&c);
    wait_all(&c, 1);
    assert_int_equal(c.ret, -EIO);
    /* The failed range is dirty again, nothing else was copied. */
    assert_int_equal(block_copy_remaining(f.bcs), LEN);
    assert_int_equal(f.progress, 0);
    assert_true(hbitmap_get(block_copy_bitmap(f.bcs), 3 * MiB));
    c = (Co){ .fn = background, .f = &f, .offset = 0, .bytes = 1 * MiB };
    start(&c);
    wait_all(&c, 1);
    assert_int_equal(c.ret, 0);
    assert_int_equal(block_copy_remaining(f.bcs), 0);
    assert_int_equal(f.progress, LEN);
    fixture_close(&f);
    assert_true(same(0, LEN));
}

typedef struct BudgetCo {
    Co co;
    BlockCopyTask *task;
} BudgetCo;

static void coroutine_fn claim_only(Co *c)
{
    int64_t cursor = c->offset;
    ((BudgetCo *)c)->task = block_copy_claim(c->f->bcs, &cursor, c->bytes);
}

static void coroutine_fn run_task(Co *c)
{
    bool is_read;
    c->ret = block_copy_task_run(((BudgetCo *)c)->task, &is_read);
}

static void test_global_budget(void **state)
{
    Fixture f;
    BudgetCo a = { .co = { .fn = claim_only, .f = &f, .offset = 0,
                           .bytes = 1 * MiB } };
    BudgetCo b = { .co = { .fn = claim_only, .f = &f, .offset = 2 * MiB,
                           .bytes = 1 * MiB } };

    (void)state;
    fixture_open(&f, false);
    block_copy_set_global_mem_limit(1 * MiB);
    start(&a.co);
    wait_all(&a.co, 1);
    assert_non_null(a.task);
    assert_int_equal(block_copy_global_mem_in_use(), 1 * MiB);
    start(&b.co);
    /* b waits for budget while a's task holds it. */
    for (int i = 0; i < 10; i++) {
        aio_poll(aio_main_context(), false);
    }
    assert_false(b.co.done);
    a.co = (Co){ .fn = run_task, .f = &f };
    start(&a.co);
    wait_all(&a.co, 1);
    wait_all(&b.co, 1);
    assert_non_null(b.task);
    b.co = (Co){ .fn = run_task, .f = &f };
    start(&b.co);
    wait_all(&b.co, 1);
    assert_int_equal(block_copy_global_mem_in_use(), 0);
    block_copy_set_global_mem_limit(BLOCK_COPY_GLOBAL_MEM_DEFAULT);
    fixture_close(&f);
    assert_true(same(0, MiB));
    assert_true(same(2 * MiB, MiB));
}

int main(void)
{
    int setup = qemu_img_main_setup(dir);

    if (setup != 0) {
        return setup;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_copy_touches_only_its_clusters),
        cmocka_unit_test(test_race_copies_each_cluster_once),
        cmocka_unit_test(test_failed_task_is_dirty_again),
        cmocka_unit_test(test_global_budget),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    tmpdir_remove(dir);
    return r;
}
