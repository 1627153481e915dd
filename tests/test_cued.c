/* Cued recall probes of real turns (src/text/cued.h): the cue and the answer are consecutive
 * words of the evidence turn, the cue names that turn alone, distances and askers follow the
 * config, turns are never changed, output is deterministic and passes the JSONL reader. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "text/cued.h"
#include "text/dialogue.h"
#include "text/episodes_job.h"

/* An episode of n turns by "A" and "B" whose texts are distinct sentences of 8 words
 * ("a3 w0 w1 ... " made unique per turn), except where texts[] gives one. */
static void make_episode(mn_dialogue *d, int n, const char *const *texts) {
    memset(d, 0, sizeof *d);
    d->id = strdup("episode-0");
    d->n_turns = n;
    d->turns = calloc((size_t)n, sizeof *d->turns);
    for (int t = 0; t < n; t++) {
        char buf[256];
        if (texts && texts[t])
            snprintf(buf, sizeof buf, "%s", texts[t]);
        else
            snprintf(buf, sizeof buf, "turn%d says alpha%d beta%d gamma%d delta%d epsilon%d zeta%d.", t, t, t, t,
                     t, t, t);
        d->turns[t].speaker = strdup(t % 2 ? "B" : "A");
        d->turns[t].text = strdup(buf);
    }
}

/* The quoted cue of a question (between its first two double quotes). */
static void cue_of(const char *question, char *cue, size_t cap) {
    const char *a = strchr(question, '"');
    assert_non_null(a);
    const char *b = strchr(a + 1, '"');
    assert_non_null(b);
    size_t n = (size_t)(b - a - 1);
    assert_true(n < cap);
    memcpy(cue, a + 1, n);
    cue[n] = '\0';
}

static void check_probe(const mn_dialogue *d, const mn_probe *p, const mn_cued_config *c) {
    assert_int_equal(p->n_evidence, 1);
    int f = p->evidence[0];
    assert_true(f >= 0 && f < d->n_turns);
    int dist = p->after - f;
    int in_range = 0;
    for (int i = 0; i < c->n_distances; i++)
        in_range |= dist >= c->distances[i].lo && dist <= c->distances[i].hi;
    assert_true(in_range);
    assert_true(p->after <= d->n_turns);
    /* cue then answer, consecutive words of turn f */
    char cue[256], joined[600];
    cue_of(p->question, cue, sizeof cue);
    snprintf(joined, sizeof joined, "%s %s", cue, p->answer);
    assert_non_null(strstr(d->turns[f].text, joined));
    /* the cue names turn f alone among the turns before the question */
    for (int t = 0; t < p->after; t++)
        if (t != f)
            assert_null(strcasestr(d->turns[t].text, cue));
    /* answer among the choices, choices distinct */
    int found = 0;
    for (int i = 0; i < p->n_choices; i++) {
        found += strcmp(p->choices[i], p->answer) == 0;
        for (int j = 0; j < i; j++)
            assert_true(strcasecmp(p->choices[i], p->choices[j]) != 0);
    }
    assert_int_equal(found, 1);
    assert_true(p->n_choices >= 2 && p->n_choices <= c->n_distractors + 1);
}

static void test_probes_quote_and_answer_the_evidence_turn(void **state) {
    (void)state;
    mn_dialogue d;
    make_episode(&d, 40, NULL);
    mn_cued_config c = mn_cued_config_default();
    c.probes_per_episode = 6;
    mn_cued_stats s = {0};
    assert_int_equal(mn_cued_add(&d, 0, &c, &s), MN_OK);
    assert_int_equal(s.probes, 6);
    assert_int_equal(s.skipped, 0);
    assert_int_equal(d.n_probes, 6);
    for (int i = 0; i < d.n_probes; i++) {
        check_probe(&d, &d.probes[i], &c);
        /* askers other: the quoted turn's other speaker asks */
        assert_string_not_equal(d.probes[i].speaker, d.turns[d.probes[i].evidence[0]].speaker);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(d.probes[i].evidence[0], d.probes[j].evidence[0]);
    }
    mn_dialogue_free(&d);
}

static void test_self_askers_and_distances(void **state) {
    (void)state;
    static const mn_distance_range ranges[] = {{5, 7}};
    mn_dialogue d;
    make_episode(&d, 30, NULL);
    mn_cued_config c = mn_cued_config_default();
    c.distances = ranges;
    c.n_distances = 1;
    c.askers = MN_ASKERS_SELF;
    c.probes_per_episode = 4;
    mn_cued_stats s = {0};
    assert_int_equal(mn_cued_add(&d, 3, &c, &s), MN_OK);
    assert_int_equal(s.probes, 4);
    for (int i = 0; i < d.n_probes; i++) {
        check_probe(&d, &d.probes[i], &c);
        assert_string_equal(d.probes[i].speaker, d.turns[d.probes[i].evidence[0]].speaker);
        assert_non_null(strstr(d.probes[i].question, "I said"));
    }
    mn_dialogue_free(&d);
}

/* A sentence said twice cannot be a cue (it would name two turns); short turns cannot serve;
 * a turn that is already a probe's evidence is left to that probe. */
static void test_ambiguous_short_and_used_turns_are_not_cued(void **state) {
    (void)state;
    const char *texts[12] = {"we went to the lake on sunday with the kids", "ok",
                             "we went to the lake on sunday with the kids", "sure",
                             "yes", "no", "hmm", "right", "I think my car keys are in the drawer", "fine",
                             "cool", "bye"};
    mn_dialogue d;
    make_episode(&d, 12, texts);
    /* turn 8 is the evidence of an existing probe */
    d.probes = calloc(1, sizeof *d.probes);
    d.n_probes = 1;
    d.probes[0].after = 10;
    d.probes[0].question = strdup("where are the keys?");
    d.probes[0].answer = strdup("in the drawer");
    d.probes[0].evidence = malloc(sizeof(int));
    d.probes[0].evidence[0] = 8;
    d.probes[0].n_evidence = 1;
    static const mn_distance_range four[] = {{4, 4}};
    mn_cued_config c = mn_cued_config_default();
    c.distances = four;
    c.n_distances = 1;
    c.probes_per_episode = 5;
    mn_cued_stats s = {0};
    assert_int_equal(mn_cued_add(&d, 0, &c, &s), MN_OK);
    /* turns 0 and 2 share every cue; the others are too short or used: nothing fits */
    assert_int_equal(s.probes, 0);
    assert_int_equal(s.skipped, 5);
    assert_int_equal(d.n_probes, 1);
    /* changing turn 2 makes turn 0 (and turn 2) usable */
    free(d.turns[2].text);
    d.turns[2].text = strdup("they drove north to the mountains for a whole week");
    assert_int_equal(mn_cued_add(&d, 0, &c, &s), MN_OK);
    assert_true(s.probes >= 1);
    for (int i = 1; i < d.n_probes; i++) {
        check_probe(&d, &d.probes[i], &c);
        assert_true(d.probes[i].evidence[0] == 0 || d.probes[i].evidence[0] == 2);
    }
    mn_dialogue_free(&d);
}

static void test_deterministic_turns_unchanged_and_valid_jsonl(void **state) {
    (void)state;
    mn_dialogue a, b;
    make_episode(&a, 25, NULL);
    make_episode(&b, 25, NULL);
    mn_cued_config c = mn_cued_config_default();
    c.probes_per_episode = 3;
    c.askers = MN_ASKERS_BOTH;
    mn_cued_stats s = {0};
    assert_int_equal(mn_cued_add(&a, 7, &c, &s), MN_OK);
    assert_int_equal(mn_cued_add(&b, 7, &c, &s), MN_OK);
    char *ja = NULL, *jb = NULL;
    size_t la = 0, lb = 0;
    FILE *fa = open_memstream(&ja, &la), *fb = open_memstream(&jb, &lb);
    assert_int_equal(mn_jsonl_write_dialogue(fa, &a), MN_OK);
    assert_int_equal(mn_jsonl_write_dialogue(fb, &b), MN_OK);
    fclose(fa);
    fclose(fb);
    assert_string_equal(ja, jb);
    /* another episode index draws other probes */
    mn_dialogue e;
    make_episode(&e, 25, NULL);
    assert_int_equal(mn_cued_add(&e, 8, &c, &s), MN_OK);
    int same = e.n_probes == a.n_probes;
    for (int i = 0; same && i < a.n_probes; i++)
        same = strcmp(e.probes[i].question, a.probes[i].question) == 0;
    assert_false(same);
    /* texts untouched */
    mn_dialogue fresh;
    make_episode(&fresh, 25, NULL);
    for (int t = 0; t < 25; t++)
        assert_string_equal(a.turns[t].text, fresh.turns[t].text);
    /* the canonical reader accepts the output */
    mn_dialogue_list list = {0};
    mn_read_stats rs = {0};
    assert_int_equal(mn_jsonl_read_buffer("cued", ja, la, 1, NULL, &list, &rs), MN_OK);
    assert_int_equal(list.count, 1);
    assert_int_equal(list.items[0].n_probes, 3);
    mn_dialogue_list_free(&list);
    free(ja);
    free(jb);
    mn_dialogue_free(&a);
    mn_dialogue_free(&b);
    mn_dialogue_free(&e);
    mn_dialogue_free(&fresh);
}

static void test_bad_config_is_refused(void **state) {
    (void)state;
    mn_dialogue d;
    make_episode(&d, 10, NULL);
    mn_cued_stats s = {0};
    mn_cued_config c = mn_cued_config_default();
    c.cue_words_min = 0;
    assert_int_equal(mn_cued_add(&d, 0, &c, &s), MN_ERR_INVALID_ARG);
    c = mn_cued_config_default();
    c.probes_per_episode = 0;
    assert_int_equal(mn_cued_add(&d, 0, &c, &s), MN_ERR_INVALID_ARG);
    static const mn_distance_range bad[] = {{3, 2}};
    c = mn_cued_config_default();
    c.distances = bad;
    c.n_distances = 1;
    assert_int_equal(mn_cued_add(&d, 0, &c, &s), MN_ERR_INVALID_ARG);
    assert_int_equal(d.n_probes, 0);
    mn_dialogue_free(&d);
}

/* `mnemo episodes --cued N` (the job): cued probes join the template probes of each episode. */
static void test_episodes_job_adds_cued_probes(void **state) {
    (void)state;
    char templates[4096], out[] = "/tmp/mnemo-cued-XXXXXX";
    const char *fixtures = getenv("MNEMO_FIXTURES");
    snprintf(templates, sizeof templates, "%s/../../data/probes", fixtures ? fixtures : "tests/fixtures");
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
    static const mn_distance_range ranges[] = {{1, 3}};
    mn_episodes_job job = {.templates = templates, .output = out, .split = MN_SPLIT_TRAIN, .synthetic = 12,
                           .cued = 2, .episodes = mn_episode_config_default(), .probes = mn_probe_config_default()};
    job.episodes.turns = 24;
    job.probes.distances = ranges;
    job.probes.n_distances = 1;
    job.probes.probes_per_episode = 1;
    mn_episodes_report rep;
    assert_int_equal(mn_episodes_run(&job, &rep), MN_OK);
    assert_true(rep.cued.probes >= 12);
    assert_int_equal(rep.cued.probes + rep.cued.skipped, 24);
    assert_int_equal(rep.written.probes, rep.probes.probes + rep.cued.probes);
    const int64_t made = rep.cued.probes;
    mn_episodes_report_free(&rep);
    mn_dialogue_list list = {0};
    mn_read_stats rs = {0};
    assert_int_equal(mn_jsonl_read(out, 1, NULL, &list, &rs), MN_OK);
    int cued = 0;
    static const mn_distance_range one_to_three[] = {{1, 3}};
    mn_cued_config c = mn_cued_config_default();
    c.distances = one_to_three;
    c.n_distances = 1;
    for (int64_t e = 0; e < list.count; e++)
        for (int p = 0; p < list.items[e].n_probes; p++)
            if (strchr(list.items[e].probes[p].question, '"')) {
                check_probe(&list.items[e], &list.items[e].probes[p], &c);
                cued++;
            }
    assert_int_equal(cued, made); /* template questions quote nothing */
    mn_dialogue_list_free(&list);
    unlink(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probes_quote_and_answer_the_evidence_turn),
        cmocka_unit_test(test_self_askers_and_distances),
        cmocka_unit_test(test_ambiguous_short_and_used_turns_are_not_cued),
        cmocka_unit_test(test_deterministic_turns_unchanged_and_valid_jsonl),
        cmocka_unit_test(test_bad_config_is_refused),
        cmocka_unit_test(test_episodes_job_adds_cued_probes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
