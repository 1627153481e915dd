/* GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
#include "cuda/cuda_common.h"

#define MN_GELU_SCALE 0.7978845608028654f // sqrt(2 / pi)
#define MN_GELU_CUBE 0.044715f

static __global__ void gelu_forward_kernel(float *out, const float *inp, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = inp[i];
        float u = MN_GELU_SCALE * (x + MN_GELU_CUBE * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanhf(u));
    }
}

static __global__ void gelu_backward_kernel(float *dinp, const float *dout, const float *inp, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = inp[i];
        float u = MN_GELU_SCALE * (x + MN_GELU_CUBE * x * x * x);
        float t = tanhf(u);
        float du_dx = MN_GELU_SCALE * (1.0f + 3.0f * MN_GELU_CUBE * x * x);
        float grad = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du_dx;
        dinp[i] += grad * dout[i];
    }
}

// inp (N) -> out (N)
extern "C" void mn_cu_gelu_forward(void *ctx, float *out, const float *inp, size_t N) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !N)
        return;
    gelu_forward_kernel<<<mn_cuda_blocks(N, 256), 256, 0, cx->stream>>>(out, inp, N);
    MN_LAUNCHED(cx, "gelu_forward_kernel");
}

// dout (N) -> dinp (N) +=
extern "C" void mn_cu_gelu_backward(void *ctx, float *dinp, const float *dout, const float *inp, size_t N) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || !N)
        return;
    gelu_backward_kernel<<<mn_cuda_blocks(N, 256), 256, 0, cx->stream>>>(dinp, dout, inp, N);
    MN_LAUNCHED(cx, "gelu_backward_kernel");
}
