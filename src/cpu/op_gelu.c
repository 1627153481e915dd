/* GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
#include "cpu/ops.h"

#include <math.h>

#define MN_GELU_SCALE 0.7978845608028654f  // sqrt(2 / pi)
#define MN_GELU_CUBE 0.044715f

// inp (N) -> out (N)
void mn_gelu_forward(float *out, const float *inp, size_t N) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float u = MN_GELU_SCALE * (x + MN_GELU_CUBE * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanhf(u));
    }
}

// dout (N) -> dinp (N) +=
void mn_gelu_backward(float *dinp, const float *dout, const float *inp, size_t N) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float u = MN_GELU_SCALE * (x + MN_GELU_CUBE * x * x * x);
        float t = tanhf(u);
        float du_dx = MN_GELU_SCALE * (1.0f + 3.0f * MN_GELU_CUBE * x * x);
        float grad = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du_dx;
        dinp[i] += grad * dout[i];
    }
}
