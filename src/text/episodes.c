#include "text/episodes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"

mn_episode_config mn_episode_config_default(void) {
    mn_episode_config c = {.turns = 256, .seed = 1, .drop_short = 0, .unify_speakers = 1};
    return c;
}

static char *dup_or_null(const char *s, int *failed) {
    if (!s)
        return NULL;
    char *copy = strdup(s);
    if (!copy)
        *failed = 1;
    return copy;
}

/* The episode being filled; `cap` tracks the turns array. Speakers of its first session. */
typedef struct {
    mn_dialogue d;
    int cap_turns, cap_probes;
    const char *speakers[2];
    int n_speakers;
    int session;
} episode_builder;

/* Index of `name` among the first two distinct speakers of dialogue `src`, or -1. */
static int speaker_rank(const mn_dialogue *src, const char *name) {
    const char *seen[2];
    int n = 0;
    for (int i = 0; i < src->n_turns && n < 2; i++) {
        const char *s = src->turns[i].speaker;
        if (n > 0 && !strcmp(seen[0], s))
            continue;
        if (n > 1 && !strcmp(seen[1], s))
            continue;
        if (!strcmp(s, name))
            return n;
        seen[n++] = s;
    }
    return -1;
}

static mn_status append_session(episode_builder *b, const mn_dialogue *src, int take,
                                int unify) {
    if (b->n_speakers == 0) {
        /* the first session fixes the episode's speaker names */
        for (int i = 0; i < src->n_turns && b->n_speakers < 2; i++) {
            const char *s = src->turns[i].speaker;
            if (b->n_speakers == 0 || strcmp(b->speakers[0], s))
                b->speakers[b->n_speakers++] = s;
        }
    }
    if (b->d.n_turns + take > b->cap_turns) {
        int cap = b->cap_turns ? b->cap_turns : 64;
        while (cap < b->d.n_turns + take)
            cap *= 2;
        mn_turn *t = realloc(b->d.turns, (size_t)cap * sizeof *t);
        if (!t)
            return mn_fail(MN_ERR_NOMEM, "episodes: out of memory for %d turns", cap);
        b->d.turns = t;
        b->cap_turns = cap;
    }
    int offset = b->d.n_turns;
    for (int i = 0; i < take; i++) {
        const mn_turn *in = &src->turns[i];
        const char *speaker = in->speaker;
        if (unify) {
            int rank = speaker_rank(src, speaker);
            if (rank >= 0 && rank < b->n_speakers)
                speaker = b->speakers[rank];
        }
        int failed = 0;
        mn_turn t = {.speaker = dup_or_null(speaker, &failed),
                     .text = dup_or_null(in->text ? in->text : "", &failed),
                     .session = b->session,
                     .date = dup_or_null(in->date, &failed)};
        if (failed) {
            free(t.speaker);
            free(t.text);
            free(t.date);
            return mn_fail(MN_ERR_NOMEM, "episodes: out of memory copying a turn");
        }
        b->d.turns[b->d.n_turns++] = t;
    }
    /* keep the dialogue's own probes whose question and evidence survive the cut */
    for (int p = 0; p < src->n_probes; p++) {
        const mn_probe *in = &src->probes[p];
        int inside = in->after >= 1 && in->after <= take;
        for (int e = 0; e < in->n_evidence && inside; e++)
            inside = in->evidence[e] >= 0 && in->evidence[e] < take;
        if (!inside)
            continue;
        if (b->d.n_probes == b->cap_probes) {
            int cap = b->cap_probes ? 2 * b->cap_probes : 8;
            mn_probe *q = realloc(b->d.probes, (size_t)cap * sizeof *q);
            if (!q)
                return mn_fail(MN_ERR_NOMEM, "episodes: out of memory for probes");
            b->d.probes = q;
            b->cap_probes = cap;
        }
        int failed = 0;
        mn_probe q = {.after = in->after + offset,
                      .speaker = dup_or_null(in->speaker, &failed),
                      .question = dup_or_null(in->question, &failed),
                      .answer = dup_or_null(in->answer, &failed),
                      .category = in->category};
        if (in->n_choices > 0) {
            q.choices = calloc((size_t)in->n_choices, sizeof *q.choices);
            if (q.choices) {
                q.n_choices = in->n_choices;
                for (int c = 0; c < in->n_choices; c++)
                    q.choices[c] = dup_or_null(in->choices[c], &failed);
            } else {
                failed = 1;
            }
        }
        if (in->n_evidence > 0) {
            q.evidence = malloc((size_t)in->n_evidence * sizeof *q.evidence);
            if (q.evidence) {
                q.n_evidence = in->n_evidence;
                for (int e = 0; e < in->n_evidence; e++)
                    q.evidence[e] = in->evidence[e] + offset;
            } else {
                failed = 1;
            }
        }
        /* parked in the array first so that the episode's free releases it either way */
        b->d.probes[b->d.n_probes++] = q;
        if (failed)
            return mn_fail(MN_ERR_NOMEM, "episodes: out of memory copying a probe");
    }
    b->session++;
    return MN_OK;
}

static mn_status finish_episode(episode_builder *b, int64_t index, mn_dialogue_list *out) {
    char id[64];
    snprintf(id, sizeof id, "episode-%06lld", (long long)index);
    b->d.id = strdup(id);
    if (!b->d.id)
        return mn_fail(MN_ERR_NOMEM, "episodes: out of memory");
    MN_TRY(mn_dialogue_list_push(out, &b->d));
    memset(b, 0, sizeof *b);
    b->session = 1;
    return MN_OK;
}

mn_status mn_episodes_build(const mn_dialogue_list *dialogues, const mn_episode_config *config,
                            mn_dialogue_list *out) {
    if (!dialogues || !config || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "episodes: NULL argument");
    if (config->turns < 1)
        return mn_fail(MN_ERR_CONFIG, "episodes: turns must be >= 1 (got %d)", config->turns);
    if (dialogues->count > INT32_MAX)
        return mn_fail(MN_ERR_INVALID_ARG, "episodes: too many dialogues (%lld)",
                       (long long)dialogues->count);
    int32_t n = (int32_t)dialogues->count;
    int32_t *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    if (!order)
        return mn_fail(MN_ERR_NOMEM, "episodes: out of memory for %d dialogues", n);
    for (int32_t i = 0; i < n; i++)
        order[i] = i;
    mn_rng rng;
    mn_rng_seed(&rng, config->seed);
    mn_rng_shuffle_i32(&rng, order, n);

    episode_builder b;
    memset(&b, 0, sizeof b);
    b.session = 1;
    int64_t made = 0;
    mn_status st = MN_OK;
    for (int32_t i = 0; i < n && st == MN_OK; i++) {
        const mn_dialogue *src = &dialogues->items[order[i]];
        if (src->n_turns <= 0)
            continue;
        int room = config->turns - b.d.n_turns;
        int take = src->n_turns < room ? src->n_turns : room;
        st = append_session(&b, src, take, config->unify_speakers);
        if (st == MN_OK && b.d.n_turns == config->turns)
            st = finish_episode(&b, made++, out);
    }
    if (st == MN_OK && b.d.n_turns > 0 && !config->drop_short)
        st = finish_episode(&b, made++, out);
    mn_dialogue_free(&b.d);
    free(order);
    return st;
}
