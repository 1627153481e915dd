/* The retrieval baseline's index (eval.h): one in-memory SQLite FTS5 table per dialogue, the
 * turns added as they arrive, ranked against a question by FTS5's built-in bm25(). */
#include <ctype.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "eval/eval.h"

struct mn_eval_index {
    sqlite3 *db;
    sqlite3_stmt *insert, *query;
};

static mn_status sql_fail(sqlite3 *db, const char *what) {
    return mn_fail(MN_ERR_IO, "retrieval index: %s: %s", what, db ? sqlite3_errmsg(db) : "cannot open SQLite");
}

void mn_eval_index_free(mn_eval_index *ix) {
    if (!ix)
        return;
    sqlite3_finalize(ix->insert);
    sqlite3_finalize(ix->query);
    sqlite3_close(ix->db);
    free(ix);
}

mn_status mn_eval_index_open(mn_eval_index **out) {
    *out = NULL;
    mn_eval_index *ix = calloc(1, sizeof *ix);
    if (!ix)
        return mn_fail(MN_ERR_NOMEM, "retrieval index: out of memory");
    /* a private in-memory database, no shared cache, no mutexes: one worker thread owns it */
    mn_status st = MN_OK;
    if (sqlite3_open_v2(":memory:", &ix->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        st = sql_fail(ix->db, "open :memory:");
    else if (sqlite3_exec(ix->db, "CREATE VIRTUAL TABLE turns USING fts5(text)", NULL, NULL, NULL) != SQLITE_OK)
        st = sql_fail(ix->db, "CREATE VIRTUAL TABLE ... USING fts5 (is FTS5 compiled into this SQLite?)");
    else if (sqlite3_prepare_v2(ix->db, "INSERT INTO turns(rowid, text) VALUES (?1, ?2)", -1, &ix->insert, NULL) !=
             SQLITE_OK)
        st = sql_fail(ix->db, "prepare INSERT");
    /* best bm25 first (FTS5's bm25() is lower for a better match); ties go to the later turn */
    else if (sqlite3_prepare_v2(ix->db, "SELECT rowid FROM turns WHERE turns MATCH ?1 ORDER BY bm25(turns), rowid DESC",
                                -1, &ix->query, NULL) != SQLITE_OK)
        st = sql_fail(ix->db, "prepare SELECT");
    if (st != MN_OK) {
        mn_eval_index_free(ix);
        return st;
    }
    *out = ix;
    return MN_OK;
}

mn_status mn_eval_index_add(mn_eval_index *ix, int64_t id, const char *text) {
    sqlite3_reset(ix->insert);
    sqlite3_bind_int64(ix->insert, 1, id);
    sqlite3_bind_text(ix->insert, 2, text ? text : "", -1, SQLITE_STATIC);
    int rc = sqlite3_step(ix->insert);
    sqlite3_clear_bindings(ix->insert);
    return rc == SQLITE_DONE ? MN_OK : sql_fail(ix->db, "INSERT");
}

/* A byte that belongs to a word: ASCII letters and digits, and every byte of a multi-byte
 * UTF-8 character (FTS5's unicode61 tokenizer sorts those out). */
static int word_byte(unsigned char c) { return c >= 0x80 || isalnum(c); }

mn_status mn_eval_index_match(const char *question, char **out) {
    /* each word as an FTS5 string ("..."): inside one, only '"' is special and a word holds
     * none, so AND, NEAR, *, ^, : and quotes in a question are plain text; the words are
     * joined by OR so that a turn matching any of them is ranked */
    size_t n = strlen(question), cap = 4 * n + 8, len = 0; /* a word of one byte: 7 bytes of query */
    char *q = malloc(cap);
    if (!q)
        return mn_fail(MN_ERR_NOMEM, "retrieval index: out of memory");
    for (size_t i = 0; i < n;) {
        if (!word_byte((unsigned char)question[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && word_byte((unsigned char)question[j]))
            j++;
        len += (size_t)sprintf(q + len, "%s\"%.*s\"", len ? " OR " : "", (int)(j - i), question + i);
        i = j;
    }
    q[len] = '\0';
    *out = q;
    return MN_OK;
}

mn_status mn_eval_index_query(mn_eval_index *ix, const char *question, mn_eval_index_hit *hit, void *ctx) {
    char *match;
    MN_TRY(mn_eval_index_match(question, &match));
    if (!*match) { /* no word to look for: nothing matches */
        free(match);
        return MN_OK;
    }
    sqlite3_reset(ix->query);
    sqlite3_bind_text(ix->query, 1, match, -1, SQLITE_STATIC);
    mn_status st = MN_OK;
    int rc;
    while ((rc = sqlite3_step(ix->query)) == SQLITE_ROW)
        if (!hit(ctx, sqlite3_column_int64(ix->query, 0)))
            break;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        st = sql_fail(ix->db, "SELECT ... MATCH");
    sqlite3_reset(ix->query);
    sqlite3_clear_bindings(ix->query);
    free(match);
    return st;
}

int64_t mn_eval_index_bytes(mn_eval_index *ix) {
    int cur = 0, hi = 0;
    if (sqlite3_db_status(ix->db, SQLITE_DBSTATUS_CACHE_USED, &cur, &hi, 0) != SQLITE_OK)
        return 0;
    return cur;
}
