/*
 * Fuzz target for a QMP command after the JSON parser: the request's shape
 * (qmp_check_request, as the monitor checks it), the command table lookup,
 * the argument check of the command's ArgSpec (qmp_check_args), and, for
 * blockdev-add, the driver's option check (bdrv_check_options).
 *
 * Handlers run too, on a daemon holding one in-memory node, "n0" (null-co,
 * 1 MiB): no job, export or server.  Not those that would reach outside
 * the process (blockdev-add and blockdev-create open and create files,
 * drive-mirror may create its target, nbd-server-start listens on a
 * socket, quit ends the daemon), nor the job starters when they name n0
 * (a job would outlive the input).  What a command leaves on n0 (bitmaps,
 * drained sections, n0 deleted) is undone after each input, so every
 * input starts from the same daemon.
 *
 * Input: one request as the monitor receives it, e.g.
 *   {"execute": "block-job-pause", "arguments": {"device": "j"}}
 *
 * Properties checked: no crash, leak or over-read; every refusal carries a
 * message; the arguments checked are what dispatch checks (same verdict);
 * a handler that runs adds no node.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "block/block.h"
#include "block/dirty-bitmap.h"
#include "fuzz-main-loop.h"
#include "fuzz.h"
#include "qmp/commands.h"
#include "qmp/json-stream.h"
#include "qmp/qmp.h"

static const char *const not_run[] = {
    "blockdev-add", "blockdev-create", "drive-mirror", "nbd-server-start",
    "quit", NULL,
};
/* Commands that start a job or change the graph once their nodes exist. */
static const char *const not_on_n0[] = {
    "blockdev-backup", "blockdev-mirror", "block-stream", "block-commit",
    "transaction", "blockdev-snapshot", NULL,
};

static bool listed(const char *const *list, const char *name)
{
    for (size_t i = 0; list[i]; i++) {
        if (!strcmp(name, list[i])) {
            return true;
        }
    }
    return false;
}

/* The one node every input starts with (again, if a command deleted it). */
static void ensure_n0(void)
{
    Error *err = NULL;

    if (bdrv_find_node("n0")) {
        return;
    }
    json_t *opts = json_pack("{s:s, s:s, s:i}", "driver", "null-co",
                             "node-name", "n0", "size", 1 << 20);
    if (!opts || !bdrv_open_blockdev(opts, false, &err)) {
        fprintf(stderr, "n0: %s\n", err ? error_get_pretty(err) : "?");
        abort();
    }
    json_decref(opts);
}

/* Undoes what a command may leave on n0; then n0 must be the only node. */
static void reset_daemon(const char *name)
{
    qmp_debug_drains_end_all();
    BlockNode *n0 = bdrv_find_node("n0");
    if (n0) {
        bdrv_release_all_dirty_bitmaps(n0);
    }
    ensure_n0();
    BlockNode *first = bdrv_next_node(NULL);
    if (first != bdrv_find_node("n0") || bdrv_next_node(first)) {
        fprintf(stderr, "%s left a node behind\n", name);
        abort();
    }
}

static void init_once(void)
{
    if (fuzz_main_loop_init_once()) {
        qmp_register_all_commands();
        ensure_n0();
    }
}

static void expect_error(bool ok, Error *err)
{
    if (!ok && (!err || !error_get_pretty(err)[0])) {
        abort();
    }
    if (ok && err) {
        abort();        /* success must leave errp alone */
    }
    error_free(err);
}

/* blockdev-add's union: the driver's own members, and inline children
 * one level down, as bdrv_open_blockdev checks them before opening. */
/* The driver an options object names, or NULL. */
static const BlockDriver *driver_of(json_t *opts)
{
    const char *name = json_string_value(json_object_get(opts, "driver"));
    return name ? bdrv_find_driver(name) : NULL;
}

static void check_blockdev(json_t *args)
{
    const BlockDriver *drv = driver_of(args);
    Error *err = NULL;

    if (!drv) {
        return;
    }
    /* ok first: argument evaluation order is unspecified, and gcc read
     * err before the call set it */
    bool ok = bdrv_check_options(drv, args, "", false, &err);
    expect_error(ok, err);
    const char *key;
    json_t *child;
    json_object_foreach(args, key, child) {
        const BlockDriver *cd = driver_of(child);
        if (cd) {
            err = NULL;
            ok = bdrv_check_options(cd, child, key, false, &err);
            expect_error(ok, err);
        }
    }
}

static bool may_run(const char *name, json_t *args)
{
    if (listed(not_run, name)) {
        return false;
    }
    if (listed(not_on_n0, name)) {
        char *text = json_dumps(args, JSON_COMPACT);
        bool names_n0 = !text || strstr(text, "n0");
        free(text);
        return !names_n0;
    }
    return true;
}

static void run_command(const QmpCommand *cmd, json_t *args, bool args_ok)
{
    Error *err = NULL;
    json_t *ret = qmp_dispatch(cmd->name, args, &err);

    if (!ret && args_ok && !err) {
        abort();
    }
    /* dispatch checks the same way: a refused argument never runs */
    if (ret && !args_ok) {
        abort();
    }
    expect_error(ret != NULL, err);
    json_decref(ret);
    reset_daemon(cmd->name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Error *err = NULL;
    json_t *req;

    init_once();
    req = json_parse_qmp((const char *)data, size, &err);
    if (!req) {
        expect_error(false, err);
        return 0;
    }
    if (!json_is_object(req)) {
        json_decref(req);
        return 0;
    }

    for (int oob = 0; oob < 2; oob++) {
        bool is_oob = false;
        err = NULL;
        const char *name = qmp_check_request(req, oob, &is_oob, &err);
        expect_error(name != NULL, err);
        if (name && is_oob && !oob) {
            abort();
        }
    }
    bool is_oob = false;
    const char *name = qmp_check_request(req, false, &is_oob, NULL);
    const QmpCommand *cmd = name ? qmp_find_command(name) : NULL;
    if (!cmd) {
        json_decref(req);
        return 0;
    }

    json_t *args = json_object_get(req, "arguments");
    json_t *a = args ? json_deep_copy(args) : json_object();
    err = NULL;
    bool ok = qmp_check_args(cmd, a, &err);
    expect_error(ok, err);
    if (ok && !strcmp(cmd->name, "blockdev-add")) {
        check_blockdev(a);
    }
    if (may_run(cmd->name, a)) {
        run_command(cmd, a, ok);
    }
    json_decref(a);
    json_decref(req);
    return 0;
}
