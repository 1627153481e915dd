/* Length-normalised log-likelihood of choices given a session state (src/model/score.h). */
#include "model/score.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int mn_choice_scores(const float *log_probs, const int64_t *offsets, const int *first, int n_choices,
                     double *scores) {
    int arg = 0;
    for (int i = 0; i < n_choices; i++) {
        int64_t len = offsets[i + 1] - offsets[i];
        double sum = 0.0;
        for (int64_t j = first[i]; j < len; j++)
            sum += log_probs[offsets[i] + j];
        scores[i] = sum / (double)(len - first[i]);
        if (scores[i] > scores[arg])
            arg = i;
    }
    return arg;
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
    for (int i = 0; i < n_choices; i++) {
        if (!choices[i] || choice_lens[i] < 1)
            return mn_fail(MN_ERR_INVALID_ARG, "mn_score_choices: choice %d is empty", i);
        if (n_prefix + choice_lens[i] > c->max_turn_tokens)
            return mn_fail(MN_ERR_INVALID_ARG,
                           "mn_score_choices: prefix (%d) + choice %d (%d tokens) exceeds max_turn_tokens = %d",
                           n_prefix, i, choice_lens[i], c->max_turn_tokens);
    }
    /* every choice a sequence prefix + choice, all read in one batched decoder pass */
    size_t total = 0;
    for (int i = 0; i < n_choices; i++)
        total += (size_t)n_prefix + choice_lens[i];
    int32_t *seqs = malloc(total * sizeof *seqs);
    float *log_probs = malloc(total * sizeof *log_probs);
    int64_t *offsets = malloc((size_t)(n_choices + 1) * sizeof *offsets);
    int *first = malloc((size_t)n_choices * sizeof *first);
    const float **states = malloc((size_t)n_choices * sizeof *states);
    mn_status st = MN_OK;
    if (!seqs || !log_probs || !offsets || !first || !states) {
        st = mn_fail(MN_ERR_NOMEM, "mn_score_choices: out of memory");
        goto done;
    }
    offsets[0] = 0;
    for (int i = 0; i < n_choices; i++) {
        memcpy(seqs + offsets[i], prefix, (size_t)n_prefix * sizeof *seqs);
        memcpy(seqs + offsets[i] + n_prefix, choices[i], (size_t)choice_lens[i] * sizeof *seqs);
        offsets[i + 1] = offsets[i] + n_prefix + choice_lens[i];
        first[i] = n_prefix;
        states[i] = r;
    }
    st = mn_sequence_log_probs(m, n_choices, seqs, offsets, states, first, log_probs);
    if (st != MN_OK)
        goto done;
    int arg = mn_choice_scores(log_probs, offsets, first, n_choices, scores);
    if (best)
        *best = arg;
done:
    free(seqs), free(log_probs), free(offsets), free(first), free(states);
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
