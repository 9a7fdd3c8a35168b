/*
 * qmp-registry.c - the table of QMP commands, and the protocol-level ones:
 * qmp_capabilities, query-version, query-commands, quit.
 */
#include <string.h>

#include "blockd/block-global-state.h"
#include "blockd/export.h"
#include "blockd/main-loop.h"
#include "blockd/monitor.h"
#include "blockd/job-common.h"
#include "monitor-internal.h"
#include "version.h"

#define MAX_COMMANDS 128

static const QmpCommand *commands[MAX_COMMANDS];
static int num_commands;

void qmp_register_commands(const QmpCommand *cmds)
{
    GLOBAL_STATE_CODE();
    for (; cmds->name; cmds++) {
        assert(num_commands < MAX_COMMANDS);
        assert(!qmp_find_command(cmds->name));
        commands[num_commands++] = cmds;
    }
}

const QmpCommand *qmp_find_command(const char *name)
{
    for (int i = 0; i < num_commands; i++) {
        if (strcmp(commands[i]->name, name) == 0) {
            return commands[i];
        }
    }
    return NULL;
}

void qmp_foreach_command(void (*fn)(const QmpCommand *cmd, void *opaque), void *opaque)
{
    for (int i = 0; i < num_commands; i++) {
        fn(commands[i], opaque);
    }
}

/*
 * The QEMU release whose qemu-storage-daemon interface blockd follows:
 * management tools decide what to use from it.
 */
#define COMPAT_QEMU_MAJOR 7
#define COMPAT_QEMU_MINOR 2
#define COMPAT_QEMU_MICRO 0

json_object *qmp_version_object(void)
{
    json_object *ver = json_object_new_object(), *qemu = json_object_new_object();

    json_object_object_add(qemu, "micro", json_object_new_int(COMPAT_QEMU_MICRO));
    json_object_object_add(qemu, "minor", json_object_new_int(COMPAT_QEMU_MINOR));
    json_object_object_add(qemu, "major", json_object_new_int(COMPAT_QEMU_MAJOR));
    json_object_object_add(ver, "qemu", qemu);
    json_object_object_add(ver, "package", json_object_new_string("blockd " BLOCKD_VERSION));
    return ver;
}

/* The one optional capability, "oob", is enabled by the monitor itself
 * (qmp.c) once this succeeds; the schema refuses any other. */
static json_object *qmp_capabilities(json_object *args, Error **errp)
{
    (void)args;
    (void)errp;
    return json_object_new_object();
}

static json_object *qmp_query_version(json_object *args, Error **errp)
{
    (void)args;
    (void)errp;
    return qmp_version_object();
}

static void add_command_name(const QmpCommand *cmd, void *opaque)
{
    json_object *info = json_object_new_object();

    json_object_object_add(info, "name", json_object_new_string(cmd->name));
    json_object_array_add(opaque, info);
}

static json_object *qmp_query_commands(json_object *args, Error **errp)
{
    json_object *list = json_object_new_array();

    (void)args;
    (void)errp;
    qmp_foreach_command(add_command_name, list);
    return list;
}

/* As qemu-storage-daemon, the exports go (BLOCK_EXPORT_DELETED each)
 * before the reply; the rest of the shutdown follows in main(). */
static json_object *qmp_quit(json_object *args, Error **errp)
{
    (void)args;
    (void)errp;
    blk_exp_close_all();
    qmp_quit_requested = true;
    return json_object_new_object();
}

static const char *const qmp_capability_names[] = { "oob", NULL };

static const SchemaField capability_elem = {
    .name = "capability", .type = SCHEMA_ENUM, .enum_values = qmp_capability_names,
};

static const SchemaField qmp_capabilities_fields[] = {
    { .name = "enable", .type = SCHEMA_LIST, .optional = true, .elem = &capability_elem },
    { 0 },
};

static const SchemaObject qmp_capabilities_args = {
    .name = "qmp_capabilities-arg", .fields = qmp_capabilities_fields,
};

static const QmpCommand protocol_commands[] = {
    { .name = "qmp_capabilities", .fn = qmp_capabilities, .args = &qmp_capabilities_args },
    { .name = "query-version", .ret = &qmp_ret_any, .fn = qmp_query_version, .args = NULL },
    { .name = "query-commands", .ret = &qmp_ret_any, .fn = qmp_query_commands, .args = NULL },
    { .name = "quit", .fn = qmp_quit, .args = NULL },
    { 0 },
};

void qmp_init_commands(void)
{
    static bool done;

    GLOBAL_STATE_CODE();
    if (done) {
        return;
    }
    done = true;
    qmp_register_commands(protocol_commands);
    qmp_register_commands(qmp_block_commands);
    qmp_register_commands(qmp_iothread_commands);
    qmp_register_commands(qmp_export_commands);
    qmp_register_commands(qmp_job_commands);
    qmp_register_commands(qmp_blockjob_commands);
    qmp_register_commands(qmp_create_commands);
    qmp_register_commands(qmp_chain_commands);
    qmp_register_commands(qmp_reopen_commands);
    qmp_register_commands(qmp_bitmap_commands);
    qmp_register_commands(qmp_introspect_commands);
    qmp_register_commands(qmp_chardev_commands);
    qmp_register_commands(qmp_qom_commands);
    /* Job events (from any thread) go to every monitor. */
    job_set_event_sink(qmp_event);
    bdrv_set_event_sink(qmp_event);
}
