/* libFuzzer target: a session store (an HDF5 snapshot plus its journal; the input packs both,
 * session_pack.h). It is opened read-only and every session listed is read back; with
 * FUZZ_STORE_REPAIR the journal's checksums are recomputed first (the layout in
 * io/session_store.h), so that the replay behind them is reached; with FUZZ_STORE_WRITE the
 * store is also opened for writing (recovery), changed and compacted, and must then read back
 * exactly: the sessions it listed, minus the one deleted, plus the one put. No crash, no
 * leaked HDF5 object, no HDF5 diagnostics printed. Seeds: fuzz_seeds. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "fuzz_files.h"
#include "io/session_store.h"
#include "session_pack.h"

static uint64_t get64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* The header's checksum, then every whole record's with the header's record size and
 * generation. */
static void repair_journal(uint8_t *j, size_t n) {
    if (n < MN_JOURNAL_HEADER_BYTES)
        return;
    put64(j + 56, mn_xxh64(j, 56, 0));
    uint64_t rb = get64(j + 32), generation = get64(j + 24);
    if (rb < mn_journal_record_bytes(0) || rb > n)
        return;
    for (size_t off = MN_JOURNAL_HEADER_BYTES; off + rb <= n; off += rb)
        put64(j + off + rb - 8, mn_xxh64(j + off, rb - 8, generation));
}

typedef struct {
    mn_session_info *infos;
    size_t count;
    float *states; /* count x state floats */
    int slots, d_model;
} listing;

static void listing_free(listing *l) {
    free(l->infos);
    free(l->states);
    memset(l, 0, sizeof *l);
}

/* Every session the store lists, read back with its state; 0 when the store refuses. */
static int read_all(mn_session_store *s, listing *l) {
    mn_session_store_shape(s, &l->slots, &l->d_model);
    size_t floats = (size_t)l->slots * (size_t)l->d_model;
    if (mn_session_list(s, &l->infos, &l->count) != MN_OK)
        return 0;
    l->states = malloc((l->count ? l->count : 1) * floats * sizeof(float));
    if (!l->states)
        abort();
    for (size_t i = 0; i < l->count; i++) {
        mn_session_info info;
        int found = 0;
        if (mn_session_get(s, l->infos[i].id, l->infos[i].fingerprint, l->states + i * floats, &info, &found) !=
            MN_OK)
            return 0; /* a damaged state is refused when read, not when listed */
        const mn_session_info *listed = &l->infos[i];
        if (!found || strcmp(info.id, listed->id) || info.turns != listed->turns ||
            info.created_us != listed->created_us || info.updated_us != listed->updated_us ||
            info.fingerprint != listed->fingerprint) {
            fprintf(stderr, "fuzz: session %zu is listed but reads back otherwise\n", i);
            abort();
        }
    }
    mn_session_store_stats stats;
    if (mn_session_store_stats_get(s, &stats) != MN_OK || stats.sessions != (int64_t)l->count)
        abort();
    return 1;
}

/* Delete the first session listed, put one, compact; a fresh reader must see exactly that. */
static void write_round_trip(const char *path, const listing *before) {
    mn_session_store *s = NULL;
    if (mn_session_store_open(path, MN_STORE_WRITE | MN_STORE_NO_SYNC, 0, 0, &s) != MN_OK)
        return;
    int slots, d_model;
    mn_session_store_shape(s, &slots, &d_model);
    size_t floats = (size_t)slots * (size_t)d_model;
    float *r = calloc(floats, sizeof *r);
    for (size_t i = 0; i < floats; i++)
        r[i] = (float)i - 1.5f;
    const char *gone = before->count ? before->infos[0].id : NULL;
    int ok = (!gone || mn_session_delete(s, gone, NULL) == MN_OK) && mn_session_put(s, "fuzz-new", 7, r, 3) == MN_OK &&
             mn_session_store_compact(s) == MN_OK;
    mn_session_store_close(s);
    fuzz_check_h5_closed("writing");
    if (!ok) {
        free(r);
        return;
    }
    listing after = {0};
    if (mn_session_store_open(path, 0, 0, 0, &s) != MN_OK || !read_all(s, &after)) {
        fprintf(stderr, "fuzz: a store the writer compacted cannot be read back: %s\n", mn_last_error());
        abort();
    }
    mn_session_store_close(s);
    size_t expect = before->count - (gone ? 1 : 0) + 1;
    for (size_t j = 1; j < before->count; j++)
        expect -= !strcmp(before->infos[j].id, "fuzz-new"); /* replaced, not added */
    int found_new = 0;
    for (size_t i = 0; i < after.count; i++) {
        const float *state = after.states + i * floats;
        if (!strcmp(after.infos[i].id, "fuzz-new")) {
            found_new = after.infos[i].turns == 3 && after.infos[i].fingerprint == 7 &&
                        !memcmp(state, r, floats * sizeof *r);
            continue;
        }
        size_t j = 0; /* the same session before: same info (but the time), same state */
        while (j < before->count && strcmp(before->infos[j].id, after.infos[i].id))
            j++;
        if (j == before->count || (gone && !strcmp(gone, after.infos[i].id)) ||
            before->infos[j].turns != after.infos[i].turns ||
            before->infos[j].fingerprint != after.infos[i].fingerprint ||
            memcmp(before->states + j * floats, state, floats * sizeof *r)) {
            fprintf(stderr, "fuzz: compaction changed session '%s'\n", after.infos[i].id);
            abort();
        }
    }
    if (!found_new || after.count != expect) {
        fprintf(stderr, "fuzz: after put + delete + compact: %zu sessions, expected %zu (the new one %s)\n",
                after.count, expect, found_new ? "intact" : "missing or changed");
        abort();
    }
    listing_free(&after);
    free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_session_files in = fuzz_session_unpack(data, size);
    const char *dir = fuzz_begin();
    char path[512], journal_name[64];
    snprintf(path, sizeof path, "%s/store.h5", dir);
    snprintf(journal_name, sizeof journal_name, "store.h5%s", MN_STORE_JOURNAL_SUFFIX);
    fuzz_file("store.h5", in.snapshot, in.snapshot_n);
    if (in.flags & FUZZ_STORE_JOURNAL) {
        uint8_t *j = malloc(in.journal_n + 1);
        memcpy(j, in.journal, in.journal_n);
        if (in.flags & FUZZ_STORE_REPAIR)
            repair_journal(j, in.journal_n);
        fuzz_file(journal_name, j, in.journal_n);
        free(j);
    }

    mn_session_store *s = NULL;
    listing before = {0};
    int readable = 0;
    if (mn_session_store_open(path, 0, 0, 0, &s) == MN_OK) {
        readable = read_all(s, &before);
        mn_session_store_close(s);
    }
    fuzz_check_h5_closed("reading");
    if (readable && (in.flags & FUZZ_STORE_WRITE))
        write_round_trip(path, &before);
    listing_free(&before);
    return 0;
}
