/* The CUDA backend's functions, callable from C: backend_cuda.c puts them in the table of
 * model/backend.h (same signatures, same semantics). Pointers are device memory. */
#ifndef MN_OPS_CUDA_H
#define MN_OPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "model/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mn_cuda_context mn_cuda_context;

/* context.cu */
mn_status mn_cu_context_create(void **ctx);
void mn_cu_context_free(void *ctx);
mn_status mn_cu_status(void *ctx);
mn_status mn_cu_synchronize(void *ctx);
mn_status mn_cu_set_matmul(void *ctx, mn_matmul precision);
mn_status mn_cu_alloc(void *ctx, size_t bytes, void **out);
void mn_cu_release(void *ctx, void *p);
void mn_cu_zero(void *ctx, void *p, size_t bytes);
void mn_cu_copy(void *ctx, void *dst, const void *src, size_t bytes);
void mn_cu_upload(void *ctx, void *dst, const void *host_src, size_t bytes);
void mn_cu_download(void *ctx, void *host_dst, const void *src, size_t bytes);
void mn_cu_copy_rows(void *ctx, float *dst, size_t dst_stride, const float *src, size_t src_stride, size_t rows,
                     size_t cols);
void mn_cu_add_rows(void *ctx, float *dst, size_t dst_stride, const float *src, size_t src_stride, size_t rows,
                    size_t cols);
void mn_cu_gather_rows(void *ctx, float *dst, const int32_t *dst_rows, const float *src, const int32_t *src_rows,
                       size_t rows, size_t cols);
void mn_cu_scale(void *ctx, float *x, float factor, size_t n);
/* the async table (model/backend.h) */
mn_status mn_cu_host_alloc(void *ctx, size_t bytes, void **out);
void mn_cu_host_release(void *ctx, void *p);
void mn_cu_download_async(void *ctx, void *host_dst, const void *src, size_t bytes);
void mn_cu_fence_record(void *ctx, int i);
void mn_cu_fence_wait(void *ctx, int i);
void mn_cu_capture_begin(void *ctx);
mn_status mn_cu_capture_end(void *ctx, void **graph);
int mn_cu_graph_launch(void *ctx, void *graph);
void mn_cu_graph_release(void *ctx, void *graph);
/* op_reduce.cu */
double mn_cu_sum_squares(void *ctx, const float *x, size_t n);
void mn_cu_sum_to(void *ctx, double *dst, const float *x, size_t n);

/* op_<name>.cu */
void mn_cu_embedding_forward(void *ctx, float *out, const int32_t *ids, const float *table, int N, int C);
void mn_cu_embedding_backward(void *ctx, float *dtable, const float *dout, const int32_t *ids, int N, int C);
void mn_cu_layernorm_forward(void *ctx, float *out, float *mean, float *rstd, const float *inp, const float *weight,
                             const float *bias, int N, int C);
void mn_cu_layernorm_backward(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, const float *mean, const float *rstd, int N,
                              int C);
void mn_cu_linear_forward(void *ctx, float *out, const float *inp, const float *weight, const float *bias, int N,
                          int IC, int OC);
void mn_cu_linear_backward(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, int N, int IC, int OC);
void mn_cu_lm_head_forward(void *ctx, float *logits, const float *inp, const float *wte, int N, int C, int V);
void mn_cu_lm_head_backward(void *ctx, float *dinp, float *dwte, const float *dlogits, const float *inp,
                            const float *wte, int N, int C, int V);
void mn_cu_attention_forward(void *ctx, float *out, float *att, const float *qkv, const int32_t *valid, int B, int S,
                             int C, int H, int causal);
void mn_cu_attention_backward(void *ctx, float *dqkv, const float *dout, const float *qkv, const float *att,
                              const int32_t *valid, int B, int S, int C, int H, int causal);
void mn_cu_attention_rows_forward(void *ctx, float *out, float *att, const float *qkv, const int32_t *valid, int B,
                                  int S, int C, int H, int q0, int m);
void mn_cu_gelu_forward(void *ctx, float *out, const float *inp, size_t N);
void mn_cu_gelu_backward(void *ctx, float *dinp, const float *dout, const float *inp, size_t N);
void mn_cu_gated_update_forward(void *ctx, float *r_out, float *z, const float *r_prev, const float *u,
                                const float *gate_w, const float *gate_b, int M, int C);
void mn_cu_gated_update_backward(void *ctx, float *dr_prev, float *du, float *dgate_w, float *dgate_b,
                                 const float *dr_out, const float *r_prev, const float *u, const float *z,
                                 const float *gate_w, float *scratch, int M, int C);
void mn_cu_slot_write_forward(void *ctx, float *r_out, float *aux, const float *r_prev, const float *u,
                              const float *write_w, const float *write_b, const float *write_diag, int B, int k, int C,
                              int n_addr);
void mn_cu_slot_write_backward(void *ctx, float *dr_prev, float *du, float *dwrite_w, float *dwrite_b,
                               float *dwrite_diag, const float *dr_out, const float *r_prev, const float *u,
                               const float *aux, const float *write_w, float *scratch, int B, int k, int C,
                               int n_addr);
void mn_cu_crossentropy_forward(void *ctx, float *losses, const float *logits, const int32_t *targets,
                                const float *weights, int N, int V);
void mn_cu_crossentropy_fused(void *ctx, float *losses, float *logits, const int32_t *targets,
                              const float *weights, float scale, int N, int V);
void mn_cu_residual_forward(void *ctx, float *out, const float *a, const float *b, size_t N);
void mn_cu_residual_backward(void *ctx, float *da, float *db, const float *dout, size_t N);
void mn_cu_adamw_update(void *ctx, float *params, const float *grads, float *m, float *v,
                        const mn_adamw_segment *segs, int n_segs, float lr, float beta1, float beta2, float eps,
                        uint64_t t);

/* nccl_comm.c (builds with NCCL): the module's NCCL entries (model/backend.h, mn_cuda_module) */
#define MN_NCCL_ID_BYTES 128
mn_status mn_cu_nccl_unique_id(void *id);
mn_status mn_cu_nccl_open(const void *id, int world, int rank, int device, void **comm);
mn_status mn_cu_nccl_allreduce(void *comm, float *buf, size_t count, float scale, void *stream);
void mn_cu_nccl_close(void *comm);

#ifdef __cplusplus
}
#endif
#endif
