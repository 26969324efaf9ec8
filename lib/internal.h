/*
 * Private declarations shared between lib/ files; never installed, never
 * included by cmd/. Everything here carries the rn_ prefix.
 */
#ifndef RESNET_INTERNAL_H
#define RESNET_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resnet.h"

/* ------------------------------------------------------------------ */
/* lib/error.c, lib/log.c                                               */

/*
 * Fills err (which may be NULL) with code, errno sys_errno (0 for none)
 * and the formatted message, and returns code, so a failing function can
 * end with `return rn_error(err, RESNET_EFORMAT, 0, "...", ...)`.
 */
int rn_error(struct resnet_error *err, int code, int sys_errno,
             const char *fmt, ...) __attribute__((format(printf, 4, 5)));

extern int rn_log_level;
void rn_log_emit(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Formats nothing unless the level is enabled. */
#define rn_log(level, ...)                                                 \
    do {                                                                   \
        if ((level) <= rn_log_level)                                       \
            rn_log_emit((level), __VA_ARGS__);                             \
    } while (0)

/* a * b into *out; false on overflow. */
static inline bool rn_mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}

/* ------------------------------------------------------------------ */
/* lib/safetensors.c: reading and writing safetensors files            */

enum rn_dtype {
    RN_DTYPE_F32,
    RN_DTYPE_F16,
    RN_DTYPE_BF16,
    RN_DTYPE_F64,
    RN_DTYPE_I64,
    RN_DTYPE_I32,
    RN_DTYPE_I16,
    RN_DTYPE_I8,
    RN_DTYPE_U8,
    RN_DTYPE_BOOL,
};

#define RN_MAX_DIMS 8

/* One tensor of a safetensors file, pointing into the mapped file. */
struct rn_tensor {
    const char *name;
    enum rn_dtype dtype;
    int n_dims;
    int64_t shape[RN_MAX_DIMS];
    size_t n_elems;
    const void *data; // n_elems values of dtype, little-endian; may be
                      // unaligned: read with rn_tensor_to_f32()
    size_t n_bytes;
};

/* A safetensors file mapped into memory, its header checked. */
struct rn_safetensors {
    void *map;
    size_t map_size;
    int n_tensors;
    struct rn_tensor *tensors; // in file order
    char *strings;             // owns the tensor names
    char *metadata_json;       // the __metadata__ object as JSON, or NULL
};

/*
 * Maps path and validates its header: the header length, every dtype,
 * shape and offset range against the file size, no overlaps, no gaps.
 * A Git LFS pointer is recognised and named as such. *out is new; free
 * with rn_safetensors_free(). Returns RESNET_EIO, RESNET_EFORMAT,
 * RESNET_EUNSUPPORTED or RESNET_ENOMEM.
 */
int rn_safetensors_load(struct rn_safetensors **out, const char *path,
                        struct resnet_error *err);

void rn_safetensors_free(struct rn_safetensors *st);

/* The tensor called name, or NULL. */
const struct rn_tensor *rn_safetensors_find(const struct rn_safetensors *st,
                                            const char *name);

/* Bytes per element of dtype. */
size_t rn_dtype_size(enum rn_dtype dtype);

/* The safetensors spelling of dtype ("F32"). */
const char *rn_dtype_name(enum rn_dtype dtype);

/*
 * Converts t's elements to float32 into out (t->n_elems floats): F16 and
 * BF16 widen exactly, F64 narrows with rounding. Returns
 * RESNET_EUNSUPPORTED for integer and bool tensors.
 */
int rn_tensor_to_f32(const struct rn_tensor *t, float *out,
                     struct resnet_error *err);

/*
 * Writes n tensors (data in their own dtype, little-endian) as a
 * safetensors file at path: to a temporary file in the same folder, then
 * renamed into place, so path holds the whole file or nothing new.
 * An existing path is kept unless overwrite. metadata, when not NULL, is
 * n_meta key/value string pairs for __metadata__. Tensors keep the given
 * order. Returns RESNET_EINVAL, RESNET_EIO (errno EEXIST when path exists
 * and !overwrite) or RESNET_ENOMEM.
 */
int rn_safetensors_write(const char *path, const struct rn_tensor *tensors,
                         int n, const char *const *metadata, int n_meta,
                         bool overwrite, struct resnet_error *err);

/* ------------------------------------------------------------------ */
/* lib/arch.c: the network as a list of layers                          */

/* Values live in numbered slots of the workspace; see lib/model.c. */
struct rn_layer {
    struct resnet_layer_info info;
    char *name;     // owns info.name
    int in, in2;    // value ids read (in2: second operand of an add)
    int out;        // value id written
    bool relu;      // ReLU fused into this conv, add or linear
    float bn_eps;   // for BN layers
    bool has_weights;  // reads <name>.weight (and .bias) from the file
};

struct resnet_arch {
    char *path;
    char *name;
    char *weights;           // default weights file, or NULL
    char **labels;           // n_classes strings, or NULL
    struct resnet_preprocess pp;
    int c_in, h_in, w_in;
    int n_classes;
    int n_layers;
    struct rn_layer *layers;
    int n_values;            // value ids: 0 is the input
    void *desc;              // the parsed description, to rebuild layers
};

/* ------------------------------------------------------------------ */
/* Kernels: lib/gemm.c, lib/conv.c, lib/pool.c, lib/linear.c           */

/* C = A * B (+ C when accumulate); row-major, A m x k, B k x n. */
void rn_sgemm(int m, int n, int k, const float *a, int lda, const float *b,
              int ldb, float *c, int ldc, bool accumulate);

/* Shape of one convolution; tensors are (c, h, w) for one image. */
struct rn_conv_shape {
    int c_in, h_in, w_in;
    int c_out, h_out, w_out;
    int k_h, k_w, stride, pad, groups;
};

/* Floats of scratch that rn_conv_forward() needs for shape s. */
size_t rn_conv_scratch_size(const struct rn_conv_shape *s);

/*
 * out = conv(in, weight) + bias, then ReLU when relu.
 * weight is (c_out, c_in / groups, k_h, k_w); bias is (c_out) or NULL.
 */
void rn_conv_forward(const struct rn_conv_shape *s, const float *weight,
                     const float *bias, bool relu, const float *in,
                     float *out, float *scratch);

/* 2-D max pooling with implicit -inf padding; tensors (c, h, w). */
void rn_maxpool_forward(int c, int h_in, int w_in, int k, int stride,
                        int pad, int h_out, int w_out, const float *in,
                        float *out);

/* Mean over h and w: in (c, h, w), out (c). */
void rn_avgpool_global(int c, int h, int w, const float *in, float *out);

/*
 * Option-A shortcut: every stride-th row and column of in (c_in, h, w),
 * with (c_out - c_in) / 2 zero channels before and the rest after.
 */
void rn_shortcut_pad(int c_in, int h_in, int w_in, int c_out, int stride,
                     const float *in, float *out);

/* out = a + b, then ReLU when relu; n floats. */
void rn_add(size_t n, const float *a, const float *b, bool relu, float *out);

/* out = weight * in + bias; weight (n_out, n_in), bias (n_out) or NULL. */
void rn_linear_forward(int n_in, int n_out, const float *weight,
                       const float *bias, const float *in, float *out);

#endif
