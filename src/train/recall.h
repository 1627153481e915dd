/* Synthetic token-level recall episodes: a task small enough for a tiny model to learn in
 * minutes, which can only be solved through the session memory (docs/training.md).
 *
 * Token ids: 0 pad, 1 <fact>, 2 <ask>, 3 <chat>, 4 <eot>, then n_keys key tokens, n_values
 * value tokens, and the remaining ids up to vocab_size are filler words.
 *   fact turn:     <fact> key value <eot>
 *   filler turn:   <chat> w_1 .. w_m <eot>              (m uniform in filler_min..filler_max)
 *   question turn: <ask> key value <eot>                (value weighted answer_weight)
 * Each episode holds `facts` facts with distinct keys and values; each fact is asked about
 * once, d turns after it was stated (d drawn per fact). The question turn's decoder sees only
 * R and `<ask> key`, so the value must come from memory. Multiple choice: the answer and
 * n_choices - 1 distractor values (the episode's other values first, then random ones). */
#ifndef MN_RECALL_H
#define MN_RECALL_H

#include <stdint.h>

#include "core/rng.h"
#include "mnemo.h"

enum { MN_RECALL_PAD = 0, MN_RECALL_FACT, MN_RECALL_ASK, MN_RECALL_CHAT, MN_RECALL_EOT, MN_RECALL_FIRST_KEY };
#define MN_RECALL_MAX_CHOICES 16
#define MN_RECALL_MAX_FACTS 64

typedef struct {
    int vocab_size;               /* the model's V */
    int n_keys, n_values;         /* key and value tokens; the rest of V are filler words */
    int filler_min, filler_max;   /* words per filler turn */
    int facts;                    /* facts (and questions) per episode, >= 1 */
    int n_choices;                /* 2..MN_RECALL_MAX_CHOICES, <= n_values */
    float text_weight, answer_weight;
} mn_recall_task;

typedef struct {
    int fact_turn, question_turn; /* distance = question_turn - fact_turn */
    int32_t key, value;
    int32_t choices[MN_RECALL_MAX_CHOICES]; /* value tokens, the answer at answer_index */
    int n_choices, answer_index;
} mn_recall_probe;

/* Checks the fields (and that at least one filler word id remains); message names the field. */
mn_status mn_recall_task_validate(const mn_recall_task *task);
/* Longest turn: max(4, filler_max + 2). */
int mn_recall_max_len(const mn_recall_task *task);

/* Fills a batch of B episodes of T turns, layout as mn_batch: tokens and weights (T, B,
 * max_len), lengths (T, B), padding 0 with weight 0. Distances are uniform in [d_lo, d_hi]
 * (1 <= d_lo <= d_hi <= T - 1); facts * 2 <= T <= 4096. probes (B * facts; nullable) receive the
 * questions, episode b's at [b * facts ..]. Deterministic in the RNG state, which it advances. */
mn_status mn_recall_fill_batch(const mn_recall_task *task, mn_rng *rng, int B, int T, int max_len, int d_lo,
                               int d_hi, int32_t *tokens, int32_t *lengths, float *weights,
                               mn_recall_probe *probes);

#endif
