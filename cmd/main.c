/*
 * The resnet program: global options, the table of subcommands, dispatch
 * and help. Each subcommand parses its own arguments in cmd/<name>.c.
 */
#include <config.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cmd.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"classify", cmd_classify, "label images with a model's top classes"},
    {"convert", cmd_convert, "turn PyTorch or safetensors weights into a model"},
    {"inspect", cmd_inspect, "describe a model and check its weights"},
};

#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static const char usage[] =
    "usage: resnet [-v | -q] <command> [<args>]\n"
    "       resnet help <command>\n"
    "       resnet --version\n";

static void print_usage(FILE *f) {
    fputs(usage, f);
    fputs("\ncommands:\n", f);
    for (int i = 0; i < N_COMMANDS; i++) {
        fprintf(f, "    %-10s %s\n", commands[i].name, commands[i].summary);
    }
    fputs("\nSee 'resnet <command> --help' or man resnet.\n", f);
}

static const struct command *find_command(const char *name) {
    for (int i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

/* `resnet help <cmd>` runs `resnet <cmd> --help`. */
static int run_help(int argc, char **argv) {
    const struct command *cmd;
    char *help_argv[] = {NULL, "--help", NULL};

    if (argc < 2 || strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return EXIT_OK;
    }
    cmd = find_command(argv[1]);
    if (!cmd) {
        return usage_error(usage, "'%s' is not a resnet command", argv[1]);
    }
    help_argv[0] = argv[1];
    return cmd->run(2, help_argv);
}

/*
 * Whatever a command printed must have reached stdout: a full disk or a
 * closed pipe turns success into failure. A reader that went away (EPIPE,
 * as `| head` does) needs no message.
 */
static int finish(int status) {
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (errno != EPIPE) {
            error("cannot write to standard output: %s",
                  errno ? strerror(errno) : "write error");
        }
        return EXIT_FAIL;
    }
    return status;
}

static int run(int argc, char **argv) {
    const struct command *cmd;
    int i = 1;

    // Global options come before the command.
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0) {
            verbosity++;
        } else if (strcmp(argv[i], "-vv") == 0) {
            verbosity += 2;
        } else if (strcmp(argv[i], "-q") == 0 ||
                   strcmp(argv[i], "--quiet") == 0) {
            verbosity = 0;
        } else if (strcmp(argv[i], "-h") == 0 ||
                   strcmp(argv[i], "--help") == 0) {
            print_usage(stdout);
            return EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("resnet %s\n", PACKAGE_VERSION);
            return EXIT_OK;
        } else {
            return usage_error(usage, "unknown option '%s'", argv[i]);
        }
    }
    if (i == argc) {
        print_usage(stderr);
        return EXIT_USAGE;
    }

    log_to_stderr();
    if (strcmp(argv[i], "help") == 0) {
        return run_help(argc - i, argv + i);
    }
    cmd = find_command(argv[i]);
    if (!cmd) {
        return usage_error(usage, "'%s' is not a resnet command", argv[i]);
    }
    return cmd->run(argc - i, argv + i);
}

int main(int argc, char **argv) {
    // A closed pipe is a write error to report, not a reason to die.
    signal(SIGPIPE, SIG_IGN);
    return finish(run(argc, argv));
}
