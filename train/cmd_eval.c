/* mnemo eval: recall (multiple choice, exact match, F1) and LM loss of a checkpoint on
 * canonical dialogue JSONL, against no-memory and raw-history baselines (docs/eval.md). */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "eval/eval.h"
#include "io/checkpoint.h"
#include "text/dialogue.h"
#include "text/tokenizer.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo eval --checkpoint C --data FILE.jsonl [--json OUT.json] [--plot OUT.png] [options]\n"
            "Walks each dialogue once, keeping the session state R, and scores every probe when its\n"
            "`after` is reached (docs/eval.md). The checkpoint is only read.\n"
            "\n"
            "  --checkpoint C          checkpoint (HDF5) holding the model and its tokenizer\n"
            "  --data FILE             canonical dialogue JSONL (docs/dialogue-format.md)\n"
            "  --json OUT              the report (keys of docs/dialogue-format.md and docs/eval.md)\n"
            "  --plot OUT.png          recall against distance, one line per mode (gnuplot)\n"
            "  --plot-cost OUT.png     per-turn cost against turn index (gnuplot)\n"
            "  --probes-out OUT.jsonl  one line per probe: each mode's choice, generation, scores\n"
            "  --modes LIST            of memory,no_memory,window,full (default all four)\n"
            "  --window-tokens LIST    history tokens of the window mode (default k,4k: k = memory slots)\n"
            "  --max-probes N          the first N probes in file order (default all)\n"
            "  --threads N             dialogues evaluated in parallel (default: OpenMP's)\n"
            "  --max-gen-tokens N      longest generated answer (default 32)\n"
            "  --no-generate           multiple choice only: no greedy generation (no exact match / F1)\n"
            "  --no-lm                 no per-turn LM loss\n"
            "  --tokenizer FILE        must be the checkpoint's own (checked); needed when it holds none\n"
            "  --skip-bad              skip malformed JSONL lines (counted) instead of failing\n"
            "  --quiet                 no table, no progress\n");
}

/* OUT.png -> OUT.<ext> beside it */
static void sibling(const char *png, const char *ext, char *buf, size_t cap) {
    size_t n = strlen(png);
    if (n > 4 && !strcmp(png + n - 4, ".png"))
        n -= 4;
    snprintf(buf, cap, "%.*s.%s", (int)n, png, ext);
}

/* gnuplot's pngcairo when this gnuplot has it, else its plain png terminal. */
static const char *gp_terminal =
    "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
    "  set terminal pngcairo size 960,600 enhanced font 'Sans,11'\n"
    "} else {\n"
    "  set terminal png size 960,600\n"
    "}\n"
    "set termoption noenhanced\n"; /* names like no_memory are literal, not subscripts */

static int run_gnuplot(const char *script) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "gnuplot '%s'", script);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "mnemo eval: gnuplot failed on %s (is gnuplot installed? Debian: gnuplot-nox)\n", script);
    return rc != 0;
}

static int plot_recall(const mn_eval_result *r, const char *png, const char *title) {
    char dat[4096], gp[4096];
    sibling(png, "dat", dat, sizeof dat);
    sibling(png, "gp", gp, sizeof gp);
    if (mn_eval_write_recall_data(r, dat) != MN_OK) {
        fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
        return 1;
    }
    /* chance: the mean of 1 / choices over the multiple-choice probes */
    double chance = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < r->probes; i++)
        if (r->probe_results[i].n_choices >= 2) {
            chance += 1.0 / r->probe_results[i].n_choices;
            n++;
        }
    FILE *f = fopen(gp, "w");
    if (!f) {
        fprintf(stderr, "mnemo eval: cannot write %s\n", gp);
        return 1;
    }
    fprintf(f, "%s", gp_terminal);
    fprintf(f, "set output '%s'\n", png);
    fprintf(f, "set title \"Recall against distance: %s\" noenhanced\n", title);
    fprintf(f, "set xlabel 'distance from the evidence to the question (turns, log scale)'\n");
    fprintf(f, "set ylabel 'multiple-choice accuracy (%%)'\n");
    fprintf(f, "set logscale x 2\nset yrange [0:100]\nset grid\nset key outside right top\n");
    fprintf(f, "set style data linespoints\n");
    fprintf(f, "plot ");
    for (int v = 0; v < r->n_variants; v++) {
        const mn_eval_variant_result *vr = &r->variants[v];
        char label[64];
        if (vr->spec.mode == MN_EVAL_WINDOW)
            snprintf(label, sizeof label, "window (%d tokens)", vr->spec.window);
        else
            snprintf(label, sizeof label, "%s", vr->name);
        fprintf(f, "%s'%s' using 1:%d title '%s' lw 2 pt %d", v ? ", " : "", dat, 4 + v, label, 5 + 2 * v);
    }
    if (n)
        fprintf(f, ", %g title 'chance' with lines dt 2 lc rgb 'gray40'", 100.0 * chance / (double)n);
    fprintf(f, "\n");
    fclose(f);
    return run_gnuplot(gp);
}

static int plot_cost_png(const mn_eval_result *r, const char *png) {
    char dat[4096], gp[4096];
    sibling(png, "dat", dat, sizeof dat);
    sibling(png, "gp", gp, sizeof gp);
    if (mn_eval_write_cost_data(r, dat) != MN_OK) {
        fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
        return 1;
    }
    FILE *f = fopen(gp, "w");
    if (!f) {
        fprintf(stderr, "mnemo eval: cannot write %s\n", gp);
        return 1;
    }
    fprintf(f, "%s", gp_terminal);
    fprintf(f, "set output '%s'\n", png);
    fprintf(f, "set title 'Cost per turn against turn index (%d threads; state %zu floats)'\n", r->threads,
            r->state_floats);
    fprintf(f, "set xlabel 'turn index in the dialogue (log scale)'\n");
    fprintf(f, "set ylabel 'wall time per turn (ms)'\n");
    fprintf(f, "set logscale x 2\nset yrange [0:*]\nset grid\nset key outside right top\n");
    fprintf(f, "set style data linespoints\n");
    fprintf(f, "plot '%s' using 1:2 title 'memory update (compressor)' lw 2 pt 7", dat);
    for (int v = 0; v < r->n_variants; v++) {
        const mn_eval_variant_result *vr = &r->variants[v];
        if (!r->variants[v].lm_tokens)
            continue;
        char label[64];
        if (vr->spec.mode == MN_EVAL_WINDOW)
            snprintf(label, sizeof label, "decoder, window %d tokens", vr->spec.window);
        else
            snprintf(label, sizeof label, "decoder, %s", vr->name);
        fprintf(f, ", '%s' using 1:%d title '%s' lw 2 pt %d", dat, 3 + v, label, 5 + 2 * v);
    }
    fprintf(f, "\n");
    fclose(f);
    return run_gnuplot(gp);
}

enum {
    OPT_CHECKPOINT = 1000, OPT_DATA, OPT_JSON, OPT_PLOT, OPT_PLOT_COST, OPT_PROBES_OUT, OPT_MODES, OPT_WINDOWS,
    OPT_MAX_PROBES, OPT_THREADS, OPT_MAX_GEN, OPT_NO_GEN, OPT_NO_LM, OPT_TOKENIZER, OPT_SKIP_BAD, OPT_QUIET, OPT_HELP
};

static int parse_int(const char *name, const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "mnemo eval: %s wants an integer in %ld..%ld, got '%s'\n", name, lo, hi, s);
        return 1;
    }
    *out = v;
    return 0;
}

int cmd_eval(int argc, char **argv) {
    static const struct option options[] = {
        {"checkpoint", required_argument, 0, OPT_CHECKPOINT}, {"data", required_argument, 0, OPT_DATA},
        {"json", required_argument, 0, OPT_JSON},             {"plot", required_argument, 0, OPT_PLOT},
        {"plot-cost", required_argument, 0, OPT_PLOT_COST},   {"probes-out", required_argument, 0, OPT_PROBES_OUT},
        {"modes", required_argument, 0, OPT_MODES},           {"window-tokens", required_argument, 0, OPT_WINDOWS},
        {"max-probes", required_argument, 0, OPT_MAX_PROBES}, {"threads", required_argument, 0, OPT_THREADS},
        {"max-gen-tokens", required_argument, 0, OPT_MAX_GEN}, {"no-generate", no_argument, 0, OPT_NO_GEN},
        {"no-lm", no_argument, 0, OPT_NO_LM},                 {"tokenizer", required_argument, 0, OPT_TOKENIZER},
        {"skip-bad", no_argument, 0, OPT_SKIP_BAD},           {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP},                   {0, 0, 0, 0},
    };
    const char *ckpt = NULL, *data = NULL, *json = NULL, *plot = NULL, *plot_cost = NULL, *probes_out = NULL;
    const char *modes = NULL, *windows = NULL, *tok_path = NULL;
    long max_probes = 0, threads = 0, max_gen = 32;
    int generate = 1, lm = 1, skip_bad = 0, quiet = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (c) {
        case OPT_CHECKPOINT: ckpt = optarg; break;
        case OPT_DATA: data = optarg; break;
        case OPT_JSON: json = optarg; break;
        case OPT_PLOT: plot = optarg; break;
        case OPT_PLOT_COST: plot_cost = optarg; break;
        case OPT_PROBES_OUT: probes_out = optarg; break;
        case OPT_MODES: modes = optarg; break;
        case OPT_WINDOWS: windows = optarg; break;
        case OPT_MAX_PROBES:
            if (parse_int("--max-probes", optarg, 1, 1L << 40, &max_probes))
                return 2;
            break;
        case OPT_THREADS:
            if (parse_int("--threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case OPT_MAX_GEN:
            if (parse_int("--max-gen-tokens", optarg, 1, 1 << 20, &max_gen))
                return 2;
            break;
        case OPT_NO_GEN: generate = 0; break;
        case OPT_NO_LM: lm = 0; break;
        case OPT_TOKENIZER: tok_path = optarg; break;
        case OPT_SKIP_BAD: skip_bad = 1; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_HELP: usage(stdout); return 0;
        case ':': fprintf(stderr, "mnemo eval: %s needs a value\n", argv[optind - 1]); return 2;
        default: fprintf(stderr, "mnemo eval: unknown option '%s' (see --help)\n", argv[optind - 1]); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mnemo eval: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!ckpt || !data) {
        fprintf(stderr, "mnemo eval: --checkpoint and --data are required (see --help)\n");
        return 2;
    }

    int rc = 1;
    mn_model *model = NULL;
    mn_tokenizer *tok = NULL, *given = NULL;
    mn_dialogue_list list = {0};
    mn_eval_result res;
    memset(&res, 0, sizeof res);
    mn_config cfg;
    if (mn_checkpoint_read_config(ckpt, &cfg) != MN_OK || mn_checkpoint_load_tokenizer(ckpt, &tok) != MN_OK) {
        fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
        goto done;
    }
    if (tok_path) {
        if (mn_tokenizer_load_file(tok_path, &given) != MN_OK) {
            fprintf(stderr, "mnemo eval: --tokenizer: %s\n", mn_last_error());
            goto done;
        }
        if (tok && mn_tokenizer_hash(tok) != mn_tokenizer_hash(given)) {
            fprintf(stderr,
                    "mnemo eval: --tokenizer %s (hash %016" PRIx64 ") is not the tokenizer of %s (hash %016" PRIx64
                    "): the checkpoint was trained with another tokenizer\n",
                    tok_path, mn_tokenizer_hash(given), ckpt, mn_tokenizer_hash(tok));
            goto done;
        }
        if (!tok) {
            tok = given;
            given = NULL;
        }
    }
    if (!tok) {
        fprintf(stderr, "mnemo eval: %s holds no tokenizer; pass the one it was trained with (--tokenizer)\n", ckpt);
        goto done;
    }
    mn_checkpoint_load_options lo = {.check_tokenizer = 1, .tokenizer_hash = mn_tokenizer_hash(tok)};
    if (mn_model_create(&cfg, &model) != MN_OK ||
        mn_checkpoint_load(ckpt, model, NULL, NULL, tok_path && !given ? NULL : &lo) != MN_OK) {
        fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
        goto done;
    }
    mn_read_stats rs;
    if (mn_jsonl_read(data, !skip_bad, stderr, &list, &rs) != MN_OK) {
        fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
        goto done;
    }
    if (list.count == 0) {
        fprintf(stderr, "mnemo eval: %s holds no dialogues%s\n", data,
                rs.bad_records ? " (every line was malformed)" : " (empty file?)");
        goto done;
    }
    if (rs.bad_records)
        fprintf(stderr, "mnemo eval: %s: %" PRId64 " malformed lines skipped\n", data, rs.bad_records);

    mn_eval_options o;
    mn_eval_options_default(&o, cfg.n_slots);
    if (mn_eval_parse_variants(&o, modes, windows) != MN_OK) {
        fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
        rc = 2;
        goto done;
    }
    o.max_probes = max_probes;
    o.threads = (int)threads;
    o.generate = generate;
    o.max_gen_tokens = (int)max_gen;
    o.lm = lm;
    o.progress = quiet ? NULL : stderr;
    if (mn_eval_run(model, tok, &list, &o, &res) != MN_OK) {
        fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
        goto done;
    }
    if (!quiet)
        mn_eval_print_table(&res, stdout);
    if (json && mn_eval_write_json(&res, ckpt, data, json) != MN_OK) {
        fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
        goto done;
    }
    if (probes_out && mn_eval_write_probes(&res, &list, probes_out) != MN_OK) {
        fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
        goto done;
    }
    rc = 0;
    if (plot && plot_recall(&res, plot, data))
        rc = 1;
    if (plot_cost && plot_cost_png(&res, plot_cost))
        rc = 1;
    if (!quiet && json)
        printf("report: %s\n", json);
done:
    mn_eval_result_free(&res);
    mn_dialogue_list_free(&list);
    mn_model_free(model);
    mn_tokenizer_free(tok);
    mn_tokenizer_free(given);
    return rc;
}
