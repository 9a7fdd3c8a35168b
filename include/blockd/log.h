/*
 * log.h - leveled logging to stderr.
 *
 * Common code: thread-safe, may be called from any thread.  Each line is
 * written with a single write(2) so lines from several threads never mix.
 * The level comes from log_set_level() or the BLOCKD_LOG environment
 * variable (error, warn, info, debug); the default is "warn", so the
 * daemon is quiet unless something is wrong.
 */
#ifndef BLOCKD_LOG_H
#define BLOCKD_LOG_H

#include <stdbool.h>
#include "blockd/compiler.h"

typedef enum LogLevel {
    LOG_LEVEL_ERROR,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
} LogLevel;

/* The name printed before every message (default "blockd"). */
void log_set_program_name(const char *name);
const char *log_get_program_name(void);
void log_set_level(LogLevel level);
/* Parse "error", "warn", "info" or "debug"; false if unknown. */
bool log_parse_level(const char *name, LogLevel *level);
bool log_enabled(LogLevel level);

void log_msg(LogLevel level, const char *fmt, ...) BD_PRINTF(2, 3);

/* error_report: what the user must see, in qemu's "<prog>: <msg>" form. */
#define error_report(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define warn_report(...)  log_msg(LOG_LEVEL_WARN, "warning: " __VA_ARGS__)
#define info_report(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define debug_report(...) \
    do { if (log_enabled(LOG_LEVEL_DEBUG)) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)

#endif /* BLOCKD_LOG_H */
