/*
 * qapi-events.c - the events blockd emits and the members of their
 * "data", for query-qmp-schema.  Common (constant data).
 *
 * An event is listed here exactly when some code emits it; the
 * functional test test_qmp_schema.py checks every event it sees against
 * this table.
 */
#include "monitor-internal.h"

static const char *const job_types[] = {
    "commit", "stream", "mirror", "backup", "create", "amend", NULL,
};
static const char *const job_statuses[] = {
    "undefined", "created", "running", "paused", "ready", "standby",
    "waiting", "pending", "aborting", "concluded", "null", NULL,
};
static const char *const io_operations[] = { "read", "write", NULL };
static const char *const error_actions[] = { "ignore", "report", "stop", NULL };

#define TYPE_FIELD { .name = "type", .type = SCHEMA_ENUM, .enum_values = job_types }

static const SchemaField export_deleted_fields[] = {
    { .name = "id", .type = SCHEMA_STR },
    { 0 },
};

static const SchemaField job_status_change_fields[] = {
    { .name = "id", .type = SCHEMA_STR },
    { .name = "status", .type = SCHEMA_ENUM, .enum_values = job_statuses },
    { 0 },
};

/* BLOCK_JOB_CANCELLED and BLOCK_JOB_READY. */
static const SchemaField block_job_info_fields[] = {
    TYPE_FIELD,
    { .name = "device", .type = SCHEMA_STR },
    { .name = "len", .type = SCHEMA_INT },
    { .name = "offset", .type = SCHEMA_INT },
    { .name = "speed", .type = SCHEMA_INT },
    { 0 },
};

static const SchemaField block_job_completed_fields[] = {
    TYPE_FIELD,
    { .name = "device", .type = SCHEMA_STR },
    { .name = "len", .type = SCHEMA_INT },
    { .name = "offset", .type = SCHEMA_INT },
    { .name = "speed", .type = SCHEMA_INT },
    { .name = "error", .type = SCHEMA_STR, .optional = true },
    { 0 },
};

static const SchemaField block_job_error_fields[] = {
    { .name = "device", .type = SCHEMA_STR },
    { .name = "operation", .type = SCHEMA_ENUM, .enum_values = io_operations },
    { .name = "action", .type = SCHEMA_ENUM, .enum_values = error_actions },
    { 0 },
};

static const SchemaField block_job_pending_fields[] = {
    TYPE_FIELD,
    { .name = "id", .type = SCHEMA_STR },
    { 0 },
};

static const SchemaField write_threshold_fields[] = {
    { .name = "node-name", .type = SCHEMA_STR },
    { .name = "amount-exceeded", .type = SCHEMA_INT },
    { .name = "write-threshold", .type = SCHEMA_INT },
    { 0 },
};

static const SchemaField image_corrupted_fields[] = {
    { .name = "device", .type = SCHEMA_STR },
    { .name = "node-name", .type = SCHEMA_STR, .optional = true },
    { .name = "msg", .type = SCHEMA_STR },
    { .name = "offset", .type = SCHEMA_INT, .optional = true },
    { .name = "size", .type = SCHEMA_INT, .optional = true },
    { .name = "fatal", .type = SCHEMA_BOOL },
    { 0 },
};

static const char *const quorum_op_types[] = { "read", "write", "flush", NULL };

static const SchemaField quorum_failure_fields[] = {
    { .name = "reference", .type = SCHEMA_STR },
    { .name = "sector-num", .type = SCHEMA_INT },
    { .name = "sectors-count", .type = SCHEMA_INT },
    { 0 },
};

static const SchemaField quorum_report_bad_fields[] = {
    { .name = "type", .type = SCHEMA_ENUM, .enum_values = quorum_op_types },
    { .name = "error", .type = SCHEMA_STR, .optional = true },
    { .name = "node-name", .type = SCHEMA_STR },
    { .name = "sector-num", .type = SCHEMA_INT },
    { .name = "sectors-count", .type = SCHEMA_INT },
    { 0 },
};

#define EVENT(ev, f) { .name = #ev, .data = &(const SchemaObject){ .name = #ev, .fields = f } }

const QmpEventInfo qmp_events[] = {
    EVENT(BLOCK_EXPORT_DELETED, export_deleted_fields),
    EVENT(JOB_STATUS_CHANGE, job_status_change_fields),
    EVENT(BLOCK_JOB_CANCELLED, block_job_info_fields),
    EVENT(BLOCK_JOB_COMPLETED, block_job_completed_fields),
    EVENT(BLOCK_JOB_ERROR, block_job_error_fields),
    EVENT(BLOCK_JOB_PENDING, block_job_pending_fields),
    EVENT(BLOCK_JOB_READY, block_job_info_fields),
    EVENT(BLOCK_WRITE_THRESHOLD, write_threshold_fields),
    EVENT(BLOCK_IMAGE_CORRUPTED, image_corrupted_fields),
    EVENT(QUORUM_FAILURE, quorum_failure_fields),
    EVENT(QUORUM_REPORT_BAD, quorum_report_bad_fields),
    { 0 },
};
