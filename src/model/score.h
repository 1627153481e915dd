/* Multiple-choice scoring of recall probes by length-normalised log-likelihood, and the batched
 * decoder passes it and evaluation run on: used by the training loop's quick probe accuracy
 * and by evaluation. */
#ifndef MN_SCORE_H
#define MN_SCORE_H

#include <stdint.h>

#include "mnemo.h"

/* Log-likelihoods of the tokens of n_seqs decoder sequences, read in batched passes (sequences
 * of similar length together, packed; past their keys and values the last block computes only
 * the rows of scored tokens): sequence i is
 * tokens[offsets[i] .. offsets[i+1]) (1..max_turn_tokens tokens) read with state r[i] (k, C);
 * log_probs[offsets[i] + j] = log p(token j | r[i], the sequence's tokens before j) for
 * first[i] <= j < its length (1 <= first[i] <= length); other entries are left as they are.
 * The head and the log-softmax run on those rows only; the log-softmax is the backend's
 * cross-entropy op (float). Defined in inference.c (it runs on the inference workspace). */
mn_status mn_sequence_log_probs(mn_model *model, int n_seqs, const int32_t *tokens, const int64_t *offsets,
                                const float *const *r, const int *first, float *log_probs);
/* The same batched decoder over the same kind of sequences; logits (n_seqs, V) = the logits of
 * the token after each sequence (mn_next_logits of each, batched). */
mn_status mn_sequence_next_logits(mn_model *model, int n_seqs, const int32_t *tokens, const int64_t *offsets,
                                  const float *const *r, float *logits);

/* A key/value cache of the decoder for generation: per layer and sequence, the q | k | v rows of
 * every position read so far, so that each new token runs the blocks on its own row and attends
 * to the cached rows instead of the whole sequence being read again. The logits agree with
 * mn_next_logits of the whole sequence to float rounding. A cache runs on the model's device at
 * open (close it before mn_model_set_device) and holds up to max_seqs sequences of k + N rows. */
typedef struct mn_decoder_cache mn_decoder_cache;
/* Sequences one cache holds within its memory budget (64 MiB on the CPU, 1 GiB on a GPU; >= 1). */
int mn_decoder_cache_capacity(const mn_model *model);
mn_status mn_decoder_cache_open(mn_model *model, int max_seqs, mn_decoder_cache **out);
void mn_decoder_cache_close(mn_decoder_cache *cache);
/* Starts sequences 0..n_seqs-1 (n_seqs <= max_seqs; any earlier ones are dropped): sequence i is
 * tokens[offsets[i] .. offsets[i+1]) (1..N tokens) read with state r[i]; logits (n_seqs, V)
 * (nullable) = the logits of the token after each. */
mn_status mn_decoder_cache_start(mn_decoder_cache *cache, int n_seqs, const int32_t *tokens, const int64_t *offsets,
                                 const float *const *r, float *logits);
/* Appends token[i] to started sequence seq[i] (ascending, each with room left: k + N rows in
 * all); logits (n, V) = the logits of the token after each. */
mn_status mn_decoder_cache_append(mn_decoder_cache *cache, int n, const int *seq, const int32_t *token,
                                  float *logits);
/* Sequence dst[i] becomes a copy of started sequence src[i] (what it has read), for i < n. */
mn_status mn_decoder_cache_fork(mn_decoder_cache *cache, int n, const int *src, const int *dst);
/* Scores tokens[i] (lens[i] >= 1 tokens) as the continuation of started sequence seq[i]
 * (ascending): log_probs[i][j] = log p(tokens[i][j] | the sequence, tokens[i][0..j)), the head
 * and the log-softmax (the backend's cross-entropy op) on those rows only. The sequence reads
 * all tokens but the last (nothing it holds predicts past them): fork it first to go on from
 * where it was. */
mn_status mn_decoder_cache_score(mn_decoder_cache *cache, int n, const int *seq, const int32_t *const *tokens,
                                 const int *lens, float *const *log_probs);

/* From mn_sequence_log_probs over n_choices sequences prefix + choice (offsets and first as
 * given to it, first >= 1 below each length): scores[i] = the mean log-probability of choice i's
 * scored tokens. Returns the index of the highest score, ties to the lowest index. */
int mn_choice_scores(const float *log_probs, const int64_t *offsets, const int *first, int n_choices,
                     double *scores);

/* Scores each choice as the continuation of prefix inside one decoder sequence read with
 * state r (k, C): scores[i] = mean over the choice's tokens of log p(token | r, prefix, the
 * choice's earlier tokens), all choices in one mn_sequence_log_probs call. n_prefix >= 1 (the
 * first position predicts nothing); n_prefix + choice length <= max_turn_tokens; every choice
 * has >= 1 token. *best (nullable) = index of the highest score, ties to the lowest index. */
mn_status mn_score_choices(mn_model *model, const float *r, const int32_t *prefix, int n_prefix,
                           const int32_t *const *choices, const int *choice_lens, int n_choices,
                           double *scores, int *best);

/* A probe as tokens. The question is a turn of its own that the compressor reads into memory
 * before the answer turn (n_question = 0 when the question is part of the answer turn's
 * prefix instead); the answer turn is prefix + choice. */
typedef struct {
    const int32_t *question;
    int n_question;
    const int32_t *prefix;
    int n_prefix;
    const int32_t *const *choices;
    const int *choice_lens;
    int n_choices;
} mn_probe_tokens;

/* Scores a probe given r, the session state after the probe's `after` turns (pass R_0 for
 * the no-memory baseline). r is not modified. */
mn_status mn_score_probe(mn_model *model, const float *r, const mn_probe_tokens *probe, double *scores,
                         int *best);

#endif
