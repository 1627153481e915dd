/* Composed frames (docs/probes.md, `mnemo episodes --composed-frames`): a small grammar of
 * relations, read from the "composed" object of the open frames file, rendered into fact and
 * question frames of many constructions ("I stashed {value} behind my {key}.", "In your {key},
 * what did you find?"), where the open frames' lists hold a hundred phrasings of one or two
 * constructions. Nothing it renders shares a word (function words aside) or a run of four
 * words around a placeholder with a valid or test phrasing. */
#ifndef MN_FRAME_GRAMMAR_H
#define MN_FRAME_GRAMMAR_H

#include <jansson.h>

#include "core/error.h"
#include "core/rng.h"
#include "text/text_util.h" /* mn_strset */

/* One verb of the grammar: "stash|stashed|stashing|in,under,behind" in the file. */
typedef struct {
    char *base, *past, *ing;
    char **preps; /* prepositions it takes before "my {key}" */
    int n_preps;
} mn_grammar_verb;

/* The word lists a pattern's placeholders are filled from (see mn_frame_grammar_read). */
enum {
    MN_GRAMMAR_HOLDS,    /* {hold}:   "has", "is full of" */
    MN_GRAMMAR_THERE,    /* {there}:  "there's", "you'll find" */
    MN_GRAMMAR_MOVES,    /* {move}:   "goes", "ends up" */
    MN_GRAMMAR_KINDS,    /* {kind}:   "item" */
    MN_GRAMMAR_PLACES,   /* {place}:  "in", "under" */
    MN_GRAMMAR_HAVES,    /* {have}:   "hold" (a question's verb) */
    MN_GRAMMAR_DOS,      /* {do}:     "do", "did" */
    MN_GRAMMAR_TAILS,    /* {tail}:   "", ", as usual" */
    MN_GRAMMAR_PREFIXES, /* before a fact: "", "Oh, " */
    MN_GRAMMAR_LISTS
};

/* What a rendered frame is: a fact, a question to the fact's listener, or one by its speaker. */
typedef enum {
    MN_GRAMMAR_FACT = 0,
    MN_GRAMMAR_QUESTION = 1,
    MN_GRAMMAR_SELF_QUESTION = 2,
    MN_GRAMMAR_ROLES
} mn_grammar_role;

typedef struct {
    char **patterns[MN_GRAMMAR_ROLES];
    int n_patterns[MN_GRAMMAR_ROLES];
    mn_grammar_verb *verbs;
    int n_verbs;
    char **lists[MN_GRAMMAR_LISTS];
    int n_lists[MN_GRAMMAR_LISTS];
    mn_strset heldout_phrasings; /* mn_text_norm'd valid and test phrasings */
    mn_strset heldout_runs;      /* their runs of four words holding "key" or "value" */
} mn_frame_grammar;

/* Reads the grammar from obj (the open frames file's "composed" object):
 *   {"facts": [...], "questions": [...], "self_questions": [...], "verbs": [...], "holds",
 *    "there", "moves", "kinds", "places", "haves", "dos", "tails", "prefixes": [...]}
 * Patterns hold {key}, {value} (facts only, and there always) and the placeholders {base},
 * {past}, {ing}, {prep}, {Prep} (one verb a frame, one of its prepositions) and {hold},
 * {there}, {move}, {kind}, {place}, {have}, {do}, {tail} (a word of that list
 * each); a fact gets a prefix before it. Only tails and prefixes may be "". heldout_phrasings
 * are the valid and test phrasings of every template file, mn_text_norm'd, moved into the
 * grammar (the set is left empty, whatever the outcome); banned_words the
 * words no entry may hold (those phrasings' words but function words, the held-out families'
 * key words, the valid and test values' words, all lower case). Errors name `file` and the
 * entry. *out is allocated; free with mn_frame_grammar_free. */
mn_status mn_frame_grammar_read(json_t *obj, const char *file, mn_strset *heldout_phrasings,
                                const mn_strset *banned_words, mn_frame_grammar **out);
void mn_frame_grammar_free(mn_frame_grammar *g);

/* 1 if the word w[0..n) (lower case) is a function word of English that may be shared with a
 * held-out phrasing ("my", "in", "there", "s" of "there's"). */
int mn_grammar_function_word(const char *w, size_t n);

/* A frame of `role` rendered from a random pattern, or *out = NULL when none of 32 draws is
 * clear of the held-out phrasings (equal to one, or sharing a run of four words holding {key}
 * or {value} with one). Deterministic in rng. *out is malloc'd. */
mn_status mn_frame_grammar_compose(const mn_frame_grammar *g, mn_grammar_role role, mn_rng *rng,
                                   char **out);

#endif
