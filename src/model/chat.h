/* A conversation whose memory is the session vector R, kept in a session store (`mnemo chat`,
 * docs/sessions.md). The decoder writes each reply reading R and, in one pass, the user's turn
 * and the reply so far: the exchange protocol, rendered as training renders a probe's question
 * and answer (`mnemo shard --probe-exchange`, mn_render_exchange_head); the exchange, user turn
 * and reply, then goes through the compressor (mn_update) as one turn, and R is saved. The
 * question-in-state protocol (mn_chat_options.question_in_state, for checkpoints trained on
 * separate question and answer turns) reads the user's turn into R first and decodes the reply
 * from R alone; a user turn too long to share the pass with the reply falls back to it. Coming
 * back to a session id continues from its saved R. Turns are rendered as in training
 * (docs/tokens.md): [<|session|>] <|turn|> <|speaker_a|> text <|eot|> for the user,
 * <|turn|> <|speaker_b|> ... <|eot|> for the model; a tokenizer without mnemo's special tokens
 * (GPT-2's) gets plain text instead: "A: text\n" and "B: reply\n". */
#ifndef MN_CHAT_H
#define MN_CHAT_H

#include <stdint.h>
#include <stdio.h>

#include "mnemo.h"
#include "text/tokenizer.h"

typedef struct mn_chat mn_chat;

typedef struct {
    mn_sampling sampling;
    uint64_t seed;  /* the sampler's */
    int max_reply;  /* longest reply in tokens (the room left in the turn caps it) */
    int question_in_state; /* 1: the user's turn into R, then the reply from R alone */
    FILE *trace;    /* nullable: a JSON line a turn is written here: session, turn, role, text,
                       the token pieces fed to the compressor (to replay R; none for the user's
                       half of an exchange, which enters R with the reply) and an XXH64 of R
                       after the turn */
} mn_chat_options;

/* Temperature 0.8, top-k 40, top-p 0.95, seed 0, replies of at most 64 tokens, the exchange
 * protocol, no trace. */
mn_chat_options mn_chat_options_default(void);

/* Opens session `session` of the store at store_path (created if missing, shaped like the
 * model's state) to talk to model with tok; both are borrowed and must outlive the chat. A
 * saved session continues from its R (saved by the same compressor: the fingerprints must
 * agree), a new one starts from R_0. */
mn_status mn_chat_open(mn_model *model, mn_tokenizer *tok, const char *store_path, const char *session,
                       const mn_chat_options *o, mn_chat **out);
/* One exchange: the model's reply to the user's text. Exchange protocol: the decoder reads R,
 * then the exchange head (the user's turn and the reply's header) and writes the reply; the
 * whole exchange goes into R as one turn and R is saved. When the head would leave the reply
 * fewer than min(max_reply, N / 2) tokens of the turn's N, and with question_in_state, the
 * user's turn goes into R (and is saved) first, split into pieces of at most N tokens, and the
 * reply is decoded from R and its header alone, then read into R. Either way the trace and the
 * store count two turns. *reply (malloc'd) is valid UTF-8 without its leading space. On
 * failure the store keeps the last R it saved. */
mn_status mn_chat_exchange(mn_chat *c, const char *text, char **reply);

typedef struct {
    int resumed;          /* continuing a saved session */
    int plain_text;       /* the tokenizer has no mnemo special tokens */
    int64_t turns;        /* turns in R so far, both speakers */
    double state_norm;    /* |R| */
    uint64_t fingerprint; /* of the compressor (mn_model_fingerprint) */
} mn_chat_status;
void mn_chat_status_get(const mn_chat *c, mn_chat_status *s);
void mn_chat_close(mn_chat *c);

#endif
