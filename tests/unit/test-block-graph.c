/*
 * The block graph: opening and unwinding, node names, permissions (conflict
 * messages, nothing changed after a refusal, read-only nodes), blockdev-del
 * rules and query output.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "block/block.h"

static int count_nodes(void)
{
    int n = 0;

    for (BlockNode *bs = bdrv_next_node(NULL); bs; bs = bdrv_next_node(bs)) {
        n++;
    }
    return n;
}

static void test_open_and_names(void **state)
{
    BlockNode *n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"n\","
                           " \"size\": 1048576}");

    assert_int_equal(bdrv_getlength(n), 1048576);
    assert_ptr_equal(bdrv_find_node("n"), n);
    assert_true(bdrv_is_monitor_owned(n));

    open_fails("{\"node-name\": \"x\"}", "Parameter 'driver' is missing");
    open_fails("{\"driver\": \"bogus\", \"node-name\": \"x\"}",
               "Parameter 'driver' does not accept value 'bogus'");
    open_fails("{\"driver\": \"null-co\"}",
               "'node-name' must be specified for the root node");
    open_fails("{\"driver\": \"null-co\", \"node-name\": \"1x\"}",
               "Invalid node-name: '1x'");
    open_fails("{\"driver\": \"null-co\", \"node-name\": "
               "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", "Node name too long");
    open_fails("{\"driver\": \"null-co\", \"node-name\": \"n\"}",
               "Duplicate nodes with node-name='n'");
    open_fails("{\"driver\": \"null-co\", \"node-name\": \"x\", "
               "\"force-share\": true}",
               "force-share=on can only be used with read-only images");
    open_fails("{\"driver\": \"null-co\", \"node-name\": \"x\", "
               "\"detect-zeroes\": \"unmap\"}",
               "setting detect-zeroes to unmap is not allowed without "
               "setting discard operation to unmap");
    open_fails("{\"driver\": \"null-co\", \"node-name\": \"x\", "
               "\"latency-ns\": -1}", "latency-ns is invalid");
    assert_int_equal(count_nodes(), 1);
    del_ok("n");
    assert_int_equal(count_nodes(), 0);
}

static void test_raw_children_and_unwind(void **state)
{
    BlockNode *n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"n\","
                           " \"size\": 1048576}");
    BlockNode *r, *r2;
    Error *err = NULL;

    r = open_ok("{\"driver\": \"raw\", \"node-name\": \"r\", \"file\": \"n\","
                " \"offset\": 512}");
    assert_int_equal(bdrv_getlength(r), 1048576 - 512);
    assert_ptr_equal(r->file->node, n);
    assert_int_equal(n->refcnt, 2);

    /* Inline child: an implicit node owned by its parent only. */
    r2 = open_ok("{\"driver\": \"raw\", \"node-name\": \"r2\", \"file\": "
                 "{\"driver\": \"null-co\", \"size\": 4096}}");
    assert_true(r2->file->node->implicit_name);
    assert_int_equal(r2->file->node->node_name[0], '#');
    assert_false(bdrv_is_monitor_owned(r2->file->node));
    assert_int_equal(count_nodes(), 4);

    /* Failures leave nothing behind, inline children included. */
    open_fails("{\"driver\": \"raw\", \"node-name\": \"x\", \"file\": "
               "\"nonexist\"}",
               "Cannot find device='nonexist' nor node-name='nonexist'");
    open_fails("{\"driver\": \"raw\", \"node-name\": \"x\", \"file\": \"n\","
               " \"offset\": 2097152}",
               "Offset (2097152) cannot be greater than size of the "
               "containing file (1048576)");
    open_fails("{\"driver\": \"raw\", \"node-name\": \"x\", \"file\": \"n\","
               " \"offset\": 512, \"size\": 1048576}",
               "The sum of offset (512) and size (1048576) has to be smaller "
               "or equal to the  actual size of the containing file "
               "(1048576)");
    open_fails("{\"driver\": \"raw\", \"node-name\": \"x\", \"file\": \"n\","
               " \"size\": 100}", "Specified size is not multiple of 512");
    open_fails("{\"driver\": \"raw\", \"node-name\": \"x\", \"file\": "
               "{\"driver\": \"null-co\", \"size\": 4096}, \"offset\": 8192}",
               "Offset (8192) cannot be greater than size of the containing "
               "file (4096)");
    open_fails("{\"driver\": \"raw\", \"node-name\": \"x\", \"file\": "
               "{\"driver\": \"raw\", \"node-name\": \"x\", \"file\": \"n\"}}",
               "Duplicate nodes with node-name='x'");
    open_fails("{\"driver\": \"raw\", \"node-name\": \"x\", \"file\": "
               "{\"file\": \"n\"}}", "Parameter 'file.driver' is missing");
    assert_int_equal(count_nodes(), 4);
    assert_int_equal(n->refcnt, 2);

    /* blockdev-del rules, in qemu's order. */
    assert_false(bdrv_del_blockdev("nope", &err));
    assert_string_equal(error_get_pretty(err),
                        "Failed to find node with node-name='nope'");
    error_free_or_abort_clear(&err);
    assert_false(bdrv_del_blockdev("n", &err));
    assert_string_equal(error_get_pretty(err), "Block device n is in use");
    error_free_or_abort_clear(&err);
    assert_false(bdrv_del_blockdev(r2->file->node->node_name, &err));
    assert_non_null(strstr(error_get_pretty(err), "is not owned by the "
                           "monitor"));
    error_free_or_abort_clear(&err);

    BlockChild *u = bdrv_root_attach_child(r, "root", &test_export_class, "e",
                                           0, BLK_PERM_ALL, &err);
    assert_non_null(u);
    assert_false(bdrv_del_blockdev("r", &err));
    assert_string_equal(error_get_pretty(err), "Node r is in use");
    error_free_or_abort_clear(&err);
    bdrv_detach_child(u);

    del_ok("r2");
    del_ok("r");
    assert_int_equal(n->refcnt, 1);
    del_ok("n");
    assert_int_equal(count_nodes(), 0);
}

static void test_perm_conflict_direct(void **state)
{
    BlockNode *n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"f\"}");
    Error *err = NULL;
    BlockChild *a, *b;

    a = bdrv_root_attach_child(n, "root", &test_export_class, "exp0",
                               BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                               BLK_PERM_CONSISTENT_READ, &err);
    assert_non_null(a);
    b = bdrv_root_attach_child(n, "root", &test_export_class, "exp1",
                               BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                               BLK_PERM_ALL, &err);
    assert_null(b);
    assert_string_equal(error_get_pretty(err),
        "Permission conflict on node 'f': permissions 'write' are both "
        "required by export 'exp1' (uses node 'f' as 'root' child) and "
        "unshared by export 'exp0' (uses node 'f' as 'root' child).");
    error_free_or_abort_clear(&err);

    /* A reader that shares nothing conflicts the other way round. */
    b = bdrv_root_attach_child(n, "root", &test_export_class, "exp2",
                               BLK_PERM_CONSISTENT_READ, 0, &err);
    assert_null(b);
    assert_string_equal(error_get_pretty(err),
        "Permission conflict on node 'f': permissions 'consistent read, "
        "write' are both required by export 'exp0' (uses node 'f' as "
        "'root' child) and unshared by export 'exp2' (uses node 'f' as "
        "'root' child).");
    error_free_or_abort_clear(&err);

    /* Nothing changed by the refusals. */
    assert_int_equal(n->refcnt, 2);
    assert_ptr_equal(list_first_entry(&n->parents, BlockChild, parent_link),
                     a);
    assert_ptr_equal(a->parent_link.next, &n->parents);

    /* A compatible reader is fine; then tightening a is refused. */
    b = bdrv_root_attach_child(n, "root", &test_export_class, "exp3",
                               BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, &err);
    assert_non_null(b);
    assert_false(bdrv_child_set_perm(a, a->perm, 0, &err));
    assert_non_null(strstr(error_get_pretty(err), "'consistent read'"));
    error_free_or_abort_clear(&err);
    assert_int_equal(a->shared, BLK_PERM_CONSISTENT_READ);

    bdrv_detach_child(b);
    bdrv_detach_child(a);
    del_ok("f");
}

static void test_perm_through_raw(void **state)
{
    BlockNode *n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"n\"}");
    BlockNode *r = open_ok("{\"driver\": \"raw\", \"node-name\": \"r\", "
                           "\"file\": \"n\"}");
    Error *err = NULL;
    BlockChild *w, *x;

    /* raw passes its users' needs down: nothing yet. */
    assert_int_equal(r->file->perm, 0);
    w = bdrv_root_attach_child(r, "root", &test_export_class, "w",
                               BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                               BLK_PERM_ALL, &err);
    assert_non_null(w);
    assert_int_equal(r->file->perm,
                     BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE);

    /* A user of n that does not share write collides with node 'r'. */
    x = bdrv_root_attach_child(n, "root", &test_export_class, "x",
                               BLK_PERM_CONSISTENT_READ,
                               BLK_PERM_CONSISTENT_READ, &err);
    assert_null(x);
    assert_string_equal(error_get_pretty(err),
        "Permission conflict on node 'n': permissions 'write' are both "
        "required by node 'r' (uses node 'n' as 'file' child) and unshared "
        "by export 'x' (uses node 'n' as 'root' child).");
    error_free_or_abort_clear(&err);
    bdrv_detach_child(w);
    assert_int_equal(r->file->perm, 0);

    /* The other order: x first, then a writer on r is refused, and the
     * edge r -> n keeps its old permissions. */
    x = bdrv_root_attach_child(n, "root", &test_export_class, "x",
                               BLK_PERM_CONSISTENT_READ,
                               BLK_PERM_CONSISTENT_READ, &err);
    assert_non_null(x);
    w = bdrv_root_attach_child(r, "root", &test_export_class, "w",
                               BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                               BLK_PERM_ALL, &err);
    assert_null(w);
    assert_string_equal(error_get_pretty(err),
        "Permission conflict on node 'n': permissions 'write' are both "
        "required by node 'r' (uses node 'n' as 'file' child) and unshared "
        "by export 'x' (uses node 'n' as 'root' child).");
    error_free_or_abort_clear(&err);
    assert_int_equal(r->file->perm, 0);
    assert_true(list_empty(&r->parents));
    bdrv_detach_child(x);

    del_ok("r");
    del_ok("n");
}

static void test_read_only(void **state)
{
    BlockNode *n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"n\", "
                           "\"read-only\": true}");
    BlockNode *r = open_ok("{\"driver\": \"raw\", \"node-name\": \"r\", "
                           "\"file\": \"n\"}");
    Error *err = NULL;
    BlockChild *c;

    c = bdrv_root_attach_child(n, "root", &test_export_class, "e",
                               BLK_PERM_WRITE, BLK_PERM_ALL, &err);
    assert_null(c);
    assert_string_equal(error_get_pretty(err), "Block node is read-only");
    error_free_or_abort_clear(&err);
    /* Through a writable raw node, the refusal comes from below. */
    c = bdrv_root_attach_child(r, "root", &test_export_class, "e",
                               BLK_PERM_WRITE, BLK_PERM_ALL, &err);
    assert_null(c);
    assert_string_equal(error_get_pretty(err), "Block node is read-only");
    error_free_or_abort_clear(&err);
    assert_int_equal(r->file->perm, 0);
    c = bdrv_root_attach_child(r, "root", &test_export_class, "e",
                               BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, &err);
    assert_non_null(c);
    bdrv_detach_child(c);
    del_ok("r");
    del_ok("n");
}

static void test_io_and_ranges(void **state)
{
    BlockNode *n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"n\", "
                           "\"size\": 65536, \"read-zeroes\": true}");
    BlockNode *r = open_ok("{\"driver\": \"raw\", \"node-name\": \"r\", "
                           "\"file\": \"n\", \"offset\": 4096, "
                           "\"size\": 8192}");
    Error *err = NULL;
    BlockChild *c = bdrv_root_attach_child(r, "root", &test_export_class, "e",
                                           BLK_PERM_CONSISTENT_READ |
                                           BLK_PERM_WRITE, BLK_PERM_ALL,
                                           &err);
    char buf[8192];

    assert_non_null(c);
    memset(buf, 0xaa, sizeof(buf));
    assert_int_equal(bdrv_pread(c, 0, 8192, buf, 0), 0);
    for (size_t i = 0; i < sizeof(buf); i++) {
        assert_int_equal(buf[i], 0);
    }
    assert_int_equal(bdrv_pread(c, 1, 100, buf, 0), 0);
    assert_int_equal(bdrv_pwrite(c, 3, 1000, buf, 0), 0);
    assert_int_equal(bdrv_pread(c, 8000, 193, buf, 0), -EIO);
    assert_int_equal(bdrv_pread(c, -1, 1, buf, 0), -EIO);
    assert_int_equal(bdrv_pwrite(c, INT64_MAX, 1, buf, 0), -EIO);
    assert_int_equal(bdrv_flush(r), 0);
    assert_int_equal(atomic_load(&r->in_flight), 0);
    assert_int_equal(atomic_load(&n->in_flight), 0);
    bdrv_detach_child(c);
    del_ok("r");
    del_ok("n");
}

/* Unaligned requests through raw (unaligned offset) onto an O_DIRECT file:
 * read-modify-write keeps the bytes around the request. */
static void test_unaligned_through_file(void **state)
{
    char path[] = "/var/tmp/bj-test-graph-XXXXXX";
    int fd = mkstemp(path);
    char js[512];
    Error *err = NULL;
    BlockNode *r;
    BlockChild *c;
    char *buf = malloc(10000), *back = malloc(12288);

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    snprintf(js, sizeof(js), "{\"driver\": \"raw\", \"node-name\": \"r\", "
             "\"offset\": 1000, \"file\": {\"driver\": \"file\", "
             "\"filename\": \"%s\", \"cache\": {\"direct\": true}}}", path);
    r = open_ok("%s", js);
    c = bdrv_root_attach_child(r, "root", &test_export_class, "e",
                               BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                               BLK_PERM_CONSISTENT_READ, &err);
    assert_non_null(c);
    for (int i = 0; i < 10000; i++) {
        buf[i] = (char)(i * 7 + 1);
    }
    assert_int_equal(bdrv_pwrite(c, 3, 10000, buf, 0), 0);
    memset(back, 0x55, 10000);
    assert_int_equal(bdrv_pread(c, 3, 10000, back, 0), 0);
    assert_memory_equal(back, buf, 10000);
    assert_int_equal(bdrv_flush(r), 0);
    /* On disk: zeroes, our bytes at 1003, zeroes again. */
    assert_int_equal(pread(fd, back, 12288, 0), 12288);
    for (int i = 0; i < 1003; i++) {
        assert_int_equal(back[i], 0);
    }
    assert_memory_equal(back + 1003, buf, 10000);
    for (int i = 11003; i < 12288; i++) {
        assert_int_equal(back[i], 0);
    }
    bdrv_detach_child(c);
    del_ok("r");
    assert_int_equal(count_nodes(), 0);
    close(fd);
    unlink(path);
    free(buf);
    free(back);
}

static void test_query(void **state)
{
    BlockNode *n = open_ok("{\"driver\": \"null-co\", \"node-name\": \"n\"}");
    BlockNode *m = open_ok("{\"driver\": \"null-co\", \"node-name\": \"m\", "
                           "\"size\": 12345, \"read-zeroes\": true}");
    json_t *list = bdrv_query_named_block_nodes(false);
    json_t *info;

    assert_int_equal(json_array_size(list), 2);
    /* Newest first, as qemu. */
    info = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(info,
                        "node-name")), "m");
    assert_string_equal(json_string_value(json_object_get(info, "drv")),
                        "null-co");
    assert_int_equal(json_integer_value(json_object_get(
        json_object_get(info, "image"), "virtual-size")), 12800);
    assert_non_null(strstr(json_string_value(json_object_get(info, "file")),
                           "json:{"));
    info = json_array_get(list, 1);
    assert_string_equal(json_string_value(json_object_get(info, "file")),
                        "null-co://");
    assert_true(json_is_false(json_object_get(info, "ro")));
    assert_string_equal(json_string_value(json_object_get(info,
                        "detect_zeroes")), "off");
    assert_true(json_is_true(json_object_get(json_object_get(info, "cache"),
                                             "writeback")));
    json_decref(list);
    (void)n;
    (void)m;
    del_ok("m");
    del_ok("n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_and_names),
        cmocka_unit_test(test_raw_children_and_unwind),
        cmocka_unit_test(test_perm_conflict_direct),
        cmocka_unit_test(test_perm_through_raw),
        cmocka_unit_test(test_read_only),
        cmocka_unit_test(test_io_and_ranges),
        cmocka_unit_test(test_unaligned_through_file),
        cmocka_unit_test(test_query),
    };

    return cmocka_run_group_tests(tests, main_loop_setup, NULL);
}
