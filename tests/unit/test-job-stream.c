/*
 * block-stream and intermediate block-commit on real qcow2 chains made by
 * qemu-img/qemu-io, driven through job/ directly (no daemon): the bytes
 * afterwards (qemu-img compare against a raw reference made before the
 * job), the chain (the header's backing name), qemu-img check, the event
 * order, cancel (chain unchanged), speed throttling the first chunk, and
 * op blockers refusing blockdev-del and a second job.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "job/blockjob.h"
#include "job/jobs.h"
#include "util/event.h"
#include "test-wait.h"

static char dir[] = "/var/tmp/test-job-stream-XXXXXX";
static json_t *events;

static void sink(const char *name, json_t *data, void *opaque)
{
    const char *status = json_string_value(json_object_get(data, "status"));
    char buf[96];
    snprintf(buf, sizeof(buf), "%s%s%s", name, status ? ":" : "",
             status ? status : "");
    json_array_append_new(events, json_string(buf));
}

/* The events recorded since the last call, as one string. */
static char *events_str(void)
{
    char *s = json_strings_join(events);

    json_array_clear(events);
    return s;
}

/*
 * base: 0-4M pattern 1, 8M+ zeroes allocated (write -z)
 * mid:  2M-6M pattern 2, 12M-13M zero cluster over base data? (base has
 *       data there), 
 * top:  5M-7M pattern 3
 * A raw reference of top's view is made before any job.
 */
static void make_chain(void)
{
    assert_int_equal(sh("cd %s && rm -f *.qcow2 *.raw && "
        "qemu-img create -q -f qcow2 base.qcow2 16M && "
        "qemu-io -c 'write -P 1 0 4M' -c 'write -P 4 12M 2M' base.qcow2 "
        ">/dev/null && "
        "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 && "
        "qemu-io -c 'write -P 2 2M 4M' -c 'write -z 12M 1M' mid.qcow2 "
        ">/dev/null && "
        "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 && "
        "qemu-io -c 'write -P 3 5M 2M' top.qcow2 >/dev/null && "
        "qemu-img convert -O raw top.qcow2 ref.raw", dir), 0);
}

static void check_images(const char *image)
{
    char *out = sh_out("cd %s && qemu-img check -q %s 2>&1 && "
                       "qemu-img compare -q -f raw -F qcow2 ref.raw %s 2>&1 && "
                       "echo OK", dir, image, image);
    if (strcmp(out, "OK\n") != 0) {
        fail_msg("%s: %s", image, out);
    }
    free(out);
}

/* The backing file name in image's header ("" for none). */
static char *backing_of(const char *image)
{
    char *out = sh_out("cd %s && qemu-img info --output=json %s | "
                       "/usr/bin/python3 -c 'import json,sys; "
                       "print(json.load(sys.stdin).get(\"backing-filename\","
                       " \"\"), end=\"\")'", dir, image);
    return out;
}

/* Opens <name>.qcow2 of the chain as node name; members: more JSON
 * members of its options, each with its comma ("\"read-only\":true,"). */
static BlockNode *open_layer(const char *name, const char *members)
{
    return open_ok("{\"driver\":\"qcow2\",\"node-name\":\"%s\",%s"
                   "\"file\":{\"driver\":\"file\","
                   "\"filename\":\"%s/%s.qcow2\"}}", name, members, dir, name);
}

/* The events recorded since the last check are exactly want. */
static void assert_events(const char *want)
{
    char *ev = events_str();

    assert_string_equal(ev, want);
    free(ev);
}

/* image's header names want as its backing file ("" for none). */
static void assert_backing(const char *image, const char *want)
{
    char *b = backing_of(image);

    assert_string_equal(b, want);
    free(b);
}

/* image's header names <dir>/name as its backing file. */
static void assert_backing_in_dir(const char *image, const char *name)
{
    char want[512];

    snprintf(want, sizeof(want), "%s/%s", dir, name);
    assert_backing(image, want);
}

static void run_until_gone(const char *id)
{
    TEST_WAIT_WHILE(aio_main_context(), job_get(id) != NULL);
}

static BlockJobOptions opts(const char *id)
{
    BlockJobOptions o = { .job_id = id, .on_error = JOB_ON_ERROR_REPORT };
    return o;
}

static void test_stream_whole_chain(void **state)
{
    Error *err = NULL;
    make_chain();
    BlockNode *top = open_layer("top", "");
    BlockJobOptions o = opts("stream0");
    Job *job = stream_start(&o, top, NULL, NULL, &err);
    assert_non_null(job);
    /* busy nodes */
    assert_false(bdrv_del_blockdev("top", &err));
    assert_string_equal(error_get_pretty(err), "Node 'top' is busy: block "
                        "device is in use by block job: stream");
    error_free_or_abort_clear(&err);
    BlockJobOptions o2 = opts("stream1");
    assert_null(stream_start(&o2, top, NULL, NULL, &err));
    assert_string_equal(error_get_pretty(err), "Node 'top' is busy: block "
                        "device is in use by block job: stream");
    error_free_or_abort_clear(&err);
    run_until_gone("stream0");
    assert_events("JOB_STATUS_CHANGE:created "
        "JOB_STATUS_CHANGE:running JOB_STATUS_CHANGE:waiting "
        "JOB_STATUS_CHANGE:pending BLOCK_JOB_COMPLETED "
        "JOB_STATUS_CHANGE:concluded JOB_STATUS_CHANGE:null");
    assert_null(top->backing);
    del_ok("top");
    assert_backing("top.qcow2", "");
    check_images("top.qcow2");
}

static void test_stream_to_base(void **state)
{
    Error *err = NULL;
    make_chain();
    BlockNode *base = open_layer("base", "\"read-only\":true,");
    BlockNode *top = open_layer("top", "");
    (void)base;
    /* top's header chain opened mid and base again by file name; stream
     * down to the node that the chain holds. */
    BlockNode *chain_base = block_chain_base(top);
    BlockJobOptions o = opts("s2");
    o.flags = JOB_MANUAL_FINALIZE | JOB_MANUAL_DISMISS;
    Job *job = stream_start(&o, top, chain_base, NULL, &err);
    assert_non_null(job);
    TEST_WAIT_WHILE(aio_main_context(), job->status != JOB_STATUS_PENDING);
    assert_true(job_finalize(job, &err));
    assert_int_equal(job->status, JOB_STATUS_CONCLUDED);
    assert_true(job_dismiss(&job, &err));
    assert_events("JOB_STATUS_CHANGE:created "
        "JOB_STATUS_CHANGE:running JOB_STATUS_CHANGE:waiting "
        "JOB_STATUS_CHANGE:pending BLOCK_JOB_PENDING BLOCK_JOB_COMPLETED "
        "JOB_STATUS_CHANGE:concluded JOB_STATUS_CHANGE:null");
    assert_ptr_equal(top->backing->node, chain_base);
    del_ok("top");
    del_ok("base");
    assert_backing_in_dir("top.qcow2", "base.qcow2");
    check_images("top.qcow2");
}

static void test_stream_cancel_and_speed(void **state)
{
    Error *err = NULL;
    make_chain();
    BlockNode *top = open_layer("top", "");
    BlockJobOptions o = opts("s3");
    o.speed = 64 * 1024;    /* a 64 KiB chunk a second */
    Job *job = stream_start(&o, top, NULL, NULL, &err);
    assert_non_null(job);
    /* Let it run a little: the first chunk must wait for its share. */
    for (int i = 0; i < 20; i++) {
        aio_poll(aio_main_context(), false);
    }
    assert_int_equal(job->progress_current, 0);
    assert_int_equal(job_cancel_sync(job, true, &err), -ECANCELED);
    assert_events("JOB_STATUS_CHANGE:created "
        "JOB_STATUS_CHANGE:running JOB_STATUS_CHANGE:aborting "
        "BLOCK_JOB_CANCELLED JOB_STATUS_CHANGE:concluded "
        "JOB_STATUS_CHANGE:null");
    assert_non_null(top->backing);
    del_ok("top");
    assert_backing("top.qcow2", "mid.qcow2");
    check_images("top.qcow2");
}

static void test_commit_intermediate(void **state)
{
    Error *err = NULL;
    make_chain();
    /* Base writable: commit writes into it. */
    open_layer("base", "");
    open_layer("mid", "\"backing\":\"base\",\"read-only\":true,");
    BlockNode *top = open_layer("top", "\"backing\":\"mid\",");
    BlockNode *mid = bdrv_find_node("mid"), *base = bdrv_find_node("base");
    BlockJobOptions o = opts("commit0");
    Job *job = commit_start(&o, top, mid, base, NULL, &err);
    if (!job) {
        fail_msg("commit: %s", error_get_pretty(err));
    }
    assert_false(bdrv_del_blockdev("mid", &err));
    error_free_or_abort_clear(&err);
    run_until_gone("commit0");
    assert_events("JOB_STATUS_CHANGE:created "
        "JOB_STATUS_CHANGE:running JOB_STATUS_CHANGE:waiting "
        "JOB_STATUS_CHANGE:pending BLOCK_JOB_COMPLETED "
        "JOB_STATUS_CHANGE:concluded JOB_STATUS_CHANGE:null");
    assert_ptr_equal(top->backing->node, base);
    /* mid survives, detached from the chain */
    del_ok("top");
    del_ok("mid");
    del_ok("base");
    assert_backing_in_dir("top.qcow2", "base.qcow2");
    check_images("top.qcow2");
    assert_int_equal(sh("cd %s && qemu-img check -q base.qcow2", dir), 0);
}

/* A drained section on a node the job uses pauses the job (visible as
 * paused/running, as in the reference) and nothing of the job is in flight
 * inside it; the end resumes it. */
static void test_drain_pauses_job(void **state)
{
    Error *err = NULL;
    make_chain();
    BlockNode *top = open_layer("top", "");
    BlockJobOptions o = opts("dr");
    o.speed = 1024 * 1024;
    Job *job = stream_start(&o, top, NULL, NULL, &err);
    assert_non_null(job);
    for (int i = 0; i < 5; i++) {
        aio_poll(aio_main_context(), false);
    }
    bdrv_drained_begin(top);
    /* drained_begin returned: the body is stopped, nothing in flight */
    assert_false(job->busy);
    assert_int_equal(atomic_load(&top->in_flight), 0);
    uint64_t done = job->progress_current;
    for (int i = 0; i < 20; i++) {
        aio_poll(aio_main_context(), false);
    }
    assert_int_equal(job->progress_current, done);
    assert_int_equal(job->status, JOB_STATUS_PAUSED);
    bdrv_drained_end(top);
    TEST_WAIT_WHILE(aio_main_context(), job->status != JOB_STATUS_RUNNING);
    assert_true(job_set_speed(job, 0, &err));
    run_until_gone("dr");
    assert_events("JOB_STATUS_CHANGE:created "
        "JOB_STATUS_CHANGE:running JOB_STATUS_CHANGE:paused "
        "JOB_STATUS_CHANGE:running JOB_STATUS_CHANGE:waiting "
        "JOB_STATUS_CHANGE:pending BLOCK_JOB_COMPLETED "
        "JOB_STATUS_CHANGE:concluded JOB_STATUS_CHANGE:null");
    del_ok("top");
    check_images("top.qcow2");
}

/* ---- a client writing to top while the job copies ---- */

static char *client_desc(BlockChild *c)
{
    return strdup("export 'client'");
}

static const BlockChildClass client_class = {
    .get_parent_desc = client_desc,
    .postpone_requests_when_drained = true,
};

typedef struct Client {
    BlockChild *c;
    uint8_t *expect;          /* top's view, updated with every write */
    Job *job;
    int writes;
    bool done;
} Client;

static void coroutine_fn client_co(void *opaque)
{
    Client *cl = opaque;
    uint8_t *buf = blk_aligned_alloc(4096, 65536);
    unsigned seed = 1;
    /* Write 4-64 KiB pieces all over the image (mostly where mid holds
     * data that the job is copying up) until the job is done. */
    while (job_get("race") || cl->writes < 64) {
        int64_t len = 4096 * (1 + rand_r(&seed) % 16);
        int64_t off = 4096 * (int64_t)(rand_r(&seed) % ((16 << 20) / 4096));
        if (off + len > (16 << 20)) {
            off = (16 << 20) - len;
        }
        memset(buf, 0x40 + cl->writes % 64, (size_t)len);
        IOVector qiov;
        iov_vec_init_buf(&qiov, buf, (size_t)len);
        assert_int_equal(bdrv_co_pwritev(cl->c, off, len, &qiov, 0), 0);
        memcpy(cl->expect + off, buf, (size_t)len);
        cl->writes++;
        if (cl->writes > 5000) {
            break;
        }
    }
    free(buf);
    cl->done = true;
}

static void test_stream_with_concurrent_writer(void **state)
{
    Error *err = NULL;
    make_chain();
    BlockNode *top = open_layer("top", "");
    Client cl = { 0 };
    cl.c = bdrv_root_attach_child(top, "root", &client_class, &cl,
                                  BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                                  BLK_PERM_ALL, &err);
    assert_non_null(cl.c);
    cl.expect = malloc(16 << 20);
    char *path;
    assert_true(asprintf(&path, "%s/ref.raw", dir) > 0);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(cl.expect, 1, 16 << 20, f), 16 << 20);
    fclose(f);

    BlockJobOptions o = opts("race");
    Job *job = stream_start(&o, top, NULL, NULL, &err);
    assert_non_null(job);
    aio_co_enter(aio_main_context(), coroutine_create(client_co, &cl));
    TEST_WAIT_WHILE(aio_main_context(), !cl.done);
    run_until_gone("race");
    json_array_clear(events);
    assert_true(cl.writes >= 64);
    assert_null(top->backing);

    /* every client write survived the copy */
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(cl.expect, 1, 16 << 20, f), 16 << 20);
    fclose(f);
    free(path);
    bdrv_detach_child(cl.c);
    free(cl.expect);
    del_ok("top");
    check_images("top.qcow2");
}

int main(void)
{
    int setup = qemu_img_main_setup(dir);

    if (setup != 0) {
        return setup;
    }
    events = json_array();
    event_set_sink(sink, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_whole_chain),
        cmocka_unit_test(test_stream_to_base),
        cmocka_unit_test(test_stream_cancel_and_speed),
        cmocka_unit_test(test_commit_intermediate),
        cmocka_unit_test(test_stream_with_concurrent_writer),
        cmocka_unit_test(test_drain_pauses_job),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    tmpdir_remove(dir);
    json_decref(events);
    return r;
}
