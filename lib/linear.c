/*
 * Fully connected layer for one input vector, as one sgemm with a single
 * column, then the bias.
 */
#include <config.h>

#include "internal.h"

void rn_linear_forward(int n_in, int n_out, const float *weight,
                       const float *bias, const float *in, float *out) {
    // out (n_out, 1) = weight (n_out, n_in) * in (n_in, 1)
    rn_sgemm(n_out, 1, n_in, weight, n_in, in, 1, out, 1, false);
    if (bias) {
        for (int i = 0; i < n_out; i++) {
            out[i] += bias[i];
        }
    }
}
