/* The table-driven training config (train/train_config.h). */
#include "train_config.h"

#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { F_INT, F_I64, F_FLOAT, F_DOUBLE, F_STR, F_BOOL } field_type;

typedef struct {
    const char *name;
    field_type type;
    size_t offset;
    size_t cap;        /* F_STR: buffer size */
    const char *help;
} field;

#define FIELD(n, t, h) {#n, t, offsetof(train_config, n), 0, h}
#define MODEL(n, t, h) {#n, t, offsetof(train_config, model.n), 0, h}
#define STR(n, h) {#n, F_STR, offsetof(train_config, n), sizeof(((train_config *)0)->n), h}

static const field fields[] = {
    MODEL(vocab_size, F_INT, "model: vocabulary size V (task shards: the tokenizer's)"),
    MODEL(d_model, F_INT, "model: width C"),
    MODEL(n_heads, F_INT, "model: attention heads"),
    MODEL(n_layers, F_INT, "model: decoder blocks"),
    MODEL(n_comp_layers, F_INT, "model: compressor blocks"),
    MODEL(n_slots, F_INT, "model: memory slots k"),
    MODEL(max_turn_tokens, F_INT, "model: longest turn N"),
    MODEL(gate_bias_init, F_FLOAT, "model: initial update-gate bias"),
    STR(task, "shards (token shards) or recall (synthetic recall episodes)"),
    STR(train_data, "training token shard"),
    STR(valid_data, "validation token shard"),
    STR(valid_probes, "validation JSONL with probes: multiple-choice accuracy"),
    STR(tokenizer, "tokenizer file (default: the --resume/--base checkpoint's)"),
    FIELD(batch, F_INT, "episodes per batch B (the global batch: all ranks together)"),
    FIELD(grad_accum, F_INT, "micro-batches per rank and step (B / (ranks * grad_accum) each)"),
    FIELD(turns, F_INT, "turns per episode T (the last curriculum stage)"),
    FIELD(bptt, F_INT, "truncated BPTT length K in turns"),
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
    FIELD(steps, F_I64, "training steps (the cosine schedule's length)"),
    FIELD(time_limit_s, F_I64, "stop after this many seconds with a checkpoint (0: none)"),
    FIELD(seed, F_I64, "seed of initialisation, data order and synthetic episodes"),
    FIELD(max_nan_steps, F_INT, "abort after this many non-finite steps in a row"),
    FIELD(freeze_decoder, F_BOOL, "freeze decoder.* and wte (train compressor and memory only)"),
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

void train_config_defaults(train_config *c) {
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
    snprintf(c->device, sizeof c->device, "auto");
    c->recall_keys = 16;
    c->recall_values = 32;
    c->recall_facts = 1;
    c->recall_choices = 4;
    c->recall_filler_min = 1;
    c->recall_filler_max = 3;
    c->recall_min_distance = 1;
}

static void *at(train_config *c, const field *f) { return (char *)c + f->offset; }
static const void *at_const(const train_config *c, const field *f) { return (const char *)c + f->offset; }

static const field *find(const char *name) {
    for (int i = 0; i < n_fields; i++)
        if (!strcmp(fields[i].name, name))
            return &fields[i];
    return NULL;
}

/* Sets a field from a JSON value; 0 on success. */
static int set_json(train_config *c, const field *f, json_t *v, const char *where, FILE *err) {
    switch (f->type) {
    case F_INT:
    case F_I64: {
        if (!json_is_integer(v)) {
            fprintf(err, "%s: field %s wants an integer\n", where, f->name);
            return 1;
        }
        json_int_t x = json_integer_value(v);
        if (f->type == F_INT) {
            if (x < -2147483647LL - 1 || x > 2147483647LL) {
                fprintf(err, "%s: field %s = %lld is out of the int range\n", where, f->name, (long long)x);
                return 1;
            }
            *(int *)at(c, f) = (int)x;
        } else {
            *(int64_t *)at(c, f) = (int64_t)x;
        }
        return 0;
    }
    case F_FLOAT:
    case F_DOUBLE:
        if (!json_is_number(v)) {
            fprintf(err, "%s: field %s wants a number\n", where, f->name);
            return 1;
        }
        if (f->type == F_FLOAT)
            *(float *)at(c, f) = (float)json_number_value(v);
        else
            *(double *)at(c, f) = json_number_value(v);
        return 0;
    case F_BOOL:
        if (!json_is_boolean(v)) {
            fprintf(err, "%s: field %s wants true or false\n", where, f->name);
            return 1;
        }
        *(int *)at(c, f) = json_is_true(v);
        return 0;
    case F_STR: {
        if (!json_is_string(v)) {
            fprintf(err, "%s: field %s wants a string\n", where, f->name);
            return 1;
        }
        const char *s = json_string_value(v);
        if (strlen(s) >= f->cap) {
            fprintf(err, "%s: field %s is longer than %zu bytes\n", where, f->name, f->cap - 1);
            return 1;
        }
        snprintf((char *)at(c, f), f->cap, "%s", s);
        return 0;
    }
    }
    return 1;
}

static int load_object(train_config *c, json_t *root, const char *where, FILE *err) {
    if (!json_is_object(root)) {
        fprintf(err, "%s: the config must be a JSON object\n", where);
        return 1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        const field *f = find(key);
        if (!f) {
            fprintf(err, "%s: unknown field '%s' (see mnemo train --help)\n", where, key);
            return 1;
        }
        if (set_json(c, f, v, where, err))
            return 1;
    }
    return 0;
}

int train_config_load_file(train_config *c, const char *path, FILE *err) {
    json_error_t e;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    if (!root) {
        fprintf(err, "%s:%d: %s\n", path, e.line, e.text);
        return 1;
    }
    int rc = load_object(c, root, path, err);
    json_decref(root);
    return rc;
}

int train_config_load_string(train_config *c, const char *json, const char *where, FILE *err) {
    json_error_t e;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &e);
    if (!root) {
        fprintf(err, "%s: config JSON: %s\n", where, e.text);
        return 1;
    }
    int rc = load_object(c, root, where, err);
    json_decref(root);
    return rc;
}

char *train_config_to_json(const train_config *c, int indent) {
    json_t *root = json_object();
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
        }
        json_object_set_new(root, f->name, v);
    }
    /* JSON_REAL_PRECISION(17): doubles round-trip exactly through the checkpoint */
    char *s = json_dumps(root, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17) |
                                   (indent ? JSON_INDENT(indent) : JSON_COMPACT));
    json_decref(root);
    return s;
}

int train_config_n_options(void) { return n_fields; }

void train_config_options(struct option *opts, int first_id) {
    static char names[sizeof fields / sizeof fields[0]][64];
    for (int i = 0; i < n_fields; i++) {
        snprintf(names[i], sizeof names[i], "%s", fields[i].name);
        for (char *p = names[i]; *p; p++)
            if (*p == '_')
                *p = '-';
        opts[i].name = names[i];
        opts[i].has_arg = fields[i].type == F_BOOL ? no_argument : required_argument;
        opts[i].flag = NULL;
        opts[i].val = first_id + i;
    }
}

int train_config_set_option(train_config *c, int id, int first_id, const char *value, FILE *err) {
    int i = id - first_id;
    if (i < 0 || i >= n_fields)
        return 1;
    const field *f = &fields[i];
    char where[96];
    snprintf(where, sizeof where, "mnemo train: --%s", f->name);
    for (char *p = where + 14; *p; p++)
        if (*p == '_')
            *p = '-';
    char *end = NULL;
    switch (f->type) {
    case F_BOOL: *(int *)at(c, f) = 1; return 0;
    case F_STR:
        if (strlen(value) >= f->cap) {
            fprintf(err, "%s: longer than %zu bytes\n", where, f->cap - 1);
            return 1;
        }
        snprintf((char *)at(c, f), f->cap, "%s", value);
        return 0;
    case F_INT:
    case F_I64: {
        long long x = strtoll(value, &end, 10);
        if (!*value || *end || (f->type == F_INT && (x < -2147483647LL - 1 || x > 2147483647LL))) {
            fprintf(err, "%s wants an integer, got '%s'\n", where, value);
            return 1;
        }
        if (f->type == F_INT)
            *(int *)at(c, f) = (int)x;
        else
            *(int64_t *)at(c, f) = x;
        return 0;
    }
    case F_FLOAT:
    case F_DOUBLE: {
        double x = strtod(value, &end);
        if (!*value || *end || !isfinite(x)) {
            fprintf(err, "%s wants a finite number, got '%s'\n", where, value);
            return 1;
        }
        if (f->type == F_FLOAT)
            *(float *)at(c, f) = (float)x;
        else
            *(double *)at(c, f) = x;
        return 0;
    }
    }
    return 1;
}

void train_config_print_help(FILE *out) {
    train_config d;
    train_config_defaults(&d);
    for (int i = 0; i < n_fields; i++) {
        const field *f = &fields[i];
        char opt[64], def[TRAIN_PATH_CAP + 32];
        snprintf(opt, sizeof opt, "%s", f->name);
        for (char *p = opt; *p; p++)
            if (*p == '_')
                *p = '-';
        const void *v = at_const(&d, f);
        switch (f->type) {
        case F_INT: snprintf(def, sizeof def, "%d", *(const int *)v); break;
        case F_I64: snprintf(def, sizeof def, "%lld", (long long)*(const int64_t *)v); break;
        case F_FLOAT: snprintf(def, sizeof def, "%g", (double)*(const float *)v); break;
        case F_DOUBLE: snprintf(def, sizeof def, "%g", *(const double *)v); break;
        case F_BOOL: snprintf(def, sizeof def, "%s", *(const int *)v ? "on" : "off"); break;
        case F_STR: snprintf(def, sizeof def, "\"%s\"", (const char *)v); break;
        }
        fprintf(out, "  --%-24s %s%s (default %s)\n", opt, f->type == F_BOOL ? "(flag) " : "", f->help, def);
    }
}

/* ---------------------------------------------------------------- validation */
static int bad(FILE *err, const char *field, const char *why) {
    fprintf(err, "mnemo train: config field %s %s\n", field, why);
    return 1;
}

int train_config_validate(const train_config *c, FILE *err) {
    if (mn_config_validate(&c->model) != MN_OK) {
        fprintf(err, "mnemo train: %s\n", mn_last_error());
        return 1;
    }
    if (strcmp(c->task, "shards") && strcmp(c->task, "recall"))
        return bad(err, "task", "must be shards or recall");
    if (strcmp(c->device, "cpu") && strcmp(c->device, "cuda") && strcmp(c->device, "auto"))
        return bad(err, "device", "must be cpu, cuda or auto");
    if (c->batch < 1 || c->batch > 65536)
        return bad(err, "batch", "must be in 1..65536");
    if (c->turns < 2 || c->turns > 4096)
        return bad(err, "turns", "must be in 2..4096");
    if (c->grad_accum < 1 || c->grad_accum > c->batch)
        return bad(err, "grad_accum", "must be in 1..batch");
    if (c->batch % c->grad_accum)
        return bad(err, "grad_accum", "must divide batch");
    if (c->zero != 0 && c->zero != 1)
        return bad(err, "zero", "must be 0 or 1");
    if (!(c->comm_timeout >= 0))
        return bad(err, "comm_timeout", "must be >= 0");
    if (c->bptt < 1)
        return bad(err, "bptt", "must be >= 1");
    if (c->curriculum_start_turns < 1)
        return bad(err, "curriculum_start_turns", "must be >= 1");
    if (c->curriculum_stage_steps < 0)
        return bad(err, "curriculum_stage_steps", "must be >= 0");
    if (!(c->lr > 0) || !(c->min_lr >= 0) || c->min_lr > c->lr)
        return bad(err, "lr / min_lr", "must satisfy 0 <= min_lr <= lr, lr > 0");
    if (c->warmup_steps < 0)
        return bad(err, "warmup_steps", "must be >= 0");
    if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
        return bad(err, "beta1 / beta2", "must be in [0, 1)");
    if (!(c->eps > 0))
        return bad(err, "eps", "must be > 0");
    if (!(c->weight_decay >= 0))
        return bad(err, "weight_decay", "must be >= 0");
    if (!(c->grad_clip >= 0))
        return bad(err, "grad_clip", "must be >= 0");
    if (!(c->answer_weight > 0) || !(c->text_weight >= 0))
        return bad(err, "answer_weight / text_weight", "must be > 0 and >= 0");
    if (!(c->reconstruct_weight >= 0) || !isfinite(c->reconstruct_weight))
        return bad(err, "reconstruct_weight", "must be finite and >= 0");
    if (c->steps < 1)
        return bad(err, "steps", "must be >= 1");
    if (c->time_limit_s < 0)
        return bad(err, "time_limit_s", "must be >= 0");
    if (c->max_nan_steps < 1)
        return bad(err, "max_nan_steps", "must be >= 1");
    if (c->eval_interval < 0 || c->eval_batches < 0 || c->eval_probes < 0)
        return bad(err, "eval_interval / eval_batches / eval_probes", "must be >= 0");
    if (c->log_interval < 1)
        return bad(err, "log_interval", "must be >= 1");
    if (c->checkpoint_interval < 0)
        return bad(err, "checkpoint_interval", "must be >= 0");
    if (c->keep_checkpoints < 1)
        return bad(err, "keep_checkpoints", "must be >= 1");
    if (!c->run_dir[0])
        return bad(err, "run_dir", "must be set");
    if (c->threads < 0)
        return bad(err, "threads", "must be >= 0");
    if (!strcmp(c->task, "shards") && !c->train_data[0])
        return bad(err, "train_data", "must name a token shard for task shards");
    if (!strcmp(c->task, "recall") && (c->recall_min_distance < 1 || c->recall_min_distance > c->turns - 1))
        return bad(err, "recall_min_distance", "must be in 1..turns-1");
    return 0;
}
