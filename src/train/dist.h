/* The communication layer of data-parallel `mnemo train` (docs/distributed.md): a context
 * passed explicitly, over MPI when the process was started by an MPI launcher (mpirun,
 * srun) and the build has MPI, else a world of one rank in which every collective is a copy.
 *
 * Every collective is nonblocking underneath and polled against a timeout, so a rank that
 * died or stopped turns into an error naming this rank and the operation within the timeout
 * instead of a hang. Errors are returned (mn_last_error()); only the CLI ends the job
 * (dist_abort). Reductions are deterministic: a sum over ranks is always taken in rank order,
 * so N ranks give bit-identical results to one rank summing N micro-batches in order. */
#ifndef MN_TRAIN_DIST_H
#define MN_TRAIN_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

typedef struct dist dist;

/* 1 when an MPI launcher started this process (its environment says so). */
int dist_launched(void);
/* Opens the world: MPI_Init when dist_launched() and the build has MPI, else one rank. A
 * launched process in a build without MPI fails (it would train alone, silently). */
mn_status dist_open(int *argc, char ***argv, dist **out);
/* MPI_Finalize (when MPI was opened) and free. */
void dist_close(dist *d);
/* Ends every rank of the job with code (MPI_Abort); for main paths only. Without MPI: no-op. */
void dist_abort(dist *d, int code);

int dist_rank(const dist *d);
int dist_size(const dist *d);
const char *dist_backend_name(const dist *d); /* "mpi" or "none" */
/* Seconds a collective may wait for the other ranks before it fails; <= 0: forever. */
void dist_set_timeout(dist *d, double seconds);
/* Seconds spent inside collectives since the last call (then reset). */
double dist_take_comm_seconds(dist *d);

/* The contiguous part [lo, hi) of n elements that rank owns (sizes differ by at most one). */
void dist_shard_range(size_t n, int world, int rank, size_t *lo, size_t *hi);

/* Every rank contributes `bytes` bytes; all receives size * bytes, rank order. */
mn_status dist_allgather(dist *d, const void *mine, size_t bytes, void *all, const char *what);
/* Sum over ranks of buf (n floats), each rank's shard only: afterwards buf[lo, hi) of the
 * calling rank (dist_shard_range) holds the sum, taken in rank order; the rest is stale. */
mn_status dist_reduce_scatter_sum(dist *d, float *buf, size_t n, const char *what);
/* Each rank's shard buf[lo_r, hi_r) to every rank: buf is then whole everywhere. */
mn_status dist_allgather_shards(dist *d, float *buf, size_t n, const char *what);
/* Each rank's shard (dist_shard_range of n) into full (n floats, read on root only). */
mn_status dist_gather_shards(dist *d, const float *shard, size_t n, float *full, int root, const char *what);
mn_status dist_bcast(dist *d, void *buf, size_t bytes, int root, const char *what);
mn_status dist_barrier(dist *d, const char *what);

/* Shares `bytes` bytes of rank 0's buf with every rank through a file on a filesystem they
 * all see, without MPI (the NCCL id of a launch without mpirun): rank 0 writes path
 * atomically (temp file, fsync, rename); the others poll for it for up to timeout_s and
 * check its header and size. The path must be unique to the job (a stale file from another
 * job would be read as this one's): e.g. <run_dir>/nccl-id.<job id>. */
mn_status dist_rendezvous_file(const char *path, int rank, void *buf, size_t bytes, double timeout_s);

/* NCCL (builds with CUDA + MPI + NCCL; docs/distributed.md). Not yet used by `mnemo train`,
 * whose training runs on the CPU in this version. */
int dist_have_nccl(void);
typedef struct dist_nccl dist_nccl;
/* Rank 0 makes the NCCL unique id, MPI_Bcast shares it, every rank joins (ncclCommInitRank)
 * on CUDA device `device`. */
mn_status dist_nccl_open(dist *d, int device, dist_nccl **out);
/* The same without MPI: the id travels through dist_rendezvous_file(path). */
mn_status dist_nccl_open_file(const char *path, int rank, int world, int device, double timeout_s,
                              dist_nccl **out);
void dist_nccl_close(dist_nccl *n);
/* Sums device buffer buf (n floats) over ranks on `stream` (a cudaStream_t; NULL: the
 * default stream), then multiplies by `scale` (1 / world for a plain average), and waits. */
mn_status dist_nccl_allreduce(dist_nccl *n, float *buf, size_t count, float scale, void *stream);

#endif
