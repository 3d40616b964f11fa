/*
 * The NBD server end to end inside one process: the main thread runs the
 * event loop (server, export, block layer on a raw file), a client thread
 * speaks the protocol over a UNIX socket with blocking calls.  The two
 * meet through an atomic `phase` so that drained sections can be opened and
 * closed by the main thread at exactly the right moments.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "testutil.h"

#include "aio/aio.h"
#include "block/block.h"
#include "nbd/nbd-proto.h"
#include "nbd/nbd-wire.h"
#include "nbd/nbd.h"
#include "test-wait.h"

#define SIZE (4 << 20)

static char dir[64];
static char sock_path[128];
static BlockNode *node;
static atomic_int phase;
static atomic_bool client_done;
static char client_error[256];

/* ---- client side (runs in its own thread, blocking I/O) ---- */

#define CHECK(cond) do {                                                  \
        if (!(cond)) {                                                    \
            snprintf(client_error, sizeof(client_error), "%s:%d: %s",     \
                     __FILE__, __LINE__, #cond);                          \
            return false;                                                 \
        }                                                                 \
    } while (0)

static bool rd(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) {
            return false;
        }
        p += r;
        n -= r;
    }
    return true;
}

static bool wr(int fd, const void *buf, size_t n)
{
    return send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n;
}

static int client_connect(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    strcpy(sa.sun_path, sock_path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        return -1;
    }
    return fd;
}

static bool send_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
    uint8_t h[16];
    nbd_put64(h, NBD_IHAVEOPT);
    nbd_put32(h + 8, opt);
    nbd_put32(h + 12, len);
    return wr(fd, h, 16) && (!len || wr(fd, data, len));
}

/* Reads option replies until a final one; returns its type. */
static uint32_t opt_final(int fd, uint64_t *size, uint16_t *flags)
{
    for (;;) {
        uint8_t h[20], d[1024];
        if (!rd(fd, h, 20)) {
            return 0;
        }
        uint32_t type = nbd_get32(h + 12), len = nbd_get32(h + 16);
        if (len > sizeof(d) || !rd(fd, d, len)) {
            return 0;
        }
        if (type == NBD_REP_INFO && nbd_get16(d) == NBD_INFO_EXPORT) {
            *size = nbd_get64(d + 2);
            *flags = nbd_get16(d + 10);
        }
        if (type != NBD_REP_INFO && type != NBD_REP_META_CONTEXT) {
            return type;
        }
    }
}

/* Connects and negotiates structured replies, base:allocation, GO. */
static int client_open(const char *name, uint64_t *size, uint16_t *flags)
{
    uint8_t g[18], buf[256];
    uint32_t n = strlen(name), cf = NBD_FLAG_C_FIXED_NEWSTYLE |
                                    NBD_FLAG_C_NO_ZEROES;
    int fd = client_connect();

    if (fd < 0 || !rd(fd, g, 18)) {
        return -1;
    }
    nbd_put32(buf, cf);
    wr(fd, buf, 4);
    send_opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
    if (opt_final(fd, size, flags) != NBD_REP_ACK) {
        close(fd);
        return -1;
    }
    nbd_put32(buf, n);
    memcpy(buf + 4, name, n);
    nbd_put32(buf + 4 + n, 1);
    nbd_put32(buf + 8 + n, 15);
    memcpy(buf + 12 + n, "base:allocation", 15);
    send_opt(fd, NBD_OPT_SET_META_CONTEXT, buf, 27 + n);
    if (opt_final(fd, size, flags) != NBD_REP_ACK) {
        close(fd);
        return -1;
    }
    nbd_put32(buf, n);
    memcpy(buf + 4, name, n);
    nbd_put16(buf + 4 + n, 0);
    send_opt(fd, NBD_OPT_GO, buf, 6 + n);
    if (opt_final(fd, size, flags) != NBD_REP_ACK) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_req(int fd, uint16_t type, uint16_t flags, uint64_t handle,
                     uint64_t off, uint32_t len, const void *payload)
{
    NbdRequest r = { .type = type, .flags = flags, .handle = handle,
                     .offset = off, .length = len };
    size_t n = NBD_REQUEST_SIZE + (payload ? len : 0);
    uint8_t *m = malloc(n);
    bool ok;

    /* One send per request: many tiny messages would fill a UNIX socket's
     * buffer with per-message overhead long before its byte limit. */
    nbd_encode_request(m, &r);
    if (payload) {
        memcpy(m + NBD_REQUEST_SIZE, payload, len);
    }
    ok = wr(fd, m, n);
    free(m);
    return ok;
}

/*
 * Reads one whole structured reply; READ data lands in buf (relative to
 * base_off), holes are zero-filled.  Returns the error (0 = success) or -1
 * on a broken stream; *handle says whose reply it was.
 */
static int read_reply(int fd, uint64_t *handle, uint8_t *buf,
                      uint64_t base_off, uint32_t *bs_flags)
{
    int err = 0;
    for (;;) {
        uint8_t h[20], p[64];
        if (!rd(fd, h, 20) || nbd_get32(h) != NBD_STRUCTURED_REPLY_MAGIC) {
            return -1;
        }
        uint16_t flags = nbd_get16(h + 4), type = nbd_get16(h + 6);
        uint32_t len = nbd_get32(h + 16);
        *handle = nbd_get64(h + 8);
        if (type == NBD_REPLY_TYPE_OFFSET_DATA) {
            uint8_t o[8];
            if (!rd(fd, o, 8) ||
                !rd(fd, buf + (nbd_get64(o) - base_off), len - 8)) {
                return -1;
            }
        } else if (type == NBD_REPLY_TYPE_OFFSET_HOLE) {
            if (len != 12 || !rd(fd, p, 12)) {
                return -1;
            }
            memset(buf + (nbd_get64(p) - base_off), 0, nbd_get32(p + 8));
        } else if (type == NBD_REPLY_TYPE_BLOCK_STATUS) {
            uint8_t *d = malloc(len);
            if (!rd(fd, d, len)) {
                free(d);
                return -1;
            }
            if (bs_flags) {
                *bs_flags = nbd_get32(d + 8);
            }
            free(d);
        } else if (type == NBD_REPLY_TYPE_ERROR) {
            uint8_t *d = malloc(len);
            if (!rd(fd, d, len)) {
                free(d);
                return -1;
            }
            err = nbd_get32(d);
            free(d);
        } else if (len) {
            return -1;
        }
        if (flags & NBD_REPLY_FLAG_DONE) {
            return err;
        }
    }
}

static bool readable_within(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, ms) > 0;
}

static void wait_phase(int want)
{
    while (atomic_load(&phase) != want) {
        usleep(1000);
    }
}

static void set_phase(int p)
{
    atomic_store(&phase, p);
    aio_notify(aio_main_context());
}

static bool client_rw(void)
{
    uint64_t size, h;
    uint16_t flags;
    uint8_t *wbuf = malloc(65536), *rbuf = malloc(65536);
    uint32_t st = 0;
    int fd = client_open("disk", &size, &flags);

    CHECK(fd >= 0);
    CHECK(size == SIZE);
    CHECK(flags & NBD_FLAG_SEND_DF);
    CHECK(!(flags & NBD_FLAG_READ_ONLY));
    CHECK(flags & NBD_FLAG_CAN_MULTI_CONN);
    for (int i = 0; i < 65536; i++) {
        wbuf[i] = (uint8_t)(i * 7 + 3);
    }
    /* several writes in flight, then reads */
    for (int i = 0; i < 4; i++) {
        CHECK(send_req(fd, NBD_CMD_WRITE, i == 3 ? NBD_CMD_FLAG_FUA : 0,
                       100 + i, 65536 * i, 65536, wbuf));
    }
    for (int i = 0; i < 4; i++) {
        CHECK(read_reply(fd, &h, rbuf, 0, NULL) == 0);
        CHECK(h >= 100 && h < 104);
    }
    memset(rbuf, 0xee, 65536);
    CHECK(send_req(fd, NBD_CMD_READ, 0, 7, 65536 * 2, 65536, NULL));
    CHECK(read_reply(fd, &h, rbuf, 65536 * 2, NULL) == 0 && h == 7);
    CHECK(memcmp(rbuf, wbuf, 65536) == 0);

    /* a hole reads as zeroes, and block status says so */
    memset(rbuf, 0xee, 65536);
    CHECK(send_req(fd, NBD_CMD_READ, 0, 8, SIZE - 65536, 65536, NULL));
    CHECK(read_reply(fd, &h, rbuf, SIZE - 65536, NULL) == 0);
    for (int i = 0; i < 65536; i++) {
        CHECK(rbuf[i] == 0);
    }
    CHECK(send_req(fd, NBD_CMD_BLOCK_STATUS, 0, 9, SIZE - 65536, 65536,
                   NULL));
    CHECK(read_reply(fd, &h, rbuf, 0, &st) == 0);
    CHECK(st & NBD_STATE_ZERO);

    /* errors come back as error chunks; the connection goes on */
    CHECK(send_req(fd, NBD_CMD_READ, 0, 10, SIZE - 512, 1024, NULL));
    CHECK(read_reply(fd, &h, rbuf, SIZE - 512, NULL) == NBD_EINVAL);
    CHECK(send_req(fd, NBD_CMD_WRITE, 0, 11, SIZE, 512, wbuf));
    CHECK(read_reply(fd, &h, rbuf, 0, NULL) == NBD_ENOSPC);
    CHECK(send_req(fd, 77, 0, 12, 0, 0, NULL));
    CHECK(read_reply(fd, &h, rbuf, 0, NULL) == NBD_EINVAL);

    CHECK(send_req(fd, NBD_CMD_WRITE_ZEROES, 0, 13, 0, 65536, NULL));
    CHECK(read_reply(fd, &h, rbuf, 0, NULL) == 0);
    CHECK(send_req(fd, NBD_CMD_FLUSH, 0, 14, 0, 0, NULL));
    CHECK(read_reply(fd, &h, rbuf, 0, NULL) == 0);
    memset(rbuf, 0xee, 65536);
    CHECK(send_req(fd, NBD_CMD_READ, NBD_CMD_FLAG_DF, 15, 0, 65536, NULL));
    CHECK(read_reply(fd, &h, rbuf, 0, NULL) == 0);
    for (int i = 0; i < 65536; i++) {
        CHECK(rbuf[i] == 0);
    }

    CHECK(send_req(fd, NBD_CMD_DISC, 0, 16, 0, 0, NULL));
    CHECK(!rd(fd, rbuf, 1));        /* the server hangs up */
    close(fd);
    free(wbuf);
    free(rbuf);
    return true;
}

/* Writes sent during a drained section wait, then all complete in order:
 * three connections with 100 writes each (300 queued requests), every
 * connection writing its own block over and over. */
static bool client_drain(void)
{
    uint64_t size, h;
    uint16_t flags;
    uint8_t buf[4096], rbuf[4096];
    int fds[3], fd;

    for (int c = 0; c < 3; c++) {
        fds[c] = client_open("disk", &size, &flags);
        CHECK(fds[c] >= 0);
    }
    set_phase(1);                   /* main: drain the node */
    wait_phase(2);
    for (int i = 0; i < 100; i++) {
        for (int c = 0; c < 3; c++) {
            memset(buf, i + c, 512);
            CHECK(send_req(fds[c], NBD_CMD_WRITE, 0, i, 8192 + 512 * c, 512,
                           buf));
        }
    }
    for (int c = 0; c < 3; c++) {
        CHECK(!readable_within(fds[c], 100));   /* nothing completes */
    }
    set_phase(3);                   /* main: end the drain */
    for (int c = 0; c < 3; c++) {
        for (int i = 0; i < 100; i++) {
            CHECK(read_reply(fds[c], &h, rbuf, 0, NULL) == 0);
        }
    }
    fd = fds[0];
    CHECK(send_req(fd, NBD_CMD_READ, 0, 999, 8192, 1536, NULL));
    CHECK(read_reply(fd, &h, rbuf, 8192, NULL) == 0 && h == 999);
    for (int c = 0; c < 3; c++) {
        for (int i = 0; i < 512; i++) {
            CHECK(rbuf[512 * c + i] == 99 + c);     /* the last write won */
        }
    }
    close(fds[1]);
    close(fds[2]);

    /* a client that hangs up while its writes are queued */
    set_phase(4);                   /* main: drain again */
    wait_phase(5);
    memset(buf, 0x5a, sizeof(buf));
    CHECK(send_req(fd, NBD_CMD_WRITE, 0, 1, 0, 4096, buf));
    usleep(100 * 1000);
    close(fd);
    set_phase(6);                   /* main: end the drain */
    wait_phase(7);
    fd = client_open("disk", &size, &flags);
    CHECK(fd >= 0);
    CHECK(send_req(fd, NBD_CMD_READ, 0, 2, 0, 4096, NULL));
    CHECK(read_reply(fd, &h, rbuf, 0, NULL) == 0);
    CHECK(rbuf[0] == 0x5a && rbuf[4095] == 0x5a);
    close(fd);
    return true;
}

/* Garbage, lies and hang-ups: each gets a closed connection; a good client
 * still works afterwards. */
static bool client_hostile(void)
{
    uint64_t size, h;
    uint16_t flags;
    uint8_t junk[64], buf[4096];
    int fd;

    /* garbage instead of client flags and options */
    fd = client_connect();
    CHECK(fd >= 0 && rd(fd, buf, 18));
    memset(junk, 0xff, sizeof(junk));
    wr(fd, junk, sizeof(junk));
    CHECK(!rd(fd, buf, 1));
    close(fd);

    /* hang up in the middle of an option */
    fd = client_connect();
    CHECK(fd >= 0 && rd(fd, buf, 18));
    nbd_put32(buf, NBD_FLAG_C_FIXED_NEWSTYLE);
    wr(fd, buf, 4);
    nbd_put64(buf, NBD_IHAVEOPT);
    nbd_put32(buf + 8, NBD_OPT_GO);
    nbd_put32(buf + 12, 1000);
    memset(buf + 16, 0, 4);     /* 4 bytes of the 1000 announced */
    wr(fd, buf, 20);
    close(fd);

    /* bad request magic */
    fd = client_open("disk", &size, &flags);
    CHECK(fd >= 0);
    wr(fd, junk, NBD_REQUEST_SIZE);
    CHECK(!rd(fd, buf, 1));
    close(fd);

    /* a write that claims a gigabyte of payload */
    fd = client_open("disk", &size, &flags);
    CHECK(fd >= 0);
    CHECK(send_req(fd, NBD_CMD_WRITE, 0, 1, 0, 1u << 30, NULL));
    CHECK(!rd(fd, buf, 1));
    close(fd);

    /* hang up in the middle of a write payload */
    fd = client_open("disk", &size, &flags);
    CHECK(fd >= 0);
    CHECK(send_req(fd, NBD_CMD_WRITE, 0, 1, 0, 4096, NULL));
    wr(fd, junk, 10);
    close(fd);

    /* still serving */
    fd = client_open("disk", &size, &flags);
    CHECK(fd >= 0);
    CHECK(send_req(fd, NBD_CMD_READ, 0, 5, 0, 512, NULL));
    CHECK(read_reply(fd, &h, buf, 0, NULL) == 0 && h == 5);
    close(fd);

    /* unknown export */
    CHECK(client_open("nope", &size, &flags) < 0);
    return true;
}

typedef bool ClientFn(void);

static void *client_thread(void *opaque)
{
    ClientFn *fn = (ClientFn *)opaque;
    if (!fn()) {
        fprintf(stderr, "client: %s\n", client_error);
    } else {
        client_error[0] = 0;
    }
    atomic_store(&client_done, true);
    aio_notify(aio_main_context());
    return NULL;
}

/* Runs fn in a client thread; the main loop serves and plays the drain
 * phases. */
static void run_client(ClientFn *fn)
{
    pthread_t t;
    int handled = 0;

    strcpy(client_error, "did not finish");
    atomic_store(&phase, 0);
    atomic_store(&client_done, false);
    assert_int_equal(pthread_create(&t, NULL, client_thread, (void *)fn), 0);
    /* Bounded (test-wait.h): a drain that never ends fails the test here
     * instead of hanging the binary. */
    int64_t deadline = clock_ns() + TEST_WAIT_SECONDS * 1000000000LL;
    AioTimer *tick = aio_timer_new(aio_main_context(), test_wait_tick, NULL);
    while (!atomic_load(&client_done)) {
        if (clock_ns() > deadline) {
            /* The client thread is still blocked on its socket and the
             * node may stay drained: every later test would wait out its
             * own deadline too, so the whole binary stops here. */
            print_error("client still running after %d s, in phase %d "
                        "(%s)\n", TEST_WAIT_SECONDS, atomic_load(&phase),
                        client_error);
            exit(1);
        }
        aio_timer_mod(tick, clock_ns() + TEST_WAIT_TICK_NS);
        aio_poll(aio_main_context(), true);
        int p = atomic_load(&phase);
        if (p == handled) {
            continue;
        }
        handled = p;
        if (p == 1 || p == 4) {
            bdrv_drained_begin(node);
            atomic_store(&phase, p + 1);
            handled = p + 1;
        } else if (p == 3) {
            bdrv_drained_end(node);
        } else if (p == 6) {
            bdrv_drained_end(node);
            /* let the queued write run and the connection end */
            for (int i = 0; i < 50; i++) {
                aio_poll(aio_main_context(), false);
                usleep(2000);
            }
            atomic_store(&phase, 7);
            handled = 7;
        }
    }
    aio_timer_free(tick);
    pthread_join(t, NULL);
    if (client_error[0]) {
        fail_msg("%s", client_error);
    }
}

static void test_read_write(void **state)
{
    run_client(client_rw);
}

static void test_drain(void **state)
{
    run_client(client_drain);
}

static void test_hostile(void **state)
{
    run_client(client_hostile);
}

static void test_qmp_errors(void **state)
{
    Error *err = NULL;
    NbdExportOptions o = { .id = "e0", .node_name = "disk" };

    assert_false(nbd_export_add(&o, &err));
    assert_string_equal(error_get_pretty(err),
                        "Block export id 'e0' is already in use");
    error_free_or_abort_clear(&err);
    o.id = "e1";
    assert_false(nbd_export_add(&o, &err));
    assert_string_equal(error_get_pretty(err),
                        "NBD server already has export named 'disk'");
    error_free_or_abort_clear(&err);
    o.node_name = "nosuch";
    assert_false(nbd_export_add(&o, &err));
    assert_string_equal(error_get_pretty(err),
                        "Cannot find device='' nor node-name='nosuch'");
    error_free_or_abort_clear(&err);

    assert_false(nbd_export_del("nope", false, &err));
    assert_string_equal(error_get_pretty(err), "Export 'nope' is not found");
    error_free_or_abort_clear(&err);

    json_t *q = nbd_export_query();
    assert_int_equal(json_array_size(q), 1);
    assert_string_equal(json_string_value(json_object_get(
        json_array_get(q, 0), "node-name")), "disk");
    json_decref(q);
}

static int setup(void **state)
{
    Error *err = NULL;
    char path[128];

    main_loop_setup(state);
    strcpy(dir, "/tmp/test-nbd-server.XXXXXX");
    assert_non_null(tmpdir_make(dir));
    snprintf(path, sizeof(path), "%s/disk.raw", dir);
    snprintf(sock_path, sizeof(sock_path), "%s/nbd.sock", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(ftruncate(fileno(f), SIZE), 0);
    fclose(f);

    node = open_ok("{\"driver\": \"raw\", \"node-name\": \"disk\", "
                   "\"file\": {\"driver\": \"file\", \"filename\": "
                   "\"%s\"}}", path);
    json_t *addr = json_pack("{s:s, s:s}", "type", "unix", "path", sock_path);
    if (!nbd_server_start(addr, 100, 0, NULL, NULL, &err)) {
        fail_msg("server: %s", error_get_pretty(err));
    }
    json_decref(addr);
    NbdExportOptions o = { .id = "e0", .node_name = "disk",
                           .writable = true };
    if (!nbd_export_add(&o, &err)) {
        fail_msg("export: %s", error_get_pretty(err));
    }
    return 0;
}

static int teardown(void **state)
{
    char path[160];

    nbd_shutdown();
    assert_true(bdrv_del_blockdev("disk", NULL));
    snprintf(path, sizeof(path), "%s/disk.raw", dir);
    unlink(path);
    rmdir(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_write),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_qmp_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
