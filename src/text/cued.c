/* Cued recall probes of real turns (cued.h). */
#include "text/cued.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/error.h"
#include "core/rng.h"

mn_cued_config mn_cued_config_default(void) {
    static const mn_distance_range ranges[] = {{1, 1}, {2, 2}, {4, 4}, {8, 8}, {16, 16}, {32, 32}, {64, 64}};
    return (mn_cued_config){.distances = ranges, .n_distances = 7, .probes_per_episode = 1, .n_distractors = 3,
                            .askers = MN_ASKERS_OTHER, .cue_words_min = 3, .cue_words_max = 6,
                            .answer_words_min = 2, .answer_words_max = 4, .seed = 1};
}

/* The quote is %s; the other speaker asks ("you said") or the turn's own speaker ("I said"). */
static const char *const other_questions[] = {
    "You said \"%s\" earlier. How did that go on?",
    "Earlier you said \"%s\" - what came after that?",
    "Go back to \"%s\": what was the rest of it?",
};
static const char *const self_questions[] = {
    "I said \"%s\" earlier. How did I go on?",
    "Remind me, I said \"%s\" and then what?",
    "What came after \"%s\" when I said it?",
};
#define N_QUESTIONS 3

typedef struct {
    int start, end; /* byte offsets of one word: text[start, end) */
} word_span;

/* Whitespace-separated words of s, at most cap of them; returns the count. */
static int split_words(const char *s, word_span *w, int cap) {
    int n = 0;
    for (int i = 0; s[i] && n < cap;) {
        while (s[i] && isspace((unsigned char)s[i]))
            i++;
        if (!s[i])
            break;
        int b = i;
        while (s[i] && !isspace((unsigned char)s[i]))
            i++;
        w[n++] = (word_span){b, i};
    }
    return n;
}

#define MAX_WORDS 512

/* Copy of words [a, a + count) of text (their original spacing), trailing ",;:" dropped; NULL
 * when out of memory. */
static char *words_copy(const char *text, const word_span *w, int a, int count, int strip) {
    int b = w[a].start, e = w[a + count - 1].end;
    while (strip && e > b + 1 && strchr(",;:", text[e - 1]))
        e--;
    char *s = malloc((size_t)(e - b) + 1);
    if (s) {
        memcpy(s, text + b, (size_t)(e - b));
        s[e - b] = '\0';
    }
    return s;
}

static int int_between(mn_rng *rng, int lo, int hi) { return lo + (int)mn_rng_below(rng, (uint64_t)(hi - lo + 1)); }

/* Another speaker of the episode than `speaker`, NULL when there is none. */
static const char *other_speaker(const mn_dialogue *ep, const char *speaker) {
    for (int t = 0; t < ep->n_turns; t++)
        if (strcmp(ep->turns[t].speaker, speaker) != 0)
            return ep->turns[t].speaker;
    return NULL;
}

static mn_status check_config(const mn_cued_config *c) {
    if (!c->distances || c->n_distances < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "cued probes: no distances");
    for (int i = 0; i < c->n_distances; i++)
        if (c->distances[i].lo < 1 || c->distances[i].hi < c->distances[i].lo)
            return mn_fail(MN_ERR_INVALID_ARG, "cued probes: bad distance range %d-%d", c->distances[i].lo,
                           c->distances[i].hi);
    if (c->probes_per_episode < 1 || c->n_distractors < 0 || c->askers < MN_ASKERS_OTHER ||
        c->askers > MN_ASKERS_BOTH)
        return mn_fail(MN_ERR_INVALID_ARG, "cued probes: bad probes per episode, distractors or askers");
    if (c->cue_words_min < 1 || c->cue_words_max < c->cue_words_min || c->answer_words_min < 1 ||
        c->answer_words_max < c->answer_words_min || c->cue_words_max + c->answer_words_max > MAX_WORDS)
        return mn_fail(MN_ERR_INVALID_ARG, "cued probes: bad cue or answer word counts");
    return MN_OK;
}

/* One probe at distance d, or 0 when no turn fits (nothing changed). Returns -1 on error. */
static int make_probe(const mn_dialogue *ep, const unsigned char *is_evidence, const mn_cued_config *c, int d,
                      mn_rng *rng, mn_probe *p, word_span *w, word_span *w2) {
    const int need = c->cue_words_min + c->answer_words_min;
    /* a few draws of (turn, cue length, start, answer length); most episodes fit at once */
    for (int attempt = 0; attempt < 16; attempt++) {
        int last = ep->n_turns - d; /* the source turn f satisfies f + d <= n_turns */
        if (last < 0)
            return 0;
        int f = (int)mn_rng_below(rng, (uint64_t)last + 1);
        if (is_evidence[f])
            continue;
        const char *text = ep->turns[f].text;
        int nw = split_words(text, w, MAX_WORDS);
        if (nw < need)
            continue;
        const char *other = other_speaker(ep, ep->turns[f].speaker);
        if (!other)
            return 0;
        int cue_n = int_between(rng, c->cue_words_min, c->cue_words_max);
        int ans_n = int_between(rng, c->answer_words_min, c->answer_words_max);
        if (cue_n + ans_n > nw)
            cue_n = nw - ans_n < c->cue_words_min ? c->cue_words_min : nw - ans_n;
        if (cue_n + ans_n > nw)
            ans_n = nw - cue_n;
        int start = (int)mn_rng_below(rng, (uint64_t)(nw - cue_n - ans_n) + 1);
        int self = c->askers == MN_ASKERS_SELF || (c->askers == MN_ASKERS_BOTH && mn_rng_below(rng, 2));
        int frame = (int)mn_rng_below(rng, N_QUESTIONS);
        char *cue = words_copy(text, w, start, cue_n, 0);
        char *answer = words_copy(text, w, start + cue_n, ans_n, 1);
        if (!cue || !answer) {
            free(cue), free(answer);
            return -1;
        }
        /* the cue must name one turn; a quote inside it would break the question's quoting */
        int usable = !strchr(cue, '"') && strlen(answer) > 0;
        for (int t = 0; usable && t < f + d; t++)
            if (t != f && strcasestr(ep->turns[t].text, cue))
                usable = 0;
        if (!usable) {
            free(cue), free(answer);
            continue;
        }
        const char *fmt = self ? self_questions[frame] : other_questions[frame];
        size_t qlen = strlen(fmt) + strlen(cue) + 1;
        char *question = malloc(qlen);
        char **choices = calloc((size_t)c->n_distractors + 1, sizeof *choices);
        p->speaker = strdup(self ? ep->turns[f].speaker : other);
        p->evidence = malloc(sizeof *p->evidence);
        if (!question || !choices || !p->speaker || !p->evidence) {
            free(cue), free(answer), free(question), free(choices);
            return -1;
        }
        snprintf(question, qlen, fmt, cue);
        free(cue);
        p->after = f + d;
        p->question = question;
        p->answer = answer;
        p->evidence[0] = f;
        p->n_evidence = 1;
        p->choices = choices;
        choices[p->n_choices++] = strdup(answer);
        if (!choices[0])
            return -1;
        /* distractors: continuations of the same length from other turns */
        for (int tries = 0; p->n_choices <= c->n_distractors && tries < 64 * (c->n_distractors + 1); tries++) {
            int t = (int)mn_rng_below(rng, (uint64_t)ep->n_turns);
            if (t == f)
                continue;
            int n2 = split_words(ep->turns[t].text, w2, MAX_WORDS);
            if (n2 < ans_n + 1)
                continue;
            int s2 = 1 + (int)mn_rng_below(rng, (uint64_t)(n2 - ans_n));
            char *alt = words_copy(ep->turns[t].text, w2, s2, ans_n, 1);
            if (!alt)
                return -1;
            int taken = strlen(alt) == 0;
            for (int i = 0; i < p->n_choices && !taken; i++)
                taken = strcasecmp(choices[i], alt) == 0;
            if (taken)
                free(alt);
            else
                choices[p->n_choices++] = alt;
        }
        for (int i = p->n_choices - 1; i > 0; i--) {
            int j = (int)mn_rng_below(rng, (uint64_t)i + 1);
            char *tmp = choices[i];
            choices[i] = choices[j];
            choices[j] = tmp;
        }
        return 1;
    }
    return 0;
}

mn_status mn_cued_add(mn_dialogue *ep, int64_t episode_index, const mn_cued_config *c, mn_cued_stats *stats) {
    if (!ep || !c || !stats)
        return mn_fail(MN_ERR_INVALID_ARG, "cued probes: NULL argument");
    MN_TRY(check_config(c));
    if (ep->n_turns == 0) {
        stats->skipped += c->probes_per_episode;
        return MN_OK;
    }
    mn_rng rng;
    mn_rng_seed(&rng, c->seed * 0x9E3779B97F4A7C15ull + (uint64_t)episode_index * 0xD1B54A32D192ED03ull + 0xC0EDull);
    unsigned char *is_evidence = calloc((size_t)ep->n_turns, 1);
    mn_probe *made = calloc((size_t)c->probes_per_episode, sizeof *made);
    word_span *w = malloc(2 * MAX_WORDS * sizeof *w);
    mn_status st = MN_OK;
    int n_made = 0, added = 0;
    if (!is_evidence || !made || !w) {
        st = mn_fail(MN_ERR_NOMEM, "cued probes: out of memory");
        goto done;
    }
    for (int i = 0; i < ep->n_probes; i++)
        for (int e = 0; e < ep->probes[i].n_evidence; e++)
            if (ep->probes[i].evidence[e] >= 0 && ep->probes[i].evidence[e] < ep->n_turns)
                is_evidence[ep->probes[i].evidence[e]] = 1;
    for (int i = 0; i < c->probes_per_episode; i++) {
        const mn_distance_range *r =
            &c->distances[(episode_index * c->probes_per_episode + i) % c->n_distances];
        int d = int_between(&rng, r->lo, r->hi);
        int got = make_probe(ep, is_evidence, c, d, &rng, &made[n_made], w, w + MAX_WORDS);
        if (got < 0) {
            mn_probe_free(&made[n_made]);
            st = mn_fail(MN_ERR_NOMEM, "cued probes: out of memory");
            goto done;
        }
        if (got == 0) {
            mn_probe_free(&made[n_made]);
            memset(&made[n_made], 0, sizeof made[n_made]);
            continue;
        }
        is_evidence[made[n_made].evidence[0]] = 1; /* one cued probe per source turn */
        n_made++;
    }
    if (n_made > 0) {
        mn_probe *grown = realloc(ep->probes, ((size_t)ep->n_probes + (size_t)n_made) * sizeof *grown);
        if (!grown) {
            st = mn_fail(MN_ERR_NOMEM, "cued probes: out of memory");
            goto done;
        }
        ep->probes = grown;
        memcpy(ep->probes + ep->n_probes, made, (size_t)n_made * sizeof *made);
        ep->n_probes += n_made;
        added = n_made;
        n_made = 0; /* owned by the episode now */
    }
    stats->probes += added;
    stats->skipped += c->probes_per_episode - added;
done:
    for (int i = 0; i < n_made; i++)
        mn_probe_free(&made[i]);
    free(made);
    free(w);
    free(is_evidence);
    return st;
}
