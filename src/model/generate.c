/* Sampling (temperature, top-k, top-p) and turn generation: with a state on the decoder's
 * key/value cache (one new row per token), without one on mn_next_logits of the whole sequence.
 * Shared by `mnemo chat` and any greedy decoding (temperature 0). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "cpu/ops.h"
#include "mnemo.h"
#include "model/score.h"

/* splitmix64: the whole generator state is the one word the caller keeps. */
static uint64_t next_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct {
    float logit;
    int32_t id;
} candidate;

/* Most likely first; equal logits by ascending id, so the order is total. */
static int by_logit_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

mn_status mn_sample(const float *logits, int V, const mn_sampling *sp, uint64_t *rng_state, int32_t *token) {
    if (!logits || !sp || !rng_state || !token || V < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_sample: NULL argument or empty vocabulary");
    if (!(sp->temperature >= 0.0f) || sp->top_k < 0 || !(sp->top_p > 0.0f && sp->top_p <= 1.0f))
        return mn_fail(MN_ERR_INVALID_ARG, "mn_sample: need temperature >= 0, top_k >= 0, 0 < top_p <= 1 (got %g, %d, %g)",
                       (double)sp->temperature, sp->top_k, (double)sp->top_p);
    int best = mn_argmax_finite(logits, V);
    for (int i = 0; best < 0 && i < V; i++)
        if (!isfinite(logits[i]))
            return mn_fail(MN_ERR_NUMERIC, "mn_sample: logit of token %d is not finite", i);
    if (sp->temperature == 0.0f) {
        *token = best;
        return MN_OK;
    }
    candidate *c = malloc((size_t)V * sizeof *c);
    double *p = malloc((size_t)V * sizeof *p);
    if (!c || !p) {
        free(c), free(p);
        return mn_fail(MN_ERR_NOMEM, "mn_sample: out of memory for %d candidates", V);
    }
    for (int i = 0; i < V; i++)
        c[i] = (candidate){logits[i], i};
    qsort(c, (size_t)V, sizeof *c, by_logit_desc);
    int n = sp->top_k > 0 && sp->top_k < V ? sp->top_k : V;
    /* softmax of logit / T over the kept candidates, in double */
    double sum = 0.0, inv_t = 1.0 / sp->temperature;
    for (int i = 0; i < n; i++) {
        p[i] = exp(((double)c[i].logit - c[0].logit) * inv_t);
        sum += p[i];
    }
    if (sp->top_p < 1.0f) { /* the smallest prefix whose mass reaches top_p */
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += p[i] / sum;
            if (cum >= sp->top_p) {
                n = i + 1;
                break;
            }
        }
        sum = 0.0;
        for (int i = 0; i < n; i++)
            sum += p[i];
    }
    double u = (double)(next_u64(rng_state) >> 11) * 0x1.0p-53 * sum, acc = 0.0;
    int pick = n - 1; /* rounding can leave u just above the last partial sum */
    for (int i = 0; i < n; i++) {
        acc += p[i];
        if (u < acc) {
            pick = i;
            break;
        }
    }
    *token = c[pick].id;
    free(c), free(p);
    return MN_OK;
}

mn_status mn_generate(mn_model *model, const float *r, const int32_t *prefix, int n_prefix, int max_tokens,
                      const int32_t *stop, int n_stop, const mn_sampling *sampling, uint64_t *rng_state, int32_t *out,
                      int *n_out) {
    if (!model || !prefix || !sampling || !rng_state || !out || !n_out || (n_stop > 0 && !stop) || n_stop < 0)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_generate: NULL argument");
    const mn_config *c = mn_model_config(model);
    int limit = r ? c->max_turn_tokens : c->n_slots + c->max_turn_tokens;
    if (n_prefix < 1 || max_tokens < n_prefix || max_tokens > limit)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_generate: need 1 <= n_prefix (%d) <= max_tokens (%d) <= %d", n_prefix,
                       max_tokens, limit);
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    if (!logits)
        return mn_fail(MN_ERR_NOMEM, "mn_generate: out of memory for logits");
    memmove(out, prefix, (size_t)n_prefix * sizeof *out);
    int n = n_prefix;
    mn_status st = MN_OK;
    /* with memory the turn's rows fit the cache (k + N); its logits are the full pass's to float
     * rounding (docs/eval.md) */
    mn_decoder_cache *dc = NULL;
    if (r && n < max_tokens) {
        const int64_t offsets[2] = {0, n};
        st = mn_decoder_cache_open(model, 1, &dc);
        if (st == MN_OK)
            st = mn_decoder_cache_start(dc, 1, out, offsets, &r, logits);
    }
    const int seq0 = 0; /* the cache's one sequence */
    while (st == MN_OK && n < max_tokens) {
        int32_t tok;
        if (!dc)
            st = mn_next_logits(model, out, n, r, logits);
        else if (n > n_prefix)
            st = mn_decoder_cache_append(dc, 1, &seq0, out + n - 1, logits);
        if (st != MN_OK || (st = mn_sample(logits, c->vocab_size, sampling, rng_state, &tok)) != MN_OK)
            break;
        out[n++] = tok;
        int stopped = 0;
        for (int i = 0; i < n_stop; i++)
            stopped |= tok == stop[i];
        if (stopped)
            break;
    }
    mn_decoder_cache_close(dc);
    free(logits);
    *n_out = n;
    return st;
}
