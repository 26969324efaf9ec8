/*
 * Unit tests for lib/safetensors.c: write/load round trips, exact dtype
 * conversion against a reference written here, hostile headers built
 * here, and the shared weight cases ($RESNET_SHARED_CASES/weights); and
 * for lib/atomic.c, the writer under rn_safetensors_write().
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>
#include <cmocka.h>

#include "internal.h"

/* The scratch folder of this run; files in it are removed after each test. */
static char tmp_dir[4096];

static void tmp_path(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", tmp_dir, name);
}

/* Names of the entries in tmp_dir, one line each, for leftover checks. */
static int count_entries(char *names, size_t size) {
    DIR *d = opendir(tmp_dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    names[0] = '\0';
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            size_t len = strlen(names);
            snprintf(names + len, size - len, "%s\n", e->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

static int clean_tmp_dir(void **state) {
    DIR *d = opendir(tmp_dir);
    struct dirent *e;
    char path[8192];

    (void)state;
    if (!d) {
        return -1;
    }
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%s/%s", tmp_dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    return 0;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/*
 * Writes a safetensors-like file: 8-byte length (declared_len, or the
 * header's real length when ~0), the header text, then n_data bytes.
 */
static void write_raw(const char *path, uint64_t declared_len,
                      const char *header, size_t n_data) {
    size_t len = strlen(header), n = 8 + len + n_data;
    unsigned char *buf = calloc(1, n);

    assert_non_null(buf);
    if (declared_len == UINT64_MAX) {
        declared_len = len;
    }
    for (int i = 0; i < 8; i++) {
        buf[i] = (unsigned char)(declared_len >> (8 * i));
    }
    memcpy(buf + 8, header, len);
    for (size_t i = 0; i < n_data; i++) {
        buf[8 + len + i] = (unsigned char)(i * 7 + 1);
    }
    write_bytes(path, buf, n);
    free(buf);
}

/* ------------------------------------------------------------------ */
/* Round trips                                                          */

static void put_le(unsigned char *p, uint64_t v, int n_bytes) {
    for (int i = 0; i < n_bytes; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static struct rn_tensor make_tensor(const char *name, enum rn_dtype dtype,
                                    int n_dims, const int64_t *shape,
                                    const void *data) {
    struct rn_tensor t = {.name = name, .dtype = dtype, .n_dims = n_dims,
                          .data = data, .n_elems = 1};

    for (int d = 0; d < n_dims; d++) {
        t.shape[d] = shape[d];
        t.n_elems *= (size_t)shape[d];
    }
    t.n_bytes = t.n_elems * rn_dtype_size(dtype);
    return t;
}

static void assert_same_tensor(const struct rn_tensor *want,
                               const struct rn_tensor *got) {
    assert_string_equal(got->name, want->name);
    assert_int_equal(got->dtype, want->dtype);
    assert_int_equal(got->n_dims, want->n_dims);
    for (int d = 0; d < want->n_dims; d++) {
        assert_int_equal(got->shape[d], want->shape[d]);
    }
    assert_int_equal(got->n_elems, want->n_elems);
    assert_int_equal(got->n_bytes, want->n_bytes);
    assert_memory_equal(got->data, want->data, want->n_bytes);
}

static void round_trip_keeps_f32_f16_bf16_i64_and_metadata(void **state) {
    unsigned char f32[6 * 4], f16[5 * 2], bf16[4 * 2], i64[3 * 8];
    static const int64_t s_f32[] = {2, 3}, s_f16[] = {5}, s_bf16[] = {2, 2},
                         s_i64[] = {3}, s_empty[] = {0, 4};
    static const char *const meta[] = {"format", "pt",
                                       "note", "a \"quote\", \\ and \n"};
    struct rn_tensor in[6];
    struct rn_safetensors *st = NULL;
    struct resnet_error err = {0};
    char path[8192], names[8192];
    unsigned char len_bytes[8];
    cJSON *meta_json;
    FILE *f;

    (void)state;
    for (int i = 0; i < 6; i++) {
        put_le(f32 + 4 * i, 0x3f800000u + 0x12345u * (uint32_t)i, 4);
    }
    for (int i = 0; i < 5; i++) {
        put_le(f16 + 2 * i, 0x3c00u + 0x0101u * (uint32_t)i, 2);
    }
    for (int i = 0; i < 4; i++) {
        put_le(bf16 + 2 * i, 0xbf80u + (uint32_t)i, 2);
    }
    for (int i = 0; i < 3; i++) {
        put_le(i64 + 8 * i, (uint64_t)-1 - (uint64_t)i * 1000, 8);
    }
    in[0] = make_tensor("layer1.0.conv1.weight", RN_DTYPE_F32, 2, s_f32, f32);
    in[1] = make_tensor("bn1.weight", RN_DTYPE_F16, 1, s_f16, f16);
    in[2] = make_tensor("a/b \"odd\" name", RN_DTYPE_BF16, 2, s_bf16, bf16);
    in[3] = make_tensor("bn1.num_batches_tracked", RN_DTYPE_I64, 1, s_i64,
                        i64);
    in[4] = make_tensor("empty", RN_DTYPE_F32, 2, s_empty, NULL);
    in[5] = make_tensor("scalar", RN_DTYPE_F32, 0, NULL, f32);

    tmp_path(path, sizeof path, "rt.safetensors");
    assert_int_equal(rn_safetensors_write(path, in, 6, meta, 2, false, &err),
                     RESNET_OK);
    assert_int_equal(rn_safetensors_load(&st, path, &err), RESNET_OK);

    // Tensors come back in the order given, with the same bytes.
    assert_int_equal(st->n_tensors, 6);
    for (int i = 0; i < 6; i++) {
        if (in[i].n_bytes) {
            assert_same_tensor(&in[i], &st->tensors[i]);
        }
        assert_ptr_equal(rn_safetensors_find(st, in[i].name),
                         &st->tensors[i]);
    }
    assert_int_equal(st->tensors[4].n_elems, 0);
    assert_int_equal(st->tensors[5].n_dims, 0);
    assert_null(rn_safetensors_find(st, "missing"));

    // __metadata__ survives escaping.
    assert_non_null(st->metadata_json);
    meta_json = cJSON_Parse(st->metadata_json);
    assert_non_null(meta_json);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(meta_json, "note")->valuestring,
        meta[3]);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(meta_json, "format")->valuestring,
        "pt");
    cJSON_Delete(meta_json);
    rn_safetensors_free(st);

    // The header is padded so the data starts 8-byte aligned.
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(len_bytes, 1, 8, f), 8);
    fclose(f);
    assert_int_equal(len_bytes[0] % 8, 0);

    // Nothing but the target is left in the folder.
    assert_int_equal(count_entries(names, sizeof names), 1);
}

static void write_refuses_existing_file_unless_overwrite(void **state) {
    static const int64_t shape[] = {2};
    float a[2] = {1.0f, 2.0f}, b[2] = {3.0f, 4.0f}, got[2];
    struct rn_tensor ta = make_tensor("x", RN_DTYPE_F32, 1, shape, a);
    struct rn_tensor tb = make_tensor("x", RN_DTYPE_F32, 1, shape, b);
    struct rn_safetensors *st = NULL;
    struct resnet_error err = {0};
    char path[8192], names[8192];

    (void)state;
    tmp_path(path, sizeof path, "x.safetensors");
    assert_int_equal(rn_safetensors_write(path, &ta, 1, NULL, 0, false, &err),
                     RESNET_OK);

    // Without overwrite the old file stays.
    assert_int_equal(rn_safetensors_write(path, &tb, 1, NULL, 0, false, &err),
                     RESNET_EIO);
    assert_int_equal(err.sys_errno, EEXIST);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "exists"));
    print_message("refused as expected: %s\n", err.msg);
    assert_int_equal(rn_safetensors_load(&st, path, &err), RESNET_OK);
    assert_int_equal(rn_tensor_to_f32(&st->tensors[0], got, &err), RESNET_OK);
    assert_true(got[0] == 1.0f && got[1] == 2.0f);
    rn_safetensors_free(st);

    // With overwrite it is replaced.
    assert_int_equal(rn_safetensors_write(path, &tb, 1, NULL, 0, true, &err),
                     RESNET_OK);
    assert_int_equal(rn_safetensors_load(&st, path, &err), RESNET_OK);
    assert_int_equal(rn_tensor_to_f32(&st->tensors[0], got, &err), RESNET_OK);
    assert_true(got[0] == 3.0f && got[1] == 4.0f);
    assert_null(st->metadata_json);
    rn_safetensors_free(st);
    assert_int_equal(count_entries(names, sizeof names), 1);
}

static void failed_write_leaves_nothing_behind(void **state) {
    static const int64_t shape[] = {16384};
    float *big = calloc(16384, sizeof *big);
    struct rn_tensor t = make_tensor("big", RN_DTYPE_F32, 1, shape, big);
    struct resnet_error err = {0};
    struct rlimit old, small;
    char path[8192], names[8192];
    int rc;

    (void)state;
    assert_non_null(big);
    tmp_path(path, sizeof path, "out.safetensors");

    // A tensor whose size disagrees with its shape is refused up front.
    t.n_bytes -= 4;
    assert_int_equal(rn_safetensors_write(path, &t, 1, NULL, 0, false, &err),
                     RESNET_EINVAL);
    assert_non_null(strstr(err.msg, "big"));
    t.n_bytes += 4;

    // A missing folder fails with the system's reason.
    assert_int_equal(rn_safetensors_write("/nonexistent-dir/x.safetensors",
                                          &t, 1, NULL, 0, false, &err),
                     RESNET_EIO);
    assert_int_equal(err.sys_errno, ENOENT);

    // A write that fails half way (file size limit) removes the temp file.
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    small = old;
    small.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    rc = rn_safetensors_write(path, &t, 1, NULL, 0, false, &err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_DFL);
    assert_int_equal(rc, RESNET_EIO);
    assert_int_equal(err.sys_errno, EFBIG);
    assert_non_null(strstr(err.msg, path));

    if (count_entries(names, sizeof names) != 0) {
        fail_msg("files left behind after failed writes:\n%s", names);
    }
    free(big);
}

/* The whole content of the small file at path, NUL-terminated. */
static void read_small(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "rb");
    size_t n;

    assert_non_null(f);
    n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void atomic_file_appears_on_commit_with_umask_mode(void **state) {
    struct rn_atomic f = {0};
    struct resnet_error err = {0};
    char path[8192], names[8192], got[16];
    struct stat sb;
    mode_t old;

    (void)state;
    tmp_path(path, sizeof path, "a.json");
    old = umask(027);
    assert_int_equal(rn_atomic_open(&f, path, false, &err), RESNET_OK);
    umask(old);
    assert_int_equal(rn_atomic_write(&f, "abc", 3, &err), RESNET_OK);

    // Until the commit only a hidden temporary file is there.
    assert_int_equal(count_entries(names, sizeof names), 1);
    assert_int_equal(names[0], '.');
    assert_int_equal(access(path, F_OK), -1);

    assert_int_equal(rn_atomic_commit(&f, &err), RESNET_OK);
    read_small(path, got, sizeof got);
    assert_string_equal(got, "abc");
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0640);
    assert_int_equal(count_entries(names, sizeof names), 1);
    rn_atomic_abort(&f); // a no-op after a commit
    assert_int_equal(access(path, F_OK), 0);
}

static void atomic_commit_keeps_a_file_that_appeared_meanwhile(
    void **state) {
    struct rn_atomic f = {0};
    struct resnet_error err = {0};
    char path[8192], names[8192], want[8300], got[16];

    (void)state;
    tmp_path(path, sizeof path, "b.json");
    assert_int_equal(rn_atomic_open(&f, path, false, &err), RESNET_OK);
    assert_int_equal(rn_atomic_write(&f, "new", 3, &err), RESNET_OK);
    write_bytes(path, "old", 3);
    assert_int_equal(rn_atomic_commit(&f, &err), RESNET_EIO);
    assert_int_equal(err.sys_errno, EEXIST);
    snprintf(want, sizeof want, "cannot write '%s': file exists (use --force to overwrite)",
             path);
    assert_string_equal(err.msg, want);
    read_small(path, got, sizeof got);
    assert_string_equal(got, "old");
    if (count_entries(names, sizeof names) != 1) {
        fail_msg("expected only b.json, found:\n%s", names);
    }

    // With overwrite it is replaced.
    assert_int_equal(rn_atomic_open(&f, path, true, &err), RESNET_OK);
    assert_int_equal(rn_atomic_write(&f, "new", 3, &err), RESNET_OK);
    assert_int_equal(rn_atomic_commit(&f, &err), RESNET_OK);
    read_small(path, got, sizeof got);
    assert_string_equal(got, "new");
}

static void atomic_abort_leaves_nothing(void **state) {
    struct rn_atomic none = {0}, f = {0};
    struct resnet_error err = {0};
    char path[8192], names[8192];

    (void)state;
    rn_atomic_abort(&none); // nothing open: nothing to do
    tmp_path(path, sizeof path, "c.json");
    assert_int_equal(rn_atomic_open(&f, path, false, &err), RESNET_OK);
    assert_int_equal(rn_atomic_write(&f, "abc", 3, &err), RESNET_OK);
    rn_atomic_abort(&f);
    rn_atomic_abort(&f);
    if (count_entries(names, sizeof names) != 0) {
        fail_msg("files left behind after an abort:\n%s", names);
    }

    // An existing target is refused before any file is made.
    write_bytes(path, "old", 3);
    assert_int_equal(rn_atomic_open(&f, path, false, &err), RESNET_EIO);
    assert_int_equal(err.sys_errno, EEXIST);
    assert_int_equal(count_entries(names, sizeof names), 1);
}

/* ------------------------------------------------------------------ */
/* Conversion to float32                                                */

/* bf16 (sign, 8-bit exponent, 7-bit mantissa) from its fields, in double. */
static double ref_bf16(unsigned bits) {
    int sign = bits >> 15, exp = bits >> 7 & 0xff, mant = bits & 0x7f;
    double v;

    if (exp == 0xff) {
        v = mant ? NAN : INFINITY;
    } else if (exp == 0) {
        v = ldexp(mant, -126 - 7);
    } else {
        v = ldexp(128 + mant, exp - 127 - 7);
    }
    return sign ? -v : v;
}

/* IEEE half (sign, 5-bit exponent, 10-bit mantissa) from its fields. */
static double ref_f16(unsigned bits) {
    int sign = bits >> 15, exp = bits >> 10 & 0x1f, mant = bits & 0x3ff;
    double v;

    if (exp == 0x1f) {
        v = mant ? NAN : INFINITY;
    } else if (exp == 0) {
        v = ldexp(mant, -14 - 10);
    } else {
        v = ldexp(1024 + mant, exp - 15 - 10);
    }
    return sign ? -v : v;
}

static uint32_t f32_bits(float f) {
    uint32_t u;

    memcpy(&u, &f, sizeof u);
    return u;
}

/*
 * Converts all 65536 bit patterns, stored at an odd address, and checks
 * each against ref: the same float bit for bit (so -0 stays -0), or for
 * NaN a NaN of the same sign with the payload kept in the top bits.
 */
static void check_all_halves(enum rn_dtype dtype, double (*ref)(unsigned),
                             int mant_shift) {
    unsigned char *buf = malloc(2 * 65536 + 1);
    float *out = malloc(sizeof *out * 65536);
    struct rn_tensor t = {.name = "all", .dtype = dtype, .n_dims = 1,
                          .shape = {65536}, .n_elems = 65536,
                          .n_bytes = 2 * 65536};
    struct resnet_error err = {0};
    int n_bad = 0;

    assert_non_null(buf);
    assert_non_null(out);
    for (unsigned i = 0; i < 65536; i++) {
        put_le(buf + 1 + 2 * i, i, 2);
    }
    t.data = buf + 1;
    assert_int_equal(rn_tensor_to_f32(&t, out, &err), RESNET_OK);

    for (unsigned i = 0; i < 65536; i++) {
        double want = ref(i);
        bool ok;
        if (isnan(want)) {
            uint32_t mant = (i & ((1u << mant_shift) - 1)) << (23 - mant_shift);
            ok = isnan(out[i]) && !signbit(out[i]) == !(i >> 15)
                 && (f32_bits(out[i]) & 0x7fffff) == mant;
        } else {
            ok = f32_bits(out[i]) == f32_bits((float)want);
        }
        if (!ok && n_bad++ == 0) {
            print_error("%s pattern 0x%04x: expected %.9g (0x%08x), "
                        "actual %.9g (0x%08x)\n", rn_dtype_name(dtype), i,
                        want, f32_bits((float)want), (double)out[i],
                        f32_bits(out[i]));
        }
    }
    free(out);
    free(buf);
    if (n_bad) {
        fail_msg("%d of 65536 %s patterns converted wrongly", n_bad,
                 rn_dtype_name(dtype));
    }
}

static void all_bf16_patterns_widen_exactly(void **state) {
    (void)state;
    check_all_halves(RN_DTYPE_BF16, ref_bf16, 7);
}

static void all_f16_patterns_widen_exactly(void **state) {
    (void)state;
    check_all_halves(RN_DTYPE_F16, ref_f16, 10);
}

static void f64_narrows_to_nearest_even(void **state) {
    static const struct {
        double in;
        float want;
    } cases[] = {
        {1.0, 1.0f},
        {0x1.000001p0, 1.0f},               // tie: to even (down)
        {0x1.000003p0, 0x1.000004p0f},      // tie: to even (up)
        {0x1.0000010001p0, 0x1.000002p0f},  // above the tie: up
        {0.1, 0.1f},
        {-0x1p-149, -0x1p-149f},            // smallest subnormal
        {0x1p-150, 0.0f},                   // tie with 0: to even
        {0x1.8p-149, 0x1p-148f},            // tie: to even (up)
        {1e300, INFINITY},
        {-1e-50, -0.0f},
        {-INFINITY, -INFINITY},
    };
    size_t n = sizeof cases / sizeof cases[0];
    unsigned char *buf = malloc(8 * (n + 1) + 3);
    float *out = malloc(sizeof *out * (n + 1));
    struct rn_tensor t = {.name = "f64", .dtype = RN_DTYPE_F64, .n_dims = 1,
                          .shape = {(int64_t)n + 1}, .n_elems = n + 1,
                          .n_bytes = 8 * (n + 1)};
    struct resnet_error err = {0};
    uint64_t bits;
    double nan_value = NAN;

    (void)state;
    assert_non_null(buf);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++) {
        memcpy(&bits, &cases[i].in, 8);
        put_le(buf + 3 + 8 * i, bits, 8);
    }
    memcpy(&bits, &nan_value, 8);
    put_le(buf + 3 + 8 * n, bits, 8);
    t.data = buf + 3;   // deliberately unaligned
    assert_int_equal(rn_tensor_to_f32(&t, out, &err), RESNET_OK);

    for (size_t i = 0; i < n; i++) {
        if (f32_bits(out[i]) != f32_bits(cases[i].want)) {
            fail_msg("f64 case %zu: %a: expected %a, actual %a", i,
                     cases[i].in, (double)cases[i].want, (double)out[i]);
        }
    }
    assert_true(isnan(out[n]));
    free(out);
    free(buf);
}

static void integer_tensor_does_not_convert(void **state) {
    int64_t v = 3;
    struct rn_tensor t = {.name = "bn1.num_batches_tracked",
                          .dtype = RN_DTYPE_I64, .n_elems = 1, .n_bytes = 8,
                          .data = &v};
    struct resnet_error err = {0};
    float out;

    (void)state;
    assert_int_equal(rn_tensor_to_f32(&t, &out, &err), RESNET_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "bn1.num_batches_tracked"));
}

static void unaligned_f32_data_loads_and_converts(void **state) {
    // A 55-byte header puts the data at byte 63, off any alignment.
    const char *header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],"
                         "\"data_offsets\":[0,8]}} ";
    unsigned char buf[8 + 64];
    size_t len = strlen(header);
    struct rn_safetensors *st = NULL;
    struct resnet_error err = {0};
    char path[8192];
    float out[2];

    (void)state;
    assert_int_equal((8 + len) % 4 != 0, 1);
    put_le(buf, len, 8);
    memcpy(buf + 8, header, len);
    put_le(buf + 8 + len, f32_bits(-2.5f), 4);
    put_le(buf + 12 + len, f32_bits(0x1p-140f), 4);
    tmp_path(path, sizeof path, "unaligned.safetensors");
    write_bytes(path, buf, 8 + len + 8);

    assert_int_equal(rn_safetensors_load(&st, path, &err), RESNET_OK);
    assert_int_equal(rn_tensor_to_f32(&st->tensors[0], out, &err), RESNET_OK);
    assert_true(out[0] == -2.5f && out[1] == 0x1p-140f);
    rn_safetensors_free(st);
}

/* ------------------------------------------------------------------ */
/* Hostile files                                                        */

struct hostile {
    const char *what;
    const char *header;     // NULL: write raw bytes instead
    uint64_t declared_len;  // UINT64_MAX: the header's real length
    size_t n_data;
    const char *raw;        // the whole file, when header is NULL
    size_t raw_len;
    const char *needle;     // must appear in the message, or NULL
};

#define T1(dtype, shape, offs)                                             \
    "{\"t\":{\"dtype\":" dtype ",\"shape\":" shape                         \
    ",\"data_offsets\":" offs "}}"

static const struct hostile hostile_cases[] = {
    {"header length past the end of the file",
     T1("\"F32\"", "[1]", "[0,4]"), 4096, 4, NULL, 0, "truncated"},
    {"header length of 2^63", T1("\"F32\"", "[1]", "[0,4]"),
     UINT64_C(1) << 63, 4, NULL, 0, "truncated"},
    {"offsets past the end of the data", T1("\"F32\"", "[2]", "[0,8]"),
     UINT64_MAX, 4, NULL, 0, "'t'"},
    {"negative offset", T1("\"F32\"", "[1]", "[-4,0]"), UINT64_MAX, 4,
     NULL, 0, "'t'"},
    {"begin after end", T1("\"F32\"", "[0]", "[4,0]"), UINT64_MAX, 4,
     NULL, 0, "'t'"},
    {"three offsets", T1("\"F32\"", "[1]", "[0,4,8]"), UINT64_MAX, 4,
     NULL, 0, "'t'"},
    {"wrong byte count", T1("\"F32\"", "[3]", "[0,8]"), UINT64_MAX, 8,
     NULL, 0, "'t'"},
    {"negative shape", T1("\"F32\"", "[-1]", "[0,4]"), UINT64_MAX, 4,
     NULL, 0, "'t'"},
    {"fractional shape", T1("\"F32\"", "[1.5]", "[0,4]"), UINT64_MAX, 4,
     NULL, 0, "'1.5' at byte 37 of the file is not an integer"},
    {"whole shape written as a float", T1("\"F32\"", "[1.0]", "[0,4]"),
     UINT64_MAX, 4, NULL, 0, "'1.0' at byte 37 of the file is not an integer"},
    {"offset with an exponent", T1("\"F32\"", "[1]", "[0,4e0]"),
     UINT64_MAX, 4, NULL, 0, "'4e0' at byte 58 of the file is not an integer"},
    {"NUL in a tensor name",
     "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],"
     "\"data_offsets\":[0,4]}}", UINT64_MAX, 4, NULL, 0,
     "NUL character in the string at byte 9 of the file"},
    {"element count overflows",
     T1("\"F32\"", "[4294967296,4294967296,4294967296]", "[0,4]"),
     UINT64_MAX, 4, NULL, 0, "overflow"},
    {"shape entry of 1e300", T1("\"F32\"", "[1e300]", "[0,4]"), UINT64_MAX,
     4, NULL, 0, "'1e300' at byte 37 of the file is not an integer"},
    {"shape that is not an array", T1("\"F32\"", "4", "[0,4]"), UINT64_MAX,
     4, NULL, 0, "'t'"},
    {"unknown dtype", T1("\"Q7\"", "[1]", "[0,4]"), UINT64_MAX, 4, NULL, 0,
     "dtype"},
    {"dtype that is not a string", T1("7", "[1]", "[0,4]"), UINT64_MAX, 4,
     NULL, 0, "dtype"},
    {"missing data_offsets",
     "{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", UINT64_MAX, 4, NULL, 0,
     "data_offsets"},
    {"tensor entry that is not an object", "{\"t\":5}", UINT64_MAX, 0, NULL,
     0, "'t'"},
    {"overlapping ranges",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     UINT64_MAX, 12, NULL, 0, "overlaps"},
    {"two tensors on the same bytes",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
     UINT64_MAX, 4, NULL, 0, "overlaps"},
    {"gap between ranges",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     UINT64_MAX, 12, NULL, 0, "gap"},
    {"bytes after the last tensor", T1("\"F32\"", "[1]", "[0,4]"),
     UINT64_MAX, 9, NULL, 0, "after the last tensor"},
    {"duplicate tensor name",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     UINT64_MAX, 8, NULL, 0, "duplicate tensor 'a'"},
    {"duplicate tensor name on the same bytes",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
     UINT64_MAX, 4, NULL, 0, "duplicate tensor 'a'"},
    {"metadata value that is not a string",
     "{\"__metadata__\":{\"n\":1}}", UINT64_MAX, 0, NULL, 0, "__metadata__"},
    {"not JSON", "{this is not json}      ", UINT64_MAX, 0, NULL, 0, "JSON"},
    {"JSON array instead of an object", "[1,2,3]", UINT64_MAX, 0, NULL, 0,
     "JSON"},
    {"garbage after the JSON", "{} x", UINT64_MAX, 0, NULL, 0, "JSON"},
    {"header cut short", "{\"t\":{\"dtype\":\"F3", UINT64_MAX, 0, NULL, 0,
     "JSON"},
    {"empty file", NULL, 0, 0, "", 0, "truncated"},
    {"file shorter than the length field", NULL, 0, 0, "\x10\0\0", 3,
     "truncated"},
    {"Git LFS pointer", NULL, 0, 0,
     "version https://git-lfs.github.com/spec/v1\n"
     "oid sha256:4d7a214614ab2935c943f9e0ff69d22e"
     "adbb8f32b1258daaa5e2ca24d17e2393\n"
     "size 12345\n", 0, "Git LFS pointer"},
    {"torch.save zip archive", NULL, 0, 0,
     "PK\x03\x04\x14\0\0\0\0\0\0\0!\0archive/data.pkl", 30,
     "is a PyTorch file, not safetensors (convert it with resnet convert)"},
    {"legacy torch.save file", NULL, 0, 0,
     "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80", 16,
     "is a PyTorch file, not safetensors (convert it with resnet convert)"},
    {"bare pickle", NULL, 0, 0, "\x80\x04}\x94.", 5,
     "is a PyTorch file, not safetensors (convert it with resnet convert)"},
};

static void hostile_files_are_refused_naming_the_file(void **state) {
    char path[8192];
    size_t n = sizeof hostile_cases / sizeof hostile_cases[0];
    int n_bad = 0;

    (void)state;
    for (size_t i = 0; i < n; i++) {
        const struct hostile *h = &hostile_cases[i];
        struct rn_safetensors *st = (void *)1;
        struct resnet_error err = {0};
        int rc;

        snprintf(path, sizeof path, "%s/hostile-%02zu.safetensors", tmp_dir,
                 i);
        if (h->header) {
            write_raw(path, h->declared_len, h->header, h->n_data);
        } else {
            write_bytes(path, h->raw, h->raw_len ? h->raw_len
                                                 : strlen(h->raw));
        }
        rc = rn_safetensors_load(&st, path, &err);
        print_message("%-40s -> %s\n", h->what, err.msg);
        if (rc != RESNET_EFORMAT || st != NULL || !strstr(err.msg, path)
            || (h->needle && !strstr(err.msg, h->needle))) {
            print_error("%s: expected RESNET_EFORMAT and a message with "
                        "'%s' and '%s', got %d: %s\n", h->what, path,
                        h->needle ? h->needle : "", rc, err.msg);
            n_bad++;
        }
        if (rc == RESNET_OK) {
            rn_safetensors_free(st);
        }
    }
    if (n_bad) {
        fail_msg("%d of %zu hostile files were not refused properly", n_bad,
                 n);
    }
}

/*
 * Valid files that resemble refused ones load: a 128-byte header, whose
 * length starts with the byte 0x80 of a pickle, and a name holding the
 * six characters \u0000 (an escaped backslash), not a NUL.
 */
static void odd_but_valid_files_load(void **state) {
    char header[129], path[8192];
    struct rn_safetensors *st = NULL;
    struct resnet_error err = {0};
    int n;

    (void)state;
    n = snprintf(header, sizeof header, "%s",
                 "{\"a\\\\u0000\":{\"dtype\":\"F32\",\"shape\":[1],"
                 "\"data_offsets\":[0,4]}}");
    memset(header + n, ' ', 128 - (size_t)n);
    header[128] = '\0';
    tmp_path(path, sizeof path, "odd.safetensors");
    write_raw(path, UINT64_MAX, header, 4);
    if (rn_safetensors_load(&st, path, &err) != RESNET_OK) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(st->n_tensors, 1);
    assert_string_equal(st->tensors[0].name, "a\\u0000");
    rn_safetensors_free(st);
}

static void deeply_nested_header_is_refused(void **state) {
    size_t depth = 100000;
    char *header = malloc(2 * depth + 16);
    struct rn_safetensors *st = NULL;
    struct resnet_error err = {0};
    char path[8192];

    (void)state;
    assert_non_null(header);
    strcpy(header, "{\"t\":");
    memset(header + 5, '[', depth);
    memset(header + 5 + depth, ']', depth);
    strcpy(header + 5 + 2 * depth, "}");
    tmp_path(path, sizeof path, "deep.safetensors");
    write_raw(path, UINT64_MAX, header, 0);
    free(header);
    assert_int_equal(rn_safetensors_load(&st, path, &err), RESNET_EFORMAT);
    assert_non_null(strstr(err.msg, path));
}

static void missing_file_folder_and_fifo_report_eio(void **state) {
    struct rn_safetensors *st = NULL;
    struct resnet_error err = {0};
    char fifo[8192];

    (void)state;
    assert_int_equal(rn_safetensors_load(&st, "/nonexistent.safetensors",
                                         &err), RESNET_EIO);
    assert_int_equal(err.sys_errno, ENOENT);
    assert_string_equal(err.msg, "cannot open '/nonexistent.safetensors': "
                        "No such file or directory");
    assert_int_equal(rn_safetensors_load(&st, tmp_dir, &err), RESNET_EIO);
    assert_null(st);

    // A FIFO is refused at once instead of blocking for a writer.
    tmp_path(fifo, sizeof fifo, "fifo.safetensors");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(rn_safetensors_load(&st, fifo, &err), RESNET_EIO);
    assert_non_null(strstr(err.msg, fifo));
    assert_null(st);
}

static void unhandled_valid_dtype_is_unsupported(void **state) {
    struct rn_safetensors *st = NULL;
    struct resnet_error err = {0};
    char path[8192];

    (void)state;
    tmp_path(path, sizeof path, "u32.safetensors");
    write_raw(path, UINT64_MAX, T1("\"U32\"", "[1]", "[0,4]"), 4);
    assert_int_equal(rn_safetensors_load(&st, path, &err),
                     RESNET_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "U32"));
    assert_null(st);
}

/* ------------------------------------------------------------------ */
/* Shared cases                                                         */

/* Skips with the reason printed, or fails under RESNET_REQUIRE_ALL=1. */
static void skip_because(const char *fmt, const char *arg) {
    const char *require = getenv("RESNET_REQUIRE_ALL");

    print_message("SKIP: ");
    print_message(fmt, arg);
    print_message("\n");
    if (require && strcmp(require, "1") == 0) {
        fail_msg("RESNET_REQUIRE_ALL=1 forbids skipping");
    }
    skip();
}

/* $var/rel if that exists, else NULL after skipping (or failing). */
static bool shared_path(char *buf, size_t size, const char *var,
                        const char *rel) {
    const char *base = getenv(var);

    if (!base || !*base) {
        skip_because("%s is not set", var);
        return false;
    }
    snprintf(buf, size, "%s/%s", base, rel);
    if (access(buf, R_OK) != 0) {
        skip_because("'%s' not found (set RESNET_SHARED_DATA and "
                     "RESNET_SHARED_CASES)", buf);
        return false;
    }
    return true;
}

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "rb");
    char *text;
    long size;
    cJSON *json;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    size = ftell(f);
    rewind(f);
    text = malloc((size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
    text[size] = '\0';
    fclose(f);
    json = cJSON_Parse(text);
    free(text);
    assert_non_null(json);
    return json;
}

/* Checks every tensor of MANIFEST.json: shape, sum and first value. */
static void check_against_manifest(const char *file) {
    char path[8192], manifest_path[8192];
    struct rn_safetensors *st = NULL;
    struct resnet_error err = {0};
    cJSON *manifest, *tensors, *entry;
    int n_entries = 0;

    if (!shared_path(manifest_path, sizeof manifest_path,
                     "RESNET_SHARED_CASES", "weights/MANIFEST.json")
        || !shared_path(path, sizeof path, "RESNET_SHARED_CASES", file)) {
        return;
    }
    manifest = read_json(manifest_path);
    tensors = cJSON_GetObjectItemCaseSensitive(manifest, "tensors");
    assert_non_null(tensors);
    if (rn_safetensors_load(&st, path, &err) != RESNET_OK) {
        fail_msg("%s", err.msg);
    }

    cJSON_ArrayForEach(entry, tensors) {
        const struct rn_tensor *t = rn_safetensors_find(st, entry->string);
        cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
        double want_sum = cJSON_GetObjectItemCaseSensitive(entry,
                                                           "sum")->valuedouble;
        double want_first = cJSON_GetObjectItemCaseSensitive(
            entry, "first")->valuedouble;
        double sum = 0.0;
        float *values;

        if (!t) {
            fail_msg("%s: tensor '%s' missing", file, entry->string);
        }
        assert_int_equal(t->n_dims, cJSON_GetArraySize(shape));
        for (int d = 0; d < t->n_dims; d++) {
            assert_int_equal(t->shape[d],
                             cJSON_GetArrayItem(shape, d)->valueint);
        }
        values = malloc(sizeof *values * t->n_elems);
        assert_non_null(values);
        assert_int_equal(rn_tensor_to_f32(t, values, &err), RESNET_OK);
        for (size_t i = 0; i < t->n_elems; i++) {
            sum += values[i];
        }
        // Multiples of 1/8: the sums and values are exact, so equal.
        if (sum != want_sum || values[0] != want_first) {
            fail_msg("%s: '%s': expected sum %g and first %g, actual "
                     "sum %g and first %g", file, entry->string, want_sum,
                     want_first, sum, (double)values[0]);
        }
        free(values);
        n_entries++;
    }
    assert_int_equal(st->n_tensors, n_entries);
    rn_safetensors_free(st);
    cJSON_Delete(manifest);
}

static void tiny_f32_matches_manifest(void **state) {
    (void)state;
    check_against_manifest("weights/tiny_f32.safetensors");
}

static void tiny_bf16_matches_manifest(void **state) {
    (void)state;
    check_against_manifest("weights/tiny_bf16.safetensors");
}

static void shared_lfs_pointer_is_named_as_such(void **state) {
    char path[8192];
    struct rn_safetensors *st = NULL;
    struct resnet_error err = {0};

    (void)state;
    if (!shared_path(path, sizeof path, "RESNET_SHARED_CASES",
                     "weights/lfs_pointer.safetensors")) {
        return;
    }
    assert_int_equal(rn_safetensors_load(&st, path, &err), RESNET_EFORMAT);
    assert_null(st);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "Git LFS pointer"));
}

static void akamaster_resnet20_loads_all_entries(void **state) {
    char path[8192];
    struct rn_safetensors *st = NULL;
    struct resnet_error err = {0};
    const struct rn_tensor *t;
    float *values = NULL;
    size_t n_max = 0;

    (void)state;
    if (!shared_path(path, sizeof path, "RESNET_SHARED_DATA",
                     "weights/cifar10/akamaster-resnet20.safetensors")) {
        return;
    }
    if (rn_safetensors_load(&st, path, &err) != RESNET_OK) {
        fail_msg("%s", err.msg);
    }

    // 97 tensors plus __metadata__: 98 entries in the header.
    assert_int_equal(st->n_tensors, 97);
    assert_non_null(st->metadata_json);
    t = rn_safetensors_find(st, "conv1.weight");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 4);
    assert_true(t->shape[0] == 16 && t->shape[1] == 3 && t->shape[2] == 3
                && t->shape[3] == 3);

    // Every tensor converts, and holds finite values.
    for (int i = 0; i < st->n_tensors; i++) {
        n_max = st->tensors[i].n_elems > n_max ? st->tensors[i].n_elems
                                               : n_max;
    }
    values = malloc(sizeof *values * n_max);
    assert_non_null(values);
    for (int i = 0; i < st->n_tensors; i++) {
        t = &st->tensors[i];
        assert_int_equal(rn_tensor_to_f32(t, values, &err), RESNET_OK);
        for (size_t j = 0; j < t->n_elems; j++) {
            if (!isfinite(values[j])) {
                fail_msg("'%s'[%zu] is not finite", t->name, j);
            }
        }
    }
    free(values);
    rn_safetensors_free(st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            round_trip_keeps_f32_f16_bf16_i64_and_metadata, clean_tmp_dir),
        cmocka_unit_test_teardown(
            write_refuses_existing_file_unless_overwrite, clean_tmp_dir),
        cmocka_unit_test_teardown(failed_write_leaves_nothing_behind,
                                  clean_tmp_dir),
        cmocka_unit_test_teardown(
            atomic_file_appears_on_commit_with_umask_mode, clean_tmp_dir),
        cmocka_unit_test_teardown(
            atomic_commit_keeps_a_file_that_appeared_meanwhile,
            clean_tmp_dir),
        cmocka_unit_test_teardown(atomic_abort_leaves_nothing,
                                  clean_tmp_dir),
        cmocka_unit_test(all_bf16_patterns_widen_exactly),
        cmocka_unit_test(all_f16_patterns_widen_exactly),
        cmocka_unit_test(f64_narrows_to_nearest_even),
        cmocka_unit_test(integer_tensor_does_not_convert),
        cmocka_unit_test_teardown(unaligned_f32_data_loads_and_converts,
                                  clean_tmp_dir),
        cmocka_unit_test_teardown(hostile_files_are_refused_naming_the_file,
                                  clean_tmp_dir),
        cmocka_unit_test_teardown(odd_but_valid_files_load, clean_tmp_dir),
        cmocka_unit_test_teardown(deeply_nested_header_is_refused,
                                  clean_tmp_dir),
        cmocka_unit_test_teardown(missing_file_folder_and_fifo_report_eio,
                                  clean_tmp_dir),
        cmocka_unit_test_teardown(unhandled_valid_dtype_is_unsupported,
                                  clean_tmp_dir),
        cmocka_unit_test(tiny_f32_matches_manifest),
        cmocka_unit_test(tiny_bf16_matches_manifest),
        cmocka_unit_test(shared_lfs_pointer_is_named_as_such),
        cmocka_unit_test(akamaster_resnet20_loads_all_entries),
    };
    const char *tmp = getenv("TMPDIR");
    int n_failed;

    snprintf(tmp_dir, sizeof tmp_dir, "%s/test-safetensors.XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    n_failed = cmocka_run_group_tests(tests, NULL, NULL);
    clean_tmp_dir(NULL);
    rmdir(tmp_dir);
    return n_failed;
}
