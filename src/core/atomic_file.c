#include "core/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

mn_status mn_fsync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot open to sync: %s", path, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0)
        return mn_fail(MN_ERR_IO, "%s: fsync failed: %s", path, strerror(err));
    return MN_OK;
}

mn_status mn_fsync_parent_dir(const char *path) {
    char *dir = strdup(path);
    if (!dir)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    char *slash = strrchr(dir, '/');
    const char *name = ".";
    if (slash) {
        *(slash == dir ? slash + 1 : slash) = '\0';
        name = dir;
    }
    int fd = open(name, O_RDONLY | O_DIRECTORY);
    mn_status st = MN_OK;
    /* some filesystems refuse fsync on folders (EINVAL): the data itself is already synced */
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
        st = mn_fail(MN_ERR_IO, "%s: cannot sync its folder %s: %s", path, name, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(dir);
    return st;
}

mn_status mn_atomic_begin(const char *path, mn_atomic_file *af) {
    af->path = af->tmp = NULL;
    if (!path || !*path)
        return mn_fail(MN_ERR_INVALID_ARG, "atomic write: empty path");
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return mn_fail(MN_ERR_IO, "%s: exists and is not a regular file; refusing to replace it", path);
    size_t n = strlen(path) + 32;
    af->path = strdup(path);
    af->tmp = malloc(n);
    if (!af->path || !af->tmp) {
        mn_atomic_abort(af);
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(af->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    return MN_OK;
}

void mn_atomic_abort(mn_atomic_file *af) {
    if (af->tmp)
        unlink(af->tmp);
    free(af->tmp);
    free(af->path);
    af->tmp = af->path = NULL;
}

mn_status mn_atomic_commit(mn_atomic_file *af) {
    mn_status st = mn_fsync_path(af->tmp);
    if (st == MN_OK && rename(af->tmp, af->path) != 0)
        st = mn_fail(MN_ERR_IO, "%s: cannot rename %s into place: %s", af->path, af->tmp, strerror(errno));
    if (st == MN_OK) {
        st = mn_fsync_parent_dir(af->path);
        free(af->tmp);
        free(af->path);
        af->tmp = af->path = NULL;
        return st;
    }
    mn_atomic_abort(af);
    return st;
}

mn_status mn_write_new_file(const char *tmp, const void *data, size_t size, const char *target) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot create temp file %s: %s (directory missing or not writable?)", target,
                       tmp, strerror(errno));
    const char *p = data;
    size_t left = size;
    mn_status st = MN_OK;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            st = mn_fail(MN_ERR_IO, "%s: writing temp file %s failed after %zu of %zu bytes: %s", target, tmp,
                         size - left, size, n < 0 ? strerror(errno) : "no progress");
            break;
        }
        p += n;
        left -= (size_t)n;
    }
    if (st == MN_OK && fsync(fd) != 0)
        st = mn_fail(MN_ERR_IO, "%s: fsync of temp file %s failed: %s", target, tmp, strerror(errno));
    if (close(fd) != 0 && st == MN_OK) /* NFS and full disks can report here */
        st = mn_fail(MN_ERR_IO, "%s: closing temp file %s failed: %s", target, tmp, strerror(errno));
    return st;
}

mn_status mn_atomic_write_bytes(const char *path, const void *data, size_t size) {
    mn_atomic_file af;
    MN_TRY(mn_atomic_begin(path, &af));
    mn_status st = mn_write_new_file(af.tmp, data, size, path);
    if (st != MN_OK) {
        mn_atomic_abort(&af);
        return st;
    }
    return mn_atomic_commit(&af);
}
