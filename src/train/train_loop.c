/* The training loop (include/mnemo_train.h, docs/training.md): data (token shards or synthetic
 * recall episodes), the curriculum, warmup + cosine AdamW over the ranks of a data-parallel
 * world, non-finite step skipping, metrics JSONL, atomic checkpoints and bit-identical resume.
 * It prints nothing: what happens reaches the caller through mn_train_callbacks. Evaluation
 * is train_eval.c. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "model/backend.h"
#include "model/trainer_internal.h"
#include "train/dist.h"
#include "train/train_run.h"

/* Training and eval data are drawn from RNGs of their own, so that evaluating never moves
 * the training RNG. */
#define TRAIN_RNG_SALT 0x3c6ef372fe94f82bull
#define LOADER_SALT 0x9e3779b97f4a7c15ull

typedef mn_train_run_state run;

static void notice(run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notice(run *r, const char *fmt, ...) {
    if (!r->cb->notice)
        return;
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    r->cb->notice(r->cb->ctx, text);
}

/* mkdir -p */
static int make_dirs(const char *path) {
    char buf[MN_TRAIN_PATH_CAP];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Fails fast when the run directory cannot take a checkpoint or belongs to another run, before
 * any training is spent (run_dir.h); the run-id file is written once setup has succeeded. */
static mn_status check_run_dir(run *r, const char *dir) {
    const char *resume = r->opts->resume;
    const char *hint = resume ? "; to continue a checkpoint that lies somewhere read-only, give --run-dir a new "
                                "directory"
                              : "";
    if (make_dirs(dir) != 0)
        return mn_fail(MN_ERR_IO, "cannot create the run directory %s: %s%s", dir, strerror(errno), hint);
    char probe[MN_TRAIN_PATH_CAP + 64];
    snprintf(probe, sizeof probe, "%s/.write-test.%ld", dir, (long)getpid());
    FILE *f = fopen(probe, "w");
    if (!f)
        return mn_fail(MN_ERR_IO, "the run directory %s is not writable: %s%s", dir, strerror(errno), hint);
    fclose(f);
    unlink(probe);
    MN_TRY(mn_run_dir_check(dir, resume, &r->claim));
    char here[PATH_MAX];
    if (r->claim.first_path[0] && realpath(dir, here) && strcmp(here, r->claim.first_path))
        notice(r, "continuing run %s in %s, a copy of its directory first made at %s", r->claim.id, dir,
               r->claim.first_path);
    int removed = 0;
    if (mn_checkpoint_clean_temps(dir, &removed) != MN_OK)
        notice(r, "warning: %s", mn_last_error());
    else if (removed)
        notice(r, "removed %d stale temp file(s) of interrupted checkpoint writes in %s", removed, dir);
    return MN_OK;
}

/* A checkpoint file already at path (a resume from an earlier step of this run) is replaced only
 * when it is provably this run's. */
static mn_status may_replace(const run *r, const char *path) {
    char id[MN_RUN_ID_LEN + 1];
    if (access(path, F_OK) != 0)
        return MN_OK;
    if (mn_checkpoint_read_run_id(path, id, sizeof id) == MN_OK && !strcmp(id, r->claim.id))
        return MN_OK;
    return mn_fail(MN_ERR_MISMATCH, "%s exists and is not a checkpoint of this run (%s): it is not replaced", path,
                   r->claim.id);
}

/* ---------------------------------------------------------------- data */
static int stage_turns(const run *r, int stage) { return r->curriculum.turns[stage]; }

void mn_train_recall_distances(const run *r, int turns, int *lo, int *hi) {
    *hi = turns - 1;
    *lo = r->cfg->recall_min_distance < *hi ? r->cfg->recall_min_distance : *hi;
}

/* The loader of the current stage: each stage reads windows of its own length, in an order
 * seeded by (seed, stage); the cursor in the state belongs to the current stage's loader. */
static mn_status stage_loader(run *r, int turns, int stage) {
    if (r->loader && r->loader_stage == stage)
        return MN_OK;
    mn_loader_free(r->loader);
    r->loader = NULL;
    mn_loader_options o = {.B = r->cfg->batch, .T = turns, .max_len = r->cfg->model.max_turn_tokens,
                           .seed = (uint64_t)r->cfg->seed ^ (LOADER_SALT * (uint64_t)(stage + 1)),
                           .text_weight = (float)r->cfg->text_weight, .answer_weight = (float)r->cfg->answer_weight,
                           .stream = r->cfg->stream};
    mn_status st = mn_loader_create(r->train_shard, &o, &r->loader);
    if (st != MN_OK)
        return st;
    r->loader_stage = stage;
    if (r->cfg->stream)
        notice(r, "stream: %" PRId64 " windows of %d turns an epoch; %" PRId64 " tail turns dropped, %" PRId64
               " episodes shorter than %d skipped", mn_loader_n_windows(r->loader), turns,
               mn_loader_dropped_turns(r->loader), mn_loader_skipped_episodes(r->loader), turns);
    mn_loader_cursor c = {r->st.data_epoch, r->st.data_position};
    MN_TRY(mn_loader_set_cursor(r->loader, c));
    return r->cfg->stream ? mn_loader_set_lanes(r->loader, r->lane_episode, r->lane_turn) : MN_OK;
}

/* Streaming: every lane starts over (a new run, a new curriculum stage). */
static void restart_lanes(run *r) {
    for (int b = 0; r->cfg->stream && b < r->cfg->batch; b++)
        r->lane_episode[b] = -1, r->lane_turn[b] = 0;
}

/* Streaming: the batch carries each lane's state from its previous window, where the loader says
 * the window continues the lane's episode; a state that is not finite (a step that overflowed)
 * is not carried, and that lane starts from R_0. */
static void carry_states(run *r, mn_batch *batch) {
    const size_t S = (size_t)r->cfg->model.n_slots * (size_t)r->cfg->model.d_model;
    for (int b = 0; b < batch->B; b++) {
        int finite = 1;
        for (size_t i = 0; finite && i < S; i++)
            finite = isfinite(r->carried[(size_t)b * S + i]);
        r->carry[b] = batch->carry[b] && finite;
    }
    batch->carry = r->carry;
    batch->initial_states = r->carried;
}

/* compact: turns are often far shorter than max_turn_tokens, and compute grows with the padded
 * length. */
void mn_train_slice_batch(const mn_batch *in, int e0, int n, int compact, int32_t *tokens, int32_t *lengths,
                          float *weights, mn_batch *out) {
    int L = in->max_len;
    if (compact) {
        L = 1;
        for (int t = 0; t < in->T; t++)
            for (int e = e0; e < e0 + n; e++)
                if (in->lengths[t * in->B + e] > L)
                    L = in->lengths[t * in->B + e];
    }
    for (int t = 0; t < in->T; t++)
        for (int i = 0; i < n; i++) {
            size_t src = (size_t)t * in->B + (size_t)(e0 + i), dst = (size_t)t * n + (size_t)i;
            memcpy(tokens + dst * L, in->tokens + src * in->max_len, (size_t)L * sizeof(int32_t));
            if (in->loss_weights)
                memcpy(weights + dst * L, in->loss_weights + src * in->max_len, (size_t)L * sizeof(float));
            else
                for (int j = 0; j < L; j++)
                    weights[dst * L + j] = 1.0f;
            lengths[dst] = in->lengths[src];
        }
    *out = (mn_batch){.B = n, .T = in->T, .max_len = L, .tokens = tokens, .lengths = lengths, .loss_weights = weights};
}

/* The next global batch: the same episodes in the same order on every rank. */
static mn_status next_batch(run *r, int stage, mn_batch *batch) {
    int turns = stage_turns(r, stage);
    if (r->recall) {
        int lo, hi;
        mn_train_recall_distances(r, turns, &lo, &hi);
        MN_TRY(mn_recall_fill_batch(&r->task, &r->rng, r->cfg->batch, turns, r->max_len, lo, hi, r->tokens,
                                    r->lengths, r->weights, NULL));
        *batch = (mn_batch){.B = r->cfg->batch, .T = turns, .max_len = r->max_len, .tokens = r->tokens,
                            .lengths = r->lengths, .loss_weights = r->weights};
        return MN_OK;
    }
    MN_TRY(stage_loader(r, turns, stage));
    MN_TRY(mn_loader_next(r->loader, batch));
    mn_loader_cursor c = mn_loader_get_cursor(r->loader);
    r->st.data_epoch = c.epoch;
    r->st.data_position = c.position;
    if (r->cfg->stream) {
        mn_loader_get_lanes(r->loader, r->lane_episode, r->lane_turn);
        carry_states(r, batch);
    }
    return MN_OK;
}

/* The index in the global batch of this rank's micro-batch m. */
static int first_episode(const run *r, int m) { return r->rank * r->local_B + m * r->micro_B; }

/* This rank's micro-batch m of the global batch. */
static void micro_batch(run *r, const mn_batch *global, int m, mn_batch *out) {
    int e0 = first_episode(r, m);
    mn_train_slice_batch(global, e0, r->micro_B, !r->recall, r->mtokens, r->mlengths, r->mweights, out);
    if (global->carry) { /* streaming: the micro-batch's lanes of the carried states */
        out->carry = global->carry + e0;
        out->initial_states = global->initial_states + (size_t)e0 * mn_state_floats(r->model);
    }
}

/* Streaming: the carried states of micro-batch m's lanes (read as its initial states, then
 * overwritten with its final ones); NULL without streaming. */
static float *carried_of(run *r, int m) {
    return r->cfg->stream ? r->carried + (size_t)first_episode(r, m) * mn_state_floats(r->model) : NULL;
}

/* ---------------------------------------------------------------- checkpoints */
/* The caller's checkpoint_fault callback as mn_checkpoint_save's fault function. */
typedef struct {
    const mn_train_callbacks *cb;
    uint64_t step;
} fault_adapter;

static int checkpoint_fault(void *ctx, const char *dataset) {
    const fault_adapter *f = ctx;
    return f->cb->checkpoint_fault(f->cb->ctx, f->step, dataset);
}

/* What every rank restates at a checkpoint: its view of the loop's state. */
typedef struct {
    uint64_t step, rng[4], data_epoch, data_position, stage;
} rank_view;

/* Writes ckpt-<step>.h5 (rank 0) and prunes old ones. Every rank takes part: the ranks' views
 * of the data cursor and RNG are checked to agree, ZeRO-1 moment shards are gathered, and the
 * outcome is shared, so that all ranks go on (or stop) together. 0 on success; 1: rank 0 could
 * not write it (mn_last_error() says why); < 0: the ranks cannot talk any more (abort). */
static int save_checkpoint(run *r, int final) {
    char path[MN_TRAIN_PATH_CAP + 64] = "";
    char what[64];
    snprintf(what, sizeof what, "checkpoint at step %" PRIu64, r->st.step);
    rank_view mine = {r->st.step, {r->st.rng[0], r->st.rng[1], r->st.rng[2], r->st.rng[3]}, r->st.data_epoch,
                      r->st.data_position, (uint64_t)r->st.curriculum_stage};
    rank_view *views = calloc((size_t)r->world, sizeof *views);
    uint64_t *cursors = calloc((size_t)r->world * MN_DIST_CURSOR_FIELDS, sizeof *cursors);
    int ok = 1;
    if (mn_trainer_pull(r->trainer) != MN_OK) { /* the file is written from the host mirrors */
        free(views), free(cursors);
        return -1;
    }
    if (!views || !cursors) {
        free(views), free(cursors);
        mn_fail(MN_ERR_NOMEM, "%s: out of memory", what);
        return -1;
    }
    if (mn_dist_allgather(r->d, &mine, sizeof mine, views, what) != MN_OK) {
        free(views), free(cursors);
        return -1;
    }
    for (int k = 0; k < r->world; k++) {
        if (memcmp(&views[k], &views[0], sizeof mine)) {
            mn_fail(MN_ERR_MISMATCH, "%s: rank %d's step, RNG or data cursor differs from rank 0's: the ranks diverged",
                    what, k);
            free(views), free(cursors);
            return -1;
        }
        uint64_t *c = cursors + (size_t)k * MN_DIST_CURSOR_FIELDS;
        c[0] = views[k].data_epoch;
        c[1] = views[k].data_position;
        c[2] = (uint64_t)k * (uint64_t)r->local_B;
        c[3] = (uint64_t)r->local_B;
    }
    /* ZeRO-1: rank 0 gathers the moment shards, so that the file has one process's layout */
    size_t P = mn_model_num_params(r->model);
    float *full_m = NULL, *full_v = NULL;
    if (mn_trainer_moments_range(r->trainer, NULL, NULL)) {
        if (r->rank == 0 && (!(full_m = malloc(P * sizeof(float))) || !(full_v = malloc(P * sizeof(float))))) {
            free(full_m), free(views), free(cursors);
            mn_fail(MN_ERR_NOMEM, "%s: out of memory gathering the moments", what);
            return -1;
        }
        if (mn_dist_gather_shards(r->d, mn_trainer_adam_m(r->trainer), P, full_m, 0, what) != MN_OK ||
            mn_dist_gather_shards(r->d, mn_trainer_adam_v(r->trainer), P, full_v, 0, what) != MN_OK) {
            free(full_m), free(full_v), free(views), free(cursors);
            return -1;
        }
    }
    if (r->rank == 0) {
        mn_checkpoint_dist dl = {r->world, r->cfg->zero, r->cfg->grad_accum, cursors};
        fault_adapter fault = {r->cb, r->st.step};
        mn_checkpoint_stream stream = {r->cfg->batch, (int64_t)mn_state_floats(r->model), r->lane_episode,
                                       r->lane_turn, r->carried};
        mn_checkpoint_save_options o = {.train_config_json = r->config_json, .run_id = r->claim.id,
                                        .tokenizer = r->tok, .dist = &dl, .adam_m = full_m, .adam_v = full_v,
                                        .stream = r->cfg->stream ? &stream : NULL};
        if (r->cb->checkpoint_fault) {
            o.fault = checkpoint_fault;
            o.fault_ctx = &fault;
        }
        ok = mn_checkpoint_run_path(r->cfg->run_dir, r->st.step, path, sizeof path) == MN_OK &&
             may_replace(r, path) == MN_OK && mn_checkpoint_save(path, r->model, r->trainer, &r->st, &o) == MN_OK;
        mn_train_checkpoint_info info = {r->st.step, path, ok, ok ? NULL : mn_last_error(), final};
        if (r->cb->checkpoint)
            r->cb->checkpoint(r->cb->ctx, &info);
    }
    free(views), free(cursors), free(full_m), free(full_v);
    /* the others wait here for rank 0's write, so that nobody runs ahead of a checkpoint */
    int32_t shared = ok;
    if (mn_dist_bcast(r->d, &shared, sizeof shared, 0, what) != MN_OK)
        return -1;
    if (!shared) {
        if (r->rank != 0)
            mn_fail(MN_ERR_IO, "%s: rank 0 could not write it", what);
        return 1;
    }
    if (r->rank != 0)
        return 0;
    snprintf(r->last_checkpoint, sizeof r->last_checkpoint, "%s", path);
    int removed;
    if (mn_checkpoint_prune(r->cfg->run_dir, r->claim.id, r->cfg->keep_checkpoints, &removed) != MN_OK)
        notice(r, "warning: %s", mn_last_error());
    if (r->metrics) {
        fprintf(r->metrics, "{\"checkpoint\": \"%s\", \"step\": %" PRIu64 "}\n", path, r->st.step);
        fflush(r->metrics);
    }
    return 0;
}

/* ---------------------------------------------------------------- setup */
/* --base: the checkpoint's parameters. With more decoder or compressor layers asked than it
 * has (and an otherwise equal model), its layers become the top ones of each stack and the new
 * layers below them start as identity blocks (seeded like a fresh model, output projections
 * zero), so the grown model computes exactly the checkpoint's function at step 0 and training
 * adds the depth. With more slots asked, slot j >= k starts as a copy of slot (j - k) % k (its
 * R_0 row, both position rows, its write's address column, bias and diagonal) plus the fresh
 * initialisation of the seed, whose noise breaks the copies' symmetry (exact copies would stay
 * copies: their writes and gradients mirror each other); token positions keep their rows. */
static const char *const grown_stacks[2] = {"decoder", "compressor"};

/* Copies tensor `from` of the base into `to` of the grown model; `axis` (0 rows, 1 columns, -1
 * none) is slot-indexed; new slot entries are their source slot's value plus, where `noise`,
 * the entry the seeded initialisation put there. */
static void copy_grown_tensor(const float *src, const mn_tensor_info *from, float *dst, const mn_tensor_info *to,
                              int axis, int k, int extra, int noise) {
    if (axis < 0 || extra == 0) {
        memcpy(dst + to->offset, src + from->offset, from->size * sizeof(float));
        return;
    }
    int cols = from->ndim == 2 ? from->shape[1] : from->shape[0];
    int to_cols = to->ndim == 2 ? to->shape[1] : to->shape[0];
    int to_rows = to->ndim == 2 ? to->shape[0] : 1;
    float *out = dst + to->offset;
    const float *in = src + from->offset;
    for (int r = 0; r < to_rows; r++)
        for (int c = 0; c < to_cols; c++) {
            /* slots keep their index; what follows them (token positions, the write's strength
             * column) moves by the added slots */
            int j = axis == 0 ? r : c, fresh = j >= k && j < k + extra;
            int source = fresh ? (j - k) % k : j < k ? j : j - extra;
            int fr = axis == 0 ? source : r, fc = axis == 1 ? source : c;
            float v = in[(size_t)fr * (size_t)cols + (size_t)fc];
            float *o = out + (size_t)r * (size_t)to_cols + (size_t)c;
            *o = fresh && noise ? *o + v : v;
        }
}

/* The slot-indexed axis of a tensor (-1: none) and whether its new entries take the
 * initialisation's noise (weights and R_0 do; biases and the diagonal are copied as they are). */
static int slot_axis(const char *name, int *noise) {
    *noise = 1;
    if (!strcmp(name, "memory.r0") || !strcmp(name, "decoder.wpe") || !strcmp(name, "compressor.wpe"))
        return 0;
    if (!strcmp(name, "memory.write.weight"))
        return 1;
    *noise = 0;
    if (!strcmp(name, "memory.write.bias") || !strcmp(name, "memory.write.diag"))
        return 1; /* 1-D: its one axis */
    return -1;
}

static mn_status load_base(run *r, const char *base, const mn_checkpoint_load_options *lo) {
    const mn_config *want = mn_model_config(r->model);
    mn_config have;
    MN_TRY(mn_checkpoint_read_config(base, &have));
    int extra[2] = {want->n_layers - have.n_layers, want->n_comp_layers - have.n_comp_layers};
    int extra_slots = want->n_slots - have.n_slots;
    int grows = extra[0] >= 0 && extra[1] >= 0 && extra_slots >= 0 && extra[0] + extra[1] + extra_slots > 0 &&
                have.vocab_size == want->vocab_size && have.d_model == want->d_model &&
                have.n_heads == want->n_heads && have.max_turn_tokens == want->max_turn_tokens &&
                have.write_rule == want->write_rule;
    if (!grows)
        return mn_checkpoint_load(base, r->model, NULL, NULL, lo); /* names any mismatch */
    have.gate_bias_init = want->gate_bias_init;
    mn_model *small = NULL;
    mn_status st = mn_model_create(&have, &small);
    if (st == MN_OK)
        st = mn_checkpoint_load(base, small, NULL, NULL, lo);
    if (st == MN_OK)
        st = mn_model_init(r->model, (uint64_t)r->cfg->seed);
    float *dst = mn_model_params(r->model);
    for (int i = 0; st == MN_OK && i < mn_model_num_tensors(small); i++) {
        mn_tensor_info from, to;
        char name[128];
        mn_model_tensor(small, i, &from);
        snprintf(name, sizeof name, "%s", from.name);
        for (int s = 0; s < 2; s++) {
            size_t n = strlen(grown_stacks[s]);
            int layer, at = 0;
            if (!strncmp(from.name, grown_stacks[s], n) && sscanf(from.name + n, ".h.%d.%n", &layer, &at) == 1 &&
                at > 0)
                snprintf(name, sizeof name, "%s.h.%d.%s", grown_stacks[s], layer + extra[s], from.name + n + at);
        }
        int noise, axis = slot_axis(from.name, &noise);
        if ((st = mn_model_find_tensor(r->model, name, &to)) == MN_OK)
            copy_grown_tensor(mn_model_params(small), &from, dst, &to, axis, have.n_slots, extra_slots, noise);
    }
    static const char *const projections[] = {"attn.c_proj.weight", "attn.c_proj.bias", "mlp.c_proj.weight",
                                              "mlp.c_proj.bias"};
    for (int s = 0; s < 2; s++)
        for (int l = 0; st == MN_OK && l < extra[s]; l++)
            for (size_t p = 0; st == MN_OK && p < sizeof projections / sizeof projections[0]; p++) {
                char name[128];
                mn_tensor_info t;
                snprintf(name, sizeof name, "%s.h.%d.%s", grown_stacks[s], l, projections[p]);
                if ((st = mn_model_find_tensor(r->model, name, &t)) == MN_OK)
                    memset(dst + t.offset, 0, t.size * sizeof(float));
            }
    mn_model_free(small);
    return st;
}

static mn_status setup_data(run *r, const char *resume_or_base) {
    const mn_train_config *c = r->cfg;
    if (r->recall) {
        MN_TRY(mn_train_recall_task(c, &r->task)); /* checked by mn_train_config_validate */
        r->max_len = mn_recall_max_len(&r->task);
    } else {
        mn_status st = MN_OK;
        if (c->tokenizer[0])
            st = mn_tokenizer_load_file(c->tokenizer, &r->tok);
        else if (resume_or_base)
            st = mn_checkpoint_load_tokenizer(resume_or_base, &r->tok);
        if (st != MN_OK)
            return mn_fail_context(st, "tokenizer");
        if (!r->tok)
            return mn_fail(MN_ERR_CONFIG,
                           "task shards needs --tokenizer (or a --resume/--base checkpoint holding one)");
        if (mn_tokenizer_vocab_size(r->tok) > c->model.vocab_size)
            return mn_fail(MN_ERR_MISMATCH, "the tokenizer has %d tokens but vocab_size = %d",
                           mn_tokenizer_vocab_size(r->tok), c->model.vocab_size);
        uint64_t hash = mn_tokenizer_hash(r->tok);
        if ((st = mn_shard_open(c->train_data, hash, &r->train_shard)) != MN_OK)
            return mn_fail_context(st, "train_data");
        r->max_len = c->model.max_turn_tokens;
        if (c->valid_data[0]) {
            mn_loader_options o = {.B = c->batch, .T = c->turns, .max_len = c->model.max_turn_tokens,
                                   .seed = (uint64_t)c->seed ^ MN_TRAIN_EVAL_LOSS_SALT,
                                   .text_weight = (float)c->text_weight, .answer_weight = (float)c->answer_weight};
            if ((st = mn_shard_open(c->valid_data, hash, &r->valid_shard)) != MN_OK ||
                (st = mn_loader_create(r->valid_shard, &o, &r->valid_loader)) != MN_OK)
                return mn_fail_context(st, "valid_data");
        }
        if (c->valid_probes[0] && c->eval_probes > 0 && (st = mn_train_load_probes(r)) != MN_OK)
            return mn_fail_context(st, "valid_probes");
    }
    size_t cells = (size_t)c->batch * (size_t)c->turns, mcells = (size_t)r->micro_B * (size_t)c->turns;
    r->tokens = malloc(cells * (size_t)r->max_len * sizeof(int32_t));
    r->weights = malloc(cells * (size_t)r->max_len * sizeof(float));
    r->lengths = malloc(cells * sizeof(int32_t));
    r->mtokens = malloc(mcells * (size_t)c->model.max_turn_tokens * sizeof(int32_t));
    r->mweights = malloc(mcells * (size_t)c->model.max_turn_tokens * sizeof(float));
    r->mlengths = malloc(mcells * sizeof(int32_t));
    if (!r->tokens || !r->weights || !r->lengths || !r->mtokens || !r->mweights || !r->mlengths)
        return mn_fail(MN_ERR_NOMEM, "out of memory for batches");
    if (c->stream) {
        size_t lanes = (size_t)c->batch;
        r->lane_episode = malloc(lanes * sizeof *r->lane_episode);
        r->lane_turn = malloc(lanes * sizeof *r->lane_turn);
        r->carried = calloc(lanes * (size_t)c->model.n_slots * (size_t)c->model.d_model, sizeof(float));
        r->carry = calloc(lanes, 1);
        if (!r->lane_episode || !r->lane_turn || !r->carried || !r->carry)
            return mn_fail(MN_ERR_NOMEM, "out of memory for the carried states");
        restart_lanes(r);
    }
    return MN_OK;
}

/* The checkpoint's per-rank cursors restate its global cursor; the same world size must find
 * its own slice in them, another world size re-shards the global batch (the cursor is global). */
static mn_status check_resume_layout(run *r) {
    const char *resume = r->opts->resume;
    mn_checkpoint_dist dl;
    int found = 0;
    mn_status st = mn_checkpoint_read_dist(resume, &dl, &found);
    if (st != MN_OK)
        return mn_fail_context(st, "--resume");
    if (!found)
        return MN_OK; /* saved by one process before /train/dist existed */
    for (int64_t k = 0; k < dl.world_size && st == MN_OK; k++) {
        const uint64_t *c = dl.rank_cursors + k * MN_DIST_CURSOR_FIELDS;
        if (c[0] != r->st.data_epoch || c[1] != r->st.data_position)
            st = mn_fail(MN_ERR_FORMAT,
                         "--resume %s: rank %" PRId64 "'s data cursor (%" PRIu64 ", %" PRIu64
                         ") differs from the global one (%" PRIu64 ", %" PRIu64 ")",
                         resume, k, c[0], c[1], r->st.data_epoch, r->st.data_position);
    }
    if (st == MN_OK && dl.world_size == r->world) {
        const uint64_t *c = dl.rank_cursors + (size_t)r->rank * MN_DIST_CURSOR_FIELDS;
        if (c[2] != (uint64_t)r->rank * (uint64_t)r->local_B || c[3] != (uint64_t)r->local_B)
            st = mn_fail(MN_ERR_MISMATCH,
                         "--resume %s: rank %d trained episodes %" PRIu64 "..+%" PRIu64
                         " of each batch, now %d..+%d (another batch size?)",
                         resume, r->rank, c[2], c[3], r->rank * r->local_B, r->local_B);
    } else if (st == MN_OK) {
        r->resharded_from = dl.world_size;
    }
    mn_checkpoint_dist_free(&dl);
    return st;
}

/* The carried states and lane positions of a streaming run's checkpoint; a checkpoint and a
 * config must agree on streaming, since the data cursor counts episodes in one and windows in
 * the other. */
static mn_status resume_stream(run *r) {
    const char *resume = r->opts->resume;
    mn_checkpoint_stream s;
    int found = 0;
    mn_status st = mn_checkpoint_read_stream(resume, &s, &found);
    if (st != MN_OK)
        return mn_fail_context(st, "--resume");
    size_t lanes = (size_t)r->cfg->batch, S = mn_state_floats(r->model);
    if (!r->cfg->stream && found)
        st = mn_fail(MN_ERR_CONFIG, "--resume %s: the checkpoint is of a --stream 1 run (it holds carried states); "
                     "resume it with --stream 1, or start a new run from its parameters with --base", resume);
    else if (r->cfg->stream && !found)
        st = mn_fail(MN_ERR_CONFIG, "--resume %s: --stream 1 needs the carried states of a streaming run, and the "
                     "checkpoint holds none (saved with --stream 0 or by an older mnemo); resume it with --stream 0, "
                     "or start a new run from its parameters with --base", resume);
    else if (found && (s.lanes != (int64_t)lanes || s.state_floats != (int64_t)S))
        st = mn_fail(MN_ERR_MISMATCH, "--resume %s: the checkpoint carries %lld lanes of %lld floats, this run %zu of %zu",
                     resume, (long long)s.lanes, (long long)s.state_floats, lanes, S);
    if (st == MN_OK && found) {
        memcpy(r->lane_episode, s.episode, lanes * sizeof *s.episode);
        memcpy(r->lane_turn, s.turn, lanes * sizeof *s.turn);
        memcpy(r->carried, s.states, lanes * S * sizeof(float));
    }
    mn_checkpoint_stream_free(&s);
    return st;
}

static mn_status setup_model(run *r) {
    const mn_train_config *c = r->cfg;
    const mn_train_options *o = r->opts;
    mn_status st;
    if ((st = mn_model_create(&c->model, &r->model)) != MN_OK ||
        (st = mn_model_set_threads(r->model, c->threads)) != MN_OK ||
        (st = mn_trainer_create_backend(r->model, r->backend, r->micro_B, c->bptt, &r->trainer)) != MN_OK ||
        (st = mn_trainer_set_reconstruction(r->trainer, (float)c->reconstruct_weight)) != MN_OK ||
        (st = mn_trainer_set_reconstruction_delay(r->trainer, c->reconstruct_delay)) != MN_OK)
        return mn_fail_context(st, "model");
    if (c->grad_accum > 1 && !(r->accum = malloc(mn_model_num_params(r->model) * sizeof(float))))
        return mn_fail(MN_ERR_NOMEM, "out of memory for the gradient accumulator");
    mn_checkpoint_load_options lo = {0};
    if (r->tok) {
        lo.check_tokenizer = 1;
        lo.tokenizer_hash = mn_tokenizer_hash(r->tok);
    }
    if (o->resume) {
        if ((st = mn_checkpoint_load(o->resume, r->model, r->trainer, &r->st, &lo)) != MN_OK)
            return mn_fail_context(st, "--resume");
        if (r->st.curriculum_stage >= r->curriculum.n)
            return mn_fail(MN_ERR_CONFIG, "--resume %s: curriculum stage %" PRId64 " does not exist in this config",
                           o->resume, r->st.curriculum_stage);
        memcpy(r->rng.s, r->st.rng, sizeof r->rng.s);
        MN_TRY(check_resume_layout(r));
        MN_TRY(resume_stream(r));
    } else {
        if (o->base) {
            if ((st = load_base(r, o->base, &lo)) != MN_OK)
                return mn_fail_context(st, "--base");
        } else if ((st = mn_model_init(r->model, (uint64_t)c->seed)) != MN_OK) {
            return mn_fail_context(st, "init");
        }
        mn_rng_seed(&r->rng, (uint64_t)c->seed ^ TRAIN_RNG_SALT);
        memset(&r->st, 0, sizeof r->st);
    }
    if (c->freeze_decoder && ((st = mn_trainer_freeze(r->trainer, "decoder.", 1)) != MN_OK ||
                              (st = mn_trainer_freeze(r->trainer, "wte", 1)) != MN_OK))
        return mn_fail_context(st, "freeze");
    /* wte feeds the compressor too: frozen with it, so what is written into R stays as it was */
    if (c->freeze_compressor && ((st = mn_trainer_freeze(r->trainer, "compressor.", 1)) != MN_OK ||
                                 (st = mn_trainer_freeze(r->trainer, "memory.", 1)) != MN_OK ||
                                 (st = mn_trainer_freeze(r->trainer, "wte", 1)) != MN_OK))
        return mn_fail_context(st, "freeze");
    if (c->zero && r->world > 1) { /* ZeRO-1: this rank keeps only its shard of the moments */
        size_t lo_p, hi_p;
        mn_dist_shard_range(mn_model_num_params(r->model), r->world, r->rank, &lo_p, &hi_p);
        if ((st = mn_trainer_shard_moments(r->trainer, lo_p, hi_p)) != MN_OK)
            return mn_fail_context(st, "zero");
    }
    /* a device trainer copied the parameters when it was created: send what was loaded since */
    if ((st = mn_trainer_push(r->trainer)) != MN_OK)
        return mn_fail_context(st, "model");
    return MN_OK;
}

/* metrics.jsonl of the run directory (rank 0), with the start or resume record. */
static mn_status open_metrics(run *r) {
    char path[MN_TRAIN_PATH_CAP + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->cfg->run_dir);
    if (!(r->metrics = fopen(path, "a")))
        return mn_fail(MN_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    const char *resume = r->opts->resume;
    fprintf(r->metrics, "{\"event\": \"%s\", \"step\": %" PRIu64 "%s%s%s, \"ranks\": %d}\n",
            resume ? "resume" : "start", r->st.step, resume ? ", \"checkpoint\": \"" : "", resume ? resume : "",
            resume ? "\"" : "", r->world);
    fflush(r->metrics);
    return MN_OK;
}

static void cleanup(run *r) {
#ifdef MN_HAVE_NCCL
    mn_dist_nccl_close(r->nccl);
#endif
    if (r->metrics)
        fclose(r->metrics);
    mn_loader_free(r->loader);
    mn_loader_free(r->valid_loader);
    mn_shard_close(r->train_shard);
    mn_shard_close(r->valid_shard);
    mn_dialogue_list_free(&r->probes);
    mn_tokenizer_free(r->tok);
    mn_trainer_free(r->trainer);
    mn_model_free(r->model);
    free(r->tokens), free(r->weights), free(r->lengths);
    free(r->mtokens), free(r->mweights), free(r->mlengths);
    free(r->accum);
    free(r->lane_episode), free(r->lane_turn), free(r->carried), free(r->carry);
    free(r->config_json);
}

/* ---------------------------------------------------------------- one step */
#ifdef MN_HAVE_NCCL
/* The GPU of this rank: its rank on the node (mpirun, srun and MPICH say it) modulo the GPUs
 * the node shows, else the global rank modulo them. */
static int local_device(int rank, int count) {
    const char *names[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "LOCAL_RANK"};
    int local = rank;
    for (int i = 0; i < 4; i++) {
        const char *v = getenv(names[i]);
        char *end = NULL;
        long x = v && *v ? strtol(v, &end, 10) : -1;
        if (v && *v && end && !*end && x >= 0 && x < INT_MAX) {
            local = (int)x;
            break;
        }
    }
    return count > 0 ? local % count : 0;
}
#endif

/* Several ranks on a device: on a GPU, NCCL (the build must have it) on this rank's GPU,
 * chosen before the trainer's context is made there; on the stand-in, MPI over host mirrors. */
static mn_status setup_device_ranks(run *r) {
    const mn_train_config *cfg = r->cfg;
    if (cfg->zero)
        return mn_fail(MN_ERR_CONFIG, "--device %s with %d ranks: zero 1 (sharded moments) runs on the CPU only; "
                       "drop zero or use --device cpu", cfg->device, r->world);
    if (r->backend != mn_backend_cuda())
        return MN_OK;
    if (!mn_dist_have_nccl())
        return mn_fail(MN_ERR_CONFIG, "--device %s with %d ranks needs NCCL for the gradient all-reduce, and this "
                       "build has none (it needs CUDA, MPI and NCCL: nccl.h and libnccl when it is configured); run "
                       "one process on the GPU, or --device cpu", cfg->device, r->world);
#ifdef MN_HAVE_NCCL
    int count = 0;
    MN_TRY(mn_cuda_device_count(&count));
    const int device = local_device(r->rank, count);
    MN_TRY(mn_dist_nccl_open(r->d, device, &r->nccl));
    if (r->rank == 0)
        notice(r, "%d ranks: gradients all-reduced over NCCL, one GPU a rank (rank 0 on GPU %d)", r->world, device);
#endif
    return MN_OK;
}


/* What each rank reports after its forward/backward; every rank then decides alike. */
typedef struct {
    double loss_sum, tokens;
    double recon_loss;   /* reconstruction loss over the global weight (0: off) */
    int32_t status;      /* 0 ok, 1 non-finite (the step is skipped), 2 failed */
    int32_t stop;        /* a stop signal arrived */
    int32_t out_of_time; /* rank 0's clock decides */
    int32_t pad;
} step_report;

typedef struct {
    float loss, grad_norm;
    double recon_loss;
    int skipped, stop, out_of_time;
    int64_t tokens;
    char skip_reason[512];
} step_result;

/* AdamW's result: a non-finite norm (the same reduced gradient everywhere) skips the step on
 * every rank; anything else fails it. */
static mn_status adamw_outcome(mn_status st, step_result *res) {
    if (st == MN_ERR_NUMERIC) {
        snprintf(res->skip_reason, sizeof res->skip_reason, "%s", mn_last_error());
        res->skipped = 1;
    } else if (st != MN_OK) {
        return mn_fail_context(st, "training step");
    }
    return MN_OK;
}

/* The all-reduce of a CUDA trainer's gradients over NCCL, in device memory (each rank's are
 * already scaled by the global weight: a sum), then AdamW on the device. NCCL runs on the
 * default stream after the trainer's stream has drained, and waits; the sum's order is NCCL's
 * (fixed for a topology and world size), so it equals the CPU's rank-order sum to rounding. */
static mn_status device_reduce_step(run *r, mn_adamw_config *adamw, step_result *res, uint64_t step) {
#ifdef MN_HAVE_NCCL
    const mn_exec *ex = &r->trainer->exec;
    MN_TRY(ex->be->synchronize(ex->ctx));
    mn_status st = mn_dist_nccl_allreduce(r->nccl, r->trainer->grads, mn_model_num_params(r->model), 1.0f, NULL);
    if (st != MN_OK)
        return mn_fail_context(st, "step %" PRIu64 ": gradient all-reduce (NCCL)", step);
    return adamw_outcome(mn_adamw_step(r->trainer, adamw, &res->grad_norm), res);
#else
    (void)r, (void)adamw, (void)res, (void)step;
    return mn_fail(MN_ERR_CONFIG, "NCCL is not in this build"); /* setup never opens it then */
#endif
}

/* One optimizer step over the global batch: each rank's micro-batches (gradients scaled by the
 * global target weight, summed in order), the rank-ordered reduction, then AdamW (ZeRO-1: on
 * this rank's shard, then the parameters are gathered). A non-finite step is skipped alike on
 * every rank (res->skipped), not failed. */
static mn_status train_step(run *r, const mn_batch *global, mn_adamw_config *adamw, step_result *res) {
    const mn_train_config *c = r->cfg;
    const int A = c->grad_accum;
    const uint64_t step = r->st.step + 1;
    char what[96];
    memset(res, 0, sizeof *res);
    res->loss = res->grad_norm = NAN;
    size_t P = mn_model_num_params(r->model);
    /* 1. the global weight total: every micro-batch's, summed in (rank, micro-batch) order */
    double wmine[64], *wall = malloc((size_t)r->world * (size_t)A * sizeof(double));
    double *wm = A <= 64 ? wmine : malloc((size_t)A * sizeof(double));
    if (!wall || !wm) {
        free(wall);
        if (wm != wmine)
            free(wm);
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    }
    for (int m = 0; m < A; m++) {
        mn_batch b;
        micro_batch(r, global, m, &b);
        wm[m] = mn_batch_loss_weight(&b);
    }
    snprintf(what, sizeof what, "step %" PRIu64 ": loss weights", step);
    mn_status st = mn_dist_allgather(r->d, wm, (size_t)A * sizeof(double), wall, what);
    double W = 0;
    for (int i = 0; i < r->world * A; i++)
        W += wall[i];
    free(wall);
    if (wm != wmine)
        free(wm);
    if (st != MN_OK)
        return st;
    /* 2. forward/backward of each micro-batch */
    step_report mine = {0};
    mn_status local = W > 0 ? MN_OK : mn_fail(MN_ERR_INVALID_ARG, "the global batch has no loss targets");
    float *grads = mn_trainer_grads(r->trainer);
    for (int m = 0; local == MN_OK && m < A; m++) {
        mn_batch b;
        micro_batch(r, global, m, &b);
        double ls = 0;
        /* streaming: the lanes' last states are carried into their next windows */
        mn_forward_outputs out = {.final_states = carried_of(r, m)};
        local = mn_forward_backward_scaled(r->trainer, &b, 1.0 / W, &ls, out.final_states ? &out : NULL);
        if (local == MN_OK && r->on_device && (A > 1 || r->cb->gradients))
            local = mn_trainer_pull(r->trainer); /* the host mirror of grads (below) */
        if (local != MN_OK) {
            /* this and the later micro-batches' lanes have no new state: they restart from R_0 */
            for (int k = m; out.final_states && k < A; k++)
                for (size_t i = 0; i < (size_t)r->micro_B * mn_state_floats(r->model); i++)
                    carried_of(r, k)[i] = NAN;
            break;
        }
        if (r->cb->micro_batch)
            r->cb->micro_batch(r->cb->ctx, step, first_episode(r, m), &b);
        mine.loss_sum += ls;
        mine.recon_loss += mn_trainer_reconstruction_loss(r->trainer);
        for (int i = 0; i < b.T * b.B; i++)
            mine.tokens += b.lengths[i];
        if (A > 1) {
            if (m == 0)
                memcpy(r->accum, grads, P * sizeof(float));
            else
                for (size_t i = 0; i < P; i++)
                    r->accum[i] += grads[i];
        }
    }
    if (local == MN_OK && A > 1)
        memcpy(grads, r->accum, P * sizeof(float));
    if (local == MN_OK && r->cb->gradients)
        r->cb->gradients(r->cb->ctx, step, grads, P);
    if (local == MN_OK && r->on_device && (A > 1 || r->cb->gradients))
        local = mn_trainer_push(r->trainer); /* the summed or edited gradients back to the device */
    char local_error[512] = "";
    if (local != MN_OK)
        snprintf(local_error, sizeof local_error, "%s", mn_last_error());
    mine.status = local == MN_OK ? 0 : local == MN_ERR_NUMERIC ? 1 : 2;
    mine.stop = r->opts->stop && *r->opts->stop;
    mine.out_of_time = c->time_limit_s > 0 && mn_clock_s() - r->t_start >= (double)c->time_limit_s;
    /* 3. agree on the outcome */
    step_report *all = malloc((size_t)r->world * sizeof *all);
    if (!all)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    snprintf(what, sizeof what, "step %" PRIu64 ": step reports", step);
    st = mn_dist_allgather(r->d, &mine, sizeof mine, all, what);
    if (st != MN_OK) {
        free(all);
        return st;
    }
    double loss_sum = 0, tokens = 0;
    int worst = 0, failed_rank = -1;
    for (int k = 0; k < r->world; k++) {
        loss_sum += all[k].loss_sum;
        res->recon_loss += all[k].recon_loss;
        tokens += all[k].tokens;
        res->stop |= all[k].stop;
        if (all[k].status > worst)
            worst = all[k].status;
        if (all[k].status == 2 && failed_rank < 0)
            failed_rank = k;
    }
    res->out_of_time = all[0].out_of_time;
    free(all);
    res->tokens = (int64_t)tokens;
    if (worst == 2) {
        if (mine.status == 2 && r->world > 1)
            return mn_fail(local, "rank %d: training step: %s", r->rank, local_error);
        if (mine.status == 2)
            return mn_fail(local, "training step: %s", local_error);
        return mn_fail(MN_ERR_IO, "rank %d: rank %d failed in step %" PRIu64 "; stopping", r->rank, failed_rank, step);
    }
    if (worst == 1) { /* some rank's loss or gradient was not finite: every rank skips */
        snprintf(res->skip_reason, sizeof res->skip_reason, "%s",
                 mine.status == 1 && local_error[0] ? local_error : "a non-finite loss on another rank");
        res->skipped = 1;
        return MN_OK;
    }
    res->loss = (float)(loss_sum * (1.0 / W)); /* as mn_forward_backward: the sum times the scale */
    /* 4. reduce, clip, update */
    if (r->nccl)
        return device_reduce_step(r, adamw, res, step);
    /* a device trainer of several ranks without NCCL (the stand-in): its host mirror goes over
     * MPI and back, which keeps the CPU's rank-order sum, so the CPU's bits */
    const int staged = r->on_device && r->world > 1;
    if (staged && !(A > 1 || r->cb->gradients))
        MN_TRY(mn_trainer_pull(r->trainer));
    snprintf(what, sizeof what, "step %" PRIu64 ": gradient reduce-scatter", step);
    MN_TRY(mn_dist_reduce_scatter_sum(r->d, grads, P, what));
    if (c->zero) {
        size_t lo, hi;
        mn_dist_shard_range(P, r->world, r->rank, &lo, &hi);
        double part = mn_grad_sumsq_range(r->trainer, lo, hi), *parts = malloc((size_t)r->world * sizeof(double));
        if (!parts)
            return mn_fail(MN_ERR_NOMEM, "out of memory");
        snprintf(what, sizeof what, "step %" PRIu64 ": gradient norm", step);
        st = mn_dist_allgather(r->d, &part, sizeof part, parts, what);
        double sumsq = 0;
        for (int k = 0; k < r->world; k++)
            sumsq += parts[k];
        free(parts);
        if (st != MN_OK)
            return st;
        res->grad_norm = (float)sqrt(sumsq);
        st = mn_adamw_step_shard(r->trainer, adamw, sumsq, lo, hi);
        if (st == MN_OK) {
            snprintf(what, sizeof what, "step %" PRIu64 ": parameter all-gather", step);
            MN_TRY(mn_dist_allgather_shards(r->d, mn_model_params(r->model), P, what));
        }
    } else {
        snprintf(what, sizeof what, "step %" PRIu64 ": gradient all-gather", step);
        MN_TRY(mn_dist_allgather_shards(r->d, grads, P, what));
        if (staged)
            MN_TRY(mn_trainer_push(r->trainer));
        st = mn_adamw_step(r->trainer, adamw, &res->grad_norm);
    }
    return adamw_outcome(st, res);
}

/* ---------------------------------------------------------------- the loop */
/* The part of a run before the first step; *outcome says FAILED or USAGE on failure. */
static mn_status setup(run *r, mn_train_outcome *outcome) {
    const mn_train_config *cfg = r->cfg;
    const mn_train_options *opts = r->opts;
    *outcome = MN_TRAIN_USAGE;
    if (cfg->batch % (r->world * cfg->grad_accum))
        return mn_fail(MN_ERR_CONFIG,
                       "batch %d is not divisible by %d rank(s) x grad_accum %d: every rank must train the same "
                       "number of episodes",
                       cfg->batch, r->world, cfg->grad_accum);
    if (cfg->stream && r->world > 1)
        return mn_fail(MN_ERR_CONFIG, "stream 1 trains in one process (its carried states live there), and %d ranks "
                       "were started; run one process (grad_accum can split the batch into micro-batches)", r->world);
    r->local_B = cfg->batch / r->world;
    r->micro_B = r->local_B / cfg->grad_accum;
    mn_dist_set_timeout(r->d, cfg->comm_timeout);
    *outcome = MN_TRAIN_FAILED;
    mn_device device = MN_DEVICE_CUDA;
    char device_notice[256] = "";
    mn_status st = MN_OK;
    if (opts->device_standin && strcmp(cfg->device, "cpu")) {
        r->backend = opts->device_standin;
    } else {
        st = mn_device_resolve(cfg->device, &device, device_notice, sizeof device_notice);
        if (st != MN_OK)
            return mn_fail_context(st, "--device");
        st = mn_backend_for(device, &r->backend);
        if (st != MN_OK)
            return mn_fail_context(st, "--device");
    }
    /* the resolver's notice is a program's line ("mnemo: ..."): the caller adds its own prefix */
    if (device_notice[0])
        notice(r, "%s", strncmp(device_notice, "mnemo: ", 7) ? device_notice : device_notice + 7);
    r->on_device = r->backend->device != MN_DEVICE_CPU;
    if (r->on_device && r->rank == 0)
        notice(r, "training on the %s", r->backend->name);
    if (r->on_device && r->world > 1 && (st = setup_device_ranks(r)) != MN_OK) {
        if (st == MN_ERR_CONFIG)
            *outcome = MN_TRAIN_USAGE;
        return st;
    }
    *outcome = MN_TRAIN_USAGE;
    MN_TRY(mn_train_curriculum(cfg, &r->curriculum)); /* checked by mn_train_config_validate */
    r->schedule = (mn_lr_schedule){cfg->lr, cfg->min_lr, cfg->warmup_steps, cfg->steps};
    *outcome = MN_TRAIN_FAILED;
    if (!(r->config_json = mn_train_config_to_json(cfg, 0)))
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    /* every rank must train the same thing: compare the effective configs' hashes */
    uint64_t hash = 1469598103934665603ull, *hashes = calloc((size_t)r->world, sizeof *hashes);
    for (const char *p = r->config_json; *p; p++)
        hash = (hash ^ (unsigned char)*p) * 1099511628211ull;
    if (!hashes)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    st = mn_dist_allgather(r->d, &hash, sizeof hash, hashes, "comparing the ranks' configs");
    for (int k = 1; st == MN_OK && k < r->world; k++)
        if (hashes[k] != hashes[0]) {
            *outcome = MN_TRAIN_USAGE;
            st = mn_fail(MN_ERR_CONFIG,
                         "rank %d's effective config differs from rank 0's; every rank needs the same options", k);
        }
    free(hashes);
    if (st != MN_OK)
        return st;
    if (r->rank == 0)
        MN_TRY(check_run_dir(r, cfg->run_dir));
    MN_TRY(setup_data(r, opts->resume ? opts->resume : opts->base));
    MN_TRY(setup_model(r));
    if (r->rank == 0) {
        MN_TRY(mn_run_dir_claim(cfg->run_dir, &r->claim));
        MN_TRY(open_metrics(r));
    }
    return MN_OK;
}

static void report_start(run *r) {
    mn_train_start info = {.n_params = mn_model_num_params(r->model), .world = r->world,
                           .dist_backend = mn_dist_backend_name(r->d), .local_batch = r->local_B,
                           .micro_batch = r->micro_B, .resharded_from = r->resharded_from,
                           .resumed = r->opts->resume != NULL, .step = r->st.step, .tokens_seen = r->st.tokens_seen,
                           .stage = r->st.curriculum_stage, .valid_probes = r->have_probes ? r->n_probes : -1};
    if (r->cb->start)
        r->cb->start(r->cb->ctx, &info);
}

/* One line of metrics.jsonl and the step callback. */
static void report_step(run *r, const step_result *res, double lr, int turns, int stage, double dt) {
    const mn_train_config *c = r->cfg;
    double comm_s = mn_dist_take_comm_seconds(r->d);
    r->comm_total_s += comm_s;
    r->step_total_s += dt;
    uint64_t done = r->st.step - r->start_step;
    double elapsed = mn_clock_s() - r->t_start;
    mn_train_step_info info = {
        .step = r->st.step, .steps = c->steps, .loss = res->loss, .grad_norm = res->grad_norm, .lr = lr,
        .turns = turns, .stage = stage, .tokens = res->tokens,
        .tokens_per_s = dt > 0 ? (double)res->tokens / dt : 0, .comm_s = comm_s,
        .comm_share = dt > 0 ? comm_s / dt : 0,
        .recon_loss = c->reconstruct_weight > 0 && !res->skipped ? res->recon_loss : NAN,
        .eta_s = done ? elapsed / (double)done * (double)((uint64_t)c->steps - r->st.step) : -1,
        .skipped = res->skipped, .skip_reason = res->skipped ? res->skip_reason : NULL,
        .nan_streak = r->st.nan_streak, .nan_skipped = r->st.nan_skipped};
    if (r->metrics) {
        FILE *f = r->metrics;
        fprintf(f, "{\"step\": %" PRIu64 ", ", r->st.step);
        if (isfinite(info.loss))
            fprintf(f, "\"loss\": %.9g, ", (double)info.loss);
        else
            fprintf(f, "\"loss\": null, ");
        if (isfinite(info.grad_norm))
            fprintf(f, "\"grad_norm\": %.9g, ", (double)info.grad_norm);
        else
            fprintf(f, "\"grad_norm\": null, ");
        fprintf(f, "\"lr\": %.9g, \"turns\": %d, \"stage\": %d, \"tokens\": %" PRId64 ", \"tokens_per_s\": %.1f, ", lr,
                turns, stage, info.tokens, info.tokens_per_s);
        if (r->world > 1)
            fprintf(f, "\"comm_s\": %.6f, \"comm_share\": %.4f, ", comm_s, info.comm_share);
        if (!isnan(info.recon_loss))
            fprintf(f, "\"recon_loss\": %.9g, ", info.recon_loss);
        fprintf(f, "\"skipped\": %s}\n", info.skipped ? "true" : "false");
        fflush(f);
    }
    if (r->cb->step)
        r->cb->step(r->cb->ctx, &info);
}

/* The steps, from r->st to cfg->steps (or a stop, the time limit, a failure). */
static mn_status loop(run *r, mn_train_outcome *outcome, mn_train_summary *summary) {
    const mn_train_config *cfg = r->cfg;
    uint64_t run_tokens = 0;
    mn_adamw_config adamw = {0, (float)cfg->beta1, (float)cfg->beta2, (float)cfg->eps, (float)cfg->weight_decay,
                             (float)cfg->grad_clip};
    *outcome = MN_TRAIN_FAILED;
    while (r->st.step < (uint64_t)cfg->steps) {
        double t0 = mn_clock_s();
        int stage = mn_curriculum_stage_at(&r->curriculum, (int64_t)r->st.step);
        if (stage != r->st.curriculum_stage) { /* a new stage reads its own data order from the start */
            r->st.curriculum_stage = stage;
            r->st.data_epoch = r->st.data_position = 0;
            restart_lanes(r);
        }
        mn_batch batch;
        mn_status st = next_batch(r, stage, &batch);
        if (st != MN_OK)
            return mn_fail_context(st, "data");
        double lr = mn_lr_at(&r->schedule, (int64_t)r->st.step);
        adamw.lr = (float)lr;
        step_result res;
        MN_TRY(train_step(r, &batch, &adamw, &res));
        if (res.skipped) {
            r->st.nan_streak++;
            r->st.nan_skipped++;
        } else {
            r->st.nan_streak = 0;
        }
        r->st.step++;
        r->st.tokens_seen += (uint64_t)res.tokens;
        run_tokens += (uint64_t)res.tokens;
        memcpy(r->st.rng, r->rng.s, sizeof r->st.rng);
        report_step(r, &res, lr, batch.T, stage, mn_clock_s() - t0);
        if (res.skipped && r->st.nan_streak >= cfg->max_nan_steps) {
            *outcome = MN_TRAIN_NONFINITE;
            return mn_fail(MN_ERR_NUMERIC,
                           "aborting: %" PRId64 " steps in a row had a non-finite loss or gradient (max_nan_steps = "
                           "%d); parameters are from step %" PRIu64 ", the last checkpoint is %s",
                           r->st.nan_streak, cfg->max_nan_steps, r->st.step - (uint64_t)r->st.nan_streak,
                           r->last_checkpoint[0] ? r->last_checkpoint : "(none written by this run)");
        }
        /* the time limit ends the run like its last step: evaluation and a checkpoint */
        /* stop_at_step: equality, so that a run resumed past it goes on */
        const int at_stop_step = cfg->stop_at_step > 0 && r->st.step == (uint64_t)cfg->stop_at_step;
        int final = r->st.step == (uint64_t)cfg->steps || res.out_of_time || at_stop_step;
        if (cfg->eval_interval > 0 ? (r->st.step % (uint64_t)cfg->eval_interval == 0 || final) : final)
            MN_TRY(mn_train_evaluate(r, r->st.step));
        int periodic = cfg->checkpoint_interval > 0 && r->st.step % (uint64_t)cfg->checkpoint_interval == 0;
        if (periodic || final || res.stop) {
            int saved = save_checkpoint(r, final || res.stop);
            if (saved < 0)
                return MN_ERR_IO; /* the ranks cannot talk: mn_last_error() says which and why */
            if (saved != 0 && (final || res.stop)) {
                char why[1024];
                snprintf(why, sizeof why, "%s", mn_last_error());
                return mn_fail(MN_ERR_IO, "%s; the final checkpoint could not be written; the last saved one is %s",
                               why, r->last_checkpoint[0] ? r->last_checkpoint : "(none written by this run)");
            }
            /* a failed periodic write (full disk, directory gone read-only) leaves the previous
             * checkpoints intact: training goes on and tries again at the next interval */
        }
        if (res.out_of_time && r->st.step < (uint64_t)cfg->steps) {
            summary->time_limit = 1;
            break;
        }
        if (at_stop_step && r->st.step < (uint64_t)cfg->steps) {
            summary->stopped_at_step = 1;
            break;
        }
        if (res.stop) {
            summary->interrupted = 1;
            break;
        }
    }
    *outcome = summary->interrupted ? MN_TRAIN_INTERRUPTED : MN_TRAIN_DONE;
    summary->step = r->st.step;
    summary->tokens_seen = r->st.tokens_seen;
    summary->nan_skipped = r->st.nan_skipped;
    summary->seconds = mn_clock_s() - r->t_start;
    summary->last_checkpoint = r->last_checkpoint;
    summary->tokens_per_s = r->step_total_s > 0 ? (double)run_tokens / r->step_total_s : 0;
    summary->comm_share = r->step_total_s > 0 ? r->comm_total_s / r->step_total_s : 0;
    return MN_OK;
}

mn_status mn_train_run(const mn_train_config *cfg, const mn_train_options *opts, const mn_train_callbacks *cb,
                       mn_train_outcome *outcome) {
    static const mn_train_callbacks none;
    mn_train_outcome ignored;
    if (!outcome)
        outcome = &ignored;
    *outcome = MN_TRAIN_USAGE;
    if (!cfg || !opts)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_train_run: NULL argument");
    MN_TRY(mn_train_config_validate(cfg));
    run r;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.opts = opts;
    r.cb = cb ? cb : &none;
    r.recall = !strcmp(cfg->task, "recall");
    r.d = opts->dist;
    r.world = mn_dist_size(r.d);
    r.rank = mn_dist_rank(r.d);
    mn_status st = setup(&r, outcome);
    if (st == MN_OK) {
        r.start_step = r.st.step;
        report_start(&r);
        /* the untrained baseline, so that the validation curve starts where training does */
        if (!opts->resume && cfg->eval_interval > 0)
            st = mn_train_evaluate(&r, 0);
    }
    mn_train_summary summary;
    memset(&summary, 0, sizeof summary);
    if (st == MN_OK) {
        r.t_start = mn_clock_s();
        mn_dist_take_comm_seconds(r.d);
        st = loop(&r, outcome, &summary);
    }
    if (st == MN_OK && r.cb->done)
        r.cb->done(r.cb->ctx, &summary);
    cleanup(&r);
    return st;
}
