/* Test hooks of `mnemo train`, built only into mnemo-test-hooks (meson option test_hooks,
 * -DMN_TEST_HOOKS; never installed): fault injection options and the MNEMO_EPISODE_LOG
 * episode log, on the trainer library's observation callbacks (include/mnemo_train.h). */
#ifndef MN_TEST_HOOKS_H
#define MN_TEST_HOOKS_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "mnemo_train.h"

typedef struct {
    int64_t *nan_steps;        /* --fault-nan-steps: these steps' gradients get a NaN */
    int n_nan_steps;
    int64_t *checkpoint_steps; /* --fault-checkpoint-steps: their checkpoint writes fail midway */
    int n_checkpoint_steps;
    int checkpoint_sleep_ms;   /* --fault-checkpoint-sleep-ms: a slow disk, per dataset */
    FILE *episode_log;         /* MNEMO_EPISODE_LOG=PREFIX: PREFIX.<rank> */
    uint64_t failing_step;     /* the checkpoint write being failed, and ... */
    int datasets_left;         /* ... the datasets it still writes */
} train_hooks;

#define TRAIN_HOOKS_N_OPTIONS 3
/* The hooks' long options at opts[0, TRAIN_HOOKS_N_OPTIONS), ids first_id + i. */
void train_hooks_options(struct option *opts, int first_id);
/* Option i's value; prints the problem and returns nonzero when it is bad. */
int train_hooks_set_option(train_hooks *h, int i, const char *value);
/* The options' lines for --help. */
const char *train_hooks_help(void);
/* Opens the episode log of this rank when MNEMO_EPISODE_LOG asks for one; nonzero (printed) on failure. */
int train_hooks_open(train_hooks *h, int rank);
void train_hooks_close(train_hooks *h);

/* The callbacks (mn_train_callbacks' micro_batch, gradients and checkpoint_fault). */
void train_hooks_micro_batch(train_hooks *h, uint64_t step, int first_episode, const mn_batch *b);
void train_hooks_gradients(train_hooks *h, uint64_t step, float *grads, size_t n);
int train_hooks_checkpoint_fault(train_hooks *h, uint64_t step, const char *dataset);

#endif
