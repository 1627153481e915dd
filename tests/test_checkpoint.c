/* Checkpoints: exact round trip, h5dump/h5py readability, refusal of corrupt, truncated and
 * mismatched files, atomic writes under injected and real write failures (a full tmpfs, a
 * read-only directory), SIGKILL in the middle of writes, and run-directory bookkeeping. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/checkpoint.h"
#include "core/h5util.h"
#include "mnemo.h"
#include "text/tokenizer.h"

/* ---------------------------------------------------------------- helpers */
static mn_config tiny_config(void) {
    return (mn_config){.vocab_size = 50, .d_model = 16, .n_heads = 2, .n_layers = 1, .n_comp_layers = 1,
                       .n_slots = 2, .max_turn_tokens = 6, .gate_bias_init = -2.0f};
}

#define OK(expr)                                                         \
    do {                                                                 \
        mn_status st_ = (expr);                                          \
        if (st_ != MN_OK)                                                \
            fail_msg("%s -> %s: %s", #expr, mn_status_name(st_), mn_last_error()); \
    } while (0)

/* A model and trainer after two AdamW steps, so that moments and step are not trivial. */
typedef struct {
    mn_model *model;
    mn_trainer *trainer;
} trained;

static trained make_trained(mn_config cfg, uint64_t seed) {
    trained t = {0};
    OK(mn_model_create(&cfg, &t.model));
    OK(mn_model_init(t.model, seed));
    OK(mn_trainer_create(t.model, 2, 2, &t.trainer));
    int32_t tokens[2 * 2 * 4], lengths[4] = {4, 3, 4, 2};
    for (int i = 0; i < 16; i++)
        tokens[i] = (int32_t)((i * 7 + seed) % (uint64_t)cfg.vocab_size);
    mn_batch b = {2, 2, 4, tokens, lengths, NULL};
    mn_adamw_config o = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};
    for (int s = 0; s < 2; s++) {
        float loss;
        OK(mn_forward_backward(t.trainer, &b, &loss, NULL));
        OK(mn_adamw_step(t.trainer, &o, NULL));
    }
    return t;
}

static void free_trained(trained *t) {
    mn_trainer_free(t->trainer);
    mn_model_free(t->model);
}

static mn_train_state sample_state(uint64_t step) {
    mn_train_state s = {.step = step, .tokens_seen = 123456789012ull, .rng = {UINT64_MAX, 1, 0x8000000000000000ull, 42},
                        .data_epoch = 3, .data_position = 17, .curriculum_stage = 2, .nan_streak = 1,
                        .nan_skipped = 5};
    return s;
}

static char *make_temp_dir(void) {
    char *dir = strdup("/tmp/mnemo-ckpt-XXXXXX");
    if (!mkdtemp(dir))
        fail_msg("mkdtemp: %s", strerror(errno));
    return dir;
}

static void remove_tree(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        print_message("warning: could not remove %s\n", dir);
}

static int count_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static void assert_message_has(const char *needle) {
    if (!strstr(mn_last_error(), needle))
        fail_msg("expected the message to mention '%s', got: %s", needle, mn_last_error());
}

static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static void flip_byte(const char *path, long offset) {
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, offset), 1);
    b ^= 0x5a;
    assert_int_equal(pwrite(fd, &b, 1, offset), 1);
    close(fd);
}

/* File offset and size of the (single) chunk of a dataset. */
static void chunk_location(const char *path, const char *name, long *offset, long *size) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(d >= 0);
    hsize_t coords[2];
    unsigned mask;
    haddr_t addr;
    hsize_t sz;
    hid_t space = H5Dget_space(d);
    assert_true(H5Dget_chunk_info(d, space, 0, coords, &mask, &addr, &sz) >= 0);
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
    *offset = (long)addr;
    *size = (long)sz;
}

static void copy_file(const char *from, const char *to) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- round trip */
static void test_roundtrip_exact(void **state) {
    (void)state;
    char *dir = make_temp_dir(), path[512];
    snprintf(path, sizeof path, "%s/a.h5", dir);
    trained a = make_trained(tiny_config(), 7);
    mn_train_state s = sample_state(99);
    mn_checkpoint_save_options o = {.train_config_json = "{\"lr\": 0.001, \"note\": \"r\\u00e9sum\\u00e9\"}"};
    OK(mn_checkpoint_save(path, a.model, a.trainer, &s, &o));
    assert_int_equal(count_temp_files(dir), 0);

    trained b = make_trained(tiny_config(), 8); /* different params and moments */
    mn_train_state got;
    memset(&got, 0, sizeof got);
    OK(mn_checkpoint_load(path, b.model, b.trainer, &got, NULL));
    size_t P = mn_model_num_params(a.model);
    assert_memory_equal(mn_model_params(a.model), mn_model_params(b.model), P * sizeof(float));
    assert_memory_equal(mn_trainer_adam_m(a.trainer), mn_trainer_adam_m(b.trainer), P * sizeof(float));
    assert_memory_equal(mn_trainer_adam_v(a.trainer), mn_trainer_adam_v(b.trainer), P * sizeof(float));
    assert_int_equal(mn_trainer_step(b.trainer), 2);
    assert_memory_equal(&got, &s, sizeof s);

    mn_checkpoint_info info;
    OK(mn_checkpoint_read_info(path, &info));
    assert_int_equal(info.format_version, MN_CHECKPOINT_FORMAT);
    assert_string_equal(info.train_config, o.train_config_json);
    assert_true(strlen(info.build_id) > 0 && strlen(info.created) == 20);
    assert_true(info.has_optimizer && info.has_train && !info.has_tokenizer);
    assert_int_equal(info.adam_step, 2);
    mn_config c = tiny_config();
    assert_memory_equal(&info.config, &c, sizeof c);
    mn_checkpoint_info_free(&info);

    /* params only: no optimizer, no /train; loads into a model, refused for resuming */
    snprintf(path, sizeof path, "%s/params.h5", dir);
    OK(mn_checkpoint_save(path, a.model, NULL, NULL, NULL));
    OK(mn_checkpoint_load(path, b.model, NULL, NULL, NULL));
    assert_int_equal(mn_checkpoint_load(path, b.model, b.trainer, NULL, NULL), MN_ERR_FORMAT);
    assert_message_has("no optimizer state");
    assert_int_equal(mn_checkpoint_load(path, b.model, NULL, &got, NULL), MN_ERR_FORMAT);
    assert_message_has("no training state");
    free_trained(&a);
    free_trained(&b);
    remove_tree(dir);
    free(dir);
}

static mn_tokenizer *small_tokenizer(const char *flavour) {
    const char *texts[] = {"hello there, how are you today?", "fine thanks and you", flavour};
    mn_tokenizer *tok = NULL;
    OK(mn_tokenizer_train_texts(texts, NULL, 3, 300, &tok));
    return tok;
}

static void test_tokenizer_stored_and_checked(void **state) {
    (void)state;
    char *dir = make_temp_dir(), path[512], bare[512];
    snprintf(path, sizeof path, "%s/tok.h5", dir);
    snprintf(bare, sizeof bare, "%s/bare.h5", dir);
    mn_tokenizer *t1 = small_tokenizer("the cat sat on the mat"), *t2 = small_tokenizer("zebras zigzag zealously");
    assert_true(mn_tokenizer_hash(t1) != mn_tokenizer_hash(t2));
    trained a = make_trained(tiny_config(), 1);
    mn_train_state s = sample_state(5);
    mn_checkpoint_save_options o = {.tokenizer = t1};
    OK(mn_checkpoint_save(path, a.model, a.trainer, &s, &o));
    OK(mn_checkpoint_save(bare, a.model, a.trainer, &s, NULL));

    mn_tokenizer *back = NULL;
    OK(mn_checkpoint_load_tokenizer(path, &back));
    assert_non_null(back);
    assert_true(mn_tokenizer_hash(back) == mn_tokenizer_hash(t1));
    mn_tokenizer_free(back);
    OK(mn_checkpoint_load_tokenizer(bare, &back));
    assert_null(back);

    mn_checkpoint_load_options same = {1, mn_tokenizer_hash(t1)}, other = {1, mn_tokenizer_hash(t2)};
    OK(mn_checkpoint_load(path, a.model, a.trainer, NULL, &same));
    float before = mn_model_params(a.model)[0];
    mn_model_params(a.model)[0] = 12345.0f;
    assert_int_equal(mn_checkpoint_load(path, a.model, a.trainer, NULL, &other), MN_ERR_MISMATCH);
    assert_message_has("tokenizer hash");
    assert_message_has(path);
    assert_true(mn_model_params(a.model)[0] == 12345.0f); /* a refusal changes nothing */
    mn_model_params(a.model)[0] = before;
    assert_int_equal(mn_checkpoint_load(bare, a.model, a.trainer, NULL, &same), MN_ERR_MISMATCH);
    assert_message_has("holds no tokenizer");
    mn_tokenizer_free(t1);
    mn_tokenizer_free(t2);
    free_trained(&a);
    remove_tree(dir);
    free(dir);
}

/* h5dump and h5py (the interfaces other tools use) read the files. */
static void test_readable_by_h5dump_and_h5py(void **state) {
    (void)state;
    char *dir = make_temp_dir(), path[512], cmd[2048];
    snprintf(path, sizeof path, "%s/read.h5", dir);
    trained a = make_trained(tiny_config(), 3);
    mn_train_state s = sample_state(11);
    mn_checkpoint_save_options o = {.train_config_json = "{\"steps\": 11}"};
    OK(mn_checkpoint_save(path, a.model, a.trainer, &s, &o));
    if (system("command -v h5dump > /dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof cmd, "h5dump -d /params/memory.gate.bias '%s' > '%s/dump.txt' 2>&1", path, dir);
        assert_int_equal(system(cmd), 0);
        snprintf(cmd, sizeof cmd, "grep -q 'H5T_IEEE_F32LE' '%s/dump.txt'", dir);
        assert_int_equal(system(cmd), 0);
        snprintf(cmd, sizeof cmd, "h5dump -H '%s' > /dev/null 2>&1", path);
        assert_int_equal(system(cmd), 0);
    } else {
        print_message("h5dump not installed: skipped that half\n");
    }
    mn_tensor_info t;
    OK(mn_model_find_tensor(a.model, "decoder.h.0.attn.c_attn.weight", &t));
    double want = mn_model_params(a.model)[t.offset + 1 * (size_t)t.shape[1] + 2];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 - '%s' %.9g <<'EOF'\n"
             "import sys, json, h5py\n"
             "f = h5py.File(sys.argv[1], 'r')\n"
             "w = f['params/decoder.h.0.attn.c_attn.weight']\n"
             "assert w.shape == (16, 48), w.shape\n"
             "assert abs(float(w[1, 2]) - float(sys.argv[2])) <= 1e-7 * max(1.0, abs(float(sys.argv[2])))\n"
             "assert f['optimizer/m/wte'].shape == (50, 16)\n"
             "assert int(f['train'].attrs['step']) == 11\n"
             "assert [int(x) for x in f['train/rng'][:]] == [2**64 - 1, 1, 2**63, 42]\n"
             "assert json.loads(f['config'].attrs['train_config'])['steps'] == 11\n"
             "assert int(f['meta'].attrs['format_version']) == 1\n"
             "assert f['params/wte'].fletcher32\n"
             "EOF",
             path, want);
    if (system("/usr/bin/python3 -c 'import h5py' > /dev/null 2>&1") == 0)
        assert_int_equal(system(cmd), 0);
    else
        print_message("h5py not available: skipped that half\n");
    free_trained(&a);
    remove_tree(dir);
    free(dir);
}

/* ---------------------------------------------------------------- refusals */
static void test_corrupt_tensor_bytes_refused(void **state) {
    (void)state;
    char *dir = make_temp_dir(), good[512], bad[512];
    snprintf(good, sizeof good, "%s/good.h5", dir);
    snprintf(bad, sizeof bad, "%s/bad.h5", dir);
    trained a = make_trained(tiny_config(), 4);
    mn_train_state s = sample_state(3);
    OK(mn_checkpoint_save(good, a.model, a.trainer, &s, NULL));
    const char *targets[] = {"params/wte", "params/memory.r0", "optimizer/m/decoder.h.0.mlp.c_fc.weight",
                             "optimizer/v/memory.gate.bias"};
    trained b = make_trained(tiny_config(), 9);
    size_t P = mn_model_num_params(b.model);
    float *before = malloc(P * sizeof(float));
    memcpy(before, mn_model_params(b.model), P * sizeof(float));
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        copy_file(good, bad);
        long off, size;
        chunk_location(bad, targets[i], &off, &size);
        flip_byte(bad, off + size / 2);
        assert_int_equal(mn_checkpoint_load(bad, b.model, b.trainer, NULL, NULL), MN_ERR_FORMAT);
        assert_message_has(bad);
        assert_message_has(targets[i]);
        assert_message_has("checksum");
        assert_memory_equal(mn_model_params(b.model), before, P * sizeof(float)); /* untouched */
    }
    /* the superblock (checksummed in the 1.8 format) */
    copy_file(good, bad);
    flip_byte(bad, 20);
    assert_int_equal(mn_checkpoint_load(bad, b.model, b.trainer, NULL, NULL), MN_ERR_FORMAT);
    assert_message_has("truncated or corrupt");
    free(before);
    free_trained(&a);
    free_trained(&b);
    remove_tree(dir);
    free(dir);
}

static void test_truncated_refused(void **state) {
    (void)state;
    char *dir = make_temp_dir(), good[512], bad[512];
    snprintf(good, sizeof good, "%s/good.h5", dir);
    snprintf(bad, sizeof bad, "%s/cut.h5", dir);
    trained a = make_trained(tiny_config(), 4);
    OK(mn_checkpoint_save(good, a.model, a.trainer, NULL, NULL));
    long size = file_size(good);
    long cuts[] = {0, 7, 100, size / 3, size / 2, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        copy_file(good, bad);
        assert_int_equal(truncate(bad, cuts[i]), 0);
        mn_status st = mn_checkpoint_load(bad, a.model, a.trainer, NULL, NULL);
        if (st != MN_ERR_FORMAT)
            fail_msg("truncated to %ld of %ld bytes: %s (%s)", cuts[i], size, mn_status_name(st), mn_last_error());
        assert_message_has(bad);
    }
    unlink(bad);
    assert_int_equal(mn_checkpoint_load(bad, a.model, a.trainer, NULL, NULL), MN_ERR_IO); /* missing */
    assert_message_has("No such file");
    free_trained(&a);
    remove_tree(dir);
    free(dir);
}

static void test_mismatched_config_refused(void **state) {
    (void)state;
    char *dir = make_temp_dir(), path[512];
    snprintf(path, sizeof path, "%s/m.h5", dir);
    trained a = make_trained(tiny_config(), 4);
    OK(mn_checkpoint_save(path, a.model, a.trainer, NULL, NULL));
    struct {
        const char *field;
        mn_config cfg;
    } cases[7];
    for (int i = 0; i < 7; i++)
        cases[i].cfg = tiny_config();
    cases[0].field = "vocab_size", cases[0].cfg.vocab_size = 51;
    cases[1].field = "d_model", cases[1].cfg.d_model = 20;
    cases[2].field = "n_heads", cases[2].cfg.n_heads = 4;
    cases[3].field = "n_layers", cases[3].cfg.n_layers = 2;
    cases[4].field = "n_slots", cases[4].cfg.n_slots = 3;
    cases[5].field = "max_turn_tokens", cases[5].cfg.max_turn_tokens = 7;
    cases[6].field = "gate_bias_init", cases[6].cfg.gate_bias_init = -1.0f;
    for (int i = 0; i < 7; i++) {
        mn_model *m = NULL;
        OK(mn_model_create(&cases[i].cfg, &m));
        assert_int_equal(mn_checkpoint_load(path, m, NULL, NULL, NULL), MN_ERR_MISMATCH);
        assert_message_has(cases[i].field);
        assert_message_has(path);
        mn_model_free(m);
    }
    mn_config read;
    OK(mn_checkpoint_read_config(path, &read));
    mn_config want = tiny_config();
    assert_memory_equal(&read, &want, sizeof want);
    free_trained(&a);
    remove_tree(dir);
    free(dir);
}

/* Edits a saved file with HDF5 directly: another format version, a missing or reshaped
 * tensor, a tensor the model does not have. */
static void test_bad_structure_refused(void **state) {
    (void)state;
    char *dir = make_temp_dir(), good[512], bad[512];
    snprintf(good, sizeof good, "%s/good.h5", dir);
    snprintf(bad, sizeof bad, "%s/bad.h5", dir);
    trained a = make_trained(tiny_config(), 4);
    OK(mn_checkpoint_save(good, a.model, a.trainer, NULL, NULL));

    copy_file(good, bad);
    hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT), g = H5Gopen2(f, "meta", H5P_DEFAULT);
    H5Adelete(g, "format_version");
    OK(mn_h5_write_attr_int(g, bad, "format_version", 99));
    H5Gclose(g), H5Fclose(f);
    assert_int_equal(mn_checkpoint_load(bad, a.model, NULL, NULL, NULL), MN_ERR_FORMAT);
    assert_message_has("format version 99");

    copy_file(good, bad);
    f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "params/decoder.ln_f.bias", H5P_DEFAULT);
    H5Fclose(f);
    assert_int_equal(mn_checkpoint_load(bad, a.model, NULL, NULL, NULL), MN_ERR_FORMAT);
    assert_message_has("params/decoder.ln_f.bias is missing");

    copy_file(good, bad);
    f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "params/memory.r0", H5P_DEFAULT);
    g = H5Gopen2(f, "params", H5P_DEFAULT);
    float r0[3 * 16] = {0};
    OK(mn_h5_write_floats(g, bad, "memory.r0", r0, 2, (size_t[]){3, 16}));
    H5Gclose(g), H5Fclose(f);
    assert_int_equal(mn_checkpoint_load(bad, a.model, NULL, NULL, NULL), MN_ERR_MISMATCH);
    assert_message_has("memory.r0 has shape (3, 16); the model's is (2, 16)");

    copy_file(good, bad);
    f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    g = H5Gopen2(f, "params", H5P_DEFAULT);
    OK(mn_h5_write_floats(g, bad, "decoder.h.1.ln_1.weight", r0, 1, (size_t[]){16}));
    H5Gclose(g), H5Fclose(f);
    assert_int_equal(mn_checkpoint_load(bad, a.model, NULL, NULL, NULL), MN_ERR_MISMATCH);
    assert_message_has("decoder.h.1.ln_1.weight is not a tensor of this model");

    /* not a checkpoint at all: an HDF5 file without /meta, and a text file */
    f = H5Fcreate(bad, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    assert_int_equal(mn_checkpoint_load(bad, a.model, NULL, NULL, NULL), MN_ERR_FORMAT);
    assert_message_has("not a mnemo checkpoint");
    FILE *txt = fopen(bad, "w");
    fputs("hello\n", txt);
    fclose(txt);
    assert_int_equal(mn_checkpoint_load(bad, a.model, NULL, NULL, NULL), MN_ERR_FORMAT);
    free_trained(&a);
    remove_tree(dir);
    free(dir);
}

/* ---------------------------------------------------------------- write failures */
typedef struct {
    int left;
    int calls;
} fault_counter;

static int fail_after(void *ctx, const char *dataset) {
    (void)dataset;
    fault_counter *f = ctx;
    f->calls++;
    return f->left-- <= 0;
}

static void test_injected_write_failures_keep_old(void **state) {
    (void)state;
    char *dir = make_temp_dir(), path[512];
    snprintf(path, sizeof path, "%s/ckpt-00000001.h5", dir);
    mn_tokenizer *tok = small_tokenizer("a tokenizer so that its group is written too");
    trained a = make_trained(tiny_config(), 4), b = make_trained(tiny_config(), 5);
    mn_train_state s1 = sample_state(1), s2 = sample_state(2);
    mn_checkpoint_save_options o = {.tokenizer = tok};
    OK(mn_checkpoint_save(path, a.model, a.trainer, &s1, &o));
    /* count the datasets of a whole save, then fail at every one of them in turn */
    fault_counter count = {1 << 30, 0};
    o.fault = fail_after;
    o.fault_ctx = &count;
    char scratch[512];
    snprintf(scratch, sizeof scratch, "%s/count.h5", dir);
    OK(mn_checkpoint_save(scratch, b.model, b.trainer, &s2, &o));
    unlink(scratch);
    int total = count.calls;
    assert_true(total == 3 * mn_model_num_tensors(a.model) + 2 + 1); /* params, m, v, rng, cursor, tokenizer */
    size_t P = mn_model_num_params(a.model);
    trained c = make_trained(tiny_config(), 6);
    for (int n = 0; n < total; n++) {
        fault_counter f = {n, 0};
        o.fault_ctx = &f;
        assert_int_equal(mn_checkpoint_save(path, b.model, b.trainer, &s2, &o), MN_ERR_IO);
        assert_message_has(path);
        assert_message_has("injected");
        assert_int_equal(count_temp_files(dir), 0);
        mn_train_state got;
        OK(mn_checkpoint_load(path, c.model, c.trainer, &got, NULL)); /* still the first one */
        assert_int_equal(got.step, 1);
        assert_memory_equal(mn_model_params(c.model), mn_model_params(a.model), P * sizeof(float));
    }
    mn_tokenizer_free(tok);
    free_trained(&a);
    free_trained(&b);
    free_trained(&c);
    remove_tree(dir);
    free(dir);
}

/* Mount points made by a test, unmounted by the teardown even when an assertion fails. */
static char mounted[512];

static int unmount_teardown(void **state) {
    (void)state;
    if (mounted[0])
        umount2(mounted, MNT_DETACH);
    mounted[0] = '\0';
    return 0;
}

static void test_missing_or_unwritable_directory(void **state) {
    (void)state;
    trained a = make_trained(tiny_config(), 4);
    const char *missing = "/tmp/mnemo-no-such-dir-for-tests/x/ckpt-00000001.h5";
    assert_int_equal(mn_checkpoint_save(missing, a.model, a.trainer, NULL, NULL), MN_ERR_IO);
    assert_message_has(missing);

    char *dir = make_temp_dir(), path[512];
    snprintf(path, sizeof path, "%s/ro/ckpt-00000001.h5", dir);
    char ro[512];
    snprintf(ro, sizeof ro, "%s/ro", dir);
    assert_int_equal(mkdir(ro, 0755), 0);
    OK(mn_checkpoint_save(path, a.model, a.trainer, NULL, NULL));
    int bind_mounted = 0;
    if (geteuid() != 0) {
        assert_int_equal(chmod(ro, 0555), 0);
    } else if (mount(ro, ro, NULL, MS_BIND, NULL) == 0) {
        /* root ignores permissions: a read-only bind mount of the directory onto itself */
        bind_mounted = 1;
        snprintf(mounted, sizeof mounted, "%s", ro);
        if (mount(NULL, ro, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) != 0) {
            print_message("read-only remount refused (%s): skipped\n", strerror(errno));
            unmount_teardown(NULL);
            free_trained(&a);
            remove_tree(dir);
            free(dir);
            skip();
        }
    } else {
        print_message("cannot make a read-only directory as root without mount (%s): skipped\n", strerror(errno));
        free_trained(&a);
        remove_tree(dir);
        free(dir);
        skip();
    }
    trained b = make_trained(tiny_config(), 5);
    assert_int_equal(mn_checkpoint_save(path, b.model, b.trainer, NULL, NULL), MN_ERR_IO);
    assert_message_has(path);
    print_message("read-only directory: %s\n", mn_last_error());
    OK(mn_checkpoint_load(path, b.model, NULL, NULL, NULL));
    assert_memory_equal(mn_model_params(b.model), mn_model_params(a.model), mn_model_num_params(a.model) * sizeof(float));
    if (bind_mounted)
        unmount_teardown(NULL);
    else
        chmod(ro, 0755);
    free_trained(&a);
    free_trained(&b);
    remove_tree(dir);
    free(dir);
}

/* A real full disk: a 512 KiB tmpfs, room for two checkpoints of 145 KB (needs
 * CAP_SYS_ADMIN; skipped without it). */
static void test_full_tmpfs_keeps_old(void **state) {
    (void)state;
    char *dir = make_temp_dir(), path[512], filler[512];
    if (mount("tmpfs", dir, "tmpfs", 0, "size=512k") == 0) {
        snprintf(mounted, sizeof mounted, "%s", dir);
    } else {
        print_message("mount -t tmpfs not permitted (%s): the injected-fault test covers full disks\n",
                      strerror(errno));
        remove_tree(dir);
        free(dir);
        skip();
    }
    snprintf(path, sizeof path, "%s/ckpt-00000001.h5", dir);
    snprintf(filler, sizeof filler, "%s/filler", dir);
    mn_config cfg = tiny_config();
    trained a = make_trained(cfg, 4), b = make_trained(cfg, 5);
    mn_train_state s1 = sample_state(1), s2 = sample_state(2);
    OK(mn_checkpoint_save(path, a.model, a.trainer, &s1, NULL));
    long ckpt = file_size(path);
    /* fill the disk, leaving less room than a checkpoint needs */
    struct statvfs vfs;
    assert_int_equal(statvfs(dir, &vfs), 0);
    long free_bytes = (long)(vfs.f_bavail * vfs.f_frsize);
    FILE *f = fopen(filler, "w");
    assert_non_null(f);
    long fill = free_bytes - ckpt / 3;
    char block[4096];
    memset(block, 0x33, sizeof block);
    for (long done = 0; done < fill; done += (long)sizeof block)
        fwrite(block, 1, sizeof block, f);
    fclose(f);
    assert_int_equal(statvfs(dir, &vfs), 0);
    long before = (long)vfs.f_bavail;
    mn_status st = mn_checkpoint_save(path, b.model, b.trainer, &s2, NULL);
    print_message("full tmpfs (%ld-byte checkpoint, %ld bytes free): %s: %s\n", ckpt, (long)(vfs.f_bavail * vfs.f_frsize),
                  mn_status_name(st), mn_last_error());
    assert_int_equal(st, MN_ERR_IO);
    assert_message_has(path);
    assert_int_equal(count_temp_files(dir), 0);
    assert_int_equal(statvfs(dir, &vfs), 0);
    assert_int_equal((long)vfs.f_bavail, before); /* the temp file's blocks came back */
    mn_train_state got;
    trained c = make_trained(cfg, 6);
    OK(mn_checkpoint_load(path, c.model, c.trainer, &got, NULL));
    assert_int_equal(got.step, 1);
    assert_memory_equal(mn_model_params(c.model), mn_model_params(a.model), mn_model_num_params(a.model) * sizeof(float));
    /* room again: saving works, and replaces the old checkpoint */
    unlink(filler);
    OK(mn_checkpoint_save(path, b.model, b.trainer, &s2, NULL));
    OK(mn_checkpoint_load(path, c.model, c.trainer, &got, NULL));
    assert_int_equal(got.step, 2);
    unmount_teardown(NULL);
    free_trained(&a);
    free_trained(&b);
    free_trained(&c);
    remove_tree(dir);
    free(dir);
}

/* ---------------------------------------------------------------- kill -9 mid-write */
/* Parameters of the checkpoint at a step: every float derived from the step, so a loaded
 * file shows whether it is whole and which step it holds. */
static void params_for_step(mn_model *m, uint64_t step) {
    float *p = mn_model_params(m);
    for (size_t i = 0; i < mn_model_num_params(m); i++)
        p[i] = (float)step + (float)(i % 1000) * 1e-3f;
}

/* About 200k parameters: a 2.5 MB checkpoint, written in tens of milliseconds. */
static mn_config kill_test_config(void) {
    return (mn_config){.vocab_size = 512, .d_model = 64, .n_heads = 2, .n_layers = 2, .n_comp_layers = 2,
                       .n_slots = 4, .max_turn_tokens = 16, .gate_bias_init = -2.0f};
}

static void writer_loop(const char *dir, uint64_t step) {
    /* a larger model, so that a write takes long enough to be hit */
    mn_config cfg = kill_test_config();
    mn_model *m = NULL;
    mn_trainer *tr = NULL;
    if (mn_model_create(&cfg, &m) != MN_OK || mn_trainer_create(m, 1, 1, &tr) != MN_OK)
        _exit(3);
    for (;; step++) {
        params_for_step(m, step);
        mn_trainer_set_step(tr, step);
        mn_train_state s = {.step = step, .rng = {step, 1, 2, 3}};
        char path[512];
        mn_checkpoint_run_path(dir, step, path, sizeof path);
        if (mn_checkpoint_save(path, m, tr, &s, NULL) != MN_OK || mn_checkpoint_prune(dir, 2, NULL) != MN_OK)
            _exit(4);
    }
}

static void test_sigkill_during_writes(void **state) {
    (void)state;
    char *dir = make_temp_dir();
    mn_config cfg = kill_test_config();
    mn_model *m = NULL, *want = NULL;
    mn_trainer *tr = NULL;
    OK(mn_model_create(&cfg, &m));
    OK(mn_model_create(&cfg, &want));
    OK(mn_trainer_create(m, 1, 1, &tr));
    srand(12345);
    uint64_t next_step = 1, last_seen = 0;
    int kills = 0, mid_write = 0;
    /* at least 8 kills, and on until 3 of them have hit a write (the temp file is there) */
    for (int round = 0; round < 60 && (kills < 8 || mid_write < 3); round++) {
        pid_t child = fork();
        assert_true(child >= 0);
        if (child == 0)
            writer_loop(dir, next_step); /* never returns */
        struct timespec ts = {0, (long)(50 + rand() % 400) * 1000000L};
        nanosleep(&ts, NULL);
        kill(child, SIGKILL);
        int status;
        assert_int_equal(waitpid(child, &status, 0), child);
        if (!WIFSIGNALED(status))
            fail_msg("the writer stopped by itself (status %d)", status);
        kills++;
        int temps = count_temp_files(dir);
        mid_write += temps > 0;
        char path[512];
        uint64_t step = 0;
        int found = 0;
        OK(mn_checkpoint_latest(dir, path, sizeof path, &step, &found));
        if (!found) /* killed before its first checkpoint: try again with more time */
            continue;
        assert_null(strstr(path, ".tmp"));
        assert_true(step >= last_seen);
        mn_train_state got;
        OK(mn_checkpoint_load(path, m, tr, &got, NULL)); /* whole and verified */
        assert_int_equal(got.step, step);
        assert_int_equal(mn_trainer_step(tr), step);
        params_for_step(want, step);
        assert_memory_equal(mn_model_params(m), mn_model_params(want), mn_model_num_params(m) * sizeof(float));
        int removed = -1;
        OK(mn_checkpoint_clean_temps(dir, &removed));
        assert_int_equal(removed, temps); /* the dead writer's temp file, if any, is cleaned */
        assert_int_equal(count_temp_files(dir), 0);
        last_seen = step;
        next_step = step + 1; /* resume from the latest, as training would */
    }
    print_message("SIGKILL: %d kills, %d of them in the middle of a write (temp file left); the latest "
                  "checkpoint (step %" PRIu64 ") always loaded and verified\n",
                  kills, mid_write, last_seen);
    assert_true(last_seen > 0);
    assert_true(mid_write >= 1); /* the interesting case did happen */
    mn_trainer_free(tr);
    mn_model_free(m);
    mn_model_free(want);
    remove_tree(dir);
    free(dir);
}

/* ---------------------------------------------------------------- run directories */
static void touch(const char *dir, const char *name) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
}

static int exists_in(const char *dir, const char *name) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

static void test_run_directory_bookkeeping(void **state) {
    (void)state;
    char *dir = make_temp_dir(), path[512];
    uint64_t step = 0;
    int found = 1;
    OK(mn_checkpoint_latest(dir, path, sizeof path, &step, &found));
    assert_false(found);
    OK(mn_checkpoint_run_path(dir, 42, path, sizeof path));
    assert_non_null(strstr(path, "/ckpt-00000042.h5"));
    /* a dead writer's pid: a child that has exited and been reaped */
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    char dead_tmp[64], live_tmp[64];
    snprintf(dead_tmp, sizeof dead_tmp, "ckpt-00000099.h5.tmp.%d", (int)dead);
    snprintf(live_tmp, sizeof live_tmp, "ckpt-00000100.h5.tmp.%d", (int)getpid());
    const char *names[] = {"ckpt-00000005.h5", "ckpt-00000030.h5", "ckpt-7.h5", "ckpt-00000012.h5", "ckpt-x.h5",
                           "ckpt-00000050.h5.bak", "notes.txt", dead_tmp, live_tmp};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        touch(dir, names[i]);
    OK(mn_checkpoint_latest(dir, path, sizeof path, &step, &found));
    assert_true(found);
    assert_int_equal(step, 30); /* not 99 or 100 (temp files), not 50 (.bak) */
    int removed = -1;
    OK(mn_checkpoint_clean_temps(dir, &removed));
    assert_int_equal(removed, 1);
    assert_false(exists_in(dir, dead_tmp));
    assert_true(exists_in(dir, live_tmp)); /* a running writer's temp file is left alone */
    OK(mn_checkpoint_prune(dir, 2, &removed));
    assert_int_equal(removed, 2);
    assert_true(exists_in(dir, "ckpt-00000030.h5") && exists_in(dir, "ckpt-00000012.h5"));
    assert_false(exists_in(dir, "ckpt-00000005.h5") || exists_in(dir, "ckpt-7.h5"));
    assert_true(exists_in(dir, "ckpt-00000050.h5.bak") && exists_in(dir, "notes.txt"));
    assert_int_equal(mn_checkpoint_prune(dir, 0, NULL), MN_ERR_INVALID_ARG);
    remove_tree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_exact),
        cmocka_unit_test(test_tokenizer_stored_and_checked),
        cmocka_unit_test(test_readable_by_h5dump_and_h5py),
        cmocka_unit_test(test_corrupt_tensor_bytes_refused),
        cmocka_unit_test(test_truncated_refused),
        cmocka_unit_test(test_mismatched_config_refused),
        cmocka_unit_test(test_bad_structure_refused),
        cmocka_unit_test(test_injected_write_failures_keep_old),
        cmocka_unit_test_teardown(test_missing_or_unwritable_directory, unmount_teardown),
        cmocka_unit_test_teardown(test_full_tmpfs_keeps_old, unmount_teardown),
        cmocka_unit_test(test_sigkill_during_writes),
        cmocka_unit_test(test_run_directory_bookkeeping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
