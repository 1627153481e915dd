/* The tokenizer's training text from canonical dialogue JSONL files (`mnemo tokenizer
 * --train`, docs/tokens.md): read a file, count its pre-tokens. */
#ifndef MN_BPE_JSONL_H
#define MN_BPE_JSONL_H

#include <stdint.h>
#include <stdio.h>

#include "text/dialogue.h"
#include "text/tokenizer.h"

typedef struct {
    int64_t dialogues, turns; /* read from the file */
    int64_t bad_lines;        /* malformed lines skipped (reported to the log) */
} mn_bpe_jsonl_stats;

/* Reads path with mn_jsonl_read (bad lines reported to log and skipped, or fatal when strict),
 * refuses it by mn_read_check_yield (nothing usable, or more than half bad without skip_bad),
 * and adds its turn texts, probe questions and answers to counts. Errors name the file once. */
mn_status mn_bpe_counts_add_jsonl(mn_bpe_counts *counts, const char *path, int strict, int skip_bad, FILE *log,
                                  mn_bpe_jsonl_stats *stats);

#endif
