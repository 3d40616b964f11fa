/*
 * object-add / object-del: user-creatable objects (object/object.h), the
 * properties flat beside qom-type and id, as in qemu 7.2.
 */
#include "object/object.h"
#include "qmp/commands.h"

static bool qmp_object_add(json_t *args, json_t **ret, Error **errp)
{
    return object_add(args, false, errp);
}

static bool qmp_object_del(json_t *args, json_t **ret, Error **errp)
{
    return object_del(arg_str(args, "id", ""), errp);
}

const QmpCommand qmp_object_commands[] = {
    /* The type's own properties are checked by object_add. */
    { .name = "object-add", .fn = qmp_object_add, .args = object_add_args,
      .args_open = true },
    { .name = "object-del", .fn = qmp_object_del, .args = object_del_args },
    { .name = NULL },
};
