/*
 * Messages in the tool's one format ("resnet: ..." on stderr), the
 * verbosity flags, and finding model files along the search path.
 */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

int verbosity = 1;

static void vreport(const char *prefix, const char *fmt, va_list ap) {
    fputs(prefix, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void error(const char *fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    vreport("resnet: ", fmt, ap);
    va_end(ap);
}

void warning(const char *fmt, ...) {
    va_list ap;

    if (verbosity < 1) {
        return;
    }
    va_start(ap, fmt);
    vreport("resnet: warning: ", fmt, ap);
    va_end(ap);
}

void error_lib(int code, const struct resnet_error *err) {
    if (err && err->msg[0]) {
        error("%s", err->msg);
    } else {
        error("%s", resnet_strerror(code));
    }
}

int usage_error(const char *usage, const char *fmt, ...) {
    va_list ap;
    const char *end = strstr(usage, "\n\n");
    int len = end ? (int)(end - usage) : (int)strlen(usage);

    va_start(ap, fmt);
    vreport("resnet: ", fmt, ap);
    va_end(ap);
    // The synopsis: everything before the first blank line.
    fprintf(stderr, "%.*s\n", len, usage);
    return EXIT_USAGE;
}

int option_error(const char *usage, int opt, char **argv) {
    const char *arg = argv[optind - 1];
    bool is_long = strncmp(arg, "--", 2) == 0;
    int len = (int)strcspn(arg, "=");

    // optopt names a short option even inside a cluster such as -zq.
    if (opt == ':') {
        return is_long ? usage_error(usage, "option '%.*s' needs a value",
                                     len, arg)
                       : usage_error(usage, "option '-%c' needs a value",
                                     optopt);
    }
    return is_long || !optopt
               ? usage_error(usage, "unknown option '%.*s'", len, arg)
               : usage_error(usage, "unknown option '-%c'", optopt);
}

/* The library's log lines, in the tool's message format. */
static void log_line(void *ctx, int level, const char *msg) {
    (void)ctx;
    fprintf(stderr, "resnet: %s%s\n",
            level == RESNET_LOG_WARN ? "warning: " : "", msg);
}

void log_to_stderr(void) {
    resnet_set_log(log_line, NULL, verbosity);
}

bool verbosity_option(int opt) {
    if (opt == 'v') {
        verbosity++;
    } else if (opt == 'q') {
        verbosity = 0;
    } else {
        return false;
    }
    log_to_stderr();
    return true;
}

int open_model_files(const char *model, const char *weights_opt,
                     bool need_weights, struct resnet_arch **arch,
                     char **weights) {
    struct resnet_error err = {0};
    char *search = resnet_search_path();
    char *arch_path = NULL;
    const char *wname;
    int rc = EXIT_FAIL;

    *arch = NULL;
    *weights = NULL;
    if (!search) {
        error("out of memory");
        return EXIT_FAIL;
    }

    // The description: a path, or a name along the search path.
    if (resnet_find_file(&arch_path, model, ".json", search, &err) ||
        resnet_arch_load(arch, arch_path, &err)) {
        error_lib(err.code, &err);
        goto out;
    }

    // The weights: -w as given, else the description's default.
    if (weights_opt) {
        *weights = strdup(weights_opt);
        rc = *weights ? 0 : EXIT_FAIL;
        if (rc) {
            error("out of memory");
        }
        goto out;
    }
    wname = resnet_arch_weights(*arch);
    if (!need_weights) {
        rc = 0;
    } else if (!wname) {
        error("no weights for model '%s': give them with -w",
              resnet_arch_name(*arch));
    } else if (resnet_arch_find_file(*arch, wname, weights, &err)) {
        error_lib(err.code, &err);
    } else {
        rc = 0;
    }

out:
    if (rc) {
        resnet_arch_free(*arch);
        *arch = NULL;
    }
    free(arch_path);
    free(search);
    return rc;
}
