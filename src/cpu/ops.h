/* CPU backend: the plain-C fp32 reference of every op, forward and backward side by side.
 * One file per op (op_<name>.c). Ops do no argument validation: the model validates.
 * Backward functions ACCUMULATE (+=) into every gradient buffer, so a tensor used in
 * several places gets the sum; callers zero gradients once per step.
 * Every op takes `threads` (>= 1), the size of the OpenMP team its parallel regions use (none
 * for little work or inside a parallel region: team.h): the caller decides (the backend passes
 * its handle's setting), no process-wide default is read.
 * Results are deterministic for a fixed thread count (no atomics, static schedules); whether
 * they also agree across counts depends on OpenBLAS (op_gemm.c, docs/model.md). */
#ifndef MN_CPU_OPS_H
#define MN_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Row-major sgemm, C (M, N) = alpha op(A) op(B) + beta C, op = transpose when trans_* != 0.
 * mn_sgemm: splits the product into panels for `threads` OpenMP threads (op_gemm.c; inside a
 * parallel region the calling thread runs them). mn_sgemm_serial: one OpenBLAS call from the
 * calling thread. */
void mn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc, int threads);
void mn_sgemm_serial(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* mn_sgemm's split of one product: n_panels panels (0 for an empty product), each one OpenBLAS
 * call, run in any order or on any threads (mn_gemm_plan_run). Lets an op run a product's
 * panels inside a parallel region of its own, next to other work, with the bits of mn_sgemm. */
typedef struct {
    int trans_a, trans_b, M, N, K;
    float alpha;
    const float *A;
    int lda;
    const float *B;
    int ldb;
    float beta;
    float *C;
    int ldc;
    int split_n, panel, n_panels; /* panels of `panel` columns (split_n) or rows of C */
} mn_gemm_plan;
mn_gemm_plan mn_sgemm_plan(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C, int ldc, int threads);
void mn_gemm_plan_run(const mn_gemm_plan *g, int p);
/* Below this many multiply-adds one thread does a whole product (a split costs more). */
#define MN_GEMM_SPLIT_MIN_MACS (1 << 18)

/* embedding: out (N, C) = table[ids[n]] (V, C) */
void mn_embedding_forward(float *out, const int32_t *ids, const float *table, int N, int C, int threads);
void mn_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C, int threads);

/* layernorm over C, eps 1e-5: inp (N, C) -> out (N, C); saves mean (N) and rstd (N) */
void mn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C, int threads);
void mn_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C, int threads);

/* linear: out (N, OC) = inp (N, IC) @ weight (IC, OC) + bias (OC); bias may be NULL.
 * Backward: dinp may be NULL (input gradient not needed); dbias may be NULL. */
void mn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IC, int OC, int threads);
void mn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IC, int OC, int threads);

/* tied output head: logits (N, V) = inp (N, C) @ wte^T, wte (V, C). Forward with at most
 * MN_LM_HEAD_STREAM_ROWS rows, on an x86-64 with AVX and FMA, reads wte once without sgemm's
 * packing (op_lm_head.c); it sums each logit in c order with fused multiply-adds, as OpenBLAS's
 * kernels do, so it agrees with the product to rounding (on the development machine, bit for bit). */
#define MN_LM_HEAD_STREAM_ROWS 8
void mn_lm_head_forward(float *logits, const float *inp, const float *wte, int N, int C, int V, int threads);
void mn_lm_head_backward(float *dinp, float *dwte, const float *dlogits, const float *inp,
                         const float *wte, int N, int C, int V, int threads);

/* multi-head attention over S positions: qkv (B, S, 3C) holds q | k | v, heads contiguous.
 * valid[b] (1..S): positions >= valid[b] are padding and never used as keys.
 * causal: query s sees keys 0..s; else every valid key.
 * out (B, S, C); att (B, H, S, S) saves softmax probabilities (0 where masked).
 * Padding query rows get out = 0 and send no gradient. */
void mn_attention_forward(float *out, float *att, const float *qkv, const int32_t *valid,
                          int B, int S, int C, int H, int causal, int threads);
void mn_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                           const int32_t *valid, int B, int S, int C, int H, int causal, int threads);
/* The rows form, for inference with cached keys and values: causal attention of query rows
 * q0 .. q0+m-1 (q0 + m <= S) of each sequence only, against its keys 0..s. out (B, m, C), att
 * (B, H, m, S); rows s >= valid[b] are padding (out = 0). Equal bit for bit to the same rows of
 * mn_attention_forward (causal). Forward only. */
void mn_attention_rows_forward(float *out, float *att, const float *qkv, const int32_t *valid,
                               int B, int S, int C, int H, int q0, int m, int threads);

/* GELU, tanh approximation (GPT-2) */
void mn_gelu_forward(float *out, const float *inp, size_t N, int threads);
void mn_gelu_backward(float *dinp, const float *dout, const float *inp, size_t N, int threads);

/* gated memory update over M rows (M = B * k) of C:
 *   z = sigmoid(r_prev @ gate_w[0:C] + u @ gate_w[C:2C] + gate_b);  r_out = (1-z) r_prev + z u
 * gate_w (2C, C). Forward saves z (M, C). Backward needs scratch (M, C). */
void mn_gated_update_forward(float *r_out, float *z, const float *r_prev, const float *u,
                             const float *gate_w, const float *gate_b, int M, int C, int threads);
void mn_gated_update_backward(float *dr_prev, float *du, float *dgate_w, float *dgate_b,
                              const float *dr_out, const float *r_prev, const float *u,
                              const float *z, const float *gate_w, float *scratch, int M, int C, int threads);

/* slot write rules (docs/model.md, "Write rules"), B episodes of k slots of C. A = n_addr is k
 * (the delta rule: key-addressed) or 0 (the per-slot gate: write j goes to slot j). Per episode:
 *   pre  = u @ write_w + write_b                 (k, A+1)
 *   Adr  = softmax_rows(pre[:, 0:A] + diag(write_diag))   (k, k); the identity when A = 0
 *   beta = sigmoid(pre[:, A])                    (k)
 *   E    = u - Adr @ r_prev                      (k, C)   what write w would change
 *   r_out = r_prev + Adr^T @ (beta * E)          (k, C)
 * write_w (C, A+1), write_b (A+1), write_diag (A; NULL when A = 0). aux holds, for the backward,
 * the rows (B*k, A+1) = [Adr | beta] and then E (B*k, C): B*k*(A+1+C) floats
 * (mn_slot_write_aux_floats, src/model/backend.h).
 * r_out may alias r_prev. Backward needs scratch of the same size. */
void mn_slot_write_forward(float *r_out, float *aux, const float *r_prev, const float *u, const float *write_w,
                           const float *write_b, const float *write_diag, int B, int k, int C, int n_addr,
                           int threads);
void mn_slot_write_backward(float *dr_prev, float *du, float *dwrite_w, float *dwrite_b, float *dwrite_diag,
                            const float *dr_out, const float *r_prev, const float *u, const float *aux,
                            const float *write_w, float *scratch, int B, int k, int C, int n_addr, int threads);

/* softmax cross-entropy: logits (N, V), targets (N), weights (N) (0 = ignored row).
 * losses[n] = weights[n] * -log softmax(logits[n])[targets[n]]  (0 where weight is 0).
 * Fused (forward and backward in one pass; llm.c's fused classifier): the same losses, and the
 * logits are OVERWRITTEN (not accumulated into) with their gradient
 * scale * weights[n] * (softmax(logits[n]) - onehot(targets[n])), rows of weight 0 with zeros. */
void mn_crossentropy_forward(float *losses, const float *logits, const int32_t *targets,
                             const float *weights, int N, int V, int threads);
void mn_crossentropy_fused(float *losses, float *logits, const int32_t *targets, const float *weights,
                           float scale, int N, int V, int threads);
/* The index of the first largest of x[0..n) (greedy decoding's pick: the mode of the softmax), or
 * -1 if one of them is not finite. Host memory, one thread. */
int mn_argmax_finite(const float *x, int n);

/* residual: out = a + b (N); backward of a sum is adding dout into both inputs.
 * db may be NULL: then only da += dout (used to accumulate one gradient into another). */
void mn_residual_forward(float *out, const float *a, const float *b, size_t N, int threads);
void mn_residual_backward(float *da, float *db, const float *dout, size_t N, int threads);

/* sum of squares of x (N), accumulated in double in fixed-size blocks (deterministic) */
double mn_sum_squares(const float *x, size_t N, int threads);

/* AdamW on one tensor (PyTorch semantics; docs/model.md). step t >= 1. _shared: updates thread
 * `thread` of n_threads's share, so that one team can run every tensor of a step (the CPU
 * backend: src/model/backend.c). */
void mn_adamw_update(float *params, const float *grads, float *m, float *v, size_t N,
                     float lr, float beta1, float beta2, float eps, float weight_decay, uint64_t t, int threads);
void mn_adamw_update_shared(float *params, const float *grads, float *m, float *v, size_t N, float lr, float beta1,
                            float beta2, float eps, float weight_decay, uint64_t t, int thread, int n_threads);

#endif
