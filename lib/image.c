/*
 * Images: reading a file, choosing the decoder from its first bytes (never
 * its name), and the torchvision steps after decoding: centre crop with
 * zero padding, Resize(int) + CenterCrop, and ToTensor + Normalize.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a,
                                     '\n'};

/* The decoder that a file's first bytes call for. */
enum kind { KIND_NONE, KIND_PNG, KIND_JPEG };

static enum kind sniff(const uint8_t *p, size_t len) {
    if (len >= sizeof png_magic &&
        memcmp(p, png_magic, sizeof png_magic) == 0) {
        return KIND_PNG;
    }
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        return KIND_JPEG;
    }
    return KIND_NONE;
}

static int not_an_image(const char *name, struct resnet_error *err) {
    return rn_error(err, RESNET_EFORMAT, 0, "cannot decode '%s': not a JPEG or PNG image",
                    name);
}

/*
 * The largest file worth reading for a pixel budget: 8 bytes a pixel (an
 * uncompressed 16-bit RGBA PNG) plus 64 MiB of other chunks.
 */
static size_t file_limit(size_t max_pixels) {
    size_t n;

    if (!rn_mul_size(max_pixels, 8, &n) || n > SIZE_MAX / 4) {
        return SIZE_MAX / 4;
    }
    return n + (64u << 20);
}

/*
 * Reads up to n bytes into buf, stopping early only at end of file; *got
 * is the count. Returns errno or 0.
 */
static int read_some(int fd, uint8_t *buf, size_t n, size_t *got) {
    *got = 0;
    while (*got < n) {
        ssize_t r = read(fd, buf + *got, n - *got);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return errno;
        }
        if (r == 0) {
            break;
        }
        *got += (size_t)r;
    }
    return 0;
}

/*
 * Reads the rest of fd into a new buffer that starts with the n_head bytes
 * already read from it; returns errno or 0, EFBIG when the file holds more
 * than max_len bytes.
 */
static int read_rest(int fd, const uint8_t *head, size_t n_head,
                     size_t max_len, uint8_t **buf, size_t *len) {
    struct stat st;
    size_t cap, n = n_head;
    uint8_t *p;

    if (fstat(fd, &st) != 0) {
        return errno;
    }
    // Regular files are read in one piece; pipes grow as they fill.
    cap = 65536;
    if (S_ISREG(st.st_mode) && st.st_size > 0) {
        if ((uintmax_t)st.st_size > max_len) {
            return EFBIG;
        }
        cap = (size_t)st.st_size + 1;
    }
    if (cap <= n_head) {
        cap = n_head + 1;
    }
    p = malloc(cap);
    if (!p) {
        return ENOMEM;
    }
    memcpy(p, head, n_head);
    for (;;) {
        ssize_t got;

        if (n == cap) {
            // Grow to at most max_len + 1: a file that fills it is too long.
            size_t want = cap > max_len / 2 ? max_len + 1 : cap * 2;
            uint8_t *q = cap > max_len ? NULL : realloc(p, want);

            if (!q) {
                free(p);
                return cap > max_len ? EFBIG : ENOMEM;
            }
            p = q;
            cap = want;
        }
        got = read(fd, p + n, cap - n);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            int e = errno;

            free(p);
            return e;
        }
        if (got == 0) {
            break;
        }
        n += (size_t)got;
    }
    *buf = p;
    *len = n;
    return 0;
}

/*
 * Opens path for reading without waiting for a FIFO's writer, then makes
 * reads block again: a FIFO nobody writes to reads as empty, while a pipe
 * such as bash's <(cat x.png) still delivers all it is given. Returns the
 * descriptor, or -1 with errno set.
 */
static int open_input(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    int flags;

    if (fd < 0) {
        return -1;
    }
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        int e = errno;

        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/*
 * The offset of a centred window of size out in in, as CenterCrop computes
 * it: int(round((in - out) / 2.0)), Python rounding half to even.
 */
static int centre_offset(int in, int out) {
    int d = in - out;
    int q = d / 2;

    if (d < 0) {
        return 0;
    }
    if (d % 2 == 1 && q % 2 == 1) {
        q++;
    }
    return q;
}

/*
 * Where CenterCrop's window of size out starts in an image of size in:
 * torchvision first pads (out - in) / 2 zeros before a too-small image
 * (the extra one after), then centres; the result can be negative.
 */
static int crop_origin(int in, int out) {
    int pad_before = out > in ? (out - in) / 2 : 0;
    int padded = out > in ? out : in;

    return centre_offset(padded, out) - pad_before;
}

/*
 * Copies the w x h window of in at x0, y0 into dst (w x h, zeroed by the
 * caller) at dx, dy; the parts outside either image are skipped.
 */
static void blit(struct resnet_image *dst, int dx, int dy,
                 const struct resnet_image *in, int x0, int y0, int w,
                 int h) {
    // Clip the window to the source image.
    if (x0 < 0) {
        dx -= x0, w += x0, x0 = 0;
    }
    if (y0 < 0) {
        dy -= y0, h += y0, y0 = 0;
    }
    if (x0 + w > in->w) {
        w = in->w - x0;
    }
    if (y0 + h > in->h) {
        h = in->h - y0;
    }
    if (w <= 0 || h <= 0) {
        return;
    }
    for (int y = 0; y < h; y++) {
        memcpy(dst->data + ((size_t)(dy + y) * dst->w + dx) * 3,
               in->data + ((size_t)(y0 + y) * in->w + x0) * 3,
               (size_t)w * 3);
    }
}

/*
 * The size Resize(size) gives a w x h image in torchvision 0.14: the
 * shorter side becomes size, the longer int(size * long / short).
 */
static int resized_size(int w, int h, int size, int *rw, int *rh,
                        struct resnet_error *err) {
    int s = w <= h ? w : h;
    int l = w <= h ? h : w;
    double nl = (double)((int64_t)size * l) / s;

    if (nl >= INT_MAX) {
        return rn_error(err, RESNET_EINVAL, 0,
                        "cannot resize a %dx%d image to %d pixels: too large",
                        w, h, size);
    }
    *rw = w <= h ? size : (int)nl;
    *rh = w <= h ? (int)nl : size;
    return RESNET_OK;
}

int rn_image_new(struct resnet_image **out, int w, int h, bool zero,
                 struct resnet_error *err) {
    struct resnet_image *img;
    size_t n;

    *out = NULL;
    if (w <= 0 || h <= 0 || !rn_mul_size((size_t)w, (size_t)h, &n) ||
        !rn_mul_size(n, 3, &n)) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "cannot allocate a %dx%d image", w, h);
    }
    img = malloc(sizeof *img);
    if (!img) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "cannot allocate a %dx%d image", w, h);
    }
    img->data = zero ? calloc(n, 1) : malloc(n);
    if (!img->data) {
        free(img);
        return rn_error(err, RESNET_ENOMEM, 0,
                        "cannot allocate a %dx%d image", w, h);
    }
    img->w = w;
    img->h = h;
    img->c = 3;
    *out = img;
    return RESNET_OK;
}

int rn_image_check_size(long w, long h, size_t max_pixels, const char *name,
                        struct resnet_error *err) {
    if (w <= 0 || h <= 0) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "cannot decode '%s': empty image (%ldx%ld pixels)",
                        name, w, h);
    }
    if (w > INT_MAX || h > INT_MAX ||
        (unsigned long)w > max_pixels / (unsigned long)h) {
        return rn_error(err, RESNET_EUNSUPPORTED, 0,
                        "cannot decode '%s': too large (%ldx%ld pixels, limit %zu)",
                        name, w, h, max_pixels);
    }
    return RESNET_OK;
}

int resnet_image_load(struct resnet_image **out, const char *path,
                      size_t max_pixels, struct resnet_error *err) {
    uint8_t head[sizeof png_magic], *buf = NULL;
    size_t n_head = 0, len = 0, limit;
    int fd, e, rc;

    *out = NULL;
    if (max_pixels == 0) {
        max_pixels = RESNET_MAX_PIXELS;
    }
    limit = file_limit(max_pixels);
    fd = open_input(path);
    if (fd < 0) {
        return rn_error(err, RESNET_EIO, errno, "cannot open '%s'", path);
    }

    // The signature first: /dev/zero or a huge text file is not read in.
    e = read_some(fd, head, sizeof head, &n_head);
    if (!e && sniff(head, n_head) == KIND_NONE) {
        close(fd);
        return not_an_image(path, err);
    }
    if (!e) {
        e = read_rest(fd, head, n_head, limit, &buf, &len);
    }
    close(fd);
    if (e == EFBIG) {
        return rn_error(err, RESNET_EUNSUPPORTED, 0,
                        "cannot decode '%s': file too large (over %zu bytes)", path,
                        limit);
    }
    if (e == ENOMEM) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "cannot read '%s': out of memory", path);
    }
    if (e) {
        return rn_error(err, RESNET_EIO, e, "cannot read '%s'", path);
    }
    rc = resnet_image_decode(out, buf, len, path, max_pixels, err);
    free(buf);
    return rc;
}

int resnet_image_decode(struct resnet_image **out, const void *buf,
                        size_t len, const char *name, size_t max_pixels,
                        struct resnet_error *err) {
    const uint8_t *p = buf;

    *out = NULL;
    if (max_pixels == 0) {
        max_pixels = RESNET_MAX_PIXELS;
    }
    switch (sniff(p, len)) {
    case KIND_PNG:
        return rn_png_decode(out, p, len, name, max_pixels, err);
    case KIND_JPEG:
        return rn_jpeg_decode(out, p, len, name, max_pixels, err);
    default:
        return not_an_image(name, err);
    }
}

int resnet_image_crop(struct resnet_image **out,
                      const struct resnet_image *in, int w, int h,
                      struct resnet_error *err) {
    int rc;

    *out = NULL;
    if (w <= 0 || h <= 0) {
        return rn_error(err, RESNET_EINVAL, 0, "bad crop size %dx%d", w, h);
    }
    rc = rn_image_new(out, w, h, true, err);
    if (rc) {
        return rc;
    }
    blit(*out, 0, 0, in, crop_origin(in->w, w), crop_origin(in->h, h), w, h);
    return RESNET_OK;
}

void resnet_image_free(struct resnet_image *img) {
    if (!img) {
        return;
    }
    free(img->data);
    free(img);
}

int resnet_image_prepare(struct resnet_image **out,
                         const struct resnet_image *in,
                         const struct resnet_preprocess *pp,
                         struct resnet_error *err) {
    struct resnet_image *win = NULL;
    int rw = in->w, rh = in->h, cw, ch, x0, y0, x1, y1, ix0, iy0;
    int rc;

    *out = NULL;
    if (in->w <= 0 || in->h <= 0) {
        return rn_error(err, RESNET_EINVAL, 0, "cannot prepare a %dx%d image",
                        in->w, in->h);
    }
    if (pp->resize < 0 || pp->crop_w < 0 || pp->crop_h < 0) {
        return rn_error(err, RESNET_EINVAL, 0,
                        "bad preprocessing: resize %d, crop %dx%d",
                        pp->resize, pp->crop_w, pp->crop_h);
    }
    if (pp->resize > 0) {
        rc = resized_size(in->w, in->h, pp->resize, &rw, &rh, err);
        if (rc) {
            return rc;
        }
    }
    cw = pp->crop_w > 0 ? pp->crop_w : rw;
    ch = pp->crop_h > 0 ? pp->crop_h : rh;
    if ((size_t)cw > RESNET_MAX_PIXELS / (size_t)ch) {
        return rn_error(err, RESNET_EINVAL, 0,
                        "cannot resize a %dx%d image to %dx%d: over %zu pixels",
                        in->w, in->h, cw, ch, RESNET_MAX_PIXELS);
    }
    if (rw == in->w && rh == in->h) {
        return resnet_image_crop(out, in, cw, ch, err);
    }

    // Resize only the part of the resized image the crop keeps.
    x0 = crop_origin(rw, cw);
    y0 = crop_origin(rh, ch);
    ix0 = x0 > 0 ? x0 : 0;
    iy0 = y0 > 0 ? y0 : 0;
    x1 = x0 + cw < rw ? x0 + cw : rw;
    y1 = y0 + ch < rh ? y0 + ch : rh;
    rc = rn_image_resample(&win, in, rw, rh, ix0, iy0, x1 - ix0, y1 - iy0,
                           err);
    if (rc) {
        goto out;
    }
    if (win->w == cw && win->h == ch) {
        *out = win;
        win = NULL;
        goto out;
    }

    // The crop is larger than the resized image: pad with zeros.
    rc = rn_image_new(out, cw, ch, true, err);
    if (rc) {
        goto out;
    }
    blit(*out, ix0 - x0, iy0 - y0, win, 0, 0, win->w, win->h);
out:
    resnet_image_free(win);
    return rc;
}

void resnet_image_normalize(const struct resnet_image *in,
                            const float mean[3], const float std[3],
                            float *out) {
    size_t n = (size_t)in->w * in->h;
    int c_n = in->c;

    // Same float32 steps as ToTensor (p / 255) and Normalize ((v - m) / s).
    for (int c = 0; c < c_n; c++) {
        float m = mean[c], s = std[c];
        float *dst = out + (size_t)c * n;

        for (size_t i = 0; i < n; i++) {
            float v = (float)in->data[i * c_n + c] / 255.0f;

            dst[i] = (v - m) / s;
        }
    }
}
