/* Slot write rules (src/cpu/ops.h): the per-slot gate (n_addr = 0) and the key-addressed delta
 * rule (n_addr = k), B episodes of k slots of C. The two products over all B*k rows (the logits
 * and their gradients) go through cuBLAS; the per-episode k x k x C parts are plain kernels, one
 * thread per output element or one warp per row or dot product, every sum in a fixed order (no
 * atomics). aux and scratch have the CPU op's layout: rows (B*k, A+1) = [Adr | beta], then
 * E (B*k, C). Indices: row m = e*k + w of episode e, slot w; P = A+1 floats per logits row. */
#include "cuda/cuda_common.h"

#define THREADS 256

/* Grid-stride loop over `n` items with one warp each: every lane of a warp sees the same items,
 * so the warp reductions inside run with the whole warp. */
#define FOR_EACH_WARP_ITEM(item, n)                                                                          \
    for (size_t item = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; item < (n);                     \
         item += (size_t)gridDim.x * blockDim.x / 32)
#define FOR_EACH_ELEMENT(i, n)                                                                               \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* logits rows (M, P) -> [Adr | beta] in place: softmax of the first A entries (with write_diag
 * added on the diagonal, slot w = m % k), sigmoid of the last. One warp per row. */
static __global__ void activate_kernel(float *pre, const float *write_diag, size_t M, int k, int A) {
    const int lane = threadIdx.x % 32, P = A + 1;
    FOR_EACH_WARP_ITEM(m, M) {
        float *row = pre + m * P;
        if (A) {
            const int w = (int)(m % (size_t)k);
            float mx = -INFINITY;
            for (int j = lane; j < A; j += 32) {
                if (j == w)
                    row[j] += write_diag[w];
                mx = fmaxf(mx, row[j]);
            }
            mx = mn_warp_max(mx);
            float sum = 0.0f;
            for (int j = lane; j < A; j += 32) {
                row[j] = expf(row[j] - mx);
                sum += row[j];
            }
            const float inv = 1.0f / mn_warp_sum(sum);
            for (int j = lane; j < A; j += 32)
                row[j] *= inv;
        }
        if (lane == 0)
            row[A] = 1.0f / (1.0f + expf(-row[A]));
    }
}

/* E = U - Adr R per episode (the identity address when A = 0). One thread per element of E. */
static __global__ void residual_kernel(float *E, const float *u, const float *r_prev, const float *pre, int k, int C,
                                       int A, size_t n) {
    const int P = A + 1;
    FOR_EACH_ELEMENT(i, n) {
        const size_t m = i / C, e = m / k;
        const int c = (int)(i % C);
        if (!A) {
            E[i] = u[i] - r_prev[i];
            continue;
        }
        const float *adr = pre + m * P, *R = r_prev + e * k * C + c;
        float acc = 0.0f;
        for (int j = 0; j < k; j++)
            acc += adr[j] * R[(size_t)j * C];
        E[i] = u[i] - acc;
    }
}

/* r_out = R + Adr^T (beta E): slot j gathers every write addressed to it. Each thread reads
 * r_prev only at its own element before writing it, so r_out may alias r_prev. */
static __global__ void write_kernel(float *r_out, const float *r_prev, const float *E, const float *pre, int k, int C,
                                    int A, size_t n) {
    const int P = A + 1;
    FOR_EACH_ELEMENT(i, n) {
        const size_t m = i / C, e = m / k;
        const int c = (int)(i % C), j = (int)(m % (size_t)k);
        if (!A) {
            r_out[i] = r_prev[i] + pre[m * P] * E[i];
            continue;
        }
        const float *pe = pre + e * k * P, *Ee = E + e * k * C + c;
        float acc = 0.0f;
        for (int w = 0; w < k; w++)
            acc += pe[(size_t)w * P + j] * pe[(size_t)w * P + A] * Ee[(size_t)w * C];
        r_out[i] = r_prev[i] + acc;
    }
}

/* dG = Adr dRo (G = beta E) into dE, unscaled: one thread per element. */
static __global__ void write_grad_kernel(float *dE, const float *dr_out, const float *pre, int k, int C, int A,
                                         size_t n) {
    const int P = A + 1;
    FOR_EACH_ELEMENT(i, n) {
        if (!A) {
            dE[i] = dr_out[i];
            continue;
        }
        const size_t m = i / C, e = m / k;
        const int c = (int)(i % C);
        const float *adr = pre + m * P, *dRo = dr_out + e * k * C + c;
        float acc = 0.0f;
        for (int j = 0; j < k; j++)
            acc += adr[j] * dRo[(size_t)j * C];
        dE[i] = acc;
    }
}

/* Per row: dbeta = <E_w, dG_w> through the sigmoid into dpre[m, A]; then dE_w = beta dG_w.
 * One warp per row. */
static __global__ void strength_grad_kernel(float *dpre, float *dE, const float *E, const float *pre, size_t M, int C,
                                            int A) {
    const int lane = threadIdx.x % 32, P = A + 1;
    FOR_EACH_WARP_ITEM(m, M) {
        float *dEm = dE + m * C;
        const float *Em = E + m * C;
        const float beta = pre[m * P + A];
        float dot = 0.0f;
        for (int c = lane; c < C; c += 32)
            dot += Em[c] * dEm[c];
        dot = mn_warp_sum(dot);
        for (int c = lane; c < C; c += 32)
            dEm[c] *= beta;
        if (lane == 0)
            dpre[m * P + A] = dot * beta * (1.0f - beta);
    }
}

/* dr_prev += dRo - Adr^T dE (the identity path, and Adr R);  du += dE (E = U - Adr R).
 * One thread per element. */
static __global__ void input_grad_kernel(float *dr_prev, float *du, const float *dr_out, const float *dE,
                                         const float *pre, int k, int C, int A, size_t n) {
    const int P = A + 1;
    FOR_EACH_ELEMENT(i, n) {
        du[i] += dE[i];
        if (!A) {
            dr_prev[i] += dr_out[i] - dE[i];
            continue;
        }
        const size_t m = i / C, e = m / k;
        const int c = (int)(i % C), j = (int)(m % (size_t)k);
        const float *pe = pre + e * k * P, *dEe = dE + e * k * C + c;
        float acc = 0.0f;
        for (int w = 0; w < k; w++)
            acc += pe[(size_t)w * P + j] * dEe[(size_t)w * C];
        dr_prev[i] += dr_out[i] - acc;
    }
}

/* dAdr[w, j] = beta_w <E_w, dRo_j> - <dE_w, R_j> into dpre[m, j] (m = e*k + w): one warp per
 * (row m, column j) pair, n = M * k. */
static __global__ void address_grad_kernel(float *dpre, const float *E, const float *dE, const float *dr_out,
                                           const float *r_prev, const float *pre, int k, int C, size_t n) {
    const int lane = threadIdx.x % 32, A = k, P = A + 1;
    FOR_EACH_WARP_ITEM(item, n) {
        const size_t m = item / k, e = m / k;
        const int j = (int)(item % (size_t)k);
        const float *Em = E + m * C, *dEm = dE + m * C;
        const float *dRoj = dr_out + (e * k + j) * C, *Rj = r_prev + (e * k + j) * C;
        float g = 0.0f, h = 0.0f;
        for (int c = lane; c < C; c += 32) {
            g += Em[c] * dRoj[c];
            h += dEm[c] * Rj[c];
        }
        g = mn_warp_sum(g), h = mn_warp_sum(h);
        if (lane == 0)
            dpre[m * P + j] = pre[m * P + A] * g - h;
    }
}

/* Through the row softmax: dl_j = a_j (dAdr_j - <a, dAdr>), in place in dpre. One warp per row. */
static __global__ void softmax_grad_kernel(float *dpre, const float *pre, size_t M, int A) {
    const int lane = threadIdx.x % 32, P = A + 1;
    FOR_EACH_WARP_ITEM(m, M) {
        float *dl = dpre + m * P;
        const float *a = pre + m * P;
        float dot = 0.0f;
        for (int j = lane; j < A; j += 32)
            dot += a[j] * dl[j];
        dot = mn_warp_sum(dot);
        for (int j = lane; j < A; j += 32)
            dl[j] = a[j] * (dl[j] - dot);
    }
}

/* dwrite_diag[w] += sum over episodes e of dpre[(e*k + w) P + w], in episode order. */
static __global__ void diag_grad_kernel(float *dwrite_diag, const float *dpre, int B, int k) {
    const int P = k + 1;
    for (int w = blockIdx.x * blockDim.x + threadIdx.x; w < k; w += (int)(gridDim.x * blockDim.x)) {
        float acc = 0.0f;
        for (int e = 0; e < B; e++)
            acc += dpre[((size_t)e * k + w) * P + w];
        dwrite_diag[w] += acc;
    }
}

// r_prev (B*k, C), u (B*k, C), write_w (C, A+1), write_b (A+1), write_diag (A) -> r_out (B*k, C), aux
extern "C" void mn_cu_slot_write_forward(void *ctx, float *r_out, float *aux, const float *r_prev, const float *u,
                                         const float *write_w, const float *write_b, const float *write_diag, int B,
                                         int k, int C, int n_addr) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    const int A = n_addr, P = n_addr + 1;
    if (cx->failed || B <= 0 || k <= 0)
        return;
    const size_t M = (size_t)B * k, n = M * C;
    float *pre = aux, *E = aux + M * P;
    // the logits: bias rows, then u @ write_w added on
    mn_cuda_broadcast_rows(cx, pre, write_b, (int)M, P);
    mn_cuda_matmul_forward(cx, pre, u, write_w, (int)M, C, P, 1.0f);
    if (cx->failed)
        return;
    activate_kernel<<<mn_cuda_blocks(M * 32, THREADS), THREADS, 0, cx->stream>>>(pre, write_diag, M, k, A);
    MN_LAUNCHED(cx, "activate_kernel");
    if (n == 0)
        return;
    // E is complete before any r_out row is written: r_out may alias r_prev
    residual_kernel<<<mn_cuda_blocks(n, THREADS), THREADS, 0, cx->stream>>>(E, u, r_prev, pre, k, C, A, n);
    MN_LAUNCHED(cx, "residual_kernel");
    write_kernel<<<mn_cuda_blocks(n, THREADS), THREADS, 0, cx->stream>>>(r_out, r_prev, E, pre, k, C, A, n);
    MN_LAUNCHED(cx, "write_kernel");
}

// dr_out (B*k, C) -> dr_prev +=, du +=, dwrite_w (C, A+1) +=, dwrite_b (A+1) +=, dwrite_diag (A) +=
// scratch: dpre (B*k, A+1), the gradient of the logits, then dE (B*k, C).
extern "C" void mn_cu_slot_write_backward(void *ctx, float *dr_prev, float *du, float *dwrite_w, float *dwrite_b,
                                          float *dwrite_diag, const float *dr_out, const float *r_prev,
                                          const float *u, const float *aux, const float *write_w, float *scratch,
                                          int B, int k, int C, int n_addr) {
    mn_cuda_context *cx = mn_cuda_enter(ctx);
    const int A = n_addr, P = n_addr + 1;
    if (cx->failed || B <= 0 || k <= 0)
        return;
    const size_t M = (size_t)B * k, n = M * C;
    const float *pre = aux, *E = aux + M * P;
    float *dpre = scratch, *dE = scratch + M * P;
    const unsigned elem_blocks = mn_cuda_blocks(n, THREADS), row_blocks = mn_cuda_blocks(M * 32, THREADS);
    if (n) {
        write_grad_kernel<<<elem_blocks, THREADS, 0, cx->stream>>>(dE, dr_out, pre, k, C, A, n);
        MN_LAUNCHED(cx, "write_grad_kernel");
    }
    strength_grad_kernel<<<row_blocks, THREADS, 0, cx->stream>>>(dpre, dE, E, pre, M, C, A);
    MN_LAUNCHED(cx, "strength_grad_kernel");
    if (A) {
        address_grad_kernel<<<mn_cuda_blocks(M * k * 32, THREADS), THREADS, 0, cx->stream>>>(dpre, E, dE, dr_out,
                                                                                            r_prev, pre, k, C, M * k);
        MN_LAUNCHED(cx, "address_grad_kernel");
        softmax_grad_kernel<<<row_blocks, THREADS, 0, cx->stream>>>(dpre, pre, M, A);
        MN_LAUNCHED(cx, "softmax_grad_kernel");
        diag_grad_kernel<<<mn_cuda_blocks((size_t)k, THREADS), THREADS, 0, cx->stream>>>(dwrite_diag, dpre, B, k);
        MN_LAUNCHED(cx, "diag_grad_kernel");
    }
    if (n) {
        input_grad_kernel<<<elem_blocks, THREADS, 0, cx->stream>>>(dr_prev, du, dr_out, dE, pre, k, C, A, n);
        MN_LAUNCHED(cx, "input_grad_kernel");
    }
    // the logits' parameters: bias by fixed-order column sums, then the two products
    mn_cuda_column_sums(cx, dwrite_b, dpre, (int)M, P);
    mn_cuda_matmul_backward_weight(cx, dwrite_w, u, dpre, (int)M, C, P); // dW += u^T dpre
    mn_cuda_matmul_backward_input(cx, du, dpre, write_w, (int)M, C, P);  // du += dpre W^T
}
