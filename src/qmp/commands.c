/*
 * The command table registry: every area registers its table once at
 * start-up; lookups walk the tables (a few dozen names, no need for a hash).
 */
#include <assert.h>
#include <string.h>

#include "qmp/commands.h"

#define MAX_TABLES 16

/* Registered tables, in registration order (main thread, start-up). */
static const QmpCommand *tables[MAX_TABLES];
static int ntables;

void qmp_register_commands(const QmpCommand *table)
{
    for (int i = 0; i < ntables; i++) {
        if (tables[i] == table) {
            return;   /* registering twice is harmless */
        }
    }
    assert(ntables < MAX_TABLES);
    tables[ntables++] = table;
}

const QmpCommand *qmp_find_command(const char *name)
{
    for (int i = 0; i < ntables; i++) {
        for (const QmpCommand *c = tables[i]; c->name; c++) {
            if (!strcmp(c->name, name)) {
                return c;
            }
        }
    }
    return NULL;
}

void qmp_for_each_command(void (*fn)(const QmpCommand *cmd, void *opaque),
                          void *opaque)
{
    for (int i = 0; i < ntables; i++) {
        for (const QmpCommand *c = tables[i]; c->name; c++) {
            fn(c, opaque);
        }
    }
}

void qmp_register_all_commands(void)
{
    qmp_register_commands(qmp_control_commands);
    qmp_register_commands(qmp_block_commands);
    qmp_register_commands(qmp_job_commands);
    qmp_register_commands(qmp_nbd_commands);
    qmp_register_commands(qmp_bitmap_commands);
    qmp_register_commands(qmp_backup_commands);
    qmp_register_commands(qmp_transaction_commands);
    qmp_register_commands(qmp_mirror_commands);
    qmp_register_commands(qmp_create_commands);
    qmp_register_commands(qmp_snapshot_internal_commands);
    qmp_register_commands(qmp_object_commands);
    qmp_register_commands(qmp_chardev_commands);
}
