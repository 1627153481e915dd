/* mnemo chat: a conversation whose memory is the session vector R, kept in a session store
 * (the conversation itself: src/model/chat.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"
#include "commands.h"
#include "io/checkpoint.h"
#include "model/chat.h"
#include "model/model_internal.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo chat --checkpoint C --store S --session ID [--temperature T] [--top-k K] [--top-p P]\n"
            "                  [--seed N] [--max-tokens N] [--question-in-state] [--stdin] [--trace FILE]\n"
            "                  [--device cpu|cuda|auto]\n"
            "A conversation with memory: the model replies reading R and your turn in one decoder pass (as\n"
            "`mnemo shard --probe-exchange` trains), then your turn and the reply go into R as one turn and\n"
            "R is saved in the session store S (created if missing) under ID (a turn too long to share the\n"
            "pass is read into R first); running it again with the same ID continues from the saved R,\n"
            "another ID starts from R_0.\n"
            "  --temperature T   sampling temperature, 0 = greedy (default 0.8)\n"
            "  --top-k K         sample among the K most likely tokens, 0 = all (default 40)\n"
            "  --top-p P         nucleus: the smallest set with probability >= P (default 0.95)\n"
            "  --seed N          sampling seed (default: from the clock)\n"
            "  --max-tokens N    longest reply in tokens (default 64; at most the room left in the turn)\n"
            "  --question-in-state  read your turn into R first and decode the reply from R alone (for\n"
            "                    checkpoints trained on separate question and answer turns: the demo's)\n"
            "  --stdin           non-interactive: one turn per input line, one reply per output line\n"
            "  --device D        where the model runs: cpu (default), cuda or auto\n"
            "  --trace FILE      append a JSON line per turn: role, text, the token pieces fed to the\n"
            "                    compressor (to replay the session's R; a user turn that shares the\n"
            "                    reply's pass has none, it enters R with the reply) and an XXH64 of R after it\n"
            "Commands, typed or piped: /quit ends, /state shows the memory (on stderr); a line starting\n"
            "with // is a turn starting with /.\n");
}

/* The checkpoint's model and its tokenizer (chat reads and writes text). */
static int load(const char *path, mn_model **model, mn_tokenizer **tok) {
    mn_config cfg;
    if (mn_checkpoint_read_config(path, &cfg) != MN_OK || mn_model_create(&cfg, model) != MN_OK ||
        mn_checkpoint_load(path, *model, NULL, NULL, NULL) != MN_OK || mn_checkpoint_load_tokenizer(path, tok) != MN_OK) {
        fprintf(stderr, "mnemo chat: %s\n", mn_last_error());
        return 0;
    }
    if (!*tok) {
        fprintf(stderr, "mnemo chat: %s holds no tokenizer; chat needs one to read and write text\n", path);
        return 0;
    }
    return 1;
}

int cmd_chat(int argc, char **argv) {
    const char *checkpoint = NULL, *store_path = NULL, *session = NULL, *trace_path = NULL, *device = "cpu";
    mn_chat_options o = mn_chat_options_default();
    int from_stdin = 0, seeded = 0;
    double v;
    int64_t seed;
    static const struct option options[] = {
        {"checkpoint", required_argument, 0, 'c'}, {"store", required_argument, 0, 'S'},
        {"session", required_argument, 0, 'i'},    {"temperature", required_argument, 0, 't'},
        {"top-k", required_argument, 0, 'k'},      {"top-p", required_argument, 0, 'p'},
        {"seed", required_argument, 0, 's'},       {"max-tokens", required_argument, 0, 'n'},
        {"stdin", no_argument, 0, 'I'},            {"trace", required_argument, 0, 'T'},
        {"device", required_argument, 0, 'd'},     {"help", no_argument, 0, 'h'},
        {"question-in-state", no_argument, 0, 'Q'}, {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (opt) {
        case 'c': checkpoint = optarg; break;
        case 'S': store_path = optarg; break;
        case 'i': session = optarg; break;
        case 't': if (!cli_double("chat", "--temperature", optarg, 0, 100, &v)) return 2; o.sampling.temperature = (float)v; break;
        case 'k': if (!cli_int("chat", "--top-k", optarg, 0, INT_MAX, &o.sampling.top_k)) return 2; break;
        case 'p': if (!cli_double("chat", "--top-p", optarg, 1e-6, 1, &v)) return 2; o.sampling.top_p = (float)v; break;
        case 's': if (!cli_int64("chat", "--seed", optarg, 0, INT64_MAX, &seed)) return 2; o.seed = (uint64_t)seed; seeded = 1; break;
        case 'n': if (!cli_int("chat", "--max-tokens", optarg, 1, 1 << 20, &o.max_reply)) return 2; break;
        case 'I': from_stdin = 1; break;
        case 'Q': o.question_in_state = 1; break;
        case 'T': trace_path = optarg; break;
        case 'd': device = optarg; break;
        case 'h': usage(stdout); return 0;
        default: return cli_option_error("chat", opt, argv, usage);
        }
    }
    if (optind < argc || !checkpoint || !store_path || !session) {
        fprintf(stderr, "mnemo chat: needs --checkpoint, --store and --session\n");
        usage(stderr);
        return 2;
    }
    const mn_backend *backend = NULL;
    if (!cli_backend("chat", device, &backend))
        return 2;
    if (!seeded) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        o.seed = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
    int rc = 1;
    char *line = NULL, *reply = NULL;
    size_t cap = 0;
    mn_model *model = NULL;
    mn_tokenizer *tok = NULL;
    mn_chat *chat = NULL;
    if (!load(checkpoint, &model, &tok))
        goto done;
    if (mn_model_set_backend(model, backend) != MN_OK) {
        fprintf(stderr, "mnemo chat: %s\n", mn_last_error());
        goto done;
    }
    if (trace_path && !(o.trace = fopen(trace_path, "a"))) {
        fprintf(stderr, "mnemo chat: %s: %s\n", trace_path, strerror(errno));
        goto done;
    }
    if (mn_chat_open(model, tok, store_path, session, &o, &chat) != MN_OK) {
        fprintf(stderr, "mnemo chat: %s\n", mn_last_error());
        goto done;
    }
    mn_chat_status cs;
    mn_chat_status_get(chat, &cs);
    int interactive = !from_stdin && isatty(STDIN_FILENO);
    if (interactive)
        fprintf(stderr, "session '%s': %s (%s format). /quit ends, /state shows the memory.\n", session,
                cs.resumed ? "continuing from its saved memory" : "new, starting from R_0",
                cs.plain_text ? "plain-text" : "mnemo");
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
        /* commands work the same from a terminal and from a pipe; "//" escapes a leading '/' */
        const char *turn = line;
        if (line[0] == '/' && line[1] == '/') {
            turn = line + 1;
        } else if (line[0] == '/') {
            if (!strcmp(line, "/quit"))
                break;
            if (!strcmp(line, "/state")) {
                mn_chat_status_get(chat, &cs);
                fprintf(stderr, "session '%s': %" PRId64 " turns, |R| = %.4f, fingerprint %016" PRIx64 "\n", session,
                        cs.turns, cs.state_norm, cs.fingerprint);
            } else {
                fprintf(stderr, "mnemo chat: unknown command '%s'; commands: /quit, /state (// starts a turn with /)\n",
                        line);
            }
            continue;
        }
        if (mn_chat_exchange(chat, turn, &reply) != MN_OK) {
            fprintf(stderr, "mnemo chat: %s\n", mn_last_error());
            goto done;
        }
        if (!interactive) /* one reply per output line, whatever the model wrote */
            for (char *p = reply; *p; p++)
                if (*p == '\n' || *p == '\r')
                    *p = ' ';
        printf(interactive ? "model> %s\n" : "%s\n", reply);
        fflush(stdout);
        free(reply);
        reply = NULL;
    }
    rc = 0;
done:
    free(line);
    free(reply);
    mn_chat_close(chat);
    if (o.trace)
        fclose(o.trace);
    mn_tokenizer_free(tok);
    mn_model_free(model);
    return rc;
}
