/* The GPU model tests (test_cuda_model.c) run on every machine against the guarded host
 * backend: the CPU ops behind the model's device code path, every pointer checked, results
 * required bitwise equal to the CPU trainer's. What this cannot check is the CUDA kernels
 * themselves; test_cuda_ops and test_cuda_model do on a GPU. */
#define MN_TEST_GUARDED 1
#include "test_cuda_model.c"
