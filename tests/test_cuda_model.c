/* The whole model on the GPU against the CPU and against the PyTorch fixture: forward and
 * backward of a 3-turn batch, the fixture's losses / states / logits / gradients / AdamW steps,
 * 20 training steps tracking the CPU loss, TF32 and BF16 products against fp32, inference and
 * batched session updates, determinism, and device errors returned as MN_ERR_DEVICE.
 *
 * Tolerances:
 * - GPU vs CPU, fp32 (MODEL_RTOL 1e-4 per element + MODEL_ATOL 1e-5 of each tensor's scale):
 *   both are fp32 with different summation orders; each op differs by ~1e-6 relative
 *   (test_cuda_ops), and a few layers and turns compound that to ~1e-5.
 * - GPU vs the float64 fixture: exactly the CPU's bound (1e-4 relative, 1e-5 of the scale).
 * - Training: 20 AdamW steps, |loss_gpu - loss_cpu| <= 1e-3 at every step.
 * - TF32 vs fp32 on the GPU: loss within 2e-3 relative, gradient cosine >= 0.9999; BF16:
 *   2e-2 and 0.999. Rounding the product inputs to 10 (7) mantissa bits perturbs each
 *   product by ~5e-4 (4e-3) relative, averaged over the batch in the loss.
 * - GPT-2 small widths (C 768, V 50257, 160 positions; two layers each): the fp32 bound above.
 *   Blocked sums over K terms round like sqrt(K) of a term, ~1e-6 of the scale at K 50257
 *   (test_cuda_ops checks each op there at 1e-5), so two layers stay well inside 1e-4.
 * Without a GPU every test is skipped and the program exits with 77 (meson: SKIP).
 *
 * test_device_logic.c compiles this file with MN_TEST_GUARDED: the "device" is then the
 * guarded host backend (guarded_backend.h), which runs the CPU ops behind the model's device
 * code path and checks every pointer, so the tests run on every machine; GPU-vs-CPU results
 * must then be bitwise equal (the same ops in the same order), and the two tests that need
 * real CUDA (tensor-core products, cudaMalloc failures) are skipped. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/h5util.h"
#include "tiny_fixture.h"
#include "mnemo.h"
#ifdef MN_TEST_GUARDED
#include "guarded_backend.h"
#include "model/trainer_internal.h"
#endif

/* against the float64 fixture, or between differently batched runs */
#define MODEL_RTOL 1e-4
#define MODEL_ATOL 1e-5

#ifdef MN_TEST_GUARDED
static const double PAR_RTOL = 0.0, PAR_ATOL = 0.0, TRAIN_ATOL = 0.0; /* the CPU's ops: bitwise */
#define NEEDS_REAL_CUDA() skip()
#else
static const double PAR_RTOL = MODEL_RTOL, PAR_ATOL = MODEL_ATOL, TRAIN_ATOL = 1e-3;
#define NEEDS_REAL_CUDA() ((void)0)
#endif

static int have_gpu;
static uint64_t rng_state;

#define NEED_GPU()         \
    do {                   \
        if (!have_gpu)     \
            skip();        \
    } while (0)

#define OK(call)                                                         \
    do {                                                                 \
        mn_status st_ = (call);                                          \
        if (st_ != MN_OK)                                                \
            fail_msg("%s: %s: %s", #call, mn_status_name(st_), mn_last_error()); \
    } while (0)

/* ---------------------------------------------------------------- the device under test */
static mn_status dut_trainer(mn_model *m, int max_B, int bptt, mn_trainer **out) {
#ifdef MN_TEST_GUARDED
    return mn_trainer_create_backend(m, mn_guarded_backend(), max_B, bptt, out);
#else
    return mn_trainer_create_on(m, MN_DEVICE_CUDA, max_B, bptt, out);
#endif
}

static mn_status dut_model(mn_model *m) {
#ifdef MN_TEST_GUARDED
    return mn_model_set_backend(m, mn_guarded_backend());
#else
    return mn_model_set_device(m, MN_DEVICE_CUDA);
#endif
}

/* ---------------------------------------------------------------- helpers */
static double uniform01(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(x[i]));
    return m;
}

/* |got - want| <= rtol |want| + atol max|want|, NaN fails. */
static void expect_close(const char *what, const float *got, const float *want, size_t n, double rtol, double atol) {
    double scale = max_abs(want, n);
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        if (!(err <= rtol * fabs((double)want[i]) + atol * scale + 1e-30))
            fail_msg("%s[%zu]: GPU %.9g, reference %.9g (scale %.3g)", what, i, (double)got[i], (double)want[i],
                     scale);
    }
}

/* Each tensor against its own scale (a tensor of tiny gradients is not judged by wte's). */
static void expect_tensors_close(mn_model *m, const char *what, const float *got, const float *want, double rtol,
                                 double atol) {
    for (int i = 0; i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        OK(mn_model_tensor(m, i, &t));
        char label[256];
        snprintf(label, sizeof label, "%s %s", what, t.name);
        expect_close(label, got + t.offset, want + t.offset, t.size, rtol, atol);
    }
}

static double cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++)
        ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / sqrt(aa * bb);
}

static float *copy_of(const float *x, size_t n) {
    float *y = malloc(n * sizeof(float));
    assert_non_null(y);
    memcpy(y, x, n * sizeof(float));
    return y;
}

static mn_config small_config(void) {
    return (mn_config){.vocab_size = 61, .d_model = 32, .n_heads = 4, .n_layers = 2, .n_comp_layers = 2,
                       .n_slots = 4, .max_turn_tokens = 12, .gate_bias_init = -0.5f};
}

static mn_model *small_model(uint64_t seed) {
    mn_config c = small_config();
    mn_model *m = NULL;
    OK(mn_model_create(&c, &m));
    OK(mn_model_init(m, seed));
    float *p = mn_model_params(m);
    for (size_t i = 0; i < mn_model_num_params(m); i++) /* well away from the near-identity init */
        p[i] *= 4.0f;
    return m;
}

typedef struct {
    int B, T, L;
    int32_t *tokens, *lengths;
    float *weights;
} owned_batch;

static owned_batch random_batch(int B, int T, int L, int V) {
    owned_batch b = {B, T, L, calloc((size_t)T * B * L, sizeof(int32_t)), calloc((size_t)T * B, sizeof(int32_t)),
                     calloc((size_t)T * B * L, sizeof(float))};
    for (int i = 0; i < T * B; i++) {
        int len = 1 + (int)(uniform01() * L); /* 1..L: single-token turns too */
        b.lengths[i] = i == 0 ? L : len;      /* at least one full turn */
        for (int j = 0; j < L; j++) {
            size_t at = (size_t)i * L + j;
            b.tokens[at] = j < b.lengths[i] ? (int32_t)(uniform01() * V) : 0;
            b.weights[at] = j < b.lengths[i] ? (float)(0.5 + 2.0 * uniform01()) : 0.0f;
        }
    }
    return b;
}

static mn_batch view(const owned_batch *b) { return (mn_batch){.B = b->B, .T = b->T, .max_len = b->L, .tokens = b->tokens, .lengths = b->lengths, .loss_weights = b->weights}; }

static void free_batch(owned_batch *b) { free(b->tokens), free(b->lengths), free(b->weights); }

/* Everything a forward + backward reports. */
typedef struct {
    float loss, *turn_losses, *states, *logits, *grads;
} run_result;

static run_result run(mn_trainer *tr, mn_model *m, const owned_batch *b, int with_grads) {
    const mn_config *c = mn_model_config(m);
    run_result r = {0, calloc((size_t)b->T, sizeof(float)),
                    calloc((size_t)b->T * b->B * mn_state_floats(m), sizeof(float)),
                    calloc((size_t)b->T * b->B * b->L * c->vocab_size, sizeof(float)), NULL};
    mn_forward_outputs out = {.turn_losses = r.turn_losses, .states = r.states, .logits = r.logits};
    mn_batch v = view(b);
    if (with_grads) {
        OK(mn_forward_backward(tr, &v, &r.loss, &out));
        OK(mn_trainer_pull(tr));
        r.grads = copy_of(mn_trainer_grads(tr), mn_model_num_params(m));
    } else {
        OK(mn_forward(tr, &v, &r.loss, &out));
    }
    return r;
}

static void free_result(run_result *r) { free(r->turn_losses), free(r->states), free(r->logits), free(r->grads); }

static void expect_results_close(mn_model *m, const owned_batch *b, const run_result *gpu, const run_result *cpu) {
    const mn_config *c = mn_model_config(m);
    expect_close("loss", &gpu->loss, &cpu->loss, 1, PAR_RTOL, PAR_ATOL);
    expect_close("turn losses", gpu->turn_losses, cpu->turn_losses, (size_t)b->T, PAR_RTOL, PAR_ATOL);
    expect_close("states", gpu->states, cpu->states, (size_t)b->T * b->B * mn_state_floats(m), PAR_RTOL, PAR_ATOL);
    expect_close("logits", gpu->logits, cpu->logits, (size_t)b->T * b->B * b->L * c->vocab_size, PAR_RTOL,
                 PAR_ATOL);
    if (gpu->grads)
        expect_tensors_close(m, "grad", gpu->grads, cpu->grads, PAR_RTOL, PAR_ATOL);
}

/* ---------------------------------------------------------------- whole-model parity */
/* Forward + backward of a random B x T batch of full-length turns (some shorter) on the CPU
 * and the device, then a forward alone on the device: the same outputs. */
static void parity_case(mn_model *m, int B, int T, int bptt) {
    owned_batch b = random_batch(B, T, mn_model_config(m)->max_turn_tokens, mn_model_config(m)->vocab_size);
    mn_trainer *cpu = NULL, *gpu = NULL;
    OK(mn_trainer_create_on(m, MN_DEVICE_CPU, B, bptt, &cpu));
    OK(dut_trainer(m, B, bptt, &gpu));
    assert_int_equal(mn_trainer_device(gpu), MN_DEVICE_CUDA);
    run_result rc = run(cpu, m, &b, 1), rg = run(gpu, m, &b, 1);
    expect_results_close(m, &b, &rg, &rc);
    free_result(&rg);
    rg = run(gpu, m, &b, 0); /* forward only: the same outputs */
    expect_results_close(m, &b, &rg, &rc);
    free_result(&rc), free_result(&rg);
    mn_trainer_free(cpu), mn_trainer_free(gpu);
    free_batch(&b);
}

static void test_forward_backward_parity(void **state) {
    (void)state;
    NEED_GPU();
    mn_model *m = small_model(17);
    parity_case(m, 3, 3, 2); /* truncated after 2 of 3 turns */
    parity_case(m, 3, 3, 3); /* full backpropagation through time */
    mn_model_free(m);
}

/* The model at GPT-2 small widths (C 768, 12 heads, V 50257) over 160 positions (32 slots +
 * 128-token turns), where cuBLAS picks its large-matrix kernels; 2 + 2 layers and two
 * 2-turn episodes, so that the stand-in (device_logic) runs it in seconds too. The GPT-2
 * initialisation as it is: activations of the size training sees. */
static void test_gpt2_widths_parity(void **state) {
    (void)state;
    NEED_GPU();
    mn_config c = {.vocab_size = 50257, .d_model = 768, .n_heads = 12, .n_layers = 2, .n_comp_layers = 2,
                   .n_slots = 32, .max_turn_tokens = 128, .gate_bias_init = -0.5f};
    mn_model *m = NULL;
    OK(mn_model_create(&c, &m));
    OK(mn_model_init(m, 23));
    parity_case(m, 2, 2, 2);
    mn_model_free(m);
}

/* Streaming: lanes 1 and 2 start from carried states (uploaded to their rows), lane 0 from
 * R_0; the final states come back. */
typedef struct {
    float loss, turn_losses[4], *final, *grads;
} stream_result;

static stream_result stream_run(mn_trainer *tr, mn_model *m, const mn_batch *v) {
    stream_result r = {.final = calloc((size_t)v->B * mn_state_floats(m), sizeof(float))};
    mn_forward_outputs out = {.turn_losses = r.turn_losses, .final_states = r.final};
    OK(mn_forward_backward(tr, v, &r.loss, &out));
    OK(mn_trainer_pull(tr));
    r.grads = copy_of(mn_trainer_grads(tr), mn_model_num_params(m));
    return r;
}

static void test_streaming_parity(void **state) {
    (void)state;
    NEED_GPU();
    mn_model *m = small_model(19);
    owned_batch b = random_batch(3, 4, 12, mn_model_config(m)->vocab_size);
    size_t n = 3 * mn_state_floats(m);
    float *initial = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        initial[i] = (float)(2.0 * uniform01() - 1.0);
    unsigned char carry[3] = {0, 1, 1};
    mn_batch v = view(&b);
    v.initial_states = initial, v.carry = carry;
    mn_trainer *cpu = NULL, *gpu = NULL;
    OK(mn_trainer_create_on(m, MN_DEVICE_CPU, 3, 2, &cpu));
    OK(dut_trainer(m, 3, 2, &gpu));
    stream_result rc = stream_run(cpu, m, &v), rg = stream_run(gpu, m, &v);
    expect_close("loss", &rg.loss, &rc.loss, 1, PAR_RTOL, PAR_ATOL);
    expect_close("turn losses", rg.turn_losses, rc.turn_losses, 4, PAR_RTOL, PAR_ATOL);
    expect_close("final states", rg.final, rc.final, n, PAR_RTOL, PAR_ATOL);
    expect_tensors_close(m, "grad", rg.grads, rc.grads, PAR_RTOL, PAR_ATOL);
    free(rc.final), free(rc.grads), free(rg.final), free(rg.grads), free(initial);
    mn_trainer_free(cpu), mn_trainer_free(gpu);
    free_batch(&b);
    mn_model_free(m);
}

/* ---------------------------------------------------------------- the PyTorch fixture */



static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && !strcmp(s + ls - lx, suffix);
}

static void test_fixture_on_gpu(void **state) {
    (void)state;
    NEED_GPU();
    tiny_fixture fx;
    tiny_fixture_open(&fx);
    mn_model *m = tiny_fixture_model(&fx);
    const mn_config *c = &fx.config;
    mn_batch batch = {.B = fx.B, .T = fx.T, .max_len = fx.max_len, .tokens = fx.tokens, .lengths = fx.lengths,
                     .loss_weights = fx.weights};
    size_t nlogits = (size_t)fx.T * fx.B * fx.max_len * c->vocab_size, nstates = (size_t)fx.T * fx.B * mn_state_floats(m);
    float *logits = calloc(nlogits, sizeof(float)), *want_logits = malloc(nlogits * sizeof(float));
    float *states = malloc(nstates * sizeof(float)), *want_states = malloc(nstates * sizeof(float));
    float turn[16], want_turn[16], loss, want_loss;
    assert_true(fx.T <= 16);
    mn_forward_outputs out = {.turn_losses = turn, .states = states, .logits = logits};
    mn_trainer *tr = NULL;
    OK(dut_trainer(m, fx.B, fx.bptt, &tr));
    OK(mn_forward_backward(tr, &batch, &loss, &out));
    OK(mn_trainer_pull(tr));
    OK(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/loss", &want_loss, 1));
    OK(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/logits", want_logits, nlogits));
    OK(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/states", want_states, nstates));
    OK(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/turn_losses", want_turn, (size_t)fx.T));
    expect_close("fixture loss", &loss, &want_loss, 1, MODEL_RTOL, MODEL_ATOL);
    expect_close("fixture turn losses", turn, want_turn, (size_t)fx.T, MODEL_RTOL, MODEL_ATOL);
    expect_close("fixture states", states, want_states, nstates, MODEL_RTOL, MODEL_ATOL);
    expect_close("fixture logits", logits, want_logits, nlogits, MODEL_RTOL, MODEL_ATOL);
    float *want = tiny_fixture_tensors(&fx, m, "grads");
    expect_tensors_close(m, "fixture grad (bptt 2)", mn_trainer_grads(tr), want, MODEL_RTOL, MODEL_ATOL);
    free(want);
    mn_trainer_free(tr);
    OK(dut_trainer(m, fx.B, fx.T, &tr));
    OK(mn_forward_backward(tr, &batch, &loss, NULL));
    OK(mn_trainer_pull(tr));
    want = tiny_fixture_tensors(&fx, m, "grads_full");
    expect_tensors_close(m, "fixture grad (full bptt)", mn_trainer_grads(tr), want, MODEL_RTOL, MODEL_ATOL);
    free(want);
    mn_trainer_free(tr);

    /* the reconstruction aid (mn_trainer_set_reconstruction) on the device */
    float recon_weight, recon, want_recon;
    OK(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/reconstruct_weight", &recon_weight, 1));
    OK(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/recon_loss", &want_recon, 1));
    OK(dut_trainer(m, fx.B, fx.bptt, &tr));
    OK(mn_trainer_set_reconstruction(tr, recon_weight));
    OK(mn_forward_backward(tr, &batch, &loss, NULL));
    OK(mn_trainer_pull(tr));
    recon = (float)mn_trainer_reconstruction_loss(tr);
    expect_close("fixture loss (reconstruction on)", &loss, &want_loss, 1, MODEL_RTOL, MODEL_ATOL);
    expect_close("fixture reconstruction loss", &recon, &want_recon, 1, MODEL_RTOL, MODEL_ATOL);
    want = tiny_fixture_tensors(&fx, m, "grads_reconstruct");
    expect_tensors_close(m, "fixture grad (reconstruction, bptt 2)", mn_trainer_grads(tr), want, MODEL_RTOL,
                         MODEL_ATOL);
    free(want);
    mn_trainer_free(tr);

    /* AdamW steps as test_model's, on the GPU */
    double lr, b1, b2, eps, wd, clip;
    int64_t steps;
    hid_t g = H5Gopen2(fx.file, "adamw", H5P_DEFAULT);
    assert_true(g >= 0);
    OK(mn_h5_read_attr_float(g, tiny_fixture_path(), "lr", &lr));
    OK(mn_h5_read_attr_float(g, tiny_fixture_path(), "beta1", &b1));
    OK(mn_h5_read_attr_float(g, tiny_fixture_path(), "beta2", &b2));
    OK(mn_h5_read_attr_float(g, tiny_fixture_path(), "eps", &eps));
    OK(mn_h5_read_attr_float(g, tiny_fixture_path(), "weight_decay", &wd));
    OK(mn_h5_read_attr_float(g, tiny_fixture_path(), "grad_clip", &clip));
    OK(mn_h5_read_attr_int(g, tiny_fixture_path(), "steps", &steps));
    H5Gclose(g);
    assert_true(steps <= 16);
    float want_losses[16], want_norms[16];
    OK(mn_h5_read_floats(fx.file, tiny_fixture_path(), "adamw/losses", want_losses, (size_t)steps));
    OK(mn_h5_read_floats(fx.file, tiny_fixture_path(), "adamw/grad_norms", want_norms, (size_t)steps));
    mn_adamw_config opt = {(float)lr, (float)b1, (float)b2, (float)eps, (float)wd, (float)clip};
    size_t P = mn_model_num_params(m);
    float *initial = copy_of(mn_model_params(m), P), *first_grads = NULL;
    OK(dut_trainer(m, fx.B, fx.bptt, &tr));
    for (int s = 0; s < steps; s++) {
        float norm;
        OK(mn_forward_backward(tr, &batch, &loss, NULL));
        if (s == 0) {
            OK(mn_trainer_pull(tr));
            first_grads = copy_of(mn_trainer_grads(tr), P);
        }
        OK(mn_adamw_step(tr, &opt, &norm));
        expect_close("fixture adamw loss", &loss, &want_losses[s], 1, MODEL_RTOL, MODEL_ATOL);
        expect_close("fixture adamw grad norm", &norm, &want_norms[s], 1, MODEL_RTOL, MODEL_ATOL);
    }
    OK(mn_trainer_pull(tr));
    want = tiny_fixture_tensors(&fx, m, "adamw/params");
    /* attention key biases have an identically zero gradient: AdamW turns its rounding noise
     * into steps of size lr, so they are bounded by the step instead (as in test_model) */
    const float *got = mn_model_params(m);
    double grad_scale = max_abs(first_grads, P);
    for (int i = 0; i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        OK(mn_model_tensor(m, i, &t));
        if (!ends_with(t.name, "attn.c_attn.bias")) {
            expect_close(t.name, got + t.offset, want + t.offset, t.size, MODEL_RTOL, MODEL_ATOL);
            continue;
        }
        int C = c->d_model;
        expect_close(t.name, got + t.offset, want + t.offset, (size_t)C, MODEL_RTOL, MODEL_ATOL);
        expect_close(t.name, got + t.offset + 2 * C, want + t.offset + 2 * C, (size_t)C, MODEL_RTOL, MODEL_ATOL);
        for (int j = C; j < 2 * C; j++) {
            size_t at = t.offset + (size_t)j;
            assert_true(fabsf(first_grads[at]) <= 1e-5 * grad_scale);
            assert_true(fabs((double)got[at] - initial[at]) <= 1.01 * lr * steps);
        }
    }
    free(want), free(initial), free(first_grads);
    mn_trainer_free(tr);
    free(logits), free(want_logits), free(states), free(want_states);
    mn_model_free(m);
    tiny_fixture_close(&fx);
}

/* ---------------------------------------------------------------- training */
static void test_training_tracks_cpu(void **state) {
    (void)state;
    NEED_GPU();
    mn_model *mc = small_model(23), *mg = small_model(23);
    mn_trainer *cpu = NULL, *gpu = NULL;
    OK(mn_trainer_create_on(mc, MN_DEVICE_CPU, 4, 2, &cpu));
    OK(dut_trainer(mg, 4, 2, &gpu));
    mn_adamw_config opt = {3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    for (int s = 0; s < 20; s++) {
        owned_batch b = random_batch(4, 5, 12, mn_model_config(mc)->vocab_size);
        mn_batch v = view(&b);
        float lc, lg, nc, ng;
        OK(mn_forward_backward(cpu, &v, &lc, NULL));
        OK(mn_forward_backward(gpu, &v, &lg, NULL));
        OK(mn_adamw_step(cpu, &opt, &nc));
        OK(mn_adamw_step(gpu, &opt, &ng));
        print_message("step %2d  loss cpu %.6f gpu %.6f  |diff| %.2e\n", s, (double)lc, (double)lg, fabs(lc - lg));
        if (!(fabsf(lc - lg) <= 1e-3f) || (TRAIN_ATOL == 0.0 && lc != lg))
            fail_msg("step %d: GPU loss %.7f, CPU %.7f: more than 1e-3 apart", s, (double)lg, (double)lc);
        free_batch(&b);
    }
    OK(mn_trainer_pull(gpu));
    assert_int_equal(mn_trainer_step(gpu), 20);
    /* the parameters moved the same way: every tensor within 1e-3 of its scale */
    for (int i = 0; i < mn_model_num_tensors(mc); i++) {
        mn_tensor_info t;
        OK(mn_model_tensor(mc, i, &t));
        expect_close(t.name, mn_model_params(mg) + t.offset, mn_model_params(mc) + t.offset, t.size, 0.0, TRAIN_ATOL);
    }
    mn_trainer_free(cpu), mn_trainer_free(gpu);
    mn_model_free(mc), mn_model_free(mg);
}

static void test_gpu_determinism(void **state) {
    (void)state;
    NEED_GPU();
    mn_model *a = small_model(31), *b = small_model(31);
    mn_trainer *ta = NULL, *tb = NULL;
    OK(dut_trainer(a, 3, 2, &ta));
    OK(dut_trainer(b, 3, 2, &tb));
    mn_adamw_config opt = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    for (int s = 0; s < 3; s++) {
        owned_batch batch = random_batch(3, 4, 12, mn_model_config(a)->vocab_size);
        mn_batch v = view(&batch);
        float la, lb;
        OK(mn_forward_backward(ta, &v, &la, NULL));
        OK(mn_forward_backward(tb, &v, &lb, NULL));
        assert_memory_equal(&la, &lb, sizeof la);
        OK(mn_adamw_step(ta, &opt, NULL));
        OK(mn_adamw_step(tb, &opt, NULL));
        free_batch(&batch);
    }
    OK(mn_trainer_pull(ta));
    OK(mn_trainer_pull(tb));
    assert_memory_equal(mn_model_params(a), mn_model_params(b), mn_model_num_params(a) * sizeof(float));
    assert_memory_equal(mn_trainer_adam_v(ta), mn_trainer_adam_v(tb), mn_model_num_params(a) * sizeof(float));
    mn_trainer_free(ta), mn_trainer_free(tb);
    mn_model_free(a), mn_model_free(b);
}

/* push: host edits reach the device. With the gate shut the compressor gets no gradient. */
static void test_push_and_shut_gate(void **state) {
    (void)state;
    NEED_GPU();
    mn_model *m = small_model(41);
    mn_trainer *tr = NULL;
    OK(dut_trainer(m, 2, 4, &tr));
    OK(mn_trainer_freeze(tr, "decoder.", 1));
    owned_batch b = random_batch(2, 4, 12, mn_model_config(m)->vocab_size);
    mn_batch v = view(&b);
    float loss;
    mn_tensor_info gate;
    OK(mn_model_find_tensor(m, "memory.gate.bias", &gate));
    for (size_t j = 0; j < gate.size; j++)
        mn_model_params(m)[gate.offset + j] = -INFINITY;
    OK(mn_trainer_push(tr));
    OK(mn_forward_backward(tr, &v, &loss, NULL));
    OK(mn_trainer_pull(tr));
    assert_true(isinf(mn_model_params(m)[gate.offset])); /* pull brought back what push sent */
    double sq = 0;
    for (int i = 0; i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        OK(mn_model_tensor(m, i, &t));
        if (strncmp(t.name, "compressor.", 11) && strncmp(t.name, "memory.gate", 11))
            continue;
        for (size_t j = 0; j < t.size; j++)
            sq += (double)mn_trainer_grads(tr)[t.offset + j] * mn_trainer_grads(tr)[t.offset + j];
    }
    assert_true(sq == 0.0);
    /* frozen tensors stay bit-identical through a GPU step */
    float *before = copy_of(mn_model_params(m), mn_model_num_params(m));
    for (size_t j = 0; j < gate.size; j++)
        before[gate.offset + j] = mn_model_params(m)[gate.offset + j] = -3.0f;
    OK(mn_trainer_push(tr));
    OK(mn_forward_backward(tr, &v, &loss, NULL));
    mn_adamw_config opt = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    OK(mn_adamw_step(tr, &opt, NULL));
    OK(mn_trainer_pull(tr));
    int frozen_checked = 0;
    for (int i = 0; i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        OK(mn_model_tensor(m, i, &t));
        if (!strncmp(t.name, "decoder.", 8)) {
            assert_memory_equal(before + t.offset, mn_model_params(m) + t.offset, t.size * sizeof(float));
            frozen_checked++;
        }
    }
    assert_true(frozen_checked > 0);
    free(before);
    free_batch(&b);
    mn_trainer_free(tr);
    mn_model_free(m);
}

/* ---------------------------------------------------------------- matrix-product precision */
static void precision_case(mn_matmul precision, double loss_rtol, double min_cosine, const char *name) {
    mn_model *m = small_model(53);
    owned_batch b = random_batch(3, 3, 12, mn_model_config(m)->vocab_size);
    mn_trainer *fp32 = NULL, *fast = NULL;
    OK(dut_trainer(m, 3, 3, &fp32));
    OK(dut_trainer(m, 3, 3, &fast));
    OK(mn_trainer_set_matmul(fast, precision));
    run_result r32 = run(fp32, m, &b, 1), rf = run(fast, m, &b, 1);
    double rel = fabs((double)rf.loss - r32.loss) / fabs((double)r32.loss);
    double cos = cosine(rf.grads, r32.grads, mn_model_num_params(m));
    print_message("%s: loss %.6f vs fp32 %.6f (relative %.2e), gradient cosine %.7f\n", name, (double)rf.loss,
                  (double)r32.loss, rel, cos);
    if (!(rel <= loss_rtol))
        fail_msg("%s loss %.7f vs fp32 %.7f: relative difference %.2e > %.1e", name, (double)rf.loss,
                 (double)r32.loss, rel, loss_rtol);
    if (!(cos >= min_cosine))
        fail_msg("%s gradient cosine to fp32 %.7f < %.5f", name, cos, min_cosine);
    free_result(&r32), free_result(&rf);
    mn_trainer_free(fp32), mn_trainer_free(fast);
    free_batch(&b);
    mn_model_free(m);
}

static void test_tf32_bf16_against_fp32(void **state) {
    (void)state;
    NEED_GPU();
    NEEDS_REAL_CUDA();
    precision_case(MN_MATMUL_TF32, 2e-3, 0.9999, "TF32");
    precision_case(MN_MATMUL_BF16, 2e-2, 0.999, "BF16");
}

/* ---------------------------------------------------------------- inference */
static void test_inference_on_gpu(void **state) {
    (void)state;
    NEED_GPU();
    mn_model *m = small_model(61), *g = small_model(61);
    OK(dut_model(g));
    assert_int_equal(mn_model_device(g), MN_DEVICE_CUDA);
    const mn_config *c = mn_model_config(m);
    const size_t st = mn_state_floats(m);
    const int V = c->vocab_size, N = c->max_turn_tokens;
    /* 1500 sessions of ragged lengths: more than one chunk of the GPU's 16384-position budget */
    const int n = 1500;
    int64_t *offsets = malloc(((size_t)n + 1) * sizeof(int64_t));
    offsets[0] = 0;
    for (int i = 0; i < n; i++)
        offsets[i + 1] = offsets[i] + 1 + (int64_t)(uniform01() * N);
    int32_t *tokens = malloc((size_t)offsets[n] * sizeof(int32_t));
    for (int64_t i = 0; i < offsets[n]; i++)
        tokens[i] = (int32_t)(uniform01() * V);
    float *r = malloc((size_t)n * st * sizeof(float));
    for (size_t i = 0; i < (size_t)n * st; i++)
        r[i] = (float)(2.0 * uniform01() - 1.0);
    float *want = malloc((size_t)n * st * sizeof(float)), *got = malloc((size_t)n * st * sizeof(float));
    OK(mn_update_batch(m, n, tokens, offsets, r, want));
    OK(mn_update_batch(g, n, tokens, offsets, r, got));
    expect_close("batched update on the GPU", got, want, (size_t)n * st, MODEL_RTOL, MODEL_ATOL);
    /* single calls, logits, next-token logits and the memory-free decoder */
    float *lw = malloc((size_t)(c->n_slots + N) * V * sizeof(float)), *lg = malloc((size_t)(c->n_slots + N) * V * sizeof(float));
    for (int i = 0; i < 5; i++) {
        const int32_t *tok = tokens + offsets[i];
        int len = (int)(offsets[i + 1] - offsets[i]);
        OK(mn_update(m, tok, len, r + i * st, want));
        OK(mn_update(g, tok, len, r + i * st, got));
        expect_close("mn_update on the GPU", got, want, st, PAR_RTOL, PAR_ATOL);
        OK(mn_logits(m, tok, len, r + i * st, lw));
        OK(mn_logits(g, tok, len, r + i * st, lg));
        expect_close("mn_logits on the GPU", lg, lw, (size_t)len * V, PAR_RTOL, PAR_ATOL);
        OK(mn_next_logits(m, tok, len, NULL, lw));
        OK(mn_next_logits(g, tok, len, NULL, lg));
        expect_close("mn_next_logits on the GPU", lg, lw, (size_t)V, PAR_RTOL, PAR_ATOL);
    }
    int32_t long_turn[16];
    for (int i = 0; i < 16; i++)
        long_turn[i] = (int32_t)(uniform01() * V);
    OK(mn_logits_no_memory(m, long_turn, 16, lw)); /* k + N = 16 positions without memory */
    OK(mn_logits_no_memory(g, long_turn, 16, lg));
    expect_close("mn_logits_no_memory on the GPU", lg, lw, (size_t)16 * V, PAR_RTOL, PAR_ATOL);
    /* after a host edit, set_device refreshes the GPU's copy */
    float *p = mn_model_params(g);
    for (size_t i = 0; i < mn_model_num_params(g); i++)
        p[i] = mn_model_params(m)[i] *= 0.5f;
    OK(dut_model(g));
    OK(mn_update(m, tokens, 3, r, want));
    OK(mn_update(g, tokens, 3, r, got));
    expect_close("mn_update after refresh", got, want, st, PAR_RTOL, PAR_ATOL);
    OK(mn_model_set_device(g, MN_DEVICE_CPU));
    OK(mn_update(g, tokens, 3, r, got));
    assert_memory_equal(got, want, st * sizeof(float)); /* back on the CPU: the CPU's bits */
    free(offsets), free(tokens), free(r), free(want), free(got), free(lw), free(lg);
    mn_model_free(m), mn_model_free(g);
}

/* ---------------------------------------------------------------- errors */
static void test_device_errors_are_returned(void **state) {
    (void)state;
    NEED_GPU();
    NEEDS_REAL_CUDA();
    mn_model *m = small_model(71);
    mn_trainer *tr = (mn_trainer *)0x1;
    /* activations for 2^28 episodes cannot fit: a clean MN_ERR_DEVICE naming cudaMalloc */
    mn_status st = dut_trainer(m, 1 << 28, 2, &tr);
    print_message("oversized trainer: %s: %s\n", mn_status_name(st), mn_last_error());
    assert_int_equal(st, MN_ERR_DEVICE);
    assert_null(tr);
    assert_non_null(strstr(mn_last_error(), "cudaMalloc"));
    /* and the device is still usable */
    OK(dut_trainer(m, 2, 2, &tr));
    owned_batch b = random_batch(2, 2, 12, mn_model_config(m)->vocab_size);
    mn_batch v = view(&b);
    float loss;
    OK(mn_forward_backward(tr, &v, &loss, NULL));
    assert_true(isfinite(loss));
    float norm = mn_grad_norm(tr);
    assert_true(isfinite(norm) && norm > 0);
    free_batch(&b);
    mn_trainer_free(tr);
    mn_model_free(m);
}

static int group_setup(void **state) {
    (void)state;
    const char *fixed = getenv("MNEMO_TEST_SEED");
    uint64_t seed = fixed ? strtoull(fixed, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    rng_state = seed ? seed : 1;
    print_message("seed %llu (MNEMO_TEST_SEED=%llu repeats this run)\n", (unsigned long long)seed,
                  (unsigned long long)seed);
    return 0;
}

int main(void) {
#ifdef MN_TEST_GUARDED
    have_gpu = 1; /* the guarded host backend stands in for the GPU */
#else
    int count = 0;
    have_gpu = mn_cuda_device_count(&count) == MN_OK && count > 0;
    if (!have_gpu)
        printf("no GPU (%s): every test is skipped\n", mn_last_error()[0] ? mn_last_error() : "none found");
#endif
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_backward_parity),
        cmocka_unit_test(test_gpt2_widths_parity),
        cmocka_unit_test(test_streaming_parity),
        cmocka_unit_test(test_fixture_on_gpu),
        cmocka_unit_test_setup_teardown(test_fixture_on_gpu, tiny_fixture_use_slot, tiny_fixture_use_gate),
        cmocka_unit_test_setup_teardown(test_fixture_on_gpu, tiny_fixture_use_delta, tiny_fixture_use_gate),
        cmocka_unit_test(test_training_tracks_cpu),
        cmocka_unit_test(test_gpu_determinism),
        cmocka_unit_test(test_push_and_shut_gate),
        cmocka_unit_test(test_tf32_bf16_against_fp32),
        cmocka_unit_test(test_inference_on_gpu),
        cmocka_unit_test(test_device_errors_are_returned),
    };
#ifdef MN_TEST_GUARDED
    return cmocka_run_group_tests_name("device_logic", tests, group_setup, NULL);
#endif
    int failed = cmocka_run_group_tests_name("cuda_model", tests, group_setup, NULL);
    return have_gpu ? failed : 77; /* 77: meson counts the test as skipped */
}
