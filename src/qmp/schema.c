/*
 * query-qmp-schema: the introspection document, built at run time from the
 * same tables the dispatcher checks (command ArgSpecs, the block layer's
 * common blockdev members and each driver's, the event table), so that it
 * cannot describe anything other than what is accepted.
 *
 * The format is qemu's SchemaInfo list as qemu 7.2 sends it to clients:
 * entries of meta-type command, event, object, enum, array, alternate and
 * builtin; every type other than a builtin is named by a number ("0" is
 * the empty object), an array of T is named "[T]"; an optional member has
 * "default": null.  Integer kinds all read "int", as qemu's do.  Equal
 * types share one entry.
 *
 * What the tables do not say is described as "any": an object checked
 * with no declared members, and return values declared as anything.
 * Unions the handler checks itself are described from the tables it
 * checks them with: blockdev-add's (the drivers' options) and a
 * transaction action's (the action types').
 */
#include <stdio.h>
#include <string.h>

#include "block/block.h"
#include "block/create.h"
#include "qmp/commands.h"
#include "qmp/transaction.h"
#include "util/alloc.h"

typedef struct Schema {
    json_t *entries;     /* the document */
    json_t *by_content;  /* compact dump of an unnamed entry -> its name */
    json_t *builtins;    /* builtin names already emitted -> true */
    int next;            /* next number */
    char *blockdev_options;  /* name of the BlockdevOptions union, or NULL */
} Schema;

static const char *type_of(Schema *s, const ArgSpec *a);

/* Adds entry (taken; no "name" yet) or finds its equal; returns its name,
 * valid while the schema lives. */
static const char *intern(Schema *s, json_t *entry)
{
    char *key = json_dumps(entry, JSON_COMPACT | JSON_SORT_KEYS);
    json_t *have = json_object_get(s->by_content, key);
    if (!have) {
        char name[24];
        snprintf(name, sizeof(name), "%d", s->next++);
        have = json_string(name);
        json_object_set_new(s->by_content, key, have);
        json_object_set_new(entry, "name", json_string(name));
        json_array_append(s->entries, entry);
    }
    free(key);
    json_decref(entry);
    return json_string_value(have);
}

static const char *builtin(Schema *s, const char *name, const char *json_type)
{
    if (!json_object_get(s->builtins, name)) {
        json_object_set_new(s->builtins, name, json_true());
        json_array_append_new(s->entries,
                              json_pack("{s:s, s:s, s:s}", "name", name,
                                        "json-type", json_type,
                                        "meta-type", "builtin"));
    }
    return name;
}

static const char *enum_type(Schema *s, const char *const *values)
{
    json_t *members = json_array();
    json_t *vals = json_array();
    for (const char *const *v = values; v && *v; v++) {
        json_array_append_new(members, json_pack("{s:s}", "name", *v));
        json_array_append_new(vals, json_string(*v));
    }
    return intern(s, json_pack("{s:o, s:s, s:o}", "members", members,
                               "meta-type", "enum", "values", vals));
}

/* The members array of an object from a NULL-terminated spec list. */
static json_t *members_of(Schema *s, const ArgSpec *spec)
{
    json_t *members = json_array();
    for (const ArgSpec *a = spec; a && a->name; a++) {
        json_t *m = json_pack("{s:s, s:s}", "name", a->name,
                              "type", type_of(s, a));
        if (a->optional) {
            json_object_set_new(m, "default", json_null());
        }
        json_array_append_new(members, m);
    }
    return members;
}

static const char *object_type(Schema *s, const ArgSpec *spec)
{
    return intern(s, json_pack("{s:o, s:s}", "members", members_of(s, spec),
                               "meta-type", "object"));
}

static const char *array_type(Schema *s, const char *elem)
{
    char *name = bj_asprintf("[%s]", elem);
    json_t *key = json_string(name);
    const char *ret;

    /* Arrays are named by their element, not numbered. */
    json_t *have = json_object_get(s->by_content, name);
    if (!have) {
        json_object_set_new(s->by_content, name, key);
        json_array_append_new(s->entries,
                              json_pack("{s:s, s:s, s:s}", "name", name,
                                        "element-type", elem,
                                        "meta-type", "array"));
        have = key;
    } else {
        json_decref(key);
    }
    ret = json_string_value(have);
    free(name);
    return ret;
}

/*
 * BlockdevOptions: the common members (with "driver" an enum of the
 * drivers users may name), a union on "driver" whose branches are each
 * driver's own options.  Drivers' options refer back to it (a child given
 * inline), so its name is taken before its members are built.
 */
static const char *blockdev_options(Schema *s)
{
    if (s->blockdev_options) {
        return s->blockdev_options;
    }
    s->blockdev_options = bj_asprintf("%d", s->next++);

    const char *names[64];
    size_t n = 0;
    for (const char *const *d = bdrv_blockdev_driver_names; *d; d++) {
        if (bdrv_find_driver(*d) && n < sizeof(names) / sizeof(names[0]) - 1) {
            names[n++] = *d;
        }
    }
    names[n] = NULL;

    json_t *members = json_array();
    for (const ArgSpec *a = bdrv_common_options(); a->name; a++) {
        const char *t = !strcmp(a->name, "driver") ? enum_type(s, names)
                                                   : type_of(s, a);
        json_t *m = json_pack("{s:s, s:s}", "name", a->name, "type", t);
        if (a->optional) {
            json_object_set_new(m, "default", json_null());
        }
        json_array_append_new(members, m);
    }
    json_t *variants = json_array();
    for (size_t i = 0; i < n; i++) {
        const BlockDriver *drv = bdrv_find_driver(names[i]);
        json_array_append_new(variants,
                              json_pack("{s:s, s:s}", "case", names[i],
                                        "type", object_type(s, drv->options)));
    }
    json_array_append_new(s->entries,
                          json_pack("{s:s, s:o, s:s, s:o, s:s}",
                                    "name", s->blockdev_options,
                                    "members", members, "tag", "driver",
                                    "variants", variants,
                                    "meta-type", "object"));
    return s->blockdev_options;
}

/*
 * TransactionAction: "type" and, per type, "data" holding that action's
 * arguments (the action-type table the transaction checks them against).
 * Types the enum names but that run nowhere have no branch.
 */
typedef struct ActionUnion {
    Schema *s;
    json_t *variants;
} ActionUnion;

static void add_action_variant(const char *name, const ArgSpec *args,
                               void *opaque)
{
    ActionUnion *u = opaque;
    json_t *data = json_pack("[{s:s, s:s}]", "name", "data", "type",
                             object_type(u->s, args));
    const char *wrapper = intern(u->s, json_pack("{s:o, s:s}", "members",
                                                 data, "meta-type",
                                                 "object"));
    json_array_append_new(u->variants, json_pack("{s:s, s:s}", "case", name,
                                                 "type", wrapper));
}

static const char *transaction_action_type(Schema *s)
{
    ActionUnion u = { .s = s, .variants = json_array() };
    json_t *members = json_pack("[{s:s, s:s}]", "name", "type", "type",
                                enum_type(s, transaction_action_args[0]
                                                 .enum_values));

    transaction_for_each_action_type(add_action_variant, &u);
    return intern(s, json_pack("{s:o, s:s, s:s, s:o}", "members", members,
                               "meta-type", "object", "tag", "type",
                               "variants", u.variants));
}

/* BlockdevRef (an inline definition or a node name), or null too. */
static const char *ref_type(Schema *s, bool or_null)
{
    json_t *members = json_pack("[{s:s}, {s:s}]", "type", blockdev_options(s),
                                "type", builtin(s, "str", "string"));
    if (or_null) {
        json_array_append_new(members, json_pack("{s:s}", "type",
                                                 builtin(s, "null", "null")));
    }
    return intern(s, json_pack("{s:o, s:s}", "members", members,
                               "meta-type", "alternate"));
}

const ArgSpec qmp_blockdev_options_members[] = {
    { .name = NULL },
};

static const char *type_of(Schema *s, const ArgSpec *a)
{
    switch (a->type) {
    case ARG_STR:
        return builtin(s, "str", "string");
    case ARG_INT:
    case ARG_UINT:
    case ARG_SIZE:
    case ARG_U64:
        return builtin(s, "int", "int");
    case ARG_BOOL:
        return builtin(s, "bool", "boolean");
    case ARG_ENUM:
        return enum_type(s, a->enum_values);
    case ARG_OBJECT:
        if (a->members == transaction_action_args) {
            return transaction_action_type(s);
        }
        if (a->members == qmp_blockdev_options_members) {
            return blockdev_options(s);
        }
        if (!a->members) {
            return builtin(s, "any", "value");
        }
        return object_type(s, a->members);
    case ARG_ARRAY:
        return array_type(s, a->members ? type_of(s, &a->members[0])
                                        : builtin(s, "any", "value"));
    case ARG_REF:
        return ref_type(s, false);
    case ARG_REF_OR_NULL:
        return ref_type(s, true);
    case ARG_ANY:
    default:
        return builtin(s, "any", "value");
    }
}

static void add_command(const QmpCommand *cmd, void *opaque)
{
    Schema *s = opaque;
    const char *arg_type = cmd->args_blockdev ? blockdev_options(s)
                                              : object_type(s, cmd->args);
    const char *ret_type = cmd->ret ? type_of(s, &cmd->ret[0])
                                    : object_type(s, NULL);
    json_t *e = json_pack("{s:s, s:s, s:s, s:s}", "name", cmd->name,
                          "ret-type", ret_type, "meta-type", "command",
                          "arg-type", arg_type);
    if (cmd->features) {
        json_t *f = json_array();
        for (const char *const *p = cmd->features; *p; p++) {
            json_array_append_new(f, json_string(*p));
        }
        json_object_set_new(e, "features", f);
    }
    json_array_append_new(s->entries, e);
}

json_t *qmp_schema_build(void)
{
    Schema s = {
        .entries = json_array(),
        .by_content = json_object(),
        .builtins = json_object(),
    };

    object_type(&s, NULL);   /* "0": the empty object, as qemu numbers it */
    qmp_for_each_command(add_command, &s);
    for (const QmpEvent *e = qmp_events; e->name; e++) {
        json_array_append_new(s.entries,
                              json_pack("{s:s, s:s, s:s}", "name", e->name,
                                        "meta-type", "event", "arg-type",
                                        object_type(&s, e->data)));
    }
    json_decref(s.by_content);
    json_decref(s.builtins);
    free(s.blockdev_options);
    return s.entries;
}
