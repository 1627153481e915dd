/* The training loop behind `mnemo train` (docs/training.md). */
#ifndef MN_TRAIN_LOOP_H
#define MN_TRAIN_LOOP_H

#include <signal.h>
#include <stdint.h>

#include "dist.h"
#include "train_config.h"

/* Exit codes of `mnemo train`. */
enum {
    TRAIN_EXIT_OK = 0,
    TRAIN_EXIT_FAILED = 1,      /* setup failed, or the final checkpoint could not be written */
    TRAIN_EXIT_USAGE = 2,
    TRAIN_EXIT_INTERRUPTED = 3, /* SIGINT / SIGTERM: the step finished and a checkpoint was written */
    TRAIN_EXIT_NONFINITE = 4,   /* max_nan_steps non-finite steps in a row */
};

typedef struct {
    const char *resume;               /* checkpoint to continue from (a file), or NULL */
    const char *base;                 /* checkpoint whose params initialise the model, or NULL */
    volatile sig_atomic_t *stop;      /* the CLI's signal flag: nonzero = stop after this step */
    dist *dist;                       /* the ranks of a data-parallel run; NULL: one process */
    const char *episode_log;          /* testing: append "step episode hash" per trained episode to
                                         <episode_log>.<rank>; NULL: none */
    /* fault injection for tests: 1-based step numbers */
    const int64_t *fault_nan_steps;   /* these steps' gradients get a NaN (as an overflow would) */
    int n_fault_nan_steps;
    const int64_t *fault_checkpoint_steps; /* checkpoints written at these steps fail mid-write */
    int n_fault_checkpoint_steps;
    int fault_checkpoint_sleep_ms;    /* every checkpoint write pauses this long per dataset */
} train_run_options;

/* Runs training with an already validated config. Returns a TRAIN_EXIT_* code; messages go to
 * stdout (progress) and stderr (warnings, errors). */
int train_run(const train_config *cfg, const train_run_options *opts);

#endif
