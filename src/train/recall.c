/* Synthetic recall episodes (src/train/recall.h). */
#include "train/recall.h"

#include <string.h>

#include "core/error.h"

mn_status mn_recall_task_validate(const mn_recall_task *t) {
    if (!t)
        return mn_fail(MN_ERR_INVALID_ARG, "recall task: NULL");
    if (t->n_keys < 1)
        return mn_fail(MN_ERR_CONFIG, "recall task: recall_keys = %d must be >= 1", t->n_keys);
    if (t->n_values < 2)
        return mn_fail(MN_ERR_CONFIG, "recall task: recall_values = %d must be >= 2", t->n_values);
    if (t->facts < 1 || t->facts > MN_RECALL_MAX_FACTS || t->facts > t->n_keys || t->facts > t->n_values)
        return mn_fail(MN_ERR_CONFIG, "recall task: recall_facts = %d must be in 1..min(%d, keys %d, values %d)",
                       t->facts, MN_RECALL_MAX_FACTS, t->n_keys, t->n_values);
    if (t->n_choices < 2 || t->n_choices > MN_RECALL_MAX_CHOICES || t->n_choices > t->n_values)
        return mn_fail(MN_ERR_CONFIG, "recall task: recall_choices = %d must be in 2..min(%d, values %d)",
                       t->n_choices, MN_RECALL_MAX_CHOICES, t->n_values);
    if (t->filler_min < 1 || t->filler_max < t->filler_min)
        return mn_fail(MN_ERR_CONFIG, "recall task: filler words per turn %d..%d must satisfy 1 <= min <= max",
                       t->filler_min, t->filler_max);
    long long used = (long long)MN_RECALL_FIRST_KEY + t->n_keys + t->n_values;
    if (used >= t->vocab_size)
        return mn_fail(MN_ERR_CONFIG,
                       "recall task: vocab_size = %d leaves no filler words (5 specials + %d keys + %d values)",
                       t->vocab_size, t->n_keys, t->n_values);
    if (!(t->text_weight >= 0) || !(t->answer_weight > 0))
        return mn_fail(MN_ERR_CONFIG, "recall task: weights must be finite, text >= 0 and answer > 0");
    return MN_OK;
}

int mn_recall_max_len(const mn_recall_task *t) { return t->filler_max + 2 > 4 ? t->filler_max + 2 : 4; }

static int32_t draw(mn_rng *rng, int32_t base, int n) { return base + (int32_t)mn_rng_below(rng, (uint64_t)n); }

/* Places `facts` (fact, question) pairs in T turns, all 2 * facts turns distinct. */
static int place(mn_rng *rng, int T, int facts, int d_lo, int d_hi, int *fact_turn, int *question_turn) {
    for (int attempt = 0; attempt < 1000; attempt++) {
        unsigned char used[4096] = {0};
        int ok = 1;
        for (int j = 0; j < facts && ok; j++) {
            int d = d_lo + (int)mn_rng_below(rng, (uint64_t)(d_hi - d_lo + 1));
            int q = d + (int)mn_rng_below(rng, (uint64_t)(T - d));
            int f = q - d;
            if (used[q] || used[f])
                ok = 0;
            used[q] = used[f] = 1;
            fact_turn[j] = f;
            question_turn[j] = q;
        }
        if (ok)
            return 1;
    }
    return 0;
}

mn_status mn_recall_fill_batch(const mn_recall_task *t, mn_rng *rng, int B, int T, int max_len, int d_lo, int d_hi,
                               int32_t *tokens, int32_t *lengths, float *weights, mn_recall_probe *probes) {
    MN_TRY(mn_recall_task_validate(t));
    if (!rng || !tokens || !lengths || !weights || B < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "recall batch: NULL buffer or B < 1");
    if (T < 2 || T > 4096 || 2 * t->facts > T)
        return mn_fail(MN_ERR_INVALID_ARG, "recall batch: T = %d turns cannot hold %d facts and their questions", T,
                       t->facts);
    if (d_lo < 1 || d_hi < d_lo || d_hi > T - 1)
        return mn_fail(MN_ERR_INVALID_ARG, "recall batch: distances %d..%d must lie in 1..T-1 = %d", d_lo, d_hi, T - 1);
    if (max_len < mn_recall_max_len(t))
        return mn_fail(MN_ERR_INVALID_ARG, "recall batch: max_len = %d is shorter than the longest turn (%d)", max_len,
                       mn_recall_max_len(t));
    const int32_t key0 = MN_RECALL_FIRST_KEY, value0 = key0 + t->n_keys, word0 = value0 + t->n_values;
    const int n_words = t->vocab_size - word0;
    memset(tokens, 0, (size_t)T * B * max_len * sizeof *tokens);
    memset(weights, 0, (size_t)T * B * max_len * sizeof *weights);
    for (int b = 0; b < B; b++) {
        int fact_turn[MN_RECALL_MAX_FACTS], question_turn[MN_RECALL_MAX_FACTS];
        int32_t keys[MN_RECALL_MAX_FACTS], values[MN_RECALL_MAX_FACTS];
        if (!place(rng, T, t->facts, d_lo, d_hi, fact_turn, question_turn))
            return mn_fail(MN_ERR_INVALID_ARG, "recall batch: cannot place %d facts at distances %d..%d in %d turns",
                           t->facts, d_lo, d_hi, T);
        for (int j = 0; j < t->facts; j++) { /* distinct keys and values within the episode */
            int fresh;
            do {
                keys[j] = draw(rng, key0, t->n_keys);
                fresh = 1;
                for (int i = 0; i < j; i++)
                    fresh &= keys[i] != keys[j];
            } while (!fresh);
            do {
                values[j] = draw(rng, value0, t->n_values);
                fresh = 1;
                for (int i = 0; i < j; i++)
                    fresh &= values[i] != values[j];
            } while (!fresh);
        }
        for (int turn = 0; turn < T; turn++) {
            size_t at = ((size_t)turn * B + b) * max_len;
            int32_t *tok = tokens + at;
            float *w = weights + at;
            int role = -1, j = 0; /* 0 fact, 1 question */
            for (; j < t->facts; j++) {
                if (fact_turn[j] == turn) {
                    role = 0;
                    break;
                }
                if (question_turn[j] == turn) {
                    role = 1;
                    break;
                }
            }
            int n;
            if (role >= 0) {
                tok[0] = role == 0 ? MN_RECALL_FACT : MN_RECALL_ASK;
                tok[1] = keys[j];
                tok[2] = values[j];
                tok[3] = MN_RECALL_EOT;
                n = 4;
                w[1] = w[3] = t->text_weight;
                w[2] = role == 1 ? t->answer_weight : t->text_weight;
            } else {
                int m = t->filler_min + (int)mn_rng_below(rng, (uint64_t)(t->filler_max - t->filler_min + 1));
                tok[0] = MN_RECALL_CHAT;
                for (int i = 1; i <= m; i++) {
                    tok[i] = draw(rng, word0, n_words);
                    w[i] = t->text_weight;
                }
                tok[m + 1] = MN_RECALL_EOT;
                w[m + 1] = t->text_weight;
                n = m + 2;
            }
            lengths[(size_t)turn * B + b] = n;
        }
        /* the choices are drawn whether or not the caller wants them, so that the RNG
         * stream (and with it every later batch) does not depend on probes being NULL */
        for (int j = 0; j < t->facts; j++) {
            mn_recall_probe local, *p = probes ? &probes[(size_t)b * t->facts + j] : &local;
            memset(p, 0, sizeof *p);
            p->fact_turn = fact_turn[j];
            p->question_turn = question_turn[j];
            p->key = keys[j];
            p->value = values[j];
            p->n_choices = t->n_choices;
            /* distractors: the episode's other values first (so that recalling "some value
             * said earlier" is not enough), then fresh random values */
            int n = 0;
            p->choices[n++] = values[j];
            for (int i = 0; i < t->facts && n < t->n_choices; i++)
                if (i != j)
                    p->choices[n++] = values[i];
            while (n < t->n_choices) {
                int32_t v = draw(rng, value0, t->n_values), fresh = 1;
                for (int i = 0; i < n; i++)
                    fresh &= p->choices[i] != v;
                if (fresh)
                    p->choices[n++] = v;
            }
            int at = (int)mn_rng_below(rng, (uint64_t)n); /* the answer at a random place */
            p->choices[0] = p->choices[at];
            p->choices[at] = values[j];
            p->answer_index = at;
        }
    }
    return MN_OK;
}
