/*
 * bjctl's dirty bitmap commands: bitmap list|add|remove|clear|enable|
 * disable|merge|sha256, each one QMP command (list reads
 * query-named-block-nodes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "ctl/units.h"

static const char bitmap_usage[] =
    "usage: bjctl bitmap list [NODE] [--all]\n"
    "       bjctl bitmap add NODE NAME [--granularity SIZE] [--persistent] "
    "[--disabled]\n"
    "       bjctl bitmap remove|clear|enable|disable|sha256 NODE NAME\n"
    "       bjctl bitmap merge NODE NAME SOURCE... (SOURCE: NAME on NODE, "
    "or SRCNODE:NAME)";

/* "recording,persistent,busy..." for the table. */
static void fmt_flags(char *buf, size_t size, json_t *b)
{
    static const char *const flags[] = { "persistent", "busy",
                                         "inconsistent" };

    snprintf(buf, size, "%s", json_is_false(json_object_get(b, "recording")) ?
             "disabled" : "recording");
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (json_is_true(json_object_get(b, flags[i]))) {
            size_t l = strlen(buf);
            snprintf(buf + l, size - l, ",%s", flags[i]);
        }
    }
}

static int bitmap_list(const Ctl *ctl, const char *only)
{
    int r;
    json_auto_t *nodes = ctl_query(ctl, "query-named-block-nodes", &r);
    json_auto_t *rows = NULL;
    json_t *n, *b;
    size_t i, k;
    bool found = false;
    int w_node, w_name;

    if (!nodes) {
        return r;
    }
    /* One flat row per bitmap: the node's name added to qemu's fields. */
    rows = json_array();
    json_array_foreach(nodes, i, n) {
        const char *name = ctl_str_or(n, "node-name", "");

        if (only ? strcmp(name, only) != 0 : name[0] == '#' && !ctl->all) {
            continue;
        }
        found = true;
        json_array_foreach(json_object_get(n, "dirty-bitmaps"), k, b) {
            json_t *row;

            /* qemu also lists a job's internal bitmaps, without a name:
             * no command can address them, so they are left out. */
            if (!json_is_string(json_object_get(b, "name"))) {
                continue;
            }
            row = json_deep_copy(b);

            json_object_set_new(row, "node", json_string(name));
            json_array_append_new(rows, row);
        }
    }
    if (only && !found) {
        ctl_error("no node '%s'", only);
        return EXIT_ERROR;
    }
    if (ctl_print_rows_or_empty(ctl, rows, "no bitmaps")) {
        return EXIT_OK;
    }
    w_node = ctl_column_width(rows, "node", "NODE");
    w_name = ctl_column_width(rows, "name", "NAME");
    printf("%-*s  %-*s  %11s  %10s  %s\n", w_node, "NODE", w_name, "NAME",
           "GRANULARITY", "DIRTY", "STATUS");
    json_array_foreach(rows, i, b) {
        char gran[32], count[32], flags[96];

        units_format_size(gran, sizeof(gran),
                          json_integer_value(json_object_get(b,
                                                             "granularity")));
        units_format_size(count, sizeof(count),
                          json_integer_value(json_object_get(b, "count")));
        fmt_flags(flags, sizeof(flags), b);
        printf("%-*s  %-*s  %11s  %10s  %s\n", w_node, ctl_str_or(b, "node", "?"),
               w_name, ctl_str_or(b, "name", "?"), gran, count, flags);
    }
    return EXIT_OK;
}

/* A merge source: "NAME" on the target's node, or "NODE:NAME" (node
 * names cannot hold ':', so the first one splits). */
static json_t *merge_source(const char *s)
{
    const char *colon = strchr(s, ':');

    if (!colon || colon == s) {
        return json_string(s);
    }
    return json_pack("{s:s%, s:s}", "node", s, (size_t)(colon - s),
                     "name", colon + 1);
}

/* bjctl bitmap VERB -> the QMP command, and the word --json reports
 * (NULL: the command's answer is printed instead). */
static const struct {
    const char *verb, *cmd, *done;
} verbs[] = {
    { "add", "block-dirty-bitmap-add", "added" },
    { "remove", "block-dirty-bitmap-remove", "removed" },
    { "clear", "block-dirty-bitmap-clear", "cleared" },
    { "enable", "block-dirty-bitmap-enable", "enabled" },
    { "disable", "block-dirty-bitmap-disable", "disabled" },
    { "merge", "block-dirty-bitmap-merge", "merged" },
    { "sha256", "x-debug-block-dirty-bitmap-sha256", NULL },
};

int cmd_bitmap(const Ctl *ctl)
{
    const char *verb, *node, *name, *cmd, *done;
    json_t *args, *ret = NULL;
    char *err = NULL;
    Qmpc *q;
    int r;

    if (ctl->nargs < 1) {
        return ctl_usage_error(bitmap_usage, "%s", "bitmap needs a subcommand");
    }
    verb = ctl->args[0];
    if ((ctl->has_granularity || ctl->persistent || ctl->disabled) &&
        strcmp(verb, "add") != 0) {
        return ctl_usage_error(bitmap_usage, "%s", "--granularity, --persistent and "
                                  "--disabled apply to 'bitmap add' only");
    }
    if (strcmp(verb, "list") == 0) {
        if (ctl->nargs > 2) {
            return ctl_usage_error(bitmap_usage, "%s", "bitmap list takes at most one "
                                      "argument: the node");
        }
        return bitmap_list(ctl, ctl->nargs == 2 ? ctl->args[1] : NULL);
    }
    cmd = NULL;
    done = NULL;
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (strcmp(verb, verbs[i].verb) == 0) {
            cmd = verbs[i].cmd;
            done = verbs[i].done;
        }
    }
    if (!cmd) {
        return ctl_usage_error(bitmap_usage, "unknown bitmap subcommand '%s'", verb);
    }
    if (strcmp(verb, "merge") == 0 ? ctl->nargs < 4 : ctl->nargs != 3) {
        return ctl_usage_error(bitmap_usage, "bitmap %s: wrong number of arguments",
                                  verb);
    }
    node = ctl->args[1];
    name = ctl->args[2];
    if (strcmp(verb, "merge") == 0) {
        json_t *srcs = json_array();

        for (int i = 3; i < ctl->nargs; i++) {
            json_array_append_new(srcs, merge_source(ctl->args[i]));
        }
        args = json_pack("{s:s, s:s, s:o}", "node", node, "target", name,
                         "bitmaps", srcs);
    } else {
        args = json_pack("{s:s, s:s}", "node", node, "name", name);
    }
    if (ctl->has_granularity) {
        json_object_set_new(args, "granularity",
                            json_integer(ctl->granularity));
    }
    if (ctl->persistent) {
        json_object_set_new(args, "persistent", json_true());
    }
    if (ctl->disabled) {
        json_object_set_new(args, "disabled", json_true());
    }

    q = ctl_connect(ctl);
    if (!q) {
        json_decref(args);
        return EXIT_CONN;
    }
    r = qmpc_exec(q, cmd, args, &ret, &err);
    qmpc_close(q);
    if (r != QMPC_OK) {
        ctl_error("%s", err);
        free(err);
        return r;
    }
    if (!done) {
        const char *sum = ctl_str_or(ret, "sha256", "?");

        if (ctl->json) {
            json_t *o = json_pack("{s:s, s:s, s:s}", "node", node, "name",
                                  name, "sha256", sum);

            ctl_print_json(o);
            json_decref(o);
        } else {
            puts(sum);
        }
    } else if (ctl->json) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "node", node, "name", name,
                              "result", done);

        ctl_print_json(o);
        json_decref(o);
    } else {
        printf("bitmap '%s' on node '%s': %s\n", name, node, done);
    }
    json_decref(ret);
    return EXIT_OK;
}
