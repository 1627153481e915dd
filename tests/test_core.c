/* Core utilities: atomic file replacement and the error channel. */
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_atomic_replace_and_abort),
        cmocka_unit_test(test_atomic_refuses_special_targets),
        cmocka_unit_test(test_error_context),
    };
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
