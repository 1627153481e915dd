/* The backend layer on the CPU (runs everywhere): the table's data-movement ops and the
 * extensions to ops.h (embedding skips negative ids, AdamW over segments), the device API
 * without a GPU, mn_update_batch against one mn_update per session, and the training
 * classifier in chunks of rows against one chunk. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/ops.h"
#include "model/backend.h"
#include "model/trainer_internal.h"
#include "mnemo.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float uniform(void) { /* [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}
static float *random_floats(size_t n) {
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = uniform();
    return x;
}
static float *copy_of(const float *x, size_t n) {
    float *y = malloc(n * sizeof(float));
    assert_non_null(y);
    memcpy(y, x, n * sizeof(float));
    return y;
}

static mn_exec cpu_exec(void) {
    mn_exec ex;
    assert_int_equal(mn_exec_open(MN_DEVICE_CPU, &ex), MN_OK);
    return ex;
}

/* ---------------------------------------------------------------- table ops */
static void test_copy_and_add_rows(void **state) {
    (void)state;
    mn_exec ex = cpu_exec();
    enum { R = 5, COLS = 7, STRIDE = 11 };
    float *src = random_floats(R * STRIDE), *dst = random_floats(R * STRIDE);
    float *before = copy_of(dst, R * STRIDE);
    MN_OP(&ex, copy_rows, dst, STRIDE, src, STRIDE, R, COLS);
    for (int r = 0; r < R; r++) {
        assert_memory_equal(dst + r * STRIDE, src + r * STRIDE, COLS * sizeof(float));
        /* the gap between rows is untouched */
        assert_memory_equal(dst + r * STRIDE + COLS, before + r * STRIDE + COLS, (STRIDE - COLS) * sizeof(float));
    }
    /* src_stride 0 broadcasts one row */
    MN_OP(&ex, copy_rows, dst, STRIDE, src, 0, R, COLS);
    for (int r = 0; r < R; r++)
        assert_memory_equal(dst + r * STRIDE, src, COLS * sizeof(float));
    /* dst_stride 0: the rows are summed into one, in row order (bitwise the sequential sum) */
    float acc[COLS], one[COLS];
    for (int c = 0; c < COLS; c++)
        one[c] = acc[c] = uniform();
    for (int r = 0; r < R; r++)
        for (int c = 0; c < COLS; c++)
            acc[c] += src[r * STRIDE + c];
    MN_OP(&ex, add_rows, one, 0, src, STRIDE, R, COLS);
    assert_memory_equal(one, acc, sizeof acc);
    /* src_stride 0 adds one row to every row */
    memcpy(dst, before, R * STRIDE * sizeof(float));
    MN_OP(&ex, add_rows, dst, STRIDE, src, 0, R, COLS);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < COLS; c++)
            assert_true(dst[r * STRIDE + c] == before[r * STRIDE + c] + src[c]);
    double sum = 0.0, got = -1.0;
    for (int i = 0; i < R * STRIDE; i++)
        sum += src[i];
    MN_OP(&ex, sum_to, &got, src, (size_t)R * STRIDE);
    assert_true(got == sum);
    free(src), free(dst), free(before);
    mn_exec_close(&ex);
}

/* Negative ids are skipped; the rest is exactly the reference op on each run of ids. */
static void test_embedding_skips_negative_ids(void **state) {
    (void)state;
    mn_exec ex = cpu_exec();
    enum { N = 9, C = 6, V = 4 };
    const int32_t ids[N] = {-1, -1, 2, 0, 2, -1, 3, 2, -1};
    float *table = random_floats(V * C), *out = random_floats(N * C), *before = copy_of(out, N * C);
    MN_OP(&ex, embedding_forward, out, ids, table, N, C);
    for (int n = 0; n < N; n++)
        assert_memory_equal(out + n * C, ids[n] < 0 ? before + n * C : table + ids[n] * C, C * sizeof(float));
    float *dout = random_floats(N * C), *dtable = random_floats(V * C), *want = copy_of(dtable, V * C);
    MN_OP(&ex, embedding_backward, dtable, dout, ids, N, C);
    /* one thread: the scatter's channel slices give the same bits for any team */
    mn_embedding_backward(want, dout + 2 * C, ids + 2, 3, C, 1); /* runs [2, 5) and [6, 8) */
    mn_embedding_backward(want, dout + 6 * C, ids + 6, 2, C, 1);
    assert_memory_equal(dtable, want, V * C * sizeof(float));
    free(table), free(out), free(before), free(dout), free(dtable), free(want);
    mn_exec_close(&ex);
}

static void test_adamw_segments(void **state) {
    (void)state;
    mn_exec ex = cpu_exec();
    enum { P = 40 };
    float *p = random_floats(P), *g = random_floats(P), *m = random_floats(P), *v = random_floats(P);
    for (int i = 0; i < P; i++)
        v[i] = fabsf(v[i]);
    float *p2 = copy_of(p, P), *m2 = copy_of(m, P), *v2 = copy_of(v, P);
    mn_adamw_segment segs[2] = {{3, 10, 0.1f}, {20, 15, 0.0f}};
    MN_OP(&ex, adamw_update, p, g, m, v, segs, 2, 1e-2f, 0.9f, 0.95f, 1e-8f, 3);
    mn_adamw_update(p2 + 3, g + 3, m2 + 3, v2 + 3, 10, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3, 1); /* elementwise */
    mn_adamw_update(p2 + 20, g + 20, m2 + 20, v2 + 20, 15, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.0f, 3, 1);
    assert_memory_equal(p, p2, P * sizeof(float)); /* outside the segments: untouched in both */
    assert_memory_equal(m, m2, P * sizeof(float));
    assert_memory_equal(v, v2, P * sizeof(float));
    free(p), free(g), free(m), free(v), free(p2), free(m2), free(v2);
    mn_exec_close(&ex);
}

/* ---------------------------------------------------------------- the device API */
static mn_config small_config(void) {
    return (mn_config){.vocab_size = 50, .d_model = 16, .n_heads = 2, .n_layers = 2, .n_comp_layers = 2,
                       .n_slots = 4, .max_turn_tokens = 10, .gate_bias_init = -0.5f};
}

static mn_model *small_model(uint64_t seed) {
    mn_config c = small_config();
    mn_model *m = NULL;
    assert_int_equal(mn_model_create(&c, &m), MN_OK);
    assert_int_equal(mn_model_init(m, seed), MN_OK);
    float *p = mn_model_params(m);
    for (size_t i = 0; i < mn_model_num_params(m); i++) /* far from the near-identity init */
        p[i] *= 5.0f;
    return m;
}

static int gpu_present(void) {
    int count = 0;
    return mn_cuda_device_count(&count) == MN_OK && count > 0;
}

static void test_device_choice(void **state) {
    (void)state;
    mn_model *m = small_model(1);
    mn_trainer *tr = NULL;
    assert_int_equal(mn_model_device(m), MN_DEVICE_CPU);
    assert_int_equal(mn_trainer_create_on(m, MN_DEVICE_CPU, 2, 2, &tr), MN_OK);
    assert_int_equal(mn_trainer_device(tr), MN_DEVICE_CPU);
    assert_int_equal(mn_trainer_set_matmul(tr, MN_MATMUL_FP32), MN_OK);
    assert_int_equal(mn_trainer_set_matmul(tr, MN_MATMUL_TF32), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "fp32 only"));
    /* on the CPU the host buffers are the trainer's own, so pull and push are no-ops: a backward
     * pass fills mn_trainer_grads without a pull, mn_grad_norm is the norm of exactly those
     * floats, and a step moves mn_model_params itself */
    int32_t tokens[2 * 5] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, lengths[2] = {5, 4};
    mn_batch batch = {.B = 2, .T = 1, .max_len = 5, .tokens = tokens, .lengths = lengths};
    float loss = 0.0f;
    assert_int_equal(mn_forward_backward(tr, &batch, &loss, NULL), MN_OK);
    assert_int_equal(mn_trainer_pull(tr), MN_OK);
    assert_int_equal(mn_trainer_push(tr), MN_OK);
    const float *grads = mn_trainer_grads(tr);
    double sumsq = 0.0;
    for (size_t i = 0; i < mn_model_num_params(m); i++)
        sumsq += (double)grads[i] * grads[i];
    assert_true(sumsq > 0.0);
    assert_float_equal(mn_grad_norm(tr), sqrt(sumsq), 1e-5 * sqrt(sumsq));
    float *before = copy_of(mn_model_params(m), mn_model_num_params(m));
    mn_adamw_config opt = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 0.0f};
    assert_int_equal(mn_adamw_step(tr, &opt, NULL), MN_OK);
    assert_memory_not_equal(before, mn_model_params(m), mn_model_num_params(m) * sizeof(float));
    free(before);
    mn_trainer_free(tr);
    assert_int_equal(mn_model_set_matmul(m, MN_MATMUL_BF16), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_model_set_device(m, MN_DEVICE_CPU), MN_OK);
    if (!gpu_present()) { /* this machine: CUDA is refused with a reason, and nothing breaks */
        tr = (mn_trainer *)0x1;
        assert_int_equal(mn_trainer_create_on(m, MN_DEVICE_CUDA, 2, 2, &tr), MN_ERR_DEVICE);
        assert_null(tr);
        assert_true(strlen(mn_last_error()) > 10);
        print_message("no GPU: %s\n", mn_last_error());
        assert_int_equal(mn_model_set_device(m, MN_DEVICE_CUDA), MN_ERR_DEVICE);
        assert_int_equal(mn_model_device(m), MN_DEVICE_CPU);
        mn_device_info info;
        assert_int_equal(mn_cuda_device_info(0, &info), MN_ERR_DEVICE);
        char notice[256];
        mn_device dev = MN_DEVICE_CUDA;
        assert_int_equal(mn_device_resolve("auto", &dev, notice, sizeof notice), MN_OK);
        assert_int_equal(dev, MN_DEVICE_CPU);
        assert_int_equal(mn_device_resolve("cuda", &dev, NULL, 0), MN_ERR_DEVICE);
    }
    /* the model still answers on the CPU */
    float r[4 * 16];
    int32_t tok[3] = {1, 2, 3};
    assert_int_equal(mn_initial_state(m, r), MN_OK);
    assert_int_equal(mn_update(m, tok, 3, r, r), MN_OK);
    mn_model_free(m);
}

/* ---------------------------------------------------------------- batched updates */
typedef struct {
    int n;
    int32_t *tokens;
    int64_t *offsets;
    float *r;
} sessions;

/* n sessions with ragged lengths 1..N (every length appears), random tokens and states. */
static sessions random_sessions(const mn_model *m, int n) {
    const mn_config *c = mn_model_config(m);
    sessions s = {n, NULL, malloc(((size_t)n + 1) * sizeof(int64_t)), NULL};
    s.offsets[0] = 0;
    for (int i = 0; i < n; i++)
        s.offsets[i + 1] = s.offsets[i] + 1 + (i * 7 + (int)(rng % 3)) % c->max_turn_tokens;
    s.tokens = malloc((size_t)s.offsets[n] * sizeof(int32_t));
    for (int64_t i = 0; i < s.offsets[n]; i++)
        s.tokens[i] = (int32_t)((uniform() + 1.0f) * 0.5f * (float)c->vocab_size) % c->vocab_size;
    s.r = random_floats((size_t)n * mn_state_floats(m));
    return s;
}

static void free_sessions(sessions *s) { free(s->tokens), free(s->offsets), free(s->r); }

/* |got - want| <= 1e-5 (1 + |want|): batching changes only the rounding of the products. */
static void expect_states_close(const float *got, const float *want, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(got[i] - want[i]) <= 1e-5f * (1.0f + fabsf(want[i]))))
            fail_msg("%s: element %zu is %.9g, one-by-one %.9g", what, i, (double)got[i], (double)want[i]);
}

static void test_update_batch_matches_single(void **state) {
    (void)state;
    mn_model *m = small_model(3);
    const size_t st = mn_state_floats(m);
    /* 200 sessions of up to 10 tokens: several chunks of the CPU's 1024-position budget */
    sessions s = random_sessions(m, 200);
    float *want = malloc((size_t)s.n * st * sizeof(float)), *got = malloc((size_t)s.n * st * sizeof(float));
    for (int i = 0; i < s.n; i++)
        assert_int_equal(mn_update(m, s.tokens + s.offsets[i], (int)(s.offsets[i + 1] - s.offsets[i]), s.r + i * st,
                                   want + i * st),
                         MN_OK);
    assert_int_equal(mn_update_batch(m, s.n, s.tokens, s.offsets, s.r, got), MN_OK);
    expect_states_close(got, want, (size_t)s.n * st, "batched update");
    /* the same call again gives the same bits, and in place gives the same result */
    float *again = copy_of(s.r, (size_t)s.n * st);
    assert_int_equal(mn_update_batch(m, s.n, s.tokens, s.offsets, again, again), MN_OK);
    assert_memory_equal(again, got, (size_t)s.n * st * sizeof(float));
    /* one session through the batch path is mn_update exactly */
    assert_int_equal(mn_update_batch(m, 1, s.tokens, s.offsets, s.r, got), MN_OK);
    assert_memory_equal(got, want, st * sizeof(float));
    free(want), free(got), free(again);
    free_sessions(&s);
    mn_model_free(m);
}

static void test_update_batch_bad_input(void **state) {
    (void)state;
    mn_model *m = small_model(4);
    const size_t st = mn_state_floats(m);
    sessions s = random_sessions(m, 5);
    float *out = random_floats(5 * st);
    float *before = copy_of(out, 5 * st);
    assert_int_equal(mn_update_batch(m, 0, NULL, NULL, NULL, NULL), MN_OK); /* nothing to do */
    assert_int_equal(mn_update_batch(m, -1, s.tokens, s.offsets, s.r, out), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_update_batch(m, 5, s.tokens, NULL, s.r, out), MN_ERR_INVALID_ARG);
    int64_t saved = s.offsets[3];
    s.offsets[3] = s.offsets[2]; /* an empty turn */
    assert_int_equal(mn_update_batch(m, 5, s.tokens, s.offsets, s.r, out), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "session 2"));
    s.offsets[3] = s.offsets[2] + 11; /* longer than max_turn_tokens */
    assert_int_equal(mn_update_batch(m, 5, s.tokens, s.offsets, s.r, out), MN_ERR_INVALID_ARG);
    s.offsets[3] = saved;
    int32_t tok = s.tokens[s.offsets[4]];
    s.tokens[s.offsets[4]] = 50; /* outside the vocabulary */
    assert_int_equal(mn_update_batch(m, 5, s.tokens, s.offsets, s.r, out), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "session 4"));
    assert_non_null(strstr(mn_last_error(), "vocabulary"));
    s.tokens[s.offsets[4]] = tok;
    s.r[1 * st + 3] = NAN;
    assert_int_equal(mn_update_batch(m, 5, s.tokens, s.offsets, s.r, out), MN_ERR_NUMERIC);
    assert_non_null(strstr(mn_last_error(), "session 1"));
    assert_memory_equal(out, before, 5 * st * sizeof(float)); /* refused calls write nothing */
    free(out), free(before);
    free_sessions(&s);
    mn_model_free(m);
}

/* ---------------------------------------------------------------- the classifier in chunks */
typedef struct {
    float loss, *turn_losses, *states, *logits, *grads;
} step_result;

static step_result train_step(mn_model *m, const mn_backend *be, const mn_batch *b, int with_grads) {
    const mn_config *c = mn_model_config(m);
    size_t T = (size_t)b->T, B = (size_t)b->B;
    step_result r = {0, calloc(T, sizeof(float)), calloc(T * mn_state_floats(m) * B, sizeof(float)),
                     calloc(T * B * b->max_len * c->vocab_size, sizeof(float)),
                     calloc(mn_model_num_params(m), sizeof(float))};
    mn_trainer *tr = NULL;
    assert_int_equal(mn_trainer_create_backend(m, be, b->B, 2, &tr), MN_OK);
    mn_forward_outputs out = {.turn_losses = r.turn_losses, .states = r.states, .logits = r.logits};
    assert_int_equal((with_grads ? mn_forward_backward : mn_forward)(tr, b, &r.loss, &out), MN_OK);
    memcpy(r.grads, mn_trainer_grads(tr), mn_model_num_params(m) * sizeof(float));
    mn_trainer_free(tr);
    return r;
}

static void free_step(step_result *r) { free(r->turn_losses), free(r->states), free(r->logits), free(r->grads); }

/* Chunks of 16 rows over a turn's packed real tokens (turns of 15, 19 and 22 tokens: one chunk,
 * then two whose second starts inside an episode) give what one chunk of every row gives, up to the rounding of the summed wte gradient: losses, logits (the
 * padding rows untouched), states and gradients, with and without gradients. */
static void test_classifier_chunks(void **state) {
    (void)state;
    mn_model *m = small_model(5);
    const mn_config *c = mn_model_config(m);
    enum { B = 3, T = 3, L = 10 };
    int32_t tokens[T * B * L], lengths[T * B] = {10, 4, 1, 7, 10, 2, 3, 9, 10};
    float weights[T * B * L];
    for (int i = 0; i < T * B * L; i++) {
        tokens[i] = (int32_t)((uniform() + 1.0f) * 0.5f * (float)c->vocab_size) % c->vocab_size;
        weights[i] = i % 7 == 3 ? 0.0f : 0.5f + (uniform() + 1.0f);
    }
    mn_batch b = {.B = B, .T = T, .max_len = L, .tokens = tokens, .lengths = lengths, .loss_weights = weights};
    mn_backend chunked = *mn_backend_cpu();
    chunked.classifier_floats = (size_t)c->d_model * c->vocab_size; /* C = 16 rows, the least allowed */
    for (int with_grads = 0; with_grads <= 1; with_grads++) {
        step_result want = train_step(m, mn_backend_cpu(), &b, with_grads);
        step_result got = train_step(m, &chunked, &b, with_grads);
        size_t n_logits = (size_t)T * B * L * c->vocab_size;
        expect_states_close(&got.loss, &want.loss, 1, "loss");
        expect_states_close(got.turn_losses, want.turn_losses, T, "turn losses");
        expect_states_close(got.states, want.states, (size_t)T * B * mn_state_floats(m), "states");
        expect_states_close(got.logits, want.logits, n_logits, "logits");
        expect_states_close(got.grads, want.grads, mn_model_num_params(m), "gradients");
        for (int i = 0; i < T * B; i++) /* rows past a turn's length stay as the caller left them */
            for (size_t j = (size_t)lengths[i] * c->vocab_size; j < (size_t)L * c->vocab_size; j++)
                assert_true(got.logits[(size_t)i * L * c->vocab_size + j] == 0.0f);
        double grad_sum = 0.0;
        for (size_t i = 0; i < mn_model_num_params(m); i++)
            grad_sum += fabs(got.grads[i]);
        assert_true(with_grads ? grad_sum > 0.0 : grad_sum == 0.0);
        free_step(&want), free_step(&got);
    }
    mn_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_and_add_rows),
        cmocka_unit_test(test_embedding_skips_negative_ids),
        cmocka_unit_test(test_adamw_segments),
        cmocka_unit_test(test_device_choice),
        cmocka_unit_test(test_update_batch_matches_single),
        cmocka_unit_test(test_update_batch_bad_input),
        cmocka_unit_test(test_classifier_chunks),
    };
    return cmocka_run_group_tests_name("backend", tests, NULL, NULL);
}
