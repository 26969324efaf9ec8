/*
 * Checking a weights file against an architecture: every tensor the
 * layers read, with its shape, dtype and values, and nothing else. All
 * problems are reported, not just the first, so a user sees at once how
 * a file differs from a description. The model loader and convert use the
 * same check; recognising a network uses its names-and-shapes part.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char tracked_suffix[] = ".num_batches_tracked";

/* The state of one check: where problems go and how many there were. */
struct checker {
    const char *path;   // named in messages, or NULL
    resnet_problem_fn fn;
    void *ctx;
    int n_problems;
    int code;           // the first problem's RESNET_E* code
    struct resnet_error *err;
};

/* "64x3x7x7"; "scalar" for no dimensions. */
static void shape_str(char *buf, size_t size, int n_dims,
                      const int64_t *shape) {
    size_t len = 0;

    buf[0] = '\0';
    for (int i = 0; i < n_dims && len < size; i++) {
        len += (size_t)snprintf(buf + len, size - len, "%s%lld",
                                i ? "x" : "", (long long)shape[i]);
    }
    if (n_dims == 0) {
        snprintf(buf, size, "scalar");
    }
}

/*
 * Reports a problem: the message is "<what> '<tensor>'", then " in
 * '<path>'" when the checker names its file, then " (expected <e>, got
 * <a>)" or " (<a>)" when there is something to show.
 */
static void report(struct checker *c, enum resnet_problem_kind kind,
                   const char *what, const char *tensor,
                   const char *expected, const char *actual) {
    static const int codes[] = {
        [RESNET_PROBLEM_MISSING] = RESNET_ESHAPE,
        [RESNET_PROBLEM_UNEXPECTED] = RESNET_ESHAPE,
        [RESNET_PROBLEM_SHAPE] = RESNET_ESHAPE,
        [RESNET_PROBLEM_DTYPE] = RESNET_EUNSUPPORTED,
        [RESNET_PROBLEM_VALUES] = RESNET_EFORMAT,
        [RESNET_PROBLEM_VARIANCE] = RESNET_EFORMAT,
    };
    struct resnet_problem p = {.kind = kind, .tensor = tensor};
    char where[128] = "";
    char detail[160] = "";

    snprintf(p.expected, sizeof p.expected, "%s", expected);
    snprintf(p.actual, sizeof p.actual, "%s", actual);
    if (c->path) {
        snprintf(where, sizeof where, " in '%s'", c->path);
    }
    if (*expected) {
        snprintf(detail, sizeof detail, " (expected %s, got %s)", expected,
                 actual);
    } else if (*actual) {
        snprintf(detail, sizeof detail, " (%s)", actual);
    }
    snprintf(p.msg, sizeof p.msg, "%s '%s'%s%s", what, tensor, where,
             detail);

    if (c->n_problems++ == 0) {
        c->code = rn_error(c->err, codes[kind], 0, "%s", p.msg);
    }
    if (c->fn) {
        c->fn(c->ctx, &p);
    }
}

static bool is_float_dtype(enum rn_dtype d) {
    return d == RN_DTYPE_F32 || d == RN_DTYPE_F16 || d == RN_DTYPE_BF16;
}

/* Element i of t (a float dtype) as its bits, widened to 32. */
static uint32_t elem_bits(const struct rn_tensor *t, size_t i) {
    const unsigned char *p = t->data;
    uint16_t h;
    uint32_t w;

    if (t->dtype == RN_DTYPE_F32) {
        memcpy(&w, p + 4 * i, 4);
        return w;
    }
    memcpy(&h, p + 2 * i, 2);
    return h;
}

/* Element i of t as float, through the library's one converter. */
static float elem_value(const struct rn_tensor *t, size_t i) {
    struct rn_tensor one = *t;
    size_t size = rn_dtype_size(t->dtype);
    float v = 0;

    one.data = (const unsigned char *)t->data + i * size;
    one.n_elems = 1;
    one.n_bytes = size;
    rn_tensor_to_f32(&one, &v, NULL);
    return v;
}

/*
 * Looks at every value of t, a float tensor: NaN and Inf are always
 * problems; for a BatchNorm running_var, so is a value not above zero.
 * Works on the bits, so no value is converted unless it is reported.
 */
static void check_values(struct checker *c, const struct rn_tensor *t,
                         bool is_variance) {
    uint32_t exp_mask = t->dtype == RN_DTYPE_F32    ? 0x7f800000u
                        : t->dtype == RN_DTYPE_F16 ? 0x7c00u
                                                   : 0x7f80u;
    uint32_t sign = t->dtype == RN_DTYPE_F32 ? 0x80000000u : 0x8000u;
    size_t n_nan = 0, n_inf = 0, n_low = 0, first = 0, first_low = 0;
    char buf[160];

    for (size_t i = 0; i < t->n_elems; i++) {
        uint32_t b = elem_bits(t, i);

        if ((b & exp_mask) == exp_mask) {
            first = n_nan + n_inf == 0 ? i : first;
            n_nan += (b & ~sign & ~exp_mask) != 0;
            n_inf += (b & ~sign & ~exp_mask) == 0;
        } else if (is_variance && ((b & sign) || (b & ~sign) == 0)) {
            // Negative, or zero of either sign.
            first_low = n_low++ == 0 ? i : first_low;
        }
    }
    if (n_nan + n_inf) {
        snprintf(buf, sizeof buf, "%zu NaN and %zu Inf of %zu, first at "
                 "index %zu", n_nan, n_inf, t->n_elems, first);
        report(c, RESNET_PROBLEM_VALUES, "bad values for", t->name, "",
               buf);
    }
    if (n_low) {
        snprintf(buf, sizeof buf, "%zu of %zu not above zero, first %g at "
                 "index %zu", n_low, t->n_elems,
                 (double)elem_value(t, first_low), first_low);
        report(c, RESNET_PROBLEM_VARIANCE, "bad variance for", t->name, "",
               buf);
    }
}

/* The tensor of the list called name, or NULL. */
static const struct rn_tensor *find(const struct rn_tensor *tensors, int n,
                                    const char *name) {
    for (int i = 0; i < n; i++) {
        if (strcmp(tensors[i].name, name) == 0) {
            return &tensors[i];
        }
    }
    return NULL;
}

/*
 * Checks the tensor e asks for: there and shaped, then, unless
 * shapes_only, a float type with finite values.
 */
static void check_expected(struct checker *c, const struct resnet_arch *a,
                           const struct rn_tensor *tensors, int n_tensors,
                           bool shapes_only, const struct rn_expected *e) {
    const struct rn_tensor *t = find(tensors, n_tensors, e->name);
    bool same = t && t->n_dims == e->n_dims;
    size_t len = strlen(e->name);
    bool is_variance;
    char want[64], got[64];

    if (!t) {
        report(c, RESNET_PROBLEM_MISSING, "missing tensor", e->name, "", "");
        return;
    }
    for (int d = 0; same && d < t->n_dims; d++) {
        same = t->shape[d] == e->shape[d];
    }
    if (!same) {
        shape_str(want, sizeof want, e->n_dims, e->shape);
        shape_str(got, sizeof got, t->n_dims, t->shape);
        report(c, RESNET_PROBLEM_SHAPE, "bad shape for", e->name, want, got);
        return;
    }
    if (shapes_only) {
        return;
    }
    if (!is_float_dtype(t->dtype)) {
        report(c, RESNET_PROBLEM_DTYPE, "bad dtype for", e->name,
               "F32, F16 or BF16", rn_dtype_name(t->dtype));
        return;
    }
    is_variance = a->layers[e->layer].info.kind == RESNET_LAYER_BN &&
                  len > 12 && strcmp(e->name + len - 12, ".running_var") == 0;
    check_values(c, t, is_variance);
}

/* Whether name is one of the n expected tensors, or the batch counter
 * of a BatchNorm layer. */
static bool is_known(const struct resnet_arch *a, const char *name,
                     const struct rn_expected *e, int n) {
    size_t len = strlen(name), suffix = strlen(tracked_suffix);

    for (int i = 0; i < n; i++) {
        if (strcmp(name, e[i].name) == 0) {
            return true;
        }
    }
    if (len <= suffix || strcmp(name + len - suffix, tracked_suffix) != 0) {
        return false;
    }
    for (int i = 0; i < a->n_layers; i++) {
        const char *layer = a->layers[i].name;

        if (a->layers[i].info.kind == RESNET_LAYER_BN &&
            strlen(layer) == len - suffix &&
            strncmp(name, layer, len - suffix) == 0) {
            return true;
        }
    }
    return false;
}

/* Adds t to the per-dtype totals. */
static void count_dtype(struct resnet_weights_summary *s,
                        const struct rn_tensor *t) {
    const char *name = rn_dtype_name(t->dtype);
    int i = 0;

    while (i < s->n_dtypes && strcmp(s->dtypes[i].name, name) != 0) {
        i++;
    }
    if (i == s->n_dtypes) {
        if (i == (int)(sizeof s->dtypes / sizeof s->dtypes[0])) {
            return;
        }
        snprintf(s->dtypes[i].name, sizeof s->dtypes[i].name, "%s", name);
        s->n_dtypes++;
    }
    s->dtypes[i].n_tensors++;
    s->dtypes[i].n_elems += t->n_elems;
    s->dtypes[i].n_bytes += t->n_bytes;
}

int rn_weights_check(const struct resnet_arch *arch,
                     const struct rn_tensor *tensors, int n_tensors,
                     const char *path, bool shapes_only,
                     resnet_problem_fn fn, void *ctx,
                     struct resnet_weights_summary *summary,
                     struct resnet_error *err) {
    struct checker c = {path, fn, ctx, 0, RESNET_OK, err};
    struct resnet_weights_summary s = {.n_tensors = n_tensors};
    struct rn_expected *e = NULL;
    int n = 0, rc;

    if ((rc = rn_arch_expected(arch, &e, &n, err))) {
        goto out;
    }
    for (int i = 0; i < n_tensors; i++) {
        count_dtype(&s, &tensors[i]);
    }

    // What the layers read, in layer order; then the rest, in list order.
    for (int i = 0; i < n; i++) {
        check_expected(&c, arch, tensors, n_tensors, shapes_only, &e[i]);
    }
    for (int i = 0; i < n_tensors; i++) {
        if (!is_known(arch, tensors[i].name, e, n)) {
            report(&c, RESNET_PROBLEM_UNEXPECTED, "unexpected tensor",
                   tensors[i].name, "", "");
        }
    }
    s.n_problems = c.n_problems;
    rc = c.code;
    if (summary) {
        *summary = s;
    }

out:
    free(e);
    return rc;
}

int resnet_weights_check(const struct resnet_arch *arch, const char *path,
                         resnet_problem_fn fn, void *ctx,
                         struct resnet_weights_summary *summary,
                         struct resnet_error *err) {
    struct rn_safetensors *st = NULL;
    int rc;

    if (summary) {
        memset(summary, 0, sizeof *summary);
    }
    if ((rc = rn_safetensors_load(&st, path, err))) {
        return rc;
    }
    rc = rn_weights_check(arch, st->tensors, st->n_tensors, NULL, false, fn,
                          ctx, summary, err);
    if (summary) {
        summary->file_size = st->map_size;
    }
    rn_safetensors_free(st);
    return rc;
}
