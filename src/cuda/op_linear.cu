/* Linear layer in GPT-2's Conv1D layout: y = x @ W + b, W (IC, OC). Products by cuBLAS; the
 * bias gradient by deterministic column sums. */
#include "cuda/cuda_common.h"

// inp (N, IC), weight (IC, OC), bias (OC) or NULL -> out (N, OC)
extern "C" void mn_cu_linear_forward(void *ctx, float *out, const float *inp, const float *weight, const float *bias,
                                     int N, int IC, int OC) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (bias) // preload the bias so that one product with beta = 1 adds onto it (as the CPU)
        mn_cuda_broadcast_rows(cx, out, bias, N, OC);
    mn_cuda_matmul_forward(cx, out, inp, weight, N, IC, OC, bias ? 1.0f : 0.0f);
}

// dout (N, OC) -> dinp (N, IC) += (if not NULL), dweight (IC, OC) +=, dbias (OC) += (if not NULL)
extern "C" void mn_cu_linear_backward(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
                                      const float *inp, const float *weight, int N, int IC, int OC) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (dinp)
        mn_cuda_matmul_backward_input(cx, dinp, dout, weight, N, IC, OC);
    mn_cuda_matmul_backward_weight(cx, dweight, inp, dout, N, IC, OC);
    if (dbias)
        mn_cuda_column_sums(cx, dbias, dout, N, OC);
}
