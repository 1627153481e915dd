/* Length-normalised log-likelihood of choices given a session state (src/model/score.h). */
#include "model/score.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/model_internal.h"

double mn_log_prob(const float *row, int V, int32_t target) {
    double max = row[0];
    for (int v = 1; v < V; v++)
        if (row[v] > max)
            max = row[v];
    double sum = 0.0;
    for (int v = 0; v < V; v++)
        sum += exp((double)row[v] - max);
    return (double)row[target] - max - log(sum);
}

mn_status mn_score_choices(mn_model *m, const float *r, const int32_t *prefix, int n_prefix,
                           const int32_t *const *choices, const int *choice_lens, int n_choices,
                           double *scores, int *best) {
    if (!m || !r || !prefix || !choices || !choice_lens || !scores)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_score_choices: NULL argument");
    const mn_config *c = mn_model_config(m);
    if (n_prefix < 1 || n_choices < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_score_choices: need a prefix (%d tokens) and choices (%d)", n_prefix,
                       n_choices);
    int longest = 0;
    for (int i = 0; i < n_choices; i++) {
        if (!choices[i] || choice_lens[i] < 1)
            return mn_fail(MN_ERR_INVALID_ARG, "mn_score_choices: choice %d is empty", i);
        if (n_prefix + choice_lens[i] > c->max_turn_tokens)
            return mn_fail(MN_ERR_INVALID_ARG,
                           "mn_score_choices: prefix (%d) + choice %d (%d tokens) exceeds max_turn_tokens = %d",
                           n_prefix, i, choice_lens[i], c->max_turn_tokens);
        if (choice_lens[i] > longest)
            longest = choice_lens[i];
    }
    const int V = c->vocab_size, n_max = n_prefix + longest;
    int32_t *seq = malloc((size_t)n_max * sizeof *seq);
    float *logits = malloc((size_t)longest * V * sizeof *logits); /* the choice's rows only */
    if (!seq || !logits) {
        free(seq);
        free(logits);
        return mn_fail(MN_ERR_NOMEM, "mn_score_choices: out of memory");
    }
    memcpy(seq, prefix, (size_t)n_prefix * sizeof *seq);
    mn_status st = MN_OK;
    int arg = 0;
    for (int i = 0; i < n_choices && st == MN_OK; i++) {
        int n = n_prefix + choice_lens[i];
        memcpy(seq + n_prefix, choices[i], (size_t)choice_lens[i] * sizeof *seq);
        st = mn_logits_rows(m, seq, n, r, n_prefix - 1, choice_lens[i], logits);
        if (st != MN_OK)
            break;
        double sum = 0.0;
        for (int j = n_prefix; j < n; j++) /* row j-1 predicts token j */
            sum += mn_log_prob(logits + (size_t)(j - n_prefix) * V, V, seq[j]);
        scores[i] = sum / choice_lens[i];
        if (scores[i] > scores[arg])
            arg = i;
    }
    free(seq);
    free(logits);
    if (st == MN_OK && best)
        *best = arg;
    return st;
}

mn_status mn_score_probe(mn_model *m, const float *r, const mn_probe_tokens *p, double *scores, int *best) {
    if (!m || !r || !p)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_score_probe: NULL argument");
    if (p->n_question <= 0)
        return mn_score_choices(m, r, p->prefix, p->n_prefix, p->choices, p->choice_lens, p->n_choices, scores, best);
    size_t state = mn_state_floats(m);
    float *rq = malloc(state * sizeof *rq);
    if (!rq)
        return mn_fail(MN_ERR_NOMEM, "mn_score_probe: out of memory");
    mn_status st = mn_update(m, p->question, p->n_question, r, rq);
    if (st == MN_OK)
        st = mn_score_choices(m, rq, p->prefix, p->n_prefix, p->choices, p->choice_lens, p->n_choices, scores, best);
    free(rq);
    return st;
}
