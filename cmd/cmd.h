/*
 * What the subcommands share: their entry points, the global verbosity,
 * and helpers that print messages in the one format of this tool.
 */
#ifndef RESNET_CMD_H
#define RESNET_CMD_H

#include <stdbool.h>

#include "resnet.h"

/* Exit statuses. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* -v raises it, -q lowers it: 0 quiet, 1 warnings (default), 2 info, 3 debug */
extern int verbosity;

int cmd_classify(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_inspect(int argc, char **argv);

/* "resnet: <formatted message>" on stderr. */
void error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "resnet: warning: <formatted message>" on stderr, unless quiet. */
void warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints err's message (or resnet_strerror(code)) as an error line. */
void error_lib(int code, const struct resnet_error *err);

/* Prints msg and the usage line to stderr; returns EXIT_USAGE. */
int usage_error(const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Shows the library's log lines up to the current verbosity on stderr. */
void log_to_stderr(void);

/*
 * For getopt_long()'s ':' (missing value) and '?' (unknown option):
 * prints which option, using optopt for short ones, and the usage line;
 * returns EXIT_USAGE.
 */
int option_error(const char *usage, int opt, char **argv);

/*
 * Handles -v/--verbose and -q/--quiet inside a subcommand's option loop;
 * true when opt was one of them.
 */
bool verbosity_option(int opt);

/*
 * Resolves -m and -w as classify, inspect and bench take them: the
 * description by path or name, then the weights from -w or, when
 * need_weights, the file the description names. On success returns 0
 * with *arch new and *weights a new string (NULL when -w was not given
 * and !need_weights); otherwise prints the error and returns EXIT_FAIL.
 */
int open_model_files(const char *model, const char *weights_opt,
                     bool need_weights, struct resnet_arch **arch,
                     char **weights);

#endif
