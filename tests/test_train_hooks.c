/* `mnemo train`'s fault injection through the test build's mnemo-test-hooks (MNEMO_HOOKS_BIN;
 * meson -Dtest_hooks=true): non-finite steps skipped then aborting, checkpoint write failures,
 * and training on the device's code path with the guarded stand-in in place of a GPU.
 * Skipped (77) in a build without it; the shipped mnemo has none of these options
 * (test_train: test_plain_mnemo_has_no_hooks). */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli_harness.h"
#include "core/rng.h"

static void run_expect(int want, const char *log, const char *const *args) {
    check_exit(wait_exit(spawn_logged(log, NULL, args, 0)), want, "", log, args);
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* "skipped" of step `step`'s record in <run>/metrics.jsonl (the last one): 1, 0, or -1 if absent. */
static int step_skipped(const char *run_dir, int step) {
    char path[700], line[8192];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("no %s", path);
    int skipped = -1;
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        json_t *s = json_object_get(o, "step"), *k = json_object_get(o, "skipped");
        if (json_is_integer(s) && json_integer_value(s) == step && json_is_boolean(k))
            skipped = json_is_true(k);
        json_decref(o);
    }
    fclose(f);
    return skipped;
}

static int setup_work_dir(void **state) {
    (void)state;
    return make_work_dir("mnemo-train-hooks");
}

static int remove_work_dir(void **state) {
    (void)state;
    return rm_work_dir();
}

static void test_nonfinite_steps_skipped_then_abort(void **state) {
    (void)state;
    /* a NaN gradient at step 5 (of 5) leaves everything as after step 4 */
    const char *x[] = {TINY_RECALL, "--min-lr", "0.01", "--warmup-steps", "0", "--steps", "5",
                       "--fault-nan-steps", "5", "--run-dir", wpath("nan_x"), NULL};
    run_expect(0, "nan_x", x);
    log_has("nan_x", "err", "step 5 skipped");
    const char *y[] = {TINY_RECALL, "--min-lr", "0.01", "--warmup-steps", "0", "--steps", "4", "--run-dir",
                       wpath("nan_y"), NULL};
    run_expect(0, "nan_y", y);
    loaded lx = load_ckpt(wpath("nan_x/ckpt-00000005.h5")), ly = load_ckpt(wpath("nan_y/ckpt-00000004.h5"));
    size_t P = mn_model_num_params(lx.model);
    assert_memory_equal(mn_model_params(lx.model), mn_model_params(ly.model), P * sizeof(float));
    assert_memory_equal(mn_trainer_adam_m(lx.trainer), mn_trainer_adam_m(ly.trainer), P * sizeof(float));
    assert_memory_equal(mn_trainer_adam_v(lx.trainer), mn_trainer_adam_v(ly.trainer), P * sizeof(float));
    assert_int_equal(mn_trainer_step(lx.trainer), 4);
    assert_int_equal(lx.state.nan_skipped, 1);
    assert_int_equal(lx.state.nan_streak, 1);
    assert_int_equal(lx.state.step, 5);
    free_loaded(&lx);
    free_loaded(&ly);
    assert_int_equal(step_skipped(wpath("nan_x"), 5), 1);
    assert_int_equal(step_skipped(wpath("nan_x"), 4), 0);

    /* M in a row aborts with a clear message and exit code 4 */
    const char *abort_run[] = {TINY_RECALL, "--steps", "20", "--fault-nan-steps", "3,4,5", "--max-nan-steps", "3",
                               "--checkpoint-interval", "2", "--run-dir", wpath("nan_abort"), NULL};
    run_expect(4, "nan_abort", abort_run);
    log_has("nan_abort", "err", "aborting: 3 steps in a row had a non-finite loss or gradient");
    log_has("nan_abort", "err", "parameters are from step 2");
    /* fewer in a row than M: skipped, counted, training goes on */
    const char *gaps[] = {TINY_RECALL, "--steps", "8", "--fault-nan-steps", "3,4,6,7", "--max-nan-steps", "3",
                          "--run-dir", wpath("nan_gaps"), NULL};
    run_expect(0, "nan_gaps", gaps);
    loaded lg = load_ckpt(wpath("nan_gaps/ckpt-00000008.h5"));
    assert_int_equal(lg.state.nan_skipped, 4);
    assert_int_equal(lg.state.nan_streak, 0);
    assert_int_equal(mn_trainer_step(lg.trainer), 4);
    free_loaded(&lg);
}

static void test_checkpoint_write_failures(void **state) {
    (void)state;
    /* a periodic checkpoint fails: warning, training continues, the others are written */
    const char *a[] = {TINY_RECALL, "--steps", "6", "--checkpoint-interval", "2", "--keep-checkpoints", "5",
                       "--fault-checkpoint-steps", "4", "--run-dir", wpath("cf_a"), NULL};
    run_expect(0, "cf_a", a);
    log_has("cf_a", "err", "warning");
    log_has("cf_a", "err", "ckpt-00000004.h5");
    log_has("cf_a", "err", "training continues");
    assert_true(exists(wpath("cf_a/ckpt-00000002.h5")) && exists(wpath("cf_a/ckpt-00000006.h5")));
    assert_false(exists(wpath("cf_a/ckpt-00000004.h5")));
    char latest[700];
    int found;
    OK(mn_checkpoint_latest(wpath("cf_a"), latest, sizeof latest, NULL, &found));
    assert_non_null(strstr(latest, "ckpt-00000006.h5"));
    /* the final checkpoint fails: exit 1, naming the file and the last good checkpoint */
    const char *b[] = {TINY_RECALL, "--steps", "6", "--checkpoint-interval", "4", "--fault-checkpoint-steps", "6",
                       "--run-dir", wpath("cf_b"), NULL};
    run_expect(1, "cf_b", b);
    log_has("cf_b", "err", "ckpt-00000006.h5");
    log_has("cf_b", "err", "the last saved one is");
    log_has("cf_b", "err", "cf_b/ckpt-00000004.h5");
    loaded l = load_ckpt(wpath("cf_b/ckpt-00000004.h5"));
    assert_int_equal(l.state.step, 4);
    free_loaded(&l);
    assert_false(exists(wpath("cf_b/ckpt-00000006.h5")));
    /* a run directory that cannot exist: refused before training */
    FILE *f = fopen(wpath("plainfile"), "w");
    fclose(f);
    const char *c[] = {TINY_RECALL, "--steps", "2", "--run-dir", wpath("plainfile/run"), NULL};
    run_expect(1, "cf_c", c);
    log_has("cf_c", "err", "cannot create the run directory");
    log_has("cf_c", "err", "plainfile/run");
}

/* `mnemo train --device cuda` on the guarded stand-in (MNEMO_TEST_STANDIN=1: the CPU's ops behind
 * the device code path, every pointer checked): the same checkpoints bit for bit as on the CPU,
 * through a skipped non-finite step (the fault hook edits the gradients' host mirror), the
 * evaluations (their probes read the pulled parameters) and a resume onto the device from a
 * CPU checkpoint (loaded, then pushed). */
static void test_training_on_the_device_standin(void **state) {
    (void)state;
    const char *const standin[] = {"env", "MNEMO_TEST_STANDIN=1", "OMP_NUM_THREADS=1", NULL};
    const char *cpu[] = {TINY_RECALL, "--steps", "8", "--checkpoint-interval", "4", "--fault-nan-steps", "6",
                         "--run-dir", wpath("dev_cpu"), NULL};
    run_expect(0, "dev_cpu", cpu);
    const char *gpu[] = {TINY_RECALL, "--device", "cuda", "--steps", "8", "--checkpoint-interval", "4",
                         "--fault-nan-steps", "6", "--run-dir", wpath("dev_gpu"), NULL};
    check_exit(wait_exit(spawn_logged("dev_gpu", standin, gpu, 0)), 0, "", "dev_gpu", gpu);
    log_has("dev_gpu", "err", "training on the guarded host backend");
    log_has("dev_gpu", "err", "step 6 skipped");
    assert_same_training(wpath("dev_cpu/ckpt-00000004.h5"), wpath("dev_gpu/ckpt-00000004.h5"));
    assert_same_training(wpath("dev_cpu/ckpt-00000008.h5"), wpath("dev_gpu/ckpt-00000008.h5"));
    const char *resumed[] = {"train", "--resume", wpath("dev_cpu/ckpt-00000004.h5"), "--device", "cuda",
                             "--fault-nan-steps", "6", "--run-dir", wpath("dev_res"), NULL};
    check_exit(wait_exit(spawn_logged("dev_res", standin, resumed, 0)), 0, "", "dev_res", resumed);
    assert_same_training(wpath("dev_cpu/ckpt-00000008.h5"), wpath("dev_res/ckpt-00000008.h5"));
}

static int rng_draw(void *ctx, int n) { return (int)mn_rng_below(ctx, (uint64_t)n); }
static void run_ok(const char *log, const char *const *args) { run_expect(0, log, args); }

/* Runs mnemo ARGS with MNEMO_TEST_STANDIN=standin (NULL: none, the CPU) and one OpenMP thread,
 * through `sh -c script` when script is given (it feeds stdin); fails unless it exits 0. */
static void run_standin(const char *standin, const char *script, const char *log, const char *const *args) {
    char env[64];
    snprintf(env, sizeof env, "MNEMO_TEST_STANDIN=%s", standin ? standin : "0");
    const char *pre[] = {"env", env, "OMP_NUM_THREADS=1", script ? "sh" : NULL, "-c", script, NULL};
    check_exit(wait_exit(spawn_logged(log, pre, args, 0)), 0, "", log, args);
}

/* The three runs' files: the CPU's not empty, the stand-in's equal to it, and the wrong
 * stand-in's different (so the command did take the device path). */
static void expect_standin_files(const char *what, char *const paths[3]) {
    char *cpu = slurp(paths[0]), *standin = slurp(paths[1]), *wrong = slurp(paths[2]);
    if (!cpu[0])
        fail_msg("%s: %s is empty", what, paths[0]);
    if (strcmp(cpu, standin))
        fail_msg("%s: the stand-in's %s differs from the CPU's %s", what, paths[1], paths[0]);
    if (!strcmp(cpu, wrong))
        fail_msg("%s: the wrong stand-in gave the CPU's results: the device path was not taken", what);
    free(cpu), free(standin), free(wrong);
}

/* `mnemo eval` and `mnemo chat --device cuda` on the stand-in: the same probe results, replies
 * and memory (the traces' hashes of R after each turn) as on the CPU (greedy, seeded). */
static void test_eval_and_chat_on_the_device_standin(void **state) {
    (void)state;
    mn_rng rng;
    mn_rng_seed(&rng, 79);
    make_text_data(rng_draw, &rng, run_ok);
    const char *train[] = {TINY_SHARDS_MODEL, "--batch", "2", "--turns", "4", "--bptt", "2", "--steps", "3",
                           "--lr", "0.01", "--threads", "1", "--device", "cpu", "--run-dir", wpath("ev_run"), NULL};
    run_expect(0, "ev_run", train);
    char ckpt[700], data[700], probes[3][700], traces[3][700], stores[3][700]; /* wpath's buffers rotate */
    snprintf(ckpt, sizeof ckpt, "%s", wpath("ev_run/ckpt-00000003.h5"));
    snprintf(data, sizeof data, "%s", wpath("valid.jsonl"));
    const char *const standins[3] = {NULL, "1", "wrong"}, *const names[3] = {"cpu", "standin", "wrong"};
    const char *turns = "printf 'Hello, I moved to Lisbon.\\nWhere did I move to?\\n' | \"$0\" \"$@\"";
    for (int v = 0; v < 3; v++) {
        char log[64], file[64];
        const char *device = standins[v] ? "cuda" : "cpu";
        snprintf(file, sizeof file, "probes_%s.jsonl", names[v]);
        snprintf(probes[v], sizeof probes[v], "%s", wpath(file));
        snprintf(file, sizeof file, "trace_%s.jsonl", names[v]);
        snprintf(traces[v], sizeof traces[v], "%s", wpath(file));
        snprintf(file, sizeof file, "store_%s", names[v]);
        snprintf(stores[v], sizeof stores[v], "%s", wpath(file));
        const char *eval[] = {"eval", "--checkpoint", ckpt, "--data", data, "--threads", "1", "--max-gen-tokens", "4",
                              "--quiet", "--probes-out", probes[v], "--device", device, NULL};
        snprintf(log, sizeof log, "eval_%s", names[v]);
        run_standin(standins[v], NULL, log, eval);
        const char *chat[] = {"chat", "--checkpoint", ckpt, "--store", stores[v], "--session", "a", "--stdin",
                              "--seed", "5", "--temperature", "0", "--max-tokens", "6", "--trace", traces[v],
                              "--device", device, NULL};
        snprintf(log, sizeof log, "chat_%s", names[v]);
        run_standin(standins[v], turns, log, chat);
    }
    log_has("eval_standin", "err", "stands in for the GPU");
    log_has("chat_standin", "err", "stands in for the GPU");
    expect_standin_files("eval --probes-out", (char *const[]){probes[0], probes[1], probes[2]});
    expect_standin_files("chat --trace", (char *const[]){traces[0], traces[1], traces[2]});
    char *rc = log_text("chat_cpu", "out"), *rs = log_text("chat_standin", "out");
    assert_true(strchr(rc, '\n') && strchr(strchr(rc, '\n') + 1, '\n')); /* two replies */
    assert_string_equal(rc, rs);
    free(rc), free(rs);
}

/* `mnemo sessions bench --device`: the pool benchmark on the CPU, on the stand-in (its sample
 * checked against the CPU), and on the wrong stand-in (caught). */
static void test_sessions_bench_on_the_device_standin(void **state) {
    (void)state;
    const char *const standins[3] = {NULL, "1", "wrong"}, *const names[3] = {"cpu", "standin", "wrong"};
    for (int v = 0; v < 3; v++) {
        char log[64], file[64], store[700];
        snprintf(file, sizeof file, "pool_%s.h5", names[v]);
        snprintf(store, sizeof store, "%s", wpath(file));
        const char *bench[] = {"sessions", "--store", store, "bench", "--device", standins[v] ? "cuda" : "cpu",
                               "--count", "12", "--batch", "5", "--rounds", "2", "--slots", "2", "--width", "16",
                               NULL};
        snprintf(log, sizeof log, "pool_%s", names[v]);
        if (v < 2)
            run_standin(standins[v], NULL, log, bench);
        else {
            const char *pre[] = {"env", "MNEMO_TEST_STANDIN=wrong", "OMP_NUM_THREADS=1", NULL};
            check_exit(wait_exit(spawn_logged(log, pre, bench, 0)), 1, "", log, bench);
        }
    }
    log_has("pool_cpu", "out", "device cpu");
    log_has("pool_standin", "out", "device cuda");
    log_has("pool_standin", "out", "check vs CPU:             96 values");
    log_has("pool_standin", "out", "pool / one at a time");
    log_has("pool_standin", "out", "sync to store");
    log_has("pool_wrong", "err", "a pooled update's new state on the device differs from the CPU");
}

int main(void) {
    if (!have_hooks_bin()) {
        printf("SKIP: no mnemo-test-hooks in this build (meson -Dtest_hooks=true builds it)\n");
        return 77;
    }
    use_hooks_bin(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nonfinite_steps_skipped_then_abort),
        cmocka_unit_test(test_checkpoint_write_failures),
        cmocka_unit_test(test_training_on_the_device_standin),
        cmocka_unit_test(test_eval_and_chat_on_the_device_standin),
        cmocka_unit_test(test_sessions_bench_on_the_device_standin),
    };
    return cmocka_run_group_tests(tests, setup_work_dir, remove_work_dir);
}
