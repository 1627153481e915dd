/* mnemo train: config (defaults < --resume checkpoint's config < --config file < options),
 * signal handling, then the loop in train_loop.c (docs/training.md). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "core/error.h"
#include "dist.h"
#include "io/checkpoint.h"
#include "train_config.h"
#include "train_loop.h"

/* The CLI's stop request: the signal number, set by the handler, read by the loop between
 * steps. A static is the one place a signal handler can reach; the library sees a pointer. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) { stop_signal = sig; }

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo train [--config FILE] [--resume CKPT|RUN_DIR] [--base CKPT] [--FIELD VALUE ...]\n"
            "Trains the memory model: the effective config is printed at start and stored in every\n"
            "checkpoint (<run-dir>/ckpt-<step>.h5); metrics go to <run-dir>/metrics.jsonl.\n"
            "SIGINT/SIGTERM/SIGUSR1: the step finishes, a checkpoint is written, exit code 3 (a second\n"
            "Ctrl-C stops at once; saved checkpoints stay intact).\n"
            "Exit codes: 0 done, 1 failed, 2 usage, 3 interrupted, 4 too many non-finite steps.\n"
            "Data parallel: mpirun -np N mnemo train ... (docs/distributed.md); batch is the global batch.\n"
            "\n"
            "  --config FILE             JSON object of fields (names below with '_' for '-')\n"
            "  --resume CKPT|RUN_DIR     continue bit-identically (a run directory: its latest checkpoint);\n"
            "                            the checkpoint's config is the base, options override it\n"
            "  --base CKPT               initialise the model's parameters from a checkpoint\n"
            "  --print-config            print the effective config and exit\n"
            "  --fault-nan-steps LIST    testing: put a NaN into these steps' gradients (e.g. 3,4)\n"
            "  --fault-checkpoint-steps LIST  testing: checkpoint writes at these steps fail midway\n"
            "  --fault-checkpoint-sleep-ms MS testing: checkpoint writes pause MS per dataset (a slow disk)\n"
            "\n"
            "fields:\n");
    train_config_print_help(out);
}

/* "3,4,10" -> a malloc'd list */
static int parse_steps(const char *spec, int64_t **out, int *n) {
    *out = NULL;
    *n = 0;
    size_t count = 1;
    for (const char *p = spec; *p; p++)
        count += *p == ',';
    int64_t *list = malloc(count * sizeof *list);
    if (!list)
        return 1;
    const char *p = spec;
    for (size_t i = 0; i < count; i++) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 1 || (*end && *end != ',')) {
            free(list);
            return 1;
        }
        list[i] = v;
        p = *end ? end + 1 : end;
    }
    *out = list;
    *n = (int)count;
    return 0;
}

enum { OPT_CONFIG = 1000, OPT_RESUME, OPT_BASE, OPT_PRINT, OPT_FAULT_NAN, OPT_FAULT_CKPT, OPT_FAULT_SLEEP, OPT_HELP,
       OPT_FIELDS };

static int cmd_train_world(int argc, char **argv, dist *d);

/* The world is opened before anything is printed, so that only rank 0 prints progress; a
 * failed rank ends the whole job (MPI_Abort) rather than leave the others waiting. */
int cmd_train(int argc, char **argv) {
    dist *d = NULL;
    if (dist_open(&argc, &argv, &d) != MN_OK) {
        fprintf(stderr, "mnemo train: %s\n", mn_last_error());
        return TRAIN_EXIT_FAILED;
    }
    if (dist_rank(d) != 0 && !freopen("/dev/null", "w", stdout)) /* progress and logs: rank 0 only */
        fprintf(stderr, "mnemo train: rank %d: cannot silence stdout\n", dist_rank(d));
    int rc = cmd_train_world(argc, argv, d);
    if (rc == TRAIN_EXIT_FAILED && dist_size(d) > 1) {
        fprintf(stderr, "mnemo train: rank %d of %d failed; ending every rank of the job\n", dist_rank(d),
                dist_size(d));
        fflush(stdout);
        fflush(stderr);
        dist_abort(d, rc);
    }
    fflush(stdout);
    dist_close(d);
    return rc;
}

static int cmd_train_world(int argc, char **argv, dist *d) {
    const int n_fields = train_config_n_options();
    struct option *options = calloc((size_t)n_fields + 8, sizeof *options);
    /* field options are applied after the config layers below them, in command-line order */
    int *field_ids = calloc((size_t)argc + 1, sizeof *field_ids);
    const char **field_values = calloc((size_t)argc + 1, sizeof *field_values);
    int n_set = 0, rc = TRAIN_EXIT_USAGE, print_only = 0;
    const char *config_path = NULL, *resume = NULL, *base = NULL;
    int64_t *fault_nan = NULL, *fault_ckpt = NULL;
    int n_fault_nan = 0, n_fault_ckpt = 0, fault_sleep_ms = 0;
    char resume_path[TRAIN_PATH_CAP + 64];
    if (!options || !field_ids || !field_values) {
        fprintf(stderr, "mnemo train: out of memory\n");
        rc = TRAIN_EXIT_FAILED;
        goto done;
    }
    const struct option fixed[] = {
        {"config", required_argument, 0, OPT_CONFIG},
        {"resume", required_argument, 0, OPT_RESUME},
        {"base", required_argument, 0, OPT_BASE},
        {"print-config", no_argument, 0, OPT_PRINT},
        {"fault-nan-steps", required_argument, 0, OPT_FAULT_NAN},
        {"fault-checkpoint-steps", required_argument, 0, OPT_FAULT_CKPT},
        {"fault-checkpoint-sleep-ms", required_argument, 0, OPT_FAULT_SLEEP},
        {"help", no_argument, 0, OPT_HELP},
    };
    const int n_fixed = (int)(sizeof fixed / sizeof fixed[0]);
    memcpy(options, fixed, sizeof fixed);
    train_config_options(options + n_fixed, OPT_FIELDS);

    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (c) {
        case OPT_CONFIG: config_path = optarg; break;
        case OPT_RESUME: resume = optarg; break;
        case OPT_BASE: base = optarg; break;
        case OPT_PRINT: print_only = 1; break;
        case OPT_FAULT_NAN:
            free(fault_nan);
            if (parse_steps(optarg, &fault_nan, &n_fault_nan)) {
                fprintf(stderr, "mnemo train: --fault-nan-steps wants step numbers >= 1 like 3,4\n");
                goto done;
            }
            break;
        case OPT_FAULT_CKPT:
            free(fault_ckpt);
            if (parse_steps(optarg, &fault_ckpt, &n_fault_ckpt)) {
                fprintf(stderr, "mnemo train: --fault-checkpoint-steps wants step numbers >= 1 like 5,10\n");
                goto done;
            }
            break;
        case OPT_FAULT_SLEEP: {
            char *end;
            long ms = strtol(optarg, &end, 10);
            if (end == optarg || *end || ms < 0 || ms > 60000) {
                fprintf(stderr, "mnemo train: --fault-checkpoint-sleep-ms wants 0..60000\n");
                goto done;
            }
            fault_sleep_ms = (int)ms;
            break;
        }
        case OPT_HELP:
            usage(stdout);
            rc = TRAIN_EXIT_OK;
            goto done;
        case ':': fprintf(stderr, "mnemo train: %s needs a value\n", argv[optind - 1]); goto done;
        case '?': fprintf(stderr, "mnemo train: unknown option '%s' (see --help)\n", argv[optind - 1]); goto done;
        default:
            if (c >= OPT_FIELDS && c < OPT_FIELDS + n_fields) {
                field_ids[n_set] = c;
                field_values[n_set++] = optarg;
            }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mnemo train: unexpected argument '%s'\n", argv[optind]);
        goto done;
    }
    if (resume && base) {
        fprintf(stderr, "mnemo train: --resume and --base exclude each other\n");
        goto done;
    }

    train_config cfg;
    train_config_defaults(&cfg);
    if (resume) {
        struct stat sb;
        if (stat(resume, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            int found = 0;
            if (mn_checkpoint_latest(resume, resume_path, sizeof resume_path, NULL, &found) != MN_OK) {
                fprintf(stderr, "mnemo train: --resume: %s\n", mn_last_error());
                rc = TRAIN_EXIT_FAILED;
                goto done;
            }
            if (!found) {
                fprintf(stderr, "mnemo train: --resume %s: the directory holds no checkpoint (ckpt-<step>.h5)\n",
                        resume);
                rc = TRAIN_EXIT_FAILED;
                goto done;
            }
        } else {
            snprintf(resume_path, sizeof resume_path, "%s", resume);
        }
        resume = resume_path;
        mn_checkpoint_info info;
        if (mn_checkpoint_read_info(resume, &info) != MN_OK) {
            fprintf(stderr, "mnemo train: --resume: %s\n", mn_last_error());
            rc = TRAIN_EXIT_FAILED;
            goto done;
        }
        int bad = train_config_load_string(&cfg, info.train_config ? info.train_config : "{}", resume, stderr);
        cfg.model = info.config; /* the tensors decide the model, whatever the JSON says */
        mn_checkpoint_info_free(&info);
        if (bad) {
            rc = TRAIN_EXIT_FAILED;
            goto done;
        }
    } else if (base) {
        if (mn_checkpoint_read_config(base, &cfg.model) != MN_OK) {
            fprintf(stderr, "mnemo train: --base: %s\n", mn_last_error());
            rc = TRAIN_EXIT_FAILED;
            goto done;
        }
    }
    if (config_path && train_config_load_file(&cfg, config_path, stderr))
        goto done;
    for (int i = 0; i < n_set; i++)
        if (train_config_set_option(&cfg, field_ids[i], OPT_FIELDS, field_values[i], stderr))
            goto done;
    if (train_config_validate(&cfg, stderr))
        goto done;

    char *json = train_config_to_json(&cfg, 2);
    printf("effective config:\n%s\n", json ? json : "(out of memory)");
    free(json);
    fflush(stdout);
    if (print_only) {
        rc = TRAIN_EXIT_OK;
        goto done;
    }

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
    const char *episode_log = getenv("MNEMO_EPISODE_LOG");
    train_run_options o = {.resume = resume, .base = base, .stop = &stop_signal, .dist = d,
                           .episode_log = episode_log && *episode_log ? episode_log : NULL,
                           .fault_nan_steps = fault_nan, .n_fault_nan_steps = n_fault_nan,
                           .fault_checkpoint_steps = fault_ckpt, .n_fault_checkpoint_steps = n_fault_ckpt,
                           .fault_checkpoint_sleep_ms = fault_sleep_ms};
    rc = train_run(&cfg, &o);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
done:
    free(options);
    free(field_ids);
    free(field_values);
    free(fault_nan);
    free(fault_ckpt);
    return rc;
}
