/* Cued recall probes of real turns (docs/probes.md, "Cued recall"): d turns after a turn of
 * the dialogue itself, a speaker quotes a few of its words (the cue) and the counterpart
 * answers with the words that followed them. What is recalled is whatever people said, in
 * their own words, so no template family, phrasing or value is learnt from these probes: only
 * how to find something said earlier from a cue and give it back. */
#ifndef MN_CUED_H
#define MN_CUED_H

#include <stdint.h>

#include "text/dialogue.h"
#include "text/probes.h" /* mn_distance_range, MN_ASKERS_* */

typedef struct {
    const mn_distance_range *distances; /* as mn_probe_config: round robin over the ranges */
    int n_distances;
    int probes_per_episode;  /* >= 1 */
    int n_distractors;       /* choices = answer + up to this many continuations of other turns */
    int askers;              /* MN_ASKERS_*: the quoted turn's other speaker, its own, or either */
    int cue_words_min, cue_words_max;       /* words quoted, 1 <= min <= max */
    int answer_words_min, answer_words_max; /* words answered, 1 <= min <= max */
    uint64_t seed;
} mn_cued_config;

/* Distances 1,2,4,8,16,32,64; 1 probe per episode; 3 distractors; the other speaker asks;
 * cues of 3-6 words; answers of 2-4 words; seed 1. */
mn_cued_config mn_cued_config_default(void);

typedef struct {
    int64_t probes;   /* made */
    int64_t skipped;  /* asked for but no turn fits (too short, no room for the distance, the
                       * cue not unique in the episode, a single speaker) */
} mn_cued_stats;

/* Adds up to probes_per_episode cued probes to the episode; turns are not changed. A source
 * turn f is one no existing probe uses as evidence, with at least cue_words_min +
 * answer_words_min words, said by one of two or more speakers. The cue is cue_words
 * consecutive words of it, starting anywhere that leaves answer_words after it, and no other
 * turn up to the question holds the cue (compared ignoring case), so that it names one turn.
 * The probe: after = f + d, evidence = [f], speaker = the asker, question = a fixed phrasing
 * quoting the cue, answer = the answer_words words that follow the cue in turn f (a trailing
 * comma, semicolon or colon dropped), choices = the answer and continuations of the same
 * length taken from other turns, in a random order. Deterministic in (config->seed,
 * episode_index). On failure the episode is unchanged. */
mn_status mn_cued_add(mn_dialogue *episode, int64_t episode_index, const mn_cued_config *config,
                      mn_cued_stats *stats);

#endif
