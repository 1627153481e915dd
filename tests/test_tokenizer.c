/* Byte-level BPE: pre-tokenizer, round trips on any bytes, GPT-2 ids against the tiktoken/HF
 * fixture (tests/fixtures/gpt2_tok, scripts/reference/gen_tokenizer_fixture.py), training
 * determinism, HDF5 save/load and hash, special tokens, bad GPT-2 files; a full disk while
 * saving a tokenizer or writing --ids-out leaves the old file and no HDF5 handle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>
#include <jansson.h>

#include "core/rng.h"
#include "text/tokenizer.h"

static char *fixture_path(const char *name) {
    const char *dir = getenv("MNEMO_FIXTURES");
    static char buf[4][1024];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, sizeof buf[0], "%s/gpt2_tok/%s", dir ? dir : "tests/fixtures", name);
    return b;
}

static mn_tokenizer *load_fixture_gpt2(void) {
    mn_tokenizer *tok = NULL;
    mn_status st = mn_tokenizer_load_gpt2(fixture_path("vocab.json"), fixture_path("merges.txt"), &tok);
    if (st != MN_OK)
        fprintf(stderr, "%s\n", mn_last_error());
    assert_int_equal(st, MN_OK);
    return tok;
}

/* A varied little corpus: words, numbers, punctuation, accents, CJK, repeated structure. */
static const char *const corpus[] = {
    "Hi! I just moved to Lisbon. Oh nice, how do you like it?",
    "I love it, the food is great and the weather's lovely. We're going to the beach tomorrow.",
    "Did you watch the game last night? The score was 21 to 17, what a finish!",
    "I'm not sure I'd like that; they've said it's the best movie of 2019.",
    "Café au lait, crème brûlée and a croissant, s'il vous plaît.",
    "東京は大きい都市です。 我喜欢学习中文。",
    "the the the the then there these those this that then than thank thanks",
    "   spaces   and\ttabs\nand newlines\n\n",
    "Hello hello HELLO hello, hello!!! ... ??? :-) ;-)",
    "12345 67890 3.14159 2,718 1e10 42nd 1st 2nd 3rd",
};
static const int n_corpus = (int)(sizeof corpus / sizeof corpus[0]);

static mn_tokenizer *train_corpus(int vocab) {
    mn_tokenizer *tok = NULL;
    assert_int_equal(mn_tokenizer_train_texts(corpus, NULL, n_corpus, vocab, &tok), MN_OK);
    return tok;
}

static void assert_round_trip(mn_tokenizer *tok, const char *bytes, size_t len) {
    mn_ids ids = {0};
    assert_int_equal(mn_tokenizer_encode(tok, bytes, len, &ids), MN_OK);
    char *out = NULL;
    size_t out_len = 0;
    assert_int_equal(mn_tokenizer_decode(tok, ids.ids, ids.count, &out, &out_len), MN_OK);
    assert_int_equal(out_len, len);
    assert_memory_equal(out, bytes, len);
    /* encoding never emits a special token */
    for (int64_t i = 0; i < ids.count; i++)
        for (int s = 0; s < MN_TOK_N_SPECIAL; s++)
            assert_int_not_equal(ids.ids[i], mn_tokenizer_special(tok, (mn_special)s));
    free(out);
    mn_ids_free(&ids);
}

/* ------------------------------------------------------------------ pre-tokenizer */
static void expect_pieces(const char *text, size_t len, const char *const *pieces, int n) {
    size_t pos = 0;
    int i = 0;
    while (pos < len) {
        size_t end = mn_pretokenize_next(text, len, pos);
        assert_true(end > pos);
        assert_true(i < n);
        assert_int_equal(end - pos, strlen(pieces[i]));
        assert_memory_equal(text + pos, pieces[i], end - pos);
        pos = end;
        i++;
    }
    assert_int_equal(i, n);
}

static void test_pretokenizer(void **state) {
    (void)state;
    const char *a[] = {"Hello", ",", " world", "!"};
    expect_pieces("Hello, world!", 13, a, 4);
    /* a whitespace run gives its last space to the next word */
    const char *b[] = {"a", "  ", " b"};
    expect_pieces("a   b", 5, b, 3);
    /* contractions; " 's" is punctuation then letters */
    const char *c[] = {"it", "'s", " I", "'ll", " '", "s"};
    expect_pieces("it's I'll 's", 12, c, 6);
    /* newline before a word is its own piece; trailing spaces stay together */
    const char *d[] = {"x", "\n", "y", "   "};
    expect_pieces("x\ny   ", 6, d, 4);
    /* letters/numbers by Unicode category: accented letters, Arabic-Indic digits, CJK */
    const char *e[] = {"café", " ١٢٣", " 東京"};
    expect_pieces("café ١٢٣ 東京", strlen("café ١٢٣ 東京"), e, 3);
    /* an invalid byte counts as an "other" character and joins punctuation */
    const char *f[] = {"ab", "\xff!", " \xfe", "c"};
    expect_pieces("ab\xff! \xfe" "c", 7, f, 4);
    /* NUL is an ordinary "other" character */
    const char g[] = {'a', '\0', 'b'};
    const char *gp[] = {"a", "", "b"};
    size_t pos = mn_pretokenize_next(g, 3, 0);
    assert_int_equal(pos, 1);
    assert_int_equal(mn_pretokenize_next(g, 3, 1), 2);
    assert_int_equal(mn_pretokenize_next(g, 3, 2), 3);
    (void)gp;
}

/* ------------------------------------------------------------------ GPT-2 fixture */
static void check_cases(mn_tokenizer *tok) {
    json_error_t err;
    json_t *root = json_load_file(fixture_path("cases.json"), JSON_ALLOW_NUL, &err);
    if (!root)
        fail_msg("cases.json: %s", err.text);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) >= 30);
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        json_t *text = json_object_get(c, "text");
        json_t *want = json_object_get(c, "ids");
        const char *t = json_string_value(text);
        size_t len = json_string_length(text);
        mn_ids ids = {0};
        assert_int_equal(mn_tokenizer_encode(tok, t, len, &ids), MN_OK);
        if ((size_t)ids.count != json_array_size(want))
            fail_msg("case %zu (%s): %lld ids, GPT-2 has %zu", i, t, (long long)ids.count,
                     json_array_size(want));
        for (int64_t k = 0; k < ids.count; k++)
            if (ids.ids[k] != json_integer_value(json_array_get(want, (size_t)k)))
                fail_msg("case %zu (%s): id %lld is %d, GPT-2 has %lld", i, t, (long long)k,
                         ids.ids[k], json_integer_value(json_array_get(want, (size_t)k)));
        assert_round_trip(tok, t, len);
        mn_ids_free(&ids);
    }
    json_decref(root);
}

static void test_gpt2_fixture_ids(void **state) {
    (void)state;
    mn_tokenizer *tok = load_fixture_gpt2();
    assert_string_equal(mn_tokenizer_kind(tok), "gpt2");
    assert_int_equal(mn_tokenizer_vocab_size(tok), 50257);
    assert_int_equal(mn_tokenizer_special(tok, MN_TOK_TURN), -1);
    check_cases(tok);
    /* encoding twice (warm cache) gives the same ids */
    check_cases(tok);
    /* GPT-2's byte tokens: '!' is 0, space is 220 ('Ġ'), newline 198 ('Ċ') */
    mn_ids ids = {0};
    assert_int_equal(mn_tokenizer_encode(tok, "!", 1, &ids), MN_OK);
    assert_int_equal(ids.ids[0], 0);
    ids.count = 0;
    assert_int_equal(mn_tokenizer_encode(tok, "\n", 1, &ids), MN_OK);
    assert_int_equal(ids.ids[0], 198);
    mn_ids_free(&ids);
    /* <|endoftext|> decodes to its text */
    int32_t eot = 50256;
    char *out;
    size_t n;
    assert_int_equal(mn_tokenizer_decode(tok, &eot, 1, &out, &n), MN_OK);
    assert_string_equal(out, "<|endoftext|>");
    free(out);
    /* an id the sparse fixture vocabulary lacks names no token */
    int32_t gap = 30000;
    assert_int_equal(mn_tokenizer_decode(tok, &gap, 1, &out, &n), MN_ERR_INVALID_ARG);
    int32_t big = 50257;
    assert_int_equal(mn_tokenizer_decode(tok, &big, 1, &out, &n), MN_ERR_INVALID_ARG);
    mn_tokenizer_free(tok);
}

/* The full GPT-2 files (scripts/reference/gen_tokenizer_fixture.py --full-dir DIR), when
 * MNEMO_GPT2_FULL names that folder. */
static void test_gpt2_full_optional(void **state) {
    (void)state;
    const char *dir = getenv("MNEMO_GPT2_FULL");
    if (!dir || !*dir) {
        skip();
        return;
    }
    char v[1024], m[1024];
    snprintf(v, sizeof v, "%s/vocab.json", dir);
    snprintf(m, sizeof m, "%s/merges.txt", dir);
    mn_tokenizer *tok;
    assert_int_equal(mn_tokenizer_load_gpt2(v, m, &tok), MN_OK);
    assert_int_equal(mn_tokenizer_n_merges(tok), 50000);
    check_cases(tok);
    mn_tokenizer_free(tok);
}

/* ------------------------------------------------------------------ round trips */
static void random_round_trips(mn_tokenizer *tok, uint64_t seed) {
    mn_rng rng;
    mn_rng_seed(&rng, seed);
    char buf[4096];
    static const char alphabet[] = "ab c\n\t'sd0é東\xff\x80\xc3";
    for (int iter = 0; iter < 400; iter++) {
        size_t len = (size_t)mn_rng_below(&rng, iter < 200 ? 64 : sizeof buf);
        int mode = (int)mn_rng_below(&rng, 3);
        for (size_t i = 0; i < len; i++) {
            if (mode == 0) /* any byte, NUL and invalid UTF-8 included */
                buf[i] = (char)mn_rng_below(&rng, 256);
            else if (mode == 1) /* bytes of a small alphabet: spaces, contractions, partial UTF-8 */
                buf[i] = alphabet[mn_rng_below(&rng, sizeof alphabet - 1)];
            else /* long runs, which take the heap path */
                buf[i] = (i / 97) % 2 ? ' ' : 'a';
        }
        assert_round_trip(tok, buf, len);
    }
    assert_round_trip(tok, "", 0);
}

static void test_round_trip_gpt2(void **state) {
    (void)state;
    mn_tokenizer *tok = load_fixture_gpt2();
    random_round_trips(tok, 1);
    mn_tokenizer_free(tok);
}

static void test_round_trip_trained(void **state) {
    (void)state;
    mn_tokenizer *tok = train_corpus(400);
    random_round_trips(tok, 2);
    for (int i = 0; i < n_corpus; i++)
        assert_round_trip(tok, corpus[i], strlen(corpus[i]));
    mn_tokenizer_free(tok);
}

/* The linear and heap merge paths agree: a long piece encodes like its repetitions. */
static void test_long_piece_matches_short(void **state) {
    (void)state;
    mn_tokenizer *tok = train_corpus(600);
    char longw[300];
    for (int i = 0; i < 300; i++)
        longw[i] = "thethen"[i % 7];
    mn_ids a = {0}, b = {0};
    assert_int_equal(mn_tokenizer_encode(tok, longw, 300, &a), MN_OK);
    /* reference: plain lowest-rank-first merging done here, with no cache or heap */
    int32_t sym[300];
    int n = 300;
    for (int i = 0; i < n; i++)
        sym[i] = (unsigned char)longw[i];
    for (;;) {
        int best = -1, at = -1;
        for (int i = 0; i + 1 < n; i++)
            for (int r = 0; r < mn_tokenizer_n_merges(tok); r++) {
                size_t la, lb, lc;
                const uint8_t *pa = mn_tokenizer_token_bytes(tok, sym[i], &la);
                const uint8_t *pb = mn_tokenizer_token_bytes(tok, sym[i + 1], &lb);
                const uint8_t *pc = mn_tokenizer_token_bytes(tok, MN_TOK_MERGE_BASE + r, &lc);
                if (lc == la + lb && !memcmp(pc, pa, la) && !memcmp(pc + la, pb, lb)) {
                    if (best < 0 || r < best) {
                        best = r;
                        at = i;
                    }
                    break;
                }
            }
        if (best < 0)
            break;
        sym[at] = MN_TOK_MERGE_BASE + best;
        memmove(sym + at + 1, sym + at + 2, (size_t)(n - at - 2) * sizeof *sym);
        n--;
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(mn_ids_push(&b, sym[i]), MN_OK);
    assert_int_equal(a.count, b.count);
    assert_memory_equal(a.ids, b.ids, (size_t)a.count * sizeof(int32_t));
    mn_ids_free(&a);
    mn_ids_free(&b);
    mn_tokenizer_free(tok);
}

/* ------------------------------------------------------------------ training */
static void test_train_determinism(void **state) {
    (void)state;
    mn_tokenizer *a = train_corpus(500), *b = train_corpus(500);
    assert_int_equal(mn_tokenizer_hash(a), mn_tokenizer_hash(b));
    assert_int_equal(mn_tokenizer_vocab_size(a), 500);
    /* the same texts in another order train the same tokenizer */
    const char *rev[64];
    for (int i = 0; i < n_corpus; i++)
        rev[i] = corpus[n_corpus - 1 - i];
    mn_tokenizer *c;
    assert_int_equal(mn_tokenizer_train_texts(rev, NULL, n_corpus, 500, &c), MN_OK);
    assert_int_equal(mn_tokenizer_hash(a), mn_tokenizer_hash(c));
    /* a different vocabulary size is a different tokenizer */
    mn_tokenizer *d = train_corpus(499);
    assert_int_not_equal(mn_tokenizer_hash(a), mn_tokenizer_hash(d));
    mn_tokenizer_free(a);
    mn_tokenizer_free(b);
    mn_tokenizer_free(c);
    mn_tokenizer_free(d);
}

/* Bit-identical results: the hashes the word-scanning trainer (before positions) learned from
 * this corpus, and from it plus runs where overlapping merges and long pieces matter. */
static void test_train_pinned_hashes(void **state) {
    (void)state;
    mn_tokenizer *tok = train_corpus(500);
    assert_int_equal(mn_tokenizer_hash(tok), 0x48e37a2f2a4554d3ull);
    mn_tokenizer_free(tok);
    char extra[1024];
    int n = snprintf(extra, sizeof extra, "aaaaaaa aaaa aaa abababab %300sx", "");
    for (int i = 0; i < 40; i++)
        n += snprintf(extra + n, sizeof extra - (size_t)n, "\xc3\xa9");
    n += snprintf(extra + n, sizeof extra - (size_t)n, " ");
    for (int i = 0; i < 200; i++)
        n += snprintf(extra + n, sizeof extra - (size_t)n, "ab");
    const char *texts[64];
    for (int i = 0; i < n_corpus; i++)
        texts[i] = corpus[i];
    texts[n_corpus] = extra;
    assert_int_equal(mn_tokenizer_train_texts(texts, NULL, n_corpus + 1, 1000, &tok), MN_OK);
    assert_int_equal(mn_tokenizer_n_merges(tok), 317);
    assert_int_equal(mn_tokenizer_hash(tok), 0x1241b208a2aba158ull);
    mn_tokenizer_free(tok);
}

/* Training is linear in the text, even in one endless pre-token (a 1 MB turn of one letter
 * took 32 s): the work, pair occurrences recorded and visited, stays within a few times the
 * text's bytes for one letter, one accented letter, one CJK character, and random letters
 * with no space, where every merge touches the one word. */
static void test_train_linear_in_one_long_word(void **state) {
    (void)state;
    const size_t n = 1 << 20;
    char *text = malloc(n);
    assert_non_null(text);
    const char *units[] = {"a", "\xc3\xa9", "\xe6\x9d\xb1", NULL};
    for (int u = 0; u < 4; u++) {
        size_t len = 0;
        if (units[u]) {
            size_t k = strlen(units[u]);
            for (; len + k <= n; len += k)
                memcpy(text + len, units[u], k);
        } else {
            mn_rng rng;
            mn_rng_seed(&rng, 7);
            for (; len < n; len++)
                text[len] = (char)('a' + mn_rng_next(&rng) % 26);
        }
        mn_bpe_counts *counts;
        assert_int_equal(mn_bpe_counts_create(&counts), MN_OK);
        assert_int_equal(mn_bpe_counts_add(counts, text, len), MN_OK);
        assert_int_equal(mn_bpe_counts_distinct(counts), 1);
        mn_tokenizer *tok;
        mn_bpe_train_stats stats;
        assert_int_equal(mn_tokenizer_train_with_stats(counts, 2000, &tok, &stats), MN_OK);
        assert_int_equal(stats.symbols, (int64_t)len);
        if (stats.steps > 6 * stats.symbols)
            fail_msg("unit %d: %lld steps of work for %lld bytes", u, (long long)stats.steps,
                     (long long)stats.symbols);
        assert_true(mn_tokenizer_n_merges(tok) > 0);
        /* a long word of the text encodes back to itself */
        assert_round_trip(tok, text, 100000);
        mn_tokenizer_free(tok);
        mn_bpe_counts_free(counts);
    }
    free(text);
}

static void test_train_merge_order(void **state) {
    (void)state;
    /* "ab" 3 times, "cd" and "xy" twice each (a tie broken by the smaller left id: 'c' < 'x') */
    const char *texts[] = {"ab ab ab", "xy cd", "cd xy"};
    mn_tokenizer *tok;
    assert_int_equal(mn_tokenizer_train_texts(texts, NULL, 3, MN_TOK_MERGE_BASE + 3, &tok), MN_OK);
    size_t len;
    const uint8_t *p = mn_tokenizer_token_bytes(tok, MN_TOK_MERGE_BASE, &len);
    assert_int_equal(len, 2);
    assert_memory_equal(p, "ab", 2);
    /* then (' ', ab), (c, d) and (x, y) count 2 each: the smaller left id wins each tie */
    p = mn_tokenizer_token_bytes(tok, MN_TOK_MERGE_BASE + 1, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(p, " ab", 3);
    p = mn_tokenizer_token_bytes(tok, MN_TOK_MERGE_BASE + 2, &len);
    assert_int_equal(len, 2);
    assert_memory_equal(p, "cd", 2);
    mn_tokenizer_free(tok);
    /* asking for more merges than pairs exist stops early with a smaller vocabulary */
    const char *tiny[] = {"abab"};
    assert_int_equal(mn_tokenizer_train_texts(tiny, NULL, 1, 4096, &tok), MN_OK);
    assert_true(mn_tokenizer_vocab_size(tok) < 4096);
    assert_true(mn_tokenizer_n_merges(tok) >= 2);
    assert_round_trip(tok, "abab", 4);
    mn_ids ids = {0};
    assert_int_equal(mn_tokenizer_encode(tok, "abab", 4, &ids), MN_OK);
    assert_int_equal(ids.count, 1);
    mn_ids_free(&ids);
    mn_tokenizer_free(tok);
    assert_int_equal(mn_tokenizer_train_texts(tiny, NULL, 1, 100, &tok), MN_ERR_INVALID_ARG);
}

/* Trained encodes compress: frequent words become single tokens. */
static void test_train_compresses(void **state) {
    (void)state;
    mn_tokenizer *tok = train_corpus(600);
    mn_ids ids = {0};
    assert_int_equal(mn_tokenizer_encode(tok, " hello the", 10, &ids), MN_OK);
    assert_true(ids.count <= 3);
    mn_ids_free(&ids);
    mn_tokenizer_free(tok);
}

/* ------------------------------------------------------------------ special tokens */
static void test_special_tokens(void **state) {
    (void)state;
    mn_tokenizer *tok = train_corpus(300);
    static const char *const texts[] = {"<|pad|>", "<|turn|>", "<|speaker_a|>",
                                        "<|speaker_b|>", "<|eot|>", "<|session|>"};
    for (int s = 0; s < MN_TOK_N_SPECIAL; s++) {
        int32_t id = mn_tokenizer_special(tok, (mn_special)s);
        assert_int_equal(id, MN_TOK_SPECIAL_BASE + s);
        assert_string_equal(mn_special_text((mn_special)s), texts[s]);
        char *out;
        size_t n;
        assert_int_equal(mn_tokenizer_decode(tok, &id, 1, &out, &n), MN_OK);
        assert_string_equal(out, texts[s]);
        free(out);
        /* the text of a special token encodes as ordinary bytes */
        assert_round_trip(tok, texts[s], strlen(texts[s]));
    }
    /* byte tokens are the byte values */
    for (int b = 0; b < 256; b++) {
        size_t n;
        const uint8_t *p = mn_tokenizer_token_bytes(tok, b, &n);
        assert_int_equal(n, 1);
        assert_int_equal(p[0], b);
    }
    mn_tokenizer_free(tok);
}

/* ------------------------------------------------------------------ save / load / hash */
static void tmp_path(char *buf, size_t cap, const char *suffix) {
    snprintf(buf, cap, "/tmp/mnemo_test_tok_%ld_%s", (long)getpid(), suffix);
}

static void test_save_load(void **state) {
    (void)state;
    char path[256];
    tmp_path(path, sizeof path, "a.h5");
    mn_tokenizer *tok = train_corpus(450);
    assert_int_equal(mn_tokenizer_save_file(tok, path), MN_OK);
    mn_tokenizer *back;
    assert_int_equal(mn_tokenizer_load_file(path, &back), MN_OK);
    assert_int_equal(mn_tokenizer_hash(back), mn_tokenizer_hash(tok));
    assert_int_equal(mn_tokenizer_vocab_size(back), 450);
    assert_string_equal(mn_tokenizer_kind(back), "mnemo-bpe");
    for (int i = 0; i < n_corpus; i++) {
        mn_ids x = {0}, y = {0};
        assert_int_equal(mn_tokenizer_encode(tok, corpus[i], strlen(corpus[i]), &x), MN_OK);
        assert_int_equal(mn_tokenizer_encode(back, corpus[i], strlen(corpus[i]), &y), MN_OK);
        assert_int_equal(x.count, y.count);
        assert_memory_equal(x.ids, y.ids, (size_t)x.count * sizeof(int32_t));
        mn_ids_free(&x);
        mn_ids_free(&y);
    }
    mn_tokenizer_free(back);

    /* into a group of a bigger file, next to other data (how checkpoints hold it) */
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t g = H5Gcreate2(f, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_int_equal(mn_tokenizer_save_h5(tok, g), MN_OK);
    assert_int_not_equal(mn_tokenizer_save_h5(tok, g), MN_OK); /* exists already */
    H5Gclose(g);
    H5Fclose(f);
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    g = H5Gopen2(f, "model", H5P_DEFAULT);
    assert_int_equal(mn_tokenizer_load_h5(g, path, &back), MN_OK);
    assert_int_equal(mn_tokenizer_hash(back), mn_tokenizer_hash(tok));
    mn_tokenizer_free(back);
    /* corrupt one byte of a merged token: the load refuses it, naming the file */
    hid_t d = H5Dopen2(g, "tokenizer/vocab_bytes", H5P_DEFAULT);
    hid_t space = H5Dget_space(d);
    hsize_t at = 300, one = 1;
    H5Sselect_elements(space, H5S_SELECT_SET, 1, &at);
    hid_t mem = H5Screate_simple(1, &one, NULL);
    uint8_t v = 0;
    H5Dread(d, H5T_NATIVE_UINT8, mem, space, H5P_DEFAULT, &v);
    v ^= 0x55;
    H5Dwrite(d, H5T_NATIVE_UINT8, mem, space, H5P_DEFAULT, &v);
    H5Sclose(mem);
    H5Sclose(space);
    H5Dclose(d);
    assert_int_equal(mn_tokenizer_load_h5(g, path, &back), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), path));
    H5Gclose(g);
    H5Fclose(f);
    /* not an HDF5 file; a missing file */
    FILE *t = fopen(path, "w");
    fputs("not hdf5", t);
    fclose(t);
    assert_int_equal(mn_tokenizer_load_file(path, &back), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), path));
    unlink(path);
    assert_int_equal(mn_tokenizer_load_file(path, &back), MN_ERR_IO);
    mn_tokenizer_free(tok);

    /* a GPT-2 tokenizer saves and loads too, with the same hash and ids */
    mn_tokenizer *g2 = load_fixture_gpt2();
    assert_int_equal(mn_tokenizer_save_file(g2, path), MN_OK);
    assert_int_equal(mn_tokenizer_load_file(path, &back), MN_OK);
    assert_int_equal(mn_tokenizer_hash(back), mn_tokenizer_hash(g2));
    assert_string_equal(mn_tokenizer_kind(back), "gpt2");
    check_cases(back);
    mn_tokenizer_free(back);
    mn_tokenizer_free(g2);
    unlink(path);
}

/* Every byte of a tokenizer file, flipped: refused before HDF5 parses anything (the file's
 * digest), never a crash, never a tokenizer that differs; a file without the trailer (an HDF5
 * file as older versions wrote them, or a damaged one) is refused, not parsed. */
static void test_file_byte_flips(void **state) {
    (void)state;
    char path[256], flip[256];
    tmp_path(path, sizeof path, "flip.h5");
    tmp_path(flip, sizeof flip, "flipped.h5");
    mn_tokenizer *tok = train_corpus(300);
    assert_int_equal(mn_tokenizer_save_file(tok, path), MN_OK);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *bytes = malloc((size_t)size);
    assert_int_equal(fread(bytes, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    int accepted = 0;
    for (long i = 0; i < size; i++) {
        bytes[i] ^= 0x01;
        f = fopen(flip, "wb");
        assert_int_equal(fwrite(bytes, 1, (size_t)size, f), (size_t)size);
        fclose(f);
        bytes[i] ^= 0x01;
        mn_tokenizer *back = NULL;
        mn_status st = mn_tokenizer_load_file(flip, &back);
        if (st == MN_OK) { /* only a harmless flip may load: the same tokenizer */
            assert_int_equal(mn_tokenizer_hash(back), mn_tokenizer_hash(tok));
            accepted++;
            mn_tokenizer_free(back);
        } else {
            assert_int_equal(st, MN_ERR_FORMAT);
            assert_non_null(strstr(mn_last_error(), flip));
        }
        assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
    }
    assert_int_equal(accepted, 0); /* the digest covers every byte */
    /* the HDF5 part alone (the trailer of no ranges is 5 x 8 bytes), as tokenizer files were
     * written before it */
    f = fopen(flip, "wb");
    assert_int_equal(fwrite(bytes, 1, (size_t)size - 40, f), (size_t)size - 40);
    fclose(f);
    mn_tokenizer *back = NULL;
    assert_int_equal(mn_tokenizer_load_file(flip, &back), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "no integrity trailer"));
    free(bytes);
    unlink(flip);
    unlink(path);
    mn_tokenizer_free(tok);
}

/* ------------------------------------------------------------------ a full disk */
static char *read_whole(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 20);
    assert_non_null(buf);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

/* Entries of dir whose name starts with prefix (temp files left behind). */
static int count_prefixed(const char *dir, const char *prefix) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -1 '%s' | grep -c '^%s'", dir, prefix);
    FILE *p = popen(cmd, "r");
    int n = -1;
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

/* Makes the next writes past `bytes` fail with EFBIG, as a full disk would (SIGXFSZ ignored,
 * which an exec'd child inherits). */
static void limit_file_size(rlim_t bytes) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit r = {bytes, bytes};
    if (setrlimit(RLIMIT_FSIZE, &r) != 0)
        _exit(90);
}

/* The tokenizer file is built in memory and renamed into place: a write that fails leaves the
 * old file, no temp file and no open HDF5 object, and the process exits cleanly (HDF5 used
 * to crash at exit closing the file it could not flush). */
static void test_save_on_full_disk(void **state) {
    (void)state;
    char dir[] = "/tmp/mnemo_tok_full_XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tok.h5", dir);
    mn_tokenizer *old = train_corpus(300), *tok = train_corpus(800);
    assert_int_equal(mn_tokenizer_save_file(old, path), MN_OK);
    size_t old_len, new_len;
    char *before = read_whole(path, &old_len);
    assert_non_null(before);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        limit_file_size(2048);
        mn_status st = mn_tokenizer_save_file(tok, path);
        if (st != MN_ERR_IO)
            _exit(1);
        if (!strstr(mn_last_error(), path) || !strstr(mn_last_error(), strerror(EFBIG))) {
            fprintf(stderr, "unexpected message: %s\n", mn_last_error());
            _exit(2);
        }
        if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != 0)
            _exit(3);
        exit(0); /* HDF5's exit handler runs: it must find nothing left to close */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the child %s %d", WIFEXITED(status) ? "exited" : "died of signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    char *after = read_whole(path, &new_len);
    assert_int_equal(new_len, old_len);
    assert_memory_equal(after, before, old_len);
    assert_int_equal(count_prefixed(dir, "tok.h5.tmp"), 0);
    /* and without the limit the new tokenizer replaces the old one */
    assert_int_equal(mn_tokenizer_save_file(tok, path), MN_OK);
    mn_tokenizer *back;
    assert_int_equal(mn_tokenizer_load_file(path, &back), MN_OK);
    assert_int_equal(mn_tokenizer_hash(back), mn_tokenizer_hash(tok));
    assert_int_equal(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
    mn_tokenizer_free(back);
    free(before);
    free(after);
    mn_tokenizer_free(old);
    mn_tokenizer_free(tok);
    unlink(path);
    rmdir(dir);
}

/* mnemo tokenizer --encode --ids-out on a full disk: exit 1 naming the file and the cause,
 * the old file intact, no partial or temp file. */
static void test_ids_out_on_full_disk(void **state) {
    (void)state;
    const char *bin = getenv("MNEMO_BIN");
    if (!bin)
        skip();
    char dir[] = "/tmp/mnemo_ids_full_XXXXXX", tok_path[256], text_path[256], ids_path[256],
         err_path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(tok_path, sizeof tok_path, "%s/tok.h5", dir);
    snprintf(text_path, sizeof text_path, "%s/text.txt", dir);
    snprintf(ids_path, sizeof ids_path, "%s/ids.bin", dir);
    snprintf(err_path, sizeof err_path, "%s/err", dir);
    mn_tokenizer *tok = train_corpus(300);
    assert_int_equal(mn_tokenizer_save_file(tok, tok_path), MN_OK);
    mn_tokenizer_free(tok);
    FILE *f = fopen(text_path, "w");
    for (int i = 0; i < 2000; i++)
        fputs(corpus[i % n_corpus], f);
    fclose(f);
    f = fopen(ids_path, "w");
    fputs("old ids", f);
    fclose(f);
    for (int limited = 1; limited >= 0; limited--) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            if (!freopen(err_path, "w", stderr) || !freopen("/dev/null", "w", stdout))
                _exit(91);
            if (limited)
                limit_file_size(4096);
            execl(bin, bin, "tokenizer", "--encode", "--tokenizer", tok_path, "--file", text_path,
                  "--ids-out", ids_path, (char *)NULL);
            _exit(92);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        size_t len = 0;
        char *ids = read_whole(ids_path, &len);
        assert_non_null(ids);
        if (limited) {
            size_t err_len = 0;
            char *err = read_whole(err_path, &err_len);
            err[err_len < (1 << 20) ? err_len : (1 << 20) - 1] = '\0';
            if (WEXITSTATUS(status) != 1 || !strstr(err, ids_path) || !strstr(err, strerror(EFBIG)))
                fail_msg("exit %d, stderr: %s", WEXITSTATUS(status), err);
            free(err);
            assert_int_equal(len, 7);
            assert_memory_equal(ids, "old ids", 7);
            assert_int_equal(count_prefixed(dir, "ids.bin.tmp"), 0);
        } else {
            assert_int_equal(WEXITSTATUS(status), 0);
            assert_true(len > 4096 && len % 4 == 0);
        }
        free(ids);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ------------------------------------------------------------------ bad GPT-2 files */
static mn_status load_bufs(const char *vocab, const char *merges) {
    mn_tokenizer *tok = NULL;
    mn_status st = mn_tokenizer_load_gpt2_buffers(vocab, strlen(vocab), merges, strlen(merges),
                                                  "v.json", "m.txt", &tok);
    mn_tokenizer_free(tok);
    return st;
}

static char *byte_vocab(const char *extra) {
    /* the 256 byte tokens with GPT-2's byte-to-unicode mapping, ids 0..255 in byte order */
    static char buf[8192];
    size_t n = 0;
    n += (size_t)snprintf(buf + n, sizeof buf - n, "{");
    int extra_cp = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = printable ? b : 256 + extra_cp++;
        char u[8];
        if (cp < 0x80) {
            if (cp == '"' || cp == '\\')
                snprintf(u, sizeof u, "\\%c", cp);
            else
                snprintf(u, sizeof u, "%c", cp);
        } else {
            snprintf(u, sizeof u, "%c%c", 0xC0 | (cp >> 6), 0x80 | (cp & 0x3F));
        }
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\"%s\":%d", b ? "," : "", u, b);
    }
    snprintf(buf + n, sizeof buf - n, "%s}", extra);
    return buf;
}

static void test_bad_gpt2_files(void **state) {
    (void)state;
    /* a minimal valid pair: bytes plus "ab" */
    assert_int_equal(load_bufs(byte_vocab(",\"ab\":256"), "#version: 0.2\na b\n"), MN_OK);
    assert_int_equal(load_bufs("{not json", "a b\n"), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "v.json"));
    assert_int_equal(load_bufs("[1,2]", ""), MN_ERR_FORMAT);
    assert_int_equal(load_bufs(byte_vocab(",\"ab\":\"x\""), ""), MN_ERR_FORMAT);
    assert_int_equal(load_bufs(byte_vocab(",\"ab\":12"), ""), MN_ERR_FORMAT); /* id reused */
    assert_int_equal(load_bufs(byte_vocab(",\"ab\":-1"), ""), MN_ERR_FORMAT);
    /* merge whose result is missing from the vocabulary, with file:line */
    assert_int_equal(load_bufs(byte_vocab(",\"ab\":256"), "#version: 0.2\na b\nc d\n"), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "m.txt:3"));
    assert_int_equal(load_bufs(byte_vocab(",\"ab\":256"), "a b c\n"), MN_ERR_FORMAT);
    assert_int_equal(load_bufs(byte_vocab(",\"ab\":256"), "ab\n"), MN_ERR_FORMAT);
    assert_int_equal(load_bufs(byte_vocab(",\"ab\":256"), "a b\na b\n"), MN_ERR_FORMAT); /* repeated */
    /* a byte without a token */
    assert_int_equal(load_bufs("{\"a\":300}", ""), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "no token for byte"));
    /* a key that is not byte-level text (U+4E00 is outside the mapping) */
    assert_int_equal(load_bufs(byte_vocab(",\"\xe4\xb8\x80\":256"), ""), MN_ERR_FORMAT);
    /* missing files name themselves */
    mn_tokenizer *tok;
    assert_int_equal(mn_tokenizer_load_gpt2("/nonexistent/vocab.json", fixture_path("merges.txt"), &tok),
                     MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "/nonexistent/vocab.json"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pretokenizer),
        cmocka_unit_test(test_gpt2_fixture_ids),
        cmocka_unit_test(test_gpt2_full_optional),
        cmocka_unit_test(test_round_trip_gpt2),
        cmocka_unit_test(test_round_trip_trained),
        cmocka_unit_test(test_long_piece_matches_short),
        cmocka_unit_test(test_train_determinism),
        cmocka_unit_test(test_train_merge_order),
        cmocka_unit_test(test_train_linear_in_one_long_word),
        cmocka_unit_test(test_train_pinned_hashes),
        cmocka_unit_test(test_train_compresses),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_file_byte_flips),
        cmocka_unit_test(test_save_on_full_disk),
        cmocka_unit_test(test_ids_out_on_full_disk),
        cmocka_unit_test(test_bad_gpt2_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
