/* The session store (docs/sessions.md): an HDF5 snapshot that is never modified in place, plus
 * an append-only journal of fixed-size checksummed records. A put appends one record and
 * fsyncs it; opening replays the journal over the snapshot; compaction writes a new snapshot
 * and a new empty journal to temp files, fsyncs them and renames them into place, snapshot
 * first. A crash therefore leaves either the old pair, or the new snapshot next to a journal
 * of an older generation (all of whose records the snapshot already holds), or the new pair;
 * and a torn record can only be the journal's last, which replay drops. */
#include "io/session_store.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/hash.h"
#include "io/h5util.h"

/* Advisory lock bytes of path.lock (fcntl open-file-description locks: per handle, not per
 * process, so two handles in one process exclude each other as two processes do). */
#define LOCK_WRITER_BYTE 0 /* held exclusively by the one writer for its whole life */
#define LOCK_DATA_BYTE 1   /* shared while a reader reads, exclusive while files change */

#define DEFAULT_AUTOCOMPACT 4096
#define COMPACT_BATCH_BYTES (4u << 20)
#define MAX_SHAPE (1 << 20)

typedef struct {
    char *id;
    uint32_t id_len;
    uint64_t hash;
    int64_t turns, created_us, updated_us;
    uint64_t fingerprint;
    int64_t where; /* >= 0: byte offset of its record in the journal; < 0: snapshot row -1 - where */
} entry;

struct mn_session_store {
    char *path, *journal_path, *lock_path, *snap_tmp, *journal_tmp;
    int flags;
    int want_slots, want_d_model; /* asked for at open; 0 = any */
    int n_slots, d_model;
    size_t state_floats, record_bytes;
    int lock_fd;
    /* the snapshot this handle reads (snap < 0: none loaded) */
    hid_t snap, states;
    dev_t snap_dev;
    ino_t snap_ino;
    int64_t snap_rows;
    uint64_t *row_sums;    /* version 2: the XXH64 of each snapshot row; NULL for version 1 */
    uint64_t generation;
    /* the journal (fd -1: there is none) */
    int journal_fd;
    dev_t journal_dev;
    ino_t journal_ino;
    int journal_stale;     /* older generation than the snapshot: the snapshot holds all of it */
    int64_t journal_end;   /* end of the last valid record */
    int64_t journal_records;
    /* the index: every live session's metadata and where its R lives */
    entry *entries;
    size_t n_entries, cap_entries;
    uint32_t *buckets;     /* open addressing, linear probing; entry index + 1, 0 = empty */
    size_t n_buckets;      /* power of two */
    uint8_t *record;       /* record_bytes of scratch */
    int64_t autocompact_min, autocompact_retry_at;
    int64_t compactions;
    mn_status last_compact_status;
    /* what an MN_STORE_RECOVER open dropped ("" and 0: nothing) */
    char recovery[640];
    int64_t recovered_records;
};

/* ================================================================ small helpers */
static char *concat(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static uint64_t id_hash(const char *id, size_t len) { return mn_xxh64(id, len, 0x73657373696f6e73ull); }

static mn_status check_id(const char *id, size_t *len) {
    if (!id)
        return mn_fail(MN_ERR_INVALID_ARG, "session id is NULL");
    size_t n = strlen(id);
    if (n < 1 || n > MN_SESSION_ID_MAX)
        return mn_fail(MN_ERR_INVALID_ARG, "session id '%.40s%s' has %zu bytes; ids have 1 to %d", id,
                       n > 40 ? "..." : "", n, MN_SESSION_ID_MAX);
    *len = n;
    return MN_OK;
}

static mn_status write_full(int fd, const void *buf, size_t n, off_t off) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO; /* no progress: never expected of a regular file */
            return MN_ERR_IO;
        }
        p += w, n -= (size_t)w, off += w;
    }
    return MN_OK;
}

/* Bytes read, short only at end of file; -1 on error. */
static ssize_t read_full(int fd, void *buf, size_t n, off_t off) {
    uint8_t *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Writes size bytes to a new file at path and fsyncs it; on failure removes it, and the
 * message names the file and the reason (ENOSPC, EFBIG, ...). */
static mn_status write_new_file(const char *path, const void *data, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    mn_status st = MN_OK;
    if (write_full(fd, data, size, 0) != MN_OK)
        st = mn_fail(MN_ERR_IO, "%s: cannot write %zu bytes: %s", path, size, strerror(errno));
    else if (fsync(fd) != 0)
        st = mn_fail(MN_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    if (close(fd) != 0 && st == MN_OK) /* NFS and full disks can report here */
        st = mn_fail(MN_ERR_IO, "%s: cannot close: %s", path, strerror(errno));
    if (st != MN_OK)
        unlink(path);
    return st;
}

/* ================================================================ locks */
static int ofd_lock(int fd, short type, off_t byte, int wait) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1, .l_pid = 0};
    for (;;) {
        if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static mn_status data_lock(mn_session_store *s, int exclusive) {
    if (ofd_lock(s->lock_fd, exclusive ? F_WRLCK : F_RDLCK, LOCK_DATA_BYTE, 1) != 0)
        return mn_fail(MN_ERR_IO, "%s: cannot take the %s lock: %s", s->lock_path, exclusive ? "write" : "read",
                       strerror(errno));
    return MN_OK;
}

static void data_unlock(mn_session_store *s) { (void)ofd_lock(s->lock_fd, F_UNLCK, LOCK_DATA_BYTE, 0); }

/* ================================================================ the index */
static mn_status index_reserve(mn_session_store *s, size_t n) {
    if (n > s->cap_entries) {
        size_t cap = s->cap_entries ? s->cap_entries : 64;
        while (cap < n)
            cap *= 2;
        entry *e = realloc(s->entries, cap * sizeof *e);
        if (!e)
            return mn_fail(MN_ERR_NOMEM, "out of memory for the session index (%zu sessions)", n);
        s->entries = e;
        s->cap_entries = cap;
    }
    if (n * 10 > s->n_buckets * 7) { /* keep the load factor under 0.7 */
        size_t nb = s->n_buckets ? s->n_buckets : 128;
        while (n * 10 > nb * 7)
            nb *= 2;
        uint32_t *b = calloc(nb, sizeof *b);
        if (!b)
            return mn_fail(MN_ERR_NOMEM, "out of memory for the session index (%zu sessions)", n);
        for (size_t i = 0; i < s->n_entries; i++) {
            size_t j = s->entries[i].hash & (nb - 1);
            while (b[j])
                j = (j + 1) & (nb - 1);
            b[j] = (uint32_t)(i + 1);
        }
        free(s->buckets);
        s->buckets = b;
        s->n_buckets = nb;
    }
    return MN_OK;
}

/* Bucket holding id (*found = 1) or the empty bucket where it would go. Needs n_buckets > 0. */
static size_t find_bucket(const mn_session_store *s, const char *id, size_t len, uint64_t hash, int *found) {
    size_t mask = s->n_buckets - 1, b = hash & mask;
    for (;;) {
        uint32_t v = s->buckets[b];
        if (!v) {
            *found = 0;
            return b;
        }
        const entry *e = &s->entries[v - 1];
        if (e->hash == hash && e->id_len == len && !memcmp(e->id, id, len)) {
            *found = 1;
            return b;
        }
        b = (b + 1) & mask;
    }
}

static entry *find_entry(const mn_session_store *s, const char *id, size_t len) {
    if (!s->n_buckets)
        return NULL;
    int found;
    size_t b = find_bucket(s, id, len, id_hash(id, len), &found);
    return found ? &s->entries[s->buckets[b] - 1] : NULL;
}

/* Inserts a new entry (the id must be absent); the caller fills its fields. */
static mn_status index_insert(mn_session_store *s, const char *id, size_t len, entry **out) {
    MN_TRY(index_reserve(s, s->n_entries + 1));
    uint64_t hash = id_hash(id, len);
    int found;
    size_t b = find_bucket(s, id, len, hash, &found);
    entry *e = &s->entries[s->n_entries];
    memset(e, 0, sizeof *e);
    e->id = malloc(len + 1);
    if (!e->id)
        return mn_fail(MN_ERR_NOMEM, "out of memory for a session id");
    memcpy(e->id, id, len);
    e->id[len] = '\0';
    e->id_len = (uint32_t)len;
    e->hash = hash;
    s->buckets[b] = (uint32_t)(++s->n_entries);
    *out = e;
    return MN_OK;
}

/* Removes the entry in bucket b: backward-shift deletion keeps every probe chain unbroken,
 * and the last entry moves into the freed array slot. */
static void index_remove(mn_session_store *s, size_t b) {
    size_t mask = s->n_buckets - 1, idx = s->buckets[b] - 1;
    size_t i = b, j = b;
    s->buckets[i] = 0;
    for (;;) {
        j = (j + 1) & mask;
        uint32_t v = s->buckets[j];
        if (!v)
            break;
        size_t home = s->entries[v - 1].hash & mask;
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            s->buckets[i] = v;
            s->buckets[j] = 0;
            i = j;
        }
    }
    free(s->entries[idx].id);
    size_t last = s->n_entries - 1;
    if (idx != last) {
        s->entries[idx] = s->entries[last];
        int found;
        size_t lb = find_bucket(s, s->entries[idx].id, s->entries[idx].id_len, s->entries[idx].hash, &found);
        s->buckets[lb] = (uint32_t)(idx + 1);
    }
    s->n_entries--;
}

static void index_clear(mn_session_store *s) {
    for (size_t i = 0; i < s->n_entries; i++)
        free(s->entries[i].id);
    s->n_entries = 0;
    if (s->buckets)
        memset(s->buckets, 0, s->n_buckets * sizeof *s->buckets);
}

/* ================================================================ journal records */
static void journal_header(const mn_session_store *s, uint64_t generation, uint8_t h[MN_JOURNAL_HEADER_BYTES]) {
    memset(h, 0, MN_JOURNAL_HEADER_BYTES);
    memcpy(h, MN_JOURNAL_MAGIC, 8);
    put_u32(h + 8, MN_JOURNAL_VERSION);
    put_u32(h + 12, (uint32_t)s->n_slots);
    put_u32(h + 16, (uint32_t)s->d_model);
    put_u64(h + 24, generation);
    put_u64(h + 32, s->record_bytes);
    put_u64(h + 56, mn_xxh64(h, 56, 0));
}

/* Fills s->record. r NULL: zeros (a delete). */
static void build_record(mn_session_store *s, uint32_t kind, const char *id, size_t len, int64_t turns,
                         int64_t created, int64_t updated, uint64_t fingerprint, const float *r) {
    uint8_t *p = s->record;
    memset(p, 0, MN_RECORD_STATE_OFFSET);
    put_u32(p, MN_RECORD_MAGIC);
    put_u32(p + 4, kind);
    put_u64(p + 8, (uint64_t)s->journal_records);
    put_u64(p + 16, (uint64_t)turns);
    put_u64(p + 24, (uint64_t)created);
    put_u64(p + 32, (uint64_t)updated);
    put_u64(p + 40, fingerprint);
    put_u32(p + 48, (uint32_t)len);
    memcpy(p + 56, id, len);
    size_t bytes = 4 * s->state_floats;
    if (r)
        memcpy(p + MN_RECORD_STATE_OFFSET, r, bytes);
    else
        memset(p + MN_RECORD_STATE_OFFSET, 0, bytes);
    put_u64(p + MN_RECORD_STATE_OFFSET + bytes, mn_xxh64(p, MN_RECORD_STATE_OFFSET + bytes, s->generation));
}

/* NULL if rec is a valid record number seq of this journal, else the reason. */
static const char *record_problem(const mn_session_store *s, const uint8_t *rec, int64_t seq) {
    size_t body = MN_RECORD_STATE_OFFSET + 4 * s->state_floats;
    if (get_u32(rec) != MN_RECORD_MAGIC)
        return "not a record (bad magic)";
    if (get_u64(rec + body) != mn_xxh64(rec, body, s->generation))
        return "corrupt (checksum mismatch)";
    uint32_t kind = get_u32(rec + 4), len = get_u32(rec + 48);
    if (kind != MN_RECORD_PUT && kind != MN_RECORD_DELETE)
        return "of an unknown kind";
    if (get_u64(rec + 8) != (uint64_t)seq)
        return "out of sequence";
    if (len < 1 || len > MN_SESSION_ID_MAX || memchr(rec + 56, 0, len))
        return "holding an invalid session id";
    return NULL;
}

/* Applies a valid record at journal offset off to the index. */
static mn_status apply_record(mn_session_store *s, const uint8_t *rec, int64_t off) {
    const char *id = (const char *)rec + 56;
    size_t len = get_u32(rec + 48);
    entry *e = find_entry(s, id, len);
    if (get_u32(rec + 4) == MN_RECORD_DELETE) {
        if (e) {
            int found;
            index_remove(s, find_bucket(s, id, len, e->hash, &found));
        }
        return MN_OK;
    }
    if (!e)
        MN_TRY(index_insert(s, id, len, &e));
    e->turns = (int64_t)get_u64(rec + 16);
    e->created_us = (int64_t)get_u64(rec + 24);
    e->updated_us = (int64_t)get_u64(rec + 32);
    e->fingerprint = get_u64(rec + 40);
    e->where = off;
    return MN_OK;
}

/* The complete record at journal offset off fails its checks (problem says how). A crash
 * leaves at most a partial last record, so this is damage: refused, unless the store was
 * opened to recover, in which case replay stops before it (and the writer truncates there). */
static mn_status journal_damaged(mn_session_store *s, int64_t off, int64_t size, const char *problem) {
    int64_t dropped = (size - off) / (int64_t)s->record_bytes, kept = s->journal_records;
    if (!(s->flags & MN_STORE_RECOVER))
        return mn_fail(MN_ERR_FORMAT,
                       "%s: record %lld at byte %lld is %s; a crash leaves at most a partial last record, so the "
                       "journal is damaged. Opening with recovery (MN_STORE_RECOVER; mnemo sessions --recover) "
                       "keeps the %lld records before it and drops %lld",
                       s->journal_path, (long long)kept, (long long)off, problem, (long long)kept,
                       (long long)dropped);
    s->journal_end = off;
    s->recovered_records = dropped;
    snprintf(s->recovery, sizeof s->recovery,
             "%s: record %lld at byte %lld is %s: rolled back to the %lld records before it, dropping %lld record%s",
             s->journal_path, (long long)kept, (long long)off, problem, (long long)kept, (long long)dropped,
             dropped == 1 ? "" : "s");
    return MN_OK;
}

/* Replays records from byte `off` up to `size`. A partial record at the end is the torn put of
 * a writer that died mid-append: it is not applied, and journal_end stays before it (the
 * writer truncates it away). A complete bad record is journal_damaged's. */
static mn_status replay(mn_session_store *s, int64_t off, int64_t size) {
    const int64_t rb = (int64_t)s->record_bytes;
    while (off + rb <= size) {
        ssize_t got = read_full(s->journal_fd, s->record, s->record_bytes, off);
        if (got < 0)
            return mn_fail(MN_ERR_IO, "%s: read failed at byte %lld: %s", s->journal_path, (long long)off,
                           strerror(errno));
        if (got < rb)
            break; /* the file shrank under us: what is gone was never acknowledged */
        const char *problem = record_problem(s, s->record, s->journal_records);
        if (problem)
            return journal_damaged(s, off, size, problem);
        MN_TRY(apply_record(s, s->record, off));
        off += rb;
        s->journal_records++;
    }
    s->journal_end = off;
    return MN_OK;
}

/* ================================================================ HDF5 snapshot */
/* A 1-D snapshot array, checksummed in chunks of at most 2^18 elements. */
static mn_status write_array(hid_t loc, const char *file, const char *name, hid_t ftype, hid_t mtype, size_t n,
                             const void *data) {
    size_t chunk = n < (1u << 18) ? n : (1u << 18);
    return mn_h5_write_dataset_chunked(loc, file, name, mtype, ftype, data, 1, &n, &chunk);
}

/* A whole 1-D dataset of n elements, checksummed; another count means a corrupt snapshot (not
 * another model's, as h5util's MN_ERR_MISMATCH would say). */
static mn_status read_array(hid_t loc, const char *file, const char *name, hid_t mtype, size_t n, void *data) {
    size_t count = 0;
    MN_TRY(mn_h5_require_checksum(loc, file, name));
    MN_TRY(mn_h5_dataset_size(loc, file, name, &count));
    if (count != n)
        return mn_fail(MN_ERR_FORMAT, "%s: dataset '%s' has %zu elements, expected %zu", file, name, count, n);
    return mn_h5_read_dataset(loc, file, name, mtype, data, n);
}

/* The checksum of snapshot row `row` (version 2 keeps one per session in 'state_xxh64'):
 * seeded with the row, so that a state in the wrong row fails too. */
static uint64_t row_checksum(const float *r, size_t floats, size_t row) {
    return mn_xxh64(r, floats * sizeof(float), (uint64_t)row);
}

/* Reads the R of one entry from wherever it lives, checking its checksum on the way. */
static mn_status read_state(mn_session_store *s, const entry *e, float *dst) {
    const size_t F = s->state_floats;
    if (e->where >= 0) {
        ssize_t got = read_full(s->journal_fd, s->record, s->record_bytes, e->where);
        if (got != (ssize_t)s->record_bytes)
            return mn_fail(MN_ERR_IO, "%s: cannot read the record of session '%s' at byte %lld", s->journal_path,
                           e->id, (long long)e->where);
        int64_t seq = (e->where - MN_JOURNAL_HEADER_BYTES) / (int64_t)s->record_bytes;
        const char *problem = record_problem(s, s->record, seq);
        if (!problem && (get_u32(s->record + 48) != e->id_len || memcmp(s->record + 56, e->id, e->id_len)))
            problem = "the record of another session";
        if (problem)
            return mn_fail(MN_ERR_FORMAT, "%s: the record of session '%s' at byte %lld is %s", s->journal_path,
                           e->id, (long long)e->where, problem);
        memcpy(dst, s->record + MN_RECORD_STATE_OFFSET, F * sizeof(float));
        return MN_OK;
    }
    hsize_t row = (hsize_t)(-1 - e->where);
    hsize_t start[2] = {row, 0}, count[2] = {1, F}, mdims[1] = {F};
    float *r = (float *)s->record; /* scratch: dst only ever gets a verified state */
    herr_t rc = -1;
    H5E_BEGIN_TRY {
        hid_t fs = H5Dget_space(s->states);
        hid_t ms = H5Screate_simple(1, mdims, NULL);
        if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
            rc = H5Dread(s->states, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, r);
        if (ms >= 0)
            H5Sclose(ms);
        if (fs >= 0)
            H5Sclose(fs);
    }
    H5E_END_TRY;
    if (rc < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: row %llu of 'states' (session '%s') cannot be read (checksum or I/O error)",
                       s->path, (unsigned long long)row, e->id);
    if (s->row_sums && row_checksum(r, F, row) != s->row_sums[row])
        return mn_fail(MN_ERR_FORMAT, "%s: row %llu of 'states' (session '%s') fails its checksum (the file is damaged)",
                       s->path, (unsigned long long)row, e->id);
    memcpy(dst, r, F * sizeof(float));
    return MN_OK;
}

/* XXH64 of the first `size` bytes outside [begin, end), read from fd or, fd < 0, from data. */
static mn_status metadata_digest(int fd, const uint8_t *data, uint64_t size, uint64_t begin, uint64_t end,
                                 const char *path, uint64_t *digest) {
    mn_xxh64_state h;
    mn_xxh64_init(&h, 0);
    uint8_t *buf = fd >= 0 ? malloc(1 << 20) : NULL;
    if (fd >= 0 && !buf)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    uint64_t ranges[2][2] = {{0, begin}, {end, size}};
    for (int r = 0; r < 2; r++)
        for (uint64_t at = ranges[r][0]; at < ranges[r][1];) {
            size_t n = ranges[r][1] - at < (1u << 20) ? (size_t)(ranges[r][1] - at) : (1u << 20);
            errno = 0;
            if (fd < 0) {
                mn_xxh64_update(&h, data + at, n);
            } else if (read_full(fd, buf, n, (off_t)at) != (ssize_t)n) {
                free(buf);
                return mn_fail(MN_ERR_IO, "%s: cannot read byte %llu: %s", path, (unsigned long long)at,
                               errno ? strerror(errno) : "end of file");
            } else {
                mn_xxh64_update(&h, buf, n);
            }
            at += n;
        }
    free(buf);
    *digest = mn_xxh64_digest(&h);
    return MN_OK;
}

/* Appends the trailer (session_store.h) to the HDF5 image. */
static mn_status append_trailer(const char *path, mn_h5_image *image, uint64_t begin, uint64_t end) {
    uint8_t t[MN_SNAPSHOT_TRAILER_BYTES] = {0};
    uint64_t digest = 0;
    MN_TRY(metadata_digest(-1, image->data, image->size, begin, end, path, &digest));
    uint8_t *grown = realloc(image->data, image->size + sizeof t);
    if (!grown)
        return mn_fail(MN_ERR_NOMEM, "%s: out of memory", path);
    memcpy(t, MN_SNAPSHOT_TRAILER_MAGIC, 8);
    put_u64(t + 8, begin);
    put_u64(t + 16, end);
    put_u64(t + 24, image->size);
    put_u64(t + 32, digest);
    put_u64(t + 56, mn_xxh64(t, 56, 0));
    memcpy(grown + image->size, t, sizeof t);
    image->data = grown;
    image->size += sizeof t;
    return MN_OK;
}

/* Checks the trailer and the digest of everything HDF5 will parse, before HDF5 sees the file;
 * [*begin, *end): the bytes of 'states' it leaves out. *has_trailer 0: none (a version 1
 * snapshot, or its magic is damaged: the version attribute, read next, tells which). */
static mn_status verify_snapshot(const char *path, int *has_trailer, uint64_t *states_begin, uint64_t *states_end) {
    *has_trailer = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    uint8_t t[MN_SNAPSHOT_TRAILER_BYTES];
    mn_status st = MN_OK;
    if (fstat(fd, &sb) != 0) {
        st = mn_fail(MN_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    } else if (sb.st_size >= MN_SNAPSHOT_TRAILER_BYTES &&
               read_full(fd, t, sizeof t, sb.st_size - MN_SNAPSHOT_TRAILER_BYTES) == (ssize_t)sizeof t &&
               !memcmp(t, MN_SNAPSHOT_TRAILER_MAGIC, 8)) {
        uint64_t begin = get_u64(t + 8), end = get_u64(t + 16), bytes = get_u64(t + 24), want = get_u64(t + 32);
        uint64_t digest = 0;
        if (get_u64(t + 56) != mn_xxh64(t, 56, 0) || bytes != (uint64_t)sb.st_size - MN_SNAPSHOT_TRAILER_BYTES ||
            begin > end || end > bytes)
            st = mn_fail(MN_ERR_FORMAT, "%s: the snapshot's trailer is corrupt (or the file was cut or extended)",
                         path);
        else if ((st = metadata_digest(fd, NULL, bytes, begin, end, path, &digest)) == MN_OK && digest != want)
            st = mn_fail(MN_ERR_FORMAT,
                         "%s: the snapshot's metadata or session index fails its checksum (the file is damaged)",
                         path);
        *has_trailer = 1;
        *states_begin = begin;
        *states_end = end;
    }
    close(fd);
    return st;
}

/* Writes the entries order[0..n) as a snapshot of the given generation to tmp and fsyncs it.
 * The file is built in memory and written with plain write(), as checkpoints are: HDF5 never
 * sees a failing disk (after a failed write its close leaves the library broken, and the
 * process crashes at exit), and a full disk is reported exactly, with the temp file removed.
 * The cost is memory for the whole new snapshot while compaction runs. */
static mn_status write_snapshot(mn_session_store *s, const char *tmp, uint64_t generation, const size_t *order,
                                size_t n) {
    const size_t F = s->state_floats;
    size_t id_total = 0;
    for (size_t i = 0; i < n; i++)
        id_total += s->entries[order[i]].id_len;
    int64_t *offsets = malloc((n + 1) * sizeof *offsets);
    char *ids = malloc(id_total + 1);
    int64_t *turns = malloc((n + 1) * sizeof *turns), *created = malloc((n + 1) * sizeof *created);
    int64_t *updated = malloc((n + 1) * sizeof *updated);
    uint64_t *fps = malloc((n + 1) * sizeof *fps);
    size_t batch_rows = COMPACT_BATCH_BYTES / (F * sizeof(float));
    if (batch_rows < 1)
        batch_rows = 1;
    float *batch = malloc(batch_rows * F * sizeof(float));
    uint64_t *row_sums = malloc((n + 1) * sizeof *row_sums);
    hid_t f = H5I_INVALID_HID;
    mn_h5_image image = {0};
    uint64_t states_begin = 0, states_end = 0;
    mn_status st = MN_OK;
    if (!offsets || !ids || !turns || !created || !updated || !fps || !batch || !row_sums) {
        st = mn_fail(MN_ERR_NOMEM, "out of memory writing a snapshot of %zu sessions", n);
        goto done;
    }
    offsets[0] = 0;
    for (size_t i = 0; i < n; i++) {
        const entry *e = &s->entries[order[i]];
        memcpy(ids + offsets[i], e->id, e->id_len);
        offsets[i + 1] = offsets[i] + e->id_len;
        turns[i] = e->turns;
        created[i] = e->created_us;
        updated[i] = e->updated_us;
        fps[i] = e->fingerprint;
    }
    /* states with their chunk checksums, the per-session arrays, and room for the metadata */
    size_t size_hint = n * (F * sizeof(float) + 64) + id_total + ((size_t)1 << 16);
    if ((st = mn_h5_memory_file_create(tmp, size_hint, &image, &f)))
        goto done;
    if ((st = mn_h5_write_attr_int(f, tmp, "session_store_version", MN_SNAPSHOT_VERSION)) ||
        (st = mn_h5_write_attr_int(f, tmp, "n_slots", s->n_slots)) ||
        (st = mn_h5_write_attr_int(f, tmp, "d_model", s->d_model)) ||
        (st = mn_h5_write_attr_int(f, tmp, "generation", (int64_t)generation)) ||
        (st = mn_h5_write_attr_int(f, tmp, "count", (int64_t)n)) ||
        (st = write_array(f, tmp, "id_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, n + 1, offsets)) ||
        (st = write_array(f, tmp, "id_bytes", H5T_STD_U8LE, H5T_NATIVE_UINT8, id_total, ids)) ||
        (st = write_array(f, tmp, "turns", H5T_STD_I64LE, H5T_NATIVE_INT64, n, turns)) ||
        (st = write_array(f, tmp, "created_us", H5T_STD_I64LE, H5T_NATIVE_INT64, n, created)) ||
        (st = write_array(f, tmp, "updated_us", H5T_STD_I64LE, H5T_NATIVE_INT64, n, updated)) ||
        (st = write_array(f, tmp, "fingerprint", H5T_STD_U64LE, H5T_NATIVE_UINT64, n, fps)))
        goto done;

    /* contiguous and unfiltered: a get reads its row with one read and checks it against its
     * XXH64 in 'state_xxh64'; the trailer's digest leaves out exactly these bytes */
    size_t dims[2] = {n, F};
    hid_t d = H5I_INVALID_HID;
    if ((st = mn_h5_create_dataset(f, tmp, "states", H5T_IEEE_F32LE, 2, dims, NULL, &d)))
        goto done;
    for (size_t first = 0; first < n && st == MN_OK; first += batch_rows) {
        size_t rows = n - first < batch_rows ? n - first : batch_rows;
        for (size_t i = 0; i < rows && st == MN_OK; i++) {
            st = read_state(s, &s->entries[order[first + i]], batch + i * F);
            row_sums[first + i] = row_checksum(batch + i * F, F, first + i);
        }
        if (st != MN_OK)
            break;
        herr_t rc = -1;
        hsize_t start[2] = {first, 0}, count[2] = {rows, F};
        H5E_BEGIN_TRY {
            hid_t fs = H5Dget_space(d);
            hid_t ms = H5Screate_simple(2, count, NULL);
            if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0)
                rc = H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, batch);
            H5Sclose(ms);
            H5Sclose(fs);
        }
        H5E_END_TRY;
        if (rc < 0)
            st = mn_fail(MN_ERR_NOMEM, "%s: cannot build rows %zu.. of 'states' in memory", tmp, first);
    }
    haddr_t at = HADDR_UNDEF;
    H5E_BEGIN_TRY {
        at = H5Dget_offset(d);
        H5Dclose(d);
    }
    H5E_END_TRY;
    if (st == MN_OK && n > 0 && at == HADDR_UNDEF)
        st = mn_fail(MN_ERR_NOMEM, "%s: 'states' has no storage in the file being built", tmp);
    if (st == MN_OK && n > 0) {
        states_begin = at;
        states_end = at + n * F * sizeof(float);
    }
    if (st == MN_OK)
        st = write_array(f, tmp, "state_xxh64", H5T_STD_U64LE, H5T_NATIVE_UINT64, n, row_sums);
done:
    if (f >= 0) {
        mn_status closed = mn_h5_memory_file_close(f, tmp, &image);
        if (st == MN_OK)
            st = closed;
    }
    if (st == MN_OK)
        st = append_trailer(tmp, &image, states_begin, states_end);
    if (st == MN_OK)
        st = write_new_file(tmp, image.data, image.size);
    free(image.data);
    free(offsets), free(ids), free(turns), free(created), free(updated), free(fps), free(batch), free(row_sums);
    return st;
}

/* Writes a journal holding only its header to journal_tmp (fsynced) and, with rename_now,
 * renames it over journal_path and fsyncs the folder. */
static mn_status journal_replace(mn_session_store *s, uint64_t generation, int rename_now) {
    uint8_t h[MN_JOURNAL_HEADER_BYTES];
    journal_header(s, generation, h);
    MN_TRY(write_new_file(s->journal_tmp, h, sizeof h));
    if (!rename_now)
        return MN_OK;
    if (rename(s->journal_tmp, s->journal_path) != 0) {
        int e = errno;
        unlink(s->journal_tmp);
        return mn_fail(MN_ERR_IO, "%s: cannot rename %s into place: %s", s->journal_path, s->journal_tmp, strerror(e));
    }
    return mn_fsync_parent_dir(s->journal_path);
}

/* ================================================================ loading */
static void unload(mn_session_store *s) {
    H5E_BEGIN_TRY {
        if (s->states >= 0)
            H5Dclose(s->states);
        if (s->snap >= 0)
            H5Fclose(s->snap);
    }
    H5E_END_TRY;
    s->states = s->snap = H5I_INVALID_HID;
    free(s->row_sums);
    s->row_sums = NULL;
    if (s->journal_fd >= 0)
        close(s->journal_fd);
    s->journal_fd = -1;
    s->journal_stale = 0;
    s->journal_end = s->journal_records = 0;
    s->snap_rows = 0;
    s->snap_ino = 0;
    index_clear(s);
}

static mn_status load_snapshot(mn_session_store *s) {
    struct stat sb;
    if (stat(s->path, &sb) != 0)
        return mn_fail(MN_ERR_IO, "%s: no session store here: %s", s->path, strerror(errno));
    int has_trailer = 0;
    uint64_t states_begin = 0, states_end = 0;
    MN_TRY(verify_snapshot(s->path, &has_trailer, &states_begin, &states_end));
    MN_TRY(mn_h5_open_read(s->path, &s->snap));
    s->snap_dev = sb.st_dev;
    s->snap_ino = sb.st_ino;
    int64_t version = 0, ns = 0, dm = 0, gen = 0, count = 0;
    const char *p = s->path;
    MN_TRY(mn_h5_read_attr_int(s->snap, p, "session_store_version", &version));
    if (version < 1 || version > MN_SNAPSHOT_VERSION)
        return mn_fail(MN_ERR_FORMAT, "%s: session store version %lld; this build reads versions 1 to %d", p,
                       (long long)version, MN_SNAPSHOT_VERSION);
    if (version >= 2 && !has_trailer)
        return mn_fail(MN_ERR_FORMAT, "%s: the snapshot's trailer is missing or damaged (the file is damaged)", p);
    MN_TRY(mn_h5_read_attr_int(s->snap, p, "n_slots", &ns));
    MN_TRY(mn_h5_read_attr_int(s->snap, p, "d_model", &dm));
    MN_TRY(mn_h5_read_attr_int(s->snap, p, "generation", &gen));
    MN_TRY(mn_h5_read_attr_int(s->snap, p, "count", &count));
    if (ns < 1 || ns > MAX_SHAPE || dm < 1 || dm > MAX_SHAPE || (int64_t)ns * dm > MAX_SHAPE * 16 || gen < 1 ||
        count < 0)
        return mn_fail(MN_ERR_FORMAT, "%s: bad store attributes (n_slots %lld, d_model %lld, generation %lld, count %lld)",
                       p, (long long)ns, (long long)dm, (long long)gen, (long long)count);
    if ((s->want_slots && s->want_slots != ns) || (s->want_d_model && s->want_d_model != dm))
        return mn_fail(MN_ERR_MISMATCH, "%s: holds states of %lld slots x %lld, not %d x %d (another model's store)", p,
                       (long long)ns, (long long)dm, s->want_slots, s->want_d_model);
    if (s->state_floats && s->state_floats != (size_t)(ns * dm))
        return mn_fail(MN_ERR_FORMAT, "%s: the state shape changed under an open handle", p);
    s->n_slots = (int)ns;
    s->d_model = (int)dm;
    s->state_floats = (size_t)(ns * dm);
    s->record_bytes = mn_journal_record_bytes(s->state_floats);
    s->generation = (uint64_t)gen;
    if (!s->record) {
        s->record = malloc(s->record_bytes);
        if (!s->record)
            return mn_fail(MN_ERR_NOMEM, "out of memory");
    }

    size_t n = (size_t)count, id_total = 0;
    int64_t *offsets = malloc((n + 1) * sizeof *offsets);
    int64_t *turns = malloc((n + 1) * 3 * sizeof *turns);
    uint64_t *fps = malloc((n + 1) * sizeof *fps);
    char *ids = NULL;
    mn_status st = MN_OK;
    if (!offsets || !turns || !fps) {
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory for %zu sessions", p, n);
        goto done;
    }
    int64_t *created = turns + n, *updated = turns + 2 * n;
    if ((st = read_array(s->snap, p, "id_offsets", H5T_NATIVE_INT64, n + 1, offsets)))
        goto done;
    for (size_t i = 0; i < n; i++)
        if (offsets[i + 1] - offsets[i] < 1 || offsets[i + 1] - offsets[i] > MN_SESSION_ID_MAX) {
            st = mn_fail(MN_ERR_FORMAT, "%s: 'id_offsets' gives session %zu an invalid length", p, i);
            goto done;
        }
    if (offsets[0] != 0) {
        st = mn_fail(MN_ERR_FORMAT, "%s: 'id_offsets' does not start at 0", p);
        goto done;
    }
    id_total = (size_t)offsets[n];
    ids = malloc(id_total + 1);
    if (!ids) {
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory for session ids", p);
        goto done;
    }
    if ((st = read_array(s->snap, p, "id_bytes", H5T_NATIVE_UINT8, id_total, ids)) ||
        (st = read_array(s->snap, p, "turns", H5T_NATIVE_INT64, n, turns)) ||
        (st = read_array(s->snap, p, "created_us", H5T_NATIVE_INT64, n, created)) ||
        (st = read_array(s->snap, p, "updated_us", H5T_NATIVE_INT64, n, updated)) ||
        (st = read_array(s->snap, p, "fingerprint", H5T_NATIVE_UINT64, n, fps)) ||
        (st = index_reserve(s, n)))
        goto done;
    for (size_t i = 0; i < n; i++) {
        const char *id = ids + offsets[i];
        size_t len = (size_t)(offsets[i + 1] - offsets[i]);
        entry *e;
        if (memchr(id, 0, len) || find_entry(s, id, len)) {
            st = mn_fail(MN_ERR_FORMAT, "%s: session %zu has an invalid or duplicate id", p, i);
            goto done;
        }
        if ((st = index_insert(s, id, len, &e)))
            goto done;
        e->turns = turns[i];
        e->created_us = created[i];
        e->updated_us = updated[i];
        e->fingerprint = fps[i];
        e->where = -1 - (int64_t)i;
    }
    s->snap_rows = (int64_t)n;

    size_t dims[4];
    int ndims = 0;
    if ((st = mn_h5_dataset_dims(s->snap, p, "states", &ndims, dims)))
        goto done;
    if (ndims == 2 && dims[0] == n && dims[1] == s->state_floats) {
        H5E_BEGIN_TRY { s->states = H5Dopen2(s->snap, "states", H5P_DEFAULT); }
        H5E_END_TRY;
    }
    if (s->states < 0) {
        st = mn_fail(MN_ERR_FORMAT, "%s: dataset 'states' is not (%zu, %zu) or cannot be opened", p, n,
                     s->state_floats);
        goto done;
    }
    if (version == 1) { /* chunks with Fletcher32, checked by HDF5 as a get reads them */
        st = mn_h5_require_checksum(s->snap, p, "states");
        goto done;
    }
    /* version 2: one contiguous run of rows, each checked against its XXH64 by a get; the run
     * must be exactly the bytes the trailer's digest left out */
    haddr_t at = HADDR_UNDEF;
    H5E_BEGIN_TRY { at = H5Dget_offset(s->states); }
    H5E_END_TRY;
    uint64_t bytes = (uint64_t)n * s->state_floats * sizeof(float);
    if (n ? at == HADDR_UNDEF || at != states_begin || states_end - states_begin != bytes : states_begin != states_end) {
        st = mn_fail(MN_ERR_FORMAT, "%s: dataset 'states' is not where the snapshot's trailer says", p);
        goto done;
    }
    s->row_sums = malloc((n + 1) * sizeof *s->row_sums);
    if (!s->row_sums)
        st = mn_fail(MN_ERR_NOMEM, "%s: out of memory for %zu row checksums", p, n);
    else
        st = read_array(s->snap, p, "state_xxh64", H5T_NATIVE_UINT64, n, s->row_sums);
done:
    free(offsets), free(turns), free(fps), free(ids);
    return st;
}

/* The journal cannot be used at all (missing, or its header is bad): refused, or with
 * MN_STORE_RECOVER the snapshot alone, with the journal treated as stale (a writer replaces it
 * with an empty one). `records`: complete records it holds, -1 when unknown. */
static mn_status journal_unusable(mn_session_store *s, const char *problem, int64_t records) {
    char held[64] = "";
    if (records >= 0)
        snprintf(held, sizeof held, ", dropping %lld record%s", (long long)records, records == 1 ? "" : "s");
    if (!(s->flags & MN_STORE_RECOVER))
        return mn_fail(MN_ERR_FORMAT,
                       "%s: %s: the puts since the last compaction cannot be read. Opening with recovery "
                       "(MN_STORE_RECOVER; mnemo sessions --recover) keeps the snapshot alone (generation %llu, "
                       "%lld sessions)%s",
                       s->journal_path, problem, (unsigned long long)s->generation, (long long)s->snap_rows, held);
    s->journal_stale = 1;
    s->recovered_records = records > 0 ? records : 0;
    snprintf(s->recovery, sizeof s->recovery, "%s: %s: rolled back to the snapshot alone (generation %llu, %lld sessions)%s",
             s->journal_path, problem, (unsigned long long)s->generation, (long long)s->snap_rows, held);
    return MN_OK;
}

static mn_status load_journal(mn_session_store *s) {
    int writer = s->flags & MN_STORE_WRITE;
    s->journal_fd = open(s->journal_path, (writer ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (s->journal_fd < 0) {
        if (errno == ENOENT) /* a store is created journal first: this is loss, not a crash */
            return journal_unusable(s, "missing (deleted, or the store was copied without it?)", -1);
        return mn_fail(MN_ERR_IO, "%s: cannot open: %s", s->journal_path, strerror(errno));
    }
    struct stat sb;
    uint8_t h[MN_JOURNAL_HEADER_BYTES];
    if (fstat(s->journal_fd, &sb) != 0)
        return mn_fail(MN_ERR_IO, "%s: cannot stat: %s", s->journal_path, strerror(errno));
    s->journal_dev = sb.st_dev;
    s->journal_ino = sb.st_ino;
    s->journal_end = MN_JOURNAL_HEADER_BYTES;
    int64_t records = sb.st_size > MN_JOURNAL_HEADER_BYTES
                          ? (int64_t)(sb.st_size - MN_JOURNAL_HEADER_BYTES) / (int64_t)s->record_bytes
                          : 0;
    if (read_full(s->journal_fd, h, sizeof h, 0) != (ssize_t)sizeof h || memcmp(h, MN_JOURNAL_MAGIC, 8) ||
        get_u64(h + 56) != mn_xxh64(h, 56, 0))
        return journal_unusable(s, "the journal header is missing or corrupt", records);
    uint64_t gen = get_u64(h + 24);
    if (get_u32(h + 8) != MN_JOURNAL_VERSION || get_u32(h + 12) != (uint32_t)s->n_slots ||
        get_u32(h + 16) != (uint32_t)s->d_model || get_u64(h + 32) != s->record_bytes)
        return journal_unusable(s, "the journal's version or state shape differs from the snapshot's", records);
    if (gen < s->generation) { /* compaction renamed the snapshot in and died before the journal */
        s->journal_stale = 1;
        return MN_OK;
    }
    if (gen > s->generation) {
        char problem[160];
        snprintf(problem, sizeof problem, "journal generation %llu is newer than the snapshot's %llu (files mixed up?)",
                 (unsigned long long)gen, (unsigned long long)s->generation);
        return journal_unusable(s, problem, records);
    }
    return replay(s, MN_JOURNAL_HEADER_BYTES, (int64_t)sb.st_size);
}

/* Loads snapshot + journal from scratch. The caller holds the data lock. */
static mn_status load(mn_session_store *s) {
    unload(s);
    mn_status st = load_snapshot(s);
    if (st == MN_OK)
        st = load_journal(s);
    if (st != MN_OK)
        unload(s); /* the next operation tries again from scratch */
    return st;
}

/* Brings a reader's view up to date: reload if compaction replaced a file, else replay the
 * records appended since last time. The caller holds the shared data lock. */
static mn_status reader_sync(mn_session_store *s) {
    struct stat sb;
    if (s->snap < 0 || stat(s->path, &sb) != 0 || sb.st_ino != s->snap_ino || sb.st_dev != s->snap_dev)
        return load(s);
    int has_journal = stat(s->journal_path, &sb) == 0;
    if (has_journal != (s->journal_fd >= 0) ||
        (has_journal && (sb.st_ino != s->journal_ino || sb.st_dev != s->journal_dev)))
        return load(s);
    if (has_journal && !s->journal_stale && (int64_t)sb.st_size < s->journal_end)
        return load(s); /* truncated under us (a recovering writer): start over */
    if (has_journal && !s->journal_stale && (int64_t)sb.st_size > s->journal_end)
        return replay(s, s->journal_end, (int64_t)sb.st_size);
    return MN_OK;
}

/* ================================================================ open / close */
static mn_status create_store(mn_session_store *s) {
    if (!s->want_slots || !s->want_d_model)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: creating a session store needs n_slots and d_model", s->path);
    s->n_slots = s->want_slots;
    s->d_model = s->want_d_model;
    s->state_floats = (size_t)s->n_slots * (size_t)s->d_model;
    s->record_bytes = mn_journal_record_bytes(s->state_floats);
    /* the journal first: a snapshot never exists without its journal, so a missing journal
     * is always damage, never a creation that died half-way */
    MN_TRY(journal_replace(s, 1, 1));
    mn_status st = write_snapshot(s, s->snap_tmp, 1, NULL, 0);
    if (st == MN_OK && rename(s->snap_tmp, s->path) != 0) {
        st = mn_fail(MN_ERR_IO, "%s: cannot rename %s into place: %s", s->path, s->snap_tmp, strerror(errno));
        unlink(s->snap_tmp);
    }
    if (st != MN_OK) {
        unlink(s->journal_path);
        return st;
    }
    return mn_fsync_parent_dir(s->path);
}

static mn_status open_locked(mn_session_store *s) {
    int writer = s->flags & MN_STORE_WRITE;
    struct stat sb;
    if (writer) {
        unlink(s->snap_tmp); /* leftovers of a compaction that died: never part of the store */
        unlink(s->journal_tmp);
        if (stat(s->path, &sb) != 0) {
            if (errno != ENOENT || !(s->flags & MN_STORE_CREATE))
                return mn_fail(MN_ERR_IO, "%s: no session store here: %s", s->path, strerror(errno));
            MN_TRY(create_store(s));
        }
    }
    MN_TRY(load(s));
    if (!writer)
        return MN_OK;
    /* recovery, done by the writer only: an up-to-date journal without a torn tail */
    if (s->journal_fd < 0 || s->journal_stale) {
        MN_TRY(journal_replace(s, s->generation, 1));
        MN_TRY(load(s));
    }
    if (fstat(s->journal_fd, &sb) != 0)
        return mn_fail(MN_ERR_IO, "%s: cannot stat: %s", s->journal_path, strerror(errno));
    if ((int64_t)sb.st_size > s->journal_end) {
        if (ftruncate(s->journal_fd, s->journal_end) != 0 || fsync(s->journal_fd) != 0)
            return mn_fail(MN_ERR_IO, "%s: cannot truncate it to its last good record: %s", s->journal_path,
                           strerror(errno));
    }
    return MN_OK;
}

/* Whether lock_path still names the file this handle locks: an opener that created the lock
 * file and then failed removes it again, and whoever opened it meanwhile must start over. */
static int lock_file_current(const mn_session_store *s) {
    struct stat a, b;
    return fstat(s->lock_fd, &a) == 0 && stat(s->lock_path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

/* Removes the lock file this failed open created, unless another handle locks it by now. */
static void remove_own_lock_file(mn_session_store *s) {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 2, .l_pid = 0};
    if (fcntl(s->lock_fd, F_OFD_SETLK, &fl) == 0 && lock_file_current(s))
        unlink(s->lock_path);
}

/* Opens (creating: *created) and locks the lock file, then the store under the data lock.
 * *stale: the lock file was replaced meanwhile (the caller starts over). */
static mn_status open_with_lock(mn_session_store *s, int *created, int *stale) {
    int writer = s->flags & MN_STORE_WRITE;
    s->lock_fd = open(s->lock_path, (writer ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (s->lock_fd < 0 && errno == ENOENT) {
        /* a store copied without its lock file gets one; nothing at all is no store (unless
         * this open creates it) and gets no lock file */
        if (access(s->path, F_OK) != 0 && !(s->flags & MN_STORE_CREATE))
            return mn_fail(MN_ERR_IO, "%s: no session store here", s->path);
        s->lock_fd = open(s->lock_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        *created = s->lock_fd >= 0;
        if (s->lock_fd < 0 && errno == EEXIST) /* another opener was quicker */
            s->lock_fd = open(s->lock_path, (writer ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    }
    if (s->lock_fd < 0)
        return mn_fail(MN_ERR_IO, "%s: cannot open the lock file: %s", s->lock_path, strerror(errno));
    if (writer && ofd_lock(s->lock_fd, F_WRLCK, LOCK_WRITER_BYTE, 0) != 0)
        return errno == EAGAIN || errno == EACCES
                   ? mn_fail(MN_ERR_IO, "%s: the store is open for writing by another process (lock on %s)",
                             s->path, s->lock_path)
                   : mn_fail(MN_ERR_IO, "%s: cannot lock: %s", s->lock_path, strerror(errno));
    MN_TRY(data_lock(s, writer));
    mn_status st = MN_OK;
    if (!lock_file_current(s))
        *stale = 1;
    else
        st = open_locked(s);
    data_unlock(s);
    return st;
}

mn_status mn_session_store_open(const char *path, int flags, int n_slots, int d_model, mn_session_store **out) {
    if (!out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_store_open: out is NULL");
    *out = NULL;
    if (!path || !*path)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_store_open: empty path");
    if ((flags & MN_STORE_CREATE) && !(flags & MN_STORE_WRITE))
        return mn_fail(MN_ERR_INVALID_ARG, "%s: MN_STORE_CREATE needs MN_STORE_WRITE", path);
    if (n_slots < 0 || d_model < 0 || n_slots > MAX_SHAPE || d_model > MAX_SHAPE)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: bad state shape %d x %d", path, n_slots, d_model);
    mn_session_store *s = calloc(1, sizeof *s);
    if (!s)
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    s->flags = flags;
    s->want_slots = n_slots;
    s->want_d_model = d_model;
    s->lock_fd = s->journal_fd = -1;
    s->snap = s->states = H5I_INVALID_HID;
    s->autocompact_min = DEFAULT_AUTOCOMPACT;
    s->path = strdup(path);
    s->journal_path = concat(path, MN_STORE_JOURNAL_SUFFIX);
    s->lock_path = concat(path, MN_STORE_LOCK_SUFFIX);
    s->snap_tmp = concat(path, MN_STORE_SNAPSHOT_TMP_SUFFIX);
    s->journal_tmp = concat(path, MN_STORE_JOURNAL_TMP_SUFFIX);
    if (!s->path || !s->journal_path || !s->lock_path || !s->snap_tmp || !s->journal_tmp) {
        mn_session_store_close(s);
        return mn_fail(MN_ERR_NOMEM, "out of memory");
    }
    mn_status st;
    for (int attempt = 0;; attempt++) {
        int created = 0, stale = 0;
        st = open_with_lock(s, &created, &stale);
        if (st == MN_OK && !stale)
            break;
        if (st != MN_OK && created)
            remove_own_lock_file(s);
        if (st != MN_OK || attempt == 100) {
            if (st == MN_OK)
                st = mn_fail(MN_ERR_IO, "%s: its lock file keeps being replaced", s->lock_path);
            mn_session_store_close(s);
            return st;
        }
        unload(s); /* the lock file was removed under us by an opener that failed: again */
        close(s->lock_fd);
        s->lock_fd = -1;
    }
    *out = s;
    return MN_OK;
}

void mn_session_store_close(mn_session_store *s) {
    if (!s)
        return;
    unload(s);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases this handle's locks */
    free(s->entries);
    free(s->buckets);
    free(s->record);
    free(s->path), free(s->journal_path), free(s->lock_path), free(s->snap_tmp), free(s->journal_tmp);
    free(s);
}

const char *mn_session_store_recovery(const mn_session_store *s) { return s && s->recovery[0] ? s->recovery : NULL; }

void mn_session_store_shape(const mn_session_store *s, int *n_slots, int *d_model) {
    if (n_slots)
        *n_slots = s ? s->n_slots : 0;
    if (d_model)
        *d_model = s ? s->d_model : 0;
}

void mn_session_store_set_autocompact(mn_session_store *s, int64_t min_records) {
    if (s)
        s->autocompact_min = min_records > 0 ? min_records : 0;
}

/* ================================================================ operations */
static void fill_info(const entry *e, mn_session_info *info) {
    memcpy(info->id, e->id, e->id_len);
    info->id[e->id_len] = '\0';
    info->turns = e->turns;
    info->created_us = e->created_us;
    info->updated_us = e->updated_us;
    info->fingerprint = e->fingerprint;
}

/* Readers take the shared lock around each operation and catch up first; the writer's view is
 * always current (it makes every change itself). */
static mn_status begin_read(mn_session_store *s) {
    if (s->flags & MN_STORE_WRITE) {
        if (s->snap < 0)
            return mn_fail(MN_ERR_IO, "%s: this handle failed earlier and holds no data; reopen it", s->path);
        return MN_OK;
    }
    MN_TRY(data_lock(s, 0));
    mn_status st = reader_sync(s);
    if (st != MN_OK)
        data_unlock(s);
    return st;
}

static void end_read(mn_session_store *s) {
    if (!(s->flags & MN_STORE_WRITE))
        data_unlock(s);
}

mn_status mn_session_get(mn_session_store *s, const char *id, uint64_t fingerprint, float *r, mn_session_info *info,
                         int *found) {
    size_t len = 0;
    if (!s || !found)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_get: store or found is NULL");
    *found = 0;
    MN_TRY(check_id(id, &len));
    MN_TRY(begin_read(s));
    mn_status st = MN_OK;
    const entry *e = find_entry(s, id, len);
    if (e && r && e->fingerprint != fingerprint)
        st = mn_fail(MN_ERR_MISMATCH,
                     "%s: session '%s' was written by another compressor (fingerprint %016llx, this model's is "
                     "%016llx): its state means nothing to this model; delete it or use another session id",
                     s->path, id, (unsigned long long)e->fingerprint, (unsigned long long)fingerprint);
    if (e && st == MN_OK && r)
        st = read_state(s, e, r);
    if (e && st == MN_OK) {
        if (info)
            fill_info(e, info);
        *found = 1;
    }
    end_read(s);
    return st;
}

static mn_status check_writer(const mn_session_store *s, const char *who) {
    if (!s)
        return mn_fail(MN_ERR_INVALID_ARG, "%s: store is NULL", who);
    if (!(s->flags & MN_STORE_WRITE))
        return mn_fail(MN_ERR_INVALID_ARG, "%s: %s was opened read-only", who, s->path);
    if (s->journal_fd < 0 || s->snap < 0)
        return mn_fail(MN_ERR_IO, "%s: %s: this handle failed earlier and holds no data; reopen it", who, s->path);
    return MN_OK;
}

/* Appends s->record at the journal's end, durably unless MN_STORE_NO_SYNC, then indexes it. */
static mn_status append_record(mn_session_store *s) {
    MN_TRY(data_lock(s, 1));
    int64_t off = s->journal_end;
    mn_status st = write_full(s->journal_fd, s->record, s->record_bytes, off);
    if (st == MN_OK && !(s->flags & MN_STORE_NO_SYNC) && fdatasync(s->journal_fd) != 0)
        st = MN_ERR_IO;
    if (st != MN_OK) {
        int e = errno;
        /* drop the partial record; if even that fails, the next append overwrites it (appends
         * go to explicit offsets) and a reopen would skip it as a torn tail */
        int kept_partial = ftruncate(s->journal_fd, off) != 0;
        (void)kept_partial;
        data_unlock(s);
        return mn_fail(MN_ERR_IO, "%s: cannot append a record (disk full?): %s; the store is unchanged",
                       s->journal_path, strerror(e));
    }
    data_unlock(s);
    st = apply_record(s, s->record, off);
    s->journal_end = off + (int64_t)s->record_bytes;
    s->journal_records++;
    return st;
}

static mn_status compact(mn_session_store *s);

static void maybe_autocompact(mn_session_store *s) {
    if (!s->autocompact_min)
        return;
    int64_t threshold = s->autocompact_min > s->snap_rows ? s->autocompact_min : s->snap_rows;
    if (s->journal_records < threshold || s->journal_records < s->autocompact_retry_at)
        return;
    s->last_compact_status = compact(s);
    /* a failed compaction (disk full?) is retried after as many records again, not every put */
    s->autocompact_retry_at = s->last_compact_status == MN_OK ? 0 : s->journal_records + threshold;
}

mn_status mn_session_put(mn_session_store *s, const char *id, uint64_t fingerprint, const float *r, int64_t turns) {
    size_t len = 0;
    MN_TRY(check_writer(s, "mn_session_put"));
    MN_TRY(check_id(id, &len));
    if (!r)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_put: state is NULL");
    if (turns < 0)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_put: turns = %lld is negative", (long long)turns);
    for (size_t i = 0; i < s->state_floats; i++)
        if (!isfinite(r[i]))
            return mn_fail(MN_ERR_NUMERIC, "mn_session_put: session '%s': the state has a non-finite value at %zu",
                           id, i);
    const entry *e = find_entry(s, id, len);
    int64_t now = now_us(), created = e ? e->created_us : now;
    build_record(s, MN_RECORD_PUT, id, len, turns, created, now > created ? now : created, fingerprint, r);
    MN_TRY(append_record(s));
    maybe_autocompact(s);
    return MN_OK;
}

mn_status mn_session_delete(mn_session_store *s, const char *id, int *existed) {
    size_t len = 0;
    if (existed)
        *existed = 0;
    MN_TRY(check_writer(s, "mn_session_delete"));
    MN_TRY(check_id(id, &len));
    if (!find_entry(s, id, len))
        return MN_OK;
    build_record(s, MN_RECORD_DELETE, id, len, 0, 0, now_us(), 0, NULL);
    MN_TRY(append_record(s));
    if (existed)
        *existed = 1;
    maybe_autocompact(s);
    return MN_OK;
}

static int cmp_info(const void *a, const void *b) {
    return strcmp(((const mn_session_info *)a)->id, ((const mn_session_info *)b)->id);
}

mn_status mn_session_list(mn_session_store *s, mn_session_info **infos, size_t *count) {
    if (!s || !infos || !count)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_list: NULL argument");
    *infos = NULL;
    *count = 0;
    MN_TRY(begin_read(s));
    size_t n = s->n_entries;
    mn_session_info *out = malloc((n ? n : 1) * sizeof *out);
    if (!out) {
        end_read(s);
        return mn_fail(MN_ERR_NOMEM, "out of memory listing %zu sessions", n);
    }
    for (size_t i = 0; i < n; i++)
        fill_info(&s->entries[i], &out[i]);
    end_read(s);
    qsort(out, n, sizeof *out, cmp_info);
    *infos = out;
    *count = n;
    return MN_OK;
}

static int cmp_entry_ids(const void *a, const void *b) {
    const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
    size_t n = x->id_len < y->id_len ? x->id_len : y->id_len;
    int c = memcmp(x->id, y->id, n);
    return c ? c : (x->id_len > y->id_len) - (x->id_len < y->id_len);
}

static mn_status compact(mn_session_store *s) {
    size_t n = s->n_entries;
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    const entry **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!order || !sorted) {
        free(order), free(sorted);
        return mn_fail(MN_ERR_NOMEM, "out of memory compacting %zu sessions", n);
    }
    /* sorted by id: a deterministic file, and neighbours in `list` order share chunks */
    for (size_t i = 0; i < n; i++)
        sorted[i] = &s->entries[i];
    qsort(sorted, n, sizeof *sorted, cmp_entry_ids);
    for (size_t i = 0; i < n; i++)
        order[i] = (size_t)(sorted[i] - s->entries);
    free(sorted);
    uint64_t gen = s->generation + 1;
    mn_status st = write_snapshot(s, s->snap_tmp, gen, order, n);
    free(order);
    if (st == MN_OK)
        st = journal_replace(s, gen, 0);
    if (st != MN_OK) {
        unlink(s->snap_tmp);
        unlink(s->journal_tmp);
        return mn_fail_context(st, "%s: compaction failed, the store is unchanged", s->path);
    }
    MN_TRY(data_lock(s, 1));
    /* snapshot first: a crash between the renames leaves a journal of the older generation,
     * which every open recognises as already included */
    if (rename(s->snap_tmp, s->path) != 0) {
        st = mn_fail(MN_ERR_IO, "%s: cannot rename %s into place: %s; the store is unchanged", s->path, s->snap_tmp,
                     strerror(errno));
        unlink(s->snap_tmp);
        unlink(s->journal_tmp);
        data_unlock(s);
        return st;
    }
    st = mn_fsync_parent_dir(s->path);
    if (rename(s->journal_tmp, s->journal_path) != 0 && st == MN_OK)
        st = mn_fail(MN_ERR_IO, "%s: cannot rename %s into place: %s", s->journal_path, s->journal_tmp,
                     strerror(errno));
    if (st == MN_OK)
        st = mn_fsync_parent_dir(s->journal_path);
    mn_status loaded = load(s); /* the new files, whatever happened to the second rename */
    if (loaded == MN_OK && s->journal_stale) { /* the journal rename failed: retry it once */
        loaded = journal_replace(s, s->generation, 1);
        if (loaded == MN_OK)
            loaded = load(s);
    }
    data_unlock(s);
    if (loaded != MN_OK)
        return loaded;
    s->compactions++;
    return st;
}

mn_status mn_session_store_compact(mn_session_store *s) {
    MN_TRY(check_writer(s, "mn_session_store_compact"));
    return compact(s);
}

mn_status mn_session_store_stats_get(mn_session_store *s, mn_session_store_stats *out) {
    if (!s || !out)
        return mn_fail(MN_ERR_INVALID_ARG, "mn_session_store_stats_get: NULL argument");
    MN_TRY(begin_read(s));
    memset(out, 0, sizeof *out);
    out->sessions = (int64_t)s->n_entries;
    out->snapshot_rows = s->snap_rows;
    out->journal_records = s->journal_records;
    out->generation = s->generation;
    out->compactions = s->compactions;
    out->last_compact_status = s->last_compact_status;
    out->recovered_records = s->recovered_records;
    struct stat sb;
    if (stat(s->path, &sb) == 0)
        out->snapshot_bytes = (int64_t)sb.st_size;
    if (s->journal_fd >= 0 && fstat(s->journal_fd, &sb) == 0)
        out->journal_bytes = (int64_t)sb.st_size;
    end_read(s);
    return MN_OK;
}
