/*
 * bjctl's read-only commands: list, info, nodes, events.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl/ctl.h"
#include "ctl/units.h"
#include "util/alloc.h"

static char last_msg[1024];

const char *ctl_vnote(const char *fmt, va_list ap)
{
    vsnprintf(last_msg, sizeof(last_msg), fmt, ap);
    return last_msg;
}

void ctl_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ctl_vnote(fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "bjctl: %s\n", last_msg);
}

void ctl_print_error_json(int rc)
{
    static const char *const names[] = {
        [EXIT_ERROR] = "Error", [EXIT_USAGE] = "UsageError",
        [EXIT_CONN] = "ConnectionError", [EXIT_COMPLETED_FIRST] =
        "CompletedFirst", [EXIT_TIMEOUT] = "Timeout", [EXIT_CANCELLED] =
        "Cancelled", [EXIT_INTERRUPTED] = "Interrupted",
    };
    const char *cls = rc == EXIT_ERROR ? qmpc_error_class() : NULL;
    json_t *o;

    if (!cls) {
        cls = rc > 0 && rc < (int)(sizeof(names) / sizeof(names[0])) ?
              names[rc] : "Error";
    }
    o = json_pack("{s:{s:s, s:s}, s:i}", "error", "class", cls, "desc",
                  last_msg[0] ? last_msg : "error", "exit", rc);
    ctl_print_json(o);
    json_decref(o);
}

bool ctl_parse_rate(const char *s, int64_t *out)
{
    switch (units_parse_rate(s, out)) {
    case UNITS_RATE_OK:
        return true;
    case UNITS_RATE_NO_UNIT:
        ctl_error("speed '%s' has no unit: give one, e.g. %sM for MiB/s or "
                  "%sB for bytes/s (--bandwidth N is N MiB/s, as in virsh)",
                  s, s, s);
        return false;
    case UNITS_RATE_INVALID:
        break;
    }
    ctl_error("invalid speed '%s' (bytes/s with a unit: 512K, 50M, 1G; "
              "0: unlimited)", s);
    return false;
}

Qmpc *ctl_connect(const Ctl *ctl)
{
    char *err = NULL;
    Qmpc *q = qmpc_open(ctl->socket, ctl->connect_timeout_ms, &err);

    if (!q) {
        ctl_error("%s", err);
        free(err);
    }
    return q;
}

void ctl_print_json(json_t *v)
{
    size_t i;
    json_t *e;
    char *s;

    if (json_is_array(v)) {
        json_array_foreach(v, i, e) {
            ctl_print_json(e);
        }
        return;
    }
    s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s) {
        puts(s);
        free(s);
    }
    fflush(stdout);
}

bool ctl_print_rows_or_empty(const Ctl *ctl, json_t *rows,
                             const char *empty)
{
    if (ctl->json) {
        ctl_print_json(rows);
        return true;
    }
    if (json_array_size(rows) == 0) {
        puts(empty);
        return true;
    }
    return false;
}

json_t *ctl_query(const Ctl *ctl, const char *cmd, int *rc)
{
    Qmpc *q = ctl_connect(ctl);
    char *err = NULL;
    json_t *ret = NULL;

    *rc = EXIT_CONN;
    if (!q) {
        return NULL;
    }
    if (cmd) {
        *rc = qmpc_exec(q, cmd, NULL, &ret, &err);
    } else if ((ret = jobs_query(q, &err))) {
        *rc = EXIT_OK;
    }
    qmpc_close(q);
    if (*rc != EXIT_OK) {
        ctl_error("%s", err);
        free(err);
        return NULL;
    }
    return ret;
}

static json_t *query_jobs(const Ctl *ctl, int *rc)
{
    return ctl_query(ctl, NULL, rc);
}

int ctl_usage_error(const char *usage, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "bjctl: %s\n%s\n", ctl_vnote(fmt, ap), usage);
    va_end(ap);
    return EXIT_USAGE;
}

char *ctl_abs_path(const char *path)
{
    char cwd[4096];

    if (path[0] == '/' || !getcwd(cwd, sizeof(cwd))) {
        return bj_strdup(path);
    }
    return bj_asprintf("%s/%s", cwd, path);
}

const char *ctl_str_or(json_t *obj, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(obj, key));

    return s ? s : dflt;
}

int ctl_column_width(json_t *rows, const char *key, const char *header)
{
    int w = (int)strlen(header);
    json_t *row;
    size_t i;

    json_array_foreach(rows, i, row) {
        int l = (int)strlen(ctl_str_or(row, key, ""));
        w = l > w ? l : w;
    }
    return w;
}

static void fmt_progress(char *buf, size_t size, json_t *j)
{
    json_int_t cur = json_integer_value(json_object_get(j, "current-progress"));
    json_int_t total = json_integer_value(json_object_get(j,
                                                          "total-progress"));

    if (total > 0) {
        snprintf(buf, size, "%.1f%%", 100.0 * cur / total);
    } else {
        snprintf(buf, size, "-");
    }
}

static void fmt_speed(char *buf, size_t size, json_t *j)
{
    json_t *s = json_object_get(j, "speed");

    if (!json_is_integer(s)) {
        snprintf(buf, size, "-");
    } else if (json_integer_value(s) == 0) {
        snprintf(buf, size, "unlimited");
    } else {
        units_format_size(buf, size - 2, json_integer_value(s));
        strcat(buf, "/s");
    }
}

static const char *fmt_bool(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);

    return json_is_boolean(v) ? (json_is_true(v) ? "yes" : "no") : "-";
}

int cmd_list(const Ctl *ctl)
{
    int rc;
    json_auto_t *jobs = query_jobs(ctl, &rc);
    json_t *j;
    size_t i;
    int w_id, w_type, w_status;

    if (!jobs) {
        return rc;
    }
    if (ctl_print_rows_or_empty(ctl, jobs, "no jobs")) {
        return EXIT_OK;
    }
    w_id = ctl_column_width(jobs, "id", "ID");
    w_type = ctl_column_width(jobs, "type", "TYPE");
    w_status = ctl_column_width(jobs, "status", "STATUS");
    printf("%-*s  %-*s  %-*s  %8s  %-12s  %-5s  %s\n", w_id, "ID", w_type,
           "TYPE", w_status, "STATUS", "PROGRESS", "SPEED", "READY", "ERROR");
    json_array_foreach(jobs, i, j) {
        char prog[32], speed[40];

        fmt_progress(prog, sizeof(prog), j);
        fmt_speed(speed, sizeof(speed), j);
        printf("%-*s  %-*s  %-*s  %8s  %-12s  %-5s  %s\n", w_id,
               ctl_str_or(j, "id", "?"), w_type, ctl_str_or(j, "type", "?"),
               w_status, ctl_str_or(j, "status", "?"), prog, speed,
               fmt_bool(j, "ready"), ctl_str_or(j, "error", "-"));
    }
    return EXIT_OK;
}

/* A mirror's or active commit's copy mode, dirty bytes and ETA: the
 * extension members blockjobd adds to query-block-jobs (qsd has none). */
static void print_copy_state(json_t *j)
{
    char dirty[32], rate[32], eta[32];
    json_t *e = json_object_get(j, "x-eta-seconds");

    if (!json_is_string(json_object_get(j, "x-copy-mode"))) {
        return;
    }
    units_format_size(dirty, sizeof(dirty), json_integer_value(
                          json_object_get(j, "x-dirty-bytes")));
    units_format_size(rate, sizeof(rate), json_integer_value(
                          json_object_get(j, "x-dirty-rate")));
    if (json_is_integer(e)) {
        units_format_duration(eta, sizeof(eta), json_integer_value(e));
    } else {
        snprintf(eta, sizeof(eta), "- (not converging)");
    }
    printf("copy mode: %s%s\n", ctl_str_or(j, "x-copy-mode", "?"),
           json_is_true(json_object_get(j, "x-copy-mode-auto")) ?
           " (auto)" : "");
    printf("dirty:     %s (clients dirty %s/s)\n", dirty, rate);
    printf("eta:       %s\n", eta);
}

/* The back-off of a job that yields to the guest (blockjobd's x-yield-*
 * members of query-jobs; qsd has none). */
static void print_yield_state(json_t *j)
{
    json_t *on = json_object_get(j, "x-yield");
    int64_t limit = json_integer_value(json_object_get(j, "x-yield-limit"));
    char rate[32];

    if (!json_is_boolean(on)) {
        return;
    }
    if (!json_is_true(on)) {
        printf("back-off:  off\n");
    } else if (json_is_true(json_object_get(j, "x-yield-aside"))) {
        printf("back-off:  stood aside (the job must converge)\n");
    } else if (limit > 0) {
        units_format_size(rate, sizeof(rate), (double)limit);
        printf("back-off:  limiting to %s/s (guest %lld IOPS, %lld us; "
               "baseline %lld us)\n", rate,
               (long long)json_integer_value(json_object_get(
                   j, "x-yield-guest-iops")),
               (long long)json_integer_value(json_object_get(
                   j, "x-yield-guest-latency-us")),
               (long long)json_integer_value(json_object_get(
                   j, "x-yield-base-latency-us")));
    } else {
        printf("back-off:  not limiting\n");
    }
}

int cmd_info(const Ctl *ctl)
{
    json_auto_t *jobs = NULL;
    json_t *j;
    char prog[32], speed[40], cur[32], total[32];
    int rc = EXIT_OK;

    if (ctl->nargs != 1) {
        ctl_error("info takes one argument: the job id");
        return EXIT_USAGE;
    }
    jobs = query_jobs(ctl, &rc);
    if (!jobs) {
        return rc;
    }
    rc = EXIT_OK;
    j = jobs_find(jobs, ctl->args[0]);
    if (!j) {
        ctl_error("no job '%s'", ctl->args[0]);
        rc = EXIT_ERROR;
    } else if (ctl->json) {
        ctl_print_json(j);
    } else {
        fmt_progress(prog, sizeof(prog), j);
        fmt_speed(speed, sizeof(speed), j);
        units_format_size(cur, sizeof(cur),
                          json_integer_value(json_object_get(j,
                                             "current-progress")));
        units_format_size(total, sizeof(total),
                          json_integer_value(json_object_get(j,
                                             "total-progress")));
        printf("id:        %s\n", ctl_str_or(j, "id", "?"));
        printf("type:      %s\n", ctl_str_or(j, "type", "?"));
        printf("status:    %s\n", ctl_str_or(j, "status", "?"));
        printf("progress:  %s (%s of %s)\n", prog, cur, total);
        printf("speed:     %s\n", speed);
        printf("ready:     %s\n", fmt_bool(j, "ready"));
        printf("paused:    %s\n", fmt_bool(j, "paused"));
        printf("error:     %s\n", ctl_str_or(j, "error", "-"));
        print_copy_state(j);
        print_yield_state(j);
    }
    return rc;
}

/* The named node whose image is `filename` in format `fmt`, if any. */
static const char *node_for_file(json_t *nodes, const char *filename,
                                 const char *fmt)
{
    size_t i;
    json_t *n;

    json_array_foreach(nodes, i, n) {
        const char *f = ctl_str_or(n, "file", NULL);
        const char *d = ctl_str_or(n, "drv", NULL);
        const char *name = ctl_str_or(n, "node-name", "#");

        if (f && d && fmt && name[0] != '#' && strcmp(f, filename) == 0 &&
            strcmp(d, fmt) == 0) {
            return name;
        }
    }
    return NULL;
}

int cmd_nodes(const Ctl *ctl)
{
    int r;
    json_auto_t *nodes = ctl_query(ctl, "query-named-block-nodes", &r);
    json_t *n;
    size_t i;
    int w = 4;

    if (!nodes) {
        return r;
    }
    if (ctl->json) {
        ctl_print_json(nodes);
        return EXIT_OK;
    }
    json_array_foreach(nodes, i, n) {
        int l = strlen(ctl_str_or(n, "node-name", ""));
        w = l > w ? l : w;
    }
    printf("%-*s  %-14s  %10s  %-3s  %s\n", w, "NODE", "DRIVER", "SIZE", "RO",
           "FILE");
    json_array_foreach(nodes, i, n) {
        const char *name = ctl_str_or(n, "node-name", "?");
        json_t *img = json_object_get(n, "image");
        char size[32];

        if (name[0] == '#' && !ctl->all) {
            continue;          /* implicit nodes: --all shows them */
        }
        units_format_size(size, sizeof(size),
                          json_integer_value(json_object_get(img,
                                                             "virtual-size")));
        printf("%-*s  %-14s  %10s  %-3s  %s\n", w, name, ctl_str_or(n, "drv", "?"),
               size, json_is_true(json_object_get(n, "ro")) ? "yes" : "no",
               ctl_str_or(n, "file", "-"));
        /* The backing chain, one line per layer, top to bottom. */
        int depth = 1;
        for (json_t *b = json_object_get(img, "backing-image"); b;
             b = json_object_get(b, "backing-image"), depth++) {
            const char *f = ctl_str_or(b, "filename", "?");
            const char *fmt = ctl_str_or(b, "format", NULL);
            const char *bn = node_for_file(nodes, f, fmt);

            printf("%*s`- backing: %s (%s%s%s)\n", 2 * depth, "", f,
                   fmt ? fmt : "?", bn ? ", node " : "", bn ? bn : "");
        }
    }
    return EXIT_OK;
}

static void print_event_line(json_t *ev)
{
    json_t *ts = json_object_get(ev, "timestamp");
    json_t *data = json_object_get(ev, "data");
    time_t secs = json_integer_value(json_object_get(ts, "seconds"));
    long usecs = json_integer_value(json_object_get(ts, "microseconds"));
    struct tm tm;
    char when[32] = "?";
    const char *key;
    json_t *v;

    if (secs > 0 && localtime_r(&secs, &tm)) {
        strftime(when, sizeof(when), "%H:%M:%S", &tm);
    }
    printf("%s.%06ld %s", when, usecs > 0 ? usecs : 0,
           ctl_str_or(ev, "event", "?"));
    json_object_foreach(data, key, v) {
        if (json_is_string(v)) {
            printf(" %s=%s", key, json_string_value(v));
        } else {
            char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

            printf(" %s=%s", key, s ? s : "?");
            free(s);
        }
    }
    putchar('\n');
}

int cmd_events(const Ctl *ctl)
{
    Qmpc *q = ctl_connect(ctl);
    int64_t deadline = -1;
    long seen = 0;
    int rc = EXIT_OK;

    if (!q) {
        return EXIT_CONN;
    }
    if (ctl->has_timeout) {
        deadline = qmpc_now_ms() + (int64_t)(ctl->timeout * 1000);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (ctl->count == 0 || seen < ctl->count) {
        json_t *ev = NULL;
        char *err = NULL;
        int wait = -1, r;

        if (deadline >= 0) {
            int64_t left = deadline - qmpc_now_ms();
            if (left <= 0) {
                break;
            }
            wait = (int)left;
        }
        r = qmpc_next_event(q, wait, &ev, &err);
        if (r < 0) {
            ctl_error("%s", err);
            free(err);
            rc = EXIT_CONN;
            break;
        }
        if (r == 0) {
            continue;
        }
        if (ctl->json) {
            ctl_print_json(ev);
        } else {
            print_event_line(ev);
        }
        json_decref(ev);
        seen++;
    }
    qmpc_close(q);
    return rc;
}
