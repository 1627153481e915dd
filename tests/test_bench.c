/* The measurements behind mnemo bench, bench-ops and bench-update (src/model/bench.h), on the
 * CPU at tiny shapes: each returns figures that fit together, and refuses bad shapes. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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
    ok(mn_bench_ops(&o, collect, &s));
    assert_int_equal(s.n, 22); /* forward and backward of each op, AdamW and the sum of squares */
    assert_string_equal(s.names[0], "embedding fwd");
    assert_string_equal(s.names[s.n - 1], "sum of squares (4 N C)");
    for (int i = 0; i < s.n; i++) {
        assert_true(s.seconds[i] > 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(s.names[i], s.names[j]);
    }
    o.heads = 3; /* does not divide 16 */
    assert_int_equal(mn_bench_ops(&o, collect, &s), MN_ERR_INVALID_ARG);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train),
        cmocka_unit_test(test_ops),
        cmocka_unit_test(test_update),
    };
    return cmocka_run_group_tests_name("bench", tests, NULL, NULL);
}
