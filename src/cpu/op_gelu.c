/* GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
 *
 * Computed as x * sigmoid(2u), the same function (0.5 (1 + tanh u) = 1 / (1 + exp(-2u))) with
 * one exp and no cancellation near u = 0. libm's tanhf (via expm1f) is a scalar call per
 * element and was ~10% of a training step (docs/perf.md); mn_exp8 does 8 lanes at a time. */
#include "cpu/ops.h"
#include "cpu/team.h"
#include "cpu/vec.h"

#define MN_GELU_SCALE 0.7978845608028654f  // sqrt(2 / pi)
#define MN_GELU_CUBE 0.044715f

/* The same formulas on 8 lanes and on one (tails); T is mn_v8f or float, EXP mn_exp8 or mn_expf. */
#define GELU_FORWARD(T, EXP, x) ((x) / (1.0f + EXP(-2.0f * MN_GELU_SCALE * ((x) + MN_GELU_CUBE * (x) * (x) * (x)))))
// d/dx [x s(2u)] = s + x s (1 - s) 2 du/dx, with s = sigmoid(2u) = 0.5 (1 + tanh u)
#define GELU_GRAD(T, EXP, x, grad)                                                                  \
    T s_ = 1.0f / (1.0f + EXP(-2.0f * MN_GELU_SCALE * ((x) + MN_GELU_CUBE * (x) * (x) * (x))));    \
    T du_dx_ = MN_GELU_SCALE * (1.0f + 3.0f * MN_GELU_CUBE * (x) * (x));                           \
    T grad = s_ + 2.0f * (x) * s_ * (1.0f - s_) * du_dx_;

MN_VEC_CLONES
static void gelu_forward_span(float *out, const float *inp, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        mn_v8f x = mn_v8f_load(inp + i);
        mn_v8f_store(out + i, GELU_FORWARD(mn_v8f, mn_exp8, x));
    }
    for (; i < n; i++) {
        float x = inp[i];
        out[i] = GELU_FORWARD(float, mn_expf, x);
    }
}

MN_VEC_CLONES
static void gelu_backward_span(float *dinp, const float *dout, const float *inp, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        mn_v8f x = mn_v8f_load(inp + i);
        GELU_GRAD(mn_v8f, mn_exp8, x, grad)
        mn_v8f_store(dinp + i, mn_v8f_load(dinp + i) + grad * mn_v8f_load(dout + i));
    }
    for (; i < n; i++) {
        float x = inp[i];
        GELU_GRAD(float, mn_expf, x, grad)
        dinp[i] += grad * dout[i];
    }
}

/* Thread t of nt takes the t-th contiguous share, a multiple of 8 long, so that every element goes
 * through the same lane-or-tail path whatever the thread count. */
static void gelu_forward_part(float *out, const float *inp, size_t N, int t, int nt) {
    size_t i0, i1;
    mn_share(N, 8, t, nt, &i0, &i1);
    gelu_forward_span(out + i0, inp + i0, i1 - i0);
}

static void gelu_backward_part(float *dinp, const float *dout, const float *inp, size_t N, int t, int nt) {
    size_t i0, i1;
    mn_share(N, 8, t, nt, &i0, &i1);
    gelu_backward_span(dinp + i0, dout + i0, inp + i0, i1 - i0);
}

// inp (N) -> out (N)
void mn_gelu_forward(float *out, const float *inp, size_t N, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)N, MN_PAR_MIN_ELEMS), gelu_forward_part, out, inp, N);
}

// dout (N) -> dinp (N) +=
void mn_gelu_backward(float *dinp, const float *dout, const float *inp, size_t N, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)N, MN_PAR_MIN_ELEMS), gelu_backward_part, dinp, dout, inp, N);
}
