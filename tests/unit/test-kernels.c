/*
 * Unit tests for the compute kernels: each one is checked against a naive
 * loop written here, computed in double, over a spread of shapes.
 */
#include <config.h>

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

/*
 * Tolerance for sums of products: a kernel's value v passes when
 * |v - ref| <= SUM_TOL * max(1, scale), where ref is the naive sum in
 * double and scale is the sum of the absolute values of its terms (so
 * cancellation does not make the check stricter than float allows). One
 * missing or misplaced term of a few hundred moves the sum by far more.
 */
#define SUM_TOL 1e-5

/* Floats written after each output, which no kernel may touch. */
#define N_GUARD 16
#define GUARD_VALUE 12345.5f

static uint32_t rng_state;

/* Deterministic uniform floats in [-1, 1), with exact binary values. */
static float rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((int32_t)(rng_state >> 8) - (1 << 23)) / (float)(1 << 23);
}

static float *rnd_array(size_t n) {
    float *p = malloc(sizeof *p * (n ? n : 1));

    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        p[i] = rnd();
    }
    return p;
}

/* An output buffer of n floats followed by N_GUARD guard values. */
static float *out_array(size_t n) {
    float *p = malloc(sizeof *p * (n + N_GUARD));

    assert_non_null(p);
    for (size_t i = 0; i < n + N_GUARD; i++) {
        p[i] = i < n ? NAN : GUARD_VALUE;
    }
    return p;
}

/*
 * Compares got with ref element by element: |got - ref| <= tol * max(1,
 * scale[i]) (scale NULL means |ref|; tol 0 demands equality). Prints the
 * first failing index, its expected and actual values and the largest
 * difference, then fails the test. Also checks the guard after got.
 */
static void check_close(const char *what, const float *got,
                        const double *ref, const double *scale, size_t n,
                        double tol) {
    size_t n_bad = 0, first_bad = 0, worst = 0;
    double worst_diff = 0.0;

    for (size_t i = 0; i < n; i++) {
        double diff = fabs((double)got[i] - ref[i]);
        double s = scale ? scale[i] : fabs(ref[i]);
        if (isnan(got[i]) != isnan(ref[i])) {
            diff = INFINITY;
        } else if (isnan(got[i])) {
            diff = 0.0;
        }
        if (diff > worst_diff) {
            worst_diff = diff;
            worst = i;
        }
        if (diff > tol * (s > 1.0 ? s : 1.0)) {
            if (n_bad++ == 0) {
                first_bad = i;
            }
        }
    }
    if (n_bad) {
        print_error("%s: %zu of %zu values differ; first at index %zu: "
                    "expected %.9g, actual %.9g; largest difference %.3g "
                    "at index %zu (tolerance %g)\n",
                    what, n_bad, n, first_bad, ref[first_bad],
                    (double)got[first_bad], worst_diff, worst, tol);
        fail();
    }
    for (size_t i = n; i < n + N_GUARD; i++) {
        if (got[i] != GUARD_VALUE) {
            fail_msg("%s: wrote past the end of the output, at index %zu",
                     what, i);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Convolution                                                          */

struct conv_case {
    int c_in, h_in, w_in, c_out, k, stride, pad, groups;
    bool has_bias, relu;
};

/* The output (ref) and term magnitudes (scale) of a direct convolution. */
static void naive_conv(const struct rn_conv_shape *s, const float *weight,
                       const float *bias, bool relu, const float *in,
                       double *ref, double *scale) {
    int c_in_g = s->c_in / s->groups, c_out_g = s->c_out / s->groups;

    for (int co = 0; co < s->c_out; co++) {
        int g = co / c_out_g;
        for (int oy = 0; oy < s->h_out; oy++) {
            for (int ox = 0; ox < s->w_out; ox++) {
                double sum = bias ? bias[co] : 0.0;
                double mag = fabs(sum);
                for (int cg = 0; cg < c_in_g; cg++) {
                    int ci = g * c_in_g + cg;
                    for (int ki = 0; ki < s->k_h; ki++) {
                        for (int kj = 0; kj < s->k_w; kj++) {
                            int iy = oy * s->stride - s->pad + ki;
                            int ix = ox * s->stride - s->pad + kj;
                            if (iy < 0 || iy >= s->h_in || ix < 0
                                || ix >= s->w_in) {
                                continue;
                            }
                            double p = (double)weight[((size_t)(co * c_in_g
                                           + cg) * s->k_h + ki) * s->k_w + kj]
                                       * in[((size_t)ci * s->h_in + iy)
                                            * s->w_in + ix];
                            sum += p;
                            mag += fabs(p);
                        }
                    }
                }
                size_t o = ((size_t)co * s->h_out + oy) * s->w_out + ox;
                ref[o] = relu && sum < 0.0 ? 0.0 : sum;
                scale[o] = mag;
            }
        }
    }
}

static void check_conv(const struct conv_case *c, const char *what) {
    struct rn_conv_shape s = {
        .c_in = c->c_in, .h_in = c->h_in, .w_in = c->w_in,
        .c_out = c->c_out, .k_h = c->k, .k_w = c->k,
        .stride = c->stride, .pad = c->pad, .groups = c->groups,
        .h_out = (c->h_in + 2 * c->pad - c->k) / c->stride + 1,
        .w_out = (c->w_in + 2 * c->pad - c->k) / c->stride + 1,
    };
    size_t n_in = (size_t)s.c_in * s.h_in * s.w_in;
    size_t n_w = (size_t)s.c_out * (s.c_in / s.groups) * s.k_h * s.k_w;
    size_t n_out = (size_t)s.c_out * s.h_out * s.w_out;
    size_t n_scratch = rn_conv_scratch_size(&s);
    float *in = rnd_array(n_in);
    float *weight = rnd_array(n_w);
    float *bias = c->has_bias ? rnd_array(s.c_out) : NULL;
    float *out = out_array(n_out);
    float *scratch = n_scratch ? malloc(sizeof *scratch * n_scratch) : NULL;
    double *ref = malloc(sizeof *ref * n_out);
    double *scale = malloc(sizeof *scale * n_out);

    assert_non_null(ref);
    assert_non_null(scale);
    assert_true(n_scratch == 0 || scratch);

    rn_conv_forward(&s, weight, bias, c->relu, in, out, scratch);
    naive_conv(&s, weight, bias, c->relu, in, ref, scale);
    check_close(what, out, ref, scale, n_out, SUM_TOL);

    free(scale);
    free(ref);
    free(scratch);
    free(out);
    free(bias);
    free(weight);
    free(in);
}

/* One test per case, named after what it shows. */
#define CONV_TEST(name, ...)                                               \
    static void name(void **state) {                                       \
        struct conv_case c = {__VA_ARGS__};                                \
        (void)state;                                                       \
        check_conv(&c, #name);                                             \
    }

//        name                                    c_in  h   w c_out k s p  g
CONV_TEST(conv1x1_pointwise_bias_relu_matches_naive, 5, 9, 11, 7, 1, 1, 0, 1,
          true, true)
CONV_TEST(conv1x1_pointwise_grouped_matches_naive,   8, 5, 6, 6, 1, 1, 0, 2,
          false, false)
CONV_TEST(conv1x1_stride2_projection_matches_naive, 16, 9, 8, 32, 1, 2, 0, 1,
          false, false)
CONV_TEST(conv3x3_pad1_relu_no_bias_matches_naive,   3, 13, 11, 8, 3, 1, 1, 1,
          false, true)
CONV_TEST(conv3x3_stride2_odd_size_matches_naive,   16, 15, 15, 32, 3, 2, 1, 1,
          true, false)
CONV_TEST(conv3x3_pad0_odd_channels_matches_naive,   7, 5, 6, 5, 3, 1, 0, 1,
          true, true)
CONV_TEST(conv3x3_one_pixel_input_matches_naive,     4, 1, 1, 3, 3, 1, 1, 1,
          true, false)
CONV_TEST(conv3x3_groups2_matches_naive,             6, 7, 9, 10, 3, 1, 1, 2,
          true, true)
CONV_TEST(conv3x3_groups32_stride2_matches_naive,  128, 9, 9, 128, 3, 2, 1, 32,
          false, true)
CONV_TEST(conv3x3_groups32_stride1_matches_naive,   64, 8, 7, 64, 3, 1, 1, 32,
          true, false)
CONV_TEST(conv7x7_stride2_pad3_stem_matches_naive,   3, 23, 19, 16, 7, 2, 3, 1,
          false, false)
CONV_TEST(conv7x7_stride2_pad3_bias_relu_matches_naive, 3, 32, 32, 8, 7, 2, 3,
          1, true, true)
CONV_TEST(conv3x3_deep_64_to_64_matches_naive,      64, 8, 8, 64, 3, 1, 1, 1,
          true, true)

static void conv_scratch_size_is_zero_for_pointwise(void **state) {
    struct rn_conv_shape pw = {8, 5, 5, 4, 5, 5, 1, 1, 1, 0, 1};
    struct rn_conv_shape c3 = {8, 5, 5, 4, 3, 3, 3, 3, 2, 1, 2};

    (void)state;
    assert_int_equal(rn_conv_scratch_size(&pw), 0);
    assert_int_equal(rn_conv_scratch_size(&c3), 8 * 3 * 3 * 3 * 3);
}

/* ------------------------------------------------------------------ */
/* Max pooling                                                          */

static void check_maxpool(int c, int h, int w, int k, int stride, int pad,
                          const char *what) {
    int h_out = (h + 2 * pad - k) / stride + 1;
    int w_out = (w + 2 * pad - k) / stride + 1;
    size_t n_out = (size_t)c * h_out * w_out;
    float *in = rnd_array((size_t)c * h * w);
    float *out = out_array(n_out);
    double *ref = malloc(sizeof *ref * n_out);

    assert_non_null(ref);

    // All inputs negative, so zero padding would show up at the borders.
    for (size_t i = 0; i < (size_t)c * h * w; i++) {
        in[i] = -fabsf(in[i]) - 0.5f;
    }
    rn_maxpool_forward(c, h, w, k, stride, pad, h_out, w_out, in, out);

    for (int ci = 0; ci < c; ci++) {
        for (int oy = 0; oy < h_out; oy++) {
            for (int ox = 0; ox < w_out; ox++) {
                double m = -INFINITY;
                for (int ki = 0; ki < k; ki++) {
                    for (int kj = 0; kj < k; kj++) {
                        int iy = oy * stride - pad + ki;
                        int ix = ox * stride - pad + kj;
                        if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                            m = fmax(m, in[((size_t)ci * h + iy) * w + ix]);
                        }
                    }
                }
                ref[((size_t)ci * h_out + oy) * w_out + ox] = m;
            }
        }
    }
    check_close(what, out, ref, NULL, n_out, 0.0);

    free(ref);
    free(out);
    free(in);
}

static void maxpool3x3_stride2_pad1_negative_borders_match_naive(void **st) {
    (void)st;
    check_maxpool(4, 16, 16, 3, 2, 1, "maxpool 3x3/2 pad 1, 16x16");
    check_maxpool(3, 15, 13, 3, 2, 1, "maxpool 3x3/2 pad 1, 15x13");
    check_maxpool(2, 1, 1, 3, 2, 1, "maxpool 3x3/2 pad 1, 1x1");
}

static void maxpool_other_shapes_match_naive(void **state) {
    (void)state;
    check_maxpool(3, 8, 9, 2, 2, 0, "maxpool 2x2/2, 8x9");
    check_maxpool(2, 7, 7, 3, 1, 1, "maxpool 3x3/1 pad 1, 7x7");
    check_maxpool(2, 11, 10, 5, 3, 2, "maxpool 5x5/3 pad 2, 11x10");
}

static void maxpool_propagates_nan(void **state) {
    float in[4] = {1.0f, NAN, 3.0f, 2.0f};
    float out[1];

    (void)state;
    rn_maxpool_forward(1, 2, 2, 2, 2, 0, 1, 1, in, out);
    assert_true(isnan(out[0]));
}

/* ------------------------------------------------------------------ */
/* Global average pooling                                               */

static void check_avgpool(int c, int h, int w, const char *what) {
    size_t n = (size_t)h * w;
    float *in = rnd_array((size_t)c * n);
    float *out = out_array(c);
    double *ref = malloc(sizeof *ref * c);

    assert_non_null(ref);
    for (int ci = 0; ci < c; ci++) {
        double sum = 0.0;
        for (size_t i = 0; i < n; i++) {
            sum += in[(size_t)ci * n + i];
        }
        ref[ci] = sum / (double)n;
    }
    rn_avgpool_global(c, h, w, in, out);

    // The mean of values in [-1, 1) is in [-1, 1): allow a float ulp.
    check_close(what, out, ref, NULL, c, 1.2e-7);

    free(ref);
    free(out);
    free(in);
}

static void avgpool_global_matches_naive(void **state) {
    (void)state;
    check_avgpool(64, 8, 8, "avgpool 64x8x8");
    check_avgpool(512, 7, 7, "avgpool 512x7x7");
    check_avgpool(3, 5, 3, "avgpool 3x5x3");
    check_avgpool(5, 1, 1, "avgpool 5x1x1");
}

/* ------------------------------------------------------------------ */
/* Option-A shortcut and addition                                       */

static void check_shortcut(int c_in, int h, int w, int c_out, int stride,
                           const char *what) {
    int h_out = (h + stride - 1) / stride, w_out = (w + stride - 1) / stride;
    size_t n_out = (size_t)c_out * h_out * w_out;
    int before = (c_out - c_in) / 2;
    float *in = rnd_array((size_t)c_in * h * w);
    float *out = out_array(n_out);
    double *ref = malloc(sizeof *ref * n_out);

    assert_non_null(ref);

    // F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, before, after))
    for (int co = 0; co < c_out; co++) {
        int ci = co - before;
        for (int y = 0; y < h_out; y++) {
            for (int x = 0; x < w_out; x++) {
                size_t o = ((size_t)co * h_out + y) * w_out + x;
                ref[o] = ci >= 0 && ci < c_in
                    ? in[((size_t)ci * h + y * stride) * w + x * stride]
                    : 0.0;
            }
        }
    }
    rn_shortcut_pad(c_in, h, w, c_out, stride, in, out);
    check_close(what, out, ref, NULL, n_out, 0.0);

    free(ref);
    free(out);
    free(in);
}

static void shortcut_option_a_16_to_32_and_32_to_64_match_naive(void **st) {
    (void)st;
    check_shortcut(16, 32, 32, 32, 2, "shortcut 16->32, 32x32, stride 2");
    check_shortcut(32, 16, 16, 64, 2, "shortcut 32->64, 16x16, stride 2");
}

static void shortcut_odd_sizes_and_uneven_padding_match_naive(void **st) {
    (void)st;
    check_shortcut(3, 7, 5, 8, 2, "shortcut 3->8, 7x5, stride 2");
    check_shortcut(4, 5, 5, 4, 1, "shortcut 4->4, 5x5, stride 1");
    check_shortcut(2, 10, 11, 5, 3, "shortcut 2->5, 10x11, stride 3");
}

static void add_with_and_without_relu_matches_naive(void **state) {
    size_t n = 1001;
    float *a = rnd_array(n), *b = rnd_array(n);
    float *out = out_array(n);
    double *ref = malloc(sizeof *ref * n);

    (void)state;
    assert_non_null(ref);
    for (int relu = 0; relu <= 1; relu++) {
        for (size_t i = 0; i < n; i++) {
            float v = a[i] + b[i];
            ref[i] = relu && v < 0.0f ? 0.0 : v;
        }
        rn_add(n, a, b, relu, out);
        check_close(relu ? "add + relu" : "add", out, ref, NULL, n, 0.0);
    }

    // In place, as the network uses it: out aliases a.
    memcpy(out, a, sizeof *out * n);
    rn_add(n, out, b, false, out);
    for (size_t i = 0; i < n; i++) {
        ref[i] = a[i] + b[i];
    }
    check_close("add in place", out, ref, NULL, n, 0.0);

    free(ref);
    free(out);
    free(b);
    free(a);
}

/* ------------------------------------------------------------------ */
/* Linear                                                               */

static void check_linear(int n_in, int n_out, bool has_bias,
                         const char *what) {
    float *weight = rnd_array((size_t)n_in * n_out);
    float *bias = has_bias ? rnd_array(n_out) : NULL;
    float *in = rnd_array(n_in);
    float *out = out_array(n_out);
    double *ref = malloc(sizeof *ref * n_out);
    double *scale = malloc(sizeof *scale * n_out);

    assert_non_null(ref);
    assert_non_null(scale);
    for (int o = 0; o < n_out; o++) {
        double sum = bias ? bias[o] : 0.0, mag = fabs(sum);
        for (int i = 0; i < n_in; i++) {
            double p = (double)weight[(size_t)o * n_in + i] * in[i];
            sum += p;
            mag += fabs(p);
        }
        ref[o] = sum;
        scale[o] = mag;
    }
    rn_linear_forward(n_in, n_out, weight, bias, in, out);
    check_close(what, out, ref, scale, n_out, SUM_TOL);

    free(scale);
    free(ref);
    free(out);
    free(in);
    free(bias);
    free(weight);
}

static void linear_matches_naive(void **state) {
    (void)state;
    check_linear(64, 10, true, "linear 64->10 with bias");
    check_linear(512, 1000, false, "linear 512->1000 without bias");
    check_linear(2048, 7, true, "linear 2048->7 with bias");
    check_linear(1, 3, true, "linear 1->3 with bias");
}

static int reset_rng(void **state) {
    (void)state;
    rng_state = 12345u;
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(conv1x1_pointwise_bias_relu_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(conv1x1_pointwise_grouped_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(conv1x1_stride2_projection_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(conv3x3_pad1_relu_no_bias_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(conv3x3_stride2_odd_size_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(conv3x3_pad0_odd_channels_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(conv3x3_one_pixel_input_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(conv3x3_groups2_matches_naive, reset_rng),
        cmocka_unit_test_setup(conv3x3_groups32_stride2_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(conv3x3_groups32_stride1_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(conv7x7_stride2_pad3_stem_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(conv7x7_stride2_pad3_bias_relu_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(conv3x3_deep_64_to_64_matches_naive,
                               reset_rng),
        cmocka_unit_test(conv_scratch_size_is_zero_for_pointwise),
        cmocka_unit_test_setup(
            maxpool3x3_stride2_pad1_negative_borders_match_naive, reset_rng),
        cmocka_unit_test_setup(maxpool_other_shapes_match_naive, reset_rng),
        cmocka_unit_test(maxpool_propagates_nan),
        cmocka_unit_test_setup(avgpool_global_matches_naive, reset_rng),
        cmocka_unit_test_setup(
            shortcut_option_a_16_to_32_and_32_to_64_match_naive, reset_rng),
        cmocka_unit_test_setup(
            shortcut_odd_sizes_and_uneven_padding_match_naive, reset_rng),
        cmocka_unit_test_setup(add_with_and_without_relu_matches_naive,
                               reset_rng),
        cmocka_unit_test_setup(linear_matches_naive, reset_rng),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
