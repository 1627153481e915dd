/* AdamW (PyTorch semantics, docs/model.md) and the deterministic sum of squares used by the
 * global gradient norm. */
#include "cpu/ops.h"
#include "cpu/team.h"

#include <math.h>

/* The sum of squares splits x into this many equal chunks whatever the thread count, sums
 * each chunk in double, then adds the chunk sums in index order: same input, same bits. */
#define MN_SUMSQ_CHUNKS 256
/* Independent accumulators inside a chunk: lane-wise sums vectorise without reassociation. */
#define MN_SUMSQ_LANES 8

// thread t of nt's chunks of the sum of squares: chunk_sums[ch] for its chunks ch
static void sum_squares_part(double *chunk_sums, const float *x, size_t N, int t, int nt) {
    size_t chunk_len = (N + MN_SUMSQ_CHUNKS - 1) / MN_SUMSQ_CHUNKS;
    size_t c0, c1;
    mn_share(MN_SUMSQ_CHUNKS, 1, t, nt, &c0, &c1);
    for (size_t ch = c0; ch < c1; ch++) {
        size_t i0 = ch * chunk_len;
        size_t i1 = i0 + chunk_len;
        if (i0 > N) {
            i0 = N;
        }
        if (i1 > N) {
            i1 = N;
        }
        double lane[MN_SUMSQ_LANES] = {0.0};
        size_t i = i0;
        for (; i + MN_SUMSQ_LANES <= i1; i += MN_SUMSQ_LANES) {
            for (int j = 0; j < MN_SUMSQ_LANES; j++) {
                double xv = (double)x[i + j];
                lane[j] += xv * xv;
            }
        }
        double sum = 0.0;
        for (; i < i1; i++) {
            double xv = (double)x[i];
            sum += xv * xv;
        }
        for (int j = 0; j < MN_SUMSQ_LANES; j++) {
            sum += lane[j];
        }
        chunk_sums[ch] = sum;
    }
}

double mn_sum_squares(const float *x, size_t N, int threads) {
    double chunk_sums[MN_SUMSQ_CHUNKS];
    MN_RUN_TEAM(mn_team(threads, (double)N, MN_PAR_MIN_ELEMS), sum_squares_part, chunk_sums, x, N);
    double total = 0.0;
    for (int ch = 0; ch < MN_SUMSQ_CHUNKS; ch++) {
        total += chunk_sums[ch];
    }
    return total;
}

// params, grads, m, v (N); step t >= 1. Thread `thread` of n_threads's share (elementwise, so any
// share gives the same bits).
void mn_adamw_update_shared(float *params, const float *grads, float *m, float *v, size_t N, float lr, float beta1,
                            float beta2, float eps, float weight_decay, uint64_t t, int thread, int n_threads) {
    // bias corrections in double, as PyTorch computes them from Python floats
    double bias_correction1 = 1.0 - pow((double)beta1, (double)t);
    double bias_correction2 = 1.0 - pow((double)beta2, (double)t);
    float step_size = (float)((double)lr / bias_correction1);
    float bias_correction2_sqrt = (float)sqrt(bias_correction2);
    float decay = lr * weight_decay;
    size_t i0, i1;
    mn_share(N, 1, thread, n_threads, &i0, &i1);
    for (size_t i = i0; i < i1; i++) {
        float p = params[i];
        float g = grads[i];
        p -= decay * p;   // decoupled weight decay, before the moment update
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        // p -= lr * (m / bc1) / (sqrt(v / bc2) + eps), arranged as PyTorch's addcdiv
        float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
        params[i] = p - step_size * mi / denom;
    }
}

void mn_adamw_update(float *params, const float *grads, float *m, float *v, size_t N, float lr, float beta1,
                     float beta2, float eps, float weight_decay, uint64_t t, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)N, MN_PAR_MIN_ELEMS), mn_adamw_update_shared, params, grads, m, v, N, lr,
                beta1, beta2, eps, weight_decay, t);
}
