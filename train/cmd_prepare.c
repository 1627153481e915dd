/* mnemo prepare: reads one corpus in its own format and writes canonical dialogue JSONL
 * (docs/dialogue-format.md), printing what was read, dropped and changed. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "core/clock.h"
#include "text/readers.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo prepare --format FORMAT --input PATH --jsonl OUT.jsonl [options]\n"
            "Converts a corpus into canonical dialogue JSONL (docs/dialogue-format.md).\n"
            "\n"
            "  --format F            self-dialogue | topical-chat | locomo | chitchat | jsonl\n"
            "  --input PATH          self-dialogue: the corpus folder (with corpus/ and\n"
            "                        blocked_workers.txt); topical-chat: its folder or one\n"
            "                        conversations JSON; locomo: locomo10.json or its folder;\n"
            "                        chitchat: dataset.json from the PyPI wheel chitchat-dataset;\n"
            "                        jsonl: a canonical JSONL file\n"
            "  --jsonl OUT           output, written atomically\n"
            "  --split S             all (default); self-dialogue: train | valid (authors held\n"
            "                        out by a hash of the WorkerId); topical-chat: valid | test\n"
            "  --strict              a bad record is fatal instead of skipped and counted\n"
            "  --skip-bad            use the good records even when more than half are bad\n"
            "  --max-turn-chars N    split longer turns at whitespace (default 4000)\n"
            "  --ask-at WHEN         locomo: ask probes at the end (default) or right after the\n"
            "                        session of the last evidence turn (evidence)\n"
            "  --distractors K       locomo: multiple-choice distractors per probe (default 3)\n"
            "  --valid-percent P     self-dialogue: share of authors held out (default 5)\n"
            "  --help                this text\n"
            "Bad records are reported on stderr as file:line: reason, skipped and counted. The\n"
            "input is refused (exit 1, OUT untouched) when nothing usable comes out of it, or when\n"
            "more than half of its records are bad without --skip-bad.\n"
            "chitchat's dataset.json: python3 -m pip install chitchat-dataset, then\n"
            "  python3 -c 'import chitchat_dataset,os;print(os.path.join("
            "os.path.dirname(chitchat_dataset.__file__),\"dataset.json\"))'\n");
}

int cmd_prepare(int argc, char **argv) {
    const char *format_name = NULL, *input = NULL, *output = NULL, *split_name = "all";
    int skip_bad = 0;
    mn_reader_options opt = mn_reader_options_default();
    opt.log = stderr;
    static const struct option options[] = {
        {"format", required_argument, 0, 'f'},
        {"input", required_argument, 0, 'i'},
        {"jsonl", required_argument, 0, 'o'},
        {"split", required_argument, 0, 's'},
        {"strict", no_argument, 0, 'S'},
        {"skip-bad", no_argument, 0, 'B'},
        {"max-turn-chars", required_argument, 0, 'm'},
        {"ask-at", required_argument, 0, 'a'},
        {"distractors", required_argument, 0, 'd'},
        {"valid-percent", required_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    optind = 1;
    int c;
    /* a leading ':' and an empty short list: long options only, errors reported here */
    while ((c = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (c) {
        case 'f': format_name = optarg; break;
        case 'i': input = optarg; break;
        case 'o': output = optarg; break;
        case 's': split_name = optarg; break;
        case 'S': opt.strict = 1; break;
        case 'B': skip_bad = 1; break;
        case 'm':
            if (!cli_int("prepare", "--max-turn-chars", optarg, 1, INT_MAX, &opt.max_turn_chars))
                return 2;
            break;
        case 'a':
            if (!strcmp(optarg, "end")) {
                opt.ask_at = MN_ASK_AT_END;
            } else if (!strcmp(optarg, "evidence")) {
                opt.ask_at = MN_ASK_AT_EVIDENCE;
            } else {
                fprintf(stderr, "mnemo prepare: --ask-at wants end or evidence, got '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'd':
            if (!cli_int("prepare", "--distractors", optarg, 0, 1000, &opt.n_distractors))
                return 2;
            break;
        case 'v':
            if (!cli_int("prepare", "--valid-percent", optarg, 0, 100, &opt.valid_percent))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: return cli_option_error("prepare", c, argv, usage);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mnemo prepare: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!format_name || !input || !output) {
        fprintf(stderr, "mnemo prepare: --format, --input and --jsonl are required\n");
        usage(stderr);
        return 2;
    }
    if (opt.strict && skip_bad) {
        fprintf(stderr, "mnemo prepare: --strict and --skip-bad contradict each other\n");
        return 2;
    }
    int format;
    if (mn_reader_format_parse(format_name, &format) != MN_OK) {
        fprintf(stderr, "mnemo prepare: %s\n", mn_last_error());
        return 2;
    }
    if (!strcmp(split_name, "all"))
        opt.split = MN_SPLIT_ALL;
    else if (!strcmp(split_name, "train") && format == MN_FORMAT_SELF_DIALOGUE)
        opt.split = MN_SPLIT_TRAIN;
    else if (!strcmp(split_name, "valid") &&
             (format == MN_FORMAT_SELF_DIALOGUE || format == MN_FORMAT_TOPICAL_CHAT))
        opt.split = MN_SPLIT_VALID;
    else if (!strcmp(split_name, "test") && format == MN_FORMAT_TOPICAL_CHAT)
        opt.split = MN_SPLIT_TEST;
    else {
        fprintf(stderr,
                "mnemo prepare: --split %s does not apply to %s (self-dialogue: train|valid|all; "
                "topical-chat: valid|test|all; others: all)\n",
                split_name, format_name);
        return 2;
    }

    mn_dialogue_list list = {0};
    mn_reader_stats stats = {0};
    double t0 = mn_clock_s();
    mn_status st = mn_read_corpus(format, input, &opt, &list, &stats);
    double t_read = mn_clock_s() - t0;
    if (st == MN_OK)
        st = mn_read_check_yield(input, &stats.read, list.count, skip_bad);
    if (st != MN_OK) {
        fprintf(stderr, "mnemo prepare: %s\n", mn_last_error());
        mn_dialogue_list_free(&list);
        return 1;
    }
    double t1 = mn_clock_s();
    st = mn_jsonl_write_file(output, &list);
    double t_write = mn_clock_s() - t1;
    if (st != MN_OK) {
        fprintf(stderr, "mnemo prepare: %s\n", mn_last_error());
        mn_dialogue_list_free(&list);
        return 1;
    }
    mn_dialogue_counts n = mn_dialogue_list_count(&list);
    const mn_read_stats *r = &stats.read;
    printf("prepare %s (split %s) %s -> %s\n", format_name, split_name, input, output);
    printf("  dialogues %lld  turns %lld  probes %lld (with choices %lld, with evidence %lld)\n",
           (long long)n.dialogues, (long long)n.turns, (long long)n.probes, (long long)n.probes_with_choices,
           (long long)n.probes_with_evidence);
    printf("  files %lld  records read %lld  bad records %lld\n", (long long)stats.files,
           (long long)r->lines_read, (long long)r->bad_records);
    printf("  empty turns dropped %lld  invalid UTF-8 repaired %lld  long turns split %lld  "
           "empty dialogues dropped %lld\n",
           (long long)r->empty_turns, (long long)r->invalid_utf8, (long long)r->split_turns,
           (long long)stats.empty_dialogues);
    if (format == MN_FORMAT_SELF_DIALOGUE)
        printf("  rows rejected %lld  blocked worker %lld  duplicate assignment %lld  "
               "other split %lld\n",
               (long long)stats.rejected_rows, (long long)stats.blocked_rows,
               (long long)stats.duplicate_rows, (long long)stats.other_split);
    if (format == MN_FORMAT_LOCOMO)
        printf("  unresolved evidence ids %lld  questions skipped %lld\n",
               (long long)stats.unresolved_evidence, (long long)stats.skipped_probes);
    printf("  time: read %.2f s, write %.2f s, total %.2f s\n", t_read, t_write,
           t_read + t_write);
    mn_dialogue_list_free(&list);
    return 0;
}
