/*
 * Unit tests for the image steps that need no files: centre-crop rounding
 * and padding, Normalize's float32 arithmetic, the pixel budget, the
 * refusal of buffers that are no image, and reading from pipes and FIFOs.
 */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "resnet.h"

/* A w x h image whose red channel is the row, green the column, blue 7. */
static struct resnet_image *make_image(int w, int h) {
    struct resnet_image *img = malloc(sizeof *img);

    assert_non_null(img);
    img->w = w;
    img->h = h;
    img->c = 3;
    img->data = malloc((size_t)w * h * 3);
    assert_non_null(img->data);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            uint8_t *p = img->data + ((size_t)y * w + x) * 3;

            p[0] = (uint8_t)y;
            p[1] = (uint8_t)x;
            p[2] = 7;
        }
    }
    return img;
}

/* 259 - 224 = 35 rows to drop: round(17.5) is 18 in Python, not 17. */
static void crop_rounds_half_to_even(void **state) {
    struct resnet_image *in = make_image(256, 259), *out = NULL;
    struct resnet_error err = {0};

    (void)state;
    assert_int_equal(resnet_image_crop(&out, in, 224, 224, &err), RESNET_OK);
    assert_int_equal(out->w, 224);
    assert_int_equal(out->h, 224);
    assert_int_equal(out->data[0], 18);   // top row
    assert_int_equal(out->data[1], 16);   // left column: (256 - 224) / 2
    resnet_image_free(out);

    // 225 - 224 = 1: round(0.5) is 0; 227 - 224 = 3: round(1.5) is 2.
    resnet_image_free(in);
    in = make_image(227, 225);
    assert_int_equal(resnet_image_crop(&out, in, 224, 224, &err), RESNET_OK);
    assert_int_equal(out->data[0], 0);
    assert_int_equal(out->data[1], 2);
    resnet_image_free(out);
    resnet_image_free(in);
}

/*
 * A 3 x 2 image cropped to 6 x 5: torchvision pads (6 - 3) / 2 = 1 column
 * before and 2 after, (5 - 2) / 2 = 1 row above and 2 below, with zeros.
 */
static void crop_larger_than_image_pads_zeros(void **state) {
    struct resnet_image *in = make_image(3, 2), *out = NULL;
    struct resnet_error err = {0};
    int n_bad = 0;

    (void)state;
    assert_int_equal(resnet_image_crop(&out, in, 6, 5, &err), RESNET_OK);
    for (int y = 0; y < 5; y++) {
        for (int x = 0; x < 6; x++) {
            const uint8_t *p = out->data + ((size_t)y * 6 + x) * 3;
            bool inside = x >= 1 && x < 4 && y >= 1 && y < 3;
            uint8_t want[3] = {0, 0, 0};

            if (inside) {
                want[0] = (uint8_t)(y - 1);
                want[1] = (uint8_t)(x - 1);
                want[2] = 7;
            }
            if (memcmp(p, want, 3) != 0) {
                print_error("pixel (%d, %d): expected %d %d %d, got %d %d %d\n",
                            x, y, want[0], want[1], want[2], p[0], p[1], p[2]);
                n_bad++;
            }
        }
    }
    assert_int_equal(n_bad, 0);
    resnet_image_free(out);
    resnet_image_free(in);
}

/*
 * prepare() resizes only the window the crop keeps; that must give the
 * bytes of a full resize (to torchvision's size) followed by the crop.
 */
static void prepare_equals_resize_then_crop(void **state) {
    static const int cases[][5] = {
        // w, h, resize, crop_w, crop_h
        {3, 500, 64, 48, 40},  {500, 3, 64, 48, 40}, {320, 240, 256, 224, 224},
        {256, 259, 256, 224, 224}, {40, 30, 20, 30, 25}, {7, 9, 5, 9, 3},
        {100, 100, 0, 50, 60},
    };
    struct resnet_error err = {0};

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int *c = cases[i];
        struct resnet_image *in = make_image(c[0], c[1]);
        struct resnet_image *full = NULL, *want = NULL, *got = NULL;
        struct resnet_preprocess pp = {.resize = c[2], .crop_w = c[3],
                                       .crop_h = c[4]};
        int s = c[0] < c[1] ? c[0] : c[1], l = c[0] < c[1] ? c[1] : c[0];
        int rl = c[2] ? (int)((double)c[2] * l / s) : l;
        int rw = c[2] ? (c[0] <= c[1] ? c[2] : rl) : c[0];
        int rh = c[2] ? (c[0] <= c[1] ? rl : c[2]) : c[1];
        size_t n;

        // Scramble the pixels so that every tap of the filter matters.
        for (size_t k = 0; k < (size_t)c[0] * c[1] * 3; k++) {
            in->data[k] = (uint8_t)(k * 2654435761u >> 13);
        }
        assert_int_equal(resnet_image_resize(&full, in, rw, rh, &err), 0);
        assert_int_equal(resnet_image_crop(&want, full, c[3], c[4], &err), 0);
        assert_int_equal(resnet_image_prepare(&got, in, &pp, &err), 0);
        assert_int_equal(got->w, c[3]);
        assert_int_equal(got->h, c[4]);
        n = (size_t)c[3] * c[4] * 3;
        for (size_t k = 0; k < n; k++) {
            if (got->data[k] != want->data[k]) {
                print_error("case %zu, index %zu: expected %d, got %d\n", i,
                            k, want->data[k], got->data[k]);
                fail();
            }
        }
        resnet_image_free(got);
        resnet_image_free(want);
        resnet_image_free(full);
        resnet_image_free(in);
    }
}

/* A 1 x 5000 image resized to 256 wide would be 1.28 G pixels uncropped. */
static void prepare_refuses_huge_output(void **state) {
    struct resnet_image *in = make_image(1, 5000), *out = NULL;
    struct resnet_preprocess pp = {.resize = 256};
    struct resnet_error err = {0};

    (void)state;
    assert_int_equal(resnet_image_prepare(&out, in, &pp, &err), RESNET_EINVAL);
    assert_null(out);
    pp.crop_w = pp.crop_h = 224;
    assert_int_equal(resnet_image_prepare(&out, in, &pp, &err), RESNET_OK);
    assert_int_equal(out->w, 224);
    resnet_image_free(out);
    resnet_image_free(in);
}

/* Every byte value against ToTensor + Normalize written out in float32. */
static void normalize_matches_float32_steps(void **state) {
    const float mean[3] = {0.485f, 0.456f, 0.406f};
    const float std[3] = {0.229f, 0.224f, 0.225f};
    struct resnet_image img = {.w = 256, .h = 1, .c = 3};
    uint8_t data[256 * 3];
    float out[256 * 3];
    int n_bad = 0;

    (void)state;
    for (int i = 0; i < 256 * 3; i++) {
        data[i] = (uint8_t)((i * 7 + i / 3) & 255);
    }
    img.data = data;
    resnet_image_normalize(&img, mean, std, out);
    for (int c = 0; c < 3; c++) {
        for (int x = 0; x < 256; x++) {
            volatile float v = (float)data[x * 3 + c] / 255.0f;
            volatile float d = v - mean[c];
            float want = d / std[c];
            float got = out[c * 256 + x];

            // Exact: the same float32 operations in the same order.
            if (memcmp(&want, &got, sizeof want) != 0) {
                print_error("index %d: expected %.9g, got %.9g, diff %g\n",
                            c * 256 + x, want, got, want - got);
                n_bad++;
            }
        }
    }
    assert_int_equal(n_bad, 0);
}

/* A JPEG header claiming 65500 x 65500 pixels, refused before decoding. */
static void decode_refuses_jpeg_over_budget(void **state) {
    static const uint8_t jpeg[] = {
        0xff, 0xd8,                                     // SOI
        0xff, 0xc0, 0x00, 0x0b, 0x08, 0xff, 0xdc, 0xff, // SOF0, 8 bits, h
        0xdc, 0x01, 0x01, 0x11, 0x00,                   // w, 1 component
        0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, // SOS
        0x3f, 0x00,                                     //
        0xff, 0xd9,                                     // EOI
    };
    struct resnet_image *img = (struct resnet_image *)&img;
    struct resnet_error err = {0};
    int rc;

    (void)state;
    rc = resnet_image_decode(&img, jpeg, sizeof jpeg, "big.jpg", 0, &err);
    assert_int_equal(rc, RESNET_EUNSUPPORTED);
    assert_null(img);
    assert_string_equal(err.msg, "cannot decode 'big.jpg': too large "
                                 "(65500x65500 pixels, limit 100000000)");

    // A smaller budget refuses a small image too.
    rc = resnet_image_decode(&img, jpeg, sizeof jpeg, "big.jpg", 1000, &err);
    assert_int_equal(rc, RESNET_EUNSUPPORTED);
}

/* The CRC-32 of PNG chunks, bit by bit. */
static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;

    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) {
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        }
    }
    return c ^ 0xffffffffu;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A PNG header claiming 100000 x 50000 RGB pixels, then an empty IDAT. */
static void decode_refuses_png_over_budget(void **state) {
    uint8_t png[8 + 25 + 12] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                                0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    struct resnet_image *img = NULL;
    struct resnet_error err = {0};
    int rc;

    (void)state;
    put32(png + 16, 100000);
    put32(png + 20, 50000);
    png[24] = 8; // bits per sample
    png[25] = 2; // RGB
    put32(png + 29, crc32_png(png + 12, 17));
    memcpy(png + 33, "\0\0\0\0IDAT", 8);
    put32(png + 41, crc32_png(png + 37, 4));

    rc = resnet_image_decode(&img, png, sizeof png, "big.png", 0, &err);
    assert_int_equal(rc, RESNET_EUNSUPPORTED);
    assert_null(img);
    assert_string_equal(err.msg, "cannot decode 'big.png': too large "
                                 "(100000x50000 pixels, limit 100000000)");
}

static void decode_refuses_text(void **state) {
    static const char text[] = "hello, this is not an image\n";
    struct resnet_image *img = NULL;
    struct resnet_error err = {0};
    int rc;

    (void)state;
    rc = resnet_image_decode(&img, text, sizeof text - 1, "x.txt", 0, &err);
    assert_int_equal(rc, RESNET_EFORMAT);
    assert_null(img);
    assert_string_equal(err.msg, "cannot decode 'x.txt': not a JPEG or PNG image");

    rc = resnet_image_decode(&img, text, 0, "empty.jpg", 0, &err);
    assert_int_equal(rc, RESNET_EFORMAT);
    assert_string_equal(err.msg, "cannot decode 'empty.jpg': not a JPEG or PNG image");
}

/*
 * A 2x1 RGB PNG, red then blue, its IDAT a zlib stream of one stored
 * block; the CRCs are filled in at run time.
 */
static size_t make_png(uint8_t *png) {
    static const uint8_t raw[7] = {0, 255, 0, 0, 0, 0, 255}; // filter, RGB
    uint32_t a = 1, b = 0;
    size_t n = 0;

    memcpy(png, "\x89PNG\r\n\x1a\n", 8);
    put32(png + 8, 13);
    memcpy(png + 12, "IHDR", 4);
    put32(png + 16, 2);
    put32(png + 20, 1);
    memcpy(png + 24, "\x08\x02\x00\x00\x00", 5); // 8-bit RGB
    put32(png + 29, crc32_png(png + 12, 17));
    n = 33;
    put32(png + n, 2 + 5 + sizeof raw + 4);
    memcpy(png + n + 4, "IDAT\x78\x01\x01\x07\x00\xf8\xff", 11);
    memcpy(png + n + 15, raw, sizeof raw);
    for (size_t i = 0; i < sizeof raw; i++) {
        a = (a + raw[i]) % 65521;
        b = (b + a) % 65521;
    }
    put32(png + n + 15 + sizeof raw, b << 16 | a);
    put32(png + n + 19 + sizeof raw, crc32_png(png + n + 4, 15 + sizeof raw));
    n += 23 + sizeof raw;
    put32(png + n, 0);
    memcpy(png + n + 4, "IEND", 4);
    put32(png + n + 8, crc32_png(png + n + 4, 4));
    return n + 12;
}

/* A FIFO nobody writes to is an empty file, not a wait without end. */
static void load_fifo_without_writer_is_not_an_image(void **state) {
    char dir[] = "/tmp/test-image.XXXXXX", path[64], want[128];
    struct resnet_image *img = NULL;
    struct resnet_error err = {0};
    int rc;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/fifo", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    alarm(10); // a hang ends the test with SIGALRM
    rc = resnet_image_load(&img, path, 0, &err);
    alarm(0);
    unlink(path);
    rmdir(dir);
    assert_int_equal(rc, RESNET_EFORMAT);
    assert_null(img);
    snprintf(want, sizeof want, "cannot decode '%s': not a JPEG or PNG image", path);
    assert_string_equal(err.msg, want);
}

/*
 * A pipe whose first 8 bytes are no signature is refused at once, though
 * its writer keeps it open: nothing after them is waited for or read.
 */
static void load_checks_signature_before_reading_on(void **state) {
    static const uint8_t zeros[4096];
    struct resnet_image *img = NULL;
    struct resnet_error err = {0};
    char path[32];
    int fds[2], rc;

    (void)state;
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], zeros, sizeof zeros), sizeof zeros);
    snprintf(path, sizeof path, "/dev/fd/%d", fds[0]);
    alarm(10);
    rc = resnet_image_load(&img, path, 0, &err);
    alarm(0);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(rc, RESNET_EFORMAT);
    assert_null(img);
}

/* A pipe whose writer is slow, as <(cat x.png) can be, is read whole. */
static void load_waits_for_a_slow_pipe(void **state) {
    uint8_t png[128];
    size_t n = make_png(png);
    struct resnet_image *img = NULL;
    struct resnet_error err = {0};
    char path[32];
    int fds[2], rc, status;
    pid_t pid;

    (void)state;
    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        usleep(200000);
        _exit(write(fds[1], png, n) == (ssize_t)n ? 0 : 1);
    }
    close(fds[1]);
    snprintf(path, sizeof path, "/dev/fd/%d", fds[0]);
    rc = resnet_image_load(&img, path, 0, &err);
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (rc) {
        fail_msg("loading '%s': %s", path, err.msg);
    }
    assert_int_equal(img->w, 2);
    assert_int_equal(img->h, 1);
    assert_memory_equal(img->data, "\xff\x00\x00\x00\x00\xff", 6);
    resnet_image_free(img);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crop_rounds_half_to_even),
        cmocka_unit_test(crop_larger_than_image_pads_zeros),
        cmocka_unit_test(prepare_equals_resize_then_crop),
        cmocka_unit_test(prepare_refuses_huge_output),
        cmocka_unit_test(normalize_matches_float32_steps),
        cmocka_unit_test(decode_refuses_jpeg_over_budget),
        cmocka_unit_test(decode_refuses_png_over_budget),
        cmocka_unit_test(decode_refuses_text),
        cmocka_unit_test(load_fifo_without_writer_is_not_an_image),
        cmocka_unit_test(load_checks_signature_before_reading_on),
        cmocka_unit_test(load_waits_for_a_slow_pipe),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
