/* The communication layer of data-parallel training (docs/distributed.md): a world
 * (include/mnemo_train.h) passed explicitly, over MPI when the process was started by an MPI
 * launcher (mpirun, srun) and the build has MPI, else a world of one rank in which every
 * collective is a copy.
 *
 * Every collective is nonblocking underneath and polled against a timeout, so a rank that
 * died or stopped turns into an error naming this rank and the operation within the timeout
 * instead of a hang. Errors are returned (mn_last_error()); only a program's main path ends
 * the job (mn_dist_abort). Reductions are deterministic: a sum over ranks is always taken in
 * rank order, so N ranks give bit-identical results to one rank summing N micro-batches in
 * order. */
#ifndef MN_TRAIN_DIST_H
#define MN_TRAIN_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo_train.h" /* mn_dist, its opening and closing, rank and size */

const char *mn_dist_backend_name(const mn_dist *d); /* "mpi" or "none" */
/* Seconds a collective may wait for the other ranks before it fails; <= 0: forever. */
void mn_dist_set_timeout(mn_dist *d, double seconds);
/* Seconds spent inside collectives since the last call (then reset). */
double mn_dist_take_comm_seconds(mn_dist *d);

/* The contiguous part [lo, hi) of n elements that rank owns (sizes differ by at most one). */
void mn_dist_shard_range(size_t n, int world, int rank, size_t *lo, size_t *hi);

/* Every rank contributes `bytes` bytes; all receives size * bytes, rank order. */
mn_status mn_dist_allgather(mn_dist *d, const void *mine, size_t bytes, void *all, const char *what);
/* Sum over ranks of buf (n floats), each rank's shard only: afterwards buf[lo, hi) of the
 * calling rank (mn_dist_shard_range) holds the sum, taken in rank order; the rest is stale. */
mn_status mn_dist_reduce_scatter_sum(mn_dist *d, float *buf, size_t n, const char *what);
/* Each rank's shard buf[lo_r, hi_r) to every rank: buf is then whole everywhere. */
mn_status mn_dist_allgather_shards(mn_dist *d, float *buf, size_t n, const char *what);
/* Each rank's shard (mn_dist_shard_range of n) into full (n floats, read on root only). */
mn_status mn_dist_gather_shards(mn_dist *d, const float *shard, size_t n, float *full, int root, const char *what);
mn_status mn_dist_bcast(mn_dist *d, void *buf, size_t bytes, int root, const char *what);
mn_status mn_dist_barrier(mn_dist *d, const char *what);

/* Shares `bytes` bytes of rank 0's buf with every rank through a file on a filesystem they
 * all see, without MPI (the NCCL id of a launch without mpirun): rank 0 writes path
 * atomically (temp file, fsync, rename); the others poll for it for up to timeout_s and
 * check its header and size. The path must be unique to the job (a stale file from another
 * job would be read as this one's): e.g. <run_dir>/nccl-id.<job id>. */
mn_status mn_dist_rendezvous_file(const char *path, int rank, void *buf, size_t bytes, double timeout_s);

/* NCCL (builds with CUDA + MPI + NCCL; docs/distributed.md): `mnemo train --device cuda` with
 * several ranks all-reduces its gradients through it (train_loop.c). */
int mn_dist_have_nccl(void);
typedef struct mn_dist_nccl mn_dist_nccl;
/* Rank 0 makes the NCCL unique id, MPI_Bcast shares it, every rank joins (ncclCommInitRank)
 * on CUDA device `device`. */
mn_status mn_dist_nccl_open(mn_dist *d, int device, mn_dist_nccl **out);
/* The same without MPI: the id travels through mn_dist_rendezvous_file(path). */
mn_status mn_dist_nccl_open_file(const char *path, int rank, int world, int device, double timeout_s,
                                 mn_dist_nccl **out);
void mn_dist_nccl_close(mn_dist_nccl *n);
/* Sums device buffer buf (n floats) over ranks on `stream` (a cudaStream_t; NULL: the
 * default stream), then multiplies by `scale` (1 / world for a plain average), and waits. */
mn_status mn_dist_nccl_allreduce(mn_dist_nccl *n, float *buf, size_t count, float scale, void *stream);

#endif
