/* GPT-2 import against Hugging Face (tests/fixtures/gpt2_tiny, written by
 * scripts/reference/gen_gpt2_fixture.py): token ids, logits without memory (plain GPT-2),
 * logits with R as k memory slots (HF on inputs_embeds = concat(R, wte[ids])), F16 / BF16
 * files, greedy generation; export back to a Hugging Face folder (round trip); the safetensors validation on damaged files; sampling. */
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/gpt2_import.h"
#include "core/h5util.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "mnemo.h"
#include "text/text_util.h"
#include "text/tokenizer.h"

#define SLOTS 4
#define TURN 60

static void ok(mn_status st) {
    if (st != MN_OK)
        fail_msg("%s: %s", mn_status_name(st), mn_last_error());
}

static const char *fx(const char *name) {
    static char paths[8][4096];
    static int next;
    char *p = paths[next++ % 8];
    const char *dir = getenv("MNEMO_FIXTURES");
    snprintf(p, 4096, "%s/gpt2_tiny/%s", dir ? dir : "tests/fixtures", name);
    return p;
}

static mn_model *import_fixture(const char *file, const char *config, int heads) {
    mn_gpt2_import_options o = mn_gpt2_import_defaults();
    o.config_json = config;
    o.n_heads = heads;
    o.n_slots = SLOTS;
    o.max_turn_tokens = TURN;
    o.n_comp_layers = 1;
    mn_model *m = NULL;
    mn_gpt2_info info;
    ok(mn_gpt2_import(fx(file), &o, &m, &info));
    assert_int_equal(info.n_layer, 2);
    assert_int_equal(info.n_embd, 32);
    assert_int_equal(info.n_head, 4);
    assert_int_equal(info.n_positions, 64);
    return m;
}

typedef struct {
    hid_t file;
    int32_t ids[128];
    int n;
} ref_case;

static int read_case(hid_t f, int i, ref_case *c) {
    char name[64];
    size_t n = 0;
    snprintf(name, sizeof name, "case%d/ids", i);
    if (!mn_h5_exists(f, name))
        return 0;
    ok(mn_h5_dataset_size(f, "reference.h5", name, &n));
    assert_true(n <= 128);
    ok(mn_h5_read_ints(f, "reference.h5", name, c->ids, n));
    c->n = (int)n;
    return 1;
}

static float *read_floats(hid_t f, const char *name, size_t n) {
    float *x = malloc(n * sizeof *x);
    ok(mn_h5_read_floats(f, "reference.h5", name, x, n));
    return x;
}

/* Worst |got - want| / (1e-5 max|want| + 1e-4 |want|): <= 1 means within 1e-4 relative (with
 * an absolute floor for logits near zero). Also reports the largest plain relative error of
 * logits away from zero, for the record. */
static double compare(const char *what, const float *got, const float *want, size_t n) {
    double scale = 0, ratio = 0, rel = 0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        double r = d / (1e-5 * scale + 1e-4 * fabs(want[i]));
        if (!(r <= ratio))
            ratio = r, worst = i;
        if (fabs(want[i]) > 0.1 * scale)
            rel = fmax(rel, d / fabs(want[i]));
    }
    print_message("%-34s worst ratio %.3g (1 = 1e-4 relative), max relative error %.2e over %zu logits\n", what,
                  ratio, rel, n);
    if (!(ratio <= 1.0))
        fail_msg("%s: element %zu is %.9g, HF says %.9g", what, worst, (double)got[worst], (double)want[worst]);
    return ratio;
}

/* ---------------------------------------------------------------- against HF */
static void test_token_ids(void **state) {
    (void)state;
    mn_tokenizer *tok = NULL;
    ok(mn_tokenizer_load_gpt2(fx("vocab.json"), fx("merges.txt"), &tok));
    hid_t f;
    ok(mn_h5_open_read(fx("reference.h5"), &f));
    int64_t vocab = 0;
    ok(mn_h5_read_attr_int(f, "reference.h5", "vocab_size", &vocab));
    assert_int_equal(mn_tokenizer_vocab_size(tok), vocab);
    ref_case c;
    int cases = 0;
    for (int i = 0; read_case(f, i, &c); i++, cases++) {
        char name[64], text[4096];
        snprintf(name, sizeof name, "case%d", i);
        /* the text is a variable-length string attribute */
        hid_t g = H5Gopen2(f, name, H5P_DEFAULT), a = H5Aopen(g, "text", H5P_DEFAULT);
        hid_t type = H5Aget_type(a);
        char *s = NULL;
        assert_true(H5Tis_variable_str(type) > 0);
        hid_t mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, H5T_VARIABLE);
        H5Tset_cset(mem, H5T_CSET_UTF8);
        assert_true(H5Aread(a, mem, &s) >= 0);
        snprintf(text, sizeof text, "%s", s);
        H5free_memory(s);
        H5Tclose(mem), H5Tclose(type), H5Aclose(a), H5Gclose(g);
        mn_ids ids = {0};
        ok(mn_tokenizer_encode(tok, text, strlen(text), &ids));
        int d = 0;
        while (d < c.n && d < ids.count && ids.ids[d] == c.ids[d])
            d++;
        if (ids.count != c.n || d != c.n)
            fail_msg("case %d: mnemo gives %lld ids, HF %d (first difference at %d)", i, (long long)ids.count, c.n, d);
        mn_ids_free(&ids);
    }
    assert_true(cases >= 10);
    H5Fclose(f);
    mn_tokenizer_free(tok);
}

static void test_logits_match_hf(void **state) {
    (void)state;
    mn_model *m = import_fixture("model.safetensors", fx("config.json"), 0);
    hid_t f;
    ok(mn_h5_open_read(fx("reference.h5"), &f));
    const int V = mn_model_config(m)->vocab_size;
    int compared = 0, memory = 0;
    ref_case c;
    for (int i = 0; read_case(f, i, &c); i++) {
        char name[64], label[64];
        snprintf(name, sizeof name, "case%d/logits", i);
        if (!mn_h5_exists(f, name))
            continue;
        size_t n = (size_t)c.n * V;
        float *want = read_floats(f, name, n), *got = malloc(n * sizeof *got);
        ok(mn_logits_no_memory(m, c.ids, c.n, got));
        snprintf(label, sizeof label, "case %d, no memory (%d tokens)", i, c.n);
        compare(label, got, want, n);
        free(want);
        compared++;
        snprintf(name, sizeof name, "case%d/memory", i);
        if (mn_h5_exists(f, name)) { /* R as k memory slots == HF on concat(R, wte[ids]) */
            float *r = read_floats(f, name, (size_t)SLOTS * 32);
            snprintf(name, sizeof name, "case%d/memory_logits", i);
            want = read_floats(f, name, n);
            ok(mn_logits(m, c.ids, c.n, r, got));
            snprintf(label, sizeof label, "case %d, R as %d slots", i, SLOTS);
            compare(label, got, want, n);
            free(r), free(want);
            memory++;
        }
        free(got);
    }
    assert_true(compared >= 4);
    assert_true(memory >= 2);
    H5Fclose(f);
    mn_model_free(m);
}

/* F16 without the prefix, with mask buffers, no config (heads given); BF16 with the prefix and
 * an explicit tied lm_head. Each against HF run on the same rounded weights. */
static void test_f16_bf16_files(void **state) {
    (void)state;
    mn_gpt2_info info;
    /* n_embd 32 cannot be split by the default n_embd / 64: it must ask for the head count */
    assert_int_equal(mn_gpt2_inspect(fx("model_f16.safetensors"), NULL, 0, &info), MN_ERR_CONFIG);
    assert_non_null(strstr(mn_last_error(), "config.json"));
    ok(mn_gpt2_inspect(fx("model_f16.safetensors"), NULL, 4, &info));
    assert_string_equal(info.prefix, "");
    assert_string_equal(info.dtype, "F16");
    assert_int_equal(info.has_lm_head, 0);
    ok(mn_gpt2_inspect(fx("model_bf16.safetensors"), NULL, 4, &info));
    assert_string_equal(info.prefix, "transformer.");
    assert_string_equal(info.dtype, "BF16");
    assert_int_equal(info.has_lm_head, 1);
    const char *files[2] = {"model_f16.safetensors", "model_bf16.safetensors"};
    const char *refs[2] = {"logits_f16", "logits_bf16"};
    hid_t f;
    ok(mn_h5_open_read(fx("reference.h5"), &f));
    for (int v = 0; v < 2; v++) {
        mn_model *m = import_fixture(files[v], NULL, 4);
        const int V = mn_model_config(m)->vocab_size;
        ref_case c;
        int found = 0;
        for (int i = 0; read_case(f, i, &c); i++) {
            char name[64];
            snprintf(name, sizeof name, "case%d/%s", i, refs[v]);
            if (!mn_h5_exists(f, name))
                continue;
            size_t rows = 0;
            ok(mn_h5_dataset_size(f, "reference.h5", name, &rows));
            rows /= (size_t)V;
            float *want = read_floats(f, name, rows * V), *got = malloc(rows * V * sizeof *got);
            ok(mn_logits_no_memory(m, c.ids, (int)rows, got));
            compare(files[v], got, want, rows * V);
            free(want), free(got);
            found++;
        }
        assert_int_equal(found, 1);
        mn_model_free(m);
    }
    H5Fclose(f);
}

static void test_greedy_generation_matches_hf(void **state) {
    (void)state;
    mn_model *m = import_fixture("model.safetensors", fx("config.json"), 0);
    hid_t f;
    ok(mn_h5_open_read(fx("reference.h5"), &f));
    size_t np = 0, nt = 0;
    ok(mn_h5_dataset_size(f, "reference.h5", "greedy/prompt", &np));
    ok(mn_h5_dataset_size(f, "reference.h5", "greedy/tokens", &nt));
    int32_t prompt[64], want[64], got[64];
    ok(mn_h5_read_ints(f, "reference.h5", "greedy/prompt", prompt, np));
    ok(mn_h5_read_ints(f, "reference.h5", "greedy/tokens", want, nt));
    mn_sampling greedy = {0.0f, 0, 1.0f};
    uint64_t rng = 1;
    int n = 0;
    ok(mn_generate(m, NULL, prompt, (int)np, (int)nt, NULL, 0, &greedy, &rng, got, &n));
    assert_int_equal(n, (int)nt);
    assert_memory_equal(got, want, nt * sizeof(int32_t));
    /* a stop token ends the turn and is kept */
    int32_t stop = want[np + 2];
    int first = (int)np;
    while (want[first] != stop)
        first++;
    ok(mn_generate(m, NULL, prompt, (int)np, (int)nt, &stop, 1, &greedy, &rng, got, &n));
    assert_int_equal(n, first + 1);
    assert_int_equal(got[n - 1], stop);
    /* limits: a turn read with memory holds at most N tokens, without at most k + N */
    float r[SLOTS * 32];
    ok(mn_initial_state(m, r));
    assert_int_equal(mn_generate(m, r, prompt, (int)np, TURN + 1, NULL, 0, &greedy, &rng, got, &n), MN_ERR_INVALID_ARG);
    H5Fclose(f);
    mn_model_free(m);
}

static void assert_rows_close(const float *a, const float *b, int V) {
    for (int i = 0; i < V; i++) /* one row through the lm head sums in another order than n rows */
        if (!(fabs((double)a[i] - b[i]) <= 1e-5 * (1.0 + fabs(b[i]))))
            fail_msg("logit %d: %.9g vs %.9g", i, (double)a[i], (double)b[i]);
}

/* mn_next_logits is the last row of mn_logits (with R) and of mn_logits_no_memory (without). */
static void test_next_logits(void **state) {
    (void)state;
    mn_model *m = import_fixture("model.safetensors", fx("config.json"), 0);
    const int V = mn_model_config(m)->vocab_size;
    int32_t toks[SLOTS + TURN];
    for (int i = 0; i < SLOTS + TURN; i++)
        toks[i] = (i * 37 + 5) % V;
    float *all = malloc((size_t)(SLOTS + TURN) * V * sizeof *all), *last = malloc((size_t)V * sizeof *last);
    float r[SLOTS * 32];
    ok(mn_initial_state(m, r));
    ok(mn_logits(m, toks, 17, r, all));
    ok(mn_next_logits(m, toks, 17, r, last));
    assert_rows_close(last, all + (size_t)16 * V, V);
    /* without memory, every one of the k + N positions is usable */
    ok(mn_logits_no_memory(m, toks, SLOTS + TURN, all));
    ok(mn_next_logits(m, toks, SLOTS + TURN, NULL, last));
    assert_rows_close(last, all + (size_t)(SLOTS + TURN - 1) * V, V);
    assert_int_equal(mn_logits_no_memory(m, toks, SLOTS + TURN + 1, all), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_next_logits(m, toks, TURN + 1, r, last), MN_ERR_INVALID_ARG);
    toks[3] = V;
    assert_int_equal(mn_logits_no_memory(m, toks, 5, all), MN_ERR_INVALID_ARG);
    free(all), free(last);
    mn_model_free(m);
}

/* ---------------------------------------------------------------- damaged files */
typedef struct {
    uint8_t *bytes;
    size_t n, data_at;
    json_t *header;
} st_file;

static void st_read(const char *path, st_file *s) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    s->n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    s->bytes = malloc(s->n);
    assert_int_equal(fread(s->bytes, 1, s->n, f), s->n);
    fclose(f);
    uint64_t h;
    memcpy(&h, s->bytes, 8);
    s->data_at = 8 + (size_t)h;
    s->header = json_loadb((const char *)s->bytes + 8, (size_t)h, 0, NULL);
    assert_non_null(s->header);
}

/* Writes header + the original data (cut by `trim` bytes) + extra bytes. */
static void st_write(const char *path, const st_file *s, json_t *header, size_t trim, const void *extra, size_t n_extra) {
    char *json = json_dumps(header, JSON_COMPACT);
    uint64_t h = strlen(json);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(&h, 8, 1, f);
    fwrite(json, 1, h, f);
    fwrite(s->bytes + s->data_at, 1, s->n - s->data_at - trim, f);
    if (n_extra)
        fwrite(extra, 1, n_extra, f);
    fclose(f);
    free(json);
}

/* Writes the file without tensor `name`: its bytes cut out, the offsets after them moved down
 * (a valid safetensors file that lacks the tensor). */
static void st_write_without(const char *path, const st_file *s, const char *name) {
    json_t *h = json_deep_copy(s->header);
    json_t *offsets = json_object_get(json_object_get(h, name), "data_offsets");
    assert_non_null(offsets);
    json_int_t b = json_integer_value(json_array_get(offsets, 0)), e = json_integer_value(json_array_get(offsets, 1));
    json_object_del(h, name);
    const char *key;
    json_t *value;
    json_object_foreach(h, key, value) {
        json_t *o = json_object_get(value, "data_offsets");
        if (o && json_integer_value(json_array_get(o, 0)) >= e)
            for (size_t i = 0; i < 2; i++)
                json_array_set_new(o, i, json_integer(json_integer_value(json_array_get(o, i)) - (e - b)));
    }
    const uint8_t *data = s->bytes + s->data_at;
    size_t data_len = s->n - s->data_at;
    st_file cut = {.bytes = malloc(s->n), .n = s->n - (size_t)(e - b), .data_at = s->data_at};
    assert_non_null(cut.bytes);
    memcpy(cut.bytes + cut.data_at, data, (size_t)b);
    memcpy(cut.bytes + cut.data_at + b, data + e, data_len - (size_t)e);
    st_write(path, &cut, h, 0, NULL, 0);
    free(cut.bytes);
    json_decref(h);
}

static void expect_refused(const char *path, mn_status want, const char *needle1, const char *needle2) {
    mn_gpt2_info info;
    mn_status st = mn_gpt2_inspect(path, NULL, 4, &info);
    if (st == MN_OK) { /* some damage only shows when the weights are read */
        mn_gpt2_import_options o = mn_gpt2_import_defaults();
        o.n_heads = 4, o.n_slots = SLOTS, o.max_turn_tokens = TURN, o.n_comp_layers = 1;
        mn_model *m = NULL;
        st = mn_gpt2_import(path, &o, &m, NULL);
        mn_model_free(m);
    }
    if (st != want)
        fail_msg("%s: got %s (%s), want %s", path, mn_status_name(st), mn_last_error(), mn_status_name(want));
    const char *msg = mn_last_error();
    if (!strstr(msg, path) || (needle1 && !strstr(msg, needle1)) || (needle2 && !strstr(msg, needle2)))
        fail_msg("message does not name the file and '%s' / '%s': %s", needle1 ? needle1 : "",
                 needle2 ? needle2 : "", msg);
}

static json_t *entry(json_t *h, const char *name) {
    json_t *e = json_object_get(h, name);
    assert_non_null(e);
    return e;
}

static void test_bad_files(void **state) {
    (void)state;
    char dir[] = "/tmp/mnemo-gpt2-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    st_file s;
    st_read(fx("model.safetensors"), &s);
    json_t *h;

    /* truncated: the last tensor's data runs past the end */
    st_write(path, &s, s.header, 100, NULL, 0);
    expect_refused(path, MN_ERR_FORMAT, "truncated", "transformer.");
    /* bytes after the last tensor's data, and bytes that belong to no tensor (a hole where
     * the first tensor was): the format indexes its whole data section */
    st_write(path, &s, s.header, 0, "JUNK", 4);
    expect_refused(path, MN_ERR_FORMAT, "4 trailing bytes", NULL);
    h = json_deep_copy(s.header);
    const char *key;
    json_t *value;
    void *tmp;
    json_object_foreach_safe(h, tmp, key, value) {
        json_t *offsets = json_object_get(value, "data_offsets");
        if (offsets && json_integer_value(json_array_get(offsets, 0)) == 0 &&
            json_integer_value(json_array_get(offsets, 1)) > 0)
            json_object_del(h, key);
    }
    st_write(path, &s, h, 0, NULL, 0);
    json_decref(h);
    expect_refused(path, MN_ERR_FORMAT, "belong to no tensor", "[0, ");
    /* a header length beyond the file */
    FILE *f = fopen(path, "r+b");
    uint64_t huge = (uint64_t)s.n * 2;
    fwrite(&huge, 8, 1, f);
    fclose(f);
    expect_refused(path, MN_ERR_FORMAT, "header length", NULL);
    /* too short to be anything */
    f = fopen(path, "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    expect_refused(path, MN_ERR_FORMAT, "too short", NULL);
    /* broken JSON */
    f = fopen(path, "wb");
    const char *broken = "{\"wte.weight\": {\"dtype\": \"F32\", ";
    uint64_t bl = strlen(broken);
    fwrite(&bl, 8, 1, f);
    fwrite(broken, 1, bl, f);
    fclose(f);
    expect_refused(path, MN_ERR_FORMAT, "not valid JSON", NULL);

    /* a GPT-2 shape mistake: c_attn stored transposed (same byte count) */
    h = json_deep_copy(s.header);
    json_object_set_new(entry(h, "transformer.h.1.attn.c_attn.weight"), "shape", json_pack("[ii]", 96, 32));
    st_write(path, &s, h, 0, NULL, 0);
    json_decref(h);
    expect_refused(path, MN_ERR_FORMAT, "transformer.h.1.attn.c_attn.weight", "[96, 32], GPT-2 needs [32, 96]");
    /* a shape that does not match its bytes */
    h = json_deep_copy(s.header);
    json_object_set_new(entry(h, "transformer.ln_f.bias"), "shape", json_pack("[i]", 31));
    st_write(path, &s, h, 0, NULL, 0);
    json_decref(h);
    expect_refused(path, MN_ERR_FORMAT, "transformer.ln_f.bias", "shape and dtype");
    /* an integer dtype for a weight, and an unknown dtype */
    h = json_deep_copy(s.header);
    json_object_set_new(entry(h, "transformer.ln_f.weight"), "dtype", json_string("I32"));
    st_write(path, &s, h, 0, NULL, 0);
    json_decref(h);
    expect_refused(path, MN_ERR_FORMAT, "transformer.ln_f.weight", "dtype I32");
    h = json_deep_copy(s.header);
    json_object_set_new(entry(h, "transformer.ln_f.weight"), "dtype", json_string("Q4"));
    st_write(path, &s, h, 0, NULL, 0);
    json_decref(h);
    expect_refused(path, MN_ERR_FORMAT, "transformer.ln_f.weight", "unknown dtype");
    /* two tensors sharing bytes */
    h = json_deep_copy(s.header);
    json_object_set(entry(h, "transformer.ln_f.bias"), "data_offsets",
                    json_object_get(entry(h, "transformer.ln_f.weight"), "data_offsets"));
    st_write(path, &s, h, 0, NULL, 0);
    json_decref(h);
    expect_refused(path, MN_ERR_FORMAT, "overlap", "transformer.ln_f.");
    /* a missing tensor, an unexpected one, and a file that is not GPT-2 at all */
    st_write_without(path, &s, "transformer.h.1.mlp.c_fc.bias");
    expect_refused(path, MN_ERR_FORMAT, "transformer.h.1.mlp.c_fc.bias", "missing");
    h = json_deep_copy(s.header);
    json_object_set_new(h, "transformer.h.0.adapter.weight", json_pack("{s:s,s:[i],s:[ii]}", "dtype", "F32", "shape", 0,
                                                                       "data_offsets", 0, 0));
    st_write(path, &s, h, 0, NULL, 0);
    json_decref(h);
    expect_refused(path, MN_ERR_FORMAT, "transformer.h.0.adapter.weight", "unexpected");
    h = json_deep_copy(s.header);
    json_object_set(h, "transformer.embed.weight", entry(h, "transformer.wte.weight"));
    json_object_del(h, "transformer.wte.weight");
    st_write(path, &s, h, 0, NULL, 0);
    json_decref(h);
    expect_refused(path, MN_ERR_FORMAT, "not a GPT-2 checkpoint", NULL);

    /* an untied lm_head: appended, equal to wte but for one value */
    json_t *wte = entry(s.header, "transformer.wte.weight");
    size_t b = (size_t)json_integer_value(json_array_get(json_object_get(wte, "data_offsets"), 0));
    size_t e = (size_t)json_integer_value(json_array_get(json_object_get(wte, "data_offsets"), 1));
    size_t data_len = s.n - s.data_at;
    uint8_t *head = malloc(e - b);
    memcpy(head, s.bytes + s.data_at + b, e - b);
    float one = 1.0f;
    memcpy(head + 40, &one, 4);
    h = json_deep_copy(s.header);
    json_object_set_new(h, "lm_head.weight", json_pack("{s:s,s:O,s:[II]}", "dtype", "F32", "shape",
                                                       json_object_get(wte, "shape"), "data_offsets",
                                                       (json_int_t)data_len, (json_int_t)(data_len + e - b)));
    st_write(path, &s, h, 0, head, e - b);
    expect_refused(path, MN_ERR_MISMATCH, "lm_head.weight", "untied");
    memcpy(head, s.bytes + s.data_at + b, e - b); /* tied again: accepted */
    st_write(path, &s, h, 0, head, e - b);
    mn_gpt2_info info;
    ok(mn_gpt2_inspect(path, NULL, 4, &info));
    assert_int_equal(info.has_lm_head, 1);
    json_decref(h);
    free(head);

    /* a NaN weight */
    json_t *lnf = entry(s.header, "transformer.ln_f.bias");
    size_t at = s.data_at + (size_t)json_integer_value(json_array_get(json_object_get(lnf, "data_offsets"), 0));
    float nan = NAN, saved;
    memcpy(&saved, s.bytes + at + 8, 4);
    memcpy(s.bytes + at + 8, &nan, 4);
    st_write(path, &s, s.header, 0, NULL, 0);
    memcpy(s.bytes + at + 8, &saved, 4);
    expect_refused(path, MN_ERR_NUMERIC, "transformer.ln_f.bias", "non-finite");

    /* config.json that disagrees with the tensors, or describes another activation */
    char cfg[160];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    const char *configs[2] = {"{\"model_type\": \"gpt2\", \"n_layer\": 3, \"n_head\": 4}",
                              "{\"n_head\": 4, \"activation_function\": \"relu\"}"};
    const char *needles[2] = {"n_layer is 3", "activation_function"};
    for (int i = 0; i < 2; i++) {
        f = fopen(cfg, "w");
        fputs(configs[i], f);
        fclose(f);
        assert_int_equal(mn_gpt2_inspect(fx("model.safetensors"), cfg, 0, &info), MN_ERR_MISMATCH);
        assert_non_null(strstr(mn_last_error(), needles[i]));
    }
    /* a config.json that is missing, or not JSON: one reason, naming the file and the cause */
    unlink(cfg);
    assert_int_equal(mn_gpt2_inspect(fx("model.safetensors"), cfg, 0, &info), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), cfg));
    assert_non_null(strstr(mn_last_error(), ": cannot open: No such file or directory"));
    assert_null(strstr(mn_last_error(), ":-1:"));
    f = fopen(cfg, "w");
    fputs("{\"n_head\": 4,\n\"n_layer\": }", f);
    fclose(f);
    assert_int_equal(mn_gpt2_inspect(fx("model.safetensors"), cfg, 0, &info), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), ":2: invalid JSON"));
    /* a decoder of another size cannot be loaded into a model */
    mn_config small = {.vocab_size = 420, .d_model = 32, .n_heads = 4, .n_layers = 1, .n_comp_layers = 1,
                       .n_slots = SLOTS, .max_turn_tokens = TURN, .gate_bias_init = -2.0f};
    mn_model *m = NULL;
    ok(mn_model_create(&small, &m));
    assert_int_equal(mn_gpt2_load_decoder(fx("model.safetensors"), m), MN_ERR_MISMATCH);
    mn_model_free(m);
    small.n_layers = 2, small.max_turn_tokens = 61; /* k + N = 65 > 64 positions */
    ok(mn_model_create(&small, &m));
    assert_int_equal(mn_gpt2_load_decoder(fx("model.safetensors"), m), MN_ERR_CONFIG);
    mn_model_free(m);

    json_decref(s.header);
    free(s.bytes);
    unlink(path);
    unlink(cfg);
    rmdir(dir);
}

static void test_half_conversions(void **state) {
    (void)state;
    assert_true(mn_f16_to_f32(0x3c00) == 1.0f);
    assert_true(mn_f16_to_f32(0xc000) == -2.0f);
    assert_true(mn_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(mn_f16_to_f32(0x0001) == ldexpf(1.0f, -24)); /* smallest subnormal */
    assert_true(mn_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    assert_true(mn_f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    assert_true(isinf(mn_f16_to_f32(0xfc00)) && mn_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(mn_f16_to_f32(0x7e00)));
    assert_true(signbit(mn_f16_to_f32(0x8000)) && mn_f16_to_f32(0x8000) == 0.0f);
    assert_true(mn_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(mn_bf16_to_f32(0xc040) == -3.0f);
}

/* ---------------------------------------------------------------- sampling */
static int count_draws(const float *logits, int V, mn_sampling sp, uint64_t seed, int n, int *counts) {
    memset(counts, 0, (size_t)V * sizeof *counts);
    for (int i = 0; i < n; i++) {
        int32_t t = -1;
        ok(mn_sample(logits, V, &sp, &seed, &t));
        assert_true(t >= 0 && t < V);
        counts[t]++;
    }
    return n;
}

static void test_sampling(void **state) {
    (void)state;
    const double p[5] = {0.5, 0.3, 0.15, 0.05, 0.0};
    float logits[5];
    for (int i = 0; i < 4; i++)
        logits[i] = (float)log(p[i]) + 3.0f; /* a shift changes nothing */
    logits[4] = -1e30f;
    int counts[5];
    const int n = 40000;
    /* temperature 1: the softmax itself */
    count_draws(logits, 5, (mn_sampling){1.0f, 0, 1.0f}, 11, n, counts);
    for (int i = 0; i < 5; i++)
        assert_true(fabs(counts[i] / (double)n - p[i]) < 0.01);
    /* temperature 0.5 squares the probabilities */
    double sq = 0.25 + 0.09 + 0.0225 + 0.0025;
    count_draws(logits, 5, (mn_sampling){0.5f, 0, 1.0f}, 12, n, counts);
    for (int i = 0; i < 4; i++)
        assert_true(fabs(counts[i] / (double)n - p[i] * p[i] / sq) < 0.01);
    /* top-k 2 renormalises over the two best */
    count_draws(logits, 5, (mn_sampling){1.0f, 2, 1.0f}, 13, n, counts);
    assert_int_equal(counts[2] + counts[3] + counts[4], 0);
    assert_true(fabs(counts[0] / (double)n - 0.625) < 0.01);
    /* top-p 0.7: 0.5 is not enough, 0.5 + 0.3 is */
    count_draws(logits, 5, (mn_sampling){1.0f, 0, 0.7f}, 14, n, counts);
    assert_int_equal(counts[2] + counts[3] + counts[4], 0);
    assert_true(counts[1] > n / 4);
    count_draws(logits, 5, (mn_sampling){1.0f, 0, 0.45f}, 15, 1000, counts);
    assert_int_equal(counts[0], 1000);
    count_draws(logits, 5, (mn_sampling){5.0f, 1, 1.0f}, 16, 1000, counts);
    assert_int_equal(counts[0], 1000);
    /* greedy: argmax, ties to the lower id */
    float tied[4] = {1.0f, 3.0f, 3.0f, 2.0f};
    int32_t t = -1;
    uint64_t rng = 5, before = rng;
    ok(mn_sample(tied, 4, &(mn_sampling){0.0f, 0, 1.0f}, &rng, &t));
    assert_int_equal(t, 1);
    /* the same state draws the same token, and the state moves */
    int32_t a, b;
    rng = before;
    ok(mn_sample(logits, 5, &(mn_sampling){1.0f, 0, 1.0f}, &rng, &a));
    assert_true(rng != before);
    rng = before;
    ok(mn_sample(logits, 5, &(mn_sampling){1.0f, 0, 1.0f}, &rng, &b));
    assert_int_equal(a, b);
    /* bad input */
    assert_int_equal(mn_sample(logits, 5, &(mn_sampling){1.0f, 0, 0.0f}, &rng, &t), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_sample(logits, 5, &(mn_sampling){-1.0f, 0, 1.0f}, &rng, &t), MN_ERR_INVALID_ARG);
    logits[2] = NAN;
    assert_int_equal(mn_sample(logits, 5, &(mn_sampling){1.0f, 0, 1.0f}, &rng, &t), MN_ERR_NUMERIC);
}

/* The bytes of a file, or fails the test. */
static char *slurp(const char *path, size_t *len) {
    char *buf = NULL;
    ok(mn_file_read_all(path, &buf, len));
    return buf;
}

static int same_file(const char *a, const char *b) {
    size_t la = 0, lb = 0;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    int same = la == lb && !memcmp(x, y, la);
    free(x);
    free(y);
    return same;
}

/* mnemo export-hf (mn_export_hf): import, export, import again gives the same parameters bit for
 * bit (the compressor from the same seed), the same tokenizer (hash), and vocab.json and
 * merges.txt byte for byte those the fixture started from; a checkpoint with mnemo's own
 * tokenizer, or none, or a missing one, is refused with a message naming it. */
static void test_export_hf_round_trip(void **state) {
    (void)state;
    char dir[] = "/tmp/mnemo-export-XXXXXX", ckpt[128], out[128], path[160], vocab[160];
    assert_non_null(mkdtemp(dir));
    snprintf(ckpt, sizeof ckpt, "%s/base.h5", dir);
    snprintf(out, sizeof out, "%s/hf", dir);
    mn_model *m = import_fixture("model.safetensors", fx("config.json"), 0);
    mn_tokenizer *tok = NULL;
    ok(mn_tokenizer_load_gpt2(fx("vocab.json"), fx("merges.txt"), &tok));
    mn_checkpoint_save_options so = {.tokenizer = tok};
    ok(mn_checkpoint_save(ckpt, m, NULL, NULL, &so));
    ok(mn_export_hf(ckpt, out));

    snprintf(vocab, sizeof vocab, "%s/vocab.json", out);
    snprintf(path, sizeof path, "%s/merges.txt", out);
    assert_true(same_file(vocab, fx("vocab.json")));
    assert_true(same_file(path, fx("merges.txt")));
    mn_tokenizer *back_tok = NULL;
    ok(mn_tokenizer_load_gpt2(vocab, path, &back_tok));
    assert_true(mn_tokenizer_hash(back_tok) == mn_tokenizer_hash(tok));

    mn_gpt2_import_options o = mn_gpt2_import_defaults();
    snprintf(path, sizeof path, "%s/config.json", out);
    o.config_json = path; /* the exported config must pass the importer's checks */
    o.n_slots = SLOTS;
    o.max_turn_tokens = TURN;
    o.n_comp_layers = 1;
    mn_model *back = NULL;
    mn_gpt2_info info;
    snprintf(vocab, sizeof vocab, "%s/model.safetensors", out);
    ok(mn_gpt2_import(vocab, &o, &back, &info));
    assert_string_equal(info.prefix, "transformer.");
    assert_string_equal(info.heads_from, "config.json");
    assert_int_equal(info.n_positions, SLOTS + TURN);
    assert_int_equal(mn_model_num_params(back), mn_model_num_params(m));
    assert_memory_equal(mn_model_params(back), mn_model_params(m), mn_model_num_params(m) * sizeof(float));

    /* mnemo's own tokenizer has no GPT-2 files */
    const char *texts[] = {"hello there, hello again", "general kenobi"};
    mn_tokenizer *own = NULL;
    ok(mn_tokenizer_train_texts(texts, NULL, 2, 300, &own));
    assert_int_equal(mn_tokenizer_special_id(own, "<|eot|>"), MN_TOK_SPECIAL_BASE + MN_TOK_EOT);
    assert_int_equal(mn_tokenizer_special_id(own, "<|nope|>"), -1);
    assert_int_equal(mn_tokenizer_special_id(tok, "<|eot|>"), -1);
    so.tokenizer = own;
    ok(mn_checkpoint_save(ckpt, m, NULL, NULL, &so));
    assert_int_equal(mn_export_hf(ckpt, out), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "mnemo-bpe"));
    assert_non_null(strstr(mn_last_error(), ckpt));
    so.tokenizer = NULL;
    ok(mn_checkpoint_save(ckpt, m, NULL, NULL, &so));
    assert_int_equal(mn_export_hf(ckpt, out), MN_ERR_INVALID_ARG);
    assert_non_null(strstr(mn_last_error(), "no tokenizer"));
    snprintf(path, sizeof path, "%s/missing.h5", dir);
    assert_int_equal(mn_export_hf(path, out), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "missing.h5"));

    const char *names[] = {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", out, names[i]);
        assert_int_equal(unlink(path), 0);
    }
    assert_int_equal(rmdir(out), 0);
    assert_int_equal(unlink(ckpt), 0);
    assert_int_equal(rmdir(dir), 0);
    mn_tokenizer_free(own);
    mn_tokenizer_free(back_tok);
    mn_tokenizer_free(tok);
    mn_model_free(back);
    mn_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_ids),
        cmocka_unit_test(test_logits_match_hf),
        cmocka_unit_test(test_f16_bf16_files),
        cmocka_unit_test(test_greedy_generation_matches_hf),
        cmocka_unit_test(test_next_logits),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_half_conversions),
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_export_hf_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
