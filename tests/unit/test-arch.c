/*
 * Model descriptions: the shipped ones unroll to the published parameter
 * and MAC counts, and bad descriptions fail with the JSON path named.
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
#include <unistd.h>

#include <cmocka.h>

#include "resnet.h"

static struct resnet_arch *load_model(const char *name) {
    const char *top = getenv("top_srcdir");
    char path[1024];
    struct resnet_error err = {0};
    struct resnet_arch *arch = NULL;
    int rc;

    snprintf(path, sizeof path, "%s/models/%s.json", top ? top : ".", name);
    rc = resnet_arch_load(&arch, path, &err);
    if (rc) {
        fail_msg("loading %s: %s", path, err.msg);
    }
    return arch;
}

static void totals(const struct resnet_arch *arch, size_t *params,
                   uint64_t *macs) {
    struct resnet_layer_info l;

    *params = 0;
    *macs = 0;
    for (int i = 0; i < resnet_arch_n_layers(arch); i++) {
        resnet_arch_layer(arch, i, &l);
        *params += l.n_params;
        *macs += l.n_macs;
    }
}

/* Published figures: torchvision's documentation for the ImageNet models
 * (parameters exact, GFLOPS as multiply-accumulates to two decimals). */
static void check_counts(const char *name, size_t want_params,
                         double want_gmacs) {
    struct resnet_arch *arch = load_model(name);
    size_t params;
    uint64_t macs;

    totals(arch, &params, &macs);
    if (params != want_params) {
        fail_msg("%s: %zu parameters, expected %zu", name, params,
                 want_params);
    }
    if (want_gmacs > 0 && (macs / 1e9 < want_gmacs - 0.005 ||
                           macs / 1e9 >= want_gmacs + 0.005)) {
        fail_msg("%s: %.4f G MACs, expected %.2f", name, macs / 1e9,
                 want_gmacs);
    }
    resnet_arch_free(arch);
}

static void imagenet_models_match_published_counts(void **state) {
    (void)state;
    check_counts("resnet18", 11689512, 1.81);
    check_counts("resnet34", 21797672, 3.66);
    check_counts("resnet50", 25557032, 4.09);
    check_counts("resnet101", 44549160, 7.80);
    check_counts("resnet152", 60192808, 11.51);
    check_counts("resnext50_32x4d", 25028904, 4.23);
    check_counts("resnext101_32x8d", 88791336, 16.41);
    check_counts("wide_resnet50_2", 68883240, 11.40);
    check_counts("wide_resnet101_2", 126886696, 22.75);
}

static void cifar_resnet20_is_027m_params_41m_macs(void **state) {
    struct resnet_arch *arch = load_model("cifar10-resnet20");
    size_t params;
    uint64_t macs;

    (void)state;
    totals(arch, &params, &macs);
    // 0.27 M in the paper; the exact figure is PyTorch's count.
    assert_int_equal(params, 269722);
    assert_true(macs > 40500000 && macs < 41500000);
    assert_int_equal(resnet_arch_n_classes(arch), 10);
    assert_string_equal(resnet_arch_labels(arch)[3], "cat");
    resnet_arch_free(arch);
}

static void resnet50_ends_in_2048_by_7x7(void **state) {
    struct resnet_arch *arch = load_model("resnet50");
    struct resnet_layer_info l;
    int n = resnet_arch_n_layers(arch);

    (void)state;
    resnet_arch_layer(arch, n - 2, &l);
    assert_int_equal(l.kind, RESNET_LAYER_AVGPOOL);
    assert_int_equal(l.c_in, 2048);
    assert_int_equal(l.h_in, 7);
    assert_int_equal(l.w_in, 7);
    resnet_arch_layer(arch, n - 1, &l);
    assert_int_equal(l.kind, RESNET_LAYER_LINEAR);
    assert_string_equal(l.name, "fc");
    assert_string_equal(resnet_arch_labels(arch)[207], "golden retriever");
    resnet_arch_free(arch);
}

static void stride_on_1x1_moves_the_stride(void **state) {
    struct resnet_arch *arch = load_model("resnet50");
    struct resnet_layer_info l;

    (void)state;
    // layer2.0.conv2 is the strided 3x3 in torchvision's placement.
    for (int i = 0; i < resnet_arch_n_layers(arch); i++) {
        resnet_arch_layer(arch, i, &l);
        if (strcmp(l.name, "layer2.0.conv2") == 0) {
            assert_int_equal(l.stride, 2);
            assert_int_equal(l.h_out, 28);
        }
        if (strcmp(l.name, "layer2.0.conv1") == 0) {
            assert_int_equal(l.stride, 1);
        }
    }
    resnet_arch_free(arch);
}

/*
 * Writes text to a temporary description file and loads it; path (at
 * least 24 bytes) receives the file's name.
 */
static int load_text(const char *text, char *path,
                     struct resnet_error *err) {
    int fd;
    struct resnet_arch *arch = NULL;
    int rc;

    strcpy(path, "/tmp/resnet-desc-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    rc = resnet_arch_load(&arch, path, err);
    unlink(path);
    resnet_arch_free(arch);
    return rc;
}

#define VALID_HEAD                                                         \
    "{\"name\": \"t\", \"input\": {\"height\": 32, \"width\": 32},"       \
    "\"preprocess\": {\"crop\": 32, \"mean\": [0, 0, 0],"                 \
    "\"std\": [1, 1, 1]},"                                               \
    "\"stem\": {\"conv\": {\"channels\": 8, \"kernel\": 3}},"

/* Loading text fails with "bad description '<file>': <want>...". */
static void expect_error(const char *text, const char *want) {
    struct resnet_error err = {0};
    char path[32], head[256];
    int rc = load_text(text, path, &err);

    snprintf(head, sizeof head, "bad description '%s': %s", path, want);
    if (rc == RESNET_OK || strncmp(err.msg, head, strlen(head)) != 0) {
        fail_msg("expected an error starting '%s', got %d '%s'", head, rc,
                 err.msg);
    }
}

static void bad_descriptions_name_the_json_path(void **state) {
    (void)state;
    expect_error("{", "not valid JSON");
    expect_error("[]", "(top level): expected an object");
    expect_error("{} x", "text after the JSON value (at byte 3)");
    expect_error("{}\n{}", "text after the JSON value (at byte 3)");
    expect_error("{\"name\": \"a\", \"name\": \"b\"}", "name: duplicate key");
    expect_error(VALID_HEAD "\"block\": {\"type\": \"basic\"},"
                 "\"stages\": [{\"blocks\": 1, \"planes\": 8}, {\"blocks\": 1,"
                 "\"planes\": 8, \"blocks\": 2}],"
                 "\"head\": {\"fc\": {\"classes\": 2}}}",
                 "stages[1].blocks: duplicate key");
    expect_error(VALID_HEAD "\"block\": {\"type\": \"basic\"},"
                 "\"stages\": [{\"blocks\": 1, \"planes\": 8},"
                 "{\"blocks\": 1, \"planes\": 8}, {\"blocks\": 0, "
                 "\"planes\": 8}], \"head\": {\"fc\": {\"classes\": 2}}}",
                 "stages[2].blocks: expected a positive integer");
    expect_error(VALID_HEAD "\"block\": {\"type\": \"triple\"},"
                 "\"stages\": [{\"blocks\": 1, \"planes\": 8}],"
                 "\"head\": {\"fc\": {\"classes\": 2}}}",
                 "block.type: expected \"basic\" or \"bottleneck\"");
    expect_error(VALID_HEAD "\"block\": {\"type\": \"basic\"},"
                 "\"stages\": [{\"blocks\": 1, \"planes\": 8}],"
                 "\"head\": {\"fc\": {}}}",
                 "head.fc.classes: missing");
    expect_error(VALID_HEAD "\"block\": {\"type\": \"basic\"},"
                 "\"stages\": [{\"blocks\": 1.5, \"planes\": 8}],"
                 "\"head\": {\"fc\": {\"classes\": 2}}}",
                 "stages[0].blocks: expected a positive integer of at most "
                 "65536");
    expect_error(VALID_HEAD "\"block\": {\"type\": \"basic\"},"
                 "\"stages\": [{\"blocks\": 1, \"planes\": 65537}],"
                 "\"head\": {\"fc\": {\"classes\": 2}}}",
                 "stages[0].planes: expected a positive integer of at most "
                 "65536");
    expect_error("{\"name\": \"t\", \"input\": {\"height\": 32, \"width\": "
                 "32}, \"preprocess\": {\"crop\": 32, \"mean\": [0, 0],"
                 "\"std\": [1, 1, 1]}}",
                 "preprocess.mean: expected an array of 3 numbers");
    expect_error("{\"name\": \"t\", \"input\": {\"height\": 32, \"width\": "
                 "32}, \"preprocess\": {\"crop\": 32, \"mean\": [0, 0, 0],"
                 "\"std\": [1, 0, 1]}}",
                 "preprocess.std[1]: expected a positive number");
}

static void a_too_small_input_is_refused(void **state) {
    static const char text[] =
        "{\"name\": \"t\", \"input\": {\"height\": 32, \"width\": 32},"
        "\"preprocess\": {\"crop\": 32, \"mean\": [0, 0, 0],"
        "\"std\": [1, 1, 1]}, \"stem\": {\"conv\": {\"channels\": 8,"
        "\"kernel\": 7, \"padding\": 0}}, \"block\": {\"type\": \"basic\"},"
        "\"stages\": [{\"blocks\": 1, \"planes\": 8}],"
        "\"head\": {\"fc\": {\"classes\": 2}}}";
    char path[] = "/tmp/resnet-desc-XXXXXX";
    int fd = mkstemp(path);
    struct resnet_arch *arch = NULL;
    struct resnet_error err = {0};
    int c, h, w;

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(resnet_arch_load(&arch, path, &err), RESNET_OK);
    unlink(path);

    // A 7x7 conv without padding does not fit in 6x6.
    assert_int_equal(resnet_arch_set_input(arch, 6, 6, &err), RESNET_EINVAL);
    assert_non_null(strstr(err.msg, "too small"));
    // The architecture is still whole at its own size.
    resnet_arch_input(arch, &c, &h, &w);
    assert_int_equal(h, 32);
    assert_int_equal(resnet_arch_set_input(arch, 7, 7, &err), RESNET_OK);
    resnet_arch_free(arch);
}

/*
 * Writes a two-class description naming the label file "labels.txt", and
 * that file holding labels unless labels is NULL, into the new folder
 * dir (at least 32 bytes); returns the description's path in desc.
 */
static void write_labelled(char *dir, char *desc, size_t size,
                           const char *labels) {
    static const char text[] =
        VALID_HEAD "\"block\": {\"type\": \"basic\"},"
        "\"stages\": [{\"blocks\": 1, \"planes\": 8}],"
        "\"head\": {\"fc\": {\"classes\": 2}}, \"labels\": \"labels.txt\"}";
    char path[1024];
    FILE *f;

    strcpy(dir, "/tmp/resnet-labels-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(desc, size, "%s/t.json", dir);
    f = fopen(desc, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    if (labels) {
        snprintf(path, sizeof path, "%s/labels.txt", dir);
        f = fopen(path, "w");
        assert_non_null(f);
        fputs(labels, f);
        assert_int_equal(fclose(f), 0);
    }
}

/* Removes what write_labelled() made. */
static void remove_labelled(const char *dir) {
    char path[1024];

    snprintf(path, sizeof path, "%s/t.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/labels.txt", dir);
    unlink(path);
    rmdir(dir);
}

static void byte_order_mark_is_not_part_of_a_label(void **state) {
    struct resnet_arch *arch = NULL;
    struct resnet_error err = {0};
    char dir[32], desc[1024];
    const char *const *labels;

    (void)state;
    write_labelled(dir, desc, sizeof desc, "\xef\xbb\xbf" "cat\r\ndog\r\n");
    if (resnet_arch_load(&arch, desc, &err) != RESNET_OK) {
        fail_msg("loading %s: %s", desc, err.msg);
    }
    remove_labelled(dir);
    labels = resnet_arch_labels(arch);
    assert_non_null(labels);
    assert_string_equal(labels[0], "cat");
    assert_string_equal(labels[1], "dog");
    resnet_arch_free(arch);
}

/* The last warning the library logged, for the tests below. */
static char last_warning[512];

static void keep_warning(void *ctx, int level, const char *msg) {
    (void)ctx;
    if (level == RESNET_LOG_WARN) {
        snprintf(last_warning, sizeof last_warning, "%s", msg);
    }
}

/* Labels only name classes: without the file the model still loads. */
static void missing_label_file_is_a_warning(void **state) {
    struct resnet_arch *arch = NULL;
    struct resnet_error err = {0};
    char dir[32], desc[1024];
    int rc;

    (void)state;
    write_labelled(dir, desc, sizeof desc, NULL);
    last_warning[0] = '\0';
    resnet_set_log(keep_warning, NULL, RESNET_LOG_WARN);
    rc = resnet_arch_load(&arch, desc, &err);
    resnet_set_log(NULL, NULL, 0);
    remove_labelled(dir);
    if (rc != RESNET_OK) {
        fail_msg("loading %s: %s", desc, err.msg);
    }
    assert_null(resnet_arch_labels(arch));
    assert_string_equal(last_warning, "cannot find label file 'labels.txt' "
                                      "for 't': printing class indices");
    resnet_arch_free(arch);
}

/* A label file that is there but wrong stays an error. */
static void short_or_unreadable_label_file_is_an_error(void **state) {
    struct resnet_arch *arch = NULL;
    struct resnet_error err = {0};
    char dir[32], desc[1024], path[1024], want[1200];

    (void)state;
    write_labelled(dir, desc, sizeof desc, "cat\n");
    assert_int_equal(resnet_arch_load(&arch, desc, &err), RESNET_EFORMAT);
    assert_null(arch);
    snprintf(want, sizeof want, "label file '%s/labels.txt' has fewer "
             "lines than the 2 classes of 't'", dir);
    assert_string_equal(err.msg, want);

    // A FIFO in its place is refused at once, not waited on.
    snprintf(path, sizeof path, "%s/labels.txt", dir);
    unlink(path);
    assert_int_equal(mkfifo(path, 0600), 0);
    alarm(10);
    assert_int_equal(resnet_arch_load(&arch, desc, &err), RESNET_EIO);
    alarm(0);
    remove_labelled(dir);
    assert_null(arch);
    snprintf(want, sizeof want, "cannot read label file '%s': not a regular "
             "file", path);
    assert_string_equal(err.msg, want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(imagenet_models_match_published_counts),
        cmocka_unit_test(cifar_resnet20_is_027m_params_41m_macs),
        cmocka_unit_test(resnet50_ends_in_2048_by_7x7),
        cmocka_unit_test(stride_on_1x1_moves_the_stride),
        cmocka_unit_test(bad_descriptions_name_the_json_path),
        cmocka_unit_test(a_too_small_input_is_refused),
        cmocka_unit_test(byte_order_mark_is_not_part_of_a_label),
        cmocka_unit_test(missing_label_file_is_a_warning),
        cmocka_unit_test(short_or_unreadable_label_file_is_an_error),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
