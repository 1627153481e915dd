/* Multi-session episodes: dialogues chained, in a seeded shuffled order, into long episodes
 * whose sessions are the dialogues (docs/probes.md). */
#ifndef MN_EPISODES_H
#define MN_EPISODES_H

#include <stdint.h>

#include "text/dialogue.h"

typedef struct {
    int turns;           /* T: turns per episode, >= 1 */
    uint64_t seed;       /* order in which dialogues are chained */
    int drop_short;      /* 1: drop the last episode when it has fewer than T turns */
    int unify_speakers;  /* 1: the i-th speaker of every session takes the name of the i-th
                          * speaker of the episode's first session, so that "A" of session 3
                          * is the same person as "A" of session 1 */
} mn_episode_config;

/* T 256, seed 1, keep the short last episode, unify speakers. */
mn_episode_config mn_episode_config_default(void);

/* Appends episodes to `out`. Dialogues are visited in a shuffled order fixed by the seed;
 * each becomes the next session (turn.session = 1, 2, ...) of the current episode until it
 * holds T turns. The dialogue that crosses the T boundary is cut there and its remainder is
 * dropped (never continued mid-conversation in the next episode). Probes already on the
 * dialogues are kept, re-indexed, when their question and evidence fall inside the cut.
 * Dialogues with no turns are skipped. Ids are "episode-<n>", n counting from 0. The input
 * is not modified. On failure `out` holds the episodes completed so far. */
mn_status mn_episodes_build(const mn_dialogue_list *dialogues, const mn_episode_config *config,
                            mn_dialogue_list *out);

#endif
