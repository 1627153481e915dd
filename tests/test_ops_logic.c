/* The GPU op tests (test_cuda_ops.c) run on every machine against the guarded host backend:
 * the CPU ops behind the backend table with every pointer checked. The results are the CPU's
 * own, so what this proves is the tests' logic, the ops' extents at every shape (GPT-2 small
 * included) and the CPU side of the NaN-padding case; test_cuda_ops checks the kernels on a
 * GPU. */
#define MN_TEST_GUARDED 1
#include "test_cuda_ops.c"
