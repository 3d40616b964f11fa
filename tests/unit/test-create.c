/*
 * blockdev-create (the "create" job, file and qcow2) and blockdev-snapshot,
 * driven through their command handlers (arguments checked as the monitor
 * does) with no daemon: events, query-jobs, messages as
 * qemu-storage-daemon 7.2 words them, and the images checked by qemu-img
 * and qemu-io.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#include "block/block.h"
#include "job/job.h"
#include "qmp/commands.h"
#include "qmp/snapshot.h"
#include "util/event.h"
#include "test-wait.h"

static char dir[] = "/tmp/test-create-XXXXXX";

/* ---- events ---- */

static char evbuf[4096];

static void sink(const char *name, json_t *data, void *opaque)
{
    const char *status = json_string_value(json_object_get(data, "status"));
    size_t n = strlen(evbuf);

    snprintf(evbuf + n, sizeof(evbuf) - n, "%s%s", n ? " " : "",
             status ? status : name);
}

#define assert_events(expected)                                     \
    do {                                                            \
        assert_string_equal(evbuf, expected);                       \
        evbuf[0] = '\0';                                            \
    } while (0)

/* ---- commands ---- */

/* Runs a command of the table as the monitor would: checks the arguments
 * against its spec, then calls it.  Returns NULL or the error message
 * (static buffer). */
static const char *cmd(const char *name, const char *args_json)
{
    static char msg[1024];
    json_t *args = json_parse_ok(args_json);
    const QmpCommand *c = NULL;
    json_t *ret = NULL;
    Error *err = NULL;
    bool ok;

    for (const QmpCommand *t = qmp_create_commands; t->name; t++) {
        if (!strcmp(t->name, name)) {
            c = t;
        }
    }
    assert_non_null(c);
    ok = argspec_check(args, c->args, "", false, &err) &&
         c->fn(args, &ret, &err);
    json_decref(args);
    json_decref(ret);
    if (ok) {
        return NULL;
    }
    snprintf(msg, sizeof(msg), "%s", error_get_pretty(err));
    error_free(err);
    return msg;
}

#define cmd_ok(name, ...)                                                   \
    do {                                                                    \
        char *a_ = NULL;                                                    \
        assert_true(asprintf(&a_, __VA_ARGS__) > 0);                        \
        const char *e_ = cmd(name, a_);                                     \
        if (e_) {                                                           \
            fail_msg("%s %s: %s", name, a_, e_);                            \
        }                                                                   \
        free(a_);                                                           \
    } while (0)

#define cmd_fails(msg, name, ...)                                           \
    do {                                                                    \
        char *a_ = NULL;                                                    \
        assert_true(asprintf(&a_, __VA_ARGS__) > 0);                        \
        const char *e_ = cmd(name, a_);                                     \
        if (!e_) {                                                          \
            fail_msg("%s %s succeeded", name, a_);                          \
        }                                                                   \
        assert_string_equal(e_, msg);                                       \
        free(a_);                                                           \
    } while (0)

/* Waits for job id to conclude; returns its query-jobs entry. */
static json_t *wait_concluded(const char *id)
{
    Job *job = job_get(id);
    json_t *list, *e;
    size_t i;

    assert_non_null(job);
    TEST_WAIT_WHILE(aio_main_context(), job->status != JOB_STATUS_CONCLUDED);
    list = job_query_jobs();
    json_array_foreach(list, i, e) {
        if (!strcmp(json_string_value(json_object_get(e, "id")), id)) {
            json_incref(e);
            json_decref(list);
            return e;
        }
    }
    fail_msg("job %s not in query-jobs", id);
    return NULL;
}

static void dismiss(const char *id)
{
    Job *job = job_get(id);
    Error *err = NULL;

    assert_non_null(job);
    if (!job_dismiss(&job, &err)) {
        fail_msg("dismiss %s: %s", id, error_get_pretty(err));
    }
}

/* Runs blockdev-create, waits, returns the job error ("" if none) and
 * dismisses the job. */
static char *create(const char *options_json)
{
    char *args = NULL, *res;
    json_t *info;
    const char *e;

    assert_true(asprintf(&args, "{\"job-id\": \"c\", \"options\": %s}",
                         options_json) > 0);
    e = cmd("blockdev-create", args);
    if (e) {
        fail_msg("blockdev-create %s: %s", args, e);
    }
    free(args);
    info = wait_concluded("c");
    assert_string_equal(json_string_value(json_object_get(info, "type")),
                        "create");
    assert_int_equal(json_integer_value(json_object_get(info,
                                                        "current-progress")),
                     1);
    assert_int_equal(json_integer_value(json_object_get(info,
                                                        "total-progress")),
                     1);
    res = strdup(json_string_value(json_object_get(info, "error")) ?: "");
    json_decref(info);
    dismiss("c");
    return res;
}

static void create_fails(const char *msg, const char *options_json)
{
    char *e = create(options_json);

    assert_string_equal(e, msg);
    free(e);
    assert_events("created running aborting concluded null");
}

static void create_ok(const char *options_json)
{
    char *e = create(options_json);

    if (e[0]) {
        fail_msg("create %s: %s", options_json, e);
    }
    free(e);
    assert_events("created running waiting pending concluded null");
}

/* ---- blockdev-create: arguments ---- */

static void test_create_args(void **state)
{
    cmd_fails("Parameter 'options' is missing", "blockdev-create",
              "{\"job-id\": \"c\"}");
    cmd_fails("Parameter 'job-id' is missing", "blockdev-create",
              "{\"options\": {}}");
    cmd_fails("Invalid parameter type for 'options', expected: object",
              "blockdev-create", "{\"job-id\": \"c\", \"options\": 5}");
    cmd_fails("Parameter 'options.driver' is missing", "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"filename\": \"a\"}}");
    cmd_fails("Parameter 'driver' does not accept value 'bogus'",
              "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"driver\": \"bogus\"}}");
    cmd_fails("Driver does not support blockdev-create", "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"driver\": \"null-co\"}}");
    cmd_fails("Driver does not support blockdev-create", "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"driver\": \"raw\"}}");
    cmd_fails("Block driver 'vmdk' not found or not supported",
              "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"driver\": \"vmdk\"}}");
    cmd_fails("Parameter 'options.size' is missing", "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"driver\": \"file\", "
              "\"filename\": \"a\"}}");
    cmd_fails("Parameter 'options.size' expects uint64", "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"driver\": \"file\", "
              "\"filename\": \"a\", \"size\": \"1M\"}}");
    cmd_fails("Parameter 'preallocation' does not accept value 'bogus'",
              "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"driver\": \"file\", "
              "\"filename\": \"a\", \"size\": 0, \"preallocation\": "
              "\"bogus\"}}");
    cmd_fails("Parameter 'options.bogus' is unexpected", "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"driver\": \"qcow2\", "
              "\"file\": \"f\", \"size\": 0, \"bogus\": 1}}");
    cmd_fails("Invalid parameter type for 'file', expected: BlockdevRef",
              "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"driver\": \"qcow2\", "
              "\"file\": 5, \"size\": 0}}");
    cmd_fails("Parameter 'version' does not accept value 'v4'",
              "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"driver\": \"qcow2\", "
              "\"file\": \"f\", \"size\": 0, \"version\": \"v4\"}}");
    cmd_fails("Invalid parameter type for 'options.refcount-bits', "
              "expected: integer", "blockdev-create",
              "{\"job-id\": \"c\", \"options\": {\"driver\": \"qcow2\", "
              "\"file\": \"f\", \"size\": 0, \"refcount-bits\": \"x\"}}");
    cmd_fails("Invalid job ID '1a'", "blockdev-create",
              "{\"job-id\": \"1a\", \"options\": {\"driver\": \"file\", "
              "\"filename\": \"%s/x\", \"size\": 0}}", dir);
    assert_events("");
    assert_null(job_next(NULL));
}

/* ---- blockdev-create: file ---- */

static void test_create_file(void **state)
{
    char *path = NULL, *opts = NULL;
    struct stat st;

    assert_true(asprintf(&path, "%s/f.img", dir) > 0);
    assert_true(asprintf(&opts, "{\"driver\": \"file\", \"filename\": "
                         "\"%s\", \"size\": 1048576}", path) > 0);
    create_ok(opts);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 1048576);
    free(opts);

    /* An existing file is emptied and resized. */
    assert_int_equal(sh("qemu-io -f raw -c 'write -P 0x55 0 64k' %s "
                        ">/dev/null", path), 0);
    assert_true(asprintf(&opts, "{\"driver\": \"file\", \"filename\": "
                         "\"%s\", \"size\": 131072, \"preallocation\": "
                         "\"full\"}", path) > 0);
    create_ok(opts);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 131072);
    assert_int_equal(sh("qemu-io -f raw -c 'read -P 0 0 128k' %s "
                        ">/dev/null", path), 0);
    free(opts);

    assert_true(asprintf(&opts, "{\"driver\": \"file\", \"filename\": "
                         "\"%s\", \"size\": 65536, \"preallocation\": "
                         "\"falloc\", \"nocow\": true}", path) > 0);
    create_ok(opts);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 65536);
    free(opts);

    /* A node holding the file for writing keeps creation out. */
    BlockNode *f = open_ok("{\"driver\": \"raw\", \"node-name\": \"r\", "
                           "\"file\": {\"driver\": \"file\", "
                           "\"filename\": \"%s\"}}", path);
    Error *err = NULL;
    BlockChild *user = bdrv_root_attach_child(
        f, "root", &(BlockChildClass){ 0 }, NULL,
        BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
        BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED, &err);
    assert_non_null(user);
    assert_true(asprintf(&opts, "{\"driver\": \"file\", \"filename\": "
                         "\"%s\", \"size\": 65536}", path) > 0);
    create_fails("Failed to get \"write\" lock", opts);
    free(opts);
    bdrv_detach_child(user);
    del_ok("r");
    free(path);
}

static void test_create_file_errors(void **state)
{
    char *opts = NULL;

    create_fails("Could not create '/nonexistent/dir/x.img': No such file "
                 "or directory", "{\"driver\": \"file\", \"filename\": "
                 "\"/nonexistent/dir/x.img\", \"size\": 0}");
    assert_true(asprintf(&opts, "{\"driver\": \"file\", \"filename\": "
                         "\"%s/m.img\", \"size\": 1000, \"preallocation\": "
                         "\"metadata\"}", dir) > 0);
    create_fails("Unsupported preallocation mode: metadata", opts);
    free(opts);
    assert_true(asprintf(&opts, "{\"driver\": \"file\", \"filename\": "
                         "\"%s/m.img\", \"size\": 1000, "
                         "\"extent-size-hint\": 8589934592}", dir) > 0);
    create_fails("Extent size hint is too large", opts);
    free(opts);
    assert_true(asprintf(&opts, "{\"driver\": \"file\", \"filename\": "
                         "\"%s/m.img\", \"size\": -1}", dir) > 0);
    create_fails("Could not resize file: Invalid argument", opts);
    free(opts);
    assert_true(asprintf(&opts, "{\"driver\": \"file\", \"filename\": "
                         "\"%s\", \"size\": 0}", dir) > 0);
    char *msg = NULL;
    assert_true(asprintf(&msg, "Could not create '%s': Is a directory",
                         dir) > 0);
    create_fails(msg, opts);
    free(msg);
    free(opts);
}

/* ---- blockdev-create: qcow2 ---- */

static void test_create_qcow2(void **state)
{
    BlockNode *f;

    assert_int_equal(sh("qemu-img create -q -f raw %s/q.qcow2 0 && "
                        "qemu-img create -q -f raw %s/base.img 1M",
                        dir, dir), 0);
    f = open_ok("{\"driver\": \"file\", \"node-name\": \"f1\", "
                "\"filename\": \"%s/q.qcow2\"}", dir);
    create_ok("{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 67108864}");
    assert_int_equal(sh("qemu-img check -q %s/q.qcow2", dir), 0);
    assert_int_equal(sh("qemu-img info %s/q.qcow2 | grep -q "
                        "'virtual size: 64 MiB'", dir), 0);
    assert_int_equal(sh("qemu-img info %s/q.qcow2 | grep -q "
                        "'cluster_size: 65536'", dir), 0);

    /* Over an image already there: a new one replaces it. */
    create_ok("{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 1048576, "
              "\"version\": \"v2\", \"cluster-size\": 4096, "
              "\"backing-file\": \"base.img\", \"backing-fmt\": \"raw\"}");
    assert_int_equal(sh("qemu-img check -q %s/q.qcow2", dir), 0);
    assert_int_equal(sh("qemu-img info %s/q.qcow2 | grep -q "
                        "'compat: 0.10'", dir), 0);
    assert_int_equal(sh("qemu-img info %s/q.qcow2 | grep -q "
                        "'backing file: base.img'", dir), 0);
    create_ok("{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 1048576, "
              "\"lazy-refcounts\": true, \"refcount-bits\": 64, "
              "\"cluster-size\": 512}");
    assert_int_equal(sh("qemu-img check -q %s/q.qcow2", dir), 0);
    assert_int_equal(sh("qemu-img info %s/q.qcow2 | grep -q "
                        "'refcount bits: 64'", dir), 0);

    /* The new image opens and takes data. */
    open_ok("{\"driver\": \"qcow2\", \"node-name\": \"q1\", \"file\": "
            "\"f1\"}");
    del_ok("q1");
    (void)f;
    del_ok("f1");
    assert_int_equal(sh("qemu-io -f qcow2 -c 'write -P 7 0 64k' "
                        "%s/q.qcow2 >/dev/null && qemu-img check -q "
                        "%s/q.qcow2", dir, dir), 0);
}

static void test_create_qcow2_errors(void **state)
{
    assert_int_equal(sh("qemu-img create -q -f raw %s/e.img 0", dir), 0);
    open_ok("{\"driver\": \"file\", \"node-name\": \"f1\", "
            "\"filename\": \"%s/e.img\"}", dir);
    create_fails("Cannot find device='nonode' nor node-name='nonode'",
                 "{\"driver\": \"qcow2\", \"file\": \"nonode\", "
                 "\"size\": 1048576}");
    create_fails("Image size must be a multiple of 512 bytes",
                 "{\"driver\": \"qcow2\", \"file\": \"f1\", \"size\": 1000}");
    create_fails("Cluster size must be a power of two between 512 and 2048k",
                 "{\"driver\": \"qcow2\", \"file\": \"f1\", "
                 "\"size\": 1048576, \"cluster-size\": 1000}");
    create_fails("Lazy refcounts only supported with compatibility level 1.1 "
                 "and above (use version=v3 or greater)",
                 "{\"driver\": \"qcow2\", \"file\": \"f1\", "
                 "\"size\": 1048576, \"version\": \"v2\", "
                 "\"lazy-refcounts\": true}");
    create_fails("Refcount width must be a power of two and may not exceed "
                 "64 bits", "{\"driver\": \"qcow2\", \"file\": \"f1\", "
                 "\"size\": 1048576, \"refcount-bits\": 3}");
    create_fails("Different refcount widths than 16 bits require "
                 "compatibility level 1.1 or above (use version=v3 or "
                 "greater)", "{\"driver\": \"qcow2\", \"file\": \"f1\", "
                 "\"size\": 1048576, \"version\": \"v2\", "
                 "\"refcount-bits\": 8}");
    create_fails("Backing format cannot be used without backing file",
                 "{\"driver\": \"qcow2\", \"file\": \"f1\", "
                 "\"size\": 1048576, \"backing-fmt\": \"raw\"}");
    create_fails("Extended L2 entries are only supported with cluster sizes "
                 "of at least 16384 bytes", "{\"driver\": \"qcow2\", "
                 "\"file\": \"f1\", \"size\": 1048576, \"extended-l2\": "
                 "true, \"cluster-size\": 4096}");
    create_fails("data-file-raw requires data-file",
                 "{\"driver\": \"qcow2\", \"file\": \"f1\", "
                 "\"size\": 1048576, \"data-file-raw\": true}");
    create_fails("Could not resize image: Failed to grow the L1 table: File "
                 "too large", "{\"driver\": \"qcow2\", \"file\": \"f1\", "
                 "\"size\": 2251799813685760}");
    create_fails("Could not resize image: offset(9223372036854775296) "
                 "exceeds maximum(9223372035781033984)",
                 "{\"driver\": \"qcow2\", \"file\": \"f1\", "
                 "\"size\": 9223372036854775296, \"cluster-size\": "
                 "2097152}");
    /* The largest image 64k clusters allow is fine. */
    create_ok("{\"driver\": \"qcow2\", \"file\": \"f1\", "
              "\"size\": 2251799813685248}");

    /* A qcow2 node on the file unshares write and resize. */
    open_ok("{\"driver\": \"qcow2\", \"node-name\": \"q1\", \"file\": "
            "\"f1\"}");
    create_fails("Permission conflict on node 'f1': permissions 'write, "
                 "resize' are both required by an unnamed block device "
                 "(uses node 'f1' as 'root' child) and unshared by node "
                 "'q1' (uses node 'f1' as 'file' child).",
                 "{\"driver\": \"qcow2\", \"file\": \"f1\", "
                 "\"size\": 1048576}");
    del_ok("q1");
    del_ok("f1");

    open_ok("{\"driver\": \"file\", \"node-name\": \"ro\", \"read-only\": "
            "true, \"filename\": \"%s/e.img\"}", dir);
    create_fails("Block node is read-only", "{\"driver\": \"qcow2\", "
                 "\"file\": \"ro\", \"size\": 1048576}");
    del_ok("ro");

    /* A node that forgets writes: the result is no image. */
    open_ok("{\"driver\": \"null-co\", \"node-name\": \"nul\"}");
    create_fails("Image is not in qcow2 format", "{\"driver\": \"qcow2\", "
                 "\"file\": \"nul\", \"size\": 1048576}");
    del_ok("nul");
}

/* ---- blockdev-snapshot ---- */

static void test_snapshot(void **state)
{
    BlockNode *base, *ov;
    BlockChild *user;
    Error *err = NULL;
    uint8_t buf[4096];

    assert_int_equal(sh("qemu-img create -q -f qcow2 %s/base.qcow2 1M && "
                        "qemu-io -f qcow2 -c 'write -P 0x11 0 1M' "
                        "%s/base.qcow2 >/dev/null && "
                        "qemu-img create -q -f qcow2 -b base.qcow2 "
                        "-F qcow2 %s/ov.qcow2 && "
                        "qemu-img create -q -f qcow2 %s/ov2.qcow2 1M && "
                        "qemu-img create -q -f raw %s/raw.img 1M",
                        dir, dir, dir, dir, dir), 0);
    base = open_ok("{\"driver\": \"qcow2\", \"node-name\": \"base\", "
                   "\"file\": {\"driver\": \"file\", \"filename\": "
                   "\"%s/base.qcow2\"}}", dir);
    ov = open_ok("{\"driver\": \"qcow2\", \"node-name\": \"ov\", "
                 "\"backing\": null, \"file\": {\"driver\": \"file\", "
                 "\"filename\": \"%s/ov.qcow2\"}}", dir);
    open_ok("{\"driver\": \"raw\", \"node-name\": \"raw\", "
            "\"file\": {\"driver\": \"file\", \"filename\": "
            "\"%s/raw.img\"}}", dir);
    /* A format node above base (its parents move too)... */
    BlockNode *top = open_ok("{\"driver\": \"raw\", \"node-name\": "
                             "\"top\", \"file\": \"base\"}");
    /* ...and a writer on base, as an NBD export would be. */
    user = bdrv_root_attach_child(base, "root", &test_export_class, "e",
                                  BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                                  BLK_PERM_ALL, &err);
    assert_non_null(user);

    cmd_fails("Parameter 'overlay' is missing", "blockdev-snapshot",
              "{\"node\": \"base\"}");
    cmd_fails("Cannot find device='nonode' nor node-name='nonode'",
              "blockdev-snapshot", "{\"node\": \"nonode\", "
              "\"overlay\": \"ov\"}");
    cmd_fails("Cannot find device='nonode' nor node-name='nonode'",
              "blockdev-snapshot", "{\"node\": \"base\", "
              "\"overlay\": \"nonode\"}");
    cmd_fails("The overlay does not support backing images",
              "blockdev-snapshot", "{\"node\": \"base\", "
              "\"overlay\": \"raw\"}");
    cmd_fails("The overlay is already in use", "blockdev-snapshot",
              "{\"node\": \"ov\", \"overlay\": \"base\"}");
    cmd_fails("Making 'ov' a backing child of 'ov' would create a cycle",
              "blockdev-snapshot", "{\"node\": \"ov\", "
              "\"overlay\": \"ov\"}");
    assert_ptr_equal(user->node, base);

    /* As a transaction's action: prepared, then aborted. */
    BlockdevSnapshot st;
    assert_true(blockdev_snapshot_prepare(&st, "base", "ov", &err));
    assert_ptr_equal(user->node, ov);
    assert_ptr_equal(top->file->node, ov);
    blockdev_snapshot_abort(&st);
    blockdev_snapshot_clean(&st);
    assert_ptr_equal(user->node, base);
    assert_ptr_equal(top->file->node, base);
    assert_null(ov->backing);
    assert_false(bdrv_is_quiesced(base));
    assert_false(bdrv_is_quiesced(ov));
    assert_false(bdrv_is_quiesced(top));
    assert_false(user->quiesced_parent);
    /* A failed prepare leaves nothing to abort. */
    assert_false(blockdev_snapshot_prepare(&st, "base", "raw", &err));
    assert_string_equal(error_get_pretty(err),
                        "The overlay does not support backing images");
    error_free(err);
    err = NULL;
    blockdev_snapshot_abort(&st);
    blockdev_snapshot_clean(&st);
    assert_false(bdrv_is_quiesced(base));

    cmd_ok("blockdev-snapshot", "{\"node\": \"base\", \"overlay\": \"ov\"}");
    assert_ptr_equal(user->node, ov);
    assert_non_null(ov->backing);
    assert_ptr_equal(ov->backing->node, base);
    assert_ptr_equal(top->file->node, ov);
    /* The drained section ended everywhere, wherever edges moved. */
    assert_false(bdrv_is_quiesced(base));
    assert_false(bdrv_is_quiesced(ov));
    assert_false(bdrv_is_quiesced(top));
    assert_false(user->quiesced_parent);

    /* New writes land in the overlay; the rest still reads from base. */
    memset(buf, 0x22, sizeof(buf));
    assert_int_equal(bdrv_pwrite(user, 0, sizeof(buf), buf, 0), 0);
    assert_int_equal(bdrv_pread(user, 0, sizeof(buf), buf, 0), 0);
    assert_int_equal(buf[0], 0x22);
    assert_int_equal(bdrv_pread(user, 65536, sizeof(buf), buf, 0), 0);
    assert_int_equal(buf[0], 0x11);

    cmd_fails("Node 'base' is busy: node is used as backing hd of 'ov'",
              "blockdev-snapshot", "{\"node\": \"base\", "
              "\"overlay\": \"ov2\"}");
    open_ok("{\"driver\": \"qcow2\", \"node-name\": \"ov2\", "
            "\"backing\": \"raw\", \"file\": {\"driver\": \"file\", "
            "\"filename\": \"%s/ov2.qcow2\"}}", dir);
    cmd_fails("The overlay already has a backing image",
              "blockdev-snapshot", "{\"node\": \"ov\", "
              "\"overlay\": \"ov2\"}");
    del_ok("ov2");

    bdrv_detach_child(user);
    del_ok("top");
    del_ok("ov");
    del_ok("base");
    del_ok("raw");
    assert_null(bdrv_next_node(NULL));

    /* On disk: base untouched, the overlay holds the new cluster and names
     * base as its backing file. */
    assert_int_equal(sh("qemu-io -f qcow2 -c 'read -P 0x11 0 1M' "
                        "%s/base.qcow2 >/dev/null", dir), 0);
    assert_int_equal(sh("qemu-io -f qcow2 -c 'read -P 0x22 0 4k' "
                        "-c 'read -P 0x11 64k 960k' %s/ov.qcow2 "
                        ">/dev/null", dir), 0);
    assert_int_equal(sh("qemu-img check -q %s/ov.qcow2", dir), 0);
    assert_int_equal(sh("qemu-img info --backing-chain %s/ov.qcow2 | "
                        "grep -c '^image:' | grep -qx 2", dir), 0);
}

static int setup(void **state)
{
    main_loop_setup(state);
    assert_non_null(tmpdir_make(dir));
    event_set_sink(sink, NULL);
    return 0;
}

static int teardown(void **state)
{
    return tmpdir_remove(dir) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_args),
        cmocka_unit_test(test_create_file),
        cmocka_unit_test(test_create_file_errors),
        cmocka_unit_test(test_create_qcow2),
        cmocka_unit_test(test_create_qcow2_errors),
        cmocka_unit_test(test_snapshot),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
