/* Tied output head: logits = x @ wte^T. Products by mn_sgemm. */
#include "cpu/ops.h"


// inp (N, C), wte (V, C) -> logits (N, V)
void mn_lm_head_forward(float *logits, const float *inp, const float *wte, int N, int C, int V, int threads) {
    // logits (N, V) = inp (N, C) @ wte^T (C, V)
    mn_sgemm(0, 1, N, V, C, 1.0f, inp, C, wte, C, 0.0f, logits, V, threads);
}

// dlogits (N, V) -> dinp (N, C) +=, dwte (V, C) +=
void mn_lm_head_backward(float *dinp, float *dwte, const float *dlogits, const float *inp,
                         const float *wte, int N, int C, int V, int threads) {
    // dinp (N, C) += dlogits (N, V) @ wte (V, C)
    mn_sgemm(0, 0, N, C, V, 1.0f, dlogits, V, wte, C, 1.0f, dinp, C, threads);
    // dwte (V, C) += dlogits^T (V, N) @ inp (N, C)
    mn_sgemm(1, 0, V, C, N, 1.0f, dlogits, V, inp, C, 1.0f, dwte, C, threads);
}
