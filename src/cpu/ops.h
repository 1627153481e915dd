/* CPU backend: the plain-C fp32 reference of every op, forward and backward side by side.
 * One file per op (op_<name>.c). Ops do no argument validation: the model validates.
 * Backward functions ACCUMULATE (+=) into every gradient buffer, so a tensor used in
 * several places gets the sum; callers zero gradients once per step.
 * Results are deterministic for a fixed OpenMP thread count (no atomics, static schedules). */
#ifndef MN_CPU_OPS_H
#define MN_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Row-major sgemm, C (M, N) = alpha op(A) op(B) + beta C, op = transpose when trans_* != 0.
 * mn_sgemm: call outside parallel regions; uses every thread (see op_gemm.c for which pool).
 * mn_sgemm_serial: the calling thread only; for use inside an OpenMP region.
 * mn_blas_on_openmp: 1 when OpenBLAS shares OpenMP's threads (single-threaded or the OpenMP
 * build), so that ops may call mn_sgemm_serial from every thread of a team without
 * oversubscribing the cores. */
void mn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
void mn_sgemm_serial(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc);
int mn_blas_on_openmp(void);

/* embedding: out (N, C) = table[ids[n]] (V, C) */
void mn_embedding_forward(float *out, const int32_t *ids, const float *table, int N, int C);
void mn_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int N, int C);

/* layernorm over C, eps 1e-5: inp (N, C) -> out (N, C); saves mean (N) and rstd (N) */
void mn_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C);
void mn_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C);

/* linear: out (N, OC) = inp (N, IC) @ weight (IC, OC) + bias (OC); bias may be NULL.
 * Backward: dinp may be NULL (input gradient not needed); dbias may be NULL. */
void mn_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IC, int OC);
void mn_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IC, int OC);

/* tied output head: logits (N, V) = inp (N, C) @ wte^T, wte (V, C) */
void mn_lm_head_forward(float *logits, const float *inp, const float *wte, int N, int C, int V);
void mn_lm_head_backward(float *dinp, float *dwte, const float *dlogits, const float *inp,
                         const float *wte, int N, int C, int V);

/* multi-head attention over S positions: qkv (B, S, 3C) holds q | k | v, heads contiguous.
 * valid[b] (1..S): positions >= valid[b] are padding and never used as keys.
 * causal: query s sees keys 0..s; else every valid key.
 * out (B, S, C); att (B, H, S, S) saves softmax probabilities (0 where masked).
 * Padding query rows get out = 0 and send no gradient. */
void mn_attention_forward(float *out, float *att, const float *qkv, const int32_t *valid,
                          int B, int S, int C, int H, int causal);
void mn_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                           const int32_t *valid, int B, int S, int C, int H, int causal);

/* GELU, tanh approximation (GPT-2) */
void mn_gelu_forward(float *out, const float *inp, size_t N);
void mn_gelu_backward(float *dinp, const float *dout, const float *inp, size_t N);

/* gated memory update over M rows (M = B * k) of C:
 *   z = sigmoid(r_prev @ gate_w[0:C] + u @ gate_w[C:2C] + gate_b);  r_out = (1-z) r_prev + z u
 * gate_w (2C, C). Forward saves z (M, C). Backward needs scratch (M, C). */
void mn_gated_update_forward(float *r_out, float *z, const float *r_prev, const float *u,
                             const float *gate_w, const float *gate_b, int M, int C);
void mn_gated_update_backward(float *dr_prev, float *du, float *dgate_w, float *dgate_b,
                              const float *dr_out, const float *r_prev, const float *u,
                              const float *z, const float *gate_w, float *scratch, int M, int C);

/* softmax cross-entropy: logits (N, V), targets (N), weights (N) (0 = ignored row).
 * losses[n] = weights[n] * -log softmax(logits[n])[targets[n]]  (0 where weight is 0).
 * Backward: dlogits[n] += scale * weights[n] * (softmax(logits[n]) - onehot(targets[n])). */
void mn_crossentropy_forward(float *losses, const float *logits, const int32_t *targets,
                             const float *weights, int N, int V);
void mn_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                              const float *weights, float scale, int N, int V);

/* residual: out = a + b (N); backward of a sum is adding dout into both inputs.
 * db may be NULL: then only da += dout (used to accumulate one gradient into another). */
void mn_residual_forward(float *out, const float *a, const float *b, size_t N);
void mn_residual_backward(float *da, float *db, const float *dout, size_t N);

/* sum of squares of x (N), accumulated in double in fixed-size blocks (deterministic) */
double mn_sum_squares(const float *x, size_t N);

/* AdamW on one tensor (PyTorch semantics; docs/model.md). step t >= 1. */
void mn_adamw_update(float *params, const float *grads, float *m, float *v, size_t N,
                     float lr, float beta1, float beta2, float eps, float weight_decay, uint64_t t);

#endif
