/* NCCL gradient all-reduce for the GPU path (src/train/dist.h), the library's side: the ranks
 * share NCCL's unique id (over MPI or a rendezvous file) and call the CUDA module's NCCL
 * entries (model/backend.h, mn_cuda_module; src/cuda/nccl_comm.c). Built with CUDA + MPI + NCCL.
 * Not yet run on a GPU by this project's tests: docs/distributed.md says so. */
#include <stdlib.h>

#include "core/error.h"
#include "model/backend.h"
#include "train/dist.h"

struct mn_dist_nccl {
    const mn_cuda_module *module;
    void *comm;
};

int mn_dist_have_nccl(void) { return 1; }

/* The module, with NCCL in it; rank names the caller in the messages. */
static mn_status nccl_module(int rank, const mn_cuda_module **out) {
    MN_TRY(mn_cuda_module_get(out));
    if (!(*out)->nccl_open || (*out)->nccl_id_bytes > 1024)
        return mn_fail(MN_ERR_DEVICE, "rank %d: the CUDA module was built without NCCL", rank);
    return MN_OK;
}

static mn_status nccl_open_with_id(const mn_cuda_module *m, const void *id, int world, int rank, int device,
                                   mn_dist_nccl **out) {
    mn_dist_nccl *n = calloc(1, sizeof *n);
    if (!n)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    n->module = m;
    mn_status st = m->nccl_open(id, world, rank, device, &n->comm);
    if (st != MN_OK) {
        free(n);
        return st;
    }
    *out = n;
    return MN_OK;
}

mn_status mn_dist_nccl_open(mn_dist *d, int device, mn_dist_nccl **out) {
    *out = NULL;
    const mn_cuda_module *m = NULL;
    MN_TRY(nccl_module(mn_dist_rank(d), &m));
    unsigned char id[1024];
    if (mn_dist_rank(d) == 0)
        MN_TRY(m->nccl_unique_id(id));
    /* the id is opaque bytes: MPI carries it; a file or TCP rendezvous could too */
    MN_TRY(mn_dist_bcast(d, id, m->nccl_id_bytes, 0, "sharing the NCCL unique id"));
    return nccl_open_with_id(m, id, mn_dist_size(d), mn_dist_rank(d), device, out);
}

mn_status mn_dist_nccl_open_file(const char *path, int rank, int world, int device, double timeout_s,
                                 mn_dist_nccl **out) {
    *out = NULL;
    const mn_cuda_module *m = NULL;
    MN_TRY(nccl_module(rank, &m));
    unsigned char id[1024];
    if (rank == 0)
        MN_TRY(m->nccl_unique_id(id));
    MN_TRY(mn_dist_rendezvous_file(path, rank, id, m->nccl_id_bytes, timeout_s));
    return nccl_open_with_id(m, id, world, rank, device, out);
}

void mn_dist_nccl_close(mn_dist_nccl *n) {
    if (!n)
        return;
    n->module->nccl_close(n->comm);
    free(n);
}

mn_status mn_dist_nccl_allreduce(mn_dist_nccl *n, float *buf, size_t count, float scale, void *stream) {
    return n->module->nccl_allreduce(n->comm, buf, count, scale, stream);
}
