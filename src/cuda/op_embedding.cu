/* Token embedding: a row gather forward; a scatter-add backward that is deterministic without
 * atomics: the first position holding an id owns that id's row of dtable and adds every row
 * with the id, in position order (the CPU's order, so the bits match the CPU's). Rows whose
 * id is negative (memory slots, padding) are skipped in both directions. */
#include "cuda/cuda_common.h"

#define MN_EMBEDDING_THREADS 256
#define MN_EMBEDDING_TILE 1024 /* ids staged in shared memory per pass */

static __global__ void embedding_forward_kernel(float *out, const int32_t *ids, const float *table, int N, int C) {
    size_t total = (size_t)N * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / (size_t)C, c = i - n * (size_t)C;
        int32_t id = ids[n];
        if (id >= 0)
            out[i] = table[(size_t)id * C + c];
    }
}

/* One block per position n. */
static __global__ void embedding_backward_kernel(float *dtable, const float *dout, const int32_t *ids, int N, int C) {
    __shared__ int32_t tile[MN_EMBEDDING_TILE];
    const int n = blockIdx.x;
    const int32_t id = ids[n];
    if (id < 0)
        return; /* the whole block leaves together */
    int earlier = 0;
    for (int m = threadIdx.x; m < n; m += blockDim.x)
        earlier |= ids[m] == id;
    if (__syncthreads_or(earlier))
        return; /* an earlier position owns this row */
    float *dst = dtable + (size_t)id * C;
    for (int t0 = n; t0 < N; t0 += MN_EMBEDDING_TILE) {
        int len = min(MN_EMBEDDING_TILE, N - t0);
        for (int i = threadIdx.x; i < len; i += blockDim.x)
            tile[i] = ids[t0 + i];
        __syncthreads();
        for (int i = 0; i < len; i++) {
            if (tile[i] != id)
                continue;
            const float *src = dout + (size_t)(t0 + i) * C;
            for (int c = threadIdx.x; c < C; c += blockDim.x) /* each thread owns its columns */
                dst[c] += src[c];
        }
        __syncthreads();
    }
}

// ids (N), table (V, C) -> out (N, C), rows with ids < 0 untouched
extern "C" void mn_cu_embedding_forward(void *ctx, float *out, const int32_t *ids, const float *table, int N, int C) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || N <= 0 || C <= 0)
        return;
    embedding_forward_kernel<<<mn_cuda_blocks((size_t)N * C, 256), 256, 0, cx->stream>>>(out, ids, table, N, C);
    MN_LAUNCHED(cx, "embedding_forward_kernel");
}

// dout (N, C) -> dtable (V, C) += rows scattered by ids (N), ids < 0 skipped
extern "C" void mn_cu_embedding_backward(void *ctx, float *dtable, const float *dout, const int32_t *ids, int N,
                                         int C) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || N <= 0 || C <= 0)
        return;
    embedding_backward_kernel<<<N, MN_EMBEDDING_THREADS, 0, cx->stream>>>(dtable, dout, ids, N, C);
    MN_LAUNCHED(cx, "embedding_backward_kernel");
}
