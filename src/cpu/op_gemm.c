/* Matrix products for the ops: who runs them on which threads.
 *
 * With Debian's pthread OpenBLAS, OpenBLAS keeps its own worker threads next to OpenMP's. On two
 * cores the two pools take turns: after every product OpenBLAS's workers spin (sched_yield) while
 * OpenMP runs the next elementwise op, and OpenMP's workers spin while OpenBLAS runs; profiles of
 * a training step showed ~40% of the time in that spinning (docs/perf.md). So:
 *   - OpenBLAS single-threaded (OPENBLAS_NUM_THREADS=1, or the serial build): mn_sgemm splits the
 *     product into column (or row) panels over the OpenMP team, one single-threaded OpenBLAS
 *     call per thread. One pool of threads for everything.
 *   - OpenBLAS built with OpenMP (libopenblas0-openmp): it already runs on OpenMP's team, and
 *     inside a parallel region it runs single-threaded by itself; mn_sgemm calls it directly.
 *   - pthread OpenBLAS with several threads: mn_sgemm calls it directly (two pools, as before).
 * The split depends only on the shapes and the thread count: deterministic for a fixed count. */
#include "cpu/ops.h"

#include <cblas.h>
#include <omp.h>

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

int mn_blas_on_openmp(void) {
    // 2 = OpenBLAS built with OpenMP; otherwise only a single-threaded OpenBLAS leaves the
    // cores to the OpenMP team
    return openblas_get_parallel() == 2 || openblas_get_num_threads() == 1;
}

void mn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0)
        return;
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (openblas_get_num_threads() != 1 || threads == 1 ||
        (double)M * N * K < (double)MN_GEMM_SPLIT_MIN_MACS) {
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
