/* The command line's shared helpers (cli_util.h). */
#include "cli_util.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* strtoll and strtod skip leading white space: a value is its whole string, so refuse it */
static int starts_clean(const char *arg) { return arg[0] && !isspace((unsigned char)arg[0]); }

int cli_int64(const char *cmd, const char *opt, const char *arg, int64_t lo, int64_t hi, int64_t *out) {
    char *end = NULL;
    errno = 0;
    long long v = starts_clean(arg) ? strtoll(arg, &end, 10) : 0;
    if (!starts_clean(arg) || errno || *end || v < lo || v > hi) {
        fprintf(stderr, "mnemo %s: %s wants an integer in %" PRId64 "..%" PRId64 ", got '%s'\n", cmd, opt, lo, hi,
                arg);
        return 0;
    }
    *out = (int64_t)v;
    return 1;
}

int cli_int(const char *cmd, const char *opt, const char *arg, int lo, int hi, int *out) {
    int64_t v;
    if (!cli_int64(cmd, opt, arg, lo, hi, &v))
        return 0;
    *out = (int)v;
    return 1;
}

int cli_double(const char *cmd, const char *opt, const char *arg, double lo, double hi, double *out) {
    char *end = NULL;
    errno = 0;
    double v = starts_clean(arg) ? strtod(arg, &end) : NAN;
    if (!starts_clean(arg) || errno || *end || !isfinite(v) || !(v >= lo && v <= hi)) {
        fprintf(stderr, "mnemo %s: %s wants a number in [%g, %g], got '%s'\n", cmd, opt, lo, hi, arg);
        return 0;
    }
    *out = v;
    return 1;
}

#ifdef MN_TEST_HOOKS
#include "../tests/guarded_backend.h"
const mn_backend *cli_standin(void) {
    const char *e = getenv("MNEMO_TEST_STANDIN");
    if (!e || !*e || !strcmp(e, "0"))
        return NULL;
    return strcmp(e, "wrong") ? mn_guarded_backend() : mn_guarded_backend_wrong();
}
#else
const mn_backend *cli_standin(void) { return NULL; }
#endif

int cli_device(const char *cmd, const char *arg, mn_device *out) {
    char notice[512];
    if (cli_standin() && (!strcmp(arg, "cuda") || !strcmp(arg, "auto"))) {
        fprintf(stderr, "mnemo %s: the guarded host backend stands in for the GPU (MNEMO_TEST_STANDIN)\n", cmd);
        *out = MN_DEVICE_CUDA;
        return 1;
    }
    if (mn_device_resolve(arg, out, notice, sizeof notice) != MN_OK) {
        fprintf(stderr, "mnemo %s: %s\n", cmd, mn_last_error());
        return 0;
    }
    if (notice[0])
        fprintf(stderr, "%s\n", notice);
    return 1;
}

int cli_backend(const char *cmd, const char *arg, const mn_backend **out) {
    mn_device device;
    if (!cli_device(cmd, arg, &device))
        return 0;
    *out = device == MN_DEVICE_CUDA ? cli_standin() : NULL;
    if (!*out && mn_backend_for(device, out) != MN_OK) {
        fprintf(stderr, "mnemo %s: --device %s: %s\n", cmd, arg, mn_last_error());
        return 0;
    }
    return 1;
}

static const char *const matmul_names[] = {"fp32", "tf32", "bf16"};

int cli_matmul(const char *cmd, const char *arg, mn_matmul *out) {
    for (int m = MN_MATMUL_FP32; m <= MN_MATMUL_BF16; m++)
        if (!strcmp(arg, matmul_names[m])) {
            *out = (mn_matmul)m;
            return 1;
        }
    fprintf(stderr, "mnemo %s: --matmul wants fp32, tf32 or bf16, got '%s'\n", cmd, arg);
    return 0;
}

const char *cli_matmul_name(mn_matmul m) {
    return m >= MN_MATMUL_FP32 && m <= MN_MATMUL_BF16 ? matmul_names[m] : "?";
}

int cli_option_error(const char *cmd, int opt, char **argv, void (*usage)(FILE *out)) {
    if (opt == ':')
        fprintf(stderr, "mnemo %s: %s needs a value\n", cmd, argv[optind - 1]);
    else
        fprintf(stderr, "mnemo %s: unknown option '%s'%s\n", cmd, argv[optind - 1], usage ? "" : " (see --help)");
    if (usage)
        usage(stderr);
    return 2;
}

int cli_fail(const char *cmd, const char *what) {
    fprintf(stderr, "mnemo %s: %s%s%s\n", cmd, what ? what : "", what ? ": " : "", mn_last_error());
    return 1;
}
