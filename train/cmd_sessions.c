/* mnemo sessions: look after a session store (docs/sessions.md) and benchmark one. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "mnemo.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mnemo sessions --store S list | show ID | delete ID | compact\n"
            "       mnemo sessions --store S bench [--count N] [--slots k] [--width C] [--gets N] [--puts N]\n"
            "  list      every session: id, turns, last update, fingerprint\n"
            "  show ID   one session's info and the norm of its state\n"
            "  delete ID remove a session\n"
            "  compact   rewrite the HDF5 snapshot and empty the journal\n"
            "  bench     create S (which must not exist), fill it with N sessions (default 100000) of\n"
            "            k x C floats (default 16 x 256, the demo model), then time gets, puts (with and\n"
            "            without fsync), reopening and compaction, and report the file sizes; S is\n"
            "            left in place\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void fill_state(float *r, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++)
        r[i] = (float)(mix(seed * 1315423911u + i) >> 40) / 16777216.0f - 0.5f;
}

static int fail(const char *what) {
    fprintf(stderr, "mnemo sessions: %s%s%s\n", what ? what : "", what ? ": " : "", mn_last_error());
    return 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void iso_time(int64_t us, char *buf, size_t cap) {
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int bench(const char *path, long count, int k, int C, long gets, long puts) {
    struct stat sb;
    if (stat(path, &sb) == 0) {
        fprintf(stderr, "mnemo sessions bench: %s exists; give a new path\n", path);
        return 2;
    }
    size_t F = (size_t)k * C;
    float *r = malloc(F * sizeof *r);
    double *lat = malloc((size_t)(puts > gets ? puts : gets) * sizeof *lat);
    if (!r || !lat) {
        free(r), free(lat);
        fprintf(stderr, "mnemo sessions bench: out of memory\n");
        return 1;
    }
    const uint64_t fp = 0x62656e6368ull;
    char id[64];
    mn_session_store *s = NULL;
    mn_session_store_stats st;
    int rc = 1;
    printf("session store benchmark: %ld sessions of %d x %d floats (%zu bytes of state each) at %s\n", count, k, C,
           F * 4, path);

    /* fill without fsync (a bulk load), automatic compaction on */
    double t0 = now_s();
    if (mn_session_store_open(path, MN_STORE_WRITE | MN_STORE_CREATE | MN_STORE_NO_SYNC, k, C, &s) != MN_OK)
        goto fail;
    for (long i = 0; i < count; i++) {
        snprintf(id, sizeof id, "user-%08ld", i);
        fill_state(r, F, (uint64_t)i);
        if (mn_session_put(s, id, fp, r, 1) != MN_OK)
            goto fail;
    }
    if (mn_session_store_stats_get(s, &st) != MN_OK)
        goto fail;
    double fill = now_s() - t0;
    printf("fill            %8.0f puts/s  (%ld puts, no fsync, %" PRId64 " automatic compactions, %.1f s)\n",
           count / fill, count, st.compactions, fill);
    t0 = now_s();
    if (mn_session_store_compact(s) != MN_OK)
        goto fail;
    printf("compact         %8.2f s       (%ld sessions into a new snapshot)\n", now_s() - t0, count);
    mn_session_store_close(s);
    s = NULL;

    t0 = now_s();
    if (mn_session_store_open(path, MN_STORE_WRITE, 0, 0, &s) != MN_OK)
        goto fail;
    printf("open (writer)   %8.3f s       (index of %ld sessions)\n", now_s() - t0, count);

    /* random gets, all from the snapshot */
    uint64_t seed = 1;
    for (long i = 0; i < gets; i++) {
        snprintf(id, sizeof id, "user-%08ld", (long)(mix(seed++) % (uint64_t)count));
        int found = 0;
        double a = now_s();
        if (mn_session_get(s, id, fp, r, NULL, &found) != MN_OK || !found)
            goto fail;
        lat[i] = now_s() - a;
    }
    double sum = 0;
    for (long i = 0; i < gets; i++)
        sum += lat[i];
    qsort(lat, (size_t)gets, sizeof *lat, cmp_double);
    printf("get (snapshot)  %8.0f gets/s  (%ld random gets; p50 %.1f us, p99 %.1f us)\n", gets / sum, gets,
           1e6 * lat[gets / 2], 1e6 * lat[gets * 99 / 100]);

    /* random updates, each fsynced before it returns */
    for (long i = 0; i < puts; i++) {
        long which = (long)(mix(seed++) % (uint64_t)count);
        snprintf(id, sizeof id, "user-%08ld", which);
        fill_state(r, F, (uint64_t)which + 7);
        double a = now_s();
        if (mn_session_put(s, id, fp, r, 2) != MN_OK)
            goto fail;
        lat[i] = now_s() - a;
    }
    sum = 0;
    for (long i = 0; i < puts; i++)
        sum += lat[i];
    qsort(lat, (size_t)puts, sizeof *lat, cmp_double);
    printf("put (fsync)     %8.0f puts/s  (%ld random updates; p50 %.2f ms, p99 %.2f ms, max %.2f ms)\n", puts / sum,
           puts, 1e3 * lat[puts / 2], 1e3 * lat[puts * 99 / 100], 1e3 * lat[puts - 1]);

    /* the same without fsync (automatic compaction off): the put's own cost */
    mn_session_store_close(s);
    s = NULL;
    if (mn_session_store_open(path, MN_STORE_WRITE | MN_STORE_NO_SYNC, 0, 0, &s) != MN_OK)
        goto fail;
    mn_session_store_set_autocompact(s, 0);
    for (long i = 0; i < puts; i++) {
        long which = (long)(mix(seed + 1000003 + (uint64_t)i) % (uint64_t)count);
        snprintf(id, sizeof id, "user-%08ld", which);
        fill_state(r, F, (uint64_t)which + 9);
        double a = now_s();
        if (mn_session_put(s, id, fp, r, 3) != MN_OK)
            goto fail;
        lat[i] = now_s() - a;
    }
    sum = 0;
    for (long i = 0; i < puts; i++)
        sum += lat[i];
    qsort(lat, (size_t)puts, sizeof *lat, cmp_double);
    printf("put (no fsync)  %8.0f puts/s  (%ld random updates; p50 %.1f us, p99 %.1f us)\n", puts / sum, puts,
           1e6 * lat[puts / 2], 1e6 * lat[puts * 99 / 100]);

    /* gets of the freshly written sessions: they live in the journal */
    t0 = now_s();
    long journal_gets = puts < gets ? puts : gets;
    uint64_t replay = seed - (uint64_t)puts;
    for (long i = 0; i < journal_gets; i++) {
        snprintf(id, sizeof id, "user-%08ld", (long)(mix(replay++) % (uint64_t)count));
        int found = 0;
        if (mn_session_get(s, id, fp, r, NULL, &found) != MN_OK || !found)
            goto fail;
    }
    printf("get (journal)   %8.0f gets/s  (%ld gets of sessions just updated)\n",
           journal_gets / (now_s() - t0), journal_gets);
    if (mn_session_store_stats_get(s, &st) != MN_OK)
        goto fail;
    mn_session_store_close(s);
    s = NULL;

    t0 = now_s();
    if (mn_session_store_open(path, 0, 0, 0, &s) != MN_OK)
        goto fail;
    printf("open (reader)   %8.3f s       (snapshot index + %" PRId64 " journal records replayed)\n", now_s() - t0,
           st.journal_records);
    printf("files           snapshot %.1f MiB + journal %.1f MiB = %.0f bytes a session (state: %zu)\n",
           st.snapshot_bytes / 1048576.0, st.journal_bytes / 1048576.0,
           (double)(st.snapshot_bytes + st.journal_bytes) / (double)count, F * 4);
    rc = 0;
    goto done;
fail:
    rc = fail(NULL);
done:
    mn_session_store_close(s);
    free(r);
    free(lat);
    return rc;
}

static int parse_long(const char *opt, const char *arg, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || !*arg || *end || v < lo || v > hi) {
        fprintf(stderr, "mnemo sessions: --%s needs an integer in [%ld, %ld], got '%s'\n", opt, lo, hi, arg);
        return 0;
    }
    *out = v;
    return 1;
}

int cmd_sessions(int argc, char **argv) {
    const char *path = NULL;
    long count = 100000, k = 16, C = 256, gets = 20000, puts = 2000;
    static const struct option options[] = {
        {"store", required_argument, 0, 'S'}, {"count", required_argument, 0, 'n'},
        {"slots", required_argument, 0, 'k'}, {"width", required_argument, 0, 'C'},
        {"gets", required_argument, 0, 'g'},  {"puts", required_argument, 0, 'p'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        switch (opt) {
        case 'S': path = optarg; break;
        case 'n': if (!parse_long("count", optarg, 1, 100000000, &count)) return 2; break;
        case 'k': if (!parse_long("slots", optarg, 1, 4096, &k)) return 2; break;
        case 'C': if (!parse_long("width", optarg, 1, 65536, &C)) return 2; break;
        case 'g': if (!parse_long("gets", optarg, 1, 100000000, &gets)) return 2; break;
        case 'p': if (!parse_long("puts", optarg, 1, 100000000, &puts)) return 2; break;
        case 'h': usage(stdout); return 0;
        case ':': fprintf(stderr, "mnemo sessions: %s needs a value\n", argv[optind - 1]); return 2;
        default: fprintf(stderr, "mnemo sessions: unknown option '%s'\n", argv[optind - 1]); usage(stderr); return 2;
        }
    }
    const char *action = optind < argc ? argv[optind] : NULL, *id = optind + 1 < argc ? argv[optind + 1] : NULL;
    int wants_id = action && (!strcmp(action, "show") || !strcmp(action, "delete"));
    if (!path || !action || (wants_id != (id != NULL)) || optind + 1 + wants_id < argc) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(action, "bench"))
        return bench(path, count, (int)k, (int)C, gets, puts);

    int writer = !strcmp(action, "delete") || !strcmp(action, "compact");
    if (!writer && strcmp(action, "list") && strcmp(action, "show")) {
        fprintf(stderr, "mnemo sessions: unknown action '%s'\n", action);
        usage(stderr);
        return 2;
    }
    mn_session_store *s = NULL;
    if (mn_session_store_open(path, writer ? MN_STORE_WRITE : 0, 0, 0, &s) != MN_OK)
        return fail(NULL);
    int rc = 0;
    char when[32];
    if (!strcmp(action, "list")) {
        mn_session_info *infos = NULL;
        size_t n = 0;
        if (mn_session_list(s, &infos, &n) != MN_OK) {
            rc = fail(NULL);
        } else {
            for (size_t i = 0; i < n; i++) {
                iso_time(infos[i].updated_us, when, sizeof when);
                printf("%s\t%" PRId64 " turns\tupdated %s\tfingerprint %016" PRIx64 "\n", infos[i].id, infos[i].turns,
                       when, infos[i].fingerprint);
            }
            free(infos);
        }
    } else if (!strcmp(action, "show")) {
        int k_, C_, found = 0;
        mn_session_store_shape(s, &k_, &C_);
        mn_session_info info;
        float *r = malloc((size_t)k_ * C_ * sizeof *r);
        /* read back with the session's own fingerprint: show never refuses a state */
        if (!r || mn_session_get(s, id, 0, NULL, &info, &found) != MN_OK ||
            (found && mn_session_get(s, id, info.fingerprint, r, NULL, &found) != MN_OK)) {
            rc = fail(id);
        } else if (!found) {
            fprintf(stderr, "mnemo sessions: no session '%s' in %s\n", id, path);
            rc = 1;
        } else {
            double norm = 0;
            for (int i = 0; i < k_ * C_; i++)
                norm += (double)r[i] * r[i];
            char created[32];
            iso_time(info.created_us, created, sizeof created);
            iso_time(info.updated_us, when, sizeof when);
            printf("session      %s\nturns        %" PRId64 "\ncreated      %s\nupdated      %s\nfingerprint  %016" PRIx64
                   "\nstate        %d x %d, |R| = %.6f\n",
                   info.id, info.turns, created, when, info.fingerprint, k_, C_, sqrt(norm));
        }
        free(r);
    } else if (!strcmp(action, "delete")) {
        int existed = 0;
        if (mn_session_delete(s, id, &existed) != MN_OK)
            rc = fail(id);
        else if (!existed)
            fprintf(stderr, "mnemo sessions: no session '%s' in %s\n", id, path), rc = 1;
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
