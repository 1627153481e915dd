/* Turn rendering, token shards (round trip; corrupt, truncated and mismatched files refused)
 * and the batch loader (layout, determinism for a seed, exact resume from a cursor). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "text/shard.h"
#include "text/tokenizer.h"

static mn_tokenizer *tok;

static int setup(void **state) {
    (void)state;
    const char *texts[] = {"hi there, how are you doing today?", "hello hello, I am fine thanks",
                           "what did you say? a new day, a new session", "the the the then"};
    return mn_tokenizer_train_texts(texts, NULL, 4, 320, &tok) == MN_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    mn_tokenizer_free(tok);
    return 0;
}

static int32_t sp(mn_special s) { return mn_tokenizer_special(tok, s); }

static void push_text(mn_ids *v, const char *text) {
    assert_int_equal(mn_tokenizer_encode(tok, text, strlen(text), v), MN_OK);
}

static void tmp_path(char *buf, size_t cap, const char *suffix) {
    snprintf(buf, cap, "/tmp/mnemo_test_shard_%ld_%s", (long)getpid(), suffix);
}

/* A two-speaker dialogue: session 1 (A, B), a probe after turn 2, session 2 (A). */
static mn_turn turns3[] = {
    {.speaker = "alice", .text = "hi there", .session = 1},
    {.speaker = "bob", .text = "hello", .session = 1},
    {.speaker = "alice", .text = "a new day", .session = 2},
};
static mn_probe probe1 = {.after = 2, .question = "what did you say?", .answer = "hello"};
static mn_dialogue dialogue3 = {.id = "d3", .turns = turns3, .n_turns = 3, .probes = &probe1,
                                .n_probes = 1};

static void test_render_layout(void **state) {
    (void)state;
    mn_token_corpus c = {0};
    mn_render_options o = mn_render_options_default();
    mn_render_stats st = {0};
    assert_int_equal(mn_render_dialogue(tok, &dialogue3, &o, &c, &st, NULL), MN_OK);
    assert_int_equal(c.n_episodes, 1);
    assert_int_equal(c.n_turns, 5);
    assert_int_equal(st.probe_turns, 2);
    assert_int_equal(st.split_turns, 0);

    mn_ids want = {0};
    uint8_t want_turn_flags[5] = {0, MN_TURN_SPEAKER_B, MN_TURN_QUESTION,
                                  MN_TURN_ANSWER | MN_TURN_SPEAKER_B, MN_TURN_SESSION_START};
    int64_t starts[6];
    starts[0] = 0;
    /* alice: speaker a */
    mn_ids_push(&want, sp(MN_TOK_TURN));
    mn_ids_push(&want, sp(MN_TOK_SPEAKER_A));
    push_text(&want, "hi there");
    mn_ids_push(&want, sp(MN_TOK_EOT));
    starts[1] = want.count;
    mn_ids_push(&want, sp(MN_TOK_TURN));
    mn_ids_push(&want, sp(MN_TOK_SPEAKER_B));
    push_text(&want, "hello");
    mn_ids_push(&want, sp(MN_TOK_EOT));
    starts[2] = want.count;
    /* question by the speaker other than the last one (alice), answered by bob */
    mn_ids_push(&want, sp(MN_TOK_TURN));
    mn_ids_push(&want, sp(MN_TOK_SPEAKER_A));
    push_text(&want, "what did you say?");
    mn_ids_push(&want, sp(MN_TOK_EOT));
    starts[3] = want.count;
    mn_ids_push(&want, sp(MN_TOK_TURN));
    mn_ids_push(&want, sp(MN_TOK_SPEAKER_B));
    int64_t answer_from = want.count;
    push_text(&want, "hello");
    mn_ids_push(&want, sp(MN_TOK_EOT));
    int64_t answer_to = want.count;
    starts[4] = want.count;
    /* new session */
    mn_ids_push(&want, sp(MN_TOK_SESSION));
    mn_ids_push(&want, sp(MN_TOK_TURN));
    mn_ids_push(&want, sp(MN_TOK_SPEAKER_A));
    push_text(&want, "a new day");
    mn_ids_push(&want, sp(MN_TOK_EOT));
    starts[5] = want.count;

    assert_int_equal(c.n_tokens, want.count);
    assert_memory_equal(c.tokens, want.ids, (size_t)want.count * sizeof(int32_t));
    assert_memory_equal(c.turn_start, starts, sizeof starts);
    assert_memory_equal(c.turn_flags, want_turn_flags, sizeof want_turn_flags);
    for (int64_t i = 0; i < c.n_tokens; i++)
        assert_int_equal(c.token_flags[i], (i >= answer_from && i < answer_to) ? MN_TOKEN_ANSWER : 0);
    assert_int_equal(st.answer_tokens, answer_to - answer_from);
    assert_int_equal(c.episode_start[0], 0);
    assert_int_equal(c.episode_start[1], 5);
    mn_ids_free(&want);

    /* without probes: three turns; an explicit probe speaker asks */
    mn_token_corpus c2 = {0};
    o.include_probes = 0;
    assert_int_equal(mn_render_dialogue(tok, &dialogue3, &o, &c2, NULL, NULL), MN_OK);
    assert_int_equal(c2.n_turns, 3);
    mn_token_corpus_free(&c2);
    mn_probe p2 = probe1;
    p2.speaker = "bob";
    mn_dialogue d2 = dialogue3;
    d2.probes = &p2;
    o.include_probes = 1;
    assert_int_equal(mn_render_dialogue(tok, &d2, &o, &c2, NULL, NULL), MN_OK);
    assert_int_equal(c2.tokens[c2.turn_start[2] + 1], sp(MN_TOK_SPEAKER_B)); /* bob asks */
    assert_int_equal(c2.tokens[c2.turn_start[3] + 1], sp(MN_TOK_SPEAKER_A)); /* alice answers */
    mn_token_corpus_free(&c2);
    mn_token_corpus_free(&c);
}

/* The renderer asks probes in order of `after`, file order among equals, and says where each
 * probe's question landed in the corpus (probe_turn): what mnemo eval walks by. */
static void test_render_probe_turns(void **state) {
    (void)state;
    mn_turn turns[4] = {{.speaker = "alice", .text = "hi there"}, {.speaker = "bob", .text = "hello"},
                        {.speaker = "alice", .text = "a new day"}, {.speaker = "bob", .text = "the then"}};
    mn_probe probes[4] = {{.after = 3, .question = "what day?", .answer = "new"},
                          {.after = 1, .question = "who?", .answer = "alice"},
                          {.after = 3, .question = "what then?", .answer = "the"},
                          {.after = 2, .question = "how?", .answer = "hello"}};
    mn_dialogue d = {.id = "order", .turns = turns, .n_turns = 4, .probes = probes, .n_probes = 4};
    mn_token_corpus c = {0};
    mn_render_options o = mn_render_options_default();
    int64_t at[4];
    assert_int_equal(mn_render_dialogue(tok, &dialogue3, &o, &c, NULL, NULL), MN_OK); /* 5 turns before */
    assert_int_equal(mn_render_dialogue(tok, &d, &o, &c, NULL, at), MN_OK);
    /* t0 | Q1 A1 | t1 | Q3 A3 | t2 | Q0 A0 Q2 A2 | t3 */
    const int64_t want[4] = {5 + 7, 5 + 1, 5 + 9, 5 + 4};
    assert_memory_equal(at, want, sizeof want);
    for (int p = 0; p < 4; p++) {
        assert_true(c.turn_flags[at[p]] & MN_TURN_QUESTION);
        mn_ids q = {0};
        push_text(&q, probes[p].question);
        assert_memory_equal(c.tokens + c.turn_start[at[p]] + 2, q.ids, (size_t)q.count * sizeof(int32_t));
        mn_ids_free(&q);
    }
    o.include_probes = 0;
    assert_int_equal(mn_render_dialogue(tok, &d, &o, &c, NULL, at), MN_OK);
    for (int p = 0; p < 4; p++)
        assert_int_equal(at[p], -1);
    mn_token_corpus_free(&c);
}

/* probe_exchange: a probe is one turn, question then answer, only the answer (and its
 * <|eot|>) flagged; a pair longer than 2 x max_turn_tokens (or max_exchange_tokens, when set)
 * falls back to two turns. */
static void test_render_probe_exchange(void **state) {
    (void)state;
    mn_token_corpus c = {0};
    mn_render_options o = mn_render_options_default();
    o.probe_exchange = 1;
    mn_render_stats st = {0};
    assert_int_equal(mn_render_dialogue(tok, &dialogue3, &o, &c, &st, NULL), MN_OK);
    assert_int_equal(c.n_turns, 4); /* t0 t1 | Q+A | t2 */
    assert_int_equal(st.probe_turns, 1);
    assert_true((c.turn_flags[2] & (MN_TURN_QUESTION | MN_TURN_ANSWER)) == (MN_TURN_QUESTION | MN_TURN_ANSWER));
    mn_ids want = {0}, q = {0}, a = {0};
    push_text(&q, probe1.question);
    push_text(&a, probe1.answer);
    /* the asker is the speaker other than bob (turn 1): alice, speaker A; bob answers, B */
    int32_t head[2] = {sp(MN_TOK_TURN), sp(MN_TOK_SPEAKER_A)};
    for (int i = 0; i < 2; i++)
        assert_int_equal(mn_ids_push(&want, head[i]), MN_OK);
    for (int64_t i = 0; i < q.count; i++)
        assert_int_equal(mn_ids_push(&want, q.ids[i]), MN_OK);
    int32_t mid[3] = {sp(MN_TOK_EOT), sp(MN_TOK_TURN), sp(MN_TOK_SPEAKER_B)};
    for (int i = 0; i < 3; i++)
        assert_int_equal(mn_ids_push(&want, mid[i]), MN_OK);
    const int64_t answer_at = want.count;
    for (int64_t i = 0; i < a.count; i++)
        assert_int_equal(mn_ids_push(&want, a.ids[i]), MN_OK);
    assert_int_equal(mn_ids_push(&want, sp(MN_TOK_EOT)), MN_OK);
    const int64_t s = c.turn_start[2], n = c.turn_start[3] - s;
    assert_int_equal(n, want.count);
    assert_memory_equal(c.tokens + s, want.ids, (size_t)n * sizeof(int32_t));
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(c.token_flags[s + i] & MN_TOKEN_ANSWER, i >= answer_at ? MN_TOKEN_ANSWER : 0);
    assert_int_equal(st.answer_tokens, a.count + 1);
    /* too long for one turn of 2 x 8 tokens: question and answer turns as without the option */
    mn_token_corpus c2 = {0};
    o.max_turn_tokens = 8;
    mn_probe longq = {.after = 2, .question = "what did you say? a new day, a new session", .answer = "hello"};
    mn_dialogue d = dialogue3;
    d.probes = &longq;
    assert_int_equal(mn_render_dialogue(tok, &d, &o, &c2, &st, NULL), MN_OK);
    int questions = 0, answers = 0;
    for (int64_t t = 0; t < c2.n_turns; t++) {
        assert_false((c2.turn_flags[t] & MN_TURN_QUESTION) && (c2.turn_flags[t] & MN_TURN_ANSWER));
        questions += !!(c2.turn_flags[t] & MN_TURN_QUESTION);
        answers += !!(c2.turn_flags[t] & MN_TURN_ANSWER);
    }
    assert_true(questions >= 1 && answers == 1);
    /* the same pair with room for it (max_exchange_tokens): one turn again */
    mn_token_corpus c3 = {0};
    o.max_exchange_tokens = (int)(c.turn_start[3] - c.turn_start[2]) + 16;
    assert_int_equal(mn_render_dialogue(tok, &d, &o, &c3, &st, NULL), MN_OK);
    int pairs = 0;
    for (int64_t t = 0; t < c3.n_turns; t++)
        pairs += (c3.turn_flags[t] & (MN_TURN_QUESTION | MN_TURN_ANSWER)) == (MN_TURN_QUESTION | MN_TURN_ANSWER);
    assert_int_equal(pairs, 1);
    /* and whole turns of 24 tokens whose pair would pass 2 x 24 but not 24: two turns */
    mn_token_corpus c4 = {0};
    o.max_turn_tokens = 24;
    o.max_exchange_tokens = 8;
    assert_int_equal(mn_render_dialogue(tok, &dialogue3, &o, &c4, &st, NULL), MN_OK);
    for (int64_t t = 0; t < c4.n_turns; t++) {
        assert_false((c4.turn_flags[t] & MN_TURN_QUESTION) && (c4.turn_flags[t] & MN_TURN_ANSWER));
        assert_true(c4.turn_start[t + 1] - c4.turn_start[t] <= 24);
    }
    mn_token_corpus_free(&c3);
    mn_token_corpus_free(&c4);
    mn_ids_free(&want), mn_ids_free(&q), mn_ids_free(&a);
    mn_token_corpus_free(&c);
    mn_token_corpus_free(&c2);
}

static void test_split_long_turn(void **state) {
    (void)state;
    char text[2000];
    size_t n = 0;
    for (int i = 0; i < 60; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "word%d ", i);
    mn_turn t[2] = {{.speaker = "a", .text = "short", .session = 1},
                    {.speaker = "a", .text = text, .session = 2}};
    mn_dialogue d = {.id = "long", .turns = t, .n_turns = 2};
    mn_render_options o = {.max_turn_tokens = 8, .include_probes = 1};
    mn_token_corpus c = {0};
    mn_render_stats st = {0};
    assert_int_equal(mn_render_dialogue(tok, &d, &o, &c, &st, NULL), MN_OK);
    assert_int_equal(st.split_turns, 1);
    assert_true(c.n_turns > 3);
    assert_int_equal(st.longest_turn, 8);
    mn_ids text_ids = {0}, enc = {0};
    for (int64_t k = 1; k < c.n_turns; k++) {
        int64_t a = c.turn_start[k], b = c.turn_start[k + 1];
        assert_true(b - a <= 8);
        int first = k == 1, last = k == c.n_turns - 1;
        assert_int_equal(!!(c.turn_flags[k] & MN_TURN_CONTINUED), !first);
        assert_int_equal(!!(c.turn_flags[k] & MN_TURN_SESSION_START), first);
        int64_t h = a;
        if (first)
            assert_int_equal(c.tokens[h++], sp(MN_TOK_SESSION));
        assert_int_equal(c.tokens[h++], sp(MN_TOK_TURN));
        assert_int_equal(c.tokens[h++], sp(MN_TOK_SPEAKER_A));
        int64_t e = last ? b - 1 : b;
        if (last)
            assert_int_equal(c.tokens[b - 1], sp(MN_TOK_EOT));
        assert_true(e > h); /* every piece carries text */
        for (int64_t i = h; i < e; i++) {
            assert_int_not_equal(c.tokens[i], sp(MN_TOK_EOT));
            mn_ids_push(&text_ids, c.tokens[i]);
        }
    }
    push_text(&enc, text);
    assert_int_equal(text_ids.count, enc.count);
    assert_memory_equal(text_ids.ids, enc.ids, (size_t)enc.count * sizeof(int32_t));
    mn_ids_free(&text_ids);
    mn_ids_free(&enc);
    mn_token_corpus_free(&c);
    o.max_turn_tokens = 7;
    assert_int_equal(mn_render_dialogue(tok, &d, &o, &c, NULL, NULL), MN_ERR_INVALID_ARG);
    mn_token_corpus_free(&c);
}

/* ------------------------------------------------------------------ shards */
/* n dialogues of varied length (1..12 turns), two speakers, sessions, some probes. */
static mn_dialogue_list make_list(int n, mn_turn *turn_pool, mn_probe *probe_pool,
                                  mn_dialogue *items) {
    static const char *const words[] = {"hi there", "hello", "how are you doing today?",
                                        "fine thanks", "what did you say?", "a new day", ""};
    int tp = 0;
    for (int i = 0; i < n; i++) {
        int nt = 1 + (i * 7) % 12;
        mn_turn *t = turn_pool + tp;
        for (int k = 0; k < nt; k++) {
            t[k].speaker = (k % 2) ? "B" : "A";
            t[k].text = (char *)words[(i + k) % 7];
            t[k].session = 1 + k / 5;
            t[k].date = NULL;
        }
        tp += nt;
        items[i] = (mn_dialogue){.id = "x", .turns = t, .n_turns = nt};
        if (nt >= 3) {
            probe_pool[i] = (mn_probe){.after = nt - 1, .question = "what did you say?",
                                       .answer = "hello"};
            items[i].probes = &probe_pool[i];
            items[i].n_probes = 1;
        }
    }
    return (mn_dialogue_list){.items = items, .count = n, .capacity = n};
}

static mn_turn g_turns[64 * 12];
static mn_probe g_probes[64];
static mn_dialogue g_items[64];

static void write_shard(const char *path, int n, mn_token_corpus *render_out) {
    mn_dialogue_list list = make_list(n, g_turns, g_probes, g_items);
    mn_render_options o = mn_render_options_default();
    mn_render_stats st = {0};
    assert_int_equal(mn_shard_write_dialogues(path, tok, &list, &o, &st), MN_OK);
    if (render_out)
        for (int i = 0; i < n; i++)
            assert_int_equal(mn_render_dialogue(tok, &list.items[i], &o, render_out, NULL, NULL), MN_OK);
}

static void test_shard_round_trip(void **state) {
    (void)state;
    char path[256];
    tmp_path(path, sizeof path, "rt.shard");
    mn_token_corpus c = {0};
    write_shard(path, 40, &c);
    mn_shard *s;
    assert_int_equal(mn_shard_open(path, mn_tokenizer_hash(tok), &s), MN_OK);
    mn_shard_info info = mn_shard_get_info(s);
    assert_int_equal(info.n_episodes, 40);
    assert_int_equal(info.n_turns, c.n_turns);
    assert_int_equal(info.n_tokens, c.n_tokens);
    assert_int_equal(info.vocab_size, mn_tokenizer_vocab_size(tok));
    assert_int_equal(info.pad_id, sp(MN_TOK_PAD));
    assert_int_equal(info.max_turn_tokens, 128);
    for (int64_t e = 0; e < info.n_episodes; e++) {
        int64_t first, count;
        assert_int_equal(mn_shard_episode(s, e, &first, &count), MN_OK);
        assert_int_equal(first, c.episode_start[e]);
        assert_int_equal(count, c.episode_start[e + 1] - c.episode_start[e]);
    }
    for (int64_t t = 0; t < info.n_turns; t++) {
        const int32_t *ids;
        const uint8_t *flags;
        int32_t n;
        uint8_t tf;
        assert_int_equal(mn_shard_turn(s, t, &ids, &flags, &n, &tf), MN_OK);
        assert_int_equal(n, c.turn_start[t + 1] - c.turn_start[t]);
        assert_memory_equal(ids, c.tokens + c.turn_start[t], (size_t)n * sizeof(int32_t));
        assert_memory_equal(flags, c.token_flags + c.turn_start[t], (size_t)n);
        assert_int_equal(tf, c.turn_flags[t]);
    }
    assert_int_equal(mn_shard_episode(s, 40, NULL, NULL), MN_ERR_INVALID_ARG);
    mn_shard_close(s);
    /* no temp file left behind */
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
    mn_token_corpus_free(&c);
    unlink(path);
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void spill(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void expect_refused(const char *path, uint64_t hash, mn_status want, const char *words) {
    mn_shard *s = NULL;
    assert_int_equal(mn_shard_open(path, hash, &s), want);
    assert_null(s);
    assert_non_null(strstr(mn_last_error(), path));
    if (!strstr(mn_last_error(), words))
        fail_msg("message '%s' lacks '%s'", mn_last_error(), words);
}

static void test_shard_refusals(void **state) {
    (void)state;
    char path[256], bad[256];
    tmp_path(path, sizeof path, "good.shard");
    tmp_path(bad, sizeof bad, "bad.shard");
    write_shard(path, 20, NULL);
    uint64_t h = mn_tokenizer_hash(tok);
    size_t n;
    unsigned char *b = slurp(path, &n);

    /* another tokenizer */
    expect_refused(path, h ^ 1, MN_ERR_MISMATCH, "tokenizer");
    /* one flipped bit in the payload (a token), in the header, in the flags */
    b[MN_SHARD_HEADER_BYTES + 400] ^= 0x10;
    spill(bad, b, n);
    expect_refused(bad, h, MN_ERR_FORMAT, "checksum");
    b[MN_SHARD_HEADER_BYTES + 400] ^= 0x10;
    b[40] ^= 1; /* n_turns */
    spill(bad, b, n);
    expect_refused(bad, h, MN_ERR_FORMAT, "header checksum");
    b[40] ^= 1;
    b[n - 3] ^= 0x04;
    spill(bad, b, n);
    expect_refused(bad, h, MN_ERR_FORMAT, "checksum");
    b[n - 3] ^= 0x04;
    /* truncated anywhere: in the payload, in the header, empty */
    spill(bad, b, n - 8);
    expect_refused(bad, h, MN_ERR_FORMAT, "truncated");
    spill(bad, b, 100);
    expect_refused(bad, h, MN_ERR_FORMAT, "truncated");
    spill(bad, b, 0);
    expect_refused(bad, h, MN_ERR_FORMAT, "truncated");
    /* trailing bytes */
    unsigned char *longer = calloc(n + 8, 1);
    memcpy(longer, b, n);
    spill(bad, longer, n + 8);
    expect_refused(bad, h, MN_ERR_FORMAT, "trailing");
    free(longer);
    /* bad magic, another version */
    b[0] = 'X';
    spill(bad, b, n);
    expect_refused(bad, h, MN_ERR_FORMAT, "magic");
    b[0] = 'M';
    b[8] = 99;
    spill(bad, b, n);
    expect_refused(bad, h, MN_ERR_FORMAT, "version");
    b[8] = MN_SHARD_VERSION;
    /* intact again: opens */
    spill(bad, b, n);
    mn_shard *s;
    assert_int_equal(mn_shard_open(bad, h, &s), MN_OK);
    mn_shard_close(s);
    /* missing file */
    unlink(bad);
    expect_refused(bad, h, MN_ERR_IO, "cannot open");
    free(b);
    unlink(path);
}

/* ------------------------------------------------------------------ loader */
static mn_shard *open_loader_shard(const char *name, int n) {
    char path[256];
    tmp_path(path, sizeof path, name);
    write_shard(path, n, NULL);
    mn_shard *s;
    assert_int_equal(mn_shard_open(path, mn_tokenizer_hash(tok), &s), MN_OK);
    unlink(path); /* the mapping stays valid */
    return s;
}

static void test_loader_batches(void **state) {
    (void)state;
    mn_shard *s = open_loader_shard("ld.shard", 30);
    mn_loader_options o = {.B = 3, .T = 4, .max_len = 40, .seed = 7, .text_weight = 1.0f,
                           .answer_weight = 5.0f};
    mn_loader *l;
    assert_int_equal(mn_loader_create(s, &o, &l), MN_OK);
    /* expected windows: per episode of n >= 4 turns, n/4 full windows plus one ending at n */
    int64_t want = 0, skipped = 0;
    mn_shard_info info = mn_shard_get_info(s);
    for (int64_t e = 0; e < info.n_episodes; e++) {
        int64_t first, count;
        mn_shard_episode(s, e, &first, &count);
        if (count < 4)
            skipped++;
        else
            want += count / 4 + (count % 4 != 0);
    }
    assert_int_equal(mn_loader_n_windows(l), want);
    assert_int_equal(mn_loader_skipped_episodes(l), skipped);
    int64_t seen_answer = 0;
    for (int step = 0; step < 20; step++) {
        mn_batch batch;
        assert_int_equal(mn_loader_next(l, &batch), MN_OK);
        assert_int_equal(batch.B, 3);
        assert_int_equal(batch.T, 4);
        assert_int_equal(batch.max_len, 40);
        for (int b = 0; b < 3; b++) {
            int64_t ep, first;
            mn_loader_window(l, b, &ep, &first);
            int64_t efirst, ecount;
            assert_int_equal(mn_shard_episode(s, ep, &efirst, &ecount), MN_OK);
            assert_true(first >= efirst && first + 4 <= efirst + ecount);
            for (int t = 0; t < 4; t++) {
                const int32_t *ids;
                const uint8_t *flags;
                int32_t n;
                mn_shard_turn(s, first + t, &ids, &flags, &n, NULL);
                size_t cell = (size_t)t * 3 + (size_t)b;
                assert_int_equal(batch.lengths[cell], n);
                assert_memory_equal(batch.tokens + cell * 40, ids, (size_t)n * sizeof(int32_t));
                for (int i = 0; i < 40; i++) {
                    float w = batch.loss_weights[cell * 40 + (size_t)i];
                    if (i >= n) {
                        assert_int_equal(batch.tokens[cell * 40 + (size_t)i], sp(MN_TOK_PAD));
                        assert_true(w == 0.0f);
                    } else if (i == 0) {
                        assert_true(w == 0.0f);
                    } else if (flags[i] & MN_TOKEN_ANSWER) {
                        assert_true(w == 5.0f);
                        seen_answer++;
                    } else {
                        assert_true(w == 1.0f);
                    }
                }
            }
        }
    }
    assert_true(seen_answer > 0);
    mn_loader_free(l);
    /* turns longer than max_len are refused; T longer than every episode too */
    o.max_len = 5;
    assert_int_equal(mn_loader_create(s, &o, &l), MN_ERR_CONFIG);
    o.max_len = 40;
    o.T = 1000;
    assert_int_equal(mn_loader_create(s, &o, &l), MN_ERR_CONFIG);
    mn_shard_close(s);
}

/* Runs `steps` batches and appends their tokens and lengths into out. */
static void run_batches(mn_loader *l, int steps, int32_t *out, size_t per_batch) {
    for (int k = 0; k < steps; k++) {
        mn_batch b;
        assert_int_equal(mn_loader_next(l, &b), MN_OK);
        memcpy(out + (size_t)k * per_batch, b.tokens, per_batch * sizeof(int32_t));
    }
}

static void test_loader_determinism_and_resume(void **state) {
    (void)state;
    mn_shard *s = open_loader_shard("det.shard", 40);
    mn_loader_options o = {.B = 2, .T = 3, .max_len = 40, .seed = 11, .text_weight = 1.0f,
                           .answer_weight = 1.0f};
    size_t per = 2 * 3 * 40;
    mn_loader *a, *b, *c;
    assert_int_equal(mn_loader_create(s, &o, &a), MN_OK);
    assert_int_equal(mn_loader_create(s, &o, &b), MN_OK);
    int64_t W = mn_loader_n_windows(a);
    /* enough steps to cross two epoch boundaries */
    int steps = (int)(W + 1);
    int32_t *ra = malloc((size_t)steps * per * sizeof(int32_t));
    int32_t *rb = malloc((size_t)steps * per * sizeof(int32_t));
    run_batches(a, steps, ra, per);
    run_batches(b, steps, rb, per);
    assert_memory_equal(ra, rb, (size_t)steps * per * sizeof(int32_t));
    mn_loader_cursor end = mn_loader_get_cursor(a);
    assert_true(end.epoch >= 1);

    /* resume: stop after k steps, carry the two integers, continue in a fresh loader */
    for (int k = 0; k < steps; k += 5) {
        assert_int_equal(mn_loader_create(s, &o, &c), MN_OK);
        run_batches(c, k, rb, per);
        mn_loader_cursor cur = mn_loader_get_cursor(c);
        mn_loader_free(c);
        assert_int_equal(mn_loader_create(s, &o, &c), MN_OK);
        assert_int_equal(mn_loader_set_cursor(c, (mn_loader_cursor){cur.epoch, cur.position}),
                         MN_OK);
        run_batches(c, steps - k, rb, per);
        assert_memory_equal(rb, ra + (size_t)k * per, (size_t)(steps - k) * per * sizeof(int32_t));
        mn_loader_free(c);
    }
    /* with B = 1, an epoch visits every window exactly once */
    mn_loader_options o1 = o;
    o1.B = 1;
    assert_int_equal(mn_loader_create(s, &o1, &c), MN_OK);
    int64_t n_turns = mn_shard_get_info(s).n_turns;
    int *hits = calloc((size_t)n_turns, sizeof *hits);
    for (int64_t k = 0; k < W; k++) {
        mn_batch bt;
        assert_int_equal(mn_loader_next(c, &bt), MN_OK);
        int64_t ep, first;
        mn_loader_window(c, 0, &ep, &first);
        assert_true(first >= 0 && first < n_turns);
        hits[first]++;
    }
    int64_t distinct = 0;
    for (int64_t t = 0; t < n_turns; t++) {
        assert_true(hits[t] <= 1);
        distinct += hits[t];
    }
    assert_int_equal(distinct, W);
    assert_int_equal(mn_loader_get_cursor(c).epoch, 0);
    assert_int_equal(mn_loader_get_cursor(c).position, (uint64_t)W);
    free(hits);
    mn_loader_cursor bad = {0, (uint64_t)W + 1};
    assert_int_equal(mn_loader_set_cursor(c, bad), MN_ERR_INVALID_ARG);
    mn_loader_free(c);

    /* another seed, another order */
    o.seed = 12;
    assert_int_equal(mn_loader_create(s, &o, &c), MN_OK);
    run_batches(c, steps, rb, per);
    assert_memory_not_equal(ra, rb, (size_t)steps * per * sizeof(int32_t));
    mn_loader_free(c);

    free(ra);
    free(rb);
    mn_loader_free(a);
    mn_loader_free(b);
    mn_shard_close(s);
}

/* Stream mode: each lane walks an episode's windows 0, T, 2T, ... in order, then the next
 * episode of the shuffled order; carry says which windows continue an episode. */
typedef struct {
    int32_t tokens[3 * 3 * 40];
    unsigned char carry[3];
} stream_batch;

static void run_stream(mn_loader *l, int steps, stream_batch *out) {
    for (int k = 0; k < steps; k++) {
        mn_batch b;
        assert_int_equal(mn_loader_next(l, &b), MN_OK);
        assert_non_null(b.carry);
        assert_null(b.initial_states);
        memcpy(out[k].tokens, b.tokens, sizeof out[k].tokens);
        memcpy(out[k].carry, b.carry, sizeof out[k].carry);
    }
}

static void test_loader_stream(void **state) {
    (void)state;
    enum { B = 3, T = 3 };
    mn_shard *s = open_loader_shard("stream.shard", 40);
    mn_shard_info info = mn_shard_get_info(s);
    mn_loader_options o = {.B = B, .T = T, .max_len = 40, .seed = 5, .text_weight = 1.0f,
                           .answer_weight = 1.0f, .stream = 1};
    mn_loader *l;
    assert_int_equal(mn_loader_create(s, &o, &l), MN_OK);
    int64_t windows = 0, skipped = 0, dropped = 0, streamable = 0;
    for (int64_t e = 0; e < info.n_episodes; e++) {
        int64_t first, count;
        mn_shard_episode(s, e, &first, &count);
        if (count < T) {
            skipped++;
            continue;
        }
        streamable++, windows += count / T, dropped += count % T;
    }
    assert_true(dropped > 0 && skipped > 0); /* the fixture has tails and short episodes */
    assert_int_equal(mn_loader_n_windows(l), windows);
    assert_int_equal(mn_loader_skipped_episodes(l), skipped);
    assert_int_equal(mn_loader_dropped_turns(l), dropped);

    /* walk a little more than one epoch's windows */
    int steps = (int)(windows / B + 4);
    int64_t lane_ep[B] = {-1, -1, -1}, lane_first[B] = {0, 0, 0}, lane_windows[B] = {0, 0, 0};
    int *started = calloc((size_t)info.n_episodes, sizeof *started);
    int64_t starts = 0;
    for (int k = 0; k < steps; k++) {
        mn_batch batch;
        assert_int_equal(mn_loader_next(l, &batch), MN_OK);
        for (int b = 0; b < B; b++) {
            int64_t ep, first, efirst, ecount;
            mn_loader_window(l, b, &ep, &first);
            assert_int_equal(mn_shard_episode(s, ep, &efirst, &ecount), MN_OK);
            const int32_t *ids;
            int32_t n;
            mn_shard_turn(s, first, &ids, NULL, &n, NULL);
            assert_memory_equal(batch.tokens + (size_t)b * 40, ids, (size_t)n * sizeof(int32_t));
            if (batch.carry[b]) { /* the next window of the same episode */
                assert_int_equal(ep, lane_ep[b]);
                assert_int_equal(first, lane_first[b] + T);
                lane_windows[b]++;
            } else { /* a new episode from its first turn; the last one was walked to its tail */
                assert_int_equal(first, efirst);
                if (lane_ep[b] >= 0) {
                    int64_t pf, pc;
                    mn_shard_episode(s, lane_ep[b], &pf, &pc);
                    assert_int_equal(lane_windows[b], pc / T);
                }
                if (starts < streamable) /* the first epoch: every episode of >= T turns once */
                    assert_int_equal(started[ep]++, 0);
                starts++;
                lane_windows[b] = 1;
            }
            assert_true(ecount >= T && first + T <= efirst + ecount);
            lane_ep[b] = ep, lane_first[b] = first;
        }
    }
    assert_true(starts > streamable); /* crossed into the second epoch */
    for (int64_t e = 0; e < info.n_episodes; e++) {
        int64_t first, count;
        mn_shard_episode(s, e, &first, &count);
        assert_int_equal(started[e], count >= T);
    }
    free(started);

    /* resume: the cursor and the lanes after k batches continue identically in a new loader */
    mn_loader *a;
    assert_int_equal(mn_loader_create(s, &o, &a), MN_OK);
    stream_batch *want = calloc((size_t)steps, sizeof *want), *got = calloc((size_t)steps, sizeof *got);
    run_stream(a, steps, want);
    for (int k = 1; k < steps; k += 7) {
        mn_loader *c;
        assert_int_equal(mn_loader_create(s, &o, &c), MN_OK);
        run_stream(c, k, got);
        mn_loader_cursor cur = mn_loader_get_cursor(c);
        int64_t ep[B], turn[B];
        mn_loader_get_lanes(c, ep, turn);
        mn_loader_free(c);
        assert_int_equal(mn_loader_create(s, &o, &c), MN_OK);
        assert_int_equal(mn_loader_set_cursor(c, cur), MN_OK);
        assert_int_equal(mn_loader_set_lanes(c, ep, turn), MN_OK);
        run_stream(c, steps - k, got + k);
        assert_memory_equal(got, want, (size_t)steps * sizeof *want);
        mn_loader_free(c);
    }
    /* lane positions the shard does not have, or a loader without stream mode, are refused */
    int64_t ep[B] = {0, 1, info.n_episodes}, turn[B] = {0, 0, 0};
    assert_int_equal(mn_loader_set_lanes(a, ep, turn), MN_ERR_INVALID_ARG);
    ep[2] = -1, turn[1] = 1000;
    assert_int_equal(mn_loader_set_lanes(a, ep, turn), MN_ERR_INVALID_ARG);
    o.stream = 0;
    mn_loader *plain;
    assert_int_equal(mn_loader_create(s, &o, &plain), MN_OK);
    turn[1] = 0;
    assert_int_equal(mn_loader_set_lanes(plain, ep, turn), MN_ERR_INVALID_ARG);
    mn_batch pb;
    assert_int_equal(mn_loader_next(plain, &pb), MN_OK);
    assert_null(pb.carry);
    mn_loader_free(plain);
    free(want), free(got);
    mn_loader_free(a);
    mn_loader_free(l);
    mn_shard_close(s);
}

/* Windows of one episode of 7 turns with T = 3 start at 0, 3 and 4. */
static void test_loader_windows(void **state) {
    (void)state;
    mn_turn t[7];
    for (int k = 0; k < 7; k++)
        t[k] = (mn_turn){.speaker = k % 2 ? "B" : "A", .text = "hello", .session = 0};
    mn_turn t2[2] = {{.speaker = "A", .text = "hi"}, {.speaker = "B", .text = "hi"}};
    mn_dialogue items[2] = {{.id = "seven", .turns = t, .n_turns = 7},
                            {.id = "two", .turns = t2, .n_turns = 2}};
    mn_dialogue_list list = {.items = items, .count = 2, .capacity = 2};
    char path[256];
    tmp_path(path, sizeof path, "win.shard");
    mn_render_options ro = mn_render_options_default();
    assert_int_equal(mn_shard_write_dialogues(path, tok, &list, &ro, NULL), MN_OK);
    mn_shard *s;
    assert_int_equal(mn_shard_open(path, mn_tokenizer_hash(tok), &s), MN_OK);
    mn_loader_options o = {.B = 3, .T = 3, .max_len = 16, .seed = 1, .text_weight = 1,
                           .answer_weight = 1};
    mn_loader *l;
    assert_int_equal(mn_loader_create(s, &o, &l), MN_OK);
    assert_int_equal(mn_loader_n_windows(l), 3);
    assert_int_equal(mn_loader_skipped_episodes(l), 1);
    mn_batch b;
    assert_int_equal(mn_loader_next(l, &b), MN_OK);
    int seen = 0;
    for (int r = 0; r < 3; r++) {
        int64_t ep, first;
        mn_loader_window(l, r, &ep, &first);
        assert_int_equal(ep, 0);
        seen |= 1 << first;
    }
    assert_int_equal(seen, (1 << 0) | (1 << 3) | (1 << 4));
    mn_loader_free(l);
    mn_shard_close(s);
    unlink(path);
}

static void test_render_refusals(void **state) {
    (void)state;
    mn_tokenizer *g2;
    char v[1024], m[1024];
    const char *dir = getenv("MNEMO_FIXTURES");
    snprintf(v, sizeof v, "%s/gpt2_tok/vocab.json", dir ? dir : "tests/fixtures");
    snprintf(m, sizeof m, "%s/gpt2_tok/merges.txt", dir ? dir : "tests/fixtures");
    assert_int_equal(mn_tokenizer_load_gpt2(v, m, &g2), MN_OK);
    mn_token_corpus c = {0};
    mn_render_options o = mn_render_options_default();
    assert_int_equal(mn_render_dialogue(g2, &dialogue3, &o, &c, NULL, NULL), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "<|pad|>"));
    mn_tokenizer_free(g2);
    mn_dialogue empty = {.id = "empty", .turns = NULL, .n_turns = 0};
    assert_int_equal(mn_render_dialogue(tok, &empty, &o, &c, NULL, NULL), MN_ERR_INVALID_ARG);
    mn_token_corpus_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_layout),
        cmocka_unit_test(test_render_probe_turns),
        cmocka_unit_test(test_render_probe_exchange),
        cmocka_unit_test(test_split_long_turn),
        cmocka_unit_test(test_render_refusals),
        cmocka_unit_test(test_shard_round_trip),
        cmocka_unit_test(test_shard_refusals),
        cmocka_unit_test(test_loader_batches),
        cmocka_unit_test(test_loader_determinism_and_resume),
        cmocka_unit_test(test_loader_windows),
        cmocka_unit_test(test_loader_stream),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
