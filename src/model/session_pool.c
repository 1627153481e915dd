/* The session pool (mnemo.h, docs/sessions.md): many session states in the memory of the
 * model's inference device, updated in batches gathered by slot index, read and written one at
 * a time through two host staging buffers (pinned on CUDA), and written to a session store by
 * a thread of the pool's own. The update is the model's batched update (mn_compress_staged,
 * inference.c), fed from the pool's rows instead of host memory. On a device (every backend
 * but the CPU) chunks are padded to (batch, length) buckets, and where the backend captures
 * graphs (CUDA) each bucket's update is captured once and replayed. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/model_internal.h"

/* A batch of states handed to the sync thread: copies, so the slots may change meanwhile. */
typedef struct {
    int n;                            /* entries */
    int busy;                         /* handed over, not yet written (lock) */
    int32_t *slot;                    /* (cap) */
    uint64_t *version;                /* (cap) the slot's version the copy holds */
    int64_t *turns;                   /* (cap) */
    char (*id)[MN_SESSION_ID_MAX + 1]; /* (cap) */
    float *states;                    /* (cap, k, C) host, pinned where the backend has it */
} outbox;

/* The captured update of one (batch, length) bucket. */
typedef struct {
    int B, L;
    void *graph;
} bucket_graph;

struct mn_session_pool {
    mn_model *model;
    const mn_exec *ex; /* the model's inference backend: the pool's memory lives there */
    const mn_backend_async *as; /* NULL: synchronous copies, no graphs (CPU, stand-in) */
    int slots, cap;    /* cap: sessions per chunk of an update (the model's) and per outbox */
    size_t kC;
    float *states;     /* (slots + cap, k, C) backend memory; rows from `slots` on take padded entries */
    int64_t *turns;    /* (slots) */
    uint64_t *version; /* (slots) bumped by every change */
    uint64_t *synced;  /* (slots) the version the store holds (lock) */
    unsigned char *inflight; /* (slots) in an outbox (lock) */
    char **ids;        /* (slots) the bound session, or NULL */
    uint32_t *seen, stamp; /* (slots) duplicate check of an update's slots */

    /* the update's buffers, backend memory, for cap sessions of k + N positions */
    mn_stack_acts acts;
    int32_t *ints;     /* ids (B, k + L) | valid (B) | rows (B) */
    float *memory, *u, *write_aux, *r_next;
    /* host staging, used in turn; fence i (async backends) guards stage[i] and xfer[i] */
    int32_t *stage[2]; /* (cap (k + N) + 2 cap) */
    float *xfer[2];    /* (k, C) */
    int next_stage;
    int bucketed, graphs_on;
    bucket_graph *graphs;
    int n_graphs;

    /* persistence */
    mn_session_store *store;
    uint64_t fingerprint;
    pthread_t thread;
    int thread_started, stop;
    pthread_mutex_t lock;       /* synced, inflight, the outboxes' busy flags, stop, the sync error */
    pthread_cond_t cond;
    pthread_mutex_t store_lock; /* the store: the sync thread's puts, the caller's gets */
    outbox box[2];
    int next_box, thread_box;   /* the caller fills next_box; the thread writes thread_box */
    mn_status sync_status;
    char sync_message[1024];
};

/* ---------------------------------------------------------------- host buffers and staging */
static mn_status host_alloc(mn_session_pool *p, size_t bytes, void **out) {
    if (p->as)
        return p->as->host_alloc(p->ex->ctx, bytes, out);
    *out = calloc(1, bytes ? bytes : 1);
    return *out ? MN_OK : mn_fail(MN_ERR_NOMEM, "session pool: out of memory (%zu bytes)", bytes);
}

static void host_free(mn_session_pool *p, void *ptr) {
    if (p->as)
        p->as->host_release(p->ex->ctx, ptr);
    else
        free(ptr);
}

/* The next host staging buffer pair, once the device has finished reading or writing it. */
static int stage_begin(mn_session_pool *p) {
    int b = p->next_stage;
    p->next_stage ^= 1;
    if (p->as)
        p->as->fence_wait(p->ex->ctx, b);
    return b;
}

static void stage_end(mn_session_pool *p, int b) {
    if (p->as)
        p->as->fence_record(p->ex->ctx, b);
}

/* host_dst (n states) = rows[i] of the pool; waits for it. The device scratch `memory` and the
 * index part of `ints` are reused (stream order keeps earlier users done). */
static mn_status read_rows(mn_session_pool *p, const int32_t *rows, int n, float *host_dst) {
    const mn_exec *ex = p->ex;
    int b = stage_begin(p);
    memcpy(p->stage[b], rows, (size_t)n * sizeof(int32_t));
    MN_OP(ex, upload, p->ints, p->stage[b], (size_t)n * sizeof(int32_t));
    MN_OP(ex, gather_rows, p->memory, NULL, p->states, p->ints, (size_t)n, p->kC);
    if (p->as)
        p->as->download_async(ex->ctx, host_dst, p->memory, (size_t)n * p->kC * sizeof(float));
    else
        MN_OP(ex, download, host_dst, p->memory, (size_t)n * p->kC * sizeof(float));
    stage_end(p, b);
    if (p->as)
        p->as->fence_wait(ex->ctx, b);
    return mn_exec_status(ex);
}

/* ---------------------------------------------------------------- creation */
static void release_update_buffers(mn_session_pool *p) {
    const mn_exec *ex = p->ex;
    mn_stack_acts_free(ex, &p->acts);
    float *floats[] = {p->states, p->memory, p->u, p->write_aux, p->r_next};
    for (int i = 0; i < 5; i++)
        mn_exec_release(ex, floats[i]);
    mn_exec_release(ex, p->ints);
    for (int i = 0; i < 2; i++) {
        host_free(p, p->stage[i]);
        host_free(p, p->xfer[i]);
        host_free(p, p->box[i].states);
        free(p->box[i].slot), free(p->box[i].version), free(p->box[i].turns), free(p->box[i].id);
    }
    for (int i = 0; i < p->n_graphs; i++)
        p->as->graph_release(ex->ctx, p->graphs[i].graph);
    free(p->graphs);
}

static void pool_free(mn_session_pool *p) {
    if (p->ex)
        release_update_buffers(p);
    for (int i = 0; p->ids && i < p->slots; i++)
        free(p->ids[i]);
    free(p->ids), free(p->turns), free(p->version), free(p->synced), free(p->inflight), free(p->seen);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->store_lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

static mn_status alloc_buffers(mn_session_pool *p) {
    const mn_config *c = &p->model->config;
    const mn_exec *ex = p->ex;
    const size_t cap = (size_t)p->cap, S = (size_t)c->n_slots + (size_t)c->max_turn_tokens, kC = p->kC;
    const size_t n_ints = cap * S + 2 * cap;
    MN_TRY(mn_stack_acts_alloc(ex, &p->acts, c, c->n_comp_layers, p->cap, (int)S, 1));
    MN_TRY(mn_exec_alloc(ex, ((size_t)p->slots + cap) * kC * sizeof(float), (void **)&p->states));
    float **floats[] = {&p->memory, &p->u, &p->write_aux, &p->r_next};
    size_t floats_n[] = {cap * kC, cap * kC, mn_memory_write_aux_floats(c, p->cap), cap * kC};
    for (int i = 0; i < 4; i++)
        MN_TRY(mn_exec_alloc(ex, floats_n[i] * sizeof(float), (void **)floats[i]));
    MN_TRY(mn_exec_alloc(ex, n_ints * sizeof(int32_t), (void **)&p->ints));
    for (int i = 0; i < 2; i++) {
        MN_TRY(host_alloc(p, n_ints * sizeof(int32_t), (void **)&p->stage[i]));
        MN_TRY(host_alloc(p, kC * sizeof(float), (void **)&p->xfer[i]));
        MN_TRY(host_alloc(p, cap * kC * sizeof(float), (void **)&p->box[i].states));
        outbox *o = &p->box[i];
        o->slot = malloc(cap * sizeof *o->slot);
        o->version = malloc(cap * sizeof *o->version);
        o->turns = malloc(cap * sizeof *o->turns);
        o->id = malloc(cap * sizeof *o->id);
        if (!o->slot || !o->version || !o->turns || !o->id)
            return mn_fail(MN_ERR_NOMEM, "session pool: out of memory for the sync buffers");
    }
    return MN_OK;
}

mn_status mn_session_pool_create(mn_model *model, int slots, mn_session_pool **out) {
    if (!out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_pool_create: out is NULL");
    *out = NULL;
    if (!model || slots < 1)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_pool_create: model is NULL or slots = %d < 1", slots);
    mn_session_pool *p = calloc(1, sizeof *p);
    if (!p)
        return mn_fail(MN_ERR_NOMEM, "session pool: out of memory");
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->store_lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->model = model;
    p->slots = slots;
    p->kC = mn_state_floats(model);
    p->ids = calloc((size_t)slots, sizeof *p->ids);
    p->turns = calloc((size_t)slots, sizeof *p->turns);
    p->version = calloc((size_t)slots, sizeof *p->version);
    p->synced = calloc((size_t)slots, sizeof *p->synced);
    p->inflight = calloc((size_t)slots, 1);
    p->seen = calloc((size_t)slots, sizeof *p->seen);
    if (!p->ids || !p->turns || !p->version || !p->synced || !p->inflight || !p->seen) {
        pool_free(p);
        return mn_fail(MN_ERR_NOMEM, "session pool: out of memory for %d slots", slots);
    }
    p->ex = &model->exec;
    p->as = p->ex->be->async;
    p->cap = mn_update_chunk_cap(model, INT32_MAX);
    p->bucketed = p->ex->be->device != MN_DEVICE_CPU;
    p->graphs_on = 1;
    mn_status st = alloc_buffers(p);
    /* every slot starts at R_0 */
    if (st == MN_OK)
        st = mn_exec_status(p->ex);
    for (int s = 0; st == MN_OK && s < slots; s++)
        MN_OP(p->ex, upload, p->states + (size_t)s * p->kC, model->views.r0, p->kC * sizeof(float));
    if (st == MN_OK)
        st = p->ex->be->synchronize(p->ex->ctx);
    if (st != MN_OK) {
        pool_free(p);
        return mn_fail_context(st, "session pool of %d slots on the %s", slots, model->exec.be->name);
    }
    model->open_pools++;
    *out = p;
    return MN_OK;
}

int mn_session_pool_slots(const mn_session_pool *p) { return p ? p->slots : 0; }

mn_status mn_session_pool_set_graphs(mn_session_pool *p, int enabled) {
    if (!p)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_pool_set_graphs: pool is NULL");
    p->graphs_on = enabled != 0;
    return MN_OK;
}

/* ---------------------------------------------------------------- single states */
static mn_status check_slot(const mn_session_pool *p, int slot, const char *who) {
    if (!p)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: pool is NULL", who);
    if (slot < 0 || slot >= p->slots)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: slot %d is outside the pool's [0, %d)", who, slot, p->slots);
    return MN_OK;
}

/* Queues slot's R = r through the next staging buffer (returns before the copy has run on an
 * async backend: the buffer, not r, is what it reads). */
static void put_state(mn_session_pool *p, int slot, const float *r) {
    int b = stage_begin(p);
    memcpy(p->xfer[b], r, p->kC * sizeof(float));
    MN_OP(p->ex, upload, p->states + (size_t)slot * p->kC, p->xfer[b], p->kC * sizeof(float));
    stage_end(p, b);
}

mn_status mn_session_pool_write(mn_session_pool *p, int slot, const float *r, int64_t turns) {
    MN_TRY(check_slot(p, slot, "mn_session_pool_write"));
    if (!r || turns < 0)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_pool_write: r is NULL or turns = %lld < 0", (long long)turns);
    MN_TRY(mn_check_state(p->model, r, "mn_session_pool_write"));
    put_state(p, slot, r);
    MN_TRY(mn_exec_status(p->ex));
    p->turns[slot] = turns;
    p->version[slot]++;
    return MN_OK;
}

mn_status mn_session_pool_read(mn_session_pool *p, int slot, float *r, int64_t *turns) {
    MN_TRY(check_slot(p, slot, "mn_session_pool_read"));
    if (!r)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_pool_read: r is NULL");
    const int32_t row = slot;
    int b = p->next_stage; /* read_rows takes this pair: its xfer buffer receives the state */
    MN_TRY(read_rows(p, &row, 1, p->xfer[b]));
    memcpy(r, p->xfer[b], p->kC * sizeof(float));
    if (turns)
        *turns = p->turns[slot];
    return MN_OK;
}

/* ---------------------------------------------------------------- batched update */
/* Buckets of a device's chunks: the batch rounded up to a power of two (at most cap), the turn
 * length up to a multiple of 16 (at most N), so a few graphs cover every chunk. */
static int bucket_batch(int B, int cap) {
    int b = 1;
    while (b < B)
        b <<= 1;
    return b < cap ? b : cap;
}

static int bucket_length(int L, int N) {
    int l = (L + 15) / 16 * 16;
    return l < N ? l : N;
}

/* The staged chunk (B sessions padded to L; rows in ints after ids and valid): gather the
 * states, the compressor update, scatter the new states back. */
static void chunk_ops(mn_session_pool *p, int B, int L) {
    const mn_exec *ex = p->ex;
    const int32_t *rows = p->ints + (size_t)B * (p->model->config.n_slots + L) + B;
    MN_OP(ex, gather_rows, p->memory, NULL, p->states, rows, (size_t)B, p->kC);
    mn_compress_staged(p->model, &p->acts, p->ints, p->memory, p->u, p->write_aux, p->r_next, B, L);
    MN_OP(ex, gather_rows, p->states, rows, p->r_next, NULL, (size_t)B, p->kC);
}

/* chunk_ops, replayed from the bucket's graph where the backend captures graphs: the first
 * chunk of a bucket runs as is (which also sizes the context's scratch) and is captured for the
 * next ones; a stale graph is dropped and captured again. */
static mn_status run_chunk(mn_session_pool *p, int B, int L) {
    const mn_backend_async *as = p->as;
    if (!as || !p->graphs_on) {
        chunk_ops(p, B, L);
        return MN_OK;
    }
    bucket_graph *g = NULL;
    for (int i = 0; i < p->n_graphs && !g; i++)
        if (p->graphs[i].B == B && p->graphs[i].L == L)
            g = &p->graphs[i];
    if (g && g->graph && as->graph_launch(p->ex->ctx, g->graph) == 0)
        return MN_OK;
    chunk_ops(p, B, L);
    MN_TRY(mn_exec_status(p->ex));
    if (!g) {
        bucket_graph *grown = realloc(p->graphs, ((size_t)p->n_graphs + 1) * sizeof *grown);
        if (!grown)
            return mn_fail(MN_ERR_NOMEM, "session pool: out of memory for a graph");
        p->graphs = grown;
        g = &p->graphs[p->n_graphs++];
        *g = (bucket_graph){B, L, NULL};
    }
    as->graph_release(p->ex->ctx, g->graph);
    g->graph = NULL;
    as->capture_begin(p->ex->ctx);
    chunk_ops(p, B, L);
    return as->capture_end(p->ex->ctx, &g->graph);
}

/* The entries (validated, longest first) through the compressor, chunk by chunk. */
static mn_status update_entries(mn_session_pool *p, const mn_seq_turn *e, int n, const int32_t *slots) {
    const mn_config *c = &p->model->config;
    const int k = c->n_slots;
    static const int32_t pad_token = 0; /* a padded entry's turn: one token 0 */
    for (int first = 0; first < n; first += p->cap) {
        const int B = n - first < p->cap ? n - first : p->cap, L = e[first].len;
        const int Bq = p->bucketed ? bucket_batch(B, p->cap) : B;
        const int Lq = p->bucketed ? bucket_length(L, c->max_turn_tokens) : L, S = k + Lq;
        int b = stage_begin(p);
        int32_t *ids = p->stage[b], *valid = ids + (size_t)Bq * S, *rows = valid + Bq;
        for (int q = 0; q < Bq; q++) {
            const int real = q < B;
            const mn_seq_turn *t = &e[first + (real ? q : 0)];
            mn_turn_ids(k, real ? t->tokens : &pad_token, real ? t->len : 1, Lq, ids + (size_t)q * S, NULL);
            valid[q] = k + (real ? t->len : 1);
            rows[q] = real ? slots[t->index] : p->slots + (q - B); /* padded entries: the spare rows */
        }
        MN_OP(p->ex, upload, p->ints, ids, ((size_t)Bq * S + 2 * (size_t)Bq) * sizeof(int32_t));
        stage_end(p, b);
        MN_TRY(run_chunk(p, Bq, Lq));
    }
    return p->ex->be->synchronize(p->ex->ctx);
}

mn_status mn_session_pool_update(mn_session_pool *p, int n, const int32_t *slots, const int32_t *tokens,
                                 const int64_t *offsets) {
    const char *who = "mn_session_pool_update";
    if (!p || n < 0)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: pool is NULL or n = %d < 0", who, n);
    if (n == 0)
        return MN_OK;
    if (!slots || !tokens || !offsets)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: slots, tokens or offsets is NULL", who);
    mn_seq_turn *e = malloc((size_t)n * sizeof *e);
    if (!e)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory for %d entries", who, n);
    if (++p->stamp == 0) { /* wrapped: forget every mark */
        memset(p->seen, 0, (size_t)p->slots * sizeof *p->seen);
        p->stamp = 1;
    }
    mn_status st = MN_OK;
    for (int i = 0; st == MN_OK && i < n; i++) {
        if (slots[i] < 0 || slots[i] >= p->slots)
            st = mn_fail(MN_ERR_INVALID_ARG, "%s: entry %d names slot %d, outside the pool's [0, %d)", who, i, slots[i],
                         p->slots);
        else if (p->seen[slots[i]] == p->stamp)
            st = mn_fail(MN_ERR_INVALID_ARG, "%s: entry %d names slot %d, which an earlier entry names too", who, i,
                         slots[i]);
        else
            st = mn_batch_turn(p->model, tokens, offsets, i, who, &e[i]);
        if (st == MN_OK)
            p->seen[slots[i]] = p->stamp;
    }
    if (st == MN_OK) {
        if (n > 1)
            qsort(e, (size_t)n, sizeof *e, mn_seq_by_length_desc);
        st = update_entries(p, e, n, slots);
    }
    free(e);
    for (int i = 0; st == MN_OK && i < n; i++) {
        p->turns[slots[i]]++;
        p->version[slots[i]]++;
    }
    return st;
}

/* ---------------------------------------------------------------- the sync thread */
static void *sync_main(void *arg) {
    mn_session_pool *p = arg;
    sigset_t all; /* signals go to the caller's threads */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        outbox *o = &p->box[p->thread_box];
        if (!o->busy) {
            if (p->stop)
                break;
            pthread_cond_wait(&p->cond, &p->lock);
            continue;
        }
        pthread_mutex_unlock(&p->lock);
        int written = 0;
        mn_status st = MN_OK;
        char message[sizeof p->sync_message] = "";
        pthread_mutex_lock(&p->store_lock);
        for (; written < o->n; written++) {
            st = mn_session_put(p->store, o->id[written], p->fingerprint, o->states + (size_t)written * p->kC,
                                o->turns[written]);
            if (st != MN_OK) {
                snprintf(message, sizeof message, "session pool: writing session '%s' (slot %d) to the store: %s",
                         o->id[written], o->slot[written], mn_last_error());
                break;
            }
        }
        pthread_mutex_unlock(&p->store_lock);
        pthread_mutex_lock(&p->lock);
        for (int i = 0; i < o->n; i++) {
            int s = o->slot[i];
            p->inflight[s] = 0;
            if (i < written && o->version[i] > p->synced[s])
                p->synced[s] = o->version[i];
        }
        if (st != MN_OK && p->sync_status == MN_OK) {
            p->sync_status = st;
            memcpy(p->sync_message, message, sizeof message);
        }
        o->busy = 0;
        p->thread_box ^= 1;
        pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

mn_status mn_session_pool_attach(mn_session_pool *p, const char *path, int flags) {
    if (!p || !path)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_pool_attach: pool or path is NULL");
    if (p->store)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_pool_attach: the pool has a store already");
    if (flags & ~MN_STORE_NO_SYNC)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_pool_attach: flags may hold MN_STORE_NO_SYNC only");
    const mn_config *c = &p->model->config;
    mn_session_store *store = NULL;
    MN_TRY(mn_session_store_open(path, MN_STORE_WRITE | MN_STORE_CREATE | flags, c->n_slots, c->d_model, &store));
    p->store = store;
    p->fingerprint = mn_model_fingerprint(p->model);
    p->stop = 0;
    if (pthread_create(&p->thread, NULL, sync_main, p) != 0) {
        mn_session_store_close(store);
        p->store = NULL;
        return mn_fail(MN_ERR_NOMEM, "session pool: cannot start the sync thread for %s", path);
    }
    p->thread_started = 1;
    return MN_OK;
}

/* The background failure not yet returned, raised on this thread (and forgotten). */
static mn_status take_sync_error(mn_session_pool *p) {
    pthread_mutex_lock(&p->lock);
    mn_status st = p->sync_status;
    char message[sizeof p->sync_message];
    memcpy(message, p->sync_message, sizeof message);
    p->sync_status = MN_OK;
    pthread_mutex_unlock(&p->lock);
    return st == MN_OK ? MN_OK : mn_fail(st, "%s", message);
}

static mn_status need_store(const mn_session_pool *p, const char *who) {
    if (!p)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: pool is NULL", who);
    if (!p->store)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: no store attached (mn_session_pool_attach)", who);
    return MN_OK;
}

/* Hands every changed bound slot to the thread, one outbox (cap states) at a time. */
static mn_status queue_changed(mn_session_pool *p) {
    for (int next = 0; next < p->slots;) {
        outbox *o = &p->box[p->next_box];
        pthread_mutex_lock(&p->lock);
        while (o->busy)
            pthread_cond_wait(&p->cond, &p->lock);
        o->n = 0;
        for (; next < p->slots && o->n < p->cap; next++)
            if (p->ids[next] && !p->inflight[next] && p->version[next] != p->synced[next]) {
                p->inflight[next] = 1;
                o->slot[o->n++] = next;
            }
        pthread_mutex_unlock(&p->lock);
        if (!o->n)
            break;
        for (int i = 0; i < o->n; i++) {
            int s = o->slot[i];
            o->version[i] = p->version[s];
            o->turns[i] = p->turns[s];
            strcpy(o->id[i], p->ids[s]);
        }
        mn_status st = read_rows(p, o->slot, o->n, o->states);
        pthread_mutex_lock(&p->lock);
        if (st != MN_OK)
            for (int i = 0; i < o->n; i++)
                p->inflight[o->slot[i]] = 0;
        else
            o->busy = 1, p->next_box ^= 1;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        MN_TRY(st);
    }
    return MN_OK;
}

mn_status mn_session_pool_sync(mn_session_pool *p) {
    MN_TRY(need_store(p, "mn_session_pool_sync"));
    MN_TRY(take_sync_error(p));
    return queue_changed(p);
}

/* Queues and waits until the store holds every changed bound slot, or the thread has failed
 * (its error is left for take_sync_error). A slot that was in flight when it changed again is
 * queued by the next round. */
static mn_status drain(mn_session_pool *p) {
    for (;;) {
        MN_TRY(queue_changed(p));
        pthread_mutex_lock(&p->lock);
        while (p->box[0].busy || p->box[1].busy)
            pthread_cond_wait(&p->cond, &p->lock);
        int more = p->sync_status == MN_OK ? 0 : -1;
        for (int s = 0; !more && s < p->slots; s++)
            more = p->ids[s] && p->version[s] != p->synced[s];
        pthread_mutex_unlock(&p->lock);
        if (more <= 0)
            return MN_OK;
    }
}

mn_status mn_session_pool_flush(mn_session_pool *p) {
    MN_TRY(need_store(p, "mn_session_pool_flush"));
    MN_TRY(take_sync_error(p));
    MN_TRY(drain(p));
    return take_sync_error(p);
}

mn_status mn_session_pool_load(mn_session_pool *p, int slot, const char *id, int *found) {
    const char *who = "mn_session_pool_load";
    MN_TRY(need_store(p, who));
    MN_TRY(check_slot(p, slot, who));
    if (!id || !found)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: id or found is NULL", who);
    MN_TRY(take_sync_error(p));
    for (int s = 0; s < p->slots; s++)
        if (s != slot && p->ids[s] && !strcmp(p->ids[s], id))
            return mn_fail(MN_ERR_INVALID_ARG, "%s: session '%s' is in slot %d already", who, id, s);
    float *r = malloc(p->kC * sizeof(float));
    char *copy = strdup(id);
    if (!r || !copy) {
        free(r), free(copy);
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", who);
    }
    mn_session_info info = {0};
    pthread_mutex_lock(&p->store_lock);
    mn_status st = mn_session_get(p->store, id, p->fingerprint, r, &info, found);
    pthread_mutex_unlock(&p->store_lock);
    if (st == MN_OK && !*found)
        st = mn_initial_state(p->model, r);
    if (st == MN_OK) {
        put_state(p, slot, r);
        st = mn_exec_status(p->ex);
    }
    free(r);
    if (st != MN_OK) {
        free(copy);
        return mn_fail_context(st, "loading session '%s' into slot %d", id, slot);
    }
    free(p->ids[slot]);
    p->ids[slot] = copy;
    p->turns[slot] = *found ? info.turns : 0;
    p->version[slot]++;
    pthread_mutex_lock(&p->lock);
    if (*found) /* the store holds this state: nothing to write */
        p->synced[slot] = p->version[slot];
    pthread_mutex_unlock(&p->lock);
    return MN_OK;
}

/* Keeps the first failure of a sequence of steps, with its message. */
static void keep_first(mn_status *first, char *message, size_t cap, mn_status st) {
    if (*first == MN_OK && st != MN_OK) {
        *first = st;
        snprintf(message, cap, "%s", mn_last_error());
    }
}

mn_status mn_session_pool_close(mn_session_pool *p) {
    if (!p)
        return MN_OK;
    mn_status st = MN_OK;
    char message[sizeof p->sync_message] = "";
    if (p->store) { /* a failure returned now still lets every other changed state be written */
        keep_first(&st, message, sizeof message, take_sync_error(p));
        keep_first(&st, message, sizeof message, drain(p));
        pthread_mutex_lock(&p->lock);
        while (p->box[0].busy || p->box[1].busy) /* drain stops early on a device failure */
            pthread_cond_wait(&p->cond, &p->lock);
        p->stop = 1;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        if (p->thread_started)
            pthread_join(p->thread, NULL);
        keep_first(&st, message, sizeof message, take_sync_error(p));
        mn_session_store_close(p->store);
    }
    p->model->open_pools--;
    pool_free(p);
    return st == MN_OK ? MN_OK : mn_fail(st, "%s", message);
}
