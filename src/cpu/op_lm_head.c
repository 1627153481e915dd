/* Tied output head: logits = x @ wte^T. Products by mn_sgemm, but for a few rows (greedy
 * generation: one row per live sequence) by a kernel that reads wte as it lies. */
#include "cpu/ops.h"
#include "cpu/team.h"

#include <stdlib.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HEAD_ROWS_KERNEL 1
_Static_assert(MN_LM_HEAD_STREAM_ROWS <= 8, "the few-rows kernel holds a row in each of 8 lanes");

/* logits[n][v0 .. v0+8) for the n < N <= 8 rows of xT (C, 8): lanes are the input rows, one
 * chain of fused multiply-adds per vocabulary row in c order, as OpenBLAS's sgemm kernels sum an
 * element (on the development machine the logits equal its bit for bit). Rows past V repeat
 * row V-1 and are not stored. Fused multiply-adds, so AVX + FMA (head_rows_kernel_runs). */
__attribute__((target("avx,fma")))
static void head_vocab_block(float *logits, const float *xT, const float *wte, int N, int C, int V, int v0) {
    const float *w[8];
    for (int j = 0; j < 8; j++)
        w[j] = wte + (size_t)(v0 + j < V ? v0 + j : V - 1) * C;
    const float *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3], *w4 = w[4], *w5 = w[5], *w6 = w[6], *w7 = w[7];
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int c = 0; c < C; c++) {
        __m256 x = _mm256_loadu_ps(xT + (size_t)c * 8);
        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w0 + c), x, a0);
        a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(w1 + c), x, a1);
        a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(w2 + c), x, a2);
        a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(w3 + c), x, a3);
        a4 = _mm256_fmadd_ps(_mm256_broadcast_ss(w4 + c), x, a4);
        a5 = _mm256_fmadd_ps(_mm256_broadcast_ss(w5 + c), x, a5);
        a6 = _mm256_fmadd_ps(_mm256_broadcast_ss(w6 + c), x, a6);
        a7 = _mm256_fmadd_ps(_mm256_broadcast_ss(w7 + c), x, a7);
    }
    float t[8][8]; // t[j][n]: vocabulary row v0 + j, input row n
    _mm256_storeu_ps(t[0], a0);
    _mm256_storeu_ps(t[1], a1);
    _mm256_storeu_ps(t[2], a2);
    _mm256_storeu_ps(t[3], a3);
    _mm256_storeu_ps(t[4], a4);
    _mm256_storeu_ps(t[5], a5);
    _mm256_storeu_ps(t[6], a6);
    _mm256_storeu_ps(t[7], a7);
    for (int n = 0; n < N; n++)
        for (int j = 0; j < 8 && v0 + j < V; j++)
            logits[(size_t)n * V + v0 + j] = t[j][n];
}

static void head_vocab_blocks_part(float *logits, const float *xT, const float *wte, int N, int C, int V, int t,
                                   int nt) {
    size_t b0, b1;
    mn_share((size_t)(V + 7) / 8, 1, t, nt, &b0, &b1);
    for (size_t b = b0; b < b1; b++)
        head_vocab_block(logits, xT, wte, N, C, V, (int)b * 8);
}

static int head_rows_kernel_runs(void) {
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("fma");
}
#else
#define HEAD_ROWS_KERNEL 0
#endif

// inp (N, C), wte (V, C) -> logits (N, V)
void mn_lm_head_forward(float *logits, const float *inp, const float *wte, int N, int C, int V, int threads) {
#if HEAD_ROWS_KERNEL
    /* A few rows: sgemm would pack all of wte for them (most of its time at 5 rows); the kernel
     * reads it once as it lies. On the development machine, V 4096, C 64: 1.6x sgemm's speed at
     * 5 and 8 rows, 1.3x at 1. */
    float *xT = N <= MN_LM_HEAD_STREAM_ROWS && head_rows_kernel_runs() ? calloc((size_t)C * 8, sizeof(float)) : NULL;
    if (xT) {
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++)
                xT[(size_t)c * 8 + n] = inp[(size_t)n * C + c];
        MN_RUN_TEAM(mn_team(threads, (double)N * V * C, MN_GEMM_SPLIT_MIN_MACS), head_vocab_blocks_part, logits, xT,
                    wte, N, C, V);
        free(xT);
        return;
    }
#endif
    // logits (N, V) = inp (N, C) @ wte^T (C, V)
    mn_sgemm(0, 1, N, V, C, 1.0f, inp, C, wte, C, 0.0f, logits, V, threads);
}

// dlogits (N, V) -> dinp (N, C) +=, dwte (V, C) +=
void mn_lm_head_backward(float *dinp, float *dwte, const float *dlogits, const float *inp,
                         const float *wte, int N, int C, int V, int threads) {
    // dinp (N, C) += dlogits (N, V) @ wte (V, C)
    mn_sgemm(0, 0, N, C, V, 1.0f, dlogits, V, wte, C, 1.0f, dinp, C, threads);
    // dwte (V, C) += dlogits^T (V, N) @ inp (N, C)
    mn_sgemm(1, 0, V, C, N, 1.0f, dlogits, V, inp, C, 1.0f, dwte, C, threads);
}
