#include "guarded_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

typedef struct {
    const char *start;
    size_t bytes;
} region;

typedef struct {
    region *regions;
    size_t count, cap;
    int failed;
    char message[512];
} guard;

static const mn_backend *cpu(void) { return mn_backend_cpu(); }

static void fail_once(guard *g, const char *op, const char *arg, const void *p, size_t bytes, const char *why) {
    if (g->failed)
        return;
    g->failed = 1;
    snprintf(g->message, sizeof g->message, "guarded backend: %s: argument %s (%p, %zu bytes) %s", op, arg, p, bytes,
             why);
}

static const region *find(const guard *g, const void *p) {
    const char *c = p;
    for (size_t i = 0; i < g->count; i++)
        if (c >= g->regions[i].start && c < g->regions[i].start + g->regions[i].bytes)
            return &g->regions[i];
    return NULL;
}

/* p .. p + bytes must lie in one device allocation (bytes 0: nothing is touched). */
static void need(guard *g, const char *op, const char *arg, const void *p, size_t bytes) {
    if (!bytes)
        return;
    if (!p) {
        fail_once(g, op, arg, p, bytes, "is NULL");
        return;
    }
    const region *r = find(g, p);
    if (!r)
        fail_once(g, op, arg, p, bytes, "is not device memory");
    else if ((const char *)p + bytes > r->start + r->bytes)
        fail_once(g, op, arg, p, bytes, "runs past the end of its allocation");
}
#define NEED_F(arg, n) need(g, __func__, #arg, arg, (size_t)(n) * sizeof(float))
#define NEED_I(arg, n) need(g, __func__, #arg, arg, (size_t)(n) * sizeof(int32_t))
#define MAYBE_F(arg, n) if (arg) NEED_F(arg, n)

static void host_only(guard *g, const char *op, const char *arg, const void *p, size_t bytes) {
    if (bytes && find(g, p))
        fail_once(g, op, arg, p, bytes, "is device memory where host memory is expected");
}

/* ---------------------------------------------------------------- context and memory */
static mn_status g_context_create(void **ctx) {
    *ctx = calloc(1, sizeof(guard));
    return *ctx ? MN_OK : mn_fail(MN_ERR_NOMEM, "guarded backend: out of memory");
}
static void g_context_free(void *ctx) {
    guard *g = ctx;
    /* allocations the model forgot to release stay allocated: ASan reports them as leaks */
    free(g->regions);
    free(g);
}
static mn_status g_status(void *ctx) {
    guard *g = ctx;
    return g->failed ? mn_fail(MN_ERR_DEVICE, "%s", g->message) : MN_OK;
}
static mn_status g_set_matmul(void *ctx, mn_matmul precision) {
    (void)ctx;
    return precision == MN_MATMUL_FP32 ? MN_OK
                                       : mn_fail(MN_ERR_INVALID_ARG, "guarded backend: fp32 products only");
}
/* the CPU ops it forwards to run on OpenMP's default team (a NULL CPU context) */
static mn_status g_set_threads(void *ctx, int threads) {
    (void)ctx;
    (void)threads;
    return MN_OK;
}
static mn_status g_alloc(void *ctx, size_t bytes, void **out) {
    guard *g = ctx;
    if (g->count == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 64;
        region *r = realloc(g->regions, cap * sizeof *r);
        if (!r)
            return mn_fail(MN_ERR_NOMEM, "guarded backend: out of memory");
        g->regions = r;
        g->cap = cap;
    }
    *out = calloc(bytes ? bytes : 1, 1);
    if (!*out)
        return mn_fail(MN_ERR_NOMEM, "guarded backend: out of memory (%zu bytes)", bytes);
    g->regions[g->count++] = (region){*out, bytes ? bytes : 1};
    return MN_OK;
}
static void g_release(void *ctx, void *p) {
    guard *g = ctx;
    for (size_t i = 0; i < g->count; i++)
        if (g->regions[i].start == p) {
            free(p);
            g->regions[i] = g->regions[--g->count];
            return;
        }
    fail_once(g, "release", "p", p, 0, "was not allocated by this backend");
}
static void g_zero(void *ctx, void *p, size_t bytes) {
    guard *g = ctx;
    need(g, "zero", "p", p, bytes);
    if (!g->failed)
        cpu()->zero(NULL, p, bytes);
}
static void g_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    guard *g = ctx;
    need(g, "copy", "dst", dst, bytes);
    need(g, "copy", "src", src, bytes);
    if (!g->failed)
        cpu()->copy(NULL, dst, src, bytes);
}
static void g_upload(void *ctx, void *dst, const void *host_src, size_t bytes) {
    guard *g = ctx;
    need(g, "upload", "dst", dst, bytes);
    host_only(g, "upload", "host_src", host_src, bytes);
    if (!g->failed)
        cpu()->upload(NULL, dst, host_src, bytes);
}
static void g_download(void *ctx, void *host_dst, const void *src, size_t bytes) {
    guard *g = ctx;
    need(g, "download", "src", src, bytes);
    host_only(g, "download", "host_dst", host_dst, bytes);
    if (!g->failed)
        cpu()->download(NULL, host_dst, src, bytes);
}
static size_t strided(size_t stride, size_t rows, size_t cols) { return rows ? (rows - 1) * stride + cols : 0; }
static void g_copy_rows(void *ctx, float *dst, size_t ds, const float *src, size_t ss, size_t rows, size_t cols) {
    guard *g = ctx;
    if (ds < cols && rows > 1)
        fail_once(g, __func__, "dst_stride", dst, ds, "makes rows overlap");
    NEED_F(dst, strided(ds, rows, cols));
    NEED_F(src, strided(ss, rows, cols));
    if (!g->failed)
        cpu()->copy_rows(NULL, dst, ds, src, ss, rows, cols);
}
static void g_add_rows(void *ctx, float *dst, size_t ds, const float *src, size_t ss, size_t rows, size_t cols) {
    guard *g = ctx;
    NEED_F(dst, strided(ds, rows, cols));
    NEED_F(src, strided(ss, rows, cols));
    if (!g->failed)
        cpu()->add_rows(NULL, dst, ds, src, ss, rows, cols);
}
/* The index arrays are device memory; every row they name must lie in its allocation. */
static void g_gather_rows(void *ctx, float *dst, const int32_t *dst_rows, const float *src, const int32_t *src_rows,
                          size_t rows, size_t cols) {
    guard *g = ctx;
    if (dst_rows)
        NEED_I(dst_rows, rows);
    if (src_rows)
        NEED_I(src_rows, rows);
    for (size_t r = 0; r < rows && !g->failed; r++) {
        const float *d = dst + (dst_rows ? (size_t)dst_rows[r] : r) * cols;
        const float *s = src + (src_rows ? (size_t)src_rows[r] : r) * cols;
        if ((dst_rows && dst_rows[r] < 0) || (src_rows && src_rows[r] < 0))
            fail_once(g, __func__, "rows", dst, r, "holds a negative row index");
        NEED_F(d, cols);
        NEED_F(s, cols);
        for (size_t q = 0; q < r && dst_rows && !g->failed; q++)
            if (dst_rows[q] == dst_rows[r])
                fail_once(g, __func__, "dst_rows", dst_rows, r, "names one destination row twice");
    }
    if (!g->failed)
        cpu()->gather_rows(NULL, dst, dst_rows, src, src_rows, rows, cols);
}
static void g_scale(void *ctx, float *x, float factor, size_t n) {
    guard *g = ctx;
    NEED_F(x, n);
    if (!g->failed)
        cpu()->scale(NULL, x, factor, n);
}
static double g_sum_squares(void *ctx, const float *x, size_t n) {
    guard *g = ctx;
    NEED_F(x, n);
    return g->failed ? 0.0 : cpu()->sum_squares(NULL, x, n);
}
static void g_sum_to(void *ctx, double *dst, const float *x, size_t n) {
    guard *g = ctx;
    need(g, __func__, "dst", dst, sizeof(double));
    NEED_F(x, n);
    if (!g->failed)
        cpu()->sum_to(NULL, dst, x, n);
}

/* ---------------------------------------------------------------- ops */
static int max_id(const int32_t *ids, int N) {
    int m = -1;
    for (int n = 0; n < N; n++)
        m = ids[n] > m ? ids[n] : m;
    return m;
}
static void g_embedding_forward(void *ctx, float *out, const int32_t *ids, const float *table, int N, int C) {
    guard *g = ctx;
    NEED_I(ids, N);
    NEED_F(out, (size_t)N * C);
    if (!g->failed)
        NEED_F(table, (size_t)(max_id(ids, N) + 1) * C);
    if (!g->failed)
        cpu()->embedding_forward(NULL, out, ids, table, N, C);
}
static void g_embedding_backward(void *ctx, float *dtable, const float *dout, const int32_t *ids, int N, int C) {
    guard *g = ctx;
    NEED_I(ids, N);
    NEED_F(dout, (size_t)N * C);
    if (!g->failed)
        NEED_F(dtable, (size_t)(max_id(ids, N) + 1) * C);
    if (!g->failed)
        cpu()->embedding_backward(NULL, dtable, dout, ids, N, C);
}
static void g_layernorm_forward(void *ctx, float *out, float *mean, float *rstd, const float *inp,
                                const float *weight, const float *bias, int N, int C) {
    guard *g = ctx;
    NEED_F(out, (size_t)N * C), NEED_F(mean, N), NEED_F(rstd, N), NEED_F(inp, (size_t)N * C);
    NEED_F(weight, C), NEED_F(bias, C);
    if (!g->failed)
        cpu()->layernorm_forward(NULL, out, mean, rstd, inp, weight, bias, N, C);
}
static void g_layernorm_backward(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
                                 const float *inp, const float *weight, const float *mean, const float *rstd, int N,
                                 int C) {
    guard *g = ctx;
    NEED_F(dinp, (size_t)N * C), NEED_F(dweight, C), NEED_F(dbias, C), NEED_F(dout, (size_t)N * C);
    NEED_F(inp, (size_t)N * C), NEED_F(weight, C), NEED_F(mean, N), NEED_F(rstd, N);
    if (!g->failed)
        cpu()->layernorm_backward(NULL, dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}
static void g_linear_forward(void *ctx, float *out, const float *inp, const float *weight, const float *bias, int N,
                             int IC, int OC) {
    guard *g = ctx;
    NEED_F(out, (size_t)N * OC), NEED_F(inp, (size_t)N * IC), NEED_F(weight, (size_t)IC * OC);
    MAYBE_F(bias, OC);
    if (!g->failed)
        cpu()->linear_forward(NULL, out, inp, weight, bias, N, IC, OC);
}
static void g_linear_backward(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, int N, int IC, int OC) {
    guard *g = ctx;
    MAYBE_F(dinp, (size_t)N * IC);
    NEED_F(dweight, (size_t)IC * OC);
    MAYBE_F(dbias, OC);
    NEED_F(dout, (size_t)N * OC), NEED_F(inp, (size_t)N * IC), NEED_F(weight, (size_t)IC * OC);
    if (!g->failed)
        cpu()->linear_backward(NULL, dinp, dweight, dbias, dout, inp, weight, N, IC, OC);
}
static void g_lm_head_forward(void *ctx, float *logits, const float *inp, const float *wte, int N, int C, int V) {
    guard *g = ctx;
    NEED_F(logits, (size_t)N * V), NEED_F(inp, (size_t)N * C), NEED_F(wte, (size_t)V * C);
    if (!g->failed)
        cpu()->lm_head_forward(NULL, logits, inp, wte, N, C, V);
}
static void g_lm_head_backward(void *ctx, float *dinp, float *dwte, const float *dlogits, const float *inp,
                               const float *wte, int N, int C, int V) {
    guard *g = ctx;
    NEED_F(dinp, (size_t)N * C), NEED_F(dwte, (size_t)V * C), NEED_F(dlogits, (size_t)N * V);
    NEED_F(inp, (size_t)N * C), NEED_F(wte, (size_t)V * C);
    if (!g->failed)
        cpu()->lm_head_backward(NULL, dinp, dwte, dlogits, inp, wte, N, C, V);
}
static void check_valid(guard *g, const char *op, const int32_t *valid, int B, int S) {
    need(g, op, "valid", valid, (size_t)B * sizeof(int32_t));
    for (int b = 0; !g->failed && b < B; b++)
        if (valid[b] < 1 || valid[b] > S)
            fail_once(g, op, "valid", valid, (size_t)B, "holds a length outside 1..S");
}
static void g_attention_forward(void *ctx, float *out, float *att, const float *qkv, const int32_t *valid, int B,
                                int S, int C, int H, int causal) {
    guard *g = ctx;
    size_t BS = (size_t)B * S;
    NEED_F(out, BS * C), NEED_F(att, BS * H * S), NEED_F(qkv, BS * 3 * C);
    check_valid(g, __func__, valid, B, S);
    if (!g->failed)
        cpu()->attention_forward(NULL, out, att, qkv, valid, B, S, C, H, causal);
}
static void g_attention_backward(void *ctx, float *dqkv, const float *dout, const float *qkv, const float *att,
                                 const int32_t *valid, int B, int S, int C, int H, int causal) {
    guard *g = ctx;
    size_t BS = (size_t)B * S;
    NEED_F(dqkv, BS * 3 * C), NEED_F(dout, BS * C), NEED_F(qkv, BS * 3 * C), NEED_F(att, BS * H * S);
    check_valid(g, __func__, valid, B, S);
    if (!g->failed)
        cpu()->attention_backward(NULL, dqkv, dout, qkv, att, valid, B, S, C, H, causal);
}
static void g_attention_rows_forward(void *ctx, float *out, float *att, const float *qkv, const int32_t *valid,
                                     int B, int S, int C, int H, int q0, int m) {
    guard *g = ctx;
    if (q0 < 0 || m < 1 || q0 + m > S)
        fail_once(g, __func__, "q0", NULL, 0, "rows q0 .. q0+m-1 outside 0..S-1");
    NEED_F(out, (size_t)B * m * C), NEED_F(att, (size_t)B * H * m * S), NEED_F(qkv, (size_t)B * S * 3 * C);
    check_valid(g, __func__, valid, B, S);
    if (!g->failed)
        cpu()->attention_rows_forward(NULL, out, att, qkv, valid, B, S, C, H, q0, m);
}
static void g_gelu_forward(void *ctx, float *out, const float *inp, size_t N) {
    guard *g = ctx;
    NEED_F(out, N), NEED_F(inp, N);
    if (!g->failed)
        cpu()->gelu_forward(NULL, out, inp, N);
}
static void g_gelu_backward(void *ctx, float *dinp, const float *dout, const float *inp, size_t N) {
    guard *g = ctx;
    NEED_F(dinp, N), NEED_F(dout, N), NEED_F(inp, N);
    if (!g->failed)
        cpu()->gelu_backward(NULL, dinp, dout, inp, N);
}
static void g_gated_update_forward(void *ctx, float *r_out, float *z, const float *r_prev, const float *u,
                                   const float *gate_w, const float *gate_b, int M, int C) {
    guard *g = ctx;
    size_t MC = (size_t)M * C;
    NEED_F(r_out, MC), NEED_F(z, MC), NEED_F(r_prev, MC), NEED_F(u, MC), NEED_F(gate_w, 2 * (size_t)C * C);
    NEED_F(gate_b, C);
    if (!g->failed)
        cpu()->gated_update_forward(NULL, r_out, z, r_prev, u, gate_w, gate_b, M, C);
}
static void g_gated_update_backward(void *ctx, float *dr_prev, float *du, float *dgate_w, float *dgate_b,
                                    const float *dr_out, const float *r_prev, const float *u, const float *z,
                                    const float *gate_w, float *scratch, int M, int C) {
    guard *g = ctx;
    size_t MC = (size_t)M * C;
    NEED_F(dr_prev, MC), NEED_F(du, MC), NEED_F(dgate_w, 2 * (size_t)C * C), NEED_F(dgate_b, C);
    NEED_F(dr_out, MC), NEED_F(r_prev, MC), NEED_F(u, MC), NEED_F(z, MC), NEED_F(gate_w, 2 * (size_t)C * C);
    NEED_F(scratch, MC);
    if (!g->failed)
        cpu()->gated_update_backward(NULL, dr_prev, du, dgate_w, dgate_b, dr_out, r_prev, u, z, gate_w, scratch, M, C);
}
static void g_slot_write_forward(void *ctx, float *r_out, float *aux, const float *r_prev, const float *u,
                                 const float *write_w, const float *write_b, const float *write_diag, int B, int k,
                                 int C, int n_addr) {
    guard *g = ctx;
    size_t MC = (size_t)B * k * C, P = (size_t)n_addr + 1;
    NEED_F(r_out, MC), NEED_F(aux, mn_slot_write_aux_floats(B, k, C, n_addr)), NEED_F(r_prev, MC), NEED_F(u, MC);
    NEED_F(write_w, (size_t)C * P), NEED_F(write_b, P);
    if (n_addr)
        NEED_F(write_diag, (size_t)n_addr);
    if (n_addr != 0 && n_addr != k)
        fail_once(g, __func__, "n_addr", NULL, 0, "neither 0 nor k");
    if (!g->failed)
        cpu()->slot_write_forward(NULL, r_out, aux, r_prev, u, write_w, write_b, write_diag, B, k, C, n_addr);
}
static void g_slot_write_backward(void *ctx, float *dr_prev, float *du, float *dwrite_w, float *dwrite_b,
                                  float *dwrite_diag, const float *dr_out, const float *r_prev, const float *u,
                                  const float *aux, const float *write_w, float *scratch, int B, int k, int C,
                                  int n_addr) {
    guard *g = ctx;
    size_t MC = (size_t)B * k * C, P = (size_t)n_addr + 1, X = mn_slot_write_aux_floats(B, k, C, n_addr);
    NEED_F(dr_prev, MC), NEED_F(du, MC), NEED_F(dwrite_w, (size_t)C * P), NEED_F(dwrite_b, P);
    if (n_addr)
        NEED_F(dwrite_diag, (size_t)n_addr);
    NEED_F(dr_out, MC), NEED_F(r_prev, MC), NEED_F(u, MC), NEED_F(aux, X), NEED_F(write_w, (size_t)C * P);
    NEED_F(scratch, X);
    if (!g->failed)
        cpu()->slot_write_backward(NULL, dr_prev, du, dwrite_w, dwrite_b, dwrite_diag, dr_out, r_prev, u, aux,
                                   write_w, scratch, B, k, C, n_addr);
}
static void g_crossentropy_forward(void *ctx, float *losses, const float *logits, const int32_t *targets,
                                   const float *weights, int N, int V) {
    guard *g = ctx;
    NEED_F(losses, N), NEED_F(logits, (size_t)N * V), NEED_I(targets, N), NEED_F(weights, N);
    if (!g->failed)
        cpu()->crossentropy_forward(NULL, losses, logits, targets, weights, N, V);
}
static void g_crossentropy_fused(void *ctx, float *losses, float *logits, const int32_t *targets,
                                 const float *weights, float scale, int N, int V) {
    guard *g = ctx;
    NEED_F(losses, N), NEED_F(logits, (size_t)N * V), NEED_I(targets, N), NEED_F(weights, N);
    if (!g->failed)
        cpu()->crossentropy_fused(NULL, losses, logits, targets, weights, scale, N, V);
}
static void g_residual_forward(void *ctx, float *out, const float *a, const float *b, size_t N) {
    guard *g = ctx;
    NEED_F(out, N), NEED_F(a, N), NEED_F(b, N);
    if (!g->failed)
        cpu()->residual_forward(NULL, out, a, b, N);
}
static void g_residual_backward(void *ctx, float *da, float *db, const float *dout, size_t N) {
    guard *g = ctx;
    NEED_F(da, N), NEED_F(dout, N);
    MAYBE_F(db, N);
    if (!g->failed)
        cpu()->residual_backward(NULL, da, db, dout, N);
}
static void g_adamw_update(void *ctx, float *params, const float *grads, float *m, float *v,
                           const mn_adamw_segment *segs, int n_segs, float lr, float beta1, float beta2, float eps,
                           uint64_t t) {
    guard *g = ctx;
    host_only(g, __func__, "segs", segs, (size_t)n_segs * sizeof *segs);
    for (int i = 0; i < n_segs && !g->failed; i++) {
        size_t end = segs[i].offset + segs[i].size;
        NEED_F(params, end), NEED_F(grads, end), NEED_F(m, end), NEED_F(v, end);
    }
    if (!g->failed)
        cpu()->adamw_update(NULL, params, grads, m, v, segs, n_segs, lr, beta1, beta2, eps, t);
}

static const mn_backend guarded = {
    .device = MN_DEVICE_CUDA, /* drive the model's device code path */
    .name = "guarded host backend (tests)",
    .classifier_floats = MN_CPU_CLASSIFIER_FLOATS, /* the CPU's chunks: results bitwise the CPU's */
    .synchronize = g_status,
    .upload = g_upload,
    .download = g_download,
    MN_BACKEND_ENTRIES(g_),
};

const mn_backend *mn_guarded_backend(void) { return &guarded; }

static void wrong_linear_forward(void *ctx, float *out, const float *inp, const float *weight, const float *bias,
                                 int N, int IC, int OC) {
    g_linear_forward(ctx, out, inp, weight, bias, N, IC, OC);
    guard *g = ctx;
    for (size_t i = 0; !g->failed && i < (size_t)N * OC; i++) /* the stand-in's memory is the host's */
        out[i] *= 2.0f;
}

const mn_backend *mn_guarded_backend_wrong(void) {
    static mn_backend wrong; /* the same table each call */
    wrong = guarded;
    wrong.name = "guarded host backend with a wrong linear layer (tests)";
    wrong.linear_forward = wrong_linear_forward;
    return &wrong;
}
