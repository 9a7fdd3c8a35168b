/*
 * error.h - error objects passed as "Error **errp".
 *
 * Common code.  A function that can fail takes a last argument
 * "Error **errp" and, on failure, sets *errp with error_setg() or
 * error_set() (if errp is not NULL) and returns a failure value.  The
 * caller either passes its own errp through, inspects the error, or
 * passes &error_abort / &error_fatal.  The class is what QMP reports as
 * "class"; the message is its "desc".
 */
#ifndef BLOCKD_ERROR_H
#define BLOCKD_ERROR_H

#include <stdbool.h>
#include "blockd/compiler.h"

typedef enum ErrorClass {
    ERROR_CLASS_GENERIC_ERROR,
    ERROR_CLASS_COMMAND_NOT_FOUND,
    ERROR_CLASS_DEVICE_NOT_ACTIVE,
    ERROR_CLASS_DEVICE_NOT_FOUND,
    ERROR_CLASS_KVM_MISSING_CAP,
    ERROR_CLASS__MAX,
} ErrorClass;

typedef struct Error Error;

/* Sentinels: an error set through these aborts / exits(1) after printing. */
extern Error *error_abort;
extern Error *error_fatal;

#define error_setg(errp, ...) \
    error_set_internal(errp, ERROR_CLASS_GENERIC_ERROR, 0, __FILE__, __LINE__, __VA_ARGS__)
#define error_set(errp, cls, ...) \
    error_set_internal(errp, cls, 0, __FILE__, __LINE__, __VA_ARGS__)
/* Appends ": <strerror(errno_val)>" to the message. */
#define error_setg_errno(errp, errno_val, ...) \
    error_set_internal(errp, ERROR_CLASS_GENERIC_ERROR, errno_val, __FILE__, __LINE__, __VA_ARGS__)

void error_set_internal(Error **errp, ErrorClass cls, int errno_val,
                        const char *file, int line, const char *fmt, ...)
    BD_PRINTF(6, 7);

/* Prefix the message of *errp (if any) with the formatted text. */
void error_prepend(Error **errp, const char *fmt, ...) BD_PRINTF(2, 3);

/* Add a hint that error_report_err() prints on a line of its own. */
void error_append_hint(Error **errp, const char *fmt, ...) BD_PRINTF(2, 3);

/*
 * Move @local into @dst_errp: if @dst_errp is NULL or already holds an
 * error, @local is freed instead (the first error wins).
 */
void error_propagate(Error **dst_errp, Error *local);

const char *error_get_pretty(const Error *err);
const char *error_get_hint(const Error *err);
ErrorClass error_get_class(const Error *err);
/* QMP's name for a class: "GenericError", "CommandNotFound", ... */
const char *error_class_name(ErrorClass cls);

Error *error_copy(const Error *err);
void error_free(Error *err);
/* Free *errp and set it to NULL (no-op if NULL). */
void error_clear(Error **errp);

/* Print "<prog>: <message>" (and the hint) to stderr, then free. */
void error_report_err(Error *err);

#endif /* BLOCKD_ERROR_H */
