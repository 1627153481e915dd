#include "core/h5util.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

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
    hid_t g = H5I_INVALID_HID;
    if (mn_h5_exists(loc, name)) {
        H5E_BEGIN_TRY { g = H5Gopen2(loc, name, H5P_DEFAULT); }
        H5E_END_TRY;
    }
    if (g < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: group '%s' is missing", file, name);
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
    hid_t type = H5Tcopy(H5T_C_S1);
    if (type < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot write attribute '%s'", file, name);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    mn_status st = write_attr(loc, file, name, type, type, &value);
    H5Tclose(type);
    return st;
}

mn_status mn_h5_read_attr_string(hid_t loc, const char *file, const char *name, char **value) {
    *value = NULL;
    if (!mn_h5_attr_exists(loc, name))
        return mn_fail(MN_ERR_FORMAT, "%s: attribute '%s' is missing", file, name);
    char *copy = NULL;
    int ok = 0;
    H5E_BEGIN_TRY {
        hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
        hid_t ftype = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
        if (ftype >= 0 && H5Tget_class(ftype) == H5T_STRING) {
            if (H5Tis_variable_str(ftype) > 0) {
                hid_t mtype = H5Tcopy(H5T_C_S1);
                H5Tset_size(mtype, H5T_VARIABLE);
                H5Tset_cset(mtype, H5Tget_cset(ftype));
                char *s = NULL;
                if (H5Aread(a, mtype, &s) >= 0 && s) {
                    copy = strdup(s);
                    ok = copy != NULL;
                    H5free_memory(s);
                }
                H5Tclose(mtype);
            } else {
                size_t size = H5Tget_size(ftype);
                copy = calloc(size + 1, 1);
                hid_t mtype = H5Tcopy(ftype);
                if (copy && H5Aread(a, mtype, copy) >= 0)
                    ok = 1;
                H5Tclose(mtype);
            }
        }
        if (ftype >= 0)
            H5Tclose(ftype);
        if (a >= 0)
            H5Aclose(a);
    }
    H5E_END_TRY;
    if (!ok) {
        free(copy);
        return mn_fail(MN_ERR_FORMAT, "%s: attribute '%s' is not a readable string", file, name);
    }
    *value = copy;
    return MN_OK;
}
