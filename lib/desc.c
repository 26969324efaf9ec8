/*
 * The JSON model description: parsed with cJSON, every field checked,
 * defaults filled in as PyTorch has them. Messages name the file, then the
 * JSON path of the offending value ("bad description 'x.json':
 * stages[2].blocks: expected a positive integer").
 */
#include <config.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "internal.h"

/* Where in the file a value sits, for messages. */
struct ctx {
    const char *file;
    struct resnet_error *err;
};

static int bad(struct ctx *c, const char *path, const char *what) {
    return rn_error(c->err, RESNET_EFORMAT, 0, "bad description '%s': %s: %s",
                    c->file, path, what);
}

/* Largest sensible value of any size or count, to keep products small. */
#define MAX_DIM 65536

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Refuses a key given twice in any object under v, path naming v: cJSON
 * keeps both, and a lookup would quietly take the first.
 */
static int check_unique_keys(struct ctx *c, const cJSON *v,
                             const char *path) {
    const cJSON *item;
    char where[128];
    int i = 0, rc;

    if (cJSON_IsObject(v)) {
        int n = cJSON_GetArraySize(v);
        const char **keys = malloc(sizeof *keys * (size_t)(n ? n : 1));

        if (!keys) {
            return rn_error(c->err, RESNET_ENOMEM, 0, "out of memory");
        }
        cJSON_ArrayForEach(item, v) {
            keys[i++] = item->string;
        }
        qsort(keys, (size_t)n, sizeof *keys, cmp_str);
        for (i = 1; i < n; i++) {
            if (strcmp(keys[i - 1], keys[i]) == 0) {
                break;
            }
        }
        snprintf(where, sizeof where, "%s%s%s", path, *path ? "." : "",
                 i < n ? keys[i] : "");
        free(keys);
        if (i < n) {
            return bad(c, where, "duplicate key");
        }
    }

    // Then each member or element, depth first.
    i = 0;
    cJSON_ArrayForEach(item, v) {
        if (cJSON_IsObject(v)) {
            snprintf(where, sizeof where, "%s%s%s", path, *path ? "." : "",
                     item->string);
        } else {
            snprintf(where, sizeof where, "%s[%d]", path, i++);
        }
        if ((rc = check_unique_keys(c, item, where))) {
            return rc;
        }
    }
    return RESNET_OK;
}

/*
 * Reads obj[key] as an integer in [lo, MAX_DIM] into *out. A missing key
 * takes def, or is an error when def < 0.
 */
static int get_int(struct ctx *c, const cJSON *obj, const char *key,
                   const char *path, int lo, int def, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    char where[128];
    char what[64];

    snprintf(where, sizeof where, "%s%s%s", path, *path ? "." : "", key);
    if (!v) {
        if (def < 0) {
            return bad(c, where, "missing");
        }
        *out = def;
        return RESNET_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble < lo || v->valuedouble > MAX_DIM) {
        snprintf(what, sizeof what, "expected %s integer of at most %d",
                 lo > 0 ? "a positive" : "a non-negative", MAX_DIM);
        return bad(c, where, what);
    }
    *out = (int)v->valuedouble;
    return RESNET_OK;
}

/*
 * Reads obj[key] as a string into a new *out. A missing key gives a copy
 * of def (NULL stays NULL), or is an error when required.
 */
static int get_str(struct ctx *c, const cJSON *obj, const char *key,
                   const char *path, const char *def, bool required,
                   char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    char where[128];
    const char *s = def;

    snprintf(where, sizeof where, "%s%s%s", path, *path ? "." : "", key);
    *out = NULL;
    if (v) {
        if (!cJSON_IsString(v) || !v->valuestring[0]) {
            return bad(c, where, "expected a non-empty string");
        }
        s = v->valuestring;
    } else if (required) {
        return bad(c, where, "missing");
    }
    if (s && !(*out = strdup(s))) {
        return rn_error(c->err, RESNET_ENOMEM, 0, "out of memory");
    }
    return RESNET_OK;
}

/* obj[key] as an object; NULL when absent, an error when not an object. */
static int get_obj(struct ctx *c, const cJSON *obj, const char *key,
                   const char *where, bool required, const cJSON **out) {
    *out = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!*out) {
        return required ? bad(c, where, "missing") : RESNET_OK;
    }
    if (!cJSON_IsObject(*out)) {
        return bad(c, where, "expected an object");
    }
    return RESNET_OK;
}

/* Three numbers for mean or std; std must be positive. */
static int get_triple(struct ctx *c, const cJSON *obj, const char *key,
                      bool positive, float out[3]) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    char where[64];

    snprintf(where, sizeof where, "preprocess.%s", key);
    if (!v) {
        return bad(c, where, "missing");
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 3) {
        return bad(c, where, "expected an array of 3 numbers");
    }
    for (int i = 0; i < 3; i++) {
        const cJSON *x = cJSON_GetArrayItem(v, i);

        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) ||
            (positive && x->valuedouble <= 0)) {
            snprintf(where, sizeof where, "preprocess.%s[%d]", key, i);
            return bad(c, where, positive ? "expected a positive number"
                                          : "expected a number");
        }
        out[i] = (float)x->valuedouble;
    }
    return RESNET_OK;
}

static int parse_input(struct ctx *c, const cJSON *root, struct rn_desc *d) {
    const cJSON *in, *pp;
    int rc;

    if ((rc = get_obj(c, root, "input", "input", true, &in)) ||
        (rc = get_int(c, in, "channels", "input", 1, 3, &d->c_in)) ||
        (rc = get_int(c, in, "height", "input", 1, -1, &d->h_in)) ||
        (rc = get_int(c, in, "width", "input", 1, -1, &d->w_in))) {
        return rc;
    }
    if (d->c_in != 3) {
        return bad(c, "input.channels", "only 3 (RGB) is supported");
    }

    if ((rc = get_obj(c, root, "preprocess", "preprocess", true, &pp)) ||
        (rc = get_int(c, pp, "resize", "preprocess", 0, 0, &d->pp.resize)) ||
        (rc = get_int(c, pp, "crop", "preprocess", 1, -1, &d->pp.crop_w)) ||
        (rc = get_triple(c, pp, "mean", false, d->pp.mean)) ||
        (rc = get_triple(c, pp, "std", true, d->pp.std))) {
        return rc;
    }
    d->pp.crop_h = d->pp.crop_w;
    if (d->pp.crop_w != d->w_in || d->pp.crop_h != d->h_in) {
        return bad(c, "preprocess.crop", "must equal the input size");
    }
    return RESNET_OK;
}

static int parse_stem(struct ctx *c, const cJSON *root, struct rn_desc *d) {
    const cJSON *stem, *conv, *bn, *pool;
    int rc;

    if ((rc = get_obj(c, root, "stem", "stem", true, &stem)) ||
        (rc = get_obj(c, stem, "conv", "stem.conv", true, &conv)) ||
        (rc = get_str(c, conv, "name", "stem.conv", "conv1", false,
                      &d->stem_conv)) ||
        (rc = get_int(c, conv, "channels", "stem.conv", 1, -1,
                      &d->stem_channels)) ||
        (rc = get_int(c, conv, "kernel", "stem.conv", 1, -1,
                      &d->stem_kernel)) ||
        (rc = get_int(c, conv, "stride", "stem.conv", 1, 1,
                      &d->stem_stride)) ||
        (rc = get_int(c, conv, "padding", "stem.conv", 0,
                      d->stem_kernel / 2, &d->stem_pad))) {
        return rc;
    }

    // BN is there unless the description leaves it out.
    if ((rc = get_obj(c, stem, "bn", "stem.bn", false, &bn)) ||
        (bn && (rc = get_str(c, bn, "name", "stem.bn", "bn1", false,
                             &d->stem_bn)))) {
        return rc;
    }

    if ((rc = get_obj(c, stem, "maxpool", "stem.maxpool", false, &pool))) {
        return rc;
    }
    d->has_maxpool = pool != NULL;
    if (pool &&
        ((rc = get_int(c, pool, "kernel", "stem.maxpool", 1, -1,
                       &d->pool_kernel)) ||
         (rc = get_int(c, pool, "stride", "stem.maxpool", 1, d->pool_kernel,
                       &d->pool_stride)) ||
         (rc = get_int(c, pool, "padding", "stem.maxpool", 0, 0,
                       &d->pool_pad)))) {
        return rc;
    }
    if (d->has_maxpool && 2 * d->pool_pad > d->pool_kernel) {
        return bad(c, "stem.maxpool.padding",
                   "must be at most half the kernel");
    }
    return RESNET_OK;
}

/* Reads a string field that must be one of two words; *second is true
 * for the second. */
static int get_choice(struct ctx *c, const cJSON *obj, const char *key,
                      const char *first, const char *second, bool *is_second) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    char where[64], what[96];

    *is_second = false;
    if (!v) {
        return RESNET_OK;
    }
    snprintf(where, sizeof where, "block.%s", key);
    if (cJSON_IsString(v) && strcmp(v->valuestring, first) == 0) {
        return RESNET_OK;
    }
    if (cJSON_IsString(v) && strcmp(v->valuestring, second) == 0) {
        *is_second = true;
        return RESNET_OK;
    }
    snprintf(what, sizeof what, "expected \"%s\" or \"%s\"", first, second);
    return bad(c, where, what);
}

static int parse_block(struct ctx *c, const cJSON *root, struct rn_desc *d) {
    const cJSON *block, *type;
    int rc;

    if ((rc = get_obj(c, root, "block", "block", true, &block))) {
        return rc;
    }
    type = cJSON_GetObjectItemCaseSensitive(block, "type");
    if (!type) {
        return bad(c, "block.type", "missing");
    }
    if ((rc = get_choice(c, block, "type", "basic", "bottleneck",
                         &d->is_bottleneck)) ||
        (rc = get_int(c, block, "groups", "block", 1, 1, &d->groups)) ||
        (rc = get_int(c, block, "width_per_group", "block", 1, 64,
                      &d->width_per_group)) ||
        (rc = get_choice(c, block, "stride_on", "3x3", "1x1",
                         &d->stride_on_1x1)) ||
        (rc = get_choice(c, block, "shortcut", "projection", "pad",
                         &d->is_pad_shortcut))) {
        return rc;
    }
    if (!d->is_bottleneck && (d->groups != 1 || d->width_per_group != 64)) {
        return bad(c, "block",
                   "basic blocks need groups 1 and width_per_group 64");
    }
    if (!d->is_bottleneck && d->stride_on_1x1) {
        return bad(c, "block.stride_on", "basic blocks have no 1x1 conv");
    }
    return RESNET_OK;
}

static int parse_stages(struct ctx *c, const cJSON *root, struct rn_desc *d) {
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(root, "stages");
    int rc;

    if (!stages) {
        return bad(c, "stages", "missing");
    }
    if (!cJSON_IsArray(stages) || cJSON_GetArraySize(stages) < 1 ||
        cJSON_GetArraySize(stages) > 16) {
        return bad(c, "stages", "expected an array of 1 to 16 stages");
    }
    d->n_stages = cJSON_GetArraySize(stages);
    d->stages = calloc((size_t)d->n_stages, sizeof *d->stages);
    if (!d->stages) {
        return rn_error(c->err, RESNET_ENOMEM, 0, "out of memory");
    }

    for (int i = 0; i < d->n_stages; i++) {
        const cJSON *st = cJSON_GetArrayItem(stages, i);
        struct rn_stage_desc *s = &d->stages[i];
        char where[32], def_name[32];

        snprintf(where, sizeof where, "stages[%d]", i);
        snprintf(def_name, sizeof def_name, "layer%d", i + 1);
        if (!cJSON_IsObject(st)) {
            return bad(c, where, "expected an object");
        }
        if ((rc = get_str(c, st, "name", where, def_name, false, &s->name)) ||
            (rc = get_int(c, st, "blocks", where, 1, -1, &s->n_blocks)) ||
            (rc = get_int(c, st, "planes", where, 1, -1, &s->planes)) ||
            (rc = get_int(c, st, "stride", where, 1, i == 0 ? 1 : 2,
                          &s->stride))) {
            return rc;
        }
        if (s->n_blocks > 1024) {
            return bad(c, where, "more than 1024 blocks");
        }
    }
    return RESNET_OK;
}

static int parse_head(struct ctx *c, const cJSON *root, struct rn_desc *d) {
    const cJSON *head, *pool, *fc;
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "bn_eps");
    int rc;

    if ((rc = get_obj(c, root, "head", "head", true, &head))) {
        return rc;
    }
    pool = cJSON_GetObjectItemCaseSensitive(head, "pool");
    if (pool && !(cJSON_IsString(pool) && !strcmp(pool->valuestring, "avg"))) {
        return bad(c, "head.pool", "expected \"avg\"");
    }
    if ((rc = get_obj(c, head, "fc", "head.fc", true, &fc)) ||
        (rc = get_str(c, fc, "name", "head.fc", "fc", false, &d->fc)) ||
        (rc = get_int(c, fc, "classes", "head.fc", 1, -1, &d->n_classes))) {
        return rc;
    }

    d->bn_eps = 1e-5f;
    if (eps) {
        if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0) ||
            eps->valuedouble > 1) {
            return bad(c, "bn_eps", "expected a positive number");
        }
        d->bn_eps = (float)eps->valuedouble;
    }
    return RESNET_OK;
}

int rn_desc_parse(struct rn_desc **out, const char *json, size_t len,
                  const char *name, struct resnet_error *err) {
    struct ctx c = {name, err};
    struct rn_desc *d = NULL;
    const char *end = NULL;
    cJSON *root;
    int rc;

    *out = NULL;
    root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "bad description '%s': not valid JSON (near byte %zu)",
                        name,
                        (size_t)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() -
                                 json : 0));
    }

    // Only white space may follow the value.
    while (end < json + len && *end && strchr(" \t\r\n", *end)) {
        end++;
    }
    if (end != json + len) {
        rc = rn_error(err, RESNET_EFORMAT, 0,
                      "bad description '%s': text after the JSON value "
                      "(at byte %zu)", name, (size_t)(end - json));
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        rc = bad(&c, "(top level)", "expected an object");
        goto out;
    }
    rc = check_unique_keys(&c, root, "");
    if (rc) {
        goto out;
    }
    d = calloc(1, sizeof *d);
    if (!d) {
        rc = rn_error(err, RESNET_ENOMEM, 0, "out of memory");
        goto out;
    }

    // Each part in turn; the first problem ends the parse.
    if ((rc = get_str(&c, root, "name", "", NULL, true, &d->name)) ||
        (rc = get_str(&c, root, "labels", "", NULL, false, &d->labels)) ||
        (rc = get_str(&c, root, "weights", "", NULL, false, &d->weights)) ||
        (rc = parse_input(&c, root, d)) ||
        (rc = parse_stem(&c, root, d)) ||
        (rc = parse_block(&c, root, d)) ||
        (rc = parse_stages(&c, root, d)) ||
        (rc = parse_head(&c, root, d))) {
        goto out;
    }
    *out = d;
    d = NULL;

out:
    rn_desc_free(d);
    cJSON_Delete(root);
    return rc;
}

void rn_desc_free(struct rn_desc *d) {
    if (!d) {
        return;
    }
    for (int i = 0; i < d->n_stages && d->stages; i++) {
        free(d->stages[i].name);
    }
    free(d->stages);
    free(d->fc);
    free(d->stem_bn);
    free(d->stem_conv);
    free(d->weights);
    free(d->labels);
    free(d->name);
    free(d);
}
