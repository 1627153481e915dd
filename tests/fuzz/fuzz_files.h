/* Shared by the fuzz targets of file loaders (checkpoints, tokenizer files, session stores,
 * shards, safetensors, probe templates): the input becomes a file in a private temp folder
 * (tmpfs when there is one: HDF5 needs a file), and after every loader call the properties
 * every loader owes whatever it is given are checked:
 *   - no HDF5 object left open (a handle leaked on an error path), and
 *   - no HDF5 diagnostic printed (the loaders run HDF5 with its error printing off).
 * Each is an abort(), so libFuzzer keeps the input as a crash. */
#ifndef MN_FUZZ_FILES_H
#define MN_FUZZ_FILES_H

#include <dirent.h>
#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mnemo.h"

static char fuzz_dir[256];

/* Empties the temp folder (its files only: loaders make no subfolders here). */
static inline void fuzz_clear_dir(void) {
    DIR *d = opendir(fuzz_dir);
    if (!d)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", fuzz_dir, e->d_name);
            unlink(path);
        }
    closedir(d);
}

static inline void fuzz_remove_dir(void) {
    fuzz_clear_dir();
    rmdir(fuzz_dir);
}

/* HDF5 calls this instead of printing its error stack: a loader let a diagnostic through. */
static inline herr_t fuzz_h5_printed(hid_t stack, void *ctx) {
    (void)ctx;
    fprintf(stderr, "fuzz: HDF5 would have printed a diagnostic (a loader runs HDF5 with printing on):\n");
    H5Eprint2(stack, stderr);
    abort();
}

/* The folder for this process's files, made once, emptied before each input. */
static inline const char *fuzz_begin(void) {
    if (!fuzz_dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/mnemo-fuzz-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(fuzz_dir))
            abort();
        atexit(fuzz_remove_dir);
        H5Eset_auto2(H5E_DEFAULT, fuzz_h5_printed, NULL);
        /* no free lists: HDF5 returns memory at once, so an input's allocations balance and
         * libFuzzer's leak check (a scan of the heap) runs only where something leaked */
        H5set_free_list_limits(0, 0, 0, 0, 0, 0);
    }
    fuzz_clear_dir();
    return fuzz_dir;
}

/* Writes data to <fuzz folder>/name; returns the path (a static buffer per call site's slot). */
static inline const char *fuzz_file(const char *name, const void *data, size_t size) {
    static char paths[4][512];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof paths[0], "%s/%s", fuzz_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
        abort();
    return path;
}

/* After a loader call: no HDF5 object may be left open, whether it succeeded or not. */
static inline void fuzz_check_h5_closed(const char *after) {
    ssize_t open_objects = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open_objects != 0) {
        fprintf(stderr, "fuzz: %zd HDF5 object(s) left open after %s (last error: %s)\n", open_objects, after,
                mn_last_error());
        abort();
    }
}

#endif
