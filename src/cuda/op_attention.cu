/* Multi-head attention with key padding and an optional causal mask, as the CPU op: scores and
 * values by cuBLAS strided-batched products over (batch, head) pairs, softmax with the masks
 * in a kernel (one warp per query row). qkv (B, S, 3C) holds q | k | v, heads contiguous; the
 * products want each head contiguous, so q, k, v are first permuted to (B, H, S, hs).
 * Scratch comes from the context's workspace. The rows form (inference on cached keys) runs the
 * same steps for query rows q0 .. q0+m-1 only. */
#include <math.h>

#include "cuda/cuda_common.h"

/* qkv (B, S, 3, H, hs) -> q, k, v (B, H, S, hs), padding positions (s >= valid[b]) as zeros.
 * The products below run over all S positions and the softmax masks a padded key with an
 * exact 0, but 0 * NaN is NaN: zeroing the padded rows here keeps a non-finite value in the
 * padding (whatever the layers before wrote there) out of every valid output, as on the CPU,
 * whose products stop at valid[b]. */
static __global__ void split_heads_kernel(float *q, float *k, float *v, const float *qkv, const int32_t *valid, int B,
                                          int S, int H, int hs) {
    size_t total = (size_t)B * H * S * hs, C = (size_t)H * hs;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t d = i % hs, s = (i / hs) % S, h = (i / ((size_t)hs * S)) % H, b = i / ((size_t)hs * S * H);
        size_t src = (b * S + s) * 3 * C + h * hs + d;
        int real = (int)s < valid[b];
        q[i] = real ? qkv[src] : 0.0f;
        k[i] = real ? qkv[src + C] : 0.0f;
        v[i] = real ? qkv[src + 2 * C] : 0.0f;
    }
}

/* y (B, H, S, hs) -> out (B, S, C) */
static __global__ void merge_heads_kernel(float *out, const float *y, int B, int S, int H, int hs) {
    size_t total = (size_t)B * H * S * hs, C = (size_t)H * hs;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t d = i % hs, s = (i / hs) % S, h = (i / ((size_t)hs * S)) % H, b = i / ((size_t)hs * S * H);
        out[(b * S + s) * C + h * hs + d] = y[i];
    }
}

/* dout (B, S, C) -> dy (B, H, S, hs), padding positions as zeros (see split_heads_kernel) */
static __global__ void split_grad_kernel(float *dy, const float *dout, const int32_t *valid, int B, int S, int H,
                                         int hs) {
    size_t total = (size_t)B * H * S * hs, C = (size_t)H * hs;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t d = i % hs, s = (i / hs) % S, h = (i / ((size_t)hs * S)) % H, b = i / ((size_t)hs * S * H);
        dy[i] = (int)s < valid[b] ? dout[(b * S + s) * C + h * hs + d] : 0.0f;
    }
}

/* dqkv (B, S, 3C) += dq | dk | dv, each (B, H, S, hs) */
static __global__ void merge_qkv_grad_kernel(float *dqkv, const float *dq, const float *dk, const float *dv, int B,
                                             int S, int H, int hs) {
    size_t total = (size_t)B * H * S * hs, C = (size_t)H * hs;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t d = i % hs, s = (i / hs) % S, h = (i / ((size_t)hs * S)) % H, b = i / ((size_t)hs * S * H);
        size_t dst = (b * S + s) * 3 * C + h * hs + d;
        dqkv[dst] += dq[i];
        dqkv[dst + C] += dk[i];
        dqkv[dst + 2 * C] += dv[i];
    }
}

/* In place on att (B, H, m, S) holding the scaled scores of query rows q0 .. q0+m-1 (the whole
 * op: q0 = 0, m = S): softmax over the keys query s may see (0..s if causal, else
 * 0..valid-1); masked keys get exactly 0; padding queries a zero row. */
static __global__ void masked_softmax_kernel(float *att, const int32_t *valid, int B, int H, int S, int q0, int m,
                                             int causal) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= (size_t)B * H * m)
        return;
    int s = q0 + (int)(row % m), b = (int)(row / ((size_t)m * H));
    float *p = att + row * S;
    int n_valid = valid[b];
    if (s >= n_valid) {
        for (int t = lane; t < S; t += 32)
            p[t] = 0.0f;
        return;
    }
    int n_keys = causal ? s + 1 : n_valid;
    float maxval = -INFINITY;
    for (int t = lane; t < n_keys; t += 32)
        maxval = fmaxf(maxval, p[t]);
    maxval = mn_warp_max(maxval);
    float sum = 0.0f;
    for (int t = lane; t < n_keys; t += 32) {
        float e = expf(p[t] - maxval);
        p[t] = e; /* each lane rereads only its own entries */
        sum += e;
    }
    float inv_sum = 1.0f / mn_warp_sum(sum);
    for (int t = lane; t < S; t += 32)
        p[t] = t < n_keys ? p[t] * inv_sum : 0.0f;
}

/* In place on datt (B, H, S, S): dscore[t] = att[t] (datt[t] - sum_t' att[t'] datt[t']) * scale
 * for visible keys, 0 elsewhere and on padding queries (they send no gradient). */
static __global__ void masked_softmax_backward_kernel(float *datt, const float *att, const int32_t *valid, int B,
                                                      int H, int S, int causal, float scale) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= (size_t)B * H * S)
        return;
    int s = (int)(row % S), b = (int)(row / ((size_t)S * H));
    float *g = datt + row * S;
    const float *p = att + row * S;
    int n_valid = valid[b];
    int n_keys = s >= n_valid ? 0 : causal ? s + 1 : n_valid;
    float dot = 0.0f;
    for (int t = lane; t < n_keys; t += 32)
        dot += p[t] * g[t];
    dot = mn_warp_sum(dot);
    for (int t = lane; t < S; t += 32)
        g[t] = t < n_keys ? p[t] * (g[t] - dot) * scale : 0.0f;
}

static unsigned row_blocks(size_t rows) { return (unsigned)((rows + 7) / 8); } /* 8 warps of 256 threads */

/* Query rows q0 .. q0+m-1 of each sequence (the whole op: q0 = 0, m = S) -> out (B, m, C),
 * att (B, H, m, S). */
static void attention_rows(mn_cuda_context *cx, float *out, float *att, const float *qkv, const int32_t *valid, int B,
                           int S, int C, int H, int q0, int m, int causal) {
    if (cx->failed || B <= 0 || S <= 0 || m <= 0)
        return;
    const int hs = C / H;
    const size_t BSC = (size_t)B * S * C, BmC = (size_t)B * m * C, rows = (size_t)B * H * m;
    float *q = (float *)mn_cuda_workspace(cx, (3 * BSC + BmC) * sizeof(float));
    if (!q)
        return;
    float *k = q + BSC, *v = k + BSC, *y = v + BSC;
    split_heads_kernel<<<mn_cuda_blocks(BSC, 256), 256, 0, cx->stream>>>(q, k, v, qkv, valid, B, S, H, hs);
    MN_LAUNCHED(cx, "split_heads_kernel");
    // per (b, h): scores^T (S_k, m) = K (S_k, hs) . Q[q0:q0+m]^T (hs, m), i.e. row-major att[q][k]
    const long long head = (long long)S * hs, block = (long long)m * S;
    mn_cuda_gemm_batched(cx, CUBLAS_OP_T, CUBLAS_OP_N, S, m, hs, 1.0f / sqrtf((float)hs), k, hs, head,
                         q + (size_t)q0 * hs, hs, head, 0.0f, att, S, block, B * H);
    masked_softmax_kernel<<<row_blocks(rows), 256, 0, cx->stream>>>(att, valid, B, H, S, q0, m, causal);
    MN_LAUNCHED(cx, "masked_softmax_kernel");
    // y^T (hs, m) = V^T (hs, S_k) . att^T (S_k, m)
    mn_cuda_gemm_batched(cx, CUBLAS_OP_N, CUBLAS_OP_N, hs, m, S, 1.0f, v, hs, head, att, S, block, 0.0f, y, hs,
                         (long long)m * hs, B * H);
    merge_heads_kernel<<<mn_cuda_blocks(BmC, 256), 256, 0, cx->stream>>>(out, y, B, m, H, hs);
    MN_LAUNCHED(cx, "merge_heads_kernel");
}

// qkv (B, S, 3C), valid (B) -> out (B, S, C), att (B, H, S, S)
extern "C" void mn_cu_attention_forward(void *ctx, float *out, float *att, const float *qkv, const int32_t *valid,
                                        int B, int S, int C, int H, int causal) {
    attention_rows(mn_cuda_enter(ctx), out, att, qkv, valid, B, S, C, H, 0, S, causal);
}

// qkv (B, S, 3C), valid (B) -> out (B, m, C), att (B, H, m, S): causal query rows q0 .. q0+m-1
extern "C" void mn_cu_attention_rows_forward(void *ctx, float *out, float *att, const float *qkv,
                                             const int32_t *valid, int B, int S, int C, int H, int q0, int m) {
    attention_rows(mn_cuda_enter(ctx), out, att, qkv, valid, B, S, C, H, q0, m, 1);
}

// dout (B, S, C) -> dqkv (B, S, 3C) +=
extern "C" void mn_cu_attention_backward(void *ctx, float *dqkv, const float *dout, const float *qkv, const float *att,
                                         const int32_t *valid, int B, int S, int C, int H, int causal) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    if (cx->failed || B <= 0 || S <= 0)
        return;
    const int hs = C / H;
    const size_t BSC = (size_t)B * S * C, rows = (size_t)B * H * S;
    float *q = (float *)mn_cuda_workspace(cx, (7 * BSC + rows * S) * sizeof(float));
    if (!q)
        return;
    float *k = q + BSC, *v = k + BSC, *dy = v + BSC, *dq = dy + BSC, *dk = dq + BSC, *dv = dk + BSC;
    float *dscore = dv + BSC; /* (B, H, S, S) */
    const long long head = (long long)S * hs, square = (long long)S * S;
    split_heads_kernel<<<mn_cuda_blocks(BSC, 256), 256, 0, cx->stream>>>(q, k, v, qkv, valid, B, S, H, hs);
    MN_LAUNCHED(cx, "split_heads_kernel");
    split_grad_kernel<<<mn_cuda_blocks(BSC, 256), 256, 0, cx->stream>>>(dy, dout, valid, B, S, H, hs);
    MN_LAUNCHED(cx, "split_grad_kernel");
    // datt[q][k] = dy_q . v_k:  datt^T (S_k, S_q) = V (S_k, hs) . dY^T (hs, S_q)
    mn_cuda_gemm_batched(cx, CUBLAS_OP_T, CUBLAS_OP_N, S, S, hs, 1.0f, v, hs, head, dy, hs, head, 0.0f, dscore, S,
                         square, B * H);
    // dv_k = sum_q att[q][k] dy_q:  dV^T (hs, S_k) = dY^T (hs, S_q) . att (S_q, S_k)
    mn_cuda_gemm_batched(cx, CUBLAS_OP_N, CUBLAS_OP_T, hs, S, S, 1.0f, dy, hs, head, att, S, square, 0.0f, dv, hs,
                         head, B * H);
    masked_softmax_backward_kernel<<<row_blocks(rows), 256, 0, cx->stream>>>(dscore, att, valid, B, H, S, causal,
                                                                             1.0f / sqrtf((float)hs));
    MN_LAUNCHED(cx, "masked_softmax_backward_kernel");
    // dq_q = sum_k dscore[q][k] k_k:  dQ^T (hs, S_q) = K^T (hs, S_k) . dscore^T (S_k, S_q)
    mn_cuda_gemm_batched(cx, CUBLAS_OP_N, CUBLAS_OP_N, hs, S, S, 1.0f, k, hs, head, dscore, S, square, 0.0f, dq, hs,
                         head, B * H);
    // dk_k = sum_q dscore[q][k] q_q:  dK^T (hs, S_k) = Q^T (hs, S_q) . dscore (S_q, S_k)
    mn_cuda_gemm_batched(cx, CUBLAS_OP_N, CUBLAS_OP_T, hs, S, S, 1.0f, q, hs, head, dscore, S, square, 0.0f, dk, hs,
                         head, B * H);
    merge_qkv_grad_kernel<<<mn_cuda_blocks(BSC, 256), 256, 0, cx->stream>>>(dqkv, dq, dk, dv, B, S, H, hs);
    MN_LAUNCHED(cx, "merge_qkv_grad_kernel");
}
