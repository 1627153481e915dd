/* Tied output head: logits = x @ wte^T. Products by cuBLAS (row-major operands read as
 * column-major transposes, see context.cu). */
#include "cuda/cuda_common.h"

// inp (N, C), wte (V, C) -> logits (N, V)
extern "C" void mn_cu_lm_head_forward(void *ctx, float *logits, const float *inp, const float *wte, int N, int C,
                                      int V) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    // logits^T (V, N) = wte (V, C) . inp^T (C, N)
    mn_cuda_gemm(cx, CUBLAS_OP_T, CUBLAS_OP_N, V, N, C, 1.0f, wte, C, inp, C, 0.0f, logits, V);
}

// dlogits (N, V) -> dinp (N, C) +=, dwte (V, C) +=
extern "C" void mn_cu_lm_head_backward(void *ctx, float *dinp, float *dwte, const float *dlogits, const float *inp,
                                       const float *wte, int N, int C, int V) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    // dinp^T (C, N) += wte^T (C, V) . dlogits^T (V, N)
    mn_cuda_gemm(cx, CUBLAS_OP_N, CUBLAS_OP_N, C, N, V, 1.0f, wte, C, dlogits, V, 1.0f, dinp, C);
    // dwte^T (C, V) += inp^T (C, N) . dlogits (N, V)
    mn_cuda_gemm(cx, CUBLAS_OP_N, CUBLAS_OP_T, C, V, N, 1.0f, inp, C, dlogits, V, 1.0f, dwte, C);
}
