/*
 * Antialiased bilinear resampling with the same bytes as PIL's
 * Image.resize(size, Image.BILINEAR) on RGB: the triangle filter widened
 * by the downscale factor, normalised weights per output pixel turned into
 * 22-bit fixed point, a horizontal pass into 8-bit rows, then a vertical one.
 */
#include <config.h>

#include <math.h>
#include <stdlib.h>

#include "internal.h"

#define PRECISION_BITS 22 // 32 bits minus 8 for a sample and 2 for headroom

/* The weights of one pass: for each output pixel, taps from first. */
struct coeffs {
    int ksize;    // taps per output pixel, the largest window
    int *first;   // (n_out): first input pixel of the window
    int *n_taps;  // (n_out): window length
    int32_t *k;   // (n_out, ksize): fixed-point weights
};

static double triangle(double x) {
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

static void coeffs_release(struct coeffs *c) {
    free(c->first);
    free(c->n_taps);
    free(c->k);
}

/*
 * Weights for output pixels o0 .. o0 + n_out - 1 of an in_size -> out_size
 * pass. Each window is centred on the output pixel's centre mapped back to
 * the input, the weights are normalised to sum 1 in double, then rounded
 * to fixed point half away from zero. c starts zeroed; on failure the
 * caller still releases it.
 */
static int coeffs_init(struct coeffs *c, int in_size, int out_size, int o0,
                       int n_out) {
    double scale = (double)in_size / out_size;
    double filter_scale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filter_scale;
    double inv = 1.0 / filter_scale; // PIL multiplies by the reciprocal
    double *w;
    size_t n_k;

    c->ksize = (int)ceil(support) * 2 + 1;
    c->first = malloc((size_t)n_out * sizeof *c->first);
    c->n_taps = malloc((size_t)n_out * sizeof *c->n_taps);
    w = malloc((size_t)c->ksize * sizeof *w);
    if (!rn_mul_size((size_t)n_out, (size_t)c->ksize, &n_k) ||
        !rn_mul_size(n_k, sizeof *c->k, &n_k)) {
        n_k = SIZE_MAX;
    }
    c->k = n_k == SIZE_MAX ? NULL : malloc(n_k);
    if (!c->first || !c->n_taps || !w || !c->k) {
        free(w);
        return RESNET_ENOMEM; // the caller releases c
    }

    for (int i = 0; i < n_out; i++) {
        double centre = (o0 + i + 0.5) * scale;
        double sum = 0.0;
        int lo = (int)(centre - support + 0.5);
        int hi = (int)(centre + support + 0.5);
        int32_t *k = c->k + (size_t)i * c->ksize;

        lo = lo < 0 ? 0 : lo;
        hi = hi > in_size ? in_size : hi;
        for (int x = 0; x < hi - lo; x++) {
            w[x] = triangle((x + lo - centre + 0.5) * inv);
            sum += w[x];
        }
        for (int x = 0; x < c->ksize; x++) {
            double v = x < hi - lo ? (sum != 0.0 ? w[x] / sum : w[x]) : 0.0;

            v *= 1 << PRECISION_BITS;
            k[x] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
        }
        c->first[i] = lo;
        c->n_taps[i] = hi - lo;
    }
    free(w);
    return RESNET_OK;
}

static uint8_t clip8(int32_t v) {
    v >>= PRECISION_BITS;
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

/* Rows y0 .. y0 + out->h - 1 of in, resampled along x into out. */
static void pass_horizontal(struct resnet_image *out,
                            const struct resnet_image *in, int y0,
                            const struct coeffs *c) {
    for (int y = 0; y < out->h; y++) {
        const uint8_t *src = in->data + (size_t)(y0 + y) * in->w * 3;
        uint8_t *dst = out->data + (size_t)y * out->w * 3;

        for (int x = 0; x < out->w; x++) {
            const int32_t *k = c->k + (size_t)x * c->ksize;
            const uint8_t *s = src + (size_t)c->first[x] * 3;
            int32_t r = 1 << (PRECISION_BITS - 1), g = r, b = r;

            for (int t = 0; t < c->n_taps[x]; t++) {
                r += s[3 * t] * k[t];
                g += s[3 * t + 1] * k[t];
                b += s[3 * t + 2] * k[t];
            }
            dst[3 * x] = clip8(r);
            dst[3 * x + 1] = clip8(g);
            dst[3 * x + 2] = clip8(b);
        }
    }
}

/* in resampled along y into out; window starts are relative to row y0. */
static void pass_vertical(struct resnet_image *out,
                          const struct resnet_image *in, int y0,
                          const struct coeffs *c) {
    size_t stride = (size_t)in->w * 3;

    for (int y = 0; y < out->h; y++) {
        const int32_t *k = c->k + (size_t)y * c->ksize;
        const uint8_t *src = in->data + (size_t)(c->first[y] - y0) * stride;
        uint8_t *dst = out->data + (size_t)y * out->w * 3;

        for (int x = 0; x < out->w * 3; x++) {
            int32_t v = 1 << (PRECISION_BITS - 1);

            for (int t = 0; t < c->n_taps[y]; t++) {
                v += src[t * stride + x] * k[t];
            }
            dst[x] = clip8(v);
        }
    }
}

int rn_image_resample(struct resnet_image **out,
                      const struct resnet_image *in, int full_w, int full_h,
                      int x0, int y0, int w, int h,
                      struct resnet_error *err) {
    struct coeffs cx = {0}, cy = {0};
    struct resnet_image *tmp = NULL;
    int rc, row0, row1;

    *out = NULL;
    if (in->w <= 0 || in->h <= 0 || full_w <= 0 || full_h <= 0 ||
        x0 < 0 || y0 < 0 || w <= 0 || h <= 0 || x0 > full_w - w ||
        y0 > full_h - h) {
        return rn_error(err, RESNET_EINVAL, 0,
                        "cannot resize %dx%d to the %dx%d+%d+%d of %dx%d",
                        in->w, in->h, w, h, x0, y0, full_w, full_h);
    }
    if (coeffs_init(&cx, in->w, full_w, x0, w) ||
        coeffs_init(&cy, in->h, full_h, y0, h)) {
        rc = rn_error(err, RESNET_ENOMEM, 0,
                      "cannot allocate resize weights for %dx%d", full_w,
                      full_h);
        goto out;
    }

    // The horizontal pass covers only the input rows the vertical one reads.
    row0 = cy.first[0];
    row1 = cy.first[h - 1] + cy.n_taps[h - 1];
    rc = rn_image_new(&tmp, w, row1 - row0, false, err);
    if (rc) {
        goto out;
    }
    pass_horizontal(tmp, in, row0, &cx);

    rc = rn_image_new(out, w, h, false, err);
    if (rc) {
        goto out;
    }
    pass_vertical(*out, tmp, row0, &cy);
out:
    resnet_image_free(tmp);
    coeffs_release(&cy);
    coeffs_release(&cx);
    return rc;
}

int resnet_image_resize(struct resnet_image **out,
                        const struct resnet_image *in, int w, int h,
                        struct resnet_error *err) {
    size_t n;

    *out = NULL;
    if (w <= 0 || h <= 0) {
        return rn_error(err, RESNET_EINVAL, 0, "bad resize size %dx%d", w, h);
    }
    if (!rn_mul_size((size_t)w, (size_t)h, &n) || n > RESNET_MAX_PIXELS) {
        return rn_error(err, RESNET_EINVAL, 0,
                        "cannot resize to %dx%d: over the limit of %zu pixels",
                        w, h, RESNET_MAX_PIXELS);
    }
    return rn_image_resample(out, in, w, h, 0, 0, w, h, err);
}
