/*
 * Pooling on one image, NCHW: max pooling with implicit -inf padding as
 * PyTorch's MaxPool2d, and the global average of AdaptiveAvgPool2d(1).
 */
#include <config.h>

#include <math.h>

#include "internal.h"

void rn_maxpool_forward(int c, int h_in, int w_in, int k, int stride,
                        int pad, int h_out, int w_out, const float *in,
                        float *out) {
    for (int ci = 0; ci < c; ci++) {
        const float *plane = in + (size_t)ci * h_in * w_in;
        float *o = out + (size_t)ci * h_out * w_out;

        for (int oy = 0; oy < h_out; oy++) {
            for (int ox = 0; ox < w_out; ox++) {
                // Taps in the padding are skipped, as if they held -inf.
                float m = -INFINITY;
                for (int ki = 0; ki < k; ki++) {
                    int iy = oy * stride - pad + ki;
                    if (iy < 0 || iy >= h_in) {
                        continue;
                    }
                    for (int kj = 0; kj < k; kj++) {
                        int ix = ox * stride - pad + kj;
                        if (ix < 0 || ix >= w_in) {
                            continue;
                        }
                        // A NaN wins and stays, as in PyTorch.
                        float v = plane[(size_t)iy * w_in + ix];
                        if (v > m || isnan(v)) {
                            m = v;
                        }
                    }
                }
                o[(size_t)oy * w_out + ox] = m;
            }
        }
    }
}

void rn_avgpool_global(int c, int h, int w, const float *in, float *out) {
    size_t n = (size_t)h * w;

    // Sum in double so the mean is the correctly rounded float of the
    // exact mean in all but pathological cases, whatever the order.
    for (int ci = 0; ci < c; ci++) {
        const float *plane = in + (size_t)ci * n;
        double sum = 0.0;
        for (size_t i = 0; i < n; i++) {
            sum += plane[i];
        }
        out[ci] = (float)(sum / (double)n);
    }
}
