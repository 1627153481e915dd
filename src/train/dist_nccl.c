/* NCCL gradient all-reduce for the GPU path (src/train/dist.h); built with CUDA + MPI + NCCL.
 * Not yet run on a GPU by this project's tests: docs/distributed.md says so. */
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>

#include "core/error.h"
#include "train/dist.h"

struct mn_dist_nccl {
    ncclComm_t comm;
    int rank, size;
};

int mn_dist_have_nccl(void) { return 1; }

mn_status mn_dist_nccl_open(mn_dist *d, int device, mn_dist_nccl **out) {
    *out = NULL;
    cudaError_t ce = cudaSetDevice(device);
    if (ce != cudaSuccess)
        return mn_fail(MN_ERR_DEVICE, "rank %d: cudaSetDevice(%d): %s", mn_dist_rank(d), device,
                       cudaGetErrorString(ce));
    ncclUniqueId id;
    if (mn_dist_rank(d) == 0) {
        ncclResult_t nr = ncclGetUniqueId(&id);
        if (nr != ncclSuccess)
            return mn_fail(MN_ERR_DEVICE, "rank 0: ncclGetUniqueId: %s", ncclGetErrorString(nr));
    }
    /* the id is 128 opaque bytes: MPI carries it; a file or TCP rendezvous could too */
    MN_TRY(mn_dist_bcast(d, &id, sizeof id, 0, "sharing the NCCL unique id"));
    mn_dist_nccl *n = calloc(1, sizeof *n);
    if (!n)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    n->rank = mn_dist_rank(d);
    n->size = mn_dist_size(d);
    ncclResult_t nr = ncclCommInitRank(&n->comm, n->size, id, n->rank);
    if (nr != ncclSuccess) {
        free(n);
        return mn_fail(MN_ERR_DEVICE, "rank %d: ncclCommInitRank: %s", mn_dist_rank(d), ncclGetErrorString(nr));
    }
    *out = n;
    return MN_OK;
}

mn_status mn_dist_nccl_open_file(const char *path, int rank, int world, int device, double timeout_s,
                                 mn_dist_nccl **out) {
    *out = NULL;
    cudaError_t ce = cudaSetDevice(device);
    if (ce != cudaSuccess)
        return mn_fail(MN_ERR_DEVICE, "rank %d: cudaSetDevice(%d): %s", rank, device, cudaGetErrorString(ce));
    ncclUniqueId id;
    if (rank == 0) {
        ncclResult_t nr = ncclGetUniqueId(&id);
        if (nr != ncclSuccess)
            return mn_fail(MN_ERR_DEVICE, "rank 0: ncclGetUniqueId: %s", ncclGetErrorString(nr));
    }
    MN_TRY(mn_dist_rendezvous_file(path, rank, &id, sizeof id, timeout_s));
    mn_dist_nccl *n = calloc(1, sizeof *n);
    if (!n)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    n->rank = rank;
    n->size = world;
    ncclResult_t nr = ncclCommInitRank(&n->comm, world, id, rank);
    if (nr != ncclSuccess) {
        free(n);
        return mn_fail(MN_ERR_DEVICE, "rank %d: ncclCommInitRank: %s", rank, ncclGetErrorString(nr));
    }
    *out = n;
    return MN_OK;
}

void mn_dist_nccl_close(mn_dist_nccl *n) {
    if (!n)
        return;
    ncclCommDestroy(n->comm);
    free(n);
}

/* scale multiplies on the host side of NCCL: ncclAvg divides by the world size only, while the
 * training loop's gradients are already normalised by the global weight (scale 1: a sum). */
mn_status mn_dist_nccl_allreduce(mn_dist_nccl *n, float *buf, size_t count, float scale, void *stream) {
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
