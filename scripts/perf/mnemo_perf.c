/* Benchmark-only driver for scripts/bench (not part of the library or the unit suite).
 *
 *   mnemo_perf train    training step time (forward + backward + AdamW), one line per step,
 *                       with OpenBLAS sgemm GFLOP/s measured between the steps; --serve: one
 *                       step per "step" line on stdin (scripts/bench alternates two processes)
 *   mnemo_perf turns    per-turn inference cost (mn_logits + mn_update on one session) from
 *                       turn 1 to turn T, against a full-history baseline: the same decoder
 *                       (mnemo's decoder weights, mnemo's CPU ops) with a KV cache over every
 *                       previous turn; plus session memory in bytes
 *   mnemo_perf sessions mn_update over many sessions' state buffers (peak RSS under time -v)
 *   mnemo_perf batches  draws --n-batches training batches from a token shard (the loader of
 *                       `mnemo train`: B windows of T turns, each turn padded to max_turn) into
 *                       a file that `train --batches` (--trim: each batch cut to its longest
 *                       turn) and scripts/reference/bench_torch.py read, so that both systems
 *                       train on the same real turns
 *
 * Output is "key value" lines that scripts/bench parses. Timings on a shared machine are noisy,
 * so every comparison is made of rounds that alternate the things compared, and reported as
 * medians. Threads: OMP_NUM_THREADS and OPENBLAS_NUM_THREADS from the environment. */
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cpu/ops.h"
#include "cpu/vec.h"
#include "mnemo.h"
#include "text/shard.h"
#include "text/tokenizer.h"

/* ------------------------------------------------------------------ helpers */
static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n) {
    double *c = malloc((size_t)n * sizeof *c);
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_double);
    double m = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
    free(c);
    return m;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "mnemo_perf: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static void die_mn(const char *what) {
    fprintf(stderr, "mnemo_perf: %s: %s\n", what, mn_last_error());
    exit(1);
}

/* The token stream of train/cmd_bench.c and scripts/reference/bench_torch.py. */
static void lcg_tokens(int32_t *out, size_t n, int V) {
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        out[i] = (int32_t)((x >> 8) % (uint32_t)V);
    }
}

static long peak_rss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void print_blas(void) {
    printf("blas %s parallel %d blas_threads %d omp_threads %d pool %s\n", openblas_get_corename(),
           openblas_get_parallel(), openblas_get_num_threads(), omp_get_max_threads(),
           openblas_get_num_threads() == 1 ? "openmp-only" : "openblas+openmp");
}

/* Config options shared by the modes. */
typedef struct {
    mn_config cfg;
    int B, T, bptt, L, steps, warmup, rounds, turns, sessions, serve, n_batches, trim;
    const char *points, *tsv, *store, *shard, *tokenizer, *batches;
} options;

static void parse(int argc, char **argv, options *o) {
    static const struct option opts[] = {
        {"vocab", required_argument, 0, 'V'},      {"width", required_argument, 0, 'C'},
        {"heads", required_argument, 0, 'H'},      {"layers", required_argument, 0, 'l'},
        {"comp-layers", required_argument, 0, 'c'}, {"slots", required_argument, 0, 'k'},
        {"max-turn", required_argument, 0, 'N'},   {"batch", required_argument, 0, 'B'},
        {"turns", required_argument, 0, 'T'},      {"bptt", required_argument, 0, 'K'},
        {"turn-tokens", required_argument, 0, 'L'}, {"steps", required_argument, 0, 's'},
        {"warmup", required_argument, 0, 'w'},     {"rounds", required_argument, 0, 'r'},
        {"points", required_argument, 0, 'p'},     {"tsv", required_argument, 0, 'o'},
        {"sessions", required_argument, 0, 'S'},   {"serve", no_argument, 0, 'e'},
        {"store", required_argument, 0, 'x'},      {"shard", required_argument, 0, 'd'},
        {"tokenizer", required_argument, 0, 't'},  {"batches", required_argument, 0, 'b'},
        {"n-batches", required_argument, 0, 'n'},  {"trim", no_argument, 0, 'm'},
        {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'V': o->cfg.vocab_size = atoi(optarg); break;
        case 'C': o->cfg.d_model = atoi(optarg); break;
        case 'H': o->cfg.n_heads = atoi(optarg); break;
        case 'l': o->cfg.n_layers = atoi(optarg); break;
        case 'c': o->cfg.n_comp_layers = atoi(optarg); break;
        case 'k': o->cfg.n_slots = atoi(optarg); break;
        case 'N': o->cfg.max_turn_tokens = atoi(optarg); break;
        case 'B': o->B = atoi(optarg); break;
        case 'T': o->T = o->turns = atoi(optarg); break;
        case 'K': o->bptt = atoi(optarg); break;
        case 'L': o->L = atoi(optarg); break;
        case 's': o->steps = atoi(optarg); break;
        case 'w': o->warmup = atoi(optarg); break;
        case 'r': o->rounds = atoi(optarg); break;
        case 'p': o->points = optarg; break;
        case 'o': o->tsv = optarg; break;
        case 'S': o->sessions = atoi(optarg); break;
        case 'e': o->serve = 1; break;
        case 'x': o->store = optarg; break;
        case 'd': o->shard = optarg; break;
        case 't': o->tokenizer = optarg; break;
        case 'b': o->batches = optarg; break;
        case 'n': o->n_batches = atoi(optarg); break;
        case 'm': o->trim = 1; break;
        default: exit(2);
        }
    }
    if (mn_config_validate(&o->cfg) != MN_OK)
        die_mn("config");
    if (o->steps < 1 || o->rounds < 1 || o->turns < 1 || o->sessions < 1 || o->B < 1 || o->bptt < 1 ||
        o->n_batches < 1) {
        fprintf(stderr, "mnemo_perf: counts must be >= 1\n");
        exit(2);
    }
    if (o->L < 2 || o->L > o->cfg.max_turn_tokens) {
        fprintf(stderr, "mnemo_perf: --turn-tokens must be in [2, max_turn_tokens]\n");
        exit(2);
    }
}

static mn_model *make_model(const mn_config *cfg) {
    mn_model *m = NULL;
    if (mn_model_create(cfg, &m) != MN_OK || mn_model_init(m, 1) != MN_OK)
        die_mn("model");
    return m;
}

/* ------------------------------------------------------------------ batches from a shard */
/* The batches file: int32 little-endian, header {MAGIC, n, B, T, L}, then per batch tokens
 * (T, B, L) and lengths (T, B). */
#define BATCHES_MAGIC 0x31424e4d /* "MNB1" */
typedef struct {
    int n, B, T, L;
    int32_t *tokens, *lengths; /* n batches one after the other */
} batch_file;

static int cmd_batches(options *o) {
    if (!o->shard || !o->tokenizer || !o->batches) {
        fprintf(stderr, "mnemo_perf batches: --shard, --tokenizer and --batches (the output) are required\n");
        exit(2);
    }
    mn_tokenizer *tok = NULL;
    mn_shard *shard = NULL;
    mn_loader *loader = NULL;
    if (mn_tokenizer_load_file(o->tokenizer, &tok) != MN_OK)
        die_mn("tokenizer");
    if (mn_shard_open(o->shard, mn_tokenizer_hash(tok), &shard) != MN_OK)
        die_mn("shard");
    const int B = o->B, T = o->T, L = o->cfg.max_turn_tokens;
    mn_loader_options lo = {.B = B, .T = T, .max_len = L, .seed = 1, .text_weight = 1.0f, .answer_weight = 1.0f};
    if (mn_loader_create(shard, &lo, &loader) != MN_OK)
        die_mn("loader");
    FILE *f = fopen(o->batches, "wb");
    if (!f) {
        perror(o->batches);
        exit(1);
    }
    int32_t header[5] = {BATCHES_MAGIC, o->n_batches, B, T, L};
    size_t cells = (size_t)T * B, ok = fwrite(header, sizeof header, 1, f);
    int64_t real = 0, longest_padded = 0;
    for (int i = 0; i < o->n_batches; i++) {
        mn_batch b;
        if (mn_loader_next(loader, &b) != MN_OK)
            die_mn("loader");
        int longest = 0;
        for (size_t c = 0; c < cells; c++) {
            real += b.lengths[c];
            longest = b.lengths[c] > longest ? b.lengths[c] : longest;
        }
        longest_padded += (int64_t)longest * (int64_t)cells;
        ok &= fwrite(b.tokens, sizeof(int32_t), cells * L, f) == cells * L;
        ok &= fwrite(b.lengths, sizeof(int32_t), cells, f) == cells;
    }
    if (!ok || fclose(f) != 0) {
        fprintf(stderr, "mnemo_perf batches: writing %s failed\n", o->batches);
        exit(1);
    }
    /* positions: what a batch padded to max_turn and one padded to its longest turn hold */
    printf("batches %d B %d T %d L %d real_tokens %lld padded_to_max %lld padded_to_longest %lld\n", o->n_batches, B,
           T, L, (long long)real, (long long)o->n_batches * (long long)cells * L, (long long)longest_padded);
    mn_loader_free(loader);
    mn_shard_close(shard);
    mn_tokenizer_free(tok);
    return 0;
}

static void read_batches(const char *path, batch_file *bf) {
    FILE *f = fopen(path, "rb");
    int32_t h[5];
    if (!f || fread(h, sizeof h, 1, f) != 1 || h[0] != BATCHES_MAGIC || h[1] < 1 || h[2] < 1 || h[3] < 1 || h[4] < 1) {
        fprintf(stderr, "mnemo_perf: %s is no batches file (mnemo_perf batches)\n", path);
        exit(1);
    }
    *bf = (batch_file){h[1], h[2], h[3], h[4], NULL, NULL};
    size_t cells = (size_t)bf->T * bf->B;
    bf->tokens = xmalloc((size_t)bf->n * cells * bf->L * sizeof(int32_t));
    bf->lengths = xmalloc((size_t)bf->n * cells * sizeof(int32_t));
    for (int i = 0; i < bf->n; i++)
        if (fread(bf->tokens + (size_t)i * cells * bf->L, sizeof(int32_t), cells * bf->L, f) != cells * bf->L ||
            fread(bf->lengths + (size_t)i * cells, sizeof(int32_t), cells, f) != cells) {
            fprintf(stderr, "mnemo_perf: %s is truncated\n", path);
            exit(1);
        }
    fclose(f);
}

/* ------------------------------------------------------------------ train */
/* Matrix-product FLOPs of one forward pass (the formula of train/cmd_bench.c; it agrees with
 * torch.utils.flop_counter on the reference to 0.1%): 24 C^2 per position per layer, attention
 * 4 C per (query, key) pair, the head 2 L C V, the gate 4 k C^2. Backward = 2 x forward. */
static double step_flops(const mn_config *c, int B, int T, int L) {
    double C = c->d_model;
    int S = c->n_slots + L;
    double causal = S * (S + 1) / 2.0, full = (double)S * S;
    double fwd = c->n_layers * (24.0 * C * C * S + 4.0 * C * causal) +
                 c->n_comp_layers * (24.0 * C * C * S + 4.0 * C * full) + 2.0 * L * C * c->vocab_size +
                 4.0 * c->n_slots * C * C;
    return 3.0 * fwd * B * T;
}

/* GFLOP/s of mn_sgemm (the ops' own entry point: same thread pool as training) on the model's
 * most common product shape (B*S, C) @ (C, 4C). */
static double sgemm_gflops(int M, int K, int N, int reps) {
    float *a = xmalloc((size_t)M * K * sizeof(float)), *b = xmalloc((size_t)K * N * sizeof(float));
    float *c = xmalloc((size_t)M * N * sizeof(float));
    for (size_t i = 0; i < (size_t)M * K; i++)
        a[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)K * N; i++)
        b[i] = (float)(i % 7) * 0.01f;
    mn_sgemm(0, 0, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N, omp_get_max_threads());
    double t0 = now_seconds();
    for (int r = 0; r < reps; r++)
        mn_sgemm(0, 0, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N, omp_get_max_threads());
    double dt = now_seconds() - t0;
    free(a), free(b), free(c);
    return 2.0 * M * K * N * reps / dt / 1e9;
}

static int cmd_train(options *o) {
    mn_config *c = &o->cfg;
    mn_model *model = make_model(c);
    mn_trainer *tr = NULL;
    if (mn_trainer_create(model, o->B, o->bptt, &tr) != MN_OK)
        die_mn("trainer");
    /* the LCG batch (every turn --turn-tokens long), or the batches of a file (real turns):
     * step i trains on batch i mod n, warm-up steps likewise, so that two processes paired
     * step by step see the same batch in each pair */
    batch_file bf = {0};
    if (o->batches) {
        read_batches(o->batches, &bf);
        if (bf.B != o->B || bf.T != o->T || bf.L > c->max_turn_tokens) {
            fprintf(stderr, "mnemo_perf train: %s holds batches of %d x %d turns x %d tokens, not %d x %d x <= %d\n",
                    o->batches, bf.B, bf.T, bf.L, o->B, o->T, c->max_turn_tokens);
            exit(2);
        }
    } else {
        bf = (batch_file){1, o->B, o->T, o->L, NULL, NULL};
        bf.tokens = xmalloc((size_t)o->T * o->B * o->L * sizeof(int32_t));
        bf.lengths = xmalloc((size_t)o->T * o->B * sizeof(int32_t));
        lcg_tokens(bf.tokens, (size_t)o->T * o->B * o->L, c->vocab_size);
        for (int i = 0; i < o->T * o->B; i++)
            bf.lengths[i] = o->L;
    }
    const size_t cells = (size_t)bf.T * bf.B;
    mn_batch *batches = xmalloc((size_t)bf.n * sizeof *batches);
    for (int i = 0; i < bf.n; i++) {
        int32_t *tok = bf.tokens + (size_t)i * cells * bf.L, *len = bf.lengths + (size_t)i * cells;
        int L = bf.L;
        if (o->trim) { /* --trim: each batch cut to its longest turn, in place (rows only move down) */
            L = 1;
            for (size_t c = 0; c < cells; c++)
                L = len[c] > L ? len[c] : L;
            for (size_t c = 0; c < cells; c++)
                memmove(tok + c * L, tok + c * bf.L, (size_t)L * sizeof(int32_t));
        }
        batches[i] = (mn_batch){.B = bf.B, .T = bf.T, .max_len = L, .tokens = tok, .lengths = len};
    }
    int32_t *tokens = bf.tokens, *lengths = bf.lengths;
    mn_adamw_config adamw = {3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    print_blas();
    printf("config V %d C %d H %d layers %d+%d slots %d; batch %d x %d turns x %d tokens, bptt %d\n",
           c->vocab_size, c->d_model, c->n_heads, c->n_layers, c->n_comp_layers, c->n_slots, o->B, o->T, o->L,
           o->bptt);
    int S = c->n_slots + o->L;
    double *times = xmalloc((size_t)o->steps * sizeof(double)), *sg = xmalloc((size_t)o->steps * sizeof(double));
    float loss = 0.0f;
    if (o->serve) {
        // paired mode for scripts/bench: warm up, say "ready", then one step per "step" line on
        // stdin, so that the driver can alternate two processes step by step
        for (int s = 0; s < o->warmup; s++) {
            if (mn_forward_backward(tr, &batches[s % bf.n], &loss, NULL) != MN_OK ||
                mn_adamw_step(tr, &adamw, NULL) != MN_OK)
                die_mn("step");
            printf("warmup %.7f\n", (double)loss);
        }
        printf("ready\n");
        fflush(stdout);
        char line[64];
        int i = 0;
        while (fgets(line, sizeof line, stdin) && !strncmp(line, "step", 4)) {
            double t0 = now_seconds();
            if (mn_forward_backward(tr, &batches[i % bf.n], &loss, NULL) != MN_OK ||
                mn_adamw_step(tr, &adamw, NULL) != MN_OK)
                die_mn("step");
            double dt = now_seconds() - t0;
            printf("step %d %.4f %.7f sgemm_gflops %.2f\n", i, dt, (double)loss,
                   sgemm_gflops(o->B * S, c->d_model, 4 * c->d_model, 5));
            i++;
            fflush(stdout);
        }
        printf("gflop_per_step %.2f\npeak_rss_kib %ld\n", step_flops(c, o->B, o->T, o->L) / 1e9, peak_rss_kib());
        free(times), free(sg), free(tokens), free(lengths), free(batches);
        mn_trainer_free(tr);
        mn_model_free(model);
        return 0;
    }
    int64_t real = 0; /* tokens of the timed steps' turns */
    for (int s = -o->warmup; s < o->steps; s++) {
        const mn_batch *batch = &batches[(s < 0 ? s + o->warmup : s) % bf.n];
        if (s >= 0)
            for (size_t i = 0; i < cells; i++)
                real += batch->lengths[i];
        double t0 = now_seconds();
        if (mn_forward_backward(tr, batch, &loss, NULL) != MN_OK || mn_adamw_step(tr, &adamw, NULL) != MN_OK)
            die_mn("step");
        double dt = now_seconds() - t0;
        if (s < 0) {
            printf("warmup %.4f %.7f\n", dt, (double)loss);
            continue;
        }
        times[s] = dt;
        sg[s] = sgemm_gflops(o->B * S, c->d_model, 4 * c->d_model, 5); // alternates with the steps
        printf("step %d %.4f %.7f\n", s, dt, (double)loss);
        fflush(stdout);
    }
    double med = median(times, o->steps), sgm = median(sg, o->steps);
    double flops = step_flops(c, o->B, o->T, o->L);
    double total = 0.0;
    for (int s = 0; s < o->steps; s++)
        total += times[s];
    printf("median_s %.4f tokens_per_s %.1f\n", med, (double)real / total);
    printf("gflop_per_step %.2f effective_gflops %.2f sgemm_gflops %.2f effective_over_sgemm %.3f\n", flops / 1e9,
           flops / med / 1e9, sgm, flops / med / 1e9 / sgm);
    printf("peak_rss_kib %ld\n", peak_rss_kib());
    free(times), free(sg), free(tokens), free(lengths), free(batches);
    mn_trainer_free(tr);
    mn_model_free(model);
    return 0;
}

/* ------------------------------------------------------------------ KV-cache baseline */
/* The decoder of docs/model.md run over the whole conversation instead of [R ; turn]: every
 * turn appends its n tokens' keys and values to a per-layer cache and attends over all of it
 * (causal inside the turn). Same weights (mnemo's decoder.*, wte), same CPU ops for
 * everything but attention, which is a tiled online-softmax attention over the cache written
 * with the same sgemm. Position rows wrap around mnemo's k + N position table: a real
 * full-history model needs a longer table (or rotary positions), a cost of one row add. */
typedef struct {
    const mn_config *c;
    const float *wte, *wpe, *lnf_w, *lnf_b;
    const float *ln1_w[64], *ln1_b[64], *attn_w[64], *attn_b[64], *proj_w[64], *proj_b[64];
    const float *ln2_w[64], *ln2_b[64], *fc_w[64], *fc_b[64], *fcp_w[64], *fcp_b[64];
    size_t cap;             /* cached positions */
    float **k, **v;         /* per layer (cap, C) */
    /* per-turn scratch for n tokens */
    float *x, *ln, *qkv, *atty, *tmp, *res, *fch, *fcg, *mean, *rstd, *logits;
} kv_model;

static const float *tensor(mn_model *m, const char *name) {
    mn_tensor_info info;
    if (mn_model_find_tensor(m, name, &info) != MN_OK)
        die_mn(name);
    return mn_model_params(m) + info.offset;
}

static void kv_init(kv_model *kv, mn_model *m, size_t cap, int n) {
    const mn_config *c = mn_model_config(m);
    if (c->n_layers > 64) {
        fprintf(stderr, "mnemo_perf: at most 64 decoder layers\n");
        exit(2);
    }
    memset(kv, 0, sizeof *kv);
    kv->c = c;
    kv->wte = tensor(m, "wte");
    kv->wpe = tensor(m, "decoder.wpe");
    kv->lnf_w = tensor(m, "decoder.ln_f.weight");
    kv->lnf_b = tensor(m, "decoder.ln_f.bias");
    char name[128];
#define T_(field, suffix)                                               \
    snprintf(name, sizeof name, "decoder.h.%d.%s", l, suffix);          \
    kv->field[l] = tensor(m, name)
    for (int l = 0; l < c->n_layers; l++) {
        T_(ln1_w, "ln_1.weight");
        T_(ln1_b, "ln_1.bias");
        T_(attn_w, "attn.c_attn.weight");
        T_(attn_b, "attn.c_attn.bias");
        T_(proj_w, "attn.c_proj.weight");
        T_(proj_b, "attn.c_proj.bias");
        T_(ln2_w, "ln_2.weight");
        T_(ln2_b, "ln_2.bias");
        T_(fc_w, "mlp.c_fc.weight");
        T_(fc_b, "mlp.c_fc.bias");
        T_(fcp_w, "mlp.c_proj.weight");
        T_(fcp_b, "mlp.c_proj.bias");
    }
#undef T_
    size_t C = (size_t)c->d_model;
    kv->cap = cap;
    kv->k = xmalloc((size_t)c->n_layers * sizeof(float *));
    kv->v = xmalloc((size_t)c->n_layers * sizeof(float *));
    for (int l = 0; l < c->n_layers; l++) {
        kv->k[l] = xmalloc(cap * C * sizeof(float));
        kv->v[l] = xmalloc(cap * C * sizeof(float));
    }
    size_t nC = (size_t)n * C;
    kv->x = xmalloc(nC * 4), kv->ln = xmalloc(nC * 4), kv->qkv = xmalloc(3 * nC * 4);
    kv->atty = xmalloc(nC * 4), kv->tmp = xmalloc(nC * 4), kv->res = xmalloc(nC * 4);
    kv->fch = xmalloc(4 * nC * 4), kv->fcg = xmalloc(4 * nC * 4);
    kv->mean = xmalloc((size_t)n * 4), kv->rstd = xmalloc((size_t)n * 4);
    kv->logits = xmalloc((size_t)n * c->vocab_size * 4);
}

static void kv_free(kv_model *kv) {
    for (int l = 0; l < kv->c->n_layers; l++)
        free(kv->k[l]), free(kv->v[l]);
    free(kv->k), free(kv->v);
    free(kv->x), free(kv->ln), free(kv->qkv), free(kv->atty), free(kv->tmp), free(kv->res);
    free(kv->fch), free(kv->fcg), free(kv->mean), free(kv->rstd), free(kv->logits);
}

/* Keys per tile of the online softmax: the (n, tile) score block stays in L2. */
#define KV_TILE 512

/* One score row of the online softmax: the first nv of nt entries are valid. Updates the running
 * max *mx and sum *sum, leaves exp(score - max) in the row (0 past nv) and returns the factor
 * the row's earlier accumulator must be scaled by. Vectorised like the ops' softmax (mn_exp8),
 * so that the baseline's softmax is as fast as mnemo's. */
MN_VEC_CLONES
static float online_softmax_row(float *row, int nv, int nt, float *mx, float *sum) {
    float m = mn_max_row(row, nv);
    m = *mx > m ? *mx : m;
    float corr = *mx == -INFINITY ? 0.0f : mn_expf(*mx - m);
    mn_v8f vs = mn_v8f_set1(0.0f), vm = mn_v8f_set1(m);
    int t = 0;
    for (; t + 8 <= nv; t += 8) {
        mn_v8f e = mn_exp8(mn_v8f_load(row + t) - vm);
        mn_v8f_store(row + t, e);
        vs += e;
    }
    float s = mn_v8f_sum(vs);
    for (; t < nv; t++) {
        row[t] = mn_expf(row[t] - m);
        s += row[t];
    }
    for (t = nv; t < nt; t++)
        row[t] = 0.0f;
    *sum = *sum * corr + s;
    *mx = m;
    return corr;
}

/* out (n, C) for n new queries (rows of q, stride 3C) over ctx = past + n cached keys. */
static void kv_attention(float *out, const float *qkv, const float *kc, const float *vc, size_t past, int n,
                         int C, int H) {
    int hs = C / H, C3 = 3 * C;
    size_t ctx = past + (size_t)n;
    float scale = 1.0f / sqrtf((float)hs);
    #pragma omp parallel
    {
        float *sc = xmalloc((size_t)n * KV_TILE * sizeof(float));
        float *acc = xmalloc((size_t)n * hs * sizeof(float));
        float *mx = xmalloc((size_t)n * sizeof(float)), *sum = xmalloc((size_t)n * sizeof(float));
        #pragma omp for schedule(static)
        for (int h = 0; h < H; h++) {
            const float *q = qkv + (size_t)h * hs;
            for (int i = 0; i < n; i++)
                mx[i] = -INFINITY, sum[i] = 0.0f;
            memset(acc, 0, (size_t)n * hs * sizeof(float));
            for (size_t t0 = 0; t0 < ctx; t0 += KV_TILE) {
                int nt = (int)(ctx - t0 < KV_TILE ? ctx - t0 : KV_TILE);
                // scores (n, nt) = scale * Q K[t0 : t0+nt]^T
                mn_sgemm_serial(0, 1, n, nt, hs, scale, q, C3, kc + t0 * C + (size_t)h * hs, C, 0.0f, sc, nt);
                for (int i = 0; i < n; i++) {
                    float *row = sc + (size_t)i * nt;
                    // causal inside the current turn: query i sees cache rows < past + i + 1
                    size_t lim = past + (size_t)i + 1;
                    int nv = lim <= t0 ? 0 : (lim - t0 < (size_t)nt ? (int)(lim - t0) : nt);
                    if (nv == 0) {
                        for (int t = 0; t < nt; t++)
                            row[t] = 0.0f;
                        continue;
                    }
                    float corr = online_softmax_row(row, nv, nt, &mx[i], &sum[i]);
                    float *a = acc + (size_t)i * hs;
                    for (int d = 0; d < hs; d++)
                        a[d] *= corr;
                }
                // acc (n, hs) += P (n, nt) V[t0 : t0+nt]
                mn_sgemm_serial(0, 0, n, hs, nt, 1.0f, sc, nt, vc + t0 * C + (size_t)h * hs, C, 1.0f, acc, hs);
            }
            for (int i = 0; i < n; i++)
                for (int d = 0; d < hs; d++)
                    out[(size_t)i * C + (size_t)h * hs + d] = acc[(size_t)i * hs + d] / sum[i];
        }
        free(sc), free(acc), free(mx), free(sum);
    }
}

/* Checks kv_attention against the ops' causal attention on one sequence of past + n positions
 * (the last n as queries; several key tiles). Returns the largest absolute difference. */
static double kv_attention_check(int C, int H) {
    const int past = 2 * KV_TILE + 37, n = 45, S = past + n;
    float *qkv = xmalloc((size_t)S * 3 * C * sizeof(float)), *ref = xmalloc((size_t)S * C * sizeof(float));
    float *att = xmalloc((size_t)H * S * S * sizeof(float)), *out = xmalloc((size_t)n * C * sizeof(float));
    float *kc = xmalloc((size_t)S * C * sizeof(float)), *vc = xmalloc((size_t)S * C * sizeof(float));
    uint32_t x = 7;
    for (size_t i = 0; i < (size_t)S * 3 * C; i++) {
        x = x * 1664525u + 1013904223u;
        qkv[i] = (float)((x >> 8) & 0xffff) / 65536.0f * 4.0f - 2.0f;
    }
    for (int t = 0; t < S; t++) {
        memcpy(kc + (size_t)t * C, qkv + (size_t)t * 3 * C + C, (size_t)C * sizeof(float));
        memcpy(vc + (size_t)t * C, qkv + (size_t)t * 3 * C + 2 * C, (size_t)C * sizeof(float));
    }
    int32_t valid = S;
    mn_attention_forward(ref, att, qkv, &valid, 1, S, C, H, 1, omp_get_max_threads());
    kv_attention(out, qkv + (size_t)past * 3 * C, kc, vc, (size_t)past, n, C, H);
    double worst = 0.0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++)
            worst = fmax(worst, fabs((double)out[(size_t)i * C + c] - ref[(size_t)(past + i) * C + c]));
    free(qkv), free(ref), free(att), free(out), free(kc), free(vc);
    return worst;
}

/* One turn: n tokens at cache positions past..past+n-1 -> logits (n, V) in kv->logits. */
static void kv_turn(kv_model *kv, const int32_t *tok, int n, size_t past) {
    const mn_config *c = kv->c;
    int C = c->d_model, P = c->n_slots + c->max_turn_tokens;
    size_t nC = (size_t)n * C;
    const int team = omp_get_max_threads(); // the ops' threads: the process's OpenMP default
    mn_embedding_forward(kv->x, tok, kv->wte, n, C, team);
    for (int i = 0; i < n; i++) {
        const float *pos = kv->wpe + (size_t)((past + (size_t)i) % (size_t)P) * C;
        mn_residual_forward(kv->x + (size_t)i * C, kv->x + (size_t)i * C, pos, (size_t)C, team);
    }
    for (int l = 0; l < c->n_layers; l++) {
        mn_layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->x, kv->ln1_w[l], kv->ln1_b[l], n, C, team);
        mn_linear_forward(kv->qkv, kv->ln, kv->attn_w[l], kv->attn_b[l], n, C, 3 * C, team);
        for (int i = 0; i < n; i++) { // append this turn's keys and values
            memcpy(kv->k[l] + (past + (size_t)i) * C, kv->qkv + (size_t)i * 3 * C + C, (size_t)C * sizeof(float));
            memcpy(kv->v[l] + (past + (size_t)i) * C, kv->qkv + (size_t)i * 3 * C + 2 * C, (size_t)C * sizeof(float));
        }
        kv_attention(kv->atty, kv->qkv, kv->k[l], kv->v[l], past, n, C, c->n_heads);
        mn_linear_forward(kv->tmp, kv->atty, kv->proj_w[l], kv->proj_b[l], n, C, C, team);
        mn_residual_forward(kv->res, kv->x, kv->tmp, nC, team);
        mn_layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->res, kv->ln2_w[l], kv->ln2_b[l], n, C, team);
        mn_linear_forward(kv->fch, kv->ln, kv->fc_w[l], kv->fc_b[l], n, C, 4 * C, team);
        mn_gelu_forward(kv->fcg, kv->fch, 4 * nC, team);
        mn_linear_forward(kv->tmp, kv->fcg, kv->fcp_w[l], kv->fcp_b[l], n, 4 * C, C, team);
        mn_residual_forward(kv->x, kv->res, kv->tmp, nC, team);
    }
    mn_layernorm_forward(kv->ln, kv->mean, kv->rstd, kv->x, kv->lnf_w, kv->lnf_b, n, C, team);
    mn_lm_head_forward(kv->logits, kv->ln, kv->wte, n, C, c->vocab_size, team);
}

/* ------------------------------------------------------------------ turns */
static int parse_points(const char *s, int *pts, int max, int T) {
    int n = 0;
    while (s && *s && n < max) {
        int p = atoi(s);
        if (p >= 1 && p <= T)
            pts[n++] = p;
        const char *comma = strchr(s, ',');
        s = comma ? comma + 1 : NULL;
    }
    return n;
}

static int cmd_turns(options *o) {
    mn_config *c = &o->cfg;
    mn_model *m = make_model(c);
    int T = o->turns, n = o->L, C = c->d_model, V = c->vocab_size;
    size_t state = mn_state_floats(m);
    int pts[32];
    int np = parse_points(o->points ? o->points : "1,64,512,4096", pts, 32, T);
    int32_t *tok = xmalloc((size_t)T * n * sizeof(int32_t));
    lcg_tokens(tok, (size_t)T * n, V);
    float *logits = xmalloc((size_t)n * V * sizeof(float));
    float *r = xmalloc(state * sizeof(float)), *r_out = xmalloc(state * sizeof(float));
    float *saved = xmalloc((size_t)np * state * sizeof(float)); /* R_{p-1} for each point p */
    double *chain = xmalloc((size_t)T * sizeof(double));
    print_blas();
    printf("config V %d C %d H %d layers %d+%d slots %d; turns of %d tokens, %d turns\n", V, C, c->n_heads,
           c->n_layers, c->n_comp_layers, c->n_slots, n, T);

    // 1. one session, turn by turn: decode the turn given R, then fold it into R
    if (mn_initial_state(m, r) != MN_OK)
        die_mn("initial state");
    for (int t = 1; t <= T; t++) {
        for (int j = 0; j < np; j++)
            if (pts[j] == t)
                memcpy(saved + (size_t)j * state, r, state * sizeof(float));
        const int32_t *tk = tok + (size_t)(t - 1) * n;
        double t0 = now_seconds();
        if (mn_logits(m, tk, n, r, logits) != MN_OK || mn_update(m, tk, n, r, r) != MN_OK)
            die_mn("turn");
        chain[t - 1] = now_seconds() - t0;
    }
    if (o->tsv) {
        FILE *f = fopen(o->tsv, "w");
        if (!f) {
            perror(o->tsv);
            return 1;
        }
        fprintf(f, "# turn\tmnemo_seconds (one session, turn by turn)\n");
        for (int t = 1; t <= T; t++)
            fprintf(f, "%d\t%.6f\n", t, chain[t - 1]);
        fclose(f);
    }
    // chain medians over windows of 16 turns ending at each point (turn 1: turns 1..16)
    for (int j = 0; j < np; j++) {
        int a = pts[j] - 16 < 0 ? 0 : pts[j] - 16, len = pts[j] - a < 1 ? 1 : pts[j] - a;
        if (pts[j] <= 16)
            a = 0, len = 16 < T ? 16 : T;
        printf("chain_window turn %d median_s %.6f\n", pts[j], median(chain + a, len));
    }

    // 2. the baseline's attention against the ops' attention, then a KV cache sized for the
    // last point; its first turns hold real keys and values, the
    // rest copies of them (a turn's cost depends on the cache length, not on its contents)
    double kv_err = kv_attention_check(C, c->n_heads);
    printf("kv_attention_check max_abs_diff %.3g\n", kv_err);
    if (!(kv_err < 1e-4)) {
        fprintf(stderr, "mnemo_perf: the KV-cache attention disagrees with mn_attention_forward\n");
        return 1;
    }
    int maxp = 1;
    for (int j = 0; j < np; j++)
        maxp = pts[j] > maxp ? pts[j] : maxp;
    size_t cap = (size_t)maxp * n;
    kv_model kv;
    kv_init(&kv, m, cap, n);
    int real = maxp < 8 ? maxp : 8;
    for (int t = 1; t <= real; t++)
        kv_turn(&kv, tok + (size_t)(t - 1) * n, n, (size_t)(t - 1) * n);
    for (int l = 0; l < c->n_layers; l++)
        for (size_t p = (size_t)real * n; p < cap; p++) {
            size_t src = p % ((size_t)real * n);
            memcpy(kv.k[l] + p * C, kv.k[l] + src * C, (size_t)C * sizeof(float));
            memcpy(kv.v[l] + p * C, kv.v[l] + src * C, (size_t)C * sizeof(float));
        }

    // 3. mnemo: every round times each point right next to the first point (the order of the
    // two swapping every round), so that each ratio to turn 1 sees one machine load; medians of
    // those paired ratios over rounds are the flatness figure. Then the KV cache, per point.
    int R = o->rounds, RM = 4 * o->rounds;
    double *tm = xmalloc((size_t)RM * np * sizeof(double)), *tk = xmalloc((size_t)R * np * sizeof(double));
    double *ratio = xmalloc((size_t)RM * np * sizeof(double));
    for (int rd = -1; rd < RM; rd++) // round -1 warms caches and is not recorded
        for (int j = 0; j < np; j++) {
            double t[2];
            for (int k = 0; k < 2; k++) {
                int which = (rd + k) % 2 ? 0 : j; // alternate which of the pair runs first
                const int32_t *tt = tok + (size_t)(pts[which] - 1) * n;
                const float *rp = saved + (size_t)which * state;
                double t0 = now_seconds();
                if (mn_logits(m, tt, n, rp, logits) != MN_OK || mn_update(m, tt, n, rp, r_out) != MN_OK)
                    die_mn("turn");
                t[which == 0 ? 0 : 1] = now_seconds() - t0;
                if (j == 0) { // the first point paired with itself: both timings are turn 1
                    t[1] = t[0];
                    break;
                }
            }
            if (rd >= 0) {
                tm[(size_t)j * RM + rd] = t[1];
                ratio[(size_t)j * RM + rd] = t[1] / t[0];
            }
        }
    for (int rd = 0; rd < R; rd++)
        for (int jj = 0; jj < np; jj++) {
            int j = rd % 2 ? np - 1 - jj : jj;
            double t0 = now_seconds();
            kv_turn(&kv, tok + (size_t)(pts[j] - 1) * n, n, (size_t)(pts[j] - 1) * n);
            tk[(size_t)j * R + rd] = now_seconds() - t0;
        }
    size_t kv_bytes_per_token = 2 * (size_t)c->n_layers * C * sizeof(float);
    for (int j = 0; j < np; j++) {
        double a = median(tm + (size_t)j * RM, RM), b = median(tk + (size_t)j * R, R);
        printf("point turn %d mnemo_s %.6f kv_s %.6f mnemo_state_bytes %zu kv_cache_bytes %zu paired_ratio %.4f\n",
               pts[j], a, b, state * sizeof(float), (size_t)pts[j] * n * kv_bytes_per_token,
               median(ratio + (size_t)j * RM, RM));
    }
    printf("peak_rss_kib %ld\n", peak_rss_kib());
    kv_free(&kv);
    free(tm), free(tk), free(ratio), free(tok), free(logits), free(r), free(r_out), free(saved), free(chain);
    mn_model_free(m);
    return 0;
}

/* ------------------------------------------------------------------ sessions */
/* A 10k-session store update as a service would run it: the HDF5 session store (fsync per put
 * off, like a batch job) is filled with S sessions, then one turn is folded into every session:
 * get a group of states, mn_update_batch, put them back. Peak RSS comes from time -v. */
#define SESSION_GROUP 64
static int cmd_sessions(options *o) {
    mn_config *c = &o->cfg;
    mn_model *m = make_model(c);
    size_t state = mn_state_floats(m);
    uint64_t fp = mn_model_fingerprint(m);
    int S = o->sessions, n = o->L;
    if (!o->store) {
        fprintf(stderr, "mnemo_perf sessions: --store PATH is required\n");
        exit(2);
    }
    mn_session_store *st = NULL;
    if (mn_session_store_open(o->store, MN_STORE_WRITE | MN_STORE_CREATE | MN_STORE_NO_SYNC, c->n_slots,
                              c->d_model, &st) != MN_OK)
        die_mn("session store");
    float *r = xmalloc(SESSION_GROUP * state * sizeof(float));
    int32_t *tok = xmalloc((size_t)SESSION_GROUP * n * sizeof(int32_t));
    int64_t offsets[SESSION_GROUP + 1];
    for (int i = 0; i <= SESSION_GROUP; i++)
        offsets[i] = (int64_t)i * n;
    lcg_tokens(tok, (size_t)SESSION_GROUP * n, c->vocab_size);
    if (mn_initial_state(m, r) != MN_OK)
        die_mn("initial state");
    char id[32];
    double t_fill = now_seconds();
    for (int s = 0; s < S; s++) {
        snprintf(id, sizeof id, "session-%06d", s);
        if (mn_session_put(st, id, fp, r, 0) != MN_OK)
            die_mn("put");
    }
    t_fill = now_seconds() - t_fill;
    print_blas();
    double t0 = now_seconds();
    for (int s0 = 0; s0 < S; s0 += SESSION_GROUP) {
        int g = S - s0 < SESSION_GROUP ? S - s0 : SESSION_GROUP;
        for (int i = 0; i < g; i++) {
            int found = 0;
            snprintf(id, sizeof id, "session-%06d", s0 + i);
            if (mn_session_get(st, id, fp, r + (size_t)i * state, NULL, &found) != MN_OK || !found)
                die_mn("get");
        }
        if (mn_update_batch(m, g, tok, offsets, r, r) != MN_OK)
            die_mn("mn_update_batch");
        for (int i = 0; i < g; i++) {
            snprintf(id, sizeof id, "session-%06d", s0 + i);
            if (mn_session_put(st, id, fp, r + (size_t)i * state, 1) != MN_OK)
                die_mn("put");
        }
    }
    double dt = now_seconds() - t0;
    mn_session_store_stats stats;
    if (mn_session_store_stats_get(st, &stats) != MN_OK)
        die_mn("stats");
    printf("sessions %d turn_tokens %d store_bytes %lld fill_s %.3f seconds %.3f per_update_ms %.3f\n", S, n,
           (long long)(stats.snapshot_bytes + stats.journal_bytes), t_fill, dt, 1e3 * dt / S);
    printf("peak_rss_kib %ld\n", peak_rss_kib());
    mn_session_store_close(st);
    free(r), free(tok);
    mn_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: mnemo_perf train|turns|sessions|batches [options]\n");
        return 2;
    }
    options o = {.cfg = mn_config_demo(), .B = 8, .T = 8, .bptt = 8, .L = 128, .steps = 3, .warmup = 1,
                 .rounds = 5, .turns = 4096, .sessions = 10000, .n_batches = 8};
    const char *mode = argv[1];
    optind = 2;
    parse(argc, argv, &o);
    if (!strcmp(mode, "train"))
        return cmd_train(&o);
    if (!strcmp(mode, "turns"))
        return cmd_turns(&o);
    if (!strcmp(mode, "sessions"))
        return cmd_sessions(&o);
    if (!strcmp(mode, "batches"))
        return cmd_batches(&o);
    fprintf(stderr, "mnemo_perf: unknown mode %s\n", mode);
    return 2;
}
