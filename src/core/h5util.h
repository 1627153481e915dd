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
/* Whether loc/name exists, telling absence from a failure to look (a corrupt object header):
 * *present = 1 or 0, or MN_ERR_FORMAT naming the file and the path. */
mn_status mn_h5_lookup(hid_t loc, const char *file, const char *name, int *present);
/* Reads a whole float/int32 dataset; it must hold exactly n elements. */
mn_status mn_h5_read_floats(hid_t loc, const char *file, const char *name, float *dst, size_t n);
mn_status mn_h5_read_ints(hid_t loc, const char *file, const char *name, int32_t *dst, size_t n);
/* The same for any element type (memtype: the type in memory). */
mn_status mn_h5_read_dataset(hid_t loc, const char *file, const char *name, hid_t memtype, void *dst, size_t n);
mn_status mn_h5_read_attr_int(hid_t loc, const char *file, const char *name, int64_t *value);
mn_status mn_h5_read_attr_float(hid_t loc, const char *file, const char *name, double *value);
/* Writes a float dataset of the given shape (ndim <= 4) with the Fletcher32 checksum filter. */
mn_status mn_h5_write_floats(hid_t loc, const char *file, const char *name, const float *data, int ndim,
                             const size_t *dims);

/* ---- creating files and groups, typed datasets, attributes (checkpoints) */
/* An HDF5 file built in memory (the core driver without backing store): nothing touches the
 * disk, so the caller writes the bytes itself and sees every write error exactly. HDF5 1.10
 * object formats: checksummed metadata, readable by HDF5 >= 1.10 and h5py built on it.
 * `image` must stay in place until mn_h5_memory_file_close; size_hint (bytes) avoids regrowth. */
typedef struct {
    void *data;
    size_t size;
    int closed;
} mn_h5_image;
mn_status mn_h5_memory_file_create(const char *label, size_t size_hint, mn_h5_image *image, hid_t *file);
/* Closes the file; on success image->data (malloc'd, release with free) holds the complete
 * file, image->size bytes. On failure image->data is NULL. */
mn_status mn_h5_memory_file_close(hid_t file, const char *label, mn_h5_image *image);
/* Creates / opens a group (a path like "optimizer/m" with existing parents). Close with H5Gclose. */
mn_status mn_h5_create_group(hid_t loc, const char *file, const char *name, hid_t *group);
mn_status mn_h5_open_group(hid_t loc, const char *file, const char *name, hid_t *group);
/* Writes a dataset of any fixed type (memtype in memory, stored as filetype), shape ndim <= 4,
 * one chunk with the Fletcher32 checksum filter. mn_h5_write_floats is this with float32. */
mn_status mn_h5_write_dataset(hid_t loc, const char *file, const char *name, hid_t memtype, hid_t filetype,
                              const void *data, int ndim, const size_t *dims);
/* Same in chunks of the given shape (each checksummed), for datasets too large for one. */
mn_status mn_h5_write_dataset_chunked(hid_t loc, const char *file, const char *name, hid_t memtype,
                                      hid_t filetype, const void *data, int ndim, const size_t *dims,
                                      const size_t *chunk);
/* Creates a dataset to be written in parts (H5Dwrite on selections; close with H5Dclose),
 * in chunks of the given shape with the Fletcher32 checksum filter; one with no element is
 * contiguous. chunk NULL: contiguous and unfiltered (the caller checksums the data itself). */
mn_status mn_h5_create_dataset(hid_t loc, const char *file, const char *name, hid_t filetype, int ndim,
                               const size_t *dims, const size_t *chunk, hid_t *dset);
mn_status mn_h5_write_u64s(hid_t loc, const char *file, const char *name, const uint64_t *data, size_t n);
mn_status mn_h5_read_u64s(hid_t loc, const char *file, const char *name, uint64_t *dst, size_t n);
/* Fails (MN_ERR_FORMAT, naming the dataset) unless the dataset carries the Fletcher32 checksum
 * filter, so that its reads are verified; an empty one (contiguous, nothing to read) passes. */
mn_status mn_h5_require_checksum(hid_t loc, const char *file, const char *name);
/* Rank and dimensions (up to 4) of a dataset. */
mn_status mn_h5_dataset_dims(hid_t loc, const char *file, const char *name, int *ndim, size_t dims[4]);
int mn_h5_attr_exists(hid_t loc, const char *name);
/* Scalar attributes: int64, double, and UTF-8 strings. Strings are fixed-length, stored in the
 * object header (which HDF5 checksums), never variable-length: those live in the global heap,
 * which has no checksum, and HDF5 1.10 crashes on a corrupt one. */
mn_status mn_h5_write_attr_int(hid_t loc, const char *file, const char *name, int64_t value);
mn_status mn_h5_write_attr_float(hid_t loc, const char *file, const char *name, double value);
mn_status mn_h5_write_attr_string(hid_t loc, const char *file, const char *name, const char *value);
/* Reads a fixed-length string attribute into a malloc'd NUL-terminated copy. A variable-length
 * one is refused without being read (reading it would parse the unchecksummed global heap). */
mn_status mn_h5_read_attr_string(hid_t loc, const char *file, const char *name, char **value);

/* ---- integrity */
/* mn_h5_read_dataset of a dataset that must carry the Fletcher32 filter, so that HDF5 verified
 * every byte it returns. */
mn_status mn_h5_read_checksummed(hid_t loc, const char *file, const char *name, hid_t memtype, void *dst,
                                 size_t n);
/* File offset and stored size of a dataset's only chunk (datasets written in one chunk). */
mn_status mn_h5_single_chunk(hid_t loc, const char *file, const char *name, uint64_t *offset, uint64_t *size);
/* An integrity trailer: bytes after HDF5's end of file (HDF5, h5py and h5dump ignore them),
 * little-endian:
 *   n x (offset, length)  ranges the digest leaves out (chunks with a Fletcher32 of their own)
 *   n, image size         the HDF5 file is bytes [0, image size)
 *   digest                XXH64 of every image byte outside the ranges
 *   trailer digest        XXH64 of the trailer up to here
 *   magic                 8 bytes, the file kind's
 * Verified before HDF5 parses the file, HDF5 never reads a corrupt byte of metadata (1.10 trusts
 * what it parses: a flipped byte in an unchecksummed structure crashed it). Verifying reads only
 * what the ranges leave, so it costs little when they hold the bulk of the file. */
typedef struct {
    uint64_t offset, length;
} mn_h5_range;
/* Appends the trailer to a finished image (mn_h5_memory_file_close; image->data grows). The
 * ranges are sorted in place; overlapping ones or ones past the image are refused. */
mn_status mn_h5_trailer_append(mn_h5_image *image, const char *magic, mn_h5_range *ranges, size_t n,
                               const char *label);
/* Verifies the trailer of the file at path: *found = 0 when it ends in no trailer of this magic
 * (the caller decides what that means); MN_ERR_FORMAT when the trailer or the digest fails. */
mn_status mn_h5_trailer_verify(const char *path, const char *magic, int *found);
/* The objects of the global heap collections of a file, found by their signature and parsed
 * with bounds checks (never by HDF5, which trusts them): for reading the variable-length
 * strings of files written before they were retired. A candidate whose structure does not hold
 * together (a corrupt collection, or the signature's bytes by chance inside data) is skipped.
 * *objects is malloc'd: mn_h5_heap_objects_free. */
typedef struct {
    uint64_t collection; /* file offset of its collection */
    unsigned index;      /* index in the collection (1...) */
    unsigned char *data;
    size_t size;
} mn_h5_heap_object;
mn_status mn_h5_heap_objects(const char *path, mn_h5_heap_object **objects, size_t *n);
void mn_h5_heap_objects_free(mn_h5_heap_object *objects, size_t n);

#endif
