/* resnet convert: PyTorch or safetensors weights in, a ready model out. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd.h"

static const char usage[] =
    "usage: resnet convert [-o <out-weights>] [--arch <name-or-json>]\n"
    "                      [--dtype f32 | f16 | bf16] [--force] [-v | -q]\n"
    "                      <input>\n"
    "\n"
    "    -o, --output <file>       write the weights to <file> and the\n"
    "                              description beside it, named with .json\n"
    "                              (default: the input's name with\n"
    "                              .safetensors, in the current folder)\n"
    "        --arch <model>        check the tensors against this description\n"
    "                              file or model name (default: recognise the\n"
    "                              network from the tensors)\n"
    "        --dtype <type>        f32, f16 or bf16 for the weights (default\n"
    "                              f32)\n"
    "    -f, --force               replace existing output files\n"
    "    -v, --verbose             report what was found in the input\n"
    "    -q, --quiet               do not print warnings\n"
    "    -h, --help                print this help\n";

/* Inputs at least this large show progress on a terminal. */
#define PROGRESS_MIN_BYTES ((off_t)64 << 20)

struct convert_opts {
    const char *output;
    const char *arch;
    enum resnet_dtype dtype;
    bool force;
    const char *input;
};

static int parse_dtype(const char *s, enum resnet_dtype *dtype) {
    if (strcmp(s, "f32") == 0) {
        *dtype = RESNET_DTYPE_F32;
    } else if (strcmp(s, "f16") == 0) {
        *dtype = RESNET_DTYPE_F16;
    } else if (strcmp(s, "bf16") == 0) {
        *dtype = RESNET_DTYPE_BF16;
    } else {
        return -1;
    }
    return 0;
}

/* Returns 0, -1 after --help, or EXIT_USAGE after a message. */
static int parse_args(int argc, char **argv, struct convert_opts *o) {
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"arch", required_argument, NULL, 'a'},
        {"dtype", required_argument, NULL, 'd'},
        {"force", no_argument, NULL, 'f'},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":o:fvqh", longopts, NULL)) != -1) {
        if (verbosity_option(opt)) {
            continue;
        }
        switch (opt) {
        case 'o':
            if (!*optarg) {
                return usage_error(usage, "-o needs a file name, not ''");
            }
            o->output = optarg;
            break;
        case 'a':
            o->arch = optarg;
            break;
        case 'd':
            if (parse_dtype(optarg, &o->dtype)) {
                return usage_error(usage, "unknown dtype '%s' (f32, f16 or "
                                   "bf16)", optarg);
            }
            break;
        case 'f':
            o->force = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return -1;
        default:
            return option_error(usage, opt, argv);
        }
    }
    if (optind == argc) {
        return usage_error(usage, "no input given");
    }
    if (optind + 1 < argc) {
        return usage_error(usage, "more than one input given");
    }
    o->input = argv[optind];
    return 0;
}

/* path without its last extension, plus suffix, as a new string. */
static char *replace_ext(const char *path, const char *suffix) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t keep = dot && dot > base ? (size_t)(dot - path) : strlen(path);
    size_t len = keep + strlen(suffix) + 1;
    char *s = malloc(len);

    if (s) {
        snprintf(s, len, "%.*s%s", (int)keep, path, suffix);
    }
    return s;
}

/* The weights path (-o, or the input's base name) and the description's. */
static int output_paths(const struct convert_opts *o, char **weights,
                        char **desc) {
    const char *slash = strrchr(o->input, '/');

    *weights = o->output ? strdup(o->output)
                         : replace_ext(slash ? slash + 1 : o->input,
                                       ".safetensors");
    *desc = *weights ? replace_ext(*weights, ".json") : NULL;
    if (!*desc) {
        error("out of memory");
        return EXIT_FAIL;
    }
    if (strcmp(*weights, *desc) == 0) {
        return usage_error(usage, "the weights file '%s' cannot end in .json",
                           *weights);
    }
    return 0;
}

/* --arch: a description file, or a model name along the search path. */
static int find_arch(const char *arch, char **path) {
    struct resnet_error err = {0};
    char *search = resnet_search_path();
    int rc;

    if (!search) {
        error("out of memory");
        return EXIT_FAIL;
    }
    rc = resnet_find_file(path, arch, ".json", search, &err);
    free(search);
    if (rc) {
        error_lib(rc, &err);
        return EXIT_FAIL;
    }
    return 0;
}

/* "resnet: reading 'x': 45%" on a terminal, rewritten in place. */
static void show_progress(void *ctx, size_t done, size_t total) {
    static int last = -1;
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;

    if (pct != last) {
        last = pct;
        fprintf(stderr, "\rresnet: reading '%s': %d%%", (const char *)ctx,
                pct > 100 ? 100 : pct);
        fflush(stderr);
    }
}

/* Removes the half-written outputs, then dies from sig as it would have. */
static void on_signal(int sig) {
    resnet_temp_files_remove();
    signal(sig, SIG_DFL);
    raise(sig);
}

/*
 * Stopping convert (TERM, INT, HUP) removes its temporary files, unless
 * the signal was ignored when it started (nohup). A file size limit
 * (ulimit -f) makes the write fail with EFBIG instead of killing it, so
 * the normal error path cleans up.
 */
static void catch_signals(void) {
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    struct sigaction sa = {.sa_handler = on_signal}, old;

    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        sigaddset(&sa.sa_mask, sigs[i]);
    }
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        if (sigaction(sigs[i], NULL, &old) == 0 &&
            old.sa_handler != SIG_IGN) {
            sigaction(sigs[i], &sa, NULL);
        }
    }
    signal(SIGXFSZ, SIG_IGN);
}

/* What the input held, with -v; warnings for what changed on the way. */
static void report(const struct convert_opts *o,
                   const struct resnet_convert_info *info) {
    if (info->prefix[0]) {
        warning("stripped the prefix '%s' from every tensor name in '%s'",
                info->prefix, o->input);
    }
    if (info->n_narrowed) {
        warning("narrowed %d float64 tensors of '%s' to %s",
                info->n_narrowed, o->input,
                o->dtype == RESNET_DTYPE_F16    ? "float16"
                : o->dtype == RESNET_DTYPE_BF16 ? "bfloat16"
                                                : "float32");
    }
    if (verbosity >= 2) {
        fprintf(stderr, "resnet: '%s': %s format, %d tensors", o->input,
                info->format, info->n_tensors);
        if (info->found_under[0]) {
            fprintf(stderr, " under '%s'", info->found_under);
        }
        if (info->n_dropped) {
            fprintf(stderr, ", %d num_batches_tracked left out",
                    info->n_dropped);
        }
        fprintf(stderr, ", model %s\n", info->arch_name);
    }
}

int cmd_convert(int argc, char **argv) {
    struct convert_opts o = {.dtype = RESNET_DTYPE_F32};
    struct resnet_convert_opts copts = {0};
    struct resnet_convert_info info;
    struct resnet_error err = {0};
    char *weights = NULL, *desc = NULL, *arch = NULL;
    struct stat st;
    int rc;

    // Arguments, output names and the description to check against.
    rc = parse_args(argc, argv, &o);
    if (rc) {
        return rc < 0 ? EXIT_OK : rc;
    }
    if ((rc = output_paths(&o, &weights, &desc)) ||
        (o.arch && (rc = find_arch(o.arch, &arch)))) {
        goto out;
    }

    // Convert, with progress for large inputs on a terminal.
    copts.arch_path = arch;
    copts.dtype = o.dtype;
    copts.overwrite = o.force;
    if (verbosity >= 1 && isatty(STDERR_FILENO) &&
        stat(o.input, &st) == 0 && st.st_size >= PROGRESS_MIN_BYTES) {
        copts.progress = show_progress;
        copts.progress_ctx = (void *)o.input;
    }
    catch_signals();
    rc = resnet_convert(o.input, weights, desc, &copts, &info, &err);
    if (copts.progress) {
        fputc('\n', stderr);
    }
    if (rc) {
        error_lib(rc, &err);
        rc = EXIT_FAIL;
        goto out;
    }

    // The result: model name and the two files, tab-separated ("-" for
    // what was not recognised or written).
    report(&o, &info);
    if (info.unrecognised[0]) {
        warning("wrote no description: %s", info.unrecognised);
    }
    printf("%s\t%s\t%s\n", info.arch_name[0] ? info.arch_name : "-", weights,
           info.unrecognised[0] ? "-" : desc);
    // A lost line is reported by main() for every command; the files
    // are complete either way.
    rc = EXIT_OK;

out:
    free(arch);
    free(desc);
    free(weights);
    return rc;
}
