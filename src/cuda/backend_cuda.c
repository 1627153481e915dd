/* The CUDA backend table: the functions of the .cu files (ops_cuda.h) in the layout of
 * model/backend.h. Compiled only when the build has CUDA. */
#include "cuda/ops_cuda.h"

/* The CPU thread setting of a handle means nothing to the GPU's kernels. */
static mn_status cuda_set_threads(void *ctx, int threads) {
    (void)ctx;
    (void)threads;
    return MN_OK;
}

static const mn_backend cuda_backend = {
    .device = MN_DEVICE_CUDA,
    .name = "GPU (CUDA)",
    .context_create = mn_cu_context_create,
    .context_free = mn_cu_context_free,
    .status = mn_cu_status,
    .synchronize = mn_cu_synchronize,
    .set_matmul = mn_cu_set_matmul,
    .set_threads = cuda_set_threads,
    .alloc = mn_cu_alloc,
    .release = mn_cu_release,
    .zero = mn_cu_zero,
    .copy = mn_cu_copy,
    .upload = mn_cu_upload,
    .download = mn_cu_download,
    .copy_rows = mn_cu_copy_rows,
    .add_rows = mn_cu_add_rows,
    .scale = mn_cu_scale,
    .sum_squares = mn_cu_sum_squares,
    .sum_to = mn_cu_sum_to,
    .embedding_forward = mn_cu_embedding_forward,
    .embedding_backward = mn_cu_embedding_backward,
    .layernorm_forward = mn_cu_layernorm_forward,
    .layernorm_backward = mn_cu_layernorm_backward,
    .linear_forward = mn_cu_linear_forward,
    .linear_backward = mn_cu_linear_backward,
    .lm_head_forward = mn_cu_lm_head_forward,
    .lm_head_backward = mn_cu_lm_head_backward,
    .attention_forward = mn_cu_attention_forward,
    .attention_backward = mn_cu_attention_backward,
    .gelu_forward = mn_cu_gelu_forward,
    .gelu_backward = mn_cu_gelu_backward,
    .gated_update_forward = mn_cu_gated_update_forward,
    .gated_update_backward = mn_cu_gated_update_backward,
    .crossentropy_forward = mn_cu_crossentropy_forward,
    .crossentropy_backward = mn_cu_crossentropy_backward,
    .residual_forward = mn_cu_residual_forward,
    .residual_backward = mn_cu_residual_backward,
    .adamw_update = mn_cu_adamw_update,
};

const mn_backend *mn_backend_cuda(void) { return &cuda_backend; }
