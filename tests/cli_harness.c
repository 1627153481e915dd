#include "cli_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int hooks_on;

int have_hooks_bin(void) {
    const char *b = getenv("MNEMO_HOOKS_BIN");
    return b && *b;
}

void use_hooks_bin(int on) {
    if (on && !have_hooks_bin()) {
        print_message("no mnemo-test-hooks in this build (meson -Dtest_hooks=true builds it): skipped\n");
        skip();
    }
    hooks_on = on;
}

const char *mnemo_bin(void) {
    const char *b = getenv(hooks_on ? "MNEMO_HOOKS_BIN" : "MNEMO_BIN");
    return b && *b ? b : "train/mnemo";
}

char work_dir[256];

int make_work_dir(const char *prefix) {
    snprintf(work_dir, sizeof work_dir, "/tmp/%s-XXXXXX", prefix);
    return mkdtemp(work_dir) ? 0 : -1;
}

int rm_work_dir(void) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", work_dir);
    return system(cmd) == 0 ? 0 : -1;
}

const char *wpath(const char *name) {
    static char bufs[16][600];
    static int next;
    char *b = bufs[next++ % 16];
    snprintf(b, 600, "%s/%s", work_dir, name);
    return b;
}

char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return strdup("");
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    for (;;) {
        n += fread(s + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        cap *= 2;
        s = realloc(s, cap);
    }
    s[n] = '\0';
    fclose(f);
    return s;
}

char *log_text(const char *log, const char *ext) {
    char p[700];
    snprintf(p, sizeof p, "%s.%s", wpath(log), ext);
    return slurp(p);
}

void log_has(const char *log, const char *ext, const char *needle) {
    char *text = log_text(log, ext);
    if (!strstr(text, needle))
        fail_msg("%s.%s does not mention '%s':\n%s", log, ext, needle, text);
    free(text);
}

pid_t spawn_logged(const char *log, const char *const *pre, const char *const *args, int own_group) {
    const char *argv[160];
    int n = 0;
    for (int i = 0; pre && pre[i]; i++)
        argv[n++] = pre[i];
    argv[n++] = mnemo_bin();
    for (int i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char out[700], err[700];
    snprintf(out, sizeof out, "%s.out", wpath(log));
    snprintf(err, sizeof err, "%s.err", wpath(log));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (own_group)
            setpgid(0, 0);
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fo < 0 || fe < 0)
            _exit(126);
        dup2(fo, 1);
        dup2(fe, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (own_group)
        setpgid(pid, pid); /* also from here: no race with a kill of the group right after */
    return pid;
}

int wait_exit(pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) != pid)
        fail_msg("waitpid: %s", strerror(errno));
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

void check_exit(int rc, int want, const char *who, const char *log, const char *const *args) {
    if (rc != want) {
        char *out = log_text(log, "out"), *err = log_text(log, "err");
        fail_msg("%smnemo %s ... exited %d, expected %d\n--- stdout (tail)\n%s\n--- stderr\n%s", who, args[0], rc, want,
                 strlen(out) > 3000 ? out + strlen(out) - 3000 : out, err);
    }
}

void wait_for_step(pid_t pid, const char *run_dir, int step) {
    char path[700], needle[64];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    snprintf(needle, sizeof needle, "{\"step\": %d,", step);
    for (int i = 0; i < 6000; i++) {
        char *text = slurp(path);
        int found = strstr(text, needle) != NULL;
        free(text);
        if (found)
            return;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            fail_msg("the job exited before step %d", step);
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    fail_msg("step %d never showed up in %s", step, path);
}

void make_text_data(int (*draw)(void *ctx, int n), void *ctx,
                    void (*run_ok)(const char *log, const char *const *args)) {
    static const char *words[] = {"red",  "green", "blue", "cat",   "dog",  "fish", "likes", "eats",
                                  "rice", "soup",  "tea",  "bread", "the",  "a",    "today", "again"};
    static const char *foods[] = {"rice", "soup", "tea", "bread"};
    for (int split = 0; split < 2; split++) {
        FILE *f = fopen(wpath(split ? "valid.jsonl" : "train.jsonl"), "w");
        for (int d = 0; d < (split ? 6 : 12); d++) {
            int turns = 8 + draw(ctx, 5), food = draw(ctx, 4);
            fprintf(f, "{\"id\": \"d%d\", \"turns\": [", d);
            for (int t = 0; t < turns; t++) {
                fprintf(f, "%s{\"speaker\": \"%s\", \"text\": \"", t ? ", " : "", t % 2 ? "B" : "A");
                if (t == 1)
                    fprintf(f, "my cat eats %s", foods[food]);
                else
                    for (int w = 0, n = 2 + draw(ctx, 5); w < n; w++)
                        fprintf(f, "%s%s", w ? " " : "", words[draw(ctx, 16)]);
                fprintf(f, "\"}");
            }
            fprintf(f, "], \"probes\": [{\"after\": %d, \"speaker\": \"A\", \"question\": \"what does your cat eat\", "
                       "\"answer\": \"%s\", \"choices\": [\"rice\", \"soup\", \"tea\", \"bread\"], \"evidence\": [1]}]}\n",
                    turns - 1, foods[food]);
        }
        fclose(f);
    }
    const char *tok[] = {"tokenizer", "--train", "--jsonl", wpath("train.jsonl"), "--vocab-size", "300", "-o",
                         wpath("tok.h5"), NULL};
    run_ok("tok", tok);
    const char *tr[] = {"shard", "--tokenizer", wpath("tok.h5"), "--jsonl", wpath("train.jsonl"), "-o",
                        wpath("train.shard"), "--max-turn-tokens", "16", NULL};
    run_ok("shard_train", tr);
    const char *va[] = {"shard", "--tokenizer", wpath("tok.h5"), "--jsonl", wpath("valid.jsonl"), "-o",
                        wpath("valid.shard"), "--max-turn-tokens", "16", NULL};
    run_ok("shard_valid", va);
}

loaded load_ckpt(const char *path) {
    loaded l;
    memset(&l, 0, sizeof l);
    mn_config c;
    OK(mn_checkpoint_read_config(path, &c));
    OK(mn_model_create(&c, &l.model));
    OK(mn_trainer_create(l.model, 1, 1, &l.trainer));
    OK(mn_checkpoint_load(path, l.model, l.trainer, &l.state, NULL));
    return l;
}

void free_loaded(loaded *l) {
    mn_trainer_free(l->trainer);
    mn_model_free(l->model);
}

void assert_same_training(const char *a_path, const char *b_path) {
    loaded a = load_ckpt(a_path), b = load_ckpt(b_path);
    size_t P = mn_model_num_params(a.model);
    assert_int_equal(P, mn_model_num_params(b.model));
    if (memcmp(mn_model_params(a.model), mn_model_params(b.model), P * sizeof(float)))
        fail_msg("parameters of %s and %s differ", a_path, b_path);
    if (memcmp(mn_trainer_adam_m(a.trainer), mn_trainer_adam_m(b.trainer), P * sizeof(float)) ||
        memcmp(mn_trainer_adam_v(a.trainer), mn_trainer_adam_v(b.trainer), P * sizeof(float)))
        fail_msg("AdamW moments of %s and %s differ", a_path, b_path);
    assert_int_equal(mn_trainer_step(a.trainer), mn_trainer_step(b.trainer));
    assert_memory_equal(&a.state, &b.state, sizeof a.state);
    free_loaded(&a);
    free_loaded(&b);
}
