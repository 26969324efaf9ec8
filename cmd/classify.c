/* resnet classify: label images with a model's most likely classes. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cmd.h"

static const char usage[] =
    "usage: resnet classify [-m <model>] [-w <weights>] [-k <n>]\n"
    "                       [--format text | json | csv] [--logits]\n"
    "                       [-j <threads>] [-T <list-file>] [-v | -q]\n"
    "                       <image>...\n"
    "\n"
    "    -m, --model <model>       description file, or a model name looked\n"
    "                              up in $RESNET_MODEL_PATH and the installed\n"
    "                              models (default $RESNET_MODEL)\n"
    "    -w, --weights <file>      safetensors weights (default: the file the\n"
    "                              description names)\n"
    "    -k, --top <n>             print the <n> most likely classes (default 5)\n"
    "        --format <format>     text (tab-separated), json (one object a\n"
    "                              line) or csv (default text)\n"
    "        --logits              add the logits: all of them in json, the\n"
    "                              listed classes' in text and csv\n"
    "    -j, --threads <n>         classify with <n> threads (default: the\n"
    "                              number of processors)\n"
    "    -T, --files-from <list-file>\n"
    "                              also read image paths from <list-file>, one\n"
    "                              a line (- for standard input)\n"
    "    -v, --verbose             report the model and timings on stderr\n"
    "    -q, --quiet               do not print warnings\n"
    "    -h, --help                print this help\n";

enum format { FORMAT_TEXT, FORMAT_JSON, FORMAT_CSV };

struct classify_opts {
    const char *model;
    const char *weights;
    int top;
    enum format format;
    bool logits;
    int threads;
    const char *files_from;
};

/* What one image gave: an error message or its classes. */
struct result {
    bool done;
    int rc;
    char msg[512]; // room for a library message and a prefix
    int *index;     // top classes, most likely first
    float *prob;    // their probabilities
    float *logits;  // all n_classes logits
};

/* What one worker thread owns, allocated before any work starts. */
struct worker {
    struct job *job;
    struct resnet_workspace *ws;
    float *buf;             // input (c, h, w), then logits and probabilities
};

/* State shared by the worker threads. */
struct job {
    const struct resnet_model *model;
    const struct classify_opts *opts;
    char **paths;
    int n_paths;
    atomic_int next;
    atomic_bool stop;       // stdout failed: skip what is left
    struct result *results;
    pthread_mutex_t lock;
    pthread_cond_t ready;
};

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, struct classify_opts *o) {
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"weights", required_argument, NULL, 'w'},
        {"top", required_argument, NULL, 'k'},
        {"format", required_argument, NULL, 'f'},
        {"logits", no_argument, NULL, 'l'},
        {"threads", required_argument, NULL, 'j'},
        {"files-from", required_argument, NULL, 'T'},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":m:w:k:j:T:vqh", longopts,
                              NULL)) != -1) {
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
        case 'k':
            if (parse_int(optarg, 1, 1 << 20, &o->top)) {
                return usage_error(usage, "-k needs a positive number, not "
                                   "'%s'", optarg);
            }
            break;
        case 'f':
            if (strcmp(optarg, "text") == 0) {
                o->format = FORMAT_TEXT;
            } else if (strcmp(optarg, "json") == 0) {
                o->format = FORMAT_JSON;
            } else if (strcmp(optarg, "csv") == 0) {
                o->format = FORMAT_CSV;
            } else {
                return usage_error(usage, "unknown format '%s' (text, json "
                                   "or csv)", optarg);
            }
            break;
        case 'l':
            o->logits = true;
            break;
        case 'j':
            if (parse_int(optarg, 1, 1024, &o->threads)) {
                return usage_error(usage, "-j needs a number from 1 to "
                                   "1024, not '%s'", optarg);
            }
            break;
        case 'T':
            o->files_from = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return -1;
        default:
            return option_error(usage, opt, argv);
        }
    }
    if (!o->model || !*o->model) {
        return usage_error(usage, "no model given: use -m <model>");
    }
    if (optind == argc && !o->files_from) {
        return usage_error(usage, "no images given");
    }
    return 0;
}

/* Longest line a list file may hold: a path, with room to spare. */
#define MAX_LIST_LINE 65536

enum line_status { LINE_OK, LINE_EOF, LINE_ERROR, LINE_TOO_LONG, LINE_NUL };

/*
 * Reads one line of f into buf (MAX_LIST_LINE + 1 bytes) without its
 * LF or CRLF. Never holds more than the buffer, whatever f holds.
 */
static enum line_status read_line(FILE *f, char *buf, size_t *len) {
    int c;

    *len = 0;
    while ((c = getc(f)) != EOF && c != '\n') {
        if (c == '\0') {
            return LINE_NUL;
        }
        if (*len == MAX_LIST_LINE) {
            return LINE_TOO_LONG;
        }
        buf[(*len)++] = (char)c;
    }
    if (c == EOF && (ferror(f) || *len == 0)) {
        return ferror(f) ? LINE_ERROR : LINE_EOF;
    }
    *len -= *len > 0 && buf[*len - 1] == '\r';
    buf[*len] = '\0';
    return LINE_OK;
}

/*
 * Appends the lines of path (or standard input for "-") to *paths,
 * skipping empty ones. A line that is too long or holds a NUL byte makes
 * the whole list an error.
 */
static int read_list(const char *path, char ***paths, int *n) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    char *line = malloc(MAX_LIST_LINE + 1);
    enum line_status st;
    size_t len;
    int rc = EXIT_FAIL;
    long line_no = 0;

    if (!f || !line) {
        error("cannot open '%s': %s", path, strerror(f ? ENOMEM : errno));
        goto out;
    }
    while ((st = read_line(f, line, &len)) == LINE_OK) {
        char **p;

        line_no++;
        if (len == 0) {
            continue;
        }
        p = realloc(*paths, (size_t)(*n + 1) * sizeof *p);
        if (p) {
            *paths = p;
        }
        if (!p || !(p[*n] = strdup(line))) {
            error("out of memory reading '%s'", path);
            goto out;
        }
        (*n)++;
    }
    if (st == LINE_ERROR) {
        error("cannot read '%s': %s", path, strerror(errno));
    } else if (st != LINE_EOF) {
        error("cannot read '%s': line %ld is %s", path, line_no + 1,
              st == LINE_NUL ? "not text (it holds a NUL byte)"
                             : "too long");
    } else {
        rc = 0;
    }

out:
    free(line);
    if (f && f != stdin) {
        fclose(f);
    }
    return rc;
}

/* Keeps the k largest probabilities, most likely first; ties keep the
 * lower class index first, as torch.topk does on CPU. */
static void top_k(const float *prob, int n, int k, int *index, float *out) {
    for (int j = 0; j < k; j++) {
        index[j] = -1;
    }
    for (int i = 0; i < n; i++) {
        int j = k;

        while (j > 0 && (index[j - 1] < 0 || prob[i] > out[j - 1])) {
            j--;
        }
        if (j == k) {
            continue;
        }
        memmove(index + j + 1, index + j, (size_t)(k - j - 1) * sizeof *index);
        memmove(out + j + 1, out + j, (size_t)(k - j - 1) * sizeof *out);
        index[j] = i;
        out[j] = prob[i];
    }
}

/* Decodes, prepares and classifies one image into r. */
static void classify_one(const struct job *job, struct resnet_workspace *ws,
                         const char *path, float *input, float *logits,
                         float *prob, struct result *r) {
    const struct resnet_arch *arch = resnet_model_arch(job->model);
    int n = resnet_arch_n_classes(arch);
    int k = job->opts->top < n ? job->opts->top : n;
    struct resnet_error err = {0};
    struct resnet_image *img = NULL, *crop = NULL;
    const struct resnet_preprocess *pp = resnet_arch_preprocess(arch);

    r->rc = resnet_image_load(&img, path, 0, &err);
    if (!r->rc) {
        r->rc = resnet_image_prepare(&crop, img, pp, &err);
    }
    if (r->rc) {
        snprintf(r->msg, sizeof r->msg, "%s", err.msg);
        goto out;
    }
    resnet_image_normalize(crop, pp->mean, pp->std, input);
    resnet_model_forward(job->model, ws, input, logits);
    for (int i = 0; i < n; i++) {
        if (!isfinite(logits[i])) {
            r->rc = RESNET_EFORMAT;
            snprintf(r->msg, sizeof r->msg, "cannot classify '%s': logit %d "
                     "is %s (the weights overflow float32)", path, i,
                     isnan(logits[i]) ? "NaN" : "infinite");
            goto out;
        }
    }
    resnet_softmax(logits, prob, n);

    r->index = malloc((size_t)k * sizeof *r->index);
    r->prob = malloc((size_t)k * sizeof *r->prob);
    if (job->opts->logits) {
        r->logits = malloc((size_t)n * sizeof *r->logits);
    }
    if (!r->index || !r->prob || (job->opts->logits && !r->logits)) {
        r->rc = RESNET_ENOMEM;
        snprintf(r->msg, sizeof r->msg, "out of memory classifying '%s'",
                 path);
        goto out;
    }
    top_k(prob, n, k, r->index, r->prob);
    if (r->logits) {
        memcpy(r->logits, logits, (size_t)n * sizeof *logits);
    }

out:
    resnet_image_free(crop);
    resnet_image_free(img);
}

/* A worker: takes images in turn until none are left. */
static void *work(void *arg) {
    struct worker *w = arg;
    struct job *job = w->job;
    const struct resnet_arch *arch = resnet_model_arch(job->model);
    int c, h, wd, n = resnet_arch_n_classes(arch);
    float *logits;

    resnet_arch_input(arch, &c, &h, &wd);
    logits = w->buf + (size_t)c * h * wd;
    for (int i; (i = atomic_fetch_add(&job->next, 1)) < job->n_paths;) {
        struct result *r = &job->results[i];

        if (atomic_load(&job->stop)) {
            r->rc = -1;
        } else {
            classify_one(job, w->ws, job->paths[i], w->buf, logits,
                         logits + n, r);
        }
        pthread_mutex_lock(&job->lock);
        r->done = true;
        pthread_cond_broadcast(&job->ready);
        pthread_mutex_unlock(&job->lock);
    }
    return NULL;
}

static void free_workers(struct worker *w, int n) {
    for (int i = 0; w && i < n; i++) {
        resnet_workspace_free(w[i].ws);
        free(w[i].buf);
    }
    free(w);
}

/*
 * Gives each of n workers its workspace and buffers, so that a model too
 * large for memory fails once, here, rather than once per image.
 */
static struct worker *make_workers(struct job *job, int n) {
    const struct resnet_arch *arch = resnet_model_arch(job->model);
    struct worker *w = calloc((size_t)n, sizeof *w);
    struct resnet_error err = {0};
    int c, h, wd, rc = RESNET_ENOMEM;

    resnet_arch_input(arch, &c, &h, &wd);
    for (int i = 0; w && i < n; i++) {
        w[i].job = job;
        rc = resnet_workspace_new(&w[i].ws, job->model, &err);
        if (rc) {
            break;
        }
        w[i].buf = malloc(((size_t)c * h * wd +
                           2 * (size_t)resnet_arch_n_classes(arch)) *
                          sizeof *w[i].buf);
        if (!w[i].buf) {
            rc = RESNET_ENOMEM;
            break;
        }
    }
    if (rc) {
        if (err.msg[0]) {
            error("%s", err.msg);
        } else {
            error("cannot run model '%s': out of memory",
                  resnet_arch_name(arch));
        }
        free_workers(w, n);
        return NULL;
    }
    return w;
}

/* Prints s as a CSV field, quoted when it needs to be. */
static void csv_field(const char *s) {
    if (!s[strcspn(s, ",\"\r\n")]) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"') {
            putchar('"');
        }
        putchar(*s);
    }
    putchar('"');
}

/* Length of the valid UTF-8 sequence at s, or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s) {
    size_t n = s[0] < 0x80 ? 1 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2
             : s[0] >= 0xe0 && s[0] < 0xf0 ? 3
             : s[0] >= 0xf0 && s[0] < 0xf5 ? 4 : 0;

    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    // Overlong 3- and 4-byte forms, surrogates and code points past
    // U+10FFFF are not UTF-8 either.
    if ((n == 3 && ((s[0] == 0xe0 && s[1] < 0xa0) ||
                    (s[0] == 0xed && s[1] >= 0xa0))) ||
        (n == 4 && ((s[0] == 0xf0 && s[1] < 0x90) ||
                    (s[0] == 0xf4 && s[1] >= 0x90)))) {
        return 0;
    }
    return n;
}

/*
 * A file name as JSON can carry it: each byte that is not part of valid
 * UTF-8 becomes U+FFFD, as Python's errors="replace" does. A new string,
 * or NULL when out of memory.
 */
static char *json_safe(const char *path) {
    const unsigned char *p = (const unsigned char *)path;
    char *out = malloc(3 * strlen(path) + 1), *o = out;

    while (out && *p) {
        size_t n = utf8_len(p);

        if (n) {
            memcpy(o, p, n);
            o += n;
            p += n;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            p++;
        }
    }
    if (out) {
        *o = '\0';
    }
    return out;
}

/*
 * Prints a file name for the text format: as it is, or, when it holds a
 * tab, line break, other control character, backslash or double quote,
 * in double quotes with C escapes, as git quotes such paths, so that
 * every result stays one line of tab-separated fields.
 */
static void text_path(const char *path) {
    const unsigned char *p = (const unsigned char *)path;

    while (*p >= 0x20 && *p != 0x7f && *p != '\\' && *p != '"') {
        p++;
    }
    if (!*p) {
        fputs(path, stdout);
        return;
    }
    putchar('"');
    for (p = (const unsigned char *)path; *p; p++) {
        if (*p == '\t' || *p == '\n' || *p == '\r') {
            printf("\\%c", *p == '\t' ? 't' : *p == '\n' ? 'n' : 'r');
        } else if (*p == '\\' || *p == '"') {
            printf("\\%c", *p);
        } else if (*p < 0x20 || *p == 0x7f) {
            printf("\\%03o", *p);
        } else {
            putchar(*p);
        }
    }
    putchar('"');
}

/* A number as cJSON raw text: %.9g round-trips a float; null if not
 * finite, as JSON has no NaN. */
static cJSON *json_number(float x) {
    char buf[32];

    if (x != x || x - x != 0) {
        return cJSON_CreateNull();
    }
    snprintf(buf, sizeof buf, "%.9g", x);
    return cJSON_CreateRaw(buf);
}

static int print_json(const char *path, const struct result *r, int k,
                      int n, const char *const *labels) {
    cJSON *obj = cJSON_CreateObject();
    char *file = json_safe(path);
    cJSON *top;
    char *text;

    cJSON_AddStringToObject(obj, "file", file ? file : "");
    free(file);
    top = cJSON_AddArrayToObject(obj, "top");
    for (int j = 0; j < k; j++) {
        cJSON *c = cJSON_CreateObject();

        cJSON_AddNumberToObject(c, "index", r->index[j]);
        if (labels) {
            cJSON_AddStringToObject(c, "label", labels[r->index[j]]);
        } else {
            cJSON_AddNullToObject(c, "label");
        }
        cJSON_AddItemToObject(c, "prob", json_number(r->prob[j]));
        cJSON_AddItemToArray(top, c);
    }
    if (r->logits) {
        cJSON *all = cJSON_AddArrayToObject(obj, "logits");

        for (int i = 0; i < n; i++) {
            cJSON_AddItemToArray(all, json_number(r->logits[i]));
        }
    }
    text = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!text) {
        error("out of memory");
        return -1;
    }
    puts(text);
    free(text);
    return 0;
}

/* Prints one image's result in the chosen format. */
static int print_result(const struct classify_opts *o, const char *path,
                        const struct result *r, int n,
                        const char *const *labels) {
    int k = o->top < n ? o->top : n;

    if (o->format == FORMAT_JSON) {
        return print_json(path, r, k, n, labels);
    }
    for (int j = 0; j < k; j++) {
        int c = r->index[j];
        const char *label = labels ? labels[c] : NULL;

        if (o->format == FORMAT_CSV) {
            csv_field(path);
            printf(",%d,%d,", j + 1, c);
            csv_field(label ? label : "");
            printf(",%.6f", r->prob[j]);
            if (o->logits) {
                printf(",%.9g", r->logits[c]);
            }
            putchar('\n');
            continue;
        }
        text_path(path);
        printf("\t%d\t%.6f\t", j + 1, r->prob[j]);
        if (o->logits) {
            printf("%.9g\t", r->logits[c]);
        }
        printf("%d\t%s\n", c, label ? label : "-");
    }
    return 0;
}

/* Runs the workers and prints each result in input order as it is
 * ready; returns the number of images that failed. */
static int run_all(struct job *job, struct worker *workers, int n_threads) {
    const struct resnet_arch *arch = resnet_model_arch(job->model);
    int n = resnet_arch_n_classes(arch);
    pthread_t *tids = calloc((size_t)n_threads, sizeof *tids);
    int n_started = 0, n_failed = 0;

    for (; tids && n_started < n_threads; n_started++) {
        if (pthread_create(&tids[n_started], NULL, work,
                           &workers[n_started])) {
            break;
        }
    }
    if (n_started == 0) {
        // No threads to be had: do the work here.
        work(&workers[0]);
    }
    if (job->opts->format == FORMAT_CSV) {
        printf("file,rank,index,label,prob%s\n",
               job->opts->logits ? ",logit" : "");
    }

    for (int i = 0; i < job->n_paths; i++) {
        struct result *r = &job->results[i];

        pthread_mutex_lock(&job->lock);
        while (!r->done) {
            pthread_cond_wait(&job->ready, &job->lock);
        }
        pthread_mutex_unlock(&job->lock);
        if (atomic_load(&job->stop)) {
            n_failed++;
        } else if (r->rc) {
            fflush(stdout);
            error("%s", r->msg);
            n_failed++;
        } else if (print_result(job->opts, job->paths[i], r, n,
                                resnet_arch_labels(arch))) {
            n_failed++;
        }
        // Nobody reads the rest once stdout is gone.
        if (ferror(stdout)) {
            atomic_store(&job->stop, true);
        }
        free(r->index);
        free(r->prob);
        free(r->logits);
    }
    for (int t = 0; t < n_started; t++) {
        pthread_join(tids[t], NULL);
    }
    free(tids);
    return n_failed;
}

static double seconds(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cmd_classify(int argc, char **argv) {
    struct classify_opts o = {.model = getenv("RESNET_MODEL"), .top = 5,
                              .format = FORMAT_TEXT, .threads = 0};
    struct job job = {.lock = PTHREAD_MUTEX_INITIALIZER,
                      .ready = PTHREAD_COND_INITIALIZER};
    struct resnet_error err = {0};
    struct resnet_arch *arch = NULL;
    struct resnet_model *model = NULL;
    char *weights = NULL;
    char **paths = NULL;
    struct worker *workers = NULL;
    int n_paths = 0, n_threads = 0, n_failed, rc;
    double t0 = seconds();

    // Parse; the images are the arguments, then the list file's lines.
    rc = parse_args(argc, argv, &o);
    if (rc) {
        return rc < 0 ? EXIT_OK : rc;
    }
    rc = EXIT_FAIL;
    paths = malloc((size_t)(argc - optind + 1) * sizeof *paths);
    if (!paths) {
        error("out of memory");
        goto out;
    }
    for (int i = optind; i < argc; i++) {
        if (!(paths[n_paths] = strdup(argv[i]))) {
            error("out of memory");
            goto out;
        }
        n_paths++;
    }
    if (o.files_from && read_list(o.files_from, &paths, &n_paths)) {
        goto out;
    }

    // Load the model.
    if (open_model_files(o.model, o.weights, true, &arch, &weights)) {
        goto out;
    }
    rc = resnet_model_load(&model, arch, weights, &err);
    arch = NULL;
    if (rc) {
        error_lib(rc, &err);
        rc = EXIT_FAIL;
        goto out;
    }
    if (verbosity >= 2) {
        fprintf(stderr, "resnet: model '%s' with weights '%s' loaded in "
                "%.3f s\n", resnet_arch_name(resnet_model_arch(model)),
                weights, seconds() - t0);
    }

    // One image per worker at a time. OpenBLAS stays on one thread: its
    // threads split sums differently, and the same image must give the
    // same logits alone or in a batch.
    // TODO: one image uses one core, slow for a single large image; split
    // a pass across threads without changing any sum (the speed issue).
    n_threads = o.threads ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    n_threads = n_threads < 1 ? 1 : n_threads;
    n_threads = n_paths < n_threads ? (n_paths > 0 ? n_paths : 1) : n_threads;
    resnet_set_threads(1);

    rc = EXIT_FAIL;
    job.model = model;
    job.opts = &o;
    job.paths = paths;
    job.n_paths = n_paths;
    job.results = calloc((size_t)n_paths + 1, sizeof *job.results);
    if (!job.results) {
        error("out of memory");
        goto out;
    }
    workers = make_workers(&job, n_threads);
    if (!workers) {
        goto out;
    }
    t0 = seconds();
    n_failed = run_all(&job, workers, n_threads);
    if (verbosity >= 2) {
        double t = seconds() - t0;

        fprintf(stderr, "resnet: %d image%s in %.3f s (%.2f ms an image, "
                "%d thread%s)\n", n_paths, n_paths == 1 ? "" : "s", t,
                n_paths ? 1e3 * t / n_paths : 0.0, n_threads,
                n_threads == 1 ? "" : "s");
    }
    rc = n_failed ? EXIT_FAIL : EXIT_OK;

out:
    free_workers(workers, n_threads);
    free(job.results);
    resnet_model_free(model);
    resnet_arch_free(arch);
    free(weights);
    for (int i = 0; i < n_paths; i++) {
        free(paths[i]);
    }
    free(paths);
    return rc;
}
