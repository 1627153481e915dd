/* mnemo: the trainer behind `mnemo train` as a library (docs/training.md).
 *
 * - The training config: one table of fields drives the JSON config (files, checkpoints), the
 *   long options of a command line (field name with '-' for '_') and their help.
 * - The data-parallel world (docs/distributed.md): MPI when an MPI launcher started the
 *   process and the build has MPI, else a world of one.
 * - The loop, mn_train_run: data, curriculum, AdamW, evaluation, metrics.jsonl and checkpoints
 *   in the run directory. It prints nothing: progress, evaluations, checkpoints and notices
 *   reach the caller through mn_train_callbacks, as plain structs. Stopping is the caller's
 *   flag (a signal handler belongs to the program, not the library).
 * Conventions as in mnemo.h (errors as values, mn_last_error()). */
#ifndef MNEMO_TRAIN_H
#define MNEMO_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- the config */
#define MN_TRAIN_PATH_CAP 1024

typedef struct {
    mn_config model;
    /* data */
    char task[16];                          /* "shards" or "recall" */
    char train_data[MN_TRAIN_PATH_CAP];     /* token shard (task shards) */
    char valid_data[MN_TRAIN_PATH_CAP];     /* token shard for validation loss */
    char valid_probes[MN_TRAIN_PATH_CAP];   /* canonical JSONL with probes: multiple-choice accuracy */
    char tokenizer[MN_TRAIN_PATH_CAP];      /* tokenizer file (task shards); from --resume/--base if empty */
    /* batches */
    int batch, turns, bptt;                 /* batch: the global batch, over every rank */
    int grad_accum;                         /* micro-batches per rank and step, summed in order */
    int stream;                             /* 1: each lane carries R across its episode's windows (task shards) */
    char curriculum[256];                   /* "step:turns,..." explicit stages, or "" */
    int curriculum_start_turns;             /* doubling stages from this many turns ... */
    int64_t curriculum_stage_steps;         /* ... each this long (0: always `turns`) */
    /* optimisation */
    double lr, min_lr;
    int64_t warmup_steps;
    double beta1, beta2, eps, weight_decay, grad_clip;
    double answer_weight, text_weight;
    double reconstruct_weight;              /* > 0: decode each turn again from R_t (mn_trainer_set_reconstruction) */
    int reconstruct_delay;                  /* ... from R_{t+delay} instead (mn_trainer_set_reconstruction_delay) */
    int64_t steps;
    int64_t time_limit_s;                   /* stop (checkpoint, done) after this much training; 0: none */
    int64_t stop_at_step;                   /* stop (checkpoint, done) when step reaches it, before `steps`; 0: none */
    int64_t seed;
    int max_nan_steps;                      /* abort after this many non-finite steps in a row */
    int freeze_decoder;                     /* train the compressor and memory only */
    int freeze_compressor;                  /* train the decoder (its blocks, wpe, ln_f) only: how it reads R */
    /* evaluation, logging, checkpoints */
    int64_t eval_interval, eval_batches, eval_probes;
    int64_t log_interval, checkpoint_interval;
    int keep_checkpoints;
    char run_dir[MN_TRAIN_PATH_CAP];
    int threads;
    char device[16];
    /* data parallel (docs/distributed.md) */
    int zero;                               /* 1: ZeRO-1, optimizer update and moments sharded */
    double comm_timeout;                    /* seconds a rank waits for the others (0: forever) */
    /* synthetic recall task (task recall) */
    int recall_keys, recall_values, recall_facts, recall_choices;
    int recall_filler_min, recall_filler_max, recall_min_distance;
} mn_train_config;

void mn_train_config_defaults(mn_train_config *c);
/* Overlays a JSON object (a file, or a string named `where` in messages) onto c; unknown
 * fields and wrong types are errors naming the field. */
mn_status mn_train_config_load_file(mn_train_config *c, const char *path);
mn_status mn_train_config_load_string(mn_train_config *c, const char *json, const char *where);
/* A checkpoint's stored training config onto c, and its model config (the tensors decide);
 * run_dir becomes the directory holding the checkpoint (a resume writes there, docs/training.md). */
mn_status mn_train_config_load_checkpoint(mn_train_config *c, const char *checkpoint);
/* Checks every field's range; the message names the first bad field. MN_ERR_CONFIG. */
mn_status mn_train_config_validate(const mn_train_config *c);
/* The config as compact (indent 0) or indented JSON, every field; malloc'd (NULL: no memory). */
char *mn_train_config_to_json(const mn_train_config *c, int indent);

/* The fields one by one, for a command line: field i in 0..mn_train_config_n_fields()-1. */
typedef struct {
    const char *name;     /* JSON key: "max_turn_tokens" */
    char option[48];      /* long option without "--": "max-turn-tokens" */
    const char *help;
    int is_flag;          /* a boolean: the option takes no value and sets it */
} mn_train_field;
int mn_train_config_n_fields(void);
mn_status mn_train_config_field(int i, mn_train_field *out);
/* Sets field i from an option's text (ignored for flags, which become true); the message
 * names the option: "--lr wants a finite number, got 'fast'". */
mn_status mn_train_config_set_field(mn_train_config *c, int i, const char *value);
/* Field i's value as text for help output: 8, 0.001, on, "runs/default". */
mn_status mn_train_config_field_text(const mn_train_config *c, int i, char *buf, size_t cap);

/* A checkpoint file, or a run directory's latest checkpoint, into out (MN_ERR_IO naming the
 * directory when it holds none). */
mn_status mn_train_resume_path(const char *checkpoint_or_run_dir, char *out, size_t cap);

/* ---------------------------------------------------------------- the data-parallel world */
typedef struct mn_dist mn_dist;

/* 1 when an MPI launcher started this process (its environment says so). */
int mn_dist_launched(void);
/* Opens the world: MPI_Init when mn_dist_launched() and the build has MPI, else one rank. A
 * launched process in a build without MPI fails (it would train alone, silently). MPI is
 * process-wide: a program opens one world, early in main(). */
mn_status mn_dist_open(int *argc, char ***argv, mn_dist **out);
/* MPI_Finalize (when MPI was opened) and free. */
void mn_dist_close(mn_dist *d);
/* Ends every rank of the job with code (MPI_Abort); for a program's main path, never called
 * by the library. Without MPI: no-op. */
void mn_dist_abort(mn_dist *d, int code);
int mn_dist_rank(const mn_dist *d); /* NULL: 0 */
int mn_dist_size(const mn_dist *d); /* NULL: 1 */

/* ---------------------------------------------------------------- the loop */
struct mn_backend;
typedef struct {
    const char *resume;           /* checkpoint file to continue from (mn_train_resume_path), or NULL */
    const char *base;             /* checkpoint whose parameters initialise the model, or NULL */
    volatile sig_atomic_t *stop;  /* nonzero: stop after the step in flight, with a checkpoint; NULL: never */
    mn_dist *dist;                /* the ranks of a data-parallel run; NULL: one process */
    /* tests only (mnemo-test-hooks): a backend table (src/model/backend.h) standing in for the
     * device, whatever config.device says; NULL: the device config.device resolves to */
    const struct mn_backend *device_standin;
} mn_train_options;

/* How a run ended; the values are `mnemo train`'s exit codes. */
typedef enum {
    MN_TRAIN_DONE = 0,        /* all steps, or the time limit: final checkpoint written */
    MN_TRAIN_FAILED = 1,      /* setup failed, a step failed, or the final checkpoint could not be written */
    MN_TRAIN_USAGE = 2,       /* the config cannot run here (batch over ranks, curriculum, ranks disagree) */
    MN_TRAIN_INTERRUPTED = 3, /* *stop: the step finished and a checkpoint was written */
    MN_TRAIN_NONFINITE = 4,   /* max_nan_steps non-finite steps in a row */
} mn_train_outcome;

/* Once, after setup, before the baseline evaluation. */
typedef struct {
    size_t n_params;
    int world;                   /* ranks */
    const char *dist_backend;    /* "mpi" or "none" */
    int local_batch, micro_batch;/* episodes per rank and step, per micro-batch */
    int64_t resharded_from;      /* > 0: the resumed checkpoint was trained on this other number of ranks */
    int resumed;                 /* continuing opts->resume from: */
    uint64_t step, tokens_seen;
    int64_t stage;
    int64_t valid_probes;        /* text probes each evaluation scores; -1: no probe file */
} mn_train_start;

/* After every step. */
typedef struct {
    uint64_t step;               /* steps done, this one included */
    int64_t steps;               /* the config's total */
    float loss, grad_norm;       /* NaN when skipped */
    double lr;
    int turns, stage;
    int64_t tokens;              /* tokens of the global batch */
    double tokens_per_s;
    double comm_s, comm_share;   /* seconds in collectives, and their share of the step (world > 1) */
    double recon_loss;           /* reconstruction loss; NaN when off or skipped */
    double eta_s;                /* to the last step at this run's pace; < 0: unknown */
    int skipped;                 /* a non-finite loss or gradient: nothing changed */
    const char *skip_reason;     /* why (skipped only), else NULL */
    int64_t nan_streak, nan_skipped;
} mn_train_step_info;

/* Evaluation buckets: distance in turns from the (last) evidence to the question, as `mnemo
 * eval` buckets them (powers of two, then probes without evidence). */
#define MN_TRAIN_EVAL_BUCKETS 11
typedef struct {
    char distance[16];           /* "1", "2-3", "4-7", ..., "512+", or "none" */
    int64_t n, correct, correct_reset;
} mn_train_eval_bucket;

/* At step 0 (fresh runs), every eval_interval steps and at the end. */
typedef struct {
    uint64_t step;
    int64_t valid_batches;       /* 0: no validation loss */
    double valid_loss;
    int64_t probes;              /* multiple-choice probes scored (0: none) */
    int64_t correct, correct_reset; /* with memory, and with R reset to R_0 */
    int n_buckets;               /* the non-empty buckets, by distance */
    mn_train_eval_bucket buckets[MN_TRAIN_EVAL_BUCKETS];
    double seconds;
} mn_train_eval_info;

/* After each checkpoint write (rank 0, which writes). A failed periodic write leaves training
 * going (the next attempt comes one interval later); a failed final one ends the run. */
typedef struct {
    uint64_t step;
    const char *path;
    int ok;
    const char *error;           /* why it failed, else NULL */
    int final;                   /* the run's last: end, time limit or stop */
} mn_train_checkpoint_info;

/* When the run ends by DONE or INTERRUPTED. */
typedef struct {
    uint64_t step, tokens_seen;
    int64_t nan_skipped;
    double seconds;              /* of training in this run */
    const char *last_checkpoint; /* "" when this run wrote none */
    int time_limit;              /* stopped by time_limit_s before `steps` */
    int stopped_at_step;         /* stopped by stop_at_step before `steps` */
    int interrupted;             /* stopped by a stop flag (this rank's or another's) */
    double tokens_per_s;         /* over this run's steps */
    double comm_share;           /* collectives' share of step time (world > 1) */
} mn_train_summary;

/* Every member may be NULL. Called on the calling thread, on every rank unless said otherwise. */
typedef struct {
    void *ctx;
    void (*start)(void *ctx, const mn_train_start *info);
    void (*step)(void *ctx, const mn_train_step_info *info);
    void (*eval)(void *ctx, const mn_train_eval_info *info);
    void (*checkpoint)(void *ctx, const mn_train_checkpoint_info *info); /* rank 0 */
    /* a one-line warning or notice (stale temp files removed, device fallback, pruning failed);
     * notices about the whole job come from rank 0 only */
    void (*notice)(void *ctx, const char *text);
    void (*done)(void *ctx, const mn_train_summary *info);
    /* Observation and fault injection (tests use them): each micro-batch this rank trains,
     * first_episode its index in the global batch; */
    void (*micro_batch)(void *ctx, uint64_t step, int first_episode, const mn_batch *batch);
    /* this rank's gradient of step (n floats, summed over its micro-batches) before the ranks'
     * reduction, which the callee may change; */
    void (*gradients)(void *ctx, uint64_t step, float *grads, size_t n);
    /* before each dataset of the checkpoint write of step: nonzero makes the write fail as an
     * I/O error would (mn_checkpoint_fault_fn). */
    int (*checkpoint_fault)(void *ctx, uint64_t step, const char *dataset);
} mn_train_callbacks;

/* Trains with a validated config. *outcome says how the run ended; MN_OK for DONE and
 * INTERRUPTED, else the failure (mn_last_error()). cb may be NULL. Every rank of a
 * data-parallel run calls it with the same config. */
mn_status mn_train_run(const mn_train_config *cfg, const mn_train_options *opts, const mn_train_callbacks *cb,
                       mn_train_outcome *outcome);

#ifdef __cplusplus
}
#endif
#endif
