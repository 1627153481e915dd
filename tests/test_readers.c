/* Dialogue readers (src/text/readers.h), the CSV parser and canonical JSONL.
 *
 * Hand-written fixtures in tests/fixtures/text/ cover the corpus shapes and their traps
 * (lexicographic sentence columns, quoted newlines, doubled quotes, CRLF, invalid UTF-8,
 * blocked/rejected/duplicate rows, LoCoMo's odd dia_ids and missing sessions, bad JSONL
 * lines). When the real data is present (MNEMO_DATA), the counts of its SOURCE.md files are
 * checked exactly and the self-dialogue train/valid split is checked to partition authors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "text/csv.h"
#include "text/dialogue.h"
#include "text/readers.h"
#include "text/text_util.h"

/* ------------------------------------------------------------------ helpers */

static char path_buf[8][1024];
static int path_slot;

/* $MNEMO_FIXTURES/text/<rel> (a few live at once). */
static const char *fixture(const char *rel) {
    const char *dir = getenv("MNEMO_FIXTURES");
    if (!dir)
        dir = "tests/fixtures";
    char *p = path_buf[path_slot++ % 8];
    snprintf(p, 1024, "%s/text/%s", dir, rel);
    return p;
}

static const char *data_path(const char *rel) {
    const char *dir = getenv("MNEMO_DATA");
    if (!dir)
        return NULL;
    char *p = path_buf[path_slot++ % 8];
    snprintf(p, 1024, "%s/%s", dir, rel);
    struct stat sb;
    return stat(p, &sb) == 0 ? p : NULL;
}

static int64_t count_turns(const mn_dialogue_list *l) {
    int64_t n = 0;
    for (int64_t i = 0; i < l->count; i++)
        n += l->items[i].n_turns;
    return n;
}

static int64_t count_probes(const mn_dialogue_list *l) {
    int64_t n = 0;
    for (int64_t i = 0; i < l->count; i++)
        n += l->items[i].n_probes;
    return n;
}

static const mn_dialogue *find_dialogue(const mn_dialogue_list *l, const char *id) {
    for (int64_t i = 0; i < l->count; i++)
        if (!strcmp(l->items[i].id, id))
            return &l->items[i];
    return NULL;
}

static int str_eq(const char *a, const char *b) {
    if (!a || !b)
        return a == b;
    return !strcmp(a, b);
}

static void assert_dialogues_equal(const mn_dialogue *a, const mn_dialogue *b) {
    assert_string_equal(a->id, b->id);
    assert_int_equal(a->n_turns, b->n_turns);
    for (int i = 0; i < a->n_turns; i++) {
        assert_string_equal(a->turns[i].speaker, b->turns[i].speaker);
        assert_string_equal(a->turns[i].text, b->turns[i].text);
        assert_int_equal(a->turns[i].session, b->turns[i].session);
        assert_true(str_eq(a->turns[i].date, b->turns[i].date));
    }
    assert_int_equal(a->n_probes, b->n_probes);
    for (int i = 0; i < a->n_probes; i++) {
        const mn_probe *p = &a->probes[i], *q = &b->probes[i];
        assert_int_equal(p->after, q->after);
        assert_true(str_eq(p->speaker, q->speaker));
        assert_string_equal(p->question, q->question);
        assert_string_equal(p->answer, q->answer);
        assert_int_equal(p->category, q->category);
        assert_int_equal(p->n_choices, q->n_choices);
        for (int j = 0; j < p->n_choices; j++)
            assert_string_equal(p->choices[j], q->choices[j]);
        assert_int_equal(p->n_evidence, q->n_evidence);
        for (int j = 0; j < p->n_evidence; j++)
            assert_int_equal(p->evidence[j], q->evidence[j]);
    }
}

static void assert_all_utf8(const mn_dialogue_list *l) {
    for (int64_t i = 0; i < l->count; i++) {
        const mn_dialogue *d = &l->items[i];
        assert_true(mn_utf8_valid(d->id, strlen(d->id)));
        for (int t = 0; t < d->n_turns; t++) {
            assert_true(mn_utf8_valid(d->turns[t].text, strlen(d->turns[t].text)));
            assert_true(mn_utf8_valid(d->turns[t].speaker, strlen(d->turns[t].speaker)));
            assert_true(d->turns[t].speaker[0] != '\0');
        }
    }
}

/* A log captured in memory. */
typedef struct {
    char *text;
    size_t len;
    FILE *f;
} capture;

static void capture_open(capture *c) {
    c->text = NULL;
    c->len = 0;
    c->f = open_memstream(&c->text, &c->len);
    assert_non_null(c->f);
}

static void capture_close(capture *c) {
    fclose(c->f);
    free(c->text);
}

static char *temp_dir(void) {
    char *dir = strdup("/tmp/mnemo_test_readers_XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static int count_dir_entries(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    assert_non_null(p);
    assert_int_equal(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

static void remove_dir(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* ------------------------------------------------------------------ CSV */

static void test_csv_quotes_newlines_crlf(void **state) {
    (void)state;
    const char text[] = "\xEF\xBB\xBF" "a,b,c\r\n"
                        "\"x, y\",\"he said \"\"hi\"\"\",\"two\r\nlines\"\r\n"
                        "\n"
                        "plain,,\"\"\n"
                        "last,row,no newline";
    mn_csv csv;
    mn_csv_init(&csv, "mem.csv", text, sizeof text - 1);
    int got;
    assert_int_equal(mn_csv_next(&csv, &got), MN_OK);
    assert_int_equal(got, 1);
    assert_int_equal(csv.n_fields, 3);
    assert_string_equal(mn_csv_field(&csv, 0), "a");  /* BOM skipped */
    assert_int_equal(mn_csv_next(&csv, &got), MN_OK);
    assert_int_equal(csv.record_line, 2);
    assert_string_equal(mn_csv_field(&csv, 0), "x, y");
    assert_string_equal(mn_csv_field(&csv, 1), "he said \"hi\"");
    assert_string_equal(mn_csv_field(&csv, 2), "two\r\nlines");
    assert_int_equal(mn_csv_next(&csv, &got), MN_OK);
    assert_int_equal(csv.record_line, 5);  /* the quoted newline and the blank line counted */
    assert_int_equal(csv.n_fields, 3);
    assert_string_equal(mn_csv_field(&csv, 0), "plain");
    assert_int_equal(mn_csv_field_len(&csv, 1), 0);
    assert_int_equal(mn_csv_field_len(&csv, 2), 0);
    assert_int_equal(mn_csv_next(&csv, &got), MN_OK);
    assert_int_equal(got, 1);
    assert_string_equal(mn_csv_field(&csv, 2), "no newline");
    assert_int_equal(mn_csv_next(&csv, &got), MN_OK);
    assert_int_equal(got, 0);
    mn_csv_free(&csv);
}

static void test_csv_malformed_reports_line_and_recovers(void **state) {
    (void)state;
    const char text[] = "a,b\n"
                        "ok,1\n"
                        "bad\"quote,2\n"
                        "\"closed\"junk,3\n"
                        "fine,4\n"
                        "\"never closed,5\n";
    mn_csv csv;
    mn_csv_init(&csv, "bad.csv", text, sizeof text - 1);
    int got;
    assert_int_equal(mn_csv_next(&csv, &got), MN_OK);
    assert_int_equal(mn_csv_next(&csv, &got), MN_OK);
    assert_string_equal(mn_csv_field(&csv, 0), "ok");
    assert_int_equal(mn_csv_next(&csv, &got), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "bad.csv:3:"));
    assert_non_null(strstr(mn_last_error(), "quote inside an unquoted field"));
    assert_int_equal(mn_csv_next(&csv, &got), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "bad.csv:4:"));
    assert_non_null(strstr(mn_last_error(), "after a closing quote"));
    assert_int_equal(mn_csv_next(&csv, &got), MN_OK);
    assert_int_equal(got, 1);
    assert_string_equal(mn_csv_field(&csv, 0), "fine");
    assert_int_equal(csv.record_line, 5);
    assert_int_equal(mn_csv_next(&csv, &got), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "bad.csv:6:"));
    assert_non_null(strstr(mn_last_error(), "not closed"));
    assert_int_equal(mn_csv_next(&csv, &got), MN_OK);
    assert_int_equal(got, 0);
    mn_csv_free(&csv);
}

/* ------------------------------------------------------------------ text cleaning */

static void test_utf8_repair(void **state) {
    (void)state;
    const char bad[] = "ok \xff x \xc3 y \xed\xa0\x80 z \xf0\x9f\x98\x80 \xe2\x82";
    assert_false(mn_utf8_valid(bad, sizeof bad - 1));
    int64_t replaced = 0;
    size_t len = 0;
    char *fixed = mn_utf8_repair(bad, sizeof bad - 1, &len, &replaced);
    assert_non_null(fixed);
    assert_true(mn_utf8_valid(fixed, len));
    /* 0xff, 0xc3, the 3 surrogate bytes, the 2 truncated bytes; the emoji stays */
    assert_int_equal(replaced, 7);
    assert_non_null(strstr(fixed, "\xf0\x9f\x98\x80"));
    assert_memory_equal(fixed, "ok \xEF\xBF\xBD x", 8);
    free(fixed);
    const char nul[] = {'a', 0, 'b'};
    assert_false(mn_utf8_valid(nul, 3));
    fixed = mn_utf8_repair(nul, 3, &len, &replaced);
    assert_string_equal(fixed, "a\xEF\xBF\xBD" "b");
    assert_int_equal(replaced, 1);
    free(fixed);
}

static void test_long_turn_split_at_whitespace(void **state) {
    (void)state;
    mn_reader_options opt = mn_reader_options_default();
    opt.max_turn_chars = 10;
    mn_read_stats stats = {0};
    mn_dialogue d = {0};
    int cap = 0, added = 0;
    /* "é" is 2 bytes but one char: pieces are measured in code points */
    const char *text = "  one two three \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9 abcdefghijklmnopqrstuvwxyz end  ";
    assert_int_equal(mn_dialogue_add_text(&d, &cap, "A", text, strlen(text), 3, "day", &opt,
                                          &stats, &added),
                     MN_OK);
    const char *want[] = {"one two", "three \xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", "abcdefghij",
                          "klmnopqrst", "uvwxyz end"};
    assert_int_equal(added, 5);
    assert_int_equal(d.n_turns, 5);
    for (int i = 0; i < 5; i++) {
        assert_string_equal(d.turns[i].text, want[i]);
        assert_string_equal(d.turns[i].speaker, "A");
        assert_int_equal(d.turns[i].session, 3);
        assert_string_equal(d.turns[i].date, "day");
    }
    assert_int_equal(stats.split_turns, 1);
    /* blank turns are dropped and counted; invalid bytes repaired and counted */
    assert_int_equal(mn_dialogue_add_text(&d, &cap, "B", " \t\r\n", 4, 0, NULL, &opt, &stats,
                                          &added),
                     MN_OK);
    assert_int_equal(added, 0);
    assert_int_equal(stats.empty_turns, 1);
    assert_int_equal(mn_dialogue_add_text(&d, &cap, "B", "x\xffy", 3, 0, NULL, &opt, &stats,
                                          &added),
                     MN_OK);
    assert_string_equal(d.turns[5].text, "x\xEF\xBF\xBDy");
    assert_int_equal(stats.invalid_utf8, 1);
    mn_dialogue_free(&d);
}

/* ------------------------------------------------------------------ self-dialogue */

static void test_self_dialogue_fixture(void **state) {
    (void)state;
    mn_reader_options opt = mn_reader_options_default();
    capture log;
    capture_open(&log);
    opt.log = log.f;
    mn_dialogue_list list = {0};
    mn_reader_stats stats = {0};
    assert_int_equal(mn_read_self_dialogue(fixture("self_dialogue"), &opt, &list, &stats), MN_OK);
    fflush(log.f);
    assert_int_equal(list.count, 5);
    assert_int_equal(count_turns(&list), 17);
    assert_int_equal(stats.files, 2);
    assert_int_equal(stats.read.lines_read, 10);
    assert_int_equal(stats.read.bad_records, 2);
    assert_int_equal(stats.rejected_rows, 1);
    assert_int_equal(stats.blocked_rows, 1);
    assert_int_equal(stats.duplicate_rows, 1);
    assert_int_equal(stats.read.empty_turns, 38);
    assert_int_equal(stats.read.invalid_utf8, 1);
    assert_int_equal(stats.read.split_turns, 0);
    assert_non_null(strstr(log.text, "batch1.csv:8: malformed CSV record: quote inside"));
    assert_non_null(strstr(log.text, "batch1.csv:9: 3 fields, the header has 17"));
    /* sorted paths: cooking before gardening, rows in file order */
    assert_string_equal(list.items[0].id, "cooking/ASSIGN1");
    assert_string_equal(list.items[1].id, "cooking/ASSIGN5");
    assert_string_equal(list.items[2].id, "cooking/ASSIGN8");
    assert_string_equal(list.items[3].id, "gardening/ASSIGN9");
    const mn_dialogue *d = &list.items[0];
    /* numeric order of Answer.sentenceN although the header is lexicographic; {} and
     * blank skipped; odd = A, even = B */
    const char *texts[] = {"s1 hello", "s2 hi, there", "s3 \"quoted\" word",
                           "s4 line one\nline two", "s7", "s8", "s9", "s10 tenth", "s11 eleventh"};
    const char *speakers[] = {"A", "B", "A", "B", "A", "B", "A", "B", "A"};
    assert_int_equal(d->n_turns, 9);
    for (int i = 0; i < 9; i++) {
        assert_string_equal(d->turns[i].text, texts[i]);
        assert_string_equal(d->turns[i].speaker, speakers[i]);
        assert_int_equal(d->turns[i].session, 0);
        assert_null(d->turns[i].date);
    }
    d = &list.items[3];
    assert_string_equal(d->turns[0].text, "bad \xEF\xBF\xBD byte \xEF\xBF\xBD end");
    assert_string_equal(d->turns[2].text, "caf\xc3\xa9 ok");
    assert_string_equal(list.items[4].turns[1].text, "crlf \"two\"\r\nsecond line");
    /* no worker id leaks into the output */
    for (int64_t i = 0; i < list.count; i++)
        assert_null(strstr(list.items[i].id, "WORKER"));
    assert_all_utf8(&list);
    mn_dialogue_list_free(&list);
    capture_close(&log);

    /* the same rows with a small turn limit: the 479-char turn becomes 5 turns */
    opt = mn_reader_options_default();
    opt.max_turn_chars = 100;
    memset(&stats, 0, sizeof stats);
    assert_int_equal(mn_read_self_dialogue(fixture("self_dialogue"), &opt, &list, &stats), MN_OK);
    assert_int_equal(count_turns(&list), 21);
    assert_int_equal(stats.read.split_turns, 1);
    d = find_dialogue(&list, "gardening/ASSIGN9");
    assert_non_null(d);
    for (int i = 1; i <= 5; i++) {
        assert_string_equal(d->turns[i].speaker, "B");
        assert_true(strlen(d->turns[i].text) <= 100);
    }
    assert_string_equal(d->turns[1].text, "word000 word001 word002 word003 word004 word005 "
                                          "word006 word007 word008 word009 word010 word011");
    mn_dialogue_list_free(&list);

    /* strict: the first bad record is fatal and named */
    opt = mn_reader_options_default();
    opt.strict = 1;
    assert_int_equal(mn_read_self_dialogue(fixture("self_dialogue"), &opt, &list, NULL),
                     MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "batch1.csv:8:"));
    mn_dialogue_list_free(&list);
}

static void test_self_dialogue_split_by_author(void **state) {
    (void)state;
    mn_reader_options opt = mn_reader_options_default();
    opt.valid_percent = 50;
    mn_dialogue_list all = {0}, train = {0}, valid = {0};
    assert_int_equal(mn_read_self_dialogue(fixture("self_dialogue"), &opt, &all, NULL), MN_OK);
    opt.split = MN_SPLIT_TRAIN;
    mn_reader_stats st_train = {0}, st_valid = {0};
    assert_int_equal(mn_read_self_dialogue(fixture("self_dialogue"), &opt, &train, &st_train),
                     MN_OK);
    opt.split = MN_SPLIT_VALID;
    assert_int_equal(mn_read_self_dialogue(fixture("self_dialogue"), &opt, &valid, &st_valid),
                     MN_OK);
    assert_int_equal(train.count + valid.count, all.count);
    assert_int_equal(st_train.other_split, valid.count);
    assert_int_equal(st_valid.other_split, train.count);
    /* ASSIGN5 and ASSIGN8 share an author: they must land on the same side */
    int a5 = find_dialogue(&valid, "cooking/ASSIGN5") != NULL;
    int a8 = find_dialogue(&valid, "cooking/ASSIGN8") != NULL;
    assert_int_equal(a5, a8);
    assert_int_equal(a5, mn_self_dialogue_author_is_valid("WORKER_TWO", 50));
    /* the hash is fixed: same answer every time, and 0% / 100% are absolute */
    assert_false(mn_self_dialogue_author_is_valid("WORKER_TWO", 0));
    assert_true(mn_self_dialogue_author_is_valid("WORKER_TWO", 100));
    mn_dialogue_list_free(&all);
    mn_dialogue_list_free(&train);
    mn_dialogue_list_free(&valid);
}

static void test_self_dialogue_buffer(void **state) {
    (void)state;
    const char csv[] = "AssignmentId,WorkerId,Reject,Answer.sentence2,Answer.sentence1\n"
                       "A1,W1,,second,first\n"
                       "A2,W1,,{},\n";
    mn_dialogue_list list = {0};
    mn_reader_stats stats = {0};
    assert_int_equal(mn_read_self_dialogue_buffer("topic/x.csv", csv, sizeof csv - 1, NULL,
                                                  &list, &stats),
                     MN_OK);
    assert_int_equal(list.count, 1);
    assert_string_equal(list.items[0].id, "topic/A1");
    assert_string_equal(list.items[0].turns[0].text, "first");
    assert_string_equal(list.items[0].turns[1].speaker, "B");
    assert_int_equal(stats.empty_dialogues, 1);
    mn_dialogue_list_free(&list);
    /* a header without the needed columns skips the file, or fails under strict */
    mn_reader_options opt = mn_reader_options_default();
    opt.strict = 1;
    assert_int_equal(mn_read_self_dialogue_buffer("h.csv", "x,y\n1,2\n", 8, &opt, &list, NULL),
                     MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "h.csv:1: header lacks AssignmentId"));
    mn_dialogue_list_free(&list);
}

/* ------------------------------------------------------------------ topical-chat */

static void test_topical_chat_fixture(void **state) {
    (void)state;
    mn_reader_options opt = mn_reader_options_default();
    mn_dialogue_list list = {0};
    mn_reader_stats stats = {0};
    assert_int_equal(mn_read_topical_chat(fixture("topical_chat"), &opt, &list, &stats), MN_OK);
    assert_int_equal(list.count, 6);
    assert_int_equal(count_turns(&list), 19);
    assert_int_equal(stats.files, 4);
    assert_string_equal(list.items[0].id, "t_v1");
    assert_string_equal(list.items[0].turns[0].speaker, "agent_1");
    assert_string_equal(list.items[0].turns[1].speaker, "agent_2");
    assert_string_equal(list.items[0].turns[2].text, "message 2 of the talk");
    assert_string_equal(list.items[1].turns[0].speaker, "agent_2");
    mn_dialogue_list_free(&list);
    opt.split = MN_SPLIT_VALID;
    assert_int_equal(mn_read_topical_chat(fixture("topical_chat"), &opt, &list, NULL), MN_OK);
    assert_int_equal(list.count, 3);
    assert_int_equal(count_turns(&list), 9);
    mn_dialogue_list_free(&list);
    opt.split = MN_SPLIT_TEST;
    assert_int_equal(mn_read_topical_chat(fixture("topical_chat/conversations"), &opt, &list,
                                          NULL),
                     MN_OK);
    assert_int_equal(list.count, 3);
    assert_string_equal(list.items[0].id, "t_t1");
    mn_dialogue_list_free(&list);

    /* malformed conversations are skipped and named by the line of their id */
    capture log;
    capture_open(&log);
    opt = mn_reader_options_default();
    opt.log = log.f;
    memset(&stats, 0, sizeof stats);
    assert_int_equal(mn_read_topical_chat(fixture("topical_bad.json"), &opt, &list, &stats),
                     MN_OK);
    fflush(log.f);
    assert_int_equal(list.count, 1);
    assert_int_equal(stats.read.bad_records, 2);
    assert_non_null(strstr(log.text, "topical_bad.json:30: conversation t_bad: content"));
    assert_non_null(strstr(log.text, "conversation t_noagent: a turn's agent"));
    mn_dialogue_list_free(&list);
    capture_close(&log);
    opt.log = NULL;
    opt.strict = 1;
    assert_int_equal(mn_read_topical_chat(fixture("topical_bad.json"), &opt, &list, NULL),
                     MN_ERR_FORMAT);
    mn_dialogue_list_free(&list);
}

/* ------------------------------------------------------------------ LoCoMo */

static int has_choice(const mn_probe *p, const char *s) {
    for (int i = 0; i < p->n_choices; i++)
        if (!strcmp(p->choices[i], s))
            return 1;
    return 0;
}

static void test_locomo_fixture(void **state) {
    (void)state;
    mn_reader_options opt = mn_reader_options_default();
    mn_dialogue_list list = {0};
    mn_reader_stats stats = {0};
    capture log;
    capture_open(&log);
    opt.log = log.f;
    assert_int_equal(mn_read_locomo(fixture("locomo"), &opt, &list, &stats), MN_OK);
    fflush(log.f);
    assert_int_equal(list.count, 1);
    const mn_dialogue *d = &list.items[0];
    assert_string_equal(d->id, "conv-x");
    /* sessions in numeric order 1, 2, 10; session_3 has only a date and no turns */
    assert_int_equal(d->n_turns, 6);
    const int sessions[] = {1, 1, 2, 2, 10, 10};
    for (int i = 0; i < 6; i++)
        assert_int_equal(d->turns[i].session, sessions[i]);
    assert_string_equal(d->turns[0].date, "1:56 pm on 8 May, 2023");
    assert_string_equal(d->turns[2].date, "2:00 pm on 20 May, 2023");
    assert_string_equal(d->turns[4].text, "Back from Oslo.");
    assert_string_equal(d->turns[1].text,
                        "Nice! Look at my dog. [shares a photo of a small dog on a sofa]");
    assert_string_equal(d->turns[5].text, "[shares a photo: a sunset over the sea]");
    assert_string_equal(d->turns[5].speaker, "Ana");
    /* 9 questions, one without an answer skipped */
    assert_int_equal(d->n_probes, 8);
    assert_int_equal(stats.skipped_probes, 1);
    assert_non_null(strstr(log.text, "conv-x qa[8]: answer missing"));
    const mn_probe *p = &d->probes[0];
    assert_string_equal(p->answer, "Lisbon");
    assert_int_equal(p->category, 4);
    assert_int_equal(p->after, 6);
    assert_int_equal(p->n_evidence, 1);
    assert_int_equal(p->evidence[0], 0);
    /* only one other category-4 answer exists: one distractor */
    assert_int_equal(p->n_choices, 2);
    assert_true(has_choice(p, "Lisbon") && has_choice(p, "Oslo"));
    p = &d->probes[1];
    assert_string_equal(p->answer, "2022");  /* integer answer coerced */
    assert_int_equal(p->n_evidence, 2);      /* "D2:2; D10:1" holds two ids */
    assert_int_equal(p->evidence[0], 3);
    assert_int_equal(p->evidence[1], 4);
    /* category 2 has 4 answers, "june 2023" duplicates "June 2023" up to case: 3 choices
     * would be possible for q1 (2022 + June 2023 + May 2023 + june dup) */
    assert_int_equal(p->n_choices, 3);
    assert_true(has_choice(p, "2022") && has_choice(p, "May 2023"));
    assert_int_equal(d->probes[2].evidence[0], 2);  /* "D:2:1" read leniently */
    /* category 5: unanswerable, the adversarial answer is a distractor */
    p = &d->probes[5];
    assert_int_equal(p->category, 5);
    assert_string_equal(p->answer, MN_LOCOMO_UNANSWERABLE);
    assert_true(has_choice(p, MN_LOCOMO_UNANSWERABLE));
    assert_true(has_choice(p, "Rex"));
    assert_true(has_choice(p, "Tom"));  /* other category-5 adversarial answers */
    assert_int_equal(p->evidence[0], 1);
    /* "D9:9" and "D" name no turn */
    assert_int_equal(d->probes[6].n_evidence, 0);
    assert_int_equal(d->probes[7].n_evidence, 0);
    assert_int_equal(stats.unresolved_evidence, 2);
    for (int i = 0; i < d->n_probes; i++) {
        assert_true(has_choice(&d->probes[i], d->probes[i].answer));
        assert_true(d->probes[i].n_choices <= 4);
    }
    capture_close(&log);

    /* deterministic, and --ask-at evidence asks right after the evidence session */
    mn_dialogue_list again = {0};
    opt = mn_reader_options_default();
    opt.ask_at = MN_ASK_AT_EVIDENCE;
    assert_int_equal(mn_read_locomo(fixture("locomo/locomo10.json"), &opt, &again, NULL), MN_OK);
    const mn_dialogue *e = &again.items[0];
    assert_int_equal(e->probes[0].after, 2);  /* evidence in session 1 (turns 0-1) */
    assert_int_equal(e->probes[1].after, 6);  /* latest evidence in session 10 */
    assert_int_equal(e->probes[2].after, 4);  /* session 2 ends after turn 3 */
    assert_int_equal(e->probes[6].after, 6);  /* no evidence: at the end */
    for (int i = 0; i < d->n_probes; i++) {
        assert_int_equal(e->probes[i].n_choices, d->probes[i].n_choices);
        for (int j = 0; j < d->probes[i].n_choices; j++)
            assert_string_equal(e->probes[i].choices[j], d->probes[i].choices[j]);
    }
    mn_dialogue_list_free(&again);

    /* k = 1 distractor; k = 0 means no multiple choice */
    opt = mn_reader_options_default();
    opt.n_distractors = 1;
    assert_int_equal(mn_read_locomo(fixture("locomo"), &opt, &again, NULL), MN_OK);
    assert_int_equal(again.items[0].probes[1].n_choices, 2);
    assert_true(has_choice(&again.items[0].probes[5], "Rex"));
    mn_dialogue_list_free(&again);
    opt.n_distractors = 0;
    assert_int_equal(mn_read_locomo(fixture("locomo"), &opt, &again, NULL), MN_OK);
    assert_int_equal(again.items[0].probes[1].n_choices, 0);
    mn_dialogue_list_free(&again);
    mn_dialogue_list_free(&list);
}

/* ------------------------------------------------------------------ chitchat */

static void test_chitchat_fixture(void **state) {
    (void)state;
    mn_reader_options opt = mn_reader_options_default();
    mn_dialogue_list list = {0};
    mn_reader_stats stats = {0};
    assert_int_equal(mn_read_chitchat(fixture("chitchat.json"), &opt, &list, &stats), MN_OK);
    assert_int_equal(list.count, 2);
    assert_int_equal(stats.read.bad_records, 1);  /* c3 */
    const mn_dialogue *d = &list.items[0];
    assert_string_equal(d->id, "c1");
    assert_int_equal(d->n_turns, 3);  /* the blank message dropped */
    assert_int_equal(stats.read.empty_turns, 1);
    assert_string_equal(d->turns[0].text, "Hello how are you?");
    assert_string_equal(d->turns[0].speaker, "A");
    assert_string_equal(d->turns[0].date, "2018-05-02T19:38:15Z");
    assert_string_equal(d->turns[1].speaker, "B");
    assert_string_equal(d->turns[2].speaker, "B");
    assert_string_equal(list.items[1].turns[0].speaker, "A");
    mn_dialogue_list_free(&list);
}

/* ------------------------------------------------------------------ JSONL */

static void test_jsonl_round_trip(void **state) {
    (void)state;
    mn_dialogue_list list = {0};
    mn_read_stats stats = {0};
    assert_int_equal(mn_jsonl_read(fixture("good.jsonl"), 1, NULL, &list, &stats), MN_OK);
    assert_int_equal(list.count, 2);
    assert_int_equal(stats.bad_records, 0);
    const mn_dialogue *d = &list.items[0];
    assert_int_equal(d->n_turns, 3);
    assert_int_equal(d->turns[0].session, 1);
    assert_string_equal(d->turns[0].date, "2023-05-08");
    assert_null(d->turns[1].date);
    assert_string_equal(d->turns[2].text, "");
    assert_int_equal(d->n_probes, 2);
    assert_string_equal(d->probes[0].speaker, "B");
    assert_int_equal(d->probes[0].n_choices, 4);
    assert_int_equal(d->probes[0].category, 4);
    assert_null(d->probes[1].speaker);
    assert_int_equal(d->probes[1].n_choices, 0);
    assert_int_equal(d->probes[1].n_evidence, 0);
    assert_int_equal(d->probes[1].category, 0);

    char *dir = temp_dir();
    char path[1100], path2[1100];
    snprintf(path, sizeof path, "%s/out.jsonl", dir);
    snprintf(path2, sizeof path2, "%s/out2.jsonl", dir);
    assert_int_equal(mn_jsonl_write_file(path, &list), MN_OK);
    mn_dialogue_list back = {0};
    assert_int_equal(mn_jsonl_read(path, 1, NULL, &back, NULL), MN_OK);
    assert_int_equal(back.count, list.count);
    for (int64_t i = 0; i < list.count; i++)
        assert_dialogues_equal(&list.items[i], &back.items[i]);
    /* the written text is a fixed point, and absent optional fields stay absent */
    assert_int_equal(mn_jsonl_write_file(path2, &back), MN_OK);
    char *a, *b;
    size_t alen, blen;
    assert_int_equal(mn_file_read_all(path, &a, &alen), MN_OK);
    assert_int_equal(mn_file_read_all(path2, &b, &blen), MN_OK);
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
    assert_null(strstr(a, "\"category\":0"));
    assert_null(strstr(a, "\"extra\""));
    assert_non_null(strstr(a, "{\"after\":2,\"question\":\"Plain?\",\"answer\":\"yes\"}"));
    free(a);
    free(b);
    /* overwriting is atomic and leaves no temp file */
    assert_int_equal(mn_jsonl_write_file(path, &back), MN_OK);
    assert_int_equal(count_dir_entries(dir), 2);
    mn_dialogue_list_free(&back);
    remove_dir(dir);
    free(dir);
    /* a folder that does not exist: a clear IO error naming the path */
    assert_int_equal(mn_jsonl_write_file("/nonexistent_dir_mnemo/x.jsonl", &list), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "/nonexistent_dir_mnemo/x.jsonl"));
    mn_dialogue_list_free(&list);
}

static void test_jsonl_bad_lines(void **state) {
    (void)state;
    capture log;
    capture_open(&log);
    mn_dialogue_list list = {0};
    mn_read_stats stats = {0};
    assert_int_equal(mn_jsonl_read(fixture("bad.jsonl"), 0, log.f, &list, &stats), MN_OK);
    fflush(log.f);
    /* lines 1, 13 (invalid UTF-8 repaired) and 14 (no final newline) are good */
    assert_int_equal(list.count, 3);
    assert_string_equal(list.items[0].id, "conv-17");
    assert_string_equal(list.items[1].id, "utf8");
    assert_string_equal(list.items[1].turns[0].text, "bad \xEF\xBF\xBD byte");
    assert_string_equal(list.items[2].id, "last");
    assert_int_equal(stats.lines_read, 13);  /* the blank line is not a record */
    assert_int_equal(stats.bad_records, 10);
    assert_int_equal(stats.invalid_utf8, 1);
    const char *expect[] = {
        "bad.jsonl:2: invalid JSON",
        "bad.jsonl:4: not a JSON object",
        "bad.jsonl:5: turns: empty",
        "bad.jsonl:6: turns[0].speaker",
        "bad.jsonl:7: probes[0].after: 2 is outside 1..1",
        "bad.jsonl:8: probes[0].choices: does not contain the answer",
        "bad.jsonl:9: probes[0].evidence[0]: turn 1 is outside 0..0",
        "bad.jsonl:10: id: not a string",
        "bad.jsonl:11: turns[0].session: not an integer",
        "bad.jsonl:12: invalid JSON",
    };
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++) {
        if (!strstr(log.text, expect[i]))
            fail_msg("log lacks '%s':\n%s", expect[i], log.text);
    }
    mn_dialogue_list_free(&list);
    capture_close(&log);
    assert_int_equal(mn_jsonl_read(fixture("bad.jsonl"), 1, NULL, &list, NULL), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "bad.jsonl:2: invalid JSON"));
    assert_int_equal(list.count, 1);  /* what came before the fatal line is kept */
    mn_dialogue_list_free(&list);
}

static void test_writer_rejects_invalid_dialogues(void **state) {
    (void)state;
    char speaker[] = "A", text[] = "bad \xff", id[] = "x";
    mn_turn turn = {speaker, text, 0, NULL};
    mn_dialogue d = {id, &turn, 1, NULL, 0};
    FILE *f = tmpfile();
    assert_int_equal(mn_jsonl_write_dialogue(f, &d), MN_ERR_INVALID_ARG);
    char empty[] = "";
    turn.text = speaker;
    turn.speaker = empty;
    assert_int_equal(mn_jsonl_write_dialogue(f, &d), MN_ERR_INVALID_ARG);
    turn.speaker = speaker;
    char q[] = "q";
    mn_probe probe = {0};
    probe.after = 2;
    probe.question = q;
    probe.answer = q;
    d.probes = &probe;
    d.n_probes = 1;
    assert_int_equal(mn_jsonl_write_dialogue(f, &d), MN_ERR_INVALID_ARG);
    probe.after = 1;
    char other[] = "other";
    char *choices[] = {other};
    probe.choices = choices;
    probe.n_choices = 1;  /* choices without the answer */
    assert_int_equal(mn_jsonl_write_dialogue(f, &d), MN_ERR_INVALID_ARG);
    choices[0] = q;
    int evidence[] = {1};
    probe.evidence = evidence;
    probe.n_evidence = 1;  /* turn 1 of a 1-turn dialogue */
    assert_int_equal(mn_jsonl_write_dialogue(f, &d), MN_ERR_INVALID_ARG);
    evidence[0] = 0;
    assert_int_equal(mn_jsonl_write_dialogue(f, &d), MN_OK);
    fclose(f);
}

/* The CLI: usage errors exit 2, a run writes the file and prints the counts. */
static void test_prepare_cli(void **state) {
    (void)state;
    const char *bin = getenv("MNEMO_BIN");
    if (!bin)
        skip();
    char *dir = temp_dir();
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' prepare --format nope --input x --jsonl y 2>/dev/null", bin);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof cmd, "'%s' prepare --format locomo --input x --jsonl y --split train "
             "2>/dev/null", bin);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof cmd, "'%s' prepare --format locomo --input /nonexistent_mnemo "
             "--jsonl %s/y.jsonl 2>%s/err", bin, dir, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    snprintf(cmd, sizeof cmd, "%s/err", dir);
    char *err;
    size_t len;
    assert_int_equal(mn_file_read_all(cmd, &err, &len), MN_OK);
    assert_non_null(strstr(err, "/nonexistent_mnemo"));
    free(err);
    snprintf(cmd, sizeof cmd, "'%s' prepare --format self-dialogue --input '%s' --jsonl %s/sd.jsonl "
             "--max-turn-chars 100 > %s/out 2>/dev/null", bin, fixture("self_dialogue"), dir, dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    snprintf(cmd, sizeof cmd, "%s/out", dir);
    char *out;
    assert_int_equal(mn_file_read_all(cmd, &out, &len), MN_OK);
    assert_non_null(strstr(out, "dialogues 5  turns 21  probes 0"));
    assert_non_null(strstr(out, "bad records 2"));
    assert_non_null(strstr(out, "long turns split 1"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s/sd.jsonl", dir);
    mn_dialogue_list list = {0};
    assert_int_equal(mn_jsonl_read(cmd, 1, NULL, &list, NULL), MN_OK);
    assert_int_equal(list.count, 5);
    assert_int_equal(count_turns(&list), 21);
    mn_dialogue_list_free(&list);
    snprintf(cmd, sizeof cmd, "'%s' prepare --format self-dialogue --input '%s' --jsonl %s/x.jsonl "
             "--strict > /dev/null 2>&1", bin, fixture("self_dialogue"), dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    remove_dir(dir);
    free(dir);
}

static void test_missing_inputs_name_the_path(void **state) {
    (void)state;
    const char *missing = "/nonexistent_mnemo_input/x";
    mn_dialogue_list list = {0};
    for (int format = MN_FORMAT_SELF_DIALOGUE; format <= MN_FORMAT_JSONL; format++) {
        assert_int_equal(mn_read_corpus(format, missing, NULL, &list, NULL), MN_ERR_IO);
        assert_non_null(strstr(mn_last_error(), missing));
    }
    /* a topical-chat folder without the split's files */
    mn_reader_options opt = mn_reader_options_default();
    opt.split = MN_SPLIT_TRAIN;
    assert_int_equal(mn_read_topical_chat(fixture("topical_chat"), &opt, &list, NULL), MN_ERR_IO);
    assert_non_null(strstr(mn_last_error(), "train.json"));
    int format;
    assert_int_equal(mn_reader_format_parse("nope", &format), MN_ERR_INVALID_ARG);
    assert_int_equal(mn_reader_format_parse("topical-chat", &format), MN_OK);
    assert_int_equal(format, MN_FORMAT_TOPICAL_CHAT);
    assert_int_equal(list.count, 0);
}

/* Garbage in every reader: never a crash, always valid UTF-8 out. */
static void test_garbage_inputs(void **state) {
    (void)state;
    const char *inputs[] = {
        "", "\"", "{", "[", "[{}]", "{\"a\":1}", "[{\"conversation\":{\"session_1\":[1,{}]}}]",
        "[{\"conversation\":{\"session_1\":[{\"speaker\":\"A\",\"text\":\"\\u00e9\","
        "\"dia_id\":\"D1:1\"}]},\"qa\":[{\"question\":\"q\",\"answer\":[1],\"category\":5,"
        "\"evidence\":[\"D1:1\",3,\"D99999999999:1\"]}]}]",
        "{\"c\":{\"content\":[{\"agent\":\"x\",\"message\":\"\\ud800\"}]}}",
        "{\"c\":{\"messages\":[[{\"text\":\"a\",\"sender\":\"s\"}],[],[{}]]}}",
        "AssignmentId,WorkerId,Reject,Answer.sentence1\n\"a\"\"\",w,,\xff\n",
        "\xff\xfe\x00\x01",
    };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        /* the last input holds a NUL byte: give its full length */
        size_t len = i == sizeof inputs / sizeof inputs[0] - 1 ? 4 : strlen(inputs[i]);
        mn_dialogue_list list = {0};
        mn_read_self_dialogue_buffer("g.csv", inputs[i], len, NULL, &list, NULL);
        mn_read_topical_chat_buffer("g.json", inputs[i], len, NULL, &list, NULL);
        mn_read_locomo_buffer("g.json", inputs[i], len, NULL, &list, NULL);
        mn_read_chitchat_buffer("g.json", inputs[i], len, NULL, &list, NULL);
        mn_jsonl_read_buffer("g.jsonl", inputs[i], len, 0, NULL, &list, NULL);
        assert_all_utf8(&list);
        mn_dialogue_list_free(&list);
    }
}

/* ------------------------------------------------------------------ inputs that yield nothing */

/* The rule itself: nothing usable is an error; more than half bad is one unless accepted. */
static void test_check_yield(void **state) {
    (void)state;
    mn_read_stats rs = {.lines_read = 3, .bad_records = 2};
    assert_int_equal(mn_read_check_yield("in.jsonl", &rs, 1, 0), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "in.jsonl: 2 of 3 records are bad"));
    assert_non_null(strstr(mn_last_error(), "--skip-bad"));
    assert_int_equal(mn_read_check_yield("in.jsonl", &rs, 1, 1), MN_OK);
    rs.bad_records = 1; /* half is not more than half */
    rs.lines_read = 2;
    assert_int_equal(mn_read_check_yield("in.jsonl", &rs, 1, 0), MN_OK);
    rs.bad_records = rs.lines_read = 2;
    assert_int_equal(mn_read_check_yield("in.jsonl", &rs, 0, 1), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "in.jsonl: nothing usable: 2 bad records, no good one"));
    rs.bad_records = rs.lines_read = 0;
    assert_int_equal(mn_read_check_yield("in.jsonl", &rs, 0, 1), MN_ERR_FORMAT);
    assert_non_null(strstr(mn_last_error(), "in.jsonl: no dialogue in it"));
}

static void write_text(const char *dir, const char *name, const char *text) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Runs `mnemo ARGS` in dir (stdout and stderr kept in dir/out, dir/err); the exit code. */
static int mnemo_in(const char *dir, const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s > out 2> err", dir, getenv("MNEMO_BIN"), args);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void expect_mnemo(const char *dir, int want_rc, const char *want_err, const char *args) {
    int rc = mnemo_in(dir, args);
    char path[1200], *err;
    size_t len;
    snprintf(path, sizeof path, "%s/err", dir);
    assert_int_equal(mn_file_read_all(path, &err, &len), MN_OK);
    if (rc != want_rc || (want_err && !strstr(err, want_err)))
        fail_msg("mnemo %s: exit %d (want %d), stderr:\n%s(want \"%s\")", args, rc, want_rc, err,
                 want_err ? want_err : "");
    free(err);
}

/* The output file is untouched: still "old". */
static void expect_old(const char *dir, const char *name) {
    char path[1200], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(mn_file_read_all(path, &text, &len), MN_OK);
    assert_string_equal(text, "old");
    free(text);
}

/* prepare, tokenizer --train, shard and episodes on input that yields nothing (empty,
 * garbage, a truncated document, text without a pair) exit 1 naming the input and leave
 * their output untouched; more than half bad lines too, unless --skip-bad (which cannot go
 * with --strict). */
static void test_commands_refuse_inputs_that_yield_nothing(void **state) {
    (void)state;
    if (!getenv("MNEMO_BIN"))
        skip();
    char *dir = temp_dir();
    const char *good = "{\"id\": \"g\", \"turns\": [{\"speaker\": \"A\", \"text\": \"hello there, how are "
                       "you doing today?\"}, {\"speaker\": \"B\", \"text\": \"fine thanks\"}]}\n";
    char mostly_bad[1024];
    snprintf(mostly_bad, sizeof mostly_bad, "%sgarbage\n{\"id\": \"x\"}\n", good);
    write_text(dir, "good.jsonl", good);
    write_text(dir, "garbage.jsonl", "garbage\n\x01\x02zz\n");
    write_text(dir, "empty.jsonl", "");
    write_text(dir, "trunc.json", "[{\"conversation\": {\"speaker_a\": \"A\"");
    write_text(dir, "mostly_bad.jsonl", mostly_bad);
    write_text(dir, "no_pair.jsonl", "{\"id\": \"a\", \"turns\": [{\"speaker\": \"A\", \"text\": \"a\"}]}\n");
    const char *outputs[] = {"out.jsonl", "tok.h5", "out.shard"};
    for (int i = 0; i < 3; i++)
        write_text(dir, outputs[i], "old");

    expect_mnemo(dir, 1, "trunc.json: nothing usable", "prepare --format locomo --input trunc.json --jsonl out.jsonl");
    expect_mnemo(dir, 1, "garbage.jsonl: nothing usable: 2 bad records, no good one",
                 "prepare --format jsonl --input garbage.jsonl --jsonl out.jsonl");
    expect_mnemo(dir, 1, "mostly_bad.jsonl: 2 of 3 records are bad",
                 "prepare --format jsonl --input mostly_bad.jsonl --jsonl out.jsonl");
    expect_old(dir, "out.jsonl");
    expect_mnemo(dir, 2, "--strict and --skip-bad", "prepare --format jsonl --input mostly_bad.jsonl --jsonl out.jsonl "
                 "--strict --skip-bad");

    /* one reason, the path once */
    expect_mnemo(dir, 1, "mnemo tokenizer: missing.jsonl: cannot open: No such file or directory\n",
                 "tokenizer --train --jsonl missing.jsonl -o tok.h5");
    expect_mnemo(dir, 1, "empty.jsonl: no dialogue in it", "tokenizer --train --jsonl empty.jsonl -o tok.h5");
    expect_mnemo(dir, 1, "garbage.jsonl: nothing usable", "tokenizer --train --jsonl garbage.jsonl -o tok.h5");
    expect_mnemo(dir, 1, "mostly_bad.jsonl: 2 of 3", "tokenizer --train --jsonl good.jsonl --jsonl mostly_bad.jsonl -o tok.h5");
    expect_mnemo(dir, 1, "no merge", "tokenizer --train --jsonl no_pair.jsonl -o tok.h5");
    expect_old(dir, "tok.h5");
    expect_mnemo(dir, 0, NULL, "tokenizer --train --jsonl mostly_bad.jsonl --skip-bad --vocab-size 280 -o tok.h5");

    expect_mnemo(dir, 1, "garbage.jsonl: nothing usable", "shard --tokenizer tok.h5 --jsonl garbage.jsonl -o out.shard");
    expect_mnemo(dir, 1, "empty.jsonl: no dialogue", "shard --tokenizer tok.h5 --jsonl empty.jsonl -o out.shard");
    expect_mnemo(dir, 1, "mostly_bad.jsonl: 2 of 3", "shard --tokenizer tok.h5 --jsonl mostly_bad.jsonl -o out.shard");
    expect_old(dir, "out.shard");
    expect_mnemo(dir, 0, NULL, "shard --tokenizer tok.h5 --jsonl mostly_bad.jsonl --skip-bad -o out.shard");

    char args[2048];
    const char *episodes = "episodes --facts templates --templates '%s' --turns 4 %s -o out.jsonl";
    const char *cases[][2] = {
        {"--jsonl garbage.jsonl", "garbage.jsonl: nothing usable"},
        {"--jsonl empty.jsonl", "empty.jsonl: no dialogue"},
        {"--jsonl mostly_bad.jsonl", "mostly_bad.jsonl: 2 of 3"},
        {"--jsonl good.jsonl --turns 50 --drop-short", "no episode"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(args, sizeof args, episodes, fixture("../../../data/probes"), cases[i][0]);
        expect_mnemo(dir, 1, cases[i][1], args);
    }
    expect_old(dir, "out.jsonl");
    snprintf(args, sizeof args, episodes, fixture("../../../data/probes"), "--jsonl mostly_bad.jsonl --skip-bad");
    expect_mnemo(dir, 0, NULL, args);
    /* the good line was used: 1 dialogue read, 2 bad lines counted */
    char path[1200], *out;
    size_t len;
    snprintf(path, sizeof path, "%s/out", dir);
    assert_int_equal(mn_file_read_all(path, &out, &len), MN_OK);
    assert_non_null(strstr(out, "read 1 dialogues from mostly_bad.jsonl (2 bad lines skipped)"));
    free(out);
    remove_dir(dir);
    free(dir);
}

/* ------------------------------------------------------------------ real data */

typedef struct {
    char *assignment, *worker;
} author_row;

static int cmp_author_row(const void *a, const void *b) {
    return strcmp(((const author_row *)a)->assignment, ((const author_row *)b)->assignment);
}

/* AssignmentId -> WorkerId of every row, read straight from the CSVs. */
static author_row *load_authors(const char *corpus, int *n_rows) {
    char **files;
    int n_files;
    assert_int_equal(mn_list_files(corpus, ".csv", &files, &n_files), MN_OK);
    author_row *rows = NULL;
    int n = 0, cap = 0;
    for (int f = 0; f < n_files; f++) {
        char *buf;
        size_t len;
        assert_int_equal(mn_file_read_all(files[f], &buf, &len), MN_OK);
        mn_csv csv;
        mn_csv_init(&csv, files[f], buf, len);
        int got, ca = -1, cw = -1;
        assert_int_equal(mn_csv_next(&csv, &got), MN_OK);
        for (int i = 0; i < csv.n_fields; i++) {
            if (!strcmp(mn_csv_field(&csv, i), "AssignmentId"))
                ca = i;
            if (!strcmp(mn_csv_field(&csv, i), "WorkerId"))
                cw = i;
        }
        assert_true(ca >= 0 && cw >= 0);
        while (mn_csv_next(&csv, &got) == MN_OK && got) {
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                rows = realloc(rows, (size_t)cap * sizeof *rows);
                assert_non_null(rows);
            }
            rows[n].assignment = strdup(mn_csv_field(&csv, ca));
            rows[n].worker = strdup(mn_csv_field(&csv, cw));
            n++;
        }
        mn_csv_free(&csv);
        free(buf);
    }
    mn_free_strings(files, n_files);
    qsort(rows, (size_t)n, sizeof *rows, cmp_author_row);
    *n_rows = n;
    return rows;
}

static const char *author_of(const author_row *rows, int n, const char *dialogue_id) {
    const char *slash = strrchr(dialogue_id, '/');
    author_row key = {(char *)(slash ? slash + 1 : dialogue_id), NULL};
    const author_row *hit = bsearch(&key, rows, (size_t)n, sizeof *rows, cmp_author_row);
    assert_non_null(hit);
    return hit->worker;
}

static void test_real_self_dialogue(void **state) {
    (void)state;
    const char *dir = data_path("self_dialogue_corpus");
    if (!dir)
        skip();
    mn_reader_options opt = mn_reader_options_default();
    mn_dialogue_list all = {0}, train = {0}, valid = {0};
    mn_reader_stats stats = {0};
    assert_int_equal(mn_read_self_dialogue(dir, &opt, &all, &stats), MN_OK);
    /* SOURCE.md: 24,249 rows (21 rejected, 63 blocked) -> 24,165 dialogues, 372,718
     * utterances. One kept row holds only "{}" answers: it has no turn to write. */
    assert_int_equal(stats.files, 63);
    assert_int_equal(stats.read.lines_read, 24249);
    assert_int_equal(stats.read.bad_records, 0);
    assert_int_equal(stats.rejected_rows, 21);
    assert_int_equal(stats.blocked_rows, 63);
    assert_int_equal(stats.duplicate_rows, 0);
    assert_int_equal(all.count + stats.empty_dialogues, 24165);
    assert_int_equal(stats.empty_dialogues, 1);
    assert_int_equal(count_turns(&all), 372718);
    assert_int_equal(stats.read.split_turns, 0);
    assert_all_utf8(&all);

    opt.split = MN_SPLIT_TRAIN;
    assert_int_equal(mn_read_self_dialogue(dir, &opt, &train, NULL), MN_OK);
    opt.split = MN_SPLIT_VALID;
    assert_int_equal(mn_read_self_dialogue(dir, &opt, &valid, NULL), MN_OK);
    assert_int_equal(train.count + valid.count, all.count);

    char corpus[1100];
    snprintf(corpus, sizeof corpus, "%s/corpus", dir);
    int n_rows;
    author_row *rows = load_authors(corpus, &n_rows);
    mn_strset train_authors = {0}, valid_authors = {0};
    int added;
    for (int64_t i = 0; i < train.count; i++)
        assert_int_equal(mn_strset_add(&train_authors, author_of(rows, n_rows, train.items[i].id),
                                       &added),
                         MN_OK);
    for (int64_t i = 0; i < valid.count; i++) {
        const char *w = author_of(rows, n_rows, valid.items[i].id);
        assert_false(mn_strset_has(&train_authors, w));  /* no author on both sides */
        assert_int_equal(mn_strset_add(&valid_authors, w, &added), MN_OK);
    }
    double share = (double)valid_authors.count /
                   (double)(valid_authors.count + train_authors.count);
    print_message("self-dialogue: %zu train / %zu valid authors (%.2f%%), %lld / %lld dialogues\n",
                  train_authors.count, valid_authors.count, 100 * share,
                  (long long)train.count, (long long)valid.count);
    assert_true(share > 0.04 && share < 0.06);
    assert_true(valid.count > all.count / 50 && valid.count < all.count / 8);
    for (int i = 0; i < n_rows; i++) {
        free(rows[i].assignment);
        free(rows[i].worker);
    }
    free(rows);
    mn_strset_free(&train_authors);
    mn_strset_free(&valid_authors);
    mn_dialogue_list_free(&all);
    mn_dialogue_list_free(&train);
    mn_dialogue_list_free(&valid);
}

static void test_real_topical_chat(void **state) {
    (void)state;
    const char *dir = data_path("topical_chat");
    if (!dir)
        skip();
    mn_reader_options opt = mn_reader_options_default();
    mn_dialogue_list list = {0};
    mn_reader_stats stats = {0};
    assert_int_equal(mn_read_topical_chat(dir, &opt, &list, &stats), MN_OK);
    assert_int_equal(list.count, 2156);
    assert_int_equal(count_turns(&list), 46903);
    assert_int_equal(stats.read.bad_records + stats.read.empty_turns + stats.read.split_turns, 0);
    mn_dialogue_list_free(&list);
    opt.split = MN_SPLIT_VALID;
    assert_int_equal(mn_read_topical_chat(dir, &opt, &list, NULL), MN_OK);
    assert_int_equal(list.count, 1078);
    assert_int_equal(count_turns(&list), 11681 + 11692);
    mn_dialogue_list_free(&list);
    opt.split = MN_SPLIT_TEST;
    assert_int_equal(mn_read_topical_chat(dir, &opt, &list, NULL), MN_OK);
    assert_int_equal(list.count, 1078);
    assert_int_equal(count_turns(&list), 11760 + 11770);
    mn_dialogue_list_free(&list);
}

static void test_real_locomo(void **state) {
    (void)state;
    const char *dir = data_path("locomo");
    if (!dir)
        skip();
    mn_reader_options opt = mn_reader_options_default();
    mn_dialogue_list list = {0};
    mn_reader_stats stats = {0};
    assert_int_equal(mn_read_locomo(dir, &opt, &list, &stats), MN_OK);
    assert_int_equal(list.count, 10);
    assert_int_equal(count_turns(&list), 5882);
    assert_int_equal(count_probes(&list), 1986);
    assert_int_equal(stats.read.bad_records, 0);
    /* SOURCE.md: 9 of 2,815 ids do not resolve strictly; read leniently, at most that */
    assert_true(stats.unresolved_evidence > 0 && stats.unresolved_evidence <= 9);
    int sessions = 0, per_category[6] = {0};
    for (int64_t i = 0; i < list.count; i++) {
        const mn_dialogue *d = &list.items[i];
        for (int t = 0; t < d->n_turns; t++)
            sessions += t == 0 || d->turns[t].session != d->turns[t - 1].session;
        for (int p = 0; p < d->n_probes; p++) {
            const mn_probe *q = &d->probes[p];
            assert_true(q->category >= 1 && q->category <= 5);
            per_category[q->category]++;
            assert_int_equal(q->after, d->n_turns);
            assert_true(q->n_choices == 4);
            assert_true(has_choice(q, q->answer));
        }
    }
    assert_int_equal(sessions, 272);
    assert_int_equal(per_category[1], 282);
    assert_int_equal(per_category[2], 321);
    assert_int_equal(per_category[3], 96);
    assert_int_equal(per_category[4], 841);
    assert_int_equal(per_category[5], 446);
    assert_string_equal(list.items[0].id, "conv-26");
    assert_string_equal(list.items[0].turns[0].date, "1:56 pm on 8 May, 2023");
    mn_dialogue_list_free(&list);
}

/* Optional: MNEMO_CHITCHAT_JSON = dataset.json from the PyPI wheel chitchat-dataset. */
static void test_real_chitchat(void **state) {
    (void)state;
    const char *path = getenv("MNEMO_CHITCHAT_JSON");
    if (!path)
        skip();
    mn_dialogue_list list = {0};
    mn_reader_stats stats = {0};
    assert_int_equal(mn_read_chitchat(path, NULL, &list, &stats), MN_OK);
    /* package README: 7,168 conversations; 138,737 messages (turns before cleaning) */
    assert_int_equal(list.count, 7168);
    assert_int_equal(stats.read.bad_records, 0);
    assert_int_equal(count_turns(&list), 138799);
    assert_int_equal(stats.read.empty_turns, 12);
    assert_int_equal(stats.read.split_turns, 26);
    assert_all_utf8(&list);
    mn_dialogue_list_free(&list);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_quotes_newlines_crlf),
        cmocka_unit_test(test_csv_malformed_reports_line_and_recovers),
        cmocka_unit_test(test_utf8_repair),
        cmocka_unit_test(test_long_turn_split_at_whitespace),
        cmocka_unit_test(test_self_dialogue_fixture),
        cmocka_unit_test(test_self_dialogue_split_by_author),
        cmocka_unit_test(test_self_dialogue_buffer),
        cmocka_unit_test(test_topical_chat_fixture),
        cmocka_unit_test(test_locomo_fixture),
        cmocka_unit_test(test_chitchat_fixture),
        cmocka_unit_test(test_jsonl_round_trip),
        cmocka_unit_test(test_jsonl_bad_lines),
        cmocka_unit_test(test_writer_rejects_invalid_dialogues),
        cmocka_unit_test(test_prepare_cli),
        cmocka_unit_test(test_missing_inputs_name_the_path),
        cmocka_unit_test(test_garbage_inputs),
        cmocka_unit_test(test_check_yield),
        cmocka_unit_test(test_commands_refuse_inputs_that_yield_nothing),
        cmocka_unit_test(test_real_self_dialogue),
        cmocka_unit_test(test_real_topical_chat),
        cmocka_unit_test(test_real_locomo),
        cmocka_unit_test(test_real_chitchat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
