/* Every op of the CUDA backend against the CPU op (the reference of src/cpu/ops.h), through
 * the backend table (model/backend.h).
 *
 * Inputs are fresh random values on each run (the seed is printed; MNEMO_TEST_SEED=<seed>
 * repeats a run). Pure outputs are poisoned with NaN on the device before the op, so an
 * element the kernel forgets fails the comparison. Backward ops accumulate, so their buffers
 * start from the same random values on both sides and the increments are compared.
 *
 * Tolerances (|got - want| <= rtol |want| + atol * max|want|, on increments for gradients):
 * - exact (bitwise): embedding (copies; its backward adds rows in the CPU's order), residual,
 *   row copies and row sums, scale;
 * - FP32 = 1e-5 / 1e-5: every other op. The GPU sums in another order (warp trees, cuBLAS
 *   tiling, two-stage column sums) and uses its own expf/tanhf (a few ulp), so each result
 *   differs by fp32 rounding of sums over at most a few hundred terms: ~1e-6 of the scale,
 *   ten times inside the bound, while a wrong index or a missed mask is off by O(1);
 * - TF32 products: 2e-3, BF16 products: 1.6e-2 (of the output scale): cuBLAS rounds the
 *   inputs of each product to 10 / 7 mantissa bits (unit roundoff 4.9e-4 / 3.9e-3); over
 *   K ~ 100 random-sign terms the error stays below 4x the unit roundoff of the scale;
 * - the sum of squares, in double on both sides: 1e-12 relative.
 * The same FP32 bounds hold at GPT-2 small shapes (C 768, 12 heads, 3072 hidden, V 50257, 160
 * positions: test_gpt2_shapes): cuBLAS and the CPU both sum in blocks, so the rounding of a
 * product over K terms grows like sqrt(K) of its terms, ~1e-6 of the output scale at K 50257.
 * Without a GPU every test is skipped and the program exits with 77 (meson: SKIP).
 *
 * test_ops_logic.c compiles this file with MN_TEST_GUARDED: the "GPU" is then the guarded host
 * backend (guarded_backend.h), so every case runs on every machine (its pointers checked, the
 * NaN-padding and GPT-2-shape cases included) and only the tensor-core products are skipped. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/backend.h"
#include "mnemo.h"
#ifdef MN_TEST_GUARDED
#include "guarded_backend.h"
#endif

#define FP32_RTOL 1e-5
#define FP32_ATOL 1e-5
#define TF32_ATOL 2e-3
#define BF16_ATOL 1.6e-2

static mn_exec cpu, gpu;
static int have_gpu;
static uint64_t rng_state;

/* ---------------------------------------------------------------- helpers */
static double uniform01(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}
static float *randoms(size_t n, double lo, double hi) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * uniform01());
    return x;
}
static float *host_copy(const float *x, size_t n) {
    float *y = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(y);
    memcpy(y, x, n * sizeof(float));
    return y;
}
static float *nans(size_t n) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = NAN;
    return x;
}

static void check_gpu(void) {
    if (mn_exec_status(&gpu) != MN_OK)
        fail_msg("GPU: %s", mn_last_error());
}
static void *gpu_alloc(size_t bytes) {
    void *d = NULL;
    if (mn_exec_alloc(&gpu, bytes, &d) != MN_OK)
        fail_msg("GPU alloc: %s", mn_last_error());
    return d;
}
static float *up(const float *h, size_t n) {
    float *d = gpu_alloc(n * sizeof(float));
    MN_OP(&gpu, upload, d, h, n * sizeof(float));
    return d;
}
static int32_t *up_ints(const int32_t *h, size_t n) {
    int32_t *d = gpu_alloc(n * sizeof(int32_t));
    MN_OP(&gpu, upload, d, h, n * sizeof(int32_t));
    return d;
}
static float *poisoned(size_t n) {
    float *h = nans(n), *d = up(h, n);
    free(h);
    return d;
}
static float *down(const float *d, size_t n) {
    float *h = nans(n);
    MN_OP(&gpu, download, h, d, n * sizeof(float));
    check_gpu();
    return h;
}
static void gfree(void *d) { mn_exec_release(&gpu, d); }

/* got vs want, or (with base) their increments over base. */
static void expect_close(const char *what, const float *got, const float *want, const float *base, size_t n,
                         double rtol, double atol) {
    double scale = 0.0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs((double)want[i] - (base ? base[i] : 0.0)));
    for (size_t i = 0; i < n; i++) {
        double g = (double)got[i] - (base ? base[i] : 0.0), w = (double)want[i] - (base ? base[i] : 0.0);
        if (!(fabs(g - w) <= rtol * fabs(w) + atol * scale + 1e-30))
            fail_msg("%s[%zu]: GPU %.9g, CPU %.9g (scale %.3g)", what, i, g, w, scale);
    }
}
static void expect_fp32(const char *what, const float *got, const float *want, const float *base, size_t n) {
    expect_close(what, got, want, base, n, FP32_RTOL, FP32_ATOL);
}
static void expect_bits(const char *what, const float *got, const float *want, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)))
            fail_msg("%s[%zu]: GPU %.9g, CPU %.9g (must be bitwise equal)", what, i, (double)got[i], (double)want[i]);
}

/* A gradient buffer: the same random start on both sides. */
typedef struct {
    float *base, *cpu, *dev;
    size_t n;
} grad_buf;
static grad_buf grad(size_t n) {
    grad_buf g = {randoms(n, -1, 1), NULL, NULL, n};
    g.cpu = host_copy(g.base, n);
    g.dev = up(g.base, n);
    return g;
}
static void expect_grad(const char *what, grad_buf *g) {
    float *got = down(g->dev, g->n);
    expect_fp32(what, got, g->cpu, g->base, g->n);
    free(got);
}
static void free_grad(grad_buf *g) {
    free(g->base), free(g->cpu), gfree(g->dev);
}

#define NEED_GPU()         \
    do {                   \
        if (!have_gpu)     \
            skip();        \
    } while (0)

/* ---------------------------------------------------------------- embedding */
static void test_embedding(void **state) {
    (void)state;
    NEED_GPU();
    /* N > the kernel's 1024-id tile, a small V so ids repeat often, -1 rows skipped */
    enum { N = 2500, C = 70, V = 37 };
    int32_t *ids = malloc(N * sizeof(int32_t));
    for (int n = 0; n < N; n++)
        ids[n] = uniform01() < 0.2 ? -1 : (int32_t)(uniform01() * V);
    float *table = randoms(V * C, -1, 1);
    int32_t *d_ids = up_ints(ids, N);
    float *d_table = up(table, V * C), *d_out = poisoned((size_t)N * C), *want = nans((size_t)N * C);
    MN_OP(&cpu, embedding_forward, want, ids, table, N, C);
    MN_OP(&gpu, embedding_forward, d_out, d_ids, d_table, N, C);
    float *got = down(d_out, (size_t)N * C);
    for (int n = 0; n < N; n++) {
        if (ids[n] >= 0) {
            expect_bits("embedding forward", got + (size_t)n * C, want + (size_t)n * C, C);
            continue;
        }
        for (int c = 0; c < C; c++) /* skipped rows keep their poison */
            assert_true(isnan(got[(size_t)n * C + c]));
    }
    float *dout = randoms((size_t)N * C, -1, 1), *d_dout = up(dout, (size_t)N * C);
    grad_buf dt = grad(V * C);
    MN_OP(&cpu, embedding_backward, dt.cpu, dout, ids, N, C);
    MN_OP(&gpu, embedding_backward, dt.dev, d_dout, d_ids, N, C);
    float *got_dt = down(dt.dev, V * C);
    expect_bits("embedding backward (same order as the CPU)", got_dt, dt.cpu, V * C);
    free(got), free(got_dt), free(want), free(ids), free(table), free(dout);
    gfree(d_ids), gfree(d_table), gfree(d_out), gfree(d_dout);
    free_grad(&dt);
}

/* ---------------------------------------------------------------- layernorm */
static void test_layernorm(void **state) {
    (void)state;
    NEED_GPU();
    enum { N = 300, C = 333 }; /* several 64-row chunks and 256-column blocks, C not a multiple of 32 */
    float *x = randoms((size_t)N * C, -2, 3), *w = randoms(C, 0.5, 1.5), *b = randoms(C, -0.5, 0.5);
    float *out = nans((size_t)N * C), *mean = nans(N), *rstd = nans(N);
    MN_OP(&cpu, layernorm_forward, out, mean, rstd, x, w, b, N, C);
    float *dx_ = up(x, (size_t)N * C), *dw = up(w, C), *db = up(b, C);
    float *dout_ = poisoned((size_t)N * C), *dmean = poisoned(N), *drstd = poisoned(N);
    MN_OP(&gpu, layernorm_forward, dout_, dmean, drstd, dx_, dw, db, N, C);
    float *g_out = down(dout_, (size_t)N * C), *g_mean = down(dmean, N), *g_rstd = down(drstd, N);
    expect_fp32("layernorm out", g_out, out, NULL, (size_t)N * C);
    expect_fp32("layernorm mean", g_mean, mean, NULL, N);
    expect_fp32("layernorm rstd", g_rstd, rstd, NULL, N);
    float *dy = randoms((size_t)N * C, -1, 1), *d_dy = up(dy, (size_t)N * C);
    grad_buf dinp = grad((size_t)N * C), dweight = grad(C), dbias = grad(C);
    MN_OP(&cpu, layernorm_backward, dinp.cpu, dweight.cpu, dbias.cpu, dy, x, w, mean, rstd, N, C);
    MN_OP(&gpu, layernorm_backward, dinp.dev, dweight.dev, dbias.dev, d_dy, dx_, dw, dmean, drstd, N, C);
    expect_grad("layernorm dinp", &dinp);
    expect_grad("layernorm dweight", &dweight);
    expect_grad("layernorm dbias", &dbias);
    /* deterministic: the same call from the same start gives the same bits */
    float *first = down(dweight.dev, C);
    MN_OP(&gpu, upload, dweight.dev, dweight.base, C * sizeof(float));
    MN_OP(&gpu, layernorm_backward, dinp.dev, dweight.dev, dbias.dev, d_dy, dx_, dw, dmean, drstd, N, C);
    float *second = down(dweight.dev, C);
    assert_memory_equal(first, second, C * sizeof(float));
    free(first), free(second);
    free(x), free(w), free(b), free(out), free(mean), free(rstd), free(g_out), free(g_mean), free(g_rstd), free(dy);
    gfree(dx_), gfree(dw), gfree(db), gfree(dout_), gfree(dmean), gfree(drstd), gfree(d_dy);
    free_grad(&dinp), free_grad(&dweight), free_grad(&dbias);
}

/* ---------------------------------------------------------------- linear, lm head */
static void linear_case(int with_bias, int with_dinp) {
    enum { N = 130, IC = 75, OC = 300 };
    float *x = randoms((size_t)N * IC, -1, 1), *w = randoms((size_t)IC * OC, -1, 1), *b = randoms(OC, -1, 1);
    float *out = nans((size_t)N * OC);
    MN_OP(&cpu, linear_forward, out, x, w, with_bias ? b : NULL, N, IC, OC);
    float *d_x = up(x, (size_t)N * IC), *d_w = up(w, (size_t)IC * OC), *d_b = up(b, OC);
    float *d_out = poisoned((size_t)N * OC);
    MN_OP(&gpu, linear_forward, d_out, d_x, d_w, with_bias ? d_b : NULL, N, IC, OC);
    float *got = down(d_out, (size_t)N * OC);
    expect_fp32("linear out", got, out, NULL, (size_t)N * OC);
    float *dy = randoms((size_t)N * OC, -1, 1), *d_dy = up(dy, (size_t)N * OC);
    grad_buf dinp = grad((size_t)N * IC), dw = grad((size_t)IC * OC), db = grad(OC);
    MN_OP(&cpu, linear_backward, with_dinp ? dinp.cpu : NULL, dw.cpu, with_bias ? db.cpu : NULL, dy, x, w, N, IC, OC);
    MN_OP(&gpu, linear_backward, with_dinp ? dinp.dev : NULL, dw.dev, with_bias ? db.dev : NULL, d_dy, d_x, d_w, N,
          IC, OC);
    expect_grad("linear dinp", &dinp); /* untouched on both sides when NULL */
    expect_grad("linear dweight", &dw);
    expect_grad("linear dbias", &db);
    free(x), free(w), free(b), free(out), free(got), free(dy);
    gfree(d_x), gfree(d_w), gfree(d_b), gfree(d_out), gfree(d_dy);
    free_grad(&dinp), free_grad(&dw), free_grad(&db);
}

static void test_linear(void **state) {
    (void)state;
    NEED_GPU();
    linear_case(1, 1);
    linear_case(0, 0);
}

static void test_lm_head(void **state) {
    (void)state;
    NEED_GPU();
    enum { N = 50, C = 48, V = 1001 };
    float *x = randoms((size_t)N * C, -1, 1), *wte = randoms((size_t)V * C, -1, 1), *logits = nans((size_t)N * V);
    MN_OP(&cpu, lm_head_forward, logits, x, wte, N, C, V);
    float *d_x = up(x, (size_t)N * C), *d_wte = up(wte, (size_t)V * C), *d_logits = poisoned((size_t)N * V);
    MN_OP(&gpu, lm_head_forward, d_logits, d_x, d_wte, N, C, V);
    float *got = down(d_logits, (size_t)N * V);
    expect_fp32("lm_head logits", got, logits, NULL, (size_t)N * V);
    float *dl = randoms((size_t)N * V, -1, 1), *d_dl = up(dl, (size_t)N * V);
    grad_buf dinp = grad((size_t)N * C), dwte = grad((size_t)V * C);
    MN_OP(&cpu, lm_head_backward, dinp.cpu, dwte.cpu, dl, x, wte, N, C, V);
    MN_OP(&gpu, lm_head_backward, dinp.dev, dwte.dev, d_dl, d_x, d_wte, N, C, V);
    expect_grad("lm_head dinp", &dinp);
    expect_grad("lm_head dwte", &dwte);
    free(x), free(wte), free(logits), free(got), free(dl);
    gfree(d_x), gfree(d_wte), gfree(d_logits), gfree(d_dl);
    free_grad(&dinp), free_grad(&dwte);
}

/* ---------------------------------------------------------------- attention */
/* Rows of (B, S, width) at padding positions (s >= valid[b]) set to NaN. */
static void poison_padding(float *x, const int32_t *valid, int B, int S, size_t width) {
    for (int b = 0; b < B; b++)
        for (int s = valid[b]; s < S; s++)
            for (size_t i = 0; i < width; i++)
                x[((size_t)b * S + s) * width + i] = NAN;
}

/* With nan_padding, qkv and dout hold NaN at the padding positions (what a layer before may
 * leave there): the valid outputs must stay finite and equal the CPU's, the padding outputs
 * zero, and dqkv must gain nothing at the padding positions. */
static void attention_case(int B, int S, int C, int H, const int32_t *valid, int causal, int nan_padding) {
    const size_t BS = (size_t)B * S, natt = BS * H * S;
    float *qkv = randoms(BS * 3 * C, -1, 1); /* scores of a few units: a spread softmax */
    if (nan_padding)
        poison_padding(qkv, valid, B, S, 3 * (size_t)C);
    float *out = nans(BS * C), *att = nans(natt);
    MN_OP(&cpu, attention_forward, out, att, qkv, valid, B, S, C, H, causal);
    float *d_qkv = up(qkv, BS * 3 * C);
    int32_t *d_valid = up_ints(valid, B);
    float *d_out = poisoned(BS * C), *d_att = poisoned(natt);
    MN_OP(&gpu, attention_forward, d_out, d_att, d_qkv, d_valid, B, S, C, H, causal);
    float *g_out = down(d_out, BS * C), *g_att = down(d_att, natt);
    char what[128];
    snprintf(what, sizeof what, "%sattention out (B %d, S %d, C %d, H %d%s)", causal ? "causal " : "", B, S, C, H,
             nan_padding ? ", NaN in the padding" : "");
    expect_fp32(what, g_out, out, NULL, BS * C);
    expect_fp32(what, g_att, att, NULL, natt);
    for (size_t i = 0; i < natt; i++) /* masked entries are exactly 0 */
        if (att[i] == 0.0f)
            assert_true(g_att[i] == 0.0f);
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++)
            for (int c = 0; c < C; c++) {
                float o = g_out[((size_t)b * S + s) * C + c];
                if (s < valid[b] ? !isfinite(o) : o != 0.0f)
                    fail_msg("%s[%d][%d][%d] = %g: valid rows finite, padding rows 0", what, b, s, c, (double)o);
            }
    float *dy = randoms(BS * C, -1, 1);
    if (nan_padding)
        poison_padding(dy, valid, B, S, (size_t)C);
    float *d_dy = up(dy, BS * C);
    grad_buf dqkv = grad(BS * 3 * C);
    MN_OP(&cpu, attention_backward, dqkv.cpu, dy, qkv, att, valid, B, S, C, H, causal);
    MN_OP(&gpu, attention_backward, dqkv.dev, d_dy, d_qkv, d_att, d_valid, B, S, C, H, causal);
    float *g_dqkv = down(dqkv.dev, BS * 3 * C);
    for (size_t i = 0; i < BS * 3 * C; i++)
        if (!isfinite(g_dqkv[i]))
            fail_msg("%s: dqkv[%zu] = %g is not finite", what, i, (double)g_dqkv[i]);
    expect_fp32(what, g_dqkv, dqkv.cpu, dqkv.base, BS * 3 * C); /* padding: no increment on either side */
    free(qkv), free(out), free(att), free(g_out), free(g_att), free(dy), free(g_dqkv);
    gfree(d_qkv), gfree(d_valid), gfree(d_out), gfree(d_att), gfree(d_dy);
    free_grad(&dqkv);
}

/* The rows form (inference on cached keys): causal query rows q0 .. q0+m-1 against the CPU's;
 * rows past a sequence's valid ones (padding, NaN in qkv with nan_padding) give zeros. */
static void attention_rows_case(int B, int S, int C, int H, const int32_t *valid, int q0, int m, int nan_padding) {
    const size_t natt = (size_t)B * H * m * S, nout = (size_t)B * m * C;
    float *qkv = randoms((size_t)B * S * 3 * C, -1, 1);
    if (nan_padding)
        poison_padding(qkv, valid, B, S, 3 * (size_t)C);
    float *out = nans(nout), *att = nans(natt);
    MN_OP(&cpu, attention_rows_forward, out, att, qkv, valid, B, S, C, H, q0, m);
    float *d_qkv = up(qkv, (size_t)B * S * 3 * C), *d_out = poisoned(nout), *d_att = poisoned(natt);
    int32_t *d_valid = up_ints(valid, B);
    MN_OP(&gpu, attention_rows_forward, d_out, d_att, d_qkv, d_valid, B, S, C, H, q0, m);
    float *g_out = down(d_out, nout), *g_att = down(d_att, natt);
    char what[128];
    snprintf(what, sizeof what, "attention rows %d..%d (B %d, S %d, C %d, H %d%s)", q0, q0 + m - 1, B, S, C, H,
             nan_padding ? ", NaN in the padding" : "");
    expect_fp32(what, g_out, out, NULL, nout);
    expect_fp32(what, g_att, att, NULL, natt);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < m; i++)
            for (int c = 0; c < C; c++) {
                float o = g_out[((size_t)b * m + i) * C + c];
                if (q0 + i < valid[b] ? !isfinite(o) : o != 0.0f)
                    fail_msg("%s[%d][%d][%d] = %g: valid rows finite, padding rows 0", what, b, i, c, (double)o);
            }
    free(qkv), free(out), free(att), free(g_out), free(g_att);
    gfree(d_qkv), gfree(d_valid), gfree(d_out), gfree(d_att);
}

static void test_attention(void **state) {
    (void)state;
    NEED_GPU();
    const int32_t valid[3] = {37, 20, 1}; /* full, padded, a single real position */
    for (int causal = 0; causal <= 1; causal++) {
        attention_case(3, 37, 48, 4, valid, causal, 0);
        attention_case(3, 37, 48, 4, valid, causal, 1);
    }
    attention_rows_case(3, 37, 48, 4, valid, 36, 1, 0);  /* one new row */
    attention_rows_case(3, 37, 48, 4, valid, 15, 10, 1); /* rows past 20 and 1 valid: padding */
    attention_rows_case(3, 37, 48, 4, valid, 0, 37, 0);  /* every row */
}

/* ---------------------------------------------------------------- elementwise */
static void test_gelu(void **state) {
    (void)state;
    NEED_GPU();
    enum { N = 10007 };
    float *x = randoms(N, -5, 5), *out = nans(N);
    MN_OP(&cpu, gelu_forward, out, x, N);
    float *d_x = up(x, N), *d_out = poisoned(N);
    MN_OP(&gpu, gelu_forward, d_out, d_x, N);
    float *got = down(d_out, N);
    expect_fp32("gelu out", got, out, NULL, N);
    float *dy = randoms(N, -1, 1), *d_dy = up(dy, N);
    grad_buf dx = grad(N);
    MN_OP(&cpu, gelu_backward, dx.cpu, dy, x, N);
    MN_OP(&gpu, gelu_backward, dx.dev, d_dy, d_x, N);
    expect_grad("gelu dinp", &dx);
    free(x), free(out), free(got), free(dy);
    gfree(d_x), gfree(d_out), gfree(d_dy);
    free_grad(&dx);
}

static void test_residual(void **state) {
    (void)state;
    NEED_GPU();
    enum { N = 5003 };
    float *a = randoms(N, -1, 1), *b = randoms(N, -1, 1), *out = nans(N);
    MN_OP(&cpu, residual_forward, out, a, b, N);
    float *d_a = up(a, N), *d_b = up(b, N), *d_out = poisoned(N);
    MN_OP(&gpu, residual_forward, d_out, d_a, d_b, N);
    float *got = down(d_out, N);
    expect_bits("residual out", got, out, N);
    float *dy = randoms(N, -1, 1), *d_dy = up(dy, N);
    grad_buf da = grad(N), db = grad(N);
    MN_OP(&cpu, residual_backward, da.cpu, db.cpu, dy, N);
    MN_OP(&gpu, residual_backward, da.dev, db.dev, d_dy, N);
    MN_OP(&cpu, residual_backward, da.cpu, NULL, dy, N); /* one-sided accumulate */
    MN_OP(&gpu, residual_backward, da.dev, NULL, d_dy, N);
    float *g_da = down(da.dev, N), *g_db = down(db.dev, N);
    expect_bits("residual da", g_da, da.cpu, N);
    expect_bits("residual db", g_db, db.cpu, N);
    free(a), free(b), free(out), free(got), free(dy), free(g_da), free(g_db);
    gfree(d_a), gfree(d_b), gfree(d_out), gfree(d_dy);
    free_grad(&da), free_grad(&db);
}

/* ---------------------------------------------------------------- gated update */
static void test_gated_update(void **state) {
    (void)state;
    NEED_GPU();
    enum { M = 70, C = 40 };
    const size_t MC = (size_t)M * C;
    float *r = randoms(MC, -1, 1), *u = randoms(MC, -1, 1), *w = randoms(2 * C * C, -0.3, 0.3), *b = randoms(C, -1, 1);
    float *r_out = nans(MC), *z = nans(MC);
    MN_OP(&cpu, gated_update_forward, r_out, z, r, u, w, b, M, C);
    float *d_r = up(r, MC), *d_u = up(u, MC), *d_w = up(w, 2 * C * C), *d_b = up(b, C);
    float *d_rout = poisoned(MC), *d_z = poisoned(MC);
    MN_OP(&gpu, gated_update_forward, d_rout, d_z, d_r, d_u, d_w, d_b, M, C);
    float *g_rout = down(d_rout, MC), *g_z = down(d_z, MC);
    expect_fp32("gated update r_out", g_rout, r_out, NULL, MC);
    expect_fp32("gated update z", g_z, z, NULL, MC);
    float *dy = randoms(MC, -1, 1), *d_dy = up(dy, MC), *scratch = nans(MC), *d_scratch = poisoned(MC);
    grad_buf dr = grad(MC), du = grad(MC), dw = grad(2 * C * C), dbias = grad(C);
    MN_OP(&cpu, gated_update_backward, dr.cpu, du.cpu, dw.cpu, dbias.cpu, dy, r, u, z, w, scratch, M, C);
    MN_OP(&gpu, gated_update_backward, dr.dev, du.dev, dw.dev, dbias.dev, d_dy, d_r, d_u, d_z, d_w, d_scratch, M, C);
    expect_grad("gated update dr_prev", &dr);
    expect_grad("gated update du", &du);
    expect_grad("gated update dgate_w", &dw);
    expect_grad("gated update dgate_b", &dbias);
    free(r), free(u), free(w), free(b), free(r_out), free(z), free(g_rout), free(g_z), free(dy), free(scratch);
    gfree(d_r), gfree(d_u), gfree(d_w), gfree(d_b), gfree(d_rout), gfree(d_z), gfree(d_dy), gfree(d_scratch);
    free_grad(&dr), free_grad(&du), free_grad(&dw), free_grad(&dbias);
}

/* ---------------------------------------------------------------- slot write */
/* One shape of the slot write (n_addr 0 or k), r_out beside r_prev or over it (in_place). */
static void slot_write_case(int B, int k, int C, int n_addr, int in_place) {
    const int A = n_addr, P = n_addr + 1;
    const size_t MC = (size_t)B * k * C, X = mn_slot_write_aux_floats(B, k, C, n_addr), rows = (size_t)B * k * P;
    float *r = randoms(MC, -1, 1), *u = randoms(MC, -1, 1), *w = randoms((size_t)C * P, -0.3, 0.3);
    float *b = randoms(P, -1, 1), *diag = A ? randoms(A, -1, 2) : NULL;
    float *d_r = up(r, MC), *d_u = up(u, MC), *d_w = up(w, (size_t)C * P), *d_b = up(b, P);
    float *d_diag = A ? up(diag, A) : NULL;
    /* in place: both sides write over a copy of r_prev (d_r stays the backward's input) */
    float *r_out = in_place ? host_copy(r, MC) : nans(MC), *aux = nans(X);
    float *d_rout = in_place ? up(r, MC) : poisoned(MC), *d_aux = poisoned(X);
    MN_OP(&cpu, slot_write_forward, r_out, aux, in_place ? r_out : r, u, w, b, diag, B, k, C, n_addr);
    MN_OP(&gpu, slot_write_forward, d_rout, d_aux, in_place ? d_rout : d_r, d_u, d_w, d_b, d_diag, B, k, C, n_addr);
    float *g_rout = down(d_rout, MC), *g_aux = down(d_aux, X);
    expect_fp32("slot write r_out", g_rout, r_out, NULL, MC);
    expect_fp32("slot write [Adr | beta]", g_aux, aux, NULL, rows);
    expect_fp32("slot write E", g_aux + rows, aux + rows, NULL, MC);
    float *dy = randoms(MC, -1, 1), *d_dy = up(dy, MC), *scratch = nans(X), *d_scratch = poisoned(X);
    grad_buf dr = grad(MC), du = grad(MC), dw = grad((size_t)C * P), dbias = grad(P), ddiag = {0};
    if (A)
        ddiag = grad(A);
    MN_OP(&cpu, slot_write_backward, dr.cpu, du.cpu, dw.cpu, dbias.cpu, ddiag.cpu, dy, r, u, aux, w, scratch, B, k, C,
          n_addr);
    MN_OP(&gpu, slot_write_backward, dr.dev, du.dev, dw.dev, dbias.dev, ddiag.dev, d_dy, d_r, d_u, d_aux, d_w,
          d_scratch, B, k, C, n_addr);
    expect_grad("slot write dr_prev", &dr);
    expect_grad("slot write du", &du);
    expect_grad("slot write dwrite_w", &dw);
    expect_grad("slot write dwrite_b", &dbias);
    if (A) {
        expect_grad("slot write dwrite_diag", &ddiag);
        free_grad(&ddiag);
    }
    free(r), free(u), free(w), free(b), free(diag), free(r_out), free(aux), free(g_rout), free(g_aux), free(dy);
    free(scratch);
    gfree(d_r), gfree(d_u), gfree(d_w), gfree(d_b), gfree(d_diag), gfree(d_rout), gfree(d_aux), gfree(d_dy);
    gfree(d_scratch);
    free_grad(&dr), free_grad(&du), free_grad(&dw), free_grad(&dbias);
}

static void test_slot_write(void **state) {
    (void)state;
    NEED_GPU();
    /* B*k*C odd (never a multiple of a block); k = 37 > 32 slots and C = 45 > 32 make every
     * warp loop take a second stride */
    for (int in_place = 0; in_place <= 1; in_place++) {
        slot_write_case(3, 7, 45, 0, in_place);   /* the per-slot gate */
        slot_write_case(3, 37, 45, 37, in_place); /* the delta rule: n_addr = k */
    }
}

/* ---------------------------------------------------------------- cross-entropy */
static void test_crossentropy(void **state) {
    (void)state;
    NEED_GPU();
    enum { N = 33, V = 5003 }; /* V: many elements per thread, not a multiple of the block */
    float *logits = randoms((size_t)N * V, -8, 8), *weights = randoms(N, 0.1, 2.0);
    int32_t targets[N];
    for (int n = 0; n < N; n++) {
        targets[n] = (int32_t)(uniform01() * V);
        if (n % 5 == 2) {
            weights[n] = 0.0f; /* ignored rows: their target is never read */
            targets[n] = -12345;
        }
    }
    float *losses = nans(N);
    MN_OP(&cpu, crossentropy_forward, losses, logits, targets, weights, N, V);
    float *d_logits = up(logits, (size_t)N * V), *d_w = up(weights, N), *d_losses = poisoned(N);
    int32_t *d_t = up_ints(targets, N);
    MN_OP(&gpu, crossentropy_forward, d_losses, d_logits, d_t, d_w, N, V);
    float *got = down(d_losses, N);
    expect_fp32("crossentropy losses", got, losses, NULL, N);
    /* fused: the same losses, and the gradient written over the logits (ignored rows: zeros) */
    MN_OP(&cpu, crossentropy_fused, losses, logits, targets, weights, 0.37f, N, V);
    MN_OP(&gpu, crossentropy_fused, d_losses, d_logits, d_t, d_w, 0.37f, N, V);
    free(got);
    got = down(d_losses, N);
    expect_fp32("crossentropy fused losses", got, losses, NULL, N);
    float *dl = down(d_logits, (size_t)N * V);
    expect_fp32("crossentropy fused dlogits", dl, logits, NULL, (size_t)N * V);
    free(logits), free(weights), free(losses), free(got), free(dl);
    gfree(d_logits), gfree(d_w), gfree(d_losses), gfree(d_t);
}

/* ---------------------------------------------------------------- optimizer and reductions */
static void test_adamw(void **state) {
    (void)state;
    NEED_GPU();
    enum { P = 20000 };
    float *p = randoms(P, -1, 1), *g = randoms(P, -1, 1), *m = randoms(P, -0.1, 0.1), *v = randoms(P, 0, 0.01);
    /* two tensors updated (one decayed), a frozen gap between them left alone */
    mn_adamw_segment segs[2] = {{0, 7000, 0.1f}, {9000, 11000, 0.0f}};
    float *d_p = up(p, P), *d_g = up(g, P), *d_m = up(m, P), *d_v = up(v, P);
    float *cp = host_copy(p, P), *cm = host_copy(m, P), *cv = host_copy(v, P);
    for (uint64_t t = 1; t <= 3; t++) {
        MN_OP(&cpu, adamw_update, cp, g, cm, cv, segs, 2, 1e-3f, 0.9f, 0.95f, 1e-8f, t);
        MN_OP(&gpu, adamw_update, d_p, d_g, d_m, d_v, segs, 2, 1e-3f, 0.9f, 0.95f, 1e-8f, t);
    }
    float *gp = down(d_p, P), *gm = down(d_m, P), *gv = down(d_v, P);
    /* values, not increments: fused multiply-adds on the GPU move p by an ulp, which is 1e-5 of
     * an increment of lr size; a wrong formula moves it by O(lr) */
    expect_fp32("adamw params", gp, cp, NULL, P);
    expect_fp32("adamw m", gm, cm, NULL, P);
    expect_fp32("adamw v", gv, cv, NULL, P);
    expect_bits("adamw frozen gap", gp + 7000, p + 7000, 2000);
    free(p), free(g), free(m), free(v), free(cp), free(cm), free(cv), free(gp), free(gm), free(gv);
    gfree(d_p), gfree(d_g), gfree(d_m), gfree(d_v);
}

static void test_reductions_and_copies(void **state) {
    (void)state;
    NEED_GPU();
    enum { N = 1000003, R = 9, COLS = 1234, STRIDE = 2000 };
    float *x = randoms(N, -3, 3), *d_x = up(x, N);
    double want = MN_OP(&cpu, sum_squares, x, N), got = MN_OP(&gpu, sum_squares, d_x, N);
    check_gpu();
    if (!(fabs(got - want) <= 1e-12 * want))
        fail_msg("sum of squares: GPU %.17g, CPU %.17g", got, want);
    double again = MN_OP(&gpu, sum_squares, d_x, N);
    assert_memory_equal(&got, &again, sizeof got); /* deterministic */
    double sum = 0.0, abs_sum = 0.0, *d_sum = gpu_alloc(sizeof(double));
    for (size_t i = 0; i < N; i++)
        abs_sum += fabs((double)x[i]);
    MN_OP(&cpu, sum_to, &sum, x, N);
    MN_OP(&gpu, sum_to, d_sum, d_x, N);
    double gsum = 0.0;
    MN_OP(&gpu, download, &gsum, d_sum, sizeof gsum);
    check_gpu();
    if (!(fabs(gsum - sum) <= 1e-12 * abs_sum))
        fail_msg("sum: GPU %.17g, CPU %.17g", gsum, sum);
    /* scale, strided and broadcast copies, row sums: exact */
    MN_OP(&cpu, scale, x, 0.3f, N);
    MN_OP(&gpu, scale, d_x, 0.3f, N);
    float *gx = down(d_x, N);
    expect_bits("scale", gx, x, N);
    float *dst = randoms(R * STRIDE, -1, 1), *d_dst = up(dst, R * STRIDE);
    MN_OP(&cpu, copy_rows, dst, STRIDE, x + 5, 1500, R, COLS);
    MN_OP(&gpu, copy_rows, d_dst, STRIDE, d_x + 5, 1500, R, COLS);
    float *gd = down(d_dst, R * STRIDE);
    expect_bits("copy_rows strided", gd, dst, R * STRIDE);
    free(gd);
    MN_OP(&cpu, copy_rows, dst, STRIDE, x, 0, R, COLS);
    MN_OP(&gpu, copy_rows, d_dst, STRIDE, d_x, 0, R, COLS);
    gd = down(d_dst, R * STRIDE);
    expect_bits("copy_rows broadcast", gd, dst, R * STRIDE);
    free(gd);
    MN_OP(&cpu, add_rows, dst, 0, x, STRIDE, R, COLS); /* sum of rows into row 0 */
    MN_OP(&gpu, add_rows, d_dst, 0, d_x, STRIDE, R, COLS);
    MN_OP(&cpu, add_rows, dst, STRIDE, x, COLS, R, COLS);
    MN_OP(&gpu, add_rows, d_dst, STRIDE, d_x, COLS, R, COLS);
    gd = down(d_dst, R * STRIDE);
    expect_bits("add_rows", gd, dst, R * STRIDE);
    free(gd);
    free(x), free(gx), free(dst);
    gfree(d_x), gfree(d_sum), gfree(d_dst);
}

/* ---------------------------------------------------------------- GPT-2 small shapes */
/* The ops at the widths of GPT-2 small (C 768, 12 heads, 3072 hidden, V 50257) over 160
 * positions (32 memory slots + a 128-token turn), two episodes, one of them padded: the
 * shapes the benchmarks time, where cuBLAS picks other kernels and tilings than at the tiny
 * shapes above. */
enum { G_C = 768, G_H = 12, G_V = 50257, G_S = 160, G_B = 2, G_N = G_B * G_S };

static void test_gpt2_shapes(void **state) {
    (void)state;
    NEED_GPU();
    const int32_t valid[G_B] = {G_S, 97};
    attention_case(G_B, G_S, G_C, G_H, valid, 1, 0);
    attention_case(G_B, G_S, G_C, G_H, valid, 0, 1);
    attention_rows_case(G_B, G_S, G_C, G_H, valid, 90, 40, 1);

    /* the MLP's two products and GELU, the layernorm before them */
    float *x = randoms((size_t)G_N * G_C, -1, 1), *w = randoms((size_t)G_C * 4 * G_C, -0.1, 0.1);
    float *b = randoms(4 * G_C, -1, 1), *h = nans((size_t)G_N * 4 * G_C), *a = nans((size_t)G_N * 4 * G_C);
    MN_OP(&cpu, linear_forward, h, x, w, b, G_N, G_C, 4 * G_C);
    MN_OP(&cpu, gelu_forward, a, h, (size_t)G_N * 4 * G_C);
    float *d_x = up(x, (size_t)G_N * G_C), *d_w = up(w, (size_t)G_C * 4 * G_C), *d_b = up(b, 4 * G_C);
    float *d_h = poisoned((size_t)G_N * 4 * G_C), *d_a = poisoned((size_t)G_N * 4 * G_C);
    MN_OP(&gpu, linear_forward, d_h, d_x, d_w, d_b, G_N, G_C, 4 * G_C);
    MN_OP(&gpu, gelu_forward, d_a, d_h, (size_t)G_N * 4 * G_C);
    float *g_a = down(d_a, (size_t)G_N * 4 * G_C);
    expect_fp32("GPT-2 MLP fc + GELU", g_a, a, NULL, (size_t)G_N * 4 * G_C);
    float *w2 = randoms((size_t)4 * G_C * G_C, -0.1, 0.1), *dy = randoms((size_t)G_N * G_C, -1, 1);
    float *d_w2 = up(w2, (size_t)4 * G_C * G_C), *d_dy = up(dy, (size_t)G_N * G_C);
    grad_buf da = grad((size_t)G_N * 4 * G_C), dw2 = grad((size_t)4 * G_C * G_C), db2 = grad(G_C);
    MN_OP(&cpu, linear_backward, da.cpu, dw2.cpu, db2.cpu, dy, a, w2, G_N, 4 * G_C, G_C);
    MN_OP(&gpu, linear_backward, da.dev, dw2.dev, db2.dev, d_dy, d_a, d_w2, G_N, 4 * G_C, G_C);
    expect_grad("GPT-2 MLP proj dinp", &da);
    expect_grad("GPT-2 MLP proj dweight", &dw2);
    expect_grad("GPT-2 MLP proj dbias", &db2);
    free(w), free(b), free(h), free(a), free(g_a), free(w2), free(dy);
    gfree(d_w), gfree(d_b), gfree(d_h), gfree(d_a), gfree(d_w2), gfree(d_dy);
    free_grad(&da), free_grad(&dw2), free_grad(&db2);

    /* the tied head over the whole vocabulary and the loss on it */
    float *wte = randoms((size_t)G_V * G_C, -0.1, 0.1), *logits = nans((size_t)G_N * G_V);
    MN_OP(&cpu, lm_head_forward, logits, x, wte, G_N, G_C, G_V);
    float *d_wte = up(wte, (size_t)G_V * G_C), *d_logits = poisoned((size_t)G_N * G_V);
    MN_OP(&gpu, lm_head_forward, d_logits, d_x, d_wte, G_N, G_C, G_V);
    float *g_logits = down(d_logits, (size_t)G_N * G_V);
    expect_fp32("GPT-2 lm_head logits", g_logits, logits, NULL, (size_t)G_N * G_V);
    int32_t *targets = malloc(G_N * sizeof(int32_t));
    float *weights = randoms(G_N, 0.5, 1.5), *losses = nans(G_N);
    assert_non_null(targets);
    for (int n = 0; n < G_N; n++)
        targets[n] = (int32_t)(uniform01() * G_V);
    MN_OP(&cpu, crossentropy_forward, losses, logits, targets, weights, G_N, G_V);
    int32_t *d_t = up_ints(targets, G_N);
    float *d_wt = up(weights, G_N), *d_losses = poisoned(G_N);
    MN_OP(&gpu, crossentropy_forward, d_losses, d_logits, d_t, d_wt, G_N, G_V);
    float *g_losses = down(d_losses, G_N);
    expect_fp32("GPT-2 crossentropy losses", g_losses, losses, NULL, G_N);
    /* fused loss and gradient, written over copies of the CPU's logits */
    float *dl_cpu = host_copy(logits, (size_t)G_N * G_V), *d_dlog = up(logits, (size_t)G_N * G_V);
    MN_OP(&cpu, crossentropy_fused, losses, dl_cpu, targets, weights, 1.0f / G_N, G_N, G_V);
    MN_OP(&gpu, crossentropy_fused, d_losses, d_dlog, d_t, d_wt, 1.0f / G_N, G_N, G_V);
    float *g_dl = down(d_dlog, (size_t)G_N * G_V);
    expect_fp32("GPT-2 crossentropy fused dlogits", g_dl, dl_cpu, NULL, (size_t)G_N * G_V);
    /* both sides go on from the CPU's dlogits: the head's check is then its own */
    grad_buf dx = grad((size_t)G_N * G_C), dwte = grad((size_t)G_V * G_C);
    float *d_dl = up(dl_cpu, (size_t)G_N * G_V);
    MN_OP(&cpu, lm_head_backward, dx.cpu, dwte.cpu, dl_cpu, x, wte, G_N, G_C, G_V);
    MN_OP(&gpu, lm_head_backward, dx.dev, dwte.dev, d_dl, d_x, d_wte, G_N, G_C, G_V);
    expect_grad("GPT-2 lm_head dinp", &dx);
    expect_grad("GPT-2 lm_head dwte", &dwte);
    free(x), free(wte), free(logits), free(g_logits), free(targets), free(weights), free(losses), free(g_losses);
    gfree(d_x), gfree(d_wte), gfree(d_logits), gfree(d_t), gfree(d_wt), gfree(d_losses), gfree(d_dl);
    free(dl_cpu), free(g_dl), gfree(d_dlog);
    free_grad(&dx), free_grad(&dwte);

    /* the compressor's gated update over 32 slots of both episodes */
    enum { M = 32 * G_B };
    float *r = randoms((size_t)M * G_C, -1, 1), *u = randoms((size_t)M * G_C, -1, 1);
    float *gw = randoms(2 * (size_t)G_C * G_C, -0.05, 0.05), *gb = randoms(G_C, -1, 1);
    float *r_out = nans((size_t)M * G_C), *z = nans((size_t)M * G_C);
    MN_OP(&cpu, gated_update_forward, r_out, z, r, u, gw, gb, M, G_C);
    float *d_r = up(r, (size_t)M * G_C), *d_u = up(u, (size_t)M * G_C), *d_gw = up(gw, 2 * (size_t)G_C * G_C);
    float *d_gb = up(gb, G_C), *d_rout = poisoned((size_t)M * G_C), *d_z = poisoned((size_t)M * G_C);
    MN_OP(&gpu, gated_update_forward, d_rout, d_z, d_r, d_u, d_gw, d_gb, M, G_C);
    float *g_rout = down(d_rout, (size_t)M * G_C);
    expect_fp32("GPT-2 gated update r_out", g_rout, r_out, NULL, (size_t)M * G_C);
    free(r), free(u), free(gw), free(gb), free(r_out), free(z), free(g_rout);
    gfree(d_r), gfree(d_u), gfree(d_gw), gfree(d_gb), gfree(d_rout), gfree(d_z);
}

/* ---------------------------------------------------------------- tensor-core products */
static void matmul_precision_case(mn_matmul precision, double atol, const char *what) {
    enum { N = 96, IC = 128, OC = 160 };
    float *x = randoms((size_t)N * IC, -1, 1), *w = randoms((size_t)IC * OC, -1, 1), *b = randoms(OC, -1, 1);
    float *out = nans((size_t)N * OC);
    MN_OP(&cpu, linear_forward, out, x, w, b, N, IC, OC);
    assert_int_equal(gpu.be->set_matmul(gpu.ctx, precision), MN_OK);
    float *d_x = up(x, (size_t)N * IC), *d_w = up(w, (size_t)IC * OC), *d_b = up(b, OC);
    float *d_out = poisoned((size_t)N * OC);
    MN_OP(&gpu, linear_forward, d_out, d_x, d_w, d_b, N, IC, OC);
    float *got = down(d_out, (size_t)N * OC);
    assert_int_equal(gpu.be->set_matmul(gpu.ctx, MN_MATMUL_FP32), MN_OK);
    expect_close(what, got, out, NULL, (size_t)N * OC, 0.0, atol);
    free(x), free(w), free(b), free(out), free(got);
    gfree(d_x), gfree(d_w), gfree(d_b), gfree(d_out);
}

static void test_tensor_core_products(void **state) {
    (void)state;
    NEED_GPU();
#ifdef MN_TEST_GUARDED
    skip(); /* the stand-in's products are the CPU's fp32 */
#endif
    matmul_precision_case(MN_MATMUL_TF32, TF32_ATOL, "linear with TF32 products");
    matmul_precision_case(MN_MATMUL_BF16, BF16_ATOL, "linear with BF16 products");
}

/* ---------------------------------------------------------------- main */
static int group_setup(void **state) {
    (void)state;
    const char *fixed = getenv("MNEMO_TEST_SEED");
    uint64_t seed = fixed ? strtoull(fixed, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    rng_state = seed ? seed : 1;
    print_message("seed %llu (MNEMO_TEST_SEED=%llu repeats this run)\n", (unsigned long long)seed,
                  (unsigned long long)seed);
    if (mn_exec_open(MN_DEVICE_CPU, &cpu) != MN_OK)
        return -1;
#ifdef MN_TEST_GUARDED
    if (mn_exec_open_backend(mn_guarded_backend(), &gpu) != MN_OK)
        return -1;
#else
    if (have_gpu && mn_exec_open(MN_DEVICE_CUDA, &gpu) != MN_OK) {
        print_error("a GPU answers but the CUDA backend does not open: %s\n", mn_last_error());
        return -1;
    }
#endif
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    if (have_gpu)
        mn_exec_close(&gpu);
    mn_exec_close(&cpu);
    return 0;
}

int main(void) {
#ifdef MN_TEST_GUARDED
    have_gpu = 1; /* the guarded host backend stands in for the GPU */
#else
    int count = 0;
    have_gpu = mn_cuda_device_count(&count) == MN_OK && count > 0;
    if (!have_gpu)
        printf("no GPU (%s): every test is skipped\n", count == 0 && mn_last_error()[0] ? mn_last_error() : "none found");
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_lm_head),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_residual),
        cmocka_unit_test(test_gated_update),
        cmocka_unit_test(test_slot_write),
        cmocka_unit_test(test_crossentropy),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_reductions_and_copies),
        cmocka_unit_test(test_gpt2_shapes),
        cmocka_unit_test(test_tensor_core_products),
    };
#ifdef MN_TEST_GUARDED
    return cmocka_run_group_tests_name("ops_logic", tests, group_setup, group_teardown);
#endif
    int failed = cmocka_run_group_tests_name("cuda_ops", tests, group_setup, group_teardown);
    return have_gpu ? failed : 77; /* 77: meson counts the test as skipped */
}
