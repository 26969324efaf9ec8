/*
 * A pickle reader for the files torch.save writes: a small stack machine
 * over the binary opcodes of protocols 2 to 5 that builds plain values
 * (struct rn_pval) and never calls anything. Globals are looked up in an
 * allow-list and stay inert; REDUCE knows what each allowed one means.
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Bounds on what one pickle may build. */
#define MAX_STACK ((size_t)1 << 20)  // values on the stack
#define MAX_MARKS 256                // open MARKs
#define MAX_MEMO ((size_t)1 << 22)   // highest memo index + 1
#define MAX_VALUES ((size_t)1 << 23) // values in all
#define MAX_DEPTH 128                // nesting of containers

/* The globals a state_dict needs; everything else is refused. */
enum global_id {
    G_ORDERED_DICT,
    G_REBUILD_TENSOR,
    G_REBUILD_TENSOR_V2,
    G_REBUILD_PARAMETER,
    G_REBUILD_PARAMETER_STATE,
    G_REBUILD_FROM_TYPE_V2,
    G_TENSOR_CLASS,
    G_PARAMETER_CLASS,
    G_STORAGE,
};

static const struct allowed {
    const char *module, *name;
    enum global_id id;
    enum rn_dtype dtype;
} allowed[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT, 0},
    {"torch._utils", "_rebuild_tensor", G_REBUILD_TENSOR, 0},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR_V2, 0},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAMETER, 0},
    {"torch._utils", "_rebuild_parameter_with_state",
     G_REBUILD_PARAMETER_STATE, 0},
    {"torch._tensor", "_rebuild_from_type_v2", G_REBUILD_FROM_TYPE_V2, 0},
    {"torch", "Tensor", G_TENSOR_CLASS, 0},
    {"torch.nn.parameter", "Parameter", G_PARAMETER_CLASS, 0},
    {"torch", "FloatStorage", G_STORAGE, RN_DTYPE_F32},
    {"torch", "HalfStorage", G_STORAGE, RN_DTYPE_F16},
    {"torch", "BFloat16Storage", G_STORAGE, RN_DTYPE_BF16},
    {"torch", "DoubleStorage", G_STORAGE, RN_DTYPE_F64},
    {"torch", "LongStorage", G_STORAGE, RN_DTYPE_I64},
    {"torch", "IntStorage", G_STORAGE, RN_DTYPE_I32},
    {"torch", "ShortStorage", G_STORAGE, RN_DTYPE_I16},
    {"torch", "CharStorage", G_STORAGE, RN_DTYPE_I8},
    {"torch", "ByteStorage", G_STORAGE, RN_DTYPE_U8},
    {"torch", "BoolStorage", G_STORAGE, RN_DTYPE_BOOL},
};

#define N_ALLOWED ((int)(sizeof allowed / sizeof allowed[0]))

/* The machine's state while it runs. */
struct vm {
    struct rn_pickle *p;
    const unsigned char *buf;
    size_t len, pos;
    size_t op_pos;                // offset of the current opcode
    const char *name;             // the file, for messages
    struct rn_pval **stack;
    size_t n_stack, cap_stack;
    size_t marks[MAX_MARKS];
    int n_marks;
    struct rn_pval **memo;
    size_t cap_memo, n_memo;      // n_memo: next MEMOIZE index
    struct resnet_error *err;
};

static int bad(struct vm *vm, const char *what) {
    return rn_error(vm->err, RESNET_EFORMAT, 0,
                    "bad pickle in '%s': %s at offset %zu", vm->name, what,
                    vm->op_pos);
}

static int nomem(struct vm *vm) {
    return rn_error(vm->err, RESNET_ENOMEM, 0, "out of memory reading '%s'",
                    vm->name);
}

/* A new value of kind k, owned by the pickle; NULL when out of bounds. */
static struct rn_pval *new_value(struct vm *vm, enum rn_pv_kind k) {
    struct rn_pval *v;

    if (vm->p->n_values >= MAX_VALUES) {
        return NULL;
    }
    v = calloc(1, sizeof *v);
    if (!v) {
        return NULL;
    }
    v->kind = k;
    v->chain = vm->p->values;
    vm->p->values = v;
    vm->p->n_values++;
    return v;
}

static void free_value(struct rn_pval *v) {
    switch (v->kind) {
    case RN_PV_STR:
    case RN_PV_BYTES:
    case RN_PV_BIGINT:
        free(v->u.str.s);
        break;
    case RN_PV_TUPLE:
    case RN_PV_LIST:
    case RN_PV_DICT:
        free(v->u.seq.items);
        break;
    default:
        break;
    }
    free(v);
}

/* Takes n bytes from the input; NULL (and an error) past its end. */
static const unsigned char *take(struct vm *vm, size_t n) {
    const unsigned char *p;

    if (n > vm->len - vm->pos) {
        rn_error(vm->err, RESNET_EFORMAT, 0,
                 "truncated pickle in '%s': opcode at offset %zu needs %zu "
                 "bytes, %zu left",
                 vm->name, vm->op_pos, n, vm->len - vm->pos);
        return NULL;
    }
    p = vm->buf + vm->pos;
    vm->pos += n;
    return p;
}

/* Little-endian unsigned integer of n <= 8 bytes. */
static uint64_t le(const unsigned char *p, int n) {
    uint64_t x = 0;

    for (int i = n - 1; i >= 0; i--) {
        x = x << 8 | p[i];
    }
    return x;
}

/* The error for a value new_value() could not make. */
static int no_value(struct vm *vm) {
    if (vm->p->n_values >= MAX_VALUES) {
        return rn_error(vm->err, RESNET_EUNSUPPORTED, 0,
                        "pickle in '%s' builds more than %zu values",
                        vm->name, MAX_VALUES);
    }
    return nomem(vm);
}

/* Pushes v; a NULL v (new_value() failed) becomes its error. */
static int push(struct vm *vm, struct rn_pval *v) {
    if (!v) {
        return no_value(vm);
    }
    if (vm->n_stack == vm->cap_stack) {
        size_t cap = vm->cap_stack ? 2 * vm->cap_stack : 64;
        struct rn_pval **s;

        if (cap > MAX_STACK) {
            return rn_error(vm->err, RESNET_EUNSUPPORTED, 0,
                            "pickle stack in '%s' deeper than %zu values",
                            vm->name, MAX_STACK);
        }
        s = realloc(vm->stack, cap * sizeof *s);
        if (!s) {
            return nomem(vm);
        }
        vm->stack = s;
        vm->cap_stack = cap;
    }
    vm->stack[vm->n_stack++] = v;
    return RESNET_OK;
}

/* The value n places below the top (0: the top); NULL when too few. */
static struct rn_pval *peek(struct vm *vm, size_t n) {
    size_t base = vm->n_marks ? vm->marks[vm->n_marks - 1] : 0;

    if (vm->n_stack - base <= n) {
        return NULL;
    }
    return vm->stack[vm->n_stack - 1 - n];
}

/* Pops the top value into *v; an error when the stack (frame) is empty. */
static int pop(struct vm *vm, struct rn_pval **v) {
    *v = peek(vm, 0);
    if (!*v) {
        return bad(vm, "stack underflow");
    }
    vm->n_stack--;
    return RESNET_OK;
}

/* Pops back to the last MARK; the values above it start at *first. */
static int pop_mark(struct vm *vm, size_t *first, size_t *n) {
    if (vm->n_marks == 0) {
        return bad(vm, "no MARK");
    }
    *first = vm->marks[--vm->n_marks];
    *n = vm->n_stack - *first;
    vm->n_stack = *first;
    return RESNET_OK;
}

/* Appends item to container c, which grows deeper if item is. */
static int seq_add(struct vm *vm, struct rn_pval *c, struct rn_pval *item) {
    if (c->u.seq.n == c->u.seq.cap) {
        size_t cap = c->u.seq.cap ? 2 * c->u.seq.cap : 4;
        struct rn_pval **items = realloc(c->u.seq.items, cap * sizeof *items);

        if (!items) {
            return nomem(vm);
        }
        c->u.seq.items = items;
        c->u.seq.cap = cap;
    }
    c->u.seq.items[c->u.seq.n++] = item;
    if (item->depth + 1 > c->depth) {
        c->depth = item->depth + 1;
        if (c->depth > MAX_DEPTH) {
            return rn_error(vm->err, RESNET_EUNSUPPORTED, 0,
                            "pickle in '%s' nests deeper than %d levels",
                            vm->name, MAX_DEPTH);
        }
    }
    return RESNET_OK;
}

/* A new tuple of the n values at items. */
static int make_tuple(struct vm *vm, struct rn_pval **items, size_t n,
                      struct rn_pval **out) {
    struct rn_pval *t = new_value(vm, RN_PV_TUPLE);
    int rc;

    *out = t;
    if (!t) {
        return no_value(vm);
    }
    for (size_t i = 0; i < n; i++) {
        rc = seq_add(vm, t, items[i]);
        if (rc) {
            return rc;
        }
    }
    return RESNET_OK;
}

static bool same_key(const struct rn_pval *a, const struct rn_pval *b) {
    if (a->kind != b->kind) {
        return false;
    }
    if (a->kind == RN_PV_STR || a->kind == RN_PV_BYTES) {
        return a->u.str.len == b->u.str.len &&
               memcmp(a->u.str.s, b->u.str.s, a->u.str.len) == 0;
    }
    if (a->kind == RN_PV_INT) {
        return a->u.i == b->u.i;
    }
    return a == b;
}

/* d[key] = value, replacing an equal key as Python does. */
static int dict_set(struct vm *vm, struct rn_pval *d, struct rn_pval *key,
                    struct rn_pval *value) {
    int rc;

    if (d->kind != RN_PV_DICT) {
        return bad(vm, "SETITEM on a value that is not a dict");
    }
    if (key->kind != RN_PV_STR && key->kind != RN_PV_INT &&
        key->kind != RN_PV_BYTES && key->kind != RN_PV_TUPLE) {
        return bad(vm, "unhashable dict key");
    }
    for (size_t i = 0; i < d->u.seq.n; i += 2) {
        if (same_key(d->u.seq.items[i], key)) {
            d->u.seq.items[i + 1] = value;
            return RESNET_OK;
        }
    }
    rc = seq_add(vm, d, key);
    if (!rc) {
        rc = seq_add(vm, d, value);
    }
    return rc;
}

/* Pushes a string or bytes value copied from n input bytes. */
static int op_string(struct vm *vm, enum rn_pv_kind k, uint64_t n) {
    const unsigned char *p;
    struct rn_pval *v;

    if (n > vm->len - vm->pos) {
        return rn_error(vm->err, RESNET_EFORMAT, 0,
                        "truncated pickle in '%s': string at offset %zu "
                        "claims %llu bytes, %zu left",
                        vm->name, vm->op_pos, (unsigned long long)n,
                        vm->len - vm->pos);
    }
    p = take(vm, (size_t)n);
    v = new_value(vm, k);
    if (!v) {
        return no_value(vm);
    }
    v->u.str.s = malloc((size_t)n + 1);
    if (!v->u.str.s) {
        return nomem(vm);
    }
    memcpy(v->u.str.s, p, (size_t)n);
    v->u.str.s[n] = '\0';
    v->u.str.len = (size_t)n;
    return push(vm, v);
}

/* LONG1/LONG4: little-endian two's complement of n bytes. */
static int op_long(struct vm *vm, uint64_t n) {
    const unsigned char *p;
    struct rn_pval *v;
    int64_t x = 0;

    if (n > 8) {
        return op_string(vm, RN_PV_BIGINT, n);
    }
    p = take(vm, (size_t)n);
    if (!p) {
        return RESNET_EFORMAT;
    }
    if (n > 0) {
        uint64_t u = le(p, (int)n);

        // Sign-extend from the top bit of the last byte.
        if (n < 8 && (p[n - 1] & 0x80)) {
            u |= ~(uint64_t)0 << (8 * n);
        }
        memcpy(&x, &u, sizeof x);
    }
    v = new_value(vm, RN_PV_INT);
    if (v) {
        v->u.i = x;
    }
    return push(vm, v);
}

static int push_int(struct vm *vm, int64_t x) {
    struct rn_pval *v = new_value(vm, RN_PV_INT);

    if (v) {
        v->u.i = x;
    }
    return push(vm, v);
}

/* Looks module.name up in the allow-list and pushes it, or refuses it. */
static int push_global(struct vm *vm, const char *module, size_t mlen,
                       const char *name, size_t nlen) {
    struct rn_pval *v;

    for (int i = 0; i < N_ALLOWED; i++) {
        if (strlen(allowed[i].module) == mlen &&
            strlen(allowed[i].name) == nlen &&
            memcmp(allowed[i].module, module, mlen) == 0 &&
            memcmp(allowed[i].name, name, nlen) == 0) {
            v = new_value(vm, RN_PV_GLOBAL);
            if (v) {
                v->u.global.id = allowed[i].id;
                v->u.global.dtype = allowed[i].dtype;
                v->u.global.name = allowed[i].name;
            }
            return push(vm, v);
        }
    }
    return rn_error(vm->err, RESNET_EUNSUPPORTED, 0,
                    "refusing global '%.*s.%.*s' in '%s': not needed by a "
                    "state_dict",
                    (int)(mlen > 80 ? 80 : mlen), module,
                    (int)(nlen > 80 ? 80 : nlen), name, vm->name);
}

/* GLOBAL: "module\nname\n" in the input. */
static int op_global(struct vm *vm) {
    const char *m = (const char *)vm->buf + vm->pos;
    size_t left = vm->len - vm->pos;
    const char *nl1 = memchr(m, '\n', left), *nl2;

    if (!nl1) {
        return bad(vm, "unterminated GLOBAL");
    }
    nl2 = memchr(nl1 + 1, '\n', left - (size_t)(nl1 + 1 - m));
    if (!nl2) {
        return bad(vm, "unterminated GLOBAL");
    }
    vm->pos += (size_t)(nl2 + 1 - m);
    return push_global(vm, m, (size_t)(nl1 - m), nl1 + 1,
                       (size_t)(nl2 - nl1 - 1));
}

static int op_stack_global(struct vm *vm) {
    struct rn_pval *module, *name;
    int rc;

    if ((rc = pop(vm, &name)) || (rc = pop(vm, &module))) {
        return rc;
    }
    if (module->kind != RN_PV_STR || name->kind != RN_PV_STR) {
        return bad(vm, "STACK_GLOBAL needs two strings");
    }
    return push_global(vm, module->u.str.s, module->u.str.len,
                       name->u.str.s, name->u.str.len);
}

/* An int in [0, max] from v, or -1. */
static int64_t as_count(const struct rn_pval *v, int64_t max) {
    if (v->kind != RN_PV_INT || v->u.i < 0 || v->u.i > max) {
        return -1;
    }
    return v->u.i;
}

/* A tuple of at least n_min and at most n_max items, or NULL. */
static const struct rn_pval *as_tuple(const struct rn_pval *v, size_t n_min,
                                      size_t n_max) {
    if (v->kind != RN_PV_TUPLE || v->u.seq.n < n_min || v->u.seq.n > n_max) {
        return NULL;
    }
    return v;
}

/*
 * Checks _rebuild_tensor's offset, size and stride (args a) and says
 * which one is wrong.
 */
static int check_layout(struct vm *vm, struct rn_pval **a, int64_t max) {
    const struct rn_pval *size = a[2], *stride = a[3];

    if (a[1]->kind != RN_PV_INT) {
        return bad(vm, "tensor storage offset is not a number");
    }
    if (a[1]->u.i < 0 || a[1]->u.i > max) {
        return rn_error(vm->err, RESNET_EFORMAT, 0,
                        "bad tensor in '%s' at offset %zu: storage offset "
                        "%lld is out of range (0 to 2^50)",
                        vm->name, vm->op_pos, (long long)a[1]->u.i);
    }
    if (size->kind != RN_PV_TUPLE || stride->kind != RN_PV_TUPLE) {
        return bad(vm, "tensor size or stride is not a tuple");
    }
    if (size->u.seq.n > RN_MAX_DIMS) {
        return rn_error(vm->err, RESNET_EUNSUPPORTED, 0,
                        "unsupported tensor in '%s' at offset %zu: %zu "
                        "dimensions (at most %d)",
                        vm->name, vm->op_pos, size->u.seq.n, RN_MAX_DIMS);
    }
    if (size->u.seq.n != stride->u.seq.n) {
        return rn_error(vm->err, RESNET_EFORMAT, 0,
                        "bad tensor in '%s' at offset %zu: %zu sizes but "
                        "%zu strides",
                        vm->name, vm->op_pos, size->u.seq.n,
                        stride->u.seq.n);
    }
    for (size_t i = 0; i < 2 * size->u.seq.n; i++) {
        bool is_size = i < size->u.seq.n;
        size_t dim = is_size ? i : i - size->u.seq.n;
        const struct rn_pval *v = (is_size ? size : stride)->u.seq.items[dim];
        const char *what = is_size ? "size" : "stride";

        if (v->kind != RN_PV_INT) {
            return rn_error(vm->err, RESNET_EFORMAT, 0,
                            "bad tensor in '%s' at offset %zu: %s of "
                            "dimension %zu is not a number",
                            vm->name, vm->op_pos, what, dim);
        }
        if (as_count(v, max) < 0) {
            return rn_error(vm->err, RESNET_EFORMAT, 0,
                            "bad tensor in '%s' at offset %zu: %s %lld of "
                            "dimension %zu is out of range (0 to 2^50)",
                            vm->name, vm->op_pos, what, (long long)v->u.i,
                            dim);
        }
    }
    return RESNET_OK;
}

/* _rebuild_tensor(storage, offset, size, stride, ...) -> a tensor value. */
static int rebuild_tensor(struct vm *vm, const struct rn_pval *args,
                          struct rn_pval **out) {
    struct rn_pval **a = args->u.seq.items;
    const struct rn_pval *size, *stride;
    const int64_t max = (int64_t)1 << 50;
    struct rn_pval *t;
    int rc;

    if (args->u.seq.n < 4 || a[0]->kind != RN_PV_STORAGE) {
        return bad(vm, "bad arguments to _rebuild_tensor");
    }
    if ((rc = check_layout(vm, a, max))) {
        return rc;
    }
    size = a[2];
    stride = a[3];
    t = new_value(vm, RN_PV_TENSOR);
    if (!t) {
        return no_value(vm);
    }
    t->u.tensor.storage = a[0];
    t->u.tensor.offset = a[1]->u.i;
    t->u.tensor.n_dims = (int)size->u.seq.n;
    for (int i = 0; i < t->u.tensor.n_dims; i++) {
        t->u.tensor.shape[i] = size->u.seq.items[i]->u.i;
        t->u.tensor.stride[i] = stride->u.seq.items[i]->u.i;
    }
    *out = t;
    return RESNET_OK;
}

/* Calls the allowed global f on args, in the meaning torch gives it. */
static int call(struct vm *vm, const struct rn_pval *f,
                const struct rn_pval *args, struct rn_pval **out) {
    const struct rn_pval *inner;

    if (f->kind != RN_PV_GLOBAL || args->kind != RN_PV_TUPLE) {
        return bad(vm, "REDUCE of something not callable");
    }
    switch (f->u.global.id) {
    case G_ORDERED_DICT:
        if (args->u.seq.n != 0) {
            return bad(vm, "OrderedDict with arguments");
        }
        *out = new_value(vm, RN_PV_DICT);
        return *out ? RESNET_OK : no_value(vm);
    case G_REBUILD_TENSOR:
    case G_REBUILD_TENSOR_V2:
        return rebuild_tensor(vm, args, out);
    case G_REBUILD_PARAMETER:
    case G_REBUILD_PARAMETER_STATE:
        // A Parameter is its data; requires_grad and hooks do not matter.
        if (args->u.seq.n < 1 || args->u.seq.items[0]->kind != RN_PV_TENSOR) {
            return bad(vm, "bad arguments to _rebuild_parameter");
        }
        *out = args->u.seq.items[0];
        return RESNET_OK;
    case G_REBUILD_FROM_TYPE_V2:
        // (func, type, args, state): func(*args) as a plain tensor.
        if (args->u.seq.n != 4 || args->u.seq.items[0]->kind != RN_PV_GLOBAL ||
            args->u.seq.items[1]->kind != RN_PV_GLOBAL ||
            (args->u.seq.items[1]->u.global.id != G_TENSOR_CLASS &&
             args->u.seq.items[1]->u.global.id != G_PARAMETER_CLASS) ||
            !(inner = as_tuple(args->u.seq.items[2], 0, 16)) ||
            args->u.seq.items[0]->u.global.id == G_REBUILD_FROM_TYPE_V2) {
            return bad(vm, "bad arguments to _rebuild_from_type_v2");
        }
        return call(vm, args->u.seq.items[0], inner, out);
    default:
        return rn_error(vm->err, RESNET_EUNSUPPORTED, 0,
                        "refusing to call '%s' in '%s': not needed by a "
                        "state_dict",
                        f->u.global.name, vm->name);
    }
}

/*
 * BINPERSID: torch's ('storage', type, key, location, numel[, view]) names
 * a storage whose bytes live outside the pickle.
 */
static int op_persid(struct vm *vm) {
    const struct rn_pval *pid, *view = NULL;
    struct rn_pval *top, *s, **a;
    const int64_t max = (int64_t)1 << 50;
    int rc;

    if ((rc = pop(vm, &top))) {
        return rc;
    }
    pid = as_tuple(top, 5, 6);
    if (!pid || !rn_pval_is_str(pid->u.seq.items[0], "storage")) {
        return rn_error(vm->err, RESNET_EUNSUPPORTED, 0,
                        "unsupported persistent id in '%s' at offset %zu: "
                        "not a storage",
                        vm->name, vm->op_pos);
    }
    a = pid->u.seq.items;
    if (a[1]->kind != RN_PV_GLOBAL || a[1]->u.global.id != G_STORAGE ||
        a[2]->kind != RN_PV_STR || a[3]->kind != RN_PV_STR ||
        strlen(a[2]->u.str.s) != a[2]->u.str.len || a[4]->kind != RN_PV_INT) {
        return bad(vm, "bad storage persistent id");
    }
    if (as_count(a[4], max) < 0) {
        return rn_error(vm->err, RESNET_EFORMAT, 0,
                        "bad storage '%.80s' in '%s' at offset %zu: %lld "
                        "elements (0 to 2^50)",
                        a[2]->u.str.s, vm->name, vm->op_pos,
                        (long long)a[4]->u.i);
    }
    if (pid->u.seq.n == 6 && a[5]->kind != RN_PV_NONE) {
        // Legacy storage views: (view_key, offset, size) of the root.
        view = as_tuple(a[5], 3, 3);
        if (!view || as_count(view->u.seq.items[1], max) < 0 ||
            as_count(view->u.seq.items[2], max) < 0) {
            return bad(vm, "bad storage view");
        }
    }
    s = new_value(vm, RN_PV_STORAGE);
    if (!s) {
        return no_value(vm);
    }
    s->u.storage.dtype = a[1]->u.global.dtype;
    s->u.storage.key = a[2]->u.str.s;
    s->u.storage.location = a[3]->u.str.s;
    s->u.storage.root_numel = a[4]->u.i;
    s->u.storage.offset = view ? view->u.seq.items[1]->u.i : 0;
    s->u.storage.numel = view ? view->u.seq.items[2]->u.i : a[4]->u.i;
    return push(vm, s);
}

static int op_reduce(struct vm *vm) {
    struct rn_pval *f, *args, *v = NULL;
    int rc;

    if ((rc = pop(vm, &args)) || (rc = pop(vm, &f))) {
        return rc;
    }
    rc = call(vm, f, args, &v);
    return rc ? rc : push(vm, v);
}

/* NEWOBJ: cls.__new__(cls, *args); only OrderedDict is allowed. */
static int op_newobj(struct vm *vm, bool has_kwargs) {
    struct rn_pval *cls, *args, *kwargs;
    int rc;

    if (has_kwargs && (rc = pop(vm, &kwargs))) {
        return rc;
    }
    if ((rc = pop(vm, &args)) || (rc = pop(vm, &cls))) {
        return rc;
    }
    if (cls->kind != RN_PV_GLOBAL || cls->u.global.id != G_ORDERED_DICT) {
        return rn_error(vm->err, RESNET_EUNSUPPORTED, 0,
                        "refusing to create '%s' in '%s': not needed by a "
                        "state_dict",
                        cls->kind == RN_PV_GLOBAL ? cls->u.global.name
                                                  : "a non-class",
                        vm->name);
    }
    return push(vm, new_value(vm, RN_PV_DICT));
}

/* BUILD sets state on an object; dicts and tensors keep none we need. */
static int op_build(struct vm *vm) {
    struct rn_pval *state;
    const struct rn_pval *obj;
    int rc;

    if ((rc = pop(vm, &state))) {
        return rc;
    }
    obj = peek(vm, 0);
    if (!obj) {
        return bad(vm, "stack underflow");
    }
    if (obj->kind != RN_PV_DICT && obj->kind != RN_PV_TENSOR) {
        return bad(vm, "BUILD on a value without state");
    }
    return RESNET_OK;
}

static int memo_put(struct vm *vm, uint64_t idx) {
    struct rn_pval *top = peek(vm, 0);

    if (!top) {
        return bad(vm, "memo store from an empty stack");
    }
    if (idx >= MAX_MEMO) {
        return rn_error(vm->err, RESNET_EUNSUPPORTED, 0,
                        "pickle in '%s' uses memo index %llu (at most %zu)",
                        vm->name, (unsigned long long)idx, MAX_MEMO - 1);
    }
    if (idx >= vm->cap_memo) {
        size_t cap = vm->cap_memo ? vm->cap_memo : 256;
        struct rn_pval **m;

        while (cap <= idx) {
            cap *= 2;
        }
        m = realloc(vm->memo, cap * sizeof *m);
        if (!m) {
            return nomem(vm);
        }
        memset(m + vm->cap_memo, 0, (cap - vm->cap_memo) * sizeof *m);
        vm->memo = m;
        vm->cap_memo = cap;
    }
    vm->memo[idx] = top;
    if (idx >= vm->n_memo) {
        vm->n_memo = (size_t)idx + 1;
    }
    return RESNET_OK;
}

static int memo_get(struct vm *vm, uint64_t idx) {
    if (idx >= vm->cap_memo || !vm->memo[idx]) {
        return bad(vm, "memo fetch of an unset index");
    }
    return push(vm, vm->memo[idx]);
}

/* Adds the n stack values from first to c: key/value pairs to a dict,
 * items to a list. */
static int add_values(struct vm *vm, struct rn_pval *c, bool is_dict,
                      size_t first, size_t n) {
    int rc = RESNET_OK;

    for (size_t i = 0; i < n && !rc; i += is_dict ? 2 : 1) {
        rc = is_dict ? dict_set(vm, c, vm->stack[first + i],
                                vm->stack[first + i + 1])
                     : seq_add(vm, c, vm->stack[first + i]);
    }
    return rc;
}

/* SETITEM(S), APPEND(S): the values above the mark (or the top two/one). */
static int op_fill(struct vm *vm, bool is_dict, bool many) {
    size_t first = 0, n = 0;
    struct rn_pval *c;
    int rc = RESNET_OK;

    if (many) {
        if ((rc = pop_mark(vm, &first, &n))) {
            return rc;
        }
    } else {
        n = is_dict ? 2 : 1;
        if (!peek(vm, n - 1)) {
            return bad(vm, "stack underflow");
        }
        first = vm->n_stack - n;
        vm->n_stack = first;
    }
    c = peek(vm, 0);
    if (!c || (is_dict && (c->kind != RN_PV_DICT || n % 2)) ||
        (!is_dict && c->kind != RN_PV_LIST)) {
        return bad(vm, is_dict ? "SETITEMS without a dict"
                               : "APPENDS without a list");
    }
    return add_values(vm, c, is_dict, first, n);
}

/* TUPLE, TUPLE1-3: n values from the top (n < 0: back to the mark). */
static int op_tuple(struct vm *vm, int n) {
    size_t first = 0, count = 0;
    struct rn_pval *t;
    int rc;

    if (n < 0) {
        if ((rc = pop_mark(vm, &first, &count))) {
            return rc;
        }
    } else {
        count = (size_t)n;
        if (n > 0 && !peek(vm, count - 1)) {
            return bad(vm, "stack underflow");
        }
        first = vm->n_stack - count;
        vm->n_stack = first;
    }
    rc = make_tuple(vm, vm->stack + first, count, &t);
    return rc ? rc : push(vm, t);
}

/* LIST and DICT: a new list or dict of the values above the mark. */
static int op_collect(struct vm *vm, bool is_dict) {
    size_t first = 0, n = 0;
    struct rn_pval *c;
    int rc = RESNET_OK;

    if ((rc = pop_mark(vm, &first, &n))) {
        return rc;
    }
    if (is_dict && n % 2) {
        return bad(vm, "DICT with an odd number of values");
    }
    c = new_value(vm, is_dict ? RN_PV_DICT : RN_PV_LIST);
    if (!c) {
        return no_value(vm);
    }
    rc = add_values(vm, c, is_dict, first, n);
    return rc ? rc : push(vm, c);
}

/* Reads n little-endian bytes of an argument; 0 and an error at the end. */
static int arg(struct vm *vm, int n, uint64_t *x) {
    const unsigned char *p = take(vm, (size_t)n);

    if (!p) {
        return RESNET_EFORMAT;
    }
    *x = le(p, n);
    return RESNET_OK;
}

static int op_float(struct vm *vm) {
    const unsigned char *p = take(vm, 8);
    struct rn_pval *v;
    uint64_t u = 0;

    if (!p) {
        return RESNET_EFORMAT;
    }
    for (int i = 0; i < 8; i++) {
        u = u << 8 | p[i]; // big-endian
    }
    v = new_value(vm, RN_PV_FLOAT);
    if (v) {
        memcpy(&v->u.f, &u, sizeof v->u.f);
    }
    return push(vm, v);
}

static int op_mark(struct vm *vm) {
    if (vm->n_marks == MAX_MARKS) {
        return rn_error(vm->err, RESNET_EUNSUPPORTED, 0,
                        "pickle in '%s' nests deeper than %d levels",
                        vm->name, MAX_MARKS);
    }
    vm->marks[vm->n_marks++] = vm->n_stack;
    return RESNET_OK;
}

/* Runs one opcode; *done is set at STOP. */
static int step(struct vm *vm, int op, bool *done) {
    struct rn_pval *v;
    size_t first = 0, n = 0;
    uint64_t x;

    switch (op) {
    case 0x80: // PROTO
        return arg(vm, 1, &x) ? RESNET_EFORMAT
               : x > 5        ? bad(vm, "unknown protocol")
                              : RESNET_OK;
    case 0x95: // FRAME: a length prefix only; the opcodes run as usual
        return arg(vm, 8, &x);
    case '.': // STOP
        *done = true;
        return RESNET_OK;
    case '}':
        return push(vm, new_value(vm, RN_PV_DICT));
    case ']':
        return push(vm, new_value(vm, RN_PV_LIST));
    case ')':
        return op_tuple(vm, 0);
    case '(':
        return op_mark(vm);
    case 's':
        return op_fill(vm, true, false);
    case 'u':
        return op_fill(vm, true, true);
    case 'a':
        return op_fill(vm, false, false);
    case 'e':
        return op_fill(vm, false, true);
    case 'J': // BININT: signed 32 bits
        return arg(vm, 4, &x) ? RESNET_EFORMAT
                              : push_int(vm, (int32_t)(uint32_t)x);
    case 'K':
        return arg(vm, 1, &x) ? RESNET_EFORMAT : push_int(vm, (int64_t)x);
    case 'M':
        return arg(vm, 2, &x) ? RESNET_EFORMAT : push_int(vm, (int64_t)x);
    case 0x8a: // LONG1
        return arg(vm, 1, &x) ? RESNET_EFORMAT : op_long(vm, x);
    case 0x8b: // LONG4
        return arg(vm, 4, &x) ? RESNET_EFORMAT : op_long(vm, x);
    case 'G':
        return op_float(vm);
    case 'X': // BINUNICODE
    case 'T': // BINSTRING
        return arg(vm, 4, &x) ? RESNET_EFORMAT : op_string(vm, RN_PV_STR, x);
    case 0x8c: // SHORT_BINUNICODE
    case 'U':  // SHORT_BINSTRING
        return arg(vm, 1, &x) ? RESNET_EFORMAT : op_string(vm, RN_PV_STR, x);
    case 0x8d: // BINUNICODE8
        return arg(vm, 8, &x) ? RESNET_EFORMAT : op_string(vm, RN_PV_STR, x);
    case 'B':
        return arg(vm, 4, &x) ? RESNET_EFORMAT : op_string(vm, RN_PV_BYTES, x);
    case 'C':
        return arg(vm, 1, &x) ? RESNET_EFORMAT : op_string(vm, RN_PV_BYTES, x);
    case 0x8e: // BINBYTES8
    case 0x96: // BYTEARRAY8
        return arg(vm, 8, &x) ? RESNET_EFORMAT : op_string(vm, RN_PV_BYTES, x);
    case 0x85:
    case 0x86:
    case 0x87:
        return op_tuple(vm, op - 0x84);
    case 't':
        return op_tuple(vm, -1);
    case 'N':
        return push(vm, new_value(vm, RN_PV_NONE));
    case 0x88:
    case 0x89:
        v = new_value(vm, RN_PV_BOOL);
        if (v) {
            v->u.b = op == 0x88;
        }
        return push(vm, v);
    case 'q':
        return arg(vm, 1, &x) ? RESNET_EFORMAT : memo_put(vm, x);
    case 'r':
        return arg(vm, 4, &x) ? RESNET_EFORMAT : memo_put(vm, x);
    case 0x94: // MEMOIZE
        return memo_put(vm, vm->n_memo);
    case 'h':
        return arg(vm, 1, &x) ? RESNET_EFORMAT : memo_get(vm, x);
    case 'j':
        return arg(vm, 4, &x) ? RESNET_EFORMAT : memo_get(vm, x);
    case 'c':
        return op_global(vm);
    case 0x93:
        return op_stack_global(vm);
    case 'R':
        return op_reduce(vm);
    case 'b':
        return op_build(vm);
    case 'Q':
        return op_persid(vm);
    case 0x81:
        return op_newobj(vm, false);
    case 0x92:
        return op_newobj(vm, true);
    case '0': // POP
        return pop(vm, &v);
    case '1': // POP_MARK
        return pop_mark(vm, &first, &n);
    case '2': // DUP
        v = peek(vm, 0);
        return v ? push(vm, v) : bad(vm, "stack underflow");
    case 'l': // LIST: the values above the mark
    case 'd': // DICT: key, value pairs above the mark
        return op_collect(vm, op == 'd');
    default:
        return rn_error(vm->err, RESNET_EUNSUPPORTED, 0,
                        "unsupported pickle opcode 0x%02x at offset %zu in "
                        "'%s'",
                        (unsigned)op, vm->op_pos, vm->name);
    }
}

void rn_pickle_free(struct rn_pickle *p) {
    struct rn_pval *v, *next;

    if (!p) {
        return;
    }
    for (v = p->values; v; v = next) {
        next = v->chain;
        free_value(v);
    }
    free(p);
}

int rn_pickle_load(struct rn_pickle **out, const void *buf, size_t len,
                   const char *name, size_t *used, struct resnet_error *err) {
    struct vm vm = {.buf = buf, .len = len, .name = name, .err = err};
    bool done = false;
    int rc = RESNET_OK;

    *out = NULL;
    vm.p = calloc(1, sizeof *vm.p);
    if (!vm.p) {
        return rn_error(err, RESNET_ENOMEM, 0, "out of memory reading '%s'",
                        name);
    }

    // Run opcodes until STOP; every argument is checked against len.
    while (!done) {
        if (vm.pos >= len) {
            rc = rn_error(err, RESNET_EFORMAT, 0,
                          "truncated pickle in '%s': no STOP opcode before "
                          "offset %zu",
                          name, len);
            goto out;
        }
        vm.op_pos = vm.pos;
        rc = step(&vm, vm.buf[vm.pos++], &done);
        if (rc) {
            goto out;
        }
    }
    if (vm.n_stack != 1 || vm.n_marks != 0) {
        rc = bad(&vm, "STOP with other than one value on the stack");
        goto out;
    }
    vm.p->root = vm.stack[0];
    if (used) {
        *used = vm.pos;
    }

out:
    free(vm.memo);
    free(vm.stack);
    if (rc) {
        rn_pickle_free(vm.p);
    } else {
        *out = vm.p;
    }
    return rc;
}

bool rn_pval_is_str(const struct rn_pval *v, const char *s) {
    return v && v->kind == RN_PV_STR && strlen(s) == v->u.str.len &&
           memcmp(v->u.str.s, s, v->u.str.len) == 0;
}

const struct rn_pval *rn_pval_get(const struct rn_pval *d, const char *key) {
    if (!d || d->kind != RN_PV_DICT) {
        return NULL;
    }
    for (size_t i = 0; i + 1 < d->u.seq.n; i += 2) {
        if (rn_pval_is_str(d->u.seq.items[i], key)) {
            return d->u.seq.items[i + 1];
        }
    }
    return NULL;
}
