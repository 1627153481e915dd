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
    int *lane_rows, *keep_from; /* (max_B) host: k + length of each lane of a packed chunk, its first kept row */
    float *memory;           /* (max_B, k, C): the R read */
    float *u, *r_next;       /* (max_B, k, C) */
    float *write_aux;        /* the write's saved values, mn_memory_write_aux_floats(max_B) */
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
    mn_exec_release(ex, ws->write_aux);
    mn_exec_release(ex, ws->r_next);
    mn_exec_release(ex, ws->logits);
    mn_exec_release(ex, ws->rows);
    mn_exec_release(ex, ws->targets);
    mn_exec_release(ex, ws->ones);
    mn_exec_release(ex, ws->losses);
    free(ws->targets_host);
    free(ws->losses_host);
    free(ws->ints_host);
    free(ws->lane_rows);
    free(ws->keep_from);
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
    ws->lane_rows = malloc(B * sizeof(int));
    ws->keep_from = malloc(B * sizeof(int));
    ws->r_host = malloc(state * sizeof(float));
    if (st == MN_OK && (!ws->ints_host || !ws->lane_rows || !ws->keep_from || !ws->r_host))
        st = mn_fail(MN_ERR_NOMEM, "out of memory for the inference workspace");
    float **floats[] = {&ws->memory, &ws->u, &ws->write_aux, &ws->r_next};
    size_t floats_n[] = {state, state, mn_memory_write_aux_floats(c, sessions), state};
    if (st == MN_OK)
        st = mn_exec_alloc(ex, (B * S + B) * sizeof(int32_t), (void **)&ws->ints);
    for (int i = 0; st == MN_OK && i < 4; i++)
        st = mn_exec_alloc(ex, floats_n[i] * sizeof(float), (void **)floats[i]);
    if (st != MN_OK) {
        workspace_free(ex, ws);
        return mn_fail_context(st, "inference workspace for %d sessions on the %s", sessions, ex->be->name);
    }
    m->infer = ws;
    *out = ws;
    return MN_OK;
}

/* Logits the CPU's head writes at once: 2 MiB (256 rows of V 2048). Each product packs wte
 * (V x C) again, so small blocks pack it often (72 rows: 4% of an evaluation's samples); a block
 * past the caches costs its zeroing (the product's beta = 0) and the log-softmax's reads from
 * memory (2048 rows: 3% in the zeroing alone). Head and log-softmax at V 2048, C 64 on the
 * development machine: 288-576 rows the fastest, 72 rows 5-15% slower, 2048 rows 10%. */
#define MN_CPU_HEAD_FLOATS ((size_t)1 << 19)

/* Rows of logits the head writes at once: MN_CPU_HEAD_FLOATS / V on the CPU, and at least one
 * sequence's k + N (on CUDA, k + N). */
static size_t head_block(const mn_model *m) {
    const mn_config *c = &m->config;
    size_t rows = (size_t)c->n_slots + (size_t)c->max_turn_tokens;
    size_t bound = m->exec.be->device == MN_DEVICE_CPU ? MN_CPU_HEAD_FLOATS / (size_t)c->vocab_size : 0;
    return bound > rows ? bound : rows;
}

static mn_status workspace_logits(mn_model *m, struct mn_infer_workspace *ws) {
    if (ws->logits)
        return MN_OK;
    return mn_exec_alloc(&m->exec, head_block(m) * (size_t)m->config.vocab_size * sizeof(float),
                         (void **)&ws->logits);
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

/* The decoder over a chunk of B sequences, longest first, in the stack's packed layout (each
 * lane k + its own length rows, no padding but attention's). Scoring (`next` 0): ws->acts.lnf
 * holds the final hidden states of the scored rows only, token rows first - 1 .. len - 2 of each
 * sequence in turn (its history and slots run up to their keys and values); next: all token
 * rows, lane e's from row ws->acts.out_first[e]. Each row is computed as the padded form
 * computed it (the same products on the same rows; docs/perf.md). */
static void decode_chunk(mn_model *m, struct mn_infer_workspace *ws, const mn_seq_turn *seqs, int B, int next) {
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    const int k = c->n_slots;
    const size_t kC = (size_t)k * c->d_model;
    size_t rows = 0;
    for (int e = 0; e < B; e++) {
        mn_turn_ids(k, seqs[e].tokens, seqs[e].len, seqs[e].len, ws->ints_host + rows, NULL);
        ws->lane_rows[e] = k + seqs[e].len;
        rows += (size_t)ws->lane_rows[e];
        ws->keep_from[e] = seqs[e].first - 1; /* token row j - 1 predicts token j */
        memcpy(ws->r_host + (size_t)e * kC, seqs[e].r, kC * sizeof(float));
    }
    memcpy(ws->ints_host + rows, ws->lane_rows, (size_t)B * sizeof(int32_t)); /* valid */
    MN_OP(ex, upload, ws->ints, ws->ints_host, (rows + B) * sizeof(int32_t));
    MN_OP(ex, upload, ws->memory, ws->r_host, (size_t)B * kC * sizeof(float));
    ws->acts.keep_from = ws->keep_from;
    mn_stack_forward_lanes(ex, &ws->acts, c, m->dev_views.wte, &m->dev_views.decoder, ws->memory, ws->ints, NULL,
                           ws->ints + rows, ws->lane_rows, next ? MN_ROWS_TOKENS : MN_ROWS_PREDICTING, B,
                           seqs[0].len, 1);
    ws->acts.keep_from = NULL;
}

void mn_compress_staged(mn_model *m, mn_stack_acts *acts, const int32_t *ints, const float *memory, float *u,
                        float *write_aux, float *r_next, int B, int L) {
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    const int k = c->n_slots, C = c->d_model, S = k + L;
    const size_t kC = (size_t)k * C;
    // U = ln_f's slot rows; the last block computes the token rows only up to their keys and values
    mn_stack_forward_lanes(ex, acts, c, m->dev_views.wte, &m->dev_views.compressor, memory, ints, NULL,
                           ints + (size_t)B * S, NULL, MN_ROWS_SLOTS, B, L, 0);
    MN_OP(ex, copy_rows, u, kC, acts->lnf, kC, (size_t)B, kC);
    mn_memory_write_forward(ex, c, &m->dev_views, r_next, write_aux, memory, u, B);
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
        mn_compress_staged(m, &ws->acts, ws->ints, ws->memory, ws->u, ws->write_aux, ws->r_next, B, sessions[first].len);
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
/* -log p of each target from the final hidden rows (n_rows, C): the head and the backend's
 * cross-entropy op, `block` rows at a time (logits holds block x V); targets go up from
 * targets_host, the losses come back to losses_host. */
static mn_status head_losses(mn_model *m, const float *rows, size_t n_rows, const int32_t *targets_host,
                             int32_t *targets, const float *ones, float *logits, size_t block, float *losses,
                             float *losses_host) {
    const mn_exec *ex = &m->exec;
    const int C = m->config.d_model, V = m->config.vocab_size;
    MN_OP(ex, upload, targets, targets_host, n_rows * sizeof(int32_t));
    for (size_t at = 0; at < n_rows; at += block) {
        int n = (int)(n_rows - at < block ? n_rows - at : block);
        MN_OP(ex, lm_head_forward, logits, rows + at * C, m->dev_views.wte, n, C, V);
        MN_OP(ex, crossentropy_forward, losses + at, logits, targets + at, ones, n, V);
    }
    MN_OP(ex, download, losses_host, losses, n_rows * sizeof(float));
    return mn_exec_status(ex);
}

/* Log-probabilities of a decoded chunk's scored positions: the head and the log-softmax on
 * those rows only (a window's history and the prefixes predict nothing that is asked for),
 * which decode_chunk left in ln_f in order. */
static mn_status score_chunk(mn_model *m, struct mn_infer_workspace *ws, const mn_seq_turn *seqs, int B) {
    size_t rows = 0;
    for (int e = 0; e < B; e++) {
        const mn_seq_turn *q = &seqs[e];
        size_t n = (size_t)(q->len - q->first);
        memcpy(ws->targets_host + rows, q->tokens + q->first, n * sizeof(int32_t));
        rows += n;
    }
    if (!rows)
        return mn_exec_status(&m->exec);
    MN_TRY(head_losses(m, ws->acts.lnf, rows, ws->targets_host, ws->targets, ws->ones, ws->logits, head_block(m),
                       ws->losses, ws->losses_host));
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
    const int C = c->d_model, V = c->vocab_size;
    for (int e = 0; e < B; e++)
        MN_OP(ex, copy_rows, ws->rows + (size_t)e * C, (size_t)C,
              ws->acts.lnf + ((size_t)ws->acts.out_first[e] + seqs[e].len - 1) * C, (size_t)C, 1, (size_t)C);
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
        decode_chunk(m, ws, seqs + at, B, next);
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

/* ---------------------------------------------------------------- decoding with a key/value cache */
/* Greedy generation reads one new token per step; the cache keeps, per layer and sequence, the
 * q | k | v rows of every position read so far, so a step runs the blocks on the new row alone
 * and the attention reads the cached keys and values (the backend's attention op in its rows
 * form: the new rows' queries only, with the products of the whole op's row blocks). The same
 * ops in the same order as the full pass of decoder_hidden, so the logits agree with it to float
 * rounding. */
struct mn_decoder_cache {
    mn_model *m;
    int max_seqs, S;      /* sequences held, rows each (k + N) */
    int all_rows;         /* max_seqs * S: the rows of a read or a score over every sequence */
    int max_rows;         /* rows the blocks run on at once (a read runs in groups of sequences) */
    int *len;             /* (max_seqs) host: rows read so far (slots included) */
    float *kv;            /* (n_layers, max_seqs, S, 3C) */
    /* scratch of one group's read, (max_rows) rows: */
    float *x, *ln, *qkv, *y, *tmp, *res2, *fch, *fch_gelu, *mean, *rstd;
    float *att;           /* one sequence's attention probabilities: (H, S, S) */
    float *memory;        /* (max_seqs, k, C) */
    float *last;          /* (max_seqs, C): the final hidden state of each sequence's last row */
    float *rows;          /* (all_rows, C): the rows the head reads when scoring */
    float *logits;        /* (S, V): the head's rows of one block */
    float *ones, *losses; /* (all_rows): cross-entropy weights (all 1), -log p */
    int32_t *targets;     /* (all_rows) */
    int32_t *ints;        /* ids (max_rows) | valid (max_seqs) */
    int32_t *ints_host;   /* ids (all_rows) | valid (max_seqs) */
    float *r_host;        /* (max_seqs, k, C) */
    int *seq, *n_real;    /* (max_seqs) host: a read's sequences and real rows */
    size_t *keep;         /* (max_seqs) host: where a score's read keeps each sequence's rows */
    /* one group of a read (host): its sequences, real rows, memory rows, kept rows, ids */
    int *order;           /* (2 max_seqs): {rows, index} sorted */
    int *g_seq, *g_real, *g_mem;
    size_t *g_keep;
    int32_t *g_ids;       /* (max_rows) */
    int32_t *targets_host; /* (all_rows) */
    float *losses_host;   /* (all_rows) */
};

/* Floats one cached sequence takes (its rows, scoring's rows, its memory and last row), for the
 * capacity's memory budget; the blocks' scratch is bounded apart (MN_BATCH_POSITIONS_*). */
static size_t cache_floats_per_seq(const mn_config *c) {
    size_t S = (size_t)c->n_slots + (size_t)c->max_turn_tokens, C = (size_t)c->d_model;
    return (size_t)c->n_layers * S * 3 * C + S * (C + 5) + (size_t)c->n_slots * C + C;
}

/* Memory of one cache: 64 MiB of floats on the CPU (the demo holds ~400 sequences), 1 GiB on a GPU. */
#define MN_CACHE_FLOATS_CPU ((size_t)1 << 24)
#define MN_CACHE_FLOATS_CUDA ((size_t)1 << 28)

int mn_decoder_cache_capacity(const mn_model *m) {
    size_t budget = m->exec.be->device == MN_DEVICE_CPU ? MN_CACHE_FLOATS_CPU : MN_CACHE_FLOATS_CUDA;
    size_t n = budget / cache_floats_per_seq(&m->config);
    return n < 1 ? 1 : n > 4096 ? 4096 : (int)n;
}

void mn_decoder_cache_close(mn_decoder_cache *dc) {
    if (!dc)
        return;
    const mn_exec *ex = &dc->m->exec;
    float *dev[] = {dc->kv,   dc->x,     dc->ln,      dc->qkv,    dc->y,    dc->tmp,  dc->res2,  dc->fch,
                    dc->fch_gelu, dc->mean, dc->rstd, dc->att, dc->memory, dc->last, dc->rows, dc->logits,
                    dc->ones, dc->losses};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        mn_exec_release(ex, dev[i]);
    mn_exec_release(ex, dc->ints);
    mn_exec_release(ex, dc->targets);
    free(dc->len), free(dc->ints_host), free(dc->r_host), free(dc->seq), free(dc->n_real), free(dc->keep);
    free(dc->order), free(dc->g_seq), free(dc->g_real), free(dc->g_mem), free(dc->g_keep), free(dc->g_ids);
    free(dc->targets_host), free(dc->losses_host);
    free(dc);
}

mn_status mn_decoder_cache_open(mn_model *m, int max_seqs, mn_decoder_cache **out) {
    if (!m || !out || max_seqs < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_decoder_cache_open: model or out is NULL, or max_seqs = %d < 1",
                       max_seqs);
    *out = NULL;
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    mn_decoder_cache *dc = calloc(1, sizeof *dc);
    if (!dc)
        return mn_fail(MN_ERR_NOMEM, "out of memory for a decoder cache");
    dc->m = m;
    dc->max_seqs = max_seqs;
    dc->S = c->n_slots + c->max_turn_tokens;
    dc->all_rows = max_seqs * dc->S;
    int positions = m->exec.be->device == MN_DEVICE_CPU ? MN_BATCH_POSITIONS_CPU : MN_BATCH_POSITIONS_CUDA;
    dc->max_rows = dc->all_rows < positions ? dc->all_rows : positions > dc->S ? positions : dc->S;
    const size_t R = (size_t)dc->max_rows, C = (size_t)c->d_model, S = (size_t)dc->S, B = (size_t)max_seqs;
    const size_t A = (size_t)dc->all_rows;
    const size_t kC = (size_t)c->n_slots * C;
    struct {
        float **p;
        size_t n;
    } bufs[] = {{&dc->kv, (size_t)c->n_layers * B * S * 3 * C},
                {&dc->x, R * C},
                {&dc->ln, R * C},
                {&dc->qkv, R * 3 * C},
                {&dc->y, R * C},
                {&dc->tmp, R * C},
                {&dc->res2, R * C},
                {&dc->fch, R * 4 * C},
                {&dc->fch_gelu, R * 4 * C},
                {&dc->mean, R},
                {&dc->rstd, R},
                {&dc->att, (size_t)c->n_heads * S * S},
                {&dc->memory, B * kC},
                {&dc->last, B * C},
                {&dc->rows, A * C},
                {&dc->logits, head_block(m) * (size_t)c->vocab_size},
                {&dc->ones, A},
                {&dc->losses, A}};
    mn_status st = MN_OK;
    for (size_t i = 0; st == MN_OK && i < sizeof bufs / sizeof bufs[0]; i++)
        st = mn_exec_alloc(ex, bufs[i].n * sizeof(float), (void **)bufs[i].p);
    if (st == MN_OK)
        st = mn_exec_alloc(ex, (R + B) * sizeof(int32_t), (void **)&dc->ints);
    if (st == MN_OK)
        st = mn_exec_alloc(ex, A * sizeof(int32_t), (void **)&dc->targets);
    dc->targets_host = malloc(A * sizeof(int32_t));
    dc->losses_host = malloc(A * sizeof(float));
    if (st == MN_OK && dc->losses_host) {
        for (size_t i = 0; i < A; i++)
            dc->losses_host[i] = 1.0f;
        MN_OP(ex, upload, dc->ones, dc->losses_host, A * sizeof(float));
    }
    dc->len = calloc(B, sizeof *dc->len);
    dc->ints_host = malloc((A + B) * sizeof(int32_t));
    dc->r_host = malloc(B * kC * sizeof(float));
    dc->seq = malloc(B * sizeof(int)), dc->n_real = malloc(B * sizeof(int)), dc->keep = malloc(B * sizeof(size_t));
    dc->order = malloc(2 * B * sizeof(int));
    dc->g_seq = malloc(B * sizeof(int)), dc->g_real = malloc(B * sizeof(int)), dc->g_mem = malloc(B * sizeof(int));
    dc->g_keep = malloc(B * sizeof(size_t));
    dc->g_ids = malloc(R * sizeof(int32_t));
    if (st == MN_OK && (!dc->len || !dc->ints_host || !dc->r_host || !dc->seq || !dc->n_real || !dc->keep ||
                        !dc->targets_host || !dc->losses_host || !dc->order || !dc->g_seq || !dc->g_real ||
                        !dc->g_mem || !dc->g_keep || !dc->g_ids))
        st = mn_fail(MN_ERR_NOMEM, "out of memory for a decoder cache");
    if (st != MN_OK) {
        mn_decoder_cache_close(dc);
        return mn_fail_context(st, "decoder cache of %d sequences on the %s", max_seqs, ex->be->name);
    }
    *out = dc;
    return MN_OK;
}

/* Reads n new rows into each of sequences seq[0..nb) (n_real[b] <= n of them real, the rest
 * padding), at rows len[seq[b]] on; ids (nb, n) (host) are their tokens, -1 at the slot rows,
 * whose values come from dc->memory's sequence mem[b] (sequences read from row 0 only). nb * n
 * <= max_rows. Advances len by n_real and keeps each sequence's last hidden row; with keep, the
 * final hidden states of sequence b's real rows go to dc->rows from row keep[b] on. */
static void cache_read_group(mn_decoder_cache *dc, int nb, const int *seq, int n, const int *n_real,
                             const int32_t *ids, const int *mem, const size_t *keep) {
    mn_model *m = dc->m;
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    const mn_stack_views *p = &m->dev_views.decoder;
    const int C = c->d_model, H = c->n_heads, k = c->n_slots, S = dc->S, N = nb * n;
    const size_t kC = (size_t)k * C, slab = (size_t)S * 3 * C, layer = (size_t)dc->max_seqs * slab;
    int32_t *valid = dc->ints_host + dc->all_rows;
    for (int b = 0; b < nb; b++)
        valid[b] = dc->len[seq[b]] + n_real[b];
    MN_OP(ex, upload, dc->ints, ids, (size_t)N * sizeof(int32_t));
    MN_OP(ex, upload, dc->ints + dc->max_rows, valid, (size_t)nb * sizeof(int32_t));
    // x = wte[ids] (the slot rows: the memory) + wpe at each row's position
    for (int b = 0; b < nb; b++)
        if (dc->len[seq[b]] == 0 && k > 0)
            MN_OP(ex, copy_rows, dc->x + (size_t)b * n * C, kC, dc->memory + (size_t)mem[b] * kC, kC, 1, kC);
    MN_OP(ex, embedding_forward, dc->x, dc->ints, m->dev_views.wte, N, C);
    for (int b = 0; b < nb; b++) {
        int at = dc->len[seq[b]], rows = n < S - at ? n : S - at; /* padding past the table reads no position */
        MN_OP(ex, add_rows, dc->x + (size_t)b * n * C, (size_t)C, p->wpe + (size_t)at * C, (size_t)C, (size_t)rows,
              (size_t)C);
    }
    /* Without keep only each sequence's last row is read past the cache (its logits): the last
     * block runs the other rows up to their keys and values, and the last rows on, one per b. */
    int R = N;
    for (int l = 0; l < p->n_layers; l++) {
        const mn_block_views *w = &p->blocks[l];
        float *kv = dc->kv + (size_t)l * layer;
        const int last_only = !keep && l + 1 == p->n_layers;
        MN_OP(ex, layernorm_forward, dc->ln, dc->mean, dc->rstd, dc->x, w->ln1_w, w->ln1_b, N, C);
        MN_OP(ex, linear_forward, dc->qkv, dc->ln, w->attn_w, w->attn_b, N, C, 3 * C);
        for (int b = 0; b < nb; b++) { /* the new rows join the cache; each attends to its sequence's rows */
            int at = dc->len[seq[b]], rows = n < S - at ? n : S - at;
            float *own = kv + (size_t)seq[b] * slab;
            MN_OP(ex, copy_rows, own + (size_t)at * 3 * C, (size_t)3 * C, dc->qkv + (size_t)b * n * 3 * C,
                  (size_t)3 * C, (size_t)rows, (size_t)3 * C);
            /* the new rows' queries only (or the last), against the sequence's rows so far (its padding rows: 0) */
            if (last_only)
                MN_OP(ex, attention_rows_forward, dc->y + (size_t)b * C, dc->att, own, dc->ints + dc->max_rows + b, 1,
                      at + rows, C, H, at + n_real[b] - 1, 1);
            else
                MN_OP(ex, attention_rows_forward, dc->y + (size_t)b * n * C, dc->att, own,
                      dc->ints + dc->max_rows + b, 1, at + rows, C, H, at, rows);
        }
        if (last_only) { /* x's last rows, packed in x's first nb rows (read in order: b <= its row) */
            R = nb;
            for (int b = 0; b < nb; b++)
                if ((size_t)b * n + n_real[b] - 1 != (size_t)b)
                    MN_OP(ex, copy_rows, dc->x + (size_t)b * C, (size_t)C,
                          dc->x + ((size_t)b * n + n_real[b] - 1) * C, (size_t)C, 1, (size_t)C);
        }
        MN_OP(ex, linear_forward, dc->tmp, dc->y, w->attn_proj_w, w->attn_proj_b, R, C, C);
        MN_OP(ex, residual_forward, dc->res2, dc->x, dc->tmp, (size_t)R * C);
        MN_OP(ex, layernorm_forward, dc->ln, dc->mean, dc->rstd, dc->res2, w->ln2_w, w->ln2_b, R, C);
        MN_OP(ex, linear_forward, dc->fch, dc->ln, w->fc_w, w->fc_b, R, C, 4 * C);
        MN_OP(ex, gelu_forward, dc->fch_gelu, dc->fch, (size_t)R * 4 * C);
        MN_OP(ex, linear_forward, dc->tmp, dc->fch_gelu, w->fc_proj_w, w->fc_proj_b, R, 4 * C, C);
        MN_OP(ex, residual_forward, dc->x, dc->res2, dc->tmp, (size_t)R * C);
    }
    MN_OP(ex, layernorm_forward, dc->ln, dc->mean, dc->rstd, dc->x, p->lnf_w, p->lnf_b, R, C);
    for (int b = 0; b < nb; b++) {
        dc->len[seq[b]] += n_real[b];
        const size_t last = R == N ? (size_t)b * n + n_real[b] - 1 : (size_t)b;
        MN_OP(ex, copy_rows, dc->last + (size_t)seq[b] * C, (size_t)C, dc->ln + last * C, (size_t)C, 1, (size_t)C);
        if (keep)
            MN_OP(ex, copy_rows, dc->rows + keep[b] * C, (size_t)C, dc->ln + (size_t)b * n * C, (size_t)C,
                  (size_t)n_real[b], (size_t)C);
    }
}

/* Longest first, then by index: groups of similar lengths pad little, in a fixed order. */
static int by_read_length(const void *pa, const void *pb) {
    const int *a = pa, *b = pb; /* {rows, index} */
    if (a[0] != b[0])
        return a[0] < b[0] ? 1 : -1;
    return (a[1] > b[1]) - (a[1] < b[1]);
}

/* cache_read_group over any number of sequences, in groups of similar lengths (each padded to
 * its longest, at most max_rows rows): ids are dc->ints_host (nb, n), sequence b's memory is
 * dc->memory's row b; keep (nullable) as for cache_read_group, per b. */
static void cache_read(mn_decoder_cache *dc, int nb, const int *seq, int n, const int *n_real, const size_t *keep) {
    int *order = dc->order; /* {rows, index} pairs */
    for (int b = 0; b < nb; b++)
        order[2 * b] = n_real[b], order[2 * b + 1] = b;
    qsort(order, (size_t)nb, 2 * sizeof *order, by_read_length);
    for (int g = 0; g < nb;) {
        const int L = order[2 * g] > 0 ? order[2 * g] : 1, room = dc->max_rows / L;
        const int cnt = nb - g < room ? nb - g : room > 0 ? room : 1;
        for (int i = 0; i < cnt; i++) {
            const int b = order[2 * (g + i) + 1];
            dc->g_seq[i] = seq[b];
            dc->g_real[i] = n_real[b];
            dc->g_mem[i] = b;
            dc->g_keep[i] = keep ? keep[b] : 0;
            memcpy(dc->g_ids + (size_t)i * L, dc->ints_host + (size_t)b * n, (size_t)L * sizeof(int32_t));
        }
        cache_read_group(dc, cnt, dc->g_seq, L, dc->g_real, dc->g_ids, dc->g_mem, keep ? dc->g_keep : NULL);
        g += cnt;
    }
}

/* logits (nb, V) on the host: the head on the last rows of sequences seq[0..nb), in blocks of
 * S rows. */
static mn_status cache_logits(mn_decoder_cache *dc, int nb, const int *seq, float *logits) {
    const mn_exec *ex = &dc->m->exec;
    const int C = dc->m->config.d_model, V = dc->m->config.vocab_size;
    for (int b = 0; b < nb; b++)
        MN_OP(ex, copy_rows, dc->y + (size_t)b * C, (size_t)C, dc->last + (size_t)seq[b] * C, (size_t)C, 1,
              (size_t)C);
    const int block = (int)head_block(dc->m);
    for (int at = 0; at < nb; at += block) {
        int n = nb - at < block ? nb - at : block;
        MN_OP(ex, lm_head_forward, dc->logits, dc->y + (size_t)at * C, dc->m->dev_views.wte, n, C, V);
        MN_OP(ex, download, logits + (size_t)at * V, dc->logits, (size_t)n * V * sizeof(float));
    }
    return mn_exec_status(ex);
}

mn_status mn_decoder_cache_start(mn_decoder_cache *dc, int n_seqs, const int32_t *tokens, const int64_t *offsets,
                                 const float *const *r, float *logits) {
    if (!dc || n_seqs < 1 || n_seqs > (dc ? dc->max_seqs : 0) || !tokens || !offsets || !r)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_decoder_cache_start: NULL argument or %d sequences (1..%d)", n_seqs,
                       dc ? dc->max_seqs : 0);
    mn_model *m = dc->m;
    const int k = m->config.n_slots, S = dc->S;
    const size_t kC = (size_t)k * m->config.d_model;
    int longest = 0;
    for (int i = 0; i < n_seqs; i++) {
        int64_t len = offsets[i + 1] - offsets[i];
        if (offsets[i] < 0 || len < 1 || len > m->config.max_turn_tokens)
            return mn_fail(MN_ERR_INVALID_ARG, "mn_decoder_cache_start: sequence %d has %lld tokens; want 1..%d", i,
                           (long long)len, m->config.max_turn_tokens);
        mn_status st = check_turn(m, tokens + offsets[i], (int)len, r[i], "mn_decoder_cache_start");
        if (st != MN_OK)
            return mn_fail_context(st, "sequence %d", i);
        longest = len > longest ? (int)len : longest;
    }
    const int n = k + longest;
    for (int i = 0; i < n_seqs; i++) {
        int len = (int)(offsets[i + 1] - offsets[i]);
        mn_turn_ids(k, tokens + offsets[i], len, longest, dc->ints_host + (size_t)i * n, NULL);
        memcpy(dc->r_host + (size_t)i * kC, r[i], kC * sizeof(float));
        dc->seq[i] = i;
        dc->n_real[i] = k + len;
        dc->len[i] = 0;
    }
    for (int i = n_seqs; i < dc->max_seqs; i++)
        dc->len[i] = S; /* not started: full, refuses appends */
    MN_OP(&m->exec, upload, dc->memory, dc->r_host, (size_t)n_seqs * kC * sizeof(float));
    cache_read(dc, n_seqs, dc->seq, n, dc->n_real, NULL);
    return logits ? cache_logits(dc, n_seqs, dc->seq, logits) : mn_exec_status(&m->exec);
}

mn_status mn_decoder_cache_append(mn_decoder_cache *dc, int n, const int *seq, const int32_t *token, float *logits) {
    if (!dc || n < 1 || n > (dc ? dc->max_seqs : 0) || !seq || !token || !logits)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_decoder_cache_append: NULL argument or %d sequences", n);
    for (int i = 0; i < n; i++) {
        if (seq[i] < 0 || seq[i] >= dc->max_seqs || dc->len[seq[i]] >= dc->S || (i && seq[i] <= seq[i - 1]))
            return mn_fail(MN_ERR_INVALID_ARG,
                           "mn_decoder_cache_append: sequence %d (entry %d) is not a started sequence with room, or "
                           "the list is not ascending",
                           seq[i], i);
        MN_TRY(mn_check_tokens(dc->m, token + i, 1, "mn_decoder_cache_append"));
        dc->ints_host[i] = token[i];
        dc->n_real[i] = 1;
    }
    cache_read(dc, n, seq, 1, dc->n_real, NULL);
    return cache_logits(dc, n, seq, logits);
}

mn_status mn_decoder_cache_fork(mn_decoder_cache *dc, int n, const int *src, const int *dst) {
    if (!dc || n < 0 || (n > 0 && (!src || !dst)))
        return mn_fail(MN_ERR_INVALID_ARG, "mn_decoder_cache_fork: NULL argument");
    const mn_config *c = &dc->m->config;
    const mn_exec *ex = &dc->m->exec;
    const size_t C = (size_t)c->d_model, slab = (size_t)dc->S * 3 * C, layer = (size_t)dc->max_seqs * slab;
    for (int i = 0; i < n; i++) {
        if (src[i] < 0 || src[i] >= dc->max_seqs || dst[i] < 0 || dst[i] >= dc->max_seqs || src[i] == dst[i] ||
            dc->len[src[i]] < 1 || dc->len[src[i]] > dc->S)
            return mn_fail(MN_ERR_INVALID_ARG, "mn_decoder_cache_fork: entry %d copies sequence %d to %d", i, src[i],
                           dst[i]);
        for (int l = 0; l < c->n_layers; l++)
            MN_OP(ex, copy, dc->kv + l * layer + (size_t)dst[i] * slab, dc->kv + l * layer + (size_t)src[i] * slab,
                  (size_t)dc->len[src[i]] * 3 * C * sizeof(float));
        MN_OP(ex, copy, dc->last + (size_t)dst[i] * C, dc->last + (size_t)src[i] * C, C * sizeof(float));
        dc->len[dst[i]] = dc->len[src[i]];
    }
    return mn_exec_status(ex);
}

mn_status mn_decoder_cache_score(mn_decoder_cache *dc, int n, const int *seq, const int32_t *const *tokens,
                                 const int *lens, float *const *log_probs) {
    if (!dc || n < 1 || n > (dc ? dc->max_seqs : 0) || !seq || !tokens || !lens || !log_probs)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_decoder_cache_score: NULL argument or %d sequences", n);
    mn_model *m = dc->m;
    const mn_exec *ex = &m->exec;
    const int C = m->config.d_model;
    int longest = 0;
    for (int i = 0; i < n; i++) {
        if (seq[i] < 0 || seq[i] >= dc->max_seqs || dc->len[seq[i]] < 1 || lens[i] < 1 ||
            dc->len[seq[i]] + lens[i] > dc->S || (i && seq[i] <= seq[i - 1]) || !tokens[i] || !log_probs[i])
            return mn_fail(MN_ERR_INVALID_ARG,
                           "mn_decoder_cache_score: entry %d: sequence %d with %d tokens is not a started sequence "
                           "with room for them, or the list is not ascending",
                           i, seq[i], lens[i]);
        MN_TRY(mn_check_tokens(m, tokens[i], lens[i], "mn_decoder_cache_score"));
        longest = lens[i] > longest ? lens[i] : longest;
    }
    /* the head's rows, sequence after sequence: its last row predicts token 0, its new row j - 1
     * token j */
    const int n_new = longest - 1;
    size_t n_rows = 0;
    int reads = 0;
    for (int i = 0; i < n; i++) {
        MN_OP(ex, copy_rows, dc->rows + n_rows * C, (size_t)C, dc->last + (size_t)seq[i] * C, (size_t)C, 1,
              (size_t)C);
        memcpy(dc->targets_host + n_rows, tokens[i], (size_t)lens[i] * sizeof(int32_t));
        if (lens[i] >= 2) {
            mn_turn_ids(0, tokens[i], lens[i] - 1, n_new, dc->ints_host + (size_t)reads * n_new, NULL);
            dc->seq[reads] = seq[i];
            dc->keep[reads] = n_rows + 1;
            dc->n_real[reads++] = lens[i] - 1;
        }
        n_rows += (size_t)lens[i];
    }
    if (reads)
        cache_read(dc, reads, dc->seq, n_new, dc->n_real, dc->keep);
    MN_TRY(head_losses(m, dc->rows, n_rows, dc->targets_host, dc->targets, dc->ones, dc->logits, head_block(m),
                       dc->losses, dc->losses_host));
    n_rows = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < lens[i]; j++)
            log_probs[i][j] = -dc->losses_host[n_rows++];
    return MN_OK;
}
