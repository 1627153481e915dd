/* mnemo episodes: chains dialogues into long multi-session episodes and injects recall probes
 * (facts said by one speaker, asked about d turns later by the other), written as canonical
 * dialogue JSONL (docs/probes.md, docs/dialogue-format.md). */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "mnemo.h"
#include "text/episodes.h"
#include "text/probes.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo episodes --jsonl DIALOGUES.jsonl --split S -o OUT.jsonl [options]\n"
            "       mnemo episodes --synthetic N --split S -o OUT.jsonl [options]\n"
            "Chains dialogues into multi-session episodes of T turns and injects recall probes\n"
            "(docs/probes.md). The dialogues must belong to the same split as --split.\n"
            "\n"
            "  --jsonl PATH             canonical dialogue JSONL (from mnemo prepare); with\n"
            "                           --synthetic, the pool of filler turns instead\n"
            "  --split S                train | valid | test: which templates, values and\n"
            "                           personas are used (default train)\n"
            "  -o, --output PATH        output JSONL, written atomically\n"
            "  --turns T                turns per episode (default 256)\n"
            "  --distances LIST         turns between fact and question: values and ranges,\n"
            "                           e.g. 1,2,4,8,16,32,64 (default) or 1-16,100-512\n"
            "  --facts F                personas | templates | both (default both)\n"
            "  --families F             all | shared | held-out: which template families of the\n"
            "                           split (held-out: those serving only this split; default\n"
            "                           all)\n"
            "  --askers A               other | self | both: the other speaker asks (\"your\"),\n"
            "                           the fact's own speaker asks (\"my\"), or either per\n"
            "                           probe (default other)\n"
            "  --alive N                probes in groups of N template facts of different\n"
            "                           families, all said before the group's questions\n"
            "                           (default 0: independent)\n"
            "  --personas PATH          msc_personas_all.json (default\n"
            "                           $MNEMO_DATA/locomo/msc_personas_all.json, else\n"
            "                           ../shared/data/locomo/msc_personas_all.json)\n"
            "  --templates PATH         template folder or file (default data/probes)\n"
            "  --seed S                 seed for episode order and probes (default 1)\n"
            "  --probes-per-episode N   default 8\n"
            "  --distractors K          wrong choices per probe (default 3)\n"
            "  --interference N         extra same-category facts per template probe (default 0)\n"
            "  --updates P              chance that a template fact is changed later (default 0)\n"
            "  --open-values N          train split only: template values drawn from N generated\n"
            "                           values per category (made-up words, numbers, dates; none\n"
            "                           a valid/test value): recall must copy, not memorise\n"
            "  --drop-short             drop the last episode when it has fewer than T turns\n"
            "  --synthetic N            N episodes of built-in (or --jsonl) filler turns with\n"
            "                           template facts; needs no corpus and no personas\n"
            "  --strict                 a bad input line is fatal instead of skipped\n"
            "  --help                   this text\n");
}

static int parse_long(const char *text, const char *flag, long lo, long hi, long *out) {
    char *end;
    long v = strtol(text, &end, 10);
    if (!*text || *end || v < lo || v > hi) {
        fprintf(stderr, "mnemo episodes: %s wants an integer in %ld..%ld, got '%s'\n", flag,
                lo, hi, text);
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_int(const char *text, const char *flag, int lo, int hi, int *out) {
    long v;
    if (!parse_long(text, flag, lo, hi, &v))
        return 0;
    *out = (int)v;
    return 1;
}

static void print_distance_counts(const mn_dialogue_list *list, const mn_distance_range *r,
                                  int n_ranges) {
    int64_t *counts = calloc((size_t)n_ranges + 1, sizeof *counts);
    if (!counts)
        return;
    for (int64_t i = 0; i < list->count; i++)
        for (int p = 0; p < list->items[i].n_probes; p++) {
            const mn_probe *q = &list->items[i].probes[p];
            if (q->n_evidence == 0)
                continue;
            int last = q->evidence[0];
            for (int e = 1; e < q->n_evidence; e++)
                if (q->evidence[e] > last)
                    last = q->evidence[e];
            int d = q->after - last, slot = n_ranges;
            for (int k = 0; k < n_ranges && slot == n_ranges; k++)
                if (d >= r[k].lo && d <= r[k].hi)
                    slot = k;
            counts[slot]++;
        }
    printf("probes by distance:");
    for (int k = 0; k < n_ranges; k++) {
        if (r[k].lo == r[k].hi)
            printf(" %d:%" PRId64, r[k].lo, counts[k]);
        else
            printf(" %d-%d:%" PRId64, r[k].lo, r[k].hi, counts[k]);
    }
    if (counts[n_ranges])
        printf(" other:%" PRId64, counts[n_ranges]);
    printf("\n");
    free(counts);
}

int cmd_episodes(int argc, char **argv) {
    const char *input = NULL, *output = NULL, *split_name = "train", *facts = "both";
    const char *families = "all", *askers = "other";
    const char *personas_path = NULL, *templates_path = "data/probes";
    const char *distances_spec = "1,2,4,8,16,32,64";
    int strict = 0, synthetic = -1, open_values = 0;
    mn_episode_config ecfg = mn_episode_config_default();
    mn_probe_config pcfg = mn_probe_config_default();
    static const struct option options[] = {
        {"jsonl", required_argument, 0, 'j'},
        {"split", required_argument, 0, 's'},
        {"output", required_argument, 0, 'o'},
        {"turns", required_argument, 0, 'T'},
        {"distances", required_argument, 0, 'd'},
        {"facts", required_argument, 0, 'f'},
        {"families", required_argument, 0, 'F'},
        {"askers", required_argument, 0, 'a'},
        {"alive", required_argument, 0, 'A'},
        {"personas", required_argument, 0, 'p'},
        {"templates", required_argument, 0, 't'},
        {"seed", required_argument, 0, 'S'},
        {"probes-per-episode", required_argument, 0, 'n'},
        {"distractors", required_argument, 0, 'k'},
        {"interference", required_argument, 0, 'i'},
        {"updates", required_argument, 0, 'u'},
        {"drop-short", no_argument, 0, 'D'},
        {"open-values", required_argument, 0, 'O'},
        {"synthetic", required_argument, 0, 'y'},
        {"strict", no_argument, 0, 'X'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    optind = 1;
    int c;
    long seed = 1;
    while ((c = getopt_long(argc, argv, ":o:", options, NULL)) != -1) {
        switch (c) {
        case 'j': input = optarg; break;
        case 's': split_name = optarg; break;
        case 'o': output = optarg; break;
        case 'd': distances_spec = optarg; break;
        case 'f': facts = optarg; break;
        case 'F': families = optarg; break;
        case 'a': askers = optarg; break;
        case 'p': personas_path = optarg; break;
        case 't': templates_path = optarg; break;
        case 'D': ecfg.drop_short = 1; break;
        case 'X': strict = 1; break;
        case 'T':
            if (!parse_int(optarg, "--turns", 1, 1 << 24, &ecfg.turns))
                return 2;
            break;
        case 'S':
            if (!parse_long(optarg, "--seed", 0, LONG_MAX, &seed))
                return 2;
            break;
        case 'n':
            if (!parse_int(optarg, "--probes-per-episode", 1, 1 << 20, &pcfg.probes_per_episode))
                return 2;
            break;
        case 'k':
            if (!parse_int(optarg, "--distractors", 0, 1000, &pcfg.n_distractors))
                return 2;
            break;
        case 'i':
            if (!parse_int(optarg, "--interference", 0, 1000, &pcfg.interference))
                return 2;
            break;
        case 'A':
            if (!parse_int(optarg, "--alive", 0, 1000, &pcfg.alive))
                return 2;
            break;
        case 'O':
            if (!parse_int(optarg, "--open-values", 2, 1 << 24, &open_values))
                return 2;
            break;
        case 'y':
            if (!parse_int(optarg, "--synthetic", 0, INT_MAX, &synthetic))
                return 2;
            break;
        case 'u': {
            char *end;
            pcfg.update_prob = strtod(optarg, &end);
            if (!*optarg || *end || !(pcfg.update_prob >= 0 && pcfg.update_prob <= 1)) {
                fprintf(stderr, "mnemo episodes: --updates wants a probability in [0, 1], "
                                "got '%s'\n",
                        optarg);
                return 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        case ':':
            fprintf(stderr, "mnemo episodes: %s needs a value\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "mnemo episodes: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mnemo episodes: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!output || (synthetic < 0 && !input)) {
        fprintf(stderr, "mnemo episodes: -o and one of --jsonl or --synthetic are required\n");
        usage(stderr);
        return 2;
    }
    /* the output is replaced by rename: never do that to /dev/null or another special file */
    struct stat out_stat;
    if (stat(output, &out_stat) == 0 && !S_ISREG(out_stat.st_mode)) {
        fprintf(stderr, "mnemo episodes: -o %s exists and is not a regular file\n", output);
        return 2;
    }
    pcfg.seed = ecfg.seed = (uint64_t)seed;
    mn_split split;
    if (mn_probe_split_parse(split_name, &split) != MN_OK) {
        fprintf(stderr, "mnemo episodes: --split: %s\n", mn_last_error());
        return 2;
    }
    if (!strcmp(facts, "personas"))
        pcfg.sources = MN_FACTS_PERSONAS;
    else if (!strcmp(facts, "templates"))
        pcfg.sources = MN_FACTS_TEMPLATES;
    else if (!strcmp(facts, "both"))
        pcfg.sources = MN_FACTS_BOTH;
    else {
        fprintf(stderr, "mnemo episodes: --facts wants personas, templates or both, got '%s'\n",
                facts);
        return 2;
    }
    if (synthetic >= 0)
        pcfg.sources = MN_FACTS_TEMPLATES;
    if (!strcmp(askers, "other"))
        pcfg.askers = MN_ASKERS_OTHER;
    else if (!strcmp(askers, "self"))
        pcfg.askers = MN_ASKERS_SELF;
    else if (!strcmp(askers, "both"))
        pcfg.askers = MN_ASKERS_BOTH;
    else {
        fprintf(stderr, "mnemo episodes: --askers wants other, self or both, got '%s'\n", askers);
        return 2;
    }
    mn_family_set family_set;
    if (!strcmp(families, "all"))
        family_set = MN_FAMILIES_ALL;
    else if (!strcmp(families, "shared"))
        family_set = MN_FAMILIES_SHARED;
    else if (!strcmp(families, "held-out"))
        family_set = MN_FAMILIES_HELD_OUT;
    else {
        fprintf(stderr, "mnemo episodes: --families wants all, shared or held-out, got '%s'\n",
                families);
        return 2;
    }
    mn_distance_range *ranges = NULL;
    if (mn_distances_parse(distances_spec, &ranges, &pcfg.n_distances) != MN_OK) {
        fprintf(stderr, "mnemo episodes: --distances: %s\n", mn_last_error());
        return 2;
    }
    pcfg.distances = ranges;

    int rc = 1;
    char default_personas[4096];
    mn_probe_templates templates = {0};
    mn_persona_bank personas = {0};
    mn_dialogue_list dialogues = {0}, episodes = {0};
    mn_probe_stats stats = {0};
    mn_read_stats read_stats = {0};
    if (mn_probe_templates_load(templates_path, split, &templates) != MN_OK ||
        mn_probe_templates_select(&templates, family_set) != MN_OK) {
        fprintf(stderr, "mnemo episodes: templates: %s\n", mn_last_error());
        goto done;
    }
    if (open_values > 0) {
        if (mn_probe_templates_open_values(&templates, templates_path, open_values,
                                           (uint64_t)seed) != MN_OK) {
            fprintf(stderr, "mnemo episodes: --open-values: %s\n", mn_last_error());
            goto done;
        }
        printf("open values (train): %d categories, up to %d generated values each\n",
               templates.n_categories, open_values);
    }
    if (pcfg.sources & MN_FACTS_PERSONAS) {
        if (!personas_path) {
            const char *data = getenv("MNEMO_DATA");
            snprintf(default_personas, sizeof default_personas,
                     "%s/locomo/msc_personas_all.json",
                     data && *data ? data : "../shared/data");
            personas_path = default_personas;
        }
        if (mn_persona_bank_load(personas_path, split, &personas) != MN_OK) {
            fprintf(stderr, "mnemo episodes: personas: %s\n(MSC personas ship with LoCoMo: "
                            "https://github.com/snap-research/LoCoMo, data/msc_personas_all.json;"
                            " or use --facts templates)\n",
                    mn_last_error());
            goto done;
        }
        printf("personas (%s): %d sentences in %d personas; %" PRId64
               " dropped as shared with another split\n",
               split_name, personas.n_sentences, personas.n_personas, personas.dropped_shared);
    }
    if (input) {
        if (mn_jsonl_read(input, strict, stderr, &dialogues, &read_stats) != MN_OK) {
            fprintf(stderr, "mnemo episodes: %s\n", mn_last_error());
            goto done;
        }
        printf("read %" PRId64 " dialogues from %s (%" PRId64 " bad lines skipped)\n",
               dialogues.count, input, read_stats.bad_records);
    }
    if (synthetic >= 0) {
        if (mn_probes_synthetic(input ? &dialogues : NULL, synthetic, ecfg.turns, &templates,
                                &pcfg, &episodes, &stats) != MN_OK) {
            fprintf(stderr, "mnemo episodes: %s\n", mn_last_error());
            goto done;
        }
    } else {
        if (mn_episodes_build(&dialogues, &ecfg, &episodes) != MN_OK ||
            mn_probes_inject_all(&episodes, &templates, &personas, &pcfg, &stats) != MN_OK) {
            fprintf(stderr, "mnemo episodes: %s\n", mn_last_error());
            goto done;
        }
    }
    if (mn_jsonl_write_file(output, &episodes) != MN_OK) {
        fprintf(stderr, "mnemo episodes: %s\n", mn_last_error());
        goto done;
    }
    int64_t turns = 0;
    for (int64_t i = 0; i < episodes.count; i++)
        turns += episodes.items[i].n_turns;
    printf("wrote %" PRId64 " episodes (%" PRId64 " turns, T=%d, split %s) to %s\n",
           episodes.count, turns, ecfg.turns, split_name, output);
    printf("probes: %" PRId64 " (persona %" PRId64 ", template %" PRId64 "; with update %" PRId64
           "); interference facts %" PRId64 "; fact turns %" PRId64 "\n",
           stats.probes, stats.persona_probes, stats.template_probes, stats.update_probes,
           stats.interference_facts, stats.fact_turns);
    printf("skipped probes (no room for the distance) %" PRId64
           "; original turns pushed out %" PRId64 "\n",
           stats.skipped_probes, stats.dropped_turns);
    print_distance_counts(&episodes, ranges, pcfg.n_distances);
    rc = 0;
done:
    mn_dialogue_list_free(&episodes);
    mn_dialogue_list_free(&dialogues);
    mn_persona_bank_free(&personas);
    mn_probe_templates_free(&templates);
    free(ranges);
    return rc;
}
