/*
 * libresnet: run ResNet image classifiers on the CPU.
 *
 * A model is an architecture description (JSON) plus a safetensors weights
 * file. Images are decoded to 8-bit RGB, resized and cropped as torchvision
 * does, normalised to a float tensor and run through the network.
 *
 * Every function that can fail returns RESNET_OK (0) or a RESNET_E* code
 * and, when the caller passes a struct resnet_error, a message naming the
 * subject (file, tensor, JSON path). The library never prints or exits.
 *
 * Known limits (also in the man page's BUGS section): images are limited
 * to RESNET_MAX_PIXELS pixels unless the caller passes another budget;
 * JPEGs with 12-bit samples are refused by libjpeg-turbo, and so are
 * JPEGs whose compressed data it reports as corrupt.
 */
#ifndef RESNET_RESNET_H
#define RESNET_RESNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
enum {
    RESNET_OK = 0,
    RESNET_ENOMEM,       // out of memory, or a size that overflows
    RESNET_EIO,          // a system call failed; errno is in the error
    RESNET_EFORMAT,      // a file is not what it claims to be
    RESNET_ESHAPE,       // a tensor's shape does not fit the model
    RESNET_EUNSUPPORTED, // valid input this library does not handle
    RESNET_EINVAL,       // a bad argument or description value
};

/* Details of a failure: the code, errno when a system call failed, and a
 * message of the form "cannot open 'x.png': No such file or directory". */
struct resnet_error {
    int code;
    int sys_errno;
    char msg[256];
};

/* A short description of a status code; never NULL. */
const char *resnet_strerror(int code);

/* Logging: the library is silent unless a callback is installed. */
enum {
    RESNET_LOG_WARN = 1,
    RESNET_LOG_INFO = 2,
    RESNET_LOG_DEBUG = 3,
};

typedef void (*resnet_log_fn)(void *ctx, int level, const char *msg);

/*
 * Installs fn as the log callback for messages at or below max_level
 * (RESNET_LOG_*); fn NULL turns logging off. Not thread-safe: call it
 * before starting threads that use the library.
 */
void resnet_set_log(resnet_log_fn fn, void *ctx, int max_level);

/* ------------------------------------------------------------------ */
/* Images                                                               */

/* Default pixel budget for a decoded image: 100 megapixels. */
#define RESNET_MAX_PIXELS ((size_t)100 * 1000 * 1000)

/*
 * An 8-bit image, rows top to bottom, pixels interleaved:
 * data is (h, w, c) with c == 3 (RGB) for everything the library returns.
 */
struct resnet_image {
    int w, h, c;
    uint8_t *data; // (h, w, c)
};

/*
 * Decodes the JPEG or PNG at path, chosen by its first bytes, into RGB as
 * PIL's Image.convert('RGB') does: grey is replicated, palettes expanded,
 * alpha dropped, 16-bit samples reduced to their high byte (but 16-bit
 * grey clipped to 255, as PIL reads it as 32-bit integers), CMYK turned
 * into RGB. Refuses images over max_pixels (0 means RESNET_MAX_PIXELS)
 * from the header, before allocating. A truncated file is an error, and
 * so is JPEG data libjpeg reports as corrupt.
 * On success *out is a new image the caller frees with resnet_image_free().
 * Returns RESNET_EIO, RESNET_EFORMAT, RESNET_EUNSUPPORTED or RESNET_ENOMEM.
 */
int resnet_image_load(struct resnet_image **out, const char *path,
                      size_t max_pixels, struct resnet_error *err);

/* Like resnet_image_load() on a buffer; name is used in messages only. */
int resnet_image_decode(struct resnet_image **out, const void *buf,
                        size_t len, const char *name, size_t max_pixels,
                        struct resnet_error *err);

/*
 * Resizes in to w x h with PIL's antialiased bilinear filter, giving the
 * same bytes as PIL's Image.resize(..., Image.BILINEAR). *out is new.
 * Returns RESNET_EINVAL or RESNET_ENOMEM.
 */
int resnet_image_resize(struct resnet_image **out,
                        const struct resnet_image *in, int w, int h,
                        struct resnet_error *err);

/*
 * Cuts the centred w x h window out of in as torchvision's CenterCrop:
 * the offset is round((in - out) / 2) with Python's rounding, and a
 * window larger than the image is padded with zeros. *out is new.
 */
int resnet_image_crop(struct resnet_image **out,
                      const struct resnet_image *in, int w, int h,
                      struct resnet_error *err);

/* Frees img and its pixels; NULL does nothing. */
void resnet_image_free(struct resnet_image *img);

/* ------------------------------------------------------------------ */
/* Preprocessing                                                        */

/*
 * What torchvision's transforms do before the network: resize the shorter
 * side to resize (0: no resize), centre-crop crop_w x crop_h (0: no
 * crop), scale to [0, 1] and normalise each channel with mean and std.
 */
struct resnet_preprocess {
    int resize;
    int crop_w, crop_h;
    float mean[3];
    float std[3];
};

/*
 * Resize and crop as pp says; *out is a new crop_w x crop_h image.
 * Returns RESNET_EINVAL or RESNET_ENOMEM.
 */
int resnet_image_prepare(struct resnet_image **out,
                         const struct resnet_image *in,
                         const struct resnet_preprocess *pp,
                         struct resnet_error *err);

/*
 * Writes in as a float tensor (c, h, w) to out, each value computed in
 * float32 as ToTensor and Normalize do: (p / 255 - mean) / std.
 * out holds in->c * in->h * in->w floats.
 */
void resnet_image_normalize(const struct resnet_image *in,
                            const float mean[3], const float std[3],
                            float *out);

/* ------------------------------------------------------------------ */
/* Architectures                                                        */

/* An architecture read from a JSON description; opaque. */
struct resnet_arch;

/*
 * Reads and validates the description at path. Errors name the JSON path
 * ("stages[2].blocks: expected a positive integer"). *out is new; free it
 * with resnet_arch_free(). Returns RESNET_EIO, RESNET_EFORMAT,
 * RESNET_EINVAL or RESNET_ENOMEM.
 */
int resnet_arch_load(struct resnet_arch **out, const char *path,
                     struct resnet_error *err);

void resnet_arch_free(struct resnet_arch *arch);

/* The description's name, e.g. "resnet50". */
const char *resnet_arch_name(const struct resnet_arch *arch);

/* The path the description was read from. */
const char *resnet_arch_path(const struct resnet_arch *arch);

/* The preprocessing the description asks for. */
const struct resnet_preprocess *
resnet_arch_preprocess(const struct resnet_arch *arch);

/* Input channels, height and width the network is built for. */
void resnet_arch_input(const struct resnet_arch *arch, int *c, int *h,
                       int *w);

int resnet_arch_n_classes(const struct resnet_arch *arch);

/*
 * The weights file the description names, as written there (resolve it
 * with resnet_find_file()), or NULL when it names none.
 */
const char *resnet_arch_weights(const struct resnet_arch *arch);

/*
 * Finds a file a description names (weights, labels): beside the
 * description first, then along resnet_search_path(). On success *out is
 * a new path the caller frees. Returns RESNET_EIO or RESNET_ENOMEM.
 */
int resnet_arch_find_file(const struct resnet_arch *arch, const char *name,
                          char **out, struct resnet_error *err);

/*
 * The class names: n_classes strings, or NULL when the description names
 * no label file or the file it names cannot be found (a warning is then
 * logged). Owned by arch.
 */
const char *const *resnet_arch_labels(const struct resnet_arch *arch);

/* Kinds of layer in the layer list. */
enum resnet_layer_kind {
    RESNET_LAYER_CONV,
    RESNET_LAYER_BN,
    RESNET_LAYER_RELU,
    RESNET_LAYER_MAXPOOL,
    RESNET_LAYER_AVGPOOL,  // global average pool
    RESNET_LAYER_SHORTCUT, // parameter-free downsampling (option A)
    RESNET_LAYER_ADD,      // the residual add x + F(x)
    RESNET_LAYER_LINEAR,
};

/* Where a layer sits in the network. */
enum resnet_layer_part {
    RESNET_PART_STEM,
    RESNET_PART_BLOCK,    // the residual branch F(x) of a block
    RESNET_PART_SHORTCUT, // the shortcut branch of a block
    RESNET_PART_HEAD,
};

/* One layer of the network as the description builds it, for reports. */
struct resnet_layer_info {
    const char *name;        // tensor name prefix, e.g. "layer1.0.conv1"
    enum resnet_layer_kind kind;
    enum resnet_layer_part part;
    int stage, block;        // -1 outside the blocks
    int c_in, h_in, w_in;    // input shape
    int c_out, h_out, w_out; // output shape
    int k_h, k_w, stride, pad, groups; // conv and pool; 0 elsewhere
    bool has_bias;
    size_t n_params;         // parameters the weights file holds
    uint64_t n_macs;         // multiply-accumulates for one image
    int in, in2, out;        // values read and written: 0 is the input,
                             // each other layer writes a new one (BN and
                             // ReLU work in place: out == in); in2 is the
                             // shortcut operand of an add, else -1
};

/* The number of layers in execution order. */
int resnet_arch_n_layers(const struct resnet_arch *arch);

/* Fills *info for layer i (0 <= i < n_layers); strings are owned by arch. */
void resnet_arch_layer(const struct resnet_arch *arch, int i,
                       struct resnet_layer_info *info);

/*
 * Rebuilds the layer list for an input of h x w pixels, for reports on
 * other sizes. Returns RESNET_EINVAL when the network does not fit.
 */
int resnet_arch_set_input(struct resnet_arch *arch, int h, int w,
                          struct resnet_error *err);

/* ------------------------------------------------------------------ */
/* Checking a weights file                                              */

/* What can be wrong with a weights file for an architecture. */
enum resnet_problem_kind {
    RESNET_PROBLEM_MISSING,    // a tensor the network reads is absent
    RESNET_PROBLEM_UNEXPECTED, // a tensor the network does not read
    RESNET_PROBLEM_SHAPE,      // the shape differs from the expected one
    RESNET_PROBLEM_DTYPE,      // not F32, F16 or BF16
    RESNET_PROBLEM_VALUES,     // NaN or infinite values
    RESNET_PROBLEM_VARIANCE,   // a BatchNorm running_var not above zero
};

/*
 * One problem. expected and actual are what the message shows between
 * its parentheses ("256x256x3x3" and "256x128x3x3"), or empty.
 */
struct resnet_problem {
    enum resnet_problem_kind kind;
    const char *tensor;  // the tensor's name, valid during the callback
    char expected[96];
    char actual[96];
    char msg[256];       // "bad shape for 'x' (expected 1x2, got 2x1)"
};

typedef void (*resnet_problem_fn)(void *ctx, const struct resnet_problem *p);

/* The tensors of one dtype in a weights file. */
struct resnet_weights_dtype {
    char name[8];        // as safetensors spells it: "F32", "BF16"
    int n_tensors;
    uint64_t n_elems;
    uint64_t n_bytes;
};

/* What resnet_weights_check() found in a file. */
struct resnet_weights_summary {
    uint64_t file_size;
    int n_tensors;
    int n_problems;
    int n_dtypes;
    struct resnet_weights_dtype dtypes[16]; // in order of first use
};

/*
 * Checks the safetensors file at path against arch and reports every
 * problem, in layer order and then file order, to fn (which may be NULL):
 * each tensor arch reads must be there with its shape, dtype F32, F16 or
 * BF16, finite values and, for BatchNorm running_var, values above zero;
 * any other tensor is unexpected (a BatchNorm's num_batches_tracked is
 * allowed). summary (may be NULL) is filled whenever the file could be
 * read. Returns RESNET_OK when there is no problem; otherwise the first
 * problem's code (RESNET_ESHAPE for a missing, unexpected or misshapen
 * tensor, RESNET_EUNSUPPORTED for a dtype, RESNET_EFORMAT for values)
 * with its message in err, or RESNET_EIO, RESNET_EFORMAT,
 * RESNET_EUNSUPPORTED or RESNET_ENOMEM when the file cannot be read, in
 * which case fn is not called and summary->n_tensors is 0.
 */
int resnet_weights_check(const struct resnet_arch *arch, const char *path,
                         resnet_problem_fn fn, void *ctx,
                         struct resnet_weights_summary *summary,
                         struct resnet_error *err);

/* ------------------------------------------------------------------ */
/* Models                                                               */

/* An architecture with its weights bound and BatchNorm folded; opaque. */
struct resnet_model;

/*
 * Builds the network of arch with the safetensors weights at
 * weights_path. Takes over arch: the model frees it, also on failure.
 * Every tensor is checked as resnet_weights_check() does; the first
 * problem is the error, naming the tensor and the file. *out is new; free
 * it with resnet_model_free(). Returns RESNET_EIO, RESNET_EFORMAT,
 * RESNET_ESHAPE, RESNET_EUNSUPPORTED or RESNET_ENOMEM.
 */
int resnet_model_load(struct resnet_model **out, struct resnet_arch *arch,
                      const char *weights_path, struct resnet_error *err);

void resnet_model_free(struct resnet_model *model);

/* The model's architecture, owned by the model. */
const struct resnet_arch *resnet_model_arch(const struct resnet_model *m);

/*
 * Scratch memory for one forward pass at a time. A model may be run from
 * several threads at once, each with its own workspace.
 */
struct resnet_workspace;

/* *out is a new workspace for model; returns RESNET_ENOMEM. */
int resnet_workspace_new(struct resnet_workspace **out,
                         const struct resnet_model *model,
                         struct resnet_error *err);

void resnet_workspace_free(struct resnet_workspace *ws);

/*
 * Runs the network on input, a (c, h, w) float tensor of the size
 * resnet_arch_input() gives, and writes n_classes logits to logits.
 * Allocates nothing; cannot fail.
 */
void resnet_model_forward(const struct resnet_model *model,
                          struct resnet_workspace *ws, const float *input,
                          float *logits);

/*
 * Per-layer timings of the last forward pass through ws, in seconds, one
 * for each layer of resnet_arch_n_layers() (folded BatchNorm layers take
 * no time), or NULL when the workspace was not asked to time.
 */
const double *resnet_workspace_timings(const struct resnet_workspace *ws);

/* Turns per-layer timing on or off for passes through ws. */
void resnet_workspace_set_timing(struct resnet_workspace *ws, bool on);

/*
 * Sets how many threads one forward pass may use (OpenBLAS's thread
 * count); 1 when the caller runs several passes in parallel itself.
 */
void resnet_set_threads(int n);

/* Writes softmax(logits) to probs; both hold n floats. */
void resnet_softmax(const float *logits, float *probs, int n);

/* ------------------------------------------------------------------ */
/* Converting PyTorch weights                                           */

/* Element types resnet_convert() writes. */
enum resnet_dtype {
    RESNET_DTYPE_F32,
    RESNET_DTYPE_F16,
    RESNET_DTYPE_BF16,
};

struct resnet_convert_opts {
    const char *arch_path;  // description to check against; NULL: recognise
    enum resnet_dtype dtype;
    bool overwrite;         // replace existing output files
    // Called as storages are read with bytes done of total; may be NULL.
    void (*progress)(void *ctx, size_t done, size_t total);
    void *progress_ctx;
};

/* What a conversion found, for the caller to report. */
struct resnet_convert_info {
    const char *format;     // "zip", "legacy" or "safetensors" (static)
    char found_under[32];   // checkpoint key that held the state dict, or ""
    char prefix[32];        // prefix stripped from every name, or ""
    char arch_name[64];     // the model recognised or checked against,
                            // or "" when none was recognised
    char unrecognised[256]; // why no description was written, or ""
    int n_tensors;          // tensors written
    int n_dropped;          // num_batches_tracked tensors left out
    int n_narrowed;         // float64 tensors narrowed to float32
};

/*
 * Converts the PyTorch file (torch.save's zip or pre-1.6 format) or
 * safetensors file at in_path into a safetensors weights file at
 * weights_path and a model description (JSON) at desc_path whose
 * "weights" is weights_path's base name. The input's format is told by
 * its content. A pickle in it is read without running anything; a
 * global a state_dict does not need is refused. With opts->arch_path the
 * tensors are checked against that description (which is copied);
 * otherwise the ResNet is recognised from tensor names and shapes, and
 * when none fits, only the weights are written and info->unrecognised
 * says which tensors could not be placed. A description's tensors are
 * then checked as resnet_weights_check() checks a file, after the dtype
 * conversion (so NaN, Inf and BatchNorm variances not above zero are
 * refused, also when narrowing made them); the first problem is the
 * error, naming in_path.
 * Floating-point tensors are written as opts->dtype. Each output is
 * written to a temporary file and renamed into place; existing files are
 * kept unless opts->overwrite, and on failure no output is left.
 * Limits: a stride-0 view may repeat its storage to at most 1 GiB, all
 * tensors together may take at most twice their storages' bytes plus
 * 256 MiB, and a compressed zip record may expand at most 64-fold.
 * A program that may be stopped by a signal while this runs can call
 * resnet_temp_files_remove() from its handler.
 * info (may be NULL) is filled in. Returns RESNET_EIO, RESNET_EFORMAT,
 * RESNET_ESHAPE, RESNET_EUNSUPPORTED, RESNET_EINVAL or RESNET_ENOMEM.
 */
int resnet_convert(const char *in_path, const char *weights_path,
                   const char *desc_path,
                   const struct resnet_convert_opts *opts,
                   struct resnet_convert_info *info,
                   struct resnet_error *err);

/*
 * Removes the temporary files (".<name>.XXXXXX" beside their targets)
 * that output files being written have now, for a signal handler that
 * then ends the program: async-signal-safe, it only calls unlink(), and
 * leaves the writers' state alone.
 */
void resnet_temp_files_remove(void);

/* ------------------------------------------------------------------ */
/* Finding files                                                        */

/*
 * Finds a model description or weights file. A name containing '/' or
 * naming an existing file is taken as a path. Otherwise each folder of
 * the colon-separated search path is tried for name, then for name with
 * suffix appended (suffix may be NULL). On success *out is a new string
 * the caller frees. Returns RESNET_EIO (with a message listing where it
 * looked) or RESNET_ENOMEM.
 */
int resnet_find_file(char **out, const char *name, const char *suffix,
                     const char *search_path, struct resnet_error *err);

/*
 * The default search path for descriptions, weights and labels:
 * $RESNET_MODEL_PATH followed by the installed models folder. Returns a
 * new string the caller frees, or NULL when out of memory.
 */
char *resnet_search_path(void);

#ifdef __cplusplus
}
#endif

#endif
