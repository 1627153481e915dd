/* mnemo train: the options and config layers (defaults < --resume checkpoint's config <
 * --config file < options), the signal handlers, and the lines that report what the trainer
 * library (include/mnemo_train.h) delivers through its callbacks (docs/training.md). */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"
#include "commands.h"
#include "io/checkpoint.h"
#include "mnemo_train.h"
#include "text/tokenizer.h"
#ifdef MN_TEST_HOOKS
#include "test_hooks.h"
#endif

/* The CLI's stop request: the signal number, set by the handler, read by the loop between
 * steps. A static is the one place a signal handler can reach; the library sees a pointer. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) { stop_signal = sig; }

/* What the callbacks need to print. */
typedef struct {
    const mn_train_config *cfg;
    const char *resume;
    int rank, world;
    int tty;       /* stdout is a terminal: the progress line is redrawn in place */
    int line_open; /* that line has no newline yet */
#ifdef MN_TEST_HOOKS
    train_hooks hooks;
#endif
} train_cli;

/* Ends a progress line left open on the terminal before anything else is printed. */
static void end_line(train_cli *t, FILE *f) {
    if (t->line_open)
        fputc('\n', f);
    t->line_open = 0;
}

static void format_duration(double s, char *buf, size_t cap) {
    if (!(s >= 0) || s > 1e7)
        snprintf(buf, cap, "?");
    else if (s >= 3600)
        snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else if (s >= 60)
        snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, cap, "%.0fs", s);
}

static void on_start(void *ctx, const mn_train_start *s) {
    train_cli *t = ctx;
    const mn_train_config *c = t->cfg;
    t->world = s->world;
    if (s->valid_probes >= 0)
        printf("validation probes: %" PRId64 " prepared from %s\n", s->valid_probes, c->valid_probes);
    if (s->resharded_from > 0)
        printf("re-sharding: the checkpoint was trained on %" PRId64 " rank(s), this run has %d; each rank now "
               "trains %d of the %d episodes of every batch from the same global data cursor\n",
               s->resharded_from, s->world, s->local_batch, c->batch);
    printf("model: %zu parameters; %s; run directory %s\n", s->n_params,
           strcmp(c->task, "recall") ? c->train_data : "synthetic recall episodes", c->run_dir);
    if (s->world > 1)
        printf("data parallel: %d ranks (%s), %d episodes each of the global batch of %d, %d micro-batch(es) of "
               "%d; %s\n",
               s->world, s->dist_backend, s->local_batch, c->batch, c->grad_accum, s->micro_batch,
               c->zero ? "ZeRO-1 (optimizer sharded)" : "every rank runs the full optimizer");
    if (s->resumed)
        printf("resuming %s at step %" PRIu64 " (stage %" PRId64 ", %" PRIu64 " tokens seen)\n", t->resume, s->step,
               s->stage, s->tokens_seen);
    fflush(stdout);
}

static void on_step(void *ctx, const mn_train_step_info *s) {
    train_cli *t = ctx;
    if (t->tty || s->step % (uint64_t)t->cfg->log_interval == 0 || s->step == (uint64_t)s->steps || s->skipped) {
        char eta[32], comm[48] = "";
        format_duration(s->eta_s, eta, sizeof eta);
        if (t->world > 1)
            snprintf(comm, sizeof comm, "  comm %.0f%%", 100.0 * s->comm_share);
        printf("%sstep %" PRIu64 "/%" PRId64 "  loss %s%.4f  lr %.3g  %.0f tok/s%s  ETA %s%s", t->tty ? "\r" : "",
               s->step, s->steps, s->skipped ? "(skipped) " : "", (double)s->loss, s->lr, s->tokens_per_s, comm, eta,
               t->tty ? "   " : "\n");
        t->line_open = t->tty;
        fflush(stdout);
    }
    if (s->skipped && t->rank == 0) {
        end_line(t, stderr);
        fprintf(stderr, "mnemo train: step %" PRIu64 " skipped: %s (%" PRId64 " in a row, %" PRId64 " in all)\n",
                s->step, s->skip_reason, s->nan_streak, s->nan_skipped);
    }
}

static void on_eval(void *ctx, const mn_train_eval_info *e) {
    train_cli *t = ctx;
    if (e->valid_batches || e->probes) { /* nothing to say without validation data or probes */
        end_line(t, stdout);
        printf("eval step %" PRIu64 ":", e->step);
        if (e->valid_batches)
            printf(" valid loss %.4f (%" PRId64 " batches)", e->valid_loss, e->valid_batches);
        if (e->probes)
            printf(" | probes %" PRId64 ": accuracy %.1f%% with memory, %.1f%% with R reset to R_0", e->probes,
                   100.0 * (double)e->correct / (double)e->probes, 100.0 * (double)e->correct_reset / (double)e->probes);
        printf(" | %.1f s\n", e->seconds);
    }
    if (e->probes) {
        printf("  distance  probes  memory  reset\n");
        for (int i = 0; i < e->n_buckets; i++) {
            const mn_train_eval_bucket *b = &e->buckets[i];
            printf("  %-8s  %6" PRId64 "  %5.1f%%  %5.1f%%\n", b->distance, b->n, 100.0 * (double)b->correct / (double)b->n,
                   100.0 * (double)b->correct_reset / (double)b->n);
        }
    }
    fflush(stdout);
}

static void on_checkpoint(void *ctx, const mn_train_checkpoint_info *c) {
    train_cli *t = ctx;
    if (c->ok || c->final) /* a failed final checkpoint ends the run with an error */
        return;
    end_line(t, stderr);
    fprintf(stderr, "mnemo train: warning: %s; training continues, next attempt at step %" PRIu64 "\n", c->error,
            c->step + (uint64_t)t->cfg->checkpoint_interval);
}

static void on_notice(void *ctx, const char *text) {
    end_line(ctx, stderr);
    fprintf(stderr, "mnemo train: %s\n", text);
}

static void on_done(void *ctx, const mn_train_summary *s) {
    train_cli *t = ctx;
    end_line(t, stdout);
    if (s->time_limit)
        printf("time limit of %" PRId64 " s reached after step %" PRIu64 " of %" PRId64 "; checkpoint %s\n",
               t->cfg->time_limit_s, s->step, t->cfg->steps, s->last_checkpoint);
    if (s->stopped_at_step)
        printf("stopped at step %" PRIu64 " of %" PRId64 " (stop_at_step); checkpoint %s; --resume goes on\n", s->step,
               t->cfg->steps, s->last_checkpoint);
    if (s->interrupted) {
        if (t->rank == 0)
            fprintf(stderr, "mnemo train: interrupted by %s after step %" PRIu64 "; checkpoint %s written; resume with "
                            "--resume %s\n",
                    stop_signal == 0 ? "a signal on another rank" : stop_signal == SIGINT ? "SIGINT"
                                                                  : stop_signal == SIGUSR1 ? "SIGUSR1" : "SIGTERM",
                    s->step, s->last_checkpoint, s->last_checkpoint);
        return;
    }
    printf("done: %" PRIu64 " steps, %" PRIu64 " tokens, %" PRId64 " skipped; %.1f s; checkpoint %s\n", s->step,
           s->tokens_seen, s->nan_skipped, s->seconds, s->last_checkpoint);
    if (t->world > 1 && s->tokens_per_s > 0)
        printf("data parallel: %d ranks, %.0f tok/s over the run's steps, communication %.1f%% of step time\n",
               t->world, s->tokens_per_s, 100.0 * s->comm_share);
}

#ifdef MN_TEST_HOOKS
static void on_micro_batch(void *ctx, uint64_t step, int first_episode, const mn_batch *b) {
    train_hooks_micro_batch(&((train_cli *)ctx)->hooks, step, first_episode, b);
}
static void on_gradients(void *ctx, uint64_t step, float *grads, size_t n) {
    train_hooks_gradients(&((train_cli *)ctx)->hooks, step, grads, n);
}
static int on_checkpoint_fault(void *ctx, uint64_t step, const char *dataset) {
    return train_hooks_checkpoint_fault(&((train_cli *)ctx)->hooks, step, dataset);
}
#endif

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo train [--config FILE] [--resume CKPT|RUN_DIR] [--base CKPT] [--FIELD VALUE ...]\n"
            "Trains the memory model: the effective config is printed at start and stored in every\n"
            "checkpoint (<run-dir>/ckpt-<step>.h5); metrics go to <run-dir>/metrics.jsonl.\n"
            "SIGINT/SIGTERM/SIGUSR1: the step finishes, a checkpoint is written, exit code 3 (a second\n"
            "Ctrl-C stops at once; saved checkpoints stay intact).\n"
            "Exit codes: 0 done, 1 failed, 2 usage, 3 interrupted, 4 too many non-finite steps.\n"
            "Data parallel: mpirun -np N mnemo train ... (docs/distributed.md); batch is the global batch.\n"
            "Recipes: --config train/recipes/<name>.json.\n"
            "\n"
            "  --config FILE             JSON object of fields (names below with '_' for '-')\n"
            "  --resume CKPT|RUN_DIR     continue bit-identically (a run directory: its latest checkpoint);\n"
            "                            the checkpoint's config is the base, options override it; the\n"
            "                            run continues in the checkpoint's directory (or --run-dir)\n"
            "  --base CKPT               initialise the model's parameters from a checkpoint\n"
            "  --print-config            print the effective config and exit\n");
#ifdef MN_TEST_HOOKS
    fputs(train_hooks_help(), out);
#endif
    fprintf(out, "\nfields:\n");
    mn_train_config d;
    mn_train_config_defaults(&d);
    for (int i = 0; i < mn_train_config_n_fields(); i++) {
        mn_train_field f;
        char def[MN_TRAIN_PATH_CAP + 32];
        mn_train_config_field(i, &f);
        mn_train_config_field_text(&d, i, def, sizeof def);
        fprintf(out, "  --%-24s %s%s (default %s)\n", f.option, f.is_flag ? "(flag) " : "", f.help, def);
    }
}

/* vocab_size not given: task shards takes the tokenizer's V (a larger one would only add
 * untrained rows, whose ids the tokenizer cannot decode), other tasks the default. */
static mn_status vocab_from_tokenizer(mn_train_config *cfg, int default_vocab) {
    cfg->model.vocab_size = default_vocab;
    if (strcmp(cfg->task, "shards") || !cfg->tokenizer[0])
        return MN_OK; /* no tokenizer file: the library says what is missing */
    mn_tokenizer *tok = NULL;
    mn_status st = mn_tokenizer_load_file(cfg->tokenizer, &tok);
    if (st != MN_OK)
        return st;
    cfg->model.vocab_size = mn_tokenizer_vocab_size(tok);
    mn_tokenizer_free(tok);
    return MN_OK;
}

enum { OPT_CONFIG = 1000, OPT_RESUME, OPT_BASE, OPT_PRINT, OPT_HELP, OPT_HOOKS, OPT_FIELDS = 1100 };

/* Options, then the config layers: -1 to go on, else the exit code. *print_only for
 * --print-config. */
static int parse(int argc, char **argv, train_cli *t, mn_train_config *cfg, char *resume, size_t cap, const char **base,
                 int *print_only) {
    const int n_fields = mn_train_config_n_fields();
    struct option *options = calloc((size_t)n_fields + 16, sizeof *options);
    /* field options are applied after the config layers below them, in command-line order */
    int *field_ids = calloc((size_t)argc + 1, sizeof *field_ids);
    const char **field_values = calloc((size_t)argc + 1, sizeof *field_values);
    char(*names)[48] = calloc((size_t)n_fields, sizeof *names); /* getopt keeps pointers to the names */
    const char *config_path = NULL, *resume_arg = NULL;
    int n_set = 0, n = 0, rc = MN_TRAIN_USAGE;
    if (!options || !field_ids || !field_values || !names) {
        fprintf(stderr, "mnemo train: out of memory\n");
        rc = MN_TRAIN_FAILED;
        goto done;
    }
    options[n++] = (struct option){"config", required_argument, 0, OPT_CONFIG};
    options[n++] = (struct option){"resume", required_argument, 0, OPT_RESUME};
    options[n++] = (struct option){"base", required_argument, 0, OPT_BASE};
    options[n++] = (struct option){"print-config", no_argument, 0, OPT_PRINT};
    options[n++] = (struct option){"help", no_argument, 0, OPT_HELP};
#ifdef MN_TEST_HOOKS
    train_hooks_options(options + n, OPT_HOOKS);
    n += TRAIN_HOOKS_N_OPTIONS;
#endif
    mn_train_field f;
    for (int i = 0; i < n_fields && mn_train_config_field(i, &f) == MN_OK; i++) {
        snprintf(names[i], sizeof names[i], "%s", f.option);
        options[n++] = (struct option){names[i], f.is_flag ? no_argument : required_argument, 0, OPT_FIELDS + i};
    }
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        if (c == OPT_CONFIG)
            config_path = optarg;
        else if (c == OPT_RESUME)
            resume_arg = optarg;
        else if (c == OPT_BASE)
            *base = optarg;
        else if (c == OPT_PRINT)
            *print_only = 1;
        else if (c == OPT_HELP) {
            usage(stdout);
            rc = MN_TRAIN_DONE;
            goto done;
        } else if (c == ':') {
            fprintf(stderr, "mnemo train: %s needs a value\n", argv[optind - 1]);
            goto done;
        } else if (c >= OPT_FIELDS && c < OPT_FIELDS + n_fields) {
            field_ids[n_set] = c - OPT_FIELDS;
            field_values[n_set++] = optarg;
        }
#ifdef MN_TEST_HOOKS
        else if (c >= OPT_HOOKS && c < OPT_HOOKS + TRAIN_HOOKS_N_OPTIONS) {
            if (train_hooks_set_option(&t->hooks, c - OPT_HOOKS, optarg))
                goto done;
        }
#endif
        else {
            fprintf(stderr, "mnemo train: unknown option '%s' (see --help)\n", argv[optind - 1]);
            goto done;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mnemo train: unexpected argument '%s'\n", argv[optind]);
        goto done;
    }
    if (resume_arg && *base) {
        fprintf(stderr, "mnemo train: --resume and --base exclude each other\n");
        goto done;
    }
    mn_train_config_defaults(cfg);
    if (resume_arg && (mn_train_resume_path(resume_arg, resume, cap) != MN_OK ||
                       mn_train_config_load_checkpoint(cfg, resume) != MN_OK)) {
        fprintf(stderr, "mnemo train: --resume: %s\n", mn_last_error());
        rc = MN_TRAIN_FAILED;
        goto done;
    }
    if (*base && mn_checkpoint_read_config(*base, &cfg->model) != MN_OK) {
        fprintf(stderr, "mnemo train: --base: %s\n", mn_last_error());
        rc = MN_TRAIN_FAILED;
        goto done;
    }
    t->resume = resume_arg ? resume : NULL;
    /* a vocab_size that no layer gives (0 marks it through the file and the options) */
    const int default_vocab = cfg->model.vocab_size;
    if (!resume_arg && !*base)
        cfg->model.vocab_size = 0;
    mn_status st = config_path ? mn_train_config_load_file(cfg, config_path) : MN_OK;
    for (int i = 0; st == MN_OK && i < n_set; i++)
        st = mn_train_config_set_field(cfg, field_ids[i], field_values[i]);
    if (st == MN_OK && cfg->model.vocab_size == 0 && vocab_from_tokenizer(cfg, default_vocab) != MN_OK) {
        fprintf(stderr, "mnemo train: tokenizer: %s\n", mn_last_error());
        rc = MN_TRAIN_FAILED;
        goto done;
    }
    if (st == MN_OK)
        st = mn_train_config_validate(cfg);
    if (st != MN_OK)
        fprintf(stderr, "mnemo train: %s\n", mn_last_error());
    else
        rc = -1;
done:
    free(names);
    free(options);
    free(field_ids);
    free(field_values);
    return rc;
}

static int train_world(int argc, char **argv, mn_dist *d) {
    train_cli t = {.rank = mn_dist_rank(d), .world = mn_dist_size(d), .tty = isatty(STDOUT_FILENO)};
    mn_train_config cfg;
    char resume[MN_TRAIN_PATH_CAP + 64];
    const char *base = NULL;
    int print_only = 0;
    int rc = parse(argc, argv, &t, &cfg, resume, sizeof resume, &base, &print_only);
    if (rc >= 0)
        goto done;
    rc = MN_TRAIN_DONE;
    char *json = mn_train_config_to_json(&cfg, 2);
    printf("effective config:\n%s\n", json ? json : "(out of memory)");
    free(json);
    fflush(stdout);
    if (print_only)
        goto done;
    t.cfg = &cfg;
    mn_train_callbacks cb = {.ctx = &t, .start = on_start, .step = on_step, .eval = on_eval,
                             .checkpoint = on_checkpoint, .notice = on_notice, .done = on_done};
#ifdef MN_TEST_HOOKS
    if (train_hooks_open(&t.hooks, t.rank)) {
        rc = MN_TRAIN_FAILED;
        goto done;
    }
    cb.micro_batch = on_micro_batch, cb.gradients = on_gradients, cb.checkpoint_fault = on_checkpoint_fault;
#endif
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* SA_RESETHAND: a second Ctrl-C kills at once, which atomic checkpoints make safe */
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* OpenMPI's mpirun kills its ranks on SIGINT/SIGTERM but forwards SIGUSR1 to all of them:
     * `kill -USR1 <mpirun>` is how a data-parallel run stops with a checkpoint */
    sigaction(SIGUSR1, &sa, NULL);
    stop_signal = 0;
    mn_train_options o = {.resume = t.resume, .base = base, .stop = &stop_signal, .dist = d,
                          .device_standin = cli_standin()};
    mn_train_outcome outcome;
    /* non-finite aborts are agreed by every rank: rank 0 says so for the job */
    if (mn_train_run(&cfg, &o, &cb, &outcome) != MN_OK && (outcome != MN_TRAIN_NONFINITE || t.rank == 0)) {
        end_line(&t, stderr);
        fprintf(stderr, "mnemo train: %s\n", mn_last_error());
    }
    rc = (int)outcome;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
done:
#ifdef MN_TEST_HOOKS
    train_hooks_close(&t.hooks);
#endif
    return rc;
}

/* The world is opened before anything is printed, so that only rank 0 prints progress; a
 * failed rank ends the whole job (MPI_Abort) rather than leave the others waiting. */
int cmd_train(int argc, char **argv) {
    mn_dist *d = NULL;
    if (mn_dist_open(&argc, &argv, &d) != MN_OK) {
        fprintf(stderr, "mnemo train: %s\n", mn_last_error());
        return MN_TRAIN_FAILED;
    }
    if (mn_dist_rank(d) != 0 && !freopen("/dev/null", "w", stdout)) /* progress and logs: rank 0 only */
        fprintf(stderr, "mnemo train: rank %d: cannot silence stdout\n", mn_dist_rank(d));
    int rc = train_world(argc, argv, d);
    if (rc == MN_TRAIN_FAILED && mn_dist_size(d) > 1) {
        fprintf(stderr, "mnemo train: rank %d of %d failed; ending every rank of the job\n", mn_dist_rank(d),
                mn_dist_size(d));
        fflush(stdout);
        fflush(stderr);
        mn_dist_abort(d, rc);
    }
    fflush(stdout);
    mn_dist_close(d);
    return rc;
}
