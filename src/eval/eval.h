/* Evaluation of recall and language modelling over canonical dialogues with probes
 * (docs/eval.md; the output keys are those of docs/dialogue-format.md).
 *
 * One pass over each dialogue's turns keeps the session state R; every probe is scored when
 * its `after` is reached, in each variant:
 *   memory     the question turn is read into R, the answer turn is scored with that state;
 *   no_memory  the same with R reset to R_0 before the question;
 *   window W   no memory (R_0), the decoder reads the last W tokens of the rendered history,
 *              then the question turn, then the answer turn, all inside one decoder sequence
 *              of at most max_turn_tokens positions after the k slots;
 *   full       window with the whole history, only where it fits in that sequence;
 *   retrieval W the turns read so far are indexed (SQLite FTS5, retrieval.c); the best ones by
 *              bm25 against the question, at most W tokens, in their order, stand for the window;
 *   summary B  after each turn the decoder (R_0) rewrites a text summary of at most B tokens
 *              from the previous one and the turn, greedily; the summary stands for the window.
 * Dialogues are independent, so they are spread over OpenMP threads, each with its own copy
 * of the model running single-threaded (mn_model_set_threads 1); results are merged in dialogue
 * order, so they do not depend on the thread count (timings aside). No process-wide setting
 * is changed: with a multi-threaded OpenBLAS each worker's products are threaded again by
 * OpenBLAS (correct, but the cores are oversubscribed; the mnemo CLI runs OpenBLAS on one
 * thread). */
#ifndef MN_EVAL_H
#define MN_EVAL_H

#include <stdint.h>
#include <stdio.h>

#include "mnemo.h"
#include "text/dialogue.h"
#include "text/tokenizer.h"

typedef enum {
    MN_EVAL_MEMORY = 0, MN_EVAL_NO_MEMORY, MN_EVAL_WINDOW, MN_EVAL_FULL, MN_EVAL_RETRIEVAL, MN_EVAL_SUMMARY,
    MN_EVAL_N_MODES
} mn_eval_mode;
/* "memory", "no_memory", "window", "full", "retrieval", "summary" */
extern const char *const mn_eval_mode_names[MN_EVAL_N_MODES];

#define MN_EVAL_MAX_VARIANTS 12
#define MN_EVAL_TURN_BUCKETS 10  /* distance in turns: [1,2) [2,4) ... [256,512) [512,inf) */
#define MN_EVAL_TOKEN_BUCKETS 16 /* distance in tokens: [1,2) ... [32768,inf) */
#define MN_EVAL_INDEX_BUCKETS 16 /* turn index (1-based): [1,2) ... [32768,inf) */
#define MN_EVAL_CATEGORIES 6     /* 0: none; LoCoMo 1..5 */

/* Power-of-two bucket of v >= 1: floor(log2 v), the last bucket open-ended; -1 for v < 1. */
int mn_eval_bucket(int64_t v, int n_buckets);
/* Bounds of bucket b: [*lo, *hi), *hi = -1 for the open-ended last bucket. */
void mn_eval_bucket_range(int b, int n_buckets, int64_t *lo, int64_t *hi);
/* Bucket b as a label: "1", "2-3", ..., "512+" (the open-ended last). */
void mn_eval_bucket_label(int b, int n_buckets, char *buf, size_t cap);

/* ---- answer normalisation (malloc'd results; NULL when out of memory) */
/* Exact match: lower-case (ASCII), ASCII punctuation removed, the words a/an/the removed,
 * whitespace collapsed. */
char *mn_eval_normalize_em(const char *s);
/* LoCoMo's normalize_answer (task_eval/evaluation.py): commas removed, lower-case, ASCII
 * punctuation removed, the words a/an/the/and removed, whitespace collapsed. */
char *mn_eval_normalize_locomo(const char *s);
/* 1 when the normalised (mn_eval_normalize_em) texts are equal. */
int mn_eval_exact_match(const char *prediction, const char *gold);
/* Token F1 over whitespace tokens of the LoCoMo-normalised texts, counting repeated tokens as
 * a multiset (LoCoMo's f1_score without its Porter stemming). 0 when either side is empty. */
double mn_eval_token_f1(const char *prediction, const char *gold);
/* LoCoMo's per-category rule: category 1: gold split at ',' and prediction split at ',',
 * the mean over gold parts of the best F1 against any prediction part; category 3: the gold
 * up to its first ';'; categories 2 and 4 (and 0, no category): token F1; category 5: 1 when
 * the lower-cased prediction contains "no information available" or "not mentioned", else 0. */
double mn_eval_locomo_score(const char *prediction, const char *gold, int category);

/* ---- running */
typedef struct {
    mn_eval_mode mode;
    int window; /* tokens of history: the window, the retrieved turns, the summary */
} mn_eval_variant_spec;

typedef struct {
    mn_eval_variant_spec variants[MN_EVAL_MAX_VARIANTS];
    int n_variants;
    int64_t max_probes;  /* score at most this many probes, in file order (0: all) */
    int threads;         /* dialogues evaluated in parallel, one thread each (0: OpenMP's default) */
    const struct mn_backend *backend; /* where each worker's model runs (src/model/backend.h); NULL: the CPU */
    int generate;        /* greedy generation for exact match and F1 */
    int max_gen_tokens;  /* generated answer tokens at most (the gold's length + 8 below that) */
    int lm;              /* per-turn LM loss of the dialogue turns */
    int question_in_state; /* memory, no_memory: 1 reads the question into R and decodes the
                            * answer from R alone (the protocol before 2026-12-05); 0 (default)
                            * decodes question and answer in one pass reading R (docs/eval.md),
                            * but for a question too long to share the pass with its answer */
    FILE *progress;      /* nullable: about 20 progress updates over the run */
    int progress_redraw; /* 1 (progress is a terminal): one line redrawn in place with '\r';
                          * 0 (a log): each update a line of its own */
} mn_eval_options;

/* memory, no_memory, window k, window 4k, full; generation and LM on; 32 answer tokens.
 * k is the model's n_slots. */
void mn_eval_options_default(mn_eval_options *o, int n_slots);
/* Parses "memory,no_memory,window,full,retrieval,summary" and token lists like "16,64" into
 * o->variants: window, retrieval and summary give one variant per size of their list (NULL:
 * the window sizes of the defaults, k and 4k). Message names the bad item. */
mn_status mn_eval_parse_variants(mn_eval_options *o, const char *modes, const char *windows, const char *retrieval,
                                 const char *summary);

typedef struct {
    int64_t n;           /* probes scored */
    int64_t mc_n;        /* with >= 2 choices */
    int64_t mc_correct;
    int64_t gen_n;       /* with a generated answer */
    int64_t em_correct;
    double f1_sum;       /* mn_eval_locomo_score of the generated answer */
    double gold_ll_sum;  /* mean log-likelihood per token of the gold answer */
    int64_t evidence_n;  /* window, full, retrieval: probes with an evidence turn */
    int64_t evidence_shown; /* ... whose start was in the history the decoder read */
} mn_eval_tally;

typedef struct {
    mn_eval_variant_spec spec;
    char name[32];       /* "memory", "no_memory", "window", "window_64", "full" */
    mn_eval_tally all, no_distance;
    mn_eval_tally by_turns[MN_EVAL_TURN_BUCKETS];
    mn_eval_tally by_tokens[MN_EVAL_TOKEN_BUCKETS];
    mn_eval_tally by_category[MN_EVAL_CATEGORIES];
    int64_t unscored;            /* probes this variant could not score (full: too long) */
    double window_used_sum;      /* history tokens actually shown (window and full) */
    int64_t window_clipped;      /* probes whose window was cut to fit the decoder */
    double lm_loss_sum;          /* nats over lm_tokens targets */
    int64_t lm_tokens, lm_turns_skipped;
    double lm_loss_by_index[MN_EVAL_INDEX_BUCKETS];
    int64_t lm_tokens_by_index[MN_EVAL_INDEX_BUCKETS];
    double forward_ms_by_index[MN_EVAL_INDEX_BUCKETS]; /* decoder pass over a turn */
    int64_t forward_turns_by_index[MN_EVAL_INDEX_BUCKETS];
    double gen_ms_sum;           /* greedy generation */
    int64_t gen_tokens;
    /* what the mode costs besides the decoder: per dialogue turn (memory: the update; summary:
     * the rewrite; retrieval: indexing the turn), per probe (retrieval: the query), and the
     * state it keeps, summed at the probes (memory: R; window: the last W tokens; full and
     * retrieval: the whole history, retrieval's bytes SQLite's memory for the index; summary:
     * the summary's tokens) */
    double write_ms_sum;
    double write_ms_by_index[MN_EVAL_INDEX_BUCKETS]; /* retrieval, summary: per turn-index bucket */
    int64_t write_tokens;        /* generated by the summary's rewrites */
    int64_t write_cut;           /* summary: turns cut to fit the rewrite's prompt */
    int summary_cap;             /* summary: tokens a summary may have (B, or less to fit the decoder) */
    double query_ms_sum;
    double state_tokens_sum, state_bytes_sum;
    int64_t state_n;
    int64_t state_tokens_max;    /* the largest of those (summary: the longest summary at a probe) */
} mn_eval_variant_result;

typedef struct {
    int64_t dialogue;    /* index in the input list */
    int probe;           /* index in the dialogue */
    int category;
    int distance_turns;  /* after - max(evidence); -1 without evidence */
    int64_t distance_tokens; /* rendered history tokens from the start of the evidence turn to the question; -1 */
    int n_choices, answer;
    int scored[MN_EVAL_MAX_VARIANTS];
    int best[MN_EVAL_MAX_VARIANTS];       /* chosen choice */
    double gold_ll[MN_EVAL_MAX_VARIANTS];
    int em[MN_EVAL_MAX_VARIANTS];
    double f1[MN_EVAL_MAX_VARIANTS];
    char *generated[MN_EVAL_MAX_VARIANTS]; /* NULL when not generated */
    int evidence_shown[MN_EVAL_MAX_VARIANTS]; /* 1/0: the evidence turn's start was in the history the
                                               * decoder read (window, full, retrieval); -1: no such history */
} mn_eval_probe_result;

typedef struct {
    int64_t dialogues, turns, history_tokens, probes, probes_skipped;
    int n_variants;
    mn_eval_variant_result variants[MN_EVAL_MAX_VARIANTS];
    mn_eval_probe_result *probe_results; /* (probes) in file order */
    double update_ms_sum;
    int64_t updates;
    double update_ms_by_index[MN_EVAL_INDEX_BUCKETS];
    int64_t updates_by_index[MN_EVAL_INDEX_BUCKETS];
    size_t state_floats;
    int n_slots, max_turn_tokens, threads;
    double wall_s;
} mn_eval_result;

/* Evaluates model (not modified) on the dialogues. tok must be the model's tokenizer. */
mn_status mn_eval_run(mn_model *model, mn_tokenizer *tok, const mn_dialogue_list *list, const mn_eval_options *o,
                      mn_eval_result *out);
void mn_eval_result_free(mn_eval_result *r);

/* ---- the retrieval baseline's index (retrieval.c): SQLite FTS5 in memory */
typedef struct mn_eval_index mn_eval_index;
mn_status mn_eval_index_open(mn_eval_index **out);
void mn_eval_index_free(mn_eval_index *ix);
/* Adds a turn's text under id. */
mn_status mn_eval_index_add(mn_eval_index *ix, int64_t id, const char *text);
/* The FTS5 query of a question (malloc'd): each word (a run of ASCII letters and digits and
 * non-ASCII bytes) as a quoted string, joined by OR; FTS5 syntax in the question ("*", ":",
 * quotes, NEAR, AND) stays plain text. Empty when the question has no word. */
mn_status mn_eval_index_match(const char *question, char **out);
/* Calls hit(ctx, id) for the turns matching any word of question, best bm25() first (ties:
 * the later id first), until hit returns 0. */
typedef int mn_eval_index_hit(void *ctx, int64_t id);
mn_status mn_eval_index_query(mn_eval_index *ix, const char *question, mn_eval_index_hit *hit, void *ctx);
/* SQLite's memory for the index's pages (the whole history's text and its postings). */
int64_t mn_eval_index_bytes(mn_eval_index *ix);

/* ---- reports */
/* The JSON report (docs/dialogue-format.md keys, plus the extras of docs/eval.md), written
 * atomically. */
mn_status mn_eval_write_json(const mn_eval_result *r, const char *checkpoint, const char *data, const char *path);
/* One JSON line per probe: distances, category and each variant's choice, gold
 * log-likelihood, generation, exact match and F1, and for window, full and retrieval whether
 * the evidence turn was in the history shown. */
mn_status mn_eval_write_probes(const mn_eval_result *r, const mn_dialogue_list *list, const char *path);
/* Multiple-choice accuracy by distance in turns, one column per variant. */
void mn_eval_print_table(const mn_eval_result *r, FILE *out);
/* Whitespace-separated data for gnuplot: recall by distance (one row per turn bucket with
 * probes: lo hi then accuracy per variant, NaN where empty) and cost by turn index (the
 * update, each variant's decoder pass, then the write cost of each retrieval and summary
 * variant). */
mn_status mn_eval_write_recall_data(const mn_eval_result *r, const char *path);
mn_status mn_eval_write_cost_data(const mn_eval_result *r, const char *path);

/* ---- plots (plot.c) */
/* The data file OUT.dat (as above) and a gnuplot script OUT.gp that draws it into png, where
 * OUT is png without its ".png"; *script gets OUT.gp (malloc'd). Names and the title are
 * quoted for gnuplot, so any file name is taken literally (one with a line break is refused).
 * Recall: multiple-choice accuracy against distance, one line per variant, and chance;
 * cost: the update, each variant's decoder time per turn and the retrieval's indexing and the
 * summary's rewrite per turn against the turn index. */
mn_status mn_eval_write_recall_plot(const mn_eval_result *r, const char *png, const char *title, char **script);
mn_status mn_eval_write_cost_plot(const mn_eval_result *r, const char *png, char **script);
/* Whether the plot's three files can be written: a name without a line break, in a folder
 * that exists and is writable; else one message naming the folder and the reason. The
 * writers above check it too; a caller checks first to fail before the evaluation. */
mn_status mn_eval_check_plot(const char *png);

#endif
