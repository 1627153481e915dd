/* Safetensors reader: validate the whole header against the file, then convert on read. */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/atomic_file.h"
#include "core/error.h"

/* The format's own cap on the header (safetensors refuses larger ones too). */
#define MAX_HEADER_BYTES (100u << 20)

static int dtype_size(const char *dtype) {
    static const struct {
        const char *name;
        int bytes;
    } known[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
                 {"I16", 2}, {"I8", 1},  {"U64", 8}, {"U32", 4},  {"U16", 2}, {"U8", 1},
                 {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(dtype, known[i].name))
            return known[i].bytes;
    return 0;
}

float mn_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1f) { /* inf, nan */
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) { /* normal */
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) { /* zero */
        bits = sign;
    } else { /* subnormal: normalise the mantissa */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400u));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float mn_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static int cmp_begin(const void *a, const void *b) {
    const mn_st_tensor *x = *(const mn_st_tensor *const *)a, *y = *(const mn_st_tensor *const *)b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

/* Reads one header entry into t. */
static mn_status parse_tensor(const char *path, const char *name, json_t *v, uint64_t data_bytes, mn_st_tensor *t) {
    if (!json_is_object(v))
        return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s': header entry is not an object", path, name);
    json_t *dtype = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape");
    json_t *offsets = json_object_get(v, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offsets) || json_array_size(offsets) != 2)
        return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s': needs a dtype string, a shape array and data_offsets [begin, end]",
                       path, name);
    const char *dt = json_string_value(dtype);
    t->dtype_bytes = dtype_size(dt);
    if (!t->dtype_bytes || strlen(dt) >= sizeof t->dtype)
        return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.20s'", path, name, dt);
    strcpy(t->dtype, dt);
    size_t nd = json_array_size(shape);
    if (nd > MN_ST_MAX_DIMS)
        return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s': %zu dimensions (at most %d)", path, name, nd, MN_ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t elements = 1;
    for (size_t d = 0; d < nd; d++) {
        json_t *x = json_array_get(shape, d);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > ((json_int_t)1 << 40))
            return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s': shape[%zu] is not a dimension", path, name, d);
        t->shape[d] = (int64_t)json_integer_value(x);
        if (t->shape[d] && elements > (UINT64_MAX >> 4) / (uint64_t)t->shape[d])
            return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s': shape overflows", path, name);
        elements *= (uint64_t)t->shape[d];
    }
    json_t *b = json_array_get(offsets, 0), *e = json_array_get(offsets, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b))
        return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s': data_offsets are not 0 <= begin <= end", path, name);
    t->begin = (uint64_t)json_integer_value(b);
    t->end = (uint64_t)json_integer_value(e);
    if (t->end > data_bytes)
        return mn_fail(MN_ERR_FORMAT,
                       "%s: tensor '%s': data [%llu, %llu) runs past the end of the data section (%llu bytes): the file "
                       "is truncated or corrupt",
                       path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)data_bytes);
    if (t->end - t->begin != elements * (uint64_t)t->dtype_bytes)
        return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s': %llu data bytes, but its shape and dtype %s need %llu", path,
                       name, (unsigned long long)(t->end - t->begin), t->dtype,
                       (unsigned long long)(elements * (uint64_t)t->dtype_bytes));
    t->elements = (size_t)elements;
    t->name = strdup(name);
    if (!t->name)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    return MN_OK;
}

static mn_status parse_header(mn_safetensors *st, const char *json, size_t len) {
    json_error_t err;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return mn_fail(MN_ERR_FORMAT, "%s: the header is not valid JSON (line %d, column %d: %s)", st->path, err.line,
                       err.column, err.text);
    mn_status s = MN_OK;
    if (!json_is_object(root)) {
        json_decref(root);
        return mn_fail(MN_ERR_FORMAT, "%s: the header is not a JSON object", st->path);
    }
    st->tensors = calloc(json_object_size(root) + 1, sizeof *st->tensors);
    if (!st->tensors) {
        json_decref(root);
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    }
    const char *name;
    json_t *v;
    json_object_foreach(root, name, v) {
        if (!strcmp(name, "__metadata__")) {
            if (!json_is_object(v)) {
                s = mn_fail(MN_ERR_FORMAT, "%s: __metadata__ is not an object", st->path);
                break;
            }
            continue;
        }
        if ((s = parse_tensor(st->path, name, v, st->data_bytes, &st->tensors[st->n_tensors])) != MN_OK)
            break;
        st->n_tensors++;
    }
    json_decref(root);
    if (s != MN_OK)
        return s;
    /* The tensors tile the data section exactly, as the format requires (no polyglot files):
     * no two share bytes, no byte belongs to none, nothing follows the last. */
    mn_st_tensor **by_begin = malloc(((size_t)st->n_tensors + 1) * sizeof *by_begin);
    if (!by_begin)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < st->n_tensors; i++)
        by_begin[i] = &st->tensors[i];
    qsort(by_begin, (size_t)st->n_tensors, sizeof *by_begin, cmp_begin);
    const mn_st_tensor *reach = NULL; /* the non-empty tensor that ends furthest so far */
    uint64_t hole_begin = 0, hole_end = 0; /* the first gap; an overlap is reported first */
    for (int i = 0; i < st->n_tensors && s == MN_OK; i++) {
        const mn_st_tensor *t = by_begin[i];
        if (t->end == t->begin)
            continue;
        uint64_t covered = reach ? reach->end : 0;
        if (t->begin < covered)
            s = mn_fail(MN_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data section", st->path, reach->name,
                        t->name);
        else if (t->begin > covered && hole_end == 0)
            hole_begin = covered, hole_end = t->begin;
        if (!reach || t->end > reach->end)
            reach = t;
    }
    uint64_t end = reach ? reach->end : 0;
    if (s == MN_OK && hole_end > 0)
        s = mn_fail(MN_ERR_FORMAT, "%s: bytes [%llu, %llu) of the data section belong to no tensor (not a valid "
                    "safetensors file)", st->path, (unsigned long long)hole_begin, (unsigned long long)hole_end);
    if (s == MN_OK && end < st->data_bytes)
        s = mn_fail(MN_ERR_FORMAT, "%s: %llu trailing bytes after the last tensor's data (not a valid safetensors "
                    "file, or another file appended)", st->path, (unsigned long long)(st->data_bytes - end));
    free(by_begin);
    return s;
}

mn_status mn_safetensors_open(const char *path, mn_safetensors **out) {
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_safetensors_open: NULL argument");
    *out = NULL;
    mn_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    }
    mn_status s = MN_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        s = mn_fail(MN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    } else if (sb.st_size < 8) {
        s = mn_fail(MN_ERR_FORMAT, "%s: %lld bytes: too short for a safetensors file", path, (long long)sb.st_size);
    } else {
        st->map_bytes = (size_t)sb.st_size;
        st->map = mmap(NULL, st->map_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (st->map == MAP_FAILED) {
            st->map = NULL;
            s = mn_fail(MN_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        }
    }
    if (fd >= 0)
        close(fd);
    if (s == MN_OK) {
        uint64_t header;
        memcpy(&header, st->map, 8); /* little-endian, as on every host this builds for */
        if (header < 2 || header > MAX_HEADER_BYTES || header > st->map_bytes - 8) {
            s = mn_fail(MN_ERR_FORMAT,
                        "%s: header length %llu is impossible for a file of %zu bytes (not a safetensors file, or "
                        "truncated)",
                        path, (unsigned long long)header, st->map_bytes);
        } else {
            st->data = (const uint8_t *)st->map + 8 + header;
            st->data_bytes = st->map_bytes - 8 - (size_t)header;
            s = parse_header(st, (const char *)st->map + 8, (size_t)header);
        }
    }
    if (s != MN_OK) {
        mn_safetensors_close(st);
        return s;
    }
    *out = st;
    return MN_OK;
}

void mn_safetensors_close(mn_safetensors *st) {
    if (!st)
        return;
    if (st->map)
        munmap(st->map, st->map_bytes);
    for (int i = 0; i < st->n_tensors; i++)
        free(st->tensors[i].name);
    free(st->tensors);
    free(st->path);
    free(st);
}

const mn_st_tensor *mn_safetensors_find(const mn_safetensors *st, const char *name) {
    for (int i = 0; st && i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i].name, name))
            return &st->tensors[i];
    return NULL;
}

mn_status mn_safetensors_read_f32(const mn_safetensors *st, const mn_st_tensor *t, float *dst, size_t n) {
    if (!st || !t || !dst)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_safetensors_read_f32: NULL argument");
    if (n != t->elements)
        return mn_fail(MN_ERR_MISMATCH, "%s: tensor '%s' has %zu elements, expected %zu", st->path, t->name,
                       t->elements, n);
    const uint8_t *src = st->data + t->begin; /* any alignment: copy through memcpy */
    if (!strcmp(t->dtype, "F32")) {
        memcpy(dst, src, n * sizeof(float));
    } else if (!strcmp(t->dtype, "F16") || !strcmp(t->dtype, "BF16")) {
        int half = t->dtype[0] == 'F';
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = half ? mn_f16_to_f32(h) : mn_bf16_to_f32(h);
        }
    } else {
        return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s' has dtype %s; only F32, F16 and BF16 are read as weights",
                       st->path, t->name, t->dtype);
    }
    return MN_OK;
}

mn_status mn_safetensors_write_f32(const char *path, const mn_st_f32_tensor *tensors, int n) {
    if (!path || (!tensors && n > 0) || n < 0)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_safetensors_write_f32: NULL argument");
    json_t *header = json_object();
    json_t *meta = json_pack("{s:s}", "format", "pt");
    mn_status st = header && meta && !json_object_set_new(header, "__metadata__", meta)
                       ? MN_OK
                       : mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    uint64_t offset = 0;
    for (int i = 0; i < n && st == MN_OK; i++) {
        const mn_st_f32_tensor *t = &tensors[i];
        if (t->ndim < 1 || t->ndim > 2 || !t->name || !t->data) {
            st = mn_fail(MN_ERR_INVALID_ARG, "%s: tensor %d: needs a name, data and 1 or 2 dimensions", path, i);
            break;
        }
        uint64_t bytes = 4;
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) {
            bytes *= (uint64_t)t->shape[d];
            json_array_append_new(shape, json_integer(t->shape[d]));
        }
        json_t *entry = json_pack("{s:s,s:o,s:[I,I]}", "dtype", "F32", "shape", shape, "data_offsets",
                                  (json_int_t)offset, (json_int_t)(offset + bytes));
        if (!entry || json_object_set_new(header, t->name, entry))
            st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
        offset += bytes;
    }
    char *text = st == MN_OK ? json_dumps(header, JSON_COMPACT) : NULL;
    json_decref(header);
    if (st == MN_OK && !text)
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    if (st != MN_OK) {
        free(text);
        return st;
    }
    size_t text_len = strlen(text), header_len = (text_len + 7) / 8 * 8;
    size_t total = 8 + header_len + (size_t)offset;
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(text);
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory (%zu bytes)", path, total);
    }
    for (int b = 0; b < 8; b++) /* the length, little-endian */
        buf[b] = (uint8_t)((uint64_t)header_len >> (8 * b));
    memcpy(buf + 8, text, text_len);
    memset(buf + 8 + text_len, ' ', header_len - text_len);
    free(text);
    uint8_t *data = buf + 8 + header_len;
    for (int i = 0; i < n; i++) { /* fp32 as the host holds it: little-endian on every supported host */
        size_t count = (size_t)tensors[i].shape[0] * (size_t)(tensors[i].ndim == 2 ? tensors[i].shape[1] : 1);
        memcpy(data, tensors[i].data, count * sizeof(float));
        data += count * sizeof(float);
    }
    st = mn_atomic_write_bytes(path, buf, total);
    free(buf);
    return st;
}
