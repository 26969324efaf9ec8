/*
 * resnet_convert(): a PyTorch or safetensors file in, safetensors weights
 * and a model description out. Both outputs go to temporary files beside
 * their targets; the description is renamed into place last, and the
 * weights are removed again if that fails, so a failure leaves nothing.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "internal.h"

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');

    return slash ? slash + 1 : path;
}

/*
 * Checks sd as the model loader will check the file made from it: every
 * tensor arch reads, with its shape, a float dtype and finite values (and
 * variances above zero), and no other. Runs after the dtype conversion,
 * so an F64 input is no problem, but an Inf made by narrowing is one.
 */
static int check_fit(const struct rn_state_dict *sd,
                     const struct resnet_arch *arch, const char *source,
                     struct resnet_error *err) {
    return rn_weights_check(arch, sd->tensors, sd->n_tensors, source, false,
                            NULL, NULL, NULL, err);
}

/*
 * With --arch: checks sd against the description at path and returns
 * that description's JSON with "weights" set to weights.
 */
static int check_given(const struct rn_state_dict *sd, const char *path,
                       const char *source, const char *weights, char **json,
                       char *name, size_t name_size,
                       struct resnet_error *err) {
    struct resnet_arch *arch = NULL;
    cJSON *desc = NULL;
    char *text = NULL;
    size_t len;
    int rc;

    *json = NULL;
    if ((rc = resnet_arch_load(&arch, path, err)) ||
        (rc = check_fit(sd, arch, source, err)) ||
        (rc = rn_read_text(path, &text, &len, err))) {
        goto out;
    }
    desc = cJSON_ParseWithLength(text, len);
    if (!desc) {
        rc = rn_error(err, RESNET_EFORMAT, 0, "cannot parse '%s'", path);
        goto out;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(desc, "weights");
    if (!cJSON_AddStringToObject(desc, "weights", weights) ||
        !(*json = cJSON_Print(desc))) {
        rc = rn_error(err, RESNET_ENOMEM, 0, "out of memory");
        goto out;
    }
    snprintf(name, name_size, "%s", resnet_arch_name(arch));

out:
    cJSON_Delete(desc);
    free(text);
    resnet_arch_free(arch);
    return rc;
}

/*
 * Without --arch, after rn_recognize() placed every tensor by name and
 * shape: the rest of the check, against the description it wrote, and
 * that description's name.
 */
static int check_recognised(const struct rn_state_dict *sd,
                            const char *json, const char *source, char *name,
                            size_t name_size, struct resnet_error *err) {
    struct resnet_arch *arch = NULL;
    int rc;

    if ((rc = rn_arch_parse(&arch, json, strlen(json), source, err)) ||
        (rc = check_fit(sd, arch, source, err))) {
        goto out;
    }
    snprintf(name, name_size, "%s", resnet_arch_name(arch));

out:
    resnet_arch_free(arch);
    return rc;
}

/* Starts the description file at path: text and a newline. */
static int write_desc(struct rn_atomic *f, const char *path,
                      const char *text, bool overwrite,
                      struct resnet_error *err) {
    int rc;

    if ((rc = rn_atomic_open(f, path, overwrite, err)) ||
        (rc = rn_atomic_write(f, text, strlen(text), err))) {
        return rc;
    }
    return rn_atomic_write(f, "\n", 1, err);
}

static enum rn_dtype rn_dtype_of(enum resnet_dtype dtype) {
    switch (dtype) {
    case RESNET_DTYPE_F16:
        return RN_DTYPE_F16;
    case RESNET_DTYPE_BF16:
        return RN_DTYPE_BF16;
    default:
        return RN_DTYPE_F32;
    }
}

/* Reads in_path into *sd as opts->dtype and reports what it found. */
static int read_input(struct rn_state_dict **sd, const char *in_path,
                      const struct resnet_convert_opts *opts,
                      struct resnet_convert_info *info,
                      struct resnet_error *err) {
    int rc;

    rc = rn_state_dict_load(sd, in_path, opts->progress, opts->progress_ctx,
                            err);
    if (rc || (rc = rn_state_dict_cast(*sd, rn_dtype_of(opts->dtype),
                                       &info->n_narrowed, err))) {
        return rc;
    }
    info->format = (*sd)->format;
    snprintf(info->found_under, sizeof info->found_under, "%s",
             (*sd)->found_under ? (*sd)->found_under : "");
    snprintf(info->prefix, sizeof info->prefix, "%s",
             (*sd)->prefix ? (*sd)->prefix : "");
    info->n_tensors = (*sd)->n_tensors;
    info->n_dropped = (*sd)->n_dropped;
    return RESNET_OK;
}

int resnet_convert(const char *in_path, const char *weights_path,
                   const char *desc_path,
                   const struct resnet_convert_opts *opts,
                   struct resnet_convert_info *info,
                   struct resnet_error *err) {
    struct resnet_convert_info scratch;
    struct rn_state_dict *sd = NULL;
    struct rn_atomic desc = {0};
    char *json = NULL;
    const char *weights = base_name(weights_path);
    bool wrote_weights = false;
    int rc;

    if (!info) {
        info = &scratch;
    }
    memset(info, 0, sizeof *info);

    // Refuse early to replace files, before reading a large input.
    if ((rc = rn_atomic_check(weights_path, opts->overwrite, err)) ||
        (rc = rn_atomic_check(desc_path, opts->overwrite, err))) {
        return rc;
    }

    // The tensors, then the description that fits them.
    if ((rc = read_input(&sd, in_path, opts, info, err))) {
        goto out;
    }
    if (opts->arch_path) {
        rc = check_given(sd, opts->arch_path, in_path, weights, &json,
                         info->arch_name, sizeof info->arch_name, err);
    } else {
        struct resnet_error why = {0};

        // Tensors that fit no ResNet still make a weights file.
        rc = rn_recognize(sd, in_path, weights, &json, &why);
        if (rc == RESNET_ESHAPE) {
            snprintf(info->unrecognised, sizeof info->unrecognised, "%s",
                     why.msg);
            rc = RESNET_OK;
        } else if (rc) {
            if (err) {
                *err = why;
            }
        } else {
            rc = check_recognised(sd, json, in_path, info->arch_name,
                                  sizeof info->arch_name, err);
        }
    }
    if (rc) {
        goto out;
    }

    // Description to a temporary file, weights into place, then the
    // description into place.
    if ((json && (rc = write_desc(&desc, desc_path, json, opts->overwrite,
                                  err))) ||
        (rc = rn_safetensors_write(weights_path, sd->tensors, sd->n_tensors,
                                   NULL, 0, opts->overwrite, err))) {
        goto out;
    }
    wrote_weights = true;
    if (json) {
        rc = rn_atomic_commit(&desc, err);
    }

out:
    rn_atomic_abort(&desc);
    if (rc && wrote_weights) {
        unlink(weights_path);
    }
    free(json);
    rn_state_dict_free(sd);
    return rc;
}
