#include <cstdio>
#include <cuda_runtime.h>

#include "device_cuda.h"

extern "C" int mn_cuda_query_device_count(int *count, char *message, size_t message_cap) {
    cudaError_t err = cudaGetDeviceCount(count);
    if (err != cudaSuccess) {
        *count = 0;
        snprintf(message, message_cap, "cudaGetDeviceCount failed: error %d (%s): %s", (int)err,
                 cudaGetErrorName(err), cudaGetErrorString(err));
        (void)cudaGetLastError(); /* clear the sticky error so later calls start clean */
    }
    return (int)err;
}
