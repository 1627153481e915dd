/* Session store: round trips, persistence, compaction, refusal of foreign states, recovery
 * from torn and stale journals, a writer SIGKILLed dozens of times at random moments, and
 * concurrent reader processes next to a writer process. Also the model fingerprint, and what
 * `mnemo sessions` shows and benchmarks. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "io/session_ops.h"
#include "io/session_store.h"
#include "mnemo.h"

#define SLOTS 4
#define WIDTH 8
#define F (SLOTS * WIDTH)
#define FP 0x1234abcd5678ef00ull

/* ---------------------------------------------------------------- helpers */
static void ok(mn_status st) {
    if (st != MN_OK)
        fail_msg("%s: %s", mn_status_name(st), mn_last_error());
}

static uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The state every test writes for (session number, version): any mix-up shows. */
static void pattern(int sid, int64_t version, float *r) {
    for (int i = 0; i < F; i++)
        r[i] = (float)(mix(((uint64_t)sid << 40) ^ ((uint64_t)version << 8) ^ (uint64_t)i) >> 40) / 16777216.0f - 0.5f;
}

static void sid_name(int sid, char *buf, size_t cap) { snprintf(buf, cap, "user-%04d", sid); }

typedef struct {
    char dir[256];
    char path[300];
} tmp_store;

static void tmp_store_make(tmp_store *t) {
    const char *base = getenv("TMPDIR");
    snprintf(t->dir, sizeof t->dir, "%s/mnemo-sessions-XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof t->path, "%s/store.h5", t->dir);
}

static void remove_suffix(const char *path, const char *suffix) {
    char p[400];
    snprintf(p, sizeof p, "%s%s", path, suffix);
    unlink(p);
}

static void tmp_store_remove(tmp_store *t) {
    remove_suffix(t->path, "");
    remove_suffix(t->path, MN_STORE_JOURNAL_SUFFIX);
    remove_suffix(t->path, MN_STORE_LOCK_SUFFIX);
    remove_suffix(t->path, MN_STORE_SNAPSHOT_TMP_SUFFIX);
    remove_suffix(t->path, MN_STORE_JOURNAL_TMP_SUFFIX);
    remove_suffix(t->path, ".saved");
    rmdir(t->dir);
}

static int file_exists(const char *path, const char *suffix) {
    char p[400];
    snprintf(p, sizeof p, "%s%s", path, suffix);
    return access(p, F_OK) == 0;
}

static off_t file_size(const char *path, const char *suffix) {
    char p[400];
    struct stat sb;
    snprintf(p, sizeof p, "%s%s", path, suffix);
    return stat(p, &sb) == 0 ? sb.st_size : -1;
}

/* A new empty store in a new temp folder, open for writing. */
static mn_session_store *new_store(tmp_store *t) {
    mn_session_store *s = NULL;
    tmp_store_make(t);
    ok(mn_session_store_open(t->path, MN_STORE_WRITE | MN_STORE_CREATE, SLOTS, WIDTH, &s));
    return s;
}

/* Asserts that session sid holds exactly `version` (turns) and its pattern. */
static void expect_session(mn_session_store *s, int sid, int64_t version) {
    char id[64];
    float r[F], want[F];
    mn_session_info info;
    int found = -1;
    sid_name(sid, id, sizeof id);
    ok(mn_session_get(s, id, FP, r, &info, &found));
    assert_int_equal(found, 1);
    assert_int_equal(info.turns, version);
    assert_string_equal(info.id, id);
    pattern(sid, version, want);
    assert_memory_equal(r, want, sizeof r);
}

static void put_version(mn_session_store *s, int sid, int64_t version) {
    char id[64];
    float r[F];
    sid_name(sid, id, sizeof id);
    pattern(sid, version, r);
    ok(mn_session_put(s, id, FP, r, version));
}

/* Whole file into a malloc'd buffer (*n bytes, then a NUL); NULL when missing. */
static uint8_t *read_whole(const char *path, const char *suffix, size_t *n) {
    char p[400];
    snprintf(p, sizeof p, "%s%s", path, suffix);
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)size + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)size, f), (size_t)size);
    b[size] = 0;
    fclose(f);
    *n = (size_t)size;
    return b;
}

/* Forked children report a failed check in this file and exit 1; cmocka's asserts belong to
 * the parent. */
static char child_why[400];

static void child_fail(int line, const char *fmt, ...) {
    FILE *f = fopen(child_why, "w");
    if (f) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(f, "line %d: ", line);
        vfprintf(f, fmt, ap);
        va_end(ap);
        fclose(f);
    }
    _exit(1);
}
#define CHILD_CHECK(cond, ...)                      \
    do {                                            \
        if (!(cond))                                \
            child_fail(__LINE__, __VA_ARGS__);      \
    } while (0)

/* Applies a file-size limit of `bytes` to this process, with SIGXFSZ ignored so that a write
 * past it fails with EFBIG (a full disk's ENOSPC takes the same paths) instead of killing. */
static void limit_file_size(rlim_t bytes) {
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {bytes, bytes};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
        _exit(126);
}

typedef struct {
    const char *path;
    rlim_t limit;
} limit_ctx;

/* Runs fn(ctx) in a child whose stderr goes to err_path; fails with the child's reason unless
 * it exits 0. */
static void run_child(void (*fn)(void *), void *ctx, const char *err_path) {
    unlink(child_why);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0)
            _exit(126);
        fn(ctx);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        size_t n = 0;
        uint8_t *why = read_whole(child_why, "", &n);
        fail_msg("child %s %d: %.*s", WIFEXITED(status) ? "exited" : "killed by signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), why ? (int)n : 0, why ? (char *)why : "");
    }
}

/* Runs `mnemo ARGS...` (MNEMO_BIN) with stdout and stderr in files, under a file-size limit
 * when limit > 0; its exit status, or 128 + the signal that killed it. */
static int run_mnemo(const char *const *args, rlim_t limit, const char *out_path, const char *err_path) {
    const char *bin = getenv("MNEMO_BIN");
    assert_non_null(bin);
    const char *argv[16] = {bin};
    int n = 1;
    for (int i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
            _exit(126);
        if (limit > 0)
            limit_file_size(limit);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int count_lines(const uint8_t *text, size_t n) {
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += text[i] == '\n';
    return lines;
}

/* ---------------------------------------------------------------- basics */
static void test_round_trip_and_persistence(void **state) {
    (void)state;
    tmp_store t;
    tmp_store_make(&t);
    mn_session_store *s = NULL;
    /* a reader cannot create; a missing store is a clear error */
    assert_int_equal(mn_session_store_open(t.path, 0, 0, 0, &s), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "no session store"));
    assert_int_equal(mn_session_store_open(t.path, MN_STORE_WRITE | MN_STORE_CREATE, 0, 0, &s), MN_ERR_INVALID_ARG);
    ok(mn_session_store_open(t.path, MN_STORE_WRITE | MN_STORE_CREATE, SLOTS, WIDTH, &s));
    int k = 0, c = 0;
    mn_session_store_shape(s, &k, &c);
    assert_int_equal(k, SLOTS);
    assert_int_equal(c, WIDTH);

    float r[F];
    int found = -1;
    ok(mn_session_get(s, "nobody", FP, r, NULL, &found));
    assert_int_equal(found, 0);
    for (int sid = 0; sid < 10; sid++)
        put_version(s, sid, 1);
    put_version(s, 3, 2); /* replaces */
    mn_session_info before, after;
    ok(mn_session_get(s, "user-0003", FP, NULL, &before, &found));
    assert_true(before.created_us <= before.updated_us);
    int existed = -1;
    ok(mn_session_delete(s, "user-0005", &existed));
    assert_int_equal(existed, 1);
    ok(mn_session_delete(s, "user-0005", &existed));
    assert_int_equal(existed, 0);

    mn_session_info *infos = NULL;
    size_t n = 0;
    ok(mn_session_list(s, &infos, &n));
    assert_int_equal(n, 9);
    for (size_t i = 1; i < n; i++)
        assert_true(strcmp(infos[i - 1].id, infos[i].id) < 0);
    free(infos);
    mn_session_store_close(s);

    /* everything survives a reopen (journal replay), as a reader and as a writer */
    for (int pass = 0; pass < 2; pass++) {
        ok(mn_session_store_open(t.path, pass ? MN_STORE_WRITE : 0, 0, 0, &s));
        for (int sid = 0; sid < 10; sid++) {
            if (sid == 5) {
                char id[64];
                sid_name(sid, id, sizeof id);
                ok(mn_session_get(s, id, FP, r, NULL, &found));
                assert_int_equal(found, 0);
                continue;
            }
            expect_session(s, sid, sid == 3 ? 2 : 1);
        }
        ok(mn_session_get(s, "user-0003", FP, NULL, &after, &found));
        assert_int_equal(after.created_us, before.created_us);
        assert_int_equal(after.updated_us, before.updated_us);
        mn_session_store_close(s);
    }

    /* a later put keeps the created time and moves the updated time */
    ok(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &s));
    put_version(s, 3, 3);
    ok(mn_session_get(s, "user-0003", FP, NULL, &after, &found));
    assert_int_equal(after.created_us, before.created_us);
    assert_true(after.updated_us >= before.updated_us);
    mn_session_store_close(s);
    tmp_store_remove(&t);
}

static void test_refusals(void **state) {
    (void)state;
    tmp_store t;
    tmp_store_make(&t);
    mn_session_store *s = NULL, *r = NULL;
    ok(mn_session_store_open(t.path, MN_STORE_WRITE | MN_STORE_CREATE, SLOTS, WIDTH, &s));
    put_version(s, 1, 1);

    /* a state written by another compressor: MN_ERR_MISMATCH naming the session, r untouched */
    float buf[F];
    for (int i = 0; i < F; i++)
        buf[i] = 7.0f;
    int found = -1;
    assert_int_equal(mn_session_get(s, "user-0001", FP ^ 1, buf, NULL, &found), MN_ERR_MISMATCH);
    assert_non_null(strstr(mn_last_error(), "user-0001"));
    assert_non_null(strstr(mn_last_error(), "another compressor"));
    assert_int_equal(found, 0);
    for (int i = 0; i < F; i++)
        assert_true(buf[i] == 7.0f);
    /* its info is still readable (r == NULL) */
    mn_session_info info;
    ok(mn_session_get(s, "user-0001", FP ^ 1, NULL, &info, &found));
    assert_int_equal(found, 1);
    assert_true(info.fingerprint == FP);

    /* bad input */
    char long_id[MN_SESSION_ID_MAX + 2];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    pattern(1, 1, buf);
    assert_int_equal(mn_session_put(s, long_id, FP, buf, 1), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_session_put(s, "", FP, buf, 1), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_session_put(s, "neg", FP, buf, -1), MN_ERR_INVALID_ARG);
    buf[5] = NAN;
    assert_int_equal(mn_session_put(s, "nan", FP, buf, 1), MN_ERR_NUMERIC);
    long_id[MN_SESSION_ID_MAX] = '\0'; /* exactly the maximum is fine */
    pattern(2, 1, buf);
    ok(mn_session_put(s, long_id, FP, buf, 1));

    /* a second writer is refused at once while the first is open; readers are welcome */
    mn_session_store *w2 = NULL;
    assert_int_equal(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &w2), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "open for writing"));
    assert_null(w2);
    ok(mn_session_store_open(t.path, 0, 0, 0, &r));
    assert_int_equal(mn_session_put(r, "x", FP, buf, 1), MN_ERR_INVALID_ARG); /* read-only handle */
    /* an open reader sees each completed put, delete and compaction at its next call */
    expect_session(r, 1, 1);
    put_version(s, 1, 2);
    expect_session(r, 1, 2);
    ok(mn_session_store_compact(s));
    put_version(s, 1, 3);
    expect_session(r, 1, 3);
    ok(mn_session_delete(s, "user-0001", NULL));
    ok(mn_session_get(r, "user-0001", FP, NULL, NULL, &found));
    assert_int_equal(found, 0);
    put_version(s, 1, 4);
    expect_session(r, 1, 4);
    assert_int_equal(mn_session_delete(r, "user-0001", NULL), MN_ERR_INVALID_ARG);
    mn_session_store_close(r);
    /* another shape is another model's store */
    assert_int_equal(mn_session_store_open(t.path, 0, SLOTS + 1, WIDTH, &r), MN_ERR_MISMATCH);
    mn_session_store_close(s);
    ok(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &w2)); /* free once the first closed */
    mn_session_store_close(w2);
    tmp_store_remove(&t);
}

/* ---------------------------------------------------------------- compaction and recovery */
static void test_compaction(void **state) {
    (void)state;
    tmp_store t;
    tmp_store_make(&t);
    mn_session_store *s = NULL;
    ok(mn_session_store_open(t.path, MN_STORE_WRITE | MN_STORE_CREATE | MN_STORE_NO_SYNC, SLOTS, WIDTH, &s));
    mn_session_store_set_autocompact(s, 16);
    int64_t version[200] = {0};
    uint64_t seed = 5;
    for (int i = 0; i < 3000; i++) {
        int sid = (int)(mix(seed++) % 200);
        if (mix(seed++) % 10 == 0 && version[sid] > 0) {
            char id[64];
            int existed = 0;
            sid_name(sid, id, sizeof id);
            ok(mn_session_delete(s, id, &existed));
            assert_int_equal(existed, 1);
            version[sid] = 0;
        } else {
            version[sid] = 1 + i; /* unique per put, so a stale state cannot pass for a new one */
            put_version(s, sid, version[sid]);
        }
    }
    mn_session_store_stats stats;
    ok(mn_session_store_stats_get(s, &stats));
    assert_true(stats.compactions >= 5);
    assert_int_equal(stats.last_compact_status, MN_OK);
    assert_true(stats.generation >= 6);
    /* the journal never grows past max(16, snapshot rows) records */
    assert_true(stats.journal_records <= (stats.snapshot_rows > 16 ? stats.snapshot_rows : 16));
    int live = 0;
    for (int sid = 0; sid < 200; sid++)
        live += version[sid] > 0;
    assert_int_equal(stats.sessions, live);
    ok(mn_session_store_compact(s));
    ok(mn_session_store_stats_get(s, &stats));
    assert_int_equal(stats.journal_records, 0);
    assert_int_equal(stats.snapshot_rows, live);
    mn_session_store_close(s);
    for (int pass = 0; pass < 2; pass++) { /* after explicit compaction, and after more puts */
        ok(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &s));
        for (int sid = 0; sid < 200; sid++) {
            if (version[sid] > 0) {
                expect_session(s, sid, version[sid]);
            } else {
                char id[64];
                int found = -1;
                sid_name(sid, id, sizeof id);
                ok(mn_session_get(s, id, FP, NULL, NULL, &found));
                assert_int_equal(found, 0);
            }
        }
        put_version(s, 7, ++version[7]);
        mn_session_store_close(s);
    }
    tmp_store_remove(&t);
}

static void append_bytes(const char *path, const char *suffix, const void *data, size_t n) {
    char p[400];
    snprintf(p, sizeof p, "%s%s", path, suffix);
    FILE *f = fopen(p, "ab");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void test_torn_and_damaged_journal(void **state) {
    (void)state;
    tmp_store t;
    mn_session_store *s = new_store(&t);
    for (int sid = 0; sid < 5; sid++)
        put_version(s, sid, 1);
    mn_session_store_close(s);
    size_t rb = mn_journal_record_bytes(F);
    off_t clean = file_size(t.path, MN_STORE_JOURNAL_SUFFIX);
    assert_int_equal(clean, MN_JOURNAL_HEADER_BYTES + 5 * rb);

    /* a torn record (a writer killed mid-append): half a record of garbage at the end */
    uint8_t *junk = calloc(1, 2 * rb);
    memset(junk, 0x5a, rb / 2);
    append_bytes(t.path, MN_STORE_JOURNAL_SUFFIX, junk, rb / 2);
    ok(mn_session_store_open(t.path, 0, 0, 0, &s)); /* a reader ignores it */
    for (int sid = 0; sid < 5; sid++)
        expect_session(s, sid, 1);
    mn_session_store_close(s);
    ok(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &s)); /* the writer drops it */
    assert_int_equal(file_size(t.path, MN_STORE_JOURNAL_SUFFIX), clean);
    put_version(s, 9, 1);
    mn_session_store_close(s);
    ok(mn_session_store_open(t.path, 0, 0, 0, &s));
    expect_session(s, 9, 1);
    mn_session_store_close(s);

    /* a complete bad last record is not what a crash leaves (that is a partial one): refused,
     * naming the journal and the byte, unless the caller asks to recover */
    append_bytes(t.path, MN_STORE_JOURNAL_SUFFIX, junk, rb);
    for (int writer = 0; writer < 2; writer++) {
        assert_int_equal(mn_session_store_open(t.path, writer ? MN_STORE_WRITE : 0, 0, 0, &s), MN_ERR_FORMAT);
        assert_null(s);
        char where[64];
        snprintf(where, sizeof where, "record 6 at byte %lld", (long long)(clean + (off_t)rb));
        assert_non_null(strstr(mn_last_error(), ".journal"));
        assert_non_null(strstr(mn_last_error(), where));
        assert_non_null(strstr(mn_last_error(), "MN_STORE_RECOVER"));
        assert_int_equal(file_size(t.path, MN_STORE_JOURNAL_SUFFIX), clean + 2 * (off_t)rb);
    }
    ok(mn_session_store_open(t.path, MN_STORE_RECOVER, 0, 0, &s)); /* a reader recovers its view only */
    expect_session(s, 9, 1);
    assert_non_null(mn_session_store_recovery(s));
    assert_non_null(strstr(mn_session_store_recovery(s), "dropping 1 record"));
    mn_session_store_close(s);
    assert_int_equal(file_size(t.path, MN_STORE_JOURNAL_SUFFIX), clean + 2 * (off_t)rb);
    ok(mn_session_store_open(t.path, MN_STORE_WRITE | MN_STORE_RECOVER, 0, 0, &s)); /* the writer truncates */
    mn_session_store_stats stats;
    ok(mn_session_store_stats_get(s, &stats));
    assert_int_equal(stats.recovered_records, 1);
    assert_int_equal(file_size(t.path, MN_STORE_JOURNAL_SUFFIX), clean + (off_t)rb);
    mn_session_store_close(s);
    ok(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &s));
    assert_null(mn_session_store_recovery(s)); /* nothing to recover any more */
    expect_session(s, 9, 1);
    mn_session_store_close(s);

    /* damage in the middle is not a crash: refused, naming the journal and the record */
    char jp[400];
    snprintf(jp, sizeof jp, "%s%s", t.path, MN_STORE_JOURNAL_SUFFIX);
    int fd = open(jp, O_RDWR);
    assert_true(fd >= 0);
    uint8_t byte = 0;
    off_t at = MN_JOURNAL_HEADER_BYTES + (off_t)rb + MN_RECORD_STATE_OFFSET + 3;
    assert_int_equal(pread(fd, &byte, 1, at), 1);
    byte ^= 0x40;
    assert_int_equal(pwrite(fd, &byte, 1, at), 1);
    assert_int_equal(mn_session_store_open(t.path, 0, 0, 0, &s), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), ".journal"));
    assert_non_null(strstr(mn_last_error(), "record 1"));
    byte ^= 0x40;
    assert_int_equal(pwrite(fd, &byte, 1, at), 1);
    close(fd);
    ok(mn_session_store_open(t.path, 0, 0, 0, &s));
    expect_session(s, 1, 1);
    mn_session_store_close(s);
    free(junk);
    tmp_store_remove(&t);
}

/* Flips one bit of the file at offset `at`. */
static void flip_byte(const char *path, const char *suffix, off_t at, uint8_t mask) {
    char p[400];
    snprintf(p, sizeof p, "%s%s", path, suffix);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    uint8_t byte = 0;
    assert_int_equal(pread(fd, &byte, 1, at), 1);
    byte ^= mask;
    assert_int_equal(pwrite(fd, &byte, 1, at), 1);
    close(fd);
}

/* The issue's case: one flipped bit in the last complete record used to roll its session back
 * a turn without a word. Now it is refused; recovery rolls back on request and says so. A bad
 * record in the middle drops everything from it on. */
static void test_recover_corrupt_records(void **state) {
    (void)state;
    tmp_store t;
    mn_session_store *s = new_store(&t);
    for (int sid = 0; sid < 5; sid++)
        put_version(s, sid, 1);
    put_version(s, 2, 2); /* record 5, the last */
    mn_session_store_close(s);
    size_t rb = mn_journal_record_bytes(F);
    off_t last = MN_JOURNAL_HEADER_BYTES + 5 * (off_t)rb;
    flip_byte(t.path, MN_STORE_JOURNAL_SUFFIX, last + MN_RECORD_STATE_OFFSET + 7, 0x01);
    assert_int_equal(mn_session_store_open(t.path, 0, 0, 0, &s), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "checksum"));
    ok(mn_session_store_open(t.path, MN_STORE_WRITE | MN_STORE_RECOVER, 0, 0, &s));
    expect_session(s, 2, 1); /* rolled back, as asked */
    assert_non_null(strstr(mn_session_store_recovery(s), "record 5"));
    mn_session_store_close(s);
    assert_int_equal(file_size(t.path, MN_STORE_JOURNAL_SUFFIX), last);

    /* a bad record 1 of 5: records 1..4 go, session 0 stays */
    flip_byte(t.path, MN_STORE_JOURNAL_SUFFIX, MN_JOURNAL_HEADER_BYTES + (off_t)rb + 60, 0x20); /* in its id */
    assert_int_equal(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &s), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "record 1"));
    ok(mn_session_store_open(t.path, MN_STORE_RECOVER, 0, 0, &s));
    mn_session_store_stats stats;
    ok(mn_session_store_stats_get(s, &stats));
    assert_int_equal(stats.recovered_records, 4);
    assert_int_equal(stats.sessions, 1);
    assert_non_null(strstr(mn_session_store_recovery(s), "dropping 4 records"));
    expect_session(s, 0, 1);
    mn_session_store_close(s);

    /* the command line: refused with the way out named; --recover takes it and says what it did */
    char out[400], err[400];
    snprintf(out, sizeof out, "%s/out", t.dir);
    snprintf(err, sizeof err, "%s/err", t.dir);
    const char *list[] = {"sessions", "--store", t.path, "list", NULL};
    assert_int_equal(run_mnemo(list, 0, out, err), 1);
    size_t n = 0;
    uint8_t *text = read_whole(err, "", &n);
    assert_int_equal(count_lines(text, n), 1);
    assert_non_null(strstr((char *)text, "--recover"));
    free(text);
    const char *recover[] = {"sessions", "--store", t.path, "--recover", "compact", NULL};
    assert_int_equal(run_mnemo(recover, 0, out, err), 0);
    text = read_whole(err, "", &n);
    assert_non_null(strstr((char *)text, "dropping 4 records"));
    free(text);
    assert_int_equal(run_mnemo(list, 0, out, err), 0);
    text = read_whole(out, "", &n);
    assert_int_equal(count_lines(text, n), 1);
    free(text);
    unlink(out), unlink(err);
    tmp_store_remove(&t);
}

/* A snapshot always has its journal (creation writes the journal first): without it, the
 * puts since the last compaction are gone, which is an error, not an empty store. */
static void test_missing_journal(void **state) {
    (void)state;
    tmp_store t;
    mn_session_store *s = new_store(&t);
    put_version(s, 1, 1);
    ok(mn_session_store_compact(s));
    put_version(s, 1, 2);
    mn_session_store_close(s);
    remove_suffix(t.path, MN_STORE_JOURNAL_SUFFIX);
    for (int writer = 0; writer < 2; writer++) {
        assert_int_equal(mn_session_store_open(t.path, writer ? MN_STORE_WRITE : 0, 0, 0, &s), MN_ERR_FORMAT);
        assert_non_null(strstr(mn_last_error(), MN_STORE_JOURNAL_SUFFIX));
        assert_non_null(strstr(mn_last_error(), "missing"));
        assert_false(file_exists(t.path, MN_STORE_JOURNAL_SUFFIX));
    }
    ok(mn_session_store_open(t.path, MN_STORE_RECOVER, 0, 0, &s)); /* the snapshot alone */
    expect_session(s, 1, 1);
    assert_non_null(strstr(mn_session_store_recovery(s), "missing"));
    mn_session_store_close(s);
    ok(mn_session_store_open(t.path, MN_STORE_WRITE | MN_STORE_RECOVER, 0, 0, &s)); /* a new empty journal */
    put_version(s, 1, 3);
    mn_session_store_close(s);
    ok(mn_session_store_open(t.path, 0, 0, 0, &s));
    expect_session(s, 1, 3);
    mn_session_store_close(s);
    tmp_store_remove(&t);
}

/* Creating a store under a file-size limit too small for its snapshot. */
static void create_under_limit(void *arg) {
    const limit_ctx *c = arg;
    limit_file_size(c->limit);
    mn_session_store *s = NULL;
    mn_status st = mn_session_store_open(c->path, MN_STORE_WRITE | MN_STORE_CREATE, SLOTS, WIDTH, &s);
    CHILD_CHECK(st == MN_ERR_IO && strstr(mn_last_error(), strerror(EFBIG)), "creation past the limit: %s: %s",
                mn_status_name(st), mn_last_error());
}

/* A store that fails to open removes the lock file it created, and only that: a lock file it
 * found (the store's own, maybe held by another handle) stays. */
static void test_refused_open_leaves_no_lock(void **state) {
    (void)state;
    tmp_store t;
    tmp_store_make(&t);
    mn_session_store *s = NULL, *w = NULL;
    for (int writer = 0; writer < 2; writer++) { /* nothing there */
        assert_int_equal(mn_session_store_open(t.path, writer ? MN_STORE_WRITE : 0, 0, 0, &s), MN_ERR_IO);
        assert_non_null(strstr(mn_last_error(), "no session store"));
        assert_false(file_exists(t.path, MN_STORE_LOCK_SUFFIX));
    }
    /* a creation that fails half-way leaves nothing at all */
    char why_dir[400];
    snprintf(child_why, sizeof child_why, "%s/why", t.dir);
    snprintf(why_dir, sizeof why_dir, "%s/err", t.dir);
    limit_ctx c = {t.path, 200}; /* the journal's header fits, the snapshot does not */
    run_child(create_under_limit, &c, why_dir);
    unlink(why_dir);
    assert_false(file_exists(t.path, "") || file_exists(t.path, MN_STORE_JOURNAL_SUFFIX) ||
                 file_exists(t.path, MN_STORE_LOCK_SUFFIX) || file_exists(t.path, MN_STORE_SNAPSHOT_TMP_SUFFIX) ||
                 file_exists(t.path, MN_STORE_JOURNAL_TMP_SUFFIX));

    /* a damaged store copied without its lock file: refused, and no lock file appears */
    ok(mn_session_store_open(t.path, MN_STORE_WRITE | MN_STORE_CREATE, SLOTS, WIDTH, &s));
    put_version(s, 1, 1);
    put_version(s, 2, 1);
    mn_session_store_close(s);
    flip_byte(t.path, MN_STORE_JOURNAL_SUFFIX, MN_JOURNAL_HEADER_BYTES + 100, 0x10);
    remove_suffix(t.path, MN_STORE_LOCK_SUFFIX);
    for (int writer = 0; writer < 2; writer++) {
        assert_int_equal(mn_session_store_open(t.path, writer ? MN_STORE_WRITE : 0, 0, 0, &s), MN_ERR_FORMAT);
        assert_false(file_exists(t.path, MN_STORE_LOCK_SUFFIX));
    }
    /* with its lock file there, the lock file stays */
    ok(mn_session_store_open(t.path, MN_STORE_RECOVER, 0, 0, &s)); /* creates it, and keeps it: opened */
    mn_session_store_close(s);
    assert_true(file_exists(t.path, MN_STORE_LOCK_SUFFIX));
    assert_int_equal(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &s), MN_ERR_FORMAT);
    assert_true(file_exists(t.path, MN_STORE_LOCK_SUFFIX));
    /* a writer refused because another holds the store keeps that writer's lock working */
    flip_byte(t.path, MN_STORE_JOURNAL_SUFFIX, MN_JOURNAL_HEADER_BYTES + 100, 0x10);
    ok(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &w));
    assert_int_equal(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &s), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "open for writing"));
    assert_true(file_exists(t.path, MN_STORE_LOCK_SUFFIX));
    assert_int_equal(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &s), MN_ERR_IO); /* still held */
    expect_session(w, 2, 1);
    mn_session_store_close(w);
    tmp_store_remove(&t);
}

static int copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    char buf[65536];
    size_t n;
    int rc = a && b ? 0 : -1;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, a)) > 0)
        rc = fwrite(buf, 1, n, b) == n ? 0 : -1;
    if (a)
        fclose(a);
    if (b)
        fclose(b);
    return rc;
}

/* A compaction that died between its two renames leaves the new snapshot next to the old
 * journal: every record of that journal is already in the snapshot, and must not be replayed
 * over the newer state. */
static void test_stale_journal(void **state) {
    (void)state;
    tmp_store t;
    mn_session_store *s = new_store(&t);
    mn_session_store_set_autocompact(s, 0);
    for (int sid = 0; sid < 4; sid++)
        put_version(s, sid, 1);
    char jp[400], saved[400];
    snprintf(jp, sizeof jp, "%s%s", t.path, MN_STORE_JOURNAL_SUFFIX);
    snprintf(saved, sizeof saved, "%s.saved", t.path);
    assert_int_equal(copy_file(jp, saved), 0);
    int existed;
    ok(mn_session_delete(s, "user-0002", &existed));
    put_version(s, 1, 2);
    ok(mn_session_store_compact(s));
    mn_session_store_close(s);
    assert_int_equal(rename(saved, jp), 0); /* the old journal is back, as after the crash */
    for (int pass = 0; pass < 2; pass++) {
        ok(mn_session_store_open(t.path, pass ? MN_STORE_WRITE : 0, 0, 0, &s));
        expect_session(s, 0, 1);
        expect_session(s, 1, 2); /* not rolled back to 1 by the stale record */
        int found = -1;
        ok(mn_session_get(s, "user-0002", FP, NULL, NULL, &found));
        assert_int_equal(found, 0); /* not resurrected */
        mn_session_store_close(s);
    }
    /* the writer replaced the stale journal with an empty one of the current generation */
    assert_int_equal(file_size(t.path, MN_STORE_JOURNAL_SUFFIX), MN_JOURNAL_HEADER_BYTES);
    tmp_store_remove(&t);
}

/* ---------------------------------------------------------------- kill -9 */
#define POOL 400
typedef struct {
    int32_t sid;
    int32_t phase;   /* 0: about to do it, 1: done (acknowledged) */
    int64_t version; /* 0: delete */
} crash_msg;

static void crash_writer(const char *path, int iteration, int no_sync, int out_fd) {
    mn_session_store *s = NULL;
    if (mn_session_store_open(path, MN_STORE_WRITE | (no_sync ? MN_STORE_NO_SYNC : 0), 0, 0, &s) != MN_OK)
        _exit(3);
    mn_session_store_set_autocompact(s, 32);
    uint64_t seed = mix((uint64_t)iteration * 7919 + 1);
    for (int64_t j = 1;; j++) {
        crash_msg m = {(int32_t)(mix(seed++) % POOL), 0, (int64_t)iteration * 100000000 + j};
        if (mix(seed++) % 8 == 0)
            m.version = 0;
        char id[64];
        float r[F];
        sid_name(m.sid, id, sizeof id);
        if (write(out_fd, &m, sizeof m) != sizeof m)
            _exit(4);
        mn_status st;
        if (m.version) {
            pattern(m.sid, m.version, r);
            st = mn_session_put(s, id, FP, r, m.version);
        } else {
            st = mn_session_delete(s, id, NULL);
        }
        if (st != MN_OK)
            _exit(5);
        m.phase = 1;
        if (write(out_fd, &m, sizeof m) != sizeof m)
            _exit(4);
    }
}

/* Checks the store against what the killed writer acknowledged. The one operation in flight
 * may or may not have landed; every other session must be exactly as acknowledged. */
static void crash_verify(const char *path, const int64_t *acked, const crash_msg *pending, int writer) {
    mn_session_store *s = NULL;
    mn_status st = mn_session_store_open(path, writer ? MN_STORE_WRITE : 0, 0, 0, &s);
    if (st != MN_OK)
        fail_msg("store does not open after kill: %s", mn_last_error());
    for (int sid = 0; sid < POOL; sid++) {
        char id[64];
        float r[F], want[F];
        mn_session_info info;
        int found = -1;
        sid_name(sid, id, sizeof id);
        st = mn_session_get(s, id, FP, r, &info, &found);
        if (st != MN_OK)
            fail_msg("session %s unreadable after kill: %s", id, mn_last_error());
        int64_t have = found ? info.turns : 0;
        int ok_state = have == acked[sid] || (pending && pending->sid == sid && have == pending->version);
        if (!ok_state)
            fail_msg("session %s holds version %lld, acknowledged %lld (in flight: %s %lld)", id, (long long)have,
                     (long long)acked[sid], pending && pending->sid == sid ? "yes" : "no",
                     pending ? (long long)pending->version : 0LL);
        if (found) {
            pattern(sid, have, want);
            if (memcmp(r, want, sizeof r))
                fail_msg("session %s: the state of version %lld is damaged", id, (long long)have);
        }
    }
    mn_session_store_close(s);
}

static void test_kill9_writer(void **state) {
    (void)state;
    tmp_store t;
    mn_session_store *s = new_store(&t);
    mn_session_store_close(s);
    int64_t acked[POOL] = {0};
    const int iterations = 48;
    int mid_compaction = 0, torn = 0, total_acks = 0;
    uint64_t seed = (uint64_t)time(NULL);
    print_message("kill -9 test: seed %llu\n", (unsigned long long)seed);
    for (int it = 0; it < iterations; it++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_writer(t.path, it + 1, it % 2, fds[1]);
        }
        close(fds[1]);
        /* from before the child has opened the store to deep into its run */
        struct timespec ts = {0, (long)(mix(seed + (uint64_t)it) % 60000) * 1000};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        /* the acknowledged history; the last intent without an ack is the op in flight */
        crash_msg m, pending = {0};
        int has_pending = 0;
        ssize_t got;
        while ((got = read(fds[0], &m, sizeof m)) == sizeof m) {
            if (m.phase == 0) {
                pending = m;
                has_pending = 1;
            } else {
                acked[m.sid] = m.version;
                has_pending = 0;
                total_acks++;
            }
        }
        close(fds[0]);
        mid_compaction += file_exists(t.path, MN_STORE_SNAPSHOT_TMP_SUFFIX) ||
                          file_exists(t.path, MN_STORE_JOURNAL_TMP_SUFFIX);
        off_t js = file_size(t.path, MN_STORE_JOURNAL_SUFFIX);
        torn += js > MN_JOURNAL_HEADER_BYTES &&
                (js - MN_JOURNAL_HEADER_BYTES) % (off_t)mn_journal_record_bytes(F) != 0;
        /* a reader first (no recovery has happened yet), then a writer (which recovers) */
        crash_verify(t.path, acked, has_pending ? &pending : NULL, 0);
        crash_verify(t.path, acked, has_pending ? &pending : NULL, 1);
        /* whatever the writer's recovery settled on for the pending op is now the truth */
        if (has_pending) {
            ok(mn_session_store_open(t.path, 0, 0, 0, &s));
            char id[64];
            mn_session_info info;
            int found = 0;
            sid_name(pending.sid, id, sizeof id);
            ok(mn_session_get(s, id, FP, NULL, &info, &found));
            acked[pending.sid] = found ? info.turns : 0;
            mn_session_store_close(s);
        }
    }
    print_message("kill -9 test: %d kills, %d acknowledged operations, %d kills left a torn record, "
                  "%d landed mid-compaction\n",
                  iterations, total_acks, torn, mid_compaction);
    assert_true(total_acks > 100); /* the writer really ran between kills */
    tmp_store_remove(&t);
}

/* ---------------------------------------------------------------- processes side by side */
#define CPOOL 40

static void concurrent_writer(const char *path, double seconds, int ready_fd) {
    mn_session_store *s = NULL;
    /* no fsync: this is about what readers see, and more puts mean more interleavings */
    if (mn_session_store_open(path, MN_STORE_WRITE | MN_STORE_NO_SYNC, 0, 0, &s) != MN_OK)
        _exit(3);
    mn_session_store_set_autocompact(s, 24); /* readers must follow many compactions */
    if (write(ready_fd, "R", 1) != 1)
        _exit(4);
    close(ready_fd);
    int64_t version[CPOOL];
    for (int sid = 0; sid < CPOOL; sid++)
        version[sid] = 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t seed = 99;
    int puts = 0;
    mn_session_store_stats stats = {0};
    double elapsed = 0;
    do {
        int sid = (int)(mix(seed++) % CPOOL);
        char id[64];
        float r[F];
        sid_name(sid, id, sizeof id);
        pattern(sid, ++version[sid], r);
        if (mn_session_put(s, id, FP, r, version[sid]) != MN_OK)
            _exit(5);
        puts++;
        if (mn_session_store_stats_get(s, &stats) != MN_OK)
            _exit(6);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        elapsed = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        /* at least the readers' time, and at least 3 compactions (a loaded machine is slow) */
    } while ((elapsed < seconds || stats.compactions < 3) && elapsed < 60);
    if (stats.compactions < 3)
        _exit(6);
    mn_session_store_close(s);
    _exit(puts > 50 ? 0 : 7);
}

/* Every read must be a complete state of some version, and versions never go backwards. */
static void concurrent_reader(const char *path, double seconds) {
    mn_session_store *s = NULL;
    if (mn_session_store_open(path, 0, 0, 0, &s) != MN_OK)
        _exit(3);
    int64_t seen[CPOOL] = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t seed = (uint64_t)getpid();
    int reads = 0, advanced = 0;
    do {
        int sid = (int)(mix(seed++) % CPOOL);
        char id[64];
        float r[F], want[F];
        mn_session_info info;
        int found = 0;
        sid_name(sid, id, sizeof id);
        if (mn_session_get(s, id, FP, r, &info, &found) != MN_OK) {
            fprintf(stderr, "reader: %s\n", mn_last_error());
            _exit(4);
        }
        pattern(sid, info.turns, want);
        if (!found || memcmp(r, want, sizeof r) || info.turns < seen[sid])
            _exit(5);
        advanced += info.turns > seen[sid] && seen[sid] > 0;
        seen[sid] = info.turns;
        if (++reads % 64 == 0) {
            mn_session_info *infos;
            size_t n;
            if (mn_session_list(s, &infos, &n) != MN_OK || n != CPOOL)
                _exit(6);
            free(infos);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
    } while ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec) < seconds);
    mn_session_store_close(s);
    _exit(advanced > 0 ? 0 : 8); /* it did see the writer's progress */
}

static void test_concurrent_processes(void **state) {
    (void)state;
    tmp_store t;
    mn_session_store *s = new_store(&t);
    for (int sid = 0; sid < CPOOL; sid++)
        put_version(s, sid, 1);
    mn_session_store_close(s);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pids[3];
    pids[0] = fork();
    if (pids[0] == 0) {
        close(ready[0]);
        concurrent_writer(t.path, 2.0, ready[1]);
    }
    close(ready[1]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    /* while that writer lives, no other writer gets in, in this process or another */
    mn_session_store *w2 = NULL;
    assert_int_equal(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &w2), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "open for writing"));
    for (int i = 1; i < 3; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            concurrent_reader(t.path, 1.8);
    }
    for (int i = 0; i < 3; i++) {
        int status = 0;
        waitpid(pids[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("%s process ended with status %d", i ? "reader" : "writer",
                     WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
    }
    ok(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &w2)); /* released at its exit */
    mn_session_store_close(w2);
    tmp_store_remove(&t);
}

/* The documented protocol on path.lock byte 1: a reader's operation waits while someone holds
 * it exclusively (files being switched), a writer's put waits while a reader holds it shared. */
static int hold_data_lock(const char *path, short type) {
    char p[400];
    snprintf(p, sizeof p, "%s%s", path, MN_STORE_LOCK_SUFFIX);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 1, .l_len = 1};
    assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
    return fd;
}

/* A child opens the store first, then (once the parent holds the lock as `type`) runs one
 * operation; returns whether that operation finished within wait_ms, then releases the lock. */
static int op_finishes_while_held(const char *path, int writer, short type, int wait_ms) {
    int done[2], opened[2], go[2];
    assert_int_equal(pipe(done), 0);
    assert_int_equal(pipe(opened), 0);
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(done[0]), close(opened[0]), close(go[1]);
        mn_session_store *s = NULL;
        char c;
        if (mn_session_store_open(path, writer ? MN_STORE_WRITE : 0, 0, 0, &s) != MN_OK || write(opened[1], "O", 1) != 1 ||
            read(go[0], &c, 1) != 1)
            _exit(3);
        float r[F];
        int found;
        pattern(2, 9, r);
        mn_status st = writer ? mn_session_put(s, "user-0002", FP, r, 9) : mn_session_get(s, "user-0001", FP, r, NULL, &found);
        if (st != MN_OK || write(done[1], "D", 1) != 1)
            _exit(4);
        mn_session_store_close(s);
        _exit(0);
    }
    close(done[1]), close(opened[1]), close(go[0]);
    char c;
    assert_int_equal(read(opened[0], &c, 1), 1); /* the store is open: only the operation is timed */
    int held = hold_data_lock(path, type);
    assert_int_equal(write(go[1], "G", 1), 1);
    struct timespec ts = {wait_ms / 1000, (long)(wait_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    int flags = fcntl(done[0], F_GETFL);
    fcntl(done[0], F_SETFL, flags | O_NONBLOCK);
    int finished = read(done[0], &c, 1) == 1;
    close(held); /* release: the operation must now complete */
    fcntl(done[0], F_SETFL, flags);
    if (!finished)
        assert_int_equal(read(done[0], &c, 1), 1);
    close(done[0]), close(opened[0]), close(go[1]);
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return finished;
}

static void test_lock_protocol(void **state) {
    (void)state;
    tmp_store t;
    mn_session_store *s = new_store(&t);
    put_version(s, 1, 1);
    mn_session_store_close(s);
    assert_false(op_finishes_while_held(t.path, 0, F_WRLCK, 300));
    assert_false(op_finishes_while_held(t.path, 1, F_RDLCK, 300));
    /* readers do not wait for each other */
    assert_true(op_finishes_while_held(t.path, 0, F_RDLCK, 1500));
    ok(mn_session_store_open(t.path, 0, 0, 0, &s));
    expect_session(s, 2, 9);
    mn_session_store_close(s);
    tmp_store_remove(&t);
}

/* ---------------------------------------------------------------- full disks and damaged files */
/* 40 sessions in the snapshot, two more in the journal. */
static void make_small_store(const char *path) {
    mn_session_store *s = NULL;
    ok(mn_session_store_open(path, MN_STORE_WRITE | MN_STORE_CREATE, SLOTS, WIDTH, &s));
    for (int sid = 0; sid < 40; sid++)
        put_version(s, sid, 1);
    ok(mn_session_store_compact(s));
    put_version(s, 3, 2);
    put_version(s, 40, 1);
    mn_session_store_close(s);
}

static void expect_small_store(mn_session_store *s, int extra) {
    for (int sid = 0; sid <= 40 + extra; sid++)
        expect_session(s, sid, sid == 3 ? 2 : 1);
}

/* Compaction past a file-size limit: one error naming the temp file and the errno reason,
 * no HDF5 handle left behind, the store as it was and still writable. */
static void compact_under_limit(void *arg) {
    const limit_ctx *c = arg;
    limit_file_size(c->limit);
    ssize_t inherited = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL); /* 0 unless a failed test leaked */
    mn_session_store *s = NULL;
    CHILD_CHECK(mn_session_store_open(c->path, MN_STORE_WRITE, 0, 0, &s) == MN_OK, "open: %s", mn_last_error());
    ssize_t handles = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    mn_status st = mn_session_store_compact(s);
    const char *msg = mn_last_error();
    CHILD_CHECK(st == MN_ERR_IO, "compaction past the limit gave %s: %s", mn_status_name(st), msg);
    CHILD_CHECK(strstr(msg, MN_STORE_SNAPSHOT_TMP_SUFFIX) && strstr(msg, strerror(EFBIG)) &&
                    strstr(msg, "unchanged") && !strstr(msg, "folder"),
                "message: %s", msg);
    CHILD_CHECK(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == handles, "HDF5 handles leaked: %zd, before %zd",
                H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), handles);
    CHILD_CHECK(!file_exists(c->path, MN_STORE_SNAPSHOT_TMP_SUFFIX) && !file_exists(c->path, MN_STORE_JOURNAL_TMP_SUFFIX),
                "temp files left behind");
    float r[F];
    pattern(41, 1, r);
    CHILD_CHECK(mn_session_put(s, "user-0041", FP, r, 1) == MN_OK, "put after the failed compaction: %s",
                mn_last_error());
    mn_session_store_close(s);
    CHILD_CHECK(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == inherited, "HDF5 handles open after close");
}

static void test_compact_past_file_size_limit(void **state) {
    (void)state;
    tmp_store t;
    tmp_store_make(&t);
    make_small_store(t.path);
    size_t snap_n = 0, journal_n = 0;
    uint8_t *snap = read_whole(t.path, "", &snap_n), *journal = read_whole(t.path, MN_STORE_JOURNAL_SUFFIX, &journal_n);
    /* room for a few more journal records, not for a new snapshot */
    rlim_t limit = journal_n + 3 * mn_journal_record_bytes(F);
    assert_true(limit < snap_n);
    char err[400], out[400];
    snprintf(child_why, sizeof child_why, "%s/why", t.dir);
    snprintf(err, sizeof err, "%s/err", t.dir);
    snprintf(out, sizeof out, "%s/out", t.dir);
    limit_ctx c = {t.path, limit};
    run_child(compact_under_limit, &c, err);
    size_t n = 0;
    uint8_t *text = read_whole(err, "", &n);
    assert_int_equal(n, 0); /* not a line of HDF5 diagnostics */
    free(text);
    /* the snapshot untouched, the journal one record longer */
    size_t n2 = 0;
    uint8_t *now = read_whole(t.path, "", &n2);
    assert_int_equal(n2, snap_n);
    assert_memory_equal(now, snap, snap_n);
    free(now);
    assert_int_equal(file_size(t.path, MN_STORE_JOURNAL_SUFFIX), (off_t)(journal_n + mn_journal_record_bytes(F)));

    /* the command: exit 1 with one line naming the file and the reason, no crash */
    const char *args[] = {"sessions", "--store", t.path, "compact", NULL};
    int rc = run_mnemo(args, limit, out, err);
    text = read_whole(err, "", &n);
    if (rc != 1 || count_lines(text, n) != 1 || !strstr((char *)text, strerror(EFBIG)) ||
        !strstr((char *)text, MN_STORE_SNAPSHOT_TMP_SUFFIX) || strstr((char *)text, "HDF5"))
        fail_msg("mnemo sessions compact past the limit: exit %d, stderr:\n%.*s", rc, (int)n, (char *)text);
    free(text);
    mn_session_store *s = NULL;
    ok(mn_session_store_open(t.path, MN_STORE_WRITE, 0, 0, &s));
    expect_small_store(s, 1);
    ok(mn_session_store_compact(s)); /* without the limit it works */
    expect_small_store(s, 1);
    mn_session_store_close(s);
    free(snap), free(journal);
    unlink(err), unlink(out), unlink(child_why);
    tmp_store_remove(&t);
}

/* What a store holds, to compare against after damage. */
typedef struct {
    mn_session_info *infos;
    float *states;
    size_t n;
} store_view;

/* Reads every session's info and state. MN_OK, or the first refusal (open, list or get). */
static mn_status view_store(const char *path, int flags, store_view *v) {
    mn_session_store *s = NULL;
    memset(v, 0, sizeof *v);
    mn_status st = mn_session_store_open(path, flags, 0, 0, &s);
    if (st == MN_OK)
        st = mn_session_list(s, &v->infos, &v->n);
    if (st == MN_OK) {
        v->states = calloc(v->n ? v->n : 1, F * sizeof(float));
        assert_non_null(v->states);
    }
    for (size_t i = 0; st == MN_OK && i < v->n; i++) {
        int found = 0;
        st = mn_session_get(s, v->infos[i].id, v->infos[i].fingerprint, v->states + i * F, NULL, &found);
        if (st == MN_OK && !found)
            fail_msg("session '%s' listed but not found", v->infos[i].id);
    }
    mn_session_store_close(s);
    return st;
}

static void free_view(store_view *v) {
    free(v->infos);
    free(v->states);
    memset(v, 0, sizeof *v);
}

static int same_view(const store_view *a, const store_view *b) {
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const mn_session_info *x = &a->infos[i], *y = &b->infos[i];
        if (strcmp(x->id, y->id) || x->turns != y->turns || x->created_us != y->created_us ||
            x->updated_us != y->updated_us || x->fingerprint != y->fingerprint)
            return 0;
    }
    return !memcmp(a->states, b->states, a->n * F * sizeof(float));
}

/* Whether HDF5 can shut down: after some refusals HDF5 keeps internal state of a file it
 * reports closed (H5Fget_obj_count 0), and H5close (as at exit) then prints "infinite loop
 * closing library". Shuts the library down (the next call starts it again) with stderr caught. */
static int hdf5_closes_cleanly(const char *scratch) {
    char path[400];
    snprintf(path, sizeof path, "%s.h5close", scratch);
    fflush(stderr);
    int saved = dup(2), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    H5close();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    off_t said = file_size(path, "");
    unlink(path);
    return said == 0;
}

/* Flips byte `at` of the file with `mask`, opens the store and reads everything; the flip must
 * be refused with a message naming the store's file, or change nothing that can be read. */
static int flip_and_check(const char *path, const char *suffix, const uint8_t *pristine, size_t size, size_t at,
                          uint8_t mask, int flags, const store_view *truth) {
    char p[400];
    snprintf(p, sizeof p, "%s%s", path, suffix);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b = pristine[at] ^ mask;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)at), 1);
    store_view v;
    mn_status st = view_store(path, flags, &v);
    int refused = st != MN_OK;
    if (refused && !strstr(mn_last_error(), path))
        fail_msg("%s byte %zu ^ 0x%02x: refused without naming the store: %s: %s", suffix, at, mask,
                 mn_status_name(st), mn_last_error());
    if (!refused && !same_view(&v, truth))
        fail_msg("%s byte %zu ^ 0x%02x: silently changed what the store holds", suffix, at, mask);
    if (H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) != 0 || !hdf5_closes_cleanly(path))
        fail_msg("%s byte %zu ^ 0x%02x: HDF5 left a file open inside (%s)", suffix, at, mask,
                 refused ? mn_last_error() : "opened");
    free_view(&v);
    /* restore the whole file: a writer's open may have truncated or rewritten it */
    assert_int_equal(pwrite(fd, pristine, size, 0), (ssize_t)size);
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    close(fd);
    return refused;
}

/* Every byte of a small store's snapshot and journal, flipped one at a time with two masks:
 * each flip is refused with a reason (at open, or for a state chunk at the get that reads it)
 * or changes nothing readable; never a crash, an HDF5 handle or internal file left behind, or
 * a silent change. The store is tiny (5 KB snapshot, 1.4 KB journal), so every byte of both
 * files is covered, metadata and data alike. The snapshot is opened as a reader; the journal
 * as a reader and as a writer (which must not "repair" damage on its own). */
static void test_byte_flip_sweep(void **state) {
    (void)state;
    tmp_store t;
    mn_session_store *s = new_store(&t);
    for (int sid = 0; sid < 3; sid++)
        put_version(s, sid, 1);
    ok(mn_session_store_compact(s));
    put_version(s, 1, 2);
    put_version(s, 3, 1);
    ok(mn_session_delete(s, "user-0002", NULL));
    mn_session_store_close(s);
    store_view truth;
    ok(view_store(t.path, 0, &truth));
    assert_int_equal(truth.n, 3);
    size_t sizes[2];
    uint8_t *files[2] = {read_whole(t.path, "", &sizes[0]), read_whole(t.path, MN_STORE_JOURNAL_SUFFIX, &sizes[1])};
    const char *suffixes[2] = {"", MN_STORE_JOURNAL_SUFFIX};
    int refused[2] = {0, 0}, tries[2] = {0, 0};
    for (int f = 0; f < 2; f++)
        for (size_t at = 0; at < sizes[f]; at++)
            for (int m = 0; m < 2; m++) /* one bit (a different one from byte to byte), and all eight */
                for (int writer = 0; writer <= f; writer++) {
                    uint8_t mask = m ? 0xff : (uint8_t)(1u << (at % 8));
                    refused[f] += flip_and_check(t.path, suffixes[f], files[f], sizes[f], at, mask,
                                                 writer ? MN_STORE_WRITE : 0, &truth);
                    tries[f]++;
                }
    print_message("byte flips: snapshot %zu bytes, %d of %d flips refused; journal %zu bytes, %d of %d refused\n",
                  sizes[0], refused[0], tries[0], sizes[1], refused[1], tries[1]);
    assert_int_equal(refused[1], tries[1]); /* every journal byte is under a checksum */
    store_view after;
    ok(view_store(t.path, MN_STORE_WRITE, &after));
    assert_true(same_view(&after, &truth));
    free_view(&after);
    free_view(&truth);
    free(files[0]), free(files[1]);
    tmp_store_remove(&t);
}

/* A version 1 snapshot (no trailer, no row checksums) whose states carry no Fletcher32
 * either (made by hand: mnemo never wrote one) is refused: a flipped state byte in it could
 * not be noticed. */
static void test_unchecksummed_states_refused(void **state) {
    (void)state;
    tmp_store t;
    mn_session_store *s = new_store(&t);
    put_version(s, 1, 1);
    ok(mn_session_store_compact(s));
    mn_session_store_close(s);
    float r[F];
    hid_t f = H5Fopen(t.path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "states", H5P_DEFAULT);
    assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, r) >= 0);
    H5Dclose(d);
    assert_true(H5Ldelete(f, "states", H5P_DEFAULT) >= 0);
    hsize_t dims[2] = {1, F};
    hid_t space = H5Screate_simple(2, dims, NULL);
    d = H5Dcreate2(f, "states", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT); /* contiguous */
    assert_true(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, r) >= 0);
    H5Dclose(d), H5Sclose(space);
    int64_t v1 = 1;
    hid_t a = H5Aopen(f, "session_store_version", H5P_DEFAULT);
    assert_true(H5Awrite(a, H5T_NATIVE_INT64, &v1) >= 0);
    H5Aclose(a), H5Fclose(f);
    assert_int_equal(mn_session_store_open(t.path, 0, 0, 0, &s), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "'states' carries no Fletcher32 checksum"));
    tmp_store_remove(&t);
}

/* A store written before issue 20 (tests/fixtures/sessions_v1: 4 sessions compacted, then two
 * puts and a delete in its journal) opens, reads and takes new puts. */
static void test_reads_old_store(void **state) {
    (void)state;
    const char *dir = getenv("MNEMO_FIXTURES");
    assert_non_null(dir);
    tmp_store t;
    tmp_store_make(&t);
    const char *suffixes[2] = {"", MN_STORE_JOURNAL_SUFFIX};
    for (int i = 0; i < 2; i++) {
        char from[400], to[400];
        snprintf(from, sizeof from, "%s/sessions_v1/store.h5%s", dir, suffixes[i]);
        snprintf(to, sizeof to, "%s%s", t.path, suffixes[i]);
        assert_int_equal(copy_file(from, to), 0);
    }
    for (int writer = 0; writer < 2; writer++) {
        mn_session_store *s = NULL;
        ok(mn_session_store_open(t.path, writer ? MN_STORE_WRITE : 0, SLOTS, WIDTH, &s));
        expect_session(s, 0, 1);
        expect_session(s, 1, 2);
        expect_session(s, 3, 1);
        expect_session(s, 4, 1);
        int found = -1;
        ok(mn_session_get(s, "user-0002", FP, NULL, NULL, &found));
        assert_int_equal(found, 0);
        if (writer) {
            put_version(s, 5, 1);
            ok(mn_session_store_compact(s));
            expect_session(s, 1, 2);
            expect_session(s, 5, 1);
        }
        mn_session_store_close(s);
    }
    tmp_store_remove(&t);
}

/* ---------------------------------------------------------------- fingerprint */
static void test_fingerprint(void **state) {
    (void)state;
    mn_config c = {.vocab_size = 64, .d_model = 16, .n_heads = 2, .n_layers = 1, .n_comp_layers = 1,
                   .n_slots = 2, .max_turn_tokens = 8, .gate_bias_init = -2.0f};
    mn_model *a = NULL, *b = NULL;
    ok(mn_model_create(&c, &a));
    ok(mn_model_create(&c, &b));
    ok(mn_model_init(a, 1));
    ok(mn_model_init(b, 1));
    uint64_t fa = mn_model_fingerprint(a);
    assert_true(fa == mn_model_fingerprint(b));
    mn_tensor_info t;
    /* the decoder does not change what R means */
    ok(mn_model_find_tensor(b, "decoder.h.0.mlp.c_fc.weight", &t));
    mn_model_params(b)[t.offset] += 1.0f;
    assert_true(fa == mn_model_fingerprint(b));
    /* the compressor, the embeddings and the gate do */
    const char *names[] = {"compressor.h.0.attn.c_attn.weight", "wte", "memory.gate.bias", "memory.r0",
                           "compressor.wpe"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        ok(mn_model_find_tensor(b, names[i], &t));
        float saved = mn_model_params(b)[t.offset + t.size - 1];
        mn_model_params(b)[t.offset + t.size - 1] = saved + 0.5f;
        assert_true(fa != mn_model_fingerprint(b));
        mn_model_params(b)[t.offset + t.size - 1] = saved;
        assert_true(fa == mn_model_fingerprint(b));
    }
    mn_model_free(b);
    c.n_comp_layers = 2; /* the config too */
    ok(mn_model_create(&c, &b));
    ok(mn_model_init(b, 1));
    assert_true(fa != mn_model_fingerprint(b));
    mn_model_free(a);
    mn_model_free(b);
}

/* ---------------------------------------------------------------- what `mnemo sessions` shows */
/* describe: the info and |R| of any session, whatever compressor wrote it; absent: found 0. */
static void test_describe(void **state) {
    (void)state;
    tmp_store t;
    mn_session_store *s = new_store(&t);
    float r[F];
    pattern(3, 1, r);
    ok(mn_session_put(s, "carol", FP ^ 99, r, 5));
    double want = 0;
    for (int i = 0; i < F; i++)
        want += (double)r[i] * r[i];
    want = sqrt(want);
    mn_session_info info;
    double norm = -1;
    int found = 0;
    ok(mn_session_describe(s, "carol", &info, &norm, &found));
    assert_int_equal(found, 1);
    assert_string_equal(info.id, "carol");
    assert_int_equal(info.turns, 5);
    assert_true(info.fingerprint == (FP ^ 99));
    assert_true(fabs(norm - want) <= 1e-12 * want);
    ok(mn_session_describe(s, "nobody", &info, &norm, &found));
    assert_int_equal(found, 0);
    mn_session_store_close(s);
    tmp_store_remove(&t);
}

/* Ids are any bytes but NUL: a listing escapes control characters, backslashes and bytes that
 * are not UTF-8, so every id stays on its line and reads back unambiguously. */
static void test_escaped_ids(void **state) {
    (void)state;
    struct {
        const char *id, *shown;
    } cases[] = {
        {"plain-id", "plain-id"},        {"tab\there", "tab\\there"},     {"new\nline", "new\\nline"},
        {"cr\r", "cr\\r"},             {"back\\slash", "back\\\\slash"}, {"bell\a\x7f", "bell\\x07\\x7f"},
        {"caf\xc3\xa9", "caf\xc3\xa9"}, {"bad\xff\xc3", "bad\\xff\\xc3"}, {"c1\xc2\x85", "c1\\xc2\\x85"},
    };
    const int n = (int)(sizeof cases / sizeof cases[0]);
    char out[MN_SESSION_ID_ESCAPED_MAX];
    for (int i = 0; i < n; i++) {
        mn_session_id_escape(cases[i].id, out, sizeof out);
        assert_string_equal(out, cases[i].shown);
    }
    char longest[MN_SESSION_ID_MAX + 1];
    memset(longest, '\x01', MN_SESSION_ID_MAX);
    longest[MN_SESSION_ID_MAX] = '\0';
    mn_session_id_escape(longest, out, sizeof out);
    assert_int_equal(strlen(out), 4 * MN_SESSION_ID_MAX);
    mn_session_id_escape(longest, out, 10); /* truncated, never split inside an escape */
    assert_string_equal(out, "\\x01\\x01");

    tmp_store t;
    mn_session_store *s = new_store(&t);
    float r[F];
    pattern(1, 1, r);
    for (int i = 0; i < n; i++)
        ok(mn_session_put(s, cases[i].id, FP, r, i));
    mn_session_store_close(s);
    char outp[400], errp[400];
    snprintf(outp, sizeof outp, "%s/out", t.dir);
    snprintf(errp, sizeof errp, "%s/err", t.dir);
    const char *list[] = {"sessions", "--store", t.path, "list", NULL};
    assert_int_equal(run_mnemo(list, 0, outp, errp), 0);
    size_t len = 0;
    char *text = (char *)read_whole(outp, "", &len);
    assert_int_equal(count_lines((uint8_t *)text, len), n);
    char *lines = malloc(len + 2); /* "\n" + the listing: every line starts after a newline */
    assert_non_null(lines);
    lines[0] = '\n';
    memcpy(lines + 1, text, len);
    lines[len + 1] = '\0';
    for (int i = 0; i < n; i++) {
        char line[300];
        snprintf(line, sizeof line, "\n%s\t%d turns", cases[i].shown, i);
        if (!strstr(lines, line))
            fail_msg("listing lacks the line of '%s':\n%.*s", cases[i].shown, (int)len, text);
    }
    free(lines);
    free(text);
    const char *show[] = {"sessions", "--store", t.path, "show", cases[1].id, NULL};
    assert_int_equal(run_mnemo(show, 0, outp, errp), 0);
    text = (char *)read_whole(outp, "", &len);
    assert_non_null(strstr(text, "session      tab\\there\n"));
    free(text);
    unlink(outp), unlink(errp);
    tmp_store_remove(&t);
}

/* The benchmark leaves a store of `count` sessions with both rounds of puts in its journal,
 * reports every figure, and never reuses an existing path. */
static void test_store_bench(void **state) {
    (void)state;
    tmp_store t;
    tmp_store_make(&t);
    mn_session_bench_options o = {.count = 40, .n_slots = 2, .width = 4, .gets = 30, .puts = 20};
    mn_session_bench_result r;
    ok(mn_session_store_bench(t.path, &o, &r));
    assert_true(r.fill_rate > 0 && r.get_rate > 0 && r.put_sync_rate > 0 && r.put_rate > 0 && r.journal_get_rate > 0);
    assert_true(r.get_p50 > 0 && r.get_p50 <= r.get_p99);
    assert_true(r.put_sync_p50 <= r.put_sync_p99 && r.put_sync_p99 <= r.put_sync_max);
    assert_int_equal(r.journal_gets, 20);
    assert_int_equal(r.journal_records, 40);
    assert_true(r.snapshot_bytes > 0 && r.journal_bytes > 0);
    mn_session_store *s = NULL;
    ok(mn_session_store_open(t.path, 0, 0, 0, &s));
    mn_session_info *infos = NULL;
    size_t n = 0;
    ok(mn_session_list(s, &infos, &n));
    assert_int_equal(n, 40);
    free(infos);
    mn_session_store_close(s);
    assert_int_equal(mn_session_store_bench(t.path, &o, &r), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "exists"));
    tmp_store_remove(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_and_persistence),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_torn_and_damaged_journal),
        cmocka_unit_test(test_recover_corrupt_records),
        cmocka_unit_test(test_missing_journal),
        cmocka_unit_test(test_refused_open_leaves_no_lock),
        cmocka_unit_test(test_stale_journal),
        cmocka_unit_test(test_kill9_writer),
        cmocka_unit_test(test_concurrent_processes),
        cmocka_unit_test(test_lock_protocol),
        cmocka_unit_test(test_compact_past_file_size_limit),
        cmocka_unit_test(test_byte_flip_sweep),
        cmocka_unit_test(test_reads_old_store),
        cmocka_unit_test(test_unchecksummed_states_refused),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_escaped_ids),
        cmocka_unit_test(test_store_bench),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
