/*
 * chardev-add, chardev-remove, query-chardev, query-chardev-backends:
 * the QMP side of qmp/chardev.c.
 */
#include "qmp/chardev.h"
#include "qmp/commands.h"

static const ArgSpec add_args[] = {
    { .name = "id", .type = ARG_STR },
    /* ChardevBackend, a union on "type": checked in chardev_add_qmp */
    { .name = "backend", .type = ARG_OBJECT, .open = true },
    { .name = NULL },
};

static const ArgSpec id_args[] = {
    { .name = "id", .type = ARG_STR },
    { .name = NULL },
};

static const ArgSpec no_args[] = { { .name = NULL } };

static bool qmp_chardev_add(json_t *args, json_t **ret, Error **errp)
{
    if (!chardev_add_qmp(args, errp)) {
        return false;
    }
    *ret = json_object();       /* ChardevReturn: "pty" only for a pty */
    return true;
}

static bool qmp_chardev_remove(json_t *args, json_t **ret, Error **errp)
{
    return chardev_remove(arg_str(args, "id", NULL), errp);
}

static bool qmp_query_chardev(json_t *args, json_t **ret, Error **errp)
{
    *ret = chardev_query();
    return true;
}

static bool qmp_query_chardev_backends(json_t *args, json_t **ret,
                                       Error **errp)
{
    *ret = chardev_query_backends();
    return true;
}

const QmpCommand qmp_chardev_commands[] = {
    { .name = "chardev-add", .fn = qmp_chardev_add, .args = add_args },
    { .name = "chardev-remove", .fn = qmp_chardev_remove, .args = id_args },
    { .name = "query-chardev", .fn = qmp_query_chardev, .args = no_args },
    { .name = "query-chardev-backends", .fn = qmp_query_chardev_backends,
      .args = no_args },
    { .name = NULL },
};
