/* NCCL for the GPU path of data-parallel training, the module's side (compiled into
 * libmnemo-cuda.so when the build has CUDA, MPI and NCCL): a communicator from a unique id that
 * the library shares between ranks (src/train/dist_nccl.c), and the gradient all-reduce.
 * Not yet run on a GPU by this project's tests: docs/distributed.md says so. */
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cuda/ops_cuda.h"

_Static_assert(sizeof(ncclUniqueId) == MN_NCCL_ID_BYTES, "MN_NCCL_ID_BYTES is not NCCL's id size");

typedef struct {
    ncclComm_t comm;
    int rank;
} nccl_comm;

mn_status mn_cu_nccl_unique_id(void *id) {
    ncclUniqueId u;
    ncclResult_t nr = ncclGetUniqueId(&u);
    if (nr != ncclSuccess)
        return mn_fail(MN_ERR_DEVICE, "rank 0: ncclGetUniqueId: %s", ncclGetErrorString(nr));
    memcpy(id, &u, sizeof u);
    return MN_OK;
}

mn_status mn_cu_nccl_open(const void *id, int world, int rank, int device, void **comm) {
    *comm = NULL;
    cudaError_t ce = cudaSetDevice(device);
    if (ce != cudaSuccess)
        return mn_fail(MN_ERR_DEVICE, "rank %d: cudaSetDevice(%d): %s", rank, device, cudaGetErrorString(ce));
    nccl_comm *n = calloc(1, sizeof *n);
    if (!n)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    n->rank = rank;
    ncclResult_t nr = ncclCommInitRank(&n->comm, world, u, rank);
    if (nr != ncclSuccess) {
        free(n);
        return mn_fail(MN_ERR_DEVICE, "rank %d: ncclCommInitRank: %s", rank, ncclGetErrorString(nr));
    }
    *comm = n;
    return MN_OK;
}

void mn_cu_nccl_close(void *comm) {
    nccl_comm *n = comm;
    if (!n)
        return;
    ncclCommDestroy(n->comm);
    free(n);
}

/* scale multiplies on the host side of NCCL: ncclAvg divides by the world size only, while the
 * training loop's gradients are already normalised by the global weight (scale 1: a sum). */
mn_status mn_cu_nccl_allreduce(void *comm, float *buf, size_t count, float scale, void *stream) {
    nccl_comm *n = comm;
    cudaStream_t s = (cudaStream_t)stream;
    ncclRedOp_t op = ncclSum;
    ncclResult_t nr;
    if (scale != 1.0f) {
        nr = ncclRedOpCreatePreMulSum(&op, &scale, ncclFloat32, ncclScalarHostImmediate, n->comm);
        if (nr != ncclSuccess)
            return mn_fail(MN_ERR_DEVICE, "rank %d: ncclRedOpCreatePreMulSum: %s", n->rank, ncclGetErrorString(nr));
    }
    nr = ncclAllReduce(buf, buf, count, ncclFloat32, op, n->comm, s);
    if (scale != 1.0f)
        ncclRedOpDestroy(op, n->comm);
    if (nr != ncclSuccess)
        return mn_fail(MN_ERR_DEVICE, "rank %d: ncclAllReduce of %zu floats: %s", n->rank, count,
                       ncclGetErrorString(nr));
    cudaError_t ce = cudaStreamSynchronize(s);
    if (ce != cudaSuccess)
        return mn_fail(MN_ERR_DEVICE, "rank %d: after ncclAllReduce: %s", n->rank, cudaGetErrorString(ce));
    return MN_OK;
}
