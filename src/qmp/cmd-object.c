/*
 * object-add / object-del: user-creatable objects (object/object.h), the
 * properties flat beside qom-type and id, as in qemu 7.2.
 */
#include <string.h>

#include "object/object.h"
#include "qmp/chardev.h"
#include "qmp/commands.h"
#include "util/alloc.h"

static bool qmp_object_add(json_t *args, json_t **ret, Error **errp)
{
    return object_add(args, false, errp);
}

static bool qmp_object_del(json_t *args, json_t **ret, Error **errp)
{
    return object_del(arg_str(args, "id", ""), errp);
}

static bool chardev_path(const char *path, char **id);

/* "/chardevs" and its children are the chardev layer's; "/" has a
 * "chardevs" child besides the objects'. */
static bool qmp_qom_get(json_t *args, json_t **ret, Error **errp)
{
    const char *path = arg_str(args, "path", "");
    const char *prop = arg_str(args, "property", "");
    bool found;
    char *id;

    if (*path && !path[strspn(path, "/")] && !strcmp(prop, "chardevs")) {
        *ret = json_string("/chardevs");
        return true;
    }
    if (!chardev_path(path, &id)) {
        *ret = object_qom_get(path, prop, errp);
        return *ret != NULL;
    }
    if (!id) {
        *ret = NULL;
        if (!strcmp(prop, "type")) {
            *ret = json_string("container");
        } else if (chardev_find(prop)) {
            *ret = json_sprintf("/chardevs/%s", prop);
        }
        if (!*ret) {
            error_setg(errp, "Property 'container.%s' not found", prop);
        }
        return *ret != NULL;
    }
    *ret = chardev_qom_get(id, prop, &found);
    if (!*ret && !found) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "Device '%s' not found",
                  path);
    } else if (!*ret) {
        json_t *t = chardev_qom_get(id, "type", &found);
        error_setg(errp, "Property '%s.%s' not found", json_string_value(t),
                   prop);
        json_decref(t);
    }
    free(id);
    return *ret != NULL;
}

static bool qmp_qom_set(json_t *args, json_t **ret, Error **errp)
{
    return object_qom_set(arg_str(args, "path", ""),
                          arg_str(args, "property", ""),
                          json_object_get(args, "value"), errp);
}

/*
 * "/chardevs" and "/chardevs/ID" (slashes may repeat; "chardevs" partial)
 * are the chardev layer's; sets *id to the chardev's (NULL for the
 * container).  False for any other path.
 */
static bool chardev_path(const char *path, char **id)
{
    const char *p = path + strspn(path, "/");
    size_t n;

    if (strncmp(p, "chardevs", 8) || (p[8] && p[8] != '/')) {
        return false;
    }
    p += 8;
    p += strspn(p, "/");
    if (!*p) {
        *id = NULL;
        return true;
    }
    n = strcspn(p, "/");
    if (p[n + strspn(p + n, "/")]) {
        return false;
    }
    *id = bj_strndup(p, n);
    return true;
}

static const char *const root_extra[] = { "chardevs", NULL };

static bool qmp_qom_list(json_t *args, json_t **ret, Error **errp)
{
    const char *path = arg_str(args, "path", "");
    char *id;

    if (chardev_path(path, &id)) {
        *ret = chardev_qom_list(id);
        free(id);
        if (!*ret) {
            error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND,
                      "Device '%s' not found", path);
        }
        return *ret != NULL;
    }
    *ret = object_qom_list(path, root_extra, errp);
    return *ret != NULL;
}

static bool qmp_qom_list_types(json_t *args, json_t **ret, Error **errp)
{
    *ret = object_qom_list_types(arg_str(args, "implements", NULL),
                                 arg_bool(args, "abstract", false));
    return true;
}

static bool qmp_qom_list_properties(json_t *args, json_t **ret,
                                    Error **errp)
{
    *ret = object_qom_list_properties(arg_str(args, "typename", ""), errp);
    return *ret != NULL;
}

static const ArgSpec qom_list_args[] = {
    { .name = "path", .type = ARG_STR },
    { .name = NULL },
};

static const ArgSpec qom_list_types_args[] = {
    { .name = "implements", .type = ARG_STR, .optional = true },
    { .name = "abstract", .type = ARG_BOOL, .optional = true },
    { .name = NULL },
};

static const ArgSpec qom_list_properties_args[] = {
    { .name = "typename", .type = ARG_STR },
    { .name = NULL },
};

/* ObjectPropertyInfo and ObjectTypeInfo, for query-qmp-schema. */
static const ArgSpec prop_info_members[] = {
    { .name = "name", .type = ARG_STR },
    { .name = "type", .type = ARG_STR },
    { .name = "description", .type = ARG_STR, .optional = true },
    { .name = "default-value", .type = ARG_ANY, .optional = true },
    { .name = NULL },
};

static const ArgSpec prop_list_ret[] = {
    { .name = "", .type = ARG_ARRAY, .members = (const ArgSpec[]) {
        { .name = "", .type = ARG_OBJECT, .members = prop_info_members },
        { .name = NULL } } },
    { .name = NULL },
};

static const ArgSpec type_info_members[] = {
    { .name = "name", .type = ARG_STR },
    { .name = "abstract", .type = ARG_BOOL, .optional = true },
    { .name = "parent", .type = ARG_STR, .optional = true },
    { .name = NULL },
};

static const ArgSpec type_list_ret[] = {
    { .name = "", .type = ARG_ARRAY, .members = (const ArgSpec[]) {
        { .name = "", .type = ARG_OBJECT, .members = type_info_members },
        { .name = NULL } } },
    { .name = NULL },
};

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
    { .name = "qom-list", .fn = qmp_qom_list, .args = qom_list_args,
      .ret = prop_list_ret },
    { .name = "qom-list-types", .fn = qmp_qom_list_types,
      .args = qom_list_types_args, .ret = type_list_ret },
    { .name = "qom-list-properties", .fn = qmp_qom_list_properties,
      .args = qom_list_properties_args, .ret = prop_list_ret },
    { .name = NULL },
};
