#include "io/h5util.h"

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

static mn_status read_dataset(hid_t loc, const char *file, const char *name, hid_t memtype, void *dst, size_t n) {
    hid_t d;
    size_t count;
    MN_TRY(open_dataset(loc, file, name, &d, &count));
    if (count != n) {
        H5Dclose(d);
        return mn_fail(MN_ERR_MISMATCH, "%s: dataset '%s' has %zu elements, expected %zu", file, name, count, n);
    }
    herr_t rc = -1;
    H5E_BEGIN_TRY { rc = H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst); }
    H5E_END_TRY;
    H5Dclose(d);
    if (rc < 0) /* a failed Fletcher32 check or a truncated file lands here */
        return mn_fail(MN_ERR_FORMAT, "%s: dataset '%s' cannot be read (corrupt or truncated: checksum or I/O error)",
                       file, name);
    return MN_OK;
}

mn_status mn_h5_read_floats(hid_t loc, const char *file, const char *name, float *dst, size_t n) {
    return read_dataset(loc, file, name, H5T_NATIVE_FLOAT, dst, n);
}

mn_status mn_h5_read_ints(hid_t loc, const char *file, const char *name, int32_t *dst, size_t n) {
    return read_dataset(loc, file, name, H5T_NATIVE_INT32, dst, n);
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

mn_status mn_h5_write_floats(hid_t loc, const char *file, const char *name, const float *data, int ndim,
                             const size_t *dims) {
    hsize_t hdims[4], chunk[4];
    if (ndim < 1 || ndim > 4)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: dataset '%s' has unsupported rank %d", file, name, ndim);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        hdims[i] = chunk[i] = dims[i];
        n *= dims[i];
    }
    herr_t rc = -1;
    H5E_BEGIN_TRY {
        hid_t space = H5Screate_simple(ndim, hdims, NULL);
        hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
        /* one chunk per dataset: Fletcher32 needs chunking; empty tensors stay contiguous */
        if (n > 0) {
            H5Pset_chunk(dcpl, ndim, chunk);
            H5Pset_fletcher32(dcpl);
        }
        hid_t d = H5Dcreate2(loc, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (d >= 0) {
            rc = n ? H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
            H5Dclose(d);
        }
        H5Pclose(dcpl);
        H5Sclose(space);
    }
    H5E_END_TRY;
    if (rc < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot write dataset '%s' (disk full or not writable?)", file, name);
    return MN_OK;
}
