#include "util/error.h"
#include "util/alloc.h"
#include "util/log.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const class_names[] = {
    [ERROR_CLASS_GENERIC_ERROR] = "GenericError",
    [ERROR_CLASS_COMMAND_NOT_FOUND] = "CommandNotFound",
    [ERROR_CLASS_DEVICE_NOT_ACTIVE] = "DeviceNotActive",
    [ERROR_CLASS_DEVICE_NOT_FOUND] = "DeviceNotFound",
    [ERROR_CLASS_KVM_MISSING_CAP] = "KVMMissingCap",
};

const char *error_class_name(ErrorClass cls)
{
    assert(cls < sizeof(class_names) / sizeof(class_names[0]));
    return class_names[cls];
}

static void error_setv(Error **errp, ErrorClass cls, const char *fmt,
                       va_list ap, const char *suffix)
{
    if (!errp) {
        return;
    }
    /* Setting an error twice loses the first: a programming error. */
    assert(*errp == NULL);
    Error *err = bj_calloc(1, sizeof(*err));
    err->cls = cls;
    char *msg = bj_vasprintf(fmt, ap);
    if (suffix) {
        char *full = bj_asprintf("%s: %s", msg, suffix);
        free(msg);
        msg = full;
    }
    err->msg = msg;
    *errp = err;
}

void error_set(Error **errp, ErrorClass cls, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_setv(errp, cls, fmt, ap, NULL);
    va_end(ap);
}

void error_setg(Error **errp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_setv(errp, ERROR_CLASS_GENERIC_ERROR, fmt, ap, NULL);
    va_end(ap);
}

void error_setg_errno(Error **errp, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_setv(errp, ERROR_CLASS_GENERIC_ERROR, fmt, ap, strerror(errnum));
    va_end(ap);
}

void error_prepend(Error **errp, const char *fmt, ...)
{
    if (!errp || !*errp) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    char *prefix = bj_vasprintf(fmt, ap);
    va_end(ap);
    char *full = bj_asprintf("%s: %s", prefix, (*errp)->msg);
    free(prefix);
    free((*errp)->msg);
    (*errp)->msg = full;
}

void error_propagate(Error **dst, Error *src)
{
    if (!src) {
        return;
    }
    if (dst && !*dst) {
        *dst = src;
    } else {
        error_free(src);
    }
}

const char *error_get_pretty(const Error *err)
{
    return err->msg;
}

void error_free(Error *err)
{
    if (err) {
        free(err->msg);
        free(err);
    }
}

void error_free_or_abort_clear(Error **errp)
{
    if (errp && *errp) {
        error_free(*errp);
        *errp = NULL;
    }
}

void error_report_err(Error *err, const char *prefix)
{
    if (!err) {
        return;
    }
    if (prefix) {
        log_error("%s: %s", prefix, err->msg);
    } else {
        log_error("%s", err->msg);
    }
    error_free(err);
}

void error_cleanup_ptr(Error **errp)
{
    error_free(*errp);
}
