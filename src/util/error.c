/*
 * error.c - error objects.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockd/error.h"
#include "blockd/log.h"

struct Error {
    ErrorClass cls;
    char *msg;
    char *hint;
    const char *file;
    int line;
};

Error *error_abort;
Error *error_fatal;

static const char *const class_names[ERROR_CLASS__MAX] = {
    [ERROR_CLASS_GENERIC_ERROR] = "GenericError",
    [ERROR_CLASS_COMMAND_NOT_FOUND] = "CommandNotFound",
    [ERROR_CLASS_DEVICE_NOT_ACTIVE] = "DeviceNotActive",
    [ERROR_CLASS_DEVICE_NOT_FOUND] = "DeviceNotFound",
    [ERROR_CLASS_KVM_MISSING_CAP] = "KVMMissingCap",
};

static char *xvasprintf(const char *fmt, va_list ap)
{
    char *s;
    if (vasprintf(&s, fmt, ap) < 0) {
        abort();
    }
    return s;
}

static void error_handle_sentinel(Error **errp, Error *err)
{
    if (errp == &error_abort) {
        fprintf(stderr, "Unexpected error at %s:%d:\n", err->file, err->line);
        error_report_err(err);
        abort();
    }
    if (errp == &error_fatal) {
        error_report_err(err);
        exit(1);
    }
}

void error_set_internal(Error **errp, ErrorClass cls, int errno_val,
                        const char *file, int line, const char *fmt, ...)
{
    Error *err;
    va_list ap;

    if (!errp) {
        return;
    }
    /* Setting an error twice is a programming error: the first would leak. */
    if (*errp) {
        fprintf(stderr, "error set twice at %s:%d\n", file, line);
        abort();
    }
    err = calloc(1, sizeof(*err));
    if (!err) {
        abort();
    }
    err->cls = cls;
    err->file = file;
    err->line = line;
    va_start(ap, fmt);
    err->msg = xvasprintf(fmt, ap);
    va_end(ap);
    if (errno_val) {
        char *full;
        if (asprintf(&full, "%s: %s", err->msg, strerror(errno_val)) < 0) {
            abort();
        }
        free(err->msg);
        err->msg = full;
    }
    error_handle_sentinel(errp, err);
    *errp = err;
}

void error_prepend(Error **errp, const char *fmt, ...)
{
    char *prefix, *full;
    va_list ap;

    if (!errp || !*errp || *errp == error_abort) {
        return;
    }
    va_start(ap, fmt);
    prefix = xvasprintf(fmt, ap);
    va_end(ap);
    if (asprintf(&full, "%s%s", prefix, (*errp)->msg) < 0) {
        abort();
    }
    free(prefix);
    free((*errp)->msg);
    (*errp)->msg = full;
}

void error_append_hint(Error **errp, const char *fmt, ...)
{
    char *text, *full;
    va_list ap;

    if (!errp || !*errp) {
        return;
    }
    va_start(ap, fmt);
    text = xvasprintf(fmt, ap);
    va_end(ap);
    if ((*errp)->hint) {
        if (asprintf(&full, "%s%s", (*errp)->hint, text) < 0) {
            abort();
        }
        free(text);
        free((*errp)->hint);
        (*errp)->hint = full;
    } else {
        (*errp)->hint = text;
    }
}

void error_propagate(Error **dst_errp, Error *local)
{
    if (!local) {
        return;
    }
    error_handle_sentinel(dst_errp, local);
    if (dst_errp && !*dst_errp) {
        *dst_errp = local;
    } else {
        error_free(local);
    }
}

const char *error_get_pretty(const Error *err)
{
    return err->msg;
}

const char *error_get_hint(const Error *err)
{
    return err->hint;
}

ErrorClass error_get_class(const Error *err)
{
    return err->cls;
}

const char *error_class_name(ErrorClass cls)
{
    if ((unsigned)cls >= ERROR_CLASS__MAX) {
        return "GenericError";
    }
    return class_names[cls];
}

Error *error_copy(const Error *err)
{
    Error *copy = calloc(1, sizeof(*copy));
    if (!copy) {
        abort();
    }
    *copy = *err;
    copy->msg = strdup(err->msg);
    copy->hint = err->hint ? strdup(err->hint) : NULL;
    if (!copy->msg || (err->hint && !copy->hint)) {
        abort();
    }
    return copy;
}

void error_free(Error *err)
{
    if (err) {
        free(err->msg);
        free(err->hint);
        free(err);
    }
}

void error_clear(Error **errp)
{
    if (errp && *errp) {
        error_free(*errp);
        *errp = NULL;
    }
}

void error_report_err(Error *err)
{
    if (!err) {
        return;
    }
    error_report("%s", err->msg);
    if (err->hint) {
        /* Hints may span lines; print them as they are. */
        size_t len = strlen(err->hint);
        fprintf(stderr, "%s%s", err->hint,
                len && err->hint[len - 1] == '\n' ? "" : "\n");
    }
    error_free(err);
}
