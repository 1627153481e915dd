/* Internal error reporting: set a thread-local message and return a status. */
#ifndef MN_ERROR_H
#define MN_ERROR_H

#include "mnemo.h"

/* Formats the message for mn_last_error() and returns status, so that
 *   return mn_fail(MN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
 * reports and propagates in one line. */
mn_status mn_fail(mn_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefixes the current message with more context ("loading x.h5: " + old message). */
mn_status mn_fail_context(mn_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mn_clear_error(void);

#define MN_TRY(expr)                          \
    do {                                      \
        mn_status mn_try_status_ = (expr);    \
        if (mn_try_status_ != MN_OK)          \
            return mn_try_status_;            \
    } while (0)

#endif
