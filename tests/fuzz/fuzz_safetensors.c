/* libFuzzer target: a Hugging Face safetensors file, as `mnemo import-gpt2` reads it: the
 * checked parser (io/safetensors.h), every floating tensor converted to fp32, then the GPT-2
 * check and, when the file is a small GPT-2, the import itself (two heads, a tiny memory).
 * Whatever the parser accepts must hold its promises: every tensor found by its name, its
 * bytes inside the data section. Seeds: fuzz_seeds (a one-layer GPT-2 in F32, F16 and BF16,
 * a file of odd shapes). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_files.h"
#include "io/gpt2_import.h"
#include "io/safetensors.h"

static void read_tensors(const mn_safetensors *st) {
    for (int i = 0; i < st->n_tensors; i++) {
        const mn_st_tensor *t = &st->tensors[i];
        if (mn_safetensors_find(st, t->name) != t || t->begin > t->end || t->end > st->data_bytes ||
            t->end - t->begin != t->elements * (size_t)t->dtype_bytes)
            abort();
        if (t->elements > ((size_t)1 << 22))
            continue;
        float *dst = malloc((t->elements ? t->elements : 1) * sizeof *dst);
        if (!dst)
            abort();
        mn_safetensors_read_f32(st, t, dst, t->elements);
        free(dst);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_begin();
    const char *path = fuzz_file("model.safetensors", data, size);
    mn_safetensors *st = NULL;
    if (mn_safetensors_open(path, &st) != MN_OK)
        return 0;
    read_tensors(st);
    mn_safetensors_close(st);

    mn_gpt2_info info;
    if (mn_gpt2_inspect(path, NULL, 2, &info) != MN_OK)
        return 0;
    if ((double)info.vocab_size * info.n_embd + (double)info.n_layer * 13 * info.n_embd * info.n_embd > 4e6 ||
        info.n_positions < 4)
        return 0;
    mn_gpt2_import_options o = mn_gpt2_import_defaults();
    o.n_heads = 2;
    o.n_slots = 2;
    o.max_turn_tokens = info.n_positions - 2;
    o.n_comp_layers = 1;
    mn_model *model = NULL;
    if (mn_gpt2_import(path, &o, &model, &info) == MN_OK)
        mn_model_free(model);
    return 0;
}
