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
#include "dist.h"
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
    /* the global batch (T, B, L), identical on every rank: synthetic or compacted shard batches */
    int32_t *tokens, *lengths;
    float *weights;
    int max_len;
    /* data parallel: rank r trains episodes [r * local_B, (r + 1) * local_B) of each global
     * batch, as grad_accum micro-batches of micro_B (docs/distributed.md) */
    dist *d;
    int world, rank, local_B, micro_B;
    int32_t *mtokens, *mlengths; /* one micro-batch (T, micro_B, L) */
    float *mweights;
    float *accum;                /* (num_params) gradient sum over micro-batches */
    FILE *episode_log;
    double comm_total_s, step_total_s;
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

/* Copies episodes [e0, e0 + n) of a (T, B, L) batch into (T, n, L') buffers. compact: L' is the
 * slice's longest turn (turns are often far shorter than max_turn_tokens, and compute grows with
 * the padded length); else L' = L. */
static void slice_batch(const mn_batch *in, int e0, int n, int compact, int32_t *tokens, int32_t *lengths,
                        float *weights, mn_batch *out) {
    int L = in->max_len;
    if (compact) {
        L = 1;
        for (int t = 0; t < in->T; t++)
            for (int e = e0; e < e0 + n; e++)
                if (in->lengths[t * in->B + e] > L)
                    L = in->lengths[t * in->B + e];
    }
    for (int t = 0; t < in->T; t++)
        for (int i = 0; i < n; i++) {
            size_t src = (size_t)t * in->B + (size_t)(e0 + i), dst = (size_t)t * n + (size_t)i;
            memcpy(tokens + dst * L, in->tokens + src * in->max_len, (size_t)L * sizeof(int32_t));
            if (in->loss_weights)
                memcpy(weights + dst * L, in->loss_weights + src * in->max_len, (size_t)L * sizeof(float));
            else
                for (int j = 0; j < L; j++)
                    weights[dst * L + j] = 1.0f;
            lengths[dst] = in->lengths[src];
        }
    *out = (mn_batch){.B = n, .T = in->T, .max_len = L, .tokens = tokens, .lengths = lengths, .loss_weights = weights};
}

/* The next global batch: the same episodes in the same order on every rank. */
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
    MN_TRY(mn_loader_next(r->loader, batch));
    mn_loader_cursor c = mn_loader_get_cursor(r->loader);
    r->st.data_epoch = c.epoch;
    r->st.data_position = c.position;
    return MN_OK;
}

/* This rank's micro-batch m of the global batch. */
static void micro_batch(run *r, const mn_batch *global, int m, mn_batch *out) {
    slice_batch(global, r->rank * r->local_B + m * r->micro_B, r->micro_B, !r->recall, r->mtokens, r->mlengths,
                r->mweights, out);
}

/* Testing aid (MNEMO_EPISODE_LOG): one line per trained episode, its global index in the
 * batch and a hash of its tokens, so that a test can prove every rank took its own slice. */
static void log_episodes(run *r, const mn_batch *b, int first_global) {
    for (int e = 0; e < b->B; e++) {
        uint64_t h = 1469598103934665603ull; /* FNV-1a */
        for (int t = 0; t < b->T; t++) {
            int len = b->lengths[t * b->B + e];
            const int32_t *tok = b->tokens + ((size_t)t * b->B + e) * b->max_len;
            for (int i = -1; i < len; i++) {
                uint32_t v = i < 0 ? (uint32_t)len : (uint32_t)tok[i];
                for (int k = 0; k < 4; k++) {
                    h ^= (v >> (8 * k)) & 0xff;
                    h *= 1099511628211ull;
                }
            }
        }
        fprintf(r->episode_log, "%" PRIu64 " %d %016" PRIx64 "\n", r->st.step + 1, first_global + e, h);
    }
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

/* The loss of a whole validation batch, in pieces of the trainer's micro-batch size: every
 * rank evaluates the same batches (cheaper than keeping the ranks apart), weighted by targets. */
static mn_status eval_batch_loss(run *r, const mn_batch *b, float *loss) {
    if (r->micro_B >= b->B) {
        mn_batch s;
        slice_batch(b, 0, b->B, !r->recall, r->mtokens, r->mlengths, r->mweights, &s);
        return mn_forward(r->trainer, &s, loss, NULL);
    }
    double sum = 0, weight = 0;
    for (int e0 = 0; e0 < b->B; e0 += r->micro_B) {
        int n = b->B - e0 < r->micro_B ? b->B - e0 : r->micro_B;
        mn_batch s;
        slice_batch(b, e0, n, !r->recall, r->mtokens, r->mlengths, r->mweights, &s);
        float part;
        MN_TRY(mn_forward(r->trainer, &s, &part, NULL));
        double w = mn_batch_loss_weight(&s);
        sum += (double)part * w;
        weight += w;
    }
    *loss = (float)(sum / weight);
    return MN_OK;
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
            MN_TRY(eval_batch_loss(r, &b, &loss));
            sum += loss;
            n++;
        }
    } else if (r->valid_loader) {
        MN_TRY(mn_loader_set_cursor(r->valid_loader, (mn_loader_cursor){0, 0})); /* the same batches each time */
        for (int64_t i = 0; i < c->eval_batches; i++) {
            mn_batch raw;
            MN_TRY(mn_loader_next(r->valid_loader, &raw));
            float loss;
            MN_TRY(eval_batch_loss(r, &raw, &loss));
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
    if (batches || n) { /* nothing to say without validation data or probes */
        if (r->tty)
            printf("\n");
        printf("eval step %" PRIu64 ":", step);
        if (batches)
            printf(" valid loss %.4f (%" PRId64 " batches)", loss, batches);
        if (n)
            printf(" | probes %" PRId64 ": accuracy %.1f%% with memory, %.1f%% with R reset to R_0", n,
                   100.0 * ok / n, 100.0 * ok_reset / n);
        printf(" | %.1f s\n", now_s() - t0);
    }
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

/* Testing: a slow disk, so that a test can kill a rank while it writes a checkpoint. */
static int fault_sleep(void *ctx, const char *dataset) {
    (void)dataset;
    int ms = *(const int *)ctx;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    return 0;
}

/* What every rank restates at a checkpoint: its view of the loop's state. */
typedef struct {
    uint64_t step, rng[4], data_epoch, data_position, stage;
} rank_view;

/* Writes ckpt-<step>.h5 (rank 0) and prunes old ones. Every rank takes part: the ranks' views
 * of the data cursor and RNG are checked to agree, ZeRO-1 moment shards are gathered, and the
 * outcome is shared, so that all ranks go on (or stop) together. 0 on success; < 0: the ranks
 * cannot talk any more (abort). */
static int save_checkpoint(run *r) {
    char path[TRAIN_PATH_CAP + 64];
    char what[64];
    snprintf(what, sizeof what, "checkpoint at step %" PRIu64, r->st.step);
    rank_view mine = {r->st.step, {r->st.rng[0], r->st.rng[1], r->st.rng[2], r->st.rng[3]}, r->st.data_epoch,
                      r->st.data_position, (uint64_t)r->st.curriculum_stage};
    rank_view *views = calloc((size_t)r->world, sizeof *views);
    uint64_t *cursors = calloc((size_t)r->world * MN_DIST_CURSOR_FIELDS, sizeof *cursors);
    int ok = 1;
    if (!views || !cursors) {
        free(views), free(cursors);
        mn_fail(MN_ERR_NOMEM, "%s: out of memory", what);
        return -1;
    }
    if (dist_allgather(r->d, &mine, sizeof mine, views, what) != MN_OK) {
        free(views), free(cursors);
        return -1;
    }
    for (int k = 0; k < r->world; k++) {
        if (memcmp(&views[k], &views[0], sizeof mine)) {
            mn_fail(MN_ERR_MISMATCH, "%s: rank %d's step, RNG or data cursor differs from rank 0's: the ranks diverged",
                    what, k);
            free(views), free(cursors);
            return -1;
        }
        uint64_t *c = cursors + (size_t)k * MN_DIST_CURSOR_FIELDS;
        c[0] = views[k].data_epoch;
        c[1] = views[k].data_position;
        c[2] = (uint64_t)k * (uint64_t)r->local_B;
        c[3] = (uint64_t)r->local_B;
    }
    /* ZeRO-1: rank 0 gathers the moment shards, so that the file has one process's layout */
    size_t P = mn_model_num_params(r->model);
    float *full_m = NULL, *full_v = NULL;
    if (mn_trainer_moments_range(r->trainer, NULL, NULL)) {
        if (r->rank == 0 && (!(full_m = malloc(P * sizeof(float))) || !(full_v = malloc(P * sizeof(float))))) {
            free(full_m), free(views), free(cursors);
            mn_fail(MN_ERR_NOMEM, "%s: out of memory gathering the moments", what);
            return -1;
        }
        if (dist_gather_shards(r->d, mn_trainer_adam_m(r->trainer), P, full_m, 0, what) != MN_OK ||
            dist_gather_shards(r->d, mn_trainer_adam_v(r->trainer), P, full_v, 0, what) != MN_OK) {
            free(full_m), free(full_v), free(views), free(cursors);
            return -1;
        }
    }
    if (r->rank == 0) {
        mn_checkpoint_dist dl = {r->world, r->cfg->zero, r->cfg->grad_accum, cursors};
        fault_state fault = {3}; /* a few datasets written, then "the disk is full" */
        mn_checkpoint_save_options o = {.train_config_json = r->config_json, .tokenizer = r->tok, .dist = &dl,
                                        .adam_m = full_m, .adam_v = full_v};
        if (in_list(r->opts->fault_checkpoint_steps, r->opts->n_fault_checkpoint_steps, (int64_t)r->st.step)) {
            o.fault = fault_after_datasets;
            o.fault_ctx = &fault;
        } else if (r->opts->fault_checkpoint_sleep_ms > 0) {
            o.fault = fault_sleep;
            o.fault_ctx = (void *)&r->opts->fault_checkpoint_sleep_ms;
        }
        ok = mn_checkpoint_run_path(r->cfg->run_dir, r->st.step, path, sizeof path) == MN_OK &&
             mn_checkpoint_save(path, r->model, r->trainer, &r->st, &o) == MN_OK;
    }
    free(views), free(cursors), free(full_m), free(full_v);
    /* the others wait here for rank 0's write, so that nobody runs ahead of a checkpoint */
    int32_t shared = ok;
    if (dist_bcast(r->d, &shared, sizeof shared, 0, what) != MN_OK)
        return -1;
    if (!shared) {
        if (r->rank != 0)
            mn_fail(MN_ERR_IO, "%s: rank 0 could not write it", what);
        return 1;
    }
    if (r->rank != 0)
        return 0;
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
    size_t cells = (size_t)c->batch * (size_t)c->turns, mcells = (size_t)r->micro_B * (size_t)c->turns;
    r->tokens = malloc(cells * (size_t)r->max_len * sizeof(int32_t));
    r->weights = malloc(cells * (size_t)r->max_len * sizeof(float));
    r->lengths = malloc(cells * sizeof(int32_t));
    r->mtokens = malloc(mcells * (size_t)c->model.max_turn_tokens * sizeof(int32_t));
    r->mweights = malloc(mcells * (size_t)c->model.max_turn_tokens * sizeof(float));
    r->mlengths = malloc(mcells * sizeof(int32_t));
    if (!r->tokens || !r->weights || !r->lengths || !r->mtokens || !r->mweights || !r->mlengths) {
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

/* The checkpoint's per-rank cursors restate its global cursor; the same world size must find
 * its own slice in them, another world size re-shards the global batch (the cursor is global). */
static int check_resume_layout(run *r) {
    mn_checkpoint_dist dl;
    int found = 0;
    if (mn_checkpoint_read_dist(r->opts->resume, &dl, &found) != MN_OK)
        return fail("--resume");
    if (!found)
        return TRAIN_EXIT_OK; /* saved by one process before /train/dist existed */
    int rc = TRAIN_EXIT_OK;
    for (int64_t k = 0; k < dl.world_size && rc == TRAIN_EXIT_OK; k++) {
        const uint64_t *c = dl.rank_cursors + k * MN_DIST_CURSOR_FIELDS;
        if (c[0] != r->st.data_epoch || c[1] != r->st.data_position) {
            fprintf(stderr, "mnemo train: --resume %s: rank %" PRId64 "'s data cursor (%" PRIu64 ", %" PRIu64
                            ") differs from the global one (%" PRIu64 ", %" PRIu64 ")\n",
                    r->opts->resume, k, c[0], c[1], r->st.data_epoch, r->st.data_position);
            rc = TRAIN_EXIT_FAILED;
        }
    }
    if (rc == TRAIN_EXIT_OK && dl.world_size == r->world) {
        const uint64_t *c = dl.rank_cursors + (size_t)r->rank * MN_DIST_CURSOR_FIELDS;
        if (c[2] != (uint64_t)r->rank * (uint64_t)r->local_B || c[3] != (uint64_t)r->local_B) {
            fprintf(stderr, "mnemo train: --resume %s: rank %d trained episodes %" PRIu64 "..+%" PRIu64
                            " of each batch, now %d..+%d (another batch size?)\n",
                    r->opts->resume, r->rank, c[2], c[3], r->rank * r->local_B, r->local_B);
            rc = TRAIN_EXIT_FAILED;
        }
    } else if (rc == TRAIN_EXIT_OK && r->rank == 0) {
        printf("re-sharding: the checkpoint was trained on %" PRId64 " rank(s), this run has %d; each rank now "
               "trains %d of the %d episodes of every batch from the same global data cursor\n",
               dl.world_size, r->world, r->local_B, r->cfg->batch);
    }
    mn_checkpoint_dist_free(&dl);
    return rc;
}

static int setup_model(run *r) {
    const train_config *c = r->cfg;
    const train_run_options *o = r->opts;
    if (mn_model_create(&c->model, &r->model) != MN_OK ||
        mn_trainer_create(r->model, r->micro_B, c->bptt, &r->trainer) != MN_OK ||
        mn_trainer_set_reconstruction(r->trainer, (float)c->reconstruct_weight) != MN_OK)
        return fail("model");
    if (c->grad_accum > 1 && !(r->accum = malloc(mn_model_num_params(r->model) * sizeof(float)))) {
        fprintf(stderr, "mnemo train: out of memory for the gradient accumulator\n");
        return TRAIN_EXIT_FAILED;
    }
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
        if (check_resume_layout(r) != TRAIN_EXIT_OK)
            return TRAIN_EXIT_FAILED;
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
    if (c->zero && r->world > 1) { /* ZeRO-1: this rank keeps only its shard of the moments */
        size_t lo, hi;
        dist_shard_range(mn_model_num_params(r->model), r->world, r->rank, &lo, &hi);
        if (mn_trainer_shard_moments(r->trainer, lo, hi) != MN_OK)
            return fail("zero");
    }
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
    free(r->mtokens), free(r->mweights), free(r->mlengths);
    free(r->accum);
    if (r->episode_log)
        fclose(r->episode_log);
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

static void progress(run *r, float loss, double lr, double tok_per_s, double comm_share, int skipped) {
    const train_config *c = r->cfg;
    uint64_t done = r->st.step - r->start_step;
    double elapsed = now_s() - r->t_start;
    double eta = done ? elapsed / (double)done * (double)((uint64_t)c->steps - r->st.step) : -1;
    char eta_s[32];
    format_duration(eta, eta_s, sizeof eta_s);
    if (!r->tty && r->st.step % (uint64_t)c->log_interval != 0 && r->st.step != (uint64_t)c->steps && !skipped)
        return;
    char comm[48] = "";
    if (r->world > 1)
        snprintf(comm, sizeof comm, "  comm %.0f%%", 100.0 * comm_share);
    printf("%sstep %" PRIu64 "/%" PRId64 "  loss %s%.4f  lr %.3g  %.0f tok/s%s  ETA %s%s", r->tty ? "\r" : "",
           r->st.step, c->steps, skipped ? "(skipped) " : "", (double)loss, lr, tok_per_s, comm, eta_s,
           r->tty ? "   " : "\n");
    fflush(stdout);
}

/* ---------------------------------------------------------------- one step */
/* What each rank reports after its forward/backward; every rank then decides alike. */
typedef struct {
    double loss_sum, tokens;
    double recon_loss;   /* reconstruction loss over the global weight (0: off) */
    int32_t status;      /* 0 ok, 1 non-finite (the step is skipped), 2 failed */
    int32_t stop;        /* a stop signal arrived */
    int32_t out_of_time; /* rank 0's clock decides */
    int32_t pad;
} step_report;

typedef struct {
    float loss, grad_norm;
    double recon_loss;
    int skipped, stop, out_of_time;
    int64_t tokens;
} step_result;

/* One optimizer step over the global batch: each rank's micro-batches (gradients scaled by the
 * global target weight, summed in order), the rank-ordered reduction, then AdamW (ZeRO-1: on
 * this rank's shard, then the parameters are gathered). Returns TRAIN_EXIT_OK or a failure. */
static int train_step(run *r, const mn_batch *global, mn_adamw_config *adamw, step_result *res) {
    const train_config *c = r->cfg;
    const int A = c->grad_accum;
    char what[96];
    memset(res, 0, sizeof *res);
    res->loss = res->grad_norm = NAN;
    size_t P = mn_model_num_params(r->model);
    /* 1. the global weight total: every micro-batch's, summed in (rank, micro-batch) order */
    double wmine[64], *wall = malloc((size_t)r->world * (size_t)A * sizeof(double));
    double *wm = A <= 64 ? wmine : malloc((size_t)A * sizeof(double));
    if (!wall || !wm) {
        free(wall);
        if (wm != wmine)
            free(wm);
        fprintf(stderr, "mnemo train: out of memory\n");
        return TRAIN_EXIT_FAILED;
    }
    for (int m = 0; m < A; m++) {
        mn_batch b;
        micro_batch(r, global, m, &b);
        wm[m] = mn_batch_loss_weight(&b);
    }
    snprintf(what, sizeof what, "step %" PRIu64 ": loss weights", r->st.step + 1);
    mn_status st = dist_allgather(r->d, wm, (size_t)A * sizeof(double), wall, what);
    double W = 0;
    for (int i = 0; i < r->world * A; i++)
        W += wall[i];
    free(wall);
    if (wm != wmine)
        free(wm);
    if (st != MN_OK)
        return fail(NULL);
    /* 2. forward/backward of each micro-batch */
    step_report mine = {0};
    mn_status local = W > 0 ? MN_OK : mn_fail(MN_ERR_INVALID_ARG, "the global batch has no loss targets");
    float *grads = mn_trainer_grads(r->trainer);
    for (int m = 0; local == MN_OK && m < A; m++) {
        mn_batch b;
        micro_batch(r, global, m, &b);
        double ls = 0;
        local = mn_forward_backward_scaled(r->trainer, &b, 1.0 / W, &ls);
        if (local != MN_OK)
            break;
        if (r->episode_log)
            log_episodes(r, &b, r->rank * r->local_B + m * r->micro_B);
        mine.loss_sum += ls;
        mine.recon_loss += mn_trainer_reconstruction_loss(r->trainer);
        for (int i = 0; i < b.T * b.B; i++)
            mine.tokens += b.lengths[i];
        if (A > 1) {
            if (m == 0)
                memcpy(r->accum, grads, P * sizeof(float));
            else
                for (size_t i = 0; i < P; i++)
                    r->accum[i] += grads[i];
        }
    }
    if (local == MN_OK && A > 1)
        memcpy(grads, r->accum, P * sizeof(float));
    if (local == MN_OK && in_list(r->opts->fault_nan_steps, r->opts->n_fault_nan_steps, (int64_t)r->st.step + 1))
        grads[0] = NAN; /* injected: as if the backward had overflowed */
    char local_error[512] = "";
    if (local != MN_OK)
        snprintf(local_error, sizeof local_error, "%s", mn_last_error());
    mine.status = local == MN_OK ? 0 : local == MN_ERR_NUMERIC ? 1 : 2;
    mine.stop = r->opts->stop && *r->opts->stop;
    mine.out_of_time = c->time_limit_s > 0 && now_s() - r->t_start >= (double)c->time_limit_s;
    /* 3. agree on the outcome */
    step_report *all = malloc((size_t)r->world * sizeof *all);
    if (!all) {
        fprintf(stderr, "mnemo train: out of memory\n");
        return TRAIN_EXIT_FAILED;
    }
    snprintf(what, sizeof what, "step %" PRIu64 ": step reports", r->st.step + 1);
    st = dist_allgather(r->d, &mine, sizeof mine, all, what);
    if (st != MN_OK) {
        free(all);
        return fail(NULL);
    }
    double loss_sum = 0, tokens = 0;
    int worst = 0, failed_rank = -1;
    for (int k = 0; k < r->world; k++) {
        loss_sum += all[k].loss_sum;
        res->recon_loss += all[k].recon_loss;
        tokens += all[k].tokens;
        res->stop |= all[k].stop;
        if (all[k].status > worst)
            worst = all[k].status;
        if (all[k].status == 2 && failed_rank < 0)
            failed_rank = k;
    }
    res->out_of_time = all[0].out_of_time;
    free(all);
    res->tokens = (int64_t)tokens;
    if (worst == 2) {
        if (mine.status == 2 && r->world > 1)
            fprintf(stderr, "mnemo train: rank %d: training step: %s\n", r->rank, local_error);
        else if (mine.status == 2)
            fprintf(stderr, "mnemo train: training step: %s\n", local_error);
        else
            fprintf(stderr, "mnemo train: rank %d: rank %d failed in step %" PRIu64 "; stopping\n", r->rank,
                    failed_rank, r->st.step + 1);
        return TRAIN_EXIT_FAILED;
    }
    if (worst == 1) { /* some rank's loss or gradient was not finite: every rank skips */
        mn_fail(MN_ERR_NUMERIC, "%s", mine.status == 1 && local_error[0] ? local_error
                                                                           : "a non-finite loss on another rank");
        res->skipped = 1;
        return TRAIN_EXIT_OK;
    }
    res->loss = (float)(loss_sum * (1.0 / W)); /* as mn_forward_backward: the sum times the scale */
    /* 4. reduce, clip, update */
    snprintf(what, sizeof what, "step %" PRIu64 ": gradient reduce-scatter", r->st.step + 1);
    if (dist_reduce_scatter_sum(r->d, grads, P, what) != MN_OK)
        return fail(NULL);
    if (c->zero) {
        size_t lo, hi;
        dist_shard_range(P, r->world, r->rank, &lo, &hi);
        double part = mn_grad_sumsq_range(r->trainer, lo, hi), *parts = malloc((size_t)r->world * sizeof(double));
        if (!parts) {
            fprintf(stderr, "mnemo train: out of memory\n");
            return TRAIN_EXIT_FAILED;
        }
        snprintf(what, sizeof what, "step %" PRIu64 ": gradient norm", r->st.step + 1);
        st = dist_allgather(r->d, &part, sizeof part, parts, what);
        double sumsq = 0;
        for (int k = 0; k < r->world; k++)
            sumsq += parts[k];
        free(parts);
        if (st != MN_OK)
            return fail(NULL);
        res->grad_norm = (float)sqrt(sumsq);
        st = mn_adamw_step_shard(r->trainer, adamw, sumsq, lo, hi);
        if (st == MN_OK) {
            snprintf(what, sizeof what, "step %" PRIu64 ": parameter all-gather", r->st.step + 1);
            if (dist_allgather_shards(r->d, mn_model_params(r->model), P, what) != MN_OK)
                return fail(NULL);
        }
    } else {
        snprintf(what, sizeof what, "step %" PRIu64 ": gradient all-gather", r->st.step + 1);
        if (dist_allgather_shards(r->d, grads, P, what) != MN_OK)
            return fail(NULL);
        st = mn_adamw_step(r->trainer, adamw, &res->grad_norm);
    }
    if (st == MN_ERR_NUMERIC) /* the same reduced gradient everywhere: every rank skips */
        res->skipped = 1;
    else if (st != MN_OK)
        return fail("training step");
    return TRAIN_EXIT_OK;
}

/* ---------------------------------------------------------------- the loop */
int train_run(const train_config *cfg, const train_run_options *opts) {
    run r;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.opts = opts;
    r.recall = !strcmp(cfg->task, "recall");
    r.tty = isatty(STDOUT_FILENO);
    r.d = opts->dist;
    r.world = dist_size(r.d);
    r.rank = dist_rank(r.d);
    int rc = TRAIN_EXIT_OK;

    if (cfg->batch % (r.world * cfg->grad_accum)) {
        fprintf(stderr,
                "mnemo train: batch %d is not divisible by %d rank(s) x grad_accum %d: every rank must train the "
                "same number of episodes\n",
                cfg->batch, r.world, cfg->grad_accum);
        return TRAIN_EXIT_USAGE;
    }
    r.local_B = cfg->batch / r.world;
    r.micro_B = r.local_B / cfg->grad_accum;
    dist_set_timeout(r.d, cfg->comm_timeout);
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
        if (r.rank == 0)
            fprintf(stderr, "mnemo: a GPU is available, but training runs on the CPU in this version\n");
    }
    if (cfg->threads > 0) {
        omp_set_num_threads(cfg->threads);
        openblas_set_num_threads(cfg->threads);
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
    /* every rank must train the same thing: compare the effective configs' hashes */
    uint64_t hash = 1469598103934665603ull, *hashes = calloc((size_t)r.world, sizeof *hashes);
    for (const char *p = r.config_json; *p; p++)
        hash = (hash ^ (unsigned char)*p) * 1099511628211ull;
    if (!hashes || dist_allgather(r.d, &hash, sizeof hash, hashes, "comparing the ranks' configs") != MN_OK) {
        free(hashes);
        free(r.config_json);
        return fail(NULL);
    }
    for (int k = 1; k < r.world; k++)
        if (hashes[k] != hashes[0]) {
            fprintf(stderr, "mnemo train: rank %d's effective config differs from rank 0's; every rank needs the "
                            "same options\n", k);
            free(hashes);
            free(r.config_json);
            return TRAIN_EXIT_USAGE;
        }
    free(hashes);
    if ((r.rank == 0 && (rc = check_run_dir(cfg->run_dir)) != TRAIN_EXIT_OK) ||
        (rc = setup_data(&r, opts->resume ? opts->resume : opts->base)) != TRAIN_EXIT_OK ||
        (rc = setup_model(&r)) != TRAIN_EXIT_OK) {
        cleanup(&r);
        return rc;
    }
    if (opts->episode_log) {
        char path[TRAIN_PATH_CAP + 32];
        snprintf(path, sizeof path, "%s.%d", opts->episode_log, r.rank);
        if (!(r.episode_log = fopen(path, "a"))) {
            fprintf(stderr, "mnemo train: cannot open the episode log %s: %s\n", path, strerror(errno));
            cleanup(&r);
            return TRAIN_EXIT_FAILED;
        }
    }
    if (r.rank == 0) {
        char metrics_path[TRAIN_PATH_CAP + 32];
        snprintf(metrics_path, sizeof metrics_path, "%s/metrics.jsonl", cfg->run_dir);
        r.metrics = fopen(metrics_path, "a");
        if (!r.metrics) {
            fprintf(stderr, "mnemo train: cannot open %s: %s\n", metrics_path, strerror(errno));
            cleanup(&r);
            return TRAIN_EXIT_FAILED;
        }
        fprintf(r.metrics, "{\"event\": \"%s\", \"step\": %" PRIu64 "%s%s%s, \"ranks\": %d}\n",
                opts->resume ? "resume" : "start", r.st.step, opts->resume ? ", \"checkpoint\": \"" : "",
                opts->resume ? opts->resume : "", opts->resume ? "\"" : "", r.world);
        fflush(r.metrics);
    }
    r.start_step = r.st.step;
    printf("model: %zu parameters; %s; run directory %s\n", mn_model_num_params(r.model),
           r.recall ? "synthetic recall episodes" : cfg->train_data, cfg->run_dir);
    if (r.world > 1)
        printf("data parallel: %d ranks (%s), %d episodes each of the global batch of %d, %d micro-batch(es) of "
               "%d; %s\n",
               r.world, dist_backend_name(r.d), r.local_B, cfg->batch, cfg->grad_accum, r.micro_B,
               cfg->zero ? "ZeRO-1 (optimizer sharded)" : "every rank runs the full optimizer");
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
    dist_take_comm_seconds(r.d);
    uint64_t run_tokens = 0;
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
        step_result res;
        if ((rc = train_step(&r, &batch, &adamw, &res)) != TRAIN_EXIT_OK)
            break;
        float loss = res.loss, grad_norm = res.grad_norm;
        int skipped = res.skipped;
        if (skipped) {
            r.st.nan_streak++;
            r.st.nan_skipped++;
        } else {
            r.st.nan_streak = 0;
        }
        int64_t tokens = res.tokens;
        r.st.step++;
        r.st.tokens_seen += (uint64_t)tokens;
        run_tokens += (uint64_t)tokens;
        memcpy(r.st.rng, r.rng.s, sizeof r.st.rng);
        double dt = now_s() - t0, tok_per_s = dt > 0 ? (double)tokens / dt : 0;
        double comm_s = dist_take_comm_seconds(r.d), comm_share = dt > 0 ? comm_s / dt : 0;
        r.comm_total_s += comm_s;
        r.step_total_s += dt;
        if (r.metrics) {
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
                    "\"lr\": %.9g, \"turns\": %d, \"stage\": %d, \"tokens\": %" PRId64 ", \"tokens_per_s\": %.1f, ",
                    lr, batch.T, stage, tokens, tok_per_s);
            if (r.world > 1)
                fprintf(r.metrics, "\"comm_s\": %.6f, \"comm_share\": %.4f, ", comm_s, comm_share);
            if (cfg->reconstruct_weight > 0 && !skipped)
                fprintf(r.metrics, "\"recon_loss\": %.9g, ", res.recon_loss);
            fprintf(r.metrics, "\"skipped\": %s}\n", skipped ? "true" : "false");
            fflush(r.metrics);
        }
        progress(&r, loss, lr, tok_per_s, comm_share, skipped);
        if (skipped) {
            if (r.rank == 0)
                fprintf(stderr, "%smnemo train: step %" PRIu64 " skipped: %s (%" PRId64 " in a row, %" PRId64
                                " in all)\n",
                        r.tty ? "\n" : "", r.st.step, mn_last_error(), r.st.nan_streak, r.st.nan_skipped);
            if (r.st.nan_streak >= cfg->max_nan_steps) {
                if (r.rank == 0)
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
        int out_of_time = res.out_of_time;
        int final = r.st.step == (uint64_t)cfg->steps || out_of_time;
        if (cfg->eval_interval > 0 ? (r.st.step % (uint64_t)cfg->eval_interval == 0 || final) : final) {
            if ((rc = evaluate(&r, r.st.step)) != TRAIN_EXIT_OK)
                break;
        }
        int stop = res.stop;
        int periodic = cfg->checkpoint_interval > 0 && r.st.step % (uint64_t)cfg->checkpoint_interval == 0;
        if (periodic || final || stop) {
            int saved = save_checkpoint(&r);
            if (saved < 0) {
                rc = fail(NULL);
                break;
            }
            if (saved != 0) {
                if (final || stop) {
                    if (r.rank == 0) {
                        fprintf(stderr, "%smnemo train: error: %s\n", r.tty ? "\n" : "", mn_last_error());
                        fprintf(stderr,
                                "mnemo train: the final checkpoint could not be written; the last saved one is %s\n",
                                r.last_checkpoint[0] ? r.last_checkpoint : "(none written by this run)");
                    }
                    rc = TRAIN_EXIT_FAILED;
                    break;
                }
                /* a periodic write failed (full disk, directory gone read-only): the
                 * previous checkpoints are intact, so keep training and try again later */
                if (r.rank == 0)
                    fprintf(stderr, "%smnemo train: warning: %s; training continues, next attempt at step %" PRIu64
                                    "\n",
                            r.tty ? "\n" : "", mn_last_error(), r.st.step + (uint64_t)cfg->checkpoint_interval);
            }
        }
        if (out_of_time && r.st.step < (uint64_t)cfg->steps) {
            printf("%stime limit of %" PRId64 " s reached after step %" PRIu64 " of %" PRId64 "; checkpoint %s\n",
                   r.tty ? "\n" : "", cfg->time_limit_s, r.st.step, cfg->steps, r.last_checkpoint);
            break;
        }
        if (stop) {
            if (r.rank == 0)
                fprintf(stderr, "%smnemo train: interrupted by %s after step %" PRIu64 "; checkpoint %s written; "
                                "resume with --resume %s\n",
                        r.tty ? "\n" : "",
                        !opts->stop || !*opts->stop ? "a signal on another rank"
                        : *opts->stop == SIGINT     ? "SIGINT"
                        : *opts->stop == SIGUSR1    ? "SIGUSR1"
                                                    : "SIGTERM",
                        r.st.step, r.last_checkpoint, r.last_checkpoint);
            rc = TRAIN_EXIT_INTERRUPTED;
            break;
        }
    }
    if (rc == TRAIN_EXIT_OK) {
        if (r.tty)
            printf("\n");
        printf("done: %" PRIu64 " steps, %" PRIu64 " tokens, %" PRId64 " skipped; %.1f s; checkpoint %s\n", r.st.step,
               r.st.tokens_seen, r.st.nan_skipped, now_s() - r.t_start, r.last_checkpoint);
        if (r.world > 1 && r.step_total_s > 0)
            printf("data parallel: %d ranks, %.0f tok/s over the run's steps, communication %.1f%% of step time\n",
                   r.world, (double)run_tokens / r.step_total_s, 100.0 * r.comm_total_s / r.step_total_s);
    }
    cleanup(&r);
    return rc;
}
