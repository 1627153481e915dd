/* The measurements behind mnemo bench, bench-ops and bench-update (src/model/bench.h), on the
 * CPU at tiny shapes: each returns figures that fit together, and refuses bad shapes. On the
 * guarded stand-in for a GPU (guarded_backend.h) each checks a sample of its results against
 * the CPU, and a backend whose linear layer doubles its output is caught by every one. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "guarded_backend.h"
#include "model/bench.h"

static void ok(mn_status st) {
    if (st != MN_OK)
        fail_msg("%s: %s", mn_status_name(st), mn_last_error());
}

static mn_config tiny_config(void) {
    mn_config c = {.vocab_size = 64, .d_model = 16, .n_heads = 2, .n_layers = 1, .n_comp_layers = 1,
                   .n_slots = 2, .max_turn_tokens = 8, .gate_bias_init = -1.0f};
    return c;
}

static void test_train(void **state) {
    (void)state;
    mn_bench_train_options o = {.config = tiny_config(), .device = MN_DEVICE_CPU, .matmul = MN_MATMUL_FP32,
                                .batch = 2, .turns = 3, .bptt = 2, .turn_tokens = 6, .steps = 2};
    mn_bench_train_result r;
    ok(mn_bench_train(&o, &r));
    assert_true(r.step_s > 0 && r.gflops > 0 && r.sgemm_gflops > 0);
    /* every token of every turn counts: 2 x 3 x 6 of them a step */
    assert_true(fabs(r.tokens_per_s * r.step_s - 36.0) < 1e-6);
    /* random tokens, a fresh model: about ln V nats a token */
    assert_true(isfinite(r.loss) && fabs(r.loss - log(64.0)) < 1.0);
    assert_int_equal(r.sgemm_m, 2 * (2 + 6));
    assert_int_equal(r.sgemm_k, 16);
    assert_int_equal(r.sgemm_n, 64);
    o.turn_tokens = 9; /* longer than the model's turns */
    assert_int_equal(mn_bench_train(&o, &r), MN_ERR_INVALID_ARG);
    o.turn_tokens = 6;
    o.steps = 0;
    assert_int_equal(mn_bench_train(&o, &r), MN_ERR_INVALID_ARG);
}

typedef struct {
    int n;
    char names[64][32];
    double seconds[64];
} seen_ops;

static void collect(void *ctx, const mn_bench_op *op) {
    seen_ops *s = ctx;
    assert_true(s->n < 64);
    snprintf(s->names[s->n], sizeof s->names[0], "%s", op->name);
    s->seconds[s->n] = op->seconds;
    assert_true(op->bytes > 0);
    s->n++;
}

static void test_ops(void **state) {
    (void)state;
    mn_bench_ops_options o = {.device = MN_DEVICE_CPU, .matmul = MN_MATMUL_FP32, .batch = 2, .turn_tokens = 4,
                              .slots = 2, .width = 16, .heads = 2, .vocab = 32, .reps = 2};
    seen_ops s = {0};
    mn_bench_check check;
    ok(mn_bench_ops(&o, collect, &s, &check));
    assert_int_equal(check.values, 0); /* nothing to check on the CPU itself */
    assert_int_equal(s.n, 22); /* forward and backward of each op, AdamW and the sum of squares */
    assert_string_equal(s.names[0], "embedding fwd");
    assert_string_equal(s.names[s.n - 1], "sum of squares (4 N C)");
    for (int i = 0; i < s.n; i++) {
        assert_true(s.seconds[i] > 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(s.names[i], s.names[j]);
    }
    o.heads = 3; /* does not divide 16 */
    assert_int_equal(mn_bench_ops(&o, collect, &s, NULL), MN_ERR_INVALID_ARG);
}

static void test_update(void **state) {
    (void)state;
    mn_bench_update_options o = {.config = tiny_config(), .device = MN_DEVICE_CPU, .matmul = MN_MATMUL_FP32,
                                 .sessions = 5, .reps = 7};
    mn_bench_update_result r;
    ok(mn_bench_update(&o, &r));
    assert_true(r.min_s > 0 && r.min_s <= r.median_s && r.median_s <= r.p90_s);
    assert_true(r.batch_s > 0);
    o.sessions = 0;
    assert_int_equal(mn_bench_update(&o, &r), MN_ERR_INVALID_ARG);
}

/* ---------------------------------------------------------------- checks on a device */
static void expect_caught(mn_status st, const char *what) {
    if (st != MN_ERR_DEVICE)
        fail_msg("a wrong %s was not caught: %s (%s)", what, mn_status_name(st), mn_last_error());
    if (!strstr(mn_last_error(), what) || !strstr(mn_last_error(), "differs from the CPU"))
        fail_msg("'%s' does not name '%s'", mn_last_error(), what);
}

static void test_device_checks(void **state) {
    (void)state;
    mn_bench_train_options t = {.config = tiny_config(), .device = MN_DEVICE_CUDA, .matmul = MN_MATMUL_FP32,
                                .batch = 2, .turns = 3, .bptt = 2, .turn_tokens = 6, .steps = 2,
                                .backend = mn_guarded_backend()};
    mn_bench_train_result tr;
    ok(mn_bench_train(&t, &tr));
    /* 3 turn losses and 3 states of 2 x 16 floats; the stand-in runs the CPU's ops: bitwise */
    assert_int_equal(tr.check.values, 3 + 3 * 2 * 16);
    assert_true(tr.check.max_error == 0.0 && tr.check.bound == 1e-3);
    t.backend = mn_guarded_backend_wrong();
    expect_caught(mn_bench_train(&t, &tr), "episode 0's");

    mn_bench_ops_options o = {.device = MN_DEVICE_CUDA, .matmul = MN_MATMUL_FP32, .batch = 2, .turn_tokens = 4,
                              .slots = 2, .width = 16, .heads = 2, .vocab = 32, .reps = 2,
                              .backend = mn_guarded_backend()};
    seen_ops s = {0};
    mn_bench_check check;
    ok(mn_bench_ops(&o, collect, &s, &check));
    /* rows: 12 of layernorm, fc, gelu; 6 positions of attention; 8 of lm_head and loss; 4 gated */
    assert_int_equal(check.values, 12 * 16 + 12 * 64 + 6 * 16 + 12 * 64 + 8 * 32 + 8 + 4 * 16);
    assert_true(check.max_error == 0.0);
    o.backend = mn_guarded_backend_wrong();
    s.n = 0;
    expect_caught(mn_bench_ops(&o, collect, &s, &check), "linear fc fwd");

    mn_bench_update_options u = {.config = tiny_config(), .device = MN_DEVICE_CUDA, .matmul = MN_MATMUL_FP32,
                                 .sessions = 5, .reps = 3, .backend = mn_guarded_backend()};
    mn_bench_update_result ur;
    ok(mn_bench_update(&u, &ur));
    assert_int_equal(ur.check.values, 3 * 2 * 16);
    /* the stand-in pads the batch to its bucket: the same products, rounded by other kernels */
    assert_true(ur.check.max_error <= 1e-5);
    u.backend = mn_guarded_backend_wrong();
    expect_caught(mn_bench_update(&u, &ur), "batched update");
}

/* The pool benchmark on the CPU and on the stand-in: every rate measured, the sample checked (a
 * wrong linear layer caught), every session synced to the store. */
static void test_pool(void **state) {
    (void)state;
    char dir[] = "/tmp/mnemo-bench-pool-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    const mn_backend *backends[2] = {NULL, mn_guarded_backend()};
    for (int b = 0; b < 2; b++) {
        snprintf(path, sizeof path, "%s/s%d.h5", dir, b);
        mn_bench_pool_options o = {.config = tiny_config(), .device = b ? MN_DEVICE_CUDA : MN_DEVICE_CPU,
                                   .matmul = MN_MATMUL_FP32, .slots = 9, .batch = 5, .rounds = 3, .singles = 4,
                                   .store = path, .backend = backends[b]};
        mn_bench_pool_result r;
        ok(mn_bench_pool(&o, &r));
        assert_true(r.pool_rate > 0 && r.batch_rate > 0 && r.single_rate > 0 && r.sync_s > 0);
        assert_true(r.mean_tokens >= 1 && r.mean_tokens <= 8);
        assert_int_equal(r.check.values, 3 * 2 * 16);
        assert_true(r.check.max_error <= 1e-5); /* batched vs one at a time: rounding only */
        mn_session_store *s = NULL;
        mn_session_store_stats stats;
        ok(mn_session_store_open(path, 0, 0, 0, &s));
        ok(mn_session_store_stats_get(s, &stats));
        assert_int_equal(stats.sessions, 9);
        mn_session_store_close(s);
    }
    mn_bench_pool_options o = {.config = tiny_config(), .device = MN_DEVICE_CUDA, .matmul = MN_MATMUL_FP32,
                               .slots = 9, .batch = 5, .rounds = 3, .singles = 4,
                               .backend = mn_guarded_backend_wrong()};
    mn_bench_pool_result r;
    expect_caught(mn_bench_pool(&o, &r), "pooled update");
    o.batch = 10; /* more than the pool holds */
    assert_int_equal(mn_bench_pool(&o, &r), MN_ERR_INVALID_ARG);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_train),
        cmocka_unit_test(test_ops),
        cmocka_unit_test(test_update),
        cmocka_unit_test(test_device_checks),
    };
    return cmocka_run_group_tests_name("bench", tests, NULL, NULL);
}
