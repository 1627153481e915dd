/* The CUDA backend table: the functions of the .cu files (ops_cuda.h) in the layout of
 * model/backend.h. Compiled only when the build has CUDA. */
#include "cuda/ops_cuda.h"

/* The CPU thread setting of a handle means nothing to the GPU's kernels. */
static mn_status mn_cu_set_threads(void *ctx, int threads) {
    (void)ctx;
    (void)threads;
    return MN_OK;
}

static const mn_backend_async cuda_async = {
    .host_alloc = mn_cu_host_alloc,
    .host_release = mn_cu_host_release,
    .download_async = mn_cu_download_async,
    .fence_record = mn_cu_fence_record,
    .fence_wait = mn_cu_fence_wait,
    .capture_begin = mn_cu_capture_begin,
    .capture_end = mn_cu_capture_end,
    .graph_launch = mn_cu_graph_launch,
    .graph_release = mn_cu_graph_release,
};

static const mn_backend cuda_backend = {
    .device = MN_DEVICE_CUDA,
    .name = "GPU (CUDA)",
    .classifier_floats = 0, /* a whole turn's logits: few large kernels */
    .synchronize = mn_cu_synchronize,
    .upload = mn_cu_upload,
    .download = mn_cu_download,
    .async = &cuda_async,
    MN_BACKEND_ENTRIES(mn_cu_),
};

const mn_backend *mn_backend_cuda(void) { return &cuda_backend; }
