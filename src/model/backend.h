/* The backend table: every op of src/cpu/ops.h plus memory management and data movement, so
 * that one copy of the model logic (stack.c, forward_backward.c, inference.c, adamw.c) drives
 * both the CPU and the CUDA backend.
 *
 * Pointers handed to the table live in the backend's memory (host memory for the CPU, device
 * memory for CUDA), except where an argument says "host". Ops return nothing: a CUDA backend
 * records its first failure (the call, file:line and CUDA's message) in its context and turns
 * every later op into a no-op; the model asks `status` at each public API boundary and returns
 * it as MN_ERR_DEVICE. The CPU backend never fails after allocation.
 *
 * Op semantics are those of src/cpu/ops.h (backward ops ACCUMULATE; crossentropy_fused
 * overwrites the logits with their gradient), with two extensions:
 * - embedding_forward / embedding_backward skip rows whose id is negative (the memory slots
 *   and padding of a turn), so one call covers a whole (B, S) batch;
 * - adamw_update runs over a list of segments of the flat buffers (one per unfrozen tensor).
 * The CPU table calls the functions of ops.h, so the CPU results are those of the reference. */
#ifndef MN_BACKEND_H
#define MN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One AdamW run over params[offset .. offset + size) (and the same range of grads, m, v). */
typedef struct {
    size_t offset, size;  /* in floats */
    float weight_decay;   /* 0 for tensors that do not decay */
} mn_adamw_segment;

/* Logits the CPU's classifier holds at once: 16 MiB, a whole turn of the demo (8 x 128 rows of
 * V 4096), a bound for larger batches and vocabularies. Thinner chunks cost CPU time on the
 * development machines, as each adds its product into the whole (V, C) gradient of wte (256
 * rows: +4%, 64 rows: +20% over one chunk of 1024), and each chunk is one more wait for the
 * thread team, which costs wall time on a loaded machine (docs/perf.md). */
#define MN_CPU_CLASSIFIER_FLOATS ((size_t)1 << 22)

typedef struct mn_backend {
    mn_device device;
    const char *name;
    /* Logits (rows x V) the training classifier computes at once; 0 = a whole turn's rows. The
     * chunk has at least C rows, so that a large vocabulary does not make it thin. */
    size_t classifier_floats;

    /* ------------------------------------------------------------ context */
    mn_status (*context_create)(void **ctx);     /* CPU: *ctx = NULL */
    void (*context_free)(void *ctx);
    /* MN_OK, or the first recorded failure as MN_ERR_DEVICE with its message. */
    mn_status (*status)(void *ctx);
    /* Waits for all queued work, then returns status. */
    mn_status (*synchronize)(void *ctx);
    /* Precision of the matrix products (the CPU backend accepts only MN_MATMUL_FP32). */
    mn_status (*set_matmul)(void *ctx, mn_matmul precision);
    /* CPU threads the ops may use (OpenMP team size); 0 = OpenMP's default at each op. The
     * CPU backend's ops read it from ctx (a NULL ctx means 0); CUDA ignores it. */
    mn_status (*set_threads)(void *ctx, int threads);

    /* ------------------------------------------------------------ memory */
    /* Zero-filled allocation of `bytes` (at least 1). */
    mn_status (*alloc)(void *ctx, size_t bytes, void **out);
    void (*release)(void *ctx, void *p);        /* NULL is allowed */
    void (*zero)(void *ctx, void *p, size_t bytes);
    void (*copy)(void *ctx, void *dst, const void *src, size_t bytes);        /* no overlap */
    void (*upload)(void *ctx, void *dst, const void *host_src, size_t bytes); /* host_src reusable on return */
    void (*download)(void *ctx, void *host_dst, const void *src, size_t bytes); /* host_dst ready on return */
    /* dst[r * dst_stride + c] = src[r * src_stride + c] for r < rows, c < cols (floats).
     * src_stride 0 broadcasts one row; rows must not overlap. */
    void (*copy_rows)(void *ctx, float *dst, size_t dst_stride, const float *src, size_t src_stride,
                      size_t rows, size_t cols);
    /* dst[r * dst_stride + c] += src[r * src_stride + c], r ascending for each element: with
     * dst_stride 0 it sums the rows of src into one row (deterministically), with src_stride 0
     * it adds one row to every row of dst. */
    void (*add_rows)(void *ctx, float *dst, size_t dst_stride, const float *src, size_t src_stride,
                     size_t rows, size_t cols);
    /* dst[dst_rows[r] * cols + c] = src[src_rows[r] * cols + c] for r < rows, c < cols: a gather
     * or scatter of whole rows by index (a NULL index array means r itself). The index arrays
     * live in backend memory; the destination rows must be distinct. */
    void (*gather_rows)(void *ctx, float *dst, const int32_t *dst_rows, const float *src, const int32_t *src_rows,
                        size_t rows, size_t cols);
    void (*scale)(void *ctx, float *x, float factor, size_t n);              /* x *= factor */
    /* Sum of squares of x (n) in double, deterministic; returns to the host (waits). */
    double (*sum_squares)(void *ctx, const float *x, size_t n);
    /* *dst (a double in backend memory) = sum of x (n) in double, deterministic; no wait. */
    void (*sum_to)(void *ctx, double *dst, const float *x, size_t n);

    /* ------------------------------------------------------------ ops (src/cpu/ops.h) */
    void (*embedding_forward)(void *ctx, float *out, const int32_t *ids, const float *table, int N, int C);
    void (*embedding_backward)(void *ctx, float *dtable, const float *dout, const int32_t *ids, int N, int C);
    void (*layernorm_forward)(void *ctx, float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int N, int C);
    void (*layernorm_backward)(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean, const float *rstd,
                               int N, int C);
    void (*linear_forward)(void *ctx, float *out, const float *inp, const float *weight, const float *bias,
                           int N, int IC, int OC);
    void (*linear_backward)(void *ctx, float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IC, int OC);
    void (*lm_head_forward)(void *ctx, float *logits, const float *inp, const float *wte, int N, int C, int V);
    void (*lm_head_backward)(void *ctx, float *dinp, float *dwte, const float *dlogits, const float *inp,
                             const float *wte, int N, int C, int V);
    void (*attention_forward)(void *ctx, float *out, float *att, const float *qkv, const int32_t *valid,
                              int B, int S, int C, int H, int causal);
    void (*attention_backward)(void *ctx, float *dqkv, const float *dout, const float *qkv, const float *att,
                               const int32_t *valid, int B, int S, int C, int H, int causal);
    /* causal query rows q0 .. q0+m-1 only (inference on cached keys): out (B, m, C), att (B, H, m, S) */
    void (*attention_rows_forward)(void *ctx, float *out, float *att, const float *qkv, const int32_t *valid, int B,
                                   int S, int C, int H, int q0, int m);
    void (*gelu_forward)(void *ctx, float *out, const float *inp, size_t N);
    void (*gelu_backward)(void *ctx, float *dinp, const float *dout, const float *inp, size_t N);
    void (*gated_update_forward)(void *ctx, float *r_out, float *z, const float *r_prev, const float *u,
                                 const float *gate_w, const float *gate_b, int M, int C);
    void (*gated_update_backward)(void *ctx, float *dr_prev, float *du, float *dgate_w, float *dgate_b,
                                  const float *dr_out, const float *r_prev, const float *u, const float *z,
                                  const float *gate_w, float *scratch, int M, int C);
    /* slot write rules (src/cpu/ops.h): n_addr = k (delta rule) or 0 (per-slot gate) */
    void (*slot_write_forward)(void *ctx, float *r_out, float *aux, const float *r_prev, const float *u,
                               const float *write_w, const float *write_b, const float *write_diag, int B, int k,
                               int C, int n_addr);
    void (*slot_write_backward)(void *ctx, float *dr_prev, float *du, float *dwrite_w, float *dwrite_b,
                                float *dwrite_diag, const float *dr_out, const float *r_prev, const float *u,
                                const float *aux, const float *write_w, float *scratch, int B, int k, int C,
                                int n_addr);
    void (*crossentropy_forward)(void *ctx, float *losses, const float *logits, const int32_t *targets,
                                 const float *weights, int N, int V);
    void (*crossentropy_fused)(void *ctx, float *losses, float *logits, const int32_t *targets,
                               const float *weights, float scale, int N, int V);
    void (*residual_forward)(void *ctx, float *out, const float *a, const float *b, size_t N);
    void (*residual_backward)(void *ctx, float *da, float *db, const float *dout, size_t N);
    /* segs: host array of n_segs segments; step t >= 1 */
    void (*adamw_update)(void *ctx, float *params, const float *grads, float *m, float *v,
                         const mn_adamw_segment *segs, int n_segs, float lr, float beta1, float beta2,
                         float eps, uint64_t t);

    /* What only a device offers (NULL for the CPU and the tests' stand-in): used by the session
     * pool (session_pool.c) for its pinned, double-buffered transfers and its CUDA graphs. */
    const struct mn_backend_async *async;
} mn_backend;

/* Asynchronous transfers and graphs. Uploads and downloads between backend memory and host
 * memory from host_alloc return at once: the host buffer must stay untouched until a fence
 * recorded after the copy has passed. */
typedef struct mn_backend_async {
    mn_status (*host_alloc)(void *ctx, size_t bytes, void **out); /* page-locked host memory */
    void (*host_release)(void *ctx, void *p);                     /* waits for queued work first */
    void (*download_async)(void *ctx, void *host_dst, const void *src, size_t bytes);
    /* Fence i (0 or 1) marks everything queued so far; fence_wait blocks until it has run. */
    void (*fence_record)(void *ctx, int i);
    void (*fence_wait)(void *ctx, int i);
    /* Everything queued between capture_begin and capture_end is recorded into a graph instead
     * of running (nothing in between may wait for the device or allocate); graph_launch replays
     * it and returns 0, or 1 without launching when the graph is stale (the context's scratch
     * moved or its product precision changed since the capture: release it and capture again). */
    void (*capture_begin)(void *ctx);
    mn_status (*capture_end)(void *ctx, void **graph);
    int (*graph_launch)(void *ctx, void *graph);
    void (*graph_release)(void *ctx, void *graph);
} mn_backend_async;

/* The entries of a backend table whose functions are named <p><entry> (cpu_alloc, mn_cu_alloc):
 * all but device, name, synchronize, upload, download and async, which each table sets itself. One
 * list for every table, so a backend that lacks a function does not compile. */
#define MN_BACKEND_ENTRIES(p)                                                                                \
    .context_create = p##context_create, .context_free = p##context_free, .status = p##status,               \
    .set_matmul = p##set_matmul, .set_threads = p##set_threads, .alloc = p##alloc, .release = p##release,    \
    .zero = p##zero, .copy = p##copy, .copy_rows = p##copy_rows, .add_rows = p##add_rows,                    \
    .gather_rows = p##gather_rows, .scale = p##scale,                                                        \
    .sum_squares = p##sum_squares, .sum_to = p##sum_to, .embedding_forward = p##embedding_forward,           \
    .embedding_backward = p##embedding_backward, .layernorm_forward = p##layernorm_forward,                  \
    .layernorm_backward = p##layernorm_backward, .linear_forward = p##linear_forward,                        \
    .linear_backward = p##linear_backward, .lm_head_forward = p##lm_head_forward,                            \
    .lm_head_backward = p##lm_head_backward, .attention_forward = p##attention_forward,                      \
    .attention_backward = p##attention_backward, .attention_rows_forward = p##attention_rows_forward,         \
    .gelu_forward = p##gelu_forward,                                                                         \
    .gelu_backward = p##gelu_backward, .gated_update_forward = p##gated_update_forward,                      \
    .gated_update_backward = p##gated_update_backward, .slot_write_forward = p##slot_write_forward,          \
    .slot_write_backward = p##slot_write_backward, .crossentropy_forward = p##crossentropy_forward,          \
    .crossentropy_fused = p##crossentropy_fused, .residual_forward = p##residual_forward,                    \
    .residual_backward = p##residual_backward, .adamw_update = p##adamw_update

/* Floats of a slot write's aux and scratch (both backends' layout: [Adr | beta] rows, then E). */
static inline size_t mn_slot_write_aux_floats(int B, int k, int C, int n_addr) {
    return (size_t)B * (size_t)k * (size_t)(n_addr + 1 + C);
}

/* A backend and its context: what the model holds and calls through. */
typedef struct {
    const mn_backend *be;
    void *ctx;
} mn_exec;

/* Calls op `name` of exec `ex` with its context: MN_OP(ex, gelu_forward, out, inp, n). */
#define MN_OP(ex, name, ...) ((ex)->be->name((ex)->ctx, __VA_ARGS__))

const mn_backend *mn_backend_cpu(void);
/* The CUDA table, from the CUDA module (below; loaded at the first call); NULL in a build
 * without CUDA or when the module does not load (mn_cuda_module_get says why). */
const mn_backend *mn_backend_cuda(void);

/* The CUDA module. The CUDA backend (and NCCL) is built as a module of its own,
 * libmnemo-cuda.so, which the library loads at the first CUDA call (src/cuda/device.c), so a
 * program that stays on the CPU never maps cudart, cuBLAS or NCCL (about 150 MiB of resident
 * pages and 0.1 s at start). The module fills this struct; `abi` and `build_id` must equal the
 * library's, so a module of another build is refused rather than called. */
#define MN_CUDA_MODULE_ABI 1
#define MN_CUDA_MODULE_ENTRY "mn_cuda_module_entry"
/* What the library lends the module: its error reporting, so that messages the module
 * formats land in the caller's mn_last_error(). */
typedef struct {
    mn_status (*fail)(mn_status status, const char *fmt, ...);
} mn_cuda_host;
typedef struct {
    int abi;                  /* MN_CUDA_MODULE_ABI of the module's build */
    size_t backend_size;      /* sizeof(mn_backend) there */
    const char *build_id;     /* `git describe` of the module's build (src/io/build_id.h) */
    const mn_backend *backend;
    /* the devices; 0 or cudaError_t with its text in message */
    int (*device_count)(int *count, char *message, size_t message_cap);
    int (*device_info)(int index, mn_device_info *info, char *message, size_t message_cap);
    /* NCCL (src/train/dist_nccl.c); all NULL when the module was built without it. The unique
     * id is nccl_id_bytes opaque bytes that rank 0 makes and every rank passes to nccl_open. */
    size_t nccl_id_bytes;
    mn_status (*nccl_unique_id)(void *id);
    mn_status (*nccl_open)(const void *id, int world, int rank, int device, void **comm);
    mn_status (*nccl_allreduce)(void *comm, float *buf, size_t count, float scale, void *stream);
    void (*nccl_close)(void *comm);
} mn_cuda_module;
/* The module's one exported function (named MN_CUDA_MODULE_ENTRY). */
typedef const mn_cuda_module *(*mn_cuda_module_entry_fn)(const mn_cuda_host *host);
/* Loads the module once per process and returns it; MN_ERR_DEVICE with the reason (a build
 * without CUDA, the file not found where it was looked for, dlopen's error, another build's
 * module) otherwise. MNEMO_CUDA_MODULE, when set, names the file to load. */
mn_status mn_cuda_module_get(const mn_cuda_module **out);

/* The table for `device`; MN_ERR_DEVICE for CUDA in a build without it. */
mn_status mn_backend_for(mn_device device, const mn_backend **out);
/* Opens a context of backend `be`: CUDA fails with MN_ERR_DEVICE (and CUDA's message) when
 * no device answers. mn_exec_open is mn_backend_for then mn_exec_open_backend. */
mn_status mn_exec_open_backend(const mn_backend *be, mn_exec *out);
mn_status mn_exec_open(mn_device device, mn_exec *out);
void mn_exec_close(mn_exec *ex);
mn_status mn_exec_status(const mn_exec *ex);
/* The thread setting of the public API (mn_model_set_threads, mn_trainer_set_threads):
 * MN_ERR_INVALID_ARG for threads < 0, else the backend's set_threads. */
mn_status mn_exec_set_threads(const mn_exec *ex, int threads);
/* Allocates n floats (or ints) in the backend's memory, zero-filled. */
mn_status mn_exec_alloc(const mn_exec *ex, size_t bytes, void **out);
void mn_exec_release(const mn_exec *ex, void *p);

#ifdef __cplusplus
}
#endif
#endif
