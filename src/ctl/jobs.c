/*
 * Watching a job to its end (see ctl.h: job_wait).
 *
 * Events are the primary source: the connection is open (and so
 * subscribed) before bjctl acts on a job, and events raised inside a
 * command arrive before its reply, so nothing between "act" and "watch"
 * is missed.  query-jobs is a periodic cross-check (a job absent from it
 * is gone, whatever events said or did not say) and the whole story when
 * the event stream is lost: then bjctl reconnects and polls.  Replies and
 * events share one ordered stream, so the events queued while a query ran
 * are applied before the query's answer is believed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "ctl/progress.h"
#include "util/alloc.h"

json_t *jobs_find(json_t *jobs, const char *id)
{
    size_t i;
    json_t *j;

    json_array_foreach(jobs, i, j) {
        const char *jid = json_string_value(json_object_get(j, "id"));

        if (jid && strcmp(jid, id) == 0) {
            return j;
        }
    }
    return NULL;
}

/*
 * query-jobs lists every job (create jobs too), query-block-jobs adds
 * speed, ready and paused for block jobs: one object per job with both.
 */
json_t *jobs_query(Qmpc *q, char **err)
{
    json_auto_t *jobs = NULL;
    json_auto_t *bjobs = NULL;
    json_t *out, *j;
    size_t i;

    if (qmpc_exec(q, "query-jobs", NULL, &jobs, err) != QMPC_OK) {
        return NULL;
    }
    if (qmpc_exec(q, "query-block-jobs", NULL, &bjobs, err) != QMPC_OK) {
        return NULL;
    }
    out = json_array();
    json_array_foreach(jobs, i, j) {
        json_t *m = json_deep_copy(j);
        const char *id = json_string_value(json_object_get(j, "id"));
        size_t k;
        json_t *b;

        json_array_foreach(bjobs, k, b) {
            const char *dev = json_string_value(json_object_get(b, "device"));

            if (id && dev && strcmp(id, dev) == 0) {
                static const char *const keys[] = {
                    "speed", "ready", "paused", "busy", "io-status",
                    "auto-finalize", "auto-dismiss",
                    /* a mirror's: qemu 8.2's, then blockjobd's own */
                    "actively-synced", "x-copy-mode", "x-copy-mode-auto",
                    "x-dirty-bytes", "x-dirty-rate", "x-eta-seconds",
                };
                for (size_t n = 0; n < sizeof(keys) / sizeof(keys[0]); n++) {
                    json_t *v = json_object_get(b, keys[n]);

                    if (v) {
                        json_object_set(m, keys[n], v);
                    }
                }
            }
        }
        json_array_append_new(out, m);
    }
    return out;
}

static const char *job_outcome_name(JobOutcome o)
{
    switch (o) {
    case OUTCOME_COMPLETED: return "completed";
    case OUTCOME_CANCELLED: return "cancelled";
    case OUTCOME_FAILED: return "failed";
    case OUTCOME_READY: return "ready";
    case OUTCOME_UNKNOWN: return "unknown";
    case OUTCOME_NONE: break;
    }
    return "running";
}

static volatile sig_atomic_t sigint_seen;

static void on_sigint(int sig)
{
    (void)sig;
    sigint_seen = 1;
}

void ctl_catch_sigint(void)
{
    struct sigaction sa = { .sa_handler = on_sigint };

    sigemptyset(&sa.sa_mask);
    /* once: a second Ctrl-C while the abort is under way kills bjctl */
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
}

bool ctl_interrupted(void)
{
    bool seen = sigint_seen;

    sigint_seen = 0;
    return seen;
}

void job_wait_cleanup(JobWait *w)
{
    bj_free_clear(&w->error);
    bj_free_clear(&w->last_status);
    bj_free_clear(&w->shown_status);
}

/* --json --verbose: one object a line each time the job moved. */
static void json_progress(JobWait *w)
{
    const char *st = w->last_status ? w->last_status : "?";
    json_t *o;

    if (w->concluded || (w->shown_status && strcmp(w->shown_status, st) == 0
                         && w->shown_cur == w->cur &&
                         w->shown_total == w->total)) {
        return;
    }
    free(w->shown_status);
    w->shown_status = bj_strdup(st);
    w->shown_cur = w->cur;
    w->shown_total = w->total;
    o = json_pack("{s:s, s:s, s:I, s:I}", "id", w->id, "status", st,
                  "current-progress", (json_int_t)w->cur, "total-progress",
                  (json_int_t)w->total);
    ctl_print_json(o);
    json_decref(o);
}

static void set_status(JobWait *w, const char *status)
{
    free(w->last_status);
    w->last_status = bj_strdup(status);
    if (strcmp(status, "aborting") == 0) {
        w->saw_aborting = true;
    } else if (strcmp(status, "ready") == 0 || strcmp(status, "standby") == 0) {
        w->ready = true;
    } else if (strcmp(status, "concluded") == 0) {
        w->concluded = true;
    } else if (strcmp(status, "null") == 0) {
        w->concluded = true;
        w->gone = true;
    }
}

/* A job-level error string: a cancel shows up as ECANCELED's text. */
static void set_end_from_error(JobWait *w, const char *error)
{
    if (w->outcome != OUTCOME_NONE && w->outcome != OUTCOME_READY) {
        return;
    }
    if (!error) {
        w->outcome = OUTCOME_COMPLETED;
    } else if (strcmp(error, "Operation canceled") == 0) {
        w->outcome = OUTCOME_CANCELLED;
    } else {
        w->outcome = OUTCOME_FAILED;
        free(w->error);
        w->error = bj_strdup(error);
    }
}

static void handle_event(JobWait *w, json_t *ev)
{
    const char *name = json_string_value(json_object_get(ev, "event"));
    json_t *data = json_object_get(ev, "data");
    const char *id = json_string_value(json_object_get(data, "id"));
    const char *dev = json_string_value(json_object_get(data, "device"));

    if (!name) {
        return;
    }
    if (strcmp(name, "JOB_STATUS_CHANGE") == 0) {
        const char *st = json_string_value(json_object_get(data, "status"));

        if (id && st && strcmp(id, w->id) == 0) {
            set_status(w, st);
        }
        return;
    }
    if (!dev || strcmp(dev, w->id) != 0) {
        return;
    }
    json_t *len = json_object_get(data, "len");
    json_t *off = json_object_get(data, "offset");
    if (json_is_integer(len) && json_is_integer(off)) {
        w->total = json_integer_value(len);
        w->cur = json_integer_value(off);
    }
    if (strcmp(name, "BLOCK_JOB_COMPLETED") == 0) {
        set_end_from_error(w, json_string_value(json_object_get(data,
                                                                "error")));
    } else if (strcmp(name, "BLOCK_JOB_CANCELLED") == 0) {
        if (w->outcome == OUTCOME_NONE || w->outcome == OUTCOME_READY) {
            w->outcome = OUTCOME_CANCELLED;
        }
    } else if (strcmp(name, "BLOCK_JOB_READY") == 0) {
        w->ready = true;
    }
}

static void drain_queued(Qmpc *q, JobWait *w)
{
    json_t *ev;
    char *err = NULL;

    while (json_array_size(q->events) > 0 &&
           qmpc_next_event(q, 0, &ev, &err) == 1) {
        if (!w->poll_only) {
            handle_event(w, ev);
        }
        json_decref(ev);
    }
    free(err);
}

/* One look at query-jobs.  Returns QMPC_* */
static int poll_job(Qmpc *q, JobWait *w, Progress *p, char **err)
{
    json_auto_t *jobs = NULL;
    json_t *j;
    int r = qmpc_exec(q, "query-jobs", NULL, &jobs, err);

    if (r != QMPC_OK) {
        return r;
    }
    drain_queued(q, w);
    j = jobs_find(jobs, w->id);
    if (!j) {
        w->gone = true;
        if (w->outcome == OUTCOME_NONE || w->outcome == OUTCOME_READY) {
            /* Nobody told us how it ended (no events, or a create job). */
            w->outcome = w->saw_aborting ? OUTCOME_CANCELLED :
                         w->concluded ? OUTCOME_COMPLETED : OUTCOME_UNKNOWN;
        }
        w->concluded = true;
        return QMPC_OK;
    }
    const char *st = json_string_value(json_object_get(j, "status"));
    if (st) {
        set_status(w, st);
    }
    w->cur = json_integer_value(json_object_get(j, "current-progress"));
    w->total = json_integer_value(json_object_get(j, "total-progress"));
    if (w->concluded) {
        set_end_from_error(w, json_string_value(json_object_get(j, "error")));
    }
    if (w->verbose && p && !w->concluded) {
        progress_update(p, st ? st : "?", w->cur, w->total);
    }
    return QMPC_OK;
}

static int reconnect(const Ctl *ctl, Qmpc **qp, JobWait *w)
{
    char *err = NULL;
    Qmpc *nq;

    qmpc_close(*qp);
    *qp = NULL;
    nq = qmpc_open(ctl->socket, ctl->connect_timeout_ms, &err);
    if (!nq) {
        ctl_error("connection to the daemon lost while waiting for job "
                  "'%s': %s", w->id, err);
        free(err);
        return EXIT_CONN;
    }
    *qp = nq;
    return EXIT_OK;
}

/*
 * After a call on the daemon whose refusal changes nothing (the job's own
 * status says what happened): drops the message, and reconnects when the
 * connection was lost.  Returns 0 to go on, else the exit code to stop with.
 */
static int after_call(const Ctl *ctl, Qmpc **qp, JobWait *w, int r,
                      char **err)
{
    free(*err);
    *err = NULL;
    return r == QMPC_CONN_ERROR ? reconnect(ctl, qp, w) : 0;
}

static int send_pivot(Qmpc *q, JobWait *w)
{
    json_t *args = json_pack("{s:s}", "id", w->id);
    char *err = NULL;
    int r = qmpc_exec(q, "job-complete", args, NULL, &err);

    w->pivot_sent = true;
    if (r == QMPC_DAEMON_ERROR) {
        ctl_error("cannot pivot job '%s': %s", w->id, err);
        free(err);
        return EXIT_ERROR;
    }
    free(err);
    return r == QMPC_OK ? EXIT_OK : EXIT_CONN;
}

int job_wait(const Ctl *ctl, Qmpc **qp, JobWait *w)
{
    Progress prog;
    int interval;
    int64_t next_poll = 0;
    int rc = EXIT_OK;

    bool as_json = w->verbose && ctl->json;

    if (as_json) {
        w->verbose = false;    /* objects on stdout, not a bar on stderr */
    }
    progress_init(&prog, w->id);
    interval = w->verbose ? progress_interval_ms(&prog) : 500;
    if (w->poll_only) {
        interval = 200;
    }
    drain_queued(*qp, w);

    for (;;) {
        char *err = NULL;
        int64_t now, wait_ms;
        json_t *ev = NULL;
        int r;

        if (w->ready && !w->concluded) {
            if (w->pivot_at_ready && !w->pivot_sent) {
                rc = send_pivot(*qp, w);
                if (rc != EXIT_OK) {
                    break;
                }
            } else if (w->stop_at_ready && !w->pivot_at_ready) {
                w->outcome = OUTCOME_READY;
                break;
            }
        }
        if (w->finalize && !w->finalize_sent && w->last_status &&
            strcmp(w->last_status, "pending") == 0) {
            /* A job with auto-finalize off waits here for us. */
            json_t *args = json_pack("{s:s}", "id", w->id);

            w->finalize_sent = true;
            r = qmpc_exec(*qp, "job-finalize", args, NULL, &err);
            /* Refused: it moved on by itself meanwhile; watch on. */
            if ((rc = after_call(ctl, qp, w, r, &err))) {
                break;
            }
            continue;
        }
        if (w->concluded && !w->gone && w->outcome == OUTCOME_NONE) {
            /* concluded without a BLOCK_JOB_* event: ask for its error */
            r = poll_job(*qp, w, NULL, &err);
            if ((rc = after_call(ctl, qp, w, r, &err))) {
                break;
            }
            continue;
        }
        if (w->concluded && !w->gone) {
            if (w->dismiss) {
                json_t *args = json_pack("{s:s}", "id", w->id);

                /* Someone else may have dismissed it first: fine. */
                r = qmpc_exec(*qp, "job-dismiss", args, NULL, &err);
                if ((rc = after_call(ctl, qp, w, r, &err))) {
                    break;
                }
                if (r == QMPC_CONN_ERROR) {
                    continue;
                }
            }
            w->gone = true;
        }
        if (w->gone) {
            break;
        }
        if (sigint_seen) {
            /* poll() returns EINTR, so this is seen within one interval */
            rc = EXIT_INTERRUPTED;
            break;
        }

        now = qmpc_now_ms();
        if (w->deadline_ms >= 0 && now >= w->deadline_ms) {
            rc = EXIT_TIMEOUT;
            break;
        }
        if (now >= next_poll) {
            r = poll_job(*qp, w, &prog, &err);
            if ((rc = after_call(ctl, qp, w, r, &err))) {
                break;
            }
            if (r != QMPC_CONN_ERROR) {
                next_poll = qmpc_now_ms() + interval;
                if (as_json) {
                    json_progress(w);
                }
            }
            continue;
        }
        wait_ms = next_poll - now;
        if (w->deadline_ms >= 0 && w->deadline_ms - now < wait_ms) {
            wait_ms = w->deadline_ms - now;
        }
        r = qmpc_next_event(*qp, (int)wait_ms, &ev, &err);
        if (r < 0) {
            free(err);
            if ((rc = reconnect(ctl, qp, w))) {
                break;
            }
            next_poll = 0;     /* look at once: events may have been lost */
            continue;
        }
        if (r == 1) {
            if (!w->poll_only) {
                handle_event(w, ev);
            }
            json_decref(ev);
        }
    }
    if (w->verbose) {
        if (rc == EXIT_OK && (w->outcome == OUTCOME_COMPLETED ||
                              w->outcome == OUTCOME_READY) && w->total > 0) {
            prog.final = true;
            progress_update(&prog, job_outcome_name(w->outcome), w->total,
                            w->total);
        }
        progress_finish(&prog);
    }
    return rc;
}
