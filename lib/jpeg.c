/*
 * JPEG decoding with libjpeg-turbo at its default settings, as PIL uses it,
 * so the bytes match PIL's. Grey is replicated, CMYK turned into RGB as
 * PIL's convert('RGB') does. libjpeg's setjmp/longjmp stays in this file,
 * and a warning about corrupt or truncated data is an error.
 */
#include <config.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h> // after jpeglib.h, whose config it reads

#include "internal.h"

/*
 * Real progressive JPEGs have a dozen scans; thousands of tiny ones make
 * libjpeg redo the whole image each time, a hang for the user.
 */
#define MAX_SCANS 1000

/* libjpeg's error manager with a way back to rn_jpeg_decode(). */
struct jpeg_err {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX];
    bool truncated;
};

static void on_error(j_common_ptr cinfo) {
    struct jpeg_err *e = (struct jpeg_err *)cinfo->err;

    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jmp, 1);
}

/*
 * libjpeg only warns when data is corrupt or ends early, and fills in the
 * rest. PIL refuses a truncated file, and we refuse corrupt entropy data
 * too. Extraneous bytes between markers are skipped without changing a
 * pixel, so those files decode, as in PIL. Other messages are dropped.
 */
static void on_message(j_common_ptr cinfo, int level) {
    struct jpeg_err *e = (struct jpeg_err *)cinfo->err;

    if (level >= 0) {
        return;
    }
    switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:
        e->truncated = true;
        on_error(cinfo);
        break;
#if JPEG_LIB_VERSION >= 70 || defined(D_ARITH_CODING_SUPPORTED) // as jerror.h
    case JWRN_ARITH_BAD_CODE:
#endif
    case JWRN_BOGUS_PROGRESSION:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
        on_error(cinfo);
        break;
    default:
        break;
    }
}

/* Stops a file with more than MAX_SCANS scans. */
static void on_progress(j_common_ptr cinfo) {
    struct jpeg_err *e = (struct jpeg_err *)cinfo->err;
    j_decompress_ptr d = (j_decompress_ptr)cinfo;

    if (d->input_scan_number > MAX_SCANS) {
        snprintf(e->msg, sizeof e->msg, "more than %d scans", MAX_SCANS);
        longjmp(e->jmp, 1);
    }
}

/*
 * One row of PIL's CMYK ("CMYK;I", so the stored samples inverted) turned
 * into RGB: with n = 255 - k, each channel is n - n * x / 255, where the
 * product is rounded as PIL's MULDIV255 does.
 */
static void cmyk_row(uint8_t *dst, const uint8_t *src, int w) {
    for (int x = 0; x < w; x++) {
        int nk = src[4 * x + 3]; // 255 - (255 - stored k)

        for (int c = 0; c < 3; c++) {
            int t = (255 - src[4 * x + c]) * nk + 128;

            dst[3 * x + c] = (uint8_t)(nk - (((t >> 8) + t) >> 8));
        }
    }
}

static void grey_row(uint8_t *dst, const uint8_t *src, int w) {
    for (int x = 0; x < w; x++) {
        dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = src[x];
    }
}

/* Everything that changes after setjmp lives here, on the heap. */
struct jpeg_ctx {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_err je;
    struct jpeg_progress_mgr progress;
    struct resnet_image *img;
    uint8_t *row; // one output row of grey or CMYK samples
};

/* Decodes into ctx->img; rn_jpeg_decode() frees ctx's parts after. */
static int decode(struct jpeg_ctx *ctx, const uint8_t *buf, size_t len,
                  const char *name, size_t max_pixels,
                  struct resnet_error *err) {
    struct jpeg_decompress_struct *cinfo = &ctx->cinfo;
    int rc;

    jpeg_mem_src(cinfo, buf, (unsigned long)len);
    jpeg_read_header(cinfo, TRUE);

    // The size comes from the header, before libjpeg allocates for it.
    rc = rn_image_check_size(cinfo->image_width, cinfo->image_height,
                             max_pixels, name, err);
    if (rc) {
        return rc;
    }
    switch (cinfo->num_components) {
    case 1:
        cinfo->out_color_space = JCS_GRAYSCALE;
        break;
    case 3:
        cinfo->out_color_space = JCS_RGB;
        break;
    case 4:
        cinfo->out_color_space = JCS_CMYK;
        break;
    default:
        return rn_error(err, RESNET_EUNSUPPORTED, 0,
                        "cannot decode '%s': JPEG with %d components", name,
                        cinfo->num_components);
    }
    jpeg_start_decompress(cinfo);

    rc = rn_image_new(&ctx->img, (int)cinfo->output_width,
                      (int)cinfo->output_height, false, err);
    if (rc) {
        return rc;
    }
    ctx->row = malloc((size_t)cinfo->output_width * cinfo->output_components);
    if (!ctx->row) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "cannot decode '%s': out of memory", name);
    }
    while (cinfo->output_scanline < cinfo->output_height) {
        int w = ctx->img->w;
        uint8_t *dst = ctx->img->data + (size_t)cinfo->output_scanline * w * 3;
        JSAMPROW rows[1] = {cinfo->out_color_space == JCS_RGB ? dst : ctx->row};

        jpeg_read_scanlines(cinfo, rows, 1);
        if (cinfo->out_color_space == JCS_GRAYSCALE) {
            grey_row(dst, ctx->row, w);
        } else if (cinfo->out_color_space == JCS_CMYK) {
            cmyk_row(dst, ctx->row, w);
        }
    }
    jpeg_finish_decompress(cinfo);
    return RESNET_OK;
}

int rn_jpeg_decode(struct resnet_image **out, const uint8_t *buf, size_t len,
                   const char *name, size_t max_pixels,
                   struct resnet_error *err) {
    struct jpeg_ctx *ctx;
    int rc;

    *out = NULL;
    ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "cannot decode '%s': out of memory", name);
    }
    ctx->cinfo.err = jpeg_std_error(&ctx->je.pub);
    ctx->je.pub.error_exit = on_error;
    ctx->je.pub.emit_message = on_message;
    ctx->progress.progress_monitor = on_progress;
    if (setjmp(ctx->je.jmp)) {
        if (ctx->je.truncated) {
            rc = rn_error(err, RESNET_EFORMAT, 0,
                          "cannot decode '%s': truncated JPEG data", name);
        } else {
            rc = rn_error(err, RESNET_EFORMAT, 0, "cannot decode '%s': %s",
                          name, ctx->je.msg);
        }
        goto out;
    }
    jpeg_create_decompress(&ctx->cinfo);
    ctx->cinfo.progress = &ctx->progress;
    rc = decode(ctx, buf, len, name, max_pixels, err);
    if (rc == RESNET_OK) {
        *out = ctx->img;
        ctx->img = NULL;
    }
out:
    jpeg_destroy_decompress(&ctx->cinfo);
    free(ctx->row);
    resnet_image_free(ctx->img);
    free(ctx);
    return rc;
}
