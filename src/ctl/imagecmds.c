/*
 * bjctl image create: what `qemu-img create` does, done by the daemon with
 * blockdev-create jobs: the file (sized for raw), then for qcow2 the format
 * written into it through a temporary file node.  Each job is watched to
 * its end and dismissed.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl/ctl.h"
#include "ctl/units.h"
#include "util/alloc.h"

static const char image_usage[] =
    "usage: bjctl image create PATH --format qcow2|raw --size SIZE "
    "[--backing FILE [--backing-format F]] [--cluster-size SIZE]";

/* Runs blockdev-create with options (stolen) as job id to its end. */
static int run_create(const Ctl *ctl, Qmpc **qp, const char *id,
                      const char *path, json_t *options)
{
    json_t *args = json_pack("{s:s, s:o}", "job-id", id, "options", options);
    JobWait w = {
        .id = id, .dismiss = true, .verbose = ctl->verbose,
        .poll_only = ctl->poll, .deadline_ms = -1,
    };
    char *err = NULL;
    int rc;

    rc = qmpc_exec(*qp, "blockdev-create", args, NULL, &err);
    if (rc != QMPC_OK) {
        ctl_error("%s", err);
        free(err);
        return rc;
    }
    rc = job_wait(ctl, qp, &w);
    if (rc == EXIT_OK && w.outcome != OUTCOME_COMPLETED) {
        ctl_error("creating '%s' failed: %s", path,
                  w.error ? w.error : w.outcome == OUTCOME_CANCELLED ?
                  "the job was cancelled" : "the job's end was not seen");
        rc = w.outcome == OUTCOME_CANCELLED ? EXIT_CANCELLED : EXIT_ERROR;
    }
    job_wait_cleanup(&w);
    return rc;
}

int image_create(const Ctl *ctl, Qmpc **qp, const ImageSpec *spec)
{
    Qmpc *q = *qp;
    char *id, *node = NULL, *err = NULL;
    json_t *opts;
    bool qcow2 = strcmp(spec->format, "qcow2") == 0;
    int rc;

    id = bj_asprintf("bjctl-create-%ld-file", (long)getpid());
    opts = json_pack("{s:s, s:s, s:I}", "driver", "file", "filename",
                     spec->path, "size",
                     (json_int_t)(qcow2 ? 0 : spec->size));
    rc = run_create(ctl, qp, id, spec->path, opts);
    q = *qp;
    /* a new id: the first job's late events must not be taken for its */
    free(id);
    id = bj_asprintf("bjctl-create-%ld-%s", (long)getpid(), spec->format);
    if (rc == EXIT_OK && qcow2) {
        node = bj_asprintf("bjctl-create-%ld", (long)getpid());
        rc = qmpc_exec(q, "blockdev-add", json_pack(
                           "{s:s, s:s, s:s}", "driver", "file", "node-name",
                           node, "filename", spec->path), NULL, &err);
        if (rc != QMPC_OK) {
            ctl_error("%s", err);
            free(err);
            free(node);
            node = NULL;
        }
    }
    if (node) {
        opts = json_pack("{s:s, s:s, s:I}", "driver", "qcow2", "file", node,
                         "size", (json_int_t)spec->size);
        if (spec->backing) {
            json_object_set_new(opts, "backing-file",
                                json_string(spec->backing));
        }
        if (spec->backing_format) {
            json_object_set_new(opts, "backing-fmt",
                                json_string(spec->backing_format));
        }
        if (spec->cluster_size) {
            json_object_set_new(opts, "cluster-size",
                                json_integer(spec->cluster_size));
        }
        rc = run_create(ctl, qp, id, spec->path, opts);
        q = *qp;
        /* the temporary node goes whatever happened */
        if (qmpc_exec(q, "blockdev-del", json_pack("{s:s}", "node-name", node),
                      NULL, &err) != QMPC_OK) {
            if (rc == EXIT_OK) {
                ctl_error("%s", err);
                rc = EXIT_ERROR;
            }
            free(err);
        }
        free(node);
    }
    free(id);
    return rc;
}

int cmd_image(const Ctl *ctl)
{
    const char *fmt = ctl->format;
    ImageSpec spec;
    char *path;
    Qmpc *q;
    int rc;

    if (ctl->nargs != 2 || strcmp(ctl->args[0], "create") != 0) {
        return ctl_usage_error(image_usage, "%s", ctl->nargs >= 1 &&
                                 strcmp(ctl->args[0], "create") != 0 ?
                                 "unknown image subcommand" :
                                 "image create needs PATH");
    }
    if (!fmt || (strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "raw") != 0)) {
        return ctl_usage_error(image_usage, "%s", "image create: --format qcow2 or "
                                 "--format raw");
    }
    if (!ctl->has_size) {
        return ctl_usage_error(image_usage, "%s", "image create: --size SIZE is "
                                 "required (e.g. 10G)");
    }
    if (strcmp(fmt, "raw") == 0 &&
        (ctl->backing || ctl->backing_format || ctl->has_cluster_size)) {
        return ctl_usage_error(image_usage, "%s", "image create: --backing, "
                                 "--backing-format and --cluster-size are "
                                 "qcow2's");
    }
    if (ctl->backing_format && !ctl->backing) {
        return ctl_usage_error(image_usage, "%s", "image create: --backing-format "
                                 "needs --backing");
    }
    path = ctl_abs_path(ctl->args[1]);
    q = ctl_connect(ctl);
    if (!q) {
        free(path);
        return EXIT_CONN;
    }
    spec = (ImageSpec) {
        .path = path, .format = fmt, .size = ctl->size,
        .backing = ctl->backing, .backing_format = ctl->backing_format,
        .cluster_size = ctl->has_cluster_size ? ctl->cluster_size : 0,
    };
    rc = image_create(ctl, &q, &spec);
    qmpc_close(q);
    if (rc == EXIT_OK) {
        if (ctl->json) {
            json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "image", path,
                                  "result", "created", "format", fmt,
                                  "size", (json_int_t)ctl->size);

            ctl_print_json(o);
            json_decref(o);
        } else {
            printf("image '%s' created (%s, %" PRId64 " bytes)\n", path, fmt,
                   ctl->size);
        }
    }
    free(path);
    return rc;
}
