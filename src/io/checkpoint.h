/* Training checkpoints in HDF5 (docs/checkpoint.md): parameters, AdamW moments, the training
 * loop's state, the model config, the effective training config, the tokenizer and metadata.
 *
 * Writes are atomic: the file is built in memory (HDF5's core driver; transiently the file's
 * size in extra RAM), written to <path>.tmp.<pid> in the same directory with write(),
 * fsynced, renamed over <path>, and the directory is fsynced. A failed or killed write never
 * touches an existing <path>.
 *
 * Every byte is checked before it is trusted: an integrity trailer after HDF5's end of file
 * holds the XXH64 of every byte but the tensors' chunks (metadata, config, state, tokenizer),
 * verified before HDF5 parses anything; each tensor chunk carries its Fletcher32 checksum,
 * verified by HDF5 as it is read. Loading then validates everything (format version, config
 * field by field, tokenizer hash, each tensor's presence, shape, checksum filter and finite
 * values) before it changes the model, so a refused checkpoint leaves the model and trainer
 * as they were. Format 1 files (no trailer) still load, verified as far as their layout
 * allows (docs/checkpoint.md). */
#ifndef MN_CHECKPOINT_H
#define MN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"
#include "text/tokenizer.h"

#define MN_CHECKPOINT_FORMAT 2        /* what this build writes */
#define MN_CHECKPOINT_FORMAT_OLDEST 1 /* the oldest it reads */
/* A run's identity (docs/training.md, "Run directories"): 32 hex digits. */
#define MN_RUN_ID_LEN 32
/* 1 for "" (no run) or MN_RUN_ID_LEN lowercase hex digits. */
int mn_run_id_valid(const char *s);

/* The training loop's state, everything beyond the tensors that a bit-identical resume needs. */
typedef struct {
    uint64_t step;            /* loop steps done, skipped (non-finite) steps included */
    uint64_t tokens_seen;     /* training tokens consumed */
    uint64_t rng[4];          /* the loop's RNG (mn_rng, xoshiro256**) */
    uint64_t data_epoch;      /* data cursor: the shard loader's mn_loader_cursor */
    uint64_t data_position;
    int64_t curriculum_stage; /* index into the curriculum's stages */
    int64_t nan_streak;       /* consecutive skipped steps when saved */
    int64_t nan_skipped;      /* skipped steps over the whole run */
} mn_train_state;

/* The data-parallel layout a checkpoint was saved with, /train/dist (docs/distributed.md).
 * The data cursor in mn_train_state is global (the order of the global batch); each rank's
 * row restates it with the slice of every global batch that rank trains on. */
#define MN_DIST_CURSOR_FIELDS 4 /* data epoch, data position, first episode of the slice, episodes */
typedef struct {
    int64_t world_size;     /* ranks that trained */
    int64_t zero_stage;     /* 0: every rank updates every parameter; 1: optimizer sharded */
    int64_t grad_accum;     /* micro-batches per rank and step */
    uint64_t *rank_cursors; /* (world_size, MN_DIST_CURSOR_FIELDS) */
} mn_checkpoint_dist;

/* Streaming training's carried states, /train/stream (docs/checkpoint.md): per batch lane, the
 * stream loader's position (its episode, -1 for none yet, and the turn of it where the next
 * window starts; mn_loader_get_lanes) and the state R carried into that window. */
typedef struct {
    int64_t lanes;        /* the batch B */
    int64_t state_floats; /* k * C */
    int64_t *episode, *turn; /* (lanes) */
    float *states;        /* (lanes, state_floats); a lane's R may be non-finite (it then restarts) */
} mn_checkpoint_stream;

/* Fault injection for tests: called before each dataset is written; a nonzero return makes
 * that write fail exactly as a write error would (MN_ERR_IO, temp file removed). */
typedef int (*mn_checkpoint_fault_fn)(void *ctx, const char *dataset);

typedef struct {
    const char *train_config_json;  /* stored as /config/train_config; NULL: "{}" */
    const char *run_id;             /* the run that writes it (MN_RUN_ID_LEN hex digits); NULL: none */
    const mn_tokenizer *tokenizer;  /* stored as group /tokenizer; NULL: none */
    const mn_checkpoint_dist *dist; /* stored as /train/dist (with a state); NULL: none */
    const mn_checkpoint_stream *stream; /* stored as /train/stream (with a state); NULL: none */
    /* Whole moments (num_params each) to write instead of the trainer's: required when the
     * trainer's moments are sharded (ZeRO-1), gathered by the writing rank; else NULL. */
    const float *adam_m, *adam_v;
    mn_checkpoint_fault_fn fault;   /* NULL: no injected faults */
    void *fault_ctx;
} mn_checkpoint_save_options;

/* Writes model params; with trainer, also the AdamW moments and step (pulled from the device
 * first); with state, the /train group. opts may be NULL. Failures return MN_ERR_IO naming
 * path; an existing file at path is left intact. */
mn_status mn_checkpoint_save(const char *path, mn_model *model, mn_trainer *trainer, const mn_train_state *state,
                             const mn_checkpoint_save_options *opts);

typedef struct {
    int check_tokenizer;      /* 1: the checkpoint must hold a tokenizer with this hash */
    uint64_t tokenizer_hash;
} mn_checkpoint_load_options;

/* Loads a checkpoint into model (whose config must equal the file's, field by field); with
 * trainer, the moments and AdamW step too (then pushed to the device); with state, the /train
 * group. opts may be NULL. Refusals: MN_ERR_IO (missing / unreadable), MN_ERR_FORMAT (not a
 * checkpoint, another format version, truncated, checksum failure or no checksum, missing
 * part), MN_ERR_MISMATCH (another config, another tokenizer, a tensor of another shape),
 * MN_ERR_NUMERIC (a non-finite parameter or moment, a negative second moment). */
mn_status mn_checkpoint_load(const char *path, mn_model *model, mn_trainer *trainer, mn_train_state *state,
                             const mn_checkpoint_load_options *opts);

/* /train/dist of a checkpoint: *found = 0 when it holds none (written before data-parallel
 * training existed, or without a training state). rank_cursors is malloc'd:
 * mn_checkpoint_dist_free. */
mn_status mn_checkpoint_read_dist(const char *path, mn_checkpoint_dist *dist, int *found);
void mn_checkpoint_dist_free(mn_checkpoint_dist *dist);
/* /train/stream of a checkpoint: *found = 0 when it holds none (not saved by a streaming run).
 * The arrays are malloc'd: mn_checkpoint_stream_free. */
mn_status mn_checkpoint_read_stream(const char *path, mn_checkpoint_stream *stream, int *found);
void mn_checkpoint_stream_free(mn_checkpoint_stream *stream);

/* The model config stored in a checkpoint (to create a matching model before loading). */
mn_status mn_checkpoint_read_config(const char *path, mn_config *config);
/* (mn_checkpoint_load_tokenizer, the stored tokenizer, is public API: mnemo.h.) */

/* Everything but the tensors, for `mnemo inspect`. Strings are malloc'd. */
typedef struct {
    int64_t format_version;
    char *build_id, *created;  /* created: ISO 8601 UTC */
    char *run_id;              /* the run that wrote it; "" when none (format 1, or outside a run) */
    char *train_config;        /* the effective training config (JSON) */
    mn_config config;
    int has_optimizer, has_train, has_tokenizer;
    uint64_t adam_step;        /* AdamW steps (when has_optimizer) */
    mn_train_state train;      /* when has_train */
} mn_checkpoint_info;

mn_status mn_checkpoint_read_info(const char *path, mn_checkpoint_info *info);
void mn_checkpoint_info_free(mn_checkpoint_info *info);

/* ---- run directories: <dir>/ckpt-<step>.h5, step zero-padded to 8 digits */
mn_status mn_checkpoint_run_path(const char *dir, uint64_t step, char *out, size_t cap);
/* The checkpoint with the highest step in dir, found by name: only "ckpt-<digits>.h5" counts,
 * so temp files of interrupted writes are never picked. *found = 0 when there is none. */
mn_status mn_checkpoint_latest(const char *dir, char *out, size_t cap, uint64_t *step, int *found);
/* Deletes all but the `keep` (>= 1) highest-step checkpoints of run run_id; a checkpoint of
 * another run, of none (format 1) or whose run cannot be read (corrupt) is never deleted.
 * *removed (nullable) = count. */
mn_status mn_checkpoint_prune(const char *dir, const char *run_id, int keep, int *removed);
/* The run id a checkpoint was written by ("" when none), verified like every read; out holds
 * MN_RUN_ID_LEN + 1 bytes. */
mn_status mn_checkpoint_read_run_id(const char *path, char *out, size_t cap);
/* Deletes temp files "ckpt-<digits>.h5.tmp.<pid>" whose writer process no longer runs. */
mn_status mn_checkpoint_clean_temps(const char *dir, int *removed);

#endif
