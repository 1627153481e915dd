#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MN_ERROR_CAP 1024

/* Per thread, so concurrent callers never see each other's messages. */
static _Thread_local char last_error[MN_ERROR_CAP];

const char *mn_last_error(void) { return last_error; }

void mn_clear_error(void) { last_error[0] = '\0'; }

mn_status mn_fail(mn_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

mn_status mn_fail_context(mn_status status, const char *fmt, ...) {
    char previous[MN_ERROR_CAP];
    memcpy(previous, last_error, sizeof previous);
    char prefix[MN_ERROR_CAP];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char combined[2 * MN_ERROR_CAP + 2];
    snprintf(combined, sizeof combined, "%s: %s", prefix, previous);
    /* keep the head: it names the file and the reason */
    snprintf(last_error, sizeof last_error, "%.*s", MN_ERROR_CAP - 1, combined);
    return status;
}

const char *mn_status_name(mn_status status) {
    switch (status) {
    case MN_OK: return "MN_OK";
    case MN_ERR_INVALID_ARG: return "MN_ERR_INVALID_ARG";
    case MN_ERR_CONFIG: return "MN_ERR_CONFIG";
    case MN_ERR_NOMEM: return "MN_ERR_NOMEM";
    case MN_ERR_IO: return "MN_ERR_IO";
    case MN_ERR_FORMAT: return "MN_ERR_FORMAT";
    case MN_ERR_MISMATCH: return "MN_ERR_MISMATCH";
    case MN_ERR_NUMERIC: return "MN_ERR_NUMERIC";
    case MN_ERR_DEVICE: return "MN_ERR_DEVICE";
    case MN_ERR_INTERRUPTED: return "MN_ERR_INTERRUPTED";
    }
    return "MN_ERR_UNKNOWN";
}
