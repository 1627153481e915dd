/* Tokenizer persistence (tokenizer.h): the "tokenizer" group of an HDF5 file (a standalone
 * tokenizer file or a checkpoint), written and read back with every invariant and the stored
 * hash checked. */
#include "text/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/h5util.h"
#include "text/tokenizer_internal.h"

/* the last 8 bytes of a tokenizer file (mn_h5_trailer_append) */
#define TOKENIZER_TRAILER_MAGIC "MNEMOTK1"

#define TOK_H5_VERSION 1

static mn_status h5_write(hid_t g, const char *name, hid_t type, int rank, const hsize_t *dims,
                          const void *data) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t d = space < 0 ? -1 : H5Dcreate2(g, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = -1;
    hsize_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= dims[i];
    if (d >= 0)
        w = n ? H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
    if (d >= 0)
        H5Dclose(d);
    if (space >= 0)
        H5Sclose(space);
    if (w < 0)
        return mn_fail(MN_ERR_IO, "tokenizer/%s: cannot write dataset", name);
    return MN_OK;
}

static mn_status h5_attr(hid_t g, const char *name, hid_t type, const void *data) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(g, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = a >= 0 ? H5Awrite(a, type, data) : -1;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(space);
    if (w < 0)
        return mn_fail(MN_ERR_IO, "tokenizer: cannot write attribute %s", name);
    return MN_OK;
}

mn_status mn_tokenizer_save_h5(const mn_tokenizer *tok, hid_t loc) {
    if (!tok)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_save_h5: NULL tokenizer");
    hid_t g;
    H5E_BEGIN_TRY { g = H5Gcreate2(loc, "tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT); }
    H5E_END_TRY;
    if (g < 0)
        return mn_fail(MN_ERR_IO, "cannot create group tokenizer (does it exist already?)");
    mn_status st = MN_OK;
    int32_t *merges = malloc(2 * (size_t)(tok->n_merges + 1) * sizeof *merges);
    if (!merges) {
        H5Gclose(g);
        return mn_fail(MN_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (int32_t r = 0; r < tok->n_merges; r++) {
        merges[2 * r] = tok->merge_left[r];
        merges[2 * r + 1] = tok->merge_right[r];
    }
    H5E_BEGIN_TRY {
        hsize_t nv1 = (hsize_t)tok->n_vocab + 1, nb = (hsize_t)tok->tok_off[tok->n_vocab];
        hsize_t md[2] = {(hsize_t)tok->n_merges, 2}, mr = (hsize_t)tok->n_merges,
                ns = MN_TOK_N_SPECIAL;
        st = h5_write(g, "vocab_offsets", H5T_NATIVE_INT64, 1, &nv1, tok->tok_off);
        if (st == MN_OK)
            st = h5_write(g, "vocab_bytes", H5T_NATIVE_UINT8, 1, &nb, tok->tok_bytes);
        if (st == MN_OK)
            st = h5_write(g, "merges", H5T_NATIVE_INT32, 2, md, merges);
        if (st == MN_OK)
            st = h5_write(g, "merge_ids", H5T_NATIVE_INT32, 1, &mr, tok->merge_result);
        if (st == MN_OK)
            st = h5_write(g, "special_ids", H5T_NATIVE_INT32, 1, &ns, tok->special);
        if (st == MN_OK) {
            hid_t str = H5Tcopy(H5T_C_S1);
            H5Tset_size(str, strlen(tok->kind) + 1);
            st = h5_attr(g, "kind", str, tok->kind);
            H5Tclose(str);
        }
        int32_t version = TOK_H5_VERSION;
        if (st == MN_OK)
            st = h5_attr(g, "version", H5T_NATIVE_INT32, &version);
        if (st == MN_OK)
            st = h5_attr(g, "vocab_size", H5T_NATIVE_INT32, &tok->n_vocab);
        if (st == MN_OK)
            st = h5_attr(g, "hash", H5T_NATIVE_UINT64, &tok->hash);
    }
    H5E_END_TRY;
    free(merges);
    H5Gclose(g);
    return st;
}

/* Reads a 1-D or 2-D dataset of known element type; *n = element count. */
static mn_status h5_read(hid_t g, const char *file, const char *name, hid_t type, int rank,
                         hsize_t *dims, size_t elem, void **data) {
    *data = NULL;
    mn_status st = MN_OK;
    H5E_BEGIN_TRY {
        hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
        hid_t space = d >= 0 ? H5Dget_space(d) : -1;
        int r = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
        if (d < 0 || space < 0)
            st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/%s is missing", file, name);
        else if (r != rank)
            st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/%s has %d dimensions, expected %d", file,
                         name, r, rank);
        else {
            H5Sget_simple_extent_dims(space, dims, NULL);
            hsize_t n = 1;
            for (int i = 0; i < rank; i++)
                n *= dims[i];
            if (n > ((hsize_t)1 << 34) / elem)
                st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/%s is implausibly large", file, name);
            else {
                *data = malloc((size_t)n * elem + elem);
                if (!*data)
                    st = mn_fail(MN_ERR_NOMEM, "%s: out of memory for tokenizer/%s", file, name);
                else if (n && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, *data) < 0)
                    st = mn_fail(MN_ERR_FORMAT, "%s: cannot read tokenizer/%s", file, name);
            }
        }
        if (space >= 0)
            H5Sclose(space);
        if (d >= 0)
            H5Dclose(d);
    }
    H5E_END_TRY;
    if (st != MN_OK) {
        free(*data);
        *data = NULL;
    }
    return st;
}

static mn_status h5_read_attr(hid_t g, const char *file, const char *name, hid_t type,
                              void *data) {
    herr_t r = -1;
    H5E_BEGIN_TRY {
        hid_t a = H5Aopen(g, name, H5P_DEFAULT);
        if (a >= 0) {
            r = H5Aread(a, type, data);
            H5Aclose(a);
        }
    }
    H5E_END_TRY;
    if (r < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: tokenizer attribute %s is missing or unreadable", file,
                       name);
    return MN_OK;
}

mn_status mn_tokenizer_load_h5(hid_t loc, const char *file, mn_tokenizer **out) {
    if (!out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_load_h5: NULL argument");
    if (!file)
        file = "(hdf5)";
    hid_t g;
    H5E_BEGIN_TRY { g = H5Gopen2(loc, "tokenizer", H5P_DEFAULT); }
    H5E_END_TRY;
    if (g < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: no tokenizer group", file);
    mn_tokenizer *tok = mn_tok_alloc("");
    int32_t *merges = NULL, *special = NULL;
    mn_status st = tok ? MN_OK : mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    char kind[16] = {0};
    int32_t version = 0, vocab_size = 0;
    uint64_t stored_hash = 0;
    if (st == MN_OK) {
        hid_t str = H5Tcopy(H5T_C_S1);
        H5Tset_size(str, sizeof kind);
        st = h5_read_attr(g, file, "kind", str, kind);
        H5Tclose(str);
        kind[sizeof kind - 1] = '\0';
    }
    if (st == MN_OK)
        st = h5_read_attr(g, file, "version", H5T_NATIVE_INT32, &version);
    if (st == MN_OK && version != TOK_H5_VERSION)
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer version %d, this build reads %d", file,
                     version, TOK_H5_VERSION);
    if (st == MN_OK && strcmp(kind, "mnemo-bpe") && strcmp(kind, "gpt2"))
        st = mn_fail(MN_ERR_FORMAT, "%s: unknown tokenizer kind \"%s\"", file, kind);
    if (st == MN_OK)
        st = h5_read_attr(g, file, "vocab_size", H5T_NATIVE_INT32, &vocab_size);
    if (st == MN_OK)
        st = h5_read_attr(g, file, "hash", H5T_NATIVE_UINT64, &stored_hash);
    hsize_t d1[2], d2[2];
    if (st == MN_OK) {
        snprintf(tok->kind, sizeof tok->kind, "%s", kind);
        st = h5_read(g, file, "vocab_offsets", H5T_NATIVE_INT64, 1, d1, sizeof(int64_t),
                     (void **)&tok->tok_off);
    }
    if (st == MN_OK && (vocab_size < 256 || vocab_size > MN_TOK_MAX_VOCAB ||
                        d1[0] != (hsize_t)vocab_size + 1))
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/vocab_offsets has %llu entries for vocab size %d",
                     file, (unsigned long long)d1[0], vocab_size);
    if (st == MN_OK) {
        tok->n_vocab = vocab_size;
        st = h5_read(g, file, "vocab_bytes", H5T_NATIVE_UINT8, 1, d2, 1, (void **)&tok->tok_bytes);
    }
    if (st == MN_OK && (tok->tok_off[vocab_size] < 0 || d2[0] != (hsize_t)tok->tok_off[vocab_size]))
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/vocab_bytes has %llu bytes, offsets say %lld",
                     file, (unsigned long long)d2[0], (long long)tok->tok_off[vocab_size]);
    if (st == MN_OK)
        st = h5_read(g, file, "merges", H5T_NATIVE_INT32, 2, d1, sizeof(int32_t), (void **)&merges);
    if (st == MN_OK && (d1[1] != 2 || d1[0] > (hsize_t)vocab_size))
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/merges must be (M, 2) with M <= %d", file,
                     vocab_size);
    if (st == MN_OK) {
        tok->n_merges = (int32_t)d1[0];
        st = h5_read(g, file, "merge_ids", H5T_NATIVE_INT32, 1, d2, sizeof(int32_t),
                     (void **)&tok->merge_result);
    }
    if (st == MN_OK && d2[0] != (hsize_t)tok->n_merges)
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/merge_ids has %llu entries for %d merges", file,
                     (unsigned long long)d2[0], tok->n_merges);
    if (st == MN_OK)
        st = h5_read(g, file, "special_ids", H5T_NATIVE_INT32, 1, d2, sizeof(int32_t),
                     (void **)&special);
    if (st == MN_OK && d2[0] != MN_TOK_N_SPECIAL)
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer/special_ids has %llu entries, expected %d",
                     file, (unsigned long long)d2[0], MN_TOK_N_SPECIAL);
    if (st == MN_OK) {
        memcpy(tok->special, special, sizeof tok->special);
        tok->merge_left = malloc((size_t)(tok->n_merges + 1) * sizeof(int32_t));
        tok->merge_right = malloc((size_t)(tok->n_merges + 1) * sizeof(int32_t));
        if (!tok->merge_left || !tok->merge_right)
            st = mn_fail(MN_ERR_NOMEM, "%s: out of memory", file);
    }
    if (st == MN_OK) {
        for (int32_t r = 0; r < tok->n_merges; r++) {
            tok->merge_left[r] = merges[2 * r];
            tok->merge_right[r] = merges[2 * r + 1];
        }
        char name[600];
        snprintf(name, sizeof name, "%s: tokenizer", file);
        st = mn_tok_finalize(tok, name);
    }
    if (st == MN_OK && tok->hash != stored_hash)
        st = mn_fail(MN_ERR_FORMAT, "%s: tokenizer content hash %016llx differs from the stored "
                     "%016llx (corrupt)", file, (unsigned long long)tok->hash,
                     (unsigned long long)stored_hash);
    free(merges);
    free(special);
    H5Gclose(g);
    if (st != MN_OK) {
        mn_tokenizer_free(tok);
        return st;
    }
    *out = tok;
    return MN_OK;
}

/* Like a checkpoint: the file is built in memory (HDF5 never sees a failing disk: its close
 * after a failed write leaves the library in a state that crashes at exit), written to a temp
 * file beside the target, read back and compared, then fsynced and renamed over the target. */
mn_status mn_tokenizer_save_file(const mn_tokenizer *tok, const char *path) {
    if (!tok || !path)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_save_file: NULL argument");
    mn_atomic_file af;
    MN_TRY(mn_atomic_begin(path, &af));
    size_t size_hint = (size_t)tok->tok_off[tok->n_vocab] + (size_t)tok->n_vocab * 8 +
                       (size_t)tok->n_merges * 12 + ((size_t)1 << 16);
    mn_h5_image image = {0};
    hid_t f;
    mn_status st = mn_h5_memory_file_create(path, size_hint, &image, &f);
    if (st == MN_OK) {
        st = mn_tokenizer_save_h5(tok, f);
        if (st != MN_OK)
            mn_fail_context(st, "%s", path);
        mn_status closed = mn_h5_memory_file_close(f, path, &image);
        if (st == MN_OK)
            st = closed;
    }
    if (st == MN_OK) /* a digest of every byte, checked before HDF5 parses the file again */
        st = mn_h5_trailer_append(&image, TOKENIZER_TRAILER_MAGIC, NULL, 0, path);
    if (st == MN_OK)
        st = mn_write_new_file(af.tmp, image.data, image.size, path);
    if (st == MN_OK) {
        mn_tokenizer *back = NULL;
        st = mn_tokenizer_load_file(af.tmp, &back);
        if (st == MN_OK && back->hash != tok->hash)
            st = mn_fail(MN_ERR_IO, "%s: the written file reads back with hash %016llx, not %016llx", path,
                         (unsigned long long)back->hash, (unsigned long long)tok->hash);
        else if (st != MN_OK)
            mn_fail_context(st, "%s: the written file does not read back", path);
        mn_tokenizer_free(back);
    }
    free(image.data);
    if (st != MN_OK) {
        mn_atomic_abort(&af);
        return st;
    }
    return mn_atomic_commit(&af);
}

mn_status mn_tokenizer_load_file(const char *path, mn_tokenizer **out) {
    if (!path || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_tokenizer_load_file: NULL argument");
    if (access(path, R_OK) != 0)
        return mn_fail(MN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    /* HDF5 1.10 trusts the metadata it parses (a flipped byte crashed it, a forged extent made
     * it allocate gigabytes): the file's digest is checked first, and a file without one is not
     * parsed at all */
    int trailer = 0;
    MN_TRY(mn_h5_trailer_verify(path, TOKENIZER_TRAILER_MAGIC, &trailer));
    if (!trailer)
        return mn_fail(MN_ERR_FORMAT,
                       "%s: no integrity trailer (not a tokenizer file, or one written before mnemo checked "
                       "them; train it again with `mnemo tokenizer --train`)",
                       path);
    hid_t f;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); }
    H5E_END_TRY;
    if (f < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: not an HDF5 file", path);
    mn_status st = mn_tokenizer_load_h5(f, path, out);
    H5E_BEGIN_TRY { H5Fclose(f); }
    H5E_END_TRY;
    return st;
}
