/*
 * The unit tests' shared helpers (see testutil.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "aio/io.h"
#include "block/drivers/drivers.h"

/* ---- scratch directory ---- */

char *tmpdir_make(char *tmpl)
{
    return mkdtemp(tmpl);
}

int tmpdir_remove(const char *dir)
{
    if (getenv("KEEP")) {
        return 0;
    }
    /* Quoted: the directory is only ever one that mkdtemp made. */
    return sh("rm -rf '%s'", dir);
}

/* ---- shell ---- */

static char *vstrdup_printf(const char *fmt, va_list ap)
{
    char *s = NULL;

    if (vasprintf(&s, fmt, ap) < 0) {
        fail_msg("out of memory formatting '%s'", fmt);
    }
    return s;
}

int sh(const char *fmt, ...)
{
    va_list ap;
    char *cmd;
    int r;

    va_start(ap, fmt);
    cmd = vstrdup_printf(fmt, ap);
    va_end(ap);
    r = system(cmd);
    free(cmd);
    return r;
}

bool qemu_img_installed(void)
{
    return sh("qemu-img --version >/dev/null 2>&1") == 0;
}

bool qemu_tools_installed(void)
{
    return qemu_img_installed() &&
           sh("qemu-io --version >/dev/null 2>&1") == 0;
}

char *sh_out(const char *fmt, ...)
{
    va_list ap;
    char *cmd, *out = NULL;
    size_t cap = 0;
    ssize_t n;
    FILE *p;

    va_start(ap, fmt);
    cmd = vstrdup_printf(fmt, ap);
    va_end(ap);
    p = popen(cmd, "r");
    free(cmd);
    assert_non_null(p);
    /* The output holds no NUL: getdelim reads it to the end. */
    n = getdelim(&out, &cap, '\0', p);
    pclose(p);
    if (n < 0) {
        free(out);
        return strdup("");
    }
    return out;
}

/* ---- strings and JSON ---- */

char *strdup_printf(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = vstrdup_printf(fmt, ap);
    va_end(ap);
    return s;
}

json_t *json_parse_ok(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);

    if (!v) {
        fail_msg("bad JSON in test: %s: %s", text, jerr.text);
    }
    return v;
}

char *json_strings_join(json_t *array)
{
    char *s = strdup("");

    for (size_t i = 0; i < json_array_size(array); i++) {
        char *longer = strdup_printf("%s%s%s", s, i ? " " : "",
                                     json_string_value(json_array_get(array,
                                                                      i)));
        free(s);
        s = longer;
    }
    return s;
}

/* ---- block nodes ---- */

BlockNode *open_json(const char *text, Error **errp)
{
    json_t *opts = json_parse_ok(text);
    BlockNode *bs = bdrv_open_blockdev(opts, false, errp);

    json_decref(opts);
    return bs;
}

BlockNode *open_ok(const char *fmt, ...)
{
    va_list ap;
    Error *err = NULL;
    BlockNode *bs;
    char *text;

    va_start(ap, fmt);
    text = vstrdup_printf(fmt, ap);
    va_end(ap);
    bs = open_json(text, &err);
    if (!bs) {
        fail_msg("open %s: %s", text, error_get_pretty(err));
    }
    free(text);
    return bs;
}

void open_fails(const char *text, const char *msg)
{
    Error *err = NULL;
    BlockNode *bs = open_json(text, &err);

    assert_null(bs);
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err), msg);
    error_free(err);
}

void del_ok(const char *name)
{
    Error *err = NULL;

    if (!bdrv_del_blockdev(name, &err)) {
        fail_msg("del %s: %s", name, error_get_pretty(err));
    }
}

BlockNode *file_node_new(bool read_only)
{
    BlockNode *bs = calloc(1, sizeof(*bs));

    assert_non_null(bs);
    bs->drv = &bdrv_file;
    bs->opaque = calloc(1, bdrv_file.state_size);
    assert_non_null(bs->opaque);
    bs->ctx = aio_main_context();
    bs->refcnt = 1;
    bs->read_only = read_only;
    return bs;
}

char *test_user_desc(BlockChild *c)
{
    (void)c;
    return strdup("test user");
}

const BlockChildClass test_user_class = {
    .get_parent_desc = test_user_desc,
};

static char *test_export_desc(BlockChild *c)
{
    return strdup_printf("export '%s'", (const char *)c->opaque);
}

const BlockChildClass test_export_class = {
    .get_parent_desc = test_export_desc,
};

/* ---- main loop and coroutines ---- */

int main_loop_setup(void **state)
{
    Error *err = NULL;

    (void)state;
    if (!aio_main_init(&err)) {
        fail_msg("aio_main_init: %s", error_get_pretty(err));
    }
    return 0;
}

int scratch_group_setup(char *tmpl, void **state)
{
    if (!tmpdir_make(tmpl)) {
        return -1;
    }
    return main_loop_setup(state);
}

int scratch_group_teardown(const char *dir)
{
    int ret = tmpdir_remove(dir);

    thread_pool_shutdown();
    return ret == 0 ? 0 : -1;
}

int qemu_img_main_setup(char *tmpl)
{
    if (!qemu_img_installed()) {
        printf("SKIP: qemu-img not installed\n");
        return 77;
    }
    if (!tmpdir_make(tmpl) || !aio_main_init(NULL)) {
        return 1;
    }
    return 0;
}

/* aio_co_run_wait with the tests' deadline on the wait. */
void co_run(CoroutineEntry *fn, void *opaque)
{
    CoRunWait w;

    aio_co_run_start(&w, aio_main_context(), fn, opaque);
    TEST_WAIT_WHILE(aio_main_context(), !aio_co_run_done(&w));
}
