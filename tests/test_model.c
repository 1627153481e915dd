/* Whole-model tests: the PyTorch oracle fixture, gradient flow through memory, determinism,
 * padding invariance of inference and of training (packing), the decoder's key/value cache
 * against the full pass, and bad input. */
#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/h5util.h"
#include "tiny_fixture.h"
#include "mnemo.h"
#include "model/model_internal.h"
#include "model/score.h"

/* ---------------------------------------------------------------- helpers */

/* Worst element of |got - want| / (atol + rtol |want|): <= 1 passes. */
static double tolerance_ratio(const float *got, const float *want, size_t n, double rtol, double atol,
                              size_t *worst) {
    double ratio = 0.0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)got[i] - want[i]) / (atol + rtol * fabs((double)want[i]));
        if (!(r <= ratio)) { /* also catches NaN */
            ratio = r;
            *worst = i;
        }
    }
    return ratio;
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(x[i]));
    return m;
}

/* fp32 against a float64 oracle: relative 1e-4 per element, plus an absolute floor of 1e-5
 * of the tensor's scale for elements near zero. Observed worst ratios: about 0.05, and 0.5 for AdamW-updated attention biases whose tiny
 * gradients AdamW normalises (MNEMO_REPORT_TOLERANCE=1 prints them). */
#define FIXTURE_RTOL 1e-4
#define FIXTURE_ATOL_SCALE 1e-5

static void assert_close(const char *what, const float *got, const float *want, size_t n) {
    size_t worst = 0;
    double atol = FIXTURE_ATOL_SCALE * fmax(max_abs(want, n), 1e-30);
    double r = tolerance_ratio(got, want, n, FIXTURE_RTOL, atol, &worst);
    if (getenv("MNEMO_REPORT_TOLERANCE")) /* to see the margin: prints every comparison */
        print_message("%-60s worst ratio %.3g\n", what, r);
    if (!(r <= 1.0))
        fail_msg("%s: element %zu is %.9g, oracle %.9g (ratio %.3g > 1)", what, worst, (double)got[worst],
                 (double)want[worst], r);
}


static void assert_tensors_close(mn_model *m, const char *what, const float *got, const float *want) {
    for (int i = 0; i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        mn_model_tensor(m, i, &t);
        char label[256];
        snprintf(label, sizeof label, "%s %s", what, t.name);
        assert_close(label, got + t.offset, want + t.offset, t.size);
    }
}

static int ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && !strcmp(s + ls - lx, suffix);
}

/* The key bias of attention has an identically zero gradient (adding a constant to every
 * score of a query leaves its softmax unchanged), so its computed gradient is rounding noise,
 * and AdamW normalises noise to steps of size lr. Those entries are checked against the bound
 * of AdamW's step instead of against the oracle's noise. */
static void assert_params_after_adamw(mn_model *m, const float *initial, const float *want, const float *grads,
                                      double lr, int steps) {
    const int C = mn_model_config(m)->d_model;
    float *got = mn_model_params(m);
    double grad_scale = max_abs(grads, mn_model_num_params(m));
    for (int i = 0; i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        mn_model_tensor(m, i, &t);
        char label[256];
        snprintf(label, sizeof label, "params after adamw %s", t.name);
        if (!ends_with(t.name, "attn.c_attn.bias")) {
            assert_close(label, got + t.offset, want + t.offset, t.size);
            continue;
        }
        assert_close(label, got + t.offset, want + t.offset, (size_t)C); /* queries */
        assert_close(label, got + t.offset + 2 * C, want + t.offset + 2 * C, (size_t)C); /* values */
        for (int j = C; j < 2 * C; j++) {
            size_t at = t.offset + (size_t)j;
            assert_true(fabsf(grads[at]) <= 1e-5 * grad_scale); /* the premise: zero up to rounding */
            assert_true(fabs((double)got[at] - initial[at]) <= 1.01 * lr * steps);
        }
    }
}


/* ---------------------------------------------------------------- packing */
/* Training packs each turn's real rows (docs/model.md, "Batches and padding"): the fixture's
 * ragged batch laid out with more padding (max_len up to max_turn_tokens), the padding filled
 * with real token ids and weights, gives the same loss, turn losses and gradients to the bit. */
static void test_padding_is_not_computed(void **state) {
    (void)state;
    tiny_fixture fx;
    tiny_fixture_open(&fx);
    mn_model *m = tiny_fixture_model(&fx);
    const int L2 = fx.config.max_turn_tokens, cells = fx.T * fx.B;
    assert_true(L2 > fx.max_len); /* the fixture leaves room for more padding */
    int32_t *tokens = malloc((size_t)cells * L2 * sizeof(int32_t));
    float *weights = malloc((size_t)cells * L2 * sizeof(float));
    for (int cell = 0; cell < cells; cell++)
        for (int i = 0; i < L2; i++) {
            int real = i < fx.lengths[cell];
            tokens[(size_t)cell * L2 + i] = real ? fx.tokens[(size_t)cell * fx.max_len + i] : (cell + i) % 7;
            weights[(size_t)cell * L2 + i] = real ? fx.weights[(size_t)cell * fx.max_len + i] : 1.0f;
        }
    mn_batch narrow = tiny_fixture_batch(&fx);
    mn_batch wide = {.B = fx.B, .T = fx.T, .max_len = L2, .tokens = tokens, .lengths = fx.lengths,
                     .loss_weights = weights};
    size_t P = mn_model_num_params(m);
    float *grads[2], loss[2], *turns[2];
    const mn_batch *batches[2] = {&narrow, &wide};
    for (int i = 0; i < 2; i++) {
        mn_trainer *tr = NULL;
        assert_int_equal(mn_trainer_create(m, fx.B, fx.bptt, &tr), MN_OK);
        assert_int_equal(mn_trainer_set_reconstruction(tr, 0.5f), MN_OK);
        turns[i] = malloc((size_t)fx.T * sizeof(float));
        mn_forward_outputs out = {.turn_losses = turns[i]};
        assert_int_equal(mn_forward_backward(tr, batches[i], &loss[i], &out), MN_OK);
        grads[i] = malloc(P * sizeof(float));
        memcpy(grads[i], mn_trainer_grads(tr), P * sizeof(float));
        mn_trainer_free(tr);
    }
    assert_memory_equal(&loss[0], &loss[1], sizeof loss[0]);
    assert_memory_equal(turns[0], turns[1], (size_t)fx.T * sizeof(float));
    assert_memory_equal(grads[0], grads[1], P * sizeof(float));
    for (int i = 0; i < 2; i++)
        free(grads[i]), free(turns[i]);
    free(tokens);
    free(weights);
    mn_model_free(m);
    tiny_fixture_close(&fx);
}

/* ---------------------------------------------------------------- the PyTorch oracle */
static void test_fixture_forward_backward(void **state) {
    (void)state;
    tiny_fixture fx;
    tiny_fixture_open(&fx);
    mn_model *m = tiny_fixture_model(&fx);
    const mn_config *c = &fx.config;
    mn_trainer *tr = NULL;
    assert_int_equal(mn_trainer_create(m, fx.B, fx.bptt, &tr), MN_OK);
    size_t nlogits = (size_t)fx.T * fx.B * fx.max_len * c->vocab_size;
    size_t nstates = (size_t)fx.T * fx.B * c->n_slots * c->d_model;
    float *logits = calloc(nlogits, sizeof(float)), *want_logits = malloc(nlogits * sizeof(float));
    float *states = malloc(nstates * sizeof(float)), *want_states = malloc(nstates * sizeof(float));
    float *turn_losses = malloc((size_t)fx.T * sizeof(float)), *want_turn = malloc((size_t)fx.T * sizeof(float));
    mn_forward_outputs out = {.turn_losses = turn_losses, .states = states, .logits = logits};
    mn_batch batch = tiny_fixture_batch(&fx);
    float loss = 0, want_loss = 0;
    assert_int_equal(mn_forward_backward(tr, &batch, &loss, &out), MN_OK);

    assert_int_equal(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/loss", &want_loss, 1), MN_OK);
    assert_int_equal(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/logits", want_logits, nlogits), MN_OK);
    assert_int_equal(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/states", want_states, nstates), MN_OK);
    assert_int_equal(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/turn_losses", want_turn, (size_t)fx.T), MN_OK);
    assert_close("loss", &loss, &want_loss, 1);
    assert_close("turn_losses", turn_losses, want_turn, (size_t)fx.T);
    assert_close("states", states, want_states, nstates);
    assert_close("logits", logits, want_logits, nlogits); /* padded rows are 0 in both */

    float *want_grads = tiny_fixture_tensors(&fx, m, "grads");
    assert_tensors_close(m, "grad (bptt 2)", mn_trainer_grads(tr), want_grads);
    free(want_grads);
    mn_trainer_free(tr);

    /* the reconstruction aid: other gradients (the oracle's), the same reported loss, its own loss */
    float recon_weight = 0;
    assert_int_equal(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/reconstruct_weight", &recon_weight, 1),
                     MN_OK);
    assert_true(recon_weight > 0);
    assert_int_equal(mn_trainer_create(m, fx.B, fx.bptt, &tr), MN_OK);
    assert_int_equal(mn_trainer_set_reconstruction(tr, recon_weight), MN_OK);
    float recon_loss = 0, want_recon = 0, plain_loss = loss;
    assert_int_equal(mn_forward_backward(tr, &batch, &loss, NULL), MN_OK);
    assert_close("loss with reconstruction", &loss, &plain_loss, 1);
    assert_int_equal(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/recon_loss", &want_recon, 1), MN_OK);
    recon_loss = (float)mn_trainer_reconstruction_loss(tr);
    assert_close("reconstruction loss", &recon_loss, &want_recon, 1);
    float *want_recon_grads = tiny_fixture_tensors(&fx, m, "grads_reconstruct");
    assert_tensors_close(m, "grad (reconstruction, bptt 2)", mn_trainer_grads(tr), want_recon_grads);
    free(want_recon_grads);
    assert_int_equal(mn_trainer_set_reconstruction(tr, -1.0f), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_trainer_set_reconstruction(tr, NAN), MN_ERR_INVALID_ARG);
    /* weight 0 turns it off again: the plain gradients, bit for bit */
    assert_int_equal(mn_trainer_set_reconstruction(tr, 0.0f), MN_OK);
    assert_int_equal(mn_forward_backward(tr, &batch, &loss, NULL), MN_OK);
    float *plain = tiny_fixture_tensors(&fx, m, "grads");
    assert_tensors_close(m, "grad (reconstruction off)", mn_trainer_grads(tr), plain);
    free(plain);
    assert_true(mn_trainer_reconstruction_loss(tr) == 0.0);
    mn_trainer_free(tr);

    /* full BPTT gives other gradients: the truncation is really applied */
    assert_int_equal(mn_trainer_create(m, fx.B, fx.T, &tr), MN_OK);
    assert_int_equal(mn_forward_backward(tr, &batch, &loss, NULL), MN_OK);
    float *want_full = tiny_fixture_tensors(&fx, m, "grads_full");
    assert_tensors_close(m, "grad (full bptt)", mn_trainer_grads(tr), want_full);
    free(want_full);

    /* delayed reconstruction (full BPTT, delay 1): turn t decoded again from R_{t+1} */
    assert_int_equal(mn_trainer_set_reconstruction(tr, recon_weight), MN_OK);
    assert_int_equal(mn_trainer_set_reconstruction_delay(tr, fx.T), MN_ERR_INVALID_ARG); /* >= bptt */
    assert_int_equal(mn_trainer_set_reconstruction_delay(tr, -1), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_trainer_set_reconstruction_delay(tr, 1), MN_OK);
    assert_int_equal(mn_forward_backward(tr, &batch, &loss, NULL), MN_OK);
    assert_close("loss with delayed reconstruction", &loss, &plain_loss, 1);
    float want_recon_delay = 0;
    assert_int_equal(mn_h5_read_floats(fx.file, tiny_fixture_path(), "outputs/recon_loss_delay", &want_recon_delay, 1),
                     MN_OK);
    recon_loss = (float)mn_trainer_reconstruction_loss(tr);
    assert_close("delayed reconstruction loss", &recon_loss, &want_recon_delay, 1);
    float *want_delay = tiny_fixture_tensors(&fx, m, "grads_reconstruct_delay");
    assert_tensors_close(m, "grad (delayed reconstruction, full bptt)", mn_trainer_grads(tr), want_delay);
    free(want_delay);
    mn_trainer_free(tr);

    free(logits), free(want_logits), free(states), free(want_states), free(turn_losses), free(want_turn);
    mn_model_free(m);
    tiny_fixture_close(&fx);
}

static void test_fixture_adamw(void **state) {
    (void)state;
    tiny_fixture fx;
    tiny_fixture_open(&fx);
    mn_model *m = tiny_fixture_model(&fx);
    hid_t f = fx.file;
    double lr, b1, b2, eps, wd, clip;
    int64_t steps;
    const char *path = tiny_fixture_path();
    hid_t g = H5Gopen2(f, "adamw", H5P_DEFAULT);
    assert_true(g >= 0);
    assert_int_equal(mn_h5_read_attr_float(g, path, "lr", &lr), MN_OK);
    assert_int_equal(mn_h5_read_attr_float(g, path, "beta1", &b1), MN_OK);
    assert_int_equal(mn_h5_read_attr_float(g, path, "beta2", &b2), MN_OK);
    assert_int_equal(mn_h5_read_attr_float(g, path, "eps", &eps), MN_OK);
    assert_int_equal(mn_h5_read_attr_float(g, path, "weight_decay", &wd), MN_OK);
    assert_int_equal(mn_h5_read_attr_float(g, path, "grad_clip", &clip), MN_OK);
    assert_int_equal(mn_h5_read_attr_int(g, path, "steps", &steps), MN_OK);
    H5Gclose(g);
    float want_losses[16], want_norms[16];
    assert_true(steps <= 16);
    assert_int_equal(mn_h5_read_floats(f, path, "adamw/losses", want_losses, (size_t)steps), MN_OK);
    assert_int_equal(mn_h5_read_floats(f, path, "adamw/grad_norms", want_norms, (size_t)steps), MN_OK);
    mn_adamw_config opt = {(float)lr, (float)b1, (float)b2, (float)eps, (float)wd, (float)clip};
    mn_trainer *tr = NULL;
    assert_int_equal(mn_trainer_create(m, fx.B, fx.bptt, &tr), MN_OK);
    mn_batch batch = tiny_fixture_batch(&fx);
    size_t P = mn_model_num_params(m);
    float *initial = malloc(P * sizeof(float)), *first_grads = malloc(P * sizeof(float));
    memcpy(initial, mn_model_params(m), P * sizeof(float));
    int clipped = 0;
    for (int s = 0; s < steps; s++) {
        float loss, norm;
        assert_int_equal(mn_forward_backward(tr, &batch, &loss, NULL), MN_OK);
        if (s == 0)
            memcpy(first_grads, mn_trainer_grads(tr), P * sizeof(float));
        assert_int_equal(mn_adamw_step(tr, &opt, &norm), MN_OK);
        char label[64];
        snprintf(label, sizeof label, "adamw step %d loss", s);
        assert_close(label, &loss, &want_losses[s], 1);
        snprintf(label, sizeof label, "adamw step %d grad norm", s);
        assert_close(label, &norm, &want_norms[s], 1);
        clipped += norm > clip;
    }
    assert_true(clipped > 0); /* the fixture exercises clipping */
    assert_int_equal(mn_trainer_step(tr), (uint64_t)steps);
    float *want = tiny_fixture_tensors(&fx, m, "adamw/params");
    assert_params_after_adamw(m, initial, want, first_grads, lr, (int)steps);
    free(want), free(initial), free(first_grads);
    mn_trainer_free(tr);
    mn_model_free(m);
    tiny_fixture_close(&fx);
}

/* ---------------------------------------------------------------- a small random model */
static mn_config small_config(void) {
    return (mn_config){.vocab_size = 40, .d_model = 16, .n_heads = 2, .n_layers = 2, .n_comp_layers = 1,
                       .n_slots = 4, .max_turn_tokens = 10, .gate_bias_init = 0.0f};
}

typedef struct {
    int B, T, L;
    int32_t *tokens, *lengths;
    float *weights;
} owned_batch;

static owned_batch random_batch(uint32_t seed, int B, int T, int L, int V) {
    owned_batch b = {B, T, L, calloc((size_t)T * B * L, sizeof(int32_t)), calloc((size_t)T * B, sizeof(int32_t)),
                     calloc((size_t)T * B * L, sizeof(float))};
    uint32_t x = seed * 2654435761u + 1;
    for (int t = 0; t < T; t++)
        for (int e = 0; e < B; e++) {
            x = x * 1664525u + 1013904223u;
            int len = 2 + (int)((x >> 8) % (uint32_t)(L - 1));
            b.lengths[t * B + e] = len;
            for (int i = 0; i < L; i++) {
                x = x * 1664525u + 1013904223u;
                size_t at = ((size_t)t * B + e) * L + i;
                b.tokens[at] = i < len ? (int32_t)((x >> 8) % (uint32_t)V) : 0;
                b.weights[at] = i < len ? 1.0f : 0.0f;
            }
        }
    return b;
}

static mn_batch view(const owned_batch *b) {
    return (mn_batch){.B = b->B, .T = b->T, .max_len = b->L, .tokens = b->tokens, .lengths = b->lengths, .loss_weights = b->weights};
}

static void free_batch(owned_batch *b) {
    free(b->tokens);
    free(b->lengths);
    free(b->weights);
}

static mn_model *small_model_with_rule(uint64_t seed, int write_rule) {
    mn_config c = small_config();
    c.write_rule = write_rule;
    mn_model *m = NULL;
    assert_int_equal(mn_model_create(&c, &m), MN_OK);
    assert_int_equal(mn_model_init(m, seed), MN_OK);
    /* larger weights than the GPT-2 init, so that memory effects are far above rounding */
    float *p = mn_model_params(m);
    for (size_t i = 0; i < mn_model_num_params(m); i++)
        p[i] *= 5.0f;
    return m;
}

static mn_model *small_model(uint64_t seed) { return small_model_with_rule(seed, MN_WRITE_GATE); }

/* Keeps only the last turn's loss. */
static void last_turn_only(owned_batch *b) {
    for (int t = 0; t < b->T - 1; t++)
        memset(b->weights + (size_t)t * b->B * b->L, 0, (size_t)b->B * b->L * sizeof(float));
}

static float loss_of(mn_trainer *tr, owned_batch *b) {
    float loss;
    mn_batch v = view(b);
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_OK);
    return loss;
}

static double compressor_grad_sq(mn_model *m, mn_trainer *tr) {
    double s = 0;
    for (int i = 0; i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        mn_model_tensor(m, i, &t);
        if (strncmp(t.name, "compressor.", 11) && strncmp(t.name, "memory.gate", 11))
            continue;
        for (size_t j = 0; j < t.size; j++)
            s += (double)mn_trainer_grads(tr)[t.offset + j] * mn_trainer_grads(tr)[t.offset + j];
    }
    return s;
}

/* Without logits wanted, the head and the decoder's last block skip each turn's last token,
 * which predicts nothing (weight 0): the same loss as with every token row (the logits wanted)
 * and the same gradients, up to the products' rounding (the sums over rows have other
 * lengths). A turn whose every episode has one token has no classifier row at all: its
 * decoder is skipped, with a loss and a gradient into R of exactly 0. */
static void test_last_token_rows_skipped(void **state) {
    (void)state;
    const int B = 3, T = 4, L = 8, V = 40;
    mn_model *m = small_model(5);
    owned_batch b = random_batch(11, B, T, L, V);
    for (int e = 0; e < B; e++)
        b.lengths[1 * B + e] = 1; /* turn 1: no targets */
    mn_batch v = view(&b);
    size_t P = mn_model_num_params(m);
    float loss[2], turns[2][4], *grads[2];
    float *logits = calloc((size_t)T * B * L * V, sizeof(float));
    owned_batch other = random_batch(12, B, T, L, V);
    mn_batch ov = view(&other);
    for (int i = 0; i < 2; i++) {
        mn_trainer *tr = NULL;
        assert_int_equal(mn_trainer_create(m, B, 2, &tr), MN_OK);
        float ignored;
        if (i == 0) /* a batch before: the trainer's buffers hold its gradients, not zeros */
            assert_int_equal(mn_forward_backward(tr, &ov, &ignored, NULL), MN_OK);
        mn_forward_outputs out = {.turn_losses = turns[i], .logits = i ? logits : NULL};
        assert_int_equal(mn_forward_backward(tr, &v, &loss[i], &out), MN_OK);
        grads[i] = malloc(P * sizeof(float));
        memcpy(grads[i], mn_trainer_grads(tr), P * sizeof(float));
        mn_trainer_free(tr);
    }
    /* to float rounding: with other row counts OpenBLAS may sum in another order (some CPUs) */
    assert_true(fabsf(loss[0] - loss[1]) <= 1e-6f * fabsf(loss[1]));
    for (int t = 0; t < T; t++)
        assert_true(fabsf(turns[0][t] - turns[1][t]) <= 1e-6f * fabsf(turns[1][t]));
    assert_true(turns[0][1] == 0.0f && turns[1][1] == 0.0f && turns[0][0] > 0.0f);
    double scale = 0;
    for (size_t i = 0; i < P; i++)
        scale = fmax(scale, fabs(grads[1][i]));
    assert_true(scale > 0);
    for (size_t i = 0; i < P; i++)
        if (fabs(grads[0][i] - grads[1][i]) > 1e-6 * scale)
            fail_msg("gradient %zu: %g without the last rows, %g with them", i, grads[0][i], grads[1][i]);
    free(grads[0]), free(grads[1]), free(logits);
    free_batch(&b);
    free_batch(&other);
    mn_model_free(m);
}

static void test_gradient_flows_through_memory(void **state) {
    (void)state;
    mn_model *m = small_model(7);
    mn_trainer *tr = NULL;
    const int T = 4;
    assert_int_equal(mn_trainer_create(m, 2, T, &tr), MN_OK);
    owned_batch b = random_batch(3, 2, T, 8, 40);
    last_turn_only(&b);

    /* with the gate open, turn 1 reaches the loss of turn T through R */
    float base = loss_of(tr, &b);
    assert_true(compressor_grad_sq(m, tr) > 0.0);
    b.tokens[0] = (b.tokens[0] + 1) % 40; /* change turn 1, episode 0 */
    float changed = loss_of(tr, &b);
    assert_true(fabsf(changed - base) > 1e-6f * fabsf(base));

    /* with the gate forced shut (z = 0 exactly), R_t = R_{t-1}: turn 1 has no path left */
    mn_tensor_info gate;
    assert_int_equal(mn_model_find_tensor(m, "memory.gate.bias", &gate), MN_OK);
    for (size_t j = 0; j < gate.size; j++)
        mn_model_params(m)[gate.offset + j] = -INFINITY;
    float shut = loss_of(tr, &b);
    assert_true(compressor_grad_sq(m, tr) == 0.0);
    b.tokens[0] = (b.tokens[0] + 1) % 40;
    float shut_changed = loss_of(tr, &b);
    assert_memory_equal(&shut, &shut_changed, sizeof(float));
    assert_true(compressor_grad_sq(m, tr) == 0.0);
    free_batch(&b);
    mn_trainer_free(tr);
    mn_model_free(m);
}

/* ---------------------------------------------------------------- threads and determinism */
/* What docs/model.md promises: training is bit-identical for the same thread count; across
 * thread counts the matrix products are split into other panels, which some OpenBLAS kernels
 * (Haswell, Zen) round differently, so results agree to rounding only. The thread count is
 * the handle's (mn_trainer_set_threads), never the process's OpenMP default. */

/* Large enough that every op runs on a team and every product is split into panels
 * (MN_PAR_MIN_ELEMS, MN_GEMM_SPLIT_MIN_MACS): logits of one turn are 4 x 32 x 512. */
static mn_config team_config(void) {
    return (mn_config){.vocab_size = 512, .d_model = 64, .n_heads = 4, .n_layers = 1, .n_comp_layers = 1,
                       .n_slots = 4, .max_turn_tokens = 32, .gate_bias_init = 0.0f};
}

/* OpenMP's default team size when main() started, before any test changed it. */
static int process_threads;

/* steps AdamW steps from seed's init on a trainer set to `threads`; returns the model. */
static mn_model *train_steps(mn_config c, uint64_t seed, int threads, int steps, float *losses) {
    mn_model *m = NULL;
    assert_int_equal(mn_model_create(&c, &m), MN_OK);
    assert_int_equal(mn_model_init(m, seed), MN_OK);
    mn_trainer *tr = NULL;
    assert_int_equal(mn_trainer_create(m, 4, 2, &tr), MN_OK);
    assert_int_equal(mn_trainer_set_threads(tr, threads), MN_OK);
    mn_adamw_config opt = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    for (int s = 0; s < steps; s++) {
        owned_batch b = random_batch(100 + (uint32_t)s, 4, 2, c.max_turn_tokens, c.vocab_size);
        losses[s] = loss_of(tr, &b);
        assert_int_equal(mn_adamw_step(tr, &opt, NULL), MN_OK);
        free_batch(&b);
    }
    mn_trainer_free(tr);
    return m;
}

static void assert_same_params(mn_model *a, mn_model *b) {
    assert_memory_equal(mn_model_params(a), mn_model_params(b), mn_model_num_params(a) * sizeof(float));
}

static void test_determinism_same_thread_count(void **state) {
    (void)state;
    const mn_config c = team_config();
    enum { STEPS = 3 };
    float l1a[STEPS], l1b[STEPS], l2a[STEPS], l2b[STEPS], lseed[STEPS];
    mn_model *a1 = train_steps(c, 11, 1, STEPS, l1a), *b1 = train_steps(c, 11, 1, STEPS, l1b);
    mn_model *a2 = train_steps(c, 11, 2, STEPS, l2a), *b2 = train_steps(c, 11, 2, STEPS, l2b);
    mn_model *other = train_steps(c, 12, 2, STEPS, lseed);
    /* the same thread count: the same bits, for one thread and for two */
    assert_memory_equal(l1a, l1b, sizeof l1a);
    assert_same_params(a1, b1);
    assert_memory_equal(l2a, l2b, sizeof l2a);
    assert_same_params(a2, b2);
    /* (and a different seed is a different run: the comparison can tell runs apart) */
    assert_memory_not_equal(mn_model_params(a2), mn_model_params(other), mn_model_num_params(a2) * sizeof(float));
    /* one thread against two: equal to rounding (bit-identical with some OpenBLAS kernels only) */
    for (int s = 0; s < STEPS; s++)
        assert_float_equal(l1a[s], l2a[s], 1e-5 * fabs(l1a[s]));
    mn_model_free(a1), mn_model_free(b1), mn_model_free(a2), mn_model_free(b2), mn_model_free(other);
}

/* Threads of this process (Linux: the entries of /proc/self/task); -1 where unreadable. */
static int process_thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* One forward + backward pass of a trainer. */
static void one_pass(mn_trainer *tr, const mn_config *c) {
    owned_batch b = random_batch(7, 4, 2, c->max_turn_tokens, c->vocab_size);
    loss_of(tr, &b);
    free_batch(&b);
}

/* One mn_update_batch of 16 full turns: inference large enough for teams and split products. */
static void one_update(mn_model *m, const mn_config *c) {
    enum { SESSIONS = 16 };
    owned_batch b = random_batch(9, SESSIONS, 1, c->max_turn_tokens, c->vocab_size);
    int64_t offsets[SESSIONS + 1];
    for (int i = 0; i <= SESSIONS; i++)
        offsets[i] = (int64_t)i * c->max_turn_tokens;
    size_t S = mn_state_floats(m);
    float *r = calloc(SESSIONS * S, sizeof(float));
    assert_int_equal(mn_update_batch(m, SESSIONS, b.tokens, offsets, r, r), MN_OK);
    free(r);
    free_batch(&b);
}

/* Asserts that the process gained at least `least` threads since `before` (0: none at all). */
static void assert_threads_grown(int before, int least, const char *what) {
    int grown = process_thread_count() - before;
    if (least == 0 ? grown != 0 : grown < least)
        fail_msg("%s added %d threads to the process (%s %d expected)", what, grown, least ? "at least" : "exactly",
                 least);
}

/* The team follows the handle, not the process: libgomp starts a worker thread the first time
 * a team needs it and keeps it, so work on more threads than any team before adds threads to
 * the process, and one-thread work under a large process default adds none. The bits follow
 * the handle too: 2 threads under a process default of 1 are the bits of 2 threads taken from
 * the process default. */
static void test_threads_follow_the_handle(void **state) {
    (void)state;
    const mn_config c = team_config();
    mn_model *m = NULL;
    assert_int_equal(mn_model_create(&c, &m), MN_OK);
    assert_int_equal(mn_model_init(m, 3), MN_OK);
    assert_int_equal(mn_model_set_threads(m, -2), MN_ERR_INVALID_ARG);

    enum { STEPS = 2 };
    float la[STEPS], lb[STEPS];
    omp_set_num_threads(1);
    mn_model *a = train_steps(c, 5, 2, STEPS, la);
    omp_set_num_threads(2);
    mn_model *b = train_steps(c, 5, 0, STEPS, lb);
    assert_memory_equal(la, lb, sizeof la);
    assert_same_params(a, b);
    mn_model_free(a), mn_model_free(b);

    /* teams before this test had at most max(process default, 2) threads */
    int before = process_thread_count();
    int known = process_threads > 2 ? process_threads : 2, big = known + 3, bigger = big + 2;
    if (before < 0 || omp_get_dynamic() || omp_get_max_active_levels() < 1 || omp_get_thread_limit() < bigger + 1) {
        omp_set_num_threads(process_threads);
        mn_model_free(m);
        skip(); /* no /proc, or OpenMP may shrink teams: the thread count says nothing */
    }
    /* one thread: the model's inference, and a trainer created from the model (it inherits) */
    omp_set_num_threads(bigger + 1);
    assert_int_equal(mn_model_set_threads(m, 1), MN_OK);
    mn_trainer *tr = NULL;
    assert_int_equal(mn_trainer_create(m, 4, 2, &tr), MN_OK);
    assert_int_equal(mn_trainer_set_threads(tr, -1), MN_ERR_INVALID_ARG);
    one_update(m, &c);
    one_pass(tr, &c);
    assert_threads_grown(before, 0, "one-thread work under a larger process default");
    /* more threads than any team before, under a process default of 1 */
    omp_set_num_threads(1);
    assert_int_equal(mn_model_set_threads(m, big), MN_OK);
    one_update(m, &c);
    assert_threads_grown(before, big - known, "inference on a model set to more threads");
    before = process_thread_count();
    assert_int_equal(mn_trainer_set_threads(tr, bigger), MN_OK);
    one_pass(tr, &c);
    assert_threads_grown(before, bigger - big, "a pass of a trainer set to more threads");
    omp_set_num_threads(process_threads);
    mn_trainer_free(tr);
    mn_model_free(m);
}

/* The single-session inference API gives the batch path's results for one episode, so
 * padding and batching change nothing. */
static void check_inference_matches_batch(int write_rule) {
    mn_model *m = small_model_with_rule(5, write_rule);
    const mn_config *c = mn_model_config(m);
    const int B = 3, T = 3, L = 9, V = c->vocab_size;
    owned_batch b = random_batch(9, B, T, L, V);
    mn_trainer *tr = NULL;
    assert_int_equal(mn_trainer_create(m, B, 2, &tr), MN_OK);
    size_t state_n = mn_state_floats(m);
    float *states = malloc((size_t)T * B * state_n * sizeof(float));
    float *logits = calloc((size_t)T * B * L * V, sizeof(float));
    mn_forward_outputs out = {.states = states, .logits = logits};
    mn_batch v = view(&b);
    float loss;
    assert_int_equal(mn_forward(tr, &v, &loss, &out), MN_OK);
    float *r = malloc(state_n * sizeof(float)), *lg = malloc((size_t)L * V * sizeof(float));
    for (int e = 0; e < B; e++) {
        assert_int_equal(mn_initial_state(m, r), MN_OK);
        for (int t = 0; t < T; t++) {
            int n = b.lengths[t * B + e];
            const int32_t *tok = b.tokens + ((size_t)t * B + e) * L;
            assert_int_equal(mn_logits(m, tok, n, r, lg), MN_OK);
            size_t worst = 0;
            const float *want = logits + ((size_t)t * B + e) * L * V;
            assert_true(tolerance_ratio(lg, want, (size_t)n * V, 1e-5, 1e-5, &worst) <= 1.0);
            assert_int_equal(mn_update(m, tok, n, r, r), MN_OK); /* in place */
            assert_true(tolerance_ratio(r, states + ((size_t)t * B + e) * state_n, state_n, 1e-5, 1e-5, &worst) <= 1.0);
        }
    }
    free(r), free(lg), free(states), free(logits);
    free_batch(&b);
    mn_trainer_free(tr);
    mn_model_free(m);
}

static void test_inference_matches_batch(void **state) {
    (void)state;
    for (int rule = MN_WRITE_GATE; rule <= MN_WRITE_DELTA; rule++)
        check_inference_matches_batch(rule);
}

/* Inference's compressor (mn_compress_staged) runs its last block past the keys and values on
 * the slot rows only (U reads nothing else): its U equals the slot rows of the whole padded
 * forward within 1e-6 of U's scale (observed: equal bit for bit), with ragged turns and with the
 * last block the first one or after a full one. */
static void test_compressor_slot_rows_equal_full(void **state) {
    (void)state;
    for (int layers = 1; layers <= 2; layers++) {
        mn_config c = small_config();
        c.n_comp_layers = layers;
        mn_model *m = NULL;
        assert_int_equal(mn_model_create(&c, &m), MN_OK);
        assert_int_equal(mn_model_init(m, 11), MN_OK);
        float *p = mn_model_params(m);
        for (size_t i = 0; i < mn_model_num_params(m); i++)
            p[i] *= 5.0f; /* as small_model: far from the init's near-identity blocks */
        enum { B = 3, L = 9 };
        const int k = c.n_slots, C = c.d_model, S = k + L, lens[B] = {L, 4, 1};
        const size_t kC = (size_t)k * C;
        int32_t ints[B * (4 + L) + B], tokens[L];
        assert_int_equal(S, 4 + L);
        float *memory = malloc(B * kC * sizeof(float));
        uint32_t x = 12345;
        for (size_t i = 0; i < B * kC; i++)
            memory[i] = (float)((x = x * 1664525u + 1013904223u) >> 8) / 16777216.0f * 2.0f - 1.0f;
        for (int e = 0; e < B; e++) {
            for (int i = 0; i < L; i++)
                tokens[i] = (int32_t)((x = x * 1664525u + 1013904223u) >> 8) % c.vocab_size;
            mn_turn_ids(k, tokens, lens[e], L, ints + e * S, NULL);
            ints[B * S + e] = k + lens[e];
        }
        mn_stack_acts full, slots;
        assert_int_equal(mn_stack_acts_alloc(&m->exec, &full, &m->config, layers, B, S, 1), MN_OK);
        assert_int_equal(mn_stack_acts_alloc(&m->exec, &slots, &m->config, layers, B, S, 1), MN_OK);
        mn_stack_forward(&m->exec, &full, &m->config, m->dev_views.wte, &m->dev_views.compressor, memory, ints, NULL,
                         ints + B * S, B, L, 0);
        mn_stack_forward_lanes(&m->exec, &slots, &m->config, m->dev_views.wte, &m->dev_views.compressor, memory, ints,
                               NULL, ints + B * S, NULL, MN_ROWS_SLOTS, B, L, 0);
        assert_int_equal(mn_exec_status(&m->exec), MN_OK);
        assert_int_equal(slots.M, B * k);
        for (int e = 0; e < B; e++) {
            const float *want = full.lnf + (size_t)e * S * C, *got = slots.lnf + e * kC;
            size_t worst = 0;
            double r = tolerance_ratio(got, want, kC, 1e-6, 1e-6 * max_abs(want, kC), &worst);
            if (!(r <= 1.0))
                fail_msg("%d compressor layers, lane %d: U[%zu] = %.9g, the full forward's %.9g", layers, e, worst,
                         (double)got[worst], (double)want[worst]);
        }
        mn_stack_acts_free(&m->exec, &full);
        mn_stack_acts_free(&m->exec, &slots);
        free(memory);
        mn_model_free(m);
    }
}

/* ---------------------------------------------------------------- bad input */
static void expect_config_error(mn_config c, const char *field) {
    mn_model *m = (mn_model *)0x1;
    assert_int_equal(mn_model_create(&c, &m), MN_ERR_CONFIG);
    assert_null(m);
    if (!strstr(mn_last_error(), field))
        fail_msg("error for %s does not name it: '%s'", field, mn_last_error());
}

static void test_invalid_config(void **state) {
    (void)state;
    mn_config c;
    c = small_config(), c.vocab_size = 1, expect_config_error(c, "vocab_size");
    c = small_config(), c.d_model = 0, expect_config_error(c, "d_model");
    c = small_config(), c.n_heads = 3, expect_config_error(c, "n_heads");
    c = small_config(), c.n_heads = 0, expect_config_error(c, "n_heads");
    c = small_config(), c.n_layers = 0, expect_config_error(c, "n_layers");
    c = small_config(), c.n_comp_layers = -1, expect_config_error(c, "n_comp_layers");
    c = small_config(), c.n_slots = 0, expect_config_error(c, "n_slots");
    c = small_config(), c.max_turn_tokens = 0, expect_config_error(c, "max_turn_tokens");
    c = small_config(), c.gate_bias_init = NAN, expect_config_error(c, "gate_bias_init");
    mn_model *m = NULL;
    assert_int_equal(mn_model_create(NULL, &m), MN_ERR_INVALID_ARG);
    mn_config ok = mn_config_demo();
    assert_int_equal(mn_config_validate(&ok), MN_OK);
}

static void test_bad_turns_and_shapes(void **state) {
    (void)state;
    mn_model *m = small_model(1);
    size_t n = mn_state_floats(m);
    float *r = malloc(n * sizeof(float)), *logits = malloc(40 * 20 * sizeof(float));
    mn_initial_state(m, r);
    int32_t tokens[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    assert_int_equal(mn_update(m, NULL, 3, r, r), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_update(m, tokens, 0, r, r), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "empty turn"));
    assert_int_equal(mn_update(m, tokens, 11, r, r), MN_ERR_INVALID_ARG); /* > max_turn_tokens */
    assert_int_equal(mn_logits(m, tokens, 3, NULL, logits), MN_ERR_INVALID_ARG);
    int32_t bad[3] = {1, 40, 2};
    assert_int_equal(mn_update(m, bad, 3, r, r), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "vocabulary"));
    bad[1] = -1;
    assert_int_equal(mn_logits(m, bad, 3, r, logits), MN_ERR_INVALID_ARG);
    r[5] = NAN;
    assert_int_equal(mn_update(m, tokens, 3, r, r), MN_ERR_NUMERIC);
    mn_initial_state(m, r);

    mn_trainer *tr = NULL;
    assert_int_equal(mn_trainer_create(m, 0, 2, &tr), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_trainer_create(m, 2, 0, &tr), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_trainer_create(m, 2, 2, &tr), MN_OK);
    owned_batch b = random_batch(1, 2, 3, 8, 40);
    mn_batch v = view(&b);
    float loss;
    v.B = 3; /* more episodes than the trainer holds */
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_ERR_INVALID_ARG);
    v = view(&b), v.max_len = 11; /* longer than max_turn_tokens */
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_ERR_INVALID_ARG);
    v = view(&b), v.lengths = NULL;
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_ERR_INVALID_ARG);
    v = view(&b);
    assert_int_equal(mn_forward_backward(NULL, &v, &loss, NULL), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_forward_backward(tr, NULL, &loss, NULL), MN_ERR_INVALID_ARG);
    b.lengths[2] = 0; /* an empty turn */
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_ERR_INVALID_ARG);
    b.lengths[2] = 9; /* longer than max_len */
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_ERR_INVALID_ARG);
    b.lengths[2] = 4;
    b.tokens[1] = 99; /* outside the vocabulary */
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "vocabulary"));
    b.tokens[1] = 3;
    b.weights[1] = NAN;
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_ERR_NUMERIC);
    memset(b.weights, 0, (size_t)b.T * b.B * b.L * sizeof(float));
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_ERR_INVALID_ARG); /* no targets */
    /* after all that, a good batch still works */
    owned_batch good = random_batch(2, 2, 3, 8, 40);
    mn_batch gv = view(&good);
    assert_int_equal(mn_forward_backward(tr, &gv, &loss, NULL), MN_OK);
    assert_true(isfinite(loss));

    /* a non-finite gradient is refused without touching parameters */
    float *params_before = malloc(mn_model_num_params(m) * sizeof(float));
    memcpy(params_before, mn_model_params(m), mn_model_num_params(m) * sizeof(float));
    mn_trainer_grads(tr)[17] = INFINITY;
    mn_adamw_config opt = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    float norm;
    assert_int_equal(mn_adamw_step(tr, &opt, &norm), MN_ERR_NUMERIC);
    assert_memory_equal(params_before, mn_model_params(m), mn_model_num_params(m) * sizeof(float));
    assert_int_equal(mn_trainer_step(tr), 0);
    opt.beta1 = 1.5f;
    assert_int_equal(mn_adamw_step(tr, &opt, &norm), MN_ERR_CONFIG);
    free(params_before);
    free_batch(&good);
    free_batch(&b);
    mn_trainer_free(tr);
    free(r), free(logits);
    mn_model_free(m);
}

static void test_freeze_keeps_tensors_bit_identical(void **state) {
    (void)state;
    mn_model *m = small_model(21);
    mn_trainer *tr = NULL;
    assert_int_equal(mn_trainer_create(m, 2, 2, &tr), MN_OK);
    assert_int_equal(mn_trainer_freeze(tr, "no-such-tensor", 1), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_trainer_freeze(tr, "decoder.", 1), MN_OK);
    assert_int_equal(mn_trainer_freeze(tr, "wte", 1), MN_OK);
    size_t P = mn_model_num_params(m);
    float *before = malloc(P * sizeof(float));
    memcpy(before, mn_model_params(m), P * sizeof(float));
    mn_adamw_config opt = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    for (int s = 0; s < 3; s++) {
        owned_batch b = random_batch(40 + (uint32_t)s, 2, 3, 8, 40);
        loss_of(tr, &b);
        assert_int_equal(mn_adamw_step(tr, &opt, NULL), MN_OK);
        free_batch(&b);
    }
    int frozen_seen = 0, trained_seen = 0;
    for (int i = 0; i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        mn_model_tensor(m, i, &t);
        int frozen = !strncmp(t.name, "decoder.", 8) || !strcmp(t.name, "wte");
        assert_int_equal(mn_trainer_is_frozen(tr, i), frozen);
        int same = !memcmp(before + t.offset, mn_model_params(m) + t.offset, t.size * sizeof(float));
        if (frozen) {
            assert_true(same);
            frozen_seen++;
        } else if (!same) {
            trained_seen++;
        }
    }
    assert_true(frozen_seen > 0 && trained_seen > 0);
    free(before);
    mn_trainer_free(tr);
    mn_model_free(m);
}

/* ---------------------------------------------------------------- streaming (carried states) */
/* Turns [first, first + T) of b as a batch of its own (turns are the outer axis). */
static mn_batch window_of(const owned_batch *b, int first, int T) {
    size_t turn = (size_t)b->B * b->L;
    return (mn_batch){.B = b->B, .T = T, .max_len = b->L, .tokens = b->tokens + first * turn,
                      .lengths = b->lengths + (size_t)first * b->B, .loss_weights = b->weights + first * turn};
}

static float *grads_copy(mn_model *m, mn_trainer *tr) {
    size_t n = mn_model_num_params(m);
    float *g = malloc(n * sizeof(float));
    memcpy(g, mn_trainer_grads(tr), n * sizeof(float));
    return g;
}

/* Window 1 then window 2 carrying window 1's final states is the 2T batch truncated at T:
 * the same per-turn losses, and the two windows' gradients sum to the batch's. */
static void streaming_case(float reconstruct, int rule) {
    const int B = 2, T = 3;
    mn_model *m = small_model_with_rule(11, rule);
    const size_t P = mn_model_num_params(m), state = mn_state_floats(m);
    mn_trainer *tr = NULL;
    assert_int_equal(mn_trainer_create(m, B, T, &tr), MN_OK);
    assert_int_equal(mn_trainer_set_reconstruction(tr, reconstruct), MN_OK);
    owned_batch b = random_batch(21, B, 2 * T, 8, 40);
    mn_batch whole = view(&b);
    const double scale = 1.0 / mn_batch_loss_weight(&whole);

    float want_turns[6], turns[6], *final = malloc((size_t)B * state * sizeof(float));
    double ls;
    mn_forward_outputs out = {.turn_losses = want_turns};
    assert_int_equal(mn_forward_backward_scaled(tr, &whole, scale, &ls, &out), MN_OK);
    float *want = grads_copy(m, tr);

    mn_batch w1 = window_of(&b, 0, T), w2 = window_of(&b, T, T);
    out = (mn_forward_outputs){.turn_losses = turns, .final_states = final};
    assert_int_equal(mn_forward_backward_scaled(tr, &w1, scale, &ls, &out), MN_OK);
    float *got = grads_copy(m, tr);
    unsigned char carry[2] = {1, 1};
    w2.initial_states = final, w2.carry = carry;
    out = (mn_forward_outputs){.turn_losses = turns + T};
    assert_int_equal(mn_forward_backward_scaled(tr, &w2, scale, &ls, &out), MN_OK);
    for (size_t i = 0; i < P; i++)
        got[i] += mn_trainer_grads(tr)[i];

    assert_memory_equal(turns, want_turns, sizeof turns); /* the same ops on the same states */
    size_t worst = 0;
    double ratio = tolerance_ratio(got, want, P, 1e-5, 1e-7 * max_abs(want, P), &worst);
    if (!(ratio <= 1.0))
        fail_msg("streaming (reconstruct %g): gradient %zu is %g, the 2T batch's %g", (double)reconstruct, worst,
                 (double)got[worst], (double)want[worst]);

    /* the carry matters: window 2 from R_0 reads other states */
    w2.carry = NULL;
    assert_int_equal(mn_forward_backward_scaled(tr, &w2, scale, &ls, &out), MN_OK);
    assert_true(fabsf(turns[T] - want_turns[T]) > 1e-4f * fabsf(want_turns[T]));
    free(want), free(got), free(final);
    free_batch(&b);
    mn_trainer_free(tr);
    mn_model_free(m);
}

static void test_streaming_windows_equal_the_long_batch(void **state) {
    (void)state;
    for (int rule = MN_WRITE_GATE; rule <= MN_WRITE_DELTA; rule++) { /* every write rule carries */
        streaming_case(0.0f, rule);
        streaming_case(0.5f, rule); /* the reconstruction of window 1's last turn reads R_T too */
    }
}

/* R_0's gradient comes from the lanes that start from it: a carried lane adds nothing. */
static void test_streaming_r0_gradient_from_fresh_lanes(void **state) {
    (void)state;
    const int B = 3, T = 2;
    mn_model *m = small_model(12);
    const size_t state_n = mn_state_floats(m);
    mn_tensor_info r0;
    assert_int_equal(mn_model_find_tensor(m, "memory.r0", &r0), MN_OK);
    mn_trainer *tr = NULL;
    assert_int_equal(mn_trainer_create(m, B, T, &tr), MN_OK);
    owned_batch b = random_batch(5, B, T, 8, 40);
    float *initial = malloc((size_t)B * state_n * sizeof(float));
    for (size_t i = 0; i < (size_t)B * state_n; i++)
        initial[i] = (float)sin(0.37 * (double)i);
    unsigned char carry[3] = {1, 0, 1};
    mn_batch v = view(&b);
    v.initial_states = initial, v.carry = carry;
    double ls;
    assert_int_equal(mn_forward_backward_scaled(tr, &v, 0.01, &ls, NULL), MN_OK);
    float *mixed = grads_copy(m, tr);

    /* lane 1 alone, from R_0 */
    owned_batch one = random_batch(0, 1, T, 8, 40);
    for (int t = 0; t < T; t++) {
        one.lengths[t] = b.lengths[t * B + 1];
        memcpy(one.tokens + (size_t)t * 8, b.tokens + ((size_t)t * B + 1) * 8, 8 * sizeof(int32_t));
        memcpy(one.weights + (size_t)t * 8, b.weights + ((size_t)t * B + 1) * 8, 8 * sizeof(float));
    }
    mn_batch vo = view(&one);
    assert_int_equal(mn_forward_backward_scaled(tr, &vo, 0.01, &ls, NULL), MN_OK);
    const float *alone = mn_trainer_grads(tr) + r0.offset;
    size_t worst = 0;
    assert_true(max_abs(alone, r0.size) > 0.0);
    /* the same sums from batches of 3 and 1 lanes: rounding apart (1.6e-7 of the largest on an
     * AVX-512 CPU's sanitize build); a carried lane's share would be of the largest's order */
    assert_true(tolerance_ratio(mixed + r0.offset, alone, r0.size, 1e-5, 1e-6 * max_abs(alone, r0.size), &worst) <= 1.0);

    /* every lane carried: no gradient reaches R_0, the rest still learns */
    memset(carry, 1, sizeof carry);
    assert_int_equal(mn_forward_backward_scaled(tr, &v, 0.01, &ls, NULL), MN_OK);
    assert_true(max_abs(mn_trainer_grads(tr) + r0.offset, r0.size) == 0.0);
    assert_true(max_abs(mn_trainer_grads(tr), mn_model_num_params(m)) > 0.0);

    /* no lane carried is today's batch, bit for bit, whatever initial_states holds */
    float *plain = NULL;
    v.carry = NULL, v.initial_states = NULL;
    assert_int_equal(mn_forward_backward_scaled(tr, &v, 0.01, &ls, NULL), MN_OK);
    plain = grads_copy(m, tr);
    memset(carry, 0, sizeof carry);
    v.carry = carry, v.initial_states = initial;
    assert_int_equal(mn_forward_backward_scaled(tr, &v, 0.01, &ls, NULL), MN_OK);
    assert_memory_equal(plain, mn_trainer_grads(tr), mn_model_num_params(m) * sizeof(float));
    free(plain), free(mixed), free(initial);
    free_batch(&one), free_batch(&b);
    mn_trainer_free(tr);
    mn_model_free(m);
}

static void test_streaming_bad_states(void **state) {
    (void)state;
    mn_model *m = small_model(13);
    mn_trainer *tr = NULL;
    assert_int_equal(mn_trainer_create(m, 2, 2, &tr), MN_OK);
    owned_batch b = random_batch(6, 2, 2, 8, 40);
    mn_batch v = view(&b);
    unsigned char carry[2] = {0, 1};
    v.carry = carry;
    float loss;
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "initial_states is NULL"));
    assert_int_equal(mn_forward(tr, &v, &loss, NULL), MN_ERR_INVALID_ARG);
    float *initial = calloc(2 * mn_state_floats(m), sizeof(float));
    v.initial_states = initial;
    initial[mn_state_floats(m) + 3] = NAN;
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_ERR_NUMERIC);
    assert_non_null(strstr(mn_last_error(), "initial_states of lane 1 is not finite"));
    carry[1] = 0; /* a lane that does not carry never reads its row */
    assert_int_equal(mn_forward_backward(tr, &v, &loss, NULL), MN_OK);
    free(initial);
    free_batch(&b);
    mn_trainer_free(tr);
    mn_model_free(m);
}

static void test_tensor_table(void **state) {
    (void)state;
    mn_model *m = small_model(1);
    const mn_config *c = mn_model_config(m);
    size_t total = 0;
    for (int i = 0; i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        assert_int_equal(mn_model_tensor(m, i, &t), MN_OK);
        assert_int_equal(t.offset, total); /* contiguous, in table order */
        total += t.size;
    }
    assert_int_equal(total, mn_model_num_params(m));
    mn_tensor_info t;
    assert_int_equal(mn_model_find_tensor(m, "decoder.h.1.attn.c_attn.weight", &t), MN_OK);
    assert_int_equal(t.shape[0], c->d_model);
    assert_int_equal(t.shape[1], 3 * c->d_model);
    assert_true(t.decay);
    assert_int_equal(mn_model_find_tensor(m, "compressor.h.0.ln_2.bias", &t), MN_OK);
    assert_false(t.decay);
    assert_int_equal(mn_model_find_tensor(m, "memory.r0", &t), MN_OK);
    assert_false(t.decay);
    assert_int_equal(mn_model_find_tensor(m, "compressor.h.1.ln_2.bias", &t), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_model_tensor(m, -1, &t), MN_ERR_INVALID_ARG);
    mn_model_free(m);
}

/* Generation by the full pass at every token (mn_next_logits of the whole sequence, then
 * mn_sample), as mn_generate did before it ran on the cache: the reference of its tokens. */
static int full_pass_generate(mn_model *m, const float *r, const int32_t *prefix, int n_prefix, int max_tokens,
                              const mn_sampling *sp, uint64_t rng, int32_t *out) {
    const int V = mn_model_config(m)->vocab_size;
    float *logits = malloc((size_t)V * sizeof *logits);
    assert_non_null(logits);
    memcpy(out, prefix, (size_t)n_prefix * sizeof *out);
    int n = n_prefix;
    while (n < max_tokens) {
        assert_int_equal(mn_next_logits(m, out, n, r, logits), MN_OK);
        assert_int_equal(mn_sample(logits, V, sp, &rng, &out[n]), MN_OK);
        n++;
    }
    free(logits);
    return n;
}

/* The decoder's key/value cache against the full pass, on model m: greedy generation started
 * from several prefixes (each with its own state) and advanced together, some sequences stopping
 * early, must pick the tokens of the full pass at every token, with every step's logits equal to
 * mn_next_logits of the whole sequence to 1e-5; mn_generate (on the cache) picks the full pass's
 * tokens, greedy and sampled, with and without a stop token; choices scored from forks of a
 * started prefix equal mn_sequence_log_probs. */
static void check_cache_against_full_pass(mn_model *m, const char *name) {
    const mn_config *c = mn_model_config(m);
    const int V = c->vocab_size, N = c->max_turn_tokens;
    enum { SEQS = 5, STEPS = 12 };
    const size_t S = mn_state_floats(m);
    float *states = malloc(2 * S * sizeof *states), *logits = malloc((size_t)SEQS * V * sizeof *logits);
    float *one = malloc((size_t)V * sizeof *one);
    int32_t *tokens = malloc((size_t)SEQS * N * sizeof *tokens), *seq = malloc((size_t)SEQS * N * sizeof *seq);
    int32_t *full = malloc((size_t)N * sizeof *full);
    assert_true(states && logits && one && tokens && seq && full);
    assert_int_equal(mn_initial_state(m, states), MN_OK);
    int32_t turn[] = {5, 17, 3, 40, 9, 11};
    assert_int_equal(mn_update(m, turn, 6, states, states + S), MN_OK);
    int64_t offsets[SEQS + 1] = {0};
    int len[SEQS], live[SEQS], n_live = SEQS;
    const float *r[SEQS];
    uint32_t x = 99;
    for (int i = 0; i < SEQS; i++) { /* prefixes of 1 to N/2 tokens; the last fills the turn in 2 steps */
        len[i] = i == SEQS - 1 ? N - 2 : 1 + (int)((x = x * 1664525u + 1013904223u) >> 8) % (N / 2);
        for (int j = 0; j < len[i]; j++)
            tokens[offsets[i] + j] = (int32_t)(((x = x * 1664525u + 1013904223u) >> 8) % (uint32_t)V);
        offsets[i + 1] = offsets[i] + len[i];
        memcpy(seq + (size_t)i * N, tokens + offsets[i], (size_t)len[i] * sizeof(int32_t));
        r[i] = states + (size_t)(i % 2) * S;
        live[i] = i;
    }
    mn_decoder_cache *dc = NULL;
    assert_int_equal(mn_decoder_cache_open(m, SEQS, &dc), MN_OK);
    assert_int_equal(mn_decoder_cache_start(dc, SEQS, tokens, offsets, r, logits), MN_OK);
    const mn_sampling greedy = {0.0f, 0, 1.0f};
    double worst = 0.0;
    for (int step = 0; n_live; step++) {
        int32_t next[SEQS];
        int n_next = 0, still[SEQS];
        for (int i = 0; i < n_live; i++) {
            const int s = live[i];
            int32_t *t = seq + (size_t)s * N;
            assert_int_equal(mn_next_logits(m, t, len[s], r[s], one), MN_OK);
            for (int v = 0; v < V; v++) {
                double d = fabs((double)logits[(size_t)i * V + v] - one[v]) / (1.0 + fabs(one[v]));
                worst = d > worst ? d : worst;
            }
            uint64_t rng = 1;
            assert_int_equal(mn_sample(logits + (size_t)i * V, V, &greedy, &rng, &t[len[s]]), MN_OK);
            len[s]++;
            /* sequence 1 stops after 3 tokens; the long one when the turn is full */
            if ((s != 1 || step < 2) && len[s] < N && step + 1 < STEPS) {
                next[n_next] = t[len[s] - 1];
                still[n_next++] = s;
            }
        }
        n_live = n_next;
        memcpy(live, still, (size_t)n_live * sizeof *live);
        if (n_live)
            assert_int_equal(mn_decoder_cache_append(dc, n_live, live, next, logits), MN_OK);
    }
    printf("%s: cached logits within %.2g of the full pass\n", name, worst);
    /* relative to 1 + |logit|: OpenBLAS sums a product row in another order when the call has
     * another row count on some CPUs (1.1e-5 for recall-small.h5 on an Intel Xeon with AVX-512,
     * Haswell kernels); a wrong cache entry is off by whole units */
    assert_true(worst < 5e-5);
    const mn_sampling sampled = {0.9f, 20, 0.95f};
    int32_t *gen = malloc((size_t)N * sizeof *gen);
    assert_non_null(gen);
    for (int i = 0; i < SEQS; i++) { /* the cache's greedy tokens are the full pass's, and mn_generate's */
        const int np = (int)(offsets[i + 1] - offsets[i]);
        int n_out = 0;
        uint64_t rng = 1;
        assert_int_equal(full_pass_generate(m, r[i], tokens + offsets[i], np, len[i], &greedy, 1, full), len[i]);
        assert_memory_equal(full, seq + (size_t)i * N, (size_t)len[i] * sizeof(int32_t));
        assert_int_equal(mn_generate(m, r[i], tokens + offsets[i], np, len[i], NULL, 0, &greedy, &rng, gen, &n_out),
                         MN_OK);
        assert_int_equal(n_out, len[i]);
        assert_memory_equal(gen, full, (size_t)len[i] * sizeof(int32_t));
        if (i >= 2)
            continue;
        /* sampled to the end of the turn (two of the prefixes), then stopped at the 3rd token it drew */
        int want = full_pass_generate(m, r[i], tokens + offsets[i], np, N, &sampled, 7 + i, full);
        rng = 7 + (uint64_t)i;
        assert_int_equal(mn_generate(m, r[i], tokens + offsets[i], np, N, NULL, 0, &sampled, &rng, gen, &n_out), MN_OK);
        assert_int_equal(n_out, want);
        assert_memory_equal(gen, full, (size_t)want * sizeof(int32_t));
        if (want >= np + 3) { /* the same draws, cut after the stop token's first appearance */
            const int32_t stop = full[np + 2];
            for (want = np + 1; full[want - 1] != stop; want++) {
            }
            rng = 7 + (uint64_t)i;
            assert_int_equal(mn_generate(m, r[i], tokens + offsets[i], np, N, &stop, 1, &sampled, &rng, gen, &n_out),
                             MN_OK);
            assert_int_equal(n_out, want);
            assert_memory_equal(gen, full, (size_t)want * sizeof(int32_t));
        }
    }
    free(gen);
    /* the full turn's last token still fits the cache's k + N rows; one more is refused, naming
     * the sequence */
    int32_t tok0 = 0;
    int last = SEQS - 1;
    assert_int_equal(len[last], N);
    assert_int_equal(mn_decoder_cache_append(dc, 1, &last, seq + (size_t)last * N + N - 1, logits), MN_OK);
    assert_int_equal(mn_decoder_cache_append(dc, 1, &last, &tok0, logits), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "sequence 4"));

    /* choices from forks of a prefix: sequences 1.. copy sequence 0 (restarted), then score */
    enum { CHOICES = 3 };
    const int32_t prefix[] = {7, 2, 30, 4}, choice[CHOICES][4] = {{1, 2, 3, 4}, {9}, {12, 0, 5}};
    const int clen[CHOICES] = {4, 1, 3};
    int64_t po[2] = {0, 4};
    assert_int_equal(mn_decoder_cache_start(dc, 1, prefix, po, &r[1], NULL), MN_OK);
    int src[CHOICES] = {0, 0, 0}, dst[CHOICES] = {1, 2, 3};
    assert_int_equal(mn_decoder_cache_fork(dc, CHOICES, src, dst), MN_OK);
    float got[CHOICES][4], *outs[CHOICES] = {got[0], got[1], got[2]};
    const int32_t *ctok[CHOICES] = {choice[0], choice[1], choice[2]};
    assert_int_equal(mn_decoder_cache_score(dc, CHOICES, dst, ctok, clen, outs), MN_OK);
    int32_t whole[CHOICES * 8];
    int64_t wo[CHOICES + 1] = {0};
    int first[CHOICES];
    const float *wr[CHOICES] = {r[1], r[1], r[1]};
    for (int i = 0; i < CHOICES; i++) {
        memcpy(whole + wo[i], prefix, sizeof prefix);
        memcpy(whole + wo[i] + 4, choice[i], (size_t)clen[i] * sizeof(int32_t));
        wo[i + 1] = wo[i] + 4 + clen[i];
        first[i] = 4;
    }
    float want[CHOICES * 8];
    assert_int_equal(mn_sequence_log_probs(m, CHOICES, whole, wo, wr, first, want), MN_OK);
    for (int i = 0; i < CHOICES; i++)
        for (int j = 0; j < clen[i]; j++)
            assert_true(fabs(got[i][j] - want[wo[i] + 4 + j]) < 1e-5 * (1 + fabs(want[wo[i] + 4 + j])));
    mn_decoder_cache_close(dc);
    free(states), free(logits), free(one), free(tokens), free(seq), free(full);
}

static void test_decoder_cache_equals_full_pass(void **state) {
    (void)state;
    tiny_fixture fx;
    tiny_fixture_open(&fx);
    mn_model *m = tiny_fixture_model(&fx);
    check_cache_against_full_pass(m, "tiny fixture");
    mn_model_free(m);
    tiny_fixture_close(&fx);
    const char *dir = getenv("MNEMO_FIXTURES");
    char path[4096];
    snprintf(path, sizeof path, "%s/../../data/models/recall-small.h5", dir ? dir : "tests/fixtures");
    if (mn_model_load(path, &m) != MN_OK)
        fail_msg("%s: %s", path, mn_last_error());
    check_cache_against_full_pass(m, "recall-small.h5");
    mn_model_free(m);
}

int main(void) {
    process_threads = omp_get_max_threads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_forward_backward),
        cmocka_unit_test(test_fixture_adamw),
        cmocka_unit_test(test_padding_is_not_computed),
        /* the write rules (docs/model.md): the same oracle checks on their own fixtures */
        cmocka_unit_test_setup_teardown(test_fixture_forward_backward, tiny_fixture_use_slot, tiny_fixture_use_gate),
        cmocka_unit_test_setup_teardown(test_fixture_adamw, tiny_fixture_use_slot, tiny_fixture_use_gate),
        cmocka_unit_test_setup_teardown(test_padding_is_not_computed, tiny_fixture_use_slot, tiny_fixture_use_gate),
        cmocka_unit_test_setup_teardown(test_fixture_forward_backward, tiny_fixture_use_delta, tiny_fixture_use_gate),
        cmocka_unit_test_setup_teardown(test_fixture_adamw, tiny_fixture_use_delta, tiny_fixture_use_gate),
        cmocka_unit_test_setup_teardown(test_padding_is_not_computed, tiny_fixture_use_delta, tiny_fixture_use_gate),
        cmocka_unit_test(test_gradient_flows_through_memory),
        cmocka_unit_test(test_last_token_rows_skipped),
        cmocka_unit_test(test_determinism_same_thread_count),
        cmocka_unit_test(test_threads_follow_the_handle),
        cmocka_unit_test(test_inference_matches_batch),
        cmocka_unit_test(test_compressor_slot_rows_equal_full),
        cmocka_unit_test(test_invalid_config),
        cmocka_unit_test(test_bad_turns_and_shapes),
        cmocka_unit_test(test_tensor_table),
        cmocka_unit_test(test_freeze_keeps_tensors_bit_identical),
        cmocka_unit_test(test_streaming_windows_equal_the_long_batch),
        cmocka_unit_test(test_streaming_r0_gradient_from_fresh_lanes),
        cmocka_unit_test(test_streaming_bad_states),
        cmocka_unit_test(test_decoder_cache_equals_full_pass),
    };
    return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
