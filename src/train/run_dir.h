/* Run directories and their owners (docs/training.md, "Run directories"). A run directory
 * belongs to the run named by its file <dir>/run-id (a random 128-bit id, the creation time,
 * the absolute path it was made at and, for a continuation, the run and step it continues);
 * every checkpoint stores the id of the run that wrote it. A directory holding checkpoints is
 * taken: only a resume of that same run may write there, and pruning deletes only that run's
 * checkpoints, so that no run ever replaces or deletes another's files. */
#ifndef MN_RUN_DIR_H
#define MN_RUN_DIR_H

#include <stddef.h>
#include <stdint.h>

#include "io/checkpoint.h"
#include "mnemo.h"

#define MN_RUN_ID_FILE "run-id"

/* What mn_run_dir_check decided, for mn_run_dir_claim. */
typedef struct {
    char id[MN_RUN_ID_LEN + 1];     /* the run that writes into the directory */
    int write_file;                 /* 1: (re)write <dir>/run-id when the run starts */
    char parent[MN_RUN_ID_LEN + 1]; /* a continuation elsewhere: the run continued ("" for format 1) */
    uint64_t parent_step;
    int continued;                  /* 1: resumed from parent at parent_step into a new directory */
    char first_path[1024];          /* the path the directory's run-id file was made at ("" when new) */
} mn_run_claim;

/* Decides who the run directory dir belongs to and whether this run may write into it (a
 * fresh run when resume is NULL, else a continuation of the checkpoint resume). Refused,
 * naming dir and the reason: a fresh run into a directory that holds checkpoints; a resume into
 * a directory that holds another run's checkpoints (MN_ERR_MISMATCH). dir must exist. */
mn_status mn_run_dir_check(const char *dir, const char *resume, mn_run_claim *claim);
/* Writes <dir>/run-id (atomically) when the claim says so. */
mn_status mn_run_dir_claim(const char *dir, const mn_run_claim *claim);
/* The id in <dir>/run-id into id (MN_RUN_ID_LEN + 1 bytes); *found = 0 when there is none;
 * MN_ERR_FORMAT when it is not a run-id file. first_path (nullable, cap bytes): where it was made. */
mn_status mn_run_dir_read_id(const char *dir, char *id, int *found, char *first_path, size_t cap);

/* The directory holding a file: "." for a bare name. */
void mn_run_dir_of(const char *path, char *dir, size_t cap);

#endif
