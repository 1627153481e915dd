/* Weighted softmax cross-entropy over V classes, with a stable log-softmax.
 * Each row is a max pass, an exp-sum pass and (with the gradient) one more exp pass, on 8-lane
 * vectors (libm's scalar expf was the cost; reductions run in a fixed lane order: deterministic).
 * Training uses the fused form (llm.c's fused classifier): the loss and the gradient of a row in
 * one visit, the gradient written over the row's logits, so that no second (N, V) buffer exists
 * and the row is read while it is still in cache. */
#include "cpu/ops.h"
#include "cpu/team.h"
#include "cpu/vec.h"

#include <math.h>
#include <string.h>

/* log(sum_v exp(x[v])) computed as max + log(sum exp(x - max)). */
MN_VEC_CLONES
static float log_sum_exp(const float *x, int V) {
    float maxval = mn_max_row(x, V);
    mn_v8f vsum = mn_v8f_set1(0.0f);
    mn_v8f vm = mn_v8f_set1(maxval);
    int v = 0;
    for (; v + 8 <= V; v += 8)
        vsum += mn_exp8_nonpos(mn_v8f_load(x + v) - vm);
    float sum = mn_v8f_sum(vsum);
    for (; v < V; v++)
        sum += mn_expf(x[v] - maxval);
    return maxval + logf(sum);
}

// x (V) = sw * exp(x - lse), in place
MN_VEC_CLONES
static void scaled_softmax_in_place(float *x, float lse, float sw, int V) {
    int v = 0;
    mn_v8f vl = mn_v8f_set1(lse);
    for (; v + 8 <= V; v += 8)
        mn_v8f_store(x + v, sw * mn_exp8_nonpos(mn_v8f_load(x + v) - vl));
    for (; v < V; v++)
        x[v] = sw * mn_expf(x[v] - lse);
}

static void crossentropy_rows_part(float *losses, const float *logits, const int32_t *targets, const float *weights,
                                   int N, int V, int t, int nt) {
    size_t n0, n1;
    mn_share((size_t)N, 1, t, nt, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        float w = weights[n];
        if (w == 0.0f) {
            losses[n] = 0.0f;   // ignored row: its target is not read (it may be padding)
            continue;
        }
        const float *x = logits + n * V;   // (V)
        float lse = log_sum_exp(x, V);
        losses[n] = w * (lse - x[targets[n]]);
    }
}

// logits (N, V), targets (N), weights (N) -> losses (N)
void mn_crossentropy_forward(float *losses, const float *logits, const int32_t *targets,
                             const float *weights, int N, int V, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)N * V, MN_PAR_MIN_ELEMS), crossentropy_rows_part, losses, logits, targets,
                weights, N, V);
}

static void crossentropy_fused_part(float *losses, float *logits, const int32_t *targets, const float *weights,
                                    float scale, int N, int V, int t, int nt) {
    size_t n0, n1;
    mn_share((size_t)N, 1, t, nt, &n0, &n1);
    for (size_t n = n0; n < n1; n++) {
        float *x = logits + n * V;   // (V): logits in, gradient out
        float w = weights[n];
        if (w == 0.0f) {
            losses[n] = 0.0f;   // ignored row: target not read, exactly zero gradient
            memset(x, 0, (size_t)V * sizeof(float));
            continue;
        }
        int target = targets[n];
        float lse = log_sum_exp(x, V);
        losses[n] = w * (lse - x[target]);
        float sw = scale * w;
        scaled_softmax_in_place(x, lse, sw, V);
        x[target] -= sw;
    }
}

// logits (N, V) -> losses (N) as forward; logits[n] := scale * weights[n] * (softmax - onehot)
void mn_crossentropy_fused(float *losses, float *logits, const int32_t *targets, const float *weights,
                           float scale, int N, int V, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)N * V, MN_PAR_MIN_ELEMS), crossentropy_fused_part, losses, logits, targets,
                weights, scale, N, V);
}

// index of the first largest of x[0..n), -1 if any is not finite: each lane keeps its first
// largest (strict >), then the lanes' largest with the lowest index, then the tail
MN_VEC_CLONES
int mn_argmax_finite(const float *x, int n) {
    mn_v8f vmax = mn_v8f_set1(-INFINITY), nonfinite = mn_v8f_set1(0.0f);
    mn_v8i vidx = {0, 1, 2, 3, 4, 5, 6, 7}, at = vidx;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        mn_v8f v = mn_v8f_load(x + i);
        nonfinite += v - v; /* NaN from a NaN or an infinity */
        mn_v8i gt = v > vmax;
        vmax = mn_v8f_select(gt, v, vmax);
        vidx = (gt & at) | (~gt & vidx);
        at += 8;
    }
    int best = -1;
    float m = -INFINITY;
    for (int l = 0; l < 8 && i > 0; l++) {
        if (nonfinite[l] != 0.0f)
            return -1;
        if (best < 0 || vmax[l] > m || (vmax[l] == m && vidx[l] < best))
            m = vmax[l], best = vidx[l];
    }
    for (; i < n; i++) {
        if (x[i] - x[i] != 0.0f)
            return -1;
        if (best < 0 || x[i] > m)
            m = x[i], best = i;
    }
    return best;
}
