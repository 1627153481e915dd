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
#include <unistd.h>

#include "cli_util.h"
#include "commands.h"
#include "text/episodes_job.h"

/* The probe templates when --templates is not given: share/mnemo/probes of the install prefix
 * when this binary is the installed one, else the source tree's data/probes (a binary in a
 * build directory); never the current directory. */
static const char *default_templates(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *installed = realpath(MN_INSTALLED_BIN, NULL);
    int is_installed = 0;
    if (n > 0 && installed) {
        exe[n] = '\0';
        is_installed = !strcmp(exe, installed);
    }
    free(installed);
    return is_installed ? MN_INSTALLED_DATA_DIR "/probes" : MN_SOURCE_DATA_DIR "/probes";
}

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
            "  --alive-same-kind        with --alive: a group's facts are of one family, each\n"
            "                           with its own key, and each is asked (binding by key)\n"
            "  --personas PATH          msc_personas_all.json (default\n"
            "                           $MNEMO_DATA/locomo/msc_personas_all.json, else\n"
            "                           %s/locomo/msc_personas_all.json)\n"
            "  --templates PATH         template folder or file (default %s)\n"
            "  --seed S                 seed for episode order and probes (default 1)\n"
            "  --probes-per-episode N   default 8\n"
            "  --distractors K          wrong choices per probe (default 3)\n"
            "  --interference N         extra same-category facts per template probe (default 0)\n"
            "  --updates P              chance that a template fact is changed later (default 0)\n"
            "  --open-values N          train split only: template values drawn from N generated\n"
            "                           values per category (made-up words, numbers, dates; none\n"
            "                           a valid/test value): recall must copy, not memorise\n"
            "  --open-families N        train split only: add N generated families (made-up and\n"
            "                           compound keys, train-only frames of open_frames.json,\n"
            "                           generated values; nothing of a valid/test family)\n"
            "  --span-families P        with --open-families and --jsonl (train split only):\n"
            "                           each open family's values are, with chance P, spans of\n"
            "                           1-3 real words of the --jsonl turns (none holding a\n"
            "                           valid/test value; default 0)\n"
            "  --word-families P        with --open-families and --jsonl (train split only):\n"
            "                           each open family that is no span family has, with\n"
            "                           chance P, values of 1-3 real words of the --jsonl turns\n"
            "                           drawn apart, lower case or capitalised (no word of a\n"
            "                           valid/test value; default 0)\n"
            "  --word-keys P            with --open-families and --jsonl (train split only):\n"
            "                           each open family's keys are, with chance P, made of real\n"
            "                           words of the --jsonl turns (\"{word} {word}\", \"{word}\n"
            "                           code\"; no word of a held-out key; default 0)\n"
            "  --shared-heads P         with --open-families (train split only): each open\n"
            "                           family's keys all end, with chance P, in one head word\n"
            "                           (\"{word} code\", \"{noun} code\", \"{owner}'s code\"):\n"
            "                           keys alike but for a word (no word of a held-out key;\n"
            "                           default 0)\n"
            "  --composed-frames P      with --open-families (train split only): each open\n"
            "                           family's facts and questions are, with chance P, frames\n"
            "                           composed from the open frames file's grammar (\"I\n"
            "                           stashed {value} behind my {key}.\"; nothing near a\n"
            "                           valid/test phrasing; default 0)\n"
            "  --embed-facts P          train split only: with chance P a template fact is said\n"
            "                           inside the next real turn of its speaker, and (drawn\n"
            "                           apart) a question after a real turn of its asker\n"
            "  --frame-variety P        train split only: with chance P a template phrasing is\n"
            "                           rewritten (markers, tags, casing, contractions, question\n"
            "                           wrappers; never into a valid/test phrasing)\n"
            "  --frame-noise P          train split only: with chance P a template fact is said\n"
            "                           with words of its episode before, after and between the\n"
            "                           words of its phrasing, some of them dropped or swapped;\n"
            "                           the key and the value stay whole\n"
            "  --cued N                 add N cued recall probes per episode: a few words of a\n"
            "                           real earlier turn are quoted and the answer is the words\n"
            "                           that followed them (same distances, askers, distractors)\n"
            "  --drop-short             drop the last episode when it has fewer than T turns\n"
            "  --synthetic N            N episodes of built-in (or --jsonl) filler turns with\n"
            "                           template facts; needs no corpus and no personas\n"
            "  --strict                 a bad input line is fatal instead of skipped\n"
            "  --skip-bad               use the good lines even when more than half are bad\n"
            "Nothing is written (exit 1) when --jsonl yields no dialogue, has more than half its\n"
            "lines bad (without --skip-bad), or no episode can be built.\n"
            "  --help                   this text\n",
            MN_SHARED_DATA_DEFAULT, default_templates());
}

/* What the job read and wrote, as far as it got. */
static void print_report(const mn_episodes_job *job, const mn_episodes_report *r, const char *split_name) {
    if (job->open_values > 0 && r->reached > MN_EPISODES_OPEN_VALUES)
        printf("open values (train): %d categories, up to %d generated values each\n", r->template_categories,
               job->open_values);
    if (job->open_families > 0 && r->reached > MN_EPISODES_OPEN_FAMILIES)
        printf("open families (train): %d generated beside %d loaded families\n", job->open_families,
               r->template_categories);
    if (job->span_families > 0 && r->reached > MN_EPISODES_OPEN_FAMILIES)
        printf("span families (train): %d of the open families, %" PRId64 " spans of the dialogues' turns as values\n",
               r->span_families, r->span_values);
    if (job->word_families > 0 && r->reached > MN_EPISODES_OPEN_FAMILIES)
        printf("word families (train): %d of the open families, %" PRId64 " values of the dialogues' words\n",
               r->word_families, r->word_values);
    if (job->word_keys > 0 && r->reached > MN_EPISODES_OPEN_FAMILIES)
        printf("word keys (train): %d of the open families with keys of the dialogues' words\n",
               r->key_families);
    if (job->shared_heads > 0 && r->reached > MN_EPISODES_OPEN_FAMILIES)
        printf("shared heads (train): %d of the open families with keys ending in one head word\n",
               r->head_families);
    if (job->composed_frames > 0 && r->reached > MN_EPISODES_OPEN_FAMILIES)
        printf("composed frames (train): %d of the open families with frames of the grammar\n",
               r->composed_families);
    if (job->synthetic < 0 && (job->probes.sources & MN_FACTS_PERSONAS) && r->reached > MN_EPISODES_PERSONAS)
        printf("personas (%s): %d sentences in %d personas; %" PRId64 " dropped as shared with another split\n",
               split_name, r->persona_sentences, r->personas, r->personas_dropped_shared);
    if (job->jsonl && r->reached > MN_EPISODES_READ)
        printf("read %" PRId64 " dialogues from %s (%" PRId64 " bad lines skipped)\n", r->dialogues_read, job->jsonl,
               r->bad_lines);
    if (r->reached != MN_EPISODES_DONE)
        return;
    const mn_probe_stats *s = &r->probes;
    printf("wrote %" PRId64 " episodes (%" PRId64 " turns, T=%d, split %s) to %s\n", r->written.dialogues,
           r->written.turns, job->episodes.turns, split_name, job->output);
    printf("probes: %" PRId64 " (persona %" PRId64 ", template %" PRId64 "; with update %" PRId64
           "); interference facts %" PRId64 "; fact turns %" PRId64 "\n",
           s->probes, s->persona_probes, s->template_probes, s->update_probes, s->interference_facts, s->fact_turns);
    if (job->probes.embed_prob > 0)
        printf("embedded in real turns: facts %" PRId64 ", questions %" PRId64 "\n", s->embedded_facts,
               s->embedded_questions);
    if (job->probes.variety_prob > 0)
        printf("phrasings rewritten: %" PRId64 "\n", s->varied_phrasings);
    if (job->probes.noise_prob > 0)
        printf("frame noise: %" PRId64 " fact turns\n", s->noised_facts);
    if (job->cued > 0)
        printf("cued probes: %" PRId64 " (skipped %" PRId64 ": no turn fits)\n", r->cued.probes, r->cued.skipped);
    printf("skipped probes (no room for the distance) %" PRId64 "; original turns pushed out %" PRId64 "\n",
           s->skipped_probes, s->dropped_turns);
    const mn_distance_range *ranges = job->probes.distances;
    int n = job->probes.n_distances;
    printf("probes by distance:");
    for (int k = 0; k < n; k++) {
        if (ranges[k].lo == ranges[k].hi)
            printf(" %d:%" PRId64, ranges[k].lo, r->by_distance[k]);
        else
            printf(" %d-%d:%" PRId64, ranges[k].lo, ranges[k].hi, r->by_distance[k]);
    }
    if (r->by_distance[n])
        printf(" other:%" PRId64, r->by_distance[n]);
    printf("\n");
}

int cmd_episodes(int argc, char **argv) {
    const char *split_name = "train", *facts = "both", *distances_spec = "1,2,4,8,16,32,64";
    const char *families = "all", *askers = "other";
    mn_episodes_job job = {.templates = default_templates(), .synthetic = -1, .log = stderr,
                           .episodes = mn_episode_config_default(), .probes = mn_probe_config_default()};
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
        {"alive-same-kind", no_argument, 0, 'Y'},
        {"personas", required_argument, 0, 'p'},
        {"templates", required_argument, 0, 't'},
        {"seed", required_argument, 0, 'S'},
        {"probes-per-episode", required_argument, 0, 'n'},
        {"distractors", required_argument, 0, 'k'},
        {"interference", required_argument, 0, 'i'},
        {"updates", required_argument, 0, 'u'},
        {"drop-short", no_argument, 0, 'D'},
        {"open-values", required_argument, 0, 'O'},
        {"open-families", required_argument, 0, 'P'},
        {"span-families", required_argument, 0, 'W'},
        {"word-families", required_argument, 0, 'R'},
        {"word-keys", required_argument, 0, 'K'},
        {"shared-heads", required_argument, 0, 'H'},
        {"composed-frames", required_argument, 0, 'G'},
        {"cued", required_argument, 0, 'C'},
        {"embed-facts", required_argument, 0, 'E'},
        {"frame-variety", required_argument, 0, 'V'},
        {"frame-noise", required_argument, 0, 'Q'},
        {"synthetic", required_argument, 0, 'y'},
        {"strict", no_argument, 0, 'X'},
        {"skip-bad", no_argument, 0, 'B'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    optind = 1;
    int c;
    int64_t seed = 1;
    mn_probe_config *pcfg = &job.probes;
    while ((c = getopt_long(argc, argv, ":o:", options, NULL)) != -1) {
        switch (c) {
        case 'j': job.jsonl = optarg; break;
        case 's': split_name = optarg; break;
        case 'o': job.output = optarg; break;
        case 'd': distances_spec = optarg; break;
        case 'f': facts = optarg; break;
        case 'F': families = optarg; break;
        case 'a': askers = optarg; break;
        case 'p': job.personas = optarg; break;
        case 't': job.templates = optarg; break;
        case 'D': job.episodes.drop_short = 1; break;
        case 'X': job.strict = 1; break;
        case 'B': job.skip_bad = 1; break;
        case 'T':
            if (!cli_int("episodes", "--turns", optarg, 1, 1 << 24, &job.episodes.turns))
                return 2;
            break;
        case 'S':
            if (!cli_int64("episodes", "--seed", optarg, 0, INT64_MAX, &seed))
                return 2;
            break;
        case 'n':
            if (!cli_int("episodes", "--probes-per-episode", optarg, 1, 1 << 20, &pcfg->probes_per_episode))
                return 2;
            break;
        case 'k':
            if (!cli_int("episodes", "--distractors", optarg, 0, 1000, &pcfg->n_distractors))
                return 2;
            break;
        case 'i':
            if (!cli_int("episodes", "--interference", optarg, 0, 1000, &pcfg->interference))
                return 2;
            break;
        case 'A':
            if (!cli_int("episodes", "--alive", optarg, 0, 1000, &pcfg->alive))
                return 2;
            break;
        case 'Y':
            pcfg->alive_same_kind = 1;
            break;
        case 'O':
            if (!cli_int("episodes", "--open-values", optarg, 2, 1 << 24, &job.open_values))
                return 2;
            break;
        case 'P':
            if (!cli_int("episodes", "--open-families", optarg, 1, 100000, &job.open_families))
                return 2;
            break;
        case 'C':
            if (!cli_int("episodes", "--cued", optarg, 0, 1000, &job.cued))
                return 2;
            break;
        case 'y':
            if (!cli_int("episodes", "--synthetic", optarg, 1, INT_MAX, &job.synthetic))
                return 2;
            break;
        case 'u':
            if (!cli_double("episodes", "--updates", optarg, 0, 1, &pcfg->update_prob))
                return 2;
            break;
        case 'E':
            if (!cli_double("episodes", "--embed-facts", optarg, 0, 1, &pcfg->embed_prob))
                return 2;
            break;
        case 'V':
            if (!cli_double("episodes", "--frame-variety", optarg, 0, 1, &pcfg->variety_prob))
                return 2;
            break;
        case 'Q':
            if (!cli_double("episodes", "--frame-noise", optarg, 0, 1, &pcfg->noise_prob))
                return 2;
            break;
        case 'W':
            if (!cli_double("episodes", "--span-families", optarg, 0, 1, &job.span_families))
                return 2;
            break;
        case 'R':
            if (!cli_double("episodes", "--word-families", optarg, 0, 1, &job.word_families))
                return 2;
            break;
        case 'K':
            if (!cli_double("episodes", "--word-keys", optarg, 0, 1, &job.word_keys))
                return 2;
            break;
        case 'H':
            if (!cli_double("episodes", "--shared-heads", optarg, 0, 1, &job.shared_heads))
                return 2;
            break;
        case 'G':
            if (!cli_double("episodes", "--composed-frames", optarg, 0, 1, &job.composed_frames))
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: return cli_option_error("episodes", c, argv, usage);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mnemo episodes: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!job.output || (job.synthetic < 0 && !job.jsonl)) {
        fprintf(stderr, "mnemo episodes: -o and one of --jsonl or --synthetic are required\n");
        usage(stderr);
        return 2;
    }
    if (job.strict && job.skip_bad) {
        fprintf(stderr, "mnemo episodes: --strict and --skip-bad contradict each other\n");
        return 2;
    }
    /* the output is replaced by rename: never do that to /dev/null or another special file */
    struct stat out_stat;
    if (stat(job.output, &out_stat) == 0 && !S_ISREG(out_stat.st_mode)) {
        fprintf(stderr, "mnemo episodes: -o %s exists and is not a regular file\n", job.output);
        return 2;
    }
    pcfg->seed = job.episodes.seed = (uint64_t)seed;
    if (mn_probe_split_parse(split_name, &job.split) != MN_OK) {
        fprintf(stderr, "mnemo episodes: --split: %s\n", mn_last_error());
        return 2;
    }
    if (!strcmp(facts, "personas"))
        pcfg->sources = MN_FACTS_PERSONAS;
    else if (!strcmp(facts, "templates"))
        pcfg->sources = MN_FACTS_TEMPLATES;
    else if (!strcmp(facts, "both"))
        pcfg->sources = MN_FACTS_BOTH;
    else {
        fprintf(stderr, "mnemo episodes: --facts wants personas, templates or both, got '%s'\n", facts);
        return 2;
    }
    if (!strcmp(askers, "other"))
        pcfg->askers = MN_ASKERS_OTHER;
    else if (!strcmp(askers, "self"))
        pcfg->askers = MN_ASKERS_SELF;
    else if (!strcmp(askers, "both"))
        pcfg->askers = MN_ASKERS_BOTH;
    else {
        fprintf(stderr, "mnemo episodes: --askers wants other, self or both, got '%s'\n", askers);
        return 2;
    }
    if (!strcmp(families, "all"))
        job.families = MN_FAMILIES_ALL;
    else if (!strcmp(families, "shared"))
        job.families = MN_FAMILIES_SHARED;
    else if (!strcmp(families, "held-out"))
        job.families = MN_FAMILIES_HELD_OUT;
    else {
        fprintf(stderr, "mnemo episodes: --families wants all, shared or held-out, got '%s'\n", families);
        return 2;
    }
    mn_distance_range *ranges = NULL;
    if (mn_distances_parse(distances_spec, &ranges, &pcfg->n_distances) != MN_OK) {
        fprintf(stderr, "mnemo episodes: --distances: %s\n", mn_last_error());
        return 2;
    }
    pcfg->distances = ranges;
    char default_personas[4096];
    if (!job.personas) {
        const char *data = getenv("MNEMO_DATA");
        snprintf(default_personas, sizeof default_personas, "%s/locomo/msc_personas_all.json",
                 data && *data ? data : MN_SHARED_DATA_DEFAULT);
        job.personas = default_personas;
    }

    mn_episodes_report report;
    mn_status st = mn_episodes_run(&job, &report);
    print_report(&job, &report, split_name);
    if (st != MN_OK) {
        if (report.reached == MN_EPISODES_TEMPLATES)
            fprintf(stderr, "mnemo episodes: templates: %s\n", mn_last_error());
        else if (report.reached == MN_EPISODES_OPEN_VALUES)
            fprintf(stderr, "mnemo episodes: --open-values: %s\n", mn_last_error());
        else if (report.reached == MN_EPISODES_OPEN_FAMILIES)
            fprintf(stderr, "mnemo episodes: --open-families: %s\n", mn_last_error());
        else if (report.reached == MN_EPISODES_PERSONAS)
            fprintf(stderr, "mnemo episodes: personas: %s\n(MSC personas ship with LoCoMo: "
                            "https://github.com/snap-research/LoCoMo, data/msc_personas_all.json;"
                            " or use --facts templates)\n",
                    mn_last_error());
        else
            fprintf(stderr, "mnemo episodes: %s\n", mn_last_error());
    }
    mn_episodes_report_free(&report);
    free(ranges);
    return st == MN_OK ? 0 : 1;
}
