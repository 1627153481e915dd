/* LayerNorm over the last dimension (eps 1e-5, biased variance, as PyTorch). */
#include "cpu/ops.h"
#include "cpu/team.h"
#include "cpu/vec.h"

#include <math.h>

#define MN_LAYERNORM_EPS 1e-5f
/* Channels per slice in the weight-gradient sums: one thread owns a whole slice. */
#define MN_LAYERNORM_CHANNEL_BLOCK 32

/* One row; simd reductions have a fixed lane order per build (deterministic). */
MN_VEC_CLONES
static void layernorm_row(float *y, float *mean, float *rstd, const float *x, const float *weight,
                          const float *bias, int C) {
    // two passes (mean, then centred squares) avoid the cancellation of E[x^2] - E[x]^2
    float m = 0.0f;
    #pragma omp simd reduction(+ : m)
    for (int c = 0; c < C; c++) {
        m += x[c];
    }
    m /= (float)C;
    float var = 0.0f;
    #pragma omp simd reduction(+ : var)
    for (int c = 0; c < C; c++) {
        float d = x[c] - m;
        var += d * d;
    }
    var /= (float)C;
    float s = 1.0f / sqrtf(var + MN_LAYERNORM_EPS);
    for (int c = 0; c < C; c++) {
        y[c] = (x[c] - m) * s * weight[c] + bias[c];
    }
    *mean = m;
    *rstd = s;
}

static void layernorm_rows_part(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                                const float *bias, int N, int C, int t, int nt) {
    size_t n0, n1;
    mn_share((size_t)N, 1, t, nt, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        layernorm_row(out + n * C, mean + n, rstd + n, inp + n * C, weight, bias, C);
    }
}

// inp (N, C), weight (C), bias (C) -> out (N, C), mean (N), rstd (N)
void mn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)N * C, MN_PAR_MIN_ELEMS), layernorm_rows_part, out, mean, rstd, inp, weight,
                bias, N, C);
}

// dx (C) += input gradient of one row
MN_VEC_CLONES
static void layernorm_backward_row(float *dx, const float *dy, const float *x, const float *weight,
                                   float m, float s, int C) {
    // dx = s * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * weight
    float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
    #pragma omp simd reduction(+ : dnorm_mean, dnorm_norm_mean)
    for (int c = 0; c < C; c++) {
        float xhat = (x[c] - m) * s;
        float dxhat = dy[c] * weight[c];
        dnorm_mean += dxhat;
        dnorm_norm_mean += dxhat * xhat;
    }
    dnorm_mean /= (float)C;
    dnorm_norm_mean /= (float)C;
    for (int c = 0; c < C; c++) {
        float xhat = (x[c] - m) * s;
        float dxhat = dy[c] * weight[c];
        dx[c] += s * (dxhat - dnorm_mean - xhat * dnorm_norm_mean);
    }
}

// thread t of nt's rows of the input gradient and channel blocks of the parameter gradients
static void layernorm_backward_part(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                    const float *weight, const float *mean, const float *rstd, int N, int C, int t,
                                    int nt) {
    // input gradient: rows are independent
    size_t n0, n1;
    mn_share((size_t)N, 1, t, nt, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        layernorm_backward_row(dinp + n * C, dout + n * C, inp + n * C, weight, mean[n], rstd[n], C);
    }
    // parameter gradients: sums over rows; threads split the channels so every sum runs in
    // n order on one thread (deterministic for any thread count)
    size_t b0, b1;
    mn_share((size_t)(C + MN_LAYERNORM_CHANNEL_BLOCK - 1) / MN_LAYERNORM_CHANNEL_BLOCK, 1, t, nt, &b0, &b1);
    for (size_t blk = b0; blk < b1; blk++) {
        int c0 = (int)blk * MN_LAYERNORM_CHANNEL_BLOCK;
        int c1 = c0 + MN_LAYERNORM_CHANNEL_BLOCK < C ? c0 + MN_LAYERNORM_CHANNEL_BLOCK : C;
        // running sums in local blocks (registers) rather than reloaded from memory every row
        float acc_w[MN_LAYERNORM_CHANNEL_BLOCK], acc_b[MN_LAYERNORM_CHANNEL_BLOCK];
        for (int c = c0; c < c1; c++) {
            acc_w[c - c0] = dweight[c];
            acc_b[c - c0] = dbias[c];
        }
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C + c0;
            const float *dy = dout + (size_t)n * C + c0;
            float m = mean[n], s = rstd[n];
            for (int c = 0; c < c1 - c0; c++) {
                acc_w[c] += dy[c] * (x[c] - m) * s;
                acc_b[c] += dy[c];
            }
        }
        for (int c = c0; c < c1; c++) {
            dweight[c] = acc_w[c - c0];
            dbias[c] = acc_b[c - c0];
        }
    }
}

// dout (N, C) -> dinp (N, C) +=, dweight (C) +=, dbias (C) +=
void mn_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C, int threads) {
    // one team for both parts, which are independent: no second wake of the team
    MN_RUN_TEAM(mn_team(threads, (double)N * C, MN_PAR_MIN_ELEMS), layernorm_backward_part, dinp, dweight, dbias, dout,
                inp, weight, mean, rstd, N, C);
}
