/* Multi-head scaled dot-product attention with key padding and an optional causal mask.
 * qkv (B, S, 3C): q | k | v blocks of C, head h at columns h*hs .. h*hs+hs-1 of each block.
 *
 * Each (b, h) pair runs on one thread and does its products as single-threaded sgemm calls on
 * blocks of MN_ATT_ROW_BLOCK query rows: scores Q K^T, then P V (forward); dP = dY V^T,
 * dQ += dS K, dK += dS^T Q, dV += P^T dY (backward). With the causal mask a row block only
 * multiplies the keys up to its last row, which skips most of the masked upper triangle.
 * (Scalar dot-product loops were ~10% of a training step; see docs/perf.md.)
 * A pair owns its q, k, v columns of dqkv, so every element is summed by one thread in a fixed
 * order: deterministic for a fixed thread count.
 * The rows form (mn_attention_rows_forward, inference) computes only some query rows, in the
 * forward's row blocks with the same products per block, so its rows equal the forward's bit
 * for bit. */
#include "cpu/ops.h"
#include "cpu/team.h"
#include "cpu/vec.h"

#include <math.h>
#include <stdlib.h>

/* Query rows per block: large enough for efficient products, small enough that causal blocks
 * skip the masked keys (S = 144: 3 blocks, 70% of the full score matrix). */
#define MN_ATT_ROW_BLOCK 64

/* Number of keys query s of a sequence with `valid` positions may attend to. */
static int attention_key_count(int s, int valid, int causal) {
    return causal ? s + 1 : valid;   // only called for s < valid, so s + 1 <= valid
}

/* Row softmax in place over the first n_keys entries; entries n_keys .. n_zero-1 set to 0. */
MN_VEC_CLONES
static void softmax_row(float *a, int n_keys, int n_zero) {
    float maxval = mn_max_row(a, n_keys);
    mn_v8f vsum = mn_v8f_set1(0.0f), vm = mn_v8f_set1(maxval);
    int t = 0;
    for (; t + 8 <= n_keys; t += 8) {
        mn_v8f e = mn_exp8_nonpos(mn_v8f_load(a + t) - vm);
        mn_v8f_store(a + t, e);
        vsum += e;
    }
    float sum = mn_v8f_sum(vsum);
    for (; t < n_keys; t++) {
        float e = mn_expf(a[t] - maxval);
        a[t] = e;
        sum += e;
    }
    float inv_sum = 1.0f / sum;
    #pragma omp simd
    for (int t = 0; t < n_keys; t++)
        a[t] *= inv_sum;
    for (int t = n_keys; t < n_zero; t++)
        a[t] = 0.0f;   // masked keys: probability exactly 0
}

/* Softmax backward of one row: ds[t] = p[t] (dp[t] - sum_t' p[t'] dp[t']) * scale, in place
 * over dp; entries n_keys .. n_zero-1 set to 0 (masked: p = 0). */
MN_VEC_CLONES
static void softmax_backward_row(float *dp, const float *p, int n_keys, int n_zero, float scale) {
    float dot = 0.0f;
    #pragma omp simd reduction(+ : dot)
    for (int t = 0; t < n_keys; t++)
        dot += p[t] * dp[t];
    for (int t = 0; t < n_keys; t++)
        dp[t] = p[t] * (dp[t] - dot) * scale;
    for (int t = n_keys; t < n_zero; t++)
        dp[t] = 0.0f;
}

/* Query rows r_lo..r_hi-1 of one (sequence, head) of n valid positions against keys 0..nk-1:
 * scores, softmax, times V. a: their score rows (stride S), o: their output rows (stride C). */
static void attend_rows(float *o, float *a, const float *q, const float *k, const float *v, int S, int C, int hs,
                        float scale, int r_lo, int r_hi, int nk, int n, int causal) {
    const int C3 = 3 * C;
    // scores (r_hi-r_lo, nk) = scale * Q[r_lo:r_hi] K[0:nk]^T
    mn_sgemm_serial(0, 1, r_hi - r_lo, nk, hs, scale, q + (size_t)r_lo * C3, C3, k, C3, 0.0f, a, S);
    for (int s = r_lo; s < r_hi; s++)
        softmax_row(a + (size_t)(s - r_lo) * S, attention_key_count(s, n, causal), S);
    // out[r_lo:r_hi] = P (r_hi-r_lo, nk) V[0:nk]
    mn_sgemm_serial(0, 0, r_hi - r_lo, hs, nk, 1.0f, a, S, v, C3, 0.0f, o, C);
}

/* Padding query rows: defined zeros (att row of S, output row of hs) so nothing reads garbage. */
static void zero_query_row(float *a, float *o, int S, int hs) {
    for (int t = 0; t < S; t++)
        a[t] = 0.0f;
    for (int i = 0; i < hs; i++)
        o[i] = 0.0f;
}

// thread t of nt's (sequence, head) pairs of the forward
static void attention_heads_part(float *out, float *att, const float *qkv, const int32_t *valid, int B, int S, int C,
                                 int H, int causal, int t, int nt) {
    int hs = C / H;
    int C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    size_t i0, i1;
    mn_share((size_t)B * H, 1, t, nt, &i0, &i1);
    for (size_t i = i0; i < i1; i++) {
        int b = (int)(i / H), h = (int)(i % H);
        float *att_bh = att + ((size_t)b * H + h) * S * S;   // (S, S)
        const float *q = qkv + (size_t)b * S * C3 + (size_t)h * hs;
        const float *k = q + C, *v = q + 2 * C;              // rows of stride 3C
        float *o = out + (size_t)b * S * C + (size_t)h * hs;  // rows of stride C
        int n = valid[b];
        for (int r0 = 0; r0 < n; r0 += MN_ATT_ROW_BLOCK) {
            int r1 = r0 + MN_ATT_ROW_BLOCK < n ? r0 + MN_ATT_ROW_BLOCK : n;
            int nk = causal ? r1 : n;   // keys any row of the block may see
            attend_rows(o + (size_t)r0 * C, att_bh + (size_t)r0 * S, q, k, v, S, C, hs, scale, r0, r1, nk, n,
                        causal);
        }
        for (int s = n; s < S; s++)
            zero_query_row(att_bh + (size_t)s * S, o + (size_t)s * C, S, hs);
    }
}

// qkv (B, S, 3C), valid (B) -> out (B, S, C), att (B, H, S, S)
void mn_attention_forward(float *out, float *att, const float *qkv, const int32_t *valid,
                          int B, int S, int C, int H, int causal, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)B * H, 2), attention_heads_part, out, att, qkv, valid, B, S, C, H, causal);
}

// thread t of nt's (sequence, head) pairs of the rows form
static void attention_rows_part(float *out, float *att, const float *qkv, const int32_t *valid, int B, int S, int C,
                                int H, int q0, int m, int t, int nt) {
    int hs = C / H;
    float scale = 1.0f / sqrtf((float)hs);
    size_t i0, i1;
    mn_share((size_t)B * H, 1, t, nt, &i0, &i1);
    for (size_t i = i0; i < i1; i++) {
        int b = (int)(i / H), h = (int)(i % H);
        float *att_bh = att + ((size_t)b * H + h) * m * S;   // (m, S)
        const float *q = qkv + (size_t)b * S * 3 * C + (size_t)h * hs;
        const float *k = q + C, *v = q + 2 * C;
        float *o = out + (size_t)b * m * C + (size_t)h * hs;  // (m, C): row s at s - q0
        int n = valid[b], q1 = q0 + m < n ? q0 + m : n > q0 ? n : q0;   // real rows q0..q1-1
        // the forward's blocks that hold rows q0..q1-1, each with the forward's keys
        for (int r0 = q0 / MN_ATT_ROW_BLOCK * MN_ATT_ROW_BLOCK; r0 < q1; r0 += MN_ATT_ROW_BLOCK) {
            int r1 = r0 + MN_ATT_ROW_BLOCK < n ? r0 + MN_ATT_ROW_BLOCK : n;
            int lo = r0 > q0 ? r0 : q0, hi = r1 < q1 ? r1 : q1;
            if (lo < hi)   // (none when every row is padding)
                attend_rows(o + (size_t)(lo - q0) * C, att_bh + (size_t)(lo - q0) * S, q, k, v, S, C, hs, scale,
                            lo, hi, r1, n, 1);
        }
        for (int s = q1; s < q0 + m; s++)
            zero_query_row(att_bh + (size_t)(s - q0) * S, o + (size_t)(s - q0) * C, S, hs);
    }
}

// qkv (B, S, 3C), valid (B) -> out (B, m, C), att (B, H, m, S): causal query rows q0 .. q0+m-1
void mn_attention_rows_forward(float *out, float *att, const float *qkv, const int32_t *valid,
                               int B, int S, int C, int H, int q0, int m, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)B * H, 2), attention_rows_part, out, att, qkv, valid, B, S, C, H, q0, m);
}

/* Whether the n floats at x are all zero. */
static int zero_row(const float *x, int n) {
    for (int i = 0; i < n; i++)
        if (x[i] != 0.0f)
            return 0;
    return 1;
}

// thread t of nt's (sequence, head) pairs of the backward
static void attention_backward_part(float *dqkv, const float *dout, const float *qkv, const float *att,
                                    const int32_t *valid, int B, int S, int C, int H, int causal, int t, int nt) {
    int hs = C / H;
    int C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    // per-thread dP / dS block (MN_ATT_ROW_BLOCK, S); without memory, one row on the stack
    int rb = MN_ATT_ROW_BLOCK;
    float *ds = malloc((size_t)rb * S * sizeof(float));
    float row_buf[ds ? 1 : S];
    float *buf = ds;
    if (!buf) {
        buf = row_buf;
        rb = 1;
    }
    size_t i0, i1;
    mn_share((size_t)B * H, 1, t, nt, &i0, &i1);
    for (size_t i = i0; i < i1; i++) {
        int b = (int)(i / H), h = (int)(i % H);
        const float *att_bh = att + ((size_t)b * H + h) * S * S;
        size_t base = (size_t)b * S * C3 + (size_t)h * hs;
        const float *q = qkv + base, *k = q + C, *v = q + 2 * C;
        float *dq = dqkv + base, *dk = dq + C, *dv = dq + 2 * C;
        const float *dy = dout + (size_t)b * S * C + (size_t)h * hs;
        int n = valid[b];   // padding queries send no gradient; padding keys get none
        for (int blk = 0; blk < n; blk += rb) {
            int r0 = blk, r1 = blk + rb < n ? blk + rb : n;
            // rows whose output nobody read (zero dY) add exactly zero: trim them
            while (r0 < r1 && zero_row(dy + (size_t)r0 * C, hs))
                r0++;
            while (r1 > r0 && zero_row(dy + (size_t)(r1 - 1) * C, hs))
                r1--;
            if (r0 == r1)
                continue;
            int nk = causal ? r1 : n;
            const float *p = att_bh + (size_t)r0 * S;   // (r1-r0, nk), row stride S
            // dV[0:nk] += P^T dY[r0:r1]
            mn_sgemm_serial(1, 0, nk, hs, r1 - r0, 1.0f, p, S, dy + (size_t)r0 * C, C, 1.0f, dv, C3);
            // dP (r1-r0, nk) = dY[r0:r1] V[0:nk]^T, then dS in place
            mn_sgemm_serial(0, 1, r1 - r0, nk, hs, 1.0f, dy + (size_t)r0 * C, C, v, C3, 0.0f, buf, nk);
            for (int s = r0; s < r1; s++)
                softmax_backward_row(buf + (size_t)(s - r0) * nk, att_bh + (size_t)s * S,
                                     attention_key_count(s, n, causal), nk, scale);
            // dQ[r0:r1] += dS K[0:nk];  dK[0:nk] += dS^T Q[r0:r1]
            mn_sgemm_serial(0, 0, r1 - r0, hs, nk, 1.0f, buf, nk, k, C3, 1.0f, dq + (size_t)r0 * C3, C3);
            mn_sgemm_serial(1, 0, nk, hs, r1 - r0, 1.0f, buf, nk, q + (size_t)r0 * C3, C3, 1.0f, dk, C3);
        }
    }
    free(ds);
}

// dout (B, S, C) -> dqkv (B, S, 3C) +=
void mn_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                           const int32_t *valid, int B, int S, int C, int H, int causal, int threads) {
    MN_RUN_TEAM(mn_team(threads, (double)B * H, 2), attention_backward_part, dqkv, dout, qkv, att, valid, B, S, C, H,
                causal);
}
