/* Varied ways of saying a template fact or question (docs/probes.md, `mnemo episodes
 * --frame-variety` and `--embed-facts`): generic, meaning-preserving rewrites of a phrasing
 * (discourse markers, tags, casing, contractions, question wrappers), and a sentence placed
 * inside the text of a real turn. No new hand-written phrasing shapes: whatever the rewrites
 * make is checked by the caller against the held-out phrasings. */
#ifndef MN_REWRITE_H
#define MN_REWRITE_H

#include <stddef.h>

#include "core/error.h"
#include "core/rng.h"

/* What a phrasing says: a fact (holds {value}) or a question (never does). */
typedef enum { MN_FRAME_FACT = 0, MN_FRAME_QUESTION = 1 } mn_frame_role;

/* A rewrite of `frame` (a phrasing with {key} and maybe {value}, left untouched): one to three
 * of a leading discourse marker ("Oh, ", "Actually, "), a trailing tag (", just so you know",
 * " lol"), a casing or punctuation change (lower case, no final mark, "!"), a contraction or
 * expansion ("what is" <-> "what's", "{key} is" -> "{key}'s"), and for questions a wrapper
 * ("Do you remember what your {key} was?", "Quick question: ..."). Always differs from frame.
 * Deterministic in rng. *out is malloc'd. */
mn_status mn_frame_vary(const char *frame, mn_frame_role role, mn_rng *rng, char **out);

/* The text of a real turn with `sentence` placed inside it: a fact goes before, between or
 * after the real sentences (role MN_FRAME_FACT), a question after them, each with a joiner
 * drawn from a short list ("By the way, ", "Oh, and ", "Anyway, ", or none). Real sentences
 * beyond max_chars (of the whole result) are dropped; sentence is kept whole. *out is NULL
 * when even the first real sentence does not fit, or `real` has no text. */
mn_status mn_embed_sentence(const char *real, const char *sentence, mn_frame_role role,
                            size_t max_chars, mn_rng *rng, char **out);

/* 1 if `phrase` occurs in `text` as whole words, case aside ("the" in "What was the {key}?"). */
int mn_holds_words(const char *text, const char *phrase);

#endif
