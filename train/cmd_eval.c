/* mnemo eval: recall (multiple choice, exact match, F1) and LM loss of a checkpoint on
 * canonical dialogue JSONL, against no-memory and raw-history baselines (docs/eval.md). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
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
            "  --modes LIST            of memory,no_memory,window,full,retrieval,summary (default the\n"
            "                          first four); retrieval and summary are the baselines of docs/eval.md\n"
            "  --window-tokens LIST    history tokens of the window mode (default k,4k: k = memory slots)\n"
            "  --retrieval-tokens LIST tokens of the retrieved turns (BM25, SQLite FTS5; default k,4k)\n"
            "  --summary-tokens LIST   tokens of the running summary the decoder rewrites (default k,4k)\n"
            "  --max-probes N          the first N probes in file order (default all)\n"
            "  --threads N             dialogues evaluated in parallel (default: OpenMP's)\n"
            "  --device cpu|cuda|auto  where the models run (default cpu; on a GPU each worker its own copy)\n"
            "  --max-gen-tokens N      longest generated answer (default 32)\n"
            "  --no-generate           multiple choice only: no greedy generation (no exact match / F1)\n"
            "  --no-lm                 no per-turn LM loss\n"
            "  --question-in-state     memory, no_memory: read the question into R and decode the\n"
            "                          answer from R alone (default: question and answer in one\n"
            "                          decoder pass reading R, as the other modes)\n"
            "  --tokenizer FILE        must be the checkpoint's own (checked); needed when it holds none\n"
            "  --skip-bad              skip malformed JSONL lines (counted) instead of failing\n"
            "  --quiet                 no table, no progress\n");
}

/* gnuplot SCRIPT, run directly (no shell: the name is one argument, whatever it holds);
 * 0 when it exited 0, else 1 with the reason on stderr. */
static int run_gnuplot(const char *script) {
    /* a relative name starting with '-' would read as an option */
    char *arg = malloc(strlen(script) + 3);
    if (!arg) {
        fprintf(stderr, "mnemo eval: out of memory\n");
        return 1;
    }
    sprintf(arg, "%s%s", script[0] == '/' ? "" : "./", script);
    /* the child reports a failed exec through this pipe, closed by a successful one */
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        fprintf(stderr, "mnemo eval: cannot run gnuplot: %s\n", strerror(errno));
        free(arg);
        return 1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        char *const argv[] = {"gnuplot", arg, NULL};
        execvp("gnuplot", argv);
        int err = errno;
        ssize_t w = write(report[1], &err, sizeof err);
        (void)w;
        _exit(127);
    }
    int fork_errno = errno, exec_errno = 0, status = 0;
    close(report[1]);
    free(arg);
    if (pid < 0) {
        close(report[0]);
        fprintf(stderr, "mnemo eval: cannot run gnuplot: %s\n", strerror(fork_errno));
        return 1;
    }
    ssize_t got;
    while ((got = read(report[0], &exec_errno, sizeof exec_errno)) < 0 && errno == EINTR)
        ;
    close(report[0]);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            fprintf(stderr, "mnemo eval: waiting for gnuplot: %s\n", strerror(errno));
            return 1;
        }
    if (got == (ssize_t)sizeof exec_errno) {
        fprintf(stderr, "mnemo eval: cannot run gnuplot on %s: %s (is gnuplot installed? Debian: gnuplot-nox)\n",
                script, strerror(exec_errno));
        return 1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status))
        fprintf(stderr, "mnemo eval: gnuplot failed on %s: exit status %d\n", script, WEXITSTATUS(status));
    else
        fprintf(stderr, "mnemo eval: gnuplot failed on %s: killed by signal %d\n", script, WTERMSIG(status));
    return 1;
}

/* Draws a plot whose data and script the library wrote (st), then frees the script's name. */
static int plot(mn_status st, char *script) {
    if (st != MN_OK) {
        fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
        return 1;
    }
    int rc = run_gnuplot(script);
    free(script);
    return rc;
}

enum {
    OPT_CHECKPOINT = 1000, OPT_DATA, OPT_JSON, OPT_PLOT, OPT_PLOT_COST, OPT_PROBES_OUT, OPT_MODES, OPT_WINDOWS, OPT_RETRIEVAL, OPT_SUMMARY,
    OPT_MAX_PROBES, OPT_THREADS, OPT_MAX_GEN, OPT_NO_GEN, OPT_NO_LM, OPT_QUESTION_IN_STATE, OPT_TOKENIZER, OPT_SKIP_BAD, OPT_QUIET, OPT_HELP,
    OPT_DEVICE
};

int cmd_eval(int argc, char **argv) {
    static const struct option options[] = {
        {"checkpoint", required_argument, 0, OPT_CHECKPOINT}, {"data", required_argument, 0, OPT_DATA},
        {"json", required_argument, 0, OPT_JSON},             {"plot", required_argument, 0, OPT_PLOT},
        {"plot-cost", required_argument, 0, OPT_PLOT_COST},   {"probes-out", required_argument, 0, OPT_PROBES_OUT},
        {"modes", required_argument, 0, OPT_MODES},           {"window-tokens", required_argument, 0, OPT_WINDOWS},
        {"retrieval-tokens", required_argument, 0, OPT_RETRIEVAL}, {"summary-tokens", required_argument, 0, OPT_SUMMARY},
        {"max-probes", required_argument, 0, OPT_MAX_PROBES}, {"threads", required_argument, 0, OPT_THREADS},
        {"max-gen-tokens", required_argument, 0, OPT_MAX_GEN}, {"no-generate", no_argument, 0, OPT_NO_GEN},
        {"no-lm", no_argument, 0, OPT_NO_LM},                 {"question-in-state", no_argument, 0, OPT_QUESTION_IN_STATE},                 {"tokenizer", required_argument, 0, OPT_TOKENIZER},
        {"skip-bad", no_argument, 0, OPT_SKIP_BAD},           {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, OPT_HELP},                   {"device", required_argument, 0, OPT_DEVICE},
        {0, 0, 0, 0},
    };
    const char *ckpt = NULL, *data = NULL, *json = NULL, *plot_recall = NULL, *plot_cost = NULL, *probes_out = NULL;
    const char *modes = NULL, *windows = NULL, *retrieval = NULL, *summary = NULL, *tok_path = NULL, *device = "cpu";
    int64_t max_probes = 0;
    int threads = 0, max_gen = 32;
    int generate = 1, lm = 1, question_in_state = 0, skip_bad = 0, quiet = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (c) {
        case OPT_CHECKPOINT: ckpt = optarg; break;
        case OPT_DATA: data = optarg; break;
        case OPT_JSON: json = optarg; break;
        case OPT_PLOT: plot_recall = optarg; break;
        case OPT_PLOT_COST: plot_cost = optarg; break;
        case OPT_PROBES_OUT: probes_out = optarg; break;
        case OPT_MODES: modes = optarg; break;
        case OPT_WINDOWS: windows = optarg; break;
        case OPT_RETRIEVAL: retrieval = optarg; break;
        case OPT_SUMMARY: summary = optarg; break;
        case OPT_MAX_PROBES:
            if (!cli_int64("eval", "--max-probes", optarg, 1, (int64_t)1 << 40, &max_probes))
                return 2;
            break;
        case OPT_THREADS:
            if (!cli_int("eval", "--threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case OPT_MAX_GEN:
            if (!cli_int("eval", "--max-gen-tokens", optarg, 1, 1 << 20, &max_gen))
                return 2;
            break;
        case OPT_NO_GEN: generate = 0; break;
        case OPT_NO_LM: lm = 0; break;
        case OPT_QUESTION_IN_STATE: question_in_state = 1; break;
        case OPT_TOKENIZER: tok_path = optarg; break;
        case OPT_SKIP_BAD: skip_bad = 1; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_DEVICE: device = optarg; break;
        case OPT_HELP: usage(stdout); return 0;
        default: return cli_option_error("eval", c, argv, NULL);
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
    const mn_backend *backend = NULL;
    if (!cli_backend("eval", device, &backend))
        return 2;

    /* the plots' folders before the evaluation, not after it */
    const char *plots[] = {plot_recall, plot_cost};
    for (int i = 0; i < 2; i++)
        if (plots[i] && mn_eval_check_plot(plots[i]) != MN_OK) {
            fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
            return 1;
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
    if (mn_eval_parse_variants(&o, modes, windows, retrieval, summary) != MN_OK) {
        fprintf(stderr, "mnemo eval: %s\n", mn_last_error());
        rc = 2;
        goto done;
    }
    o.max_probes = max_probes;
    o.threads = threads;
    o.backend = backend;
    o.generate = generate;
    o.max_gen_tokens = max_gen;
    o.lm = lm;
    o.question_in_state = question_in_state;
    o.progress = quiet ? NULL : stderr;
    o.progress_redraw = isatty(STDERR_FILENO);
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
    char *script = NULL;
    if (plot_recall) {
        mn_status st = mn_eval_write_recall_plot(&res, plot_recall, data, &script);
        rc |= plot(st, script);
    }
    script = NULL;
    if (plot_cost) {
        mn_status st = mn_eval_write_cost_plot(&res, plot_cost, &script);
        rc |= plot(st, script);
    }
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
