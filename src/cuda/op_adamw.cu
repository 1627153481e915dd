/* AdamW (PyTorch semantics, docs/model.md) over a list of segments of the flat buffers (the
 * unfrozen tensors) in one launch: blockIdx.y picks the segment. */
#include <math.h>

#include "cuda/cuda_common.h"

#define MN_ADAMW_THREADS 256
#define MN_ADAMW_MAX_BLOCKS 1024  /* per segment; a grid-stride loop covers the rest */
#define MN_ADAMW_MAX_SEGMENTS 65535 /* gridDim.y */

static __global__ void adamw_kernel(float *params, const float *grads, float *m, float *v,
                                    const mn_adamw_segment *segs, float lr, float beta1, float beta2, float eps,
                                    float step_size, float bias_correction2_sqrt) {
    const mn_adamw_segment seg = segs[blockIdx.y];
    const float decay = lr * seg.weight_decay;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < seg.size; i += (size_t)gridDim.x * blockDim.x) {
        size_t j = seg.offset + i;
        float p = params[j], g = grads[j];
        p -= decay * p; // decoupled weight decay, before the moment update
        float mi = beta1 * m[j] + (1.0f - beta1) * g;
        float vi = beta2 * v[j] + (1.0f - beta2) * g * g;
        m[j] = mi;
        v[j] = vi;
        // p -= lr * (m / bc1) / (sqrt(v / bc2) + eps), arranged as PyTorch's addcdiv
        float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
        params[j] = p - step_size * mi / denom;
    }
}

extern "C" void mn_cu_adamw_update(void *ctx, float *params, const float *grads, float *m, float *v,
                                   const mn_adamw_segment *segs, int n_segs, float lr, float beta1, float beta2,
                                   float eps, uint64_t t) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || n_segs <= 0)
        return;
    // bias corrections in double on the host, as the CPU op (PyTorch computes them in Python floats)
    double bias_correction1 = 1.0 - pow((double)beta1, (double)t);
    double bias_correction2 = 1.0 - pow((double)beta2, (double)t);
    float step_size = (float)((double)lr / bias_correction1);
    float bias_correction2_sqrt = (float)sqrt(bias_correction2);
    mn_adamw_segment *dev_segs =
        (mn_adamw_segment *)mn_cuda_workspace(cx, (size_t)n_segs * sizeof(mn_adamw_segment));
    if (!dev_segs)
        return;
    MN_CU(cx, cudaMemcpyAsync(dev_segs, segs, (size_t)n_segs * sizeof(mn_adamw_segment), cudaMemcpyHostToDevice,
                              cx->stream));
    size_t largest = 0;
    for (int i = 0; i < n_segs; i++)
        largest = segs[i].size > largest ? segs[i].size : largest;
    size_t blocks = (largest + MN_ADAMW_THREADS - 1) / MN_ADAMW_THREADS;
    unsigned grid_x = (unsigned)(blocks < 1 ? 1 : blocks > MN_ADAMW_MAX_BLOCKS ? MN_ADAMW_MAX_BLOCKS : blocks);
    for (int first = 0; first < n_segs && !cx->failed; first += MN_ADAMW_MAX_SEGMENTS) {
        int count = n_segs - first < MN_ADAMW_MAX_SEGMENTS ? n_segs - first : MN_ADAMW_MAX_SEGMENTS;
        dim3 grid(grid_x, (unsigned)count);
        adamw_kernel<<<grid, MN_ADAMW_THREADS, 0, cx->stream>>>(params, grads, m, v, dev_segs + first, lr, beta1,
                                                                 beta2, eps, step_size, bias_correction2_sqrt);
        MN_LAUNCHED(cx, "adamw_kernel");
    }
}
