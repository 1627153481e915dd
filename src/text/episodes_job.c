/* `mnemo episodes` as one call (episodes_job.h). */
#include "text/episodes_job.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

void mn_probes_count_by_distance(const mn_dialogue_list *list, const mn_distance_range *ranges, int n_ranges,
                                 int64_t *counts) {
    memset(counts, 0, ((size_t)n_ranges + 1) * sizeof *counts);
    for (int64_t i = 0; i < list->count; i++)
        for (int p = 0; p < list->items[i].n_probes; p++) {
            const mn_probe *q = &list->items[i].probes[p];
            if (q->n_evidence == 0)
                continue;
            int last = q->evidence[0];
            for (int e = 1; e < q->n_evidence; e++)
                if (q->evidence[e] > last)
                    last = q->evidence[e];
            int d = q->after - last, slot = n_ranges;
            for (int k = 0; k < n_ranges && slot == n_ranges; k++)
                if (d >= ranges[k].lo && d <= ranges[k].hi)
                    slot = k;
            counts[slot]++;
        }
}

typedef struct {
    mn_probe_templates templates;
    mn_persona_bank personas;
    mn_dialogue_list dialogues, episodes;
} job_data;

static mn_status run(const mn_episodes_job *job, mn_episodes_report *rep, job_data *d) {
    const int synthetic = job->synthetic >= 0;
    mn_probe_config pcfg = job->probes;
    if (synthetic)
        pcfg.sources = MN_FACTS_TEMPLATES;
    rep->reached = MN_EPISODES_TEMPLATES;
    MN_TRY(mn_probe_templates_load(job->templates, job->split, &d->templates));
    MN_TRY(mn_probe_templates_select(&d->templates, job->families));
    rep->reached = MN_EPISODES_READ;
    if (job->jsonl) {
        mn_read_stats rs = {0};
        MN_TRY(mn_jsonl_read(job->jsonl, job->strict, job->log, &d->dialogues, &rs));
        rep->dialogues_read = d->dialogues.count;
        rep->bad_lines = rs.bad_records;
        MN_TRY(mn_read_check_yield(job->jsonl, &rs, d->dialogues.count, job->skip_bad));
    }
    rep->reached = MN_EPISODES_OPEN_VALUES;
    if (job->open_values > 0)
        MN_TRY(mn_probe_templates_open_values(&d->templates, job->templates, job->open_values, pcfg.seed));
    rep->template_categories = d->templates.n_categories;
    rep->reached = MN_EPISODES_OPEN_FAMILIES;
    if ((job->span_families > 0 || job->word_families > 0) && job->open_families <= 0) {
        const char *which = job->span_families > 0 ? "span" : "word";
        return mn_fail(MN_ERR_CONFIG, "%s families (--%s-families) are open families: they "
                                      "need --open-families N", which, which);
    }
    if (job->word_keys > 0 && job->open_families <= 0)
        return mn_fail(MN_ERR_CONFIG, "word keys (--word-keys) are keys of open families: they "
                                      "need --open-families N");
    if (job->shared_heads > 0 && job->open_families <= 0)
        return mn_fail(MN_ERR_CONFIG, "shared heads (--shared-heads) are keys of open families: "
                                      "they need --open-families N");
    if (job->composed_frames > 0 && job->open_families <= 0)
        return mn_fail(MN_ERR_CONFIG, "composed frames (--composed-frames) are frames of open "
                                      "families: they need --open-families N");
    if (job->open_families > 0) {
        mn_open_spans spans = {.prob = job->span_families,
                               .words_prob = job->word_families,
                               .keys_prob = job->word_keys,
                               .heads_prob = job->shared_heads,
                               .composed_prob = job->composed_frames,
                               .dialogues = job->jsonl ? &d->dialogues : NULL};
        MN_TRY(mn_probe_templates_open_families_spans(&d->templates, job->templates, job->open_families, pcfg.seed,
                                                      &spans));
        rep->span_families = spans.families;
        rep->span_values = spans.values;
        rep->word_families = spans.words_families;
        rep->word_values = spans.words_values;
        rep->key_families = spans.keys_families;
        rep->head_families = spans.head_families;
        rep->composed_families = spans.composed_families;
    }
    rep->reached = MN_EPISODES_PERSONAS;
    if (pcfg.sources & MN_FACTS_PERSONAS) {
        if (!job->personas)
            return mn_fail(MN_ERR_INVALID_ARG, "persona facts asked for, but no persona file given");
        MN_TRY(mn_persona_bank_load(job->personas, job->split, &d->personas));
        rep->persona_sentences = d->personas.n_sentences;
        rep->personas = d->personas.n_personas;
        rep->personas_dropped_shared = d->personas.dropped_shared;
    }
    rep->reached = MN_EPISODES_BUILD;
    if (synthetic) {
        MN_TRY(mn_probes_synthetic(job->jsonl ? &d->dialogues : NULL, job->synthetic, job->episodes.turns,
                                   &d->templates, &pcfg, &d->episodes, &rep->probes));
    } else {
        MN_TRY(mn_episodes_build(&d->dialogues, &job->episodes, &d->episodes));
        MN_TRY(mn_probes_inject_all(&d->episodes, &d->templates, &d->personas, &pcfg, &rep->probes));
    }
    if (job->cued > 0) {
        mn_cued_config cc = mn_cued_config_default();
        cc.distances = pcfg.distances;
        cc.n_distances = pcfg.n_distances;
        cc.probes_per_episode = job->cued;
        cc.n_distractors = pcfg.n_distractors;
        cc.askers = pcfg.askers;
        cc.seed = pcfg.seed;
        for (int64_t i = 0; i < d->episodes.count; i++)
            MN_TRY(mn_cued_add(&d->episodes.items[i], i, &cc, &rep->cued));
    }
    if (d->episodes.count == 0)
        return mn_fail(MN_ERR_INVALID_ARG, "no episode built: %s", job->episodes.drop_short ?
                       "the dialogues hold fewer turns than one episode (--drop-short)" : "nothing to build from");
    rep->reached = MN_EPISODES_WRITE;
    MN_TRY(mn_jsonl_write_file(job->output, &d->episodes));
    rep->written = mn_dialogue_list_count(&d->episodes);
    mn_probes_count_by_distance(&d->episodes, pcfg.distances, pcfg.n_distances, rep->by_distance);
    rep->reached = MN_EPISODES_DONE;
    return MN_OK;
}

mn_status mn_episodes_run(const mn_episodes_job *job, mn_episodes_report *report) {
    if (!report)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_episodes_run: NULL report");
    memset(report, 0, sizeof *report);
    if (!job || !job->output || !job->templates || (!job->jsonl && job->synthetic < 0))
        return mn_fail(MN_ERR_INVALID_ARG, "mn_episodes_run: needs an output, templates and dialogues or synthetic");
    report->by_distance = calloc((size_t)job->probes.n_distances + 1, sizeof *report->by_distance);
    if (!report->by_distance)
        return mn_fail(MN_ERR_NOMEM, "episodes: out of memory");
    job_data d = {0};
    mn_status st = run(job, report, &d);
    mn_dialogue_list_free(&d.episodes);
    mn_dialogue_list_free(&d.dialogues);
    mn_persona_bank_free(&d.personas);
    mn_probe_templates_free(&d.templates);
    return st;
}

void mn_episodes_report_free(mn_episodes_report *report) {
    if (report) {
        free(report->by_distance);
        report->by_distance = NULL;
    }
}
