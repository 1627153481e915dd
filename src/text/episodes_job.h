/* `mnemo episodes` as one call: canonical dialogues (or synthetic filler) chained into
 * multi-session episodes with recall probes, written as canonical JSONL (docs/probes.md). */
#ifndef MN_EPISODES_JOB_H
#define MN_EPISODES_JOB_H

#include <stdint.h>
#include <stdio.h>

#include "text/dialogue.h"
#include "text/cued.h"
#include "text/episodes.h"
#include "text/probes.h"

typedef struct {
    const char *jsonl;     /* the dialogues; with synthetic >= 0 the filler pool (nullable) */
    const char *output;    /* written atomically */
    mn_split split;        /* which templates, values and personas */
    const char *templates; /* folder or file of probe templates */
    mn_family_set families; /* which template families of the split (default 0: all) */
    const char *personas;  /* msc_personas_all.json: read when probes.sources has personas */
    int open_values;       /* > 0: template values drawn from this many generated ones (train) */
    int open_families;     /* > 0: this many generated families added to the templates (train) */
    double span_families;  /* > 0: chance that an open family's values are spans of the jsonl
                            * dialogues' turns (needs open_families and jsonl) */
    double word_families;  /* > 0: chance that an open family's values are real words of the
                            * jsonl dialogues drawn apart (mn_open_spans.words_prob) */
    double word_keys;      /* > 0: chance that an open family's keys are of words of the jsonl
                            * dialogues (mn_open_spans.keys_prob) */
    double shared_heads;   /* > 0: chance that an open family's keys share one head word
                            * (mn_open_spans.heads_prob) */
    double composed_frames; /* > 0: chance that an open family's frames are composed from the
                             * grammar (mn_open_spans.composed_prob) */
    int cued;              /* > 0: this many cued recall probes of real turns per episode, with
                            * the distances, distractors, askers and seed of `probes` (cued.h) */
    int synthetic;         /* >= 0: this many synthetic episodes, template facts only */
    int strict;            /* a bad input line is fatal, else reported to log and skipped */
    int skip_bad;          /* accept more than half bad lines (mn_read_check_yield) */
    FILE *log;             /* nullable */
    mn_episode_config episodes;
    mn_probe_config probes; /* probes.seed is the job's seed */
} mn_episodes_job;

/* The steps of a job, in order; a report says how far it got. */
typedef enum {
    MN_EPISODES_TEMPLATES,
    MN_EPISODES_READ,          /* before the open families: span and word families take words of it */
    MN_EPISODES_OPEN_VALUES,
    MN_EPISODES_OPEN_FAMILIES,
    MN_EPISODES_PERSONAS,
    MN_EPISODES_BUILD,
    MN_EPISODES_WRITE,
    MN_EPISODES_DONE,
} mn_episodes_step;

typedef struct {
    mn_episodes_step reached;  /* the step that failed, or MN_EPISODES_DONE */
    int template_categories;   /* loaded and selected (open families not counted) */
    int span_families;         /* open families of the span kind, and their values */
    int64_t span_values;
    int word_families;         /* open families of the words and title kinds, and their values */
    int64_t word_values;
    int key_families;          /* open families with keys of the dialogues' words */
    int head_families;         /* open families whose keys share a head word */
    int composed_families;     /* open families with composed frames */
    int persona_sentences, personas;
    int64_t personas_dropped_shared; /* sentences another split also has */
    int64_t dialogues_read, bad_lines;
    mn_dialogue_counts written;
    mn_probe_stats probes;
    mn_cued_stats cued;
    int64_t *by_distance;      /* probes per distance range of the job, then the others */
} mn_episodes_report;

/* Runs the job; *report (release with mn_episodes_report_free) says how far it got even when
 * it fails. Input that yields nothing (mn_read_check_yield), or no episode at all, fails
 * before the output is touched. */
mn_status mn_episodes_run(const mn_episodes_job *job, mn_episodes_report *report);
void mn_episodes_report_free(mn_episodes_report *report);

/* counts[k] (n_ranges + 1 of them) = the list's probes whose distance, after - the last
 * evidence turn, falls in ranges[k]; counts[n_ranges] those in none. Probes without evidence
 * are not counted. */
void mn_probes_count_by_distance(const mn_dialogue_list *list, const mn_distance_range *ranges, int n_ranges,
                                 int64_t *counts);

#endif
