/*
 * Which ResNet a state dict belongs to, from tensor names and shapes:
 * the stem kernel tells ImageNet from CIFAR, layer<i>.<j> names give the
 * block counts, conv shapes the widths and groups. The guess is written
 * as a description and then checked by building it, tensor by tensor.
 */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "internal.h"

#define MAX_STAGES 8

/* What the tensors say about the network. */
struct guess {
    int c_in, stem_channels, stem_kernel;
    bool is_bottleneck, is_pad_shortcut;
    int groups, width_per_group;
    int n_stages;
    int n_blocks[MAX_STAGES];
    int planes[MAX_STAGES];
    const char *fc;
    int n_classes;
};

static const struct rn_tensor *find(const struct rn_state_dict *sd,
                                    const char *name) {
    for (int i = 0; i < sd->n_tensors; i++) {
        if (strcmp(sd->tensors[i].name, name) == 0) {
            return &sd->tensors[i];
        }
    }
    return NULL;
}

/* The tensor printf(fmt, ...) if it has n_dims dimensions, else NULL. */
static const struct rn_tensor *findf(const struct rn_state_dict *sd,
                                     int n_dims, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static const struct rn_tensor *findf(const struct rn_state_dict *sd,
                                     int n_dims, const char *fmt, ...) {
    const struct rn_tensor *t;
    char name[160];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    t = find(sd, name);
    return t && t->n_dims == n_dims ? t : NULL;
}

/* Stages layer1, layer2, ... and their blocks, as far as names go. */
static void count_blocks(const struct rn_state_dict *sd, struct guess *g) {
    for (g->n_stages = 0; g->n_stages < MAX_STAGES; g->n_stages++) {
        int s = g->n_stages, n = 0;

        while (findf(sd, 4, "layer%d.%d.conv1.weight", s + 1, n)) {
            n++;
        }
        if (n == 0) {
            break;
        }
        g->n_blocks[s] = n;
    }
}

/* Block type, planes, groups and width from the first block's convs. */
static bool read_widths(const struct rn_state_dict *sd, struct guess *g) {
    const struct rn_tensor *c2, *c3;
    int width;

    g->is_bottleneck = findf(sd, 4, "layer1.0.conv3.weight") != NULL;
    g->groups = 1;
    g->width_per_group = 64;
    for (int s = 0; s < g->n_stages; s++) {
        const struct rn_tensor *t =
            g->is_bottleneck ? findf(sd, 4, "layer%d.0.conv3.weight", s + 1)
                             : findf(sd, 4, "layer%d.0.conv1.weight", s + 1);

        if (!t || t->shape[0] < 1 || t->shape[0] > 1 << 20) {
            return false;
        }
        g->planes[s] = (int)(g->is_bottleneck ? t->shape[0] / 4 : t->shape[0]);
    }
    if (!g->is_bottleneck) {
        return true;
    }
    // conv2 is (width, width / groups, 3, 3), with width =
    // floor(planes * width_per_group / 64) * groups.
    c2 = findf(sd, 4, "layer1.0.conv2.weight");
    c3 = findf(sd, 4, "layer1.0.conv3.weight");
    if (!c2 || !c3 || c2->shape[1] < 1 || c2->shape[0] % c2->shape[1] ||
        g->planes[0] < 1) {
        return false;
    }
    width = (int)c2->shape[0];
    g->groups = width / (int)c2->shape[1];
    g->width_per_group = (int)c2->shape[1] * 64 / g->planes[0];
    return true;
}

static bool has_downsample(const struct rn_state_dict *sd) {
    for (int i = 0; i < sd->n_tensors; i++) {
        if (strstr(sd->tensors[i].name, ".downsample.")) {
            return true;
        }
    }
    return false;
}

/* Fills g from the tensors; false when a landmark tensor is missing. */
static bool read_guess(const struct rn_state_dict *sd, struct guess *g) {
    const struct rn_tensor *stem = findf(sd, 4, "conv1.weight");
    const struct rn_tensor *fc = findf(sd, 2, "fc.weight");

    g->fc = "fc";
    if (!fc && (fc = findf(sd, 2, "linear.weight"))) {
        g->fc = "linear";
    }
    if (!stem || !fc || stem->shape[2] != stem->shape[3] ||
        stem->shape[2] < 1 || stem->shape[2] > 15 || fc->shape[0] < 1 ||
        fc->shape[0] > 1 << 24) {
        return false;
    }
    g->c_in = (int)stem->shape[1];
    g->stem_channels = (int)stem->shape[0];
    g->stem_kernel = (int)stem->shape[2];
    g->n_classes = (int)fc->shape[0];
    count_blocks(sd, g);
    g->is_pad_shortcut = !has_downsample(sd);
    return g->n_stages > 0 && read_widths(sd, g);
}

/* Names as torchvision and the CIFAR papers spell them. */
static void name_model(const struct guess *g, char *name, size_t size,
                       char *what, size_t what_size) {
    bool is_cifar = g->stem_kernel != 7;
    int depth = 2;

    for (int s = 0; s < g->n_stages; s++) {
        depth += (g->is_bottleneck ? 3 : 2) * g->n_blocks[s];
    }
    if (is_cifar) {
        const char *data = g->n_classes == 10    ? "cifar10-"
                           : g->n_classes == 100 ? "cifar100-"
                                                 : "cifar-";

        snprintf(name, size, "%sresnet%d", data, depth);
        snprintf(what, what_size, "CIFAR ResNet-%d (%s shortcut)", depth,
                 g->is_pad_shortcut ? "option-A" : "projection");
    } else if (g->groups > 1) {
        snprintf(name, size, "resnext%d_%dx%dd", depth, g->groups,
                 g->width_per_group);
        snprintf(what, what_size, "ResNeXt-%d %dx%dd as torchvision builds "
                 "it", depth, g->groups, g->width_per_group);
    } else if (g->width_per_group != 64 && g->width_per_group % 64 == 0) {
        snprintf(name, size, "wide_resnet%d_%d", depth,
                 g->width_per_group / 64);
        snprintf(what, what_size, "Wide ResNet-%d-%d as torchvision builds "
                 "it", depth, g->width_per_group / 64);
    } else {
        snprintf(name, size, "resnet%d", depth);
        snprintf(what, what_size, "ResNet-%d as torchvision builds it",
                 depth);
    }
}

/* A new empty object under key in parent. */
static cJSON *obj(cJSON *parent, const char *key) {
    cJSON *o = cJSON_CreateObject();

    if (o && !cJSON_AddItemToObject(parent, key, o)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static void add_preprocess(cJSON *root, bool is_cifar, int c_in, int size) {
    static const double mean[3] = {0.485, 0.456, 0.406};
    static const double std[3] = {0.229, 0.224, 0.225};
    cJSON *in = obj(root, "input"), *pp;

    cJSON_AddNumberToObject(in, "channels", c_in);
    cJSON_AddNumberToObject(in, "height", size);
    cJSON_AddNumberToObject(in, "width", size);
    pp = obj(root, "preprocess");
    cJSON_AddNumberToObject(pp, "resize", is_cifar ? 0 : 256);
    cJSON_AddNumberToObject(pp, "crop", size);
    cJSON_AddItemToObject(pp, "mean", cJSON_CreateDoubleArray(mean, 3));
    cJSON_AddItemToObject(pp, "std", cJSON_CreateDoubleArray(std, 3));
}

/* Stem: conv1 and bn1, with torchvision's max pool for a 7x7 conv. */
static void add_stem(cJSON *root, const struct guess *g, bool is_cifar) {
    cJSON *stem = obj(root, "stem"), *conv = obj(stem, "conv"), *mp;

    cJSON_AddStringToObject(conv, "name", "conv1");
    cJSON_AddNumberToObject(conv, "channels", g->stem_channels);
    cJSON_AddNumberToObject(conv, "kernel", g->stem_kernel);
    cJSON_AddNumberToObject(conv, "stride", is_cifar ? 1 : 2);
    cJSON_AddNumberToObject(conv, "padding", g->stem_kernel / 2);
    cJSON_AddStringToObject(obj(stem, "bn"), "name", "bn1");
    if (!is_cifar) {
        mp = obj(stem, "maxpool");
        cJSON_AddNumberToObject(mp, "kernel", 3);
        cJSON_AddNumberToObject(mp, "stride", 2);
        cJSON_AddNumberToObject(mp, "padding", 1);
    }
}

/* Block type and the stages, layer1 at stride 1, the rest at stride 2. */
static void add_stages(cJSON *root, const struct guess *g) {
    cJSON *block = obj(root, "block"), *stages;

    cJSON_AddStringToObject(block, "type",
                            g->is_bottleneck ? "bottleneck" : "basic");
    if (g->is_bottleneck) {
        cJSON_AddNumberToObject(block, "groups", g->groups);
        cJSON_AddNumberToObject(block, "width_per_group", g->width_per_group);
        cJSON_AddStringToObject(block, "stride_on", "3x3");
    }
    cJSON_AddStringToObject(block, "shortcut",
                            g->is_pad_shortcut ? "pad" : "projection");
    stages = cJSON_AddArrayToObject(root, "stages");
    for (int s = 0; s < g->n_stages && stages; s++) {
        cJSON *st = cJSON_CreateObject();
        char stage_name[16];

        snprintf(stage_name, sizeof stage_name, "layer%d", s + 1);
        cJSON_AddStringToObject(st, "name", stage_name);
        cJSON_AddNumberToObject(st, "blocks", g->n_blocks[s]);
        cJSON_AddNumberToObject(st, "planes", g->planes[s]);
        cJSON_AddNumberToObject(st, "stride", s == 0 ? 1 : 2);
        cJSON_AddItemToArray(stages, st);
    }
}

/* The description of g as a cJSON tree (NULL when out of memory). */
static cJSON *describe(const struct guess *g, const char *source,
                       const char *weights) {
    bool is_cifar = g->stem_kernel != 7;
    char name[64], what[96], text[400];
    cJSON *root = cJSON_CreateObject(), *head, *fc;

    name_model(g, name, sizeof name, what, sizeof what);
    snprintf(text, sizeof text, "%s, recognised from '%s'", what, source);
    cJSON_AddStringToObject(root, "name", name);
    cJSON_AddStringToObject(root, "description", text);
    add_preprocess(root, is_cifar, g->c_in, is_cifar ? 32 : 224);
    add_stem(root, g, is_cifar);
    add_stages(root, g);

    head = obj(root, "head");
    cJSON_AddStringToObject(head, "pool", "avg");
    fc = obj(head, "fc");
    cJSON_AddStringToObject(fc, "name", g->fc);
    cJSON_AddNumberToObject(fc, "classes", g->n_classes);
    cJSON_AddNumberToObject(root, "bn_eps", 1e-5);
    if (is_cifar && g->n_classes == 10) {
        cJSON_AddStringToObject(root, "labels", "cifar10-classes.txt");
    } else if (!is_cifar && g->n_classes == 1000) {
        cJSON_AddStringToObject(root, "labels", "imagenet-classes.txt");
    }
    cJSON_AddStringToObject(root, "weights", weights);
    return root;
}

static bool same_shape(const struct rn_tensor *t, const struct rn_expected *e) {
    if (t->n_dims != e->n_dims) {
        return false;
    }
    for (int i = 0; i < e->n_dims; i++) {
        if (t->shape[i] != e->shape[i]) {
            return false;
        }
    }
    return true;
}

/* How many unplaced names a message lists, and how long each may be. */
#define MAX_LISTED 8
#define MAX_SHOWN 32

/*
 * Appends name to the list in buf, cut to MAX_SHOWN bytes with "...",
 * while fewer than MAX_LISTED are listed and it fits; else counts it.
 */
static void list_name(char *buf, size_t size, const char *name,
                      int *n_listed, int *n_left) {
    size_t len = strlen(buf), keep = strlen(name);
    const char *cut = "";

    if (keep > MAX_SHOWN) {
        // Cut on a character boundary, not inside a UTF-8 sequence.
        keep = MAX_SHOWN - 3;
        while (keep > 0 && ((unsigned char)name[keep] & 0xc0) == 0x80) {
            keep--;
        }
        cut = "...";
    }
    if (*n_listed < MAX_LISTED && len + keep + 8 < size) {
        snprintf(buf + len, size - len, "%s'%.*s%s'", len ? ", " : "",
                 (int)keep, name, cut);
        (*n_listed)++;
    } else {
        (*n_left)++;
    }
}

/*
 * Finds the tensors of sd the expected list cannot place, and
 * lists those it cannot place into buf; returns how many there are.
 */
static int unplaced(const struct rn_state_dict *sd,
                    const struct rn_expected *e, int n_e, char *buf,
                    size_t size, int *n_left) {
    int n = 0, n_listed = 0;

    buf[0] = '\0';
    *n_left = 0;
    for (int i = 0; i < sd->n_tensors; i++) {
        const struct rn_tensor *t = &sd->tensors[i];
        bool placed = false;

        for (int k = 0; k < n_e && !placed; k++) {
            placed = strcmp(e[k].name, t->name) == 0 && same_shape(t, &e[k]);
        }
        if (!placed) {
            list_name(buf, size, t->name, &n_listed, n_left);
            n++;
        }
    }
    return n;
}

/* The unplaced-tensors error, from the best guess's expected list. */
static int cannot_place(const struct rn_state_dict *sd,
                        const struct rn_expected *e, int n_e,
                        const char *source, struct resnet_error *err) {
    char names[128];
    int n_left, n = unplaced(sd, e, n_e, names, sizeof names, &n_left);
    const char *missing = NULL;

    for (int k = 0; k < n_e && !missing; k++) {
        const struct rn_tensor *t = find(sd, e[k].name);

        if (!t || !same_shape(t, &e[k])) {
            missing = e[k].name;
        }
    }
    if (n == 0 && missing) {
        return rn_error(err, RESNET_ESHAPE, 0,
                        "cannot recognise the network in '%s': tensor '%s' "
                        "is missing",
                        source, missing);
    }
    if (n_left) {
        return rn_error(err, RESNET_ESHAPE, 0,
                        "cannot recognise the network in '%s': %d tensors "
                        "fit no ResNet: %s and %d more",
                        source, n, names, n_left);
    }
    return rn_error(err, RESNET_ESHAPE, 0,
                    "cannot recognise the network in '%s': %d %s no "
                    "ResNet: %s",
                    source, n, n == 1 ? "tensor fits" : "tensors fit", names);
}

int rn_recognize(const struct rn_state_dict *sd, const char *source,
                 const char *weights, char **json, struct resnet_error *err) {
    struct guess g = {0};
    struct resnet_arch *arch = NULL;
    struct rn_expected *e = NULL;
    cJSON *desc = NULL;
    char *text = NULL;
    int n_e = 0, n_left, rc;
    char names[8];

    *json = NULL;

    // Without a stem, classifier and stages there is nothing to build.
    if (!read_guess(sd, &g)) {
        rc = cannot_place(sd, NULL, 0, source, err);
        goto out;
    }

    // Write the guess down, build it, and place every tensor.
    desc = describe(&g, source, weights);
    text = desc ? cJSON_PrintUnformatted(desc) : NULL;
    if (!text) {
        rc = rn_error(err, RESNET_ENOMEM, 0, "out of memory");
        goto out;
    }
    rc = rn_arch_parse(&arch, text, strlen(text), source, NULL);
    if (rc == RESNET_ENOMEM || (!rc && (rc = rn_arch_expected(arch, &e, &n_e,
                                                              err)))) {
        rn_error(err, rc, 0, "out of memory");
        goto out;
    }
    if (rc || unplaced(sd, e, n_e, names, sizeof names, &n_left) ||
        rn_weights_check(arch, sd->tensors, sd->n_tensors, source, true,
                         NULL, NULL, NULL, NULL)) {
        rc = cannot_place(sd, e, n_e, source, err);
        goto out;
    }
    free(text);
    text = cJSON_Print(desc);
    if (!text) {
        rc = rn_error(err, RESNET_ENOMEM, 0, "out of memory");
        goto out;
    }
    *json = text;
    text = NULL;

out:
    free(text);
    free(e);
    resnet_arch_free(arch);
    cJSON_Delete(desc);
    return rc;
}
