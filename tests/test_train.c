/* `mnemo train` through the real binary (MNEMO_BIN): config layering, the recipes, bit-identical
 * resume (synthetic recall and token shards), SIGINT/SIGTERM, refused checkpoints, no test
 * hooks in the shipped binary (test_train_hooks.c runs them), the training log's probe
 * accuracy against `mnemo eval`'s; the library pieces it uses (schedule, curriculum, recall
 * episodes, multiple-choice scoring); and the integration test that the memory learns. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cblas.h>
#include <omp.h>

#include "core/hash.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "mnemo_train.h"
#include "model/score.h"
#include "train/recall.h"
#include "train/schedule.h"

#include "cli_harness.h"

/* ---------------------------------------------------------------- running the CLI */
static int setup_work_dir(void **state) {
    (void)state;
    return make_work_dir("mnemo-train");
}

static int remove_work_dir(void **state) {
    (void)state;
    return rm_work_dir();
}

/* Starts `mnemo ARGS...` (NULL-terminated list) with stdout/stderr in <log>.out/.err. */
static pid_t spawn_mnemo(const char *log, const char *const *args) { return spawn_logged(log, NULL, args, 0); }

/* Runs and checks the exit code; on a mismatch prints the logs. */
static void run_expect(int want, const char *log, const char *const *args) {
    check_exit(wait_exit(spawn_mnemo(log, args)), want, "", log, args);
}

/* ---------------------------------------------------------------- metrics */
#define MAX_STEPS 4096
typedef struct {
    double loss[MAX_STEPS + 1], grad_norm[MAX_STEPS + 1];
    int have[MAX_STEPS + 1], skipped[MAX_STEPS + 1];
    int evals;
    json_t *last_eval;
} metrics;

/* Reads <run>/metrics.jsonl: the last record of each step, and the last eval record. */
static metrics *read_metrics(const char *run_dir) {
    metrics *m = calloc(1, sizeof *m);
    char path[700];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("no %s", path);
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        json_error_t e;
        json_t *o = json_loads(line, 0, &e);
        if (!o)
            fail_msg("%s: bad JSON line: %s", path, e.text);
        json_t *step = json_object_get(o, "step");
        if (json_object_get(o, "eval")) {
            m->evals++;
            if (m->last_eval)
                json_decref(m->last_eval);
            m->last_eval = o;
            continue;
        }
        json_t *loss = json_object_get(o, "loss");
        if (step && json_object_get(o, "skipped")) {
            int s = (int)json_integer_value(step);
            if (s >= 0 && s <= MAX_STEPS) {
                m->have[s] = 1;
                m->loss[s] = json_is_number(loss) ? json_number_value(loss) : NAN;
                m->grad_norm[s] = json_is_number(json_object_get(o, "grad_norm"))
                                      ? json_number_value(json_object_get(o, "grad_norm"))
                                      : NAN;
                m->skipped[s] = json_is_true(json_object_get(o, "skipped"));
            }
        }
        json_decref(o);
    }
    fclose(f);
    return m;
}

static void free_metrics(metrics *m) {
    if (m->last_eval)
        json_decref(m->last_eval);
    free(m);
}

static void assert_same_curve(const metrics *a, const metrics *b, int from, int to) {
    for (int s = from; s <= to; s++) {
        if (!a->have[s] || !b->have[s])
            fail_msg("step %d missing from the metrics", s);
        if ((float)a->loss[s] != (float)b->loss[s] || (float)a->grad_norm[s] != (float)b->grad_norm[s])
            fail_msg("step %d: loss %.9g vs %.9g, grad norm %.9g vs %.9g", s, a->loss[s], b->loss[s], a->grad_norm[s],
                     b->grad_norm[s]);
    }
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* ---------------------------------------------------------------- library pieces */
static void test_lr_schedule_and_curriculum(void **state) {
    (void)state;
    mn_lr_schedule s = {1e-3, 1e-4, 10, 110};
    assert_true(fabs(mn_lr_at(&s, 0) - 1e-4) < 1e-15);     /* warmup: (0+1)/10 of the peak */
    assert_true(fabs(mn_lr_at(&s, 9) - 1e-3) < 1e-15);     /* end of warmup: the peak */
    assert_true(fabs(mn_lr_at(&s, 10) - 1e-3) < 1e-15);    /* cosine starts at the peak */
    assert_true(fabs(mn_lr_at(&s, 60) - 5.5e-4) < 1e-12);  /* halfway: the mean of peak and floor */
    assert_true(fabs(mn_lr_at(&s, 110) - 1e-4) < 1e-15);   /* the floor, and after it */
    assert_true(fabs(mn_lr_at(&s, 500) - 1e-4) < 1e-15);
    for (int64_t t = 10; t < 110; t++)
        assert_true(mn_lr_at(&s, t + 1) <= mn_lr_at(&s, t));

    mn_curriculum c;
    OK(mn_curriculum_doubling(2, 12, 100, &c));
    assert_int_equal(c.n, 4);
    int turns[] = {2, 4, 8, 12};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(c.turns[i], turns[i]);
        assert_int_equal(c.start_step[i], 100 * i);
    }
    assert_int_equal(mn_curriculum_stage_at(&c, 0), 0);
    assert_int_equal(mn_curriculum_stage_at(&c, 99), 0);
    assert_int_equal(mn_curriculum_stage_at(&c, 100), 1);
    assert_int_equal(mn_curriculum_stage_at(&c, 1000000), 3);
    OK(mn_curriculum_doubling(2, 12, 0, &c));
    assert_int_equal(c.n, 1);
    assert_int_equal(c.turns[0], 12);
    mn_curriculum bad = {.start_step = {0, 5, 5}, .turns = {2, 4, 6}, .n = 3};
    assert_int_equal(mn_curriculum_validate(&bad, 6), MN_ERR_CONFIG);
    bad = (mn_curriculum){.start_step = {1}, .turns = {2}, .n = 1};
    assert_int_equal(mn_curriculum_validate(&bad, 6), MN_ERR_CONFIG);
    bad = (mn_curriculum){.start_step = {0, 5}, .turns = {4, 2}, .n = 2};
    assert_int_equal(mn_curriculum_validate(&bad, 6), MN_ERR_CONFIG);
}

static mn_recall_task small_task(void) {
    return (mn_recall_task){.vocab_size = 64, .n_keys = 8, .n_values = 16, .filler_min = 1, .filler_max = 3,
                            .facts = 2, .n_choices = 4, .text_weight = 1.0f, .answer_weight = 5.0f};
}

static void test_recall_episodes(void **state) {
    (void)state;
    mn_recall_task t = small_task();
    const int B = 8, T = 12, L = mn_recall_max_len(&t);
    assert_int_equal(L, 5);
    int32_t tok[12 * 8 * 5], len[12 * 8], tok2[12 * 8 * 5];
    float w[12 * 8 * 5];
    mn_recall_probe probes[16];
    mn_rng rng, rng2;
    mn_rng_seed(&rng, 5);
    mn_rng_seed(&rng2, 5);
    OK(mn_recall_fill_batch(&t, &rng, B, T, L, 8, 11, tok, len, w, probes));
    /* the RNG stream does not depend on whether the probes are wanted */
    OK(mn_recall_fill_batch(&t, &rng2, B, T, L, 8, 11, tok2, len, w, NULL));
    assert_memory_equal(tok, tok2, sizeof tok);
    assert_memory_equal(rng.s, rng2.s, sizeof rng.s);
    OK(mn_recall_fill_batch(&t, &rng, B, T, L, 8, 11, tok, len, w, probes)); /* weights of this one */
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < 2; j++) {
            const mn_recall_probe *p = &probes[b * 2 + j];
            int d = p->question_turn - p->fact_turn;
            assert_true(d >= 8 && d <= 11);
            const int32_t *fact = tok + ((size_t)p->fact_turn * B + b) * L;
            const int32_t *q = tok + ((size_t)p->question_turn * B + b) * L;
            const float *qw = w + ((size_t)p->question_turn * B + b) * L;
            assert_int_equal(fact[0], MN_RECALL_FACT);
            assert_int_equal(fact[1], p->key);
            assert_int_equal(fact[2], p->value);
            assert_int_equal(q[0], MN_RECALL_ASK);
            assert_int_equal(q[1], p->key);
            assert_int_equal(q[2], p->value);
            assert_true(qw[2] == 5.0f && qw[0] == 0.0f);
            assert_int_equal(p->choices[p->answer_index], p->value);
            const mn_recall_probe *other = &probes[b * 2 + (1 - j)];
            assert_true(other->key != p->key && other->value != p->value);
            int has_other = 0; /* the episode's other value is among the distractors */
            for (int i = 0; i < p->n_choices; i++) {
                has_other |= p->choices[i] == other->value;
                for (int k = 0; k < i; k++)
                    assert_true(p->choices[i] != p->choices[k]);
            }
            assert_true(has_other);
        }
        for (int turn = 0; turn < T; turn++) {
            int n = len[turn * B + b];
            const int32_t *x = tok + ((size_t)turn * B + b) * L;
            assert_true(n >= 3 && n <= L);
            assert_int_equal(x[n - 1], MN_RECALL_EOT);
            for (int i = n; i < L; i++)
                assert_int_equal(x[i], MN_RECALL_PAD);
            if (x[0] == MN_RECALL_CHAT) /* filler words never are keys or values */
                for (int i = 1; i < n - 1; i++)
                    assert_true(x[i] >= MN_RECALL_FIRST_KEY + 8 + 16);
        }
    }
    t.vocab_size = 29; /* 5 + 8 + 16: no filler words left */
    assert_int_equal(mn_recall_fill_batch(&t, &rng, B, T, L, 1, 2, tok, len, w, NULL), MN_ERR_CONFIG);
    t = small_task();
    assert_int_equal(mn_recall_fill_batch(&t, &rng, B, T, L, 5, 12, tok, len, w, NULL), MN_ERR_INVALID_ARG);
}

/* mn_score_choices against a direct computation from mn_logits. */
static void test_score_choices(void **state) {
    (void)state;
    mn_config c = {.vocab_size = 30, .d_model = 16, .n_heads = 2, .n_layers = 1, .n_comp_layers = 1, .n_slots = 2,
                   .max_turn_tokens = 8, .gate_bias_init = -2.0f};
    mn_model *m = NULL;
    OK(mn_model_create(&c, &m));
    OK(mn_model_init(m, 3));
    float *p = mn_model_params(m); /* larger weights, so that choices differ clearly */
    for (size_t i = 0; i < mn_model_num_params(m); i++)
        p[i] *= 20.0f;
    float r[2 * 16];
    OK(mn_initial_state(m, r));
    int32_t prefix[] = {1, 7, 9};
    int32_t c0[] = {4}, c1[] = {5, 6, 2}, c2[] = {11, 3};
    const int32_t *choices[] = {c0, c1, c2};
    int lens[] = {1, 3, 2};
    double scores[3];
    int best = -1;
    OK(mn_score_choices(m, r, prefix, 3, choices, lens, 3, scores, &best));
    int argmax = 0;
    for (int i = 0; i < 3; i++) {
        int32_t seq[8];
        memcpy(seq, prefix, sizeof prefix);
        memcpy(seq + 3, choices[i], (size_t)lens[i] * sizeof(int32_t));
        int n = 3 + lens[i];
        float logits[8 * 30];
        OK(mn_logits(m, seq, n, r, logits));
        double sum = 0;
        for (int j = 3; j < n; j++) {
            const float *row = logits + (size_t)(j - 1) * 30;
            double z = 0;
            for (int v = 0; v < 30; v++)
                z += exp((double)row[v]);
            sum += (double)row[seq[j]] - log(z);
        }
        double want = sum / lens[i];
        /* all choices in one batched decoder pass, its log-softmax in float */
        assert_true(fabs(scores[i] - want) < 1e-5 * (1 + fabs(want)));
        if (want > scores[argmax] + 1e-12)
            argmax = i;
    }
    assert_int_equal(best, argmax);
    assert_true(scores[0] != scores[1] && scores[1] != scores[2]);
    /* a question turn is read into memory first: the same as updating R by hand */
    int32_t question[] = {2, 8, 8, 3};
    mn_probe_tokens probe = {question, 4, prefix, 3, choices, lens, 3};
    double via_probe[3], by_hand[3];
    OK(mn_score_probe(m, r, &probe, via_probe, NULL));
    float rq[2 * 16];
    OK(mn_update(m, question, 4, r, rq));
    OK(mn_score_choices(m, rq, prefix, 3, choices, lens, 3, by_hand, NULL));
    assert_memory_equal(via_probe, by_hand, sizeof by_hand);
    int32_t long_choice[8] = {0};
    const int32_t *too_long[] = {long_choice};
    int too_long_len[] = {6};
    assert_int_equal(mn_score_choices(m, r, prefix, 3, too_long, too_long_len, 1, scores, NULL), MN_ERR_INVALID_ARG);
    mn_model_free(m);
}

/* ---------------------------------------------------------------- the CLI */
static void test_config_layers_and_errors(void **state) {
    (void)state;
    FILE *f = fopen(wpath("cfg.json"), "w");
    fputs("{\"lr\": 0.5, \"batch\": 3, \"task\": \"recall\", \"freeze_decoder\": true}\n", f);
    fclose(f);
    const char *a[] = {"train", "--config", wpath("cfg.json"), "--batch", "5", "--print-config", NULL};
    run_expect(0, "cfg", a);
    log_has("cfg", "out", "\"lr\": 0.5");
    log_has("cfg", "out", "\"batch\": 5"); /* the option overrides the file */
    log_has("cfg", "out", "\"freeze_decoder\": true");
    log_has("cfg", "out", "\"task\": \"recall\"");

    f = fopen(wpath("bad.json"), "w");
    fputs("{\"lr\": 0.5, \"bacth\": 3}\n", f);
    fclose(f);
    const char *b[] = {"train", "--config", wpath("bad.json"), "--print-config", NULL};
    run_expect(2, "bad", b);
    log_has("bad", "err", "unknown field 'bacth'");
    f = fopen(wpath("type.json"), "w");
    fputs("{\"batch\": \"many\"}\n", f);
    fclose(f);
    const char *c[] = {"train", "--config", wpath("type.json"), "--print-config", NULL};
    run_expect(2, "type", c);
    log_has("type", "err", "batch wants an integer");
    const char *d[] = {"train", "--task", "recall", "--bptt", "0", "--print-config", NULL};
    run_expect(2, "range", d);
    log_has("range", "err", "bptt");
    const char *e[] = {"train", "--task", "recall", "--lr", "fast", NULL};
    run_expect(2, "num", e);
    log_has("num", "err", "--lr wants a finite number");
    /* issue 20: --print-config validates the whole config (it printed an unusable one, exit 0),
     * and a missing --config names the file and errno's text (it said "nope.json:-1: ...") */
    const char *pc[] = {"train", "--task", "recall", "--curriculum", "5:2", "--print-config", NULL};
    run_expect(2, "print_bad", pc);
    log_has("print_bad", "err", "config field curriculum '5:2'");
    const char *pf[] = {"train", "--task", "recall", "--recall-facts", "3", "--turns", "4", "--print-config", NULL};
    run_expect(2, "print_facts", pf);
    log_has("print_facts", "err", "cannot hold 3 facts");
    const char *nope[] = {"train", "--config", wpath("nope.json"), "--print-config", NULL};
    run_expect(2, "nope", nope);
    char want[600];
    snprintf(want, sizeof want, "mnemo train: %s: No such file or directory\n", wpath("nope.json"));
    log_has("nope", "err", want);
    const char *g[] = {"train", "--task", "recall", "--device", "cuda", "--steps", "1", "--run-dir", wpath("cuda"),
                       NULL};
    int rc = wait_exit(spawn_mnemo("cuda", g)), count = 0;
    if (mn_cuda_device_count(&count) == MN_OK && count > 0) {
        assert_int_equal(rc, 0); /* a GPU: it trains there */
    } else {
        assert_int_equal(rc, 1); /* no GPU, or a build without CUDA: a clear error */
        log_has("cuda", "err", "--device cuda");
    }
}

static void test_resume_bit_identical_recall(void **state) {
    (void)state;
    /* 12 straight steps, checkpoints every 6; the resume from step 6 crosses a curriculum stage
     * (turns 4 -> 6 at step 9) and truncated BPTT (3 of 6 turns) */
    const char *straight[] = {TINY_RECALL, "--steps", "12", "--checkpoint-interval", "6", "--run-dir", wpath("ra"),
                              NULL};
    run_expect(0, "ra", straight);
    const char *resumed[] = {"train", "--resume", wpath("ra/ckpt-00000006.h5"), "--run-dir", wpath("rb"), NULL};
    run_expect(0, "rb", resumed);
    log_has("rb", "out", "resuming");
    assert_same_training(wpath("ra/ckpt-00000012.h5"), wpath("rb/ckpt-00000012.h5"));
    metrics *a = read_metrics(wpath("ra")), *b = read_metrics(wpath("rb"));
    assert_same_curve(a, b, 7, 12);
    assert_false(b->have[6]); /* the resumed run started after step 6 */
    assert_true(a->loss[1] != a->loss[2]);
    assert_true(a->evals >= 2 && b->evals >= 1);
    free_metrics(a);
    free_metrics(b);
    /* a run directory resumes from its latest checkpoint; nothing left to do at step 12 */
    const char *again[] = {"train", "--resume", wpath("ra"), "--run-dir", wpath("ra"), NULL};
    run_expect(0, "again", again);
    log_has("again", "out", "at step 12");
}

/* --reconstruct-weight: the loop trains with the aid (its loss in the metrics, other parameters
 * than without it), the checkpoint's config keeps it, and the resume is bit-identical. */
static void test_reconstruction_in_training(void **state) {
    (void)state;
    const char *plain[] = {TINY_RECALL, "--steps", "6", "--run-dir", wpath("rc_plain"), NULL};
    run_expect(0, "rc_plain", plain);
    const char *aided[] = {TINY_RECALL, "--steps", "6", "--reconstruct-weight", "0.5", "--checkpoint-interval", "3",
                           "--run-dir", wpath("rc_a"), NULL};
    run_expect(0, "rc_a", aided);
    char *m = slurp(wpath("rc_a/metrics.jsonl")), *mp = slurp(wpath("rc_plain/metrics.jsonl"));
    assert_non_null(m);
    assert_non_null(mp);
    int lines = 0;
    for (const char *at = m; (at = strstr(at, "\"recon_loss\": ")) != NULL; at++) {
        double v = atof(at + strlen("\"recon_loss\": "));
        assert_true(isfinite(v) && v > 0.0);
        lines++;
    }
    assert_int_equal(lines, 6);                  /* one per step */
    assert_null(strstr(mp, "\"recon_loss\"")); /* off by default */
    free(m);
    free(mp);
    loaded a = load_ckpt(wpath("rc_a/ckpt-00000006.h5")), p = load_ckpt(wpath("rc_plain/ckpt-00000006.h5"));
    assert_true(memcmp(mn_model_params(a.model), mn_model_params(p.model),
                       mn_model_num_params(a.model) * sizeof(float)) != 0);
    free_loaded(&a);
    free_loaded(&p);
    const char *resumed[] = {"train", "--resume", wpath("rc_a/ckpt-00000003.h5"), "--run-dir", wpath("rc_b"), NULL};
    run_expect(0, "rc_b", resumed);
    assert_same_training(wpath("rc_a/ckpt-00000006.h5"), wpath("rc_b/ckpt-00000006.h5"));
    const char *bad[] = {"train", "--task", "recall", "--reconstruct-weight", "-1", "--print-config", NULL};
    run_expect(2, "rc_bad", bad);
    log_has("rc_bad", "err", "reconstruct_weight");
}

/* --base takes another run's parameters (fresh optimizer and step); --freeze-decoder keeps
 * decoder.* and wte bit-identical while the compressor and memory train. */
static void test_base_and_freeze_decoder(void **state) {
    (void)state;
    const char *a[] = {TINY_RECALL, "--steps", "3", "--run-dir", wpath("base_a"), NULL};
    run_expect(0, "base_a", a);
    const char *b[] = {TINY_RECALL, "--steps", "4", "--base", wpath("base_a/ckpt-00000003.h5"), "--freeze-decoder",
                       "--run-dir", wpath("base_b"), NULL};
    run_expect(0, "base_b", b);
    loaded la = load_ckpt(wpath("base_a/ckpt-00000003.h5")), lb = load_ckpt(wpath("base_b/ckpt-00000004.h5"));
    assert_int_equal(lb.state.step, 4);
    assert_int_equal(mn_trainer_step(lb.trainer), 4);
    int frozen = 0, moved = 0;
    for (int i = 0; i < mn_model_num_tensors(la.model); i++) {
        mn_tensor_info t;
        mn_model_tensor(la.model, i, &t);
        int same = !memcmp(mn_model_params(la.model) + t.offset, mn_model_params(lb.model) + t.offset,
                           t.size * sizeof(float));
        if (!strncmp(t.name, "decoder.", 8) || !strcmp(t.name, "wte")) {
            if (!same)
                fail_msg("%s changed although the decoder is frozen", t.name);
            frozen++;
        } else if (!strcmp(t.name, "memory.gate.weight") || !strcmp(t.name, "compressor.h.0.attn.c_attn.weight")) {
            assert_false(same);
            moved++;
        }
    }
    assert_true(frozen > 10 && moved == 2);
    free_loaded(&la);
    free_loaded(&lb);
    const char *c[] = {TINY_RECALL, "--steps", "2", "--base", wpath("base_a/ckpt-00000003.h5"), "--n-heads", "4",
                       "--run-dir", wpath("base_c"), NULL};
    run_expect(1, "base_c", c); /* another model (more slots or layers would be growth, below) */
    log_has("base_c", "err", "n_heads");
}

/* A base tensor's name in a model grown by extra_dec decoder and extra_comp compressor layers
 * (the base's layers of each stack moved up by that many). */
static void grown_tensor_name(const char *base, int extra_dec, int extra_comp, char *out, size_t size) {
    int layer, at = 0;
    if (sscanf(base, "compressor.h.%d.%n", &layer, &at) == 1 && at > 0)
        snprintf(out, size, "compressor.h.%d.%s", layer + extra_comp, base + at);
    else if (sscanf(base, "decoder.h.%d.%n", &layer, &at) == 1 && at > 0)
        snprintf(out, size, "decoder.h.%d.%s", layer + extra_dec, base + at);
    else
        snprintf(out, size, "%s", base);
}

/* The first n_new blocks of a grown stack are the identity: their output projections are zero
 * (within tol, for a run that took a step of a vanishing learning rate). */
static void assert_new_blocks_identity(mn_model *m, const char *stack, int n_new, float tol) {
    const char *zero[] = {"attn.c_proj.weight", "attn.c_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
    for (int l = 0; l < n_new; l++)
        for (int z = 0; z < 4; z++) {
            char name[128];
            mn_tensor_info g;
            snprintf(name, sizeof name, "%s.h.%d.%s", stack, l, zero[z]);
            OK(mn_model_find_tensor(m, name, &g));
            for (size_t j = 0; j < g.size; j++)
                if (!(fabsf(mn_model_params(m)[g.offset + j]) <= tol))
                    fail_msg("%s[%zu] = %g: the new block is not the identity", name, j,
                             (double)mn_model_params(m)[g.offset + j]);
        }
}

/* --base with more decoder layers: the checkpoint's layers on top, new identity layers below
 * (output projections zero), so the decoder computes the base's logits exactly; the decoder
 * is frozen here so that the checkpoint still holds the grown initialisation. */
static void test_base_grows_decoder(void **state) {
    (void)state;
    const char *a[] = {TINY_RECALL, "--steps", "3", "--run-dir", wpath("grow_a"), NULL};
    run_expect(0, "grow_a", a);
    const char *b[] = {TINY_RECALL, "--steps", "2", "--base", wpath("grow_a/ckpt-00000003.h5"), "--n-layers", "3",
                       "--freeze-decoder", "--run-dir", wpath("grow_b"), NULL};
    run_expect(0, "grow_b", b);
    loaded la = load_ckpt(wpath("grow_a/ckpt-00000003.h5")), lb = load_ckpt(wpath("grow_b/ckpt-00000002.h5"));
    assert_int_equal(mn_model_config(lb.model)->n_layers, 3);
    for (int i = 0; i < mn_model_num_tensors(la.model); i++) {
        mn_tensor_info t, g;
        mn_model_tensor(la.model, i, &t);
        if (strncmp(t.name, "decoder.", 8) && strcmp(t.name, "wte"))
            continue; /* the compressor and memory trained on */
        char name[128];
        grown_tensor_name(t.name, 2, 0, name, sizeof name);
        OK(mn_model_find_tensor(lb.model, name, &g));
        if (memcmp(mn_model_params(la.model) + t.offset, mn_model_params(lb.model) + g.offset, t.size * sizeof(float)))
            fail_msg("%s of the base is not %s of the grown model", t.name, name);
    }
    assert_new_blocks_identity(lb.model, "decoder", 2, 0.0f);
    /* the same state and turn give the same logits through 1 and 3 decoder layers */
    const mn_config *c = mn_model_config(la.model);
    size_t kc = mn_state_floats(la.model);
    float *r = malloc(kc * sizeof(float)), *la_logits = malloc(4 * (size_t)c->vocab_size * sizeof(float)),
          *lb_logits = malloc(4 * (size_t)c->vocab_size * sizeof(float));
    for (size_t j = 0; j < kc; j++)
        r[j] = 0.3f * sinf((float)j);
    const int32_t turn[4] = {3, 7, 11, 2};
    OK(mn_logits(la.model, turn, 4, r, la_logits));
    OK(mn_logits(lb.model, turn, 4, r, lb_logits));
    for (int j = 0; j < 4 * c->vocab_size; j++)
        assert_float_equal(la_logits[j], lb_logits[j], 1e-5);
    free(r);
    free(la_logits);
    free(lb_logits);
    free_loaded(&la);
    free_loaded(&lb);
    /* fewer layers than the checkpoint is no growth: refused naming the field */
    const char *c2[] = {TINY_RECALL, "--steps", "1", "--base", wpath("grow_b/ckpt-00000002.h5"), "--n-layers", "2",
                        "--run-dir", wpath("grow_c"), NULL};
    run_expect(1, "grow_c", c2);
    log_has("grow_c", "err", "n_layers");
}

/* --base with more compressor layers (and the decoder grown beside it): the checkpoint's layers
 * on top of each stack, new identity layers below, so R_t is the base's. A
 * learning rate of 1e-30 keeps the checkpoint at the grown initialisation (nothing can freeze
 * the compressor); its one step moves no weight of the base's magnitude. */
static void test_base_grows_compressor(void **state) {
    (void)state;
    const char *a[] = {TINY_RECALL, "--steps", "3", "--run-dir", wpath("growc_a"), NULL};
    run_expect(0, "growc_a", a);
    const char *b[] = {TINY_RECALL, "--steps", "1", "--base", wpath("growc_a/ckpt-00000003.h5"), "--n-comp-layers",
                       "3", "--n-layers", "2", "--lr", "1e-30", "--min-lr", "0", "--run-dir", wpath("growc_b"), NULL};
    run_expect(0, "growc_b", b);
    loaded la = load_ckpt(wpath("growc_a/ckpt-00000003.h5")), lb = load_ckpt(wpath("growc_b/ckpt-00000001.h5"));
    assert_int_equal(mn_model_config(lb.model)->n_comp_layers, 3);
    assert_int_equal(mn_model_config(lb.model)->n_layers, 2);
    for (int i = 0; i < mn_model_num_tensors(la.model); i++) {
        mn_tensor_info t, g;
        mn_model_tensor(la.model, i, &t);
        char name[128];
        grown_tensor_name(t.name, 1, 2, name, sizeof name);
        OK(mn_model_find_tensor(lb.model, name, &g));
        for (size_t j = 0; j < t.size; j++)
            if (fabsf(mn_model_params(la.model)[t.offset + j] - mn_model_params(lb.model)[g.offset + j]) > 1e-20f)
                fail_msg("%s[%zu] of the base is not %s of the grown model", t.name, j, name);
    }
    assert_new_blocks_identity(lb.model, "compressor", 2, 1e-20f);
    /* the same state and turn give the same next state through 1 and 3 compressor layers */
    size_t kc = mn_state_floats(la.model);
    float *r = malloc(kc * sizeof(float)), *ra = malloc(kc * sizeof(float)), *rb = malloc(kc * sizeof(float));
    for (size_t j = 0; j < kc; j++)
        r[j] = 0.3f * sinf((float)j);
    const int32_t turn[4] = {3, 7, 11, 2};
    OK(mn_update(la.model, turn, 4, r, ra));
    OK(mn_update(lb.model, turn, 4, r, rb));
    double moved = 0;
    for (size_t j = 0; j < kc; j++) {
        assert_float_equal(ra[j], rb[j], 1e-5);
        moved += fabs(ra[j] - r[j]);
    }
    assert_true(moved > 1e-3); /* the update wrote something: the equality above is not vacuous */
    free(r);
    free(ra);
    free(rb);
    free_loaded(&la);
    free_loaded(&lb);
    /* fewer compressor layers than the checkpoint is no growth: refused naming the field */
    const char *c[] = {TINY_RECALL, "--steps", "1", "--base", wpath("growc_b/ckpt-00000001.h5"), "--n-layers", "2",
                       "--n-comp-layers", "2", "--run-dir", wpath("growc_c"), NULL};
    run_expect(1, "growc_c", c);
    log_has("growc_c", "err", "n_comp_layers");
}

/* --base with more slots (delta rule, k 2 -> 5): every tensor without a slot axis is the base's;
 * slots 0-1 and the token positions keep their rows (the positions moved up by 3), the write's
 * strength column moves to the end; slot j >= 2 is slot (j - 2) % 2's copy, exact for the biases
 * and the diagonal and with the seed's initialisation (a fresh model of the run's seed 1) added
 * to R_0, both position tables and the address weights (copies alone would never part). lr
 * 1e-30 keeps the grown initialisation. */
static float grown_at(mn_model *m, const char *name, int r, int c) {
    mn_tensor_info t;
    OK(mn_model_find_tensor(m, name, &t));
    return mn_model_params(m)[t.offset + (size_t)r * (size_t)(t.ndim == 2 ? t.shape[1] : t.shape[0]) + (size_t)c];
}

/* Checks tensor `name` (rows x cols in the grown model mb, slot-indexed along `axis`) of a model
 * grown from 2 to 5 slots against the base ma: slots keep their index, what follows them moves
 * up by 3, slot j >= 2 is slot (j - 2) % 2's value plus, with `with_init`, the fresh model's.
 * Returns the size of the initialisation added (the new entries are not exact copies when > 0). */
static double check_grown_axis(mn_model *ma, mn_model *mb, mn_model *fresh_model, const char *name, int axis,
                               int rows, int cols, int with_init) {
    const int k = 2, k2 = 5;
    double noise = 0;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            int j = axis == 0 ? r : c, fresh = j >= k && j < k2;
            int source = fresh ? (j - k) % k : j < k ? j : j - (k2 - k);
            float init = fresh && with_init ? grown_at(fresh_model, name, r, c) : 0.0f;
            float want = grown_at(ma, name, axis == 0 ? source : r, axis == 1 ? source : c) + init;
            if (fabsf(want - grown_at(mb, name, r, c)) > 1e-6f)
                fail_msg("%s (%d, %d) is not the base's entry %d of its slot axis (plus the initialisation: %d)",
                         name, r, c, source, fresh && with_init);
            noise += fabsf(init);
        }
    return noise;
}

static void test_base_grows_slots(void **state) {
    (void)state;
    const char *a[] = {TINY_RECALL, "--write-rule", "delta", "--steps", "3", "--run-dir", wpath("grows_a"), NULL};
    run_expect(0, "grows_a", a);
    const char *b[] = {TINY_RECALL, "--write-rule", "delta", "--steps", "1", "--base", wpath("grows_a/ckpt-00000003.h5"),
                       "--n-slots", "5", "--lr", "1e-30", "--min-lr", "0", "--run-dir", wpath("grows_b"), NULL};
    run_expect(0, "grows_b", b);
    loaded la = load_ckpt(wpath("grows_a/ckpt-00000003.h5")), lb = load_ckpt(wpath("grows_b/ckpt-00000001.h5"));
    mn_model *ma = la.model, *mb = lb.model, *fresh_model = NULL;
    assert_int_equal(mn_model_config(mb)->n_slots, 5);
    OK(mn_model_create(mn_model_config(mb), &fresh_model));
    OK(mn_model_init(fresh_model, 1));
    const int k2 = 5, C = mn_model_config(ma)->d_model, N = mn_model_config(ma)->max_turn_tokens;
    for (int i = 0; i < mn_model_num_tensors(ma); i++) {
        mn_tensor_info t, g;
        mn_model_tensor(ma, i, &t);
        OK(mn_model_find_tensor(mb, t.name, &g));
        if (strstr(t.name, "wpe") || !strncmp(t.name, "memory.", 7))
            continue; /* the slot-indexed ones, below */
        assert_int_equal(t.size, g.size);
        for (size_t j = 0; j < t.size; j++)
            if (fabsf(mn_model_params(ma)[t.offset + j] - mn_model_params(mb)[g.offset + j]) > 1e-20f)
                fail_msg("%s[%zu] of the base is not the grown model's", t.name, j);
    }
    /* rows: R_0 (k, C) and both position tables (k + N, C); columns: the write's address weights
     * and biases (k + 1: addresses, then the strength) and its diagonal (k) */
    assert_true(check_grown_axis(ma, mb, fresh_model, "memory.r0", 0, k2, C, 1) > 1e-3);
    assert_true(check_grown_axis(ma, mb, fresh_model, "decoder.wpe", 0, k2 + N, C, 1) > 1e-3);
    assert_true(check_grown_axis(ma, mb, fresh_model, "compressor.wpe", 0, k2 + N, C, 1) > 1e-3);
    assert_true(check_grown_axis(ma, mb, fresh_model, "memory.write.weight", 1, C, k2 + 1, 1) > 1e-3);
    check_grown_axis(ma, mb, fresh_model, "memory.write.bias", 1, 1, k2 + 1, 0);
    check_grown_axis(ma, mb, fresh_model, "memory.write.diag", 1, 1, k2, 0);
    /* the grown model runs: one update of R_0 gives a finite state of 5 slots */
    size_t kc = mn_state_floats(mb);
    assert_int_equal(kc, (size_t)k2 * (size_t)C);
    float *r0 = malloc(kc * sizeof(float)), *r1 = malloc(kc * sizeof(float));
    OK(mn_initial_state(mb, r0));
    const int32_t turn[4] = {3, 7, 11, 2};
    OK(mn_update(mb, turn, 4, r0, r1));
    for (size_t j = 0; j < kc; j++)
        assert_true(isfinite(r1[j]));
    free(r0);
    free(r1);
    mn_model_free(fresh_model);
    free_loaded(&la);
    free_loaded(&lb);
    /* fewer slots than the checkpoint is no growth: refused naming the field */
    const char *c[] = {TINY_RECALL, "--write-rule", "delta", "--steps", "1", "--base", wpath("grows_b/ckpt-00000001.h5"),
                       "--run-dir", wpath("grows_c"), NULL};
    run_expect(1, "grows_c", c);
    log_has("grows_c", "err", "n_slots");
}

/* The corpus's stream: mn_rng seeded 77 (the expectations below were measured on it). */
static int rng_draw(void *ctx, int n) { return (int)mn_rng_below(ctx, (uint64_t)n); }

static void run_ok(const char *log, const char *const *args) { run_expect(0, log, args); }

#define TINY_SHARDS                                                                                            \
    TINY_SHARDS_MODEL, "--batch", "2", "--turns", "4", "--bptt", "2", "--curriculum", "0:2,5:4", "--lr", "0.01",  \
        "--warmup-steps", "2", "--eval-interval", "5", "--eval-batches", "1", "--eval-probes", "6", "--threads",   \
        "1", "--device", "cpu"

/* --stop-at-step: the run ends at that step with a checkpoint, the schedule still `steps` long,
 * and --resume goes on to a run bit-identical to the straight one (a recipe's stage stopped at
 * an exact step, data/models/README.md). */
static void test_stop_at_step(void **state) {
    (void)state;
    mn_rng rng;
    mn_rng_seed(&rng, 78);
    make_text_data(rng_draw, &rng, run_ok);
    const char *straight[] = {TINY_SHARDS, "--steps", "8", "--checkpoint-interval", "0", "--run-dir", wpath("sat_a"),
                              NULL};
    run_expect(0, "sat_a", straight);
    const char *stopped[] = {TINY_SHARDS, "--steps", "8", "--stop-at-step", "3", "--checkpoint-interval", "0",
                             "--run-dir", wpath("sat_b"), NULL};
    run_expect(0, "sat_b", stopped);
    log_has("sat_b", "out", "stopped at step 3 of 8");
    assert_int_equal(access(wpath("sat_b/ckpt-00000003.h5"), F_OK), 0);
    assert_int_not_equal(access(wpath("sat_b/ckpt-00000008.h5"), F_OK), 0);
    const char *resumed[] = {"train", "--resume", wpath("sat_b"), NULL};
    run_expect(0, "sat_c", resumed);
    assert_same_training(wpath("sat_a/ckpt-00000008.h5"), wpath("sat_b/ckpt-00000008.h5"));
    const char *bad[] = {TINY_SHARDS, "--steps", "8", "--stop-at-step", "9", "--run-dir", wpath("sat_d"), NULL};
    run_expect(2, "sat_d", bad); /* a config out of range is a usage error */
}

static void test_resume_bit_identical_shards(void **state) {
    (void)state;
    mn_rng rng;
    mn_rng_seed(&rng, 77);
    make_text_data(rng_draw, &rng, run_ok);
    /* 30 steps of 2 windows: more than the ~45 four-turn windows, so the cursor wraps */
    const char *straight[] = {TINY_SHARDS, "--steps", "30", "--checkpoint-interval", "13", "--run-dir", wpath("sa"),
                              NULL};
    run_expect(0, "sa", straight);
    log_has("sa", "out", "validation probes: 6 prepared");
    log_has("sa", "out", "probes 6: accuracy");
    const char *resumed[] = {"train", "--resume", wpath("sa/ckpt-00000013.h5"), "--run-dir", wpath("sb"), NULL};
    run_expect(0, "sb", resumed);
    assert_same_training(wpath("sa/ckpt-00000030.h5"), wpath("sb/ckpt-00000030.h5"));
    metrics *a = read_metrics(wpath("sa")), *b = read_metrics(wpath("sb"));
    assert_same_curve(a, b, 14, 30);
    json_t *eval = json_object_get(a->last_eval, "valid_loss");
    assert_true(json_is_number(eval));
    free_metrics(a);
    free_metrics(b);
    loaded l = load_ckpt(wpath("sa/ckpt-00000030.h5"));
    assert_true(l.state.data_epoch >= 1); /* the data cursor really moved through epochs */
    free_loaded(&l);
    mn_tokenizer *tok = NULL;
    OK(mn_checkpoint_load_tokenizer(wpath("sa/ckpt-00000030.h5"), &tok));
    assert_non_null(tok);
    mn_tokenizer_free(tok);

    /* another tokenizer: the resume is refused, naming the reason */
    const char *tok2[] = {"tokenizer", "--train", "--jsonl", wpath("valid.jsonl"), "--vocab-size", "280", "-o",
                          wpath("tok2.h5"), NULL};
    run_expect(0, "tok2", tok2);
    const char *other[] = {"train", "--resume", wpath("sa/ckpt-00000013.h5"), "--tokenizer", wpath("tok2.h5"),
                           "--run-dir", wpath("sc"), NULL};
    run_expect(1, "sc", other);
    log_has("sc", "err", "tokenizer");
    const char *inspect[] = {"inspect", wpath("sa/ckpt-00000030.h5"), NULL};
    run_expect(0, "inspect", inspect);
    log_has("inspect", "out", "tokenizer    mnemo-bpe");
    log_has("inspect", "out", "step 30");
    log_has("inspect", "out", "verified");
}

/* task shards without a vocab_size (no option, config file or checkpoint giving one) takes the
 * tokenizer's V, so that everything the model generates decodes (with the old default 4096,
 * `mnemo eval` failed decoding); an explicit one below the tokenizer's is refused naming both. */
static void test_vocab_size_from_tokenizer(void **state) {
    (void)state;
    mn_rng rng;
    mn_rng_seed(&rng, 78);
    make_text_data(rng_draw, &rng, run_ok);
    mn_tokenizer *tok = NULL;
#define VOCAB_RUN(dir, ...)                                                                                          \
    {"train", "--task", "shards", "--train-data", wpath("train.shard"), "--tokenizer", wpath("tok.h5"),          \
     "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--n-comp-layers", "1", "--n-slots", "2",           \
     "--max-turn-tokens", "16", "--batch", "2", "--turns", "4", "--bptt", "2", "--steps", "2", "--warmup-steps",  \
     "1", "--eval-interval", "0", "--eval-probes", "0", "--threads", "1", "--device", "cpu", "--run-dir",          \
     wpath(dir), __VA_ARGS__}
    const char *auto_v[] = VOCAB_RUN("vocab_auto", NULL);
    run_expect(0, "vocab_auto", auto_v);
    loaded l = load_ckpt(wpath("vocab_auto/ckpt-00000002.h5"));
    const int V = mn_model_config(l.model)->vocab_size;
    free_loaded(&l);
    OK(mn_checkpoint_load_tokenizer(wpath("vocab_auto/ckpt-00000002.h5"), &tok));
    assert_int_equal(V, mn_tokenizer_vocab_size(tok));
    mn_tokenizer_free(tok);
    char want[128];
    snprintf(want, sizeof want, "\"vocab_size\": %d", V);
    log_has("vocab_auto", "out", want); /* the effective config says so */
    /* ... and eval's greedy answers decode */
    const char *eval[] = {"eval", "--checkpoint", wpath("vocab_auto/ckpt-00000002.h5"), "--data", wpath("valid.jsonl"),
                          "--json", wpath("vocab_auto/eval.json"), "--modes", "memory", "--no-lm", "--quiet", NULL};
    run_expect(0, "vocab_eval", eval);
    /* a config file without the field, and 0, mean the same */
    FILE *f = fopen(wpath("novocab.json"), "w");
    fputs("{\"d_model\": 16}\n", f);
    fclose(f);
    const char *file[] = VOCAB_RUN("vocab_file", "--config", wpath("novocab.json"), "--print-config", NULL);
    run_expect(0, "vocab_file", file);
    log_has("vocab_file", "out", want);
    const char *zero[] = VOCAB_RUN("vocab_zero", "--vocab-size", "0", "--print-config", NULL);
    run_expect(0, "vocab_zero", zero);
    log_has("vocab_zero", "out", want);
    /* given: larger is kept, smaller is refused naming both */
    const char *larger[] = VOCAB_RUN("vocab_larger", "--vocab-size", "512", "--print-config", NULL);
    run_expect(0, "vocab_larger", larger);
    log_has("vocab_larger", "out", "\"vocab_size\": 512");
    char smaller_v[16];
    snprintf(smaller_v, sizeof smaller_v, "%d", V - 1);
    const char *smaller[] = VOCAB_RUN("vocab_smaller", "--vocab-size", smaller_v, NULL);
    run_expect(1, "vocab_smaller", smaller);
    snprintf(want, sizeof want, "the tokenizer has %d tokens but vocab_size = %d", V, V - 1);
    log_has("vocab_smaller", "err", want);
#undef VOCAB_RUN
}

/* The carried states and lane positions a streaming checkpoint holds. */
static mn_checkpoint_stream read_stream(const char *path) {
    mn_checkpoint_stream s;
    int found = 0;
    OK(mn_checkpoint_read_stream(path, &s, &found));
    if (!found)
        fail_msg("%s holds no /train/stream", path);
    return s;
}

/* --stream 1: lanes walk their episodes carrying R across windows, in micro-batches
 * (grad_accum 2), across a curriculum stage (every lane restarts); 20 steps straight equal
 * 10 + a resume of 10, bit for bit, carried states included. */
static void test_resume_bit_identical_stream(void **state) {
    (void)state;
    mn_rng rng;
    mn_rng_seed(&rng, 77);
    make_text_data(rng_draw, &rng, run_ok);
    const char *straight[] = {TINY_SHARDS, "--stream", "1", "--grad-accum", "2", "--steps", "20",
                              "--checkpoint-interval", "10", "--run-dir", wpath("st_a"), NULL};
    run_expect(0, "st_a", straight);
    log_has("st_a", "err", "tail turns dropped");
    const char *resumed[] = {"train", "--resume", wpath("st_a/ckpt-00000010.h5"), "--run-dir", wpath("st_b"), NULL};
    run_expect(0, "st_b", resumed);
    assert_same_training(wpath("st_a/ckpt-00000020.h5"), wpath("st_b/ckpt-00000020.h5"));
    metrics *a = read_metrics(wpath("st_a")), *b = read_metrics(wpath("st_b"));
    assert_same_curve(a, b, 11, 20);
    free_metrics(a);
    free_metrics(b);
    mn_checkpoint_stream sa = read_stream(wpath("st_a/ckpt-00000020.h5")),
                         sb = read_stream(wpath("st_b/ckpt-00000020.h5"));
    assert_int_equal(sa.lanes, 2);
    assert_int_equal(sa.state_floats, 2 * 16); /* k x C */
    assert_memory_equal(sa.episode, sb.episode, 2 * sizeof(int64_t));
    assert_memory_equal(sa.turn, sb.turn, 2 * sizeof(int64_t));
    assert_memory_equal(sa.states, sb.states, 2 * 32 * sizeof(float));
    for (int lane = 0; lane < 2; lane++) { /* each lane stands after a window of 4 turns of its episode */
        assert_true(sa.episode[lane] >= 0 && sa.turn[lane] >= 4 && sa.turn[lane] % 4 == 0);
        assert_true(isfinite(sa.states[lane * 32]) && sa.states[lane * 32] != 0.0f);
    }
    mn_checkpoint_stream_free(&sa);
    mn_checkpoint_stream_free(&sb);

    /* checkpoint and config must agree on streaming: the data cursor counts other things */
    const char *as_plain[] = {"train", "--resume", wpath("st_a/ckpt-00000010.h5"), "--stream", "0", "--run-dir",
                              wpath("st_c"), NULL};
    run_expect(1, "st_c", as_plain);
    log_has("st_c", "err", "resume it with --stream 1");
    const char *plain[] = {TINY_SHARDS, "--steps", "2", "--run-dir", wpath("st_d"), NULL};
    run_expect(0, "st_d", plain);
    mn_checkpoint_stream none;
    int found = 1;
    OK(mn_checkpoint_read_stream(wpath("st_d/ckpt-00000002.h5"), &none, &found));
    assert_false(found);
    const char *as_stream[] = {"train", "--resume", wpath("st_d/ckpt-00000002.h5"), "--stream", "1", "--run-dir",
                               wpath("st_e"), NULL};
    run_expect(1, "st_e", as_stream);
    log_has("st_e", "err", "checkpoint holds none");
    const char *recall[] = {TINY_RECALL, "--stream", "1", "--steps", "2", "--run-dir", wpath("st_f"), NULL};
    run_expect(2, "st_f", recall);
    log_has("st_f", "err", "stream 1 needs task shards");
}

static void test_signals_checkpoint_and_resume(void **state) {
    (void)state;
    /* constant lr (min_lr = lr, no warmup): the schedule does not depend on --steps, so a run
     * stopped anywhere and resumed equals a straight run of the same length */
    const int sigs[] = {SIGINT, SIGTERM};
    for (int k = 0; k < 2; k++) {
        char dir[32], log[32];
        snprintf(dir, sizeof dir, "sig%d", k);
        snprintf(log, sizeof log, "sig%d", k);
        const char *args[] = {TINY_RECALL, "--min-lr", "0.01", "--warmup-steps", "0", "--steps", "100000",
                              "--checkpoint-interval", "0", "--eval-interval", "0", "--run-dir", wpath(dir), NULL};
        pid_t pid = spawn_mnemo(log, args);
        wait_for_step(pid, wpath(dir), 5);
        kill(pid, sigs[k]);
        int rc = wait_exit(pid);
        char *err = log_text(log, "err");
        if (rc != 3)
            fail_msg("exit %d after signal %d, expected 3; stderr:\n%s", rc, sigs[k], err);
        assert_non_null(strstr(err, k ? "interrupted by SIGTERM" : "interrupted by SIGINT"));
        free(err);
        char latest[700];
        uint64_t stopped = 0;
        int found = 0;
        OK(mn_checkpoint_latest(wpath(dir), latest, sizeof latest, &stopped, &found));
        assert_true(found && stopped >= 5 && stopped < 100000);
        metrics *m = read_metrics(wpath(dir));
        assert_true(m->have[stopped] && !m->have[stopped + 1]); /* the step in flight was finished, no more */
        free_metrics(m);
        if (k == 1)
            continue;
        /* resume for 3 more steps; compare with a straight run of stopped + 3 steps */
        char total[32];
        snprintf(total, sizeof total, "%" PRIu64, stopped + 3);
        const char *resume[] = {"train", "--resume", latest, "--steps", total, "--run-dir", wpath("sig_resumed"), NULL};
        run_expect(0, "sig_resumed", resume);
        const char *straight[] = {TINY_RECALL, "--min-lr", "0.01", "--warmup-steps", "0", "--steps", total,
                                  "--checkpoint-interval", "0", "--eval-interval", "0", "--run-dir",
                                  wpath("sig_straight"), NULL};
        run_expect(0, "sig_straight", straight);
        char a[700], b[700];
        snprintf(a, sizeof a, "%s/ckpt-%08" PRIu64 ".h5", wpath("sig_resumed"), stopped + 3);
        snprintf(b, sizeof b, "%s/ckpt-%08" PRIu64 ".h5", wpath("sig_straight"), stopped + 3);
        assert_same_training(a, b);
        print_message("SIGINT after step %" PRIu64 ": exit 3, checkpoint written; resumed run == straight run\n",
                      stopped);
    }
}

/* Flips the bits of mask in the byte `at` bytes into the (only) chunk of a dataset of the file
 * at path; at < 0: a third of the way in. */
static void flip_in_chunk(const char *path, const char *dataset, long at, unsigned char mask) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, dataset, H5P_DEFAULT), space = H5Dget_space(d);
    hsize_t coords[4], size;
    unsigned filter_mask;
    haddr_t addr;
    assert_true(H5Dget_chunk_info(d, space, 0, coords, &filter_mask, &addr, &size) >= 0);
    H5Sclose(space), H5Dclose(d), H5Fclose(f);
    off_t where = (off_t)addr + (at < 0 ? (off_t)(size / 3) : (off_t)at);
    int fd = open(path, O_RDWR);
    unsigned char byte;
    assert_int_equal(pread(fd, &byte, 1, where), 1);
    byte ^= mask;
    assert_int_equal(pwrite(fd, &byte, 1, where), 1);
    close(fd);
}

static void test_bad_checkpoints_refused_by_cli(void **state) {
    (void)state;
    const char *a[] = {TINY_RECALL, "--steps", "3", "--run-dir", wpath("bad"), NULL};
    run_expect(0, "bad_make", a);
    char ck[700];
    snprintf(ck, sizeof ck, "%s", wpath("bad/ckpt-00000003.h5"));
    const char *mism[] = {"train", "--resume", ck, "--n-slots", "3", "--run-dir", wpath("bad_m"), NULL};
    run_expect(1, "bad_m", mism);
    log_has("bad_m", "err", "n_slots");
    /* a flipped byte inside a tensor's data */
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", ck, wpath("flipped.h5"));
    assert_int_equal(system(cmd), 0);
    flip_in_chunk(wpath("flipped.h5"), "params/decoder.h.0.mlp.c_fc.weight", -1, 0x01);
    const char *flipped[] = {"train", "--resume", wpath("flipped.h5"), "--run-dir", wpath("bad_f"), NULL};
    run_expect(1, "bad_f", flipped);
    log_has("bad_f", "err", "checksum");
    const char *insp[] = {"inspect", wpath("flipped.h5"), NULL};
    run_expect(1, "bad_i", insp);
    log_has("bad_i", "err", "decoder.h.0.mlp.c_fc.weight");
    /* truncated */
    snprintf(cmd, sizeof cmd, "head -c 5000 '%s' > '%s'", ck, wpath("cut.h5"));
    assert_int_equal(system(cmd), 0);
    const char *cut[] = {"train", "--resume", wpath("cut.h5"), "--run-dir", wpath("bad_t"), NULL};
    run_expect(1, "bad_t", cut);
    log_has("bad_t", "err", "truncated");
}

/* ---------------------------------------------------------------- run directories */
/* A directory's files, names with sizes and content hashes, sorted: equal lists = untouched. */
static char *dir_print(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    char lines[64][320];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 64) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        unsigned char buf[1 << 16];
        size_t got, size = 0;
        mn_xxh64_state h;
        mn_xxh64_init(&h, 0);
        while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
            mn_xxh64_update(&h, buf, got);
            size += got;
        }
        fclose(f);
        snprintf(lines[n++], sizeof lines[0], "%s %zu %016" PRIx64 "\n", e->d_name, size, mn_xxh64_digest(&h));
    }
    closedir(d);
    qsort(lines, (size_t)n, sizeof lines[0], (int (*)(const void *, const void *))strcmp);
    char *out = calloc((size_t)n * sizeof lines[0] + 1, 1);
    for (int i = 0; i < n; i++)
        strcat(out, lines[i]);
    return out;
}

static void assert_same_dir(const char *before, const char *dir) {
    char *now = dir_print(dir);
    if (strcmp(before, now))
        fail_msg("%s changed:\nbefore:\n%safter:\n%s", dir, before, now);
    free(now);
}

/* The id line of dir/run-id. */
static void run_id_of(const char *dir, char id[MN_RUN_ID_LEN + 1]) {
    char path[800];
    snprintf(path, sizeof path, "%s/run-id", dir);
    char *text = slurp(path), *line = strstr(text, "\nid ");
    if (!line)
        fail_msg("%s holds no id line:\n%s", path, text);
    snprintf(id, MN_RUN_ID_LEN + 1, "%s", line + 4);
    free(text);
}

static char ro_mount[800]; /* a read-only bind mount made by a test, undone even when it fails */

static int unmount_ro(void **state) {
    (void)state;
    if (ro_mount[0])
        umount2(ro_mount, MNT_DETACH);
    ro_mount[0] = '\0';
    return 0;
}

/* Issue 20: `--resume DIR` wrote into the run directory stored in the checkpoint (relative to
 * wherever the first run started) and pruned there: resuming a copy replaced the original's
 * checkpoints. Now a resume writes where its checkpoint lies (or into --run-dir), a directory
 * belongs to the run in its run-id file, and nothing of another run is written over or pruned. */
static void test_resume_never_touches_another_run(void **state) {
    (void)state;
    const char *a[] = {TINY_RECALL, "--steps", "4", "--checkpoint-interval", "2", "--keep-checkpoints", "2",
                       "--run-dir", wpath("own_a"), NULL};
    run_expect(0, "own_a", a);
    char id_a[MN_RUN_ID_LEN + 1], id[MN_RUN_ID_LEN + 1];
    run_id_of(wpath("own_a"), id_a);
    char *text = slurp(wpath("own_a/run-id"));
    assert_non_null(strstr(text, "mnemo run 1\n"));
    char want[900];
    snprintf(want, sizeof want, "\ndirectory %s\n", wpath("own_a")); /* absolute: the work dir is */
    assert_non_null(strstr(text, want));
    free(text);
    OK(mn_checkpoint_read_run_id(wpath("own_a/ckpt-00000004.h5"), id, sizeof id));
    assert_string_equal(id, id_a);

    /* a fresh run into it is refused: it would write over run A's ckpt-2 and ckpt-4 */
    char *before_a = dir_print(wpath("own_a"));
    const char *again[] = {TINY_RECALL, "--steps", "2", "--run-dir", wpath("own_a"), NULL};
    run_expect(1, "own_again", again);
    log_has("own_again", "err", "holds checkpoints of run");
    assert_same_dir(before_a, wpath("own_a"));

    /* a copy of the run directory resumes into the copy; the original is untouched */
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", wpath("own_a"), wpath("own_copy"));
    assert_int_equal(system(cmd), 0);
    const char *copy[] = {"train", "--resume", wpath("own_copy"), "--steps", "8", NULL};
    run_expect(0, "own_copy", copy);
    log_has("own_copy", "err", "a copy of its directory");
    assert_same_dir(before_a, wpath("own_a"));
    OK(mn_checkpoint_read_run_id(wpath("own_copy/ckpt-00000008.h5"), id, sizeof id));
    assert_string_equal(id, id_a);
    assert_true(access(wpath("own_copy/ckpt-00000004.h5"), F_OK) != 0); /* pruned: keep 2, its own */

    /* run A's checkpoint with --run-dir of run B: refused, B untouched */
    const char *b[] = {TINY_RECALL, "--steps", "2", "--run-dir", wpath("own_b"), NULL};
    run_expect(0, "own_b", b);
    char *before_b = dir_print(wpath("own_b"));
    const char *into_b[] = {"train", "--resume", wpath("own_a/ckpt-00000004.h5"), "--run-dir", wpath("own_b"), NULL};
    run_expect(1, "own_into_b", into_b);
    log_has("own_into_b", "err", "belongs to run");
    log_has("own_into_b", "err", "--run-dir");
    assert_same_dir(before_b, wpath("own_b"));
    /* ... and the same checkpoint copied into run B's directory: resuming it would write there */
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", wpath("own_a/ckpt-00000004.h5"), wpath("own_b/ckpt-00000001.h5"));
    assert_int_equal(system(cmd), 0);
    free(before_b);
    before_b = dir_print(wpath("own_b"));
    const char *copied[] = {"train", "--resume", wpath("own_b/ckpt-00000001.h5"), NULL};
    run_expect(1, "own_copied", copied);
    log_has("own_copied", "err", "belongs to run");
    assert_same_dir(before_b, wpath("own_b"));
    /* run B continues in its directory and prunes only its own checkpoints: A's copy stays */
    const char *more_b[] = {"train", "--resume", wpath("own_b/ckpt-00000002.h5"), "--steps", "6",
                            "--checkpoint-interval", "1", "--keep-checkpoints", "1", NULL};
    run_expect(0, "own_more_b", more_b);
    assert_true(access(wpath("own_b/ckpt-00000006.h5"), F_OK) == 0);
    assert_true(access(wpath("own_b/ckpt-00000005.h5"), F_OK) != 0);
    assert_true(access(wpath("own_b/ckpt-00000001.h5"), F_OK) == 0);

    /* a continuation into a new directory is a run of its own, which records where it came from */
    const char *branch[] = {"train", "--resume", wpath("own_a/ckpt-00000002.h5"), "--steps", "3", "--run-dir",
                            wpath("own_c"), NULL};
    run_expect(0, "own_c", branch);
    run_id_of(wpath("own_c"), id);
    assert_true(strcmp(id, id_a) != 0);
    text = slurp(wpath("own_c/run-id"));
    snprintf(want, sizeof want, "continues %s step 2\n", id_a);
    assert_non_null(strstr(text, want));
    free(text);
    assert_same_dir(before_a, wpath("own_a"));

    /* a checkpoint that lies somewhere read-only: refused with the way out, which works */
    assert_int_equal(mkdir(wpath("own_ro"), 0755), 0);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", wpath("own_a/ckpt-00000004.h5"), wpath("own_ro/"));
    assert_int_equal(system(cmd), 0);
    if (geteuid() != 0) {
        assert_int_equal(chmod(wpath("own_ro"), 0555), 0);
    } else if (mount(wpath("own_ro"), wpath("own_ro"), NULL, MS_BIND, NULL) == 0) {
        snprintf(ro_mount, sizeof ro_mount, "%s", wpath("own_ro"));
        if (mount(NULL, wpath("own_ro"), NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) != 0)
            unmount_ro(NULL);
    }
    if (access(wpath("own_ro"), W_OK) == 0 && !ro_mount[0]) {
        print_message("cannot make a read-only directory here: that part skipped\n");
    } else {
        const char *ro[] = {"train", "--resume", wpath("own_ro/ckpt-00000004.h5"), NULL};
        run_expect(1, "own_ro", ro);
        log_has("own_ro", "err", "is not writable");
        log_has("own_ro", "err", "give --run-dir a new directory");
        const char *out[] = {"train", "--resume", wpath("own_ro/ckpt-00000004.h5"), "--steps", "5", "--run-dir",
                             wpath("own_ro_next"), NULL};
        run_expect(0, "own_ro_next", out);
        unmount_ro(NULL);
        chmod(wpath("own_ro"), 0755);
    }
    free(before_a);
    free(before_b);
}

/* Issue 20: inspect said "verified" for a checkpoint whose /train/dist failed its checksum, for
 * tensors without a Fletcher32 filter and for NaN parameters; --config-only of a flipped config
 * crashed. It verifies all that a resume loads and exits 1 naming what failed. */
static void test_inspect_verifies_what_resume_needs(void **state) {
    (void)state;
    const char *make[] = {TINY_RECALL, "--steps", "2", "--run-dir", wpath("insp"), NULL};
    run_expect(0, "insp_make", make);
    const char *good[] = {"inspect", wpath("insp/ckpt-00000002.h5"), NULL};
    run_expect(0, "insp_good", good);
    log_has("insp_good", "out", "verified     format 2");
    log_has("insp_good", "out", "run          ");

    /* NaN parameters: they load no more, and inspect says which */
    loaded l = load_ckpt(wpath("insp/ckpt-00000002.h5"));
    mn_tensor_info t;
    OK(mn_model_find_tensor(l.model, "memory.r0", &t));
    mn_model_params(l.model)[t.offset + 5] = NAN;
    mn_checkpoint_info info;
    OK(mn_checkpoint_read_info(wpath("insp/ckpt-00000002.h5"), &info));
    mn_checkpoint_save_options so = {.train_config_json = info.train_config};
    OK(mn_checkpoint_save(wpath("insp_nan.h5"), l.model, l.trainer, &l.state, &so));
    mn_checkpoint_info_free(&info);
    free_loaded(&l);
    const char *nan[] = {"inspect", wpath("insp_nan.h5"), NULL};
    run_expect(1, "insp_nan", nan);
    log_has("insp_nan", "err", "tensor params/memory.r0 holds a non-finite value (nan) at index 5");
    log_has("insp_nan", "err", "NOT verified");
    const char *nan_resume[] = {"train", "--resume", wpath("insp_nan.h5"), "--run-dir", wpath("insp_nan_run"), NULL};
    run_expect(1, "insp_nan_resume", nan_resume);
    log_has("insp_nan_resume", "err", "non-finite");

    /* format 1: /train/dist failing its checksum, and a tensor without a Fletcher32 filter */
    char fixture[600], cmd[2000];
    snprintf(fixture, sizeof fixture, "%s/ckpt_format1.h5", getenv("MNEMO_FIXTURES"));
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", fixture, wpath("insp_dist.h5"));
    assert_int_equal(system(cmd), 0);
    const char *old_ok[] = {"inspect", wpath("insp_dist.h5"), NULL};
    run_expect(0, "insp_old", old_ok);
    log_has("insp_old", "out", "verified     format 1");
    flip_in_chunk(wpath("insp_dist.h5"), "train/dist/rank_cursors", 9, 0x10);
    const char *dist[] = {"inspect", wpath("insp_dist.h5"), NULL};
    run_expect(1, "insp_dist", dist);
    log_has("insp_dist", "err", "train/dist/rank_cursors");
    log_has("insp_dist", "err", "NOT verified: data-parallel layout (/train/dist) failed");
    log_has("insp_dist", "out", "parameters   "); /* the rest is still shown */

    /* a corrupt header (the link to /train/dist): refused, and HDF5, which keeps some memory
     * after rejecting it, does not print "infinite loop closing library" at exit */
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", fixture, wpath("insp_hdr.h5"));
    assert_int_equal(system(cmd), 0);
    FILE *hf = fopen(wpath("insp_hdr.h5"), "rb");
    assert_non_null(hf);
    unsigned char *all = malloc(1 << 20);
    size_t got = fread(all, 1, 1 << 20, hf);
    fclose(hf);
    unsigned char *link = memmem(all, got, "\004dist", 5); /* the link's name, length-prefixed */
    assert_non_null(link);
    long link_at = (long)(link - all);
    free(all);
    int hfd = open(wpath("insp_hdr.h5"), O_RDWR);
    assert_int_equal(pwrite(hfd, "X", 1, link_at + 2), 1);
    close(hfd);
    /* under LeakSanitizer (a sanitize build) these two runs would end on that HDF5 leak */
    FILE *supp = fopen(wpath("lsan-hdf5.supp"), "w");
    assert_non_null(supp);
    fputs("leak:libhdf5\n", supp);
    fclose(supp);
    const char *lsan = getenv("LSAN_OPTIONS");
    char *saved = lsan ? strdup(lsan) : NULL, options[1200];
    snprintf(options, sizeof options, "%s%ssuppressions=%s", lsan ? lsan : "", lsan ? ":" : "", wpath("lsan-hdf5.supp"));
    setenv("LSAN_OPTIONS", options, 1);
    const char *hdr[] = {"inspect", wpath("insp_hdr.h5"), NULL};
    int hdr_rc = wait_exit(spawn_mnemo("insp_hdr", hdr));
    const char *hdr_resume[] = {"train", "--resume", wpath("insp_hdr.h5"), "--run-dir", wpath("insp_hdr_run"), NULL};
    int hdr_resume_rc = wait_exit(spawn_mnemo("insp_hdr_resume", hdr_resume));
    if (saved)
        setenv("LSAN_OPTIONS", saved, 1);
    else
        unsetenv("LSAN_OPTIONS");
    free(saved);
    check_exit(hdr_rc, 1, "", "insp_hdr", hdr);
    check_exit(hdr_resume_rc, 1, "", "insp_hdr_resume", hdr_resume);
    log_has("insp_hdr", "err", "corrupt");
    const char *hdr_logs[] = {"insp_hdr", "insp_hdr_resume"};
    for (int i = 0; i < 2; i++) {
        char *err = log_text(hdr_logs[i], "err");
        if (strstr(err, "infinite loop") || strstr(err, "HDF5-DIAG"))
            fail_msg("%s.err shows HDF5's own diagnostics:\n%s", hdr_logs[i], err);
        free(err);
    }

    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", fixture, wpath("insp_nofl.h5"));
    assert_int_equal(system(cmd), 0);
    hid_t f = H5Fopen(wpath("insp_nofl.h5"), H5F_ACC_RDWR, H5P_DEFAULT), space, d;
    float zeros[2 * 8] = {0};
    hsize_t dims[2] = {2, 8};
    assert_true(H5Ldelete(f, "optimizer/m/memory.r0", H5P_DEFAULT) >= 0);
    space = H5Screate_simple(2, dims, NULL);
    d = H5Dcreate2(f, "optimizer/m/memory.r0", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros) >= 0);
    H5Dclose(d), H5Sclose(space), H5Fclose(f);
    const char *nofl[] = {"inspect", wpath("insp_nofl.h5"), NULL};
    run_expect(1, "insp_nofl", nofl);
    log_has("insp_nofl", "err", "'optimizer/m/memory.r0' carries no Fletcher32 checksum");

    /* a flipped digit of the stored config: refused, not printed (nor crashed on) */
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", wpath("insp/ckpt-00000002.h5"), wpath("insp_cfg.h5"));
    assert_int_equal(system(cmd), 0);
    char *bytes = NULL;
    size_t n = 0;
    FILE *in = fopen(wpath("insp_cfg.h5"), "rb");
    assert_non_null(in);
    fseek(in, 0, SEEK_END);
    n = (size_t)ftell(in);
    rewind(in);
    bytes = malloc(n);
    assert_int_equal(fread(bytes, 1, n, in), n);
    fclose(in);
    char *lr = memmem(bytes, n, "\"lr\":0.01", 9);
    assert_non_null(lr);
    int fd = open(wpath("insp_cfg.h5"), O_RDWR);
    assert_int_equal(pwrite(fd, "9", 1, (off_t)(lr - bytes) + 8), 1);
    close(fd);
    free(bytes);
    const char *cfg[] = {"inspect", "--config-only", wpath("insp_cfg.h5"), NULL};
    run_expect(1, "insp_cfg", cfg);
    log_has("insp_cfg", "err", "checksum mismatch");
    const char *cfg_resume[] = {"train", "--resume", wpath("insp_cfg.h5"), "--run-dir", wpath("insp_cfg_run"), NULL};
    run_expect(1, "insp_cfg_resume", cfg_resume);
    log_has("insp_cfg_resume", "err", "checksum mismatch");
}

/* Every recipe (train/recipes/<name>.json) loads with the library's config loader and, with the
 * paths a run adds (a recipe holds none), validates. */
static void test_recipes_load(void **state) {
    (void)state;
    const char *dir = getenv("MNEMO_RECIPES");
    assert_non_null(dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0, demo = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json"))
            continue;
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        mn_train_config c;
        mn_train_config_defaults(&c);
        OK(mn_train_config_load_file(&c, path));
        if (!strcmp(c.task, "shards")) {
            assert_string_equal(c.train_data, ""); /* the run's, not the recipe's */
            snprintf(c.train_data, sizeof c.train_data, "the-run's.shard");
        }
        if (mn_train_config_validate(&c) != MN_OK)
            fail_msg("%s: %s", path, mn_last_error());
        demo |= !strcmp(e->d_name, "demo.json");
        n++;
    }
    closedir(d);
    assert_true(demo && n >= 1);
}

/* The shipped mnemo has no test hooks: the fault options are unknown, MNEMO_EPISODE_LOG is
 * ignored, --help names neither (mnemo-test-hooks has them: test_train_hooks.c). */
static void test_plain_mnemo_has_no_hooks(void **state) {
    (void)state;
    const char *hooks[][2] = {{"--fault-nan-steps", "1"}, {"--fault-checkpoint-steps", "1"},
                              {"--fault-checkpoint-sleep-ms", "10"}};
    for (int i = 0; i < 3; i++) {
        const char *a[] = {TINY_RECALL, "--steps", "1", hooks[i][0], hooks[i][1], "--run-dir", wpath("plain"), NULL};
        run_expect(2, "plain", a);
        char want[96];
        snprintf(want, sizeof want, "unknown option '%s'", hooks[i][0]);
        log_has("plain", "err", want);
    }
    setenv("MNEMO_EPISODE_LOG", wpath("plain_ep"), 1);
    const char *b[] = {TINY_RECALL, "--steps", "2", "--run-dir", wpath("plain_run"), NULL};
    run_expect(0, "plain_run", b);
    unsetenv("MNEMO_EPISODE_LOG");
    assert_true(exists(wpath("plain_run/ckpt-00000002.h5")));
    assert_false(exists(wpath("plain_ep.0")));
    const char *help[] = {"train", "--help", NULL};
    run_expect(0, "plain_help", help);
    char *out = log_text("plain_help", "out");
    assert_non_null(strstr(out, "--print-config"));
    assert_null(strstr(out, "--fault"));
    assert_null(strstr(out, "MNEMO_EPISODE_LOG"));
    free(out);
}

/* A probe file whose distances depend on the rule: per dialogue, probe 0 has evidence
 * [1, after - 2] (after - max = 2; after - evidence[0] = after - 1), probe 1 a question longer
 * than a turn (rendered in pieces) at distance 5, probe 2 no evidence; dialogue 1's probe 2
 * has no choices (scored, but not multiple choice). */
static void write_probe_file(const char *path) {
    static const char *foods[] = {"rice", "soup", "tea", "bread"};
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int d = 0; d < 6; d++) {
        int turns = 8 + d % 3;
        const char *cat = foods[d % 4], *dog = foods[(d + 1) % 4];
        fprintf(f, "{\"id\": \"p%d\", \"turns\": [", d);
        for (int t = 0; t < turns; t++)
            fprintf(f, "%s{\"speaker\": \"%s\", \"text\": \"%s%s\"}", t ? ", " : "", t % 2 ? "B" : "A",
                    t == 1 ? "my cat eats " : t == turns - 6 ? "my dog likes " : "the red fish likes tea today ",
                    t == 1 ? cat : t == turns - 6 ? dog : "again");
        fprintf(f, "], \"probes\": [{\"after\": %d, \"speaker\": \"A\", \"question\": \"what does your cat eat\", "
                   "\"answer\": \"%s\", \"choices\": [\"rice\", \"soup\", \"tea\", \"bread\"], \"evidence\": [1, %d]}, ",
                turns - 1, cat, turns - 3);
        fprintf(f, "{\"after\": %d, \"speaker\": \"A\", \"question\": \"tell me again what it was that your dog "
                   "really likes to eat most of all today\", \"answer\": \"%s\", \"choices\": [\"rice\", \"soup\", "
                   "\"tea\", \"bread\"], \"evidence\": [%d]}, ",
                turns - 1, dog, turns - 6);
        if (d == 1)
            fprintf(f, "{\"after\": 3, \"question\": \"what do you like\", \"answer\": \"tea\"}]}\n");
        else
            fprintf(f, "{\"after\": 3, \"question\": \"what do you like\", \"answer\": \"tea\", "
                       "\"choices\": [\"tea\", \"soup\"]}]}\n");
    }
    fclose(f);
}

/* eval's label of a turn bucket [lo, hi) (hi null: open-ended). */
static void bucket_label(json_t *b, char *buf, size_t cap) {
    json_int_t lo = json_integer_value(json_object_get(b, "lo"));
    json_t *hi = json_object_get(b, "hi");
    if (json_is_null(hi))
        snprintf(buf, cap, "%lld+", (long long)lo);
    else if (json_integer_value(hi) - 1 == lo)
        snprintf(buf, cap, "%lld", (long long)lo);
    else
        snprintf(buf, cap, "%lld-%lld", (long long)lo, (long long)json_integer_value(hi) - 1);
}

/* The metrics bucket `label`, or NULL. */
static json_t *metrics_bucket(json_t *eval, const char *label) {
    json_t *buckets = json_object_get(eval, "buckets"), *b;
    size_t i;
    json_array_foreach(buckets, i, b) if (!strcmp(json_string_value(json_object_get(b, "distance")), label)) return b;
    return NULL;
}

/* n and correct (acc * n, printed to 6 digits: exact for these counts) of a metrics bucket and
 * an eval tally ({mc_n, mc_accuracy}) agree. */
static void assert_same_tally(const char *what, json_t *m, const char *acc_key, json_t *e) {
    json_int_t n = json_integer_value(json_object_get(m, "n") ? json_object_get(m, "n") : json_object_get(m, "probes"));
    json_int_t en = json_integer_value(json_object_get(e, "mc_n"));
    double acc = json_number_value(json_object_get(m, acc_key)), eacc = json_number_value(json_object_get(e, "mc_accuracy"));
    if (n != en || llround(acc * (double)n) != llround(eacc * (double)en))
        fail_msg("%s (%s): training log %lld probes at %.6g, mnemo eval %lld at %.17g", what, acc_key, (long long)n, acc,
                 (long long)en, eacc);
}

/* The probe accuracy of the training log (metrics.jsonl) equals `mnemo eval --modes
 * memory,no_memory` on the same checkpoint and probe file, bucket by bucket: one scorer, one
 * distance rule (after - max(evidence)), the same probes (the first eval_probes in file order,
 * split questions included). */
static void test_probe_accuracy_equals_eval(void **state) {
    (void)state;
    mn_rng rng;
    mn_rng_seed(&rng, 77);
    make_text_data(rng_draw, &rng, run_ok);
    write_probe_file(wpath("probes.jsonl"));
    const char *train[] = {TINY_SHARDS_MODEL, "--valid-probes", wpath("probes.jsonl"), "--batch", "2", "--turns", "4",
                           "--bptt", "2", "--lr", "0.01", "--warmup-steps", "1", "--steps", "3", "--eval-interval", "3",
                           "--eval-batches", "1", "--eval-probes", "7", "--threads", "1", "--device", "cpu",
                           "--run-dir", wpath("pe"), NULL};
    run_expect(0, "pe", train);
    const char *eval[] = {"eval", "--checkpoint", wpath("pe/ckpt-00000003.h5"), "--data", wpath("probes.jsonl"),
                          "--modes", "memory,no_memory", "--max-probes", "7", "--no-generate", "--no-lm", "--threads",
                          "1", "--json", wpath("pe.json"), "--quiet", NULL};
    run_expect(0, "pe_eval", eval);
    metrics *m = read_metrics(wpath("pe"));
    json_t *t = m->last_eval;
    assert_int_equal(json_integer_value(json_object_get(t, "step")), 3);
    json_t *report = json_load_file(wpath("pe.json"), 0, NULL);
    assert_non_null(report);
    json_t *mem = json_object_get(json_object_get(report, "recall"), "memory");
    json_t *reset = json_object_get(json_object_get(report, "recall"), "no_memory");
    assert_same_tally("all", t, "probe_acc", mem);
    assert_same_tally("all", t, "probe_acc_reset", reset);
    int buckets = 0;
    for (size_t i = 0; i < json_array_size(json_object_get(mem, "by_distance")); i++) {
        json_t *eb = json_array_get(json_object_get(mem, "by_distance"), i);
        if (!json_integer_value(json_object_get(eb, "mc_n")))
            continue;
        char label[32];
        bucket_label(eb, label, sizeof label);
        json_t *mb = metrics_bucket(t, label);
        if (!mb)
            fail_msg("mnemo eval has probes at distance %s, the training log has none", label);
        assert_same_tally(label, mb, "acc", eb);
        assert_same_tally(label, mb, "acc_reset", json_array_get(json_object_get(reset, "by_distance"), i));
        buckets++;
    }
    assert_same_tally("none", metrics_bucket(t, "none"), "acc", json_object_get(mem, "no_distance"));
    assert_same_tally("none", metrics_bucket(t, "none"), "acc_reset", json_object_get(reset, "no_distance"));
    assert_int_equal(json_array_size(json_object_get(t, "buckets")), buckets + 1);
    /* the probes and the distance rule themselves: 6 multiple-choice probes among the first 7,
     * 3 at after - max(evidence) = 2, 2 split questions at 5, 1 without evidence */
    assert_int_equal(json_integer_value(json_object_get(t, "probes")), 6);
    assert_int_equal(json_integer_value(json_object_get(metrics_bucket(t, "2-3"), "n")), 3);
    assert_int_equal(json_integer_value(json_object_get(metrics_bucket(t, "4-7"), "n")), 2);
    log_has("pe", "out", "validation probes: 6 prepared");
    json_decref(report);
    free_metrics(m);
}

/* A validation probe file that holds nothing usable is refused before any step (it used to
 * train on with no validation at all), naming the file and the line. */
static void test_garbage_probe_file_refused(void **state) {
    (void)state;
    mn_rng rng;
    mn_rng_seed(&rng, 78);
    make_text_data(rng_draw, &rng, run_ok);
    FILE *f = fopen(wpath("garbage.jsonl"), "w");
    assert_non_null(f);
    fputs("garbage\n{\"x\": 1}\n", f);
    fclose(f);
    const char *train[] = {TINY_SHARDS_MODEL, "--valid-probes", wpath("garbage.jsonl"), "--batch", "2", "--turns", "4",
                           "--bptt", "2", "--steps", "2", "--threads", "1", "--device", "cpu",
                           "--run-dir", wpath("garbage"), NULL};
    run_expect(1, "garbage", train);
    log_has("garbage", "err", "garbage.jsonl:1: invalid JSON");
    assert_int_equal(access(wpath("garbage/ckpt-00000002.h5"), F_OK), -1);
}

/* ---------------------------------------------------------------- the memory learns */
/* Trains a small model on synthetic recall episodes through `mnemo train` (32-turn episodes,
 * one fact asked about 1..31 turns later, curriculum 2 -> 4 -> 8 -> 16 -> 32 turns every 60
 * steps, 400 steps), then scores held-out episodes from the checkpoint: with the session
 * state, and with R reset to R_0. Accuracy reaches 99% by step 150 (measured with evaluations
 * every 50 steps), so 400 steps leave a wide margin. About 30 s of training on one idle core. */
#define LEARN_TURNS 32
#define LEARN_CHOICES 4

static void test_memory_learns(void **state) {
    (void)state;
    /* one thread, as the training run: two spinning OpenMP threads on a shared 2-core
     * machine make the many tiny single-turn calls below several times slower */
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    double t0 = now_s();
    const char *args[] = {"train", "--task", "recall", "--vocab-size", "64", "--d-model", "64", "--n-heads", "4",
                          "--n-layers", "1", "--n-comp-layers", "1", "--n-slots", "4", "--max-turn-tokens", "8",
                          "--recall-keys", "16", "--recall-values", "32", "--recall-facts", "1", "--recall-choices",
                          "4", "--recall-filler-min", "1", "--recall-filler-max", "3", "--batch", "16", "--turns",
                          "32", "--bptt", "32", "--curriculum-start-turns", "2", "--curriculum-stage-steps", "60",
                          "--lr", "0.003", "--min-lr", "0.0003", "--warmup-steps", "50", "--weight-decay", "0",
                          "--grad-clip", "1", "--answer-weight", "5", "--text-weight", "1", "--steps", "400",
                          "--seed", "1", "--eval-interval", "0", "--eval-batches", "2", "--eval-probes", "200",
                          "--checkpoint-interval", "0", "--threads", "1", "--device", "cpu", "--log-interval", "100",
                          "--run-dir", wpath("learn"), NULL};
    run_expect(0, "learn", args);
    double t_train = now_s() - t0;

    loaded l = load_ckpt(wpath("learn/ckpt-00000400.h5"));
    mn_model *m = l.model;
    mn_recall_task task = {.vocab_size = 64, .n_keys = 16, .n_values = 32, .filler_min = 1, .filler_max = 3,
                           .facts = 1, .n_choices = LEARN_CHOICES, .text_weight = 1, .answer_weight = 5};
    const int T = LEARN_TURNS, L = mn_recall_max_len(&task), episodes = 1200;
    mn_rng rng;
    mn_rng_seed(&rng, 0xC0FFEEull); /* held out: not the training stream */
    size_t S = mn_state_floats(m);
    float *r = malloc(S * sizeof(float)), *r0 = malloc(S * sizeof(float));
    OK(mn_initial_state(m, r0));
    int32_t tokens[LEARN_TURNS * 8], lengths[LEARN_TURNS];
    float weights[LEARN_TURNS * 8];
    /* distance buckets 1-3, 4-7, 8-15, 16-31 */
    int n[4] = {0}, ok[4] = {0}, ok_reset[4] = {0};
    for (int e = 0; e < episodes; e++) {
        mn_recall_probe p;
        OK(mn_recall_fill_batch(&task, &rng, 1, T, L, 1, T - 1, tokens, lengths, weights, &p));
        memcpy(r, r0, S * sizeof(float));
        for (int t = 0; t < p.question_turn; t++)
            OK(mn_update(m, tokens + t * L, lengths[t], r, r));
        int32_t prefix[2] = {MN_RECALL_ASK, p.key};
        const int32_t *choices[LEARN_CHOICES];
        int lens[LEARN_CHOICES];
        double scores[LEARN_CHOICES];
        for (int i = 0; i < p.n_choices; i++) {
            choices[i] = &p.choices[i];
            lens[i] = 1;
        }
        int best, best_reset;
        OK(mn_score_choices(m, r, prefix, 2, choices, lens, p.n_choices, scores, &best));
        OK(mn_score_choices(m, r0, prefix, 2, choices, lens, p.n_choices, scores, &best_reset));
        int d = p.question_turn - p.fact_turn, b = d >= 16 ? 3 : d >= 8 ? 2 : d >= 4 ? 1 : 0;
        n[b]++;
        ok[b] += best == p.answer_index;
        ok_reset[b] += best_reset == p.answer_index;
    }
    double t_all = now_s() - t0;
    const char *names[4] = {"1-3", "4-7", "8-15", "16-31"};
    print_message("memory learns: %d held-out probes, %d choices (chance %.1f%%); training %.1f s, total %.1f s\n",
                  episodes, LEARN_CHOICES, 100.0 / LEARN_CHOICES, t_train, t_all);
    print_message("  distance  probes  with memory  R reset to R_0\n");
    int far_n = 0, far_reset = 0;
    for (int b = 0; b < 4; b++) {
        print_message("  %-8s  %6d  %10.1f%%  %13.1f%%\n", names[b], n[b], 100.0 * ok[b] / n[b],
                      100.0 * ok_reset[b] / n[b]);
        if (b >= 2) {
            far_n += n[b];
            far_reset += ok_reset[b];
        }
    }
    for (int b = 2; b < 4; b++) {
        assert_true(n[b] >= 100);
        if (!(ok[b] >= 0.90 * n[b]))
            fail_msg("distance %s: %.1f%% with memory, below 90%%", names[b], 100.0 * ok[b] / n[b]);
    }
    double reset_acc = (double)far_reset / far_n, chance = 1.0 / LEARN_CHOICES;
    if (fabs(reset_acc - chance) > 0.10)
        fail_msg("with R reset to R_0 the accuracy at distance >= 8 is %.1f%%, more than 10 points from chance",
                 100 * reset_acc);
    free(r), free(r0);
    free_loaded(&l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lr_schedule_and_curriculum),
        cmocka_unit_test(test_recall_episodes),
        cmocka_unit_test(test_score_choices),
        cmocka_unit_test(test_config_layers_and_errors),
        cmocka_unit_test(test_recipes_load),
        cmocka_unit_test(test_plain_mnemo_has_no_hooks),
        cmocka_unit_test(test_resume_bit_identical_recall),
        cmocka_unit_test(test_reconstruction_in_training),
        cmocka_unit_test(test_base_and_freeze_decoder),
        cmocka_unit_test(test_base_grows_decoder),
        cmocka_unit_test(test_base_grows_compressor),
        cmocka_unit_test(test_base_grows_slots),
        cmocka_unit_test(test_resume_bit_identical_shards),
        cmocka_unit_test(test_resume_bit_identical_stream),
        cmocka_unit_test(test_signals_checkpoint_and_resume),
        cmocka_unit_test(test_bad_checkpoints_refused_by_cli),
        cmocka_unit_test_teardown(test_resume_never_touches_another_run, unmount_ro),
        cmocka_unit_test(test_inspect_verifies_what_resume_needs),
        cmocka_unit_test(test_probe_accuracy_equals_eval),
        cmocka_unit_test(test_stop_at_step),
        cmocka_unit_test(test_vocab_size_from_tokenizer),
        cmocka_unit_test(test_garbage_probe_file_refused),
        cmocka_unit_test(test_memory_learns),
    };
    return cmocka_run_group_tests(tests, setup_work_dir, remove_work_dir);
}
