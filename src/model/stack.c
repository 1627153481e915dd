/* The transformer stack over [memory slots ; turn tokens], shared by the decoder (causal)
 * and the compressor (bidirectional). Forward and backward side by side, through the backend
 * table (model/backend.h), so the CPU and CUDA backends run this one copy. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/model_internal.h"

/* ---------------------------------------------------------------- allocation */
/* Sizes (in floats) of one block's activations, in mn_block_acts field order. */
static void block_sizes(const mn_config *c, size_t B, size_t S, size_t sizes[13]) {
    size_t C = (size_t)c->d_model, H = (size_t)c->n_heads, BS = B * S;
    size_t s[13] = {BS * C, BS * C, BS, BS, BS * 3 * C, B * H * S * S, BS * C,
                    BS * C, BS * C, BS, BS, BS * 4 * C, BS * 4 * C};
    memcpy(sizes, s, sizeof s);
}

mn_status mn_stack_acts_alloc(const mn_exec *ex, mn_stack_acts *a, const mn_config *c, int n_layers, int max_B,
                              int max_S, int forward_only) {
    memset(a, 0, sizeof *a);
    size_t B = (size_t)max_B, S = (size_t)max_S, C = (size_t)c->d_model;
    size_t sizes[13], per_block = 0;
    block_sizes(c, B, S, sizes);
    for (int i = 0; i < 13; i++)
        per_block += sizes[i];
    /* A forward-only pass writes block l+1's input while block l's activations are live, and
     * reads nothing older: two sets, used alternately, are enough. */
    int sets = forward_only ? (n_layers < 2 ? n_layers : 2) : n_layers;
    size_t tail = 2 * B * S * C + 2 * B * S;
    size_t total = per_block * (size_t)sets + tail;
    a->blocks = calloc((size_t)n_layers, sizeof *a->blocks);
    a->first = malloc(2 * (B + 1) * sizeof *a->first);
    if (!a->blocks || !a->first) {
        free(a->blocks);
        free(a->first);
        a->blocks = NULL, a->first = NULL;
        return mn_fail(MN_ERR_NOMEM, "out of memory for activation views");
    }
    mn_status st = mn_exec_alloc(ex, total * sizeof(float), (void **)&a->buffer);
    if (st != MN_OK) {
        free(a->blocks);
        free(a->first);
        a->blocks = NULL, a->first = a->out_first = NULL;
        return mn_fail_context(st, "activations of %d layers for %d x %d positions (%zu floats)", n_layers, max_B,
                               max_S, total);
    }
    for (int l = 0; l < n_layers; l++) {
        float *p = a->buffer + per_block * (size_t)(l % sets);
        mn_block_acts *b = &a->blocks[l];
        float **fields[13] = {&b->x, &b->ln1, &b->ln1_mean, &b->ln1_rstd, &b->qkv, &b->att, &b->atty,
                              &b->res2, &b->ln2, &b->ln2_mean, &b->ln2_rstd, &b->fch, &b->fch_gelu};
        for (int i = 0; i < 13; i++) {
            *fields[i] = p;
            p += sizes[i];
        }
    }
    a->out_first = a->first + B + 1;
    float *p = a->buffer + per_block * (size_t)sets;
    a->x_out = p, p += B * S * C;
    a->lnf = p, p += B * S * C;
    a->lnf_mean = p, p += B * S;
    a->lnf_rstd = p;
    a->n_layers = n_layers;
    return MN_OK;
}

void mn_stack_acts_free(const mn_exec *ex, mn_stack_acts *a) {
    mn_exec_release(ex, a->buffer);
    free(a->blocks);
    free(a->first);
    memset(a, 0, sizeof *a);
}

mn_status mn_stack_scratch_alloc(const mn_exec *ex, mn_stack_grads_scratch *s, const mn_config *c, int max_B,
                                 int max_S) {
    memset(s, 0, sizeof *s);
    size_t BSC = (size_t)max_B * (size_t)max_S * (size_t)c->d_model;
    /* dx, dres2, dln, datty: BSC each; dqkv 3 BSC; dfch_gelu, dfch 4 BSC each */
    mn_status st = mn_exec_alloc(ex, 15 * BSC * sizeof(float), (void **)&s->buffer);
    if (st != MN_OK)
        return mn_fail_context(st, "gradient scratch");
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

void mn_stack_scratch_free(const mn_exec *ex, mn_stack_grads_scratch *s) {
    mn_exec_release(ex, s->buffer);
    memset(s, 0, sizeof *s);
}

void mn_turn_ids(int k, const int32_t *tokens, int len, int max_len, int32_t *ids_fwd, int32_t *ids_bwd) {
    for (int s = 0; s < k; s++) {
        ids_fwd[s] = -1;
        if (ids_bwd)
            ids_bwd[s] = -1;
    }
    for (int i = 0; i < max_len; i++) {
        int real = i < len;
        ids_fwd[k + i] = real ? tokens[i] : 0; /* padding may hold anything: read token 0 there */
        if (ids_bwd)
            ids_bwd[k + i] = real ? tokens[i] : -1;
    }
}

/* ---------------------------------------------------------------- forward */
/* Where lane b's rows start in one of the layouts a stack moves rows between: packed (from
 * first[b]) or attention's padded layout (b * stride), plus off rows into the lane. */
typedef struct {
    const int *first;
    int stride, off;
    const int *from; /* NULL, or rows more into each lane: the kept rows' acts->keep_from */
} lanes_at;

static size_t lane_row(lanes_at at, int b) {
    return (size_t)(at.first ? at.first[b] : b * at.stride) + at.off + (at.from ? at.from[b] : 0);
}

/* Copies lane by lane count[b + 1] - count[b] rows of width floats from src to dst. */
static void copy_lanes(const mn_exec *ex, int B, const int *count, size_t width, float *dst, lanes_at d,
                       const float *src, lanes_at s) {
    for (int b = 0; b < B; b++)
        MN_OP(ex, copy_rows, dst + lane_row(d, b) * width, 0, src + lane_row(s, b) * width, 0, 1,
              (size_t)(count[b + 1] - count[b]) * width);
}

/* The layouts of a forward: its rows, attention's padded layout, its output rows (the ones kept
 * by the last block: a lane's slot rows, or (some of) its token rows from row k of the lane). */
static lanes_at rows_at(const mn_stack_acts *a) { return (lanes_at){a->first, 0, 0, NULL}; }
static lanes_at padded_at(const mn_stack_acts *a, int off) { return (lanes_at){NULL, a->S, off, NULL}; }
static lanes_at out_at(const mn_stack_acts *a) { return (lanes_at){a->out_first, 0, 0, NULL}; }
static int out_offset(const mn_stack_acts *a, int k) {
    return a->keep == MN_ROWS_TOKENS || a->keep == MN_ROWS_PREDICTING ? k : 0;
}

/* The rows into each lane past out_offset where its kept rows start (NULL: none). */
static const int *kept_from(const mn_stack_acts *a) { return a->keep == MN_ROWS_PREDICTING ? a->keep_from : NULL; }

/* Whether the forward's rows are attention's padded layout already: padded, or packed with
 * every lane full (k + max_len rows each). */
static int padded_layout(const mn_stack_acts *a) { return !a->packed || a->N == a->B * a->S; }

/* Rows lane b keeps of its n, by `keep`. */
static int kept_rows(mn_stack_rows keep, int n, int k) {
    switch (keep) {
    case MN_ROWS_SLOTS: return k;
    case MN_ROWS_TOKENS: return n - k;
    case MN_ROWS_PREDICTING: return n - k - 1;
    default: return n;
    }
}

void mn_stack_forward(const mn_exec *ex, mn_stack_acts *a, const mn_config *cfg, const float *wte,
                      const mn_stack_views *p, const float *memory, const int32_t *ids_fwd, const int32_t *ids_bwd,
                      const int32_t *valid, int B, int max_len, int causal) {
    mn_stack_forward_lanes(ex, a, cfg, wte, p, memory, ids_fwd, ids_bwd, valid, NULL, MN_ROWS_ALL, B, max_len,
                           causal);
}

void mn_stack_forward_lanes(const mn_exec *ex, mn_stack_acts *a, const mn_config *cfg, const float *wte,
                            const mn_stack_views *p, const float *memory, const int32_t *ids_fwd,
                            const int32_t *ids_bwd, const int32_t *valid, const int *lane_rows, mn_stack_rows keep,
                            int B, int max_len, int causal) {
    const int C = cfg->d_model, H = cfg->n_heads, k = cfg->n_slots, S = k + max_len;
    const size_t kC = (size_t)k * C;
    a->B = B;
    a->S = S;
    a->ids_bwd = ids_bwd;
    a->valid = valid;
    a->packed = lane_rows != NULL;
    a->keep = a->packed || keep == MN_ROWS_SLOTS ? keep : MN_ROWS_ALL; /* padded: the slot rows are each lane's first k */
    a->first[0] = a->out_first[0] = 0;
    for (int b = 0; b < B; b++) {
        int n = lane_rows ? lane_rows[b] : S;
        a->first[b + 1] = a->first[b] + n;
        const int from = kept_from(a) ? kept_from(a)[b] : 0;
        a->out_first[b + 1] = a->out_first[b] + kept_rows(a->keep, n, k) - from;
    }
    const int N = a->N = a->first[B], M = a->M = a->out_first[B];

    // x (N, C) = concat(memory (k, C), wte[ids]) + wpe[0..rows-1] of each lane (padded: one
    // strided call each, packed: lane by lane)
    float *x = a->blocks[0].x;
    const size_t SC = (size_t)S * C;
    if (k > 0 && !a->packed)
        MN_OP(ex, copy_rows, x, SC, memory, kC, (size_t)B, kC);
    for (int b = 0; k > 0 && a->packed && b < B; b++)
        MN_OP(ex, copy_rows, x + (size_t)a->first[b] * C, 0, memory + (size_t)b * kC, 0, 1, kC);
    MN_OP(ex, embedding_forward, x, ids_fwd, wte, N, C); /* the slot rows have id -1: skipped */
    if (!a->packed)
        MN_OP(ex, add_rows, x, SC, p->wpe, 0, (size_t)B, SC);
    for (int b = 0; a->packed && b < B; b++)
        MN_OP(ex, add_rows, x + (size_t)a->first[b] * C, 0, p->wpe, 0, 1, (size_t)(a->first[b + 1] - a->first[b]) * C);

    for (int l = 0; l < p->n_layers; l++) {
        const mn_block_views *w = &p->blocks[l];
        mn_block_acts *ba = &a->blocks[l];
        float *out = l + 1 < p->n_layers ? a->blocks[l + 1].x : a->x_out;
        // the last block computes the rows nobody reads only up to their keys and values
        const int R = l + 1 < p->n_layers ? N : M;
        MN_OP(ex, layernorm_forward, ba->ln1, ba->ln1_mean, ba->ln1_rstd, ba->x, w->ln1_w, w->ln1_b, N, C);
        // attention runs on its padded layout: qkv (kept for the backward) scattered to it from fch
        // and its output gathered from fch_gelu, unless the rows are laid out so already
        const int qkv_direct = padded_layout(a), out_direct = qkv_direct && R == N;
        MN_OP(ex, linear_forward, qkv_direct ? ba->qkv : ba->fch, ba->ln1, w->attn_w, w->attn_b, N, C, 3 * C);
        if (!qkv_direct)
            copy_lanes(ex, B, a->first, 3 * (size_t)C, ba->qkv, padded_at(a, 0), ba->fch, rows_at(a));
        const int *from = R < N && causal ? kept_from(a) : NULL;
        if (from) { // inference's kept rows only, lane by lane, straight into their packed rows
            for (int b = 0; b < B; b++)
                if (a->out_first[b + 1] > a->out_first[b])
                    MN_OP(ex, attention_rows_forward, ba->atty + (size_t)a->out_first[b] * C, ba->att,
                          ba->qkv + (size_t)b * S * 3 * C, valid + b, 1, S, C, H, out_offset(a, k) + from[b],
                          a->out_first[b + 1] - a->out_first[b]);
        } else
            MN_OP(ex, attention_forward, out_direct ? ba->atty : ba->fch_gelu, ba->att, ba->qkv, valid, B, S, C, H,
                  causal);
        if (!out_direct && !from) {
            const int *rows = R == N ? a->first : a->out_first;
            const lanes_at src = R == N ? padded_at(a, 0) : (lanes_at){NULL, a->S, out_offset(a, k), kept_from(a)};
            copy_lanes(ex, B, rows, (size_t)C, ba->atty, (lanes_at){rows, 0, 0, NULL}, ba->fch_gelu, src);
        }
        // res2 = x + atty @ attn_proj  (the projection lands in `out` first, used as scratch)
        const float *x_in = ba->x;
        if (R < N) { // x's kept rows, in ln2 until ln2 is written
            copy_lanes(ex, B, a->out_first, (size_t)C, ba->ln2, out_at(a), ba->x,
                       (lanes_at){a->first, 0, out_offset(a, k), kept_from(a)});
            x_in = ba->ln2;
        }
        MN_OP(ex, linear_forward, out, ba->atty, w->attn_proj_w, w->attn_proj_b, R, C, C);
        MN_OP(ex, residual_forward, ba->res2, x_in, out, (size_t)R * C);
        MN_OP(ex, layernorm_forward, ba->ln2, ba->ln2_mean, ba->ln2_rstd, ba->res2, w->ln2_w, w->ln2_b, R, C);
        MN_OP(ex, linear_forward, ba->fch, ba->ln2, w->fc_w, w->fc_b, R, C, 4 * C);
        MN_OP(ex, gelu_forward, ba->fch_gelu, ba->fch, (size_t)R * 4 * C);
        MN_OP(ex, linear_forward, out, ba->fch_gelu, w->fc_proj_w, w->fc_proj_b, R, 4 * C, C);
        MN_OP(ex, residual_forward, out, ba->res2, out, (size_t)R * C);
    }
    MN_OP(ex, layernorm_forward, a->lnf, a->lnf_mean, a->lnf_rstd, a->x_out, p->lnf_w, p->lnf_b, M, C);
}

/* ---------------------------------------------------------------- backward */
void mn_stack_backward(const mn_exec *ex, mn_stack_acts *a, mn_stack_grads_scratch *s, const mn_config *cfg,
                       const mn_stack_views *p, mn_stack_views *g, float *dwte, float *dlnf, float *dmemory,
                       int causal) {
    const int C = cfg->d_model, H = cfg->n_heads, k = cfg->n_slots, B = a->B, S = a->S, N = a->N, M = a->M;
    const size_t NC = (size_t)N * C, kC = (size_t)k * C;
    float *dx = s->dx, *dres2 = s->dres2;

    MN_OP(ex, zero, dx, (size_t)M * C * sizeof(float));
    MN_OP(ex, layernorm_backward, dx, g->lnf_w, g->lnf_b, dlnf, a->x_out, p->lnf_w, a->lnf_mean, a->lnf_rstd, M, C);

    for (int l = p->n_layers - 1; l >= 0; l--) {
        const mn_block_views *w = &p->blocks[l];
        mn_block_views *gw = &g->blocks[l];
        mn_block_acts *ba = &a->blocks[l];
        const int R = l + 1 < p->n_layers ? N : M; /* rows past attention (the forward's) */
        const size_t RC = (size_t)R * C;
        // out = res2 + fc_proj(gelu(fc(ln2(res2))))
        MN_OP(ex, copy, dres2, dx, RC * sizeof(float));
        MN_OP(ex, zero, s->dfch_gelu, 4 * RC * sizeof(float));
        MN_OP(ex, linear_backward, s->dfch_gelu, gw->fc_proj_w, gw->fc_proj_b, dx, ba->fch_gelu, w->fc_proj_w, R,
              4 * C, C);
        MN_OP(ex, zero, s->dfch, 4 * RC * sizeof(float));
        MN_OP(ex, gelu_backward, s->dfch, s->dfch_gelu, ba->fch, 4 * RC);
        MN_OP(ex, zero, s->dln, RC * sizeof(float));
        MN_OP(ex, linear_backward, s->dln, gw->fc_w, gw->fc_b, s->dfch, ba->ln2, w->fc_w, R, C, 4 * C);
        MN_OP(ex, layernorm_backward, dres2, gw->ln2_w, gw->ln2_b, s->dln, ba->res2, w->ln2_w, ba->ln2_mean,
              ba->ln2_rstd, R, C);
        // res2 = x + attn_proj(attention(qkv(ln1(x)))); rows the last block dropped get no gradient
        if (R < N) {
            MN_OP(ex, zero, dx, NC * sizeof(float));
            copy_lanes(ex, B, a->out_first, (size_t)C, dx, (lanes_at){a->first, 0, out_offset(a, k), NULL}, dres2,
                       out_at(a));
        } else {
            MN_OP(ex, copy, dx, dres2, NC * sizeof(float));
        }
        MN_OP(ex, zero, s->datty, RC * sizeof(float));
        MN_OP(ex, linear_backward, s->datty, gw->attn_proj_w, gw->attn_proj_b, dres2, ba->atty, w->attn_proj_w, R,
              C, C);
        // attention on its padded layout: dY scattered to dfch_gelu, dqkv gathered from dfch (both
        // free now), unless the rows are laid out so already
        const int dqkv_direct = padded_layout(a), dy_direct = dqkv_direct && R == N;
        const size_t padded = (size_t)B * S * C;
        const float *dy = s->datty;
        if (!dy_direct) {
            const int *rows = R == N ? a->first : a->out_first;
            if (R < N) // the dropped rows' queries send no gradient
                MN_OP(ex, zero, s->dfch_gelu, padded * sizeof(float));
            copy_lanes(ex, B, rows, (size_t)C, s->dfch_gelu, padded_at(a, R == N ? 0 : out_offset(a, k)), s->datty,
                       (lanes_at){rows, 0, 0, NULL});
            dy = s->dfch_gelu;
        }
        float *dqkv = dqkv_direct ? s->dqkv : s->dfch;
        MN_OP(ex, zero, dqkv, 3 * padded * sizeof(float));
        MN_OP(ex, attention_backward, dqkv, dy, ba->qkv, ba->att, a->valid, B, S, C, H, causal);
        if (!dqkv_direct)
            copy_lanes(ex, B, a->first, 3 * (size_t)C, s->dqkv, rows_at(a), s->dfch, padded_at(a, 0));
        MN_OP(ex, zero, s->dln, NC * sizeof(float));
        MN_OP(ex, linear_backward, s->dln, gw->attn_w, gw->attn_b, s->dqkv, ba->ln1, w->attn_w, N, C, 3 * C);
        MN_OP(ex, layernorm_backward, dx, gw->ln1_w, gw->ln1_b, s->dln, ba->x, w->ln1_w, ba->ln1_mean, ba->ln1_rstd,
              N, C);
    }

    // x = concat(memory, wte[ids]) + wpe: route dx to wpe (summed over the lanes in order), to
    // the memory, and to the embedding table (real tokens only: padded rows carry exactly zero
    // gradient, and their ids are fake)
    if (!a->packed) {
        MN_OP(ex, add_rows, g->wpe, 0, dx, (size_t)S * C, (size_t)B, (size_t)S * C);
        if (dmemory && k > 0)
            MN_OP(ex, add_rows, dmemory, kC, dx, (size_t)S * C, (size_t)B, kC);
    }
    for (int b = 0; a->packed && b < B; b++) {
        const float *dxb = dx + (size_t)a->first[b] * C;
        MN_OP(ex, add_rows, g->wpe, 0, dxb, 0, 1, (size_t)(a->first[b + 1] - a->first[b]) * C);
        if (dmemory && k > 0)
            MN_OP(ex, add_rows, dmemory + (size_t)b * kC, 0, dxb, 0, 1, kC);
    }
    MN_OP(ex, embedding_backward, dwte, dx, a->ids_bwd, N, C);
}
