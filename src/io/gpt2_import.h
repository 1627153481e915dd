/* Hugging Face GPT-2 checkpoints (safetensors) as mnemo's decoder (docs/model.md: the decoder
 * is GPT-2 run on concat(R, wte[tokens])). The names map one to one, with or without the
 * "transformer." prefix, and HF's Conv1D layout (in, out) is ours:
 *   wte.weight -> wte                 wpe.weight -> decoder.wpe (its first k + N rows)
 *   h.{l}.<x>  -> decoder.h.{l}.<x>   ln_f.<x>   -> decoder.ln_f.<x>
 * h.{l}.attn.bias / attn.masked_bias (causal-mask buffers) are skipped; lm_head.weight, when
 * present, must equal wte (mnemo ties them). Any other tensor makes the file not GPT-2. */
#ifndef MN_GPT2_IMPORT_H
#define MN_GPT2_IMPORT_H

#include <stdint.h>

#include "mnemo.h"

typedef struct {
    int n_layer, n_embd, n_head, n_positions, vocab_size;
    const char *heads_from;   /* "config.json", "the caller" or "n_embd / 64" */
    char prefix[16];          /* "" or "transformer." */
    int has_lm_head;
    char dtype[8];            /* of wte.weight: F32, F16 or BF16 */
    int tokenizer_vocab_size; /* vocab.json's tokens (mn_gpt2_import_files only) */
} mn_gpt2_info;

/* Validates the file (mn_safetensors_open) and that it holds exactly one GPT-2: every tensor
 * present with its shape and a float dtype. n_layer, n_embd, n_positions and vocab_size come
 * from the shapes; n_head from `heads` if > 0, else config_json (nullable; HF config.json,
 * whose fields must then agree with the tensors and describe plain GPT-2: gelu_new,
 * LayerNorm eps 1e-5, tied embeddings), else n_embd / 64 (every released GPT-2 size). */
mn_status mn_gpt2_inspect(const char *safetensors, const char *config_json, int heads, mn_gpt2_info *info);

/* Copies wte and the decoder from the file into model, whose vocab_size, d_model and n_layers
 * must match it and whose k + N must not exceed its positions. Other tensors are untouched. */
mn_status mn_gpt2_load_decoder(const char *safetensors, mn_model *model);

typedef struct {
    const char *config_json;  /* nullable */
    int n_heads;              /* 0: config.json, else n_embd / 64 */
    int n_slots, max_turn_tokens, n_comp_layers;
    float gate_bias_init;
    int write_rule;           /* mn_write_rule of the fresh memory (default the gate) */
    uint64_t seed;            /* the fresh compressor and memory */
} mn_gpt2_import_options;

/* k 16, N 128, 2 compressor layers, the demo gate bias, seed 1. */
mn_gpt2_import_options mn_gpt2_import_defaults(void);

/* A new model: the GPT-2 decoder from the file, compressor and memory freshly initialised. */
mn_status mn_gpt2_import(const char *safetensors, const mn_gpt2_import_options *options, mn_model **out,
                         mn_gpt2_info *info);

/* The whole of `mnemo import-gpt2` (and mn_import_gpt2, mnemo.h): GPT-2's tokenizer from
 * vocab.json + merges.txt, the model as mn_gpt2_import, both saved as a checkpoint. The model
 * goes to *model_out (nullable) for the caller to describe. */
mn_status mn_gpt2_import_files(const char *safetensors, const char *vocab_json, const char *merges_txt,
                               const mn_gpt2_import_options *o, const char *checkpoint, mn_model **model_out,
                               mn_gpt2_info *info_out);

#endif
