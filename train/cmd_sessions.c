/* mnemo sessions: look after a session store (docs/sessions.md) and benchmark one. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_util.h"
#include "commands.h"
#include "io/session_ops.h"
#include "model/bench.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo sessions --store S [--recover] list | show ID | delete ID | compact\n"
            "       mnemo sessions --store S bench [--count N] [--slots k] [--width C] [--gets N] [--puts N]\n"
            "       mnemo sessions --store S bench --pool [--device cpu|cuda|auto] [--matmul fp32|tf32|bf16]\n"
            "                      [--count N] [--batch B] [--rounds R] [--slots k] [--width C]\n"
            "  list      every session: id, turns, last update, fingerprint (control characters,\n"
            "            backslashes and bytes that are not UTF-8 in ids are shown as C escapes)\n"
            "  show ID   one session's info and the norm of its state\n"
            "  delete ID remove a session\n"
            "  compact   rewrite the HDF5 snapshot and empty the journal\n"
            "  --recover open a store whose journal is damaged or missing: keep what precedes the\n"
            "            damage and say what was dropped (delete and compact also truncate the journal\n"
            "            there; list and show change nothing)\n"
            "  bench     create S (which must not exist), fill it with N sessions (default 100000) of\n"
            "            k x C floats (default 16 x 256, the demo model), then time gets, puts (with and\n"
            "            without fsync), reopening and compaction, and report the file sizes; S is\n"
            "            left in place\n"
            "  --pool    (implied by --device) instead: a session pool of N sessions (default 4096) of the demo model (its\n"
            "            state k x C) on --device (default auto): R timed updates (default 20) of B\n"
            "            sessions each (default 256; turns of 1..128 tokens), then the same turns\n"
            "            through mn_update_batch and one mn_update at a time, in updates/s; a sample\n"
            "            checked against the CPU; then every session synced to S (created, no fsync)\n");
}

static int fail(const char *what) { return cli_fail("sessions", what); }

static void iso_time(int64_t us, char *buf, size_t cap) {
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The session pool against the per-call update paths (src/model/bench.c, mn_bench_pool). */
static int bench_pool(const char *path, mn_bench_pool_options *o, const char *device_name) {
    if (!cli_device("sessions", device_name, &o->device))
        return 2;
    o->backend = cli_standin();
    o->store = path;
    const mn_config *c = &o->config;
    printf("session pool benchmark: %d sessions of %d x %d floats; C %d, %d compressor layers, V %d; device %s, "
           "matmul %s\n",
           o->slots, c->n_slots, c->d_model, c->d_model, c->n_comp_layers, c->vocab_size,
           o->device == MN_DEVICE_CUDA ? "cuda" : "cpu", cli_matmul_name(o->matmul));
    fflush(stdout);
    mn_bench_pool_result r;
    mn_status st = mn_bench_pool(o, &r);
    if (st != MN_OK) {
        fprintf(stderr, "mnemo sessions bench: %s\n", mn_last_error());
        return st == MN_ERR_INVALID_ARG ? 2 : 1;
    }
    printf("pool update     %8.0f updates/s  (%d batches of %d turns, mean %.1f tokens; states stay in the pool)\n",
           r.pool_rate, o->rounds, o->batch, r.mean_tokens);
    printf("mn_update_batch %8.0f updates/s  (the same turns; states copied in and out)\n", r.batch_rate);
    printf("mn_update       %8.0f updates/s  (%d turns, one call each)\n", r.single_rate, o->singles);
    printf("pool / one at a time: %.1fx\n", r.pool_rate / r.single_rate);
    printf("sync to store   %8.0f states/s   (%d sessions, background thread, no fsync, %.2f s)\n",
           o->slots / r.sync_s, o->slots, r.sync_s);
    mn_bench_print_check(stdout, &r.check);
    return 0;
}

static int bench(const char *path, const mn_session_bench_options *o) {
    mn_session_bench_result r;
    mn_status st = mn_session_store_bench(path, o, &r);
    if (st != MN_OK) {
        fprintf(stderr, "mnemo sessions bench: %s\n", mn_last_error());
        return st == MN_ERR_INVALID_ARG ? 2 : 1;
    }
    size_t F = (size_t)o->n_slots * o->width;
    printf("session store benchmark: %" PRId64 " sessions of %d x %d floats (%zu bytes of state each) at %s\n",
           o->count, o->n_slots, o->width, F * 4, path);
    printf("fill            %8.0f puts/s  (%" PRId64 " puts, no fsync, %" PRId64 " automatic compactions, %.1f s)\n",
           r.fill_rate, o->count, r.fill_compactions, r.fill_s);
    printf("compact         %8.2f s       (%" PRId64 " sessions into a new snapshot)\n", r.compact_s, o->count);
    printf("open (writer)   %8.3f s       (index of %" PRId64 " sessions)\n", r.open_writer_s, o->count);
    printf("get (snapshot)  %8.0f gets/s  (%" PRId64 " random gets; p50 %.1f us, p99 %.1f us)\n", r.get_rate, o->gets,
           1e6 * r.get_p50, 1e6 * r.get_p99);
    printf("put (fsync)     %8.0f puts/s  (%" PRId64 " random updates; p50 %.2f ms, p99 %.2f ms, max %.2f ms)\n",
           r.put_sync_rate, o->puts, 1e3 * r.put_sync_p50, 1e3 * r.put_sync_p99, 1e3 * r.put_sync_max);
    printf("put (no fsync)  %8.0f puts/s  (%" PRId64 " random updates; p50 %.1f us, p99 %.1f us)\n", r.put_rate,
           o->puts, 1e6 * r.put_p50, 1e6 * r.put_p99);
    printf("get (journal)   %8.0f gets/s  (%" PRId64 " gets of sessions just updated)\n", r.journal_get_rate,
           r.journal_gets);
    printf("open (reader)   %8.3f s       (snapshot index + %" PRId64 " journal records replayed)\n", r.open_reader_s,
           r.journal_records);
    printf("files           snapshot %.1f MiB + journal %.1f MiB = %.0f bytes a session (state: %zu)\n",
           r.snapshot_bytes / 1048576.0, r.journal_bytes / 1048576.0,
           (double)(r.snapshot_bytes + r.journal_bytes) / (double)o->count, F * 4);
    return 0;
}

int cmd_sessions(int argc, char **argv) {
    const char *path = NULL;
    mn_session_bench_options bo = {.count = 100000, .n_slots = 16, .width = 256, .gets = 20000, .puts = 2000};
    mn_bench_pool_options po = {.config = mn_config_demo(), .matmul = MN_MATMUL_FP32, .slots = 4096, .batch = 256,
                                .rounds = 20};
    static const struct option options[] = {
        {"store", required_argument, 0, 'S'},  {"count", required_argument, 0, 'n'},
        {"slots", required_argument, 0, 'k'},  {"width", required_argument, 0, 'C'},
        {"gets", required_argument, 0, 'g'},   {"puts", required_argument, 0, 'p'},
        {"recover", no_argument, 0, 'r'},      {"pool", no_argument, 0, 'P'},
        {"device", required_argument, 0, 'd'}, {"matmul", required_argument, 0, 'm'},
        {"batch", required_argument, 0, 'b'},  {"rounds", required_argument, 0, 'R'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int opt, recover = 0, pool = 0, count_given = 0;
    const char *device_name = "auto";
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (opt) {
        case 'S': path = optarg; break;
        case 'n': if (!cli_int64("sessions", "--count", optarg, 1, 100000000, &bo.count)) return 2; count_given = 1; break;
        case 'k': if (!cli_int("sessions", "--slots", optarg, 1, 4096, &bo.n_slots)) return 2; break;
        case 'C': if (!cli_int("sessions", "--width", optarg, 1, 65536, &bo.width)) return 2; break;
        case 'g': if (!cli_int64("sessions", "--gets", optarg, 1, 100000000, &bo.gets)) return 2; break;
        case 'p': if (!cli_int64("sessions", "--puts", optarg, 1, 100000000, &bo.puts)) return 2; break;
        case 'r': recover = 1; break;
        case 'P': pool = 1; break;
        case 'd': device_name = optarg; pool = 1; break;
        case 'm': if (!cli_matmul("sessions", optarg, &po.matmul)) return 2; break;
        case 'b': if (!cli_int("sessions", "--batch", optarg, 1, 1 << 24, &po.batch)) return 2; break;
        case 'R': if (!cli_int("sessions", "--rounds", optarg, 1, 1 << 20, &po.rounds)) return 2; break;
        case 'h': usage(stdout); return 0;
        default: return cli_option_error("sessions", opt, argv, usage);
        }
    }
    const char *action = optind < argc ? argv[optind] : NULL, *id = optind + 1 < argc ? argv[optind + 1] : NULL;
    int wants_id = action && (!strcmp(action, "show") || !strcmp(action, "delete"));
    if (!path || !action || (wants_id != (id != NULL)) || optind + 1 + wants_id < argc) {
        usage(stderr);
        return 2;
    }
    if (pool && strcmp(action, "bench")) {
        fprintf(stderr, "mnemo sessions: --pool and --device go with bench only\n");
        return 2;
    }
    if (!strcmp(action, "bench") && pool) {
        if (count_given && bo.count > (1 << 24)) {
            fprintf(stderr, "mnemo sessions bench: --pool holds at most %d sessions\n", 1 << 24);
            return 2;
        }
        po.slots = count_given ? (int)bo.count : po.slots;
        po.config.n_slots = bo.n_slots;
        po.config.d_model = bo.width;
        po.singles = po.batch;
        return bench_pool(path, &po, device_name);
    }
    if (!strcmp(action, "bench"))
        return bench(path, &bo);

    int writer = !strcmp(action, "delete") || !strcmp(action, "compact");
    if (!writer && strcmp(action, "list") && strcmp(action, "show")) {
        fprintf(stderr, "mnemo sessions: unknown action '%s'\n", action);
        usage(stderr);
        return 2;
    }
    mn_session_store *s = NULL;
    int flags = (writer ? MN_STORE_WRITE : 0) | (recover ? MN_STORE_RECOVER : 0);
    if (mn_session_store_open(path, flags, 0, 0, &s) != MN_OK)
        return fail(NULL);
    if (mn_session_store_recovery(s))
        fprintf(stderr, "mnemo sessions: recovered: %s\n", mn_session_store_recovery(s));
    int rc = 0;
    char when[32], shown[MN_SESSION_ID_ESCAPED_MAX];
    if (id)
        mn_session_id_escape(id, shown, sizeof shown);
    if (!strcmp(action, "list")) {
        mn_session_info *infos = NULL;
        size_t n = 0;
        if (mn_session_list(s, &infos, &n) != MN_OK) {
            rc = fail(NULL);
        } else {
            for (size_t i = 0; i < n; i++) {
                iso_time(infos[i].updated_us, when, sizeof when);
                mn_session_id_escape(infos[i].id, shown, sizeof shown);
                printf("%s\t%" PRId64 " turns\tupdated %s\tfingerprint %016" PRIx64 "\n", shown, infos[i].turns,
                       when, infos[i].fingerprint);
            }
            free(infos);
        }
    } else if (!strcmp(action, "show")) {
        int k_, C_, found = 0;
        mn_session_store_shape(s, &k_, &C_);
        mn_session_info info;
        double norm = 0;
        if (mn_session_describe(s, id, &info, &norm, &found) != MN_OK) {
            rc = fail(shown);
        } else if (!found) {
            fprintf(stderr, "mnemo sessions: no session '%s' in %s\n", shown, path);
            rc = 1;
        } else {
            char created[32];
            iso_time(info.created_us, created, sizeof created);
            iso_time(info.updated_us, when, sizeof when);
            printf("session      %s\nturns        %" PRId64 "\ncreated      %s\nupdated      %s\nfingerprint  %016" PRIx64
                   "\nstate        %d x %d, |R| = %.6f\n",
                   shown, info.turns, created, when, info.fingerprint, k_, C_, norm);
        }
    } else if (!strcmp(action, "delete")) {
        int existed = 0;
        if (mn_session_delete(s, id, &existed) != MN_OK)
            rc = fail(shown);
        else if (!existed)
            fprintf(stderr, "mnemo sessions: no session '%s' in %s\n", shown, path), rc = 1;
    } else {
        mn_session_store_stats st;
        if (mn_session_store_compact(s) != MN_OK || mn_session_store_stats_get(s, &st) != MN_OK)
            rc = fail(NULL);
        else
            printf("compacted %s: %" PRId64 " sessions, generation %" PRIu64 ", %.1f MiB\n", path, st.sessions,
                   st.generation, st.snapshot_bytes / 1048576.0);
    }
    mn_session_store_close(s);
    return rc;
}
