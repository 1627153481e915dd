/* The training configuration of `mnemo train`: one table of fields drives the JSON config
 * file, the long options (field name with '-' for '_'), printing, and the JSON stored in
 * checkpoints (docs/training.md). */
#ifndef MN_TRAIN_CONFIG_H
#define MN_TRAIN_CONFIG_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "mnemo.h"

#define TRAIN_PATH_CAP 1024

typedef struct {
    mn_config model;
    /* data */
    char task[16];                       /* "shards" or "recall" */
    char train_data[TRAIN_PATH_CAP];     /* token shard (task shards) */
    char valid_data[TRAIN_PATH_CAP];     /* token shard for validation loss */
    char valid_probes[TRAIN_PATH_CAP];   /* canonical JSONL with probes: multiple-choice accuracy */
    char tokenizer[TRAIN_PATH_CAP];      /* tokenizer file (task shards); taken from --resume/--base if empty */
    /* batches */
    int batch, turns, bptt;              /* batch: the global batch, over every rank */
    int grad_accum;                      /* micro-batches per rank and step, summed in order */
    char curriculum[256];                /* "step:turns,..." explicit stages, or "" */
    int curriculum_start_turns;          /* doubling stages from this many turns ... */
    int64_t curriculum_stage_steps;      /* ... each this long (0: always `turns`) */
    /* optimisation */
    double lr, min_lr;
    int64_t warmup_steps;
    double beta1, beta2, eps, weight_decay, grad_clip;
    double answer_weight, text_weight;
    double reconstruct_weight;           /* > 0: decode each turn again from R_t (mn_trainer_set_reconstruction) */
    int64_t steps;
    int64_t time_limit_s;                /* stop (checkpoint, exit 0) after this much training; 0: none */
    int64_t seed;
    int max_nan_steps;                   /* abort after this many non-finite steps in a row */
    int freeze_decoder;
    /* evaluation, logging, checkpoints */
    int64_t eval_interval, eval_batches, eval_probes;
    int64_t log_interval, checkpoint_interval;
    int keep_checkpoints;
    char run_dir[TRAIN_PATH_CAP];
    int threads;
    char device[16];
    /* data parallel (mpirun; docs/distributed.md) */
    int zero;                            /* 1: ZeRO-1, optimizer update and moments sharded */
    double comm_timeout;                 /* seconds a rank waits for the others (0: forever) */
    /* synthetic recall task (task recall) */
    int recall_keys, recall_values, recall_facts, recall_choices;
    int recall_filler_min, recall_filler_max, recall_min_distance;
} train_config;

void train_config_defaults(train_config *c);

/* Overlays a JSON object (file or string) onto c; unknown fields and wrong types are errors
 * naming the field. Messages go to err (prefixed by `where`). Returns 0 on success. */
int train_config_load_file(train_config *c, const char *path, FILE *err);
int train_config_load_string(train_config *c, const char *json, const char *where, FILE *err);

/* Checks every field's range; prints the first problem, naming the field. 0 = valid. */
int train_config_validate(const train_config *c, FILE *err);

/* The effective config as compact (indent 0) or indented JSON; malloc'd. */
char *train_config_to_json(const train_config *c, int indent);

/* Long options of every field, for getopt_long: fills opts (room for train_config_n_options()
 * entries, ids from first_id) and sets one field from its option id; 0 on success. */
int train_config_n_options(void);
void train_config_options(struct option *opts, int first_id);
int train_config_set_option(train_config *c, int id, int first_id, const char *value, FILE *err);
/* "  --name VALUE   help" lines for the usage text. */
void train_config_print_help(FILE *out);

#endif
