/* The CUDA backend's context (stream, cuBLAS handle, workspace; one per model or trainer),
 * error recording, memory and data movement, and the cuBLAS product helpers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_common.h"

extern "C" {
#include "core/error.h"
}

/* ---------------------------------------------------------------- errors */
void mn_cuda_record(mn_cuda_context *cx, const char *call, const char *file, int line, const char *what) {
    if (cx->failed)
        return; /* the first failure is the cause; later ones are its consequences */
    cx->failed = 1;
    snprintf(cx->message, sizeof cx->message, "CUDA backend: %s failed at %s:%d: %s", call, file, line, what);
}

void mn_cuda_record_cuda(mn_cuda_context *cx, const char *call, const char *file, int line, cudaError_t err) {
    char what[512];
    snprintf(what, sizeof what, "%s (%s)", cudaGetErrorName(err), cudaGetErrorString(err));
    mn_cuda_record(cx, call, file, line, what);
}

void mn_cuda_record_cublas(mn_cuda_context *cx, const char *call, const char *file, int line, cublasStatus_t st) {
    char what[512];
    snprintf(what, sizeof what, "%s (%s)", cublasGetStatusName(st), cublasGetStatusString(st));
    mn_cuda_record(cx, call, file, line, what);
}

extern "C" mn_status mn_cu_status(void *ctx) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed)
        return mn_fail(MN_ERR_DEVICE, "%s", cx->message);
    return MN_OK;
}

extern "C" mn_status mn_cu_synchronize(void *ctx) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (!cx->failed)
        MN_CU(cx, cudaStreamSynchronize(cx->stream));
    return mn_cu_status(ctx);
}

/* ---------------------------------------------------------------- context */
static void context_destroy(mn_cuda_context *cx) {
    if (cx->stream)
        MN_CU(cx, cudaStreamSynchronize(cx->stream));
    for (int i = 0; i < 2; i++)
        if (cx->fences[i])
            MN_CU(cx, cudaEventDestroy(cx->fences[i]));
    if (cx->workspace)
        MN_CU(cx, cudaFree(cx->workspace));
    if (cx->reduce_result)
        MN_CU(cx, cudaFree(cx->reduce_result));
    if (cx->cublas)
        MN_CUBLAS(cx, cublasDestroy(cx->cublas));
    if (cx->stream)
        MN_CU(cx, cudaStreamDestroy(cx->stream));
}

extern "C" mn_status mn_cu_context_create(void **out) {
    *out = NULL;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: leave the next call a clean slate */
        return mn_fail(MN_ERR_DEVICE, "CUDA backend: cudaGetDeviceCount failed: error %d %s (%s)", (int)err,
                       cudaGetErrorName(err), cudaGetErrorString(err));
    }
    if (count < 1)
        return mn_fail(MN_ERR_DEVICE, "CUDA backend: no CUDA device found");
    mn_cuda_context *cx = (mn_cuda_context *)calloc(1, sizeof *cx);
    if (!cx)
        return mn_fail(MN_ERR_NOMEM, "out of memory for the CUDA context");
    cx->compute = CUBLAS_COMPUTE_32F;
    MN_CU(cx, cudaGetDevice(&cx->device));
    /* non-blocking: never serialised with work other libraries put on the legacy stream */
    if (!cx->failed)
        MN_CU(cx, cudaStreamCreateWithFlags(&cx->stream, cudaStreamNonBlocking));
    if (!cx->failed)
        MN_CUBLAS(cx, cublasCreate(&cx->cublas));
    if (!cx->failed)
        MN_CUBLAS(cx, cublasSetStream(cx->cublas, cx->stream));
    /* every product names its compute type (cx->compute), so the math mode stays the default;
     * no atomics inside cuBLAS: bitwise reproducible products on one device */
    if (!cx->failed)
        MN_CUBLAS(cx, cublasSetAtomicsMode(cx->cublas, CUBLAS_ATOMICS_NOT_ALLOWED));
    if (!cx->failed)
        MN_CU(cx, cudaMalloc((void **)&cx->reduce_result, sizeof(double)));
    if (cx->failed) {
        mn_status st = mn_fail(MN_ERR_DEVICE, "%s", cx->message);
        context_destroy(cx);
        free(cx);
        (void)cudaGetLastError();
        return st;
    }
    *out = cx;
    return MN_OK;
}

extern "C" void mn_cu_context_free(void *ctx) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (!cx)
        return;
    int failed_before = cx->failed;
    context_destroy(cx);
    if (cx->failed && !failed_before) /* nowhere else to report it */
        mn_fail(MN_ERR_DEVICE, "%s", cx->message);
    free(cx);
}

extern "C" mn_status mn_cu_set_matmul(void *ctx, mn_matmul precision) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    const cublasComputeType_t before = cx->compute;
    switch (precision) {
    case MN_MATMUL_FP32: cx->compute = CUBLAS_COMPUTE_32F; break;
    case MN_MATMUL_TF32: cx->compute = CUBLAS_COMPUTE_32F_FAST_TF32; break;
    case MN_MATMUL_BF16: cx->compute = CUBLAS_COMPUTE_32F_FAST_16BF; break;
    default: return mn_fail(MN_ERR_INVALID_ARG, "unknown matmul precision %d", (int)precision);
    }
    if (cx->compute != before)
        cx->graph_epoch++; /* captured products hold the old compute type */
    return mn_cu_status(ctx);
}

void *mn_cuda_workspace(mn_cuda_context *cx, size_t bytes) {
    if (cx->failed)
        return NULL;
    if (bytes <= cx->workspace_bytes)
        return cx->workspace;
    const size_t round = (size_t)1 << 20;
    size_t want = (bytes + bytes / 4 + round - 1) / round * round;
    /* queued ops may still read the old buffer: wait before freeing it */
    MN_CU(cx, cudaStreamSynchronize(cx->stream));
    if (cx->workspace)
        MN_CU(cx, cudaFree(cx->workspace));
    cx->workspace = NULL;
    cx->workspace_bytes = 0;
    cx->graph_epoch++;
    if (cx->failed)
        return NULL;
    MN_CU(cx, cudaMalloc(&cx->workspace, want));
    if (cx->failed) {
        cx->workspace = NULL;
        return NULL;
    }
    cx->workspace_bytes = want;
    return cx->workspace;
}

/* ---------------------------------------------------------------- memory */
extern "C" mn_status mn_cu_alloc(void *ctx, size_t bytes, void **out) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    *out = NULL;
    MN_TRY(mn_cu_status(ctx));
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes ? bytes : 1);
    if (err != cudaSuccess) {
        (void)cudaGetLastError(); /* an allocation failure is not sticky: the context stays usable */
        return mn_fail(MN_ERR_DEVICE, "CUDA backend: cudaMalloc of %zu bytes failed at %s:%d: %s (%s)", bytes,
                       __FILE__, __LINE__, cudaGetErrorName(err), cudaGetErrorString(err));
    }
    MN_CU(cx, cudaMemsetAsync(p, 0, bytes, cx->stream));
    if (cx->failed) {
        (void)cudaFree(p); /* the context has failed already; its message names the cause */
        return mn_cu_status(ctx);
    }
    *out = p;
    return MN_OK;
}

extern "C" void mn_cu_release(void *ctx, void *p) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (!p)
        return;
    /* queued work may still use p */
    MN_CU(cx, cudaStreamSynchronize(cx->stream));
    MN_CU(cx, cudaFree(p));
}

extern "C" void mn_cu_zero(void *ctx, void *p, size_t bytes) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !bytes)
        return;
    MN_CU(cx, cudaMemsetAsync(p, 0, bytes, cx->stream));
}

extern "C" void mn_cu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !bytes)
        return;
    MN_CU(cx, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cx->stream));
}

/* From pageable host memory the runtime stages the data before returning, so the caller may
 * reuse host_src at once. */
extern "C" void mn_cu_upload(void *ctx, void *dst, const void *host_src, size_t bytes) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !bytes)
        return;
    MN_CU(cx, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, cx->stream));
}

extern "C" void mn_cu_download(void *ctx, void *host_dst, const void *src, size_t bytes) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !bytes)
        return;
    MN_CU(cx, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, cx->stream));
    if (!cx->failed)
        MN_CU(cx, cudaStreamSynchronize(cx->stream));
}

/* ---------------------------------------------------------------- row copies and sums */
static __global__ void copy_rows_kernel(float *dst, size_t dst_stride, const float *src, size_t src_stride,
                                        size_t rows, size_t cols) {
    size_t total = rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i - r * cols;
        dst[r * dst_stride + c] = src[r * src_stride + c];
    }
}

extern "C" void mn_cu_copy_rows(void *ctx, float *dst, size_t dst_stride, const float *src, size_t src_stride,
                                size_t rows, size_t cols) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !rows || !cols)
        return;
    if (dst_stride >= cols && src_stride >= cols) { /* the copy engine's strided form */
        MN_CU(cx, cudaMemcpy2DAsync(dst, dst_stride * sizeof(float), src, src_stride * sizeof(float),
                                    cols * sizeof(float), rows, cudaMemcpyDeviceToDevice, cx->stream));
        return;
    }
    copy_rows_kernel<<<mn_cuda_blocks(rows * cols, 256), 256, 0, cx->stream>>>(dst, dst_stride, src, src_stride,
                                                                              rows, cols);
    MN_LAUNCHED(cx, "copy_rows_kernel");
}

/* One thread per column walks the rows in order: the CPU's accumulation order, and with
 * dst_stride 0 a deterministic sum over rows without atomics. */
static __global__ void add_rows_kernel(float *dst, size_t dst_stride, const float *src, size_t src_stride,
                                       size_t rows, size_t cols) {
    for (size_t c = (size_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += (size_t)gridDim.x * blockDim.x) {
        if (dst_stride == 0) {
            float acc = dst[c];
            for (size_t r = 0; r < rows; r++)
                acc += src[r * src_stride + c];
            dst[c] = acc;
        } else {
            for (size_t r = 0; r < rows; r++)
                dst[r * dst_stride + c] += src[r * src_stride + c];
        }
    }
}

extern "C" void mn_cu_add_rows(void *ctx, float *dst, size_t dst_stride, const float *src, size_t src_stride,
                               size_t rows, size_t cols) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !rows || !cols)
        return;
    add_rows_kernel<<<mn_cuda_blocks(cols, 256), 256, 0, cx->stream>>>(dst, dst_stride, src, src_stride, rows, cols);
    MN_LAUNCHED(cx, "add_rows_kernel");
}

static __global__ void gather_rows_kernel(float *dst, const int32_t *dst_rows, const float *src,
                                          const int32_t *src_rows, size_t rows, size_t cols) {
    size_t total = rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i - r * cols;
        size_t d = dst_rows ? (size_t)dst_rows[r] : r, s = src_rows ? (size_t)src_rows[r] : r;
        dst[d * cols + c] = src[s * cols + c];
    }
}

extern "C" void mn_cu_gather_rows(void *ctx, float *dst, const int32_t *dst_rows, const float *src,
                                  const int32_t *src_rows, size_t rows, size_t cols) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !rows || !cols)
        return;
    gather_rows_kernel<<<mn_cuda_blocks(rows * cols, 256), 256, 0, cx->stream>>>(dst, dst_rows, src, src_rows, rows,
                                                                                cols);
    MN_LAUNCHED(cx, "gather_rows_kernel");
}

static __global__ void scale_kernel(float *x, float factor, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= factor;
}

extern "C" void mn_cu_scale(void *ctx, float *x, float factor, size_t n) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !n)
        return;
    scale_kernel<<<mn_cuda_blocks(n, 256), 256, 0, cx->stream>>>(x, factor, n);
    MN_LAUNCHED(cx, "scale_kernel");
}

/* ---------------------------------------------------------------- products */
void mn_cuda_gemm(mn_cuda_context *cx, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                  const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (cx->failed || m <= 0 || n <= 0)
        return;
    MN_CUBLAS(cx, cublasGemmEx(cx->cublas, ta, tb, m, n, k, &alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, &beta, C,
                               CUDA_R_32F, ldc, cx->compute, CUBLAS_GEMM_DEFAULT));
}

void mn_cuda_gemm_batched(mn_cuda_context *cx, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                          float alpha, const float *A, int lda, long long stride_a, const float *B, int ldb,
                          long long stride_b, float beta, float *C, int ldc, long long stride_c, int batch) {
    if (cx->failed || m <= 0 || n <= 0 || batch <= 0)
        return;
    MN_CUBLAS(cx, cublasGemmStridedBatchedEx(cx->cublas, ta, tb, m, n, k, &alpha, A, CUDA_R_32F, lda, stride_a, B,
                                             CUDA_R_32F, ldb, stride_b, &beta, C, CUDA_R_32F, ldc, stride_c, batch,
                                             cx->compute, CUBLAS_GEMM_DEFAULT));
}

/* Row-major X (R, K) is column-major X^T (K, R) with the same leading dimension, so each
 * row-major product below is the column-major product of the transposes. */
void mn_cuda_matmul_forward(mn_cuda_context *cx, float *out, const float *inp, const float *weight, int N, int IC,
                            int OC, float beta) {
    // out^T (OC, N) = W^T (OC, IC) . inp^T (IC, N)
    mn_cuda_gemm(cx, CUBLAS_OP_N, CUBLAS_OP_N, OC, N, IC, 1.0f, weight, OC, inp, IC, beta, out, OC);
}

void mn_cuda_matmul_backward_input(mn_cuda_context *cx, float *dinp, const float *dout, const float *weight, int N,
                                   int IC, int OC) {
    // dinp^T (IC, N) += W (IC, OC) . dout^T (OC, N)
    mn_cuda_gemm(cx, CUBLAS_OP_T, CUBLAS_OP_N, IC, N, OC, 1.0f, weight, OC, dout, OC, 1.0f, dinp, IC);
}

void mn_cuda_matmul_backward_weight(mn_cuda_context *cx, float *dweight, const float *inp, const float *dout, int N,
                                    int IC, int OC) {
    // dW^T (OC, IC) += dout^T (OC, N) . inp (N, IC)
    mn_cuda_gemm(cx, CUBLAS_OP_N, CUBLAS_OP_T, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, OC);
}

static __global__ void broadcast_rows_kernel(float *out, const float *bias, size_t N, size_t C) {
    size_t total = N * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] = bias[i % C];
}

void mn_cuda_broadcast_rows(mn_cuda_context *cx, float *out, const float *bias, int N, int C) {
    if (cx->failed || N <= 0 || C <= 0)
        return;
    broadcast_rows_kernel<<<mn_cuda_blocks((size_t)N * C, 256), 256, 0, cx->stream>>>(out, bias, (size_t)N,
                                                                                      (size_t)C);
    MN_LAUNCHED(cx, "broadcast_rows_kernel");
}

/* ---------------------------------------------------------------- column sums */
static __global__ void column_sums_partial(float *partial, const float *x, int N, int C, int col_blocks) {
    int chunk = blockIdx.x / col_blocks;
    int c = (blockIdx.x % col_blocks) * blockDim.x + threadIdx.x;
    if (c >= C)
        return;
    int r0 = chunk * MN_CUDA_COLSUM_ROWS, r1 = min(N, r0 + MN_CUDA_COLSUM_ROWS);
    float s = 0.0f;
    for (int r = r0; r < r1; r++)
        s += x[(size_t)r * C + c];
    partial[(size_t)chunk * C + c] = s;
}

static __global__ void column_sums_final(float *dst, const float *partial, int chunks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C)
        return;
    float s = 0.0f;
    for (int j = 0; j < chunks; j++)
        s += partial[(size_t)j * C + c];
    dst[c] += s;
}

void mn_cuda_column_sums(mn_cuda_context *cx, float *dst, const float *x, int N, int C) {
    if (cx->failed || N <= 0 || C <= 0)
        return;
    int chunks = (N + MN_CUDA_COLSUM_ROWS - 1) / MN_CUDA_COLSUM_ROWS, col_blocks = (C + 255) / 256;
    float *partial = (float *)mn_cuda_workspace(cx, (size_t)chunks * C * sizeof(float));
    if (!partial)
        return;
    column_sums_partial<<<chunks * col_blocks, 256, 0, cx->stream>>>(partial, x, N, C, col_blocks);
    MN_LAUNCHED(cx, "column_sums_partial");
    column_sums_final<<<col_blocks, 256, 0, cx->stream>>>(dst, partial, chunks, C);
    MN_LAUNCHED(cx, "column_sums_final");
}

/* ---------------------------------------------------------------- pinned transfers, fences, graphs */
extern "C" mn_status mn_cu_host_alloc(void *ctx, size_t bytes, void **out) {
    mn_cuda_enter(ctx);
    *out = NULL;
    MN_TRY(mn_cu_status(ctx));
    cudaError_t err = cudaHostAlloc(out, bytes ? bytes : 1, cudaHostAllocDefault);
    if (err != cudaSuccess) {
        (void)cudaGetLastError(); /* like cudaMalloc: not sticky, the context stays usable */
        *out = NULL;
        return mn_fail(MN_ERR_DEVICE, "CUDA backend: cudaHostAlloc of %zu bytes failed: %s (%s)", bytes,
                       cudaGetErrorName(err), cudaGetErrorString(err));
    }
    memset(*out, 0, bytes ? bytes : 1);
    return MN_OK;
}

extern "C" void mn_cu_host_release(void *ctx, void *p) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (!p)
        return;
    MN_CU(cx, cudaStreamSynchronize(cx->stream)); /* a queued copy may still use p */
    MN_CU(cx, cudaFreeHost(p));
}

extern "C" void mn_cu_download_async(void *ctx, void *host_dst, const void *src, size_t bytes) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !bytes)
        return;
    MN_CU(cx, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, cx->stream));
}

extern "C" void mn_cu_fence_record(void *ctx, int i) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed)
        return;
    if (!cx->fences[i])
        MN_CU(cx, cudaEventCreateWithFlags(&cx->fences[i], cudaEventDisableTiming));
    if (!cx->failed)
        MN_CU(cx, cudaEventRecord(cx->fences[i], cx->stream));
}

extern "C" void mn_cu_fence_wait(void *ctx, int i) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (!cx->failed && cx->fences[i]) /* never recorded: nothing to wait for */
        MN_CU(cx, cudaEventSynchronize(cx->fences[i]));
}

/* A captured graph and the context's epoch (workspace, precision) it was captured in. */
typedef struct {
    cudaGraphExec_t exec;
    unsigned long graph_epoch;
} cuda_graph;

/* Relaxed: the calls between begin and end (cudaSetDevice at every entry point) are not
 * refused for being unsafe; none of them waits or allocates (the pool runs each bucket once
 * uncaptured first, which grows the workspace). */
extern "C" void mn_cu_capture_begin(void *ctx) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (!cx->failed)
        MN_CU(cx, cudaStreamBeginCapture(cx->stream, cudaStreamCaptureModeRelaxed));
}

extern "C" mn_status mn_cu_capture_end(void *ctx, void **out) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    *out = NULL;
    cudaGraph_t graph = NULL;
    MN_CU(cx, cudaStreamEndCapture(cx->stream, &graph)); /* ends the capture even after a failure */
    cuda_graph *g = (cuda_graph *)calloc(1, sizeof *g);
    if (!g) {
        if (graph)
            MN_CU(cx, cudaGraphDestroy(graph));
        return mn_fail(MN_ERR_NOMEM, "out of memory for a CUDA graph");
    }
    if (!cx->failed)
        MN_CU(cx, cudaGraphInstantiate(&g->exec, graph, 0));
    if (graph)
        MN_CU(cx, cudaGraphDestroy(graph));
    if (cx->failed) {
        free(g);
        return mn_cu_status(ctx);
    }
    g->graph_epoch = cx->graph_epoch;
    *out = g;
    return MN_OK;
}

extern "C" int mn_cu_graph_launch(void *ctx, void *graph) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    cuda_graph *g = (cuda_graph *)graph;
    if (g->graph_epoch != cx->graph_epoch)
        return 1;
    if (!cx->failed)
        MN_CU(cx, cudaGraphLaunch(g->exec, cx->stream));
    return 0;
}

extern "C" void mn_cu_graph_release(void *ctx, void *graph) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    cuda_graph *g = (cuda_graph *)graph;
    if (!g)
        return;
    if (g->exec) {
        MN_CU(cx, cudaStreamSynchronize(cx->stream)); /* a launch may still be running */
        MN_CU(cx, cudaGraphExecDestroy(g->exec));
    }
    free(g);
}
