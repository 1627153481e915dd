/* Weighted softmax cross-entropy over V classes, with a stable log-softmax. */
#include "cpu/ops.h"

#include <math.h>

/* log(sum_v exp(x[v])) computed as max + log(sum exp(x - max)). */
static float log_sum_exp(const float *x, int V, float *maxval_out) {
    float maxval = -INFINITY;
    for (int v = 0; v < V; v++) {
        if (x[v] > maxval) {
            maxval = x[v];
        }
    }
    float sum = 0.0f;
    for (int v = 0; v < V; v++) {
        sum += expf(x[v] - maxval);
    }
    *maxval_out = maxval;
    return maxval + logf(sum);
}

// logits (N, V), targets (N), weights (N) -> losses (N)
void mn_crossentropy_forward(float *losses, const float *logits, const int32_t *targets,
                             const float *weights, int N, int V) {
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float w = weights[n];
        if (w == 0.0f) {
            losses[n] = 0.0f;   // ignored row: its target is not read (it may be padding)
            continue;
        }
        const float *x = logits + (size_t)n * V;   // (V)
        float maxval;
        float lse = log_sum_exp(x, V, &maxval);
        losses[n] = w * (lse - x[targets[n]]);
    }
}

// -> dlogits (N, V) += scale * weights[n] * (softmax(logits[n]) - onehot(targets[n]))
void mn_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                              const float *weights, float scale, int N, int V) {
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float w = weights[n];
        if (w == 0.0f) {
            continue;   // ignored row: exactly zero gradient
        }
        const float *x = logits + (size_t)n * V;   // (V)
        float *dx = dlogits + (size_t)n * V;       // (V)
        float maxval;
        float lse = log_sum_exp(x, V, &maxval);
        float sw = scale * w;
        for (int v = 0; v < V; v++) {
            dx[v] += sw * expf(x[v] - lse);
        }
        dx[targets[n]] -= sw;
    }
}
