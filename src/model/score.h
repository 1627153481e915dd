/* Multiple-choice scoring of recall probes by length-normalised log-likelihood: used by the
 * training loop's quick probe accuracy and by evaluation. */
#ifndef MN_SCORE_H
#define MN_SCORE_H

#include <stdint.h>

#include "mnemo.h"

/* log softmax(row)[target] of one row of V logits, in double so that long vocabularies lose
 * nothing. */
double mn_log_prob(const float *row, int V, int32_t target);

/* Scores each choice as the continuation of prefix inside one decoder sequence read with
 * state r (k, C): scores[i] = mean over the choice's tokens of log p(token | r, prefix, the
 * choice's earlier tokens). n_prefix >= 1 (the first position predicts nothing);
 * n_prefix + choice length <= max_turn_tokens; every choice has >= 1 token. *best (nullable)
 * = index of the highest score, ties to the lowest index. */
mn_status mn_score_choices(mn_model *model, const float *r, const int32_t *prefix, int n_prefix,
                           const int32_t *const *choices, const int *choice_lens, int n_choices,
                           double *scores, int *best);

/* A probe as tokens. The question is a turn of its own that the compressor reads into memory
 * before the answer turn (n_question = 0 when the question is part of the answer turn's
 * prefix instead); the answer turn is prefix + choice. */
typedef struct {
    const int32_t *question;
    int n_question;
    const int32_t *prefix;
    int n_prefix;
    const int32_t *const *choices;
    const int *choice_lens;
    int n_choices;
} mn_probe_tokens;

/* Scores a probe given r, the session state after the probe's `after` turns (pass R_0 for
 * the no-memory baseline). r is not modified. */
mn_status mn_score_probe(mn_model *model, const float *r, const mn_probe_tokens *probe, double *scores,
                         int *best);

#endif
