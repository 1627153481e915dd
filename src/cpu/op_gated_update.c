/* Gated memory update: z = sigmoid(r_prev @ Wr + u @ Wu + b);  r_out = (1 - z) r_prev + z u.
 * gate_w (2C, C): rows 0..C-1 are Wr, rows C..2C-1 are Wu. Products by mn_sgemm. */
#include "cpu/ops.h"
#include "cpu/team.h"
#include "cpu/vec.h"

/* Channels per slice in the bias-gradient sum: one thread owns a whole slice. */
#define MN_GATE_CHANNEL_BLOCK 64

// z's rows := the bias (the products add onto it)
static void gate_bias_rows_part(float *z, const float *gate_b, int M, int C, int t, int nt) {
    size_t m0, m1;
    mn_share((size_t)M, 1, t, nt, &m0, &m1);
    for (size_t m = m0; m < m1; m++) {
        float *zr = z + m * C;
        for (int c = 0; c < C; c++) {
            zr[c] = gate_b[c];
        }
    }
}

// z := sigmoid(z);  r_out = (1 - z) r_prev + z u
static void gate_mix_part(float *r_out, float *z, const float *r_prev, const float *u, size_t total, int t, int nt) {
    size_t i0, i1;
    mn_share(total, 1, t, nt, &i0, &i1);
    #pragma omp simd
    for (size_t i = i0; i < i1; i++) {
        float g = 1.0f / (1.0f + mn_expf(-z[i]));
        z[i] = g;
        r_out[i] = (1.0f - g) * r_prev[i] + g * u[i];
    }
}

// r_prev (M, C), u (M, C), gate_w (2C, C), gate_b (C) -> r_out (M, C), z (M, C)
void mn_gated_update_forward(float *r_out, float *z, const float *r_prev, const float *u,
                             const float *gate_w, const float *gate_b, int M, int C, int threads) {
    const float *w_r = gate_w;                     // (C, C)
    const float *w_u = gate_w + (size_t)C * C;     // (C, C)
    // z holds the pre-activation first: bias rows, then both products added by sgemm
    size_t total = (size_t)M * C;
    const int team = mn_team(threads, (double)total, MN_PAR_MIN_ELEMS);
    MN_RUN_TEAM(team, gate_bias_rows_part, z, gate_b, M, C);
    mn_sgemm(0, 0, M, C, C, 1.0f, r_prev, C, w_r, C, 1.0f, z, C, threads);
    mn_sgemm(0, 0, M, C, C, 1.0f, u, C, w_u, C, 1.0f, z, C, threads);
    // elementwise after the products, so r_out may alias r_prev
    MN_RUN_TEAM(team, gate_mix_part, r_out, z, r_prev, u, total);
}

// the direct paths through the interpolation, and the gate's pre-activation gradient dpre
static void gate_mix_backward_part(float *dr_prev, float *du, float *dpre, const float *dr_out, const float *r_prev,
                                   const float *u, const float *z, size_t total, int t, int nt) {
    size_t i0, i1;
    mn_share(total, 1, t, nt, &i0, &i1);
    #pragma omp simd
    for (size_t i = i0; i < i1; i++) {
        float g = z[i];
        float dy = dr_out[i];
        dr_prev[i] += (1.0f - g) * dy;
        du[i] += g * dy;
        dpre[i] = dy * (u[i] - r_prev[i]) * g * (1.0f - g);
    }
}

// dgate_b (C) += column sums of dpre; threads split the channels (sums run in m order)
static void gate_bias_grad_part(float *dgate_b, const float *dpre, int M, int C, int t, int nt) {
    size_t b0, b1;
    mn_share((size_t)(C + MN_GATE_CHANNEL_BLOCK - 1) / MN_GATE_CHANNEL_BLOCK, 1, t, nt, &b0, &b1);
    for (size_t blk = b0; blk < b1; blk++) {
        int c0 = (int)blk * MN_GATE_CHANNEL_BLOCK;
        int c1 = c0 + MN_GATE_CHANNEL_BLOCK < C ? c0 + MN_GATE_CHANNEL_BLOCK : C;
        for (int m = 0; m < M; m++) {
            const float *dp = dpre + (size_t)m * C;
            for (int c = c0; c < c1; c++) {
                dgate_b[c] += dp[c];
            }
        }
    }
}

// dr_out (M, C) -> dr_prev (M, C) +=, du (M, C) +=, dgate_w (2C, C) +=, dgate_b (C) +=
// scratch (M, C) receives the gradient of the gate pre-activation.
void mn_gated_update_backward(float *dr_prev, float *du, float *dgate_w, float *dgate_b,
                              const float *dr_out, const float *r_prev, const float *u,
                              const float *z, const float *gate_w, float *scratch, int M, int C, int threads) {
    const float *w_r = gate_w;
    const float *w_u = gate_w + (size_t)C * C;
    float *dw_r = dgate_w;
    float *dw_u = dgate_w + (size_t)C * C;
    size_t total = (size_t)M * C;
    float *dpre = scratch;   // (M, C)
    const int team = mn_team(threads, (double)total, MN_PAR_MIN_ELEMS);
    MN_RUN_TEAM(team, gate_mix_backward_part, dr_prev, du, dpre, dr_out, r_prev, u, z, total);
    MN_RUN_TEAM(team, gate_bias_grad_part, dgate_b, dpre, M, C);
    // dWr (C, C) += r_prev^T @ dpre;  dWu (C, C) += u^T @ dpre
    mn_sgemm(1, 0, C, C, M, 1.0f, r_prev, C, dpre, C, 1.0f, dw_r, C, threads);
    mn_sgemm(1, 0, C, C, M, 1.0f, u, C, dpre, C, 1.0f, dw_u, C, threads);
    // dr_prev (M, C) += dpre @ Wr^T;  du (M, C) += dpre @ Wu^T
    mn_sgemm(0, 1, M, C, C, 1.0f, dpre, C, w_r, C, 1.0f, dr_prev, C, threads);
    mn_sgemm(0, 1, M, C, C, 1.0f, dpre, C, w_u, C, 1.0f, du, C, threads);
}
