/* Residual sum: out = a + b; backward adds dout into both inputs. */
#include "cuda/cuda_common.h"

static __global__ void residual_forward_kernel(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

static __global__ void residual_backward_kernel(float *da, float *db, const float *dout, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = dout[i];
        da[i] += g;
        if (db)
            db[i] += g;
    }
}

// a (N), b (N) -> out (N); out may alias a or b (elementwise)
extern "C" void mn_cu_residual_forward(void *ctx, float *out, const float *a, const float *b, size_t N) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !N)
        return;
    residual_forward_kernel<<<mn_cuda_blocks(N, 256), 256, 0, cx->stream>>>(out, a, b, N);
    MN_LAUNCHED(cx, "residual_forward_kernel");
}

// dout (N) -> da (N) +=, db (N) += (db may be NULL)
extern "C" void mn_cu_residual_backward(void *ctx, float *da, float *db, const float *dout, size_t N) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !N)
        return;
    residual_backward_kernel<<<mn_cuda_blocks(N, 256), 256, 0, cx->stream>>>(da, db, dout, N);
    MN_LAUNCHED(cx, "residual_backward_kernel");
}
