/* The communication layer of data-parallel training (src/train/dist.h). */
#include "train/dist.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"

#ifdef MN_HAVE_MPI
#include <limits.h>
#include <mpi.h>
#endif

struct mn_dist {
    int rank, size, mpi;
    double timeout_s;
    double comm_s;
    float *scratch; /* reduce-scatter receive buffer */
    size_t scratch_cap;
};

int mn_dist_launched(void) {
    /* OpenMPI, MPICH/Hydra (PMI), PMIx launchers such as srun */
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

void mn_dist_shard_range(size_t n, int world, int rank, size_t *lo, size_t *hi) {
    size_t w = (size_t)(world > 0 ? world : 1), r = (size_t)rank, base = n / w, extra = n % w;
    *lo = r * base + (r < extra ? r : extra);
    *hi = *lo + base + (r < extra ? 1 : 0);
}

int mn_dist_rank(const mn_dist *d) { return d ? d->rank : 0; }
int mn_dist_size(const mn_dist *d) { return d ? d->size : 1; }
const char *mn_dist_backend_name(const mn_dist *d) { return d && d->mpi ? "mpi" : "none"; }
void mn_dist_set_timeout(mn_dist *d, double seconds) {
    if (d)
        d->timeout_s = seconds;
}
double mn_dist_take_comm_seconds(mn_dist *d) {
    double s = d ? d->comm_s : 0.0;
    if (d)
        d->comm_s = 0.0;
    return s;
}

#ifdef MN_HAVE_MPI
static mn_status grow_scratch(mn_dist *d, size_t n) {
    if (n <= d->scratch_cap)
        return MN_OK;
    float *p = realloc(d->scratch, n * sizeof(float));
    if (!p)
        return mn_fail(MN_ERR_NOMEM, "rank %d: out of memory for a %zu-float reduction buffer", d->rank, n);
    d->scratch = p;
    d->scratch_cap = n;
    return MN_OK;
}

static mn_status mpi_failed(const mn_dist *d, int code, const char *call, const char *what) {
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(code, msg, &len);
    return mn_fail(MN_ERR_IO, "MPI rank %d of %d: %s (%s) failed: %s", d->rank, d->size, what, call, msg);
}

/* Polls a nonblocking collective. Sleeping between tests leaves the core to the ranks that
 * still compute (ranks often share cores); the timeout turns a dead or stopped peer into an
 * error instead of a hang. */
static mn_status wait_request(mn_dist *d, MPI_Request *req, const char *call, const char *what) {
    double t0 = mn_clock_s();
    int done = 0;
    for (long polls = 0;; polls++) {
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            return mpi_failed(d, rc, call, what);
        if (done)
            break;
        double waited = mn_clock_s() - t0;
        if (d->timeout_s > 0 && waited > d->timeout_s)
            return mn_fail(MN_ERR_IO,
                           "MPI rank %d of %d: %s (%s): no answer from the other ranks within %.0f s "
                           "(comm_timeout): a rank died, was stopped or hangs",
                           d->rank, d->size, what, call, d->timeout_s);
        if (polls > 64) {
            struct timespec ts = {0, polls > 4096 ? 1000000 : 50000}; /* 50 us, 1 ms after a while */
            nanosleep(&ts, NULL);
        }
    }
    d->comm_s += mn_clock_s() - t0;
    return MN_OK;
}

/* Runs one nonblocking collective to its end (the request is the call's last argument,
 * supplied here): st = the call's failure, else wait_request's result. Starting it counts as
 * communication time, as the wait does. */
#define MPI_RUN(st, d, what, call, ...)                                                  \
    do {                                                                                 \
        MPI_Request req_;                                                                \
        double t_ = mn_clock_s();                                                        \
        int rc_ = call(__VA_ARGS__, &req_);                                              \
        (d)->comm_s += mn_clock_s() - t_;                                                \
        (st) = rc_ != MPI_SUCCESS ? mpi_failed((d), rc_, #call, (what))                  \
                                  : wait_request((d), &req_, #call, (what));             \
    } while (0)

mn_status mn_dist_open(int *argc, char ***argv, mn_dist **out) {
    *out = NULL;
    mn_dist *d = calloc(1, sizeof *d);
    if (!d)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    d->size = 1;
    d->timeout_s = 300;
    if (mn_dist_launched()) {
        int provided = 0;
        /* OpenMP threads compute; only the main thread calls MPI */
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            free(d);
            return mn_fail(MN_ERR_IO, "MPI_Init_thread failed");
        }
        d->mpi = 1;
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
        MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    }
    *out = d;
    return MN_OK;
}

void mn_dist_close(mn_dist *d) {
    if (!d)
        return;
    if (d->mpi)
        MPI_Finalize();
    free(d->scratch);
    free(d);
}

void mn_dist_abort(mn_dist *d, int code) {
    if (d && d->mpi && d->size > 1)
        MPI_Abort(MPI_COMM_WORLD, code);
}

mn_status mn_dist_allgather(mn_dist *d, const void *mine, size_t bytes, void *all, const char *what) {
    if (!d->mpi || d->size == 1) {
        memmove(all, mine, bytes);
        return MN_OK;
    }
    if (bytes > INT_MAX)
        return mn_fail(MN_ERR_INVALID_ARG, "MPI rank %d: %s: %zu bytes per rank is too many", d->rank, what, bytes);
    mn_status st;
    MPI_RUN(st, d, what, MPI_Iallgather, mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
    return st;
}

/* MPI's int counts and displacements of every rank's shard of n elements: counts[r] at r,
 * displs[r] at W + r of a new array of blocks * W ints (the rest is the caller's). */
static mn_status shard_counts(const mn_dist *d, size_t n, int blocks, int **out, const char *what) {
    int W = d->size;
    int *counts = malloc((size_t)blocks * (size_t)W * sizeof(int));
    if (!counts)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    for (int r = 0; r < W; r++) {
        size_t lo, hi;
        mn_dist_shard_range(n, W, r, &lo, &hi);
        if (hi > INT_MAX) {
            free(counts);
            return mn_fail(MN_ERR_INVALID_ARG, "MPI rank %d: %s: %zu elements exceed MPI's int counts", d->rank, what,
                           n);
        }
        counts[r] = (int)(hi - lo);
        counts[W + r] = (int)lo;
    }
    *out = counts;
    return MN_OK;
}

/* Reduce-scatter as an all-to-all plus a local sum in rank order: MPI_Reduce_scatter may
 * combine in any order, this one is deterministic for every world size and sends the same
 * volume as a ring. */
mn_status mn_dist_reduce_scatter_sum(mn_dist *d, float *buf, size_t n, const char *what) {
    if (!d->mpi || d->size == 1)
        return MN_OK;
    int W = d->size, *sc;
    MN_TRY(shard_counts(d, n, 4, &sc, what));
    int *sd = sc + W, *rc = sc + 2 * W, *rd = sc + 3 * W;
    size_t lo, hi;
    mn_dist_shard_range(n, W, d->rank, &lo, &hi);
    size_t mine = hi - lo;
    mn_status st = grow_scratch(d, (size_t)W * mine + 1);
    if (st == MN_OK) {
        for (int r = 0; r < W; r++) {
            rc[r] = (int)mine;
            rd[r] = (int)((size_t)r * mine);
        }
        MPI_RUN(st, d, what, MPI_Ialltoallv, buf, sc, sd, MPI_FLOAT, d->scratch, rc, rd, MPI_FLOAT, MPI_COMM_WORLD);
    }
    if (st == MN_OK) {
        float *dst = buf + lo;
        memcpy(dst, d->scratch, mine * sizeof(float));
        for (int r = 1; r < W; r++) {
            const float *src = d->scratch + (size_t)r * mine;
            for (size_t i = 0; i < mine; i++)
                dst[i] += src[i];
        }
    }
    free(sc);
    return st;
}

mn_status mn_dist_allgather_shards(mn_dist *d, float *buf, size_t n, const char *what) {
    if (!d->mpi || d->size == 1)
        return MN_OK;
    int *counts;
    MN_TRY(shard_counts(d, n, 2, &counts, what));
    mn_status st;
    MPI_RUN(st, d, what, MPI_Iallgatherv, MPI_IN_PLACE, 0, MPI_FLOAT, buf, counts, counts + d->size, MPI_FLOAT,
            MPI_COMM_WORLD);
    free(counts);
    return st;
}

mn_status mn_dist_gather_shards(mn_dist *d, const float *shard, size_t n, float *full, int root, const char *what) {
    if (!d->mpi || d->size == 1) {
        memmove(full, shard, n * sizeof(float));
        return MN_OK;
    }
    int *counts;
    MN_TRY(shard_counts(d, n, 2, &counts, what));
    mn_status st;
    MPI_RUN(st, d, what, MPI_Igatherv, shard, counts[d->rank], MPI_FLOAT, full, counts, counts + d->size, MPI_FLOAT,
            root, MPI_COMM_WORLD);
    free(counts);
    return st;
}

mn_status mn_dist_bcast(mn_dist *d, void *buf, size_t bytes, int root, const char *what) {
    if (!d->mpi || d->size == 1)
        return MN_OK;
    if (bytes > INT_MAX)
        return mn_fail(MN_ERR_INVALID_ARG, "MPI rank %d: %s: %zu bytes is too many", d->rank, what, bytes);
    mn_status st;
    MPI_RUN(st, d, what, MPI_Ibcast, buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD);
    return st;
}

mn_status mn_dist_barrier(mn_dist *d, const char *what) {
    if (!d->mpi || d->size == 1)
        return MN_OK;
    mn_status st;
    MPI_RUN(st, d, what, MPI_Ibarrier, MPI_COMM_WORLD);
    return st;
}

#else /* no MPI: a world of one */

mn_status mn_dist_open(int *argc, char ***argv, mn_dist **out) {
    (void)argc, (void)argv;
    *out = NULL;
    if (mn_dist_launched())
        return mn_fail(MN_ERR_CONFIG, "started by an MPI launcher, but this mnemo was built without MPI "
                                      "(install libopenmpi-dev and rebuild; the mpi option is auto)");
    mn_dist *d = calloc(1, sizeof *d);
    if (!d)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    d->size = 1;
    d->timeout_s = 300;
    *out = d;
    return MN_OK;
}

void mn_dist_close(mn_dist *d) {
    if (d)
        free(d->scratch);
    free(d);
}
void mn_dist_abort(mn_dist *d, int code) { (void)d, (void)code; }
mn_status mn_dist_allgather(mn_dist *d, const void *mine, size_t bytes, void *all, const char *what) {
    (void)d, (void)what;
    memmove(all, mine, bytes);
    return MN_OK;
}
mn_status mn_dist_reduce_scatter_sum(mn_dist *d, float *buf, size_t n, const char *what) {
    (void)d, (void)buf, (void)n, (void)what;
    return MN_OK;
}
mn_status mn_dist_allgather_shards(mn_dist *d, float *buf, size_t n, const char *what) {
    (void)d, (void)buf, (void)n, (void)what;
    return MN_OK;
}
mn_status mn_dist_gather_shards(mn_dist *d, const float *shard, size_t n, float *full, int root, const char *what) {
    (void)d, (void)root, (void)what;
    memmove(full, shard, n * sizeof(float));
    return MN_OK;
}
mn_status mn_dist_bcast(mn_dist *d, void *buf, size_t bytes, int root, const char *what) {
    (void)d, (void)buf, (void)bytes, (void)root, (void)what;
    return MN_OK;
}
mn_status mn_dist_barrier(mn_dist *d, const char *what) {
    (void)d, (void)what;
    return MN_OK;
}
#endif

/* ---------------------------------------------------------------- file rendezvous */
#define RDV_MAGIC "MNRDV001"

mn_status mn_dist_rendezvous_file(const char *path, int rank, void *buf, size_t bytes, double timeout_s) {
    if (!path || !buf)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_dist_rendezvous_file: NULL argument");
    uint64_t n = bytes;
    if (rank == 0) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            return mn_fail(MN_ERR_IO, "rank 0: rendezvous file %s: %s", tmp, strerror(errno));
        int ok = write(fd, RDV_MAGIC, 8) == 8 && write(fd, &n, 8) == 8 && write(fd, buf, bytes) == (ssize_t)bytes &&
                 fsync(fd) == 0;
        ok = close(fd) == 0 && ok;
        if (!ok || rename(tmp, path) != 0) {
            mn_status st = mn_fail(MN_ERR_IO, "rank 0: cannot write the rendezvous file %s: %s", path, strerror(errno));
            unlink(tmp);
            return st;
        }
        return MN_OK;
    }
    double t0 = mn_clock_s();
    for (;;) {
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            char magic[8];
            uint64_t got = 0;
            int ok = read(fd, magic, 8) == 8 && !memcmp(magic, RDV_MAGIC, 8) && read(fd, &got, 8) == 8 && got == n &&
                     read(fd, buf, bytes) == (ssize_t)bytes;
            close(fd);
            if (!ok)
                return mn_fail(MN_ERR_FORMAT, "rank %d: rendezvous file %s is not a %zu-byte mnemo rendezvous record",
                               rank, path, bytes);
            return MN_OK;
        }
        if (errno != ENOENT)
            return mn_fail(MN_ERR_IO, "rank %d: rendezvous file %s: %s", rank, path, strerror(errno));
        if (timeout_s > 0 && mn_clock_s() - t0 > timeout_s)
            return mn_fail(MN_ERR_IO, "rank %d: rank 0 did not write the rendezvous file %s within %.0f s", rank, path,
                           timeout_s);
        struct timespec ts = {0, 10000000}; /* 10 ms */
        nanosleep(&ts, NULL);
    }
}

#ifndef MN_HAVE_NCCL
int mn_dist_have_nccl(void) { return 0; }
mn_status mn_dist_nccl_open(mn_dist *d, int device, mn_dist_nccl **out) {
    (void)d, (void)device;
    *out = NULL;
    return mn_fail(MN_ERR_DEVICE, "this mnemo was built without NCCL (needs CUDA, MPI and NCCL at build time)");
}
mn_status mn_dist_nccl_open_file(const char *path, int rank, int world, int device, double timeout_s,
                                 mn_dist_nccl **out) {
    (void)path, (void)rank, (void)world, (void)device, (void)timeout_s;
    *out = NULL;
    return mn_fail(MN_ERR_DEVICE, "this mnemo was built without NCCL (needs CUDA, MPI and NCCL at build time)");
}
void mn_dist_nccl_close(mn_dist_nccl *n) { (void)n; }
mn_status mn_dist_nccl_allreduce(mn_dist_nccl *n, float *buf, size_t count, float scale, void *stream) {
    (void)n, (void)buf, (void)count, (void)scale, (void)stream;
    return mn_fail(MN_ERR_DEVICE, "this mnemo was built without NCCL");
}
#endif
