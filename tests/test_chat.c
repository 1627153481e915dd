/* The session commands end to end, through the mnemo binary ($MNEMO_BIN): import-gpt2 on the
 * HF fixture; chat writing R to a store after every turn, a second run continuing from the
 * saved R (replayed exactly from the --trace of the token pieces fed to the compressor), a
 * new session id starting from R_0, a foreign compressor refused, /quit and /state from a
 * pipe; the turn rendering with mnemo's special tokens; the exchange protocol (the reply decoded
 * with the user's turn in the decoder's pass, as the shard's probe exchanges) and
 * --question-in-state; `mnemo sessions`. */
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/checkpoint.h"
#include "core/h5util.h"
#include "mnemo.h"
#include "model/chat.h"
#include "text/shard.h"
#include "text/text_util.h"
#include "text/tokenizer.h"

static void ok(mn_status st) {
    if (st != MN_OK)
        fail_msg("%s: %s", mn_status_name(st), mn_last_error());
}

static char tmpdir[256];

/* Paths stay valid for the whole run (freed at teardown). */
static char *tmp_paths[1024];
static int n_tmp_paths;

static const char *tmp(const char *name) {
    char *p = malloc(strlen(tmpdir) + strlen(name) + 2);
    sprintf(p, "%s/%s", tmpdir, name);
    if (n_tmp_paths == 1024)
        fail_msg("too many paths");
    tmp_paths[n_tmp_paths++] = p;
    return p;
}

static const char *fx(const char *name) {
    static char paths[8][4096];
    static int next;
    char *p = paths[next++ % 8];
    const char *dir = getenv("MNEMO_FIXTURES");
    snprintf(p, 4096, "%s/gpt2_tiny/%s", dir ? dir : "tests/fixtures", name);
    return p;
}

static const char *mnemo_bin(void) {
    const char *b = getenv("MNEMO_BIN");
    return b ? b : "build/train/mnemo";
}

/* Runs mnemo with args (NULL-terminated), feeding `input` on stdin; stdout and stderr go to
 * tmp files out.txt / err.txt. Returns the exit code. */
static int run(const char *input, ...) {
    const char *argv[64];
    int n = 0;
    argv[n++] = mnemo_bin();
    va_list ap;
    va_start(ap, input);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 63)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    FILE *in = fopen(tmp("in.txt"), "w");
    fputs(input ? input : "", in);
    fclose(in);
    pid_t pid = fork();
    if (pid == 0) {
        int i = open(tmp("in.txt"), O_RDONLY), o = open(tmp("out.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(tmp("err.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(i, 0), dup2(o, 1), dup2(e, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = calloc((size_t)n + 1, 1);
    if (fread(s, 1, (size_t)n, f) != (size_t)n)
        s[0] = '\0';
    fclose(f);
    return s;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void assert_output_has(const char *file, const char *needle) {
    char *s = slurp(tmp(file));
    if (!strstr(s, needle))
        fail_msg("%s lacks '%s':\n%s", file, needle, s);
    free(s);
}

static mn_model *load_checkpoint(const char *path) {
    mn_config c;
    mn_model *m = NULL;
    ok(mn_checkpoint_read_config(path, &c));
    ok(mn_model_create(&c, &m));
    ok(mn_checkpoint_load(path, m, NULL, NULL, NULL));
    return m;
}

typedef struct {
    int turns, pieces, longest_piece;
    int32_t first_piece[8];
    char last_hash[17]; /* XXH64 of R after the last turn, as the chat process had it */
} replay_stats;

/* Applies every piece of every trace line (of `session`) to r in order. */
static replay_stats replay(mn_model *m, const char *trace, const char *session, float *r, int from_line) {
    replay_stats st = {0};
    FILE *f = fopen(trace, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    int no = 0;
    while (getline(&line, &cap, f) > 0) {
        if (no++ < from_line)
            continue;
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        if (strcmp(json_string_value(json_object_get(j, "session")), session)) {
            json_decref(j);
            continue;
        }
        json_t *pieces = json_object_get(j, "pieces");
        for (size_t p = 0; p < json_array_size(pieces); p++) {
            json_t *ids = json_array_get(pieces, p);
            int n = (int)json_array_size(ids);
            int32_t *t = malloc((size_t)n * sizeof *t);
            for (int i = 0; i < n; i++)
                t[i] = (int32_t)json_integer_value(json_array_get(ids, (size_t)i));
            if (st.pieces == 0) /* a user turn that shares the reply's pass has none */
                for (int i = 0; i < n && i < 8; i++)
                    st.first_piece[i] = t[i];
            ok(mn_update(m, t, n, r, r));
            st.pieces++;
            if (n > st.longest_piece)
                st.longest_piece = n;
            free(t);
        }
        snprintf(st.last_hash, sizeof st.last_hash, "%s", json_string_value(json_object_get(j, "r_xxh64")));
        st.turns++;
        json_decref(j);
    }
    free(line);
    fclose(f);
    return st;
}

/* The saved R is bit for bit the R the chat process had after its last turn. */
static void assert_saved_is_last(const float *r, size_t S, const replay_stats *rs) {
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)mn_xxh64(r, S * sizeof *r, 0));
    assert_string_equal(hash, rs->last_hash);
}

/* Largest |a - b| relative to the state's scale. The replay runs in this process, the chat in
 * another: BLAS may round the last bits differently, so replays agree to 1e-5, not bitwise. */
static double state_diff(const float *a, const float *b, size_t S) {
    double d = 0, scale = 1e-30;
    for (size_t i = 0; i < S; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return d / scale;
}

static int lines_in(const char *path) {
    char *s = slurp(path);
    int n = count_lines(s);
    free(s);
    return n;
}

static void stored_state(const char *store, const char *id, uint64_t fp, float *r, int64_t *turns) {
    mn_session_store *s = NULL;
    mn_session_info info;
    int found = 0;
    ok(mn_session_store_open(store, 0, 0, 0, &s));
    ok(mn_session_get(s, id, fp, r, &info, &found));
    assert_int_equal(found, 1);
    *turns = info.turns;
    mn_session_store_close(s);
}

/* ---------------------------------------------------------------- import-gpt2 */
static void test_import_gpt2_cli(void **state) {
    (void)state;
    /* bad usage and a bad file: exit codes 2 and 1, the file named */
    assert_int_equal(run(NULL, "import-gpt2", "--safetensors", fx("model.safetensors"), "-o", tmp("x.h5"), NULL), 2);
    assert_int_equal(run(NULL, "import-gpt2", "--safetensors", fx("vocab.json"), "--vocab", fx("vocab.json"),
                         "--merges", fx("merges.txt"), "-o", tmp("x.h5"), NULL),
                     1);
    assert_output_has("err.txt", "vocab.json: header length");
    assert_int_equal(access(tmp("x.h5"), F_OK), -1);

    assert_int_equal(run(NULL, "import-gpt2", "--safetensors", fx("model.safetensors"), "--vocab", fx("vocab.json"),
                         "--merges", fx("merges.txt"), "--config", fx("config.json"), "--slots", "4",
                         "--max-turn-tokens", "60", "--comp-layers", "1", "-o", tmp("base.h5"), NULL),
                     0);
    assert_output_has("out.txt", "2 layers, n_embd 32, 4 heads (from config.json)");
    /* the checkpoint holds the HF decoder: its memory-free logits are HF's */
    mn_model *m = load_checkpoint(tmp("base.h5"));
    hid_t f;
    ok(mn_h5_open_read(fx("reference.h5"), &f));
    size_t n = 0;
    ok(mn_h5_dataset_size(f, "reference.h5", "case0/ids", &n));
    int32_t ids[64];
    ok(mn_h5_read_ints(f, "reference.h5", "case0/ids", ids, n));
    const int V = mn_model_config(m)->vocab_size;
    float *want = malloc(n * V * sizeof *want), *got = malloc(n * V * sizeof *got);
    ok(mn_h5_read_floats(f, "reference.h5", "case0/logits", want, n * V));
    ok(mn_logits_no_memory(m, ids, (int)n, got));
    for (size_t i = 0; i < n * V; i++)
        assert_true(fabs((double)got[i] - want[i]) <= 1e-4 * (fabs(want[i]) + 0.1));
    free(want), free(got);
    H5Fclose(f);
    /* and the tokenizer: GPT-2's files, no mnemo special tokens */
    mn_tokenizer *tok = NULL;
    ok(mn_checkpoint_load_tokenizer(tmp("base.h5"), &tok));
    assert_non_null(tok);
    assert_string_equal(mn_tokenizer_kind(tok), "gpt2");
    mn_tokenizer_free(tok);
    mn_model_free(m);

    /* another write rule for the fresh memory; the same decoder */
    assert_int_equal(run(NULL, "import-gpt2", "--safetensors", fx("model.safetensors"), "--vocab", fx("vocab.json"),
                         "--merges", fx("merges.txt"), "--config", fx("config.json"), "--slots", "4", "--max-turn-tokens", "60", "--write-rule",
                         "delta", "-o", tmp("delta.h5"), NULL),
                     0);
    m = load_checkpoint(tmp("delta.h5"));
    assert_int_equal(mn_model_config(m)->write_rule, MN_WRITE_DELTA);
    mn_tensor_info t;
    ok(mn_model_find_tensor(m, "memory.write.diag", &t));
    mn_model_free(m);
    assert_int_equal(run(NULL, "import-gpt2", "--write-rule", "deltas", NULL), 2);
    assert_output_has("err.txt", "--write-rule wants gate, slot or delta, got 'deltas'");
}

/* ---------------------------------------------------------------- chat, GPT-2 base (plain text) */
static void test_chat_continues_from_saved_state(void **state) {
    (void)state;
    const char *base = tmp("base.h5"), *store = tmp("chat.h5"), *trace = tmp("trace.jsonl");
    if (access(base, F_OK) != 0)
        fail_msg("needs the checkpoint of test_import_gpt2_cli");
    mn_model *m = load_checkpoint(base);
    uint64_t fp = mn_model_fingerprint(m);
    size_t S = mn_state_floats(m);
    float *r = malloc(S * sizeof *r), *want = malloc(S * sizeof *want), *r0 = malloc(S * sizeof *r0);
    ok(mn_initial_state(m, r0));
    int64_t turns = 0;

    /* first conversation: two exchanges, greedy */
    assert_int_equal(run("Hi! I just moved to Lisbon.\n\nThe meeting moved to Thursday.\n", "chat", "--checkpoint",
                         base, "--store", store, "--session", "alice", "--stdin", "--temperature", "0", "--max-tokens",
                         "12", "--trace", trace, NULL),
                     0);
    char *out = slurp(tmp("out.txt"));
    assert_int_equal(count_lines(out), 2); /* one reply per turn; the empty line is no turn */
    free(out);
    assert_int_equal(lines_in(trace), 4);  /* user, model, user, model */
    memcpy(want, r0, S * sizeof *r0);
    replay_stats rs = replay(m, trace, "alice", want, 0);
    assert_int_equal(rs.turns, 4);
    stored_state(store, "alice", fp, r, &turns);
    assert_int_equal(turns, 4);
    assert_saved_is_last(r, S, &rs);      /* the saved R is the R after the last turn */
    assert_true(state_diff(r, want, S) < 1e-5); /* ... which the traced turns reproduce */

    /* days later: the same session continues from the saved R */
    float *after_first = malloc(S * sizeof *after_first);
    memcpy(after_first, r, S * sizeof *r);
    assert_int_equal(run("Where did I move to?\n", "chat", "--checkpoint", base, "--store", store, "--session", "alice",
                         "--stdin", "--temperature", "0", "--max-tokens", "12", "--trace", trace, NULL),
                     0);
    assert_int_equal(lines_in(trace), 6);
    memcpy(want, after_first, S * sizeof *want);
    rs = replay(m, trace, "alice", want, 4);
    assert_int_equal(rs.turns, 2);
    /* plain-text format: a returning session opens with a blank line, like <|session|> */
    mn_tokenizer *tok = NULL;
    ok(mn_checkpoint_load_tokenizer(base, &tok));
    mn_ids nl = {0};
    ok(mn_tokenizer_encode(tok, "\n", 1, &nl));
    int32_t newline = nl.ids[0];
    assert_int_equal(rs.first_piece[0], newline);
    mn_ids_free(&nl);
    mn_tokenizer_free(tok);
    stored_state(store, "alice", fp, r, &turns);
    assert_int_equal(turns, 6);
    assert_saved_is_last(r, S, &rs);
    assert_true(state_diff(r, want, S) < 1e-5);
    /* ... and not from R_0: the same turns from R_0 give another state */
    memcpy(want, r0, S * sizeof *want);
    replay(m, trace, "alice", want, 4);
    assert_true(state_diff(r, want, S) > 1e-3);

    /* another session id starts from R_0 and leaves alice alone */
    assert_int_equal(run("Hello, I am Bob.\n", "chat", "--checkpoint", base, "--store", store, "--session", "bob",
                         "--stdin", "--temperature", "0.9", "--top-k", "20", "--top-p", "0.9", "--seed", "7",
                         "--trace", trace, NULL),
                     0);
    memcpy(want, r0, S * sizeof *want);
    rs = replay(m, trace, "bob", want, 0);
    assert_int_equal(rs.turns, 2);
    assert_int_not_equal(rs.first_piece[0], newline); /* a new session opens with "A:", no blank line */
    stored_state(store, "bob", fp, r, &turns);
    assert_int_equal(turns, 2);
    assert_saved_is_last(r, S, &rs);
    assert_true(state_diff(r, want, S) < 1e-5);
    float *alice = malloc(S * sizeof *alice);
    stored_state(store, "alice", fp, alice, &turns);
    assert_int_equal(turns, 6);

    /* the store, as the sessions command shows it */
    assert_int_equal(run(NULL, "sessions", "--store", store, "list", NULL), 0);
    assert_output_has("out.txt", "alice\t6 turns");
    assert_output_has("out.txt", "bob\t2 turns");
    assert_int_equal(run(NULL, "sessions", "--store", store, "show", "nobody", NULL), 1);

    /* a checkpoint with another compressor may not read alice's state */
    assert_int_equal(run(NULL, "import-gpt2", "--safetensors", fx("model.safetensors"), "--vocab", fx("vocab.json"),
                         "--merges", fx("merges.txt"), "--config", fx("config.json"), "--slots", "4",
                         "--max-turn-tokens", "60", "--comp-layers", "1", "--seed", "2", "-o", tmp("other.h5"), NULL),
                     0);
    assert_int_equal(run("Hello?\n", "chat", "--checkpoint", tmp("other.h5"), "--store", store, "--session", "alice",
                         "--stdin", NULL),
                     1);
    assert_output_has("err.txt", "another compressor");
    float *still = malloc(S * sizeof *still);
    stored_state(store, "alice", fp, still, &turns);
    assert_memory_equal(still, alice, S * sizeof *still);
    assert_int_equal(turns, 6);
    assert_int_equal(run(NULL, "sessions", "--store", store, "delete", "bob", NULL), 0);
    assert_int_equal(run(NULL, "sessions", "--store", store, "list", NULL), 0);
    char *listing = slurp(tmp("out.txt"));
    assert_null(strstr(listing, "bob"));
    free(listing);
    free(r), free(want), free(r0), free(after_first), free(alice), free(still);
    mn_model_free(m);
}

/* Commands work without a terminal, with --stdin or without: /state prints the state on
 * stderr and is no turn, //text is the turn "/text", /quit ends the chat (the line after it is
 * never read as a turn); an unknown command is named and skipped. */
static void test_chat_commands_from_a_pipe(void **state) {
    (void)state;
    const char *base = tmp("base.h5");
    if (access(base, F_OK) != 0)
        fail_msg("needs the checkpoint of test_import_gpt2_cli");
    mn_model *m = load_checkpoint(base);
    uint64_t fp = mn_model_fingerprint(m);
    float *r = malloc(mn_state_floats(m) * sizeof *r);
    for (int with_stdin = 0; with_stdin < 2; with_stdin++) {
        const char *store = tmp(with_stdin ? "cmd-stdin.h5" : "cmd-pipe.h5");
        const char *trace = tmp(with_stdin ? "cmd-stdin.jsonl" : "cmd-pipe.jsonl");
        assert_int_equal(run("Hello there.\n/state\n/bogus\n//etc is a folder\n/quit\nNever sent.\n", "chat",
                             "--checkpoint", base, "--store", store, "--session", "dora", "--temperature", "0",
                             "--max-tokens", "4", "--trace", trace, with_stdin ? "--stdin" : NULL, NULL),
                         0);
        char *out = slurp(tmp("out.txt"));
        assert_int_equal(count_lines(out), 2); /* a reply to each of the two turns */
        free(out);
        assert_output_has("err.txt", "session 'dora': 2 turns, |R| = ");
        assert_output_has("err.txt", "unknown command '/bogus'");
        char *traced = slurp(trace);
        assert_int_equal(count_lines(traced), 4); /* user, model, user, model */
        assert_non_null(strstr(traced, "\"/etc is a folder\""));
        assert_null(strstr(traced, "Never sent"));
        assert_null(strstr(traced, "/quit"));
        assert_null(strstr(traced, "/state"));
        free(traced);
        int64_t turns = 0;
        stored_state(store, "dora", fp, r, &turns);
        assert_int_equal(turns, 4);
    }
    free(r);
    mn_model_free(m);
}

/* ---------------------------------------------------------------- chat with mnemo's special tokens */
/* A tokenizer with mnemo's special tokens trained on five texts (300 tokens at most), and an
 * untrained tiny model on it with turns of N tokens, initialised from seed. */
static mn_model *bpe_chat_model(const char *const texts[5], int N, uint64_t seed, mn_tokenizer **tok) {
    ok(mn_tokenizer_train_texts(texts, NULL, 5, 300, tok));
    mn_config c = {.vocab_size = mn_tokenizer_vocab_size(*tok), .d_model = 16, .n_heads = 2, .n_layers = 1,
                   .n_comp_layers = 1, .n_slots = 2, .max_turn_tokens = N, .gate_bias_init = -1.0f};
    mn_model *m = NULL;
    ok(mn_model_create(&c, &m));
    ok(mn_model_init(m, seed));
    return m;
}

static void test_chat_special_tokens(void **state) {
    (void)state;
    const char *texts[] = {"Hi! I just moved to Lisbon.", "How do you like it?", "The tram is lovely, the flat tiny.",
                           "My sister works at the aquarium.", "Remember: Thursday at nine, room B-204."};
    mn_tokenizer *tok = NULL;
    mn_model *m = bpe_chat_model(texts, 12, 3, &tok);
    const mn_config c = *mn_model_config(m);
    mn_checkpoint_save_options so = {.tokenizer = tok};
    ok(mn_checkpoint_save(tmp("bpe.h5"), m, NULL, NULL, &so));
    const char *store = tmp("bpe-store.h5"), *trace = tmp("bpe-trace.jsonl");
    const char *long_turn = "Remember: the meeting moved from Tuesday to Thursday at nine, in room B-204 upstairs.\n";
    assert_int_equal(run(long_turn, "chat", "--checkpoint", tmp("bpe.h5"), "--store", store, "--session", "carol",
                         "--stdin", "--seed", "5", "--max-tokens", "6", "--trace", trace, NULL),
                     0);
    size_t S = mn_state_floats(m);
    float *r = malloc(S * sizeof *r), *want = malloc(S * sizeof *want);
    ok(mn_initial_state(m, want));
    replay_stats rs = replay(m, trace, "carol", want, 0);
    int64_t turns;
    stored_state(store, "carol", mn_model_fingerprint(m), r, &turns);
    assert_int_equal(turns, 2);
    assert_saved_is_last(r, S, &rs);
    assert_true(state_diff(r, want, S) < 1e-5);
    /* a long turn is split into pieces of at most N tokens, each opening with <|turn|> <|speaker_a|> */
    assert_true(rs.pieces >= 3);
    assert_true(rs.longest_piece <= c.max_turn_tokens);
    assert_int_equal(rs.first_piece[0], mn_tokenizer_special(tok, MN_TOK_TURN));
    assert_int_equal(rs.first_piece[1], mn_tokenizer_special(tok, MN_TOK_SPEAKER_A));
    /* the reply is one piece opening with <|turn|> <|speaker_b|> and closed by <|eot|> */
    FILE *f = fopen(trace, "r");
    char *line = NULL;
    size_t cap = 0;
    int32_t eot = mn_tokenizer_special(tok, MN_TOK_EOT);
    for (int no = 0; getline(&line, &cap, f) > 0; no++) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *pieces = json_object_get(j, "pieces");
        json_t *lastp = json_array_get(pieces, json_array_size(pieces) - 1);
        assert_int_equal(json_integer_value(json_array_get(lastp, json_array_size(lastp) - 1)), eot);
        if (no == 1) {
            assert_string_equal(json_string_value(json_object_get(j, "role")), "model");
            assert_int_equal(json_array_size(pieces), 1);
            assert_int_equal(json_integer_value(json_array_get(lastp, 1)), mn_tokenizer_special(tok, MN_TOK_SPEAKER_B));
            assert_true(json_array_size(lastp) <= 2 + 6 + 1);
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    /* coming back: the first piece opens with <|session|> */
    assert_int_equal(run("And where?\n", "chat", "--checkpoint", tmp("bpe.h5"), "--store", store, "--session",
                         "carol", "--stdin", "--seed", "6", "--trace", trace, NULL),
                     0);
    memcpy(want, r, S * sizeof *r);
    rs = replay(m, trace, "carol", want, 2);
    assert_int_equal(rs.first_piece[0], mn_tokenizer_special(tok, MN_TOK_SESSION));
    assert_int_equal(rs.first_piece[1], mn_tokenizer_special(tok, MN_TOK_TURN));
    stored_state(store, "carol", mn_model_fingerprint(m), r, &turns);
    assert_int_equal(turns, 4);
    assert_saved_is_last(r, S, &rs);
    assert_true(state_diff(r, want, S) < 1e-5);
    free(r), free(want);
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

/* ---------------------------------------------------------------- the exchange protocol */
typedef struct {
    int n_lines;
    int n_pieces[8];      /* per trace line */
    int32_t piece[8][64]; /* the last piece of each line */
    int piece_len[8];
    char hash[8][17];     /* r_xxh64 */
} trace_lines;

static trace_lines read_trace(const char *path) {
    trace_lines t = {0};
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0 && t.n_lines < 8) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        json_t *pieces = json_object_get(j, "pieces");
        int k = t.n_lines++;
        t.n_pieces[k] = (int)json_array_size(pieces);
        json_t *last = json_array_get(pieces, json_array_size(pieces) - 1);
        for (size_t i = 0; last && i < json_array_size(last) && i < 64; i++)
            t.piece[k][t.piece_len[k]++] = (int32_t)json_integer_value(json_array_get(last, i));
        snprintf(t.hash[k], sizeof t.hash[k], "%s", json_string_value(json_object_get(j, "r_xxh64")));
        json_decref(j);
    }
    free(line);
    fclose(f);
    return t;
}

static void assert_hash_of(const float *r, size_t S, const char *want) {
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)mn_xxh64(r, S * sizeof *r, 0));
    assert_string_equal(hash, want);
}

/* The exchange turn the shard renders for a probe asked by A (question) and answered by B, up to
 * its answer: what the decoder must read before the reply. */
static int shard_exchange_head(mn_tokenizer *tok, const char *question, int32_t *out) {
    mn_turn turns[] = {{.speaker = "user", .text = "Hello."}, {.speaker = "model", .text = "Hi."}};
    mn_probe probe = {.after = 2, .speaker = "user", .question = (char *)question, .answer = "fine"};
    mn_dialogue d = {.id = "x", .turns = turns, .n_turns = 2, .probes = &probe, .n_probes = 1};
    mn_render_options o = mn_render_options_default();
    o.probe_exchange = 1;
    mn_token_corpus c = {0};
    ok(mn_render_dialogue(tok, &d, &o, &c, NULL, NULL));
    assert_int_equal(c.n_turns, 3);
    assert_int_equal(c.turn_flags[2] & (MN_TURN_QUESTION | MN_TURN_ANSWER), MN_TURN_QUESTION | MN_TURN_ANSWER);
    int n = 0;
    for (int64_t i = c.turn_start[2]; i < c.turn_start[3]; i++)
        if (!(c.token_flags[i] & MN_TOKEN_ANSWER))
            out[n++] = c.tokens[i];
    mn_token_corpus_free(&c);
    return n;
}

/* The reply as the library's inference calls give it: the decoder reads r and the prefix, and
 * each next token is drawn from mn_next_logits with the chat's sampler and rng; closed by
 * <|eot|>. Returns the turn's length. */
static int decode_reply(mn_model *m, const float *r, int32_t *turn, int n, int max_reply, int32_t eot,
                        const mn_sampling *sp, uint64_t *rng) {
    const mn_config *c = mn_model_config(m);
    int limit = n + max_reply < c->max_turn_tokens - 1 ? n + max_reply : c->max_turn_tokens - 1;
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    int stopped = 0;
    while (n < limit && !stopped) {
        ok(mn_next_logits(m, turn, n, r, logits));
        ok(mn_sample(logits, c->vocab_size, sp, rng, &turn[n]));
        stopped = turn[n++] == eot;
    }
    if (!stopped)
        turn[n++] = eot;
    free(logits);
    return n;
}

/* Default: the reply is decoded over [R, the user's turn and the reply's header as the shard
 * renders a probe exchange, the reply so far], and R then reads that exchange as one turn.
 * question_in_state: the user's turn into R first, the reply from R and <|turn|> <|speaker_b|>.
 * A user turn too long to share the pass with the reply falls back to the latter. The reply is
 * sampled (temperature 1, no top-k or top-p), so every token it draws depends on the whole
 * distribution: the same draws from the library's calls mean the same logits. */
static void test_chat_exchange_protocol(void **state) {
    (void)state;
    const char *texts[] = {"Hi! I just moved to Lisbon.", "How do you like it?", "The tram is lovely, the flat tiny.",
                           "My dog is called Pretzel.", "What is my dog called?"};
    mn_tokenizer *tok = NULL;
    mn_model *m = bpe_chat_model(texts, 32, 5, &tok);
    const mn_config c = *mn_model_config(m);
    const size_t S = mn_state_floats(m);
    const int32_t turn = mn_tokenizer_special(tok, MN_TOK_TURN), spk_a = mn_tokenizer_special(tok, MN_TOK_SPEAKER_A),
                  spk_b = mn_tokenizer_special(tok, MN_TOK_SPEAKER_B), eot = mn_tokenizer_special(tok, MN_TOK_EOT);
    const char *said[] = {"My dog is called Pretzel.", "What is my dog called?",
                          /* too long to leave the reply 6 of the turn's 32 tokens: read into R first */
                          "The tram is lovely, the flat is tiny, and my dog Pretzel likes the river walk by the old tower."};
    float *r = malloc(S * sizeof *r), *r_in = malloc(S * sizeof *r_in);
    for (int qis = 0; qis < 2; qis++) {
        mn_chat_options o = mn_chat_options_default();
        o.sampling = (mn_sampling){1.0f, 0, 1.0f};
        o.seed = 11;
        o.max_reply = 6;
        o.question_in_state = qis;
        const char *trace = tmp(qis ? "qis-trace.jsonl" : "exchange-trace.jsonl");
        o.trace = fopen(trace, "w");
        mn_chat *chat = NULL;
        ok(mn_chat_open(m, tok, tmp("exchange-store.h5"), qis ? "old" : "new", &o, &chat));
        char *replies[3];
        for (int e = 0; e < 3; e++)
            ok(mn_chat_exchange(chat, said[e], &replies[e]));
        mn_chat_close(chat);
        fclose(o.trace);
        trace_lines t = read_trace(trace);
        assert_int_equal(t.n_lines, 6);

        uint64_t rng = 11;
        ok(mn_initial_state(m, r));
        for (int e = 0; e < 3; e++) {
            int32_t want[64];
            int n = 0;
            memcpy(r_in, r, S * sizeof *r);
            if (qis || e == 2) {
                /* the user's turn: pieces of at most N tokens into R, then the reply's header */
                mn_ids body = {0};
                ok(mn_tokenizer_encode(tok, said[e], strlen(said[e]), &body));
                int pieces = 0;
                for (int64_t at = 0; at < body.count; pieces++) {
                    int32_t piece[64] = {turn, spk_a};
                    int k = 2;
                    while (at < body.count && k < c.max_turn_tokens - 1)
                        piece[k++] = body.ids[at++];
                    if (at == body.count)
                        piece[k++] = eot;
                    ok(mn_update(m, piece, k, r, r));
                }
                mn_ids_free(&body);
                assert_int_equal(t.n_pieces[2 * e], pieces);
                assert_hash_of(r, S, t.hash[2 * e]);
                want[n++] = turn;
                want[n++] = spk_b;
            } else {
                n = shard_exchange_head(tok, said[e], want);
                assert_int_equal(t.n_pieces[2 * e], 0); /* nothing into R before the reply */
                assert_hash_of(r, S, t.hash[2 * e]);
            }
            const int head = n;
            n = decode_reply(m, r, want, n, o.max_reply, eot, &o.sampling, &rng);
            /* what the chat read into R after its reply: the same tokens, one piece */
            assert_int_equal(t.n_pieces[2 * e + 1], 1);
            assert_int_equal(t.piece_len[2 * e + 1], n);
            assert_memory_equal(t.piece[2 * e + 1], want, (size_t)n * sizeof(int32_t));
            ok(mn_update(m, want, n, r, r));
            assert_hash_of(r, S, t.hash[2 * e + 1]);
            /* the reply's text is what the decoder wrote after the head (invalid bytes repaired) */
            char *text = NULL;
            size_t len = 0;
            ok(mn_tokenizer_decode(tok, want + head, n - 1 - head, &text, &len));
            const char *shown = text[0] == ' ' ? text + 1 : text;
            char *repaired = mn_utf8_repair(shown, strlen(shown), NULL, NULL);
            assert_string_equal(replies[e], repaired);
            free(text), free(repaired);
            free(replies[e]);
            /* the control: the other protocol would have read another context (else this test
             * could not tell them apart) */
            if (e == 0) {
                float *la = malloc((size_t)c.vocab_size * sizeof *la), *lb = malloc((size_t)c.vocab_size * sizeof *lb);
                int32_t hdr[2] = {turn, spk_b};
                ok(mn_next_logits(m, want, head, r_in, la));
                float *r_read = malloc(S * sizeof *r_read);
                int32_t user[64] = {turn, spk_a};
                mn_ids body = {0};
                ok(mn_tokenizer_encode(tok, said[0], strlen(said[0]), &body));
                memcpy(user + 2, body.ids, (size_t)body.count * sizeof(int32_t));
                user[2 + body.count] = eot;
                ok(mn_update(m, user, 3 + (int)body.count, r_in, r_read));
                ok(mn_next_logits(m, hdr, 2, r_read, lb));
                double d = 0;
                for (int v = 0; v < c.vocab_size; v++)
                    d = fmax(d, fabs((double)la[v] - lb[v]));
                assert_true(d > 1e-3);
                mn_ids_free(&body);
                free(la), free(lb), free(r_read);
            }
        }
    }
    free(r), free(r_in);

    /* the CLI: the exchange by default, --question-in-state reads the user's turn first */
    mn_checkpoint_save_options so = {.tokenizer = tok};
    ok(mn_checkpoint_save(tmp("exchange.h5"), m, NULL, NULL, &so));
    for (int qis = 0; qis < 2; qis++) {
        const char *trace = tmp(qis ? "cli-qis.jsonl" : "cli-exchange.jsonl");
        assert_int_equal(run("My dog is called Pretzel.\n", "chat", "--checkpoint", tmp("exchange.h5"), "--store",
                             tmp("cli-store.h5"), "--session", qis ? "old" : "new", "--stdin", "--temperature", "0",
                             "--max-tokens", "6", "--trace", trace, qis ? "--question-in-state" : NULL, NULL),
                         0);
        trace_lines t = read_trace(trace);
        assert_int_equal(t.n_lines, 2);
        assert_int_equal(t.n_pieces[0], qis ? 1 : 0);
        int32_t head[64];
        int n = shard_exchange_head(tok, "My dog is called Pretzel.", head);
        if (qis)
            assert_int_equal(t.piece[1][1], spk_b); /* the reply alone: <|turn|> <|speaker_b|> ... */
        else
            assert_memory_equal(t.piece[1], head, (size_t)n * sizeof(int32_t));
    }
    mn_model_free(m);
    mn_tokenizer_free(tok);
}

/* ---------------------------------------------------------------- train --base --freeze-decoder */
/* XXH64 of the bytes of every tensor whose name starts with one of the prefixes. */
static uint64_t tensors_hash(mn_model *m, const char *const *prefixes, int n_prefixes) {
    mn_xxh64_state h;
    mn_xxh64_init(&h, 0);
    const float *p = mn_model_params(m);
    for (int i = 0; i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        ok(mn_model_tensor(m, i, &t));
        for (int j = 0; j < n_prefixes; j++)
            if (!strncmp(t.name, prefixes[j], strlen(prefixes[j]))) {
                mn_xxh64_update(&h, t.name, strlen(t.name));
                mn_xxh64_update(&h, p + t.offset, t.size * sizeof(float));
                break;
            }
    }
    return mn_xxh64_digest(&h);
}

/* --freeze-decoder trains the compressor and memory only, --freeze-compressor the decoder's
 * blocks only (wte, read by both, frozen in both); the control, neither, moves both. */
static void test_train_freeze_decoder(void **state) {
    (void)state;
    const char *base = tmp("base.h5");
    if (access(base, F_OK) != 0)
        fail_msg("needs the checkpoint of test_import_gpt2_cli");
    const char *decoder[] = {"decoder."}, *memory[] = {"compressor.", "memory."}, *embeddings[] = {"wte"};
    mn_model *b = load_checkpoint(base);
    uint64_t dec0 = tensors_hash(b, decoder, 1), mem0 = tensors_hash(b, memory, 2), wte0 = tensors_hash(b, embeddings, 1);
    mn_model_free(b);
    const char *settings[] = {"--freeze-decoder", "--freeze-compressor", NULL};
    for (int i = 0; i < 3; i++) {
        const char *flag = settings[i];
        const char *run_dir = tmp(i == 0 ? "run-frozen" : i == 1 ? "run-reading" : "run-free");
#define TRAIN_ARGS "train", "--base", base, "--task", "recall", "--steps", "5", "--batch", "2", "--turns", "4", \
                   "--bptt", "4", "--warmup-steps", "1", "--eval-interval", "0", "--eval-probes", "4", \
                   "--eval-batches", "1", "--threads", "1", "--device", "cpu", "--run-dir", run_dir
        int rc = flag ? run(NULL, TRAIN_ARGS, flag, NULL) : run(NULL, TRAIN_ARGS, NULL);
#undef TRAIN_ARGS
        if (rc != 0) {
            char *err = slurp(tmp("err.txt"));
            fail_msg("mnemo train %s exited %d: %s", flag ? flag : "", rc, err);
        }
        char ckpt[600];
        snprintf(ckpt, sizeof ckpt, "%s/ckpt-00000005.h5", run_dir);
        mn_model *t = load_checkpoint(ckpt);
        uint64_t dec = tensors_hash(t, decoder, 1), mem = tensors_hash(t, memory, 2), wte = tensors_hash(t, embeddings, 1);
        mn_model_free(t);
        assert_true((dec != dec0) == (i != 0)); /* the decoder trains unless frozen */
        assert_true((mem != mem0) == (i != 1)); /* the compressor and memory train unless frozen */
        assert_true((wte != wte0) == (i == 2)); /* wte only when neither is frozen */
    }
    const char *run_dir = tmp("run-both");
    int rc = run(NULL, "train", "--base", base, "--task", "recall", "--steps", "5", "--freeze-decoder",
                 "--freeze-compressor", "--run-dir", run_dir, NULL);
    assert_int_not_equal(rc, 0); /* both: refused, nothing left to train */
    char *err = slurp(tmp("err.txt"));
    assert_non_null(strstr(err, "freeze_compressor"));
    free(err);
}

static int setup(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/mnemo-chat-XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    for (int i = 0; i < n_tmp_paths; i++)
        free(tmp_paths[i]);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_gpt2_cli),
        cmocka_unit_test(test_chat_continues_from_saved_state),
        cmocka_unit_test(test_chat_commands_from_a_pipe),
        cmocka_unit_test(test_chat_special_tokens),
        cmocka_unit_test(test_chat_exchange_protocol),
        cmocka_unit_test(test_train_freeze_decoder),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
