/*
 * monitor.h - QMP monitors and commands.
 *
 * Half: global state.  Monitors read and write in the iohandler context,
 * which only the outermost main loop polls: a command never starts while
 * another one is waiting inside a nested event loop.
 */
#ifndef BLOCKD_MONITOR_H
#define BLOCKD_MONITOR_H

#include <json-c/json.h>
#include <stdbool.h>

#include "blockd/chardev.h"
#include "blockd/error.h"
#include "blockd/schema.h"

/* A QMP command: @args has been checked against @schema.  Returns the
 * "return" value (a new reference; NULL means {}), or NULL with @errp. */
typedef json_object *QmpCommandFn(json_object *args, Error **errp);

typedef struct QmpCommand {
    const char *name;
    QmpCommandFn *fn;
    const SchemaObject *args;     /* NULL: takes no arguments */
    const SchemaField *ret;       /* what "return" holds (query-qmp-schema);
                                     NULL: always {} */
    bool allow_oob;               /* may run with "exec-oob" */
} QmpCommand;

/* Register a table of commands (terminated by a NULL name). */
void qmp_register_commands(const QmpCommand *cmds);
const QmpCommand *qmp_find_command(const char *name);
/* Call @fn for every registered command (query-commands). */
void qmp_foreach_command(void (*fn)(const QmpCommand *cmd, void *opaque), void *opaque);

/* Serve QMP on @chr (--monitor chardev=ID[,pretty=on]). */
bool monitor_new_qmp(Chardev *chr, bool pretty, Error **errp);
void monitor_cleanup(void);

/* Send an event to every monitor that completed negotiation.  Takes @data
 * (NULL for none).  Any thread: events from other threads are sent by the
 * main loop. */
void qmp_event(const char *name, json_object *data);

/* {"qemu": {"major", "minor", "micro"}, "package"}: the greeting and
 * query-version.  A new object. */
json_object *qmp_version_object(void);

/* Register every built-in command (once). */
void qmp_init_commands(void);

/* Set by the "quit" command; the daemon's main loop watches it. */
extern bool qmp_quit_requested;

#endif /* BLOCKD_MONITOR_H */
