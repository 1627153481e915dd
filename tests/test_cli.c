/* The command line's shared rules, through the mnemo binary ($MNEMO_BIN): option values are
 * parsed whole and range-checked, and a refusal exits 2 naming the option and what it
 * accepts; --device and --matmul are checked the same way in every command; unknown options,
 * missing values and stray arguments are refused; the CUDA notice comes only when a device
 * was asked for. (mnemo eval's own cases: test_eval.c.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "cli_harness.h"

/* Runs mnemo args (NULL-terminated) with its output in work_dir/cli.{out,err}; fails unless it
 * exits want_rc with want_err (NULL: anything) on stderr. */
static void expect(int want_rc, const char *want_err, const char *const *args) {
    pid_t pid = spawn_logged("cli", NULL, args, 0);
    int status = 0;
    waitpid(pid, &status, 0);
    check_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), want_rc, "", "cli", args);
    if (want_err)
        log_has("cli", "err", want_err);
}

typedef struct {
    const char *err;       /* what stderr must hold */
    const char *args[8];
} refusal;

/* Each exits 2 with its message. */
static void expect_refused(const refusal *cases, size_t n) {
    for (size_t i = 0; i < n; i++)
        expect(2, cases[i].err, cases[i].args);
}

static void test_integers(void **state) {
    (void)state;
    static const refusal cases[] = {
        {"mnemo bench: --batch wants an integer in 1..1048576, got 'abc'", {"bench", "--batch", "abc"}},
        {"mnemo bench: --threads wants an integer in 1..4096, got '0'", {"bench", "--threads", "0"}},
        {"mnemo bench: --steps wants an integer in 1..1048576, got '5x'", {"bench", "--steps", "5x"}},
        {"mnemo bench: --steps wants an integer in 1..1048576, got ' 5'", {"bench", "--steps", " 5"}},
        {"mnemo bench: --steps wants an integer in 1..1048576, got ''", {"bench", "--steps", ""}},
        {"mnemo bench-ops: --reps wants an integer in 1..1048576, got '0'", {"bench-ops", "--reps", "0"}},
        {"mnemo bench-update: --sessions wants an integer in 1..16777216, got '-5'", {"bench-update", "--sessions", "-5"}},
        {"mnemo chat: --top-k wants an integer in 0..2147483647, got '1.5'", {"chat", "--top-k", "1.5"}},
        {"mnemo chat: --seed wants an integer in 0..9223372036854775807, got '-1'", {"chat", "--seed", "-1"}},
        {"mnemo chat: --max-tokens wants an integer in 1..1048576, got '99999999999999999999'",
         {"chat", "--max-tokens", "99999999999999999999"}},
        {"mnemo sessions: --count wants an integer in 1..100000000, got '0'",
         {"sessions", "--count", "0", "--store", "x.h5", "list"}},
        {"mnemo import-gpt2: --slots wants an integer in 1..4096, got '4097'", {"import-gpt2", "--slots", "4097"}},
        {"mnemo tokenizer: --vocab-size wants an integer in 262..", {"tokenizer", "--vocab-size", "10"}},
        {"mnemo shard: --max-turn-tokens wants an integer in 8..1000000, got '7'", {"shard", "--max-turn-tokens", "7"}},
        {"mnemo prepare: --max-turn-chars wants an integer in 1..2147483647, got '12abc'",
         {"prepare", "--max-turn-chars", "12abc"}},
        {"mnemo episodes: --seed wants an integer in 0..9223372036854775807, got '1e3'", {"episodes", "--seed", "1e3"}},
    };
    expect_refused(cases, sizeof cases / sizeof cases[0]);
}

static void test_numbers(void **state) {
    (void)state;
    static const refusal cases[] = {
        {"mnemo chat: --temperature wants a number in [0, 100], got 'abc'", {"chat", "--temperature", "abc"}},
        {"mnemo chat: --temperature wants a number in [0, 100], got 'nan'", {"chat", "--temperature", "nan"}},
        {"mnemo chat: --temperature wants a number in [0, 100], got 'inf'", {"chat", "--temperature", "inf"}},
        {"mnemo chat: --top-p wants a number in [1e-06, 1], got '0'", {"chat", "--top-p", "0"}},
        {"mnemo episodes: --updates wants a number in [0, 1], got '1.5'", {"episodes", "--updates", "1.5"}},
    };
    expect_refused(cases, sizeof cases / sizeof cases[0]);
}

static void test_device_matmul_and_options(void **state) {
    (void)state;
    static const refusal cases[] = {
        {"mnemo bench: --matmul wants fp32, tf32 or bf16, got 'fp64'", {"bench", "--matmul", "fp64"}},
        {"mnemo bench-update: --matmul wants fp32, tf32 or bf16, got 'int8'", {"bench-update", "--matmul", "int8"}},
        {"mnemo bench-ops: unknown device 'gpu' (expected cpu, cuda or auto)", {"bench-ops", "--device", "gpu"}},
        {"mnemo bench: unknown device 'tpu'", {"bench", "--device", "tpu"}},
        {"mnemo bench: --preset wants demo or gpt2-small, got 'huge'", {"bench", "--preset", "huge"}},
        {"mnemo bench: unknown option '--bogus'", {"bench", "--bogus"}},
        {"mnemo bench: unexpected argument 'extra'", {"bench", "extra"}},
        {"mnemo chat: --top-k needs a value", {"chat", "--top-k"}},
        {"mnemo shard: unknown option '--bogus'", {"shard", "--bogus"}},
        {"mnemo export-hf: needs --checkpoint and -o", {"export-hf", "--checkpoint", "x.h5"}},
        {"mnemo export-hf: unknown option '--bogus'", {"export-hf", "--bogus"}},
        /* a config string is stored as JSON, so it must be UTF-8 (it used to drop out silently) */
        /* a float field's value must stay finite as a float (inf would drop out of the JSON) */
        {"--gate-bias-init wants a finite number, got '1e300'", {"train", "--print-config", "--gate-bias-init", "1e300"}},
        {"--valid-data is not valid UTF-8 text", {"train", "--print-config", "--valid-data", "data/\xff.bin"}},
        {"write_rule \"gated\" is not one of gate, slot, delta", {"train", "--print-config", "--write-rule", "gated"}},
    };
    expect_refused(cases, sizeof cases / sizeof cases[0]);
    /* a checkpoint that is not there: exit 1 with the library's message naming it */
    const char *const missing[] = {"export-hf", "--checkpoint", wpath("missing.h5"), "-o", wpath("hf"), NULL};
    expect(1, "mnemo export-hf: ", missing);
    log_has("cli", "err", "missing.h5");
    /* and a run that passes the checks does its work */
    const char *const rule[] = {"train", "--print-config", "--task", "recall", "--write-rule", "delta", NULL};
    expect(0, NULL, rule);
    log_has("cli", "out", "\"write_rule\": \"delta\"");
    const char *const run[] = {"bench-ops", "--device", "cpu", "--batch", "1", "--turn-tokens", "2", "--slots", "1",
                               "--width", "8", "--heads", "2", "--vocab", "8", "--reps", "1", NULL};
    expect(0, NULL, run);
    log_has("cli", "out", "shapes: batch 1, 1 slots + 2 tokens = 3 positions (N = 3), C 8, H 2, V 8; 1 reps");
    log_has("cli", "out", "sum of squares (4 N C)");
}

/* The CUDA notice ("no usable GPU (...); running on the CPU") only when a device was asked
 * for: a plain run is on the CPU and says nothing about GPUs; --device auto says what it
 * found, whether a GPU answers or not. */
static void test_cuda_notice_only_when_asked(void **state) {
    (void)state;
    const char *const plain[] = {"train", "--task", "recall", "--vocab-size", "40", "--d-model", "16", "--n-heads", "2",
                                 "--n-layers", "1", "--n-comp-layers", "1", "--n-slots", "2", "--max-turn-tokens", "6",
                                 "--recall-keys", "8", "--recall-values", "8", "--recall-filler-max", "2", "--batch", "2",
                                 "--turns", "2", "--bptt", "2", "--steps", "1", "--eval-batches", "1",
                                 "--eval-probes", "4", "--threads", "1", "--run-dir", wpath("plain"), NULL};
    expect(0, NULL, plain);
    char *err = log_text("cli", "err");
    if (strstr(err, "GPU") || strstr(err, "CUDA") || strstr(err, "cuda"))
        fail_msg("a run that asked for no device mentions GPUs:\n%s", err);
    free(err);
    const char *auto_run[64];
    size_t n = 0;
    for (; plain[n]; n++)
        auto_run[n] = plain[n];
    auto_run[n - 1] = wpath("auto");
    auto_run[n++] = "--device";
    auto_run[n++] = "auto";
    auto_run[n] = NULL;
    expect(0, "GPU", auto_run);
}

static int setup(void **state) {
    (void)state;
    return getenv("MNEMO_BIN") ? make_work_dir("mnemo-cli") : -1;
}

static int teardown(void **state) {
    (void)state;
    return rm_work_dir();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_device_matmul_and_options),
        cmocka_unit_test(test_cuda_notice_only_when_asked),
    };
    return cmocka_run_group_tests_name("cli", tests, setup, teardown);
}
