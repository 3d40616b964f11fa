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

static bool qmp_qom_get(json_t *args, json_t **ret, Error **errp)
{
    *ret = object_qom_get(arg_str(args, "path", ""),
                          arg_str(args, "property", ""), errp);
    return *ret != NULL;
}

static bool qmp_qom_set(json_t *args, json_t **ret, Error **errp)
{
    return object_qom_set(arg_str(args, "path", ""),
                          arg_str(args, "property", ""),
                          json_object_get(args, "value"), errp);
}

static const ArgSpec qom_get_ret[] = {
    { .name = "", .type = ARG_ANY },
    { .name = NULL },
};

const QmpCommand qmp_object_commands[] = {
    /* The type's own properties are checked by object_add. */
    { .name = "object-add", .fn = qmp_object_add, .args = object_add_args,
      .args_open = true },
    { .name = "object-del", .fn = qmp_object_del, .args = object_del_args },
    /* qom-get/qom-set reach the properties objects have (throttle-group's
     * limits); other paths get qsd's errors. */
    { .name = "qom-get", .fn = qmp_qom_get, .args = qom_get_args,
      .ret = qom_get_ret },
    { .name = "qom-set", .fn = qmp_qom_set, .args = qom_set_args },
    { .name = NULL },
};
