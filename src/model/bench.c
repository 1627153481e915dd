/* The benchmarks' measurements (bench.h). */
#include "model/bench.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "model/backend.h"

/* ---------------------------------------------------------------- training throughput */
/* Matrix-product FLOPs of one forward pass of a stack over S positions for one episode:
 * 24 C^2 per position per layer, attention 4 C per (query, key) pair. */
static double stack_flops(const mn_config *c, int layers, int S, double pairs) {
    double C = c->d_model;
    return layers * (24.0 * C * C * S + 4.0 * C * pairs);
}

/* sgemm GFLOP/s of (M, K) @ (K, N), after one untimed call. */
static mn_status sgemm_gflops(int M, int K, int N, int reps, double *gflops) {
    float *a = malloc((size_t)M * K * sizeof(float)), *b = malloc((size_t)K * N * sizeof(float));
    float *c = malloc((size_t)M * N * sizeof(float));
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return mn_fail(MN_ERR_NOMEM, "bench: out of memory for a %dx%dx%d sgemm", M, K, N);
    }
    for (size_t i = 0; i < (size_t)M * K; i++)
        a[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)K * N; i++)
        b[i] = (float)(i % 7) * 0.01f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    double t0 = mn_clock_s();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    double dt = mn_clock_s() - t0;
    free(a), free(b), free(c);
    *gflops = 2.0 * M * K * N * reps / dt / 1e9;
    return MN_OK;
}

/* Random token ids in [0, vocab): the same stream every run. */
static void random_tokens(int32_t *tokens, size_t n, int vocab, uint32_t seed) {
    uint32_t x = seed;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        tokens[i] = (int32_t)((x >> 8) % (uint32_t)vocab);
    }
}

static mn_status train_steps(const mn_bench_train_options *o, mn_trainer *trainer, mn_bench_train_result *r) {
    const mn_config *cfg = &o->config;
    const int B = o->batch, T = o->turns, L = o->turn_tokens;
    size_t n = (size_t)T * B * L;
    int32_t *tokens = malloc(n * sizeof(int32_t)), *lengths = malloc((size_t)T * B * sizeof(int32_t));
    if (!tokens || !lengths) {
        free(tokens), free(lengths);
        return mn_fail(MN_ERR_NOMEM, "bench: out of memory for %zu tokens", n);
    }
    random_tokens(tokens, n, cfg->vocab_size, 12345);
    for (int i = 0; i < T * B; i++)
        lengths[i] = L; /* full turns: every position does real work */
    mn_batch batch = {.B = B, .T = T, .max_len = L, .tokens = tokens, .lengths = lengths};
    mn_adamw_config adamw = {3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    mn_status st = mn_forward_backward(trainer, &batch, &r->loss, NULL); /* warm-up */
    double t0 = mn_clock_s();
    for (int s = 0; s < o->steps && st == MN_OK; s++) {
        st = mn_forward_backward(trainer, &batch, &r->loss, NULL);
        if (st == MN_OK)
            st = mn_adamw_step(trainer, &adamw, NULL);
    }
    r->step_s = (mn_clock_s() - t0) / o->steps;
    free(tokens), free(lengths);
    if (st != MN_OK)
        return st;
    int S = cfg->n_slots + L;
    double causal_pairs = S * (S + 1) / 2.0, full_pairs = (double)S * S;
    double fwd = stack_flops(cfg, cfg->n_layers, S, causal_pairs) + stack_flops(cfg, cfg->n_comp_layers, S, full_pairs) +
                 2.0 * L * cfg->d_model * cfg->vocab_size + 4.0 * cfg->n_slots * cfg->d_model * cfg->d_model;
    double flops = 3.0 * fwd * B * T; /* backward costs twice the forward */
    r->tokens_per_s = (double)n / r->step_s;
    r->gflops = flops / r->step_s / 1e9;
    r->sgemm_m = B * S;
    r->sgemm_k = cfg->d_model;
    r->sgemm_n = 4 * cfg->d_model;
    return sgemm_gflops(r->sgemm_m, r->sgemm_k, r->sgemm_n, 10, &r->sgemm_gflops);
}

mn_status mn_bench_train(const mn_bench_train_options *o, mn_bench_train_result *r) {
    if (!o || !r)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_bench_train: NULL argument");
    if (o->batch < 1 || o->turns < 1 || o->bptt < 1 || o->steps < 1 || o->turn_tokens < 2 ||
        o->turn_tokens > o->config.max_turn_tokens)
        return mn_fail(MN_ERR_INVALID_ARG, "bench: need batch, turns, bptt, steps >= 1 and 2 <= turn tokens <= %d",
                       o->config.max_turn_tokens);
    memset(r, 0, sizeof *r);
    mn_model *model = NULL;
    mn_trainer *trainer = NULL;
    mn_status st = mn_model_create(&o->config, &model);
    if (st == MN_OK)
        st = mn_model_init(model, 1);
    if (st == MN_OK)
        st = mn_trainer_create_on(model, o->device, o->batch, o->bptt, &trainer);
    if (st == MN_OK)
        st = mn_trainer_set_matmul(trainer, o->matmul);
    if (st == MN_OK)
        st = train_steps(o, trainer, r);
    mn_trainer_free(trainer);
    mn_model_free(model);
    return st;
}

/* ---------------------------------------------------------------- backend ops */
#define MAX_BUFFERS 64

typedef struct {
    mn_exec ex;
    int failed;
    void *buffers[MAX_BUFFERS];
    int n_buffers;
    int reps;
    void (*report)(void *ctx, const mn_bench_op *op);
    void *ctx;
} bench_state;

/* A backend buffer of n floats filled with small values (or ids in [0, modulo) if ints; zeros
 * if modulo < 0). */
static void *buffer(bench_state *b, size_t n, int ints, int modulo) {
    void *d = NULL;
    if (b->failed || b->n_buffers == MAX_BUFFERS || mn_exec_alloc(&b->ex, n * 4, &d) != MN_OK) {
        b->failed = 1;
        return NULL;
    }
    b->buffers[b->n_buffers++] = d;
    if (modulo < 0)
        return d;
    uint32_t *h = malloc(n * 4);
    if (!h) {
        b->failed = 1;
        return d;
    }
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        if (ints) {
            int32_t v = (int32_t)(x % (uint32_t)modulo);
            memcpy(&h[i], &v, 4);
        } else {
            float v = ((float)(x >> 8) / 16777216.0f - 0.5f) * 0.1f;
            memcpy(&h[i], &v, 4);
        }
    }
    MN_OP(&b->ex, upload, d, h, n * 4);
    free(h);
    return d;
}

/* Times `call` (a statement using the backend) b.reps times after one warm-up, waits for the
 * device, and reports; a device failure ends the run. */
#define TIME_OP(op_name, op_bytes, op_flops, call)                                                    \
    do {                                                                                              \
        call;                                                                                         \
        b->ex.be->synchronize(b->ex.ctx);                                                             \
        double t0_ = mn_clock_s();                                                                    \
        for (int r_ = 0; r_ < b->reps; r_++)                                                          \
            call;                                                                                     \
        if (b->ex.be->synchronize(b->ex.ctx) != MN_OK)                                                \
            return mn_fail_context(MN_ERR_DEVICE, "%s", op_name);                                     \
        mn_bench_op op_ = {op_name, (mn_clock_s() - t0_) / b->reps, (double)(op_bytes), (double)(op_flops)}; \
        b->report(b->ctx, &op_);                                                                      \
    } while (0)

static mn_status time_ops(const mn_bench_ops_options *o, bench_state *b) {
    const int B = o->batch, L = o->turn_tokens, k = o->slots, C = o->width, H = o->heads, V = o->vocab;
    const int S = k + L, N = B * S, NT = B * L, M = B * k;
    const size_t NC = (size_t)N * C, F = 4; /* bytes per float */
    float *x = buffer(b, NC * 4, 0, 0), *y = buffer(b, NC * 4, 0, 0), *dy = buffer(b, NC * 4, 0, 0);
    float *w = buffer(b, (size_t)C * 4 * C, 0, 0), *dw = buffer(b, (size_t)C * 4 * C, 0, 0);
    float *bias = buffer(b, 4 * (size_t)C, 0, 0), *dbias = buffer(b, 4 * (size_t)C, 0, 0);
    float *mean = buffer(b, N, 0, 0), *rstd = buffer(b, N, 0, 0);
    float *att = buffer(b, (size_t)B * H * S * S, 0, 0);
    float *wte = buffer(b, (size_t)V * C, 0, 0), *dwte = buffer(b, (size_t)V * C, 0, 0);
    float *logits = buffer(b, (size_t)NT * V, 0, 0), *dlogits = buffer(b, (size_t)NT * V, 0, 0);
    float *losses = buffer(b, NT, 0, 0), *weights = buffer(b, NT, 0, 0);
    int32_t *ids = buffer(b, N, 1, V), *targets = buffer(b, NT, 1, V);
    int32_t *valid = buffer(b, B, 1, 1); /* filled below */
    float *gate_w = buffer(b, 2 * (size_t)C * C, 0, 0), *dgate_w = buffer(b, 2 * (size_t)C * C, 0, 0);
    float *r = buffer(b, (size_t)M * C, 0, 0), *u = buffer(b, (size_t)M * C, 0, 0), *z = buffer(b, (size_t)M * C, 0, 0);
    float *dr = buffer(b, (size_t)M * C, 0, 0), *du = buffer(b, (size_t)M * C, 0, 0);
    float *adam_m = buffer(b, (size_t)C * 4 * C, 0, 0), *adam_v = buffer(b, (size_t)C * 4 * C, 0, -1);
    float *scratch = buffer(b, (size_t)M * C, 0, 0);
    int32_t *hv = malloc((size_t)B * sizeof(int32_t));
    if (b->failed || !hv) {
        free(hv);
        return mn_fail_context(MN_ERR_NOMEM, "allocation failed");
    }
    for (int i = 0; i < B; i++)
        hv[i] = S; /* full turns: every position does work */
    MN_OP(&b->ex, upload, valid, hv, (size_t)B * sizeof(int32_t));
    free(hv);
    TIME_OP("embedding fwd", 2.0 * NC * F, 0, MN_OP(&b->ex, embedding_forward, x, ids, wte, N, C));
    TIME_OP("embedding bwd", 3.0 * NC * F, NC, MN_OP(&b->ex, embedding_backward, dwte, dy, ids, N, C));
    TIME_OP("layernorm fwd", 2.0 * NC * F, 8.0 * NC, MN_OP(&b->ex, layernorm_forward, y, mean, rstd, x, bias, bias, N, C));
    TIME_OP("layernorm bwd", 4.0 * NC * F, 16.0 * NC,
            MN_OP(&b->ex, layernorm_backward, dy, dbias, dbias + C, y, x, bias, mean, rstd, N, C));
    TIME_OP("linear qkv fwd (C->3C)", (4.0 * NC + 3.0 * C * C) * F, 6.0 * NC * C,
            MN_OP(&b->ex, linear_forward, y, x, w, bias, N, C, 3 * C));
    TIME_OP("linear qkv bwd", (9.0 * NC + 6.0 * C * C) * F, 12.0 * NC * C,
            MN_OP(&b->ex, linear_backward, dy, dw, dbias, y, x, w, N, C, 3 * C));
    TIME_OP("linear fc fwd (C->4C)", (5.0 * NC + 4.0 * C * C) * F, 8.0 * NC * C,
            MN_OP(&b->ex, linear_forward, y, x, w, bias, N, C, 4 * C));
    TIME_OP("linear fc bwd", (11.0 * NC + 8.0 * C * C) * F, 16.0 * NC * C,
            MN_OP(&b->ex, linear_backward, dy, dw, dbias, y, x, w, N, C, 4 * C));
    TIME_OP("attention fwd", (4.0 * NC + (double)B * H * S * S) * F, 4.0 * B * (double)S * S * C,
            MN_OP(&b->ex, attention_forward, y, att, x, valid, B, S, C, H, 0));
    TIME_OP("attention bwd", (10.0 * NC + (double)B * H * S * S) * F, 8.0 * B * (double)S * S * C,
            MN_OP(&b->ex, attention_backward, dy, y, x, att, valid, B, S, C, H, 0));
    TIME_OP("gelu fwd", 8.0 * NC * F, 20.0 * NC, MN_OP(&b->ex, gelu_forward, y, x, 4 * NC));
    TIME_OP("gelu bwd", 16.0 * NC * F, 40.0 * NC, MN_OP(&b->ex, gelu_backward, dy, y, x, 4 * NC));
    TIME_OP("residual fwd", 3.0 * NC * F, NC, MN_OP(&b->ex, residual_forward, y, x, dy, NC));
    TIME_OP("residual bwd", 3.0 * NC * F, NC, MN_OP(&b->ex, residual_backward, dy, NULL, x, NC));
    TIME_OP("lm_head fwd", ((double)NT * C + (double)V * C + (double)NT * V) * F, 2.0 * NT * C * (double)V,
            MN_OP(&b->ex, lm_head_forward, logits, x, wte, NT, C, V));
    TIME_OP("lm_head bwd", (2.0 * NT * C + 3.0 * V * C + (double)NT * V) * F, 4.0 * NT * C * (double)V,
            MN_OP(&b->ex, lm_head_backward, dy, dwte, dlogits, x, wte, NT, C, V));
    TIME_OP("crossentropy fwd", (double)NT * V * F, 3.0 * NT * (double)V,
            MN_OP(&b->ex, crossentropy_forward, losses, logits, targets, weights, NT, V));
    TIME_OP("crossentropy bwd", 3.0 * NT * V * F, 5.0 * NT * (double)V,
            MN_OP(&b->ex, crossentropy_backward, dlogits, logits, targets, weights, 1e-3f, NT, V));
    TIME_OP("gated update fwd", (5.0 * M * C + 2.0 * C * C) * F, 4.0 * M * (double)C * C,
            MN_OP(&b->ex, gated_update_forward, z, y, r, u, gate_w, bias, M, C));
    TIME_OP("gated update bwd", (12.0 * M * C + 4.0 * C * C) * F, 8.0 * M * (double)C * C,
            MN_OP(&b->ex, gated_update_backward, dr, du, dgate_w, dbias, z, r, u, y, gate_w, scratch, M, C));
    /* AdamW over the fc weight (4 C^2 parameters), one segment */
    mn_adamw_segment seg = {0, (size_t)(C * 4 * (size_t)C), 0.1f};
    double n = (double)seg.size;
    TIME_OP("adamw (4 C^2 params)", 7.0 * n * F, 12.0 * n,
            MN_OP(&b->ex, adamw_update, w, dw, adam_m, adam_v, &seg, 1, 1e-4f, 0.9f, 0.95f, 1e-8f, 1));
    TIME_OP("sum of squares (4 N C)", 4.0 * NC * F, 8.0 * NC, (void)MN_OP(&b->ex, sum_squares, x, 4 * NC));
    return MN_OK;
}

mn_status mn_bench_ops(const mn_bench_ops_options *o, void (*report)(void *ctx, const mn_bench_op *op), void *ctx) {
    if (!o || !report)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_bench_ops: NULL argument");
    if (o->batch < 1 || o->turn_tokens < 1 || o->slots < 1 || o->width < 1 || o->heads < 1 || o->width % o->heads ||
        o->vocab < 2 || o->reps < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "bench-ops: need positive sizes and heads dividing the width");
    bench_state b = {.reps = o->reps, .report = report, .ctx = ctx};
    mn_status st = mn_exec_open(o->device, &b.ex);
    if (st == MN_OK)
        st = b.ex.be->set_matmul(b.ex.ctx, o->matmul);
    if (st == MN_OK)
        st = time_ops(o, &b);
    for (int i = 0; i < b.n_buffers; i++)
        mn_exec_release(&b.ex, b.buffers[i]);
    mn_exec_close(&b.ex);
    return st;
}

/* ---------------------------------------------------------------- session updates */
static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static mn_status update_timings(const mn_bench_update_options *o, mn_model *m, mn_bench_update_result *res) {
    const int n_tokens = o->config.max_turn_tokens, sessions = o->sessions, reps = o->reps;
    const size_t st = mn_state_floats(m);
    int32_t *tokens = malloc((size_t)sessions * n_tokens * sizeof(int32_t));
    int64_t *offsets = malloc(((size_t)sessions + 1) * sizeof(int64_t));
    float *r = malloc((size_t)sessions * st * sizeof(float));
    double *times = malloc((size_t)reps * sizeof(double));
    mn_status s = MN_OK;
    if (!tokens || !offsets || !r || !times) {
        s = mn_fail(MN_ERR_NOMEM, "bench-update: out of memory for %d sessions", sessions);
        goto done;
    }
    random_tokens(tokens, (size_t)sessions * n_tokens, o->config.vocab_size, 99);
    for (int i = 0; i <= sessions; i++)
        offsets[i] = (int64_t)i * n_tokens;
    for (int i = 0; i < sessions && s == MN_OK; i++)
        s = mn_initial_state(m, r + (size_t)i * st);
    /* latency of one update (after warm-up: workspace allocated, kernels loaded) */
    for (int i = 0; i < 3 && s == MN_OK; i++)
        s = mn_update(m, tokens, n_tokens, r, r);
    for (int i = 0; i < reps && s == MN_OK; i++) {
        double t0 = mn_clock_s();
        s = mn_update(m, tokens, n_tokens, r, r);
        times[i] = mn_clock_s() - t0;
    }
    if (s != MN_OK)
        goto done;
    qsort(times, (size_t)reps, sizeof *times, by_value);
    res->median_s = times[reps / 2];
    res->p90_s = times[(int)(0.9 * (reps - 1))];
    res->min_s = times[0];
    /* throughput of the batched update (one warm-up call on a small batch sizes nothing: the
     * workspace grows to the chunk size on the first full call, so time the second) */
    s = mn_update_batch(m, sessions, tokens, offsets, r, r);
    double t0 = mn_clock_s();
    if (s == MN_OK)
        s = mn_update_batch(m, sessions, tokens, offsets, r, r);
    res->batch_s = mn_clock_s() - t0;
done:
    free(tokens), free(offsets), free(r), free(times);
    return s;
}

mn_status mn_bench_update(const mn_bench_update_options *o, mn_bench_update_result *r) {
    if (!o || !r)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_bench_update: NULL argument");
    if (o->config.max_turn_tokens < 1 || o->sessions < 1 || o->reps < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "bench-update: need turn tokens, sessions and reps >= 1");
    memset(r, 0, sizeof *r);
    mn_model *m = NULL;
    mn_status st = mn_model_create(&o->config, &m);
    if (st == MN_OK)
        st = mn_model_init(m, 7);
    if (st == MN_OK)
        st = mn_model_set_device(m, o->device);
    if (st == MN_OK)
        st = mn_model_set_matmul(m, o->matmul);
    if (st == MN_OK)
        st = update_timings(o, m, r);
    mn_model_free(m);
    return st;
}
