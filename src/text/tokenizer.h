/* Byte-level BPE tokenizer (docs/tokens.md).
 *
 * Two kinds share one engine:
 * - "mnemo-bpe": trained here. Ids 0..255 are the raw bytes (id == byte value), 256..261 the
 *   special tokens (mn_special order), 262.. the merges in rank order.
 * - "gpt2": loaded from Hugging Face GPT-2 vocab.json + merges.txt; ids are GPT-2's own.
 *   It has none of mnemo's special tokens (mn_tokenizer_special() returns -1).
 * Both pre-tokenize with GPT-2's pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * with Unicode categories from utf8proc; an invalid UTF-8 byte counts as one "other"
 * character. Encoding never produces a special token (their text encodes as plain bytes), so
 * decode(encode(b)) == b for every byte string b.
 *
 * A tokenizer is not safe to use from two threads at once: encoding fills a per-handle cache.
 */
#ifndef MN_TOKENIZER_H
#define MN_TOKENIZER_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "core/hash.h" /* mn_xxh64, which callers of the tokenizer have taken from here */
#include "mnemo.h"
#include "text/dialogue.h"

typedef enum {
    MN_TOK_PAD = 0,       /* <|pad|> */
    MN_TOK_TURN,          /* <|turn|>: a turn starts */
    MN_TOK_SPEAKER_A,     /* <|speaker_a|>: the dialogue's first distinct speaker */
    MN_TOK_SPEAKER_B,     /* <|speaker_b|>: any other speaker */
    MN_TOK_EOT,           /* <|eot|>: the turn ends */
    MN_TOK_SESSION,       /* <|session|>: this turn opens a new session */
    MN_TOK_N_SPECIAL
} mn_special;

enum {
    MN_TOK_BYTE_BASE = 0,      /* mnemo-bpe: byte b has id b */
    MN_TOK_SPECIAL_BASE = 256, /* mnemo-bpe: special s has id 256 + s */
    MN_TOK_MERGE_BASE = 262,   /* mnemo-bpe: merge of rank r has id 262 + r */
    MN_TOK_DEFAULT_VOCAB = 4096,
    MN_TOK_MAX_VOCAB = 1 << 20,
};

/* Text of a special token, e.g. "<|turn|>". */
const char *mn_special_text(mn_special which);

/* A growable array of token ids. Zero-initialise; mn_ids_free releases it. */
typedef struct {
    int32_t *ids;
    int64_t count, capacity;
} mn_ids;
void mn_ids_free(mn_ids *ids);
mn_status mn_ids_push(mn_ids *ids, int32_t id);

/* ---- training */
/* Pre-token frequency table: the corpus is pre-tokenized once, and training works on the
 * distinct pre-tokens only. */
typedef struct mn_bpe_counts mn_bpe_counts;
mn_status mn_bpe_counts_create(mn_bpe_counts **out);
void mn_bpe_counts_free(mn_bpe_counts *counts);
mn_status mn_bpe_counts_add(mn_bpe_counts *counts, const char *text, size_t len);
/* Adds every turn text and every probe question and answer. */
mn_status mn_bpe_counts_add_dialogues(mn_bpe_counts *counts, const mn_dialogue_list *list);
int64_t mn_bpe_counts_distinct(const mn_bpe_counts *counts);
int64_t mn_bpe_counts_total(const mn_bpe_counts *counts);

/* Learns vocab_size - 262 merges (fewer if the corpus runs out of pairs: the vocabulary is then
 * smaller). Each step merges the most frequent adjacent pair; ties go to the smaller left id,
 * then the smaller right id, so training is deterministic. vocab_size in 262..MN_TOK_MAX_VOCAB. */
mn_status mn_tokenizer_train(const mn_bpe_counts *counts, int vocab_size, mn_tokenizer **out);
/* What a training run worked on and how much work it did (tests bound the work by the text). */
typedef struct {
    int64_t symbols; /* bytes of the distinct pre-tokens of 2+ bytes: the text training works on */
    int64_t steps;   /* pair occurrences recorded, plus those looked at when their pair merged */
} mn_bpe_train_stats;
mn_status mn_tokenizer_train_with_stats(const mn_bpe_counts *counts, int vocab_size, mn_tokenizer **out,
                                        mn_bpe_train_stats *stats);
/* Convenience: texts[i] of lens[i] bytes (lens NULL: NUL-terminated). */
mn_status mn_tokenizer_train_texts(const char *const *texts, const size_t *lens, int64_t n,
                                   int vocab_size, mn_tokenizer **out);

/* ---- GPT-2 compatibility */
/* Loads Hugging Face GPT-2 files (vocab.json: byte-to-unicode token -> id; merges.txt:
 * "#version" line, then "left right" per line in rank order). Errors name file and line. */
mn_status mn_tokenizer_load_gpt2(const char *vocab_json_path, const char *merges_txt_path,
                                 mn_tokenizer **out);
/* Same from memory (fuzzing, tests). Names are used in messages. */
mn_status mn_tokenizer_load_gpt2_buffers(const char *vocab_json, size_t vocab_len,
                                         const char *merges_txt, size_t merges_len,
                                         const char *vocab_name, const char *merges_name,
                                         mn_tokenizer **out);

/* The inverse of mn_tokenizer_load_gpt2 for a "gpt2" tokenizer: writes vocab.json (ids in
 * order) and merges.txt ("#version: 0.2", then the merges in rank order), each atomically,
 * so that loading them again gives the same tokenizer (same hash). */
mn_status mn_tokenizer_save_gpt2(const mn_tokenizer *tok, const char *vocab_json_path, const char *merges_txt_path);

/* mn_tokenizer_free, mn_tokenizer_vocab_size and mn_tokenizer_token_bytes are public API
 * (mnemo.h). */

/* ---- queries */
const char *mn_tokenizer_kind(const mn_tokenizer *tok);       /* "mnemo-bpe" or "gpt2" */
int mn_tokenizer_n_merges(const mn_tokenizer *tok);
/* Id of a special token, -1 if this tokenizer has none. */
int32_t mn_tokenizer_special(const mn_tokenizer *tok, mn_special which);
/* 64-bit content hash over kind, every token's bytes, the merges and the special ids.
 * Checkpoints and shards store it and refuse a tokenizer with another hash. */
uint64_t mn_tokenizer_hash(const mn_tokenizer *tok);

/* ---- encode / decode */
/* Appends the ids of text[0..len) (any bytes) to out. */
mn_status mn_tokenizer_encode(mn_tokenizer *tok, const char *text, size_t len, mn_ids *out);
/* Bytes of the ids, into a malloc'd NUL-terminated buffer (*out_len excludes the NUL).
 * An id out of range, or one that names no token, is MN_ERR_INVALID_ARG. */
mn_status mn_tokenizer_decode(const mn_tokenizer *tok, const int32_t *ids, int64_t n,
                              char **out, size_t *out_len);
/* End of the GPT-2 pre-token starting at pos (pos < len). */
size_t mn_pretokenize_next(const char *text, size_t len, size_t pos);

/* ---- persistence: group "tokenizer" under loc (a file or group) */
/* Writes loc/tokenizer: datasets vocab_offsets (int64, V+1), vocab_bytes (uint8),
 * merges (int32, M x 2: left, right ids), merge_ids (int32, M: result id), special_ids
 * (int32, 6; -1 = absent); attributes kind, version, vocab_size, hash. */
mn_status mn_tokenizer_save_h5(const mn_tokenizer *tok, hid_t loc);
/* Reads loc/tokenizer, checks every invariant and that the stored hash matches. `name`
 * (the file) prefixes messages. */
mn_status mn_tokenizer_load_h5(hid_t loc, const char *name, mn_tokenizer **out);
/* A standalone HDF5 file holding only the tokenizer group; written atomically. */
mn_status mn_tokenizer_save_file(const mn_tokenizer *tok, const char *path);
mn_status mn_tokenizer_load_file(const char *path, mn_tokenizer **out);

#endif
