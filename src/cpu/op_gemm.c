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

#include <cblas.h>

/* Below this many multiply-adds one thread does the whole product (a split costs more). */
#define MN_GEMM_SPLIT_MIN_MACS (1 << 18)
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

void mn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc, int threads) {
    if (M <= 0 || N <= 0)
        return;
    if (threads <= 1 || (double)M * N * K < (double)MN_GEMM_SPLIT_MIN_MACS) {
        sgemm_call(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    // split the longer side of C into one aligned panel per thread
    int split_n = N >= M;
    int len = split_n ? N : M;
    int panel = (len + threads - 1) / threads;
    panel = (panel + MN_GEMM_PANEL_ALIGN - 1) / MN_GEMM_PANEL_ALIGN * MN_GEMM_PANEL_ALIGN;
    int n_panels = (len + panel - 1) / panel;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int p = 0; p < n_panels; p++) {
        int i0 = p * panel;
        int n = len - i0 < panel ? len - i0 : panel;
        if (split_n) {
            // columns i0.. of C: columns of op(B) = rows of B if transposed
            const float *Bp = trans_b ? B + (size_t)i0 * ldb : B + i0;
            sgemm_call(trans_a, trans_b, M, n, K, alpha, A, lda, Bp, ldb, beta, C + i0, ldc);
        } else {
            // rows i0.. of C: rows of op(A) = columns of A if transposed
            const float *Ap = trans_a ? A + i0 : A + (size_t)i0 * lda;
            sgemm_call(trans_a, trans_b, n, N, K, alpha, Ap, lda, B, ldb, beta, C + (size_t)i0 * ldc, ldc);
        }
    }
}
