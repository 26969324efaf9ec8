/*
 * State dicts from the files people hold: torch.save's zip format (a
 * pickle plus one record per storage), its legacy pre-1.6 format (five
 * pickles, then the raw storages) and safetensors. The pickle only
 * describes tensors; their bytes are copied out of the storages here
 * (at most twice the storages' bytes plus 256 MiB in all), and each
 * storage is let go once the last tensor viewing it has its bytes.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zip.h>

#include "internal.h"

/* Largest data.pkl read into memory from a zip archive. */
#define MAX_PICKLE_BYTES ((uint64_t)1 << 30)

/* Largest tensor made by repeating a smaller storage (stride 0). */
#define MAX_REPEAT_BYTES ((uint64_t)1 << 30)

/*
 * All tensors together may take at most twice the bytes of the storages
 * they view plus this much. Tensors view their storages, so a state
 * dict takes their size (twice for weights shared by two names); the
 * allowance is for broadcast buffers and small files. It bounds what
 * stride-0 views of tiny storages can make: each alone is checked
 * against MAX_REPEAT_BYTES, this caps their sum.
 */
#define EXTRA_TENSOR_BYTES ((uint64_t)256 << 20)

/* Compressed zip records may expand this much at most (zip bombs). */
#define MAX_EXPANSION 64

/* torch.save's legacy magic number 0x1950a86a20f9469cfc6c, little-endian. */
static const unsigned char legacy_magic[10] = {
    0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
};

/* The bytes of one storage, shared by the tensors that view it. */
struct storage {
    const char *key;
    enum rn_dtype dtype;
    const unsigned char *data; // root_numel elements
    int64_t root_numel;
    unsigned char *owned;      // data when read from a zip record
    int n_uses;                // state dict entries that view it
    int n_pending;             // of those, not yet copied out
};

/* What a reader shares while it builds the state dict. */
struct reader {
    const char *path;
    struct storage *storages;
    int n_storages;
    rn_progress_fn progress;
    void *progress_ctx;
    size_t done, total;
    uint64_t tensor_bytes;     // what the tensors took so far
    struct resnet_error *err;
};

static size_t elem_size(enum rn_dtype dtype) {
    switch (dtype) {
    case RN_DTYPE_F64:
    case RN_DTYPE_I64:
        return 8;
    case RN_DTYPE_F32:
    case RN_DTYPE_I32:
        return 4;
    case RN_DTYPE_F16:
    case RN_DTYPE_BF16:
    case RN_DTYPE_I16:
        return 2;
    default:
        return 1;
    }
}

static void free_tensors(struct rn_tensor *t, int n) {
    for (int i = 0; i < n; i++) {
        free((void *)t[i].name);
        free((void *)t[i].data);
    }
    free(t);
}

void rn_state_dict_free(struct rn_state_dict *sd) {
    if (!sd) {
        return;
    }
    free_tensors(sd->tensors, sd->n_tensors);
    free(sd);
}

/* The storage called key, or NULL. */
static struct storage *find_storage(struct reader *r, const char *key) {
    for (int i = 0; i < r->n_storages; i++) {
        if (strcmp(r->storages[i].key, key) == 0) {
            return &r->storages[i];
        }
    }
    return NULL;
}

/* Adds key with dtype to r's storages (no bytes yet), unless present. */
static int add_storage(struct reader *r, const struct rn_pval *s) {
    struct storage *st = find_storage(r, s->u.storage.key), *grown;

    if (st) {
        if (st->dtype != s->u.storage.dtype ||
            st->root_numel != s->u.storage.root_numel) {
            return rn_error(r->err, RESNET_EFORMAT, 0,
                            "storage '%s' in '%s' is described twice "
                            "differently",
                            s->u.storage.key, r->path);
        }
        return RESNET_OK;
    }
    grown = realloc(r->storages, (r->n_storages + 1) * sizeof *grown);
    if (!grown) {
        return rn_error(r->err, RESNET_ENOMEM, 0, "out of memory");
    }
    r->storages = grown;
    r->storages[r->n_storages++] = (struct storage){
        .key = s->u.storage.key,
        .dtype = s->u.storage.dtype,
        .root_numel = s->u.storage.root_numel,
    };
    return RESNET_OK;
}

/* Every storage any value of p names, in the order they were made. */
static int collect_storages(struct reader *r, const struct rn_pickle *p) {
    int rc;

    for (const struct rn_pval *v = p->values; v; v = v->chain) {
        if (v->kind == RN_PV_STORAGE && (rc = add_storage(r, v))) {
            return rc;
        }
    }
    return RESNET_OK;
}

static void report_progress(struct reader *r, size_t n_bytes) {
    r->done += n_bytes;
    if (r->progress) {
        r->progress(r->progress_ctx, r->done, r->total);
    }
}

/* Whether a tensor's elements are laid out row-major without gaps. */
static bool is_contiguous(const struct rn_pval *t) {
    int64_t expect = 1;

    for (int i = t->u.tensor.n_dims - 1; i >= 0; i--) {
        if (t->u.tensor.shape[i] != 1 && t->u.tensor.stride[i] != expect) {
            return false;
        }
        expect *= t->u.tensor.shape[i];
    }
    return true;
}

/*
 * Checks that every element of view t lies inside its storage and fills
 * shape, n_elems and n_bytes of out.
 */
static int check_view(struct reader *r, const char *name,
                      const struct rn_pval *t, const struct storage *st,
                      struct rn_tensor *out) {
    const struct rn_pval *s = t->u.tensor.storage;
    int64_t last = t->u.tensor.offset, n = 1, step;
    size_t es = elem_size(st->dtype);

    out->n_dims = t->u.tensor.n_dims;
    for (int i = 0; i < out->n_dims; i++) {
        out->shape[i] = t->u.tensor.shape[i];
        if (__builtin_mul_overflow(n, out->shape[i], &n) ||
            (out->shape[i] > 0 &&
             (__builtin_mul_overflow(out->shape[i] - 1,
                                     t->u.tensor.stride[i], &step) ||
              __builtin_add_overflow(last, step, &last)))) {
            goto outside;
        }
    }
    // The storage is a window [offset, offset + numel) of its record.
    if (s->u.storage.offset > st->root_numel ||
        s->u.storage.numel > st->root_numel - s->u.storage.offset ||
        (n > 0 && last >= s->u.storage.numel)) {
        goto outside;
    }
    out->n_elems = (size_t)n;
    if (!rn_mul_size(out->n_elems, es, &out->n_bytes)) {
        goto outside;
    }
    // A view with stride 0 may repeat a small storage without end.
    if (n > s->u.storage.numel && out->n_bytes > MAX_REPEAT_BYTES) {
        return rn_error(r->err, RESNET_EUNSUPPORTED, 0,
                        "tensor '%s' in '%s' repeats its storage to %zu "
                        "bytes (at most %llu)",
                        name, r->path, out->n_bytes,
                        (unsigned long long)MAX_REPEAT_BYTES);
    }
    return RESNET_OK;

outside:
    return rn_error(r->err, RESNET_EFORMAT, 0,
                    "tensor '%s' in '%s' reaches outside its storage '%s' "
                    "(%lld elements)",
                    name, r->path, s->u.storage.key,
                    (long long)s->u.storage.numel);
}

/* Copies the elements of view t out of its storage, row-major. */
static void gather(const struct rn_pval *t, const unsigned char *base,
                   size_t es, unsigned char *dst, size_t n_elems) {
    int64_t idx[RN_MAX_DIMS] = {0};
    int nd = t->u.tensor.n_dims;

    if (is_contiguous(t)) {
        memcpy(dst, base + (size_t)t->u.tensor.offset * es, n_elems * es);
        return;
    }
    // An odometer over the indices, last dimension fastest.
    for (size_t k = 0; k < n_elems; k++) {
        int64_t off = t->u.tensor.offset;

        for (int i = 0; i < nd; i++) {
            off += idx[i] * t->u.tensor.stride[i];
        }
        memcpy(dst + k * es, base + (size_t)off * es, es);
        for (int i = nd - 1; i >= 0; i--) {
            if (++idx[i] < t->u.tensor.shape[i]) {
                break;
            }
            idx[i] = 0;
        }
    }
}

/*
 * Lets go of a storage every tensor has been copied out of: frees a zip
 * record, and drops the pages of a legacy file's mapping from memory
 * (they would be read again from the file if touched).
 */
static void release(struct storage *st) {
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t from, to;

    if (--st->n_pending > 0) {
        return;
    }
    if (st->owned) {
        free(st->owned);
        st->owned = NULL;
        st->data = NULL;
    } else if (st->data && page > 0) {
        from = ((uintptr_t)st->data + (uintptr_t)page - 1) &
               ~((uintptr_t)page - 1);
        to = ((uintptr_t)st->data +
              (uintptr_t)st->root_numel * elem_size(st->dtype)) &
             ~((uintptr_t)page - 1);
        if (to > from) {
            madvise((void *)from, to - from, MADV_DONTNEED);
        }
        st->data = NULL;
    }
}

/* Adds n_bytes to the tensors' total; refuses it past the limit. */
static int charge(struct reader *r, size_t n_bytes) {
    uint64_t limit = (uint64_t)r->total * 2 + EXTRA_TENSOR_BYTES;

    if (n_bytes > limit - r->tensor_bytes) {
        return rn_error(r->err, RESNET_EUNSUPPORTED, 0,
                        "tensors in '%s' would take more than %llu bytes "
                        "(at most twice their storages plus 256 MiB)",
                        r->path, (unsigned long long)limit);
    }
    r->tensor_bytes += n_bytes;
    return RESNET_OK;
}

/* Counts the entries of dict d that view each storage. */
static void count_uses(struct reader *r, const struct rn_pval *d) {
    for (size_t i = 1; i < d->u.seq.n; i += 2) {
        const struct rn_pval *t = d->u.seq.items[i];
        struct storage *st = t->kind == RN_PV_TENSOR
                                 ? find_storage(r, t->u.tensor.storage
                                                       ->u.storage.key)
                                 : NULL;

        if (st) {
            st->n_uses++;
            st->n_pending++;
        }
    }
}

/*
 * Makes out a contiguous copy of tensor t (called name), or hands it
 * the record of its storage when that is the same bytes.
 */
static int materialise(struct reader *r, const char *name,
                       const struct rn_pval *t, struct rn_tensor *out) {
    const struct rn_pval *s = t->u.tensor.storage;
    struct storage *st = find_storage(r, s->u.storage.key);
    size_t es;
    unsigned char *data;
    int rc;

    if (!st || !st->data) {
        return rn_error(r->err, RESNET_EFORMAT, 0,
                        "storage '%s' of tensor '%s' is missing from '%s'",
                        s->u.storage.key, name, r->path);
    }
    es = elem_size(st->dtype);
    if ((rc = check_view(r, name, t, st, out)) ||
        (rc = charge(r, out->n_bytes))) {
        return rc;
    }
    out->dtype = st->dtype;

    // A tensor that is all of a record it alone views takes the record
    // over, so the bytes are held once, not twice.
    if (st->owned && st->n_uses == 1 && t->u.tensor.offset == 0 &&
        s->u.storage.offset == 0 && is_contiguous(t) &&
        out->n_bytes == (size_t)st->root_numel * es) {
        out->data = st->owned;
        st->owned = NULL;
        st->data = NULL;
        st->n_pending = 0;
        return RESNET_OK;
    }
    data = malloc(out->n_bytes ? out->n_bytes : 1);
    if (!data) {
        return rn_error(r->err, RESNET_ENOMEM, 0,
                        "out of memory for tensor '%s' (%zu bytes)", name,
                        out->n_bytes);
    }
    gather(t, st->data + (size_t)s->u.storage.offset * es, es, data,
           out->n_elems);
    out->data = data;
    release(st);
    return RESNET_OK;
}

/* Whether every value of dict d is a tensor (and there is at least one). */
static bool all_tensors(const struct rn_pval *d) {
    for (size_t i = 1; i < d->u.seq.n; i += 2) {
        if (d->u.seq.items[i]->kind != RN_PV_TENSOR) {
            return false;
        }
    }
    return d->u.seq.n > 0;
}

/* The state dict in root: root itself, or a checkpoint's entry. */
static int find_state_dict(struct reader *r, const struct rn_pval *root,
                           const struct rn_pval **sd, const char **under) {
    static const char *const keys[] = {"state_dict", "model",
                                       "model_state_dict"};

    *under = NULL;
    if (root->kind != RN_PV_DICT) {
        return rn_error(r->err, RESNET_EUNSUPPORTED, 0,
                        "no state_dict in '%s': the file holds no dict",
                        r->path);
    }
    if (all_tensors(root)) {
        *sd = root;
        return RESNET_OK;
    }
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const struct rn_pval *v = rn_pval_get(root, keys[i]);

        if (v && v->kind == RN_PV_DICT && all_tensors(v)) {
            *sd = v;
            *under = keys[i];
            return RESNET_OK;
        }
    }
    return rn_error(r->err, RESNET_EUNSUPPORTED, 0,
                    "no state_dict in '%s': neither the file's dict nor its "
                    "'state_dict' or 'model' entry holds only tensors",
                    r->path);
}

/* Length of the UTF-8 sequence at s (len bytes left), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t len) {
    size_t n = s[0] < 0x80 ? 1 : s[0] < 0xc2 ? 0 : s[0] < 0xe0 ? 2
             : s[0] < 0xf0 ? 3 : s[0] < 0xf5 ? 4 : 0;

    if (n == 0 || n > len) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    // No overlong forms, UTF-16 surrogates or code points past U+10FFFF.
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90)) {
        return 0;
    }
    return n;
}

/* Offset of the first byte of name that is not UTF-8, or len. */
static size_t first_non_utf8(const char *name, size_t len) {
    const unsigned char *s = (const unsigned char *)name;
    size_t i = 0, n;

    while (i < len && (n = utf8_seq(s + i, len - i))) {
        i += n;
    }
    return i;
}

/*
 * A safetensors header is JSON, which holds only UTF-8: refuses a name
 * that is not, showing its part around the first bad byte with other
 * bytes than printable ASCII as \xNN.
 */
static int check_utf8(struct reader *r, const char *name, size_t len) {
    size_t bad = first_non_utf8(name, len), from, k;
    char shown[64];

    if (bad == len) {
        return RESNET_OK;
    }
    from = bad > 24 ? bad - 16 : 0;
    k = (size_t)snprintf(shown, sizeof shown, "%s", from ? "..." : "");
    for (size_t i = from; i < len; i++) {
        unsigned char c = (unsigned char)name[i];

        if (k + 8 >= sizeof shown) {
            snprintf(shown + k, sizeof shown - k, "...");
            break;
        }
        k += (size_t)snprintf(shown + k, sizeof shown - k,
                              c >= 0x20 && c < 0x7f && c != '\\' ? "%c"
                                                                 : "\\x%02x",
                              c);
    }
    return rn_error(r->err, RESNET_EFORMAT, 0,
                    "'%s': tensor name is not valid UTF-8 ('%s')", r->path,
                    shown);
}

static bool is_dropped(const char *name) {
    const char *tail = strrchr(name, '.');

    return strcmp(tail ? tail + 1 : name, "num_batches_tracked") == 0;
}

/* Copies the tensors of dict d (state dict order) into sd. */
static int build_tensors(struct reader *r, const struct rn_pval *d,
                         struct rn_state_dict *sd) {
    size_t n = d->u.seq.n / 2;
    int rc;

    sd->tensors = calloc(n ? n : 1, sizeof *sd->tensors);
    if (!sd->tensors) {
        return rn_error(r->err, RESNET_ENOMEM, 0, "out of memory");
    }
    count_uses(r, d);
    for (size_t i = 0; i < n; i++) {
        const struct rn_pval *key = d->u.seq.items[2 * i];
        struct rn_tensor *t = &sd->tensors[sd->n_tensors];

        if (key->kind != RN_PV_STR || strlen(key->u.str.s) != key->u.str.len) {
            return rn_error(r->err, RESNET_EFORMAT, 0,
                            "state_dict in '%s' has a key that is not a "
                            "name",
                            r->path);
        }
        if ((rc = check_utf8(r, key->u.str.s, key->u.str.len))) {
            return rc;
        }
        if (is_dropped(key->u.str.s)) {
            sd->n_dropped++;
            continue;
        }
        rc = materialise(r, key->u.str.s, d->u.seq.items[2 * i + 1], t);
        if (rc) {
            return rc;
        }
        t->name = strdup(key->u.str.s);
        sd->n_tensors++;
        if (!t->name) {
            return rn_error(r->err, RESNET_ENOMEM, 0, "out of memory");
        }
    }
    return RESNET_OK;
}

/* Strips "module." when every name starts with it (DataParallel). */
static void strip_prefix(struct rn_state_dict *sd) {
    static const char prefix[] = "module.";
    size_t len = sizeof prefix - 1;

    if (sd->n_tensors == 0) {
        return;
    }
    for (int i = 0; i < sd->n_tensors; i++) {
        const char *name = sd->tensors[i].name;

        if (strncmp(name, prefix, len) != 0 || name[len] == '\0') {
            return;
        }
    }
    for (int i = 0; i < sd->n_tensors; i++) {
        char *name = (char *)sd->tensors[i].name;

        memmove(name, name + len, strlen(name + len) + 1);
    }
    sd->prefix = prefix;
}

/* Names must be unique after stripping, or the model would be ambiguous. */
static int check_unique(struct reader *r, const struct rn_state_dict *sd) {
    for (int i = 0; i < sd->n_tensors; i++) {
        for (int j = i + 1; j < sd->n_tensors; j++) {
            if (strcmp(sd->tensors[i].name, sd->tensors[j].name) == 0) {
                return rn_error(r->err, RESNET_EFORMAT, 0,
                                "tensor '%s' appears twice in '%s'",
                                sd->tensors[i].name, r->path);
            }
        }
    }
    return RESNET_OK;
}

/* From a parsed object pickle whose storages r holds: the state dict. */
static int finish(struct reader *r, const struct rn_pval *root,
                  struct rn_state_dict *sd) {
    const struct rn_pval *d = NULL;
    int rc;

    if ((rc = find_state_dict(r, root, &d, &sd->found_under)) ||
        (rc = build_tensors(r, d, sd))) {
        return rc;
    }
    strip_prefix(sd);
    return check_unique(r, sd);
}

/* ------------------------------------------------------------------ */
/* The zip format                                                       */

/* A storage key names a record in data/; it may not climb out of it. */
static bool is_plain_key(const char *key) {
    if (!*key || strcmp(key, ".") == 0 || strcmp(key, "..") == 0) {
        return false;
    }
    for (const char *c = key; *c; c++) {
        if (*c == '/' || *c == '\\') {
            return false;
        }
    }
    return true;
}

/* Reads entry idx of size bytes into a new buffer *out. */
static int read_entry(struct reader *r, zip_t *zip, zip_int64_t idx,
                      const char *entry, uint64_t size, unsigned char **out) {
    zip_file_t *f;
    zip_int64_t got;
    unsigned char *buf;
    zip_stat_t zs;

    *out = NULL;
    if (zip_stat_index(zip, (zip_uint64_t)idx, 0, &zs) != 0 ||
        !(zs.valid & ZIP_STAT_COMP_SIZE) ||
        (zs.comp_size < size &&
         size - zs.comp_size > zs.comp_size * MAX_EXPANSION + (1 << 20))) {
        return rn_error(r->err, RESNET_EFORMAT, 0,
                        "cannot read '%s' in '%s': it claims to expand "
                        "more than %dfold",
                        entry, r->path, MAX_EXPANSION);
    }
    buf = malloc(size ? (size_t)size : 1);
    if (!buf) {
        return rn_error(r->err, RESNET_ENOMEM, 0,
                        "out of memory for '%s' in '%s' (%llu bytes)", entry,
                        r->path, (unsigned long long)size);
    }
    f = zip_fopen_index(zip, (zip_uint64_t)idx, 0);
    got = f ? zip_fread(f, buf, size) : -1;
    if (f) {
        zip_fclose(f);
    }
    if (got < 0 || (uint64_t)got != size) {
        free(buf);
        return rn_error(r->err, RESNET_EFORMAT, 0,
                        "cannot read '%s' in '%s': %s", entry, r->path,
                        f ? "truncated or corrupt record"
                          : zip_strerror(zip));
    }
    *out = buf;
    return RESNET_OK;
}

/* The single top folder "name/" holding data.pkl; its length in *len. */
static int find_top(struct reader *r, zip_t *zip, const char **top,
                    size_t *len) {
    zip_int64_t n = zip_get_num_entries(zip, 0);

    *top = NULL;
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(zip, (zip_uint64_t)i, 0);
        const char *slash = name ? strchr(name, '/') : NULL;

        if (!slash) {
            return rn_error(r->err, RESNET_EFORMAT, 0,
                            "not a PyTorch archive: '%s' has an entry "
                            "outside a top folder",
                            r->path);
        }
        if (!*top) {
            *top = name;
            *len = (size_t)(slash - name) + 1;
        } else if (strncmp(name, *top, *len) != 0) {
            return rn_error(r->err, RESNET_EFORMAT, 0,
                            "not a PyTorch archive: '%s' has more than one "
                            "top folder",
                            r->path);
        }
    }
    if (!*top) {
        return rn_error(r->err, RESNET_EFORMAT, 0,
                        "not a PyTorch archive: '%s' is empty", r->path);
    }
    return RESNET_OK;
}

/* Locates "<top>/<rest>" in zip; -1 when absent. */
static zip_int64_t locate(zip_t *zip, const char *top, size_t top_len,
                          const char *rest, char *name, size_t name_size) {
    int n = snprintf(name, name_size, "%.*s%s", (int)top_len, top, rest);

    if (n < 0 || (size_t)n >= name_size) {
        return -1;
    }
    return zip_name_locate(zip, name, 0);
}

/* Reads each storage's record "<top>/data/<key>", checking its size. */
static int read_records(struct reader *r, zip_t *zip, const char *top,
                        size_t top_len) {
    char rest[300], entry[600];
    int rc;

    for (int i = 0; i < r->n_storages; i++) {
        struct storage *st = &r->storages[i];
        zip_int64_t idx = -1;
        zip_stat_t zs;
        uint64_t want;

        zip_stat_init(&zs);
        if (is_plain_key(st->key) && strlen(st->key) < 256) {
            snprintf(rest, sizeof rest, "data/%s", st->key);
            idx = locate(zip, top, top_len, rest, entry, sizeof entry);
        }
        if (idx < 0) {
            return rn_error(r->err, RESNET_EFORMAT, 0,
                            "storage key '%.200s' in '%s' names no record "
                            "in the archive",
                            st->key, r->path);
        }
        want = (uint64_t)st->root_numel * elem_size(st->dtype);
        if (zip_stat_index(zip, (zip_uint64_t)idx, 0, &zs) != 0 ||
            !(zs.valid & ZIP_STAT_SIZE) || zs.size != want) {
            return rn_error(r->err, RESNET_EFORMAT, 0,
                            "bad record '%s' in '%s' (expected %llu bytes, "
                            "got %llu)",
                            entry, r->path, (unsigned long long)want,
                            (unsigned long long)zs.size);
        }
        if ((rc = read_entry(r, zip, idx, entry, want, &st->owned))) {
            return rc;
        }
        st->data = st->owned;
        report_progress(r, (size_t)want);
    }
    return RESNET_OK;
}

/* Checks "<top>/byteorder" when present: only little-endian is handled. */
static int check_byteorder(struct reader *r, zip_t *zip, const char *top,
                           size_t top_len) {
    char entry[512];
    zip_int64_t idx = locate(zip, top, top_len, "byteorder", entry,
                             sizeof entry);
    unsigned char *buf;
    zip_stat_t zs;
    bool little;
    int rc;

    if (idx < 0) {
        return RESNET_OK;
    }
    if (zip_stat_index(zip, (zip_uint64_t)idx, 0, &zs) != 0 || zs.size > 16) {
        return rn_error(r->err, RESNET_EFORMAT, 0,
                        "bad byteorder record in '%s'", r->path);
    }
    if ((rc = read_entry(r, zip, idx, entry, zs.size, &buf))) {
        return rc;
    }
    little = zs.size == 6 && memcmp(buf, "little", 6) == 0;
    free(buf);
    if (!little) {
        return rn_error(r->err, RESNET_EUNSUPPORTED, 0,
                        "unsupported file '%s': tensors are big-endian",
                        r->path);
    }
    return RESNET_OK;
}

static int load_zip(struct reader *r, struct rn_state_dict *sd) {
    zip_t *zip = NULL;
    struct rn_pickle *p = NULL;
    unsigned char *pkl = NULL;
    const char *top;
    size_t top_len = 0;
    char entry[512];
    zip_int64_t idx;
    zip_stat_t zs;
    int zerr = 0, rc;

    // The archive and its single top folder with data.pkl in it.
    zip = zip_open(r->path, ZIP_RDONLY, &zerr);
    if (!zip) {
        rc = rn_error(r->err, RESNET_EFORMAT, 0,
                      "cannot read '%s': not a valid zip archive", r->path);
        goto out;
    }
    if ((rc = find_top(r, zip, &top, &top_len)) ||
        (rc = check_byteorder(r, zip, top, top_len))) {
        goto out;
    }
    idx = locate(zip, top, top_len, "data.pkl", entry, sizeof entry);
    if (idx < 0 || zip_stat_index(zip, (zip_uint64_t)idx, 0, &zs) != 0 ||
        !(zs.valid & ZIP_STAT_SIZE) || zs.size > MAX_PICKLE_BYTES) {
        rc = rn_error(r->err, RESNET_EFORMAT, 0,
                      "not a PyTorch archive: '%s' has no readable "
                      "<folder>/data.pkl",
                      r->path);
        goto out;
    }

    // The pickle, then the records of the storages it names.
    if ((rc = read_entry(r, zip, idx, entry, zs.size, &pkl)) ||
        (rc = rn_pickle_load(&p, pkl, zs.size, r->path, NULL, r->err)) ||
        (rc = collect_storages(r, p))) {
        goto out;
    }
    for (int i = 0; i < r->n_storages; i++) {
        r->total += (size_t)r->storages[i].root_numel *
                    elem_size(r->storages[i].dtype);
    }
    if ((rc = read_records(r, zip, top, top_len))) {
        goto out;
    }
    sd->format = "zip";
    rc = finish(r, p->root, sd);

out:
    rn_pickle_free(p);
    free(pkl);
    if (zip) {
        zip_discard(zip);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* The legacy format                                                    */

/* The error for a file that is none of the formats read here. */
static int not_weights(struct resnet_error *err, const char *path) {
    return rn_error(err, RESNET_EFORMAT, 0,
                    "'%s' is not a PyTorch file, safetensors file or Git "
                    "LFS pointer",
                    path);
}

/* Runs the next pickle of the file at *pos. */
static int next_pickle(struct reader *r, const unsigned char *buf,
                       size_t len, size_t *pos, struct rn_pickle **p) {
    size_t used = 0;
    int rc = rn_pickle_load(p, buf + *pos, len - *pos, r->path, &used,
                            r->err);

    *pos += used;
    return rc;
}

/* The magic number, protocol version and system info pickles. */
static int check_legacy_head(struct reader *r, const unsigned char *buf,
                             size_t len, size_t *pos) {
    struct rn_pickle *p = NULL;
    const struct rn_pval *v;
    int rc;

    // A file that only starts like a pickle is no PyTorch file at all.
    if (next_pickle(r, buf, len, pos, &p)) {
        return not_weights(r->err, r->path);
    }
    v = p->root;
    rc = v->kind == RN_PV_BIGINT && v->u.str.len == sizeof legacy_magic &&
         memcmp(v->u.str.s, legacy_magic, sizeof legacy_magic) == 0;
    rn_pickle_free(p);
    if (!rc) {
        return rn_error(r->err, RESNET_EFORMAT, 0,
                        "not a PyTorch file: '%s' is a pickle without "
                        "torch.save's magic number",
                        r->path);
    }
    if ((rc = next_pickle(r, buf, len, pos, &p))) {
        return rc;
    }
    rc = p->root->kind == RN_PV_INT && p->root->u.i == 1001;
    rn_pickle_free(p);
    if (!rc) {
        return rn_error(r->err, RESNET_EUNSUPPORTED, 0,
                        "unsupported file '%s': legacy protocol version is "
                        "not 1001",
                        r->path);
    }
    if ((rc = next_pickle(r, buf, len, pos, &p))) {
        return rc;
    }
    v = rn_pval_get(p->root, "little_endian");
    rc = v && v->kind == RN_PV_BOOL && v->u.b;
    rn_pickle_free(p);
    if (!rc) {
        return rn_error(r->err, RESNET_EUNSUPPORTED, 0,
                        "unsupported file '%s': not saved little-endian",
                        r->path);
    }
    return RESNET_OK;
}

/*
 * After the storage-key list: each storage as an 8-byte element count
 * and its bytes, in the list's order.
 */
static int read_legacy_storages(struct reader *r, const struct rn_pval *keys,
                                const unsigned char *buf, size_t len,
                                size_t pos) {
    uint64_t n_bytes = 0;

    if (keys->kind != RN_PV_LIST) {
        return rn_error(r->err, RESNET_EFORMAT, 0,
                        "bad legacy file '%s': no storage key list", r->path);
    }
    for (size_t i = 0; i < keys->u.seq.n; i++) {
        const struct rn_pval *key = keys->u.seq.items[i];
        struct storage *st = key->kind == RN_PV_STR
                                 ? find_storage(r, key->u.str.s)
                                 : NULL;
        uint64_t numel;
        int64_t signed_numel;

        if (!st || st->data) {
            return rn_error(r->err, RESNET_EFORMAT, 0,
                            "bad legacy file '%s': storage list names an "
                            "unknown or repeated key",
                            r->path);
        }
        if (len - pos < 8) {
            n_bytes = 8;
            goto truncated;
        }
        memcpy(&numel, buf + pos, 8); // TODO: assumes a little-endian host
        memcpy(&signed_numel, &numel, 8);
        pos += 8;
        if (numel != (uint64_t)st->root_numel ||
            __builtin_mul_overflow(numel, elem_size(st->dtype), &n_bytes)) {
            return rn_error(r->err, RESNET_EFORMAT, 0,
                            "bad storage '%s' in '%s' (expected %lld "
                            "elements, got %lld)",
                            st->key, r->path, (long long)st->root_numel,
                            (long long)signed_numel);
        }
        if (len - pos < n_bytes) {
            goto truncated;
        }
        st->data = buf + pos;
        pos += (size_t)n_bytes;
        report_progress(r, (size_t)n_bytes);
    }
    return RESNET_OK;

truncated:
    return rn_error(r->err, RESNET_EFORMAT, 0,
                    "truncated file '%s' (expected at least %llu bytes, "
                    "got %zu)",
                    r->path, (unsigned long long)(pos + n_bytes), len);
}

static int load_legacy(struct reader *r, const unsigned char *buf,
                       size_t len, struct rn_state_dict *sd) {
    struct rn_pickle *obj = NULL, *keys = NULL;
    size_t pos = 0;
    int rc;

    if ((rc = check_legacy_head(r, buf, len, &pos)) ||
        (rc = next_pickle(r, buf, len, &pos, &obj)) ||
        (rc = next_pickle(r, buf, len, &pos, &keys)) ||
        (rc = collect_storages(r, obj))) {
        goto out;
    }
    r->total = len - pos;
    if ((rc = read_legacy_storages(r, keys->root, buf, len, pos))) {
        goto out;
    }
    sd->format = "legacy";
    rc = finish(r, obj->root, sd);

out:
    rn_pickle_free(keys);
    rn_pickle_free(obj);
    return rc;
}

/* ------------------------------------------------------------------ */
/* safetensors                                                          */

static int load_safetensors(struct reader *r, struct rn_state_dict *sd) {
    struct rn_safetensors *st = NULL;
    int rc;

    if ((rc = rn_safetensors_load(&st, r->path, r->err))) {
        return rc;
    }
    sd->format = "safetensors";
    sd->tensors = calloc(st->n_tensors ? st->n_tensors : 1,
                         sizeof *sd->tensors);
    if (!sd->tensors) {
        rc = rn_error(r->err, RESNET_ENOMEM, 0, "out of memory");
        goto out;
    }
    for (int i = 0; i < st->n_tensors; i++) {
        const struct rn_tensor *src = &st->tensors[i];
        struct rn_tensor *t = &sd->tensors[sd->n_tensors];
        void *data;

        if ((rc = check_utf8(r, src->name, strlen(src->name)))) {
            goto out;
        }
        if (is_dropped(src->name)) {
            sd->n_dropped++;
            continue;
        }
        *t = *src;
        t->name = strdup(src->name);
        data = malloc(src->n_bytes ? src->n_bytes : 1);
        t->data = data;
        sd->n_tensors++;
        if (!t->name || !data) {
            rc = rn_error(r->err, RESNET_ENOMEM, 0, "out of memory");
            goto out;
        }
        memcpy(data, src->data, src->n_bytes);
        report_progress(r, src->n_bytes);
    }
    strip_prefix(sd);
    rc = check_unique(r, sd);

out:
    rn_safetensors_free(st);
    return rc;
}

/* ------------------------------------------------------------------ */

/* What the first bytes say the file is. */
enum kind { K_ZIP, K_LEGACY, K_SAFETENSORS, K_LFS, K_UNKNOWN };

static enum kind sniff(const unsigned char *b, size_t len) {
    static const char lfs[] = "version https://git-lfs.github.com/spec/";

    if (len >= 4 && memcmp(b, "PK\x03\x04", 4) == 0) {
        return K_ZIP;
    }
    if (len >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5) {
        return K_LEGACY;
    }
    if (len >= sizeof lfs - 1 && memcmp(b, lfs, sizeof lfs - 1) == 0) {
        return K_LFS;
    }
    if (len >= 9 && b[8] == '{') {
        return K_SAFETENSORS;
    }
    return K_UNKNOWN;
}

/*
 * Maps the regular file at path read-only (checked before opening, so a
 * FIFO cannot block); *map is NULL for an empty file.
 */
static int map_file(const char *path, void **map, size_t *len,
                    struct resnet_error *err) {
    struct stat st;
    int fd, e;

    *map = NULL;
    *len = 0;
    if (stat(path, &st) != 0) {
        return rn_error(err, RESNET_EIO, errno, "cannot open '%s'", path);
    }
    // As lib/safetensors.c words it for classify and inspect.
    if (!S_ISREG(st.st_mode)) {
        return rn_error(err, RESNET_EIO, S_ISDIR(st.st_mode) ? EISDIR : 0,
                        "cannot read '%s'%s", path,
                        S_ISDIR(st.st_mode) ? "" : ": not a regular file");
    }
    fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        e = fd < 0 ? errno : EINVAL;
        if (fd >= 0) {
            close(fd);
        }
        return rn_error(err, RESNET_EIO, e, "cannot open '%s'", path);
    }
    // TODO: a file cut short while mapped raises SIGBUS; reading it into
    // memory instead would cost a copy of every input.
    *len = (size_t)st.st_size;
    if (*len > 0) {
        *map = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
        e = errno;
        if (*map == MAP_FAILED) {
            *map = NULL;
            close(fd);
            return rn_error(err, RESNET_EIO, e, "cannot read '%s'", path);
        }
    }
    close(fd);
    return RESNET_OK;
}

/* Runs the reader the first bytes of the file ask for. */
static int dispatch(struct reader *r, const unsigned char *map, size_t len,
                    struct rn_state_dict *sd) {
    switch (sniff(map ? map : (const unsigned char *)"", len)) {
    case K_ZIP:
        return load_zip(r, sd);
    case K_LEGACY:
        return load_legacy(r, map, len, sd);
    case K_SAFETENSORS:
        return load_safetensors(r, sd);
    case K_LFS:
        // The wording of lib/safetensors.c, for classify and inspect.
        return rn_error(r->err, RESNET_EFORMAT, 0,
                        "'%s' is a Git LFS pointer, not weights "
                        "(run git lfs pull)",
                        r->path);
    default:
        return not_weights(r->err, r->path);
    }
}

int rn_state_dict_load(struct rn_state_dict **out, const char *path,
                       rn_progress_fn progress, void *progress_ctx,
                       struct resnet_error *err) {
    struct reader r = {.path = path, .progress = progress,
                       .progress_ctx = progress_ctx, .err = err};
    struct rn_state_dict *sd = NULL;
    void *map = NULL;
    size_t len = 0;
    int rc;

    *out = NULL;
    if ((rc = map_file(path, &map, &len, err))) {
        return rc;
    }
    sd = calloc(1, sizeof *sd);
    rc = sd ? dispatch(&r, map, len, sd)
            : rn_error(err, RESNET_ENOMEM, 0, "out of memory");

    for (int i = 0; i < r.n_storages; i++) {
        free(r.storages[i].owned);
    }
    free(r.storages);
    if (map) {
        munmap(map, len);
    }
    if (rc) {
        rn_state_dict_free(sd);
    } else {
        *out = sd;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* Changing dtypes                                                      */

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff, bits;
    float f;

    if (exp == 0x1f) {
        bits = sign | 0x7f800000 | man << 13;
    } else if (exp != 0) {
        bits = sign | (exp + 112) << 23 | man << 13;
    } else if (man == 0) {
        bits = sign;
    } else {
        // Subnormal: normalise the mantissa.
        exp = 113;
        while (!(man & 0x400)) {
            man <<= 1;
            exp--;
        }
        bits = sign | exp << 23 | (man & 0x3ff) << 13;
    }
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest even, overflow to infinity, NaN kept quiet. */
static uint16_t f32_to_f16(float f) {
    uint32_t x, sign, exp, man;

    memcpy(&x, &f, sizeof x);
    sign = (x >> 16) & 0x8000;
    exp = (x >> 23) & 0xff;
    man = x & 0x7fffff;
    if (exp == 0xff) {
        return (uint16_t)(sign | 0x7c00 | (man ? 0x200 | man >> 13 : 0));
    }
    if (exp > 142) {
        return (uint16_t)(sign | 0x7c00);
    }
    if (exp >= 113) {
        // Normal: drop 13 bits with rounding; a carry may reach infinity.
        uint32_t h = (exp - 112) << 10 | man >> 13, rest = man & 0x1fff;

        if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) {
            h++;
        }
        return (uint16_t)(sign | h);
    }
    if (exp < 102) {
        return (uint16_t)sign;
    }
    // Subnormal in f16: shift the full mantissa into place, then round.
    {
        uint32_t m = man | 0x800000, shift = 126 - exp;
        uint32_t h = m >> shift, rest = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);

        if (rest > half || (rest == half && (h & 1))) {
            h++;
        }
        return (uint16_t)(sign | h);
    }
}

static float bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;

    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint16_t f32_to_bf16(float f) {
    uint32_t x;

    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffff) > 0x7f800000) {
        return (uint16_t)(x >> 16 | 0x40); // quiet NaN
    }
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* Element i of t as float (t is F32, F16, BF16 or F64). */
static float get_f32(const struct rn_tensor *t, size_t i) {
    const unsigned char *p = (const unsigned char *)t->data;
    uint16_t h;
    float f;
    double d;

    switch (t->dtype) {
    case RN_DTYPE_F16:
        memcpy(&h, p + 2 * i, 2);
        return f16_to_f32(h);
    case RN_DTYPE_BF16:
        memcpy(&h, p + 2 * i, 2);
        return bf16_to_f32(h);
    case RN_DTYPE_F64:
        memcpy(&d, p + 8 * i, 8);
        return (float)d;
    default:
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
}

static bool is_float(enum rn_dtype dtype) {
    return dtype == RN_DTYPE_F32 || dtype == RN_DTYPE_F16 ||
           dtype == RN_DTYPE_BF16 || dtype == RN_DTYPE_F64;
}

int rn_state_dict_cast(struct rn_state_dict *sd, enum rn_dtype dtype,
                       int *n_narrowed_f64, struct resnet_error *err) {
    size_t es = elem_size(dtype);

    if (dtype != RN_DTYPE_F32 && dtype != RN_DTYPE_F16 &&
        dtype != RN_DTYPE_BF16) {
        return rn_error(err, RESNET_EINVAL, 0,
                        "cannot convert to dtype %d", (int)dtype);
    }
    *n_narrowed_f64 = 0;
    for (int k = 0; k < sd->n_tensors; k++) {
        struct rn_tensor *t = &sd->tensors[k];
        unsigned char *dst;

        if (!is_float(t->dtype) || t->dtype == dtype) {
            continue;
        }
        dst = malloc(t->n_elems ? t->n_elems * es : 1);
        if (!dst) {
            return rn_error(err, RESNET_ENOMEM, 0,
                            "out of memory converting '%s'", t->name);
        }
        *n_narrowed_f64 += t->dtype == RN_DTYPE_F64;
        for (size_t i = 0; i < t->n_elems; i++) {
            float f = get_f32(t, i);
            uint16_t h;

            if (dtype == RN_DTYPE_F32) {
                memcpy(dst + 4 * i, &f, 4);
                continue;
            }
            h = dtype == RN_DTYPE_F16 ? f32_to_f16(f) : f32_to_bf16(f);
            memcpy(dst + 2 * i, &h, 2);
        }
        free((void *)t->data);
        t->data = dst;
        t->dtype = dtype;
        t->n_bytes = t->n_elems * es;
    }
    return RESNET_OK;
}
