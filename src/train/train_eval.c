/* Evaluation during training (docs/training.md): validation loss over fixed batches, and
 * multiple-choice probe accuracy with memory and with R reset to R_0, by distance. Text
 * probes are scored by mn_eval_run exactly as `mnemo eval --modes memory,no_memory` scores
 * them (one distance rule, one set of buckets, the same probes); the synthetic recall task
 * scores its own token-level questions. Evaluation draws from RNGs of its own, so it never
 * moves the training trajectory. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "eval/eval.h"
#include "model/score.h"
#include "train/train_run.h"

#define EVAL_PROBE_SALT 0xbb67ae8584caa73bull
#define NO_DISTANCE MN_EVAL_TURN_BUCKETS /* the bucket of probes without evidence */

_Static_assert(MN_TRAIN_EVAL_BUCKETS == MN_EVAL_TURN_BUCKETS + 1, "eval's turn buckets, then no distance");

/* ---------------------------------------------------------------- validation loss */
/* The loss of a whole validation batch, in pieces of the trainer's micro-batch size: every
 * rank evaluates the same batches (cheaper than keeping the ranks apart), weighted by targets. */
static mn_status eval_batch_loss(mn_train_run_state *r, const mn_batch *b, float *loss) {
    if (r->micro_B >= b->B) {
        mn_batch s;
        mn_train_slice_batch(b, 0, b->B, !r->recall, r->mtokens, r->mlengths, r->mweights, &s);
        return mn_forward(r->trainer, &s, loss, NULL);
    }
    double sum = 0, weight = 0;
    for (int e0 = 0; e0 < b->B; e0 += r->micro_B) {
        int n = b->B - e0 < r->micro_B ? b->B - e0 : r->micro_B;
        mn_batch s;
        mn_train_slice_batch(b, e0, n, !r->recall, r->mtokens, r->mlengths, r->mweights, &s);
        float part;
        MN_TRY(mn_forward(r->trainer, &s, &part, NULL));
        double w = mn_batch_loss_weight(&s);
        sum += (double)part * w;
        weight += w;
    }
    *loss = (float)(sum / weight);
    return MN_OK;
}

static mn_status eval_loss(mn_train_run_state *r, double *loss_out, int64_t *batches) {
    const mn_train_config *c = r->cfg;
    double sum = 0;
    int64_t n = 0;
    *batches = 0;
    if (r->recall) {
        mn_rng rng;
        mn_rng_seed(&rng, (uint64_t)c->seed ^ MN_TRAIN_EVAL_LOSS_SALT);
        int lo, hi;
        mn_train_recall_distances(r, c->turns, &lo, &hi);
        for (int64_t i = 0; i < c->eval_batches; i++) {
            MN_TRY(mn_recall_fill_batch(&r->task, &rng, c->batch, c->turns, r->max_len, lo, hi, r->tokens, r->lengths,
                                        r->weights, NULL));
            mn_batch b = {.B = c->batch, .T = c->turns, .max_len = r->max_len, .tokens = r->tokens, .lengths = r->lengths,
                         .loss_weights = r->weights};
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

/* ---------------------------------------------------------------- probes */
static void tally(mn_train_eval_bucket *b, int64_t n, int64_t correct, int64_t correct_reset) {
    b->n += n;
    b->correct += correct;
    b->correct_reset += correct_reset;
}

/* Recall task: fresh episodes of the full length; every question scored with R and with R_0. */
static mn_status eval_recall_probes(mn_train_run_state *r, mn_train_eval_bucket *buckets) {
    const mn_train_config *c = r->cfg;
    mn_model *m = r->model;
    mn_rng rng;
    mn_rng_seed(&rng, (uint64_t)c->seed ^ EVAL_PROBE_SALT);
    int T = c->turns, L = r->max_len, lo, hi;
    mn_train_recall_distances(r, T, &lo, &hi);
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
                int b = mn_eval_bucket(p->question_turn - p->fact_turn, MN_EVAL_TURN_BUCKETS);
                tally(&buckets[b < 0 ? NO_DISTANCE : b], 1, best == p->answer_index, best_reset == p->answer_index);
                done++;
            }
            if (st == MN_OK && t + 1 < T)
                st = mn_update(m, tokens + (size_t)t * L, lengths[t], state, state);
        }
    }
    free(state), free(r0), free(tokens), free(lengths), free(weights), free(probes);
    return st == MN_ERR_NOMEM ? mn_fail(MN_ERR_NOMEM, "eval: out of memory") : st;
}

/* Text probes: the first eval_probes probes of the file, as `mnemo eval --modes
 * memory,no_memory --max-probes eval_probes --no-generate --no-lm` scores them. */
static mn_status eval_text_probes(mn_train_run_state *r, mn_train_eval_bucket *buckets) {
    mn_eval_options o;
    mn_eval_options_default(&o, r->cfg->model.n_slots);
    o.variants[0] = (mn_eval_variant_spec){MN_EVAL_MEMORY, 0};
    o.variants[1] = (mn_eval_variant_spec){MN_EVAL_NO_MEMORY, 0};
    o.n_variants = 2;
    o.max_probes = r->cfg->eval_probes;
    o.threads = r->cfg->threads;
    o.generate = 0;
    o.lm = 0;
    mn_eval_result res;
    MN_TRY(mn_eval_run(r->model, r->tok, &r->probes, &o, &res));
    const mn_eval_variant_result *mem = &res.variants[0], *reset = &res.variants[1];
    for (int b = 0; b < MN_EVAL_TURN_BUCKETS; b++)
        tally(&buckets[b], mem->by_turns[b].mc_n, mem->by_turns[b].mc_correct, reset->by_turns[b].mc_correct);
    tally(&buckets[NO_DISTANCE], mem->no_distance.mc_n, mem->no_distance.mc_correct, reset->no_distance.mc_correct);
    mn_eval_result_free(&res);
    return MN_OK;
}

mn_status mn_train_load_probes(mn_train_run_state *r) {
    const mn_train_config *c = r->cfg;
    MN_TRY(mn_jsonl_read(c->valid_probes, 1, NULL, &r->probes, NULL));
    r->have_probes = 1;
    int64_t budget = c->eval_probes;
    for (int64_t d = 0; d < r->probes.count && budget > 0; d++) {
        const mn_dialogue *dl = &r->probes.items[d];
        for (int p = 0; p < dl->n_probes && budget > 0; p++, budget--)
            r->n_probes += dl->probes[p].n_choices >= 2;
    }
    return MN_OK;
}

/* ---------------------------------------------------------------- one evaluation */
static void write_metrics(FILE *f, const mn_train_eval_info *e) {
    fprintf(f, "{\"eval\": true, \"step\": %" PRIu64, e->step);
    if (e->valid_batches)
        fprintf(f, ", \"valid_loss\": %.9g", e->valid_loss);
    if (e->probes) {
        fprintf(f, ", \"probes\": %" PRId64 ", \"probe_acc\": %.6g, \"probe_acc_reset\": %.6g", e->probes,
                (double)e->correct / (double)e->probes, (double)e->correct_reset / (double)e->probes);
        fprintf(f, ", \"buckets\": [");
        for (int i = 0; i < e->n_buckets; i++) {
            const mn_train_eval_bucket *b = &e->buckets[i];
            fprintf(f, "%s{\"distance\": \"%s\", \"n\": %" PRId64 ", \"acc\": %.6g, \"acc_reset\": %.6g}",
                    i ? ", " : "", b->distance, b->n, (double)b->correct / (double)b->n,
                    (double)b->correct_reset / (double)b->n);
        }
        fprintf(f, "]");
    }
    fprintf(f, "}\n");
    fflush(f);
}

mn_status mn_train_evaluate(mn_train_run_state *r, uint64_t step) {
    const mn_train_config *c = r->cfg;
    double t0 = mn_clock_s();
    mn_train_eval_info e;
    memset(&e, 0, sizeof e);
    e.step = step;
    mn_train_eval_bucket by_distance[MN_TRAIN_EVAL_BUCKETS];
    memset(by_distance, 0, sizeof by_distance);
    mn_status st = eval_loss(r, &e.valid_loss, &e.valid_batches);
    if (st == MN_OK && c->eval_probes > 0) /* the probes run on the model's host parameters */
        st = mn_trainer_pull(r->trainer);
    if (st == MN_OK && c->eval_probes > 0)
        st = r->recall ? eval_recall_probes(r, by_distance) : r->n_probes ? eval_text_probes(r, by_distance) : MN_OK;
    if (st != MN_OK)
        return mn_fail_context(st, "evaluation at step %" PRIu64 " failed", step);
    for (int b = 0; b < MN_TRAIN_EVAL_BUCKETS; b++) {
        if (!by_distance[b].n)
            continue;
        mn_train_eval_bucket *out = &e.buckets[e.n_buckets++];
        *out = by_distance[b];
        if (b == NO_DISTANCE)
            snprintf(out->distance, sizeof out->distance, "none");
        else
            mn_eval_bucket_label(b, MN_EVAL_TURN_BUCKETS, out->distance, sizeof out->distance);
        e.probes += out->n;
        e.correct += out->correct;
        e.correct_reset += out->correct_reset;
    }
    e.seconds = mn_clock_s() - t0;
    if (r->cb->eval)
        r->cb->eval(r->cb->ctx, &e);
    if (r->metrics)
        write_metrics(r->metrics, &e);
    return MN_OK;
}
