/*
 * Logging through the callback the caller installs; silent without one.
 * rn_log() checks the level before formatting, so a disabled line is free.
 */
#include <config.h>

#include <stdio.h>

#include "internal.h"

static resnet_log_fn log_fn;
static void *log_ctx;
int rn_log_level;

void resnet_set_log(resnet_log_fn fn, void *ctx, int max_level) {
    log_fn = fn;
    log_ctx = ctx;
    rn_log_level = fn ? max_level : 0;
}

void rn_log_emit(int level, const char *fmt, ...) {
    char msg[512];
    va_list ap;

    if (!log_fn) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_fn(log_ctx, level, msg);
}
