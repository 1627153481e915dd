#include "core/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/hash.h"

mn_status mn_h5_open_read(const char *path, hid_t *file) {
    hid_t f = H5I_INVALID_HID;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); }
    H5E_END_TRY;
    if (f < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot open as HDF5 (missing, unreadable or not an HDF5 file)", path);
    *file = f;
    return MN_OK;
}

int mn_h5_exists(hid_t loc, const char *name) {
    htri_t found = 0;
    H5E_BEGIN_TRY { found = H5Lexists(loc, name, H5P_DEFAULT); }
    H5E_END_TRY;
    if (found <= 0)
        return 0;
    H5E_BEGIN_TRY { found = H5Oexists_by_name(loc, name, H5P_DEFAULT); }
    H5E_END_TRY;
    return found > 0;
}

mn_status mn_h5_lookup(hid_t loc, const char *file, const char *name, int *present) {
    *present = 0;
    char prefix[1024];
    size_t len = strlen(name);
    if (len >= sizeof prefix)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: path '%s' is too long", file, name);
    /* a component at a time: only then does a failure mean that a header could not be read */
    for (size_t end = 0; end <= len; end++) {
        if (name[end] != '/' && name[end] != '\0')
            continue;
        memcpy(prefix, name, end);
        prefix[end] = '\0';
        htri_t found = -1;
        H5E_BEGIN_TRY {
            found = H5Lexists(loc, prefix, H5P_DEFAULT);
            if (found > 0)
                found = H5Oexists_by_name(loc, prefix, H5P_DEFAULT);
        }
        H5E_END_TRY;
        if (found < 0)
            return mn_fail(MN_ERR_FORMAT, "%s: cannot look up '%s' (a corrupt object header)", file, prefix);
        if (found == 0)
            return MN_OK;
    }
    *present = 1;
    return MN_OK;
}

static mn_status open_dataset(hid_t loc, const char *file, const char *name, hid_t *dset, size_t *n) {
    if (!mn_h5_exists(loc, name))
        return mn_fail(MN_ERR_FORMAT, "%s: dataset '%s' is missing", file, name);
    hid_t d = H5I_INVALID_HID, space = H5I_INVALID_HID;
    hssize_t count = -1;
    H5E_BEGIN_TRY {
        d = H5Dopen2(loc, name, H5P_DEFAULT);
        if (d >= 0)
            space = H5Dget_space(d);
        if (space >= 0)
            count = H5Sget_simple_extent_npoints(space);
        if (space >= 0)
            H5Sclose(space);
    }
    H5E_END_TRY;
    if (d < 0 || count < 0) {
        if (d >= 0)
            H5Dclose(d);
        return mn_fail(MN_ERR_FORMAT, "%s: dataset '%s' cannot be opened", file, name);
    }
    *dset = d;
    *n = (size_t)count;
    return MN_OK;
}

mn_status mn_h5_dataset_size(hid_t loc, const char *file, const char *name, size_t *n) {
    hid_t d;
    MN_TRY(open_dataset(loc, file, name, &d, n));
    H5Dclose(d);
    return MN_OK;
}

mn_status mn_h5_read_dataset(hid_t loc, const char *file, const char *name, hid_t memtype, void *dst, size_t n) {
    hid_t d;
    size_t count;
    MN_TRY(open_dataset(loc, file, name, &d, &count));
    if (count != n) {
        H5Dclose(d);
        return mn_fail(MN_ERR_MISMATCH, "%s: dataset '%s' has %zu elements, expected %zu", file, name, count, n);
    }
    herr_t rc = -1;
    H5E_BEGIN_TRY { rc = n ? H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) : 0; }
    H5E_END_TRY;
    H5Dclose(d);
    if (rc < 0) /* a failed Fletcher32 check or a truncated file lands here */
        return mn_fail(MN_ERR_FORMAT, "%s: dataset '%s' cannot be read (corrupt or truncated: checksum or I/O error)",
                       file, name);
    return MN_OK;
}

mn_status mn_h5_read_floats(hid_t loc, const char *file, const char *name, float *dst, size_t n) {
    return mn_h5_read_dataset(loc, file, name, H5T_NATIVE_FLOAT, dst, n);
}

mn_status mn_h5_read_ints(hid_t loc, const char *file, const char *name, int32_t *dst, size_t n) {
    return mn_h5_read_dataset(loc, file, name, H5T_NATIVE_INT32, dst, n);
}

static mn_status read_attr(hid_t loc, const char *file, const char *name, hid_t memtype, void *value) {
    htri_t found = 0;
    H5E_BEGIN_TRY { found = H5Aexists(loc, name); }
    H5E_END_TRY;
    if (found <= 0)
        return mn_fail(MN_ERR_FORMAT, "%s: attribute '%s' is missing", file, name);
    hid_t a = H5I_INVALID_HID;
    herr_t rc = -1;
    H5E_BEGIN_TRY {
        a = H5Aopen(loc, name, H5P_DEFAULT);
        if (a >= 0) {
            hid_t space = H5Aget_space(a);
            hssize_t count = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
            if (space >= 0)
                H5Sclose(space);
            if (count == 1)
                rc = H5Aread(a, memtype, value);
            H5Aclose(a);
        }
    }
    H5E_END_TRY;
    if (rc < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: attribute '%s' is not a readable scalar", file, name);
    return MN_OK;
}

mn_status mn_h5_read_attr_int(hid_t loc, const char *file, const char *name, int64_t *value) {
    return read_attr(loc, file, name, H5T_NATIVE_INT64, value);
}

mn_status mn_h5_read_attr_float(hid_t loc, const char *file, const char *name, double *value) {
    return read_attr(loc, file, name, H5T_NATIVE_DOUBLE, value);
}

mn_status mn_h5_create_dataset(hid_t loc, const char *file, const char *name, hid_t filetype, int ndim,
                               const size_t *dims, const size_t *chunk, hid_t *dset) {
    hsize_t hdims[4], hchunk[4];
    if (ndim < 1 || ndim > 4)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: dataset '%s' has unsupported rank %d", file, name, ndim);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        hdims[i] = dims[i];
        hchunk[i] = chunk ? chunk[i] : 0;
        n *= dims[i];
    }
    hid_t d = H5I_INVALID_HID;
    H5E_BEGIN_TRY {
        hid_t space = H5Screate_simple(ndim, hdims, NULL);
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        /* Fletcher32 needs chunking, and chunking needs elements: empty datasets stay contiguous */
        if (n > 0 && chunk) {
            H5Pset_chunk(dcpl, ndim, hchunk);
            H5Pset_fletcher32(dcpl);
        }
        d = H5Dcreate2(loc, name, filetype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        H5Pclose(dcpl);
        H5Sclose(space);
    }
    H5E_END_TRY;
    if (d < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot create dataset '%s'", file, name);
    *dset = d;
    return MN_OK;
}

mn_status mn_h5_write_dataset_chunked(hid_t loc, const char *file, const char *name, hid_t memtype,
                                      hid_t filetype, const void *data, int ndim, const size_t *dims,
                                      const size_t *chunk) {
    hid_t d;
    MN_TRY(mn_h5_create_dataset(loc, file, name, filetype, ndim, dims, chunk, &d));
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= dims[i];
    herr_t rc = -1;
    H5E_BEGIN_TRY {
        rc = n ? H5Dwrite(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
        if (H5Dclose(d) < 0)
            rc = -1;
    }
    H5E_END_TRY;
    if (rc < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot write dataset '%s' (disk full or not writable?)", file, name);
    return MN_OK;
}

mn_status mn_h5_write_dataset(hid_t loc, const char *file, const char *name, hid_t memtype, hid_t filetype,
                              const void *data, int ndim, const size_t *dims) {
    /* one chunk per dataset: the checksum covers it whole */
    return mn_h5_write_dataset_chunked(loc, file, name, memtype, filetype, data, ndim, dims, dims);
}

mn_status mn_h5_write_floats(hid_t loc, const char *file, const char *name, const float *data, int ndim,
                             const size_t *dims) {
    return mn_h5_write_dataset(loc, file, name, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, data, ndim, dims);
}

mn_status mn_h5_write_u64s(hid_t loc, const char *file, const char *name, const uint64_t *data, size_t n) {
    return mn_h5_write_dataset(loc, file, name, H5T_NATIVE_UINT64, H5T_STD_U64LE, data, 1, &n);
}

mn_status mn_h5_read_u64s(hid_t loc, const char *file, const char *name, uint64_t *dst, size_t n) {
    return mn_h5_read_dataset(loc, file, name, H5T_NATIVE_UINT64, dst, n);
}

mn_status mn_h5_require_checksum(hid_t loc, const char *file, const char *name) {
    hid_t d;
    size_t count;
    MN_TRY(open_dataset(loc, file, name, &d, &count));
    herr_t found = -1;
    H5E_BEGIN_TRY {
        hid_t dcpl = H5Dget_create_plist(d);
        unsigned flags = 0;
        size_t n_values = 0;
        if (dcpl >= 0) {
            found = H5Pget_filter_by_id2(dcpl, H5Z_FILTER_FLETCHER32, &flags, &n_values, NULL, 0, NULL, NULL);
            H5Pclose(dcpl);
        }
        H5Dclose(d);
    }
    H5E_END_TRY;
    if (count > 0 && found < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: dataset '%s' carries no Fletcher32 checksum: its reads cannot be verified",
                       file, name);
    return MN_OK;
}

mn_status mn_h5_dataset_dims(hid_t loc, const char *file, const char *name, int *ndim, size_t dims[4]) {
    hid_t d;
    size_t count;
    MN_TRY(open_dataset(loc, file, name, &d, &count));
    hsize_t h[4] = {0};
    int rank = -1;
    H5E_BEGIN_TRY {
        hid_t space = H5Dget_space(d);
        if (space >= 0) {
            rank = H5Sget_simple_extent_ndims(space);
            if (rank >= 0 && rank <= 4)
                H5Sget_simple_extent_dims(space, h, NULL);
            H5Sclose(space);
        }
    }
    H5E_END_TRY;
    H5Dclose(d);
    if (rank < 0 || rank > 4)
        return mn_fail(MN_ERR_FORMAT, "%s: dataset '%s' has unsupported rank %d", file, name, rank);
    *ndim = rank;
    for (int i = 0; i < 4; i++)
        dims[i] = i < rank ? (size_t)h[i] : 0;
    return MN_OK;
}

/* File-image callbacks: the core driver's buffer is ours, and at close we keep it. */
static void *image_malloc(size_t size, H5FD_file_image_op_t op, void *udata) {
    mn_h5_image *im = udata;
    void *p = malloc(size);
    /* FILE_OPEN reads an existing file of the same name (HDF5 probes before creating): not
     * the image being built, so it is not tracked and is freed normally at its close */
    if (p && op != H5FD_FILE_IMAGE_OP_FILE_OPEN) {
        im->data = p;
        im->size = size;
    }
    return p;
}

static void *image_memcpy(void *dst, const void *src, size_t size, H5FD_file_image_op_t op, void *udata) {
    (void)op, (void)udata;
    return memcpy(dst, src, size);
}

static void *image_realloc(void *ptr, size_t size, H5FD_file_image_op_t op, void *udata) {
    (void)op;
    mn_h5_image *im = udata;
    void *p = realloc(ptr, size);
    if (p) {
        im->data = p;
        im->size = size;
    }
    return p;
}

static herr_t image_free(void *ptr, H5FD_file_image_op_t op, void *udata) {
    mn_h5_image *im = udata;
    if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && ptr == im->data) {
        im->closed = 1; /* the finished file: handed to the caller instead of freed */
        return 0;
    }
    if (ptr == im->data)
        im->data = NULL;
    free(ptr);
    return 0;
}

static void *image_udata_copy(void *udata) { return udata; }
static herr_t image_udata_free(void *udata) {
    (void)udata;
    return 0;
}

/* The name HDF5 gets for memory files: it cannot exist (/dev/null is no directory), so HDF5's
 * probe for an already existing file fails at once instead of reading one into memory. */
#define MEMORY_FILE_NAME "/dev/null/mnemo-memory-file.h5"

mn_status mn_h5_memory_file_create(const char *label, size_t size_hint, mn_h5_image *image, hid_t *file) {
    memset(image, 0, sizeof *image);
    hid_t f = H5I_INVALID_HID;
    /* the buffer grows by whole increments: one increment of the expected size, at least 1 MB */
    size_t increment = size_hint > ((size_t)1 << 20) ? size_hint : ((size_t)1 << 20);
    H5FD_file_image_callbacks_t cb = {image_malloc,     image_memcpy,     image_realloc, image_free,
                                      image_udata_copy, image_udata_free, image};
    H5E_BEGIN_TRY {
        hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
        if (fapl >= 0) {
            /* 1.10 formats: checksummed metadata (corruption is detected there too), and a
             * single-chunk dataset needs no chunk B-tree (a few KB saved per dataset) */
            if (H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_LATEST) >= 0 &&
                H5Pset_fapl_core(fapl, increment, 0) >= 0 && H5Pset_file_image_callbacks(fapl, &cb) >= 0)
                f = H5Fcreate(MEMORY_FILE_NAME, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
            H5Pclose(fapl);
        }
    }
    H5E_END_TRY;
    if (f < 0)
        return mn_fail(MN_ERR_NOMEM, "%s: cannot create an in-memory HDF5 file", label);
    *file = f;
    return MN_OK;
}

mn_status mn_h5_memory_file_close(hid_t file, const char *label, mn_h5_image *image) {
    herr_t rc = -1;
    H5E_BEGIN_TRY { rc = H5Fclose(file); }
    H5E_END_TRY;
    if (rc < 0 || !image->closed || !image->data) {
        if (image->closed)
            free(image->data);
        image->data = NULL;
        return mn_fail(MN_ERR_IO, "%s: building the file in memory failed", label);
    }
    /* The buffer is rounded up to the growth increment; the file ends at the superblock's
     * end-of-file address (version 2/3 superblock: 8-byte signature, version, offset and
     * length sizes, flags, then base, extension and end-of-file addresses). Nothing past it
     * is written, so no stale heap bytes reach the disk. */
    const unsigned char *b = image->data;
    uint64_t eoa = 0;
    if (image->size >= 48 && !memcmp(b, "\211HDF\r\n\032\n", 8) && (b[8] == 2 || b[8] == 3) && b[9] == 8) {
        for (int i = 7; i >= 0; i--)
            eoa = (eoa << 8) | b[28 + i];
    }
    if (eoa == 0 || eoa > image->size) {
        free(image->data);
        image->data = NULL;
        return mn_fail(MN_ERR_IO, "%s: the in-memory file has an unexpected superblock", label);
    }
    image->size = (size_t)eoa;
    return MN_OK;
}

mn_status mn_h5_create_group(hid_t loc, const char *file, const char *name, hid_t *group) {
    hid_t g = H5I_INVALID_HID;
    H5E_BEGIN_TRY { g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT); }
    H5E_END_TRY;
    if (g < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot create group '%s'", file, name);
    *group = g;
    return MN_OK;
}

mn_status mn_h5_open_group(hid_t loc, const char *file, const char *name, hid_t *group) {
    int present = 0;
    MN_TRY(mn_h5_lookup(loc, file, name, &present));
    if (!present)
        return mn_fail(MN_ERR_FORMAT, "%s: group '%s' is missing", file, name);
    hid_t g = H5I_INVALID_HID;
    H5E_BEGIN_TRY { g = H5Gopen2(loc, name, H5P_DEFAULT); }
    H5E_END_TRY;
    if (g < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: group '%s' cannot be opened (corrupt, or not a group)", file, name);
    *group = g;
    return MN_OK;
}

int mn_h5_attr_exists(hid_t loc, const char *name) {
    htri_t found = 0;
    H5E_BEGIN_TRY { found = H5Aexists(loc, name); }
    H5E_END_TRY;
    return found > 0;
}

static mn_status write_attr(hid_t loc, const char *file, const char *name, hid_t filetype, hid_t memtype,
                            const void *value) {
    herr_t rc = -1;
    H5E_BEGIN_TRY {
        hid_t space = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(loc, name, filetype, space, H5P_DEFAULT, H5P_DEFAULT);
        if (a >= 0) {
            rc = H5Awrite(a, memtype, value);
            if (H5Aclose(a) < 0)
                rc = -1;
        }
        H5Sclose(space);
    }
    H5E_END_TRY;
    if (rc < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot write attribute '%s'", file, name);
    return MN_OK;
}

mn_status mn_h5_write_attr_int(hid_t loc, const char *file, const char *name, int64_t value) {
    return write_attr(loc, file, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

mn_status mn_h5_write_attr_float(hid_t loc, const char *file, const char *name, double value) {
    return write_attr(loc, file, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

mn_status mn_h5_write_attr_string(hid_t loc, const char *file, const char *name, const char *value) {
    hid_t type = H5I_INVALID_HID;
    H5E_BEGIN_TRY {
        type = H5Tcopy(H5T_C_S1);
        if (type >= 0 && (H5Tset_size(type, strlen(value) + 1) < 0 || H5Tset_strpad(type, H5T_STR_NULLTERM) < 0 ||
                          H5Tset_cset(type, H5T_CSET_UTF8) < 0)) {
            H5Tclose(type);
            type = H5I_INVALID_HID;
        }
    }
    H5E_END_TRY;
    if (type < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot write attribute '%s'", file, name);
    mn_status st = write_attr(loc, file, name, type, type, value);
    H5Tclose(type);
    return st;
}

mn_status mn_h5_read_attr_string(hid_t loc, const char *file, const char *name, char **value) {
    *value = NULL;
    if (!mn_h5_attr_exists(loc, name))
        return mn_fail(MN_ERR_FORMAT, "%s: attribute '%s' is missing", file, name);
    char *copy = NULL;
    int ok = 0, variable = 0;
    H5E_BEGIN_TRY {
        hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
        hid_t ftype = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
        hid_t space = a >= 0 ? H5Aget_space(a) : H5I_INVALID_HID;
        int scalar = space >= 0 && H5Sget_simple_extent_npoints(space) == 1;
        variable = ftype >= 0 && H5Tget_class(ftype) == H5T_STRING && H5Tis_variable_str(ftype) != 0;
        size_t size = ftype >= 0 ? H5Tget_size(ftype) : 0;
        /* the type and size come from the (checksummed) object header; 1 MB bounds the copy */
        if (scalar && !variable && ftype >= 0 && H5Tget_class(ftype) == H5T_STRING && size > 0 &&
            size <= ((size_t)1 << 20) && (copy = calloc(size + 1, 1)) != NULL)
            ok = H5Aread(a, ftype, copy) >= 0;
        if (space >= 0)
            H5Sclose(space);
        if (ftype >= 0)
            H5Tclose(ftype);
        if (a >= 0)
            H5Aclose(a);
    }
    H5E_END_TRY;
    if (!ok) {
        free(copy);
        return mn_fail(MN_ERR_FORMAT, "%s: attribute '%s' is not a readable %sstring", file, name,
                       variable ? "fixed-length " : "");
    }
    *value = copy;
    return MN_OK;
}

/* ---------------------------------------------------------------- integrity */
mn_status mn_h5_read_checksummed(hid_t loc, const char *file, const char *name, hid_t memtype, void *dst,
                                 size_t n) {
    MN_TRY(mn_h5_require_checksum(loc, file, name));
    return mn_h5_read_dataset(loc, file, name, memtype, dst, n);
}

mn_status mn_h5_single_chunk(hid_t loc, const char *file, const char *name, uint64_t *offset, uint64_t *size) {
    hid_t d;
    size_t count;
    MN_TRY(open_dataset(loc, file, name, &d, &count));
    hsize_t nchunks = 0, coords[4], bytes = 0;
    haddr_t addr = HADDR_UNDEF;
    unsigned mask = 0;
    herr_t rc = -1;
    H5E_BEGIN_TRY {
        hid_t space = H5Dget_space(d);
        if (space >= 0 && H5Dget_num_chunks(d, space, &nchunks) >= 0 && nchunks == 1)
            rc = H5Dget_chunk_info(d, space, 0, coords, &mask, &addr, &bytes);
        if (space >= 0)
            H5Sclose(space);
    }
    H5E_END_TRY;
    H5Dclose(d);
    if (rc < 0 || addr == HADDR_UNDEF || bytes == 0)
        return mn_fail(MN_ERR_FORMAT, "%s: dataset '%s' is not stored as one chunk", file, name);
    *offset = (uint64_t)addr;
    *size = (uint64_t)bytes;
    return MN_OK;
}

/* ---------------------------------------------------------------- the integrity trailer */
/* The file read-only, and its size. */
static mn_status open_for_reading(const char *path, int *fd, uint64_t *size) {
    struct stat sb;
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0 || fstat(*fd, &sb) != 0) {
        mn_status st = mn_fail(MN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        if (*fd >= 0)
            close(*fd);
        return st;
    }
    *size = (uint64_t)sb.st_size;
    return MN_OK;
}

#define TRAILER_TAIL 40 /* n, image size, digest, trailer digest, magic */

static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int by_offset(const void *a, const void *b) {
    const mn_h5_range *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Sorted, merged where adjacent; 0 when they overlap or leave [0, size). */
static int normalise_ranges(mn_h5_range *r, size_t *n, uint64_t size) {
    if (*n == 0)
        return 1;
    qsort(r, *n, sizeof *r, by_offset);
    size_t out = 0;
    for (size_t i = 0; i < *n; i++) {
        if (!r[i].length || r[i].offset > size || r[i].length > size - r[i].offset)
            return 0;
        if (out && r[i].offset < r[out - 1].offset + r[out - 1].length)
            return 0;
        if (out && r[i].offset == r[out - 1].offset + r[out - 1].length)
            r[out - 1].length += r[i].length;
        else
            r[out++] = r[i];
    }
    *n = out;
    return 1;
}

/* XXH64 of the bytes of [0, size) outside the (sorted) ranges, from memory or from fd. From a
 * file it reads windows of up to 1 MB that read past small ranges (the small tensors between
 * the metadata) but not large ones: few reads, and none of the bulk of the tensors. */
#define DIGEST_WINDOW ((uint64_t)1 << 20)
#define DIGEST_SKIP ((uint64_t)64 << 10)

static int digest_outside(const unsigned char *image, int fd, uint64_t size, const mn_h5_range *r, size_t n,
                          uint64_t *digest) {
    mn_h5_range *seg = malloc((n + 1) * sizeof *seg); /* the bytes outside the ranges */
    unsigned char *buf = image ? NULL : malloc((size_t)(size < DIGEST_WINDOW ? size + 1 : DIGEST_WINDOW));
    int ok = seg && (image || buf);
    size_t ns = 0;
    uint64_t at = 0;
    for (size_t i = 0; ok && i <= n; i++) {
        uint64_t stop = i < n ? r[i].offset : size;
        if (stop > at)
            seg[ns++] = (mn_h5_range){at, stop - at};
        if (i < n)
            at = r[i].offset + r[i].length;
    }
    mn_xxh64_state h;
    mn_xxh64_init(&h, 0);
    for (size_t k = 0; ok && k < ns;) {
        if (image) {
            mn_xxh64_update(&h, image + seg[k].offset, (size_t)seg[k].length);
            k++;
            continue;
        }
        uint64_t lo = seg[k].offset, hi = seg[k].offset + seg[k].length;
        if (hi - lo > DIGEST_WINDOW) { /* a long stretch of metadata: in windows */
            for (uint64_t p = lo; ok && p < hi; p += DIGEST_WINDOW) {
                size_t len = (size_t)(hi - p < DIGEST_WINDOW ? hi - p : DIGEST_WINDOW);
                ok = pread(fd, buf, len, (off_t)p) == (ssize_t)len;
                if (ok)
                    mn_xxh64_update(&h, buf, len);
            }
            k++;
            continue;
        }
        size_t m = k + 1; /* segments k..m-1 share one read */
        while (m < ns && seg[m].offset + seg[m].length - lo <= DIGEST_WINDOW &&
               seg[m].offset - (seg[m - 1].offset + seg[m - 1].length) <= DIGEST_SKIP)
            m++;
        hi = seg[m - 1].offset + seg[m - 1].length;
        ok = pread(fd, buf, (size_t)(hi - lo), (off_t)lo) == (ssize_t)(hi - lo);
        for (; ok && k < m; k++)
            mn_xxh64_update(&h, buf + (seg[k].offset - lo), (size_t)seg[k].length);
    }
    free(seg);
    free(buf);
    if (ok)
        *digest = mn_xxh64_digest(&h);
    return ok;
}

mn_status mn_h5_trailer_append(mn_h5_image *im, const char *magic, mn_h5_range *r, size_t n, const char *target) {
    if (!normalise_ranges(r, &n, im->size))
        return mn_fail(MN_ERR_IO, "%s: the chunks left to their own checksums overlap or lie outside the file",
                       target);
    size_t len = n * 16 + TRAILER_TAIL;
    unsigned char *grown = realloc(im->data, im->size + len);
    if (!grown)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", target);
    im->data = grown;
    unsigned char *t = grown + im->size;
    for (size_t i = 0; i < n; i++) {
        put64(t + 16 * i, r[i].offset);
        put64(t + 16 * i + 8, r[i].length);
    }
    uint64_t digest = 0;
    if (!digest_outside(grown, -1, im->size, r, n, &digest))
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", target);
    put64(t + 16 * n, n);
    put64(t + 16 * n + 8, im->size);
    put64(t + 16 * n + 16, digest);
    put64(t + 16 * n + 24, mn_xxh64(t, 16 * n + 24, 0));
    memcpy(t + 16 * n + 32, magic, 8);
    im->size += len;
    return MN_OK;
}

mn_status mn_h5_trailer_verify(const char *path, const char *magic, int *found) {
    *found = 0;
    int fd;
    uint64_t size = 0;
    MN_TRY(open_for_reading(path, &fd, &size));
    unsigned char tail[TRAILER_TAIL];
    mn_h5_range *r = NULL;
    mn_status st = MN_OK;
    if (size < TRAILER_TAIL || pread(fd, tail, TRAILER_TAIL, (off_t)(size - TRAILER_TAIL)) != TRAILER_TAIL ||
        memcmp(tail + 32, magic, 8)) {
        close(fd); /* no trailer: an older format, or another kind of file (the caller decides) */
        return MN_OK;
    }
    *found = 1;
    uint64_t n = get64(tail), image = get64(tail + 8), digest = 0;
    unsigned char *t = NULL;
    if (n > (size - TRAILER_TAIL) / 16 || image != size - TRAILER_TAIL - 16 * n)
        st = mn_fail(MN_ERR_FORMAT, "%s: the integrity trailer is corrupt (its sizes disagree with the file's %" PRIu64
                     " bytes: corrupt, or truncated and appended to)", path, size);
    if (st == MN_OK && (!(t = malloc(16 * n + TRAILER_TAIL)) || !(r = malloc((n ? n : 1) * sizeof *r))))
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    if (st == MN_OK && pread(fd, t, 16 * n + TRAILER_TAIL, (off_t)image) != (ssize_t)(16 * n + TRAILER_TAIL))
        st = mn_fail(MN_ERR_IO, "%s: cannot read the integrity trailer: %s", path, strerror(errno));
    if (st == MN_OK && mn_xxh64(t, 16 * n + 24, 0) != get64(t + 16 * n + 24))
        st = mn_fail(MN_ERR_FORMAT, "%s: the integrity trailer fails its checksum (corrupt)", path);
    size_t count = (size_t)n;
    for (size_t i = 0; st == MN_OK && i < count; i++)
        r[i] = (mn_h5_range){get64(t + 16 * i), get64(t + 16 * i + 8)};
    if (st == MN_OK && (!normalise_ranges(r, &count, image) || count != n))
        st = mn_fail(MN_ERR_FORMAT, "%s: the integrity trailer lists chunks that overlap or lie outside the file",
                     path);
    if (st == MN_OK && !digest_outside(NULL, fd, image, r, count, &digest))
        st = mn_fail(MN_ERR_IO, "%s: read failed: %s", path, strerror(errno));
    if (st == MN_OK && digest != get64(t + 16 * n + 16))
        st = mn_fail(MN_ERR_FORMAT,
                     "%s: checksum mismatch in the metadata (all but the chunks with checksums of their own): "
                     "corrupt", path);
    free(t);
    free(r);
    close(fd);
    return st;
}

/* Global heap collection (HDF5 file format, version 1): "GCOL", version 1, 3 reserved bytes,
 * the collection's size (8 bytes, header included); then objects of index (2), reference count
 * (2), reserved (4), size (8) and the data padded to 8 bytes; object 0 is the free space to the
 * end (its header is implied when fewer than 16 bytes remain). HDF5 makes collections of at
 * least 4 KB; strings of a few KB never need more than a few MB. */
#define GCOL_HEADER 16
#define GCOL_MIN 4096
#define GCOL_MAX ((uint64_t)64 << 20)

static unsigned get16(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

void mn_h5_heap_objects_free(mn_h5_heap_object *objects, size_t n) {
    for (size_t i = 0; objects && i < n; i++)
        free(objects[i].data);
    free(objects);
}

/* Appends the objects of the collection c (size bytes at file offset at) when it holds together. */
static int parse_collection(const unsigned char *c, uint64_t size, uint64_t at, mn_h5_heap_object **objects,
                            size_t *n, size_t *cap) {
    /* first pass: the structure; nothing is kept unless all of it is sound */
    size_t p = GCOL_HEADER, count = 0;
    uint8_t seen[65536 / 8] = {0};
    while (size - p >= GCOL_HEADER) {
        unsigned index = (unsigned)get16(c + p);
        uint64_t bytes = get64(c + p + 8);
        if (index == 0) {
            if (bytes != size - p)
                return 0;
            p = size;
            break;
        }
        if (bytes > size - p - GCOL_HEADER || (seen[index / 8] >> (index % 8) & 1))
            return 0;
        uint64_t need = GCOL_HEADER + ((bytes + 7) & ~(uint64_t)7);
        if (need > size - p)
            return 0;
        seen[index / 8] |= (uint8_t)(1u << (index % 8));
        p += need;
        count++;
    }
    if (size - p >= GCOL_HEADER)
        return 0;
    for (p = GCOL_HEADER; count--;) {
        uint64_t bytes = get64(c + p + 8);
        if (*n == *cap) {
            size_t grown_cap = *cap ? 2 * *cap : 8;
            mn_h5_heap_object *grown = realloc(*objects, grown_cap * sizeof *grown);
            if (!grown)
                return -1;
            *objects = grown, *cap = grown_cap;
        }
        mn_h5_heap_object *o = &(*objects)[*n];
        o->collection = at;
        o->index = (unsigned)get16(c + p);
        o->size = (size_t)bytes;
        if (!(o->data = malloc(bytes + 1)))
            return -1;
        memcpy(o->data, c + p + GCOL_HEADER, bytes);
        o->data[bytes] = 0;
        (*n)++;
        p += GCOL_HEADER + ((bytes + 7) & ~(uint64_t)7);
    }
    return 1;
}

mn_status mn_h5_heap_objects(const char *path, mn_h5_heap_object **objects, size_t *n) {
    *objects = NULL;
    *n = 0;
    int fd;
    uint64_t file_size = 0;
    MN_TRY(open_for_reading(path, &fd, &file_size));
    const size_t block = (size_t)1 << 20;
    unsigned char *buf = malloc(block + 3), *coll = NULL;
    size_t cap = 0;
    mn_status st = buf ? MN_OK : mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    /* blocks overlap by 3 bytes, so that a signature across a boundary is seen once */
    for (uint64_t at = 0; st == MN_OK && at < file_size; at += block) {
        size_t want = (size_t)(file_size - at < block + 3 ? file_size - at : block + 3);
        if (pread(fd, buf, want, (off_t)at) != (ssize_t)want) {
            st = mn_fail(MN_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        for (size_t i = 0; i + 4 <= want && i < block; i++) {
            if (memcmp(buf + i, "GCOL", 4))
                continue;
            unsigned char head[GCOL_HEADER];
            uint64_t pos = at + i;
            if (pos + GCOL_HEADER > file_size || pread(fd, head, GCOL_HEADER, (off_t)pos) != GCOL_HEADER || head[4] != 1)
                continue;
            uint64_t size = get64(head + 8);
            if (size < GCOL_MIN || size > GCOL_MAX || size > file_size - pos)
                continue;
            unsigned char *grown = realloc(coll, (size_t)size);
            if (!grown) {
                st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            coll = grown;
            if (pread(fd, coll, (size_t)size, (off_t)pos) != (ssize_t)size)
                continue;
            if (parse_collection(coll, size, pos, objects, n, &cap) < 0)
                st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    close(fd);
    free(buf);
    free(coll);
    if (st != MN_OK) {
        mn_h5_heap_objects_free(*objects, *n);
        *objects = NULL;
        *n = 0;
    }
    return st;
}
