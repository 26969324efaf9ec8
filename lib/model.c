/*
 * A model: the layer list bound to its weights. At load time every
 * tensor is checked, BatchNorm is folded into the conv before it and ReLU
 * fused into the op before it, so the forward pass runs only convs,
 * pools, adds and the linear layer, over a few reused activation slots.
 */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* One step of the forward pass. */
struct op {
    int layer;                 // index into arch->layers
    enum resnet_layer_kind kind;
    struct rn_conv_shape s;    // conv, pool and shortcut shapes
    const float *weight;       // conv (c_out, c_in / groups, k_h, k_w) or
                               // linear (n_out, n_in), in the arena
    const float *bias;         // (c_out), in the arena
    int in, in2, out;          // value ids
    bool relu;
};

struct resnet_model {
    struct resnet_arch *arch;
    float *arena;              // all folded weights and biases
    int n_ops;
    struct op *ops;
    int *slot_of;              // per value id; -1: the input or the logits
    int n_slots;
    size_t slot_floats;        // size of each activation slot
    size_t scratch_floats;     // im2col scratch
};

struct resnet_workspace {
    const struct resnet_model *model;
    float *mem;                // the slots, then the scratch
    float **val;               // per value id
    double *times;             // per layer, or NULL
};

/* The machine's physical memory in floats; SIZE_MAX when unknown. */
static size_t phys_floats(void) {
    long pages = sysconf(_SC_PHYS_PAGES);
    long page = sysconf(_SC_PAGESIZE);
    size_t bytes;

    if (pages <= 0 || page <= 0 ||
        !rn_mul_size((size_t)pages, (size_t)page, &bytes)) {
        return SIZE_MAX;
    }
    return bytes / sizeof(float);
}

static double now(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Reads tensor prefix.suffix as float32 into out. */
static int read_f32(const struct rn_safetensors *st, const char *prefix,
                    const char *suffix, float *out,
                    struct resnet_error *err) {
    char name[200];
    const struct rn_tensor *t;

    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    t = rn_safetensors_find(st, name);
    assert(t); // rn_weights_check() saw it
    return rn_tensor_to_f32(t, out, err);
}

/*
 * Folds BatchNorm into the conv before it: with s = gamma / sqrt(var +
 * eps), w' = w * s per output channel and b' = beta + (b - mean) * s.
 */
static int fold_bn(const struct rn_safetensors *st, const char *bn_name,
                   float eps, int c_out, size_t per_channel, float *weight,
                   float *bias, struct resnet_error *err) {
    float *p = malloc(4 * (size_t)c_out * sizeof *p);
    float *gamma = p, *beta = p + c_out, *mean = p + 2 * c_out;
    float *var = p + 3 * c_out;
    int rc;

    if (!p) {
        return rn_error(err, RESNET_ENOMEM, 0, "out of memory");
    }
    if ((rc = read_f32(st, bn_name, "weight", gamma, err)) ||
        (rc = read_f32(st, bn_name, "bias", beta, err)) ||
        (rc = read_f32(st, bn_name, "running_mean", mean, err)) ||
        (rc = read_f32(st, bn_name, "running_var", var, err))) {
        goto out;
    }
    for (int c = 0; c < c_out; c++) {
        double s = (double)gamma[c] / sqrt((double)var[c] + (double)eps);

        for (size_t i = 0; i < per_channel; i++) {
            weight[(size_t)c * per_channel + i] =
                (float)(weight[(size_t)c * per_channel + i] * s);
        }
        bias[c] = (float)((double)beta[c] + ((double)bias[c] - mean[c]) * s);
    }

out:
    free(p);
    return rc;
}

/* Floats of arena a layer needs: its weight and a bias. */
static size_t arena_floats(const struct resnet_layer_info *l) {
    if (l->kind == RESNET_LAYER_CONV) {
        return (size_t)l->c_out * (size_t)(l->c_in / l->groups) *
                   (size_t)l->k_h * (size_t)l->k_w + (size_t)l->c_out;
    }
    if (l->kind == RESNET_LAYER_LINEAR) {
        return (size_t)l->c_out * (size_t)l->c_in + (size_t)l->c_out;
    }
    return 0;
}

/* Makes the op for layer i, reading and folding its weights. */
static int make_op(struct resnet_model *m, const struct rn_safetensors *st,
                   int i, float **arena, struct op *op,
                   struct resnet_error *err) {
    const struct rn_layer *layers = m->arch->layers;
    const struct resnet_layer_info *l = &layers[i].info;
    int n = m->arch->n_layers;
    int next = i + 1;
    float *w = *arena, *b;
    size_t size = arena_floats(l);
    int rc = RESNET_OK;

    *op = (struct op){i, l->kind,
                      {l->c_in, l->h_in, l->w_in, l->c_out, l->h_out,
                       l->w_out, l->k_h, l->k_w, l->stride, l->pad,
                       l->groups},
                      NULL, NULL, layers[i].in, layers[i].in2,
                      layers[i].out, false};
    if (size) {
        b = w + size - (size_t)l->c_out;
        op->weight = w;
        op->bias = b;
        *arena += size;
        memset(b, 0, (size_t)l->c_out * sizeof *b);
        if ((rc = read_f32(st, l->name, "weight", w, err)) ||
            (l->has_bias && (rc = read_f32(st, l->name, "bias", b, err)))) {
            return rc;
        }
    }

    // A BN right after a conv folds into it.
    if (l->kind == RESNET_LAYER_CONV && next < n &&
        layers[next].info.kind == RESNET_LAYER_BN) {
        rc = fold_bn(st, layers[next].name, m->arch->desc->bn_eps, l->c_out,
                     size / (size_t)l->c_out - 1, w, (float *)op->bias, err);
        next++;
    }

    // A ReLU right after fuses into the op.
    op->relu = next < n && layers[next].info.kind == RESNET_LAYER_RELU;
    return rc;
}

/*
 * Gives each intermediate value a slot, reusing a slot once its value has
 * been read for the last time. Values 0 (the input) and the last (the
 * logits) live in the caller's buffers.
 */
static int plan_slots(struct resnet_model *m, struct resnet_error *err) {
    int n_values = m->arch->n_values;
    int *last_use = calloc((size_t)n_values, sizeof *last_use);
    int *slot_value = calloc((size_t)n_values, sizeof *slot_value);
    int rc = RESNET_OK;

    m->slot_of = malloc((size_t)n_values * sizeof *m->slot_of);
    if (!last_use || !slot_value || !m->slot_of) {
        rc = rn_error(err, RESNET_ENOMEM, 0, "out of memory");
        goto out;
    }
    for (int v = 0; v < n_values; v++) {
        m->slot_of[v] = -1;
    }
    for (int i = 0; i < m->n_ops; i++) {
        last_use[m->ops[i].in] = i;
        if (m->ops[i].in2 >= 0) {
            last_use[m->ops[i].in2] = i;
        }
    }

    for (int i = 0; i < m->n_ops; i++) {
        const struct op *op = &m->ops[i];
        const struct resnet_layer_info *l = &m->arch->layers[op->layer].info;
        size_t size = (size_t)l->c_out * (size_t)l->h_out * (size_t)l->w_out;
        int s = 0;

        if (op->out != n_values - 1) {
            // The first slot free now; slot_value holds its value + 1.
            while (s < m->n_slots && slot_value[s] != 0) {
                s++;
            }
            m->n_slots += s == m->n_slots;
            slot_value[s] = op->out + 1;
            m->slot_of[op->out] = s;
            m->slot_floats = size > m->slot_floats ? size : m->slot_floats;
        }

        // Values read for the last time free their slots.
        for (s = 0; s < m->n_slots; s++) {
            int v = slot_value[s] - 1;

            if (v >= 0 && last_use[v] == i && v != op->out) {
                slot_value[s] = 0;
            }
        }
    }

out:
    free(slot_value);
    free(last_use);
    return rc;
}

/* Builds the ops from the layers and the weights file. */
static int build_ops(struct resnet_model *m, const struct rn_safetensors *st,
                     struct resnet_error *err) {
    const struct resnet_arch *a = m->arch;
    size_t total = 0;
    float *arena;
    int rc;

    for (int i = 0; i < a->n_layers; i++) {
        total += arena_floats(&a->layers[i].info);
    }
    m->arena = malloc((total ? total : 1) * sizeof *m->arena);
    m->ops = calloc((size_t)a->n_layers, sizeof *m->ops);
    if (!m->arena || !m->ops) {
        return rn_error(err, RESNET_ENOMEM, 0, "out of memory");
    }

    // BN and ReLU layers end up inside the op before them.
    arena = m->arena;
    for (int i = 0; i < a->n_layers; i++) {
        enum resnet_layer_kind k = a->layers[i].info.kind;

        if (k == RESNET_LAYER_BN || k == RESNET_LAYER_RELU) {
            continue;
        }
        if ((rc = make_op(m, st, i, &arena, &m->ops[m->n_ops], err))) {
            return rc;
        }
        if (k == RESNET_LAYER_CONV) {
            size_t s = rn_conv_scratch_size(&m->ops[m->n_ops].s);

            m->scratch_floats = s > m->scratch_floats ? s : m->scratch_floats;
        }
        m->n_ops++;
    }
    return plan_slots(m, err);
}

int resnet_model_load(struct resnet_model **out, struct resnet_arch *arch,
                      const char *weights_path, struct resnet_error *err) {
    struct resnet_model *m;
    struct rn_safetensors *st = NULL;
    int rc;

    *out = NULL;
    m = calloc(1, sizeof *m);
    if (!m) {
        resnet_arch_free(arch);
        return rn_error(err, RESNET_ENOMEM, 0, "out of memory");
    }
    m->arch = arch;

    // The network is built for the description's own input size.
    if ((rc = resnet_arch_set_input(arch, arch->desc->h_in, arch->desc->w_in,
                                    err)) ||
        (rc = rn_safetensors_load(&st, weights_path, err)) ||
        (rc = rn_weights_check(arch, st->tensors, st->n_tensors,
                               weights_path, false, NULL, NULL, NULL, err)) ||
        (rc = build_ops(m, st, err))) {
        goto out;
    }
    rn_log(RESNET_LOG_DEBUG, "%s: %d ops, %d activation slots of %zu floats",
           arch->desc->name, m->n_ops, m->n_slots, m->slot_floats);
    *out = m;
    m = NULL;

out:
    rn_safetensors_free(st);
    resnet_model_free(m);
    return rc;
}

void resnet_model_free(struct resnet_model *m) {
    if (!m) {
        return;
    }
    free(m->slot_of);
    free(m->ops);
    free(m->arena);
    resnet_arch_free(m->arch);
    free(m);
}

const struct resnet_arch *resnet_model_arch(const struct resnet_model *m) {
    return m->arch;
}

int resnet_workspace_new(struct resnet_workspace **out,
                         const struct resnet_model *m,
                         struct resnet_error *err) {
    struct resnet_workspace *ws;
    size_t floats;

    *out = NULL;
    if (!rn_mul_size((size_t)m->n_slots, m->slot_floats, &floats) ||
        (floats += m->scratch_floats) < m->scratch_floats) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "the activations of '%s' do not fit in memory",
                        m->arch->desc->name);
    }
    // More than the machine holds could only end in the OOM killer.
    if (floats > phys_floats()) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "cannot allocate %.1f MB of activations for '%s': "
                        "more than this machine's memory (%.1f MB)",
                        (double)floats * sizeof(float) / 1e6,
                        m->arch->desc->name,
                        (double)phys_floats() * sizeof(float) / 1e6);
    }
    ws = calloc(1, sizeof *ws);
    if (!ws) {
        return rn_error(err, RESNET_ENOMEM, 0, "out of memory");
    }
    ws->model = m;
    ws->mem = floats < SIZE_MAX / sizeof *ws->mem
                  ? malloc((floats ? floats : 1) * sizeof *ws->mem)
                  : NULL;
    ws->val = calloc((size_t)m->arch->n_values, sizeof *ws->val);
    if (!ws->mem || !ws->val) {
        resnet_workspace_free(ws);
        return rn_error(err, RESNET_ENOMEM, ENOMEM,
                        "cannot allocate %.1f MB of activations for '%s'",
                        (double)floats * sizeof(float) / 1e6,
                        m->arch->desc->name);
    }
    for (int v = 0; v < m->arch->n_values; v++) {
        if (m->slot_of[v] >= 0) {
            ws->val[v] = ws->mem + (size_t)m->slot_of[v] * m->slot_floats;
        }
    }
    *out = ws;
    return RESNET_OK;
}

void resnet_workspace_free(struct resnet_workspace *ws) {
    if (!ws) {
        return;
    }
    free(ws->times);
    free(ws->val);
    free(ws->mem);
    free(ws);
}

void resnet_workspace_set_timing(struct resnet_workspace *ws, bool on) {
    if (!on) {
        free(ws->times);
        ws->times = NULL;
    } else if (!ws->times) {
        // Without memory for timings, there are simply none.
        ws->times = calloc((size_t)ws->model->arch->n_layers,
                           sizeof *ws->times);
    }
}

const double *resnet_workspace_timings(const struct resnet_workspace *ws) {
    return ws->times;
}

/* Runs one op on the values of ws. */
static void run_op(const struct op *op, float *const *val, float *scratch) {
    const struct rn_conv_shape *s = &op->s;

    switch (op->kind) {
    case RESNET_LAYER_CONV:
        rn_conv_forward(s, op->weight, op->bias, op->relu, val[op->in],
                        val[op->out], scratch);
        break;
    case RESNET_LAYER_MAXPOOL:
        rn_maxpool_forward(s->c_in, s->h_in, s->w_in, s->k_h, s->stride,
                           s->pad, s->h_out, s->w_out, val[op->in],
                           val[op->out]);
        break;
    case RESNET_LAYER_AVGPOOL:
        rn_avgpool_global(s->c_in, s->h_in, s->w_in, val[op->in],
                          val[op->out]);
        break;
    case RESNET_LAYER_SHORTCUT:
        rn_shortcut_pad(s->c_in, s->h_in, s->w_in, s->c_out, s->stride,
                        val[op->in], val[op->out]);
        break;
    case RESNET_LAYER_ADD:
        rn_add((size_t)s->c_out * (size_t)s->h_out * (size_t)s->w_out,
               val[op->in], val[op->in2], op->relu, val[op->out]);
        break;
    case RESNET_LAYER_LINEAR:
        rn_linear_forward(s->c_in, s->c_out, op->weight, op->bias,
                          val[op->in], val[op->out]);
        break;
    default:
        assert(!"BN and ReLU are folded at load time");
    }
}

void resnet_model_forward(const struct resnet_model *m,
                          struct resnet_workspace *ws, const float *input,
                          float *logits) {
    float *scratch = ws->mem + (size_t)m->n_slots * m->slot_floats;

    // The input is only read; the logits are the last value.
    ws->val[0] = (float *)input;
    ws->val[m->arch->n_values - 1] = logits;
    for (int i = 0; i < m->n_ops; i++) {
        double t0 = ws->times ? now() : 0;

        run_op(&m->ops[i], ws->val, scratch);
        if (ws->times) {
            ws->times[m->ops[i].layer] = now() - t0;
        }
    }
}

void resnet_softmax(const float *logits, float *probs, int n) {
    float max = -INFINITY;
    double sum = 0;

    for (int i = 0; i < n; i++) {
        max = logits[i] > max ? logits[i] : max;
    }
    for (int i = 0; i < n; i++) {
        probs[i] = expf(logits[i] - max);
        sum += probs[i];
    }
    for (int i = 0; i < n; i++) {
        probs[i] = (float)(probs[i] / sum);
    }
}
