/*
 * Error reporting: status codes, their descriptions, and the helper that
 * fills a caller's struct resnet_error.
 */
#include <config.h>

#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *resnet_strerror(int code) {
    switch (code) {
    case RESNET_OK:
        return "success";
    case RESNET_ENOMEM:
        return "out of memory";
    case RESNET_EIO:
        return "input/output error";
    case RESNET_EFORMAT:
        return "bad file format";
    case RESNET_ESHAPE:
        return "shape mismatch";
    case RESNET_EUNSUPPORTED:
        return "unsupported";
    case RESNET_EINVAL:
        return "invalid argument";
    default:
        return "unknown error";
    }
}

int rn_error(struct resnet_error *err, int code, int sys_errno,
             const char *fmt, ...) {
    va_list ap;

    if (!err) {
        return code;
    }
    err->code = code;
    err->sys_errno = sys_errno;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);

    // The system's reason goes last, after a colon.
    if (sys_errno) {
        size_t len = strlen(err->msg);
        snprintf(err->msg + len, sizeof err->msg - len, ": %s",
                 strerror(sys_errno));
    }
    return code;
}
