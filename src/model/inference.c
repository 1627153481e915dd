/* Inference with explicit state (rwkv.cpp style): r_in -> r_out per turn, logits given R. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cpu/ops.h"
#include "model/model_internal.h"

/* Scratch for one turn of one session, allocated on first use and kept by the model. */
struct mn_infer_workspace {
    mn_stack_acts acts;
    float *u, *z, *r_next; /* (k, C) */
};

void mn_infer_workspace_free(struct mn_infer_workspace *ws) {
    if (!ws)
        return;
    mn_stack_acts_free(&ws->acts);
    free(ws->u);
    free(ws->z);
    free(ws->r_next);
    free(ws);
}

static mn_status workspace(mn_model *m, struct mn_infer_workspace **out) {
    if (!m->infer) {
        const mn_config *c = &m->config;
        struct mn_infer_workspace *ws = calloc(1, sizeof *ws);
        if (!ws)
            return mn_fail(MN_ERR_NOMEM, "out of memory for the inference workspace");
        int layers = c->n_layers > c->n_comp_layers ? c->n_layers : c->n_comp_layers;
        size_t state = (size_t)c->n_slots * c->d_model;
        mn_status st = mn_stack_acts_alloc(&ws->acts, c, layers, 1, c->n_slots + c->max_turn_tokens);
        ws->u = malloc(state * sizeof(float));
        ws->z = malloc(state * sizeof(float));
        ws->r_next = malloc(state * sizeof(float));
        if (st == MN_OK && (!ws->u || !ws->z || !ws->r_next))
            st = mn_fail(MN_ERR_NOMEM, "out of memory for the inference workspace");
        if (st != MN_OK) {
            mn_infer_workspace_free(ws);
            return st;
        }
        m->infer = ws;
    }
    *out = m->infer;
    return MN_OK;
}

static mn_status check_turn(const mn_model *m, const int32_t *tokens, int n, const float *r, const char *who) {
    if (!m || !r)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: model or state is NULL", who);
    if (!tokens || n < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: empty turn (tokens %s, n = %d)", who, tokens ? "set" : "NULL", n);
    if (n > m->config.max_turn_tokens)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: turn of %d tokens exceeds max_turn_tokens = %d", who, n,
                       m->config.max_turn_tokens);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->config.vocab_size)
            return mn_fail(MN_ERR_INVALID_ARG, "%s: token %d at position %d is outside the vocabulary [0, %d)", who,
                           tokens[i], i, m->config.vocab_size);
    size_t state = mn_state_floats(m);
    for (size_t i = 0; i < state; i++)
        if (!isfinite(r[i]))
            return mn_fail(MN_ERR_NUMERIC, "%s: the session state has a non-finite value at %zu", who, i);
    return MN_OK;
}

mn_status mn_initial_state(const mn_model *m, float *r_out) {
    if (!m || !r_out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_initial_state: NULL argument");
    memcpy(r_out, m->views.r0, mn_state_floats(m) * sizeof(float));
    return MN_OK;
}

mn_status mn_update(mn_model *m, const int32_t *tokens, int n, const float *r_in, float *r_out) {
    MN_TRY(check_turn(m, tokens, n, r_in, "mn_update"));
    if (!r_out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_update: r_out is NULL");
    struct mn_infer_workspace *ws = NULL;
    MN_TRY(workspace(m, &ws));
    const mn_config *c = &m->config;
    const int k = c->n_slots, C = c->d_model;
    mn_stack_forward(&ws->acts, c, m->views.wte, &m->views.compressor, r_in, tokens, &n, 1, n, 0);
    memcpy(ws->u, ws->acts.lnf, (size_t)k * C * sizeof(float));
    /* via r_next so that r_in == r_out works */
    mn_gated_update_forward(ws->r_next, ws->z, r_in, ws->u, m->views.gate_w, m->views.gate_b, k, C);
    memcpy(r_out, ws->r_next, (size_t)k * C * sizeof(float));
    return MN_OK;
}

mn_status mn_logits(mn_model *m, const int32_t *tokens, int n, const float *r, float *logits) {
    MN_TRY(check_turn(m, tokens, n, r, "mn_logits"));
    if (!logits)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_logits: logits is NULL");
    struct mn_infer_workspace *ws = NULL;
    MN_TRY(workspace(m, &ws));
    const mn_config *c = &m->config;
    const int k = c->n_slots, C = c->d_model;
    mn_stack_forward(&ws->acts, c, m->views.wte, &m->views.decoder, r, tokens, &n, 1, n, 1);
    mn_lm_head_forward(logits, ws->acts.lnf + (size_t)k * C, m->views.wte, n, C, c->vocab_size);
    return MN_OK;
}
