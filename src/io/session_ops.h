/* What `mnemo sessions` does with a store beyond the calls of mnemo.h: one session's summary,
 * and the store's benchmark (docs/sessions.md). */
#ifndef MN_SESSION_OPS_H
#define MN_SESSION_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

/* Session id's info and |R|, read with the session's own fingerprint: a view that never
 * refuses a state. Absent: MN_OK with *found = 0. */
mn_status mn_session_describe(mn_session_store *store, const char *id, mn_session_info *info, double *state_norm,
                              int *found);

/* Writes id with C escapes for what would garble a listing: \t \n \r, \\ for a backslash, and
 * \xNN for the other control bytes (below 0x20, 0x7f), the C1 controls U+0080..U+009F and
 * bytes that are not valid UTF-8. Other UTF-8 is kept. out holds cap bytes and is always
 * NUL-terminated; an escape that does not fit is left out whole. MN_SESSION_ID_ESCAPED_MAX
 * holds any id. */
#define MN_SESSION_ID_ESCAPED_MAX (4 * MN_SESSION_ID_MAX + 1)
void mn_session_id_escape(const char *id, char *out, size_t cap);

typedef struct {
    int64_t count;      /* sessions to fill the store with */
    int n_slots, width; /* R is n_slots x width floats */
    int64_t gets, puts; /* random gets and updates timed */
} mn_session_bench_options;

/* Times in seconds; rates per second; p50/p99/max of single operations. */
typedef struct {
    double fill_s, fill_rate;
    int64_t fill_compactions;           /* automatic ones during the fill */
    double compact_s, open_writer_s;
    double get_rate, get_p50, get_p99;  /* from the snapshot */
    double put_sync_rate, put_sync_p50, put_sync_p99, put_sync_max;
    double put_rate, put_p50, put_p99;  /* without fsync, automatic compaction off */
    int64_t journal_gets;
    double journal_get_rate;            /* of sessions just updated: they live in the journal */
    double open_reader_s;
    int64_t journal_records;            /* replayed by that reader */
    int64_t snapshot_bytes, journal_bytes;
} mn_session_bench_result;

/* Creates a store at path (which must not exist: MN_ERR_INVALID_ARG), fills it with
 * o->count sessions of random states (no fsync, a bulk load), then times a compaction,
 * reopening, random gets, random fsynced puts, the same without fsync, gets from the journal
 * and a reader's open. The store is left in place. */
mn_status mn_session_store_bench(const char *path, const mn_session_bench_options *o, mn_session_bench_result *r);

#endif
