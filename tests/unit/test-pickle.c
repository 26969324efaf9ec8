/*
 * The pickle reader on hand-assembled pickles: the opcodes torch.save
 * writes, refusal of every global a state_dict does not need, and bounds
 * on truncated, deep and random input.
 */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

/* Pickles as strings: they hold NULs, so sizeof - 1 is the length. */
#define PK(s) (const unsigned char *)(s), sizeof(s) - 1

/*
 * torch.save({"w": tensor(2, 3) in a FloatStorage "0" of 8 elements at
 * offset 1, strides (1, 2)}) as protocol 2 writes it.
 */
static const char state_dict_p2[] =
    "\x80\x02"
    "ccollections\nOrderedDict\nq\x00)Rq\x01("
    "X\x01\x00\x00\x00wq\x02"
    "ctorch._utils\n_rebuild_tensor_v2\nq\x03("
    "(X\x07\x00\x00\x00storageq\x04" "ctorch\nFloatStorage\nq\x05"
    "X\x01\x00\x00\x00" "0q\x06X\x06\x00\x00\x00" "cuda:0q\x07K\x08tq\x08Q"
    "K\x01K\x02K\x03\x86q\x09K\x01K\x02\x86q\x0a\x89h\x00)Rq\x0btq\x0cR"
    "u.";

static int load(struct rn_pickle **p, const unsigned char *buf, size_t len,
                struct resnet_error *err) {
    memset(err, 0, sizeof *err);
    return rn_pickle_load(p, buf, len, "x.pth", NULL, err);
}

static void protocol2_state_dict_gives_tensor_view(void **state) {
    struct rn_pickle *p;
    struct resnet_error err;
    const struct rn_pval *t, *s;

    (void)state;
    assert_int_equal(load(&p, PK(state_dict_p2), &err), RESNET_OK);
    assert_int_equal(p->root->kind, RN_PV_DICT);
    assert_int_equal(p->root->u.seq.n, 2);
    t = rn_pval_get(p->root, "w");
    assert_non_null(t);
    assert_int_equal(t->kind, RN_PV_TENSOR);
    assert_int_equal(t->u.tensor.n_dims, 2);
    assert_int_equal(t->u.tensor.shape[0], 2);
    assert_int_equal(t->u.tensor.shape[1], 3);
    assert_int_equal(t->u.tensor.stride[0], 1);
    assert_int_equal(t->u.tensor.stride[1], 2);
    assert_int_equal(t->u.tensor.offset, 1);
    s = t->u.tensor.storage;
    assert_int_equal(s->kind, RN_PV_STORAGE);
    assert_int_equal(s->u.storage.dtype, RN_DTYPE_F32);
    assert_string_equal(s->u.storage.key, "0");
    assert_string_equal(s->u.storage.location, "cuda:0");
    assert_int_equal(s->u.storage.numel, 8);
    rn_pickle_free(p);
}

static void protocol4_frame_memoize_stack_global(void **state) {
    // {"a": [1, -2, 3.5, b"xy", None, True], "a2": <same list>}
    static const char pk[] =
        "\x80\x04\x95\x30\x00\x00\x00\x00\x00\x00\x00"
        "}\x94(\x8c\x01" "a\x94]\x94(K\x01J\xfe\xff\xff\xff"
        "G\x40\x0c\x00\x00\x00\x00\x00\x00" "C\x02xy\x94N\x88" "e"
        "\x8c\x02" "a2h\x02u.";
    struct rn_pickle *p;
    struct resnet_error err;
    const struct rn_pval *a, *a2;

    (void)state;
    assert_int_equal(load(&p, PK(pk), &err), RESNET_OK);
    a = rn_pval_get(p->root, "a");
    a2 = rn_pval_get(p->root, "a2");
    assert_non_null(a);
    assert_ptr_equal(a, a2);
    assert_int_equal(a->kind, RN_PV_LIST);
    assert_int_equal(a->u.seq.n, 6);
    assert_int_equal(a->u.seq.items[0]->u.i, 1);
    assert_int_equal(a->u.seq.items[1]->u.i, -2);
    assert_true(a->u.seq.items[2]->u.f == 3.5);
    assert_int_equal(a->u.seq.items[3]->kind, RN_PV_BYTES);
    assert_memory_equal(a->u.seq.items[3]->u.str.s, "xy", 2);
    assert_int_equal(a->u.seq.items[4]->kind, RN_PV_NONE);
    assert_true(a->u.seq.items[5]->u.b);
    rn_pickle_free(p);
}

static void long1_sign_extends_and_keeps_wide_ints(void **state) {
    // [LONG1 -129 (2 bytes), LONG1 of 10 bytes (torch's magic number)]
    static const char pk[] =
        "\x80\x02]q\x00(\x8a\x02\x7f\xff"
        "\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19" "e.";
    struct rn_pickle *p;
    struct resnet_error err;

    (void)state;
    assert_int_equal(load(&p, PK(pk), &err), RESNET_OK);
    assert_int_equal(p->root->u.seq.items[0]->u.i, -129);
    assert_int_equal(p->root->u.seq.items[1]->kind, RN_PV_BIGINT);
    assert_int_equal(p->root->u.seq.items[1]->u.str.len, 10);
    rn_pickle_free(p);
}

/* Loads pk, expects code and the exact message. */
static void expect_refusal(const unsigned char *pk, size_t len, int code,
                           const char *msg) {
    struct rn_pickle *p = (struct rn_pickle *)1;
    struct resnet_error err;

    assert_int_equal(load(&p, pk, len, &err), code);
    assert_null(p);
    if (strcmp(err.msg, msg) != 0) {
        print_error("expected message: %s\nactual message:   %s\n", msg,
                    err.msg);
        fail();
    }
}

static void posix_system_global_is_refused(void **state) {
    (void)state;
    expect_refusal(PK("\x80\x02" "cposix\nsystem\nX\x04\x00\x00\x00touch"
                      "\x85R."),
                   RESNET_EUNSUPPORTED,
                   "refusing global 'posix.system' in 'x.pth': not needed "
                   "by a state_dict");
}

static void builtins_eval_by_stack_global_is_refused(void **state) {
    (void)state;
    expect_refusal(PK("\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93."),
                   RESNET_EUNSUPPORTED,
                   "refusing global 'builtins.eval' in 'x.pth': not needed "
                   "by a state_dict");
}

static void calling_an_allowed_class_is_refused(void **state) {
    (void)state;
    expect_refusal(PK("\x80\x02" "ctorch\nFloatStorage\n)R."),
                   RESNET_EUNSUPPORTED,
                   "refusing to call 'FloatStorage' in 'x.pth': not needed "
                   "by a state_dict");
}

static void persistent_id_other_than_storage_is_refused(void **state) {
    (void)state;
    expect_refusal(PK("\x80\x02X\x06\x00\x00\x00module\x85Q."),
                   RESNET_EUNSUPPORTED,
                   "unsupported persistent id in 'x.pth' at offset 14: not "
                   "a storage");
}

static void unknown_opcode_is_named(void **state) {
    (void)state;
    expect_refusal(PK("\x80\x02\x82\x01."), RESNET_EUNSUPPORTED,
                   "unsupported pickle opcode 0x82 at offset 2 in 'x.pth'");
}

static void deep_list_nesting_is_refused(void **state) {
    size_t n = 100000, len = 2 + n + (n - 1) + 1;
    unsigned char *pk = malloc(len);
    struct rn_pickle *p;
    struct resnet_error err;

    (void)state;
    assert_non_null(pk);
    pk[0] = 0x80;
    pk[1] = 2;
    memset(pk + 2, ']', n);
    memset(pk + 2 + n, 'a', n - 1);
    pk[len - 1] = '.';
    assert_int_equal(load(&p, pk, len, &err), RESNET_EUNSUPPORTED);
    assert_null(p);
    assert_non_null(strstr(err.msg, "nests deeper than"));
    free(pk);
}

static void deep_mark_nesting_is_refused(void **state) {
    unsigned char pk[2 + 1000 + 1];
    struct rn_pickle *p;
    struct resnet_error err;

    (void)state;
    pk[0] = 0x80;
    pk[1] = 2;
    memset(pk + 2, '(', 1000);
    pk[sizeof pk - 1] = '.';
    assert_int_equal(load(&p, pk, sizeof pk, &err), RESNET_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "nests deeper than"));
}

static void huge_memo_index_is_refused(void **state) {
    (void)state;
    expect_refusal(PK("\x80\x02Nr\xff\xff\xff\x7f."), RESNET_EUNSUPPORTED,
                   "pickle in 'x.pth' uses memo index 2147483647 (at most "
                   "4194303)");
}

static void string_longer_than_input_is_refused(void **state) {
    (void)state;
    expect_refusal(PK("\x80\x02X\xff\xff\xff\xff" "abc."), RESNET_EFORMAT,
                   "truncated pickle in 'x.pth': string at offset 2 claims "
                   "4294967295 bytes, 4 left");
}

/*
 * _rebuild_tensor_v2((storage "0" of numel floats), offset, size, stride,
 * False, None) from pickle fragments, so each test can spoil one part.
 */
#define TENSOR_PK(numel, offset, size, stride)                             \
    "\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n("                      \
    "(X\x07\x00\x00\x00storage" "ctorch\nFloatStorage\n"                   \
    "X\x01\x00\x00\x00" "0" "X\x03\x00\x00\x00" "cpu" numel "tQ"          \
    offset size stride "\x89NtR."

static void negative_storage_offset_is_named(void **state) {
    (void)state;
    expect_refusal(PK(TENSOR_PK("K\x04", "J\xfe\xff\xff\xff", "K\x04\x85",
                                "K\x01\x85")),
                   RESNET_EFORMAT,
                   "bad tensor in 'x.pth' at offset 101: storage offset -2 is "
                   "out of range (0 to 2^50)");
}

static void negative_size_and_stride_are_named(void **state) {
    (void)state;
    expect_refusal(PK(TENSOR_PK("K\x04", "K\x00", "J\xfc\xff\xff\xff\x85",
                                "K\x01\x85")),
                   RESNET_EFORMAT,
                   "bad tensor in 'x.pth' at offset 101: size -4 of dimension "
                   "0 is out of range (0 to 2^50)");
    expect_refusal(PK(TENSOR_PK("K\x04", "K\x00", "K\x02K\x02\x86",
                                "K\x02J\xff\xff\xff\xff\x86")),
                   RESNET_EFORMAT,
                   "bad tensor in 'x.pth' at offset 105: stride -1 of "
                   "dimension 1 is out of range (0 to 2^50)");
    expect_refusal(PK(TENSOR_PK("K\x04", "K\x00", "K\x02K\x02\x86",
                                "K\x01\x85")),
                   RESNET_EFORMAT,
                   "bad tensor in 'x.pth' at offset 100: 2 sizes but 1 "
                   "strides");
}

static void negative_storage_size_is_signed(void **state) {
    (void)state;
    expect_refusal(PK(TENSOR_PK("J\xfc\xff\xff\xff", "K\x00", "K\x04\x85",
                                "K\x01\x85")),
                   RESNET_EFORMAT,
                   "bad storage '0' in 'x.pth' at offset 89: -4 elements (0 "
                   "to 2^50)");
}

/* Every proper prefix of a good pickle fails cleanly. */
static void every_truncation_fails_cleanly(void **state) {
    size_t len = sizeof state_dict_p2 - 1;

    (void)state;
    for (size_t n = 0; n < len; n++) {
        struct rn_pickle *p;
        struct resnet_error err;
        int rc = load(&p, (const unsigned char *)state_dict_p2, n, &err);

        if (rc == RESNET_OK || p != NULL) {
            print_error("prefix of %zu bytes: rc %d\n", n, rc);
            fail();
        }
        assert_true(err.msg[0] != '\0');
    }
}

/* Random bytes and random mutations of a good pickle never crash. */
static void random_input_never_crashes(void **state) {
    unsigned char buf[sizeof state_dict_p2];
    uint32_t seed = 12345;

    (void)state;
    for (int iter = 0; iter < 20000; iter++) {
        struct rn_pickle *p;
        struct resnet_error err;
        size_t len = sizeof buf - 1;

        memcpy(buf, state_dict_p2, sizeof buf);
        for (int k = 0; k < 1 + iter % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            buf[(seed >> 8) % len] = (unsigned char)(seed >> 20);
        }
        if (load(&p, buf, len, &err) == RESNET_OK) {
            rn_pickle_free(p);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(protocol2_state_dict_gives_tensor_view),
        cmocka_unit_test(protocol4_frame_memoize_stack_global),
        cmocka_unit_test(long1_sign_extends_and_keeps_wide_ints),
        cmocka_unit_test(posix_system_global_is_refused),
        cmocka_unit_test(builtins_eval_by_stack_global_is_refused),
        cmocka_unit_test(calling_an_allowed_class_is_refused),
        cmocka_unit_test(persistent_id_other_than_storage_is_refused),
        cmocka_unit_test(unknown_opcode_is_named),
        cmocka_unit_test(deep_list_nesting_is_refused),
        cmocka_unit_test(deep_mark_nesting_is_refused),
        cmocka_unit_test(huge_memo_index_is_refused),
        cmocka_unit_test(string_longer_than_input_is_refused),
        cmocka_unit_test(negative_storage_offset_is_named),
        cmocka_unit_test(negative_size_and_stride_are_named),
        cmocka_unit_test(negative_storage_size_is_signed),
        cmocka_unit_test(every_truncation_fails_cleanly),
        cmocka_unit_test(random_input_never_crashes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
