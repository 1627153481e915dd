/* Session store internals: the on-disk layout of the journal (docs/sessions.md). The public
 * API is in mnemo.h; tests use these constants to damage files on purpose. */
#ifndef MN_SESSION_STORE_H
#define MN_SESSION_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

/* Files of a store at PATH. */
#define MN_STORE_JOURNAL_SUFFIX ".journal"
#define MN_STORE_LOCK_SUFFIX ".lock"
#define MN_STORE_SNAPSHOT_TMP_SUFFIX ".compact.tmp"
#define MN_STORE_JOURNAL_TMP_SUFFIX ".journal.tmp"

/* Snapshot format (the root attribute session_store_version): 2 carries the trailer below;
 * 1, written before it, is still read (HDF5's own checksums only). */
#define MN_SNAPSHOT_VERSION 2
#define MN_JOURNAL_VERSION 1

/* Snapshot trailer, the last 64 bytes of S, after the end of the HDF5 file, little-endian:
 *   0 magic "MNSNAPT1" | 8 u64 states_begin | 16 u64 states_end | 24 u64 hdf5_bytes
 *   32 u64 XXH64 of the HDF5 bytes outside [states_begin, states_end) | 40..55 zero
 *   56 u64 XXH64(bytes 0..55)
 * [states_begin, states_end) is the contiguous dataset 'states', whose rows a get checks
 * against their XXH64 in 'state_xxh64' (seeded with the row number); everything else HDF5
 * parses (superblock, object headers, the per-session arrays, the row checksums) is under the
 * digest, verified before HDF5 opens the file: HDF5 can leave internal state behind, or
 * worse, when its metadata is damaged. */
#define MN_SNAPSHOT_TRAILER_MAGIC "MNSNAPT1"
#define MN_SNAPSHOT_TRAILER_BYTES 64

/* Journal header, 64 bytes, little-endian (version: MN_JOURNAL_VERSION):
 *   0 magic "MNJOURN1" | 8 u32 version | 12 u32 n_slots | 16 u32 d_model | 20 u32 0
 *   24 u64 generation  | 32 u64 record_bytes | 40..55 zero | 56 u64 XXH64(bytes 0..55) */
#define MN_JOURNAL_MAGIC "MNJOURN1"
#define MN_JOURNAL_HEADER_BYTES 64

/* Journal record, fixed size for a store (record_bytes), little-endian:
 *   0 u32 magic | 4 u32 kind | 8 u64 seq (index of the record in this journal)
 *   16 i64 turns | 24 i64 created_us | 32 i64 updated_us | 40 u64 fingerprint
 *   48 u32 id_len | 52 u32 0 | 56 id[256] zero-padded | 312 f32 R[k*C] (zero for a delete)
 *   312 + 4kC: u64 XXH64(bytes before it, seed = journal generation)
 * Seeding with the generation means a record can never validate inside another journal. */
#define MN_RECORD_MAGIC 0x52534e4du /* "MNSR" */
#define MN_RECORD_STATE_OFFSET 312
enum { MN_RECORD_PUT = 1, MN_RECORD_DELETE = 2 };

static inline size_t mn_journal_record_bytes(size_t state_floats) {
    return MN_RECORD_STATE_OFFSET + 4 * state_floats + 8;
}

#endif
