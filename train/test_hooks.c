/* Test hooks of `mnemo train` (train/test_hooks.h): compiled only into mnemo-test-hooks. */
#include "test_hooks.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* "3,4,10" -> a malloc'd list of step numbers >= 1 */
static int parse_steps(const char *spec, int64_t **out, int *n) {
    size_t count = 1;
    for (const char *p = spec; *p; p++)
        count += *p == ',';
    int64_t *list = malloc(count * sizeof *list);
    if (!list)
        return 1;
    const char *p = spec;
    for (size_t i = 0; i < count; i++) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 1 || (*end && *end != ',')) {
            free(list);
            return 1;
        }
        list[i] = v;
        p = *end ? end + 1 : end;
    }
    free(*out);
    *out = list;
    *n = (int)count;
    return 0;
}

static int in_list(const int64_t *list, int n, uint64_t v) {
    for (int i = 0; i < n; i++)
        if ((uint64_t)list[i] == v)
            return 1;
    return 0;
}

void train_hooks_options(struct option *opts, int first_id) {
    static const char *const names[TRAIN_HOOKS_N_OPTIONS] = {"fault-nan-steps", "fault-checkpoint-steps",
                                                             "fault-checkpoint-sleep-ms"};
    for (int i = 0; i < TRAIN_HOOKS_N_OPTIONS; i++)
        opts[i] = (struct option){names[i], required_argument, 0, first_id + i};
}

const char *train_hooks_help(void) {
    return "  --fault-nan-steps LIST    testing: put a NaN into these steps' gradients (e.g. 3,4)\n"
           "  --fault-checkpoint-steps LIST  testing: checkpoint writes at these steps fail midway\n"
           "  --fault-checkpoint-sleep-ms MS testing: checkpoint writes pause MS per dataset (a slow disk)\n"
           "  MNEMO_EPISODE_LOG=PREFIX  testing: append \"step episode hash\" per trained episode to PREFIX.<rank>\n";
}

int train_hooks_set_option(train_hooks *h, int i, const char *value) {
    if (i == 0 && parse_steps(value, &h->nan_steps, &h->n_nan_steps)) {
        fprintf(stderr, "mnemo train: --fault-nan-steps wants step numbers >= 1 like 3,4\n");
        return 1;
    }
    if (i == 1 && parse_steps(value, &h->checkpoint_steps, &h->n_checkpoint_steps)) {
        fprintf(stderr, "mnemo train: --fault-checkpoint-steps wants step numbers >= 1 like 5,10\n");
        return 1;
    }
    if (i == 2) {
        char *end;
        errno = 0;
        long ms = strtol(value, &end, 10);
        if (end == value || *end || errno || ms < 0 || ms > 60000) {
            fprintf(stderr, "mnemo train: --fault-checkpoint-sleep-ms wants 0..60000\n");
            return 1;
        }
        h->checkpoint_sleep_ms = (int)ms;
    }
    return 0;
}

int train_hooks_open(train_hooks *h, int rank) {
    const char *prefix = getenv("MNEMO_EPISODE_LOG");
    if (!prefix || !*prefix)
        return 0;
    char path[1200];
    snprintf(path, sizeof path, "%s.%d", prefix, rank);
    if (!(h->episode_log = fopen(path, "a"))) {
        fprintf(stderr, "mnemo train: cannot open the episode log %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

void train_hooks_close(train_hooks *h) {
    if (h->episode_log)
        fclose(h->episode_log);
    free(h->nan_steps);
    free(h->checkpoint_steps);
    memset(h, 0, sizeof *h);
}

/* One line per trained episode: the step, its index in the global batch and a hash of its
 * tokens, so that a test can prove every rank took its own slice. */
void train_hooks_micro_batch(train_hooks *h, uint64_t step, int first_episode, const mn_batch *b) {
    for (int e = 0; h->episode_log && e < b->B; e++) {
        uint64_t hash = 1469598103934665603ull; /* FNV-1a */
        for (int t = 0; t < b->T; t++) {
            int len = b->lengths[t * b->B + e];
            const int32_t *tok = b->tokens + ((size_t)t * b->B + e) * b->max_len;
            for (int i = -1; i < len; i++) {
                uint32_t v = i < 0 ? (uint32_t)len : (uint32_t)tok[i];
                for (int k = 0; k < 4; k++) {
                    hash ^= (v >> (8 * k)) & 0xff;
                    hash *= 1099511628211ull;
                }
            }
        }
        fprintf(h->episode_log, "%" PRIu64 " %d %016" PRIx64 "\n", step, first_episode + e, hash);
    }
}

/* As if the backward had overflowed. */
void train_hooks_gradients(train_hooks *h, uint64_t step, float *grads, size_t n) {
    if (n && in_list(h->nan_steps, h->n_nan_steps, step))
        grads[0] = NAN;
}

/* A failing write stops after a few datasets ("the disk is full"); a slow one pauses on each. */
int train_hooks_checkpoint_fault(train_hooks *h, uint64_t step, const char *dataset) {
    (void)dataset;
    if (in_list(h->checkpoint_steps, h->n_checkpoint_steps, step)) {
        if (h->failing_step != step) {
            h->failing_step = step;
            h->datasets_left = 3;
        }
        return h->datasets_left-- <= 0;
    }
    if (h->checkpoint_sleep_ms > 0) {
        struct timespec ts = {h->checkpoint_sleep_ms / 1000, (long)(h->checkpoint_sleep_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}
