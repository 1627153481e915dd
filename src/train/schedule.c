#include "train/schedule.h"

#include <math.h>

#include "core/error.h"

double mn_lr_at(const mn_lr_schedule *s, int64_t step) {
    if (step < s->warmup_steps)
        return s->lr * (double)(step + 1) / (double)s->warmup_steps;
    if (step >= s->total_steps || s->total_steps <= s->warmup_steps)
        return s->min_lr;
    double p = (double)(step - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
    return s->min_lr + (s->lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * p));
}

mn_status mn_curriculum_validate(const mn_curriculum *c, int T) {
    if (!c || c->n < 1 || c->n > MN_CURRICULUM_MAX)
        return mn_fail(MN_ERR_CONFIG, "curriculum: needs 1..%d stages", MN_CURRICULUM_MAX);
    if (c->start_step[0] != 0)
        return mn_fail(MN_ERR_CONFIG, "curriculum: the first stage must start at step 0 (starts at %lld)",
                       (long long)c->start_step[0]);
    for (int i = 0; i < c->n; i++) {
        if (c->turns[i] < 1 || c->turns[i] > T)
            return mn_fail(MN_ERR_CONFIG, "curriculum: stage %d has %d turns; must be in 1..turns = %d", i,
                           c->turns[i], T);
        if (i > 0 && c->start_step[i] <= c->start_step[i - 1])
            return mn_fail(MN_ERR_CONFIG, "curriculum: stage %d starts at step %lld, not after stage %d (%lld)", i,
                           (long long)c->start_step[i], i - 1, (long long)c->start_step[i - 1]);
        if (i > 0 && c->turns[i] < c->turns[i - 1])
            return mn_fail(MN_ERR_CONFIG, "curriculum: stage %d has fewer turns (%d) than stage %d (%d)", i,
                           c->turns[i], i - 1, c->turns[i - 1]);
    }
    return MN_OK;
}

mn_status mn_curriculum_doubling(int start_turns, int T, int64_t stage_steps, mn_curriculum *out) {
    if (!out || T < 1 || start_turns < 1 || stage_steps < 0)
        return mn_fail(MN_ERR_CONFIG, "curriculum: need turns >= 1, start turns >= 1 and stage steps >= 0");
    out->n = 0;
    if (stage_steps == 0 || start_turns >= T) {
        out->start_step[0] = 0;
        out->turns[0] = T;
        out->n = 1;
        return MN_OK;
    }
    for (int64_t turns = start_turns; out->n < MN_CURRICULUM_MAX; turns *= 2) {
        out->start_step[out->n] = out->n * stage_steps;
        out->turns[out->n] = turns < T ? (int)turns : T;
        out->n++;
        if (turns >= T)
            break;
    }
    return mn_curriculum_validate(out, T);
}

int mn_curriculum_stage_at(const mn_curriculum *c, int64_t step) {
    int stage = 0;
    for (int i = 1; i < c->n; i++)
        if (step >= c->start_step[i])
            stage = i;
    return stage;
}
