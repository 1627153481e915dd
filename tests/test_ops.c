/* CPU ops (src/cpu/ops.h) against naive double-precision references written here.
 *
 * Forward: each fp32 op against a plain-loop double reference on random inputs of odd sizes.
 * Backward: every gradient against central finite differences of the double reference with
 * the projection loss L = sum(out * G), G random (so dL/dout = G). Gradient buffers start
 * from random values, so the checks also prove that backward accumulates (+=).
 * Determinism: the same call twice gives the same bits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <float.h>
#include <math.h>

#include <cmocka.h>
#include <omp.h>

#include "close.h"
#include "cpu/ops.h"
#include "cpu/team.h"

/* ------------------------------------------------------------------ helpers */
/* The team the ops run on: OpenMP's default, as the CPU backend passes for a handle left at 0. */
static int team(void) { return omp_get_max_threads(); }

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static void rng_reset(uint64_t seed) { rng_state = seed ? seed : 1; }

static double rng_uniform(void) {   // [0, 1)
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}

static float *random_floats(size_t n, double lo, double hi) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * rng_uniform());
    return x;
}

static float *copy_floats(const float *src, size_t n) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(x);
    memcpy(x, src, n * sizeof(float));
    return x;
}

static float *zero_floats(size_t n) {
    float *x = calloc(n ? n : 1, sizeof(float));
    assert_non_null(x);
    return x;
}

static double *to_double(const float *src, size_t n) {
    double *x = malloc((n ? n : 1) * sizeof(double));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = (double)src[i];
    return x;
}

static double *zero_doubles(size_t n) {
    double *x = calloc(n ? n : 1, sizeof(double));
    assert_non_null(x);
    return x;
}

/* Forward check: fp32 result against the double reference. fp32 rounding of sums over at
 * most a few hundred O(1) terms stays far below 1e-5 of the output scale. */
static void expect_close_forward(const char *what, const float *got, const double *want, size_t n,
                                 double rtol) {
    double scale = 0.0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        if (err > rtol * fabs(want[i]) + rtol * 1e-1 * scale + 1e-12) {
            fail_msg("%s[%zu]: got %.9g, want %.9g", what, i, (double)got[i], want[i]);
        }
    }
}

/* Gradient check: analytic = after - before (the op must ADD into the buffer), numeric from
 * finite differences of the double reference (accurate to ~1e-9). Tolerance: 1e-3 of each
 * element plus 1e-4 of the tensor's largest entry. fp32 analytic gradients are accurate to
 * ~1e-6 relative, so this leaves three orders of margin, while a wrong index, a missing term
 * or an overwrite instead of += gives errors of order 1. */
static void expect_close_grad(const char *what, const float *after, const float *before,
                              const double *numeric, size_t n) {
    double scale = 0.0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(numeric[i]));
    for (size_t i = 0; i < n; i++) {
        double analytic = (double)after[i] - (double)before[i];
        double err = fabs(analytic - numeric[i]);
        if (err > 1e-3 * fabs(numeric[i]) + 1e-4 * scale + 1e-7) {
            fail_msg("%s[%zu]: analytic %.9g, numeric %.9g", what, i, analytic, numeric[i]);
        }
    }
}

typedef double (*loss_fn)(void *ctx);

/* Central differences of loss with respect to every element of x (which loss reads). */
static double *numeric_grad(double *x, size_t n, loss_fn loss, void *ctx) {
    const double h = 1e-5;   // truncation ~h^2 = 1e-10, cancellation ~1e-16 * |L| / h ~ 1e-10
    double *grad = zero_doubles(n);
    for (size_t i = 0; i < n; i++) {
        double old = x[i];
        x[i] = old + h;
        double lp = loss(ctx);
        x[i] = old - h;
        double lm = loss(ctx);
        x[i] = old;
        grad[i] = (lp - lm) / (2.0 * h);
    }
    return grad;
}

static void check_grad(const char *what, double *x, size_t n, loss_fn loss, void *ctx,
                       const float *after, const float *before) {
    double *numeric = numeric_grad(x, n, loss, ctx);
    expect_close_grad(what, after, before, numeric, n);
    free(numeric);
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void expect_same_bits(const char *what, const float *a, const float *b, size_t n) {
    if (memcmp(a, b, n * sizeof(float)) != 0)
        fail_msg("%s: two identical calls gave different bits", what);
}

/* ------------------------------------------------------------------ embedding */

typedef struct {
    int N, C;
    const int32_t *ids;
    double *table, *out, *G;
} embedding_ctx;

static void ref_embedding(double *out, const int32_t *ids, const double *table, int N, int C) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            out[n * C + c] = table[ids[n] * C + c];
}

static double embedding_loss(void *p) {
    embedding_ctx *e = p;
    ref_embedding(e->out, e->ids, e->table, e->N, e->C);
    return dot(e->out, e->G, (size_t)e->N * e->C);
}

static void test_embedding(void **state) {
    (void)state;
    rng_reset(11);
    enum { N = 7, C = 12, V = 37 };
    const int32_t ids[N] = {5, 0, 36, 5, 17, 5, 0};   // repeats exercise the scatter-add
    float *table = random_floats(V * C, -1, 1);
    float *out = zero_floats(N * C);
    mn_embedding_forward(out, ids, table, N, C, team());
    for (int n = 0; n < N; n++)
        assert_memory_equal(out + n * C, table + ids[n] * C, C * sizeof(float));

    float *G = random_floats(N * C, -1, 1);
    float *dtable = random_floats(V * C, -1, 1);
    float *dtable0 = copy_floats(dtable, V * C);
    mn_embedding_backward(dtable, G, ids, N, C, team());

    embedding_ctx e = {N, C, ids, to_double(table, V * C), zero_doubles(N * C), to_double(G, N * C)};
    check_grad("embedding dtable", e.table, V * C, embedding_loss, &e, dtable, dtable0);

    free(e.table); free(e.out); free(e.G);
    free(table); free(out); free(G); free(dtable); free(dtable0);
}

/* ------------------------------------------------------------------ layernorm */

typedef struct {
    int N, C;
    double *inp, *weight, *bias, *out, *mean, *rstd, *G;
} layernorm_ctx;

static void ref_layernorm(double *out, double *mean, double *rstd, const double *inp,
                          const double *weight, const double *bias, int N, int C) {
    for (int n = 0; n < N; n++) {
        const double *x = inp + n * C;
        double m = 0.0, var = 0.0;
        for (int c = 0; c < C; c++)
            m += x[c];
        m /= C;
        for (int c = 0; c < C; c++)
            var += (x[c] - m) * (x[c] - m);
        var /= C;   // biased, as PyTorch
        double s = 1.0 / sqrt(var + 1e-5);
        for (int c = 0; c < C; c++)
            out[n * C + c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

static double layernorm_loss(void *p) {
    layernorm_ctx *e = p;
    ref_layernorm(e->out, e->mean, e->rstd, e->inp, e->weight, e->bias, e->N, e->C);
    return dot(e->out, e->G, (size_t)e->N * e->C);
}

static void test_layernorm(void **state) {
    (void)state;
    rng_reset(12);
    enum { N = 7, C = 12 };
    float *inp = random_floats(N * C, -1, 1);
    for (int i = 0; i < N * C; i++)
        inp[i] = 0.7f + 1.9f * inp[i];   // nonzero mean and non-unit variance
    float *weight = random_floats(C, 0.5, 1.5);
    float *bias = random_floats(C, -0.5, 0.5);
    float *out = zero_floats(N * C), *mean = zero_floats(N), *rstd = zero_floats(N);
    mn_layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, team());

    layernorm_ctx e = {N, C, to_double(inp, N * C), to_double(weight, C), to_double(bias, C),
                       zero_doubles(N * C), zero_doubles(N), zero_doubles(N), NULL};
    ref_layernorm(e.out, e.mean, e.rstd, e.inp, e.weight, e.bias, N, C);
    expect_close_forward("layernorm out", out, e.out, N * C, 1e-5);
    expect_close_forward("layernorm mean", mean, e.mean, N, 1e-5);
    expect_close_forward("layernorm rstd", rstd, e.rstd, N, 1e-5);

    float *G = random_floats(N * C, -1, 1);
    e.G = to_double(G, N * C);
    float *dinp = random_floats(N * C, -1, 1), *dinp0 = copy_floats(dinp, N * C);
    float *dweight = random_floats(C, -1, 1), *dweight0 = copy_floats(dweight, C);
    float *dbias = random_floats(C, -1, 1), *dbias0 = copy_floats(dbias, C);
    mn_layernorm_backward(dinp, dweight, dbias, G, inp, weight, mean, rstd, N, C, team());

    check_grad("layernorm dinp", e.inp, N * C, layernorm_loss, &e, dinp, dinp0);
    check_grad("layernorm dweight", e.weight, C, layernorm_loss, &e, dweight, dweight0);
    check_grad("layernorm dbias", e.bias, C, layernorm_loss, &e, dbias, dbias0);

    free(e.inp); free(e.weight); free(e.bias); free(e.out); free(e.mean); free(e.rstd); free(e.G);
    free(inp); free(weight); free(bias); free(out); free(mean); free(rstd); free(G);
    free(dinp); free(dinp0); free(dweight); free(dweight0); free(dbias); free(dbias0);
}

/* ------------------------------------------------------------------ linear */

typedef struct {
    int N, IC, OC;
    double *inp, *weight, *bias, *out, *G;   // bias may be NULL
} linear_ctx;

static void ref_linear(double *out, const double *inp, const double *weight, const double *bias,
                       int N, int IC, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int i = 0; i < IC; i++)
                s += inp[n * IC + i] * weight[i * OC + o];
            out[n * OC + o] = s;
        }
}

static double linear_loss(void *p) {
    linear_ctx *e = p;
    ref_linear(e->out, e->inp, e->weight, e->bias, e->N, e->IC, e->OC);
    return dot(e->out, e->G, (size_t)e->N * e->OC);
}

static void run_linear_case(int with_bias) {
    enum { N = 7, IC = 13, OC = 19 };
    float *inp = random_floats(N * IC, -1, 1);
    float *weight = random_floats(IC * OC, -1, 1);
    float *bias = with_bias ? random_floats(OC, -1, 1) : NULL;
    float *out = random_floats(N * OC, -9, 9);   // garbage: forward must overwrite it
    mn_linear_forward(out, inp, weight, bias, N, IC, OC, team());

    linear_ctx e = {N, IC, OC, to_double(inp, N * IC), to_double(weight, IC * OC),
                    with_bias ? to_double(bias, OC) : NULL, zero_doubles(N * OC), NULL};
    ref_linear(e.out, e.inp, e.weight, e.bias, N, IC, OC);
    expect_close_forward("linear out", out, e.out, N * OC, 1e-5);

    float *G = random_floats(N * OC, -1, 1);
    e.G = to_double(G, N * OC);
    float *dweight = random_floats(IC * OC, -1, 1), *dweight0 = copy_floats(dweight, IC * OC);
    if (with_bias) {
        float *dinp = random_floats(N * IC, -1, 1), *dinp0 = copy_floats(dinp, N * IC);
        float *dbias = random_floats(OC, -1, 1), *dbias0 = copy_floats(dbias, OC);
        mn_linear_backward(dinp, dweight, dbias, G, inp, weight, N, IC, OC, team());
        check_grad("linear dinp", e.inp, N * IC, linear_loss, &e, dinp, dinp0);
        check_grad("linear dbias", e.bias, OC, linear_loss, &e, dbias, dbias0);
        free(dinp); free(dinp0); free(dbias); free(dbias0);
    } else {
        // the NULL paths: no input gradient, no bias gradient
        mn_linear_backward(NULL, dweight, NULL, G, inp, weight, N, IC, OC, team());
    }
    check_grad("linear dweight", e.weight, IC * OC, linear_loss, &e, dweight, dweight0);

    free(e.inp); free(e.weight); free(e.bias); free(e.out); free(e.G);
    free(inp); free(weight); free(bias); free(out); free(G); free(dweight); free(dweight0);
}

static void test_linear(void **state) {
    (void)state;
    rng_reset(13);
    run_linear_case(1);
    run_linear_case(0);
}

/* ------------------------------------------------------------------ lm head */

typedef struct {
    int N, C, V;
    double *inp, *wte, *out, *G;
} lm_head_ctx;

static void ref_lm_head(double *logits, const double *inp, const double *wte, int N, int C, int V) {
    for (int n = 0; n < N; n++)
        for (int v = 0; v < V; v++) {
            double s = 0.0;
            for (int c = 0; c < C; c++)
                s += inp[n * C + c] * wte[v * C + c];
            logits[n * V + v] = s;
        }
}

static double lm_head_loss(void *p) {
    lm_head_ctx *e = p;
    ref_lm_head(e->out, e->inp, e->wte, e->N, e->C, e->V);
    return dot(e->out, e->G, (size_t)e->N * e->V);
}

static void test_lm_head(void **state) {
    (void)state;
    rng_reset(14);
    enum { N = 7, C = 12, V = 37 };
    float *inp = random_floats(N * C, -1, 1);
    float *wte = random_floats(V * C, -1, 1);
    float *logits = random_floats(N * V, -9, 9);
    mn_lm_head_forward(logits, inp, wte, N, C, V, team());

    lm_head_ctx e = {N, C, V, to_double(inp, N * C), to_double(wte, V * C), zero_doubles(N * V), NULL};
    ref_lm_head(e.out, e.inp, e.wte, N, C, V);
    expect_close_forward("lm_head logits", logits, e.out, N * V, 1e-5);

    float *G = random_floats(N * V, -1, 1);
    e.G = to_double(G, N * V);
    float *dinp = random_floats(N * C, -1, 1), *dinp0 = copy_floats(dinp, N * C);
    float *dwte = random_floats(V * C, -1, 1), *dwte0 = copy_floats(dwte, V * C);
    mn_lm_head_backward(dinp, dwte, G, inp, wte, N, C, V, team());
    check_grad("lm_head dinp", e.inp, N * C, lm_head_loss, &e, dinp, dinp0);
    check_grad("lm_head dwte", e.wte, V * C, lm_head_loss, &e, dwte, dwte0);

    free(e.inp); free(e.wte); free(e.out); free(e.G);
    free(inp); free(wte); free(logits); free(G); free(dinp); free(dinp0); free(dwte); free(dwte0);
}

/* The head's few-rows kernel (N <= MN_LM_HEAD_STREAM_ROWS) against the product it replaces
 * (mn_sgemm, as for more rows), for row counts on both sides of the threshold, vocabularies
 * that are and are not a multiple of the kernel's 8-row blocks, and several widths. Both sum
 * the same C products (OpenBLAS's kernels may group them otherwise on another machine), so an
 * element may differ by at most 2 gamma_C sum_c |x_c w_c| (gamma_C = C eps / (1 - C eps), the
 * classic bound of a float sum of C terms); a wrong row, column or missing term is off by O(1). */
static void test_lm_head_few_rows(void **state) {
    (void)state;
    rng_reset(41);
    const int T = MN_LM_HEAD_STREAM_ROWS, Vs[2] = {203, 64}, Cs[3] = {64, 21, 5};
    const int rows[6] = {1, 2, 5, T - 1, T, T + 1};
    for (int vi = 0; vi < 2; vi++)
        for (int ci = 0; ci < 3; ci++)
            for (int ri = 0; ri < 6; ri++) {
                const int V = Vs[vi], C = Cs[ci], N = rows[ri];
                float *inp = random_floats((size_t)N * C, -1, 1), *wte = random_floats((size_t)V * C, -1, 1);
                float *got = random_floats((size_t)N * V, -9, 9), *want = random_floats((size_t)N * V, -9, 9);
                mn_lm_head_forward(got, inp, wte, N, C, V, team());
                mn_sgemm(0, 1, N, V, C, 1.0f, inp, C, wte, C, 0.0f, want, V, team());
                const double gamma = C * (double)FLT_EPSILON / (1.0 - C * (double)FLT_EPSILON);
                for (int n = 0; n < N; n++)
                    for (int v = 0; v < V; v++) {
                        double abs_sum = 0.0;
                        for (int c = 0; c < C; c++)
                            abs_sum += fabs((double)inp[n * C + c] * wte[v * C + c]);
                        double diff = fabs((double)got[n * V + v] - want[n * V + v]);
                        if (diff > 2.0 * gamma * abs_sum)
                            fail_msg("lm_head N %d C %d V %d logits[%d][%d]: %.9g, product %.9g", N, C, V, n, v,
                                     (double)got[n * V + v], (double)want[n * V + v]);
                    }
                free(inp); free(wte); free(got); free(want);
            }
}

/* ------------------------------------------------------------------ attention */

typedef struct {
    int B, S, C, H, causal;
    const int32_t *valid;
    double *qkv, *out, *att, *G;
} attention_ctx;

/* Straight from the definition: scores q.k / sqrt(hs) over allowed keys, softmax, sum of v. */
static void ref_attention(double *out, double *att, const double *qkv, const int32_t *valid,
                          int B, int S, int C, int H, int causal) {
    int hs = C / H;
    double scale = 1.0 / sqrt((double)hs);
    memset(out, 0, (size_t)B * S * C * sizeof(double));
    memset(att, 0, (size_t)B * H * S * S * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int s = 0; s < valid[b]; s++) {
                double *a = att + (((size_t)b * H + h) * S + s) * S;
                double maxval = -INFINITY;
                for (int t = 0; t < valid[b]; t++) {
                    if (causal && t > s)
                        continue;
                    double d = 0.0;
                    for (int i = 0; i < hs; i++)
                        d += qkv[(b * S + s) * 3 * C + h * hs + i] *
                             qkv[(b * S + t) * 3 * C + C + h * hs + i];
                    a[t] = d * scale;
                    maxval = fmax(maxval, a[t]);
                }
                double sum = 0.0;
                for (int t = 0; t < valid[b]; t++) {
                    if (causal && t > s)
                        continue;
                    a[t] = exp(a[t] - maxval);
                    sum += a[t];
                }
                for (int t = 0; t < valid[b]; t++)
                    a[t] /= sum;   // masked entries are 0 already
                for (int t = 0; t < S; t++)
                    for (int i = 0; i < hs; i++)
                        out[(b * S + s) * C + h * hs + i] +=
                            a[t] * qkv[(b * S + t) * 3 * C + 2 * C + h * hs + i];
            }
}

static double attention_loss(void *p) {
    attention_ctx *e = p;
    ref_attention(e->out, e->att, e->qkv, e->valid, e->B, e->S, e->C, e->H, e->causal);
    return dot(e->out, e->G, (size_t)e->B * e->S * e->C);
}

static void run_attention_case(int causal) {
    enum { B = 3, S = 9, C = 12, H = 3 };
    const int32_t valid[B] = {S, 5, 1};   // full, padded, a single valid position
    size_t n_qkv = (size_t)B * S * 3 * C, n_out = (size_t)B * S * C, n_att = (size_t)B * H * S * S;
    float *qkv = random_floats(n_qkv, -1.5, 1.5);
    float *out = random_floats(n_out, -9, 9);   // garbage: forward must overwrite every entry
    float *att = random_floats(n_att, -9, 9);
    mn_attention_forward(out, att, qkv, valid, B, S, C, H, causal, team());

    attention_ctx e = {B, S, C, H, causal, valid, to_double(qkv, n_qkv), zero_doubles(n_out),
                       zero_doubles(n_att), NULL};
    ref_attention(e.out, e.att, e.qkv, valid, B, S, C, H, causal);
    expect_close_forward("attention out", out, e.out, n_out, 1e-5);
    expect_close_forward("attention att", att, e.att, n_att, 1e-5);
    // masked probabilities and padding query rows are exactly zero, not merely small
    for (size_t i = 0; i < n_att; i++)
        if (e.att[i] == 0.0)
            assert_true(att[i] == 0.0f);
    for (int b = 0; b < B; b++)
        for (int s = valid[b]; s < S; s++)
            for (int c = 0; c < C; c++)
                assert_true(out[(b * S + s) * C + c] == 0.0f);

    float *G = random_floats(n_out, -1, 1);   // nonzero on padding rows too: must be ignored
    e.G = to_double(G, n_out);
    float *dqkv = random_floats(n_qkv, -1, 1), *dqkv0 = copy_floats(dqkv, n_qkv);
    mn_attention_backward(dqkv, G, qkv, att, valid, B, S, C, H, causal, team());
    check_grad(causal ? "causal attention dqkv" : "bidirectional attention dqkv", e.qkv, n_qkv,
               attention_loss, &e, dqkv, dqkv0);
    // padding positions get no gradient at all (q, k and v), bit for bit
    for (int b = 0; b < B; b++)
        for (int s = valid[b]; s < S; s++)
            assert_memory_equal(dqkv + (size_t)(b * S + s) * 3 * C,
                                dqkv0 + (size_t)(b * S + s) * 3 * C, 3 * C * sizeof(float));

    free(e.qkv); free(e.out); free(e.att); free(e.G);
    free(qkv); free(out); free(att); free(G); free(dqkv); free(dqkv0);
}

static void test_attention_causal(void **state) {
    (void)state;
    rng_reset(15);
    run_attention_case(1);
}

static void test_attention_bidirectional(void **state) {
    (void)state;
    rng_reset(16);
    run_attention_case(0);
}

/* Large scores must not overflow: the softmax subtracts the row max. */
static void test_attention_large_scores(void **state) {
    (void)state;
    rng_reset(17);
    enum { B = 1, S = 5, C = 8, H = 2 };
    const int32_t valid[B] = {4};
    float *qkv = random_floats((size_t)B * S * 3 * C, 20, 30);   // q.k / sqrt(hs) ~ 1000
    float *out = zero_floats((size_t)B * S * C), *att = zero_floats((size_t)B * H * S * S);
    mn_attention_forward(out, att, qkv, valid, B, S, C, H, 0, team());
    for (int i = 0; i < B * S * C; i++)
        assert_true(isfinite(out[i]));
    for (int h = 0; h < H; h++)
        for (int s = 0; s < valid[0]; s++) {
            double sum = 0.0;
            for (int t = 0; t < S; t++)
                sum += att[(h * S + s) * S + t];
            assert_true(fabs(sum - 1.0) < 1e-5);
        }
    free(qkv); free(out); free(att);
}

/* The rows form equals the same rows of the causal forward (cached inference gives the numbers
 * of a whole pass), across the forward's row blocks of 64, with padding rows 0: to float
 * rounding, as OpenBLAS may sum a product row in another order when the call has another row
 * count (bit for bit on an AMD EPYC, not on an Intel Xeon with AVX-512, Haswell kernels both). */
#define ROWS_TOL 1e-6f
static int rows_close(const float *want, const float *got, int n) {
    for (int j = 0; j < n; j++)
        if (!close_to(got[j], want[j], ROWS_TOL))
            return 0;
    return 1;
}
static void test_attention_rows_equal_forward(void **state) {
    (void)state;
    rng_reset(23);
    enum { B = 2, S = 150, C = 48, H = 4 };
    const int32_t valid[B] = {150, 97};
    float *qkv = random_floats((size_t)B * S * 3 * C, -1, 1);
    float *out = zero_floats((size_t)B * S * C), *att = zero_floats((size_t)B * H * S * S);
    mn_attention_forward(out, att, qkv, valid, B, S, C, H, 1, team());
    /* {q0, m}: the last row, rows of the last block, rows across two block boundaries, every
     * row, and rows past the second sequence's 97 valid ones (padding there) */
    const int rows[][2] = {{149, 1}, {140, 10}, {60, 70}, {0, 150}, {90, 20}, {100, 5}};
    for (size_t c = 0; c < sizeof rows / sizeof rows[0]; c++) {
        const int q0 = rows[c][0], m = rows[c][1];
        float *r_out = random_floats((size_t)B * m * C, -9, 9), *r_att = random_floats((size_t)B * H * m * S, -9, 9);
        mn_attention_rows_forward(r_out, r_att, qkv, valid, B, S, C, H, q0, m, team());
        for (int b = 0; b < B; b++)
            for (int i = 0; i < m; i++) {
                const float *want = out + ((size_t)b * S + q0 + i) * C, *got = r_out + ((size_t)b * m + i) * C;
                if (!rows_close(want, got, C))
                    fail_msg("rows %d..%d: sequence %d row %d differs from the forward's", q0, q0 + m - 1, b, q0 + i);
                for (int h = 0; h < H; h++)
                    if (!rows_close(att + (((size_t)b * H + h) * S + q0 + i) * S, r_att + (((size_t)b * H + h) * m + i) * S, S))
                        fail_msg("rows %d..%d: sequence %d head %d att row %d differs", q0, q0 + m - 1, b, h, q0 + i);
            }
        free(r_out), free(r_att);
    }
    free(qkv), free(out), free(att);
}

/* ------------------------------------------------------------------ gelu */

typedef struct {
    size_t N;
    double *inp, *out, *G;
} gelu_ctx;

static void ref_gelu(double *out, const double *inp, size_t N) {
    for (size_t i = 0; i < N; i++) {
        double x = inp[i];
        out[i] = 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    }
}

static double gelu_loss(void *p) {
    gelu_ctx *e = p;
    ref_gelu(e->out, e->inp, e->N);
    return dot(e->out, e->G, e->N);
}

static void test_gelu(void **state) {
    (void)state;
    rng_reset(18);
    enum { N = 37 };
    float *inp = random_floats(N, -4, 4);
    float *out = zero_floats(N);
    mn_gelu_forward(out, inp, N, team());
    gelu_ctx e = {N, to_double(inp, N), zero_doubles(N), NULL};
    ref_gelu(e.out, e.inp, N);
    expect_close_forward("gelu out", out, e.out, N, 1e-5);

    float *G = random_floats(N, -1, 1);
    e.G = to_double(G, N);
    float *dinp = random_floats(N, -1, 1), *dinp0 = copy_floats(dinp, N);
    mn_gelu_backward(dinp, G, inp, N, team());
    check_grad("gelu dinp", e.inp, N, gelu_loss, &e, dinp, dinp0);

    free(e.inp); free(e.out); free(e.G);
    free(inp); free(out); free(G); free(dinp); free(dinp0);
}

/* ------------------------------------------------------------------ gated update */

typedef struct {
    int M, C;
    double *r_prev, *u, *gate_w, *gate_b, *r_out, *z, *G;
} gated_ctx;

static void ref_gated_update(double *r_out, double *z, const double *r_prev, const double *u,
                             const double *gate_w, const double *gate_b, int M, int C) {
    for (int m = 0; m < M; m++)
        for (int c = 0; c < C; c++) {
            double pre = gate_b[c];
            for (int j = 0; j < C; j++)
                pre += r_prev[m * C + j] * gate_w[j * C + c] + u[m * C + j] * gate_w[(C + j) * C + c];
            double g = 1.0 / (1.0 + exp(-pre));
            z[m * C + c] = g;
            r_out[m * C + c] = (1.0 - g) * r_prev[m * C + c] + g * u[m * C + c];
        }
}

static double gated_loss(void *p) {
    gated_ctx *e = p;
    ref_gated_update(e->r_out, e->z, e->r_prev, e->u, e->gate_w, e->gate_b, e->M, e->C);
    return dot(e->r_out, e->G, (size_t)e->M * e->C);
}

static void test_gated_update(void **state) {
    (void)state;
    rng_reset(19);
    enum { M = 5, C = 12 };
    float *r_prev = random_floats(M * C, -1, 1);
    float *u = random_floats(M * C, -1, 1);
    float *gate_w = random_floats(2 * C * C, -0.4, 0.4);
    float *gate_b = random_floats(C, -1.5, 0.5);
    float *r_out = zero_floats(M * C), *z = zero_floats(M * C);
    mn_gated_update_forward(r_out, z, r_prev, u, gate_w, gate_b, M, C, team());

    gated_ctx e = {M, C, to_double(r_prev, M * C), to_double(u, M * C), to_double(gate_w, 2 * C * C),
                   to_double(gate_b, C), zero_doubles(M * C), zero_doubles(M * C), NULL};
    ref_gated_update(e.r_out, e.z, e.r_prev, e.u, e.gate_w, e.gate_b, M, C);
    expect_close_forward("gated r_out", r_out, e.r_out, M * C, 1e-5);
    expect_close_forward("gated z", z, e.z, M * C, 1e-5);

    // in place (r_out == r_prev), as mn_update allows: same result
    float *r_inplace = copy_floats(r_prev, M * C), *z_inplace = zero_floats(M * C);
    mn_gated_update_forward(r_inplace, z_inplace, r_inplace, u, gate_w, gate_b, M, C, team());
    assert_memory_equal(r_inplace, r_out, M * C * sizeof(float));

    float *G = random_floats(M * C, -1, 1);
    e.G = to_double(G, M * C);
    float *dr_prev = random_floats(M * C, -1, 1), *dr_prev0 = copy_floats(dr_prev, M * C);
    float *du = random_floats(M * C, -1, 1), *du0 = copy_floats(du, M * C);
    float *dgate_w = random_floats(2 * C * C, -1, 1), *dgate_w0 = copy_floats(dgate_w, 2 * C * C);
    float *dgate_b = random_floats(C, -1, 1), *dgate_b0 = copy_floats(dgate_b, C);
    float *scratch = random_floats(M * C, -9, 9);
    mn_gated_update_backward(dr_prev, du, dgate_w, dgate_b, G, r_prev, u, z, gate_w, scratch, M, C, team());
    check_grad("gated dr_prev", e.r_prev, M * C, gated_loss, &e, dr_prev, dr_prev0);
    check_grad("gated du", e.u, M * C, gated_loss, &e, du, du0);
    check_grad("gated dgate_w", e.gate_w, 2 * C * C, gated_loss, &e, dgate_w, dgate_w0);
    check_grad("gated dgate_b", e.gate_b, C, gated_loss, &e, dgate_b, dgate_b0);

    free(e.r_prev); free(e.u); free(e.gate_w); free(e.gate_b); free(e.r_out); free(e.z); free(e.G);
    free(r_prev); free(u); free(gate_w); free(gate_b); free(r_out); free(z);
    free(r_inplace); free(z_inplace); free(G); free(scratch);
    free(dr_prev); free(dr_prev0); free(du); free(du0);
    free(dgate_w); free(dgate_w0); free(dgate_b); free(dgate_b0);
}

/* ------------------------------------------------------------------ slot write rules */

typedef struct {
    int B, k, C, A;
    double *r_prev, *u, *w, *b, *diag, *r_out, *G;
} slot_ctx;

/* docs/model.md, "Write rules", in doubles: per episode, write w's address row (softmax over the
 * slots, or one-hot), its strength, and r_out = r_prev + sum_w address[w] beta[w] (u_w - address[w] r_prev). */
static void ref_slot_write(double *r_out, const double *r_prev, const double *u, const double *w, const double *b,
                           const double *diag, int B, int k, int C, int A) {
    const int P = A + 1;
    double *address = malloc((size_t)k * k * sizeof(double)), *beta = malloc((size_t)k * sizeof(double));
    for (int e = 0; e < B; e++) {
        const double *R = r_prev + (size_t)e * k * C, *U = u + (size_t)e * k * C;
        for (int q = 0; q < k; q++) {
            double pre[64 + 1];
            for (int p = 0; p < P; p++) {
                pre[p] = b[p];
                for (int c = 0; c < C; c++)
                    pre[p] += U[q * C + c] * w[c * P + p];
            }
            double mx = -1e300, sum = 0;
            for (int j = 0; j < k; j++) {
                double l = A ? pre[j] + (j == q ? diag[q] : 0.0) : 0.0;
                mx = l > mx ? l : mx;
                address[q * k + j] = l;
            }
            for (int j = 0; j < k; j++) {
                address[q * k + j] = A ? exp(address[q * k + j] - mx) : (j == q);
                sum += address[q * k + j];
            }
            for (int j = 0; j < k; j++)
                address[q * k + j] /= sum;
            beta[q] = 1.0 / (1.0 + exp(-pre[A]));
        }
        for (int j = 0; j < k; j++)
            for (int c = 0; c < C; c++) {
                double v = R[j * C + c];
                for (int q = 0; q < k; q++) {
                    double read = 0;
                    for (int i = 0; i < k; i++)
                        read += address[q * k + i] * R[i * C + c];
                    v += address[q * k + j] * beta[q] * (U[q * C + c] - read);
                }
                r_out[((size_t)e * k + j) * C + c] = v;
            }
    }
    free(address);
    free(beta);
}

static double slot_loss(void *p) {
    slot_ctx *e = p;
    ref_slot_write(e->r_out, e->r_prev, e->u, e->w, e->b, e->diag, e->B, e->k, e->C, e->A);
    return dot(e->r_out, e->G, (size_t)e->B * e->k * e->C);
}

/* The per-slot gate (A = 0) and the delta rule (A = k): forward against the doubles, in place,
 * and every gradient (accumulated into nonzero values) against finite differences. */
static void check_slot_write(int A) {
    enum { B = 3, k = 4, C = 7 };
    const int P = A + 1, MC = B * k * C;
    rng_reset(23 + A);
    float *r_prev = random_floats(MC, -1, 1), *u = random_floats(MC, -1, 1);
    float *w = random_floats(C * P, -0.6, 0.6), *b = random_floats(P, -1, 0.5);
    float *diag = A ? random_floats(A, 0.5, 2.5) : NULL;
    const size_t X = (size_t)B * k * (P + C);
    float *r_out = zero_floats(MC), *aux = random_floats(X, -9, 9);
    mn_slot_write_forward(r_out, aux, r_prev, u, w, b, diag, B, k, C, A, team());

    slot_ctx e = {B, k, C, A, to_double(r_prev, MC), to_double(u, MC), to_double(w, C * P), to_double(b, P),
                  A ? to_double(diag, A) : NULL, zero_doubles(MC), NULL};
    ref_slot_write(e.r_out, e.r_prev, e.u, e.w, e.b, e.diag, B, k, C, A);
    expect_close_forward(A ? "delta r_out" : "slot r_out", r_out, e.r_out, MC, 1e-5);

    float *r_inplace = copy_floats(r_prev, MC), *aux2 = zero_floats(X);
    mn_slot_write_forward(r_inplace, aux2, r_inplace, u, w, b, diag, B, k, C, A, team());
    assert_memory_equal(r_inplace, r_out, MC * sizeof(float));

    float *G = random_floats(MC, -1, 1);
    e.G = to_double(G, MC);
    float *dr = random_floats(MC, -1, 1), *dr0 = copy_floats(dr, MC);
    float *du = random_floats(MC, -1, 1), *du0 = copy_floats(du, MC);
    float *dw = random_floats(C * P, -1, 1), *dw0 = copy_floats(dw, C * P);
    float *db = random_floats(P, -1, 1), *db0 = copy_floats(db, P);
    float *dd = A ? random_floats(A, -1, 1) : NULL, *dd0 = A ? copy_floats(dd, A) : NULL;
    float *scratch = random_floats(X, -9, 9);
    mn_slot_write_backward(dr, du, dw, db, dd, G, r_prev, u, aux, w, scratch, B, k, C, A, team());
    check_grad("slot write dr_prev", e.r_prev, MC, slot_loss, &e, dr, dr0);
    check_grad("slot write du", e.u, MC, slot_loss, &e, du, du0);
    check_grad("slot write dwrite_w", e.w, C * P, slot_loss, &e, dw, dw0);
    check_grad("slot write dwrite_b", e.b, P, slot_loss, &e, db, db0);
    if (A)
        check_grad("slot write dwrite_diag", e.diag, A, slot_loss, &e, dd, dd0);

    free(e.r_prev); free(e.u); free(e.w); free(e.b); free(e.diag); free(e.r_out); free(e.G);
    free(r_prev); free(u); free(w); free(b); free(diag); free(r_out); free(aux); free(r_inplace); free(aux2);
    free(G); free(dr); free(dr0); free(du); free(du0); free(dw); free(dw0); free(db); free(db0); free(dd); free(dd0);
    free(scratch);
}

static void test_slot_write_gate(void **state) {
    (void)state;
    check_slot_write(0);
}

static void test_slot_write_delta(void **state) {
    (void)state;
    check_slot_write(4); /* A = k */
}

/* ------------------------------------------------------------------ cross-entropy */

typedef struct {
    int N, V;
    const int32_t *targets;
    const double *weights;
    double scale;
    double *logits, *losses;
} ce_ctx;

static void ref_crossentropy(double *losses, const double *logits, const int32_t *targets,
                             const double *weights, int N, int V) {
    for (int n = 0; n < N; n++) {
        if (weights[n] == 0.0) {
            losses[n] = 0.0;
            continue;
        }
        const double *x = logits + n * V;
        double maxval = -INFINITY, sum = 0.0;
        for (int v = 0; v < V; v++)
            maxval = fmax(maxval, x[v]);
        for (int v = 0; v < V; v++)
            sum += exp(x[v] - maxval);
        losses[n] = weights[n] * (maxval + log(sum) - x[targets[n]]);
    }
}

/* Backward takes a scalar scale, so the matching loss is scale * sum(losses). */
static double ce_loss(void *p) {
    ce_ctx *e = p;
    ref_crossentropy(e->losses, e->logits, e->targets, e->weights, e->N, e->V);
    double s = 0.0;
    for (int n = 0; n < e->N; n++)
        s += e->losses[n];
    return e->scale * s;
}

static void test_crossentropy(void **state) {
    (void)state;
    rng_reset(20);
    enum { N = 7, V = 37 };
    // weight-0 rows are ignored; row 4 carries an out-of-range target that must never be read
    const int32_t targets[N] = {3, 36, 0, 17, -1, 21, 8};
    const float weights[N] = {1.0f, 0.0f, 2.5f, 1.0f, 0.0f, 0.5f, 1.0f};
    const float scale = 0.37f;
    float *logits = random_floats(N * V, -5, 5);
    for (int v = 0; v < V; v++)
        logits[6 * V + v] += 1000.0f;   // a row whose naive exp would overflow
    float *losses = random_floats(N, -9, 9);
    mn_crossentropy_forward(losses, logits, targets, weights, N, V, team());

    ce_ctx e = {N, V, targets, to_double(weights, N), scale, to_double(logits, N * V), zero_doubles(N)};
    ref_crossentropy(e.losses, e.logits, targets, e.weights, N, V);
    // row 6 loses digits to the +1000 offset in fp32 logits themselves; 1e-4 covers it
    expect_close_forward("crossentropy losses", losses, e.losses, N, 1e-4);
    assert_true(losses[1] == 0.0f && losses[4] == 0.0f);

    // fused: the same losses bit for bit, and the gradient written over the logits
    float *dlogits = copy_floats(logits, N * V), *fused_losses = random_floats(N, -9, 9);
    float *dlogits0 = zero_floats(N * V);
    mn_crossentropy_fused(fused_losses, dlogits, targets, weights, scale, N, V, team());
    assert_memory_equal(fused_losses, losses, N * sizeof(float));
    check_grad("crossentropy dlogits", e.logits, N * V, ce_loss, &e, dlogits, dlogits0);
    assert_memory_equal(dlogits + 1 * V, dlogits0 + 1 * V, V * sizeof(float));   // ignored rows: 0
    assert_memory_equal(dlogits + 4 * V, dlogits0 + 4 * V, V * sizeof(float));

    free((void *)e.weights); free(e.logits); free(e.losses);
    free(logits); free(losses); free(fused_losses); free(dlogits); free(dlogits0);
}

/* ------------------------------------------------------------------ residual */

/* mn_argmax_finite: the first index of the largest (ties among lanes and the tail: the lowest
 * index wins), -1 for a NaN or an infinity anywhere, at every length around the 8 lanes. */
static void test_argmax_finite(void **state) {
    (void)state;
    rng_reset(17);
    float x[67];
    for (int n = 1; n <= 67; n++) {
        for (int i = 0; i < n; i++)
            x[i] = (float)(int)(rng_uniform() * 6.0) - 3.0f; /* few values: many ties */
        int want = 0;
        for (int i = 1; i < n; i++)
            want = x[i] > x[want] ? i : want;
        assert_int_equal(mn_argmax_finite(x, n), want);
        x[n - 1] = 5.0f; /* a unique largest at the end (the tail, or the last lane) */
        assert_int_equal(mn_argmax_finite(x, n), n - 1);
        const float bad[] = {NAN, INFINITY, -INFINITY};
        for (int b = 0; b < 3; b++) {
            int at = (int)(rng_uniform() * n);
            float keep = x[at];
            x[at] = bad[b];
            assert_int_equal(mn_argmax_finite(x, n), -1);
            x[at] = keep;
        }
    }
}

static void test_residual(void **state) {
    (void)state;
    rng_reset(21);
    enum { N = 37 };
    float *a = random_floats(N, -1, 1), *b = random_floats(N, -1, 1), *out = zero_floats(N);
    mn_residual_forward(out, a, b, N, team());
    for (int i = 0; i < N; i++)
        assert_true(out[i] == a[i] + b[i]);
    float *G = random_floats(N, -1, 1);
    float *da = random_floats(N, -1, 1), *da0 = copy_floats(da, N);
    float *db = random_floats(N, -1, 1), *db0 = copy_floats(db, N);
    mn_residual_backward(da, db, G, N, team());
    for (int i = 0; i < N; i++) {
        assert_true(da[i] == da0[i] + G[i]);
        assert_true(db[i] == db0[i] + G[i]);
    }
    // db NULL: only da accumulates
    mn_residual_backward(da, NULL, G, N, team());
    for (int i = 0; i < N; i++)
        assert_true(da[i] == (da0[i] + G[i]) + G[i]);
    free(a); free(b); free(out); free(G); free(da); free(da0); free(db); free(db0);
}

/* ------------------------------------------------------------------ adamw, sum of squares */

/* docs/model.md, in double, one element at a time. */
static void hand_adamw(double *p, double *m, double *v, double g, double lr, double b1, double b2,
                       double eps, double wd, int t) {
    *p -= lr * wd * *p;
    *m = b1 * *m + (1 - b1) * g;
    *v = b2 * *v + (1 - b2) * g * g;
    *p -= lr * (*m / (1 - pow(b1, t))) / (sqrt(*v / (1 - pow(b2, t))) + eps);
}

static void run_adamw_case(float wd) {
    enum { N = 9 };
    const float lr = 0.1f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;
    float *p = random_floats(N, -2, 2), *m = zero_floats(N), *v = zero_floats(N);
    p[0] = 0.0f;   // a zero parameter stays put under decay and moves only by its gradient
    double hp[N], hm[N] = {0}, hv[N] = {0};
    for (int i = 0; i < N; i++)
        hp[i] = p[i];
    for (int t = 1; t <= 2; t++) {
        float *g = random_floats(N, -1, 1);
        g[1] = 0.0f;   // zero gradient: only decay and the running moments move it
        mn_adamw_update(p, g, m, v, N, lr, b1, b2, eps, wd, (uint64_t)t, team());
        for (int i = 0; i < N; i++)
            hand_adamw(&hp[i], &hm[i], &hv[i], g[i], lr, b1, b2, eps, wd, t);
        // one step moves p by about lr = 0.1; decay by lr * wd * |p| ~ 0.1; 2e-6 is fp32 noise
        for (int i = 0; i < N; i++) {
            if (fabs(p[i] - hp[i]) > 2e-6 || fabs(m[i] - hm[i]) > 1e-6 || fabs(v[i] - hv[i]) > 1e-6)
                fail_msg("adamw wd=%g step %d [%d]: p %.9g vs %.9g, m %.9g vs %.9g, v %.9g vs %.9g",
                         (double)wd, t, i, (double)p[i], hp[i], (double)m[i], hm[i], (double)v[i], hv[i]);
        }
        free(g);
    }
    free(p); free(m); free(v);
}

static void test_adamw(void **state) {
    (void)state;
    rng_reset(22);
    run_adamw_case(0.0f);
    run_adamw_case(0.5f);
}

static void test_sum_squares(void **state) {
    (void)state;
    rng_reset(23);
    const size_t sizes[] = {0, 1, 7, 255, 256, 257, 1000, 1000003};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = sizes[k];
        float *x = random_floats(n, -3, 3);
        double want = 0.0;
        for (size_t i = 0; i < n; i++)
            want += (double)x[i] * x[i];
        double got = mn_sum_squares(x, n, team());
        // both sum in double; only the order differs (relative error ~ n * 1e-16 at worst)
        if (fabs(got - want) > 1e-12 * want + 1e-300)
            fail_msg("sum_squares n=%zu: got %.17g, want %.17g", n, got, want);
        // the chunking is fixed, so one thread and two give the same bits
        double one = mn_sum_squares(x, n, 1);
        double two = mn_sum_squares(x, n, 2);
        assert_memory_equal(&one, &got, sizeof(double));
        assert_memory_equal(&two, &got, sizeof(double));
        free(x);
    }
}

/* ------------------------------------------------------------------ teams (cpu/team.h) */

/* mn_share: contiguous shares in thread order that cover [0, n), each a multiple of align but
 * the last non-empty one, none larger than the first. */
static void test_team_share(void **state) {
    (void)state;
    const size_t ns[] = {0, 1, 7, 8, 9, 63, 64, 65, 1000, 32769};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (int nt = 1; nt <= 5; nt++)
            for (size_t align = 1; align <= 8; align += 7) {
                size_t n = ns[a], next = 0, first = 0;
                for (int t = 0; t < nt; t++) {
                    size_t i0, i1;
                    mn_share(n, align, t, nt, &i0, &i1);
                    if (i0 != next || i1 < i0 || i1 > n)
                        fail_msg("mn_share(%zu, %zu, %d of %d) = [%zu, %zu), want it to start at %zu", n, align, t, nt,
                                 i0, i1, next);
                    if (t == 0)
                        first = i1 - i0;
                    if (i1 - i0 > first || (i1 < n && (i1 - i0) % align != 0))
                        fail_msg("mn_share(%zu, %zu, %d of %d): share of %zu", n, align, t, nt, i1 - i0);
                    next = i1;
                }
                if (next != n)
                    fail_msg("mn_share(%zu, %zu, of %d) covers %zu", n, align, nt, next);
                if (nt > 1 && n >= (size_t)nt * align && first > (n + (size_t)nt - 1) / (size_t)nt + align - 1)
                    fail_msg("mn_share(%zu, %zu, of %d): unbalanced, first share %zu", n, align, nt, first);
            }
}

/* mn_team: one thread for one thread, for little work, and inside an active parallel region. */
static void test_team_size(void **state) {
    (void)state;
    assert_int_equal(mn_team(1, 1e9, 10), 1);
    assert_int_equal(mn_team(2, 9, 10), 1);
    assert_int_equal(mn_team(2, 10, 10), 2);
    assert_int_equal(mn_team(3, 1e9, 0), 3);
    int inside[2] = {-1, -1}, active = 0;
    #pragma omp parallel num_threads(2)
    {
        #pragma omp single
        active = omp_get_num_threads() == 2;
        inside[omp_get_thread_num()] = mn_team(2, 1e9, 10);
    }
    if (!active)
        skip();   // no second thread for the region (OMP_THREAD_LIMIT=1)
    assert_int_equal(inside[0], 1);
    assert_int_equal(inside[1], 1);
}

/* A chain of ops on sizes that split over threads; outputs in fresh buffers, freed by the caller. */
enum { CH_N = 130, CH_C = 64, CH_OC = 192, CH_B = 2, CH_S = 65, CH_H = 4, CH_OUTS = 7 };
static void run_op_chain(float *out[CH_OUTS], const float *inp, const float *w, const float *bias, const float *G,
                         const float *qkv, int threads) {
    const int32_t valid[CH_B] = {CH_S, 40};
    float *y = zero_floats(CH_N * CH_OC), *dx = zero_floats(CH_N * CH_C), *dw = zero_floats(CH_C * CH_OC);
    float *db = zero_floats(CH_OC), *g = zero_floats(CH_N * CH_OC);
    float *att = zero_floats((size_t)CH_B * CH_H * CH_S * CH_S), *o = zero_floats((size_t)CH_B * CH_S * CH_C);
    mn_linear_forward(y, inp, w, bias, CH_N, CH_C, CH_OC, threads);
    mn_linear_backward(dx, dw, db, G, inp, w, CH_N, CH_C, CH_OC, threads);
    mn_gelu_forward(g, y, (size_t)CH_N * CH_OC, threads);
    mn_attention_forward(o, att, qkv, valid, CH_B, CH_S, CH_C, CH_H, 1, threads);
    float *res[CH_OUTS] = {y, dx, dw, db, g, att, o};
    memcpy(out, res, sizeof res);
}

/* `mnemo eval`'s workers call the ops from inside a parallel region: the same bits as outside
 * (the products keep their panels; the work runs on the calling thread). */
static void test_ops_inside_parallel_region(void **state) {
    (void)state;
    rng_reset(31);
    float *inp = random_floats(CH_N * CH_C, -1, 1), *w = random_floats(CH_C * CH_OC, -1, 1);
    float *bias = random_floats(CH_OC, -1, 1), *G = random_floats(CH_N * CH_OC, -1, 1);
    float *qkv = random_floats((size_t)CH_B * CH_S * 3 * CH_C, -1, 1);
    const size_t sizes[CH_OUTS] = {CH_N * CH_OC, CH_N * CH_C, CH_C * CH_OC, CH_OC, CH_N * CH_OC,
                                   (size_t)CH_B * CH_H * CH_S * CH_S, (size_t)CH_B * CH_S * CH_C};
    float *want[CH_OUTS], *got[2][CH_OUTS] = {{NULL}};
    run_op_chain(want, inp, w, bias, G, qkv, 2);
    #pragma omp parallel num_threads(2)
    run_op_chain(got[omp_get_thread_num()], inp, w, bias, G, qkv, 2);
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < CH_OUTS; k++) {
            if (got[t][k] == NULL)
                continue;   // no second thread
            if (memcmp(want[k], got[t][k], sizes[k] * sizeof(float)) != 0)
                fail_msg("output %d: thread %d of a parallel region gave other bits than the call outside", k, t);
            free(got[t][k]);
        }
    for (int k = 0; k < CH_OUTS; k++)
        free(want[k]);
    free(inp); free(w); free(bias); free(G); free(qkv);
}

/* ------------------------------------------------------------------ determinism */

/* Sizes large enough that OpenMP and OpenBLAS both split the work over threads. */
static void test_determinism(void **state) {
    (void)state;
    rng_reset(24);
    enum { N = 257, C = 96, OC = 288, V = 301, B = 2, S = 67, H = 4 };
    float *inp = random_floats(N * C, -1, 1), *w = random_floats(C * OC, -1, 1);
    float *bias = random_floats(OC, -1, 1), *G = random_floats(N * OC, -1, 1);
    float *ln_w = random_floats(C, 0.5, 1.5), *ln_b = random_floats(C, -1, 1);
    float *qkv = random_floats((size_t)B * S * 3 * C, -1, 1);
    float *wte = random_floats((size_t)V * C, -1, 1);
    int32_t ids[N], targets[N], valid[B] = {S, 40};
    float weights[N];
    for (int n = 0; n < N; n++) {
        ids[n] = (int32_t)(rng_uniform() * 20);   // many repeats
        targets[n] = (int32_t)(rng_uniform() * V);
        weights[n] = n % 5 == 0 ? 0.0f : 1.0f;
    }
    float *res[2][16];
    for (int run = 0; run < 2; run++) {
        float **r = res[run];
        int k = 0;
        // linear
        r[k] = zero_floats(N * OC);
        mn_linear_forward(r[k], inp, w, bias, N, C, OC, team());
        r[k + 1] = zero_floats(N * C);
        r[k + 2] = zero_floats(C * OC);
        r[k + 3] = zero_floats(OC);
        mn_linear_backward(r[k + 1], r[k + 2], r[k + 3], G, inp, w, N, C, OC, team());
        k += 4;
        // layernorm
        float *mean = zero_floats(N), *rstd = zero_floats(N);
        r[k] = zero_floats(N * C);
        mn_layernorm_forward(r[k], mean, rstd, inp, ln_w, ln_b, N, C, team());
        r[k + 1] = zero_floats(N * C);
        r[k + 2] = zero_floats(C);
        r[k + 3] = zero_floats(C);
        mn_layernorm_backward(r[k + 1], r[k + 2], r[k + 3], G, inp, ln_w, mean, rstd, N, C, team());
        free(mean); free(rstd);
        k += 4;
        // attention (causal), with a padded sequence
        float *att = zero_floats((size_t)B * H * S * S);
        r[k] = zero_floats((size_t)B * S * C);
        mn_attention_forward(r[k], att, qkv, valid, B, S, C, H, 1, team());
        r[k + 1] = zero_floats((size_t)B * S * 3 * C);
        mn_attention_backward(r[k + 1], G, qkv, att, valid, B, S, C, H, 1, team());
        free(att);
        k += 2;
        // embedding scatter-add, lm head, cross-entropy
        r[k] = zero_floats((size_t)V * C);
        mn_embedding_backward(r[k], G, ids, N, C, team());
        r[k + 1] = zero_floats((size_t)N * V);
        mn_lm_head_forward(r[k + 1], inp, wte, N, C, V, team());
        r[k + 2] = zero_floats(N);
        mn_crossentropy_forward(r[k + 2], r[k + 1], targets, weights, N, V, team());
        r[k + 3] = copy_floats(r[k + 1], (size_t)N * V);
        mn_crossentropy_fused(r[k + 2], r[k + 3], targets, weights, 0.01f, N, V, team());
        r[k + 4] = zero_floats(N * C);
        r[k + 5] = zero_floats((size_t)V * C);
        mn_lm_head_backward(r[k + 4], r[k + 5], r[k + 3], inp, wte, N, C, V, team());
        k += 6;
        assert_int_equal(k, 16);
    }
    const size_t sizes[16] = {N * OC, N * C, C * OC, OC, N * C, N * C, C, C,
                              (size_t)B * S * C, (size_t)B * S * 3 * C, (size_t)V * C,
                              (size_t)N * V, N, (size_t)N * V, N * C, (size_t)V * C};
    for (int k = 0; k < 16; k++) {
        char what[32];
        snprintf(what, sizeof what, "output %d", k);
        expect_same_bits(what, res[0][k], res[1][k], sizes[k]);
        free(res[0][k]);
        free(res[1][k]);
    }

    // gated update, forward and backward
    enum { M = 33, D = 64 };
    float *r_prev = random_floats(M * D, -1, 1), *u = random_floats(M * D, -1, 1);
    float *gw = random_floats(2 * D * D, -0.2, 0.2), *gb = random_floats(D, -1, 0);
    float *dr = random_floats(M * D, -1, 1);
    float *out[2][6];
    for (int run = 0; run < 2; run++) {
        float *r_out = zero_floats(M * D), *z = zero_floats(M * D), *scratch = zero_floats(M * D);
        float *d_prev = zero_floats(M * D), *d_u = zero_floats(M * D);
        float *d_w = zero_floats(2 * D * D), *d_b = zero_floats(D);
        mn_gated_update_forward(r_out, z, r_prev, u, gw, gb, M, D, team());
        mn_gated_update_backward(d_prev, d_u, d_w, d_b, dr, r_prev, u, z, gw, scratch, M, D, team());
        free(scratch);
        float *o[6] = {r_out, z, d_prev, d_u, d_w, d_b};
        memcpy(out[run], o, sizeof o);
    }
    const size_t gsizes[6] = {M * D, M * D, M * D, M * D, 2 * D * D, D};
    for (int k = 0; k < 6; k++) {
        expect_same_bits("gated update", out[0][k], out[1][k], gsizes[k]);
        free(out[0][k]);
        free(out[1][k]);
    }

    free(inp); free(w); free(bias); free(G); free(ln_w); free(ln_b); free(qkv); free(wte);
    free(r_prev); free(u); free(gw); free(gb); free(dr);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_lm_head),
        cmocka_unit_test(test_lm_head_few_rows),
        cmocka_unit_test(test_slot_write_gate),
        cmocka_unit_test(test_slot_write_delta),
        cmocka_unit_test(test_attention_causal),
        cmocka_unit_test(test_attention_bidirectional),
        cmocka_unit_test(test_attention_large_scores),
        cmocka_unit_test(test_attention_rows_equal_forward),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_gated_update),
        cmocka_unit_test(test_crossentropy),
        cmocka_unit_test(test_argmax_finite),
        cmocka_unit_test(test_residual),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_sum_squares),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_team_share),
        cmocka_unit_test(test_team_size),
        cmocka_unit_test(test_ops_inside_parallel_region),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
