/* One session's summary and the store benchmark (session_ops.h), on the public store API. */
#include "io/session_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/clock.h"
#include "core/error.h"
#include "text/text_util.h"

mn_status mn_session_describe(mn_session_store *store, const char *id, mn_session_info *info, double *state_norm,
                              int *found) {
    if (!store || !id || !info || !state_norm || !found)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_describe: NULL argument");
    int k, C;
    mn_session_store_shape(store, &k, &C);
    MN_TRY(mn_session_get(store, id, 0, NULL, info, found));
    if (!*found)
        return MN_OK;
    float *r = malloc((size_t)k * C * sizeof *r);
    if (!r)
        return mn_fail(MN_ERR_NOMEM, "session '%s': out of memory for its state", id);
    mn_status st = mn_session_get(store, id, info->fingerprint, r, NULL, found);
    if (st == MN_OK)
        *state_norm = mn_l2_norm(r, (size_t)k * C);
    free(r);
    return st;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if there is none. */
static size_t utf8_length(const char *p, size_t n) {
    for (size_t k = 1; k <= 4 && k <= n; k++)
        if (mn_utf8_valid(p, k)) /* a proper prefix of a sequence is never valid */
            return k;
    return 0;
}

void mn_session_id_escape(const char *id, char *out, size_t cap) {
    size_t o = 0, n = strlen(id);
    if (!cap)
        return;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)id[i];
        size_t k = utf8_length(id + i, n - i);
        int c1 = k == 2 && c == 0xc2 && (unsigned char)id[i + 1] < 0xa0; /* U+0080..U+009F */
        char piece[12];
        size_t len;
        if (k > 1 && !c1) {
            memcpy(piece, id + i, k);
            len = k;
        } else if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
            piece[0] = '\\';
            piece[1] = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
            len = 2;
            k = 1;
        } else if (c < 0x20 || c >= 0x7f) {
            k = c1 ? 2 : 1;
            len = 0;
            for (size_t j = 0; j < k; j++)
                len += (size_t)snprintf(piece + len, sizeof piece - len, "\\x%02x", (unsigned char)id[i + j]);
        } else {
            piece[0] = (char)c;
            len = k = 1;
        }
        if (o + len >= cap)
            break;
        memcpy(out + o, piece, len);
        o += len;
        i += k;
    }
    out[o] = '\0';
}

/* ---------------------------------------------------------------- the benchmark */
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

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts the n latencies; their rate, median and 99th percentile. */
static void summarise(double *lat, int64_t n, double *rate, double *p50, double *p99) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += lat[i];
    qsort(lat, (size_t)n, sizeof *lat, by_value);
    *rate = (double)n / sum;
    *p50 = lat[n / 2];
    *p99 = lat[n * 99 / 100];
}

static void session_id(char *id, size_t cap, uint64_t i) { snprintf(id, cap, "user-%08llu", (unsigned long long)i); }

/* Random gets of existing sessions, seeds *seed onwards, each timed into lat. */
static mn_status timed_gets(mn_session_store *s, uint64_t fp, float *r, int64_t count, int64_t n, uint64_t *seed,
                            double *lat) {
    char id[64];
    for (int64_t i = 0; i < n; i++) {
        session_id(id, sizeof id, mix((*seed)++) % (uint64_t)count);
        int found = 0;
        double a = mn_clock_s();
        MN_TRY(mn_session_get(s, id, fp, r, NULL, &found));
        if (!found)
            return mn_fail(MN_ERR_FORMAT, "session store bench: session %s went missing", id);
        lat[i] = mn_clock_s() - a;
    }
    return MN_OK;
}

/* Random updates, session mix(first + i) each, new state seeded by its index + salt. */
static mn_status timed_puts(mn_session_store *s, uint64_t fp, float *r, size_t F, const mn_session_bench_options *o,
                            uint64_t first, uint64_t salt, int64_t turns, double *lat) {
    char id[64];
    for (int64_t i = 0; i < o->puts; i++) {
        uint64_t which = mix(first + (uint64_t)i) % (uint64_t)o->count;
        session_id(id, sizeof id, which);
        fill_state(r, F, which + salt);
        double a = mn_clock_s();
        MN_TRY(mn_session_put(s, id, fp, r, turns));
        lat[i] = mn_clock_s() - a;
    }
    return MN_OK;
}

static mn_status bench(const char *path, const mn_session_bench_options *o, mn_session_bench_result *res, float *r,
                       double *lat, mn_session_store **s) {
    const size_t F = (size_t)o->n_slots * o->width;
    const uint64_t fp = 0x62656e6368ull;
    char id[64];
    mn_session_store_stats st;

    /* fill without fsync (a bulk load), automatic compaction on */
    double t0 = mn_clock_s();
    MN_TRY(mn_session_store_open(path, MN_STORE_WRITE | MN_STORE_CREATE | MN_STORE_NO_SYNC, o->n_slots, o->width, s));
    for (int64_t i = 0; i < o->count; i++) {
        session_id(id, sizeof id, (uint64_t)i);
        fill_state(r, F, (uint64_t)i);
        MN_TRY(mn_session_put(*s, id, fp, r, 1));
    }
    MN_TRY(mn_session_store_stats_get(*s, &st));
    res->fill_s = mn_clock_s() - t0;
    res->fill_rate = (double)o->count / res->fill_s;
    res->fill_compactions = st.compactions;
    t0 = mn_clock_s();
    MN_TRY(mn_session_store_compact(*s));
    res->compact_s = mn_clock_s() - t0;
    mn_session_store_close(*s);
    *s = NULL;

    t0 = mn_clock_s();
    MN_TRY(mn_session_store_open(path, MN_STORE_WRITE, 0, 0, s));
    res->open_writer_s = mn_clock_s() - t0;

    /* random gets, all from the snapshot */
    uint64_t seed = 1;
    MN_TRY(timed_gets(*s, fp, r, o->count, o->gets, &seed, lat));
    summarise(lat, o->gets, &res->get_rate, &res->get_p50, &res->get_p99);

    /* random updates, each fsynced before it returns */
    MN_TRY(timed_puts(*s, fp, r, F, o, seed, 7, 2, lat));
    seed += (uint64_t)o->puts;
    summarise(lat, o->puts, &res->put_sync_rate, &res->put_sync_p50, &res->put_sync_p99);
    res->put_sync_max = lat[o->puts - 1];

    /* the same without fsync (automatic compaction off): the put's own cost */
    mn_session_store_close(*s);
    *s = NULL;
    MN_TRY(mn_session_store_open(path, MN_STORE_WRITE | MN_STORE_NO_SYNC, 0, 0, s));
    mn_session_store_set_autocompact(*s, 0);
    MN_TRY(timed_puts(*s, fp, r, F, o, seed + 1000003, 9, 3, lat));
    summarise(lat, o->puts, &res->put_rate, &res->put_p50, &res->put_p99);

    /* gets of the sessions the fsynced puts wrote: they live in the journal */
    res->journal_gets = o->puts < o->gets ? o->puts : o->gets;
    uint64_t replay = seed - (uint64_t)o->puts;
    t0 = mn_clock_s();
    MN_TRY(timed_gets(*s, fp, r, o->count, res->journal_gets, &replay, lat));
    res->journal_get_rate = (double)res->journal_gets / (mn_clock_s() - t0);
    MN_TRY(mn_session_store_stats_get(*s, &st));
    mn_session_store_close(*s);
    *s = NULL;

    t0 = mn_clock_s();
    MN_TRY(mn_session_store_open(path, 0, 0, 0, s));
    res->open_reader_s = mn_clock_s() - t0;
    res->journal_records = st.journal_records;
    res->snapshot_bytes = st.snapshot_bytes;
    res->journal_bytes = st.journal_bytes;
    return MN_OK;
}

mn_status mn_session_store_bench(const char *path, const mn_session_bench_options *o, mn_session_bench_result *r) {
    if (!path || !o || !r)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_store_bench: NULL argument");
    if (o->count < 1 || o->gets < 1 || o->puts < 1 || o->n_slots < 1 || o->width < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "session store bench: count, gets, puts, slots and width must be >= 1");
    struct stat sb;
    if (stat(path, &sb) == 0)
        return mn_fail(MN_ERR_INVALID_ARG, "%s exists; give a new path", path);
    *r = (mn_session_bench_result){0};
    float *state = malloc((size_t)o->n_slots * o->width * sizeof *state);
    double *lat = malloc((size_t)(o->puts > o->gets ? o->puts : o->gets) * sizeof *lat);
    mn_session_store *s = NULL;
    mn_status st = state && lat ? bench(path, o, r, state, lat, &s) : mn_fail(MN_ERR_NOMEM, "session store bench: out of memory");
    mn_session_store_close(s);
    free(state);
    free(lat);
    return st;
}
