/*
 * The transaction engine and the `transaction` command (see
 * transaction.h).
 */
#include "qmp/transaction.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"
#include "qmp/commands.h"
#include "util/alloc.h"

/* ---- the action types ---- */

static bool abort_prepare(TransactionAction *a, JobTxn *txn, Error **errp)
{
    error_setg(errp, "Transaction aborted using Abort action");
    return false;
}

static const ArgSpec abort_args[] = {
    { .name = NULL },
};

static const TransactionActionType abort_action = {
    .name = "abort",
    .args = abort_args,
    /* It fails whatever the mode, with its own message. */
    .supports_grouped = true,
    .prepare = abort_prepare,
};

static const TransactionActionType *const action_types[] = {
    &abort_action,
    &transaction_backup_action,
    &transaction_drive_backup_action,
    &transaction_snapshot_action,
    &transaction_snapshot_sync_action,
    &transaction_internal_snapshot_action,
    &transaction_bitmap_add_action,
    &transaction_bitmap_remove_action,
    &transaction_bitmap_clear_action,
    &transaction_bitmap_enable_action,
    &transaction_bitmap_disable_action,
    &transaction_bitmap_merge_action,
    NULL,
};

static const TransactionActionType *find_action_type(const char *name)
{
    for (size_t i = 0; action_types[i]; i++) {
        if (!strcmp(action_types[i]->name, name)) {
            return action_types[i];
        }
    }
    return NULL;
}

/* ---- running ---- */

static bool action_prepare(TransactionAction *a, bool grouped, JobTxn *txn,
                           Error **errp)
{
    if (grouped && !a->type->supports_grouped) {
        error_setg(errp, "Action '%s' does not support Transaction "
                   "property completion-mode = grouped", a->type->name);
        return false;
    }
    return a->type->prepare(a, txn, errp);
}

static bool run_steps(TransactionAction *acts, size_t n, bool grouped,
                      Error **errp)
{
    JobTxn *txn = grouped ? job_txn_new() : NULL;
    size_t i, started = 0;
    bool ok = true;

    for (i = 0; i < n; i++) {
        started = i + 1;
        if (!action_prepare(&acts[i], grouped, txn, errp)) {
            ok = false;
            break;
        }
        acts[i].prepared = true;
    }
    for (i = 0; ok && i < n; i++) {
        if (acts[i].type->commit) {
            acts[i].type->commit(&acts[i]);
        }
    }
    for (i = started; !ok && i-- > 0;) {
        if (acts[i].prepared && acts[i].type->abort) {
            acts[i].type->abort(&acts[i]);
        }
    }
    for (i = 0; i < started; i++) {
        if (acts[i].state && acts[i].type->clean) {
            acts[i].type->clean(&acts[i]);
        }
        free(acts[i].state);
        acts[i].state = NULL;
    }
    job_txn_unref(txn);
    return ok;
}

bool transaction_run(TransactionAction *acts, size_t n, bool grouped,
                     Error **errp)
{
    BdrvDrainedSet all_nodes;
    bool ok;

    bdrv_drained_set_begin(&all_nodes, false);
    ok = run_steps(acts, n, grouped, errp);
    bdrv_drained_set_end(&all_nodes);
    return ok;
}

bool transaction_run_alone(const TransactionActionType *type, json_t *args,
                           Error **errp)
{
    TransactionAction a = { .type = type, .data = args };
    BdrvDrainedSet nodes;
    bool ok;

    if (type->alone_drain == TRANSACTION_DRAIN_NONE) {
        return run_steps(&a, 1, false, errp);
    }
    bdrv_drained_set_begin(&nodes,
                           type->alone_drain == TRANSACTION_DRAIN_IOTHREADS);
    ok = run_steps(&a, 1, false, errp);
    bdrv_drained_set_end(&nodes);
    return ok;
}

/* ---- the transaction command ---- */

/* What qemu 7.2 lists (the others are refused as not supported here). */
static const char *const action_names[] = {
    "abort", "blockdev-backup", "blockdev-snapshot",
    "block-dirty-bitmap-add", "block-dirty-bitmap-remove",
    "block-dirty-bitmap-clear", "block-dirty-bitmap-enable",
    "block-dirty-bitmap-disable", "block-dirty-bitmap-merge",
    "blockdev-snapshot-internal-sync", "blockdev-snapshot-sync",
    "drive-backup", NULL,
};

static const char *const completion_mode_names[] = {
    "individual", "grouped", NULL,
};

const ArgSpec transaction_action_args[] = {
    { .name = "type", .type = ARG_ENUM, .enum_values = action_names },
    { .name = "data", .type = ARG_OBJECT, .open = true },
    { .name = NULL },
};

void transaction_for_each_action_type(
    void (*fn)(const char *name, const ArgSpec *args, void *opaque),
    void *opaque)
{
    for (const char *const *n = action_names; *n; n++) {
        const TransactionActionType *t = find_action_type(*n);
        if (t) {
            fn(t->name, t->args, opaque);
        }
    }
}

/* ARG_ARRAY: members[0] describes each element. */
static const ArgSpec action_elem[] = {
    { .name = "action", .type = ARG_OBJECT,
      .members = transaction_action_args },
    { .name = NULL },
};

static const ArgSpec properties_args[] = {
    { .name = "completion-mode", .type = ARG_ENUM, .optional = true,
      .enum_values = completion_mode_names },
    { .name = NULL },
};

static const ArgSpec transaction_args[] = {
    { .name = "actions", .type = ARG_ARRAY, .members = action_elem },
    { .name = "properties", .type = ARG_OBJECT, .optional = true,
      .members = properties_args },
    { .name = NULL },
};

/* Finds the type of each action and checks its data, with the path. */
static bool check_actions(json_t *actions, TransactionAction *acts,
                          Error **errp)
{
    for (size_t i = 0; i < json_array_size(actions); i++) {
        json_t *act = json_array_get(actions, i);
        const char *type = arg_str(act, "type", "");
        TransactionAction *a = &acts[i];
        char path[64];

        a->type = find_action_type(type);
        a->data = json_object_get(act, "data");
        if (!a->type) {
            error_setg(errp, "Transaction action '%s' is not supported",
                       type);
            return false;
        }
        snprintf(path, sizeof(path), "actions[%zu].data", i);
        if (!argspec_check(a->data, a->type->args, path, false, errp) ||
            (a->type->check && !a->type->check(a->data, path, errp))) {
            return false;
        }
    }
    return true;
}

static bool qmp_transaction(json_t *args, json_t **ret, Error **errp)
{
    json_t *actions = json_object_get(args, "actions");
    json_t *props = json_object_get(args, "properties");
    bool grouped = props && arg_enum(props, "completion-mode",
                                     completion_mode_names, 0) == 1;
    size_t n = json_array_size(actions);
    TransactionAction *acts = bj_try_calloc(n ? n : 1, sizeof(*acts));
    bool ok;

    (void)ret;
    if (!acts) {
        error_setg(errp, "Out of memory");
        return false;
    }
    /* Every action's arguments are checked before anything runs. */
    ok = check_actions(actions, acts, errp) &&
         transaction_run(acts, n, grouped, errp);
    free(acts);
    return ok;
}

const QmpCommand qmp_transaction_commands[] = {
    { .name = "transaction", .fn = qmp_transaction,
      .args = transaction_args },
    { .name = NULL },
};
