/*
 * Command-line options, compatible with qemu-storage-daemon 7.2.
 *
 * Options are applied strictly in command-line order, so a --blockdev may
 * only refer to nodes defined by earlier ones, and a --monitor only to an
 * earlier --chardev.  Parsing happens twice: a pre-pass that only checks the
 * syntax and handles what must be known before anything is created (-h, -V,
 * --daemonize, --pidfile), and the apply pass.
 *
 * To add an option: one row in option_table and, if it creates something,
 * one apply function.  Messages follow qsd: "blockjobd: --opt ARG: message".
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "block/block.h"
#include "nbd/nbd.h"
#include "object/object.h"
#include "daemon/daemon.h"
#include "qmp/qmp.h"
#include "util/argspec.h"
#include "util/error.h"

typedef bool OptionApplyFn(Daemon *d, const char *arg, Error **errp);

typedef struct DaemonOption {
    const char *name;          /* long name, without "--" */
    char short_name;           /* 'h', or 0 */
    bool has_arg;
    OptionApplyFn *apply;      /* NULL: handled by the pre-pass only */
} DaemonOption;

static OptionApplyFn apply_blockdev, apply_chardev, apply_monitor,
    apply_object, apply_nbd_server, apply_export;

static const DaemonOption option_table[] = {
    { "help",       'h', false, NULL },
    { "version",    'V', false, NULL },
    { "trace",      'T', true,  NULL },
    { "blockdev",   0,   true,  apply_blockdev },
    { "chardev",    0,   true,  apply_chardev },
    { "monitor",    0,   true,  apply_monitor },
    { "object",     0,   true,  apply_object },
    { "nbd-server", 0,   true,  apply_nbd_server },
    { "export",     0,   true,  apply_export },
    { "pidfile",    0,   true,  NULL },
    { "shutdown-max-seconds", 0, true, NULL },
    { "daemonize",  0,   false, NULL },
    { .name = NULL },
};

static void print_help(void)
{
    printf(
"Usage: " DAEMON_NAME " [options]\n"
"blockjobd storage daemon (qemu-storage-daemon compatible subset)\n"
"\n"
"  -h, --help             display this help and exit\n"
"  -T, --trace <options>  accepted for compatibility; tracing is not supported\n"
"  -V, --version          output version information and exit\n"
"\n"
"  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]\n"
"             [,cache.direct=on|off][,cache.no-flush=on|off]\n"
"             [,read-only=on|off][,auto-read-only=on|off]\n"
"             [,force-share=on|off][,detect-zeroes=on|off|unmap]\n"
"             [,driver specific parameters...]\n"
"                         configure a block backend (dotted keys or JSON)\n"
"\n"
"  --chardev socket,id=<id>,path=<path>,server=on,wait=off\n"
"  --chardev socket,id=<id>,host=<host>,port=<port>,server=on,wait=off\n"
"  --chardev socket,id=<id>,fd=<fd>,server=on,wait=off\n"
"  --chardev stdio,id=<id>\n"
"  --chardev null,id=<id>\n"
"                         configure a character device (a listening UNIX or\n"
"                         TCP socket, a passed listening socket, stdio)\n"
"\n"
"  --daemonize            daemonize the process, and have the parent exit\n"
"                         once startup is complete\n"
"\n"
"  --export [type=]nbd,id=<id>,node-name=<node-name>[,name=<export-name>]\n"
"           [,writable=on|off][,bitmap=<name>]\n"
"                         export the specified block node over NBD\n"
"                         (requires --nbd-server)\n"
"  --export [type=]fuse,id=<id>,node-name=<node-name>,mountpoint=<file>\n"
"           [,growable=on|off][,writable=on|off][,allow-other=on|off|auto]\n"
"                         export the specified block node over FUSE\n"
"\n"
"  --monitor [chardev=]name[,mode=control][,pretty[=on|off]]\n"
"            [,max-clients=<n>]\n"
"                         configure a QMP monitor\n"
"\n"
"  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>\n"
"               [,tls-creds=<id>][,tls-authz=<id>]\n"
"               [,max-connections=<n>][,handshake-max-seconds=<s>]\n"
"  --nbd-server addr.type=unix,addr.path=<path>\n"
"               [,tls-creds=<id>][,tls-authz=<id>]\n"
"               [,max-connections=<n>][,handshake-max-seconds=<s>]\n"
"                         start an NBD server for exporting block nodes\n"
"\n"
"  --object help          list object types that can be added\n"
"  --object iothread,id=<id>\n"
"                         create an I/O thread with its own event loop\n"
"  --object secret,id=<id>,data=<string>|file=<path>[,format=raw|base64]\n"
"           [,keyid=<secret>,iv=<base64>]\n"
"  --object tls-creds-x509,id=<id>,dir=<dir>,endpoint=server|client\n"
"           [,verify-peer=on|off][,passwordid=<secret>][,priority=<p>]\n"
"  --object tls-creds-psk,id=<id>,dir=<dir>,endpoint=server|client\n"
"           [,username=<user>][,priority=<p>]\n"
"  --object authz-simple,id=<id>,identity=<name>\n"
"                         secrets, TLS credentials (qemu's file layout)\n"
"                         and TLS client authorization\n"
"\n"
"  --pidfile <path>       write process ID to a file after startup\n"
"\n"
"  --shutdown-max-seconds <s>\n"
"                         after quit or a stop signal, exit with status 1\n"
"                         if the clean shutdown takes longer than this\n"
"                         (default 30; 0: wait as long as it takes)\n");
}

static void print_version(void)
{
    printf(DAEMON_NAME " version " BLOCKJOBD_VERSION "\n");
}

static const DaemonOption *find_long(const char *name, size_t len)
{
    for (const DaemonOption *o = option_table; o->name; o++) {
        if (strlen(o->name) == len && !strncmp(o->name, name, len)) {
            return o;
        }
    }
    return NULL;
}

static const DaemonOption *find_short(char c)
{
    for (const DaemonOption *o = option_table; o->name; o++) {
        if (o->short_name == c) {
            return o;
        }
    }
    return NULL;
}

/*
 * Reads the option at argv[*i] and its argument, advancing *i past both.
 * Prints getopt-style messages, as qsd does, and returns NULL on a
 * syntax error.  Accepts "--name arg", "--name=arg", "-X arg" and "-Xarg".
 */
static const DaemonOption *next_option(int argc, char **argv, int *i,
                                       const char **arg)
{
    const char *a = argv[*i];
    const DaemonOption *o;
    const char *inline_arg = NULL;

    *arg = NULL;
    if (a[0] == '-' && a[1] == '-' && a[2]) {
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);

        o = find_long(name, len);
        if (!o) {
            fprintf(stderr, DAEMON_NAME ": unrecognized option '%s'\n", a);
            return NULL;
        }
        if (eq) {
            if (!o->has_arg) {
                fprintf(stderr, DAEMON_NAME ": option '--%s' doesn't allow "
                        "an argument\n", o->name);
                return NULL;
            }
            inline_arg = eq + 1;
        }
        if (o->has_arg && !inline_arg && *i + 1 >= argc) {
            fprintf(stderr, DAEMON_NAME ": option '--%s' requires an "
                    "argument\n", o->name);
            return NULL;
        }
    } else if (a[0] == '-' && a[1] && a[1] != '-') {
        o = find_short(a[1]);
        if (!o) {
            fprintf(stderr, DAEMON_NAME ": invalid option -- '%c'\n", a[1]);
            return NULL;
        }
        if (a[2]) {
            if (!o->has_arg) {
                /* Grouped short flags ("-hV") are not worth supporting. */
                fprintf(stderr, DAEMON_NAME ": invalid option -- '%c'\n",
                        a[2]);
                return NULL;
            }
            inline_arg = a + 2;
        }
        if (o->has_arg && !inline_arg && *i + 1 >= argc) {
            fprintf(stderr, DAEMON_NAME ": option requires an argument -- "
                    "'%c'\n", a[1]);
            return NULL;
        }
    } else {
        fprintf(stderr, DAEMON_NAME ": %s: Unexpected argument\n", a);
        return NULL;
    }

    (*i)++;
    if (o->has_arg) {
        *arg = inline_arg ? inline_arg : argv[(*i)++];
    }
    return o;
}

OptionsResult options_prepass(Daemon *d, int argc, char **argv)
{
    int i = 1;

    while (i < argc) {
        const char *arg;
        const DaemonOption *o = next_option(argc, argv, &i, &arg);

        if (!o) {
            return OPTIONS_EXIT_FAIL;
        }
        if (!strcmp(o->name, "help")) {
            print_help();
            return OPTIONS_EXIT_OK;
        } else if (!strcmp(o->name, "version")) {
            print_version();
            return OPTIONS_EXIT_OK;
        } else if (!strcmp(o->name, "trace")) {
            fprintf(stderr, DAEMON_NAME ": -T %s: warning: tracing is not "
                    "supported, option ignored\n", arg);
        } else if (!strcmp(o->name, "object") && !strcmp(arg, "help")) {
            object_print_types(stdout);
            return OPTIONS_EXIT_OK;
        } else if (!strcmp(o->name, "daemonize")) {
            d->daemonize = true;
        } else if (!strcmp(o->name, "pidfile")) {
            d->pidfile_path = arg;
        } else if (!strcmp(o->name, "shutdown-max-seconds")) {
            char *end;
            errno = 0;
            unsigned long v = strtoul(arg, &end, 10);
            if (!*arg || *end || errno || arg[0] == '-' || v > UINT32_MAX) {
                fprintf(stderr, DAEMON_NAME ": --shutdown-max-seconds %s: "
                        "expects a number of seconds\n", arg);
                return OPTIONS_EXIT_FAIL;
            }
            d->shutdown_max_seconds = (unsigned)v;
        }
    }
    return OPTIONS_CONTINUE;
}

bool options_apply(Daemon *d, int argc, char **argv)
{
    int i = 1;

    while (i < argc) {
        const char *arg;
        const DaemonOption *o = next_option(argc, argv, &i, &arg);
        Error *err = NULL;

        if (!o) {
            return false;     /* cannot happen: the pre-pass checked argv */
        }
        if (!o->apply) {
            continue;
        }
        if (!o->apply(d, arg, &err)) {
            const char *msg = error_get_pretty(err);
            const char *hint = "expects an identifier";
            size_t len = strlen(msg), hlen = strlen(hint);

            fprintf(stderr, DAEMON_NAME ": --%s %s: %s\n", o->name, arg, msg);
            if (error_get_hint(err)) {
                fputs(error_get_hint(err), stderr);
            }
            if (len >= hlen && !strcmp(msg + len - hlen, hint)) {
                fprintf(stderr, "Identifiers consist of letters, digits, "
                        "'-', '.', '_', starting with a letter.\n");
            }
            error_free(err);
            return false;
        }
    }
    return true;
}

/* ---- the options that create things ---- */

/*
 * Runs QMP command `name` with arguments given as an option string, the way
 * qsd turns --nbd-server into nbd-server-start: dotted-key values are
 * strings, so they are converted to the command's declared types first
 * (qmp_dispatch then checks the typed object as it would over QMP).  JSON
 * arguments are passed unconverted.  Wiring another option to a command is
 * one row in option_table and a two-line apply function calling this.
 */
static bool apply_command(const char *name, const char *implied_key,
                          const char *arg, Error **errp)
{
    const QmpCommand *cmd = qmp_find_command(name);
    json_t *opts, *ret = NULL;

    if (!cmd) {
        error_setg(errp, "The command %s has not been found", name);
        return false;
    }
    opts = keyval_parse(arg, implied_key, errp);
    if (!opts) {
        return false;
    }
    if (arg[0] != '{' && cmd->args &&
        !argspec_check(opts, cmd->args, NULL, true, errp)) {
        goto out;
    }
    ret = qmp_dispatch(name, opts, errp);
out:
    json_decref(opts);
    json_decref(ret);
    return ret != NULL;
}

/*
 * --blockdev: JSON goes through blockdev-add exactly as over QMP (typed
 * values); dotted keys have string values that the block layer's argument
 * check converts to the declared types (coerce_strings).
 */
static bool apply_blockdev(Daemon *d, const char *arg, Error **errp)
{
    json_t *opts = keyval_parse(arg, "driver", errp);
    bool ok;

    if (!opts) {
        return false;
    }
    if (arg[0] == '{') {
        json_t *ret = qmp_dispatch("blockdev-add", opts, errp);
        ok = ret != NULL;
        json_decref(ret);
    } else {
        ok = bdrv_open_blockdev(opts, true, errp) != NULL;
    }
    json_decref(opts);
    return ok;
}

/* --chardev: QemuOpts style, the leading bare value is the backend. */
static bool apply_chardev(Daemon *d, const char *arg, Error **errp)
{
    json_t *opts = keyval_parse(arg, "backend", errp);
    bool ok;

    if (!opts) {
        return false;
    }
    ok = chardev_add(opts, d->daemonize, errp);
    json_decref(opts);
    return ok;
}

static bool apply_monitor(Daemon *d, const char *arg, Error **errp)
{
    json_t *opts = keyval_parse(arg, "chardev", errp);
    bool ok;

    if (!opts) {
        return false;
    }
    ok = monitor_add(opts, errp);
    json_decref(opts);
    return ok;
}

/* --object TYPE,id=ID,...: the same objects as object-add. */
static bool apply_object(Daemon *d, const char *arg, Error **errp)
{
    json_t *opts = keyval_parse(arg, "qom-type", errp);
    bool ok = opts && object_add(opts, arg[0] != '{', errp);

    json_decref(opts);
    return ok;
}

/* --nbd-server takes a flat socket address (addr.type=unix,addr.path=P),
 * not nbd-server-start's legacy one, so it has its own entry point. */
static bool apply_nbd_server(Daemon *d, const char *arg, Error **errp)
{
    json_t *opts = keyval_parse(arg, NULL, errp);
    bool ok = opts && nbd_server_start_cmdline(opts, arg[0] != '{', errp);

    json_decref(opts);
    return ok;
}

static bool apply_export(Daemon *d, const char *arg, Error **errp)
{
    return apply_command("block-export-add", "type", arg, errp);
}
