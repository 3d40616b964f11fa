/*
 * The transaction engine: the `transaction` command, and the commands that
 * are one of its actions run alone (blockdev-backup, the
 * block-dirty-bitmap-* commands).
 *
 * Each action type is a row of one table (transaction.c): its name, its
 * arguments, and prepare / commit / abort / clean.  A transaction checks
 * every action's arguments first, then prepares the actions in order; if
 * all succeed it commits them all, else it aborts the prepared ones in
 * reverse; last it cleans, in order, every action whose prepare ran and
 * left state.  With completion-mode grouped the jobs the actions create
 * share one JobTxn (one failing cancels the others); an action type that
 * cannot take part in that refuses it when its turn to prepare comes.
 * Main loop.
 */
#ifndef BJ_QMP_TRANSACTION_H
#define BJ_QMP_TRANSACTION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "job/job.h"
#include "util/argspec.h"
#include "util/error.h"

typedef struct TransactionActionType TransactionActionType;

/* What the plain command of an action type keeps drained around it. */
typedef enum TransactionDrain {
    TRANSACTION_DRAIN_NONE,       /* the action drains what it needs */
    TRANSACTION_DRAIN_IOTHREADS,  /* the nodes in iothreads */
    TRANSACTION_DRAIN_ALL,        /* every node, as a transaction does */
} TransactionDrain;

/* One action of a running transaction. */
typedef struct TransactionAction {
    const TransactionActionType *type;
    json_t *data;            /* its arguments, checked */
    /* The type's state (malloc'd): set by prepare (even a failing one,
     * when there is something to undo or release), read by commit, abort
     * and clean; the engine frees it after clean. */
    void *state;
    bool prepared;           /* prepare succeeded */
} TransactionAction;

struct TransactionActionType {
    const char *name;        /* "blockdev-backup" */
    const ArgSpec *args;
    /* What args cannot say, checked after them; path names data in the
     * messages ("actions[0].data", or "" for a plain command).  NULL:
     * nothing more. */
    bool (*check)(json_t *data, const char *path, Error **errp);
    /* False: refused under completion-mode grouped. */
    bool supports_grouped;
    /* Does (or checks it can do) the change, so that later actions see
     * it; txn is the grouped JobTxn or NULL. */
    bool (*prepare)(TransactionAction *a, JobTxn *txn, Error **errp);
    void (*commit)(TransactionAction *a);   /* NULL: nothing to do */
    void (*abort)(TransactionAction *a);    /* NULL: nothing to undo */
    /* Releases what state holds (not state itself); NULL: nothing. */
    void (*clean)(TransactionAction *a);
    /* The type's own data (the bitmap actions: which change). */
    const void *opaque;
    TransactionDrain alone_drain;   /* see transaction_run_alone */
};

/* The action types a transaction can run, each defined beside its
 * command. */
extern const TransactionActionType transaction_backup_action;
extern const TransactionActionType transaction_drive_backup_action;
extern const TransactionActionType transaction_snapshot_action;
extern const TransactionActionType transaction_snapshot_sync_action;
extern const TransactionActionType transaction_internal_snapshot_action;
extern const TransactionActionType transaction_bitmap_add_action;
extern const TransactionActionType transaction_bitmap_remove_action;
extern const TransactionActionType transaction_bitmap_clear_action;
extern const TransactionActionType transaction_bitmap_enable_action;
extern const TransactionActionType transaction_bitmap_disable_action;
extern const TransactionActionType transaction_bitmap_merge_action;

/* An element of transaction's "actions" (TransactionAction: "type" and
 * "data", checked against the type's args when the transaction runs), and
 * the action types in the order of the "type" enum, for the introspection
 * schema's union. */
extern const ArgSpec transaction_action_args[];
void transaction_for_each_action_type(
    void (*fn)(const char *name, const ArgSpec *args, void *opaque),
    void *opaque);

/*
 * Runs checked actions as one transaction with every node drained
 * throughout, as qemu's bdrv_drain_all_begin/end around it: no client
 * write lands between two actions (a bitmap added and a full backup
 * started see the same instant), and running jobs pause meanwhile
 * (qemu-storage-daemon 7.2 shows them paused and running again).
 */
bool transaction_run(TransactionAction *acts, size_t n, bool grouped,
                     Error **errp);
/* The plain command of an action type (blockdev-backup ...): the action
 * alone, with what type->alone_drain says drained around it. */
bool transaction_run_alone(const TransactionActionType *type, json_t *args,
                           Error **errp);

#endif
