/* A CUDA module of "another build" for test_cuda_module's `other` case: the right entry point,
 * a build id that is not this build's. The loader must refuse it before calling anything. */
#include <stddef.h>

#include "model/backend.h"

static const mn_cuda_module fake = {
    .abi = MN_CUDA_MODULE_ABI,
    .backend_size = sizeof(mn_backend),
    .build_id = "fake-0000000",
};

__attribute__((visibility("default"))) const mn_cuda_module *mn_cuda_module_entry(const mn_cuda_host *host) {
    (void)host;
    return &fake;
}
