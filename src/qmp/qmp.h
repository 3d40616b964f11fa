/*
 * The monitor: QMP over UNIX sockets, in the main loop.
 *
 * Command handlers are registered as tables.  Arguments are checked against
 * the command's ArgSpec before the handler runs, so a handler may read them
 * without re-validating.  A handler returns true and may set *ret (default
 * {}), or returns false with errp set; the monitor sends the reply.
 */
#ifndef BJ_QMP_QMP_H
#define BJ_QMP_QMP_H

#include <jansson.h>
#include <stdbool.h>

#include "util/argspec.h"
#include "util/error.h"

typedef bool QmpCommandFn(json_t *args, json_t **ret, Error **errp);

typedef struct QmpCommand {
    const char *name;             /* NULL terminates a table */
    QmpCommandFn *fn;
    const ArgSpec *args;          /* NULL: no arguments accepted */
    /* Arguments checked by the handler itself (unions such as
     * blockdev-add): args is then applied with open=true semantics. */
    bool args_open;
    /* The arguments are BlockdevOptions (blockdev-add): the block layer's
     * common members and each driver's, a union on "driver".  Only the
     * introspection schema reads this; checking is the handler's. */
    bool args_blockdev;
    /* What a successful reply's "return" holds, for query-qmp-schema: one
     * ArgSpec (its name unused); NULL when it is always {}. */
    const ArgSpec *ret;
    /* Schema features ("deprecated"), NULL-terminated; NULL for none. */
    const char *const *features;
} QmpCommand;

/* An event the daemon emits and the members of its "data" (the monitor
 * checks each emitted event against it; query-qmp-schema describes it). */
typedef struct QmpEvent {
    const char *name;             /* NULL terminates the table */
    const ArgSpec *data;
} QmpEvent;

/*
 * query-qmp-schema's document (SchemaInfo list, qemu's format with qemu's
 * numbered type names), built from the command tables, the argument specs
 * the dispatcher checks, the block drivers' options and qmp_events: what
 * is checked is what is described.  schema.c.
 */
json_t *qmp_schema_build(void);

extern const QmpEvent qmp_events[];   /* events.c */
const QmpEvent *qmp_find_event(const char *name);

/* The members of an ARG_OBJECT (open) that is BlockdevOptions, checked by
 * the handler (blockdev-reopen's elements): none here, so the dispatcher
 * checks only that it is an object; the schema describes the union. */
extern const ArgSpec qmp_blockdev_options_members[];

/* Return-value specs shared by tables: anything, and an array of anything. */
extern const ArgSpec qmp_ret_any[];
extern const ArgSpec qmp_ret_array[];
/* Feature lists shared by tables: {"unstable"} (x- commands). */
extern const char *const qmp_features_unstable[];

/*
 * What query-version and the greeting say: the qemu release whose QMP
 * interface blockjobd implements (qemu-storage-daemon 7.2, reported as
 * 7.2.0), and blockjobd's own name and version in "package".
 */
#define QMP_QEMU_MAJOR 7
#define QMP_QEMU_MINOR 2
#define QMP_QEMU_MICRO 0
json_t *qmp_version_info(void);

/* Tables live for the program's lifetime. */
void qmp_register_commands(const QmpCommand *table);
const QmpCommand *qmp_find_command(const char *name);
/* Calls fn for every registered command name (query-commands). */
void qmp_for_each_command(void (*fn)(const QmpCommand *cmd, void *opaque),
                          void *opaque);

/*
 * Runs one command as the monitor would: checks arguments, calls the
 * handler, and returns the reply body (the "return" value) or NULL with errp
 * set.  Used by the monitor and by the command line (--blockdev etc.).
 */
json_t *qmp_dispatch(const char *name, json_t *args, Error **errp);

/*
 * The two checks at the boundary, apart (the monitor and the fuzz target
 * tests/fuzz/fuzz-qmp-command.c use them): a request object's shape,
 * returning the command name (and whether it came as exec-oob), and a
 * command's arguments (an object) against its ArgSpec.
 */
const char *qmp_check_request(json_t *req, bool oob_enabled, bool *is_oob,
                              Error **errp);
bool qmp_check_args(const QmpCommand *cmd, json_t *args, Error **errp);

/* ---- character devices and monitors ---- */

/*
 * --chardev socket (server=on,wait=off; path=, host= and port=, or fd=),
 * stdio or null (options as parsed); daemonize: stdio is refused.
 */
bool chardev_add(json_t *opts, bool daemonize, Error **errp);
/* --monitor [chardev=]ID[,mode=control][,pretty=on|off] */
bool monitor_add(json_t *opts, Error **errp);
/*
 * While held, clients are greeted and their input waits, but no command
 * starts (the daemon holds commands during start-up, until every option is
 * applied, and during shutdown).  Releasing resumes parked clients.
 */
void monitor_hold_commands(bool hold);
/* Closes every client and listening socket, unlinks the socket paths. */
void monitor_cleanup_all(void);

/* Called when the `quit` command runs; set by the daemon. */
void qmp_set_quit_handler(void (*fn)(void *opaque), void *opaque);

/* Ends the drained sections x-debug-drain-begin left open (shutdown: the
 * requests they hold back must run before exports can close). */
void qmp_debug_drains_end_all(void);

/* Registers every command table of the daemon (control, block, ...). */
void qmp_register_all_commands(void);

#endif
