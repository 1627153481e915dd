/* Seed inputs for the fuzz targets of file loaders, written by the library's own writers so
 * that they stay valid as the formats change: `fuzz_seeds DIR` fills DIR/corpus_<target>/
 * with small valid files (a checkpoint with every part, tokenizer files, a session store
 * packed as fuzz_session_store reads it, a token shard, safetensors, a training config, MSC
 * personas). The hand-written fixtures (dialogue files, probe templates, recipes) are copied
 * by scripts/fuzz. Built and run by scripts/fuzz. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "mnemo.h"
#include "mnemo_train.h"
#include "session_pack.h"
#include "text/dialogue.h"
#include "text/shard.h"
#include "text/tokenizer.h"

static const char *root;

static void check(mn_status st, const char *what) {
    if (st != MN_OK) {
        fprintf(stderr, "fuzz_seeds: %s: %s\n", what, mn_last_error());
        exit(1);
    }
}

/* root/corpus_<target>/<name> (the folder made on the way). */
static const char *seed_path(const char *target, const char *name) {
    static char path[1024];
    snprintf(path, sizeof path, "%s/corpus_%s", root, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz_seeds: cannot create %s: %s\n", path, strerror(errno));
        exit(1);
    }
    snprintf(path, sizeof path, "%s/corpus_%s/%s", root, target, name);
    return path;
}

static void write_seed(const char *target, const char *name, const void *data, size_t size) {
    const char *path = seed_path(target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        fprintf(stderr, "fuzz_seeds: cannot write %s\n", path);
        exit(1);
    }
}

static char *read_whole(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz_seeds: cannot read %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
        exit(1);
    buf[n] = '\0';
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static mn_tokenizer *small_tokenizer(void) {
    static const char *const texts[] = {
        "Hi! I just moved to Lisbon. Oh nice, how do you like it?",
        "My sister works at the aquarium; the tram is lovely, the flat tiny.",
        "Remember: Thursday at nine, room B-204. Café crème 東京",
    };
    mn_tokenizer *tok = NULL;
    check(mn_tokenizer_train_texts(texts, NULL, 3, 300, &tok), "tokenizer");
    return tok;
}

/* A checkpoint with every part (moments, loop state, data-parallel cursors, training config,
 * tokenizer), and one with the parameters only. */
static void checkpoints(mn_tokenizer *tok) {
    mn_config cfg = {.vocab_size = mn_tokenizer_vocab_size(tok), .d_model = 8, .n_heads = 2, .n_layers = 1,
                     .n_comp_layers = 1, .n_slots = 2, .max_turn_tokens = 8, .gate_bias_init = -2.0f};
    mn_model *model = NULL;
    mn_trainer *trainer = NULL;
    check(mn_model_create(&cfg, &model), "model");
    check(mn_model_init(model, 1), "init");
    check(mn_trainer_create(model, 1, 1, &trainer), "trainer");
    mn_trainer_set_step(trainer, 3);
    mn_train_config tc;
    mn_train_config_defaults(&tc);
    tc.model = cfg;
    char *json = mn_train_config_to_json(&tc, 0);
    uint64_t cursors[2 * MN_DIST_CURSOR_FIELDS] = {0, 5, 0, 2, 0, 5, 2, 2};
    mn_checkpoint_dist dist = {.world_size = 2, .zero_stage = 1, .grad_accum = 1, .rank_cursors = cursors};
    mn_train_state state = {.step = 3, .tokens_seen = 96, .rng = {1, 2, 3, 4}, .data_epoch = 0, .data_position = 5};
    mn_checkpoint_save_options so = {.train_config_json = json, .tokenizer = tok, .dist = &dist};
    check(mn_checkpoint_save(seed_path("checkpoint", "full.h5"), model, trainer, &state, &so), "checkpoint");
    check(mn_checkpoint_save(seed_path("checkpoint", "params.h5"), model, NULL, NULL, NULL), "checkpoint");
    free(json);
    mn_trainer_free(trainer);
    mn_model_free(model);
}

static void tokenizer_files(mn_tokenizer *tok, const char *fixtures) {
    check(mn_tokenizer_save_file(tok, seed_path("tokenizer_file", "mnemo-bpe.h5")), "tokenizer file");
    char vocab[1024], merges[1024];
    snprintf(vocab, sizeof vocab, "%s/gpt2_tiny/vocab.json", fixtures); /* 420 ids: a small file */
    snprintf(merges, sizeof merges, "%s/gpt2_tiny/merges.txt", fixtures);
    mn_tokenizer *gpt2 = NULL;
    check(mn_tokenizer_load_gpt2(vocab, merges, &gpt2), "gpt2 tokenizer");
    check(mn_tokenizer_save_file(gpt2, seed_path("tokenizer_file", "gpt2.h5")), "tokenizer file");
    mn_tokenizer_free(gpt2);
}

/* A store whose snapshot holds sessions and whose journal holds later puts and a delete,
 * packed with each combination of fuzz_session_store's flags; and a store just created. */
static void session_stores(void) {
    char dir[] = "/tmp/mnemo-seeds-XXXXXX";
    if (!mkdtemp(dir))
        exit(1);
    char path[256], journal[300], lock[300];
    snprintf(path, sizeof path, "%s/store.h5", dir);
    snprintf(journal, sizeof journal, "%s%s", path, ".journal");
    snprintf(lock, sizeof lock, "%s%s", path, ".lock");
    for (int filled = 0; filled < 2; filled++) {
        mn_session_store *s = NULL;
        check(mn_session_store_open(path, MN_STORE_WRITE | MN_STORE_CREATE | MN_STORE_NO_SYNC, 2, 4, &s), "store");
        if (filled) {
            float r[8] = {0.5f, -1, 2, 0.25f, 3, -0.5f, 1, 0};
            check(mn_session_put(s, "alice", 11, r, 4), "put");
            check(mn_session_put(s, "bob", 11, r, 2), "put");
            check(mn_session_put(s, "carol\tx", 12, r, 6), "put");
            check(mn_session_store_compact(s), "compact");
            r[0] = 9;
            check(mn_session_put(s, "alice", 11, r, 6), "put");
            check(mn_session_put(s, "dave", 11, r, 1), "put");
            check(mn_session_delete(s, "bob", NULL), "delete");
        }
        mn_session_store_close(s);
        size_t snap_n, journal_n;
        char *snap = read_whole(path, &snap_n), *jour = read_whole(journal, &journal_n);
        for (int flags = 0; flags < 8; flags++) {
            size_t n;
            uint8_t *packed = fuzz_session_pack(flags, snap, snap_n, jour, journal_n, &n);
            char name[64];
            snprintf(name, sizeof name, "%s-flags%d", filled ? "filled" : "new", flags);
            write_seed("session_store", name, packed, n);
            free(packed);
        }
        free(snap), free(jour);
        unlink(path), unlink(journal), unlink(lock);
    }
    rmdir(dir);
}

static void shards(mn_tokenizer *tok) {
    static const char jsonl[] =
        "{\"id\": \"d1\", \"turns\": [{\"speaker\": \"A\", \"text\": \"Hi! I just moved to Lisbon.\"},"
        " {\"speaker\": \"B\", \"text\": \"Oh nice, how do you like it? The tram is lovely.\", \"session\": 1},"
        " {\"speaker\": \"A\", \"text\": \"My sister works at the aquarium.\"}],"
        " \"probes\": [{\"after\": 3, \"question\": \"Where did I move to?\", \"answer\": \"Lisbon\","
        " \"choices\": [\"Lisbon\", \"Porto\"]}]}\n"
        "{\"id\": \"d2\", \"turns\": [{\"speaker\": \"X\", \"text\": \"Thursday at nine, room B-204.\"},"
        " {\"speaker\": \"Y\", \"text\": \"Noted.\"}]}\n";
    mn_dialogue_list list = {0};
    check(mn_jsonl_read_buffer("seed.jsonl", jsonl, sizeof jsonl - 1, 1, NULL, &list, NULL), "dialogues");
    mn_render_options ro = mn_render_options_default();
    ro.max_turn_tokens = 8; /* long turns split */
    check(mn_shard_write_dialogues(seed_path("shard", "probes.shard"), tok, &list, &ro, NULL), "shard");
    ro.include_probes = 0;
    ro.max_turn_tokens = 64;
    check(mn_shard_write_dialogues(seed_path("shard", "plain.shard"), tok, &list, &ro, NULL), "shard");
    mn_dialogue_list_free(&list);
}

/* ---- safetensors, built by hand: the library has no writer */
typedef struct {
    char json[8192];
    size_t json_n;
    uint8_t data[65536];
    size_t data_n;
} st_file;

static void put_half(uint8_t *p, float v, const char *dtype) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    uint16_t h;
    if (!strcmp(dtype, "BF16")) {
        h = (uint16_t)(bits >> 16);
    } else { /* F16 of small normal values: rebias the exponent, drop mantissa bits */
        uint32_t sign = bits >> 31, exp = (bits >> 23) & 0xff, man = bits & 0x7fffff;
        h = v == 0 ? 0 : (uint16_t)(sign << 15 | (exp - 127 + 15) << 10 | man >> 13);
    }
    memcpy(p, &h, 2);
}

/* Appends tensor name of the given shape, its values a small deterministic pattern. */
static void st_add(st_file *f, const char *name, const char *dtype, int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    size_t width = strcmp(dtype, "F32") ? 2 : 4, begin = f->data_n;
    for (int64_t i = 0; i < n; i++) {
        float v = 0.02f * (float)((i * 7 + 3) % 11) - 0.1f;
        if (strstr(name, "ln_") && strstr(name, "weight"))
            v = 1.0f;
        if (width == 4)
            memcpy(f->data + f->data_n, &v, 4);
        else
            put_half(f->data + f->data_n, v, dtype);
        f->data_n += width;
    }
    f->json_n += (size_t)snprintf(f->json + f->json_n, sizeof f->json - f->json_n,
                                  "%s\"%s\": {\"dtype\": \"%s\", \"shape\": [", f->json_n > 1 ? ", " : "", name, dtype);
    for (int i = 0; i < ndim; i++)
        f->json_n += (size_t)snprintf(f->json + f->json_n, sizeof f->json - f->json_n, "%s%lld", i ? ", " : "",
                                      (long long)shape[i]);
    f->json_n += (size_t)snprintf(f->json + f->json_n, sizeof f->json - f->json_n,
                                  "], \"data_offsets\": [%zu, %zu]}", begin, f->data_n);
}

static void st_write(st_file *f, const char *name) {
    f->json_n += (size_t)snprintf(f->json + f->json_n, sizeof f->json - f->json_n,
                                  ", \"__metadata__\": {\"format\": \"pt\"}}");
    while (f->json_n % 8)
        f->json[f->json_n++] = ' ';
    size_t n = 8 + f->json_n + f->data_n;
    uint8_t *out = malloc(n);
    uint64_t len = f->json_n;
    memcpy(out, &len, 8);
    memcpy(out + 8, f->json, f->json_n);
    memcpy(out + 8 + f->json_n, f->data, f->data_n);
    write_seed("safetensors", name, out, n);
    free(out);
}

/* A one-layer GPT-2 (n_embd 4, 8 tokens, 16 positions) in each float dtype; and a file of odd
 * shapes and dtypes. */
static void safetensors(void) {
    static const char *const dtypes[] = {"F32", "F16", "BF16"};
    static const struct {
        const char *name;
        int ndim;
        int64_t shape[2];
    } gpt2[] = {
        {"wte.weight", 2, {8, 4}},           {"wpe.weight", 2, {16, 4}},       {"h.0.ln_1.weight", 1, {4}},
        {"h.0.ln_1.bias", 1, {4}},           {"h.0.attn.c_attn.weight", 2, {4, 12}},
        {"h.0.attn.c_attn.bias", 1, {12}},   {"h.0.attn.c_proj.weight", 2, {4, 4}},
        {"h.0.attn.c_proj.bias", 1, {4}},    {"h.0.ln_2.weight", 1, {4}},      {"h.0.ln_2.bias", 1, {4}},
        {"h.0.mlp.c_fc.weight", 2, {4, 16}}, {"h.0.mlp.c_fc.bias", 1, {16}},   {"h.0.mlp.c_proj.weight", 2, {16, 4}},
        {"h.0.mlp.c_proj.bias", 1, {4}},     {"ln_f.weight", 1, {4}},          {"ln_f.bias", 1, {4}},
    };
    for (int d = 0; d < 3; d++) {
        st_file *f = calloc(1, sizeof *f);
        f->json[f->json_n++] = '{';
        for (size_t i = 0; i < sizeof gpt2 / sizeof gpt2[0]; i++)
            st_add(f, gpt2[i].name, dtypes[d], gpt2[i].ndim, gpt2[i].shape);
        char name[32];
        snprintf(name, sizeof name, "gpt2-%s.safetensors", dtypes[d]);
        st_write(f, name);
        free(f);
    }
    st_file *f = calloc(1, sizeof *f);
    f->json[f->json_n++] = '{';
    const int64_t scalar[1] = {0}, matrix[2] = {2, 3}, empty[2] = {0, 5};
    st_add(f, "scalar", "F32", 0, scalar);
    st_add(f, "matrix", "F16", 2, matrix);
    st_add(f, "empty", "BF16", 2, empty);
    st_write(f, "odd.safetensors");
    free(f);
}

static void train_configs(void) {
    mn_train_config c;
    mn_train_config_defaults(&c);
    for (int indent = 0; indent <= 2; indent += 2) {
        char *json = mn_train_config_to_json(&c, indent);
        write_seed("train_config", indent ? "defaults-indented.json" : "defaults.json", json, strlen(json));
        free(json);
    }
}

static void personas(void) {
    static const char json[] =
        "{\"train\": [{\"Speaker 1\": [\"I have a dog.\", \"I like tea.\"], \"Speaker 2\": [\"I live in Lisbon.\"]}],"
        " \"valid\": [{\"Speaker 1\": [\"I play the violin.\"], \"Speaker 2\": [\"I like tea!\"]}],"
        " \"test\": [{\"Speaker 1\": [\"My sister is a nurse.\"], \"Speaker 2\": [\"I drive a red car.\"]}]}\n";
    write_seed("personas", "personas.json", json, sizeof json - 1);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fuzz_seeds OUT_DIR FIXTURES_DIR\n");
        return 2;
    }
    root = argv[1];
    mn_tokenizer *tok = small_tokenizer();
    checkpoints(tok);
    tokenizer_files(tok, argv[2]);
    session_stores();
    shards(tok);
    safetensors();
    train_configs();
    personas();
    mn_tokenizer_free(tok);
    return 0;
}
