/* mnemo eval: buckets, distances, answer normalisation (exact match and LoCoMo F1), the JSON
 * report's keys, memory against no_memory with a shut gate, refusals of bad input, and the
 * CLI end to end on a tiny checkpoint that must come out byte-identical. */
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "close.h"
#include "eval/eval.h"
#include "io/checkpoint.h"
#include "io/gpt2_import.h"
#include "mnemo.h"
#include "model/score.h"
#include "text/dialogue.h"
#include "text/shard.h"
#include "text/tokenizer.h"

/* ---------------------------------------------------------------- fixtures */
static const char *texts[] = {
    "Hi! I just moved to Lisbon.", "Oh nice, how do you like it?", "The food is great and the people are kind.",
    "Which city did you move to?", "Lisbon", "Oslo", "Quito", "Perth", "my dog's name is Rex",
    "What is your dog's name?", "Rex", "Max", "Bella", "I like hiking in the mountains on weekends.",
};

static mn_tokenizer *make_tokenizer(int vocab) {
    mn_tokenizer *tok = NULL;
    assert_int_equal(mn_tokenizer_train_texts(texts, NULL, (int64_t)(sizeof texts / sizeof texts[0]), vocab, &tok),
                     MN_OK);
    return tok;
}

static mn_model *make_model_n(const mn_tokenizer *tok, uint64_t seed, int max_turn_tokens) {
    mn_config c = {.vocab_size = mn_tokenizer_vocab_size(tok), .d_model = 16, .n_heads = 2, .n_layers = 1,
                   .n_comp_layers = 1, .n_slots = 2, .max_turn_tokens = max_turn_tokens, .gate_bias_init = 0.0f};
    mn_model *m = NULL;
    assert_int_equal(mn_model_create(&c, &m), MN_OK);
    assert_int_equal(mn_model_init(m, seed), MN_OK);
    return m;
}

static mn_model *make_model(const mn_tokenizer *tok, uint64_t seed) { return make_model_n(tok, seed, 48); }

static const char *dialogue_jsonl =
    "{\"id\": \"d1\", \"turns\": ["
    "{\"speaker\": \"A\", \"text\": \"Hi! I just moved to Lisbon.\", \"session\": 1},"
    "{\"speaker\": \"B\", \"text\": \"Oh nice, how do you like it?\"},"
    "{\"speaker\": \"A\", \"text\": \"The food is great and the people are kind.\"},"
    "{\"speaker\": \"B\", \"text\": \"I like hiking in the mountains on weekends.\", \"session\": 2},"
    "{\"speaker\": \"A\", \"text\": \"my dog's name is Rex\"},"
    "{\"speaker\": \"B\", \"text\": \"Oh nice, how do you like it?\"}],"
    " \"probes\": ["
    "{\"after\": 3, \"speaker\": \"B\", \"question\": \"Which city did you move to?\", \"answer\": \"Lisbon\","
    " \"choices\": [\"Lisbon\", \"Oslo\", \"Quito\", \"Perth\"], \"evidence\": [0]},"
    "{\"after\": 6, \"question\": \"What is your dog's name?\", \"answer\": \"Rex\","
    " \"choices\": [\"Max\", \"Rex\", \"Bella\"], \"evidence\": [4]},"
    "{\"after\": 1, \"question\": \"Which city did you move to?\", \"answer\": \"Lisbon\"}]}\n"
    "{\"id\": \"d2\", \"turns\": ["
    "{\"speaker\": \"X\", \"text\": \"my dog's name is Rex\"},"
    "{\"speaker\": \"Y\", \"text\": \"Oh nice, how do you like it?\"}],"
    " \"probes\": ["
    "{\"after\": 2, \"question\": \"What is your dog's name?\", \"answer\": \"Rex\","
    " \"choices\": [\"Rex\", \"Max\"], \"evidence\": [0]}]}\n";

static void read_dialogues(const char *jsonl, mn_dialogue_list *list) {
    memset(list, 0, sizeof *list);
    assert_int_equal(mn_jsonl_read_buffer("test", jsonl, strlen(jsonl), 1, NULL, list, NULL), MN_OK);
}

static void default_options(mn_eval_options *o, const mn_model *m) {
    mn_eval_options_default(o, mn_model_config(m)->n_slots);
    o->threads = 1;
    o->max_gen_tokens = 6;
}

/* ---------------------------------------------------------------- buckets */
static void test_bucket_edges(void **state) {
    (void)state;
    assert_int_equal(mn_eval_bucket(0, MN_EVAL_TURN_BUCKETS), -1);
    assert_int_equal(mn_eval_bucket(-3, MN_EVAL_TURN_BUCKETS), -1);
    assert_int_equal(mn_eval_bucket(1, MN_EVAL_TURN_BUCKETS), 0);
    assert_int_equal(mn_eval_bucket(2, MN_EVAL_TURN_BUCKETS), 1);
    assert_int_equal(mn_eval_bucket(3, MN_EVAL_TURN_BUCKETS), 1);
    assert_int_equal(mn_eval_bucket(4, MN_EVAL_TURN_BUCKETS), 2);
    assert_int_equal(mn_eval_bucket(7, MN_EVAL_TURN_BUCKETS), 2);
    assert_int_equal(mn_eval_bucket(8, MN_EVAL_TURN_BUCKETS), 3);
    assert_int_equal(mn_eval_bucket(255, MN_EVAL_TURN_BUCKETS), 7);
    assert_int_equal(mn_eval_bucket(256, MN_EVAL_TURN_BUCKETS), 8);
    assert_int_equal(mn_eval_bucket(511, MN_EVAL_TURN_BUCKETS), 8);
    assert_int_equal(mn_eval_bucket(512, MN_EVAL_TURN_BUCKETS), 9); /* 512 and beyond */
    assert_int_equal(mn_eval_bucket(100000, MN_EVAL_TURN_BUCKETS), 9);
    int64_t lo, hi;
    mn_eval_bucket_range(0, MN_EVAL_TURN_BUCKETS, &lo, &hi);
    assert_true(lo == 1 && hi == 2);
    mn_eval_bucket_range(3, MN_EVAL_TURN_BUCKETS, &lo, &hi);
    assert_true(lo == 8 && hi == 16);
    mn_eval_bucket_range(9, MN_EVAL_TURN_BUCKETS, &lo, &hi);
    assert_true(lo == 512 && hi == -1);
    /* every value falls inside its bucket's range */
    for (int64_t v = 1; v < 5000; v++) {
        int b = mn_eval_bucket(v, MN_EVAL_TOKEN_BUCKETS);
        mn_eval_bucket_range(b, MN_EVAL_TOKEN_BUCKETS, &lo, &hi);
        assert_true(v >= lo && (hi < 0 || v < hi));
    }
}

/* ---------------------------------------------------------------- normalisation */
static void expect_norm(char *(*fn)(const char *), const char *in, const char *want) {
    char *got = fn(in);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_normalize_exact_match(void **state) {
    (void)state;
    expect_norm(mn_eval_normalize_em, "The Lisbon!", "lisbon");
    expect_norm(mn_eval_normalize_em, "  An apple, a   day.  ", "apple day");
    expect_norm(mn_eval_normalize_em, "Theatre and Anna", "theatre and anna"); /* only whole words go */
    expect_norm(mn_eval_normalize_em, "rock-'n'-roll", "rocknroll");          /* punctuation deleted, not spaced */
    expect_norm(mn_eval_normalize_em, "A", "");
    expect_norm(mn_eval_normalize_em, "Café", "café"); /* non-ASCII kept as is */
    assert_true(mn_eval_exact_match("the Lisbon.", "Lisbon"));
    assert_true(mn_eval_exact_match("REX!", "rex"));
    assert_false(mn_eval_exact_match("Rex Max", "Rex"));
    assert_false(mn_eval_exact_match("", "Rex"));
}

static void test_normalize_locomo_f1(void **state) {
    (void)state;
    /* LoCoMo also drops "and" */
    expect_norm(mn_eval_normalize_locomo, "Cats and the dogs, mostly.", "cats dogs mostly");
    /* "the cat sat on the mat" -> cat sat on mat (4); "a cat on a mat" -> cat on mat (3):
     * 3 shared, P = 3/4, R = 1, F1 = 6/7 */
    assert_float_equal(mn_eval_token_f1("the cat sat on the mat", "a cat on a mat"), 6.0 / 7.0, 1e-12);
    /* repeated words count as a multiset: P = 1/3, R = 1 */
    assert_float_equal(mn_eval_token_f1("dog dog dog", "dog"), 0.5, 1e-12);
    assert_float_equal(mn_eval_token_f1("", "dog"), 0.0, 1e-12);
    assert_float_equal(mn_eval_token_f1("The Dog.", "dog"), 1.0, 1e-12);
    /* no stemming: "dogs" is not "dog" */
    assert_float_equal(mn_eval_token_f1("dogs", "dog"), 0.0, 1e-12);
    /* category 5: an abstention counts, whatever else is said */
    assert_float_equal(mn_eval_locomo_score("It was Not Mentioned in the chat.", "x", 5), 1.0, 0);
    assert_float_equal(mn_eval_locomo_score("No information available", "x", 5), 1.0, 0);
    assert_float_equal(mn_eval_locomo_score("Lisbon", "Not mentioned in the conversation", 5), 0.0, 0);
    /* category 3: the gold up to its first ';' */
    assert_float_equal(mn_eval_locomo_score("7 May 2023", "7 May 2023; the week before", 3), 1.0, 1e-12);
    assert_float_equal(mn_eval_token_f1("7 May 2023", "7 May 2023; the week before"), 2 * 1.0 * 0.6 / 1.6, 1e-12);
    /* category 1: mean over gold parts of the best prediction part */
    assert_float_equal(mn_eval_locomo_score("Oslo", "Lisbon, Oslo", 1), 0.5, 1e-12);
    assert_float_equal(mn_eval_locomo_score("Oslo, Lisbon", "Lisbon, Oslo", 1), 1.0, 1e-12);
    /* categories 2 and 4 are plain token F1 */
    assert_float_equal(mn_eval_locomo_score("the cat sat on the mat", "a cat on a mat", 2), 6.0 / 7.0, 1e-12);
}

/* ---------------------------------------------------------------- distances */
static void test_distances(void **state) {
    (void)state;
    mn_tokenizer *tok = make_tokenizer(300);
    mn_model *m = make_model_n(tok, 1, 48);
    mn_dialogue_list list;
    read_dialogues(dialogue_jsonl, &list);
    mn_eval_options o;
    default_options(&o, m);
    o.lm = 0;
    o.generate = 0;
    mn_eval_result r;
    /* 48 tokens a turn: the whole history (near one token a byte with this small vocabulary)
     * fits for no probe but the first-turn one; windows are cut to fit */
    assert_int_equal(mn_eval_run(m, tok, &list, &o, &r), MN_OK);
    assert_string_equal(r.variants[4].name, "full");
    assert_true(r.variants[4].unscored >= 3);
    assert_string_equal(r.variants[3].name, "window_8");
    assert_true(r.variants[3].window_used_sum <= 8.0 * (double)r.probes);
    mn_eval_result_free(&r);
    mn_model_free(m);
    m = make_model_n(tok, 1, 400);
    assert_int_equal(mn_eval_run(m, tok, &list, &o, &r), MN_OK);
    assert_int_equal(r.probes, 4);
    assert_int_equal(r.dialogues, 2);
    assert_int_equal(r.turns, 8);

    /* the rendered lengths of dialogue 1's turns */
    mn_token_corpus c = {0};
    mn_render_options ro = {.max_turn_tokens = 400, .include_probes = 0};
    assert_int_equal(mn_render_dialogue(tok, &list.items[0], &ro, &c, NULL, NULL), MN_OK);
    const mn_eval_probe_result *p = r.probe_results;
    assert_int_equal(p[0].dialogue, 0);
    assert_int_equal(p[0].probe, 0);
    assert_int_equal(p[0].distance_turns, 3);
    assert_int_equal(p[0].distance_tokens, c.turn_start[3] - c.turn_start[0]);
    assert_int_equal(p[1].distance_turns, 2); /* after 6, evidence 4 */
    assert_int_equal(p[1].distance_tokens, c.turn_start[6] - c.turn_start[4]);
    assert_int_equal(p[1].answer, 1);
    assert_int_equal(p[2].distance_turns, -1); /* no evidence */
    assert_int_equal(p[2].distance_tokens, -1);
    assert_int_equal(p[2].n_choices, 0);       /* scored for its gold likelihood only */
    assert_int_equal(p[3].dialogue, 1);
    assert_int_equal(p[3].distance_turns, 2);
    /* tallies: three probes with a distance, one without; three multiple choice */
    const mn_eval_variant_result *mem = &r.variants[0];
    assert_string_equal(mem->name, "memory");
    assert_int_equal(mem->all.n, 4);
    assert_int_equal(mem->all.mc_n, 3);
    assert_int_equal(mem->no_distance.n, 1);
    assert_int_equal(mem->by_turns[1].n, 3); /* distances 3, 2, 2 */
    /* the session start of turn 3 is part of the token distance */
    assert_true(c.turn_flags[3] & MN_TURN_SESSION_START);
    /* full history fits these short dialogues */
    assert_string_equal(r.variants[4].name, "full");
    assert_int_equal(r.variants[4].unscored, 0);
    mn_token_corpus_free(&c);
    mn_eval_result_free(&r);
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

/* ---------------------------------------------------------------- memory vs no_memory */
static void set_tensor(mn_model *m, const char *name, float value) {
    mn_tensor_info t;
    assert_int_equal(mn_model_find_tensor(m, name, &t), MN_OK);
    float *p = mn_model_params(m) + t.offset;
    for (size_t i = 0; i < t.size; i++)
        p[i] = value;
}

/* The variants run the same decoder on batches of other shapes: equal to rounding (close.h). */
static int same_to_rounding(double a, double b) {
    return close_to(a, b, 1e-5);
}

static void test_memory_differs_only_in_state(void **state) {
    (void)state;
    mn_tokenizer *tok = make_tokenizer(300);
    mn_dialogue_list list;
    read_dialogues(dialogue_jsonl, &list);
    mn_eval_options o;
    for (int shut = 1; shut >= 0; shut--) {
        mn_model *m = make_model(tok, 7);
        default_options(&o, m);
        /* shut: z = sigmoid(-1e4) = 0, so R stays R_0 and memory must equal no_memory (to
         * rounding); open: z = 1, R = U, and they must differ */
        set_tensor(m, "memory.gate.weight", 0.0f);
        set_tensor(m, "memory.gate.bias", shut ? -1e4f : 1e4f);
        mn_eval_result r;
        assert_int_equal(mn_eval_run(m, tok, &list, &o, &r), MN_OK);
        assert_string_equal(r.variants[1].name, "no_memory");
        int differ = 0;
        for (int64_t i = 0; i < r.probes; i++) {
            const mn_eval_probe_result *p = &r.probe_results[i];
            assert_true(p->scored[0] && p->scored[1]);
            if (shut) {
                assert_int_equal(p->best[0], p->best[1]);
                assert_true(same_to_rounding(p->gold_ll[0], p->gold_ll[1]));
                assert_string_equal(p->generated[0], p->generated[1]);
            }
            differ |= !same_to_rounding(p->gold_ll[0], p->gold_ll[1]);
        }
        const mn_eval_variant_result *a = &r.variants[0], *b = &r.variants[1];
        assert_true(a->lm_tokens > 0 && a->lm_tokens == b->lm_tokens);
        if (shut) {
            assert_false(differ);
            assert_true(same_to_rounding(a->lm_loss_sum, b->lm_loss_sum));
        } else {
            assert_true(differ);
            assert_true(a->lm_loss_sum != b->lm_loss_sum); /* the untrained decoder barely reads R */
        }
        mn_eval_result_free(&r);
        mn_model_free(m);
    }
    mn_dialogue_list_free(&list);
    mn_tokenizer_free(tok);
}

/* Thread count changes nothing but timings. */
static void test_threads_same_results(void **state) {
    (void)state;
    mn_tokenizer *tok = make_tokenizer(300);
    mn_model *m = make_model(tok, 3);
    mn_dialogue_list list;
    read_dialogues(dialogue_jsonl, &list);
    mn_eval_options o;
    default_options(&o, m);
    mn_eval_result r1, r2;
    assert_int_equal(mn_eval_run(m, tok, &list, &o, &r1), MN_OK);
    o.threads = 2;
    assert_int_equal(mn_eval_run(m, tok, &list, &o, &r2), MN_OK);
    for (int64_t i = 0; i < r1.probes; i++)
        for (int v = 0; v < r1.n_variants; v++) {
            assert_int_equal(r1.probe_results[i].best[v], r2.probe_results[i].best[v]);
            assert_float_equal(r1.probe_results[i].gold_ll[v], r2.probe_results[i].gold_ll[v], 0);
        }
    for (int v = 0; v < r1.n_variants; v++)
        assert_float_equal(r1.variants[v].lm_loss_sum, r2.variants[v].lm_loss_sum, 0);
    mn_eval_result_free(&r1);
    mn_eval_result_free(&r2);
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

/* ---------------------------------------------------------------- batched against one at a time */
/* log p(tokens[j] | r, tokens[0..j)) for j in [first, n), one sequence through mn_logits, the
 * log-softmax in double. */
static double one_log_prob_sum(mn_model *m, const int32_t *tokens, int n, const float *r, int first) {
    const int V = mn_model_config(m)->vocab_size;
    float *logits = malloc((size_t)n * V * sizeof *logits);
    assert_non_null(logits);
    assert_int_equal(mn_logits(m, tokens, n, r, logits), MN_OK);
    double sum = 0.0;
    for (int j = first; j < n; j++) {
        const float *row = logits + (size_t)(j - 1) * V;
        double mx = row[0], z = 0.0;
        for (int v = 1; v < V; v++)
            mx = row[v] > mx ? row[v] : mx;
        for (int v = 0; v < V; v++)
            z += exp((double)row[v] - mx);
        sum += (double)row[tokens[j]] - mx - log(z);
    }
    free(logits);
    return sum;
}

/* mn_sequence_log_probs and mn_sequence_next_logits (sequences of every length, several
 * states, more sequences than one chunk holds) against mn_logits / mn_next_logits one sequence
 * at a time. */
static void test_sequence_batches(void **state) {
    (void)state;
    mn_config c = {.vocab_size = 40, .d_model = 16, .n_heads = 2, .n_layers = 2, .n_comp_layers = 1, .n_slots = 4,
                   .max_turn_tokens = 64, .gate_bias_init = 0.0f};
    mn_model *m = NULL;
    assert_int_equal(mn_model_create(&c, &m), MN_OK);
    assert_int_equal(mn_model_init(m, 11), MN_OK);
    float *p = mn_model_params(m); /* larger weights: peaked distributions, distinct states */
    for (size_t i = 0; i < mn_model_num_params(m); i++)
        p[i] *= 5.0f;
    enum { SEQS = 40 }; /* 1024 positions a chunk / (4 + 64): 15 sequences a chunk */
    const size_t S = mn_state_floats(m);
    float *states = malloc(3 * S * sizeof *states);
    int32_t *tokens = malloc((size_t)SEQS * 64 * sizeof *tokens);
    float *lp = malloc((size_t)SEQS * 64 * sizeof *lp), *next = malloc((size_t)SEQS * 40 * sizeof *next);
    float *one = malloc(40 * sizeof *one);
    int64_t offsets[SEQS + 1];
    int first[SEQS];
    const float *r[SEQS];
    assert_true(states && tokens && lp && next && one);
    assert_int_equal(mn_initial_state(m, states), MN_OK);
    int32_t turn[] = {3, 9, 27, 1, 8};
    assert_int_equal(mn_update(m, turn, 5, states, states + S), MN_OK);
    assert_int_equal(mn_update(m, turn + 1, 4, states + S, states + 2 * S), MN_OK);
    uint32_t x = 7;
    offsets[0] = 0;
    for (int i = 0; i < SEQS; i++) {
        int len = i < 3 ? 64 - i : 1 + (int)((x = x * 1664525u + 1013904223u) >> 8) % 64;
        for (int j = 0; j < len; j++)
            tokens[offsets[i] + j] = (int32_t)((x = x * 1664525u + 1013904223u) >> 8) % 40;
        offsets[i + 1] = offsets[i] + len;
        first[i] = 1 + (int)((x = x * 1664525u + 1013904223u) >> 8) % len;
        r[i] = states + (size_t)(i % 3) * S;
    }
    for (int64_t i = 0; i < offsets[SEQS]; i++)
        lp[i] = 123.0f; /* what is not scored stays */
    assert_int_equal(mn_sequence_log_probs(m, SEQS, tokens, offsets, r, first, lp), MN_OK);
    assert_int_equal(mn_sequence_next_logits(m, SEQS, tokens, offsets, r, next), MN_OK);
    for (int i = 0; i < SEQS; i++) {
        int len = (int)(offsets[i + 1] - offsets[i]);
        const int32_t *t = tokens + offsets[i];
        for (int j = 0; j < len; j++) {
            float got = lp[offsets[i] + j];
            if (j < first[i]) {
                assert_float_equal(got, 123.0f, 0);
                continue;
            }
            /* one token at a time: the sum over [j, j + 1) */
            double want = j ? one_log_prob_sum(m, t, j + 1, r[i], j) : 0.0;
            assert_true(fabs(got - want) < 1e-5 * (1 + fabs(want)));
        }
        assert_int_equal(mn_next_logits(m, t, len, r[i], one), MN_OK);
        for (int v = 0; v < 40; v++)
            assert_true(fabsf(next[(size_t)i * 40 + v] - one[v]) < 1e-5f * (1 + fabsf(one[v])));
    }
    /* refusals name the sequence */
    first[5] = 0;
    assert_int_equal(mn_sequence_log_probs(m, SEQS, tokens, offsets, r, first, lp), MN_ERR_INVALID_ARG);
    first[5] = 1;
    tokens[offsets[7]] = 40;
    assert_int_equal(mn_sequence_next_logits(m, SEQS, tokens, offsets, r, next), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "sequence 7"));
    free(states), free(tokens), free(lp), free(next), free(one);
    mn_model_free(m);
}

/* The answer turn's context for probe-level checks: ctx = what the decoder reads before a choice,
 * from state *r. question_in_state: the answer prefix, r = the state after reading the question
 * (rq); else the question's tokens and the answer prefix, r = the state before it. */
static int answer_context(int in_state, const int32_t *qt, int qlen, const int32_t *at, const float *before,
                          const float *rq, int32_t *ctx, const float **r) {
    int n = 0;
    if (!in_state) {
        memcpy(ctx, qt, (size_t)qlen * sizeof(int32_t));
        n = qlen;
    }
    ctx[n++] = at[0];
    ctx[n++] = at[1];
    *r = in_state ? rq : before;
    return n;
}

/* mn_eval_run (choices and generation batched over probes and variants on the decoder's cache,
 * question reads too with question_in_state, the LM over blocks of turns, variants reading the
 * same sequence sharing it) against memory and no_memory computed one probe and one turn at a
 * time with mn_update, mn_logits and mn_generate, and the LM of windows and full one turn at a
 * time, in both protocols, on a dialogue longer than a block with more probes than a group,
 * several of them sharing a state. */
static void test_eval_batched_equals_one_at_a_time(void **state) {
    (void)state;
    mn_tokenizer *tok = make_tokenizer(300);
    mn_model *m = make_model_n(tok, 5, 64);
    float *pp = mn_model_params(m);
    for (size_t i = 0; i < mn_model_num_params(m); i++)
        pp[i] *= 4.0f;
    /* 70 turns; 14 probes, at `after` 2, 2, 2, 9, 9, 20, 33, 33, 33, 33, 40, 66, 70, 70 */
    char *jsonl = malloc(1 << 16);
    assert_non_null(jsonl);
    int n = sprintf(jsonl, "{\"id\": \"long\", \"turns\": [");
    for (int t = 0; t < 70; t++)
        n += sprintf(jsonl + n, "%s{\"speaker\": \"%s\", \"text\": \"%s\"}", t ? "," : "", t % 2 ? "B" : "A",
                     texts[(t * 5) % 14]);
    n += sprintf(jsonl + n, "], \"probes\": [");
    const int after[] = {2, 2, 2, 9, 9, 20, 33, 33, 33, 33, 40, 66, 70, 70};
    const int n_probes = (int)(sizeof after / sizeof after[0]);
    for (int i = 0; i < n_probes; i++)
        n += sprintf(jsonl + n,
                     "%s{\"after\": %d, \"question\": \"%s\", \"answer\": \"%s\", \"choices\": [\"Lisbon\", "
                     "\"Oslo\", \"Rex\", \"Max\"], \"evidence\": [0]}",
                     i ? "," : "", after[i], i % 2 ? texts[3] : texts[9], i % 3 ? "Oslo" : "Rex");
    sprintf(jsonl + n, "]}\n");
    mn_dialogue_list list;
    read_dialogues(jsonl, &list);
    free(jsonl);
    const mn_dialogue *dl = &list.items[0];
    mn_token_corpus c = {0};
    mn_render_options ro = {.max_turn_tokens = 64, .include_probes = 1};
    int64_t probe_turn[14];
    assert_int_equal(mn_render_dialogue(tok, dl, &ro, &c, NULL, probe_turn), MN_OK);
    const size_t S = mn_state_floats(m);
    float *r = malloc(S * sizeof *r), *r0 = malloc(S * sizeof *r0), *rq = malloc(2 * S * sizeof *rq);
    assert_true(r && r0 && rq);
    assert_int_equal(mn_initial_state(m, r0), MN_OK);
    const int32_t eot = mn_tokenizer_special(tok, MN_TOK_EOT);
    for (int in_state = 1; in_state >= 0; in_state--) {
        mn_eval_options o;
        default_options(&o, m);
        /* and the LM of windows of 6 and 64 tokens and full, variants that often read the same
         * sequence (every mode at the first turn, window_64 and full while the history fits) */
        assert_int_equal(mn_eval_parse_variants(&o, "memory,no_memory,window,full", "6,64", NULL, NULL), MN_OK);
        o.question_in_state = in_state;
        mn_eval_result res;
        assert_int_equal(mn_eval_run(m, tok, &list, &o, &res), MN_OK);
        assert_int_equal(res.probes, n_probes);
        /* one at a time: R folded over the history turns of the rendered dialogue */
        memcpy(r, r0, S * sizeof *r);
        double lm[5] = {0, 0, 0, 0, 0};
        int32_t *hist = malloc((size_t)c.n_tokens * sizeof *hist);
        assert_non_null(hist);
        int n_hist = 0, checked = 0;
        for (int64_t t = 0; t <= c.n_turns; t++) {
            if (t < c.n_turns && (c.turn_flags[t] & (MN_TURN_QUESTION | MN_TURN_ANSWER)))
                continue;
            /* the probes asked here (after the last turn at t = n_turns), with R before turn t */
            for (int i = 0; i < n_probes; i++) {
                int64_t q = probe_turn[i];
                int64_t h = q; /* the first history turn after the probe's question and answer */
                while (h < c.n_turns && (c.turn_flags[h] & (MN_TURN_QUESTION | MN_TURN_ANSWER)))
                    h++;
                if (h != t)
                    continue;
                const int32_t *qt = c.tokens + c.turn_start[q];
                int qlen = (int)(c.turn_start[q + 1] - c.turn_start[q]);
                const int32_t *at = c.tokens + c.turn_start[q + 1];
                int alen = (int)(c.turn_start[q + 2] - c.turn_start[q + 1]);
                assert_true(c.turn_flags[q + 1] & MN_TURN_ANSWER);
                assert_int_equal(mn_update(m, qt, qlen, r, rq), MN_OK);
                assert_int_equal(mn_update(m, qt, qlen, r0, rq + S), MN_OK);
                const mn_eval_probe_result *pr = &res.probe_results[i];
                assert_int_equal(pr->probe, i);
                for (int v = 0; v < 2; v++) {
                    int32_t seq[64];
                    const float *rv;
                    int np = answer_context(in_state, qt, qlen, at, v ? r0 : r, rq + v * S, seq, &rv);
                    memcpy(seq + np, at + 2, (size_t)(alen - 2) * sizeof(int32_t));
                    double want = one_log_prob_sum(m, seq, np + alen - 2, rv, np) / (alen - 2);
                    assert_true(pr->scored[v]);
                    assert_true(fabs(pr->gold_ll[v] - want) < 1e-5 * (1 + fabs(want)));
                    /* the choice: every choice's mean log-probability after the same context */
                    int best = 0;
                    double best_score = -INFINITY;
                    for (int ch = 0; ch < dl->probes[i].n_choices; ch++) {
                        mn_ids ids = {0};
                        const char *text = dl->probes[i].choices[ch];
                        assert_int_equal(mn_tokenizer_encode(tok, text, strlen(text), &ids), MN_OK);
                        assert_int_equal(mn_ids_push(&ids, eot), MN_OK);
                        memcpy(seq + np, ids.ids, ids.count * sizeof(int32_t));
                        double score = one_log_prob_sum(m, seq, np + (int)ids.count, rv, np) / (double)ids.count;
                        if (score > best_score)
                            best = ch, best_score = score;
                        mn_ids_free(&ids);
                    }
                    assert_int_equal(pr->best[v], best);
                    /* greedy generation after the context, at most the gold's length + 8 tokens */
                    int32_t gen[64];
                    int n_out = 0;
                    mn_sampling greedy = {0.0f, 0, 1.0f};
                    uint64_t rng = 1;
                    int budget = alen - 2 + 8 < o.max_gen_tokens ? alen - 2 + 8 : o.max_gen_tokens;
                    int max_tokens = np + budget < 64 ? np + budget : 64;
                    assert_int_equal(mn_generate(m, rv, seq, np, max_tokens, &eot, 1, &greedy, &rng, gen, &n_out),
                                     MN_OK);
                    int g = n_out - np;
                    if (g > 0 && gen[n_out - 1] == eot)
                        g--;
                    char *text = NULL;
                    size_t text_len;
                    assert_int_equal(mn_tokenizer_decode(tok, gen + np, g, &text, &text_len), MN_OK);
                    assert_non_null(pr->generated[v]);
                    assert_string_equal(pr->generated[v], text);
                    free(text);
                }
                checked++;
            }
            if (t == c.n_turns)
                break;
            const int32_t *tt = c.tokens + c.turn_start[t];
            int len = (int)(c.turn_start[t + 1] - c.turn_start[t]);
            if (len >= 2) {
                lm[0] -= one_log_prob_sum(m, tt, len, r, 1);
                lm[1] -= one_log_prob_sum(m, tt, len, r0, 1);
                const int window[3] = {6, 64, -1}; /* -1: full, only while the history fits */
                for (int w = 0; w < 3; w++) {
                    int shown = window[w] < 0 ? n_hist : (window[w] < n_hist ? window[w] : n_hist);
                    if (window[w] < 0 && n_hist + len > 64)
                        continue;
                    shown = shown < 64 - len ? shown : 64 - len;
                    int32_t seq[64];
                    memcpy(seq, hist + n_hist - shown, (size_t)shown * sizeof(int32_t));
                    memcpy(seq + shown, tt, (size_t)len * sizeof(int32_t));
                    lm[2 + w] -= one_log_prob_sum(m, seq, shown + len, r0, shown + 1);
                }
            }
            memcpy(hist + n_hist, tt, (size_t)len * sizeof(int32_t));
            n_hist += len;
            assert_int_equal(mn_update(m, tt, len, r, r), MN_OK);
        }
        free(hist);
        assert_int_equal(checked, n_probes); /* the last two are asked after the last turn */
        assert_int_equal(res.n_variants, 5);
        assert_true(res.variants[4].lm_turns_skipped > 0 && res.variants[4].lm_tokens > 0);
        for (int v = 0; v < 5; v++)
            assert_true(fabs(res.variants[v].lm_loss_sum - lm[v]) < 1e-5 * (1 + fabs(lm[v])));
        assert_true(res.variants[0].lm_loss_sum != res.variants[1].lm_loss_sum);
        mn_eval_result_free(&res);
    }
    free(r), free(r0), free(rq);
    mn_token_corpus_free(&c);
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

/* ---------------------------------------------------------------- hand-set weights
 * A model whose every eval number is known without running it, to check mn_eval_run (and the
 * CLI) against values computed here from docs/eval.md and docs/tokens.md alone: which tokens
 * each mode shows the decoder, the window boundary to the token, and the scores.
 *
 * Bytes-only tokenizer (vocab 262: every byte is one token, no merges), C = 8, one head, one
 * layer in each stack, every weight 0 except:
 * - the marker '@': wte = 10 (e0 - e1). Both stacks' attention is uniform over the keys a query
 *   sees (q = k = 0) and carries the LayerNorm'd input's dim 0 as its value: 2 for the marker
 *   and for a state that holds it, exactly 0 for every other token and for R_0 = 0.
 * - compressor: c_proj turns that value into HUGE (e0 - e1) and the gate bias is +40 (z = 1, so
 *   R' = U = ln_f of the slot): R becomes 2 (e0 - e1) once a turn holds the marker and keeps it
 *   (the slots see themselves), else stays 0.
 * - decoder: c_proj turns it into HUGE (e2 - e3). 'X' = S (e2 - e3), 'Y' = -S (e2 - e3), both
 *   speaker tokens EPS (e3 - e2) (tied: the same rows are the output classes). ln_f normalises
 *   the residual, so the speaker row that predicts the answer's first token points along
 *   +(e2 - e3) when it sees a marker (in the window, the question or the slots) and along
 *   -(e2 - e3), its own direction, when not: the model answers X exactly when it sees one.
 * LayerNorm of c (e_i - e_j) in 8 dimensions is f(c) (e_i - e_j), so every logit of the rows
 * that matter has a closed form (hand_ll). */
#define HAND_C 8
#define HAND_S 2.0
#define HAND_EPS 0.5
#define HAND_HUGE 1e4
#define HAND_MARKER '@'

static double ln_coef(double c) { return c / sqrt(c * c / 4.0 + 1e-5); }

/* log-sum-exp of the row whose ln_f output is q (e2 - e3): logits X 2qS, Y -2qS, the two
 * speakers -2q EPS, every other token 0. */
static double row_lse(double q, int V) {
    return log(exp(2 * q * HAND_S) + exp(-2 * q * HAND_S) + 2 * exp(-2 * q * HAND_EPS) + (V - 4));
}

/* Mean log-probability of the choice "X" (x = 1) or "Y" (x = 0), i.e. [letter, <|eot|>], after
 * the answer prefix; seen: the prefix's speaker row sees a marker (then so do the later rows). */
static double hand_ll(int x, int seen, int V) {
    const double vis = 2.0; /* ln_coef of a HUGE coefficient, to ~1e-10 */
    double q_speaker = seen ? vis : -ln_coef(HAND_EPS);
    double q_letter = seen ? vis : (x ? 1 : -1) * ln_coef(HAND_S);
    double first = (x ? 2 : -2) * q_speaker * HAND_S - row_lse(q_speaker, V);
    double eot = -row_lse(q_letter, V);
    return (first + eot) / 2.0;
}

static void set_param(mn_model *m, const char *name, size_t index, float value) {
    mn_tensor_info t;
    assert_int_equal(mn_model_find_tensor(m, name, &t), MN_OK);
    assert_true(index < t.size);
    mn_model_params(m)[t.offset + index] = value;
}

static void set_row(mn_model *m, int token, const float row[HAND_C]) {
    for (int c = 0; c < HAND_C; c++)
        set_param(m, "wte", (size_t)token * HAND_C + c, row[c]);
}

/* The uniform-attention, marker-counting block of one stack; c_proj sends the count to dims d, d+1. */
static void set_marker_block(mn_model *m, const char *stack, int d) {
    char name[128];
    for (int c = 0; c < HAND_C; c++) {
        snprintf(name, sizeof name, "%s.h.0.ln_1.weight", stack);
        set_param(m, name, c, 1.0f);
        snprintf(name, sizeof name, "%s.ln_f.weight", stack);
        set_param(m, name, c, 1.0f);
    }
    snprintf(name, sizeof name, "%s.h.0.attn.c_attn.weight", stack);
    set_param(m, name, 2 * HAND_C, 1.0f); /* row 0 (input dim 0) -> v column 0 */
    snprintf(name, sizeof name, "%s.h.0.attn.c_proj.weight", stack);
    set_param(m, name, d, (float)HAND_HUGE);
    set_param(m, name, d + 1, (float)-HAND_HUGE);
}

static mn_tokenizer *bytes_tokenizer(void) {
    mn_tokenizer *tok = make_tokenizer(MN_TOK_MERGE_BASE);
    assert_int_equal(mn_tokenizer_vocab_size(tok), MN_TOK_MERGE_BASE);
    return tok;
}

static mn_model *hand_model(const mn_tokenizer *tok) {
    mn_config c = {.vocab_size = mn_tokenizer_vocab_size(tok), .d_model = HAND_C, .n_heads = 1, .n_layers = 1,
                   .n_comp_layers = 1, .n_slots = 2, .max_turn_tokens = 64, .gate_bias_init = 0.0f};
    mn_model *m = NULL;
    assert_int_equal(mn_model_create(&c, &m), MN_OK);
    memset(mn_model_params(m), 0, mn_model_num_params(m) * sizeof(float));
    const float marker[HAND_C] = {10, -10}, x[HAND_C] = {0, 0, HAND_S, -HAND_S}, y[HAND_C] = {0, 0, -HAND_S, HAND_S};
    const float speaker[HAND_C] = {0, 0, -HAND_EPS, HAND_EPS};
    set_row(m, HAND_MARKER, marker);
    set_row(m, 'X', x);
    set_row(m, 'Y', y);
    set_row(m, mn_tokenizer_special(tok, MN_TOK_SPEAKER_A), speaker);
    set_row(m, mn_tokenizer_special(tok, MN_TOK_SPEAKER_B), speaker);
    set_marker_block(m, "compressor", 0);
    set_marker_block(m, "decoder", 2);
    for (int c = 0; c < HAND_C; c++)
        set_param(m, "memory.gate.bias", c, 40.0f);
    return m;
}

/* Rendered turns (docs/tokens.md): <|turn|> <speaker> bytes <|eot|>, one token a byte here. */
static int rendered_len(const char *text) { return 3 + (int)strlen(text); }

/* d1's turns; the second holds the marker, and a window's boundary falls on it. */
static const char *const hand_turns[] = {"hello there", "note @ here", "ok fine", "sure"};
static const char *hand_jsonl =
    "{\"id\": \"d1\", \"turns\": ["
    "{\"speaker\": \"A\", \"text\": \"hello there\"}, {\"speaker\": \"B\", \"text\": \"note @ here\"},"
    "{\"speaker\": \"A\", \"text\": \"ok fine\"}, {\"speaker\": \"B\", \"text\": \"sure\"}],"
    " \"probes\": ["
    "{\"after\": 4, \"question\": \"which one?\", \"answer\": \"X\", \"choices\": [\"Y\", \"X\"], \"evidence\": [1]},"
    "{\"after\": 1, \"question\": \"which one?\", \"answer\": \"Y\", \"choices\": [\"X\", \"Y\"], \"evidence\": [0]}]}\n"
    "{\"id\": \"d2\", \"turns\": [{\"speaker\": \"A\", \"text\": \"hi\"}, {\"speaker\": \"B\", \"text\": \"yes\"}],"
    " \"probes\": [{\"after\": 2, \"question\": \"is it @?\", \"answer\": \"X\", \"choices\": [\"Y\", \"X\"]}]}\n";

enum { HAND_PROBES = 3, HAND_MODES = 4 }; /* modes: memory, no_memory, window d, window d - 1 */
typedef struct {
    int choice_x;            /* index of "X" among the probe's choices */
    int gold_x;              /* the answer is "X" */
    int seen[HAND_MODES];    /* the decoder sees a marker in this mode */
} hand_probe;

static const hand_probe hand_expect[HAND_PROBES] = {
    /* d1 after 4: memory holds the marker, R_0 does not; the window of d shows it, d - 1 not */
    {1, 1, {1, 0, 1, 0}},
    /* d1 after 1: the marker's turn comes later; no mode may see it (nor peek ahead) */
    {0, 0, {0, 0, 0, 0}},
    /* d2: the marker is in the question, which every mode reads */
    {1, 1, {1, 1, 1, 1}},
};

/* The tokens from the marker to the end of d1's history: a window of d shows it, d - 1 not. */
static int hand_window(void) {
    return (int)strlen(strchr(hand_turns[1], HAND_MARKER)) + 1 + rendered_len(hand_turns[2]) +
           rendered_len(hand_turns[3]);
}

static int hand_pick(const hand_probe *e, int v) { return e->seen[v] ? e->choice_x : 1 - e->choice_x; }
static int hand_gold(const hand_probe *e) { return e->gold_x ? e->choice_x : 1 - e->choice_x; }

static void hand_options(mn_eval_options *o, const mn_model *m, int d) {
    default_options(o, m);
    o->generate = 0;
    o->lm = 0;
    o->n_variants = HAND_MODES;
    o->variants[0] = (mn_eval_variant_spec){MN_EVAL_MEMORY, 0};
    o->variants[1] = (mn_eval_variant_spec){MN_EVAL_NO_MEMORY, 0};
    o->variants[2] = (mn_eval_variant_spec){MN_EVAL_WINDOW, d};
    o->variants[3] = (mn_eval_variant_spec){MN_EVAL_WINDOW, d - 1};
}

static void test_hand_set_model(void **state) {
    (void)state;
    mn_tokenizer *tok = bytes_tokenizer();
    mn_model *m = hand_model(tok);
    const int V = mn_tokenizer_vocab_size(tok), d = hand_window();
    assert_int_equal(d, 24); /* "@ here" + <|eot|>, then 3 + 7, then 3 + 4 */
    mn_dialogue_list list;
    read_dialogues(hand_jsonl, &list);
    mn_eval_options o;
    hand_options(&o, m, d);
    mn_eval_result r;
    assert_int_equal(mn_eval_run(m, tok, &list, &o, &r), MN_OK);
    assert_int_equal(r.probes, HAND_PROBES);
    for (int i = 0; i < HAND_PROBES; i++) {
        const hand_probe *e = &hand_expect[i];
        const mn_eval_probe_result *p = &r.probe_results[i];
        for (int v = 0; v < HAND_MODES; v++) {
            assert_true(p->scored[v]);
            if (p->best[v] != hand_pick(e, v))
                fail_msg("probe %d, %s: picked choice %d, expected %d", i, r.variants[v].name, p->best[v],
                         hand_pick(e, v));
            double want = hand_ll(e->gold_x, e->seen[v], V);
            if (fabs(p->gold_ll[v] - want) > 1e-6)
                fail_msg("probe %d, %s: gold log-likelihood %.9f, expected %.9f", i, r.variants[v].name,
                         p->gold_ll[v], want);
        }
    }
    /* distances (docs/eval.md): turns after - max(evidence); tokens from the evidence turn's start */
    assert_int_equal(r.probe_results[0].distance_turns, 3);
    assert_int_equal(r.probe_results[0].distance_tokens,
                     rendered_len(hand_turns[1]) + rendered_len(hand_turns[2]) + rendered_len(hand_turns[3]));
    assert_int_equal(r.probe_results[1].distance_turns, 1);
    assert_int_equal(r.probe_results[1].distance_tokens, rendered_len(hand_turns[0]));
    assert_int_equal(r.probe_results[2].distance_turns, -1);
    /* the history tokens the window of d showed: all d asked for, then all there were */
    assert_int_equal(r.variants[2].window_clipped, 0);
    assert_float_equal(r.variants[2].window_used_sum,
                       d + rendered_len(hand_turns[0]) + rendered_len("hi") + rendered_len("yes"), 0);
    mn_eval_result_free(&r);
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

/* max_probes takes the first probes in file order */
/* The memory modes' protocol (docs/eval.md), recomputed from the public API on a random model:
 * by default the state after `after` turns, then the question and the answer prefix in the
 * decoder's one pass; with question_in_state the question read into R first, the answer decoded
 * from R alone. Turns render as <|turn|> <speaker> bytes <|eot|> (bytes tokenizer). */
static int render_bytes(const mn_tokenizer *tok, int speaker_b, const char *text, int32_t *out) {
    int n = 0;
    out[n++] = mn_tokenizer_special(tok, MN_TOK_TURN);
    out[n++] = mn_tokenizer_special(tok, speaker_b ? MN_TOK_SPEAKER_B : MN_TOK_SPEAKER_A);
    for (const char *s = text; *s; s++)
        out[n++] = (unsigned char)*s;
    out[n++] = mn_tokenizer_special(tok, MN_TOK_EOT);
    return n;
}

static void test_memory_protocol_question_in_context(void **state) {
    (void)state;
    mn_tokenizer *tok = bytes_tokenizer();
    mn_config c = {.vocab_size = mn_tokenizer_vocab_size(tok), .d_model = 16, .n_heads = 2, .n_layers = 1,
                   .n_comp_layers = 1, .n_slots = 2, .max_turn_tokens = 64, .gate_bias_init = 0.0f};
    mn_model *m = NULL;
    assert_int_equal(mn_model_create(&c, &m), MN_OK);
    assert_int_equal(mn_model_init(m, 7), MN_OK);
    static const char *jsonl = "{\"id\": \"p\", \"turns\": [{\"speaker\": \"A\", \"text\": \"my dog is Rex\"},"
                               " {\"speaker\": \"B\", \"text\": \"nice\"}], \"probes\": [{\"after\": 2,"
                               " \"question\": \"dog?\", \"answer\": \"Rex\", \"choices\": [\"Max\", \"Rex\"],"
                               " \"evidence\": [0]}]}\n";
    mn_dialogue_list list;
    read_dialogues(jsonl, &list);
    /* the history into R; the asker is the speaker other than the last turn's (B): A */
    const int k = c.n_slots, C = c.d_model;
    float *r = malloc(sizeof(float) * (size_t)k * C), *r2 = malloc(sizeof(float) * (size_t)k * C);
    assert_int_equal(mn_initial_state(m, r), MN_OK);
    int32_t seq[64], choice[2][8];
    int n = render_bytes(tok, 0, "my dog is Rex", seq);
    assert_int_equal(mn_update(m, seq, n, r, r2), MN_OK);
    n = render_bytes(tok, 1, "nice", seq);
    assert_int_equal(mn_update(m, seq, n, r2, r), MN_OK);
    const char *choices[2] = {"Max", "Rex"};
    int lens[2];
    for (int i = 0; i < 2; i++) {
        lens[i] = 0;
        for (const char *s = choices[i]; *s; s++)
            choice[i][lens[i]++] = (unsigned char)*s;
        choice[i][lens[i]++] = mn_tokenizer_special(tok, MN_TOK_EOT);
    }
    const int32_t *cp[2] = {choice[0], choice[1]};
    /* question in the decoder's context */
    double in_context[2], in_state[2];
    int best;
    n = render_bytes(tok, 0, "dog?", seq);
    seq[n++] = mn_tokenizer_special(tok, MN_TOK_TURN);
    seq[n++] = mn_tokenizer_special(tok, MN_TOK_SPEAKER_B);
    assert_int_equal(mn_score_choices(m, r, seq, n, cp, lens, 2, in_context, &best), MN_OK);
    /* question read into the state */
    n = render_bytes(tok, 0, "dog?", seq);
    assert_int_equal(mn_update(m, seq, n, r, r2), MN_OK);
    seq[0] = mn_tokenizer_special(tok, MN_TOK_TURN);
    seq[1] = mn_tokenizer_special(tok, MN_TOK_SPEAKER_B);
    assert_int_equal(mn_score_choices(m, r2, seq, 2, cp, lens, 2, in_state, &best), MN_OK);
    assert_true(fabs(in_context[1] - in_state[1]) > 1e-4); /* the two protocols differ here */
    for (int q = 0; q < 2; q++) {
        mn_eval_options o;
        default_options(&o, m);
        o.generate = 0;
        o.lm = 0;
        o.question_in_state = q;
        mn_eval_result res;
        assert_int_equal(mn_eval_run(m, tok, &list, &o, &res), MN_OK);
        assert_int_equal(res.probes, 1);
        assert_true(res.probe_results[0].scored[0]);
        const double want = q ? in_state[1] : in_context[1];
        if (fabs(res.probe_results[0].gold_ll[0] - want) > 1e-5)
            fail_msg("question_in_state %d: memory gold_ll %.7f, expected %.7f", q, res.probe_results[0].gold_ll[0],
                     want);
        mn_eval_result_free(&res);
    }
    free(r), free(r2);
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

static void test_max_probes(void **state) {
    (void)state;
    mn_tokenizer *tok = make_tokenizer(300);
    mn_model *m = make_model(tok, 3);
    mn_dialogue_list list;
    read_dialogues(dialogue_jsonl, &list);
    mn_eval_options o;
    default_options(&o, m);
    o.max_probes = 2;
    o.lm = 0;
    mn_eval_result r;
    assert_int_equal(mn_eval_run(m, tok, &list, &o, &r), MN_OK);
    assert_int_equal(r.probes, 2);
    assert_int_equal(r.probes_skipped, 2);
    assert_int_equal(r.dialogues, 1);
    assert_int_equal(r.probe_results[1].probe, 1);
    mn_eval_result_free(&r);
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

/* ---------------------------------------------------------------- bad input (library) */
static void test_refuses_bad_input(void **state) {
    (void)state;
    mn_tokenizer *tok = make_tokenizer(300);
    mn_model *m = make_model(tok, 3);
    mn_eval_options o;
    default_options(&o, m);
    mn_eval_result r;
    mn_dialogue_list empty = {0};
    assert_int_equal(mn_eval_run(m, tok, &empty, &o, &r), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "no dialogues"));

    /* the reader refuses these lines in strict mode, naming the reason */
    const char *after = "{\"id\": \"x\", \"turns\": [{\"speaker\": \"A\", \"text\": \"hi\"}],"
                        " \"probes\": [{\"after\": 2, \"question\": \"q\", \"answer\": \"a\"}]}\n";
    const char *choices = "{\"id\": \"x\", \"turns\": [{\"speaker\": \"A\", \"text\": \"hi\"}],"
                          " \"probes\": [{\"after\": 1, \"question\": \"q\", \"answer\": \"a\", \"choices\": [\"b\", \"c\"]}]}\n";
    mn_dialogue_list list = {0};
    assert_int_not_equal(mn_jsonl_read_buffer("after.jsonl", after, strlen(after), 1, NULL, &list, NULL), MN_OK);
    assert_non_null(strstr(mn_last_error(), "after"));
    mn_dialogue_list_free(&list);
    assert_int_not_equal(mn_jsonl_read_buffer("choices.jsonl", choices, strlen(choices), 1, NULL, &list, NULL), MN_OK);
    assert_non_null(strstr(mn_last_error(), "answer"));
    mn_dialogue_list_free(&list);

    /* and eval itself re-checks what a caller may have built in memory */
    read_dialogues(dialogue_jsonl, &list);
    list.items[0].probes[0].after = 99;
    assert_int_equal(mn_eval_run(m, tok, &list, &o, &r), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "outside 1..6"));
    list.items[0].probes[0].after = 3;
    free(list.items[0].probes[0].answer);
    list.items[0].probes[0].answer = strdup("Madrid");
    assert_int_equal(mn_eval_run(m, tok, &list, &o, &r), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "do not contain the answer"));
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

/* ---------------------------------------------------------------- JSON report */
static void expect_keys(json_t *o, const char *const *keys, int n, const char *where) {
    assert_true(json_is_object(o));
    for (int i = 0; i < n; i++)
        if (!json_object_get(o, keys[i]))
            fail_msg("%s lacks \"%s\"", where, keys[i]);
}

static void check_report(const char *path, size_t state_floats) {
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root)
        fail_msg("%s: %s", path, err.text);
    static const char *const top[] = {"checkpoint", "data", "dialogues", "probes", "recall", "lm", "cost"};
    expect_keys(root, top, 7, "report");
    static const char *const tally[] = {"mc_accuracy", "exact_match", "n", "by_distance"};
    static const char *const bucket[] = {"lo", "hi", "n", "mc_accuracy", "exact_match"};
    static const char *const lm[] = {"loss", "ppl", "tokens"};
    static const char *const modes[] = {"memory", "no_memory", "window"};
    json_t *recall = json_object_get(root, "recall");
    for (int m = 0; m < 3; m++) {
        json_t *t = json_object_get(recall, modes[m]);
        expect_keys(t, tally, 4, modes[m]);
        json_t *b = json_object_get(t, "by_distance");
        assert_true(json_is_array(b) && json_array_size(b) == MN_EVAL_TURN_BUCKETS);
        for (size_t i = 0; i < json_array_size(b); i++)
            expect_keys(json_array_get(b, i), bucket, 5, "by_distance bucket");
        assert_int_equal(json_integer_value(json_object_get(json_array_get(b, 1), "lo")), 2);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(b, 1), "hi")), 4);
        expect_keys(json_object_get(json_object_get(root, "lm"), modes[m]), lm, 3, "lm");
    }
    assert_true(json_is_integer(json_object_get(json_object_get(recall, "window"), "window_tokens")));
    static const char *const cost[] = {"update_ms_per_turn", "decode_ms_per_token", "state_floats"};
    json_t *c = json_object_get(root, "cost");
    expect_keys(c, cost, 3, "cost");
    assert_int_equal(json_integer_value(json_object_get(c, "state_floats")), (json_int_t)state_floats);
    json_decref(root);
}

static void test_json_has_every_key(void **state) {
    (void)state;
    mn_tokenizer *tok = make_tokenizer(300);
    mn_model *m = make_model(tok, 5);
    mn_dialogue_list list;
    read_dialogues(dialogue_jsonl, &list);
    mn_eval_options o;
    default_options(&o, m);
    mn_eval_result r;
    assert_int_equal(mn_eval_run(m, tok, &list, &o, &r), MN_OK);
    char path[] = "/tmp/mnemo-eval-json-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(mn_eval_write_json(&r, "ckpt.h5", "data.jsonl", path), MN_OK);
    check_report(path, mn_state_floats(m));
    unlink(path);
    mn_eval_result_free(&r);
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

/* ---------------------------------------------------------------- the baselines: retrieval, summary */
static char *read_all(const char *path, size_t *len); /* below, with the CLI's helpers */

/* A fact at turn 0, then filler that shares no word with the question but "is", then the
 * question: far beyond a window of 16 tokens, and the best bm25 match for retrieval. */
static char *evidence_dialogue(const char *question) {
    static char buf[8192];
    int n = snprintf(buf, sizeof buf, "{\"id\": \"far\", \"turns\": [{\"speaker\": \"A\", \"text\": \"my dog's name is Rex\"}");
    for (int t = 1; t <= 12; t++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, ", {\"speaker\": \"%s\", \"text\": \"%s\"}", t % 2 ? "B" : "A",
                      t % 2 ? "I like hiking in the mountains on weekends." : "The food is great and the people are kind.");
    snprintf(buf + n, sizeof buf - (size_t)n,
             "], \"probes\": [{\"after\": 13, \"question\": \"%s\", \"answer\": \"Rex\", \"choices\": [\"Max\", \"Rex\", "
             "\"Bella\"], \"evidence\": [0]}]}\n",
             question);
    return buf;
}

static void test_retrieval_reads_the_evidence_window_does_not(void **state) {
    (void)state;
    mn_tokenizer *tok = make_tokenizer(300);
    mn_model *m = make_model(tok, 3);
    mn_dialogue_list list;
    read_dialogues(evidence_dialogue("What is your dog's name?"), &list);
    mn_eval_options o;
    default_options(&o, m);
    assert_int_equal(mn_eval_parse_variants(&o, "window,retrieval", "16", "16", NULL), MN_OK);
    assert_int_equal(o.n_variants, 2);
    mn_eval_result r;
    assert_int_equal(mn_eval_run(m, tok, &list, &o, &r), MN_OK);
    assert_string_equal(r.variants[0].name, "window");
    assert_string_equal(r.variants[1].name, "retrieval");
    const mn_eval_probe_result *p = &r.probe_results[0];
    assert_true(p->scored[0] && p->scored[1]);
    assert_true(p->distance_tokens > 16);  /* the fact is out of the window's reach */
    assert_int_equal(p->evidence_shown[0], 0);
    assert_int_equal(p->evidence_shown[1], 1);
    /* both show at most their 16 tokens: retrieval fills its budget from the ranked turns */
    assert_true(r.variants[1].window_used_sum <= 16.0 && r.variants[1].window_used_sum > 0.0);
    assert_true(r.variants[0].all.evidence_n == 1 && r.variants[0].all.evidence_shown == 0);
    assert_true(r.variants[1].all.evidence_n == 1 && r.variants[1].all.evidence_shown == 1);
    /* the index holds the whole history */
    assert_true(r.variants[1].state_tokens_sum >= (double)p->distance_tokens);
    /* and the per-probe line says so */
    char path[] = "/tmp/mnemo-eval-probes-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(mn_eval_write_probes(&r, &list, path), MN_OK);
    json_error_t err;
    json_t *line = json_load_file(path, JSON_DISABLE_EOF_CHECK, &err);
    assert_non_null(line);
    assert_true(json_is_false(json_object_get(json_object_get(line, "window"), "evidence_in_history")));
    assert_true(json_is_true(json_object_get(json_object_get(line, "retrieval"), "evidence_in_history")));
    json_decref(line);
    unlink(path);
    mn_eval_result_free(&r);
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

static int collect_ids(void *ctx, int64_t id) {
    int64_t *ids = ctx;
    ids[1 + ids[0]++] = id;
    return ids[0] < 15;
}

static void test_retrieval_question_syntax_is_plain_text(void **state) {
    (void)state;
    /* the FTS5 query: every word quoted, joined by OR; syntax characters dropped */
    char *q = NULL;
    assert_int_equal(mn_eval_index_match("dog's \"name\" NEAR(Rex*, 2) AND col:x ^y -z", &q), MN_OK);
    assert_string_equal(q, "\"dog\" OR \"s\" OR \"name\" OR \"NEAR\" OR \"Rex\" OR \"2\" OR \"AND\" OR \"col\" OR \"x\" OR "
                           "\"y\" OR \"z\"");
    free(q);
    assert_int_equal(mn_eval_index_match("\"*: ^ -(", &q), MN_OK);
    assert_string_equal(q, "");
    free(q);
    mn_eval_index *ix = NULL;
    assert_int_equal(mn_eval_index_open(&ix), MN_OK);
    assert_int_equal(mn_eval_index_add(ix, 0, "my dog's name is Rex"), MN_OK);
    assert_int_equal(mn_eval_index_add(ix, 1, "we walked near the river"), MN_OK);
    assert_int_equal(mn_eval_index_add(ix, 2, "the food is great"), MN_OK);
    assert_int_equal(mn_eval_index_add(ix, 3, "a \"quoted\" text: with * and NEAR AND OR"), MN_OK);
    static const char *const bad[] = {"What's \"your\" dog's name?", "dog* NEAR(name)", "text: dog",
                                      "\"unbalanced quote dog", "NOT dog", "^dog -name + (x", "\"\"\"", "*", ":", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ids[16] = {0};
        if (mn_eval_index_query(ix, bad[i], collect_ids, ids) != MN_OK)
            fail_msg("question '%s': %s", bad[i], mn_last_error());
        int has_dog = 0;
        for (int k = 0; k < ids[0]; k++)
            has_dog |= ids[1 + k] == 0;
        if (strstr(bad[i], "dog") && (!has_dog || ids[1] != 0))
            fail_msg("question '%s': the dog turn is not the best match", bad[i]);
        if (!strpbrk(bad[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
            assert_int_equal(ids[0], 0); /* no word: nothing matches */
    }
    int64_t ids[16] = {0}; /* "NEAR" and "AND" are words, found in turn 3 only, and "near" in turn 1 */
    assert_int_equal(mn_eval_index_query(ix, "AND", collect_ids, ids), MN_OK);
    assert_true(ids[0] == 1 && ids[1] == 3);
    memset(ids, 0, sizeof ids);
    assert_int_equal(mn_eval_index_query(ix, "NEAR", collect_ids, ids), MN_OK);
    assert_int_equal(ids[0], 2);
    mn_eval_index_free(ix);
    /* and through the evaluation */
    mn_tokenizer *tok = make_tokenizer(300);
    mn_model *m = make_model(tok, 3);
    mn_dialogue_list list;
    read_dialogues(evidence_dialogue("What's \\\"your\\\" dog's name* NEAR: AND (x)?"), &list);
    mn_eval_options o;
    default_options(&o, m);
    assert_int_equal(mn_eval_parse_variants(&o, "retrieval", NULL, "16", NULL), MN_OK);
    mn_eval_result r;
    assert_int_equal(mn_eval_run(m, tok, &list, &o, &r), MN_OK);
    assert_int_equal(r.probe_results[0].evidence_shown[0], 1);
    mn_eval_result_free(&r);
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

static const char *gpt2_fixture(const char *name) {
    static char p[4096];
    const char *dir = getenv("MNEMO_FIXTURES");
    snprintf(p, sizeof p, "%s/gpt2_tiny/%s", dir ? dir : "tests/fixtures", name);
    return p;
}

static void test_summary_gpt2_tiny_keeps_its_budget(void **state) {
    (void)state;
    /* the tiny GPT-2 decoder (its 420 ids read mnemo-bpe ids: the text is nonsense, the
     * mechanics are real) with 2 slots and 62 tokens per turn, all of its 64 positions */
    mn_gpt2_import_options io = mn_gpt2_import_defaults();
    io.n_slots = 2;
    io.max_turn_tokens = 62;
    io.n_heads = 4; /* config.json's n_head */
    mn_model *m = NULL;
    if (mn_gpt2_import(gpt2_fixture("model.safetensors"), &io, &m, NULL) != MN_OK)
        fail_msg("%s", mn_last_error());
    mn_tokenizer *tok = make_tokenizer(300);
    mn_dialogue_list list;
    read_dialogues(dialogue_jsonl, &list);
    mn_eval_options o;
    default_options(&o, m);
    o.generate = 0; /* the decoder's ids 300..419 are no tokens of this tokenizer: nothing to decode */
    assert_int_equal(mn_eval_parse_variants(&o, "summary,window", "4", NULL, "3,1000"), MN_OK);
    assert_int_equal(o.n_variants, 3);
    mn_eval_result r;
    if (mn_eval_run(m, tok, &list, &o, &r) != MN_OK)
        fail_msg("%s", mn_last_error());
    assert_string_equal(r.variants[0].name, "summary");
    assert_string_equal(r.variants[1].name, "summary_1000");
    const mn_eval_variant_result *s3 = &r.variants[0], *big = &r.variants[1];
    assert_int_equal(s3->summary_cap, 3);
    /* 1000 does not fit 62 tokens: the cap leaves room for the prompt, the summary twice and
     * 16 tokens of the turn */
    assert_true(big->summary_cap > 3 && 2 * big->summary_cap + 16 < 62);
    for (int v = 0; v < 2; v++) {
        const mn_eval_variant_result *vr = &r.variants[v];
        assert_true(vr->state_n > 0);
        assert_true(vr->state_tokens_max <= vr->summary_cap);
        assert_true(vr->write_tokens > 0 && vr->write_tokens <= (int64_t)(vr->summary_cap + 1) * r.updates);
        assert_true(vr->write_ms_sum > 0.0);
        assert_int_equal(vr->unscored, 0);
    }
    assert_true(s3->state_tokens_max == 3 || big->state_tokens_max > 3); /* a summary was written */
    assert_true(big->lm_tokens > 0 && s3->lm_tokens > 0);                /* LM with the summary as history */
    mn_eval_result_free(&r);
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

static void test_every_mode_has_every_key(void **state) {
    (void)state;
    mn_tokenizer *tok = make_tokenizer(300);
    mn_model *m = make_model_n(tok, 5, 96); /* room for the summary's prompt in this small vocabulary */
    mn_dialogue_list list;
    read_dialogues(dialogue_jsonl, &list);
    mn_eval_options o;
    default_options(&o, m);
    assert_int_equal(mn_eval_parse_variants(&o, "memory,no_memory,window,full,retrieval,summary", NULL, NULL, NULL),
                     MN_OK);
    assert_int_equal(o.n_variants, 9); /* window, retrieval and summary at k and 4k */
    mn_eval_result r;
    if (mn_eval_run(m, tok, &list, &o, &r) != MN_OK)
        fail_msg("%s", mn_last_error());
    char path[] = "/tmp/mnemo-eval-json-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(mn_eval_write_json(&r, "ckpt.h5", "data.jsonl", path), MN_OK);
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root)
        fail_msg("%s: %s", path, err.text);
    static const char *const names[] = {"memory",    "no_memory",   "window",  "window_8", "full",
                                        "retrieval", "retrieval_8", "summary", "summary_8"};
    static const char *const tally[] = {"mc_accuracy", "exact_match", "n", "by_distance", "mc_n", "gen_n", "f1",
                                        "gold_ll", "evidence_in_history", "by_distance_tokens", "by_category",
                                        "no_distance", "unscored"};
    static const char *const bucket[] = {"lo", "hi", "n", "mc_accuracy", "exact_match", "evidence_in_history"};
    static const char *const lm[] = {"loss", "ppl", "tokens", "turns_skipped", "by_turn_index"};
    static const char *const cost[] = {"write_ms_per_turn", "generated_tokens_per_turn", "turns_cut",
                                       "query_ms_per_probe", "state_tokens", "state_bytes", "state_tokens_max"};
    json_t *recall = json_object_get(root, "recall"), *by_mode = json_object_get(json_object_get(root, "cost"), "by_mode");
    assert_int_equal(json_object_size(recall), 9);
    for (int i = 0; i < 9; i++) {
        json_t *t = json_object_get(recall, names[i]);
        if (!t)
            fail_msg("recall lacks \"%s\"", names[i]);
        expect_keys(t, tally, 13, names[i]);
        json_t *b = json_object_get(t, "by_distance");
        assert_true(json_is_array(b) && json_array_size(b) == MN_EVAL_TURN_BUCKETS);
        for (size_t k = 0; k < json_array_size(b); k++)
            expect_keys(json_array_get(b, k), bucket, 6, "by_distance bucket");
        assert_true(json_integer_value(json_object_get(t, "n")) > 0);
        expect_keys(json_object_get(json_object_get(root, "lm"), names[i]), lm, 5, "lm");
        expect_keys(json_object_get(by_mode, names[i]), cost, 7, "cost.by_mode");
        assert_true(json_is_object(json_object_get(json_object_get(json_object_get(root, "cost"),
                                                                   "decode_ms_per_token_by_mode"),
                                                   names[i])) == 0); /* a number or null */
    }
    assert_int_equal(json_integer_value(json_object_get(json_object_get(recall, "retrieval_8"), "retrieval_tokens")), 8);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(recall, "summary"), "summary_tokens")), 2);
    assert_true(json_is_integer(json_object_get(json_object_get(recall, "summary_8"), "summary_tokens_fit")));
    /* the memory's state is R; retrieval keeps the whole history in SQLite; summary writes */
    assert_int_equal((int64_t)json_number_value(json_object_get(json_object_get(by_mode, "memory"), "state_bytes")),
                     (int64_t)(mn_state_floats(m) * sizeof(float)));
    assert_true(json_number_value(json_object_get(json_object_get(by_mode, "retrieval"), "state_bytes")) > 0);
    assert_true(json_number_value(json_object_get(json_object_get(by_mode, "summary_8"), "write_ms_per_turn")) > 0);
    json_decref(root);
    /* the cost plot's data: the decoder per mode, then the baselines' own work per turn */
    assert_int_equal(mn_eval_write_cost_data(&r, path), MN_OK);
    size_t dat_len;
    char *dat = read_all(path, &dat_len);
    assert_non_null(dat);
    assert_non_null(strstr(dat, " summary_8_decoder_ms retrieval_write_ms retrieval_8_write_ms summary_write_ms "
                                "summary_8_write_ms\n"));
    char *row = strchr(dat, '\n') + 1, *row_end = strchr(row, '\n');
    *row_end = '\0';
    int fields = 0; /* the first turn-index bucket: its index, the update, 9 decoders, 4 writes */
    for (char *t = strtok(row, " "); t; t = strtok(NULL, " "))
        fields++;
    assert_int_equal(fields, 15);
    free(dat);
    unlink(path);
    mn_eval_result_free(&r);
    mn_dialogue_list_free(&list);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

/* ---------------------------------------------------------------- the CLI */
typedef struct {
    char dir[64], ckpt[128], tok[128], other_tok[128], data[128], json[128], err[128];
    const char *bin;
} cli_env;

static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Runs `mnemo eval --checkpoint ckpt <args>`; stderr goes to env->err. Returns the exit code. */
static int run_eval_on(const cli_env *e, const char *ckpt, const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' eval --checkpoint '%s' %s --quiet > /dev/null 2> '%s'", e->bin, ckpt, args,
             e->err);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int run_eval(const cli_env *e, const char *args) { return run_eval_on(e, e->ckpt, args); }

static int stderr_has(const cli_env *e, const char *what) {
    size_t n;
    char *s = read_all(e->err, &n);
    int found = s && strstr(s, what) != NULL;
    if (!found)
        print_message("stderr was: %s\n", s ? s : "(unreadable)");
    free(s);
    return found;
}

static int cli_setup(void **state) {
    cli_env *e = calloc(1, sizeof *e);
    e->bin = getenv("MNEMO_BIN");
    snprintf(e->dir, sizeof e->dir, "/tmp/mnemo-eval-XXXXXX");
    if (!mkdtemp(e->dir))
        return -1;
    snprintf(e->ckpt, sizeof e->ckpt, "%s/tiny.h5", e->dir);
    snprintf(e->tok, sizeof e->tok, "%s/tok.h5", e->dir);
    snprintf(e->other_tok, sizeof e->other_tok, "%s/other.h5", e->dir);
    snprintf(e->data, sizeof e->data, "%s/data.jsonl", e->dir);
    snprintf(e->json, sizeof e->json, "%s/report.json", e->dir);
    snprintf(e->err, sizeof e->err, "%s/stderr.txt", e->dir);
    mn_tokenizer *tok = make_tokenizer(300), *other = make_tokenizer(280);
    mn_model *m = make_model(tok, 11);
    mn_checkpoint_save_options so = {.tokenizer = tok};
    int bad = mn_checkpoint_save(e->ckpt, m, NULL, NULL, &so) != MN_OK || mn_tokenizer_save_file(tok, e->tok) != MN_OK ||
              mn_tokenizer_save_file(other, e->other_tok) != MN_OK || write_file(e->data, dialogue_jsonl) != 0;
    mn_model_free(m);
    mn_tokenizer_free(tok);
    mn_tokenizer_free(other);
    *state = e;
    return bad ? -1 : 0;
}

static int cli_teardown(void **state) {
    cli_env *e = *state;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
    int rc = system(cmd);
    free(e);
    return rc == 0 ? 0 : -1;
}

static void test_cli_runs_and_leaves_checkpoint_unchanged(void **state) {
    cli_env *e = *state;
    if (!e->bin)
        skip();
    size_t n0, n1;
    char *before = read_all(e->ckpt, &n0);
    assert_non_null(before);
    struct stat s0, s1;
    assert_int_equal(stat(e->ckpt, &s0), 0);
    char args[1024];
    snprintf(args, sizeof args, "--data '%s' --json '%s' --threads 2 --tokenizer '%s'", e->data, e->json, e->tok);
    assert_int_equal(run_eval(e, args), 0);
    check_report(e->json, 2 * 16);
    char *after = read_all(e->ckpt, &n1);
    assert_non_null(after);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    assert_int_equal(stat(e->ckpt, &s1), 0);
    assert_true(s0.st_mtim.tv_sec == s1.st_mtim.tv_sec && s0.st_mtim.tv_nsec == s1.st_mtim.tv_nsec);
    free(before);
    free(after);
}

static void test_cli_refuses_bad_input(void **state) {
    cli_env *e = *state;
    if (!e->bin)
        skip();
    char path[160], args[1024];
    /* an empty file */
    snprintf(path, sizeof path, "%s/empty.jsonl", e->dir);
    assert_int_equal(write_file(path, ""), 0);
    snprintf(args, sizeof args, "--data '%s' --json '%s'", path, e->json);
    assert_int_equal(run_eval(e, args), 1);
    assert_true(stderr_has(e, "holds no dialogues"));
    /* a probe whose after is out of range: the file and line are named */
    snprintf(path, sizeof path, "%s/after.jsonl", e->dir);
    assert_int_equal(write_file(path, "{\"id\": \"x\", \"turns\": [{\"speaker\": \"A\", \"text\": \"hi\"}],"
                                      " \"probes\": [{\"after\": 5, \"question\": \"q\", \"answer\": \"a\"}]}\n"),
                     0);
    snprintf(args, sizeof args, "--data '%s'", path);
    assert_int_equal(run_eval(e, args), 1);
    assert_true(stderr_has(e, "after.jsonl:1"));
    /* choices without the answer */
    snprintf(path, sizeof path, "%s/choices.jsonl", e->dir);
    assert_int_equal(write_file(path, "{\"id\": \"x\", \"turns\": [{\"speaker\": \"A\", \"text\": \"hi\"}],"
                                      " \"probes\": [{\"after\": 1, \"question\": \"q\", \"answer\": \"a\","
                                      " \"choices\": [\"b\", \"c\"]}]}\n"),
                     0);
    snprintf(args, sizeof args, "--data '%s'", path);
    assert_int_equal(run_eval(e, args), 1);
    assert_true(stderr_has(e, "choices.jsonl:1"));
    /* a tokenizer other than the checkpoint's */
    snprintf(args, sizeof args, "--data '%s' --tokenizer '%s'", e->data, e->other_tok);
    assert_int_equal(run_eval(e, args), 1);
    assert_true(stderr_has(e, "another tokenizer"));
    /* a missing checkpoint and an unknown mode */
    snprintf(args, sizeof args, "--data '%s' --modes memory,recency", e->data);
    assert_int_equal(run_eval(e, args), 2);
    assert_true(stderr_has(e, "unknown mode 'recency'"));
}

/* Option values are parsed whole and range-checked; the error names the option and the range. */
static void test_cli_refuses_bad_numbers(void **state) {
    cli_env *e = *state;
    if (!e->bin)
        skip();
    static const struct {
        const char *option, *err;
    } cases[] = {
        {"--max-probes 99999999999999999999", "--max-probes wants an integer in 1..1099511627776, got '99999999999999999999'"},
        {"--threads abc", "--threads wants an integer in 1..1024, got 'abc'"},
        {"--threads 0", "--threads wants an integer in 1..1024, got '0'"},
        {"--max-gen-tokens 8x", "--max-gen-tokens wants an integer in 1..1048576, got '8x'"},
        {"--max-probes ' 3'", "--max-probes wants an integer in 1..1099511627776, got ' 3'"},
        {"--bogus", "unknown option '--bogus'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[1024];
        snprintf(args, sizeof args, "--data '%s' %s", e->data, cases[i].option);
        assert_int_equal(run_eval(e, args), 2);
        assert_true(stderr_has(e, cases[i].err));
    }
}

/* Runs `mnemo eval` on the small data with stdout to /dev/null and stderr to a pseudo-terminal
 * (tty = 1) or to env->err; returns what stderr received (malloc'd) and the exit code. */
static char *eval_stderr(const cli_env *e, int tty, int *rc) {
    const char *argv[] = {e->bin, "eval", "--checkpoint", e->ckpt, "--data", e->data, "--no-generate", "--no-lm", NULL};
    int master = -1;
    const char *slave = NULL;
    if (tty) {
        master = posix_openpt(O_RDWR | O_NOCTTY);
        assert_true(master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0);
        slave = ptsname(master);
        assert_non_null(slave);
    }
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int err = tty ? open(slave, O_RDWR) : open(e->err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int null = open("/dev/null", O_WRONLY);
        if (err < 0 || null < 0 || dup2(null, 1) < 0 || dup2(err, 2) < 0)
            _exit(126);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    char *text = NULL;
    size_t n = 0;
    if (tty) { /* read as it comes: a full terminal buffer would block the child */
        char buf[4096];
        ssize_t got;
        while ((got = read(master, buf, sizeof buf)) > 0) {
            text = realloc(text, n + (size_t)got + 1);
            memcpy(text + n, buf, (size_t)got);
            n += (size_t)got;
        }
        close(master);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (!tty)
        return read_all(e->err, &n);
    if (!text)
        text = calloc(1, 1);
    text[n] = '\0';
    return text;
}

/* Progress: about 20 updates, redrawn in place with '\r' on a terminal, a line each in a log
 * (no '\r' in a file), the last one counting every dialogue. */
static void test_cli_progress_only_redrawn_on_a_terminal(void **state) {
    cli_env *e = *state;
    if (!e->bin)
        skip();
    int rc;
    char *log = eval_stderr(e, 0, &rc);
    assert_int_equal(rc, 0);
    assert_non_null(log);
    if (strchr(log, '\r'))
        fail_msg("a log receives carriage returns: %s", log);
    int lines = 0;
    long done = -1, total = -2;
    for (const char *p = log; (p = strstr(p, "eval: ")); p++) {
        if (p != log && p[-1] != '\n')
            fail_msg("a progress update that is not a line of its own: %s", log);
        const char *end = strchr(p, '\n');
        if (!end || strncmp(end - 2, " s", 2))
            fail_msg("a progress update that is not a whole line: %s", log);
        assert_int_equal(sscanf(p, "eval: %ld/%ld dialogues", &done, &total), 2);
        lines++;
    }
    assert_true(lines >= 1 && lines <= 21);
    assert_int_equal(done, total);
    free(log);
    /* on a terminal: one line, redrawn */
    char *screen = eval_stderr(e, 1, &rc);
    assert_int_equal(rc, 0);
    if (!strstr(screen, "\reval: "))
        fail_msg("a terminal's progress is not redrawn in place: %s", screen);
    free(screen);
}

/* A plot whose folder does not exist: one message naming the folder and the reason. */
static void test_cli_plot_into_a_missing_folder(void **state) {
    cli_env *e = *state;
    if (!e->bin)
        skip();
    char args[1024], dir[160], want[512];
    snprintf(dir, sizeof dir, "%s/nope", e->dir);
    snprintf(args, sizeof args, "--data '%s' --no-generate --no-lm --plot '%s/x.png'", e->data, dir);
    assert_int_equal(run_eval(e, args), 1);
    snprintf(want, sizeof want, "mnemo eval: plot %s/x.png: cannot write in %s: No such file or directory\n", dir,
             dir);
    size_t n;
    char *err = read_all(e->err, &n);
    if (strcmp(err, want))
        fail_msg("stderr was '%s', expected '%s'", err, want);
    free(err);
}

/* A stand-in gnuplot: writes its argument count and arguments, one a line, to
 * $FAKE_GNUPLOT_LOG, fails unless its first argument is a file, exits $FAKE_GNUPLOT_EXIT. */
static const char *fake_gnuplot = "#!/bin/sh\n"
                                  "{ echo \"$#\"; for a in \"$@\"; do printf '%s\\n' \"$a\"; done; } > \"$FAKE_GNUPLOT_LOG\"\n"
                                  "test -f \"$1\" || exit 9\n"
                                  "exit \"${FAKE_GNUPLOT_EXIT:-0}\"\n";

/* mnemo eval --plot png --no-generate --no-lm, run in e->dir with PATH = path (no shell in
 * between); the fake gnuplot exits gp_exit. Returns the exit code. */
static int run_plot(const cli_env *e, const char *png, const char *path, int gp_exit) {
    char log[160], code[16];
    snprintf(log, sizeof log, "%s/gnuplot-args.txt", e->dir);
    snprintf(code, sizeof code, "%d", gp_exit);
    unlink(log);
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(e->dir) != 0 || !freopen("/dev/null", "w", stdout) || !freopen(e->err, "w", stderr))
            _exit(126);
        setenv("PATH", path, 1);
        setenv("FAKE_GNUPLOT_LOG", log, 1);
        setenv("FAKE_GNUPLOT_EXIT", code, 1);
        const char *argv[] = {e->bin, "eval", "--checkpoint", e->ckpt, "--data", e->data, "--plot", png,
                              "--no-generate", "--no-lm", "--quiet", NULL};
        execv(e->bin, (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* What the fake gnuplot was called with: one argument, this one. */
static void assert_gnuplot_got(const cli_env *e, const char *script) {
    char path[160], want[1024];
    snprintf(path, sizeof path, "%s/gnuplot-args.txt", e->dir);
    snprintf(want, sizeof want, "1\n%s\n", script);
    size_t n;
    char *got = read_all(path, &n);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static int file_has(const char *path, const char *what) {
    size_t n;
    char *s = read_all(path, &n);
    int found = s && strstr(s, what) != NULL;
    if (!found)
        print_message("%s was: %s\n", path, s ? s : "(unreadable)");
    free(s);
    return found;
}

/* gnuplot runs without a shell: its script is one argument whatever the plot's name holds,
 * the names inside the script are quoted for gnuplot, and its exit status is reported. */
static void test_cli_plot_runs_gnuplot_without_a_shell(void **state) {
    cli_env *e = *state;
    if (!e->bin)
        skip();
    char bin[128], empty[128], gp[160], png[160], script[160], want[256], pwned[128];
    snprintf(bin, sizeof bin, "%s/fakebin", e->dir);
    snprintf(empty, sizeof empty, "%s/nobin", e->dir);
    snprintf(gp, sizeof gp, "%s/gnuplot", bin);
    assert_int_equal(mkdir(bin, 0755), 0);
    assert_int_equal(mkdir(empty, 0755), 0);
    assert_int_equal(write_file(gp, fake_gnuplot), 0);
    assert_int_equal(chmod(gp, 0755), 0);

    /* a quote and spaces in the name */
    snprintf(png, sizeof png, "%s/it's a plot.png", e->dir);
    snprintf(script, sizeof script, "%s/it's a plot.gp", e->dir);
    assert_int_equal(run_plot(e, png, bin, 0), 0);
    assert_gnuplot_got(e, script);
    snprintf(want, sizeof want, "set output '%s/it''s a plot.png'\n", e->dir);
    assert_true(file_has(script, want));
    snprintf(want, sizeof want, "'%s/it''s a plot.dat' using 1:4", e->dir);
    assert_true(file_has(script, want));

    /* a name that would end a shell's quotes runs no command */
    snprintf(png, sizeof png, "%s/x'; touch pwned; '.png", e->dir);
    snprintf(script, sizeof script, "%s/x'; touch pwned; '.gp", e->dir);
    snprintf(pwned, sizeof pwned, "%s/pwned", e->dir);
    assert_int_equal(run_plot(e, png, bin, 0), 0);
    assert_gnuplot_got(e, script);
    assert_int_equal(access(pwned, F_OK), -1);
    /* the same with no gnuplot at all: refused, still nothing run */
    assert_int_equal(run_plot(e, png, empty, 0), 1);
    assert_true(stderr_has(e, "cannot run gnuplot"));
    assert_int_equal(access(pwned, F_OK), -1);

    /* a relative name starting with '-' is not taken for an option */
    assert_int_equal(run_plot(e, "-e.png", bin, 0), 0);
    assert_gnuplot_got(e, "./-e.gp");

    /* gnuplot's failure is reported with its exit status */
    snprintf(png, sizeof png, "%s/plot.png", e->dir);
    assert_int_equal(run_plot(e, png, bin, 3), 1);
    assert_true(stderr_has(e, "gnuplot failed on"));
    assert_true(stderr_has(e, "exit status 3"));

    /* and with a real gnuplot, where one is installed, the quoted name draws a PNG */
    const char *path = getenv("PATH");
    int have_gnuplot = 0;
    for (const char *p = path ? path : ""; *p && !have_gnuplot;) {
        size_t n = strcspn(p, ":");
        char exe[512];
        snprintf(exe, sizeof exe, "%.*s/gnuplot", (int)n, p);
        have_gnuplot = n > 0 && access(exe, X_OK) == 0;
        p += n + (p[n] == ':');
    }
    if (!have_gnuplot) {
        print_message("no gnuplot on PATH: the real plot is not drawn\n");
        return;
    }
    snprintf(png, sizeof png, "%s/it's a plot.png", e->dir);
    unlink(png);
    assert_int_equal(run_plot(e, png, path, 0), 0);
    size_t n;
    char *img = read_all(png, &n);
    assert_non_null(img);
    assert_true(n > 8 && !memcmp(img, "\x89PNG", 4));
    free(img);
}

/* `mnemo eval` on the hand-set model's checkpoint: the report's accuracies and every probe's
 * pick and gold log-likelihood (--probes-out) are the closed-form ones. */
static void test_cli_hand_set_model(void **state) {
    cli_env *e = *state;
    if (!e->bin)
        skip();
    char ckpt[160], data[160], probes[160], args[1024];
    snprintf(ckpt, sizeof ckpt, "%s/hand.h5", e->dir);
    snprintf(data, sizeof data, "%s/hand.jsonl", e->dir);
    snprintf(probes, sizeof probes, "%s/hand-probes.jsonl", e->dir);
    mn_tokenizer *tok = bytes_tokenizer();
    mn_model *m = hand_model(tok);
    const int V = mn_tokenizer_vocab_size(tok), d = hand_window();
    mn_checkpoint_save_options so = {.tokenizer = tok};
    assert_int_equal(mn_checkpoint_save(ckpt, m, NULL, NULL, &so), MN_OK);
    mn_model_free(m);
    mn_tokenizer_free(tok);
    assert_int_equal(write_file(data, hand_jsonl), 0);
    snprintf(args, sizeof args,
             "--data '%s' --json '%s' --probes-out '%s' --modes memory,no_memory,window --window-tokens %d,%d "
             "--no-generate --no-lm --threads 2",
             data, e->json, probes, d, d - 1);
    assert_int_equal(run_eval_on(e, ckpt, args), 0);

    static const char *const modes[HAND_MODES] = {"memory", "no_memory", "window", NULL};
    char window_short[32];
    snprintf(window_short, sizeof window_short, "window_%d", d - 1);
    const char *names[HAND_MODES] = {modes[0], modes[1], modes[2], window_short};
    json_error_t err;
    json_t *report = json_load_file(e->json, 0, &err);
    if (!report)
        fail_msg("%s: %s", e->json, err.text);
    json_t *recall = json_object_get(report, "recall");
    for (int v = 0; v < HAND_MODES; v++) {
        int correct = 0;
        for (int i = 0; i < HAND_PROBES; i++)
            correct += hand_pick(&hand_expect[i], v) == hand_gold(&hand_expect[i]);
        double acc = json_real_value(json_object_get(json_object_get(recall, names[v]), "mc_accuracy"));
        if (fabs(acc - (double)correct / HAND_PROBES) > 1e-6) /* the report keeps 6 digits */
            fail_msg("%s: mc_accuracy %g, expected %d/%d", names[v], acc, correct, HAND_PROBES);
    }
    json_decref(report);

    size_t len;
    char *text = read_all(probes, &len);
    assert_non_null(text);
    char *line = text;
    for (int i = 0; i < HAND_PROBES; i++) {
        char *end = strchr(line, '\n');
        assert_non_null(end);
        json_t *row = json_loadb(line, (size_t)(end - line), 0, &err);
        if (!row)
            fail_msg("%s line %d: %s", probes, i + 1, err.text);
        for (int v = 0; v < HAND_MODES; v++) {
            json_t *mode = json_object_get(row, names[v]);
            int pick = (int)json_integer_value(json_object_get(mode, "choice"));
            double ll = json_real_value(json_object_get(mode, "gold_ll"));
            double want = hand_ll(hand_expect[i].gold_x, hand_expect[i].seen[v], V);
            if (pick != hand_pick(&hand_expect[i], v) || fabs(ll - want) > 1e-4) /* 6 digits in the file */
                fail_msg("probe %d, %s: choice %d, gold_ll %.6f; expected %d, %.6f", i, names[v], pick, ll,
                         hand_pick(&hand_expect[i], v), want);
        }
        json_decref(row);
        line = end + 1;
    }
    free(text);
}

/* mn_eval_checkpoint (the public one-call form the Python binding uses): the same report as
 * the CLI writes, the modes it is asked for and no others, and refusals that name the input. */
static void test_library_call(void **state) {
    cli_env *e = *state;
    mn_eval_config c = {.modes = "memory,no_memory,window", .threads = 1, .lm = 1};
    assert_int_equal(mn_eval_checkpoint(e->ckpt, e->data, &c, e->json), MN_OK);
    check_report(e->json, 2 * 16);
    c.modes = "memory";
    c.max_probes = 1;
    assert_int_equal(mn_eval_checkpoint(e->ckpt, e->data, &c, e->json), MN_OK);
    json_t *root = json_load_file(e->json, 0, NULL);
    assert_non_null(root);
    json_t *recall = json_object_get(root, "recall");
    assert_non_null(json_object_get(recall, "memory"));
    assert_null(json_object_get(recall, "no_memory"));
    assert_int_equal(json_integer_value(json_object_get(root, "probes")), 1);
    json_decref(root);

    c.modes = "memory,telepathy";
    assert_int_not_equal(mn_eval_checkpoint(e->ckpt, e->data, &c, e->json), MN_OK);
    assert_non_null(strstr(mn_last_error(), "telepathy"));
    c.modes = NULL;
    char path[160];
    snprintf(path, sizeof path, "%s/empty.jsonl", e->dir);
    assert_int_equal(write_file(path, ""), 0);
    assert_int_equal(mn_eval_checkpoint(e->ckpt, path, &c, e->json), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "holds no dialogues"));
    snprintf(path, sizeof path, "%s/missing.h5", e->dir);
    assert_int_equal(mn_eval_checkpoint(path, e->data, &c, e->json), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "missing.h5"));
    c.max_probes = -1;
    assert_int_equal(mn_eval_checkpoint(e->ckpt, e->data, &c, e->json), MN_ERR_INVALID_ARG);
}

int main(void) {
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_bucket_edges),
        cmocka_unit_test(test_normalize_exact_match),
        cmocka_unit_test(test_normalize_locomo_f1),
        cmocka_unit_test(test_distances),
        cmocka_unit_test(test_memory_differs_only_in_state),
        cmocka_unit_test(test_threads_same_results),
        cmocka_unit_test(test_sequence_batches),
        cmocka_unit_test(test_eval_batched_equals_one_at_a_time),
        cmocka_unit_test(test_max_probes),
        cmocka_unit_test(test_hand_set_model),
        cmocka_unit_test(test_memory_protocol_question_in_context),
        cmocka_unit_test(test_refuses_bad_input),
        cmocka_unit_test(test_json_has_every_key),
        cmocka_unit_test(test_retrieval_reads_the_evidence_window_does_not),
        cmocka_unit_test(test_retrieval_question_syntax_is_plain_text),
        cmocka_unit_test(test_summary_gpt2_tiny_keeps_its_budget),
        cmocka_unit_test(test_every_mode_has_every_key),
    };
    const struct CMUnitTest cli[] = {
        cmocka_unit_test(test_library_call),
        cmocka_unit_test(test_cli_runs_and_leaves_checkpoint_unchanged),
        cmocka_unit_test(test_cli_refuses_bad_input),
        cmocka_unit_test(test_cli_refuses_bad_numbers),
        cmocka_unit_test(test_cli_progress_only_redrawn_on_a_terminal),
        cmocka_unit_test(test_cli_plot_into_a_missing_folder),
        cmocka_unit_test(test_cli_plot_runs_gnuplot_without_a_shell),
        cmocka_unit_test(test_cli_hand_set_model),
    };
    int failed = cmocka_run_group_tests_name("eval", unit, NULL, NULL);
    failed += cmocka_run_group_tests_name("eval_cli", cli, cli_setup, cli_teardown);
    return failed;
}
