/* Corpus readers: each turns one public corpus into canonical dialogues (dialogue.h).
 *
 * Every reader has a path form (what `mnemo prepare` uses) and, where the corpus is one
 * document, a buffer form that needs no disk (what the fuzz targets use). Bad records are
 * reported as "file:line: reason" to options->log (if not NULL) and skipped with a count, or
 * returned as MN_ERR_FORMAT when options->strict. Texts are cleaned the same way everywhere:
 * invalid UTF-8 bytes become U+FFFD, surrounding whitespace is trimmed, empty turns are
 * dropped and turns longer than max_turn_chars code points are split at whitespace into
 * several turns of the same speaker; each of these is counted. */
#ifndef MN_READERS_H
#define MN_READERS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "text/dialogue.h"

typedef enum {
    MN_SPLIT_ALL = 0,
    MN_SPLIT_TRAIN,  /* self-dialogue: authors not held out */
    MN_SPLIT_VALID,  /* self-dialogue: held-out authors; topical-chat: valid_*.json */
    MN_SPLIT_TEST,   /* topical-chat: test_*.json */
} mn_split;

typedef enum {
    MN_ASK_AT_END = 0,   /* LoCoMo probes asked after the whole conversation */
    MN_ASK_AT_EVIDENCE,  /* ... right after the last session holding evidence */
} mn_ask_at;

typedef struct {
    int strict;             /* a bad record is fatal (MN_ERR_FORMAT) instead of skipped */
    int max_turn_chars;     /* longer turns are split; > 0 */
    mn_split split;
    mn_ask_at ask_at;
    int n_distractors;      /* LoCoMo multiple choice: distractors per probe, >= 0 */
    int valid_percent;      /* self-dialogue: share of authors held out, 0..100 */
    FILE *log;              /* where bad records are reported; NULL = silent */
} mn_reader_options;

/* strict 0, max_turn_chars 4000, split all, ask at end, 3 distractors, 5% valid, no log. */
mn_reader_options mn_reader_options_default(void);

/* What a reader read, skipped, filtered and changed. */
typedef struct {
    mn_read_stats read;            /* records, bad records, empty/invalid/split turns */
    int64_t rejected_rows;         /* self-dialogue: rows with Reject set */
    int64_t blocked_rows;          /* self-dialogue: rows by a blocked worker */
    int64_t duplicate_rows;        /* self-dialogue: AssignmentId seen before */
    int64_t other_split;           /* dialogues dropped because they belong to another split */
    int64_t empty_dialogues;       /* dialogues left with no turn, dropped */
    int64_t unresolved_evidence;   /* LoCoMo evidence ids naming no turn (dropped from evidence) */
    int64_t skipped_probes;        /* LoCoMo questions without a usable answer */
    int64_t files;                 /* input files read */
} mn_reader_stats;

/* Parses "self-dialogue", "topical-chat", "locomo", "chitchat" or "jsonl". */
mn_status mn_reader_format_parse(const char *name, int *format);
enum { MN_FORMAT_SELF_DIALOGUE, MN_FORMAT_TOPICAL_CHAT, MN_FORMAT_LOCOMO, MN_FORMAT_CHITCHAT,
       MN_FORMAT_JSONL };

/* Reads `path` in the given format, appending to `out`. */
mn_status mn_read_corpus(int format, const char *path, const mn_reader_options *options,
                         mn_dialogue_list *out, mn_reader_stats *stats);

/* Self-dialogue corpus (MTurk CSVs). `dir` is the corpus folder (holding corpus/ and
 * blocked_workers.txt) or the corpus/ folder itself; every *.csv below it is read in sorted
 * path order. Rows are kept iff Reject is empty, the WorkerId is not blocked and the
 * AssignmentId is new. Ids are "<topic>/<AssignmentId>"; WorkerId is never emitted. */
mn_status mn_read_self_dialogue(const char *dir, const mn_reader_options *options,
                                mn_dialogue_list *out, mn_reader_stats *stats);
/* One CSV from memory, no blocked workers; `name` names it in messages and gives the topic. */
mn_status mn_read_self_dialogue_buffer(const char *name, const char *buf, size_t len,
                                       const mn_reader_options *options,
                                       mn_dialogue_list *out, mn_reader_stats *stats);
/* 1 if this author belongs to the validation split (a fixed hash of the WorkerId). */
int mn_self_dialogue_author_is_valid(const char *worker_id, int valid_percent);

/* Topical-Chat. `path` is a conversations JSON file or a folder holding (possibly under
 * conversations/) valid_freq/valid_rare/test_freq/test_rare.json, chosen by the split
 * (valid, test or all). Speakers are the agents ("agent_1", "agent_2"). */
mn_status mn_read_topical_chat(const char *path, const mn_reader_options *options,
                               mn_dialogue_list *out, mn_reader_stats *stats);
mn_status mn_read_topical_chat_buffer(const char *name, const char *buf, size_t len,
                                      const mn_reader_options *options,
                                      mn_dialogue_list *out, mn_reader_stats *stats);

/* LoCoMo (locomo10.json, or a folder holding it). Turns carry session numbers and the
 * session's date text; a shared image is rendered as "[shares a photo of <caption>]" after
 * the text. Every QA becomes a probe: evidence dia_ids ("D<session>:<turn>") become turn
 * indices (of the first piece, when a long turn was split), the answer a string, and choices = answer + distractors drawn deterministically
 * from the answers to other questions of the same conversation and category. Category 5
 * (adversarial): answer "Not mentioned in the conversation" (or the given answer when there
 * is one), and its adversarial_answer is the first distractor. */
mn_status mn_read_locomo(const char *path, const mn_reader_options *options,
                         mn_dialogue_list *out, mn_reader_stats *stats);
mn_status mn_read_locomo_buffer(const char *name, const char *buf, size_t len,
                                const mn_reader_options *options, mn_dialogue_list *out,
                                mn_reader_stats *stats);
#define MN_LOCOMO_UNANSWERABLE "Not mentioned in the conversation"

/* BYU Chit-Chat dataset.json (bundled in the PyPI wheel chitchat-dataset 0.9.0). A message
 * (consecutive utterances of one sender) is one turn, its utterances joined by a space;
 * speakers are "A", "B", ... in order of appearance (sender UUIDs are not emitted); the turn
 * date is the first utterance's timestamp. Ids are the conversation UUIDs. */
mn_status mn_read_chitchat(const char *path, const mn_reader_options *options,
                           mn_dialogue_list *out, mn_reader_stats *stats);
mn_status mn_read_chitchat_buffer(const char *name, const char *buf, size_t len,
                                  const mn_reader_options *options, mn_dialogue_list *out,
                                  mn_reader_stats *stats);

/* Canonical JSONL: validation (mn_jsonl_read) and passthrough; turns are not re-split. */
mn_status mn_read_jsonl(const char *path, const mn_reader_options *options,
                        mn_dialogue_list *out, mn_reader_stats *stats);

#endif
