/*
 * Fuzz target for a QMP command after the JSON parser: the request's shape
 * (qmp_check_request, as the monitor checks it), the command table lookup,
 * the argument check of the command's ArgSpec (qmp_check_args), and, for
 * blockdev-add, the driver's option check (bdrv_check_options).
 *
 * Handlers run too, on an empty daemon (no node, job, export or server),
 * except those that would reach outside the process: blockdev-add and
 * blockdev-create open and create files, drive-mirror may create its
 * target, nbd-server-start listens on a socket, quit ends the daemon.
 * Every other command must fail for want of what it names, or only report.
 *
 * Input: one request as the monitor receives it, e.g.
 *   {"execute": "block-job-pause", "arguments": {"device": "j"}}
 *
 * Properties checked: no crash, leak or over-read; every refusal carries a
 * message; the arguments checked are what dispatch checks (same verdict);
 * a handler that runs leaves the daemon empty.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "block/block.h"
#include "fuzz.h"
#include "qmp/commands.h"
#include "qmp/json-stream.h"
#include "qmp/qmp.h"

static const char *const not_run[] = {
    "blockdev-add", "blockdev-create", "drive-mirror", "nbd-server-start",
    "quit", NULL,
};

static void init_once(void)
{
    static bool done;
    Error *err = NULL;

    if (done) {
        return;
    }
    done = true;
    if (!aio_main_init(&err)) {
        fprintf(stderr, "aio_main_init: %s\n", error_get_pretty(err));
        abort();
    }
    qmp_register_all_commands();
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
    expect_error(bdrv_check_options(drv, args, "", false, &err), err);
    const char *key;
    json_t *child;
    json_object_foreach(args, key, child) {
        const BlockDriver *cd = driver_of(child);
        if (cd) {
            err = NULL;
            expect_error(bdrv_check_options(cd, child, key, false, &err),
                         err);
        }
    }
}

static bool may_run(const char *name)
{
    for (size_t i = 0; not_run[i]; i++) {
        if (!strcmp(name, not_run[i])) {
            return false;
        }
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
    /* on an empty daemon nothing may have appeared */
    if (bdrv_next_node(NULL)) {
        fprintf(stderr, "%s left a node behind\n", cmd->name);
        abort();
    }
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
    if (may_run(cmd->name)) {
        run_command(cmd, a, ok);
    }
    json_decref(a);
    json_decref(req);
    return 0;
}
