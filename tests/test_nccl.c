/* The NCCL path of data-parallel training (src/train/dist_nccl.c) on a real GPU: rank 0 makes the
 * unique id, it is shared over MPI (a world of one without mpirun; under `mpirun -np N` with N
 * GPUs, one per rank), the communicator forms, and an all-reduce with a pre-multiplied scale
 * sums a device buffer over the ranks. Built only with CUDA + MPI + NCCL; skipped (77) without
 * a CUDA device. Not run by this project's CI, which has no GPU. */
#include <cuda_runtime.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "train/dist.h"

static mn_dist *world;

static void test_allreduce_scaled(void **state) {
    (void)state;
    int devices = 0;
    assert_int_equal(cudaGetDeviceCount(&devices), cudaSuccess);
    int rank = mn_dist_rank(world), size = mn_dist_size(world);
    mn_dist_nccl *n = NULL;
    if (mn_dist_nccl_open(world, rank % devices, &n) != MN_OK)
        fail_msg("%s", mn_last_error());
    enum { COUNT = 1 << 20 };
    float *host = malloc(COUNT * sizeof(float)), *dev = NULL;
    for (int i = 0; i < COUNT; i++)
        host[i] = (float)(rank + 1) * (float)(i % 97);
    assert_int_equal(cudaMalloc((void **)&dev, COUNT * sizeof(float)), cudaSuccess);
    assert_int_equal(cudaMemcpy(dev, host, COUNT * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    /* the mean over ranks: sum_r (r + 1) / size = (size + 1) / 2 times i % 97 */
    if (mn_dist_nccl_allreduce(n, dev, COUNT, 1.0f / (float)size, NULL) != MN_OK)
        fail_msg("%s", mn_last_error());
    assert_int_equal(cudaMemcpy(host, dev, COUNT * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    for (int i = 0; i < COUNT; i++) {
        float want = (float)(size + 1) / 2.0f * (float)(i % 97);
        if (host[i] < want * 0.99999f - 1e-6f || host[i] > want * 1.00001f + 1e-6f)
            fail_msg("element %d: %g, expected %g", i, (double)host[i], (double)want);
    }
    cudaFree(dev);
    free(host);
    mn_dist_nccl_close(n);
}

int main(int argc, char **argv) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 1) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    if (mn_dist_open(&argc, &argv, &world) != MN_OK) {
        printf("mn_dist_open: %s\n", mn_last_error());
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_allreduce_scaled)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mn_dist_close(world);
    return rc;
}
