/* The command line's shared rules, through the mnemo binary ($MNEMO_BIN): option values are
 * parsed whole and range-checked, and a refusal exits 2 naming the option and what it
 * accepts; --device and --matmul are checked the same way in every command; unknown options
 * and missing values are refused. (mnemo eval's own cases are in test_eval.c.) */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static char out_path[64], err_path[64];

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = calloc((size_t)n + 1, 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n)
        s[0] = '\0';
    fclose(f);
    return s;
}

/* Runs mnemo with the NULL-terminated arguments, stdout and stderr into files; fails unless
 * it exits want_rc and its stderr holds want_err (NULL: anything). */
static void expect(int want_rc, const char *want_err, ...) {
    const char *argv[32];
    int n = 0;
    argv[n++] = getenv("MNEMO_BIN");
    va_list ap;
    va_start(ap, want_err);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 31)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY), o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(in, 0), dup2(o, 1), dup2(e, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    char *err = slurp(err_path);
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (rc != want_rc || (want_err && !strstr(err, want_err)))
        fail_msg("mnemo %s %s: exit %d (want %d), stderr:\n%s(want '%s')", argv[1], n > 2 ? argv[2] : "", rc, want_rc,
                 err, want_err ? want_err : "");
    free(err);
}

static void test_integers(void **state) {
    (void)state;
    expect(2, "mnemo bench: --batch wants an integer in 1..1048576, got 'abc'", "bench", "--batch", "abc", NULL);
    expect(2, "mnemo bench: --threads wants an integer in 1..4096, got '0'", "bench", "--threads", "0", NULL);
    expect(2, "--steps wants an integer", "bench", "--steps", "5x", NULL);
    expect(2, "--steps wants an integer", "bench", "--steps", " 5", NULL);
    expect(2, "--steps wants an integer", "bench", "--steps", "", NULL);
    expect(2, "mnemo bench-ops: --reps wants an integer in 1..1048576, got '0'", "bench-ops", "--reps", "0", NULL);
    expect(2, "mnemo bench-update: --sessions wants an integer in 1..16777216, got '-5'", "bench-update", "--sessions",
           "-5", NULL);
    expect(2, "mnemo chat: --top-k wants an integer in 0..2147483647, got '1.5'", "chat", "--top-k", "1.5", NULL);
    expect(2, "mnemo chat: --seed wants an integer in 0..9223372036854775807, got '-1'", "chat", "--seed", "-1", NULL);
    expect(2, "mnemo chat: --max-tokens wants an integer in 1..1048576, got '99999999999999999999'", "chat",
           "--max-tokens", "99999999999999999999", NULL);
    expect(2, "mnemo sessions: --count wants an integer in 1..100000000, got '0'", "sessions", "--count", "0",
           "--store", "x.h5", "list", NULL);
    expect(2, "mnemo import-gpt2: --slots wants an integer in 1..4096, got '4097'", "import-gpt2", "--slots", "4097",
           NULL);
    expect(2, "mnemo tokenizer: --vocab-size wants an integer in 262..", "tokenizer", "--vocab-size", "10", NULL);
    expect(2, "mnemo shard: --max-turn-tokens wants an integer in 8..1000000, got '7'", "shard", "--max-turn-tokens",
           "7", NULL);
    expect(2, "mnemo prepare: --max-turn-chars wants an integer in 1..2147483647, got '12abc'", "prepare",
           "--max-turn-chars", "12abc", NULL);
    expect(2, "mnemo episodes: --seed wants an integer in 0..9223372036854775807, got '1e3'", "episodes", "--seed",
           "1e3", NULL);
}

static void test_numbers(void **state) {
    (void)state;
    expect(2, "mnemo chat: --temperature wants a number in [0, 100], got 'abc'", "chat", "--temperature", "abc", NULL);
    expect(2, "mnemo chat: --temperature wants a number in [0, 100], got 'nan'", "chat", "--temperature", "nan", NULL);
    expect(2, "mnemo chat: --temperature wants a number in [0, 100], got 'inf'", "chat", "--temperature", "inf", NULL);
    expect(2, "mnemo chat: --top-p wants a number in [1e-06, 1], got '0'", "chat", "--top-p", "0", NULL);
    expect(2, "mnemo episodes: --updates wants a number in [0, 1], got '1.5'", "episodes", "--updates", "1.5", NULL);
}

static void test_device_matmul_and_options(void **state) {
    (void)state;
    expect(2, "mnemo bench: --matmul wants fp32, tf32 or bf16, got 'fp64'", "bench", "--matmul", "fp64", NULL);
    expect(2, "mnemo bench-update: --matmul wants fp32, tf32 or bf16, got 'int8'", "bench-update", "--matmul", "int8",
           NULL);
    expect(2, "mnemo bench-ops: unknown device 'gpu' (expected cpu, cuda or auto)", "bench-ops", "--device", "gpu",
           NULL);
    expect(2, "mnemo bench: unknown device 'tpu'", "bench", "--device", "tpu", NULL);
    expect(2, "mnemo bench: --preset wants demo or gpt2-small, got 'huge'", "bench", "--preset", "huge", NULL);
    expect(2, "mnemo bench: unknown option '--bogus'", "bench", "--bogus", NULL);
    expect(2, "mnemo bench: unexpected argument 'extra'", "bench", "extra", NULL);
    expect(2, "mnemo chat: --top-k needs a value", "chat", "--top-k", NULL);
    expect(2, "mnemo shard: unknown option '--bogus'", "shard", "--bogus", NULL);
    /* and a run that passes the checks does its work */
    expect(0, NULL, "bench-ops", "--device", "cpu", "--batch", "1", "--turn-tokens", "2", "--slots", "1", "--width",
           "8", "--heads", "2", "--vocab", "8", "--reps", "1", NULL);
    char *out = slurp(out_path);
    assert_non_null(strstr(out, "shapes: batch 1, 1 slots + 2 tokens = 3 positions (N = 3), C 8, H 2, V 8; 1 reps"));
    assert_non_null(strstr(out, "sum of squares (4 N C)"));
    free(out);
}

static int setup(void **state) {
    (void)state;
    snprintf(out_path, sizeof out_path, "/tmp/mnemo-cli-out-%d", (int)getpid());
    snprintf(err_path, sizeof err_path, "/tmp/mnemo-cli-err-%d", (int)getpid());
    return getenv("MNEMO_BIN") ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    unlink(out_path);
    unlink(err_path);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_device_matmul_and_options),
    };
    return cmocka_run_group_tests_name("cli", tests, setup, teardown);
}
