/* The parameter size table (docs/model.md order), flat buffers and initialisation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "model/model_internal.h"

/* Builds the table in two passes: count (table == NULL), then fill. */
typedef struct {
    mn_tensor_info *table;
    char *names;
    size_t names_used;
    int count;
    size_t offset;
} table_builder;

static void add_tensor(table_builder *tb, const char *name, int rows, int cols) {
    size_t size = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    if (tb->table) {
        mn_tensor_info *t = &tb->table[tb->count];
        char *dst = tb->names + tb->names_used;
        strcpy(dst, name);
        t->name = dst;
        t->ndim = cols > 0 ? 2 : 1;
        t->shape[0] = rows;
        t->shape[1] = cols > 0 ? cols : 0;
        t->offset = tb->offset;
        t->size = size;
        /* matrices decay, except the learned initial state; biases and norms never do */
        t->decay = (cols > 0 && strcmp(name, "memory.r0") != 0);
    }
    tb->names_used += strlen(name) + 1;
    tb->count++;
    tb->offset += size;
}

static void add_stack(table_builder *tb, const char *prefix, int n_layers, int C, int positions) {
    char name[128];
    snprintf(name, sizeof name, "%s.wpe", prefix);
    add_tensor(tb, name, positions, C);
    for (int l = 0; l < n_layers; l++) {
#define BLOCK_TENSOR(suffix, rows, cols)                                    \
    snprintf(name, sizeof name, "%s.h.%d.%s", prefix, l, suffix);           \
    add_tensor(tb, name, rows, cols)
        BLOCK_TENSOR("ln_1.weight", C, 0);
        BLOCK_TENSOR("ln_1.bias", C, 0);
        BLOCK_TENSOR("attn.c_attn.weight", C, 3 * C);
        BLOCK_TENSOR("attn.c_attn.bias", 3 * C, 0);
        BLOCK_TENSOR("attn.c_proj.weight", C, C);
        BLOCK_TENSOR("attn.c_proj.bias", C, 0);
        BLOCK_TENSOR("ln_2.weight", C, 0);
        BLOCK_TENSOR("ln_2.bias", C, 0);
        BLOCK_TENSOR("mlp.c_fc.weight", C, 4 * C);
        BLOCK_TENSOR("mlp.c_fc.bias", 4 * C, 0);
        BLOCK_TENSOR("mlp.c_proj.weight", 4 * C, C);
        BLOCK_TENSOR("mlp.c_proj.bias", C, 0);
#undef BLOCK_TENSOR
    }
    snprintf(name, sizeof name, "%s.ln_f.weight", prefix);
    add_tensor(tb, name, C, 0);
    snprintf(name, sizeof name, "%s.ln_f.bias", prefix);
    add_tensor(tb, name, C, 0);
}

static void build_table(table_builder *tb, const mn_config *c) {
    int C = c->d_model, positions = c->n_slots + c->max_turn_tokens;
    add_tensor(tb, "wte", c->vocab_size, C);
    add_stack(tb, "decoder", c->n_layers, C, positions);
    add_stack(tb, "compressor", c->n_comp_layers, C, positions);
    add_tensor(tb, "memory.r0", c->n_slots, C);
    if (c->write_rule == MN_WRITE_GATE) {
        add_tensor(tb, "memory.gate.weight", 2 * C, C);
        add_tensor(tb, "memory.gate.bias", C, 0);
        return;
    }
    int n_addr = mn_write_addresses(c);
    add_tensor(tb, "memory.write.weight", C, n_addr + 1);
    add_tensor(tb, "memory.write.bias", n_addr + 1, 0);
    if (n_addr)
        add_tensor(tb, "memory.write.diag", n_addr, 0);
}

static mn_status bind_stack(const mn_model *m, float *base, int *index, int n_layers, mn_stack_views *s) {
    const mn_tensor_info *t = m->tensors;
    s->n_layers = n_layers;
    s->blocks = calloc((size_t)n_layers, sizeof *s->blocks);
    if (!s->blocks)
        return mn_fail(MN_ERR_NOMEM, "out of memory binding parameter views");
    s->wpe = base + t[(*index)++].offset;
    for (int l = 0; l < n_layers; l++) {
        mn_block_views *b = &s->blocks[l];
        float **fields[] = {&b->ln1_w, &b->ln1_b, &b->attn_w, &b->attn_b, &b->attn_proj_w, &b->attn_proj_b,
                            &b->ln2_w, &b->ln2_b, &b->fc_w, &b->fc_b, &b->fc_proj_w, &b->fc_proj_b};
        for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
            *fields[f] = base + t[(*index)++].offset;
    }
    s->lnf_w = base + t[(*index)++].offset;
    s->lnf_b = base + t[(*index)++].offset;
    return MN_OK;
}

mn_status mn_views_bind(const mn_model *m, float *base, mn_param_views *v) {
    memset(v, 0, sizeof *v);
    int i = 0;
    v->wte = base + m->tensors[i++].offset;
    mn_status st = bind_stack(m, base, &i, m->config.n_layers, &v->decoder);
    if (st == MN_OK)
        st = bind_stack(m, base, &i, m->config.n_comp_layers, &v->compressor);
    if (st != MN_OK) {
        mn_views_free(v);
        return st;
    }
    v->r0 = base + m->tensors[i++].offset;
    if (m->config.write_rule == MN_WRITE_GATE) {
        v->gate_w = base + m->tensors[i++].offset;
        v->gate_b = base + m->tensors[i++].offset;
        return MN_OK;
    }
    v->write_w = base + m->tensors[i++].offset;
    v->write_b = base + m->tensors[i++].offset;
    if (mn_write_addresses(&m->config))
        v->write_diag = base + m->tensors[i++].offset;
    return MN_OK;
}

void mn_views_free(mn_param_views *v) {
    free(v->decoder.blocks);
    free(v->compressor.blocks);
    v->decoder.blocks = v->compressor.blocks = NULL;
}

mn_status mn_model_create(const mn_config *config, mn_model **out) {
    if (!out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_model_create: out is NULL");
    *out = NULL;
    MN_TRY(mn_config_validate(config));
    mn_model *m = calloc(1, sizeof *m);
    if (!m)
        return mn_fail(MN_ERR_NOMEM, "out of memory creating the model");
    m->config = *config;
    table_builder tb = {0};
    build_table(&tb, config);
    m->n_tensors = tb.count;
    m->tensors = calloc((size_t)tb.count, sizeof *m->tensors);
    m->names = malloc(tb.names_used);
    m->params = calloc(tb.offset, sizeof(float));
    if (!m->tensors || !m->names || !m->params) {
        mn_model_free(m);
        return mn_fail(MN_ERR_NOMEM, "out of memory allocating %zu parameters", tb.offset);
    }
    table_builder fill = {.table = m->tensors, .names = m->names};
    build_table(&fill, config);
    m->num_params = fill.offset;
    mn_status st = mn_views_bind(m, m->params, &m->views);
    if (st == MN_OK)
        st = mn_inference_init(m);
    if (st != MN_OK) {
        mn_model_free(m);
        return st;
    }
    *out = m;
    return MN_OK;
}

void mn_model_free(mn_model *m) {
    if (!m)
        return;
    mn_inference_release(m);
    mn_views_free(&m->views);
    free(m->tensors);
    free(m->names);
    free(m->params);
    free(m);
}

const mn_config *mn_model_config(const mn_model *m) { return m ? &m->config : NULL; }
size_t mn_model_num_params(const mn_model *m) { return m ? m->num_params : 0; }
float *mn_model_params(mn_model *m) { return m ? m->params : NULL; }
int mn_model_num_tensors(const mn_model *m) { return m ? m->n_tensors : 0; }
size_t mn_state_floats(const mn_model *m) {
    return m ? (size_t)m->config.n_slots * (size_t)m->config.d_model : 0;
}

double mn_l2_norm(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return sqrt(s);
}

mn_status mn_model_tensor(const mn_model *m, int index, mn_tensor_info *info) {
    if (!m || !info)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_model_tensor: NULL argument");
    if (index < 0 || index >= m->n_tensors)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_model_tensor: index %d out of range [0, %d)", index,
                       m->n_tensors);
    *info = m->tensors[index];
    return MN_OK;
}

mn_status mn_model_find_tensor(const mn_model *m, const char *name, mn_tensor_info *info) {
    if (!m || !name || !info)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_model_find_tensor: NULL argument");
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) {
            *info = m->tensors[i];
            return MN_OK;
        }
    return mn_fail(MN_ERR_INVALID_ARG, "model has no tensor named '%s'", name);
}

static void fill_normal(mn_rng *rng, float *x, size_t n, float std) {
    for (size_t i = 0; i < n; i++)
        x[i] = std * mn_rng_normal(rng);
}

static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && !strcmp(s + ls - lx, suffix);
}

mn_status mn_model_init(mn_model *m, uint64_t seed) {
    if (!m)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_model_init: model is NULL");
    mn_rng rng;
    mn_rng_seed(&rng, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        const mn_tensor_info *t = &m->tensors[i];
        float *x = m->params + t->offset;
        /* residual projections shrink with depth so the stream's variance stays bounded */
        int depth = !strncmp(t->name, "decoder.", 8) ? m->config.n_layers : m->config.n_comp_layers;
        if (!strcmp(t->name, "memory.gate.bias")) {
            for (size_t j = 0; j < t->size; j++)
                x[j] = m->config.gate_bias_init;
        } else if (!strcmp(t->name, "memory.write.bias")) {
            /* address logits 0; the strength (last column) starts small, as the gate's z does */
            memset(x, 0, t->size * sizeof *x);
            x[t->size - 1] = m->config.gate_bias_init;
        } else if (!strcmp(t->name, "memory.write.diag")) {
            for (size_t j = 0; j < t->size; j++)
                x[j] = MN_WRITE_DIAG_INIT;
        } else if (ends_with(t->name, "ln_1.weight") || ends_with(t->name, "ln_2.weight") ||
                   ends_with(t->name, "ln_f.weight")) {
            for (size_t j = 0; j < t->size; j++)
                x[j] = 1.0f;
        } else if (t->ndim == 1) {
            memset(x, 0, t->size * sizeof *x);
        } else if (ends_with(t->name, ".wpe")) {
            fill_normal(&rng, x, t->size, 0.01f);
        } else if (ends_with(t->name, "c_proj.weight")) {
            fill_normal(&rng, x, t->size, 0.02f / sqrtf(2.0f * (float)depth));
        } else {
            fill_normal(&rng, x, t->size, 0.02f);
        }
    }
    return MN_OK;
}
