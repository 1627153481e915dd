/* Turn rendering, token shard files and the batch loader (docs/tokens.md). */
#include "text/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/rng.h"

/* ================================================================ rendering */
mn_render_options mn_render_options_default(void) {
    return (mn_render_options){.max_turn_tokens = 128, .include_probes = 1};
}

void mn_token_corpus_free(mn_token_corpus *c) {
    free(c->tokens);
    free(c->token_flags);
    free(c->turn_start);
    free(c->turn_flags);
    free(c->episode_start);
    memset(c, 0, sizeof *c);
}

static mn_status grow_tokens(mn_token_corpus *c, int64_t extra) {
    if (c->n_tokens + extra <= c->cap_tokens)
        return MN_OK;
    int64_t cap = c->cap_tokens ? c->cap_tokens : 4096;
    while (cap < c->n_tokens + extra)
        cap *= 2;
    int32_t *t = realloc(c->tokens, (size_t)cap * sizeof *t);
    if (t)
        c->tokens = t;
    uint8_t *f = realloc(c->token_flags, (size_t)cap);
    if (f)
        c->token_flags = f;
    if (!t || !f)
        return mn_fail(MN_ERR_NOMEM, "render: out of memory for %lld tokens", (long long)cap);
    c->cap_tokens = cap;
    return MN_OK;
}

static mn_status grow_turns(mn_token_corpus *c) {
    if (c->n_turns + 1 < c->cap_turns)
        return MN_OK;
    int64_t cap = c->cap_turns ? c->cap_turns * 2 : 1024;
    int64_t *s = realloc(c->turn_start, (size_t)(cap + 1) * sizeof *s);
    if (s)
        c->turn_start = s;
    uint8_t *f = realloc(c->turn_flags, (size_t)cap);
    if (f)
        c->turn_flags = f;
    if (!s || !f)
        return mn_fail(MN_ERR_NOMEM, "render: out of memory for %lld turns", (long long)cap);
    if (c->cap_turns == 0)
        c->turn_start[0] = 0;
    c->cap_turns = cap;
    return MN_OK;
}

static mn_status grow_episodes(mn_token_corpus *c) {
    if (c->n_episodes + 1 < c->cap_episodes)
        return MN_OK;
    int64_t cap = c->cap_episodes ? c->cap_episodes * 2 : 256;
    int64_t *s = realloc(c->episode_start, (size_t)(cap + 1) * sizeof *s);
    if (!s)
        return mn_fail(MN_ERR_NOMEM, "render: out of memory for %lld episodes", (long long)cap);
    if (c->cap_episodes == 0)
        s[0] = 0;
    c->episode_start = s;
    c->cap_episodes = cap;
    return MN_OK;
}

static void push_token(mn_token_corpus *c, int32_t id, uint8_t flags) {
    c->tokens[c->n_tokens] = id;
    c->token_flags[c->n_tokens] = flags;
    c->n_tokens++;
}

static mn_status end_turn(mn_token_corpus *c, uint8_t flags, mn_render_stats *st) {
    MN_TRY(grow_turns(c));
    int64_t len = c->n_tokens - c->turn_start[c->n_turns];
    c->turn_flags[c->n_turns] = flags;
    c->n_turns++;
    c->turn_start[c->n_turns] = c->n_tokens;
    st->turns++;
    if (len > st->longest_turn)
        st->longest_turn = (int32_t)len;
    return MN_OK;
}

/* One source turn: header, text pieces of at most max tokens each, <|eot|> at the end. */
static mn_status render_turn(mn_tokenizer *tok, mn_token_corpus *c, const char *text,
                             int speaker_b, int session_start, uint8_t kind_flags,
                             uint8_t text_flags, int max, mn_ids *scratch, mn_render_stats *st) {
    scratch->count = 0;
    if (text)
        MN_TRY(mn_tokenizer_encode(tok, text, strlen(text), scratch));
    int32_t spk = mn_tokenizer_special(tok, speaker_b ? MN_TOK_SPEAKER_B : MN_TOK_SPEAKER_A);
    int64_t done = 0, n = scratch->count;
    int first = 1;
    for (;;) {
        int header = (first && session_start) ? 3 : 2;
        int64_t room = max - header;
        int last = (n - done) <= room - 1; /* the rest and <|eot|> fit */
        int64_t take = last ? n - done : (room < n - done - 1 ? room : n - done - 1);
        MN_TRY(grow_tokens(c, header + take + 1));
        if (first && session_start)
            push_token(c, mn_tokenizer_special(tok, MN_TOK_SESSION), 0);
        push_token(c, mn_tokenizer_special(tok, MN_TOK_TURN), 0);
        push_token(c, spk, 0);
        for (int64_t i = 0; i < take; i++)
            push_token(c, scratch->ids[done + i], text_flags);
        done += take;
        if (last)
            push_token(c, mn_tokenizer_special(tok, MN_TOK_EOT), text_flags);
        uint8_t flags = kind_flags | (speaker_b ? MN_TURN_SPEAKER_B : 0);
        if (first && session_start)
            flags |= MN_TURN_SESSION_START;
        if (!first)
            flags |= MN_TURN_CONTINUED;
        MN_TRY(end_turn(c, flags, st));
        st->tokens += header + take + (last ? 1 : 0);
        if (last)
            break;
        if (first)
            st->split_turns++;
        first = 0;
    }
    if (text_flags & MN_TOKEN_ANSWER)
        st->answer_tokens += n + 1;
    return MN_OK;
}

mn_status mn_render_exchange_head(mn_tokenizer *tok, const char *question, int asker_b, int answerer_b,
                                  int session_start, mn_ids *out) {
    if (session_start)
        MN_TRY(mn_ids_push(out, mn_tokenizer_special(tok, MN_TOK_SESSION)));
    MN_TRY(mn_ids_push(out, mn_tokenizer_special(tok, MN_TOK_TURN)));
    MN_TRY(mn_ids_push(out, mn_tokenizer_special(tok, asker_b ? MN_TOK_SPEAKER_B : MN_TOK_SPEAKER_A)));
    MN_TRY(mn_tokenizer_encode(tok, question, strlen(question), out));
    MN_TRY(mn_ids_push(out, mn_tokenizer_special(tok, MN_TOK_EOT)));
    MN_TRY(mn_ids_push(out, mn_tokenizer_special(tok, MN_TOK_TURN)));
    return mn_ids_push(out, mn_tokenizer_special(tok, answerer_b ? MN_TOK_SPEAKER_B : MN_TOK_SPEAKER_A));
}

/* A probe as one turn: the exchange's head, then BPE(answer) <|eot|>, the answer and its
 * <|eot|> flagged MN_TOKEN_ANSWER. *fits = 0 (nothing written) when the pair is longer than
 * `max` tokens. */
static mn_status render_exchange(mn_tokenizer *tok, mn_token_corpus *c, const char *question, int asker_b,
                                 const char *answer, int answerer_b, int max, mn_ids *scratch,
                                 mn_render_stats *st, int *fits) {
    scratch->count = 0;
    MN_TRY(mn_render_exchange_head(tok, question, asker_b, answerer_b, 0, scratch));
    const int64_t head = scratch->count;
    MN_TRY(mn_tokenizer_encode(tok, answer, strlen(answer), scratch));
    MN_TRY(mn_ids_push(scratch, mn_tokenizer_special(tok, MN_TOK_EOT)));
    const int64_t total = scratch->count;
    *fits = total <= max;
    if (!*fits)
        return MN_OK;
    MN_TRY(grow_tokens(c, total));
    for (int64_t i = 0; i < total; i++)
        push_token(c, scratch->ids[i], i < head ? 0 : MN_TOKEN_ANSWER);
    MN_TRY(end_turn(c, MN_TURN_QUESTION | MN_TURN_ANSWER | (answerer_b ? MN_TURN_SPEAKER_B : 0), st));
    st->tokens += total;
    st->answer_tokens += total - head;
    return MN_OK;
}

static const char *other_speaker(const mn_dialogue *d, const char *than) {
    for (int t = 0; t < d->n_turns; t++)
        if (strcmp(d->turns[t].speaker, than) != 0)
            return d->turns[t].speaker;
    return than;
}

static mn_status render_dialogue(mn_tokenizer *tok, const mn_dialogue *d,
                                 const mn_render_options *o, mn_token_corpus *c,
                                 mn_render_stats *st, mn_ids *scratch, int *order,
                                 int64_t *probe_turn) {
    const char *first = d->turns[0].speaker;
    int n_order = 0;
    for (int p = 0; probe_turn && p < d->n_probes; p++)
        probe_turn[p] = -1;
    if (o->include_probes) {
        /* probes in order of `after`, file order among equals (insertion sort is stable) */
        for (int p = 0; p < d->n_probes; p++) {
            int i = n_order++;
            while (i > 0 && d->probes[order[i - 1]].after > d->probes[p].after) {
                order[i] = order[i - 1];
                i--;
            }
            order[i] = p;
        }
    }
    int next_probe = 0;
    for (int t = 0; t < d->n_turns; t++) {
        const mn_turn *turn = &d->turns[t];
        if (!turn->speaker)
            return mn_fail(MN_ERR_INVALID_ARG, "dialogue %s: turn %d has no speaker",
                           d->id ? d->id : "?", t);
        int session_start = t > 0 && turn->session != 0 && turn->session != d->turns[t - 1].session;
        MN_TRY(render_turn(tok, c, turn->text, strcmp(turn->speaker, first) != 0, session_start,
                           0, 0, o->max_turn_tokens, scratch, st));
        while (next_probe < n_order && d->probes[order[next_probe]].after == t + 1) {
            const mn_probe *p = &d->probes[order[next_probe]];
            if (probe_turn)
                probe_turn[order[next_probe]] = c->n_turns; /* the question's first piece */
            next_probe++;
            const char *asker = p->speaker ? p->speaker : other_speaker(d, turn->speaker);
            const char *answerer = other_speaker(d, asker);
            int fits = 0;
            if (o->probe_exchange)
                MN_TRY(render_exchange(tok, c, p->question, strcmp(asker, first) != 0, p->answer,
                                       strcmp(answerer, first) != 0,
                                       o->max_exchange_tokens > 0 ? o->max_exchange_tokens : 2 * o->max_turn_tokens,
                                       scratch, st, &fits));
            if (fits) {
                st->probe_turns += 1;
                continue;
            }
            MN_TRY(render_turn(tok, c, p->question, strcmp(asker, first) != 0, 0,
                               MN_TURN_QUESTION, 0, o->max_turn_tokens, scratch, st));
            MN_TRY(render_turn(tok, c, p->answer, strcmp(answerer, first) != 0, 0,
                               MN_TURN_ANSWER, MN_TOKEN_ANSWER, o->max_turn_tokens, scratch, st));
            st->probe_turns += 2;
        }
    }
    return MN_OK;
}

mn_status mn_render_dialogue(mn_tokenizer *tok, const mn_dialogue *d,
                             const mn_render_options *o, mn_token_corpus *c,
                             mn_render_stats *stats, int64_t *probe_turn) {
    if (!tok || !d || !o || !c)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_render_dialogue: NULL argument");
    for (int i = 0; i < MN_TOK_N_SPECIAL; i++)
        if (mn_tokenizer_special(tok, (mn_special)i) < 0)
            return mn_fail(MN_ERR_INVALID_ARG, "render: the %s tokenizer has no %s token",
                           mn_tokenizer_kind(tok), mn_special_text((mn_special)i));
    if (o->max_turn_tokens < 8)
        return mn_fail(MN_ERR_INVALID_ARG, "render: max_turn_tokens %d is below 8",
                       o->max_turn_tokens);
    if (d->n_turns < 1 || !d->turns)
        return mn_fail(MN_ERR_INVALID_ARG, "dialogue %s has no turns", d->id ? d->id : "?");
    mn_render_stats local = {0};
    if (!stats)
        stats = &local;
    MN_TRY(grow_episodes(c));
    MN_TRY(grow_turns(c));
    int *order = malloc(((size_t)d->n_probes + 1) * sizeof *order);
    if (!order)
        return mn_fail(MN_ERR_NOMEM, "render: out of memory");
    mn_ids scratch = {0};
    int64_t turns0 = c->n_turns, tokens0 = c->n_tokens;
    mn_status st = render_dialogue(tok, d, o, c, stats, &scratch, order, probe_turn);
    free(order);
    mn_ids_free(&scratch);
    if (st != MN_OK) {
        /* drop the partial episode so that c stays consistent */
        c->n_turns = turns0;
        c->n_tokens = tokens0;
        return st;
    }
    c->n_episodes++;
    c->episode_start[c->n_episodes] = c->n_turns;
    stats->dialogues++;
    return MN_OK;
}

/* ================================================================ shard files */
/* Header fields, little-endian, at fixed offsets (docs/tokens.md). */
enum {
    H_MAGIC = 0, H_VERSION = 8, H_HEADER_BYTES = 12, H_ENDIAN = 16, H_VOCAB = 20, H_TOKHASH = 24,
    H_EPISODES = 32, H_TURNS = 40, H_TOKENS = 48, H_FILE_BYTES = 56, H_MAX_TURN = 64,
    H_LONGEST = 68, H_PROBES = 72, H_PAD_ID = 80, H_PAYLOAD_SUM = 88, H_HEADER_SUM = 96,
};
#define ENDIAN_MARK 0x01020304u
#define MAX_COUNT ((uint64_t)1 << 40)

static uint64_t pad8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

typedef struct {
    uint64_t episodes, turn_starts, tokens, turn_flags, token_flags, end;
} layout;

static layout compute_layout(uint64_t n_ep, uint64_t n_turns, uint64_t n_tokens) {
    layout l;
    l.episodes = MN_SHARD_HEADER_BYTES;
    l.turn_starts = l.episodes + 8 * (n_ep + 1);
    l.tokens = l.turn_starts + 8 * (n_turns + 1);
    l.turn_flags = l.tokens + pad8(4 * n_tokens);
    l.token_flags = l.turn_flags + pad8(n_turns);
    l.end = l.token_flags + pad8(n_tokens);
    return l;
}

static void put32(uint8_t *h, int off, uint32_t v) { memcpy(h + off, &v, 4); }
static void put64(uint8_t *h, int off, uint64_t v) { memcpy(h + off, &v, 8); }
static uint32_t get32(const uint8_t *h, int off) { uint32_t v; memcpy(&v, h + off, 4); return v; }
static uint64_t get64(const uint8_t *h, int off) { uint64_t v; memcpy(&v, h + off, 8); return v; }

typedef struct {
    FILE *f;
    mn_xxh64_state sum;
    const char *path;
} shard_out;

static mn_status out_write(shard_out *o, const void *data, size_t n, size_t padded) {
    static const uint8_t zeros[8] = {0};
    if (n && fwrite(data, 1, n, o->f) != n)
        return mn_fail(MN_ERR_IO, "%s: write failed: %s", o->path, strerror(errno));
    mn_xxh64_update(&o->sum, data, n);
    if (padded > n) {
        if (fwrite(zeros, 1, padded - n, o->f) != padded - n)
            return mn_fail(MN_ERR_IO, "%s: write failed: %s", o->path, strerror(errno));
        mn_xxh64_update(&o->sum, zeros, padded - n);
    }
    return MN_OK;
}

static mn_status write_payload(shard_out *o, const mn_token_corpus *c) {
    int64_t zero = 0;
    uint64_t n_tok = (uint64_t)c->n_tokens, n_turns = (uint64_t)c->n_turns;
    if (c->n_episodes)
        MN_TRY(out_write(o, c->episode_start, 8 * (size_t)(c->n_episodes + 1), 8 * (size_t)(c->n_episodes + 1)));
    else
        MN_TRY(out_write(o, &zero, 8, 8));
    if (c->n_turns)
        MN_TRY(out_write(o, c->turn_start, 8 * (size_t)(n_turns + 1), 8 * (size_t)(n_turns + 1)));
    else
        MN_TRY(out_write(o, &zero, 8, 8));
    MN_TRY(out_write(o, c->tokens, 4 * (size_t)n_tok, (size_t)pad8(4 * n_tok)));
    MN_TRY(out_write(o, c->turn_flags, (size_t)n_turns, (size_t)pad8(n_turns)));
    MN_TRY(out_write(o, c->token_flags, (size_t)n_tok, (size_t)pad8(n_tok)));
    return MN_OK;
}

mn_status mn_shard_write(const char *path, const mn_tokenizer *tok, const mn_token_corpus *c,
                         int max_turn_tokens, int64_t n_probes) {
    if (!path || !tok || !c)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_shard_write: NULL argument");
    int64_t longest = 0;
    for (int64_t t = 0; t < c->n_turns; t++)
        if (c->turn_start[t + 1] - c->turn_start[t] > longest)
            longest = c->turn_start[t + 1] - c->turn_start[t];
    uint8_t h[MN_SHARD_HEADER_BYTES] = {0};
    memcpy(h + H_MAGIC, MN_SHARD_MAGIC, 8);
    put32(h, H_VERSION, MN_SHARD_VERSION);
    put32(h, H_HEADER_BYTES, MN_SHARD_HEADER_BYTES);
    put32(h, H_ENDIAN, ENDIAN_MARK);
    put32(h, H_VOCAB, (uint32_t)mn_tokenizer_vocab_size(tok));
    put64(h, H_TOKHASH, mn_tokenizer_hash(tok));
    put64(h, H_EPISODES, (uint64_t)c->n_episodes);
    put64(h, H_TURNS, (uint64_t)c->n_turns);
    put64(h, H_TOKENS, (uint64_t)c->n_tokens);
    put64(h, H_FILE_BYTES, compute_layout((uint64_t)c->n_episodes, (uint64_t)c->n_turns,
                                          (uint64_t)c->n_tokens).end);
    put32(h, H_MAX_TURN, (uint32_t)max_turn_tokens);
    put32(h, H_LONGEST, (uint32_t)longest);
    put64(h, H_PROBES, (uint64_t)n_probes);
    put32(h, H_PAD_ID, (uint32_t)mn_tokenizer_special(tok, MN_TOK_PAD));

    mn_atomic_file af;
    MN_TRY(mn_atomic_begin(path, &af));
    shard_out o = {.f = fopen(af.tmp, "wb"), .path = path};
    if (!o.f) {
        mn_status st = mn_fail(MN_ERR_IO, "%s: cannot create %s: %s", path, af.tmp, strerror(errno));
        mn_atomic_abort(&af);
        return st;
    }
    mn_xxh64_init(&o.sum, 0);
    mn_status st = MN_OK;
    if (fwrite(h, 1, sizeof h, o.f) != sizeof h)
        st = mn_fail(MN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    if (st == MN_OK)
        st = write_payload(&o, c);
    if (st == MN_OK) {
        put64(h, H_PAYLOAD_SUM, mn_xxh64_digest(&o.sum));
        put64(h, H_HEADER_SUM, mn_xxh64(h, H_HEADER_SUM, 0));
        if (fseek(o.f, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, o.f) != sizeof h || fflush(o.f) != 0)
            st = mn_fail(MN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    if (fclose(o.f) != 0 && st == MN_OK)
        st = mn_fail(MN_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    if (st != MN_OK) {
        mn_atomic_abort(&af);
        return st;
    }
    return mn_atomic_commit(&af);
}

mn_status mn_shard_write_dialogues(const char *path, mn_tokenizer *tok,
                                   const mn_dialogue_list *list,
                                   const mn_render_options *options, mn_render_stats *stats) {
    if (!path || !tok || !list || !options)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_shard_write_dialogues: NULL argument");
    mn_render_stats local = {0};
    if (!stats)
        stats = &local;
    mn_token_corpus c = {0};
    mn_status st = MN_OK;
    int64_t n_probes = 0;
    for (int64_t i = 0; i < list->count && st == MN_OK; i++) {
        st = mn_render_dialogue(tok, &list->items[i], options, &c, stats, NULL);
        if (st != MN_OK)
            mn_fail_context(st, "%s: dialogue %lld (%s)", path, (long long)i,
                            list->items[i].id ? list->items[i].id : "?");
        if (options->include_probes)
            n_probes += list->items[i].n_probes;
    }
    if (st == MN_OK)
        st = mn_shard_write(path, tok, &c, options->max_turn_tokens, n_probes);
    mn_token_corpus_free(&c);
    return st;
}

struct mn_shard {
    char *path;
    uint8_t *map;
    size_t size;
    mn_shard_info info;
    const uint64_t *episode_start, *turn_start;
    const int32_t *tokens;
    const uint8_t *turn_flags, *token_flags;
};

void mn_shard_close(mn_shard *s) {
    if (!s)
        return;
    if (s->map)
        munmap(s->map, s->size);
    free(s->path);
    free(s);
}

static mn_status shard_check(mn_shard *s, uint64_t expected_hash) {
    const char *path = s->path;
    const uint8_t *h = s->map;
    if (s->size < MN_SHARD_HEADER_BYTES)
        return mn_fail(MN_ERR_FORMAT, "%s: truncated: %zu bytes, shorter than the %d-byte header",
                       path, s->size, MN_SHARD_HEADER_BYTES);
    if (memcmp(h + H_MAGIC, MN_SHARD_MAGIC, 8) != 0)
        return mn_fail(MN_ERR_FORMAT, "%s: not a mnemo token shard (bad magic)", path);
    if (get32(h, H_VERSION) != MN_SHARD_VERSION)
        return mn_fail(MN_ERR_FORMAT, "%s: shard version %u, this build reads version %d", path,
                       get32(h, H_VERSION), MN_SHARD_VERSION);
    if (get32(h, H_ENDIAN) != ENDIAN_MARK)
        return mn_fail(MN_ERR_FORMAT, "%s: shard written with another byte order", path);
    if (get32(h, H_HEADER_BYTES) != MN_SHARD_HEADER_BYTES ||
        get64(h, H_HEADER_SUM) != mn_xxh64(h, H_HEADER_SUM, 0))
        return mn_fail(MN_ERR_FORMAT, "%s: header checksum mismatch (corrupt header)", path);
    uint64_t n_ep = get64(h, H_EPISODES), n_turns = get64(h, H_TURNS), n_tok = get64(h, H_TOKENS);
    if (n_ep > MAX_COUNT || n_turns > MAX_COUNT || n_tok > MAX_COUNT)
        return mn_fail(MN_ERR_FORMAT, "%s: implausible counts in header", path);
    layout l = compute_layout(n_ep, n_turns, n_tok);
    if (get64(h, H_FILE_BYTES) != l.end)
        return mn_fail(MN_ERR_FORMAT, "%s: header size %llu does not match its counts (%llu)",
                       path, (unsigned long long)get64(h, H_FILE_BYTES), (unsigned long long)l.end);
    if (s->size < l.end)
        return mn_fail(MN_ERR_FORMAT, "%s: truncated: %zu bytes, the header says %llu", path,
                       s->size, (unsigned long long)l.end);
    if (s->size > l.end)
        return mn_fail(MN_ERR_FORMAT, "%s: %zu bytes, the header says %llu (trailing data)", path,
                       s->size, (unsigned long long)l.end);
    uint64_t file_hash = get64(h, H_TOKHASH);
    if (file_hash != expected_hash)
        return mn_fail(MN_ERR_MISMATCH, "%s: shard was written with tokenizer %016llx, the given "
                       "tokenizer is %016llx", path, (unsigned long long)file_hash,
                       (unsigned long long)expected_hash);
    uint64_t sum = mn_xxh64(s->map + MN_SHARD_HEADER_BYTES, l.end - MN_SHARD_HEADER_BYTES, 0);
    if (sum != get64(h, H_PAYLOAD_SUM))
        return mn_fail(MN_ERR_FORMAT, "%s: payload checksum mismatch (corrupt data)", path);

    s->info = (mn_shard_info){
        .tokenizer_hash = file_hash,
        .vocab_size = (int32_t)get32(h, H_VOCAB),
        .max_turn_tokens = (int32_t)get32(h, H_MAX_TURN),
        .longest_turn = (int32_t)get32(h, H_LONGEST),
        .pad_id = (int32_t)get32(h, H_PAD_ID),
        .n_episodes = (int64_t)n_ep,
        .n_turns = (int64_t)n_turns,
        .n_tokens = (int64_t)n_tok,
        .n_probes = (int64_t)get64(h, H_PROBES),
    };
    s->episode_start = (const uint64_t *)(s->map + l.episodes);
    s->turn_start = (const uint64_t *)(s->map + l.turn_starts);
    s->tokens = (const int32_t *)(s->map + l.tokens);
    s->turn_flags = s->map + l.turn_flags;
    s->token_flags = s->map + l.token_flags;
    /* structure: a checksum only proves the file is what was written */
    if (s->info.vocab_size < 256 || s->info.pad_id < 0 || s->info.pad_id >= s->info.vocab_size)
        return mn_fail(MN_ERR_FORMAT, "%s: bad vocab size or pad id in header", path);
    if (s->episode_start[0] != 0 || s->episode_start[n_ep] != n_turns)
        return mn_fail(MN_ERR_FORMAT, "%s: episode table does not cover the %llu turns", path,
                       (unsigned long long)n_turns);
    for (uint64_t e = 0; e < n_ep; e++)
        if (s->episode_start[e + 1] <= s->episode_start[e])
            return mn_fail(MN_ERR_FORMAT, "%s: episode %llu is empty or out of order", path,
                           (unsigned long long)e);
    if (s->turn_start[0] != 0 || s->turn_start[n_turns] != n_tok)
        return mn_fail(MN_ERR_FORMAT, "%s: turn table does not cover the %llu tokens", path,
                       (unsigned long long)n_tok);
    uint64_t longest = 0;
    for (uint64_t t = 0; t < n_turns; t++) {
        if (s->turn_start[t + 1] <= s->turn_start[t])
            return mn_fail(MN_ERR_FORMAT, "%s: turn %llu is empty or out of order", path,
                           (unsigned long long)t);
        if (s->turn_start[t + 1] - s->turn_start[t] > longest)
            longest = s->turn_start[t + 1] - s->turn_start[t];
    }
    if (longest != (uint64_t)s->info.longest_turn)
        return mn_fail(MN_ERR_FORMAT, "%s: longest turn is %llu tokens, the header says %d", path,
                       (unsigned long long)longest, s->info.longest_turn);
    for (uint64_t i = 0; i < n_tok; i++)
        if (s->tokens[i] < 0 || s->tokens[i] >= s->info.vocab_size)
            return mn_fail(MN_ERR_FORMAT, "%s: token %llu has id %d outside 0..%d", path,
                           (unsigned long long)i, s->tokens[i], s->info.vocab_size - 1);
    return MN_OK;
}

mn_status mn_shard_open(const char *path, uint64_t expected_hash, mn_shard **out) {
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_shard_open: NULL argument");
    mn_shard *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        mn_shard_close(s);
        return mn_fail(MN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat sb;
    mn_status st = MN_OK;
    if (fstat(fd, &sb) != 0)
        st = mn_fail(MN_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = mn_fail(MN_ERR_IO, "%s: not a regular file", path);
    else if (sb.st_size < MN_SHARD_HEADER_BYTES)
        st = mn_fail(MN_ERR_FORMAT, "%s: truncated: %lld bytes, shorter than the %d-byte header",
                     path, (long long)sb.st_size, MN_SHARD_HEADER_BYTES);
    if (st == MN_OK) {
        s->size = (size_t)sb.st_size;
        void *m = mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED)
            st = mn_fail(MN_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
        else
            s->map = m;
    }
    close(fd);
    if (st == MN_OK)
        st = shard_check(s, expected_hash);
    if (st != MN_OK) {
        mn_shard_close(s);
        return st;
    }
    *out = s;
    return MN_OK;
}

mn_shard_info mn_shard_get_info(const mn_shard *s) { return s->info; }

mn_status mn_shard_episode(const mn_shard *s, int64_t e, int64_t *first, int64_t *count) {
    if (e < 0 || e >= s->info.n_episodes)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: episode %lld outside 0..%lld", s->path,
                       (long long)e, (long long)s->info.n_episodes - 1);
    *first = (int64_t)s->episode_start[e];
    *count = (int64_t)(s->episode_start[e + 1] - s->episode_start[e]);
    return MN_OK;
}

mn_status mn_shard_turn(const mn_shard *s, int64_t t, const int32_t **tokens,
                        const uint8_t **token_flags, int32_t *n, uint8_t *turn_flags) {
    if (t < 0 || t >= s->info.n_turns)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: turn %lld outside 0..%lld", s->path,
                       (long long)t, (long long)s->info.n_turns - 1);
    uint64_t a = s->turn_start[t];
    if (tokens)
        *tokens = s->tokens + a;
    if (token_flags)
        *token_flags = s->token_flags + a;
    if (n)
        *n = (int32_t)(s->turn_start[t + 1] - a);
    if (turn_flags)
        *turn_flags = s->turn_flags[t];
    return MN_OK;
}

/* ================================================================ loader */
struct mn_loader {
    const mn_shard *shard;
    mn_loader_options o;
    int64_t n_windows, skipped, dropped_turns;
    /* what an epoch shuffles: windows (their first global turn), or in stream mode the
     * episodes of >= T turns (their index) */
    int64_t n_units;
    int64_t *units;
    int32_t *order;         /* unit order of `order_epoch` */
    uint64_t order_epoch;
    mn_loader_cursor cursor;
    int32_t *tokens, *lengths;
    float *weights;
    int64_t *last_turn;     /* (B) first global turn of each batch row's window */
    /* stream mode: lane b walks episode lane_episode[b] (-1: none yet); its next window starts
     * at turn lane_turn[b] of the episode; carry[b] says the last window continued it */
    int64_t *lane_episode, *lane_turn;
    unsigned char *carry;
};

void mn_loader_free(mn_loader *l) {
    if (!l)
        return;
    free(l->units);
    free(l->order);
    free(l->tokens);
    free(l->lengths);
    free(l->weights);
    free(l->last_turn);
    free(l->lane_episode);
    free(l->lane_turn);
    free(l->carry);
    free(l);
}

static void shuffle_for_epoch(mn_loader *l, uint64_t epoch) {
    mn_rng rng;
    mn_rng_seed(&rng, l->o.seed ^ (0x9E3779B97F4A7C15ull * (epoch + 1)));
    for (int64_t i = 0; i < l->n_units; i++)
        l->order[i] = (int32_t)i;
    mn_rng_shuffle_i32(&rng, l->order, l->n_units);
    l->order_epoch = epoch;
}

static int64_t episode_turns(const mn_shard *s, int64_t e) {
    return (int64_t)(s->episode_start[e + 1] - s->episode_start[e]);
}

mn_status mn_loader_create(const mn_shard *shard, const mn_loader_options *o, mn_loader **out) {
    if (!shard || !o || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_loader_create: NULL argument");
    if (o->B < 1 || o->T < 1 || o->max_len < 1)
        return mn_fail(MN_ERR_CONFIG, "loader: B %d, T %d and max_len %d must be >= 1", o->B,
                       o->T, o->max_len);
    if ((int64_t)o->B * o->T * o->max_len > ((int64_t)1 << 31))
        return mn_fail(MN_ERR_CONFIG, "loader: B*T*max_len = %lld tokens is too large",
                       (long long)o->B * o->T * o->max_len);
    if (shard->info.longest_turn > o->max_len)
        return mn_fail(MN_ERR_CONFIG, "%s: longest turn has %d tokens, more than max_len %d "
                       "(rebuild the shard with --max-turn-tokens %d)", shard->path,
                       shard->info.longest_turn, o->max_len, o->max_len);
    mn_loader *l = calloc(1, sizeof *l);
    if (!l)
        return mn_fail(MN_ERR_NOMEM, "loader: out of memory");
    l->shard = shard;
    l->o = *o;
    int64_t n = 0, streamable = 0;
    for (int64_t e = 0; e < shard->info.n_episodes; e++) {
        int64_t len = episode_turns(shard, e);
        if (len < o->T) {
            l->skipped++;
            continue;
        }
        streamable++;
        if (o->stream) {
            n += len / o->T;
            l->dropped_turns += len % o->T;
        } else {
            n += len / o->T + (len % o->T != 0);
        }
    }
    mn_status st = MN_OK;
    if (n == 0)
        st = mn_fail(MN_ERR_CONFIG, "%s: no episode has T = %d turns", shard->path, o->T);
    else if (n > INT32_MAX)
        st = mn_fail(MN_ERR_CONFIG, "%s: %lld windows, more than a loader handles", shard->path,
                     (long long)n);
    size_t cells = (size_t)o->B * (size_t)o->T, lanes = (size_t)o->B;
    if (st == MN_OK) {
        l->n_windows = n;
        l->n_units = o->stream ? streamable : n;
        l->units = malloc((size_t)l->n_units * sizeof *l->units);
        l->order = malloc((size_t)l->n_units * sizeof *l->order);
        l->tokens = malloc(cells * (size_t)o->max_len * sizeof *l->tokens);
        l->weights = malloc(cells * (size_t)o->max_len * sizeof *l->weights);
        l->lengths = malloc(cells * sizeof *l->lengths);
        l->last_turn = malloc(lanes * sizeof *l->last_turn);
        l->lane_episode = malloc(lanes * sizeof *l->lane_episode);
        l->lane_turn = calloc(lanes, sizeof *l->lane_turn);
        l->carry = calloc(lanes, 1);
        if (!l->units || !l->order || !l->tokens || !l->weights || !l->lengths || !l->last_turn ||
            !l->lane_episode || !l->lane_turn || !l->carry)
            st = mn_fail(MN_ERR_NOMEM, "loader: out of memory for %lld windows", (long long)n);
    }
    if (st != MN_OK) {
        mn_loader_free(l);
        return st;
    }
    int64_t w = 0;
    for (int64_t e = 0; e < shard->info.n_episodes; e++) {
        int64_t first = (int64_t)shard->episode_start[e];
        int64_t len = episode_turns(shard, e);
        if (len < o->T)
            continue;
        if (o->stream) {
            l->units[w++] = e;
            continue;
        }
        for (int64_t s = 0; s + o->T <= len; s += o->T)
            l->units[w++] = first + s;
        if (len % o->T)
            l->units[w++] = first + len - o->T;
    }
    shuffle_for_epoch(l, 0);
    for (int b = 0; b < o->B; b++)
        l->last_turn[b] = -1, l->lane_episode[b] = -1;
    *out = l;
    return MN_OK;
}

/* The next unit of the shuffled order; crossing the end of an epoch continues in the next. */
static int64_t next_unit(mn_loader *l) {
    if (l->cursor.position >= (uint64_t)l->n_units) {
        l->cursor.epoch++;
        l->cursor.position = 0;
    }
    if (l->order_epoch != l->cursor.epoch)
        shuffle_for_epoch(l, l->cursor.epoch);
    return l->units[l->order[l->cursor.position++]];
}

/* Row b of the batch: the T turns from global turn `first`. */
static void fill_row(mn_loader *l, int b, int64_t first) {
    const mn_shard *s = l->shard;
    int B = l->o.B, L = l->o.max_len;
    l->last_turn[b] = first;
    for (int t = 0; t < l->o.T; t++) {
        int64_t turn = first + t;
        uint64_t a = s->turn_start[turn];
        int32_t n = (int32_t)(s->turn_start[turn + 1] - a);
        size_t cell = (size_t)t * (size_t)B + (size_t)b;
        int32_t *dst = l->tokens + cell * (size_t)L;
        float *wt = l->weights + cell * (size_t)L;
        memcpy(dst, s->tokens + a, (size_t)n * sizeof *dst);
        for (int i = n; i < L; i++)
            dst[i] = s->info.pad_id;
        for (int i = 0; i < n; i++)
            wt[i] = (s->token_flags[a + (uint64_t)i] & MN_TOKEN_ANSWER) ? l->o.answer_weight
                                                                      : l->o.text_weight;
        wt[0] = 0.0f; /* nothing predicts the first token of a turn */
        for (int i = n; i < L; i++)
            wt[i] = 0.0f;
        l->lengths[cell] = n;
    }
}

mn_status mn_loader_next(mn_loader *l, mn_batch *batch) {
    if (!l || !batch)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_loader_next: NULL argument");
    const mn_shard *s = l->shard;
    int B = l->o.B, T = l->o.T;
    for (int b = 0; b < B; b++) {
        if (!l->o.stream) {
            fill_row(l, b, next_unit(l));
            continue;
        }
        // a lane whose episode has no whole window left takes the next episode
        int64_t e = l->lane_episode[b];
        if (e < 0 || l->lane_turn[b] + T > episode_turns(s, e)) {
            l->lane_episode[b] = next_unit(l);
            l->lane_turn[b] = 0;
        }
        l->carry[b] = l->lane_turn[b] > 0;
        fill_row(l, b, (int64_t)s->episode_start[l->lane_episode[b]] + l->lane_turn[b]);
        l->lane_turn[b] += T;
    }
    batch->B = B;
    batch->T = T;
    batch->max_len = l->o.max_len;
    batch->tokens = l->tokens;
    batch->lengths = l->lengths;
    batch->loss_weights = l->weights;
    batch->carry = l->o.stream ? l->carry : NULL;
    batch->initial_states = NULL;
    return MN_OK;
}

mn_loader_cursor mn_loader_get_cursor(const mn_loader *l) { return l->cursor; }

mn_status mn_loader_set_cursor(mn_loader *l, mn_loader_cursor c) {
    if (c.position > (uint64_t)l->n_units)
        return mn_fail(MN_ERR_INVALID_ARG, "loader: cursor position %llu beyond the %lld %s "
                       "of an epoch", (unsigned long long)c.position, (long long)l->n_units,
                       l->o.stream ? "episodes" : "windows");
    l->cursor = c;
    return MN_OK;
}

void mn_loader_get_lanes(const mn_loader *l, int64_t *episode, int64_t *turn) {
    memcpy(episode, l->lane_episode, (size_t)l->o.B * sizeof *episode);
    memcpy(turn, l->lane_turn, (size_t)l->o.B * sizeof *turn);
}

mn_status mn_loader_set_lanes(mn_loader *l, const int64_t *episode, const int64_t *turn) {
    if (!l->o.stream)
        return mn_fail(MN_ERR_INVALID_ARG, "loader: lane positions belong to a stream loader");
    const mn_shard *s = l->shard;
    for (int b = 0; b < l->o.B; b++) {
        int64_t e = episode[b];
        if (e < -1 || e >= s->info.n_episodes || (e >= 0 && episode_turns(s, e) < l->o.T) ||
            (e >= 0 && (turn[b] < 0 || turn[b] > episode_turns(s, e))))
            return mn_fail(MN_ERR_INVALID_ARG, "loader: lane %d at turn %lld of episode %lld is not a "
                           "position of %s with T = %d", b, (long long)turn[b], (long long)e,
                           s->path, l->o.T);
    }
    for (int b = 0; b < l->o.B; b++)
        l->lane_episode[b] = episode[b], l->lane_turn[b] = episode[b] >= 0 ? turn[b] : 0;
    return MN_OK;
}

int64_t mn_loader_dropped_turns(const mn_loader *l) { return l->dropped_turns; }
int64_t mn_loader_n_windows(const mn_loader *l) { return l->n_windows; }
int64_t mn_loader_skipped_episodes(const mn_loader *l) { return l->skipped; }

void mn_loader_window(const mn_loader *l, int b, int64_t *episode, int64_t *first_turn) {
    int64_t turn = (b >= 0 && b < l->o.B) ? l->last_turn[b] : -1;
    if (first_turn)
        *first_turn = turn;
    if (episode) {
        /* binary search: the episode whose turn range holds `turn` */
        int64_t lo = 0, hi = l->shard->info.n_episodes - 1;
        if (turn < 0)
            lo = -1;
        while (turn >= 0 && lo < hi) {
            int64_t mid = (lo + hi + 1) / 2;
            if ((int64_t)l->shard->episode_start[mid] <= turn)
                lo = mid;
            else
                hi = mid - 1;
        }
        *episode = lo;
    }
}
