/* Measurements behind `mnemo bench`, `bench-ops` and `bench-update` (docs/perf.md, docs/gpu.md):
 * each times library calls on synthetic data and returns the figures; the commands print them. */
#ifndef MN_BENCH_H
#define MN_BENCH_H

#include <stdio.h>

#include "mnemo.h"
#include "model/backend.h"

/* Every benchmark on a device checks a sample of what it computed against the CPU on the same
 * inputs (a fast wrong kernel is no result): values compared, the largest difference relative
 * to the sample's scale, and the bound it must stay within for the product precision. A sample
 * outside the bound (or not finite) makes the benchmark return MN_ERR_DEVICE naming it. */
typedef struct {
    int values;       /* compared; 0 when the benchmark ran on the CPU itself */
    double max_error; /* max |device - cpu| / max |cpu| */
    double bound;
} mn_bench_check;

/* One line to out: "check vs CPU: <n> values, max error <e> of the scale (bound <b>)", or that
 * the benchmark ran on the CPU itself. */
void mn_bench_print_check(FILE *out, const mn_bench_check *c);

/* ---- training throughput: forward+backward+AdamW on random full turns, next to sgemm */
typedef struct {
    mn_config config;
    mn_device device;
    mn_matmul matmul;
    int batch, turns, bptt; /* >= 1 */
    int turn_tokens;        /* 2..config.max_turn_tokens, every position real */
    int steps;              /* timed, after one warm-up pass */
    const mn_backend *backend; /* NULL: device's table; tests pass the guarded stand-in */
} mn_bench_train_options;

typedef struct {
    double step_s;                 /* forward+backward+adamw, mean over the steps */
    float loss;                    /* of the last step */
    double tokens_per_s;
    double gflops;                 /* effective: the step's matrix-product FLOPs / step_s */
    double sgemm_gflops;           /* OpenBLAS sgemm, same run, on the model's most common shape */
    int sgemm_m, sgemm_k, sgemm_n; /* that shape: (B*(k+L), C) @ (C, 4C) */
    mn_bench_check check;          /* after the steps: episode 0's forward (turn losses, states) */
} mn_bench_train_result;

mn_status mn_bench_train(const mn_bench_train_options *o, mn_bench_train_result *r);

/* ---- every backend op at the shapes of one training turn */
typedef struct {
    mn_device device;
    mn_matmul matmul;
    int batch, turn_tokens, slots, width, heads, vocab; /* heads divide width */
    int reps;                                           /* timed calls of each op, after one warm-up */
    const mn_backend *backend;                          /* NULL: device's table (as above) */
} mn_bench_ops_options;

typedef struct {
    const char *name;
    double seconds;       /* one call */
    double bytes, flops;  /* the op's minimum memory traffic and arithmetic */
} mn_bench_op;

/* Times each op in turn and hands its figures to report as soon as they are measured; then
 * checks the forward ops on a sample of rows (attention: episode 0) into *check. */
mn_status mn_bench_ops(const mn_bench_ops_options *o, void (*report)(void *ctx, const mn_bench_op *op), void *ctx,
                       mn_bench_check *check);

/* ---- session updates through the compressor, host state in and out */
typedef struct {
    mn_config config; /* config.max_turn_tokens is the turn length */
    mn_device device;
    mn_matmul matmul;
    int sessions;     /* in the batched update */
    int reps;         /* timed single updates, after three warm-up ones */
    const mn_backend *backend; /* NULL: device's table (as above) */
} mn_bench_update_options;

typedef struct {
    double median_s, p90_s, min_s; /* one mn_update of one turn */
    double batch_s;                /* one mn_update_batch of every session, after a warm-up call */
    mn_bench_check check;          /* the timed batch's new states of three sessions */
} mn_bench_update_result;

mn_status mn_bench_update(const mn_bench_update_options *o, mn_bench_update_result *r);

/* ---- the session pool (`mnemo sessions bench --pool`): batched updates of device-resident
 * states gathered by slot, against mn_update_batch and one mn_update per session (host states)
 * on the same turns, in the same run */
typedef struct {
    mn_config config;   /* turns are 1..config.max_turn_tokens tokens, drawn at random */
    mn_device device;
    mn_matmul matmul;
    int slots;          /* sessions in the pool */
    int batch;          /* turns per pool update, distinct slots (<= slots) */
    int rounds;         /* timed pool updates, after one warm-up round */
    int singles;        /* timed mn_update calls */
    const char *store;  /* NULL: no store; else a store to create (must not exist) and sync every slot to */
    const mn_backend *backend; /* NULL: device's table (as above) */
} mn_bench_pool_options;

typedef struct {
    double pool_rate;   /* session updates per second through mn_session_pool_update */
    double batch_rate;  /* through mn_update_batch, states copied between host and device */
    double single_rate; /* through one mn_update each */
    double mean_tokens; /* of the timed turns */
    double sync_s;      /* mn_session_pool_flush of every slot (bound, never written) to the store */
    mn_bench_check check; /* three sessions of the last pooled round against mn_update on the CPU */
} mn_bench_pool_result;

mn_status mn_bench_pool(const mn_bench_pool_options *o, mn_bench_pool_result *r);

#endif
