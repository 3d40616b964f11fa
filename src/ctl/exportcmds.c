/*
 * bjctl's NBD export commands: export add (block-export-add type nbd),
 * export remove (block-export-del, then the BLOCK_EXPORT_DELETED that says
 * it is gone), export list (query-block-exports).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "util/alloc.h"

static const char export_usage[] =
    "usage: bjctl export add NODE [--name N] [--writable] [--bitmap B]... "
    "[--allocation-depth]\n"
    "       bjctl export remove ID\n"
    "       bjctl export list";

static void print_done(const Ctl *ctl, const char *id, const char *result,
                       const char *line)
{
    if (ctl->json) {
        json_t *o = json_pack("{s:s, s:s}", "id", id, "result", result);

        ctl_print_json(o);
        json_decref(o);
    } else {
        printf("export '%s': %s\n", id, line);
    }
}

static int export_list(const Ctl *ctl)
{
    int r, w_id, w_node;
    json_auto_t *rows = ctl_query(ctl, "query-block-exports", &r);
    json_t *e;
    size_t i;

    if (!rows) {
        return r;
    }
    if (ctl_print_rows_or_empty(ctl, rows, "no exports")) {
        return EXIT_OK;
    }
    w_id = ctl_column_width(rows, "id", "ID");
    w_node = ctl_column_width(rows, "node-name", "NODE");
    printf("%-*s  %-4s  %-*s  %s\n", w_id, "ID", "TYPE", w_node, "NODE",
           "STATUS");
    json_array_foreach(rows, i, e) {
        printf("%-*s  %-4s  %-*s  %s\n", w_id, ctl_str_or(e, "id", "?"),
               ctl_str_or(e, "type", "?"), w_node,
               ctl_str_or(e, "node-name", "?"),
               json_is_true(json_object_get(e, "shutting-down")) ?
               "shutting-down" : "serving");
    }
    return EXIT_OK;
}

bool export_wait_deleted(const Ctl *ctl, Qmpc *q, const char *id)
{
    int64_t end = qmpc_now_ms() + ctl->connect_timeout_ms;

    for (;;) {
        int64_t left = end - qmpc_now_ms();
        json_t *ev = NULL;
        char *err = NULL;
        bool match;

        if (left <= 0 || qmpc_next_event(q, (int)left, &ev, &err) != 1) {
            free(err);
            return false;
        }
        match = strcmp(ctl_str_or(ev, "event", ""),
                       "BLOCK_EXPORT_DELETED") == 0 &&
                strcmp(ctl_str_or(json_object_get(ev, "data"), "id", ""),
                       id) == 0;
        json_decref(ev);
        if (match) {
            return true;
        }
    }
}

json_t *export_add_args(const Ctl *ctl, const char *node, const char *id)
{
    json_t *args = json_pack("{s:s, s:s, s:s, s:s}", "type", "nbd", "id", id,
                             "node-name", node, "name", id);

    if (ctl->nbitmaps) {
        json_t *b = json_array();

        for (int i = 0; i < ctl->nbitmaps; i++) {
            json_array_append_new(b, json_string(ctl->bitmaps[i]));
        }
        json_object_set_new(args, "bitmaps", b);
    }
    if (ctl->allocation_depth) {
        json_object_set_new(args, "allocation-depth", json_true());
    }
    return args;
}

int cmd_export(const Ctl *ctl)
{
    const char *verb, *id;
    json_t *args;
    char *err = NULL;
    bool add;
    Qmpc *q;
    int r;

    if (ctl->nargs < 1) {
        return ctl_usage_error(export_usage, "%s", "export needs a subcommand");
    }
    verb = ctl->args[0];
    add = strcmp(verb, "add") == 0;
    if (!add && (ctl->export_name || ctl->writable || ctl->nbitmaps ||
                 ctl->allocation_depth)) {
        return ctl_usage_error(export_usage, "%s", "--name, --writable, --bitmap and "
                                  "--allocation-depth apply to 'export add' "
                                  "only");
    }
    if (strcmp(verb, "list") == 0) {
        if (ctl->nargs != 1) {
            return ctl_usage_error(export_usage, "%s", "export list takes no argument");
        }
        return export_list(ctl);
    }
    if (!add && strcmp(verb, "remove") != 0) {
        return ctl_usage_error(export_usage, "unknown export subcommand '%s'", verb);
    }
    if (ctl->nargs != 2) {
        return ctl_usage_error(export_usage, "export %s: wrong number of arguments",
                                  verb);
    }
    if (add) {
        /* the export's id is its NBD name: one word for both */
        id = ctl->export_name ? ctl->export_name : ctl->args[1];
        args = export_add_args(ctl, ctl->args[1], id);
        if (ctl->writable) {
            json_object_set_new(args, "writable", json_true());
        }
    } else {
        id = ctl->args[1];
        args = json_pack("{s:s}", "id", id);
    }

    q = ctl_connect(ctl);
    if (!q) {
        json_decref(args);
        return EXIT_CONN;
    }
    r = qmpc_exec(q, add ? "block-export-add" : "block-export-del", args,
                  NULL, &err);
    if (r != QMPC_OK) {
        if (add && strstr(err, "NBD server not running")) {
            ctl_error("cannot export '%s': the daemon runs no NBD server "
                      "(start it with --nbd-server, or QMP "
                      "nbd-server-start)", ctl->args[1]);
        } else {
            ctl_error("%s", err);
        }
        free(err);
    } else if (add) {
        print_done(ctl, id, "added", "added");
    } else if (export_wait_deleted(ctl, q, id)) {
        print_done(ctl, id, "removed", "removed");
    } else {
        /* clients still connected: it goes when they do */
        print_done(ctl, id, "shutting-down", "shutting down (it goes when "
                   "its clients disconnect)");
    }
    qmpc_close(q);
    return r;
}
