/*
 * authz-simple objects (see authz.h).
 */
#include <string.h>

#include "object/authz.h"
#include "object/object-int.h"
#include "util/alloc.h"

typedef struct AuthzSimple {
    Object base;
    char *identity;
} AuthzSimple;

static const ArgSpec authz_simple_props[] = {
    { .name = "identity", .type = ARG_STR },
    { .name = NULL },
};

static Object *authz_simple_create(const char *id, json_t *props,
                                   Error **errp)
{
    AuthzSimple *a = bj_calloc(1, sizeof(*a));

    a->identity = bj_strdup(arg_str(props, "identity", ""));
    return &a->base;
}

static void authz_simple_destroy(Object *obj)
{
    AuthzSimple *a = container_of(obj, AuthzSimple, base);

    free(a->identity);
    free(a);
}

static json_t *authz_simple_prop_get(Object *obj, const char *name)
{
    AuthzSimple *a = container_of(obj, AuthzSimple, base);

    return strcmp(name, "identity") ? NULL : json_string(a->identity);
}

/* Takes effect for the next check (a new client's handshake). */
static int authz_simple_prop_set(Object *obj, const char *name, json_t *value,
                                 Error **errp)
{
    AuthzSimple *a = container_of(obj, AuthzSimple, base);

    if (strcmp(name, "identity")) {
        return 0;
    }
    if (!json_is_string(value)) {
        error_setg(errp, "Invalid parameter type for 'identity', "
                   "expected: string");
        return -1;
    }
    free(a->identity);
    a->identity = bj_strdup(json_string_value(value));
    return 1;
}

static const QomProp authz_simple_qom[] = {
    { "identity", "string" }, { NULL, NULL },
};

const ObjectType authz_simple_type = {
    .name = "authz-simple",
    .prop_get = authz_simple_prop_get,
    .prop_set = authz_simple_prop_set,
    .qom_parent = "authz",
    .qom_props = authz_simple_qom,
    .props = authz_simple_props,
    .create = authz_simple_create,
    .destroy = authz_simple_destroy,
};

bool authz_is_allowed(const char *id, const char *identity, Error **errp)
{
    Object *o = object_find_type(id, &authz_simple_type);
    AuthzSimple *a;

    if (!o) {
        error_setg(errp, "No authorization object with id '%s'", id);
        return false;
    }
    a = container_of(o, AuthzSimple, base);
    if (strcmp(a->identity, identity)) {
        error_setg(errp, "TLS x509 authz check for %s is denied", identity);
        return false;
    }
    return true;
}
