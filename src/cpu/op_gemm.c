/* Matrix products for the ops: who runs them on which threads.
 *
 * With Debian's pthread OpenBLAS, OpenBLAS keeps its own worker threads next to OpenMP's. On two
 * cores the two pools take turns: after every product OpenBLAS's workers spin (sched_yield) while
 * OpenMP runs the next elementwise op, and OpenMP's workers spin while OpenBLAS runs; profiles of
 * a training step showed ~40% of the time in that spinning (docs/perf.md). So mn_sgemm splits
 * the product into column (or row) panels over the caller's `threads` OpenMP threads, one
 * OpenBLAS call per thread: one pool of threads for everything when OpenBLAS is single-threaded
 * (OPENBLAS_NUM_THREADS=1, or what the mnemo CLI sets in main()).
 *
 * The library never changes OpenBLAS's thread count (a process-wide setting) and never decides
 * by it: with a multi-threaded OpenBLAS each panel call is threaded again by OpenBLAS, which is
 * correct but oversubscribes the cores (slower). The split depends only on the shapes and
 * `threads`: deterministic for a fixed count. Across counts the panels have other widths, and
 * some OpenBLAS kernels (Haswell, Zen) round an element differently in another panel shape, so
 * results agree to rounding, not bit for bit (docs/model.md). */
#include "cpu/ops.h"
#include "cpu/team.h"

#include <cblas.h>

/* Panel widths are multiples of this (OpenBLAS's sgemm micro-kernel tiles are 16 x 4 / 8 x 8). */
#define MN_GEMM_PANEL_ALIGN 16

static void sgemm_call(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void mn_sgemm_serial(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0)
        return;
    sgemm_call(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

mn_gemm_plan mn_sgemm_plan(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C, int ldc, int threads) {
    mn_gemm_plan p = {trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, 1, 0, 0};
    if (M <= 0 || N <= 0)
        return p;
    if (threads <= 1 || (double)M * N * K < (double)MN_GEMM_SPLIT_MIN_MACS) {
        p.panel = N, p.n_panels = 1;
        return p;
    }
    // split the longer side of C into one aligned panel per thread
    p.split_n = N >= M;
    int len = p.split_n ? N : M;
    int panel = (len + threads - 1) / threads;
    p.panel = (panel + MN_GEMM_PANEL_ALIGN - 1) / MN_GEMM_PANEL_ALIGN * MN_GEMM_PANEL_ALIGN;
    p.n_panels = (len + p.panel - 1) / p.panel;
    return p;
}

void mn_gemm_plan_run(const mn_gemm_plan *g, int p) {
    int len = g->split_n ? g->N : g->M;
    int i0 = p * g->panel;
    int n = len - i0 < g->panel ? len - i0 : g->panel;
    if (g->split_n) {
        // columns i0.. of C: columns of op(B) = rows of B if transposed
        const float *Bp = g->trans_b ? g->B + (size_t)i0 * g->ldb : g->B + i0;
        sgemm_call(g->trans_a, g->trans_b, g->M, n, g->K, g->alpha, g->A, g->lda, Bp, g->ldb, g->beta, g->C + i0,
                   g->ldc);
    } else {
        // rows i0.. of C: rows of op(A) = columns of A if transposed
        const float *Ap = g->trans_a ? g->A + i0 : g->A + (size_t)i0 * g->lda;
        sgemm_call(g->trans_a, g->trans_b, n, g->N, g->K, g->alpha, Ap, g->lda, g->B, g->ldb, g->beta,
                   g->C + (size_t)i0 * g->ldc, g->ldc);
    }
}

static void gemm_panels_part(const mn_gemm_plan *g, int t, int nt) {
    size_t p0, p1;
    mn_share((size_t)g->n_panels, 1, t, nt, &p0, &p1);
    for (size_t p = p0; p < p1; p++)
        mn_gemm_plan_run(g, (int)p);
}

void mn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc, int threads) {
    mn_gemm_plan g = mn_sgemm_plan(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, threads);
    // the panels, not the team, fix the bits: inside a parallel region they run on this thread
    MN_RUN_TEAM(mn_team(threads, g.n_panels, 2), gemm_panels_part, &g);
}
