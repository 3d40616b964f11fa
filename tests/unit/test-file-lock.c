/*
 * Image locking of the file driver (file-lock.c through the driver's
 * check_perm/set_perm), against ourselves and against qemu-io / qemu-img.
 *
 * OFD locks belong to the open file description, so two nodes on one file
 * in this process conflict as two processes would: most cases below use
 * two nodes.  The byte layout itself (100+i held, 200+i not shared) is
 * checked from a third descriptor with F_OFD_GETLK, and the cases with
 * qemu-io/qemu-img prove that QEMU reads it the same way.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "aio/io.h"
#include "block/block.h"
#include "block/drivers/drivers.h"
#include "block/drivers/file-lock.h"
#include "test-wait.h"

static char test_dir[] = "/var/tmp/bj-test-lock.XXXXXX";
static unsigned file_counter;

#define P_CR  BLK_PERM_CONSISTENT_READ
#define P_W   BLK_PERM_WRITE
#define P_WU  BLK_PERM_WRITE_UNCHANGED
#define P_RS  BLK_PERM_RESIZE
#define P_ALL BLK_PERM_ALL

/* ---- nodes ---- */

typedef struct OpenCall {
    BlockNode *bs;
    json_t *opts;
    Error *err;
    int ret;
    bool done;
} OpenCall;

static void coroutine_fn open_entry(void *opaque)
{
    OpenCall *c = opaque;

    c->ret = bdrv_file.co_open(c->bs, c->opts, &c->err);
    c->done = true;
}

static BlockNode *node_open_aio(const char *path, const char *locking,
                                bool read_only, const char *aio)
{
    BlockNode *bs = file_node_new(read_only);
    OpenCall c = { .bs = bs };

    c.opts = json_pack("{s:s, s:s, s:s}", "filename", path,
                       "locking", locking, "aio", aio);
    assert_true(argspec_check(c.opts, bdrv_file.options, "", false, NULL));
    coroutine_enter(coroutine_create(open_entry, &c));
    TEST_WAIT_WHILE(aio_main_context(), !c.done);
    json_decref(c.opts);
    assert_null(c.err);
    assert_int_equal(c.ret, 0);
    return bs;
}

static BlockNode *node_open(const char *path, const char *locking,
                            bool read_only)
{
    return node_open_aio(path, locking, read_only, "threads");
}

static void node_close(BlockNode *bs)
{
    bdrv_file.close(bs);
    free(bs->opaque);
    free(bs);
}

/* check_perm then, if it passed, set_perm: what the graph does.  Returns
 * the error message (caller frees) or NULL. */
static char *node_perm(BlockNode *bs, uint64_t perm, uint64_t shared)
{
    Error *err = NULL;
    char *msg;

    if (bdrv_file.check_perm(bs, perm, shared, &err)) {
        assert_null(err);
        bdrv_file.set_perm(bs, perm, shared);
        return NULL;
    }
    assert_non_null(err);
    msg = strdup(error_get_pretty(err));
    error_free(err);
    return msg;
}

static void assert_perm_ok(BlockNode *bs, uint64_t perm, uint64_t shared)
{
    char *msg = node_perm(bs, perm, shared);

    if (msg) {
        fail_msg("unexpected lock failure: %s", msg);
    }
}

static void assert_perm_fails(BlockNode *bs, uint64_t perm, uint64_t shared,
                              const char *exp)
{
    char *msg = node_perm(bs, perm, shared);

    assert_non_null(msg);
    assert_string_equal(msg, exp);
    free(msg);
}

/* ---- looking at the bytes from outside ---- */

/* Bitmask of lock bytes held by others: bit i = byte 100+i, bit 4+i =
 * byte 200+i. */
static unsigned probe_bytes(const char *path)
{
    int fd = open(path, O_RDONLY);
    unsigned mask = 0;

    assert_true(fd >= 0);
    for (int i = 0; i < 8; i++) {
        struct flock fl = {
            .l_type = F_WRLCK,
            .l_whence = SEEK_SET,
            .l_start = (i < 4 ? 100 + i : 200 + i - 4),
            .l_len = 1,
        };

        assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
        if (fl.l_type != F_UNLCK) {
            mask |= 1u << i;
        }
    }
    close(fd);
    return mask;
}

/* This program, for test_killed_holder_releases to run as a holder. */
static char self_exe[PATH_MAX] = "/proc/self/exe";

#define HELD(i)     (1u << (i))
#define UNSHARED(i) (1u << (4 + (i)))

static char *new_file(void)
{
    char *path;
    int fd;

    assert_true(asprintf(&path, "%s/f%u.img", test_dir, file_counter++) > 0);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    close(fd);
    return path;
}

/* ---- tests ---- */

/* The bytes we hold are QEMU's layout, and change with the permissions;
 * no users, no locks. */
static void test_layout(void **state)
{
    char *path = new_file();
    BlockNode *a = node_open(path, "on", false);

    assert_int_equal(probe_bytes(path), 0);
    assert_perm_ok(a, P_CR | P_W, P_CR | P_WU);
    assert_int_equal(probe_bytes(path),
                     HELD(0) | HELD(1) | UNSHARED(1) | UNSHARED(3));
    assert_perm_ok(a, P_CR, P_ALL);
    assert_int_equal(probe_bytes(path), HELD(0));
    assert_perm_ok(a, 0, P_ALL);
    assert_int_equal(probe_bytes(path), 0);
    assert_perm_ok(a, P_RS, P_ALL & ~P_CR);
    assert_int_equal(probe_bytes(path), HELD(3) | UNSHARED(0));
    node_close(a);
    assert_int_equal(probe_bytes(path), 0);
    unlink(path);
    free(path);
}

/* Two nodes on one file conflict like two processes, both ways, and a
 * refused change leaves the loser's locks as they were. */
static void test_two_nodes(void **state)
{
    char *path = new_file();
    BlockNode *a = node_open(path, "on", false);
    BlockNode *b = node_open(path, "auto", false);

    /* a writes and shares only reading. */
    assert_perm_ok(a, P_CR | P_W, P_CR | P_WU);
    /* b may read... */
    assert_perm_ok(b, P_CR, P_ALL);
    /* ...but not write, nor resize. */
    assert_perm_fails(b, P_CR | P_W, P_ALL, "Failed to get \"write\" lock");
    assert_perm_fails(b, P_RS, P_ALL, "Failed to get \"resize\" lock");
    /* b cannot refuse to share what a already does. */
    assert_perm_fails(b, P_CR, P_ALL & ~P_W,
                      "Failed to get shared \"write\" lock");
    assert_perm_fails(b, P_CR, P_ALL & ~P_CR,
                      "Failed to get shared \"consistent read\" lock");
    /* b still holds just its consistent-read byte (plus a's bytes). */
    assert_int_equal(probe_bytes(path),
                     HELD(0) | HELD(1) | UNSHARED(1) | UNSHARED(3));
    node_close(a);
    assert_int_equal(probe_bytes(path), HELD(0));

    /* a gone: b may now write and keep others out. */
    assert_perm_ok(b, P_CR | P_W, P_CR);
    a = node_open(path, "on", true);
    assert_perm_fails(a, P_CR, P_CR | P_WU | P_RS,
                      "Failed to get shared \"write\" lock");
    assert_perm_ok(a, P_CR, P_ALL);
    assert_perm_fails(a, P_WU, P_ALL,
                      "Failed to get \"write unchanged\" lock");

    node_close(a);
    node_close(b);
    unlink(path);
    free(path);
}

/* locking=off takes no locks and checks nothing. */
static void test_locking_off(void **state)
{
    char *path = new_file();
    BlockNode *a = node_open(path, "on", false);
    BlockNode *b = node_open(path, "off", false);

    assert_perm_ok(a, P_CR | P_W, P_CR);
    assert_perm_ok(b, P_CR | P_W | P_RS, P_CR);
    assert_int_equal(probe_bytes(path),
                     HELD(0) | HELD(1) | UNSHARED(1) | UNSHARED(2) |
                     UNSHARED(3));
    node_close(a);
    assert_int_equal(probe_bytes(path), 0);
    node_close(b);
    unlink(path);
    free(path);
}

/* ---- through the graph ---- */

static void user_drain(BlockChild *c)
{
}

static bool user_drained_poll(BlockChild *c)
{
    return false;
}

static const BlockChildClass user_class = {
    .get_parent_desc = test_user_desc,
    .drained_begin = user_drain,
    .drained_poll = user_drained_poll,
    .drained_end = user_drain,
};

static BlockNode *blockdev(const char *name, const char *path)
{
    json_t *opts = json_pack("{s:s, s:s, s:s}", "driver", "file",
                             "node-name", name, "filename", path);
    Error *err = NULL;
    BlockNode *bs = bdrv_open_blockdev(opts, false, &err);

    json_decref(opts);
    if (!bs) {
        fail_msg("blockdev-add: %s", error_get_pretty(err));
    }
    return bs;
}

/* The graph hands a user's permissions to the driver: an attach that needs
 * what another node on the same file keeps to itself is refused with the
 * lock message, and detaching gives the bytes back. */
static void test_through_graph(void **state)
{
    char *path = new_file();
    Error *err = NULL;
    BlockChild *ua, *ub;

    blockdev("ga", path);
    blockdev("gb", path);
    ua = bdrv_root_attach_child(bdrv_find_node("ga"), "root", &user_class,
                                NULL, P_CR | P_W, P_CR | P_WU, &err);
    assert_non_null(ua);
    assert_int_equal(probe_bytes(path),
                     HELD(0) | HELD(1) | UNSHARED(1) | UNSHARED(3));

    ub = bdrv_root_attach_child(bdrv_find_node("gb"), "root", &user_class,
                                NULL, P_CR | P_W, P_ALL, &err);
    assert_null(ub);
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err), "Failed to get \"write\" lock");
    error_free(err);
    err = NULL;
    /* The refused attach left nothing behind. */
    assert_int_equal(probe_bytes(path),
                     HELD(0) | HELD(1) | UNSHARED(1) | UNSHARED(3));

    bdrv_detach_child(ua);
    assert_int_equal(probe_bytes(path), 0);
    ub = bdrv_root_attach_child(bdrv_find_node("gb"), "root", &user_class,
                                NULL, P_CR | P_W, P_ALL, &err);
    assert_non_null(ub);
    assert_int_equal(probe_bytes(path), HELD(0) | HELD(1));
    bdrv_detach_child(ub);

    assert_true(bdrv_del_blockdev("ga", NULL));
    assert_true(bdrv_del_blockdev("gb", NULL));
    assert_int_equal(probe_bytes(path), 0);
    unlink(path);
    free(path);
}

/* ---- against QEMU ---- */

static bool have_tool(const char *tool)
{
    return sh("command -v %s >/dev/null 2>&1", tool) == 0;
}

/* Runs a shell command, returns its exit status and (caller frees) its
 * combined output. */
static int run_cmd(char **out, const char *fmt, ...)
{
    char *cmd, *full;
    va_list ap;
    FILE *f;
    size_t len = 0, cap = 4096;
    int status;

    va_start(ap, fmt);
    assert_true(vasprintf(&cmd, fmt, ap) > 0);
    va_end(ap);
    assert_true(asprintf(&full, "%s 2>&1", cmd) > 0);
    f = popen(full, "r");
    assert_non_null(f);
    *out = malloc(cap);
    assert_non_null(*out);
    while (!feof(f)) {
        size_t n = fread(*out + len, 1, cap - len - 1, f);

        len += n;
        if (len + 1 == cap) {
            cap *= 2;
            *out = realloc(*out, cap);
            assert_non_null(*out);
        }
        if (n == 0) {
            break;
        }
    }
    (*out)[len] = '\0';
    status = pclose(f);
    free(cmd);
    free(full);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* qemu-io holding a qcow2 image for writing (it does not share write):
 * we may read but not write. */
static void test_qemu_holds(void **state)
{
    char *path, *out;
    BlockNode *a;
    pid_t pid;
    int waited_ms = 0;

    if (!have_tool("qemu-io") || !have_tool("qemu-img")) {
        skip();
    }
    assert_true(asprintf(&path, "%s/q%u.qcow2", test_dir,
                         file_counter++) > 0);
    assert_int_equal(run_cmd(&out, "qemu-img create -f qcow2 '%s' 1M",
                             path), 0);
    free(out);

    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execlp("qemu-io", "qemu-io", "-f", "qcow2", path,
               "-c", "sleep 60000", (char *)NULL);
        _exit(127);
    }
    /* Wait (generously) until it holds its write byte. */
    while (!(probe_bytes(path) & HELD(1))) {
        struct timespec ts = { 0, 20 * 1000000 };

        assert_true(waited_ms < 30000);
        nanosleep(&ts, NULL);
        waited_ms += 20;
    }

    a = node_open(path, "auto", false);
    assert_perm_fails(a, P_CR | P_W, P_ALL, "Failed to get \"write\" lock");
    assert_perm_ok(a, P_CR, P_ALL);
    node_close(a);

    /* locking=off: nothing stops us. */
    a = node_open(path, "off", false);
    assert_perm_ok(a, P_CR | P_W, P_CR);
    node_close(a);

    kill(pid, SIGTERM);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    unlink(path);
    free(path);
}

/* We hold the image for writing without sharing write: qemu-img info
 * (which does not share write on a qcow2 image) and qemu-io write refuse;
 * -U and locking=off let them through. */
static void test_we_hold(void **state)
{
    char *path, *out;
    BlockNode *a;

    if (!have_tool("qemu-io") || !have_tool("qemu-img")) {
        skip();
    }
    assert_true(asprintf(&path, "%s/q%u.qcow2", test_dir,
                         file_counter++) > 0);
    assert_int_equal(run_cmd(&out, "qemu-img create -f qcow2 '%s' 1M",
                             path), 0);
    free(out);

    a = node_open(path, "on", false);
    assert_perm_ok(a, P_CR | P_W, P_CR | P_WU);

    assert_int_not_equal(run_cmd(&out, "qemu-img info '%s'", path), 0);
    assert_non_null(strstr(out, "Failed to get shared \"write\" lock"));
    assert_non_null(strstr(out, "Is another process using the image"));
    free(out);

    assert_int_equal(run_cmd(&out, "qemu-img info -U '%s'", path), 0);
    free(out);

    assert_int_not_equal(run_cmd(&out, "qemu-io -f raw '%s' -c "
                                 "'write 0 4k'", path), 0);
    assert_non_null(strstr(out, "Failed to get \"write\" lock"));
    free(out);

    /* Reading is shared. */
    assert_int_equal(run_cmd(&out, "qemu-io -r -f raw '%s' -c 'read 0 4k'",
                             path), 0);
    assert_null(strstr(out, "Failed"));
    free(out);
    node_close(a);

    a = node_open(path, "off", false);
    assert_perm_ok(a, P_CR | P_W, P_CR | P_WU);
    assert_int_equal(run_cmd(&out, "qemu-img info '%s'", path), 0);
    free(out);
    node_close(a);

    unlink(path);
    free(path);
}

/* ---- a killed process lets go at once ---- */

typedef struct Writer {
    BlockNode *bs;
    uint8_t *buf;
    uint64_t rng;
} Writer;

static void coroutine_fn writer_entry(void *opaque)
{
    Writer *w = opaque;

    for (;;) {
        IOVector v;

        w->rng = w->rng * 6364136223846793005ULL + 1442695040888963407ULL;
        iov_vec_init_buf(&v, w->buf, 65536);
        bdrv_file.co_pwritev(w->bs, (int64_t)(w->rng >> 40) % 16 * 65536,
                             65536, &v, 0);
    }
}

/* Child process (this binary with --hold PATH): holds write on PATH and
 * keeps 32 io_uring writes in flight until killed. */
static int hold_main(const char *path)
{
    static Writer w[32];
    BlockNode *bs;

    if (!aio_main_init(NULL)) {
        return 1;
    }
    bs = node_open_aio(path, "on", false, "io_uring");
    assert_perm_ok(bs, P_CR | P_W, P_CR | P_WU);
    for (int i = 0; i < 32; i++) {
        w[i].bs = bs;
        w[i].buf = blk_aligned_alloc(4096, 65536);
        memset(w[i].buf, i, 65536);
        w[i].rng = i + 1;
        coroutine_enter(coroutine_create(writer_entry, &w[i]));
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        aio_poll(aio_main_context(), true);
    }
}

/* Requests in flight on io_uring keep the I/O descriptor's open file
 * description alive for some milliseconds after a killed process is
 * reaped; the locks must not live there, or a qemu-img run right after a
 * crash is refused.  Seen 11 times in 30 before the locks moved to a
 * descriptor of their own. */
static void test_killed_holder_releases(void **state)
{
    if (!io_uring_available()) {
        skip();
    }
    char *path = new_file();

    for (int i = 0; i < 20; i++) {
        int pipefd[2];
        char line[16] = "";
        ssize_t n;
        pid_t pid;

        assert_int_equal(pipe(pipefd), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            dup2(pipefd[1], STDOUT_FILENO);
            close(pipefd[0]);
            close(pipefd[1]);
            execl(self_exe, "test-file-lock", "--hold", path, (char *)NULL);
            _exit(127);
        }
        close(pipefd[1]);
        n = read(pipefd[0], line, sizeof(line) - 1);
        close(pipefd[0]);
        assert_true(n > 0);
        assert_string_equal(line, "ready\n");
        {
            struct timespec ts = { 0, 20 * 1000000 };

            nanosleep(&ts, NULL);
        }
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, NULL, 0), pid);
        assert_int_equal(probe_bytes(path), 0);
    }
    unlink(path);
    free(path);
}

/* ---- setup ---- */

SCRATCH_GROUP_FIXTURES(test_dir)

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--hold") == 0) {
        return hold_main(argv[2]);
    }
    /* Under valgrind /proc/self/exe is valgrind's tool, which refuses to
     * run as a program: re-execute this test by its own path. */
    if (strchr(argv[0], '/') && !realpath(argv[0], self_exe)) {
        return 1;
    }

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_two_nodes),
        cmocka_unit_test(test_locking_off),
        cmocka_unit_test(test_through_graph),
        cmocka_unit_test(test_killed_holder_releases),
        cmocka_unit_test(test_qemu_holds),
        cmocka_unit_test(test_we_hold),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
