/* The CUDA module's C side: the backend table (the functions of the .cu files, ops_cuda.h, in
 * the layout of model/backend.h) and the module's entry point, which the library's loader
 * (device.c) calls after dlopen. Compiled into libmnemo-cuda.so only. */
#include <stdarg.h>
#include <stdio.h>

#include "core/error.h"
#include "cuda/device_cuda.h"
#include "cuda/ops_cuda.h"
#include "build_id.h" /* generated from src/io/build_id.h.in */

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

/* The library's error reporting, lent at entry. The module is loaded once per process, so this
 * is set once, before any other function of the module runs. */
static const mn_cuda_host *module_host;

/* The module's mn_fail (core/error.h): the message goes to the library's mn_last_error().
 * The module is linked -Bsymbolic, so its calls bind here, not to a library's copy. */
mn_status mn_fail(mn_status status, const char *fmt, ...) {
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return module_host ? module_host->fail(status, "%s", text) : status;
}

static const mn_cuda_module cuda_module = {
    .abi = MN_CUDA_MODULE_ABI,
    .backend_size = sizeof(mn_backend),
    .build_id = MN_BUILD_ID,
    .backend = &cuda_backend,
    .device_count = mn_cuda_query_device_count,
    .device_info = mn_cuda_query_device_info,
#ifdef MN_HAVE_NCCL
    .nccl_id_bytes = MN_NCCL_ID_BYTES,
    .nccl_unique_id = mn_cu_nccl_unique_id,
    .nccl_open = mn_cu_nccl_open,
    .nccl_allreduce = mn_cu_nccl_allreduce,
    .nccl_close = mn_cu_nccl_close,
#endif
};

__attribute__((visibility("default"))) const mn_cuda_module *mn_cuda_module_entry(const mn_cuda_host *host) {
    module_host = host;
    return &cuda_module;
}
