/*
 * User-creatable objects (--object TYPE,id=ID,... and QMP object-add /
 * object-del), as qemu-storage-daemon 7.2 has them: one namespace of ids,
 * one table of types.  Types: tls-creds-x509, tls-creds-psk (tls-creds.h),
 * secret (secret.h), authz-simple (authz.h), throttle-group
 * (throttle-group.h), and iothread, which is handed to aio/iothread.c.
 *
 * Everything here runs in the main loop.  An object is created whole or
 * not at all (its files are read and checked at creation, as qemu does), so
 * a failed object-add changes nothing.  Users that keep an object take a use
 * (object_use); object-del refuses an object in use.  qsd 7.2 lets
 * object-del drop TLS credentials a running NBD server holds (it keeps its
 * own reference); we refuse instead, so what `query` shows is what serves.
 */
#ifndef BJ_OBJECT_OBJECT_H
#define BJ_OBJECT_OBJECT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "util/argspec.h"
#include "util/error.h"
#include "util/list.h"

typedef struct Object Object;

/* A QOM property as qom-list / qom-list-properties show it: its name and
 * qemu's type name for it ("string", "int", "bool", "QCryptoSecretFormat"). */
typedef struct QomProp {
    const char *name;
    const char *type;
} QomProp;

typedef struct ObjectType {
    const char *name;
    /* The properties besides qom-type and id. */
    const ArgSpec *props;
    /* Builds the object from checked properties; returns it with `base`
     * zeroed for the registry to fill, or NULL and *errp. */
    Object *(*create)(const char *id, json_t *props, Error **errp);
    void (*destroy)(Object *obj);
    /* Created in use, for good: object-del always refuses it. */
    bool in_use_for_good;
    /* qom-get of a property besides "type": a new reference, or NULL when
     * the type has no such property.  Unset: none. */
    json_t *(*prop_get)(Object *obj, const char *name);
    /* qom-set: 1 done, 0 no such property, -1 refused (*errp). */
    int (*prop_set)(Object *obj, const char *name, json_t *value,
                    Error **errp);
    /* The QOM class qsd 7.2 has for the type: its parent class (one of the
     * abstract classes object.c knows, or "object") and the properties the
     * type adds to its parent's, in qsd's order. */
    const char *qom_parent;
    const QomProp *qom_props;
} ObjectType;

struct Object {
    const ObjectType *type;
    char *id;
    unsigned users;            /* object_use count: object-del refuses > 0 */
    ListHead link;
};

/* object-add's arguments (qom-type, id, and the type's properties, flat). */
extern const ArgSpec object_add_args[];
extern const ArgSpec object_del_args[];

/* Checks and creates; coerce: values are strings (--object key=value). */
bool object_add(json_t *args, bool coerce, Error **errp);
bool object_del(const char *id, Error **errp);

/* The object called id, or NULL. */
Object *object_find(const char *id);
const char *object_type_name(const Object *obj);

/* A user keeps obj (main loop); object_unuse when it lets go. */
void object_use(Object *obj);
void object_unuse(Object *obj);

/* qom-get / qom-set: path is an object's id or /objects/ID; qsd's
 * "Device 'X' not found" (DeviceNotFound) and "Property 'T.P' not found". */
extern const ArgSpec qom_get_args[];
extern const ArgSpec qom_set_args[];
json_t *object_qom_get(const char *path, const char *prop, Error **errp);
bool object_qom_set(const char *path, const char *prop, json_t *value,
                    Error **errp);

/*
 * QOM introspection as qsd 7.2 answers it for the classes we have: the
 * user-creatable types, their abstract parents, "container".
 * object_qom_list: the properties at path ("/", "/objects", an object);
 * qsd's "Path '' is ambiguous" and DeviceNotFound.  extra_root: children
 * of "/" the caller adds (NULL-terminated names, each a container).
 * object_qom_list_types: ObjectTypeInfo list; implements NULL: all.
 * object_qom_list_properties: ObjectPropertyInfo list of a class; qsd's
 * "Class 'X' not found" (DeviceNotFound) and "Parameter 'typename'
 * expects a QOM type" for an interface.
 */
json_t *object_qom_list(const char *path, const char *const *extra_root,
                        Error **errp);
json_t *object_qom_list_types(const char *implements, bool abstract);
json_t *object_qom_list_properties(const char *typename, Error **errp);

/* --object help */
void object_print_types(FILE *f);
/* Shutdown: deletes every object (users gone by then). */
void object_del_all(void);

#endif
