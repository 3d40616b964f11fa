/*
 * blkdebug: option checks with qemu-storage-daemon's messages, and the rule
 * model observed on qemu 7.2 (qemu-io over raw over blkdebug): events
 * activate inject rules, active rules persist across requests and kinds
 * until another event replaces them, once/sector/iotype/state/set-state,
 * "none" at open, errno values, limits; data passes through untouched.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "block/block.h"
#include "test-wait.h"

/* A blkdebug node "dbg" over a 1 MiB null-co with the given extra members,
 * and a user edge on it for requests.  discard=unmap, or the layer would
 * drop discards before they reach blkdebug. */
typedef struct Dbg {
    BlockNode *bs;
    BlockChild *user;
} Dbg;

static Dbg dbg_open(const char *extra)
{
    char *text = NULL;
    Error *err = NULL;
    Dbg d;

    assert_true(asprintf(&text, "{\"driver\": \"blkdebug\", \"node-name\": "
                         "\"dbg\", \"discard\": \"unmap\", \"image\": "
                         "{\"driver\": \"null-co\", \"size\": 1048576, "
                         "\"read-zeroes\": true}%s%s}",
                         extra[0] ? ", " : "", extra) > 0);
    d.bs = open_json(text, &err);
    if (!d.bs) {
        fail_msg("open %s: %s", text, error_get_pretty(err));
    }
    free(text);
    d.user = bdrv_root_attach_child(d.bs, "root", &test_export_class, "t",
                                    BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                                    BLK_PERM_ALL, &err);
    assert_non_null(d.user);
    return d;
}

static void dbg_close(Dbg *d)
{
    Error *err = NULL;

    bdrv_detach_child(d->user);
    if (!bdrv_del_blockdev("dbg", &err)) {
        fail_msg("del: %s", error_get_pretty(err));
    }
    assert_null(bdrv_next_node(NULL));
}

static char buf[65536];

static int rd(Dbg *d, int64_t off, int64_t len)
{
    return bdrv_pread(d->user, off, len, buf, 0);
}

static int wr(Dbg *d, int64_t off, int64_t len)
{
    return bdrv_pwrite(d->user, off, len, buf, 0);
}

/* Requests the sync wrappers do not cover run in a coroutine here. */
typedef struct CoReq {
    int kind;                /* 0 write-zeroes, 1 discard, 2 block status */
    BlockChild *c;
    int64_t off, len;
    int ret;
} CoReq;

static void coroutine_fn co_req_entry(void *opaque)
{
    CoReq *r = opaque;
    int64_t pnum;

    switch (r->kind) {
    case 0:
        r->ret = bdrv_co_pwrite_zeroes(r->c, r->off, r->len, 0);
        break;
    case 1:
        r->ret = bdrv_co_pdiscard(r->c, r->off, r->len);
        break;
    default:
        r->ret = bdrv_co_block_status(r->c->node, r->off, r->len, &pnum,
                                      NULL, NULL);
        break;
    }
}

static int co_req(Dbg *d, int kind, int64_t off, int64_t len)
{
    CoReq r = { .kind = kind, .c = d->user, .off = off, .len = len };

    co_run(co_req_entry, &r);
    return r.ret;
}

#define IMG "\"image\": {\"driver\": \"null-co\"}"

static void test_option_errors(void **state)
{
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\"}",
               "Parameter 'image' is missing");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"align\": 3}", "Cannot meet constraints with align 3");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"align\": -512}",
               "Parameter 'align' expects a non-negative number below 2^64");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"align\": 4096, \"max-transfer\": 1024}",
               "Cannot meet constraints with max-transfer 1024");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"opt-write-zero\": 1024, \"max-write-zero\": 512}",
               "Cannot meet constraints with max-write-zero 512");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"inject-error\": [{\"event\": \"bogus\"}]}",
               "Parameter 'event' does not accept value 'bogus'");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"inject-error\": [{\"errno\": 5}]}",
               "Parameter 'inject-error[0].event' is missing");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"inject-error\": [{\"event\": \"read_aio\", "
               "\"errno\": \"x\"}]}",
               "Invalid parameter type for 'inject-error[0].errno', "
               "expected: integer");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"inject-error\": [{\"event\": \"read_aio\", "
               "\"iotype\": \"foo\"}]}",
               "Parameter 'iotype' does not accept value 'foo'");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"inject-error\": {\"event\": \"read_aio\"}}",
               "Invalid parameter type for 'inject-error', expected: array");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"set-state\": [{\"event\": \"read_aio\"}]}",
               "Parameter 'set-state[0].new_state' is missing");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"take-child-perms\": [\"graph-mod\"]}",
               "Parameter 'null' does not accept value 'graph-mod'");
    open_fails("{\"driver\": \"blkdebug\", \"node-name\": \"x\", " IMG
               ", \"config\": \"/nonexistent/blkdebug.conf\"}",
               "Could not read blkdebug config file: No such file or "
               "directory");
    assert_null(bdrv_next_node(NULL));
}

static void test_limits(void **state)
{
    Dbg d = dbg_open("\"align\": 4096, \"max-transfer\": 65536, "
                     "\"opt-write-zero\": 8192, \"opt-discard\": 16384");

    assert_int_equal(d.bs->bl.request_alignment, 4096);
    assert_int_equal(d.bs->bl.max_transfer, 65536);
    assert_int_equal(d.bs->bl.pwrite_zeroes_alignment, 8192);
    assert_int_equal(d.bs->bl.pdiscard_alignment, 16384);
    assert_int_equal(bdrv_getlength(d.bs), 1048576);
    /* Unaligned requests still work: the layer aligns them for us. */
    assert_int_equal(rd(&d, 100, 1000), 0);
    dbg_close(&d);
}

/* An activated rule keeps failing every kind of request (but block
 * status), not only the kind whose event activated it. */
static void test_active_rule_persists(void **state)
{
    Dbg d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\"}]");

    assert_int_equal(wr(&d, 0, 512), 0);       /* not active yet */
    assert_int_equal(bdrv_flush(d.bs), 0);
    assert_int_equal(rd(&d, 0, 512), -EIO);
    assert_int_equal(rd(&d, 0, 512), -EIO);
    assert_int_equal(wr(&d, 0, 512), -EIO);
    assert_int_equal(bdrv_flush(d.bs), -EIO);
    assert_int_equal(co_req(&d, 0, 0, 65536), -EIO);
    assert_int_equal(co_req(&d, 1, 0, 65536), -EIO);
    assert_true(co_req(&d, 2, 0, 65536) >= 0);
    dbg_close(&d);
}

static void test_once(void **state)
{
    Dbg d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\", "
                     "\"once\": true}]");

    assert_int_equal(wr(&d, 0, 512), 0);
    assert_int_equal(rd(&d, 0, 512), -EIO);
    assert_int_equal(wr(&d, 0, 512), 0);
    assert_int_equal(rd(&d, 0, 512), 0);
    dbg_close(&d);
}

/* sector: the request must cover byte sector*512. */
static void test_sector(void **state)
{
    Dbg d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\", "
                     "\"sector\": 1}]");

    assert_int_equal(rd(&d, 0, 512), 0);
    assert_int_equal(rd(&d, 512, 512), -EIO);
    assert_int_equal(rd(&d, 0, 4096), -EIO);
    assert_int_equal(rd(&d, 1024, 512), 0);
    /* Active now, so a write over the sector fails too. */
    assert_int_equal(wr(&d, 0, 512), 0);
    assert_int_equal(wr(&d, 512, 512), -EIO);
    dbg_close(&d);

    d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\", "
                 "\"sector\": 1, \"once\": true}]");
    assert_int_equal(rd(&d, 0, 512), 0);       /* once: not used up */
    assert_int_equal(rd(&d, 512, 512), -EIO);
    assert_int_equal(rd(&d, 512, 512), 0);
    dbg_close(&d);
}

static void test_iotype(void **state)
{
    Dbg d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\", "
                     "\"iotype\": \"write\"}]");

    assert_int_equal(rd(&d, 0, 512), 0);
    assert_int_equal(wr(&d, 0, 512), -EIO);
    assert_int_equal(rd(&d, 0, 512), 0);
    dbg_close(&d);

    d = dbg_open("\"inject-error\": [{\"event\": \"none\", "
                 "\"iotype\": \"block-status\"}]");
    assert_int_equal(co_req(&d, 2, 0, 4096), -EIO);
    assert_int_equal(rd(&d, 0, 512), 0);
    dbg_close(&d);

    d = dbg_open("\"inject-error\": [{\"event\": \"none\", "
                 "\"iotype\": \"discard\", \"once\": true}]");
    assert_int_equal(co_req(&d, 1, 0, 65536), -EIO);
    assert_int_equal(co_req(&d, 1, 0, 65536), 0);
    dbg_close(&d);
}

static void test_state_machine(void **state)
{
    /* All rules of one event see the state from before it. */
    Dbg d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\", "
                     "\"state\": 2}], \"set-state\": [{\"event\": "
                     "\"read_aio\", \"state\": 1, \"new_state\": 2}]");

    assert_int_equal(rd(&d, 0, 512), 0);
    assert_int_equal(rd(&d, 0, 512), -EIO);
    assert_int_equal(rd(&d, 0, 512), -EIO);
    dbg_close(&d);

    /* set-state on "none" applies at open. */
    d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\", "
                 "\"state\": 3}], \"set-state\": [{\"event\": \"none\", "
                 "\"new_state\": 3}]");
    assert_int_equal(rd(&d, 0, 512), -EIO);
    dbg_close(&d);

    /* A "none" rule for another state never becomes active. */
    d = dbg_open("\"inject-error\": [{\"event\": \"none\", \"state\": 2}], "
                 "\"set-state\": [{\"event\": \"read_aio\", "
                 "\"new_state\": 2}]");
    assert_int_equal(rd(&d, 0, 512), 0);
    assert_int_equal(rd(&d, 0, 512), 0);
    dbg_close(&d);

    /* state 0 means any state. */
    d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\", "
                 "\"state\": 0}], \"set-state\": [{\"event\": "
                 "\"read_aio\", \"new_state\": 5}]");
    assert_int_equal(rd(&d, 0, 512), -EIO);
    assert_int_equal(rd(&d, 0, 512), -EIO);
    dbg_close(&d);
}

/* A new event replaces the active set only when one of its inject rules
 * matched; events without rules leave it alone. */
static void test_event_replaces_active(void **state)
{
    Dbg d = dbg_open("\"inject-error\": [{\"event\": \"none\", "
                     "\"iotype\": \"write\", \"errno\": 28}, "
                     "{\"event\": \"read_aio\", \"iotype\": \"read\"}]");

    assert_int_equal(wr(&d, 0, 512), -ENOSPC);
    assert_int_equal(rd(&d, 0, 512), -EIO);
    assert_int_equal(wr(&d, 0, 512), 0);
    dbg_close(&d);
}

static void test_errno_and_order(void **state)
{
    Dbg d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\", "
                     "\"errno\": 28}, {\"event\": \"read_aio\", "
                     "\"errno\": 5}]");

    assert_int_equal(rd(&d, 0, 512), -ENOSPC);
    dbg_close(&d);

    d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\", "
                 "\"errno\": 0}]");
    assert_int_equal(rd(&d, 0, 512), 0);
    dbg_close(&d);

    d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\", "
                 "\"errno\": 1, \"immediately\": true}]");
    assert_int_equal(rd(&d, 0, 512), -EPERM);
    dbg_close(&d);
}

/* write-zeroes fires pwritev_zero, not write_aio; writes fire write_aio
 * and pwritev; flush fires flush_to_disk. */
static void test_write_events(void **state)
{
    Dbg d = dbg_open("\"inject-error\": [{\"event\": \"write_aio\"}]");

    assert_int_equal(co_req(&d, 0, 0, 65536), 0);
    assert_int_equal(wr(&d, 0, 512), -EIO);
    assert_int_equal(co_req(&d, 0, 0, 65536), -EIO);
    dbg_close(&d);

    d = dbg_open("\"inject-error\": [{\"event\": \"pwritev_zero\", "
                 "\"once\": true}]");
    assert_int_equal(wr(&d, 0, 512), 0);
    assert_int_equal(co_req(&d, 0, 0, 65536), -EIO);
    assert_int_equal(co_req(&d, 0, 0, 65536), 0);
    dbg_close(&d);

    d = dbg_open("\"inject-error\": [{\"event\": \"flush_to_disk\", "
                 "\"iotype\": \"flush\"}]");
    assert_int_equal(wr(&d, 0, 512), 0);
    assert_int_equal(bdrv_flush(d.bs), -EIO);
    assert_int_equal(rd(&d, 0, 512), 0);
    assert_int_equal(bdrv_flush(d.bs), -EIO);
    dbg_close(&d);
}

/* Format metadata I/O fires no read_aio/write_aio, but active rules still
 * fail it. */
static void test_metadata_requests(void **state)
{
    Dbg d = dbg_open("\"inject-error\": [{\"event\": \"write_aio\", "
                     "\"once\": true}]");

    assert_int_equal(bdrv_pwrite(d.user, 0, 512, buf, BLK_REQ_METADATA), 0);
    assert_int_equal(bdrv_pwrite(d.user, 0, 512, buf, BLK_REQ_METADATA), 0);
    assert_int_equal(wr(&d, 0, 512), -EIO);
    assert_int_equal(wr(&d, 0, 512), 0);
    dbg_close(&d);

    d = dbg_open("\"inject-error\": [{\"event\": \"read_aio\"}]");
    assert_int_equal(bdrv_pread(d.user, 0, 512, buf, BLK_REQ_METADATA), 0);
    assert_int_equal(rd(&d, 0, 512), -EIO);
    assert_int_equal(bdrv_pread(d.user, 0, 512, buf, BLK_REQ_METADATA),
                     -EIO);
    dbg_close(&d);
}

/* The legacy rule file: its rules come before the options' own. */
static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void test_config_file(void **state)
{
    static const struct {
        const char *text, *msg;
    } bad[] = {
        { "[inject-error]\nevent read_aio\n", "invalid parameter value: " },
        { "[bogus]\nevent = \"read_aio\"\n",
          "There is no option group 'bogus'" },
        { "[inject-error]\nevent = \"nope\"\n",
          "invalid parameter value: nope" },
        { "[inject-error]\nevent = \"read_aio\"\nerrno = \"x\"\n",
          "Parameter 'errno' expects a number" },
        { "event = \"read_aio\"\n", "no group defined" },
        { "[inject-error]\nevent = \"read_aio\"\nfoo = \"1\"\n",
          "Invalid parameter 'foo'" },
        { "[inject-error]\nerrno = \"5\"\n", "Missing event name for rule" },
        { "[inject-error]\nevent = \"read_aio\"\nonce = \"maybe\"\n",
          "Parameter 'once' expects 'on' or 'off'" },
    };
    char dir[] = "/tmp/test-blkdebug-XXXXXX";
    char path[64], *text = NULL;
    Dbg d;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/rules.conf", dir);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_file(path, bad[i].text);
        assert_true(asprintf(&text, "{\"driver\": \"blkdebug\", "
                             "\"node-name\": \"x\", \"config\": \"%s\", "
                             IMG "}", path) > 0);
        open_fails(text, bad[i].msg);
        free(text);
    }

    write_file(path, "# rules\n[inject-error]\nevent = \"read_aio\"\n"
               "errno = \"28\"\nonce = \"on\"\n\n[set-state]\n"
               "event = \"none\"\nnew_state = \"2\"\n");
    assert_true(asprintf(&text, "\"config\": \"%s\", \"inject-error\": "
                         "[{\"event\": \"read_aio\", \"state\": 2}]",
                         path) > 0);
    d = dbg_open(text);
    free(text);
    /* The file's rule first (ENOSPC, once), then the option's (state 2,
     * which set-state on "none" made current at open). */
    assert_int_equal(rd(&d, 0, 512), -ENOSPC);
    assert_int_equal(rd(&d, 0, 512), -EIO);
    dbg_close(&d);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* Over a real file: bytes pass through both ways. */
static void test_data_passthrough(void **state)
{
    char dir[] = "/tmp/test-blkdebug-XXXXXX";
    char path[64], *text = NULL;
    Error *err = NULL;
    Dbg d;
    FILE *f;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/img", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), 1 << 20), 0);
    fclose(f);
    assert_true(asprintf(&text, "{\"driver\": \"blkdebug\", \"node-name\": "
                         "\"dbg\", \"image\": {\"driver\": \"file\", "
                         "\"filename\": \"%s\"}, \"inject-error\": "
                         "[{\"event\": \"read_aio\", \"sector\": 100, "
                         "\"once\": true}]}", path) > 0);
    d.bs = open_json(text, &err);
    free(text);
    if (!d.bs) {
        fail_msg("open: %s", error_get_pretty(err));
    }
    d.user = bdrv_root_attach_child(d.bs, "root", &test_export_class, "t",
                                    BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                                    BLK_PERM_ALL, &err);
    assert_non_null(d.user);

    memset(buf, 0xa5, 4096);
    assert_int_equal(wr(&d, 4096, 4096), 0);
    memset(buf, 0, 4096);
    assert_int_equal(rd(&d, 4096, 4096), 0);
    for (int i = 0; i < 4096; i++) {
        assert_int_equal((unsigned char)buf[i], 0xa5);
    }
    assert_int_equal(rd(&d, 100 * 512, 512), -EIO);
    assert_int_equal(rd(&d, 100 * 512, 512), 0);
    dbg_close(&d);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_option_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_active_rule_persists),
        cmocka_unit_test(test_once),
        cmocka_unit_test(test_sector),
        cmocka_unit_test(test_iotype),
        cmocka_unit_test(test_state_machine),
        cmocka_unit_test(test_event_replaces_active),
        cmocka_unit_test(test_errno_and_order),
        cmocka_unit_test(test_write_events),
        cmocka_unit_test(test_metadata_requests),
        cmocka_unit_test(test_config_file),
        cmocka_unit_test(test_data_passthrough),
    };

    return cmocka_run_group_tests(tests, main_loop_setup, NULL);
}
