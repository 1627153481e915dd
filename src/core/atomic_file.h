/* Atomic file replacement, shared by every writer (JSONL, shards, tokenizers, checkpoints,
 * session stores): write a temp file beside the target, fsync it, rename it over the target,
 * fsync the folder. A crash at any point leaves either the old file or the new one. */
#ifndef MN_ATOMIC_FILE_H
#define MN_ATOMIC_FILE_H

#include "mnemo.h"

typedef struct {
    char *path; /* the target */
    char *tmp;  /* "<path>.tmp.<pid>": write here, then commit */
} mn_atomic_file;

/* Refuses a target that exists and is not a regular file (/dev/null, a folder, a fifo):
 * renaming over it would replace it. Then names the temp file; the caller creates it. */
mn_status mn_atomic_begin(const char *path, mn_atomic_file *af);
/* The caller has closed the temp file: fsync it, rename it over the target, fsync the folder.
 * On failure the temp file is removed and the target is untouched. Frees af either way. */
mn_status mn_atomic_commit(mn_atomic_file *af);
/* Creates the file tmp and writes the bytes into it with plain write(), then fsync and close;
 * errors name target, tmp and the cause (errno text: a full disk is reported exactly). On
 * failure tmp may be left behind: the caller removes it (mn_atomic_abort). */
mn_status mn_write_new_file(const char *tmp, const void *data, size_t size, const char *target);
/* The whole cycle for bytes already in memory: begin, write, commit (abort on failure). */
mn_status mn_atomic_write_bytes(const char *path, const void *data, size_t size);
/* Removes the temp file and frees af. Safe after a failed begin. */
void mn_atomic_abort(mn_atomic_file *af);
/* fsync the folder holding path, so that a rename into it survives a crash. */
mn_status mn_fsync_parent_dir(const char *path);
/* fsync a closed file by path. */
mn_status mn_fsync_path(const char *path);

#endif
