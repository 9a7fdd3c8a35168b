/*
 * log.c - leveled logging to stderr.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "blockd/atomic.h"
#include "blockd/log.h"

static const char *program_name = "blockd";
static int log_level = -1;   /* -1: not yet read from BLOCKD_LOG */

void log_set_program_name(const char *name)
{
    program_name = name;
}

const char *log_get_program_name(void)
{
    return program_name;
}

void log_set_level(LogLevel level)
{
    atomic_set(&log_level, (int)level);
}

bool log_parse_level(const char *name, LogLevel *level)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };

    for (unsigned i = 0; i < ARRAY_SIZE(names); i++) {
        if (strcasecmp(name, names[i]) == 0) {
            *level = (LogLevel)i;
            return true;
        }
    }
    return false;
}

static int current_level(void)
{
    int level = atomic_read(&log_level);
    if (level < 0) {
        const char *env = getenv("BLOCKD_LOG");
        LogLevel parsed = LOG_LEVEL_WARN;
        if (env && !log_parse_level(env, &parsed)) {
            parsed = LOG_LEVEL_WARN;
        }
        level = (int)parsed;
        atomic_set(&log_level, level);
    }
    return level;
}

bool log_enabled(LogLevel level)
{
    return (int)level <= current_level();
}

void log_msg(LogLevel level, const char *fmt, ...)
{
    char buf[4096];
    int len;
    va_list ap;

    if (!log_enabled(level)) {
        return;
    }
    len = snprintf(buf, sizeof(buf), "%s: ", program_name);
    va_start(ap, fmt);
    len += vsnprintf(buf + len, sizeof(buf) - len, fmt, ap);
    va_end(ap);
    if (len >= (int)sizeof(buf) - 1) {
        len = sizeof(buf) - 2;
    }
    buf[len++] = '\n';
    /* One write per line, so lines from several threads do not interleave. */
    if (write(STDERR_FILENO, buf, len) < 0) {
        /* Nowhere left to report it. */
    }
}
