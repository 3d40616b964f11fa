/*
 * Command tables, one per area, registered by qmp_register_all_commands().
 * A new area adds its table here and in commands.c.
 */
#ifndef BJ_QMP_COMMANDS_H
#define BJ_QMP_COMMANDS_H

#include "qmp/qmp.h"

extern const QmpCommand qmp_control_commands[];  /* cmd-control.c */
extern const QmpCommand qmp_block_commands[];    /* cmd-block.c */
extern const QmpCommand qmp_job_commands[];      /* cmd-job.c */
extern const QmpCommand qmp_create_commands[];   /* cmd-create.c */
/* cmd-snapshot-internal.c */
extern const QmpCommand qmp_snapshot_internal_commands[];
extern const QmpCommand qmp_nbd_commands[];      /* cmd-nbd.c */
extern const QmpCommand qmp_bitmap_commands[];   /* cmd-bitmap.c */
extern const QmpCommand qmp_backup_commands[];   /* cmd-backup.c */
extern const QmpCommand qmp_transaction_commands[]; /* transaction.c */
extern const QmpCommand qmp_mirror_commands[];   /* cmd-mirror.c */
extern const QmpCommand qmp_object_commands[];   /* cmd-object.c */
extern const QmpCommand qmp_chardev_commands[];  /* cmd-chardev.c */

#endif
