/* The CUDA backend table: the functions of the .cu files (ops_cuda.h) in the layout of
 * model/backend.h. Compiled only when the build has CUDA. */
#include "cuda/ops_cuda.h"

/* The CPU thread setting of a handle means nothing to the GPU's kernels. */
static mn_status mn_cu_set_threads(void *ctx, int threads) {
    (void)ctx;
    (void)threads;
    return MN_OK;
}

static const mn_backend cuda_backend = {
    .device = MN_DEVICE_CUDA,
    .name = "GPU (CUDA)",
    .classifier_floats = 0, /* a whole turn's logits: few large kernels */
    .synchronize = mn_cu_synchronize,
    .upload = mn_cu_upload,
    .download = mn_cu_download,
    MN_BACKEND_ENTRIES(mn_cu_),
};

const mn_backend *mn_backend_cuda(void) { return &cuda_backend; }
