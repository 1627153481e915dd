/* A checked reader (and a plain F32 writer) of Hugging Face safetensors files: an 8-byte little-endian header length,
 * a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the data.
 * Opening validates everything against the file before any tensor is read: the header length,
 * the JSON, every dtype, every shape (overflow-checked) and every data range (inside the
 * data section, sized exactly shape x dtype, no two overlapping). Errors name the file and
 * the tensor. The file is memory-mapped, so opening a 6 GB checkpoint reads only its header. */
#ifndef MN_SAFETENSORS_H
#define MN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

#define MN_ST_MAX_DIMS 8

typedef struct {
    char *name;
    char dtype[8];         /* "F32", "F16", "BF16", "I64", ... */
    int dtype_bytes;
    int ndim;
    int64_t shape[MN_ST_MAX_DIMS];
    size_t elements;
    uint64_t begin, end;   /* byte range inside the data section */
} mn_st_tensor;

typedef struct {
    char *path;
    const uint8_t *data;   /* start of the data section inside the mapping */
    size_t data_bytes;
    void *map;
    size_t map_bytes;
    mn_st_tensor *tensors;
    int n_tensors;
} mn_safetensors;

mn_status mn_safetensors_open(const char *path, mn_safetensors **out);
void mn_safetensors_close(mn_safetensors *st);
/* NULL when absent. */
const mn_st_tensor *mn_safetensors_find(const mn_safetensors *st, const char *name);
/* Converts a floating tensor (F32, F16 or BF16) to fp32; n must be its element count. */
mn_status mn_safetensors_read_f32(const mn_safetensors *st, const mn_st_tensor *t, float *dst, size_t n);
/* One F32 tensor for mn_safetensors_write_f32 (ndim 1 or 2). */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[2];
    const float *data;
} mn_st_f32_tensor;

/* Writes the tensors, in the given order, as an F32 safetensors file (header padded with
 * spaces to 8 bytes, "__metadata__": {"format": "pt"}, as transformers writes), atomically. */
mn_status mn_safetensors_write_f32(const char *path, const mn_st_f32_tensor *tensors, int n);

/* IEEE half and bfloat16 bit patterns to float (exact: every value is representable). */
float mn_f16_to_f32(uint16_t h);
float mn_bf16_to_f32(uint16_t b);

#endif
