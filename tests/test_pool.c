/* The session pool (mn_session_pool_*, src/model/session_pool.c) on the CPU, on the guarded
 * stand-in (tests/guarded_backend.c: the CPU ops behind the device code path, bucket padding
 * included, every op's extents checked; no graphs) and on a GPU (skipped without one: CUDA
 * graphs, pinned transfers): batched updates against mn_update_batch
 * and one mn_update per session, ragged turns, refusals, the background sync to a session
 * store, and the store's failures returned as values. */
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
#include <unistd.h>

#include <cmocka.h>

#include "close.h"
#include "guarded_backend.h"
#include "io/session_store.h"
#include "model/model_internal.h"
#include "mnemo.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t next_u64(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}
static float uniform(void) { return (float)((double)(next_u64() >> 11) * (2.0 / 9007199254740992.0) - 1.0); }

static mn_model *small_model(uint64_t seed) {
    mn_config c = {.vocab_size = 50, .d_model = 16, .n_heads = 2, .n_layers = 2, .n_comp_layers = 2,
                   .n_slots = 4, .max_turn_tokens = 10, .gate_bias_init = -0.5f};
    mn_model *m = NULL;
    assert_int_equal(mn_model_create(&c, &m), MN_OK);
    assert_int_equal(mn_model_init(m, seed), MN_OK);
    float *p = mn_model_params(m);
    for (size_t i = 0; i < mn_model_num_params(m); i++) /* far from the near-identity init */
        p[i] *= 5.0f;
    return m;
}

/* Where a test's pool runs: the CPU, the stand-in, or a GPU (skipped without one). `tol`: how
 * close the pool's batches come to mn_update_batch on the CPU (0: bit for bit). */
typedef struct {
    const mn_backend *(*table)(void); /* NULL: the CPU */
    float tol;
    int gpu;
} variant;

static const variant on_cpu = {NULL, 0.0f, 0}, on_standin = {mn_guarded_backend, 1e-5f, 0},
                     on_gpu = {mn_backend_cuda, 1e-4f, 1};

static int gpu_answers(void) {
    int count = 0;
    return mn_backend_cuda() && mn_cuda_device_count(&count) == MN_OK && count > 0;
}

static mn_model *model_on(void **state, uint64_t seed) {
    const variant *v = *state;
    if (v->gpu && !gpu_answers())
        skip();
    mn_model *m = small_model(seed);
    if (v->table)
        assert_int_equal(mn_model_set_backend(m, v->table()), MN_OK);
    return m;
}

/* |got - want| <= tol (1 + |want|); tol 0: the same bits. */
static void expect_close(const float *got, const float *want, size_t n, float tol, const char *what) {
    if (tol == 0.0f) {
        for (size_t i = 0; i < n; i++)
            if (memcmp(&got[i], &want[i], sizeof(float)))
                fail_msg("%s: element %zu is %.9g, want %.9g (bitwise)", what, i, (double)got[i], (double)want[i]);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (!close_to(got[i], want[i], tol))
            fail_msg("%s: element %zu is %.9g, want %.9g (tolerance %g)", what, i, (double)got[i], (double)want[i],
                     (double)tol);
}

/* A batch of n turns of ragged lengths (every length 1..N appears when n >= N). */
typedef struct {
    int n;
    int32_t *slots, *tokens;
    int64_t *offsets;
} turns;

static turns random_turns(const mn_model *m, int n, int slots) {
    const mn_config *c = mn_model_config(m);
    turns t = {n, malloc((size_t)n * sizeof(int32_t)), NULL, malloc(((size_t)n + 1) * sizeof(int64_t))};
    int *perm = malloc((size_t)slots * sizeof(int));
    for (int i = 0; i < slots; i++)
        perm[i] = i;
    for (int i = slots - 1; i > 0; i--) { /* distinct slots in a random order */
        int j = (int)(next_u64() % (uint64_t)(i + 1)), x = perm[i];
        perm[i] = perm[j], perm[j] = x;
    }
    t.offsets[0] = 0;
    for (int i = 0; i < n; i++) {
        t.slots[i] = perm[i];
        t.offsets[i + 1] = t.offsets[i] + 1 + (i + (int)(next_u64() % 3)) % c->max_turn_tokens;
    }
    t.tokens = malloc((size_t)t.offsets[n] * sizeof(int32_t));
    for (int64_t i = 0; i < t.offsets[n]; i++)
        t.tokens[i] = (int32_t)(next_u64() % (uint64_t)c->vocab_size);
    free(perm);
    return t;
}

static void free_turns(turns *t) { free(t->slots), free(t->tokens), free(t->offsets); }

static float *read_all(mn_session_pool *pool, size_t kC) {
    int P = mn_session_pool_slots(pool);
    float *r = malloc((size_t)P * kC * sizeof(float));
    for (int s = 0; s < P; s++)
        assert_int_equal(mn_session_pool_read(pool, s, r + (size_t)s * kC, NULL), MN_OK);
    return r;
}

/* ---------------------------------------------------------------- updates */
static void test_updates_match(void **state) {
    mn_model *m = model_on(state, 11), *ref = small_model(11); /* ref: the same parameters on the CPU */
    const size_t kC = mn_state_floats(m);
    enum { P = 40 };
    mn_session_pool *pool = NULL;
    assert_int_equal(mn_session_pool_create(m, P, &pool), MN_OK);
    assert_int_equal(mn_session_pool_slots(pool), P);
    /* slots start at R_0 with 0 turns */
    float *r0 = malloc(kC * sizeof(float)), *r = malloc(kC * sizeof(float));
    int64_t nt = -1;
    assert_int_equal(mn_initial_state(ref, r0), MN_OK);
    assert_int_equal(mn_session_pool_read(pool, P - 1, r, &nt), MN_OK);
    assert_memory_equal(r, r0, kC * sizeof(float));
    assert_int_equal(nt, 0);
    /* random states in, read back bit for bit */
    float *host = malloc((size_t)P * kC * sizeof(float));
    for (size_t i = 0; i < (size_t)P * kC; i++)
        host[i] = uniform();
    for (int s = 0; s < P; s++)
        assert_int_equal(mn_session_pool_write(pool, s, host + (size_t)s * kC, 100 + s), MN_OK);
    float *got = read_all(pool, kC);
    assert_memory_equal(got, host, (size_t)P * kC * sizeof(float));
    free(got);

    int64_t want_turns[P];
    for (int s = 0; s < P; s++)
        want_turns[s] = 100 + s;
    /* three rounds of ragged batches over random subsets (the CPU's chunks hold 7 sessions of
     * k + N = 14 positions, so a batch spans several; the stand-in pads to buckets) */
    float *in = malloc((size_t)P * kC * sizeof(float)), *batch = malloc((size_t)P * kC * sizeof(float));
    float *single = malloc((size_t)P * kC * sizeof(float));
    for (int round = 0; round < 3; round++) {
        turns t = random_turns(m, 23 + 7 * round, P);
        for (int i = 0; i < t.n; i++)
            memcpy(in + (size_t)i * kC, host + (size_t)t.slots[i] * kC, kC * sizeof(float));
        assert_int_equal(mn_update_batch(ref, t.n, t.tokens, t.offsets, in, batch), MN_OK);
        for (int i = 0; i < t.n; i++)
            assert_int_equal(mn_update(ref, t.tokens + t.offsets[i], (int)(t.offsets[i + 1] - t.offsets[i]),
                                       in + (size_t)i * kC, single + (size_t)i * kC),
                             MN_OK);
        assert_int_equal(mn_session_pool_update(pool, t.n, t.slots, t.tokens, t.offsets), MN_OK);
        got = read_all(pool, kC);
        for (int i = 0; i < t.n; i++) {
            const float *g = got + (size_t)t.slots[i] * kC;
            /* the CPU pool is mn_update_batch bit for bit; the stand-in pads each chunk to its
             * bucket, which changes only the rounding of the products */
            const float tol = ((const variant *)*state)->tol;
            expect_close(g, batch + (size_t)i * kC, kC, tol, "pool vs mn_update_batch");
            expect_close(g, single + (size_t)i * kC, kC, tol > 1e-5f ? tol : 1e-5f, "pool vs one mn_update each");
            memcpy(host + (size_t)t.slots[i] * kC, g, kC * sizeof(float));
            want_turns[t.slots[i]]++;
        }
        /* slots outside the batch are untouched */
        assert_memory_equal(got, host, (size_t)P * kC * sizeof(float));
        free(got);
        free_turns(&t);
    }
    for (int s = 0; s < P; s++) {
        assert_int_equal(mn_session_pool_read(pool, s, r, &nt), MN_OK);
        assert_int_equal(nt, want_turns[s]);
    }
    /* one entry is mn_update itself (a device: to rounding) */
    const int32_t slot = 5, tok[3] = {7, 1, 49};
    const int64_t off[2] = {0, 3};
    assert_int_equal(mn_update(ref, tok, 3, host + slot * kC, r), MN_OK);
    assert_int_equal(mn_session_pool_update(pool, 1, &slot, tok, off), MN_OK);
    float *one = malloc(kC * sizeof(float));
    assert_int_equal(mn_session_pool_read(pool, slot, one, NULL), MN_OK);
    expect_close(one, r, kC, ((const variant *)*state)->tol, "one entry vs mn_update");
    /* the same update again (on a GPU: the bucket's graph replayed), then with graphs off: the
     * same bits on the CPU and the stand-in; on a GPU within the tolerance (cuBLAS may pick other
     * algorithms for a captured product) */
    for (int graphs = 1; graphs >= 0; graphs--) {
        assert_int_equal(mn_session_pool_set_graphs(pool, graphs), MN_OK);
        assert_int_equal(mn_session_pool_write(pool, slot, host + slot * kC, 0), MN_OK);
        assert_int_equal(mn_session_pool_update(pool, 1, &slot, tok, off), MN_OK);
        assert_int_equal(mn_session_pool_read(pool, slot, r, NULL), MN_OK);
        const variant *v = *state;
        expect_close(r, one, kC, v->gpu ? v->tol : 0.0f, graphs ? "graph replay" : "graphs off");
    }
    assert_int_equal(mn_session_pool_close(pool), MN_OK);
    free(r0), free(r), free(one), free(host), free(in), free(batch), free(single);
    mn_model_free(m);
    mn_model_free(ref);
}

static void test_refusals(void **state) {
    mn_model *m = model_on(state, 12);
    const size_t kC = mn_state_floats(m);
    enum { P = 6 };
    mn_session_pool *pool = NULL;
    assert_int_equal(mn_session_pool_create(m, 0, &pool), MN_ERR_INVALID_ARG);
    assert_null(pool);
    assert_int_equal(mn_session_pool_create(NULL, 3, &pool), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_session_pool_create(m, P, &pool), MN_OK);
    float *before = read_all(pool, kC), *r = malloc(kC * sizeof(float));
    int32_t slots[3] = {0, 4, 2}, tokens[6] = {1, 2, 3, 4, 5, 6};
    int64_t offsets[4] = {0, 2, 4, 6};
    /* a slot out of range, named twice, a bad turn: refused, naming the entry, nothing changed */
    slots[1] = P;
    assert_int_equal(mn_session_pool_update(pool, 3, slots, tokens, offsets), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "entry 1 names slot 6"));
    slots[1] = -1;
    assert_int_equal(mn_session_pool_update(pool, 3, slots, tokens, offsets), MN_ERR_INVALID_ARG);
    slots[1] = 0;
    assert_int_equal(mn_session_pool_update(pool, 3, slots, tokens, offsets), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "entry 1 names slot 0, which an earlier entry names too"));
    slots[1] = 4;
    offsets[2] = 2; /* an empty turn */
    assert_int_equal(mn_session_pool_update(pool, 3, slots, tokens, offsets), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "session 1 has 0 tokens"));
    offsets[2] = 4;
    int64_t long_offsets[4] = {0, 2, 13, 14}; /* 11 tokens: over N = 10 */
    int32_t many[14] = {0};
    assert_int_equal(mn_session_pool_update(pool, 3, slots, many, long_offsets), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "session 1 has 11 tokens"));
    tokens[5] = 50; /* outside the vocabulary */
    assert_int_equal(mn_session_pool_update(pool, 3, slots, tokens, offsets), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "vocabulary"));
    assert_non_null(strstr(mn_last_error(), "session 2"));
    tokens[5] = 6;
    assert_int_equal(mn_session_pool_update(pool, 3, NULL, tokens, offsets), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_session_pool_update(pool, -1, slots, tokens, offsets), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_session_pool_update(pool, 0, NULL, NULL, NULL), MN_OK); /* nothing to do */
    float *after = read_all(pool, kC);
    assert_memory_equal(after, before, (size_t)P * kC * sizeof(float));
    free(after);
    int64_t nt = -1;
    assert_int_equal(mn_session_pool_read(pool, 0, r, &nt), MN_OK);
    assert_int_equal(nt, 0);
    /* single states: range, NULL, non-finite, negative turns */
    assert_int_equal(mn_session_pool_read(pool, P, r, NULL), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "slot 6 is outside the pool's [0, 6)"));
    assert_int_equal(mn_session_pool_write(pool, -1, r, 0), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_session_pool_read(pool, 0, NULL, NULL), MN_ERR_INVALID_ARG);
    r[3] = NAN;
    assert_int_equal(mn_session_pool_write(pool, 1, r, 0), MN_ERR_NUMERIC);
    r[3] = 0.0f;
    assert_int_equal(mn_session_pool_write(pool, 1, r, -1), MN_ERR_INVALID_ARG);
    /* the store calls need a store */
    int found = 0;
    assert_int_equal(mn_session_pool_sync(pool), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "no store attached"));
    assert_int_equal(mn_session_pool_load(pool, 0, "a", &found), MN_ERR_INVALID_ARG);
    /* the model stays on its device while a pool holds states there */
    const mn_backend *other = ((const variant *)*state)->table ? mn_backend_cpu() : mn_guarded_backend();
    assert_int_equal(mn_model_set_backend(m, other), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "close them first"));
    assert_int_equal(mn_model_set_backend(m, m->exec.be), MN_OK); /* a refresh is fine */
    assert_int_equal(mn_session_pool_close(pool), MN_OK);
    assert_int_equal(mn_model_set_backend(m, other), MN_OK); /* closed: free to move */
    assert_int_equal(mn_session_pool_close(NULL), MN_OK);
    free(before), free(r);
    mn_model_free(m);
}

/* ---------------------------------------------------------------- the store */
typedef struct {
    char dir[256], path[300];
} tmp_store;

static void tmp_store_make(tmp_store *t) {
    const char *base = getenv("TMPDIR");
    snprintf(t->dir, sizeof t->dir, "%s/mnemo-pool-XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof t->path, "%s/store.h5", t->dir);
}

static void tmp_store_remove(tmp_store *t) {
    const char *suffixes[] = {"", MN_STORE_JOURNAL_SUFFIX, MN_STORE_LOCK_SUFFIX, MN_STORE_SNAPSHOT_TMP_SUFFIX,
                              MN_STORE_JOURNAL_TMP_SUFFIX};
    char p[400];
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s%s", t->path, suffixes[i]);
        unlink(p);
    }
    rmdir(t->dir);
}

/* Every bound slot's state and turns, as a reader of the store sees them. */
static void expect_store_holds(const char *path, uint64_t fp, const char *const *ids, const float *states,
                               const int64_t *turns, int n, size_t kC) {
    mn_session_store *s = NULL;
    assert_int_equal(mn_session_store_open(path, 0, 0, 0, &s), MN_OK);
    float *r = malloc(kC * sizeof(float));
    for (int i = 0; i < n; i++) {
        mn_session_info info;
        int found = 0;
        assert_int_equal(mn_session_get(s, ids[i], fp, r, &info, &found), MN_OK);
        if (!found)
            fail_msg("session %s is not in the store", ids[i]);
        assert_memory_equal(r, states + (size_t)i * kC, kC * sizeof(float));
        assert_int_equal(info.turns, turns[i]);
    }
    free(r);
    mn_session_store_close(s);
}

static void test_sync_to_store(void **state) {
    mn_model *m = model_on(state, 13);
    const size_t kC = mn_state_floats(m);
    const uint64_t fp = mn_model_fingerprint(m);
    tmp_store t;
    tmp_store_make(&t);
    /* the store holds "old" (7 turns) before the pool opens, and "alien" from another compressor */
    float *r = malloc(kC * sizeof(float));
    for (size_t i = 0; i < kC; i++)
        r[i] = uniform();
    mn_session_store *s = NULL;
    const mn_config *c = mn_model_config(m);
    assert_int_equal(mn_session_store_open(t.path, MN_STORE_WRITE | MN_STORE_CREATE, c->n_slots, c->d_model, &s),
                     MN_OK);
    assert_int_equal(mn_session_put(s, "old", fp, r, 7), MN_OK);
    assert_int_equal(mn_session_put(s, "alien", fp + 1, r, 1), MN_OK);
    mn_session_store_close(s);

    enum { P = 20, BOUND = 12 };
    mn_session_pool *pool = NULL;
    assert_int_equal(mn_session_pool_create(m, P, &pool), MN_OK);
    assert_int_equal(mn_session_pool_attach(pool, t.path, MN_STORE_NO_SYNC), MN_OK);
    assert_int_equal(mn_session_pool_attach(pool, t.path, 0), MN_ERR_INVALID_ARG); /* one store */
    char names[BOUND][16];
    const char *ids[BOUND];
    int found = -1;
    for (int i = 0; i < BOUND; i++) {
        snprintf(names[i], sizeof names[i], i == 3 ? "old" : "user-%d", i);
        ids[i] = names[i];
        assert_int_equal(mn_session_pool_load(pool, i, ids[i], &found), MN_OK);
        assert_int_equal(found, i == 3);
    }
    /* a stored session comes back with its state and turns; a new one starts at R_0 */
    float *got = malloc(kC * sizeof(float));
    int64_t nt = -1;
    assert_int_equal(mn_session_pool_read(pool, 3, got, &nt), MN_OK);
    assert_memory_equal(got, r, kC * sizeof(float));
    assert_int_equal(nt, 7);
    /* refusals: an id in another slot, another compressor's session (the slot keeps its state) */
    assert_int_equal(mn_session_pool_load(pool, 15, "user-2", &found), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "is in slot 2 already"));
    assert_int_equal(mn_session_pool_load(pool, 15, "alien", &found), MN_ERR_MISMATCH);
    assert_int_equal(mn_session_pool_load(pool, 15, NULL, &found), MN_ERR_INVALID_ARG);

    /* updates, a sync in the background, more updates, a flush: the store holds the last states */
    for (int round = 0; round < 4; round++) {
        turns tr = random_turns(m, 10, BOUND + 2); /* slots 12 and 13 are unbound: never written */
        assert_int_equal(mn_session_pool_update(pool, tr.n, tr.slots, tr.tokens, tr.offsets), MN_OK);
        free_turns(&tr);
        if (round == 1)
            assert_int_equal(mn_session_pool_sync(pool), MN_OK);
    }
    assert_int_equal(mn_session_pool_flush(pool), MN_OK);
    float *states = malloc((size_t)BOUND * kC * sizeof(float));
    int64_t turns_now[BOUND];
    for (int i = 0; i < BOUND; i++)
        assert_int_equal(mn_session_pool_read(pool, i, states + (size_t)i * kC, &turns_now[i]), MN_OK);
    expect_store_holds(t.path, fp, ids, states, turns_now, BOUND, kC);
    mn_session_store_stats stats;
    assert_int_equal(mn_session_store_open(t.path, 0, 0, 0, &s), MN_OK);
    assert_int_equal(mn_session_store_stats_get(s, &stats), MN_OK);
    assert_int_equal(stats.sessions, BOUND + 1); /* + alien; unbound slots wrote nothing */
    mn_session_store_close(s);
    /* one more update, then close: close writes it; a reopened store holds it */
    const int32_t slot = 3, tok[2] = {4, 5};
    const int64_t off[2] = {0, 2};
    const int64_t turns_before = turns_now[3];
    assert_true(turns_before >= 7); /* counted on from the stored 7 */
    assert_int_equal(mn_session_pool_update(pool, 1, &slot, tok, off), MN_OK);
    assert_int_equal(mn_session_pool_read(pool, 3, states + 3 * kC, &turns_now[3]), MN_OK);
    assert_int_equal(turns_now[3], turns_before + 1);
    assert_int_equal(mn_session_pool_close(pool), MN_OK);
    expect_store_holds(t.path, fp, ids, states, turns_now, BOUND, kC);
    /* a new pool over the same store loads what the first one wrote */
    assert_int_equal(mn_session_pool_create(m, 2, &pool), MN_OK);
    assert_int_equal(mn_session_pool_attach(pool, t.path, 0), MN_OK);
    assert_int_equal(mn_session_pool_load(pool, 1, "user-5", &found), MN_OK);
    assert_int_equal(found, 1);
    assert_int_equal(mn_session_pool_read(pool, 1, got, &nt), MN_OK);
    assert_memory_equal(got, states + 5 * kC, kC * sizeof(float));
    assert_int_equal(nt, turns_now[5]);
    assert_int_equal(mn_session_pool_close(pool), MN_OK);
    free(r), free(got), free(states);
    tmp_store_remove(&t);
    mn_model_free(m);
}

/* This process's file-size limit (soft; the hard one stays), with SIGXFSZ ignored so that a
 * write past it fails with EFBIG (what a full disk's ENOSPC also takes) instead of killing. */
static void set_file_limit(rlim_t bytes, void (**saved)(int)) {
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = bytes;
    if (bytes != RLIM_INFINITY)
        *saved = signal(SIGXFSZ, SIG_IGN);
    else
        signal(SIGXFSZ, *saved);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

static void test_store_errors(void **state) {
    mn_model *m = model_on(state, 14);
    mn_session_pool *pool = NULL;
    assert_int_equal(mn_session_pool_create(m, 4, &pool), MN_OK);
    /* a store that cannot be created: the error comes back from attach */
    assert_int_equal(mn_session_pool_attach(pool, "/nonexistent-dir/store.h5", 0), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "/nonexistent-dir/store.h5"));
    int found = 0;
    assert_int_equal(mn_session_pool_sync(pool), MN_ERR_INVALID_ARG); /* still without a store */
    tmp_store t;
    tmp_store_make(&t);
    assert_int_equal(mn_session_pool_attach(pool, t.path, 0), MN_OK);
    assert_int_equal(mn_session_pool_load(pool, 0, "a", &found), MN_OK);
    assert_int_equal(mn_session_pool_load(pool, 1, "b", &found), MN_OK);
    /* the journal cannot grow: the sync thread's put fails, and the next call returns it */
    char journal[400];
    snprintf(journal, sizeof journal, "%s%s", t.path, MN_STORE_JOURNAL_SUFFIX);
    struct stat st;
    assert_int_equal(stat(journal, &st), 0);
    void (*saved)(int) = SIG_DFL;
    set_file_limit((rlim_t)st.st_size, &saved);
    assert_int_equal(mn_session_pool_sync(pool), MN_OK); /* handed over; the failure comes later */
    mn_status flushed = mn_session_pool_flush(pool);
    char message[1024];
    snprintf(message, sizeof message, "%s", mn_last_error());
    set_file_limit(RLIM_INFINITY, &saved);
    assert_int_equal(flushed, MN_ERR_IO);
    assert_non_null(strstr(message, "session pool: writing session"));
    assert_non_null(strstr(message, "File too large"));
    /* returned once; the states not written stay changed and the next flush writes them */
    assert_int_equal(mn_session_pool_flush(pool), MN_OK);
    const size_t kC = mn_state_floats(m);
    float *states = malloc(2 * kC * sizeof(float));
    int64_t turns_now[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(mn_session_pool_read(pool, i, states + i * kC, &turns_now[i]), MN_OK);
    const char *ids[2] = {"a", "b"};
    expect_store_holds(t.path, mn_model_fingerprint(m), ids, states, turns_now, 2, kC);
    /* a failure still pending at close is close's result */
    float *r = malloc(kC * sizeof(float));
    assert_int_equal(mn_initial_state(m, r), MN_OK);
    assert_int_equal(mn_session_pool_write(pool, 0, r, 9), MN_OK);
    assert_int_equal(stat(journal, &st), 0);
    set_file_limit((rlim_t)st.st_size, &saved);
    mn_status closed = mn_session_pool_close(pool);
    snprintf(message, sizeof message, "%s", mn_last_error());
    set_file_limit(RLIM_INFINITY, &saved);
    assert_int_equal(closed, MN_ERR_IO);
    assert_non_null(strstr(message, "session 'a'"));
    free(states), free(r);
    tmp_store_remove(&t);
    mn_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_updates_match, (void *)&on_cpu),
        cmocka_unit_test_prestate(test_updates_match, (void *)&on_standin),
        cmocka_unit_test_prestate(test_updates_match, (void *)&on_gpu),
        cmocka_unit_test_prestate(test_refusals, (void *)&on_cpu),
        cmocka_unit_test_prestate(test_refusals, (void *)&on_standin),
        cmocka_unit_test_prestate(test_refusals, (void *)&on_gpu),
        cmocka_unit_test_prestate(test_sync_to_store, (void *)&on_cpu),
        cmocka_unit_test_prestate(test_sync_to_store, (void *)&on_standin),
        cmocka_unit_test_prestate(test_sync_to_store, (void *)&on_gpu),
        cmocka_unit_test_prestate(test_store_errors, (void *)&on_cpu),
        cmocka_unit_test_prestate(test_store_errors, (void *)&on_standin),
        cmocka_unit_test_prestate(test_store_errors, (void *)&on_gpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
