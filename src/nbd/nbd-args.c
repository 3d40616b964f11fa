/*
 * Argument shapes of the NBD server, shared by QMP (nbd-server-start) and
 * the command line (--nbd-server), and the conversion of QMP's legacy
 * socket address ({"type": T, "data": {...}}) to the flat one the server
 * takes.
 */
#include <stdint.h>
#include <string.h>

#include "nbd/nbd.h"
#include "util/argspec.h"

static const char *const addr_types[] = { "inet", "unix", "vsock", "fd",
                                          NULL };

/* The members of each branch, written once: the legacy form nests them
 * under "data", the flat form puts them next to "type". */
#define ADDR_TYPE                                                           \
    { .name = "type", .type = ARG_ENUM, .enum_values = addr_types }
#define INET_MEMBERS                                                        \
    { .name = "host", .type = ARG_STR },                                    \
    { .name = "port", .type = ARG_STR },                                    \
    { .name = "numeric", .type = ARG_BOOL, .optional = true },              \
    { .name = "to", .type = ARG_UINT, .optional = true },                   \
    { .name = "ipv4", .type = ARG_BOOL, .optional = true },                 \
    { .name = "ipv6", .type = ARG_BOOL, .optional = true },                 \
    { .name = "keep-alive", .type = ARG_BOOL, .optional = true },           \
    { .name = "mptcp", .type = ARG_BOOL, .optional = true }
#define UNIX_MEMBERS                                                        \
    { .name = "path", .type = ARG_STR },                                    \
    { .name = "abstract", .type = ARG_BOOL, .optional = true },             \
    { .name = "tight", .type = ARG_BOOL, .optional = true }

static const ArgSpec inet_members[] = { INET_MEMBERS, { .name = NULL } };
static const ArgSpec unix_members[] = { UNIX_MEMBERS, { .name = NULL } };
static const ArgSpec flat_inet[] = {
    ADDR_TYPE, INET_MEMBERS, { .name = NULL }
};
static const ArgSpec flat_unix[] = {
    ADDR_TYPE, UNIX_MEMBERS, { .name = NULL }
};
static const ArgSpec addr_head[] = { ADDR_TYPE, { .name = NULL } };

static const ArgSpec legacy_addr[] = {
    ADDR_TYPE,
    { .name = "data", .type = ARG_OBJECT, .open = true },
    { .name = NULL },
};

/* What follows the address, in nbd-server-start and --nbd-server alike. */
#define SERVER_OPTIONS                                                      \
    { .name = "tls-creds", .type = ARG_STR, .optional = true },             \
    { .name = "tls-authz", .type = ARG_STR, .optional = true },             \
    { .name = "max-connections", .type = ARG_UINT, .optional = true },      \
    { .name = "handshake-max-seconds", .type = ARG_UINT, .optional = true }

const ArgSpec nbd_server_start_args[] = {
    { .name = "addr", .type = ARG_OBJECT, .members = legacy_addr },
    SERVER_OPTIONS,
    { .name = NULL },
};

static const ArgSpec cmdline_server[] = {
    { .name = "addr", .type = ARG_OBJECT, .members = addr_head, .open = true },
    SERVER_OPTIONS,
    { .name = NULL },
};

/* Checks the branch of a socket address; `path` names it in messages. */
static bool check_addr_branch(json_t *addr, const char *type,
                              const ArgSpec *inet, const ArgSpec *unx,
                              const char *path, bool coerce, Error **errp)
{
    if (!strcmp(type, "inet")) {
        return argspec_check(addr, inet, path, coerce, errp);
    }
    if (!strcmp(type, "unix")) {
        return argspec_check(addr, unx, path, coerce, errp);
    }
    error_setg(errp, "Socket address type '%s' is not supported", type);
    return false;
}

static bool start_checked(json_t *opts, json_t *flat, Error **errp)
{
    int64_t hs = arg_int(opts, "handshake-max-seconds",
                         NBD_DEFAULT_HANDSHAKE_MAX_SECONDS);

    /* qemu takes a uint32; so do we, with its words for a bigger one. */
    if (hs > UINT32_MAX) {
        error_setg(errp, "Parameter 'handshake-max-seconds' expects uint32_t");
        return false;
    }
    /* Debian's qemu 7.2 defaults to 100 connections. */
    return nbd_server_start(flat, arg_int(opts, "max-connections", 100), hs,
                            arg_str(opts, "tls-creds", NULL),
                            arg_str(opts, "tls-authz", NULL), errp);
}

bool nbd_server_start_legacy(json_t *args, Error **errp)
{
    json_t *addr = json_object_get(args, "addr");
    const char *type = arg_str(addr, "type", "");
    json_t *data = json_object_get(addr, "data");
    json_t *flat;
    bool ok;

    if (!check_addr_branch(data, type, inet_members, unix_members,
                           "addr.data", false, errp)) {
        return false;
    }
    flat = json_deep_copy(data);
    json_object_set_new(flat, "type", json_string(type));
    ok = start_checked(args, flat, errp);
    json_decref(flat);
    return ok;
}

bool nbd_server_start_cmdline(json_t *opts, bool coerce, Error **errp)
{
    json_t *addr;

    if (!argspec_check(opts, cmdline_server, NULL, coerce, errp)) {
        return false;
    }
    addr = json_object_get(opts, "addr");
    if (!check_addr_branch(addr, arg_str(addr, "type", ""), flat_inet,
                           flat_unix, "addr", coerce, errp)) {
        return false;
    }
    return start_checked(opts, addr, errp);
}
