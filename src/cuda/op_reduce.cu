/* Deterministic sums in double: a fixed number of blocks each sums a fixed chunk of x (threads
 * strided, then a fixed shared-memory tree), then one block sums the partials by the same
 * tree. The split depends only on n, so the bits never depend on scheduling. */
#include "cuda/cuda_common.h"

#define MN_REDUCE_BLOCKS 512
#define MN_REDUCE_THREADS 256

template <bool SQUARES>
static __global__ void reduce_partials(double *partial, const float *x, size_t n, size_t chunk) {
    __shared__ double sums[MN_REDUCE_THREADS];
    size_t begin = (size_t)blockIdx.x * chunk, end = begin + chunk < n ? begin + chunk : n;
    double acc = 0.0;
    for (size_t i = begin + threadIdx.x; i < end; i += MN_REDUCE_THREADS) {
        double v = (double)x[i];
        acc += SQUARES ? v * v : v;
    }
    sums[threadIdx.x] = acc;
    __syncthreads();
    for (int s = MN_REDUCE_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s)
            sums[threadIdx.x] += sums[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        partial[blockIdx.x] = sums[0];
}

static __global__ void reduce_final(double *out, const double *partial) {
    __shared__ double sums[MN_REDUCE_BLOCKS];
    sums[threadIdx.x] = partial[threadIdx.x];
    __syncthreads();
    for (int s = MN_REDUCE_BLOCKS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s)
            sums[threadIdx.x] += sums[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[0] = sums[0];
}

/* *dst (device) = sum of x or of its squares. */
static void reduce(mn_cuda_context *cx, double *dst, const float *x, size_t n, bool squares) {
    if (cx->failed)
        return;
    double *partial = (double *)mn_cuda_workspace(cx, MN_REDUCE_BLOCKS * sizeof(double));
    if (!partial)
        return;
    size_t chunk = (n + MN_REDUCE_BLOCKS - 1) / MN_REDUCE_BLOCKS;
    if (chunk == 0)
        chunk = 1;
    if (squares)
        reduce_partials<true><<<MN_REDUCE_BLOCKS, MN_REDUCE_THREADS, 0, cx->stream>>>(partial, x, n, chunk);
    else
        reduce_partials<false><<<MN_REDUCE_BLOCKS, MN_REDUCE_THREADS, 0, cx->stream>>>(partial, x, n, chunk);
    MN_LAUNCHED(cx, "reduce_partials");
    reduce_final<<<1, MN_REDUCE_BLOCKS, 0, cx->stream>>>(dst, partial);
    MN_LAUNCHED(cx, "reduce_final");
}

extern "C" double mn_cu_sum_squares(void *ctx, const float *x, size_t n) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    double result = 0.0;
    reduce(cx, cx->reduce_result, x, n, true);
    if (!cx->failed)
        MN_CU(cx, cudaMemcpyAsync(&result, cx->reduce_result, sizeof result, cudaMemcpyDeviceToHost, cx->stream));
    if (!cx->failed)
        MN_CU(cx, cudaStreamSynchronize(cx->stream));
    return cx->failed ? __builtin_nan("") : result;
}

extern "C" void mn_cu_sum_to(void *ctx, double *dst, const float *x, size_t n) {
    reduce(mn_cuda_enter(ctx), dst, x, n, false);
}
