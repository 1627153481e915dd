/* Inference with explicit state (rwkv.cpp style): r_in -> r_out per turn, logits given R,
 * batched session updates, on the model's inference backend (CPU unless
 * mn_model_set_device chose CUDA). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/model_internal.h"

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
static mn_status check_tokens(const mn_model *m, const int32_t *tokens, int n, const char *who) {
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->config.vocab_size)
            return mn_fail(MN_ERR_INVALID_ARG, "%s: token %d at position %d is outside the vocabulary [0, %d)", who,
                           tokens[i], i, m->config.vocab_size);
    return MN_OK;
}

static mn_status check_state(const mn_model *m, const float *r, const char *who) {
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
    MN_TRY(check_tokens(m, tokens, n, who));
    return check_state(m, r, who);
}

mn_status mn_initial_state(const mn_model *m, float *r_out) {
    if (!m || !r_out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_initial_state: NULL argument");
    memcpy(r_out, m->views.r0, mn_state_floats(m) * sizeof(float));
    return MN_OK;
}

/* ---------------------------------------------------------------- session updates */
/* One session of an update: its turn and its rows of r_in / r_out (host). */
typedef struct {
    const int32_t *tokens;
    int len, index;
    const float *r_in;
    float *r_out;
} session_turn;

/* Longest first, then by index: chunks of similar lengths waste little padding, and the order
 * (hence the chunks, hence the bits) is the same on every run. */
static int by_length_desc(const void *pa, const void *pb) {
    const session_turn *a = pa, *b = pb;
    if (a->len != b->len)
        return a->len < b->len ? 1 : -1;
    return (a->index > b->index) - (a->index < b->index);
}

/* Runs the compressor and the gate over sessions[0..n-1] (validated), chunk by chunk. */
static mn_status update_sessions(mn_model *m, session_turn *sessions, int n) {
    const mn_config *c = &m->config;
    const mn_exec *ex = &m->exec;
    const int k = c->n_slots, C = c->d_model, S_max = k + c->max_turn_tokens;
    const size_t kC = (size_t)k * C;
    int budget = ex->be->device == MN_DEVICE_CPU ? MN_BATCH_POSITIONS_CPU : MN_BATCH_POSITIONS_CUDA;
    int cap = budget / S_max > 1 ? budget / S_max : 1;
    if (cap > n)
        cap = n;
    struct mn_infer_workspace *ws = NULL;
    MN_TRY(workspace(m, cap, &ws));
    if (n > 1)
        qsort(sessions, (size_t)n, sizeof *sessions, by_length_desc);
    for (int first = 0; first < n; first += cap) {
        const int B = n - first < cap ? n - first : cap, L = sessions[first].len, S = k + L;
        int32_t *ids = ws->ints_host, *valid = ws->ints_host + (size_t)B * S;
        for (int e = 0; e < B; e++) {
            const session_turn *st = &sessions[first + e];
            mn_turn_ids(k, st->tokens, st->len, L, ids + (size_t)e * S, NULL);
            valid[e] = k + st->len;
            memcpy(ws->r_host + (size_t)e * kC, st->r_in, kC * sizeof(float));
        }
        MN_OP(ex, upload, ws->ints, ws->ints_host, ((size_t)B * S + B) * sizeof(int32_t));
        MN_OP(ex, upload, ws->memory, ws->r_host, (size_t)B * kC * sizeof(float));
        mn_stack_forward(ex, &ws->acts, c, m->dev_views.wte, &m->dev_views.compressor, ws->memory, ws->ints, NULL,
                         ws->ints + (size_t)B * S, B, L, 0);
        MN_OP(ex, copy_rows, ws->u, kC, ws->acts.lnf, (size_t)S * C, (size_t)B, kC); // U = slot rows of ln_f
        MN_OP(ex, gated_update_forward, ws->r_next, ws->z, ws->memory, ws->u, m->dev_views.gate_w,
              m->dev_views.gate_b, B * k, C);
        MN_OP(ex, download, ws->r_host, ws->r_next, (size_t)B * kC * sizeof(float));
        MN_TRY(mn_exec_status(ex));
        /* after the chunk's reads: r_out may be r_in */
        for (int e = 0; e < B; e++)
            memcpy(sessions[first + e].r_out, ws->r_host + (size_t)e * kC, kC * sizeof(float));
    }
    return MN_OK;
}

mn_status mn_update(mn_model *m, const int32_t *tokens, int n, const float *r_in, float *r_out) {
    MN_TRY(check_turn(m, tokens, n, r_in, "mn_update"));
    if (!r_out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_update: r_out is NULL");
    session_turn one = {tokens, n, 0, r_in, r_out};
    return update_sessions(m, &one, 1);
}

mn_status mn_update_batch(mn_model *m, int n_sessions, const int32_t *tokens, const int64_t *offsets,
                          const float *r_in, float *r_out) {
    if (!m || n_sessions < 0)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_update_batch: model is NULL or n_sessions = %d < 0", n_sessions);
    if (n_sessions == 0)
        return MN_OK;
    if (!tokens || !offsets || !r_in || !r_out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_update_batch: tokens, offsets, r_in or r_out is NULL");
    const int N = m->config.max_turn_tokens;
    const size_t state = mn_state_floats(m);
    session_turn *sessions = malloc((size_t)n_sessions * sizeof *sessions);
    if (!sessions)
        return mn_fail(MN_ERR_NOMEM, "mn_update_batch: out of memory for %d sessions", n_sessions);
    mn_status st = MN_OK;
    if (offsets[0] < 0)
        st = mn_fail(MN_ERR_INVALID_ARG, "mn_update_batch: offsets[0] = %lld is negative", (long long)offsets[0]);
    for (int i = 0; st == MN_OK && i < n_sessions; i++) {
        int64_t len = offsets[i + 1] - offsets[i];
        if (len < 1 || len > N) {
            st = mn_fail(MN_ERR_INVALID_ARG,
                         "mn_update_batch: session %d has %lld tokens (offsets %lld..%lld); a turn has 1..%d", i,
                         (long long)len, (long long)offsets[i], (long long)offsets[i + 1], N);
            break;
        }
        sessions[i] = (session_turn){tokens + offsets[i], (int)len, i, r_in + (size_t)i * state, r_out + (size_t)i * state};
        st = check_tokens(m, sessions[i].tokens, sessions[i].len, "mn_update_batch");
        if (st == MN_OK)
            st = check_state(m, sessions[i].r_in, "mn_update_batch");
        if (st != MN_OK)
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
        MN_TRY(check_tokens(m, tokens, n, who));
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
    return mn_logits_rows(m, tokens, n, r, 0, n, logits);
}

mn_status mn_logits_rows(mn_model *m, const int32_t *tokens, int n, const float *r, int first, int rows,
                         float *logits) {
    MN_TRY(check_turn(m, tokens, n, r, "mn_logits"));
    if (!logits)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_logits: logits is NULL");
    if (first < 0 || rows < 1 || first + rows > n)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_logits: rows %d .. %d are not inside the turn's %d", first,
                       first + rows - 1, n);
    const float *hidden = NULL;
    MN_TRY(decoder_hidden(m, tokens, n, r, "mn_logits", &hidden));
    return head_to_host(m, hidden + (size_t)first * m->config.d_model, rows, logits);
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
