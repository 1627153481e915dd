/* Learning-rate schedule (linear warmup, cosine decay to a floor) and the episode-length
 * curriculum of the training loop. */
#ifndef MN_SCHEDULE_H
#define MN_SCHEDULE_H

#include <stdint.h>

#include "mnemo.h"

typedef struct {
    double lr;             /* peak */
    double min_lr;         /* floor reached at total_steps */
    int64_t warmup_steps;  /* linear ramp over the first warmup_steps steps */
    int64_t total_steps;
} mn_lr_schedule;

/* lr of 0-based step s: lr * (s + 1) / warmup during warmup; then
 * min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2 with p = (s - warmup) / (total - warmup);
 * min_lr from total_steps on. */
double mn_lr_at(const mn_lr_schedule *schedule, int64_t step);

#define MN_CURRICULUM_MAX 32
typedef struct {
    int64_t start_step[MN_CURRICULUM_MAX]; /* stage i runs from start_step[i]; start_step[0] = 0 */
    int turns[MN_CURRICULUM_MAX];          /* episode length of stage i, non-decreasing */
    int n;
} mn_curriculum;

/* Stages of start_turns, 2 start_turns, 4 start_turns, ... turns and finally T, each lasting
 * stage_steps steps; stage_steps = 0 (or start_turns >= T) gives one stage of T turns. */
mn_status mn_curriculum_doubling(int start_turns, int T, int64_t stage_steps, mn_curriculum *out);
/* Checks start_step[0] = 0, strictly increasing starts, 1 <= turns non-decreasing <= T. */
mn_status mn_curriculum_validate(const mn_curriculum *c, int T);
/* Index of the stage that step s (0-based) belongs to. */
int mn_curriculum_stage_at(const mn_curriculum *c, int64_t step);

#endif
