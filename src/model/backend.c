/* The CPU backend table (the reference ops of src/cpu/ops.h in host memory) and the
 * backend-independent helpers of backend.h. */
#include "model/backend.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cpu/ops.h"
#include "cpu/team.h"

/* ---------------------------------------------------------------- context */
/* The CPU context: the team size of the handle that owns it. */
typedef struct {
    int threads; /* 0: OpenMP's default at each op */
} cpu_context;

static mn_status cpu_context_create(void **ctx) {
    *ctx = calloc(1, sizeof(cpu_context));
    return *ctx ? MN_OK : mn_fail(MN_ERR_NOMEM, "out of memory (CPU backend context)");
}
static void cpu_context_free(void *ctx) { free(ctx); }
static mn_status cpu_set_threads(void *ctx, int threads) {
    ((cpu_context *)ctx)->threads = threads;
    return MN_OK;
}
/* The team size of one op, resolved at the call: a NULL context (another backend calling the
 * CPU ops, as the tests' checking backend does) uses OpenMP's default. */
static int cpu_threads(const void *ctx) {
    int t = ctx ? ((const cpu_context *)ctx)->threads : 0;
    return t > 0 ? t : omp_get_max_threads();
}
static mn_status cpu_status(void *ctx) {
    (void)ctx;
    return MN_OK;
}
static mn_status cpu_set_matmul(void *ctx, mn_matmul precision) {
    (void)ctx;
    if (precision != MN_MATMUL_FP32)
        return mn_fail(MN_ERR_INVALID_ARG, "the CPU backend computes matrix products in fp32 only (asked for %s)",
                       precision == MN_MATMUL_TF32 ? "tf32" : precision == MN_MATMUL_BF16 ? "bf16" : "?");
    return MN_OK;
}

/* ---------------------------------------------------------------- memory */
static mn_status cpu_alloc(void *ctx, size_t bytes, void **out) {
    (void)ctx;
    *out = calloc(bytes ? bytes : 1, 1);
    if (!*out)
        return mn_fail(MN_ERR_NOMEM, "out of memory (%zu bytes)", bytes);
    return MN_OK;
}
static void cpu_release(void *ctx, void *p) {
    (void)ctx;
    free(p);
}
static void cpu_zero(void *ctx, void *p, size_t bytes) {
    (void)ctx;
    memset(p, 0, bytes);
}
static void cpu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    memcpy(dst, src, bytes);
}
static void cpu_copy_rows(void *ctx, float *dst, size_t dst_stride, const float *src, size_t src_stride,
                          size_t rows, size_t cols) {
    (void)ctx;
    for (size_t r = 0; r < rows; r++)
        memcpy(dst + r * dst_stride, src + r * src_stride, cols * sizeof(float));
}
static void cpu_gather_rows(void *ctx, float *dst, const int32_t *dst_rows, const float *src, const int32_t *src_rows,
                            size_t rows, size_t cols) {
    (void)ctx;
    for (size_t r = 0; r < rows; r++)
        memcpy(dst + (dst_rows ? (size_t)dst_rows[r] : r) * cols, src + (src_rows ? (size_t)src_rows[r] : r) * cols,
               cols * sizeof(float));
}
/* One residual_backward per row, rows in order: the accumulation order of the reference. */
static void cpu_add_rows(void *ctx, float *dst, size_t dst_stride, const float *src, size_t src_stride,
                         size_t rows, size_t cols) {
    const int threads = cpu_threads(ctx);
    for (size_t r = 0; r < rows; r++)
        mn_residual_backward(dst + r * dst_stride, NULL, src + r * src_stride, cols, threads);
}
static void cpu_scale(void *ctx, float *x, float factor, size_t n) {
    (void)ctx;
    for (size_t i = 0; i < n; i++)
        x[i] *= factor;
}
static double cpu_sum_squares(void *ctx, const float *x, size_t n) {
    const int threads = cpu_threads(ctx);
    return mn_sum_squares(x, n, threads);
}
static void cpu_sum_to(void *ctx, double *dst, const float *x, size_t n) {
    (void)ctx;
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    *dst = s;
}

/* ---------------------------------------------------------------- ops */
/* Embedding over maximal runs of non-negative ids: for a (B, S) batch these are the token rows
 * of each episode, so the calls (and the bits) are those of a per-episode loop.
 * next_id_run: the next run [*start, *end) at or after *end; 0 when none is left. */
static int next_id_run(const int32_t *ids, int N, int *start, int *end) {
    int n = *end;
    while (n < N && ids[n] < 0)
        n++;
    if (n >= N)
        return 0;
    *start = n;
    while (n < N && ids[n] >= 0)
        n++;
    *end = n;
    return 1;
}
static void cpu_embedding_forward(void *ctx, float *out, const int32_t *ids, const float *table, int N, int C) {
    const int threads = cpu_threads(ctx);
    for (int s = 0, e = 0; next_id_run(ids, N, &s, &e);)
        mn_embedding_forward(out + (size_t)s * C, ids + s, table, e - s, C, threads);
}
static void cpu_embedding_backward(void *ctx, float *dtable, const float *dout, const int32_t *ids, int N, int C) {
    const int threads = cpu_threads(ctx);
    for (int s = 0, e = 0; next_id_run(ids, N, &s, &e);)
        mn_embedding_backward(dtable, dout + (size_t)s * C, ids + s, e - s, C, threads);
}
static void cpu_layernorm_forward(void *ctx, float *out, float *mean, float *rstd, const float *inp,
                                  const float *weight, const float *bias, int N, int C) {
    const int threads = cpu_threads(ctx);
    mn_layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, threads);
}
static void cpu_layernorm_backward(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
                                   const float *inp, const float *weight, const float *mean, const float *rstd,
                                   int N, int C) {
    const int threads = cpu_threads(ctx);
    mn_layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C, threads);
}
static void cpu_linear_forward(void *ctx, float *out, const float *inp, const float *weight, const float *bias,
                               int N, int IC, int OC) {
    const int threads = cpu_threads(ctx);
    mn_linear_forward(out, inp, weight, bias, N, IC, OC, threads);
}
static void cpu_linear_backward(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
                                const float *inp, const float *weight, int N, int IC, int OC) {
    const int threads = cpu_threads(ctx);
    mn_linear_backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, threads);
}
static void cpu_lm_head_forward(void *ctx, float *logits, const float *inp, const float *wte, int N, int C, int V) {
    const int threads = cpu_threads(ctx);
    mn_lm_head_forward(logits, inp, wte, N, C, V, threads);
}
static void cpu_lm_head_backward(void *ctx, float *dinp, float *dwte, const float *dlogits, const float *inp,
                                 const float *wte, int N, int C, int V) {
    const int threads = cpu_threads(ctx);
    mn_lm_head_backward(dinp, dwte, dlogits, inp, wte, N, C, V, threads);
}
static void cpu_attention_forward(void *ctx, float *out, float *att, const float *qkv, const int32_t *valid, int B,
                                  int S, int C, int H, int causal) {
    const int threads = cpu_threads(ctx);
    mn_attention_forward(out, att, qkv, valid, B, S, C, H, causal, threads);
}
static void cpu_attention_backward(void *ctx, float *dqkv, const float *dout, const float *qkv, const float *att,
                                   const int32_t *valid, int B, int S, int C, int H, int causal) {
    const int threads = cpu_threads(ctx);
    mn_attention_backward(dqkv, dout, qkv, att, valid, B, S, C, H, causal, threads);
}
static void cpu_attention_rows_forward(void *ctx, float *out, float *att, const float *qkv, const int32_t *valid,
                                       int B, int S, int C, int H, int q0, int m) {
    const int threads = cpu_threads(ctx);
    mn_attention_rows_forward(out, att, qkv, valid, B, S, C, H, q0, m, threads);
}
static void cpu_gelu_forward(void *ctx, float *out, const float *inp, size_t N) {
    const int threads = cpu_threads(ctx);
    mn_gelu_forward(out, inp, N, threads);
}
static void cpu_gelu_backward(void *ctx, float *dinp, const float *dout, const float *inp, size_t N) {
    const int threads = cpu_threads(ctx);
    mn_gelu_backward(dinp, dout, inp, N, threads);
}
static void cpu_gated_update_forward(void *ctx, float *r_out, float *z, const float *r_prev, const float *u,
                                     const float *gate_w, const float *gate_b, int M, int C) {
    const int threads = cpu_threads(ctx);
    mn_gated_update_forward(r_out, z, r_prev, u, gate_w, gate_b, M, C, threads);
}
static void cpu_gated_update_backward(void *ctx, float *dr_prev, float *du, float *dgate_w, float *dgate_b,
                                      const float *dr_out, const float *r_prev, const float *u, const float *z,
                                      const float *gate_w, float *scratch, int M, int C) {
    const int threads = cpu_threads(ctx);
    mn_gated_update_backward(dr_prev, du, dgate_w, dgate_b, dr_out, r_prev, u, z, gate_w, scratch, M, C, threads);
}
static void cpu_slot_write_forward(void *ctx, float *r_out, float *aux, const float *r_prev, const float *u,
                                   const float *write_w, const float *write_b, const float *write_diag, int B, int k,
                                   int C, int n_addr) {
    const int threads = cpu_threads(ctx);
    mn_slot_write_forward(r_out, aux, r_prev, u, write_w, write_b, write_diag, B, k, C, n_addr, threads);
}
static void cpu_slot_write_backward(void *ctx, float *dr_prev, float *du, float *dwrite_w, float *dwrite_b,
                                    float *dwrite_diag, const float *dr_out, const float *r_prev, const float *u,
                                    const float *aux, const float *write_w, float *scratch, int B, int k, int C,
                                    int n_addr) {
    const int threads = cpu_threads(ctx);
    mn_slot_write_backward(dr_prev, du, dwrite_w, dwrite_b, dwrite_diag, dr_out, r_prev, u, aux, write_w, scratch, B,
                           k, C, n_addr, threads);
}
static void cpu_crossentropy_forward(void *ctx, float *losses, const float *logits, const int32_t *targets,
                                     const float *weights, int N, int V) {
    const int threads = cpu_threads(ctx);
    mn_crossentropy_forward(losses, logits, targets, weights, N, V, threads);
}
static void cpu_crossentropy_fused(void *ctx, float *losses, float *logits, const int32_t *targets,
                                   const float *weights, float scale, int N, int V) {
    const int threads = cpu_threads(ctx);
    mn_crossentropy_fused(losses, logits, targets, weights, scale, N, V, threads);
}
static void cpu_residual_forward(void *ctx, float *out, const float *a, const float *b, size_t N) {
    const int threads = cpu_threads(ctx);
    mn_residual_forward(out, a, b, N, threads);
}
static void cpu_residual_backward(void *ctx, float *da, float *db, const float *dout, size_t N) {
    const int threads = cpu_threads(ctx);
    mn_residual_backward(da, db, dout, N, threads);
}
// thread t of nt's share of every tensor: one team for the whole update
static void adamw_segments_part(float *params, const float *grads, float *m, float *v, const mn_adamw_segment *segs,
                                int n_segs, float lr, float beta1, float beta2, float eps, uint64_t step, int t,
                                int nt) {
    for (int i = 0; i < n_segs; i++) {
        size_t o = segs[i].offset;
        mn_adamw_update_shared(params + o, grads + o, m + o, v + o, segs[i].size, lr, beta1, beta2, eps,
                               segs[i].weight_decay, step, t, nt);
    }
}
static void cpu_adamw_update(void *ctx, float *params, const float *grads, float *m, float *v,
                             const mn_adamw_segment *segs, int n_segs, float lr, float beta1, float beta2, float eps,
                             uint64_t t) {
    size_t total = 0;
    for (int i = 0; i < n_segs; i++)
        total += segs[i].size;
    MN_RUN_TEAM(mn_team(cpu_threads(ctx), (double)total, MN_PAR_MIN_ELEMS), adamw_segments_part, params, grads, m, v,
                segs, n_segs, lr, beta1, beta2, eps, t);
}

static const mn_backend cpu_backend = {
    .device = MN_DEVICE_CPU,
    .name = "cpu",
    .classifier_floats = MN_CPU_CLASSIFIER_FLOATS,
    .synchronize = cpu_status, /* nothing runs asynchronously */
    .upload = cpu_copy,        /* backend memory is host memory */
    .download = cpu_copy,
    MN_BACKEND_ENTRIES(cpu_),
};

const mn_backend *mn_backend_cpu(void) { return &cpu_backend; }

/* ---------------------------------------------------------------- exec */
mn_status mn_backend_for(mn_device device, const mn_backend **out) {
    *out = NULL;
    if (device == MN_DEVICE_CPU) {
        *out = mn_backend_cpu();
    } else if (device == MN_DEVICE_CUDA) {
        const mn_cuda_module *m = NULL;
        MN_TRY(mn_cuda_module_get(&m)); /* "this build has no CUDA backend", or why it did not load */
        *out = m->backend;
    } else {
        return mn_fail(MN_ERR_INVALID_ARG, "unknown device %d", (int)device);
    }
    return MN_OK;
}

mn_status mn_exec_open_backend(const mn_backend *be, mn_exec *out) {
    out->be = NULL;
    out->ctx = NULL;
    void *ctx = NULL;
    MN_TRY(be->context_create(&ctx));
    out->be = be;
    out->ctx = ctx;
    return MN_OK;
}

mn_status mn_exec_open(mn_device device, mn_exec *out) {
    const mn_backend *be = NULL;
    out->be = NULL;
    out->ctx = NULL;
    MN_TRY(mn_backend_for(device, &be));
    return mn_exec_open_backend(be, out);
}

void mn_exec_close(mn_exec *ex) {
    if (!ex || !ex->be)
        return;
    ex->be->context_free(ex->ctx);
    ex->be = NULL;
    ex->ctx = NULL;
}

mn_status mn_exec_status(const mn_exec *ex) { return ex->be->status(ex->ctx); }

mn_status mn_exec_set_threads(const mn_exec *ex, int threads) {
    if (threads < 0)
        return mn_fail(MN_ERR_INVALID_ARG, "threads = %d must be >= 0 (0: OpenMP's default)", threads);
    return ex->be->set_threads(ex->ctx, threads);
}

mn_status mn_exec_alloc(const mn_exec *ex, size_t bytes, void **out) { return ex->be->alloc(ex->ctx, bytes, out); }

void mn_exec_release(const mn_exec *ex, void *p) {
    if (p)
        ex->be->release(ex->ctx, p);
}
