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

/*
 * The QOM classes besides our object types, as qsd 7.2 has them (the rest of qsd's
 * class tree, qio channels and such, has no counterpart here).
 */
typedef struct QomClass {
    const char *name;
    const char *parent;        /* NULL: a root */
    bool abstract;
    bool interface;
    bool creatable;            /* implements user-creatable */
    const QomProp *props;      /* added to the parent's; NULL: none */
} QomClass;

static const QomProp secret_common_props[] = {
    { "iv", "string" }, { "keyid", "string" }, { "loaded", "bool" },
    { "format", "QCryptoSecretFormat" }, { NULL, NULL },
};

static const QomProp tls_creds_props[] = {
    { "endpoint", "QCryptoTLSCredsEndpoint" }, { "dir", "string" },
    { "verify-peer", "bool" }, { "priority", "string" }, { NULL, NULL },
};

static const QomProp event_loop_base_props[] = {
    { "thread-pool-min", "int" }, { "aio-max-batch", "int" },
    { "thread-pool-max", "int" }, { NULL, NULL },
};

static const QomProp chardev_socket_props[] = {
    { "connected", "bool" }, { "addr", "SocketAddress" }, { NULL, NULL },
};

static const QomClass abstract_classes[] = {
    { .name = "object", .abstract = true },
    { .name = "interface", .abstract = true, .interface = true },
    { .name = "user-creatable", .parent = "interface", .abstract = true,
      .interface = true, .creatable = true },
    { .name = "container", .parent = "object" },
    { .name = "authz", .parent = "object", .abstract = true },
    { .name = "secret_common", .parent = "object", .abstract = true,
      .creatable = true, .props = secret_common_props },
    { .name = "tls-creds", .parent = "object", .abstract = true,
      .props = tls_creds_props },
    { .name = "event-loop-base", .parent = "object", .abstract = true,
      .creatable = true, .props = event_loop_base_props },
    /* The chardev classes of the backends qmp/chardev.c has (the monitor's
     * /chardevs children; qom-list of those is the chardev layer's). */
    { .name = "chardev", .parent = "object", .abstract = true },
    { .name = "chardev-fd", .parent = "chardev", .abstract = true },
    { .name = "chardev-socket", .parent = "chardev",
      .props = chardev_socket_props },
    { .name = "chardev-stdio", .parent = "chardev-fd" },
    { .name = "chardev-null", .parent = "chardev" },
};

#define N_ABSTRACT (sizeof(abstract_classes) / sizeof(abstract_classes[0]))

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

/* path names "/" (only slashes), not "/objects". */
static bool qom_is_root(const char *path)
{
    return path[strspn(path, "/")] == '\0';
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
    /* A container's child property reads as the child's path. */
    if (!v && container && !qom_is_root(path)) {
        Object *child = object_find(prop);
        if (child) {
            v = json_sprintf("/objects/%s", child->id);
        }
    } else if (!v && container && !strcmp(prop, "objects")) {
        v = json_string("/objects");
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
        /* A property the type shows but does not change after creation:
         * qsd's words for "loaded"; qsd also takes new secret and TLS
         * settings that the loaded object then ignores, we refuse those. */
        json_t *v = o && o->type->prop_get ? o->type->prop_get(o, prop)
                                           : NULL;
        if (v) {
            error_setg(errp, "Property '%s.%s' is not writable", type, prop);
            json_decref(v);
        } else {
            error_setg(errp, "Property '%s.%s' not found", type, prop);
        }
    }
    return r > 0;
}

/* The class called name (abstract_classes or types[]), or false. */
static bool class_find(const char *name, QomClass *out)
{
    for (size_t i = 0; i < N_ABSTRACT; i++) {
        if (!strcmp(abstract_classes[i].name, name)) {
            *out = abstract_classes[i];
            return true;
        }
    }
    for (unsigned i = 0; types[i]; i++) {
        if (!strcmp(types[i]->name, name)) {
            *out = (QomClass) {
                .name = types[i]->name,
                .parent = types[i]->qom_parent ? types[i]->qom_parent
                                               : "object",
                .creatable = true,
                .props = types[i]->qom_props,
            };
            return true;
        }
    }
    return false;
}

static bool class_implements(const QomClass *c, const char *what)
{
    QomClass k = *c;

    if (!strcmp(what, "user-creatable") && c->creatable) {
        return true;
    }
    for (int depth = 0; depth < 8; depth++) {
        if (!strcmp(k.name, what)) {
            return true;
        }
        if (!k.parent || !class_find(k.parent, &k)) {
            return false;
        }
    }
    return false;
}

static void type_info_add(json_t *list, const QomClass *c,
                          const char *implements, bool abstract)
{
    json_t *t;

    if ((c->abstract && !abstract) ||
        (implements && !class_implements(c, implements))) {
        return;
    }
    t = json_pack("{s:s}", "name", c->name);
    if (c->abstract) {
        json_object_set_new(t, "abstract", json_true());
    }
    if (c->parent) {
        json_object_set_new(t, "parent", json_string(c->parent));
    }
    json_array_append_new(list, t);
}

json_t *object_qom_list_types(const char *implements, bool abstract)
{
    json_t *list = json_array();
    QomClass c;

    for (size_t i = 0; i < N_ABSTRACT; i++) {
        type_info_add(list, &abstract_classes[i], implements, abstract);
    }
    for (unsigned i = 0; types[i]; i++) {
        class_find(types[i]->name, &c);
        type_info_add(list, &c, implements, abstract);
    }
    return list;
}

static json_t *prop_info(const char *name, const char *type)
{
    return json_pack("{s:s, s:s}", "name", name, "type", type);
}

/* The class's properties after its parents', "type" first (from object). */
static void class_props(const QomClass *c, json_t *list, int depth)
{
    QomClass parent;

    if (depth < 8 && c->parent && class_find(c->parent, &parent)) {
        class_props(&parent, list, depth + 1);
    } else {
        json_array_append_new(list, prop_info("type", "string"));
    }
    for (const QomProp *p = c->props; p && p->name; p++) {
        json_array_append_new(list, prop_info(p->name, p->type));
    }
}

json_t *object_qom_list_properties(const char *typename, Error **errp)
{
    QomClass c;
    json_t *list;

    if (!class_find(typename, &c)) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_FOUND,
                  "Class '%s' not found", typename);
        return NULL;
    }
    if (c.interface) {
        error_setg(errp, "Parameter 'typename' expects a QOM type");
        return NULL;
    }
    list = json_array();
    class_props(&c, list, 0);
    return list;
}

json_t *object_qom_list(const char *path, const char *const *extra_root,
                        Error **errp)
{
    bool container;
    Object *o;
    json_t *list;
    QomClass c;

    if (!*path) {
        error_setg(errp, "Path '' is ambiguous");
        return NULL;
    }
    o = qom_resolve(path, &container, errp);
    if (!o && !container) {
        return NULL;
    }
    if (o) {
        list = json_array();
        class_find(o->type->name, &c);
        class_props(&c, list, 0);
        return list;
    }
    list = json_array();
    json_array_append_new(list, prop_info("type", "string"));
    if (qom_is_root(path)) {
        json_array_append_new(list, prop_info("objects", "child<container>"));
        for (const char *const *e = extra_root; e && *e; e++) {
            json_array_append_new(list, prop_info(*e, "child<container>"));
        }
        return list;
    }
    list_for_each_entry(o, &objects, link) {
        char *t = bj_asprintf("child<%s>", o->type->name);
        json_array_append_new(list, prop_info(o->id, t));
        free(t);
    }
    return list;
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
