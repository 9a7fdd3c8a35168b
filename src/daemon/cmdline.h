/*
 * cmdline.h - qemu-storage-daemon's command line.  Global state.
 */
#ifndef BLOCKD_CMDLINE_H
#define BLOCKD_CMDLINE_H

#include <stdbool.h>

typedef struct DaemonOptions {
    const char *pidfile;
    bool daemonize;
} DaemonOptions;

/*
 * Process the options in order, as qemu-storage-daemon does: each
 * --blockdev, --object, --chardev, --monitor takes effect when it is read.
 * Exits with status 1 and one line "<prog>: <option> <arg>: <message>" on
 * the first error; -h and -V print and exit 0.
 */
void cmdline_process(int argc, char **argv, DaemonOptions *opts);

#endif /* BLOCKD_CMDLINE_H */
