/* A conversation kept in a session store (chat.h). */
#include "model/chat.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "text/shard.h"     /* mn_render_exchange_head */
#include "text/text_util.h" /* mn_utf8_repair */

struct mn_chat {
    mn_model *model;
    mn_tokenizer *tok;
    mn_session_store *store;
    char *session;
    uint64_t fingerprint;
    int N, specials, resumed;
    int32_t turn, speaker_a, speaker_b, eot, session_tok;
    int32_t *stops; /* what ends a reply; stops[0] closes one the limit cut */
    int n_stops;
    float *r;
    int64_t turns;
    int new_session; /* the next user turn opens a session of the conversation */
    mn_sampling sampling;
    uint64_t rng;
    int max_reply;
    int question_in_state;
    FILE *trace;
    int32_t *buf; /* N tokens */
};

mn_chat_options mn_chat_options_default(void) {
    return (mn_chat_options){.sampling = {0.8f, 40, 0.95f}, .seed = 0, .max_reply = 64, .question_in_state = 0,
                             .trace = NULL};
}

static mn_status trace_turn(mn_chat *c, const char *role, const char *text, json_t *pieces) {
    if (!c->trace) {
        json_decref(pieces);
        return MN_OK;
    }
    char *clean = mn_utf8_repair(text, strlen(text), NULL, NULL);
    char hash[17]; /* of R after the turn, as saved: the store must give back exactly this */
    snprintf(hash, sizeof hash, "%016" PRIx64, mn_xxh64(c->r, mn_state_floats(c->model) * sizeof(float), 0));
    json_t *line = clean ? json_pack("{s:s,s:I,s:s,s:s,s:o,s:s}", "session", c->session, "turn", (json_int_t)c->turns,
                                     "role", role, "text", clean, "pieces", pieces, "r_xxh64", hash)
                         : NULL;
    if (!clean)
        json_decref(pieces);
    free(clean);
    char *s = line ? json_dumps(line, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    int ok = s && fprintf(c->trace, "%s\n", s) > 0 && fflush(c->trace) == 0;
    free(s);
    json_decref(line);
    return ok ? MN_OK : mn_fail(MN_ERR_IO, "cannot write the trace (disk full, or a session id that is not UTF-8?)");
}

/* One piece of a turn into R, and into the trace's pieces. */
static mn_status absorb(mn_chat *c, const int32_t *ids, int n, json_t *pieces) {
    MN_TRY(mn_update(c->model, ids, n, c->r, c->r));
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    json_array_append_new(pieces, a);
    return MN_OK;
}

/* R into the store, after the turn is traced. */
static mn_status finish_turn(mn_chat *c, mn_status st, const char *role, const char *text, json_t *pieces) {
    c->turns++;
    mn_status traced = trace_turn(c, role, text, pieces);
    if (st != MN_OK)
        return st;
    MN_TRY(traced);
    if (mn_session_put(c->store, c->session, c->fingerprint, c->r, c->turns) != MN_OK) {
        char why[512]; /* mn_fail rewrites the buffer mn_last_error() points into */
        snprintf(why, sizeof why, "%s", mn_last_error());
        return mn_fail(MN_ERR_IO, "%s (the session keeps its previous state)", why);
    }
    return MN_OK;
}

/* The user's text as plain text, for a tokenizer without special tokens: "A: text\n", after a
 * blank line where <|session|> would be. Appended to out. */
static mn_status plain_user_text(mn_chat *c, const char *text, mn_ids *out) {
    size_t len = strlen(text) + 8;
    char *plain = malloc(len);
    if (!plain)
        return mn_fail(MN_ERR_NOMEM, "chat: out of memory");
    snprintf(plain, len, "%sA: %s\n", c->new_session ? "\n" : "", text);
    mn_status st = mn_tokenizer_encode(c->tok, plain, strlen(plain), out);
    free(plain);
    return st;
}

/* The reply's header, <|turn|> <|speaker_b|> or "B:", appended to out. */
static mn_status reply_header(mn_chat *c, mn_ids *out) {
    if (!c->specials)
        return mn_tokenizer_encode(c->tok, "B:", 2, out);
    MN_TRY(mn_ids_push(out, c->turn));
    return mn_ids_push(out, c->speaker_b);
}

/* The user's turn read into R before the reply (the question-in-state protocol): split, like
 * the training renderer, into pieces of at most N tokens that each start with <|turn|>
 * <|speaker_a|>; only the first carries <|session|>, only the last <|eot|>. */
static mn_status user_turn(mn_chat *c, const char *text) {
    mn_ids body = {0};
    mn_status st = c->specials ? mn_tokenizer_encode(c->tok, text, strlen(text), &body) : plain_user_text(c, text, &body);
    if (st != MN_OK) {
        mn_ids_free(&body);
        return st;
    }
    json_t *pieces = json_array();
    int64_t at = 0;
    int first = 1;
    do {
        int n = 0;
        if (c->specials) {
            if (first && c->new_session)
                c->buf[n++] = c->session_tok;
            c->buf[n++] = c->turn;
            c->buf[n++] = c->speaker_a;
        }
        int64_t room = c->N - n - (c->specials ? 1 : 0), take = body.count - at < room ? body.count - at : room;
        memcpy(c->buf + n, body.ids + at, (size_t)take * sizeof(int32_t));
        n += (int)take;
        at += take;
        if (c->specials && at == body.count)
            c->buf[n++] = c->eot;
        if (n > 0)
            st = absorb(c, c->buf, n, pieces);
        first = 0;
    } while (st == MN_OK && at < body.count);
    mn_ids_free(&body);
    c->new_session = 0;
    return finish_turn(c, st, "user", text, pieces);
}

/* The model's turn: the decoder reads R and the n_prefix tokens in c->buf (the reply's header,
 * or the whole exchange head with the user's turn in it) and writes the reply after them; then
 * the prefix and the reply go through the compressor as one turn. */
static mn_status model_turn(mn_chat *c, int n_prefix, char **reply) {
    /* room for the closing <|eot|> (or newline) if the limit cuts the reply */
    int limit = n_prefix + c->max_reply < c->N - 1 ? n_prefix + c->max_reply : c->N - 1;
    int n = 0;
    MN_TRY(mn_generate(c->model, c->r, c->buf, n_prefix, limit, c->stops, c->n_stops, &c->sampling, &c->rng, c->buf,
                       &n));
    int stopped = 0;
    for (int i = 0; i < c->n_stops; i++)
        stopped |= n > n_prefix && c->buf[n - 1] == c->stops[i];
    int text_end = stopped ? n - 1 : n;
    char *raw = NULL;
    size_t len = 0;
    MN_TRY(mn_tokenizer_decode(c->tok, c->buf + n_prefix, text_end - n_prefix, &raw, &len));
    if (!c->specials) { /* the newline that stopped it may sit inside the last token */
        char *nl = strchr(raw, '\n');
        if (nl)
            *nl = '\0';
    }
    if (!stopped)
        c->buf[n++] = c->stops[0];
    /* sampled tokens can split characters: each invalid byte becomes U+FFFD */
    const char *shown = raw[0] == ' ' ? raw + 1 : raw;
    *reply = mn_utf8_repair(shown, strlen(shown), NULL, NULL);
    free(raw);
    if (!*reply)
        return mn_fail(MN_ERR_NOMEM, "chat: out of memory");
    json_t *pieces = json_array();
    mn_status st = absorb(c, c->buf, n, pieces);
    st = finish_turn(c, st, "model", *reply, pieces);
    if (st != MN_OK) {
        free(*reply);
        *reply = NULL;
    }
    return st;
}

/* The reply's stop set: <|eot|>, or for plain text every token holding a newline plus
 * <|endoftext|> when the vocabulary has it. */
static mn_status build_stops(mn_chat *c) {
    int V = mn_tokenizer_vocab_size(c->tok);
    c->stops = malloc((size_t)(V + 1) * sizeof *c->stops);
    if (!c->stops)
        return mn_fail(MN_ERR_NOMEM, "chat: out of memory");
    if (c->specials) {
        c->stops[c->n_stops++] = c->eot;
        return MN_OK;
    }
    mn_ids nl = {0};
    if (mn_tokenizer_encode(c->tok, "\n", 1, &nl) != MN_OK || nl.count != 1) {
        mn_ids_free(&nl);
        return mn_fail(MN_ERR_INVALID_ARG, "the tokenizer has no single token for a newline");
    }
    c->stops[c->n_stops++] = nl.ids[0]; /* first: what closes a reply cut by the limit */
    mn_ids_free(&nl);
    for (int32_t id = 0; id < V; id++) {
        size_t len = 0;
        const uint8_t *b = mn_tokenizer_token_bytes(c->tok, id, &len);
        if (id != c->stops[0] && b && (memchr(b, '\n', len) || (len == 13 && !memcmp(b, "<|endoftext|>", 13))))
            c->stops[c->n_stops++] = id;
    }
    return MN_OK;
}

static mn_status open_session(mn_chat *c, const char *store_path) {
    const mn_config *cfg = mn_model_config(c->model);
    mn_session_info info;
    int found = 0;
    MN_TRY(mn_session_store_open(store_path, MN_STORE_WRITE | MN_STORE_CREATE, cfg->n_slots, cfg->d_model, &c->store));
    MN_TRY(mn_session_get(c->store, c->session, c->fingerprint, c->r, &info, &found));
    if (!found)
        MN_TRY(mn_initial_state(c->model, c->r));
    c->resumed = found;
    c->turns = found ? info.turns : 0;
    c->new_session = found && c->turns > 0; /* coming back later is a new session of the conversation */
    return MN_OK;
}

mn_status mn_chat_open(mn_model *model, mn_tokenizer *tok, const char *store_path, const char *session,
                       const mn_chat_options *o, mn_chat **out) {
    if (!model || !tok || !store_path || !session || !o || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_chat_open: NULL argument");
    *out = NULL;
    const mn_config *cfg = mn_model_config(model);
    if (mn_tokenizer_vocab_size(tok) > cfg->vocab_size)
        return mn_fail(MN_ERR_MISMATCH, "the tokenizer has %d tokens, the model %d", mn_tokenizer_vocab_size(tok),
                       cfg->vocab_size);
    if (cfg->max_turn_tokens < 8)
        return mn_fail(MN_ERR_CONFIG, "turns of %d tokens are too short to talk in", cfg->max_turn_tokens);
    if (o->max_reply < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "a reply of at most %d tokens", o->max_reply);
    mn_chat *c = calloc(1, sizeof *c);
    if (!c)
        return mn_fail(MN_ERR_NOMEM, "chat: out of memory");
    c->model = model;
    c->tok = tok;
    c->N = cfg->max_turn_tokens;
    c->sampling = o->sampling;
    c->rng = o->seed;
    c->max_reply = o->max_reply;
    c->question_in_state = o->question_in_state;
    c->trace = o->trace;
    c->turn = mn_tokenizer_special(tok, MN_TOK_TURN);
    c->speaker_a = mn_tokenizer_special(tok, MN_TOK_SPEAKER_A);
    c->speaker_b = mn_tokenizer_special(tok, MN_TOK_SPEAKER_B);
    c->eot = mn_tokenizer_special(tok, MN_TOK_EOT);
    c->session_tok = mn_tokenizer_special(tok, MN_TOK_SESSION);
    c->specials = c->turn >= 0 && c->speaker_a >= 0 && c->speaker_b >= 0 && c->eot >= 0 && c->session_tok >= 0;
    c->fingerprint = mn_model_fingerprint(model);
    c->session = strdup(session);
    c->r = malloc(mn_state_floats(model) * sizeof *c->r);
    c->buf = malloc((size_t)c->N * sizeof *c->buf);
    mn_status st = !c->session || !c->r || !c->buf ? mn_fail(MN_ERR_NOMEM, "chat: out of memory") : build_stops(c);
    if (st == MN_OK)
        st = open_session(c, store_path);
    if (st != MN_OK) {
        mn_chat_close(c);
        return st;
    }
    *out = c;
    return MN_OK;
}

/* The exchange protocol's head of the user's turn: as training renders a probe's exchange
 * (mn_render_exchange_head: the user A asks, the model B answers), led by <|session|> when the
 * conversation resumes; plain text: "A: text\n" then "B:". */
static mn_status exchange_head(mn_chat *c, const char *text, mn_ids *out) {
    if (c->specials)
        return mn_render_exchange_head(c->tok, text, 0, 1, c->new_session, out);
    MN_TRY(plain_user_text(c, text, out));
    return reply_header(c, out);
}

mn_status mn_chat_exchange(mn_chat *c, const char *text, char **reply) {
    if (!c || !text || !reply)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_chat_exchange: NULL argument");
    *reply = NULL;
    mn_ids head = {0};
    mn_status st = MN_OK;
    int shared = 0;
    if (!c->question_in_state) {
        /* the user's turn shares the reply's decoder pass when it leaves the reply room for
         * max_reply tokens, or for half the turn when that is less */
        int want = c->max_reply < c->N / 2 ? c->max_reply : c->N / 2;
        st = exchange_head(c, text, &head);
        shared = st == MN_OK && head.count + want + 1 <= c->N;
    }
    if (st == MN_OK && shared) {
        /* nothing enters R until the reply is written: the user's turn is traced as it stands */
        memcpy(c->buf, head.ids, (size_t)head.count * sizeof(int32_t));
        c->new_session = 0;
        c->turns++;
        st = trace_turn(c, "user", text, json_array());
    } else if (st == MN_OK) {
        head.count = 0;
        if ((st = user_turn(c, text)) == MN_OK && (st = reply_header(c, &head)) == MN_OK)
            memcpy(c->buf, head.ids, (size_t)head.count * sizeof(int32_t));
    }
    int n_prefix = (int)head.count;
    mn_ids_free(&head);
    MN_TRY(st);
    return model_turn(c, n_prefix, reply);
}

void mn_chat_status_get(const mn_chat *c, mn_chat_status *s) {
    *s = (mn_chat_status){.resumed = c->resumed,
                          .plain_text = !c->specials,
                          .turns = c->turns,
                          .state_norm = mn_l2_norm(c->r, mn_state_floats(c->model)),
                          .fingerprint = c->fingerprint};
}

void mn_chat_close(mn_chat *c) {
    if (!c)
        return;
    mn_session_store_close(c->store);
    free(c->session);
    free(c->stops);
    free(c->r);
    free(c->buf);
    free(c);
}
