/* Dialogues rendered to tokens, token shards on disk, and the batch loader (docs/tokens.md).
 *
 * Rendering of one turn:  [<|session|>] <|turn|> <speaker> BPE(text) <|eot|>
 * - speaker is <|speaker_a|> for the dialogue's first speaker, <|speaker_b|> for any other;
 * - <|session|> leads a turn whose `session` (non-zero) differs from the previous turn's;
 *   the first turn of a dialogue never has it;
 * - a turn longer than max_turn_tokens is split into pieces that each start with
 *   <|turn|> <speaker>; only the last ends with <|eot|>, only the first has <|session|>.
 * Probes (when asked for) become a question turn and an answer turn inserted after turn
 * `after` - 1; the answer's text tokens and its <|eot|> carry MN_TOKEN_ANSWER.
 *
 * A shard file is one header, then flat arrays (episodes -> turns -> tokens), with an XXH64
 * checksum of the payload; it is written atomically and read through mmap.
 */
#ifndef MN_SHARD_H
#define MN_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"
#include "text/dialogue.h"
#include "text/tokenizer.h"

/* turn flags */
enum {
    MN_TURN_SESSION_START = 1, /* begins with <|session|> */
    MN_TURN_QUESTION = 2,      /* probe question inserted for training */
    MN_TURN_ANSWER = 4,        /* probe answer inserted for training */
    MN_TURN_CONTINUED = 8,     /* a later piece of a split turn */
    MN_TURN_SPEAKER_B = 16,    /* spoken by <|speaker_b|> */
};
/* token flags */
enum { MN_TOKEN_ANSWER = 1 };

typedef struct {
    int max_turn_tokens;  /* split turns longer than this; >= 8 */
    int include_probes;   /* insert probe question/answer turns */
    int probe_exchange;   /* 1: a probe's question and answer are one turn (one decoder pass:
                           * the answer is read with the question in the decoder's context, as
                           * `mnemo eval` scores it and `mnemo chat` replies), flagged
                           * MN_TURN_QUESTION | MN_TURN_ANSWER; when the pair exceeds
                           * max_exchange_tokens it is rendered as two turns */
    int max_exchange_tokens; /* longest exchange pair; 0: 2 x max_turn_tokens (pieces of 24
                              * tokens give pairs that fit a model of 64; whole turns of 64 need
                              * 64 here) */
} mn_render_options;

/* 128 tokens a turn, probes included. */
mn_render_options mn_render_options_default(void);

typedef struct {
    int64_t dialogues, turns, tokens;
    int64_t split_turns;    /* source turns that needed splitting */
    int64_t probe_turns;    /* question + answer turns inserted */
    int64_t answer_tokens;  /* tokens flagged MN_TOKEN_ANSWER */
    int32_t longest_turn;   /* tokens in the longest rendered turn */
} mn_render_stats;

/* Rendered episodes in memory: the same arrays as a shard's payload. Zero-initialise. */
typedef struct {
    int32_t *tokens;
    uint8_t *token_flags;
    int64_t n_tokens, cap_tokens;
    int64_t *turn_start;     /* (n_turns + 1) into tokens */
    uint8_t *turn_flags;     /* (n_turns) */
    int64_t n_turns, cap_turns;
    int64_t *episode_start;  /* (n_episodes + 1) into turns */
    int64_t n_episodes, cap_episodes;
} mn_token_corpus;

void mn_token_corpus_free(mn_token_corpus *c);
/* Renders one dialogue as one episode appended to c. The tokenizer needs the special tokens.
 * Probes are asked in order of `after`, file order among equals; probe_turn (nullable,
 * d->n_probes entries) receives for each probe, in file order, the index in c of its question's
 * first turn (-1 when probes are not included): the one place that order is decided. */
mn_status mn_render_dialogue(mn_tokenizer *tok, const mn_dialogue *d,
                             const mn_render_options *options, mn_token_corpus *c,
                             mn_render_stats *stats, int64_t *probe_turn);

/* Appends the head of an exchange turn, what the decoder reads before the answer:
 * [<|session|>] <|turn|> <asker> BPE(question) <|eot|> <|turn|> <answerer>. A probe's exchange
 * (probe_exchange) is this head, BPE(answer) and <|eot|>, with no <|session|>; `mnemo chat`
 * decodes its reply after it (src/model/chat.h). The tokenizer needs the special tokens. */
mn_status mn_render_exchange_head(mn_tokenizer *tok, const char *question, int asker_b, int answerer_b,
                                  int session_start, mn_ids *out);

/* ---- shard files */
#define MN_SHARD_MAGIC "MNSHARD1"
#define MN_SHARD_VERSION 1
#define MN_SHARD_HEADER_BYTES 128

/* Writes the corpus as a shard (temp file, fsync, rename). */
mn_status mn_shard_write(const char *path, const mn_tokenizer *tok, const mn_token_corpus *c,
                         int max_turn_tokens, int64_t n_probes);
/* Renders every dialogue and writes the shard. stats (nullable) gets the counts. */
mn_status mn_shard_write_dialogues(const char *path, mn_tokenizer *tok,
                                   const mn_dialogue_list *list,
                                   const mn_render_options *options, mn_render_stats *stats);

typedef struct mn_shard mn_shard;
/* Maps the file and checks magic, version, byte order, size, checksum, structure and token
 * range; expected_tokenizer_hash must equal the shard's (pass mn_tokenizer_hash(tok)). */
mn_status mn_shard_open(const char *path, uint64_t expected_tokenizer_hash, mn_shard **out);
void mn_shard_close(mn_shard *s);

typedef struct {
    uint64_t tokenizer_hash;
    int32_t vocab_size, max_turn_tokens, longest_turn;
    int32_t pad_id;       /* the tokenizer's <|pad|>, what the loader pads with */
    int64_t n_episodes, n_turns, n_tokens, n_probes;
} mn_shard_info;
mn_shard_info mn_shard_get_info(const mn_shard *s);
/* Turns [*first, *first + *count) of episode e. */
mn_status mn_shard_episode(const mn_shard *s, int64_t e, int64_t *first, int64_t *count);
/* Tokens, token flags and turn flags of turn t (pointers into the mapping). */
mn_status mn_shard_turn(const mn_shard *s, int64_t t, const int32_t **tokens,
                        const uint8_t **token_flags, int32_t *n, uint8_t *turn_flags);

/* ---- batch loader: B windows of T consecutive turns, shuffled per epoch */
typedef struct {
    int B, T, max_len;    /* batch layout of mn_batch */
    uint64_t seed;        /* window order of epoch e is a shuffle seeded by (seed, e) */
    float text_weight;    /* loss weight of ordinary tokens */
    float answer_weight;  /* loss weight of MN_TOKEN_ANSWER tokens */
    int stream;           /* 1: each lane walks whole episodes in order (see below) */
} mn_loader_options;

/* Resume point: the next window (stream mode: the next episode) is number `position` of epoch
 * `epoch`'s order. */
typedef struct {
    uint64_t epoch;
    uint64_t position;
} mn_loader_cursor;

typedef struct mn_loader mn_loader;
/* Windows of an episode of n >= T turns start at 0, T, 2T, ... and, when T does not divide n,
 * at n - T; shorter episodes are skipped (counted). The shard's longest turn must fit max_len.
 * Stream mode (docs/tokens.md): the epoch's order is of the episodes of n >= T turns, and lane
 * b of every batch walks one episode's windows 0, T, 2T, ... in order (the last n mod T turns
 * are dropped, counted), then takes the next episode of the order; batch->carry[b] is 1 when
 * the window continues the lane's episode, 0 when it starts one. */
mn_status mn_loader_create(const mn_shard *shard, const mn_loader_options *options,
                           mn_loader **out);
void mn_loader_free(mn_loader *l);
/* Fills the next batch: tokens (T, B, max_len) padded with <|pad|>, lengths (T, B),
 * loss_weights (T, B, max_len): weight[i] for predicting token i (0 for i == 0 and padding).
 * The arrays belong to the loader and stay valid until the next call. Crossing the end of an
 * epoch continues in the next one. */
mn_status mn_loader_next(mn_loader *l, mn_batch *batch);
mn_loader_cursor mn_loader_get_cursor(const mn_loader *l);
mn_status mn_loader_set_cursor(mn_loader *l, mn_loader_cursor cursor);
/* Stream mode's other half of the resume point: lane b's episode (-1: none yet) and the turn
 * of it where its next window starts (B entries each). get works in either mode; set refuses a
 * loader without stream mode and a position the shard does not have. */
void mn_loader_get_lanes(const mn_loader *l, int64_t *episode, int64_t *turn);
mn_status mn_loader_set_lanes(mn_loader *l, const int64_t *episode, const int64_t *turn);
/* Windows of an epoch. */
int64_t mn_loader_n_windows(const mn_loader *l);
int64_t mn_loader_skipped_episodes(const mn_loader *l);
/* Stream mode: the tail turns (n mod T of each episode) an epoch drops; 0 otherwise. */
int64_t mn_loader_dropped_turns(const mn_loader *l);
/* Episode and first turn of window b of the last batch. */
void mn_loader_window(const mn_loader *l, int b, int64_t *episode, int64_t *first_turn);

#endif
