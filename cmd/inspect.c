/* resnet inspect: a model's structure and cost, and a check of its weights. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cmd.h"

static const char usage[] =
    "usage: resnet inspect [-m <model>] [-w <weights>] [--input <h>x<w>]\n"
    "                      [--format text | json | dot] [--per-layer]\n"
    "                      [-v | -q]\n"
    "\n"
    "    -m, --model <model>       description file, or a model name looked\n"
    "                              up in $RESNET_MODEL_PATH and the installed\n"
    "                              models (default $RESNET_MODEL)\n"
    "    -w, --weights <file>      check this safetensors file against the\n"
    "                              model and report its size by dtype\n"
    "        --input <h>x<w>       count shapes and MACs for an input of\n"
    "                              <h> x <w> pixels (default: the model's)\n"
    "        --format <format>     text, json (the summary and every layer)\n"
    "                              or dot (the block graph for Graphviz)\n"
    "                              (default text)\n"
    "        --per-layer           add a table of the layers to the text\n"
    "    -v, --verbose             accepted for symmetry; prints nothing more\n"
    "    -q, --quiet               do not print warnings\n"
    "    -h, --help                print this help\n";

enum format { FORMAT_TEXT, FORMAT_JSON, FORMAT_DOT };

struct inspect_opts {
    const char *model;
    const char *weights;
    int h, w;            // 0: the description's input size
    enum format format;
    bool per_layer;
};

/* The layer list and the figures derived from it. */
struct stats {
    int n_layers;
    struct resnet_layer_info *layers;
    uint64_t n_params;
    uint64_t n_macs;
    uint64_t peak_bytes; // activations live at the worst layer, float32
    int peak_layer;
    int n_stages;
    int *stage_blocks;   // blocks per stage
    int *stage_first;    // index of each stage's first layer
    int n_blocks;
    int n_identity, n_projection, n_pad;
    bool is_bottleneck;
    int groups;          // of the blocks' 3x3 convs
};

/* The weights check: what it found, and its problems as JSON. */
struct check {
    bool done;           // -w given and the file could be read
    int rc;
    struct resnet_weights_summary summary;
    cJSON *problems;     // array, or NULL when not making JSON
};

static const char *const kind_names[] = {
    [RESNET_LAYER_CONV] = "conv",
    [RESNET_LAYER_BN] = "bn",
    [RESNET_LAYER_RELU] = "relu",
    [RESNET_LAYER_MAXPOOL] = "maxpool",
    [RESNET_LAYER_AVGPOOL] = "avgpool",
    [RESNET_LAYER_SHORTCUT] = "shortcut",
    [RESNET_LAYER_ADD] = "add",
    [RESNET_LAYER_LINEAR] = "linear",
};

static const char *const part_names[] = {
    [RESNET_PART_STEM] = "stem",
    [RESNET_PART_BLOCK] = "block",
    [RESNET_PART_SHORTCUT] = "shortcut",
    [RESNET_PART_HEAD] = "head",
};

static const char *const problem_names[] = {
    [RESNET_PROBLEM_MISSING] = "missing",
    [RESNET_PROBLEM_UNEXPECTED] = "unexpected",
    [RESNET_PROBLEM_SHAPE] = "shape",
    [RESNET_PROBLEM_DTYPE] = "dtype",
    [RESNET_PROBLEM_VALUES] = "values",
    [RESNET_PROBLEM_VARIANCE] = "variance",
};

/* "<h>x<w>" with both in 1..65536. */
static int parse_size(const char *s, int *h, int *w) {
    char *end;
    long a, b;

    errno = 0;
    a = strtol(s, &end, 10);
    if (end == s || *end != 'x') {
        return -1;
    }
    s = end + 1;
    b = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno || a < 1 || b < 1 ||
        a > 65536 || b > 65536) {
        return -1;
    }
    *h = (int)a;
    *w = (int)b;
    return 0;
}

static int parse_args(int argc, char **argv, struct inspect_opts *o) {
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"weights", required_argument, NULL, 'w'},
        {"input", required_argument, NULL, 'i'},
        {"format", required_argument, NULL, 'f'},
        {"per-layer", no_argument, NULL, 'l'},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":m:w:vqh", longopts, NULL)) !=
           -1) {
        if (verbosity_option(opt)) {
            continue;
        }
        switch (opt) {
        case 'm':
            o->model = optarg;
            break;
        case 'w':
            o->weights = optarg;
            break;
        case 'i':
            if (parse_size(optarg, &o->h, &o->w)) {
                return usage_error(usage, "--input needs <h>x<w>, such as "
                                   "224x224, not '%s'", optarg);
            }
            break;
        case 'f':
            if (strcmp(optarg, "text") == 0) {
                o->format = FORMAT_TEXT;
            } else if (strcmp(optarg, "json") == 0) {
                o->format = FORMAT_JSON;
            } else if (strcmp(optarg, "dot") == 0) {
                o->format = FORMAT_DOT;
            } else {
                return usage_error(usage, "unknown format '%s' (text, json "
                                   "or dot)", optarg);
            }
            break;
        case 'l':
            o->per_layer = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return -1;
        default:
            return option_error(usage, opt, argv);
        }
    }
    if (!o->model) {
        return usage_error(usage, "no model given: use -m <model>");
    }
    if (optind < argc) {
        return usage_error(usage, "unexpected argument '%s'", argv[optind]);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Figures                                                              */

static uint64_t value_bytes(const struct resnet_layer_info *l) {
    return 4 * (uint64_t)l->c_out * (uint64_t)l->h_out * (uint64_t)l->w_out;
}

/* When each value is written (first) and last read (last), and its size. */
struct lifetime {
    int first, last;
    uint64_t bytes;
};

static void lifetimes(const struct stats *s, const struct resnet_arch *arch,
                      struct lifetime *v) {
    int n = s->n_layers, c, h, w;

    resnet_arch_input(arch, &c, &h, &w);
    v[0] = (struct lifetime){-1, -1, 4 * (uint64_t)c * (uint64_t)h * w};
    for (int i = 0; i < n; i++) {
        const struct resnet_layer_info *l = &s->layers[i];

        v[l->in].last = i;
        if (l->in2 >= 0) {
            v[l->in2].last = i;
        }
        if (l->out != l->in) {
            // The logits stay alive after the last layer.
            v[l->out] = (struct lifetime){i, i == n - 1 ? n : i,
                                          value_bytes(l)};
        }
    }
}

/*
 * The peak activation memory: every layer but BN and ReLU (which work in
 * place) writes a new float32 tensor, live from that layer to the last
 * layer that reads it; the input is live until its last reader and the
 * logits to the end. The peak is the largest sum of live tensors at any
 * layer, the layer's inputs and output included.
 */
static int peak_memory(struct stats *s, const struct resnet_arch *arch) {
    int n_values = 1;
    struct lifetime *v;

    for (int i = 0; i < s->n_layers; i++) {
        n_values = s->layers[i].out >= n_values ? s->layers[i].out + 1
                                                : n_values;
    }
    v = calloc((size_t)n_values, sizeof *v);
    if (!v) {
        return -1;
    }
    lifetimes(s, arch, v);

    // The live sum at each layer.
    for (int i = 0; i < s->n_layers; i++) {
        uint64_t live = 0;

        for (int j = 0; j < n_values; j++) {
            live += v[j].first <= i && v[j].last >= i ? v[j].bytes : 0;
        }
        if (live > s->peak_bytes) {
            s->peak_bytes = live;
            s->peak_layer = i;
        }
    }
    free(v);
    return 0;
}

/* The kind of shortcut of the block layers[i] belongs to. */
static const char *block_shortcut(const struct stats *s, int i) {
    const struct resnet_layer_info *l = s->layers;
    int stage = l[i].stage, block = l[i].block;

    while (i > 0 && l[i - 1].stage == stage && l[i - 1].block == block) {
        i--;
    }
    for (; i < s->n_layers && l[i].stage == stage && l[i].block == block;
         i++) {
        if (l[i].part == RESNET_PART_SHORTCUT) {
            return l[i].kind == RESNET_LAYER_CONV ? "projection" : "pad";
        }
    }
    return "identity";
}

/* Stages, blocks and the block type, from the layers' positions. */
static int count_blocks(struct stats *s) {
    const struct resnet_layer_info *l = s->layers;
    int n_convs = 0;

    for (int i = 0; i < s->n_layers; i++) {
        s->n_stages = l[i].stage + 1 > s->n_stages ? l[i].stage + 1
                                                   : s->n_stages;
    }
    s->stage_blocks = calloc((size_t)s->n_stages + 1, sizeof(int));
    s->stage_first = calloc((size_t)s->n_stages + 1, sizeof(int));
    if (!s->stage_blocks || !s->stage_first) {
        return -1;
    }
    for (int i = 0; i < s->n_layers; i++) {
        bool starts = l[i].stage >= 0 &&
                      (i == 0 || l[i].stage != l[i - 1].stage ||
                       l[i].block != l[i - 1].block);
        const char *sc;

        if (!starts) {
            continue;
        }
        if (l[i].block == 0) {
            s->stage_first[l[i].stage] = i;
        }
        s->stage_blocks[l[i].stage]++;
        s->n_blocks++;
        sc = block_shortcut(s, i);
        s->n_identity += strcmp(sc, "identity") == 0;
        s->n_projection += strcmp(sc, "projection") == 0;
        s->n_pad += strcmp(sc, "pad") == 0;
    }

    // The first block's residual branch tells basic from bottleneck.
    s->groups = 1;
    for (int i = 0; i < s->n_layers && l[i].stage <= 0; i++) {
        if (l[i].stage == 0 && l[i].block == 0 &&
            l[i].part == RESNET_PART_BLOCK && l[i].kind == RESNET_LAYER_CONV) {
            n_convs++;
            s->groups = l[i].groups > s->groups ? l[i].groups : s->groups;
        }
    }
    s->is_bottleneck = n_convs == 3;
    return 0;
}

static int compute_stats(struct stats *s, const struct resnet_arch *arch) {
    s->n_layers = resnet_arch_n_layers(arch);
    s->layers = calloc((size_t)s->n_layers + 1, sizeof *s->layers);
    if (!s->layers) {
        return -1;
    }
    for (int i = 0; i < s->n_layers; i++) {
        resnet_arch_layer(arch, i, &s->layers[i]);
        s->n_params += s->layers[i].n_params;
        s->n_macs += s->layers[i].n_macs;
    }
    return count_blocks(s) || peak_memory(s, arch) ? -1 : 0;
}

static void free_stats(struct stats *s) {
    free(s->stage_first);
    free(s->stage_blocks);
    free(s->layers);
}

/* The stage's name: its first layer's name up to the first dot. */
static int stage_name_len(const struct stats *s, int stage) {
    const char *name = s->layers[s->stage_first[stage]].name;

    return (int)strcspn(name, ".");
}

/* ------------------------------------------------------------------ */
/* Weights check                                                        */

static void on_problem(void *ctx, const struct resnet_problem *p) {
    struct check *c = ctx;
    cJSON *o;

    error("%s", p->msg);
    if (!c->problems || !(o = cJSON_CreateObject())) {
        return;
    }
    cJSON_AddStringToObject(o, "kind", problem_names[p->kind]);
    cJSON_AddStringToObject(o, "tensor", p->tensor);
    if (p->expected[0]) {
        cJSON_AddStringToObject(o, "expected", p->expected);
    }
    if (p->actual[0]) {
        cJSON_AddStringToObject(o, "actual", p->actual);
    }
    cJSON_AddStringToObject(o, "message", p->msg);
    cJSON_AddItemToArray(c->problems, o);
}

/* Checks the weights at path, printing each problem; 0 when all is well. */
static int check_weights(struct check *c, const struct resnet_arch *arch,
                         const char *path) {
    struct resnet_error err = {0};

    c->rc = resnet_weights_check(arch, path, on_problem, c, &c->summary,
                                 &err);
    c->done = c->summary.n_tensors > 0 || c->summary.file_size > 0;
    if (c->rc && c->summary.n_problems == 0) {
        // The file itself could not be read.
        error_lib(c->rc, &err);
    }
    return c->rc ? EXIT_FAIL : EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* Text                                                                 */

/* 25557032 -> "25.56 M", 4089184256 -> "4.09 G". */
static void si(char *buf, size_t size, double v) {
    if (v >= 1e9) {
        snprintf(buf, size, "%.2f G", v / 1e9);
    } else if (v >= 1e6) {
        snprintf(buf, size, "%.2f M", v / 1e6);
    } else if (v >= 1e3) {
        snprintf(buf, size, "%.2f k", v / 1e3);
    } else {
        snprintf(buf, size, "%.0f", v);
    }
}

/* A size in bytes: "48 B", "8.97 kB", "102.23 MB". */
static void bytes_str(char *buf, size_t size, uint64_t n) {
    char num[24];

    if (n < 1000) {
        snprintf(buf, size, "%llu B", (unsigned long long)n);
        return;
    }
    si(num, sizeof num, (double)n);
    snprintf(buf, size, "%sB", num);
}

/* The weights file's size and tensors by dtype. */
static void print_weights(const struct check *c, const char *weights) {
    char buf[32];

    bytes_str(buf, sizeof buf, c->summary.file_size);
    printf("weights:      %s\n", weights);
    printf("              %s, %d tensors, %d problems\n", buf,
           c->summary.n_tensors, c->summary.n_problems);
    for (int i = 0; i < c->summary.n_dtypes; i++) {
        const struct resnet_weights_dtype *d = &c->summary.dtypes[i];

        bytes_str(buf, sizeof buf, d->n_bytes);
        printf("  %-11s %d tensors, %llu values, %s\n", d->name,
               d->n_tensors, (unsigned long long)d->n_elems, buf);
    }
}

static void print_summary(const struct stats *s, const struct resnet_arch *a,
                          const char *weights, const struct check *c) {
    const struct resnet_preprocess *pp = resnet_arch_preprocess(a);
    int ch, h, w;
    char buf[32];

    resnet_arch_input(a, &ch, &h, &w);
    printf("model:        %s\n", resnet_arch_name(a));
    printf("description:  %s\n", resnet_arch_path(a));
    printf("input:        %dx%dx%d\n", ch, h, w);
    if (pp->resize > 0) {
        printf("preprocess:   resize %d, ", pp->resize);
    } else {
        printf("preprocess:   no resize, ");
    }
    printf("crop %dx%d, mean %g %g %g, std %g %g %g\n", pp->crop_h,
           pp->crop_w, pp->mean[0], pp->mean[1], pp->mean[2], pp->std[0],
           pp->std[1], pp->std[2]);
    printf("stages:       %d (", s->n_stages);
    for (int i = 0; i < s->n_stages; i++) {
        printf("%s%.*s %d", i ? ", " : "", stage_name_len(s, i),
               s->layers[s->stage_first[i]].name, s->stage_blocks[i]);
    }
    printf(")\n");
    printf("blocks:       %d %s", s->n_blocks,
           s->is_bottleneck ? "bottleneck" : "basic");
    if (s->groups > 1) {
        printf(" (%d groups)", s->groups);
    }
    printf("; shortcuts: %d identity, %d %s\n", s->n_identity,
           s->n_pad ? s->n_pad : s->n_projection,
           s->n_pad ? "pad" : "projection");
    printf("classes:      %d\n", resnet_arch_n_classes(a));
    printf("parameters:   %llu (%.2f M)\n", (unsigned long long)s->n_params,
           (double)s->n_params / 1e6);
    si(buf, sizeof buf, (double)s->n_macs);
    printf("macs:         %llu (%s)\n", (unsigned long long)s->n_macs, buf);
    bytes_str(buf, sizeof buf, s->peak_bytes);
    printf("activations:  %llu bytes at peak (%s, at %s)\n",
           (unsigned long long)s->peak_bytes, buf,
           s->layers[s->peak_layer].name);
    if (c->done) {
        print_weights(c, weights);
    }
}

/* v as text, or "-" for 0 (a field the layer does not have). */
static const char *or_dash(char *buf, size_t size, long long v) {
    snprintf(buf, size, "%lld", v);
    return v ? buf : "-";
}

/* The per-layer table, 98 columns wide for the shipped models. */
static void print_table(const struct stats *s) {
    printf("%-21s %-8s %-6s %6s %3s %6s %-12s %9s %11s %6s\n", "name", "kind",
           "kernel", "stride", "pad", "groups", "output", "params", "macs",
           "share");
    for (int i = 0; i < s->n_layers; i++) {
        const struct resnet_layer_info *l = &s->layers[i];
        char kernel[24] = "-", out[40], share[16] = "-";
        char stride[16], pad[16], groups[16], macs[24];

        if (l->k_h) {
            snprintf(kernel, sizeof kernel, "%dx%d", l->k_h, l->k_w);
        }
        if (l->h_out == 1 && l->w_out == 1) {
            snprintf(out, sizeof out, "%d", l->c_out);
        } else {
            snprintf(out, sizeof out, "%dx%dx%d", l->c_out, l->h_out,
                     l->w_out);
        }
        // Padding 0 is a value for a layer with a kernel.
        snprintf(pad, sizeof pad, "%s", "-");
        if (l->k_h) {
            snprintf(pad, sizeof pad, "%d", l->pad);
        }
        if (l->n_macs) {
            snprintf(share, sizeof share, "%.2f%%",
                     100.0 * (double)l->n_macs / (double)s->n_macs);
        }
        printf("%-21s %-8s %-6s %6s %3s %6s %-12s %9zu %11s %6s\n", l->name,
               kind_names[l->kind], kernel,
               or_dash(stride, sizeof stride, l->stride),
               pad,
               or_dash(groups, sizeof groups, l->groups), out, l->n_params,
               or_dash(macs, sizeof macs, (long long)l->n_macs), share);
    }
}

/* ------------------------------------------------------------------ */
/* JSON                                                                 */

static cJSON *shape_json(int c, int h, int w) {
    int dims[3] = {c, h, w};

    return cJSON_CreateIntArray(dims, 3);
}

/* Floats as the shortest decimals that give them back ("0.485"). */
static cJSON *floats_json(const float *v, int n) {
    cJSON *a = cJSON_CreateArray();
    char buf[32];

    for (int i = 0; a && i < n; i++) {
        int digits = 6;

        do {
            snprintf(buf, sizeof buf, "%.*g", digits++, (double)v[i]);
        } while (strtof(buf, NULL) != v[i] && digits < 10);
        cJSON_AddItemToArray(a, cJSON_CreateNumber(strtod(buf, NULL)));
    }
    return a;
}

static cJSON *layer_json(const struct stats *s, int i) {
    const struct resnet_layer_info *l = &s->layers[i];
    cJSON *o = cJSON_CreateObject();
    double share = s->n_macs ? (double)l->n_macs / (double)s->n_macs : 0;

    if (!o) {
        return NULL;
    }
    cJSON_AddStringToObject(o, "name", l->name);
    cJSON_AddStringToObject(o, "kind", kind_names[l->kind]);
    cJSON_AddStringToObject(o, "part", part_names[l->part]);
    cJSON_AddNumberToObject(o, "stage", l->stage);
    cJSON_AddNumberToObject(o, "block", l->block);
    cJSON_AddItemToObject(o, "input", shape_json(l->c_in, l->h_in, l->w_in));
    cJSON_AddItemToObject(o, "output",
                          shape_json(l->c_out, l->h_out, l->w_out));
    cJSON_AddNumberToObject(o, "kernel", l->k_h);
    cJSON_AddNumberToObject(o, "stride", l->stride);
    cJSON_AddNumberToObject(o, "padding", l->pad);
    cJSON_AddNumberToObject(o, "groups", l->groups);
    cJSON_AddBoolToObject(o, "bias", l->has_bias);
    cJSON_AddNumberToObject(o, "params", (double)l->n_params);
    cJSON_AddNumberToObject(o, "macs", (double)l->n_macs);
    cJSON_AddNumberToObject(o, "share", round(share * 1e6) / 1e6);
    cJSON_AddNumberToObject(o, "in", l->in);
    cJSON_AddNumberToObject(o, "in2", l->in2);
    cJSON_AddNumberToObject(o, "out", l->out);
    return o;
}

static cJSON *weights_json(const struct check *c, const char *path) {
    cJSON *o = cJSON_CreateObject(), *dtypes;

    if (!o) {
        return NULL;
    }
    cJSON_AddStringToObject(o, "file", path);
    cJSON_AddNumberToObject(o, "bytes", (double)c->summary.file_size);
    cJSON_AddNumberToObject(o, "tensors", c->summary.n_tensors);
    dtypes = cJSON_AddArrayToObject(o, "dtypes");
    for (int i = 0; dtypes && i < c->summary.n_dtypes; i++) {
        const struct resnet_weights_dtype *d = &c->summary.dtypes[i];
        cJSON *e = cJSON_CreateObject();

        cJSON_AddStringToObject(e, "dtype", d->name);
        cJSON_AddNumberToObject(e, "tensors", d->n_tensors);
        cJSON_AddNumberToObject(e, "values", (double)d->n_elems);
        cJSON_AddNumberToObject(e, "bytes", (double)d->n_bytes);
        cJSON_AddItemToArray(dtypes, e);
    }
    cJSON_AddItemReferenceToObject(o, "problems", c->problems);
    return o;
}

static cJSON *summary_json(const struct stats *s, const struct resnet_arch *a) {
    const struct resnet_preprocess *pp = resnet_arch_preprocess(a);
    cJSON *o = cJSON_CreateObject(), *p, *stages;
    int ch, h, w;

    if (!o) {
        return NULL;
    }
    resnet_arch_input(a, &ch, &h, &w);
    cJSON_AddStringToObject(o, "model", resnet_arch_name(a));
    cJSON_AddStringToObject(o, "description", resnet_arch_path(a));
    cJSON_AddItemToObject(o, "input", shape_json(ch, h, w));
    p = cJSON_AddObjectToObject(o, "preprocess");
    cJSON_AddNumberToObject(p, "resize", pp->resize);
    cJSON_AddItemToObject(p, "crop", cJSON_CreateIntArray(
                                         (int[]){pp->crop_h, pp->crop_w}, 2));
    cJSON_AddItemToObject(p, "mean", floats_json(pp->mean, 3));
    cJSON_AddItemToObject(p, "std", floats_json(pp->std, 3));
    stages = cJSON_AddArrayToObject(o, "stages");
    for (int i = 0; stages && i < s->n_stages; i++) {
        cJSON *e = cJSON_CreateObject();
        char name[64];

        snprintf(name, sizeof name, "%.*s", stage_name_len(s, i),
                 s->layers[s->stage_first[i]].name);
        cJSON_AddStringToObject(e, "name", name);
        cJSON_AddNumberToObject(e, "blocks", s->stage_blocks[i]);
        cJSON_AddItemToArray(stages, e);
    }
    cJSON_AddNumberToObject(o, "blocks", s->n_blocks);
    cJSON_AddStringToObject(o, "block_type",
                            s->is_bottleneck ? "bottleneck" : "basic");
    cJSON_AddNumberToObject(o, "groups", s->groups);
    cJSON_AddNumberToObject(o, "classes", resnet_arch_n_classes(a));
    cJSON_AddNumberToObject(o, "params", (double)s->n_params);
    cJSON_AddNumberToObject(o, "macs", (double)s->n_macs);
    cJSON_AddNumberToObject(o, "peak_activation_bytes",
                            (double)s->peak_bytes);
    cJSON_AddStringToObject(o, "peak_activation_layer",
                            s->layers[s->peak_layer].name);
    return o;
}

/* One JSON object: the summary, the weights when checked, the layers. */
static int print_json(const struct stats *s, const struct resnet_arch *a,
                      const char *weights, const struct check *c) {
    cJSON *o = summary_json(s, a), *layers;
    char *text = NULL;
    int rc = -1;

    if (!o) {
        return -1;
    }
    if (c->done) {
        cJSON_AddItemToObject(o, "weights", weights_json(c, weights));
    }
    layers = cJSON_AddArrayToObject(o, "layers");
    for (int i = 0; layers && i < s->n_layers; i++) {
        cJSON_AddItemToArray(layers, layer_json(s, i));
    }
    text = cJSON_Print(o);
    if (text) {
        puts(text);
        rc = 0;
    }
    free(text);
    cJSON_Delete(o);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Graphviz                                                             */

/* Prints s as the inside of a double-quoted DOT string. */
static void dot_escaped(const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            putchar('\\');
        }
        putchar(*s);
    }
}

/* A node for a layer that writes a new value: its name, what it does
 * (BN and ReLU after it are named, as the model folds them into it) and
 * its output shape. */
static void dot_node(const struct stats *s, int i) {
    const struct resnet_layer_info *l = &s->layers[i];
    char what[128] = "";
    size_t len = 0;

    // "maxpool\nmaxpool 3x3" would say it twice.
    if (strcmp(l->name, kind_names[l->kind]) != 0) {
        len += (size_t)snprintf(what, sizeof what, " %s", kind_names[l->kind]);
    }
    if (l->k_h) {
        len += (size_t)snprintf(what + len, sizeof what - len, " %dx%d",
                                l->k_h, l->k_w);
    }
    if (l->stride > 1) {
        len += (size_t)snprintf(what + len, sizeof what - len, " /%d",
                                l->stride);
    }
    if (l->groups > 1) {
        len += (size_t)snprintf(what + len, sizeof what - len, " g%d",
                                l->groups);
    }
    for (int j = i + 1; j < s->n_layers && s->layers[j].out == l->out &&
                        s->layers[j].in == l->out && len < sizeof what;
         j++) {
        len += (size_t)snprintf(what + len, sizeof what - len, " + %s",
                                kind_names[s->layers[j].kind]);
    }

    printf("    n%d [label=\"", i);
    dot_escaped(l->name);
    if (what[0]) {
        printf("\\n%s", what + 1);
    }
    if (l->h_out == 1 && l->w_out == 1) {
        printf("\\n%d", l->c_out);
    } else {
        printf("\\n%dx%dx%d", l->c_out, l->h_out, l->w_out);
    }
    printf("\"%s];\n",
           l->part == RESNET_PART_SHORTCUT ? ", style=dashed" : "");
}

/* Where value v comes from: the input or the node of its writer. */
static void dot_source(const struct stats *s, int v, char *buf,
                       size_t size) {
    snprintf(buf, size, "input");
    for (int i = 0; v > 0 && i < s->n_layers; i++) {
        if (s->layers[i].out == v && s->layers[i].in != v) {
            snprintf(buf, size, "n%d", i);
            return;
        }
    }
}

/* Opens a cluster when layer i starts the stem, a block or the head. */
static void dot_cluster(const struct stats *s, int i, int *open) {
    const struct resnet_layer_info *l = &s->layers[i];
    bool starts = i == 0 || l->stage != s->layers[i - 1].stage ||
                  l->block != s->layers[i - 1].block ||
                  (l->part == RESNET_PART_HEAD &&
                   s->layers[i - 1].part != RESNET_PART_HEAD);
    int len = (int)strcspn(l->name, ".");

    if (!starts) {
        return;
    }
    if (*open) {
        printf("  }\n");
    }
    *open = 1;
    printf("  subgraph cluster_%d {\n    label=\"", i);
    if (l->part == RESNET_PART_STEM) {
        printf("stem");
    } else if (l->part == RESNET_PART_HEAD) {
        printf("head");
    } else {
        // "layer1.0", the block's prefix: the name to its second dot.
        len += 1 + (int)strcspn(l->name + len + 1, ".");
        printf("%.*s: %s shortcut", len, l->name, block_shortcut(s, i));
    }
    printf("\";\n");
}

/* The block graph: clusters of nodes, then the edges between values. */
static void print_dot(const struct stats *s, const struct resnet_arch *a) {
    int c, h, w, open = 0;
    char src[32];

    resnet_arch_input(a, &c, &h, &w);
    printf("digraph \"");
    dot_escaped(resnet_arch_name(a));
    printf("\" {\n  node [shape=box, fontname=\"Helvetica\"];\n");
    printf("  input [label=\"input\\n%dx%dx%d\", shape=oval];\n", c, h, w);
    for (int i = 0; i < s->n_layers; i++) {
        const struct resnet_layer_info *l = &s->layers[i];

        dot_cluster(s, i, &open);
        if (l->out != l->in) {
            dot_node(s, i);
        }
    }
    if (open) {
        printf("  }\n");
    }

    // Edges: each node from the writers of the values it reads.
    for (int i = 0; i < s->n_layers; i++) {
        const struct resnet_layer_info *l = &s->layers[i];

        if (l->out == l->in) {
            continue;
        }
        dot_source(s, l->in, src, sizeof src);
        printf("  %s -> n%d%s;\n", src, i,
               l->part == RESNET_PART_SHORTCUT ? " [style=dashed]" : "");
        if (l->in2 >= 0) {
            bool identity = strcmp(block_shortcut(s, i), "identity") == 0;

            dot_source(s, l->in2, src, sizeof src);
            printf("  %s -> n%d [style=dashed%s];\n", src, i,
                   identity ? ", label=\"identity\"" : "");
        }
    }
    printf("}\n");
}

int cmd_inspect(int argc, char **argv) {
    struct inspect_opts o = {.model = getenv("RESNET_MODEL"),
                             .format = FORMAT_TEXT};
    struct resnet_error err = {0};
    struct resnet_arch *arch = NULL;
    struct stats s = {0};
    struct check c = {0};
    char *weights = NULL;
    int rc, checked = EXIT_OK;

    // Parse, and find the description and the weights.
    rc = parse_args(argc, argv, &o);
    if (rc) {
        return rc < 0 ? EXIT_OK : rc;
    }
    rc = EXIT_FAIL;
    if (open_model_files(o.model, o.weights, false, &arch, &weights)) {
        goto out;
    }

    // Check the weights first: the report then includes what was found.
    if (weights) {
        c.problems = o.format == FORMAT_JSON ? cJSON_CreateArray() : NULL;
        checked = check_weights(&c, arch, weights);
    }

    // The layers at the size asked for, and the figures.
    if (o.h && resnet_arch_set_input(arch, o.h, o.w, &err)) {
        error_lib(err.code, &err);
        goto out;
    }
    if (compute_stats(&s, arch)) {
        error("out of memory");
        goto out;
    }

    // The report.
    if (o.format == FORMAT_JSON) {
        if (print_json(&s, arch, weights, &c)) {
            error("out of memory");
            goto out;
        }
    } else if (o.format == FORMAT_DOT) {
        print_dot(&s, arch);
    } else {
        print_summary(&s, arch, weights, &c);
        if (o.per_layer) {
            printf("\n");
            print_table(&s);
        }
    }
    rc = checked;
    if (fflush(stdout)) {
        error("cannot write the report: %s", strerror(errno));
        rc = EXIT_FAIL;
    }

out:
    cJSON_Delete(c.problems);
    free_stats(&s);
    free(weights);
    resnet_arch_free(arch);
    return rc;
}
