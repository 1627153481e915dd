/* One fuzz input holding a whole session store (fuzz_session_store.c; seeds.c writes them):
 *   byte 0      flags (FUZZ_STORE_*)
 *   bytes 1..4  u32 little-endian n: the snapshot's length (clamped to what follows)
 *   n bytes     the HDF5 snapshot (<store>)
 *   the rest    the journal (<store>.journal), written only with FUZZ_STORE_JOURNAL */
#ifndef MN_FUZZ_SESSION_PACK_H
#define MN_FUZZ_SESSION_PACK_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    FUZZ_STORE_JOURNAL = 1, /* the journal file exists (possibly empty) */
    FUZZ_STORE_REPAIR = 2,  /* recompute the journal's checksums first, so that what lies behind
                             * them is reached */
    FUZZ_STORE_WRITE = 4,   /* also open it for writing: put, delete, compact, read back */
};

typedef struct {
    int flags;
    const uint8_t *snapshot, *journal;
    size_t snapshot_n, journal_n;
} fuzz_session_files;

static inline fuzz_session_files fuzz_session_unpack(const uint8_t *data, size_t size) {
    fuzz_session_files f = {0};
    if (size < 5)
        return f;
    f.flags = data[0];
    uint32_t n = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 | (uint32_t)data[4] << 24;
    f.snapshot = data + 5;
    f.snapshot_n = n < size - 5 ? n : size - 5;
    f.journal = f.snapshot + f.snapshot_n;
    f.journal_n = size - 5 - f.snapshot_n;
    return f;
}

/* malloc'd; *size = its length. */
static inline uint8_t *fuzz_session_pack(int flags, const void *snapshot, size_t snapshot_n, const void *journal,
                                         size_t journal_n, size_t *size) {
    uint8_t *out = malloc(5 + snapshot_n + journal_n);
    if (!out)
        abort();
    out[0] = (uint8_t)flags;
    for (int i = 0; i < 4; i++)
        out[1 + i] = (uint8_t)(snapshot_n >> (8 * i));
    memcpy(out + 5, snapshot, snapshot_n);
    memcpy(out + 5 + snapshot_n, journal, journal_n);
    *size = 5 + snapshot_n + journal_n;
    return out;
}

#endif
