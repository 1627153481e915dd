/* The training config (include/mnemo_train.h): one table of fields drives the JSON config
 * file, the long options (field name with '-' for '_'), their help, and the JSON stored in
 * checkpoints (docs/training.md). */
#include "mnemo_train.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "io/checkpoint.h"
#include "train/recall.h"
#include "train/run_dir.h"
#include "train/schedule.h"
#include "train/train_run.h"

/* F_RULE: an int (mn_write_rule) written and read by its name */
typedef enum { F_INT, F_I64, F_FLOAT, F_DOUBLE, F_STR, F_BOOL, F_RULE } field_type;

typedef struct {
    const char *name;
    field_type type;
    size_t offset;
    size_t cap;        /* F_STR: buffer size */
    const char *help;
} field;

#define FIELD(n, t, h) {#n, t, offsetof(mn_train_config, n), 0, h}
#define MODEL(n, t, h) {#n, t, offsetof(mn_train_config, model.n), 0, h}
#define STR(n, h) {#n, F_STR, offsetof(mn_train_config, n), sizeof(((mn_train_config *)0)->n), h}

static const field fields[] = {
    MODEL(vocab_size, F_INT, "model: vocabulary size V (task shards: not given, or 0: the tokenizer's)"),
    MODEL(d_model, F_INT, "model: width C"),
    MODEL(n_heads, F_INT, "model: attention heads"),
    MODEL(n_layers, F_INT, "model: decoder blocks"),
    MODEL(n_comp_layers, F_INT, "model: compressor blocks"),
    MODEL(n_slots, F_INT, "model: memory slots k"),
    MODEL(max_turn_tokens, F_INT, "model: longest turn N"),
    MODEL(gate_bias_init, F_FLOAT, "model: initial update-gate bias"),
    MODEL(write_rule, F_RULE, "model: the write into R: gate (element-wise), slot (per-slot gate) or delta (key-addressed)"),
    STR(task, "shards (token shards) or recall (synthetic recall episodes)"),
    STR(train_data, "training token shard"),
    STR(valid_data, "validation token shard"),
    STR(valid_probes, "validation JSONL with probes: multiple-choice accuracy"),
    STR(tokenizer, "tokenizer file (default: the --resume/--base checkpoint's)"),
    FIELD(batch, F_INT, "episodes per batch B (the global batch: all ranks together)"),
    FIELD(grad_accum, F_INT, "micro-batches per rank and step (B / (ranks * grad_accum) each)"),
    FIELD(turns, F_INT, "turns per episode T (the last curriculum stage)"),
    FIELD(bptt, F_INT, "truncated BPTT length K in turns"),
    FIELD(stream, F_INT, "1: each batch lane walks one episode's windows in order, carrying R across them"),
    STR(curriculum, "explicit stages \"step:turns,...\" (overrides the doubling stages)"),
    FIELD(curriculum_start_turns, F_INT, "first stage's turns; doubles each stage up to T"),
    FIELD(curriculum_stage_steps, F_I64, "steps per curriculum stage (0: always T turns)"),
    FIELD(lr, F_DOUBLE, "peak learning rate"),
    FIELD(min_lr, F_DOUBLE, "learning-rate floor at the end of the cosine"),
    FIELD(warmup_steps, F_I64, "linear warmup steps"),
    FIELD(beta1, F_DOUBLE, "AdamW beta1"),
    FIELD(beta2, F_DOUBLE, "AdamW beta2"),
    FIELD(eps, F_DOUBLE, "AdamW epsilon"),
    FIELD(weight_decay, F_DOUBLE, "AdamW weight decay"),
    FIELD(grad_clip, F_DOUBLE, "clip the global gradient norm (0: off)"),
    FIELD(answer_weight, F_DOUBLE, "loss weight of probe-answer tokens"),
    FIELD(text_weight, F_DOUBLE, "loss weight of other tokens"),
    FIELD(reconstruct_weight, F_DOUBLE, "weight of re-decoding each turn from the state that read it (0: off)"),
    FIELD(reconstruct_delay, F_INT, "re-decode turn t from the state after turn t+delay (< bptt; 0: the one that read it)"),
    FIELD(steps, F_I64, "training steps (the cosine schedule's length)"),
    FIELD(time_limit_s, F_I64, "stop after this many seconds with a checkpoint (0: none)"),
    FIELD(stop_at_step, F_I64, "stop with a checkpoint when the step reaches this, the schedule still `steps` long (0: none)"),
    FIELD(seed, F_I64, "seed of initialisation, data order and synthetic episodes"),
    FIELD(max_nan_steps, F_INT, "abort after this many non-finite steps in a row"),
    FIELD(freeze_decoder, F_BOOL, "freeze decoder.* and wte (train compressor and memory only)"),
    FIELD(freeze_compressor, F_BOOL, "freeze compressor.*, memory.* and wte (train the decoder's reading only)"),
    FIELD(eval_interval, F_I64, "evaluate every N steps (0: only at the end)"),
    FIELD(eval_batches, F_I64, "validation batches per evaluation"),
    FIELD(eval_probes, F_I64, "probes per evaluation (multiple choice)"),
    FIELD(log_interval, F_I64, "progress line every N steps when not on a terminal"),
    FIELD(checkpoint_interval, F_I64, "checkpoint every N steps (0: only at the end)"),
    FIELD(keep_checkpoints, F_INT, "keep the last N checkpoints"),
    STR(run_dir, "run directory: checkpoints and metrics.jsonl"),
    FIELD(threads, F_INT, "CPU threads (0: OpenMP's default)"),
    STR(device, "cpu, cuda or auto"),
    FIELD(zero, F_INT, "data parallel: 1 = ZeRO-1 (reduce-scatter, sharded AdamW, all-gather)"),
    FIELD(comm_timeout, F_DOUBLE, "data parallel: seconds to wait for the other ranks (0: forever)"),
    FIELD(recall_keys, F_INT, "recall task: key tokens"),
    FIELD(recall_values, F_INT, "recall task: value tokens"),
    FIELD(recall_facts, F_INT, "recall task: facts (and questions) per episode"),
    FIELD(recall_choices, F_INT, "recall task: choices per question"),
    FIELD(recall_filler_min, F_INT, "recall task: fewest words per filler turn"),
    FIELD(recall_filler_max, F_INT, "recall task: most words per filler turn"),
    FIELD(recall_min_distance, F_INT, "recall task: shortest fact-to-question distance"),
};
static const int n_fields = (int)(sizeof fields / sizeof fields[0]);

void mn_train_config_defaults(mn_train_config *c) {
    memset(c, 0, sizeof *c);
    c->model = mn_config_demo();
    snprintf(c->task, sizeof c->task, "shards");
    c->batch = 8;
    c->turns = 16;
    c->bptt = 16;
    c->grad_accum = 1;
    c->comm_timeout = 300;
    c->curriculum_start_turns = 2;
    c->curriculum_stage_steps = 0;
    c->lr = 1e-3;
    c->min_lr = 1e-4;
    c->warmup_steps = 100;
    c->beta1 = 0.9;
    c->beta2 = 0.95;
    c->eps = 1e-8;
    c->weight_decay = 0.1;
    c->grad_clip = 1.0;
    c->answer_weight = 5.0;
    c->text_weight = 1.0;
    c->steps = 1000;
    c->seed = 1;
    c->max_nan_steps = 10;
    c->eval_interval = 100;
    c->eval_batches = 4;
    c->eval_probes = 200;
    c->log_interval = 10;
    c->checkpoint_interval = 500;
    c->keep_checkpoints = 3;
    snprintf(c->run_dir, sizeof c->run_dir, "runs/default");
    snprintf(c->device, sizeof c->device, "cpu"); /* auto and cuda only when asked for: no CUDA notice by default */
    c->recall_keys = 16;
    c->recall_values = 32;
    c->recall_facts = 1;
    c->recall_choices = 4;
    c->recall_filler_min = 1;
    c->recall_filler_max = 3;
    c->recall_min_distance = 1;
}

static void *at(mn_train_config *c, const field *f) { return (char *)c + f->offset; }
static const void *at_const(const mn_train_config *c, const field *f) { return (const char *)c + f->offset; }

static const field *find(const char *name) {
    for (int i = 0; i < n_fields; i++)
        if (!strcmp(fields[i].name, name))
            return &fields[i];
    return NULL;
}

/* A write rule by name; a bad name's message says where it came from. */
static mn_status set_rule(int *rule, const char *name, const char *where) {
    mn_status st = mn_write_rule_parse(name, rule);
    return st == MN_OK ? MN_OK : mn_fail_context(st, "%s", where);
}

/* The name of the rule a field holds ("?" for a value no rule has: validation refuses it later). */
static const char *rule_text(const void *field) {
    const char *name = mn_write_rule_name(*(const int *)field);
    return name ? name : "?";
}

/* Sets a field from a JSON value. */
static mn_status set_json(mn_train_config *c, const field *f, json_t *v, const char *where) {
    switch (f->type) {
    case F_INT:
    case F_I64: {
        if (!json_is_integer(v))
            return mn_fail(MN_ERR_CONFIG, "%s: field %s wants an integer", where, f->name);
        json_int_t x = json_integer_value(v);
        if (f->type == F_INT) {
            if (x < -2147483647LL - 1 || x > 2147483647LL)
                return mn_fail(MN_ERR_CONFIG, "%s: field %s = %lld is out of the int range", where, f->name,
                               (long long)x);
            *(int *)at(c, f) = (int)x;
        } else {
            *(int64_t *)at(c, f) = (int64_t)x;
        }
        return MN_OK;
    }
    case F_FLOAT:
    case F_DOUBLE:
        if (!json_is_number(v))
            return mn_fail(MN_ERR_CONFIG, "%s: field %s wants a number", where, f->name);
        if (f->type == F_FLOAT && !isfinite((float)json_number_value(v))) /* JSON has no inf */
            return mn_fail(MN_ERR_CONFIG, "%s: field %s is out of the float range", where, f->name);
        if (f->type == F_FLOAT)
            *(float *)at(c, f) = (float)json_number_value(v);
        else
            *(double *)at(c, f) = json_number_value(v);
        return MN_OK;
    case F_BOOL:
        if (!json_is_boolean(v))
            return mn_fail(MN_ERR_CONFIG, "%s: field %s wants true or false", where, f->name);
        *(int *)at(c, f) = json_is_true(v);
        return MN_OK;
    case F_STR: {
        if (!json_is_string(v))
            return mn_fail(MN_ERR_CONFIG, "%s: field %s wants a string", where, f->name);
        const char *s = json_string_value(v);
        if (strlen(s) >= f->cap)
            return mn_fail(MN_ERR_CONFIG, "%s: field %s is longer than %zu bytes", where, f->name, f->cap - 1);
        snprintf((char *)at(c, f), f->cap, "%s", s);
        return MN_OK;
    }
    case F_RULE:
        if (!json_is_string(v))
            return mn_fail(MN_ERR_CONFIG, "%s: field %s wants one of \"gate\", \"slot\", \"delta\"", where, f->name);
        return set_rule((int *)at(c, f), json_string_value(v), where);
    }
    return mn_fail(MN_ERR_CONFIG, "%s: field %s has an unknown type", where, f->name);
}

static mn_status load_object(mn_train_config *c, json_t *root, const char *where) {
    if (!json_is_object(root))
        return mn_fail(MN_ERR_CONFIG, "%s: the config must be a JSON object", where);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        const field *f = find(key);
        if (!f)
            return mn_fail(MN_ERR_CONFIG, "%s: unknown field '%s'", where, key);
        MN_TRY(set_json(c, f, v, where));
    }
    return MN_OK;
}

mn_status mn_train_config_load_file(mn_train_config *c, const char *path) {
    if (!c || !path)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_train_config_load_file: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f)
        return mn_fail(MN_ERR_CONFIG, "%s: %s", path, strerror(errno));
    json_error_t e;
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &e);
    int read_error = ferror(f);
    fclose(f);
    if (!root && read_error)
        return mn_fail(MN_ERR_CONFIG, "%s: cannot read: %s", path, strerror(errno));
    if (!root)
        return mn_fail(MN_ERR_CONFIG, "%s:%d: %s", path, e.line, e.text);
    mn_status st = load_object(c, root, path);
    json_decref(root);
    return st;
}

mn_status mn_train_config_load_string(mn_train_config *c, const char *json, const char *where) {
    if (!c || !json || !where)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_train_config_load_string: NULL argument");
    json_error_t e;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &e);
    if (!root)
        return mn_fail(MN_ERR_CONFIG, "%s: config JSON: %s", where, e.text);
    mn_status st = load_object(c, root, where);
    json_decref(root);
    return st;
}

mn_status mn_train_config_load_checkpoint(mn_train_config *c, const char *checkpoint) {
    if (!c || !checkpoint)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_train_config_load_checkpoint: NULL argument");
    mn_checkpoint_info info;
    MN_TRY(mn_checkpoint_read_info(checkpoint, &info));
    mn_status st = mn_train_config_load_string(c, info.train_config ? info.train_config : "{}", checkpoint);
    c->model = info.config; /* the tensors decide the model, whatever the JSON says */
    mn_checkpoint_info_free(&info);
    /* a run continues where its checkpoint lies, not at the path it was started with (which is
     * relative to wherever that was, and may be another run's by now) */
    mn_run_dir_of(checkpoint, c->run_dir, sizeof c->run_dir);
    return st;
}

mn_status mn_train_resume_path(const char *checkpoint_or_run_dir, char *out, size_t cap) {
    if (!checkpoint_or_run_dir || !out || !cap)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_train_resume_path: NULL argument");
    struct stat sb;
    if (stat(checkpoint_or_run_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        if ((size_t)snprintf(out, cap, "%s", checkpoint_or_run_dir) >= cap)
            return mn_fail(MN_ERR_INVALID_ARG, "%s: the path is too long", checkpoint_or_run_dir);
        return MN_OK;
    }
    int found = 0;
    MN_TRY(mn_checkpoint_latest(checkpoint_or_run_dir, out, cap, NULL, &found));
    if (!found)
        return mn_fail(MN_ERR_IO, "%s: the directory holds no checkpoint (ckpt-<step>.h5)", checkpoint_or_run_dir);
    return MN_OK;
}

char *mn_train_config_to_json(const mn_train_config *c, int indent) {
    json_t *root = json_object();
    if (!root)
        return NULL;
    for (int i = 0; i < n_fields; i++) {
        const field *f = &fields[i];
        const void *p = at_const(c, f);
        json_t *v = NULL;
        switch (f->type) {
        case F_INT: v = json_integer(*(const int *)p); break;
        case F_I64: v = json_integer((json_int_t) * (const int64_t *)p); break;
        case F_FLOAT: v = json_real((double)*(const float *)p); break;
        case F_DOUBLE: v = json_real(*(const double *)p); break;
        case F_BOOL: v = json_boolean(*(const int *)p); break;
        case F_STR: v = json_string((const char *)p); break;
        case F_RULE: v = json_string(rule_text(p)); break;
        }
        json_object_set_new(root, f->name, v);
    }
    /* JSON_REAL_PRECISION(17): doubles round-trip exactly through the checkpoint */
    char *s = json_dumps(root, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17) |
                                   (indent ? JSON_INDENT(indent) : JSON_COMPACT));
    json_decref(root);
    return s;
}

/* ---------------------------------------------------------------- fields as options */
int mn_train_config_n_fields(void) { return n_fields; }

static const field *field_at(int i) { return i >= 0 && i < n_fields ? &fields[i] : NULL; }

mn_status mn_train_config_field(int i, mn_train_field *out) {
    const field *f = field_at(i);
    if (!f || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_train_config_field: no field %d (0..%d)", i, n_fields - 1);
    out->name = f->name;
    out->help = f->help;
    out->is_flag = f->type == F_BOOL;
    snprintf(out->option, sizeof out->option, "%s", f->name);
    for (char *p = out->option; *p; p++)
        if (*p == '_')
            *p = '-';
    return MN_OK;
}

mn_status mn_train_config_set_field(mn_train_config *c, int i, const char *value) {
    mn_train_field info;
    MN_TRY(mn_train_config_field(i, &info));
    const field *f = &fields[i];
    if (f->type == F_BOOL) {
        *(int *)at(c, f) = 1;
        return MN_OK;
    }
    if (!value)
        return mn_fail(MN_ERR_CONFIG, "--%s needs a value", info.option);
    char *end = NULL;
    switch (f->type) {
    case F_BOOL: break;
    case F_RULE: return set_rule((int *)at(c, f), value, "command line");
    case F_STR: {
        if (strlen(value) >= f->cap)
            return mn_fail(MN_ERR_CONFIG, "--%s is longer than %zu bytes", info.option, f->cap - 1);
        /* the config is stored as JSON, which holds UTF-8 only: jansson refuses anything else,
         * and the field would drop out of every stored config */
        json_t *as_json = json_string(value);
        if (!as_json)
            return mn_fail(MN_ERR_CONFIG, "--%s is not valid UTF-8 text", info.option);
        json_decref(as_json);
        snprintf((char *)at(c, f), f->cap, "%s", value);
        return MN_OK;
    }
    case F_INT:
    case F_I64: {
        errno = 0;
        long long x = strtoll(value, &end, 10);
        if (!*value || *end || errno || (f->type == F_INT && (x < -2147483647LL - 1 || x > 2147483647LL)))
            return mn_fail(MN_ERR_CONFIG, "--%s wants an integer, got '%s'", info.option, value);
        if (f->type == F_INT)
            *(int *)at(c, f) = (int)x;
        else
            *(int64_t *)at(c, f) = x;
        return MN_OK;
    }
    case F_FLOAT:
    case F_DOUBLE: {
        double x = strtod(value, &end);
        if (!*value || *end || !isfinite(x) || (f->type == F_FLOAT && !isfinite((float)x)))
            return mn_fail(MN_ERR_CONFIG, "--%s wants a finite number, got '%s'", info.option, value);
        if (f->type == F_FLOAT)
            *(float *)at(c, f) = (float)x;
        else
            *(double *)at(c, f) = x;
        return MN_OK;
    }
    }
    return mn_fail(MN_ERR_CONFIG, "--%s has an unknown type", info.option);
}

mn_status mn_train_config_field_text(const mn_train_config *c, int i, char *buf, size_t cap) {
    const field *f = field_at(i);
    if (!f || !c || !buf || !cap)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_train_config_field_text: no field %d, or NULL", i);
    const void *v = at_const(c, f);
    switch (f->type) {
    case F_INT: snprintf(buf, cap, "%d", *(const int *)v); break;
    case F_I64: snprintf(buf, cap, "%lld", (long long)*(const int64_t *)v); break;
    case F_FLOAT: snprintf(buf, cap, "%g", (double)*(const float *)v); break;
    case F_DOUBLE: snprintf(buf, cap, "%g", *(const double *)v); break;
    case F_BOOL: snprintf(buf, cap, "%s", *(const int *)v ? "on" : "off"); break;
    case F_STR: snprintf(buf, cap, "\"%s\"", (const char *)v); break;
    case F_RULE: snprintf(buf, cap, "%s", rule_text(v)); break;
    }
    return MN_OK;
}

/* ---------------------------------------------------------------- validation */
static int parse_curriculum(const char *spec, int T, mn_curriculum *out) {
    out->n = 0;
    const char *p = spec;
    while (*p) {
        char *end;
        long long step = strtoll(p, &end, 10);
        if (end == p || *end != ':')
            return 1;
        p = end + 1;
        long turns = strtol(p, &end, 10);
        if (end == p || (*end && *end != ','))
            return 1;
        if (out->n == MN_CURRICULUM_MAX)
            return 1;
        out->start_step[out->n] = step;
        out->turns[out->n] = (int)turns;
        out->n++;
        p = *end ? end + 1 : end;
    }
    return mn_curriculum_validate(out, T) != MN_OK;
}

mn_status mn_train_curriculum(const mn_train_config *c, mn_curriculum *out) {
    if (c->curriculum[0]) {
        if (parse_curriculum(c->curriculum, c->turns, out))
            return mn_fail(MN_ERR_CONFIG,
                           "config field curriculum '%s' is not \"step:turns,...\" with stages starting at step 0, "
                           "steps increasing, turns non-decreasing and <= turns",
                           c->curriculum);
        return MN_OK;
    }
    mn_status st = mn_curriculum_doubling(c->curriculum_start_turns, c->turns, c->curriculum_stage_steps, out);
    return st == MN_OK ? MN_OK : mn_fail_context(MN_ERR_CONFIG, "config fields curriculum_start_turns, turns");
}

mn_status mn_train_recall_task(const mn_train_config *c, mn_recall_task *task) {
    *task = (mn_recall_task){.vocab_size = c->model.vocab_size, .n_keys = c->recall_keys,
                             .n_values = c->recall_values, .filler_min = c->recall_filler_min,
                             .filler_max = c->recall_filler_max, .facts = c->recall_facts,
                             .n_choices = c->recall_choices, .text_weight = (float)c->text_weight,
                             .answer_weight = (float)c->answer_weight};
    mn_status st = mn_recall_task_validate(task);
    if (st != MN_OK)
        return mn_fail_context(MN_ERR_CONFIG, "config");
    if (mn_recall_max_len(task) > c->model.max_turn_tokens)
        return mn_fail(MN_ERR_CONFIG, "config: recall turns of %d tokens exceed max_turn_tokens = %d",
                       mn_recall_max_len(task), c->model.max_turn_tokens);
    return MN_OK;
}
static mn_status bad(const char *field, const char *why) {
    return mn_fail(MN_ERR_CONFIG, "config field %s %s", field, why);
}

mn_status mn_train_config_validate(const mn_train_config *c) {
    if (!c)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_train_config_validate: NULL argument");
    MN_TRY(mn_config_validate(&c->model));
    if (strcmp(c->task, "shards") && strcmp(c->task, "recall"))
        return bad("task", "must be shards or recall");
    if (strcmp(c->device, "cpu") && strcmp(c->device, "cuda") && strcmp(c->device, "auto"))
        return bad("device", "must be cpu, cuda or auto");
    if (c->batch < 1 || c->batch > 65536)
        return bad("batch", "must be in 1..65536");
    if (c->turns < 2 || c->turns > 4096)
        return bad("turns", "must be in 2..4096");
    if (c->grad_accum < 1 || c->grad_accum > c->batch)
        return bad("grad_accum", "must be in 1..batch");
    if (c->batch % c->grad_accum)
        return bad("grad_accum", "must divide batch");
    if (c->zero != 0 && c->zero != 1)
        return bad("zero", "must be 0 or 1");
    if (c->stream != 0 && c->stream != 1)
        return bad("stream", "must be 0 or 1");
    if (c->freeze_decoder && c->freeze_compressor)
        return bad("freeze_compressor", "and freeze_decoder together leave almost nothing to train");
    if (c->stream && strcmp(c->task, "shards"))
        return bad("stream", "1 needs task shards (recall episodes are independent of each other)");
    if (!(c->comm_timeout >= 0))
        return bad("comm_timeout", "must be >= 0");
    if (c->bptt < 1)
        return bad("bptt", "must be >= 1");
    if (c->curriculum_start_turns < 1)
        return bad("curriculum_start_turns", "must be >= 1");
    if (c->curriculum_stage_steps < 0)
        return bad("curriculum_stage_steps", "must be >= 0");
    if (!(c->lr > 0) || !(c->min_lr >= 0) || c->min_lr > c->lr)
        return bad("lr / min_lr", "must satisfy 0 <= min_lr <= lr, lr > 0");
    if (c->warmup_steps < 0)
        return bad("warmup_steps", "must be >= 0");
    if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
        return bad("beta1 / beta2", "must be in [0, 1)");
    if (!(c->eps > 0))
        return bad("eps", "must be > 0");
    if (!(c->weight_decay >= 0))
        return bad("weight_decay", "must be >= 0");
    if (!(c->grad_clip >= 0))
        return bad("grad_clip", "must be >= 0");
    if (!(c->answer_weight > 0) || !(c->text_weight >= 0))
        return bad("answer_weight / text_weight", "must be > 0 and >= 0");
    if (!(c->reconstruct_weight >= 0) || !isfinite(c->reconstruct_weight))
        return bad("reconstruct_weight", "must be finite and >= 0");
    if (c->reconstruct_delay < 0 || c->reconstruct_delay >= c->bptt)
        return bad("reconstruct_delay", "must be >= 0 and < bptt (a turn is decoded again only from a state of its own chunk)");
    if (c->reconstruct_delay > 0 && !(c->reconstruct_weight > 0))
        return bad("reconstruct_delay", "needs reconstruct_weight > 0");
    if (c->steps < 1)
        return bad("steps", "must be >= 1");
    if (c->time_limit_s < 0)
        return bad("time_limit_s", "must be >= 0");
    if (c->stop_at_step < 0 || c->stop_at_step > c->steps)
        return bad("stop_at_step", "must be >= 0 and <= steps");
    if (c->max_nan_steps < 1)
        return bad("max_nan_steps", "must be >= 1");
    if (c->eval_interval < 0 || c->eval_batches < 0 || c->eval_probes < 0)
        return bad("eval_interval / eval_batches / eval_probes", "must be >= 0");
    if (c->log_interval < 1)
        return bad("log_interval", "must be >= 1");
    if (c->checkpoint_interval < 0)
        return bad("checkpoint_interval", "must be >= 0");
    if (c->keep_checkpoints < 1)
        return bad("keep_checkpoints", "must be >= 1");
    if (!c->run_dir[0])
        return bad("run_dir", "must be set");
    if (c->threads < 0)
        return bad("threads", "must be >= 0");
    if (!strcmp(c->task, "shards") && !c->train_data[0])
        return bad("train_data", "must name a token shard for task shards");
    if (!strcmp(c->task, "recall") && (c->recall_min_distance < 1 || c->recall_min_distance > c->turns - 1))
        return bad("recall_min_distance", "must be in 1..turns-1");
    mn_curriculum curriculum;
    MN_TRY(mn_train_curriculum(c, &curriculum));
    if (!strcmp(c->task, "recall")) {
        mn_recall_task task;
        MN_TRY(mn_train_recall_task(c, &task));
        if (curriculum.turns[0] < 2 * c->recall_facts)
            return mn_fail(MN_ERR_CONFIG,
                           "config: the first curriculum stage (%d turns) cannot hold %d facts and questions",
                           curriculum.turns[0], c->recall_facts);
    }
    return MN_OK;
}
