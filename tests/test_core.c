/* Core utilities: atomic file replacement, the error channel and the XXH64 checksum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/hash.h"

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path) {
    static char buf[256];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_atomic_replace_and_abort(void **state) {
    (void)state;
    char dir[] = "/tmp/mnemo-core-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[512];
    snprintf(path, sizeof path, "%s/target.txt", dir);
    write_text(path, "old");

    mn_atomic_file af;
    assert_int_equal(mn_atomic_begin(path, &af), MN_OK);
    write_text(af.tmp, "half-written");
    mn_atomic_abort(&af); /* an aborted write leaves the target and no temp file */
    assert_string_equal(read_text(path), "old");

    assert_int_equal(mn_atomic_begin(path, &af), MN_OK);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s", af.tmp);
    write_text(af.tmp, "new");
    assert_string_equal(read_text(path), "old"); /* nothing visible before commit */
    assert_int_equal(mn_atomic_commit(&af), MN_OK);
    assert_string_equal(read_text(path), "new");
    assert_int_not_equal(access(tmp, F_OK), 0);

    /* commit without a temp file fails and leaves the target */
    assert_int_equal(mn_atomic_begin(path, &af), MN_OK);
    assert_int_equal(mn_atomic_commit(&af), MN_ERR_IO);
    assert_string_equal(read_text(path), "new");

    unlink(path);
    rmdir(dir);
}

static void test_atomic_refuses_special_targets(void **state) {
    (void)state;
    mn_atomic_file af;
    assert_int_equal(mn_atomic_begin("/dev/null", &af), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "/dev/null"));
    assert_non_null(strstr(mn_last_error(), "not a regular file"));
    assert_int_equal(mn_atomic_begin("/tmp", &af), MN_ERR_IO);
    assert_int_equal(mn_atomic_begin("", &af), MN_ERR_INVALID_ARG);
    struct stat sb;
    assert_int_equal(stat("/dev/null", &sb), 0);
    assert_true(S_ISCHR(sb.st_mode));
}

static void test_error_context(void **state) {
    (void)state;
    assert_int_equal(mn_fail(MN_ERR_FORMAT, "dataset '%s' is missing", "wte"), MN_ERR_FORMAT);
    assert_int_equal(mn_fail_context(MN_ERR_FORMAT, "loading %s", "x.h5"), MN_ERR_FORMAT);
    assert_string_equal(mn_last_error(), "loading x.h5: dataset 'wte' is missing");
    assert_string_equal(mn_status_name(MN_ERR_MISMATCH), "MN_ERR_MISMATCH");
    mn_clear_error();
    assert_string_equal(mn_last_error(), "");
}

/* XXH64 agrees with the reference xxHash (values from libxxhash 0.8), one-shot and streamed
 * in uneven pieces: shards, journals and fingerprints written before stay readable. */
static void test_xxh64_reference(void **state) {
    (void)state;
    assert_true(mn_xxh64("", 0, 0) == 0xef46db3751d8e999ull);
    assert_true(mn_xxh64("a", 1, 0) == 0xd24ec4f1a98c6e5bull);
    assert_true(mn_xxh64("abc", 3, 0) == 0x44bc2cf5ad770999ull);
    assert_true(mn_xxh64("abc", 3, 1) == 0xbea9ca8199328908ull);
    const char *spam = "Nobody inspects the spammish repetition";
    assert_true(mn_xxh64(spam, strlen(spam), 0) == 0xfbcea83c8a378bf1ull);
    uint8_t buf[259];
    for (int i = 0; i < 256; i++)
        buf[i] = (uint8_t)i;
    memset(buf + 256, 'x', 3);
    const uint64_t seed = 0x73657373696f6e73ull, want = 0x069243d466651259ull;
    assert_true(mn_xxh64(buf, sizeof buf, seed) == want);
    const size_t pieces[] = {1, 7, 31, 32, 0, 33, 64, 5, 86};  /* sums to 259 */
    mn_xxh64_state s;
    mn_xxh64_init(&s, seed);
    size_t at = 0;
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        mn_xxh64_update(&s, buf + at, pieces[i]);
        at += pieces[i];
    }
    assert_int_equal(at, sizeof buf);
    assert_true(mn_xxh64_digest(&s) == want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_atomic_replace_and_abort),
        cmocka_unit_test(test_atomic_refuses_special_targets),
        cmocka_unit_test(test_error_context),
        cmocka_unit_test(test_xxh64_reference),
    };
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
