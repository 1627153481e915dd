/* Shared by the CUDA backend's .cu files: the context, error recording, launch helpers,
 * the cuBLAS product helpers and the deterministic reductions. */
#ifndef MN_CUDA_COMMON_H
#define MN_CUDA_COMMON_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "cuda/ops_cuda.h"

/* Everything the backend needs per model or trainer: no globals. */
struct mn_cuda_context {
    int device;
    cudaStream_t stream;             /* every kernel, copy and cuBLAS call of this context */
    cublasHandle_t cublas;           /* bound to stream */
    cublasComputeType_t compute;     /* fp32, or tf32 / bf16 tensor cores (mn_matmul) */
    void *workspace;                 /* scratch of the ops (attention, column sums, reductions) */
    size_t workspace_bytes;
    unsigned long graph_epoch;       /* bumped when the workspace moves or the precision changes: graphs
                                      * captured before hold the old pointer or compute type, stale */
    cudaEvent_t fences[2];           /* the async table's fences, created at first use */
    double *reduce_result;           /* device: sum_squares' result */
    double *reduce_host;             /* pinned host: where it lands */
    int failed;                      /* first failure recorded: every later op is a no-op */
    char message[1024];
};

/* Records a failure (the first one wins) with the call's text and place. */
void mn_cuda_record(mn_cuda_context *cx, const char *call, const char *file, int line, const char *what);
void mn_cuda_record_cuda(mn_cuda_context *cx, const char *call, const char *file, int line, cudaError_t err);
void mn_cuda_record_cublas(mn_cuda_context *cx, const char *call, const char *file, int line, cublasStatus_t st);

#define MN_CU(cx, call)                                                       \
    do {                                                                      \
        cudaError_t mn_cu_err_ = (call);                                      \
        if (mn_cu_err_ != cudaSuccess)                                        \
            mn_cuda_record_cuda((cx), #call, __FILE__, __LINE__, mn_cu_err_); \
    } while (0)
#define MN_CUBLAS(cx, call)                                                    \
    do {                                                                       \
        cublasStatus_t mn_cublas_st_ = (call);                                 \
        if (mn_cublas_st_ != CUBLAS_STATUS_SUCCESS)                            \
            mn_cuda_record_cublas((cx), #call, __FILE__, __LINE__, mn_cublas_st_); \
    } while (0)
/* After every kernel launch: a bad configuration is reported here, a fault at the next wait. */
#define MN_LAUNCHED(cx, kernel_name)                                                         \
    do {                                                                                    \
        cudaError_t mn_launch_err_ = cudaGetLastError();                                     \
        if (mn_launch_err_ != cudaSuccess)                                                  \
            mn_cuda_record_cuda((cx), "launch of " kernel_name, __FILE__, __LINE__, mn_launch_err_); \
    } while (0)

/* Every entry point of the backend begins here: the context's device becomes the calling
 * thread's current device (the runtime keeps one per host thread, and a caller or another
 * library may have switched it), so kernels, copies and cuBLAS calls reach the GPU that holds
 * the context's memory. A no-op for NULL or a failed context. */
static inline mn_cuda_context *mn_cuda_enter(void *ctx) {
    mn_cuda_context *cx = (mn_cuda_context *)ctx;
    if (cx && !cx->failed)
        MN_CU(cx, cudaSetDevice(cx->device));
    return cx;
}

/* Grid for n independent items with `threads` per block (grid-stride loops cover the rest). */
static inline unsigned mn_cuda_blocks(size_t n, int threads) {
    size_t b = (n + (size_t)threads - 1) / (size_t)threads;
    const size_t cap = (size_t)1 << 20;
    return (unsigned)(b == 0 ? 1 : b > cap ? cap : b);
}

/* Workspace of at least `bytes` (grown after a wait, so no queued op still uses the old one);
 * NULL after a failure. Ops use it from their first kernel to their last, in stream order. */
void *mn_cuda_workspace(mn_cuda_context *cx, size_t bytes);

/* Column-major cuBLAS product in the context's precision: C = alpha op(A) op(B) + beta C. */
void mn_cuda_gemm(mn_cuda_context *cx, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                  float alpha, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
void mn_cuda_gemm_batched(mn_cuda_context *cx, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                          float alpha, const float *A, int lda, long long stride_a, const float *B, int ldb,
                          long long stride_b, float beta, float *C, int ldc, long long stride_c, int batch);

/* Row-major products of the linear layer (Conv1D layout W (IC, OC)), shared by linear and the
 * gated update: out (N, OC) = inp @ W (+ beta out); dinp (N, IC) += dout @ W^T;
 * dW (IC, OC) += inp^T @ dout. */
void mn_cuda_matmul_forward(mn_cuda_context *cx, float *out, const float *inp, const float *weight, int N, int IC,
                            int OC, float beta);
void mn_cuda_matmul_backward_input(mn_cuda_context *cx, float *dinp, const float *dout, const float *weight, int N,
                                   int IC, int OC);
void mn_cuda_matmul_backward_weight(mn_cuda_context *cx, float *dweight, const float *inp, const float *dout, int N,
                                    int IC, int OC);
/* out (N, C) rows = bias (C). */
void mn_cuda_broadcast_rows(mn_cuda_context *cx, float *out, const float *bias, int N, int C);

/* dst (C) += column sums of x (N, C): fixed row chunks, then the chunks in order, so the bits
 * never depend on scheduling (no atomics). */
void mn_cuda_column_sums(mn_cuda_context *cx, float *dst, const float *x, int N, int C);
/* Rows per chunk of the column sums (also used by layernorm's weight gradients). */
#define MN_CUDA_COLSUM_ROWS 64

/* Warp-wide sum and max by a fixed butterfly: the same order on every run. */
__device__ __forceinline__ float mn_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float mn_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
