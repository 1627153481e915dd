/* What the tests that drive the real `mnemo` binary (MNEMO_BIN) share: a work directory,
 * paths and child logs in it, spawning with the logs redirected, the tiny recall setup,
 * checkpoint loading and the bit-for-bit comparison of two trainings. One copy, so that
 * test_train.c and test_distributed.c compare checkpoints by the same rule. Include it
 * after <cmocka.h>: OK() and the helpers fail through cmocka. */
#ifndef MN_CLI_HARNESS_H
#define MN_CLI_HARNESS_H

#include <sys/types.h>

#include "io/checkpoint.h"

#define OK(expr)                                                                       \
    do {                                                                               \
        mn_status st_ = (expr);                                                        \
        if (st_ != MN_OK)                                                              \
            fail_msg("%s -> %s: %s", #expr, mn_status_name(st_), mn_last_error());     \
    } while (0)

/* The tiny recall setup of the CLI tests: milliseconds a step. Global batch 4. */
#define TINY_RECALL                                                                                            \
    "train", "--task", "recall", "--vocab-size", "40", "--d-model", "16", "--n-heads", "2", "--n-layers", "1", \
        "--n-comp-layers", "1", "--n-slots", "2", "--max-turn-tokens", "6", "--recall-keys", "8",               \
        "--recall-values", "8", "--recall-filler-max", "2", "--batch", "4", "--turns", "6", "--bptt", "3",      \
        "--curriculum", "0:2,4:4,9:6", "--lr", "0.01", "--warmup-steps", "2", "--eval-interval", "5",          \
        "--eval-batches", "1", "--eval-probes", "10", "--threads", "1", "--device", "cpu", "--log-interval", "1"

double now_s(void);
/* The binary spawn_logged runs: MNEMO_BIN, or MNEMO_HOOKS_BIN after use_hooks_bin(1). */
const char *mnemo_bin(void);
/* on = 1: run the test build's mnemo-test-hooks (fault injection options, MNEMO_EPISODE_LOG)
 * from now on, and skip the calling cmocka test (skip()) when this build has none (meson
 * -Dtest_hooks=false); 0: the shipped mnemo again. */
void use_hooks_bin(int on);
/* MNEMO_HOOKS_BIN is set and not empty. */
int have_hooks_bin(void);

extern char work_dir[256];
/* mkdtemp of /tmp/<prefix>-XXXXXX into work_dir; 0 or -1, as a cmocka setup returns. */
int make_work_dir(const char *prefix);
int rm_work_dir(void);
/* work_dir/name, in one of 16 rotating buffers (several may be live in one call). */
const char *wpath(const char *name);

/* Whole file as a string, "" when missing (read to the end: /proc files report size 0). */
char *slurp(const char *path);
/* The child log work_dir/<log>.<ext> ("out" or "err"). */
char *log_text(const char *log, const char *ext);
void log_has(const char *log, const char *ext, const char *needle);

/* Starts PRE... mnemo ARGS... (both NULL-terminated, pre may be NULL) with stdout/stderr in
 * <log>.out/.err; own_group puts it in a process group of its own, so that a whole mpirun
 * job can be killed at once. */
pid_t spawn_logged(const char *log, const char *const *pre, const char *const *args, int own_group);
/* Waits for pid: its exit code, or 128 + the signal that ended it. */
int wait_exit(pid_t pid);
/* Fails unless rc == want, with "<who>mnemo ARG0 ... exited" and the logs' tails. */
void check_exit(int rc, int want, const char *who, const char *log, const char *const *args);
/* Waits until the run's metrics show step `step`; fails if the child exits first. */
void wait_for_step(pid_t pid, const char *run_dir, int step);

/* A small dialogue corpus with probes (train.jsonl, valid.jsonl), a tokenizer (tok.h5) and
 * token shards (train.shard, valid.shard) in the work directory. draw(ctx, n) gives 0..n-1:
 * each test keeps the stream its expectations were measured with; run_ok(log, args) runs
 * mnemo and fails unless it exits 0. */
void make_text_data(int (*draw)(void *ctx, int n), void *ctx, void (*run_ok)(const char *log, const char *const *args));

/* A tiny model on make_text_data's shards (its vocabulary and turn length); the tests add the
 * batch, curriculum and schedule. */
#define TINY_SHARDS_MODEL                                                                                      \
    "train", "--task", "shards", "--train-data", wpath("train.shard"), "--valid-data", wpath("valid.shard"),   \
        "--valid-probes", wpath("valid.jsonl"), "--tokenizer", wpath("tok.h5"), "--vocab-size", "300",          \
        "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--n-comp-layers", "1", "--n-slots", "2",       \
        "--max-turn-tokens", "16"

typedef struct {
    mn_model *model;
    mn_trainer *trainer;
    mn_train_state state;
} loaded;

loaded load_ckpt(const char *path);
void free_loaded(loaded *l);
/* Parameters, moments, optimizer step and loop state equal bit for bit. */
void assert_same_training(const char *a_path, const char *b_path);

#endif
