/* Training forward + backward over a batch of T-turn episodes, with BPTT truncated every
 * `bptt` turns (docs/model.md), on the trainer's backend (model/backend.h).
 *
 * The decoder's output feeds only the loss of its own turn, so its whole backward runs right
 * after its forward: only one turn of decoder activations is ever alive, and its gradient into
 * R_{t-1} is kept. The compressor's activations are kept for the turns of the current chunk;
 * at the chunk's end the gradient flows back through R_t -> R_{t-1} inside the chunk.
 *
 * Host work per batch: validation, the ids/targets/weights of every turn (uploaded in one
 * copy), and one read-back of the per-turn loss sums at the end. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/model_internal.h"
#include "model/trainer_internal.h"

/* Per-turn sizes of the batch inputs for (B, S, L). */
static size_t turn_ints(size_t B, size_t S, size_t L) { return 2 * B * S + B + B * L; }

static void release_inputs(mn_trainer *tr) {
    mn_exec_release(&tr->exec, tr->in_ints);
    mn_exec_release(&tr->exec, tr->in_weights);
    mn_exec_release(&tr->exec, tr->turn_loss);
    mn_exec_release(&tr->exec, tr->recon_loss);
    free(tr->in_ints_host);
    free(tr->in_weights_host);
    free(tr->turn_weight);
    free(tr->turn_loss_host);
    free(tr->recon_loss_host);
    tr->in_ints = NULL, tr->in_weights = NULL, tr->turn_loss = NULL, tr->recon_loss = NULL;
    tr->in_ints_host = NULL, tr->in_weights_host = NULL, tr->turn_weight = NULL, tr->turn_loss_host = NULL;
    tr->recon_loss_host = NULL;
    tr->input_turns = 0;
}

/* Room for the inputs of T turns of the largest batch shape. */
static mn_status reserve_inputs(mn_trainer *tr, int T) {
    if ((size_t)T <= tr->input_turns)
        return MN_OK;
    release_inputs(tr);
    const mn_config *c = &tr->model->config;
    size_t turns = (size_t)T < 8 ? 8 : (size_t)T, B = (size_t)tr->max_B, N = (size_t)c->max_turn_tokens;
    size_t ints = turns * turn_ints(B, (size_t)c->n_slots + N, N), floats = turns * B * N;
    tr->in_ints_host = malloc(ints * sizeof(int32_t));
    tr->in_weights_host = malloc(floats * sizeof(float));
    tr->turn_weight = malloc(turns * sizeof(double));
    tr->turn_loss_host = malloc(turns * sizeof(double));
    tr->recon_loss_host = malloc(turns * sizeof(double));
    mn_status st = MN_OK;
    if (!tr->in_ints_host || !tr->in_weights_host || !tr->turn_weight || !tr->turn_loss_host || !tr->recon_loss_host)
        st = mn_fail(MN_ERR_NOMEM, "out of memory for the inputs of %zu turns", turns);
    if (st == MN_OK)
        st = mn_exec_alloc(&tr->exec, ints * sizeof(int32_t), (void **)&tr->in_ints);
    if (st == MN_OK)
        st = mn_exec_alloc(&tr->exec, floats * sizeof(float), (void **)&tr->in_weights);
    if (st == MN_OK)
        st = mn_exec_alloc(&tr->exec, turns * sizeof(double), (void **)&tr->turn_loss);
    if (st == MN_OK)
        st = mn_exec_alloc(&tr->exec, turns * sizeof(double), (void **)&tr->recon_loss);
    if (st != MN_OK) {
        release_inputs(tr);
        return st;
    }
    tr->input_turns = turns;
    return MN_OK;
}

static void trainer_release(mn_trainer *tr) {
    if (!tr)
        return;
    const mn_exec *ex = &tr->exec;
    if (ex->be) {
        int on_host = ex->be->device == MN_DEVICE_CPU;
        if (!on_host) {
            mn_exec_release(ex, tr->params);
            free(tr->host_grads);
            free(tr->host_adam_m);
            free(tr->host_adam_v);
        }
        mn_exec_release(ex, tr->grads);
        mn_exec_release(ex, tr->adam_m);
        mn_exec_release(ex, tr->adam_v);
        mn_stack_acts_free(ex, &tr->decoder);
        if (tr->compressor)
            for (int i = 0; i < tr->bptt; i++)
                mn_stack_acts_free(ex, &tr->compressor[i]);
        mn_stack_scratch_free(ex, &tr->scratch);
        float *buffers[] = {tr->states, tr->u, tr->write_aux, tr->dmemory_decoder, tr->dstate, tr->dstate_prev, tr->du,
                            tr->write_scratch, tr->dhead_in, tr->logits, tr->losses, tr->dmemory_recon};
        for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++)
            mn_exec_release(ex, buffers[i]);
        release_inputs(tr);
        mn_exec_close(&tr->exec);
    }
    free(tr->compressor);
    free(tr->frozen);
    free(tr->packed_first);
    free(tr->lane_rows);
    free(tr->segments);
    mn_views_free(&tr->p);
    mn_views_free(&tr->g);
    free(tr);
}

void mn_trainer_free(mn_trainer *tr) { trainer_release(tr); }

/* Backend buffers of the trainer, zero-filled. */
static mn_status alloc_buffers(mn_trainer *tr) {
    const mn_config *c = &tr->model->config;
    const mn_exec *ex = &tr->exec;
    size_t P = tr->model->num_params, B = (size_t)tr->max_B, C = (size_t)c->d_model;
    size_t N = (size_t)c->max_turn_tokens, S = (size_t)c->n_slots + N, V = (size_t)c->vocab_size;
    size_t state = B * (size_t)c->n_slots * C, bptt = (size_t)tr->bptt;
    size_t chunk = ex->be->classifier_floats / V, rows = B * N;
    if (chunk < C)
        chunk = C;
    tr->write_aux_stride = mn_memory_write_aux_floats(c, tr->max_B);
    tr->classifier_rows = (int)(ex->be->classifier_floats && chunk >= 1 && chunk < rows ? chunk : rows);
    struct {
        float **at;
        size_t floats;
    } plan[] = {
        {&tr->grads, P},          {&tr->adam_m, P},        {&tr->adam_v, P},
        {&tr->states, (bptt + 1) * state}, {&tr->u, bptt * state}, {&tr->write_aux, bptt * tr->write_aux_stride},
        {&tr->dmemory_decoder, bptt * state}, {&tr->dstate, state}, {&tr->dstate_prev, state},
        {&tr->du, state},         {&tr->write_scratch, tr->write_aux_stride},
        {&tr->dhead_in, B * N * C}, {&tr->logits, (size_t)tr->classifier_rows * V},
        {&tr->losses, B * N},
    };
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++)
        MN_TRY(mn_exec_alloc(ex, plan[i].floats * sizeof(float), (void **)plan[i].at));
    if (ex->be->device == MN_DEVICE_CPU) {
        tr->params = tr->model->params;
        tr->host_grads = tr->grads, tr->host_adam_m = tr->adam_m, tr->host_adam_v = tr->adam_v;
    } else {
        MN_TRY(mn_exec_alloc(ex, P * sizeof(float), (void **)&tr->params));
        tr->host_grads = calloc(P, sizeof(float));
        tr->host_adam_m = calloc(P, sizeof(float));
        tr->host_adam_v = calloc(P, sizeof(float));
        if (!tr->host_grads || !tr->host_adam_m || !tr->host_adam_v)
            return mn_fail(MN_ERR_NOMEM, "out of memory for the host mirrors of %zu parameters", P);
        MN_OP(ex, upload, tr->params, tr->model->params, P * sizeof(float));
    }
    tr->moment_lo = 0;
    tr->moment_hi = P;
    MN_TRY(mn_views_bind(tr->model, tr->params, &tr->p));
    MN_TRY(mn_views_bind(tr->model, tr->grads, &tr->g));
    MN_TRY(mn_stack_acts_alloc(ex, &tr->decoder, c, c->n_layers, tr->max_B, (int)S, 0));
    for (int i = 0; i < tr->bptt; i++)
        MN_TRY(mn_stack_acts_alloc(ex, &tr->compressor[i], c, c->n_comp_layers, tr->max_B, (int)S, 0));
    MN_TRY(mn_stack_scratch_alloc(ex, &tr->scratch, c, tr->max_B, (int)S));
    MN_TRY(reserve_inputs(tr, 8));
    return mn_exec_status(ex);
}

mn_status mn_trainer_create_on(mn_model *model, mn_device device, int max_B, int bptt, mn_trainer **out) {
    const mn_backend *be = NULL;
    if (out)
        *out = NULL;
    MN_TRY(mn_backend_for(device, &be));
    return mn_trainer_create_backend(model, be, max_B, bptt, out);
}

mn_status mn_trainer_create_backend(mn_model *model, const mn_backend *be, int max_B, int bptt, mn_trainer **out) {
    if (!out || !model)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_create: NULL argument");
    *out = NULL;
    if (max_B < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_create: max_B = %d must be >= 1", max_B);
    if (bptt < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_create: bptt = %d must be >= 1", bptt);
    mn_trainer *tr = calloc(1, sizeof *tr);
    if (!tr)
        return mn_fail(MN_ERR_NOMEM, "out of memory creating the trainer");
    tr->model = model;
    tr->max_B = max_B;
    tr->bptt = bptt;
    tr->frozen = calloc((size_t)model->n_tensors, 1);
    tr->packed_first = malloc(((size_t)max_B + 1) * sizeof(int));
    tr->lane_rows = malloc((size_t)max_B * sizeof(int));
    tr->segments = calloc((size_t)model->n_tensors, sizeof *tr->segments);
    tr->compressor = calloc((size_t)bptt, sizeof *tr->compressor);
    mn_status st = MN_OK;
    if (!tr->frozen || !tr->segments || !tr->compressor || !tr->packed_first || !tr->lane_rows)
        st = mn_fail(MN_ERR_NOMEM, "out of memory creating the trainer");
    if (st == MN_OK)
        st = mn_exec_open_backend(be, &tr->exec);
    if (st == MN_OK)
        st = mn_exec_set_threads(&tr->exec, model->threads);
    if (st == MN_OK) {
        st = alloc_buffers(tr);
        if (st != MN_OK)
            st = mn_fail_context(st, "creating the trainer (batch %d, bptt %d) on the %s", max_B, bptt,
                                 tr->exec.be->name);
    }
    if (st != MN_OK) {
        trainer_release(tr);
        return st;
    }
    *out = tr;
    return MN_OK;
}

mn_status mn_trainer_create(mn_model *model, int max_B, int bptt, mn_trainer **out) {
    return mn_trainer_create_on(model, MN_DEVICE_CPU, max_B, bptt, out);
}

mn_device mn_trainer_device(const mn_trainer *tr) { return tr ? tr->exec.be->device : MN_DEVICE_CPU; }
mn_status mn_trainer_set_threads(mn_trainer *tr, int threads) {
    if (!tr)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_set_threads: trainer is NULL");
    return mn_exec_set_threads(&tr->exec, threads);
}
mn_status mn_trainer_set_matmul(mn_trainer *tr, mn_matmul precision) {
    if (!tr)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_set_matmul: trainer is NULL");
    return tr->exec.be->set_matmul(tr->exec.ctx, precision);
}
int mn_trainer_bptt(const mn_trainer *tr) { return tr ? tr->bptt : 0; }
float *mn_trainer_grads(mn_trainer *tr) { return tr ? tr->host_grads : NULL; }
int mn_trainer_moments_range(const mn_trainer *tr, size_t *lo, size_t *hi) {
    if (!tr)
        return 0;
    if (lo)
        *lo = tr->moment_lo;
    if (hi)
        *hi = tr->moment_hi;
    return tr->moment_lo != 0 || tr->moment_hi != tr->model->num_params;
}

/* ZeRO-1: keep only [lo, hi) of the moments. New buffers, then the old ones go, so that a
 * failure leaves the trainer whole. */
mn_status mn_trainer_shard_moments(mn_trainer *tr, size_t lo, size_t hi) {
    if (!tr)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_shard_moments: trainer is NULL");
    if (tr->exec.be->device != MN_DEVICE_CPU)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_shard_moments: sharded moments are implemented on the CPU only");
    if (lo < tr->moment_lo || hi > tr->moment_hi || lo > hi)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_shard_moments: [%zu, %zu) is not inside the moments held [%zu, %zu)",
                       lo, hi, tr->moment_lo, tr->moment_hi);
    const mn_exec *ex = &tr->exec;
    size_t n = hi - lo > 0 ? hi - lo : 1;
    float *m = NULL, *v = NULL;
    mn_status st = mn_exec_alloc(ex, n * sizeof(float), (void **)&m);
    if (st == MN_OK)
        st = mn_exec_alloc(ex, n * sizeof(float), (void **)&v);
    if (st != MN_OK) {
        mn_exec_release(ex, m);
        return st;
    }
    memcpy(m, tr->adam_m + (lo - tr->moment_lo), (hi - lo) * sizeof(float));
    memcpy(v, tr->adam_v + (lo - tr->moment_lo), (hi - lo) * sizeof(float));
    mn_exec_release(ex, tr->adam_m);
    mn_exec_release(ex, tr->adam_v);
    tr->adam_m = tr->host_adam_m = m;
    tr->adam_v = tr->host_adam_v = v;
    tr->moment_lo = lo;
    tr->moment_hi = hi;
    return MN_OK;
}

float *mn_trainer_adam_m(mn_trainer *tr) { return tr ? tr->host_adam_m : NULL; }
float *mn_trainer_adam_v(mn_trainer *tr) { return tr ? tr->host_adam_v : NULL; }
uint64_t mn_trainer_step(const mn_trainer *tr) { return tr ? tr->step : 0; }
void mn_trainer_set_step(mn_trainer *tr, uint64_t step) {
    if (tr)
        tr->step = step;
}

mn_status mn_trainer_set_reconstruction(mn_trainer *tr, float weight) {
    if (!tr)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_set_reconstruction: trainer is NULL");
    if (!isfinite(weight) || weight < 0.0f)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_set_reconstruction: weight %g must be finite and >= 0",
                       (double)weight);
    if (weight > 0.0f && !tr->dmemory_recon) {
        const mn_config *c = &tr->model->config;
        size_t floats = (size_t)tr->bptt * tr->max_B * c->n_slots * c->d_model;
        MN_TRY(mn_exec_alloc(&tr->exec, floats * sizeof(float), (void **)&tr->dmemory_recon));
    }
    tr->reconstruct_weight = weight;
    return MN_OK;
}

mn_status mn_trainer_set_reconstruction_delay(mn_trainer *tr, int delay) {
    if (!tr)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_trainer_set_reconstruction_delay: trainer is NULL");
    if (delay < 0 || delay >= tr->bptt)
        return mn_fail(MN_ERR_INVALID_ARG,
                       "mn_trainer_set_reconstruction_delay: delay %d must be >= 0 and < bptt (%d): a turn is "
                       "decoded again only from a state of its own chunk", delay, tr->bptt);
    tr->reconstruct_delay = delay;
    return MN_OK;
}

double mn_trainer_reconstruction_loss(const mn_trainer *tr) { return tr ? tr->last_recon_loss : 0.0; }

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

/* Streaming: a carried lane needs its initial state, and a finite one. */
static int carried(const mn_batch *b, int e) { return b->carry && b->carry[e]; }

static mn_status validate_carry(const mn_trainer *tr, const mn_batch *b) {
    const size_t state = (size_t)tr->model->config.n_slots * tr->model->config.d_model;
    for (int e = 0; e < b->B; e++) {
        if (!carried(b, e))
            continue;
        if (!b->initial_states)
            return mn_fail(MN_ERR_INVALID_ARG, "batch: lane %d carries its state (carry = 1) but initial_states is NULL",
                           e);
        const float *r = b->initial_states + (size_t)e * state;
        for (size_t i = 0; i < state; i++)
            if (!isfinite(r[i]))
                return mn_fail(MN_ERR_NUMERIC, "batch: initial_states of lane %d is not finite (%g at %zu)", e,
                               (double)r[i], i);
    }
    return MN_OK;
}

/* ---------------------------------------------------------------- inputs */
/* Backend pointers to the inputs of one turn. */
typedef struct {
    const int32_t *ids_fwd, *ids_bwd, *valid, *targets; /* (B, S), (B, S), (B), (B, L) */
    /* ids_fwd and ids_bwd hold the stacks' packed rows: episode e's k + len positions from row
     * (sum of k + len of the episodes before e) */
    const float *weights;                               /* (B, L) */
    /* targets and weights hold the classifier's rows packed (packed_rows): episode e's token i
     * at row first[e] + i; the rows past them are unused */
} turn_inputs;

static turn_inputs inputs_of(const mn_trainer *tr, const mn_batch *b, int t) {
    const size_t B = (size_t)b->B, L = (size_t)b->max_len, S = (size_t)tr->model->config.n_slots + L;
    const int32_t *i0 = tr->in_ints + (size_t)t * turn_ints(B, S, L);
    return (turn_inputs){i0, i0 + B * S, i0 + 2 * B * S, i0 + 2 * B * S + B, tr->in_weights + (size_t)t * B * L};
}

/* Builds every turn's ids (packed rows), valid lengths, targets and weights on the host, and
 * uploads them. The classifier's rows are each turn's tokens but the last (which predicts
 * nothing), or all its tokens when tr->all_token_rows (logits wanted). */
static void build_inputs(mn_trainer *tr, const mn_batch *b) {
    const int B = b->B, L = b->max_len, T = b->T, k = tr->model->config.n_slots, S = k + L;
    const size_t per_turn = turn_ints((size_t)B, (size_t)S, (size_t)L);
    for (int t = 0; t < T; t++) {
        int32_t *ids_fwd = tr->in_ints_host + (size_t)t * per_turn, *ids_bwd = ids_fwd + (size_t)B * S;
        int32_t *valid = ids_bwd + (size_t)B * S, *targets = valid + B;
        float *weights = tr->in_weights_host + (size_t)t * B * L;
        const int32_t *tokens = b->tokens + (size_t)t * B * L;
        const int32_t *lengths = b->lengths + (size_t)t * B;
        const float *w = b->loss_weights ? b->loss_weights + (size_t)t * B * L : NULL;
        double ws = 0.0;
        for (int e = 0, row = 0, first = 0; e < B; e++) {
            int len = lengths[e];
            valid[e] = k + len;
            // the stacks' rows are packed too: each episode's k + len positions, back to back
            mn_turn_ids(k, tokens + (size_t)e * L, len, len, ids_fwd + first, ids_bwd + first);
            first += k + len;
            // token i predicts token i+1 of the same turn; rows packed over the real tokens
            for (int i = 0; i < len - 1 + tr->all_token_rows; i++, row++) {
                int r = e * L + i, has_target = i + 1 < len;
                targets[row] = has_target ? tokens[r + 1] : 0;
                weights[row] = has_target ? (w ? w[r + 1] : 1.0f) : 0.0f;
                ws += weights[row];
            }
        }
        tr->turn_weight[t] = ws;
    }
    MN_OP(&tr->exec, upload, tr->in_ints, tr->in_ints_host, (size_t)T * per_turn * sizeof(int32_t));
    MN_OP(&tr->exec, upload, tr->in_weights, tr->in_weights_host, (size_t)T * B * L * sizeof(float));
}

/* ---------------------------------------------------------------- one turn */
/* The stacks' packed layout of turn t: tr->lane_rows[e] = k + len[t][e] (host); returns the
 * turn's longest length, the padding of attention's layout. */
static int turn_lanes(mn_trainer *tr, const mn_batch *b, int t) {
    int longest = 1;
    for (int e = 0; e < b->B; e++) {
        int len = b->lengths[(size_t)t * b->B + e];
        tr->lane_rows[e] = tr->model->config.n_slots + len;
        longest = len > longest ? len : longest;
    }
    return longest;
}

/* The classifier's rows of turn t, packed: episode e's tokens (all, or all but the last: see
 * build_inputs) are rows first[e] .. first[e + 1] - 1; returns the number of rows. first: host
 * (B + 1). */
static int packed_rows(const mn_trainer *tr, const mn_batch *b, int t, int *first) {
    first[0] = 0;
    for (int e = 0; e < b->B; e++)
        first[e + 1] = first[e] + b->lengths[(size_t)t * b->B + e] - 1 + tr->all_token_rows;
    return first[b->B];
}

/* Logits of packed rows [r0, r0 + n) (in tr->logits) to the caller's (B, L, V) table of the
 * turn: row first[e] + i is episode e's token i (padding rows stay as the caller filled them). */
static void download_logits(mn_trainer *tr, const mn_batch *b, const int *first, int r0, int n, float *logits_out) {
    const int L = b->max_len, V = tr->model->config.vocab_size;
    for (int e = 0; e < b->B; e++) {
        int lo = first[e] > r0 ? first[e] : r0, hi = first[e + 1] < r0 + n ? first[e + 1] : r0 + n;
        if (hi > lo)
            MN_OP(&tr->exec, download, logits_out + ((size_t)e * L + (size_t)(lo - first[e])) * V,
                  tr->logits + (size_t)(lo - r0) * V, (size_t)(hi - lo) * V * sizeof(float));
    }
}

/* The classifier of a decoder turn over its real tokens (head_in: `rows` packed rows of C,
 * the decoder's ln_f),
 * llm.c's fused classifier in chunks of tr->classifier_rows rows: the chunk's logits = head_in
 * @ wte^T, their weighted loss, and with grads their gradient written over them, then dhead_in
 * and dwte from it. Padding rows cost nothing, and one chunk of logits exists at a time. */
static void classifier(mn_trainer *tr, const mn_batch *b, const int *first, const float *head_in, int rows,
                       const turn_inputs *in, double scale, int with_grads, float *logits_out) {
    const mn_exec *ex = &tr->exec;
    const int C = tr->model->config.d_model, V = tr->model->config.vocab_size;
    if (with_grads)
        MN_OP(ex, zero, tr->dhead_in, (size_t)rows * C * sizeof(float));
    for (int r0 = 0; r0 < rows; r0 += tr->classifier_rows) {
        const int n = rows - r0 < tr->classifier_rows ? rows - r0 : tr->classifier_rows;
        const float *x = head_in + (size_t)r0 * C;
        MN_OP(ex, lm_head_forward, tr->logits, x, tr->p.wte, n, C, V);
        if (logits_out)
            download_logits(tr, b, first, r0, n, logits_out);
        if (!with_grads) {
            MN_OP(ex, crossentropy_forward, tr->losses + r0, tr->logits, in->targets + r0, in->weights + r0, n, V);
            continue;
        }
        MN_OP(ex, crossentropy_fused, tr->losses + r0, tr->logits, in->targets + r0, in->weights + r0, (float)scale, n,
              V);
        MN_OP(ex, lm_head_backward, tr->dhead_in + (size_t)r0 * C, tr->g.wte, tr->logits, x, tr->p.wte, n, C, V);
    }
}

/* Decoder forward for turn t reading `memory` (B, k, C); with grads, also its full backward,
 * writing the memory's gradient into dmemory. The turn's weighted loss sum lands in
 * *loss_sum (backend memory). */
static void decoder_turn(mn_trainer *tr, const mn_batch *b, int t, const float *memory, double scale,
                         int with_grads, float *dmemory, float *logits_out, double *loss_sum) {
    mn_model *m = tr->model;
    const mn_exec *ex = &tr->exec;
    const mn_config *c = &m->config;
    const int B = b->B, k = c->n_slots, C = c->d_model;
    const turn_inputs in = inputs_of(tr, b, t);
    mn_stack_acts *a = &tr->decoder;
    int *first = tr->packed_first;

    const int rows = packed_rows(tr, b, t, first);
    if (rows == 0) { // every episode's turn is one token: nothing to predict, a loss and gradient of 0
        MN_OP(ex, zero, loss_sum, sizeof(double));
        if (with_grads)
            MN_OP(ex, zero, dmemory, (size_t)B * k * C * sizeof(float));
        return;
    }
    const int longest = turn_lanes(tr, b, t);
    mn_stack_forward_lanes(ex, a, c, tr->p.wte, &tr->p.decoder, memory, in.ids_fwd, in.ids_bwd, in.valid,
                           tr->lane_rows, tr->all_token_rows ? MN_ROWS_TOKENS : MN_ROWS_PREDICTING, B, longest, 1);

    // ln_f holds the classifier's rows of every episode, packed: its input
    classifier(tr, b, first, a->lnf, rows, &in, scale, with_grads, logits_out);
    MN_OP(ex, sum_to, loss_sum, tr->losses, (size_t)rows);
    if (!with_grads)
        return;

    MN_OP(ex, zero, dmemory, (size_t)B * k * C * sizeof(float));
    mn_stack_backward(ex, a, &tr->scratch, c, &tr->p.decoder, &tr->g.decoder, tr->g.wte, tr->dhead_in, dmemory, 1);
}

/* Compressor forward for turn t: r_out = update(r_in, turn), keeping activations in slot j. */
static void compressor_turn(mn_trainer *tr, const mn_batch *b, int t, int j, const float *r_in, float *r_out) {
    mn_model *m = tr->model;
    const mn_exec *ex = &tr->exec;
    const mn_config *c = &m->config;
    const int B = b->B, k = c->n_slots, C = c->d_model;
    const turn_inputs in = inputs_of(tr, b, t);
    mn_stack_acts *a = &tr->compressor[j];
    const int longest = turn_lanes(tr, b, t);
    mn_stack_forward_lanes(ex, a, c, tr->p.wte, &tr->p.compressor, r_in, in.ids_fwd, in.ids_bwd, in.valid,
                           tr->lane_rows, MN_ROWS_SLOTS, B, longest, 0);
    float *u = tr->u + (size_t)j * B * k * C, *aux = tr->write_aux + (size_t)j * tr->write_aux_stride;
    MN_OP(ex, copy, u, a->lnf, (size_t)B * k * C * sizeof(float)); // U = ln_f's slot rows, (B, k, C)
    mn_memory_write_forward(ex, c, &tr->p, r_out, aux, r_in, u, B);
}

/* Backward of compressor turn in slot j: from dstate (dL/dR_t), accumulate dL/dR_{t-1} into dprev. */
static void compressor_turn_backward(mn_trainer *tr, int j, const float *dstate, float *dprev) {
    const mn_exec *ex = &tr->exec;
    const mn_config *c = &tr->model->config;
    mn_stack_acts *a = &tr->compressor[j];
    const int B = a->B, k = c->n_slots, C = c->d_model;
    const size_t state = (size_t)B * k * C;
    const float *r_in = tr->states + (size_t)j * state;
    const float *u = tr->u + (size_t)j * state, *aux = tr->write_aux + (size_t)j * tr->write_aux_stride;
    MN_OP(ex, zero, tr->du, state * sizeof(float));
    mn_memory_write_backward(ex, c, &tr->p, &tr->g, dprev, tr->du, dstate, r_in, u, aux, tr->write_scratch, B);
    // dU is the gradient of ln_f, which holds the slot rows only (token rows of the compressor feed nothing)
    mn_stack_backward(ex, a, &tr->scratch, c, &tr->p.compressor, &tr->g.compressor, tr->g.wte, tr->du, dprev, 0);
}

/* ---------------------------------------------------------------- the batch */
/* scale_override > 0: the gradient's normaliser comes from the caller (data parallel: one over
 * the weight total of every rank's batch); *loss_sum_out (nullable) = the unscaled sum. */
static mn_status run_batch_scaled(mn_trainer *tr, const mn_batch *b, float *loss, mn_forward_outputs *out,
                                  int with_grads, double scale_override, double *loss_sum_out);

static mn_status run_batch(mn_trainer *tr, const mn_batch *b, float *loss, mn_forward_outputs *out,
                           int with_grads) {
    return run_batch_scaled(tr, b, loss, out, with_grads, 0.0, NULL);
}

static mn_status run_batch_scaled(mn_trainer *tr, const mn_batch *b, float *loss, mn_forward_outputs *out,
                                  int with_grads, double scale_override, double *loss_sum_out) {
    if (!tr || !loss)
        return mn_fail(MN_ERR_INVALID_ARG, "forward: trainer or loss is NULL");
    const mn_exec *ex = &tr->exec;
    MN_TRY(mn_exec_status(ex)); /* a trainer that failed on its device stays failed */
    double total_weight = 0.0;
    MN_TRY(validate_batch(tr, b, &total_weight));
    MN_TRY(validate_carry(tr, b));
    MN_TRY(reserve_inputs(tr, b->T));
    mn_model *m = tr->model;
    const mn_config *c = &m->config;
    const int B = b->B, T = b->T, k = c->n_slots, C = c->d_model, V = c->vocab_size;
    const size_t state = (size_t)B * k * C;
    const double scale = scale_override > 0.0 ? scale_override : 1.0 / total_weight;
    const int recon = with_grads && tr->reconstruct_weight > 0.0f;
    const int delay = tr->reconstruct_delay;
    tr->all_token_rows = out && out->logits;
    build_inputs(tr, b);
    if (with_grads)
        MN_OP(ex, zero, tr->grads, m->num_params * sizeof(float));
    if (recon) /* with a delay, turns near a chunk's end are not decoded again */
        MN_OP(ex, zero, tr->recon_loss, (size_t)T * sizeof(double));

    MN_OP(ex, copy_rows, tr->states, (size_t)k * C, tr->p.r0, 0, (size_t)B, (size_t)k * C); // R_0 broadcast
    for (int e = 0; e < B; e++) // carried lanes start where their previous window ended
        if (carried(b, e))
            MN_OP(ex, upload, tr->states + (size_t)e * k * C, b->initial_states + (size_t)e * k * C,
                  (size_t)k * C * sizeof(float));
    const int want_final = out && out->final_states;
    for (int t0 = 0; t0 < T; t0 += tr->bptt) {
        int n = T - t0 < tr->bptt ? T - t0 : tr->bptt;
        for (int j = 0; j < n; j++) {
            int t = t0 + j;
            const float *r_in = tr->states + (size_t)j * state;
            float *logits_out = out && out->logits ? out->logits + (size_t)t * B * b->max_len * V : NULL;
            decoder_turn(tr, b, t, r_in, scale, with_grads, tr->dmemory_decoder + (size_t)j * state, logits_out,
                         tr->turn_loss + t);
            /* R_T is read by nobody (but the reconstruction): skip the last update unless wanted */
            if (t + 1 < T || (out && out->states) || recon || want_final) {
                float *r_out = tr->states + (size_t)(j + 1) * state;
                compressor_turn(tr, b, t, j, r_in, r_out);
                if (out && out->states)
                    MN_OP(ex, download, out->states + (size_t)t * state, r_out, state * sizeof(float));
                /* turn t - delay again, read from R_t: its gradient enters R_t (slot j of the
                 * recon gradients is always the one of R_t, whichever turn read it) */
                if (recon && j >= delay)
                    decoder_turn(tr, b, t - delay, r_out, scale * tr->reconstruct_weight, 1,
                                 tr->dmemory_recon + (size_t)j * state, NULL, tr->recon_loss + t - delay);
                else if (recon)
                    MN_OP(ex, zero, tr->dmemory_recon + (size_t)j * state, state * sizeof(float));
            }
        }
        if (with_grads) {
            // the state leaving the chunk is read by the next chunk only (truncated, no gradient)
            // and by the reconstruction of the chunk's last turn
            if (recon)
                MN_OP(ex, copy, tr->dstate, tr->dmemory_recon + (size_t)(n - 1) * state, state * sizeof(float));
            else
                MN_OP(ex, zero, tr->dstate, state * sizeof(float));
            for (int j = n - 1; j >= 0; j--) {
                // dL/dR entering turn j: its decoder, the reconstruction of turn j-1, the compressor of turn j
                MN_OP(ex, copy, tr->dstate_prev, tr->dmemory_decoder + (size_t)j * state, state * sizeof(float));
                if (recon && j > 0)
                    MN_OP(ex, add_rows, tr->dstate_prev, state, tr->dmemory_recon + (size_t)(j - 1) * state, state,
                          1, state);
                if (j < n - 1 || recon)
                    compressor_turn_backward(tr, j, tr->dstate, tr->dstate_prev);
                float *swap = tr->dstate;
                tr->dstate = tr->dstate_prev;
                tr->dstate_prev = swap;
            }
            // only the first chunk reaches R_0; sum over the episodes it was copied to (carried
            // lanes started from a constant), in runs of consecutive lanes, ascending
            for (int e = 0; t0 == 0 && e < B;) {
                int end = e;
                while (end < B && !carried(b, end))
                    end++;
                if (end > e)
                    MN_OP(ex, add_rows, tr->g.r0, 0, tr->dstate + (size_t)e * k * C, (size_t)k * C, (size_t)(end - e),
                          (size_t)k * C);
                e = end + 1;
            }
        }
        // the next chunk starts from the last state of this one (slots 0 and n never overlap)
        MN_OP(ex, copy, tr->states, tr->states + (size_t)n * state, state * sizeof(float));
    }
    if (want_final) // the last chunk's end copied R_T to slot 0
        MN_OP(ex, download, out->final_states, tr->states, state * sizeof(float));
    if (recon)
        MN_OP(ex, download, tr->recon_loss_host, tr->recon_loss, (size_t)T * sizeof(double));
    MN_OP(ex, download, tr->turn_loss_host, tr->turn_loss, (size_t)T * sizeof(double)); /* waits */
    MN_TRY(mn_exec_status(ex));
    if (with_grads) {
        double recon_sum = 0.0;
        for (int t = 0; recon && t < T; t++)
            recon_sum += tr->recon_loss_host[t];
        tr->last_recon_loss = recon_sum * scale;
    }
    double loss_sum = 0.0;
    for (int t = 0; t < T; t++) {
        double ls = tr->turn_loss_host[t], ws = tr->turn_weight[t];
        loss_sum += ls;
        if (out && out->turn_losses)
            out->turn_losses[t] = ws > 0 ? (float)(ls / ws) : 0.0f;
    }
    if (loss_sum_out)
        *loss_sum_out = loss_sum;
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

mn_status mn_forward_backward_scaled(mn_trainer *tr, const mn_batch *b, double scale, double *loss_sum,
                                     mn_forward_outputs *out) {
    if (!(scale > 0.0) || !isfinite(scale) || !loss_sum)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_forward_backward_scaled: scale %g must be finite and > 0, loss_sum set",
                       scale);
    float loss;
    return run_batch_scaled(tr, b, &loss, out, 1, scale, loss_sum);
}

double mn_batch_loss_weight(const mn_batch *b) {
    /* the same order and rule as validate_batch: targets are positions 1..len-1 */
    double total = 0.0;
    if (!b || !b->lengths)
        return 0.0;
    for (int t = 0; t < b->T; t++)
        for (int e = 0; e < b->B; e++) {
            int len = b->lengths[t * b->B + e];
            const float *w = b->loss_weights ? b->loss_weights + ((size_t)t * b->B + e) * b->max_len : NULL;
            for (int i = 1; i < len && i <= b->max_len - 1; i++)
                total += w ? w[i] : 1.0f;
        }
    return total;
}
