/*
 * bjctl's pieces without a daemon: unit parsing/formatting, and the QMP
 * client against a scripted fake server (split greeting, events before a
 * reply, pretty multi-line CRLF messages, errors, a silent server, EOF).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "testutil.h"

#include "ctl/qmpc.h"
#include "ctl/units.h"

static void test_parse_size(void **state)
{
    static const struct { const char *s; int64_t v; } ok[] = {
        { "0", 0 }, { "512", 512 }, { "512K", 512 * 1024 },
        { "50M", 50 * 1048576LL }, { "1G", 1073741824LL },
        { "1.5M", 1572864 }, { "2MiB", 2097152 }, { "4kb", 4096 },
        { "1T", 1099511627776LL }, { "7B", 7 },
    };
    static const char *const bad[] = {
        "", "M", "-1", "5X", "1.5.5", "99999999T", "1KiX", "1i", "K1",
        " 1", "1 ",
    };
    int64_t v;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_true(units_parse_size(ok[i].s, &v));
        assert_int_equal(v, ok[i].v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(units_parse_size(bad[i], &v));
    }
    assert_false(units_parse_size(NULL, &v));
}

static void test_parse_rate(void **state)
{
    static const struct { const char *s; UnitsRate r; int64_t v; } cases[] = {
        { "0", UNITS_RATE_OK, 0 }, { "100B", UNITS_RATE_OK, 100 },
        { "50M", UNITS_RATE_OK, 50 * 1048576LL },
        { "4kb", UNITS_RATE_OK, 4096 },
        { "100", UNITS_RATE_NO_UNIT, 0 }, { "1.5", UNITS_RATE_NO_UNIT, 0 },
        { "5X", UNITS_RATE_INVALID, 0 }, { "", UNITS_RATE_INVALID, 0 },
    };
    int64_t v;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        v = -1;
        assert_int_equal(units_parse_rate(cases[i].s, &v), cases[i].r);
        if (cases[i].r == UNITS_RATE_OK) {
            assert_int_equal(v, cases[i].v);
        }
    }
}

static void test_format(void **state)
{
    char b[32];

    units_format_size(b, sizeof(b), 0);
    assert_string_equal(b, "0 B");
    units_format_size(b, sizeof(b), 1023);
    assert_string_equal(b, "1023 B");
    units_format_size(b, sizeof(b), 1536);
    assert_string_equal(b, "1.5 KiB");
    units_format_size(b, sizeof(b), 50.0 * 1048576);
    assert_string_equal(b, "50.0 MiB");
    units_format_duration(b, sizeof(b), 5);
    assert_string_equal(b, "5s");
    units_format_duration(b, sizeof(b), 65);
    assert_string_equal(b, "1:05");
    units_format_duration(b, sizeof(b), 3725);
    assert_string_equal(b, "1:02:05");
    units_format_duration(b, sizeof(b), -1);
    assert_string_equal(b, "?");
}

static void test_parse_seconds(void **state)
{
    double d;

    assert_true(units_parse_seconds("0.5", &d));
    assert_true(d == 0.5);
    assert_false(units_parse_seconds("", &d));
    assert_false(units_parse_seconds("x", &d));
    assert_false(units_parse_seconds("-1", &d));
}

/* ---- a scripted QMP server ---- */

typedef struct Server {
    char dir[64];
    char path[128];
    int lfd;
    bool silent;               /* accept, never greet */
    pthread_t thread;
} Server;

static void put(int fd, const char *s)
{
    size_t len = strlen(s);

    while (len) {
        ssize_t n = write(fd, s, len);
        assert_true(n > 0);
        s += n;
        len -= n;
    }
}

/* Reads one request line, returns its id. */
static int get_request(int fd, char *name, size_t size)
{
    char line[4096];
    size_t len = 0;
    json_t *req;
    int id;

    while (len < sizeof(line) - 1) {
        ssize_t n = read(fd, line + len, 1);
        if (n <= 0) {
            return -1;
        }
        if (line[len++] == '\n') {
            break;
        }
    }
    line[len] = '\0';
    req = json_loads(line, 0, NULL);
    assert_non_null(req);
    id = (int)json_integer_value(json_object_get(req, "id"));
    snprintf(name, size, "%s",
             json_string_value(json_object_get(req, "execute")));
    json_decref(req);
    return id;
}

static void *server_main(void *opaque)
{
    Server *s = opaque;
    char name[64], buf[512];
    int fd = accept(s->lfd, NULL, NULL);
    int id;

    assert_true(fd >= 0);
    if (s->silent) {
        sleep(1);
        close(fd);
        return NULL;
    }
    /* the greeting in two pieces */
    put(fd, "{\"QMP\": {\"version\": {}, ");
    usleep(20000);
    put(fd, "\"capabilities\": []}}\r\n");
    id = get_request(fd, name, sizeof(name));
    assert_string_equal(name, "qmp_capabilities");
    snprintf(buf, sizeof(buf), "{\"return\": {}, \"id\": %d}\r\n", id);
    put(fd, buf);

    /* an event, then a pretty-printed reply over several CRLF lines */
    id = get_request(fd, name, sizeof(name));
    assert_string_equal(name, "query-jobs");
    put(fd, "{\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"id\": \"j\", "
            "\"status\": \"null\"}, \"timestamp\": {\"seconds\": 1, "
            "\"microseconds\": 2}}\r\n");
    snprintf(buf, sizeof(buf), "{\r\n    \"return\": [\r\n        {\r\n"
             "            \"id\": \"a\"\r\n        }\r\n    ],\r\n"
             "    \"id\": %d\r\n}\r\n", id);
    put(fd, buf);

    /* a stray reply with another id, then an error */
    id = get_request(fd, name, sizeof(name));
    assert_string_equal(name, "job-pause");
    snprintf(buf, sizeof(buf), "{\"return\": {}, \"id\": 999}\r\n"
             "{\"error\": {\"class\": \"GenericError\", \"desc\": "
             "\"Job not found\"}, \"id\": %d}\r\n", id);
    put(fd, buf);
    close(fd);
    return NULL;
}

static void server_start(Server *s, bool silent)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    memset(s, 0, sizeof(*s));
    s->silent = silent;
    strcpy(s->dir, "/tmp/bjctl-unit.XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->path, sizeof(s->path), "%s/qmp.sock", s->dir);
    s->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    strcpy(sa.sun_path, s->path);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(s->lfd, 4), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(Server *s)
{
    pthread_join(s->thread, NULL);
    close(s->lfd);
    unlink(s->path);
    rmdir(s->dir);
}

static void test_qmpc_conversation(void **state)
{
    Server s;
    Qmpc *q;
    char *err = NULL;
    json_t *ret = NULL, *ev = NULL;

    server_start(&s, false);
    q = qmpc_open(s.path, 5000, &err);
    assert_null(err);
    assert_non_null(q);

    assert_int_equal(qmpc_exec(q, "query-jobs", NULL, &ret, &err), QMPC_OK);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(ret, 0), "id")), "a");
    json_decref(ret);
    /* the event that came before the reply was kept */
    assert_int_equal(qmpc_next_event(q, 0, &ev, &err), 1);
    assert_string_equal(json_string_value(json_object_get(ev, "event")),
                        "JOB_STATUS_CHANGE");
    json_decref(ev);

    assert_int_equal(qmpc_exec(q, "job-pause", json_pack("{s:s}", "id", "x"),
                               NULL, &err), QMPC_DAEMON_ERROR);
    assert_string_equal(err, "Job not found");
    free(err);
    err = NULL;

    /* the server hung up */
    assert_int_equal(qmpc_next_event(q, 5000, &ev, &err), -QMPC_CONN_ERROR);
    assert_non_null(strstr(err, "closed the connection"));
    free(err);
    qmpc_close(q);
    server_stop(&s);
}

static void test_qmpc_silent_server(void **state)
{
    Server s;
    char *err = NULL;
    int64_t start = qmpc_now_ms();

    server_start(&s, true);
    assert_null(qmpc_open(s.path, 200, &err));
    assert_true(qmpc_now_ms() - start < 900);
    assert_non_null(strstr(err, "no QMP greeting"));
    free(err);
    server_stop(&s);
}

static void test_qmpc_no_socket(void **state)
{
    char *err = NULL;

    assert_null(qmpc_open("/nonexistent/bjctl.sock", 1000, &err));
    assert_string_equal(err, "cannot connect to /nonexistent/bjctl.sock: No "
                        "such file or directory (is the daemon running?)");
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_rate),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_parse_seconds),
        cmocka_unit_test(test_qmpc_conversation),
        cmocka_unit_test(test_qmpc_silent_server),
        cmocka_unit_test(test_qmpc_no_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
