/* HDF5 training checkpoints: atomic save, an integrity trailer and a fully validated load,
 * the format 1 reader, run-directory bookkeeping (docs/checkpoint.md). */
#include "io/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "build_id.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/h5util.h"
#include "model/trainer_internal.h"

#define PATH_CAP 4096
/* Format 2 ends in an integrity trailer (h5util.h) with this magic: the digest of every byte but
 * the tensors' chunks (metadata, config, state, tokenizer), checked before HDF5 parses a byte. */
#define TRAILER_MAGIC "MNEMOCK2"

int mn_run_id_valid(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return n == 0 || n == MN_RUN_ID_LEN;
}

/* ---------------------------------------------------------------- writing */
typedef struct {
    const char *file; /* the target path: what messages name */
    mn_checkpoint_fault_fn fault;
    void *fault_ctx;
    mn_h5_range *chunks; /* the tensors' chunks, which the trailer leaves to their Fletcher32 */
    size_t n_chunks, cap_chunks;
} writer;

static mn_status injected(const writer *w, const char *name) {
    if (w->fault && w->fault(w->fault_ctx, name))
        return mn_fail(MN_ERR_IO, "%s: cannot write dataset '%s' (write failed: injected fault)", w->file, name);
    return MN_OK;
}

static mn_status put_tensor(writer *w, hid_t loc, const char *group, const mn_tensor_info *t, const float *base) {
    char full[512];
    snprintf(full, sizeof full, "%s/%s", group, t->name);
    MN_TRY(injected(w, full));
    size_t dims[2] = {(size_t)t->shape[0], (size_t)t->shape[1]};
    MN_TRY(mn_h5_write_floats(loc, w->file, t->name, base + t->offset, t->ndim, dims));
    if (w->n_chunks == w->cap_chunks) {
        size_t cap = w->cap_chunks ? 2 * w->cap_chunks : 64;
        mn_h5_range *grown = realloc(w->chunks, cap * sizeof *grown);
        if (!grown)
            return mn_fail(MN_ERR_NOMEM, "%s: out of memory", w->file);
        w->chunks = grown, w->cap_chunks = cap;
    }
    mn_h5_range *r = &w->chunks[w->n_chunks];
    MN_TRY(mn_h5_single_chunk(loc, w->file, t->name, &r->offset, &r->length));
    w->n_chunks++;
    return MN_OK;
}

static mn_status put_tensors(writer *w, hid_t file, const char *group, const mn_model *m, const float *base) {
    hid_t g;
    MN_TRY(mn_h5_create_group(file, w->file, group, &g));
    mn_status st = MN_OK;
    for (int i = 0; st == MN_OK && i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        st = mn_model_tensor(m, i, &t);
        if (st == MN_OK)
            st = put_tensor(w, g, group, &t, base);
    }
    H5Gclose(g);
    return st;
}

static void utc_now(char *buf, size_t cap) {
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static mn_status put_meta(const writer *w, hid_t file, const char *run_id) {
    hid_t g;
    MN_TRY(mn_h5_create_group(file, w->file, "meta", &g));
    char created[64];
    utc_now(created, sizeof created);
    mn_status st = mn_h5_write_attr_int(g, w->file, "format_version", MN_CHECKPOINT_FORMAT);
    if (st == MN_OK)
        st = mn_h5_write_attr_string(g, w->file, "build_id", MN_BUILD_ID);
    if (st == MN_OK)
        st = mn_h5_write_attr_string(g, w->file, "created", created);
    if (st == MN_OK)
        st = mn_h5_write_attr_string(g, w->file, "writer", "mnemo");
    if (st == MN_OK)
        st = mn_h5_write_attr_string(g, w->file, "run_id", run_id ? run_id : "");
    H5Gclose(g);
    return st;
}

static mn_status put_config(const writer *w, hid_t file, const mn_config *c, const char *train_json) {
    hid_t g;
    MN_TRY(mn_h5_create_group(file, w->file, "config", &g));
    const struct {
        const char *name;
        int value;
    } ints[] = {{"vocab_size", c->vocab_size}, {"d_model", c->d_model},     {"n_heads", c->n_heads},
                {"n_layers", c->n_layers},     {"n_comp_layers", c->n_comp_layers}, {"n_slots", c->n_slots},
                {"max_turn_tokens", c->max_turn_tokens}};
    mn_status st = MN_OK;
    for (size_t i = 0; st == MN_OK && i < sizeof ints / sizeof ints[0]; i++)
        st = mn_h5_write_attr_int(g, w->file, ints[i].name, ints[i].value);
    if (st == MN_OK)
        st = mn_h5_write_attr_float(g, w->file, "gate_bias_init", (double)c->gate_bias_init);
    if (st == MN_OK) /* a name, so that h5dump shows it; absent in files from before the rules: "gate" */
        st = mn_h5_write_attr_string(g, w->file, "write_rule", mn_write_rule_name(c->write_rule));
    /* a checksummed byte dataset: a flipped digit in the config must not go unnoticed */
    const char *json = train_json ? train_json : "{}";
    size_t len = strlen(json);
    if (st == MN_OK)
        st = injected(w, "config/train_config");
    if (st == MN_OK)
        st = mn_h5_write_dataset(g, w->file, "train_config", H5T_NATIVE_UINT8, H5T_STD_U8LE, json, 1, &len);
    H5Gclose(g);
    return st;
}

static mn_status put_optimizer(writer *w, hid_t file, mn_trainer *tr, const float *adam_m, const float *adam_v) {
    if (!adam_m || !adam_v) {
        if (mn_trainer_moments_range(tr, NULL, NULL))
            return mn_fail(MN_ERR_INVALID_ARG, "%s: the trainer's moments are sharded (ZeRO-1); pass the gathered "
                                               "moments in the save options", w->file);
        adam_m = mn_trainer_adam_m(tr);
        adam_v = mn_trainer_adam_v(tr);
    }
    hid_t g;
    MN_TRY(mn_h5_create_group(file, w->file, "optimizer", &g));
    mn_status st = mn_h5_write_attr_int(g, w->file, "step", (int64_t)mn_trainer_step(tr));
    H5Gclose(g);
    if (st == MN_OK)
        st = put_tensors(w, file, "optimizer/m", tr->model, adam_m);
    if (st == MN_OK)
        st = put_tensors(w, file, "optimizer/v", tr->model, adam_v);
    return st;
}

static mn_status put_dist(const writer *w, hid_t train, const mn_checkpoint_dist *d) {
    if (d->world_size < 1 || !d->rank_cursors)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: dist layout with %lld ranks and no cursors", w->file,
                       (long long)d->world_size);
    hid_t g;
    MN_TRY(mn_h5_create_group(train, w->file, "dist", &g));
    mn_status st = mn_h5_write_attr_int(g, w->file, "world_size", d->world_size);
    if (st == MN_OK)
        st = mn_h5_write_attr_int(g, w->file, "zero_stage", d->zero_stage);
    if (st == MN_OK)
        st = mn_h5_write_attr_int(g, w->file, "grad_accum", d->grad_accum);
    if (st == MN_OK)
        st = injected(w, "train/dist/rank_cursors");
    if (st == MN_OK)
        st = mn_h5_write_u64s(g, w->file, "rank_cursors", d->rank_cursors,
                              (size_t)d->world_size * MN_DIST_CURSOR_FIELDS);
    H5Gclose(g);
    return st;
}

/* Not tensors: left out of the chunk list, so the trailer's digest covers them (and Fletcher32). */
static mn_status put_stream(const writer *w, hid_t train, const mn_checkpoint_stream *s) {
    if (s->lanes < 1 || s->state_floats < 1 || !s->episode || !s->turn || !s->states)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: stream state of %lld lanes without its arrays", w->file,
                       (long long)s->lanes);
    size_t lanes = (size_t)s->lanes, dims[2] = {lanes, 2}, sdims[2] = {lanes, (size_t)s->state_floats};
    int64_t *positions = malloc(2 * lanes * sizeof *positions);
    if (!positions)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", w->file);
    for (size_t b = 0; b < lanes; b++)
        positions[2 * b] = s->episode[b], positions[2 * b + 1] = s->turn[b];
    hid_t g;
    mn_status st = mn_h5_create_group(train, w->file, "stream", &g);
    if (st != MN_OK) {
        free(positions);
        return st;
    }
    st = injected(w, "train/stream/positions");
    if (st == MN_OK)
        st = mn_h5_write_dataset(g, w->file, "positions", H5T_NATIVE_INT64, H5T_STD_I64LE, positions, 2, dims);
    if (st == MN_OK)
        st = injected(w, "train/stream/states");
    if (st == MN_OK)
        st = mn_h5_write_floats(g, w->file, "states", s->states, 2, sdims);
    H5Gclose(g);
    free(positions);
    return st;
}

static mn_status put_train(const writer *w, hid_t file, const mn_train_state *s, const mn_checkpoint_dist *dist,
                           const mn_checkpoint_stream *stream) {
    hid_t g;
    MN_TRY(mn_h5_create_group(file, w->file, "train", &g));
    const struct {
        const char *name;
        int64_t value;
    } attrs[] = {{"step", (int64_t)s->step},
                 {"tokens_seen", (int64_t)s->tokens_seen},
                 {"curriculum_stage", s->curriculum_stage},
                 {"nan_streak", s->nan_streak},
                 {"nan_skipped", s->nan_skipped}};
    mn_status st = MN_OK;
    for (size_t i = 0; st == MN_OK && i < sizeof attrs / sizeof attrs[0]; i++)
        st = mn_h5_write_attr_int(g, w->file, attrs[i].name, attrs[i].value);
    if (st == MN_OK)
        st = injected(w, "train/rng");
    if (st == MN_OK)
        st = mn_h5_write_u64s(g, w->file, "rng", s->rng, 4);
    uint64_t cursor[2] = {s->data_epoch, s->data_position};
    if (st == MN_OK)
        st = injected(w, "train/data_cursor");
    if (st == MN_OK)
        st = mn_h5_write_u64s(g, w->file, "data_cursor", cursor, 2);
    if (st == MN_OK && dist)
        st = put_dist(w, g, dist);
    if (st == MN_OK && stream)
        st = put_stream(w, g, stream);
    H5Gclose(g);
    return st;
}

static mn_status write_contents(writer *w, hid_t file, mn_model *m, mn_trainer *tr, const mn_train_state *s,
                                const mn_checkpoint_save_options *o) {
    MN_TRY(put_meta(w, file, o ? o->run_id : NULL));
    MN_TRY(put_config(w, file, mn_model_config(m), o ? o->train_config_json : NULL));
    MN_TRY(put_tensors(w, file, "params", m, mn_model_params(m)));
    if (tr)
        MN_TRY(put_optimizer(w, file, tr, o ? o->adam_m : NULL, o ? o->adam_v : NULL));
    if (s)
        MN_TRY(put_train(w, file, s, o ? o->dist : NULL, o ? o->stream : NULL));
    if (o && o->tokenizer) {
        MN_TRY(injected(w, "tokenizer"));
        mn_status st = mn_tokenizer_save_h5(o->tokenizer, file);
        if (st != MN_OK)
            return mn_fail_context(MN_ERR_IO, "%s", w->file);
    }
    return MN_OK;
}

mn_status mn_checkpoint_save(const char *path, mn_model *model, mn_trainer *trainer, const mn_train_state *state,
                             const mn_checkpoint_save_options *opts) {
    if (!path || !*path || !model)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_save: path or model is NULL");
    if (trainer && trainer->model != model)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_save: the trainer belongs to another model");
    const char *run_id = opts ? opts->run_id : NULL;
    if (run_id && !mn_run_id_valid(run_id))
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_save: run id '%s' is not %d hex digits", run_id,
                       MN_RUN_ID_LEN);
    if (trainer)
        MN_TRY(mn_trainer_pull(trainer)); /* device buffers -> host before reading them */

    /* The file is built in memory and written with plain write() + fsync: HDF5 never sees a
     * failing disk (its close after a failed write leaves the library in a bad state), and a
     * full disk is reported exactly, with the temp file removed. */
    writer w = {path, opts ? opts->fault : NULL, opts ? opts->fault_ctx : NULL, NULL, 0, 0};
    hid_t file;
    mn_h5_image image;
    size_t floats = mn_model_num_params(model) * (trainer ? 3 : 1);
    MN_TRY(mn_h5_memory_file_create(path, floats * sizeof(float) + ((size_t)1 << 20), &image, &file));
    mn_status st = write_contents(&w, file, model, trainer, state, opts);
    mn_status closed = mn_h5_memory_file_close(file, path, &image);
    if (st == MN_OK)
        st = closed;
    if (st == MN_OK)
        st = mn_h5_trailer_append(&image, TRAILER_MAGIC, w.chunks, w.n_chunks, path);
    free(w.chunks);
    if (st == MN_OK) /* <path>.tmp.<pid>, fsync, rename over path, fsync of the directory */
        st = mn_atomic_write_bytes(path, image.data, image.size);
    free(image.data);
    if (st != MN_OK) /* the target was never touched */
        return mn_fail_context(st, "checkpoint not saved (any previous %s is intact)", path);
    return MN_OK;
}

/* ---------------------------------------------------------------- reading */
/* An open, verified checkpoint: the HDF5 file and its format version. */
typedef struct {
    hid_t file;
    const char *path;
    int64_t version;
} ckpt;

/* Format 2: the trailer is verified before HDF5 opens the file. Format 1 (no trailer): HDF5
 * verifies the superblock's and object headers' checksums as it parses them. */
static mn_status open_checkpoint(const char *path, ckpt *c) {
    struct stat sb;
    if (stat(path, &sb) != 0)
        return mn_fail(MN_ERR_IO, "%s: cannot open checkpoint: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return mn_fail(MN_ERR_IO, "%s: not a regular file", path);
    int trailer = 0;
    MN_TRY(mn_h5_trailer_verify(path, TRAILER_MAGIC, &trailer));
    hid_t f = H5I_INVALID_HID;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); }
    H5E_END_TRY;
    if (f < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: not a readable HDF5 file (truncated or corrupt; %lld bytes)", path,
                       (long long)sb.st_size);
    hid_t meta;
    mn_status st = mn_h5_open_group(f, path, "meta", &meta);
    if (st != MN_OK) {
        H5Fclose(f);
        return mn_fail(MN_ERR_FORMAT, "%s: not a mnemo checkpoint (no /meta group)", path);
    }
    int64_t version = 0;
    st = mn_h5_read_attr_int(meta, path, "format_version", &version);
    H5Gclose(meta);
    if (st == MN_OK && (version < MN_CHECKPOINT_FORMAT_OLDEST || version > MN_CHECKPOINT_FORMAT))
        st = mn_fail(MN_ERR_FORMAT, "%s: checkpoint format version %lld; this build reads versions %d to %d", path,
                     (long long)version, MN_CHECKPOINT_FORMAT_OLDEST, MN_CHECKPOINT_FORMAT);
    else if (st == MN_OK && version >= 2 && !trailer)
        st = mn_fail(MN_ERR_FORMAT, "%s: format %lld checkpoint without its integrity trailer (truncated or altered)",
                     path, (long long)version);
    else if (st == MN_OK && version < 2 && trailer)
        st = mn_fail(MN_ERR_FORMAT, "%s: format 1 checkpoint with an integrity trailer: not written by mnemo", path);
    if (st != MN_OK) {
        H5Fclose(f);
        return st;
    }
    *c = (ckpt){f, path, version};
    return MN_OK;
}

/* Whether an optional part is there; a header that cannot be read is corruption, not absence. */
static mn_status has(const ckpt *c, const char *name, int *present) {
    return mn_h5_lookup(c->file, c->path, name, present);
}

static void close_checkpoint(ckpt *c) {
    if (c->file >= 0)
        H5Fclose(c->file);
    c->file = H5I_INVALID_HID;
}

/* The metadata strings: build id, creation time, run id, training config (JSON). */
typedef struct {
    char *build_id, *created, *run_id, *train_config;
} meta_strings;

static void meta_strings_free(meta_strings *m) {
    free(m->build_id), free(m->created), free(m->run_id), free(m->train_config);
    memset(m, 0, sizeof *m);
}

static int is_timestamp(const char *s) { /* YYYY-MM-DDTHH:MM:SSZ */
    static const char pattern[] = "dddd-dd-ddTdd:dd:ddZ";
    if (strlen(s) != sizeof pattern - 1)
        return 0;
    for (size_t i = 0; pattern[i]; i++)
        if (pattern[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != pattern[i])
            return 0;
    return 1;
}

static int is_printable(const char *s, size_t max) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return 0;
    return n > 0 && n <= max;
}

/* Format 1 stored the strings as variable-length attributes, in HDF5's global heap, which has no
 * checksum and which HDF5 1.10 trusts (a flipped byte there crashed it). They are read from the
 * heap's own bytes with bounds checks instead; format 1 wrote exactly four, in this order. */
static mn_status read_format1_strings(const ckpt *c, meta_strings *m) {
    hid_t meta, config;
    MN_TRY(mn_h5_open_group(c->file, c->path, "meta", &meta));
    int present = mn_h5_attr_exists(meta, "build_id") && mn_h5_attr_exists(meta, "created") &&
                  mn_h5_attr_exists(meta, "writer");
    H5Gclose(meta);
    MN_TRY(mn_h5_open_group(c->file, c->path, "config", &config));
    present = present && mn_h5_attr_exists(config, "train_config");
    H5Gclose(config);
    if (!present)
        return mn_fail(MN_ERR_FORMAT, "%s: format 1 checkpoint without its build_id, created, writer or train_config",
                       c->path);
    mn_h5_heap_object *o;
    size_t n;
    MN_TRY(mn_h5_heap_objects(c->path, &o, &n));
    for (size_t i = 1; i < n; i++) /* by collection, then index: the order they were written in */
        for (size_t j = i; j > 0 && (o[j - 1].collection > o[j].collection ||
                                     (o[j - 1].collection == o[j].collection && o[j - 1].index > o[j].index));
             j--) {
            mn_h5_heap_object t = o[j];
            o[j] = o[j - 1];
            o[j - 1] = t;
        }
    int ok = n == 4;
    for (size_t i = 0; ok && i < n; i++)
        ok = strlen((const char *)o[i].data) == o[i].size; /* no NUL inside */
    ok = ok && is_printable((const char *)o[0].data, 256) && is_timestamp((const char *)o[1].data) &&
         !strcmp((const char *)o[2].data, "mnemo") && o[3].data[0] == '{';
    if (ok) {
        m->build_id = (char *)o[0].data, m->created = (char *)o[1].data, m->train_config = (char *)o[3].data;
        o[0].data = o[1].data = o[3].data = NULL;
        m->run_id = strdup("");
    }
    mn_h5_heap_objects_free(o, n);
    if (!ok)
        return mn_fail(MN_ERR_FORMAT,
                       "%s: format 1 checkpoint whose build id, creation time and training config are not intact "
                       "(corrupt global heap)",
                       c->path);
    if (!m->run_id)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", c->path);
    return MN_OK;
}

/* Format 2: fixed-length attributes in the checksummed object header, the training config a
 * byte dataset with Fletcher32, and all of it under the trailer's digest. */
static mn_status read_format2_strings(const ckpt *c, meta_strings *m) {
    hid_t meta;
    char *writer = NULL;
    MN_TRY(mn_h5_open_group(c->file, c->path, "meta", &meta));
    mn_status st = mn_h5_read_attr_string(meta, c->path, "build_id", &m->build_id);
    if (st == MN_OK)
        st = mn_h5_read_attr_string(meta, c->path, "created", &m->created);
    if (st == MN_OK)
        st = mn_h5_read_attr_string(meta, c->path, "run_id", &m->run_id);
    if (st == MN_OK)
        st = mn_h5_read_attr_string(meta, c->path, "writer", &writer);
    H5Gclose(meta);
    if (st == MN_OK && strcmp(writer, "mnemo"))
        st = mn_fail(MN_ERR_FORMAT, "%s: written by '%s', not mnemo", c->path, writer);
    free(writer);
    size_t len = 0;
    if (st == MN_OK)
        st = mn_h5_dataset_size(c->file, c->path, "config/train_config", &len);
    if (st == MN_OK && len > ((size_t)16 << 20))
        st = mn_fail(MN_ERR_FORMAT, "%s: config/train_config holds %zu bytes (corrupt)", c->path, len);
    if (st == MN_OK && !(m->train_config = calloc(len + 1, 1)))
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", c->path);
    if (st == MN_OK)
        st = mn_h5_read_checksummed(c->file, c->path, "config/train_config", H5T_NATIVE_UINT8, m->train_config, len);
    if (st == MN_OK && strlen(m->train_config) != len)
        st = mn_fail(MN_ERR_FORMAT, "%s: config/train_config holds a NUL byte (corrupt)", c->path);
    return st;
}

static mn_status read_strings(const ckpt *c, meta_strings *m) {
    memset(m, 0, sizeof *m);
    mn_status st = c->version == 1 ? read_format1_strings(c, m) : read_format2_strings(c, m);
    if (st == MN_OK && !is_printable(m->build_id, 256))
        st = mn_fail(MN_ERR_FORMAT, "%s: the build id is not printable text (corrupt)", c->path);
    else if (st == MN_OK && !is_timestamp(m->created))
        st = mn_fail(MN_ERR_FORMAT, "%s: the creation time '%s' is not ISO 8601 UTC (corrupt)", c->path, m->created);
    else if (st == MN_OK && !mn_run_id_valid(m->run_id))
        st = mn_fail(MN_ERR_FORMAT, "%s: the run id is not %d hex digits (corrupt)", c->path, MN_RUN_ID_LEN);
    if (st != MN_OK)
        meta_strings_free(m);
    return st;
}

static mn_status read_config(const ckpt *ck, mn_config *c) {
    hid_t g;
    const char *path = ck->path;
    MN_TRY(mn_h5_open_group(ck->file, path, "config", &g));
    struct {
        const char *name;
        int *field;
    } ints[] = {{"vocab_size", &c->vocab_size}, {"d_model", &c->d_model},     {"n_heads", &c->n_heads},
                {"n_layers", &c->n_layers},     {"n_comp_layers", &c->n_comp_layers}, {"n_slots", &c->n_slots},
                {"max_turn_tokens", &c->max_turn_tokens}};
    mn_status st = MN_OK;
    for (size_t i = 0; st == MN_OK && i < sizeof ints / sizeof ints[0]; i++) {
        int64_t v = 0;
        st = mn_h5_read_attr_int(g, path, ints[i].name, &v);
        if (st == MN_OK && (v < INT_MIN || v > INT_MAX))
            st = mn_fail(MN_ERR_FORMAT, "%s: config field %s = %lld is out of range", path, ints[i].name,
                         (long long)v);
        *ints[i].field = (int)v;
    }
    double gate = 0;
    if (st == MN_OK)
        st = mn_h5_read_attr_float(g, path, "gate_bias_init", &gate);
    c->gate_bias_init = (float)gate;
    c->write_rule = MN_WRITE_GATE;
    if (st == MN_OK && mn_h5_attr_exists(g, "write_rule")) {
        char *rule = NULL;
        st = mn_h5_read_attr_string(g, path, "write_rule", &rule);
        if (st == MN_OK && mn_write_rule_parse(rule, &c->write_rule) != MN_OK)
            st = mn_fail_context(MN_ERR_FORMAT, "%s", path);
        free(rule);
    }
    H5Gclose(g);
    if (st == MN_OK && mn_config_validate(c) != MN_OK)
        st = mn_fail_context(MN_ERR_FORMAT, "%s: the stored config is invalid", path);
    return st;
}

static mn_status compare_config(const char *path, const mn_config *file, const mn_config *model) {
    const struct {
        const char *name;
        int in_file, in_model;
    } ints[] = {{"vocab_size", file->vocab_size, model->vocab_size},
                {"d_model", file->d_model, model->d_model},
                {"n_heads", file->n_heads, model->n_heads},
                {"n_layers", file->n_layers, model->n_layers},
                {"n_comp_layers", file->n_comp_layers, model->n_comp_layers},
                {"n_slots", file->n_slots, model->n_slots},
                {"max_turn_tokens", file->max_turn_tokens, model->max_turn_tokens}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (ints[i].in_file != ints[i].in_model)
            return mn_fail(MN_ERR_MISMATCH, "%s: config field %s is %d in the checkpoint but %d in the model", path,
                           ints[i].name, ints[i].in_file, ints[i].in_model);
    if (file->write_rule != model->write_rule)
        return mn_fail(MN_ERR_MISMATCH, "%s: the write rule is %s in the checkpoint but %s in the model", path,
                       mn_write_rule_name(file->write_rule), mn_write_rule_name(model->write_rule));
    if (file->gate_bias_init != model->gate_bias_init)
        return mn_fail(MN_ERR_MISMATCH, "%s: config field gate_bias_init is %g in the checkpoint but %g in the model",
                       path, (double)file->gate_bias_init, (double)model->gate_bias_init);
    return MN_OK;
}

static mn_status check_tokenizer(const ckpt *c, uint64_t want) {
    int present;
    MN_TRY(has(c, "tokenizer", &present));
    if (!present)
        return mn_fail(MN_ERR_MISMATCH, "%s: holds no tokenizer; expected one with hash %016" PRIx64, c->path, want);
    mn_tokenizer *tok = NULL;
    MN_TRY(mn_tokenizer_load_h5(c->file, c->path, &tok));
    uint64_t have = mn_tokenizer_hash(tok);
    mn_tokenizer_free(tok);
    if (have != want)
        return mn_fail(MN_ERR_MISMATCH,
                       "%s: tokenizer hash %016" PRIx64 " differs from the data's %016" PRIx64 " (another tokenizer)",
                       c->path, have, want);
    return MN_OK;
}

/* Names in a group that the model has no tensor for: a checkpoint of another model version. */
typedef struct {
    const mn_model *model;
    char extra[256];
    long count;
} member_scan;

static herr_t scan_member(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    (void)group, (void)info;
    member_scan *s = data;
    mn_tensor_info t;
    s->count++;
    if (!s->extra[0] && mn_model_find_tensor(s->model, name, &t) != MN_OK)
        snprintf(s->extra, sizeof s->extra, "%s", name);
    return 0;
}

/* Parameters and moments are finite, second moments >= 0: anything else is corruption (the
 * trainer skips non-finite steps), and would poison chat, eval and training. */
static mn_status check_values(const char *path, const char *full, const float *x, size_t n, int nonnegative) {
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            return mn_fail(MN_ERR_NUMERIC, "%s: tensor %s holds a non-finite value (%g) at index %zu", path, full,
                           (double)x[i], i);
        if (nonnegative && x[i] < 0)
            return mn_fail(MN_ERR_NUMERIC, "%s: tensor %s holds a negative second moment (%g) at index %zu", path,
                           full, (double)x[i], i);
    }
    return MN_OK;
}

/* Reads group/<name> for every tensor into dst (flat layout), checking shape, checksum and
 * values, and that there are no extras. */
static mn_status read_tensors(const ckpt *c, const char *group, const mn_model *m, float *dst) {
    const char *path = c->path;
    hid_t g;
    mn_status st = mn_h5_open_group(c->file, path, group, &g);
    if (st != MN_OK)
        return st;
    member_scan scan = {m, "", 0};
    herr_t rc = -1;
    H5E_BEGIN_TRY { rc = H5Literate(g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, scan_member, &scan); }
    H5E_END_TRY;
    H5Gclose(g);
    if (rc < 0)
        st = mn_fail(MN_ERR_FORMAT, "%s: cannot list group '%s' (corrupt)", path, group);
    else if (scan.extra[0])
        st = mn_fail(MN_ERR_MISMATCH, "%s: %s/%s is not a tensor of this model (another model version?)", path, group,
                     scan.extra);
    for (int i = 0; st == MN_OK && i < mn_model_num_tensors(m); i++) {
        mn_tensor_info t;
        mn_model_tensor(m, i, &t);
        char full[512];
        snprintf(full, sizeof full, "%s/%s", group, t.name);
        int ndim = 0;
        size_t dims[4];
        int present;
        if ((st = has(c, full, &present)) != MN_OK)
            break;
        if (!present) {
            st = mn_fail(MN_ERR_FORMAT, "%s: tensor %s is missing", path, full);
            break;
        }
        st = mn_h5_dataset_dims(c->file, path, full, &ndim, dims);
        if (st != MN_OK)
            break;
        int same = ndim == t.ndim;
        for (int d = 0; same && d < ndim; d++)
            same = dims[d] == (size_t)t.shape[d];
        if (!same) {
            char have[64], want[64];
            snprintf(have, sizeof have, ndim == 2 ? "(%zu, %zu)" : "(%zu)", dims[0], dims[1]);
            snprintf(want, sizeof want, t.ndim == 2 ? "(%d, %d)" : "(%d)", t.shape[0], t.shape[1]);
            st = mn_fail(MN_ERR_MISMATCH, "%s: tensor %s has shape %s; the model's is %s", path, full, have, want);
            break;
        }
        if ((st = mn_h5_require_checksum(c->file, path, full)) != MN_OK)
            break;
        if (mn_h5_read_floats(c->file, path, full, dst + t.offset, t.size) != MN_OK)
            st = mn_fail(MN_ERR_FORMAT, "%s: tensor %s cannot be read (checksum mismatch: corrupt, or truncated)", path,
                         full);
        else
            st = check_values(path, full, dst + t.offset, t.size, !strcmp(group, "optimizer/v"));
    }
    return st;
}

static mn_status read_train(const ckpt *c, mn_train_state *s) {
    const char *path = c->path;
    hid_t g;
    int present;
    MN_TRY(has(c, "train", &present));
    if (!present)
        return mn_fail(MN_ERR_FORMAT, "%s: holds no training state (/train); it can initialise a model but not resume",
                       path);
    MN_TRY(mn_h5_open_group(c->file, path, "train", &g));
    mn_train_state r;
    memset(&r, 0, sizeof r);
    int64_t step = 0, tokens = 0;
    uint64_t cursor[2] = {0, 0};
    mn_status st = mn_h5_read_attr_int(g, path, "step", &step);
    if (st == MN_OK)
        st = mn_h5_read_attr_int(g, path, "tokens_seen", &tokens);
    if (st == MN_OK)
        st = mn_h5_read_attr_int(g, path, "curriculum_stage", &r.curriculum_stage);
    if (st == MN_OK)
        st = mn_h5_read_attr_int(g, path, "nan_streak", &r.nan_streak);
    if (st == MN_OK)
        st = mn_h5_read_attr_int(g, path, "nan_skipped", &r.nan_skipped);
    H5Gclose(g);
    if (st == MN_OK)
        st = mn_h5_read_checksummed(c->file, path, "train/rng", H5T_NATIVE_UINT64, r.rng, 4);
    if (st == MN_OK)
        st = mn_h5_read_checksummed(c->file, path, "train/data_cursor", H5T_NATIVE_UINT64, cursor, 2);
    if (st != MN_OK)
        return mn_fail_context(MN_ERR_FORMAT, "%s: bad training state", path);
    if (step < 0 || tokens < 0 || r.curriculum_stage < 0 || r.nan_streak < 0 || r.nan_skipped < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: training state holds a negative counter", path);
    if (!(r.rng[0] | r.rng[1] | r.rng[2] | r.rng[3])) /* xoshiro never reaches it; it would draw zeros forever */
        return mn_fail(MN_ERR_FORMAT, "%s: training state has an all-zero RNG state", path);
    r.step = (uint64_t)step;
    r.tokens_seen = (uint64_t)tokens;
    r.data_epoch = cursor[0];
    r.data_position = cursor[1];
    *s = r;
    return MN_OK;
}

void mn_checkpoint_dist_free(mn_checkpoint_dist *d) {
    if (!d)
        return;
    free(d->rank_cursors);
    memset(d, 0, sizeof *d);
}

mn_status mn_checkpoint_read_dist(const char *path, mn_checkpoint_dist *d, int *found) {
    if (!path || !d || !found)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_read_dist: NULL argument");
    memset(d, 0, sizeof *d);
    *found = 0;
    ckpt c;
    hid_t g;
    MN_TRY(open_checkpoint(path, &c));
    int present = 0;
    mn_status st = has(&c, "train/dist", &present);
    if (st != MN_OK || !present) { /* none: written before data-parallel training, or no state */
        close_checkpoint(&c);
        return st;
    }
    st = mn_h5_open_group(c.file, path, "train/dist", &g);
    if (st != MN_OK) {
        close_checkpoint(&c);
        return st;
    }
    st = mn_h5_read_attr_int(g, path, "world_size", &d->world_size);
    if (st == MN_OK)
        st = mn_h5_read_attr_int(g, path, "zero_stage", &d->zero_stage);
    if (st == MN_OK)
        st = mn_h5_read_attr_int(g, path, "grad_accum", &d->grad_accum);
    H5Gclose(g);
    if (st == MN_OK && (d->world_size < 1 || d->world_size > (1 << 20) || d->zero_stage < 0 || d->zero_stage > 1 ||
                        d->grad_accum < 1))
        st = mn_fail(MN_ERR_FORMAT, "%s: /train/dist: world_size %lld, zero_stage %lld, grad_accum %lld out of range",
                     path, (long long)d->world_size, (long long)d->zero_stage, (long long)d->grad_accum);
    if (st == MN_OK) {
        size_t n = (size_t)d->world_size * MN_DIST_CURSOR_FIELDS;
        d->rank_cursors = malloc(n * sizeof(uint64_t));
        st = d->rank_cursors
                 ? mn_h5_read_checksummed(c.file, path, "train/dist/rank_cursors", H5T_NATIVE_UINT64, d->rank_cursors, n)
                 : mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    }
    close_checkpoint(&c);
    if (st != MN_OK) {
        mn_checkpoint_dist_free(d);
        return mn_fail_context(MN_ERR_FORMAT, "%s: bad /train/dist", path);
    }
    *found = 1;
    return MN_OK;
}

void mn_checkpoint_stream_free(mn_checkpoint_stream *s) {
    if (!s)
        return;
    free(s->episode), free(s->turn), free(s->states);
    memset(s, 0, sizeof *s);
}

mn_status mn_checkpoint_read_stream(const char *path, mn_checkpoint_stream *s, int *found) {
    if (!path || !s || !found)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_read_stream: NULL argument");
    memset(s, 0, sizeof *s);
    *found = 0;
    ckpt c;
    MN_TRY(open_checkpoint(path, &c));
    int present = 0, ndim = 0;
    size_t dims[4] = {0}, sdims[4] = {0};
    mn_status st = has(&c, "train/stream", &present);
    if (st != MN_OK || !present) { /* none: not saved by a streaming run */
        close_checkpoint(&c);
        return st;
    }
    int64_t *positions = NULL;
    st = mn_h5_dataset_dims(c.file, path, "train/stream/positions", &ndim, dims);
    if (st == MN_OK && (ndim != 2 || dims[1] != 2 || dims[0] < 1 || dims[0] > (1 << 20)))
        st = mn_fail(MN_ERR_FORMAT, "%s: /train/stream/positions is not (lanes, 2)", path);
    if (st == MN_OK)
        st = mn_h5_dataset_dims(c.file, path, "train/stream/states", &ndim, sdims);
    if (st == MN_OK && (ndim != 2 || sdims[0] != dims[0] || sdims[1] < 1 || sdims[1] > (1 << 24)))
        st = mn_fail(MN_ERR_FORMAT, "%s: /train/stream/states is not (lanes, k * C)", path);
    if (st == MN_OK) {
        s->lanes = (int64_t)dims[0], s->state_floats = (int64_t)sdims[1];
        positions = malloc(2 * dims[0] * sizeof *positions);
        s->episode = malloc(dims[0] * sizeof *s->episode);
        s->turn = malloc(dims[0] * sizeof *s->turn);
        s->states = malloc(dims[0] * sdims[1] * sizeof *s->states);
        if (!positions || !s->episode || !s->turn || !s->states)
            st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    }
    if (st == MN_OK)
        st = mn_h5_read_checksummed(c.file, path, "train/stream/positions", H5T_NATIVE_INT64, positions,
                                    2 * dims[0]);
    if (st == MN_OK)
        st = mn_h5_read_checksummed(c.file, path, "train/stream/states", H5T_NATIVE_FLOAT, s->states,
                                    dims[0] * sdims[1]);
    for (size_t b = 0; st == MN_OK && b < dims[0]; b++) {
        s->episode[b] = positions[2 * b], s->turn[b] = positions[2 * b + 1];
        if (s->episode[b] < -1 || s->turn[b] < 0)
            st = mn_fail(MN_ERR_FORMAT, "%s: /train/stream/positions: lane %zu at turn %lld of episode %lld", path, b,
                         (long long)s->turn[b], (long long)s->episode[b]);
    }
    free(positions);
    close_checkpoint(&c);
    if (st != MN_OK) {
        mn_checkpoint_stream_free(s);
        return mn_fail_context(MN_ERR_FORMAT, "%s: bad /train/stream", path);
    }
    *found = 1;
    return MN_OK;
}

mn_status mn_checkpoint_read_config(const char *path, mn_config *config) {
    if (!path || !config)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_read_config: NULL argument");
    ckpt c;
    MN_TRY(open_checkpoint(path, &c));
    mn_status st = read_config(&c, config);
    close_checkpoint(&c);
    return st;
}

mn_status mn_checkpoint_load(const char *path, mn_model *model, mn_trainer *trainer, mn_train_state *state,
                             const mn_checkpoint_load_options *opts) {
    if (!path || !model)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_load: path or model is NULL");
    if (trainer && trainer->model != model)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_load: the trainer belongs to another model");
    if (trainer && mn_trainer_moments_range(trainer, NULL, NULL))
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_load: the trainer's moments are sharded; load before sharding");
    ckpt c;
    MN_TRY(open_checkpoint(path, &c));
    size_t P = mn_model_num_params(model);
    float *params = NULL, *m = NULL, *v = NULL;
    int64_t adam_step = 0;
    mn_train_state train;
    mn_config stored;
    mn_status st = read_config(&c, &stored);
    if (st == MN_OK)
        st = compare_config(path, &stored, mn_model_config(model));
    if (st == MN_OK && opts && opts->check_tokenizer)
        st = check_tokenizer(&c, opts->tokenizer_hash);
    /* staged, so that a refusal halfway leaves the model and trainer untouched */
    if (st == MN_OK) {
        params = malloc(P * sizeof(float));
        if (trainer) {
            m = malloc(P * sizeof(float));
            v = malloc(P * sizeof(float));
        }
        if (!params || (trainer && (!m || !v)))
            st = mn_fail(MN_ERR_NOMEM, "%s: out of memory loading %zu parameters", path, P);
    }
    if (st == MN_OK)
        st = read_tensors(&c, "params", model, params);
    if (st == MN_OK && trainer) {
        hid_t g;
        int present = 0;
        st = has(&c, "optimizer", &present);
        if (st == MN_OK && !present)
            st = mn_fail(MN_ERR_FORMAT, "%s: holds no optimizer state (/optimizer); cannot resume training from it",
                         path);
        if (st == MN_OK)
            st = mn_h5_open_group(c.file, path, "optimizer", &g);
        if (st == MN_OK) {
            st = mn_h5_read_attr_int(g, path, "step", &adam_step);
            H5Gclose(g);
            if (st == MN_OK && adam_step < 0)
                st = mn_fail(MN_ERR_FORMAT, "%s: optimizer step %lld is negative", path, (long long)adam_step);
        }
        if (st == MN_OK)
            st = read_tensors(&c, "optimizer/m", model, m);
        if (st == MN_OK)
            st = read_tensors(&c, "optimizer/v", model, v);
    }
    if (st == MN_OK && state)
        st = read_train(&c, &train);
    close_checkpoint(&c);
    if (st == MN_OK) {
        memcpy(mn_model_params(model), params, P * sizeof(float));
        if (trainer) {
            memcpy(mn_trainer_adam_m(trainer), m, P * sizeof(float));
            memcpy(mn_trainer_adam_v(trainer), v, P * sizeof(float));
            mn_trainer_set_step(trainer, (uint64_t)adam_step);
            st = mn_trainer_push(trainer); /* host edits -> device */
        }
        if (state)
            *state = train;
    }
    free(params);
    free(m);
    free(v);
    return st;
}

mn_status mn_model_load(const char *path, mn_model **out) {
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_model_load: NULL argument");
    *out = NULL;
    mn_config config;
    MN_TRY(mn_checkpoint_read_config(path, &config));
    mn_model *m = NULL;
    MN_TRY(mn_model_create(&config, &m));
    mn_status st = mn_checkpoint_load(path, m, NULL, NULL, NULL);
    if (st != MN_OK) {
        mn_model_free(m);
        return st;
    }
    *out = m;
    return MN_OK;
}

mn_status mn_checkpoint_load_tokenizer(const char *path, mn_tokenizer **out) {
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_load_tokenizer: NULL argument");
    *out = NULL;
    ckpt c;
    MN_TRY(open_checkpoint(path, &c));
    int present = 0;
    mn_status st = has(&c, "tokenizer", &present);
    if (st == MN_OK && present)
        st = mn_tokenizer_load_h5(c.file, path, out);
    close_checkpoint(&c);
    return st;
}

void mn_checkpoint_info_free(mn_checkpoint_info *info) {
    if (!info)
        return;
    free(info->build_id);
    free(info->created);
    free(info->run_id);
    free(info->train_config);
    memset(info, 0, sizeof *info);
}

mn_status mn_checkpoint_read_info(const char *path, mn_checkpoint_info *info) {
    if (!path || !info)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_read_info: NULL argument");
    memset(info, 0, sizeof *info);
    ckpt c;
    hid_t g;
    MN_TRY(open_checkpoint(path, &c));
    info->format_version = c.version;
    meta_strings ms;
    mn_status st = read_strings(&c, &ms);
    if (st == MN_OK) {
        info->build_id = ms.build_id, info->created = ms.created, info->run_id = ms.run_id;
        info->train_config = ms.train_config;
        st = read_config(&c, &info->config);
    }
    if (st == MN_OK)
        st = has(&c, "optimizer", &info->has_optimizer);
    if (st == MN_OK && info->has_optimizer) {
        int64_t step = 0;
        st = mn_h5_open_group(c.file, path, "optimizer", &g);
        if (st == MN_OK) {
            st = mn_h5_read_attr_int(g, path, "step", &step);
            H5Gclose(g);
        }
        if (st == MN_OK && step < 0)
            st = mn_fail(MN_ERR_FORMAT, "%s: optimizer step %lld is negative", path, (long long)step);
        info->adam_step = (uint64_t)step;
    }
    if (st == MN_OK)
        st = has(&c, "train", &info->has_train);
    if (st == MN_OK && info->has_train)
        st = read_train(&c, &info->train);
    if (st == MN_OK)
        st = has(&c, "tokenizer", &info->has_tokenizer);
    close_checkpoint(&c);
    if (st != MN_OK)
        mn_checkpoint_info_free(info);
    return st;
}

mn_status mn_checkpoint_read_run_id(const char *path, char *out, size_t cap) {
    if (!path || !out || cap < MN_RUN_ID_LEN + 1)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_read_run_id: NULL argument or short buffer");
    out[0] = '\0';
    ckpt c;
    MN_TRY(open_checkpoint(path, &c));
    mn_status st = MN_OK;
    if (c.version >= 2) {
        hid_t meta;
        char *id = NULL;
        st = mn_h5_open_group(c.file, path, "meta", &meta);
        if (st == MN_OK) {
            st = mn_h5_read_attr_string(meta, path, "run_id", &id);
            H5Gclose(meta);
        }
        if (st == MN_OK && !mn_run_id_valid(id))
            st = mn_fail(MN_ERR_FORMAT, "%s: the run id is not %d hex digits (corrupt)", path, MN_RUN_ID_LEN);
        if (st == MN_OK)
            snprintf(out, cap, "%s", id);
        free(id);
    }
    close_checkpoint(&c);
    return st;
}

/* ---------------------------------------------------------------- run directories */
/* "ckpt-<digits>.h5" exactly; anything after (a temp suffix) disqualifies the name. */
static int parse_ckpt_name(const char *name, uint64_t *step, const char **rest) {
    if (strncmp(name, "ckpt-", 5))
        return 0;
    const char *p = name + 5;
    uint64_t v = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (v > (UINT64_MAX - 9) / 10)
            return 0;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (!digits || strncmp(p, ".h5", 3))
        return 0;
    *step = v;
    *rest = p + 3;
    return 1;
}

mn_status mn_checkpoint_run_path(const char *dir, uint64_t step, char *out, size_t cap) {
    if (!dir || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_run_path: NULL argument");
    if ((size_t)snprintf(out, cap, "%s/ckpt-%08" PRIu64 ".h5", dir, step) >= cap)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: run directory path too long", dir);
    return MN_OK;
}

/* Checkpoints of a run directory: step and file name, ascending by step. */
typedef struct {
    uint64_t step;
    char name[256];
} ckpt_entry;

static mn_status list_checkpoints(const char *dir, ckpt_entry **entries, size_t *n) {
    *entries = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return mn_fail(MN_ERR_IO, "%s: cannot list the run directory: %s", dir, strerror(errno));
    size_t cap = 0;
    struct dirent *e;
    mn_status st = MN_OK;
    while ((e = readdir(d))) {
        uint64_t step;
        const char *rest;
        if (!parse_ckpt_name(e->d_name, &step, &rest) || *rest || strlen(e->d_name) >= sizeof(*entries)->name)
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            ckpt_entry *grown = realloc(*entries, cap * sizeof **entries);
            if (!grown) {
                st = mn_fail(MN_ERR_NOMEM, "%s: out of memory listing checkpoints", dir);
                break;
            }
            *entries = grown;
        }
        (*entries)[*n].step = step;
        snprintf((*entries)[*n].name, sizeof(*entries)->name, "%s", e->d_name);
        (*n)++;
    }
    closedir(d);
    ckpt_entry *v = *entries;
    for (size_t i = 1; st == MN_OK && i < *n; i++) /* insertion sort: few files; ties by name */
        for (size_t j = i; j > 0 && (v[j - 1].step > v[j].step ||
                                     (v[j - 1].step == v[j].step && strcmp(v[j - 1].name, v[j].name) > 0));
             j--) {
            ckpt_entry t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    if (st != MN_OK) {
        free(*entries);
        *entries = NULL;
        *n = 0;
    }
    return st;
}

mn_status mn_checkpoint_latest(const char *dir, char *out, size_t cap, uint64_t *step, int *found) {
    if (!dir || !out || !found)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_latest: NULL argument");
    *found = 0;
    ckpt_entry *v;
    size_t n;
    MN_TRY(list_checkpoints(dir, &v, &n));
    mn_status st = MN_OK;
    if (n) {
        if ((size_t)snprintf(out, cap, "%s/%s", dir, v[n - 1].name) >= cap) {
            st = mn_fail(MN_ERR_INVALID_ARG, "%s: run directory path too long", dir);
        } else {
            *found = 1;
            if (step)
                *step = v[n - 1].step;
        }
    }
    free(v);
    return st;
}

mn_status mn_checkpoint_prune(const char *dir, const char *run_id, int keep, int *removed) {
    if (removed)
        *removed = 0;
    if (!dir || !run_id || strlen(run_id) != MN_RUN_ID_LEN || keep < 1)
        return mn_fail(MN_ERR_INVALID_ARG,
                       "mn_checkpoint_prune: need a directory, a run id and keep >= 1 (keep = %d)", keep);
    ckpt_entry *v;
    size_t n;
    MN_TRY(list_checkpoints(dir, &v, &n));
    mn_status st = MN_OK;
    int kept = 0;
    for (size_t i = n; i-- > 0;) { /* newest first: the first `keep` of this run stay */
        char path[PATH_CAP], id[MN_RUN_ID_LEN + 1];
        snprintf(path, sizeof path, "%s/%s", dir, v[i].name);
        /* another run's, a format 1 file or one that cannot be read: not provably ours, kept */
        if (mn_checkpoint_read_run_id(path, id, sizeof id) != MN_OK || strcmp(id, run_id))
            continue;
        if (kept < keep) {
            kept++;
            continue;
        }
        if (unlink(path) != 0 && errno != ENOENT) {
            st = mn_fail(MN_ERR_IO, "%s: cannot delete an old checkpoint: %s", path, strerror(errno));
            break;
        }
        if (removed)
            (*removed)++;
    }
    free(v);
    return st;
}

mn_status mn_checkpoint_clean_temps(const char *dir, int *removed) {
    if (removed)
        *removed = 0;
    if (!dir)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_checkpoint_clean_temps: NULL directory");
    DIR *d = opendir(dir);
    if (!d)
        return mn_fail(MN_ERR_IO, "%s: cannot list the run directory: %s", dir, strerror(errno));
    mn_status st = MN_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        uint64_t step;
        const char *rest;
        if (!parse_ckpt_name(e->d_name, &step, &rest) || strncmp(rest, ".tmp.", 5))
            continue;
        char *end = NULL;
        errno = 0;
        long pid = strtol(rest + 5, &end, 10);
        if (errno || !end || *end || pid <= 0)
            continue;
        /* a live writer (this process or another) still owns its temp file */
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[PATH_CAP];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0 && errno != ENOENT) {
            st = mn_fail(MN_ERR_IO, "%s: cannot delete a stale temp file: %s", path, strerror(errno));
            break;
        }
        if (removed)
            (*removed)++;
    }
    closedir(d);
    return st;
}
