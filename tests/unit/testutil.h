/*
 * What the unit tests share: a scratch directory, a shell runner, JSON and
 * block-node helpers that fail the test with the reason, the main loop's
 * setup for cmocka groups, and "run this in a coroutine and wait".
 *
 * Every helper that can fail calls fail_msg() (the test case fails, the
 * next one runs) rather than returning an error, so that a test reads as
 * the list of things it checks.
 *
 * Includes cmocka.h with the headers it needs before it.
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>

#include "aio/aio.h"
#include "aio/coroutine.h"
#include "block/block.h"
#include "test-wait.h"

/* ---- scratch directory ---- */

/*
 * Makes a fresh directory from tmpl, a path ending in XXXXXX that mkdtemp
 * rewrites in place (so tmpl must be writable: a char array).  Pick
 * /var/tmp for tests that need a real disk (O_DIRECT, holes), /tmp
 * otherwise.  Returns tmpl, or NULL with errno set.
 */
char *tmpdir_make(char *tmpl);

/* Removes dir and everything in it, unless $KEEP is set (to look at what
 * a failed test left).  Returns 0 on success. */
int tmpdir_remove(const char *dir);

/* ---- shell ---- */

/* Whether qemu-img runs; whether both qemu-img and qemu-io do. */
bool qemu_img_installed(void);
bool qemu_tools_installed(void);

/* Runs a printf-formatted command with /bin/sh; returns system()'s
 * status (0: exit status 0). */
int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Runs a printf-formatted command; returns its whole standard output, ""
 * if none (caller frees). */
char *sh_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- strings and JSON ---- */

/* asprintf that fails the test instead of returning an error. */
char *strdup_printf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Parses JSON text the test wrote; a typo in it fails the test with
 * jansson's message. */
json_t *json_parse_ok(const char *text);

/* The strings of a JSON array joined with single spaces (caller frees):
 * how the tests compare a list of recorded events with one string. */
char *json_strings_join(json_t *array);

/* ---- block nodes ---- */

/* bdrv_open_blockdev() of JSON text. */
BlockNode *open_json(const char *text, Error **errp);

/* Opens printf-formatted JSON options; fails the test with the error if
 * the node does not open. */
BlockNode *open_ok(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Opens text expecting failure with exactly msg. */
void open_fails(const char *text, const char *msg);

/* blockdev-del of node name; fails the test with the error. */
void del_ok(const char *name);

/* A file-driver node of the main context, not opened yet: the driver's
 * state allocated, one reference.  The test runs the driver's co_open. */
BlockNode *file_node_new(bool read_only);

/* A root user of a node described as "test user" (the opaque is the
 * test's own); test_user_desc for a class with more callbacks. */
extern const BlockChildClass test_user_class;
char *test_user_desc(BlockChild *c);

/* A root user that stands for an export: the opaque is its name (a
 * string), described as "export '<name>'" in the messages about
 * permission conflicts that the tests compare. */
extern const BlockChildClass test_export_class;

/* ---- main loop and coroutines ---- */

/* A cmocka group setup: makes the main AioContext (aio_main_init). */
int main_loop_setup(void **state);

/* A group working in a scratch directory: setup makes it from tmpl
 * (tmpdir_make) and the main AioContext; teardown removes it and stops
 * the thread pool.  0 on success, -1 (the group fails) otherwise.
 * SCRATCH_GROUP_FIXTURES(tmpl) defines the pair as group_setup and
 * group_teardown for cmocka_run_group_tests. */
int scratch_group_setup(char *tmpl, void **state);
int scratch_group_teardown(const char *dir);

#define SCRATCH_GROUP_FIXTURES(tmpl)                                     \
    static int group_setup(void **state)                                \
    {                                                                   \
        return scratch_group_setup(tmpl, state);                        \
    }                                                                   \
    static int group_teardown(void **state)                             \
    {                                                                   \
        (void)state;                                                    \
        return scratch_group_teardown(tmpl);                            \
    }

/* The start of a main() whose tests need qemu-img: 77 (meson's "skipped",
 * after a SKIP line) without it, else makes the scratch directory from
 * tmpl and the main AioContext: 0, or 1 when either fails. */
int qemu_img_main_setup(char *tmpl);

/* Runs fn(opaque) in a coroutine of the main context and runs the main
 * loop until fn has returned. */
void co_run(CoroutineEntry *fn, void *opaque);

#endif
