/* `mnemo export-hf`: the decoder of a checkpoint back out as a Hugging Face GPT-2 folder, the
 * inverse of gpt2_import.c (the same name map: wte -> transformer.wte.weight, decoder.wpe ->
 * transformer.wpe.weight, decoder.h.{l}.<x> -> transformer.h.{l}.<x>, decoder.ln_f.<x> ->
 * transformer.ln_f.<x>; the head stays tied, so lm_head is not written, as save_pretrained
 * leaves it out). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "text/tokenizer.h"

/* config.json: plain GPT-2 of this model's decoder, which mn_gpt2_inspect accepts as it is. */
static mn_status write_config(const mn_model *model, const mn_tokenizer *tok, const char *path) {
    const mn_config *c = mn_model_config(model);
    int positions = c->n_slots + c->max_turn_tokens;
    json_t *root = json_pack("{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:n,s:s,s:f,s:b,s:b,s:b,s:f,s:f,s:f}",
                             "architectures", "GPT2LMHeadModel", "model_type", "gpt2", "vocab_size", c->vocab_size,
                             "n_positions", positions, "n_ctx", positions, "n_embd", c->d_model, "n_layer",
                             c->n_layers, "n_head", c->n_heads, "n_inner", "activation_function", "gelu_new",
                             "layer_norm_epsilon", 1e-5, "tie_word_embeddings", 1, "scale_attn_weights", 1,
                             "scale_attn_by_inverse_layer_idx", 0, "resid_pdrop", 0.0, "embd_pdrop", 0.0,
                             "attn_pdrop", 0.0);
    if (!root)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    /* GPT-2's <|endoftext|> opens and closes its texts; a vocabulary without it keeps HF's default */
    for (int32_t id = 0; id < mn_tokenizer_vocab_size(tok); id++) {
        size_t len = 0;
        const uint8_t *b = mn_tokenizer_token_bytes(tok, id, &len);
        if (b && len == 13 && !memcmp(b, "<|endoftext|>", 13)) {
            json_object_set_new(root, "bos_token_id", json_integer(id));
            json_object_set_new(root, "eos_token_id", json_integer(id));
            break;
        }
    }
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(root);
    if (!text)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    mn_status st = mn_atomic_write_bytes(path, text, strlen(text));
    free(text);
    return st;
}

/* model.safetensors: wte and every decoder tensor under its Hugging Face name, F32. */
static mn_status write_weights(mn_model *model, const char *path) {
    int n = mn_model_num_tensors(model);
    mn_st_f32_tensor *out = calloc((size_t)n, sizeof *out);
    char (*names)[128] = calloc((size_t)n, sizeof *names);
    mn_status st = out && names ? MN_OK : mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    const float *params = mn_model_params(model);
    int kept = 0;
    for (int i = 0; i < n && st == MN_OK; i++) {
        mn_tensor_info t;
        st = mn_model_tensor(model, i, &t);
        if (st != MN_OK)
            break;
        if (!strcmp(t.name, "wte"))
            snprintf(names[kept], sizeof names[kept], "transformer.wte.weight");
        else if (!strcmp(t.name, "decoder.wpe"))
            snprintf(names[kept], sizeof names[kept], "transformer.wpe.weight");
        else if (!strncmp(t.name, "decoder.", 8))
            snprintf(names[kept], sizeof names[kept], "transformer.%s", t.name + 8);
        else
            continue; /* the compressor and memory have no place in GPT-2 */
        out[kept] = (mn_st_f32_tensor){.name = names[kept], .ndim = t.ndim, .data = params + t.offset};
        for (int d = 0; d < t.ndim; d++)
            out[kept].shape[d] = t.shape[d];
        kept++;
    }
    if (st == MN_OK)
        st = mn_safetensors_write_f32(path, out, kept);
    free(out);
    free(names);
    return st;
}

mn_status mn_export_hf(const char *checkpoint, const char *out_dir) {
    if (!checkpoint || !out_dir)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_export_hf: NULL argument");
    mn_model *model = NULL;
    mn_tokenizer *tok = NULL;
    MN_TRY(mn_checkpoint_load_tokenizer(checkpoint, &tok));
    if (!tok)
        return mn_fail(MN_ERR_INVALID_ARG, "%s holds no tokenizer: a Hugging Face folder needs GPT-2's (mnemo import-gpt2)",
                       checkpoint);
    if (strcmp(mn_tokenizer_kind(tok), "gpt2")) {
        mn_status refused = mn_fail(MN_ERR_INVALID_ARG,
                                    "%s: its tokenizer is mnemo's own (%s), not GPT-2's: only a decoder imported "
                                    "with mnemo import-gpt2 is written back as a Hugging Face GPT-2",
                                    checkpoint, mn_tokenizer_kind(tok));
        mn_tokenizer_free(tok);
        return refused;
    }
    mn_status st = mn_model_load(checkpoint, &model);
    if (st == MN_OK && mkdir(out_dir, 0777) != 0 && errno != EEXIST)
        st = mn_fail(MN_ERR_IO, "%s: cannot create the folder: %s", out_dir, strerror(errno));
    struct stat sb;
    if (st == MN_OK && (stat(out_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)))
        st = mn_fail(MN_ERR_IO, "%s: not a folder", out_dir);
    size_t cap = strlen(out_dir) + 32;
    char *path = malloc(cap);
    if (st == MN_OK && !path)
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", out_dir);
#define FILE_IN(name) (snprintf(path, cap, "%s/%s", out_dir, name), path)
    if (st == MN_OK)
        st = write_config(model, tok, FILE_IN("config.json"));
    if (st == MN_OK)
        st = write_weights(model, FILE_IN("model.safetensors"));
    if (st == MN_OK) {
        char *vocab = strdup(FILE_IN("vocab.json"));
        st = vocab ? mn_tokenizer_save_gpt2(tok, vocab, FILE_IN("merges.txt"))
                   : mn_fail(MN_ERR_NOMEM, "%s: out of memory", out_dir);
        free(vocab);
    }
    if (st == MN_OK) {
        const mn_config *c = mn_model_config(model);
        char text[160];
        int len = snprintf(text, sizeof text, "{\n  \"tokenizer_class\": \"GPT2Tokenizer\",\n  \"model_max_length\": %d\n}",
                           c->n_slots + c->max_turn_tokens);
        st = mn_atomic_write_bytes(FILE_IN("tokenizer_config.json"), text, (size_t)len);
    }
#undef FILE_IN
    free(path);
    mn_model_free(model);
    mn_tokenizer_free(tok);
    return st;
}
