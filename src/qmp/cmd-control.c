/*
 * Monitor control commands: qmp_capabilities (its state lives in the
 * monitor, which intercepts it; the entry here gives it an argument spec
 * and a place in query-commands), query-version, query-commands,
 * query-qmp-schema (schema.c builds the document), quit.
 */

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

json_t *qmp_version_info(void)
{
    return json_pack("{s:{s:i, s:i, s:i}, s:s+}", "qemu",
                     "micro", QMP_QEMU_MICRO, "minor", QMP_QEMU_MINOR,
                     "major", QMP_QEMU_MAJOR, "package", "blockjobd ",
                     BLOCKJOBD_VERSION);
}

static bool qmp_query_version(json_t *args, json_t **ret, Error **errp)
{
    *ret = qmp_version_info();
    return true;
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

static bool qmp_query_qmp_schema(json_t *args, json_t **ret, Error **errp)
{
    *ret = qmp_schema_build();
    return true;
}

static const ArgSpec no_args[] = { { .name = NULL } };

const char *const qmp_features_unstable[] = { "unstable", NULL };

const ArgSpec qmp_ret_any[] = {
    { .name = "return", .type = ARG_ANY },
    { .name = NULL },
};
const ArgSpec qmp_ret_array[] = {
    { .name = "return", .type = ARG_ARRAY, .members = qmp_ret_any },
    { .name = NULL },
};

static const ArgSpec version_triple[] = {
    { .name = "major", .type = ARG_INT },
    { .name = "minor", .type = ARG_INT },
    { .name = "micro", .type = ARG_INT },
    { .name = NULL },
};
static const ArgSpec version_members[] = {
    { .name = "qemu", .type = ARG_OBJECT, .members = version_triple },
    { .name = "package", .type = ARG_STR },
    { .name = NULL },
};
static const ArgSpec version_ret[] = {
    { .name = "return", .type = ARG_OBJECT, .members = version_members },
    { .name = NULL },
};

static const ArgSpec command_info[] = {
    { .name = "name", .type = ARG_STR },
    { .name = NULL },
};
static const ArgSpec command_info_obj[] = {
    { .name = "return", .type = ARG_OBJECT, .members = command_info },
    { .name = NULL },
};
static const ArgSpec commands_ret[] = {
    { .name = "return", .type = ARG_ARRAY, .members = command_info_obj },
    { .name = NULL },
};

const QmpCommand qmp_control_commands[] = {
    { .name = "qmp_capabilities", .fn = qmp_qmp_capabilities,
      .args = qmp_capabilities_args },
    { .name = "query-version", .fn = qmp_query_version, .args = no_args,
      .ret = version_ret },
    { .name = "query-commands", .fn = qmp_query_commands, .args = no_args,
      .ret = commands_ret },
    { .name = "query-qmp-schema", .fn = qmp_query_qmp_schema,
      .args = no_args, .ret = qmp_ret_array },
    { .name = "quit", .fn = qmp_quit, .args = no_args },
    { .name = NULL },
};
