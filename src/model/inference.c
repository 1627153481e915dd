/* Inference with explicit state (rwkv.cpp style): r_in -> r_out per turn, logits given R,
 * batched session updates and batched decoder sequences (log-likelihoods, next-token logits),
 * on the model's inference backend (CPU unless mn_model_set_device chose CUDA). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/model_internal.h"
#include "model/score.h"

/* Positions (sessions x (k + N)) one chunk of mn_update_batch holds: enough rows to keep the
 * matrix products efficient, few enough that the activations stay small (two blocks' worth,
 * ~16 C + H S floats a position: 0.2 GB on the CPU demo config, ~2 GB for d = 768 on a GPU). */
#define MN_BATCH_POSITIONS_CPU 1024
#define MN_BATCH_POSITIONS_CUDA 16384

/* Scratch of the inference calls, allocated on first use and kept by the model. */
struct mn_infer_workspace {
    int max_B;               /* sessions it holds */
    mn_stack_acts acts;      /* forward only, (max_B, k + N) */
    int32_t *ints_host, *ints; /* ids_fwd (max_B, k + N) | valid (max_B) */
    float *memory;           /* (max_B, k, C): the R read */
    float *u, *z, *r_next;   /* (max_B, k, C) */
    float *r_host;           /* (max_B, k, C) host staging: sessions are gathered and scattered here */
    float *logits;           /* (k + N, V), allocated by the first logits call */
    /* scoring (mn_sequence_log_probs), allocated by its first call, max_B * (k + N) rows: */
    float *rows;             /* (rows, C) the final hidden states of the scored positions */
    int32_t *targets;        /* (rows) the token each scored row predicts */
    float *ones, *losses;    /* (rows) cross-entropy weights (all 1) and -log p */
    int32_t *targets_host;
    float *losses_host;
};

static void workspace_free(const mn_exec *ex, struct mn_infer_workspace *ws) {
    if (!ws)
        return;
    mn_stack_acts_free(ex, &ws->acts);
    mn_exec_release(ex, ws->ints);
    mn_exec_release(ex, ws->memory);
    mn_exec_release(ex, ws->u);
    mn_exec_release(ex, ws->z);
    mn_exec_release(ex, ws->r_next);
    mn_exec_release(ex, ws->logits);
    mn_exec_release(ex, ws->rows);
    mn_exec_release(ex, ws->targets);
    mn_exec_release(ex, ws->ones);
    mn_exec_release(ex, ws->losses);
    free(ws->targets_host);
    free(ws->losses_host);
    free(ws->ints_host);
    free(ws->r_host);
    free(ws);
}

/* A workspace for at least `sessions` sessions (more never needed than a chunk). */
static mn_status workspace(mn_model *m, int sessions, struct mn_infer_workspace **out) {
    if (m->infer && m->infer->max_B >= sessions) {
        *out = m->infer;
        return MN_OK;
    }
    workspace_free(&m->exec, m->infer);
    m->infer = NULL;
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    struct mn_infer_workspace *ws = calloc(1, sizeof *ws);
    if (!ws)
        return mn_fail(MN_ERR_NOMEM, "out of memory for the inference workspace");
    int layers = c->n_layers > c->n_comp_layers ? c->n_layers : c->n_comp_layers;
    size_t B = (size_t)sessions, S = (size_t)c->n_slots + (size_t)c->max_turn_tokens;
    size_t state = B * (size_t)c->n_slots * c->d_model;
    ws->max_B = sessions;
    mn_status st = mn_stack_acts_alloc(ex, &ws->acts, c, layers, sessions, (int)S, 1);
    ws->ints_host = malloc((B * S + B) * sizeof(int32_t));
    ws->r_host = malloc(state * sizeof(float));
    if (st == MN_OK && (!ws->ints_host || !ws->r_host))
        st = mn_fail(MN_ERR_NOMEM, "out of memory for the inference workspace");
    float **floats[] = {&ws->memory, &ws->u, &ws->z, &ws->r_next};
    if (st == MN_OK)
        st = mn_exec_alloc(ex, (B * S + B) * sizeof(int32_t), (void **)&ws->ints);
    for (int i = 0; st == MN_OK && i < 4; i++)
        st = mn_exec_alloc(ex, state * sizeof(float), (void **)floats[i]);
    if (st != MN_OK) {
        workspace_free(ex, ws);
        return mn_fail_context(st, "inference workspace for %d sessions on the %s", sessions, ex->be->name);
    }
    m->infer = ws;
    *out = ws;
    return MN_OK;
}

static mn_status workspace_logits(mn_model *m, struct mn_infer_workspace *ws) {
    if (ws->logits)
        return MN_OK;
    const mn_config *c = &m->config;
    size_t rows = (size_t)c->n_slots + (size_t)c->max_turn_tokens;
    return mn_exec_alloc(&m->exec, rows * (size_t)c->vocab_size * sizeof(float), (void **)&ws->logits);
}

/* Scoring buffers; each allocated once (a failed call leaves none half-made: the next retries). */
static mn_status workspace_scoring(mn_model *m, struct mn_infer_workspace *ws) {
    MN_TRY(workspace_logits(m, ws));
    if (ws->losses)
        return MN_OK;
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    size_t rows = (size_t)ws->max_B * ((size_t)c->n_slots + (size_t)c->max_turn_tokens);
    if (!ws->targets_host)
        ws->targets_host = malloc(rows * sizeof(int32_t));
    if (!ws->losses_host)
        ws->losses_host = malloc(rows * sizeof(float));
    if (!ws->targets_host || !ws->losses_host)
        return mn_fail(MN_ERR_NOMEM, "out of memory for the scoring workspace (%zu rows)", rows);
    if (!ws->rows)
        MN_TRY(mn_exec_alloc(ex, rows * c->d_model * sizeof(float), (void **)&ws->rows));
    if (!ws->targets)
        MN_TRY(mn_exec_alloc(ex, rows * sizeof(int32_t), (void **)&ws->targets));
    if (!ws->ones)
        MN_TRY(mn_exec_alloc(ex, rows * sizeof(float), (void **)&ws->ones));
    for (size_t i = 0; i < rows; i++)
        ws->losses_host[i] = 1.0f;
    MN_OP(ex, upload, ws->ones, ws->losses_host, rows * sizeof(float));
    MN_TRY(mn_exec_status(ex));
    return mn_exec_alloc(ex, rows * sizeof(float), (void **)&ws->losses);
}

/* ---------------------------------------------------------------- the inference device */
mn_status mn_inference_init(mn_model *m) {
    MN_TRY(mn_exec_open(MN_DEVICE_CPU, &m->exec));
    m->dev_params = m->params;
    return mn_views_bind(m, m->dev_params, &m->dev_views);
}

void mn_inference_release(mn_model *m) {
    if (!m->exec.be)
        return;
    workspace_free(&m->exec, m->infer);
    m->infer = NULL;
    if (m->dev_params != m->params)
        mn_exec_release(&m->exec, m->dev_params);
    m->dev_params = NULL;
    mn_views_free(&m->dev_views);
    mn_exec_close(&m->exec);
}

mn_status mn_model_set_device(mn_model *m, mn_device device) {
    if (!m)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_model_set_device: model is NULL");
    const mn_backend *be = NULL;
    MN_TRY(mn_backend_for(device, &be));
    return mn_model_set_backend(m, be);
}

mn_status mn_model_set_backend(mn_model *m, const mn_backend *be) {
    size_t bytes = m->num_params * sizeof(float);
    if (m->exec.be != be && m->open_pools > 0)
        return mn_fail(MN_ERR_INVALID_ARG,
                       "cannot move the model to the %s: %d session pool(s) of it hold states on the %s; close them "
                       "first",
                       be->name, m->open_pools, m->exec.be->name);
    if (m->exec.be == be) { /* refresh the copy */
        if (be->device == MN_DEVICE_CPU)
            return MN_OK;
        MN_OP(&m->exec, upload, m->dev_params, m->params, bytes);
        return be->synchronize(m->exec.ctx);
    }
    mn_exec ex;
    MN_TRY(mn_exec_open_backend(be, &ex));
    float *dev_params = m->params;
    mn_param_views views = {0};
    mn_status st = mn_exec_set_threads(&ex, m->threads);
    if (st == MN_OK && be->device != MN_DEVICE_CPU) {
        st = mn_exec_alloc(&ex, bytes, (void **)&dev_params);
        if (st == MN_OK) {
            MN_OP(&ex, upload, dev_params, m->params, bytes);
            st = be->synchronize(ex.ctx);
        }
    }
    if (st == MN_OK)
        st = mn_views_bind(m, dev_params, &views);
    if (st != MN_OK) {
        if (dev_params != m->params)
            mn_exec_release(&ex, dev_params);
        mn_exec_close(&ex);
        return mn_fail_context(st, "moving the model to the %s", be->name);
    }
    mn_inference_release(m);
    m->exec = ex;
    m->dev_params = dev_params;
    m->dev_views = views;
    return MN_OK;
}

mn_device mn_model_device(const mn_model *m) { return m && m->exec.be ? m->exec.be->device : MN_DEVICE_CPU; }

mn_status mn_model_set_threads(mn_model *m, int threads) {
    if (!m)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_model_set_threads: model is NULL");
    MN_TRY(mn_exec_set_threads(&m->exec, threads));
    m->threads = threads;
    return MN_OK;
}

mn_status mn_model_set_matmul(mn_model *m, mn_matmul precision) {
    if (!m)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_model_set_matmul: model is NULL");
    return m->exec.be->set_matmul(m->exec.ctx, precision);
}

/* ---------------------------------------------------------------- validation */
mn_status mn_check_tokens(const mn_model *m, const int32_t *tokens, int n, const char *who) {
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->config.vocab_size)
            return mn_fail(MN_ERR_INVALID_ARG, "%s: token %d at position %d is outside the vocabulary [0, %d)", who,
                           tokens[i], i, m->config.vocab_size);
    return MN_OK;
}

mn_status mn_check_state(const mn_model *m, const float *r, const char *who) {
    size_t state = mn_state_floats(m);
    for (size_t i = 0; i < state; i++)
        if (!isfinite(r[i]))
            return mn_fail(MN_ERR_NUMERIC, "%s: the session state has a non-finite value at %zu", who, i);
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
    MN_TRY(mn_check_tokens(m, tokens, n, who));
    return mn_check_state(m, r, who);
}

mn_status mn_initial_state(const mn_model *m, float *r_out) {
    if (!m || !r_out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_initial_state: NULL argument");
    memcpy(r_out, m->views.r0, mn_state_floats(m) * sizeof(float));
    return MN_OK;
}

/* ---------------------------------------------------------------- chunks of sequences */
int mn_seq_by_length_desc(const void *pa, const void *pb) {
    const mn_seq_turn *a = pa, *b = pb;
    if (a->len != b->len)
        return a->len < b->len ? 1 : -1;
    return (a->index > b->index) - (a->index < b->index);
}

int mn_update_chunk_cap(const mn_model *m, int n) {
    const int S_max = m->config.n_slots + m->config.max_turn_tokens;
    int budget = m->exec.be->device == MN_DEVICE_CPU ? MN_BATCH_POSITIONS_CPU : MN_BATCH_POSITIONS_CUDA;
    int cap = budget / S_max > 1 ? budget / S_max : 1;
    return cap < n ? cap : n;
}

/* Stages a chunk of B sequences, longest first, each padded to the longest, in the workspace:
 * ids_fwd (B, k + L) and valid (B) in ws->ints, their states in ws->memory. */
static void stage_chunk(mn_model *m, struct mn_infer_workspace *ws, const mn_seq_turn *seqs, int B) {
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    const int k = c->n_slots, L = seqs[0].len, S = k + L;
    const size_t kC = (size_t)k * c->d_model;
    int32_t *ids = ws->ints_host, *valid = ws->ints_host + (size_t)B * S;
    for (int e = 0; e < B; e++) {
        mn_turn_ids(k, seqs[e].tokens, seqs[e].len, L, ids + (size_t)e * S, NULL);
        valid[e] = k + seqs[e].len;
        memcpy(ws->r_host + (size_t)e * kC, seqs[e].r, kC * sizeof(float));
    }
    MN_OP(ex, upload, ws->ints, ws->ints_host, ((size_t)B * S + B) * sizeof(int32_t));
    MN_OP(ex, upload, ws->memory, ws->r_host, (size_t)B * kC * sizeof(float));
}

/* One stack (compressor or decoder) over a staged chunk; the final hidden states land in
 * ws->acts.lnf (B, k + L, C). */
static void forward_chunk(mn_model *m, struct mn_infer_workspace *ws, const mn_seq_turn *seqs, int B,
                          const mn_stack_views *stack, int causal) {
    const int S = m->config.n_slots + seqs[0].len;
    stage_chunk(m, ws, seqs, B);
    mn_stack_forward(&m->exec, &ws->acts, &m->config, m->dev_views.wte, stack, ws->memory, ws->ints, NULL,
                     ws->ints + (size_t)B * S, B, seqs[0].len, causal);
}

void mn_compress_staged(mn_model *m, mn_stack_acts *acts, const int32_t *ints, const float *memory, float *u, float *z,
                        float *r_next, int B, int L) {
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    const int k = c->n_slots, C = c->d_model, S = k + L;
    const size_t kC = (size_t)k * C;
    mn_stack_forward(ex, acts, c, m->dev_views.wte, &m->dev_views.compressor, memory, ints, NULL, ints + (size_t)B * S,
                     B, L, 0);
    MN_OP(ex, copy_rows, u, kC, acts->lnf, (size_t)S * C, (size_t)B, kC); // U = slot rows of ln_f
    MN_OP(ex, gated_update_forward, r_next, z, memory, u, m->dev_views.gate_w, m->dev_views.gate_b, B * k, C);
}

/* ---------------------------------------------------------------- session updates */
/* Runs the compressor and the gate over sessions[0..n-1] (validated; out = R after the turn),
 * chunk by chunk. */
static mn_status update_sessions(mn_model *m, mn_seq_turn *sessions, int n) {
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    const int k = c->n_slots, C = c->d_model;
    const size_t kC = (size_t)k * C;
    const int cap = mn_update_chunk_cap(m, n);
    struct mn_infer_workspace *ws = NULL;
    MN_TRY(workspace(m, cap, &ws));
    if (n > 1)
        qsort(sessions, (size_t)n, sizeof *sessions, mn_seq_by_length_desc);
    for (int first = 0; first < n; first += cap) {
        const int B = n - first < cap ? n - first : cap;
        stage_chunk(m, ws, sessions + first, B);
        mn_compress_staged(m, &ws->acts, ws->ints, ws->memory, ws->u, ws->z, ws->r_next, B, sessions[first].len);
        MN_OP(ex, download, ws->r_host, ws->r_next, (size_t)B * kC * sizeof(float));
        MN_TRY(mn_exec_status(ex));
        /* after the chunk's reads: out may be r */
        for (int e = 0; e < B; e++)
            memcpy(sessions[first + e].out, ws->r_host + (size_t)e * kC, kC * sizeof(float));
    }
    return MN_OK;
}

mn_status mn_update(mn_model *m, const int32_t *tokens, int n, const float *r_in, float *r_out) {
    MN_TRY(check_turn(m, tokens, n, r_in, "mn_update"));
    if (!r_out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_update: r_out is NULL");
    mn_seq_turn one = {tokens, n, 0, 0, r_in, r_out};
    return update_sessions(m, &one, 1);
}

mn_status mn_batch_turn(const mn_model *m, const int32_t *tokens, const int64_t *offsets, int i, const char *who,
                        mn_seq_turn *out) {
    const int64_t len = offsets[i + 1] - offsets[i];
    if (offsets[i] < 0 || len < 1 || len > m->config.max_turn_tokens)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: session %d has %lld tokens (offsets %lld..%lld); a turn has 1..%d", who,
                       i, (long long)len, (long long)offsets[i], (long long)offsets[i + 1], m->config.max_turn_tokens);
    *out = (mn_seq_turn){.tokens = tokens + offsets[i], .len = (int)len, .index = i};
    mn_status st = mn_check_tokens(m, out->tokens, out->len, who);
    return st == MN_OK ? MN_OK : mn_fail_context(st, "session %d", i);
}

mn_status mn_update_batch(mn_model *m, int n_sessions, const int32_t *tokens, const int64_t *offsets,
                          const float *r_in, float *r_out) {
    if (!m || n_sessions < 0)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_update_batch: model is NULL or n_sessions = %d < 0", n_sessions);
    if (n_sessions == 0)
        return MN_OK;
    if (!tokens || !offsets || !r_in || !r_out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_update_batch: tokens, offsets, r_in or r_out is NULL");
    const size_t state = mn_state_floats(m);
    mn_seq_turn *sessions = malloc((size_t)n_sessions * sizeof *sessions);
    if (!sessions)
        return mn_fail(MN_ERR_NOMEM, "mn_update_batch: out of memory for %d sessions", n_sessions);
    mn_status st = MN_OK;
    if (offsets[0] < 0)
        st = mn_fail(MN_ERR_INVALID_ARG, "mn_update_batch: offsets[0] = %lld is negative", (long long)offsets[0]);
    for (int i = 0; st == MN_OK && i < n_sessions; i++) {
        st = mn_batch_turn(m, tokens, offsets, i, "mn_update_batch", &sessions[i]);
        sessions[i].r = r_in + (size_t)i * state;
        sessions[i].out = r_out + (size_t)i * state;
        if (st == MN_OK && (st = mn_check_state(m, sessions[i].r, "mn_update_batch")) != MN_OK)
            st = mn_fail_context(st, "session %d", i);
    }
    if (st == MN_OK)
        st = update_sessions(m, sessions, n_sessions);
    free(sessions);
    return st;
}

/* ---------------------------------------------------------------- decoder */
/* The decoder over tokens with r as memory, or over the tokens alone (r == NULL): the same
 * stack forward with a config whose memory has 0 slots, so positions run 0..n-1 and the model
 * is plain GPT-2. Returns the final hidden states of the n token positions (backend memory). */
static mn_status decoder_hidden(mn_model *m, const int32_t *tokens, int n, const float *r, const char *who,
                                const float **hidden) {
    const mn_config *c = &m->config;
    if (r) {
        MN_TRY(check_turn(m, tokens, n, r, who));
    } else {
        if (!tokens || n < 1 || n > c->n_slots + c->max_turn_tokens)
            return mn_fail(MN_ERR_INVALID_ARG, "%s: %d tokens without memory; the decoder has %d positions", who, n,
                           c->n_slots + c->max_turn_tokens);
        MN_TRY(mn_check_tokens(m, tokens, n, who));
    }
    struct mn_infer_workspace *ws = NULL;
    MN_TRY(workspace(m, 1, &ws));
    const mn_exec *ex = &m->exec;
    mn_config run = *c;
    if (!r)
        run.n_slots = 0; /* the workspace holds k + N positions, enough for n <= k + N */
    const int k = run.n_slots, S = k + n;
    mn_turn_ids(k, tokens, n, n, ws->ints_host, NULL);
    ws->ints_host[S] = S; /* valid */
    MN_OP(ex, upload, ws->ints, ws->ints_host, ((size_t)S + 1) * sizeof(int32_t));
    if (r)
        MN_OP(ex, upload, ws->memory, r, mn_state_floats(m) * sizeof(float));
    /* with 0 slots nothing is read from the memory */
    mn_stack_forward(ex, &ws->acts, &run, m->dev_views.wte, &m->dev_views.decoder, ws->memory, ws->ints, NULL,
                     ws->ints + S, 1, n, 1);
    *hidden = ws->acts.lnf + (size_t)k * c->d_model;
    return MN_OK;
}

/* logits (rows, V) on the host = hidden (rows, C) @ wte^T */
static mn_status head_to_host(mn_model *m, const float *hidden, int rows, float *logits) {
    struct mn_infer_workspace *ws = m->infer;
    MN_TRY(workspace_logits(m, ws));
    const mn_exec *ex = &m->exec;
    const int C = m->config.d_model, V = m->config.vocab_size;
    MN_OP(ex, lm_head_forward, ws->logits, hidden, m->dev_views.wte, rows, C, V);
    MN_OP(ex, download, logits, ws->logits, (size_t)rows * V * sizeof(float));
    return mn_exec_status(ex);
}

mn_status mn_logits(mn_model *m, const int32_t *tokens, int n, const float *r, float *logits) {
    MN_TRY(check_turn(m, tokens, n, r, "mn_logits"));
    if (!logits)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_logits: logits is NULL");
    const float *hidden = NULL;
    MN_TRY(decoder_hidden(m, tokens, n, r, "mn_logits", &hidden));
    return head_to_host(m, hidden, n, logits);
}

/* ---------------------------------------------------------------- decoding without a full logits table */
mn_status mn_next_logits(mn_model *m, const int32_t *tokens, int n, const float *r, float *logits) {
    if (!m || !logits)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_next_logits: model or logits is NULL");
    const float *hidden = NULL;
    MN_TRY(decoder_hidden(m, tokens, n, r, "mn_next_logits", &hidden));
    return head_to_host(m, hidden + (size_t)(n - 1) * m->config.d_model, 1, logits);
}

mn_status mn_logits_no_memory(mn_model *m, const int32_t *tokens, int n, float *logits) {
    if (!m || !logits)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_logits_no_memory: model or logits is NULL");
    const float *hidden = NULL;
    MN_TRY(decoder_hidden(m, tokens, n, NULL, "mn_logits_no_memory", &hidden));
    return head_to_host(m, hidden, n, logits);
}

/* ---------------------------------------------------------------- batched decoder sequences */
/* Log-probabilities of a decoded chunk's scored positions: the head and the log-softmax on
 * those rows only (a window's history and the prefixes predict nothing that is asked for). */
static mn_status score_chunk(mn_model *m, struct mn_infer_workspace *ws, const mn_seq_turn *seqs, int B) {
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    const int k = c->n_slots, C = c->d_model, V = c->vocab_size, S = k + seqs[0].len;
    size_t rows = 0;
    for (int e = 0; e < B; e++) { /* row j - 1 of a sequence predicts its token j */
        const mn_seq_turn *q = &seqs[e];
        size_t n = (size_t)(q->len - q->first);
        if (!n)
            continue;
        MN_OP(ex, copy_rows, ws->rows + rows * C, (size_t)C, ws->acts.lnf + ((size_t)e * S + k + q->first - 1) * C,
              (size_t)C, n, (size_t)C);
        memcpy(ws->targets_host + rows, q->tokens + q->first, n * sizeof(int32_t));
        rows += n;
    }
    if (!rows)
        return mn_exec_status(ex);
    MN_OP(ex, upload, ws->targets, ws->targets_host, rows * sizeof(int32_t));
    for (size_t at = 0, block = (size_t)k + c->max_turn_tokens; at < rows; at += block) { /* logits: k + N rows */
        int n = (int)(rows - at < block ? rows - at : block);
        MN_OP(ex, lm_head_forward, ws->logits, ws->rows + at * C, m->dev_views.wte, n, C, V);
        MN_OP(ex, crossentropy_forward, ws->losses + at, ws->logits, ws->targets + at, ws->ones, n, V);
    }
    MN_OP(ex, download, ws->losses_host, ws->losses, rows * sizeof(float));
    MN_TRY(mn_exec_status(ex));
    rows = 0;
    for (int e = 0; e < B; e++)
        for (int j = seqs[e].first; j < seqs[e].len; j++)
            seqs[e].out[j] = -ws->losses_host[rows++];
    return MN_OK;
}

/* Logits of the token after each sequence of a decoded chunk. */
static mn_status next_chunk(mn_model *m, struct mn_infer_workspace *ws, const mn_seq_turn *seqs, int B) {
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    const int k = c->n_slots, C = c->d_model, V = c->vocab_size, S = k + seqs[0].len;
    for (int e = 0; e < B; e++)
        MN_OP(ex, copy_rows, ws->rows + (size_t)e * C, (size_t)C,
              ws->acts.lnf + ((size_t)e * S + k + seqs[e].len - 1) * C, (size_t)C, 1, (size_t)C);
    MN_OP(ex, lm_head_forward, ws->logits, ws->rows, m->dev_views.wte, B, C, V); /* B <= k + N rows */
    for (int e = 0; e < B; e++)
        MN_OP(ex, download, seqs[e].out, ws->logits + (size_t)e * V, (size_t)V * sizeof(float));
    return mn_exec_status(ex);
}

/* Validates the sequences, then decodes them in chunks of similar lengths (little padding; the
 * order is fixed, so are the bits) and runs score_chunk or next_chunk on each. */
static mn_status run_sequences(mn_model *m, mn_seq_turn *seqs, int n_seqs, const int32_t *tokens,
                               const int64_t *offsets, const float *const *r, const char *who, int next) {
    const mn_config *c = &m->config;
    for (int i = 0; i < n_seqs; i++) {
        int64_t len = offsets[i + 1] - offsets[i];
        if (offsets[i] < 0 || len < 1 || len > c->max_turn_tokens || seqs[i].first < 1 || seqs[i].first > len)
            return mn_fail(MN_ERR_INVALID_ARG,
                           "%s: sequence %d has %lld tokens (offsets %lld..%lld), first scored %d; want 1..%d tokens and "
                           "1 <= first <= length",
                           who, i, (long long)len, (long long)offsets[i], (long long)offsets[i + 1], seqs[i].first,
                           c->max_turn_tokens);
        seqs[i].tokens = tokens + offsets[i];
        seqs[i].len = (int)len;
        seqs[i].index = i;
        seqs[i].r = r[i];
        mn_status st = check_turn(m, seqs[i].tokens, seqs[i].len, seqs[i].r, who);
        if (st != MN_OK)
            return mn_fail_context(st, "sequence %d", i);
    }
    const int S_max = c->n_slots + c->max_turn_tokens;
    int cap = mn_update_chunk_cap(m, n_seqs);
    if (cap > S_max) /* next_chunk's head writes B rows into the (k + N)-row logits */
        cap = S_max;
    struct mn_infer_workspace *ws = NULL;
    MN_TRY(workspace(m, cap, &ws));
    MN_TRY(workspace_scoring(m, ws));
    if (n_seqs > 1)
        qsort(seqs, (size_t)n_seqs, sizeof *seqs, mn_seq_by_length_desc);
    for (int at = 0; at < n_seqs; at += cap) {
        int B = n_seqs - at < cap ? n_seqs - at : cap;
        forward_chunk(m, ws, seqs + at, B, &m->dev_views.decoder, 1);
        MN_TRY(next ? next_chunk(m, ws, seqs + at, B) : score_chunk(m, ws, seqs + at, B));
    }
    return MN_OK;
}

mn_status mn_sequence_log_probs(mn_model *m, int n_seqs, const int32_t *tokens, const int64_t *offsets,
                                const float *const *r, const int *first, float *log_probs) {
    if (!m || n_seqs < 0)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_sequence_log_probs: model is NULL or n_seqs = %d < 0", n_seqs);
    if (n_seqs == 0)
        return MN_OK;
    if (!tokens || !offsets || !r || !first || !log_probs)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_sequence_log_probs: tokens, offsets, r, first or log_probs is NULL");
    mn_seq_turn *seqs = malloc((size_t)n_seqs * sizeof *seqs);
    if (!seqs)
        return mn_fail(MN_ERR_NOMEM, "mn_sequence_log_probs: out of memory for %d sequences", n_seqs);
    for (int i = 0; i < n_seqs; i++)
        seqs[i] = (mn_seq_turn){.first = first[i], .out = log_probs + (offsets[i] > 0 ? offsets[i] : 0)};
    mn_status st = run_sequences(m, seqs, n_seqs, tokens, offsets, r, "mn_sequence_log_probs", 0);
    free(seqs);
    return st;
}

mn_status mn_sequence_next_logits(mn_model *m, int n_seqs, const int32_t *tokens, const int64_t *offsets,
                                  const float *const *r, float *logits) {
    if (!m || n_seqs < 0)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_sequence_next_logits: model is NULL or n_seqs = %d < 0", n_seqs);
    if (n_seqs == 0)
        return MN_OK;
    if (!tokens || !offsets || !r || !logits)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_sequence_next_logits: tokens, offsets, r or logits is NULL");
    mn_seq_turn *seqs = malloc((size_t)n_seqs * sizeof *seqs);
    if (!seqs)
        return mn_fail(MN_ERR_NOMEM, "mn_sequence_next_logits: out of memory for %d sequences", n_seqs);
    for (int i = 0; i < n_seqs; i++) /* first = 1: nothing scored, any length is valid */
        seqs[i] = (mn_seq_turn){.first = 1, .out = logits + (size_t)i * m->config.vocab_size};
    mn_status st = run_sequences(m, seqs, n_seqs, tokens, offsets, r, "mn_sequence_next_logits", 1);
    free(seqs);
    return st;
}
