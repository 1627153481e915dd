/* What every `mnemo` subcommand shares: strict parsing of option values (the whole string,
 * range-checked), the --device and --matmul options, and getopt's errors. A parser that
 * refuses prints one line to stderr, "mnemo <cmd>: <option> wants ..., got '<value>'", naming
 * the accepted range, and returns 0 (the command then exits 2); it returns 1 when *out is set.
 * Timings use the library's clock, mn_clock_s (src/core/clock.h). */
#ifndef MN_CLI_UTIL_H
#define MN_CLI_UTIL_H

#include <stdint.h>
#include <stdio.h>

#include "mnemo.h"
#include "model/backend.h"

/* A decimal integer in lo..hi: no sign-less junk, no trailing characters, no overflow. */
int cli_int(const char *cmd, const char *opt, const char *arg, int lo, int hi, int *out);
int cli_int64(const char *cmd, const char *opt, const char *arg, int64_t lo, int64_t hi, int64_t *out);
/* A finite number in [lo, hi] (strtod's syntax, the whole string). */
int cli_double(const char *cmd, const char *opt, const char *arg, double lo, double hi, double *out);

/* cpu | cuda | auto, resolved by mn_device_resolve; its notice (auto fell back to the CPU)
 * goes to stderr. With the stand-in (below), cuda and auto resolve to it. */
int cli_device(const char *cmd, const char *arg, mn_device *out);
/* mnemo-test-hooks with MNEMO_TEST_STANDIN=1: the guarded host backend (tests/guarded_backend.h)
 * in place of the GPU, so the commands' device code paths run on machines without one
 * (scripts/gpu-check's rehearsal); =wrong: its twin with a wrong linear layer (a test proves
 * with it that its command took the device path). NULL otherwise: the device's own table. */
const mn_backend *cli_standin(void);
/* --device of a command that runs a model: arg resolved (cli_device) into the backend table
 * its inference runs on (the stand-in's, with it); 0 after printing why not. */
int cli_backend(const char *cmd, const char *arg, const mn_backend **out);
/* fp32 | tf32 | bf16 */
int cli_matmul(const char *cmd, const char *arg, mn_matmul *out);
const char *cli_matmul_name(mn_matmul m);

/* For getopt_long's ':' (a value missing) and '?' (an unknown option), with optstring
 * starting with ':': prints the error, then usage(stderr) when usage is given; returns 2. */
int cli_option_error(const char *cmd, int opt, char **argv, void (*usage)(FILE *out));
/* "mnemo CMD: WHAT: <mn_last_error()>" (no WHAT when NULL) on stderr; returns 1, the exit code
 * of a failed command. */
int cli_fail(const char *cmd, const char *what);

#endif
