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

const char *const mn_eval_mode_names[MN_EVAL_N_MODES] = {"memory", "no_memory", "window", "full", "retrieval",
                                                        "summary"};

/* "16,64" into sizes[] (at most MN_EVAL_MAX_VARIANTS); option names the list in messages. */
static mn_status parse_sizes(const char *list, const char *option, int *sizes, int *n) {
    *n = 0;
    const char *p = list;
    while (*p) {
        char *end;
        long w = strtol(p, &end, 10);
        if (end == p || w < 1 || w > 1 << 20 || (*end && *end != ','))
            return mn_fail(MN_ERR_INVALID_ARG, "%s '%s': want positive token counts like 16,64", option, list);
        if (*n == MN_EVAL_MAX_VARIANTS)
            return mn_fail(MN_ERR_INVALID_ARG, "%s '%s': at most %d sizes", option, list, MN_EVAL_MAX_VARIANTS);
        sizes[(*n)++] = (int)w;
        p = *end ? end + 1 : end;
    }
    return MN_OK;
}

mn_status mn_eval_parse_variants(mn_eval_options *o, const char *modes, const char *windows, const char *retrieval,
                                 const char *summary) {
    /* each sized mode's list: as given, else the default variants' window sizes (k, 4k) */
    int sizes[MN_EVAL_N_MODES][MN_EVAL_MAX_VARIANTS], n_sizes[MN_EVAL_N_MODES] = {0};
    int defaults[MN_EVAL_MAX_VARIANTS], n_defaults = 0;
    for (int i = 0; i < o->n_variants; i++)
        if (o->variants[i].mode == MN_EVAL_WINDOW && n_defaults < MN_EVAL_MAX_VARIANTS)
            defaults[n_defaults++] = o->variants[i].window;
    const int sized[3] = {MN_EVAL_WINDOW, MN_EVAL_RETRIEVAL, MN_EVAL_SUMMARY};
    const char *lists[3] = {windows, retrieval, summary};
    const char *options[3] = {"--window-tokens", "--retrieval-tokens", "--summary-tokens"};
    for (int i = 0; i < 3; i++) {
        if (lists[i]) {
            MN_TRY(parse_sizes(lists[i], options[i], sizes[sized[i]], &n_sizes[sized[i]]));
        } else {
            memcpy(sizes[sized[i]], defaults, (size_t)n_defaults * sizeof(int));
            n_sizes[sized[i]] = n_defaults;
        }
    }
    if (!modes)
        modes = "memory,no_memory,window,full";
    int n = 0, seen[MN_EVAL_N_MODES] = {0};
    const char *p = modes;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int mode = -1;
        for (int m = 0; m < MN_EVAL_N_MODES; m++)
            if (strlen(mn_eval_mode_names[m]) == len && !strncmp(p, mn_eval_mode_names[m], len))
                mode = m;
        if (mode < 0)
            return mn_fail(MN_ERR_INVALID_ARG,
                           "--modes: unknown mode '%.*s' (memory, no_memory, window, full, retrieval, summary)",
                           (int)len, p);
        if (seen[mode]++)
            return mn_fail(MN_ERR_INVALID_ARG, "--modes: '%.*s' given twice", (int)len, p);
        int sized_mode = mode == MN_EVAL_WINDOW || mode == MN_EVAL_RETRIEVAL || mode == MN_EVAL_SUMMARY;
        if (sized_mode && !n_sizes[mode])
            return mn_fail(MN_ERR_INVALID_ARG, "--modes %s needs --%s-tokens", mn_eval_mode_names[mode],
                           mn_eval_mode_names[mode]);
        for (int i = 0; i < (sized_mode ? n_sizes[mode] : 1); i++) {
            if (n == MN_EVAL_MAX_VARIANTS)
                return mn_fail(MN_ERR_INVALID_ARG, "at most %d variants", MN_EVAL_MAX_VARIANTS);
            o->variants[n++] = (mn_eval_variant_spec){(mn_eval_mode)mode, sized_mode ? sizes[mode][i] : 0};
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
    int ev_turn;                /* the latest evidence turn before the question; -1 */
} prep_probe;

typedef struct {
    mn_token_corpus c;          /* the dialogue with its probe turns */
    int64_t *hist_turn;         /* rendered turn of history piece j */
    int64_t *hist_start;        /* (n_hist + 1) offsets into hist_tokens */
    int32_t *hist_tokens;
    int64_t n_hist;
    prep_probe *probes;         /* in the order they are asked */
    int n_probes;
    const mn_dialogue *dl;      /* texts of the turns and questions (retrieval) */
    int *piece_of_turn;         /* (turns + 1): the first history piece of each source turn */
} prep_dialogue;

static void prep_free(prep_dialogue *d) {
    mn_token_corpus_free(&d->c);
    free(d->hist_turn), free(d->hist_start), free(d->hist_tokens), free(d->piece_of_turn);
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
    int *piece_of_turn = pd->piece_of_turn = malloc((size_t)(dl->n_turns + 1) * sizeof *piece_of_turn);
    pd->dl = dl;
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
        pp->ev_turn = -1;
        if (pr->n_evidence) {
            int ev = pr->evidence[0];
            for (int e = 1; e < pr->n_evidence; e++)
                if (pr->evidence[e] > ev)
                    ev = pr->evidence[e];
            if (ev < pr->after) {
                r->distance_turns = pr->after - ev;
                r->distance_tokens = pd->hist_start[pp->hist_before] - pd->hist_start[piece_of_turn[ev]];
                pp->ev_turn = ev;
            }
        }
    }
done:
    mn_ids_free(&ids);
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
    double write_ms[MN_EVAL_MAX_VARIANTS][MN_EVAL_INDEX_BUCKETS], query_ms[MN_EVAL_MAX_VARIANTS];
    int64_t write_tokens[MN_EVAL_MAX_VARIANTS], write_cut[MN_EVAL_MAX_VARIANTS];
    double state_tokens[MN_EVAL_MAX_VARIANTS], state_bytes[MN_EVAL_MAX_VARIANTS];
    int64_t state_n[MN_EVAL_MAX_VARIANTS], state_max[MN_EVAL_MAX_VARIANTS];
    mn_status status;
    char message[512];
} dialogue_acc;

/* Generated ids per (probe, variant), decoded after the parallel part (the tokenizer is not
 * thread-safe). */
typedef struct {
    int32_t *ids;
    int n;
} gen_ids;

/* The summary's fixed prompt, encoded once (docs/eval.md): the previous summary as a turn,
 * head + summary + <|eot|>, then the new turn, then tail, after which the decoder writes the
 * new summary up to <|eot|>. At a question the history is head + summary + <|eot|>. */
#define SUMMARY_HEAD_TEXT "Summary:"
#define SUMMARY_TAIL_TEXT "New summary:"
#define SUMMARY_MIN_TURN 16 /* tokens of the new turn a rewrite always reads (fewer if shorter) */
typedef struct {
    int32_t head[40], tail[40];
    int n_head, n_tail;
    int32_t stop[2]; /* <|eot|> <|turn|>: the summary ends */
    int cap[MN_EVAL_MAX_VARIANTS]; /* summary tokens that fit the decoder, at most the variant's B */
} summary_prompt;

/* History pieces per block: the states before them are kept (BLOCK + 1 states), and the LM
 * sequences of every piece and variant go into one batched decoder call. */
#define EVAL_BLOCK 32
/* Probes scored together: question reads, choices and generation each in batched calls. */
#define EVAL_PROBE_GROUP 8
#define EVAL_SLOTS (EVAL_PROBE_GROUP * MN_EVAL_MAX_VARIANTS) /* (probe, variant) pairs of a group */

/* Decoder sequences gathered for one batched call (mn_sequence_log_probs, the decoder cache). */
typedef struct {
    int32_t *tokens;
    size_t tokens_cap;
    int64_t *offsets;
    const float **states;
    int *first;
    int n, cap;
    float *out; /* log-probabilities, indexed like tokens */
    size_t out_cap;
} seq_batch;

static void batch_free(seq_batch *b) {
    free(b->tokens), free(b->offsets), free(b->states), free(b->first), free(b->out);
    memset(b, 0, sizeof *b);
}

/* Room for one more sequence of up to max_len tokens; *dst = where its tokens go. */
static mn_status batch_open(seq_batch *b, int max_len, int32_t **dst) {
    if (b->n + 1 >= b->cap) {
        int cap = b->cap ? 2 * b->cap : 64;
        int64_t *o = realloc(b->offsets, (size_t)(cap + 1) * sizeof *o);
        if (o)
            b->offsets = o;
        const float **st = realloc(b->states, (size_t)cap * sizeof *st);
        if (st)
            b->states = st;
        int *f = realloc(b->first, (size_t)cap * sizeof *f);
        if (f)
            b->first = f;
        if (!o || !st || !f)
            return mn_fail(MN_ERR_NOMEM, "eval: out of memory for a batch of %d sequences", cap);
        b->cap = cap;
    }
    if (!b->n)
        b->offsets[0] = 0;
    size_t need = (size_t)b->offsets[b->n] + (size_t)max_len;
    if (need > b->tokens_cap) {
        size_t cap = 2 * need;
        int32_t *t = realloc(b->tokens, cap * sizeof *t);
        if (!t)
            return mn_fail(MN_ERR_NOMEM, "eval: out of memory for a batch of %zu tokens", cap);
        b->tokens = t;
        b->tokens_cap = cap;
    }
    *dst = b->tokens + b->offsets[b->n];
    return MN_OK;
}

static void batch_close(seq_batch *b, int len, const float *r, int first) {
    b->offsets[b->n + 1] = b->offsets[b->n] + len;
    b->states[b->n] = r;
    b->first[b->n] = first;
    b->n++;
}

/* Room in b->out for a log-probability per token of b's sequences. */
static mn_status batch_room(seq_batch *b) {
    size_t need = b->n ? (size_t)b->offsets[b->n] : 0;
    if (need > b->out_cap) {
        float *o = realloc(b->out, need * sizeof *o);
        if (!o)
            return mn_fail(MN_ERR_NOMEM, "eval: out of memory for %zu log-probabilities", need);
        b->out = o;
        b->out_cap = need;
    }
    return MN_OK;
}

typedef struct {
    mn_model *model;
    float *r0, *r;        /* R_0; R as the walk goes */
    float *block_states;  /* (EVAL_BLOCK + 1, k, C): R before each position of the block */
    float *rq;            /* questions read into R: (EVAL_PROBE_GROUP * 2, k, C): R after the question,
                           * from R (even) and R_0 (odd) */
    float *rq_tmp;        /* the same size: the question reads of one piece, gathered */
    int32_t *q_tokens;    /* (EVAL_PROBE_GROUP * 2, N): those pieces' tokens */
    int64_t q_offsets[EVAL_PROBE_GROUP * 2 + 1];
    seq_batch lm, choices, gen;
    /* the block's LM entries, one per (piece, variant) measured: its variant, bucket and the
     * sequence of w->lm it reads (variants that read the same sequence share one) */
    int lm_variant[EVAL_BLOCK * MN_EVAL_MAX_VARIANTS], lm_bucket[EVAL_BLOCK * MN_EVAL_MAX_VARIANTS];
    int lm_seq[EVAL_BLOCK * MN_EVAL_MAX_VARIANTS], n_lm;
    /* the group being gathered: probes group[0 .. n_group) of the block, and a slot per
     * (probe, variant) it is scored in: the state, the decoder sequence before a choice */
    const prep_probe *group;
    int n_group, n_slots;
    int group_read[EVAL_PROBE_GROUP]; /* the probe's question is read into R (read_questions) */
    const float *slot_r[EVAL_SLOTS];
    int slot_prefix[EVAL_SLOTS], slot_variant[EVAL_SLOTS], slot_probe[EVAL_SLOTS];
    int32_t *prefix;      /* (EVAL_SLOTS, N): a slot's sequence before a choice, then its generation */
    float *logits;        /* (EVAL_SLOTS, V) */
    double *scores;       /* (most choices of a probe) */
    int32_t *seq, *rewrite, *hist;            /* the summary's prompt and rewrite; a history, (N + k) */
    mn_eval_index *ix;                        /* retrieval: this dialogue's turns */
    int64_t *pick_turn;                       /* retrieval: chosen turns, (N + 1) */
    int *pick_len;
    int n_pick, pick_budget, pick_used;
    const prep_dialogue *pick_pd;
    int32_t *summary[MN_EVAL_MAX_VARIANTS];   /* summary: each variant's, (N) */
    int summary_len[MN_EVAL_MAX_VARIANTS];
    mn_decoder_cache *cache;                  /* the decoder's cache for choices and generation */
    int cache_seqs;                           /* sequences it holds: >= 1 + the most choices */
    int *fork_src, *fork_dst, *fork_lens;     /* a chunk's choices: (EVAL_SLOTS * most choices) */
    const int32_t **fork_tokens;
    float **fork_out;
} worker;

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

/* Tokens of source turn t (all its pieces). */
static int64_t turn_offset(const prep_dialogue *pd, int t) { return pd->hist_start[pd->piece_of_turn[t]]; }
static int64_t turn_tokens(const prep_dialogue *pd, int t) { return turn_offset(pd, t + 1) - turn_offset(pd, t); }

/* Retrieval, one ranked turn at a time: whole turns while they fit the budget; the first that
 * does not is cut to the room left (its first tokens) and ends the choice. */
static int pick_turn(void *ctx, int64_t t) {
    worker *w = ctx;
    int64_t len = turn_tokens(w->pick_pd, (int)t), room = w->pick_budget - w->pick_used;
    int take = (int)(len < room ? len : room);
    w->pick_turn[w->n_pick] = t;
    w->pick_len[w->n_pick++] = take;
    w->pick_used += take;
    return w->pick_used < w->pick_budget;
}

/* The turns of pd matching the question best, at most budget tokens, in their order in the
 * dialogue, into w->hist; *n tokens; *evidence: whether ev_turn is among them. */
static mn_status retrieve(worker *w, const prep_dialogue *pd, const char *question, int budget, int ev_turn,
                          int64_t *n, int *evidence) {
    w->n_pick = 0;
    w->pick_used = 0;
    w->pick_budget = budget;
    w->pick_pd = pd;
    *n = 0;
    *evidence = 0;
    if (budget > 0)
        MN_TRY(mn_eval_index_query(w->ix, question, pick_turn, w));
    for (int i = 1; i < w->n_pick; i++) /* chronological: insertion sort of a few turns */
        for (int j = i; j > 0 && w->pick_turn[j - 1] > w->pick_turn[j]; j--) {
            int64_t t = w->pick_turn[j];
            int l = w->pick_len[j];
            w->pick_turn[j] = w->pick_turn[j - 1], w->pick_len[j] = w->pick_len[j - 1];
            w->pick_turn[j - 1] = t, w->pick_len[j - 1] = l;
        }
    for (int i = 0; i < w->n_pick; i++) {
        memcpy(w->hist + *n, pd->hist_tokens + turn_offset(pd, (int)w->pick_turn[i]), (size_t)w->pick_len[i] * sizeof(int32_t));
        *n += w->pick_len[i];
        *evidence |= w->pick_turn[i] == ev_turn;
    }
    return MN_OK;
}

/* The summary of variant v as history: head + summary + <|eot|>, into w->hist. */
static int64_t summary_history(worker *w, const summary_prompt *sp, int v, int32_t eot) {
    int n = 0;
    memcpy(w->hist, sp->head, (size_t)sp->n_head * sizeof(int32_t));
    n += sp->n_head;
    memcpy(w->hist + n, w->summary[v], (size_t)w->summary_len[v] * sizeof(int32_t));
    n += w->summary_len[v];
    w->hist[n++] = eot;
    return n;
}

/* After history piece j: the decoder (R_0) rewrites variant v's summary from the previous one
 * and the piece, greedily, at most sp->cap[v] tokens, stopping at <|eot|> or <|turn|>. */
static mn_status summary_rewrite(worker *w, const summary_prompt *sp, int v, const prep_dialogue *pd, int64_t j,
                                 dialogue_acc *acc, int32_t eot) {
    const int N = mn_model_config(w->model)->max_turn_tokens, cap = sp->cap[v];
    int n = (int)summary_history(w, sp, v, eot);
    memcpy(w->seq, w->hist, (size_t)n * sizeof(int32_t));
    int len = (int)(pd->hist_start[j + 1] - pd->hist_start[j]), room = N - n - sp->n_tail - cap;
    if (len > room) { /* room >= SUMMARY_MIN_TURN by the cap (mn_eval_run) */
        len = room;
        acc->write_cut[v]++;
    }
    memcpy(w->seq + n, pd->hist_tokens + pd->hist_start[j], (size_t)len * sizeof(int32_t));
    n += len;
    memcpy(w->seq + n, sp->tail, (size_t)sp->n_tail * sizeof(int32_t));
    n += sp->n_tail;
    mn_sampling greedy = {0.0f, 0, 1.0f};
    uint64_t rng = 1;
    int n_out = 0;
    double t0 = mn_clock_s();
    MN_TRY(mn_generate(w->model, w->r0, w->seq, n, n + cap, sp->stop, 2, &greedy, &rng, w->rewrite, &n_out));
    acc->write_ms[v][mn_eval_bucket(j + 1, MN_EVAL_INDEX_BUCKETS)] += 1e3 * (mn_clock_s() - t0);
    acc->write_tokens[v] += n_out - n;
    int m = n_out - n;
    if (m > 0 && (w->rewrite[n_out - 1] == sp->stop[0] || w->rewrite[n_out - 1] == sp->stop[1]))
        m--;
    memcpy(w->summary[v], w->rewrite + n, (size_t)m * sizeof(int32_t));
    w->summary_len[v] = m;
    return MN_OK;
}

/* What a history mode (window, full, retrieval, summary) shows before a question: *h, *want
 * tokens, of which the last `room` fit. -1 in *want: not scored (full does not fit). */
static mn_status probe_history(worker *w, const mn_eval_variant_spec *spec, int v, const prep_dialogue *pd,
                               const prep_probe *p, const summary_prompt *sp, int room, int32_t eot,
                               const int32_t **h, int64_t *want, int *evidence, dialogue_acc *acc) {
    const int64_t hist_avail = pd->hist_start[p->hist_before];
    *evidence = -1;
    double state_tokens = 0, state_bytes = 0;
    switch (spec->mode) {
    case MN_EVAL_RETRIEVAL: {
        int budget = spec->window < room ? spec->window : room;
        if (budget < spec->window && hist_avail > budget)
            acc->window_clipped[v]++;
        double t0 = mn_clock_s();
        MN_TRY(retrieve(w, pd, pd->dl->probes[p->index].question, budget, p->ev_turn, want, evidence));
        acc->query_ms[v] += 1e3 * (mn_clock_s() - t0);
        *h = w->hist;
        state_tokens = (double)hist_avail;
        state_bytes = (double)mn_eval_index_bytes(w->ix);
        if (p->ev_turn < 0)
            *evidence = -1;
        break;
    }
    case MN_EVAL_SUMMARY:
        *want = summary_history(w, sp, v, eot);
        *h = w->hist;
        state_tokens = w->summary_len[v];
        state_bytes = state_tokens * sizeof(int32_t);
        break;
    default: /* window, full: the last tokens of the rendered history */
        *want = spec->mode == MN_EVAL_FULL ? hist_avail : (spec->window < hist_avail ? spec->window : hist_avail);
        if (spec->mode == MN_EVAL_FULL && *want > room) {
            *want = -1;
            return MN_OK;
        }
        *h = pd->hist_tokens + hist_avail - *want;
        int64_t shown = *want < room ? *want : room;
        if (p->ev_turn >= 0)
            *evidence = hist_avail - shown <= turn_offset(pd, p->ev_turn);
        state_tokens = (double)*want;
        state_bytes = state_tokens * sizeof(int32_t);
    }
    acc->state_tokens[v] += state_tokens;
    if ((int64_t)state_tokens > acc->state_max[v])
        acc->state_max[v] = (int64_t)state_tokens;
    acc->state_bytes[v] += state_bytes;
    acc->state_n[v]++;
    return MN_OK;
}

/* Reads the question pieces of the group's probes marked in group_read into R (even slots: from
 * the state before the probe, when `from_state`; odd: from R_0, when `from_r0`), piece by
 * piece, each piece of every such probe in one mn_update_batch. */
static mn_status read_questions(worker *w, const prep_dialogue *pd, int64_t j0, int from_state, int from_r0) {
    const size_t S = mn_state_floats(w->model);
    const prep_probe *probes = w->group;
    const int n = w->n_group;
    int most = 0;
    for (int i = 0; i < n; i++) {
        const float *before = w->block_states + (size_t)(probes[i].hist_before - j0) * S;
        memcpy(w->rq + (size_t)(2 * i) * S, before, S * sizeof(float));
        memcpy(w->rq + (size_t)(2 * i + 1) * S, w->r0, S * sizeof(float));
        if (probes[i].q_count > most)
            most = probes[i].q_count;
    }
    for (int q = 0; q < most; q++) {
        int m = 0, slot[EVAL_PROBE_GROUP * 2];
        w->q_offsets[0] = 0;
        for (int i = 0; i < 2 * n; i++) {
            const prep_probe *p = &probes[i / 2];
            if (q >= p->q_count || !w->group_read[i / 2] || !(i % 2 ? from_r0 : from_state))
                continue;
            int64_t t = p->q_first + q, len = pd->c.turn_start[t + 1] - pd->c.turn_start[t];
            memcpy(w->q_tokens + w->q_offsets[m], pd->c.tokens + pd->c.turn_start[t], (size_t)len * sizeof(int32_t));
            memcpy(w->rq_tmp + (size_t)m * S, w->rq + (size_t)i * S, S * sizeof(float));
            w->q_offsets[m + 1] = w->q_offsets[m] + len;
            slot[m++] = i;
        }
        if (m)
            MN_TRY(mn_update_batch(w->model, m, w->q_tokens, w->q_offsets, w->rq_tmp, w->rq_tmp));
        for (int e = 0; e < m; e++)
            memcpy(w->rq + (size_t)slot[e] * S, w->rq_tmp + (size_t)e * S, S * sizeof(float));
    }
    return MN_OK;
}

/* Greedy generation of the group's slots slot[0..B) with room (max_tokens[s] > n_cur[s]), whose
 * prefixes are cache sequences 0..B-1 with their next-token logits in w->logits (rows 0..B-1):
 * one batched call per generated token reads the new tokens alone. w->prefix receives each
 * slot's generation. A call's time (start_ms: the prefixes' read) is shared among its slots by
 * the positions it read for each. */
static mn_status generate_chunk(worker *w, const int *slot, int B, int *n_cur, const int *max_tokens, int32_t eot,
                                double start_ms, dialogue_acc *acc) {
    const mn_config *cfg = mn_model_config(w->model);
    const int N = cfg->max_turn_tokens, V = cfg->vocab_size;
    int live[EVAL_SLOTS], row[EVAL_SLOTS], next[EVAL_SLOTS], n_live = 0;
    int32_t tok[EVAL_SLOTS];
    int64_t positions = 0;
    for (int e = 0; e < B; e++)
        if (n_cur[slot[e]] < max_tokens[slot[e]]) {
            positions += n_cur[slot[e]];
            row[n_live] = e;
            live[n_live++] = e;
        }
    const mn_sampling greedy = {0.0f, 0, 1.0f};
    double ms = start_ms;
    while (n_live) {
        int n_next = 0;
        for (int i = 0; i < n_live; i++) { /* logits row row[i] is cache sequence live[i] */
            const int s = slot[live[i]];
            uint64_t rng = 1; /* unused by greedy decoding */
            MN_TRY(mn_sample(w->logits + (size_t)row[i] * V, V, &greedy, &rng, &tok[n_next]));
            acc->gen_ms[w->slot_variant[s]] += positions ? ms * n_cur[s] / (double)positions : ms / n_live;
            acc->gen_tokens[w->slot_variant[s]]++;
            w->prefix[(size_t)s * N + n_cur[s]++] = tok[n_next];
            if (tok[n_next] != eot && n_cur[s] < max_tokens[s])
                next[n_next++] = live[i];
        }
        n_live = n_next;
        memcpy(live, next, (size_t)n_live * sizeof *live);
        if (!n_live)
            break;
        for (int i = 0; i < n_live; i++)
            row[i] = i;
        positions = 0; /* a step reads one position of each */
        double t0 = mn_clock_s();
        MN_TRY(mn_decoder_cache_append(w->cache, n_live, live, tok, w->logits));
        ms = 1e3 * (mn_clock_s() - t0);
    }
    return MN_OK;
}

/* Adds probe p, asked before history piece j0 + jb, to the group: a slot per variant it is
 * scored in, with its state and its decoder sequence before a choice. History modes take
 * their history now, as it stands at the question (retrieval's index, the summary). */
static mn_status group_add(worker *w, const mn_eval_options *o, const prep_dialogue *pd, const prep_probe *p,
                           int64_t jb, const summary_prompt *sp, mn_eval_probe_result *res, dialogue_acc *acc,
                           int32_t eot) {
    const int N = mn_model_config(w->model)->max_turn_tokens;
    const size_t S = mn_state_floats(w->model);
    const int qlen = question_len(pd, p);
    if (!w->n_group)
        w->group = p;
    const int i = w->n_group++;
    /* a question too long to share the decoder's pass with the answer is read into R */
    w->group_read[i] = o->question_in_state || qlen + 2 + p->longest > N;
    for (int v = 0; v < o->n_variants; v++) {
        const mn_eval_variant_spec *spec = &o->variants[v];
        const int memory = spec->mode == MN_EVAL_MEMORY;
        int32_t *pre = w->prefix + (size_t)w->n_slots * N;
        int np = 0;
        const float *r;
        res->evidence_shown[v] = -1;
        if (memory || spec->mode == MN_EVAL_NO_MEMORY) {
            if (w->group_read[i]) {
                r = w->rq + (size_t)(2 * i + !memory) * S; /* read_questions fills it */
            } else {
                /* the state before the question, then question and answer in the decoder's one pass */
                r = memory ? w->block_states + (size_t)jb * S : w->r0;
                append_question(pd, p, pre, &np);
            }
            acc->state_bytes[v] += memory ? (double)(S * sizeof(float)) : 0;
            acc->state_n[v]++;
        } else {
            /* R_0 and a history inside the decoder's one sequence of at most N tokens */
            int room = N - qlen - 2 - p->longest;
            if (room < 0)
                continue; /* unscored: the question and answer alone do not fit */
            const int32_t *h = NULL;
            int64_t want;
            MN_TRY(probe_history(w, spec, v, pd, p, sp, room, eot, &h, &want, &res->evidence_shown[v], acc));
            if (want < 0)
                continue; /* unscored: the whole history does not fit */
            int64_t shown = want < room ? want : room;
            if (shown < want)
                acc->window_clipped[v]++;
            acc->window_used[v] += (double)shown;
            memcpy(pre, h + want - shown, (size_t)shown * sizeof(int32_t));
            np = (int)shown;
            append_question(pd, p, pre, &np);
            r = w->r0;
        }
        pre[np++] = p->prefix[0];
        pre[np++] = p->prefix[1];
        w->slot_r[w->n_slots] = r;
        w->slot_prefix[w->n_slots] = np;
        w->slot_variant[w->n_slots] = v;
        w->slot_probe[w->n_slots++] = i;
    }
    return MN_OK;
}

/* Scores the group (probes asked in the block starting at piece j0): every choice of every
 * slot in one batched call, then greedy generation of every slot together; empties it. */
static mn_status group_score(worker *w, const mn_eval_options *o, const prep_dialogue *pd, int64_t j0,
                             mn_eval_probe_result *res, gen_ids *gens, dialogue_acc *acc, int32_t eot) {
    if (!w->n_group)
        return MN_OK;
    const int N = mn_model_config(w->model)->max_turn_tokens;
    const prep_probe *probes = w->group;
    int from_state = 0, from_r0 = 0;
    for (int v = 0; v < o->n_variants; v++) {
        from_state |= o->variants[v].mode == MN_EVAL_MEMORY;
        from_r0 |= o->variants[v].mode == MN_EVAL_NO_MEMORY;
    }
    if (from_state || from_r0)
        MN_TRY(read_questions(w, pd, j0, from_state, from_r0));
    /* every choice as the sequence prefix + choice (the layout mn_choice_scores reads) */
    w->choices.n = 0;
    int most = 1;
    for (int s = 0; s < w->n_slots; s++) {
        const prep_probe *p = &probes[w->slot_probe[s]];
        const int32_t *pre = w->prefix + (size_t)s * N;
        const int np = w->slot_prefix[s];
        most = p->n_choices > most ? p->n_choices : most;
        for (int c = 0; c < p->n_choices; c++) {
            int32_t *dst;
            MN_TRY(batch_open(&w->choices, np + p->choice_lens[c], &dst));
            memcpy(dst, pre, (size_t)np * sizeof(int32_t));
            memcpy(dst + np, p->choices[c], (size_t)p->choice_lens[c] * sizeof(int32_t));
            batch_close(&w->choices, np + p->choice_lens[c], w->slot_r[s], np);
        }
    }
    MN_TRY(batch_room(&w->choices));
    int n_cur[EVAL_SLOTS], max_tokens[EVAL_SLOTS];
    for (int s = 0; s < w->n_slots; s++) {
        const prep_probe *p = &probes[w->slot_probe[s]];
        const int np = w->slot_prefix[s];
        int budget = p->gold_len + 8 < o->max_gen_tokens ? p->gold_len + 8 : o->max_gen_tokens;
        n_cur[s] = np;
        max_tokens[s] = o->generate ? (np + budget < N ? np + budget : N) : np;
    }
    /* on the decoder's cache, a chunk of slots at a time: each prefix read once, its choices read
     * from copies of it, its generation going on from it */
    const int per_chunk = w->cache_seqs / (1 + most);
    for (int s0 = 0, c0 = 0; s0 < w->n_slots; s0 += per_chunk) {
        const int B = w->n_slots - s0 < per_chunk ? w->n_slots - s0 : per_chunk;
        int slot[EVAL_SLOTS], n_forks = 0;
        w->gen.n = 0;
        for (int e = 0; e < B; e++) {
            const int s = slot[e] = s0 + e, np = w->slot_prefix[s];
            int32_t *dst;
            MN_TRY(batch_open(&w->gen, np, &dst));
            memcpy(dst, w->prefix + (size_t)s * N, (size_t)np * sizeof(int32_t));
            batch_close(&w->gen, np, w->slot_r[s], 1);
        }
        double t0 = mn_clock_s();
        MN_TRY(mn_decoder_cache_start(w->cache, B, w->gen.tokens, w->gen.offsets, w->gen.states,
                                      o->generate ? w->logits : NULL));
        double start_ms = 1e3 * (mn_clock_s() - t0);
        for (int e = 0; e < B; e++) {
            const prep_probe *p = &probes[w->slot_probe[slot[e]]];
            for (int c = 0; c < p->n_choices; c++, c0++, n_forks++) {
                const int64_t at = w->choices.offsets[c0] + w->choices.first[c0];
                w->fork_src[n_forks] = e;
                w->fork_dst[n_forks] = B + n_forks;
                w->fork_tokens[n_forks] = w->choices.tokens + at;
                w->fork_lens[n_forks] = (int)(w->choices.offsets[c0 + 1] - at);
                w->fork_out[n_forks] = w->choices.out + at;
            }
        }
        MN_TRY(mn_decoder_cache_fork(w->cache, n_forks, w->fork_src, w->fork_dst));
        MN_TRY(mn_decoder_cache_score(w->cache, n_forks, w->fork_dst, w->fork_tokens, w->fork_lens, w->fork_out));
        if (o->generate)
            MN_TRY(generate_chunk(w, slot, B, n_cur, max_tokens, eot, start_ms, acc));
    }
    for (int s = 0, c0 = 0; s < w->n_slots; s++) {
        const prep_probe *p = &probes[w->slot_probe[s]];
        mn_eval_probe_result *pr = &res[p->result];
        const int v = w->slot_variant[s];
        int best = mn_choice_scores(w->choices.out, w->choices.offsets + c0, w->choices.first + c0, p->n_choices,
                                    w->scores);
        c0 += p->n_choices;
        pr->scored[v] = 1;
        pr->best[v] = best;
        pr->gold_ll[v] = w->scores[p->answer];
    }
    if (o->generate) {
        for (int s = 0; s < w->n_slots; s++) {
            const int np = w->slot_prefix[s];
            if (max_tokens[s] <= np)
                continue;
            gen_ids *g = &gens[(size_t)probes[w->slot_probe[s]].result * MN_EVAL_MAX_VARIANTS + w->slot_variant[s]];
            const int32_t *out = w->prefix + (size_t)s * N + np;
            int len = n_cur[s] - np;
            if (len > 0 && out[len - 1] == eot)
                len--;
            g->ids = malloc((size_t)(len ? len : 1) * sizeof(int32_t));
            if (!g->ids)
                return mn_fail(MN_ERR_NOMEM, "eval: out of memory");
            memcpy(g->ids, out, (size_t)len * sizeof(int32_t));
            g->n = len;
        }
    }
    w->n_group = w->n_slots = 0;
    return MN_OK;
}

/* Adds the LM sequences of history piece j (before it: block position jb) in every variant to
 * w->lm: memory and no_memory read the piece alone, window, full and summary the shown history
 * then the piece. Retrieval has no question to rank turns by here, so it is not measured
 * (every turn counts as skipped). */
static mn_status lm_add(worker *w, const mn_eval_options *o, const prep_dialogue *pd, const summary_prompt *sp,
                        int64_t j, int64_t jb, dialogue_acc *acc, int32_t eot) {
    const int N = mn_model_config(w->model)->max_turn_tokens;
    const size_t S = mn_state_floats(w->model);
    const int32_t *toks = pd->hist_tokens + pd->hist_start[j];
    const int n = (int)(pd->hist_start[j + 1] - pd->hist_start[j]);
    if (n < 2)
        return MN_OK;
    const int64_t hist_avail = pd->hist_start[j];
    const int q0 = w->lm.n; /* this piece's sequences */
    for (int v = 0; v < o->n_variants; v++) {
        const mn_eval_variant_spec *spec = &o->variants[v];
        if (spec->mode == MN_EVAL_RETRIEVAL) {
            acc->lm_skipped[v]++;
            continue;
        }
        int shown = 0;
        const int32_t *end = pd->hist_tokens + hist_avail; /* the shown history ends here */
        if (spec->mode != MN_EVAL_MEMORY && spec->mode != MN_EVAL_NO_MEMORY) {
            int64_t want =
                spec->mode == MN_EVAL_FULL ? hist_avail : (spec->window < hist_avail ? spec->window : hist_avail);
            if (spec->mode == MN_EVAL_SUMMARY) {
                want = summary_history(w, sp, v, eot);
                end = w->hist + want;
            } else if (spec->mode == MN_EVAL_FULL && want + n > N) {
                acc->lm_skipped[v]++;
                continue;
            }
            shown = (int)(want < N - n ? want : N - n);
        }
        const float *r = spec->mode == MN_EVAL_MEMORY ? w->block_states + (size_t)jb * S : w->r0;
        w->lm_variant[w->n_lm] = v;
        w->lm_bucket[w->n_lm] = mn_eval_bucket(j + 1, MN_EVAL_INDEX_BUCKETS);
        /* a variant that reads what another already reads (the first turn in every mode, a
         * window that holds the whole history) shares its sequence */
        int same = -1;
        for (int q = q0; q < w->lm.n && same < 0; q++)
            if (w->lm.offsets[q + 1] - w->lm.offsets[q] == shown + n &&
                !memcmp(w->lm.tokens + w->lm.offsets[q], end - shown, (size_t)shown * sizeof(int32_t)) &&
                (w->lm.states[q] == r || !memcmp(w->lm.states[q], r, S * sizeof(float))))
                same = q; /* the piece's tokens follow in both */
        if (same >= 0) {
            w->lm_seq[w->n_lm++] = same;
            continue;
        }
        int32_t *seq;
        MN_TRY(batch_open(&w->lm, shown + n, &seq));
        memcpy(seq, end - shown, (size_t)shown * sizeof(int32_t));
        memcpy(seq + shown, toks, (size_t)n * sizeof(int32_t));
        w->lm_seq[w->n_lm++] = w->lm.n;
        batch_close(&w->lm, shown + n, r, shown + 1); /* the turn's tokens after its first */
    }
    return MN_OK;
}

/* The LM sequences of a block in one batched decoder call; its time is shared among the
 * sequences by their positions. Empties w->lm. */
static mn_status lm_score(worker *w, dialogue_acc *acc) {
    double t0 = mn_clock_s();
    MN_TRY(batch_room(&w->lm));
    if (w->lm.n)
        MN_TRY(mn_sequence_log_probs(w->model, w->lm.n, w->lm.tokens, w->lm.offsets, w->lm.states, w->lm.first,
                                     w->lm.out));
    double ms = 1e3 * (mn_clock_s() - t0);
    const int64_t positions = w->lm.n ? w->lm.offsets[w->lm.n] : 0;
    for (int e = 0; e < w->n_lm; e++) {
        int v = w->lm_variant[e], ib = w->lm_bucket[e], q = w->lm_seq[e];
        int64_t len = w->lm.offsets[q + 1] - w->lm.offsets[q];
        acc->fwd_ms[v][ib] += ms * (double)len / (double)positions;
        acc->fwd_n[v][ib]++;
        double loss = 0.0;
        for (int64_t i = w->lm.first[q]; i < len; i++)
            loss -= w->lm.out[w->lm.offsets[q] + i];
        acc->lm_loss[v][ib] += loss;
        acc->lm_tokens[v][ib] += len - w->lm.first[q];
    }
    w->lm.n = w->n_lm = 0;
    return MN_OK;
}

/* One dialogue, in blocks of EVAL_BLOCK history pieces. At each position j of a block: the
 * probes asked there join the group (scored when it is full and at the block's end), piece j's
 * LM sequences join the block's batch, then the piece arrives: retrieval indexes its turn, R is
 * updated, each summary is rewritten. */
static mn_status walk(worker *w, const mn_eval_options *o, const prep_dialogue *pd, const summary_prompt *sp,
                      mn_eval_probe_result *res, gen_ids *gens, dialogue_acc *acc, int32_t eot) {
    size_t S = mn_state_floats(w->model);
    memcpy(w->r, w->r0, S * sizeof(float));
    int retrieval = 0;
    for (int v = 0; v < o->n_variants; v++) {
        retrieval |= o->variants[v].mode == MN_EVAL_RETRIEVAL;
        w->summary_len[v] = 0;
    }
    mn_eval_index_free(w->ix); /* the previous dialogue's */
    w->ix = NULL;
    if (retrieval)
        MN_TRY(mn_eval_index_open(&w->ix));
    w->lm.n = w->n_lm = w->n_group = w->n_slots = 0;
    int pi = 0, next_turn = 0;
    /* positions j = 0..n_hist: R before history piece j (after it for j = n_hist) */
    for (int64_t j0 = 0; j0 <= pd->n_hist; j0 += EVAL_BLOCK) {
        int64_t j1 = j0 + EVAL_BLOCK < pd->n_hist + 1 ? j0 + EVAL_BLOCK : pd->n_hist + 1;
        for (int64_t j = j0; j < j1; j++) {
            memcpy(w->block_states + (size_t)(j - j0) * S, w->r, S * sizeof(float));
            while (pi < pd->n_probes && pd->probes[pi].hist_before == j) {
                const prep_probe *p = &pd->probes[pi++];
                if (w->n_group == EVAL_PROBE_GROUP)
                    MN_TRY(group_score(w, o, pd, j0, res, gens, acc, eot));
                MN_TRY(group_add(w, o, pd, p, j - j0, sp, &res[p->result], acc, eot));
            }
            if (j == pd->n_hist)
                break;
            if (o->lm)
                MN_TRY(lm_add(w, o, pd, sp, j, j - j0, acc, eot));
            if (retrieval && next_turn < pd->dl->n_turns && pd->piece_of_turn[next_turn] == j) {
                /* a turn arrives: indexed whole (its pieces are all read before any question) */
                double t0 = mn_clock_s();
                MN_TRY(mn_eval_index_add(w->ix, next_turn, pd->dl->turns[next_turn].text));
                double ms = 1e3 * (mn_clock_s() - t0);
                for (int v = 0; v < o->n_variants; v++)
                    if (o->variants[v].mode == MN_EVAL_RETRIEVAL)
                        acc->write_ms[v][mn_eval_bucket(j + 1, MN_EVAL_INDEX_BUCKETS)] += ms;
                next_turn++;
            }
            const int32_t *toks = pd->hist_tokens + pd->hist_start[j];
            int n = (int)(pd->hist_start[j + 1] - pd->hist_start[j]);
            double t0 = mn_clock_s();
            MN_TRY(mn_update(w->model, toks, n, w->r, w->r));
            int ib = mn_eval_bucket(j + 1, MN_EVAL_INDEX_BUCKETS);
            acc->upd_ms[ib] += 1e3 * (mn_clock_s() - t0);
            acc->upd_n[ib]++;
            for (int v = 0; v < o->n_variants; v++)
                if (o->variants[v].mode == MN_EVAL_SUMMARY)
                    MN_TRY(summary_rewrite(w, sp, v, pd, j, acc, eot));
        }
        /* the block's states are overwritten next: its LM and probes are scored now */
        MN_TRY(lm_score(w, acc));
        MN_TRY(group_score(w, o, pd, j0, res, gens, acc, eot));
    }
    return MN_OK;
}

static void worker_free(worker *w) {
    mn_decoder_cache_close(w->cache);
    mn_model_free(w->model);
    free(w->r0), free(w->r), free(w->block_states), free(w->rq), free(w->rq_tmp), free(w->q_tokens);
    free(w->prefix), free(w->logits), free(w->scores), free(w->seq), free(w->rewrite);
    free(w->hist), free(w->pick_turn), free(w->pick_len);
    free(w->fork_src), free(w->fork_dst), free(w->fork_lens), free(w->fork_tokens), free(w->fork_out);
    for (int v = 0; v < MN_EVAL_MAX_VARIANTS; v++)
        free(w->summary[v]);
    mn_eval_index_free(w->ix);
    batch_free(&w->lm), batch_free(&w->choices), batch_free(&w->gen);
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
    size_t S = mn_state_floats(src), N = (size_t)cfg->max_turn_tokens;
    w->r0 = malloc(S * sizeof(float));
    w->r = malloc(S * sizeof(float));
    w->block_states = malloc((EVAL_BLOCK + 1) * S * sizeof(float));
    w->rq = malloc(EVAL_PROBE_GROUP * 2 * S * sizeof(float));
    w->rq_tmp = malloc(EVAL_PROBE_GROUP * 2 * S * sizeof(float));
    w->q_tokens = malloc(EVAL_PROBE_GROUP * 2 * N * sizeof(int32_t));
    w->prefix = malloc(EVAL_SLOTS * N * sizeof(int32_t));
    w->logits = malloc((size_t)EVAL_SLOTS * cfg->vocab_size * sizeof(float));
    w->scores = malloc((size_t)(max_choices ? max_choices : 1) * sizeof(double));
    w->seq = malloc((N + (size_t)cfg->n_slots) * sizeof(int32_t));
    w->rewrite = malloc((N + (size_t)cfg->n_slots) * sizeof(int32_t));
    w->hist = malloc((N + 1) * sizeof(int32_t));
    w->pick_turn = malloc((N + 1) * sizeof *w->pick_turn);
    w->pick_len = malloc((N + 1) * sizeof *w->pick_len);
    int bad = 0;
    for (int v = 0; v < MN_EVAL_MAX_VARIANTS; v++)
        bad |= !(w->summary[v] = malloc(N * sizeof(int32_t)));
    if (bad || !w->r0 || !w->r || !w->block_states || !w->rq || !w->rq_tmp || !w->q_tokens || !w->prefix ||
        !w->logits || !w->scores || !w->seq || !w->rewrite || !w->hist || !w->pick_turn || !w->pick_len) {
        worker_free(w);
        return mn_fail(MN_ERR_NOMEM, "eval: out of memory for a worker");
    }
    /* a whole group's slots and their choices, within the cache's budget, at least one slot's */
    int cap = mn_decoder_cache_capacity(w->model), want = EVAL_SLOTS * (1 + max_choices);
    w->cache_seqs = cap < want ? cap : want;
    if (w->cache_seqs < 1 + max_choices)
        w->cache_seqs = 1 + max_choices;
    size_t forks = (size_t)w->cache_seqs; /* a chunk's copies, one per choice */
    w->fork_src = malloc(forks * sizeof(int)), w->fork_dst = malloc(forks * sizeof(int));
    w->fork_lens = malloc(forks * sizeof(int));
    w->fork_tokens = malloc(forks * sizeof *w->fork_tokens), w->fork_out = malloc(forks * sizeof *w->fork_out);
    if (!w->fork_src || !w->fork_dst || !w->fork_lens || !w->fork_tokens || !w->fork_out) {
        worker_free(w);
        return mn_fail(MN_ERR_NOMEM, "eval: out of memory for a worker");
    }
    st = mn_decoder_cache_open(w->model, w->cache_seqs, &w->cache);
    if (st == MN_OK)
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
    if (p->evidence_shown[v] >= 0) {
        t->evidence_n++;
        t->evidence_shown += p->evidence_shown[v];
    }
}

/* The summary prompt's tokens, and each summary variant's cap: B, or less where the previous
 * summary, the prompt, SUMMARY_MIN_TURN tokens of the turn and the new summary would not fit
 * the decoder's N positions. */
static mn_status summary_prepare(mn_tokenizer *tok, const mn_config *cfg, const mn_eval_options *o, summary_prompt *sp) {
    memset(sp, 0, sizeof *sp);
    const char *texts[2] = {SUMMARY_HEAD_TEXT, SUMMARY_TAIL_TEXT};
    int32_t *out[2] = {sp->head, sp->tail};
    int *n[2] = {&sp->n_head, &sp->n_tail};
    for (int i = 0; i < 2; i++) {
        out[i][0] = mn_tokenizer_special(tok, MN_TOK_TURN);
        out[i][1] = mn_tokenizer_special(tok, MN_TOK_SPEAKER_B);
        size_t count = 0;
        MN_TRY(mn_tokenizer_encode_ids(tok, texts[i], strlen(texts[i]), out[i] + 2, 38, &count));
        if (count > 38)
            return mn_fail(MN_ERR_INVALID_ARG, "eval: the summary prompt '%s' is %zu tokens (at most 38)", texts[i], count);
        *n[i] = 2 + (int)count;
    }
    sp->stop[0] = mn_tokenizer_special(tok, MN_TOK_EOT);
    sp->stop[1] = mn_tokenizer_special(tok, MN_TOK_TURN);
    const int fit = (cfg->max_turn_tokens - sp->n_head - 1 - sp->n_tail - SUMMARY_MIN_TURN) / 2;
    for (int v = 0; v < o->n_variants; v++) {
        if (o->variants[v].mode != MN_EVAL_SUMMARY)
            continue;
        if (fit < 1)
            return mn_fail(MN_ERR_INVALID_ARG,
                           "eval: summary: the model's %d tokens per turn leave no room for a summary (the prompt takes %d, "
                           "the turn at least %d)",
                           cfg->max_turn_tokens, sp->n_head + 1 + sp->n_tail, SUMMARY_MIN_TURN);
        sp->cap[v] = o->variants[v].window < fit ? o->variants[v].window : fit;
    }
    return MN_OK;
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
    for (int v = 0; v < o->n_variants; v++) {
        const mn_eval_variant_spec *spec = &o->variants[v];
        if (spec->mode < 0 || spec->mode >= MN_EVAL_N_MODES)
            return mn_fail(MN_ERR_INVALID_ARG, "eval: variant %d: unknown mode %d", v, (int)spec->mode);
        if ((spec->mode == MN_EVAL_WINDOW || spec->mode == MN_EVAL_RETRIEVAL || spec->mode == MN_EVAL_SUMMARY) &&
            spec->window < 1)
            return mn_fail(MN_ERR_INVALID_ARG, "eval: %s: %d tokens (want >= 1)", mn_eval_mode_names[spec->mode],
                           spec->window);
    }
    summary_prompt sp;
    MN_TRY(summary_prepare(tok, cfg, o, &sp));
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
        /* the first of a sized mode is plain "window", the others "window_64" */
        int first = 1;
        for (int u = 0; u < v; u++)
            first &= o->variants[u].mode != vr->spec.mode;
        const char *name = mn_eval_mode_names[vr->spec.mode];
        if (vr->spec.mode == MN_EVAL_WINDOW || vr->spec.mode == MN_EVAL_RETRIEVAL || vr->spec.mode == MN_EVAL_SUMMARY) {
            if (!first)
                snprintf(vr->name, sizeof vr->name, "%s_%d", name, vr->spec.window);
            else
                snprintf(vr->name, sizeof vr->name, "%s", name);
        } else {
            snprintf(vr->name, sizeof vr->name, "%s", name);
        }
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
        mn_status s = walk(w, o, &pds[d], &sp, out->probe_results, gens, &accs[d], eot);
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
            for (int b = 0; b < MN_EVAL_INDEX_BUCKETS; b++) {
                vr->write_ms_sum += a->write_ms[v][b];
                vr->write_ms_by_index[b] += a->write_ms[v][b];
            }
            vr->write_tokens += a->write_tokens[v];
            vr->write_cut += a->write_cut[v];
            vr->query_ms_sum += a->query_ms[v];
            vr->state_tokens_sum += a->state_tokens[v];
            vr->state_bytes_sum += a->state_bytes[v];
            vr->state_n += a->state_n[v];
            if (a->state_max[v] > vr->state_tokens_max)
                vr->state_tokens_max = a->state_max[v];
        }
    }
    for (int v = 0; v < o->n_variants; v++) {
        mn_eval_variant_result *vr = &out->variants[v];
        if (vr->spec.mode == MN_EVAL_MEMORY)
            vr->write_ms_sum = out->update_ms_sum; /* R's update after each turn */
        vr->summary_cap = sp.cap[v];
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
