/*
 * The weights check: a good file passes with its dtypes counted; every
 * problem is reported once, in layer order then file order; the same
 * check runs on tensors in memory; the model loader stops at the first
 * problem and names the file.
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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "internal.h"

/* Two basic blocks, 4 and 8 channels: an identity and a projection. */
static const char tiny_json[] =
    "{\"name\": \"tiny\", \"input\": {\"channels\": 3, \"height\": 16,"
    " \"width\": 16}, \"preprocess\": {\"resize\": 0, \"crop\": 16,"
    " \"mean\": [0.5, 0.5, 0.5], \"std\": [0.25, 0.25, 0.25]},"
    " \"stem\": {\"conv\": {\"name\": \"conv1\", \"channels\": 4,"
    " \"kernel\": 3}, \"bn\": {\"name\": \"bn1\"}},"
    " \"block\": {\"type\": \"basic\", \"shortcut\": \"projection\"},"
    " \"stages\": [{\"name\": \"layer1\", \"blocks\": 1, \"planes\": 4},"
    " {\"name\": \"layer2\", \"blocks\": 1, \"planes\": 8, \"stride\": 2}],"
    " \"head\": {\"pool\": \"avg\", \"fc\": {\"name\": \"fc\","
    " \"classes\": 3}}}";

#define MAX_TENSORS 64
#define MAX_PROBLEMS 16

/* A weights file being made: tensors with their own F32 data. */
struct file {
    int n;
    struct rn_tensor t[MAX_TENSORS];
    char names[MAX_TENSORS][160];
    float *data[MAX_TENSORS];
};

/* What the callback saw. */
struct seen {
    int n;
    enum resnet_problem_kind kind[MAX_PROBLEMS];
    char msg[MAX_PROBLEMS][256];
};

static char tmp_dir[] = "/tmp/test-check.XXXXXX";
static char json_path[4200];
static struct resnet_arch *arch;

static int setup(void **state) {
    FILE *f;

    (void)state;
    if (!mkdtemp(tmp_dir)) {
        return -1;
    }
    snprintf(json_path, sizeof json_path, "%s/tiny.json", tmp_dir);
    f = fopen(json_path, "w");
    if (!f || fputs(tiny_json, f) < 0 || fclose(f)) {
        return -1;
    }
    return resnet_arch_load(&arch, json_path, NULL);
}

static int teardown(void **state) {
    char cmd[4300];

    (void)state;
    resnet_arch_free(arch);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void on_problem(void *ctx, const struct resnet_problem *p) {
    struct seen *s = ctx;

    assert_true(s->n < MAX_PROBLEMS);
    s->kind[s->n] = p->kind;
    snprintf(s->msg[s->n], sizeof s->msg[0], "%s", p->msg);
    s->n++;
}

/* The callback saw n problems, of the kinds in want. */
static void expect_kinds(const struct seen *s,
                         const enum resnet_problem_kind *want, int n) {
    for (int i = 0; i < s->n && i < n; i++) {
        if (s->kind[i] != want[i]) {
            fail_msg("problem %d: kind %d, expected %d (%s)", i, s->kind[i],
                     want[i], s->msg[i]);
        }
    }
    assert_int_equal(s->n, n);
}

/* Appends an F32 tensor of the given shape, values 0.25 (1.0 for
 * variances); returns its index. */
static int add_tensor(struct file *f, const char *name, int n_dims,
                      const int64_t *shape) {
    struct rn_tensor *t = &f->t[f->n];
    size_t n = 1;
    size_t len = strlen(name);
    bool is_var = len > 12 && strcmp(name + len - 12, ".running_var") == 0;

    assert_true(f->n < MAX_TENSORS);
    for (int d = 0; d < n_dims; d++) {
        n *= (size_t)shape[d];
        t->shape[d] = shape[d];
    }
    snprintf(f->names[f->n], sizeof f->names[0], "%s", name);
    f->data[f->n] = malloc(n * sizeof(float));
    assert_non_null(f->data[f->n]);
    for (size_t i = 0; i < n; i++) {
        f->data[f->n][i] = is_var ? 1.0f : 0.25f;
    }
    t->name = f->names[f->n];
    t->dtype = RN_DTYPE_F32;
    t->n_dims = n_dims;
    t->n_elems = n;
    t->data = f->data[f->n];
    t->n_bytes = n * sizeof(float);
    return f->n++;
}

/* The file the architecture asks for, every tensor as it should be. */
static void make_good(struct file *f) {
    struct rn_expected *e = NULL;
    int n = 0;

    memset(f, 0, sizeof *f);
    assert_int_equal(rn_arch_expected(arch, &e, &n, NULL), RESNET_OK);
    for (int i = 0; i < n; i++) {
        add_tensor(f, e[i].name, e[i].n_dims, e[i].shape);
    }
    free(e);
}

static int find(const struct file *f, const char *name) {
    for (int i = 0; i < f->n; i++) {
        if (strcmp(f->names[i], name) == 0) {
            return i;
        }
    }
    fail_msg("no tensor '%s' in the test file", name);
    return -1;
}

/* Writes f as path and frees its data. */
static void write_file(struct file *f, const char *path) {
    struct resnet_error err = {0};
    int rc = rn_safetensors_write(path, f->t, f->n, NULL, 0, true, &err);

    if (rc) {
        fail_msg("writing %s: %s", path, err.msg);
    }
    for (int i = 0; i < f->n; i++) {
        free(f->data[i]);
    }
}

static void good_file_passes_with_sizes_by_dtype(void **state) {
    struct file f;
    struct resnet_weights_summary s;
    struct seen seen = {0};
    char path[4300];
    struct stat sb;
    int n;

    (void)state;
    make_good(&f);
    n = f.n;
    snprintf(path, sizeof path, "%s/good.safetensors", tmp_dir);
    write_file(&f, path);
    assert_int_equal(resnet_weights_check(arch, path, on_problem, &seen, &s,
                                          NULL),
                     RESNET_OK);
    assert_int_equal(seen.n, 0);
    assert_int_equal(s.n_problems, 0);
    assert_int_equal(s.n_tensors, n);
    assert_int_equal(s.n_dtypes, 1);
    assert_string_equal(s.dtypes[0].name, "F32");
    assert_int_equal(s.dtypes[0].n_bytes, 4 * s.dtypes[0].n_elems);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(s.file_size, sb.st_size);
}

/* Tensors with one of each problem, in an order the report must fix. */
static void make_bad_tensors(struct file *f) {
    static const int64_t wrong[] = {4, 3, 3};
    int i;

    make_good(f);
    assert_int_equal(find(f, "fc.bias"), f->n - 1);
    free(f->data[--f->n]); // fc.bias, the last tensor
    add_tensor(f, "stray", 3, wrong);
    f->t[find(f, "conv1.weight")].n_dims = 3; // 4x3x3, not 4x3x3x3
    f->t[find(f, "conv1.weight")].n_elems = 36;
    f->t[find(f, "conv1.weight")].n_bytes = 144;
    f->data[find(f, "layer1.0.conv2.weight")][5] = NAN;
    f->data[find(f, "layer1.0.conv2.weight")][9] = -INFINITY;
    i = find(f, "layer2.0.bn1.running_var");
    f->data[i][3] = -0.0f; // zero of either sign is no variance
    f->data[i][4] = 1e-40f; // a positive subnormal is one
    f->t[find(f, "fc.weight")].dtype = RN_DTYPE_I32;
}

/* The bad tensors as a file at path. */
static void make_bad(const char *path) {
    struct file f;

    make_bad_tensors(&f);
    write_file(&f, path);
}

static void every_problem_is_reported_in_order(void **state) {
    static const enum resnet_problem_kind want[] = {
        RESNET_PROBLEM_SHAPE,      RESNET_PROBLEM_VALUES,
        RESNET_PROBLEM_VARIANCE,   RESNET_PROBLEM_DTYPE,
        RESNET_PROBLEM_MISSING,    RESNET_PROBLEM_UNEXPECTED,
    };
    struct resnet_weights_summary s;
    struct resnet_error err = {0};
    struct seen seen = {0};
    char path[4300];

    (void)state;
    snprintf(path, sizeof path, "%s/bad.safetensors", tmp_dir);
    make_bad(path);
    assert_int_equal(resnet_weights_check(arch, path, on_problem, &seen, &s,
                                          &err),
                     RESNET_ESHAPE);
    expect_kinds(&seen, want, 6);
    assert_int_equal(s.n_problems, 6);
    assert_string_equal(err.msg, seen.msg[0]);
    assert_string_equal(seen.msg[0], "bad shape for 'conv1.weight' "
                                     "(expected 4x3x3x3, got 4x3x3)");
    assert_string_equal(seen.msg[1], "bad values for 'layer1.0.conv2.weight'"
                                     " (1 NaN and 1 Inf of 144, first at "
                                     "index 5)");
    assert_string_equal(seen.msg[2], "bad variance for "
                                     "'layer2.0.bn1.running_var' (1 of 8 "
                                     "not above zero, first -0 at index 3)");
    assert_string_equal(seen.msg[3], "bad dtype for 'fc.weight' (expected "
                                     "F32, F16 or BF16, got I32)");
    assert_string_equal(seen.msg[4], "missing tensor 'fc.bias'");
    assert_string_equal(seen.msg[5], "unexpected tensor 'stray'");
}

/*
 * The check on tensors in memory (as convert has them): with
 * shapes_only, dtypes and values are no problem; the file is named in
 * every message; the summary counts the list and leaves file_size 0.
 */
static void tensor_list_check_names_its_file_and_can_skip_values(
    void **state) {
    static const enum resnet_problem_kind want[] = {
        RESNET_PROBLEM_SHAPE, RESNET_PROBLEM_MISSING,
        RESNET_PROBLEM_UNEXPECTED,
    };
    struct resnet_weights_summary s;
    struct resnet_error err = {0};
    struct seen shapes = {0}, all = {0};
    struct file f;

    (void)state;
    make_bad_tensors(&f);
    assert_int_equal(rn_weights_check(arch, f.t, f.n, "in.pth", true,
                                      on_problem, &shapes, &s, &err),
                     RESNET_ESHAPE);
    expect_kinds(&shapes, want, 3);
    assert_int_equal(s.n_problems, 3);
    assert_int_equal(s.n_tensors, f.n);
    assert_int_equal(s.file_size, 0);
    assert_string_equal(err.msg, "bad shape for 'conv1.weight' in 'in.pth' "
                                 "(expected 4x3x3x3, got 4x3x3)");
    assert_string_equal(shapes.msg[1], "missing tensor 'fc.bias' in "
                                       "'in.pth'");
    assert_string_equal(shapes.msg[2], "unexpected tensor 'stray' in "
                                       "'in.pth'");

    assert_int_equal(rn_weights_check(arch, f.t, f.n, "in.pth", false,
                                      on_problem, &all, NULL, NULL),
                     RESNET_ESHAPE);
    assert_int_equal(all.n, 6);
    assert_string_equal(all.msg[1], "bad values for 'layer1.0.conv2.weight'"
                                    " in 'in.pth' (1 NaN and 1 Inf of 144, "
                                    "first at index 5)");
    for (int i = 0; i < f.n; i++) {
        free(f.data[i]);
    }
}

static void model_load_stops_at_the_first_problem(void **state) {
    struct resnet_arch *a = NULL;
    struct resnet_model *m = NULL;
    struct resnet_error err = {0};
    char path[4300], want[4600];

    (void)state;
    snprintf(path, sizeof path, "%s/bad.safetensors", tmp_dir);
    make_bad(path);
    assert_int_equal(resnet_arch_load(&a, json_path, NULL), RESNET_OK);
    assert_int_equal(resnet_model_load(&m, a, path, &err), RESNET_ESHAPE);
    assert_null(m);
    snprintf(want, sizeof want, "bad shape for 'conv1.weight' in '%s' "
             "(expected 4x3x3x3, got 4x3x3)", path);
    assert_string_equal(err.msg, want);
}

static void unreadable_file_reports_no_problems(void **state) {
    struct resnet_weights_summary s;
    struct resnet_error err = {0};
    struct seen seen = {0};
    char path[4300];

    (void)state;
    snprintf(path, sizeof path, "%s/none.safetensors", tmp_dir);
    assert_int_equal(resnet_weights_check(arch, path, on_problem, &seen, &s,
                                          &err),
                     RESNET_EIO);
    assert_int_equal(seen.n, 0);
    assert_int_equal(s.n_tensors, 0);
    assert_non_null(strstr(err.msg, "cannot open"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_file_passes_with_sizes_by_dtype),
        cmocka_unit_test(every_problem_is_reported_in_order),
        cmocka_unit_test(tensor_list_check_names_its_file_and_can_skip_values),
        cmocka_unit_test(model_load_stops_at_the_first_problem),
        cmocka_unit_test(unreadable_file_reports_no_problems),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
