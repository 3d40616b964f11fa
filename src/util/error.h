/*
 * Control-path errors: a QMP error class plus a one-phrase human message.
 *
 * Convention (see shared/STYLE.md): a function that can fail takes
 * `Error **errp` as its last argument, returns bool/pointer/negative, and
 * never touches *errp on success.  errp may be NULL when the caller does not
 * care.  The message is what the monitor sends back, word for word, so it has
 * no trailing period and carries its own context.
 */
#ifndef BJ_UTIL_ERROR_H
#define BJ_UTIL_ERROR_H

#include <stdarg.h>
#include <stdbool.h>

typedef enum ErrorClass {
    ERROR_CLASS_GENERIC_ERROR = 0,
    ERROR_CLASS_COMMAND_NOT_FOUND,
    ERROR_CLASS_DEVICE_NOT_ACTIVE,
    ERROR_CLASS_DEVICE_NOT_FOUND,
    ERROR_CLASS_KVM_MISSING_CAP,
} ErrorClass;

typedef struct Error {
    ErrorClass cls;
    char *msg;
    char *hint;     /* NULL, or lines for a human reading stderr; never sent */
} Error;

/* "GenericError", "CommandNotFound", ... as QMP spells them. */
const char *error_class_name(ErrorClass cls);

void error_set(Error **errp, ErrorClass cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void error_setg(Error **errp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends ": strerror(errnum)" to the message. errnum is positive. */
void error_setg_errno(Error **errp, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the message of an already set error: "prefix: old". */
void error_prepend(Error **errp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Appends to the error's hint: text printed after the message, on lines of
 * its own, when the error ends the program (QEMU's error_append_hint).  QMP
 * replies carry the message only.  fmt ends with its own newline.
 */
void error_append_hint(Error **errp, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The hint, or NULL. */
const char *error_get_hint(const Error *err);

/* Moves src into *dst (or frees it when dst is NULL or already set). */
void error_propagate(Error **dst, Error *src);
const char *error_get_pretty(const Error *err);
void error_free(Error *err);
/* Frees *errp if set and resets it to NULL. */
void error_free_or_abort_clear(Error **errp);

/* Logs err at error level with an optional prefix, then frees it. */
void error_report_err(Error *err, const char *prefix);

#define CLEANUP_ERROR __attribute__((cleanup(error_cleanup_ptr)))
void error_cleanup_ptr(Error **errp);

#endif
