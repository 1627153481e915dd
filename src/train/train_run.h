/* The state of one mn_train_run (include/mnemo_train.h), shared by the loop (train_loop.c)
 * and its evaluation (train_eval.c). Internal to the library. */
#ifndef MN_TRAIN_RUN_H
#define MN_TRAIN_RUN_H

#include <stdint.h>
#include <stdio.h>

#include "core/rng.h"
#include "io/checkpoint.h"
#include "mnemo_train.h"
#include "text/dialogue.h"
#include "text/shard.h"
#include "text/tokenizer.h"
#include "train/recall.h"
#include "train/run_dir.h"
#include "train/schedule.h"

/* The validation data's own RNG seed salt (the shard loader's order, recall episodes). */
#define MN_TRAIN_EVAL_LOSS_SALT 0x6a09e667f3bcc908ull

typedef struct {
    const mn_train_config *cfg;
    const mn_train_options *opts;
    const mn_train_callbacks *cb;    /* never NULL: an empty set when the caller gave none */
    int recall;                      /* task recall (else shards) */
    mn_recall_task task;
    mn_curriculum curriculum;
    mn_lr_schedule schedule;
    mn_model *model;
    mn_trainer *trainer;             /* on `backend`; on a GPU its host mirrors are pulled where read */
    const struct mn_backend *backend;
    int on_device;                   /* the backend keeps its buffers off the host */
    mn_tokenizer *tok;
    mn_shard *train_shard, *valid_shard;
    mn_loader *loader, *valid_loader;
    int loader_stage;                /* the curriculum stage `loader` was made for */
    /* the global batch (T, B, L), identical on every rank: synthetic or compacted shard batches */
    int32_t *tokens, *lengths;
    float *weights;
    int max_len;
    /* data parallel: rank r trains episodes [r * local_B, (r + 1) * local_B) of each global
     * batch, as grad_accum micro-batches of micro_B (docs/distributed.md) */
    mn_dist *d;
    int world, rank, local_B, micro_B;
    /* several ranks on CUDA: the gradient all-reduce over NCCL on the device (builds with NCCL);
     * NULL on one rank, on the CPU, and on the tests' stand-in, whose host mirror goes over MPI */
    struct mn_dist_nccl *nccl;
    int32_t *mtokens, *mlengths;     /* one micro-batch (T, micro_B, L) */
    float *mweights;
    float *accum;                    /* (num_params) gradient sum over micro-batches */
    /* stream 1 (docs/training.md, "Streaming"): per lane of the batch, the stream loader's
     * position and the state R carried into its next window; carry = the loader's flags where
     * that state is finite */
    int64_t *lane_episode, *lane_turn;
    float *carried;                  /* (batch, k, C) */
    unsigned char *carry;            /* (batch) */
    double comm_total_s, step_total_s;
    mn_rng rng;
    mn_train_state st;
    /* text probes: the valid_probes file, scored by mn_eval_run as `mnemo eval` scores it */
    mn_dialogue_list probes;
    int have_probes;
    int64_t n_probes;                /* multiple-choice probes among the first eval_probes */
    FILE *metrics;                   /* rank 0: <run_dir>/metrics.jsonl */
    char *config_json;
    char last_checkpoint[MN_TRAIN_PATH_CAP + 64];
    mn_run_claim claim;              /* rank 0: the run that owns run_dir (run_dir.h) */
    int64_t resharded_from;          /* > 0: the resumed checkpoint's other world size */
    double t_start;
    uint64_t start_step;
} mn_train_run_state;

/* The curriculum a config describes (explicit stages, or doubling ones), and its synthetic
 * recall task (task recall): checked, MN_ERR_CONFIG naming the field. train_config.c. */
mn_status mn_train_curriculum(const mn_train_config *c, mn_curriculum *out);
mn_status mn_train_recall_task(const mn_train_config *c, mn_recall_task *task);

/* Probe distances of the recall task at a given episode length. */
void mn_train_recall_distances(const mn_train_run_state *r, int turns, int *lo, int *hi);

/* Copies episodes [e0, e0 + n) of a (T, B, L) batch into (T, n, L') buffers. compact: L' is
 * the slice's longest turn, else L' = L. */
void mn_train_slice_batch(const mn_batch *in, int e0, int n, int compact, int32_t *tokens, int32_t *lengths,
                          float *weights, mn_batch *out);

/* Reads the valid_probes file once (strict, as `mnemo eval` reads it) and counts what each
 * evaluation scores. */
mn_status mn_train_load_probes(mn_train_run_state *r);

/* Validation loss and probe accuracy at `step`: the eval callback and a metrics record. */
mn_status mn_train_evaluate(mn_train_run_state *r, uint64_t step);

#endif
