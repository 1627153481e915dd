/* Canonical dialogues in memory (../shared/docs/dialogue-format.md, copied to
 * docs/dialogue-format.md). Readers of every corpus produce these; the JSONL writer and
 * reader round-trip them exactly. All strings are owned, NUL-terminated UTF-8. */
#ifndef MN_DIALOGUE_H
#define MN_DIALOGUE_H

#include <stdint.h>
#include <stdio.h>

#include "mnemo.h"

typedef struct {
    char *speaker;   /* non-empty */
    char *text;      /* may be empty */
    int session;     /* 0 = absent (sessions count from 1) */
    char *date;      /* NULL = absent */
} mn_turn;

typedef struct {
    int after;            /* turns consumed into memory before the question, 1..n_turns */
    char *speaker;        /* NULL = absent */
    char *question;
    char *answer;
    char **choices;       /* n_choices strings, containing answer; NULL when n_choices == 0 */
    int n_choices;
    int *evidence;        /* turn indices (0-based); NULL when n_evidence == 0 */
    int n_evidence;
    int category;         /* dataset category (LoCoMo 1..5), 0 = absent */
} mn_probe;

typedef struct {
    char *id;
    mn_turn *turns;
    int n_turns;
    mn_probe *probes;
    int n_probes;
} mn_dialogue;

/* A growable list of dialogues. */
typedef struct {
    mn_dialogue *items;
    int64_t count, capacity;
} mn_dialogue_list;

void mn_dialogue_free(mn_dialogue *d);             /* frees contents, not d itself */
void mn_dialogue_list_free(mn_dialogue_list *list);
/* Moves *d into the list (d is zeroed on success). */
mn_status mn_dialogue_list_push(mn_dialogue_list *list, mn_dialogue *d);

/* Counts of what a reader skipped or changed; printed by `mnemo prepare`. */
typedef struct {
    int64_t lines_read;      /* records seen */
    int64_t bad_records;     /* malformed records skipped (fatal under strict) */
    int64_t empty_turns;     /* empty utterances dropped */
    int64_t invalid_utf8;    /* texts whose invalid bytes were replaced by U+FFFD */
    int64_t split_turns;     /* over-long turns split into several */
} mn_read_stats;

/* The rule for input that yields nothing (docs/dialogue-format.md): MN_ERR_FORMAT, naming
 * `input`, when nothing usable came out of it (usable == 0: no dialogue, or every record bad),
 * or when more than half of the records read were bad and the caller does not accept bad
 * records (accept_bad: the commands' --skip-bad). The caller then leaves its output alone. */
mn_status mn_read_check_yield(const char *input, const mn_read_stats *stats, int64_t usable, int accept_bad);

/* Reads canonical JSONL. Bad lines are reported (file:line and reason, to `log` if not NULL)
 * and skipped, or fatal when strict. Validates the format's rules (non-empty speaker,
 * probe `after` in 1..n_turns, choices containing the answer, evidence in range). */
mn_status mn_jsonl_read(const char *path, int strict, FILE *log, mn_dialogue_list *out,
                        mn_read_stats *stats);
/* (Both readers: a line without "id" gets the id "line-<N>"; blank lines are not records;
 * invalid UTF-8 in a line is replaced by U+FFFD and counted in invalid_utf8.) */
/* Same as mn_jsonl_read on a buffer already in memory; `name` names it in messages. */
mn_status mn_jsonl_read_buffer(const char *name, const char *buf, size_t len, int strict,
                               FILE *log, mn_dialogue_list *out, mn_read_stats *stats);
/* Writes one dialogue as one JSON line. */
mn_status mn_jsonl_write_dialogue(FILE *f, const mn_dialogue *d);
/* Writes the list atomically: temp file, fsync, rename. */
mn_status mn_jsonl_write_file(const char *path, const mn_dialogue_list *list);

/* What a list holds, as `mnemo prepare`, `episodes` and `tokenizer` report it. */
typedef struct {
    int64_t dialogues, turns, probes;
    int64_t probes_with_choices, probes_with_evidence;
} mn_dialogue_counts;
mn_dialogue_counts mn_dialogue_list_count(const mn_dialogue_list *list);

#endif
