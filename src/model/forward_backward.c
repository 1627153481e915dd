/* Training forward + backward over a batch of T-turn episodes, with BPTT truncated every
 * `bptt` turns (docs/model.md).
 *
 * The decoder's output feeds only the loss of its own turn, so its whole backward runs right
 * after its forward: only one turn of decoder activations is ever alive, and its gradient into
 * R_{t-1} is kept. The compressor's activations are kept for the turns of the current chunk;
 * at the chunk's end the gradient flows back through R_t -> R_{t-1} inside the chunk. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cpu/ops.h"
#include "model/model_internal.h"
#include "model/trainer_internal.h"


static void trainer_release(mn_trainer *tr) {
    if (!tr)
        return;
    free(tr->frozen);
    free(tr->grads);
    free(tr->adam_m);
    free(tr->adam_v);
    mn_views_free(&tr->g);
    mn_stack_acts_free(&tr->decoder);
    if (tr->compressor)
        for (int i = 0; i < tr->bptt; i++)
            mn_stack_acts_free(&tr->compressor[i]);
    free(tr->compressor);
    mn_stack_scratch_free(&tr->scratch);
    free(tr->states);
    free(tr->u);
    free(tr->z);
    free(tr->dmemory_decoder);
    free(tr->dstate);
    free(tr->dstate_prev);
    free(tr->du);
    free(tr->dgate_scratch);
    free(tr->head_in);
    free(tr->dhead_in);
    free(tr->logits);
    free(tr->dlogits);
    free(tr->losses);
    free(tr->weights);
    free(tr->targets);
    free(tr->dlnf);
    free(tr);
}

void mn_trainer_free(mn_trainer *tr) { trainer_release(tr); }

mn_status mn_trainer_create(mn_model *model, int max_B, int bptt, mn_trainer **out) {
    if (!out || !model)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_create: NULL argument");
    *out = NULL;
    if (max_B < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_create: max_B = %d must be >= 1", max_B);
    if (bptt < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_create: bptt = %d must be >= 1", bptt);
    const mn_config *c = &model->config;
    mn_trainer *tr = calloc(1, sizeof *tr);
    if (!tr)
        return mn_fail(MN_ERR_NOMEM, "out of memory creating the trainer");
    tr->model = model;
    tr->max_B = max_B;
    tr->bptt = bptt;
    size_t P = model->num_params, B = (size_t)max_B, C = (size_t)c->d_model;
    size_t N = (size_t)c->max_turn_tokens, S = (size_t)c->n_slots + N, V = (size_t)c->vocab_size;
    size_t state = B * (size_t)c->n_slots * C;
    tr->frozen = calloc((size_t)model->n_tensors, 1);
    tr->grads = calloc(P, sizeof(float));
    tr->adam_m = calloc(P, sizeof(float));
    tr->adam_v = calloc(P, sizeof(float));
    tr->compressor = calloc((size_t)bptt, sizeof *tr->compressor);
    tr->states = malloc(((size_t)bptt + 1) * state * sizeof(float));
    tr->u = malloc((size_t)bptt * state * sizeof(float));
    tr->z = malloc((size_t)bptt * state * sizeof(float));
    tr->dmemory_decoder = malloc((size_t)bptt * state * sizeof(float));
    tr->dstate = malloc(state * sizeof(float));
    tr->dstate_prev = malloc(state * sizeof(float));
    tr->du = malloc(state * sizeof(float));
    tr->dgate_scratch = malloc(state * sizeof(float));
    tr->head_in = malloc(B * N * C * sizeof(float));
    tr->dhead_in = malloc(B * N * C * sizeof(float));
    tr->logits = malloc(B * N * V * sizeof(float));
    tr->dlogits = malloc(B * N * V * sizeof(float));
    tr->losses = malloc(B * N * sizeof(float));
    tr->weights = malloc(B * N * sizeof(float));
    tr->targets = malloc(B * N * sizeof(int32_t));
    tr->dlnf = malloc(B * S * C * sizeof(float));
    mn_status st = MN_OK;
    if (!tr->frozen || !tr->grads || !tr->adam_m || !tr->adam_v || !tr->compressor || !tr->states || !tr->u || !tr->z ||
        !tr->dmemory_decoder || !tr->dstate || !tr->dstate_prev || !tr->du || !tr->dgate_scratch || !tr->head_in ||
        !tr->dhead_in || !tr->logits || !tr->dlogits || !tr->losses || !tr->weights || !tr->targets ||
        !tr->dlnf)
        st = mn_fail(MN_ERR_NOMEM, "out of memory creating the trainer (batch %d, bptt %d)", max_B, bptt);
    if (st == MN_OK)
        st = mn_views_bind(model, tr->grads, &tr->g);
    if (st == MN_OK)
        st = mn_stack_acts_alloc(&tr->decoder, c, c->n_layers, max_B, (int)S);
    for (int i = 0; st == MN_OK && i < bptt; i++)
        st = mn_stack_acts_alloc(&tr->compressor[i], c, c->n_comp_layers, max_B, (int)S);
    if (st == MN_OK)
        st = mn_stack_scratch_alloc(&tr->scratch, c, max_B, (int)S);
    if (st != MN_OK) {
        trainer_release(tr);
        return st;
    }
    *out = tr;
    return MN_OK;
}

int mn_trainer_bptt(const mn_trainer *tr) { return tr ? tr->bptt : 0; }
float *mn_trainer_grads(mn_trainer *tr) { return tr ? tr->grads : NULL; }
float *mn_trainer_adam_m(mn_trainer *tr) { return tr ? tr->adam_m : NULL; }
float *mn_trainer_adam_v(mn_trainer *tr) { return tr ? tr->adam_v : NULL; }
uint64_t mn_trainer_step(const mn_trainer *tr) { return tr ? tr->step : 0; }
void mn_trainer_set_step(mn_trainer *tr, uint64_t step) {
    if (tr)
        tr->step = step;
}

/* ---------------------------------------------------------------- validation */
static mn_status validate_batch(const mn_trainer *tr, const mn_batch *b, double *total_weight) {
    const mn_config *c = &tr->model->config;
    if (!b)
        return mn_fail(MN_ERR_INVALID_ARG, "batch is NULL");
    if (b->B < 1 || b->B > tr->max_B)
        return mn_fail(MN_ERR_INVALID_ARG, "batch: B = %d out of range [1, %d] (the trainer's max_B)", b->B,
                       tr->max_B);
    if (b->T < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "batch: T = %d must be >= 1", b->T);
    if (b->max_len < 1 || b->max_len > c->max_turn_tokens)
        return mn_fail(MN_ERR_INVALID_ARG, "batch: max_len = %d out of range [1, %d] (max_turn_tokens)",
                       b->max_len, c->max_turn_tokens);
    if (!b->tokens || !b->lengths)
        return mn_fail(MN_ERR_INVALID_ARG, "batch: tokens or lengths is NULL");
    double total = 0.0;
    for (int t = 0; t < b->T; t++)
        for (int e = 0; e < b->B; e++) {
            int len = b->lengths[t * b->B + e];
            if (len < 1 || len > b->max_len)
                return mn_fail(MN_ERR_INVALID_ARG,
                               "batch: turn %d of episode %d has length %d (must be 1..%d; empty turns are not allowed)",
                               t, e, len, b->max_len);
            const int32_t *tok = b->tokens + ((size_t)t * b->B + e) * b->max_len;
            const float *w = b->loss_weights ? b->loss_weights + ((size_t)t * b->B + e) * b->max_len : NULL;
            for (int i = 0; i < len; i++) {
                if (tok[i] < 0 || tok[i] >= c->vocab_size)
                    return mn_fail(MN_ERR_INVALID_ARG,
                                   "batch: token %d at turn %d, episode %d, position %d is outside the vocabulary [0, %d)",
                                   tok[i], t, e, i, c->vocab_size);
                if (i == 0)
                    continue; /* nothing predicts the first token */
                float wi = w ? w[i] : 1.0f;
                if (!isfinite(wi) || wi < 0.0f)
                    return mn_fail(MN_ERR_NUMERIC, "batch: loss weight %g at turn %d, episode %d, position %d is not finite and >= 0",
                                   (double)wi, t, e, i);
                total += wi;
            }
        }
    if (!(total > 0.0))
        return mn_fail(MN_ERR_INVALID_ARG, "batch: no loss targets (every turn has length 1 or weight 0)");
    *total_weight = total;
    return MN_OK;
}

/* ---------------------------------------------------------------- one turn */
/* Decoder forward for turn t reading `memory` (B, k, C); with grads, also its full backward,
 * writing the memory's gradient into dmemory. Returns the turn's weighted loss sum and weight. */
static void decoder_turn(mn_trainer *tr, const mn_batch *b, int t, const float *memory, double scale,
                         int with_grads, float *dmemory, double *loss_sum, double *weight_sum,
                         float *logits_out) {
    mn_model *m = tr->model;
    const mn_config *c = &m->config;
    const int B = b->B, L = b->max_len, k = c->n_slots, C = c->d_model, V = c->vocab_size, S = k + L;
    const int32_t *tokens = b->tokens + (size_t)t * B * L;
    const int32_t *lengths = b->lengths + (size_t)t * B;
    const float *w = b->loss_weights ? b->loss_weights + (size_t)t * B * L : NULL;
    mn_stack_acts *a = &tr->decoder;

    mn_stack_forward(a, c, m->views.wte, &m->views.decoder, memory, tokens, lengths, B, L, 1);

    // head_in (B, L, C) = token rows of ln_f; logits (B, L, V) = head_in @ wte^T
    for (int e = 0; e < B; e++)
        memcpy(tr->head_in + (size_t)e * L * C, a->lnf + ((size_t)e * S + k) * C, (size_t)L * C * sizeof(float));
    mn_lm_head_forward(tr->logits, tr->head_in, m->views.wte, B * L, C, V);

    // row i predicts token i+1 of the same turn
    for (int e = 0; e < B; e++)
        for (int i = 0; i < L; i++) {
            int r = e * L + i, len = lengths[e];
            int has_target = i + 1 < len;
            tr->targets[r] = has_target ? tokens[r + 1] : 0;
            tr->weights[r] = has_target ? (w ? w[r + 1] : 1.0f) : 0.0f;
        }
    mn_crossentropy_forward(tr->losses, tr->logits, tr->targets, tr->weights, B * L, V);
    double ls = 0.0, ws = 0.0;
    for (int r = 0; r < B * L; r++) {
        ls += tr->losses[r];
        ws += tr->weights[r];
    }
    *loss_sum = ls;
    *weight_sum = ws;
    if (logits_out)
        for (int e = 0; e < B; e++)
            memcpy(logits_out + (size_t)e * L * V, tr->logits + (size_t)e * L * V,
                   (size_t)lengths[e] * V * sizeof(float));
    if (!with_grads)
        return;

    memset(tr->dlogits, 0, (size_t)B * L * V * sizeof(float));
    mn_crossentropy_backward(tr->dlogits, tr->logits, tr->targets, tr->weights, (float)scale, B * L, V);
    memset(tr->dhead_in, 0, (size_t)B * L * C * sizeof(float));
    mn_lm_head_backward(tr->dhead_in, tr->g.wte, tr->dlogits, tr->head_in, m->views.wte, B * L, C, V);
    memset(tr->dlnf, 0, (size_t)B * S * C * sizeof(float));
    for (int e = 0; e < B; e++)
        memcpy(tr->dlnf + ((size_t)e * S + k) * C, tr->dhead_in + (size_t)e * L * C, (size_t)L * C * sizeof(float));
    memset(dmemory, 0, (size_t)B * k * C * sizeof(float));
    mn_stack_backward(a, &tr->scratch, c, &m->views.decoder, &tr->g.decoder, tr->g.wte, tr->dlnf, dmemory, 1);
}

/* Compressor forward for turn t: r_out = update(r_in, turn), keeping activations in slot j. */
static void compressor_turn(mn_trainer *tr, const mn_batch *b, int t, int j, const float *r_in, float *r_out) {
    mn_model *m = tr->model;
    const mn_config *c = &m->config;
    const int B = b->B, L = b->max_len, k = c->n_slots, C = c->d_model, S = k + L;
    mn_stack_acts *a = &tr->compressor[j];
    mn_stack_forward(a, c, m->views.wte, &m->views.compressor, r_in, b->tokens + (size_t)t * B * L,
                     b->lengths + (size_t)t * B, B, L, 0);
    float *u = tr->u + (size_t)j * B * k * C, *z = tr->z + (size_t)j * B * k * C;
    for (int e = 0; e < B; e++) // U = ln_f rows of the slots
        memcpy(u + (size_t)e * k * C, a->lnf + (size_t)e * S * C, (size_t)k * C * sizeof(float));
    mn_gated_update_forward(r_out, z, r_in, u, m->views.gate_w, m->views.gate_b, B * k, C);
}

/* Backward of compressor turn in slot j: from dstate (dL/dR_t), accumulate dL/dR_{t-1} into dprev. */
static void compressor_turn_backward(mn_trainer *tr, int j, const float *dstate, float *dprev) {
    mn_model *m = tr->model;
    const mn_config *c = &m->config;
    mn_stack_acts *a = &tr->compressor[j];
    const int B = a->B, S = a->S, k = c->n_slots, C = c->d_model;
    const size_t state = (size_t)B * k * C;
    const float *r_in = tr->states + (size_t)j * state;
    float *u = tr->u + (size_t)j * state, *z = tr->z + (size_t)j * state;
    float *du = tr->du;
    memset(du, 0, state * sizeof(float));
    mn_gated_update_backward(dprev, du, tr->g.gate_w, tr->g.gate_b, dstate, r_in, u, z, m->views.gate_w,
                             tr->dgate_scratch, B * k, C);
    // dU enters ln_f at the slot rows; token rows of the compressor feed nothing
    memset(tr->dlnf, 0, (size_t)B * S * C * sizeof(float));
    for (int e = 0; e < B; e++)
        memcpy(tr->dlnf + (size_t)e * S * C, du + (size_t)e * k * C, (size_t)k * C * sizeof(float));
    mn_stack_backward(a, &tr->scratch, c, &m->views.compressor, &tr->g.compressor, tr->g.wte, tr->dlnf, dprev, 0);
}

/* ---------------------------------------------------------------- the batch */
static mn_status run_batch(mn_trainer *tr, const mn_batch *b, float *loss, mn_forward_outputs *out,
                           int with_grads) {
    if (!tr || !loss)
        return mn_fail(MN_ERR_INVALID_ARG, "forward: trainer or loss is NULL");
    double total_weight;
    MN_TRY(validate_batch(tr, b, &total_weight));
    mn_model *m = tr->model;
    const mn_config *c = &m->config;
    const int B = b->B, T = b->T, k = c->n_slots, C = c->d_model, V = c->vocab_size;
    const size_t state = (size_t)B * k * C;
    const double scale = 1.0 / total_weight;
    if (with_grads)
        memset(tr->grads, 0, m->num_params * sizeof(float));

    for (int e = 0; e < B; e++) // R_0 broadcast over the batch
        memcpy(tr->states + (size_t)e * k * C, m->views.r0, (size_t)k * C * sizeof(float));
    double loss_sum = 0.0;
    for (int t0 = 0; t0 < T; t0 += tr->bptt) {
        int n = T - t0 < tr->bptt ? T - t0 : tr->bptt;
        for (int j = 0; j < n; j++) {
            int t = t0 + j;
            const float *r_in = tr->states + (size_t)j * state;
            double ls, ws;
            float *logits_out = out && out->logits ? out->logits + (size_t)t * B * b->max_len * V : NULL;
            decoder_turn(tr, b, t, r_in, scale, with_grads, tr->dmemory_decoder + (size_t)j * state, &ls, &ws,
                         logits_out);
            loss_sum += ls;
            if (out && out->turn_losses)
                out->turn_losses[t] = ws > 0 ? (float)(ls / ws) : 0.0f;
            /* R_T is read by nobody: skip the last update unless the caller wants the states */
            if (t + 1 < T || (out && out->states)) {
                compressor_turn(tr, b, t, j, r_in, tr->states + (size_t)(j + 1) * state);
                if (out && out->states)
                    memcpy(out->states + (size_t)t * state, tr->states + (size_t)(j + 1) * state,
                           state * sizeof(float));
            }
        }
        if (with_grads) {
            // the state leaving the chunk is read by the next chunk only: truncated, zero gradient
            memset(tr->dstate, 0, state * sizeof(float));
            for (int j = n - 1; j >= 0; j--) {
                memcpy(tr->dstate_prev, tr->dmemory_decoder + (size_t)j * state, state * sizeof(float));
                if (j < n - 1)
                    compressor_turn_backward(tr, j, tr->dstate, tr->dstate_prev);
                float *swap = tr->dstate;
                tr->dstate = tr->dstate_prev;
                tr->dstate_prev = swap;
            }
            if (t0 == 0) // only the first chunk reaches R_0; sum over the episodes it was copied to
                for (int e = 0; e < B; e++)
                    mn_residual_backward(tr->g.r0, NULL, tr->dstate + (size_t)e * k * C, (size_t)k * C);
        }
        // the next chunk starts from the last state of this one
        memmove(tr->states, tr->states + (size_t)n * state, state * sizeof(float));
    }
    *loss = (float)(loss_sum * scale);
    if (!isfinite(*loss))
        return mn_fail(MN_ERR_NUMERIC, "forward: the loss is not finite (%g)", (double)*loss);
    return MN_OK;
}

mn_status mn_forward_backward(mn_trainer *tr, const mn_batch *b, float *loss, mn_forward_outputs *out) {
    return run_batch(tr, b, loss, out, 1);
}

mn_status mn_forward(mn_trainer *tr, const mn_batch *b, float *loss, mn_forward_outputs *out) {
    return run_batch(tr, b, loss, out, 0);
}
