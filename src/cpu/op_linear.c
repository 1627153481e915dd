/* Linear layer in GPT-2's Conv1D layout: y = x @ W + b, W (IC, OC). Products by mn_sgemm's panels. */
#include "cpu/ops.h"
#include "cpu/team.h"
#include "cpu/vec.h"

/* Output channels per slice in the bias-gradient sum: one thread owns a whole slice. */
#define MN_LINEAR_CHANNEL_BLOCK 64

/* Every op here is one parallel region (MN_RUN_TEAM): a product's panels (mn_gemm_plan) and the
 * elementwise work beside them are shared out inside it, so the team wakes once per op (a wake
 * costs tens of microseconds on a loaded machine: docs/perf.md). The panels and loops are those
 * of separate calls, so the bits are too. */

// thread t of nt's panels of the product, each preloaded with the bias first
static void linear_forward_part(const mn_gemm_plan *g, float *out, const float *bias, int N, int OC, int t, int nt) {
    size_t p0, p1;
    mn_share((size_t)g->n_panels, 1, t, nt, &p0, &p1);
    for (int p = (int)p0; p < (int)p1; p++) {
        if (bias != NULL) {
            int r0 = g->split_n ? 0 : p * g->panel, r1 = g->split_n ? N : r0 + g->panel < N ? r0 + g->panel : N;
            int c0 = g->split_n ? p * g->panel : 0, c1 = g->split_n ? (c0 + g->panel < OC ? c0 + g->panel : OC) : OC;
            for (int n = r0; n < r1; n++) {
                float *y = out + (size_t)n * OC;
                for (int o = c0; o < c1; o++) {
                    y[o] = bias[o];
                }
            }
        }
        mn_gemm_plan_run(g, p);
    }
}

// inp (N, IC), weight (IC, OC), bias (OC) or NULL -> out (N, OC)
void mn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IC, int OC, int threads) {
    // out (N, OC) = inp (N, IC) @ weight (IC, OC) [+ out], out preloaded with the bias so that
    // the product with beta = 1 adds onto it; each panel preloads its own part of out
    mn_gemm_plan g = mn_sgemm_plan(0, 0, N, OC, IC, 1.0f, inp, IC, weight, OC, bias ? 1.0f : 0.0f, out, OC, threads);
    MN_RUN_TEAM(mn_team(threads, g.n_panels, 2), linear_forward_part, &g, out, bias, N, OC);
}

// column sums of dout's channels o0 .. o1-1 into dbias, in n order
static void bias_grad_block(float *dbias, const float *dout, int N, int OC, int o0, int o1) {
    // the running sums live in a local block (registers), not in dbias: dbias may alias
    // nothing here, but the compiler cannot know, and reloaded it for every row
    float acc[MN_LINEAR_CHANNEL_BLOCK];
    for (int o = o0; o < o1; o++)
        acc[o - o0] = dbias[o];
    for (int n = 0; n < N; n++) {
        const float *dy = dout + (size_t)n * OC + o0;
        for (int o = 0; o < o1 - o0; o++) {
            acc[o] += dy[o];
        }
    }
    for (int o = o0; o < o1; o++)
        dbias[o] = acc[o - o0];
}

// thread t of nt's share of each of the three independent outputs: no thread waits between them
static void linear_backward_part(const mn_gemm_plan *gi, const mn_gemm_plan *gw, float *dbias, const float *dout,
                                 int N, int OC, int n_blocks, int t, int nt) {
    size_t i0, i1;
    mn_share((size_t)gi->n_panels, 1, t, nt, &i0, &i1);
    for (size_t p = i0; p < i1; p++)
        mn_gemm_plan_run(gi, (int)p);
    mn_share((size_t)gw->n_panels, 1, t, nt, &i0, &i1);
    for (size_t p = i0; p < i1; p++)
        mn_gemm_plan_run(gw, (int)p);
    mn_share((size_t)n_blocks, 1, t, nt, &i0, &i1);
    for (size_t blk = i0; blk < i1; blk++) {
        int o0 = (int)blk * MN_LINEAR_CHANNEL_BLOCK, o1 = o0 + MN_LINEAR_CHANNEL_BLOCK;
        bias_grad_block(dbias, dout, N, OC, o0, o1 < OC ? o1 : OC);
    }
}

// dout (N, OC) -> dinp (N, IC) += (if not NULL), dweight (IC, OC) +=, dbias (OC) += (if not NULL)
void mn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IC, int OC, int threads) {
    // dinp (N, IC) += dout (N, OC) @ weight^T (OC, IC)
    mn_gemm_plan gi = mn_sgemm_plan(0, 1, N, IC, OC, 1.0f, dout, OC, weight, OC, 1.0f, dinp, IC, threads);
    if (dinp == NULL)
        gi.n_panels = 0;
    // dweight (IC, OC) += inp^T (IC, N) @ dout (N, OC)
    mn_gemm_plan gw = mn_sgemm_plan(1, 0, IC, OC, N, 1.0f, inp, IC, dout, OC, 1.0f, dweight, OC, threads);
    // bias: column sums; threads split the channels so every sum runs in n order
    int n_blocks = dbias ? (OC + MN_LINEAR_CHANNEL_BLOCK - 1) / MN_LINEAR_CHANNEL_BLOCK : 0;
    int par = gi.n_panels > 1 || gw.n_panels > 1 || (n_blocks && (size_t)N * OC >= MN_PAR_MIN_ELEMS);
    MN_RUN_TEAM(mn_team(threads, par, 1), linear_backward_part, &gi, &gw, dbias, dout, N, OC, n_blocks);
}
