/* The benchmarks' measurements (bench.h). */
#include "model/bench.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "model/backend.h"
#include "model/model_internal.h"
#include "model/trainer_internal.h"

/* ---------------------------------------------------------------- checks against the CPU */
/* Bound on a sample's error relative to its scale (bench.h), per product precision: fp32
 * differs from the CPU by summation order only (~1e-6 per op, test_cuda_ops); TF32 / BF16
 * round each product's inputs to 10 / 7 mantissa bits (2e-3 / 1.6e-2 per product there),
 * compounded over a model's layers. A wrong index or a missed mask is off by O(1). */
static double check_bound(mn_matmul precision) {
    return precision == MN_MATMUL_BF16 ? 1e-1 : precision == MN_MATMUL_TF32 ? 2e-2 : 1e-3;
}

/* Adds got vs want (n values) to the check; MN_ERR_DEVICE naming `what` when outside the bound. */
static mn_status check_sample(mn_bench_check *c, const char *what, const float *got, const float *want, size_t n) {
    double scale = 0.0, err = 0.0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs((double)want[i]));
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]) / (scale > 0.0 ? scale : 1.0);
        err = isnan(e) || e > err ? e : err; /* a NaN stays */
        if (isnan(e))
            break;
    }
    c->values += (int)n;
    if (!(err <= c->max_error))
        c->max_error = err;
    if (!(err <= c->bound))
        return mn_fail(MN_ERR_DEVICE, "bench: %s on the device differs from the CPU by %.3g of its scale (bound %.3g)",
                       what, err, c->bound);
    return MN_OK;
}

void mn_bench_print_check(FILE *out, const mn_bench_check *c) {
    if (c->values)
        fprintf(out, "check vs CPU:             %d values, max error %.2g of the scale (bound %.0e)\n", c->values,
                c->max_error, c->bound);
    else
        fprintf(out, "check vs CPU:             none (the benchmark ran on the CPU)\n");
}

/* The table a benchmark runs on: the test's stand-in, or the device's. */
static mn_status bench_backend(const mn_backend *override, mn_device device, const mn_backend **out) {
    if (override) {
        *out = override;
        return MN_OK;
    }
    return mn_backend_for(device, out);
}

/* The benchmarks' model: config, seed 7, on the chosen backend and matmul precision. */
static mn_status bench_model(const mn_config *config, const mn_backend *override, mn_device device, mn_matmul matmul,
                             mn_model **out) {
    const mn_backend *be = NULL;
    mn_status st = bench_backend(override, device, &be);
    if (st == MN_OK)
        st = mn_model_create(config, out);
    if (st == MN_OK)
        st = mn_model_init(*out, 7);
    if (st == MN_OK)
        st = mn_model_set_backend(*out, be);
    if (st == MN_OK)
        st = mn_model_set_matmul(*out, matmul);
    return st;
}

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

/* Episode 0 of the benchmark's batch (the same tokens), forward on the device trainer and on a
 * CPU trainer with the device's current parameters: turn losses and states compared. */
static mn_status train_check(const mn_bench_train_options *o, mn_model *model, mn_trainer *trainer,
                             mn_bench_check *c) {
    const mn_config *cfg = &o->config;
    const int B = o->batch, T = o->turns, L = o->turn_tokens;
    const size_t nstate = (size_t)T * mn_state_floats(model);
    int32_t *all = malloc((size_t)T * B * L * sizeof(int32_t)), *tokens = malloc((size_t)T * L * sizeof(int32_t));
    int32_t *lengths = malloc((size_t)T * sizeof(int32_t));
    float *buf = malloc(2 * ((size_t)T + nstate) * sizeof(float));
    mn_trainer *cpu = NULL;
    mn_status st = all && tokens && lengths && buf ? MN_OK : mn_fail(MN_ERR_NOMEM, "bench: out of memory for the check");
    if (st == MN_OK) {
        random_tokens(all, (size_t)T * B * L, cfg->vocab_size, 12345);
        for (int t = 0; t < T; t++) { /* (T, B, L): episode 0 of each turn */
            memcpy(tokens + (size_t)t * L, all + (size_t)t * B * L, (size_t)L * sizeof(int32_t));
            lengths[t] = L;
        }
        st = mn_trainer_pull(trainer); /* the host parameters become the device's */
    }
    float *dev_turn = buf, *cpu_turn = buf + T, *dev_states = buf + 2 * T, *cpu_states = dev_states + nstate;
    mn_batch one = {.B = 1, .T = T, .max_len = L, .tokens = tokens, .lengths = lengths};
    float dev_loss = 0.0f, cpu_loss = 0.0f;
    if (st == MN_OK)
        st = mn_forward(trainer, &one, &dev_loss, &(mn_forward_outputs){.turn_losses = dev_turn, .states = dev_states});
    if (st == MN_OK)
        st = mn_trainer_create_on(model, MN_DEVICE_CPU, 1, o->bptt, &cpu);
    if (st == MN_OK)
        st = mn_forward(cpu, &one, &cpu_loss, &(mn_forward_outputs){.turn_losses = cpu_turn, .states = cpu_states});
    if (st == MN_OK)
        st = check_sample(c, "episode 0's turn losses", dev_turn, cpu_turn, (size_t)T);
    if (st == MN_OK)
        st = check_sample(c, "episode 0's states", dev_states, cpu_states, nstate);
    mn_trainer_free(cpu);
    free(all), free(tokens), free(lengths), free(buf);
    return st;
}

mn_status mn_bench_train(const mn_bench_train_options *o, mn_bench_train_result *r) {
    if (!o || !r)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_bench_train: NULL argument");
    if (o->batch < 1 || o->turns < 1 || o->bptt < 1 || o->steps < 1 || o->turn_tokens < 2 ||
        o->turn_tokens > o->config.max_turn_tokens)
        return mn_fail(MN_ERR_INVALID_ARG, "bench: need batch, turns, bptt, steps >= 1 and 2 <= turn tokens <= %d",
                       o->config.max_turn_tokens);
    memset(r, 0, sizeof *r);
    r->check.bound = check_bound(o->matmul);
    mn_model *model = NULL;
    mn_trainer *trainer = NULL;
    const mn_backend *be = NULL;
    mn_status st = bench_backend(o->backend, o->device, &be);
    if (st == MN_OK)
        st = mn_model_create(&o->config, &model);
    if (st == MN_OK)
        st = mn_model_init(model, 1);
    if (st == MN_OK)
        st = mn_trainer_create_backend(model, be, o->batch, o->bptt, &trainer);
    if (st == MN_OK)
        st = mn_trainer_set_matmul(trainer, o->matmul);
    if (st == MN_OK)
        st = train_steps(o, trainer, r);
    if (st == MN_OK && be->device != MN_DEVICE_CPU)
        st = train_check(o, model, trainer, &r->check);
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
    struct { /* the forward ops' buffers, for the check after the timings */
        float *x, *y, *w, *bias, *mean, *rstd, *att, *wte, *logits, *losses, *weights, *gate_w, *r, *u, *z;
        int32_t *targets, *valid;
    } fwd;
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
    b->fwd.x = x, b->fwd.y = y, b->fwd.w = w, b->fwd.bias = bias, b->fwd.mean = mean, b->fwd.rstd = rstd;
    b->fwd.att = att, b->fwd.wte = wte, b->fwd.logits = logits, b->fwd.losses = losses, b->fwd.weights = weights;
    b->fwd.gate_w = gate_w, b->fwd.r = r, b->fwd.u = u, b->fwd.z = z, b->fwd.targets = targets, b->fwd.valid = valid;
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
    TIME_OP("crossentropy fused fwd+bwd", 4.0 * NT * V * F, 6.0 * NT * (double)V,
            MN_OP(&b->ex, crossentropy_fused, losses, dlogits, targets, weights, 1e-3f, NT, V));
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

/* n floats of backend buffer d from element `from`, on the host (NULL after a failure). */
static float *fetch(bench_state *b, const void *d, size_t from, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    if (h)
        MN_OP(&b->ex, download, h, (const float *)d + from, n * sizeof(float));
    if (h && b->ex.be->synchronize(b->ex.ctx) != MN_OK) {
        free(h);
        return NULL;
    }
    return h;
}

/* One forward op checked: its device output (first `n_out` floats of `out`) against the CPU
 * op run by `cpu_call` on host copies of its inputs. Inputs: up to 6 (buffer, floats) pairs. */
typedef struct {
    const void *dev;
    size_t n;
} check_input;

static mn_status check_op(bench_state *b, mn_bench_check *c, const char *what, const float *out, size_t n_out,
                          const check_input *in, int n_in,
                          void (*cpu_call)(const mn_exec *cpu, float *out, float **in, const mn_bench_ops_options *o),
                          const mn_bench_ops_options *o) {
    float *h_in[6] = {0}, *got = fetch(b, out, 0, n_out), *want = malloc((n_out ? n_out : 1) * sizeof(float));
    mn_status st = got && want ? MN_OK : mn_fail(MN_ERR_DEVICE, "bench: reading back %s for its check", what);
    for (int i = 0; i < n_in && st == MN_OK; i++)
        if (!(h_in[i] = fetch(b, in[i].dev, 0, in[i].n)))
            st = mn_fail(MN_ERR_DEVICE, "bench: reading back the inputs of %s for its check", what);
    mn_exec cpu = {0};
    if (st == MN_OK)
        st = mn_exec_open(MN_DEVICE_CPU, &cpu);
    if (st == MN_OK) {
        cpu_call(&cpu, want, h_in, o);
        st = check_sample(c, what, got, want, n_out);
    }
    mn_exec_close(&cpu);
    for (int i = 0; i < n_in; i++)
        free(h_in[i]);
    free(got), free(want);
    return st;
}

/* The sample: the first CHECK_ROWS rows (rows are independent in these ops), episode 0 of
 * attention. The CPU side of each, on host copies of the inputs in the order check_op lists. */
#define CHECK_ROWS 16
static int sample_rows(int n) { return n < CHECK_ROWS ? n : CHECK_ROWS; }
static int check_rows(const mn_bench_ops_options *o) { return sample_rows(o->batch * (o->slots + o->turn_tokens)); }
static int check_token_rows(const mn_bench_ops_options *o) { return sample_rows(o->batch * o->turn_tokens); }
static int check_slot_rows(const mn_bench_ops_options *o) { return sample_rows(o->batch * o->slots); }
static void cpu_layernorm(const mn_exec *cpu, float *out, float **in, const mn_bench_ops_options *o) {
    int R = check_rows(o);
    float *mean = malloc((size_t)R * sizeof(float)), *rstd = malloc((size_t)R * sizeof(float));
    if (mean && rstd)
        MN_OP(cpu, layernorm_forward, out, mean, rstd, in[0], in[1], in[1], R, o->width);
    free(mean), free(rstd);
}
static void cpu_linear_fc(const mn_exec *cpu, float *out, float **in, const mn_bench_ops_options *o) {
    MN_OP(cpu, linear_forward, out, in[0], in[1], in[2], check_rows(o), o->width, 4 * o->width);
}
static void cpu_attention(const mn_exec *cpu, float *out, float **in, const mn_bench_ops_options *o) {
    const int S = o->slots + o->turn_tokens;
    int32_t valid = S;
    float *att = malloc((size_t)o->heads * S * S * sizeof(float));
    if (att)
        MN_OP(cpu, attention_forward, out, att, in[0], &valid, 1, S, o->width, o->heads, 0);
    free(att);
}
static void cpu_gelu(const mn_exec *cpu, float *out, float **in, const mn_bench_ops_options *o) {
    MN_OP(cpu, gelu_forward, out, in[0], (size_t)check_rows(o) * 4 * o->width);
}
static void cpu_lm_head(const mn_exec *cpu, float *out, float **in, const mn_bench_ops_options *o) {
    MN_OP(cpu, lm_head_forward, out, in[0], in[1], check_token_rows(o), o->width, o->vocab);
}
static void cpu_crossentropy(const mn_exec *cpu, float *out, float **in, const mn_bench_ops_options *o) {
    MN_OP(cpu, crossentropy_forward, out, in[0], (const int32_t *)in[1], in[2], check_token_rows(o), o->vocab);
}
static void cpu_gated_update(const mn_exec *cpu, float *out, float **in, const mn_bench_ops_options *o) {
    int R = check_slot_rows(o);
    float *z = malloc((size_t)R * o->width * sizeof(float));
    if (z)
        MN_OP(cpu, gated_update_forward, out, z, in[0], in[1], in[2], in[3], R, o->width);
    free(z);
}

/* After the timings: each forward op once more on the device, on whatever its input buffers
 * hold now, and its sample against the CPU. */
static mn_status check_ops(const mn_bench_ops_options *o, bench_state *b, mn_bench_check *c) {
    const int L = o->turn_tokens, C = o->width, H = o->heads, V = o->vocab, S = o->slots + L;
    const int N = o->batch * S, NT = o->batch * L, M = o->batch * o->slots, R = check_rows(o);
    const int RM = check_slot_rows(o), RT = check_token_rows(o);
    float *x = b->fwd.x, *y = b->fwd.y, *w = b->fwd.w, *bias = b->fwd.bias, *mean = b->fwd.mean, *rstd = b->fwd.rstd;
    float *att = b->fwd.att, *wte = b->fwd.wte, *logits = b->fwd.logits, *losses = b->fwd.losses;
    float *weights = b->fwd.weights, *gate_w = b->fwd.gate_w, *r = b->fwd.r, *u = b->fwd.u, *z = b->fwd.z;
    int32_t *targets = b->fwd.targets, *valid = b->fwd.valid;
    const size_t RC = (size_t)R * C;
    mn_status st = MN_OK;
    MN_OP(&b->ex, layernorm_forward, y, mean, rstd, x, bias, bias, N, C);
    st = check_op(b, c, "layernorm fwd", y, RC, (check_input[]){{x, RC}, {bias, C}}, 2, cpu_layernorm, o);
    if (st == MN_OK) {
        MN_OP(&b->ex, linear_forward, y, x, w, bias, N, C, 4 * C);
        st = check_op(b, c, "linear fc fwd", y, 4 * RC, (check_input[]){{x, RC}, {w, (size_t)C * 4 * C}, {bias, 4 * (size_t)C}},
                      3, cpu_linear_fc, o);
    }
    if (st == MN_OK) {
        MN_OP(&b->ex, attention_forward, y, att, x, valid, o->batch, S, C, H, 0);
        st = check_op(b, c, "attention fwd", y, (size_t)S * C, (check_input[]){{x, (size_t)S * 3 * C}}, 1, cpu_attention,
                      o);
    }
    if (st == MN_OK) {
        MN_OP(&b->ex, gelu_forward, y, x, 4 * (size_t)N * C);
        st = check_op(b, c, "gelu fwd", y, 4 * RC, (check_input[]){{x, 4 * RC}}, 1, cpu_gelu, o);
    }
    if (st == MN_OK) {
        MN_OP(&b->ex, lm_head_forward, logits, x, wte, NT, C, V);
        st = check_op(b, c, "lm_head fwd", logits, (size_t)RT * V, (check_input[]){{x, (size_t)RT * C}, {wte, (size_t)V * C}},
                      2, cpu_lm_head, o);
    }
    if (st == MN_OK) {
        MN_OP(&b->ex, crossentropy_forward, losses, logits, targets, weights, NT, V);
        st = check_op(b, c, "crossentropy fwd", losses, (size_t)RT,
                      (check_input[]){{logits, (size_t)RT * V}, {targets, (size_t)RT}, {weights, (size_t)RT}}, 3,
                      cpu_crossentropy, o);
    }
    if (st == MN_OK) {
        MN_OP(&b->ex, gated_update_forward, z, y, r, u, gate_w, bias, M, C);
        st = check_op(b, c, "gated update fwd", z, (size_t)RM * C,
                      (check_input[]){{r, (size_t)RM * C}, {u, (size_t)RM * C}, {gate_w, 2 * (size_t)C * C}, {bias, (size_t)C}},
                      4, cpu_gated_update, o);
    }
    return st;
}

mn_status mn_bench_ops(const mn_bench_ops_options *o, void (*report)(void *ctx, const mn_bench_op *op), void *ctx,
                       mn_bench_check *check) {
    if (!o || !report)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_bench_ops: NULL argument");
    if (o->batch < 1 || o->turn_tokens < 1 || o->slots < 1 || o->width < 1 || o->heads < 1 || o->width % o->heads ||
        o->vocab < 2 || o->reps < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "bench-ops: need positive sizes and heads dividing the width");
    bench_state b = {.reps = o->reps, .report = report, .ctx = ctx};
    mn_bench_check unused, *c = check ? check : &unused;
    *c = (mn_bench_check){0, 0.0, check_bound(o->matmul)};
    const mn_backend *be = NULL;
    mn_status st = bench_backend(o->backend, o->device, &be);
    if (st == MN_OK)
        st = mn_exec_open_backend(be, &b.ex);
    if (st == MN_OK)
        st = b.ex.be->set_matmul(b.ex.ctx, o->matmul);
    if (st == MN_OK)
        st = time_ops(o, &b);
    if (st == MN_OK && be->device != MN_DEVICE_CPU)
        st = check_ops(o, &b, c);
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
    float *before = malloc(3 * st * sizeof(float)), *after = malloc(st * sizeof(float));
    mn_status s = MN_OK;
    if (!tokens || !offsets || !r || !times || !before || !after) {
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
    const int sample[3] = {0, sessions / 2, sessions - 1}; /* their states before the timed call */
    for (int i = 0; i < 3 && s == MN_OK; i++)
        memcpy(before + i * st, r + (size_t)sample[i] * st, st * sizeof(float));
    double t0 = mn_clock_s();
    if (s == MN_OK)
        s = mn_update_batch(m, sessions, tokens, offsets, r, r);
    res->batch_s = mn_clock_s() - t0;
    /* the check: the same three updates on the CPU */
    if (s == MN_OK && m->exec.be->device != MN_DEVICE_CPU) {
        s = mn_model_set_device(m, MN_DEVICE_CPU);
        for (int i = 0; i < 3 && s == MN_OK; i++) {
            s = mn_update(m, tokens + (size_t)sample[i] * n_tokens, n_tokens, before + i * st, after);
            if (s == MN_OK)
                s = check_sample(&res->check, "a batched update's new state", r + (size_t)sample[i] * st, after, st);
        }
    }
done:
    free(tokens), free(offsets), free(r), free(times), free(before), free(after);
    return s;
}

mn_status mn_bench_update(const mn_bench_update_options *o, mn_bench_update_result *r) {
    if (!o || !r)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_bench_update: NULL argument");
    if (o->config.max_turn_tokens < 1 || o->sessions < 1 || o->reps < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "bench-update: need turn tokens, sessions and reps >= 1");
    memset(r, 0, sizeof *r);
    r->check.bound = check_bound(o->matmul);
    mn_model *m = NULL;
    mn_status st = bench_model(&o->config, o->backend, o->device, o->matmul, &m);
    if (st == MN_OK)
        st = update_timings(o, m, r);
    mn_model_free(m);
    return st;
}

/* ---------------------------------------------------------------- the session pool */
typedef struct {
    int32_t *slots, *tokens; /* (rounds + 1, batch), (rounds + 1, batch, N) */
    int64_t *offsets;        /* (rounds + 1, batch + 1), each round's from 0 */
    float *states;           /* (batch, k, C) host states of the batched and single paths */
    float *before, *after;   /* the check's three states */
} pool_bench_data;

/* Round q's turns: slots (q batch + i) mod P, lengths uniform in 1..N, random tokens. */
static mn_status pool_bench_data_make(const mn_bench_pool_options *o, size_t state, pool_bench_data *d) {
    const int N = o->config.max_turn_tokens, R = o->rounds + 1, B = o->batch;
    d->slots = malloc((size_t)R * B * sizeof(int32_t));
    d->tokens = malloc((size_t)R * B * N * sizeof(int32_t));
    d->offsets = malloc((size_t)R * (B + 1) * sizeof(int64_t));
    d->states = malloc((size_t)B * state * sizeof(float));
    d->before = malloc(3 * state * sizeof(float));
    d->after = malloc(state * sizeof(float));
    if (!d->slots || !d->tokens || !d->offsets || !d->states || !d->before || !d->after)
        return mn_fail(MN_ERR_NOMEM, "bench pool: out of memory for %d rounds of %d turns", R, B);
    random_tokens(d->tokens, (size_t)R * B * N, o->config.vocab_size, 4242);
    uint32_t x = 77;
    for (int q = 0; q < R; q++) {
        int64_t *off = d->offsets + (size_t)q * (B + 1);
        off[0] = 0;
        for (int i = 0; i < B; i++) {
            x = x * 1664525u + 1013904223u;
            off[i + 1] = off[i] + 1 + (int64_t)((x >> 8) % (uint32_t)N);
            d->slots[(size_t)q * B + i] = (int32_t)(((int64_t)q * B + i) % o->slots);
        }
    }
    return MN_OK;
}

static void pool_bench_data_free(pool_bench_data *d) {
    free(d->slots), free(d->tokens), free(d->offsets), free(d->states), free(d->before), free(d->after);
}

#define ROUND_TOKENS(d, o, q) ((d)->tokens + (size_t)(q) * (o)->batch * (o)->config.max_turn_tokens)
#define ROUND_OFFSETS(d, o, q) ((d)->offsets + (size_t)(q) * ((o)->batch + 1))

/* The three sampled sessions of the last round, replayed on a CPU copy of the model. */
static mn_status pool_bench_check(const mn_bench_pool_options *o, mn_model *m, mn_session_pool *pool,
                                  pool_bench_data *d, mn_bench_pool_result *res) {
    const size_t state = mn_state_floats(m);
    const int q = o->rounds, sample[3] = {0, o->batch / 2, o->batch - 1};
    const int32_t *tokens = ROUND_TOKENS(d, o, q);
    const int64_t *off = ROUND_OFFSETS(d, o, q);
    mn_model *cpu = NULL;
    mn_status s = mn_model_create(&o->config, &cpu);
    if (s == MN_OK)
        memcpy(mn_model_params(cpu), mn_model_params(m), mn_model_num_params(m) * sizeof(float));
    for (int i = 0; i < 3 && s == MN_OK; i++) {
        int e = sample[i];
        s = mn_update(cpu, tokens + off[e], (int)(off[e + 1] - off[e]), d->before + (size_t)i * state, d->after);
        if (s == MN_OK)
            s = mn_session_pool_read(pool, d->slots[(size_t)q * o->batch + e], d->states, NULL);
        if (s == MN_OK)
            s = check_sample(&res->check, "a pooled update's new state", d->states, d->after, state);
    }
    mn_model_free(cpu);
    return s;
}

static mn_status pool_timings(const mn_bench_pool_options *o, mn_model *m, mn_session_pool *pool,
                              pool_bench_data *d, mn_bench_pool_result *res) {
    const size_t state = mn_state_floats(m);
    const int B = o->batch, R = o->rounds;
    mn_status s = mn_session_pool_update(pool, B, d->slots, ROUND_TOKENS(d, o, 0), ROUND_OFFSETS(d, o, 0));
    double t0 = mn_clock_s(), tokens = 0;
    for (int q = 1; q < R && s == MN_OK; q++)
        s = mn_session_pool_update(pool, B, d->slots + (size_t)q * B, ROUND_TOKENS(d, o, q), ROUND_OFFSETS(d, o, q));
    double timed = mn_clock_s() - t0;
    const int sample[3] = {0, B / 2, B - 1}; /* the last round's, before it (untimed) */
    for (int i = 0; i < 3 && s == MN_OK; i++)
        s = mn_session_pool_read(pool, d->slots[(size_t)R * B + sample[i]], d->before + (size_t)i * state, NULL);
    t0 = mn_clock_s();
    if (s == MN_OK)
        s = mn_session_pool_update(pool, B, d->slots + (size_t)R * B, ROUND_TOKENS(d, o, R), ROUND_OFFSETS(d, o, R));
    res->pool_rate = (double)R * B / (timed + mn_clock_s() - t0);
    for (int q = 1; q <= R; q++)
        tokens += (double)ROUND_OFFSETS(d, o, q)[B];
    res->mean_tokens = tokens / ((double)R * B);
    /* the same turns through mn_update_batch with host states (R_0), then one mn_update each */
    for (int i = 0; i < B && s == MN_OK; i++)
        s = mn_initial_state(m, d->states + (size_t)i * state);
    if (s == MN_OK)
        s = mn_update_batch(m, B, ROUND_TOKENS(d, o, 0), ROUND_OFFSETS(d, o, 0), d->states, d->states); /* warm-up */
    t0 = mn_clock_s();
    for (int q = 1; q <= R && s == MN_OK; q++)
        s = mn_update_batch(m, B, ROUND_TOKENS(d, o, q), ROUND_OFFSETS(d, o, q), d->states, d->states);
    res->batch_rate = (double)R * B / (mn_clock_s() - t0);
    t0 = mn_clock_s();
    for (int c = 0; c < o->singles && s == MN_OK; c++) {
        const int q = 1 + (c / B) % R, i = c % B;
        const int64_t *off = ROUND_OFFSETS(d, o, q);
        s = mn_update(m, ROUND_TOKENS(d, o, q) + off[i], (int)(off[i + 1] - off[i]), d->states + (size_t)i * state,
                      d->states + (size_t)i * state);
    }
    res->single_rate = o->singles / (mn_clock_s() - t0);
    return s;
}

mn_status mn_bench_pool(const mn_bench_pool_options *o, mn_bench_pool_result *r) {
    if (!o || !r)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_bench_pool: NULL argument");
    if (o->slots < 1 || o->batch < 1 || o->batch > o->slots || o->rounds < 1 || o->singles < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "bench pool: need 1 <= batch (%d) <= sessions (%d), rounds and singles >= 1",
                       o->batch, o->slots);
    memset(r, 0, sizeof *r);
    r->check.bound = check_bound(o->matmul);
    mn_model *m = NULL;
    mn_session_pool *pool = NULL;
    pool_bench_data d = {0};
    mn_status st = bench_model(&o->config, o->backend, o->device, o->matmul, &m);
    if (st == MN_OK)
        st = pool_bench_data_make(o, mn_state_floats(m), &d);
    if (st == MN_OK)
        st = mn_session_pool_create(m, o->slots, &pool);
    if (st == MN_OK)
        st = pool_timings(o, m, pool, &d, r);
    if (st == MN_OK)
        st = pool_bench_check(o, m, pool, &d, r);
    if (st == MN_OK && o->store) {
        st = mn_session_pool_attach(pool, o->store, MN_STORE_NO_SYNC);
        char id[32];
        int found = 0;
        for (int s = 0; s < o->slots && st == MN_OK; s++) {
            snprintf(id, sizeof id, "bench-%d", s);
            st = mn_session_pool_load(pool, s, id, &found);
        }
        double t0 = mn_clock_s();
        if (st == MN_OK)
            st = mn_session_pool_flush(pool);
        r->sync_s = mn_clock_s() - t0;
    }
    mn_status closed = mn_session_pool_close(pool);
    if (st == MN_OK)
        st = closed;
    pool_bench_data_free(&d);
    mn_model_free(m);
    return st;
}
