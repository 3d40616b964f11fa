/*
 * The registry of user-creatable objects (see object.h).
 */
#include <string.h>

#include "object/object-int.h"
#include "util/alloc.h"

static const ObjectType *const types[] = {
    &authz_simple_type,
    &iothread_object_type,
    &secret_type,
    &tls_creds_psk_type,
    &tls_creds_x509_type,
    &throttle_group_type,
    NULL,
};

static ListHead objects = LIST_HEAD_INIT(objects);

/* Checked before the type is known: the rest waits for the type's own
 * list (qsd: "Parameter 'qom-type' is missing" comes first). */
const ArgSpec object_add_args[] = {
    { .name = "qom-type", .type = ARG_STR },
    { .name = "id", .type = ARG_STR },
    { .name = NULL },
};

const ArgSpec object_del_args[] = {
    { .name = "id", .type = ARG_STR },
    { .name = NULL },
};

static const ObjectType *find_type(const char *name)
{
    for (unsigned i = 0; types[i]; i++) {
        if (!strcmp(types[i]->name, name)) {
            return types[i];
        }
    }
    return NULL;
}

Object *object_find(const char *id)
{
    Object *o;

    list_for_each_entry(o, &objects, link) {
        if (!strcmp(o->id, id)) {
            return o;
        }
    }
    return NULL;
}

Object *object_find_type(const char *id, const ObjectType *t)
{
    Object *o = object_find(id);

    return o && o->type == t ? o : NULL;
}

const char *object_type_name(const Object *obj)
{
    return obj->type->name;
}

void object_use(Object *obj)
{
    obj->users++;
}

void object_unuse(Object *obj)
{
    obj->users--;
}

/* The type's property list with qom-type and id in front. */
static ArgSpec *full_spec(const ObjectType *t)
{
    size_t n = 0;
    ArgSpec *spec;

    while (t->props[n].name) {
        n++;
    }
    spec = bj_calloc(n + 3, sizeof(*spec));
    spec[0] = object_add_args[0];
    spec[1] = object_add_args[1];
    memcpy(spec + 2, t->props, n * sizeof(*spec));
    return spec;
}

bool object_add(json_t *args, bool coerce, Error **errp)
{
    json_t *qt = json_object_get(args, "qom-type");
    const ObjectType *t;
    const char *id;
    ArgSpec *spec;
    Object *obj;
    bool ok;

    if (!qt) {
        error_setg(errp, "Parameter 'qom-type' is missing");
        return false;
    }
    if (!json_is_string(qt)) {
        error_setg(errp, "Invalid parameter type for 'qom-type', "
                   "expected: string");
        return false;
    }
    t = find_type(json_string_value(qt));
    if (!t) {
        error_setg(errp, "Parameter 'qom-type' does not accept value '%s'",
                   json_string_value(qt));
        return false;
    }
    if (!json_object_get(args, "id")) {
        error_setg(errp, "Parameter 'id' is missing");
        return false;
    }
    spec = full_spec(t);
    ok = argspec_check(args, spec, NULL, coerce, errp);
    free(spec);
    if (!ok) {
        return false;
    }
    id = json_string_value(json_object_get(args, "id"));
    if (!id_wellformed(id)) {
        error_setg(errp, "Parameter 'id' expects an identifier");
        return false;
    }
    if (object_find(id)) {
        error_setg(errp, "attempt to add duplicate property '%s' to object "
                   "(type 'container')", id);
        return false;
    }
    obj = t->create(id, args, errp);
    if (!obj) {
        return false;
    }
    obj->type = t;
    obj->id = bj_strdup(id);
    obj->users = t->in_use_for_good ? 1 : 0;
    list_add_tail(&objects, &obj->link);
    return true;
}

static void object_free(Object *obj)
{
    list_del(&obj->link);
    free(obj->id);
    obj->type->destroy(obj);
}

bool object_del(const char *id, Error **errp)
{
    Object *obj = object_find(id);

    if (!obj) {
        error_setg(errp, "object '%s' not found", id);
        return false;
    }
    if (obj->users) {
        error_setg(errp, "object '%s' is in use, can not be deleted", id);
        return false;
    }
    object_free(obj);
    return true;
}

const ArgSpec qom_get_args[] = {
    { .name = "path", .type = ARG_STR },
    { .name = "property", .type = ARG_STR },
    { .name = NULL },
};

const ArgSpec qom_set_args[] = {
    { .name = "path", .type = ARG_STR },
    { .name = "property", .type = ARG_STR },
    { .name = "value", .type = ARG_ANY },
    { .name = NULL },
};

/*
 * A QOM path: "/objects/ID" (slashes may repeat), a partial path "ID", or
 * one of the two containers ("/", "/objects", partial "objects").  Returns
 * the object, or NULL with *container set for a container, or NULL and
 * qsd's DeviceNotFound.
 */
static Object *qom_resolve(const char *path, bool *container, Error **errp)
{
    const char *comp[3];
    size_t len[3];
    int n = 0;
    bool absolute = path[0] == '/';
    Object *o = NULL;

    *container = false;
    for (const char *p = path; *p && n <= 2;) {
        const char *e;

        while (*p == '/') {
            p++;
        }
        if (!*p) {
            break;
        }
        e = strchr(p, '/');
        e = e ? e : p + strlen(p);
        comp[n] = p;
        len[n++] = (size_t)(e - p);
        p = e;
    }
    if (absolute && n == 0) {
        *container = true;
        return NULL;
    }
    if (n >= 1 && n <= 2 && len[0] == 7 && !strncmp(comp[0], "objects", 7)) {
        if (n == 1) {
            *container = true;
            return NULL;
        }
        comp[0] = comp[1];
        len[0] = len[1];
        n = 1;
    } else if (absolute) {
        n = 0;
    }
    if (n == 1) {
        char *id = bj_strndup(comp[0], len[0]);
        o = object_find(id);
        free(id);
    }
    if (!o) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND, "Device '%s' not found",
                  path);
    }
    return o;
}

json_t *object_qom_get(const char *path, const char *prop, Error **errp)
{
    bool container;
    Object *o = qom_resolve(path, &container, errp);
    const char *type = container ? "container" : o ? o->type->name : NULL;
    json_t *v = NULL;

    if (!type) {
        return NULL;
    }
    if (!strcmp(prop, "type")) {
        return json_string(type);
    }
    if (o && o->type->prop_get) {
        v = o->type->prop_get(o, prop);
    }
    if (!v) {
        error_setg(errp, "Property '%s.%s' not found", type, prop);
    }
    return v;
}

bool object_qom_set(const char *path, const char *prop, json_t *value,
                    Error **errp)
{
    bool container;
    Object *o = qom_resolve(path, &container, errp);
    const char *type = container ? "container" : o ? o->type->name : NULL;
    int r = 0;

    if (!type) {
        return false;
    }
    if (!strcmp(prop, "type")) {
        error_setg(errp, "Property '%s.type' is not writable", type);
        return false;
    }
    if (o && o->type->prop_set) {
        r = o->type->prop_set(o, prop, value, errp);
    }
    if (r == 0) {
        error_setg(errp, "Property '%s.%s' not found", type, prop);
    }
    return r > 0;
}

void object_print_types(FILE *f)
{
    fprintf(f, "List of user creatable objects:\n");
    for (unsigned i = 0; types[i]; i++) {
        fprintf(f, "  %s\n", types[i]->name);
    }
}

void object_del_all(void)
{
    Object *o, *tmp;

    list_for_each_entry_safe(o, tmp, &objects, link) {
        object_free(o);
    }
}
