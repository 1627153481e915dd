/* GPT-2 safetensors -> mnemo decoder. */
#include "io/gpt2_import.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "text/json_doc.h"
#include "text/tokenizer.h"

/* The tensors of one GPT-2 block, in HF's names (== mnemo's after "decoder.h.{l}."). */
static const char *const block_suffix[12] = {
    "ln_1.weight",       "ln_1.bias",         "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
    "mlp.c_fc.weight",   "mlp.c_fc.bias",     "mlp.c_proj.weight",  "mlp.c_proj.bias"};

/* Shape of block tensor i for width C: rows, cols (0 = a vector). */
static void block_shape(int i, int64_t C, int64_t *rows, int64_t *cols) {
    static const int r[12] = {1, 1, 1, 3, 1, 1, 1, 1, 1, 4, 4, 1}, c[12] = {0, 0, 3, 0, 1, 0, 0, 0, 4, 0, 1, 0};
    *rows = r[i] * C;
    *cols = c[i] * C;
}

static int is_float(const mn_st_tensor *t) {
    return !strcmp(t->dtype, "F32") || !strcmp(t->dtype, "F16") || !strcmp(t->dtype, "BF16");
}

/* Parses "h.<l>.<rest>"; returns l (>= 0) and *rest, or -1. */
static long block_index(const char *name, const char **rest) {
    if (strncmp(name, "h.", 2) != 0 || name[2] < '0' || name[2] > '9')
        return -1;
    char *end;
    long l = strtol(name + 2, &end, 10);
    if (*end != '.' || l > 100000 || (name[2] == '0' && end != name + 3))
        return -1;
    *rest = end + 1;
    return l;
}

static mn_status check_shape(const char *path, const mn_st_tensor *t, int64_t rows, int64_t cols) {
    int ok = is_float(t) && (cols ? t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols
                                  : t->ndim == 1 && t->shape[0] == rows);
    if (ok)
        return MN_OK;
    if (!is_float(t))
        return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16", path, t->name,
                       t->dtype);
    char got[96] = "", want[64];
    for (int d = 0; d < t->ndim; d++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (cols)
        snprintf(want, sizeof want, "[%lld, %lld]", (long long)rows, (long long)cols);
    else
        snprintf(want, sizeof want, "[%lld]", (long long)rows);
    return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s' has shape [%s], GPT-2 needs %s", path, t->name, got, want);
}

/* Reads n_head and checks the rest of an HF config.json against the tensors. */
static mn_status read_config(const char *path, mn_gpt2_info *info, int *heads) {
    json_t *root;
    MN_TRY(mn_json_load_file(path, JSON_REJECT_DUPLICATES, &root));
    mn_status st = MN_OK;
    struct {
        const char *key;
        int want;
    } ints[] = {{"n_layer", info->n_layer}, {"n_embd", info->n_embd}, {"vocab_size", info->vocab_size},
                {"n_positions", info->n_positions}};
    json_t *v;
    const char *model_type = json_string_value(json_object_get(root, "model_type"));
    if (!json_is_object(root))
        st = mn_fail(MN_ERR_FORMAT, "%s: not a JSON object", path);
    else if (model_type && strcmp(model_type, "gpt2"))
        st = mn_fail(MN_ERR_MISMATCH, "%s: model_type is '%s', not 'gpt2'", path, model_type);
    for (size_t i = 0; st == MN_OK && i < sizeof ints / sizeof ints[0]; i++)
        if ((v = json_object_get(root, ints[i].key)) && (!json_is_integer(v) || json_integer_value(v) != ints[i].want))
            st = mn_fail(MN_ERR_MISMATCH, "%s: %s is %lld but the tensors say %d", path, ints[i].key,
                         json_is_integer(v) ? (long long)json_integer_value(v) : -1LL, ints[i].want);
    if (st == MN_OK) {
        v = json_object_get(root, "n_head");
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > info->n_embd)
            st = mn_fail(MN_ERR_FORMAT, "%s: n_head is missing or out of range", path);
        else
            *heads = (int)json_integer_value(v);
    }
    /* what mnemo's blocks compute: anything else would import without error and be wrong */
    const char *act = json_string_value(json_object_get(root, "activation_function"));
    if (st == MN_OK && act && strcmp(act, "gelu_new") && strcmp(act, "gelu_pytorch_tanh"))
        st = mn_fail(MN_ERR_MISMATCH, "%s: activation_function '%s'; mnemo's GPT-2 blocks use the tanh GELU (gelu_new)",
                     path, act);
    v = json_object_get(root, "layer_norm_epsilon");
    if (st == MN_OK && v && (!json_is_number(v) || fabs(json_number_value(v) - 1e-5) > 1e-12))
        st = mn_fail(MN_ERR_MISMATCH, "%s: layer_norm_epsilon must be 1e-05 (mnemo's LayerNorm)", path);
    struct {
        const char *key;
        int want;
    } flags[] = {{"scale_attn_weights", 1}, {"scale_attn_by_inverse_layer_idx", 0}, {"tie_word_embeddings", 1},
                 {"add_cross_attention", 0}};
    for (size_t i = 0; st == MN_OK && i < sizeof flags / sizeof flags[0]; i++)
        if ((v = json_object_get(root, flags[i].key)) && json_is_boolean(v) && json_is_true(v) != flags[i].want)
            st = mn_fail(MN_ERR_MISMATCH, "%s: %s = %s is not supported", path, flags[i].key,
                         flags[i].want ? "false" : "true");
    json_decref(root);
    return st;
}

static mn_status inspect_open(const mn_safetensors *f, const char *config_json, int heads, mn_gpt2_info *info) {
    const char *path = f->path;
    memset(info, 0, sizeof *info);
    const mn_st_tensor *wte = mn_safetensors_find(f, "transformer.wte.weight");
    if (wte) {
        strcpy(info->prefix, "transformer.");
    } else if (!(wte = mn_safetensors_find(f, "wte.weight"))) {
        return mn_fail(MN_ERR_FORMAT, "%s: no wte.weight (nor transformer.wte.weight): not a GPT-2 checkpoint", path);
    }
    if (wte->ndim != 2 || wte->shape[0] < 1 || wte->shape[1] < 1 || wte->shape[0] > (1 << 24) ||
        wte->shape[1] > (1 << 16) || !is_float(wte))
        return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s' is not a float (vocab, n_embd) matrix", path, wte->name);
    info->vocab_size = (int)wte->shape[0];
    info->n_embd = (int)wte->shape[1];
    strcpy(info->dtype, wte->dtype);
    const int64_t C = info->n_embd;
    size_t plen = strlen(info->prefix);

    /* classify every tensor; the block count is one more than the largest index seen */
    long max_layer = -1;
    for (int i = 0; i < f->n_tensors; i++) {
        const char *name = f->tensors[i].name, *rest;
        if (!strcmp(name, "lm_head.weight"))
            continue;
        if (strncmp(name, info->prefix, plen) != 0)
            return mn_fail(MN_ERR_FORMAT, "%s: unexpected tensor '%s' (not part of GPT-2)", path, name);
        long l = block_index(name + plen, &rest);
        if (l > max_layer)
            max_layer = l;
    }
    if (max_layer < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: no transformer blocks (h.0.*)", path);
    info->n_layer = (int)max_layer + 1;
    char *seen = calloc((size_t)info->n_layer * 12 + 4, 1);
    if (!seen)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    mn_status st = MN_OK;
    for (int i = 0; i < f->n_tensors && st == MN_OK; i++) {
        const mn_st_tensor *t = &f->tensors[i];
        const char *name = t->name + plen, *rest;
        long l;
        if (!strcmp(t->name, "lm_head.weight")) {
            info->has_lm_head = 1;
            st = check_shape(path, t, info->vocab_size, C);
        } else if (!strcmp(name, "wte.weight")) {
            seen[(size_t)info->n_layer * 12] = 1;
        } else if (!strcmp(name, "wpe.weight")) {
            if (t->ndim != 2 || t->shape[1] != C || t->shape[0] < 1 || t->shape[0] > (1 << 20)) {
                st = mn_fail(MN_ERR_FORMAT, "%s: tensor '%s' is not a (positions, n_embd = %lld) matrix", path,
                             t->name, (long long)C);
                break;
            }
            st = check_shape(path, t, t->shape[0], C);
            info->n_positions = (int)t->shape[0];
            seen[(size_t)info->n_layer * 12 + 1] = 1;
        } else if (!strcmp(name, "ln_f.weight") || !strcmp(name, "ln_f.bias")) {
            st = check_shape(path, t, C, 0);
            seen[(size_t)info->n_layer * 12 + 2 + (name[5] == 'b')] = 1;
        } else if ((l = block_index(name, &rest)) >= 0) {
            int which = -1;
            for (int j = 0; j < 12; j++)
                if (!strcmp(rest, block_suffix[j]))
                    which = j;
            if (which < 0 && (!strcmp(rest, "attn.bias") || !strcmp(rest, "attn.masked_bias")))
                continue; /* causal-mask buffers, not weights */
            if (which < 0) {
                st = mn_fail(MN_ERR_FORMAT, "%s: unexpected tensor '%s' (not part of GPT-2)", path, t->name);
                break;
            }
            int64_t rows, cols;
            block_shape(which, C, &rows, &cols);
            st = check_shape(path, t, rows, cols);
            seen[(size_t)l * 12 + (size_t)which] = 1;
        } else {
            st = mn_fail(MN_ERR_FORMAT, "%s: unexpected tensor '%s' (not part of GPT-2)", path, t->name);
        }
    }
    for (int l = 0; l < info->n_layer && st == MN_OK; l++)
        for (int j = 0; j < 12 && st == MN_OK; j++)
            if (!seen[(size_t)l * 12 + (size_t)j])
                st = mn_fail(MN_ERR_FORMAT, "%s: tensor '%sh.%d.%s' is missing", path, info->prefix, l, block_suffix[j]);
    const char *top[4] = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
    for (int j = 1; j < 4 && st == MN_OK; j++)
        if (!seen[(size_t)info->n_layer * 12 + (size_t)j])
            st = mn_fail(MN_ERR_FORMAT, "%s: tensor '%s%s' is missing", path, info->prefix, top[j]);
    free(seen);
    MN_TRY(st);

    if (heads > 0) {
        info->n_head = heads;
        info->heads_from = "the caller";
    } else if (config_json) {
        MN_TRY(read_config(config_json, info, &info->n_head));
        info->heads_from = "config.json";
    } else {
        info->n_head = info->n_embd / 64;
        info->heads_from = "n_embd / 64";
    }
    if (info->n_head < 1 || info->n_embd % info->n_head)
        return mn_fail(MN_ERR_CONFIG, "%s: n_embd %d is not divisible into heads (n_head %d from %s): give config.json",
                       path, info->n_embd, info->n_head, info->heads_from);
    return MN_OK;
}

mn_status mn_gpt2_inspect(const char *safetensors, const char *config_json, int heads, mn_gpt2_info *info) {
    if (!safetensors || !info)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_gpt2_inspect: NULL argument");
    mn_safetensors *f = NULL;
    MN_TRY(mn_safetensors_open(safetensors, &f));
    mn_status st = inspect_open(f, config_json, heads, info);
    mn_safetensors_close(f);
    return st;
}

/* Reads a float tensor into dst (n elements), refusing NaN and Inf. */
static mn_status read_finite(const mn_safetensors *f, const char *name, float *dst, size_t n) {
    const mn_st_tensor *t = mn_safetensors_find(f, name);
    if (!t)
        return mn_fail(MN_ERR_FORMAT, "%s: tensor '%s' is missing", f->path, name);
    MN_TRY(mn_safetensors_read_f32(f, t, dst, n));
    for (size_t i = 0; i < n; i++)
        if (!isfinite(dst[i]))
            return mn_fail(MN_ERR_NUMERIC, "%s: tensor '%s' holds a non-finite value at %zu", f->path, name, i);
    return MN_OK;
}

static mn_status load_into(const mn_safetensors *f, const mn_gpt2_info *info, mn_model *model) {
    const mn_config *c = mn_model_config(model);
    if (c->vocab_size != info->vocab_size || c->d_model != info->n_embd || c->n_layers != info->n_layer)
        return mn_fail(MN_ERR_MISMATCH,
                       "%s: holds a GPT-2 of vocab %d, n_embd %d, %d layers; the model has vocab %d, d_model %d, %d "
                       "decoder layers",
                       f->path, info->vocab_size, info->n_embd, info->n_layer, c->vocab_size, c->d_model, c->n_layers);
    int positions = c->n_slots + c->max_turn_tokens;
    if (positions > info->n_positions)
        return mn_fail(MN_ERR_CONFIG, "%s: the model needs %d positions (k %d + N %d), GPT-2 has %d", f->path, positions,
                       c->n_slots, c->max_turn_tokens, info->n_positions);
    float *params = mn_model_params(model);
    char name[160], ours[160];
    mn_tensor_info t;
    const size_t C = (size_t)info->n_embd;

    MN_TRY(mn_model_find_tensor(model, "wte", &t));
    snprintf(name, sizeof name, "%swte.weight", info->prefix);
    MN_TRY(read_finite(f, name, params + t.offset, t.size));
    if (info->has_lm_head) { /* tied in mnemo: an untied head would be silently dropped */
        float *head = malloc(t.size * sizeof *head);
        if (!head)
            return mn_fail(MN_ERR_NOMEM, "out of memory");
        mn_status st = read_finite(f, "lm_head.weight", head, t.size);
        if (st == MN_OK && memcmp(head, params + t.offset, t.size * sizeof *head))
            st = mn_fail(MN_ERR_MISMATCH, "%s: lm_head.weight differs from wte.weight; mnemo ties the output head to "
                         "the embeddings, so an untied head cannot be imported", f->path);
        free(head);
        MN_TRY(st);
    }
    float *wpe = malloc((size_t)info->n_positions * C * sizeof *wpe);
    if (!wpe)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    snprintf(name, sizeof name, "%swpe.weight", info->prefix);
    mn_status st = read_finite(f, name, wpe, (size_t)info->n_positions * C);
    if (st == MN_OK && (st = mn_model_find_tensor(model, "decoder.wpe", &t)) == MN_OK)
        memcpy(params + t.offset, wpe, t.size * sizeof *wpe); /* the first k + N positions */
    free(wpe);
    MN_TRY(st);
    for (int l = 0; l < info->n_layer; l++)
        for (int j = 0; j < 12; j++) {
            snprintf(name, sizeof name, "%sh.%d.%s", info->prefix, l, block_suffix[j]);
            snprintf(ours, sizeof ours, "decoder.h.%d.%s", l, block_suffix[j]);
            MN_TRY(mn_model_find_tensor(model, ours, &t));
            MN_TRY(read_finite(f, name, params + t.offset, t.size));
        }
    const char *lnf[2] = {"ln_f.weight", "ln_f.bias"};
    for (int j = 0; j < 2; j++) {
        snprintf(name, sizeof name, "%s%s", info->prefix, lnf[j]);
        snprintf(ours, sizeof ours, "decoder.%s", lnf[j]);
        MN_TRY(mn_model_find_tensor(model, ours, &t));
        MN_TRY(read_finite(f, name, params + t.offset, t.size));
    }
    return MN_OK;
}

mn_status mn_gpt2_load_decoder(const char *safetensors, mn_model *model) {
    if (!safetensors || !model)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_gpt2_load_decoder: NULL argument");
    mn_safetensors *f = NULL;
    MN_TRY(mn_safetensors_open(safetensors, &f));
    mn_gpt2_info info;
    mn_status st = inspect_open(f, NULL, mn_model_config(model)->n_heads, &info);
    if (st == MN_OK)
        st = load_into(f, &info, model);
    mn_safetensors_close(f);
    return st;
}

mn_gpt2_import_options mn_gpt2_import_defaults(void) {
    mn_config demo = mn_config_demo();
    return (mn_gpt2_import_options){.config_json = NULL, .n_heads = 0, .n_slots = 16, .max_turn_tokens = 128,
                                    .n_comp_layers = 2, .gate_bias_init = demo.gate_bias_init, .seed = 1};
}

mn_status mn_gpt2_import(const char *safetensors, const mn_gpt2_import_options *o, mn_model **out,
                         mn_gpt2_info *info_out) {
    if (!safetensors || !o || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_gpt2_import: NULL argument");
    *out = NULL;
    mn_safetensors *f = NULL;
    MN_TRY(mn_safetensors_open(safetensors, &f));
    mn_gpt2_info info;
    mn_model *m = NULL;
    mn_status st = inspect_open(f, o->config_json, o->n_heads, &info);
    if (st == MN_OK) {
        mn_config c = {.vocab_size = info.vocab_size, .d_model = info.n_embd, .n_heads = info.n_head,
                       .n_layers = info.n_layer, .n_comp_layers = o->n_comp_layers, .n_slots = o->n_slots,
                       .max_turn_tokens = o->max_turn_tokens, .gate_bias_init = o->gate_bias_init,
                       .write_rule = o->write_rule};
        st = mn_model_create(&c, &m);
    }
    if (st == MN_OK)
        st = mn_model_init(m, o->seed); /* compressor, memory (and a decoder overwritten next) */
    if (st == MN_OK)
        st = load_into(f, &info, m);
    mn_safetensors_close(f);
    if (st != MN_OK) {
        mn_model_free(m);
        return st;
    }
    if (info_out)
        *info_out = info;
    *out = m;
    return MN_OK;
}

mn_status mn_gpt2_import_files(const char *safetensors, const char *vocab_json, const char *merges_txt,
                               const mn_gpt2_import_options *o, const char *checkpoint, mn_model **model_out,
                               mn_gpt2_info *info_out) {
    if (!safetensors || !vocab_json || !merges_txt || !o || !checkpoint)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_gpt2_import_files: NULL argument");
    mn_tokenizer *tok = NULL;
    mn_model *model = NULL;
    mn_gpt2_info info;
    mn_status st = mn_tokenizer_load_gpt2(vocab_json, merges_txt, &tok);
    if (st == MN_OK)
        st = mn_gpt2_import(safetensors, o, &model, &info);
    /* checkpoints may pad the embedding table past the vocabulary; never the other way round */
    if (st == MN_OK && mn_tokenizer_vocab_size(tok) > info.vocab_size)
        st = mn_fail(MN_ERR_MISMATCH, "%s has %d tokens but %s embeds only %d: they do not belong together",
                     vocab_json, mn_tokenizer_vocab_size(tok), safetensors, info.vocab_size);
    mn_checkpoint_save_options so = {.train_config_json = NULL, .tokenizer = tok};
    if (st == MN_OK)
        st = mn_checkpoint_save(checkpoint, model, NULL, NULL, &so);
    if (st == MN_OK && info_out) {
        *info_out = info;
        info_out->tokenizer_vocab_size = mn_tokenizer_vocab_size(tok);
    }
    mn_tokenizer_free(tok);
    if (st == MN_OK && model_out) {
        *model_out = model;
        model = NULL;
    }
    mn_model_free(model);
    return st;
}

mn_status mn_import_gpt2(const char *safetensors, const char *vocab_json, const char *merges_txt,
                         const char *config_json, int n_slots, int max_turn_tokens, int n_comp_layers, uint64_t seed,
                         const char *checkpoint) {
    mn_gpt2_import_options o = mn_gpt2_import_defaults();
    o.config_json = config_json;
    o.n_slots = n_slots ? n_slots : o.n_slots;
    o.max_turn_tokens = max_turn_tokens ? max_turn_tokens : o.max_turn_tokens;
    o.n_comp_layers = n_comp_layers ? n_comp_layers : o.n_comp_layers;
    o.seed = seed;
    return mn_gpt2_import_files(safetensors, vocab_json, merges_txt, &o, checkpoint, NULL, NULL);
}
