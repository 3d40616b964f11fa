/*
 * bjctl fleece: pull-mode backup in one verb each way.
 *
 * start: a scratch qcow2 overlay (created by the daemon, as large as the
 * disk) opened with the disk as its backing node, a backup job sync=none
 * from the disk into it (so whatever the guest overwrites from now on is
 * first copied there), and an NBD export of the overlay: it reads the disk
 * as it was at that instant, however the guest writes on.  The job starts
 * in one transaction with the bitmap changes (the published bitmaps are
 * disabled, the next one added), so they all name the same instant; a
 * published bitmap must be disabled anyway, as qemu refuses an enabled one
 * on a read-only export.  Each step is undone, in reverse, when a later
 * one fails (the transaction as a whole, by the daemon).
 *
 * stop: the export, the job, the node and the scratch file go, in that
 * order; the disk was never touched.  One name is the export's id and NBD
 * name, the node's name and the job's id.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl/ctl.h"
#include "util/alloc.h"

static const char fleece_usage[] =
    "usage: bjctl fleece start NODE --file PATH [--name N] [--bitmap B]... "
    "[--next-bitmap NEW [--persistent]] [--allocation-depth]\n"
    "       bjctl fleece stop N";

/* The entry of query-named-block-nodes for node-name (a new reference), or
 * NULL; *rc says why (EXIT_ERROR: no such node, message printed). */
static json_t *find_node(Qmpc *q, const char *name, int *rc)
{
    json_t *nodes = NULL, *n, *found = NULL;
    char *err = NULL;
    size_t i;

    *rc = qmpc_exec(q, "query-named-block-nodes",
                    json_pack("{s:b}", "flat", 1), &nodes, &err);
    if (*rc != QMPC_OK) {
        ctl_error("%s", err);
        free(err);
        return NULL;
    }
    json_array_foreach(nodes, i, n) {
        if (strcmp(ctl_str_or(n, "node-name", ""), name) == 0) {
            found = json_incref(n);
            break;
        }
    }
    json_decref(nodes);
    if (!found) {
        ctl_error("no node '%s'", name);
        *rc = EXIT_ERROR;
    }
    return found;
}

/* Runs cmd; on refusal prints the daemon's message.  args is stolen. */
static int exec_or_say(Qmpc *q, const char *cmd, json_t *args)
{
    char *err = NULL;
    int rc = qmpc_exec(q, cmd, args, NULL, &err);

    if (rc != QMPC_OK) {
        ctl_error("%s", err);
        free(err);
    }
    return rc;
}

/*
 * Cancels job id and waits until it is gone.  Returns EXIT_OK when it
 * ended cancelled (or was already gone), else the exit status with the
 * reason printed.
 */
static int cancel_and_wait(const Ctl *ctl, Qmpc **qp, const char *id)
{
    JobWait w = {
        .id = id, .dismiss = true, .poll_only = ctl->poll,
        .deadline_ms = -1,
    };
    char *err = NULL;
    int rc;

    rc = qmpc_exec(*qp, "job-cancel", json_pack("{s:s}", "id", id), NULL,
                   &err);
    if (rc != QMPC_OK) {
        ctl_error("%s", err);
        free(err);
        return rc;
    }
    rc = job_wait(ctl, qp, &w);
    if (rc == EXIT_OK && w.outcome == OUTCOME_FAILED) {
        ctl_error("job '%s' failed: %s", id,
                  w.error ? w.error : "unknown error");
        rc = EXIT_ERROR;
    }
    job_wait_cleanup(&w);
    return rc;
}

/*
 * The scratch image's path: the node's filename, which is a "json:{...}"
 * one when, as here, the backing node is not the header's.
 */
static char *scratch_path(json_t *node)
{
    const char *file = ctl_str_or(node, "file", "");
    json_auto_t *j = NULL;

    if (strncmp(file, "json:", 5) != 0) {
        return bj_strdup(file);
    }
    j = json_loads(file + 5, 0, NULL);
    return bj_strdup(ctl_str_or(json_object_get(j, "file"), "filename", ""));
}

static void print_result(const Ctl *ctl, const char *name, const char *result,
                         const char *node, const char *file)
{
    if (ctl->json) {
        json_t *o = json_pack("{s:s, s:s}", "id", name, "result", result);

        if (node) {
            json_object_set_new(o, "node", json_string(node));
        }
        if (file) {
            json_object_set_new(o, "file", json_string(file));
        }
        ctl_print_json(o);
        json_decref(o);
    } else if (node) {
        printf("fleece '%s': %s as of now, exported as '%s' (scratch %s)\n",
               name, node, name, file);
    } else {
        printf("fleece '%s': stopped\n", name);
    }
}

static int fleece_start(const Ctl *ctl)
{
    const char *disk = ctl->args[1];
    char *name = ctl->export_name ? bj_strdup(ctl->export_name) :
                 bj_asprintf("fleece-%s", disk);
    json_auto_t *node = NULL;
    json_t *args, *actions;
    char *path;
    bool created = false, added = false, job = false;
    Qmpc *q;
    int rc;

    if (!ctl->file) {
        free(name);
        return ctl_usage_error(fleece_usage, "%s", "fleece start: --file PATH "
                               "(the scratch image to create) is required");
    }
    path = ctl_abs_path(ctl->file);
    if (access(path, F_OK) == 0) {
        ctl_error("fleece start: '%s' exists; the scratch image must be a "
                  "new file (nothing changed)", path);
        free(path);
        free(name);
        return EXIT_ERROR;
    }
    q = ctl_connect(ctl);
    if (!q) {
        free(path);
        free(name);
        return EXIT_CONN;
    }
    node = find_node(q, disk, &rc);
    if (!node) {
        goto out;
    }

    ImageSpec spec = {
        .path = path, .format = "qcow2",
        .size = json_integer_value(json_object_get(
                    json_object_get(node, "image"), "virtual-size")),
    };
    rc = image_create(ctl, &q, &spec);
    if (rc != EXIT_OK) {
        goto undo;
    }
    created = true;

    rc = exec_or_say(q, "blockdev-add", json_pack(
                         "{s:s, s:s, s:{s:s, s:s}, s:s}", "driver", "qcow2",
                         "node-name", name, "file", "driver", "file",
                         "filename", path, "backing", disk));
    if (rc != EXIT_OK) {
        goto undo;
    }
    added = true;

    /* The instant: the job starts, bitmaps freeze and begin, atomically. */
    actions = json_array();
    if (ctl->next_bitmap) {
        json_array_append_new(actions, json_pack(
            "{s:s, s:{s:s, s:s, s:b}}", "type", "block-dirty-bitmap-add",
            "data", "node", disk, "name", ctl->next_bitmap, "persistent",
            ctl->persistent));
    }
    json_array_append_new(actions, json_pack(
        "{s:s, s:{s:s, s:s, s:s, s:s}}", "type", "blockdev-backup", "data",
        "job-id", name, "device", disk, "target", name, "sync", "none"));
    for (int i = 0; i < ctl->nbitmaps; i++) {
        json_array_append_new(actions, json_pack(
            "{s:s, s:{s:s, s:s}}", "type", "block-dirty-bitmap-disable",
            "data", "node", disk, "name", ctl->bitmaps[i]));
    }
    rc = exec_or_say(q, "transaction", json_pack("{s:o}", "actions",
                                                 actions));
    if (rc != EXIT_OK) {
        goto undo;
    }
    job = true;

    args = export_add_args(ctl, name, name);
    rc = exec_or_say(q, "block-export-add", args);
    if (rc != EXIT_OK) {
        goto undo;
    }
    print_result(ctl, name, "started", disk, path);
    goto out;

undo:
    /* what failed was said; undoing must not say more unless it fails */
    if (job) {
        cancel_and_wait(ctl, &q, name);
    }
    if (added) {
        exec_or_say(q, "blockdev-del", json_pack("{s:s}", "node-name", name));
    }
    if (created && unlink(path) < 0) {
        ctl_error("could not remove %s: %s", path, strerror(errno));
    }
out:
    qmpc_close(q);
    free(path);
    free(name);
    return rc;
}

static int fleece_stop(const Ctl *ctl)
{
    const char *name = ctl->args[1];
    json_auto_t *node = NULL, *jobs = NULL, *exports = NULL;
    const char *type;
    char *path = NULL, *err = NULL;
    json_t *e;
    bool exported = false, shutting_down = false;
    size_t i;
    Qmpc *q;
    int rc;

    q = ctl_connect(ctl);
    if (!q) {
        return EXIT_CONN;
    }
    /* Check it is a fleece before touching anything. */
    node = find_node(q, name, &rc);
    if (!node) {
        goto out;
    }
    jobs = jobs_query(q, &err);
    if (!jobs) {
        ctl_error("%s", err);
        free(err);
        rc = EXIT_CONN;
        goto out;
    }
    type = ctl_str_or(jobs_find(jobs, name), "type", NULL);
    if (!type || strcmp(type, "backup") != 0 ||
        strcmp(ctl_str_or(node, "drv", ""), "qcow2") != 0) {
        ctl_error("'%s' is not a fleece (no backup job '%s' into a qcow2 "
                  "node '%s'); nothing changed", name, name, name);
        rc = EXIT_ERROR;
        goto out;
    }
    rc = qmpc_exec(q, "query-block-exports", NULL, &exports, &err);
    if (rc != QMPC_OK) {
        ctl_error("%s", err);
        free(err);
        goto out;
    }
    json_array_foreach(exports, i, e) {
        if (strcmp(ctl_str_or(e, "id", ""), name) == 0) {
            exported = true;
            shutting_down = json_is_true(json_object_get(e, "shutting-down"));
        }
    }
    path = scratch_path(node);

    /*
     * While a client is still reading, the daemon refuses (both qsd and
     * blockjobd: mode safe): stop there, so the client keeps its
     * point-in-time view, and say what to do.
     */
    if (exported) {
        if (!shutting_down) {
            rc = qmpc_exec(q, "block-export-del",
                           json_pack("{s:s}", "id", name), NULL, &err);
            if (rc != QMPC_OK) {
                ctl_error("%s", err);
                if (rc == QMPC_DAEMON_ERROR && strstr(err, "in use")) {
                    fprintf(stderr, "bjctl: a client is still connected to "
                            "'%s'; nothing changed: run fleece stop again "
                            "once it has disconnected\n", name);
                }
                free(err);
                goto out;
            }
        }
        if (!export_wait_deleted(ctl, q, name)) {
            ctl_error("export '%s' is shutting down but not gone yet (a "
                      "client is still connected); run fleece stop again "
                      "once it has disconnected", name);
            rc = EXIT_ERROR;
            goto out;
        }
    }
    rc = cancel_and_wait(ctl, &q, name);
    if (rc != EXIT_OK) {
        goto out;
    }
    rc = exec_or_say(q, "blockdev-del", json_pack("{s:s}", "node-name", name));
    if (rc != EXIT_OK) {
        goto out;
    }
    if (*path && unlink(path) < 0 && errno != ENOENT) {
        ctl_error("fleece '%s' stopped, but its scratch image %s could not "
                  "be removed: %s", name, path, strerror(errno));
        rc = EXIT_ERROR;
        goto out;
    }
    print_result(ctl, name, "stopped", NULL, NULL);
out:
    free(path);
    qmpc_close(q);
    return rc;
}

int cmd_fleece(const Ctl *ctl)
{
    const char *verb = ctl->nargs ? ctl->args[0] : "";

    if (strcmp(verb, "start") == 0) {
        if (ctl->nargs != 2) {
            return ctl_usage_error(fleece_usage, "%s", "fleece start needs "
                                   "NODE: the disk to fleece");
        }
        return fleece_start(ctl);
    }
    if (strcmp(verb, "stop") == 0) {
        if (ctl->nargs != 2) {
            return ctl_usage_error(fleece_usage, "%s", "fleece stop needs N: "
                                   "the fleece's name");
        }
        if (ctl->file || ctl->nbitmaps || ctl->allocation_depth ||
            ctl->export_name || ctl->next_bitmap || ctl->persistent) {
            return ctl_usage_error(fleece_usage, "%s", "--file, --name, "
                                   "--bitmap, --next-bitmap, --persistent "
                                   "and --allocation-depth apply to "
                                   "'fleece start' only");
        }
        return fleece_stop(ctl);
    }
    return ctl_usage_error(fleece_usage, "%s", *verb ?
                           "unknown fleece subcommand" :
                           "fleece needs a subcommand: start or stop");
}
