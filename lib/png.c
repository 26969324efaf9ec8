/*
 * PNG decoding with libpng into RGB as PIL's convert('RGB') gives it:
 * libpng only unpacks samples and undoes interlacing; the conversion of
 * each colour type is ours, so it follows PIL (no gamma, no ICC, tRNS and
 * alpha ignored). libpng's setjmp/longjmp stays in this file.
 */
#include <config.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "internal.h"

/* Everything that changes after setjmp lives here, on the heap. */
struct png_ctx {
    png_structp png;
    png_infop info;
    const uint8_t *buf;
    size_t len, pos;
    char msg[200];
    struct resnet_image *img;
    uint8_t *raw;             // unpacked rows: one, or all when interlaced
    uint8_t palette[256 * 3]; // PIL's palette: a grey ramp under PLTE
};

static void on_error(png_structp png, png_const_charp msg) {
    struct png_ctx *ctx = png_get_error_ptr(png);

    snprintf(ctx->msg, sizeof ctx->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void on_read(png_structp png, png_bytep dst, size_t n) {
    struct png_ctx *ctx = png_get_io_ptr(png);

    if (n > ctx->len - ctx->pos) {
        png_error(png, "truncated PNG data");
    }
    memcpy(dst, ctx->buf + ctx->pos, n);
    ctx->pos += n;
}

/*
 * One unpacked row (a byte per sample below 8 bits, big-endian pairs at
 * 16) into RGB. PIL opens 16-bit grey as 32-bit integers and clips them
 * to 255 on conversion; every other 16-bit type keeps the high byte.
 */
static void convert_row(const struct png_ctx *ctx, uint8_t *dst,
                        const uint8_t *src, int w, int color, int depth) {
    int n_ch = color == PNG_COLOR_TYPE_RGB ? 3
               : color == PNG_COLOR_TYPE_RGB_ALPHA ? 4
               : color == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                                                    : 1;
    int bps = depth == 16 ? 2 : 1;
    int grey_scale = depth >= 8 ? 1 : 255 / ((1 << depth) - 1);

    for (int x = 0; x < w; x++) {
        const uint8_t *s = src + (size_t)x * n_ch * bps;
        uint8_t *d = dst + (size_t)x * 3;

        if (color == PNG_COLOR_TYPE_PALETTE) {
            memcpy(d, ctx->palette + 3 * s[0], 3);
        } else if (color == PNG_COLOR_TYPE_GRAY && depth == 16) {
            int v = s[0] << 8 | s[1];

            d[0] = d[1] = d[2] = (uint8_t)(v > 255 ? 255 : v);
        } else if (n_ch <= 2) {
            d[0] = d[1] = d[2] = (uint8_t)(s[0] * grey_scale);
        } else {
            d[0] = s[0];
            d[1] = s[bps];
            d[2] = s[2 * bps];
        }
    }
}

/* PIL's palette: PLTE's entries over a grey ramp for the rest. */
static void load_palette(struct png_ctx *ctx) {
    png_colorp plte;
    int n = 0;

    for (int i = 0; i < 256; i++) {
        memset(ctx->palette + 3 * i, i, 3);
    }
    if (png_get_PLTE(ctx->png, ctx->info, &plte, &n) == PNG_INFO_PLTE) {
        for (int i = 0; i < n && i < 256; i++) {
            ctx->palette[3 * i] = plte[i].red;
            ctx->palette[3 * i + 1] = plte[i].green;
            ctx->palette[3 * i + 2] = plte[i].blue;
        }
    }
}

/* Decodes into ctx->img; rn_png_decode() frees ctx's parts after. */
static int decode(struct png_ctx *ctx, const char *name, size_t max_pixels,
                  struct resnet_error *err) {
    png_uint_32 w, h;
    int depth, color, interlace, n_passes, rc;
    size_t row_bytes, n_raw;

    png_set_read_fn(ctx->png, ctx, on_read);
    // Sizes are checked against the pixel budget below, not libpng's limit.
    png_set_user_limits(ctx->png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
    // PIL refuses a bad CRC on any chunk before the image data, as we do.
    png_set_crc_action(ctx->png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
    png_read_info(ctx->png, ctx->info);
    png_get_IHDR(ctx->png, ctx->info, &w, &h, &depth, &color, &interlace,
                 NULL, NULL);

    // The size comes from the header, before anything is allocated for it.
    rc = rn_image_check_size(w, h, max_pixels, name, err);
    if (rc) {
        return rc;
    }
    if (depth < 8) {
        png_set_packing(ctx->png);
    }
    n_passes = png_set_interlace_handling(ctx->png);
    png_read_update_info(ctx->png, ctx->info);
    load_palette(ctx);

    rc = rn_image_new(&ctx->img, (int)w, (int)h, false, err);
    if (rc) {
        return rc;
    }
    row_bytes = png_get_rowbytes(ctx->png, ctx->info);
    if (!rn_mul_size(row_bytes, n_passes > 1 ? h : 1, &n_raw) ||
        !(ctx->raw = malloc(n_raw))) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "cannot decode '%s': out of memory", name);
    }

    // Interlaced images need all rows at once; others go row by row.
    if (n_passes > 1) {
        for (int pass = 0; pass < n_passes; pass++) {
            for (png_uint_32 y = 0; y < h; y++) {
                png_read_row(ctx->png, ctx->raw + y * row_bytes, NULL);
            }
        }
    }
    for (png_uint_32 y = 0; y < h; y++) {
        uint8_t *src = ctx->raw + (n_passes > 1 ? y * row_bytes : 0);

        if (n_passes == 1) {
            png_read_row(ctx->png, src, NULL);
        }
        convert_row(ctx, ctx->img->data + (size_t)y * w * 3, src, (int)w,
                    color, depth);
    }
    return RESNET_OK;
}

int rn_png_decode(struct resnet_image **out, const uint8_t *buf, size_t len,
                  const char *name, size_t max_pixels,
                  struct resnet_error *err) {
    struct png_ctx *ctx;
    int rc;

    *out = NULL;
    ctx = calloc(1, sizeof *ctx);
    if (ctx) {
        ctx->buf = buf;
        ctx->len = len;
        ctx->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx,
                                          on_error, on_warning);
    }
    if (ctx && ctx->png) {
        ctx->info = png_create_info_struct(ctx->png);
    }
    if (!ctx || !ctx->info) {
        rc = rn_error(err, RESNET_ENOMEM, 0,
                      "cannot decode '%s': out of memory", name);
        goto out;
    }
    if (setjmp(png_jmpbuf(ctx->png))) {
        rc = rn_error(err, RESNET_EFORMAT, 0, "cannot decode '%s': %s", name,
                      ctx->msg);
        goto out;
    }
    rc = decode(ctx, name, max_pixels, err);
    if (rc == RESNET_OK) {
        *out = ctx->img;
        ctx->img = NULL;
    }
out:
    if (ctx) {
        png_destroy_read_struct(&ctx->png, &ctx->info, NULL);
        free(ctx->raw);
        resnet_image_free(ctx->img);
        free(ctx);
    }
    return rc;
}
