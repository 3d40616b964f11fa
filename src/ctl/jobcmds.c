/*
 * bjctl's job commands: start (backup, mirror, pull, commit), control
 * (pause, resume, speed, complete) and abort.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "ctl/units.h"
#include "util/alloc.h"

static void print_result(const Ctl *ctl, const char *id, const char *result,
                         const char *error, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* The final word of a command: a JSON object for scripts, a line else. */
static void print_result(const Ctl *ctl, const char *id, const char *result,
                         const char *error, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ctl_vnote(fmt, ap);        /* the desc of a --json error object */
    va_end(ap);
    if (ctl->json) {
        json_t *o = json_pack("{s:s, s:s}", "id", id, "result", result);

        if (error) {
            json_object_set_new(o, "error", json_string(error));
        }
        ctl_print_json(o);
        json_decref(o);
        return;
    }
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

static int64_t deadline_of(const Ctl *ctl)
{
    if (!ctl->has_timeout) {
        return -1;
    }
    return qmpc_now_ms() + (int64_t)(ctl->timeout * 1000);
}

/* "<type>-<node>", with "-2", "-3"... when that id is taken. */
static char *generate_id(Qmpc *q, const char *type, const char *node)
{
    json_t *jobs = NULL;
    char *err = NULL, *id = NULL;

    if (qmpc_exec(q, "query-jobs", NULL, &jobs, &err) != QMPC_OK) {
        free(err);
        jobs = json_array();
    }
    for (int n = 1; n < 10000; n++) {
        id = n == 1 ? bj_asprintf("%s-%s", type, node) :
                      bj_asprintf("%s-%s-%d", type, node, n);
        if (!jobs_find(jobs, id)) {
            break;
        }
        free(id);
        id = NULL;
    }
    json_decref(jobs);
    return id;
}

static int report_outcome(const Ctl *ctl, JobWait *w, bool pivot)
{
    switch (w->outcome) {
    case OUTCOME_COMPLETED:
        print_result(ctl, w->id, "completed", NULL, "job '%s' completed%s",
                     w->id, pivot ? ": pivoted to the target" : "");
        return EXIT_OK;
    case OUTCOME_READY:
        print_result(ctl, w->id, "ready", NULL, "job '%s' is ready (it keeps "
                     "the target in sync; 'bjctl complete %s' pivots, "
                     "'bjctl abort %s' stops it)", w->id, w->id, w->id);
        return EXIT_OK;
    case OUTCOME_CANCELLED:
        print_result(ctl, w->id, "cancelled", NULL, "job '%s' was cancelled",
                     w->id);
        return EXIT_CANCELLED;
    case OUTCOME_FAILED:
        print_result(ctl, w->id, "failed", w->error, "job '%s' failed: %s",
                     w->id, w->error ? w->error : "unknown error");
        return EXIT_ERROR;
    case OUTCOME_UNKNOWN:
    case OUTCOME_NONE:
        break;
    }
    print_result(ctl, w->id, "unknown", NULL, "job '%s' ended, but how was "
                 "not observed (the event stream was lost)", w->id);
    return EXIT_ERROR;
}

/*
 * virsh's way when a wait is cut short (Ctrl-C, --timeout): abort the job
 * it started and say so.  A mirror or active commit is cancelled with
 * force, as virsh does, so a READY one stops without completing.
 */
static int abort_started(const Ctl *ctl, Qmpc **qp, JobWait *w,
                         bool converges, int why)
{
    char reason[64] = "interrupted";
    json_t *args = json_pack("{s:s}", "device", w->id);
    JobWait a = {
        .id = w->id, .dismiss = w->dismiss, .poll_only = w->poll_only,
        .deadline_ms = -1,
    };
    char *err = NULL;
    int r, rc;

    if (why == EXIT_TIMEOUT) {
        snprintf(reason, sizeof(reason), "timed out after %g s",
                 ctl->timeout);
    }
    if (converges) {
        json_object_set_new(args, "force", json_true());
    }
    r = qmpc_exec(*qp, "block-job-cancel", args, NULL, &err);
    if (r == QMPC_CONN_ERROR) {
        ctl_error("%s, and the job '%s' could not be aborted: %s", reason,
                  w->id, err);
        free(err);
        return EXIT_CONN;
    }
    /* refused: it ended meanwhile; watching it says how */
    free(err);
    rc = job_wait(ctl, qp, &a);
    if (rc == EXIT_OK && a.outcome == OUTCOME_COMPLETED) {
        ctl_error("%s: job '%s' completed before the abort took effect",
                  reason, w->id);
    } else if (rc == EXIT_OK && a.outcome == OUTCOME_FAILED) {
        ctl_error("%s: job '%s' failed before the abort took effect: %s",
                  reason, w->id, a.error ? a.error : "unknown error");
    } else if (rc == EXIT_OK) {
        ctl_error("%s: job '%s' aborted", reason, w->id);
    }
    job_wait_cleanup(&a);
    return rc == EXIT_OK ? why : rc;
}

int cmd_start(const Ctl *ctl, const char *what)
{
    const char *node, *type, *cmd;
    /* as in virsh, --timeout implies --wait */
    bool wait = ctl->wait || ctl->pivot || ctl->has_timeout;
    bool converges;            /* reaches READY and waits for a pivot */
    json_t *args;
    Qmpc *q;
    char *id = NULL, *err = NULL;
    int r, rc;

    if (ctl->nargs != 1) {
        ctl_error("%s takes one argument: the node", what);
        return EXIT_USAGE;
    }
    node = ctl->args[0];
    if (strcmp(what, "pull") == 0) {
        type = "stream";
        cmd = "block-stream";
    } else if (strcmp(what, "commit") == 0) {
        type = "commit";
        cmd = "block-commit";
    } else if (strcmp(what, "mirror") == 0) {
        type = "mirror";
        cmd = "blockdev-mirror";
    } else {
        type = "backup";
        cmd = "blockdev-backup";
    }
    if ((strcmp(type, "mirror") == 0 || strcmp(type, "backup") == 0) &&
        !ctl->to) {
        ctl_error("%s needs --to TARGET (a node name)", what);
        return EXIT_USAGE;
    }
    if ((ctl->bitmap || ctl->mode) && strcmp(type, "backup") != 0) {
        ctl_error("--bitmap and --bitmap-mode apply to backup only");
        return EXIT_USAGE;
    }
    converges = strcmp(type, "mirror") == 0 ||
                (strcmp(type, "commit") == 0 &&
                 (!ctl->top || strcmp(ctl->top, node) == 0));
    if (ctl->pivot && !converges) {
        ctl_error("--pivot applies to a mirror or an active commit only");
        return EXIT_USAGE;
    }

    q = ctl_connect(ctl);
    if (!q) {
        return EXIT_CONN;
    }
    id = ctl->job_id ? bj_strdup(ctl->job_id) : generate_id(q, type, node);
    args = json_pack("{s:s, s:s}", "job-id", id ? id : "", "device", node);
    if (ctl->to) {
        json_object_set_new(args, "target", json_string(ctl->to));
    }
    if (strcmp(type, "backup") == 0) {
        const char *sync = ctl->sync ? ctl->sync :
                           ctl->bitmap ? "incremental" : "full";

        json_object_set_new(args, "sync", json_string(sync));
        if (ctl->bitmap) {
            json_object_set_new(args, "bitmap", json_string(ctl->bitmap));
        }
        if (ctl->mode) {
            json_object_set_new(args, "bitmap-mode", json_string(ctl->mode));
        }
    } else if (strcmp(type, "mirror") == 0) {
        json_object_set_new(args, "sync",
                            json_string(ctl->sync ? ctl->sync : "full"));
    }
    if (ctl->base) {
        json_object_set_new(args, "base-node", json_string(ctl->base));
    }
    if (ctl->top) {
        json_object_set_new(args, "top-node", json_string(ctl->top));
    }
    if (ctl->has_speed) {
        json_object_set_new(args, "speed", json_integer(ctl->speed));
    }
    /*
     * A job that ends while we watch stays (concluded) until we dismiss it,
     * so its final status can be read even if events were lost.  A mirror
     * we leave at READY must not linger later, so it keeps auto-dismiss.
     */
    bool dismiss = wait && (!converges || ctl->pivot);
    if (dismiss) {
        json_object_set_new(args, "auto-dismiss", json_false());
    }
    r = qmpc_exec(q, cmd, args, NULL, &err);
    if (r != QMPC_OK) {
        ctl_error("%s", err);
        free(err);
        free(id);
        qmpc_close(q);
        return r;
    }
    if (!wait) {
        print_result(ctl, id, "started", NULL, "job '%s' started", id);
        free(id);
        qmpc_close(q);
        return EXIT_OK;
    }

    JobWait w = {
        .id = id,
        .stop_at_ready = converges,
        .pivot_at_ready = ctl->pivot,
        .dismiss = dismiss,
        .verbose = ctl->verbose,
        .poll_only = ctl->poll,
        .deadline_ms = deadline_of(ctl),
    };
    ctl_catch_sigint();
    rc = job_wait(ctl, &q, &w);
    if (rc == EXIT_TIMEOUT || rc == EXIT_INTERRUPTED) {
        ctl_interrupted();     /* a Ctrl-C now must not stop the abort */
        rc = abort_started(ctl, &q, &w, converges, rc);
    } else if (rc == EXIT_OK) {
        rc = report_outcome(ctl, &w, ctl->pivot);
    }
    job_wait_cleanup(&w);
    free(id);
    qmpc_close(q);
    return rc;
}

int cmd_control(const Ctl *ctl, const char *verb)
{
    json_t *args;
    const char *cmd, *done;
    char *err = NULL;
    Qmpc *q;
    int r;
    int64_t speed = 0;

    if (strcmp(verb, "speed") == 0) {
        bool ok;

        if (ctl->has_bandwidth) {
            ok = ctl->nargs == 1;
            speed = ctl->speed;
        } else {
            ok = ctl->nargs == 2 && ctl_parse_rate(ctl->args[1], &speed);
        }
        if (!ok) {
            ctl_error("usage: bjctl speed JOB SPEED (bytes/s: 50M, 1G, 512K; "
                      "0 = unlimited), or bjctl speed JOB --bandwidth MIB");
            return EXIT_USAGE;
        }
    } else if (ctl->nargs != 1) {
        ctl_error("%s takes one argument: the job id", verb);
        return EXIT_USAGE;
    }
    if (strcmp(verb, "speed") == 0) {
        cmd = "block-job-set-speed";
        args = json_pack("{s:s, s:I}", "device", ctl->args[0],
                         "speed", (json_int_t)speed);
        done = "speed set";
    } else {
        cmd = strcmp(verb, "pause") == 0 ? "job-pause" :
              strcmp(verb, "resume") == 0 ? "job-resume" : "job-complete";
        args = json_pack("{s:s}", "id", ctl->args[0]);
        done = strcmp(verb, "pause") == 0 ? "pause requested" :
               strcmp(verb, "resume") == 0 ? "resumed" : "completion requested";
    }
    q = ctl_connect(ctl);
    if (!q) {
        json_decref(args);
        return EXIT_CONN;
    }
    r = qmpc_exec(q, cmd, args, NULL, &err);
    qmpc_close(q);
    if (r != QMPC_OK) {
        ctl_error("%s", err);
        free(err);
        return r;
    }
    print_result(ctl, ctl->args[0], "ok", NULL, "job '%s': %s", ctl->args[0],
                 done);
    return EXIT_OK;
}

/* How a synchronous abort ended, as a line and an exit status. */
static int report_abort(const Ctl *ctl, JobWait *w, bool pivot)
{
    const char *id = w->id;

    switch (w->outcome) {
    case OUTCOME_CANCELLED:
        print_result(ctl, id, "cancelled", NULL, "job '%s' cancelled", id);
        return pivot ? EXIT_CANCELLED : EXIT_OK;
    case OUTCOME_COMPLETED:
        if (pivot) {
            print_result(ctl, id, "completed", NULL, "job '%s' completed: "
                         "pivoted to the target", id);
            return EXIT_OK;
        }
        print_result(ctl, id, "completed", NULL, "job '%s' completed before "
                     "the cancel took effect", id);
        return EXIT_COMPLETED_FIRST;
    case OUTCOME_FAILED:
        print_result(ctl, id, "failed", w->error, "job '%s' failed: %s", id,
                     w->error ? w->error : "unknown error");
        return EXIT_ERROR;
    default:
        print_result(ctl, id, "gone", NULL, "job '%s' is gone (how it ended "
                     "was not observed: the event stream was lost)", id);
        return EXIT_OK;
    }
}

int cmd_abort(const Ctl *ctl)
{
    const char *id;
    json_t *jobs, *j;
    char *err = NULL;
    Qmpc *q;
    int r, rc;
    JobWait w = { .deadline_ms = -1 };

    if (ctl->nargs != 1) {
        ctl_error("abort takes one argument: the job id");
        return EXIT_USAGE;
    }
    id = ctl->args[0];
    q = ctl_connect(ctl);
    if (!q) {
        return EXIT_CONN;
    }
    /* From here on this connection sees every event of the job. */
    jobs = jobs_query(q, &err);
    if (!jobs) {
        ctl_error("%s", err);
        free(err);
        qmpc_close(q);
        return EXIT_CONN;
    }
    j = jobs_find(jobs, id);
    if (!j) {
        ctl_error("no job '%s'", id);
        json_decref(jobs);
        qmpc_close(q);
        return EXIT_ERROR;
    }
    const char *status = json_string_value(json_object_get(j, "status"));
    const char *type = json_string_value(json_object_get(j, "type"));
    bool manual_finalize = json_is_false(json_object_get(j, "auto-finalize"));
    bool ready = status && (strcmp(status, "ready") == 0 ||
                            strcmp(status, "standby") == 0);
    if (ctl->pivot) {
        if (!type || (strcmp(type, "mirror") != 0 &&
                      strcmp(type, "commit") != 0)) {
            ctl_error("job '%s' is a %s job: only a mirror or an active "
                      "commit can pivot; nothing changed", id,
                      type ? type : "?");
            json_decref(jobs);
            qmpc_close(q);
            return EXIT_ERROR;
        }
        if (!ready) {
            ctl_error("job '%s' is not ready (status '%s'): it cannot pivot "
                      "yet; nothing changed", id, status ? status : "?");
            json_decref(jobs);
            qmpc_close(q);
            return EXIT_ERROR;
        }
    }
    json_decref(jobs);

    w.id = id;
    w.dismiss = true;          /* abort returns when the job is gone */
    /* the pivot happens at finalize: do it when nobody else will */
    w.finalize = ctl->pivot && manual_finalize;
    w.verbose = ctl->verbose;
    w.poll_only = ctl->poll;

    /*
     * job-cancel always forces: a READY mirror stops without pivoting and
     * reports CANCELLED, so "cancelled" and "completed first" stay apart.
     */
    r = qmpc_exec(q, ctl->pivot ? "job-complete" : "job-cancel",
                  json_pack("{s:s}", "id", id), NULL, &err);
    if (r == QMPC_CONN_ERROR) {
        ctl_error("%s", err);
        free(err);
        qmpc_close(q);
        return EXIT_CONN;
    }
    if (r == QMPC_DAEMON_ERROR) {
        /*
         * Refused: perhaps it just finished (concluded, or already gone).
         * Look before reporting the daemon's message.
         */
        JobWait probe = { .id = id, .deadline_ms = -1 };
        json_t *now = jobs_query(q, NULL);
        json_t *pj = now ? jobs_find(now, id) : NULL;
        const char *pst = json_string_value(json_object_get(pj, "status"));
        bool finished = !pj || (pst && (strcmp(pst, "concluded") == 0 ||
                                        strcmp(pst, "aborting") == 0 ||
                                        strcmp(pst, "null") == 0));
        json_decref(now);
        if (!finished || ctl->async) {
            ctl_error("%s", err);
            free(err);
            qmpc_close(q);
            return EXIT_ERROR;
        }
        free(err);
        err = NULL;
        probe.dismiss = true;
        probe.poll_only = ctl->poll;
        rc = job_wait(ctl, &q, &probe);
        if (rc == EXIT_OK) {
            rc = report_abort(ctl, &probe, ctl->pivot);
        }
        job_wait_cleanup(&probe);
        qmpc_close(q);
        return rc;
    }
    free(err);
    err = NULL;
    if (ctl->async) {
        print_result(ctl, id, "accepted", NULL, "job '%s': %s accepted", id,
                     ctl->pivot ? "completion" : "cancel");
        qmpc_close(q);
        return EXIT_OK;
    }

    w.deadline_ms = deadline_of(ctl);
    rc = job_wait(ctl, &q, &w);
    if (rc == EXIT_TIMEOUT) {
        ctl_error("timed out after %g s waiting for job '%s' to end; it was "
                  "left to finish on its own", ctl->timeout, id);
    } else if (rc == EXIT_OK) {
        rc = report_abort(ctl, &w, ctl->pivot);
    }
    job_wait_cleanup(&w);
    qmpc_close(q);
    return rc;
}
