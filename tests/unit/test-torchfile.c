/*
 * Changing dtypes in a state dict: every float16 and bfloat16 value
 * widens exactly and narrows back to itself; values between two
 * neighbours round to the nearer one, ties to even; overflow gives
 * infinity. Checked against a naive decoder written here (exact).
 * Also what convert says about tensors that fit no ResNet.
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

/* The value of float16 bits h, by the definition of the format. */
static double naive_f16(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    double v;

    if (exp == 0x1f) {
        v = man ? NAN : INFINITY;
    } else if (exp == 0) {
        v = ldexp(man, -24);
    } else {
        v = ldexp(1024 + man, exp - 25);
    }
    return sign ? -v : v;
}

static double naive_bf16(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;

    memcpy(&f, &bits, sizeof f);
    return f;
}

/* A state dict of one tensor "t" holding n values of dtype from data. */
static struct rn_state_dict *one_tensor(enum rn_dtype dtype, size_t n,
                                        const void *data, size_t es) {
    struct rn_state_dict *sd = calloc(1, sizeof *sd);
    void *copy = malloc(n * es);

    assert_non_null(sd);
    assert_non_null(copy);
    memcpy(copy, data, n * es);
    sd->tensors = calloc(1, sizeof *sd->tensors);
    assert_non_null(sd->tensors);
    sd->n_tensors = 1;
    sd->tensors[0] = (struct rn_tensor){
        .name = strdup("t"), .dtype = dtype, .n_dims = 1,
        .shape = {(int64_t)n}, .n_elems = n, .data = copy,
        .n_bytes = n * es,
    };
    return sd;
}

static float *widen(enum rn_dtype dtype, const uint16_t *h, size_t n) {
    struct rn_state_dict *sd = one_tensor(dtype, n, h, 2);
    float *out = malloc(n * sizeof *out);
    int n64;

    assert_int_equal(rn_state_dict_cast(sd, RN_DTYPE_F32, &n64, NULL), 0);
    assert_int_equal(sd->tensors[0].dtype, RN_DTYPE_F32);
    memcpy(out, sd->tensors[0].data, n * sizeof *out);
    rn_state_dict_free(sd);
    return out;
}

static uint16_t *narrow(enum rn_dtype dtype, const float *f, size_t n) {
    struct rn_state_dict *sd = one_tensor(RN_DTYPE_F32, n, f, 4);
    uint16_t *out = malloc(n * sizeof *out);
    int n64;

    assert_int_equal(rn_state_dict_cast(sd, dtype, &n64, NULL), 0);
    assert_int_equal(sd->tensors[0].n_bytes, n * 2);
    memcpy(out, sd->tensors[0].data, n * sizeof *out);
    rn_state_dict_free(sd);
    return out;
}

/* Widening is exact and narrowing gives every value back. */
static void check_round_trip(enum rn_dtype dtype, double (*naive)(uint16_t)) {
    uint16_t *h = malloc(65536 * sizeof *h), *back;
    float *f;

    for (int i = 0; i < 65536; i++) {
        h[i] = (uint16_t)i;
    }
    f = widen(dtype, h, 65536);
    for (int i = 0; i < 65536; i++) {
        double want = naive(h[i]);

        if (!(isnan(want) ? isnan(f[i]) : (double)f[i] == want)) {
            print_error("bits 0x%04x: expected %.9g, got %.9g\n", i, want,
                        (double)f[i]);
            fail();
        }
    }
    back = narrow(dtype, f, 65536);
    for (int i = 0; i < 65536; i++) {
        bool is_nan = isnan(f[i]);

        if (is_nan ? isnan(naive(back[i])) == 0 : back[i] != h[i]) {
            print_error("bits 0x%04x: narrowed back to 0x%04x\n", i,
                        back[i]);
            fail();
        }
    }
    free(back);
    free(f);
    free(h);
}

static void f16_widens_exactly_and_narrows_back(void **state) {
    (void)state;
    check_round_trip(RN_DTYPE_F16, naive_f16);
}

static void bf16_widens_exactly_and_narrows_back(void **state) {
    (void)state;
    check_round_trip(RN_DTYPE_BF16, naive_bf16);
}

/*
 * Between each pair of neighbouring finite positive values a and b:
 * a bit above a gives a, a bit below b gives b, and the midpoint gives
 * the one with an even last bit.
 */
static void check_rounding(enum rn_dtype dtype, double (*naive)(uint16_t),
                           uint16_t last_finite) {
    size_t n = last_finite, k = 0;
    float *f = malloc(3 * n * sizeof *f);
    uint16_t *got;

    for (uint16_t a = 0; a < last_finite; a++) {
        double lo = naive(a), hi = naive((uint16_t)(a + 1));
        double mid = (lo + hi) / 2;

        f[k++] = nextafterf((float)mid, -INFINITY);
        f[k++] = nextafterf((float)mid, INFINITY);
        f[k++] = (float)mid; // exact: one more bit than the narrow type
    }
    got = narrow(dtype, f, k);
    for (size_t i = 0; i < k; i += 3) {
        uint16_t a = (uint16_t)(i / 3), even = (a & 1) ? a + 1 : a;

        if (got[i] != a || got[i + 1] != a + 1 || got[i + 2] != even) {
            print_error("between 0x%04x and 0x%04x: got 0x%04x 0x%04x "
                        "0x%04x, expected 0x%04x 0x%04x 0x%04x\n",
                        a, a + 1, got[i], got[i + 1], got[i + 2], a, a + 1,
                        even);
            fail();
        }
    }
    free(got);
    free(f);
}

static void f16_rounds_to_nearest_even(void **state) {
    (void)state;
    check_rounding(RN_DTYPE_F16, naive_f16, 0x7bff);
}

static void bf16_rounds_to_nearest_even(void **state) {
    (void)state;
    check_rounding(RN_DTYPE_BF16, naive_bf16, 0x7f7f);
}

static void f16_overflow_gives_infinity(void **state) {
    // 65520 is the midpoint of 65504 (largest) and 65536: ties to even,
    // which is infinity; just below it stays 65504.
    const float f[4] = {65520.0f, 65519.99f, -1e6f, 1e-9f};
    uint16_t *h;

    (void)state;
    h = narrow(RN_DTYPE_F16, f, 4);
    assert_int_equal(h[0], 0x7c00);
    assert_int_equal(h[1], 0x7bff);
    assert_int_equal(h[2], 0xfc00);
    assert_int_equal(h[3], 0x0000);
    free(h);
}

static void f64_narrows_to_nearest_f32(void **state) {
    const double d[3] = {0.1, 1.0 + 0x1p-24, 1.0 + 0x1p-24 + 0x1p-40};
    struct rn_state_dict *sd = one_tensor(RN_DTYPE_F64, 3, d, 8);
    const float *f;
    int n64;

    (void)state;
    assert_int_equal(rn_state_dict_cast(sd, RN_DTYPE_F32, &n64, NULL), 0);
    assert_int_equal(n64, 1);
    f = sd->tensors[0].data;
    assert_true(f[0] == 0.1f);
    assert_true(f[1] == 1.0f);              // tie to even
    assert_true(f[2] == 1.0f + 0x1p-23f);   // above the tie
    rn_state_dict_free(sd);
}

/* A state dict of n one-float tensors called name_of(i). */
static struct rn_state_dict *named_tensors(int n, char *(*name_of)(int)) {
    struct rn_state_dict *sd = calloc(1, sizeof *sd);

    assert_non_null(sd);
    sd->tensors = calloc((size_t)n, sizeof *sd->tensors);
    assert_non_null(sd->tensors);
    for (int i = 0; i < n; i++) {
        float *one = calloc(1, sizeof *one);

        assert_non_null(one);
        sd->tensors[i] = (struct rn_tensor){
            .name = name_of(i), .dtype = RN_DTYPE_F32, .n_dims = 1,
            .shape = {1}, .n_elems = 1, .data = one, .n_bytes = 4,
        };
        sd->n_tensors++;
    }
    return sd;
}

static char *short_name(int i) {
    char *s = malloc(16);

    assert_non_null(s);
    snprintf(s, 16, "t%d", i);
    return s;
}

/* 100 bytes: 28 'w's, "é", 70 'w's; a cut at 29 bytes would split "é". */
static char *long_name(int i) {
    char *s = malloc(101);

    (void)i;
    assert_non_null(s);
    memset(s, 'w', 100);
    memcpy(s + 28, "\xc3\xa9", 2);
    s[100] = '\0';
    return s;
}

static void expect_unrecognised(struct rn_state_dict *sd, const char *msg) {
    struct resnet_error err = {0};
    char *json = NULL;

    assert_int_equal(rn_recognize(sd, "x.pth", "x.safetensors", &json,
                                  &err),
                     RESNET_ESHAPE);
    assert_null(json);
    if (strcmp(err.msg, msg) != 0) {
        print_error("expected message: %s\nactual message:   %s\n", msg,
                    err.msg);
        fail();
    }
    rn_state_dict_free(sd);
}

static void unplaced_tensors_list_eight_and_count_the_rest(void **state) {
    (void)state;
    expect_unrecognised(named_tensors(20000, short_name),
                        "cannot recognise the network in 'x.pth': 20000 "
                        "tensors fit no ResNet: 't0', 't1', 't2', 't3', "
                        "'t4', 't5', 't6', 't7' and 19992 more");
}

static void unplaced_long_name_is_cut_and_one_is_singular(void **state) {
    (void)state;
    expect_unrecognised(named_tensors(1, long_name),
                        "cannot recognise the network in 'x.pth': 1 tensor "
                        "fits no ResNet: 'wwwwwwwwwwwwwwwwwwwwwwwwwwww...'");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(f16_widens_exactly_and_narrows_back),
        cmocka_unit_test(bf16_widens_exactly_and_narrows_back),
        cmocka_unit_test(f16_rounds_to_nearest_even),
        cmocka_unit_test(bf16_rounds_to_nearest_even),
        cmocka_unit_test(f16_overflow_gives_infinity),
        cmocka_unit_test(f64_narrows_to_nearest_f32),
        cmocka_unit_test(unplaced_tensors_list_eight_and_count_the_rest),
        cmocka_unit_test(unplaced_long_name_is_cut_and_one_is_singular),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
