/* Builds examples/session_demo.c into this test and runs it as its own process (its main,
 * in a forked child with stdout and stderr captured): without a checkpoint, twice on the same
 * store (the second run continues the session), with an imported GPT-2 checkpoint, and with a
 * checkpoint that does not exist. */
#define main session_demo_main
#include "../examples/session_demo.c"
#undef main

#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/checkpoint.h"
#include "io/gpt2_import.h"
#include "text/tokenizer.h"

static char dir[256];

static const char *path_in(const char *name) {
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

/* Runs the demo's main with args; returns its exit code, output in out.txt / err.txt. */
static int run_demo(const char *checkpoint, const char *store) {
    char out[512], err[512];
    snprintf(out, sizeof out, "%s/out.txt", dir);
    snprintf(err, sizeof err, "%s/err.txt", dir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(o, 1), dup2(e, 2);
        char *argv[4] = {"session_demo", (char *)checkpoint, (char *)store, NULL};
        int rc = session_demo_main(checkpoint ? 3 : 1, checkpoint ? argv : (char *[]){"session_demo", NULL});
        fflush(stdout);
        _exit(rc);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void output_has(const char *file, const char *needle) {
    FILE *f = fopen(path_in(file), "r");
    char buf[8192] = "";
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
    if (!strstr(buf, needle))
        fail_msg("%s lacks '%s':\n%s", file, needle, buf);
}

static void test_demo_without_checkpoint(void **state) {
    (void)state;
    /* no checkpoint: the store is session_demo.h5 in the current folder */
    char cwd[1024];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    int rc = run_demo(NULL, NULL);
    int rc2 = run_demo(NULL, NULL);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc, 0);
    assert_int_equal(rc2, 0);
    output_has("out.txt", "continuing from its saved state");
    output_has("out.txt", "turn 6:");
    output_has("out.txt", "read back: 6 turns, identical to R");
    output_has("out.txt", "memory moves the next-token distribution by L1");
}

static void test_demo_with_gpt2_checkpoint(void **state) {
    (void)state;
    const char *fixtures = getenv("MNEMO_FIXTURES");
    char st[4096], vocab[4096], merges[4096], config[4096];
    snprintf(st, sizeof st, "%s/gpt2_tiny/model.safetensors", fixtures ? fixtures : "tests/fixtures");
    snprintf(vocab, sizeof vocab, "%s/gpt2_tiny/vocab.json", fixtures ? fixtures : "tests/fixtures");
    snprintf(merges, sizeof merges, "%s/gpt2_tiny/merges.txt", fixtures ? fixtures : "tests/fixtures");
    snprintf(config, sizeof config, "%s/gpt2_tiny/config.json", fixtures ? fixtures : "tests/fixtures");
    mn_gpt2_import_options o = mn_gpt2_import_defaults();
    o.config_json = config, o.n_slots = 4, o.max_turn_tokens = 60, o.n_comp_layers = 1;
    mn_model *m = NULL;
    mn_tokenizer *t = NULL;
    assert_int_equal(mn_gpt2_import(st, &o, &m, NULL), MN_OK);
    assert_int_equal(mn_tokenizer_load_gpt2(vocab, merges, &t), MN_OK);
    mn_checkpoint_save_options so = {.tokenizer = t};
    char ckpt[512];
    snprintf(ckpt, sizeof ckpt, "%s", path_in("gpt2.h5"));
    assert_int_equal(mn_checkpoint_save(ckpt, m, NULL, NULL, &so), MN_OK);
    mn_model_free(m);
    mn_tokenizer_free(t);
    char store[512];
    snprintf(store, sizeof store, "%s", path_in("gpt2-store.h5"));
    assert_int_equal(run_demo(ckpt, store), 0);
    output_has("out.txt", "model: V 420, C 32, 2 + 1 layers, k 4 slots");
    output_has("out.txt", "new, R = R_0");
    output_has("out.txt", "read back: 3 turns, identical to R");
    output_has("out.txt", " p=");
    /* a checkpoint that is not there: exit 1 and the path named */
    assert_int_equal(run_demo(path_in("missing.h5"), store), 1);
    output_has("err.txt", "missing.h5");
}

/* The public header's encoder (what the demo uses) gives the tokenizer's ids, cut at cap, and
 * always the full count. */
static void test_public_encoder(void **state) {
    (void)state;
    const char *texts[] = {"the tram is lovely", "the flat is tiny"};
    mn_tokenizer *tok = NULL;
    assert_int_equal(mn_tokenizer_train_texts(texts, NULL, 2, 280, &tok), MN_OK);
    const char *text = "the tram is tiny, the flat is lovely";
    mn_ids want = {0};
    assert_int_equal(mn_tokenizer_encode(tok, text, strlen(text), &want), MN_OK);
    assert_true(want.count > 4);
    int32_t ids[64];
    size_t count = 0;
    assert_int_equal(mn_tokenizer_encode_ids(tok, text, strlen(text), ids, 64, &count), MN_OK);
    assert_int_equal(count, (size_t)want.count);
    assert_memory_equal(ids, want.ids, count * sizeof *ids);
    int32_t few[4] = {-1, -1, -1, -1};
    assert_int_equal(mn_tokenizer_encode_ids(tok, text, strlen(text), few, 3, &count), MN_OK);
    assert_int_equal(count, (size_t)want.count); /* all of them counted, 3 written */
    assert_memory_equal(few, want.ids, 3 * sizeof *few);
    assert_int_equal(few[3], -1);
    assert_int_equal(mn_tokenizer_encode_ids(tok, "", 0, NULL, 0, &count), MN_OK);
    assert_int_equal(count, 0);
    assert_int_equal(mn_tokenizer_encode_ids(tok, text, strlen(text), ids, 64, NULL), MN_ERR_INVALID_ARG);
    mn_ids_free(&want);
    mn_tokenizer_free(tok);
}

static int setup(void **state) {
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mnemo-example-XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_without_checkpoint),
        cmocka_unit_test(test_demo_with_gpt2_checkpoint),
        cmocka_unit_test(test_public_encoder),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
