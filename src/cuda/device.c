/* Run-time backend choice. Builds without CUDA answer "no CUDA in this build". */
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#ifdef MN_HAVE_CUDA
#include "cuda/device_cuda.h"
#endif

mn_status mn_cuda_device_count(int *count) {
    if (!count)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_cuda_device_count: count is NULL");
    *count = 0;
#ifdef MN_HAVE_CUDA
    char message[256];
    if (mn_cuda_query_device_count(count, message, sizeof message) != 0)
        return mn_fail(MN_ERR_DEVICE, "%s", message);
    return MN_OK;
#else
    return MN_OK;
#endif
}

mn_status mn_device_resolve(const char *request, mn_device *out, char *notice, size_t notice_cap) {
    if (!request || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_device_resolve: NULL argument");
    if (notice && notice_cap)
        notice[0] = '\0';
    if (!strcmp(request, "cpu")) {
        *out = MN_DEVICE_CPU;
        return MN_OK;
    }
    if (strcmp(request, "cuda") && strcmp(request, "auto"))
        return mn_fail(MN_ERR_INVALID_ARG, "unknown device '%s' (expected cpu, cuda or auto)", request);
    int count = 0;
    mn_status st = mn_cuda_device_count(&count);
    /* a copy: mn_fail below rewrites the buffer mn_last_error() points into */
    char why[512];
#ifndef MN_HAVE_CUDA
    snprintf(why, sizeof why, "this build has no CUDA backend");
#else
    snprintf(why, sizeof why, "%s", st != MN_OK ? mn_last_error() : "no CUDA device found");
#endif
    if (st == MN_OK && count > 0) {
        *out = MN_DEVICE_CUDA;
        return MN_OK;
    }
    if (!strcmp(request, "cuda"))
        return mn_fail(MN_ERR_DEVICE, "--device cuda: %s", why);
    if (notice && notice_cap)
        snprintf(notice, notice_cap, "mnemo: no usable GPU (%s); running on the CPU", why);
    *out = MN_DEVICE_CPU;
    mn_clear_error();
    return MN_OK;
}

mn_status mn_cuda_device_info(int index, mn_device_info *info) {
    if (!info)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_cuda_device_info: info is NULL");
    memset(info, 0, sizeof *info);
#ifdef MN_HAVE_CUDA
    char message[512];
    if (mn_cuda_query_device_info(index, info, message, sizeof message) != 0)
        return mn_fail(MN_ERR_DEVICE, "%s", message);
    return MN_OK;
#else
    (void)index;
    return mn_fail(MN_ERR_DEVICE, "this build has no CUDA backend");
#endif
}
