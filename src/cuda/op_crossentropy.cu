/* Weighted softmax cross-entropy over V classes with a stable log-softmax: one block per row,
 * block reductions by a fixed tree (deterministic). */
#include <math.h>

#include "cuda/cuda_common.h"

#define MN_CE_THREADS 256

/* Block-wide max or sum, the same value returned to every thread. */
template <bool MAX>
static __device__ float block_reduce(float v, float *shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = MAX ? mn_warp_max(v) : mn_warp_sum(v);
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = lane < warps ? shared[lane] : (MAX ? -INFINITY : 0.0f);
        w = MAX ? mn_warp_max(w) : mn_warp_sum(w);
        if (lane == 0)
            shared[0] = w;
    }
    __syncthreads();
    float result = shared[0];
    __syncthreads(); /* shared is reused by the next reduction */
    return result;
}

/* log(sum_v exp(x[v])) computed as max + log(sum exp(x - max)). */
static __device__ float block_log_sum_exp(const float *x, int V, float *shared) {
    float m = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        m = fmaxf(m, x[v]);
    m = block_reduce<true>(m, shared);
    float s = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        s += expf(x[v] - m);
    s = block_reduce<false>(s, shared);
    return m + logf(s);
}

static __global__ void crossentropy_forward_kernel(float *losses, const float *logits, const int32_t *targets,
                                                   const float *weights, int V) {
    __shared__ float shared[32];
    const int n = blockIdx.x;
    const float w = weights[n];
    if (w == 0.0f) { /* ignored row: its target is not read (it may be padding) */
        if (threadIdx.x == 0)
            losses[n] = 0.0f;
        return;
    }
    const float *x = logits + (size_t)n * V;
    float lse = block_log_sum_exp(x, V, shared);
    if (threadIdx.x == 0)
        losses[n] = w * (lse - x[targets[n]]);
}

/* Forward and backward of a row in one visit, the gradient written over the logits. */
static __global__ void crossentropy_fused_kernel(float *losses, float *logits, const int32_t *targets,
                                                 const float *weights, float scale, int V) {
    __shared__ float shared[32];
    const int n = blockIdx.x;
    const float w = weights[n];
    float *x = logits + (size_t)n * V;
    if (w == 0.0f) { /* ignored row: target not read, exactly zero gradient */
        for (int v = threadIdx.x; v < V; v += blockDim.x)
            x[v] = 0.0f;
        if (threadIdx.x == 0)
            losses[n] = 0.0f;
        return;
    }
    const int t = targets[n];
    float lse = block_log_sum_exp(x, V, shared);
    if (threadIdx.x == 0)
        losses[n] = w * (lse - x[t]);
    __syncthreads(); /* x[t] is read before it is overwritten */
    float sw = scale * w;
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        x[v] = sw * expf(x[v] - lse);
    __syncthreads(); /* the target's softmax term is in before the one-hot term comes off (CPU order) */
    if (threadIdx.x == 0)
        x[t] -= sw;
}

// logits (N, V), targets (N), weights (N) -> losses (N)
extern "C" void mn_cu_crossentropy_forward(void *ctx, float *losses, const float *logits, const int32_t *targets,
                                           const float *weights, int N, int V) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || N <= 0)
        return;
    crossentropy_forward_kernel<<<N, MN_CE_THREADS, 0, cx->stream>>>(losses, logits, targets, weights, V);
    MN_LAUNCHED(cx, "crossentropy_forward_kernel");
}

// losses (N) as forward; logits (N, V) := scale * weights[n] * (softmax(logits[n]) - onehot(targets[n]))
extern "C" void mn_cu_crossentropy_fused(void *ctx, float *losses, float *logits, const int32_t *targets,
                                         const float *weights, float scale, int N, int V) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || N <= 0)
        return;
    crossentropy_fused_kernel<<<N, MN_CE_THREADS, 0, cx->stream>>>(losses, logits, targets, weights, scale, V);
    MN_LAUNCHED(cx, "crossentropy_fused_kernel");
}
