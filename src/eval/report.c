/* Reports of an evaluation: JSON (docs/dialogue-format.md + docs/eval.md), per-probe JSONL,
 * a text table and gnuplot data (src/eval/eval.h). */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "eval/eval.h"

/* A ratio, or JSON null when nothing was counted (an accuracy of 0 would be a claim). */
static json_t *ratio(double num, int64_t den) { return den > 0 ? json_real(num / (double)den) : json_null(); }

static json_t *tally_json(const mn_eval_tally *t) {
    return json_pack("{s:o, s:o, s:I, s:I, s:I, s:o, s:o, s:o}", "mc_accuracy", ratio((double)t->mc_correct, t->mc_n),
                     "exact_match", ratio((double)t->em_correct, t->gen_n), "n", (json_int_t)t->n, "mc_n",
                     (json_int_t)t->mc_n, "gen_n", (json_int_t)t->gen_n, "f1", ratio(t->f1_sum, t->gen_n), "gold_ll",
                     ratio(t->gold_ll_sum, t->n), "evidence_in_history",
                     ratio((double)t->evidence_shown, t->evidence_n));
}

static json_t *buckets_json(const mn_eval_tally *b, int n_buckets) {
    json_t *arr = json_array();
    for (int i = 0; i < n_buckets; i++) {
        int64_t lo, hi;
        mn_eval_bucket_range(i, n_buckets, &lo, &hi);
        json_t *o = tally_json(&b[i]);
        json_object_set_new(o, "lo", json_integer(lo));
        json_object_set_new(o, "hi", hi < 0 ? json_null() : json_integer(hi));
        json_array_append_new(arr, o);
    }
    return arr;
}

static json_t *recall_json(const mn_eval_result *r, const mn_eval_variant_result *v) {
    json_t *o = tally_json(&v->all);
    json_object_set_new(o, "by_distance", buckets_json(v->by_turns, MN_EVAL_TURN_BUCKETS));
    json_object_set_new(o, "by_distance_tokens", buckets_json(v->by_tokens, MN_EVAL_TOKEN_BUCKETS));
    json_t *cats = json_array();
    for (int c = 0; c < MN_EVAL_CATEGORIES; c++) {
        json_t *t = tally_json(&v->by_category[c]);
        json_object_set_new(t, "category", json_integer(c));
        json_array_append_new(cats, t);
    }
    json_object_set_new(o, "by_category", cats);
    json_object_set_new(o, "no_distance", tally_json(&v->no_distance));
    json_object_set_new(o, "unscored", json_integer(v->unscored));
    if (v->spec.mode == MN_EVAL_WINDOW)
        json_object_set_new(o, "window_tokens", json_integer(v->spec.window));
    if (v->spec.mode == MN_EVAL_RETRIEVAL)
        json_object_set_new(o, "retrieval_tokens", json_integer(v->spec.window));
    if (v->spec.mode == MN_EVAL_SUMMARY) {
        json_object_set_new(o, "summary_tokens", json_integer(v->spec.window));
        json_object_set_new(o, "summary_tokens_fit", json_integer(v->summary_cap));
    }
    if (v->spec.mode == MN_EVAL_WINDOW || v->spec.mode == MN_EVAL_FULL || v->spec.mode == MN_EVAL_RETRIEVAL ||
        v->spec.mode == MN_EVAL_SUMMARY) {
        int64_t scored = r->probes - v->unscored;
        json_object_set_new(o, "mean_window_tokens", ratio(v->window_used_sum, scored));
        json_object_set_new(o, "window_clipped", json_integer(v->window_clipped));
    }
    return o;
}

static json_t *lm_json(const mn_eval_variant_result *v) {
    double loss = v->lm_tokens ? v->lm_loss_sum / (double)v->lm_tokens : NAN;
    json_t *o = json_pack("{s:o, s:o, s:I, s:I}", "loss", v->lm_tokens ? json_real(loss) : json_null(), "ppl",
                          v->lm_tokens ? json_real(exp(loss)) : json_null(), "tokens", (json_int_t)v->lm_tokens,
                          "turns_skipped", (json_int_t)v->lm_turns_skipped);
    json_t *arr = json_array();
    for (int b = 0; b < MN_EVAL_INDEX_BUCKETS; b++) {
        int64_t lo, hi, n = v->lm_tokens_by_index[b];
        mn_eval_bucket_range(b, MN_EVAL_INDEX_BUCKETS, &lo, &hi);
        double l = n ? v->lm_loss_by_index[b] / (double)n : NAN;
        json_array_append_new(arr, json_pack("{s:I, s:o, s:o, s:o, s:I}", "lo", (json_int_t)lo, "hi",
                                             hi < 0 ? json_null() : json_integer(hi), "loss",
                                             n ? json_real(l) : json_null(), "ppl", n ? json_real(exp(l)) : json_null(),
                                             "tokens", (json_int_t)n));
    }
    json_object_set_new(o, "by_turn_index", arr);
    return o;
}

static json_t *cost_json(const mn_eval_result *r) {
    const mn_eval_variant_result *mem = NULL;
    for (int v = 0; v < r->n_variants; v++)
        if (r->variants[v].spec.mode == MN_EVAL_MEMORY)
            mem = &r->variants[v];
    json_t *o = json_object();
    json_object_set_new(o, "update_ms_per_turn", ratio(r->update_ms_sum, r->updates));
    json_object_set_new(o, "decode_ms_per_token", mem ? ratio(mem->gen_ms_sum, mem->gen_tokens) : json_null());
    json_object_set_new(o, "state_floats", json_integer((json_int_t)r->state_floats));
    json_object_set_new(o, "state_bytes", json_integer((json_int_t)(r->state_floats * sizeof(float))));
    json_object_set_new(o, "threads", json_integer(r->threads));
    json_t *dec = json_object();
    for (int v = 0; v < r->n_variants; v++)
        json_object_set_new(dec, r->variants[v].name, ratio(r->variants[v].gen_ms_sum, r->variants[v].gen_tokens));
    json_object_set_new(o, "decode_ms_per_token_by_mode", dec);
    /* what each mode costs besides the decoder, and the state it keeps (eval.h) */
    json_t *modes = json_object();
    for (int v = 0; v < r->n_variants; v++) {
        const mn_eval_variant_result *vr = &r->variants[v];
        json_t *m = json_pack("{s:o, s:o, s:I, s:o, s:o, s:o}", "write_ms_per_turn", ratio(vr->write_ms_sum, r->updates),
                              "generated_tokens_per_turn", ratio((double)vr->write_tokens, r->updates), "turns_cut",
                              (json_int_t)vr->write_cut, "query_ms_per_probe", ratio(vr->query_ms_sum, vr->state_n),
                              "state_tokens", ratio(vr->state_tokens_sum, vr->state_n), "state_bytes",
                              ratio(vr->state_bytes_sum, vr->state_n));
        json_object_set_new(m, "state_tokens_max", json_integer(vr->state_tokens_max));
        json_object_set_new(modes, vr->name, m);
    }
    json_object_set_new(o, "by_mode", modes);
    json_t *arr = json_array();
    for (int b = 0; b < MN_EVAL_INDEX_BUCKETS; b++) {
        int64_t lo, hi;
        mn_eval_bucket_range(b, MN_EVAL_INDEX_BUCKETS, &lo, &hi);
        json_t *row = json_pack("{s:I, s:o, s:o, s:I}", "lo", (json_int_t)lo, "hi",
                                hi < 0 ? json_null() : json_integer(hi), "update_ms",
                                ratio(r->update_ms_by_index[b], r->updates_by_index[b]), "turns",
                                (json_int_t)r->updates_by_index[b]);
        json_t *fw = json_object();
        for (int v = 0; v < r->n_variants; v++)
            json_object_set_new(fw, r->variants[v].name,
                                ratio(r->variants[v].forward_ms_by_index[b], r->variants[v].forward_turns_by_index[b]));
        json_object_set_new(row, "decoder_ms_per_turn", fw);
        json_array_append_new(arr, row);
    }
    json_object_set_new(o, "by_turn_index", arr);
    return o;
}

static mn_status dump_atomic(json_t *root, const char *path) {
    mn_atomic_file af;
    MN_TRY(mn_atomic_begin(path, &af));
    if (json_dump_file(root, af.tmp, JSON_INDENT(1) | JSON_REAL_PRECISION(6)) != 0) {
        mn_atomic_abort(&af);
        return mn_fail(MN_ERR_IO, "%s: cannot write", path);
    }
    return mn_atomic_commit(&af);
}

mn_status mn_eval_write_json(const mn_eval_result *r, const char *checkpoint, const char *data, const char *path) {
    json_t *root = json_pack("{s:s, s:s, s:I, s:I}", "checkpoint", checkpoint ? checkpoint : "", "data",
                             data ? data : "", "dialogues", (json_int_t)r->dialogues, "probes", (json_int_t)r->probes);
    if (!root)
        return mn_fail(MN_ERR_NOMEM, "eval: out of memory for the report");
    json_t *recall = json_object(), *lm = json_object();
    for (int v = 0; v < r->n_variants; v++) {
        json_object_set_new(recall, r->variants[v].name, recall_json(r, &r->variants[v]));
        json_object_set_new(lm, r->variants[v].name, lm_json(&r->variants[v]));
    }
    json_object_set_new(root, "recall", recall);
    json_object_set_new(root, "lm", lm);
    json_object_set_new(root, "cost", cost_json(r));
    json_object_set_new(root, "probes_skipped", json_integer(r->probes_skipped));
    json_object_set_new(root, "turns", json_integer(r->turns));
    json_object_set_new(root, "history_tokens", json_integer(r->history_tokens));
    json_object_set_new(root, "n_slots", json_integer(r->n_slots));
    json_object_set_new(root, "max_turn_tokens", json_integer(r->max_turn_tokens));
    json_object_set_new(root, "rate",
                        json_pack("{s:f, s:o, s:o}", "wall_s", r->wall_s, "probes_per_s",
                                  r->wall_s > 0 ? json_real((double)r->probes / r->wall_s) : json_null(), "turns_per_s",
                                  r->wall_s > 0 ? json_real((double)r->turns / r->wall_s) : json_null()));
    mn_status st = dump_atomic(root, path);
    json_decref(root);
    return st;
}

mn_status mn_eval_write_probes(const mn_eval_result *r, const mn_dialogue_list *list, const char *path) {
    json_t *arr = json_array();
    for (int64_t i = 0; i < r->probes; i++) {
        const mn_eval_probe_result *p = &r->probe_results[i];
        const mn_dialogue *d = &list->items[p->dialogue];
        const mn_probe *pr = &d->probes[p->probe];
        json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:I, s:s, s:s}", "dialogue", d->id, "probe", p->probe, "category",
                              p->category, "distance_turns", p->distance_turns, "distance_tokens",
                              (json_int_t)p->distance_tokens, "question", pr->question, "answer", pr->answer);
        for (int v = 0; v < r->n_variants; v++) {
            json_t *m = p->scored[v]
                            ? json_pack("{s:i, s:b, s:f}", "choice", p->best[v], "correct",
                                        p->n_choices >= 2 && p->best[v] == p->answer, "gold_ll", p->gold_ll[v])
                            : json_pack("{s:b}", "scored", 0);
            if (p->generated[v]) {
                json_t *text = json_string(p->generated[v]); /* NULL for bytes that are not UTF-8 */
                json_object_set_new(m, "generated", text ? text : json_string("(not UTF-8)"));
                json_object_set_new(m, "exact_match", json_boolean(p->em[v]));
                json_object_set_new(m, "f1", json_real(p->f1[v]));
            }
            if (p->scored[v] && p->evidence_shown[v] >= 0)
                json_object_set_new(m, "evidence_in_history", json_boolean(p->evidence_shown[v]));
            json_object_set_new(o, r->variants[v].name, m);
        }
        json_array_append_new(arr, o);
    }
    mn_atomic_file af;
    mn_status st = mn_atomic_begin(path, &af);
    if (st == MN_OK) {
        FILE *f = fopen(af.tmp, "w");
        if (!f) {
            mn_atomic_abort(&af);
            st = mn_fail(MN_ERR_IO, "%s: cannot write", path);
        } else {
            size_t i;
            json_t *o;
            int bad = 0;
            json_array_foreach(arr, i, o) {
                bad |= json_dumpf(o, f, JSON_COMPACT | JSON_REAL_PRECISION(6)) != 0;
                bad |= fputc('\n', f) == EOF;
            }
            bad |= fclose(f) != 0;
            if (bad) {
                mn_atomic_abort(&af);
                st = mn_fail(MN_ERR_IO, "%s: cannot write", path);
            } else {
                st = mn_atomic_commit(&af);
            }
        }
    }
    json_decref(arr);
    return st;
}

void mn_eval_print_table(const mn_eval_result *r, FILE *out) {
    fprintf(out, "multiple-choice accuracy by distance (turns between the evidence and the question)\n");
    fprintf(out, "%-10s %6s", "distance", "probes");
    int width[MN_EVAL_MAX_VARIANTS]; /* 10, or a longer mode name */
    for (int v = 0; v < r->n_variants; v++) {
        int len = (int)strlen(r->variants[v].name);
        width[v] = len > 10 ? len : 10;
        fprintf(out, " %*s", width[v], r->variants[v].name);
    }
    fprintf(out, "\n");
    for (int b = 0; b <= MN_EVAL_TURN_BUCKETS; b++) {
        char label[32];
        if (b < MN_EVAL_TURN_BUCKETS)
            mn_eval_bucket_label(b, MN_EVAL_TURN_BUCKETS, label, sizeof label);
        else
            snprintf(label, sizeof label, "all");
        int64_t n = 0;
        for (int v = 0; v < r->n_variants; v++) {
            const mn_eval_tally *t = b < MN_EVAL_TURN_BUCKETS ? &r->variants[v].by_turns[b] : &r->variants[v].all;
            if (t->mc_n > n)
                n = t->mc_n;
        }
        if (!n)
            continue;
        fprintf(out, "%-10s %6" PRId64, label, n);
        for (int v = 0; v < r->n_variants; v++) {
            const mn_eval_tally *t = b < MN_EVAL_TURN_BUCKETS ? &r->variants[v].by_turns[b] : &r->variants[v].all;
            if (t->mc_n)
                fprintf(out, " %*.1f%%", width[v] - 1, 100.0 * (double)t->mc_correct / (double)t->mc_n);
            else
                fprintf(out, " %*s", width[v], "-");
        }
        fprintf(out, "\n");
    }
    fprintf(out, "%-10s %6s", "exact", "");
    for (int v = 0; v < r->n_variants; v++) {
        const mn_eval_tally *t = &r->variants[v].all;
        if (t->gen_n)
            fprintf(out, " %*.1f%%", width[v] - 1, 100.0 * (double)t->em_correct / (double)t->gen_n);
        else
            fprintf(out, " %*s", width[v], "-");
    }
    fprintf(out, "\n%-10s %6s", "lm ppl", "");
    for (int v = 0; v < r->n_variants; v++) {
        const mn_eval_variant_result *vr = &r->variants[v];
        if (vr->lm_tokens)
            fprintf(out, " %*.2f", width[v], exp(vr->lm_loss_sum / (double)vr->lm_tokens));
        else
            fprintf(out, " %*s", width[v], "-");
    }
    fprintf(out, "\n");
    int baselines = 0;
    for (int v = 0; v < r->n_variants; v++)
        baselines |= r->variants[v].spec.mode == MN_EVAL_RETRIEVAL || r->variants[v].spec.mode == MN_EVAL_SUMMARY;
    if (baselines) { /* what retrieval and summary cost besides the decoder, and what retrieval found */
        static const char *const rows[3] = {"evidence", "ms/turn", "gen/turn"};
        for (int row = 0; row < 3; row++) {
            fprintf(out, "%-10s %6s", rows[row], "");
            for (int v = 0; v < r->n_variants; v++) {
                const mn_eval_variant_result *vr = &r->variants[v];
                if (row == 0 && vr->all.evidence_n)
                    fprintf(out, " %*.1f%%", width[v] - 1,
                            100.0 * (double)vr->all.evidence_shown / (double)vr->all.evidence_n);
                else if (row == 1 && r->updates)
                    fprintf(out, " %*.3f", width[v], vr->write_ms_sum / (double)r->updates);
                else if (row == 2 && r->updates)
                    fprintf(out, " %*.2f", width[v], (double)vr->write_tokens / (double)r->updates);
                else
                    fprintf(out, " %*s", width[v], "-");
            }
            fprintf(out, "\n");
        }
    }
    for (int v = 0; v < r->n_variants; v++)
        if (r->variants[v].unscored)
            fprintf(out, "%s: %" PRId64 " probes did not fit the decoder and are not counted\n", r->variants[v].name,
                    r->variants[v].unscored);
    fprintf(out, "%" PRId64 " probes over %" PRId64 " dialogues (%" PRId64 " turns) in %.1f s: %.1f probes/s, %d threads\n",
            r->probes, r->dialogues, r->turns, r->wall_s, r->wall_s > 0 ? (double)r->probes / r->wall_s : 0.0,
            r->threads);
}

static mn_status open_data(const char *path, FILE **f) {
    *f = fopen(path, "w");
    return *f ? MN_OK : mn_fail(MN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
}

mn_status mn_eval_write_recall_data(const mn_eval_result *r, const char *path) {
    FILE *f;
    MN_TRY(open_data(path, &f));
    fprintf(f, "# distance_mid lo hi");
    for (int v = 0; v < r->n_variants; v++)
        fprintf(f, " %s", r->variants[v].name);
    fprintf(f, "\n");
    for (int b = 0; b < MN_EVAL_TURN_BUCKETS; b++) {
        int64_t lo, hi, n = 0;
        mn_eval_bucket_range(b, MN_EVAL_TURN_BUCKETS, &lo, &hi);
        for (int v = 0; v < r->n_variants; v++)
            n += r->variants[v].by_turns[b].mc_n;
        if (!n)
            continue;
        double top = hi < 0 ? 2.0 * (double)lo : (double)hi;
        fprintf(f, "%g %" PRId64 " %" PRId64, sqrt((double)lo * top), lo, hi);
        for (int v = 0; v < r->n_variants; v++) {
            const mn_eval_tally *t = &r->variants[v].by_turns[b];
            if (t->mc_n)
                fprintf(f, " %.6g", 100.0 * (double)t->mc_correct / (double)t->mc_n);
            else
                fprintf(f, " NaN");
        }
        fprintf(f, "\n");
    }
    return fclose(f) == 0 ? MN_OK : mn_fail(MN_ERR_IO, "%s: cannot write", path);
}

mn_status mn_eval_write_cost_data(const mn_eval_result *r, const char *path) {
    FILE *f;
    MN_TRY(open_data(path, &f));
    fprintf(f, "# turn_index_mid update_ms");
    for (int v = 0; v < r->n_variants; v++)
        fprintf(f, " %s_decoder_ms", r->variants[v].name);
    for (int v = 0; v < r->n_variants; v++)
        if (r->variants[v].spec.mode == MN_EVAL_RETRIEVAL || r->variants[v].spec.mode == MN_EVAL_SUMMARY)
            fprintf(f, " %s_write_ms", r->variants[v].name);
    fprintf(f, "\n");
    for (int b = 0; b < MN_EVAL_INDEX_BUCKETS; b++) {
        if (!r->updates_by_index[b])
            continue;
        int64_t lo, hi;
        mn_eval_bucket_range(b, MN_EVAL_INDEX_BUCKETS, &lo, &hi);
        double top = hi < 0 ? 2.0 * (double)lo : (double)hi;
        fprintf(f, "%g %.6g", sqrt((double)lo * top), r->update_ms_by_index[b] / (double)r->updates_by_index[b]);
        for (int v = 0; v < r->n_variants; v++) {
            const mn_eval_variant_result *vr = &r->variants[v];
            if (vr->forward_turns_by_index[b])
                fprintf(f, " %.6g", vr->forward_ms_by_index[b] / (double)vr->forward_turns_by_index[b]);
            else
                fprintf(f, " NaN");
        }
        for (int v = 0; v < r->n_variants; v++)
            if (r->variants[v].spec.mode == MN_EVAL_RETRIEVAL || r->variants[v].spec.mode == MN_EVAL_SUMMARY)
                fprintf(f, " %.6g", r->variants[v].write_ms_by_index[b] / (double)r->updates_by_index[b]);
        fprintf(f, "\n");
    }
    return fclose(f) == 0 ? MN_OK : mn_fail(MN_ERR_IO, "%s: cannot write", path);
}
