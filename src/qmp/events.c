/*
 * The events the daemon emits, each with the members of its "data" in
 * qemu 7.2's words.  The monitor checks every emitted event against this
 * table (a mismatch is logged: the table, the schema and the wire must not
 * drift apart), and query-qmp-schema describes events from it.  A new
 * event_emit() name gets its row here.
 */
#include <string.h>

#include "qmp/qmp.h"

/* JobType and JobStatus as qemu 7.2's schema lists them. */
static const char *const job_type_values[] = {
    "commit", "stream", "mirror", "backup", "create", "amend",
    "snapshot-load", "snapshot-save", "snapshot-delete", NULL,
};
static const char *const job_status_values[] = {
    "undefined", "created", "running", "paused", "ready", "standby",
    "waiting", "pending", "aborting", "concluded", "null", NULL,
};
static const char *const io_operation_values[] = { "read", "write", NULL };
static const char *const error_action_values[] = {
    "ignore", "report", "stop", NULL,
};

static const ArgSpec job_status_change[] = {
    { .name = "id", .type = ARG_STR },
    { .name = "status", .type = ARG_ENUM, .enum_values = job_status_values },
    { .name = NULL },
};

static const ArgSpec block_job_error[] = {
    { .name = "device", .type = ARG_STR },
    { .name = "operation", .type = ARG_ENUM,
      .enum_values = io_operation_values },
    { .name = "action", .type = ARG_ENUM, .enum_values = error_action_values },
    { .name = NULL },
};

static const ArgSpec block_job_completed[] = {
    { .name = "type", .type = ARG_ENUM, .enum_values = job_type_values },
    { .name = "device", .type = ARG_STR },
    { .name = "len", .type = ARG_INT },
    { .name = "offset", .type = ARG_INT },
    { .name = "speed", .type = ARG_INT },
    { .name = "error", .type = ARG_STR, .optional = true },
    { .name = NULL },
};

/* BLOCK_JOB_CANCELLED and BLOCK_JOB_READY. */
static const ArgSpec block_job_info[] = {
    { .name = "type", .type = ARG_ENUM, .enum_values = job_type_values },
    { .name = "device", .type = ARG_STR },
    { .name = "len", .type = ARG_INT },
    { .name = "offset", .type = ARG_INT },
    { .name = "speed", .type = ARG_INT },
    { .name = NULL },
};

static const ArgSpec block_job_pending[] = {
    { .name = "type", .type = ARG_ENUM, .enum_values = job_type_values },
    { .name = "id", .type = ARG_STR },
    { .name = NULL },
};

static const ArgSpec block_image_corrupted[] = {
    { .name = "device", .type = ARG_STR },
    { .name = "node-name", .type = ARG_STR, .optional = true },
    { .name = "msg", .type = ARG_STR },
    { .name = "offset", .type = ARG_INT, .optional = true },
    { .name = "size", .type = ARG_INT, .optional = true },
    { .name = "fatal", .type = ARG_BOOL },
    { .name = NULL },
};

static const ArgSpec block_export_deleted[] = {
    { .name = "id", .type = ARG_STR },
    { .name = NULL },
};

static const ArgSpec block_write_threshold[] = {
    { .name = "node-name", .type = ARG_STR },
    { .name = "amount-exceeded", .type = ARG_UINT },
    { .name = "write-threshold", .type = ARG_UINT },
    { .name = NULL },
};

const QmpEvent qmp_events[] = {
    { .name = "BLOCK_IMAGE_CORRUPTED", .data = block_image_corrupted },
    { .name = "BLOCK_JOB_COMPLETED", .data = block_job_completed },
    { .name = "BLOCK_JOB_CANCELLED", .data = block_job_info },
    { .name = "BLOCK_JOB_ERROR", .data = block_job_error },
    { .name = "BLOCK_JOB_READY", .data = block_job_info },
    { .name = "BLOCK_JOB_PENDING", .data = block_job_pending },
    { .name = "BLOCK_WRITE_THRESHOLD", .data = block_write_threshold },
    { .name = "JOB_STATUS_CHANGE", .data = job_status_change },
    { .name = "BLOCK_EXPORT_DELETED", .data = block_export_deleted },
    { .name = NULL },
};

const QmpEvent *qmp_find_event(const char *name)
{
    for (const QmpEvent *e = qmp_events; e->name; e++) {
        if (!strcmp(e->name, name)) {
            return e;
        }
    }
    return NULL;
}
