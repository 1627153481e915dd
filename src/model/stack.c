/* The transformer stack over [memory slots ; turn tokens], shared by the decoder (causal)
 * and the compressor (bidirectional). Forward and backward side by side. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cpu/ops.h"
#include "model/model_internal.h"

/* ---------------------------------------------------------------- allocation */
/* Sizes (in floats) of one block's activations, in mn_block_acts field order. */
static void block_sizes(const mn_config *c, size_t B, size_t S, size_t sizes[13]) {
    size_t C = (size_t)c->d_model, H = (size_t)c->n_heads, BS = B * S;
    size_t s[13] = {BS * C, BS * C, BS, BS, BS * 3 * C, B * H * S * S, BS * C,
                    BS * C, BS * C, BS, BS, BS * 4 * C, BS * 4 * C};
    memcpy(sizes, s, sizeof s);
}

mn_status mn_stack_acts_alloc(mn_stack_acts *a, const mn_config *c, int n_layers, int max_B, int max_S) {
    memset(a, 0, sizeof *a);
    size_t B = (size_t)max_B, S = (size_t)max_S, C = (size_t)c->d_model, k = (size_t)c->n_slots;
    size_t sizes[13], per_block = 0;
    block_sizes(c, B, S, sizes);
    for (int i = 0; i < 13; i++)
        per_block += sizes[i];
    size_t tail = 2 * B * S * C + 2 * B * S + B * k * C;
    size_t total = per_block * (size_t)n_layers + tail;
    a->buffer = malloc(total * sizeof(float));
    a->blocks = calloc((size_t)n_layers, sizeof *a->blocks);
    a->ids = malloc(B * S * sizeof(int32_t));
    a->valid = malloc(B * sizeof(int32_t));
    if (!a->buffer || !a->blocks || !a->ids || !a->valid) {
        mn_stack_acts_free(a);
        return mn_fail(MN_ERR_NOMEM, "out of memory for activations (%zu floats)", total);
    }
    float *p = a->buffer;
    for (int l = 0; l < n_layers; l++) {
        mn_block_acts *b = &a->blocks[l];
        float **fields[13] = {&b->x, &b->ln1, &b->ln1_mean, &b->ln1_rstd, &b->qkv, &b->att, &b->atty,
                              &b->res2, &b->ln2, &b->ln2_mean, &b->ln2_rstd, &b->fch, &b->fch_gelu};
        for (int i = 0; i < 13; i++) {
            *fields[i] = p;
            p += sizes[i];
        }
    }
    a->x_out = p, p += B * S * C;
    a->lnf = p, p += B * S * C;
    a->lnf_mean = p, p += B * S;
    a->lnf_rstd = p, p += B * S;
    a->memory = p;
    a->n_layers = n_layers;
    return MN_OK;
}

void mn_stack_acts_free(mn_stack_acts *a) {
    free(a->buffer);
    free(a->blocks);
    free(a->ids);
    free(a->valid);
    memset(a, 0, sizeof *a);
}

mn_status mn_stack_scratch_alloc(mn_stack_grads_scratch *s, const mn_config *c, int max_B, int max_S) {
    size_t BSC = (size_t)max_B * (size_t)max_S * (size_t)c->d_model;
    /* dx, dres2, dln, datty: BSC each; dqkv 3 BSC; dfch_gelu, dfch 4 BSC each */
    s->buffer = malloc(15 * BSC * sizeof(float));
    if (!s->buffer)
        return mn_fail(MN_ERR_NOMEM, "out of memory for gradient scratch");
    float *p = s->buffer;
    s->dx = p, p += BSC;
    s->dres2 = p, p += BSC;
    s->dln = p, p += BSC;
    s->datty = p, p += BSC;
    s->dqkv = p, p += 3 * BSC;
    s->dfch_gelu = p, p += 4 * BSC;
    s->dfch = p;
    return MN_OK;
}

void mn_stack_scratch_free(mn_stack_grads_scratch *s) {
    free(s->buffer);
    s->buffer = NULL;
}

/* ---------------------------------------------------------------- forward */
void mn_stack_forward(mn_stack_acts *a, const mn_config *cfg, const float *wte, const mn_stack_views *p,
                      const float *memory, const int32_t *tokens, const int32_t *lengths, int B,
                      int max_len, int causal) {
    const int C = cfg->d_model, H = cfg->n_heads, k = cfg->n_slots, S = k + max_len, N = B * S;
    a->B = B;
    a->S = S;
    memcpy(a->memory, memory, (size_t)B * k * C * sizeof(float));
    for (int b = 0; b < B; b++) {
        a->valid[b] = k + lengths[b];
        for (int i = 0; i < max_len; i++) /* padding may hold anything: read token 0 there */
            a->ids[b * max_len + i] = i < lengths[b] ? tokens[b * max_len + i] : 0;
    }

    // x (B, S, C) = concat(memory (B, k, C), wte[ids] (B, max_len, C)) + wpe[0..S-1]
    float *x = a->blocks[0].x;
    for (int b = 0; b < B; b++) {
        float *xb = x + (size_t)b * S * C;
        memcpy(xb, memory + (size_t)b * k * C, (size_t)k * C * sizeof(float));
        mn_embedding_forward(xb + (size_t)k * C, a->ids + b * max_len, wte, max_len, C);
        mn_residual_forward(xb, xb, p->wpe, (size_t)S * C);
    }

    for (int l = 0; l < p->n_layers; l++) {
        const mn_block_views *w = &p->blocks[l];
        mn_block_acts *ba = &a->blocks[l];
        float *out = l + 1 < p->n_layers ? a->blocks[l + 1].x : a->x_out;
        mn_layernorm_forward(ba->ln1, ba->ln1_mean, ba->ln1_rstd, ba->x, w->ln1_w, w->ln1_b, N, C);
        mn_linear_forward(ba->qkv, ba->ln1, w->attn_w, w->attn_b, N, C, 3 * C);
        mn_attention_forward(ba->atty, ba->att, ba->qkv, a->valid, B, S, C, H, causal);
        // res2 = x + atty @ attn_proj  (the projection lands in `out` first, used as scratch)
        mn_linear_forward(out, ba->atty, w->attn_proj_w, w->attn_proj_b, N, C, C);
        mn_residual_forward(ba->res2, ba->x, out, (size_t)N * C);
        mn_layernorm_forward(ba->ln2, ba->ln2_mean, ba->ln2_rstd, ba->res2, w->ln2_w, w->ln2_b, N, C);
        mn_linear_forward(ba->fch, ba->ln2, w->fc_w, w->fc_b, N, C, 4 * C);
        mn_gelu_forward(ba->fch_gelu, ba->fch, (size_t)N * 4 * C);
        mn_linear_forward(out, ba->fch_gelu, w->fc_proj_w, w->fc_proj_b, N, 4 * C, C);
        mn_residual_forward(out, ba->res2, out, (size_t)N * C);
    }
    mn_layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, a->x_out, p->lnf_w, p->lnf_b, N, C);
}

/* ---------------------------------------------------------------- backward */
void mn_stack_backward(mn_stack_acts *a, mn_stack_grads_scratch *s, const mn_config *cfg,
                       const mn_stack_views *p, mn_stack_views *g, float *dwte, float *dlnf,
                       float *dmemory, int causal) {
    const int C = cfg->d_model, H = cfg->n_heads, k = cfg->n_slots, B = a->B, S = a->S, N = B * S;
    const int max_len = S - k;
    const size_t NC = (size_t)N * C;
    float *dx = s->dx, *dres2 = s->dres2;

    memset(dx, 0, NC * sizeof(float));
    mn_layernorm_backward(dx, g->lnf_w, g->lnf_b, dlnf, a->x_out, p->lnf_w, a->lnf_mean, a->lnf_rstd, N, C);

    for (int l = p->n_layers - 1; l >= 0; l--) {
        const mn_block_views *w = &p->blocks[l];
        mn_block_views *gw = &g->blocks[l];
        mn_block_acts *ba = &a->blocks[l];
        // out = res2 + fc_proj(gelu(fc(ln2(res2))))
        memcpy(dres2, dx, NC * sizeof(float));
        memset(s->dfch_gelu, 0, 4 * NC * sizeof(float));
        mn_linear_backward(s->dfch_gelu, gw->fc_proj_w, gw->fc_proj_b, dx, ba->fch_gelu, w->fc_proj_w, N, 4 * C, C);
        memset(s->dfch, 0, 4 * NC * sizeof(float));
        mn_gelu_backward(s->dfch, s->dfch_gelu, ba->fch, 4 * NC);
        memset(s->dln, 0, NC * sizeof(float));
        mn_linear_backward(s->dln, gw->fc_w, gw->fc_b, s->dfch, ba->ln2, w->fc_w, N, C, 4 * C);
        mn_layernorm_backward(dres2, gw->ln2_w, gw->ln2_b, s->dln, ba->res2, w->ln2_w, ba->ln2_mean,
                              ba->ln2_rstd, N, C);
        // res2 = x + attn_proj(attention(qkv(ln1(x))))
        memcpy(dx, dres2, NC * sizeof(float));
        memset(s->datty, 0, NC * sizeof(float));
        mn_linear_backward(s->datty, gw->attn_proj_w, gw->attn_proj_b, dres2, ba->atty, w->attn_proj_w, N, C, C);
        memset(s->dqkv, 0, 3 * NC * sizeof(float));
        mn_attention_backward(s->dqkv, s->datty, ba->qkv, ba->att, a->valid, B, S, C, H, causal);
        memset(s->dln, 0, NC * sizeof(float));
        mn_linear_backward(s->dln, gw->attn_w, gw->attn_b, s->dqkv, ba->ln1, w->attn_w, N, C, 3 * C);
        mn_layernorm_backward(dx, gw->ln1_w, gw->ln1_b, s->dln, ba->x, w->ln1_w, ba->ln1_mean, ba->ln1_rstd, N, C);
    }

    // x = concat(memory, wte[ids]) + wpe: route dx to the memory, the embedding table and wpe
    for (int b = 0; b < B; b++) {
        const float *dxb = dx + (size_t)b * S * C;
        mn_residual_backward(g->wpe, NULL, dxb, (size_t)S * C);
        if (dmemory)
            mn_residual_backward(dmemory + (size_t)b * k * C, NULL, dxb, (size_t)k * C);
        /* only real tokens: padded rows carry exactly zero gradient, and their ids are fake */
        int n = a->valid[b] - k;
        mn_embedding_backward(dwte, dxb + (size_t)k * C, a->ids + b * max_len, n, C);
    }
}
