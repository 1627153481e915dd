/* Data-parallel `mnemo train` under mpirun through the real binary (MNEMO_BIN, MNEMO_MPIRUN):
 * 2 ranks equal 1 rank with 2 micro-batches bit for bit (and 1 rank with the whole batch
 * within a stated tolerance), ZeRO-1 equals plain data parallel, the ranks' episodes partition
 * the global batches, resume with the same and with another number of ranks, a killed rank or
 * a stopped one ends the job within a bounded time, and killing rank 0 while it writes
 * checkpoints leaves the previous one valid. Without MPI (or mpirun) only the library tests
 * run, and their pass reports SKIP (77): the mpirun tests did not run. */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "train/dist.h"
#include "io/checkpoint.h"

#include "cli_harness.h"

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int setup_work_dir(void **state) {
    (void)state;
    use_hooks_bin(0); /* the shipped mnemo, unless a test asks for the hooks */
    return make_work_dir("mnemo-dist");
}

static int end_jobs(void **state);

static int remove_work_dir(void **state) {
    end_jobs(state);
    return rm_work_dir();
}

/* The direct children of pid (mpirun's ranks; OpenMPI gives each a process group of its own). */
static int children_of(pid_t parent, pid_t *out, int cap) {
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)) && n < cap) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        char *stat = slurp(path), *close_paren = strrchr(stat, ')');
        int ppid = 0;
        char state;
        if (close_paren && sscanf(close_paren + 1, " %c %d", &state, &ppid) == 2 && ppid == parent)
            out[n++] = (pid_t)atoi(e->d_name);
        free(stat);
    }
    if (d)
        closedir(d);
    return n;
}

/* Jobs started by this test, ended by the teardown whatever happened. */
static pid_t jobs[32];
static int n_jobs;

static void kill_job(pid_t job) {
    pid_t kids[16];
    int n = children_of(job, kids, 16);
    for (int i = 0; i < n; i++) {
        kill(kids[i], SIGKILL);
        kill(kids[i], SIGCONT);
    }
    kill(-job, SIGKILL);
}

static int end_jobs(void **state) {
    (void)state;
    for (int i = 0; i < n_jobs; i++)
        if (waitpid(jobs[i], NULL, WNOHANG) == 0) {
            kill_job(jobs[i]);
            waitpid(jobs[i], NULL, 0);
        }
    n_jobs = 0;
    return 0;
}

/* Starts `mpirun -np N mnemo ARGS...` (ranks == 0: mnemo alone) in a process group of its own,
 * stdout/stderr in <log>.out/.err. One thread per rank; the MCA settings make OpenMPI work in
 * containers (shared memory without cross-memory attach, no core binding on a shared machine). */
static pid_t spawn(int ranks, const char *log, const char *const *args) {
    const char *pre[16] = {NULL};
    if (ranks > 0) {
        const char *mpi[] = {getenv("MNEMO_MPIRUN"), "--allow-run-as-root", "--oversubscribe", "--bind-to", "none",
                             "--mca", "btl", "self,vader", "--mca", "btl_vader_single_copy_mechanism", "none", "-np"};
        size_t n = sizeof mpi / sizeof mpi[0];
        memcpy(pre, mpi, sizeof mpi);
        static char np[8][16];
        static int k;
        char *s = np[k++ % 8];
        snprintf(s, 16, "%d", ranks);
        pre[n] = s;
    }
    pid_t pid = spawn_logged(log, pre, args, 1);
    if (n_jobs < 32)
        jobs[n_jobs++] = pid;
    return pid;
}

/* Exit code (128 + signal when killed); kills the group and fails after `limit` seconds. */
static int wait_within(pid_t pid, double limit, double *took) {
    double t0 = now_s();
    for (;;) {
        int status;
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid) {
            if (took)
                *took = now_s() - t0;
            return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
        }
        if (now_s() - t0 > limit) {
            kill_job(pid);
            waitpid(pid, &status, 0);
            fail_msg("the job (pid %d) was still running after %.0f s", (int)pid, limit);
        }
        sleep_s(0.02);
    }
}

static void run_expect(int want, int ranks, const char *log, const char *const *args) {
    char who[32];
    snprintf(who, sizeof who, "%d rank(s): ", ranks);
    check_exit(wait_within(spawn(ranks, log, args), 600, NULL), want, who, log, args);
}

/* The pid of rank `rank` among mpirun's children (their environment names the rank). */
static pid_t rank_pid(pid_t mpirun, int rank) {
    char want[64];
    snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
    for (int tries = 0; tries < 500; tries++) {
        pid_t kids[16];
        int n = children_of(mpirun, kids, 16);
        for (int k = 0; k < n; k++) {
            char path[300];
            snprintf(path, sizeof path, "/proc/%d/environ", (int)kids[k]);
            FILE *f = fopen(path, "rb");
            static char buf[1 << 17];
            size_t len = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
            if (f)
                fclose(f);
            buf[len] = '\0';
            for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
                if (!strcmp(buf + i, want))
                    return kids[k];
        }
        sleep_s(0.02);
    }
    fail_msg("no rank %d under mpirun %d", rank, (int)mpirun);
    return 0;
}

/* ---------------------------------------------------------------- checkpoints */
/* Largest |a - b| over the parameters. */
static double max_param_diff(const char *a_path, const char *b_path) {
    loaded a = load_ckpt(a_path), b = load_ckpt(b_path);
    size_t P = mn_model_num_params(a.model);
    const float *x = mn_model_params(a.model), *y = mn_model_params(b.model);
    double worst = 0;
    for (size_t i = 0; i < P; i++) {
        double d = fabs((double)x[i] - (double)y[i]);
        if (!(d <= worst))
            worst = d;
    }
    free_loaded(&a);
    free_loaded(&b);
    return worst;
}

static void assert_dist_layout(const char *path, int world, int zero) {
    mn_checkpoint_dist d;
    int found = 0;
    OK(mn_checkpoint_read_dist(path, &d, &found));
    assert_true(found);
    assert_int_equal(d.world_size, world);
    assert_int_equal(d.zero_stage, zero);
    loaded l = load_ckpt(path);
    for (int r = 0; r < world; r++) {
        const uint64_t *c = d.rank_cursors + (size_t)r * MN_DIST_CURSOR_FIELDS;
        assert_int_equal(c[0], l.state.data_epoch);
        assert_int_equal(c[1], l.state.data_position);
        assert_int_equal(c[2], (uint64_t)r * (4 / (uint64_t)world)); /* global batch 4 */
        assert_int_equal(c[3], 4 / (uint64_t)world);
    }
    free_loaded(&l);
    mn_checkpoint_dist_free(&d);
}

/* ---------------------------------------------------------------- equivalence */
/* 2 ranks x 2 episodes == 1 rank x 2 micro-batches of 2, bit for bit: each micro-batch's
 * gradient is computed exactly as on its rank (scaled by the same global weight), and a sum
 * of two floats does not depend on the order. 1 rank with the whole batch of 4 sums the same
 * terms in another order inside its matrix products, so it matches within a tolerance. */
static void test_two_ranks_equal_one(void **state) {
    (void)state;
    const char *two[] = {TINY_RECALL, "--steps", "12", "--run-dir", wpath("eq2"), NULL};
    run_expect(0, 2, "eq2", two);
    const char *accum[] = {TINY_RECALL, "--steps", "12", "--grad-accum", "2", "--run-dir", wpath("eq1a"), NULL};
    run_expect(0, 1, "eq1a", accum);
    const char *whole[] = {TINY_RECALL, "--steps", "12", "--run-dir", wpath("eq1"), NULL};
    run_expect(0, 0, "eq1", whole);
    const char *zero[] = {TINY_RECALL, "--steps", "12", "--zero", "1", "--run-dir", wpath("eqz"), NULL};
    run_expect(0, 2, "eqz", zero);

    log_has("eq2", "out", "data parallel: 2 ranks");
    log_has("eq2", "out", "communication");
    assert_same_training(wpath("eq2/ckpt-00000012.h5"), wpath("eq1a/ckpt-00000012.h5"));
    /* ZeRO-1: the norm is a sum of per-shard sums in double, rounded once to float for the clip
     * coefficient (grad_clip 1 clips here); the update itself is the same arithmetic */
    assert_same_training(wpath("eq2/ckpt-00000012.h5"), wpath("eqz/ckpt-00000012.h5"));
    assert_dist_layout(wpath("eq2/ckpt-00000012.h5"), 2, 0);
    assert_dist_layout(wpath("eqz/ckpt-00000012.h5"), 2, 1);
    const char *inspect[] = {"inspect", wpath("eqz/ckpt-00000012.h5"), NULL};
    run_expect(0, 0, "inspect", inspect);
    log_has("inspect", "out", "ranks        2 (ZeRO stage 1, 1 micro-batch(es) a rank); rank 0: episodes 0..1");
    log_has("inspect", "out", "verified");
    double d = max_param_diff(wpath("eq2/ckpt-00000012.h5"), wpath("eq1/ckpt-00000012.h5"));
    print_message("2 ranks vs 1 rank with the whole batch: max |param diff| %.3g after 12 steps (bound 1e-4)\n", d);
    assert_true(d <= 1e-4);
    /* only rank 0 writes metrics and prints progress: one line per step */
    char *out = log_text("eq2", "out"), *p = out;
    int lines = 0;
    while ((p = strstr(p, "step 12/12"))) {
        lines++;
        p++;
    }
    free(out);
    assert_int_equal(lines, 1);
}

/* Every episode of every global batch is trained exactly once over the ranks. */
static void test_episodes_partitioned(void **state) {
    (void)state;
    use_hooks_bin(1); /* MNEMO_EPISODE_LOG */
    setenv("MNEMO_EPISODE_LOG", wpath("ep2"), 1);
    const char *two[] = {TINY_RECALL, "--steps", "10", "--run-dir", wpath("ep2run"), NULL};
    run_expect(0, 2, "ep2", two);
    setenv("MNEMO_EPISODE_LOG", wpath("ep1"), 1);
    const char *one[] = {TINY_RECALL, "--steps", "10", "--run-dir", wpath("ep1run"), NULL};
    run_expect(0, 0, "ep1", one);
    unsetenv("MNEMO_EPISODE_LOG");
    char cmd[2000];
    /* union of the ranks' lines == the single process's lines, and no line twice */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && sort ep2.0 ep2.1 > ep2.all && sort ep1.0 > ep1.all && cmp -s ep2.all ep1.all && "
             "test \"$(sort -u ep2.all | wc -l)\" = \"$(wc -l < ep2.all)\" && test \"$(wc -l < ep1.all)\" = 40 && "
             "test \"$(wc -l < ep2.0)\" = 20 && test \"$(wc -l < ep2.1)\" = 20 && "
             "! awk '$2 >= 2' ep2.0 | grep -q . && ! awk '$2 < 2' ep2.1 | grep -q .",
             work_dir);
    if (system(cmd) != 0) {
        char *a = slurp(wpath("ep2.all")), *b = slurp(wpath("ep1.all"));
        fail_msg("the ranks' episodes do not partition the single process's:\n2 ranks:\n%s\n1 rank:\n%s", a, b);
    }
}

/* ---------------------------------------------------------------- resume */
static void test_resume_same_and_other_rank_count(void **state) {
    (void)state;
    const char *straight[] = {TINY_RECALL, "--steps", "12", "--checkpoint-interval", "6", "--run-dir", wpath("rs"),
                              NULL};
    run_expect(0, 2, "rs", straight);
    /* the same number of ranks: bit-identical continuation (crossing a curriculum stage) */
    const char *same[] = {"train", "--resume", wpath("rs/ckpt-00000006.h5"), "--run-dir", wpath("rs2"), NULL};
    run_expect(0, 2, "rs2", same);
    log_has("rs2", "out", "resuming");
    assert_same_training(wpath("rs/ckpt-00000012.h5"), wpath("rs2/ckpt-00000012.h5"));
    /* 2 ranks -> 1 rank (2 micro-batches): re-sharded, still bit-identical */
    const char *to1[] = {"train", "--resume", wpath("rs/ckpt-00000006.h5"), "--grad-accum", "2", "--run-dir",
                         wpath("rs1"), NULL};
    run_expect(0, 1, "rs1", to1);
    log_has("rs1", "out", "re-sharding: the checkpoint was trained on 2 rank(s), this run has 1");
    assert_same_training(wpath("rs/ckpt-00000012.h5"), wpath("rs1/ckpt-00000012.h5"));
    assert_dist_layout(wpath("rs1/ckpt-00000012.h5"), 1, 0);
    /* 1 rank -> 2 ranks, with ZeRO-1 switched on at the resume */
    const char *to2[] = {"train", "--resume", wpath("rs1/ckpt-00000012.h5"), "--steps", "16", "--grad-accum", "1",
                         "--zero", "1", "--run-dir", wpath("rs3"), NULL};
    run_expect(0, 2, "rs3", to2);
    log_has("rs3", "out", "re-sharding: the checkpoint was trained on 1 rank(s), this run has 2");
    const char *more[] = {"train", "--resume", wpath("rs/ckpt-00000012.h5"), "--steps", "16", "--run-dir",
                          wpath("rs4"), NULL};
    run_expect(0, 2, "rs4", more);
    assert_same_training(wpath("rs3/ckpt-00000016.h5"), wpath("rs4/ckpt-00000016.h5"));
    /* a global batch that does not split over the ranks is refused, naming the numbers */
    const char *odd[] = {TINY_RECALL, "--steps", "2", "--batch", "3", "--run-dir", wpath("odd"), NULL};
    int rc = wait_within(spawn(2, "odd", odd), 120, NULL);
    assert_int_not_equal(rc, 0);
    log_has("odd", "err", "batch 3 is not divisible by 2 rank(s)");
}

/* ---------------------------------------------------------------- token shards */
/* The corpus's own stream (a 64-bit LCG): the shard counts asserted below were measured on it. */
static int lcg_draw(void *ctx, int n) {
    uint64_t *x = ctx;
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return (int)(*x >> 33) % n;
}

static void run_ok(const char *log, const char *const *args) { run_expect(0, 0, log, args); }

#define TINY_SHARDS                                                                                            \
    TINY_SHARDS_MODEL, "--batch", "4", "--turns", "4", "--bptt", "2", "--curriculum", "0:2,9:4", "--lr", "0.01",  \
        "--warmup-steps", "2", "--eval-interval", "10", "--eval-batches", "1", "--eval-probes", "6", "--threads",  \
        "1", "--device", "cpu", "--steps", "24", "--checkpoint-interval", "12"

/* Token shards: each rank's micro-batch is padded to its own longest turn; the windows of the
 * shuffled epochs (the cursor wraps) are partitioned over the ranks; 2 ranks == 1 rank with
 * 2 micro-batches bit for bit, and a 2-rank resume continues bit-identically. */
static void test_shards_two_ranks(void **state) {
    (void)state;
    use_hooks_bin(1); /* MNEMO_EPISODE_LOG */
    uint64_t x = 77;
    make_text_data(lcg_draw, &x, run_ok);
    setenv("MNEMO_EPISODE_LOG", wpath("sh2"), 1);
    const char *two[] = {TINY_SHARDS, "--run-dir", wpath("sh2run"), NULL};
    run_expect(0, 2, "sh2", two);
    setenv("MNEMO_EPISODE_LOG", wpath("sh1"), 1);
    const char *one[] = {TINY_SHARDS, "--grad-accum", "2", "--run-dir", wpath("sh1run"), NULL};
    run_expect(0, 0, "sh1", one);
    unsetenv("MNEMO_EPISODE_LOG");
    assert_same_training(wpath("sh2run/ckpt-00000024.h5"), wpath("sh1run/ckpt-00000024.h5"));
    loaded l = load_ckpt(wpath("sh2run/ckpt-00000024.h5"));
    assert_true(l.state.data_epoch >= 1); /* the cursor wrapped into another epoch */
    free_loaded(&l);
    char cmd[2000];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && sort sh2.0 sh2.1 > sh2.all && sort sh1.0 > sh1.all && cmp -s sh2.all sh1.all && "
             "test \"$(cut -d' ' -f1,2 sh2.all | sort -u | wc -l)\" = 96 && test \"$(wc -l < sh2.0)\" = 48",
             work_dir);
    if (system(cmd) != 0)
        fail_msg("the ranks' shard windows do not partition the single process's (see %s/sh2.all)", work_dir);
    const char *resumed[] = {"train", "--resume", wpath("sh2run/ckpt-00000012.h5"), "--run-dir", wpath("sh2b"), NULL};
    run_expect(0, 2, "sh2b", resumed);
    assert_same_training(wpath("sh2run/ckpt-00000024.h5"), wpath("sh2b/ckpt-00000024.h5"));
}

/* --stream 1 keeps its carried states in one process: several ranks are refused. */
static void test_stream_refused_on_ranks(void **state) {
    (void)state;
    uint64_t x = 77;
    make_text_data(lcg_draw, &x, run_ok);
    const char *stream[] = {TINY_SHARDS, "--stream", "1", "--run-dir", wpath("sh2s"), NULL};
    run_expect(2, 2, "sh2s", stream);
    log_has("sh2s", "err", "trains in one process");
}

/* `mnemo train --device cuda` with 2 ranks on the guarded stand-in (mnemo-test-hooks,
 * MNEMO_TEST_STANDIN=1: the CPU's ops behind the device code path): the device trainer's
 * gradients go through the rank-order reduction of its host mirror (no NCCL: the stand-in is
 * no GPU), so the checkpoint equals the CPU's 2-rank one bit for bit; ZeRO-1 is refused. On a
 * GPU the same loop all-reduces over NCCL instead (docs/distributed.md). */
static void test_device_ranks_on_the_standin(void **state) {
    (void)state;
    const char *cpu[] = {TINY_RECALL, "--steps", "6", "--run-dir", wpath("dv_cpu"), NULL};
    run_expect(0, 2, "dv_cpu", cpu);
    use_hooks_bin(1);
    setenv("MNEMO_TEST_STANDIN", "1", 1);
    const char *dev[] = {TINY_RECALL, "--steps", "6", "--device", "cuda", "--run-dir", wpath("dv_dev"), NULL};
    run_expect(0, 2, "dv_dev", dev);
    const char *zero[] = {TINY_RECALL, "--steps", "6", "--device", "cuda", "--zero", "1", "--run-dir",
                          wpath("dv_zero"), NULL};
    run_expect(2, 2, "dv_zero", zero);
    unsetenv("MNEMO_TEST_STANDIN");
    use_hooks_bin(0);
    log_has("dv_dev", "err", "training on the guarded host backend");
    log_has("dv_dev", "out", "data parallel: 2 ranks");
    log_has("dv_zero", "err", "zero 1 (sharded moments) runs on the CPU only");
    assert_same_training(wpath("dv_dev/ckpt-00000006.h5"), wpath("dv_cpu/ckpt-00000006.h5"));
}

/* ---------------------------------------------------------------- faults */
/* kill -9 of one rank: mpirun ends the job with an error within a bounded time. */
static void test_killed_rank_ends_job(void **state) {
    (void)state;
    const char *args[] = {TINY_RECALL, "--steps", "1000000", "--eval-interval", "0", "--checkpoint-interval", "0",
                          "--run-dir", wpath("kill"), NULL};
    pid_t job = spawn(2, "kill", args);
    wait_for_step(job, wpath("kill"), 5);
    kill(rank_pid(job, 1), SIGKILL);
    double took = 0;
    int rc = wait_within(job, 60, &took);
    char *err = log_text("kill", "err");
    print_message("rank 1 killed: mpirun exited %d after %.1f s\n", rc, took);
    if (rc == 0)
        fail_msg("mpirun exited 0 after a rank was killed; stderr:\n%s", err);
    if (!strstr(err, "process rank 1") || !strstr(err, "signal 9"))
        fail_msg("no clear message naming the killed rank and its signal; stderr:\n%s", err);
    free(err);
}

/* SIGUSR1 to mpirun (which forwards it to every rank): all ranks finish the same step, rank 0
 * writes the checkpoint, exit 3; a resume continues from it. */
static void test_sigusr1_stops_all_ranks(void **state) {
    (void)state;
    const char *args[] = {TINY_RECALL, "--steps", "1000000", "--eval-interval", "0", "--checkpoint-interval", "0",
                          "--run-dir", wpath("usr1"), NULL};
    pid_t job = spawn(2, "usr1", args);
    wait_for_step(job, wpath("usr1"), 5);
    kill(job, SIGUSR1);
    int rc = wait_within(job, 60, NULL);
    char *err = log_text("usr1", "err");
    if (rc != 3 || !strstr(err, "interrupted by SIGUSR1"))
        fail_msg("exit %d after SIGUSR1, expected 3; stderr:\n%s", rc, err);
    free(err);
    char latest[700];
    uint64_t step = 0;
    int found = 0;
    OK(mn_checkpoint_latest(wpath("usr1"), latest, sizeof latest, &step, &found));
    assert_true(found && step >= 5);
    assert_dist_layout(latest, 2, 0);
}

/* A stopped rank (SIGSTOP) cannot die on its own: the others time out (comm_timeout), say so,
 * and the CLI ends the job. */
static void test_stopped_rank_times_out(void **state) {
    (void)state;
    const char *args[] = {TINY_RECALL, "--steps", "1000000", "--eval-interval", "0", "--checkpoint-interval", "0",
                          "--comm-timeout", "3", "--run-dir", wpath("stop"), NULL};
    pid_t job = spawn(2, "stop", args);
    wait_for_step(job, wpath("stop"), 5);
    pid_t r1 = rank_pid(job, 1);
    kill(r1, SIGSTOP);
    double took = 0;
    int rc = wait_within(job, 60, &took);
    kill(r1, SIGCONT);
    kill(r1, SIGKILL); /* normally already gone with the job */
    char *err = log_text("stop", "err");
    print_message("rank 1 stopped: the job exited %d after %.1f s\n", rc, took);
    if (rc == 0 || !strstr(err, "no answer from the other ranks within 3 s"))
        fail_msg("exit %d; expected a timeout error; stderr:\n%s", rc, err);
    assert_non_null(strstr(err, "MPI rank 0 of 2"));
    free(err);
}

/* kill -9 of rank 0 in the middle of a checkpoint write (a slow disk: 40 ms per dataset, so
 * that a write takes seconds): the previous checkpoint stays the latest, loads with every
 * tensor's checksum verified, and the run resumes from it on 2 ranks. */
static void test_kill_during_checkpoint(void **state) {
    (void)state;
    use_hooks_bin(1); /* --fault-checkpoint-sleep-ms */
    const char *args[] = {TINY_RECALL, "--steps", "1000000", "--eval-interval", "0", "--checkpoint-interval", "2",
                          "--keep-checkpoints", "2", "--fault-checkpoint-sleep-ms", "40", "--run-dir", wpath("ck"),
                          NULL};
    pid_t job = spawn(2, "ck", args);
    /* step 4's metrics line comes before its checkpoint; ckpt-2 is complete by then */
    wait_for_step(job, wpath("ck"), 4);
    sleep_s(0.5); /* well inside the write of ckpt-4, which takes ~40 ms x ~50 datasets */
    kill(rank_pid(job, 0), SIGKILL);
    int rc = wait_within(job, 60, NULL);
    assert_int_not_equal(rc, 0);
    char latest[700];
    uint64_t step = 0;
    int found = 0;
    OK(mn_checkpoint_latest(wpath("ck"), latest, sizeof latest, &step, &found));
    assert_true(found);
    assert_int_equal(step, 2); /* ckpt-4 was never completed, and nothing touched ckpt-2 */
    loaded l = load_ckpt(latest); /* fails the test unless complete and verified */
    assert_int_equal(l.state.step, 2);
    free_loaded(&l);
    const char *resume[] = {"train", "--resume", wpath("ck"), "--steps", "6", "--checkpoint-interval", "0",
                            "--run-dir", wpath("ck"), NULL};
    run_expect(0, 2, "ck_resume", resume);
    log_has("ck_resume", "out", "resuming");
    log_has("ck_resume", "out", "at step 2");
    assert_true(access(wpath("ck/ckpt-00000006.h5"), F_OK) == 0);
}

/* ---------------------------------------------------------------- ZeRO-1 in the library */
/* A trainer that keeps only [h, P) of the moments takes, on that range, exactly the step a
 * whole trainer takes; it refuses the whole-vector step and a checkpoint without the gathered
 * moments; with them it writes one process's layout. No MPI needed. */
static void test_sharded_moments(void **state) {
    (void)state;
    mn_config c = mn_config_demo();
    c.vocab_size = 40, c.d_model = 16, c.n_heads = 2, c.n_layers = 1, c.n_comp_layers = 1, c.n_slots = 2;
    c.max_turn_tokens = 6;
    mn_model *ma, *mb;
    mn_trainer *ta, *tb;
    OK(mn_model_create(&c, &ma));
    OK(mn_model_create(&c, &mb));
    OK(mn_model_init(ma, 5));
    OK(mn_model_init(mb, 5));
    OK(mn_trainer_create(ma, 1, 1, &ta));
    OK(mn_trainer_create(mb, 1, 1, &tb));
    size_t P = mn_model_num_params(ma), h = P / 3, lo, hi;
    OK(mn_trainer_shard_moments(tb, h, P));
    assert_int_equal(mn_trainer_moments_range(tb, &lo, &hi), 1);
    assert_int_equal(lo, h);
    assert_int_equal(hi, P);
    assert_int_equal(mn_trainer_moments_range(ta, NULL, NULL), 0);
    float *init = malloc(P * sizeof(float));
    memcpy(init, mn_model_params(mb), P * sizeof(float));
    mn_adamw_config opt = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f}; /* clipping on */
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < P; i++)
            mn_trainer_grads(ta)[i] = mn_trainer_grads(tb)[i] = (float)((int)((i * 7919 + (size_t)step * 31) % 201) - 100) * 1e-3f;
        double sumsq = mn_grad_sumsq_range(ta, 0, P);
        OK(mn_adamw_step(ta, &opt, NULL));
        OK(mn_adamw_step_shard(tb, &opt, sumsq, h, P));
    }
    assert_memory_equal(mn_model_params(ma) + h, mn_model_params(mb) + h, (P - h) * sizeof(float));
    assert_memory_equal(mn_trainer_adam_m(ta) + h, mn_trainer_adam_m(tb), (P - h) * sizeof(float));
    assert_memory_equal(mn_trainer_adam_v(ta) + h, mn_trainer_adam_v(tb), (P - h) * sizeof(float));
    assert_memory_equal(init, mn_model_params(mb), h * sizeof(float)); /* not its shard: untouched */
    assert_int_equal(mn_adamw_step(tb, &opt, NULL), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_adamw_step_shard(tb, &opt, 1.0, 0, P), MN_ERR_INVALID_ARG);
    mn_train_state st = {0};
    st.rng[0] = 1;
    assert_int_equal(mn_checkpoint_save(wpath("sharded.h5"), mb, tb, &st, NULL), MN_ERR_INVALID_ARG);
    float *m = calloc(P, sizeof(float)), *v = calloc(P, sizeof(float));
    memcpy(m + h, mn_trainer_adam_m(tb), (P - h) * sizeof(float));
    memcpy(v + h, mn_trainer_adam_v(tb), (P - h) * sizeof(float));
    mn_checkpoint_save_options o = {.adam_m = m, .adam_v = v};
    OK(mn_checkpoint_save(wpath("sharded.h5"), mb, tb, &st, &o));
    loaded l = load_ckpt(wpath("sharded.h5"));
    assert_memory_equal(mn_trainer_adam_m(l.trainer), m, P * sizeof(float));
    assert_memory_equal(mn_trainer_adam_v(l.trainer), v, P * sizeof(float));
    free_loaded(&l);
    assert_int_equal(mn_checkpoint_load(wpath("sharded.h5"), mb, tb, NULL, NULL), MN_ERR_INVALID_ARG);
    free(m), free(v), free(init);
    mn_trainer_free(ta), mn_trainer_free(tb), mn_model_free(ma), mn_model_free(mb);
}

/* The MPI-free rendezvous of the NCCL id (src/train/dist.c): three readers wait for rank 0's
 * file and get its bytes; a reader without a writer times out naming the file; a record of
 * another size is refused. */
static void test_rendezvous_file(void **state) {
    (void)state;
    const char *path = wpath("nccl-id.job1");
    unsigned char id[128];
    for (int i = 0; i < 128; i++)
        id[i] = (unsigned char)(i * 7 + 3);
    pid_t kids[3];
    for (int k = 0; k < 3; k++) {
        fflush(stdout);
        kids[k] = fork();
        if (kids[k] == 0) {
            unsigned char got[128] = {0};
            if (mn_dist_rendezvous_file(path, k + 1, got, sizeof got, 20) != MN_OK)
                _exit(2);
            _exit(memcmp(got, id, sizeof id) ? 3 : 0);
        }
    }
    sleep_s(0.2); /* the readers are polling by now */
    OK(mn_dist_rendezvous_file(path, 0, id, sizeof id, 0));
    for (int k = 0; k < 3; k++)
        assert_int_equal(wait_within(kids[k], 30, NULL), 0);
    unsigned char buf[128];
    double t0 = now_s();
    assert_int_equal(mn_dist_rendezvous_file(wpath("nccl-id.none"), 1, buf, sizeof buf, 0.3), MN_ERR_IO);
    assert_true(now_s() - t0 < 5);
    assert_non_null(strstr(mn_last_error(), "nccl-id.none"));
    assert_int_equal(mn_dist_rendezvous_file(path, 2, buf, 64, 1), MN_ERR_FORMAT);
}

/* Meson reads exit status 77 as SKIP. */
#define MESON_SKIP 77

int main(void) {
    const struct CMUnitTest library[] = {
        cmocka_unit_test_setup_teardown(test_sharded_moments, setup_work_dir, remove_work_dir),
        cmocka_unit_test_setup_teardown(test_rendezvous_file, setup_work_dir, remove_work_dir),
    };
    const char *mpirun = getenv("MNEMO_MPIRUN");
    int rc = cmocka_run_group_tests_name("library", library, NULL, NULL);
    if (!mpirun || !*mpirun || !getenv("MNEMO_MPI") || strcmp(getenv("MNEMO_MPI"), "1")) {
        /* the library tests above count; the mpirun ones did not run, so this is no PASS */
        printf("the mpirun tests are skipped: this mnemo was built without MPI (or mpirun is missing)\n");
        return rc ? rc : MESON_SKIP;
    }
    setenv("OMP_NUM_THREADS", "1", 1); /* one thread per rank */
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    /* OpenMPI keeps some allocations until exit by design; under the sanitize build,
     * LeakSanitizer would report them in every rank (tests/lsan-openmpi.supp says which). */
    const char *supp = getenv("MNEMO_LSAN_SUPP");
    if (supp && *supp) {
        char opts[1200];
        snprintf(opts, sizeof opts, "suppressions=%s:print_suppressions=0", supp);
        setenv("LSAN_OPTIONS", opts, 1);
        const char *asan = getenv("ASAN_OPTIONS");
        snprintf(opts, sizeof opts, "%s%sfast_unwind_on_malloc=0", asan ? asan : "", asan && *asan ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
        setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_ranks_equal_one, setup_work_dir, remove_work_dir),
        cmocka_unit_test_setup_teardown(test_episodes_partitioned, setup_work_dir, remove_work_dir),
        cmocka_unit_test_setup_teardown(test_resume_same_and_other_rank_count, setup_work_dir, remove_work_dir),
        cmocka_unit_test_setup_teardown(test_shards_two_ranks, setup_work_dir, remove_work_dir),
        cmocka_unit_test_setup_teardown(test_stream_refused_on_ranks, setup_work_dir, remove_work_dir),
        cmocka_unit_test_setup_teardown(test_device_ranks_on_the_standin, setup_work_dir, remove_work_dir),
        cmocka_unit_test_setup_teardown(test_killed_rank_ends_job, setup_work_dir, remove_work_dir),
        cmocka_unit_test_setup_teardown(test_sigusr1_stops_all_ranks, setup_work_dir, remove_work_dir),
        cmocka_unit_test_setup_teardown(test_stopped_rank_times_out, setup_work_dir, remove_work_dir),
        cmocka_unit_test_setup_teardown(test_kill_during_checkpoint, setup_work_dir, remove_work_dir),
    };
    return rc | cmocka_run_group_tests_name("mpirun", tests, NULL, NULL);
}
