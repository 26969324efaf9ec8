/*
 * image-dump: decodes one image with libresnet, optionally resizes or
 * prepares it, and writes the raw bytes to stdout, for the shell tests.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resnet.h"

static const char usage[] =
    "usage: image-dump [--info] [--max-pixels <n>]\n"
    "                  [--size <w> <h> | --resize <n> --crop <w> <h>]\n"
    "                  [--normalized --mean <r> <g> <b> --std <r> <g> <b>]\n"
    "                  <image>\n";

struct dump_opts {
    const char *path;
    bool info, normalized, prepare;
    size_t max_pixels;
    int size_w, size_h;
    struct resnet_preprocess pp;
};

/* Parses count numbers after argv[*i]; false when they are missing. */
static bool take(int argc, char **argv, int *i, int count, double *v) {
    for (int k = 0; k < count; k++) {
        char *end;

        if (*i + 1 >= argc) {
            return false;
        }
        v[k] = strtod(argv[++*i], &end);
        if (*end != '\0') {
            return false;
        }
    }
    return true;
}

/* Whether argv[*i] is opt followed by count numbers, which go into v. */
static bool opt(int argc, char **argv, int *i, const char *name, int count,
                double *v, bool *ok) {
    if (strcmp(argv[*i], name) != 0) {
        return false;
    }
    *ok = take(argc, argv, i, count, v);
    return true;
}

static int parse_args(int argc, char **argv, struct dump_opts *o) {
    double v[3];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool ok = true;

        if (strcmp(a, "--info") == 0) {
            o->info = true;
        } else if (strcmp(a, "--normalized") == 0) {
            o->normalized = true;
        } else if (opt(argc, argv, &i, "--max-pixels", 1, v, &ok)) {
            o->max_pixels = (size_t)v[0];
        } else if (opt(argc, argv, &i, "--size", 2, v, &ok)) {
            o->size_w = (int)v[0];
            o->size_h = (int)v[1];
        } else if (opt(argc, argv, &i, "--resize", 1, v, &ok)) {
            o->prepare = true;
            o->pp.resize = (int)v[0];
        } else if (opt(argc, argv, &i, "--crop", 2, v, &ok)) {
            o->prepare = true;
            o->pp.crop_w = (int)v[0];
            o->pp.crop_h = (int)v[1];
        } else if (opt(argc, argv, &i, "--mean", 3, v, &ok)) {
            for (int c = 0; c < 3; c++) {
                o->pp.mean[c] = (float)v[c];
            }
        } else if (opt(argc, argv, &i, "--std", 3, v, &ok)) {
            for (int c = 0; c < 3; c++) {
                o->pp.std[c] = (float)v[c];
            }
        } else if (a[0] == '-' || o->path) {
            ok = false;
        } else {
            o->path = a;
        }
        if (!ok) {
            fprintf(stderr, "image-dump: bad argument '%s'\n%s", a, usage);
            return 2;
        }
    }
    if (!o->path) {
        fprintf(stderr, "image-dump: no image given\n%s", usage);
        return 2;
    }
    return 0;
}

/* Writes img as RGB bytes, or as float32 (c, h, w) when normalized. */
static int write_image(const struct resnet_image *img,
                       const struct dump_opts *o) {
    size_t n = (size_t)img->w * img->h * img->c;
    float *t;
    int rc = 0;

    if (o->info) {
        printf("%d %d\n", img->w, img->h);
        return 0;
    }
    if (!o->normalized) {
        return fwrite(img->data, 1, n, stdout) == n ? 0 : 1;
    }
    t = malloc(n * sizeof *t);
    if (!t) {
        fprintf(stderr, "image-dump: out of memory\n");
        return 1;
    }
    resnet_image_normalize(img, o->pp.mean, o->pp.std, t);
    if (fwrite(t, sizeof *t, n, stdout) != n) {
        rc = 1;
    }
    free(t);
    return rc;
}

int main(int argc, char **argv) {
    struct dump_opts o = {.pp = {.std = {1, 1, 1}}};
    struct resnet_image *img = NULL, *res = NULL;
    struct resnet_error err = {0};
    int rc;

    rc = parse_args(argc, argv, &o);
    if (rc) {
        return rc;
    }
    rc = resnet_image_load(&img, o.path, o.max_pixels, &err);
    if (rc == RESNET_OK && o.size_w) {
        rc = resnet_image_resize(&res, img, o.size_w, o.size_h, &err);
    } else if (rc == RESNET_OK && o.prepare) {
        rc = resnet_image_prepare(&res, img, &o.pp, &err);
    }
    if (rc != RESNET_OK) {
        fprintf(stderr, "image-dump: %s\n", err.msg);
        rc = 1;
        goto out;
    }
    rc = write_image(res ? res : img, &o);
    if (fflush(stdout) != 0) {
        rc = 1;
    }
out:
    resnet_image_free(res);
    resnet_image_free(img);
    return rc;
}
