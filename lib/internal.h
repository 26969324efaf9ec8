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
/* lib/atomic.c: files that appear whole or not at all                 */

/*
 * A file being written: a temporary file beside path, moved onto path by
 * rn_atomic_commit(). All zero means none is open.
 */
struct rn_atomic {
    const char *path;  // the target, borrowed
    char *tmp;         // the temporary file's name, or NULL when none
    int fd;            // open on tmp
    bool overwrite;    // replace an existing path
};

/*
 * RESNET_EIO with errno EEXIST and the message "'<path>' exists (use
 * --force to overwrite)" when path exists and !overwrite; else RESNET_OK.
 */
int rn_atomic_check(const char *path, bool overwrite,
                    struct resnet_error *err);

/*
 * Starts writing path: fails as rn_atomic_check() does, then creates
 * the temporary file with the mode a plain creat() would give (0666
 * less the umask). Returns RESNET_EIO or RESNET_ENOMEM with nothing
 * left open.
 */
int rn_atomic_open(struct rn_atomic *f, const char *path, bool overwrite,
                   struct resnet_error *err);

/* Appends n bytes. On failure (RESNET_EIO) the temporary file is gone. */
int rn_atomic_write(struct rn_atomic *f, const void *buf, size_t n,
                    struct resnet_error *err);

/*
 * Flushes the file to disk and moves it onto path; without overwrite an
 * existing path is kept and is an error (as rn_atomic_check()). Either
 * way the temporary file is gone. Returns RESNET_EIO.
 */
int rn_atomic_commit(struct rn_atomic *f, struct resnet_error *err);

/*
 * Removes the temporary file, if one is open; path is untouched. Safe
 * after any of the functions above and on an all-zero struct.
 */
void rn_atomic_abort(struct rn_atomic *f);

/* ------------------------------------------------------------------ */
/* lib/image.c, lib/resize.c, lib/png.c, lib/jpeg.c: images             */

/*
 * A new w x h RGB image with uninitialised pixels (zeroed when zero).
 * Returns RESNET_ENOMEM, also when w * h * 3 overflows.
 */
int rn_image_new(struct resnet_image **out, int w, int h, bool zero,
                 struct resnet_error *err);

/*
 * Refuses a w x h image from name's header when it is empty or has more
 * than max_pixels pixels (already resolved, never 0): RESNET_EFORMAT or
 * RESNET_EUNSUPPORTED with the message the user sees.
 */
int rn_image_check_size(long w, long h, size_t max_pixels, const char *name,
                        struct resnet_error *err);

/*
 * Decoders behind resnet_image_decode(): buf holds the whole file, whose
 * signature the caller has checked. Same contract as resnet_image_decode,
 * with max_pixels already resolved.
 */
int rn_png_decode(struct resnet_image **out, const uint8_t *buf, size_t len,
                  const char *name, size_t max_pixels,
                  struct resnet_error *err);
int rn_jpeg_decode(struct resnet_image **out, const uint8_t *buf, size_t len,
                   const char *name, size_t max_pixels,
                   struct resnet_error *err);

/*
 * The window x0, y0, w, h (inside 0..full_w, 0..full_h) of in resized to
 * full_w x full_h as resnet_image_resize() does; only the window is
 * computed, so a crop of a large resize costs the crop. *out is new.
 */
int rn_image_resample(struct resnet_image **out,
                      const struct resnet_image *in, int full_w, int full_h,
                      int x0, int y0, int w, int h,
                      struct resnet_error *err);

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
/* lib/pickle.c: a pickle reader that runs nothing                      */

/* Kinds of value the pickle reader builds. */
enum rn_pv_kind {
    RN_PV_NONE,
    RN_PV_BOOL,
    RN_PV_INT,
    RN_PV_BIGINT,  // an integer too wide for int64: raw bytes in str
    RN_PV_FLOAT,
    RN_PV_STR,     // text, UTF-8 as stored
    RN_PV_BYTES,
    RN_PV_TUPLE,
    RN_PV_LIST,
    RN_PV_DICT,    // dicts and OrderedDicts: key, value pairs in order
    RN_PV_GLOBAL,  // an allowed global (function or class), not called
    RN_PV_STORAGE, // a storage named by a persistent id
    RN_PV_TENSOR,  // a view of a storage
};

/*
 * One value. Values belong to the struct rn_pickle that made them and may
 * be shared (the memo hands out the same value again).
 */
struct rn_pval {
    enum rn_pv_kind kind;
    int depth;             // nesting depth: 0 for scalars
    struct rn_pval *chain; // next value of the same pickle, for freeing
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            char *s;       // NUL-terminated copy; len excludes the NUL
            size_t len;
        } str;             // STR, BYTES, BIGINT (little-endian bytes)
        struct {
            struct rn_pval **items; // DICT: key0, value0, key1, ...
            size_t n;               // items (DICT: 2 * entries)
            size_t cap;
        } seq;             // TUPLE, LIST, DICT
        struct {
            int id;        // which allowed global (private to pickle.c)
            enum rn_dtype dtype; // for storage types
            const char *name;    // "module.name"
        } global;
        struct {
            enum rn_dtype dtype;
            const char *key;      // the record or storage key
            const char *location; // "cpu", "cuda:0", ...
            int64_t root_numel;   // elements of the whole record
            int64_t offset;       // first element of this storage (views)
            int64_t numel;        // elements of this storage
        } storage;
        struct {
            const struct rn_pval *storage;
            int64_t offset;       // in elements of the storage
            int n_dims;
            int64_t shape[RN_MAX_DIMS];
            int64_t stride[RN_MAX_DIMS]; // in elements
        } tensor;
    } u;
};

/* A parsed pickle: owns every value it made. */
struct rn_pickle {
    struct rn_pval *root;
    struct rn_pval *values; // all values, chained through ->chain
    size_t n_values;
};

/*
 * Runs the pickle in buf[0, len) up to its STOP opcode without executing
 * anything: only the globals a PyTorch state_dict needs are allowed
 * (OrderedDict, the tensor and parameter rebuild functions, storage
 * types), and any other is refused with an error naming it. Stack, memo,
 * value count and nesting are bounded. name is the file for messages.
 * *used gets the bytes read, up to and including STOP (may be NULL).
 * *out is new; free with rn_pickle_free(). Returns RESNET_EFORMAT,
 * RESNET_EUNSUPPORTED or RESNET_ENOMEM.
 */
int rn_pickle_load(struct rn_pickle **out, const void *buf, size_t len,
                   const char *name, size_t *used, struct resnet_error *err);

void rn_pickle_free(struct rn_pickle *p);

/* The value for string key in dict d, or NULL (also when d is no dict). */
const struct rn_pval *rn_pval_get(const struct rn_pval *d, const char *key);

/* Whether v is a string equal to s. */
bool rn_pval_is_str(const struct rn_pval *v, const char *s);

/* ------------------------------------------------------------------ */
/* lib/torchfile.c: state dicts from torch.save and safetensors files   */

/* Called now and then while storages are read: bytes done of total. */
typedef void (*rn_progress_fn)(void *ctx, size_t done, size_t total);

/* A state dict read from a file: named tensors owning their data. */
struct rn_state_dict {
    int n_tensors;
    struct rn_tensor *tensors; // names and contiguous data owned here
    const char *format;        // "zip", "legacy" or "safetensors"
    const char *found_under;   // checkpoint key that held it, or NULL
    const char *prefix;        // prefix stripped from every name, or NULL
    int n_dropped;             // num_batches_tracked tensors left out
};

/*
 * Reads the tensors of the PyTorch zip, legacy (pre-1.6) or safetensors
 * file at path, told apart by content. A checkpoint's state dict is found
 * under "state_dict" or "model"; a "module." prefix common to all names
 * is stripped; num_batches_tracked is dropped. Views are copied out
 * contiguously, honouring storage offset and strides. Nothing from the
 * file is executed (see rn_pickle_load()). progress may be NULL.
 * *out is new; free with rn_state_dict_free(). Returns RESNET_EIO,
 * RESNET_EFORMAT, RESNET_EUNSUPPORTED or RESNET_ENOMEM.
 */
int rn_state_dict_load(struct rn_state_dict **out, const char *path,
                       rn_progress_fn progress, void *progress_ctx,
                       struct resnet_error *err);

void rn_state_dict_free(struct rn_state_dict *sd);

/*
 * Converts every floating-point tensor to dtype (F32, F16 or BF16),
 * rounding to nearest even where it narrows; *n_narrowed_f64 gets the
 * number of F64 tensors narrowed. Returns RESNET_ENOMEM.
 */
int rn_state_dict_cast(struct rn_state_dict *sd, enum rn_dtype dtype,
                       int *n_narrowed_f64, struct resnet_error *err);

/* ------------------------------------------------------------------ */
/* lib/desc.c: the JSON description, parsed and validated               */

struct rn_stage_desc {
    char *name;   // tensor prefix, e.g. "layer1"
    int n_blocks;
    int planes;   // torchvision's planes: output is planes * expansion
    int stride;
};

/* Everything a description says, with defaults filled in. */
struct rn_desc {
    char *name;
    char *labels;  // label file as written, or NULL
    char *weights; // default weights file as written, or NULL
    struct resnet_preprocess pp;
    int c_in, h_in, w_in;

    char *stem_conv;     // tensor prefix of the stem conv
    int stem_channels, stem_kernel, stem_stride, stem_pad;
    char *stem_bn;       // NULL: no BN, the stem conv has a bias
    bool has_maxpool;
    int pool_kernel, pool_stride, pool_pad;

    bool is_bottleneck;
    int groups, width_per_group;
    bool stride_on_1x1;  // the original paper's placement
    bool is_pad_shortcut; // option A instead of a projection
    int n_stages;
    struct rn_stage_desc *stages;

    char *fc;            // tensor prefix of the classifier
    int n_classes;
    float bn_eps;
};

/*
 * Parses and validates the JSON text of a description; name is the file
 * for messages. Errors name the JSON path. *out is new; free it with
 * rn_desc_free(). Returns RESNET_EFORMAT, RESNET_EINVAL or RESNET_ENOMEM.
 */
int rn_desc_parse(struct rn_desc **out, const char *json, size_t len,
                  const char *name, struct resnet_error *err);

void rn_desc_free(struct rn_desc *desc);

/* ------------------------------------------------------------------ */
/* lib/arch.c: the network as a list of layers                          */

/*
 * A layer of the list. Values are numbered: 0 is the network's input,
 * and each layer that makes a new tensor writes the next number. BN and
 * ReLU layers work in place (in == out) and are folded or fused into the
 * conv, add or linear before them when the model is built.
 */
struct rn_layer {
    struct resnet_layer_info info;
    char *name;        // owns info.name
    int in, in2;       // values read (in2: the shortcut operand of an add)
    int out;           // value written
};

struct resnet_arch {
    char *path;
    struct rn_desc *desc;
    char **labels;     // n_classes strings, or NULL
    int h_in, w_in;    // current input size (the description's, or set)
    int n_layers;
    struct rn_layer *layers;
    int n_values;
};

/* One tensor the weights file must hold. */
struct rn_expected {
    char name[160];
    int n_dims;
    int64_t shape[4];
    int layer;         // index into arch->layers
};

/*
 * Lists every tensor the architecture reads, in layer order. *out is a
 * new array of *n entries. Returns RESNET_ENOMEM.
 */
int rn_arch_expected(const struct resnet_arch *arch,
                     struct rn_expected **out, int *n,
                     struct resnet_error *err);

/*
 * Reads the text file at path (a description or a label list, at most
 * 16 MiB) into *out, a new NUL-terminated string of *len bytes. Returns
 * RESNET_EIO, RESNET_EFORMAT (too large) or RESNET_ENOMEM.
 */
int rn_read_text(const char *path, char **out, size_t *len,
                 struct resnet_error *err);

/*
 * Builds an architecture from the JSON text of a description without
 * reading label files; name is used in messages and as its path. *out is
 * new; free with resnet_arch_free(). Returns as rn_desc_parse().
 */
int rn_arch_parse(struct resnet_arch **out, const char *json, size_t len,
                  const char *name, struct resnet_error *err);

/* ------------------------------------------------------------------ */
/* lib/recognize.c: which ResNet a state dict belongs to                */

/*
 * Recognises the torchvision ResNet, ResNeXt or Wide ResNet, or the
 * CIFAR ResNet (option-A shortcut), whose tensors sd holds, with its
 * stage and block counts, widths and number of classes, and writes its
 * description as JSON text into *json (new), naming weights as the
 * weights file. source is the input file for messages. The result is
 * checked by building it: every tensor must be placed with its shape.
 * Returns RESNET_ESHAPE with a message listing the tensors that could
 * not be placed, or RESNET_ENOMEM.
 */
int rn_recognize(const struct rn_state_dict *sd, const char *source,
                 const char *weights, char **json, struct resnet_error *err);

/* ------------------------------------------------------------------ */
/* lib/check.c: a weights file against an architecture                 */

/*
 * resnet_weights_check() on tensors already in memory (a mapped file or
 * a state dict); path, when not NULL, is named in each message after the
 * tensor ("missing tensor 'fc.bias' in 'w.safetensors'"). With
 * shapes_only, only missing, unexpected and misshapen tensors are
 * problems, not dtypes or values. summary->file_size is left 0 for the
 * caller to fill in.
 */
int rn_weights_check(const struct resnet_arch *arch,
                     const struct rn_tensor *tensors, int n_tensors,
                     const char *path, bool shapes_only,
                     resnet_problem_fn fn, void *ctx,
                     struct resnet_weights_summary *summary,
                     struct resnet_error *err);

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
