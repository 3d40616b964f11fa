/*
 * Monitor control commands: qmp_capabilities (its state lives in the
 * monitor, which intercepts it; the entry here gives it an argument spec
 * and a place in query-commands), query-version, query-commands, quit.
 */
#include <stdio.h>
#include <stdlib.h>

#include "aio/aio.h"
#include "config.h"
#include "qmp/commands.h"

static void (*quit_fn)(void *opaque);
static void *quit_opaque;

void qmp_set_quit_handler(void (*fn)(void *opaque), void *opaque)
{
    quit_fn = fn;
    quit_opaque = opaque;
}

static const char *const qmp_capability_values[] = { "oob", NULL };

static const ArgSpec capability_elem[] = {
    { .name = "enable", .type = ARG_ENUM,
      .enum_values = qmp_capability_values },
    { .name = NULL },
};

static const ArgSpec qmp_capabilities_args[] = {
    { .name = "enable", .type = ARG_ARRAY, .optional = true,
      .members = capability_elem },
    { .name = NULL },
};

static bool qmp_qmp_capabilities(json_t *args, json_t **ret, Error **errp)
{
    /* Only reached outside a monitor; there is nothing to negotiate. */
    return true;
}

static bool qmp_query_version(json_t *args, json_t **ret, Error **errp)
{
    int major = 0, minor = 0, micro = 0;
    if (sscanf(BLOCKJOBD_VERSION, "%d.%d.%d", &major, &minor, &micro) < 1) {
        major = 0;
    }
    *ret = json_pack("{s:{s:i, s:i, s:i}, s:s+}", "qemu", "micro", micro,
                     "minor", minor, "major", major, "package", "blockjobd ",
                     BLOCKJOBD_VERSION);
    return *ret != NULL;
}

static void add_name(const QmpCommand *cmd, void *opaque)
{
    json_array_append_new(opaque, json_pack("{s:s}", "name", cmd->name));
}

static bool qmp_query_commands(json_t *args, json_t **ret, Error **errp)
{
    *ret = json_array();
    qmp_for_each_command(add_name, *ret);
    return true;
}

static void quit_bh(void *opaque)
{
    if (quit_fn) {
        quit_fn(quit_opaque);
    }
}

static bool qmp_quit(json_t *args, json_t **ret, Error **errp)
{
    /* The reply must reach the client before shutdown starts: it is queued
     * when this returns, and the handler runs from the loop afterwards. */
    aio_bh_schedule_oneshot(aio_main_context(), quit_bh, NULL);
    return true;
}

static const ArgSpec no_args[] = { { .name = NULL } };

const QmpCommand qmp_control_commands[] = {
    { .name = "qmp_capabilities", .fn = qmp_qmp_capabilities,
      .args = qmp_capabilities_args },
    { .name = "query-version", .fn = qmp_query_version, .args = no_args },
    { .name = "query-commands", .fn = qmp_query_commands, .args = no_args },
    { .name = "quit", .fn = qmp_quit, .args = no_args },
    { .name = NULL },
};
