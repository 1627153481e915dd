/* mnemo shard: render canonical JSONL into a token shard with a saved tokenizer, or check a
 * shard against one (docs/tokens.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "core/clock.h"
#include "text/dialogue.h"
#include "text/shard.h"
#include "text/tokenizer.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo shard --tokenizer TOK.h5 --jsonl X.jsonl -o X.shard [options]\n"
            "       mnemo shard --tokenizer TOK.h5 --check X.shard\n"
            "Renders dialogues to tokens (turn markers, speakers, sessions, probe question and\n"
            "answer turns) and writes a checksummed token shard atomically (docs/tokens.md).\n"
            "\n"
            "  --tokenizer F         a tokenizer written by `mnemo tokenizer --train`\n"
            "  --jsonl F             canonical dialogue JSONL; each dialogue becomes one episode\n"
            "  -o, --output F        the shard to write; not written, exit 1, when the JSONL\n"
            "                        yields no dialogue or has more than half its lines bad\n"
            "                        (without --skip-bad)\n"
            "  --max-turn-tokens N   split longer turns (default 128, at least 8)\n"
            "  --no-probes           leave probes out (no question/answer turns)\n"
            "  --probe-exchange      a probe's question and answer as one turn (the answer read\n"
            "                        with the question in context, as mnemo eval scores it)\n"
            "  --max-exchange-tokens N  a longer question-and-answer pair is two turns (default\n"
            "                        2 x --max-turn-tokens; at most the model's max_turn_tokens)\n"
            "  --strict              a bad JSONL line is fatal instead of skipped\n"
            "  --skip-bad            use the good lines even when more than half are bad\n"
            "  --check F             open a shard, verify it against the tokenizer, print counts\n"
            "  --help                this text\n");
}

static int fail(const char *what) { return cli_fail("shard", what); }

static int check(const mn_tokenizer *tok, const char *path) {
    mn_shard *s;
    if (mn_shard_open(path, mn_tokenizer_hash(tok), &s) != MN_OK)
        return fail(NULL);
    mn_shard_info i = mn_shard_get_info(s);
    printf("%s: ok: %lld episodes, %lld turns, %lld tokens, %lld probes, longest turn %d "
           "(limit %d), tokenizer %016llx\n",
           path, (long long)i.n_episodes, (long long)i.n_turns, (long long)i.n_tokens,
           (long long)i.n_probes, i.longest_turn, i.max_turn_tokens,
           (unsigned long long)i.tokenizer_hash);
    mn_shard_close(s);
    return 0;
}

int cmd_shard(int argc, char **argv) {
    const char *tok_path = NULL, *jsonl = NULL, *output = NULL, *check_path = NULL;
    mn_render_options ro = mn_render_options_default();
    int strict = 0, skip_bad = 0;
    static const struct option options[] = {
        {"tokenizer", required_argument, 0, 'k'}, {"jsonl", required_argument, 0, 'j'},
        {"output", required_argument, 0, 'o'},    {"max-turn-tokens", required_argument, 0, 'm'},
        {"no-probes", no_argument, 0, 'P'},       {"probe-exchange", no_argument, 0, 'X'},       {"strict", no_argument, 0, 'S'},
        {"skip-bad", no_argument, 0, 'B'},       {"max-exchange-tokens", required_argument, 0, 'e'},
        {"check", required_argument, 0, 'c'},     {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":o:", options, NULL)) != -1) {
        switch (c) {
        case 'k': tok_path = optarg; break;
        case 'j': jsonl = optarg; break;
        case 'o': output = optarg; break;
        case 'c': check_path = optarg; break;
        case 'P': ro.include_probes = 0; break;
        case 'X': ro.probe_exchange = 1; break;
        case 'S': strict = 1; break;
        case 'B': skip_bad = 1; break;
        case 'm':
            if (!cli_int("shard", "--max-turn-tokens", optarg, 8, 1000000, &ro.max_turn_tokens))
                return 2;
            break;
        case 'e':
            if (!cli_int("shard", "--max-exchange-tokens", optarg, 8, 1000000, &ro.max_exchange_tokens))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: return cli_option_error("shard", c, argv, usage);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mnemo shard: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!tok_path || (!check_path && (!jsonl || !output))) {
        fprintf(stderr, "mnemo shard: needs --tokenizer, and --jsonl with -o, or --check\n");
        usage(stderr);
        return 2;
    }
    if (strict && skip_bad) {
        fprintf(stderr, "mnemo shard: --strict and --skip-bad contradict each other\n");
        return 2;
    }
    mn_tokenizer *tok;
    if (mn_tokenizer_load_file(tok_path, &tok) != MN_OK)
        return fail(NULL);
    int rc = 0;
    if (check_path) {
        rc = check(tok, check_path);
    } else {
        mn_dialogue_list list = {0};
        mn_read_stats rs = {0};
        mn_render_stats st = {0};
        double t0 = mn_clock_s();
        if (mn_jsonl_read(jsonl, strict, stderr, &list, &rs) != MN_OK ||
            mn_read_check_yield(jsonl, &rs, list.count, skip_bad) != MN_OK)
            rc = fail(NULL);
        else if (mn_shard_write_dialogues(output, tok, &list, &ro, &st) != MN_OK)
            rc = fail(NULL);
        else
            printf("%s: %lld dialogues -> %lld turns (%lld split, %lld probe turns), %lld tokens "
                   "(%lld answer), longest turn %d; %lld bad lines skipped; %.1f s\n",
                   output, (long long)st.dialogues, (long long)st.turns,
                   (long long)st.split_turns, (long long)st.probe_turns, (long long)st.tokens,
                   (long long)st.answer_tokens, st.longest_turn, (long long)rs.bad_records,
                   mn_clock_s() - t0);
        mn_dialogue_list_free(&list);
    }
    mn_tokenizer_free(tok);
    return rc;
}
