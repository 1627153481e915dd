/* Weighted softmax cross-entropy over V classes, with a stable log-softmax.
 * Each row is a max pass, an exp-sum pass and (backward) one more exp pass, on 8-lane vectors
 * (libm's scalar expf was the cost; reductions run in a fixed lane order: deterministic). */
#include "cpu/ops.h"
#include "cpu/vec.h"

#include <math.h>

/* log(sum_v exp(x[v])) computed as max + log(sum exp(x - max)). */
MN_VEC_CLONES
static float log_sum_exp(const float *x, int V) {
    float maxval = mn_max_row(x, V);
    mn_v8f vsum = mn_v8f_set1(0.0f);
    mn_v8f vm = mn_v8f_set1(maxval);
    int v = 0;
    for (; v + 8 <= V; v += 8)
        vsum += mn_exp8(mn_v8f_load(x + v) - vm);
    float sum = mn_v8f_sum(vsum);
    for (; v < V; v++)
        sum += mn_expf(x[v] - maxval);
    return maxval + logf(sum);
}

// dx (V) += sw * exp(x - lse)
MN_VEC_CLONES
static void add_scaled_softmax(float *dx, const float *x, float lse, float sw, int V) {
    int v = 0;
    mn_v8f vl = mn_v8f_set1(lse);
    for (; v + 8 <= V; v += 8)
        mn_v8f_store(dx + v, mn_v8f_load(dx + v) + sw * mn_exp8(mn_v8f_load(x + v) - vl));
    for (; v < V; v++)
        dx[v] += sw * mn_expf(x[v] - lse);
}

// logits (N, V), targets (N), weights (N) -> losses (N)
void mn_crossentropy_forward(float *losses, const float *logits, const int32_t *targets,
                             const float *weights, int N, int V, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads) if ((size_t)N * V >= MN_PAR_MIN_ELEMS)
    for (int n = 0; n < N; n++) {
        float w = weights[n];
        if (w == 0.0f) {
            losses[n] = 0.0f;   // ignored row: its target is not read (it may be padding)
            continue;
        }
        const float *x = logits + (size_t)n * V;   // (V)
        float lse = log_sum_exp(x, V);
        losses[n] = w * (lse - x[targets[n]]);
    }
}

// -> dlogits (N, V) += scale * weights[n] * (softmax(logits[n]) - onehot(targets[n]))
void mn_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                              const float *weights, float scale, int N, int V, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads) if ((size_t)N * V >= MN_PAR_MIN_ELEMS)
    for (int n = 0; n < N; n++) {
        float w = weights[n];
        if (w == 0.0f) {
            continue;   // ignored row: exactly zero gradient
        }
        const float *x = logits + (size_t)n * V;   // (V)
        float *dx = dlogits + (size_t)n * V;       // (V)
        float lse = log_sum_exp(x, V);
        float sw = scale * w;
        add_scaled_softmax(dx, x, lse, sw, V);
        dx[targets[n]] -= sw;
    }
}
