/* Small checked wrappers over HDF5's C API, used by checkpoints, the session store and tests.
 * Every failure returns a status whose message names the file and the dataset. HDF5's own
 * error printing is suppressed inside these calls (per call, not globally). */
#ifndef MN_H5UTIL_H
#define MN_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

/* Opens a file read-only. */
mn_status mn_h5_open_read(const char *path, hid_t *file);
/* Number of elements of a dataset; fails if it does not exist. */
mn_status mn_h5_dataset_size(hid_t loc, const char *file, const char *name, size_t *n);
int mn_h5_exists(hid_t loc, const char *name);
/* Reads a whole float/int32 dataset; it must hold exactly n elements. */
mn_status mn_h5_read_floats(hid_t loc, const char *file, const char *name, float *dst, size_t n);
mn_status mn_h5_read_ints(hid_t loc, const char *file, const char *name, int32_t *dst, size_t n);
mn_status mn_h5_read_attr_int(hid_t loc, const char *file, const char *name, int64_t *value);
mn_status mn_h5_read_attr_float(hid_t loc, const char *file, const char *name, double *value);
/* Writes a float dataset of the given shape (ndim <= 4) with the Fletcher32 checksum filter. */
mn_status mn_h5_write_floats(hid_t loc, const char *file, const char *name, const float *data, int ndim,
                             const size_t *dims);

#endif
