/*
 * The monitor in-process: a real UNIX socket served by the main loop,
 * driven from the same thread by polling the loop between socket calls.
 * Covers what the black-box tests cannot reach cheaply: a client that
 * stops reading while events pile up past the 64 MiB bound is dropped (and
 * only it), and cleanup closes everything and unlinks the socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "testutil.h"

#include "aio/aio.h"
#include "qmp/commands.h"
#include "qmp/qmp.h"
#include "util/event.h"

static char sock_path[108];

static int client_connect(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    strcpy(sun.sun_path, sock_path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    return fd;
}

/* Polls the loop until `want` CRLF-terminated lines arrived (or EOF).
 * Returns the number of lines; *eof tells whether the server closed. */
static int read_lines(int fd, int want, char *buf, size_t cap, bool *eof)
{
    size_t len = 0;
    int lines = 0;
    *eof = false;
    int64_t deadline = clock_ns() + 20000000000LL;
    while (lines < want && clock_ns() < deadline) {
        aio_poll(aio_main_context(), false);
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n == 0) {
            *eof = true;
            break;
        }
        if (n < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            usleep(1000);
            continue;
        }
        for (ssize_t i = 0; i < n; i++) {
            lines += buf[len + i] == '\n';
        }
        len += n;
    }
    buf[len] = '\0';
    return lines;
}

static void send_str(int fd, const char *s)
{
    assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

static void start_monitor(void)
{
    Error *err = NULL;
    snprintf(sock_path, sizeof(sock_path), "/tmp/bj-test-monitor-%d.sock",
             (int)getpid());
    json_t *o = keyval_parse("socket,id=m0,server=on,wait=off", "backend",
                             &err);
    assert_non_null(o);
    json_object_set_new(o, "path", json_string(sock_path));
    assert_true(chardev_add(o, false, &err));
    json_decref(o);
    o = keyval_parse("m0", "chardev", &err);
    assert_true(monitor_add(o, &err));
    json_decref(o);
    assert_null(err);
}

static void test_slow_reader_dropped(void **state)
{
    start_monitor();
    char *buf = malloc(1 << 20);
    assert_non_null(buf);
    bool eof;

    int slow = client_connect();
    int good = client_connect();
    /* The slow client negotiates and then never reads again. */
    assert_int_equal(read_lines(slow, 1, buf, 1 << 20, &eof), 1);
    assert_non_null(strstr(buf, "\"QMP\""));
    send_str(slow, "{\"execute\":\"qmp_capabilities\"}\n");
    assert_int_equal(read_lines(slow, 1, buf, 1 << 20, &eof), 1);
    assert_string_equal(buf, "{\"return\": {}}\r\n");
    /* The good client does not negotiate: it gets no events. */
    assert_int_equal(read_lines(good, 1, buf, 1 << 20, &eof), 1);

    /* 80 events of 1 MiB: more than the 64 MiB a client may owe. */
    char *blob = malloc(1 << 20);
    assert_non_null(blob);
    memset(blob, 'x', (1 << 20) - 1);
    blob[(1 << 20) - 1] = '\0';
    for (int i = 0; i < 80; i++) {
        event_emit("TEST_BLOB", json_pack("{s:s, s:i}", "blob", blob, "i", i));
        aio_poll(aio_main_context(), false);
    }
    free(blob);

    /* The slow client was dropped: reading drains what was sent, then
     * EOF, well before 80 MiB. */
    size_t total = 0;
    int64_t deadline = clock_ns() + 20000000000LL;
    eof = false;
    while (!eof && clock_ns() < deadline) {
        aio_poll(aio_main_context(), false);
        ssize_t n = recv(slow, buf, 1 << 20, 0);
        if (n == 0) {
            eof = true;
        } else if (n > 0) {
            total += n;
        } else {
            usleep(1000);
        }
    }
    assert_true(eof);
    assert_true(total < (70u << 20));
    close(slow);

    /* The other client is unaffected. */
    send_str(good, "{\"execute\":\"qmp_capabilities\"}\n"
                   "{\"execute\":\"query-version\",\"id\":1}\n");
    assert_int_equal(read_lines(good, 2, buf, 1 << 20, &eof), 2);
    assert_non_null(strstr(buf, "\"id\": 1"));
    close(good);

    monitor_cleanup_all();
    assert_int_equal(access(sock_path, F_OK), -1);
    /* Events after cleanup go nowhere, harmlessly. */
    event_emit("AFTER", NULL);
    free(buf);
}

/* True if a reply is waiting on fd (without consuming it). */
static bool reply_waiting(int fd)
{
    char c;
    return recv(fd, &c, 1, MSG_PEEK) == 1;
}

typedef struct NestedWait {
    int fd;
    bool replied_inside;
    bool done;
} NestedWait;

/* Something other than a command (a job's prepare, say) runs the loop while
 * it waits: a command that arrives meanwhile must not start in there. */
static void nested_wait_bh(void *opaque)
{
    NestedWait *w = opaque;
    assert_int_equal(aio_poll_depth(aio_main_context()), 1);
    send_str(w->fd, "{\"execute\":\"query-version\",\"id\":7}\n");
    int64_t until = clock_ns() + 200000000LL;
    while (clock_ns() < until) {
        aio_poll(aio_main_context(), false);      /* depth 2 */
        usleep(1000);
    }
    w->replied_inside = reply_waiting(w->fd);
    w->done = true;
}

static void test_no_command_in_nested_wait(void **state)
{
    start_monitor();
    char buf[4096];
    bool eof;
    int fd = client_connect();
    assert_int_equal(read_lines(fd, 1, buf, sizeof(buf), &eof), 1);
    send_str(fd, "{\"execute\":\"qmp_capabilities\"}\n");
    assert_int_equal(read_lines(fd, 1, buf, sizeof(buf), &eof), 1);

    NestedWait w = { .fd = fd };
    aio_bh_schedule_oneshot(aio_main_context(), nested_wait_bh, &w);
    while (!w.done) {
        aio_poll(aio_main_context(), true);
    }
    assert_false(w.replied_inside);
    /* Once the nested wait is over, the parked command runs. */
    assert_int_equal(read_lines(fd, 1, buf, sizeof(buf), &eof), 1);
    assert_non_null(strstr(buf, "\"id\": 7"));

    /* Held commands (start-up, shutdown) wait for the release too. */
    monitor_hold_commands(true);
    send_str(fd, "{\"execute\":\"query-version\",\"id\":8}\n");
    int64_t until = clock_ns() + 100000000LL;
    while (clock_ns() < until) {
        aio_poll(aio_main_context(), false);
        usleep(1000);
    }
    assert_false(reply_waiting(fd));
    monitor_hold_commands(false);
    assert_int_equal(read_lines(fd, 1, buf, sizeof(buf), &eof), 1);
    assert_non_null(strstr(buf, "\"id\": 8"));

    close(fd);
    monitor_cleanup_all();
}

int main(void)
{
    Error *err = NULL;
    if (!aio_main_init(&err)) {
        fprintf(stderr, "%s\n", error_get_pretty(err));
        return 1;
    }
    qmp_register_commands(qmp_control_commands);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_reader_dropped),
        cmocka_unit_test(test_no_command_in_nested_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
