/*
 * bjctl's node commands: node add (one blockdev-add: a format node over
 * an inline file node, or a spec given whole) and node remove (one
 * blockdev-del; the daemon drops the inline file node with its parent).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "util/alloc.h"

static const char node_usage[] =
    "usage: bjctl node add NAME --driver qcow2|raw|file --file PATH "
    "[--backing NODE|none] [--read-only]\n"
    "       bjctl node add SPEC   (JSON, or KEY=VALUE,... with dotted keys)\n"
    "       bjctl node remove NAME";

/* A key=value value: an integer, true/false, else a string. */
static json_t *kv_value(const char *v)
{
    char *end;
    long long n;

    if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) {
        return json_boolean(v[0] == 't');
    }
    n = strtoll(v, &end, 10);
    if (*v && (isdigit((unsigned char)*v) || *v == '-') && !*end) {
        return json_integer(n);
    }
    return json_string(v);
}

/* "driver=qcow2,file.driver=file,file.filename=a" as nested objects, or
 * NULL with *bad the offending item. */
static json_t *parse_kv(const char *spec, char **bad)
{
    char *copy = bj_strdup(spec), *save = NULL, *item;
    json_t *root = json_object();

    for (item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '='), *key = item, *dot;
        json_t *obj = root;

        if (!eq || eq == item) {
            *bad = bj_strdup(item);
            goto fail;
        }
        *eq = '\0';
        while ((dot = strchr(key, '.'))) {
            json_t *sub;

            *dot = '\0';
            sub = json_object_get(obj, key);
            if (!sub) {
                sub = json_object();
                json_object_set_new(obj, key, sub);
            } else if (!json_is_object(sub)) {
                *bad = bj_strdup(key);
                goto fail;
            }
            obj = sub;
            key = dot + 1;
        }
        json_object_set_new(obj, key, kv_value(eq + 1));
    }
    free(copy);
    return root;
fail:
    free(copy);
    json_decref(root);
    return NULL;
}

/* The blockdev-add arguments the options describe, or NULL (printed). */
static json_t *node_spec(const Ctl *ctl, const char *arg, int *rc)
{
    json_t *args;
    char *path;

    *rc = EXIT_USAGE;
    if (arg[0] == '{' || strchr(arg, '=')) {
        char *bad = NULL;

        if (ctl->driver || ctl->file || ctl->backing || ctl->read_only) {
            ctl_usage_error(node_usage, "%s", "node add SPEC: the spec says it all "
                             "(no --driver, --file, --backing, --read-only)");
            return NULL;
        }
        if (arg[0] == '{') {
            json_error_t jerr;

            args = json_loads(arg, 0, &jerr);
            if (!json_is_object(args)) {
                json_decref(args);
                ctl_usage_error(node_usage, "node add: the spec is not a JSON object: "
                                 "%s", jerr.text);
                return NULL;
            }
        } else if (!(args = parse_kv(arg, &bad))) {
            ctl_usage_error(node_usage, "node add: bad KEY=VALUE item '%s'", bad);
            free(bad);
            return NULL;
        }
        if (!json_is_string(json_object_get(args, "node-name"))) {
            json_decref(args);
            ctl_usage_error(node_usage, "%s", "node add: the spec needs a node-name");
            return NULL;
        }
        return args;
    }
    if (!ctl->driver || !ctl->file) {
        ctl_usage_error(node_usage, "%s", "node add NAME needs --driver and --file");
        return NULL;
    }
    path = ctl_abs_path(ctl->file);
    if (strcmp(ctl->driver, "file") == 0) {
        args = json_pack("{s:s, s:s, s:s}", "driver", "file", "node-name",
                         arg, "filename", path);
    } else if (strcmp(ctl->driver, "qcow2") == 0 ||
               strcmp(ctl->driver, "raw") == 0) {
        args = json_pack("{s:s, s:s, s:{s:s, s:s}}", "driver", ctl->driver,
                         "node-name", arg, "file", "driver", "file",
                         "filename", path);
    } else {
        free(path);
        ctl_usage_error(node_usage, "node add: --driver '%s': qcow2, raw or file (give "
                         "a SPEC for other drivers)", ctl->driver);
        return NULL;
    }
    free(path);
    if (ctl->backing) {
        if (strcmp(ctl->driver, "qcow2") != 0) {
            json_decref(args);
            ctl_usage_error(node_usage, "%s", "node add: --backing applies to qcow2 "
                             "only");
            return NULL;
        }
        json_object_set_new(args, "backing",
                            strcmp(ctl->backing, "none") == 0 ?
                            json_null() : json_string(ctl->backing));
    }
    if (ctl->read_only) {
        json_object_set_new(args, "read-only", json_true());
    }
    return args;
}

int cmd_node(const Ctl *ctl)
{
    const char *verb, *name, *cmd, *done;
    json_t *args;
    char *err = NULL;
    Qmpc *q;
    int r;

    if (ctl->nargs != 2) {
        return ctl_usage_error(node_usage, "%s", ctl->nargs < 2 ?
                                "node needs a subcommand and its argument" :
                                "node: too many arguments");
    }
    verb = ctl->args[0];
    if (strcmp(verb, "add") == 0) {
        args = node_spec(ctl, ctl->args[1], &r);
        if (!args) {
            return r;
        }
        name = json_string_value(json_object_get(args, "node-name"));
        cmd = "blockdev-add";
        done = "added";
    } else if (strcmp(verb, "remove") == 0) {
        if (ctl->driver || ctl->file || ctl->backing || ctl->read_only) {
            return ctl_usage_error(node_usage, "%s", "--driver, --file, --backing and "
                                    "--read-only apply to 'node add' only");
        }
        args = json_pack("{s:s}", "node-name", ctl->args[1]);
        name = ctl->args[1];
        cmd = "blockdev-del";
        done = "removed";
    } else {
        return ctl_usage_error(node_usage, "unknown node subcommand '%s'", verb);
    }

    q = ctl_connect(ctl);
    if (!q) {
        json_decref(args);
        return EXIT_CONN;
    }
    /* name lives in args, which qmpc_exec takes: keep a copy */
    {
        char *keep = bj_strdup(name);

        r = qmpc_exec(q, cmd, args, NULL, &err);
        qmpc_close(q);
        if (r != QMPC_OK) {
            ctl_error("%s", err);
            free(err);
        } else if (ctl->json) {
            json_t *o = json_pack("{s:s, s:s}", "node", keep, "result", done);

            ctl_print_json(o);
            json_decref(o);
        } else {
            printf("node '%s': %s\n", keep, done);
        }
        free(keep);
    }
    return r;
}
