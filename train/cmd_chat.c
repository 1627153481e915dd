/* mnemo chat: a conversation whose memory is the session vector R, kept in a session store.
 * Each user turn and each generated reply goes through the compressor (mn_update), and R is
 * saved after each; the decoder writes the reply reading only R and the reply so far. Coming
 * back to a session id continues from its saved R. Turns are rendered as in training
 * (docs/tokens.md): [<|session|>] <|turn|> <|speaker_a|> text <|eot|> for the user,
 * <|turn|> <|speaker_b|> ... <|eot|> for the model; a tokenizer without mnemo's special tokens
 * (GPT-2's) gets plain text instead: "A: text\n" and "B: reply\n". */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "io/checkpoint.h"
#include "text/tokenizer.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo chat --checkpoint C --store S --session ID [--temperature T] [--top-k K] [--top-p P]\n"
            "                  [--seed N] [--max-tokens N] [--stdin] [--trace FILE]\n"
            "A conversation with memory: R is updated after every turn (yours and the model's) and saved\n"
            "in the session store S (created if missing) under ID; running it again with the same ID\n"
            "continues from the saved R, another ID starts from R_0.\n"
            "  --temperature T   sampling temperature, 0 = greedy (default 0.8)\n"
            "  --top-k K         sample among the K most likely tokens, 0 = all (default 40)\n"
            "  --top-p P         nucleus: the smallest set with probability >= P (default 0.95)\n"
            "  --seed N          sampling seed (default: from the clock)\n"
            "  --max-tokens N    longest reply in tokens (default 64; at most the model's turn length)\n"
            "  --stdin           non-interactive: one turn per input line, one reply per output line\n"
            "  --trace FILE      append a JSON line per turn: role, text, the token pieces fed to the\n"
            "                    compressor (to replay the session's R) and an XXH64 of R after it\n"
            "Interactive commands: /quit, /state.\n");
}

typedef struct {
    mn_model *model;
    mn_tokenizer *tok;
    mn_session_store *store;
    const char *session;
    uint64_t fingerprint;
    int N, specials;
    int32_t turn, speaker_a, speaker_b, eot, session_tok;
    int32_t *stops; /* what ends a reply */
    int n_stops;
    float *r;
    int64_t turns;
    mn_sampling sampling;
    uint64_t rng;
    int max_reply;
    FILE *trace;
    int32_t *buf;   /* N tokens */
} chat;

/* ---------------------------------------------------------------- turns */
/* Length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there are not one. */
static int utf8_seq(const unsigned char *s) {
    if (s[0] < 0x80)
        return 1;
    int n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
    if (n == 0 || (n == 3 && s[0] > 0xef))
        return 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    /* overlong, surrogate and beyond-U+10FFFF forms */
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) || (s[0] == 0xf0 && s[1] < 0x90) ||
        (s[0] == 0xf4 && s[1] >= 0x90))
        return 0;
    return n;
}

/* A copy with every invalid byte replaced by U+FFFD: sampled tokens can split characters. */
static char *valid_utf8(const char *text) {
    size_t n = strlen(text);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)text; *p;) {
        int k = utf8_seq(p);
        if (k) {
            memcpy(o, p, (size_t)k), o += k, p += k;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3), o += 3, p++;
        }
    }
    *o = '\0';
    return out;
}

static int trace_turn(chat *c, const char *role, const char *text, json_t *pieces) {
    if (!c->trace) {
        json_decref(pieces);
        return 1;
    }
    char *clean = valid_utf8(text);
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
    if (!ok)
        fprintf(stderr, "mnemo chat: cannot write the trace (disk full, or a session id that is not UTF-8?)\n");
    return ok;
}

static json_t *ids_json(const int32_t *ids, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* One turn into R, then R into the store. */
static int absorb(chat *c, const int32_t *ids, int n, json_t *pieces) {
    if (mn_update(c->model, ids, n, c->r, c->r) != MN_OK) {
        fprintf(stderr, "mnemo chat: %s\n", mn_last_error());
        return 0;
    }
    json_array_append_new(pieces, ids_json(ids, n));
    return 1;
}

static int save(chat *c) {
    if (mn_session_put(c->store, c->session, c->fingerprint, c->r, c->turns) != MN_OK) {
        fprintf(stderr, "mnemo chat: %s (the session keeps its previous state)\n", mn_last_error());
        return 0;
    }
    return 1;
}

/* The user's turn: split, like the training renderer, into pieces of at most N tokens that
 * each start with <|turn|> <|speaker_a|>; only the first carries <|session|>, only the last <|eot|>. */
static int user_turn(chat *c, const char *text, int new_session) {
    mn_ids body = {0};
    char *plain = NULL;
    mn_status st;
    if (c->specials) {
        st = mn_tokenizer_encode(c->tok, text, strlen(text), &body);
    } else {
        size_t len = strlen(text) + 8;
        plain = malloc(len);
        if (!plain)
            return 0;
        snprintf(plain, len, "A: %s\n", text);
        if (new_session) /* a blank line marks the break where special tokens would */
            memmove(plain + 1, plain, strlen(plain) + 1), plain[0] = '\n';
        st = mn_tokenizer_encode(c->tok, plain, strlen(plain), &body);
        free(plain);
    }
    if (st != MN_OK) {
        fprintf(stderr, "mnemo chat: %s\n", mn_last_error());
        mn_ids_free(&body);
        return 0;
    }
    json_t *pieces = json_array();
    int ok = 1;
    int64_t at = 0;
    int first = 1;
    do {
        int n = 0;
        if (c->specials) {
            if (first && new_session)
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
            ok = absorb(c, c->buf, n, pieces);
        first = 0;
    } while (ok && at < body.count);
    mn_ids_free(&body);
    c->turns++;
    return trace_turn(c, "user", text, pieces) && ok && save(c);
}

/* The model's turn: generate reading R, then feed the reply back through the compressor. */
static int model_turn(chat *c, char **reply) {
    mn_ids prefix = {0};
    int n_prefix = 0;
    if (c->specials) {
        c->buf[0] = c->turn;
        c->buf[1] = c->speaker_b;
        n_prefix = 2;
    } else {
        if (mn_tokenizer_encode(c->tok, "B:", 2, &prefix) != MN_OK) {
            fprintf(stderr, "mnemo chat: %s\n", mn_last_error());
            return 0;
        }
        n_prefix = (int)prefix.count;
        memcpy(c->buf, prefix.ids, (size_t)n_prefix * sizeof(int32_t));
        mn_ids_free(&prefix);
    }
    /* room for the closing <|eot|> (or newline) if the limit cuts the reply */
    int limit = n_prefix + c->max_reply < c->N - 1 ? n_prefix + c->max_reply : c->N - 1;
    int n = 0;
    if (mn_generate(c->model, c->r, c->buf, n_prefix, limit, c->stops, c->n_stops, &c->sampling, &c->rng, c->buf,
                    &n) != MN_OK) {
        fprintf(stderr, "mnemo chat: %s\n", mn_last_error());
        return 0;
    }
    int stopped = 0;
    for (int i = 0; i < c->n_stops; i++)
        stopped |= n > n_prefix && c->buf[n - 1] == c->stops[i];
    int text_end = stopped ? n - 1 : n;
    size_t len = 0;
    *reply = NULL;
    if (mn_tokenizer_decode(c->tok, c->buf + n_prefix, text_end - n_prefix, reply, &len) != MN_OK) {
        fprintf(stderr, "mnemo chat: %s\n", mn_last_error());
        return 0;
    }
    if (!c->specials) { /* the newline that stopped it may sit inside the last token */
        char *nl = strchr(*reply, '\n');
        if (nl)
            *nl = '\0';
        if (!stopped)
            c->buf[n++] = c->stops[0];
    } else if (!stopped) {
        c->buf[n++] = c->eot;
    }
    json_t *pieces = json_array();
    int ok = absorb(c, c->buf, n, pieces);
    c->turns++;
    const char *shown = (*reply)[0] == ' ' ? *reply + 1 : *reply;
    return trace_turn(c, "model", shown, pieces) && ok && save(c);
}

/* The reply's stop set: <|eot|>, or for plain text every token holding a newline plus
 * <|endoftext|> when the vocabulary has it. */
static int build_stops(chat *c) {
    int V = mn_tokenizer_vocab_size(c->tok);
    c->stops = malloc((size_t)(V + 1) * sizeof *c->stops);
    if (!c->stops)
        return 0;
    if (c->specials) {
        c->stops[c->n_stops++] = c->eot;
        return 1;
    }
    mn_ids nl = {0};
    if (mn_tokenizer_encode(c->tok, "\n", 1, &nl) != MN_OK || nl.count != 1) {
        mn_ids_free(&nl);
        fprintf(stderr, "mnemo chat: the tokenizer has no single token for a newline\n");
        return 0;
    }
    c->stops[c->n_stops++] = nl.ids[0]; /* first: what closes a reply cut by the limit */
    mn_ids_free(&nl);
    for (int32_t id = 0; id < V; id++) {
        size_t len = 0;
        const uint8_t *b = mn_tokenizer_token_bytes(c->tok, id, &len);
        if (id != c->stops[0] && b &&
            (memchr(b, '\n', len) || (len == 13 && !memcmp(b, "<|endoftext|>", 13))))
            c->stops[c->n_stops++] = id;
    }
    return 1;
}

/* ---------------------------------------------------------------- the command */
static int parse_num(const char *opt, const char *arg, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || !*arg || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "mnemo chat: --%s needs a number in [%g, %g], got '%s'\n", opt, lo, hi, arg);
        return 0;
    }
    *out = v;
    return 1;
}

static int load_model(const char *path, chat *c) {
    mn_config cfg;
    if (mn_checkpoint_read_config(path, &cfg) != MN_OK || mn_model_create(&cfg, &c->model) != MN_OK ||
        mn_checkpoint_load(path, c->model, NULL, NULL, NULL) != MN_OK ||
        mn_checkpoint_load_tokenizer(path, &c->tok) != MN_OK) {
        fprintf(stderr, "mnemo chat: %s\n", mn_last_error());
        return 0;
    }
    if (!c->tok) {
        fprintf(stderr, "mnemo chat: %s holds no tokenizer; chat needs one to read and write text\n", path);
        return 0;
    }
    if (mn_tokenizer_vocab_size(c->tok) > cfg.vocab_size) {
        fprintf(stderr, "mnemo chat: %s: the tokenizer has %d tokens, the model %d\n", path,
                mn_tokenizer_vocab_size(c->tok), cfg.vocab_size);
        return 0;
    }
    c->N = cfg.max_turn_tokens;
    c->turn = mn_tokenizer_special(c->tok, MN_TOK_TURN);
    c->speaker_a = mn_tokenizer_special(c->tok, MN_TOK_SPEAKER_A);
    c->speaker_b = mn_tokenizer_special(c->tok, MN_TOK_SPEAKER_B);
    c->eot = mn_tokenizer_special(c->tok, MN_TOK_EOT);
    c->session_tok = mn_tokenizer_special(c->tok, MN_TOK_SESSION);
    c->specials = c->turn >= 0 && c->speaker_a >= 0 && c->speaker_b >= 0 && c->eot >= 0 && c->session_tok >= 0;
    if (c->N < 8) {
        fprintf(stderr, "mnemo chat: turns of %d tokens are too short to talk in\n", c->N);
        return 0;
    }
    return 1;
}

int cmd_chat(int argc, char **argv) {
    const char *checkpoint = NULL, *store_path = NULL, *trace_path = NULL;
    chat c = {0};
    c.sampling = (mn_sampling){0.8f, 40, 0.95f};
    c.max_reply = 64;
    int from_stdin = 0, seeded = 0;
    double v;
    static const struct option options[] = {
        {"checkpoint", required_argument, 0, 'c'}, {"store", required_argument, 0, 'S'},
        {"session", required_argument, 0, 'i'},    {"temperature", required_argument, 0, 't'},
        {"top-k", required_argument, 0, 'k'},      {"top-p", required_argument, 0, 'p'},
        {"seed", required_argument, 0, 's'},       {"max-tokens", required_argument, 0, 'n'},
        {"stdin", no_argument, 0, 'I'},            {"trace", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (opt) {
        case 'c': checkpoint = optarg; break;
        case 'S': store_path = optarg; break;
        case 'i': c.session = optarg; break;
        case 't': if (!parse_num("temperature", optarg, 0, 100, &v)) return 2; c.sampling.temperature = (float)v; break;
        case 'k':
            if (!parse_num("top-k", optarg, 0, INT_MAX, &v))
                return 2;
            if (v != floor(v)) {
                fprintf(stderr, "mnemo chat: --top-k needs a whole number, got '%s'\n", optarg);
                return 2;
            }
            c.sampling.top_k = (int)v;
            break;
        case 'p': if (!parse_num("top-p", optarg, 1e-6, 1, &v)) return 2; c.sampling.top_p = (float)v; break;
        case 's': if (!parse_num("seed", optarg, 0, 9007199254740992.0, &v)) return 2; c.rng = (uint64_t)v; seeded = 1; break;
        case 'n': if (!parse_num("max-tokens", optarg, 1, 1 << 20, &v)) return 2; c.max_reply = (int)v; break;
        case 'I': from_stdin = 1; break;
        case 'T': trace_path = optarg; break;
        case 'h': usage(stdout); return 0;
        case ':': fprintf(stderr, "mnemo chat: %s needs a value\n", argv[optind - 1]); return 2;
        default: fprintf(stderr, "mnemo chat: unknown option '%s'\n", argv[optind - 1]); usage(stderr); return 2;
        }
    }
    if (optind < argc || !checkpoint || !store_path || !c.session) {
        fprintf(stderr, "mnemo chat: needs --checkpoint, --store and --session\n");
        usage(stderr);
        return 2;
    }
    if (!seeded) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        c.rng = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    int rc = 1;
    char *line = NULL, *reply = NULL;
    size_t cap = 0;
    if (!load_model(checkpoint, &c) || !build_stops(&c))
        goto done;
    const mn_config *cfg = mn_model_config(c.model);
    c.fingerprint = mn_model_fingerprint(c.model);
    c.r = malloc(mn_state_floats(c.model) * sizeof *c.r);
    c.buf = malloc((size_t)c.N * sizeof *c.buf);
    if (!c.r || !c.buf) {
        fprintf(stderr, "mnemo chat: out of memory\n");
        goto done;
    }
    if (trace_path && !(c.trace = fopen(trace_path, "a"))) {
        fprintf(stderr, "mnemo chat: %s: %s\n", trace_path, strerror(errno));
        goto done;
    }
    mn_session_info info;
    int found = 0;
    if (mn_session_store_open(store_path, MN_STORE_WRITE | MN_STORE_CREATE, cfg->n_slots, cfg->d_model, &c.store) !=
            MN_OK ||
        mn_session_get(c.store, c.session, c.fingerprint, c.r, &info, &found) != MN_OK ||
        (!found && mn_initial_state(c.model, c.r) != MN_OK)) {
        fprintf(stderr, "mnemo chat: %s\n", mn_last_error());
        goto done;
    }
    c.turns = found ? info.turns : 0;
    int interactive = !from_stdin && isatty(STDIN_FILENO);
    if (interactive)
        fprintf(stderr, "session '%s': %s (%s format). /quit ends, /state shows the memory.\n", c.session,
                found ? "continuing from its saved memory" : "new, starting from R_0",
                c.specials ? "mnemo" : "plain-text");
    int new_session = found && c.turns > 0; /* coming back later is a new session of the conversation */
    for (;;) {
        if (interactive) {
            fputs("you> ", stdout);
            fflush(stdout);
        }
        ssize_t got = getline(&line, &cap, stdin);
        if (got < 0)
            break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = '\0';
        if (got == 0)
            continue;
        if (interactive && line[0] == '/') {
            if (!strcmp(line, "/quit"))
                break;
            if (!strcmp(line, "/state")) {
                double norm = 0;
                for (size_t i = 0; i < mn_state_floats(c.model); i++)
                    norm += (double)c.r[i] * c.r[i];
                fprintf(stderr, "session '%s': %" PRId64 " turns, |R| = %.4f, fingerprint %016" PRIx64 "\n",
                        c.session, c.turns, sqrt(norm), c.fingerprint);
            } else {
                fprintf(stderr, "commands: /quit, /state\n");
            }
            continue;
        }
        if (!user_turn(&c, line, new_session) || !model_turn(&c, &reply))
            goto done;
        new_session = 0;
        char *clean = valid_utf8(reply);
        if (!clean) {
            fprintf(stderr, "mnemo chat: out of memory\n");
            goto done;
        }
        free(reply);
        reply = clean;
        char *shown = reply[0] == ' ' ? reply + 1 : reply;
        if (!interactive) /* one reply per output line, whatever the model wrote */
            for (char *p = shown; *p; p++)
                if (*p == '\n' || *p == '\r')
                    *p = ' ';
        printf(interactive ? "model> %s\n" : "%s\n", shown);
        fflush(stdout);
        free(reply);
        reply = NULL;
    }
    rc = 0;
done:
    free(line);
    free(reply);
    free(c.r);
    free(c.buf);
    free(c.stops);
    if (c.trace)
        fclose(c.trace);
    mn_session_store_close(c.store);
    mn_tokenizer_free(c.tok);
    mn_model_free(c.model);
    return rc;
}
