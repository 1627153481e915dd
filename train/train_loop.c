/* The training loop of `mnemo train`: data (token shards or synthetic recall episodes), the
 * curriculum, warmup + cosine AdamW, non-finite step skipping, evaluation, metrics JSONL,
 * atomic checkpoints and bit-identical resume (docs/training.md). */
#include "train_loop.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/rng.h"
#include "io/checkpoint.h"
#include "model/score.h"
#include "text/dialogue.h"
#include "text/shard.h"
#include "text/tokenizer.h"
#include "train/recall.h"
#include "train/schedule.h"

/* Eval data is drawn from RNGs of its own, so that evaluating never moves the training RNG. */
#define EVAL_LOSS_SALT 0x6a09e667f3bcc908ull
#define EVAL_PROBE_SALT 0xbb67ae8584caa73bull
#define TRAIN_RNG_SALT 0x3c6ef372fe94f82bull
#define LOADER_SALT 0x9e3779b97f4a7c15ull

/* A validation probe of a text episode, as tokens: scored with R after the turns before it. */
typedef struct {
    int64_t episode;       /* index into the rendered validation corpus */
    int64_t question_turn; /* global turn index (in the corpus) of the question turn */
    int distance;          /* after - evidence turn; -1 when the probe names no evidence */
    int32_t prefix[2];     /* <|turn|> <answerer> */
    int32_t **choices;
    int *choice_lens;
    int n_choices, answer;
} text_probe;

typedef struct {
    const train_config *cfg;
    const train_run_options *opts;
    int recall;                      /* task recall (else shards) */
    mn_recall_task task;
    mn_curriculum curriculum;
    mn_lr_schedule schedule;
    mn_model *model;
    mn_trainer *trainer;
    mn_tokenizer *tok;
    mn_shard *train_shard, *valid_shard;
    mn_loader *loader, *valid_loader;
    int loader_stage;                /* the curriculum stage `loader` was made for */
    /* batch buffers (T, B, L) for synthetic batches and compacted shard batches */
    int32_t *tokens, *lengths;
    float *weights;
    int max_len;
    mn_rng rng;
    mn_train_state st;
    /* text probes */
    mn_token_corpus probe_corpus;
    text_probe *probes;
    int64_t n_probes;
    FILE *metrics;
    char json_config[8192];
    char *config_json;
    char last_checkpoint[TRAIN_PATH_CAP + 64];
    int tty;
    double t_start;
    uint64_t start_step;
} run;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what) {
    fprintf(stderr, "mnemo train: %s%s%s\n", what ? what : "", what ? ": " : "", mn_last_error());
    return TRAIN_EXIT_FAILED;
}

static int in_list(const int64_t *list, int n, int64_t v) {
    for (int i = 0; i < n; i++)
        if (list[i] == v)
            return 1;
    return 0;
}

/* mkdir -p */
static int make_dirs(const char *path) {
    char buf[TRAIN_PATH_CAP];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Fails fast when the run directory cannot take a checkpoint, before any training is spent. */
static int check_run_dir(const char *dir) {
    if (make_dirs(dir) != 0) {
        fprintf(stderr, "mnemo train: cannot create the run directory %s: %s\n", dir, strerror(errno));
        return TRAIN_EXIT_FAILED;
    }
    char probe[TRAIN_PATH_CAP + 64];
    snprintf(probe, sizeof probe, "%s/.write-test.%ld", dir, (long)getpid());
    FILE *f = fopen(probe, "w");
    if (!f) {
        fprintf(stderr, "mnemo train: the run directory %s is not writable: %s\n", dir, strerror(errno));
        return TRAIN_EXIT_FAILED;
    }
    fclose(f);
    unlink(probe);
    int removed = 0;
    if (mn_checkpoint_clean_temps(dir, &removed) != MN_OK)
        fprintf(stderr, "mnemo train: warning: %s\n", mn_last_error());
    else if (removed)
        fprintf(stderr, "mnemo train: removed %d stale temp file(s) of interrupted checkpoint writes in %s\n",
                removed, dir);
    return TRAIN_EXIT_OK;
}

/* ---------------------------------------------------------------- data */
static int stage_turns(const run *r, int stage) { return r->curriculum.turns[stage]; }

/* Probe distances of the recall task at a given episode length. */
static void recall_distances(const run *r, int turns, int *lo, int *hi) {
    *hi = turns - 1;
    *lo = r->cfg->recall_min_distance < *hi ? r->cfg->recall_min_distance : *hi;
}

/* The loader of the current stage: each stage reads windows of its own length, in an order
 * seeded by (seed, stage); the cursor in the state belongs to the current stage's loader. */
static mn_status stage_loader(run *r, int turns, int stage) {
    if (r->loader && r->loader_stage == stage)
        return MN_OK;
    mn_loader_free(r->loader);
    r->loader = NULL;
    mn_loader_options o = {.B = r->cfg->batch, .T = turns, .max_len = r->cfg->model.max_turn_tokens,
                           .seed = (uint64_t)r->cfg->seed ^ (LOADER_SALT * (uint64_t)(stage + 1)),
                           .text_weight = (float)r->cfg->text_weight, .answer_weight = (float)r->cfg->answer_weight};
    mn_status st = mn_loader_create(r->train_shard, &o, &r->loader);
    if (st != MN_OK)
        return st;
    r->loader_stage = stage;
    mn_loader_cursor c = {r->st.data_epoch, r->st.data_position};
    return mn_loader_set_cursor(r->loader, c);
}

/* Copies a loader batch into the run's buffers padded only to its longest turn: turns are
 * often far shorter than max_turn_tokens, and compute grows with the padded length. */
static void compact_batch(run *r, const mn_batch *in, mn_batch *out) {
    int L = 1;
    for (int i = 0; i < in->T * in->B; i++)
        if (in->lengths[i] > L)
            L = in->lengths[i];
    for (int i = 0; i < in->T * in->B; i++) {
        memcpy(r->tokens + (size_t)i * L, in->tokens + (size_t)i * in->max_len, (size_t)L * sizeof(int32_t));
        memcpy(r->weights + (size_t)i * L, in->loss_weights + (size_t)i * in->max_len, (size_t)L * sizeof(float));
        r->lengths[i] = in->lengths[i];
    }
    *out = (mn_batch){.B = in->B, .T = in->T, .max_len = L, .tokens = r->tokens, .lengths = r->lengths,
                      .loss_weights = r->weights};
}

static mn_status next_batch(run *r, int stage, mn_batch *batch) {
    int turns = stage_turns(r, stage);
    if (r->recall) {
        int lo, hi;
        recall_distances(r, turns, &lo, &hi);
        MN_TRY(mn_recall_fill_batch(&r->task, &r->rng, r->cfg->batch, turns, r->max_len, lo, hi, r->tokens,
                                    r->lengths, r->weights, NULL));
        *batch = (mn_batch){.B = r->cfg->batch, .T = turns, .max_len = r->max_len, .tokens = r->tokens,
                            .lengths = r->lengths, .loss_weights = r->weights};
        return MN_OK;
    }
    MN_TRY(stage_loader(r, turns, stage));
    mn_batch raw;
    MN_TRY(mn_loader_next(r->loader, &raw));
    mn_loader_cursor c = mn_loader_get_cursor(r->loader);
    r->st.data_epoch = c.epoch;
    r->st.data_position = c.position;
    compact_batch(r, &raw, batch);
    return MN_OK;
}

/* ---------------------------------------------------------------- evaluation */
typedef struct {
    int64_t n, correct, correct_reset;
} bucket;

#define N_BUCKETS 8 /* distances 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64+, unknown */
static int bucket_of(int d) {
    if (d < 1)
        return N_BUCKETS - 1;
    int b = 0;
    while (b < N_BUCKETS - 2 && d >= (2 << b))
        b++;
    return b;
}
static void bucket_range(int b, char *buf, size_t cap) {
    if (b == N_BUCKETS - 1)
        snprintf(buf, cap, "unknown");
    else if (b == N_BUCKETS - 2)
        snprintf(buf, cap, "%d+", 1 << b);
    else
        snprintf(buf, cap, "%d-%d", 1 << b, (2 << b) - 1);
}

static mn_status eval_loss(run *r, double *loss_out, int64_t *batches) {
    const train_config *c = r->cfg;
    double sum = 0;
    int64_t n = 0;
    *batches = 0;
    if (r->recall) {
        mn_rng rng;
        mn_rng_seed(&rng, (uint64_t)c->seed ^ EVAL_LOSS_SALT);
        int lo, hi;
        recall_distances(r, c->turns, &lo, &hi);
        for (int64_t i = 0; i < c->eval_batches; i++) {
            MN_TRY(mn_recall_fill_batch(&r->task, &rng, c->batch, c->turns, r->max_len, lo, hi, r->tokens, r->lengths,
                                        r->weights, NULL));
            mn_batch b = {c->batch, c->turns, r->max_len, r->tokens, r->lengths, r->weights};
            float loss;
            MN_TRY(mn_forward(r->trainer, &b, &loss, NULL));
            sum += loss;
            n++;
        }
    } else if (r->valid_loader) {
        MN_TRY(mn_loader_set_cursor(r->valid_loader, (mn_loader_cursor){0, 0})); /* the same batches each time */
        for (int64_t i = 0; i < c->eval_batches; i++) {
            mn_batch raw, b;
            MN_TRY(mn_loader_next(r->valid_loader, &raw));
            compact_batch(r, &raw, &b);
            float loss;
            MN_TRY(mn_forward(r->trainer, &b, &loss, NULL));
            sum += loss;
            n++;
        }
    }
    *batches = n;
    *loss_out = n ? sum / (double)n : NAN;
    return MN_OK;
}

/* Recall task: fresh episodes of the full length; every question scored with R and with R_0. */
static mn_status eval_recall_probes(run *r, bucket *buckets) {
    const train_config *c = r->cfg;
    mn_model *m = r->model;
    mn_rng rng;
    mn_rng_seed(&rng, (uint64_t)c->seed ^ EVAL_PROBE_SALT);
    int T = c->turns, L = r->max_len, lo, hi;
    recall_distances(r, T, &lo, &hi);
    size_t S = mn_state_floats(m);
    float *state = malloc(S * sizeof(float)), *r0 = malloc(S * sizeof(float));
    int32_t *tokens = malloc((size_t)T * L * sizeof(int32_t)), *lengths = malloc((size_t)T * sizeof(int32_t));
    float *weights = malloc((size_t)T * L * sizeof(float));
    mn_recall_probe *probes = malloc((size_t)c->recall_facts * sizeof *probes);
    mn_status st = MN_OK;
    if (!state || !r0 || !tokens || !lengths || !weights || !probes)
        st = MN_ERR_NOMEM;
    if (st == MN_OK)
        st = mn_initial_state(m, r0);
    for (int64_t done = 0; st == MN_OK && done < c->eval_probes;) {
        st = mn_recall_fill_batch(&r->task, &rng, 1, T, L, lo, hi, tokens, lengths, weights, probes);
        memcpy(state, r0, S * sizeof(float));
        for (int t = 0; st == MN_OK && t < T; t++) {
            for (int j = 0; st == MN_OK && j < c->recall_facts && done < c->eval_probes; j++) {
                const mn_recall_probe *p = &probes[j];
                if (p->question_turn != t)
                    continue;
                int32_t prefix[2] = {MN_RECALL_ASK, p->key};
                const int32_t *choices[MN_RECALL_MAX_CHOICES];
                int lens[MN_RECALL_MAX_CHOICES];
                double scores[MN_RECALL_MAX_CHOICES];
                for (int i = 0; i < p->n_choices; i++) {
                    choices[i] = &p->choices[i];
                    lens[i] = 1;
                }
                int best = -1, best_reset = -1;
                st = mn_score_choices(m, state, prefix, 2, choices, lens, p->n_choices, scores, &best);
                if (st == MN_OK)
                    st = mn_score_choices(m, r0, prefix, 2, choices, lens, p->n_choices, scores, &best_reset);
                bucket *b = &buckets[bucket_of(p->question_turn - p->fact_turn)];
                b->n++;
                b->correct += best == p->answer_index;
                b->correct_reset += best_reset == p->answer_index;
                done++;
            }
            if (st == MN_OK && t + 1 < T)
                st = mn_update(m, tokens + (size_t)t * L, lengths[t], state, state);
        }
    }
    free(state), free(r0), free(tokens), free(lengths), free(weights), free(probes);
    return st == MN_ERR_NOMEM ? mn_fail(MN_ERR_NOMEM, "eval: out of memory") : st;
}

/* Text probes: walk each validation episode once, keeping R; a probe is scored with the R
 * that enters its question turn (and with R_0), then its question and answer turns are read
 * into memory as in training. */
static mn_status eval_text_probes(run *r, bucket *buckets) {
    mn_model *m = r->model;
    const mn_token_corpus *c = &r->probe_corpus;
    size_t S = mn_state_floats(m);
    float *state = malloc(S * sizeof(float)), *r0 = malloc(S * sizeof(float));
    if (!state || !r0) {
        free(state), free(r0);
        return mn_fail(MN_ERR_NOMEM, "eval: out of memory");
    }
    mn_status st = mn_initial_state(m, r0);
    int64_t next = 0;
    for (int64_t e = 0; st == MN_OK && e < c->n_episodes && next < r->n_probes; e++) {
        memcpy(state, r0, S * sizeof(float));
        for (int64_t t = c->episode_start[e]; st == MN_OK && t < c->episode_start[e + 1]; t++) {
            while (st == MN_OK && next < r->n_probes && r->probes[next].episode == e &&
                   r->probes[next].question_turn == t) {
                text_probe *p = &r->probes[next++];
                const int32_t *q = c->tokens + c->turn_start[t];
                mn_probe_tokens pt = {q,        (int)(c->turn_start[t + 1] - c->turn_start[t]),
                                      p->prefix, 2,
                                      (const int32_t *const *)p->choices, p->choice_lens, p->n_choices};
                double scores[64];
                int best = -1, best_reset = -1;
                st = mn_score_probe(m, state, &pt, scores, &best);
                if (st == MN_OK)
                    st = mn_score_probe(m, r0, &pt, scores, &best_reset);
                bucket *b = &buckets[bucket_of(p->distance)];
                b->n++;
                b->correct += best == p->answer;
                b->correct_reset += best_reset == p->answer;
            }
            if (st == MN_OK && next < r->n_probes && r->probes[next].episode == e)
                st = mn_update(m, c->tokens + c->turn_start[t], (int)(c->turn_start[t + 1] - c->turn_start[t]), state,
                               state);
        }
    }
    free(state), free(r0);
    return st;
}

static int evaluate(run *r, uint64_t step) {
    const train_config *c = r->cfg;
    double t0 = now_s(), loss = NAN;
    int64_t batches = 0;
    bucket buckets[N_BUCKETS];
    memset(buckets, 0, sizeof buckets);
    mn_status st = eval_loss(r, &loss, &batches);
    if (st == MN_OK && c->eval_probes > 0)
        st = r->recall ? eval_recall_probes(r, buckets) : (r->n_probes ? eval_text_probes(r, buckets) : MN_OK);
    if (st != MN_OK) {
        fprintf(stderr, "\nmnemo train: evaluation at step %" PRIu64 " failed: %s\n", step, mn_last_error());
        return TRAIN_EXIT_FAILED;
    }
    int64_t n = 0, ok = 0, ok_reset = 0;
    for (int b = 0; b < N_BUCKETS; b++) {
        n += buckets[b].n;
        ok += buckets[b].correct;
        ok_reset += buckets[b].correct_reset;
    }
    if (r->tty)
        printf("\n");
    printf("eval step %" PRIu64 ":", step);
    if (batches)
        printf(" valid loss %.4f (%" PRId64 " batches)", loss, batches);
    if (n)
        printf(" | probes %" PRId64 ": accuracy %.1f%% with memory, %.1f%% with R reset to R_0", n,
               100.0 * ok / n, 100.0 * ok_reset / n);
    printf(" | %.1f s\n", now_s() - t0);
    if (n) {
        printf("  distance  probes  memory  reset\n");
        for (int b = 0; b < N_BUCKETS; b++)
            if (buckets[b].n) {
                char range[32];
                bucket_range(b, range, sizeof range);
                printf("  %-8s  %6" PRId64 "  %5.1f%%  %5.1f%%\n", range, buckets[b].n,
                       100.0 * buckets[b].correct / buckets[b].n, 100.0 * buckets[b].correct_reset / buckets[b].n);
            }
    }
    fflush(stdout);
    if (r->metrics) {
        fprintf(r->metrics, "{\"eval\": true, \"step\": %" PRIu64, step);
        if (batches)
            fprintf(r->metrics, ", \"valid_loss\": %.9g", loss);
        if (n) {
            fprintf(r->metrics, ", \"probes\": %" PRId64 ", \"probe_acc\": %.6g, \"probe_acc_reset\": %.6g", n,
                    (double)ok / n, (double)ok_reset / n);
            fprintf(r->metrics, ", \"buckets\": [");
            int first = 1;
            for (int b = 0; b < N_BUCKETS; b++)
                if (buckets[b].n) {
                    char range[32];
                    bucket_range(b, range, sizeof range);
                    fprintf(r->metrics, "%s{\"distance\": \"%s\", \"n\": %" PRId64 ", \"acc\": %.6g, \"acc_reset\": %.6g}",
                            first ? "" : ", ", range, buckets[b].n, (double)buckets[b].correct / buckets[b].n,
                            (double)buckets[b].correct_reset / buckets[b].n);
                    first = 0;
                }
            fprintf(r->metrics, "]");
        }
        fprintf(r->metrics, "}\n");
        fflush(r->metrics);
    }
    return TRAIN_EXIT_OK;
}

/* Renders the validation probes once: episodes with probe turns, and each probe's choices. */
static mn_status prepare_text_probes(run *r) {
    const train_config *c = r->cfg;
    mn_dialogue_list list = {0};
    MN_TRY(mn_jsonl_read(c->valid_probes, 0, stderr, &list, NULL));
    mn_render_options ro = {.max_turn_tokens = c->model.max_turn_tokens, .include_probes = 1};
    mn_status st = MN_OK;
    int64_t cap = 0;
    int32_t eot = mn_tokenizer_special(r->tok, MN_TOK_EOT);
    mn_ids ids = {0};
    for (int64_t d = 0; st == MN_OK && d < list.count && r->n_probes < c->eval_probes; d++) {
        const mn_dialogue *dl = &list.items[d];
        if (!dl->n_probes)
            continue;
        int64_t turn0 = r->probe_corpus.n_turns;
        st = mn_render_dialogue(r->tok, dl, &ro, &r->probe_corpus, NULL);
        if (st != MN_OK)
            break;
        int64_t e = r->probe_corpus.n_episodes - 1, turn1 = r->probe_corpus.n_turns;
        /* the renderer inserts probes in order of `after`, file order among equals */
        int *order = malloc((size_t)dl->n_probes * sizeof *order);
        if (!order) {
            st = mn_fail(MN_ERR_NOMEM, "eval: out of memory");
            break;
        }
        int n_order = 0;
        for (int p = 0; p < dl->n_probes; p++) {
            int i = n_order++;
            while (i > 0 && dl->probes[order[i - 1]].after > dl->probes[p].after) {
                order[i] = order[i - 1];
                i--;
            }
            order[i] = p;
        }
        int k = 0;
        for (int64_t t = turn0; st == MN_OK && t < turn1 && k < n_order; t++) {
            if (!(r->probe_corpus.turn_flags[t] & MN_TURN_QUESTION))
                continue;
            const mn_probe *pr = &dl->probes[order[k++]];
            /* a question or answer split into pieces, or no choices: not a quick probe */
            if (t + 1 >= turn1 || !(r->probe_corpus.turn_flags[t + 1] & MN_TURN_ANSWER) ||
                (t + 2 < turn1 && (r->probe_corpus.turn_flags[t + 2] & MN_TURN_CONTINUED)) ||
                (r->probe_corpus.turn_flags[t + 1] & MN_TURN_CONTINUED) || pr->n_choices < 2 || pr->n_choices > 64)
                continue;
            if (r->n_probes == cap) {
                cap = cap ? 2 * cap : 64;
                text_probe *grown = realloc(r->probes, (size_t)cap * sizeof *grown);
                if (!grown) {
                    st = mn_fail(MN_ERR_NOMEM, "eval: out of memory");
                    break;
                }
                r->probes = grown;
            }
            text_probe *p = &r->probes[r->n_probes];
            memset(p, 0, sizeof *p);
            p->episode = e;
            p->question_turn = t;
            p->distance = pr->n_evidence ? pr->after - pr->evidence[0] : -1;
            const int32_t *answer_turn = r->probe_corpus.tokens + r->probe_corpus.turn_start[t + 1];
            p->prefix[0] = answer_turn[0];
            p->prefix[1] = answer_turn[1];
            p->answer = -1;
            p->choices = calloc((size_t)pr->n_choices, sizeof *p->choices);
            p->choice_lens = calloc((size_t)pr->n_choices, sizeof *p->choice_lens);
            if (!p->choices || !p->choice_lens) {
                free(p->choices), free(p->choice_lens);
                st = mn_fail(MN_ERR_NOMEM, "eval: out of memory");
                break;
            }
            r->n_probes++; /* owns its arrays from here on */
            p->n_choices = pr->n_choices;
            for (int i = 0; st == MN_OK && i < pr->n_choices; i++) {
                ids.count = 0;
                st = mn_tokenizer_encode(r->tok, pr->choices[i], strlen(pr->choices[i]), &ids);
                if (st == MN_OK)
                    st = mn_ids_push(&ids, eot);
                if (st != MN_OK)
                    break;
                int n = (int)ids.count;
                if (n > c->model.max_turn_tokens - 2)
                    n = c->model.max_turn_tokens - 2;
                p->choices[i] = malloc((size_t)n * sizeof(int32_t));
                if (!p->choices[i]) {
                    st = mn_fail(MN_ERR_NOMEM, "eval: out of memory");
                    break;
                }
                memcpy(p->choices[i], ids.ids, (size_t)n * sizeof(int32_t));
                p->choice_lens[i] = n;
                if (p->answer < 0 && !strcmp(pr->choices[i], pr->answer))
                    p->answer = i;
            }
            if (st == MN_OK && p->answer < 0) { /* canonical JSONL guarantees it; be safe */
                for (int i = 0; i < p->n_choices; i++)
                    free(p->choices[i]);
                free(p->choices), free(p->choice_lens);
                r->n_probes--;
            }
            if (r->n_probes >= c->eval_probes)
                break;
        }
        free(order);
    }
    mn_ids_free(&ids);
    mn_dialogue_list_free(&list);
    return st;
}

static void free_text_probes(run *r) {
    for (int64_t i = 0; i < r->n_probes; i++) {
        for (int j = 0; j < r->probes[i].n_choices; j++)
            free(r->probes[i].choices[j]);
        free(r->probes[i].choices);
        free(r->probes[i].choice_lens);
    }
    free(r->probes);
    mn_token_corpus_free(&r->probe_corpus);
}

/* ---------------------------------------------------------------- checkpoints */
typedef struct {
    int datasets_left; /* fail when it reaches 0 */
} fault_state;

static int fault_after_datasets(void *ctx, const char *dataset) {
    (void)dataset;
    fault_state *f = ctx;
    return f->datasets_left-- <= 0;
}

/* Writes ckpt-<step>.h5 and prunes old ones. 0 on success. */
static int save_checkpoint(run *r) {
    char path[TRAIN_PATH_CAP + 64];
    if (mn_checkpoint_run_path(r->cfg->run_dir, r->st.step, path, sizeof path) != MN_OK)
        return 1;
    fault_state fault = {3}; /* a few datasets written, then "the disk is full" */
    mn_checkpoint_save_options o = {.train_config_json = r->config_json, .tokenizer = r->tok};
    if (in_list(r->opts->fault_checkpoint_steps, r->opts->n_fault_checkpoint_steps, (int64_t)r->st.step)) {
        o.fault = fault_after_datasets;
        o.fault_ctx = &fault;
    }
    if (mn_checkpoint_save(path, r->model, r->trainer, &r->st, &o) != MN_OK)
        return 1;
    snprintf(r->last_checkpoint, sizeof r->last_checkpoint, "%s", path);
    int removed;
    if (mn_checkpoint_prune(r->cfg->run_dir, r->cfg->keep_checkpoints, &removed) != MN_OK)
        fprintf(stderr, "\nmnemo train: warning: %s\n", mn_last_error());
    if (r->metrics) {
        fprintf(r->metrics, "{\"checkpoint\": \"%s\", \"step\": %" PRIu64 "}\n", path, r->st.step);
        fflush(r->metrics);
    }
    return 0;
}

/* ---------------------------------------------------------------- setup */
static int setup_data(run *r, const char *resume_or_base) {
    const train_config *c = r->cfg;
    if (r->recall) {
        r->task = (mn_recall_task){.vocab_size = c->model.vocab_size, .n_keys = c->recall_keys,
                                   .n_values = c->recall_values, .filler_min = c->recall_filler_min,
                                   .filler_max = c->recall_filler_max, .facts = c->recall_facts,
                                   .n_choices = c->recall_choices, .text_weight = (float)c->text_weight,
                                   .answer_weight = (float)c->answer_weight};
        if (mn_recall_task_validate(&r->task) != MN_OK)
            return fail("config");
        r->max_len = mn_recall_max_len(&r->task);
        if (r->max_len > c->model.max_turn_tokens) {
            fprintf(stderr, "mnemo train: recall turns of %d tokens exceed max_turn_tokens = %d\n", r->max_len,
                    c->model.max_turn_tokens);
            return TRAIN_EXIT_FAILED;
        }
        if (stage_turns(r, 0) < 2 * c->recall_facts) {
            fprintf(stderr, "mnemo train: the first curriculum stage (%d turns) cannot hold %d facts and questions\n",
                    stage_turns(r, 0), c->recall_facts);
            return TRAIN_EXIT_FAILED;
        }
    } else {
        if (c->tokenizer[0]) {
            if (mn_tokenizer_load_file(c->tokenizer, &r->tok) != MN_OK)
                return fail("tokenizer");
        } else if (resume_or_base) {
            if (mn_checkpoint_load_tokenizer(resume_or_base, &r->tok) != MN_OK)
                return fail("tokenizer");
        }
        if (!r->tok) {
            fprintf(stderr, "mnemo train: task shards needs --tokenizer (or a --resume/--base checkpoint holding one)\n");
            return TRAIN_EXIT_FAILED;
        }
        if (mn_tokenizer_vocab_size(r->tok) > c->model.vocab_size) {
            fprintf(stderr, "mnemo train: the tokenizer has %d tokens but vocab_size = %d\n",
                    mn_tokenizer_vocab_size(r->tok), c->model.vocab_size);
            return TRAIN_EXIT_FAILED;
        }
        uint64_t hash = mn_tokenizer_hash(r->tok);
        if (mn_shard_open(c->train_data, hash, &r->train_shard) != MN_OK)
            return fail("train_data");
        r->max_len = c->model.max_turn_tokens;
        if (c->valid_data[0]) {
            if (mn_shard_open(c->valid_data, hash, &r->valid_shard) != MN_OK)
                return fail("valid_data");
            mn_loader_options o = {.B = c->batch, .T = c->turns, .max_len = c->model.max_turn_tokens,
                                   .seed = (uint64_t)c->seed ^ EVAL_LOSS_SALT, .text_weight = (float)c->text_weight,
                                   .answer_weight = (float)c->answer_weight};
            if (mn_loader_create(r->valid_shard, &o, &r->valid_loader) != MN_OK)
                return fail("valid_data");
        }
        if (c->valid_probes[0] && c->eval_probes > 0) {
            if (prepare_text_probes(r) != MN_OK)
                return fail("valid_probes");
            printf("validation probes: %" PRId64 " prepared from %s\n", r->n_probes, c->valid_probes);
        }
    }
    size_t cells = (size_t)c->batch * (size_t)c->turns;
    r->tokens = malloc(cells * (size_t)r->max_len * sizeof(int32_t));
    r->weights = malloc(cells * (size_t)r->max_len * sizeof(float));
    r->lengths = malloc(cells * sizeof(int32_t));
    if (!r->tokens || !r->weights || !r->lengths) {
        fprintf(stderr, "mnemo train: out of memory for batches\n");
        return TRAIN_EXIT_FAILED;
    }
    return TRAIN_EXIT_OK;
}

static int parse_curriculum(const char *spec, int T, mn_curriculum *out) {
    out->n = 0;
    const char *p = spec;
    while (*p) {
        char *end;
        long long step = strtoll(p, &end, 10);
        if (end == p || *end != ':')
            return 1;
        p = end + 1;
        long turns = strtol(p, &end, 10);
        if (end == p || (*end && *end != ','))
            return 1;
        if (out->n == MN_CURRICULUM_MAX)
            return 1;
        out->start_step[out->n] = step;
        out->turns[out->n] = (int)turns;
        out->n++;
        p = *end ? end + 1 : end;
    }
    return mn_curriculum_validate(out, T) != MN_OK;
}

static int setup_model(run *r) {
    const train_config *c = r->cfg;
    const train_run_options *o = r->opts;
    if (mn_model_create(&c->model, &r->model) != MN_OK ||
        mn_trainer_create(r->model, c->batch, c->bptt, &r->trainer) != MN_OK)
        return fail("model");
    mn_checkpoint_load_options lo = {0};
    if (r->tok) {
        lo.check_tokenizer = 1;
        lo.tokenizer_hash = mn_tokenizer_hash(r->tok);
    }
    if (o->resume) {
        if (mn_checkpoint_load(o->resume, r->model, r->trainer, &r->st, &lo) != MN_OK)
            return fail("--resume");
        if (r->st.curriculum_stage >= r->curriculum.n) {
            fprintf(stderr, "mnemo train: --resume %s: curriculum stage %" PRId64 " does not exist in this config\n",
                    o->resume, r->st.curriculum_stage);
            return TRAIN_EXIT_FAILED;
        }
        memcpy(r->rng.s, r->st.rng, sizeof r->rng.s);
    } else {
        if (o->base) {
            if (mn_checkpoint_load(o->base, r->model, NULL, NULL, &lo) != MN_OK)
                return fail("--base");
        } else if (mn_model_init(r->model, (uint64_t)c->seed) != MN_OK) {
            return fail("init");
        }
        mn_rng_seed(&r->rng, (uint64_t)c->seed ^ TRAIN_RNG_SALT);
        memset(&r->st, 0, sizeof r->st);
    }
    if (c->freeze_decoder &&
        (mn_trainer_freeze(r->trainer, "decoder.", 1) != MN_OK || mn_trainer_freeze(r->trainer, "wte", 1) != MN_OK))
        return fail("freeze");
    return TRAIN_EXIT_OK;
}

static void cleanup(run *r) {
    if (r->metrics)
        fclose(r->metrics);
    mn_loader_free(r->loader);
    mn_loader_free(r->valid_loader);
    mn_shard_close(r->train_shard);
    mn_shard_close(r->valid_shard);
    free_text_probes(r);
    mn_tokenizer_free(r->tok);
    mn_trainer_free(r->trainer);
    mn_model_free(r->model);
    free(r->tokens), free(r->weights), free(r->lengths);
    free(r->config_json);
}

/* ---------------------------------------------------------------- progress */
static void format_duration(double s, char *buf, size_t cap) {
    if (!(s >= 0) || s > 1e7)
        snprintf(buf, cap, "?");
    else if (s >= 3600)
        snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else if (s >= 60)
        snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, cap, "%.0fs", s);
}

static void progress(run *r, float loss, double lr, double tok_per_s, int skipped) {
    const train_config *c = r->cfg;
    uint64_t done = r->st.step - r->start_step;
    double elapsed = now_s() - r->t_start;
    double eta = done ? elapsed / (double)done * (double)((uint64_t)c->steps - r->st.step) : -1;
    char eta_s[32];
    format_duration(eta, eta_s, sizeof eta_s);
    if (!r->tty && r->st.step % (uint64_t)c->log_interval != 0 && r->st.step != (uint64_t)c->steps && !skipped)
        return;
    printf("%sstep %" PRIu64 "/%" PRId64 "  loss %s%.4f  lr %.3g  %.0f tok/s  ETA %s%s", r->tty ? "\r" : "",
           r->st.step, c->steps, skipped ? "(skipped) " : "", (double)loss, lr, tok_per_s, eta_s,
           r->tty ? "   " : "\n");
    fflush(stdout);
}

/* ---------------------------------------------------------------- the loop */
int train_run(const train_config *cfg, const train_run_options *opts) {
    run r;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.opts = opts;
    r.recall = !strcmp(cfg->task, "recall");
    r.tty = isatty(STDOUT_FILENO);
    int rc = TRAIN_EXIT_OK;

    mn_device device;
    char notice[256];
    if (mn_device_resolve(cfg->device, &device, notice, sizeof notice) != MN_OK)
        return fail("--device");
    if (notice[0])
        fprintf(stderr, "%s\n", notice);
    if (device == MN_DEVICE_CUDA) {
        if (!strcmp(cfg->device, "cuda")) {
            fprintf(stderr, "mnemo train: --device cuda: training runs on the CPU only in this version\n");
            return TRAIN_EXIT_FAILED;
        }
        fprintf(stderr, "mnemo: a GPU is available, but training runs on the CPU in this version\n");
    }
    if (cfg->threads > 0) {
        omp_set_num_threads(cfg->threads);
        // products are split over the OpenMP team (src/cpu/op_gemm.c); a second pool of
        // OpenBLAS threads spinning next to it made steps up to 4x slower (docs/perf.md)
        openblas_set_num_threads(1);
    }
    if (cfg->curriculum[0]) {
        if (parse_curriculum(cfg->curriculum, cfg->turns, &r.curriculum)) {
            fprintf(stderr, "mnemo train: config field curriculum '%s' is not \"step:turns,...\" with stages "
                            "starting at step 0, steps increasing, turns non-decreasing and <= turns\n",
                    cfg->curriculum);
            return TRAIN_EXIT_USAGE;
        }
    } else if (mn_curriculum_doubling(cfg->curriculum_start_turns, cfg->turns, cfg->curriculum_stage_steps,
                                      &r.curriculum) != MN_OK) {
        return fail("curriculum");
    }
    r.schedule = (mn_lr_schedule){cfg->lr, cfg->min_lr, cfg->warmup_steps, cfg->steps};
    r.config_json = train_config_to_json(cfg, 0);
    if (!r.config_json) {
        fprintf(stderr, "mnemo train: out of memory\n");
        return TRAIN_EXIT_FAILED;
    }
    if ((rc = check_run_dir(cfg->run_dir)) != TRAIN_EXIT_OK ||
        (rc = setup_data(&r, opts->resume ? opts->resume : opts->base)) != TRAIN_EXIT_OK ||
        (rc = setup_model(&r)) != TRAIN_EXIT_OK) {
        cleanup(&r);
        return rc;
    }
    char metrics_path[TRAIN_PATH_CAP + 32];
    snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", cfg->run_dir);
    r.metrics = fopen(metrics_path, "a");
    if (!r.metrics) {
        fprintf(stderr, "mnemo train: cannot open %s: %s\n", metrics_path, strerror(errno));
        cleanup(&r);
        return TRAIN_EXIT_FAILED;
    }
    r.start_step = r.st.step;
    fprintf(r.metrics, "{\"event\": \"%s\", \"step\": %" PRIu64 "%s%s%s}\n", opts->resume ? "resume" : "start",
            r.st.step, opts->resume ? ", \"checkpoint\": \"" : "", opts->resume ? opts->resume : "",
            opts->resume ? "\"" : "");
    fflush(r.metrics);
    printf("model: %zu parameters; %s; run directory %s\n", mn_model_num_params(r.model),
           r.recall ? "synthetic recall episodes" : cfg->train_data, cfg->run_dir);
    if (opts->resume)
        printf("resuming %s at step %" PRIu64 " (stage %" PRId64 ", %" PRIu64 " tokens seen)\n", opts->resume,
               r.st.step, r.st.curriculum_stage, r.st.tokens_seen);
    fflush(stdout);

    /* the untrained baseline, so that the validation curve starts where training does */
    if (!opts->resume && cfg->eval_interval > 0 && (rc = evaluate(&r, 0)) != TRAIN_EXIT_OK) {
        cleanup(&r);
        return rc;
    }
    r.t_start = now_s();
    mn_adamw_config adamw = {0, (float)cfg->beta1, (float)cfg->beta2, (float)cfg->eps, (float)cfg->weight_decay,
                             (float)cfg->grad_clip};
    while (r.st.step < (uint64_t)cfg->steps) {
        double t0 = now_s();
        int stage = mn_curriculum_stage_at(&r.curriculum, (int64_t)r.st.step);
        if (stage != r.st.curriculum_stage) { /* a new stage reads its own data order from the start */
            r.st.curriculum_stage = stage;
            r.st.data_epoch = r.st.data_position = 0;
        }
        mn_batch batch;
        if (next_batch(&r, stage, &batch) != MN_OK) {
            rc = fail("data");
            break;
        }
        double lr = mn_lr_at(&r.schedule, (int64_t)r.st.step);
        adamw.lr = (float)lr;
        float loss = NAN, grad_norm = NAN;
        int skipped = 0;
        mn_status st = mn_forward_backward(r.trainer, &batch, &loss, NULL);
        if (st == MN_OK && in_list(opts->fault_nan_steps, opts->n_fault_nan_steps, (int64_t)r.st.step + 1))
            mn_trainer_grads(r.trainer)[0] = NAN; /* injected: as if the backward had overflowed */
        if (st == MN_OK)
            st = mn_adamw_step(r.trainer, &adamw, &grad_norm);
        if (st == MN_ERR_NUMERIC) {
            /* the step is skipped: AdamW has not touched params or moments */
            skipped = 1;
            r.st.nan_streak++;
            r.st.nan_skipped++;
        } else if (st != MN_OK) {
            rc = fail("training step");
            break;
        } else {
            r.st.nan_streak = 0;
        }
        int64_t tokens = 0;
        for (int i = 0; i < batch.T * batch.B; i++)
            tokens += batch.lengths[i];
        r.st.step++;
        r.st.tokens_seen += (uint64_t)tokens;
        memcpy(r.st.rng, r.rng.s, sizeof r.st.rng);
        double dt = now_s() - t0, tok_per_s = dt > 0 ? (double)tokens / dt : 0;
        fprintf(r.metrics, "{\"step\": %" PRIu64 ", ", r.st.step);
        if (isfinite(loss))
            fprintf(r.metrics, "\"loss\": %.9g, ", (double)loss);
        else
            fprintf(r.metrics, "\"loss\": null, ");
        if (isfinite(grad_norm))
            fprintf(r.metrics, "\"grad_norm\": %.9g, ", (double)grad_norm);
        else
            fprintf(r.metrics, "\"grad_norm\": null, ");
        fprintf(r.metrics,
                "\"lr\": %.9g, \"turns\": %d, \"stage\": %d, \"tokens\": %" PRId64 ", \"tokens_per_s\": %.1f, "
                "\"skipped\": %s}\n",
                lr, batch.T, stage, tokens, tok_per_s, skipped ? "true" : "false");
        fflush(r.metrics);
        progress(&r, loss, lr, tok_per_s, skipped);
        if (skipped) {
            fprintf(stderr, "%smnemo train: step %" PRIu64 " skipped: %s (%" PRId64 " in a row, %" PRId64 " in all)\n",
                    r.tty ? "\n" : "", r.st.step, mn_last_error(), r.st.nan_streak, r.st.nan_skipped);
            if (r.st.nan_streak >= cfg->max_nan_steps) {
                fprintf(stderr,
                        "mnemo train: aborting: %" PRId64 " steps in a row had a non-finite loss or gradient "
                        "(max_nan_steps = %d); parameters are from step %" PRIu64 ", the last checkpoint is %s\n",
                        r.st.nan_streak, cfg->max_nan_steps, r.st.step - (uint64_t)r.st.nan_streak,
                        r.last_checkpoint[0] ? r.last_checkpoint : "(none written by this run)");
                rc = TRAIN_EXIT_NONFINITE;
                break;
            }
        }
        /* the time limit ends the run like its last step: evaluation and a checkpoint */
        int out_of_time = cfg->time_limit_s > 0 && now_s() - r.t_start >= (double)cfg->time_limit_s;
        int final = r.st.step == (uint64_t)cfg->steps || out_of_time;
        if (cfg->eval_interval > 0 ? (r.st.step % (uint64_t)cfg->eval_interval == 0 || final) : final) {
            if ((rc = evaluate(&r, r.st.step)) != TRAIN_EXIT_OK)
                break;
        }
        int stop = opts->stop && *opts->stop;
        int periodic = cfg->checkpoint_interval > 0 && r.st.step % (uint64_t)cfg->checkpoint_interval == 0;
        if (periodic || final || stop) {
            if (save_checkpoint(&r) != 0) {
                if (final || stop) {
                    fprintf(stderr, "%smnemo train: error: %s\n", r.tty ? "\n" : "", mn_last_error());
                    fprintf(stderr, "mnemo train: the final checkpoint could not be written; the last saved one is %s\n",
                            r.last_checkpoint[0] ? r.last_checkpoint : "(none written by this run)");
                    rc = TRAIN_EXIT_FAILED;
                    break;
                }
                /* a periodic write failed (full disk, directory gone read-only): the
                 * previous checkpoints are intact, so keep training and try again later */
                fprintf(stderr, "%smnemo train: warning: %s; training continues, next attempt at step %" PRIu64 "\n",
                        r.tty ? "\n" : "", mn_last_error(), r.st.step + (uint64_t)cfg->checkpoint_interval);
            }
        }
        if (out_of_time && r.st.step < (uint64_t)cfg->steps) {
            printf("%stime limit of %" PRId64 " s reached after step %" PRIu64 " of %" PRId64 "; checkpoint %s\n",
                   r.tty ? "\n" : "", cfg->time_limit_s, r.st.step, cfg->steps, r.last_checkpoint);
            break;
        }
        if (stop) {
            fprintf(stderr, "%smnemo train: interrupted by %s after step %" PRIu64 "; checkpoint %s written; resume with "
                            "--resume %s\n",
                    r.tty ? "\n" : "", *opts->stop == SIGTERM ? "SIGTERM" : "SIGINT", r.st.step, r.last_checkpoint,
                    r.last_checkpoint);
            rc = TRAIN_EXIT_INTERRUPTED;
            break;
        }
    }
    if (rc == TRAIN_EXIT_OK) {
        if (r.tty)
            printf("\n");
        printf("done: %" PRIu64 " steps, %" PRIu64 " tokens, %" PRId64 " skipped; %.1f s; checkpoint %s\n", r.st.step,
               r.st.tokens_seen, r.st.nan_skipped, now_s() - r.t_start, r.last_checkpoint);
    }
    cleanup(&r);
    return rc;
}
