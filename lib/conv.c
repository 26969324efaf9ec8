/*
 * 2-D convolution for one image, NCHW: im2col into caller scratch, then
 * one sgemm per group, then bias and ReLU in one pass over the output.
 * A 1x1 stride-1 unpadded convolution multiplies the input directly.
 */
#include <config.h>

#include <assert.h>
#include <string.h>

#include "internal.h"

/* True when the input already is the im2col matrix. */
static bool is_pointwise(const struct rn_conv_shape *s) {
    return s->k_h == 1 && s->k_w == 1 && s->stride == 1 && s->pad == 0;
}

/*
 * Unfolds in (c, h_in, w_in) into col (c * k_h * k_w, h_out * w_out):
 * row (ci, ki, kj) holds, for each output pixel, the input value under
 * kernel tap (ki, kj), or 0 where the tap falls in the padding.
 */
static void im2col(const struct rn_conv_shape *s, const float *in,
                   float *col) {
    size_t n_pix = (size_t)s->h_out * s->w_out;

    for (int ci = 0; ci < s->c_in; ci++) {
        const float *plane = in + (size_t)ci * s->h_in * s->w_in;
        for (int ki = 0; ki < s->k_h; ki++) {
            for (int kj = 0; kj < s->k_w; kj++) {
                float *row = col + (((size_t)ci * s->k_h + ki) * s->k_w + kj)
                                       * n_pix;
                for (int oy = 0; oy < s->h_out; oy++) {
                    int iy = oy * s->stride - s->pad + ki;
                    float *dst = row + (size_t)oy * s->w_out;
                    if (iy < 0 || iy >= s->h_in) {
                        memset(dst, 0, sizeof *dst * s->w_out);
                        continue;
                    }
                    const float *src = plane + (size_t)iy * s->w_in;
                    for (int ox = 0; ox < s->w_out; ox++) {
                        int ix = ox * s->stride - s->pad + kj;
                        dst[ox] = ix >= 0 && ix < s->w_in ? src[ix] : 0.0f;
                    }
                }
            }
        }
    }
}

size_t rn_conv_scratch_size(const struct rn_conv_shape *s) {
    if (is_pointwise(s)) {
        return 0;
    }
    return (size_t)s->c_in * s->k_h * s->k_w * s->h_out * s->w_out;
}

void rn_conv_forward(const struct rn_conv_shape *s, const float *weight,
                     const float *bias, bool relu, const float *in,
                     float *out, float *scratch) {
    int c_in_g = s->c_in / s->groups;
    int c_out_g = s->c_out / s->groups;
    int k = c_in_g * s->k_h * s->k_w;   // inner dimension of each product
    int n_pix = s->h_out * s->w_out;
    const float *col = in;

    assert(s->groups > 0 && s->c_in % s->groups == 0
           && s->c_out % s->groups == 0);

    // The im2col rows of group g are rows [g * k, (g + 1) * k): the rows
    // are ordered by input channel first, and groups are channel ranges.
    if (!is_pointwise(s)) {
        im2col(s, in, scratch);
        col = scratch;
    }

    // out_g (c_out_g, n_pix) = weight_g (c_out_g, k) * col_g (k, n_pix)
    for (int g = 0; g < s->groups; g++) {
        rn_sgemm(c_out_g, n_pix, k, weight + (size_t)g * c_out_g * k, k,
                 col + (size_t)g * k * n_pix, n_pix,
                 out + (size_t)g * c_out_g * n_pix, n_pix, false);
    }

    // Epilogue: bias per output channel, then ReLU.
    if (!bias && !relu) {
        return;
    }
    for (int co = 0; co < s->c_out; co++) {
        float b = bias ? bias[co] : 0.0f;
        float *o = out + (size_t)co * n_pix;
        for (int i = 0; i < n_pix; i++) {
            float v = o[i] + b;
            o[i] = relu && v <= 0.0f ? 0.0f : v;  // NaN stays NaN
        }
    }
}
