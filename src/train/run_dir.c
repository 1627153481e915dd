/* Run directories and their owners (run_dir.h, docs/training.md). */
#include "train/run_dir.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "core/atomic_file.h"
#include "core/error.h"

#define RUN_ID_HEADER "mnemo run 1"

static mn_status new_run_id(char id[MN_RUN_ID_LEN + 1]) {
    unsigned char bytes[MN_RUN_ID_LEN / 2];
    size_t got = 0;
    while (got < sizeof bytes) {
        ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return mn_fail(MN_ERR_IO, "cannot draw a run id: getrandom: %s", strerror(errno));
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof bytes; i++)
        snprintf(id + 2 * i, 3, "%02x", bytes[i]);
    return MN_OK;
}

mn_status mn_run_dir_read_id(const char *dir, char *id, int *found, char *first_path, size_t cap) {
    *found = 0;
    id[0] = '\0';
    if (first_path && cap)
        first_path[0] = '\0';
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, MN_RUN_ID_FILE) >= sizeof path)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: path too long", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return MN_OK;
        return mn_fail(MN_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    }
    char line[PATH_MAX + 64];
    int header = 0, lines = 0;
    while (fgets(line, sizeof line, f) && lines++ < 16) {
        size_t n = strcspn(line, "\n");
        line[n] = '\0';
        if (lines == 1) {
            header = !strcmp(line, RUN_ID_HEADER);
        } else if (!strncmp(line, "id ", 3) && n == 3 + MN_RUN_ID_LEN && mn_run_id_valid(line + 3)) {
            memcpy(id, line + 3, MN_RUN_ID_LEN);
            id[MN_RUN_ID_LEN] = '\0';
        } else if (!strncmp(line, "directory ", 10) && first_path && cap) {
            snprintf(first_path, cap, "%s", line + 10);
        }
    }
    fclose(f);
    if (!header || !id[0])
        return mn_fail(MN_ERR_FORMAT,
                       "%s: not a run-id file (corrupt?): the directory's owner is unknown, so nothing is written there",
                       path);
    *found = 1;
    return MN_OK;
}

/* 1 when a and b name the same directory. */
static int same_dir(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void mn_run_dir_of(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, cap, ".");
    else if (slash == path)
        snprintf(dir, cap, "/");
    else
        snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

mn_status mn_run_dir_check(const char *dir, const char *resume, mn_run_claim *claim) {
    memset(claim, 0, sizeof *claim);
    char owner[MN_RUN_ID_LEN + 1], latest[PATH_MAX];
    int owned = 0, taken = 0;
    MN_TRY(mn_run_dir_read_id(dir, owner, &owned, claim->first_path, sizeof claim->first_path));
    MN_TRY(mn_checkpoint_latest(dir, latest, sizeof latest, NULL, &taken));
    if (!resume) {
        if (taken && owned)
            return mn_fail(MN_ERR_MISMATCH,
                           "the run directory %s holds checkpoints of run %s: continue that run with --resume %s, or "
                           "train into a new --run-dir",
                           dir, owner, dir);
        if (taken)
            return mn_fail(MN_ERR_MISMATCH,
                           "the run directory %s holds checkpoints of an earlier run: continue it with --resume %s, "
                           "or train into a new --run-dir",
                           dir, dir);
        claim->write_file = 1;
        return new_run_id(claim->id);
    }
    mn_checkpoint_info info;
    MN_TRY(mn_checkpoint_read_info(resume, &info));
    char from[MN_RUN_ID_LEN + 1], resume_dir[PATH_MAX];
    snprintf(from, sizeof from, "%s", info.run_id);
    uint64_t step = info.has_train ? info.train.step : 0;
    mn_checkpoint_info_free(&info);
    mn_run_dir_of(resume, resume_dir, sizeof resume_dir);
    int inside = same_dir(resume_dir, dir);
    if (!taken) {
        if (owned && from[0] && !strcmp(owner, from)) { /* the run's own directory, its checkpoints pruned away */
            snprintf(claim->id, sizeof claim->id, "%s", owner);
            return MN_OK;
        }
        /* a new or empty directory: a continuation of its own, which records where it came from */
        claim->write_file = 1;
        claim->continued = 1;
        snprintf(claim->parent, sizeof claim->parent, "%s", from);
        claim->parent_step = step;
        claim->first_path[0] = '\0';
        return new_run_id(claim->id);
    }
    if (owned) {
        /* a format 1 checkpoint has no id: it belongs to the directory it lies in */
        if (from[0] ? !strcmp(owner, from) : inside) {
            snprintf(claim->id, sizeof claim->id, "%s", owner);
            return MN_OK;
        }
        return mn_fail(MN_ERR_MISMATCH,
                       "the run directory %s belongs to run %s, but %s was written by %s%s: continue it into a new or "
                       "empty directory with --run-dir",
                       dir, owner, resume, from[0] ? "run " : "", from[0] ? from : "an unknown run (format 1) elsewhere");
    }
    if (!inside)
        return mn_fail(MN_ERR_MISMATCH,
                       "the run directory %s holds checkpoints of another run (%s is not one of them): continue it into a "
                       "new or empty directory with --run-dir",
                       dir, resume);
    /* the checkpoint's own directory, made before run ids: adopted */
    claim->write_file = 1;
    if (from[0]) {
        snprintf(claim->id, sizeof claim->id, "%s", from);
        return MN_OK;
    }
    return new_run_id(claim->id);
}

mn_status mn_run_dir_claim(const char *dir, const mn_run_claim *claim) {
    if (!claim->write_file)
        return MN_OK;
    char path[PATH_MAX], absolute[PATH_MAX], created[32], text[2 * PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, MN_RUN_ID_FILE) >= sizeof path)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: path too long", dir);
    if (!realpath(dir, absolute))
        return mn_fail(MN_ERR_IO, "%s: cannot resolve the run directory: %s", dir, strerror(errno));
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    int n = snprintf(text, sizeof text, "%s\nid %s\ncreated %s\ndirectory %s\n", RUN_ID_HEADER, claim->id, created,
                     absolute);
    if (claim->continued && n > 0 && (size_t)n < sizeof text)
        n += snprintf(text + n, sizeof text - (size_t)n, "continues %s step %" PRIu64 "\n",
                      claim->parent[0] ? claim->parent : "format-1-checkpoint", claim->parent_step);
    if (n < 0 || (size_t)n >= sizeof text)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: path too long", dir);
    return mn_atomic_write_bytes(path, text, (size_t)n);
}
