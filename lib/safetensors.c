/*
 * safetensors files: an 8-byte little-endian header length N, N bytes of
 * JSON naming each tensor's dtype, shape and byte range, then the data.
 * Reading maps the file and checks every header value against the file
 * before use; writing goes through lib/atomic.c, so a file appears whole.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "internal.h"

/* The reference implementation refuses larger headers too. */
#define MAX_HEADER_SIZE 100000000u

/* Integers above 2^53 do not survive cJSON's doubles. */
#define MAX_JSON_INT 9007199254740992.0

static const char lfs_magic[] = "version https://git-lfs.github.com/spec/";

/* torch.save's zip archive; a legacy file or bare pickle starts 0x80. */
static const char zip_magic[] = "PK\x03\x04";

static const struct {
    const char *name;
    enum rn_dtype dtype;
    size_t size;
} dtypes[] = {
    {"F32", RN_DTYPE_F32, 4},   {"F16", RN_DTYPE_F16, 2},
    {"BF16", RN_DTYPE_BF16, 2}, {"F64", RN_DTYPE_F64, 8},
    {"I64", RN_DTYPE_I64, 8},   {"I32", RN_DTYPE_I32, 4},
    {"I16", RN_DTYPE_I16, 2},   {"I8", RN_DTYPE_I8, 1},
    {"U8", RN_DTYPE_U8, 1},     {"BOOL", RN_DTYPE_BOOL, 1},
};
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

/* Valid safetensors dtypes that enum rn_dtype has no place for. */
static const char *const other_dtypes[] = {
    "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4",
    "F6_E2M3", "F6_E3M2", "C64",
};
#define N_OTHER_DTYPES (sizeof other_dtypes / sizeof other_dtypes[0])

/* ------------------------------------------------------------------ */
/* Reading                                                              */

static uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

/* Opens and maps path read-only; a zero-length file maps nothing. */
static int map_file(const char *path, void **map, size_t *size,
                    struct resnet_error *err) {
    struct stat sb;
    int fd, rc = RESNET_OK;

    *map = NULL;
    *size = 0;
    // O_NONBLOCK: opening a FIFO must not wait for a writer.
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return rn_error(err, RESNET_EIO, errno, "cannot open '%s'", path);
    }
    if (fstat(fd, &sb) != 0) {
        rc = rn_error(err, RESNET_EIO, errno, "cannot read '%s'", path);
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = rn_error(err, RESNET_EIO, S_ISDIR(sb.st_mode) ? EISDIR : 0,
                      "cannot read '%s'%s", path,
                      S_ISDIR(sb.st_mode) ? "" : ": not a regular file");
        goto out;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        rc = rn_error(err, RESNET_ENOMEM, 0, "'%s' is too large to map",
                      path);
        goto out;
    }
    *size = (size_t)sb.st_size;
    if (*size == 0) {
        goto out;
    }
    *map = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (*map == MAP_FAILED) {
        *map = NULL;
        rc = rn_error(err, RESNET_EIO, errno, "cannot map '%s'", path);
    }

out:
    close(fd);
    return rc;
}

/*
 * Whether a file that is no safetensors file looks like one torch.save
 * wrote: a zip archive, or a pickle (protocol 2 and up start with 0x80,
 * as does the legacy format's magic number).
 */
static bool is_torch_file(const unsigned char *map, size_t size) {
    return (size >= sizeof zip_magic - 1
            && memcmp(map, zip_magic, sizeof zip_magic - 1) == 0)
           || (size >= 1 && map[0] == 0x80);
}

/* Checks the preamble and finds the JSON header's length. */
static int check_preamble(const unsigned char *map, size_t size,
                          const char *path, size_t *header_len,
                          struct resnet_error *err) {
    uint64_t n = size >= 8 ? load_le64(map) : 0;
    bool ok = size >= 8 && n <= size - 8 && n <= MAX_HEADER_SIZE && n >= 2
              && map[8] == '{';

    if (size >= sizeof lfs_magic - 1
        && memcmp(map, lfs_magic, sizeof lfs_magic - 1) == 0) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "'%s' is a Git LFS pointer, not weights "
                        "(run git lfs pull)", path);
    }

    // Only a file that is no safetensors file: 0x80 can start a length.
    if (!ok && is_torch_file(map, size)) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "'%s' is a PyTorch file, not safetensors "
                        "(convert it with resnet convert)", path);
    }
    if (size < 8) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "truncated safetensors file '%s' "
                        "(expected at least 8 bytes, got %zu)", path, size);
    }
    if (n > size - 8) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "truncated safetensors file '%s' (header of %llu "
                        "bytes, but only %zu bytes follow)",
                        path, (unsigned long long)n, size - 8);
    }
    if (n > MAX_HEADER_SIZE) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "bad safetensors header in '%s' (%llu bytes, "
                        "at most %u allowed)",
                        path, (unsigned long long)n, MAX_HEADER_SIZE);
    }
    if (!ok) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "not a safetensors file '%s' "
                        "(the header is not a JSON object)", path);
    }
    *header_len = (size_t)n;
    return RESNET_OK;
}

/* A JSON number that is a whole number in [0, 2^53]; false otherwise. */
static bool json_uint(const cJSON *item, uint64_t *out) {
    double d;

    if (!cJSON_IsNumber(item)) {
        return false;
    }
    d = item->valuedouble;
    if (!(d >= 0.0 && d <= MAX_JSON_INT) || floor(d) != d) {
        return false;
    }
    *out = (uint64_t)d;
    return true;
}

/* Parses "dtype"; unknown names are EFORMAT, valid unhandled ones not. */
static int parse_dtype(struct rn_tensor *t, const cJSON *entry,
                       const char *path, struct resnet_error *err) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(entry, "dtype");

    if (!cJSON_IsString(item)) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "bad tensor '%s' in '%s': "
                        "missing or non-string 'dtype'", t->name, path);
    }
    for (size_t i = 0; i < N_DTYPES; i++) {
        if (strcmp(item->valuestring, dtypes[i].name) == 0) {
            t->dtype = dtypes[i].dtype;
            return RESNET_OK;
        }
    }
    for (size_t i = 0; i < N_OTHER_DTYPES; i++) {
        if (strcmp(item->valuestring, other_dtypes[i]) == 0) {
            return rn_error(err, RESNET_EUNSUPPORTED, 0,
                            "unsupported dtype '%s' of tensor '%s' in '%s'",
                            item->valuestring, t->name, path);
        }
    }
    return rn_error(err, RESNET_EFORMAT, 0,
                    "bad tensor '%s' in '%s': unknown dtype '%.32s'",
                    t->name, path, item->valuestring);
}

/* Parses "shape" into t->n_dims, t->shape and t->n_elems. */
static int parse_shape(struct rn_tensor *t, const cJSON *entry,
                       const char *path, struct resnet_error *err) {
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *dim;
    size_t n_elems = 1;
    int n_dims;

    if (!cJSON_IsArray(shape)) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "bad tensor '%s' in '%s': "
                        "missing or non-array 'shape'", t->name, path);
    }
    n_dims = cJSON_GetArraySize(shape);
    if (n_dims > RN_MAX_DIMS) {
        return rn_error(err, RESNET_EUNSUPPORTED, 0,
                        "tensor '%s' in '%s' has %d dimensions "
                        "(at most %d supported)",
                        t->name, path, n_dims, RN_MAX_DIMS);
    }
    t->n_dims = 0;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t d;
        if (!json_uint(dim, &d)) {
            return rn_error(err, RESNET_EFORMAT, 0,
                            "bad tensor '%s' in '%s': shape entry %d is "
                            "not a non-negative integer",
                            t->name, path, t->n_dims);
        }
        if (!rn_mul_size(n_elems, (size_t)d, &n_elems)) {
            return rn_error(err, RESNET_EFORMAT, 0,
                            "bad tensor '%s' in '%s': "
                            "element count overflows", t->name, path);
        }
        t->shape[t->n_dims++] = (int64_t)d;
    }
    t->n_elems = n_elems;
    return RESNET_OK;
}

/* Parses "data_offsets" and points t at its bytes in the data area. */
static int parse_offsets(struct rn_tensor *t, const cJSON *entry,
                         const unsigned char *data, size_t data_size,
                         const char *path, struct resnet_error *err) {
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(entry,
                                                         "data_offsets");
    uint64_t begin, end;
    size_t n_bytes;

    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2
        || !json_uint(cJSON_GetArrayItem(offs, 0), &begin)
        || !json_uint(cJSON_GetArrayItem(offs, 1), &end)) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "bad tensor '%s' in '%s': 'data_offsets' is not "
                        "two non-negative integers", t->name, path);
    }
    if (begin > end) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "bad tensor '%s' in '%s': data_offsets [%llu, %llu] "
                        "end before they begin", t->name, path,
                        (unsigned long long)begin, (unsigned long long)end);
    }
    if (end > data_size) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "bad tensor '%s' in '%s': data_offsets [%llu, %llu] "
                        "outside the data area (%zu bytes)",
                        t->name, path, (unsigned long long)begin,
                        (unsigned long long)end, data_size);
    }
    if (!rn_mul_size(t->n_elems, rn_dtype_size(t->dtype), &n_bytes)
        || n_bytes != end - begin) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "bad tensor '%s' in '%s': %llu bytes of data for "
                        "%zu elements of %s",
                        t->name, path, (unsigned long long)(end - begin),
                        t->n_elems, rn_dtype_name(t->dtype));
    }
    t->data = data + begin;
    t->n_bytes = n_bytes;
    return RESNET_OK;
}

/* Keeps __metadata__, a map of strings, as compact JSON text. */
static int parse_metadata(struct rn_safetensors *st, const cJSON *meta,
                          const char *path, struct resnet_error *err) {
    const cJSON *item;
    char *text;

    if (!cJSON_IsObject(meta)) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "bad safetensors header in '%s': "
                        "'__metadata__' is not an object", path);
    }
    cJSON_ArrayForEach(item, meta) {
        if (!cJSON_IsString(item)) {
            return rn_error(err, RESNET_EFORMAT, 0,
                            "bad safetensors header in '%s': "
                            "'__metadata__.%s' is not a string",
                            path, item->string);
        }
    }
    text = cJSON_PrintUnformatted(meta);
    st->metadata_json = text ? strdup(text) : NULL;
    cJSON_free(text);
    if (!st->metadata_json) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "out of memory reading '%s'", path);
    }
    return RESNET_OK;
}

static int cmp_by_offset(const void *a, const void *b) {
    const struct rn_tensor *x = *(const struct rn_tensor *const *)a;
    const struct rn_tensor *y = *(const struct rn_tensor *const *)b;
    const char *px = x->data, *py = y->data;

    if (px != py) {
        return px < py ? -1 : 1;
    }
    return x->n_bytes < y->n_bytes ? -1 : x->n_bytes > y->n_bytes;
}

static int cmp_by_name(const void *a, const void *b) {
    const struct rn_tensor *x = *(const struct rn_tensor *const *)a;
    const struct rn_tensor *y = *(const struct rn_tensor *const *)b;

    return strcmp(x->name, y->name);
}

/*
 * Checks that names are unique, and that the tensors tile the data area
 * exactly, in some order: no overlap, no gap, nothing after the last.
 */
static int check_layout(const struct rn_safetensors *st,
                        const unsigned char *data, size_t data_size,
                        const char *path, struct resnet_error *err) {
    const struct rn_tensor **order;
    size_t pos = 0;
    int rc = RESNET_OK;

    order = malloc(sizeof *order * (st->n_tensors ? st->n_tensors : 1));
    if (!order) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "out of memory reading '%s'", path);
    }
    for (int i = 0; i < st->n_tensors; i++) {
        order[i] = &st->tensors[i];
    }

    // Names first: a key given twice would also overlap itself.
    qsort(order, st->n_tensors, sizeof *order, cmp_by_name);
    for (int i = 1; i < st->n_tensors; i++) {
        if (strcmp(order[i - 1]->name, order[i]->name) == 0) {
            rc = rn_error(err, RESNET_EFORMAT, 0,
                          "bad safetensors header in '%s': "
                          "duplicate tensor '%s'", path, order[i]->name);
            goto out;
        }
    }

    qsort(order, st->n_tensors, sizeof *order, cmp_by_offset);
    for (int i = 0; i < st->n_tensors; i++) {
        size_t begin = (size_t)((const unsigned char *)order[i]->data - data);
        if (begin != pos) {
            rc = rn_error(err, RESNET_EFORMAT, 0,
                          "bad tensor '%s' in '%s': data at byte %zu %s "
                          "the previous tensor's end (byte %zu)",
                          order[i]->name, path, begin,
                          begin < pos ? "overlaps" : "leaves a gap after",
                          pos);
            goto out;
        }
        pos = begin + order[i]->n_bytes;
    }
    if (pos != data_size) {
        rc = rn_error(err, RESNET_EFORMAT, 0,
                      "bad safetensors file '%s': %zu bytes of data after "
                      "the last tensor", path, data_size - pos);
        goto out;
    }


out:
    free(order);
    return rc;
}

/* Allocates the tensor table and name storage for the entries of root. */
static int alloc_tables(struct rn_safetensors *st, const cJSON *root,
                        const char *path, struct resnet_error *err) {
    const cJSON *item;
    size_t n = 0, n_chars = 0;

    cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "__metadata__") != 0) {
            n++;
            n_chars += strlen(item->string) + 1;
        }
    }
    if (n > INT_MAX) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "bad safetensors header in '%s': too many tensors",
                        path);
    }
    st->n_tensors = (int)n;
    st->tensors = calloc(n ? n : 1, sizeof *st->tensors);
    st->strings = malloc(n_chars ? n_chars : 1);
    if (!st->tensors || !st->strings) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "out of memory reading '%s'", path);
    }
    return RESNET_OK;
}

/* Parses the header text: one JSON object, then only whitespace. */
static int parse_json(cJSON **root, const char *json, size_t len,
                      const char *path, struct resnet_error *err) {
    const char *end = NULL, *at;
    size_t off;

    *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (*root) {
        while (end < json + len && (*end == ' ' || *end == '\n'
                                    || *end == '\t' || *end == '\r')) {
            end++;
        }
        if (end == json + len && cJSON_IsObject(*root)) {
            return RESNET_OK;
        }
    }

    // Point at the first bad byte, counted from the start of the file.
    at = *root ? end : cJSON_GetErrorPtr();
    off = at && at >= json && at <= json + len ? (size_t)(at - json) : 0;
    cJSON_Delete(*root);
    *root = NULL;
    return rn_error(err, RESNET_EFORMAT, 0,
                    "bad safetensors header in '%s': "
                    "not a JSON object (error at byte %zu of the file)",
                    path, off + 8);
}

/*
 * Checks what cJSON's tree hides, on header text that has parsed: a NUL
 * in a string (it would cut a tensor name short) and a number written
 * with a fraction or an exponent (16.0 is no shape entry; every number in
 * a header is a shape entry or an offset).
 */
static int check_json_text(const char *json, size_t len, const char *path,
                           struct resnet_error *err) {
    size_t i = 0;

    while (i < len) {
        size_t start = i;
        bool is_int = true;

        if (json[i] == '"') {
            for (i++; i < len && json[i] != '"'; i += json[i] == '\\' ? 2 : 1) {
                if (json[i] == '\0' || (json[i] == '\\' && i + 5 < len
                                        && memcmp(json + i + 1, "u0000", 5)
                                               == 0)) {
                    return rn_error(err, RESNET_EFORMAT, 0,
                                    "bad safetensors header in '%s': NUL "
                                    "character in the string at byte %zu "
                                    "of the file", path, start + 8);
                }
            }
            i++;
            continue;
        }
        if (json[i] != '-' && (json[i] < '0' || json[i] > '9')) {
            i++;
            continue;
        }
        for (; i < len && json[i] && strchr("0123456789+-.eE", json[i]); i++) {
            is_int = is_int && !strchr(".eE", json[i]);
        }
        if (!is_int) {
            return rn_error(err, RESNET_EFORMAT, 0,
                            "bad safetensors header in '%s': '%.*s' at byte "
                            "%zu of the file is not an integer", path,
                            (int)(i - start < 32 ? i - start : 32),
                            json + start, start + 8);
        }
    }
    return RESNET_OK;
}

/* Fills t, already named, from its header entry. */
static int parse_tensor(struct rn_tensor *t, const cJSON *entry,
                        const unsigned char *data, size_t data_size,
                        const char *path, struct resnet_error *err) {
    int rc;

    if (!cJSON_IsObject(entry)) {
        return rn_error(err, RESNET_EFORMAT, 0,
                        "bad tensor '%s' in '%s': not a JSON object",
                        t->name, path);
    }
    rc = parse_dtype(t, entry, path, err);
    if (!rc) {
        rc = parse_shape(t, entry, path, err);
    }
    if (!rc) {
        rc = parse_offsets(t, entry, data, data_size, path, err);
    }
    return rc;
}

/* Parses the JSON header and fills st's tables; data follows the header. */
static int parse_header(struct rn_safetensors *st, const char *json,
                        size_t len, const unsigned char *data,
                        size_t data_size, const char *path,
                        struct resnet_error *err) {
    cJSON *root = NULL;
    const cJSON *item;
    char *names;
    int i = 0, rc;

    rc = parse_json(&root, json, len, path, err);
    if (rc) {
        goto out;
    }
    rc = check_json_text(json, len, path, err);
    if (rc) {
        goto out;
    }
    rc = alloc_tables(st, root, path, err);
    if (rc) {
        goto out;
    }

    // Tensors in file order; their names go one after another in strings.
    names = st->strings;
    cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            rc = st->metadata_json
                 ? rn_error(err, RESNET_EFORMAT, 0,
                            "bad safetensors header in '%s': "
                            "'__metadata__' appears twice", path)
                 : parse_metadata(st, item, path, err);
        } else {
            struct rn_tensor *t = &st->tensors[i++];
            t->name = strcpy(names, item->string);
            names += strlen(names) + 1;
            rc = parse_tensor(t, item, data, data_size, path, err);
        }
        if (rc) {
            goto out;
        }
    }
    rc = check_layout(st, data, data_size, path, err);

out:
    cJSON_Delete(root);
    return rc;
}

int rn_safetensors_load(struct rn_safetensors **out, const char *path,
                        struct resnet_error *err) {
    struct rn_safetensors *st;
    const unsigned char *bytes;
    size_t header_len = 0;
    int rc;

    *out = NULL;
    st = calloc(1, sizeof *st);
    if (!st) {
        return rn_error(err, RESNET_ENOMEM, 0,
                        "out of memory reading '%s'", path);
    }
    rc = map_file(path, &st->map, &st->map_size, err);
    if (rc) {
        goto out;
    }
    bytes = st->map;

    // An empty file has no preamble: report it as truncated.
    rc = check_preamble(st->map ? bytes : (const unsigned char *)"",
                        st->map_size, path, &header_len, err);
    if (rc) {
        goto out;
    }
    rc = parse_header(st, (const char *)bytes + 8, header_len,
                      bytes + 8 + header_len,
                      st->map_size - 8 - header_len, path, err);

out:
    if (rc) {
        rn_safetensors_free(st);
    } else {
        *out = st;
    }
    return rc;
}

void rn_safetensors_free(struct rn_safetensors *st) {
    if (!st) {
        return;
    }
    if (st->map) {
        munmap(st->map, st->map_size);
    }
    free(st->metadata_json);
    free(st->strings);
    free(st->tensors);
    free(st);
}

const struct rn_tensor *rn_safetensors_find(const struct rn_safetensors *st,
                                            const char *name) {
    for (int i = 0; i < st->n_tensors; i++) {
        if (strcmp(st->tensors[i].name, name) == 0) {
            return &st->tensors[i];
        }
    }
    return NULL;
}

size_t rn_dtype_size(enum rn_dtype dtype) {
    for (size_t i = 0; i < N_DTYPES; i++) {
        if (dtypes[i].dtype == dtype) {
            return dtypes[i].size;
        }
    }
    return 0;
}

const char *rn_dtype_name(enum rn_dtype dtype) {
    for (size_t i = 0; i < N_DTYPES; i++) {
        if (dtypes[i].dtype == dtype) {
            return dtypes[i].name;
        }
    }
    return "?";
}

/* ------------------------------------------------------------------ */
/* Conversion to float32                                                */

static float f32_from_bits(uint32_t bits) {
    float f;

    memcpy(&f, &bits, sizeof f);
    return f;
}

/* IEEE half to float, exactly: every half is a float. */
static float half_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = h >> 10 & 0x1f;
    uint32_t mant = h & 0x3ff;

    if (exp == 0x1f) {
        // Inf, or NaN with its payload kept.
        return f32_from_bits(sign | 0x7f800000u | mant << 13);
    }
    if (exp == 0) {
        // Zero or subnormal: mant * 2^-24, exact in float.
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    return f32_from_bits(sign | (exp + 127 - 15) << 23 | mant << 13);
}

int rn_tensor_to_f32(const struct rn_tensor *t, float *out,
                     struct resnet_error *err) {
    const unsigned char *p = t->data;

    // Bytes are assembled one by one: the data may be unaligned.
    switch (t->dtype) {
    case RN_DTYPE_F32:
        for (size_t i = 0; i < t->n_elems; i++, p += 4) {
            out[i] = f32_from_bits((uint32_t)p[0] | (uint32_t)p[1] << 8
                                   | (uint32_t)p[2] << 16
                                   | (uint32_t)p[3] << 24);
        }
        return RESNET_OK;
    case RN_DTYPE_F16:
        for (size_t i = 0; i < t->n_elems; i++, p += 2) {
            out[i] = half_to_f32((uint16_t)(p[0] | p[1] << 8));
        }
        return RESNET_OK;
    case RN_DTYPE_BF16:
        for (size_t i = 0; i < t->n_elems; i++, p += 2) {
            out[i] = f32_from_bits((uint32_t)p[0] << 16
                                   | (uint32_t)p[1] << 24);
        }
        return RESNET_OK;
    case RN_DTYPE_F64:
        for (size_t i = 0; i < t->n_elems; i++, p += 8) {
            uint64_t bits = load_le64(p);
            double d;
            memcpy(&d, &bits, sizeof d);
            out[i] = (float)d;  // rounds to nearest, ties to even
        }
        return RESNET_OK;
    default:
        return rn_error(err, RESNET_EUNSUPPORTED, 0,
                        "cannot convert tensor '%s' of dtype %s to float",
                        t->name, rn_dtype_name(t->dtype));
    }
}

/* ------------------------------------------------------------------ */
/* Writing                                                              */

/* Refuses tensors whose description does not match their data. */
static int check_tensors(const struct rn_tensor *tensors, int n,
                         const char *path, struct resnet_error *err) {
    for (int i = 0; i < n; i++) {
        const struct rn_tensor *t = &tensors[i];
        size_t n_elems = 1, n_bytes;
        if (!t->name || strcmp(t->name, "__metadata__") == 0
            || rn_dtype_size(t->dtype) == 0
            || t->n_dims < 0 || t->n_dims > RN_MAX_DIMS) {
            return rn_error(err, RESNET_EINVAL, 0,
                            "cannot write '%s': bad tensor %d", path, i);
        }
        for (int d = 0; d < t->n_dims; d++) {
            if (t->shape[d] < 0
                || !rn_mul_size(n_elems, (size_t)t->shape[d], &n_elems)) {
                n_elems = SIZE_MAX;
                break;
            }
        }
        if (n_elems != t->n_elems
            || !rn_mul_size(n_elems, rn_dtype_size(t->dtype), &n_bytes)
            || n_bytes != t->n_bytes || (n_bytes && !t->data)) {
            return rn_error(err, RESNET_EINVAL, 0,
                            "cannot write '%s': shape, size and data of "
                            "tensor '%s' disagree", path, t->name);
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(tensors[j].name, t->name) == 0) {
                return rn_error(err, RESNET_EINVAL, 0,
                                "cannot write '%s': tensor '%s' given twice",
                                path, t->name);
            }
        }
    }
    return RESNET_OK;
}

/* An unsigned integer as cJSON raw text, exact beyond 2^53. */
static cJSON *raw_uint(uint64_t v) {
    char num[24];

    snprintf(num, sizeof num, "%llu", (unsigned long long)v);
    return cJSON_CreateRaw(num);
}

/* One tensor's header entry, its data at [offset, offset + n_bytes). */
static cJSON *tensor_entry(const struct rn_tensor *t, uint64_t offset) {
    cJSON *e = cJSON_CreateObject();
    cJSON *shape = cJSON_AddArrayToObject(e, "shape");
    cJSON *range = cJSON_AddArrayToObject(e, "data_offsets");

    cJSON_AddStringToObject(e, "dtype", rn_dtype_name(t->dtype));
    for (int d = 0; d < t->n_dims; d++) {
        cJSON_AddItemToArray(shape, raw_uint((uint64_t)t->shape[d]));
    }
    cJSON_AddItemToArray(range, raw_uint(offset));
    cJSON_AddItemToArray(range, raw_uint(offset + t->n_bytes));
    return e;
}

/*
 * The JSON header as a new string in *out (*len bytes): __metadata__
 * first, then the tensors in the given order with consecutive data
 * offsets, padded with spaces to a multiple of 8 bytes so the data after
 * the 8-byte length stays aligned. cJSON escapes the names; its calls
 * accept NULL, so one check at the end catches any failed allocation.
 */
static int build_header(char **out, size_t *len,
                        const struct rn_tensor *tensors, int n,
                        const char *const *metadata, int n_meta,
                        const char *path, struct resnet_error *err) {
    cJSON *root = cJSON_CreateObject();
    uint64_t offset = 0;
    char *text, *padded = NULL;

    if (n_meta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");

        for (int i = 0; i < n_meta; i++) {
            cJSON_AddStringToObject(meta, metadata[2 * i],
                                    metadata[2 * i + 1]);
        }
    }
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToObject(root, tensors[i].name,
                              tensor_entry(&tensors[i], offset));
        offset += tensors[i].n_bytes;
    }
    text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);

    if (text) {
        *len = (strlen(text) + 7) / 8 * 8;
        padded = realloc(text, *len + 1);
    }
    if (!padded) {
        free(text);
        return rn_error(err, RESNET_ENOMEM, 0,
                        "out of memory writing '%s'", path);
    }
    memset(padded + strlen(padded), ' ', *len - strlen(padded));
    padded[*len] = '\0';
    *out = padded;
    return RESNET_OK;
}

/* Writes length, header and data to f. */
static int write_body(struct rn_atomic *f, const char *header,
                      size_t header_len, const struct rn_tensor *tensors,
                      int n, struct resnet_error *err) {
    unsigned char len[8];
    int rc;

    for (int i = 0; i < 8; i++) {
        len[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    }
    rc = rn_atomic_write(f, len, sizeof len, err);
    if (!rc) {
        rc = rn_atomic_write(f, header, header_len, err);
    }
    for (int i = 0; !rc && i < n; i++) {
        rc = rn_atomic_write(f, tensors[i].data, tensors[i].n_bytes, err);
    }
    return rc;
}

int rn_safetensors_write(const char *path, const struct rn_tensor *tensors,
                         int n, const char *const *metadata, int n_meta,
                         bool overwrite, struct resnet_error *err) {
    char *header = NULL;
    size_t header_len = 0;
    struct rn_atomic f = {0};
    int rc;

    if ((rc = check_tensors(tensors, n, path, err)) ||
        (rc = build_header(&header, &header_len, tensors, n, metadata,
                           n_meta, path, err))) {
        goto out;
    }

    // Each step removes the temporary file again if it fails.
    if ((rc = rn_atomic_open(&f, path, overwrite, err)) ||
        (rc = write_body(&f, header, header_len, tensors, n, err))) {
        goto out;
    }
    rc = rn_atomic_commit(&f, err);

out:
    free(header);
    return rc;
}
