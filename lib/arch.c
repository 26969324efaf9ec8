/*
 * An architecture: a parsed description unrolled into the list of layers
 * the forward pass runs (stem, blocks with their shortcuts, head), with
 * each layer's shapes, parameters and multiply-accumulates.
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

/* Largest description or label file we read. */
#define MAX_TEXT_FILE (16u << 20)

/* The state of the unrolling: where the next layer goes, current shape. */
struct builder {
    struct resnet_arch *arch;
    int cap;
    int value;       // value holding the current activation
    int c, h, w;     // its shape
    enum resnet_layer_part part;
    int stage, block;
    struct resnet_error *err;
};

/* Appends a layer named prefix.suffix (suffix may be NULL) and returns it,
 * or NULL when out of memory. */
static struct rn_layer *add(struct builder *b, enum resnet_layer_kind kind,
                            const char *prefix, const char *suffix) {
    struct resnet_arch *a = b->arch;
    struct rn_layer *l;
    size_t len = strlen(prefix) + (suffix ? strlen(suffix) + 1 : 0) + 1;

    if (a->n_layers == b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        struct rn_layer *p = realloc(a->layers, (size_t)cap * sizeof *p);

        if (!p) {
            return NULL;
        }
        a->layers = p;
        b->cap = cap;
    }
    l = &a->layers[a->n_layers];
    memset(l, 0, sizeof *l);
    l->name = malloc(len);
    if (!l->name) {
        return NULL;
    }
    snprintf(l->name, len, "%s%s%s", prefix, suffix ? "." : "",
             suffix ? suffix : "");
    a->n_layers++;

    l->info.name = l->name;
    l->info.kind = kind;
    l->info.part = b->part;
    l->info.stage = b->stage;
    l->info.block = b->block;
    l->info.c_in = l->info.c_out = b->c;
    l->info.h_in = l->info.h_out = b->h;
    l->info.w_in = l->info.w_out = b->w;
    l->in = l->out = b->value;
    l->in2 = -1;
    return l;
}

/* Output size of a window sliding over n with padding, as PyTorch has it
 * (floor mode); 0 when the window does not fit. */
static int out_size(int n, int k, int stride, int pad) {
    int span = n + 2 * pad - k;

    return span < 0 ? 0 : span / stride + 1;
}

static int too_small(struct builder *b, const char *name) {
    return rn_error(b->err, RESNET_EINVAL, 0,
                    "input %dx%d is too small for '%s' of '%s'",
                    b->arch->h_in, b->arch->w_in, name,
                    b->arch->desc->name);
}

/* conv (c -> c_out, k x k) reading value `in` of shape (c, h, w), writing
 * a new value. */
static int conv(struct builder *b, const char *prefix, const char *suffix,
                int c_out, int k, int stride, int pad, int groups,
                bool has_bias) {
    struct rn_layer *l = add(b, RESNET_LAYER_CONV, prefix, suffix);
    struct resnet_layer_info *i;

    if (!l) {
        return RESNET_ENOMEM;
    }
    i = &l->info;
    i->c_out = c_out;
    i->h_out = out_size(b->h, k, stride, pad);
    i->w_out = out_size(b->w, k, stride, pad);
    if (i->h_out == 0 || i->w_out == 0) {
        return too_small(b, l->name);
    }
    i->k_h = i->k_w = k;
    i->stride = stride;
    i->pad = pad;
    i->groups = groups;
    i->has_bias = has_bias;
    i->n_params = (size_t)c_out * (size_t)(b->c / groups) * (size_t)k * k +
                  (has_bias ? (size_t)c_out : 0);
    i->n_macs = (uint64_t)c_out * (uint64_t)i->h_out * (uint64_t)i->w_out *
                (uint64_t)(b->c / groups) * (uint64_t)k * (uint64_t)k;

    l->out = b->arch->n_values++;
    b->value = l->out;
    b->c = c_out;
    b->h = i->h_out;
    b->w = i->w_out;
    return RESNET_OK;
}

/* BatchNorm in place; counted as PyTorch counts parameters (weight and
 * bias; the running statistics are buffers). */
static int bn(struct builder *b, const char *prefix, const char *suffix) {
    struct rn_layer *l = add(b, RESNET_LAYER_BN, prefix, suffix);

    if (!l) {
        return RESNET_ENOMEM;
    }
    l->info.n_params = 2 * (size_t)b->c;
    return RESNET_OK;
}

static int relu(struct builder *b, const char *prefix) {
    return add(b, RESNET_LAYER_RELU, prefix, "relu") ? RESNET_OK
                                                     : RESNET_ENOMEM;
}

static int maxpool(struct builder *b, const struct rn_desc *d) {
    struct rn_layer *l = add(b, RESNET_LAYER_MAXPOOL, "maxpool", NULL);
    struct resnet_layer_info *i;

    if (!l) {
        return RESNET_ENOMEM;
    }
    i = &l->info;
    i->k_h = i->k_w = d->pool_kernel;
    i->stride = d->pool_stride;
    i->pad = d->pool_pad;
    i->h_out = out_size(b->h, d->pool_kernel, d->pool_stride, d->pool_pad);
    i->w_out = out_size(b->w, d->pool_kernel, d->pool_stride, d->pool_pad);
    if (i->h_out == 0 || i->w_out == 0) {
        return too_small(b, "maxpool");
    }
    l->out = b->arch->n_values++;
    b->value = l->out;
    b->h = i->h_out;
    b->w = i->w_out;
    return RESNET_OK;
}

/* The stem: conv, BN, ReLU, and the optional max pool. */
static int build_stem(struct builder *b) {
    const struct rn_desc *d = b->arch->desc;
    int rc;

    b->part = RESNET_PART_STEM;
    if ((rc = conv(b, d->stem_conv, NULL, d->stem_channels, d->stem_kernel,
                   d->stem_stride, d->stem_pad, 1, d->stem_bn == NULL)) ||
        (d->stem_bn && (rc = bn(b, d->stem_bn, NULL))) ||
        !add(b, RESNET_LAYER_RELU, "relu", NULL)) {
        return rc ? rc : RESNET_ENOMEM;
    }
    return d->has_maxpool ? maxpool(b, d) : RESNET_OK;
}

/*
 * The shortcut of a block that changes shape, reading value x of shape
 * (c, h, w): a projection (1x1 conv with stride, BN) or option A.
 */
static int build_shortcut(struct builder *b, const char *prefix, int c_out,
                          int stride) {
    const struct rn_desc *d = b->arch->desc;
    struct rn_layer *l;
    int rc;

    b->part = RESNET_PART_SHORTCUT;
    if (!d->is_pad_shortcut) {
        if ((rc = conv(b, prefix, "downsample.0", c_out, 1, stride, 0, 1,
                       false))) {
            return rc;
        }
        return bn(b, prefix, "downsample.1");
    }

    // Option A: subsample, then zero channels split before and after.
    if (c_out < b->c) {
        return rn_error(b->err, RESNET_EINVAL, 0,
                        "%s: the \"pad\" shortcut of '%s' cannot reduce %d "
                        "channels to %d", d->name, prefix, b->c, c_out);
    }
    l = add(b, RESNET_LAYER_SHORTCUT, prefix, "shortcut");
    if (!l) {
        return RESNET_ENOMEM;
    }
    l->info.stride = stride;
    l->info.c_out = c_out;
    l->info.h_out = (b->h + stride - 1) / stride;
    l->info.w_out = (b->w + stride - 1) / stride;
    l->out = b->arch->n_values++;
    b->value = l->out;
    b->c = c_out;
    b->h = l->info.h_out;
    b->w = l->info.w_out;
    return RESNET_OK;
}

/* One residual block: F(x) on the block part, the shortcut, the add. */
static int build_block(struct builder *b, const char *prefix, int planes,
                       int stride) {
    const struct rn_desc *d = b->arch->desc;
    int x = b->value, c = b->c, h = b->h, w = b->w;
    int expansion = d->is_bottleneck ? 4 : 1;
    int c_out = planes * expansion;
    int fx, rc;
    struct rn_layer *l;

    // The residual branch F(x).
    b->part = RESNET_PART_BLOCK;
    if (d->is_bottleneck) {
        int width = (int)((long)planes * d->width_per_group / 64) * d->groups;
        int s1 = d->stride_on_1x1 ? stride : 1;
        int s3 = d->stride_on_1x1 ? 1 : stride;

        if ((rc = conv(b, prefix, "conv1", width, 1, s1, 0, 1, false)) ||
            (rc = bn(b, prefix, "bn1")) || (rc = relu(b, prefix)) ||
            (rc = conv(b, prefix, "conv2", width, 3, s3, 1, d->groups,
                       false)) ||
            (rc = bn(b, prefix, "bn2")) || (rc = relu(b, prefix)) ||
            (rc = conv(b, prefix, "conv3", c_out, 1, 1, 0, 1, false)) ||
            (rc = bn(b, prefix, "bn3"))) {
            return rc;
        }
    } else if ((rc = conv(b, prefix, "conv1", c_out, 3, stride, 1, 1,
                          false)) ||
               (rc = bn(b, prefix, "bn1")) || (rc = relu(b, prefix)) ||
               (rc = conv(b, prefix, "conv2", c_out, 3, 1, 1, 1, false)) ||
               (rc = bn(b, prefix, "bn2"))) {
        return rc;
    }
    fx = b->value;

    // The shortcut, from x again.
    if (stride != 1 || c != c_out) {
        b->value = x;
        b->c = c;
        b->h = h;
        b->w = w;
        if ((rc = build_shortcut(b, prefix, c_out, stride))) {
            return rc;
        }
        x = b->value;
    }

    // x + F(x), then ReLU.
    b->part = RESNET_PART_BLOCK;
    l = add(b, RESNET_LAYER_ADD, prefix, "add");
    if (!l) {
        return RESNET_ENOMEM;
    }
    l->in = fx;
    l->in2 = x;
    l->out = b->arch->n_values++;
    b->value = l->out;
    return relu(b, prefix);
}

static int build_head(struct builder *b) {
    const struct rn_desc *d = b->arch->desc;
    struct rn_layer *l;

    b->part = RESNET_PART_HEAD;
    b->stage = b->block = -1;
    l = add(b, RESNET_LAYER_AVGPOOL, "avgpool", NULL);
    if (!l) {
        return RESNET_ENOMEM;
    }
    l->info.h_out = l->info.w_out = 1;
    l->out = b->arch->n_values++;
    b->value = l->out;
    b->h = b->w = 1;

    l = add(b, RESNET_LAYER_LINEAR, d->fc, NULL);
    if (!l) {
        return RESNET_ENOMEM;
    }
    l->info.c_out = d->n_classes;
    l->info.has_bias = true;
    l->info.n_params = (size_t)d->n_classes * (size_t)b->c + d->n_classes;
    l->info.n_macs = (uint64_t)d->n_classes * (uint64_t)b->c;
    l->out = b->arch->n_values++;
    return RESNET_OK;
}

static void free_layers(struct resnet_arch *a) {
    for (int i = 0; i < a->n_layers; i++) {
        free(a->layers[i].name);
    }
    free(a->layers);
    a->layers = NULL;
    a->n_layers = 0;
}

/* Unrolls the description for an input of h x w. */
static int build(struct resnet_arch *a, int h, int w,
                 struct resnet_error *err) {
    const struct rn_desc *d = a->desc;
    struct builder b = {a, 0, 0, d->c_in, h, w, RESNET_PART_STEM, -1, -1,
                        err};
    char prefix[96];
    int rc;

    free_layers(a);
    a->h_in = h;
    a->w_in = w;
    a->n_values = 1;
    if ((rc = build_stem(&b))) {
        goto out;
    }
    for (int s = 0; s < d->n_stages; s++) {
        for (int i = 0; i < d->stages[s].n_blocks; i++) {
            b.stage = s;
            b.block = i;
            snprintf(prefix, sizeof prefix, "%s.%d", d->stages[s].name, i);
            if ((rc = build_block(&b, prefix, d->stages[s].planes,
                                  i == 0 ? d->stages[s].stride : 1))) {
                goto out;
            }
        }
    }
    rc = build_head(&b);

out:
    if (rc == RESNET_ENOMEM) {
        rn_error(err, rc, 0, "out of memory");
    }
    return rc;
}

int rn_read_text(const char *path, char **out, size_t *len,
                 struct resnet_error *err) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n;
    int rc = RESNET_OK;

    *out = NULL;
    if (!f) {
        return rn_error(err, RESNET_EIO, errno, "cannot open '%s'", path);
    }
    buf = malloc(MAX_TEXT_FILE + 1);
    if (!buf) {
        rc = rn_error(err, RESNET_ENOMEM, 0, "out of memory");
        goto out;
    }
    n = fread(buf, 1, MAX_TEXT_FILE + 1, f);
    if (ferror(f)) {
        rc = rn_error(err, RESNET_EIO, errno, "cannot read '%s'", path);
    } else if (n > MAX_TEXT_FILE) {
        rc = rn_error(err, RESNET_EFORMAT, 0, "'%s' is too large (over %u MiB)",
                      path, MAX_TEXT_FILE >> 20);
    }
    if (rc) {
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;

out:
    free(buf);
    fclose(f);
    return rc;
}

/* Finds name beside the description, then along the search path. */
static int find_beside(const struct resnet_arch *a, const char *name,
                       char **out, struct resnet_error *err) {
    const char *slash = strrchr(a->path, '/');
    char *search = resnet_search_path();
    char *path = NULL;
    size_t len;
    int rc;

    if (!search) {
        return rn_error(err, RESNET_ENOMEM, 0, "out of memory");
    }
    len = strlen(a->path) + 1 + strlen(search) + 1;
    path = malloc(len);
    if (!path) {
        free(search);
        return rn_error(err, RESNET_ENOMEM, 0, "out of memory");
    }
    snprintf(path, len, "%.*s:%s", slash ? (int)(slash - a->path) : 1,
             slash ? a->path : ".", search);
    rc = resnet_find_file(out, name, NULL, path, err);
    free(path);
    free(search);
    return rc;
}

/*
 * Finds the label file. Labels only name the classes, so a missing file
 * is a warning and leaves *path NULL; one that is there but is no regular
 * file (a folder, a FIFO) is an error.
 */
static int find_labels(const struct resnet_arch *a, char **path,
                       struct resnet_error *err) {
    const char *name = a->desc->labels;
    const char *slash = strrchr(a->path, '/');
    struct resnet_error why = {0};
    struct stat st;
    char beside[4096];
    int rc = find_beside(a, name, path, &why);
    bool exists;

    if (rc != RESNET_EIO) {
        if (rc && err) {
            *err = why;
        }
        return rc;
    }

    // Where the name points: itself when a path, else beside the description.
    if (strchr(name, '/')) {
        snprintf(beside, sizeof beside, "%s", name);
    } else {
        snprintf(beside, sizeof beside, "%.*s/%s",
                 slash ? (int)(slash - a->path) : 1, slash ? a->path : ".",
                 name);
    }
    exists = stat(beside, &st) == 0;
    if (!exists && (errno == ENOENT || !strchr(name, '/'))) {
        rn_log(RESNET_LOG_WARN,
               "cannot find label file '%s' for '%s': printing class indices",
               name, a->desc->name);
        return RESNET_OK;
    }
    if (exists && !S_ISREG(st.st_mode)) {
        return rn_error(err, RESNET_EIO, S_ISDIR(st.st_mode) ? EISDIR : 0,
                        "cannot read label file '%s'%s", beside,
                        S_ISDIR(st.st_mode) ? "" : ": not a regular file");
    }
    if (err) {
        *err = why;
    }
    return rc;
}

/*
 * Reads the label file: one class name per line, n_classes lines. Without
 * the file a->labels stays NULL.
 */
static int load_labels(struct resnet_arch *a, struct resnet_error *err) {
    int n = a->desc->n_classes;
    char *path = NULL, *text = NULL, *line;
    size_t len;
    int rc, i = 0;

    if ((rc = find_labels(a, &path, err)) || !path ||
        (rc = rn_read_text(path, &text, &len, err))) {
        goto out;
    }
    a->labels = calloc((size_t)n, sizeof *a->labels);
    if (!a->labels) {
        rc = rn_error(err, RESNET_ENOMEM, 0, "out of memory");
        goto out;
    }
    // A UTF-8 byte order mark is no part of the first label.
    line = strncmp(text, "\xef\xbb\xbf", 3) == 0 ? text + 3 : text;
    for (; *line && i < n; i++) {
        size_t end = strcspn(line, "\n");
        size_t cut = end > 0 && line[end - 1] == '\r' ? end - 1 : end;

        a->labels[i] = strndup(line, cut);
        if (!a->labels[i]) {
            rc = rn_error(err, RESNET_ENOMEM, 0, "out of memory");
            goto out;
        }
        line += end + (line[end] == '\n');
    }
    if (i < n || *line) {
        rc = rn_error(err, RESNET_EFORMAT, 0,
                      "label file '%s' has %s lines than the %d classes of "
                      "'%s'", path, i < n ? "fewer" : "more", n,
                      a->desc->name);
    }

out:
    free(text);
    free(path);
    return rc;
}

int resnet_arch_load(struct resnet_arch **out, const char *path,
                     struct resnet_error *err) {
    struct resnet_arch *a;
    char *text = NULL;
    size_t len;
    int rc;

    *out = NULL;
    a = calloc(1, sizeof *a);
    if (!a || !(a->path = strdup(path))) {
        free(a);
        return rn_error(err, RESNET_ENOMEM, 0, "out of memory");
    }
    if ((rc = rn_read_text(path, &text, &len, err)) ||
        (rc = rn_desc_parse(&a->desc, text, len, path, err)) ||
        (rc = build(a, a->desc->h_in, a->desc->w_in, err)) ||
        (a->desc->labels && (rc = load_labels(a, err)))) {
        goto out;
    }
    *out = a;
    a = NULL;

out:
    free(text);
    resnet_arch_free(a);
    return rc;
}

void resnet_arch_free(struct resnet_arch *a) {
    if (!a) {
        return;
    }
    for (int i = 0; a->labels && i < a->desc->n_classes; i++) {
        free(a->labels[i]);
    }
    free(a->labels);
    free_layers(a);
    rn_desc_free(a->desc);
    free(a->path);
    free(a);
}

const char *resnet_arch_name(const struct resnet_arch *a) {
    return a->desc->name;
}

const char *resnet_arch_path(const struct resnet_arch *a) {
    return a->path;
}

const struct resnet_preprocess *
resnet_arch_preprocess(const struct resnet_arch *a) {
    return &a->desc->pp;
}

void resnet_arch_input(const struct resnet_arch *a, int *c, int *h, int *w) {
    *c = a->desc->c_in;
    *h = a->h_in;
    *w = a->w_in;
}

int resnet_arch_n_classes(const struct resnet_arch *a) {
    return a->desc->n_classes;
}

const char *resnet_arch_weights(const struct resnet_arch *a) {
    return a->desc->weights;
}

int resnet_arch_find_file(const struct resnet_arch *a, const char *name,
                          char **out, struct resnet_error *err) {
    return find_beside(a, name, out, err);
}

const char *const *resnet_arch_labels(const struct resnet_arch *a) {
    return (const char *const *)a->labels;
}

int resnet_arch_n_layers(const struct resnet_arch *a) {
    return a->n_layers;
}

void resnet_arch_layer(const struct resnet_arch *a, int i,
                       struct resnet_layer_info *info) {
    *info = a->layers[i].info;
    info->in = a->layers[i].in;
    info->in2 = a->layers[i].in2;
    info->out = a->layers[i].out;
}

int resnet_arch_set_input(struct resnet_arch *a, int h, int w,
                          struct resnet_error *err) {
    int rc = build(a, h, w, err);

    // Leave the architecture usable at its own size on failure.
    if (rc && h != a->desc->h_in) {
        build(a, a->desc->h_in, a->desc->w_in, NULL);
    }
    return rc;
}

/* Appends the tensor name.suffix of the given shape. */
static void expect(struct rn_expected *e, int layer, const char *name,
                   const char *suffix, int n_dims, int64_t d0, int64_t d1,
                   int64_t d2, int64_t d3) {
    snprintf(e->name, sizeof e->name, "%s.%s", name, suffix);
    e->layer = layer;
    e->n_dims = n_dims;
    e->shape[0] = d0;
    e->shape[1] = d1;
    e->shape[2] = d2;
    e->shape[3] = d3;
}

int rn_arch_expected(const struct resnet_arch *a, struct rn_expected **out,
                     int *n, struct resnet_error *err) {
    static const char *const bn_parts[] = {"weight", "bias", "running_mean",
                                           "running_var"};
    struct rn_expected *e;
    int k = 0;

    // At most four tensors a layer.
    e = calloc((size_t)a->n_layers * 4, sizeof *e);
    *out = e;
    if (!e) {
        return rn_error(err, RESNET_ENOMEM, 0, "out of memory");
    }
    for (int i = 0; i < a->n_layers; i++) {
        const struct resnet_layer_info *l = &a->layers[i].info;

        switch (l->kind) {
        case RESNET_LAYER_CONV:
            expect(&e[k++], i, l->name, "weight", 4, l->c_out,
                   l->c_in / l->groups, l->k_h, l->k_w);
            break;
        case RESNET_LAYER_LINEAR:
            expect(&e[k++], i, l->name, "weight", 2, l->c_out, l->c_in, 0, 0);
            break;
        case RESNET_LAYER_BN:
            for (int j = 0; j < 4; j++) {
                expect(&e[k++], i, l->name, bn_parts[j], 1, l->c_in, 0, 0, 0);
            }
            break;
        default:
            break;
        }
        if (l->has_bias) {
            expect(&e[k++], i, l->name, "bias", 1, l->c_out, 0, 0, 0);
        }
    }
    *n = k;
    return RESNET_OK;
}

int rn_arch_parse(struct resnet_arch **out, const char *json, size_t len,
                  const char *name, struct resnet_error *err) {
    struct resnet_arch *a;
    int rc;

    *out = NULL;
    a = calloc(1, sizeof *a);
    if (!a || !(a->path = strdup(name))) {
        free(a);
        return rn_error(err, RESNET_ENOMEM, 0, "out of memory");
    }
    if ((rc = rn_desc_parse(&a->desc, json, len, name, err)) ||
        (rc = build(a, a->desc->h_in, a->desc->w_in, err))) {
        resnet_arch_free(a);
        return rc;
    }
    *out = a;
    return RESNET_OK;
}
