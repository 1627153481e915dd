/* Multi-head scaled dot-product attention with key padding and an optional causal mask.
 * qkv (B, S, 3C): q | k | v blocks of C, head h at columns h*hs .. h*hs+hs-1 of each block. */
#include "cpu/ops.h"

#include <math.h>

/* Number of keys query s of a sequence with `valid` positions may attend to. */
static int attention_key_count(int s, int valid, int causal) {
    return causal ? s + 1 : valid;   // only called for s < valid, so s + 1 <= valid
}

// qkv (B, S, 3C), valid (B) -> out (B, S, C), att (B, H, S, S)
void mn_attention_forward(float *out, float *att, const float *qkv, const int32_t *valid,
                          int B, int S, int C, int H, int causal) {
    int hs = C / H;
    size_t C3 = (size_t)3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    // every (b, h, s) query row is independent: it writes one att row and one out slice
    #pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int s = 0; s < S; s++) {
                float *att_row = att + (((size_t)b * H + h) * S + s) * S;   // (S)
                float *o = out + ((size_t)b * S + s) * C + (size_t)h * hs;  // (hs)
                int n_valid = valid[b];
                if (s >= n_valid) {
                    // padding query: defined zeros so that nothing downstream reads garbage
                    for (int t = 0; t < S; t++) {
                        att_row[t] = 0.0f;
                    }
                    for (int i = 0; i < hs; i++) {
                        o[i] = 0.0f;
                    }
                    continue;
                }
                int n_keys = attention_key_count(s, n_valid, causal);
                const float *q = qkv + ((size_t)b * S + s) * C3 + (size_t)h * hs;  // (hs)
                // scores, with the max subtracted before exp for a stable softmax
                float maxval = -INFINITY;
                for (int t = 0; t < n_keys; t++) {
                    const float *k = qkv + ((size_t)b * S + t) * C3 + C + (size_t)h * hs;
                    float dot = 0.0f;
                    // simd reduction: a fixed lane order per build, so still deterministic
                    #pragma omp simd reduction(+ : dot)
                    for (int i = 0; i < hs; i++) {
                        dot += q[i] * k[i];
                    }
                    dot *= scale;
                    att_row[t] = dot;
                    if (dot > maxval) {
                        maxval = dot;
                    }
                }
                float sum = 0.0f;
                for (int t = 0; t < n_keys; t++) {
                    float e = expf(att_row[t] - maxval);
                    att_row[t] = e;
                    sum += e;
                }
                float inv_sum = 1.0f / sum;
                for (int t = 0; t < n_keys; t++) {
                    att_row[t] *= inv_sum;
                }
                for (int t = n_keys; t < S; t++) {
                    att_row[t] = 0.0f;   // masked keys: probability exactly 0
                }
                // out = sum_t att[t] * v[t]
                for (int i = 0; i < hs; i++) {
                    o[i] = 0.0f;
                }
                for (int t = 0; t < n_keys; t++) {
                    const float *v = qkv + ((size_t)b * S + t) * C3 + 2 * (size_t)C + (size_t)h * hs;
                    float a = att_row[t];
                    for (int i = 0; i < hs; i++) {
                        o[i] += a * v[i];
                    }
                }
            }
        }
    }
}

// dout (B, S, C) -> dqkv (B, S, 3C) +=
// A (b, h) pair owns its q, k and v columns of dqkv, so threads split the (b, h) pairs and
// every element is summed by one thread in a fixed order.
void mn_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                           const int32_t *valid, int B, int S, int C, int H, int causal) {
    int hs = C / H;
    size_t C3 = (size_t)3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            // per-thread row buffer for the gradient of the softmax input (S floats of stack)
            float dpre[S];
            int n_valid = valid[b];
            for (int s = 0; s < n_valid; s++) {   // padding queries send no gradient
                int n_keys = attention_key_count(s, n_valid, causal);
                const float *att_row = att + (((size_t)b * H + h) * S + s) * S;   // (S)
                const float *dy = dout + ((size_t)b * S + s) * C + (size_t)h * hs;  // (hs)
                const float *q = qkv + ((size_t)b * S + s) * C3 + (size_t)h * hs;
                float *dq = dqkv + ((size_t)b * S + s) * C3 + (size_t)h * hs;
                // datt[t] = dy . v[t];  dv[t] += att[t] * dy
                float datt_dot_att = 0.0f;
                for (int t = 0; t < n_keys; t++) {
                    size_t row = ((size_t)b * S + t) * C3 + 2 * (size_t)C + (size_t)h * hs;
                    const float *v = qkv + row;
                    float *dv = dqkv + row;
                    float a = att_row[t];
                    float datt = 0.0f;
                    #pragma omp simd reduction(+ : datt)
                    for (int i = 0; i < hs; i++) {
                        datt += dy[i] * v[i];
                        dv[i] += a * dy[i];
                    }
                    dpre[t] = datt;
                    datt_dot_att += datt * a;
                }
                // softmax backward: dpre[t] = att[t] * (datt[t] - sum_t' att[t'] datt[t'])
                for (int t = 0; t < n_keys; t++) {
                    dpre[t] = att_row[t] * (dpre[t] - datt_dot_att) * scale;
                }
                // dq += sum_t dpre[t] k[t];  dk[t] += dpre[t] q
                for (int t = 0; t < n_keys; t++) {
                    size_t row = ((size_t)b * S + t) * C3 + (size_t)C + (size_t)h * hs;
                    const float *k = qkv + row;
                    float *dk = dqkv + row;
                    float g = dpre[t];
                    for (int i = 0; i < hs; i++) {
                        dq[i] += g * k[i];
                        dk[i] += g * q[i];
                    }
                }
            }
        }
    }
}
