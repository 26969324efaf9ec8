/*
 * Element-wise pieces of a residual block: the addition of the shortcut
 * (with the block's final ReLU fused) and the parameter-free "option A"
 * shortcut of the CIFAR ResNets, which subsamples and zero-pads channels.
 */
#include <config.h>

#include <string.h>

#include "internal.h"

void rn_shortcut_pad(int c_in, int h_in, int w_in, int c_out, int stride,
                     const float *in, float *out) {
    // x[:, :, ::stride, ::stride] keeps ceil(h_in / stride) rows.
    int h_out = (h_in + stride - 1) / stride;
    int w_out = (w_in + stride - 1) / stride;
    size_t n_pix = (size_t)h_out * w_out;
    int pad_before = (c_out - c_in) / 2;
    int pad_after = c_out - c_in - pad_before;

    memset(out, 0, sizeof *out * n_pix * pad_before);
    for (int ci = 0; ci < c_in; ci++) {
        const float *plane = in + (size_t)ci * h_in * w_in;
        float *o = out + (size_t)(pad_before + ci) * n_pix;
        for (int oy = 0; oy < h_out; oy++) {
            const float *row = plane + (size_t)oy * stride * w_in;
            for (int ox = 0; ox < w_out; ox++) {
                o[(size_t)oy * w_out + ox] = row[(size_t)ox * stride];
            }
        }
    }
    memset(out + (size_t)(pad_before + c_in) * n_pix, 0,
           sizeof *out * n_pix * pad_after);
}

void rn_add(size_t n, const float *a, const float *b, bool relu, float *out) {
    for (size_t i = 0; i < n; i++) {
        float v = a[i] + b[i];
        out[i] = relu && v <= 0.0f ? 0.0f : v;  // NaN stays NaN
    }
}
