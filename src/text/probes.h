/* Recall probes injected into episodes (docs/probes.md): a fact is said as a first-person turn
 * by one speaker, and d turns later the other speaker asks about it (or the same speaker asks
 * for it back). The facts come from MSC persona sentences or from slot templates (the JSON
 * files in data/probes); both are split so that no test phrasing, value or persona sentence
 * ever reaches training data, and whole template families can be held out of training. */
#ifndef MN_PROBES_H
#define MN_PROBES_H

#include <stdint.h>

#include "text/dialogue.h"
#include "text/frame_grammar.h"
#include "text/readers.h" /* mn_split */
#include "text/text_util.h" /* mn_strset */

/* One slot-template category (a family) of one split, e.g. "pets": "my {key} is {value}". */
typedef struct {
    char *name;
    int held_out;      /* 1: the family serves only this split ("family_split"), so its keys,
                        * phrasings and values are nowhere in the other splits */
    char **keys;       /* what is recalled, e.g. "dog's name"; shared by all the splits the
                        * family serves */
    int n_keys;
    char **facts;      /* first-person statements holding {key} and {value} */
    int n_facts;
    char **updates;    /* statements that replace an earlier value */
    int n_updates;
    char **questions;  /* second-person questions holding {key}, never {value} */
    int n_questions;
    char **self_questions; /* first-person questions asked by the fact's own speaker ("What's
                            * my {key} again?"); optional in the files (0 when absent) */
    int n_self_questions;
    char **values;     /* all of one type, so that any two are plausible alternatives */
    int n_values;
} mn_fact_category;

/* Value kinds of generated values (open values and open families). */
typedef enum {
    MN_OPEN_NAME,   /* a capitalised made-up word, 2 or 3 syllables ("Zobex") */
    MN_OPEN_NUMBER, /* a whole number 0..9999, 1 to 4 digits alike */
    MN_OPEN_DATE,   /* "<Month> <day>" */
    MN_OPEN_PHRASE, /* one or two lower-case made-up words ("maplen", "he gin") */
    MN_OPEN_TIME,   /* "H:MM", 1:00 to 12:59 */
    MN_OPEN_CODE,   /* one or two capitals, a dash, 2 to 4 digits ("B-212") */
    MN_OPEN_THING,  /* a thing of the frames' list, alone or after a quality ("copper kettle") */
    MN_OPEN_SPAN,   /* 1 to 3 consecutive words of a real turn ("olive green"); open families
                     * only, chosen by span_prob rather than drawn with the kinds above */
    MN_OPEN_WORDS,  /* 1 to 3 real words of the dialogues, drawn apart, lower case ("pickle
                     * harbour"); open families only, chosen by words_prob */
    MN_OPEN_TITLE,  /* the same, each word capitalised, maybe after "The" ("The Pickle
                     * Harbour"); open families only, half of the words_prob ones */
    MN_OPEN_KINDS
} mn_open_kind;
/* The kinds an open family draws uniformly: those before MN_OPEN_SPAN. */
#define MN_OPEN_DRAWN_KINDS MN_OPEN_SPAN

/* Train-only material for generated families, from the templates' open_frames file
 * (data/probes/open_frames.json): phrasings with {key} and {value} ("frames") and the words
 * that generated keys and values are made of. */
typedef struct {
    char *file;
    char **facts, **updates, **questions, **self_questions;
    int n_facts, n_updates, n_questions, n_self_questions;
    char **nouns;      /* what a key is about: "locker" */
    char **modifiers;  /* before a noun: "gym" -> "gym locker code" */
    char **owners;     /* whose: "cousin" -> "cousin's kayak code" */
    int n_nouns, n_modifiers, n_owners;
    char **kind_words[MN_OPEN_KINDS]; /* what a key of each value kind ends in: "code" */
    int n_kind_words[MN_OPEN_KINDS];
    char **things;     /* MN_OPEN_THING values */
    char **qualities;  /* before a thing */
    int n_things, n_qualities;
    mn_frame_grammar *grammar; /* "composed": relations rendered into frames; NULL when the
                                * file has none (frame_grammar.h) */
} mn_open_frames;

typedef struct {
    mn_split split;
    mn_fact_category *categories;
    int n_categories;
    mn_open_frames *open_frames; /* train split only: the open_frames file of the templates,
                                  * NULL when they have none */
    char **persona_questions;  /* asked about an MSC persona fact */
    int n_persona_questions;
    char **persona_self_questions; /* asked by the persona's own speaker ("What did I tell you
                                    * about myself?"); optional */
    int n_persona_self_questions;
    mn_strset heldout_phrasings; /* train split only: every valid and test phrasing of the
                                  * files (mn_text_norm'd: case, punctuation, spacing aside), so
                                  * that no rewrite of a train phrasing (--frame-variety)
                                  * equals one */
} mn_probe_templates;

/* Loads the templates of one split (train, valid or test) from a folder of *.json files (read
 * in name order) or from one such file. A file holds either one category
 *   {"category": name, "keys": [...], "fact": S, "update": S, "question": S,
 *    "self_question": S (optional), "values": S}
 * or {"persona_questions": S, "persona_self_questions": S (optional)}, where S = {"train":
 * [...], "valid": [...], "test": [...]}. A category with "family_split": "valid" or "test" is a
 * held-out family: its S objects hold that split only, and it is loaded for that split only.
 * At most one file is {"open_frames": {"fact": [...], "update": [...], "question": [...],
 * "self_question": [...], "nouns": [...], "modifiers": [...], "owners": [...], "kind_words":
 * {"name": [...], ...one list per mn_open_kind}, "things": [...], "qualities": [...]}}, train
 * material only (kept in out->open_frames for the train split). Every file is read and
 * checked, whichever split is asked for: every list non-empty, fact and update phrasings
 * holding {key} and {value} (in either order), questions holding {key} and no {value}, no
 * other placeholder, values unique within a category, no phrasing or value (case-insensitive)
 * in two splits across all files, no key of a held-out family equal to, inside or around a key
 * of any other family; and for the open frames: no frame equal to a valid or test phrasing of
 * any file ignoring case, punctuation and spacing, no word of a key list equal to a word of a
 * held-out family's key, no word of a value list equal to a word of a valid or test value
 * (words compared ignoring case, a trailing "'s" and a plural "s"). Errors name the file(s)
 * and the field. */
mn_status mn_probe_templates_load(const char *path, mn_split split, mn_probe_templates *out);

/* Which loaded families to keep (`mnemo episodes --families`). */
typedef enum {
    MN_FAMILIES_ALL = 0,  /* every family of the split */
    MN_FAMILIES_SHARED,   /* the families serving all splits (held-out ones dropped) */
    MN_FAMILIES_HELD_OUT, /* only the families held out for this split */
} mn_family_set;

/* Drops the categories not in `which`; fails (leaving `t` unchanged) when none would be left.
 * Persona questions are kept. */
mn_status mn_probe_templates_select(mn_probe_templates *t, mn_family_set which);
void mn_probe_templates_free(mn_probe_templates *templates);

/* Open values (`mnemo episodes --open-values N`), for the train split only: replaces every
 * category's value list by up to N generated values of the category's kind, so that a value is
 * seen too rarely to be memorised and recall has to copy it from the fact turn. Kinds, by
 * category name: "numbers" whole numbers 0..9999 (1 to 4 digits alike); "dates" "<Month> <day>"
 * (any day of the year); "preferences" one or two lower-case made-up words; any other category
 * (names, pets, places, ...) a capitalised made-up word of 2 or 3 syllables. Values are unique
 * within a category, and none equals (case-insensitive) a value of the valid or test split of
 * any category, read again from `path` (the same templates folder or file). A kind with fewer
 * than N possible values keeps all it has (dates: 366 less the held-out ones). Deterministic in
 * seed. Fails (leaving `t` unchanged) when t->split is not train. */
mn_status mn_probe_templates_open_values(mn_probe_templates *t, const char *path, int n_values,
                                         uint64_t seed);

/* Open families (`mnemo episodes --open-families N`), for the train split only: adds N
 * generated families to t, so that recall is learnt for any key and phrasing rather than for
 * the loaded families. Family i is named "open-<i+1>" and has one value kind (uniform over
 * the MN_OPEN_DRAWN_KINDS), 5 to 8 generated keys (made-up words, and compounds of t->open_frames' nouns,
 * modifiers, owners and the kind's words: "zorbin", "kelvat code", "cousin's kayak code", "gym
 * locker number"), 3 to 6 fact, 1 to 3 update, 2 to 4 question and 2 to 4 self-question frames
 * drawn from the open frames, and up to MN_OPEN_FAMILY_VALUES generated values of its kind.
 * No generated key equals, lies inside or holds a key of any family in `path` (read again for
 * the valid and test splits) or has a word of a held-out family's key; no generated key equals
 * or holds as whole words another generated key, or lies inside one of its own family; no
 * value equals (case-insensitive) a valid or test value of any family. Deterministic in seed.
 * Fails (leaving t unchanged) when t->split is not train or t has no open frames. */
#define MN_OPEN_FAMILY_VALUES 64
mn_status mn_probe_templates_open_families(mn_probe_templates *t, const char *path,
                                           int n_families, uint64_t seed);

/* Span families (`mnemo episodes --span-families P`): open families some of whose values are
 * real text. As mn_probe_templates_open_families, but each family is of the span kind with
 * chance spans->prob (drawn per family from a stream of its own, so prob 0 draws nothing and
 * gives exactly what mn_probe_templates_open_families gives); the others draw their kind as
 * there. A span family's keys end in a word of kind_words.span, and its values are up to
 * MN_OPEN_FAMILY_VALUES distinct (case-insensitive) spans of 1 to 3 consecutive words of one
 * turn of spans->dialogues, drawn at random: each word letters, apostrophes and inner hyphens
 * once the punctuation around the span is stripped (none inside it), at least one word of 4+
 * letters that is no common function word, and no span equal to or holding as a run of whole
 * words a valid or test value of any family. spans->families and spans->values are set to what
 * was made. Fails (leaving t unchanged) as mn_probe_templates_open_families does, when prob,
 * words_prob or keys_prob is not in [0, 1], when one is > 0 without dialogues, or when a family
 * finds fewer than 2 values. */
/* Word families (`--word-families P`): with chance words_prob (a stream of its own again, so
 * 0 draws nothing) a family that is not a span family is of the words or title kind (one in
 * two): its values are 1 to 3 distinct words, each a word of a random turn of the dialogues
 * (letters and inner hyphens, 4+ letters, no common function word, and no word of a valid or
 * test value of any family, compared as the open frames' words are), joined by one space, lower
 * case (words) or capitalised and, one value in four, after "The" (title). Unlike a span the
 * words come from different places, so a value is as unlikely to the language model as its
 * distractors, but made of real words as the held-out values are. */
/* Word keys (`--word-keys P`): with chance keys_prob (a stream of its own, so 0 draws nothing)
 * a family's keys are made of words of random turns of the dialogues, drawn as a word family's
 * value words are, in the places the fixed lists fill otherwise: "{word} {kind word}", "{word}
 * {word}", "{word} {word} {kind word}" or "{owner}'s {word}". Every key still passes the rule
 * of all generated keys (no word of a held-out family's key, no overlap with a valid or test
 * key), so no held-out key word stands where a key stands, but thousands of real words do: a
 * key is matched by its words, not recognised from a short list. A family with word keys draws
 * its frames and values after them, so it and the families after it differ from those of a
 * chance of 0. */
/* Shared heads (`--shared-heads P`): with chance heads_prob (a stream of its own, so 0 draws
 * nothing) a family draws one head word, a word of its kind ("code") or a noun of the lists
 * ("ticket"), and every key of it ends in that head: "{word} {head}" (a word of the dialogues,
 * with word keys), "{modifier} {head}", "{noun} {head}" or "{owner}'s {head}". Keys of one
 * family then differ in one word, so a group of one kind (`--alive-same-kind`) asks the state to
 * tell apart keys alike but for a word, which the held-out families have ("X car", "Y car") and
 * keys of random words rarely do. A head sharing a word with a held-out family's key or
 * overlapping a valid or test key is redrawn (five tries, then the family's keys are drawn as
 * without it); every key still passes the rule of all generated keys. head_families counts the
 * families that got a head. */
/* Composed frames (`--composed-frames P`): with chance composed_prob (a stream of its own, which
 * also renders the frames, so 0 draws nothing and a family's keys and values are the same
 * either way) a family's fact, question and self-question frames are 3-6, 2-4 and 2-4 frames
 * rendered from the open frames file's grammar (frame_grammar.h) instead of picks of its lists:
 * relations of many constructions where the lists hold one or two. Needs the grammar. */
typedef struct {
    double prob;                        /* chance that a family is of the span kind */
    const mn_dialogue_list *dialogues;  /* whose turns spans and words are taken from */
    int families;                       /* out: span families made */
    int64_t values;                     /* out: their values, all together */
    double words_prob;                  /* chance that a family is of the words or title kind */
    int words_families;                 /* out: word families made (both kinds) */
    int64_t words_values;               /* out: their values, all together */
    double keys_prob;                   /* chance that a family's keys are of dialogue words */
    int keys_families;                  /* out: families with such keys */
    double heads_prob;                  /* chance that a family's keys share a head word */
    int head_families;                  /* out: families whose keys share one */
    double composed_prob;               /* chance that a family's frames are composed */
    int composed_families;              /* out: families with composed frames */
} mn_open_spans;
mn_status mn_probe_templates_open_families_spans(mn_probe_templates *t, const char *path,
                                                 int n_families, uint64_t seed,
                                                 mn_open_spans *spans);

/* MSC persona sentences of one split (msc_personas_all.json: {"train"|"valid"|"test": [{"Speaker
 * 1": [...], "Speaker 2": [...]}]}). A sentence found in two splits (compared lower-cased,
 * with punctuation and extra spaces removed) is dropped from all of them, so that the splits
 * are disjoint; duplicates within the split are merged. Each item side ("Speaker 1" of item 7) is a
 * persona: a coherent set of facts about one person. */
typedef struct {
    mn_split split;
    char **sentences;       /* unique, first-occurrence order */
    int n_sentences;
    int *persona_start;     /* persona p holds persona_sentences[persona_start[p] ..
                             * persona_start[p + 1]) (indices into sentences) */
    int *persona_sentences;
    int n_personas;         /* personas left with at least one sentence */
    int64_t dropped_shared; /* sentences (with repeats) dropped because another split has them */
} mn_persona_bank;

mn_status mn_persona_bank_load(const char *path, mn_split split, mn_persona_bank *out);
void mn_persona_bank_free(mn_persona_bank *bank);

/* Where fact sentences come from. */
enum { MN_FACTS_PERSONAS = 1, MN_FACTS_TEMPLATES = 2, MN_FACTS_BOTH = 3 };

/* Distances in turns; a probe takes one range (in turn across probes) and a uniform distance
 * inside it. {8, 8} asks exactly 8 turns after the fact. */
typedef struct {
    int lo, hi;  /* 1 <= lo <= hi */
} mn_distance_range;

typedef struct {
    const mn_distance_range *distances;
    int n_distances;
    int probes_per_episode;  /* >= 1; fewer are made when the episode has no room */
    int n_distractors;       /* k: choices = answer + up to k distractors of the same type */
    int interference;        /* per template probe: this many extra facts of the same category
                              * (other keys, other values) said by the same speaker before the
                              * question */
    double update_prob;      /* per template probe: chance that the value is first stated, then
                              * changed; the answer is the new value, the old one a distractor */
    int sources;             /* MN_FACTS_* */
    int askers;              /* MN_ASKERS_*: who asks about a fact */
    int alive;               /* 0: probes placed independently; N >= 2: the probes of an
                              * episode come in groups of N template facts of different
                              * categories, all said before the first of the group's questions
                              * (N facts alive at once; templates only) */
    int alive_same_kind;     /* with alive: the N facts of a group are of one category, each
                              * with its own key and value, and each is asked, so only the key
                              * in the question tells which value answers it; the group's other
                              * values are the first distractors */
    double embed_prob;       /* train only: chance that a template fact turn is said inside
                              * the next real turn of its speaker, and (drawn apart) that a
                              * template question follows a real turn of its asker in the
                              * same turn (docs/probes.md "Facts inside real turns") */
    double variety_prob;     /* train only: chance that a template fact, update or question
                              * phrasing is rewritten (rewrite.h mn_frame_vary) */
    double noise_prob;       /* train only: chance that a template fact turn is said with
                              * noise around its frame: words of the episode's own dialogue
                              * before, after and between the frame's words, frame words
                              * dropped or swapped; the key and the value stay whole
                              * (docs/probes.md "Noise around the frame") */
    uint64_t seed;
} mn_probe_config;

/* Who asks: the other speaker, in the second person ("What is your dog's name?"); the speaker
 * who stated the fact, in the first person ("What's my dog's name again?"; the other speaker
 * answers, as in `mnemo chat` where the user tells and asks and the model answers); or either,
 * drawn per probe. */
enum { MN_ASKERS_OTHER = 0, MN_ASKERS_SELF = 1, MN_ASKERS_BOTH = 2 };

/* Distances 1,2,4,8,16,32,64; 8 probes per episode; 3 distractors; no interference; no
 * updates; both sources; the other speaker asks; no groups; seed 1. */
mn_probe_config mn_probe_config_default(void);

typedef struct {
    int64_t episodes;
    int64_t probes;             /* made */
    int64_t persona_probes;
    int64_t template_probes;
    int64_t update_probes;
    int64_t interference_facts;
    int64_t fact_turns;         /* turns inserted (facts, updates, interference) */
    int64_t skipped_probes;     /* asked for but not placeable (episode too short, no room) */
    int64_t dropped_turns;      /* original turns pushed past the end by inserted facts */
    int64_t embedded_facts;     /* fact turns said inside a real turn (embed_prob) */
    int64_t embedded_questions; /* questions said after a real turn of the asker */
    int64_t varied_phrasings;   /* phrasings rewritten (variety_prob) */
    int64_t noised_facts;       /* fact turns said with noise around the frame (noise_prob) */
} mn_probe_stats;

/* Adds probes to one episode. The episode keeps its length: fact turns are placed at chosen
 * indices and the original turns fill the others in order, the last ones falling off the end.
 * Each probe has after = fact index + d, evidence = [fact index] (the update turn when there
 * is one), speaker = the asker (config->askers), and choices with the answer at a random
 * place. The episode's existing probes are re-indexed (and dropped if their turns fell off).
 * Deterministic in (config->seed, episode_index). `templates` may be NULL when sources has no
 * MN_FACTS_TEMPLATES and no persona probe is asked for; persona probes need both `personas`
 * and templates->persona_questions. With askers self or both, every category (and, for
 * persona probes, the templates) needs self questions. On failure the episode is unchanged. */
mn_status mn_probes_inject(mn_dialogue *episode, int64_t episode_index,
                           const mn_probe_templates *templates, const mn_persona_bank *personas,
                           const mn_probe_config *config, mn_probe_stats *stats);

/* mn_probes_inject on every episode of the list, episode_index = position in the list. */
mn_status mn_probes_inject_all(mn_dialogue_list *episodes, const mn_probe_templates *templates,
                               const mn_persona_bank *personas, const mn_probe_config *config,
                               mn_probe_stats *stats);

/* Synthetic recall episodes, needing no corpus: n_episodes episodes of `turns` turns between
 * speakers "A" and "B" whose filler texts are drawn from the turns of `pool` (NULL: a small
 * built-in small-talk pool), in sessions of 12 turns, with template facts injected as by
 * mn_probes_inject (config->sources is taken as MN_FACTS_TEMPLATES). Appends to `out`. */
mn_status mn_probes_synthetic(const mn_dialogue_list *pool, int n_episodes, int turns,
                              const mn_probe_templates *templates, const mn_probe_config *config,
                              mn_dialogue_list *out, mn_probe_stats *stats);

/* Parses "1,2,4,8" and ranges "1-16,32,100-512" into a malloc'd array. */
mn_status mn_distances_parse(const char *spec, mn_distance_range **out, int *n);

/* "train", "valid" or "test". */
mn_status mn_probe_split_parse(const char *name, mn_split *out);
const char *mn_probe_split_name(mn_split split);

#endif
