/* The CUDA module's loader (src/cuda/device.c): CPU work never maps the CUDA libraries; the
 * first CUDA call loads libmnemo-cuda.so; a module that is missing, not a module, or of
 * another build is refused with a message naming the file, and the CPU keeps working. The
 * loader runs once per process, so each case is its own meson test (argv[1], with
 * MNEMO_CUDA_MODULE set by tests/meson.build):
 *   default    the build's own module (or none, in a build without CUDA)
 *   missing    MNEMO_CUDA_MODULE names a file that does not exist
 *   foreign    MNEMO_CUDA_MODULE names a shared object that is not a module (libmnemo.so)
 *   other      MNEMO_CUDA_MODULE names a module of another build (tests/fake_cuda_module.c)
 *   beside     without MNEMO_CUDA_MODULE, a libmnemo-cuda.so beside the object holding the
 *              loader (here the test program, copied to a temporary folder with the fake module
 *              under that name) comes before the build tree's: how an installed or Python-packaged
 *              libmnemo.so finds its own module */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/backend.h"
#include "mnemo.h"

static const char *mode = "default";

/* Whether this process has mapped a file whose name contains `part`. */
static int mapped(const char *part) {
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, part) != NULL;
    fclose(f);
    return found;
}

/* One training step and one state update on the CPU. */
static void cpu_work(void) {
    mn_config c = {.vocab_size = 50, .d_model = 16, .n_heads = 2, .n_layers = 1, .n_comp_layers = 1,
                   .n_slots = 4, .max_turn_tokens = 10, .gate_bias_init = -0.5f};
    mn_model *m = NULL;
    mn_trainer *tr = NULL;
    assert_int_equal(mn_model_create(&c, &m), MN_OK);
    assert_int_equal(mn_model_init(m, 7), MN_OK);
    assert_int_equal(mn_trainer_create(m, 2, 2, &tr), MN_OK);
    int32_t tokens[2 * 5] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, lengths[2] = {5, 4};
    mn_batch batch = {.B = 2, .T = 1, .max_len = 5, .tokens = tokens, .lengths = lengths};
    float loss = 0.0f;
    assert_int_equal(mn_forward_backward(tr, &batch, &loss, NULL), MN_OK);
    assert_true(loss > 0.0f);
    float r[4 * 16];
    assert_int_equal(mn_initial_state(m, r), MN_OK);
    assert_int_equal(mn_update(m, tokens, 5, r, r), MN_OK);
    mn_trainer_free(tr);
    mn_model_free(m);
}

static void test_cpu_work_maps_no_cuda(void **state) {
    (void)state;
    cpu_work();
    char notice[512];
    mn_device dev = MN_DEVICE_CUDA;
    assert_int_equal(mn_device_resolve("cpu", &dev, notice, sizeof notice), MN_OK);
    assert_int_equal(dev, MN_DEVICE_CPU);
    assert_false(mapped("libmnemo-cuda"));
    assert_false(mapped("libcudart"));
    assert_false(mapped("libcublas"));
    assert_false(mapped("libnccl"));
}

/* The first CUDA call: the build's module loads (a GPU answers, or CUDA's own error without a
 * driver or device: not the loader's), or a build without CUDA says so. */
static void test_first_cuda_call_loads_the_module(void **state) {
    (void)state;
    int count = -1;
    mn_status st = mn_cuda_device_count(&count);
    const mn_cuda_module *m = NULL;
    mn_status got = mn_cuda_module_get(&m);
#ifdef MN_HAVE_CUDA
    print_message("device count: %s (%d)\n", st == MN_OK ? "ok" : mn_last_error(), count);
    assert_int_equal(got, MN_OK);
    assert_non_null(m);
    assert_ptr_equal(mn_backend_cuda(), m->backend);
    assert_true(mapped("libmnemo-cuda"));
    assert_true(mapped("libcudart"));
    if (st != MN_OK)
        assert_int_equal(count, 0);
#else
    assert_int_equal(st, MN_OK);
    assert_int_equal(count, 0);
    assert_int_equal(got, MN_ERR_DEVICE);
    assert_non_null(strstr(mn_last_error(), "no CUDA backend"));
    assert_null(mn_backend_cuda());
#endif
}

/* A module that cannot be used: every CUDA entry fails with the reason, naming the file; auto
 * falls back to the CPU with that reason; the CPU keeps working. */
static void test_refused_module(void **state) {
    (void)state;
    const char *path = getenv("MNEMO_CUDA_MODULE");
    assert_non_null(path);
    const char *reason = !strcmp(mode, "missing") ? "does not exist"
                         : !strcmp(mode, "foreign") ? "not a mnemo CUDA module"
                                                    : "of another build";
    int count = -1;
    assert_int_equal(mn_cuda_device_count(&count), MN_ERR_DEVICE);
    assert_int_equal(count, 0);
    print_message("%s: %s\n", mode, mn_last_error());
    assert_non_null(strstr(mn_last_error(), path));
    assert_non_null(strstr(mn_last_error(), reason));
    mn_device_info info;
    assert_int_equal(mn_cuda_device_info(0, &info), MN_ERR_DEVICE);
    assert_non_null(strstr(mn_last_error(), reason));
    const mn_backend *be = (const mn_backend *)0x1;
    assert_int_equal(mn_backend_for(MN_DEVICE_CUDA, &be), MN_ERR_DEVICE);
    assert_null(be);
    assert_null(mn_backend_cuda());
    char notice[2048];
    mn_device dev = MN_DEVICE_CUDA;
    assert_int_equal(mn_device_resolve("auto", &dev, notice, sizeof notice), MN_OK);
    assert_int_equal(dev, MN_DEVICE_CPU);
    assert_non_null(strstr(notice, reason));
    assert_int_equal(mn_device_resolve("cuda", &dev, NULL, 0), MN_ERR_DEVICE);
    assert_non_null(strstr(mn_last_error(), reason));
    cpu_work();
    assert_false(mapped("libcublas"));
}

static void copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* `beside`: the program and the fake module as libmnemo-cuda.so in a temporary folder; the copy,
 * run there with `beside-run`, must load (and refuse) that module, naming its path. */
static void test_module_beside_the_loader(void **state) {
    (void)state;
    const char *fake = getenv("MNEMO_FAKE_CUDA_MODULE");
    assert_non_null(fake);
    char dir[] = "/tmp/mnemo-cuda-module-XXXXXX", exe[128], module[128];
    assert_non_null(mkdtemp(dir));
    snprintf(exe, sizeof exe, "%s/test_cuda_module", dir);
    snprintf(module, sizeof module, "%s/libmnemo-cuda.so", dir);
    copy_file("/proc/self/exe", exe);
    assert_int_equal(chmod(exe, 0700), 0);
    copy_file(fake, module);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsetenv("MNEMO_CUDA_MODULE");
        setenv("MNEMO_EXPECT_MODULE", module, 1);
        execl(exe, exe, "beside-run", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    unlink(exe);
    unlink(module);
    rmdir(dir);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_beside_run(void **state) {
    (void)state;
    const char *module = getenv("MNEMO_EXPECT_MODULE");
    assert_non_null(module);
    int count = -1;
    assert_int_equal(mn_cuda_device_count(&count), MN_ERR_DEVICE);
    print_message("beside: %s\n", mn_last_error());
    assert_non_null(strstr(mn_last_error(), module));
    assert_non_null(strstr(mn_last_error(), "of another build"));
}

int main(int argc, char **argv) {
    if (argc > 1)
        mode = argv[1];
#ifndef MN_HAVE_CUDA
    if (strcmp(mode, "default"))
        return 77; /* no module to load or refuse: `default` checks that the build says so */
#endif
    if (!strcmp(mode, "beside") || !strcmp(mode, "beside-run")) {
        const struct CMUnitTest outer[] = {cmocka_unit_test(test_module_beside_the_loader)};
        const struct CMUnitTest inner[] = {cmocka_unit_test(test_beside_run)};
        return !strcmp(mode, "beside") ? cmocka_run_group_tests(outer, NULL, NULL)
                                       : cmocka_run_group_tests(inner, NULL, NULL);
    }
    if (!strcmp(mode, "default")) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_cpu_work_maps_no_cuda),
            cmocka_unit_test(test_first_cuda_call_loads_the_module),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_refused_module)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
