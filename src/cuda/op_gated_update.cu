/* Gated memory update: z = sigmoid(r_prev @ Wr + u @ Wu + b);  r_out = (1 - z) r_prev + z u.
 * gate_w (2C, C): rows 0..C-1 are Wr, rows C..2C-1 are Wu. Products by cuBLAS. */
#include "cuda/cuda_common.h"

static __global__ void gate_forward_kernel(float *r_out, float *z, const float *r_prev, const float *u, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = 1.0f / (1.0f + expf(-z[i]));
        z[i] = g;
        r_out[i] = (1.0f - g) * r_prev[i] + g * u[i]; /* r_out may alias r_prev: same element */
    }
}

static __global__ void gate_backward_kernel(float *dr_prev, float *du, float *dpre, const float *dr_out,
                                            const float *r_prev, const float *u, const float *z, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = z[i], dy = dr_out[i];
        dr_prev[i] += (1.0f - g) * dy;
        du[i] += g * dy;
        dpre[i] = dy * (u[i] - r_prev[i]) * g * (1.0f - g);
    }
}

// r_prev (M, C), u (M, C), gate_w (2C, C), gate_b (C) -> r_out (M, C), z (M, C)
extern "C" void mn_cu_gated_update_forward(void *ctx, float *r_out, float *z, const float *r_prev, const float *u,
                                           const float *gate_w, const float *gate_b, int M, int C) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    const float *w_r = gate_w, *w_u = gate_w + (size_t)C * C;
    // z holds the pre-activation first: bias rows, then both products added on
    mn_cuda_broadcast_rows(cx, z, gate_b, M, C);
    mn_cuda_matmul_forward(cx, z, r_prev, w_r, M, C, C, 1.0f);
    mn_cuda_matmul_forward(cx, z, u, w_u, M, C, C, 1.0f);
    if (cx->failed || M <= 0)
        return;
    size_t n = (size_t)M * C;
    gate_forward_kernel<<<mn_cuda_blocks(n, 256), 256, 0, cx->stream>>>(r_out, z, r_prev, u, n);
    MN_LAUNCHED(cx, "gate_forward_kernel");
}

// dr_out (M, C) -> dr_prev (M, C) +=, du (M, C) +=, dgate_w (2C, C) +=, dgate_b (C) +=
// scratch (M, C) receives the gradient of the gate pre-activation.
extern "C" void mn_cu_gated_update_backward(void *ctx, float *dr_prev, float *du, float *dgate_w, float *dgate_b,
                                            const float *dr_out, const float *r_prev, const float *u, const float *z,
                                            const float *gate_w, float *scratch, int M, int C) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || M <= 0)
        return;
    const float *w_r = gate_w, *w_u = gate_w + (size_t)C * C;
    float *dw_r = dgate_w, *dw_u = dgate_w + (size_t)C * C, *dpre = scratch;
    size_t n = (size_t)M * C;
    gate_backward_kernel<<<mn_cuda_blocks(n, 256), 256, 0, cx->stream>>>(dr_prev, du, dpre, dr_out, r_prev, u, z, n);
    MN_LAUNCHED(cx, "gate_backward_kernel");
    mn_cuda_column_sums(cx, dgate_b, dpre, M, C);
    mn_cuda_matmul_backward_weight(cx, dw_r, r_prev, dpre, M, C, C); // dWr += r_prev^T @ dpre
    mn_cuda_matmul_backward_weight(cx, dw_u, u, dpre, M, C, C);      // dWu += u^T @ dpre
    mn_cuda_matmul_backward_input(cx, dr_prev, dpre, w_r, M, C, C);  // dr_prev += dpre @ Wr^T
    mn_cuda_matmul_backward_input(cx, du, dpre, w_u, M, C, C);       // du += dpre @ Wu^T
}
