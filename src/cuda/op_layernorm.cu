/* LayerNorm over the last dimension (eps 1e-5, biased variance, as PyTorch): one warp per
 * row; the weight and bias gradients by fixed row chunks then chunks in order (no atomics). */
#include "cuda/cuda_common.h"

#define MN_LAYERNORM_EPS 1e-5f
#define MN_LAYERNORM_THREADS 256 /* 8 rows per block */

static __global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
                                                const float *weight, const float *bias, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N)
        return;
    const float *x = inp + (size_t)row * C;
    float *y = out + (size_t)row * C;
    // two passes (mean, then centred squares) avoid the cancellation of E[x^2] - E[x]^2
    float s = 0.0f;
    for (int c = lane; c < C; c += 32)
        s += x[c];
    float m = mn_warp_sum(s) / (float)C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = x[c] - m;
        v += d * d;
    }
    float r = 1.0f / sqrtf(mn_warp_sum(v) / (float)C + MN_LAYERNORM_EPS);
    for (int c = lane; c < C; c += 32)
        y[c] = (x[c] - m) * r * weight[c] + bias[c];
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

static __global__ void layernorm_backward_input_kernel(float *dinp, const float *dout, const float *inp,
                                                       const float *weight, const float *mean, const float *rstd,
                                                       int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N)
        return;
    const float *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
    float *dx = dinp + (size_t)row * C;
    float m = mean[row], r = rstd[row];
    // dx = r * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * weight
    float a = 0.0f, b = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xhat = (x[c] - m) * r, dxhat = dy[c] * weight[c];
        a += dxhat;
        b += dxhat * xhat;
    }
    a = mn_warp_sum(a) / (float)C;
    b = mn_warp_sum(b) / (float)C;
    for (int c = lane; c < C; c += 32) {
        float xhat = (x[c] - m) * r, dxhat = dy[c] * weight[c];
        dx[c] += r * (dxhat - a - xhat * b);
    }
}

static __global__ void layernorm_backward_params_partial(float *part_w, float *part_b, const float *dout,
                                                         const float *inp, const float *mean, const float *rstd,
                                                         int N, int C, int col_blocks) {
    int chunk = blockIdx.x / col_blocks;
    int c = (blockIdx.x % col_blocks) * blockDim.x + threadIdx.x;
    if (c >= C)
        return;
    int r0 = chunk * MN_CUDA_COLSUM_ROWS, r1 = min(N, r0 + MN_CUDA_COLSUM_ROWS);
    float sw = 0.0f, sb = 0.0f;
    for (int r = r0; r < r1; r++) {
        size_t i = (size_t)r * C + c;
        float dy = dout[i];
        sw += dy * (inp[i] - mean[r]) * rstd[r];
        sb += dy;
    }
    part_w[(size_t)chunk * C + c] = sw;
    part_b[(size_t)chunk * C + c] = sb;
}

static __global__ void layernorm_backward_params_final(float *dweight, float *dbias, const float *part_w,
                                                       const float *part_b, int chunks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C)
        return;
    float sw = 0.0f, sb = 0.0f;
    for (int j = 0; j < chunks; j++) {
        sw += part_w[(size_t)j * C + c];
        sb += part_b[(size_t)j * C + c];
    }
    dweight[c] += sw;
    dbias[c] += sb;
}

// inp (N, C), weight (C), bias (C) -> out (N, C), mean (N), rstd (N)
extern "C" void mn_cu_layernorm_forward(void *ctx, float *out, float *mean, float *rstd, const float *inp,
                                        const float *weight, const float *bias, int N, int C) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || N <= 0)
        return;
    int rows_per_block = MN_LAYERNORM_THREADS / 32;
    layernorm_forward_kernel<<<(N + rows_per_block - 1) / rows_per_block, MN_LAYERNORM_THREADS, 0, cx->stream>>>(
        out, mean, rstd, inp, weight, bias, N, C);
    MN_LAUNCHED(cx, "layernorm_forward_kernel");
}

// dout (N, C) -> dinp (N, C) +=, dweight (C) +=, dbias (C) +=
extern "C" void mn_cu_layernorm_backward(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
                                         const float *inp, const float *weight, const float *mean, const float *rstd,
                                         int N, int C) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || N <= 0)
        return;
    int rows_per_block = MN_LAYERNORM_THREADS / 32;
    layernorm_backward_input_kernel<<<(N + rows_per_block - 1) / rows_per_block, MN_LAYERNORM_THREADS, 0,
                                      cx->stream>>>(dinp, dout, inp, weight, mean, rstd, N, C);
    MN_LAUNCHED(cx, "layernorm_backward_input_kernel");
    int chunks = (N + MN_CUDA_COLSUM_ROWS - 1) / MN_CUDA_COLSUM_ROWS, col_blocks = (C + 255) / 256;
    float *part = (float *)mn_cuda_workspace(cx, 2 * (size_t)chunks * C * sizeof(float));
    if (!part)
        return;
    float *part_w = part, *part_b = part + (size_t)chunks * C;
    layernorm_backward_params_partial<<<chunks * col_blocks, 256, 0, cx->stream>>>(part_w, part_b, dout, inp, mean,
                                                                                  rstd, N, C, col_blocks);
    MN_LAUNCHED(cx, "layernorm_backward_params_partial");
    layernorm_backward_params_final<<<col_blocks, 256, 0, cx->stream>>>(dweight, dbias, part_w, part_b, chunks, C);
    MN_LAUNCHED(cx, "layernorm_backward_params_final");
}
