/* Recall and LM evaluation over canonical dialogues (src/eval/eval.h, docs/eval.md). */
#include "eval/eval.h"

#include <inttypes.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "model/model_internal.h"
#include "model/score.h"
#include "text/shard.h"

int mn_eval_bucket(int64_t v, int n_buckets) {
    if (v < 1)
        return -1;
    int b = 0;
    while (b < n_buckets - 1 && v >= ((int64_t)2 << b))
        b++;
    return b;
}

void mn_eval_bucket_range(int b, int n_buckets, int64_t *lo, int64_t *hi) {
    *lo = (int64_t)1 << b;
    *hi = b == n_buckets - 1 ? -1 : (int64_t)2 << b;
}

void mn_eval_bucket_label(int b, int n_buckets, char *buf, size_t cap) {
    int64_t lo, hi;
    mn_eval_bucket_range(b, n_buckets, &lo, &hi);
    if (hi < 0)
        snprintf(buf, cap, "%" PRId64 "+", lo);
    else if (hi - 1 == lo)
        snprintf(buf, cap, "%" PRId64, lo);
    else
        snprintf(buf, cap, "%" PRId64 "-%" PRId64, lo, hi - 1);
}

void mn_eval_options_default(mn_eval_options *o, int n_slots) {
    memset(o, 0, sizeof *o);
    o->variants[0] = (mn_eval_variant_spec){MN_EVAL_MEMORY, 0};
    o->variants[1] = (mn_eval_variant_spec){MN_EVAL_NO_MEMORY, 0};
    o->variants[2] = (mn_eval_variant_spec){MN_EVAL_WINDOW, n_slots};
    o->variants[3] = (mn_eval_variant_spec){MN_EVAL_WINDOW, 4 * n_slots};
    o->variants[4] = (mn_eval_variant_spec){MN_EVAL_FULL, 0};
    o->n_variants = 5;
    o->generate = 1;
    o->max_gen_tokens = 32;
    o->lm = 1;
}

mn_status mn_eval_parse_variants(mn_eval_options *o, const char *modes, const char *windows) {
    int win[MN_EVAL_MAX_VARIANTS], n_win = 0;
    if (windows) {
        const char *p = windows;
        while (*p) {
            char *end;
            long w = strtol(p, &end, 10);
            if (end == p || w < 1 || w > 1 << 20 || (*end && *end != ','))
                return mn_fail(MN_ERR_INVALID_ARG, "--window-tokens '%s': want positive token counts like 16,64", windows);
            if (n_win == MN_EVAL_MAX_VARIANTS)
                return mn_fail(MN_ERR_INVALID_ARG, "--window-tokens '%s': at most %d sizes", windows,
                               MN_EVAL_MAX_VARIANTS);
            win[n_win++] = (int)w;
            p = *end ? end + 1 : end;
        }
    } else {
        for (int i = 0; i < o->n_variants; i++)
            if (o->variants[i].mode == MN_EVAL_WINDOW && n_win < MN_EVAL_MAX_VARIANTS)
                win[n_win++] = o->variants[i].window;
    }
    if (!modes)
        modes = "memory,no_memory,window,full";
    int n = 0, seen[4] = {0};
    const char *p = modes;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        static const char *const names[] = {"memory", "no_memory", "window", "full"};
        int mode = -1;
        for (int m = 0; m < 4; m++)
            if (strlen(names[m]) == len && !strncmp(p, names[m], len))
                mode = m;
        if (mode < 0)
            return mn_fail(MN_ERR_INVALID_ARG, "--modes: unknown mode '%.*s' (memory, no_memory, window, full)",
                           (int)len, p);
        if (seen[mode]++)
            return mn_fail(MN_ERR_INVALID_ARG, "--modes: '%.*s' given twice", (int)len, p);
        if (mode == MN_EVAL_WINDOW) {
            if (!n_win)
                return mn_fail(MN_ERR_INVALID_ARG, "--modes window needs --window-tokens");
            for (int i = 0; i < n_win; i++) {
                if (n == MN_EVAL_MAX_VARIANTS)
                    return mn_fail(MN_ERR_INVALID_ARG, "at most %d variants", MN_EVAL_MAX_VARIANTS);
                o->variants[n++] = (mn_eval_variant_spec){MN_EVAL_WINDOW, win[i]};
            }
        } else {
            if (n == MN_EVAL_MAX_VARIANTS)
                return mn_fail(MN_ERR_INVALID_ARG, "at most %d variants", MN_EVAL_MAX_VARIANTS);
            o->variants[n++] = (mn_eval_variant_spec){(mn_eval_mode)mode, 0};
        }
        p = end ? end + 1 : p + len;
    }
    if (!n)
        return mn_fail(MN_ERR_INVALID_ARG, "--modes: no mode given");
    o->n_variants = n;
    return MN_OK;
}

/* ---------------------------------------------------------------- preparation */
typedef struct {
    int index;                  /* in the dialogue */
    int q_first, q_count;       /* rendered turns of the question (pieces) */
    int64_t hist_before;        /* history pieces consumed before the question */
    int32_t prefix[2];          /* <|turn|> <answerer> */
    int32_t **choices;          /* BPE(choice) <|eot|>, at most N - 2 tokens */
    int *choice_lens;
    int n_choices, answer, longest;
    int gold_len;               /* tokens of BPE(answer) <|eot|> */
    int64_t result;             /* index into the result's probe_results */
} prep_probe;

typedef struct {
    mn_token_corpus c;          /* the dialogue with its probe turns */
    int64_t *hist_turn;         /* rendered turn of history piece j */
    int64_t *hist_start;        /* (n_hist + 1) offsets into hist_tokens */
    int32_t *hist_tokens;
    int64_t n_hist;
    prep_probe *probes;         /* in the order they are asked */
    int n_probes;
} prep_dialogue;

static void prep_free(prep_dialogue *d) {
    mn_token_corpus_free(&d->c);
    free(d->hist_turn), free(d->hist_start), free(d->hist_tokens);
    for (int i = 0; i < d->n_probes; i++) {
        for (int j = 0; j < d->probes[i].n_choices; j++)
            free(d->probes[i].choices[j]);
        free(d->probes[i].choices), free(d->probes[i].choice_lens);
    }
    free(d->probes);
    memset(d, 0, sizeof *d);
}

/* Renders a dialogue and its first `budget` probes (in file order): history pieces, question
 * turns and each probe's choices as tokens. Distances go into res[...]. */
static mn_status prepare(mn_tokenizer *tok, const mn_config *cfg, const mn_dialogue *dl, int64_t d_index,
                         int budget, prep_dialogue *pd, mn_eval_probe_result *res, int64_t res_base) {
    mn_render_options ro = {.max_turn_tokens = cfg->max_turn_tokens, .include_probes = 1};
    /* only the probes within the budget are rendered: a copy of the dialogue header */
    mn_dialogue view = *dl;
    view.n_probes = budget < dl->n_probes ? budget : dl->n_probes;
    int64_t *probe_turn = malloc((size_t)(view.n_probes ? view.n_probes : 1) * sizeof *probe_turn);
    if (!probe_turn)
        return mn_fail(MN_ERR_NOMEM, "eval: out of memory rendering dialogue %s", dl->id);
    mn_status st = mn_render_dialogue(tok, &view, &ro, &pd->c, NULL, probe_turn);
    if (st != MN_OK) {
        free(probe_turn);
        return st;
    }
    const mn_token_corpus *c = &pd->c;
    const int64_t n_turns = c->n_turns;
    pd->hist_turn = malloc((size_t)n_turns * sizeof *pd->hist_turn);
    pd->hist_start = malloc((size_t)(n_turns + 1) * sizeof *pd->hist_start);
    pd->hist_tokens = malloc((size_t)(c->n_tokens ? c->n_tokens : 1) * sizeof *pd->hist_tokens);
    int *piece_of_turn = malloc((size_t)(dl->n_turns + 1) * sizeof *piece_of_turn); /* first piece of source turn */
    int *probe_at = malloc((size_t)n_turns * sizeof *probe_at); /* the probe whose question starts at turn t */
    pd->probes = calloc((size_t)(view.n_probes ? view.n_probes : 1), sizeof *pd->probes);
    mn_ids ids = {0};
    if (!pd->hist_turn || !pd->hist_start || !pd->hist_tokens || !piece_of_turn || !probe_at || !pd->probes) {
        st = mn_fail(MN_ERR_NOMEM, "eval: out of memory rendering dialogue %s", dl->id);
        goto done;
    }
    for (int64_t t = 0; t < n_turns; t++)
        probe_at[t] = -1;
    for (int p = 0; p < view.n_probes; p++)
        if (probe_turn[p] >= 0 && probe_turn[p] < n_turns)
            probe_at[probe_turn[p]] = p;
    int64_t n_hist = 0, n_tok = 0;
    int source = 0, next = 0;
    pd->hist_start[0] = 0;
    for (int64_t t = 0; t < n_turns && st == MN_OK; t++) {
        uint8_t f = c->turn_flags[t];
        if (f & MN_TURN_ANSWER)
            continue;
        if (f & MN_TURN_QUESTION) {
            if (f & MN_TURN_CONTINUED) {
                pd->probes[next - 1].q_count++;
                continue;
            }
            if (probe_at[t] < 0 || next == view.n_probes) {
                st = mn_fail(MN_ERR_FORMAT, "eval: dialogue %s: rendered turn %" PRId64 " is no probe's question",
                             dl->id, t);
                break;
            }
            const mn_probe *pr = &dl->probes[probe_at[t]];
            prep_probe *pp = &pd->probes[next++];
            pp->index = probe_at[t];
            pp->q_first = (int)t;
            pp->q_count = 1;
            pp->hist_before = n_hist;
            /* the answer turn follows the question's pieces */
            int64_t a = t + 1;
            while (a < n_turns && !(c->turn_flags[a] & MN_TURN_ANSWER))
                a++;
            if (a >= n_turns) {
                st = mn_fail(MN_ERR_FORMAT, "eval: dialogue %s: probe %d has no rendered answer turn", dl->id,
                             pp->index);
                break;
            }
            pp->prefix[0] = c->tokens[c->turn_start[a]];
            pp->prefix[1] = c->tokens[c->turn_start[a] + 1];
            int n_choices = pr->n_choices ? pr->n_choices : 1;
            pp->choices = calloc((size_t)n_choices, sizeof *pp->choices);
            pp->choice_lens = calloc((size_t)n_choices, sizeof *pp->choice_lens);
            if (!pp->choices || !pp->choice_lens) {
                st = mn_fail(MN_ERR_NOMEM, "eval: out of memory");
                break;
            }
            pp->n_choices = n_choices;
            pp->answer = -1;
            int32_t eot = mn_tokenizer_special(tok, MN_TOK_EOT);
            for (int i = 0; i < n_choices && st == MN_OK; i++) {
                const char *text = pr->n_choices ? pr->choices[i] : pr->answer;
                ids.count = 0;
                if ((st = mn_tokenizer_encode(tok, text, strlen(text), &ids)) != MN_OK ||
                    (st = mn_ids_push(&ids, eot)) != MN_OK)
                    break;
                int n = (int)ids.count;
                if (n > cfg->max_turn_tokens - 2) /* as the renderer would split it: its first piece */
                    n = cfg->max_turn_tokens - 2;
                pp->choices[i] = malloc((size_t)n * sizeof(int32_t));
                if (!pp->choices[i]) {
                    st = mn_fail(MN_ERR_NOMEM, "eval: out of memory");
                    break;
                }
                memcpy(pp->choices[i], ids.ids, (size_t)n * sizeof(int32_t));
                pp->choice_lens[i] = n;
                if (n > pp->longest)
                    pp->longest = n;
                if (pp->answer < 0 && !strcmp(text, pr->answer)) {
                    pp->answer = i;
                    pp->gold_len = (int)ids.count;
                }
            }
            if (st == MN_OK && pp->answer < 0)
                st = mn_fail(MN_ERR_FORMAT, "eval: dialogue %s: probe %d: the choices do not contain the answer '%s'",
                             dl->id, pp->index, pr->answer);
            continue;
        }
        if (!(f & MN_TURN_CONTINUED))
            piece_of_turn[source++] = (int)n_hist;
        int64_t len = c->turn_start[t + 1] - c->turn_start[t];
        memcpy(pd->hist_tokens + n_tok, c->tokens + c->turn_start[t], (size_t)len * sizeof(int32_t));
        n_tok += len;
        pd->hist_turn[n_hist++] = t;
        pd->hist_start[n_hist] = n_tok;
    }
    pd->n_hist = n_hist;
    pd->n_probes = next;
    if (st == MN_OK && (source != dl->n_turns || next != view.n_probes))
        st = mn_fail(MN_ERR_FORMAT, "eval: dialogue %s: rendered %d of %d turns and %d of %d probes", dl->id, source,
                     dl->n_turns, next, view.n_probes);
    piece_of_turn[source < dl->n_turns ? source : dl->n_turns] = (int)n_hist;
    for (int i = 0; st == MN_OK && i < pd->n_probes; i++) {
        prep_probe *pp = &pd->probes[i];
        const mn_probe *pr = &dl->probes[pp->index];
        mn_eval_probe_result *r = &res[res_base + pp->index];
        pp->result = res_base + pp->index;
        r->dialogue = d_index;
        r->probe = pp->index;
        r->category = pr->category;
        r->n_choices = pr->n_choices;
        r->answer = pp->answer;
        r->distance_turns = -1;
        r->distance_tokens = -1;
        if (pr->n_evidence) {
            int ev = pr->evidence[0];
            for (int e = 1; e < pr->n_evidence; e++)
                if (pr->evidence[e] > ev)
                    ev = pr->evidence[e];
            if (ev < pr->after) {
                r->distance_turns = pr->after - ev;
                r->distance_tokens = pd->hist_start[pp->hist_before] - pd->hist_start[piece_of_turn[ev]];
            }
        }
    }
done:
    mn_ids_free(&ids);
    free(piece_of_turn);
    free(probe_at);
    free(probe_turn);
    return st;
}

/* ---------------------------------------------------------------- the walk */
typedef struct {
    double lm_loss[MN_EVAL_MAX_VARIANTS][MN_EVAL_INDEX_BUCKETS];
    int64_t lm_tokens[MN_EVAL_MAX_VARIANTS][MN_EVAL_INDEX_BUCKETS];
    int64_t lm_skipped[MN_EVAL_MAX_VARIANTS];
    double fwd_ms[MN_EVAL_MAX_VARIANTS][MN_EVAL_INDEX_BUCKETS];
    int64_t fwd_n[MN_EVAL_MAX_VARIANTS][MN_EVAL_INDEX_BUCKETS];
    double gen_ms[MN_EVAL_MAX_VARIANTS];
    int64_t gen_tokens[MN_EVAL_MAX_VARIANTS];
    double upd_ms[MN_EVAL_INDEX_BUCKETS];
    int64_t upd_n[MN_EVAL_INDEX_BUCKETS];
    double window_used[MN_EVAL_MAX_VARIANTS];
    int64_t window_clipped[MN_EVAL_MAX_VARIANTS];
    mn_status status;
    char message[512];
} dialogue_acc;

/* Generated ids per (probe, variant), decoded after the parallel part (the tokenizer is not
 * thread-safe). */
typedef struct {
    int32_t *ids;
    int n;
} gen_ids;

typedef struct {
    mn_model *model;
    float *r, *rq, *r0, *logits;
    int32_t *seq, *gen;
    double *scores;
    int max_choices;
} worker;

/* Reads the question pieces of p into a copy of r_in: rq. */
static mn_status read_question(worker *w, const prep_dialogue *pd, const prep_probe *p, const float *r_in) {
    size_t S = mn_state_floats(w->model);
    memcpy(w->rq, r_in, S * sizeof(float));
    for (int q = 0; q < p->q_count; q++) {
        int64_t t = p->q_first + q;
        MN_TRY(mn_update(w->model, pd->c.tokens + pd->c.turn_start[t], (int)(pd->c.turn_start[t + 1] - pd->c.turn_start[t]),
                         w->rq, w->rq));
    }
    return MN_OK;
}

/* Question tokens (all pieces) appended to seq at *n. */
static void append_question(const prep_dialogue *pd, const prep_probe *p, int32_t *seq, int *n) {
    for (int q = 0; q < p->q_count; q++) {
        int64_t t = p->q_first + q, len = pd->c.turn_start[t + 1] - pd->c.turn_start[t];
        memcpy(seq + *n, pd->c.tokens + pd->c.turn_start[t], (size_t)len * sizeof(int32_t));
        *n += (int)len;
    }
}

static int question_len(const prep_dialogue *pd, const prep_probe *p) {
    return (int)(pd->c.turn_start[p->q_first + p->q_count] - pd->c.turn_start[p->q_first]);
}

static mn_status score_probe(worker *w, const mn_eval_options *o, const prep_dialogue *pd, const prep_probe *p,
                             mn_eval_probe_result *res, gen_ids *gens, dialogue_acc *acc, int32_t eot) {
    const mn_config *cfg = mn_model_config(w->model);
    const int N = cfg->max_turn_tokens;
    const int64_t hist_avail = pd->hist_start[p->hist_before];
    const int qlen = question_len(pd, p);
    for (int v = 0; v < o->n_variants; v++) {
        const mn_eval_variant_spec *spec = &o->variants[v];
        const float *r;
        int n_prefix = 0;
        if (spec->mode == MN_EVAL_MEMORY || spec->mode == MN_EVAL_NO_MEMORY) {
            MN_TRY(read_question(w, pd, p, spec->mode == MN_EVAL_MEMORY ? w->r : w->r0));
            r = w->rq;
            w->seq[0] = p->prefix[0], w->seq[1] = p->prefix[1];
            n_prefix = 2;
        } else {
            /* R_0 and raw history inside the decoder's one sequence of at most N tokens */
            int room = N - qlen - 2 - p->longest;
            int64_t want = spec->mode == MN_EVAL_FULL ? hist_avail : (spec->window < hist_avail ? spec->window : hist_avail);
            if (room < 0 || (spec->mode == MN_EVAL_FULL && want > room))
                continue; /* unscored: the question and answer alone, or the whole history, do not fit */
            int64_t shown = want < room ? want : room;
            if (shown < want)
                acc->window_clipped[v]++;
            acc->window_used[v] += (double)shown;
            memcpy(w->seq, pd->hist_tokens + hist_avail - shown, (size_t)shown * sizeof(int32_t));
            n_prefix = (int)shown;
            append_question(pd, p, w->seq, &n_prefix);
            w->seq[n_prefix++] = p->prefix[0];
            w->seq[n_prefix++] = p->prefix[1];
            r = w->r0;
        }
        int best = 0;
        MN_TRY(mn_score_choices(w->model, r, w->seq, n_prefix, (const int32_t *const *)p->choices, p->choice_lens,
                                p->n_choices, w->scores, &best));
        res->scored[v] = 1;
        res->best[v] = best;
        res->gold_ll[v] = w->scores[p->answer];
        if (o->generate) {
            int budget = p->gold_len + 8 < o->max_gen_tokens ? p->gold_len + 8 : o->max_gen_tokens;
            int max_tokens = n_prefix + budget < N ? n_prefix + budget : N;
            if (max_tokens > n_prefix) {
                mn_sampling greedy = {0.0f, 0, 1.0f};
                uint64_t rng = 1;
                int n_out = 0;
                double t0 = mn_clock_s();
                MN_TRY(mn_generate(w->model, r, w->seq, n_prefix, max_tokens, &eot, 1, &greedy, &rng, w->gen, &n_out));
                acc->gen_ms[v] += 1e3 * (mn_clock_s() - t0);
                acc->gen_tokens[v] += n_out - n_prefix;
                int n = n_out - n_prefix;
                if (n > 0 && w->gen[n_out - 1] == eot)
                    n--;
                gens[v].ids = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
                if (!gens[v].ids)
                    return mn_fail(MN_ERR_NOMEM, "eval: out of memory");
                memcpy(gens[v].ids, w->gen + n_prefix, (size_t)n * sizeof(int32_t));
                gens[v].n = n;
            }
        }
    }
    return MN_OK;
}

/* LM loss of history piece j for every variant, given R before it. */
static mn_status turn_lm(worker *w, const mn_eval_options *o, const prep_dialogue *pd, int64_t j, dialogue_acc *acc) {
    const mn_config *cfg = mn_model_config(w->model);
    const int N = cfg->max_turn_tokens, V = cfg->vocab_size;
    const int32_t *toks = pd->hist_tokens + pd->hist_start[j];
    const int n = (int)(pd->hist_start[j + 1] - pd->hist_start[j]);
    if (n < 2)
        return MN_OK;
    const int ib = mn_eval_bucket(j + 1, MN_EVAL_INDEX_BUCKETS);
    const int64_t hist_avail = pd->hist_start[j];
    for (int v = 0; v < o->n_variants; v++) {
        const mn_eval_variant_spec *spec = &o->variants[v];
        int shown = 0;
        const float *r = spec->mode == MN_EVAL_MEMORY ? w->r : w->r0;
        double t0 = mn_clock_s();
        if (spec->mode == MN_EVAL_MEMORY || spec->mode == MN_EVAL_NO_MEMORY) {
            MN_TRY(mn_logits(w->model, toks, n, r, w->logits));
        } else {
            int64_t want = spec->mode == MN_EVAL_FULL ? hist_avail : (spec->window < hist_avail ? spec->window : hist_avail);
            if (spec->mode == MN_EVAL_FULL && want + n > N) {
                acc->lm_skipped[v]++;
                continue;
            }
            shown = (int)(want < N - n ? want : N - n);
            memcpy(w->seq, pd->hist_tokens + hist_avail - shown, (size_t)shown * sizeof(int32_t));
            memcpy(w->seq + shown, toks, (size_t)n * sizeof(int32_t));
            MN_TRY(mn_logits(w->model, w->seq, shown + n, r, w->logits));
        }
        acc->fwd_ms[v][ib] += 1e3 * (mn_clock_s() - t0);
        acc->fwd_n[v][ib]++;
        double loss = 0.0;
        for (int i = 1; i < n; i++) /* row shown + i - 1 predicts turn token i */
            loss -= mn_log_prob(w->logits + (size_t)(shown + i - 1) * V, V, toks[i]);
        acc->lm_loss[v][ib] += loss;
        acc->lm_tokens[v][ib] += n - 1;
    }
    return MN_OK;
}

static mn_status walk(worker *w, const mn_eval_options *o, const prep_dialogue *pd, mn_eval_probe_result *res,
                      gen_ids *gens, dialogue_acc *acc, int32_t eot) {
    size_t S = mn_state_floats(w->model);
    memcpy(w->r, w->r0, S * sizeof(float));
    int pi = 0;
    for (int64_t j = 0; j <= pd->n_hist; j++) {
        while (pi < pd->n_probes && pd->probes[pi].hist_before == j) {
            const prep_probe *p = &pd->probes[pi++];
            MN_TRY(score_probe(w, o, pd, p, &res[p->result], gens + (size_t)p->result * MN_EVAL_MAX_VARIANTS, acc, eot));
        }
        if (j == pd->n_hist)
            break;
        if (o->lm)
            MN_TRY(turn_lm(w, o, pd, j, acc));
        const int32_t *toks = pd->hist_tokens + pd->hist_start[j];
        int n = (int)(pd->hist_start[j + 1] - pd->hist_start[j]);
        double t0 = mn_clock_s();
        MN_TRY(mn_update(w->model, toks, n, w->r, w->r));
        int ib = mn_eval_bucket(j + 1, MN_EVAL_INDEX_BUCKETS);
        acc->upd_ms[ib] += 1e3 * (mn_clock_s() - t0);
        acc->upd_n[ib]++;
    }
    return MN_OK;
}

static void worker_free(worker *w) {
    mn_model_free(w->model);
    free(w->r), free(w->rq), free(w->r0), free(w->logits), free(w->seq), free(w->gen), free(w->scores);
    memset(w, 0, sizeof *w);
}

static mn_status worker_init(worker *w, mn_model *src, const mn_backend *backend, int max_choices) {
    memset(w, 0, sizeof *w);
    const mn_config *cfg = mn_model_config(src);
    MN_TRY(mn_model_create(cfg, &w->model));
    /* one thread per worker: the parallelism is over dialogues, and single-threaded products
     * keep the results independent of the worker count */
    mn_status st = mn_model_set_threads(w->model, 1);
    if (st != MN_OK) {
        worker_free(w);
        return st;
    }
    memcpy(mn_model_params(w->model), mn_model_params(src), mn_model_num_params(src) * sizeof(float));
    if (backend && (st = mn_model_set_backend(w->model, backend)) != MN_OK) { /* copies the parameters there */
        worker_free(w);
        return st;
    }
    size_t S = mn_state_floats(src);
    int N = cfg->max_turn_tokens;
    w->r = malloc(S * sizeof(float));
    w->rq = malloc(S * sizeof(float));
    w->r0 = malloc(S * sizeof(float));
    w->logits = malloc((size_t)N * cfg->vocab_size * sizeof(float));
    w->seq = malloc((size_t)(N + cfg->n_slots) * sizeof(int32_t));
    w->gen = malloc((size_t)(N + cfg->n_slots) * sizeof(int32_t));
    w->scores = malloc((size_t)(max_choices ? max_choices : 1) * sizeof(double));
    if (!w->r || !w->rq || !w->r0 || !w->logits || !w->seq || !w->gen || !w->scores) {
        worker_free(w);
        return mn_fail(MN_ERR_NOMEM, "eval: out of memory for a worker");
    }
    st = mn_initial_state(w->model, w->r0);
    if (st != MN_OK)
        worker_free(w);
    return st;
}

static void tally_add(mn_eval_tally *t, const mn_eval_probe_result *p, int v, int generated) {
    t->n++;
    t->gold_ll_sum += p->gold_ll[v];
    if (p->n_choices >= 2) {
        t->mc_n++;
        t->mc_correct += p->best[v] == p->answer;
    }
    if (generated) {
        t->gen_n++;
        t->em_correct += p->em[v];
        t->f1_sum += p->f1[v];
    }
}

mn_status mn_eval_run(mn_model *model, mn_tokenizer *tok, const mn_dialogue_list *list, const mn_eval_options *o,
                      mn_eval_result *out) {
    if (!model || !tok || !list || !o || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_eval_run: NULL argument");
    memset(out, 0, sizeof *out);
    const mn_config *cfg = mn_model_config(model);
    if (o->n_variants < 1 || o->n_variants > MN_EVAL_MAX_VARIANTS)
        return mn_fail(MN_ERR_INVALID_ARG, "eval: %d variants (1..%d)", o->n_variants, MN_EVAL_MAX_VARIANTS);
    if (o->generate && o->max_gen_tokens < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "eval: max_gen_tokens must be >= 1");
    if (mn_tokenizer_vocab_size(tok) > cfg->vocab_size)
        return mn_fail(MN_ERR_MISMATCH, "eval: the tokenizer has %d tokens but the model's vocab_size is %d",
                       mn_tokenizer_vocab_size(tok), cfg->vocab_size);
    if (list->count < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "eval: no dialogues to evaluate (empty input)");
    double t_start = mn_clock_s();

    /* which dialogues and probes: the first max_probes probes in file order */
    int64_t n_dlg = 0, n_probes = 0;
    int *budget = malloc((size_t)list->count * sizeof *budget);
    int64_t *res_base = malloc((size_t)list->count * sizeof *res_base);
    if (!budget || !res_base) {
        free(budget), free(res_base);
        return mn_fail(MN_ERR_NOMEM, "eval: out of memory");
    }
    int64_t total_probes = 0;
    for (int64_t d = 0; d < list->count; d++)
        total_probes += list->items[d].n_probes;
    for (int64_t d = 0; d < list->count; d++) {
        int64_t left = o->max_probes > 0 ? o->max_probes - n_probes : list->items[d].n_probes;
        if (total_probes > 0 && left <= 0)
            break; /* probes are what is asked for; dialogues past the last probe add nothing */
        budget[d] = (int)(left < list->items[d].n_probes ? left : list->items[d].n_probes);
        res_base[d] = n_probes;
        n_probes += budget[d];
        n_dlg++;
    }
    out->dialogues = n_dlg;
    out->probes = n_probes;
    out->probes_skipped = total_probes - n_probes;
    out->n_variants = o->n_variants;
    out->state_floats = mn_state_floats(model);
    out->n_slots = cfg->n_slots;
    out->max_turn_tokens = cfg->max_turn_tokens;
    for (int v = 0; v < o->n_variants; v++) {
        mn_eval_variant_result *vr = &out->variants[v];
        vr->spec = o->variants[v];
        static const char *const names[] = {"memory", "no_memory", "window", "full"};
        int first_window = 1;
        for (int u = 0; u < v; u++)
            first_window &= o->variants[u].mode != MN_EVAL_WINDOW;
        if (vr->spec.mode == MN_EVAL_WINDOW && !first_window)
            snprintf(vr->name, sizeof vr->name, "window_%d", vr->spec.window);
        else
            snprintf(vr->name, sizeof vr->name, "%s", names[vr->spec.mode]);
    }

    prep_dialogue *pds = calloc((size_t)n_dlg, sizeof *pds);
    dialogue_acc *accs = calloc((size_t)n_dlg, sizeof *accs);
    out->probe_results = calloc((size_t)(n_probes ? n_probes : 1), sizeof *out->probe_results);
    gen_ids *gens = calloc((size_t)(n_probes ? n_probes : 1) * MN_EVAL_MAX_VARIANTS, sizeof *gens);
    worker *workers = NULL;
    int n_workers = 0;
    mn_status st = MN_OK;
    if (!pds || !accs || !out->probe_results || !gens) {
        st = mn_fail(MN_ERR_NOMEM, "eval: out of memory");
        goto done;
    }
    int max_choices = 1;
    for (int64_t d = 0; d < n_dlg && st == MN_OK; d++) {
        const mn_dialogue *dl = &list->items[d];
        for (int p = 0; p < budget[d]; p++) {
            if (dl->probes[p].after < 1 || dl->probes[p].after > dl->n_turns) {
                st = mn_fail(MN_ERR_FORMAT, "eval: dialogue %s: probe %d: after = %d is outside 1..%d", dl->id, p,
                             dl->probes[p].after, dl->n_turns);
                goto done;
            }
            if (dl->probes[p].n_choices > max_choices)
                max_choices = dl->probes[p].n_choices;
        }
        st = prepare(tok, cfg, dl, d, budget[d], &pds[d], out->probe_results, res_base[d]);
        if (st == MN_OK) {
            out->turns += pds[d].n_hist;
            out->history_tokens += pds[d].hist_start[pds[d].n_hist];
        }
    }
    if (st != MN_OK)
        goto done;

    int threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    n_workers = (int)(threads < n_dlg ? threads : n_dlg);
    if (n_workers < 1)
        n_workers = 1;
    out->threads = n_workers;
    workers = calloc((size_t)n_workers, sizeof *workers);
    if (!workers) {
        st = mn_fail(MN_ERR_NOMEM, "eval: out of memory");
        goto done;
    }
    for (int i = 0; i < n_workers && st == MN_OK; i++)
        st = worker_init(&workers[i], model, o->backend, max_choices);
    if (st != MN_OK)
        goto done;
    const int32_t eot = mn_tokenizer_special(tok, MN_TOK_EOT);
    int64_t finished = 0;
    /* about 20 progress updates, redrawn in place on a terminal, a line each in a log */
    const int64_t progress_every = n_dlg / 20 > 1 ? n_dlg / 20 : 1;
    const char *progress_start = o->progress_redraw ? "\r" : "", *progress_end = o->progress_redraw ? "   " : "\n";
#pragma omp parallel for num_threads(n_workers) schedule(dynamic, 1) if (n_workers > 1)
    for (int64_t d = 0; d < n_dlg; d++) {
        worker *w = &workers[omp_get_thread_num()];
        mn_status s = walk(w, o, &pds[d], out->probe_results, gens, &accs[d], eot);
        accs[d].status = s;
        if (s != MN_OK)
            snprintf(accs[d].message, sizeof accs[d].message, "%s", mn_last_error());
        if (o->progress) {
#pragma omp critical(mn_eval_progress)
            {
                finished++;
                if (finished % progress_every == 0 || finished == n_dlg) {
                    fprintf(o->progress, "%seval: %" PRId64 "/%" PRId64 " dialogues, %.0f s%s", progress_start,
                            finished, n_dlg, mn_clock_s() - t_start, progress_end);
                    fflush(o->progress);
                }
            }
        }
    }
    if (o->progress && o->progress_redraw)
        fprintf(o->progress, "\n");
    for (int64_t d = 0; d < n_dlg; d++)
        if (accs[d].status != MN_OK) {
            st = mn_fail(accs[d].status, "eval: dialogue %s: %s", list->items[d].id, accs[d].message);
            goto done;
        }

    /* decode and judge the generated answers, then merge in file order */
    for (int64_t i = 0; i < n_probes && st == MN_OK; i++) {
        mn_eval_probe_result *p = &out->probe_results[i];
        const mn_probe *pr = &list->items[p->dialogue].probes[p->probe];
        for (int v = 0; v < o->n_variants && st == MN_OK; v++) {
            gen_ids *g = &gens[i * MN_EVAL_MAX_VARIANTS + v];
            if (!g->ids)
                continue;
            size_t len;
            st = mn_tokenizer_decode(tok, g->ids, g->n, &p->generated[v], &len);
            if (st != MN_OK)
                break;
            p->em[v] = mn_eval_exact_match(p->generated[v], pr->answer);
            p->f1[v] = mn_eval_locomo_score(p->generated[v], pr->answer, pr->category);
        }
    }
    if (st != MN_OK)
        goto done;
    for (int64_t i = 0; i < n_probes; i++) {
        const mn_eval_probe_result *p = &out->probe_results[i];
        for (int v = 0; v < o->n_variants; v++) {
            mn_eval_variant_result *vr = &out->variants[v];
            if (!p->scored[v]) {
                vr->unscored++;
                continue;
            }
            int generated = p->generated[v] != NULL;
            tally_add(&vr->all, p, v, generated);
            int cat = p->category >= 0 && p->category < MN_EVAL_CATEGORIES ? p->category : 0;
            tally_add(&vr->by_category[cat], p, v, generated);
            int bt = mn_eval_bucket(p->distance_turns, MN_EVAL_TURN_BUCKETS);
            int bk = mn_eval_bucket(p->distance_tokens, MN_EVAL_TOKEN_BUCKETS);
            if (bt < 0)
                tally_add(&vr->no_distance, p, v, generated);
            else
                tally_add(&vr->by_turns[bt], p, v, generated);
            if (bk >= 0)
                tally_add(&vr->by_tokens[bk], p, v, generated);
        }
    }
    for (int64_t d = 0; d < n_dlg; d++) {
        const dialogue_acc *a = &accs[d];
        for (int b = 0; b < MN_EVAL_INDEX_BUCKETS; b++) {
            out->update_ms_by_index[b] += a->upd_ms[b];
            out->updates_by_index[b] += a->upd_n[b];
            out->update_ms_sum += a->upd_ms[b];
            out->updates += a->upd_n[b];
        }
        for (int v = 0; v < o->n_variants; v++) {
            mn_eval_variant_result *vr = &out->variants[v];
            for (int b = 0; b < MN_EVAL_INDEX_BUCKETS; b++) {
                vr->lm_loss_by_index[b] += a->lm_loss[v][b];
                vr->lm_tokens_by_index[b] += a->lm_tokens[v][b];
                vr->lm_loss_sum += a->lm_loss[v][b];
                vr->lm_tokens += a->lm_tokens[v][b];
                vr->forward_ms_by_index[b] += a->fwd_ms[v][b];
                vr->forward_turns_by_index[b] += a->fwd_n[v][b];
            }
            vr->lm_turns_skipped += a->lm_skipped[v];
            vr->gen_ms_sum += a->gen_ms[v];
            vr->gen_tokens += a->gen_tokens[v];
            vr->window_used_sum += a->window_used[v];
            vr->window_clipped += a->window_clipped[v];
        }
    }
    out->wall_s = mn_clock_s() - t_start;
done:
    for (int i = 0; i < n_workers && workers; i++)
        worker_free(&workers[i]);
    free(workers);
    for (int64_t d = 0; pds && d < n_dlg; d++)
        prep_free(&pds[d]);
    free(pds);
    free(accs);
    for (int64_t i = 0; gens && i < (n_probes ? n_probes : 1) * MN_EVAL_MAX_VARIANTS; i++)
        free(gens[i].ids);
    free(gens);
    free(budget), free(res_base);
    if (st != MN_OK)
        mn_eval_result_free(out);
    return st;
}

void mn_eval_result_free(mn_eval_result *r) {
    if (!r)
        return;
    for (int64_t i = 0; r->probe_results && i < r->probes; i++)
        for (int v = 0; v < MN_EVAL_MAX_VARIANTS; v++)
            free(r->probe_results[i].generated[v]);
    free(r->probe_results);
    r->probe_results = NULL;
    r->probes = 0;
}
